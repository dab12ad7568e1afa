"""Hostile inputs and faults (issues 26 and 28): each case is refused in one line (exit 2) with nothing
written, or gives the correct result; no hang, no traceback, no NaN in an output."""

from __future__ import annotations

import errno
import io
import os
import tarfile
import threading
from pathlib import Path

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


@pytest.mark.parametrize("tol", ["274", "9e18", "2.5"])
def test_tolerance_reaching_a_neighbouring_site_is_refused(tmp_path, capsys, host, tol):
    # 8x8 MoS2's nearest sites (Mo-S) are 2.42 A apart: a tolerance that long could map an atom onto either
    p = tmp_path / "s.cif"
    write_structure(_one_config(host), host, p)
    code, err = _run(capsys, ["canon", p, "--out", tmp_path / "k.csv", "--tol", tol])
    assert code == 2 and "2.417 A" in err and "Traceback" not in err and not (tmp_path / "k.csv").exists()
    assert _run(capsys, ["canon", p, "--out", tmp_path / "k2.csv", "--tol", "2.4"])[0] == 0


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
    from conftest import write_small_pool

    return write_small_pool(tmp_path_factory.mktemp("hostile") / "pool", host)


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
    (["--threshold", "nan"], "--threshold must be a finite number"),
    (["--threshold", "0.5"], "--threshold applies to --minimise / --maximise only"),  # was ignored without a word
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


def test_design_with_every_pool_structure_excluded_is_one_line(tmp_path, capsys, pool):
    out = tmp_path / "o"
    code, err = _run(capsys, [*_DESIGN, "--pool", pool, "--exclude", pool, "--out", out])
    assert code == 2 and "every structure of the pool (6) is excluded (--exclude)" in err and str(pool) in err, err
    assert not out.exists()
    some = sorted(pool.glob("*.cif"))[:2]  # excluding some still ranks the rest
    code, err = _run(capsys, [*_DESIGN, "-n", "6", "--pool", pool, *[a for p in some for a in ("--exclude", p)],
                              "--out", out])
    assert code == 0, err
    assert len(pd.read_csv(out / "candidates.csv")) < 6


def test_design_of_scored_candidates_writes_no_nan(tmp_path, capsys, pool):
    out = tmp_path / "o"
    code, err = _run(capsys, [*_DESIGN, "-n", "3", "--pool", pool, "--out", out])  # scored, not decoded: as exhaustive
    assert code == 0, err
    c = pd.read_csv(out / "candidates.csv")
    num = c.drop(columns=["extrapolation_reason"]).select_dtypes("number")  # that one is text, empty: no reason
    assert len(c) == 3 and np.isfinite(num.to_numpy(float)).all(), num.columns[~np.isfinite(num).all()].tolist()
    assert (c["reembed_distance"] == 0).all()


# ---------------------------------------------------------------------- (c) labels where they enter
def _label_table(pool: Path, path: Path, drop: int | None = None, nan_at: int | None = None) -> Path:
    ids = sorted(p.stem for p in pool.glob("*.cif"))
    df = pd.DataFrame({"_id": ids, "formation_energy_per_site": np.linspace(1.0, 1.5, len(ids)),
                       "homo_lumo_gap": np.linspace(0.5, 1.0, len(ids))})
    if nan_at is not None:
        df.loc[nan_at, "homo_lumo_gap"] = np.nan
    if drop is not None:
        df = df.drop(index=drop)
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("case, words", [("nan", "has no finite homo_lumo_gap"), ("missing", "no label for 's2'")])
def test_label_with_a_table_lacking_labels_is_refused_before_writing(tmp_path, capsys, pool, case, words):
    table = _label_table(pool, tmp_path / "F.csv", **({"nan_at": 1} if case == "nan" else {"drop": 2}))
    out = tmp_path / "l.csv"
    code, err = _run(capsys, ["label", pool, "--oracle", f"table:{table}", "--out", out])
    assert code == 2 and words in err and "F.csv" in err, err
    assert not out.exists()


def test_label_with_a_complete_table_writes_finite_labels(tmp_path, capsys, pool):
    table = _label_table(pool, tmp_path / "F.csv")
    out = tmp_path / "l.csv"
    assert _run(capsys, ["label", pool, "--oracle", f"table:{table}", "--out", out])[0] == 0
    df = pd.read_csv(out)
    assert len(df) == 6 and np.isfinite(df[["formation_energy_per_site", "homo_lumo_gap"]].to_numpy()).all()
    # a table with one target writes that target only: no column of NaN
    pd.read_csv(table).drop(columns=["homo_lumo_gap"]).to_csv(tmp_path / "G.csv", index=False)
    assert _run(capsys, ["label", pool, "--oracle", f"table:{tmp_path / 'G.csv'}", "--out", tmp_path / "g.csv"])[0] == 0
    g = pd.read_csv(tmp_path / "g.csv")
    assert "homo_lumo_gap" not in g.columns and np.isfinite(g["formation_energy_per_site"]).all()


@pytest.fixture(scope="module")
def campaign_db(tmp_path_factory, pool):
    db = tmp_path_factory.mktemp("hcamp") / "c.sqlite"
    assert main(["campaign", "init", "--db", str(db), "--pool", str(pool), "--features", "pairs",
                 "--target", "homo_lumo_gap=1.0:1.2"]) == 0
    return db


@pytest.mark.parametrize("gap, words", [("1e308", "beyond +-1000 eV"), ("-0.5", "is negative"),
                                        ("1e400", "not a finite number")])
def test_observe_refuses_unphysical_gaps(tmp_path, capsys, campaign_db, gap, words):
    import shutil

    db = tmp_path / "c.sqlite"
    shutil.copy(campaign_db, db)
    src = tmp_path / "obs.csv"
    src.write_text(f"id,homo_lumo_gap\ns0,0.7\ns1,{gap}\n")
    code, err = _run(capsys, ["campaign", "observe", "--db", db, "--from", src])
    assert code == 2 and words in err and "line 3" in err, err
    from invdesign.campaign import Campaign

    with Campaign.open(db, readonly=True) as c:
        assert c.status()["evaluations"] == 0


def test_campaign_table_oracle_unphysical_labels_fail_with_allow_failures(tmp_path, capsys, pool):
    table = _label_table(pool, tmp_path / "F.csv")
    df = pd.read_csv(table)
    df.loc[0, "homo_lumo_gap"] = -1.0
    df.to_csv(table, index=False)
    db = tmp_path / "c.sqlite"
    argv = ["campaign", "run", "--db", db, "--pool", pool, "--features", "pairs", "--target", "homo_lumo_gap=0.6:0.8",
            "--oracle", f"table:{table}", "--budget", "6"]
    code, err = _run(capsys, argv)
    assert code == 2 and "is negative" in err and not db.exists()
    code, err = _run(capsys, [*argv, "--allow-failures"])
    assert code == 0, err
    from invdesign.campaign import Campaign

    with Campaign.open(db, readonly=True) as c:
        st = c.status()
        obs = c.observations()
    assert st["failed"] == 1 and st["evaluations"] == 5 and (obs["homo_lumo_gap"] >= 0).all()


# ---------------------------------------------------------------------- (d) faults while writing; refusals before writes
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.endswith(".tmp") or ".invdesign-tmp." in p.name)


def test_disk_full_writing_a_file_is_one_line_naming_it(tmp_path, capsys, pool, monkeypatch):
    monkeypatch.setattr(os, "replace", _enospc)
    out = tmp_path / "k.csv"
    code, err = _run(capsys, ["canon", pool, "--out", out])
    assert code == 2 and str(out) in err and "No space left on device" in err
    assert not out.exists() and not _leftovers(tmp_path)


def test_disk_full_filling_an_output_folder_removes_the_staging(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "replace", _enospc)
    out, csv = tmp_path / "cifs", tmp_path / "e.csv"
    code, err = _run(capsys, ["enumerate", "--max-defects", "1", "--out", csv, "--structures", out])
    assert code == 2 and "No space left on device" in err and str(out) in err and ".tmp" not in err, err
    assert not out.exists() and not csv.exists() and not _leftovers(tmp_path)


def test_disk_full_creating_a_campaign_leaves_nothing(tmp_path, capsys, pool, monkeypatch):
    import sqlite3

    from invdesign.campaign.store import Store

    def full(c, name, arr):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "_put_array", staticmethod(full))
    db = tmp_path / "c.sqlite"
    code, err = _run(capsys, ["campaign", "init", "--db", db, "--pool", pool, "--features", "pairs",
                              "--target", "homo_lumo_gap=1:2"])
    assert code == 2 and f"{db}: cannot create the campaign database (database or disk is full); nothing was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_disk_full_recording_a_step_is_one_line_and_records_nothing(tmp_path, capsys, campaign_db, monkeypatch):
    import shutil
    import sqlite3

    from invdesign.campaign.store import Store

    db = tmp_path / "c.sqlite"
    shutil.copy(campaign_db, db)

    def full(*a, **k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "add_suggestions", full)
    code, err = _run(capsys, ["campaign", "suggest", "--db", db, "-n", "2"])
    assert code == 2 and "database or disk is full" in err and "nothing of this step was recorded" in err, err
    assert "edited" not in err
    monkeypatch.undo()
    from invdesign.campaign import Campaign

    with Campaign.open(db, readonly=True) as c:
        assert c.status()["pending"] == 0 and c.status()["steps"] == 0


@pytest.mark.parametrize("output", ["--structures", "--out"])
def test_a_suggestion_whose_files_cannot_be_written_is_not_recorded(tmp_path, capsys, campaign_db, monkeypatch, output):
    import shutil

    import invdesign.io as io_mod

    db = tmp_path / "c.sqlite"
    shutil.copy(campaign_db, db)
    if output == "--structures":  # the first CIF of the staged folder
        monkeypatch.setattr(io_mod, "write_structure", lambda occ, host, path: _enospc(path))
    else:  # renaming the written CSV into place
        monkeypatch.setattr(os, "replace", _enospc)
    dest = tmp_path / ("sug" if output == "--structures" else "b.csv")
    code, err = _run(capsys, ["campaign", "suggest", "--db", db, "-n", "2", output, dest])
    assert code == 2 and "No space left on device" in err and str(dest) in err, err
    assert not dest.exists() and not _leftovers(tmp_path)
    monkeypatch.undo()
    from invdesign.campaign import Campaign

    with Campaign.open(db, readonly=True) as c:  # nothing recorded: the next suggest gives the same batch
        assert c.status()["pending"] == 0 and c.status()["steps"] == 0
    assert _run(capsys, ["campaign", "suggest", "--db", db, "-n", "2", output, dest])[0] == 0
    assert dest.exists()
    with Campaign.open(db, readonly=True) as c:
        assert c.status()["pending"] == 2


def test_disk_full_starting_a_label_file_leaves_nothing(tmp_path, capsys, pool, monkeypatch):
    import invdesign.campaign.label as label_mod

    class Full(io.StringIO):
        def write(self, s):
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_open(path, mode="r", **kwargs):
        Path(path).touch()  # opening for appending creates the file
        return Full()

    monkeypatch.setattr(label_mod, "open", full_open, raising=False)
    table = _label_table(pool, tmp_path / "F.csv")
    out = tmp_path / "l.csv"
    code, err = _run(capsys, ["label", pool, "--oracle", f"table:{table}", "--out", out])
    assert code == 2 and f"{out}: cannot write (No space left on device); nothing was written" in err, err
    assert not out.exists()


def test_a_concurrent_run_creating_the_same_output_is_one_line(tmp_path):
    from invdesign.errors import InvdesignError
    from invdesign.outputs import output_dir

    out = tmp_path / "run"
    with pytest.raises(InvdesignError, match="another run created this output meanwhile"):
        with output_dir(out, "design") as stage:
            (stage / "candidates.csv").write_text("id\n")
            out.mkdir()  # the other run renamed its folder into place first
            (out / "candidates.csv").write_text("theirs\n")
    assert (out / "candidates.csv").read_text() == "theirs\n" and not _leftovers(tmp_path)


_ENUM = ["enumerate", "--max-defects", "1", "--type", "V_S"]  # a quick command with a file and a folder output


def _locking_process(out: Path, fork: bool = False):
    """A process that takes the lock of ``out`` as a command does (and with ``fork``, starts a child that inherits
    it, as a forked worker would); returns ``(process, child pid or None)`` once the lock is held."""
    import subprocess
    import sys

    script = ("import os, sys, time\n"
              "from invdesign.outputs import check_file\n"
              "check_file(sys.argv[1])\n"
              + ("kid = os.fork()\n"
                 "if kid == 0:\n"
                 "    time.sleep(120)\n"
                 "    os._exit(0)\n"
                 "print(kid, flush=True)\n"
                 "os._exit(0)\n" if fork else "print(0, flush=True)\ntime.sleep(120)\n"))
    p = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True)
    kid = int(p.stdout.readline())
    return p, (kid or None)


def test_a_killed_runs_lock_file_blocks_nothing(tmp_path, capsys):
    """A SIGKILLed run leaves its lock file (``.NAME.invdesign-lock``) beside its output: the next run on that output
    proceeds, and so does a command writing the folder that holds it (it was refused as 'files invdesign did not
    write'); a live run's lock inside a folder refuses that folder in one line."""
    import signal

    o = tmp_path / "o"
    o.mkdir()
    lock = o / ".k.csv.invdesign-lock"
    p, _ = _locking_process(o / "k.csv")
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    assert lock.exists()  # what a SIGKILL leaves
    code, err = _run(capsys, [*_ENUM, "--out", o / "k.csv"])
    assert code == 0 and (o / "k.csv").exists() and not lock.exists(), err
    (o / "k.csv").unlink()
    p, _ = _locking_process(o / "k.csv")
    try:  # held by a live run: the folder is refused, naming it
        code, err = _run(capsys, [*_ENUM, "--out", tmp_path / "k.csv", "--structures", o])
        assert code == 2 and "another invdesign run is writing k.csv inside this folder" in err
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    code, err = _run(capsys, [*_ENUM, "--out", tmp_path / "k.csv", "--overwrite", "--structures", o])
    assert code == 0, err
    assert sorted(x.name for x in o.iterdir()) == [".invdesign-manifest.json", "orbit000000.cif"]


@pytest.mark.parametrize("entry", ["../SENTINEL.txt", "ABS"])
def test_an_untrusted_manifest_is_named_in_the_refusal(tmp_path, capsys, entry):
    """--overwrite on a folder whose manifest lists a path outside it: refused, the line says which entry made the
    manifest untrusted (was: only 'holds files invdesign did not write', listing invdesign's own files)."""
    import json

    out = tmp_path / "o" / "run"
    out.parent.mkdir()
    assert _run(capsys, [*_ENUM, "--out", tmp_path / "e.csv", "--structures", out])[0] == 0
    sentinel = out.parent / "SENTINEL.txt"
    sentinel.write_text("precious")
    listed = str(sentinel) if entry == "ABS" else entry
    man = json.loads((out / ".invdesign-manifest.json").read_text())
    man["files"].append(listed)
    (out / ".invdesign-manifest.json").write_text(json.dumps(man))
    code, err = _run(capsys, [*_ENUM, "--out", tmp_path / "e.csv", "--overwrite", "--structures", out])
    assert code == 2 and f"its manifest lists {listed!r}" in err and "nothing was removed" in err, err
    assert sentinel.read_text() == "precious" and (out / "orbit000000.cif").exists()


def test_a_commands_file_output_inside_its_folder_output_is_one_line(tmp_path, capsys):
    o = tmp_path / "o"
    o.mkdir()
    code, err = _run(capsys, [*_ENUM, "--out", o / "k.csv", "--structures", o])
    assert code == 2 and "this command also writes k.csv inside this folder" in err
    assert list(o.iterdir()) == []


def test_a_lock_kept_by_a_dead_runs_child_says_which_process_to_end(tmp_path, capsys):
    """The run that took an output's lock died, but a process it forked still holds the lock file open: the refusal
    says so and names that process (was: 'another run (pid of the dead run) is writing; wait for it')."""
    import signal
    import time

    out = tmp_path / "k.csv"
    p, kid = _locking_process(out, fork=True)
    assert p.wait(10) == 0  # the run is gone (and reaped); its child holds the lock
    try:
        code, err = _run(capsys, [*_ENUM, "--out", out])
        assert code == 2 and f"(pid {p.pid}) has died" in err and f"kill {kid}" in err, err
        assert not out.exists()
    finally:
        os.kill(kid, signal.SIGKILL)
    for _ in range(100):  # the lock goes with the process
        code, err = _run(capsys, [*_ENUM, "--out", out])
        if code == 0:
            break
        time.sleep(0.1)
    assert code == 0 and out.exists(), err


def test_an_unnamed_os_error_is_one_line(tmp_path, capsys, pool, monkeypatch):
    import invdesign.data.dataset as dataset

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/s0.cif")

    monkeypatch.setattr(dataset, "map_structures", denied)
    code, err = _run(capsys, ["canon", pool, "--out", tmp_path / "k.csv"])
    assert code == 2 and "/somewhere/s0.cif: Permission denied" in err


@pytest.mark.parametrize("text", ["name,value\nmy data", "name,value", "name,value\nmy data\n"])
def test_label_never_changes_a_foreign_csv(tmp_path, capsys, pool, text):
    table = _label_table(pool, tmp_path / "F.csv")
    notes = tmp_path / "notes.csv"
    notes.write_text(text)
    code, err = _run(capsys, ["label", pool, "--oracle", f"table:{table}", "--out", notes])
    assert code == 2 and "not a label file" in err
    assert notes.read_text() == text


def test_label_resumes_after_a_torn_row_or_header(tmp_path, capsys, pool):
    table = _label_table(pool, tmp_path / "F.csv")
    out = tmp_path / "l.csv"
    assert _run(capsys, ["label", pool, "--oracle", f"table:{table}", "--out", out])[0] == 0
    full = out.read_text()
    out.write_text(full[: full.index("\n", full.index("\n") + 1) + 5])  # header, one row, a torn row
    assert _run(capsys, ["label", pool, "--oracle", f"table:{table}", "--out", out])[0] == 0
    assert sorted(pd.read_csv(out)["id"]) == sorted(pd.read_csv(table)["_id"])
    out.write_text("id,canon")  # killed while writing the header
    assert _run(capsys, ["label", pool, "--oracle", f"table:{table}", "--out", out])[0] == 0
    assert len(pd.read_csv(out)) == 6


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_campaign_commands_never_change_a_foreign_sqlite_file(tmp_path, capsys, pool, journal):
    """A foreign SQLite file, in either journal mode, is refused by every campaign command, unchanged, and with
    nothing left beside it (a read-only look at a WAL-mode file creates -wal/-shm: removed again)."""
    import hashlib
    import sqlite3

    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute(f"PRAGMA journal_mode={journal}")
    con.execute("CREATE TABLE notes (x TEXT)")
    con.execute("INSERT INTO notes VALUES ('mine')")
    con.commit()
    con.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite"]
    digest = hashlib.sha256(other.read_bytes()).hexdigest()
    create = ["--pool", pool, "--features", "pairs", "--target", "homo_lumo_gap=1:2"]
    for argv in (["campaign", "suggest", "--db", other], ["campaign", "observe", "--db", other, "--from", other],
                 ["campaign", "run", "--db", other, "--budget", "1"], ["campaign", "status", "--db", other],
                 ["campaign", "report", "--db", other, "--out", tmp_path / "rep"],
                 ["campaign", "init", "--db", other, *create],
                 ["campaign", "run", "--db", other, *create, "--oracle", "surrogate", "--budget", "1"]):
        code, err = _run(capsys, argv)
        assert code == 2 and ("not a campaign database" in err or "that is not a campaign database is here" in err), \
            (argv, err)
        assert hashlib.sha256(other.read_bytes()).hexdigest() == digest
        assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite"], argv
    con = sqlite3.connect(other)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == journal
    assert con.execute("SELECT x FROM notes").fetchall() == [("mine",)]
    con.close()


def test_side_files_another_process_uses_are_never_removed(tmp_path):
    """The -wal/-shm clean-up after a refused look removes only files no connection uses: here another process
    opened the (foreign, WAL-mode) file meanwhile, so they stay and its write is kept."""
    import sqlite3
    import subprocess
    import sys

    from invdesign.campaign.store import _absent_side_files, _drop_side_files

    db = tmp_path / "other.sqlite"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=wal")
    con.execute("CREATE TABLE notes (x TEXT)")
    con.commit()
    con.close()
    made = _absent_side_files(db)
    assert len(made) == 2
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sqlite3, sys\n"
                               f"con = sqlite3.connect({str(db)!r})\n"
                               "con.execute('SELECT * FROM notes').fetchall()\n"
                               "print('open', flush=True)\n"
                               "sys.stdin.readline()\n"
                               "con.execute(\"INSERT INTO notes VALUES ('theirs')\")\n"
                               "con.commit()\n"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        assert all(p.exists() for p in made)  # the other process's connection created them
        _drop_side_files(db, made)
        assert all(p.exists() for p in made)  # in use: kept
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
    con = sqlite3.connect(db)
    assert con.execute("SELECT x FROM notes").fetchall() == [("theirs",)]
    con.close()


def test_refusals_come_before_any_write(tmp_path, capsys, pool):
    db = tmp_path / "c.sqlite"
    code, err = _run(capsys, ["campaign", "run", "--db", db, "--pool", pool, "--features", "pairs",
                              "--target", "homo_lumo_gap=1:2", "--oracle", "surrogate"])
    assert code == 2 and "--budget or --until-hits" in err and not db.exists()
    table = _label_table(pool, tmp_path / "F.csv")
    for spec in ("dask://", "dask://:8786", "dask://host"):
        code, err = _run(capsys, ["label", pool, "--oracle", f"table:{table}", "--out", tmp_path / "l.csv",
                                  "--executor", spec])
        assert code == 2 and "dask://host:port" in err and not (tmp_path / "l.csv").exists()


@pytest.mark.parametrize("spec", ["process:18446744073709551616", "thread:100000", "dask-local:100000"])
def test_executor_worker_counts_beyond_the_limit_are_refused_before_writing(tmp_path, capsys, pool, spec):
    """process:2**64 was a traceback (OverflowError from the pool's semaphore) after the label file was started;
    dask-local:N would start N worker processes."""
    out = tmp_path / "l.csv"
    table = _label_table(pool, tmp_path / "F.csv")
    code, err = _run(capsys, ["label", pool, "--oracle", f"table:{table}", "--out", out, "--executor", spec])
    assert code == 2 and "is beyond 256" in err and not out.exists(), err
    db = tmp_path / "c.sqlite"
    code, err = _run(capsys, ["campaign", "init", "--db", db, "--pool", pool, "--features", "pairs", "--target",
                              "homo_lumo_gap=1:2", "--executor", spec])
    assert code == 2 and "is beyond 256" in err and not db.exists(), err


# ---------------------------------------------------------------------- (e) a campaign database is data
def _edit(db: Path, sql: str, *params) -> None:
    import sqlite3

    con = sqlite3.connect(db)
    con.execute(sql, params)
    con.commit()
    con.close()


@pytest.mark.parametrize("bad", ["../../escaped/PWNED", "/tmp/abs", "new\nline", ""])
def test_suggest_never_writes_outside_its_folder_for_crafted_ids(tmp_path, capsys, campaign_db, bad):
    import shutil

    db = tmp_path / "w" / "c.sqlite"
    db.parent.mkdir()
    shutil.copy(campaign_db, db)
    _edit(db, "UPDATE candidates SET id = ? WHERE idx = 0", bad)
    sug = tmp_path / "w" / "sug"
    code, err = _run(capsys, ["campaign", "suggest", "--db", db, "-n", "6", "--structures", sug])
    assert code == 2 and (("candidate id" in err and "nothing was suggested" in err)
                          or (bad == "" and "candidate 0: its id '' is empty" in err)), err
    assert not sug.exists() and not (tmp_path / "escaped").exists()
    import sqlite3

    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM suggestions").fetchone()[0] == 0
    con.close()


@pytest.fixture(scope="module")
def observed_db(tmp_path_factory, campaign_db):
    """The campaign with two observations and one pending suggestion."""
    import shutil

    d = tmp_path_factory.mktemp("hobs")
    db = d / "c.sqlite"
    shutil.copy(campaign_db, db)
    (d / "obs.csv").write_text("id,formation_energy_per_site,homo_lumo_gap\ns0,1.1,0.7\ns3,1.3,1.1\n")
    assert main(["campaign", "observe", "--db", str(db), "--from", str(d / "obs.csv")]) == 0
    assert main(["campaign", "suggest", "--db", str(db), "-n", "1"]) == 0
    return db


def _features_nan(con):
    n = len(con.execute("SELECT data FROM arrays WHERE name = 'features'").fetchone()[0]) // 8
    con.execute("UPDATE arrays SET data = ? WHERE name = 'features'", (np.full(n, np.nan).tobytes(),))


def _config(**changes):
    def edit(con):
        import json

        cfg = json.loads(con.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
        cfg.update(changes)
        con.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(cfg),))
    return edit


def _sql(q, *params):
    return lambda con: con.execute(q, params)


_DB_EDITS = {  # hand edits of a campaign database (issue 28): each refused in one line naming the file and the value
    "config not JSON": (_sql("UPDATE meta SET value = '{oops' WHERE key = 'config'"), "its config is not JSON"),
    "config a list": (_sql("UPDATE meta SET value = '[1, 2]' WHERE key = 'config'"), "config is not a JSON object"),
    "batch text": (_config(batch="abc"), "stored setting batch 'abc' is not an integer"),
    "budget NaN": (_config(budget=float("nan")), "stored setting budget 'nan' is not an integer"),
    "seed negative": (_config(seed=-1), "stored setting seed '-1' is not an integer"),
    "window NaN": (_config(target={"window": {"homo_lumo_gap": ["nan", 1]}}), "stored setting target"),
    "window text": (_config(target={"window": {"homo_lumo_gap": "ab"}}), "stored setting target"),
    "no target": (_config(target=None), "stored setting target"),
    "supercell": (_config(host={"host": "builtin:MoS2", "supercell": "banana"}), "stored setting host"),
    "acquisition": (_config(acquisition="foo"), "stored setting acquisition 'foo'"),
    "executor": (_config(executor="warp:9"), "stored setting executor"),
    "executor number": (_config(executor=3), "stored setting executor '3' is not text"),  # was "unknown executor '?'"
    "executor count": (_config(executor="process:100000"), "is beyond 256"),
    "step text": (_sql("UPDATE meta SET value = 'abc' WHERE key = 'step'"), "step counter 'abc'"),
    "step huge": (_sql("UPDATE meta SET value = '1e400' WHERE key = 'step'"), "step counter '1e400'"),
    "step missing": (_sql("DELETE FROM meta WHERE key = 'step'"), "step counter 'None'"),
    "schema": (_sql("UPDATE meta SET value = '99' WHERE key = 'schema_version'"), "schema version '99'"),
    "features torn": (_sql("UPDATE arrays SET data = substr(data, 1, 10) WHERE name = 'features'"), "array 'features' holds 10 bytes"),
    "features shape": (_sql("UPDATE arrays SET shape = 'abc' WHERE name = 'features'"), "array 'features' has no valid shape"),
    "features dtype": (_sql("UPDATE arrays SET dtype = '|O' WHERE name = 'features'"), "array 'features' has dtype '|O'"),
    "features NaN": (_features_nan, "non-finite value"),
    "features gone": (_sql("DELETE FROM arrays WHERE name = 'features'"), "its features are absent"),
    "occupancy torn": (_sql("UPDATE candidates SET occ = x'0102' WHERE idx = 0"), "occupancy has 2 bytes, not 192"),
    "occupancy code": (_sql("UPDATE candidates SET occ = zeroblob(192) WHERE idx = 1"),
                       "candidate 1: its canonical key"),  # numbered by idx, as the store numbers candidates
    "species code": (_sql("UPDATE candidates SET occ = CAST(replace(hex(zeroblob(192)), '00', 'C8') AS BLOB) WHERE idx = 1"),
                     "occupancy has 384 bytes"),
    "candidate key": (_sql("UPDATE candidates SET canonical_key = 'zzz' WHERE idx = 3"),
                      "candidate 3: 'zzz' is not a canonical key"),  # was 'candidate 4' (its position from 1)
    "no candidates": (_sql("DELETE FROM candidates"), "holds no candidates"),
    "gap text": (_sql("UPDATE observations SET homo_lumo_gap = 'abc'"), "homo_lumo_gap 'abc' is not a finite number"),
    "gap 1e308": (_sql("UPDATE observations SET homo_lumo_gap = 1e308"), "homo_lumo_gap 1e+308 eV is no measurement"),
    "gap inf": (_sql("UPDATE observations SET homo_lumo_gap = 9e999"), "homo_lumo_gap 'inf' is not a finite number"),
    "gap negative": (_sql("UPDATE observations SET homo_lumo_gap = -3"), "homo_lumo_gap -3.0 eV is no measurement"),
    "energy text": (_sql("UPDATE observations SET formation_energy_per_site = 'x'"), "formation_energy_per_site 'x'"),
    "observation step": (_sql("UPDATE observations SET step = 'x'"), "its step 'x' is not an integer"),
    "observed occupancy": (_sql("UPDATE observations SET occ = x'01'"), "occupancy has 1 bytes, not 192"),
    "observed key": (_sql("UPDATE observations SET canonical_key = 'zzz' WHERE seq = 1"), "'zzz' is not a canonical key"),
    "acquisition text": (_sql("UPDATE suggestions SET acquisition = 'x'"), "acquisition 'x' is not a finite number"),
    "mean text": (_sql("UPDATE suggestions SET homo_lumo_gap_mean = 'x'"), "homo_lumo_gap_mean 'x' is not a finite number"),
    "suggested key": (_sql("UPDATE suggestions SET canonical_key = 'zzz'"), "is not a candidate of this campaign"),
    "suggested index": (_sql("UPDATE suggestions SET idx = 'x'"), "candidate index 'x' is not an index"),
    "dropped table": (_sql("DROP TABLE observations"), "it (no such table: observations); the campaign database was edited"),
}


@pytest.mark.parametrize("case", list(_DB_EDITS))
def test_an_edited_campaign_database_is_refused_in_one_line(tmp_path, capsys, observed_db, case):
    import hashlib
    import shutil
    import sqlite3

    edit, words = _DB_EDITS[case]
    db = tmp_path / "c.sqlite"
    shutil.copy(observed_db, db)
    con = sqlite3.connect(db)
    edit(con)
    con.commit()
    con.close()
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    # suggest reads every stored value it uses (config, step, candidates, features, observations, suggestions)
    code, err = _run(capsys, ["campaign", "suggest", "--db", db, "-n", "1", "--structures", tmp_path / "sug"])
    assert code == 2 and str(db) in err and words in err, err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest and not (tmp_path / "sug").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) == ["c.sqlite"]
    for argv in (["campaign", "status", "--db", db], ["campaign", "status", "--db", db, "--json"],
                 ["campaign", "report", "--db", db, "--out", tmp_path / "rep"]):
        code, err = _run(capsys, argv)  # what suggest (and run) refuses is not reported as a healthy campaign
        assert code == 2 and str(db) in err and words in err, (argv, err)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest and not (tmp_path / "rep").exists()


def test_a_damaged_page_is_refused_in_one_line(tmp_path, capsys, observed_db):
    import shutil

    for where in ("last", "middle"):
        db = tmp_path / f"{where}.sqlite"
        shutil.copy(observed_db, db)
        data = bytearray(db.read_bytes())
        page = 4096
        at = len(data) - page if where == "last" else page * (len(data) // page // 2)
        data[at: at + page] = np.random.default_rng(0).integers(0, 256, page, dtype=np.uint8).tobytes()
        db.write_bytes(bytes(data))
        for argv in (["campaign", "suggest", "--db", db, "-n", "1"], ["campaign", "run", "--db", db, "--oracle",
                     "surrogate", "--budget", "4"], ["campaign", "status", "--db", db]):
            code, err = _run(capsys, argv)
            assert code == 2 and str(db) in err and ("damaged" in err or "not a campaign database" in err), (argv, err)


def test_an_unused_target_is_stored_only_as_a_measurement_could_give_it(tmp_path, pool):
    from invdesign.campaign import Campaign, Target
    from invdesign.campaign.oracles import CallableOracle

    db = tmp_path / "c.sqlite"
    with Campaign.create(db, Target(window={"formation_energy_per_site": (0.5, 1.5)}), [pool], features="pairs",
                         batch=2, budget=2) as c:
        host = c.host
        c.run(CallableOracle(lambda occ, ids: np.column_stack([np.ones(len(ids)), np.full(len(ids), 29188.0)]), host))
    with Campaign.open(db, readonly=True) as c:  # a gap of 29188 eV (the oracle's junk) is not measured: NaN, readable
        obs = c.observations()
    assert len(obs) == 2 and (obs["formation_energy_per_site"] == 1.0).all() and obs["homo_lumo_gap"].isna().all()


def test_a_stored_code_oracle_runs_only_when_named_again(tmp_path, capsys, pool, monkeypatch):
    marker = tmp_path / "ran"
    (tmp_path / "evilmod.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('x')\n"
        "def f(structure):\n    return (1.0, 1.0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    db = tmp_path / "c.sqlite"
    assert _run(capsys, ["campaign", "init", "--db", db, "--pool", pool, "--features", "pairs",
                         "--target", "homo_lumo_gap=1:2", "--oracle", "surrogate"])[0] == 0
    import json
    import sqlite3

    con = sqlite3.connect(db)
    cfg = json.loads(con.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
    con.close()
    cfg["oracle"] = "python:evilmod:f"
    _edit(db, "UPDATE meta SET value = ? WHERE key = 'config'", json.dumps(cfg))
    code, err = _run(capsys, ["campaign", "run", "--db", db, "--max-steps", "1", "--budget", "2"])
    assert code == 2 and "imports and runs code" in err and "--trust-db" in err
    assert not marker.exists()
    code, err = _run(capsys, ["campaign", "run", "--db", db, "--max-steps", "1", "--budget", "2",
                              "--oracle", "python:evilmod:f"])
    assert code == 0 and marker.exists(), err


def test_campaign_creation_is_atomic(tmp_path, monkeypatch, pool):
    from invdesign.campaign import Campaign, Target
    from invdesign.campaign.store import Store

    db = tmp_path / "c.sqlite"
    boom = RuntimeError("killed mid-creation")

    seen = []

    def dying(c, name, arr):  # a SIGKILL here would leave whatever is at the name now
        seen.append(db.exists())
        raise boom

    monkeypatch.setattr(Store, "_put_array", staticmethod(dying))
    with pytest.raises(RuntimeError):
        Campaign.create(db, Target(window={"homo_lumo_gap": (1.0, 2.0)}), [pool], features="pairs")
    assert seen == [False]  # built under a temporary name: nothing at the name until complete
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # and no temporary left


def test_a_half_created_database_is_recreated(tmp_path, capsys, pool):
    import sqlite3

    db = tmp_path / "c.sqlite"
    con = sqlite3.connect(db)  # what a kill during creation left before: WAL mode, no tables
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.execute("DROP TABLE t")
    con.commit()
    con.close()
    assert db.stat().st_size > 0
    base = ["--db", db, "--pool", pool, "--features", "pairs", "--target", "homo_lumo_gap=1:2"]
    assert _run(capsys, ["campaign", "init", *base])[0] == 0
    code, out = _run(capsys, ["campaign", "status", "--db", db])
    assert code == 0
    db.unlink()
    for s in ("-wal", "-shm"):
        Path(str(db) + s).unlink(missing_ok=True)
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.execute("DROP TABLE t")
    con.commit()
    con.close()
    code, err = _run(capsys, ["campaign", "run", *base, "--oracle", "surrogate", "--budget", "2"])
    assert code == 0, err


# ---------------------------------------------------------------------- (f) dead workers
def test_rows_lost_by_a_dead_worker_are_retried_and_the_run_fails(tmp_path, capsys, pool, monkeypatch):
    marker = tmp_path / "first-run-done"
    (tmp_path / "dying_oracle.py").write_text(
        "import os\nfrom pathlib import Path\n"
        "def f(structure):\n"
        f"    if not Path({str(marker)!r}).exists():\n"
        "        os._exit(1)  # the worker dies (as by SIGKILL or the OOM killer)\n"
        "    return (1.0, 0.5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "l.csv"
    argv = ["label", pool, "--oracle", "python:dying_oracle:f", "--out", out, "--executor", "process:1"]
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err
    assert "6 structure(s) were lost by the executor" in err and "rerun" in err and "Traceback" not in err
    first = pd.read_csv(out, keep_default_na=False)
    assert len(first) == 6 and first["error"].str.startswith("infrastructure: BrokenProcessPool").all()
    marker.write_text("x")
    code, err = _run(capsys, argv)
    assert code == 0, err
    df = pd.read_csv(out, keep_default_na=False)
    assert sorted(df["id"]) == sorted(first["id"]) and (df["error"] == "").all()  # each id once, labelled


def test_label_refuses_a_missing_surrogate_model_before_writing(tmp_path, capsys, pool):
    out = tmp_path / "n.csv"
    code, err = _run(capsys, ["label", pool, "--oracle", "surrogate:nope.pt", "--out", out])
    assert code == 2 and "nope.pt: model file not found" in err and not out.exists()


def test_label_retries_oracle_failures_when_asked(tmp_path, capsys, pool, monkeypatch):
    fixed = tmp_path / "fixed"
    (tmp_path / "flaky_oracle.py").write_text(
        "from pathlib import Path\n"
        "def f(structure):\n"
        f"    if not Path({str(fixed)!r}).exists():\n"
        "        raise ValueError('the code is not installed')\n"
        "    return (1.0, 0.5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "l.csv"
    argv = ["label", pool, "--oracle", "python:flaky_oracle:f", "--out", out, "--executor", "inline"]
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 1  # every row failed: not a success
    err = capsys.readouterr().err
    assert "the oracle failed on all 6 structure(s)" in err and "not installed" in err and "--retry-failed" in err
    assert "Traceback" not in err
    first = pd.read_csv(out, keep_default_na=False)
    assert len(first) == 6 and first["error"].str.contains("not installed").all()
    fixed.write_text("x")
    code, err = _run(capsys, argv)  # oracle errors are kept unless asked: a rerun skips them
    assert code == 0 and pd.read_csv(out, keep_default_na=False).equals(first)
    code, err = _run(capsys, [*argv, "--retry-failed"])
    assert code == 0, err
    df = pd.read_csv(out, keep_default_na=False)
    assert sorted(df["id"]) == sorted(first["id"]) and (df["error"] == "").all()  # each id once, labelled
    assert (df["formation_energy_per_site"] == 1.0).all()


def _oracle_dying_once(tmp_path, monkeypatch, module: str):
    """A ``python:`` oracle module whose first call kills its process (as a SIGKILL would) and marks that it did;
    every later call returns (1.0, 0.5). Returns the marker's path."""
    died = tmp_path / "died"
    (tmp_path / f"{module}.py").write_text(
        "import os\nfrom pathlib import Path\n"
        "def f(structure):\n"
        f"    marker = Path({str(died)!r})\n"
        "    if not marker.exists():\n"
        "        marker.write_text('x')\n"
        "        os._exit(1)\n"
        "    return (1.0, 0.5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return died


def test_a_worker_that_dies_once_costs_no_label_in_the_same_run(tmp_path, capsys, pool, monkeypatch):
    """One pool worker dies (as by SIGKILL) on one structure: the calls still queued are tried again on a fresh
    pool in the same run, and every structure is labelled once, exit 0."""
    died = _oracle_dying_once(tmp_path, monkeypatch, "once_oracle")
    out = tmp_path / "l.csv"
    code, err = _run(capsys, ["label", pool, "--oracle", "python:once_oracle:f", "--out", out, "--executor", "process:1"])
    assert code == 0, err
    df = pd.read_csv(out, keep_default_na=False)
    assert died.exists() and len(df) == 6 and df["id"].is_unique and (df["error"] == "").all()


def test_campaign_evaluations_lost_by_a_dead_worker_stay_pending(tmp_path, capsys, pool, monkeypatch):
    """A campaign's pool worker dies: its evaluations are not failures (no budget spent), they stay pending, the
    run exits 1 saying so, and a rerun evaluates them."""
    marker = tmp_path / "fixed"
    (tmp_path / "dying_campaign_oracle.py").write_text(
        "import os\nfrom pathlib import Path\n"
        "def f(structure):\n"
        f"    if not Path({str(marker)!r}).exists():\n"
        "        os._exit(1)\n"
        "    return (1.0, 0.5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    db = tmp_path / "c.sqlite"
    argv = ["campaign", "run", "--db", db, "--pool", pool, "--features", "pairs", "--target",
            "formation_energy_per_site=0.5:1.5", "--oracle", "python:dying_campaign_oracle:f", "--batch", "2",
            "--budget", "2", "--executor", "process:1"]
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err
    assert "2 evaluation(s) were lost by the executor" in err and "rerun" in err and "Traceback" not in err, err
    from invdesign.campaign import Campaign

    with Campaign.open(db, readonly=True) as c:
        st = c.status()
    assert st["pending"] == 2 and st["failed"] == 0 and st["evaluations"] == 0
    marker.write_text("x")
    code, err = _run(capsys, argv)
    assert code == 0, err
    with Campaign.open(db, readonly=True) as c:
        st = c.status()
    assert st["evaluations"] == 2 and st["pending"] == 0 and st["failed"] == 0 and st["steps"] == 1


def test_a_campaign_worker_that_dies_once_costs_no_evaluation_in_the_same_run(tmp_path, capsys, pool, monkeypatch):
    """A campaign's pool worker dies (as by SIGKILL) on one evaluation: the evaluations still pending are tried again
    on a fresh pool in the same run, which ends with every evaluation observed, exit 0, nothing failed or pending."""
    died = _oracle_dying_once(tmp_path, monkeypatch, "once_campaign_oracle")
    db = tmp_path / "c.sqlite"
    code, err = _run(capsys, ["campaign", "run", "--db", db, "--pool", pool, "--features", "pairs", "--target",
                              "formation_energy_per_site=0.5:1.5", "--oracle", "python:once_campaign_oracle:f",
                              "--batch", "2", "--budget", "4", "--executor", "process:1"])
    assert code == 0 and died.exists(), err
    from invdesign.campaign import Campaign

    with Campaign.open(db, readonly=True) as c:
        st = c.status()
        obs = c.observations()
    assert st["evaluations"] == 4 and st["pending"] == 0 and st["failed"] == 0 and st["hits"] == 4
    assert obs["canonical_key"].is_unique and (obs["formation_energy_per_site"] == 1.0).all()


def test_pool_workers_die_with_their_parent(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import os, sys, time\n"
        "from invdesign.campaign.executors import make_executor\n"
        "with make_executor('process:1') as ex:\n"
        "    print(ex.submit(os.getpid).result(), flush=True)\n"
        "    time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(p.stdout.readline())
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        for _ in range(100):
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(worker, signal.SIGKILL)
            pytest.fail("the pool worker outlived its parent")
    finally:
        if p.poll() is None:
            p.kill()


# ---------------------------------------------------------------------- (g) Dask schedulers
def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


@pytest.fixture
def not_dask():
    """A TCP server that answers every connection with an HTTP reply (something listens, but not Dask)."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            with c:
                c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    yield srv.getsockname()[1]
    stop.set()
    th.join(5)
    srv.close()


@pytest.mark.parametrize("where", ["nothing listens", "not dask"])
def test_an_unreachable_dask_scheduler_is_one_line_at_once_and_creates_nothing(tmp_path, capsys, pool, not_dask, where):
    import time

    table = _label_table(pool, tmp_path / "F.csv")
    spec = f"dask://127.0.0.1:{_closed_port() if where == 'nothing listens' else not_dask}"
    words = "nothing listens on 127.0.0.1" if where == "nothing listens" else "not as a Dask scheduler"
    for argv in (["label", pool, "--oracle", f"table:{table}", "--out", tmp_path / "l.csv", "--executor", spec],
                 ["campaign", "run", "--db", tmp_path / "c.sqlite", "--pool", pool, "--features", "pairs", "--target",
                  "homo_lumo_gap=0.5:1", "--oracle", f"table:{table}", "--budget", "2", "--executor", spec]):
        t0 = time.perf_counter()
        code, err = _run(capsys, argv)
        assert code == 2 and spec in err and words in err, err
        assert time.perf_counter() - t0 < 8  # not Dask's 30 s of retries
        assert sorted(p.name for p in tmp_path.iterdir()) == ["F.csv"]  # no label file, database, lock or temporary


@pytest.mark.parametrize("command", ["label", "campaign run"])
def test_a_killed_dask_scheduler_costs_no_label(tmp_path, capsys, pool, monkeypatch, command):
    """A real ``dask scheduler`` and worker; the scheduler is SIGKILLed by the third call: the run ends at once in one
    line, exit 1, the calls it lost marked for the rerun (label rows, pending evaluations), which evaluates each of
    them once (here inline)."""
    pytest.importorskip("distributed")
    import signal
    import subprocess
    import sys
    import time

    from distributed import Client

    port = _closed_port()
    calls, pid_file = tmp_path / "calls", tmp_path / "scheduler.pid"
    module = f"scheduler_killer_{command.replace(' ', '_')}"  # one per case: an imported module is cached
    (tmp_path / f"{module}.py").write_text(
        "import os, signal\nfrom pathlib import Path\n"
        "def f(structure):\n"
        f"    calls = Path({str(calls)!r})\n"
        "    with open(calls, 'a') as fh:\n"
        "        fh.write('x')\n"
        f"    if len(calls.read_text()) == 3 and Path({str(pid_file)!r}).exists():\n"
        f"        os.kill(int(Path({str(pid_file)!r}).read_text()), signal.SIGKILL)\n"
        "    return (1.0, 0.5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]), "OMP_NUM_THREADS": "1"}
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                               str(port), "--no-dashboard"], **quiet)]
    out, db = tmp_path / "l.csv", tmp_path / "c.sqlite"
    if command == "label":
        argv = ["label", pool, "--oracle", f"python:{module}:f", "--out", out]
    else:
        argv = ["campaign", "run", "--db", db, "--pool", pool, "--features", "pairs", "--target",
                "formation_energy_per_site=0.5:1.5", "--oracle", f"python:{module}:f", "--batch", "6",
                "--budget", "6"]
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", f"tcp://127.0.0.1:{port}",
                                       "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
                                       "--death-timeout", "5"], **quiet))
        import gc

        gc.collect()  # an earlier test's unreferenced client, finalised while this one starts, would deadlock it
        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as c:
            c.wait_for_workers(1, timeout=90)
        pid_file.write_text(str(procs[0].pid))
        t0 = time.perf_counter()
        code, err = _run(capsys, [*argv, "--executor", f"dask://127.0.0.1:{port}"])
        assert procs[0].wait(10) == -signal.SIGKILL
        assert code == 1 and time.perf_counter() - t0 < 60, err
        lines = err.strip().splitlines()  # one line: no Dask log record, no traceback
        assert len(lines) == 1 and "were lost by the executor" in lines[0] and "rerun" in lines[0], err
        if command == "label":
            first = pd.read_csv(out, keep_default_na=False)
            lost = int(first["error"].str.startswith("infrastructure: ").sum())
            assert len(first) == 6 and first["id"].is_unique and lost >= 3  # the calls after the third at least
            assert (first.loc[first["error"] == "", "homo_lumo_gap"] == 0.5).all()
        else:
            from invdesign.campaign import Campaign

            with Campaign.open(db, readonly=True) as c:
                st = c.status()
            lost = st["pending"]
            assert lost >= 3 and st["evaluations"] + lost == 6 and st["failed"] == 0
        before = len(calls.read_text())
        code, err = _run(capsys, [*argv, "--executor", "inline"])
        assert code == 0, err
        assert len(calls.read_text()) - before == lost  # only the lost ones are evaluated again
        if command == "label":
            df = pd.read_csv(out, keep_default_na=False)
            assert sorted(df["id"]) == sorted(first["id"]) and (df["error"] == "").all()  # each id once, labelled
        else:
            with Campaign.open(db, readonly=True) as c:
                st = c.status()
            assert st["evaluations"] == 6 and st["pending"] == 0 and st["failed"] == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
