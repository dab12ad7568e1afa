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
