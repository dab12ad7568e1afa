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


def _cluster_index(occ: np.ndarray, host: HostLattice) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Every counted cluster of every configuration: ``(row (M,), column (M,), N, F)``."""
    cloud = defect_cloud(occ, host)
    T = len(host.defect_types)
    npo = int(host.pair_orbits.max()) + 1
    F = T + T * T * npo
    rows_, cols_ = [], []
    for k, (rows, sites, types) in cloud.groups.items():
        rows_.append(np.repeat(rows, k))
        cols_.append(types.ravel())
        pi, pj = pair_index(k)
        if len(pi):
            col = T + (types[:, pi] * T + types[:, pj]) * npo + host.pair_orbits[sites[:, pi], sites[:, pj]]
            rows_.append(np.repeat(rows, len(pi)))
            cols_.append(col.ravel())
    if not rows_:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), cloud.n, F
    return np.concatenate(rows_).astype(np.int64), np.concatenate(cols_).astype(np.int64), cloud.n, F


def cluster_counts(occ: np.ndarray, host: HostLattice) -> np.ndarray:
    """``(N, n_sites)`` uint8 occupancies -> ``(N, T + T^2 n_pair_orbits)`` float32 counts."""
    rows, cols, n, F = _cluster_index(occ, host)
    return np.bincount(rows * F + cols, minlength=n * F).astype(np.float32).reshape(n, F)


def cluster_dot(occ: np.ndarray, host: HostLattice, coef: np.ndarray) -> np.ndarray:
    """``cluster_counts(occ) @ coef`` without forming the counts: ``coef (F, m)`` -> ``(N, m)`` float64.

    A linear model on the counts (ridge cluster expansion) summed over each configuration's
    clusters; cost grows with the number of clusters, not with ``N * F``.
    """
    rows, cols, n, _ = _cluster_index(occ, host)
    coef = np.asarray(coef, dtype=np.float64)
    return np.stack([np.bincount(rows, weights=coef[cols, j], minlength=n) for j in range(coef.shape[1])], axis=1)


def poly2(z: np.ndarray) -> np.ndarray:
    """Degree-2 polynomial features of ``(N, d)``: ``1, z_i, z_i z_j (i <= j)``; ``(d+1)(d+2)/2`` columns (91 for d=12)."""
    n, d = z.shape
    iu, ju = np.triu_indices(d)
    return np.concatenate([np.ones((n, 1)), z, z[:, iu] * z[:, ju]], axis=1)
