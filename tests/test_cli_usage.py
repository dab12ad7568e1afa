"""Usage errors through the real entry point (the installed ``invdesign`` script): one line, exit 2.

Typer >= 0.29 raises its own exception classes (``typer.TyperException``), not click's; these tests
run the console script in a subprocess, exactly as a user's shell does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("invdesign")
EXE = [str(SCRIPT)] if SCRIPT.exists() else [shutil.which("invdesign") or "invdesign"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "INVDESIGN_PROGRESS": "0"}
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["design", "--target", "formation_energy_per_site=1:2"], "Missing option '--out'"),
        (["design", "-n", "abc", "--out", "x"], "Invalid value for '-n'"),
        (["desing"], "No such command 'desing'. Did you mean 'design'?"),
        (["design", "--supercel", "12x12", "--out", "x"], "No such option: --supercel"),
        (["predict"], "Missing argument 'structures'"),
        (["campaign", "status"], "Missing option '--db'"),
    ],
    ids=["missing-option", "bad-value", "unknown-command", "unknown-option", "missing-argument", "subcommand"],
)
def test_usage_error_is_one_line_and_exit_2(tmp_path, args, needle):
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("invdesign: error: ") and needle in lines[0]
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_version_is_one_line():
    r = run("--version")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    from invdesign import __version__

    for part in (f"invdesign {__version__}", "model default sha256:", "hd correction sha256:", "torch ", "pymatgen ", "python "):
        assert part in lines[0]


def test_help_exits_0():
    r = run("--help")
    assert r.returncode == 0 and "design" in r.stdout and r.stderr == ""
