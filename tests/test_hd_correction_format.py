"""The high-density correction file (format /2): no M x M matrix is stored; the std's Cholesky factor is
computed from what is, and a loaded file predicts bit for bit as the fitted object; format /1 files (which
stored the inverse kernel matrix) still load. The Cholesky std equals the explicit-inverse formula."""

from __future__ import annotations

import json

import numpy as np
from conftest import random_configurations

from invdesign.predict.features import cluster_counts
from invdesign.predict.hd_correction import FORMATS, HDCorrection, fit_hd_correction


def test_saved_correction_predicts_bit_for_bit_without_storing_kinv(host, tmp_path):
    rng = np.random.default_rng(0)
    X = cluster_counts(random_configurations(host, rng, 60, 4, 20), host).astype(float)
    n = X[:, : len(host.defect_types)].sum(1)
    y = 0.02 * np.sin(n) + 0.01 * rng.standard_normal(len(n))  # a residual with structure and noise
    c = fit_hd_correction(X, y, host, "fp-test")
    Xq = cluster_counts(random_configurations(host, np.random.default_rng(1), 30, 1, 25), host).astype(float)
    m0, s0 = c.predict(Xq)
    path = tmp_path / "corr.npz"
    c.save(path)
    with np.load(path, allow_pickle=False) as z:
        assert "Kinv" not in z.files and json.loads(str(z["meta"]))["format"] == FORMATS[-1]
    back = HDCorrection.load(host, path)
    m1, s1 = back.predict(Xq)
    assert (m1 == m0).all() and (s1 == s0).all()
    assert (s0[Xq[:, : len(host.defect_types)].sum(1) >= 4] > 0).all()
    # a format /1 file (Kinv stored) still reads and serves the same numbers
    K = c.train_kernel()
    a = {k: getattr(c, k) for k in HDCorrection.KEYS} | {"Kinv": np.linalg.inv(K)}
    meta = json.loads(str(c.arrays("")["meta"]))
    meta["format"] = FORMATS[0]
    old = tmp_path / "old.npz"
    np.savez(old, meta=np.array(json.dumps(meta)), **a)
    m2, s2 = HDCorrection.load(host, old).predict(Xq)
    assert (m2 == m0).all() and (s2 == s0).all()
    # the std: k** - k^T K^-1 k, here through the Cholesky factor
    on = Xq[:, : len(host.defect_types)].sum(1) >= 4
    from invdesign.predict.hd_correction import hd_features

    Zb = (hd_features(Xq[on], host) - c.mu) / c.sd
    Kb = c._kernel(Zb, c.Z)
    kss = c.c1 + c.c2 * (c.s0**2 + (Zb**2).sum(1)) + c.noise
    ref = np.sqrt(np.maximum(kss - ((Kb @ np.linalg.inv(K)) * Kb).sum(1), 0)) * c.y_std
    np.testing.assert_allclose(s0[on], ref, rtol=1e-6)
