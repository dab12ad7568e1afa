"""Incremental evaluation of a host model (issue 25): the annealer's per-move update equals the full evaluation.

:class:`~invdesign.predict.host_incremental.HostChains` keeps per-defect environment rows and network terms and
updates only what a move touches; over random walks of hops, retypes, adds and removes (drawn by the annealer's
batched proposals) its environment rows equal :meth:`DefectEnvironment.transform`'s exactly and its served
means and stds equal :meth:`HostModel.predict`'s to float32 round-off of the networks, the moment ``total_mag``
included (what a total_mag window reads; NaN on hosts without a moment).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from invdesign.generate.anneal import _Moves, anneal
from invdesign.generate.decoder import Limits
from invdesign.generate.window import Window
from invdesign.lattice.hosts import packaged_host
from invdesign.predict.host_incremental import HostChains
from invdesign.predict.host_serving import packaged_host_model, predictor_for

TOL = 2e-5  # eV: float32 networks evaluated on batches of other shapes


def _walk(model, limits: Limits, chains: int, steps: int, seed: int = 0) -> float:
    """Random walk; returns the largest |incremental - full| over every proposal's mean and std (eV)."""
    host = model.host
    rng = np.random.default_rng(seed)
    mv = _Moves(host, limits)
    fc = HostChains(model, mv.random(rng, chains), limits.max_defects)
    mu, sd = fc.predict()
    fm, fs, _ = model.predict(fc.occ)
    worst = max(np.abs(mu - fm[:, :2]).max(), np.abs(sd - fs[:, :2]).max())
    spin = bool(model.meta.get("targets_known", [True, True, True])[2])
    kinds = set()
    for _ in range(steps):
        moves = mv.propose_batch(fc.site, fc.typ, fc.occ, rng)
        kinds |= {("hop" if o >= 0 and n >= 0 and o != n else "retype" if o >= 0 and n >= 0 else "remove" if o >= 0 else "add")
                  for o, n in zip(moves.old_site, moves.new_site) if o >= 0 or n >= 0}
        prop = fc.propose(moves)
        pm, ps = fc.predict(prop)
        fm, fs, _ = model.predict(prop["occ"])
        assert np.array_equal(np.isnan(pm), np.isnan(fm[:, :2]))
        worst = max(worst, np.nanmax(np.abs(pm - fm[:, :2])), np.nanmax(np.abs(ps - fs[:, :2])))
        # with the moment (what a total_mag window reads): the same two columns, and the moment's mean and std
        pm3, ps3 = fc.predict(prop, n_targets=3)
        assert np.array_equal(pm3[:, :2], pm, equal_nan=True) and np.array_equal(ps3[:, :2], ps, equal_nan=True)
        assert np.array_equal(np.isnan(pm3), np.isnan(fm)) and np.isnan(pm3[:, 2]).all() != spin
        if spin:
            worst = max(worst, np.abs(pm3[:, 2] - fm[:, 2]).max(), np.abs(ps3[:, 2] - fs[:, 2]).max())
        k = (prop["occ"] != host.host_code).sum(1)
        assert ((k >= limits.min_defects) & (k <= limits.max_defects)).all()
        fc.accept(prop, rng.random(chains) < 0.5)
    assert kinds == {"hop", "retype", "add", "remove"}
    # the rows kept move by move are the full transform's, exactly
    for env, F in ((model.env_e, fc.Fe), (model.env_g, fc.Fg)):
        full, owner = env.transform(fc.occ)
        for c in range(chains):
            mine = F[c][fc.typ[c] >= 0]
            assert np.array_equal(np.unique(mine, axis=0), np.unique(full[owner == c], axis=0))
    return float(worst)


def test_walk_mos2_host_model_equals_full_evaluation():
    model = packaged_host_model("MoS2")
    limits = Limits.make(model.host, max_defects=14, min_defects=4)
    assert _walk(model, limits, chains=8, steps=120) < TOL


def test_walk_other_host_equals_full_evaluation():
    model = packaged_host_model("BN")
    limits = Limits.make(model.host, max_defects=9, min_defects=3)
    assert _walk(model, limits, chains=6, steps=80, seed=1) < TOL


def test_walk_with_gap_trees_equals_full_evaluation():
    """A model whose gap blends boosted trees on the cluster counts: the counts are summed from the slot rows."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    from invdesign.predict.gap import _Forest

    model = copy.copy(packaged_host_model("MoS2"))
    rng = np.random.default_rng(3)
    occ = _Moves(model.host, Limits.make(model.host, max_defects=12, min_defects=4)).random(rng, 200)
    Z = model._tree_features(occ)
    y = rng.random(len(occ)) + Z[:, -1] * 0.05
    model.trees_g = [_Forest.from_sklearn(HistGradientBoostingRegressor(max_iter=15, random_state=s).fit(Z, y)) for s in range(3)]
    model.blend_gap = np.array([0.4, 0.3, 0.5, 0.6])
    assert _walk(model, Limits.make(model.host, max_defects=12, min_defects=4), chains=5, steps=40, seed=2) < TOL


def test_anneal_incremental_harvest_matches_the_model():
    """The annealer's fast path (8-12 defects on 8x8 MoS2: the host model serves) harvests states whose recorded
    predictions are the full model's; the full path remains (fast=False) and a model no host model fully serves
    has no fast path."""
    from invdesign.predictor import load_predictor

    model = load_predictor()
    limits = Limits.make(model.host, max_defects=12, min_defects=8)
    w = Window.from_dict({"formation_energy_per_site": (1.0, 1.3)})
    res = anneal(model, w, limits, 20, chains=16, max_steps=400, seed=0)
    assert res.stats["incremental"] and len(res.keys) == 20
    m, s = model.predict(res.occ)
    assert np.abs(m - res.mean).max() < TOL and np.abs(s - res.std).max() < TOL
    assert w.hits(m).all()
    # the window leaves the gap open: the trees walk for accepted moves only, and the chains are the same
    assert res.stats["lazy_trees"] and res.stats["full_evaluations"] < 0.8 * res.evaluations
    every = anneal(model, w, limits, 20, chains=16, max_steps=400, seed=0, lazy_trees=False)
    assert not every.stats["lazy_trees"] and every.stats["full_evaluations"] == every.evaluations
    assert every.keys == res.keys and every.steps == res.steps
    assert every.mean.tobytes() == res.mean.tobytes() and every.std.tobytes() == res.std.tobytes()
    wg = Window.from_dict({"formation_energy_per_site": (1.0, 1.2), "homo_lumo_gap": (0.9, 1.3)})
    gap = anneal(model, wg, limits, 30, chains=16, max_steps=300, seed=0)
    # a gap window: the trees walk only for proposals the most favourable gap could let pass; the same chains
    assert not gap.stats["lazy_trees"] and gap.stats["screened_trees"]
    assert gap.stats["full_evaluations"] < 0.9 * gap.evaluations
    whole = anneal(model, wg, limits, 30, chains=16, max_steps=300, seed=0, lazy_trees=False)
    assert not whole.stats["screened_trees"] and whole.stats["full_evaluations"] == whole.evaluations
    assert whole.keys == gap.keys and whole.steps == gap.steps and len(gap.keys) > 5
    assert whole.mean.tobytes() == gap.mean.tobytes() and whole.std.tobytes() == gap.std.tobytes()
    m, s = model.predict(gap.occ)
    assert np.abs(m - gap.mean).max() < TOL and np.abs(s - gap.std).max() < TOL
    slow = anneal(model, w, limits, 5, chains=8, max_steps=100, seed=0, fast=False)
    assert not slow.stats["incremental"] and not slow.stats["lazy_trees"]
    with pytest.raises(ValueError):
        anneal(model, w, Limits.make(model.host, max_defects=6, min_defects=2), 5, chains=4, max_steps=5, fast=True)


def test_predictor_for_other_hosts_uses_the_fast_path():
    pred = predictor_for(packaged_host("GaSe"))
    limits = Limits.make(pred.host, max_defects=8, min_defects=4)
    res = anneal(pred, Window.from_dict({"formation_energy_per_site": (-10.0, 10.0)}), limits, 5, chains=4, max_steps=50)
    assert res.stats["incremental"]
    m, _ = pred.predict(res.occ)
    assert np.abs(m - res.mean).max() < TOL


def test_gap_trees_on_distinct_rows_give_the_same_floats():
    """The exhaustive screen walks the gap trees once per distinct row (issue 25 item 3): bit for bit the
    predictions of every row walked on its own, means and stds included."""
    from invdesign.predict.gap import _sigmoid
    from invdesign.predictor import load_predictor

    model = load_predictor()
    head = model.heads["gap_gbt"]
    rng = np.random.default_rng(0)
    occ = _Moves(model.host, Limits.make(model.host, max_defects=3, min_defects=1)).random(rng, 300)
    occ = occ[rng.permutation(np.repeat(np.arange(300), 3))]  # every row three times, shuffled: 900 > NUMPY_ROWS
    X = head._design(model.cluster_features(occ))
    each = np.stack([f.predict(X) for f in head.forests])
    once = head._forests_predict(X)
    assert np.array_equal(each, once) and once.flags.c_contiguous
    mean, spread = head.raw(model.cluster_features(occ))
    assert np.array_equal(mean, _sigmoid(each.mean(0), head.eg_max))
    assert np.array_equal(spread, _sigmoid(each, head.eg_max).std(0, ddof=1))


def test_walk_with_charge_balance_equals_full_evaluation(tmp_path):
    """A model with the charge-balance term (PairCE ``charge``) and the net charge in the energy networks' rows
    (``context``): a retype, add or remove changes the net charge and so every row of its chain; the incremental
    walk still equals the full evaluation, and the charges survive save and load."""
    from conftest import shared_dir

    from invdesign.data.dataset import load_2dmd
    from invdesign.predict.defect_env import HostModel, targets_of

    ds = load_2dmd(shared_dir() / "data" / "2dmd-hbn-high")
    y = targets_of(ds)
    # the expansion on pairs within 4 A inside 8 A energy rows (radius_ce < radius_energy, as choose_radius picks on h-BN)
    model = HostModel(ds.host, members_energy=2, members_levels=2, epochs=40, charge=True, context=True, radius_ce=4.0,
                      radius_auto=False).fit(ds.occ[:160], y[:160])
    assert model.ce.charges.any() and model.env_e.charges is model.ce.charges
    assert model.ce.radius == 4.0 < model.env_e.radius == 8.0
    back = HostModel.load(model.save(tmp_path / "m.npz", {"name": "BN", "supercell": [8, 8]}))
    np.testing.assert_array_equal(back.ce.charges, model.ce.charges)
    assert back.ce.radius == 4.0 and back.env_e.radius == 8.0
    np.testing.assert_allclose(back.predict(ds.occ[300:])[0], model.predict(ds.occ[300:])[0], atol=1e-12, equal_nan=True)
    assert _walk(model, Limits.make(model.host, max_defects=9, min_defects=3), chains=6, steps=80, seed=4) < TOL
    # and with the gap's trees blended in (their counts are summed from rows that end with the net charge)
    model.blend_gap = np.array([0.5, 0.5, 0.5, 0.5])
    assert model.trees_g
    assert _walk(model, Limits.make(model.host, max_defects=9, min_defects=3), chains=4, steps=40, seed=5) < TOL

