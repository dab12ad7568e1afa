"""Generation beyond enumeration: flow+decoder vs annealing vs flow-seeded annealing vs random search.

For each density band (8-12, 16-24 defects, 8x8 MoS2) and window, each method runs until it holds
50 distinct (up to symmetry) configurations whose *predicted mean* lies in the window (the packaged
model, best heads), or until its time cap, all in ONE run (same process, same load). Reported: wall
time to 50 (s), how many it found, diversity (mean pairwise embedding distance of the found set;
distinct compositions), and the share passing the design checks (``within_limits`` and
``p_in_window >= 0.5``: the model's std included; at high density every gap prediction is
unvalidated, std 0.58 eV, so gap windows rarely pass and the FE-only windows F1, F2 are there for
that). Then the CLI end to end: ``design -n 50`` per band in the default mode (wall time from the
shell, imports and model load included).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_anneal.py  # writes benchmarks/results/anneal.{json,md}

Methods:

- ``anneal``: :func:`invdesign.generate.anneal.anneal`, 64 chains from random configurations, seed 0;
- ``flow-anneal``: the same annealing, its chains started and restarted from high-density flow
  samples for the window (:func:`invdesign.generate.design.flow_seeds`; the flow is
  ``invdesign/resources/flow_hd.pt``, loaded once before the timings);
- ``random``: random configurations with defect counts uniform in the band, filtered by the model
  (same harvest rule);
- ``flow+decoder``: high-density flow samples for the window, each decoded by
  :func:`invdesign.generate.decoder.decode` (distinct, within the limits) and kept when its predicted
  mean is in the window (a decode running past the cap is interrupted).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's invdesign, not an installed one
sys.path.insert(0, str(OUT.parent))
from checked import run_checked  # noqa: E402

WINDOWS = {
    "W1 fe 1.0-1.2, gap 0.9-1.3 (issue)": ["formation_energy_per_site=1.0:1.2", "homo_lumo_gap=0.9:1.3"],
    "W2 fe 1.5-2.0, gap 0.2-0.6": ["formation_energy_per_site=1.5:2.0", "homo_lumo_gap=0.2:0.6"],
    "F1 fe 0.8-0.9 (FE only)": ["formation_energy_per_site=0.8:0.9"],
    "F2 fe 3.0-3.1 (FE only)": ["formation_energy_per_site=3.0:3.1"],
}
BANDS = [(8, 12), (16, 24)]
METHODS = ("anneal", "flow-anneal", "random", "flow+decoder")
WANT = 50
CAP_S = 60.0


def _diversity(model, occ: np.ndarray) -> dict:
    from invdesign.lattice.enumerate import compositions

    if len(occ) < 2:
        return {"mean_pairwise_z": None, "distinct_compositions": int(len(occ))}
    z = model.embed(occ)
    d = np.linalg.norm(z[:, None] - z[None], axis=2)
    iu = np.triu_indices(len(z), 1)
    comp = {tuple(c) for c in compositions(occ, model.host)}
    return {"mean_pairwise_z": round(float(d[iu].mean()), 3), "distinct_compositions": len(comp)}


def _checks(model, window, limits, occ, mean, std) -> float:
    from invdesign.generate.decoder import validate

    if not len(occ):
        return 0.0
    ok = validate(occ, model.host, limits) & (window.p_in(mean, std) >= 0.5)
    return round(float(ok.mean()), 3)


class _Cap(Exception):
    pass


def _flow_decode(model, hd, w, limits):
    """Flow samples decoded one by one until 50 distinct in-window configurations or the cap."""
    from invdesign.generate.decoder import decode

    host = model.host
    t0 = time.perf_counter()
    z, _, _ = hd.sample(host, w, limits, 20 * WANT, seed=0)
    occ, keys, mean, std = [], [], [], []
    decoded = 0

    def alarm(*_):
        raise _Cap

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, CAP_S)
    try:
        for i in range(len(z)):
            dec = decode(z[i : i + 1], model, limits, exclude=set(keys), distinct=True)
            decoded += 1
            m, s = model.predict(dec.occ)
            if w.hits(m)[0]:
                occ.append(dec.occ[0])
                keys.append(dec.keys[0])
                mean.append(m[0])
                std.append(s[0])
                if len(keys) >= WANT:
                    break
    except _Cap:
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    dt = time.perf_counter() - t0
    from invdesign.generate.anneal import AnnealResult

    n = host.n_sites
    res = AnnealResult(np.array(occ, dtype=np.uint8).reshape(-1, n), keys, np.array(mean).reshape(-1, 2),
                       np.array(std).reshape(-1, 2), evaluations=decoded, seconds=dt)
    return res, {"decoded": decoded, "s_per_decode": round(dt / max(decoded, 1), 2) if decoded else None}


def _cli(spec, lo, hi) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "-c", "import sys; from invdesign.cli import main; sys.exit(main())", "design",
                *sum((["--target", t] for t in spec), []), "-n", str(WANT),
                "--min-defects", str(lo), "--max-defects", str(hi), "--out", str(Path(tmp) / "o")]
        t = time.perf_counter()
        p = run_checked(args, what=f"CLI design {' '.join(args[4:])}", cwd=ROOT, timeout=600)  # non-zero exit: stops here
        dt = time.perf_counter() - t
        s = json.loads((Path(tmp) / "o" / "summary.json").read_text())
        c = s.get("counts", {})
        return {"seconds": round(dt, 1), "rc": p.returncode, "mode_used": s.get("request", {}).get("mode_used"),
                "returned": c.get("returned"), "returned_in_window": c.get("returned_in_window"),
                "timings_s": {k: round(v, 2) for k, v in (s.get("timings_s") or {}).items()},
                "error": None}


def _run(method, model, hd, w, limits):
    """One method on one band and window: (result, found in window, extra columns)."""
    from invdesign.generate.anneal import anneal
    from invdesign.generate.design import flow_seeds

    extra = {}
    if method == "anneal":
        res = anneal(model, w, limits, WANT, seed=0, max_steps=10**6, max_seconds=CAP_S)
        return res, res.stats["harvested_in_window"], extra
    if method == "flow-anneal":
        t = time.perf_counter()
        start, restart = flow_seeds(model, w, limits, seed=0)
        seed_s = time.perf_counter() - t
        extra["seeds_in_window"] = round(float(w.hits(model.predict(start)[0]).mean()), 3)
        res = anneal(model, w, limits, WANT, seed=0, max_steps=10**6, max_seconds=CAP_S - seed_s, start=start, restart=restart)
        res.seconds += seed_s
        extra["seed_s"] = round(seed_s, 2)
        return res, res.stats["harvested_in_window"], extra
    if method == "random":
        res = _random_capped(model, w, limits)
        return res, len(res.keys), extra
    res, extra = _flow_decode(model, hd, w, limits)
    return res, len(res.keys), extra


def main() -> None:
    import torch

    torch.set_num_threads(1)
    from invdesign.generate.anneal import _Moves
    from invdesign.generate.decoder import Limits
    from invdesign.generate.flow_hd import get_hd_flow
    from invdesign.generate.window import Window
    from invdesign.model import load_model

    model = load_model()
    host = model.host
    model.predict(host.host_code[None])  # host symmetry and tables built once, outside the timings
    t = time.perf_counter()
    hd = get_hd_flow(model)
    load_s = time.perf_counter() - t
    rows = []
    for lo, hi in BANDS:
        limits = Limits.make(host, hi, lo)
        rnd = _Moves(host, limits).random(np.random.default_rng(0), 64)
        for name, spec in WINDOWS.items():
            w = Window.parse(spec)
            for method in METHODS:
                t = time.perf_counter()
                res, found, extra = _run(method, model, hd, w, limits)
                dt = time.perf_counter() - t
                occ = res.occ[:found]
                row = {"band": f"{lo}-{hi}", "window": name, "method": method,
                       "seconds": round(dt, 1) if found >= WANT else None, "elapsed_s": round(dt, 1),
                       "found": int(found), "evaluations": int(res.evaluations), **extra,
                       **_diversity(model, occ),
                       "checks_pass_share": _checks(model, w, limits, occ, res.mean[:found], res.std[:found])}
                if method == "anneal":
                    row["seeds_in_window"] = round(float(w.hits(model.predict(rnd)[0]).mean()), 3)
                rows.append(row)
                print(json.dumps(row), flush=True)
    cli = []
    for lo, hi in BANDS:
        for wname in ("W2 fe 1.5-2.0, gap 0.2-0.6", "F2 fe 3.0-3.1 (FE only)"):
            r = {"band": f"{lo}-{hi}", "window": wname.split()[0], **_cli(WINDOWS[wname], lo, hi)}
            cli.append(r)
            print(json.dumps(r), flush=True)
    meta = {"platform": platform.platform(), "python": platform.python_version(), "torch_threads": 1,
            "omp": os.environ.get("OMP_NUM_THREADS"), "load_avg": os.getloadavg(), "want": WANT, "cap_s": CAP_S,
            "model": "packaged default_model.pt", "flow_hd": hd.report, "flow_hd_load_s": round(load_s, 2),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    summary = _summary(rows)
    OUT.mkdir(exist_ok=True)
    (OUT / "anneal.json").write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary, "cli": cli}, indent=1))
    lines = ["# Generation beyond enumeration (8-12 and 16-24 defects, 8x8 MoS2, packaged model)", "",
             f"Machine: {meta['platform']}, 1 torch thread, load average {meta['load_avg'][0]:.1f} on 2 shared cores "
             f"({meta['date']}); all rows in one run. Time to {WANT} distinct in-window (predicted mean in the window) "
             f"configurations; cap {CAP_S:.0f} s ('-' = not reached). Diversity on the found set. Checks: within limits "
             "and p_in_window >= 0.5 (gap std is 0.58 eV at these densities: gap windows rarely pass; F1, F2 are "
             f"FE-only). High-density flow: {hd.report.get('n_configurations')} configurations, "
             f"{hd.report.get('n_defects_range')} defects (benchmarks/fit_flow_hd.py), loaded in {load_s:.2f} s. "
             "seeds in window: share of the 64 start configurations whose prediction is already in the window "
             "(anneal: random starts; flow-anneal: flow samples).", "",
             "| band | window | method | time to 50 (s) | found | evaluations | mean pairwise z | compositions | pass checks | seeds in window |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ev = f"{r['evaluations']} decodes ({r.get('s_per_decode')} s each)" if r["method"] == "flow+decoder" else r["evaluations"]
        lines.append(f"| {r['band']} | {r['window']} | {r['method']} | {r.get('seconds') or '-'} | {r.get('found')} | {ev} | "
                     f"{r.get('mean_pairwise_z') or '-'} | {r.get('distinct_compositions', '-')} | {r.get('checks_pass_share', '-')} | "
                     f"{r.get('seeds_in_window', '-')} |")
    lines += ["", "## Summary: median time to 50 over the 8 band x window cells (a cell not reached counts as the cap)", "",
              "| method | median s | cells reached | wins (fastest cell) |", "|---|---|---|---|"]
    lines += [f"| {m} | {v['median_s']} | {v['reached']} / {v['cells']} | {v['wins']} |" for m, v in summary.items()]
    lines += ["", "## `design -n 50` from the CLI (default mode)", "",
              "| band | window | wall s | mode | returned | in window (p >= 0.5) | inside design() |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['band']} | {r['window']} | {r['seconds']} | {r['mode_used']} | {r['returned']} | {r['returned_in_window']} | "
              f"{r['timings_s'] or r['error']} |" for r in cli]
    lines += ["", "In window (p >= 0.5) is the design checks' p_in_window, which uses the std inflated for extrapolation "
              "(every configuration beyond the trained 1-3 defects is flagged) and the unvalidated gap's std: at these "
              "densities none reaches 0.5 in these windows; the harvest rule above uses the predicted mean."]
    (OUT / "anneal.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _summary(rows) -> dict:
    cells = {}
    for r in rows:
        cells.setdefault((r["band"], r["window"]), {})[r["method"]] = r["seconds"] if r["seconds"] is not None else CAP_S
    out = {}
    for m in METHODS:
        t = [c[m] for c in cells.values() if m in c]
        wins = sum(1 for c in cells.values() if min(c, key=c.get) == m and c[m] < CAP_S)
        out[m] = {"median_s": round(float(np.median(t)), 1), "reached": sum(v < CAP_S for v in t), "cells": len(t), "wins": wins}
    return out


def _random_capped(model, w, limits):
    """Random search in rounds of 256 until 50 are found or the cap is spent."""
    from invdesign.generate.anneal import AnnealResult, random_search

    t0 = time.perf_counter()
    occ, keys, mean, std, evals = [], [], [], [], 0
    seed = 0
    while len(keys) < WANT and time.perf_counter() - t0 < CAP_S:
        r = random_search(model, w, limits, WANT - len(keys), exclude=set(keys), seed=seed, batch=256, max_evaluations=256)
        occ += list(r.occ)
        keys += r.keys
        mean += list(r.mean)
        std += list(r.std)
        evals += r.evaluations
        seed += 1
    n = model.host.n_sites
    return AnnealResult(np.array(occ, dtype=np.uint8).reshape(-1, n), keys, np.array(mean).reshape(-1, 2),
                        np.array(std).reshape(-1, 2), evaluations=evals, seconds=time.perf_counter() - t0)


if __name__ == "__main__":
    main()
