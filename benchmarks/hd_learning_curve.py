"""Does more high-density TRAIN data help? Learning curve of the HD formation-energy correction (CV, train part only).

    PYTHONPATH=. python benchmarks/hd_learning_curve.py --table T.csv [--sizes=0,150,300,600,...] [--designs D,F]

``T.csv`` is an ``hd_reference.py table`` output holding the original set and (part of) the train-only
extension ``hdx*``. Only its TRAIN rows are read. Validation: the 5 CV folds of the ORIGINAL train part
(349 configurations, bands drawn uniformly like the test part; the folds ``fit_hd_correction.py --cv`` drew on them
before the extension, so m = 0 reproduces its D row of then).
Each fold is predicted by a correction fitted on the other four folds plus the first ``m`` extension
configurations (id order = the extension's interleaved band/placement schedule), for each ``m`` in
``--sizes``; ``m = -1`` stands for half of the other folds and no extension (the curve below 349).
Scores: MAE meV/site by band and 2-sigma coverage counting the reference's std (as in ``fit_hd_correction.py``).

Designs (same code as ``fit_hd_correction.py``): D = the served GP (per-site target), E = D on the total
target, F = D plus 300 2DMD train configurations as a second fidelity, ``D<K>`` = D with its kernel constants
fitted on a seeded subsample of K training rows and the posterior on all (``fit_hd_correction(max_hyper=K)``). Rows are appended to
``benchmarks/results/hd_learning_curve.jsonl`` as they finish; ``--report`` writes the table
``benchmarks/results/hd_learning_curve.md`` from it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from fit_hd_correction import BANDS, base_fe, load_hd_train, score  # noqa: E402

from invdesign.predict.features import cluster_counts  # noqa: E402
from invdesign.predict.hd_correction import fit_hd_correction, hd_features  # noqa: E402
from invdesign.predict.serving import n_defects  # noqa: E402

RES = Path("benchmarks/results")
JSONL = RES / "hd_learning_curve.jsonl"


def fit_predict(design: str, Xa, ya, na, Xb, nb, host, ld, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correction fitted on ``(Xa, ya)`` (per-site residual, eV) predicted at ``Xb``: mean, std (eV/site).
    ``D<K>``: D with its kernel constants fitted on a subsample of K rows (``max_hyper``)."""
    if design == "D":
        return fit_hd_correction(Xa, ya, host, "cv", seed=seed).predict(Xb)
    if design.startswith("D") and design[1:].isdigit():
        return fit_hd_correction(Xa, ya, host, "cv", seed=seed, max_hyper=int(design[1:])).predict(Xb)
    if design == "E":
        m, s = fit_hd_correction(Xa, ya * na, host, "cv", seed=seed).predict(Xb)
        return m / nb, s / nb
    if design == "F":
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, DotProduct, WhiteKernel

        Xl, yl = ld
        Fa = np.vstack([np.column_stack([hd_features(Xa, host), np.ones(len(Xa))]),
                        np.column_stack([hd_features(Xl, host), np.zeros(len(Xl))])])
        mu, sd = Fa.mean(0), Fa.std(0) + 1e-12
        kern = (ConstantKernel(0.01) * RBF(3.0, (0.1, 100)) + ConstantKernel(0.001) * DotProduct(1.0)
                + WhiteKernel(1e-3, (1e-6, 1)))
        g = GaussianProcessRegressor(kern, normalize_y=True, random_state=seed, n_restarts_optimizer=1).fit(
            (Fa - mu) / sd, np.concatenate([ya, yl]))
        return g.predict((np.column_stack([hd_features(Xb, host), np.ones(len(Xb))]) - mu) / sd, return_std=True)
    raise SystemExit(f"unknown design {design}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, default=Path("invdesign/resources/hd_reference.csv"))
    ap.add_argument("--data", default="/work/shared/data/2dmd-mos2-low")
    ap.add_argument("--sizes", default="-1,0,150,300,600,900,1200")
    ap.add_argument("--designs", default="D")
    ap.add_argument("--report", action="store_true", help="only write the markdown table from the JSONL")
    a = ap.parse_args()
    if a.report:
        return report()
    warnings.filterwarnings("ignore", module="sklearn")
    hd, pred, X, n, base, _ = load_hd_train(a.table, by_id=True)
    host = pred.host
    y = hd["formation_energy_per_site"].to_numpy(float) - base
    rstd = hd["formation_energy_per_site_std"].to_numpy(float)
    ext = hd["id"].str.startswith("hdx").to_numpy()
    orig, xi = np.flatnonzero(~ext), np.flatnonzero(ext)
    folds = np.random.default_rng(0).permutation(len(orig)) % 5  # fit_hd_correction.py --cv folds on the 349 rows
    ld = None
    if "F" in a.designs:
        from invdesign.data.dataset import load_dataset, split_indices

        ds = load_dataset(a.data)
        pick = np.random.default_rng(0).choice(split_indices(ds.ids, seed=0)["train"], 300, replace=False)
        Xl = cluster_counts(ds.occ[pick], host).astype(np.float64)
        bl, _ = base_fe(pred, Xl, np.maximum(n_defects(ds.occ[pick], host), 1).astype(float))
        ld = (Xl, ds.y(["formation_energy_per_site"])[pick, 0] - bl)
    print(f"{len(orig)} original train, {len(xi)} extension train configurations labelled", flush=True)
    for design in a.designs.split(","):
        for m in (int(s) for s in a.sizes.split(",")):
            if m > len(xi):
                print(f"skip m={m}: only {len(xi)} extension labels", flush=True)
                continue
            t0 = time.perf_counter()
            pm, ps = np.zeros(len(orig)), np.zeros(len(orig))
            n_train = 0
            for f in range(5):
                tr = orig[folds != f]
                if m < 0:
                    tr = tr[np.random.default_rng(f).permutation(len(tr))[: len(tr) // 2]]
                tr = np.concatenate([tr, xi[: max(m, 0)]])
                b = orig[folds == f]
                pm[folds == f], ps[folds == f] = fit_predict(design, X[tr], y[tr], n[tr], X[b], n[b], host, ld)
                n_train = len(tr)
            r = score(pm - y[orig], ps, rstd[orig], n[orig])
            row = {"design": design, "m_extension": m, "n_train_per_fold": n_train, "seconds": time.perf_counter() - t0,
                   "ext_13_30": int(((n[xi[: max(m, 0)]] >= 13)).sum()), **r}
            with JSONL.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    report()


def report() -> None:
    rows = [json.loads(s) for s in JSONL.read_text().splitlines() if s.strip()]
    lines = ["# High-density FE correction: learning curve (5-fold CV on the ORIGINAL HD train part)", "",
             "Validation: the 5 CV folds of the 349 original train configurations (bands uniform, like the test part). "
             "Training per fold: the other 4 folds (half of them at m = -1) plus the first m configurations of the "
             "train-only extension `hdx12_*` (70 % 13-30, 30 % 7-12 defects). MAE meV/site by band; cov: "
             "|error| <= 2 sqrt(std^2 + reference std^2). The test part is not used.", "",
             "| design | m extension | train / fold | 4-6 MAE | cov | 7-12 MAE | cov | 13-30 MAE | cov | all MAE | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['design']} | {r['m_extension']} | {r['n_train_per_fold']} | "
                     + " | ".join(f"{r[b]['mae_meV']:.1f} | {r[b]['coverage_2sigma']:.2f}" for b in BANDS)
                     + f" | {r['all']['mae_meV']:.1f} | {r['seconds']:.0f} |")
    (RES / "hd_learning_curve.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
