"""``invdesign columns``: the column guide (name, unit, meaning) of design and predict, as docs/outputs.md has it;
and console tables in full when stdout is not a terminal (issue 24 item 3)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from invdesign.cli import main
from invdesign.columns import DESIGN, PREDICT, guide, unit

ROOT = Path(__file__).resolve().parents[1]


def _guide_rows(heading: str) -> list[tuple[tuple[str, ...], str]]:
    text = (ROOT / "docs" / "outputs.md").read_text()
    section = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S).group(1)
    return [(tuple(re.findall(r"`([^`]+)`", m.group(1))), m.group(3).replace("`", ""))
            for m in re.finditer(r"^\| ((?:`[^`]+`(?:, )?)+) \| ([^|]*) \| (.*) \|$", section, flags=re.M)]


def test_columns_module_holds_the_guides_rows():
    """What ``invdesign columns`` prints is the guide's predict and design tables, row for row."""
    assert PREDICT == _guide_rows("`invdesign predict` -> CSV")
    assert DESIGN == _guide_rows("`invdesign design` -> output folder")
    assert all(unit(names[0]) for names, _ in PREDICT + DESIGN)


def _run(*args: str) -> subprocess.CompletedProcess:
    """The real CLI in a fresh process with stdout a pipe (not a terminal)."""
    code = f"import sys; from invdesign.cli import main; sys.exit(main({list(args)!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={"INVDESIGN_PROGRESS": "0", "PATH": "/usr/bin:/bin", "COLUMNS": "80"})


def test_columns_piped_is_tab_separated_and_complete():
    p = _run("columns", "design")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "column\tunit\trounding\tmeaning"
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(r) == 4 for r in rows) and len(rows) == len(DESIGN)
    by = {r[0]: r for r in rows}
    assert by["e_above_arrangement_min"][1:3] == ["meV per cell", "1 decimal"]
    assert by["formation_energy_per_site"][1:3] == ["eV per defect site", "4 decimals"]
    assert by["p_in_window"][1:3] == ["probability (0-1)", "3 decimals"]
    assert by["arrangement_population"][2] == "3 significant digits" and by["id"][2] == by["n_defects"][2] == ""
    assert by["check_p_in_window"][3].startswith("probability that formation energy and gap")
    assert "…" not in p.stdout
    everything = _run("columns").stdout.splitlines()
    assert everything[0] == "command\tcolumn\tunit\trounding\tmeaning" and len(everything) == 1 + len(PREDICT) + len(DESIGN)


def test_columns_json_and_refusal(capsys):
    assert main(["columns", "predict", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == guide("predict") and {r["command"] for r in rows} == {"predict"}
    assert rows[1] == {"command": "predict", "column": "formation_energy_per_site", "unit": "eV per defect site",
                       "rounding": "4 decimals", "meaning": PREDICT[1][1]}
    assert main(["columns", "bogus"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "design, predict or all" in err


def test_columns_on_a_terminal_is_a_table(monkeypatch):
    """On a terminal: one rich table per command, with the units."""
    import io

    from rich.console import Console

    from invdesign.commands import data

    buf = io.StringIO()
    monkeypatch.setattr(data, "console", Console(file=buf, force_terminal=True, width=140, color_system=None))
    assert main(["columns"]) == 0
    out = buf.getvalue()
    assert "columns of invdesign predict" in out and "columns of invdesign design" in out
    assert "┃ column" in out and "meV per cell" in out and "1 decimal" in out and "\t" not in out


def test_tables_piped_are_printed_in_full(capsys):
    """Not a terminal (capsys): a table wider than 80 columns is printed whole, no cell cut with "…" or wrapped."""
    from rich.table import Table

    from invdesign.commands.common import LazyConsole, print_table

    t = Table(title="t")
    for c in ("id", "canonical_key", "composition"):
        t.add_column(c, justify="right")
    long_id, key = "GaSe_In5Ga64Se66S1_" + "x" * 40, "GaSe-8x8:" + ",".join(f"{i}=In" for i in range(40))
    t.add_row(long_id, key, "W_Mo:1,Se_S:1,V_S:1")
    print_table(LazyConsole(), t)
    out = capsys.readouterr().out
    assert long_id in out and key in out and "W_Mo:1,Se_S:1,V_S:1" in out and "…" not in out
    assert len([line for line in out.splitlines() if long_id in line]) == 1


def test_design_table_piped_has_whole_cells(tmp_path, capsys):
    """``invdesign design`` with stdout not a terminal: the composition column whole (it was ``composi…``)."""
    assert main(["design", "--target", "formation_energy_per_site=1.0:1.2", "--target", "homo_lumo_gap=0.9:1.3",
                 "-n", "2", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    import pandas as pd

    c = pd.read_csv(tmp_path / "run" / "candidates.csv")
    assert "composition" in out and "formation_energy_per_site" in out and "…" not in out
    for r in c.itertuples():
        assert f" {r.id} " in out and f" {r.composition} " in out
