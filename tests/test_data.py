"""Data loading: the 2DMD share, the cache, the fast CIF parser vs pymatgen, folders, collections, splits."""

from __future__ import annotations

import io
import shutil
import tarfile
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

import invdesign.data.dataset as dsmod
from invdesign.data.dataset import (
    cache_dir,
    load_2dmd,
    load_2dmd_collection,
    load_dataset,
    load_folder,
    map_structures,
    split_indices,
)
from invdesign.data.readers import SourceRecord, _pymatgen_parse, iter_sources, parse, parse_cif_fast
from invdesign.errors import InvdesignError
from invdesign.io import write_structure
from invdesign.lattice.canonical import canonical_keys
from invdesign.lattice.config import config_to_structure
from invdesign.lattice.enumerate import sample_configurations
from invdesign.lattice.host import HostLattice

MOS2_CELL = resources.files("invdesign.resources") / "MoS2_unit_cell.cif"


def make_2dmd(root: Path, host: HostLattice, occ: np.ndarray, prefix: str = "s", cell_name: str = "MoS2.cif",
              cell_text: str | None = None, extras: bool = False) -> pd.DataFrame:
    """Write a 2DMD "processed" folder: initial.tar.gz (initial/<id>.cif), targets.csv.gz, unit_cells/.

    Returns the targets table written (``formation_energy_per_site``, ``homo_lumo_gap`` in eV).
    """
    root.mkdir(parents=True)
    ids = [f"{prefix}{i:04d}" for i in range(len(occ))]
    with tarfile.open(root / "initial.tar.gz", "w:gz") as tar:
        for i, o in zip(ids, occ):
            data = str(CifWriter(config_to_structure(o, host))).encode()
            info = tarfile.TarInfo(f"initial/{i}.cif")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rng = np.random.default_rng(len(occ))
    df = pd.DataFrame({"_id": ids, "energy": rng.normal(-1390, 3, len(ids)),
                       "formation_energy_per_site": rng.uniform(0.5, 5.0, len(ids)),
                       "homo_lumo_gap": rng.uniform(0.1, 1.8, len(ids))})
    df.sample(frac=1.0, random_state=0).to_csv(root / "targets.csv.gz", index=False)  # rows in another order
    (root / "unit_cells").mkdir()
    (root / "unit_cells" / cell_name).write_text(cell_text if cell_text is not None else MOS2_CELL.read_text())
    if extras:
        pd.DataFrame({"_id": ids, "descriptor": ["x"] * len(ids)}).to_csv(root / "descriptors.csv", index=False)
        pd.DataFrame({"element": ["Mo", "S"], "energy": [-10.0, -4.0]}).to_csv(root / "elements.csv", index=False)
        pd.DataFrame({"_id": ids, "structure": ["{}"] * len(ids)}).to_csv(root / "initial_structures.csv", index=False)
    return df


@pytest.fixture(scope="module")
def small_occ(host) -> np.ndarray:
    rng = np.random.default_rng(30)
    return np.concatenate([sample_configurations(host, {"V_S": 1, "Se_S": 1}, 8, rng),
                           sample_configurations(host, {"W_Mo": 2, "V_Mo": 1}, 8, rng)])


@pytest.fixture(scope="module")
def small2dmd(tmp_path_factory, host, small_occ) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("twodmd") / "mini"
    return root, make_2dmd(root, host, small_occ, extras=True)


def test_share_loads(dataset, share, small2dmd, small_occ):
    if share is not None:
        assert len(dataset) == 5340
        assert len(set(dataset.keys)) == 5340  # every structure is its own symmetry class
        assert set(np.unique(dataset.n_defects)) == {1, 2, 3}
        y = dataset.y()
        assert y.shape == (5340, 2) and np.isfinite(y).all()
        t = pd.read_csv(share / "targets.csv.gz").set_index("_id")
        assert np.allclose(t.loc[list(dataset.ids), "homo_lumo_gap"].to_numpy(), y[:, 1])
        s = dataset.summary()
        assert s["structures"] == 5340 and s["distinct_classes"] == 5340 and s["spacegroup"] == "P-6m2 (187)"
        assert sum(s["by_n_defects"].values()) == 5340
    root, df = small2dmd
    ds = load_2dmd(root)
    assert list(ds.ids) == sorted(df["_id"])
    assert np.array_equal(ds.occ, small_occ)
    t = df.set_index("_id").loc[list(ds.ids)]
    assert np.allclose(ds.y(), t[["formation_energy_per_site", "homo_lumo_gap"]].to_numpy())
    assert ds.extras == ["descriptors.csv", "elements.csv", "initial_structures.csv"]
    assert ds.keys == canonical_keys(small_occ, ds.host)


def test_cache_is_used(small2dmd, monkeypatch, share):
    root, _ = small2dmd
    roots = [root] + ([share] if share is not None else [])
    first = {r: load_2dmd(r) for r in roots}  # the share's first load happened in the dataset fixture
    for ds in first.values():
        assert (cache_dir() / f"{ds.fingerprint}.npz").is_file()

    def boom(*a, **k):
        raise AssertionError("parsed despite the cache")

    monkeypatch.setattr(dsmod, "parse", boom)
    with pytest.raises(AssertionError, match="despite the cache"):
        load_2dmd(root, use_cache=False)  # the patch bites when the cache is bypassed
    for r, ds in first.items():
        again = load_2dmd(r)
        assert np.array_equal(again.ids, ds.ids) and np.array_equal(again.occ, ds.occ)
        pd.testing.assert_frame_equal(again.targets, ds.targets)
        assert again.host.n_ops == ds.host.n_ops and again.host.name == ds.host.name


def test_cache_keyed_by_content(tmp_path, host, small_occ):
    a, b = tmp_path / "a", tmp_path / "b"
    make_2dmd(a, host, small_occ[:5])
    make_2dmd(b, host, small_occ[5:10])
    da = load_2dmd(a)
    shutil.rmtree(a / "unit_cells")
    shutil.copy(b / "initial.tar.gz", a / "initial.tar.gz")  # same path, new content
    shutil.copy(b / "targets.csv.gz", a / "targets.csv.gz")
    db = load_2dmd(a)
    assert db.fingerprint != da.fingerprint
    assert np.array_equal(db.occ, small_occ[5:10])
    # a corrupt cache file is ignored, not trusted
    (cache_dir() / f"{db.fingerprint}.npz").write_bytes(b"not a zip")
    assert np.array_equal(load_2dmd(a).occ, small_occ[5:10])


def _sorted_atoms(species: list[str], frac: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Atoms in a parser-independent order (pymatgen may group atoms by species)."""
    f = np.mod(np.round(frac, 6), 1.0)
    order = np.lexsort((f[:, 2], f[:, 1], f[:, 0], np.array(species)))
    return [species[i] for i in order], frac[order]


def _same(fast, slow) -> None:
    """Same lattice (1e-6 A), same atoms (species, fractional coordinates to 1e-6 mod 1) in any order."""
    lf, sf, ff = fast
    ls, ss, fs = slow
    assert np.allclose(lf, ls, atol=1e-6)
    sf, ff = _sorted_atoms(sf, ff)
    ss, fs = _sorted_atoms(ss, fs)
    assert sf == ss
    d = ff - fs
    assert np.abs(d - np.round(d)).max() < 1e-6


def test_fast_cif_parser_equals_pymatgen(share, small2dmd):
    recs = list(iter_sources([small2dmd[0] / "initial.tar.gz"]))
    if share is not None:
        share_recs = list(iter_sources([share / "initial.tar.gz"]))
        rng = np.random.default_rng(31)
        recs += [share_recs[i] for i in rng.choice(len(share_recs), 100, replace=False)]
    for r in recs:
        fast = parse_cif_fast(r.text)
        assert fast is not None, r.source
        _same(fast, _pymatgen_parse(r))


def test_fast_cif_parser_variants(host, small_occ):
    st = config_to_structure(small_occ[0], host)
    text = str(CifWriter(st))
    variants = {
        "uncertainties": text.replace("  0.25000000  1", "  0.25000000(2)  1"),
        "lowercase species": text.replace("  Mo  Mo", "  mo  Mo"),
        "no symmetry loop": text.split("loop_\n _symmetry_equiv_pos_site_id")[0]
        + "loop_" + text.split("loop_")[-1],
    }
    ref = _pymatgen_parse(SourceRecord("x", "x.cif", text, "cif"))
    for name, t in variants.items():
        fast = parse_cif_fast(t)
        assert fast is not None, name
        _same(fast, ref)
    # anything that is not a plain P1 CIF is left to pymatgen, which parses it the same way
    sym = str(CifWriter(Structure(Lattice.hexagonal(3.19, 14.88), ["Mo", "S", "S"],
                                  [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.1448], [2 / 3, 1 / 3, 0.3552]]), symprec=0.01))
    assert parse_cif_fast(sym) is None
    assert len(parse(SourceRecord("sym", "sym.cif", sym, "cif")).species) == 3
    assert parse_cif_fast(text + "\ndata_second\n" + text.split("\n", 1)[1]) is None
    assert parse_cif_fast(text.replace("0.25000000  1\n", "0.25000000  0.5\n", 1)) is None  # partial occupancy
    with pytest.raises(InvdesignError, match="cannot parse CIF"):
        parse(SourceRecord("bad", "bad.cif", "data_x\n_cell_length_a 3\nnonsense(\n", "cif"))


def test_folder_with_targets(tmp_path, host, small_occ):
    folder = tmp_path / "mixed"
    folder.mkdir()
    suffixes = [".cif", ".vasp", ".json"]
    ids = []
    for i, o in enumerate(small_occ[:9]):
        ids.append(f"m{i}")
        write_structure(o, host, folder / f"m{i}{suffixes[i % 3]}")
    (folder / "notes.txt").write_text("ignored")
    t = pd.DataFrame({"id": ids[::-1], "formation_energy_per_site": np.arange(9.0)[::-1], "homo_lumo_gap": 1.0})
    t.to_csv(folder / "targets.csv", index=False)
    for ds in (load_folder(folder), load_dataset(folder)):
        assert list(ds.ids) == ids
        assert np.array_equal(ds.occ, small_occ[:9])
        assert np.allclose(ds.y()[:, 0], np.arange(9.0))
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns("*.csv"))
    ds = load_folder(bare)
    assert len(ds) == 9 and len(ds.targets.columns) == 0
    with pytest.raises(InvdesignError, match="no target column"):
        ds.y()


def test_collection(tmp_path, host, small_occ):
    parent = tmp_path / "high_density"
    make_2dmd(parent / "MoS2_500", host, small_occ[:6], prefix="mo")
    w = HostLattice.from_unit_cell(
        Structure(Lattice.hexagonal(3.32, 15.0), ["W", "Se", "Se"],
                  [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.137], [2 / 3, 1 / 3, 0.363]]), (4, 4))
    # WSe2 with Mo and S substituents: its atoms include both MoS2 elements, the host is still WSe2
    w_occ = sample_configurations(w, {"V_Se": 1, "Mo_W": 1, "S_Se": 2}, 5, np.random.default_rng(32))
    make_2dmd(parent / "WSe2_500", w, w_occ, prefix="ws", cell_name="WSe2.cif", cell_text=str(CifWriter(w.unit_cell)))
    # both sub-folders also carry the other material's unit cell
    shutil.copy(parent / "WSe2_500" / "unit_cells" / "WSe2.cif", parent / "MoS2_500" / "unit_cells" / "WSe2.cif")
    shutil.copy(parent / "MoS2_500" / "unit_cells" / "MoS2.cif", parent / "WSe2_500" / "unit_cells" / "MoS2.cif")
    (parent / "README.txt").write_text("not a dataset")
    sets = load_2dmd_collection(parent)
    assert [s.name for s in sets] == ["MoS2_500", "WSe2_500"]
    assert len(sets[0]) == 6 and np.array_equal(sets[0].occ, small_occ[:6]) and sets[0].host.n_ops == 768
    assert sets[1].host.n_sites == 48 and sets[1].host.n_ops == 16 * 12
    # the folder's WSe2 cell is the packaged WSe2's (a within 0.2 %): its structures map onto the packaged host
    assert sets[1].host.name == "WSe2-4x4"
    from invdesign.lattice.config import config_to_structure, structure_to_config
    mapped = np.stack([structure_to_config(config_to_structure(o, w), sets[1].host) for o in w_occ])
    assert np.array_equal(sets[1].occ, mapped)
    assert sets[1].host.species[:3] == ["Vac", "Se", "W"]
    with pytest.raises(InvdesignError, match="holds 2 datasets"):
        load_dataset(parent)
    with pytest.raises(InvdesignError, match="no 2DMD dataset"):
        load_2dmd_collection(tmp_path / "high_density" / "MoS2_500" / "unit_cells")


def test_2dmd_errors(tmp_path, host, small_occ):
    root = tmp_path / "broken"
    make_2dmd(root, host, small_occ[:4])
    t = pd.read_csv(root / "targets.csv.gz")
    t.iloc[1:].to_csv(root / "targets.csv.gz", index=False)
    with pytest.raises(InvdesignError, match="1 structures have no targets") as info:
        load_2dmd(root)
    assert "targets.csv.gz" in str(info.value)
    with pytest.raises(InvdesignError, match="not a 2DMD dataset"):
        load_2dmd(tmp_path)
    t.drop(columns=["_id"]).to_csv(root / "targets.csv.gz", index=False)
    with pytest.raises(InvdesignError, match="no '_id' or 'id' column"):
        load_2dmd(root)


def test_splits(dataset):
    ids = list(dataset.ids)
    a = split_indices(ids, seed=3)
    b = split_indices(ids, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    allidx = np.concatenate([a["train"], a["val"], a["test"]])
    assert len(allidx) == len(ids) == len(np.unique(allidx))
    assert abs(len(a["train"]) / len(ids) - 0.8) < 0.06
    c = split_indices(ids, seed=4)
    assert not np.array_equal(a["test"], c["test"])
    # an id's split does not depend on the other ids
    sub = split_indices(ids[::2], seed=3)
    assert set(np.array(ids[::2])[sub["test"]]) == set(np.array(ids)[a["test"]]) & set(ids[::2])
    with pytest.raises(InvdesignError, match="sum to 1"):
        split_indices(ids, (0.5, 0.2, 0.2))


def test_ids_are_file_stems(tmp_path, host, small_occ):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write_structure(small_occ[0], host, a / "mos2.v1.cif")
    write_structure(small_occ[1], host, a / "mos2.v2.vasp")
    (tmp_path / "calc").mkdir()  # a subfolder of a holding structures would be refused (never skipped in silence)
    write_structure(small_occ[2], host, tmp_path / "calc" / "POSCAR", fmt="poscar")
    ds = map_structures([a, tmp_path / "calc" / "POSCAR"], host)
    assert list(ds.ids) == ["mos2.v1", "mos2.v2", "calc"]
    assert np.array_equal(ds.occ, small_occ[:3])
    write_structure(small_occ[3], host, b / "mos2.v1.json")
    with pytest.raises(InvdesignError, match="duplicate structure id 'mos2.v1'") as info:
        map_structures([a, b], host)
    assert str(b / "mos2.v1.json") in str(info.value)


def test_structure_writers_match_pymatgen(host, tmp_path):
    """cif_text is pymatgen's CifWriter text (bar the comment line); POSCAR reads back the same sites."""
    from pymatgen.io.vasp import Poscar

    from invdesign.io import cif_text, poscar_text

    rng = np.random.default_rng(3)
    configs = [host.host_code.copy()] + [
        sample_configurations(host, comp, 1, rng)[0]
        for comp in ({"V_S": 2, "W_Mo": 1}, {"V_Mo": 1, "Se_S": 2}, {"Se_S": 1})
    ]
    for occ in configs:
        st = config_to_structure(occ, host)
        assert cif_text(occ, host).splitlines()[1:] == str(CifWriter(st)).splitlines()[1:]
        back = Poscar.from_str(poscar_text(occ, host, "c")).structure
        assert back.composition == st.composition
        np.testing.assert_allclose(back.lattice.matrix, st.lattice.matrix, atol=1e-9)
        ref = sorted((s.specie.symbol, *np.round(s.frac_coords, 8)) for s in st)
        assert sorted((s.specie.symbol, *np.round(s.frac_coords, 8)) for s in back) == ref
    # a list of paths writes every format; each file maps back to the configuration
    paths = write_structure(configs[1], host, [tmp_path / "a.cif", tmp_path / "a.vasp", tmp_path / "a.json"])
    assert [p.name for p in paths] == ["a.cif", "a.vasp", "a.json"]
    keys = canonical_keys(configs[1][None], host)
    from invdesign.data.dataset import map_structures

    assert list(map_structures(paths[:1], host).keys) == keys
    assert list(map_structures(paths[1:2], host).keys) == keys
    assert list(map_structures(paths[2:], host).keys) == keys
