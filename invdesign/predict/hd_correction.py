"""The high-density formation-energy correction: DFT-trained model + a correction toward corrected CHGNet.

The DFT data (2DMD) holds 1-3 defects per 8x8 cell; beyond that the formation-energy head
extrapolates. :class:`HDCorrection` is a Gaussian process on the residual ``reference - model``
(eV per defect site) of the high-density reference set (``invdesign/resources/hd_reference.csv``:
4-30 defects labelled with the corrected CHGNet oracle ``chgnet+delta``), fitted on its train part
by ``benchmarks/fit_hd_correction.py`` and shipped as ``invdesign/resources/hd_correction.npz``.
Serving (:class:`invdesign.predict.serving.Predictor`) adds it to ``formation_energy_per_site`` of
configurations with more than :attr:`HDCorrection.min_defects` - 1 defects only (at 1-3 defects the
DFT-trained head stands unchanged), with its predictive std added in quadrature, and only to the
formation-energy head it was fitted on (:func:`fe_head_fingerprint`): another model gets no correction
and says so.

Features (:func:`hd_features`, ``(N, 4 + 2 + 10 * 6)``): the defect-type fractions, ``1/n``, the
defect density ``n / n_sites``, and unordered defect-pair counts per defect by (type pair, distance
shell :data:`SHELLS`). Kernel: ``c1 RBF(l) + c2 (s0^2 + z.z') + noise`` on standardised features;
prediction in numpy only (the fit uses scikit-learn). The file stores the training features, weights and
kernel constants; the Cholesky factor of the kernel matrix (``M x M``, what the std needs) is computed from
them on first use (format /2; /1 stored the inverse kernel matrix, which grows as ``M^2`` with the training set).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from invdesign.errors import InvdesignError
from invdesign.lattice.host import HostLattice
from invdesign.predict.features import orbit_distances
from invdesign.predict.pair_prior import PRIOR_VERSION

#: Distance shells (A) of the pair-count features.
SHELLS = (0.1, 2.6, 3.3, 4.6, 6.5, 9.0, np.inf)
#: What the corrected value is, in words (output columns, summary).
REFERENCE = "DFT-trained model + correction toward corrected CHGNet (chgnet+delta)"
FORMAT = "invdesign-hd-correction/2"
FORMATS = ("invdesign-hd-correction/1", FORMAT)  # /1 also stored Kinv (not read: the std uses the Cholesky factor)


def resource_path() -> Path:
    """``invdesign/resources/hd_correction.npz`` (may be absent)."""
    from importlib import resources

    return Path(str(resources.files("invdesign.resources") / "hd_correction.npz"))


def fe_head_fingerprint(head, seen: np.ndarray) -> str:
    """SHA-256 (hex) of what the served formation energy below the correction depends on: the ridge
    head's formation-energy column (``mu, sd, ym, W[:, 0]``), the seen cluster columns (the pair prior's
    input) and :data:`invdesign.predict.pair_prior.PRIOR_VERSION`."""
    h = hashlib.sha256()
    for a in (head.mu, head.sd, np.atleast_1d(head.ym)[:1], np.asarray(head.W)[:, 0], np.asarray(seen, bool)):
        h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes())
    h.update(f"prior{PRIOR_VERSION}".encode())
    return h.hexdigest()


def shell_map(host: HostLattice, edges: tuple[float, ...] = SHELLS) -> np.ndarray:
    """``(F, P * S)`` 0/1: cluster-count columns -> (unordered type pair, shell) counts (x2: ordered);
    shells between consecutive ``edges`` (A; the zero-distance orbit falls below the first)."""
    T = len(host.defect_types)
    dist = orbit_distances(host)
    npo = len(dist)
    shell = np.digitize(dist, edges) - 1
    ns = len(edges) - 1
    pairs = {(a, b): k for k, (a, b) in enumerate((a, b) for a in range(T) for b in range(a, T))}
    M = np.zeros((T + T * T * npo, len(pairs) * ns))
    for a in range(T):
        for b in range(T):
            for o in range(npo):
                if 0 <= shell[o] < ns:
                    M[T + (a * T + b) * npo + o, pairs[min(a, b), max(a, b)] * ns + shell[o]] = 1.0
    return M


def hd_features(X: np.ndarray, host: HostLattice, M: np.ndarray | None = None) -> np.ndarray:
    """``(N, F)`` cluster counts -> ``(N, T + 2 + P * S)`` correction features (see module doc)."""
    T = len(host.defect_types)
    X = np.asarray(X, dtype=np.float64)
    n = np.maximum(X[:, :T].sum(1), 1.0)
    M = shell_map(host) if M is None else M
    return np.column_stack([X[:, :T] / n[:, None], 1.0 / n, n / host.n_sites, (X @ M) / 2.0 / n[:, None]])


class HDCorrection:
    """The fitted correction (a Gaussian process; numpy arrays only).

    Attributes:
        Z: ``(M, d)`` standardised training features; alpha ``(M,)``; L ``(M, M)`` lower Cholesky factor of the
            training kernel matrix (computed on first use).
        mu, sd: ``(d,)`` feature standardisation. y_mean, y_std: target normalisation (eV).
        c1, length, c2, s0, noise: kernel constants (normalised units).
        fingerprint: :func:`fe_head_fingerprint` of the head it was fitted on. min_defects: applied from here on.
        info: provenance and CV figures (plain dict).
    """

    KEYS = ("Z", "alpha", "mu", "sd")
    SCALARS = ("y_mean", "y_std", "c1", "length", "c2", "s0", "noise")

    def __init__(self, host: HostLattice, arrays: dict, scalars: dict, fingerprint: str, min_defects: int, info: dict) -> None:
        self.host = host
        for k in self.KEYS:
            setattr(self, k, np.asarray(arrays[k], dtype=np.float64))
        self._L: np.ndarray | None = None
        for k in self.SCALARS:
            setattr(self, k, float(scalars[k]))
        self.fingerprint, self.min_defects, self.info = fingerprint, int(min_defects), info
        self._M = shell_map(host)

    def train_kernel(self) -> np.ndarray:
        """``(M, M)`` the training kernel matrix + noise + scikit-learn's jitter (normalised units)."""
        return self._kernel(self.Z, self.Z) + (self.noise + 1e-10) * np.eye(len(self.Z))

    @property
    def L(self) -> np.ndarray:
        """``(M, M)`` lower Cholesky factor of :meth:`train_kernel` (computed once, ~M^3/3 flops)."""
        if self._L is None:
            self._L = np.linalg.cholesky(self.train_kernel())
        return self._L

    def _kernel(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        d2 = (A**2).sum(1)[:, None] + (B**2).sum(1)[None, :] - 2 * A @ B.T
        return self.c1 * np.exp(-0.5 * np.maximum(d2, 0) / self.length**2) + self.c2 * (self.s0**2 + A @ B.T)

    def predict_mean(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(correction (N,) eV per site, applies (N,) bool)`` without the variance (Monte Carlo energies)."""
        X = np.asarray(X, dtype=np.float64)
        on = X[:, : len(self.host.defect_types)].sum(1) >= self.min_defects
        mean = np.zeros(len(X))
        if on.any():
            Zb = (hd_features(X[on], self.host, self._M) - self.mu) / self.sd
            mean[on] = self._kernel(Zb, self.Z) @ self.alpha * self.y_std + self.y_mean
        return mean, on

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Correction and its std ``(N,)`` in eV per defect site for cluster counts ``X (N, F)``;
        exactly 0 (both) below :attr:`min_defects` defects."""
        X = np.asarray(X, dtype=np.float64)
        T = len(self.host.defect_types)
        on = X[:, :T].sum(1) >= self.min_defects
        mean, std = np.zeros(len(X)), np.zeros(len(X))
        if on.any():
            Zb = (hd_features(X[on], self.host, self._M) - self.mu) / self.sd
            K = self._kernel(Zb, self.Z)
            kss = self.c1 + self.c2 * (self.s0**2 + (Zb**2).sum(1)) + self.noise
            from scipy.linalg import solve_triangular

            V = solve_triangular(self.L, K.T, lower=True, check_finite=False)  # (M, N): k^T K^-1 k = |V|^2
            var = np.maximum(kss - (V * V).sum(0), 0.0)
            mean[on] = K @ self.alpha * self.y_std + self.y_mean
            std[on] = np.sqrt(var) * self.y_std
        return mean, std

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write the correction to one ``.npz`` atomically (no pickles)."""
        import io

        from invdesign.outputs import write_bytes_atomic

        buf = io.BytesIO()
        np.savez_compressed(buf, **self.arrays(prefix=""))
        write_bytes_atomic(Path(path), buf.getvalue())

    def arrays(self, prefix: str = "hd_correction/") -> dict[str, np.ndarray]:
        """Named numpy arrays (strings as 0-d unicode arrays)."""
        out = {prefix + k: getattr(self, k) for k in self.KEYS}
        out[prefix + "meta"] = np.array(json.dumps({"format": FORMAT, "scalars": {k: getattr(self, k) for k in self.SCALARS},
                                                    "fingerprint": self.fingerprint, "min_defects": self.min_defects,
                                                    "info": self.info}))
        return out

    @classmethod
    def from_arrays(cls, a, host: HostLattice, prefix: str = "hd_correction/", source: str = "hd_correction") -> HDCorrection:
        try:
            meta = json.loads(str(a[prefix + "meta"]))
            if meta.get("format") not in FORMATS:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
            return cls(host, {k: a[prefix + k] for k in cls.KEYS}, meta["scalars"], meta["fingerprint"],
                       meta["min_defects"], meta["info"])
        except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
            raise InvdesignError(f"not a readable high-density correction ({type(exc).__name__}: {exc})", source=source) from None

    @classmethod
    def load(cls, host: HostLattice, path: str | Path | None = None) -> HDCorrection | None:
        """The correction in ``path`` (default: the packaged resource; None when it is absent)."""
        p = Path(path) if path is not None else resource_path()
        if not p.is_file():
            if path is not None:
                raise InvdesignError("high-density correction file not found", source=str(p))
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return cls.from_arrays(z, host, prefix="", source=str(p))
        except (OSError, ValueError) as exc:
            raise InvdesignError(f"not a readable high-density correction ({type(exc).__name__})", source=str(p)) from None


def fit_hd_correction(X: np.ndarray, residual: np.ndarray, host: HostLattice, fingerprint: str, min_defects: int = 4,
                      info: dict | None = None, seed: int = 0, max_hyper: int | None = None) -> HDCorrection:
    """Fit on cluster counts ``X (M, F)`` and ``residual (M,)`` = reference - model (eV per defect site);
    kernel constants (and the target normalisation) by marginal likelihood (scikit-learn) on all rows, or on a
    seeded subsample of ``max_hyper`` rows when there are more (the likelihood's cost grows as ``M^3`` per
    step); the posterior on all rows in closed form."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, DotProduct, WhiteKernel

    Fz = hd_features(X, host)
    mu, sd = Fz.mean(0), Fz.std(0)
    sd[sd < 1e-12] = 1.0
    Z = (Fz - mu) / sd
    y = np.asarray(residual, dtype=np.float64)
    kern = (ConstantKernel(0.01) * RBF(3.0, (0.1, 100)) + ConstantKernel(0.001) * DotProduct(1.0)
            + WhiteKernel(1e-3, (1e-6, 1)))
    sub = np.arange(len(Z))
    if max_hyper is not None and len(Z) > max_hyper:
        sub = np.sort(np.random.default_rng(seed).choice(len(Z), max_hyper, replace=False))
    g = GaussianProcessRegressor(kern, normalize_y=True, random_state=seed, n_restarts_optimizer=1).fit(Z[sub], y[sub])
    k = g.kernel_
    sc = {"y_mean": float(g._y_train_mean[0] if np.ndim(g._y_train_mean) else g._y_train_mean),
          "y_std": float(g._y_train_std[0] if np.ndim(g._y_train_std) else g._y_train_std),
          "c1": float(k.k1.k1.k1.constant_value), "length": float(k.k1.k1.k2.length_scale),
          "c2": float(k.k1.k2.k1.constant_value), "s0": float(k.k1.k2.k2.sigma_0), "noise": float(k.k2.noise_level)}
    c = HDCorrection(host, {"Z": Z, "alpha": np.zeros(len(Z)), "mu": mu, "sd": sd}, sc, fingerprint, min_defects, info or {})
    Kinv = np.linalg.inv(c.train_kernel())
    c.alpha = 0.5 * (Kinv + Kinv.T) @ ((y - sc["y_mean"]) / sc["y_std"])
    return c
