"""``invdesign label``: resumable oracle labelling through the executors, incl. a real Dask scheduler."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from invdesign.cli import main
from invdesign.io import write_structure
from invdesign.lattice.host import HostLattice

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture
def tests_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


def _folder(tmp_path: Path, n: int, seed: int = 0) -> tuple[Path, dict[str, int]]:
    """``n`` random 1-4-defect configurations as CIFs; returns the folder and ``{id: atoms removed}``."""
    host = HostLattice.default()
    rng = np.random.default_rng(seed)
    d = tmp_path / "structs"
    d.mkdir()
    removed = {}
    for i in range(n):
        occ = host.host_code.copy()
        k = int(rng.integers(1, 5))
        sites = rng.choice(host.n_sites, size=k, replace=False)
        for s in sites:
            opts = [c for (sub, c) in host.defect_types if sub == host.sublattice[s]]
            occ[s] = opts[int(rng.integers(len(opts)))]
        write_structure(occ, host, d / f"s{i:03d}.cif")
        removed[f"s{i:03d}"] = int((occ == 0).sum())
    return d, removed


def test_label_resumes_and_skips_done(tmp_path, tests_on_path):
    d, removed = _folder(tmp_path, 6)
    out = tmp_path / "labels.csv"
    first = sorted(d.iterdir())[:3]
    assert main(["label", *map(str, first), "--oracle", "python:label_oracles:slow_oracle", "--out", str(out),
                 "--executor", "inline"]) == 0
    assert len(pd.read_csv(out)) == 3
    with open(out, "a") as fh:  # a row torn by a kill: dropped and redone
        fh.write("s005,partial")
    assert main(["label", str(d), "--oracle", "python:label_oracles:slow_oracle", "--out", str(out),
                 "--executor", "thread:2"]) == 0
    df = pd.read_csv(out)
    assert sorted(df["id"]) == sorted(removed) and df["id"].is_unique
    assert list(df.columns) == ["id", "canonical_key", "formation_energy_per_site", "homo_lumo_gap", "seconds", "error"]
    np.testing.assert_allclose(df.set_index("id")["formation_energy_per_site"].loc[list(removed)],
                               [0.001 * removed[i] for i in removed])
    assert (df["seconds"] >= 0.15).all()
    before = out.read_text()
    assert main(["label", str(d), "--oracle", "python:label_oracles:slow_oracle", "--out", str(out)]) == 0
    assert out.read_text() == before  # nothing left to do, nothing rewritten


def test_label_records_failures(tmp_path, tests_on_path):
    host = HostLattice.default()
    d = tmp_path / "s"
    d.mkdir()
    ok, bad = host.host_code.copy(), host.host_code.copy()
    ok[70] = host.species_code["Se"]
    bad[0] = host.species_code["W"]
    write_structure(ok, host, d / "ok.cif")
    write_structure(bad, host, d / "bad.cif")
    out = tmp_path / "l.csv"
    assert main(["label", str(d), "--oracle", "python:label_oracles:failing_oracle", "--out", str(out),
                 "--executor", "inline"]) == 0
    df = pd.read_csv(out).set_index("id")
    assert "no W here" in df.loc["bad", "error"] and pd.isna(df.loc["bad", "formation_energy_per_site"])
    assert pd.isna(df.loc["ok", "error"])


@pytest.mark.parametrize("args,msg", [
    (["--oracle", "nosuch"], "unknown oracle"),
    (["--oracle", "python:label_oracles:missing"], "has no 'missing'"),
    (["--oracle", "python:label_oracles:slow_oracle", "--steps", "3"], "--steps/--fmax apply to relaxing oracles"),
    (["--oracle", "python:label_oracles:slow_oracle", "--executor", "bogus"], "unknown executor"),
    (["--oracle", "chgnet+delta", "--steps", "3"], "--steps/--fmax relax the structures that --relaxed DIR writes"),
])
def test_label_bad_input(tmp_path, tests_on_path, capsys, args, msg):
    d, _ = _folder(tmp_path, 1)
    out = tmp_path / "x.csv"
    assert main(["label", str(d), "--out", str(out), *args]) == 2
    assert msg in capsys.readouterr().err
    assert not out.exists()


def test_label_refuses_foreign_csv(tmp_path, tests_on_path, capsys):
    d, _ = _folder(tmp_path, 1)
    out = tmp_path / "x.csv"
    out.write_text("a,b\n1,2\n")
    assert main(["label", str(d), "--oracle", "python:label_oracles:slow_oracle", "--out", str(out)]) == 2
    assert "not a label file" in capsys.readouterr().err
    assert out.read_text() == "a,b\n1,2\n"


def test_label_relaxed_chgnet_delta_relaxes(tmp_path, share, capsys):
    """``--relaxed`` with ``chgnet+delta`` (a single-point oracle) writes relaxed structures: atoms moved and
    CHGNet's energy of the written structure is below the single point that the row reports."""
    if share is None:
        pytest.skip("needs the 2DMD share")
    import tarfile

    from ase.io import read as ase_read

    from invdesign.campaign.oracles import ChgnetDeltaOracle

    src = tmp_path / "in"
    src.mkdir()
    with tarfile.open(share / "initial.tar.gz") as tf:
        member = next(m for m in tf if m.isfile() and m.name.endswith(".cif"))
        (src / Path(member.name).name).write_bytes(tf.extractfile(member).read())
    cif = next(src.iterdir())
    out, rdir = tmp_path / "labels.csv", tmp_path / "relaxed"
    assert main(["label", str(src), "--oracle", "chgnet+delta", "--out", str(out), "--relaxed", str(rdir),
                 "--steps", "3", "--executor", "inline"]) == 0
    row = pd.read_csv(out).iloc[0]
    assert row["id"] == cif.stem and pd.isna(row["error"])
    assert row["relax_steps"] == 3 and row["max_displacement"] > 1e-3
    relaxed = ase_read(rdir / f"{cif.stem}.cif")
    before = ase_read(cif)
    assert len(relaxed) == len(before)
    moved = np.linalg.norm(relaxed.get_positions() - before.get_positions(), axis=1).max()
    assert moved > 1e-3, "the structure --relaxed wrote is the unrelaxed input"
    relaxed.calc = ChgnetDeltaOracle.from_file().calculator()
    assert relaxed.get_potential_energy() < row["energy"] - 1e-3  # relaxation lowered the energy
    # the reported energy stays the single point the correction was fitted on
    single = ase_read(cif)
    single.calc = relaxed.calc
    assert abs(single.get_potential_energy() - row["energy"]) < 0.05


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_label_on_a_dask_scheduler_with_a_killed_worker(tmp_path, tests_on_path):
    """A real ``dask scheduler`` + two ``dask worker`` processes; one worker is killed mid-run."""
    pytest.importorskip("distributed")
    from distributed import Client

    d, removed = _folder(tmp_path, 24, seed=1)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), "OMP_NUM_THREADS": "1"}
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    wcmd = [sys.executable, "-m", "distributed.cli.dask_worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1",
            "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", "--death-timeout", "60"]
    procs = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        procs += [subprocess.Popen(wcmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
        import gc

        gc.collect()  # an earlier test's unreferenced client, finalised while this one starts, would deadlock it
        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as c:
            c.wait_for_workers(2, timeout=90)
        out = tmp_path / "labels.csv"
        rc: list[int] = []
        th = threading.Thread(target=lambda: rc.append(main([
            "label", str(d), "--oracle", "python:label_oracles:slow_oracle", "--out", str(out),
            "--executor", f"dask://127.0.0.1:{port}"])))
        th.start()
        deadline = time.time() + 60
        while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 5):
            time.sleep(0.05)
        victim = procs[1]
        victim.send_signal(signal.SIGKILL)
        rows_at_kill = len(out.read_text().splitlines()) - 1
        victim.wait(timeout=10)
        th.join(timeout=120)
        assert not th.is_alive() and rc == [0]
        df = pd.read_csv(out)
        assert df["id"].is_unique and sorted(df["id"]) == sorted(removed)  # none lost, none duplicated
        assert df["error"].isna().all()
        np.testing.assert_allclose(df.set_index("id")["formation_energy_per_site"].loc[list(removed)],
                                   [0.001 * removed[i] for i in removed])
        assert rows_at_kill < len(removed)  # the worker died with calls left to run
        pids = set(df["homo_lumo_gap"].astype(int))
        assert procs[2].pid in pids and pids <= {procs[1].pid, procs[2].pid}  # calls ran on the workers
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
