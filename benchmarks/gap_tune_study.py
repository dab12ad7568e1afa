"""Gap study, round c (issue 12): tree settings, ensemble size and V_Mo-anchored features, chosen on validation.

Each variant is the bounded gap head (:class:`invdesign.predict.gap.BoundedGapHead`) with some settings
changed, and optionally extra exactly invariant columns appended to the cluster counts. It is fitted on
the train rows of a split (``split_indices(ids, seed=s)``), its MAE measured on the split's **val** rows
(the choice is made on these); the test MAE is logged as the outcome only. One JSON line per (variant,
split) is appended to ``benchmarks/results/gap_variants.jsonl``.

    OMP_NUM_THREADS=1 python benchmarks/gap_tune_study.py --variants single single_abs single_vmo --seeds 0 1 2 3 4
    OMP_NUM_THREADS=1 python benchmarks/gap_tune_study.py --blend single single_abs single_vmo

Every fit caches its members' val/test outputs (logit space) under ``--cache``; ``--blend`` averages the
members of the named variants (every subset of them) and prints val / test MAE over the splits
cached for all of them (``bsq`` / ``babs``: the round-b bootstrap heads cached by gap_blend_study.py
under /tmp/g12b). The shipped recipe (``DEFAULT_CONFIG``: three bootstrap members per loss plus one
squared- and one absolute-error model on the whole train split) is the blend ``bsq+babs+single+single_abs``
(benchmarks/results/gap_tune_study.md: why not the best-on-validation ``single+single_abs+single_vmo``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from invdesign.data.dataset import TARGETS, load_2dmd, split_indices  # noqa: E402
from invdesign.predict.features import cluster_counts  # noqa: E402
from invdesign.predict.gap import BoundedGapHead  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "2dmd-mos2-low"
LOG = ROOT / "benchmarks" / "results" / "gap_variants.jsonl"

#: single-model screens (one squared-error model on the full train set) and ensembles
VARIANTS: dict[str, dict] = {
    "single": {"members": 1, "bootstrap": False},
    "single_lr05": {"members": 1, "bootstrap": False, "learning_rate": 0.05, "max_iter": 1000},
    "single_leaf15": {"members": 1, "bootstrap": False, "max_leaf_nodes": 15},
    "single_leaf63": {"members": 1, "bootstrap": False, "max_leaf_nodes": 63},
    "single_msl2": {"members": 1, "bootstrap": False, "min_samples_leaf": 2},
    "single_msl10": {"members": 1, "bootstrap": False, "min_samples_leaf": 10},
    "single_it1000": {"members": 1, "bootstrap": False, "max_iter": 1000},
    "single_it250": {"members": 1, "bootstrap": False, "max_iter": 250},
    "single_l2": {"members": 1, "bootstrap": False, "l2_regularization": 1.0},
    "single_vmo": {"members": 1, "bootstrap": False, "features": "vmo"},
    "single_te": {"members": 1, "bootstrap": False, "features": "te"},
    "single_te_leaf63": {"members": 1, "bootstrap": False, "features": "te", "max_leaf_nodes": 63},
    "single_abs": {"members": 1, "bootstrap": False, "losses": ("absolute_error",)},
    "single_abs_l63": {"members": 1, "bootstrap": False, "losses": ("absolute_error",), "max_leaf_nodes": 63},
    "single_abs_lr05": {"members": 1, "bootstrap": False, "losses": ("absolute_error",), "learning_rate": 0.05, "max_iter": 1000},
    "single_sub": {"members": 1, "bootstrap": False, "subsample": 8 / 9},
    "single_abs_sub": {"members": 1, "bootstrap": False, "losses": ("absolute_error",), "subsample": 8 / 9},
    "single_abs_vmo": {"members": 1, "bootstrap": False, "losses": ("absolute_error",), "features": "vmo"},
    "single_shell": {"members": 1, "bootstrap": False, "features": "shell"},
    "single_abs_shell": {"members": 1, "bootstrap": False, "losses": ("absolute_error",), "features": "shell"},
    "full2": {"members": 1, "bootstrap": False, "losses": ("squared_error", "absolute_error")},
    "fullmf6": {"members": 3, "bootstrap": False, "max_features": 0.5, "losses": ("squared_error", "absolute_error")},
    "fullmf6_l63": {"members": 3, "bootstrap": False, "max_features": 0.5, "max_leaf_nodes": 63, "losses": ("squared_error", "absolute_error")},
    "shipped": {"members": 3, "losses": ("squared_error", "absolute_error")},
}


def vmo_features(occ: np.ndarray, host) -> np.ndarray:
    """The 3 shortest pair distances (A) per unordered defect-type pair, ``(N, 30)``
    (:func:`invdesign.predict.features.pair_distances`, what the head's ``distances`` members read)."""
    from invdesign.predict.features import orbit_distances, pair_distances

    return pair_distances(cluster_counts(occ, host), len(host.defect_types), orbit_distances(host))


SHELLS = (2.0, 3.0, 3.5, 4.2, 5.3, 6.5, 8.0, 10.0, 30.0)  # A: bin edges of pair distances


def shell_features(X: np.ndarray, host) -> np.ndarray:
    """Pair counts per unordered defect-type pair and distance shell (:data:`SHELLS`): the pair columns of
    the counts merged over orbits of similar distance, ``(N, 10 * 8)``; a linear map of the counts."""
    from invdesign.predict.features import orbit_distances

    T = len(host.defect_types)
    od = orbit_distances(host)
    npo = len(od)
    sh = np.digitize(od, SHELLS[1:-1])
    tp = {(a, b): i for i, (a, b) in enumerate((a, b) for a in range(T) for b in range(a, T))}
    M = np.zeros((T * T * npo, len(tp) * (len(SHELLS) - 1)))
    for a in range(T):
        for b in range(T):
            for o in range(npo):
                M[(a * T + b) * npo + o, tp[(min(a, b), max(a, b))] * (len(SHELLS) - 1) + sh[o]] += 0.5
    return X[:, T:] @ M


def te_features(X: np.ndarray, u: np.ndarray, tr: np.ndarray, T: int = 4, m: float = 3.0, folds: int = 5) -> np.ndarray:
    """Target-encoded pair columns: each pair column's smoothed mean residual of logit(gap) (residual to its
    composition's mean) over the train rows that contain it; per row the min / max / mean / sum of the
    encodings of the pairs present. Train rows get out-of-fold encodings. ``(N, 4)``."""
    def table(rows):
        comp = [tuple(r) for r in X[rows, :T].astype(int)]
        base = {}
        for c, v in zip(comp, u[rows]):
            base.setdefault(c, []).append(v)
        base = {c: np.mean(v) for c, v in base.items()}
        res = u[rows] - np.array([base[c] for c in comp])
        P = X[rows, T:] > 0
        n = P.sum(0)
        return (P.T.astype(float) @ res) / (n + m)

    def summ(rows, enc):
        P = X[rows, T:] > 0
        E = np.where(P, enc[None, :], np.nan)
        anyp = P.any(1)
        out = np.zeros((len(rows), 4))
        with np.errstate(all="ignore"):
            out[:, 0] = np.where(anyp, np.nanmin(E, 1), 0)
            out[:, 1] = np.where(anyp, np.nanmax(E, 1), 0)
            out[:, 2] = np.where(anyp, np.nanmean(E, 1), 0)
            out[:, 3] = np.where(anyp, np.nansum(E, 1), 0)
        return out

    F = summ(np.arange(len(X)), table(tr))
    rng = np.random.default_rng(0)
    fold = rng.integers(0, folds, len(tr))
    for k in range(folds):
        F[tr[fold == k]] = summ(tr[fold == k], table(tr[fold != k]))
    return F


def blend(names: list[str], cache: Path, seeds: list[int]) -> None:
    """Print val / test MAE (meV, mean over ``seeds``) of every subset of the cached variants ``names``."""
    import itertools

    from invdesign.predict.gap import _logit, _sigmoid

    ds = load_2dmd(DATA)
    g = ds.y(TARGETS)[:, 1]
    sps = {s: split_indices(ds.ids, seed=s) for s in seeds}

    def load(n: str, s: int):
        if n == "bsq":
            z = np.load(f"/tmp/g12b/trees_{s}.npz")
            return z["Uv"], z["Ut"]
        if n == "babs":  # the round-b absolute-error head (3 members), only its mean was cached
            z = np.load(f"/tmp/g12b/abs_{s}.npz")
            return _logit(z["pv"], 2.0)[None].repeat(3, 0), _logit(z["pt"], 2.0)[None].repeat(3, 0)
        z = np.load(cache / f"{n}_{s}.npz")
        return z["Uv"], z["Ut"]

    for r in range(1, len(names) + 1):
        for c in itertools.combinations(names, r):
            try:
                parts = {s: [load(n, s) for n in c] for s in seeds}
            except FileNotFoundError:
                continue
            mv, mt = [], []
            for s, ps in parts.items():
                uv, ut = np.concatenate([p[0] for p in ps]).mean(0), np.concatenate([p[1] for p in ps]).mean(0)
                mv.append(np.abs(_sigmoid(uv, 2.0) - g[sps[s]["val"]]).mean() * 1e3)
                mt.append(np.abs(_sigmoid(ut, 2.0) - g[sps[s]["test"]]).mean() * 1e3)
            print(f"{'+'.join(c):55s} val {np.mean(mv):.3f} test {np.mean(mt):.3f}  val by split {np.round(mv, 2).tolist()}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=[])
    ap.add_argument("--blend", nargs="+", default=None, help="cached variants to average (every subset)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--cache", default="/tmp/g24")
    a = ap.parse_args()
    if a.blend:
        blend(a.blend, Path(a.cache), a.seeds)
        return
    ds = load_2dmd(DATA)
    X = cluster_counts(ds.occ, ds.host).astype(np.float64)
    g = ds.y(TARGETS)[:, 1]
    extra = {}
    for v in a.variants:
        spec = dict(VARIANTS[v])
        feats = spec.pop("features", None)
        sub = spec.pop("subsample", None)  # learning curve: fit on this share of the train rows
        if feats == "vmo" and feats not in extra:
            extra[feats] = vmo_features(ds.occ, ds.host)
        if feats == "shell" and feats not in extra:
            extra[feats] = shell_features(X, ds.host)
        for s in a.seeds:
            sp = split_indices(ds.ids, seed=s)
            tr, va, te = sp["train"], sp["val"], sp["test"]
            if feats == "te":
                from invdesign.predict.gap import _logit
                Xv = np.hstack([X, te_features(X, _logit(g, 2.0), tr)])
            else:
                Xv = np.hstack([X, extra[feats]]) if feats else X
            if sub:
                tr = np.sort(np.random.default_rng(s).permutation(tr)[: int(round(sub * len(tr)))])
            t0 = time.time()
            h = BoundedGapHead(seed=0, **spec).fit(Xv[tr], g[tr], Xv[va], g[va])
            mv, sv = h.predict(Xv[va])
            mt, st = h.predict(Xv[te])
            np.savez(Path(a.cache) / f"{v}_{s}.npz", Uv=np.stack([f.predict(Xv[va]) for f in h.forests]),
                     Ut=np.stack([f.predict(Xv[te]) for f in h.forests]))
            ev, et = np.abs(mv - g[va]), np.abs(mt - g[te])
            row = {"variant": f"c:{v}", "round": "c", "spec": {k: list(x) if isinstance(x, tuple) else x for k, x in VARIANTS[v].items()},
                   "split_seed": s, "fit_s": round(time.time() - t0), "val_mae_meV": float(ev.mean() * 1e3),
                   "test_mae_meV": float(et.mean() * 1e3), "val_within_2std": float((ev <= 2 * sv).mean()),
                   "test_within_2std": float((et <= 2 * st).mean())}
            print(json.dumps(row), flush=True)
            with LOG.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
