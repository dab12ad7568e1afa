"""Decoding where nothing can be enumerated: time, embedding error and round trip by defect count.

    OMP_NUM_THREADS=1 PYTHONPATH=. nice -n 10 python benchmarks/bench_decode.py   # -> benchmarks/results/decode.{json,md}
    ... bench_decode.py --quick                                                    # fewer configurations, two counts
    ... bench_decode.py --rerun 12,16                                              # recompute some rows of decode.json

Packaged model, 8x8 MoS2, 1 thread. For each defect count ``k`` (a fresh subprocess each):

- *configurations*: random, ``k`` defects, sites uniform, types uniform among all four (seeded);
- *scale* ``d_nn``: the median, over ``N_SCALE`` random configurations of that count, of the
  distance to the nearest other one among them (the "typical distance between classes" at that
  count; a sample, so an upper bound on the true nearest-class distance, which shrinks as the
  number of classes grows);
- *local spacing* ``d_move``: for each round-trip configuration ``c``, the smallest ``|z(c') - z(c)|``
  over ``N_MOVES`` random single-defect moves ``c'`` into another class (hop / re-type, exact
  incremental evaluation, float64); its median. Its smallest value over all configurations divided by the float64
  round-off of ``|z|`` says whether the embedding still separates neighbouring classes (local injectivity);
- *decode*: ``decode(embed(c), model, Limits(k, k))`` (method ``incremental``) at two budgets
  (restarts x steps; each step screens every move of one defect and evaluates 6 exactly);
  reported: seconds per sample, ``|z - embed(decode(z))|`` relative to ``d_nn`` (median, max) and
  to ``d_move`` (median), and the share returning ``c`` up to symmetry (canonical keys);
- *wider embedding* (``k <= WIDE_MAX``): the same search and budget with the encoder's 64-D
  penultimate features ``mean_g phi(u_g)`` as the target instead of the 12-D ``z`` (the same network
  without its last linear layer: what a 64-D embedding would give at no extra encoder cost);
- *basin* (``k <= BASIN_MAX``): the round trip when the search starts from ``c`` with 1 or 2 of its
  defects moved to random free sites (1 restart, 24 steps), on ``z`` and on the 64-D features.
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
KS = (4, 6, 8, 12, 16, 24, 30)
N_RT = {4: 8, 6: 8, 8: 8, 12: 6, 16: 4, 24: 3, 30: 3}
N_SCALE = {4: 96, 6: 96, 8: 96, 12: 64, 16: 48, 24: 32, 30: 24}
N_MOVES = 128
BUDGETS = {"fast": (1, 8), "default": (4, 24)}  # restarts, steps
WIDE_MAX = 8
BASIN_MAX = 6


def exhaustive_k() -> int:
    """The packaged encoder's exhaustive-step threshold (defects)."""
    from invdesign.generate.search import exhaustive_max
    from invdesign.model import load_model

    model = load_model()
    return exhaustive_max(model.encoder, model.host)


def one(k: int, quick: bool) -> dict:
    import copy
    import resource

    import numpy as np
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("INVDESIGN_PROGRESS", "0")
    from invdesign.embed.encoder import embed_occ
    from invdesign.embed.incremental import IncrementalEmbedding
    from invdesign.generate.decoder import Limits, decode
    from invdesign.generate.search import _Space
    from invdesign.lattice.canonical import canonical_keys
    from invdesign.model import load_model

    model = load_model()
    h = model.host
    lim = Limits.make(h, k, k)
    space = _Space(h, lim.types)
    rng = np.random.default_rng(1000 + k)
    n_rt = 2 if quick else N_RT[k]
    n_scale = 16 if quick else N_SCALE[k]
    occ = np.array([space.random(rng, k) for _ in range(n_rt)], dtype=np.uint8)
    keys = canonical_keys(occ, h)
    t = time.perf_counter()
    z = np.asarray(model.embed(occ), float)
    row: dict = {"k": k, "configurations": n_rt, "embed_s_per_config": round((time.perf_counter() - t) / n_rt, 4),
                 "z_norm_median": round(float(np.median(np.linalg.norm(z, axis=1))), 3)}
    # the scale: nearest other class among random configurations of this count
    sc = np.array([space.random(rng, k) for _ in range(n_scale)], dtype=np.uint8)
    zs = np.asarray(model.embed(sc), float)
    dd = np.linalg.norm(zs[:, None] - zs[None], axis=2)
    np.fill_diagonal(dd, np.inf)
    d_nn = float(np.median(dd.min(axis=1)))
    row["d_nn"] = round(d_nn, 5)
    # local spacing: nearest of N_MOVES random single moves (exact, float64)
    st = IncrementalEmbedding(model.encoder, h)
    dmove, sep = [], []
    for c, zc, key in zip(occ, z, keys):
        st.set(c)
        mv = []
        while len(mv) < N_MOVES:
            m = int(rng.integers(k))
            sub = int(h.sublattice[st.sites[m]])
            free = [x for x in space.sites[sub] if x not in set(st.sites.tolist())] + [int(st.sites[m])]
            x = int(rng.choice(free))
            t_ = int(rng.choice(space.by_sub[sub]))
            if not (x == st.sites[m] and t_ == st.types[m]):
                mv.append((m, x, t_))
        mv = np.array(mv)
        moved = np.repeat(c[None], len(mv), axis=0)
        for r, (m, x, t_) in enumerate(mv):
            moved[r, st.sites[m]] = h.host_code[st.sites[m]]
            moved[r, x] = h.defect_types[t_][1]
        other = np.array([kk != key for kk in canonical_keys(moved, h)])  # a move may land in c's own class
        dz = np.linalg.norm(st.evaluate(mv[other]) - zc, axis=1)
        dmove.append(float(dz.min()))
        sep.append(float(dz.min() / (np.finfo(float).eps * max(1.0, np.linalg.norm(zc)))))
    d_move = float(np.median(dmove))
    row["d_move"] = round(d_move, 5)
    row["min_move_distance_over_roundoff"] = float(f"{min(sep):.3g}")

    def run(zt, mdl, budget, tag):
        R, S = budget
        t0 = time.perf_counter()
        res = decode(zt, mdl, lim, max_steps=S, restarts=R, seed=0)
        dt = (time.perf_counter() - t0) / len(zt)
        same = float(np.mean([a == b for a, b in zip(res.keys, keys)]))
        rel = res.distance / d_nn if tag == "z" else res.distance
        out = {"restarts": R, "steps": S, "s_per_sample": round(dt, 3), "roundtrip": round(same, 3),
               "dist_median": float(f"{np.median(res.distance):.4g}")}
        if tag == "z":
            out.update({"rel_nn_median": round(float(np.median(rel)), 4), "rel_nn_max": round(float(np.max(rel)), 4),
                        "rel_move_median": round(float(np.median(res.distance / d_move)), 3)})
        return out, res

    for name, b in BUDGETS.items():
        if quick and name == "default":
            b = (2, 6)
        row[name], _ = run(z, model, b, "z")
    if k <= WIDE_MAX:
        wide = copy.copy(model)
        enc = copy.deepcopy(model.encoder)
        enc.out = torch.nn.Identity()
        enc.dim = enc.width
        wide.encoder = enc
        wide.embed = lambda o: embed_occ(enc, o, h)  # noqa: E731
        zw = wide.embed(occ)
        zws = wide.embed(sc)
        dw = np.linalg.norm(zws[:, None] - zws[None], axis=2)
        np.fill_diagonal(dw, np.inf)
        b = BUDGETS["default"] if not quick else (2, 6)
        out, res = run(zw, wide, b, "wide")
        out["rel_nn_median"] = round(float(np.median(res.distance) / np.median(dw.min(axis=1))), 4)
        out["dim"] = enc.width
        row["wide"] = out
    if k <= BASIN_MAX:  # the basin: round trip from starts with 1 or 2 defects of c displaced
        basin = {}
        for n_disp in (1, 2):
            start = []
            for c in occ:
                o = c.copy()
                for s_ in rng.choice(np.flatnonzero(c != h.host_code), n_disp, replace=False):
                    free = np.flatnonzero((h.sublattice == h.sublattice[s_]) & (o == h.host_code))
                    x = rng.choice(free)
                    o[x], o[s_] = o[s_], h.host_code[s_]
                start.append(o)
            start = np.array(start)
            for tag, mdl, zt in (("z", model, z), ("64d", wide, zw)):
                res = decode(zt, mdl, lim, max_steps=24, restarts=1, seed=0, start=start)
                basin[f"{tag}_displaced{n_disp}"] = round(float(np.mean([a == b for a, b in zip(res.keys, keys)])), 3)
        row["basin_roundtrip"] = basin
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return row


def _fmt(r: dict, name: str, key: str) -> str:
    v = r.get(name, {})
    return str(v.get(key, "-")) if isinstance(v, dict) else "-"


def _run(k: int, quick: bool) -> dict:
    p = run_checked([sys.executable, __file__, str(k)] + (["--quick"] if quick else []), what=f"bench_decode {k} defects",
                    timeout=3600, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    quick = "--quick" in sys.argv
    rerun = None
    args = [a for a in sys.argv[1:] if a != "--quick"]
    if args and args[0] == "--rerun":  # recompute some counts, keep the other rows of decode.json
        rerun = [int(v) for v in args[1].split(",")]
        args = []
    if args:
        print(json.dumps(one(int(args[0]), quick)))
        return
    OUT.mkdir(exist_ok=True)
    if rerun:
        old = json.loads((OUT / "decode.json").read_text())
        rows = old["rows"]
        meta = old["meta"]
        for k in rerun:
            row = _run(k, quick)
            print(json.dumps(row), flush=True)
            rows = [r for r in rows if r["k"] != k] + [row]
            meta.setdefault("reruns", []).append({"k": k, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                                  "load_avg": os.getloadavg()})
        rows.sort(key=lambda r: r["k"])
    else:
        rows = []
        for k in ((4, 12) if quick else KS):
            row = _run(k, quick)
            rows.append(row)
            print(json.dumps(row), flush=True)
        meta = {"platform": platform.platform(), "load_avg": os.getloadavg(), "threads": 1, "quick": quick,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "budgets": BUDGETS}
    (OUT / "decode.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    fb, db = BUDGETS["fast"], BUDGETS["default"]
    reruns = "".join(f" Row {r['k']} rerun {r['date']} (load {r['load_avg'][0]:.1f})." for r in meta.get("reruns", []))
    lines = [
        "# Decoding beyond enumeration (8x8 MoS2, packaged model, 1 thread)" + (" -- QUICK RUN" if quick else ""), "",
        f"{meta['date']}, load average {meta['load_avg'][0]:.1f} on 2 shared cores (times are pessimistic).{reruns} "
        "`decode(embed(c), model, Limits(k, k))`, method `incremental`, on random k-defect configurations "
        "(uniform sites and types). Budgets: restarts x steps; each step screens every move of one defect "
        f"and evaluates the best 6 exactly (up to {exhaustive_k()} defects: every move of every defect exactly; "
        "`exhaustive_max`, by the encoder kind's cost per move); a restart also ends at a "
        "local minimum.", "",
        "- `d_nn`: median distance to the nearest other configuration among N random ones of that count "
        "(the typical distance between classes, measured on a sample: an upper bound on the true nearest-class distance).",
        "- `d_move`: median over the round-trip configurations of the smallest distance to one of 128 random single-defect "
        "neighbours in another class (float64, exact); `sep` = its smallest value over the float64 round-off of |z| (>> 1: "
        "neighbouring classes still separated, i.e. the embedding is locally injective).",
        "- `err/d_nn`: |z - embed(decode(z))| / d_nn (median, max); `err/d_move`: median over d_move; "
        "`rt`: share with decode(embed(c)) == c up to symmetry (canonical keys).",
        "- 64-D: the same search and default budget on the encoder's 64-D penultimate features mean_g phi(u_g) "
        "(the network without its last linear layer) instead of the 12-D z; err over the 64-D d_nn.", "",
        f"| defects | configs | median \\|z\\| | d_nn | d_move | sep | fast {fb[0]}x{fb[1]}: s/sample | err/d_nn med (max) | err/d_move | rt "
        f"| default {db[0]}x{db[1]}: s/sample | err/d_nn med (max) | err/d_move | rt | 64-D: err/d_nn med | 64-D: rt |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['k']} | error: {r['error'][-120:]!r} |")
            continue
        cells = [str(r["k"]), str(r["configurations"]), f"{r['z_norm_median']:.4g}", f"{r['d_nn']:.4g}", f"{r['d_move']:.4g}",
                 f"{r['min_move_distance_over_roundoff']:.2g}"]
        for name in ("fast", "default"):
            cells += [_fmt(r, name, "s_per_sample"), f"{_fmt(r, name, 'rel_nn_median')} ({_fmt(r, name, 'rel_nn_max')})",
                      _fmt(r, name, "rel_move_median"), _fmt(r, name, "roundtrip")]
        cells += [_fmt(r, "wide", "rel_nn_median"), _fmt(r, "wide", "roundtrip")]
        lines.append("| " + " | ".join(cells) + " |")
    basin = [r for r in rows if "basin_roundtrip" in r]
    if basin:
        lines += ["", "Basin: round trip decode(embed(c)) == c when the search starts from c with 1 or 2 defects displaced "
                  "(1 restart, 24 steps):", "", "| defects | 12-D z, 1 displaced | 12-D z, 2 displaced | 64-D, 1 displaced | 64-D, 2 displaced |",
                  "|---|---|---|---|---|"]
        for r in basin:
            b = r["basin_roundtrip"]
            lines.append(f"| {r['k']} | {b['z_displaced1']} | {b['z_displaced2']} | {b['64d_displaced1']} | {b['64d_displaced2']} |")
    (OUT / "decode.md").write_text("\n".join(lines) + "\n")
    (OUT / "decode.partial.jsonl").unlink(missing_ok=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
