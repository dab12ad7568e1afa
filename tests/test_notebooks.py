"""The notebooks in notebooks/ execute headless from top to bottom (the user's tour)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_embedding.ipynb", "02_inverse_design.ipynb", "03_campaign.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' working folders land here, not in the machine's /tmp
    nb = nbformat.read(path, as_version=4)
    prefixes = re.findall(r'mkdtemp\(prefix="(\w+)"\)', "\n".join(c.source for c in nb.cells if c.cell_type == "code"))
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    for prefix in prefixes:
        assert list(tmp_path.glob(f"{prefix}*")), f"{path.name}: its working folder {prefix}* is not under TMPDIR"
