"""Benchmark plumbing: a failed command is never a timing (``benchmarks/checked.py``), and ``make bench``
(``benchmarks/run_all.py``) runs what regenerates every README figure and stops at the first failure."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


@pytest.fixture
def bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


def test_run_checked_fails_loudly(bench_path, capsys):
    from checked import BenchmarkCommandFailed, run_checked

    ok = run_checked([sys.executable, "-c", "print('fine')"])
    assert ok.returncode == 0 and ok.stdout.strip() == "fine"
    with pytest.raises(BenchmarkCommandFailed, match="exited 2; its time is not a measurement") as e:
        run_checked([sys.executable, "-c", "import sys; sys.stderr.write('refused: give --overwrite'); sys.exit(2)"],
                    what="CLI design")
    assert e.value.code != 0 and "refused: give --overwrite" in capsys.readouterr().err


def test_run_all_covers_every_readme_result_file(bench_path):
    import run_all

    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Headline results", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z0-9_]+\.md)`", table))
    assert {"seed_table.md", "gap.md", "design.md", "campaign.md", "hosts.md"} <= named
    written = {w for s in run_all.STEPS for w in s.writes}
    assert named <= written, f"README figures no run_all step regenerates: {sorted(named - written)}"
    for s in run_all.STEPS:
        assert (BENCH / s.args[0]).is_file(), s
        assert all((BENCH / "results" / w).is_file() for w in s.writes), s
    assert [s.name for s in run_all.selected(None, False)] == [s.name for s in run_all.STEPS if not s.peer]
    with pytest.raises(SystemExit, match="unknown step"):
        run_all.selected("design,nosuch", False)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^bench:\n\t\$\(PY\) benchmarks/run_all.py$", makefile, re.M)


def test_run_all_stops_at_the_first_failure(bench_path, tmp_path, monkeypatch, capsys):
    import run_all
    from checked import BenchmarkCommandFailed

    marker = tmp_path / "ran"
    (tmp_path / "ok.py").write_text("print('fine')\n")
    (tmp_path / "bad.py").write_text("import sys\nprint('half way')\nsys.exit(3)\n")
    (tmp_path / "after.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    steps = tuple(run_all.Step(n, (str(tmp_path / f"{n}.py"),), (), "s") for n in ("ok", "bad", "after"))
    monkeypatch.setattr(run_all, "STEPS", steps)
    with pytest.raises(BenchmarkCommandFailed, match="bad .* exited 3"):
        run_all.main(["--logs", str(tmp_path / "logs")])
    err = capsys.readouterr()
    assert "run_all: ok: exit 0" in err.out and "half way" in err.err
    assert not marker.exists()  # nothing after a failure runs
    assert (tmp_path / "logs" / "ok.log").read_text().strip() == "fine"
    assert run_all.main(["--only", "ok", "--logs", str(tmp_path / "logs")]) == 0
    assert "| ok | 0 |" in capsys.readouterr().out
