"""Hostile inputs and faults (issues 26 and 28): each case is refused in one line (exit 2) with nothing
written, or gives the correct result; no hang, no traceback, no NaN in an output."""

from __future__ import annotations

import io
import os
import tarfile
import threading

import numpy as np
import pandas as pd
import pytest

from invdesign.cli import main
from invdesign.io import cif_text, write_structure


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    """``(exit code, stderr)``; a refusal is exactly one ``invdesign: error:`` line and no traceback."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("invdesign: error: "), err
    assert "Traceback" not in err
    return code, err


def _one_config(host):
    occ = host.host_code.copy()
    occ[np.flatnonzero(host.sublattice == 1)[0]] = 0  # one V_S
    return occ


def _fixed_cif(host, replace: str) -> str:
    """A CIF of one configuration with the first atom's x coordinate replaced by ``replace``."""
    lines = cif_text(_one_config(host), host).splitlines()
    i = next(j for j, ln in enumerate(lines) if ln.strip().startswith(("Mo", "S")) and len(ln.split()) == 7)
    parts = lines[i].split()
    parts[3] = replace
    lines[i] = "  " + "  ".join(parts)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- (a) inputs
def test_fifo_and_device_links_are_refused_not_read(tmp_path, capsys):
    fifo = tmp_path / "pipe.cif"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.cif"
    zero.symlink_to("/dev/zero")
    result: dict = {}

    def go(p):
        result[p.name] = _run(capsys, ["canon", p, "--out", tmp_path / "k.csv"])

    for p in (fifo, zero):
        t = threading.Thread(target=go, args=(p,), daemon=True)
        t.start()
        t.join(30)
        if t.is_alive():  # unblock the reader before failing
            with open(fifo, "w"):
                pass
            pytest.fail(f"{p.name}: hangs")
        code, err = result[p.name]
        assert code == 2 and "not a regular file" in err and p.name in err
    assert not (tmp_path / "k.csv").exists()


def test_oversized_structure_file_and_archive_member_are_refused(tmp_path, capsys, monkeypatch):
    from invdesign.data import readers

    monkeypatch.setattr(readers, "MAX_STRUCTURE_BYTES", 1000)
    big = tmp_path / "big.cif"
    big.write_text("#" * 2000)
    code, err = _run(capsys, ["canon", big, "--out", tmp_path / "k.csv"])
    assert code == 2 and "at most" in err and "big.cif" in err
    arc = tmp_path / "a.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        data = b"#" * 2000
        info = tarfile.TarInfo("initial/big.cif")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    code, err = _run(capsys, ["canon", arc, "--out", tmp_path / "k.csv"])
    assert code == 2 and "a.tar.gz:initial/big.cif" in err and "at most" in err


@pytest.mark.parametrize("value", ["nan", "1e20", "1e308", "-1e17", "inf"])
def test_absurd_fractional_coordinates_are_refused(tmp_path, capsys, host, value):
    p = tmp_path / "odd.cif"
    p.write_text(_fixed_cif(host, value))
    code, err = _run(capsys, ["canon", p, "--out", tmp_path / "k.csv"])
    assert code == 2 and "odd.cif" in err and "fractional coordinate x" in err
    assert not (tmp_path / "k.csv").exists()


def test_coordinates_within_bounds_still_map(tmp_path, capsys, host):
    p = tmp_path / "ok.cif"
    p.write_text(cif_text(_one_config(host), host))
    assert _run(capsys, ["canon", p, "--out", tmp_path / "k.csv"])[0] == 0


@pytest.mark.parametrize("tol", ["nan", "inf", "0", "-1"])
def test_bad_tolerance_is_refused(tmp_path, capsys, host, tol):
    p = tmp_path / "s.cif"
    write_structure(_one_config(host), host, p)
    code, err = _run(capsys, ["canon", p, "--out", tmp_path / "k.csv", "--tol", tol])
    assert code == 2 and "--tol" in err
    from invdesign.data.dataset import map_structures
    from invdesign.errors import InvdesignError

    with pytest.raises(InvdesignError, match="tolerance"):
        map_structures([p], host, float(tol))


def test_nested_folder_with_structures_is_refused_naming_it(tmp_path, capsys, host):
    d = tmp_path / "pool"
    (d / "more").mkdir(parents=True)
    write_structure(_one_config(host), host, d / "a.cif")
    write_structure(_one_config(host), host, d / "more" / "b.cif")
    code, err = _run(capsys, ["canon", d, "--out", tmp_path / "k.csv"])
    assert code == 2 and "more/" in err and "subfolder" in err
    # a subfolder without structures (or a hidden one) is no structure skipped: read as before
    (d / "more" / "b.cif").rename(d / "more" / "b.txt")
    (d / ".hidden").mkdir()
    write_structure(_one_config(host), host, d / ".hidden" / "c.cif")
    assert _run(capsys, ["canon", d, "--out", tmp_path / "k.csv"])[0] == 0
    assert list(pd.read_csv(tmp_path / "k.csv")["id"]) == ["a"]


@pytest.mark.parametrize("name", [".cif", "new\nline.cif", "tab\there.cif", "back\\slash.cif"])
def test_unsafe_ids_in_an_archive_are_refused(tmp_path, capsys, host, name):
    arc = tmp_path / "a.tar.gz"
    data = cif_text(_one_config(host), host).encode()
    with tarfile.open(arc, "w:gz") as tar:
        info = tarfile.TarInfo(f"initial/{name}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "o"
    code, err = _run(capsys, ["design", "--target", "formation_energy_per_site=0:5", "-n", "1", "--pool", arc,
                              "--out", out])
    assert code == 2 and "structure id" in err
    assert not out.exists()


# ---------------------------------------------------------------------- (b) option values
@pytest.fixture(scope="module")
def pool(tmp_path_factory, host):
    from invdesign.lattice.enumerate import sample_configurations

    d = tmp_path_factory.mktemp("hostile") / "pool"
    d.mkdir()
    occ = np.concatenate([sample_configurations(host, {"V_S": 1, "W_Mo": 1}, 3, 1),
                          sample_configurations(host, {"Se_S": 2}, 3, 2)])
    for i, o in enumerate(occ):
        write_structure(o, host, d / f"s{i}.cif")
    return d


_DESIGN = ["design", "--target", "formation_energy_per_site=0:5"]


@pytest.mark.parametrize("extra, words", [
    (["-n", "18446744073709551616"], "-n must be an integer between 1 and 100000"),
    (["--diversity", "inf"], "--diversity"),
    (["--diversity", "nan"], "--diversity"),
    (["--diversity", "-0.5"], "--diversity"),
    (["--seed", "18446744073709551616"], "--seed"),
    (["--samples", "18446744073709551616"], "--samples"),
    (["--min-defects", "400", "--max-defects", "500"], "--min-defects 400 is beyond the 192 sites"),
    (["--max-defects", "500"], "--max-defects 500 is beyond the 192 sites"),
    (["--max-defects", "150", "--types", "V_S"], "--max-defects 150 is beyond the 128 sites"),
    (["--supercell", "100x100"], "lower --supercell"),
    (["--host", "builtin:MoS2", "--supercell", "100x100"], "supercell 100x100 has 30,000 sites"),
])
def test_design_option_values_are_refused_before_work(tmp_path, capsys, pool, extra, words):
    out = tmp_path / "out"
    code, err = _run(capsys, [*_DESIGN, "--pool", pool, "--out", out, *extra])
    assert code == 2 and words in err, err
    assert not out.exists()


@pytest.mark.parametrize("window, words", [
    ("formation_energy_per_site=inf:inf", "is empty"),
    ("formation_energy_per_site=1e400:1e401", "overflows"),
    ("formation_energy_per_site=-inf:inf", "constrains nothing"),
    ("homo_lumo_gap=0:1e9", "beyond +-1000 eV"),
    ("homo_lumo_gap=-inf:-inf", "is empty"),
])
def test_target_windows_that_rank_nothing_are_refused(tmp_path, capsys, pool, window, words):
    code, err = _run(capsys, ["design", "--target", window, "--pool", pool, "--out", tmp_path / "o"])
    assert code == 2 and words in err, err
    db = tmp_path / "c.sqlite"
    code, err = _run(capsys, ["campaign", "init", "--db", db, "--pool", pool, "--features", "pairs", "--target", window])
    assert code == 2 and words in err and not db.exists()


@pytest.mark.parametrize("argv, words", [
    (["enumerate", "--max-defects", "6"], "would need about"),
    (["enumerate", "--max-defects", "4"], "lower --max-defects"),
    (["enumerate", "--max-defects", "18446744073709551616"], "--max-defects 18446744073709551616 is beyond"),
    (["enumerate", "--supercell", "100x100", "--max-defects", "1"], "lower --supercell"),
    (["canon", "--supercell", "100x100"], "lower --supercell"),
])
def test_enumeration_and_supercells_beyond_the_limits_are_refused(tmp_path, capsys, pool, argv, words):
    argv = [*argv, "--out", tmp_path / "e.csv"] + ([pool] if argv[0] == "canon" else [])
    code, err = _run(capsys, argv)
    assert code == 2 and words in err, err
    assert not (tmp_path / "e.csv").exists()


@pytest.mark.parametrize("extra, words", [
    (["--max-defects", "500"], "--max-defects 500 is beyond"),
    (["--max-defects", "6"], "would need about"),
    (["--batch", "18446744073709551616"], "--batch"),
    (["--seed", "-1"], "--seed"),
    (["--supercell", "100x100"], "lower --supercell"),
])
def test_campaign_init_beyond_the_limits_is_refused(tmp_path, capsys, extra, words):
    db = tmp_path / "c.sqlite"
    code, err = _run(capsys, ["campaign", "init", "--db", db, "--features", "pairs", "--target",
                              "homo_lumo_gap=1:2", *extra])
    assert code == 2 and words in err, err
    assert not db.exists()


def test_enumeration_estimate_allows_what_fits(host):
    from invdesign.limits import check_enumeration, enumeration_bytes

    check_enumeration(host, 3)  # 13,609 orbits, 0.2 GB measured
    assert enumeration_bytes(host, 3) < 0.5 * 2**30 < 4 * 2**30 < enumeration_bytes(host, 4)


def test_design_of_scored_candidates_writes_no_nan(tmp_path, capsys, pool):
    out = tmp_path / "o"
    code, err = _run(capsys, [*_DESIGN, "-n", "3", "--pool", pool, "--out", out])  # scored, not decoded: as exhaustive
    assert code == 0, err
    c = pd.read_csv(out / "candidates.csv")
    num = c.drop(columns=["extrapolation_reason"]).select_dtypes("number")  # that one is text, empty: no reason
    assert len(c) == 3 and np.isfinite(num.to_numpy(float)).all(), num.columns[~np.isfinite(num).all()].tolist()
    assert (c["reembed_distance"] == 0).all()
