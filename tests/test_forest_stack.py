"""ForestStack (issue 25: an annealing step walks 8 gap forests of 400 trees): the same floats as each forest walked
on its own, tree by tree in plain Python (the reference below), on the packaged models' real inputs, both by the
compiled walk (numba, :mod:`invdesign.predict.tree_walk`, the default) and by the numpy walk. ``_Forest.predict_numpy``
is a one-forest stack, so it is checked against the same reference."""

from __future__ import annotations

import numpy as np
import pytest

from invdesign.predict.gap import ForestStack


@pytest.fixture(scope="module")
def served():
    from invdesign.predictor import load_predictor

    return load_predictor()


def _walk(f, X: np.ndarray) -> np.ndarray:
    """``(N,)`` one forest's sum, tree after tree onto the baseline, each tree walked node by node (a missing
    value fails ``x <= threshold`` and goes right)."""
    out = np.empty(len(X))
    for i, x in enumerate(np.asarray(X, dtype=np.float64)):
        acc = f.baseline
        for node in f.roots:
            while not f.leaf[node]:
                node = f.left[node] if x[f.feature[node]] <= f.threshold[node] else f.right[node]
            acc += f.value[node]
        out[i] = acc
    return out


def _same(forests, X) -> None:
    want = np.stack([_walk(f, X) for f in forests])
    got = ForestStack(forests).predict(X, compiled=True)
    assert got.dtype == np.float64 and got.shape == want.shape
    assert got.tobytes() == want.tobytes()
    assert ForestStack(forests).predict(X, compiled=False).tobytes() == want.tobytes()
    assert ForestStack(forests).predict(X).tobytes() == want.tobytes()  # whichever walk use_compiled picks
    assert np.stack([f.predict_numpy(X) for f in forests]).tobytes() == want.tobytes()


def test_host_model_gap_trees(served):
    from invdesign.lattice.enumerate import sample_configurations

    hm = served.high_density_model()
    if not getattr(hm, "trees_g", None):
        pytest.skip("the packaged DFT host model has no gap trees")
    occ = np.concatenate([sample_configurations(served.host, {"V_S": 4, "Se_S": 3, "W_Mo": 2, "V_Mo": 1}, 300, 1),
                          sample_configurations(served.host, {"V_Mo": 2, "V_S": 9}, 100, 2)])
    Z = hm._tree_features(occ)
    for n in (1, 7, 40):
        _same(hm.trees_g, Z[:n])
    big = ForestStack(hm.trees_g).predict(Z)  # every row at once: the same floats as the rows in small batches
    from invdesign.predict.tree_walk import BLOCK

    assert len(Z) > BLOCK  # the compiled walk takes these rows in blocks; the numpy walk all at once
    assert ForestStack(hm.trees_g).predict(Z, compiled=True).tobytes() == ForestStack(hm.trees_g).predict(Z, compiled=False).tobytes()
    assert big.tobytes() == np.concatenate([ForestStack(hm.trees_g).predict(Z[i : i + 37]) for i in range(0, len(Z), 37)], axis=1).tobytes()
    Zn = Z[:5].copy()
    Zn[1, ::7] = np.nan  # a missing value goes right, as in the walk of one forest
    _same(hm.trees_g, Zn)
    got = ForestStack(hm.trees_g).predict(Z[:50], chunk=3 * sum(len(t.roots) for t in hm.trees_g))  # chunked rows
    assert got.tobytes() == big[:, :50].tobytes()


def test_embedding_model_gap_head(served, host):
    from invdesign.generate.decoder import Limits, orbit_index
    from invdesign.model import load_model
    from invdesign.predict.features import cluster_counts

    model = load_model()
    head = model.heads["gap_gbt"]
    idx = orbit_index(model, Limits.make(host))
    X = head._design(cluster_counts(idx.occ[::29], host))
    _same(head.forests, X[:40])
    assert ForestStack(head.forests).predict(X).tobytes() == np.stack([f.predict(X) for f in head.forests]).tobytes()
    assert ForestStack([]).predict(X).shape == (0, len(X))


def test_compiled_walk_is_the_default_and_switches_off(served, monkeypatch):
    """numba is a dependency: the compiled walk runs here; without it (or ``INVDESIGN_NUMBA=0``) the callers walk
    in numpy, the same floats."""
    from invdesign.lattice.enumerate import sample_configurations
    from invdesign.predict import tree_walk

    assert tree_walk.available() and tree_walk.loaded()
    hm = served.high_density_model()
    occ = sample_configurations(served.host, {"V_S": 6, "V_Mo": 2, "W_Mo": 2}, 60, 3)
    mean, std, _ = hm.predict(occ)
    Z = hm._tree_features(occ)
    lay = ForestStack(hm.trees_g)
    walked = tree_walk.walk(Z, tree_walk.Layout.make(lay.feature, lay.threshold, lay.left, lay.right, lay.leaf, lay.value,
                                                     lay.roots, np.repeat(np.arange(len(lay.counts)), lay.counts)),
                            np.asarray(lay.baselines))
    assert walked.tobytes() == lay.predict(Z, compiled=False).tobytes()
    monkeypatch.setattr(tree_walk, "_KERNEL", False)  # as where numba is missing
    assert not tree_walk.available() and tree_walk.walk(Z, None, np.zeros(1)) is None
    hm.__dict__.pop("_stack", None)
    m2, s2, _ = hm.predict(occ)
    assert m2.tobytes() == mean.tobytes() and s2.tobytes() == std.tobytes()
    monkeypatch.setattr(tree_walk, "_KERNEL", None)
    monkeypatch.setenv("INVDESIGN_NUMBA", "0")
    assert not tree_walk.available()


def test_layout_refuses_a_broken_tree():
    from invdesign.predict.tree_walk import Layout

    # node 0 splits into 1 and 2; node 3 hangs unreachable
    with pytest.raises(ValueError, match="not binary trees"):
        Layout.make(np.zeros(4, int), np.zeros(4), np.array([1, 0, 0, 0]), np.array([2, 0, 0, 0]),
                    np.array([False, True, True, True]), np.zeros(4), np.array([0]), np.array([0]))


def test_a_few_rows_in_a_fresh_process_stay_in_numpy():
    """Loading the compiled walk costs a process about half a second: a few rows walked once stay in numpy (numba is
    not imported), many rows take the compiled walk; the floats are the same either way."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from invdesign.predict.gap import use_compiled\n"
            "print(use_compiled(10), 'numba' in sys.modules, use_compiled(5000), 'numba' in sys.modules, use_compiled(1))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True", "True", "True"]
