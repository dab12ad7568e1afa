"""The ``gpaw`` oracle (PBE, GPAW LCAO) against 2DMD DFT on a small MoS2 sample, with its cost.

    python benchmarks/bench_gpaw.py [--n-test 3] [--workers 2]

Runs ``invdesign label --oracle gpaw`` end to end (resumable: a rerun labels only what is missing) on

- four low-density **train**-split structures, the ones with the fewest defects whose element changes are
  linearly independent: they fix GPAW's four chemical potentials exactly (four elements change);
- ``--n-test`` low-density and ``--n-test`` high-density **test**-split structures (seeded, ``split_indices(seed=0)``),

each written as the configuration on the ideal host lattice (the oracle's unrelaxed geometry), and compares
their gap and formation energy per site with 2DMD's (VASP PBE, relaxed). The pristine cell's energy is
computed once first (it is every formation energy's reference; cached per host and GPAW version). Cost: CPU seconds per cell from the oracle's own ``cpu_s``. Needs GPAW and its PAW
setups (``invdesign/campaign/gpaw.py``); without them it stops with the oracle's one-line reason.
Results: ``benchmarks/results/gpaw.{md,json}``, labels ``benchmarks/results/gpaw/labels.csv``, the fitted chemical
potentials ``benchmarks/results/gpaw/mu.json`` (``--oracle gpaw:benchmarks/results/gpaw/mu.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from checked import run_checked  # benchmarks/checked.py: exits on a failed command

from invdesign.campaign.oracles import (
    GpawOracle,
    fit_chemical_potentials,
    formation_energy_per_site,
    make_oracle,
    species_delta,
)
from invdesign.data.dataset import load_dataset, split_indices
from invdesign.lattice.config import config_to_structure
from invdesign.lattice.enumerate import compositions

RES = Path("benchmarks/results")
DATA = Path(os.environ.get("INVDESIGN_SHARED", "../shared")) / "data"


def sample(n_test: int, seed: int = 0) -> list[tuple[str, str, object, np.ndarray, dict]]:
    """``(role, id, host, occ row, DFT targets)`` of the structures to label (see the module docstring)."""
    lo = load_dataset(DATA / "2dmd-mos2-low")
    hi = load_dataset(DATA / "2dmd-mos2-high", host=lo.host)
    rng = np.random.default_rng(seed)
    out = []
    y_lo = lo.y(["formation_energy_per_site", "homo_lumo_gap"])
    y_hi = hi.y(["formation_energy_per_site", "homo_lumo_gap"])
    s_lo, s_hi = split_indices(lo.ids, seed=0), split_indices(hi.ids, seed=0)
    delta = species_delta(lo.occ, lo.host)  # elements removed / added per structure
    A = np.stack([delta[e] for e in delta], axis=1).astype(float)
    nd = compositions(lo.occ, lo.host).sum(1)
    picked: list[int] = []
    for i in sorted(s_lo["train"], key=lambda i: nd[i]):  # the fewest defects whose element changes are independent
        if np.linalg.matrix_rank(A[picked + [i]]) > len(picked):
            picked.append(int(i))
        if len(picked) == A.shape[1]:
            break
    for i in picked:
        out.append(("mu", str(lo.ids[i]), lo.host, lo.occ[i], {"fe": y_lo[i, 0], "gap": y_lo[i, 1]}))
    for role, ds, s, y in (("test-low", lo, s_lo, y_lo), ("test-high", hi, s_hi, y_hi)):
        for i in rng.choice(s["test"], n_test, replace=False):
            out.append((role, str(ds.ids[i]), ds.host, ds.occ[i], {"fe": y[i, 0], "gap": y[i, 1]}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-test", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--labels", default=str(RES / "gpaw" / "labels.csv"))
    a = ap.parse_args()
    rows = sample(a.n_test)
    host = rows[0][2]
    make_oracle("gpaw", host, need_mu=False)  # refuses here, in one line, without GPAW or its setups
    oracle = GpawOracle(host=host)
    t0, c0 = time.perf_counter(), time.process_time()
    e0 = oracle.pristine_energy()
    pristine_s = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    if pristine_s["cpu_s"] < 1.0 and (RES / "gpaw.json").is_file():  # read from the cache: the cost of the run that computed it
        pristine_s = json.loads((RES / "gpaw.json").read_text()).get("pristine_cost", pristine_s)
    labels = Path(a.labels)
    labels.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for _, i, h, occ, _ in rows:
            config_to_structure(occ, h).to(filename=str(Path(tmp) / f"{i}.cif"))
        run_checked([sys.executable, "-c", "import sys; from invdesign.cli import main; sys.exit(main())", "label", tmp, "--oracle", "gpaw", "--out", str(labels),
                     "--executor", f"process:{a.workers}", "--host", "MoS2"], what="invdesign label --oracle gpaw")
    lab = pd.read_csv(labels, dtype={"id": str, "error": str}).set_index("id")
    bad = [i for _, i, *_ in rows if i not in lab.index or str(lab.loc[i, "error"]) not in ("nan", "")]
    if bad:
        raise SystemExit(f"{labels}: {len(bad)} structures unlabelled or failed: {bad[:3]}")
    # chemical potentials from the four train structures (exact: four equations, four unknowns)
    mu_rows = [r for r in rows if r[0] == "mu"]
    occ_mu = np.stack([r[3] for r in mu_rows])
    mu = fit_chemical_potentials(oracle, occ_mu, np.array([r[4]["fe"] for r in mu_rows]),
                                 raw=lab.loc[[r[1] for r in mu_rows], "raw_energy"].to_numpy(float))
    GpawOracle(mu, host).save(labels.parent / "mu.json")  # for gpaw:MU.json (label, campaign, design --check)
    table = []
    for role, i, h, occ, y in rows:
        r = lab.loc[i]
        fe = float(formation_energy_per_site(np.array([r["raw_energy"]]), occ[None], h, mu)[0])
        table.append({"role": role, "id": i, "defects": int((occ != h.host_code).sum()), "gap_dft": y["gap"],
                      "gap_gpaw": float(r["homo_lumo_gap"]), "fe_dft": y["fe"], "fe_gpaw": fe, "cpu_s": float(r["cpu_s"])})
    df = pd.DataFrame(table)
    # the missing relaxation lowers every gap: one offset, the mean DFT - GPAW gap of the four train structures
    offset = float((df.loc[df["role"] == "mu", "gap_dft"] - df.loc[df["role"] == "mu", "gap_gpaw"]).mean())
    df["gap_gpaw_offset"] = np.maximum(df["gap_gpaw"] + offset, 0.0)
    test = df[df["role"] != "mu"]
    summary = {"protocol": GpawOracle.protocol, "n_mu": len(mu_rows), "n_test": len(test), "mu": mu,
               "pristine_energy_eV": e0, "pristine_cost": pristine_s,
               "cpu_s_median": float(df["cpu_s"].median()), "cpu_s_max": float(df["cpu_s"].max()),
               "threads": os.environ.get("OMP_NUM_THREADS", "unset"), "load": os.getloadavg()[0], "by_role": {}}
    for role, g in test.groupby("role"):
        eg, ef = g["gap_gpaw"] - g["gap_dft"], g["fe_gpaw"] - g["fe_dft"]
        summary["by_role"][role] = {"n": len(g), "gap_mae_meV": 1e3 * float(eg.abs().mean()), "gap_bias_meV": 1e3 * float(eg.mean()),
                                    "gap_offset_mae_meV": 1e3 * float((g["gap_gpaw_offset"] - g["gap_dft"]).abs().mean()),
                                    "fe_mae_meV": 1e3 * float(ef.abs().mean()), "fe_bias_meV": 1e3 * float(ef.mean())}
    eg = test["gap_gpaw"] - test["gap_dft"]
    summary["gap_mae_meV"], summary["gap_bias_meV"] = 1e3 * float(eg.abs().mean()), 1e3 * float(eg.mean())
    summary["gap_pearson"] = float(np.corrcoef(test["gap_gpaw"], test["gap_dft"])[0, 1]) if len(test) > 2 else None
    summary["gap_offset_eV"] = offset
    summary["gap_offset_mae_meV"] = 1e3 * float((test["gap_gpaw_offset"] - test["gap_dft"]).abs().mean())
    summary["rows"] = table
    (RES / "gpaw.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = ["# The gpaw oracle (PBE, GPAW LCAO) against 2DMD DFT (MoS2)", "",
          f"`python benchmarks/bench_gpaw.py` ({time.strftime('%Y-%m-%d %H:%M')}): `invdesign label --oracle gpaw` on "
          f"{len(df)} structures, {summary['threads']} thread(s) per worker, {a.workers} workers on a 2-core machine shared "
          f"with other jobs (CPU seconds per cell from the oracle itself). Protocol: {GpawOracle.protocol}; 2DMD: VASP "
          "PBE, relaxed. Chemical potentials from the four `mu` train structures (the fewest defects whose element "
          "changes are independent; exact, so their formation energies agree by construction; written to "
          "`gpaw/mu.json`); the test rows were not used for anything.", "",
          "| split | structure | defects | gap 2DMD (eV) | gap GPAW (eV) | FE 2DMD (eV/site) | FE GPAW (eV/site) | CPU-s |",
          "|---|---|---|---|---|---|---|---|"]
    for r in table:
        md.append(f"| {r['role']} | `{r['id'][:24]}` | {r['defects']} | {r['gap_dft']:.3f} | {r['gap_gpaw']:.3f} | "
                  f"{r['fe_dft']:.3f} | {r['fe_gpaw']:.3f} | {r['cpu_s']:.0f} |")
    md += ["", "| test rows | n | gap MAE (meV) | gap bias | gap MAE with the train offset | FE MAE (meV/site) | FE bias |",
           "|---|---|---|---|---|---|---|"]
    for role, s in summary["by_role"].items():
        md.append(f"| {role} | {s['n']} | {s['gap_mae_meV']:.0f} | {s['gap_bias_meV']:+.0f} | {s['gap_offset_mae_meV']:.0f} | "
                  f"{s['fe_mae_meV']:.0f} | {s['fe_bias_meV']:+.0f} |")
    md += ["", f"All test rows: gap MAE {summary['gap_mae_meV']:.0f} meV (bias {summary['gap_bias_meV']:+.0f}"
           + (f", Pearson {summary['gap_pearson']:.3f}" if summary["gap_pearson"] is not None else "") + "); with one "
           f"offset, the mean DFT - GPAW gap of the four train structures ({1e3 * offset:+.0f} meV; the missing relaxation), "
           f"{summary['gap_offset_mae_meV']:.0f} meV. Six test structures: an agreement check, not an accuracy figure. "
           f"Cost: median {summary['cpu_s_median']:.0f} CPU-s per cell (max {summary['cpu_s_max']:.0f}); the pristine "
           f"reference {pristine_s['cpu_s']:.0f} CPU-s, once per host and GPAW version.", ""]
    (RES / "gpaw.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
