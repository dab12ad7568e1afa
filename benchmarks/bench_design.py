"""Inverse-design benchmark: decoder round trip, flow likelihood, pool precision, generator recall, latency.

Run from the repository root::

    python benchmarks/bench_design.py                  # packaged model (flow attached by `invdesign train`)
    python benchmarks/bench_design.py --model M.pt     # another model (must carry a flow)
    python benchmarks/bench_design.py --quick          # fewer windows (says so in the table)
    python benchmarks/bench_design.py --refit-flow     # fit the flow afresh (current defaults) instead of the model's
    python benchmarks/bench_design.py --part latency   # rerun the latency rows only (~2 min), merged into design.json

Everything held out is the share's **test split** (``split_indices(ids, seed=0)["test"]``), which
no model, flow or decoder saw in training. In one run:

- **round trip**: ``decode(embed(c))`` vs ``c`` (canonical keys) on the test split, and on every
  one of the 13,609 enumerated 1-3-defect orbits;
- **flow**: held-out log-likelihood ``log p(z | y, composition)`` on the test split (nats per configuration)
  against a Gaussian fitted to the training embeddings (unconditional peer); and how well
  conditional samples match their window: windows of 0.2 eV x 0.2 eV around test configurations,
  200 flow samples each, decoded; the fraction whose predicted properties fall in the window,
  against the fraction of all enumerated orbits in it (what uninformed sampling would give);
- **pool precision@5**: narrow windows (30 meV formation energy per site x 60 meV gap) centred on
  the DFT values of random test configurations; the test split is the pool; ``design --pool``
  ranks it; precision = fraction of the top 5 whose DFT values lie in the window; random picks
  hit ``K / N`` (K pool members in the window);
- **generated mode**: 50 requested -> valid, distinct-up-to-symmetry candidates;
- **recall vs exhaustive**: the exhaustive screen's in-window set (``p_in_window >= 0.5``) as ground
  truth; flow + decoder with 10x its size in samples, on 0.1 x 0.1 eV windows whose set is small
  enough (<= 1/20 of the space) that 10x samples cannot simply cover the whole space; the design
  pipeline's decoder (best ``p_in_window`` of the 8 nearest free orbits) and the flow alone
  (nearest free orbit), same samples;
- **latency**: 100 checked candidates from the flow (cold: empty cache; warm: orbit table cached)
  with the exhaustive screen's time beside it, in process and through the CLI.

Writes ``benchmarks/results/design.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checked import run_checked  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARE = Path(os.environ.get("INVDESIGN_SHARED", ROOT.parent / "shared")) / "data" / "2dmd-mos2-low"
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)
os.environ.setdefault("INVDESIGN_PROGRESS", "0")


def latency(model, w_lat, args) -> dict:
    """100 checked candidates for ``w_lat``: in process (flow cold, flow warm, exhaustive) and through the CLI in a
    new process (flow, exhaustive; each into its own new folder, a non-zero exit stops the benchmark)."""
    from invdesign.data.dataset import TARGETS
    from invdesign.generate.design import design

    t = time.perf_counter()
    r = design(w_lat, 100, model=model, mode="flow", seed=args.seed)
    lat: dict = {}
    lat["flow_100_cold_s"] = time.perf_counter() - t
    lat["flow_100_cold_breakdown_s"] = r.summary["timings_s"]
    t = time.perf_counter()
    r = design(w_lat, 100, model=model, mode="flow", seed=args.seed + 1)
    lat["flow_100_warm_s"] = time.perf_counter() - t
    lat["flow_100_warm_breakdown_s"] = r.summary["timings_s"]
    lat["flow_100_returned"] = len(r.candidates)
    t = time.perf_counter()
    r = design(w_lat, 100, model=model, mode="exhaustive")
    lat["exhaustive_100_s"] = time.perf_counter() - t
    lat["exhaustive_breakdown_s"] = r.summary["timings_s"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        # each run into its own new folder (a filled one is refused, exit 2); the exhaustive run twice: the first in
        # this run's cache folder loads the full model and writes its numpy copy, the second is every later run
        for mode, key in (("flow", "cli_flow_100_warm_cache_s"), ("exhaustive", "cli_exhaustive_100_first_s"),
                          ("exhaustive", "cli_exhaustive_100_warm_cache_s")):
            cmd = [sys.executable, "-m", "invdesign.cli", "design", "--target", f"{TARGETS[0]}={w_lat.lo[0]}:{w_lat.hi[0]}",
                   "--target", f"{TARGETS[1]}={w_lat.lo[1]}:{w_lat.hi[1]}", "-n", "100", "--out", f"{tmp}/run_{key}",
                   "--mode", mode]
            if args.model:
                cmd += ["--model", str(args.model)]
            t = time.perf_counter()
            run_checked(cmd, what=f"CLI design -n 100 --mode {mode}", env=env, cwd=ROOT)  # exits non-zero: no figure
            lat[key] = time.perf_counter() - t
        lat["cli_ok"] = True
    return lat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model file (default: packaged)")
    ap.add_argument("--quick", action="store_true", help="fewer windows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refit-flow", action="store_true", help="fit the flow in this run (default config) even if the model carries one")
    ap.add_argument("--render", action="store_true", help="only rewrite the markdown from results/design.json")
    ap.add_argument("--part", choices=["all", "latency"], default="all",
                    help="latency: rerun only the latency rows (in process and CLI) and merge them into results/design.json")
    args = ap.parse_args()
    if args.render:
        md = render(json.loads((RESULTS / "design.json").read_text()))
        (RESULTS / "design.md").write_text(md)
        print(md)
        return 0

    cold_cache = tempfile.mkdtemp(prefix="invdesign-bench-cache-")
    os.environ["INVDESIGN_CACHE_DIR"] = cold_cache  # every cached table is built in this run

    from invdesign.data.dataset import TARGETS, load_2dmd, split_indices
    from invdesign.generate.decoder import Limits, decode, orbit_index
    from invdesign.generate.design import design, generator_recall, screen
    from invdesign.generate.flow import get_flow
    from invdesign.generate.window import Window
    from invdesign.model import default_model_path, load_model

    rng = np.random.default_rng(args.seed)
    res: dict = {"quick": args.quick, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                   "torch_threads": torch.get_num_threads()}}
    ds = load_2dmd(SHARE)
    sp = split_indices(ds.ids, seed=0)
    te = sp["test"]
    test = ds.subset(te)
    y_te = test.y(TARGETS)
    t = time.perf_counter()
    model = load_model(args.model)
    res["model"] = {"path": str(args.model or default_model_path()), "version": model.meta.get("version"),
                    "split_seed": model.meta.get("split", {}).get("seed"), "load_s": round(time.perf_counter() - t, 3)}
    if model.meta.get("split", {}).get("seed", 0) != 0:
        raise SystemExit("the model was trained on another split; its test split is not held out here")
    if "flow" not in model.extras or args.refit_flow:  # a model trained before `invdesign train` attached the flow
        from invdesign.generate.flow import attach_flow

        t = time.perf_counter()
        attach_flow(model, ds, seed=0)
        res["model"]["flow_attached_in_run_s"] = round(time.perf_counter() - t, 1)
        res["model"]["flow_refit_requested"] = bool(args.refit_flow)
    flow = get_flow(model)
    host = model.host
    limits = Limits.make(host)

    # ------------------------------------------------------------------ latency (cold first: empty cache)
    w_lat = Window.from_dict({TARGETS[0]: (float(y_te[0, 0]) - 0.1, float(y_te[0, 0]) + 0.1),
                              TARGETS[1]: (float(y_te[0, 1]) - 0.1, float(y_te[0, 1]) + 0.1)})
    load0 = os.getloadavg()[0]
    res["latency"] = latency(model, w_lat, args)
    if args.part == "latency":  # the other rows stay those of the last full run; the table says so
        full = json.loads((RESULTS / "design.json").read_text())
        load = os.getloadavg()
        full["latency"] = {**res["latency"], "rerun": {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_avg": [round(load0, 1), round(load[0], 1)],
            "model": res["model"]["path"], "command": "python benchmarks/bench_design.py --part latency"}}
        (RESULTS / "design.json").write_text(json.dumps(full, indent=2, default=float) + "\n")
        md = render(full)
        (RESULTS / "design.md").write_text(md)
        print(md)
        return 0

    # ------------------------------------------------------------------ round trip
    z_te = model.embed(test.occ)
    t = time.perf_counter()
    dec = decode(z_te, model)
    rt = {"test_configurations": len(te), "test_equal": int(sum(a == b for a, b in zip(dec.keys, test.keys))),
          "decode_s": round(time.perf_counter() - t, 3)}
    rt["test_fraction"] = rt["test_equal"] / len(te)
    idx = orbit_index(model, limits)
    dec_all = decode(idx.z, model)
    rt["orbits"] = len(idx)
    rt["orbits_equal"] = int(sum(a == b for a, b in zip(dec_all.keys, idx.keys)))
    rt["orbits_fraction"] = rt["orbits_equal"] / len(idx)
    from invdesign.embed.train import nearest_other

    _, dmin = nearest_other(idx.z)
    rt["min_orbit_separation"] = float(dmin.min())
    rt["median_orbit_separation"] = float(np.median(dmin))
    res["round_trip"] = rt

    # ------------------------------------------------------------------ flow likelihood and conditional match
    from invdesign.lattice.enumerate import compositions

    lp = flow.log_prob(z_te, y_te, compositions(test.occ, host))
    z_tr = model.embed(model.train_occ)
    mu, cov = z_tr.mean(0), np.cov(z_tr.T) + 1e-9 * np.eye(z_tr.shape[1])
    diff = z_te - mu
    sign, logdet = np.linalg.slogdet(cov)
    g = -0.5 * (np.einsum("ij,jk,ik->i", diff, np.linalg.inv(cov), diff) + logdet + z_tr.shape[1] * np.log(2 * np.pi))
    fl = {"test_nll": float(-lp.mean()), "gaussian_test_nll": float(-g.mean()), "units": "nats per configuration",
          "train_report": flow.report}
    n_win = 5 if args.quick else 12
    pick = rng.choice(len(te), n_win, replace=False)
    _, rows, mean_all, std_all, _ = screen(model, Window.from_dict({TARGETS[0]: (-1000.0, 1000.0)}), limits)  # every configuration (the bound limit)
    inside_s, inside_base = [], []
    for i in pick:
        c = y_te[i]
        w = Window.from_dict({TARGETS[0]: (c[0] - 0.1, c[0] + 0.1), TARGETS[1]: (c[1] - 0.1, c[1] + 0.1)})
        zs, _, _ = flow.sample_window(w.array, 200, None, seed=int(i))
        occ = decode(zs, model, limits).occ
        m, _ = model.predict(occ)
        inside_s.append(float((w.distance(m) == 0).mean()))
        inside_base.append(float((w.distance(mean_all) == 0).mean()))
    fl["conditional_windows"] = n_win
    fl["samples_in_window_fraction"] = float(np.mean(inside_s))
    fl["orbits_in_window_fraction"] = float(np.mean(inside_base))
    res["flow"] = fl

    # ------------------------------------------------------------------ pool precision@5
    n_pool_win = 40 if args.quick else 200
    centers = rng.choice(len(te), n_pool_win, replace=False)
    precs, precs_div, rand, ks = [], [], [], []
    t = time.perf_counter()
    for i in centers:
        c = y_te[i]
        wd = {TARGETS[0]: (c[0] - 0.015, c[0] + 0.015), TARGETS[1]: (c[1] - 0.030, c[1] + 0.030)}
        w = Window.from_dict(wd)
        truth = w.distance(y_te) == 0
        ks.append(int(truth.sum()))
        rand.append(truth.mean())
        for div, acc in ((0.0, precs), (0.05, precs_div)):
            r = design(wd, 5, model=model, pool=test, diversity=div)
            pos = {k: j for j, k in enumerate(test.ids)}
            top = [pos[i_] for i_ in r.candidates["id"]]
            acc.append(float(truth[top].mean()))
    pool_s = (time.perf_counter() - t) / (2 * n_pool_win)
    ks = np.array(ks)
    res["pool"] = {
        "windows": n_pool_win, "pool": len(te), "window_eV": [0.030, 0.060],
        "precision_at_5": float(np.mean(precs_div)), "precision_at_5_no_diversity": float(np.mean(precs)),
        "random_precision": float(np.mean(rand)),
        "windows_with_5_or_more": int((ks >= 5).sum()),
        "precision_at_5_on_those": float(np.mean(np.array(precs_div)[ks >= 5])) if (ks >= 5).any() else None,
        "best_possible_precision_at_5": float(np.mean(np.minimum(ks, 5) / 5)),
        "median_pool_members_in_window": float(np.median(ks)),
        "seconds_per_ranking": round(pool_s, 4),
    }

    # ------------------------------------------------------------------ generated mode and recall
    n_gen = 3 if args.quick else 6
    n_rec = 5 if args.quick else 20
    gen, recs, skipped = [], [], 0
    for i in rng.permutation(len(te)):
        if len(recs) >= n_rec:
            break
        c = y_te[i]
        wd = {TARGETS[0]: (c[0] - 0.05, c[0] + 0.05), TARGETS[1]: (c[1] - 0.05, c[1] + 0.05)}
        _, _, _, _, p = screen(model, Window.from_dict(wd), limits)
        n_in = int((p >= 0.5).sum())
        if not 10 <= n_in <= len(p) // 20:  # 10x the set must stay well below the space, or recall is trivial
            skipped += 1
            continue
        rec = generator_recall(model, Window.from_dict(wd), limits, factor=10, seed=int(i))
        rec["window"] = wd
        alone = generator_recall(model, Window.from_dict(wd), limits, factor=10, seed=int(i), k_prefer=1)
        rec["recall_flow_alone"] = alone["recall"]
        rec["hits_flow_alone"] = alone["hits"]
        recs.append(rec)
        if len(gen) >= n_gen:
            continue
        t = time.perf_counter()
        r = design(wd, 50, model=model, mode="flow", seed=int(i))
        cand = r.candidates
        gen.append({"window": wd, "returned": len(cand), "valid": int(cand["within_limits"].sum()),
                    "distinct": int(cand["canonical_key"].nunique()), "in_window": int((cand["p_in_window"] >= 0.5).sum()),
                    "novel": int(cand["novel"].sum()), "seconds": round(time.perf_counter() - t, 3)})
    res["recall_windows_skipped"] = skipped
    res["generated"] = gen
    res["recall"] = recs
    valid_recs = [r["recall"] for r in recs if r["in_window"] > 0]
    res["recall_mean"] = float(np.mean(valid_recs)) if valid_recs else None
    res["recall_min"] = float(np.min(valid_recs)) if valid_recs else None
    alone = [r["recall_flow_alone"] for r in recs if r["in_window"] > 0]
    res["recall_flow_alone_mean"] = float(np.mean(alone)) if alone else None
    res["recall_flow_alone_min"] = float(np.min(alone)) if alone else None
    res["recall_windows_at_or_above_0_95"] = int(sum(r >= 0.95 for r in valid_recs))
    seen = [r["recall_trained_compositions"] for r in recs if r["in_window_trained_compositions"] > 0]
    res["recall_trained_compositions_mean"] = float(np.mean(seen)) if seen else None

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "design.json").write_text(json.dumps(res, indent=2, default=float) + "\n")
    md = render(res)
    (RESULTS / "design.md").write_text(md)
    print(md)
    return 0


def render(res: dict) -> str:
    rt, fl, pool, lat = res["round_trip"], res["flow"], res["pool"], res["latency"]
    q = " (--quick)" if res["quick"] else ""
    gen = res["generated"]
    valid_distinct = ", ".join(f"{g['valid']}/{g['distinct']}" for g in gen)
    attached = res["model"].get("flow_attached_in_run_s")
    why = "The flow was refitted in this run (--refit-flow)" if res["model"].get("flow_refit_requested") else "The model file carried no flow: one was fitted in this run"
    fitted_on = res["flow"]["train_report"].get("train_set", "TRAIN split, DFT targets")
    note = f" {why} ({attached} s, default config, seed 0; fitted on: {fitted_on})." if attached else ""
    lines = [
        f"# Inverse design benchmark{q}",
        "",
        f"Model: `{res['model']['path']}` (version {res['model']['version']}).{note} Held-out = share test split "
        f"({rt['test_configurations']} configurations); {res['machine']['cpus']} CPUs, torch threads {res['machine']['torch_threads']}.",
        "",
        "| measure | result | goal / peer |",
        "|---|---|---|",
        f"| round trip decode(embed(c)) == c, test split | {rt['test_equal']}/{rt['test_configurations']} = {rt['test_fraction']:.4f} | >= 0.999 |",
        f"| round trip, all enumerated 1-3-defect orbits | {rt['orbits_equal']}/{rt['orbits']} = {rt['orbits_fraction']:.4f} | min separation {rt['min_orbit_separation']:.2e} |",
        f"| flow held-out NLL (nats/config) | {fl['test_nll']:.2f} | Gaussian on train z: {fl['gaussian_test_nll']:.2f} |",
        f"| decoded flow samples with prediction in a 0.2x0.2 eV window | {fl['samples_in_window_fraction']:.3f} | all orbits: {fl['orbits_in_window_fraction']:.3f} |",
        f"| pool precision@5, 30x60 meV windows ({pool['windows']}) | {pool['precision_at_5']:.3f} | >= 0.8; random {pool['random_precision']:.3f}; ceiling {pool['best_possible_precision_at_5']:.3f} |",
        f"| pool precision@5 without diversity | {pool['precision_at_5_no_diversity']:.3f} | |",
        f"| pool precision@5 on windows with >= 5 pool members ({pool['windows_with_5_or_more']}) | "
        + (f"{pool['precision_at_5_on_those']:.3f}" if pool["precision_at_5_on_those"] is not None else "n/a") + " | |",
        f"| generated: 50 requested -> valid / distinct (per window) | {valid_distinct} | 50/50 |",
        f"| generated: with p_in_window >= 0.5 | {', '.join(str(g['in_window']) for g in gen)} | |",
        f"| recall of exhaustive in-window set, 10x samples ({len(res['recall'])} windows) | mean {res['recall_mean']:.3f}, "
        f"min {res['recall_min']:.3f}; {res['recall_windows_at_or_above_0_95']}/{len(res['recall'])} windows >= 0.95 | >= 0.95 |"
        if res["recall_mean"] is not None else "| recall | no in-window set | |",
        f"| same, flow alone (nearest-orbit decoding) | mean {res['recall_flow_alone_mean']:.3f}, min {res['recall_flow_alone_min']:.3f} | |"
        if res.get("recall_flow_alone_mean") is not None else "| recall, flow alone | n/a | |",
        f"| recall restricted to compositions present in training | {res['recall_trained_compositions_mean']:.3f} | |"
        if res["recall_trained_compositions_mean"] is not None else "| recall, trained compositions | n/a | |",
        f"| latency: 100 checked candidates, flow, warm | {lat['flow_100_warm_s']:.2f} s | < 10 s; exhaustive screen {lat['exhaustive_100_s']:.2f} s |",
        f"| latency: 100 checked candidates, flow, first call | {lat['flow_100_cold_s']:.2f} s | "
        + ("orbit table already built by the flow fit in this run |" if attached else "orbit table built or loaded from the model |"),
        f"| latency: CLI `design -n 100` (new process, cached table) | flow {lat['cli_flow_100_warm_cache_s']:.2f} s | exhaustive {lat['cli_exhaustive_100_warm_cache_s']:.2f} s"
        + (f" (the first run: {lat['cli_exhaustive_100_first_s']:.2f} s, loads the full model and writes its numpy copy)"
           if "cli_exhaustive_100_first_s" in lat else "") + " |",
        "",
        *([f"**The latency rows were rerun alone** ({lat['rerun']['date']}, load average {' -> '.join(map(str, lat['rerun']['load_avg']))}, "
           f"`{lat['rerun']['command']}`, the same packaged model file): every CLI run into its own new folder, each "
           "exit status checked (`benchmarks/checked.py`: a non-zero exit stops the benchmark). The other rows are "
           "those of the last full run. (The full run before issue 24 reported an exhaustive CLI time of 1.22 s: "
           "the time of a refused run, exit 2, written into the folder the flow run had filled; withdrawn.)", ""]
          if lat.get("rerun") else []),
        "Recall per window (in-window set size, samples, hits):",
        "",
        f"Windows 0.1 x 0.1 eV around random test configurations whose in-window set is 10..{13609 // 20} orbits "
        f"({res['recall_windows_skipped']} windows skipped as outside that range).",
        "",
        "| window (eV) | in window | samples | hits | recall | hits, flow alone | recall, flow alone |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["recall"]:
        w = r["window"]
        lines.append(
            f"| FE {w['formation_energy_per_site'][0]:.2f}:{w['formation_energy_per_site'][1]:.2f}, "
            f"gap {w['homo_lumo_gap'][0]:.2f}:{w['homo_lumo_gap'][1]:.2f} | {r['in_window']} | "
            f"{r['samples']} | {r['hits']} | {r['recall']:.3f} | {r.get('hits_flow_alone', '')} | "
            f"{r.get('recall_flow_alone', float('nan')):.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
