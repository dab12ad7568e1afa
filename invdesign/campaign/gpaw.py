"""PBE single points through GPAW (LCAO): total energy and HOMO-LUMO gap of a periodic cell.

The level of theory of the 2DMD training data (PBE), at a cost: LCAO with the ``dzp`` basis, real-space grid
spacing 0.2 A, the gamma point only (an 8x8 supercell's Brillouin zone is small), Fermi-Dirac occupations of
0.01 eV, on the unrelaxed geometry of the configuration on the host lattice (2DMD relaxed its structures: the
missing relaxation lowers gaps by ~0.1 eV and raises energies). Spin-polarised for the hosts whose 2DMD data
is (:attr:`invdesign.lattice.hosts.HostSpec.spin_polarised`), started from a small moment on every atom; the gap
is then the smaller of the two spin channels' (``homo_lumo_gap_min``, as 2DMD's published benchmarks take it).

GPAW is optional: ``pip install gpaw`` builds it from source (a C compiler, libxc and a BLAS; Debian:
``g++ libxc-dev libopenblas-dev``) and its PAW setups come from ``gpaw install-data`` or Debian's ``gpaw-data``
(``/usr/share/gpaw-setups``); :func:`gpaw_problem` says in one line which is missing. Cost on one core:
~5-10 CPU-min and ~3 GB per 192-atom 8x8 MoS2 cell (``cpu_s`` in every result).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

#: the protocol, as GPAW's keyword arguments (plus ``spinpol`` per host)
SETTINGS: dict = {"mode": "lcao", "basis": "dzp", "xc": "PBE", "h": 0.2, "kpts": (1, 1, 1),
                  "occupations": {"name": "fermi-dirac", "width": 0.01}}
PROTOCOL = "PBE single point (GPAW LCAO dzp, h 0.2 A, gamma point, Fermi-Dirac 0.01 eV, unrelaxed geometry)"
SETUP_DIRS = ("/usr/share/gpaw-setups", "/usr/local/share/gpaw-setups")  # Debian's gpaw-data; a manual install
INITIAL_MAGMOM = 0.1  # Bohr magneton per atom, spin-polarised hosts


def setup_dirs() -> list[str]:
    """Folders GPAW searches for PAW setups: ``$GPAW_SETUP_PATH`` (colon-separated), GPAW's own list, and
    :data:`SETUP_DIRS`."""
    dirs = [d for d in os.environ.get("GPAW_SETUP_PATH", "").split(os.pathsep) if d]
    try:
        from gpaw import setup_paths

        dirs += [str(d) for d in setup_paths]
    except ImportError:
        pass
    return list(dict.fromkeys(dirs + list(SETUP_DIRS)))


def gpaw_problem(elements: list[str] | tuple[str, ...] = ()) -> str | None:
    """Why GPAW cannot run here (one line), or None: the package must import and a PBE setup of every one of
    ``elements`` must exist in :func:`setup_dirs`."""
    try:
        import gpaw  # noqa: F401
    except ImportError as exc:
        return (f"the gpaw package does not import ({exc}); pip install gpaw (builds from source: a C compiler, "
                "libxc and a BLAS)")
    for el in elements:
        if not any(Path(d).is_dir() and any(Path(d).glob(f"{el}.PBE*")) for d in setup_dirs()):
            return (f"no GPAW PBE setup for {el} in {', '.join(setup_dirs())} (gpaw install-data DIR, or Debian's "
                    "gpaw-data; set GPAW_SETUP_PATH)")
    return None


def run_structure(structure, spinpol: bool = False) -> dict:
    """One single point on a pymatgen ``Structure`` (Angstrom): ``energy`` (eV), ``homo_lumo_gap``, ``homo``,
    ``lumo`` (eV; with ``spinpol`` the gap is the smaller channel's and ``homo``/``lumo`` that channel's),
    ``total_mag`` (Bohr magnetons; 0 without ``spinpol``), ``cpu_s`` (CPU seconds of this process) and ``wall_s``."""
    import gpaw
    from gpaw import GPAW
    from pymatgen.io.ase import AseAtomsAdaptor

    for d in setup_dirs():  # GPAW read $GPAW_SETUP_PATH when it was imported: add the folders it lacks
        if Path(d).is_dir() and d not in gpaw.setup_paths:
            gpaw.setup_paths.append(d)
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.pbc = True
    if spinpol:
        atoms.set_initial_magnetic_moments(np.full(len(atoms), INITIAL_MAGMOM))
    t0, c0 = time.perf_counter(), time.process_time()
    atoms.calc = GPAW(**SETTINGS, spinpol=bool(spinpol), txt=None)
    energy = float(atoms.get_potential_energy())
    calc = atoms.calc
    if spinpol:  # the channel with the smaller gap
        homo, lumo = min((tuple(map(float, calc.get_homo_lumo(spin=s))) for s in (0, 1)), key=lambda p: p[1] - p[0])
        mag = float(calc.get_magnetic_moment())
    else:
        homo, lumo = (float(x) for x in calc.get_homo_lumo())
        mag = 0.0
    return {"energy": energy, "homo_lumo_gap": max(lumo - homo, 0.0), "homo": homo, "lumo": lumo, "total_mag": mag,
            "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0}
