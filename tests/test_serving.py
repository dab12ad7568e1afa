"""The torch-free serving path of ``predict`` (invdesign.predict.serving, invdesign.predictor) gives the full model's answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from invdesign.cli import main
from invdesign.io import write_structure
from invdesign.model import load_model
from invdesign.predict.gap import NUMPY_ROWS
from invdesign.predict.serving import (
    ServingModel,
    default_model_path,
    prediction_table,
    serving_cache_path,
    write_cache,
)
from invdesign.predictor import load_predictor


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def dense(host):
    """300 random configurations with 4-30 defects of every type (the high-density regime)."""
    rng = np.random.default_rng(7)
    occ = np.repeat(host.host_code[None, :], 300, axis=0)
    for row in occ:
        for site in rng.choice(host.n_sites, int(rng.integers(4, 31)), replace=False):
            codes = [c for s, c in host.defect_types if s == host.sublattice[site]]
            row[site] = codes[rng.integers(len(codes))]
    return occ


def _same(a: ServingModel, b, occ: np.ndarray) -> None:
    from invdesign.predict.features import cluster_counts
    from invdesign.predict.gap import unvalidated_std

    ma, sa = a.predict(occ)
    mb, sb = b.predict(occ)
    np.testing.assert_allclose(ma, mb, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sa, sb, rtol=0, atol=1e-12)
    # and what the serving heads say, computed here from the full model's heads
    X = cluster_counts(occ, b.host)
    k = np.maximum((occ != b.host.host_code).sum(1), 1)
    fm, fs = b.heads["ridge_ce"].predict(X)
    prior, corr, _ = b.fe_terms()  # the pair prior (unseen pair classes) and the high-density correction
    pm, ps = prior.contribution(X)
    # with the DFT host model on (the default) no correction: rows of 4+ defects are the host model's
    cm, cs = corr.predict(X) if corr is not None else (np.zeros(len(X)), np.zeros(len(X)))
    ps = np.where(cs > 0, 0.0, ps)  # where the correction applies its std stands for the prior's
    fm[:, 0], fs[:, 0] = (fm[:, 0] + pm) / k + cm, np.sqrt(fs[:, 0] ** 2 + ps**2) / k
    fs[:, 0] = np.sqrt(fs[:, 0] ** 2 + cs**2)
    k = 1
    gm, gs = b.heads["gap_gbt"].predict(X)
    gs = np.where(b.gap_validated(occ), gs, np.maximum(gs, unvalidated_std(b.heads["gap_gbt"].eg_max)))
    hd = b._hd_rows(occ)
    np.testing.assert_allclose(ma[~hd], np.stack([fm[:, 0] / k, gm], 1)[~hd], rtol=0, atol=1e-12)
    np.testing.assert_allclose(sa[~hd], np.stack([fs[:, 0] / k, gs], 1)[~hd], rtol=0, atol=1e-12)
    if hd.any():
        hm, hs, _ = b.high_density_model().predict(occ[hd])
        np.testing.assert_allclose(ma[hd], hm[:, :2], rtol=0, atol=1e-12)
        np.testing.assert_allclose(sa[hd], hs[:, :2], rtol=0, atol=1e-12)
    assert a.extrapolation(occ) == b.extrapolation(occ)
    assert (a.gap_validated(occ) == b.gap_validated(occ)).all()


def test_cached_serving_model_equals_the_full_model(model, dataset, dense, tmp_path, monkeypatch):
    monkeypatch.setenv("INVDESIGN_CACHE_DIR", str(tmp_path))
    sm = load_predictor()  # a miss: derived from the full model and written to the cache
    assert isinstance(sm, ServingModel)
    assert serving_cache_path(default_model_path()).is_file()
    cached = load_predictor()  # a hit: read back from the cache
    assert isinstance(cached, ServingModel) and cached is not sm
    assert set(cached.heads) == {"ridge_ce", "gap_gbt"} and cached.meta["serving"] == model.meta["serving"]
    real = dataset.occ[:: max(1, len(dataset) // 700)][:700]  # > NUMPY_ROWS: compiled trees
    assert len(real) > NUMPY_ROWS
    for occ in (real, real[:50], dense, dense[:20], dense[:1]):
        _same(cached, model, occ)
    assert any(cached.extrapolation(dense))  # the dense rows do exercise the flags
    assert not cached.gap_validated(dense).all()


def test_numpy_and_compiled_trees_agree_bit_for_bit(model, dataset, dense):
    from invdesign.predict.features import cluster_counts

    head = model.heads["gap_gbt"]
    X = head._design(cluster_counts(np.concatenate([dataset.occ[:400], dense]), model.host))  # the matrix the trees read
    assert len(X) > NUMPY_ROWS
    for f in head.forests:
        assert np.array_equal(f.predict(X), f.predict_numpy(X))


def test_serving_needs_the_full_model_where_an_ensemble_serves(model):
    import copy

    m = copy.copy(model)
    m.meta = {**model.meta, "serving": {**model.meta["serving"], "formation_energy_per_site": "ensemble_ce"}}
    assert ServingModel.from_model(m) is None
    assert ServingModel.from_model(model) is not None


def test_switch_off_and_unreadable_cache(model, tmp_path, monkeypatch):
    monkeypatch.setenv("INVDESIGN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("INVDESIGN_FAST_PREDICT", "0")
    assert load_predictor() is model  # the full model (per-process cache of load_model)
    assert not list(tmp_path.iterdir())
    monkeypatch.delenv("INVDESIGN_FAST_PREDICT")
    path = serving_cache_path(default_model_path())
    path.write_bytes(b"not an npz")
    assert isinstance(load_predictor(), ServingModel)  # rebuilt and rewritten
    with np.load(path, allow_pickle=False) as z:
        assert json.loads(str(z["meta"]))["serving"] == model.meta["serving"]


def test_cli_predict_same_csv_with_and_without_the_fast_path(model, dataset, dense, tmp_path, monkeypatch):
    monkeypatch.setenv("INVDESIGN_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "s"
    src.mkdir()
    for i, o in enumerate([*dataset.occ[:6], *dense[:4]]):
        write_structure(o, model.host, src / f"c{i}.cif")
    for fast in ("1", "0", "1"):  # miss, full model, hit
        monkeypatch.setenv("INVDESIGN_FAST_PREDICT", fast)
        assert main(["predict", str(src), "--out", str(tmp_path / f"p{fast}.csv"), "--overwrite"]) == 0
    assert (tmp_path / "p1.csv").read_bytes() == (tmp_path / "p0.csv").read_bytes()
    df = prediction_table(load_predictor(), ["a"], dense[:1])
    assert bool(df["extrapolation"].iat[0])


def test_predict_from_the_cache_imports_neither_torch_nor_sklearn(model, tmp_path, monkeypatch):
    monkeypatch.setenv("INVDESIGN_CACHE_DIR", str(tmp_path))
    write_cache(serving_cache_path(default_model_path()), ServingModel.from_model(model))
    code = (
        "import sys, numpy as np\n"
        "from invdesign.predict.serving import ServingModel\n"
        "from invdesign.predictor import load_predictor\n"
        "sm = load_predictor()\n"
        "assert isinstance(sm, ServingModel)\n"
        "sm.predict(np.repeat(sm.host.host_code[None], 3, axis=0))\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'scipy') if m in sys.modules))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_mean_only_formation_energy_equals_the_served_mean(model, dense, host):
    """The mean-only path (Monte Carlo arrangement energies: folded ridge weights, no leverage, the
    high-density correction's mean without its variance) is the served mean up to round-off, at any density."""
    occ = np.concatenate([dense, host.host_code[None]])
    for target in model.targets:
        mean, std = model.predict_target(occ, target)
        fast, none = model.predict_target(occ, target, with_std=False)
        assert none is None
        np.testing.assert_allclose(fast, mean, rtol=0, atol=1e-12)
