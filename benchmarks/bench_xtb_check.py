"""How often a model-ranked candidate passes the ``xtb+delta`` check, against random configurations of the same counts.

    nice python benchmarks/bench_xtb_check.py [--k 10] [--fe 1.0:1.6] [--gap 0.2:0.6] [--min 8] [--max 12]

The model designs ``k`` candidates for the window at ``--min``-``--max`` defects (8x8 MoS2, packaged model,
:func:`invdesign.design`); for each, a random configuration with the same defect-type counts is drawn (seeded).
Both sets are checked with the packaged ``xtb+delta`` (GFN1-xTB single point corrected toward DFT,
:func:`invdesign.campaign.check.check_configurations`, one structure at a time on one core); a pass means the
checked formation energy per site AND the checked gap lie in the window. Reported: passes, mean
``check_p_in_window`` (both targets in the window given the checker's stds) and the cost.
Results: ``benchmarks/results/xtb_check.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from invdesign.campaign.check import check_configurations
from invdesign.campaign.oracles import make_oracle
from invdesign.lattice.enumerate import compositions

RES = Path("benchmarks/results")


def random_like(occ: np.ndarray, host, rng: np.random.Generator) -> np.ndarray:
    """A random configuration with the same count of each defect type as ``occ`` (sites drawn uniformly)."""
    comp = compositions(occ[None], host)[0]
    out = host.host_code.copy()
    for (sub, code), c in zip(host.defect_types, comp):
        free = np.flatnonzero((host.sublattice == sub) & (out == host.host_code))
        out[rng.choice(free, size=int(c), replace=False)] = code
    return out


def _window(s: str) -> tuple[float, float]:
    a, b = s.split(":")
    return float(a), float(b)


def main() -> None:
    from invdesign import design
    from invdesign.lattice.host import HostLattice
    from invdesign.model import predict

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--fe", type=_window, default=(1.0, 1.6))
    ap.add_argument("--gap", type=_window, default=(0.2, 0.6))
    ap.add_argument("--min", type=int, default=8)
    ap.add_argument("--max", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RES / "xtb_check")
    a = ap.parse_args()
    host = HostLattice.default()
    t0 = time.time()
    res = design({"formation_energy_per_site": a.fe, "homo_lumo_gap": a.gap}, a.k, min_defects=a.min, max_defects=a.max,
                 seed=a.seed)
    t_design = time.time() - t0
    occ_m = np.asarray(res.occ[: a.k])
    rng = np.random.default_rng(a.seed)
    occ_r = np.stack([random_like(o, host, rng) for o in occ_m])
    orc = make_oracle("xtb+delta", host)
    out = {"window": {"formation_energy_per_site": a.fe, "homo_lumo_gap": a.gap}, "defects": [a.min, a.max],
           "k": len(occ_m), "design_seconds": round(t_design, 1), "oracle": orc.name}
    for name, occ in (("model", occ_m), ("random", occ_r)):
        ids = [f"{name}{i:02d}" for i in range(len(occ))]
        t1 = time.time()
        table, _ = check_configurations(occ, ids, orc, a.fe, executor="inline", gap_window=a.gap)
        pr = predict(occ)
        out[name] = {
            "pass": int((table["check_status"] == "pass").sum()), "fe_in": int(table["check_in_window"].sum()),
            "gap_in": int(table["check_gap_in_window"].sum()), "failed": int((table["check_status"] == "failed").sum()),
            "mean_p_in_window": float(table["check_p_in_window"].mean()), "seconds": round(time.time() - t1, 1),
            "rows": [{"n_defects": int(compositions(o[None], host)[0].sum()),
                      "model_fe": float(pr["formation_energy_per_site"].iat[i]), "model_gap": float(pr["homo_lumo_gap"].iat[i]),
                      "check_fe": float(table["check_formation_energy_per_site"].iat[i]),
                      "check_gap": float(table["check_homo_lumo_gap"].iat[i]),
                      "check_gap_std": float(table["check_homo_lumo_gap_std"].iat[i]),
                      "status": str(table["check_status"].iat[i])} for i, o in enumerate(occ)],
        }
        print(name, {k: v for k, v in out[name].items() if k != "rows"}, flush=True)
    a.out.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    L = ["# design --check xtb+delta: model candidates vs random configurations of the same counts", "",
         f"Window FE/site {a.fe[0]}-{a.fe[1]} eV, gap {a.gap[0]}-{a.gap[1]} eV, {a.min}-{a.max} defects, 8x8 MoS2, "
         f"k = {len(occ_m)} each; checker {orc.name} (GFN1-xTB single point + correction toward DFT); pass = both "
         "checked targets in the window.", "",
         "| set | pass | FE in window | gap in window | failed | mean P(both in window) | check seconds |", "|---|---|---|---|---|---|---|"]
    for name in ("model", "random"):
        r = out[name]
        L.append(f"| {name} | {r['pass']}/{out['k']} | {r['fe_in']} | {r['gap_in']} | {r['failed']} | "
                 f"{r['mean_p_in_window']:.2f} | {r['seconds']:.0f} |")
    a.out.with_suffix(".md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
