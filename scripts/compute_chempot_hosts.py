"""Compute ``invdesign/resources/chempot_hosts.json``: the chemical-potential facts of every packaged host
but MoS2 (whose reference is ``chempot_reference.json``, :mod:`scripts.compute_chempot_reference`).

From the 2DMD release files of each set (nothing is fitted):

- ``elements.csv``: the elemental chemical potentials ``mu^0`` (eV/atom) of the formation-energy convention
  ``E_f = E_def - E_pristine - sum_El dn_El mu_El``; the host's reference ``mu_ref`` is ``mu^0`` of every
  element its configurations can hold (host elements and substituents).
- ``initial_structures.csv``: the pristine supercells' DFT energies, hence each host compound's energy per
  formula unit (the stability line of its chemical potentials) and the DFT energy of the other 2DMD hosts
  as competing phases of a substituent (InSe for In on GaSe's Ga sites, GaSe for Ga on InSe's, ...).
- the CHGNet-aligned compounds of ``chempot_reference.json`` (WS2, MoSe2) as competing phases of WSe2's
  substituents, as MoS2's limits use them.

The convention is checked on every structure of each set: ``energy - E_pristine - dn . mu_ref`` against the
release's ``formation_energy`` (max abs residual, meV, recorded). The named limits themselves are computed
by :mod:`invdesign.synthesis.chempot` from these facts.

Run from the repository root (seconds):  python scripts/compute_chempot_hosts.py [DATA_ROOT]
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))  # this checkout's invdesign, not an installed one
OUT = ROOT / "invdesign" / "resources" / "chempot_hosts.json"
SETS = {"WSe2": ["2dmd-wse2-high", "2dmd-wse2-low"], "BN": ["2dmd-hbn-high"], "GaSe": ["2dmd-gase-high"],
        "InSe": ["2dmd-inse-high"], "P": ["2dmd-bp-high"]}
CHGNET_PHASES = ("WS2", "MoSe2")  # from chempot_reference.json (CHGNet, aligned to the DFT reference)


def main() -> None:
    from invdesign.data.dataset import load_dataset
    from invdesign.lattice.hosts import packaged_host, spec
    from invdesign.lattice.stoichiometry import dn_matrix, elements
    from invdesign.synthesis.chempot import load_reference

    first = DATA / SETS["GaSe"][0]
    mu0 = pd.read_csv(first / "elements.csv").set_index("element")["chemical_potential"].astype(float).to_dict()
    pristine = pd.read_csv(first / "initial_structures.csv").set_index("base")
    phases = {}
    for base, row in pristine.iterrows():
        try:
            host = packaged_host(str(base))
        except Exception:  # noqa: BLE001 (a release base we do not package, e.g. V2O5)
            continue
        comp = host.unit_cell.composition.reduced_composition
        n_fu = host.n_sites / comp.num_atoms
        phases[str(base)] = {"composition": {e.symbol: int(v) for e, v in comp.items()},
                             "E_per_fu": float(row["energy"]) / n_fu,
                             "source": f"DFT (2DMD pristine {base} {row['cell_size']} supercell, initial_structures.csv)"}
    ref = load_reference()
    for name in CHGNET_PHASES:
        p = ref["phases"][name]
        phases[name] = {"composition": p["composition"], "E_per_fu": p["E_per_fu"], "source": p["source"]}
    hosts = {}
    for name, sets in SETS.items():
        host = packaged_host(name)
        els = elements(host)
        residual = {}
        for s in sets:
            root = DATA / s
            if not root.is_dir():
                continue
            mu_s = pd.read_csv(root / "elements.csv").set_index("element")["chemical_potential"].astype(float)
            assert all(abs(mu_s[e] - mu0[e]) < 1e-9 for e in els), f"{s}: elements.csv differs from {first.name}'s"
            e_host = float(pd.read_csv(root / "initial_structures.csv").set_index("base").loc[name, "energy"])
            ds = load_dataset(root)
            t = pd.read_csv(root / "targets.csv.gz").set_index("_id").loc[ds.ids]
            d = dn_matrix(ds.occ, ds.host).astype(float)
            r = t["energy"].to_numpy(float) - e_host - d @ np.array([mu0[e] for e in els]) - t["formation_energy"].to_numpy(float)
            residual[s] = {"structures": len(ds), "max_abs_meV": float(np.abs(r).max() * 1e3)}
        comp = phases[name]["composition"]
        hosts[name] = {
            "label": spec(name).label,
            "formula": comp,
            "E_per_fu": phases[name]["E_per_fu"],
            "dH_per_fu": phases[name]["E_per_fu"] - sum(n * mu0[e] for e, n in comp.items()),
            "mu_ref": {e: mu0[e] for e in els},
            "residual": residual,
        }
    doc = {
        "units": "eV per atom (mu), eV per formula unit (E_per_fu, dH_per_fu)",
        "convention": "E_f = E_def - E_pristine - sum_El dn_El mu_El (2DMD, VASP PBE); mu_ref = elements.csv",
        "elemental_mu": mu0,
        "phases": phases,
        "hosts": hosts,
        "provenance": {"script": "scripts/compute_chempot_hosts.py",
                       "data": "2DMD release: elements.csv, initial_structures.csv, targets.csv.gz of "
                               + ", ".join(s for v in SETS.values() for s in v),
                       "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    for name, h in hosts.items():
        print(f"{name}: E/f.u. {h['E_per_fu']:.4f} eV, dH {h['dH_per_fu']:.4f} eV/f.u., residual "
              + ", ".join(f"{s} {v['max_abs_meV']:.1e} meV" for s, v in h["residual"].items()))
    print(f"-> {OUT}")


if __name__ == "__main__":
    main()
