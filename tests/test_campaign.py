"""Campaigns: targets, GP and acquisition, oracles, executors, the loop, the CLI and the report.

Runs on a small labelled pool: 120 structures of the share's test split (real DFT labels) when
the share is present, else 120 generated configurations with a deterministic synthetic label.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from invdesign.campaign import Campaign, Target
from invdesign.campaign.acquisition import kriging_believer_ei, log_p_window, top_q
from invdesign.campaign.features import PairFeatures
from invdesign.campaign.gp import TargetGP, posterior
from invdesign.campaign.oracles import (
    AseOracle,
    CallableOracle,
    ChgnetOracle,
    TableOracle,
    fit_chemical_potentials,
    make_oracle,
    species_delta,
)
from invdesign.campaign.replay import random_search_evaluations, window_around_member
from invdesign.cli import main
from invdesign.data.dataset import TARGETS, split_indices
from invdesign.errors import InvdesignError
from invdesign.io import write_structure
from invdesign.lattice.canonical import apply_op, canonical_keys

torch.set_num_threads(1)
POOL_N = 120


def synthetic_labels(occ: np.ndarray, host) -> np.ndarray:
    """A smooth invariant stand-in for DFT (eV): used only where the share is absent."""
    f = PairFeatures(host)(occ)
    fe = 0.5 + 0.8 * f[:, 1] + 1.2 * f[:, 3] + 0.1 * f[:, 2] + 2.0 * f[:, 4:].sum(1)
    gap = 1.8 - 0.3 * f[:, 3] - 0.4 * f[:, 1] + 0.5 * f[:, 4:].sum(1)
    return np.stack([fe, gap], axis=1)


def make_pool(dataset, host, root: Path, n: int = POOL_N):
    """Write ``n`` labelled structures to ``root/pool`` (CIFs) and ``root/labels.csv``; return a dict."""
    if len(dataset.targets.columns) and all(t in dataset.targets.columns for t in TARGETS):
        test = split_indices(dataset.ids, seed=0)["test"]
        idx = np.sort(test[np.argsort(dataset.ids[test].astype(str))][:n])
        sub = dataset.subset(idx)
        y = sub.y()
    else:
        sub = dataset.subset(np.arange(n))
        y = synthetic_labels(sub.occ, host)
    keys = canonical_keys(sub.occ, host)
    first = sorted({k: i for i, k in reversed(list(enumerate(keys)))}.values())  # one per class
    sub, y = sub.subset(np.array(first)), y[first]
    pool = root / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    for i, occ in zip(sub.ids, sub.occ):
        write_structure(occ, host, pool / f"{i}.cif")
    labels = root / "labels.csv"
    pd.DataFrame({"_id": sub.ids, **{t: y[:, j] for j, t in enumerate(TARGETS)}}).to_csv(labels, index=False)
    return {"dir": pool, "labels": labels, "ids": list(map(str, sub.ids)), "occ": sub.occ, "y": y, "ds": sub}


@pytest.fixture(scope="module")
def pool(dataset, host, tmp_path_factory):
    return make_pool(dataset, host, tmp_path_factory.mktemp("campaign_pool"))


@pytest.fixture(scope="module")
def window(pool):
    target, inside = window_around_member(pool["y"], np.random.default_rng(3), min_inside=8)
    return target, inside


def _wargs(target: Target) -> list[str]:
    out = []
    for name, (lo, hi) in target.window.items():
        out += ["--target", f"{name}={lo!r}:{hi!r}"]
    return out


# ---------------------------------------------------------------------- targets
def test_target_parsing_hits_and_score():
    t = Target.from_cli(["formation_energy_per_site=1:2", "homo_lumo_gap=:0.5"])
    assert t.window == {"formation_energy_per_site": (1.0, 2.0), "homo_lumo_gap": (-math.inf, 0.5)}
    y = np.array([[1.5, 0.3], [2.5, 0.3], [1.5, np.nan], [1.0, 0.5]])
    assert t.hits(y).tolist() == [True, False, False, True]
    s = t.score(y)
    assert s[0] == 0 and s[1] == pytest.approx(-0.5) and s[3] == 0
    assert Target.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    m = Target.from_cli(minimise="homo_lumo_gap", threshold=0.2)
    assert m.hits(np.array([[0, 0.1], [0, 0.3]])).tolist() == [True, False]
    for bad in (["gap=1:2"], ["homo_lumo_gap=2:1"], ["homo_lumo_gap=a:b"], ["homo_lumo_gap"]):
        with pytest.raises(InvdesignError):
            Target.from_cli(bad)
    with pytest.raises(InvdesignError):
        Target.from_cli(["homo_lumo_gap=1:2"], minimise="homo_lumo_gap")


# ---------------------------------------------------------------------- GP and acquisition
def test_pair_features_invariant_and_gp_learns(host, pool):
    feat = PairFeatures(host)
    occ = pool["occ"][:20]
    rng = np.random.default_rng(0)
    moved = np.stack([apply_op(o, host, int(g)) for o, g in zip(occ, rng.integers(0, host.n_ops, len(occ)))])
    np.testing.assert_allclose(feat(occ), feat(moved))
    X, y = feat(pool["occ"]), pool["y"]
    bounds = np.stack([X.min(0), X.max(0)])
    n = len(X) // 2
    mean, std, gps = posterior(X[:n], y[:n], X[n:], bounds, seed=0)
    assert all(g is not None for g in gps) and np.all(std > 0)
    mae = np.abs(mean - y[n:]).mean(0)
    baseline = np.abs(y[n:] - y[:n].mean(0)).mean(0)
    assert np.all(mae < baseline), (mae, baseline)  # better than predicting the mean
    # same class -> same prediction
    m1, _ = gps[0].predict(feat(occ))
    m2, _ = gps[0].predict(feat(moved))
    np.testing.assert_allclose(m1, m2, atol=1e-8)


def test_p_window_matches_direct_formula():
    from scipy.stats import norm

    rng = np.random.default_rng(1)
    mean, std = rng.normal(1, 0.5, (50, 2)), rng.uniform(0.05, 0.5, (50, 2))
    t = Target(window={"formation_energy_per_site": (0.8, 1.3), "homo_lumo_gap": (1.0, math.inf)})
    direct = (norm.cdf((1.3 - mean[:, 0]) / std[:, 0]) - norm.cdf((0.8 - mean[:, 0]) / std[:, 0])) * norm.sf((1.0 - mean[:, 1]) / std[:, 1])
    np.testing.assert_allclose(np.exp(log_p_window(mean, std, t)), direct, rtol=1e-6, atol=1e-12)
    allowed = np.ones(50, bool)
    allowed[np.argmax(direct)] = False
    pick = top_q(log_p_window(mean, std, t), 3, allowed)
    assert len(pick) == 3 and allowed[pick].all()
    assert pick.tolist() == [i for i in np.argsort(-direct) if allowed[i]][:3]


def test_kriging_believer_batch_is_distinct_and_spreads(host, pool):
    X = PairFeatures(host)(pool["occ"])
    y = pool["y"][:, 1]
    bounds = np.stack([X.min(0), X.max(0)])
    gp = TargetGP(bounds).fit(X[:30], y[:30])
    allowed = np.ones(len(X), bool)
    allowed[:30] = False
    mu0, _ = gp.predict(X)
    idx, a = kriging_believer_ei(gp, None, X, 5, allowed, float(y[:30].min()), maximise=False)
    assert len(set(idx.tolist())) == 5 and allowed[idx].all()
    # believing the posterior mean leaves the mean everywhere unchanged and only shrinks the variance
    # (this failed when the fantasies were input-transformed twice and landed elsewhere)
    mu1, sd1 = gp.predict(X)
    np.testing.assert_allclose(mu1, mu0, atol=1e-9)
    noise = float(gp.model.likelihood.noise.item()) * float(gp.model.outcome_transform.stdvs.item()) ** 2
    assert (sd1[idx] ** 2 <= noise + 1e-12).all()  # each pick's latent variance is now below the noise
    assert np.all(np.diff(a) <= 1e-9)  # so each pick's EI can only fall as pending points are conditioned in


def test_kriging_believer_batch_against_botorch_qlogei(host, pool):
    """The first pick is botorch's analytic LogEI argmax; the greedy batch's joint qLogEI is at least each
    member's and at least that of the top-q batch by marginal EI (the spread is worth something)."""
    from botorch.acquisition.analytic import LogExpectedImprovement
    from botorch.acquisition.logei import qLogExpectedImprovement
    from botorch.sampling import SobolQMCNormalSampler

    X = PairFeatures(host)(pool["occ"])
    y = pool["y"][:, 1]
    gp = TargetGP(np.stack([X.min(0), X.max(0)])).fit(X[:30], y[:30])
    model, best = gp.model, float(y[:30].min())
    Xt = torch.as_tensor(X, dtype=torch.float64)
    with torch.no_grad():
        ana = LogExpectedImprovement(model, best_f=best, maximize=False)(Xt[30:, None, :]).numpy()
    allowed = np.ones(len(X), bool)
    allowed[:30] = False
    idx, a = kriging_believer_ei(TargetGP(gp.bounds).fit(X[:30], y[:30]), None, X, 5, allowed, best, maximise=False)
    assert idx[0] == 30 + int(np.argmax(ana)) and a[0] == pytest.approx(float(ana.max()), abs=1e-6)
    q = qLogExpectedImprovement(model, best_f=-best, sampler=SobolQMCNormalSampler(torch.Size([4096]), seed=0),
                                posterior_transform=_negate())
    marginal_top = 30 + np.argsort(-ana)[:5]
    with torch.no_grad():
        joint = float(q(Xt[idx][None]))
        singles = [float(q(Xt[[i]][None])) for i in idx]
        joint_top = float(q(Xt[marginal_top][None]))
    assert joint >= max(singles) - 1e-9
    assert joint >= joint_top - 0.05


def _negate():
    from botorch.acquisition.objective import ScalarizedPosteriorTransform

    return ScalarizedPosteriorTransform(weights=torch.tensor([-1.0], dtype=torch.float64))


# ---------------------------------------------------------------------- oracles
def test_table_oracle_and_make_oracle(pool, host):
    o = make_oracle(f"table:{pool['labels']}", host)
    got = o.evaluate(pool["occ"][:4], pool["ids"][:4])
    np.testing.assert_allclose(got, pool["y"][:4])
    with pytest.raises(InvdesignError, match="no label"):
        o.evaluate(pool["occ"][:1], ["nope"])
    # by canonical key when the table has the column
    tab = pd.DataFrame({"_id": ["x"], "canonical_key": canonical_keys(pool["occ"][:1], host),
                        "formation_energy_per_site": [1.0], "homo_lumo_gap": [2.0]})
    np.testing.assert_allclose(TableOracle(tab, host).evaluate(pool["occ"][:1], ["other"]), [[1.0, 2.0]])
    for bad in ("table:", "table:/no/such.csv", "chgnet", "nonsense"):
        with pytest.raises(InvdesignError):
            make_oracle(bad, host)


def test_gap_window_needs_an_oracle_that_gives_a_gap(tmp_path, pool, host, capsys):
    """CHGNet gives no gap: a gap window with chgnet+delta, or with a table of CHGNet labels, is refused in one
    line that says which oracles give a gap, before any CHGNet call and before the database exists."""
    gap = ["--target", "homo_lumo_gap=1.0:1.2", "--budget", "2"]
    db = tmp_path / "c.sqlite"
    assert main(["campaign", "run", "--db", str(db), "--pool", str(pool["dir"]), "--oracle", "chgnet+delta", *gap]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "oracle chgnet+delta gives no homo_lumo_gap" in err
    assert "table:F.csv with DFT gaps" in err and "surrogate" in err and not db.exists()
    # what `invdesign label --oracle chgnet+delta` writes: energies and a formation energy, no gap
    chg = tmp_path / "chgnet_labels.csv"
    pd.DataFrame({"id": pool["ids"], "canonical_key": canonical_keys(pool["occ"], host), "energy": -1400.0,
                  "raw_energy": 10.0, "formation_energy_per_site": pool["y"][:, 0]}).to_csv(chg, index=False)
    assert main(["campaign", "run", "--db", str(db), "--pool", str(pool["dir"]), "--oracle", f"table:{chg}", *gap]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no column homo_lumo_gap" in err and "CHGNet/ASE oracle, which gives no gap" in err
    assert "surrogate" in err and not db.exists()
    # the same labels serve a formation-energy window; the Python API refuses an oracle object the same way
    assert TableOracle(chg, host, needed=["formation_energy_per_site"]).present == ["formation_energy_per_site"]
    with pytest.raises(InvdesignError, match="gives no homo_lumo_gap"):
        make_oracle("chgnet+delta", host, needed=["formation_energy_per_site", "homo_lumo_gap"])
    c = Campaign.create(tmp_path / "api.sqlite", Target(window={"homo_lumo_gap": (1.0, 1.2)}), [pool["dir"]], features="pairs")
    with pytest.raises(InvdesignError, match="gives no homo_lumo_gap"):
        c.run(make_oracle("chgnet+delta", host), budget=2)
    assert c.status()["evaluations"] == 0
    c.close()
    make_oracle("surrogate", host, needed=["homo_lumo_gap"])  # the model's own gap: allowed (a rehearsal)


def test_callable_and_ase_oracles_recover_chemical_potentials(pool, host):
    from ase.calculators.lj import LennardJones

    per_structure = CallableOracle(lambda st: {"homo_lumo_gap": float(len(st))}, host, per="structure")
    out = per_structure.evaluate(pool["occ"][:2], pool["ids"][:2])
    assert np.isnan(out[:, 0]).all() and (out[:, 1] <= host.n_sites).all()
    lj = AseOracle(lambda: LennardJones(sigma=2.5, epsilon=0.01, rc=6.0), host=host, steps=0)
    comp = pool["ds"].composition
    pick = [int(np.flatnonzero(comp[:, t] > 0)[k]) for t in range(comp.shape[1]) for k in range(2) if (comp[:, t] > 0).sum() > k]
    occ = pool["occ"][pick]
    mu_true = {"Mo": -3.0, "S": -1.5, "W": -4.0, "Se": -1.0}
    de = lj.raw_energies(occ)
    delta = species_delta(occ, host)
    n_def = (occ != host.host_code).sum(1)
    fe = (de + sum(delta[e] * mu_true[e] for e in delta)) / n_def
    lj.mu = fit_chemical_potentials(lj, occ, fe)
    np.testing.assert_allclose(lj.evaluate(occ, [str(i) for i in pick])[:, 0], fe, atol=1e-6)
    assert np.isnan(lj.evaluate(occ[:1], ["a"])[:, 1]).all()  # no gap from an energy calculator


def test_executors_agree(pool, host):
    from invdesign.campaign.campaign import _evaluate
    from invdesign.campaign.executors import make_executor

    o = TableOracle(pool["labels"], host)
    ref = o.evaluate(pool["occ"][:6], pool["ids"][:6])
    for spec, kw in (("inline", {}), ("thread:2", {}), ("process:1", {}), ("dask-local:1", {"processes": False})):
        with make_executor(spec, **kw) as ex:
            futs = [ex.submit(_evaluate, o, pool["occ"][i : i + 2], pool["ids"][i : i + 2]) for i in range(0, 6, 2)]
            np.testing.assert_allclose(np.concatenate([f.result() for f in futs]), ref)
    with pytest.raises(InvdesignError):
        with make_executor("gpu-farm"):
            pass
    from invdesign.campaign.executors import resolve

    local = CallableOracle(lambda occ, ids: np.zeros((len(ids), 2)), host)
    assert resolve("auto", o) == "inline" and resolve("auto", local) == "thread"
    assert resolve("auto", ChgnetOracle(mu={"Mo": -10.0})) == "process"  # picklable, expensive: a process pool
    with pytest.raises(InvdesignError, match="cannot be pickled"):
        resolve("process:2", local)


def test_workers_keep_one_live_oracle(tmp_path, pool, monkeypatch):
    """A process pool sets an expensive oracle up once per worker (CHGNet: model + pristine host), not once per call."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    from label_oracles import SetupCountingOracle

    target = Target(window={"formation_energy_per_site": (0.5, 1.5)})
    with Campaign.create(tmp_path / "c.db", target, [pool["dir"]], features="pairs", batch=3, budget=9, seed=0) as c:
        st = c.run(SetupCountingOracle(), executor="process:1")
        obs = c.observations()
    assert st["evaluations"] == 9 and st["steps"] == 3
    assert (obs["formation_energy_per_site"] == 1.0).all()  # 1, 2, ..., 9 when each call unpickles a fresh copy
    assert obs["homo_lumo_gap"].nunique() == 1  # all in the one worker


def test_features_from_another_campaign(tmp_path, pool, window):
    """Campaigns over one candidate set can share its features and prior; other candidates or settings are refused."""
    target, _ = window
    with Campaign.create(tmp_path / "a.db", target, [pool["dir"]], batch=4, seed=1) as a:
        first = a.suggest()["canonical_key"].tolist()
        arrays = {k: a.store.array(k) for k in ("features", "prior_mean", "prior_std")}
    with Campaign.create(tmp_path / "b.db", target, [pool["dir"]], batch=4, seed=1, features_from=tmp_path / "a.db") as b:
        for k, v in arrays.items():
            np.testing.assert_array_equal(b.store.array(k), v)
        assert b.suggest()["canonical_key"].tolist() == first
    few = sorted(pool["dir"].glob("*.cif"))[:10]
    with pytest.raises(InvdesignError, match="not this campaign's"):
        Campaign.create(tmp_path / "c.db", target, few, features_from=tmp_path / "a.db")
    with pytest.raises(InvdesignError, match="features setting"):
        Campaign.create(tmp_path / "d.db", target, [pool["dir"]], features="pairs", features_from=tmp_path / "a.db")
    with pytest.raises(InvdesignError, match="no campaign file"):
        Campaign.create(tmp_path / "e.db", target, [pool["dir"]], features_from=tmp_path / "missing.db")
    assert not any((tmp_path / f"{n}.db").exists() for n in "cde")


# ---------------------------------------------------------------------- the loop
def test_campaign_finds_hits_deterministically(tmp_path, pool, window, host):
    target, inside = window
    oracle = TableOracle(pool["labels"], host)
    runs = []
    for k in range(2):
        with Campaign.create(tmp_path / f"c{k}.db", target, [pool["dir"]], features="pairs", batch=4,
                             budget=len(pool["ids"]), until_hits=3, seed=5) as c:
            st = c.run(oracle, executor="inline")
            obs = c.observations()
            runs.append(sorted(zip(obs["step"], obs["canonical_key"])))  # within a batch, arrival order may vary
            assert st["hits"] >= 3 and st["done"]
            assert st["evaluations"] == len(runs[-1]) and st["evaluations"] % 4 == 0
            sug = c.store.suggestions()
            assert sug["canonical_key"].is_unique and (sug["status"] == "observed").all()
            runs.append(sug["canonical_key"].tolist())
    assert runs[0] == runs[2] and runs[1] == runs[3]
    rand = np.median([random_search_evaluations(inside, 3, np.random.default_rng(s)) for s in range(51)])
    assert len(runs[0]) < rand  # the GP on exact pair features beats the median random search here


def test_single_objective_campaign(tmp_path, pool, host):
    oracle = TableOracle(pool["labels"], host)
    thr = float(np.sort(pool["y"][:, 0])[4])  # 5 pool members at or below
    with Campaign.create(tmp_path / "m.db", Target(objective=("formation_energy_per_site", "min"), threshold=thr),
                         [pool["dir"]], features="pairs", batch=3, budget=18, seed=1) as c:
        st = c.run(oracle, executor="inline")
        assert st["evaluations"] == 18 and st["best"] is not None
        assert st["best"]["formation_energy_per_site"] <= np.median(pool["y"][:, 0])
        obs = c.observations()
        assert obs["hit"].sum() == st["hits"] == (obs["formation_energy_per_site"] <= thr).sum()


def test_observe_is_idempotent_keyed_and_atomic(tmp_path, pool, window, host):
    target, _ = window
    with Campaign.create(tmp_path / "o.db", target, [pool["dir"]], features="pairs", batch=3, seed=0) as c:
        df = c.suggest()
        assert len(df) == 3 and c.status()["pending"] == 3
        res = tmp_path / "res.csv"
        lab = pd.read_csv(pool["labels"]).set_index("_id")
        sheet = pd.DataFrame({"id": df["id"], **{t: lab.loc[df["id"], t].to_numpy() for t in TARGETS}})
        sheet.iloc[:2].to_csv(res, index=False)
        assert c.observe_csv(res) == (2, 0)
        assert c.observe_csv(res) == (0, 2)  # idempotent
        # by canonical key only, for the third; plus an off-pool configuration by key
        off = host.host_code.copy()
        off[np.flatnonzero(host.sublattice == host.sublattice[0])[:1]] = 0
        off_key = canonical_keys(off[None], host)[0]
        by_key = pd.DataFrame({"canonical_key": [df["canonical_key"].iat[2], off_key],
                               "formation_energy_per_site": [sheet.iloc[2, 1], 1.23], "homo_lumo_gap": [sheet.iloc[2, 2], None]})
        assert c.observe(by_key) == (2, 0)
        st = c.status()
        assert st["evaluations"] == 4 and st["pending"] == 0
        # conflicting values: error, nothing of the call written
        clash = pd.DataFrame({"id": [pool["ids"][0], df["id"].iat[0]], "formation_energy_per_site": [0.1, 99.0]})
        with pytest.raises(InvdesignError, match="different values"):
            c.observe(clash)
        assert c.status()["evaluations"] == 4
        with pytest.raises(InvdesignError, match="unknown id"):
            c.observe(pd.DataFrame({"id": ["nope"], "homo_lumo_gap": [1.0]}))
        with pytest.raises(InvdesignError, match="not a number"):
            c.observe(pd.DataFrame({"id": [pool["ids"][0]], "homo_lumo_gap": ["abc"]}))
        # the GP trains on the off-pool observation too (featurised on the fly)
        assert len(c.suggest()) == 3


# ---------------------------------------------------------------------- CLI and report
def test_cli_contract_run_status_report(tmp_path, pool, window, capsys):
    target, inside = window
    db = tmp_path / "cli.db"
    args = ["campaign", "run", "--db", str(db), "--pool", str(pool["dir"]), "--oracle", f"table:{pool['labels']}",
            *_wargs(target), "--batch", "5", "--until-hits", "5", "--budget", "200", "--features", "pairs"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["campaign", "status", "--db", str(db), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["hits"] >= 5 and st["evaluations"] <= len(pool["ids"]) and st["done"]
    assert len(st["evaluations_to_hits"]) == st["hits"]
    # run again: resumes, nothing to do
    assert main(args) == 0
    capsys.readouterr()
    assert main(["campaign", "status", "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["evaluations"] == st["evaluations"]
    # a different target, batch size or feature map on the same db is refused, never silently ignored
    assert main(["campaign", "run", "--db", str(db), "--target", "homo_lumo_gap=0:1"]) == 2
    capsys.readouterr()
    assert main(["campaign", "run", "--db", str(db), "--batch", "3"]) == 2
    assert "batch is 5, not 3" in capsys.readouterr().err
    assert main(["campaign", "run", "--db", str(db), "--features", "model"]) == 2
    assert "features is pairs, not model" in capsys.readouterr().err
    out = tmp_path / "rep"
    assert main(["campaign", "report", "--db", str(db), "--out", str(out)]) == 0
    obs = pd.read_csv(out / "observations.csv")
    assert len(obs) == st["evaluations"] and obs["hit"].sum() == st["hits"]
    assert {"formation_energy_per_site_mean", "acquisition", "canonical_key"} <= set(obs.columns)
    assert (out / "best_so_far.png").stat().st_size > 1000 and (out / "hits.png").stat().st_size > 1000
    assert (out / "observations.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((out / "structures").glob("*.cif"))) == st["hits"]
    # hits.png's random-search line: exact from the table oracle, which labels every candidate
    from invdesign.campaign.report import _pool_labels, _random_reference, random_best_so_far

    with Campaign.open(db) as c:
        K, N, how = _random_reference(c)
        labels = _pool_labels(c)  # best_so_far.png's random-search line comes from these
    assert N == len(pool["ids"]) and K == int(target.hits(pool["y"]).sum()) >= 8 and how.startswith("exact")
    assert labels.shape == (N, 2) and np.allclose(np.sort(target.score(labels)), np.sort(target.score(pool["y"])))
    rnd = random_best_so_far(target.score(labels), st["evaluations"])
    assert len(rnd) == st["evaluations"] and np.all(np.diff(rnd) >= -1e-12) and rnd[-1] <= 0.0


def test_random_best_so_far_is_the_exact_expectation():
    """The expected best of the first k of a random order = the mean over every k-subset (brute force), NaN as the
    lowest finite score; k never beyond the pool."""
    import itertools

    from invdesign.campaign.report import random_best_so_far

    s = np.array([0.3, -1.2, np.nan, 2.5, 0.3, -0.7, 1.1])
    filled = np.where(np.isfinite(s), s, np.nanmin(s))
    want = [np.mean([max(sub) for sub in itertools.combinations(filled, k)]) for k in range(1, len(s) + 1)]
    got = random_best_so_far(s, 20)
    assert len(got) == len(s) and np.allclose(got, want)
    assert got[0] == pytest.approx(np.mean(filled)) and got[-1] == pytest.approx(2.5)


def test_cli_step_by_step_and_errors(tmp_path, pool, window, capsys):
    target, _ = window
    db = tmp_path / "s.db"
    assert main(["campaign", "init", "--db", str(db), "--pool", str(pool["dir"]), *_wargs(target),
                 "--batch", "2", "--features", "pairs"]) == 0
    assert main(["campaign", "init", "--db", str(db), "--pool", str(pool["dir"]), *_wargs(target)]) == 2
    sheet = tmp_path / "batch.csv"
    capsys.readouterr()
    assert main(["campaign", "suggest", "--db", str(db), "--out", str(sheet), "--structures", str(tmp_path / "cifs")]) == 0
    df = pd.read_csv(sheet)
    assert len(df) == 2 and len(list((tmp_path / "cifs").glob("*.cif"))) == 2
    out = capsys.readouterr().out  # stdout not a terminal: the table's ids and keys whole (no "…"), one line each
    assert "…" not in out and all(f" {r.id} " in out and f" {r.canonical_key} " in out for r in df.itertuples())
    lab = pd.read_csv(pool["labels"]).set_index("_id")
    for t in TARGETS:
        df[t] = lab.loc[df["id"].astype(str), t].to_numpy()
    df.to_csv(sheet, index=False)
    assert main(["campaign", "observe", "--db", str(db), "--from", str(sheet)]) == 0
    assert main(["campaign", "observe", "--db", str(db), "--from", str(sheet)]) == 0
    capsys.readouterr()
    assert main(["campaign", "status", "--db", str(db), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["evaluations"] == 2 and st["pending"] == 0
    assert main(["campaign", "run", "--db", str(db), "--budget", "4"]) == 2  # no oracle stored
    capsys.readouterr()
    for bad in (["campaign", "status", "--db", str(tmp_path / "none.db")],
                ["campaign", "init", "--db", str(tmp_path / "x.db"), "--target", "gap=1:2"],
                ["campaign", "init", "--db", str(tmp_path / "x.db"), "--target", "homo_lumo_gap=1:2", "--oracle", "magic"],
                ["campaign", "observe", "--db", str(db), "--from", str(tmp_path / "missing.csv")]):
        assert main(bad) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("invdesign: error:") and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "x.db").exists()


# ---------------------------------------------------------------------- with a (tiny) trained model
TINY_MODEL = {"epochs": 1, "width": 16, "batch": 64, "orbit_batch": 64, "max_orbit_defects": 2, "ce_members": 2,
              "ce_width": 32, "ce_epochs": 5, "z_members": 2, "z_width": 16, "z_epochs": 5,
              "gap_members": 2, "gap_iter": 20}


@pytest.fixture(scope="module")
def tiny_model(dataset, host, pool, tmp_path_factory):
    """A tiny model trained on 200 structures that are not in the pool (real labels where the share is)."""
    from invdesign.data.dataset import Dataset
    from invdesign.model import train_model

    pool_ids = set(pool["ids"])
    idx = np.array([i for i in range(len(dataset)) if str(dataset.ids[i]) not in pool_ids][:: max(1, len(dataset) // 200)][:200])
    sub = dataset.subset(idx)
    if not all(t in sub.targets.columns for t in TARGETS):
        y = synthetic_labels(sub.occ, host)
        sub = Dataset(host, sub.ids, sub.occ, pd.DataFrame({t: y[:, j] for j, t in enumerate(TARGETS)}), name="synthetic")
    from invdesign.generate.flow import attach_flow

    path = tmp_path_factory.mktemp("tiny_model") / "tiny.pt"
    model = train_model(sub, seed=0, config=TINY_MODEL)
    attach_flow(model, sub, seed=0, config={"n_layers": 2, "hidden": 16, "max_epochs": 10, "patience": 3, "batch_size": 128})
    model.save(path)
    return path


def test_model_features_warm_start_and_surrogate(tmp_path, pool, window, host, tiny_model):
    from invdesign.campaign.oracles import SurrogateOracle
    from invdesign.model import load_model

    target, _ = window
    model = load_model(tiny_model)
    with Campaign.create(tmp_path / "w.db", target, [pool["dir"]], features="model", model=str(tiny_model),
                         batch=4, budget=12, seed=0) as c:
        cands, occ = c.candidates
        X = c.store.array("features")
        assert X.shape == (len(cands), model.dim)
        np.testing.assert_allclose(X, model.embed(occ))
        pm, ps = model.predict(occ)
        np.testing.assert_allclose(c.store.array("prior_mean"), pm)
        # first batch: the model's most probable in-window candidates (no observations yet)
        first = c.suggest()
        expect = top_q(log_p_window(pm, ps, target), 4, np.ones(len(cands), bool))
        assert first["canonical_key"].tolist() == cands["canonical_key"].iloc[expect].tolist()
        st = c.run(TableOracle(pool["labels"], host), executor="inline")
        assert st["evaluations"] == 12 and st["pending"] == 0
        # from step 2 on the GP (fitted to residuals) moves the posterior away from the prior
        sug = c.store.suggestions()
        s1, s3 = sug[sug["step"] == 1], sug[sug["step"] == 3]
        np.testing.assert_allclose(s1["formation_energy_per_site_mean"], pm[s1["idx"].to_numpy(), 0])
        assert not np.allclose(s3["formation_energy_per_site_mean"], pm[s3["idx"].to_numpy(), 0])
    sur = SurrogateOracle(str(tiny_model))
    np.testing.assert_allclose(sur.evaluate(pool["occ"][:3], pool["ids"][:3]), model.predict(pool["occ"][:3])[0])


def test_failed_evaluations_are_recorded_and_count_against_the_budget(tmp_path, pool, window, host):
    target, _ = window
    table = TableOracle(pool["labels"], host)
    bad = set(pool["ids"][::2])

    def flaky(occ, ids):
        if any(i in bad for i in ids):
            raise RuntimeError("SCF did not converge")
        return table.evaluate(occ, ids)

    with Campaign.create(tmp_path / "f.db", target, [pool["dir"]], features="pairs", batch=3, budget=12, seed=0) as c:
        st = c.run(flaky, executor="thread:2")
        sug = c.store.suggestions()
        assert st["evaluations"] + st["failed"] == 12 and st["failed"] > 0 and st["pending"] == 0
        failed = sug[sug["status"] == "failed"]
        assert set(failed["id"]) <= bad and failed["error"].str.contains("SCF did not converge").all()
        assert not set(c.observations()["id"]) & bad


def test_report_random_reference_from_the_model_prior(tmp_path, pool, window, tiny_model):
    """Without a table oracle the random-search line is the model prior's expected number in the window."""
    from invdesign.campaign.acquisition import log_p_window
    from invdesign.campaign.report import _random_reference

    target, _ = window
    with Campaign.create(tmp_path / "p.db", target, [pool["dir"]], model=str(tiny_model), batch=2) as c:
        K, N, how = _random_reference(c)
        pm, ps = c.store.array("prior_mean"), c.store.array("prior_std")
        assert N == len(pool["ids"]) and how.startswith("estimated")
        assert K == pytest.approx(float(np.exp(log_p_window(pm, ps, target)).sum())) and 0 < K < N
        c.run("surrogate:" + str(tiny_model), budget=2)
        c.report(tmp_path / "rep")
    assert (tmp_path / "rep" / "observations.png").read_bytes()[:4] == b"\x89PNG"
    with Campaign.create(tmp_path / "o.db", Target(objective=("formation_energy_per_site", "min")), [pool["dir"]],
                         features="pairs") as c:
        assert _random_reference(c) is None  # no threshold: no hits to compare


def test_flow_candidates_with_surrogate_oracle(tmp_path, pool, window, tiny_model, capsys):
    target, _ = window
    db = tmp_path / "flow.db"
    assert main(["campaign", "run", "--db", str(db), *_wargs(target), "--generate", "20", "--model", str(tiny_model),
                 "--oracle", f"surrogate:{tiny_model}", "--batch", "3", "--budget", "6"]) == 0
    with Campaign.open(db) as c:
        cands, occ = c.candidates
        assert 0 < len(cands) <= 20 and (cands["source"] == "flow").all() and c.config["space"]["kind"] == "flow"
        assert ((occ != c.host.host_code).sum(1) <= 3).all()
        st = c.status()
        assert st["evaluations"] == 6 and set(c.observations()["canonical_key"]) <= set(cands["canonical_key"])
    with pytest.raises(InvdesignError, match="not both"):
        Campaign.create(tmp_path / "x.db", target, [pool["dir"]], generate=5, model=str(tiny_model))


def test_fit_chgnet_cli_and_chgnet_oracle(tmp_path, pool, host):
    """CHGNet single points (``--steps 0``) keep this fast; the benchmark measures relaxed MAE vs DFT."""
    data = tmp_path / "data"
    data.mkdir()
    pick = list(range(6))
    for i in pick:
        write_structure(pool["occ"][i], host, data / f"{pool['ids'][i]}.cif")
    pd.DataFrame({"_id": [pool["ids"][i] for i in pick], **{t: pool["y"][pick, j] for j, t in enumerate(TARGETS)}}).to_csv(
        data / "targets.csv", index=False)
    mu = tmp_path / "mu.json"
    assert main(["campaign", "fit-chgnet", "--data", str(data), "--out", str(mu), "-n", "4", "--steps", "0"]) == 0
    saved = json.loads(mu.read_text())
    assert set(saved["mu"]) == {"Mo", "S", "W", "Se"} and saved["steps"] == 0
    oracle = make_oracle(f"chgnet:{mu}", host)
    out = oracle.evaluate(pool["occ"][:1], pool["ids"][:1])
    assert np.isfinite(out[0, 0]) and np.isnan(out[0, 1])  # formation energy only; CHGNet has no gap
