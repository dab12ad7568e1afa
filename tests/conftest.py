"""Shared fixtures: the 2DMD share in ../shared (when present) and the default host.

Tests run on the real share when it is there and on small configurations they make
themselves otherwise; CI always has the share (``INVDESIGN_SHARED`` or ``../shared``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def random_configurations(host, rng: np.random.Generator, n_conf: int, lo: int, hi: int) -> np.ndarray:
    """``(n_conf, n_sites)`` uint8: each row ``lo..hi`` defects on random sites, each a random defect type
    of its site's sublattice (uniform; any density, no composition limits)."""
    occ = np.repeat(host.host_code[None, :], n_conf, axis=0)
    for row in occ:
        for site in rng.choice(host.n_sites, int(rng.integers(lo, hi + 1)), replace=False):
            codes = [c for s, c in host.defect_types if s == host.sublattice[site]]
            row[site] = codes[rng.integers(len(codes))]
    return occ


def write_small_pool(d: Path, host) -> Path:
    """Write 6 CIFs (3 of V_S + W_Mo, 3 of 2 Se_S; seeded) into the new folder ``d``; return it."""
    from invdesign.io import write_structure
    from invdesign.lattice.enumerate import sample_configurations

    d.mkdir()
    occ = np.concatenate([sample_configurations(host, {"V_S": 1, "W_Mo": 1}, 3, 1),
                          sample_configurations(host, {"Se_S": 2}, 3, 2)])
    for i, o in enumerate(occ):
        write_structure(o, host, d / f"s{i}.cif")
    return d


def shared_dir() -> Path:
    return Path(os.environ.get("INVDESIGN_SHARED", ROOT.parent / "shared"))


def share_path() -> Path | None:
    p = shared_dir() / "data" / "2dmd-mos2-low"
    return p if (p / "targets.csv.gz").exists() else None


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Every test session gets its own cache folder (tests never touch ~/.cache)."""
    os.environ["INVDESIGN_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("INVDESIGN_PROGRESS", "0")
    yield


@pytest.fixture(scope="session")
def host():
    from invdesign.lattice.host import HostLattice

    return HostLattice.default()


@pytest.fixture(scope="session")
def share() -> Path | None:
    """Path of the 2DMD low-density share, or None where it is absent."""
    return share_path()


@pytest.fixture(scope="session")
def dataset(host, share):
    """The 2DMD share as a Dataset; where it is absent, 300 random 1-3-defect configs without targets."""
    from invdesign.data.dataset import Dataset, load_2dmd
    from invdesign.lattice.enumerate import sample_configurations

    if share is not None:
        return load_2dmd(share)
    rng = np.random.default_rng(0)
    parts = [sample_configurations(host, comp, 100, rng) for comp in ({"V_S": 1, "W_Mo": 1}, {"Se_S": 2, "V_Mo": 1}, {"V_S": 3})]
    occ = np.concatenate(parts)
    return Dataset(host, np.array([f"gen{i:04d}" for i in range(len(occ))], dtype=object), occ, name="generated")
