"""Gap study, round d (issue 12): anchor-centred three-body features and HOMO / LUMO members, on validation.

Extends round c (``gap_tune_study.py``; same splits, same caching, same log ``gap_variants.jsonl`` with
``"round": "d"``). New members, each one boosted model on the whole train split (as round c's ``single``):

- ``nn3`` / ``nn3_abs``: the counts plus anchor-centred three-body columns (:func:`anchor_features`): for
  each defect type ``a``, the defect of type ``a`` whose two nearest other defects are closest, and those
  two neighbours' distances (A), types (one-hot) and their mutual distance. The V_Mo level rule (the two
  other defects' shells around the V_Mo, jointly) is then one or two cuts. Distances are minimum-image
  distances between defect sites, so the columns are exactly invariant; "no such defect" is a far distance
  (:data:`FAR`), the physical limit, not a special code.
- ``hl`` / ``hl_abs``: two models on the counts, one for the HOMO and one for the LUMO (eV, plain space);
  the member's gap is ``clip(lumo - homo)`` inside ``(0, eg_max)``, taken to logit space.

    OMP_NUM_THREADS=1 python benchmarks/gap_round_d.py --variants nn3 nn3_abs hl --seeds 0 1 2 3 4
    OMP_NUM_THREADS=1 python benchmarks/gap_round_d.py --blend single single_abs nn3 nn3_abs
    OMP_NUM_THREADS=1 python benchmarks/gap_round_d.py --composition nn3 --folds 0 1 2

``--composition``: the named variant (alone, and averaged with the cached-recipe-like ``single + single_abs``
fitted in the same fold) on the composition folds of ``bench_gap.py`` (val MAE of held-out compositions:
an extrapolation check; no test rows are read).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from invdesign.data.dataset import TARGETS, load_2dmd, split_indices  # noqa: E402
from invdesign.embed.geometry import defect_cloud  # noqa: E402
from invdesign.predict.features import cluster_counts  # noqa: E402
from invdesign.predict.gap import EG_MAX, _logit, _sigmoid  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "2dmd-mos2-low"
LOG = ROOT / "benchmarks" / "results" / "gap_variants.jsonl"
CACHE_C = Path("/tmp/g24")  # round c's cached members (single, single_abs, ...)

#: distance (A) standing for "no such neighbour": beyond any pair of an 8x8 cell
FAR = 30.0

VARIANTS: dict[str, dict] = {
    "nn3": {"features": "nn3", "loss": "squared_error"},
    "nn3_abs": {"features": "nn3", "loss": "absolute_error"},
    "hl": {"features": "hl", "loss": "squared_error"},
    "hl_abs": {"features": "hl", "loss": "absolute_error"},
    "nn3v": {"features": "nn3v", "loss": "squared_error"},
    "nn3v_abs": {"features": "nn3v", "loss": "absolute_error"},
    "hl3": {"features": "hl", "loss": "squared_error", "with": "nn3v"},
    "nnc": {"features": "nnc", "loss": "squared_error"},
    "nnc_abs": {"features": "nnc", "loss": "absolute_error"},
    # the shipped recipe (3 bootstrap members per loss + one full-set model per loss) with every member
    # reading the V_Mo anchor block (BoundedGapHead(anchor=V_Mo)); all members cached
    "banc": {"features": "head", "anchor": True},
    "bship": {"features": "head", "anchor": False},
}


def anchor_features(occ: np.ndarray, host) -> np.ndarray:
    """``(N, n_sites)`` occupancies -> ``(N, T * (2 T + 3))`` anchor-centred three-body columns.

    Per defect type ``a`` (in ``host.defect_types`` order): among the defects of type ``a``, the one whose
    two nearest other defects are nearest (lexicographic on the two distances, so the choice is
    invariant); columns: ``d1, d2`` (A, nearest first), the one-hot types of those two neighbours
    (``2 T``), and their mutual distance ``d12`` (A). :data:`FAR` and zero one-hots where there is no
    anchor of type ``a`` or fewer than two other defects.
    """
    T = len(host.defect_types)
    D = np.asarray(host.min_image_distance, dtype=np.float64)
    width = 2 * T + 3
    out = np.zeros((len(occ), T * width))
    for a in range(T):
        out[:, a * width + 0] = FAR
        out[:, a * width + 1] = FAR
        out[:, a * width + 2 + 2 * T] = FAR
    cloud = defect_cloud(occ, host)
    for k, (rows, sites, types) in cloud.groups.items():
        if k < 1:
            continue
        for r, s, t in zip(rows, sites, types):
            dd = D[np.ix_(s, s)]
            for a in np.unique(t):
                best = None
                for i in np.flatnonzero(t == a):
                    others = np.array([j for j in range(k) if j != i], dtype=np.int64)
                    if len(others):
                        o = others[np.lexsort((t[others], dd[i, others]))][:2]
                    else:
                        o = others
                    key = tuple(dd[i, o]) + (FAR,) * (2 - len(o)) + tuple(t[o]) + (T,) * (2 - len(o))
                    if best is None or key < best[0]:
                        best = (key, o)
                key, o = best
                base = a * width
                out[r, base : base + 2] = key[:2]
                for q, j in enumerate(o):
                    out[r, base + 2 + q * T + t[j]] = 1.0
                if len(o) == 2:
                    out[r, base + 2 + 2 * T] = dd[o[0], o[1]]
    return out


def fit_member(spec: dict, X: np.ndarray, F: dict, y: dict, tr: np.ndarray, seed: int = 0):
    """Fit one member; returns a function rows -> logit(gap / eg_max) ``(n,)``."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    def hgb(Z, t):
        keep = np.flatnonzero(Z[tr].std(0) > 0)
        est = HistGradientBoostingRegressor(loss=spec["loss"], max_iter=500, learning_rate=0.1, max_leaf_nodes=31,
                                            min_samples_leaf=5, early_stopping=False, random_state=seed + 500)
        est.fit(Z[tr][:, keep], t[tr])
        return lambda rows: est.predict(Z[rows][:, keep])

    if spec["features"] == "hl":
        Xh = np.hstack([X, F[spec["with"]]]) if spec.get("with") else X
        fh, fl = hgb(Xh, y["homo"]), hgb(Xh, y["lumo"])
        return lambda rows: _logit(np.clip(fl(rows) - fh(rows), 1e-4, EG_MAX - 1e-4), EG_MAX)
    Z = np.hstack([X, F[spec["features"]]])
    f = hgb(Z, _logit(y["gap"], EG_MAX))
    return f


def load_cached(name: str, s: int, cache: Path):
    if name == "bsq":
        z = np.load(f"/tmp/g12b/trees_{s}.npz")
        return z["Uv"], z["Ut"]
    if name == "babs":
        z = np.load(f"/tmp/g12b/abs_{s}.npz")
        return _logit(z["pv"], 2.0)[None].repeat(3, 0), _logit(z["pt"], 2.0)[None].repeat(3, 0)
    for c in (cache, CACHE_C):
        p = c / f"{name}_{s}.npz"
        if p.exists():
            z = np.load(p)
            return z["Uv"], z["Ut"]
    raise FileNotFoundError(name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=[])
    ap.add_argument("--blend", nargs="+", default=None)
    ap.add_argument("--require", nargs="*", default=[], help="blend: only subsets containing all of these")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--cache", default="/tmp/g33")
    ap.add_argument("--composition", nargs="+", default=None, help="variants to check on the composition folds")
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2])
    a = ap.parse_args()
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    ds = load_2dmd(DATA)
    g = ds.y(TARGETS)[:, 1]
    if a.blend:
        sps = {s: split_indices(ds.ids, seed=s) for s in a.seeds}
        for r in range(1, len(a.blend) + 1):
            for c in itertools.combinations(a.blend, r):
                if not set(a.require) <= set(c):
                    continue
                try:
                    parts = {s: [load_cached(n, s, cache) for n in c] for s in a.seeds}
                except FileNotFoundError:
                    continue
                mv = []
                for s, ps in parts.items():
                    uv = np.concatenate([p[0] for p in ps]).mean(0)
                    mv.append(np.abs(_sigmoid(uv, 2.0) - g[sps[s]["val"]]).mean() * 1e3)
                print(f"{'+'.join(c):50s} val {np.mean(mv):.3f}  by split {np.round(mv, 2).tolist()}", flush=True)
        return
    X = cluster_counts(ds.occ, ds.host).astype(np.float64)
    y = {"gap": g, "homo": ds.targets["homo"].to_numpy(float), "lumo": ds.targets["lumo"].to_numpy(float)}
    t0 = time.time()
    F = {"nn3": anchor_features(ds.occ, ds.host)}
    vmo = [i for i, t in enumerate(ds.host.defect_types) if ds.host.defect_label(*t) == "V_Mo"][0]
    w = 2 * len(ds.host.defect_types) + 3
    F["nn3v"] = F["nn3"][:, vmo * w : (vmo + 1) * w]  # the V_Mo-anchored block only
    from invdesign.predict.features import anchor_neighbours, orbit_distances

    F["nnc"] = anchor_neighbours(X, len(ds.host.defect_types), orbit_distances(ds.host), vmo)  # the same from the counts (no d12)
    print(f"anchor features {F['nn3'].shape} in {time.time() - t0:.1f} s", flush=True)
    if a.composition:
        comp = ds.composition
        labels = np.array(["+".join(f"{int(n)}{ds.host.defect_label(*ds.host.defect_types[i])}" for i, n in enumerate(c) if n) for c in comp])
        folds = [("1V_Mo+1Se_S+1V_S", "1W_Mo+1Se_S+1V_S"), ("1V_Mo+2Se_S", "1W_Mo+2Se_S"), ("1V_Mo+2V_S", "1W_Mo+2V_S")]
        print(sorted(set(labels))[:20], flush=True)
        for fi in a.folds:
            held = np.isin(labels, folds[fi])
            tr = np.flatnonzero(~held)
            ho = np.flatnonzero(held)
            us = {}
            for n in ["single", "single_abs"] + a.composition:
                spec = VARIANTS.get(n, {"features": "none", "loss": "absolute_error" if "abs" in n else "squared_error"})
                if spec["features"] == "none":
                    from sklearn.ensemble import HistGradientBoostingRegressor
                    keep = np.flatnonzero(X[tr].std(0) > 0)
                    est = HistGradientBoostingRegressor(loss=spec["loss"], max_iter=500, early_stopping=False, random_state=500).fit(X[tr][:, keep], _logit(g[tr], 2.0))
                    us[n] = est.predict(X[ho][:, keep])
                else:
                    us[n] = fit_member(spec, X, F, y, tr)(ho)
            for c in [["single"], ["single_abs"], ["single", "single_abs"]] + [[n] for n in a.composition] + [["single", "single_abs", *a.composition]]:
                m = np.abs(_sigmoid(np.mean([us[n] for n in c], 0), 2.0) - g[ho]).mean() * 1e3
                row = {"variant": "d:comp:" + "+".join(c), "round": "d", "fold": list(folds[fi]), "n": int(len(ho)), "heldout_mae_meV": float(m),
                       "note": "train = all other rows; an extrapolation check, no validation split"}
                print(json.dumps(row), flush=True)
                with LOG.open("a") as f:
                    f.write(json.dumps(row) + "\n")
        return
    for v in a.variants:
        spec = VARIANTS[v]
        for s in a.seeds:
            sp = split_indices(ds.ids, seed=s)
            tr, va, te = sp["train"], sp["val"], sp["test"]
            t0 = time.time()
            if spec["features"] == "head":
                from invdesign.model import DEFAULT_CONFIG
                from invdesign.predict.features import orbit_distances
                from invdesign.predict.gap import BoundedGapHead

                h = BoundedGapHead(members=3, losses=("squared_error", "absolute_error"),
                                   extra=({"loss": "squared_error"}, {"loss": "absolute_error"}), max_iter=DEFAULT_CONFIG["gap_iter"],
                                   n_types=len(ds.host.defect_types), orbit_distance=orbit_distances(ds.host),
                                   anchor=vmo if spec["anchor"] else None).fit(X[tr], g[tr], X[va], g[va])
                Dv, Dt = h._design(X[va]), h._design(X[te])
                Uv, Ut = np.stack([f.predict(Dv) for f in h.forests]), np.stack([f.predict(Dt) for f in h.forests])
                np.savez(cache / f"{v}_{s}.npz", Uv=Uv, Ut=Ut)
                mv, sv = h.predict(X[va])
                row = {"variant": f"d:{v}", "round": "d", "spec": spec, "split_seed": s, "fit_s": round(time.time() - t0),
                       "val_mae_meV": float(np.abs(mv - g[va]).mean() * 1e3),
                       "val_width_2std_meV": float(4 * sv.mean() * 1e3), "scale_b": h.scale_b.tolist(), "s0": h.s0}
                print(json.dumps(row), flush=True)
                with LOG.open("a") as f_:
                    f_.write(json.dumps(row) + "\n")
                continue
            f = fit_member(spec, X, F, y, tr)
            uv, ut = f(va), f(te)
            np.savez(cache / f"{v}_{s}.npz", Uv=uv[None], Ut=ut[None])
            row = {"variant": f"d:{v}", "round": "d", "spec": spec, "split_seed": s, "fit_s": round(time.time() - t0),
                   "val_mae_meV": float(np.abs(_sigmoid(uv, 2.0) - g[va]).mean() * 1e3)}  # test outputs cached, not scored
            print(json.dumps(row), flush=True)
            with LOG.open("a") as f_:
                f_.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
