"""The output policy against crafted manifests: ``--overwrite`` never removes anything outside the
output folder, nor anything a manifest lists that the command would not write."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from invdesign.cli import main
from invdesign.outputs import MANIFEST, read_manifest


def _enumerate(out: Path, csv: Path, *extra: str) -> int:
    return main(["enumerate", "--max-defects", "1", "--out", str(csv), "--structures", str(out), *extra])


@pytest.mark.parametrize("entry", ["../SENTINEL.txt", "ABS", "sub/../../SENTINEL.txt", "./../SENTINEL.txt",
                                   "link/SENTINEL.txt", "notes.docx"])
def test_crafted_manifest_never_deletes_outside_or_foreign_files(tmp_path, capsys, entry):
    out, csv = tmp_path / "run", tmp_path / "e.csv"
    assert _enumerate(out, csv) == 0
    sentinel = tmp_path / "SENTINEL.txt"
    sentinel.write_text("precious")
    victim_dir = tmp_path / "elsewhere"
    victim_dir.mkdir()
    (victim_dir / "SENTINEL.txt").write_text("precious too")
    man = json.loads((out / MANIFEST).read_text())
    if entry == "link/SENTINEL.txt":  # a listed link into another folder: the link is ours at most, never its target
        os.symlink(victim_dir, out / "link")
        man["files"] += ["link"]
    if entry == "notes.docx":
        (out / "notes.docx").write_text("the user's")
    man["files"].append(str(sentinel) if entry == "ABS" else entry)
    (out / MANIFEST).write_text(json.dumps(man))
    capsys.readouterr()
    rc = _enumerate(out, csv, "--overwrite")
    assert sentinel.read_text() == "precious"
    assert (victim_dir / "SENTINEL.txt").read_text() == "precious too"
    if entry == "notes.docx":
        assert (out / "notes.docx").read_text() == "the user's"
    if entry != "link/SENTINEL.txt":  # those manifests are not ours: the folder is refused, one line
        assert rc == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "did not write" in err[0], err


def test_read_manifest_validates_entries(tmp_path):
    good = {"command": "design", "files": ["candidates.csv", "structures/a.cif", "plan/x/INCAR"], "dirs": ["structures"]}
    (tmp_path / MANIFEST).write_text(json.dumps(good))
    assert read_manifest(tmp_path) == good
    for bad_files, bad_dirs in [(["/etc/passwd"], []), (["a/../../b.csv"], []), (["x.csv\x00"], []), ([""], []),
                                ([3], []), (["a.sh"], []), ([], ["../up"]), ([], ["/tmp"])]:
        (tmp_path / MANIFEST).write_text(json.dumps({"command": "design", "files": bad_files, "dirs": bad_dirs}))
        assert read_manifest(tmp_path) is None, (bad_files, bad_dirs)


# ---------------------------------------------------------------------- one run per output at a time (a lock)
_HOLD = ("import sys, time\n"
         "from invdesign.outputs import {fn}\n"
         "{fn}(sys.argv[1], {arg})\n"
         "print('held', flush=True)\n"
         "time.sleep(120)\n")


def _holder(out: Path, fn: str = "check_dir", arg: str = "'design'"):
    """A second process that validated ``out`` (holding its lock) and waits; returns the Popen once it holds it."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", _HOLD.format(fn=fn, arg=arg), str(out)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_an_output_lock_is_exclusive_between_processes(tmp_path):
    from invdesign.errors import InvdesignError
    from invdesign.outputs import acquire_lock, lock_path, release_lock

    out = tmp_path / "run"
    p = _holder(out)
    try:
        assert lock_path(out).exists()
        with pytest.raises(InvdesignError, match=rf"another invdesign run \(pid {p.pid} on .+\) is writing this output"):
            acquire_lock(out)
    finally:
        p.kill()
        p.wait()
    assert acquire_lock(out) is True  # the kernel released the killed holder's lock; its file is reused
    assert acquire_lock(out) is False  # already ours: re-entrant
    release_lock(out)
    assert not lock_path(out).exists() and sorted(os.listdir(tmp_path)) == []


def test_a_second_concurrent_run_on_one_output_is_refused_in_one_line(tmp_path, capsys, host):
    from conftest import write_small_pool

    pool = write_small_pool(tmp_path / "pool", host)
    out = tmp_path / "run"
    design = ["design", "--target", "formation_energy_per_site=0:5", "-n", "2", "--pool", str(pool), "--out", str(out)]
    p = _holder(out)
    try:
        capsys.readouterr()
        assert main(design) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "another invdesign run" in err[0] and str(out) in err[0], err
        assert not out.exists()
    finally:
        p.kill()
        p.wait()
    csv = tmp_path / "p.csv"
    p = _holder(csv, "check_file", "('.csv',)")
    try:
        assert main(["predict", str(pool), "--out", str(csv)]) == 2
        assert "another invdesign run" in capsys.readouterr().err and not csv.exists()
    finally:
        p.kill()
        p.wait()
    assert main(design) == 0  # once the other run is gone, the output is written (and the lock removed)
    assert (out / "candidates.csv").is_file()
    assert not (tmp_path / ".run.invdesign-lock").exists() and not (out / ".invdesign-lock").exists()
    assert ".invdesign-lock" not in (out / ".invdesign-manifest.json").read_text()
