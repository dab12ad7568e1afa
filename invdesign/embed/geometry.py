"""The defect point cloud of a configuration, in a form whose symmetry is exact.

A configuration with ``k`` defects is reduced to its defect *types* (indices into
:attr:`HostLattice.defect_types`, so ``V_Mo != V_S``) and *sites*. Geometry enters only through
quantities that transform simply under the host space group:

- relative in-plane fractional displacements ``f_j - f_i``, encoded by periodic Fourier
  features ``cos/sin(2 pi n . (f_j - f_i))`` for a few integer vectors ``n``; these do not change
  under lattice translations and never need a (tie-prone) minimum-image choice;
- the height of each site above the metal plane (Angstrom; ``sigma_h`` flips its sign);
- the minimum-image distance of every pair (Angstrom; invariant under every operation).

The point-group part is handled by evaluating these features once for each of the 12 cosets of
the translation subgroup (:func:`point_op_representatives`): the set of 12 oriented copies of
a configuration is the same, up to translations and defect order, for every member of its
symmetry orbit, so a network that sums over defects and averages over the 12 copies is exactly
invariant (see :mod:`invdesign.embed.encoder`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from invdesign.errors import InvdesignError
from invdesign.lattice.host import HostLattice

# integer vectors n (upper half plane) of the in-plane Fourier features
FREQS = np.array([(a, b) for a in range(-2, 3) for b in range(-2, 3) if (a, b) > (0, 0)], dtype=np.float64)
N_RBF = 16
RBF_MAX = 13.0  # Angstrom; 8x8 MoS2 has minimum-image distances up to ~14.7 A


def type_table(host: HostLattice) -> np.ndarray:
    """``(n_sublattices, n_species)`` int: defect type index of (sublattice, species), -1 for host/none."""
    cached = host._cache.get("embed_type_table")
    if cached is None:
        cached = np.full((len(host.sublattices), host.n_species), -1, dtype=np.int64)
        for t, (s, c) in enumerate(host.defect_types):
            cached[s, c] = t
        host._cache["embed_type_table"] = cached
    return cached


def point_op_representatives(host: HostLattice) -> np.ndarray:
    """Indices into ``host.perms`` of one operation per coset of the translation subgroup.

    Two operations share a coset iff they act identically on relative displacements
    (``f[p[j]] - f[p[0]]`` mod 1 for a few reference sites). For MoS2 (P-6m2) there are 12.
    """
    cached = host._cache.get("embed_point_ops")
    if cached is None:
        f = host.frac_coords
        rng = np.random.default_rng(0)
        ref = np.unique(np.concatenate([[1], rng.choice(host.n_sites, size=min(8, host.n_sites), replace=False)]))
        seen: dict[tuple, int] = {}
        for g, p in enumerate(host.perms.astype(np.int64)):
            d = np.mod(f[p[ref]] - f[p[0]] + 1e-7, 1.0)
            sig = tuple(np.round(d, 4).ravel())
            seen.setdefault(sig, g)
        cached = np.array(sorted(seen.values()), dtype=np.int64)
        if host.n_ops % len(cached):
            raise InvdesignError(f"{len(cached)} point operations do not divide the group order {host.n_ops}")
        host._cache["embed_point_ops"] = cached
    return cached


def site_heights(host: HostLattice) -> np.ndarray:
    """``(n_sites,)`` height of each site above the mean plane of the first sublattice (Angstrom)."""
    z = host.cart_coords[:, 2].copy()
    c = host.lattice.c
    z0 = z[host.sublattice == 0].mean()
    return np.mod(z - z0 + c / 2, c) - c / 2


@dataclass
class DefectCloud:
    """Defect point clouds of a batch, grouped by defect count.

    Attributes:
        groups: ``{k: (rows, sites, types)}`` with ``rows (M,)`` positions in the batch,
            ``sites (M, k)`` int64 defect sites in increasing order, ``types (M, k)`` int64 defect types.
        n: batch size.
    """

    groups: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]
    n: int


def defect_cloud(occ: np.ndarray, host: HostLattice) -> DefectCloud:
    """Split ``(N, n_sites)`` uint8 occupancies into per-``k`` defect site/type arrays.

    Raises:
        InvdesignError: wrong shape, or a species not allowed on its sublattice.
    """
    occ = np.asarray(occ)
    if occ.ndim == 1:
        occ = occ[None]
    if occ.ndim != 2 or occ.shape[1] != host.n_sites:
        raise InvdesignError(f"occupancies must be (N, {host.n_sites}); got {occ.shape}")
    table = type_table(host)
    sub = host.sublattice.astype(np.int64)
    mask = occ != host.host_code[None, :]
    counts = mask.sum(axis=1)
    groups = {}
    for k in np.unique(counts):
        rows = np.flatnonzero(counts == k)
        sites = np.nonzero(mask[rows])[1].reshape(len(rows), int(k)).astype(np.int64)
        species = np.take_along_axis(occ[rows].astype(np.int64), sites, axis=1)
        if species.size and species.max() >= host.n_species:
            raise InvdesignError(f"species code {int(species.max())} is not one of the host's {host.n_species}")
        types = table[sub[sites], species]
        if (types < 0).any():
            raise InvdesignError("a species is not allowed on its sublattice")
        groups[int(k)] = (rows, sites, types)
    return DefectCloud(groups, len(occ))


def pair_index(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ordered pairs ``(i, j), i != j`` of ``k`` defects: two ``(k (k-1),)`` index arrays."""
    i, j = np.nonzero(~np.eye(k, dtype=bool))
    return i, j


def triple_index(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ordered triples ``(i, j, l)`` of distinct defects as indices into :func:`pair_index` pairs.

    Returns ``(p_ij, p_il)``, each ``(k (k-1) (k-2),)``: the pair numbers of ``(i, j)`` and ``(i, l)``.
    """
    pi, pj = pair_index(k)
    num = {(int(a), int(b)): n for n, (a, b) in enumerate(zip(pi, pj))}
    a, b = [], []
    for i in range(k):
        for j in range(k):
            for m in range(k):
                if len({i, j, m}) == 3:
                    a.append(num[(i, j)])
                    b.append(num[(i, m)])
    return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)


def pair_features(sites: np.ndarray, types: np.ndarray, host: HostLattice) -> np.ndarray:
    """Oriented pair features of every ordered defect pair, for each of the 12 point operations.

    Args:
        sites: ``(M, k)`` int defect sites.
        types: ``(M, k)`` int defect types.

    Returns:
        ``(M, P, k (k-1), F)`` float64 with ``P`` point operations; per pair:
        one-hot type of ``i`` and ``j`` (``2 T``), Gaussian RBF of the minimum-image distance
        (``N_RBF``), Fourier features of the oriented in-plane displacement (``2 * len(FREQS)``),
        heights of ``i`` and ``j`` (Angstrom / 3).
    """
    M, k = sites.shape
    T = len(host.defect_types)
    ops = point_op_representatives(host)
    P = len(ops)
    pi, pj = pair_index(k)
    npair = len(pi)
    F = 2 * T + N_RBF + 2 * len(FREQS) + 2
    out = np.zeros((M, P, npair, F), dtype=np.float64)
    if npair == 0 or M == 0:
        return out
    eye = np.eye(T)
    out[..., :T] = eye[types[:, pi]][:, None]
    out[..., T : 2 * T] = eye[types[:, pj]][:, None]
    dist = host.min_image_distance[sites[:, pi], sites[:, pj]]  # (M, npair)
    centers = np.linspace(0.0, RBF_MAX, N_RBF)
    width = centers[1] - centers[0]
    out[..., 2 * T : 2 * T + N_RBF] = np.exp(-0.5 * ((dist[..., None] - centers) / width) ** 2)[:, None]
    perms = host.perms[ops].astype(np.int64)  # (P, n_sites)
    img = perms[:, sites]  # (P, M, k)
    f = host.frac_coords[:, :2]
    d = f[img[:, :, pj]] - f[img[:, :, pi]]  # (P, M, npair, 2)
    phase = 2 * np.pi * d @ FREQS.T  # (P, M, npair, nf)
    o = 2 * T + N_RBF
    nf = len(FREQS)
    out[..., o : o + nf] = np.cos(phase).transpose(1, 0, 2, 3)
    out[..., o + nf : o + 2 * nf] = np.sin(phase).transpose(1, 0, 2, 3)
    z = site_heights(host) / 3.0
    out[..., -2] = z[img[:, :, pi]].transpose(1, 0, 2)
    out[..., -1] = z[img[:, :, pj]].transpose(1, 0, 2)
    return out


def n_pair_features(host: HostLattice) -> int:
    """Length ``F`` of one pair feature vector (see :func:`pair_features`)."""
    return 2 * len(host.defect_types) + N_RBF + 2 * len(FREQS) + 2


def single_heights(sites: np.ndarray, host: HostLattice) -> np.ndarray:
    """``(M, P, k)`` float64 height (Angstrom / 3) of each defect under each point operation."""
    ops = point_op_representatives(host)
    img = host.perms[ops].astype(np.int64)[:, sites]  # (P, M, k)
    return (site_heights(host)[img] / 3.0).transpose(1, 0, 2)
