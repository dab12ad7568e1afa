"""Defect-environment models of DFT properties, for any host and any defect density.

A configuration's properties are built from its defects, each seen with its neighbourhood: the
number of defects of each type in each pair orbit of the host within ``radius`` of it (exact and
symmetry-invariant, like the cluster counts; :class:`DefectEnvironment`). Two learned parts read
those environments:

- a cluster expansion of the *total* formation energy (``E_f = n * formation_energy_per_site``):
  singlets and pair counts within the radius, ridge-fitted with weights ``1 / n^2`` so that the
  loss is the error per defect site, plus a charge-balance term ``c |sum_t q_t n_t|`` (integer nominal
  charges per defect type chosen on the training rows: donors and acceptors compensate across the whole
  cell, beyond any pair radius; h-BN's C_B / V_N donors against C_N / V_B acceptors) (:class:`PairCE`);
- small networks (:class:`EnvNet`) that give each defect an energy term, a gap level and a
  magnetic-moment term: the formation energy is the sum of the energy terms over defects (so it stays
  extensive: more defects, more terms), the HOMO-LUMO gap a soft minimum of the levels and of a learned
  host gap (so ``0 <= gap <= host gap`` by construction: softplus, then the minimum), and the cell's
  moment ``total_mag >= 0`` a softplus of the summed terms. One ensemble learns the energy on wide
  environments (8 A: strain reaches far; each row also carries the cell's net charge), another the gap
  and the moment on local ones (6.5 A);
- where a host has thousands of 1-3-defect structures (MoS2, WSe2), low-density heads on exact cluster
  counts serve that regime (:mod:`invdesign.predict.low_density`).

:class:`HostModel` blends the two formation-energy estimates (weight chosen on validation), serves
the gap from the level networks blended with boosted trees, the moment from the level networks shrunk toward
the training median where that does better out of fold (a moment the environments do not determine is served
as what it is: nearly a constant, with its std), and gives every prediction a standard deviation: the
ensemble's spread, scaled per density band (defects per cell: 1-3, 4-6, 7-12, 13+) so that 95 % of
validation errors fall within 1.96 std (split-conformal calibration on a validation split the members
never trained on). A band without validation data gets the largest scale of the others and the
prediction is flagged.

Everything serves in numpy (the networks' weights are exported); torch is needed only to fit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from invdesign.errors import InvdesignError
from invdesign.lattice.host import HostLattice
from invdesign.predict.features import cluster_counts, orbit_distances
from invdesign.predict.low_density import LD_MIN_ROWS, LowDensityHeads

FORMAT = "invdesign-host-model/2"
#: density bands (defects per cell, inclusive) of the std calibration and of reported errors
BANDS: tuple[tuple[int, int], ...] = ((1, 3), (4, 6), (7, 12), (13, 10_000))
LEVEL = 0.95  # coverage the stds are calibrated to (as 1.96 std)
TARGETS = ("formation_energy_per_site", "homo_lumo_gap", "total_mag")
CONTEXT_SCALE = 10.0  # the net-charge column of the energy environments enters divided by this


def band_of(n: np.ndarray) -> np.ndarray:
    """``(N,)`` band index of defect counts ``n`` (``-1`` for 0 defects)."""
    n = np.asarray(n)
    out = np.full(n.shape, -1, dtype=np.int64)
    for b, (lo, hi) in enumerate(BANDS):
        out[(n >= lo) & (n <= hi)] = b
    return out


def band_label(b: int) -> str:
    lo, hi = BANDS[b]
    return f"{lo}-{hi}" if hi < 10_000 else f"{lo}+"


# ---------------------------------------------------------------------- features
class DefectEnvironment:
    """Per-defect environment vectors of configurations on ``host``.

    Each defect ``d`` gets ``[onehot(type_d) (T), counts (T * O)]`` where ``counts[t, o]`` is the number
    of defects of type ``t`` in pair orbit ``o`` from ``d`` (the ``O`` pair orbits of the host with
    minimum-image distance in ``(0, radius]`` A).
    """

    def __init__(self, host: HostLattice, radius: float) -> None:
        self.host = host
        self.radius = float(radius)
        #: ``(T,)`` nominal charges of the defect types: when set, every row ends with the cell's net charge
        #: ``|sum_t q_t n_t| / CONTEXT_SCALE`` (charge balance is global; :class:`PairCE`)
        self.charges: np.ndarray | None = None
        od = orbit_distances(host)
        orbs = np.flatnonzero((od > 0) & (od <= radius + 1e-6))
        self.n_orbits = len(orbs)
        omap = np.full(len(od), -1, dtype=np.int64)
        omap[orbs] = np.arange(len(orbs))
        self._site_orbit = omap[host.pair_orbits]  # (S, S) column of each site pair, -1 beyond the radius
        T = len(host.defect_types)
        self.n_types = T
        code_type = np.full((len(host.sublattices), host.n_species), -1, dtype=np.int64)
        for t, (sub, code) in enumerate(host.defect_types):
            code_type[sub, code] = t
        self._code_type = code_type

    @property
    def dim(self) -> int:
        return self.n_types * (1 + self.n_orbits) + (self.charges is not None)

    def types(self, occ: np.ndarray) -> np.ndarray:
        """``(N, S)`` defect type of each site (``-1``: host atom)."""
        occ = np.asarray(occ)
        return self._code_type[self.host.sublattice[None, :], occ]

    def transform(self, occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, S)`` occupancies -> ``F (D, dim)`` float32 environments of all ``D`` defects and
        ``owner (D,)`` int64: the configuration each defect belongs to (rows grouped by configuration, defects
        in site order). Vectorised over configurations (defect lists padded to the largest count)."""
        ty = self.types(occ)
        T, n_orb = self.n_types, self.n_orbits
        N = len(ty)
        is_def = ty >= 0
        k = is_def.sum(1)
        if N == 0 or k.max(initial=0) == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64)
        K = int(k.max())
        # (N, K) defect sites in site order, padded with -1
        order = np.argsort(~is_def, axis=1, kind="stable")[:, :K]
        valid = np.arange(K)[None, :] < k[:, None]
        sites = np.where(valid, order, 0)
        dty = np.where(valid, np.take_along_axis(ty, order, axis=1), -1)
        oo = self._site_orbit[sites[:, :, None], sites[:, None, :]]  # (N, K, K)
        pair = valid[:, :, None] & valid[:, None, :] & (oo >= 0) & ~np.eye(K, dtype=bool)[None]
        n_i, i, j = np.nonzero(pair)
        row = n_i * K + i  # the defect whose environment counts partner j
        col = T + dty[n_i, j] * n_orb + oo[n_i, i, j]
        F = np.bincount(row * self.dim + col, minlength=N * K * self.dim).astype(np.float32).reshape(N * K, self.dim)
        flat_valid = valid.ravel()
        F[np.flatnonzero(flat_valid), dty.ravel()[flat_valid]] = 1.0  # own type
        owner = np.repeat(np.arange(N, dtype=np.int64), K)[flat_valid]
        if self.charges is not None:  # the cell's net charge on every defect's row
            counts = np.stack([(ty == t).sum(1) for t in range(T)], axis=1).astype(np.float64)
            F[:, -1] = np.repeat(np.abs(counts @ self.charges) / CONTEXT_SCALE, K)
        return F[flat_valid], owner


# ---------------------------------------------------------------------- cluster expansion (energy)
class PairCE:
    """Ridge cluster expansion of the total formation energy on singlets and pair counts within ``radius``.

    With ``charge`` it also holds a charge-balance term ``c |sum_t q_t n_t|``: each defect type ``t`` carries an
    integer nominal charge ``q_t`` (-3..3; donors +, acceptors -) and ``n_t`` is its count in the cell. Donors and
    acceptors anywhere in the cell compensate each other (their carriers meet across the whole cell, far beyond
    any pair radius), so the energy follows the net charge, not only the pairs. The charges are chosen on the
    training rows alone (4-fold cross-validation of the ridge over every assignment, up to a global sign).
    """

    def __init__(self, host: HostLattice, radius: float, alpha: float = 1e-2, charge: bool = False) -> None:
        self.host, self.radius, self.alpha = host, float(radius), float(alpha)
        od = orbit_distances(host)
        T = len(host.defect_types)
        self._T = T
        npo = len(od)
        keep = np.zeros((T, T, npo), bool)
        keep[:, :, od <= radius + 1e-6] = True
        self._cols = np.concatenate([np.arange(T), T + np.flatnonzero(keep.ravel())])
        self.charge = bool(charge)
        self.charges = np.zeros(T)  # (T,) nominal charge of each defect type (set by fit when ``charge``)
        self.coef: np.ndarray | None = None

    def net_charge(self, counts: np.ndarray) -> np.ndarray:
        """``(N,)`` ``|sum_t q_t n_t|`` of type counts ``(N, T)``."""
        return np.abs(np.asarray(counts, np.float64) @ self.charges)

    def features(self, occ: np.ndarray) -> np.ndarray:
        return self._features(cluster_counts(occ, self.host)[:, self._cols].astype(np.float64))

    def _features(self, X: np.ndarray) -> np.ndarray:
        """The expansion's columns from the kept cluster counts ``X (N, P)``: the charge column appended (with
        ``charge``), the singlets scaled by 10 (the defect types' own energies barely penalised)."""
        if self.charge:
            X = np.concatenate([X, self.net_charge(X[:, : self._T])[:, None]], axis=1)
        else:
            X = X.copy()
        X[:, : self._T] *= 10.0
        return X

    def _solve(self, Xs: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.linalg.solve(Xs.T @ Xs + self.alpha * np.eye(Xs.shape[1]), Xs.T @ y)

    def _choose_charges(self, X: np.ndarray, n: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        """The charges ``(T,)`` of least 4-fold CV error of the ridge on pair features ``X (N, P)`` (without the
        charge column), defect counts ``n (N,)`` and per-site targets ``y (N,)``, and that error (MAE, eV per
        site). Every assignment in -3..3 is tried (one of each ``q, -q``; only ``q = 0`` without ``charge``);
        the extra column enters each fold's solution by block elimination, so one assignment costs ``O(N P)``."""
        import itertools

        T = self._T
        counts = X[:, :T] / 10.0
        Xs = X / n[:, None]
        folds = np.random.default_rng(0).permutation(len(y)) % 4
        pre = []
        for f in range(4):
            tr = folds != f
            Ainv = np.linalg.inv(Xs[tr].T @ Xs[tr] + self.alpha * np.eye(X.shape[1]))
            pre.append((tr, Ainv, Ainv @ (Xs[tr].T @ y[tr])))
        best, best_q = np.inf, np.zeros(T)
        for q in (itertools.product(range(-3, 4), repeat=T) if self.charge else [np.zeros(T)]):
            q = np.asarray(q, float)
            nz = np.flatnonzero(q)
            if len(nz) and q[nz[0]] < 0:  # |Q| is the same for q and -q
                continue
            c = np.abs(counts @ q) / n
            err = 0.0
            for tr, Ainv, w0 in pre:
                v = Xs[tr].T @ c[tr]
                Av = Ainv @ v
                wc = (c[tr] @ y[tr] - v @ w0) / (c[tr] @ c[tr] + self.alpha - v @ Av)
                w = w0 - Av * wc
                te = ~tr
                err += np.abs(Xs[te] @ w + c[te] * wc - y[te]).sum()
            if err < best - 1e-12:
                best, best_q = err, q
        return best_q, float(best) / len(y)

    def _counts(self, occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The kept cluster counts ``(N, P)`` of ``occ (N, S)`` and the defect counts ``(N,)`` (at least 1)."""
        counts = cluster_counts(occ, self.host)[:, self._cols].astype(np.float64)
        return counts, np.maximum(counts[:, : self._T].sum(1), 1)

    def search_charges(self, occ: np.ndarray, fe_site: np.ndarray) -> tuple[np.ndarray, float]:
        """The charges ``(T,)`` :meth:`fit` would choose on ``occ (N, S)``, ``fe_site (N,)`` (zeros without
        ``charge``) and the expansion's 4-fold CV MAE with them (eV per site)."""
        counts, n = self._counts(occ)
        counts[:, : self._T] *= 10.0
        return self._choose_charges(counts, n, np.asarray(fe_site, np.float64))

    def fit(self, occ: np.ndarray, fe_site: np.ndarray, charges: np.ndarray | None = None) -> PairCE:
        """Fit on ``occ (N, S)``, ``fe_site (N,)`` (eV per site); ``charges``: those :meth:`search_charges` found on
        the same rows (else searched here)."""
        counts, n = self._counts(occ)
        if self.charge:
            self.charges = self.search_charges(occ, fe_site)[0] if charges is None else np.asarray(charges, np.float64)
        X = self._features(counts) / n[:, None]  # per site: X/n . w = E_total / n
        self.coef = self._solve(X, fe_site)
        return self

    def predict(self, occ: np.ndarray) -> np.ndarray:
        """``(N,)`` formation energy per defect site (eV); NaN without defects."""
        X = self.features(occ)
        n = (X[:, : self._T] / 10.0).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, (X @ self.coef) / n, np.nan)


#: radii (A) the pair expansion's radius is chosen from (:func:`choose_radius`), and the margin of CV error a
#: radius must gain over :data:`RADIUS_ENERGY` to replace it
RADII_ENERGY = (4.0, 5.0, 6.0, 7.0, 8.0)
RADIUS_ENERGY = 8.0
RADIUS_MARGIN = 0.05


def choose_radius(host: HostLattice, occ: np.ndarray, fe_site: np.ndarray, charge: bool,
                  largest: float = RADIUS_ENERGY) -> tuple[float, dict[str, float], np.ndarray]:
    """The pair expansion's radius (A) for a host's data ``occ (N, S)``, ``fe_site (N,)`` (eV per site): the one of
    :data:`RADII_ENERGY` (up to ``largest``) with the least 4-fold CV error (MAE, charges chosen in each), kept at
    ``largest`` unless another radius beats its error by more than :data:`RADIUS_MARGIN` (smaller gains are within
    split noise; 8 A was chosen on WSe2). Hosts differ in how far a defect reaches in lattice steps: h-BN's 2.5 A
    lattice puts far more pair orbits within 8 A than its 400 structures can fit. Returns the radius, every
    radius's CV MAE (meV per site) and the charges found at the chosen radius (for :meth:`PairCE.fit`)."""
    radii = [R for R in RADII_ENERGY if R < largest - 1e-9] + [float(largest)]
    found = {R: PairCE(host, R, charge=charge).search_charges(occ, fe_site) for R in radii}
    errs = {R: e for R, (_, e) in found.items()}
    best = min(errs, key=errs.get)
    chosen = best if errs[best] < (1.0 - RADIUS_MARGIN) * errs[largest] else largest
    return float(chosen), {f"{R:g}": round(e * 1e3, 2) for R, e in errs.items()}, found[chosen][0]


# ---------------------------------------------------------------------- networks
def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _silu(x: np.ndarray) -> np.ndarray:
    """``x / (1 + exp(-x))`` in one temporary (the same floats)."""
    y = np.negative(x)
    np.exp(y, out=y)
    y += 1.0
    return np.divide(x, y, out=y)


TAU = 0.05  # eV, softness of the gap's minimum over levels


@dataclass
class EnvNet:
    """One member: an MLP ``dim -> w -> w -> 3`` on standardised environments, plus the host gap (eV)."""

    weights: list[np.ndarray]  # W1, b1, W2, b2, W3, b3
    mean: np.ndarray
    scale: np.ndarray
    host_gap: float

    def terms(self, F: np.ndarray) -> np.ndarray:
        """``(D, 3)``: energy term (eV), gap level (eV), moment term (Bohr magnetons) of each defect (the layers
        in float32, as trained; the sums over defects in float64)."""
        if "_f32" not in self.__dict__:  # the input scaling folded into the first layer, float32, once
            W1, b1, W2, b2, W3, b3 = self.weights
            W1s = W1 / self.scale[:, None]
            self._f32 = tuple(np.asarray(w, np.float32) for w in (W1s, b1 - self.mean @ W1s, W2, b2, W3, b3))
        W1, b1, W2, b2, W3, b3 = self._f32
        h = _silu(np.asarray(F, np.float32) @ W1 + b1)
        h = _silu(h @ W2 + b2)
        return (h @ W3 + b3).astype(np.float64)

    def predict(self, F: np.ndarray, owner: np.ndarray, N: int) -> np.ndarray:
        """``(N, 3)``: total formation energy (eV), gap (eV), total moment of each configuration."""
        o = self.terms(F)
        E = np.bincount(owner, weights=o[:, 0], minlength=N)
        M = _softplus(np.bincount(owner, weights=o[:, 2], minlength=N))
        lv = -o[:, 1] / TAU
        mx = np.full(N, -self.host_gap / TAU)
        np.maximum.at(mx, owner, lv)
        s = np.exp(-self.host_gap / TAU - mx) + np.bincount(owner, weights=np.exp(lv - mx[owner]), minlength=N)
        G = _softplus(-TAU * (np.log(s) + mx) * 10.0) / 10.0
        G = np.minimum(G, self.host_gap)
        return np.stack([E, G, M], axis=1)


def fit_envnet(F: np.ndarray, owner: np.ndarray, n: np.ndarray, y: np.ndarray, seed: int, epochs: int = 800,
               width: int = 64, lr: float = 3e-3, weight_decay: float = 1e-4, host_gap: float | None = None,
               weight: np.ndarray | None = None, tasks: tuple[bool, bool, bool] = (True, True, True)) -> EnvNet:
    """Fit one member on configurations ``0..N-1`` (rows ``F (D, dim)`` with ``owner (D,)``), ``n (N,)`` defect
    counts and targets ``y (N, 3)`` (formation energy per site, gap, moment; NaN: not known). Full-batch
    AdamW with a cosine schedule; the loss is the ``weight``-weighted (default uniform) mean absolute error of
    each known target among ``tasks`` (formation energy, gap, moment)."""
    import torch

    torch.manual_seed(seed)
    N = len(n)
    mean = np.zeros(F.shape[1])  # counts enter as they are (standardising rare pair columns amplifies them)
    scale = np.ones(F.shape[1])
    Ft = torch.tensor((F - mean) / scale, dtype=torch.float32)
    ow = torch.tensor(owner)
    nt = torch.tensor(n, dtype=torch.float32)
    yt = torch.tensor(np.nan_to_num(y), dtype=torch.float32)
    w = np.ones(N) if weight is None else np.asarray(weight, dtype=np.float64)
    known = torch.tensor(np.isfinite(y) * w[:, None] * np.asarray(tasks, float)[None, :], dtype=torch.float32)
    g0 = float(np.nanmax(y[:, 1])) if host_gap is None else float(host_gap)
    net = torch.nn.Sequential(torch.nn.Linear(F.shape[1], width), torch.nn.SiLU(), torch.nn.Linear(width, width),
                              torch.nn.SiLU(), torch.nn.Linear(width, 3))
    log_gap = torch.nn.Parameter(torch.tensor(np.log(max(g0, 1e-3)), dtype=torch.float32))
    opt = torch.optim.AdamW([*net.parameters(), log_gap], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        opt.zero_grad()
        o = net(Ft)
        E = torch.zeros(N).index_add(0, ow, o[:, 0])
        M = torch.nn.functional.softplus(torch.zeros(N).index_add(0, ow, o[:, 2]))
        hg = log_gap.exp()
        lv = -o[:, 1] / TAU
        mx = torch.full((N,), -1.0).mul(hg / TAU).scatter_reduce(0, ow, lv, reduce="amax")
        s = torch.exp(-hg / TAU - mx) + torch.zeros(N).index_add(0, ow, torch.exp(lv - mx[ow]))
        G = torch.minimum(torch.nn.functional.softplus(-TAU * (torch.log(s) + mx) * 10.0) / 10.0, hg)
        pred = torch.stack([E / nt, G, M], 1)
        err = (pred - yt).abs() * known
        loss = (err.sum(0) / known.sum(0).clamp_min(1)).sum()
        loss.backward()
        opt.step()
        sched.step()
    lin = [m for m in net if isinstance(m, torch.nn.Linear)]
    weights = []
    for m in lin:
        weights += [m.weight.detach().numpy().T.astype(np.float64).copy(), m.bias.detach().numpy().astype(np.float64).copy()]
    return EnvNet(weights, mean.astype(np.float64), scale.astype(np.float64), float(log_gap.exp().item()))


#: losses the gap's trees may be fitted with (``HostModel(gap_loss="auto")`` fits both and keeps the one of least
#: out-of-fold error)
GAP_LOSSES = ("squared_error", "absolute_error")


def _fit_gap_trees(Z: np.ndarray, gap: np.ndarray, seed: int, loss: str = "squared_error"):
    """Gradient-boosted trees ``Z (N, p) -> gap (N,)`` (eV) with ``loss``, as plain arrays
    (:class:`invdesign.predict.gap._Forest`)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    from invdesign.predict.gap import _Forest

    ok = np.isfinite(gap)
    est = HistGradientBoostingRegressor(max_iter=400, learning_rate=0.05, l2_regularization=1.0, early_stopping=False,
                                        random_state=seed, loss=loss).fit(Z[ok], gap[ok])
    return _Forest.from_sklearn(est)


#: held-out rows a density band needs to get a blend weight of its own (else the weight over all rows)
BAND_BLEND_MIN = 100


def _loss_scores(tree_gaps: dict[str, np.ndarray], gap: np.ndarray, bands: np.ndarray) -> dict[str, float]:
    """Held-out gap MAE (eV) of each loss's tree predictions ``(N,)`` against ``gap (N,)`` where the host model
    serves the gap: rows with 4+ defects (``bands >= 1``) when the data holds :data:`BAND_BLEND_MIN` of them (as the
    blend's bands), else every row."""
    ok = np.isfinite(gap)
    sel = ok & ((bands >= 1) if ((bands >= 1) & ok).sum() >= BAND_BLEND_MIN else True)
    return {loss: float(np.mean(np.abs(np.clip(g[sel], 0.0, None) - gap[sel]))) for loss, g in tree_gaps.items()}


def _band_weights(a: np.ndarray, b: np.ndarray, y: np.ndarray, bands: np.ndarray) -> np.ndarray:
    """``(len(BANDS),)`` weights ``w`` (grid 0, 0.1, ..., 1) minimising the held-out MAE of ``w a + (1 - w) b``
    against ``y`` in each density band with at least :data:`BAND_BLEND_MIN` known rows; a smaller band above
    the first takes the weight of all those bands pooled (4+ defects) if they hold that many, else the weight
    over all rows (a large low-density set must not choose the high-density bands' weight)."""
    grid = np.linspace(0.0, 1.0, 11)
    ok = np.isfinite(y) & np.isfinite(a) & np.isfinite(b)

    def best(sel: np.ndarray) -> float:
        if not sel.any():
            return 0.5
        return float(grid[np.argmin([np.mean(np.abs(w * a[sel] + (1 - w) * b[sel] - y[sel])) for w in grid])])

    overall = best(ok)
    high = ok & (bands >= 1)
    pooled = best(high) if high.sum() >= BAND_BLEND_MIN else overall
    return np.array([best(ok & (bands == k)) if (ok & (bands == k)).sum() >= BAND_BLEND_MIN
                     else (pooled if k >= 1 else overall) for k in range(len(BANDS))])


# ---------------------------------------------------------------------- the host model
@dataclass
class Calibration:
    """Per-target, per-band std scales (``(3, len(BANDS))``), the spread floor (``(3,)``), which bands
    had validation data (``(3, len(BANDS))`` bool) and how much of the ensemble spread each target's std
    follows (``(3,)``: 1 normalised by the spread, 0 one std per band): ``std = scale * (weight * spread + floor)``."""

    scale: np.ndarray
    floor: np.ndarray
    validated: np.ndarray
    spread_weight: np.ndarray = field(default_factory=lambda: np.ones(3))

    def std(self, spread: np.ndarray, bands: np.ndarray, j: int) -> np.ndarray:
        """``(N,)`` calibrated stds of target ``j`` from ensemble spreads ``(N,)`` and band indices ``(N,)``."""
        return self.scale[j, bands] * (self.spread_weight[j] * spread + self.floor[j])


class HostModel:
    """DFT properties of defect configurations on one host, from its 2DMD data (any density).

    Two ensembles of :class:`EnvNet`: ``members_energy`` networks fitted to the formation energy on environments
    within ``radius_energy`` (strain reaches far), and ``members_levels`` networks fitted to the gap and the moment
    on environments within ``radius_levels`` (defect levels are local); the formation energy is blended with the
    pair expansion (within ``radius_energy``) by a weight chosen on the validation split.

    Args:
        host: the host lattice.
        radius_energy, radius_levels: environment radii (A).
        radius_ce: the pair expansion's radius (A; default ``radius_energy``, at most it).
        radius_auto: choose the pair expansion's radius on the training rows (:func:`choose_radius`, up to
            ``radius_energy``), else keep ``radius_ce``. The energy networks keep ``radius_energy``.
        members_energy, members_levels: networks per ensemble.
        epochs, width: network training.
        seed: base seed.
        gap_loss: the gap trees' loss (one of :data:`GAP_LOSSES`), or ``"auto"``: both fitted, the one of least
            out-of-fold gap MAE (rows with 4+ defects where the data holds 100) kept.
        mag_shrink: serve the moment as ``w * networks + (1 - w) * median`` of the training moments, ``w`` per
            density band chosen on the out-of-fold predictions (``w = 1``: the networks alone).
    """

    def __init__(self, host: HostLattice, radius_energy: float = RADIUS_ENERGY, radius_levels: float = 6.5, members_energy: int = 4,
                 members_levels: int = 8, epochs: int = 800, width: int = 64, seed: int = 0, crossfit: bool = True, gap_trees: bool = True,
                 context: bool = True, charge: bool = True, low_density: bool = True, radius_auto: bool = True,
                 radius_ce: float | None = None, gap_loss: str = "auto", mag_shrink: bool = True) -> None:
        self.host = host
        if gap_loss not in ("auto", *GAP_LOSSES):
            raise ValueError(f"gap_loss must be 'auto' or one of {GAP_LOSSES}, not {gap_loss!r}")
        self.gap_loss = gap_loss
        self.mag_shrink = bool(mag_shrink)
        self.radius_auto = bool(radius_auto)
        self.low_density = bool(low_density)
        self.ld = None  # LowDensityHeads (set by fit where the data holds enough 1-3-defect rows)
        self.context, self.charge = bool(context), bool(charge)
        self.crossfit, self.gap_trees = bool(crossfit), bool(gap_trees)
        self.radius_energy, self.radius_levels = float(radius_energy), float(radius_levels)
        self.members_energy, self.members_levels = int(members_energy), int(members_levels)
        self.epochs, self.width, self.seed = int(epochs), int(width), int(seed)
        if self.context and not self.charge:
            raise ValueError("context (the net charge in the energy networks' inputs) needs charge=True")
        self.env_e = DefectEnvironment(host, radius_energy)
        self.env_g = DefectEnvironment(host, radius_levels)
        self.env = self.env_g  # the descriptor of embed() and the defect types
        self.radius_ce = float(radius_energy if radius_ce is None else radius_ce)
        if self.radius_ce > self.radius_energy + 1e-9:
            raise ValueError(f"the pair expansion's radius {self.radius_ce} exceeds the energy environments' {self.radius_energy}")
        self.ce = PairCE(host, self.radius_ce, charge=self.charge)
        self.nets_e: list[EnvNet] = []
        self.nets_g: list[EnvNet] = []
        # weights of the pair expansion in the formation energy and of the trees in the gap, per density band
        # (BANDS; chosen on held-out predictions by fit)
        self.blend = np.full(len(BANDS), 0.5)
        self.trees_g: list = []  # gradient-boosted trees of the gap on cluster counts (one per level member)
        self.blend_gap = np.zeros(len(BANDS))
        # the moment: weight of the level networks against the training median, per density band (fit chooses it)
        self.blend_mag = np.ones(len(BANDS))
        self.mag_center = 0.0  # Bohr magnetons
        self.calibration: Calibration | None = None
        self.meta: dict = {}
        self.heldout_parts: dict[str, np.ndarray] = {}  # set by fit: the out-of-fold parts (not saved)
        self.train_occ = np.zeros((0, host.n_sites), np.uint8)  # (N, S) every configuration fit saw (train + val)
        self.train_y = np.zeros((0, 3))  # (N, 3) their targets (TARGETS order, NaN where unknown)

    def settings(self) -> dict:
        return {"radius_energy": self.radius_energy, "radius_levels": self.radius_levels, "members_energy": self.members_energy,
                "members_levels": self.members_levels, "epochs": self.epochs, "width": self.width, "seed": self.seed,
                "crossfit": self.crossfit, "gap_trees": self.gap_trees, "context": self.context,
                "charge": self.charge, "low_density": self.low_density, "radius_auto": self.radius_auto,
                "radius_ce": self.radius_ce, "gap_loss": self.gap_loss, "mag_shrink": self.mag_shrink}

    # ------------------------------------------------------------------ fit
    def fit(self, occ: np.ndarray, y: np.ndarray, val: np.ndarray | None = None,
            progress: Callable[[str], None] | None = None) -> HostModel:
        """Fit on configurations ``occ (N, S)`` with targets ``y (N, 3)`` (TARGETS order; NaN where unknown).

        Cross-fitted (``crossfit``, the default; ``val`` must be None): the rows are dealt into as many folds as
        each ensemble has members, and member ``k`` trains on every fold but its own, so the ensemble sees all
        the data while every row keeps an out-of-fold prediction (from the member that did not see it, and a
        pair expansion fitted without its fold). The blend and the std calibration are chosen on those
        out-of-fold predictions (jackknife+-style; the served spread on a training row is smaller than on a new
        one, so the stds err wide). Otherwise ``val (N,)`` bool marks a calibration split never trained on."""
        t0 = time.time()
        occ = np.asarray(occ)
        n = self.n_defects(occ)
        N = len(occ)
        if (n == 0).any():
            raise InvdesignError("training data holds pristine cells (no defects): formation energy per site undefined")
        if self.crossfit:
            if val is not None:
                raise ValueError("a cross-fitted model chooses its own folds: pass val=None")
            if min(self.members_energy, self.members_levels) < 2 or N < 2 * max(self.members_energy, self.members_levels):
                raise InvdesignError(f"cross-fitting {self.members_energy}/{self.members_levels} members needs at least "
                                     f"{2 * max(self.members_energy, self.members_levels)} structures (got {N})")
            fold_e, fold_g = self._crossfit_folds(N)
            masks_e = [fold_e != k for k in range(self.members_energy)]
            masks_g = [fold_g != k for k in range(self.members_levels)]
            tr = np.ones(N, bool)
        else:
            if val is None:
                raise ValueError("a model that is not cross-fitted needs a validation mask")
            tr = ~np.asarray(val, bool)
            masks_e, masks_g = [tr] * self.members_energy, [tr] * self.members_levels
        radius_cv, charges = None, None
        if self.radius_auto:  # the pair expansion's reach, chosen on the training rows (choose_radius)
            R, radius_cv, charges = choose_radius(self.host, occ[tr], y[tr, 0], self.charge, self.radius_energy)
            self.radius_ce = R
            self.ce = PairCE(self.host, R, charge=self.charge)
        self.ce.fit(occ[tr], y[tr, 0], charges)
        if self.context:
            self.env_e.charges = self.ce.charges
        total = self.members_energy + self.members_levels
        self.nets_e, self.nets_g = [], []
        for env, nets, masks, tasks in ((self.env_e, self.nets_e, masks_e, (True, False, False)),
                                        (self.env_g, self.nets_g, masks_g, (False, True, True))):
            F, owner = env.transform(occ)
            for mask in masks:
                rows = np.flatnonzero(mask)
                Ftr, otr = self._rows(F, owner, rows)
                # every density band weighs the same in the networks' loss (a large low-density set must not
                # drown a few hundred high-density structures)
                b = band_of(n[rows])
                w = 1.0 / np.bincount(b, minlength=len(BANDS))[b]
                w *= len(w) / w.sum()
                k = len(self.nets_e) + len(self.nets_g)
                nets.append(fit_envnet(Ftr, otr, n[rows], y[rows], seed=self.seed + k, epochs=self.epochs, width=self.width,
                                       weight=w, tasks=tasks))
                if progress:
                    progress(f"network {k + 1}/{total}")
        # gradient-boosted trees on the cluster counts for the gap (thresholds on which defects are near which)
        Z = self._tree_features(occ)
        trees_by_loss = self._gap_trees_by_loss(Z, y[:, 1], masks_g) if self.gap_trees else {}
        self.calibration = None
        if self.crossfit:  # out-of-fold predictions of every row
            idx = np.arange(N)
            nets_fe = self._energy_members(occ)[fold_e, idx]
            ce_fe = np.empty(N)
            for k in range(self.members_energy):
                ce_fe[~masks_e[k]] = PairCE(self.host, self.radius_ce, charge=self.charge).fit(occ[masks_e[k]], y[masks_e[k], 0]) \
                    .predict(occ[~masks_e[k]])
            levels = self._level_members(occ)[fold_g, idx]  # (N, 2)
            tree_gaps = {loss: np.stack([t.predict(Z) for t in ts])[fold_g, idx] for loss, ts in trees_by_loss.items()}
            yv, cal_rows = y, idx
        else:
            cal_rows = np.flatnonzero(~tr)
            nets_fe, ce_fe = self._fe_parts(occ[cal_rows])
            levels = self._level_members(occ[cal_rows]).mean(0)
            tree_gaps = {loss: np.mean([t.predict(Z[cal_rows]) for t in ts], axis=0) for loss, ts in trees_by_loss.items()}
            yv = y[cal_rows]
        bands = band_of(n[cal_rows])
        # the trees' loss: the one of least held-out gap MAE where the host model serves the gap (4+ defects when
        # the data holds 100 such rows, as the blend's bands; else every row)
        loss_mae = _loss_scores(tree_gaps, yv[:, 1], bands)
        chosen = min(loss_mae, key=loss_mae.get) if loss_mae else None
        self.trees_g = trees_by_loss[chosen] if chosen else []
        tree_gap = tree_gaps[chosen] if chosen else levels[:, 0]
        self.blend_gap = _band_weights(tree_gap, levels[:, 0], yv[:, 1], bands)
        # the formation energy's blend of expansion and networks: chosen on held-out predictions
        self.blend = _band_weights(ce_fe, nets_fe, yv[:, 0], bands)
        # the moment: the networks, or nearer the training median where they do no better out of fold
        self.blend_mag, self.mag_center = np.ones(len(BANDS)), 0.0
        if self.mag_shrink and np.isfinite(y[tr, 2]).any():
            self.mag_center = float(np.median(y[tr, 2][np.isfinite(y[tr, 2])]))
            self.blend_mag = _band_weights(levels[:, 1], np.full(len(levels), self.mag_center), yv[:, 2], bands)
        mu, spread = self._raw(occ[cal_rows])
        if self.crossfit:
            bg, bc, bm = self._weights(self.blend_gap, n), self._weights(self.blend, n), self._weights(self.blend_mag, n)
            gap = np.clip(bg * tree_gap + (1 - bg) * levels[:, 0], 0.0, self.host_gap())
            mu = np.column_stack([bc * ce_fe + (1 - bc) * nets_fe, gap, bm * levels[:, 1] + (1 - bm) * self.mag_center])
        self.calibration = calibrate(mu, spread, yv, n[cal_rows])
        # the held-out parts behind the blends and the calibration (in memory only: for studies of the recipe)
        self.heldout_parts = {"n": n[cal_rows], "y": np.asarray(yv), "fe_ce": ce_fe, "fe_nets": nets_fe,
                              "gap_nets": levels[:, 0], "gap_trees": tree_gap, "mag_nets": levels[:, 1], "spread": spread}
        with np.errstate(invalid="ignore"):
            heldout = {t: round(float(np.nanmean(np.abs(mu[:, j] - yv[:, j]))) * 1e3, 2)
                       for j, t in enumerate(TARGETS) if np.isfinite(yv[:, j]).any()}
        self.ld = None
        if self._fits_low_density(n[tr]):
            if progress:
                progress("low-density heads")
            self.ld = LowDensityHeads(self.host, self.seed).fit(occ[tr], y[tr, 0], y[tr, 1], n[tr])
        self.train_occ = np.asarray(occ, dtype=np.uint8)
        self.train_y = np.asarray(y, dtype=np.float64)
        self.meta = {"n_train": int(tr.sum()), "n_val": len(cal_rows), "seconds": round(time.time() - t0, 1),
                     "calibration": "cross-fitted (out-of-fold)" if self.crossfit else "validation split",
                     "heldout_mae_meV": heldout,
                     "blend_ce": self.blend.tolist(), "blend_gap_trees": self.blend_gap.tolist(),
                     "blend_mag_nets": self.blend_mag.tolist(), "mag_center": self.mag_center, "kmax": int(n.max()), "kmin": int(n.min()),
                     "targets_known": [bool(np.isfinite(y[:, j]).any()) for j in range(3)],
                     "compositions": np.unique(self._type_counts(occ), axis=0).tolist()}
        if radius_cv is not None:
            self.meta["radius_ce_cv_meV"] = radius_cv
        if chosen:
            self.meta["gap_trees_loss"] = chosen
            self.meta["gap_trees_heldout_mae_meV"] = {k: round(v * 1e3, 2) for k, v in loss_mae.items()}
        if self.ld is not None:
            self.meta["low_density"] = self.ld.header()
        return self

    def _crossfit_folds(self, N: int) -> tuple[np.ndarray, np.ndarray]:
        """The cross-fit fold ``(N,)`` of every row for the energy and for the level ensembles (seeded by ``seed``)."""
        rng = np.random.default_rng(self.seed)
        fold_e = rng.permutation(N) % self.members_energy
        return fold_e, rng.permutation(N) % self.members_levels

    def _gap_trees_by_loss(self, Z: np.ndarray, gap: np.ndarray, masks: list[np.ndarray]) -> dict[str, list]:
        """One gap forest per member mask ``(N,)`` on tree rows ``Z (N, p)``, per candidate loss (both for ``auto``)."""
        return {loss: [_fit_gap_trees(Z[m], gap[m], seed=self.seed + k, loss=loss) for k, m in enumerate(masks)]
                for loss in (GAP_LOSSES if self.gap_loss == "auto" else (self.gap_loss,))}

    def gap_loss_cv(self, occ: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """The out-of-fold gap MAE (meV) of the gap trees under each candidate loss on ``occ (N, S)``, ``y (N, 3)``:
        what a cross-fitted :meth:`fit` on the same rows compares to choose ``gap_loss="auto"`` (the same folds,
        seeds, radius and rows), without the networks. For studies: whether a recipe's choice holds on a set."""
        occ = np.asarray(occ)
        n = self.n_defects(occ)
        charges = None
        if self.radius_auto:
            self.radius_ce, _, charges = choose_radius(self.host, occ, y[:, 0], self.charge, self.radius_energy)
            self.ce = PairCE(self.host, self.radius_ce, charge=self.charge)
        self.ce.fit(occ, y[:, 0], charges)  # the trees read its charge column
        fold_g = self._crossfit_folds(len(occ))[1]
        Z = self._tree_features(occ)
        trees = self._gap_trees_by_loss(Z, y[:, 1], [fold_g != k for k in range(self.members_levels)])
        idx = np.arange(len(occ))
        gaps = {loss: np.stack([t.predict(Z) for t in ts])[fold_g, idx] for loss, ts in trees.items()}
        return {k: round(v * 1e3, 2) for k, v in _loss_scores(gaps, y[:, 1], band_of(n)).items()}

    def _fits_low_density(self, n: np.ndarray) -> bool:
        """Whether :meth:`fit` on training rows with defect counts ``n (N,)`` fits the low-density heads."""
        return self.low_density and LowDensityHeads.rows(n).sum() >= LD_MIN_ROWS

    def fit_steps(self, occ: np.ndarray) -> int:
        """How many times :meth:`fit` on ``occ (N, S)`` (cross-fitted) calls its ``progress``: once per network,
        and once for the low-density heads where it fits them."""
        return self.members_energy + self.members_levels + int(self._fits_low_density(self.n_defects(occ)))

    @staticmethod
    def _rows(F: np.ndarray, owner: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        remap = np.full(int(owner.max(initial=-1)) + 1, -1, dtype=np.int64)
        remap[idx] = np.arange(len(idx))
        sel = remap[owner] >= 0
        return F[sel], remap[owner[sel]]

    def embed(self, occ: np.ndarray) -> np.ndarray:
        """``(N, dim)`` an exactly invariant descriptor of each configuration: its defects' environment vectors
        averaged (zeros for a pristine cell). For distances between candidates (diversity, nearest known), not
        an invertible embedding."""
        occ = np.asarray(occ)
        F, owner = self.env.transform(occ)
        n = np.maximum(np.bincount(owner, minlength=len(occ)), 1)
        out = np.zeros((len(occ), F.shape[1]))
        np.add.at(out, owner, F)
        return out / n[:, None]

    def n_defects(self, occ: np.ndarray) -> np.ndarray:
        return (np.asarray(occ) != self.host.host_code[None, :]).sum(1)

    def _type_counts(self, occ: np.ndarray) -> np.ndarray:
        ty = self.env.types(occ)
        return np.stack([(ty == t).sum(1) for t in range(self.env.n_types)], axis=1)

    # ------------------------------------------------------------------ predict
    def _energy_members(self, occ: np.ndarray) -> np.ndarray:
        """``(Me, N)`` the energy networks' formation energy per defect site (NaN for pristine cells)."""
        occ = np.asarray(occ)
        n = self.n_defects(occ).astype(np.float64)
        F, owner = self.env_e.transform(occ)
        o = np.stack([m.terms(F)[:, 0] for m in self.nets_e])  # (Me, D)
        E = np.stack([np.bincount(owner, weights=row, minlength=len(occ)) for row in o])
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n[None, :] > 0, E / n[None, :], np.nan)

    def _level_members(self, occ: np.ndarray) -> np.ndarray:
        """``(Mg, N, 2)`` the level networks' gap (eV) and moment (Bohr magnetons)."""
        occ = np.asarray(occ)
        F, owner = self.env_g.transform(occ)
        return np.stack([m.predict(F, owner, len(occ))[:, 1:] for m in self.nets_g])

    def _fe_parts(self, occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N,)`` formation energy per site of the networks (mean) and of the pair expansion."""
        return self._energy_members(occ).mean(0), self.ce.predict(occ)

    def _raw(self, occ: np.ndarray, targets: tuple[int, ...] = (0, 1, 2)) -> tuple[np.ndarray, np.ndarray]:
        """Means and spreads ``(N, 3)`` (before calibration; columns not in ``targets`` NaN): the level networks'
        mean and spread for the gap and the moment; for the formation energy the blend of networks and expansion,
        its spread the energy members' and the expansion's about it."""
        occ = np.asarray(occ)
        n = self.n_defects(occ)
        mu = np.full((len(occ), 3), np.nan)
        spread = np.full((len(occ), 3), np.nan)
        if 0 in targets:
            E = self._energy_members(occ)
            ce = self.ce.predict(occ)
            bc = self._weights(self.blend, n)
            mu[:, 0] = bc * ce + (1 - bc) * E.mean(0)
            spread[:, 0] = np.sqrt(np.mean((np.concatenate([E, ce[None]]) - mu[None, :, 0]) ** 2, axis=0))
        if 1 in targets or 2 in targets:
            G = self._level_members(occ)
            mu[:, 1:], spread[:, 1:] = G.mean(0), G.std(0)
            bm = self._weights(self.blend_mag, n)  # the moment, shrunk toward the median
            mu[:, 2], spread[:, 2] = bm * mu[:, 2] + (1 - bm) * self.mag_center, bm * spread[:, 2]
            bg = self._weights(self.blend_gap, n)
            if self.trees_g and (bg > 0).any():
                Z = self._tree_features(occ)
                Tg = np.clip(self._trees_predict(Z), 0.0, self.host_gap())  # (Mt, N)
                mu[:, 1] = np.clip(bg * Tg.mean(0) + (1 - bg) * G[:, :, 0].mean(0), 0.0, self.host_gap())
                spread[:, 1] = np.sqrt(np.mean((np.concatenate([G[:, :, 0], Tg]) - mu[None, :, 1]) ** 2, axis=0))
        return mu, spread

    def _trees_predict(self, Z: np.ndarray) -> np.ndarray:
        """``(Mt, N)`` every gap forest's prediction of tree rows ``Z``: all forests in one walk
        (:class:`~invdesign.predict.gap.ForestStack`; the same floats as forest by forest)."""
        from invdesign.predict.gap import NUMPY_ROWS, stack_of, use_compiled

        compiled = use_compiled(len(Z))
        if compiled or len(Z) <= NUMPY_ROWS:
            return stack_of(self, self.trees_g).predict(Z, compiled=compiled)  # compiled or numpy: the same floats
        return np.stack([t.predict(Z) for t in self.trees_g])  # many rows, no numba: scikit-learn's predictor

    @staticmethod
    def _weights(per_band: np.ndarray, n: np.ndarray) -> np.ndarray:
        """``(N,)`` the band's blend weight of each configuration (pristine cells: the first band's)."""
        return np.asarray(per_band, float)[np.clip(band_of(n), 0, len(BANDS) - 1)]

    def _tree_features(self, occ: np.ndarray) -> np.ndarray:
        """``(N, 2P + 1)`` the gap trees' inputs: the pair expansion's cluster counts (``P``), per defect, and the
        defect count."""
        X = self.ce.features(occ)
        X[:, : self.ce._T] /= 10.0
        n = np.maximum(X[:, : self.ce._T].sum(1), 1.0)
        return np.concatenate([X, X / n[:, None], n[:, None]], axis=1)

    def host_gap(self) -> float:
        """The largest gap the model can serve (eV): the level networks' learned host gap."""
        return max(m.host_gap for m in self.nets_g)

    def predict(self, occ: np.ndarray, targets: tuple[int, ...] = (0, 1, 2)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(N, S)`` occupancies -> means ``(N, 3)``, stds ``(N, 3)`` (eV, eV, Bohr magnetons; TARGETS order)
        and ``validated (N, 3)`` bool (the density band had calibration data and the count lies within the
        trained range). FE per site is NaN for pristine cells. ``targets``: the columns to compute (the
        others NaN; the formation energy alone skips the level networks)."""
        mu, spread = self._raw(occ, targets)
        n = self.n_defects(occ)
        b = band_of(n)
        c = self.calibration
        std = np.full_like(mu, np.nan)
        ok = np.zeros(mu.shape, bool)
        in_range = (n >= self.meta.get("kmin", 1)) & (n <= self.meta.get("kmax", 10_000))
        for j in range(3):
            bb = np.clip(b, 0, len(BANDS) - 1)
            std[:, j] = c.std(spread[:, j], bb, j)
            ok[:, j] = c.validated[j, bb] & in_range & (b >= 0)
        # beyond the trained counts the gap is known only to lie in [0, host gap]: at least that uniform's std
        std[:, 1] = np.where(ok[:, 1] | (b < 0), std[:, 1], np.maximum(std[:, 1], self.host_gap() / np.sqrt(12.0)))
        if self.ld is not None:  # 1-3 defects: the low-density heads serve formation energy and gap
            r = LowDensityHeads.rows(n)
            cols = [j for j in (0, 1) if j in targets]
            if r.any() and cols:
                m2, s2 = self.ld.predict(np.asarray(occ)[r])
                for j in cols:
                    mu[r, j], std[r, j], ok[r, j] = m2[:, j], s2[:, j], in_range[r]
        known = np.array(self.meta.get("targets_known", [True, True, True]))
        mu[:, ~known] = np.nan
        std[:, ~known] = np.nan
        return mu, std, ok

    # ------------------------------------------------------------------ save / load
    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"ce_coef": self.ce.coef, "ce_charges": self.ce.charges, "blend": np.asarray(self.blend, float), "cal_scale": self.calibration.scale,
                                      "train_occ": self.train_occ, "train_y": self.train_y,
                                      "cal_floor": self.calibration.floor, "cal_validated": self.calibration.validated,
                                      "cal_spread_weight": self.calibration.spread_weight}
        for tag, nets in (("e", self.nets_e), ("g", self.nets_g)):
            for k, m in enumerate(nets):
                for i, w in enumerate(m.weights):
                    out[f"net{tag}{k}_w{i}"] = w
                out[f"net{tag}{k}_mean"], out[f"net{tag}{k}_scale"] = m.mean, m.scale
                out[f"net{tag}{k}_host_gap"] = np.array(m.host_gap)
        out["blend_gap"] = np.asarray(self.blend_gap, float)
        out["blend_mag"], out["mag_center"] = np.asarray(self.blend_mag, float), np.array(self.mag_center)
        if self.ld is not None:
            out.update(self.ld.arrays())
        for k, t in enumerate(self.trees_g):
            for f in (*t.FIELDS, "roots"):
                out[f"tree{k}_{f}"] = getattr(t, f)
            out[f"tree{k}_baseline"] = np.array(t.baseline)
        return out

    def save(self, path: str | Path, host_spec: dict) -> Path:
        """Write the model as one ``.npz`` (arrays, and a JSON header: format, host, settings, meta). No pickle."""
        import io

        from invdesign.outputs import write_bytes_atomic

        header = {"format": FORMAT, "host": host_spec, "settings": self.settings(), "meta": self.meta}
        buf = io.BytesIO()
        np.savez_compressed(buf, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **self.arrays())
        return write_bytes_atomic(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path, host: HostLattice | None = None) -> HostModel:
        """Read a model written by :meth:`save` (``host``: the lattice it was trained on; default: from the header)."""
        try:
            with np.load(path, allow_pickle=False) as f:
                a = {k: f[k] for k in f.files}
            header = json.loads(a.pop("header").tobytes().decode())
        except (OSError, ValueError, KeyError) as exc:
            raise InvdesignError(f"not an invdesign host model ({exc.__class__.__name__})", source=str(path)) from None
        if header.get("format") != FORMAT:
            raise InvdesignError(f"unknown host-model format {header.get('format')!r}", source=str(path))
        if host is None:
            host = host_from_spec(header["host"])
        # a model saved before an option existed was fitted without it
        m = cls(host, **{"charge": False, "context": False, "low_density": False, "mag_shrink": False, "radius_auto": False,
                         "gap_loss": "squared_error", **header["settings"]})
        m.ce.coef = a["ce_coef"]
        if "ce_charges" in a:
            m.ce.charges = np.asarray(a["ce_charges"], np.float64)
        if m.context:
            m.env_e.charges = m.ce.charges
        m.blend = np.broadcast_to(np.asarray(a["blend"], float), (len(BANDS),)).copy()
        m.train_occ, m.train_y = a["train_occ"], a["train_y"]
        m.calibration = Calibration(a["cal_scale"], a["cal_floor"], a["cal_validated"].astype(bool),
                                    a["cal_spread_weight"] if "cal_spread_weight" in a else np.ones(3))

        def nets(tag: str, count: int) -> list[EnvNet]:
            return [EnvNet([a[f"net{tag}{k}_w{i}"] for i in range(6)], a[f"net{tag}{k}_mean"], a[f"net{tag}{k}_scale"],
                           float(a[f"net{tag}{k}_host_gap"])) for k in range(count)]

        m.nets_e, m.nets_g = nets("e", m.members_energy), nets("g", m.members_levels)
        if "blend_mag" in a:
            m.blend_mag, m.mag_center = np.asarray(a["blend_mag"], float).copy(), float(a["mag_center"])
        if "blend_gap" in a:
            from invdesign.predict.gap import _Forest

            m.blend_gap = np.broadcast_to(np.asarray(a["blend_gap"], float), (len(BANDS),)).copy()
            m.trees_g = [_Forest(*(a[f"tree{k}_{f}"] for f in _Forest.FIELDS), roots=a[f"tree{k}_roots"],
                                 baseline=float(a[f"tree{k}_baseline"])) for k in range(m.members_levels)]
        m.meta = header["meta"]
        if "low_density" in m.meta:
            m.ld = LowDensityHeads.from_arrays(host, m.meta["low_density"], a)
        m.meta["header"] = {k: v for k, v in header.items() if k != "meta"}
        return m


def host_from_spec(spec: dict) -> HostLattice:
    """The host lattice a model header names: ``{"name": packaged host, "supercell": [a, b]}``."""
    from invdesign.lattice.hosts import packaged_host

    return packaged_host(spec["name"], tuple(spec["supercell"]))


#: how much of the ensemble spread each target's std follows (TARGETS order). The gap's spread on a training
#: row comes largely from tree members that fitted that row and one member that did not, so it tracks the
#: row's out-of-fold error far more closely than a new configuration's spread tracks its error (MoS2 +low,
#: 4-24 defects: the 95 % quantile of error / spread is 2.4 out of fold and 3.5 on test folds, and 2-std
#: coverage was 0.84-0.93 per fold). Its std is therefore one split-conformal std per density band (Mondrian),
#: which covers by construction; the energy and the moment keep stds that follow the spread.
SPREAD_WEIGHT = np.array([1.0, 0.0, 1.0])


def calibrate(mu: np.ndarray, spread: np.ndarray, y: np.ndarray, n: np.ndarray,
              spread_weight: np.ndarray = SPREAD_WEIGHT) -> Calibration:
    """Split-conformal std scales per target and density band from validation means/spreads ``(V, 3)``,
    targets ``y (V, 3)`` and defect counts ``n (V,)``: ``std = scale * (weight * spread + floor)`` with
    ``floor`` the median validation spread, ``weight`` :data:`SPREAD_WEIGHT` and ``scale`` the :data:`LEVEL`
    quantile of ``|error| / (weight * spread + floor)`` over 1.96. Bands with fewer than 8 validation rows
    take the largest scale of the others."""
    nb = len(BANDS)
    scale = np.ones((3, nb))
    floor = np.zeros(3)
    validated = np.zeros((3, nb), bool)
    w = np.asarray(spread_weight, float)
    b = band_of(n)
    for j in range(3):
        ok = np.isfinite(y[:, j]) & np.isfinite(mu[:, j])
        if not ok.any():
            continue
        floor[j] = float(np.median(spread[ok, j])) + 1e-6
        z = np.abs(mu[:, j] - y[:, j]) / (w[j] * spread[:, j] + floor[j])
        for k in range(nb):
            sel = ok & (b == k)
            if sel.sum() >= 8:
                m = int(sel.sum())
                q = min(1.0, np.ceil((m + 1) * LEVEL) / m)
                scale[j, k] = float(np.quantile(z[sel], q)) / 1.96
                validated[j, k] = True
        if validated[j].any():
            scale[j, ~validated[j]] = scale[j, validated[j]].max()
    return Calibration(scale, floor, validated, w.copy())


def split_train_val(n_rows: int, val_fraction: float = 0.15, seed: int = 0) -> np.ndarray:
    """``(n_rows,)`` bool validation mask (a seeded random share)."""
    rng = np.random.default_rng(seed)
    val = np.zeros(n_rows, bool)
    val[rng.permutation(n_rows)[: max(1, int(round(val_fraction * n_rows)))]] = True
    return val


def targets_of(ds) -> np.ndarray:
    """``(N, 3)`` targets of a 2DMD :class:`~invdesign.data.dataset.Dataset` in :data:`TARGETS` order: the gap is
    ``homo_lumo_gap_min`` for spin-polarised sets (the published benchmarks' choice), ``total_mag`` NaN where absent."""
    t = ds.targets
    gap = t["homo_lumo_gap_min"] if "homo_lumo_gap_min" in t else t["homo_lumo_gap"]
    # the non-spin-polarised sets (MoS2, WSe2) carry total_mag = 0 everywhere: not a measured moment
    spin = "total_mag" in t and bool((np.asarray(t["total_mag"], float) != 0).any())
    mag = t["total_mag"] if spin else np.full(len(t), np.nan)
    return np.stack([t["formation_energy_per_site"].to_numpy(float), np.asarray(gap, float), np.asarray(mag, float)], 1)


def stack(datasets: Sequence) -> tuple[HostLattice, np.ndarray, np.ndarray]:
    """One host's datasets -> ``(host, occ (N, S), y (N, 3))``; refuses datasets of different hosts."""
    host = datasets[0].host
    for d in datasets[1:]:
        if d.host.fingerprint != host.fingerprint:
            raise InvdesignError(f"datasets of different hosts ({host.name}, {d.host.name}): train one model per host",
                                 source=d.name)
    return host, np.concatenate([d.occ for d in datasets]), np.concatenate([targets_of(d) for d in datasets])
