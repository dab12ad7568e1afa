"""``design -n 50`` from the CLI at 8-12 and 16-24 defects (issue 10's done-means), repeated.

Wall time from the shell (a new process: imports, model load, sampling, checks, arrangement
populations, writing), default mode, 8x8 MoS2, packaged model; the windows of
``benchmarks/bench_anneal.py`` (W2: FE and gap; F2: FE only). Median of ``--repeats`` runs. A run that
exits non-zero stops the benchmark (``checked.run_checked``); how many of the candidates returned lie in
the window is reported beside the time (a fast run that reaches nothing is no answer).

    OMP_NUM_THREADS=1 python benchmarks/bench_design_cli.py  # writes benchmarks/results/design_cli.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_anneal import BANDS, OUT, WANT, WINDOWS, _cli  # noqa: E402

GOAL_S = {"8-12": 30.0, "16-24": 60.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    rows = []
    load0 = os.getloadavg()
    for lo, hi in BANDS:
        for wname in ("W2 fe 1.5-2.0, gap 0.2-0.6", "F2 fe 3.0-3.1 (FE only)"):
            runs = [_cli(WINDOWS[wname], lo, hi) for _ in range(a.repeats)]
            sec = [r["seconds"] for r in runs]
            row = {"band": f"{lo}-{hi}", "window": wname, "median_s": statistics.median(sec), "seconds": sec,
                   "rc": [r["rc"] for r in runs], "mode_used": runs[-1]["mode_used"], "returned": runs[-1]["returned"],
                   "returned_in_window": runs[-1]["returned_in_window"],
                   "timings_s": runs[-1]["timings_s"], "goal_s": GOAL_S[f"{lo}-{hi}"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {"platform": platform.platform(), "python": platform.python_version(), "omp": os.environ.get("OMP_NUM_THREADS"),
            "load_avg_start": load0, "load_avg_end": os.getloadavg(), "want": WANT, "repeats": a.repeats,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    OUT.mkdir(exist_ok=True)
    (OUT / "design_cli.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [f"# `design -n {WANT}` from the CLI, 8x8 MoS2, packaged model (default mode)", "",
             f"{meta['date']}; {meta['platform']}; 2 cores shared with other jobs, load average "
             f"{load0[0]:.1f} at the start and {meta['load_avg_end'][0]:.1f} at the end; wall time of a new process "
             f"(imports, model load, sampling, checks, arrangement populations, writing); median of {a.repeats}.", "",
             "| band | window | median s | runs (s) | goal | mode | returned | in window | inside the run (last, s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['band']} | {r['window']} | {r['median_s']} | {', '.join(map(str, r['seconds']))} | "
                     f"< {r['goal_s']:.0f} | {r['mode_used']} | {r['returned']} | {r.get('returned_in_window')} | {r['timings_s']} |")
    (OUT / "design_cli.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
