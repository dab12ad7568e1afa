"""Every 2DMD host: packaged, recognised from the structures, mapped whatever the vacuum height and the
layer's position along c; exact symmetry on each lattice."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_configurations, shared_dir
from pymatgen.core import Lattice, Structure

from invdesign.data.readers import iter_sources, parse
from invdesign.errors import InvdesignError
from invdesign.lattice.canonical import apply_op, canonical_keys
from invdesign.lattice.config import config_to_structure, structure_to_config
from invdesign.lattice.host import HostLattice
from invdesign.lattice.hosts import PACKAGED, packaged_host, recognise

SETS = {"mos2-low": "MoS2-8x8", "mos2-high": "MoS2-8x8", "wse2-low": "WSe2-8x8", "wse2-high": "WSe2-8x8",
        "hbn-high": "BN-8x8", "gase-high": "GaSe-6x6", "inse-high": "InSe-6x6", "bp-high": "P-6x6"}


@pytest.mark.parametrize("spec", PACKAGED, ids=lambda s: s.name)
def test_packaged_host_symmetry_is_exact(spec):
    host = packaged_host(spec.name)
    rng = np.random.default_rng(1)
    occ = random_configurations(host, rng, 6, 2, 6)
    keys = canonical_keys(occ, host)
    g = rng.integers(host.n_ops, size=6)
    moved = np.stack([apply_op(o, host, k) for o, k in zip(occ, g)])
    assert list(canonical_keys(moved, host)) == list(keys)  # equal keys <=> symmetry images
    # the packaged table is spglib's group, recomputed here (another symprec: no packaged table to read)
    fresh = HostLattice.from_unit_cell(host.unit_cell, spec.supercell, symprec=1.1e-3)
    assert {tuple(r) for r in fresh.perms} == {tuple(r) for r in host.perms}


@pytest.mark.parametrize("spec", PACKAGED, ids=lambda s: s.name)
def test_round_trip_any_vacuum_and_layer_height(spec):
    host = packaged_host(spec.name)
    occ = random_configurations(host, np.random.default_rng(2), 3, 3, 8)
    for o in occ:
        st = config_to_structure(o, host)
        lat = st.lattice
        for c, shift in ((lat.c, 0.0), (20.0, 0.31), (25.0, -0.45), (20.0, 0.97)):
            taller = Lattice.from_parameters(lat.a, lat.b, c, *lat.angles)
            cart = st.cart_coords + np.array([0, 0, shift * c])
            moved = Structure(taller, st.species, cart, coords_are_cartesian=True)
            got = recognise(moved.lattice.matrix, [s.symbol for s in moved.species], "x")
            assert got.name == host.name
            assert np.array_equal(structure_to_config(moved, got), o)


@pytest.mark.parametrize("name", SETS)
def test_release_files_recognised_and_mapped(name):
    root = shared_dir() / "data" / f"2dmd-{name}"
    if not root.is_dir():
        pytest.skip("2DMD share absent")
    recs = list(iter_sources([root / "initial.tar.gz"]))[:25]
    for rec in recs:
        raw = parse(rec)
        host = recognise(raw.lattice, list(raw.species), raw.source)
        assert host.name == SETS[name]
        from invdesign.lattice.config import get_mapper

        m = get_mapper(host)
        occ = m.map_atoms(raw.species, m.host_frac(raw.lattice, raw.frac, raw.source), raw.source)
        assert 1 <= (occ != host.host_code).sum() <= 24


def test_unknown_host_and_wrong_cells_refused():
    host = packaged_host("MoS2")
    st = config_to_structure(host.host_code, host)
    with pytest.raises(InvdesignError, match="no packaged host"):
        recognise(Lattice.hexagonal(11.0, 20.0).matrix, ["Mo", "S"], "odd.cif")
    with pytest.raises(InvdesignError, match="no packaged host"):
        recognise(st.lattice.matrix, ["Fe", "S"], "iron.cif")
    thin = Structure(Lattice.from_parameters(st.lattice.a, st.lattice.b, 3.0, 90, 90, 120), st.species, st.frac_coords)
    with pytest.raises(InvdesignError, match="wrong cell"):
        structure_to_config(thin, host)


def _subset_archive(name: str, tmp_path, k: int = 12):
    """The first ``k`` structures of a release archive, as released (c = 20 A), in a new archive."""
    import tarfile

    src = shared_dir() / "data" / f"2dmd-{name}" / "initial.tar.gz"
    if not src.is_file():
        pytest.skip("2DMD share absent")
    out = tmp_path / f"{name}.tar.gz"
    with tarfile.open(src) as t_in, tarfile.open(out, "w:gz") as t_out:
        members = [m for m in t_in.getmembers() if m.isfile()][:k]
        for m in members:
            t_out.addfile(m, t_in.extractfile(m))
    return out


@pytest.mark.parametrize("name", ["wse2-low", "hbn-high", "bp-high"])
def test_predict_any_release_set_without_host(name, tmp_path, capsys):
    import pandas as pd

    from invdesign.cli import main

    arch = _subset_archive(name, tmp_path)
    out = tmp_path / "p.csv"
    assert main(["predict", str(arch), "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert len(df) == 12
    assert df["formation_energy_per_site"].notna().all() and (df["homo_lumo_gap"] >= 0).all()
    assert (df["formation_energy_per_site_std"] > 0).all() and (df["homo_lumo_gap_std"] > 0).all()
    assert df["formation_energy_reference"].str.contains("host model").all()
    spin = name != "wse2-low"
    assert ("total_mag" in df) == spin
    if spin:
        assert (df["total_mag"] >= 0).all()
    # the same structures' DFT: the packaged model has seen them, so this checks the plumbing, not accuracy
    from invdesign.data.dataset import load_2dmd
    from invdesign.predict.defect_env import targets_of

    ds = load_2dmd(shared_dir() / "data" / f"2dmd-{name}")
    y = pd.DataFrame(targets_of(ds), index=list(ds.ids))
    err = np.abs(df["formation_energy_per_site"].to_numpy() - y.loc[df["id"], 0].to_numpy())
    assert err.mean() < 0.2


def test_mos2_high_density_served_by_the_dft_host_model(tmp_path):
    import pandas as pd

    from invdesign.cli import main

    arch = _subset_archive("mos2-high", tmp_path)
    out = tmp_path / "p.csv"
    assert main(["predict", str(arch), "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert df["formation_energy_reference"].str.contains("host model").all()
    assert df["homo_lumo_gap_validated"].all()  # 4-24 defects: validated by the host model's calibration bands
    assert (df["homo_lumo_gap_std"] < 0.3).all()  # not the uninformed 0.58 eV


def test_design_on_another_host_by_annealing(tmp_path):
    import json

    import pandas as pd

    from invdesign.cli import main
    from invdesign.lattice.canonical import canonical_keys

    out = tmp_path / "gase"
    assert main(["design", "--host", "GaSe", "--target", "formation_energy_per_site=1.2:1.6", "-n", "6",
                 "--min-defects", "4", "--max-defects", "8", "--samples", "12", "--out", str(out)]) == 0
    c = pd.read_csv(out / "candidates.csv")
    s = json.loads((out / "summary.json").read_text())
    assert s["host"] == "GaSe-6x6" and s["request"]["mode_used"] == "anneal"
    assert len(c) == 6 and c["canonical_key"].nunique() == 6 and c["within_limits"].all()
    assert c["n_defects"].between(4, 8).all() and (c["homo_lumo_gap"] >= 0).all()
    assert (c["p_in_window"] >= 0.5).sum() >= 3
    # the written structures map back onto the recognised host and the same configurations
    host = packaged_host("GaSe")
    from invdesign.data.dataset import map_structures

    ds = map_structures([out / "structures"], host)
    assert sorted(canonical_keys(ds.occ, host)) == sorted(c["canonical_key"])
