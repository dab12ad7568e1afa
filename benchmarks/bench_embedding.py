"""Embedding and property benchmark: the seed's table, invariance/injectivity, throughput.

Writes ``benchmarks/results/seed_table.{md,json}`` (the seed's Figure 2 reproduced and extended,
MAE in meV on the held-out test split) and ``benchmarks/results/embedding.{md,json}``
(orbit spread over all 768 operations, separation of all enumerated classes, equivalence
recognition on held-out pairs, configurations/s next to dscribe's Coulomb matrix).

    python benchmarks/bench_embedding.py [--model MODEL] [--quick] [--high-density DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from invdesign.data.dataset import load_2dmd, split_indices  # noqa: E402
from invdesign.embed.checks import class_separation, equivalence_accuracy, orbit_spread  # noqa: E402
from invdesign.io import _json_default  # noqa: E402
from invdesign.lattice.enumerate import enumerate_orbits  # noqa: E402
from invdesign.model import load_model  # noqa: E402
from invdesign.predict.benchmark import run_benchmark, write_report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--quick", action="store_true", help="train rows on 500 structures, no kernel baselines")
    ap.add_argument("--high-density", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    shared = Path(os.environ.get("INVDESIGN_SHARED", ROOT.parent / "shared"))
    ds = load_2dmd(shared / "data" / "2dmd-mos2-low")
    model = load_model(args.model)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)

    # --- embedding checks
    t0 = time.time()
    tab = enumerate_orbits(model.host, 3)
    t1 = time.time()
    z = model.embed(tab.occ)
    t_embed = time.time() - t1
    rng = np.random.default_rng(0)
    sample = rng.choice(len(tab), 20 if args.quick else 100, replace=False)
    spread = orbit_spread(model, tab.occ[sample])
    sep = class_separation(z, threshold=float(spread.max()))
    te = split_indices(ds.ids, seed=model.meta["split"]["seed"])["test"]
    eq = equivalence_accuracy(model, ds.occ[te], ds.occ, threshold=1e-5, seed=0)
    emb = {
        "quick": args.quick,
        "classes": len(tab),
        "embedding_dim": model.dim,
        "embed_all_classes_s": t_embed,
        "embed_configs_per_s": len(tab) / t_embed,
        "orbit_spread_max": float(spread.max()),
        "orbit_spread_configs": len(sample),
        "orbit_spread_ops": model.host.n_ops,
        "min_interclass_distance": sep["min_distance"],
        "interclass_distance_q0.001": sep["q001"],
        "interclass_distance_q0.01": sep["q01"],
        "interclass_distance_median": sep["median"],
        "collisions_at_spread": sep["collisions"],
        "classes_below_margin": int((sep["distances"] < model.meta["config"]["margin"]).sum()),
        "margin": model.meta["config"]["margin"],
        "spread_over_min_distance": float(spread.max() / sep["min_distance"]),
        "equivalence": eq,
        "seconds": time.time() - t0,
    }
    lines = [
        f"Embedding checks ({'quick' if args.quick else 'full'} run): all {len(tab)} symmetry classes of 8x8 MoS2 with 1-3 defects.",
        "",
        "| quantity | value |",
        "|---|---:|",
        f"| orbit spread (max over {len(sample)} classes x {model.host.n_ops} operations) | {spread.max():.2e} |",
        f"| smallest distance between distinct classes | {sep['min_distance']:.2e} |",
        f"| spread / smallest distance (must be < 1e-3) | {spread.max() / sep['min_distance']:.1e} |",
        f"| collisions (classes closer than the spread) | {sep['collisions']} |",
        f"| classes closer than the training margin {emb['margin']} to another | {emb['classes_below_margin']} |",
        f"| nearest-class distance, 0.1% / 1% / median | {sep['q001']:.2e} / {sep['q01']:.2e} / {sep['median']:.2e} |",
        f"| equivalence recognition on {eq['pairs']} held-out test pairs (positives: symmetry images; negatives: nearest other class, same composition) | {100 * eq['accuracy']:.2f} % |",
        f"| embedding throughput (all classes, 1 thread) | {emb['embed_configs_per_s']:.0f} configs/s |",
    ]
    md = "\n".join(lines) + "\n"
    (out / "embedding.md").write_text(md)
    (out / "embedding.json").write_text(json.dumps(emb, indent=2, default=_json_default) + "\n")
    print(md)

    # --- the seed's table
    res = run_benchmark(ds, model, high_density=args.high_density, baselines=not args.quick,
                        max_train=500 if args.quick else None, throughput_n=300 if args.quick else 1000)
    res["quick"] = args.quick
    print(write_report(res, out, stem="seed_table"))


if __name__ == "__main__":
    main()
