"""Issue 14 figures: how fast bad input fails, and what the extrapolation inflation does to a ranking.

- time from ``invdesign embed missing_dir/`` to its one-line error, against the packaged model's load time;
- the README window (``formation_energy_per_site=1.0:1.2``, ``homo_lumo_gap=0.9:1.3``), exhaustive mode,
  packaged model: among the top 50 by the old rule (model std) and the new rule (std inflated in quadrature by
  the training spread for extrapolation-flagged candidates), how many are flagged and their ``p_in_window``.

Writes ``benchmarks/results/issue14.json`` and ``.md``. Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_issue14.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results"


def fail_fast() -> dict:
    env = {**os.environ, "INVDESIGN_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    code = "import sys; from invdesign.cli import main; sys.exit(main(sys.argv[1:]))"
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, "embed", "missing_dir/", "--out", "z.csv"], cwd="/tmp", env=env,
                       capture_output=True, text=True)
    fail_s = time.perf_counter() - t
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import invdesign.model as m; m.load_model(None)"], env=env, check=True)
    load_s = time.perf_counter() - t
    probe = ("import sys, time, json; t = time.perf_counter(); import invdesign.cli as c; t1 = time.perf_counter(); "
             "rc = c.main(['embed', 'missing_dir/', '--out', 'z.csv']); t2 = time.perf_counter(); "
             "import invdesign.model as m; m.load_model(None); t3 = time.perf_counter(); "
             "print(json.dumps({'cli_import_s': t1 - t, 'check_s': t2 - t1, 'model_load_s': t3 - t2, 'torch_before_check': 'torch' in sys.modules}))")
    r2 = subprocess.run([sys.executable, "-c", probe], cwd="/tmp", env={**env, "PYTHONPATH": str(ROOT)},
                        capture_output=True, text=True, check=True)
    inproc = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in json.loads(r2.stdout.strip().splitlines()[-1]).items()}
    return {"embed_missing_dir_s": round(fail_s, 2), "exit": r.returncode, "stderr": r.stderr.strip(),
            "python_plus_model_load_s": round(load_s, 2), "in_process": inproc}


def ranking() -> dict:
    from invdesign.generate.checks import EXTRAPOLATION_POLICY
    from invdesign.generate.design import design

    w = {"formation_energy_per_site": (1.0, 1.2), "homo_lumo_gap": (0.9, 1.3)}
    res = design(w, 50, mode="exhaustive", diversity=0.0)
    c = res.candidates
    return {
        "window": w, "n": 50, "policy": EXTRAPOLATION_POLICY,
        "flagged_in_top50_new": int(c["extrapolation"].sum()),
        "p_in_window_flagged_new": [round(float(x), 3) for x in c.loc[c["extrapolation"], "p_in_window"]],
        "reasons_new": sorted(set(c.loc[c["extrapolation"], "extrapolation_reason"]))[:5],
        "orbits_screened": res.summary["counts"].get("orbits_screened"),
        "checked": res.summary["counts"].get("checked"),
        "flagged_among_checked": None,
        "_table": c,
    }


def old_rule(r: dict) -> None:
    """Top 50 under the old rule (p from the model's std) among the same checked candidates."""
    from invdesign.generate.checks import check_candidates
    from invdesign.generate.decoder import Limits
    from invdesign.generate.design import orbit_index, orbit_predictions
    from invdesign.generate.window import Window
    from invdesign.model import load_model

    m = load_model(None)
    w = Window.from_dict(r["window"])
    lim = Limits.make(m.host, 3, 1, None)
    idx = orbit_index(m, lim)
    rows = np.flatnonzero(idx.mask(lim, set()))
    mean, std = orbit_predictions(m, idx)
    p_old = w.p_in(mean[rows], std[rows])
    top = rows[np.argsort(-p_old, kind="stable")[:2000]]
    t = check_candidates(idx.occ[top], m, w, lim, z=idx.z[top], prediction=(mean[top], std[top]))
    old = np.argsort(-w.p_in(mean[top], std[top]), kind="stable")[:50]
    r["flagged_among_checked"] = int(t["extrapolation"].sum())
    r["flagged_in_top50_old"] = int(t["extrapolation"].to_numpy()[old].sum())
    r["p_in_window_flagged_old"] = [round(float(x), 3) for x in w.p_in(mean[top], std[top])[old][t["extrapolation"].to_numpy()[old]]]


def main() -> None:
    import torch

    torch.set_num_threads(1)
    ff = fail_fast()
    r = ranking()
    old_rule(r)
    r.pop("_table")
    out = {"fail_fast": ff, "ranking": r}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "issue14.json").write_text(json.dumps(out, indent=2) + "\n")
    md = [
        "# Issue 14 figures (packaged model, 2-core shared CPU)",
        "",
        "| what | value |",
        "|---|---|",
        f"| `embed missing_dir/` as a subprocess, wall (noisy: shared machine) | {ff['embed_missing_dir_s']} s, exit {ff['exit']} |",
        f"| in one process: CLI import / the check to the error / the model load it no longer waits for | "
        f"{ff['in_process']['cli_import_s']} / {ff['in_process']['check_s']} / {ff['in_process']['model_load_s']} s |",
        f"| README window, exhaustive, -n 50: orbits screened / checked in full | {r['orbits_screened']} / {r['checked']} |",
        f"| extrapolation-flagged among the checked | {r['flagged_among_checked']} |",
        f"| flagged in the top 50, old rule (model std) | {r['flagged_in_top50_old']} (p_in_window {r['p_in_window_flagged_old'][:6]}) |",
        f"| flagged in the top 50, new rule (inflated std) | {r['flagged_in_top50_new']} (p_in_window {r['p_in_window_flagged_new'][:6]}) |",
        "",
        f"Policy: {r['policy']}.",
        "",
    ]
    (OUT / "issue14.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
