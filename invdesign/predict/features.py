"""Wide exact invariant features of configurations (cluster-expansion-like counts).

``cluster_counts`` gives, per configuration, the number of defects of each type (``T`` singlets)
and the number of ordered defect pairs of each (type, type, pair orbit) (``T * T * n_pair_orbits``
pair terms; ``n_pair_orbits`` from :attr:`HostLattice.pair_orbits`). Every count is invariant
under all host operations because pair orbits are. For 8x8 MoS2: ``4 + 16 * 75 = 1204`` columns.
"""

from __future__ import annotations

import numpy as np

from invdesign.embed.geometry import defect_cloud, pair_index
from invdesign.lattice.host import HostLattice


def n_cluster_features(host: HostLattice) -> int:
    """Length of :func:`cluster_counts` rows."""
    T = len(host.defect_types)
    return T + T * T * (int(host.pair_orbits.max()) + 1)


def cluster_counts(occ: np.ndarray, host: HostLattice) -> np.ndarray:
    """``(N, n_sites)`` uint8 occupancies -> ``(N, T + T^2 n_pair_orbits)`` float32 counts."""
    cloud = defect_cloud(occ, host)
    T = len(host.defect_types)
    npo = int(host.pair_orbits.max()) + 1
    F = T + T * T * npo
    flat = []
    for k, (rows, sites, types) in cloud.groups.items():
        flat.append((rows[:, None] * F + types).ravel())
        pi, pj = pair_index(k)
        if len(pi):
            col = T + (types[:, pi] * T + types[:, pj]) * npo + host.pair_orbits[sites[:, pi], sites[:, pj]]
            flat.append((rows[:, None] * F + col).ravel())
    idx = np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64)
    return np.bincount(idx, minlength=cloud.n * F).astype(np.float32).reshape(cloud.n, F)


def poly2(z: np.ndarray) -> np.ndarray:
    """Degree-2 polynomial features of ``(N, d)``: ``1, z_i, z_i z_j (i <= j)``; ``(d+1)(d+2)/2`` columns (91 for d=12)."""
    n, d = z.shape
    iu, ju = np.triu_indices(d)
    return np.concatenate([np.ones((n, 1)), z, z[:, iu] * z[:, ju]], axis=1)
