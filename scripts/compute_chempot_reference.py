"""Compute ``invdesign/resources/chempot_reference.json``: the model's chemical-potential reference.

Two parts, both recorded with provenance in the JSON:

1. **The 2DMD reference (DFT, VASP PBE).** 2DMD's ``formation_energy`` (per cell) is
   ``E_def - E_host - sum_El dn_El mu_El``. ``E_host`` and ``mu_{Mo,S,W,Se}`` are recovered by
   least squares of ``energy - formation_energy = E_host + dn . mu`` on the training split
   (``split_indices(ids, seed=0)["train"]``); the residual on train and on the test split is
   reported in meV. The recovered mu's are elemental energies (bcc Mo, bcc W, S, Se; eV/atom).
2. **The stable range of monolayer MoS2** ``mu_Mo + 2 mu_S = E(MoS2)/f.u.`` (``E_host / 64``, DFT),
   bounded by the elemental phases (Mo-rich: mu_Mo = mu_Mo^0; S-rich: mu_S = mu_S^0), and the W / Se
   limits from the competing phases W, Se, WS2, MoSe2, WSe2. Energies of those compounds come
   from CHGNet 0.4 (offline weights) relaxations of small prototype cells built here, aligned to the
   DFT reference: per element, CHGNet elemental energies are shifted onto the DFT mu^0, and the
   CHGNet formation enthalpy per TMD formula unit is shifted by the one number that makes the CHGNet
   MoS2 monolayer match the DFT one (``delta_tmd``; applied to WS2, MoSe2, WSe2).
   Prototype choices: bcc Mo, bcc W (1 atom); 2H monolayers (3 atoms, 15 A vacuum, in-plane cell
   relaxed); trigonal Se (P3_121, 3 atoms); sulfur as the S8 crown molecule in a 14 A box (alpha-S8,
   128 atoms, is the true ground state; the molecule is the smaller stand-in, its CHGNet energy only
   enters the sulfide/selenide exchange through the per-element alignment).

Run from the repository root (CPU, ~1 min):  python scripts/compute_chempot_reference.py
"""

from __future__ import annotations

import json
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "2dmd-mos2-low"
sys.path.insert(0, str(ROOT))  # this checkout's invdesign, not an installed one
OUT = ROOT / "invdesign" / "resources" / "chempot_reference.json"


def recover_dft_reference(data: Path) -> dict:
    from invdesign.data.dataset import load_dataset, split_indices
    from invdesign.lattice.stoichiometry import dn_matrix, elements

    ds = load_dataset(data)
    t = pd.read_csv(data / "targets.csv.gz").set_index("_id").loc[ds.ids]
    d = dn_matrix(ds.occ, ds.host)
    els = elements(ds.host)
    y = t["energy"].to_numpy(float) - t["formation_energy"].to_numpy(float)
    a = np.hstack([np.ones((len(d), 1)), d.astype(float)])
    sp = split_indices(ds.ids, seed=0)
    x, *_ = np.linalg.lstsq(a[sp["train"]], y[sp["train"]], rcond=None)
    r = y - a @ x
    res = {k: {"max_abs_meV": float(np.abs(r[v]).max() * 1e3), "rms_meV": float(np.sqrt(np.mean(r[v] ** 2)) * 1e3)}
           for k, v in sp.items()}
    n_fu = int((ds.host.host_code == ds.host.species_code["Mo"]).sum())
    return {
        "E_host": float(x[0]),
        "host": ds.host.name,
        "host_formula_units": n_fu,
        "mu": {e: float(v) for e, v in zip(els, x[1:])},
        "residual": res,
        "fit": "least squares of energy - formation_energy = E_host + sum_El dn_El mu_El on the train split "
               f"({len(sp['train'])} structures of {len(ds)}); residuals per split",
    }


def _monolayer(m: str, x: str):
    from invdesign.lattice.host import load_unit_cell

    s = load_unit_cell("builtin:MoS2").copy()
    s.replace_species({"Mo": m, "S": x})
    return s


def prototypes() -> dict:
    from pymatgen.core import Lattice, Structure

    ring = []
    r, h = 2.40, 0.51  # S8 crown: radius and half height (S-S ~2.05 A), relaxed below
    for k in range(8):
        a = np.pi / 4 * k
        ring.append([7 + r * np.cos(a), 7 + r * np.sin(a), 7 + (h if k % 2 else -h)])
    return {
        "Mo": (Structure(Lattice.cubic(3.16), ["Mo", "Mo"], [[0, 0, 0], [0.5, 0.5, 0.5]]), "bulk", 2),
        "W": (Structure(Lattice.cubic(3.17), ["W", "W"], [[0, 0, 0], [0.5, 0.5, 0.5]]), "bulk", 2),
        "S": (Structure(Lattice.cubic(14.0), ["S"] * 8, ring, coords_are_cartesian=True), "molecule", 8),
        "Se": (Structure.from_spacegroup("P3_121", Lattice.hexagonal(4.366, 4.954), ["Se"], [[0.2254, 0, 1 / 3]]), "bulk", 3),
        "MoS2": (_monolayer("Mo", "S"), "monolayer", 1),
        "WS2": (_monolayer("W", "S"), "monolayer", 1),
        "MoSe2": (_monolayer("Mo", "Se"), "monolayer", 1),
        "WSe2": (_monolayer("W", "Se"), "monolayer", 1),
    }


def relax(structure, kind: str, calc) -> float:
    """CHGNet energy (eV per cell) after relaxing positions and the cell (in-plane only for a monolayer)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = calc
    if kind == "bulk":
        FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=0.01, steps=500)
    elif kind == "monolayer":
        FIRE(FrechetCellFilter(atoms, mask=[1, 1, 0, 0, 0, 1]), logfile=None).run(fmax=0.01, steps=500)
    else:
        FIRE(atoms, logfile=None).run(fmax=0.01, steps=500)
    return float(atoms.get_potential_energy())


def main() -> None:
    import chgnet
    from chgnet.model.dynamics import CHGNetCalculator

    dft = recover_dft_reference(DATA)
    mu0 = dft["mu"]
    e_mos2 = dft["E_host"] / dft["host_formula_units"]
    warnings.simplefilter("ignore")
    calc = CHGNetCalculator(use_device="cpu")
    chg = {}
    for name, (s, kind, n) in prototypes().items():
        e = relax(s, kind, calc)
        chg[name] = {"E_chgnet_per_unit": e / n, "prototype": kind, "atoms": len(s),
                     "unit": "atom" if name in mu0 else "formula unit"}
        print(f"{name:6s} {kind:9s} {e / n:10.4f} eV per {'atom' if name in mu0 else 'f.u.'}", flush=True)
    comps = {"MoS2": {"Mo": 1, "S": 2}, "WS2": {"W": 1, "S": 2}, "MoSe2": {"Mo": 1, "Se": 2}, "WSe2": {"W": 1, "Se": 2}}
    dh_chg = {k: chg[k]["E_chgnet_per_unit"] - sum(n * chg[e]["E_chgnet_per_unit"] for e, n in c.items()) for k, c in comps.items()}
    dh_dft_mos2 = e_mos2 - mu0["Mo"] - 2 * mu0["S"]
    delta = dh_dft_mos2 - dh_chg["MoS2"]
    phases = {}
    for k, c in comps.items():
        dh = dh_chg[k] + delta
        phases[k] = {"composition": c, "dH_chgnet_per_fu": dh_chg[k], "dH_per_fu": dh,
                     "E_per_fu": dh + sum(n * mu0[e] for e, n in c.items()),
                     "source": "DFT (2DMD host energy)" if k == "MoS2" else "CHGNet, aligned (per element + delta_tmd)"}
    phases["MoS2"]["E_per_fu"] = e_mos2
    for e in mu0:
        phases[e] = {"composition": {e: 1}, "E_per_fu": mu0[e], "source": "DFT (2DMD mu, recovered)"}
    limits = {}
    for name, mu_mo in (("Mo-rich", mu0["Mo"]), ("S-rich", e_mos2 - 2 * mu0["S"])):
        mu_s = (e_mos2 - mu_mo) / 2
        mu_w = min(mu0["W"], phases["WS2"]["E_per_fu"] - 2 * mu_s)
        mu_se = min(mu0["Se"], (phases["MoSe2"]["E_per_fu"] - mu_mo) / 2, (phases["WSe2"]["E_per_fu"] - mu_w) / 2)
        limits[name] = {"Mo": mu_mo, "S": mu_s, "W": mu_w, "Se": mu_se}
    out = {
        "units": "eV per atom (mu), eV per cell (E_host), eV per formula unit (phases)",
        "reference": "2DMD DFT (VASP PBE): formation_energy = E_def - E_host - sum_El dn_El mu_El with these mu (the model's reference)",
        "dft": dft,
        "mu_ref": mu0,
        "E_MoS2_per_fu": e_mos2,
        "dH_MoS2_per_fu": dh_dft_mos2,
        "limits": limits,
        "limits_rule": "mu_Mo + 2 mu_S = E(MoS2 monolayer)/f.u. (DFT); Mo-rich: mu_Mo = mu_Mo^0; S-rich: mu_S = mu_S^0; "
                       "then mu_W = min(mu_W^0, E(WS2) - 2 mu_S), mu_Se = min(mu_Se^0, (E(MoSe2) - mu_Mo)/2, (E(WSe2) - mu_W)/2)",
        "phases": phases,
        "chgnet": {"version": getattr(chgnet, "__version__", "?"), "weights": str(getattr(calc.model, "version", "?")),
                   "energies": chg, "delta_tmd_eV_per_fu": delta,
                   "alignment": "E_ref(X) = E_chgnet(X) + sum_El n_El (mu_El^0 - E_chgnet(El)) + n_fu delta_tmd, "
                                "delta_tmd = dH_DFT(MoS2) - dH_chgnet(MoS2)",
                   "relaxation": "ASE FIRE, fmax 0.01 eV/A; bulk: FrechetCellFilter; monolayer: in-plane cell only; S8: positions"},
        "provenance": {"script": "scripts/compute_chempot_reference.py", "data": "2DMD low-density MoS2 (targets.csv.gz)",
                       "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({"mu_ref": mu0, "limits": limits, "delta_tmd": delta, "residual": dft["residual"]}, indent=1))


if __name__ == "__main__":
    main()
