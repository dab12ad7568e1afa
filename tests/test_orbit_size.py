"""orbit_size by the orbit-stabiliser theorem equals the count of distinct symmetry images (issue 25: arrangement
populations that keep up)."""

from __future__ import annotations

import numpy as np

from invdesign.lattice.enumerate import enumerate_orbits, sample_configurations
from invdesign.synthesis.arrangements import orbit_size


def _by_images(occ, host) -> int:
    return int(len(np.unique(np.asarray(occ)[np.asarray(host.perms, dtype=np.int64)], axis=0)))


def test_orbit_size_equals_distinct_images(host):
    rng = np.random.default_rng(1)
    occ = np.concatenate([
        sample_configurations(host, {"V_S": 4, "W_Mo": 3, "Se_S": 2}, 40, rng),
        sample_configurations(host, {"V_S": 2}, 40, rng),
        sample_configurations(host, {"V_Mo": 6, "Se_S": 12}, 20, rng),
        host.host_code[None],
    ])
    assert [orbit_size(o, host) for o in occ] == [_by_images(o, host) for o in occ]


def test_orbit_size_equals_the_enumeration(host):
    """Against the enumerated 1-2-defect orbit table's own sizes (symmetric orbits included)."""
    tab = enumerate_orbits(host, 2, 1)
    rows = np.concatenate([np.flatnonzero(tab.orbit_size < tab.orbit_size.max()), np.arange(0, len(tab.occ), 7)])
    assert [orbit_size(tab.occ[r], host) for r in rows] == [int(tab.orbit_size[r]) for r in rows]
