"""Cost by defect count: embedding (tabulated vs direct network), canonical keys, cluster-count
predictions, peak memory; and, for an encoder with the MLP triple term (O(k^3)), the error a
triple-term distance cutoff would make (the product term, O(k^2), is exact at every count and
has no cutoff).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_scaling.py   # -> benchmarks/results/scaling.{json,md}

Each defect count runs in a fresh subprocess (peak RSS = that process's maximum resident set,
model and host included). Random configurations: uniform sites, uniform types (8x8 MoS2).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checked import run_checked  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
KS = (3, 6, 12, 24, 48)


def one(k: int) -> dict:
    import resource

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from invdesign.embed.encoder import embed_occ
    from invdesign.embed.tables import encoder_tables
    from invdesign.generate.anneal import _Moves
    from invdesign.generate.decoder import Limits
    from invdesign.lattice.canonical import canonical_keys
    from invdesign.model import load_model

    m = load_model()
    h = m.host
    t = time.perf_counter()
    tab = encoder_tables(m.encoder, h)
    t_tables = time.perf_counter() - t
    rng = np.random.default_rng(k)
    n = {3: 2000, 6: 400, 12: 60, 24: 12, 48: 4}[k] if tab.kind == "mlp" else {3: 4000, 6: 2000, 12: 1000, 24: 500, 48: 300}[k]
    occ = _Moves(h, Limits.make(h, k, k)).random(rng, n)
    row = {"k": k, "three_body": tab.kind, "tables_build_s": round(t_tables, 2)}
    t = time.perf_counter()
    z = tab.embed(occ)
    row["embed_per_s"] = round(n / (time.perf_counter() - t), 2)
    if k <= 12:
        m2 = min(n, 40 if k == 12 else 400)
        t = time.perf_counter()
        z0 = embed_occ(m.encoder, occ[:m2], h, fast=False)
        row["embed_direct_per_s"] = round(m2 / (time.perf_counter() - t), 2)
        row["tables_vs_direct_max_rel_diff"] = float(np.abs(z0 - z[:m2]).max() / np.abs(z0).max())
        if tab.kind == "mlp":
            zc = tab.embed(occ[:m2], cutoff=6.5, exact_below=0)
            nn = np.linalg.norm(z0[:, None] - z0[None], axis=2)
            np.fill_diagonal(nn, np.inf)
            row["cutoff6.5_error_over_nearest_class"] = round(float(np.median(np.linalg.norm(zc - z0, axis=1) / nn.min(axis=1))), 3)
    big = np.concatenate([occ] * max(1, 2000 // n))
    t = time.perf_counter()
    canonical_keys(big, h)
    row["keys_per_s"] = round(len(big) / (time.perf_counter() - t))
    t = time.perf_counter()
    m.predict(big)
    row["predict_per_s"] = round(len(big) / (time.perf_counter() - t))
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return row


def main() -> None:
    if len(sys.argv) > 1:
        print(json.dumps(one(int(sys.argv[1]))))
        return
    rows = []
    for k in KS:
        p = run_checked([sys.executable, __file__, str(k)], what=f"bench_scaling {k} defects", timeout=1200,
                        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        row = json.loads(p.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta = {"platform": platform.platform(), "load_avg": os.getloadavg(), "threads": 1,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    OUT.mkdir(exist_ok=True)
    (OUT / "scaling.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    kind = rows[0].get("three_body", "?")
    lines = ["# Cost by defect count (8x8 MoS2, packaged model, 1 thread)", "",
             f"{meta['date']}, load average {meta['load_avg'][0]:.1f} on 2 shared cores (figures are pessimistic). "
             f"Encoder three-body term: {kind}" + (" (O(k^2), exact at every count: no cutoff column)" if kind == "product" else "") + ".", "",
             "| defects | embed/s (tables) | embed/s (direct) | max rel diff | cutoff 6.5 A error / nearest-class distance | keys/s | predict/s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['k']} | {r.get('embed_per_s', '-')} | {r.get('embed_direct_per_s', '-')} | "
                     f"{r.get('tables_vs_direct_max_rel_diff', '-')} | {r.get('cutoff6.5_error_over_nearest_class', '-')} | "
                     f"{r.get('keys_per_s', '-')} | {r.get('predict_per_s', '-')} | {r.get('peak_rss_mb', '-')} |")
    (OUT / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
