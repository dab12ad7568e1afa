"""Gap study, round e (issue 12): four more levers on the V_Mo tail, all chosen on validation.

Same protocol as rounds c and d (``gap_tune_study.md``, ``gap_round_d.md``): the five random 80/10/10 splits of
``bench_gap.py`` (seed 0 = the project's test split), every figure here on the **validation** rows; no test
row is read. The reference member is round d's best single model, ``nnc_abs``: one absolute-error boosted
model (500 iterations, learning rate 0.1, 31 leaves) on the counts plus the V_Mo anchor block, in
logit(gap / 2 eV). Stages:

- ``tail``: how the shipped recipe's validation error is made (share of rows and of error above 10-70 meV).
- ``geometry``: the counts plus site-level three-body columns of the V_Mo and its two nearest defects
  (distances, partner types, the partners' mutual distance, their in-plane distance and the cosine of the
  in-plane angle at the V_Mo, their height difference and same/opposite side of the Mo plane): the
  "parity" pattern in the data (below) made explicit.
- ``specialist``: a model for V_Mo-containing configurations reading only those compact columns plus the
  four defect counts (no pair counts), the reference member elsewhere.
- ``analogy``: the same triangle geometry (the two V_Mo-partner pair orbits and the partners' mutual
  orbit, partner types ignored) recurs in up to four compositions; the reference member's out-of-fold
  residual on training rows of the same geometry, shrunk by ``n / (n + kappa)``, added to its prediction.
- ``net``: a small network on exactly the V_Mo triangle (one-V_Mo three-defect configurations): embeddings
  of the partner types, the two V_Mo-partner pair orbits and the partners' mutual orbit, an MLP symmetrised
  over the partner swap, L1 loss in logit space, 3 seeds averaged; blended with the shipped recipe's
  cached validation outputs (round d ``banc``, under ``--banc``) on those rows.
- ``levels``: the data itself: for 1V_Mo+2Se_S and 1V_Mo+2V_S, the gap's level (< 0.31, 0.31-0.39, > 0.39 eV)
  by the shells of the V_Mo's two nearest partners, and the configurations with both partners at 5.12 A.
- ``net_test``: the one test run of the net blend chosen on validation (70 epochs, weight 0.4), paired with
  the shipped recipe's cached test outputs.
- ``settings``: the reference member with 1000 / 2000 iterations, learning rate 0.2, 63 leaves.

    OMP_NUM_THREADS=2 python benchmarks/gap_round_e.py --stages levels tail geometry specialist analogy net settings

One JSON line per (stage, variant) appended to ``benchmarks/results/gap_variants.jsonl`` (``"round": "e"``).
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
from invdesign.embed.geometry import defect_cloud  # noqa: E402
from invdesign.predict.features import ABSENT_DISTANCE, anchor_neighbours, cluster_counts, orbit_distances  # noqa: E402
from invdesign.predict.gap import EG_MAX, _logit, _sigmoid  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "2dmd-mos2-low"
LOG = ROOT / "benchmarks" / "results" / "gap_variants.jsonl"
SEEDS = (0, 1, 2, 3, 4)


def hgb(Z: np.ndarray, u: np.ndarray, tr: np.ndarray, **kw):
    """One boosted model on rows ``tr`` of ``Z (N, p)``, logit targets ``u (N,)``; returns rows -> ``(n,)``."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    keep = np.flatnonzero(Z[tr].std(0) > 0)
    s = {"loss": "absolute_error", "max_iter": 500, "learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 5, **kw}
    est = HistGradientBoostingRegressor(**s, early_stopping=False, random_state=500).fit(Z[tr][:, keep], u[tr])
    return lambda rows: est.predict(Z[rows][:, keep])


def vmo_geometry(occ: np.ndarray, host, vmo: int) -> np.ndarray:
    """``(N, n_sites)`` occupancies -> ``(N, 2 + 2 T + 5)`` V_Mo three-body columns (A, one-hots, cosines).

    For the V_Mo whose two nearest other defects are nearest (lexicographic, so invariant): ``d1, d2``, the
    partners' one-hot types, their mutual distance, in-plane distance, cos of the in-plane angle at the V_Mo
    (2 where a partner sits on the V_Mo's column), height difference (A) and the product of their heights
    over the Mo plane (> 0: same side). Far / zero where there is no V_Mo or fewer than two partners.
    """
    T = len(host.defect_types)
    D = np.asarray(host.min_image_distance)
    frac, lat = np.asarray(host.frac_coords, float), np.asarray(host.lattice.matrix, float)
    out = np.zeros((len(occ), 2 + 2 * T + 5))
    out[:, [0, 1, 2 + 2 * T, 3 + 2 * T]] = ABSENT_DISTANCE

    def vec(i: int, j: int) -> np.ndarray:
        d = frac[j] - frac[i]
        d[:2] -= np.round(d[:2])
        return d @ lat

    for k, (rows, sites, types) in defect_cloud(occ, host).groups.items():
        for r, s, t in zip(rows, sites, types):
            best = None
            for i in np.flatnonzero(t == vmo):
                o = sorted((j for j in range(k) if j != i), key=lambda j: (round(D[s[i], s[j]], 6), t[j]))[:2]
                key = tuple(round(D[s[i], s[j]], 6) for j in o) + (ABSENT_DISTANCE,) * (2 - len(o))
                if best is None or key < best[0]:
                    best = (key, i, o)
            if best is None:
                continue
            key, i, o = best
            out[r, :2] = key
            for q, j in enumerate(o):
                out[r, 2 + q * T + t[j]] = 1.0
            if len(o) == 2:
                v1, v2 = vec(s[i], s[o[0]]), vec(s[i], s[o[1]])
                n1, n2 = np.linalg.norm(v1[:2]), np.linalg.norm(v2[:2])
                out[r, 2 + 2 * T :] = [np.linalg.norm(v2 - v1), np.linalg.norm(v2[:2] - v1[:2]),
                                       v1[:2] @ v2[:2] / (n1 * n2) if min(n1, n2) > 1e-6 else 2.0, abs(v2[2] - v1[2]), v1[2] * v2[2]]
    return out


def vmo_triangles(occ: np.ndarray, host, vmo: int) -> tuple[np.ndarray, np.ndarray]:
    """One-V_Mo three-defect rows ``(n,)`` and their triangles ``(n, 5)``: partner type, V_Mo-partner pair
    orbit (twice, partners in site order) and the partners' mutual pair orbit (the smaller of the two ordered
    pairs' orbits, so a label of the unordered pair: the triangle does not depend on the site order)."""
    PO = host.pair_orbits
    rows_out, tri = [], []
    rows, sites, types = defect_cloud(occ, host).groups[3]
    for r, s, t in zip(rows, sites, types):
        if (t == vmo).sum() != 1:
            continue
        i = int(np.flatnonzero(t == vmo)[0])
        a, b = [j for j in range(3) if j != i]
        rows_out.append(r)
        tri.append([t[a], PO[s[i], s[a]], t[b], PO[s[i], s[b]], min(PO[s[a], s[b]], PO[s[b], s[a]])])
    return np.asarray(rows_out), np.asarray(tri, dtype=np.int64)


def log(row: dict) -> None:
    row = {"round": "e", **row}
    print(json.dumps(row), flush=True)
    with LOG.open("a") as f:
        f.write(json.dumps(row) + "\n")


def mae(u: np.ndarray, g: np.ndarray) -> float:
    return float(np.abs(_sigmoid(u, EG_MAX) - g).mean() * 1e3)


def net_predict(tri: np.ndarray, u: np.ndarray, tr: np.ndarray, te: np.ndarray, npo: int, epochs: int, seeds: int = 3,
                weight_decay: float = 1e-2) -> np.ndarray:
    """The triangle network (module docstring) fitted on triangles ``tri[tr]`` -> logit predictions on ``tri[te]``."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self, d: int = 16, h: int = 64) -> None:
            super().__init__()
            self.et, self.eo, self.e12 = torch.nn.Embedding(4, 8), torch.nn.Embedding(npo, d), torch.nn.Embedding(npo, d)
            self.mlp = torch.nn.Sequential(torch.nn.Linear(16 + 3 * d, h), torch.nn.SiLU(), torch.nn.Linear(h, h), torch.nn.SiLU(),
                                           torch.nn.Linear(h, 1))

        def forward(self, p):
            a = torch.cat([self.et(p[:, 0]), self.eo(p[:, 1]), self.et(p[:, 2]), self.eo(p[:, 3]), self.e12(p[:, 4])], 1)
            b = torch.cat([self.et(p[:, 2]), self.eo(p[:, 3]), self.et(p[:, 0]), self.eo(p[:, 1]), self.e12(p[:, 4])], 1)
            return 0.5 * (self.mlp(a) + self.mlp(b)).squeeze(1)

    P, y = torch.as_tensor(tri), torch.as_tensor(u, dtype=torch.float32)
    mu, out = float(y[tr].median()), []
    for seed in range(seeds):
        torch.manual_seed(seed)
        net = Net()
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=weight_decay)
        for _ in range(epochs):
            perm = torch.as_tensor(tr)[torch.randperm(len(tr))]
            for b in range(0, len(perm), 128):
                idx = perm[b : b + 128]
                loss = (net(P[idx]) + mu - y[idx]).abs().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            out.append(net(P[te]).numpy() + mu)
    return np.mean(out, 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", nargs="+", default=["levels", "tail", "geometry", "specialist", "analogy", "net", "settings"])
    ap.add_argument("--banc", default="/tmp/g33", help="round d's cached shipped-recipe members (banc_<seed>.npz)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    ds = load_2dmd(DATA)
    host = ds.host
    g = ds.y(TARGETS)[:, 1]
    u = _logit(g, EG_MAX)
    T = len(host.defect_types)
    vmo = [i for i, t in enumerate(host.defect_types) if host.defect_label(*t) == "V_Mo"][0]
    X = cluster_counts(ds.occ, host).astype(np.float64)
    A = anchor_neighbours(X, T, orbit_distances(host), vmo)
    G = vmo_geometry(ds.occ, host, vmo)
    assert np.allclose(np.round(G[:, :2], 4), np.round(A[:, :2], 4)) and np.array_equal(G[:, 2 : 2 + 2 * T], A[:, 2:])
    Z = np.hstack([X, A])
    splits = {s: split_indices(ds.ids, seed=s) for s in SEEDS}
    ref = {}  # the reference member's val outputs by split
    for s, sp in splits.items():
        ref[s] = hgb(Z, u, sp["train"])(sp["val"])
    log({"stage": "reference", "variant": "nnc_abs", "val_mae_meV": [mae(ref[s], g[sp["val"]]) for s, sp in splits.items()]})
    has_vmo = X[:, vmo] > 0

    if "levels" in a.stages:  # the data: which level a V_Mo family's gap takes, by its two nearest partners' shells
        comp = ds.composition
        labels = np.array(["+".join(f"{int(n)}{host.defect_label(*host.defect_types[i])}" for i, n in enumerate(c) if n) for c in comp])
        for fam in ("1V_Mo+2Se_S", "1V_Mo+2V_S"):
            m = labels == fam
            groups: dict = {}
            for r in np.flatnonzero(m):
                groups.setdefault((round(G[r, 0], 2), round(G[r, 1], 2)), []).append(r)
            table = {f"{k[0]} / {k[1]}": {"n": len(v), "levels <0.31 / 0.31-0.39 / >0.39 eV": np.bincount(np.digitize(g[v], [0.31, 0.39]), minlength=3).tolist(),
                                          "median_eV": round(float(np.median(g[v])), 3)} for k, v in sorted(groups.items()) if k[0] <= 7 and k[1] <= 7}
            close = sorted((round(G[r, 2 + 2 * T], 2), round(G[r, 4 + 2 * T], 3), round(G[r, 5 + 2 * T], 2), round(float(g[r]), 3)) for r in groups.get((5.12, 5.12), []))
            log({"stage": "levels", "variant": fam, "n": int(m.sum()), "by_nearest_two_shells_A": table,
                 "both_partners_at_5.12_A: (d12 A, cos in-plane angle, height difference A, gap eV)": close})

    if "tail" in a.stages:  # how the shipped recipe's validation error is made (round d's cached outputs)
        E = np.concatenate([np.abs(_sigmoid(np.load(Path(a.banc) / f"banc_{s}.npz")["Uv"].mean(0), EG_MAX) - g[sp["val"]]) * 1e3
                            for s, sp in splits.items()])
        log({"stage": "tail", "variant": "shipped recipe, validation rows of the 5 splits", "val_mae_meV": float(E.mean()),
             "share_of_rows_and_of_error_above_meV": {t: [float((E > t).mean()), float(E[E > t].sum() / E.sum())] for t in (10, 20, 40, 70)}})

    if "geometry" in a.stages:
        for name, cols in [("all 15 columns", slice(None)), ("d1 d2 types d12", slice(0, 2 + 2 * T + 1))]:
            r = [mae(hgb(np.hstack([X, G[:, cols]]), u, sp["train"])(sp["val"]), g[sp["val"]]) for sp in splits.values()]
            log({"stage": "geometry", "variant": f"counts + V_Mo geometry ({name})", "val_mae_meV": r})

    if "specialist" in a.stages:
        C = np.hstack([X[:, :T], G])
        for loss in ("absolute_error", "squared_error"):
            r, rv = [], []
            for s, sp in splits.items():
                tr, va = sp["train"], sp["val"]
                f = hgb(C, u, tr[has_vmo[tr]], loss=loss)
                m = has_vmo[va]
                p = ref[s].copy()
                p[m] = f(va[m])
                r.append(mae(p, g[va]))
                rv.append([mae(p[m], g[va][m]), mae(ref[s][m], g[va][m])])
            log({"stage": "specialist", "variant": f"V_Mo specialist on compact geometry, {loss}", "val_mae_meV": r,
                 "vmo_rows_val_mae_meV_specialist_vs_reference": np.mean(rv, 0).tolist()})

    if "analogy" in a.stages:
        rows, tri = vmo_triangles(ds.occ, host, vmo)
        sub = [t[0] for t in host.defect_types]  # each defect type's sublattice
        keys = {}
        key = np.full(len(g), -1)
        for r, (ta, oa, tb, ob, o12) in zip(rows, tri):
            ends = tuple(sorted([(sub[ta], oa), (sub[tb], ob)]))
            key[r] = keys.setdefault((*ends, o12), len(keys))
        K = len(keys)
        oof = {}
        for s, sp in splits.items():
            tr = sp["train"]
            fold = np.empty(len(tr), int)
            fold[np.random.default_rng(s).permutation(len(tr))] = np.arange(len(tr)) % 5
            o = np.zeros(len(tr))
            for f in range(5):
                o[fold == f] = hgb(Z, u, tr[fold != f])(tr[fold == f])
            oof[s] = o
        for kappa in (0.5, 1.0, 2.0, 4.0):
            for lam in (0.5, 1.0):
                r = []
                for s, sp in splits.items():
                    tr, va = sp["train"], sp["val"]
                    res, m = u[tr] - oof[s], key[tr] >= 0
                    S, N = np.bincount(key[tr][m], res[m], K), np.bincount(key[tr][m], minlength=K)
                    kv = np.maximum(key[va], 0)
                    r.append(mae(ref[s] + lam * np.where(key[va] >= 0, S[kv] / (N[kv] + kappa), 0.0), g[va]))
                log({"stage": "analogy", "variant": f"out-of-fold residual by triangle geometry, kappa {kappa}, weight {lam}",
                     "val_mae_meV": r, "n_geometries": K})

    if "net" in a.stages:
        rows, tri = vmo_triangles(ds.occ, host, vmo)
        pos = np.full(len(g), -1)
        pos[rows] = np.arange(len(rows))
        npo = int(host.pair_orbits.max()) + 1
        banc = {s: Path(a.banc) / f"banc_{s}.npz" for s in SEEDS}
        for epochs in (40, 70):
            nets, alone = {}, []
            for s, sp in splits.items():
                tr, va = pos[sp["train"]], pos[sp["val"]]
                t0 = time.time()
                nets[s] = net_predict(tri, u[rows], tr[tr >= 0], va[va >= 0], npo, epochs)
                alone.append([mae(nets[s], g[sp["val"]][va >= 0]), mae(ref[s][va >= 0], g[sp["val"]][va >= 0]), time.time() - t0])
            row = {"stage": "net", "variant": f"triangle net, {epochs} epochs", "vmo_triangle_rows_val_mae_meV_net_vs_reference": alone}
            if all(p.exists() for p in banc.values()):
                for w in (0.25, 0.4, 0.5):
                    r = []
                    for s, sp in splits.items():
                        va = sp["val"]
                        m = pos[va] >= 0
                        b = np.load(banc[s])["Uv"].mean(0)
                        b[m] = (1 - w) * b[m] + w * nets[s]
                        r.append(mae(b, g[va]))
                    row[f"shipped recipe blended with the net at weight {w}: val_mae_meV"] = r
                row["shipped recipe alone: val_mae_meV"] = [mae(np.load(banc[s])["Uv"].mean(0), g[sp["val"]]) for s, sp in splits.items()]
            log(row)

    if "net_test" in a.stages:  # the one test run of the blend chosen on validation (70 epochs, weight 0.4)
        rows, tri = vmo_triangles(ds.occ, host, vmo)
        pos = np.full(len(g), -1)
        pos[rows] = np.arange(len(rows))
        npo = int(host.pair_orbits.max()) + 1
        alone, blend = [], []
        for s, sp in splits.items():
            tr, te = pos[sp["train"]], sp["test"]
            m = pos[te] >= 0
            net = net_predict(tri, u[rows], tr[tr >= 0], pos[te][m], npo, 70)
            b = np.load(Path(a.banc) / f"banc_{s}.npz")["Ut"].mean(0)
            alone.append(mae(b, g[te]))
            b[m] = 0.6 * b[m] + 0.4 * net
            blend.append(mae(b, g[te]))
        log({"stage": "net_test", "variant": "shipped recipe blended with the triangle net (70 epochs, weight 0.4), test rows",
             "test_mae_meV_shipped_recipe": alone, "test_mae_meV_blend": blend})

    if "settings" in a.stages:
        for kw in ({"max_iter": 1000}, {"max_iter": 2000}, {"max_iter": 1000, "learning_rate": 0.2}, {"max_iter": 1000, "max_leaf_nodes": 63}):
            r = [mae(hgb(Z, u, sp["train"], **kw)(sp["val"]), g[sp["val"]]) for sp in splits.values()]
            log({"stage": "settings", "variant": f"nnc_abs with {kw}", "val_mae_meV": r})


if __name__ == "__main__":
    main()
