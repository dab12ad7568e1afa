"""The campaign store under abuse: SIGKILL mid-run, and two processes on one campaign.

Both use subprocesses on a small labelled pool (see ``tests/test_campaign.py``) with exact pair
features (no model), so they test the store and the loop, not a model.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch
from test_campaign import _wargs, make_pool

from invdesign.campaign import Campaign
from invdesign.campaign.replay import window_around_member
from invdesign.cli import main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pool(dataset, host, tmp_path_factory):
    return make_pool(dataset, host, tmp_path_factory.mktemp("store_pool"))


def _env() -> dict:
    env = dict(os.environ)
    env["INVDESIGN_PROGRESS"] = "0"
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(os.path.dirname(os.path.dirname(__file__))), env.get("PYTHONPATH", "")])
    return env


def _observed(db) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute("SELECT canonical_key, formation_energy_per_site, homo_lumo_gap FROM observations").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        con.close()


def test_sigkill_mid_run_loses_nothing_and_resumes_the_same(tmp_path, pool):
    target, _ = window_around_member(pool["y"], np.random.default_rng(11), min_inside=6)
    common = ["--pool", str(pool["dir"]), "--oracle", f"table:{pool['labels']}", *_wargs(target),
              "--batch", "3", "--budget", "24", "--features", "pairs", "--seed", "2"]
    ref_db, db = tmp_path / "ref.db", tmp_path / "killed.db"
    assert main(["campaign", "run", "--db", str(ref_db), *common]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "invdesign.cli", "campaign", "run", "--db", str(db), *common],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: list[tuple] = []
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            seen = _observed(db)
            if len(seen) >= 6:
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    after = _observed(db)
    assert set(seen) <= set(after)  # every committed observation survived
    assert len(after) < 24  # it really was killed mid-run
    with Campaign.open(db) as c:
        assert c.store.integrity() == "ok"
    assert main(["campaign", "run", "--db", str(db)]) == 0  # resume from the stored config
    with Campaign.open(db) as c, Campaign.open(ref_db) as r:
        assert c.status()["evaluations"] == r.status()["evaluations"] == 24
        # the same suggestions, step by step, as the uninterrupted run
        assert c.store.suggestions()["canonical_key"].tolist() == r.store.suggestions()["canonical_key"].tolist()
        a, b = c.observations(), r.observations()
        assert sorted(zip(a["step"], a["canonical_key"])) == sorted(zip(b["step"], b["canonical_key"]))
        assert c.status()["hits"] == r.status()["hits"]


WORKER = textwrap.dedent(
    """
    import sys, numpy as np, pandas as pd, torch
    torch.set_num_threads(1)
    from invdesign.campaign import Campaign
    db, labels, shared = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    lab = pd.read_csv(labels, dtype={"_id": str}).set_index("_id")
    for rnd in range(4):
        with Campaign.open(db) as c:
            batch = c.suggest(2)
            ids = list(batch["id"]) + shared[rnd * 2 : rnd * 2 + 4]
            c.observe(pd.DataFrame({"id": ids, **{t: lab.loc[ids, t].to_numpy() for t in lab.columns}}), source="worker")
    """
)


def test_two_processes_on_one_campaign(tmp_path, pool):
    target, _ = window_around_member(pool["y"], np.random.default_rng(5), min_inside=6)
    db = tmp_path / "shared.db"
    Campaign.create(db, target, [pool["dir"]], features="pairs", batch=2, seed=0).close()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    shared = ",".join(pool["ids"][-10:])  # both processes observe these too (idempotent overlap)
    procs = [subprocess.Popen([sys.executable, str(script), str(db), str(pool["labels"]), shared], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    with Campaign.open(db) as c:
        assert c.store.integrity() == "ok"
        sug = c.store.suggestions()
        obs = c.observations()
        assert len(sug) == 16 and sug["canonical_key"].is_unique  # 2 processes x 4 rounds x 2, never the same twice
        assert (sug["status"] == "observed").all()
        assert obs["canonical_key"].is_unique
        expected = set(sug["id"]) | set(pool["ids"][-10:])
        assert set(obs["id"]) == expected and len(obs) == len(expected)
        lab = pd.read_csv(pool["labels"], dtype={"_id": str}).set_index("_id")
        np.testing.assert_allclose(obs["homo_lumo_gap"], lab.loc[obs["id"], "homo_lumo_gap"])
        assert sorted(sug["step"].unique()) == list(range(1, 9))
