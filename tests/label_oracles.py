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


_SETUPS = 0  # set-ups done in this process


class SetupCountingOracle:
    """A batch oracle whose first call in a fresh copy does a "set-up" (as CHGNet loads its model): E_f is the
    number of set-ups this process has done so far, gap its pid modulo 1000 (a value a gap can take: one beyond
    +-1000 eV is no measurement and not stored). A worker that keeps one live copy returns 1 always."""

    cheap = False
    name = "setup-counting"

    def __init__(self) -> None:
        self._ready = False

    def __getstate__(self) -> dict:
        return {"_ready": False}

    def evaluate(self, occ, ids):
        import numpy as np

        global _SETUPS
        if not self._ready:
            _SETUPS += 1
            self._ready = True
        return np.column_stack([np.full(len(ids), float(_SETUPS)), np.full(len(ids), float(os.getpid() % 1000))])
