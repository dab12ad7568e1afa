"""Structure <-> configuration: exact round trips, atom order, relaxation tolerance, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure
from pymatgen.io.cif import CifWriter
from pymatgen.io.vasp import Poscar

from invdesign.data.dataset import map_structures
from invdesign.errors import InvdesignError
from invdesign.io import write_structure
from invdesign.lattice.canonical import canonical_keys
from invdesign.lattice.config import Configuration, config_to_structure, structure_to_config
from invdesign.lattice.enumerate import sample_configurations
from invdesign.lattice.host import HostLattice

NON_DIAGONAL = [[2, 1, 0], [-1, 1, 0], [0, 0, 1]]


@pytest.fixture(scope="module")
def configs(host) -> np.ndarray:
    """Six 8x8 MoS2 configurations covering all four defect types (and the pristine host)."""
    rng = np.random.default_rng(20)
    parts = [
        sample_configurations(host, {"V_S": 1, "W_Mo": 1}, 2, rng),
        sample_configurations(host, {"Se_S": 2, "V_Mo": 1}, 2, rng),
        sample_configurations(host, {"V_S": 3}, 1, rng),
        host.host_code[None],
    ]
    return np.concatenate(parts)


@pytest.mark.parametrize("suffix", [".cif", ".vasp", ".json"])
def test_file_round_trip(host, configs, tmp_path, suffix):
    paths = [write_structure(o, host, tmp_path / f"s{i}{suffix}") for i, o in enumerate(configs)]
    ds = map_structures(paths, host)
    assert list(ds.ids) == [f"s{i}" for i in range(len(configs))]
    assert np.array_equal(ds.occ, configs)
    # pymatgen's own reader gives the same occupancies
    for p, o in zip(paths, configs):
        assert np.array_equal(structure_to_config(Structure.from_file(str(p)), host, source=str(p)), o)
    # the slow path (pymatgen for CIFs too) agrees
    assert np.array_equal(map_structures(paths, host, fast=False).occ, configs)


def test_structure_round_trip_exact(host, configs):
    for o in configs:
        st = config_to_structure(o, host)
        assert len(st) == int((o != 0).sum())
        assert np.array_equal(structure_to_config(st, host), o)
        st2 = Configuration(o, host).to_structure()
        assert [x.symbol for x in st2.species] == [x.symbol for x in st.species]
        assert np.allclose(st2.frac_coords, st.frac_coords) and np.allclose(st2.lattice.matrix, host.lattice.matrix)


def test_shuffled_atom_order(host, configs):
    rng = np.random.default_rng(21)
    for o in configs:
        st = config_to_structure(o, host)
        order = rng.permutation(len(st))
        shuffled = Structure(st.lattice, [st[i].specie for i in order], st.frac_coords[order])
        assert np.array_equal(structure_to_config(shuffled, host), o)
    keys = canonical_keys(configs, host)
    assert keys == canonical_keys(np.stack([structure_to_config(config_to_structure(o, host), host) for o in configs]), host)


def _displace(st: Structure, rng: np.random.Generator, max_disp: float) -> Structure:
    """Random Cartesian displacements of length up to ``max_disp`` A, plus whole-cell shifts."""
    v = rng.normal(size=(len(st), 3))
    v *= (rng.uniform(0, max_disp, len(st)) / np.linalg.norm(v, axis=1))[:, None]
    cart = st.cart_coords + v
    frac = st.lattice.get_fractional_coords(cart) + rng.integers(-2, 3, size=(len(st), 3)) * [1, 1, 0]
    return Structure(st.lattice, st.species, frac)


def test_relaxed_structures_map(host, configs):
    rng = np.random.default_rng(22)
    for o in configs:
        st = _displace(config_to_structure(o, host), rng, 0.3)
        assert np.array_equal(structure_to_config(st, host), o)
    # a slightly strained cell (0.5 %) is still the host
    st = config_to_structure(configs[0], host)
    strained = Structure(st.lattice.matrix * 1.005, st.species, st.frac_coords)
    assert np.array_equal(structure_to_config(strained, host), configs[0])


def test_generic_host_mapping():
    for sc in ((3, 3), NON_DIAGONAL):
        h = HostLattice.from_unit_cell("builtin:MoS2", sc)
        rng = np.random.default_rng(23)
        occ = sample_configurations(h, {"V_S": 1, "W_Mo": 1}, 5, rng)
        for o in occ:
            st = _displace(config_to_structure(o, h), rng, 0.25)
            assert np.array_equal(structure_to_config(st, h), o)


def _write(st: Structure, path: Path) -> Path:
    path.write_text(Poscar(st).get_str() if path.suffix == ".vasp" else str(CifWriter(st)))
    return path


def _err(paths, host) -> str:
    with pytest.raises(InvdesignError) as info:
        map_structures(paths, host)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_atom_beyond_tolerance(host, configs, tmp_path):
    st = config_to_structure(configs[0], host)
    cart = st.cart_coords.copy()
    cart[7, 2] += 1.0  # 1 A out of plane
    bad = Structure(st.lattice, st.species, cart, coords_are_cartesian=True)
    p = _write(bad, tmp_path / "far.cif")
    msg = _err([p], host)
    assert str(p) in msg and "atom 7" in msg and "1.00 A" in msg and "tolerance" in msg
    # within a larger tolerance it maps
    assert np.array_equal(map_structures([p], host, tol=1.2).occ[0], configs[0])


def test_wrong_cell(host, configs, tmp_path):
    small = HostLattice.from_unit_cell("builtin:MoS2", (7, 7))
    p = _write(config_to_structure(small.host_code, small), tmp_path / "seven.cif")
    msg = _err([p], host)
    assert str(p) in msg and "wrong cell" in msg


def test_unknown_species(host, configs, tmp_path):
    st = config_to_structure(configs[0], host)
    st.replace(3, "Fe")
    p = _write(st, tmp_path / "iron.vasp")
    msg = _err([p], host)
    assert str(p) in msg and "unknown species Fe" in msg


def test_species_on_wrong_sublattice(host, tmp_path):
    st = config_to_structure(host.host_code, host)
    s_site = int(np.flatnonzero(host.sublattice == 1)[0])
    st.replace(s_site, "W")
    p = _write(st, tmp_path / "w_on_s.cif")
    msg = _err([p], host)
    assert str(p) in msg and f"atom {s_site} (W)" in msg and "S site" in msg


def test_two_atoms_on_one_site(host, tmp_path):
    st = config_to_structure(host.host_code, host)
    st.append("S", st[130].coords + np.array([0.1, 0.0, 0.0]), coords_are_cartesian=True)
    p = _write(st, tmp_path / "double.cif")
    msg = _err([p], host)
    assert str(p) in msg and "both map to host site 130" in msg


def test_partial_occupancy(host):
    st = config_to_structure(host.host_code, host)
    st.replace(0, {"Mo": 0.5, "W": 0.5})
    with pytest.raises(InvdesignError, match="partial occupancies"):
        structure_to_config(st, host, source="mixed.cif")


def test_configuration_validation(host):
    occ = host.host_code.copy()
    occ[0] = host.species_code["Se"]  # site 0 is Mo
    with pytest.raises(InvdesignError, match="not allowed on site 0"):
        Configuration(occ, host)
    with pytest.raises(InvdesignError, match="shape"):
        Configuration(occ[:10], host)
    with pytest.raises(InvdesignError, match="unknown species"):
        Configuration.from_defects(host, {1: "Fe"})
    c = Configuration.from_defects(host, [(0, "W"), (100, "Vac")])
    assert c.n_defects == 2 and c.defects == [(0, "W"), (100, "Vac")]
    with pytest.raises(ValueError):
        c.occ[0] = 1  # immutable
    assert c == Configuration(c.occ.copy(), host) and hash(c) == hash(Configuration(c.occ.copy(), host))


def test_writers_are_atomic(host, configs, tmp_path):
    from invdesign.io import atomic_dir

    with pytest.raises(InvdesignError, match="output folder does not exist"):
        write_structure(configs[0], host, tmp_path / "missing" / "x.cif")
    with pytest.raises(InvdesignError, match="unknown structure format"):
        write_structure(configs[0], host, tmp_path / "x.cif", fmt="xyz")
    assert list(tmp_path.iterdir()) == []
    out = tmp_path / "cifs"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            write_structure(configs[0], host, tmp / "a.cif")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary sibling
    with atomic_dir(out) as tmp:
        write_structure(configs[0], host, tmp / "a.cif")
    # the file, plus the manifest of what the command wrote (the output policy, invdesign.outputs)
    assert sorted(p.name for p in out.iterdir()) == [".invdesign-manifest.json", "a.cif"]
    assert np.array_equal(map_structures([out], host).occ[0], configs[0])  # hidden files are not structures
