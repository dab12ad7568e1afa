"""The fixed toll of small CLI jobs: wall time of a fresh process per command, median of 3.

    OMP_NUM_THREADS=1 python benchmarks/bench_toll.py [--repeat 3] [--before REV]   # -> benchmarks/results/toll.{json,md}

Commands (each run in a new Python process, ``python -c "from invdesign.cli import main; ..."``
from the repository root, so this checkout is measured): ``--help``, ``--version``, ``predict`` on
10 structures of the 2DMD share (CIFs from ``initial.tar.gz``), ``design -n 10`` (1-3 defects).

``predict`` three ways, in the same run:
  * fast, warm: the serving cache exists (every run after the first for a model file);
  * fast, first: an empty cache folder each time (the first run after installing or retraining:
    loads the full model once and writes the cache);
  * full model: ``INVDESIGN_FAST_PREDICT=0`` (the path before the serving cache: torch, the whole
    model file, scikit-learn's compiled trees).
Outputs of the three are compared byte for byte. ``--help`` also with typer's rich help renderer
(the app's setting before; same code otherwise). ``--before REV`` (default ``4471d0b``, the code
before this work) also runs ``--help``, ``--version``, ``predict`` and ``design`` from ``git archive
REV`` unpacked in a temporary folder (nothing in the repository is touched), in the same run. Wall and CPU seconds of the child process; the
load average is recorded because the machine is shared. ``-X importtime`` of predict (fast and
full) gives the import cost by top-level package.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checked import run_checked  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
RUN = "import sys; from invdesign.cli import main; sys.exit(main())"
RICH = "import sys, invdesign.cli as c; c.app.rich_markup_mode = 'rich'; sys.exit(c.main())"
PACKAGES = ("torch", "sklearn", "scipy", "pandas", "pymatgen", "typer", "pydantic", "rich", "numpy")


def share() -> Path:
    p = Path(os.environ.get("INVDESIGN_SHARED", ROOT.parent / "shared")) / "data" / "2dmd-mos2-low"
    if not (p / "initial.tar.gz").is_file():
        sys.exit(f"bench_toll: the 2DMD share is not at {p} (set INVDESIGN_SHARED)")
    return p


def ten_structures(dest: Path) -> Path:
    """The first 10 CIFs of the share's initial.tar.gz, as a user would pass them."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(share() / "initial.tar.gz") as tf:
        n = 0
        for member in tf:
            if member.isfile() and member.name.endswith(".cif"):
                (dest / Path(member.name).name).write_bytes(tf.extractfile(member).read())
                n += 1
                if n == 10:
                    break
    return dest


def timed(code: str, args: list[str], env: dict, cwd: Path = ROOT) -> dict:
    """One fresh process: wall seconds, child CPU seconds."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    run_checked([sys.executable, "-c", code, *args], what=f"bench_toll: {' '.join(args)}", cwd=cwd, env=env)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": wall, "cpu": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)}


def importtime(args: list[str], env: dict, cwd: Path = ROOT) -> dict:
    """Import seconds spent in each package's own modules in one run (``-X importtime`` self times, summed)."""
    p = run_checked([sys.executable, "-X", "importtime", "-c", RUN, *args], what=f"-X importtime {' '.join(args)}", cwd=cwd, env=env)
    out: dict[str, float] = {}
    for line in p.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \| \s*(\S+)$", line)
        if m and m.group(2).split(".")[0] in PACKAGES:
            root = m.group(2).split(".")[0]
            out[root] = out.get(root, 0.0) + int(m.group(1)) / 1e6
    return {k: round(v, 3) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def unpack(rev: str, dest: Path) -> Path:
    """``git archive rev`` (the package and its resources) unpacked in ``dest``."""
    dest.mkdir(parents=True)
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "invdesign"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--before", default="4471d0b", help="git revision of the 'before' rows ('' to skip)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_toll_"))
    try:
        src = ten_structures(work / "s10")
        warm_cache = work / "cache"
        base = {**os.environ, "OMP_NUM_THREADS": "1", "INVDESIGN_PROGRESS": "0", "INVDESIGN_CACHE_DIR": str(warm_cache), "COLUMNS": "100"}
        base.pop("INVDESIGN_FAST_PREDICT", None)
        fresh = {"n": 0}

        def predict_args(tag: str) -> list[str]:
            return ["predict", str(src), "--out", str(work / f"pred_{tag}.csv"), "--overwrite"]

        def first_env() -> dict:
            fresh["n"] += 1
            return {**base, "INVDESIGN_CACHE_DIR": str(work / f"fresh{fresh['n']}")}

        design = ["design", "--target", "formation_energy_per_site=1.0:1.2", "--target", "homo_lumo_gap=0.9:1.3", "-n", "10",
                  "--out", str(work / "design"), "--overwrite"]
        cases: list[tuple[str, str, list[str], object]] = [
            ("python -c pass (interpreter start)", "pass", [], lambda: base),
            ("--help", RUN, ["--help"], lambda: base),
            ("--help, rich help renderer (before)", RICH, ["--help"], lambda: base),
            ("--version", RUN, ["--version"], lambda: base),
            ("predict 10 structures, fast, warm cache", RUN, predict_args("fast"), lambda: base),
            ("predict 10 structures, fast, first run (empty cache)", RUN, predict_args("first"), first_env),
            ("predict 10 structures, full model (before; INVDESIGN_FAST_PREDICT=0)", RUN, predict_args("full"),
             lambda: {**base, "INVDESIGN_FAST_PREDICT": "0"}),
            ("design -n 10 (1-3 defects), warm cache", RUN, design, lambda: base),
        ]
        cwd = {name: ROOT for name, *_ in cases}
        old = unpack(a.before, work / "before") if a.before else None
        if old is not None:
            for name, args in (("--help", ["--help"]), ("--version", ["--version"]), ("predict 10 structures", predict_args("before")),
                               ("design -n 10 (1-3 defects), warm cache", design)):
                cases.append((f"{name} [before: {a.before}]", RUN, args, lambda: base))
                cwd[cases[-1][0]] = old
        # warm the caches once (serving cache, orbit table), untimed
        for tree in {ROOT, old} - {None}:
            for args in (predict_args("fast"), design):
                subprocess.run([sys.executable, "-c", RUN, *args], cwd=tree, env=base, capture_output=True, check=True)
        load0 = os.getloadavg()
        rows = []
        for name, code, args, env_of in cases:
            runs = [timed(code, args, env_of(), cwd=cwd[name]) for _ in range(a.repeat)]
            row = {"command": name, "wall_s": [round(r["wall"], 3) for r in runs], "cpu_s": [round(r["cpu"], 3) for r in runs],
                   "median_wall_s": round(statistics.median(r["wall"] for r in runs), 3),
                   "median_cpu_s": round(statistics.median(r["cpu"] for r in runs), 3)}
            rows.append(row)
            print(f"{name:72s} {row['median_wall_s']:6.2f} s wall  {row['median_cpu_s']:6.2f} s cpu", flush=True)
        load1 = os.getloadavg()
        tags = ("fast", "first", "full", *(("before",) if old is not None else ()))
        same = len({(work / f"pred_{t}.csv").read_bytes() for t in tags}) == 1
        imports = {"predict, fast (warm cache)": importtime(predict_args("fast"), base),
                   "predict, full model (INVDESIGN_FAST_PREDICT=0)": importtime(predict_args("full"), {**base, "INVDESIGN_FAST_PREDICT": "0"}),
                   "--help": importtime(["--help"], base)}
        if old is not None:
            imports[f"predict [before: {a.before}]"] = importtime(predict_args("before"), base, old)
            imports[f"--help [before: {a.before}]"] = importtime(["--help"], base, old)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = {
        "benchmark": "toll",
        "repeat": a.repeat,
        "rows": rows,
        "before_revision": a.before or None,
        "predict_outputs_identical": same,
        "import_s": imports,
        "load_average_start_end": [round(load0[0], 2), round(load1[0], 2)],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "toll.json").write_text(json.dumps(res, indent=2) + "\n")
    md = [
        "# The fixed toll: fresh-process CLI wall time",
        "",
        f"`OMP_NUM_THREADS=1 python benchmarks/bench_toll.py` on {os.cpu_count()} shared cores (load average "
        f"{load0[0]:.1f} at the start, {load1[0]:.1f} at the end), {res['date']}. Each command is a new Python "
        f"process; median of {a.repeat} (all runs in the JSON). CPU = user + system seconds of the child.",
        "",
        "| command | median wall (s) | median CPU (s) | runs, wall (s) |",
        "|---|---|---|---|",
        *(f"| {r['command']} | {r['median_wall_s']:.2f} | {r['median_cpu_s']:.2f} | {', '.join(f'{w:.2f}' for w in r['wall_s'])} |" for r in rows),
        "",
        f"predict CSVs of the {len(tags)} paths ({', '.join(tags)}) identical byte for byte: **{same}**.",
        "",
        "Import seconds spent in each package's own modules (`-X importtime` self times summed, one run each):",
        "",
        "| run | " + " | ".join(PACKAGES) + " |",
        "|---|" + "---|" * len(PACKAGES),
        *(f"| {k} | " + " | ".join(f"{v[p]:.2f}" if p in v else "-" for p in PACKAGES) + " |" for k, v in imports.items()),
        "",
    ]
    (OUT / "toll.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
