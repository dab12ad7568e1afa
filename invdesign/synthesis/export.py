"""Files for the next tools: VASP and Quantum ESPRESSO inputs and ``candidate.json`` per candidate.

VASP (pymatgen ``MPRelaxSet``, PBE, with 2D-slab overrides): ``ISIF = 2`` (ions relax, the cell
with its vacuum stays fixed), dipole correction along z (``LDIPOL = True, IDIPOL = 3``, centred on
the slab), Gaussian smearing ``SIGMA = 0.05``, ``ENCUT = 520`` eV, ``EDIFFG = -0.02`` eV/A, no +U
(2DMD is plain PBE), spin-polarised; Gamma-centred 2x2x1 k-points for the 8x8 cell (1 along the
vacuum). POTCARs are licensed: ``POTCAR.spec`` lists the symbols (PBE_54), no POTCAR is written and
no ``PMG_VASP_PSP_DIR`` is needed.

Quantum ESPRESSO (``ase.io.write(..., format="espresso-in")``): ``pw.x`` relax, PBE through the
pseudopotentials, which are named ``<El>.pbe.UPF`` (put your library's files, e.g. SSSP PBE, under
those names in ``pseudo_dir``), ``ecutwfc = 50`` / ``ecutrho = 400`` Ry, Marzari-Vanderbilt
smearing, dipole correction along z in the vacuum (``tefield``/``dipfield``, ``edir = 3``), same
k-points as VASP.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

EXPORT_KINDS = ("vasp", "qe", "json")
KPTS = (2, 2, 1)


def parse_export(spec: str | None) -> list[str]:
    """``"vasp,qe,json"`` -> list of kinds (validated)."""
    from invdesign.errors import InvdesignError

    if spec is None:
        return []
    kinds = [k.strip().lower() for k in spec.split(",") if k.strip()]
    bad = [k for k in kinds if k not in EXPORT_KINDS]
    if bad or not kinds:
        raise InvdesignError(f"--export takes a comma-separated list of {', '.join(EXPORT_KINDS)}, not {spec!r}")
    return list(dict.fromkeys(kinds))


def vasp_files(structure, n_kpts: tuple[int, int, int] = KPTS) -> dict[str, str]:
    """``{"POSCAR", "INCAR", "KPOINTS", "POTCAR.spec"}`` texts for a defect supercell ``Structure``."""
    from pymatgen.io.vasp.inputs import Kpoints
    from pymatgen.io.vasp.sets import MPRelaxSet

    zc = float(np.mean(structure.frac_coords[:, 2]))
    incar = {
        "ISIF": 2, "LDIPOL": True, "IDIPOL": 3, "DIPOL": [0.5, 0.5, round(zc, 4)], "ISMEAR": 0, "SIGMA": 0.05,
        "ENCUT": 520, "EDIFF": 1e-5, "EDIFFG": -0.02, "NSW": 200, "IBRION": 2, "LDAU": False, "LASPH": True,
        "LWAVE": False, "LCHARG": False,
    }
    vis = MPRelaxSet(structure, user_incar_settings=incar, user_kpoints_settings=Kpoints.gamma_automatic(n_kpts), sort_structure=True)
    inc = vis.incar
    for k in ("LDAUU", "LDAUJ", "LDAUL", "LDAUTYPE"):
        inc.pop(k, None)
    return {
        "POSCAR": str(vis.poscar),
        "INCAR": str(inc),
        "KPOINTS": str(vis.kpoints),
        "POTCAR.spec": "\n".join(vis.potcar_symbols) + "\n",
    }


def qe_input(structure, n_kpts: tuple[int, int, int] = KPTS) -> str:
    """A ``pw.x`` input (text) for a defect supercell ``Structure``."""
    import io

    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.set_initial_magnetic_moments([0.5] * len(atoms))  # -> starting_magnetization per species (spin-polarised)
    zc = float(np.mean(atoms.get_scaled_positions()[:, 2]))
    emax = (zc + 0.5) % 1.0  # the saw-tooth sits in the vacuum, half a cell from the slab
    input_data = {
        "control": {"calculation": "relax", "prefix": "defect", "pseudo_dir": "./pseudo", "tprnfor": True,
                    "tefield": True, "dipfield": True},
        "system": {"ecutwfc": 50, "ecutrho": 400, "occupations": "smearing", "smearing": "mv", "degauss": 0.01,
                   "nspin": 2,
                   "edir": 3, "eamp": 0.0, "emaxpos": round(emax, 4), "eopreg": 0.05},
        "electrons": {"conv_thr": 1e-8, "mixing_beta": 0.3},
        "ions": {"ion_dynamics": "bfgs"},
    }
    pseudos = {el: f"{el}.pbe.UPF" for el in sorted({s.symbol for s in structure.species})}
    buf = io.StringIO()
    write(buf, atoms, format="espresso-in", input_data=input_data, pseudopotentials=pseudos, kpts=n_kpts)
    return buf.getvalue()


def candidate_record(row: dict, occ: np.ndarray, host, model_info: dict, mu_info: dict, temperature: float) -> dict:
    """``candidate.json`` content for one candidate row of ``candidates.csv``."""
    from invdesign.lattice.stoichiometry import defect_list, dn_columns
    from invdesign.synthesis.chempot import coefficients

    targets = ("formation_energy_per_site", "homo_lumo_gap")
    fe_ref = float(row.get("formation_energy_per_site_ref", row["formation_energy_per_site"]))
    return {
        "id": str(row["id"]),
        "canonical_key": str(row.get("canonical_key", "")),
        "host": host.name,
        "defects": defect_list(occ, host),
        "dn": {k[3:]: int(v[0]) for k, v in dn_columns(occ, host).items()},
        "formation_energy": {**coefficients(fe_ref, occ, host),
                             "reference": f"2DMD DFT (VASP PBE) mu_ref of {host.name}, see summary.json"},
        "chemical_potentials_used": mu_info,
        "predictions": {t: {"value": float(row[t]), "std": float(row[f"{t}_std"]), "unit": "eV"} for t in targets}
        | ({"total_mag": {"value": float(row["total_mag"]), "std": float(row["total_mag_std"]), "unit": "Bohr magneton per cell"}}
           if "total_mag" in row else {}),
        "arrangement": {
            "temperature_K": temperature,
            "e_above_arrangement_min_meV": float(row["e_above_arrangement_min"]),
            "population": float(row["arrangement_population"]),
            "population_std": float(row.get("arrangement_population_std", 0.0)),
            "method": str(row.get("arrangement_method", "")),
        },
        "model": model_info,
        "extrapolation": bool(row.get("extrapolation", False)),
    }


def export_candidate(folder: Path, kinds: list[str], structure, record: dict) -> None:
    """Write the requested files for one candidate into ``folder`` (created)."""
    from invdesign.io import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    if "vasp" in kinds:
        (folder / "vasp").mkdir(exist_ok=True)
        for name, text in vasp_files(structure).items():
            atomic_write_text(folder / "vasp" / name, text)
    if "qe" in kinds:
        (folder / "qe").mkdir(exist_ok=True)
        atomic_write_text(folder / "qe" / "pw.in", qe_input(structure))
    if "json" in kinds:
        atomic_write_text(folder / "candidate.json", json.dumps(record, indent=1) + "\n")
