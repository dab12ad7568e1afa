"""Precompute the packaged default host: its unit cell as JSON (no CIF parsing at start-up) and its
symmetry tables (site permutations from spglib, pair orbits) as ``resources/symmetry_<fingerprint>_<symprec>.npz``;
the same tables for the larger MoS2 cells the 8x8-trained model serves (12x12, 16x16).

    python scripts/precompute_host.py   # rerun whenever the packaged CIF or the default supercell changes
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

RES = Path(__file__).resolve().parent.parent / "invdesign" / "resources"


def main() -> None:
    from invdesign.lattice.host import HostLattice, write_symmetry_table

    uc = Structure.from_file(str(RES / "MoS2_unit_cell.cif"))
    (RES / "MoS2_unit_cell.json").write_text(json.dumps(uc.as_dict()))
    host = HostLattice.from_unit_cell(uc, (8, 8))
    fresh = HostLattice.from_unit_cell("builtin:MoS2", (8, 8))
    assert fresh.fingerprint == host.fingerprint, "JSON cell changes the host fingerprint"
    p = write_symmetry_table(host, RES)
    print(p, host.perms.shape, int(host.pair_orbits.max()) + 1, "pair orbits")
    assert np.array_equal(host.perms[0], np.arange(host.n_sites))
    for n in LARGER:
        big = HostLattice.from_unit_cell("builtin:MoS2", (n, n))
        p = write_symmetry_table(big, RES)
        print(p, big.perms.shape, int(big.pair_orbits.max()) + 1, "pair orbits")


LARGER = (12, 16)  # supercells served by local geometry (invdesign.predict.transfer)


if __name__ == "__main__":
    main()
