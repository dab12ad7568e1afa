"""Synthesis planning: the recovered 2DMD reference, the stable range, Monte Carlo populations vs exact, timings.

- reference: residual (meV) of ``energy - formation_energy = E_host + dn . mu`` on every split, and the
  re-referenced per-site formation energies vs recomputing them from the raw DFT energies (Mo-rich, S-rich).
- populations: for every 2- and 3-defect composition of 8x8 MoS2 (30 compositions), the lowest-energy
  arrangement and one random arrangement: Monte Carlo estimate (M uniform labelled arrangements) vs the exact
  enumeration, as z = (mc - exact) / stderr; the share within 2 and 3 standard errors (a calibrated error gives
  ~95 % and ~99.7 %), and the time per candidate of each.
- export: seconds per candidate to write VASP + QE + candidate.json.

Run from the repository root:  python benchmarks/bench_synthesis.py [--quick]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    import torch

    torch.set_num_threads(1)
    from invdesign.data.dataset import load_dataset, split_indices
    from invdesign.generate.decoder import Limits, orbit_index
    from invdesign.lattice.stoichiometry import dn_matrix, elements
    from invdesign.model import load_model
    from invdesign.synthesis.arrangements import arrangement_stats, monte_carlo
    from invdesign.synthesis.chempot import load_reference, read_mu, rereference_per_site

    quick = "--quick" in sys.argv
    samples = 1000 if quick else 4000
    share = ROOT.parent / "shared" / "data" / "2dmd-mos2-low"
    ref = load_reference()
    out: dict = {"quick": quick, "reference": {"mu_ref": ref["mu_ref"], "E_host": ref["dft"]["E_host"],
                                               "residual_meV": ref["dft"]["residual"], "limits": ref["limits"],
                                               "delta_tmd_eV_per_fu": ref["chgnet"]["delta_tmd_eV_per_fu"]}}
    ds = load_dataset(share)
    t = pd.read_csv(share / "targets.csv.gz").set_index("_id").loc[ds.ids]
    d = dn_matrix(ds.occ, ds.host)
    n = (ds.occ != ds.host.host_code).sum(axis=1)
    te = split_indices(ds.ids, seed=0)["test"]
    rr = {}
    for lim in ("Mo-rich", "S-rich"):
        mu = read_mu(lim)
        direct = (t["energy"].to_numpy() - ref["dft"]["E_host"] - d @ np.array([mu.mu[e] for e in elements(ds.host)])) / n
        got = rereference_per_site(t["formation_energy_per_site"].to_numpy(), ds.occ, ds.host, mu)
        rr[lim] = float(np.abs(got - direct)[te].max() * 1e3)
    out["rereference_vs_raw_dft_max_abs_meV_test"] = rr

    model = load_model(None)
    idx = orbit_index(model, Limits.make(model.host))
    comps = np.unique(idx.composition[(idx.n_defects >= 2) & (idx.n_defects <= 3)], axis=0)
    if quick:
        comps = comps[::5]
    rng = np.random.default_rng(0)
    rows = []
    for c in comps:
        r = np.flatnonzero(np.all(idx.composition == c, axis=1))
        t0 = time.perf_counter()
        ex = arrangement_stats(model, idx.occ[r], 1000.0)
        t_exact = (time.perf_counter() - t0) / len(r)
        for tag, j in (("lowest", int(np.argmin(ex.e_above_min_meV))), ("random", int(rng.integers(len(r))))):
            t0 = time.perf_counter()
            p, se, _ = monte_carlo(model, idx.occ[r[j]], 1000.0, samples=samples, seed=int(rng.integers(1 << 30)))
            t_mc = time.perf_counter() - t0
            z = (p - ex.population[j]) / se if se > 0 else (0.0 if abs(p - ex.population[j]) < 1e-12 else np.inf)
            rows.append({"composition": ",".join(map(str, c)), "classes": len(r), "which": tag, "exact": float(ex.population[j]),
                         "mc": p, "stderr": se, "z": float(z), "exact_s_per_candidate": t_exact, "mc_s": t_mc})
    df = pd.DataFrame(rows)
    az = np.abs(df["z"].to_numpy())
    out["populations"] = {"T_K": 1000.0, "samples": samples, "cases": len(df), "within_2se": float((az <= 2).mean()),
                          "within_3se": float((az <= 3).mean()), "max_abs_z": float(az.max()),
                          "exact_ms_per_candidate_median": float(df["exact_s_per_candidate"].median() * 1e3),
                          "mc_s_per_candidate_median": float(df["mc_s"].median()), "rows": rows}

    import tempfile

    from invdesign.generate.design import design
    from invdesign.synthesis import plan_design, with_mu

    m = with_mu(model, read_mu("S-rich"))
    res = design({"formation_energy_per_site": (1.0, 1.2), "homo_lumo_gap": (0.9, 1.3)}, n=10, model=m, mode="exhaustive")
    t0 = time.perf_counter()
    res = plan_design(res, m, read_mu("S-rich"), 1000.0, ["vasp", "qe", "json"], out=Path(tempfile.mkdtemp()) / "run")
    out["design_synthesis"] = {"candidates": 10, "annotate_s": res.summary["timings_s"]["synthesis_s"],
                               "write_with_export_s": res.summary["timings_s"]["write_s"],
                               "total_s": round(time.perf_counter() - t0, 3)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "synthesis.json").write_text(json.dumps(out, indent=1) + "\n")
    p = out["populations"]
    md = [
        "# Synthesis planning" + (" (quick)" if quick else ""), "",
        "| what | result |", "|---|---|",
        f"| 2DMD reference recovered (train split LSQ), residual max abs train / test | {ref['dft']['residual']['train']['max_abs_meV']:.1e} / {ref['dft']['residual']['test']['max_abs_meV']:.1e} meV |",
        f"| mu_ref Mo, S, W, Se (eV/atom) | {', '.join(f'{v:.4f}' for v in ref['mu_ref'].values())} |",
        f"| E_host (8x8 MoS2, eV) | {ref['dft']['E_host']:.4f} |",
        f"| Mo-rich limit Mo, S, W, Se | {', '.join(f'{v:.3f}' for v in ref['limits']['Mo-rich'].values())} |",
        f"| S-rich limit Mo, S, W, Se | {', '.join(f'{v:.3f}' for v in ref['limits']['S-rich'].values())} |",
        f"| re-referenced FE vs raw DFT energies, test split max abs (Mo-rich / S-rich) | {rr['Mo-rich']:.1e} / {rr['S-rich']:.1e} meV |",
        f"| MC vs exact populations ({p['cases']} cases, 2-3 defects, 1000 K, M={samples}) within 2 / 3 stderr | {p['within_2se']:.0%} / {p['within_3se']:.0%} (max abs z {p['max_abs_z']:.2f}) |",
        f"| time per candidate: exact (enumerated) / MC | {p['exact_ms_per_candidate_median']:.2f} ms / {p['mc_s_per_candidate_median']:.2f} s |",
        f"| design --export vasp,qe,json, 10 candidates: annotate / write | {out['design_synthesis']['annotate_s']:.2f} s / {out['design_synthesis']['write_with_export_s']:.2f} s |",
    ]
    text = "\n".join(md) + "\n"
    (RESULTS / "synthesis.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
