"""Host lattice (sites, species, symmetry as site permutations) and orbit enumeration/sampling."""

from __future__ import annotations

from math import comb
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

import invdesign
from invdesign.errors import InvdesignError
from invdesign.lattice.canonical import canonical_keys
from invdesign.lattice.enumerate import (
    burnside_count,
    compositions,
    enumerate_orbits,
    parse_defect_types,
    sample_configurations,
)
from invdesign.lattice.host import HostLattice

NON_DIAGONAL = [[2, 1, 0], [-1, 1, 0], [0, 0, 1]]


def hbn_cell() -> Structure:
    """A planar hBN-like unit cell (a = 2.504 A, 15 A vacuum), made here with pymatgen."""
    return Structure(Lattice.hexagonal(2.504, 15.0), ["B", "N"], [[1 / 3, 2 / 3, 0.5], [2 / 3, 1 / 3, 0.5]])


def wse2_cell() -> Structure:
    """A 1H-WSe2-like unit cell made here with pymatgen (a = 3.32 A)."""
    return Structure(
        Lattice.hexagonal(3.32, 15.0), ["W", "Se", "Se"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.137], [2 / 3, 1 / 3, 0.363]]
    )


def _row_set(perms: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in np.ascontiguousarray(perms)}


def _check_group(h: HostLattice, rng: np.random.Generator, n_pairs: int = 300) -> None:
    """Perms are species-preserving permutations, distance-preserving, closed under composition."""
    p = h.perms.astype(np.int64)
    G, n = p.shape
    assert np.array_equal(p[0], np.arange(n))
    assert np.array_equal(np.sort(p, axis=1), np.broadcast_to(np.arange(n), (G, n)))
    assert len(_row_set(h.perms)) == G
    assert np.array_equal(h.host_code[p], np.broadcast_to(h.host_code, (G, n)))
    d = h.min_image_distance
    for g in range(G):
        assert np.allclose(d[np.ix_(p[g], p[g])], d, atol=1e-6)
    rows = _row_set(h.perms)
    for a, b in rng.integers(0, G, size=(n_pairs, 2)):
        comp = p[a][p[b]].astype(h.perms.dtype)  # site i -> p[a, p[b, i]]
        assert comp.tobytes() in rows
        inv = np.argsort(p[a]).astype(h.perms.dtype)
        assert inv.tobytes() in rows


def test_default_host_mos2_8x8(host):
    assert host.n_sites == 192
    assert host.species == ["Vac", "Mo", "S", "W", "Se"]
    assert host.sublattices == ["Mo", "S"]
    assert np.bincount(host.sublattice).tolist() == [64, 128]
    assert sorted(host.defect_label(s, c) for s, c in host.defect_types) == ["Se_S", "V_Mo", "V_S", "W_Mo"]
    assert host.n_ops == 768
    assert host.spacegroup == "P-6m2 (187)"
    # every species code on its sublattice is allowed, nothing else
    assert host.allowed.tolist() == [[True, True, False, True, False], [True, False, True, False, True]]
    assert host.name == "MoS2-8x8"


def test_default_host_group_structure(host):
    rng = np.random.default_rng(0)
    _check_group(host, rng)
    p = host.perms.astype(np.int64)
    fixed = (p == np.arange(host.n_sites)).sum(axis=1)
    assert int((fixed == 0).sum()) >= 63  # the 63 non-trivial translations move every site
    # point group at a Mo site is D3h (12 ops), at an S site C3v (6 ops)
    mo = int(np.flatnonzero(host.sublattice == 0)[0])
    s = int(np.flatnonzero(host.sublattice == 1)[0])
    assert int((p[:, mo] == mo).sum()) == 12
    assert int((p[:, s] == s).sum()) == 6
    # 2 site orbits (Mo; S top+bottom joined by the horizontal mirror)
    assert len(np.unique(host.site_orbits)) == 2


def test_pair_orbits_match_burnside(host):
    """Number of ordered-pair orbits = (1/G) sum_g fix(g)^2, and labels are group-invariant."""
    p = host.perms.astype(np.int64)
    fix = (p == np.arange(host.n_sites)).sum(axis=1)
    expected = int((fix.astype(np.int64) ** 2).sum()) // host.n_ops
    po = host.pair_orbits
    assert len(np.unique(po)) == expected == 75
    rng = np.random.default_rng(1)
    for g in rng.integers(0, host.n_ops, 40):
        assert np.array_equal(po[np.ix_(p[g], p[g])], po)
    # pairs in one orbit have equal distances
    d = host.min_image_distance
    for lab in np.unique(po):
        vals = d[po == lab]
        assert np.ptp(vals) < 1e-6


@pytest.mark.parametrize(
    "cell, supercell, n_sites, n_ops, counts",
    [
        ("builtin:MoS2", (3, 3), 27, 108, [9, 18]),
        ("builtin:MoS2", NON_DIAGONAL, 9, 36, [3, 6]),
        ("builtin:MoS2", "4x2", 24, 32, [8, 16]),
        ("hbn", (3, 3), 18, 54, [9, 9]),
        ("wse2", (3, 3), 27, 108, [18, 9]),
    ],
)
def test_generic_hosts(cell, supercell, n_sites, n_ops, counts):
    uc = {"hbn": hbn_cell, "wse2": wse2_cell}.get(cell, lambda: cell)()
    h = HostLattice.from_unit_cell(uc, supercell)
    assert h.n_sites == n_sites
    assert h.n_ops == n_ops
    assert np.bincount(h.sublattice).tolist() == counts
    assert h.spacegroup == "P-6m2 (187)"
    _check_group(h, np.random.default_rng(2), n_pairs=100)
    # the supercell is exactly the unit cell repeated: volume ratio = number of cells
    det = round(abs(np.linalg.det(h.matrix)))
    assert h.n_sites == det * len(h.unit_cell)
    assert np.isclose(h.lattice.volume, det * h.unit_cell.lattice.volume)


def test_generic_host_species():
    h = HostLattice.from_unit_cell(hbn_cell(), (3, 3))
    assert h.species == ["Vac", "B", "N", "C"]
    assert sorted(h.defect_label(s, c) for s, c in h.defect_types) == ["C_B", "C_N", "V_B", "V_N"]
    w = HostLattice.from_unit_cell(wse2_cell(), (3, 3))
    assert sorted(w.defect_label(s, c) for s, c in w.defect_types) == ["Mo_W", "S_Se", "V_Se", "V_W"]
    custom = HostLattice.from_unit_cell("builtin:MoS2", (2, 2), {"S": ["Te", "Vac"]})
    assert [custom.defect_label(s, c) for s, c in custom.defect_types] == ["Te_S", "V_S"]
    assert custom.n_ops == 48


def test_host_from_config(tmp_path):
    cfg = tmp_path / "host.toml"
    cfg.write_text('[host]\nunit_cell = "builtin:MoS2"\nsupercell = [3, 3]\n[substituents]\nMo = ["W", "Vac"]\n')
    h = HostLattice.from_config(cfg)
    assert (h.n_sites, h.n_ops) == (27, 108)
    assert [h.defect_label(s, c) for s, c in h.defect_types] == ["W_Mo", "V_Mo"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"unit_cell": "builtin:Nope"}, "no packaged unit cell"),
        ({"unit_cell": "/nonexistent/cell.cif"}, "not found"),
        ({"unit_cell": "builtin:MoS2", "supercell": "8xq"}, "not of the form"),
        ({"unit_cell": "builtin:MoS2", "supercell": [[1, 0, 0], [2, 0, 0], [0, 0, 1]]}, "non-singular"),
        ({"unit_cell": "builtin:MoS2", "substituents": {"Fe": ["Vac"]}}, "does not have"),
    ],
)
def test_host_bad_inputs(kwargs, match):
    with pytest.raises(InvdesignError, match=match):
        HostLattice.from_unit_cell(**kwargs)


def test_host_without_default_substituents():
    uc = Structure(Lattice.hexagonal(3.0, 15.0), ["Zn", "Te"], [[1 / 3, 2 / 3, 0.5], [2 / 3, 1 / 3, 0.5]])
    with pytest.raises(InvdesignError, match="no default substituents"):
        HostLattice.from_unit_cell(uc, (2, 2))


# ------------------------------------------------------------------ enumeration
def _all_compositions(n_types: int, max_k: int) -> list[tuple[int, ...]]:
    out = []

    def rec(prefix):
        if len(prefix) == n_types:
            if 1 <= sum(prefix) <= max_k:
                out.append(tuple(prefix))
            return
        for c in range(max_k - sum(prefix) + 1):
            rec(prefix + [c])

    rec([])
    return out


@pytest.fixture(scope="module")
def orbits3(host):
    return enumerate_orbits(host, 3)


def test_enumeration_counts_mos2(host, orbits3):
    tab = orbits3
    assert len(tab) == 13_609
    assert np.bincount(tab.n_defects).tolist() == [0, 4, 159, 13_446]
    assert len(set(tab.keys)) == len(tab)
    # the representatives are canonical: re-canonicalising gives the same keys
    assert canonical_keys(tab.occ, host) == tab.keys
    assert np.array_equal(compositions(tab.occ, host), tab.composition)
    # orbit sizes sum to every labelled placement: C(192, k) * 2^k (two defect species per site)
    for k in (1, 2, 3):
        assert int(tab.orbit_size[tab.n_defects == k].sum()) == comb(192, k) * 2**k
    assert np.all(host.n_ops % tab.orbit_size == 0)


def test_enumeration_matches_burnside_per_composition(host, orbits3):
    labels = [host.defect_label(s, c) for s, c in host.defect_types]
    comp_counts: dict[tuple[int, ...], int] = {}
    for row in map(tuple, orbits3.composition.tolist()):
        comp_counts[row] = comp_counts.get(row, 0) + 1
    comps = _all_compositions(len(labels), 3)
    assert len(comps) == 34
    for comp in comps:
        assert comp_counts.get(comp, 0) == burnside_count(host, dict(zip(labels, comp))), comp
    assert set(comp_counts) == set(comps)


def test_burnside_known_values(host):
    assert burnside_count(host, {"V_S": 1}) == 1
    # independent counts from the exact pair orbits: (Mo, S) pairs and unordered S-S pairs
    po = host.pair_orbits
    mo, s = np.flatnonzero(host.sublattice == 0), np.flatnonzero(host.sublattice == 1)
    assert burnside_count(host, {"V_Mo": 1, "V_S": 1}) == len(np.unique(po[np.ix_(mo, s)]))
    ss = po[np.ix_(s, s)]
    iu = np.triu_indices(len(s), 1)
    unordered = {frozenset((a, b)) for a, b in zip(ss[iu].tolist(), ss.T[iu].tolist())}
    assert burnside_count(host, {"V_S": 2}) == len(unordered)
    assert burnside_count(host, {"Se_S": 1, "V_S": 1}) == len(np.unique(ss[iu[0], iu[1]].tolist() + ss.T[iu].tolist()))
    assert burnside_count(host, {}) == 1  # the pristine host is one orbit


@pytest.mark.parametrize("cell, supercell", [("builtin:MoS2", (3, 3)), ("hbn", (3, 3)), ("builtin:MoS2", NON_DIAGONAL)])
def test_enumeration_matches_burnside_generic(cell, supercell):
    uc = hbn_cell() if cell == "hbn" else cell
    h = HostLattice.from_unit_cell(uc, supercell)
    tab = enumerate_orbits(h, 3)
    labels = [h.defect_label(s, c) for s, c in h.defect_types]
    for comp in _all_compositions(len(labels), 3):
        n = int(np.all(tab.composition == np.array(comp), axis=1).sum())
        assert n == burnside_count(h, dict(zip(labels, comp)))
    for k in (1, 2, 3):
        per_site = [sum(1 for s, _ in h.defect_types if s == h.sublattice[i]) for i in range(h.n_sites)]
        # labelled placements: sum over k-subsets of prod(per_site); here every site has 2 options
        assert set(per_site) == {2}
        assert int(tab.orbit_size[tab.n_defects == k].sum()) == comb(h.n_sites, k) * 2**k


def test_enumeration_type_restriction(host):
    tab = enumerate_orbits(host, 3, defect_types=["V_S"])
    assert len(tab) == sum(burnside_count(host, {"V_S": k}) for k in (1, 2, 3))
    vs = parse_defect_types(host, ["V_S"])[0]
    assert np.all(tab.composition.sum(axis=1) == tab.composition[:, vs])
    two = enumerate_orbits(host, 2, min_defects=2, defect_types=["W_Mo", "Se_S"], max_counts={"W_Mo": 1})
    lab = [host.defect_label(s, c) for s, c in host.defect_types]
    w, se = lab.index("W_Mo"), lab.index("Se_S")
    assert np.all(two.n_defects == 2)
    assert np.all(two.composition[:, w] <= 1)
    assert len(two) == burnside_count(host, {"W_Mo": 1, "Se_S": 1}) + burnside_count(host, {"Se_S": 2})
    assert np.all(two.composition[:, [i for i in range(4) if i not in (w, se)]] == 0)
    with pytest.raises(InvdesignError, match="unknown defect type"):
        enumerate_orbits(host, 2, defect_types=["V_Xx"])
    with pytest.raises(InvdesignError, match="bad defect range"):
        enumerate_orbits(host, 1, min_defects=2)


# ------------------------------------------------------------------ sampling
def test_sampling_placement_respects_composition(host):
    rng = np.random.default_rng(3)
    comp = {"V_S": 2, "W_Mo": 1, "Se_S": 1}
    occ = sample_configurations(host, comp, 4000, rng)
    assert occ.shape == (4000, 192) and occ.dtype == np.uint8
    lab = [host.defect_label(s, c) for s, c in host.defect_types]
    want = np.array([comp.get(x, 0) for x in lab])
    assert np.all(compositions(occ, host) == want)
    assert np.all(host.allowed[host.sublattice[None, :], occ])
    # placement-uniform: every Mo site carries the W about equally often (chi-square, 63 dof)
    mo = host.sublattice == 0
    hits = (occ[:, mo] == host.species_code["W"]).sum(axis=0)
    exp = 4000 / 64
    chi2 = float(((hits - exp) ** 2 / exp).sum())
    assert chi2 < 63 + 6 * np.sqrt(2 * 63)
    # seeded: same seed, same draws
    assert np.array_equal(sample_configurations(host, comp, 50, 7), sample_configurations(host, comp, 50, 7))


def _class_chi2(keys: list[str], classes: list[str]) -> float:
    counts = np.array([keys.count(c) for c in classes], dtype=float)
    assert counts.sum() == len(keys)
    exp = len(keys) / len(classes)
    return float(((counts - exp) ** 2 / exp).sum())


def test_sampling_orbit_uniform():
    h = HostLattice.from_unit_cell("builtin:MoS2", (3, 3))
    comp = {"V_S": 2}
    classes = enumerate_orbits(h, 2, min_defects=2, defect_types=["V_S"]).keys
    assert len(classes) == burnside_count(h, comp)
    n = 6000
    dof = len(classes) - 1
    bound = dof + 6 * np.sqrt(2 * dof)
    orb = canonical_keys(sample_configurations(h, comp, n, np.random.default_rng(4), uniform="orbit"), h)
    assert set(orb) == set(classes)
    assert _class_chi2(orb, classes) < bound
    # the same test rejects placement sampling (orbit sizes differ), so it has power
    plc = canonical_keys(sample_configurations(h, comp, n, np.random.default_rng(4), uniform="placement"), h)
    assert _class_chi2(plc, classes) > 5 * bound


def test_sampling_bad_inputs(host):
    with pytest.raises(InvdesignError, match="more defects than"):
        sample_configurations(host, {"V_Mo": 65}, 1, 0)
    with pytest.raises(InvdesignError, match="uniform"):
        sample_configurations(host, {"V_S": 1}, 1, 0, uniform="class")
    with pytest.raises(InvdesignError, match="unknown defect type"):
        sample_configurations(host, {"V_Te": 1}, 1, 0)


def test_packaged_default_host_matches_a_fresh_build():
    """The default host is built from the packaged JSON cell and symmetry table (no CIF parse, no spglib);
    both equal what the CIF and spglib give."""
    from pymatgen.core import Structure

    from invdesign.lattice.host import HostLattice, _packaged_symmetry, load_unit_cell

    cif = Structure.from_file(str(Path(invdesign.__file__).parent / "resources" / "MoS2_unit_cell.cif"))
    fast = load_unit_cell("builtin:MoS2")
    assert np.allclose(fast.lattice.matrix, cif.lattice.matrix) and np.allclose(fast.frac_coords, cif.frac_coords)
    host = HostLattice.default()
    pre = _packaged_symmetry(host)
    assert pre is not None
    # spglib on a host with the same cell but no packaged table (another symprec)
    fresh = HostLattice.from_unit_cell(cif, (8, 8), symprec=1.1e-3)
    assert _packaged_symmetry(fresh) is None
    a = {tuple(r) for r in host.perms.tolist()}
    b = {tuple(r) for r in fresh.perms.tolist()}
    assert a == b and np.array_equal(host.perms[0], np.arange(host.n_sites))
    assert np.array_equal(host.pair_orbits, fresh.pair_orbits)
