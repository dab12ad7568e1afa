"""The documentation site builds with warnings as errors, and its column guide covers what the CLI writes.

``mkdocs build --strict`` runs here, in the test suite (CI installs the ``dev`` extra, which has mkdocs,
mkdocs-material and mkdocstrings): a broken link, a missing page, an API docstring mkdocstrings cannot
render or a CLI command whose ``--help`` fails (the CLI reference is generated from the code by
``scripts/docs_hooks.py``) fails the suite. The column guide (``docs/outputs.md``) must name every
column that a real ``invdesign predict`` run writes, and those of ``enumerate`` and ``canon``: a column
added to a command without a line in the guide fails here.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

# the site's build tools: a missing one is an install error, never a skip (they are in the dev extra)
import material  # noqa: F401  (mkdocs-material)
import mkdocs  # noqa: F401
import mkdocstrings  # noqa: F401
import pytest

from invdesign.cli import main

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "outputs.md"


def _section(markdown: str, heading: str) -> str:
    """The text of the ``## heading`` section of ``markdown`` (up to the next ``## ``)."""
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, flags=re.M | re.S)
    assert m, f"docs/outputs.md has no section '## {heading}'"
    return m.group(1)


def _header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f))


def _undocumented(columns: list[str], section: str) -> list[str]:
    return [c for c in columns if f"`{c}`" not in section]


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "INVDESIGN_PROGRESS": "0"}
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                        "--site-dir", str(site)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"mkdocs build --strict failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    for page in ("index", "install", "tutorial", "outputs", "cli", "api", "data", "results"):
        assert (site / (page + ".html") if page == "index" else site / page / "index.html").is_file(), page
    cli = (site / "cli" / "index.html").read_text()
    for command in ("invdesign design", "invdesign predict", "invdesign campaign run", "invdesign label"):
        assert command in cli, f"the generated CLI reference lacks {command}"
    assert "--target" in cli and "Usage:" in cli
    api = (site / "api" / "index.html").read_text()
    for obj in ("api.design", "api.predict", "api.embed", "lattice.canonical.canonical_key",
                "campaign.campaign.Campaign"):
        assert f'id="invdesign.{obj}"' in api, f"the API reference lacks invdesign.{obj}"


@pytest.fixture(scope="module")
def cli_outputs(tmp_path_factory):
    """Real CLI runs: ``enumerate --max-defects 1 --structures``, then ``predict`` and ``canon`` on three of them."""
    d = tmp_path_factory.mktemp("docs_cli")
    assert main(["enumerate", "--max-defects", "1", "--structures", str(d / "s"), "--out", str(d / "e.csv")]) == 0
    some = sorted((d / "s").glob("*.cif"))[:3]
    assert len(some) == 3
    assert main(["predict", *map(str, some), "--out", str(d / "pred.csv")]) == 0
    assert main(["canon", *map(str, some), "--out", str(d / "keys.csv")]) == 0
    return d


def test_column_guide_names_every_predict_column(cli_outputs):
    columns = _header(cli_outputs / "pred.csv")
    assert "formation_energy_per_site" in columns and "homo_lumo_gap" in columns
    missing = _undocumented(columns, _section(GUIDE.read_text(), "`invdesign predict` -> CSV"))
    assert not missing, f"docs/outputs.md does not document predict's columns {missing}"


def test_column_guide_names_every_enumerate_and_canon_column(cli_outputs):
    text = GUIDE.read_text()
    missing = _undocumented(_header(cli_outputs / "e.csv"), _section(text, "`invdesign enumerate` -> CSV"))
    missing += _undocumented(_header(cli_outputs / "keys.csv"), _section(text, "`invdesign canon` -> CSV"))
    assert not missing, f"docs/outputs.md does not document {missing}"


def test_column_guide_names_every_design_column(tmp_path):
    """A real ``design`` run (exhaustive, with --mu and --export): every column of candidates.csv has a line
    (with its unit) in the guide's design section."""
    out = tmp_path / "run"
    assert main(["design", "--target", "formation_energy_per_site=1.0:1.2", "--target", "homo_lumo_gap=0.9:1.3",
                 "-n", "2", "--mu", "S-rich", "--export", "json", "--out", str(out)]) == 0
    columns = _header(out / "candidates.csv")
    section = _section(GUIDE.read_text(), "`invdesign design` -> output folder")
    assert not _undocumented(columns, section), f"docs/outputs.md does not document design's {_undocumented(columns, section)}"
    rows = {m.group(1): m.group(2).strip() for m in re.finditer(r"^\| `([^`]+)`[^|]*\| ([^|]*) \|", section, flags=re.M)}
    assert all(rows.get(c, "x") for c in columns), "a documented column has an empty unit cell"
    # summary.json carries the same units, from invdesign.columns
    import json

    units = json.loads((out / "summary.json").read_text())["columns"]["units"]
    assert list(units) == columns and "see docs/outputs.md" not in units.values()


def test_column_units_agree_with_the_guide():
    """invdesign.columns (what summary.json carries) and the guide's unit cells say the same, column by column."""
    from invdesign.columns import UNITS, unit

    text = GUIDE.read_text()
    guide = {}
    for heading in ("`invdesign predict` -> CSV", "`invdesign design` -> output folder"):
        for m in re.finditer(r"^\| ((?:`[^`]+`(?:, )?)+) \| ([^|]*) \|", _section(text, heading), flags=re.M):
            for col in re.findall(r"`([^`]+)`", m.group(1)):
                guide[col] = m.group(2).strip().strip("*")
    assert set(UNITS) <= set(guide), f"not in the guide: {sorted(set(UNITS) - set(guide))}"
    assert {c: unit(c) for c in guide} == guide


def test_section_check_catches_a_missing_column():
    """The check itself: a column absent from the section is reported."""
    assert _undocumented(["id", "surely_not_documented"], "| `id` | - | the id |") == ["surely_not_documented"]


def test_readme_is_short_and_its_links_resolve():
    """Issue 24: the README teaches the main job (under ~150 lines); the rest is in docs/, and every local
    link of the README names a file that exists."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert max(len(line) for line in text.splitlines()) < 600, "a README line (a table cell?) is a paragraph"
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)
    assert links and all((ROOT / link).exists() for link in links), [link for link in links if not (ROOT / link).exists()]
