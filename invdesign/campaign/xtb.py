"""GFN1-xTB single points through ``tblite``: total energy and HOMO-LUMO gap of a periodic cell.

The calculation is periodic with the gamma point only (an 8x8 supercell's Brillouin zone is small), on
the unrelaxed geometry, at tblite's default electronic temperature (300 K) and SCF settings. It runs in
a fresh Python subprocess (this file run as a script) for two reasons:

- speed: the ``tblite`` wheel ships a reference BLAS that is ~4x slower than OpenBLAS on these cells
  (pristine 8x8 MoS2: 141 vs 32 CPU-s). The subprocess starts with an OpenBLAS library preloaded
  (``LD_PRELOAD``; :func:`find_openblas`: ``$INVDESIGN_XTB_BLAS``, else Debian/Ubuntu's
  ``libopenblas0`` at its usual paths), one thread, which replaces the bundled BLAS. Without one the
  calculation still runs, on the bundled BLAS, and says so once on stderr (and in the ``blas`` output);
- isolation: a crash or a runaway of the Fortran library ends the subprocess, not the caller.

Cost: ~20-40 CPU-s and ~0.5 GB per 192-atom MoS2 cell with OpenBLAS (``cpu_s`` in every result).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from invdesign.errors import InvdesignError

HARTREE_EV = 27.211386245988  # eV per Hartree (CODATA 2018)
BOHR_A = 0.529177210903  # Angstrom per Bohr (CODATA 2018)
METHOD = "GFN1-xTB"
BLAS_ENV = "INVDESIGN_XTB_BLAS"  # path of an OpenBLAS shared library to preload, or "bundled" for the wheel's BLAS
OPENBLAS_PATHS = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
    "/usr/local/lib/libopenblas.so.0",
)
_WARNED: set[str] = set()
# the subprocess runs this file as a script: it imports numpy, tblite and invdesign.errors, not the campaign package
_PKG_ROOT = str(Path(__file__).resolve().parents[2])
_WORKER = (f"import sys; sys.path.insert(0, {_PKG_ROOT!r}); import runpy; "
           f"runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')")


def find_openblas() -> str | None:
    """Path of an OpenBLAS shared library to preload under tblite, or None (use the wheel's bundled BLAS).

    ``$INVDESIGN_XTB_BLAS`` decides when set (a path, or ``bundled``); a path that does not exist is an
    error, never silently ignored. Otherwise the first of :data:`OPENBLAS_PATHS` that exists.
    """
    env = os.environ.get(BLAS_ENV, "").strip()
    if env:
        if env.lower() == "bundled":
            return None
        if not Path(env).is_file():
            raise InvdesignError(f"${BLAS_ENV}={env!r} is not a file (an OpenBLAS .so, or 'bundled')")
        return env
    return next((p for p in OPENBLAS_PATHS if Path(p).is_file()), None)


def tblite_available() -> bool:
    """Whether the ``tblite`` Python package is importable."""
    import importlib.util

    return importlib.util.find_spec("tblite") is not None


def homo_lumo(eps: np.ndarray, n_electrons: float) -> tuple[float, float]:
    """``(HOMO, LUMO)`` (same unit as ``eps``) of a restricted calculation with ``n_electrons`` electrons.

    For an even count the HOMO is orbital ``n/2 - 1`` of the sorted energies and the LUMO orbital ``n/2``;
    for an odd count the singly occupied orbital ``k`` gives two spin channels and the smaller of their gaps
    is taken (``min(e[k+1] - e[k], e[k] - e[k-1])``, the 2DMD convention of the minimum over spins).
    """
    e = np.sort(np.asarray(eps, dtype=float))
    n = int(round(float(n_electrons)))
    if n <= 0 or n >= 2 * len(e):
        raise InvdesignError(f"cannot place {n} electrons in {len(e)} orbitals")
    if n % 2 == 0:
        return float(e[n // 2 - 1]), float(e[n // 2])
    k = n // 2
    if k + 1 < len(e) and (k == 0 or e[k + 1] - e[k] <= e[k] - e[k - 1]):
        return float(e[k]), float(e[k + 1])
    return float(e[k - 1]), float(e[k])


def singlepoint(numbers: Sequence[int], positions: np.ndarray, cell: np.ndarray, method: str = METHOD,
                accuracy: float = 1.0, max_iter: int = 250) -> dict:
    """One GFN-xTB single point in this process (see :func:`run` for the isolated, OpenBLAS-backed call).

    Args:
        numbers: ``(N,)`` atomic numbers.
        positions: ``(N, 3)`` Cartesian coordinates in Angstrom.
        cell: ``(3, 3)`` lattice vectors (rows) in Angstrom; periodic in all three directions.
        method: ``GFN1-xTB`` or ``GFN2-xTB``. accuracy, max_iter: tblite's SCF settings.

    Returns:
        ``{"energy": eV, "gap": eV, "homo": eV, "lumo": eV, "n_electrons", "cpu_s": CPU seconds}``.

    Raises:
        InvdesignError: tblite is missing, or the SCF failed (the tblite message is kept).
    """
    try:
        from tblite.interface import Calculator
    except ImportError:
        raise InvdesignError("the xtb oracle needs the tblite package (pip install tblite)") from None
    t0 = time.process_time()
    calc = Calculator(method, np.asarray(numbers, dtype=np.int32), np.asarray(positions, float) / BOHR_A,
                      lattice=np.asarray(cell, float) / BOHR_A, periodic=np.array([True, True, True]))
    calc.set("verbosity", 0)
    calc.set("accuracy", float(accuracy))
    calc.set("max-iter", int(max_iter))
    try:
        res = calc.singlepoint()
    except Exception as exc:  # noqa: BLE001 - tblite raises its own error type for a failed SCF
        raise InvdesignError(f"{method} single point failed: {str(exc).strip()[:200]}") from None
    eps = np.asarray(res.get("orbital-energies"), float) * HARTREE_EV
    n_el = float(np.sum(res.get("orbital-occupations")))
    homo, lumo = homo_lumo(eps, n_el)
    return {"energy": float(res.get("energy")) * HARTREE_EV, "gap": lumo - homo, "homo": homo, "lumo": lumo,
            "n_electrons": n_el, "cpu_s": time.process_time() - t0}


def run(numbers: Sequence[int], positions: np.ndarray, cell: np.ndarray, method: str = METHOD,
        threads: int = 1, timeout: float | None = None) -> dict:
    """:func:`singlepoint` in a fresh subprocess with OpenBLAS preloaded (``threads`` BLAS/OpenMP threads).

    Returns the :func:`singlepoint` dict plus ``blas`` (the preloaded library, or ``bundled``) and
    ``wall_s`` (seconds, including the subprocess start, ~1 s). A failed SCF, a crash or a timeout
    raises :class:`InvdesignError` with the reason.
    """
    blas = find_openblas()
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(int(threads))
    env.setdefault("OMP_STACKSIZE", "256M")
    if blas is not None:
        env["LD_PRELOAD"] = " ".join(p for p in (blas, env.get("LD_PRELOAD", "")) if p)
    elif "bundled" not in _WARNED and os.environ.get(BLAS_ENV, "").strip().lower() != "bundled":
        _WARNED.add("bundled")
        print(f"invdesign xtb: no OpenBLAS found (set ${BLAS_ENV} or install libopenblas0): tblite runs on its "
              "bundled reference BLAS, about 4x slower", file=sys.stderr)
    payload = json.dumps({"numbers": [int(z) for z in numbers], "positions": np.asarray(positions, float).tolist(),
                          "cell": np.asarray(cell, float).tolist(), "method": method})
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", _WORKER], input=payload, capture_output=True, text=True, env=env,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise InvdesignError(f"{method} single point ran past {timeout:g} s") from None
    out = proc.stdout.strip().splitlines()
    try:
        res = json.loads(out[-1]) if out else None
    except ValueError:
        res = None
    if not isinstance(res, dict):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise InvdesignError(f"{method} subprocess failed (exit {proc.returncode}): {tail}")
    if "error" in res:
        raise InvdesignError(res["error"])
    res["blas"] = blas or "bundled"
    res["wall_s"] = time.perf_counter() - t0
    return res


def run_structure(structure, method: str = METHOD, threads: int = 1, timeout: float | None = None) -> dict:
    """:func:`run` on a pymatgen ``Structure`` (Angstrom)."""
    return run([site.specie.Z for site in structure], structure.cart_coords, structure.lattice.matrix, method,
               threads, timeout)


def main() -> int:
    """Subprocess entry: a JSON request on stdin, the result (or ``{"error": ...}``) as the last stdout line."""
    req = json.loads(sys.stdin.read())
    try:
        res = singlepoint(req["numbers"], np.array(req["positions"]), np.array(req["cell"]), req.get("method", METHOD))
    except InvdesignError as exc:
        res = {"error": str(exc)}
    sys.stdout.write("\n" + json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
