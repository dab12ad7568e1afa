"""Cheap module-level oracles for the ``invdesign label`` tests (importable by Dask workers via PYTHONPATH)."""

from __future__ import annotations

import os
import time


def slow_oracle(structure) -> dict:
    """Sleeps 0.15 s; E_f = 1 meV per missing atom (exact, checkable), gap = the worker's pid (who ran it)."""
    time.sleep(0.15)
    return {"formation_energy_per_site": 0.001 * (192 - len(structure)), "homo_lumo_gap": float(os.getpid())}


def failing_oracle(structure) -> dict:
    """Raises for structures with W in them (a failure is recorded, the run goes on)."""
    if "W" in structure.composition.as_dict():
        raise RuntimeError("no W here")
    return {"formation_energy_per_site": 0.001 * (192 - len(structure)), "homo_lumo_gap": 1.0}
