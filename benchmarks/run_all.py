"""Regenerate the result files behind the README's headline table (``make bench``).

Runs, one after the other, the benchmarks that write the result files the README's "Headline results"
table names, each in a new process through :func:`checked.run_checked`: a benchmark that exits
non-zero stops the run at once (its log's tail is printed) and nothing after it runs, so a failed
benchmark never leaves a figure that looks regenerated. Each step's output goes to
``--logs/<step>.log``; a summary (exit status, wall time, load average) is printed at the end.

    python benchmarks/run_all.py --list                   # the steps, the files they write, their cost
    python benchmarks/run_all.py                          # every step (hours on a 2-core machine)
    python benchmarks/run_all.py --only design,campaign   # some of them

What a step does NOT redo is said in its ``note`` (``--list``): the CHGNet labels are read from
``benchmarks/results/chgnet/`` (labelling them again is ``run_chgnet_labels.sh``, hours of CHGNet);
``bench_hosts.py`` resumes from ``hosts.jsonl`` (a fold already there is not retrained: delete the
file to retrain every fold); the sparse-MEGNet peer's tables are rendered from its committed JSON lines
unless ``--with-peers`` trains it again (about 30 min per split on one thread).
Children run with ``OMP_NUM_THREADS=1`` unless it is set (the committed figures were measured so).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from checked import BenchmarkCommandFailed, run_checked  # noqa: E402


@dataclass(frozen=True)
class Step:
    name: str
    args: tuple[str, ...]  # the script (relative to benchmarks/) and its arguments
    writes: tuple[str, ...]  # result files (relative to benchmarks/results/) named in the README
    cost: str  # from the committed runs where they recorded it ("not recorded" otherwise)
    note: str = ""
    peer: bool = False  # only with --with-peers


STEPS: tuple[Step, ...] = (
    Step("embedding", ("bench_embedding.py",), ("seed_table.md", "embedding.md"), "~3 min (147 + 16 s)",
         "the seed's table (every head trained again) and the embedding checks over all 13,609 classes"),
    Step("gap", ("bench_gap.py", "--part", "all"), ("gap.md",), "not recorded",
         "5 random splits + a composition split + bounds; the peer's column is read from peer_megnetsparse.jsonl"),
    Step("design", ("bench_design.py",), ("design.md",), "not recorded",
         "pool precision, generator recall, CLI latency (each CLI run through run_checked)"),
    Step("campaign", ("bench_campaign.py",), ("campaign.md",), "not recorded",
         "8 windows vs random search, plus a small CHGNet-vs-DFT check"),
    Step("chgnet_delta", ("fit_chgnet_delta.py",), ("chgnet_delta.md",), "not recorded (fits only)",
         "fits and scores the correction on the committed CHGNet labels (results/chgnet/); no new CHGNet call"),
    Step("hosts", ("bench_hosts.py",), ("hosts.md",), "hours to retrain (70-548 s/fold)",
         "resumes from hosts.jsonl: folds already there are not retrained (delete it to retrain every fold)"),
    Step("hd_campaign_dft", ("bench_hd_campaign_dft.py",), ("hd_campaign_dft.md",), "~10 min (a host model per fold, ~1 min each, and 20 windows)",
         "campaigns replayed on the held-out high-density MoS2 folds with their DFT targets as the oracle"),
    Step("peer_hd_report", ("bench_peer_megnetsparse.py", "--report"), ("peer_megnetsparse_hd.md",), "< 1 s",
         "renders the table from the committed peer_megnetsparse_hd.jsonl (no training; --with-peers trains)"),
    Step("peer_low", ("bench_peer_megnetsparse.py", "--target", "homo_lumo_gap", "--variant", "slow_decay"),
         ("peer_megnetsparse.jsonl",), "~30 min per split", "the peer on our 5 low-density splits (gap.md's peer column; appends new lines)",
         peer=True),
    Step("peer_hd", ("bench_peer_megnetsparse.py", "--data", "mos2-high", "--cv-folds", "5",
                     "--target", "formation_energy_per_site", "homo_lumo_gap", "--variant", "slow_decay"),
         ("peer_megnetsparse_hd.jsonl",), "hours", "the peer on bench_hosts.py's MoS2 high-density folds (folds already in the jsonl are skipped)",
         peer=True),
)


def selected(only: str | None, with_peers: bool) -> list[Step]:
    steps = [s for s in STEPS if with_peers or not s.peer]
    if with_peers:  # train the peers first, then render their tables and the gap report from the new lines
        steps = [s for s in steps if s.peer] + [s for s in steps if not s.peer]
    if only:
        want = [w.strip() for w in only.split(",") if w.strip()]
        unknown = sorted(set(want) - {s.name for s in STEPS})
        if unknown:
            raise SystemExit(f"run_all: unknown step(s) {', '.join(unknown)}; steps: {', '.join(s.name for s in STEPS)}")
        steps = [s for s in STEPS if s.name in want]
    return steps


def run_step(step: Step, logs: Path, env: dict[str, str]) -> dict:
    """Run one step through ``run_checked`` with its output in ``logs/<name>.log``; a non-zero exit raises."""
    log = logs / f"{step.name}.log"
    cmd = [sys.executable, str(HERE / step.args[0]), *step.args[1:]]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            run_checked(cmd, what=f"{step.name} ({' '.join(step.args)})", cwd=ROOT, env=env,
                        capture_output=False, stdout=fh, stderr=subprocess.STDOUT)
        except BenchmarkCommandFailed:
            fh.flush()
            tail = log.read_text(errors="replace").strip().splitlines()[-25:]
            print(f"run_all: {step.name} failed; the end of {log}:\n" + "\n".join(tail), file=sys.stderr, flush=True)
            raise
    return {"step": step.name, "rc": 0, "seconds": round(time.perf_counter() - t0, 1),
            "load_start": round(load0, 1), "load_end": round(os.getloadavg()[0], 1), "log": str(log)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="print the steps and exit")
    ap.add_argument("--only", help="comma-separated step names (see --list)")
    ap.add_argument("--with-peers", action="store_true", help="also train the sparse-MEGNet peer (hours)")
    ap.add_argument("--logs", default="/tmp/invdesign-bench-logs", help="folder for one log per step")
    a = ap.parse_args(argv)
    steps = selected(a.only, a.with_peers)
    if a.list:
        for s in STEPS:
            print(f"{s.name:15s} {' '.join(s.args):60s} -> {', '.join(s.writes):40s} {s.cost:22s} "
                  f"{s.note}{' [--with-peers]' if s.peer else ''}")
        return 0
    logs = Path(a.logs)
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    done = []
    for s in steps:
        print(f"run_all: {s.name}: {' '.join(s.args)} ({s.cost}; log {logs / (s.name + '.log')})", flush=True)
        done.append(run_step(s, logs, env))  # a failure raises BenchmarkCommandFailed: exit 1, nothing after it runs
        print(f"run_all: {s.name}: exit 0 in {done[-1]['seconds']} s -> {', '.join(s.writes)}", flush=True)
    print("\n| step | exit | wall s | load start / end | writes |\n|---|---|---|---|---|")
    for r, s in zip(done, steps):
        print(f"| {r['step']} | {r['rc']} | {r['seconds']} | {r['load_start']} / {r['load_end']} | {', '.join(s.writes)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
