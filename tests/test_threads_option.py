"""``--threads N`` of ``label``, ``design --check`` and ``campaign run`` (issue 24 item 2): every oracle calculation
runs on N threads (default 1) in each worker, pool workers included; the caller's settings are restored after."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from invdesign.cli import main


def threads_oracle(structure) -> dict:
    """E_f: the OMP_NUM_THREADS the calculation sees; gap: torch's thread count there (torch imported as CHGNet does)."""
    import torch

    return {"formation_energy_per_site": float(os.environ.get("OMP_NUM_THREADS", "0")),
            "homo_lumo_gap": float(torch.get_num_threads())}


@pytest.fixture(scope="module")
def structures(tmp_path_factory):
    d = tmp_path_factory.mktemp("threads")
    assert main(["enumerate", "--max-defects", "1", "--structures", str(d / "s"), "--out", str(d / "e.csv")]) == 0
    some = sorted((d / "s").glob("*.cif"))[:2]
    assert len(some) == 2
    return some


@pytest.mark.parametrize("executor", ["process:1", "inline"])
def test_label_threads_reach_the_oracle(tmp_path, structures, executor, monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the caller's setting: --threads (default 1) wins for the oracle
    old = torch.get_num_threads()
    torch.set_num_threads(3)
    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    for threads, want in ((["--threads", "2"], 2.0), ([], 1.0)):  # default: one thread per worker
        out = tmp_path / f"l{want:g}.csv"
        assert main(["label", *map(str, structures), "--oracle", "python:test_threads_option:threads_oracle",
                     "--executor", executor, "--out", str(out), *threads]) == 0
        df = pd.read_csv(out)
        assert len(df) == 2 and df["error"].isna().all(), df
        assert (df["formation_energy_per_site"] == want).all() and (df["homo_lumo_gap"] == want).all(), df
    assert torch.get_num_threads() == before == 3 and os.environ.get("OMP_NUM_THREADS") == env == "3"  # restored
    torch.set_num_threads(old)


def test_oracle_threads_sets_and_restores():
    import torch

    from invdesign.commands.common import THREAD_ENV, oracle_threads

    class Xtb:  # an xTB oracle's knob
        threads = 1

    before, env = torch.get_num_threads(), {k: os.environ.get(k) for k in THREAD_ENV}
    orc = Xtb()
    with oracle_threads(3, orc):
        assert torch.get_num_threads() == 3 and all(os.environ[k] == "3" for k in THREAD_ENV) and orc.threads == 3
    assert torch.get_num_threads() == before and {k: os.environ.get(k) for k in THREAD_ENV} == env


def test_threads_option_is_in_the_help(capsys):
    for cmd in (["label"], ["design"], ["campaign", "run"]):
        assert main([*cmd, "--help"]) == 0
        out = capsys.readouterr().out
        assert "--threads" in out and "default 1" in out, cmd
    assert main(["label", "x.cif", "--oracle", "surrogate", "--out", "x.csv", "--threads", "0"]) == 2
