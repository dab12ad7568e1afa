"""Low-density heads of a host model: formation energy and gap at 1-3 defects from exact cluster counts.

At 1-3 defects a configuration is its defects' pair (and triplet) geometry, which the exact cluster counts
(:func:`invdesign.predict.features.cluster_counts`, every pair orbit of the cell) spell out completely. Where
a host has thousands of such structures (the 2DMD low-density sets of MoS2 and WSe2) the recipe of the MoS2
low-density model beats the defect-environment networks, which see only pairs within a radius and share
their capacity with the dense regime:

- formation energy: a ridge on the cluster counts of the *total* formation energy (``n * E_site``; alpha
  chosen on the validation share), served per site, with a split-conformal std (one per model: the
  :data:`LEVEL` quantile of the validation errors over 1.96);
- gap: the bounded boosted-tree head (:class:`invdesign.predict.gap.BoundedGapHead`) with the packaged MoS2
  recipe (:data:`GAP_RECIPE`, the values of ``invdesign.model.DEFAULT_CONFIG``; anchored on the vacancy of
  the host's metal, V_Mo / V_W), its own conformal std.

Both train on the host's training rows with at most :data:`LD_MAX` defects (a seeded 15 % kept apart to
calibrate the stds) and serve only such configurations. Measured on 5-fold CV of the 2DMD sets:
``benchmarks/results/hosts.md`` (low-density table).
"""

from __future__ import annotations

import numpy as np
from pymatgen.core import Element

from invdesign.lattice.host import HostLattice
from invdesign.predict.features import cluster_counts, orbit_distances
from invdesign.predict.gap import EG_MAX, BoundedGapHead, _Forest

LD_MAX = 3  # the heads serve configurations with 1..LD_MAX defects
LD_MIN_ROWS = 1000  # training rows with 1..LD_MAX defects a host needs for the heads
LEVEL = 0.95
ALPHAS = np.logspace(-4, 2, 13)
#: the bounded gap head's recipe (invdesign.model.DEFAULT_CONFIG's gap_* values; tests check they agree)
GAP_RECIPE = {"members": 3, "max_iter": 500, "losses": ("squared_error", "absolute_error"),
              "extra": ({"loss": "squared_error"}, {"loss": "absolute_error"})}


def _vacancy_anchor(host: HostLattice) -> int | None:
    """Index of the metal vacancy among the host's defect types (V_Mo, V_W: the vacancy on the first sublattice whose
    element is a metal; sublattices are sorted by element, so WSe2's first is Se); on a host without a metal
    sublattice the first sublattice's vacancy (V_B, V_P: unmeasured, the rule as before), else None."""
    vac = [(sub, t) for t, (sub, code) in enumerate(host.defect_types) if host.species[code] == "Vac"]
    metal = [t for sub, t in vac if Element(host.sublattices[sub]).is_metal]
    return metal[0] if metal else next((t for sub, t in vac if sub == 0), None)


class LowDensityHeads:
    """Formation energy per site and gap (eV) with stds for configurations with 1..:data:`LD_MAX` defects."""

    def __init__(self, host: HostLattice, seed: int = 0, recipe: dict | None = None) -> None:
        self.host, self.seed = host, int(seed)
        self.recipe = dict(GAP_RECIPE if recipe is None else recipe)  # BoundedGapHead settings of the gap
        self.coef: np.ndarray | None = None  # (F + 1,) ridge weights of the total formation energy, intercept last
        self.fe_std = np.nan  # eV per site
        self.gap: BoundedGapHead | None = None
        self.val_mae_meV: dict[str, float] = {}

    @staticmethod
    def rows(n: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: defect counts the heads serve."""
        n = np.asarray(n)
        return (n >= 1) & (n <= LD_MAX)

    def _X(self, occ: np.ndarray) -> np.ndarray:
        X = cluster_counts(np.asarray(occ), self.host).astype(np.float64)
        return np.concatenate([X, np.ones((len(X), 1))], axis=1)

    def fit(self, occ: np.ndarray, fe_site: np.ndarray, gap: np.ndarray, n: np.ndarray) -> LowDensityHeads:
        """Fit on the rows of ``occ (N, S)`` with 1..LD_MAX defects ``n (N,)`` and known targets (eV)."""
        sel = np.flatnonzero(self.rows(n) & np.isfinite(fe_site) & np.isfinite(gap))
        perm = np.random.default_rng(self.seed).permutation(len(sel))  # positions within sel
        nv = max(1, int(round(0.15 * len(perm))))
        iva, itr = perm[:nv], perm[nv:]
        X = self._X(occ[sel])
        E = fe_site[sel] * n[sel]
        pen = np.ones(X.shape[1])
        pen[-1] = 0.0  # the intercept is not penalised
        A = X[itr].T @ X[itr]
        b = X[itr].T @ E[itr]
        best = None
        for alpha in ALPHAS:
            w = np.linalg.solve(A + alpha * np.diag(pen) + 1e-10 * np.eye(len(pen)), b)
            err = np.abs(X[iva] @ w / n[sel][iva] - fe_site[sel][iva])
            if best is None or err.mean() < best[0]:
                best = (err.mean(), w, err)
        self.coef = best[1]
        m = len(best[2])
        self.fe_std = float(np.quantile(best[2], min(1.0, np.ceil((m + 1) * LEVEL) / m))) / 1.96
        g = gap[sel]
        eg_max = EG_MAX if g[itr].max() < 0.95 * EG_MAX else float(np.ceil(g[itr].max() * 1.1 * 10) / 10)
        anchor = _vacancy_anchor(self.host)
        self.gap = BoundedGapHead(eg_max=eg_max, seed=self.seed, n_types=len(self.host.defect_types),
                                  orbit_distance=orbit_distances(self.host), anchor=anchor, **self.recipe)
        Xc = X[:, :-1]
        self.gap.fit(Xc[itr], np.maximum(g[itr], 1e-4), Xc[iva], g[iva])
        gm, _ = self.gap.predict(Xc[iva])
        self.val_mae_meV = {"formation_energy_per_site": round(float(best[0]) * 1e3, 2),
                            "homo_lumo_gap": round(float(np.abs(gm - g[iva]).mean()) * 1e3, 2), "n_val": int(len(iva)),
                            "n_train": int(len(itr))}
        return self

    def predict(self, occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, S)`` configurations (1..LD_MAX defects) -> means ``(N, 2)`` and stds ``(N, 2)`` (eV: formation
        energy per site, gap)."""
        occ = np.asarray(occ)
        n = (occ != self.host.host_code[None, :]).sum(1).astype(np.float64)
        X = self._X(occ)
        with np.errstate(invalid="ignore", divide="ignore"):
            fe = np.where(n > 0, X @ self.coef / n, np.nan)
        gm, gs = self.gap.predict(X[:, :-1])
        return np.column_stack([fe, gm]), np.column_stack([np.full(len(occ), self.fe_std), gs])

    # ------------------------------------------------------------------ save / load (plain arrays and JSON)
    def arrays(self, prefix: str = "ld_") -> dict[str, np.ndarray]:
        out = {f"{prefix}coef": self.coef, f"{prefix}fe_std": np.array(self.fe_std),
               f"{prefix}gap_scale_b": np.asarray(self.gap.scale_b, float), f"{prefix}gap_s0": np.array(self.gap.s0),
               f"{prefix}gap_scale": np.array(self.gap.scale)}
        for k, f in enumerate(self.gap.forests):
            for fld in (*f.FIELDS, "roots"):
                out[f"{prefix}gap{k}_{fld}"] = getattr(f, fld)
            out[f"{prefix}gap{k}_baseline"] = np.array(f.baseline)
        return out

    def header(self) -> dict:
        return {"seed": self.seed, "gap_config": self.gap.config(), "val_mae_meV": self.val_mae_meV}

    @classmethod
    def from_arrays(cls, host: HostLattice, header: dict, a: dict, prefix: str = "ld_") -> LowDensityHeads:
        h = cls(host, header["seed"])
        h.coef, h.fe_std = a[f"{prefix}coef"], float(a[f"{prefix}fe_std"])
        cfg = dict(header["gap_config"])
        cfg["extra"] = tuple(cfg.get("extra", ()))
        h.gap = BoundedGapHead(**cfg)
        count = len([k for k in a if k.startswith(f"{prefix}gap") and k.endswith("_baseline")])
        h.gap.forests = [_Forest(*(a[f"{prefix}gap{k}_{f}"] for f in _Forest.FIELDS), roots=a[f"{prefix}gap{k}_roots"],
                                 baseline=float(a[f"{prefix}gap{k}_baseline"])) for k in range(count)]
        h.gap.scale_b, h.gap.s0 = np.asarray(a[f"{prefix}gap_scale_b"], float), float(a[f"{prefix}gap_s0"])
        h.gap.scale = float(a[f"{prefix}gap_scale"])
        h.val_mae_meV = header.get("val_mae_meV", {})
        return h
