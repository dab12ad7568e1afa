"""The seed's baseline descriptors and regressor: sorted Coulomb matrix, bag of bonds, kernel ridge.

Descriptors are computed on the same (unrelaxed) structures the configurations stand for:
atoms on the occupied host sites with Cartesian coordinates of the host supercell (vacancies are
absent atoms), nuclear charges of the species, and non-periodic distances, as in dscribe's
``CoulombMatrix``:

- sorted Coulomb matrix: ``C_ii = 0.5 Z_i^2.4``, ``C_ij = Z_i Z_j / |r_i - r_j|``, rows and columns
  ordered by decreasing row norm, zero-padded to ``n_sites x n_sites`` (36,864 for 192 sites);
- bag of bonds: the off-diagonal ``Z_i Z_j / r_ij`` grouped into one bag per element pair (and the
  diagonal terms into one bag per element), each sorted in decreasing order and zero-padded to the
  largest count in the data.

The regressor is kernel ridge regression (Gaussian kernel, exact Cholesky solves) with width and regularisation chosen on the validation split.
"""

from __future__ import annotations

import numpy as np

from invdesign.lattice.host import HostLattice

Z = {"H": 1, "B": 5, "C": 6, "N": 7, "S": 16, "Se": 34, "Mo": 42, "W": 74, "Te": 52}


def _charges(host: HostLattice) -> np.ndarray:
    """``(n_species,)`` nuclear charge per species code (0 for the vacancy)."""
    from pymatgen.core import Element

    return np.array([0.0] + [float(Element(s).Z) for s in host.species[1:]])


def _pair_distances(host: HostLattice) -> np.ndarray:
    cached = host._cache.get("cartesian_distances")
    if cached is None:
        r = host.cart_coords
        cached = np.linalg.norm(r[:, None, :] - r[None, :, :], axis=-1)
        host._cache["cartesian_distances"] = cached
    return cached


def coulomb_matrices(occ: np.ndarray, host: HostLattice, progress=None) -> np.ndarray:
    """Sorted Coulomb matrices, flattened: ``(N, n_sites^2)`` float32 (36,864 columns for 8x8 MoS2)."""
    occ = np.asarray(occ)
    n = host.n_sites
    zc = _charges(host)
    D = _pair_distances(host)
    inv = np.zeros_like(D)
    off = ~np.eye(n, dtype=bool)
    inv[off] = 1.0 / D[off]
    out = np.zeros((len(occ), n * n), dtype=np.float32)
    for r in range(len(occ)):
        keep = np.flatnonzero(occ[r] != 0)
        z = zc[occ[r, keep]]
        C = np.outer(z, z) * inv[np.ix_(keep, keep)]
        C[np.diag_indices(len(keep))] = 0.5 * z**2.4
        order = np.argsort(-np.linalg.norm(C, axis=1), kind="stable")
        C = C[np.ix_(order, order)]
        M = np.zeros((n, n))
        M[: len(keep), : len(keep)] = C
        out[r] = M.ravel()
        if progress is not None:
            progress()
    return out


class BagOfBonds:
    """Bag-of-bonds featuriser; bag sizes are fitted on a set of configurations (``fit``)."""

    def fit(self, occ: np.ndarray, host: HostLattice) -> BagOfBonds:
        self.host = host
        codes = [c for c in range(1, host.n_species)]
        counts = np.stack([(np.asarray(occ) == c).sum(axis=1) for c in codes], axis=1).max(axis=0)
        self.codes = [c for c, m in zip(codes, counts) if m > 0]
        self.max_count = {c: int(m) for c, m in zip(codes, counts) if m > 0}
        self.bags: list[tuple[int, int, int]] = []
        for a in self.codes:
            self.bags.append((a, a, self.max_count[a]))  # diagonal bag
        for i, a in enumerate(self.codes):
            for b in self.codes[i:]:
                size = self.max_count[a] * (self.max_count[a] - 1) // 2 if a == b else self.max_count[a] * self.max_count[b]
                self.bags.append((a, b, size))
        self.length = int(sum(s for *_, s in self.bags))
        return self

    def transform(self, occ: np.ndarray, progress=None) -> np.ndarray:
        """``(N, length)`` float32 bag-of-bonds vectors."""
        occ = np.asarray(occ)
        host = self.host
        zc = _charges(host)
        D = _pair_distances(host)
        out = np.zeros((len(occ), self.length), dtype=np.float32)
        for r in range(len(occ)):
            pos = 0
            sites = {c: np.flatnonzero(occ[r] == c) for c in self.codes}
            for idx, (a, b, size) in enumerate(self.bags):
                if idx < len(self.codes):  # diagonal bag
                    v = np.full(len(sites[a]), 0.5 * zc[a] ** 2.4)
                elif a == b:
                    s = sites[a]
                    iu, ju = np.triu_indices(len(s), 1)
                    v = zc[a] * zc[a] / D[s[iu], s[ju]]
                else:
                    v = (zc[a] * zc[b] / D[np.ix_(sites[a], sites[b])]).ravel()
                v = np.sort(v)[::-1][:size]
                out[r, pos : pos + len(v)] = v
                pos += size
            if progress is not None:
                progress()
        return out


def _sqdist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    a = (A.astype(np.float64) ** 2).sum(1)
    b = (B.astype(np.float64) ** 2).sum(1)
    return np.maximum(a[:, None] + b[None, :] - 2.0 * (A @ B.T).astype(np.float64), 0.0)


class KernelRidge:
    """Gaussian kernel ridge regression, width and ``alpha`` per target chosen on validation data.

    ``gamma = scale / median squared distance`` over a grid of scales. Targets are centred.
    """

    def __init__(self, scales: tuple[float, ...] = (0.25, 1.0, 4.0), alphas: tuple[float, ...] = (1e-6, 1e-4, 1e-2, 1.0)) -> None:
        self.scales, self.alphas = scales, alphas

    def fit(self, X: np.ndarray, Y: np.ndarray, Xv: np.ndarray, Yv: np.ndarray) -> KernelRidge:
        self.mu = X.mean(0)
        self.sd = float(X.std()) or 1.0
        Xs = ((X - self.mu) / self.sd).astype(np.float32)
        Xvs = ((Xv - self.mu) / self.sd).astype(np.float32)
        D = _sqdist(Xs, Xs)
        Dv = _sqdist(Xvs, Xs)
        med = float(np.median(D[np.triu_indices(len(D), 1)])) or 1.0
        self.ym = Y.mean(0)
        best: list = [None] * Y.shape[1]
        from scipy.linalg import cho_factor, cho_solve

        for sc in self.scales:
            g = sc / med
            K = np.exp(-g * D)
            Kv = np.exp(-g * Dv)
            for a in self.alphas:
                try:
                    C = cho_solve(cho_factor(K + a * np.eye(len(K)), lower=True, check_finite=False), Y - self.ym, check_finite=False)
                except np.linalg.LinAlgError:
                    continue  # not positive definite at this alpha in floating point
                err = np.abs(Kv @ C + self.ym - Yv).mean(0)
                for j in range(Y.shape[1]):
                    if best[j] is None or err[j] < best[j][0]:
                        best[j] = (err[j], g, a, C[:, j])
        self.X = Xs
        self.gamma = np.array([b[1] for b in best])
        self.alpha = np.array([b[2] for b in best])
        self.coef = np.stack([b[3] for b in best], axis=1)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        D = _sqdist(((X - self.mu) / self.sd).astype(np.float32), self.X)
        return np.stack([np.exp(-g * D) @ self.coef[:, j] for j, g in enumerate(self.gamma)], axis=1) + self.ym
