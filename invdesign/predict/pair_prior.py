"""A distance-decaying prior for defect-pair terms no training configuration has.

The formation-energy ridge head (:class:`invdesign.predict.heads.RidgeHead` on
:func:`invdesign.predict.features.cluster_counts`) has a weight for each (type, type, pair orbit)
column; a column no training configuration has gets the minimum-norm weight 0, so a configuration
holding such a pair silently misses its interaction. :class:`PairPrior` gives those columns a
contribution and an uncertainty learned from the seen pair weights of the same head:

- A *pair class* is one unordered (type, type, pair orbit) interaction: an unordered defect pair
  increments both ordered columns ``(a, b, o)`` and ``(b, a, o^T)`` by one (the same column by two
  when they coincide), so the two are always seen or unseen together and their weights act only as
  a sum ``J``, the energy (eV) of one such pair.
- Per unordered species pair ``(a, b)`` with seen classes, ``J(d) = beta A_ab exp(-d / lambda)`` is
  fitted by least squares to the seen ``J`` (``d``: pair distance, A); species pairs with no seen
  class get ``A_ab = 0``. The decay length ``lambda`` (:data:`LAMBDAS`) and the shrinkage ``beta``
  (:data:`BETAS`; 0 = the fit predicts nothing, mean 0) are chosen by leave-one-class-out error.
- The prior std is the leave-one-class-out scatter of the seen ``J`` around that fit as a function
  of distance, ``s(d) = s0 exp(-d / lambda_s)`` (log-linear least squares on the squared residuals,
  pooled over species pairs, rescaled to their mean square).

An unseen class then contributes ``u * J_prior`` (``u``: number of such unordered pairs) with std
``u * s(d)``; classes are taken as independent (stds add in quadrature). Above 3 defects, where the high-density
correction applies, serving keeps the prior's mean but not its std (the correction's std, fitted on
those residuals, stands for it; :meth:`invdesign.predict.serving.Predictor._fe_served`). Seen columns get nothing:
for a configuration whose pairs are all seen the prediction is unchanged, bit for bit.
The prior is derived from the head at load time (no data needed), so any ridge-served model has one.
"""

from __future__ import annotations

import numpy as np

from invdesign.lattice.host import HostLattice
from invdesign.predict.features import orbit_distances

#: Candidate decay lengths (A) of the prior mean; the one with the lowest leave-one-class-out error serves.
LAMBDAS = (0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
#: Candidate shrinkage factors of the prior mean (chosen with the decay length).
BETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Fewest seen pair classes a prior is learned from.
MIN_SEEN = 5
#: Version of the prior's recipe (part of the serving cache's key and the HD correction's fingerprint).
PRIOR_VERSION = 2


def pair_classes(host: HostLattice) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pair classes of the cluster-count columns.

    Returns:
        ``group (F,)`` int: class of each column (-1 for singlets and structurally impossible columns),
        ``per_pair (F,)``: count added to the column per unordered pair of its class (1 or 2),
        ``dist (G,)`` A and ``species (G,)`` int (unordered species pair index ``a * T + b``, ``a <= b``) per class.
    """
    T = len(host.defect_types)
    po = host.pair_orbits
    npo = int(po.max()) + 1
    dist = orbit_distances(host)
    sub = [s for s, _ in host.defect_types]
    transpose = np.full(npo, -1)
    sublat = np.full((npo, 2), -1)
    for o in range(npo):
        i, j = np.argwhere(po == o)[0]
        transpose[o] = po[j, i]
        sublat[o] = host.sublattice[i], host.sublattice[j]
    F = T + T * T * npo
    group = np.full(F, -1)
    per_pair = np.zeros(F)
    gd, gs = [], []
    for a in range(T):
        for b in range(T):
            for o in range(npo):
                j = T + (a * T + b) * npo + o
                if group[j] >= 0 or dist[o] < 0.1 or (sublat[o] != (sub[a], sub[b])).any():
                    continue  # done, on-site, or a pair these types cannot form
                twin = T + (b * T + a) * npo + int(transpose[o])
                g = len(gd)
                group[j] = group[twin] = g
                per_pair[j] = per_pair[twin] = 2.0 if twin == j else 1.0
                gd.append(dist[o])
                gs.append(min(a, b) * T + max(a, b))
    return group, per_pair, np.array(gd), np.array(gs, dtype=int)


def _amplitudes(J: np.ndarray, basis: np.ndarray, gs: np.ndarray, gseen: np.ndarray) -> np.ndarray:
    """Least-squares ``A_s`` of ``J ~ A_s basis`` per species pair over the seen classes (0 where none)."""
    A = np.zeros(int(gs.max()) + 1)
    for s in np.unique(gs[gseen]):
        m = gseen & (gs == s)
        A[s] = float(basis[m] @ J[m] / (basis[m] @ basis[m]))
    return A


def _loo_predictions(J: np.ndarray, gd: np.ndarray, gs: np.ndarray, gseen: np.ndarray, lam: float) -> np.ndarray:
    """``(G,)`` leave-one-class-out prediction of each seen class's ``J`` by the decay fit of length
    ``lam`` on the other seen classes of its species pair (NaN for unseen classes)."""
    basis = np.exp(-gd / lam)
    out = np.full(len(J), np.nan)
    for g in np.flatnonzero(gseen):
        m = gseen.copy()
        m[g] = False
        out[g] = _amplitudes(J, basis, gs, m)[gs[g]] * basis[g]
    return out


class PairPrior:
    """Prior contribution of unseen pair classes to the total formation energy (eV per cell).

    Attributes:
        wcol: ``(F,)`` eV per count: prior weight of each unseen column (0 on seen ones).
        scol: ``(F,)`` eV per count: prior std per count of each unseen column (0 on seen ones).
        group: ``(F,)`` class of each column (-1: none). info: the fitted constants (plain dict).
    """

    def __init__(self, wcol: np.ndarray, scol: np.ndarray, group: np.ndarray, info: dict) -> None:
        self.wcol, self.scol, self.group, self.info = np.asarray(wcol, float), np.asarray(scol, float), np.asarray(group, int), info

    @classmethod
    def fit(cls, w: np.ndarray, seen: np.ndarray, host: HostLattice) -> PairPrior:
        """From ``w (F,)`` eV per count (the head's weights on raw cluster counts of one target) and
        ``seen (F,)`` bool (columns nonzero in some training configuration). ValueError with fewer than
        :data:`MIN_SEEN` seen pair classes."""
        group, per_pair, gd, gs = pair_classes(host)
        G = len(gd)
        J = np.zeros(G)
        np.add.at(J, group[group >= 0], (w * per_pair)[group >= 0])  # energy of one unordered pair
        gseen = np.zeros(G, bool)
        gseen[group[(group >= 0) & seen]] = True
        if gseen.sum() < MIN_SEEN:
            raise ValueError(f"{int(gseen.sum())} seen pair classes: too few to learn a pair prior (needs {MIN_SEEN})")
        # decay length and shrinkage of the mean by leave-one-class-out error over the seen classes
        # (beta = 0: the distance fit predicts nothing and the prior mean is 0, its std only)
        loo = {lam_: _loo_predictions(J, gd, gs, gseen, lam_) for lam_ in LAMBDAS}
        lam, beta = min(((lam_, b) for lam_ in LAMBDAS for b in BETAS),
                        key=lambda lb: float(np.mean((J[gseen] - lb[1] * loo[lb[0]][gseen]) ** 2)))
        basis = np.exp(-gd / lam)
        A = beta * _amplitudes(J, basis, gs, gseen)
        mean = A[gs] * basis
        r2 = (J - beta * loo[lam])[gseen] ** 2 + 1e-10  # out-of-sample residuals: the std is not optimistic
        slope, icpt = np.polyfit(gd[gseen], np.log(r2), 1)  # log r^2 = icpt + slope d
        lam_s = -2.0 / slope if slope < 0 else np.inf
        scale = float(np.mean(r2 / np.exp(icpt + slope * gd[gseen])))  # log-fit trend rescaled to the mean square
        s_d = np.sqrt(scale * np.exp(icpt + slope * gd))
        wcol = np.zeros(len(w))
        scol = np.zeros(len(w))
        cols = np.flatnonzero((group >= 0) & ~seen)
        wcol[cols] = mean[group[cols]] / 2.0  # each column counts an unordered pair 2x in all (twins or a 2)
        scol[cols] = s_d[group[cols]] / 2.0
        info = {"version": PRIOR_VERSION, "lambda_A": lam, "shrinkage": beta, "lambda_std_A": float(lam_s),
                "std_at_3A_eV": float(np.sqrt(scale * np.exp(icpt + slope * 3.0))), "n_seen_classes": int(gseen.sum()),
                "n_unseen_classes": int((~gseen).sum()),
                "amplitude_eV": {f"{s // len(host.defect_types)},{s % len(host.defect_types)}": float(A[s]) for s in np.unique(gs)}}
        return cls(wcol, scol, group, info)

    def contribution(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std ``(N,)`` eV of the unseen pair terms of cluster counts ``X (N, F)`` (total per cell)."""
        X = np.asarray(X, dtype=np.float64)
        mean = X @ self.wcol
        S = X * self.scol
        cols = np.flatnonzero(self.scol > 0)
        if not len(cols):
            return mean, np.zeros(len(X))
        g = self.group[cols]
        per_group = np.zeros((len(X), int(g.max()) + 1))
        np.add.at(per_group.T, g, S[:, cols].T)  # classes fully correlated within, independent across
        return mean, np.sqrt((per_group**2).sum(axis=1))

    def arrays(self, prefix: str = "pair_prior/") -> dict[str, np.ndarray]:
        import json

        return {prefix + "wcol": self.wcol, prefix + "scol": self.scol, prefix + "group": self.group,
                prefix + "info": np.array(json.dumps(self.info))}

    @classmethod
    def from_arrays(cls, a, prefix: str = "pair_prior/") -> PairPrior:
        import json

        return cls(a[prefix + "wcol"], a[prefix + "scol"], a[prefix + "group"], json.loads(str(a[prefix + "info"])))
