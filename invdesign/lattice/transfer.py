"""Site pairs of a larger supercell mapped onto the pairs of a trained (smaller) one by local geometry.

A model trained on one supercell (8x8 MoS2) reads geometry only through site *pairs*: the
encoder's pair features and the heads' pair-orbit counts are functions of the pair's translation
class ``(basis atom of i, displacement j - i modulo the cell)``. A pair of a larger cell of the
same host (12x12, 16x16) has a definite local geometry when its minimum-image displacement ``D``
(Cartesian, Angstrom) is unique; the trained cell *represents* that geometry when ``D`` is also the
unique shortest image of its own class in the trained cell (``D + L s`` longer than ``D`` for every
trained-cell lattice vector ``L s != 0``). Then the big-cell pair is mapped onto that trained-cell
pair: same species sublattices, same displacement, same distance, same heights; every geometric
feature of the pair is identical.

Pairs whose ``D`` the trained cell cannot represent (longer than about half the trained cell, or
on its boundary where two images tie) are *beyond the trained range*: no trained term exists for
them (``-1`` in :attr:`CellMap.small_j`). Both conditions depend only on distances and lattice
vectors, which the host's point group preserves, so the set of beyond pairs is invariant under
every symmetry of the big cell.

Only diagonal supercells (``NxM``) of the same unit cell and substituents are mapped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from invdesign.errors import InvdesignError
from invdesign.lattice.host import HostLattice

TOL = 1e-4  # Angstrom: two images closer than this in length tie


def unit_fingerprint(host: HostLattice) -> str:
    """Hash of what two supercells must share to be mapped: unit cell, species, substituents."""
    h = hashlib.sha256()
    uc = host.unit_cell
    h.update(np.round(uc.lattice.matrix, 6).tobytes())
    h.update(np.round(np.mod(uc.frac_coords, 1.0), 6).tobytes())
    h.update(",".join(s.specie.symbol for s in uc).encode())
    h.update(repr(sorted((k, sorted(v)) for k, v in host.substituents.items())).encode())
    return h.hexdigest()[:16]


def _diag(host: HostLattice) -> np.ndarray:
    m = np.asarray(host.matrix, dtype=np.int64)
    if np.count_nonzero(m - np.diag(np.diag(m))) or m[2, 2] != 1:
        raise InvdesignError(f"host {host.name}: only NxM supercells (diagonal, one layer) can be mapped onto a trained cell")
    return np.diag(m)


def cell_coords(host: HostLattice) -> tuple[np.ndarray, np.ndarray]:
    """``basis (n_sites,)`` int64 index of each site's unit-cell atom and ``cell (n_sites, 2)`` int64 its cell."""
    cached = host._cache.get("transfer_cell_coords")
    if cached is None:
        n = _diag(host)
        u = host.frac_coords * n  # unit-cell fractional coordinates
        basis_f = np.mod(host.unit_cell.frac_coords, 1.0)
        d = u[:, None, :] - basis_f[None, :, :]
        d -= np.round(d)
        b = np.argmin(np.linalg.norm(d @ host.unit_cell.lattice.matrix, axis=-1), axis=1).astype(np.int64)
        cell = np.round(u - basis_f[b])[:, :2].astype(np.int64) % n[:2]
        cached = (b, cell)
        host._cache["transfer_cell_coords"] = cached
    return cached


def site_index(host: HostLattice) -> np.ndarray:
    """``(n_basis, N1, N2)`` int64 site at (basis atom, cell): the inverse of :func:`cell_coords`."""
    cached = host._cache.get("transfer_site_index")
    if cached is None:
        b, cell = cell_coords(host)
        n = _diag(host)
        cached = np.full((len(host.unit_cell), n[0], n[1]), -1, dtype=np.int64)
        cached[b, cell[:, 0], cell[:, 1]] = np.arange(host.n_sites)
        if (cached < 0).any():
            raise InvdesignError(f"host {host.name}: sites do not fill the supercell")
        host._cache["transfer_site_index"] = cached
    return cached


def _class_min_images(host: HostLattice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum images per translation class ``(basis i, basis j, cell displacement mod N)``.

    Returns ``shift (B, B, N1, N2, 2)`` int64, ``dist (B, B, N1, N2)`` float64, ``unique`` bool (see :func:`min_images`).
    """
    n = _diag(host)[:2]
    uc = host.unit_cell
    basis_f = np.mod(uc.frac_coords, 1.0)
    A = uc.lattice.matrix
    B = len(uc)
    dc = np.stack(np.meshgrid(np.arange(n[0]), np.arange(n[1]), indexing="ij"), axis=-1).reshape(-1, 2)  # (N1 N2, 2)
    images = np.array([(s1, s2) for s1 in (-1, 0, 1) for s2 in (-1, 0, 1)], dtype=np.int64) * n
    cand = dc[:, None, :] + images[None]  # (M, 9, 2)
    f = np.zeros((B, B) + cand.shape[:2] + (3,))
    f[..., :2] = cand
    f += (basis_f[None, :, :] - basis_f[:, None, :])[:, :, None, None, :]
    f[..., 2] -= np.round(f[..., 2])
    length = np.linalg.norm(f @ A, axis=-1)  # (B, B, M, 9)
    order = np.argsort(length, axis=-1, kind="stable")
    first = np.take_along_axis(length, order[..., :1], axis=-1)[..., 0]
    second = np.take_along_axis(length, order[..., 1:2], axis=-1)[..., 0]
    shift = cand[np.arange(len(dc))[None, None, :], order[..., 0]]  # (B, B, M, 2)
    shape = (B, B, n[0], n[1])
    return shift.reshape(shape + (2,)), first.reshape(shape), (second > first + TOL).reshape(shape)


def min_images(host: HostLattice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-image displacement of every ordered site pair, in whole unit cells.

    Returns:
        ``shift (n, n, 2)`` int64 cell displacement ``c`` such that site ``j`` seen from ``i`` sits at
        ``basis_j + c`` relative to ``basis_i`` in the nearest image; ``dist (n, n)`` float64 its length
        (Angstrom); ``unique (n, n)`` bool, no other image within :data:`TOL` of that length.
    """
    cached = host._cache.get("transfer_min_images")
    if cached is None:
        b, cell = cell_coords(host)
        n = _diag(host)[:2]
        shift_c, dist_c, uniq_c = _class_min_images(host)
        dc = np.mod(cell[None, :, :] - cell[:, None, :], n)  # (n, n, 2)
        at = (b[:, None], b[None, :], dc[..., 0], dc[..., 1])
        cached = (shift_c[at], dist_c[at], uniq_c[at])
        host._cache["transfer_min_images"] = cached
    return cached


@dataclass
class CellMap:
    """Pairs of ``big`` mapped onto pairs of the trained ``small`` supercell (see the module docstring).

    Attributes:
        big, small: the hosts (same unit cell and substituents; diagonal supercells).
        small_i, small_j: ``(n_big, n_big)`` int32: the ``small`` site pair ``(small_i, small_j)`` with the
            same local geometry as the big pair ``(i, j)``; ``small_j == -1`` where the pair is beyond the
            trained range (and on the diagonal).
        reach: ``(n_big, n_big)`` bool, ``small_j >= 0``.
        range_A: the longest separation (Angstrom) the small cell represents among the big cell's pairs.
    """

    big: HostLattice
    small: HostLattice
    small_i: np.ndarray
    small_j: np.ndarray
    reach: np.ndarray
    range_A: float

    @property
    def tag(self) -> str:
        """``"12x12 -> 8x8"``."""
        return f"{cell_tag(self.big)} -> {cell_tag(self.small)}"

    def beyond_pairs(self, occ: np.ndarray) -> np.ndarray:
        """``(N,)`` int64 number of unordered defect pairs of ``(N, n_big)`` configurations beyond the trained range."""
        occ = np.atleast_2d(np.asarray(occ))
        mask = occ != self.big.host_code[None, :]
        counts = mask.sum(axis=1)
        out = np.zeros(len(occ), dtype=np.int64)
        far = ~self.reach
        np.fill_diagonal(far, False)
        for k in np.unique(counts):
            if k < 2:
                continue
            rows = np.flatnonzero(counts == k)
            sites = np.nonzero(mask[rows])[1].reshape(len(rows), int(k))
            out[rows] = far[sites[:, :, None], sites[:, None, :]].sum(axis=(1, 2)) // 2
        return out

    def unwrap(self, occ_small: np.ndarray) -> np.ndarray:
        """``(N, n_small)`` configurations of the small cell -> ``(N, n_big)`` ones with the same defects placed
        at the small cell's minimum-image displacements from the first defect (one unwrapping; where two images
        tie in the small cell the first found is used). The same local cluster, in the bigger cell."""
        occ_small = np.atleast_2d(np.asarray(occ_small, dtype=np.uint8))
        bs, cs = cell_coords(self.small)
        shift_s, _, _ = min_images(self.small)
        idx_b = site_index(self.big)
        nb = _diag(self.big)[:2]
        out = np.repeat(self.big.host_code[None], len(occ_small), axis=0)
        host_s = self.small.host_code
        for r, o in enumerate(occ_small):
            s = np.flatnonzero(o != host_s)
            if not len(s):
                continue
            a = s[0]
            cells = (cs[a][None, :] + shift_s[a, s]) % nb  # anchor's cell + displacement, in the big cell
            sites = idx_b[bs[s], cells[:, 0], cells[:, 1]]
            if len(set(sites.tolist())) != len(s):
                raise InvdesignError(f"configuration {r} of {self.small.name} does not fit into {self.big.name}")
            out[r, sites] = o[s]
        return out


def cell_tag(host: HostLattice) -> str:
    """``"12x12"`` of a diagonal supercell."""
    n = _diag(host)
    return f"{n[0]}x{n[1]}"


_MAPS: dict[tuple[str, str], CellMap] = {}


def cell_map(big: HostLattice, small: HostLattice) -> CellMap:
    """The :class:`CellMap` of ``big`` onto ``small`` (cached per host pair).

    Raises:
        InvdesignError: different unit cells or substituents, or a non-diagonal supercell.
    """
    key = (big.fingerprint, small.fingerprint)
    hit = _MAPS.get(key)
    if hit is not None:
        return hit
    if unit_fingerprint(big) != unit_fingerprint(small):
        raise InvdesignError(f"host {big.name} is not a supercell of the trained host {small.name}'s unit cell "
                             "(or allows other substituents); the model cannot transfer to it")
    if big.defect_types != small.defect_types or big.species != small.species:
        raise InvdesignError(f"host {big.name} has other defect types than the trained host {small.name}")
    bb, cell = cell_coords(big)
    shift_c, dist_c, uniq_c = _class_min_images(big)  # (B, B, N1, N2, ...)
    n_s = _diag(small)[:2]
    idx_s = site_index(small)
    uc = small.unit_cell
    basis_f = np.mod(uc.frac_coords, 1.0)
    A = uc.lattice.matrix
    # the small cell represents D when D + L s is longer than D for every small lattice vector L s != 0
    vec = np.zeros((24, 3))
    vec[:, :2] = np.array([(s1, s2) for s1 in range(-2, 3) for s2 in range(-2, 3) if (s1, s2) != (0, 0)]) * n_s
    D = np.zeros(shift_c.shape[:-1] + (3,))
    D[..., :2] = shift_c
    D += (basis_f[None, :, :] - basis_f[:, None, :])[:, :, None, None, :]
    D[..., 2] -= np.round(D[..., 2])
    longer = np.linalg.norm((D[..., None, :] + vec) @ A, axis=-1).min(axis=-1)
    ok_c = uniq_c & (longer > dist_c + TOL)
    Bn = len(uc)
    j_cells = np.mod(shift_c, n_s)
    small_j_c = idx_s[np.arange(Bn)[None, :, None, None], j_cells[..., 0], j_cells[..., 1]]
    small_j_c = np.where(ok_c, small_j_c, -1)
    nb = _diag(big)[:2]
    dc = np.mod(cell[None, :, :] - cell[:, None, :], nb)
    at = (bb[:, None], bb[None, :], dc[..., 0], dc[..., 1])
    small_j = small_j_c[at].astype(np.int32)
    np.fill_diagonal(small_j, -1)
    small_i = np.where(small_j >= 0, idx_s[bb, 0, 0][:, None], -1).astype(np.int32)
    dist_b = dist_c[at]
    reach = small_j >= 0
    rng = float(dist_b[reach].max()) if reach.any() else 0.0
    out = CellMap(big, small, small_i, small_j, reach, rng)
    _MAPS[key] = out
    return out
