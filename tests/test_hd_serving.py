"""The earlier serving beyond 3 defects, still available with ``INVDESIGN_HD_MODEL=0``: the high-density
correction toward corrected CHGNet (invdesign.predict.hd_correction) and the prior of unseen pair classes
(invdesign.predict.pair_prior). Served by default above 3 defects: the DFT host model (tests/test_hosts.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import random_configurations

from invdesign.predict.features import cluster_counts
from invdesign.predict.hd_correction import REFERENCE, HDCorrection, fe_head_fingerprint
from invdesign.predict.pair_prior import PairPrior, pair_classes
from invdesign.predict.serving import ServingModel, prediction_table, serving_cache_path
from invdesign.predictor import load_predictor


@pytest.fixture(autouse=True)
def _earlier_serving(monkeypatch):
    monkeypatch.setenv("INVDESIGN_HD_MODEL", "0")


@pytest.fixture(scope="module")
def pred():
    return load_predictor()


def _head_only(pred, occ):
    X = cluster_counts(occ, pred.host)
    m, s = pred.heads["ridge_ce"].predict(X)
    k = np.maximum((occ != pred.host.host_code).sum(1), 1).astype(float)
    return m[:, 0] / k, s[:, 0] / k


def test_the_packaged_correction_serves_the_packaged_head(pred):
    prior, corr, status = pred.fe_terms()
    assert status == "applied" and corr is not None and prior is not None
    assert corr.min_defects == 4
    assert corr.fingerprint == fe_head_fingerprint(pred.heads["ridge_ce"], pred.train_stats().seen_clusters)


def test_low_density_predictions_are_unchanged_bit_for_bit(pred, host):
    occ = random_configurations(host, np.random.default_rng(3), 400, 1, 3)
    seen = pred.unseen_clusters(occ) == 0
    assert seen.sum() > 100 and (~seen).sum() > 10  # both kinds are drawn
    m, s = pred.predict(occ)
    hm, hs = _head_only(pred, occ)
    assert (m[seen, 0] == hm[seen]).all() and (s[seen, 0] == hs[seen]).all()  # identical, not just close
    mt, st = pred.predict_target(occ, "formation_energy_per_site")
    assert (mt == m[:, 0]).all() and (st == s[:, 0]).all()
    # an unseen pair class at 1-3 defects: the prior's std only, no correction
    assert (s[~seen, 0] > hs[~seen]).all()
    assert all(r == "DFT-trained model (2DMD, PBE)" for r in pred.fe_reference(occ))


def test_the_correction_applies_above_three_defects_only(pred, host):
    corr = pred.fe_terms()[1]
    rng = np.random.default_rng(5)
    low, high = random_configurations(host, rng, 50, 1, 3), random_configurations(host, rng, 50, 4, 30)
    X = cluster_counts(np.concatenate([low, high]), host)
    cm, cs = corr.predict(X)
    assert (cm[:50] == 0).all() and (cs[:50] == 0).all()
    assert (cs[50:] > 0).all() and (np.abs(cm[50:]) > 0).all()
    m, s = pred.predict(high)
    hm, hs = _head_only(pred, high)
    pm, _ = pred.fe_terms()[0].contribution(cluster_counts(high, host))
    k = (high != host.host_code).sum(1)
    np.testing.assert_allclose(m[:, 0], hm + pm / k + cm[50:], rtol=0, atol=1e-12)
    assert np.abs(m[:, 0] - hm).max() > 0.05  # the correction matters here (eV/site)
    # the correction's std stands for the pair prior's where it applies (fitted on those residuals)
    np.testing.assert_allclose(s[:, 0], np.sqrt(hs**2 + cs[50:] ** 2), rtol=1e-12)
    assert (s[:, 0] > hs).all()
    df = prediction_table(pred, [str(i) for i in range(len(high))], high)
    assert (df["formation_energy_reference"] == REFERENCE).all()
    assert all("corrected CHGNet" in r for r in df["extrapolation_reason"])


def test_unseen_pair_classes_get_a_nonzero_prior_with_a_larger_std(pred, host):
    head = pred.heads["ridge_ce"]
    w = head.W[:, 0] / head.sd
    seen = pred.train_stats().seen_clusters.copy()
    group, per_pair, gd, gs = pair_classes(host)
    T = len(host.defect_types)
    # hold out the nearest V_Mo-V_S class (a strong, seen interaction): the prior must stand in for it
    vmo, vs = 1, 3
    cls = [g for g in range(len(gd)) if gs[g] == vmo * T + vs]
    g0 = min(cls, key=lambda g: gd[g])
    cols = np.flatnonzero(group == g0)
    assert seen[cols].all()
    seen[cols] = False
    prior = PairPrior.fit(w, seen, host)
    assert (prior.wcol[cols] != 0).all() and (prior.scol[cols] > 0).all()
    assert np.sign(prior.wcol[cols].sum()) == np.sign(w[cols].sum())  # attractive, as the fitted term
    assert (prior.wcol[seen] == 0).all() and (prior.scol[seen] == 0).all()
    # its std decays with distance: the nearest unseen class is the most uncertain of its species pair
    far = max(cls, key=lambda g: gd[g])
    far_cols = np.flatnonzero(group == far)
    seen2 = seen.copy()
    seen2[far_cols] = False
    p2 = PairPrior.fit(w, seen2, host)
    assert p2.scol[cols].max() > p2.scol[far_cols].max() > 0
    # a configuration holding such a pair: the prior contributes mean and std; one without it: nothing
    npo = int(host.pair_orbits.max()) + 1
    ta, tb = divmod((cols[0] - T) // npo, T)
    i, j = np.argwhere(host.pair_orbits == (cols[0] - T) % npo)[0]
    occ = host.host_code.copy()
    occ[i], occ[j] = host.defect_types[ta][1], host.defect_types[tb][1]
    m, s = prior.contribution(cluster_counts(occ[None], host))
    assert m[0] != 0 and s[0] > 0
    m0, s0 = prior.contribution(cluster_counts(host.host_code[None].copy(), host))
    assert m0[0] == 0 and s0[0] == 0


def test_packaged_unseen_pairs_are_served_with_the_prior_std(pred, host):
    # two W on neighbouring Mo sites: no training configuration has two W (the class is unseen)
    w_code = next(c for s, c in host.defect_types if c != 0)
    mo = np.flatnonzero(host.sublattice == host.defect_types[0][0])
    j = mo[np.argsort(host.min_image_distance[mo[0], mo])[1]]
    occ = host.host_code.copy()
    occ[mo[0]], occ[j] = w_code, w_code
    assert pred.unseen_clusters(occ)[0] > 0
    m, s = pred.predict(occ[None])
    hm, hs = _head_only(pred, occ[None])
    assert s[0, 0] > 1.5 * hs[0]
    assert "pair prior" in pred.extrapolation(occ[None])[0]
    # the gap head (trees) has no additive pair term to fill: such a configuration's composition is unseen
    # too (no training configuration has two Mo-site defects), so its gap is served as unvalidated
    assert not pred.gap_validated(occ[None])[0]


def test_another_head_gets_no_correction_and_says_so(pred, host):
    heads = {k: copy.deepcopy(v) for k, v in pred.heads.items()}
    heads["ridge_ce"].W = heads["ridge_ce"].W.copy()
    heads["ridge_ce"].W[0, 0] += 1e-6
    other = ServingModel(host, heads, pred.meta, pred.train_stats())
    prior, corr, status = other.fe_terms()
    assert corr is None and prior is not None and "another" in status
    occ = random_configurations(host, np.random.default_rng(9), 5, 8, 12)
    assert all("no correction" in r for r in other.fe_reference(occ))
    assert all("corrected CHGNet" not in r for r in other.extrapolation(occ))


def test_cache_key_and_predictions_follow_the_resource(pred, host, tmp_path, monkeypatch):
    import invdesign.predict.hd_correction as hdc
    import invdesign.predict.serving as serving
    from invdesign.predict.serving import default_model_path

    src = hdc.resource_path()
    with np.load(src, allow_pickle=False) as z:
        corr = HDCorrection.from_arrays(z, host, prefix="")
    corr.y_mean += 0.1  # a shifted correction: +0.1 eV/site wherever it applies
    alt = tmp_path / "hd_correction.npz"
    corr.save(alt)
    before = serving_cache_path(default_model_path())
    monkeypatch.setattr(hdc, "resource_path", lambda: alt)
    monkeypatch.setattr(serving, "hd_resource_path", lambda: alt)
    after = serving_cache_path(default_model_path())
    assert after != before
    monkeypatch.setenv("INVDESIGN_CACHE_DIR", str(tmp_path / "cache"))
    shifted = load_predictor()
    occ = random_configurations(host, np.random.default_rng(11), 20, 4, 20)
    np.testing.assert_allclose(shifted.predict(occ)[0][:, 0] - pred.predict(occ)[0][:, 0], 0.1, atol=1e-9)
    low = random_configurations(host, np.random.default_rng(12), 20, 1, 3)
    assert (shifted.predict(low)[0] == pred.predict(low)[0]).all()
    assert serving_cache_path(default_model_path()).is_file()  # written under the new key


def test_too_few_seen_pairs_give_no_prior_and_still_predict(pred, host):
    st = copy.deepcopy(pred.train_stats())
    T = len(host.defect_types)
    st.seen_clusters = st.seen_clusters.copy()
    st.seen_clusters[T:] = False  # as if trained on single defects only
    with pytest.raises(ValueError, match="too few"):
        PairPrior.fit(pred.heads["ridge_ce"].W[:, 0] / pred.heads["ridge_ce"].sd, st.seen_clusters, host)
    other = ServingModel(host, pred.heads, pred.meta, st)
    prior, corr, status = other.fe_terms()
    assert prior is None and corr is None and "another" in status  # the fingerprint covers the seen columns
    occ = random_configurations(host, np.random.default_rng(13), 10, 1, 3)
    m, s = other.predict(occ)
    hm, hs = _head_only(pred, occ)
    assert (m[:, 0] == hm).all() and (s[:, 0] == hs).all()
