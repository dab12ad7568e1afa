"""CLI: ``invdesign data info``, ``canon``, ``enumerate``; one-line errors and nothing half-written."""

from __future__ import annotations

import io
import json
import tarfile
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Structure
from pymatgen.io.cif import CifWriter

from invdesign.cli import main
from invdesign.io import write_structure
from invdesign.lattice.canonical import apply_op, canonical_keys
from invdesign.lattice.config import config_to_structure
from invdesign.lattice.enumerate import burnside_count, sample_configurations
from invdesign.lattice.host import HostLattice


def _tar(path: Path, members: dict[str, str | bytes]) -> Path:
    """Write a tar.gz archive holding ``members`` (name -> text or bytes)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text if isinstance(text, bytes) else text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def configs(host) -> np.ndarray:
    rng = np.random.default_rng(40)
    return np.concatenate([sample_configurations(host, {"V_S": 2, "W_Mo": 1}, 6, rng),
                           sample_configurations(host, {"Se_S": 1, "V_Mo": 1}, 2, rng)])


@pytest.fixture(scope="module")
def info_path(share, host, configs, tmp_path_factory) -> Path:
    """The share, or (where it is absent) a small 2DMD-layout folder made here."""
    if share is not None:
        return share
    root = tmp_path_factory.mktemp("info") / "mini2dmd"
    (root / "unit_cells").mkdir(parents=True)
    ids = [f"g{i}" for i in range(len(configs))]
    _tar(root / "initial.tar.gz", {f"initial/{i}.cif": str(CifWriter(config_to_structure(o, host))) for i, o in zip(ids, configs)})
    pd.DataFrame({"_id": ids, "formation_energy_per_site": np.linspace(1, 4, len(ids)),
                  "homo_lumo_gap": np.linspace(0.2, 1.5, len(ids))}).to_csv(root / "targets.csv.gz", index=False)
    (root / "unit_cells" / "MoS2.cif").write_text((resources.files("invdesign.resources") / "MoS2_unit_cell.cif").read_text())
    return root


def test_data_info_json(info_path, share, capsys):
    assert main(["data", "info", str(info_path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    n = 5340 if share is not None else 8
    assert s["structures"] == n and s["distinct_classes"] == n
    assert s["host"] == "MoS2-8x8" and s["spacegroup"] == "P-6m2 (187)" and s["n_sites"] == 192
    assert sum(s["by_n_defects"].values()) == n
    assert set(s["defect_types"]) == {"W_Mo", "V_Mo", "Se_S", "V_S"}
    for t in ("formation_energy_per_site", "homo_lumo_gap"):
        assert s["targets"][t]["min"] <= s["targets"][t]["mean"] <= s["targets"][t]["max"]


def test_data_info_table(info_path, share, capsys):
    assert main(["data", "info", str(info_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps lines at the terminal width
    n = "5340" if share is not None else "8"
    assert f"{n} structures on MoS2-8x8" in out and f"{n} distinct symmetry classes" in out
    for word in ("defect types", "V_S", "W_Mo", "homo_lumo_gap", "formation_energy_per_site"):
        assert word in out


def test_canon_mixed_inputs(host, configs, tmp_path, capsys):
    rng = np.random.default_rng(41)
    folder = tmp_path / "folder"
    folder.mkdir()
    write_structure(configs[0], host, folder / "a.cif")
    write_structure(configs[1], host, folder / "b.vasp")
    # symmetry images of configs[0] and configs[1], as single files and inside an archive
    img0 = apply_op(configs[0], host, int(rng.integers(1, host.n_ops)))
    img1 = apply_op(configs[1], host, int(rng.integers(1, host.n_ops)))
    single = write_structure(img0, host, tmp_path / "a_image.json")
    st = config_to_structure(img1, host)
    order = rng.permutation(len(st))  # atoms listed in another order
    shuffled = Structure(st.lattice, [st[i].specie for i in order], st.frac_coords[order])
    (tmp_path / "b_image.cif").write_text(str(CifWriter(shuffled)))
    arch = _tar(tmp_path / "initial.tar.gz", {f"initial/c{i}.cif": str(CifWriter(config_to_structure(o, host)))
                                              for i, o in enumerate(configs[2:5])})
    out = tmp_path / "keys.csv"
    code = main(["canon", str(folder), str(single), str(tmp_path / "b_image.cif"), str(arch), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    df = pd.read_csv(out)
    assert list(df.columns) == ["id", "canonical_key"]
    assert list(df["id"]) == ["a", "b", "a_image", "b_image", "c0", "c1", "c2"]
    k = dict(zip(df["id"], df["canonical_key"]))
    assert k["a"] == k["a_image"] and k["b"] == k["b_image"]
    expected = canonical_keys(np.stack([configs[0], configs[1], img0, img1, *configs[2:5]]), host)
    assert list(df["canonical_key"]) == expected
    assert len(set(expected[:2] + expected[4:])) == 5  # the distinct inputs stay distinct
    assert "7 structures, 5 distinct classes" in capsys.readouterr().out


def test_enumerate_max_two(tmp_path, host, capsys):
    out = tmp_path / "orbits.csv"
    cif_dir = tmp_path / "orbit_cifs"
    assert main(["enumerate", "--host", "builtin:MoS2", "--supercell", "8x8", "--max-defects", "2",
                 "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == ["canonical_key", "n_defects", "orbit_size", "W_Mo", "V_Mo", "Se_S", "V_S"]
    assert len(df) == 4 + 159 and df["canonical_key"].is_unique
    assert df.groupby("n_defects").size().to_dict() == {1: 4, 2: 159}
    assert int(df.loc[df.n_defects == 2, "orbit_size"].sum()) == 192 * 191 // 2 * 4
    labels = ["W_Mo", "V_Mo", "Se_S", "V_S"]
    for comp, n in df.groupby(labels).size().items():
        assert n == burnside_count(host, dict(zip(labels, comp)))
    printed = capsys.readouterr().out
    assert "Burnside" in printed and "163 orbits" in printed
    # a restricted enumeration on a small generic host, with one CIF per orbit
    out2 = tmp_path / "vs.csv"
    assert main(["enumerate", "--supercell", "3x3", "--max-defects", "3", "--type", "V_S", "--out", str(out2),
                 "--structures", str(cif_dir)]) == 0
    vs = pd.read_csv(out2)
    h3 = HostLattice.from_unit_cell("builtin:MoS2", (3, 3))
    assert len(vs) == sum(burnside_count(h3, {"V_S": k}) for k in (1, 2, 3))
    assert (vs[["W_Mo", "V_Mo", "Se_S"]] == 0).all().all() and (vs["V_S"] == vs["n_defects"]).all()
    cifs = sorted(cif_dir.glob("*.cif"))
    assert len(cifs) == len(vs)
    assert main(["canon", str(cif_dir), "--supercell", "3x3", "--out", str(tmp_path / "back.csv")]) == 0
    assert sorted(pd.read_csv(tmp_path / "back.csv")["canonical_key"]) == sorted(vs["canonical_key"])


def _bad_files(host: HostLattice, tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (input path, expected reason) for each kind of bad input."""
    st = config_to_structure(host.host_code, host)
    far = st.copy()
    far.translate_sites([5], [0, 0, 1.5], frac_coords=False)
    iron = st.copy()
    iron.replace(10, "Fe")
    small = HostLattice.from_unit_cell("builtin:MoS2", (6, 6))
    files = {
        "missing": (tmp / "nope.cif", "no such file or folder"),
        "unreadable": (tmp / "garbage.cif", "cannot parse CIF"),
        "bad_cell_value": (tmp / "cell.cif", "cannot parse CIF"),
        "binary": (tmp / "binary.cif", "cannot read"),
        "off_lattice": (tmp / "far.cif", "atom 5 (Mo) is 1.50 A from the nearest host site"),
        "wrong_cell": (tmp / "six.cif", "wrong cell"),
        "unknown_species": (tmp / "iron.cif", "unknown species Fe"),
        "not_structure": (tmp / "table.txt", "not a CIF, POSCAR"),
        "empty_folder": (tmp / "empty", "folder holds no"),
        "bad_archive": (tmp / "broken.tar.gz", "cannot read archive"),
        "truncated_archive": (tmp / "cut.tar.gz", "cannot read archive"),
        "binary_member": (tmp / "binmember.tar.gz", "binmember.tar.gz:initial/x.cif: cannot read"),
        "bad_member": (tmp / "badmember.tar.gz", "badmember.tar.gz:initial/y.cif: atom 5 (Mo) is 1.50 A"),
    }
    files["unreadable"][0].write_text("data_x\n_cell_length_a 3.1\nthis is not ( a cif\n")
    files["bad_cell_value"][0].write_text(str(CifWriter(st)).replace("_cell_length_a   25.52252560", "_cell_length_a ?"))
    files["binary"][0].write_bytes(b"\xff\xfe\x00\x81" * 10)
    files["off_lattice"][0].write_text(str(CifWriter(far)))
    files["wrong_cell"][0].write_text(str(CifWriter(config_to_structure(small.host_code, small))))
    files["unknown_species"][0].write_text(str(CifWriter(iron)))
    files["not_structure"][0].write_text("a,b\n1,2\n")
    files["empty_folder"][0].mkdir()
    files["bad_archive"][0].write_bytes(b"this is not gzip")
    full = _tar(tmp / "full.tar.gz", {f"initial/m{i}.cif": str(CifWriter(st)) + "#" * i for i in range(6)}).read_bytes()
    files["truncated_archive"][0].write_bytes(full[: len(full) // 2])
    _tar(files["binary_member"][0], {"initial/x.cif": b"\xff\xfe\x00\x81"})
    _tar(files["bad_member"][0], {"initial/y.cif": str(CifWriter(far))})
    return files


def test_bad_inputs_one_line(host, tmp_path, capsys):
    good = write_structure(host.host_code, host, tmp_path / "good.cif")
    for name, (path, reason) in _bad_files(host, tmp_path).items():
        out = tmp_path / f"{name}.csv"
        code = main(["canon", str(good), str(path), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2, name
        lines = err.strip().splitlines()
        assert len(lines) == 1, (name, err)
        assert lines[0].startswith("invdesign: error: ") and str(path) in lines[0] and reason in lines[0], (name, err)
        assert "Traceback" not in err
        assert not out.exists(), name
        assert not list(tmp_path.glob(f".{name}.csv*")), name  # no temporary leftovers


def test_bad_output_and_options(host, tmp_path, capsys):
    good = write_structure(host.host_code, host, tmp_path / "good.cif")
    cases = [
        (["canon", str(good), "--out", str(tmp_path / "missing" / "k.csv")], "output folder does not exist"),
        (["canon", str(good), "--out", str(tmp_path / "k.txt")], "output must end in .csv"),
        (["enumerate", "--max-defects", "2", "--type", "V_Te", "--out", str(tmp_path / "e.csv")], "unknown defect type"),
        (["enumerate", "--supercell", "8xq", "--out", str(tmp_path / "e.csv")], "8xq"),
        (["enumerate", "--host", str(tmp_path / "nocell.cif"), "--out", str(tmp_path / "e.csv")], "nocell.cif"),
        (["data", "info", str(tmp_path / "nodata")], "no such file or folder"),
        (["enumerate", "--max-defects", "1", "--out", str(tmp_path / "e.csv"), "--structures",
          str(tmp_path / "missing" / "cifs")], "parent does not exist"),
        (["enumerate", "--max-defects", "1", "--out", str(tmp_path / "e.csv"), "--structures", str(good)],
         "not a folder"),
    ]
    for argv, reason in cases:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, argv
        assert len(err.strip().splitlines()) == 1 and reason in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "e.csv").exists() and not (tmp_path / "k.txt").exists()
