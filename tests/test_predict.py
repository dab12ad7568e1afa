"""Property heads, invariant features, the seed's baselines, and the benchmark table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from invdesign.data.dataset import TARGETS, split_indices
from invdesign.errors import InvdesignError
from invdesign.lattice.canonical import apply_op
from invdesign.lattice.enumerate import sample_configurations
from invdesign.predict.baselines import BagOfBonds, KernelRidge, coulomb_matrices
from invdesign.predict.features import cluster_counts, n_cluster_features, poly2
from invdesign.predict.heads import EnsembleHead, RidgeHead

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def packaged():
    from invdesign.model import load_model

    return load_model()


def _configs(host, n=40, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([sample_configurations(host, c, n, rng) for c in ({"V_S": 1, "W_Mo": 1}, {"Se_S": 2, "V_Mo": 1}, {"V_S": 3})])


def test_cluster_counts_are_invariant_and_count_right(host):
    occ = _configs(host, 10)
    X = cluster_counts(occ, host)
    assert X.shape == (len(occ), n_cluster_features(host)) == (len(occ), 4 + 16 * 75)
    T = len(host.defect_types)
    k = (occ != host.host_code).sum(1)
    assert np.array_equal(X[:, :T].sum(1), k)
    assert np.array_equal(X[:, T:].sum(1), k * (k - 1))
    rng = np.random.default_rng(1)
    img = apply_op(occ, host, rng.integers(0, host.n_ops, len(occ)))
    assert np.array_equal(cluster_counts(img, host), X)


def test_pair_distances_are_the_defects_shortest_distances_and_invariant(host):
    """Read off the counts, the k shortest distances per type pair equal those of the defects' sites
    (minimum image), with multiplicity, absent pairs at ABSENT_DISTANCE; invariant under host operations."""
    from invdesign.embed.geometry import defect_cloud
    from invdesign.predict.features import ABSENT_DISTANCE, orbit_distances, pair_distances

    rng = np.random.default_rng(4)
    occ = np.concatenate([_configs(host, 6), sample_configurations(host, {"V_S": 5, "V_Mo": 2}, 6, rng)])
    T, od = len(host.defect_types), orbit_distances(host)
    assert np.abs(od[host.pair_orbits] - host.min_image_distance).max() < 1e-9  # one distance per orbit
    F = pair_distances(cluster_counts(occ, host), T, od, k=3)
    tp = [(a, b) for a in range(T) for b in range(a, T)]
    assert F.shape == (len(occ), len(tp) * 3)
    D = host.min_image_distance
    for k, (rows, sites, types) in defect_cloud(occ, host).groups.items():
        for r, st, ty in zip(rows, sites, types):
            for j, (a, b) in enumerate(tp):
                d = sorted(D[st[i], st[m]] for i in range(k) for m in range(i + 1, k) if sorted((ty[i], ty[m])) == [a, b])
                want = (d + [ABSENT_DISTANCE] * 3)[:3]
                assert np.allclose(F[r, 3 * j : 3 * j + 3], want), (r, a, b)
    img = apply_op(occ, host, rng.integers(0, host.n_ops, len(occ)))
    assert np.array_equal(pair_distances(cluster_counts(img, host), T, od), F)


def test_anchor_neighbours_are_an_anchors_nearest_defects_and_invariant(host):
    """With one defect of the anchor type, the two columns of distances are its two nearest other defects
    (minimum image, any type) and the one-hots their types; absent at ABSENT_DISTANCE; exactly invariant."""
    from invdesign.embed.geometry import defect_cloud
    from invdesign.predict.features import ABSENT_DISTANCE, anchor_neighbours, orbit_distances

    rng = np.random.default_rng(6)
    occ = np.concatenate([_configs(host, 8), sample_configurations(host, {"V_Mo": 1}, 3, rng),
                          sample_configurations(host, {"V_Mo": 1, "V_S": 1, "Se_S": 1}, 8, rng)])
    T, od = len(host.defect_types), orbit_distances(host)
    a = [host.defect_label(*t) for t in host.defect_types].index("V_Mo")
    F = anchor_neighbours(cluster_counts(occ, host), T, od, a)
    assert F.shape == (len(occ), 2 + 2 * T)
    D = host.min_image_distance
    seen = 0
    for k, (rows, sites, types) in defect_cloud(occ, host).groups.items():
        for r, st, ty in zip(rows, sites, types):
            if (ty == a).sum() != 1:
                assert (ty == a).sum() or (F[r, :2] == ABSENT_DISTANCE).all() and not F[r, 2:].any()
                continue
            i = int(np.flatnonzero(ty == a)[0])
            nb = sorted((round(D[st[i], st[m]], 6), ty[m]) for m in range(k) if m != i)[:2]
            want = [d for d, _ in nb] + [ABSENT_DISTANCE] * (2 - len(nb))
            assert np.allclose(F[r, :2], want), r
            for q, (_, t) in enumerate(nb):
                assert F[r, 2 + q * T + t] == 1 and F[r, 2 + q * T : 2 + (q + 1) * T].sum() == 1
            seen += 1
    assert seen >= 15
    img = apply_op(occ, host, rng.integers(0, host.n_ops, len(occ)))
    assert np.array_equal(anchor_neighbours(cluster_counts(img, host), T, od, a), F)


def test_poly2_has_91_columns():
    z = np.random.default_rng(0).normal(size=(5, 12))
    P = poly2(z)
    assert P.shape == (5, 91)
    assert np.allclose(P[:, 0], 1) and np.allclose(P[:, 1:13], z) and np.allclose(P[:, 13], z[:, 0] ** 2)


def test_ridge_head_fits_linear_data_and_roundtrips():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    W = rng.normal(size=(6, 2))
    Y = X @ W + 0.5 + rng.normal(scale=1e-3, size=(300, 2))
    h = RidgeHead().fit(X[:200], Y[:200], X[200:], Y[200:])
    m, s = h.predict(X[200:])
    assert np.abs(m - Y[200:]).mean() < 5e-3 and np.all(s > 0)
    h2 = RidgeHead.from_state(h.state())
    assert np.allclose(h2.predict(X)[0], h.predict(X)[0]) and np.allclose(h2.predict(X)[1], s2 := h.predict(X)[1])
    assert s2.shape == (300, 2)
    # calibrated: unit RMS z-score on the validation rows it was fitted against
    z = (m - Y[200:]) / s
    np.testing.assert_allclose(np.sqrt((z**2).mean(0)), 1.0, rtol=1e-9)
    # the leverage is exact: a^T (A^T A + alpha I)^-1 a on the standardised features
    A = (X[:200] - h.mu) / h.sd
    a = (X[200:203] - h.mu) / h.sd
    for j in range(2):
        M = np.linalg.inv(A.T @ A + h.alpha[j] * np.eye(6))
        np.testing.assert_allclose(h.leverage(X[200:203])[:, j], np.einsum("ij,jk,ik->i", a, M, a), rtol=1e-8)
    # far from the training rows the std grows; a head saved without the basis keeps the constant RMSE
    far = np.full((1, 6), 30.0)  # leverage ~ |a|^2 / 200 = 27
    assert (h.predict(far)[1] > 3 * h.predict(X[:1])[1]).all()
    old = {k: v for k, v in h.state().items() if k not in ("basis", "sv", "sigma")}
    np.testing.assert_allclose(RidgeHead.from_state(old).predict(far)[1], h.rmse[None])


def test_ensemble_head_uncertainty_and_roundtrip():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(400, 3))
    Y = np.stack([np.sin(X[:, 0]) + X[:, 1], X[:, 2] ** 2], 1)
    h = EnsembleHead(members=3, width=32, epochs=60, seed=0, batch=32).fit(X[:300], Y[:300], X[300:350], Y[300:350])
    m, s = h.predict(X[350:])
    assert m.shape == (50, 2) and (s > 0).all()
    base = np.abs(Y[350:] - Y[:300].mean(0)).mean(0)
    assert (np.abs(m - Y[350:]).mean(0) < 0.5 * base).all()
    # far outside the data the ensemble disagrees more than inside it
    far = h.predict(X[350:] * 6)[1].mean(0)
    assert (far > s.mean(0)).all()
    h2 = EnsembleHead.from_state(h.state())
    assert np.allclose(h2.predict(X[:5])[0], h.predict(X[:5])[0])
    assert np.allclose(h2.predict(X[:5])[1], h.predict(X[:5])[1])


def test_coulomb_matrix_matches_dscribe_up_to_tie_order(host):
    from dscribe.descriptors import CoulombMatrix
    from pymatgen.io.ase import AseAtomsAdaptor

    from invdesign.lattice.config import config_to_structure

    occ = _configs(host, 1)
    ours = coulomb_matrices(occ, host)
    assert ours.shape == (3, 36864)
    ref = CoulombMatrix(n_atoms_max=192, permutation="sorted_l2").create([AseAtomsAdaptor.get_atoms(config_to_structure(o, host)) for o in occ])
    for a, b in zip(ours, ref):
        A, B = a.reshape(192, 192), b.reshape(192, 192)
        assert np.allclose(np.sort(np.linalg.norm(A, axis=1)), np.sort(np.linalg.norm(B, axis=1)), rtol=1e-5)
        assert np.allclose(np.sort(a), np.sort(b), rtol=1e-4, atol=1e-3)


def test_bag_of_bonds_sizes(host):
    pristine = host.host_code[None]
    bob = BagOfBonds().fit(pristine, host)
    assert bob.length == 64 + 128 + 64 * 63 // 2 + 64 * 128 + 128 * 127 // 2  # self bags + the seed's 18,336 pair bags
    occ = _configs(host, 2)
    b = BagOfBonds().fit(occ, host)
    X = b.transform(occ)
    assert X.shape == (len(occ), b.length) and (X >= 0).all()
    # W and Se bags exist once the data has them; pristine bags are then padded
    assert b.length > bob.length
    assert np.isclose(X[0, 0], 0.5 * 42**2.4)


def test_kernel_ridge_learns_smooth_function():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(240, 4))
    Y = np.stack([np.sin(2 * X[:, 0]), X[:, 1] * X[:, 2]], 1)
    kr = KernelRidge().fit(X[:160], Y[:160], X[160:200], Y[160:200])
    assert np.abs(kr.predict(X[200:]) - Y[200:]).mean() < 0.1


def test_packaged_model_meets_the_accuracy_goal_on_the_test_split(dataset, packaged, share):
    meta = packaged.meta
    assert meta["serving_head"] == "best" and meta["embedding_dim"] == 12
    assert set(meta["serving"]) == set(TARGETS) and meta["serving"]["formation_energy_per_site"] in {"ensemble_ce", "ridge_ce"}
    assert meta["serving"]["homo_lumo_gap"] == "gap_gbt"
    if share is None:
        m, s = packaged.predict(dataset.occ[:50])
        assert np.isfinite(m).all() and (s > 0).all()
        return
    te = split_indices(dataset.ids, seed=meta["split"]["seed"])["test"]
    m, s = packaged.predict(dataset.occ[te])
    mae = np.abs(m - dataset.y(TARGETS)[te]).mean(0) * 1000
    assert mae[0] <= 2.2 and mae[1] <= 6.0, mae  # issue 12: FE <= 2.2 meV; the gap near the 5 meV goal on this split
    assert abs(mae[0] - meta["metrics"]["best"]["test"][TARGETS[0]]) < 0.5
    assert abs(mae[1] - meta["metrics"]["best"]["test"][TARGETS[1]]) < 0.5
    # training configurations are the train split only
    train_ids = set(dataset.ids[split_indices(dataset.ids, seed=meta["split"]["seed"])["train"]])
    assert len(packaged.train_occ) == len(train_ids)


def test_unseen_clusters_are_exactly_the_features_outside_the_training_span(packaged, host):
    """unseen_clusters > 0 exactly when the cluster counts leave the span of the training features."""
    from invdesign.lattice.enumerate import enumerate_orbits

    train = packaged.train_occ
    assert (packaged.unseen_clusters(train[:200]) == 0).all()
    orbits = enumerate_orbits(host, 2).occ  # every 1-2-defect class (163)
    u = packaged.unseen_clusters(orbits)
    X = cluster_counts(train, host).astype(float)
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    basis = vt[s > 1e-8 * s[0]]
    Xo = cluster_counts(orbits, host).astype(float)
    residual = np.linalg.norm(Xo - (Xo @ basis.T) @ basis, axis=1)
    assert ((residual > 1e-6) == (u > 0)).all() and (u > 0).any() and (u == 0).any()
    flags = packaged.extrapolation(orbits)
    assert all(("pair cluster" in f) == (k > 0) for f, k in zip(flags, u))


def test_benchmark_table_small(tmp_path, dataset, packaged, host):
    from invdesign.data.dataset import Dataset
    from invdesign.predict.benchmark import markdown, run_benchmark, write_report

    if "homo_lumo_gap" not in dataset.targets:
        rng = np.random.default_rng(0)
        y = pd.DataFrame({t: rng.normal(size=len(dataset)) for t in TARGETS})
        dataset = Dataset(host, dataset.ids, dataset.occ, y, "generated")
    sub = dataset.subset(np.arange(0, len(dataset), max(1, len(dataset) // 300)))
    res = run_benchmark(sub, packaged, baselines=True, max_train=120, throughput_n=50)
    names = [r["method"] for r in res["rows"]]
    assert names[:4] == ["Bag of Bonds", "Coulomb Matrix", "SNN embeddings", "SNN embeddings + polynomial features"]
    cm = res["rows"][1]
    assert cm["descriptor_length"] == 36864 and res["rows"][3]["descriptor_length"] == 91
    assert all(r["mae_homo_lumo_gap_meV"]["high_density"] == "no data" for r in res["rows"])
    assert all(np.isfinite(r["mae_formation_energy_per_site_meV"]["low_density"]) for r in res["rows"])
    assert res["throughput"]["embedding_configs_per_s"] > 0
    md = write_report(res, tmp_path)
    assert md == markdown(res) and "no data" in md and "Coulomb Matrix" in md
    assert json.loads((tmp_path / "benchmark.json").read_text())["rows"][0]["method"] == "Bag of Bonds"


def test_benchmark_reads_a_high_density_collection(tmp_path, dataset, packaged, host):
    from invdesign.io import write_structure
    from invdesign.predict.benchmark import run_benchmark

    sub = dataset.subset(np.arange(60))
    root = tmp_path / "highdensity" / "MoS2_500"
    (root / "initial").mkdir(parents=True)
    for i, o in zip(sub.ids, sub.occ):
        write_structure(o, host, root / "initial" / f"{i}.cif")
    rng = np.random.default_rng(0)
    pd.DataFrame({"_id": sub.ids, **{t: rng.normal(size=len(sub)) for t in TARGETS}}).to_csv(root / "targets.csv", index=False)
    res = run_benchmark(sub if "homo_lumo_gap" in sub.targets else _labelled(sub, host), packaged,
                        high_density=tmp_path / "highdensity", baselines=False, throughput_n=10)
    assert "MoS2_500" in res["high_density"]
    assert all(isinstance(r["mae_homo_lumo_gap_meV"]["high_density"], float) for r in res["rows"][:3])


def _labelled(ds, host):
    from invdesign.data.dataset import Dataset

    rng = np.random.default_rng(1)
    return Dataset(host, ds.ids, ds.occ, pd.DataFrame({t: rng.normal(size=len(ds)) for t in TARGETS}), "generated")


def test_bounded_gap_head_trees_bounds_conformal_and_roundtrip(tmp_path):
    from sklearn.ensemble import HistGradientBoostingRegressor

    from invdesign.predict.gap import BoundedGapHead, _conformal, _Forest

    rng = np.random.default_rng(0)
    X = rng.integers(0, 4, (600, 12)).astype(float)
    X[:, 3] = 1.0  # a constant column (dropped in fitting, feature numbers mapped back)
    g = np.where(X[:, 0] > 1, 0.35, 1.8) - 0.05 * X[:, 1] + rng.normal(scale=0.01, size=600)
    est = HistGradientBoostingRegressor(max_iter=20, min_samples_leaf=5).fit(X, g)
    forest = _Forest.from_sklearn(est)
    assert np.abs(forest.predict(X) - est.predict(X)).max() < 1e-9  # stored trees == sklearn's
    assert np.abs(forest.predict_numpy(X) - est.predict(X)).max() < 1e-9  # and the numpy walk
    h = BoundedGapHead(members=2, max_iter=60, seed=0).fit(X[:400], g[:400], X[400:500], g[400:500])
    m, s = h.predict(X[500:])
    assert np.abs(m - g[500:]).mean() < 0.03 and (s > 0).all()
    mv, sv = h.predict(X[400:500])
    assert (np.abs(mv - g[400:500]) <= 2 * sv + 1e-12).mean() >= 0.95  # conformal on its calibration rows
    wild = rng.normal(scale=1e3, size=(500, 12))  # far outside anything trained: still a physical gap
    mw, sw = h.predict(wild)
    assert (mw > 0).all() and (mw < h.eg_max).all() and np.isfinite(sw).all()
    torch.save(h.state(), tmp_path / "h.pt")
    h2 = BoundedGapHead.from_state(torch.load(tmp_path / "h.pt", weights_only=True))
    assert np.array_equal(h2.predict(wild)[0], mw) and np.array_equal(h2.predict(wild)[1], sw)
    assert _conformal(np.arange(1.0, 101.0)) == 97.0  # ceil(101 * 0.9545) = 97th smallest
    with pytest.raises(ValueError, match="training gaps"):
        BoundedGapHead(members=1, max_iter=5).fit(X[:50], np.full(50, 2.5), X[50:60], g[50:60])


def test_bounded_gap_head_two_losses_average_all_members_and_stay_bounded(tmp_path):
    """members per loss are fitted (squared and absolute error in logit space), all averaged; the bound,
    the conformal std and the state round trip hold; the squared-error half equals the one-loss head."""
    from invdesign.predict.gap import BoundedGapHead

    rng = np.random.default_rng(1)
    X = rng.integers(0, 4, (500, 8)).astype(float)
    g = np.where(X[:, 0] > 1, 0.35, 1.8) - 0.05 * X[:, 1] + rng.standard_t(2, size=500) * 0.01
    g = np.clip(g, 0.05, 1.9)
    h = BoundedGapHead(members=2, max_iter=40, seed=0, losses=("squared_error", "absolute_error"))
    h.fit(X[:350], g[:350], X[350:430], g[350:430])
    assert len(h.forests) == 4
    one = BoundedGapHead(members=2, max_iter=40, seed=0).fit(X[:350], g[:350], X[350:430], g[350:430])
    assert all(np.array_equal(a.predict(X[430:]), b.predict(X[430:])) for a, b in zip(h.forests[:2], one.forests))
    m, s = h.predict(X[430:])
    assert np.abs(m - g[430:]).mean() < 0.05 and (s > 0).all()
    mv, sv = h.predict(X[350:430])
    assert (np.abs(mv - g[350:430]) <= 2 * sv + 1e-12).mean() >= 0.95
    mw, _ = h.predict(rng.normal(scale=1e3, size=(200, 8)))
    assert (mw > 0).all() and (mw < h.eg_max).all()
    torch.save(h.state(), tmp_path / "h.pt")
    h2 = BoundedGapHead.from_state(torch.load(tmp_path / "h.pt", weights_only=True))
    assert h2.losses == h.losses and np.array_equal(h2.predict(X[430:])[0], m)


def test_bounded_gap_head_extra_members_are_fitted_averaged_and_roundtrip(tmp_path):
    """``extra`` members (e.g. full-train-set models of each loss) come after the bootstrap ones, which stay
    the same; all are averaged in logit space; bound, coverage on val and the state round trip hold."""
    from invdesign.predict.gap import BoundedGapHead, _logit, _sigmoid

    rng = np.random.default_rng(2)
    X = rng.integers(0, 4, (500, 8)).astype(float)
    g = np.clip(np.where(X[:, 0] > 1, 0.35, 1.8) - 0.05 * X[:, 1] + rng.normal(size=500) * 0.01, 0.05, 1.9)
    extra = ({"loss": "squared_error"}, {"loss": "absolute_error", "max_leaf_nodes": 15})
    h = BoundedGapHead(members=2, max_iter=40, seed=0, extra=extra).fit(X[:350], g[:350], X[350:430], g[350:430])
    base = BoundedGapHead(members=2, max_iter=40, seed=0).fit(X[:350], g[:350], X[350:430], g[350:430])
    assert len(h.forests) == 4
    assert all(np.array_equal(a.predict(X[430:]), b.predict(X[430:])) for a, b in zip(h.forests[:2], base.forests))
    full = BoundedGapHead(members=1, max_iter=40, seed=0, bootstrap=False).fit(X[:350], g[:350], X[350:430], g[350:430])
    assert not np.array_equal(h.forests[2].predict(X[430:]), h.forests[0].predict(X[430:]))
    assert np.abs(h.forests[2].predict(X[430:]) - full.forests[0].predict(X[430:])).max() < 1e-9  # same data, same trees
    m, s = h.predict(X[430:])
    U = np.stack([f.predict(X[430:]) for f in h.forests])
    assert np.allclose(m, _sigmoid(U.mean(0), h.eg_max)) and np.abs(m - g[430:]).mean() < 0.05 and (s > 0).all()
    mv, sv = h.predict(X[350:430])
    assert (np.abs(mv - g[350:430]) <= 2 * sv + 1e-12).mean() >= 0.95
    mw, _ = h.predict(rng.normal(scale=1e3, size=(200, 8)))
    assert (mw > 0).all() and (mw < h.eg_max).all() and np.isfinite(_logit(mw, h.eg_max)).all()
    torch.save(h.state(), tmp_path / "h.pt")
    h2 = BoundedGapHead.from_state(torch.load(tmp_path / "h.pt", weights_only=True))
    assert h2.extra == h.extra and np.array_equal(h2.predict(X[430:])[0], m)
    with pytest.raises(ValueError, match="unknown"):
        BoundedGapHead(extra=({"depth": 3},))
    with pytest.raises(ValueError, match="orbit_distance"):
        BoundedGapHead(extra=({"distances": True},))


def test_bounded_gap_head_distance_members_read_pair_distances(host, tmp_path):
    """A member with ``distances`` reads the counts plus the pair distances (exactly invariant: the served
    gap is the same for every image of a configuration), stays bounded and round-trips."""
    from invdesign.predict.features import orbit_distances
    from invdesign.predict.gap import BoundedGapHead

    rng = np.random.default_rng(5)
    occ = np.concatenate([sample_configurations(host, {"V_Mo": 1, "V_S": 2}, 150, rng),
                          sample_configurations(host, {"W_Mo": 1, "V_S": 1}, 100, rng)])
    X = cluster_counts(occ, host).astype(float)
    geo = {"n_types": len(host.defect_types), "orbit_distance": orbit_distances(host)}
    # a gap set by geometry: deep when a V_S sits next to the V_Mo
    from invdesign.predict.features import pair_distances
    near = pair_distances(X, geo["n_types"], geo["orbit_distance"])[:, 3 * 6] < 3.0  # shortest (V_Mo, V_S) distance: type pair (1, 3), the 7th
    g = np.where(X[:, 1] > 0, np.where(near, 0.27, 0.4), 1.1) + rng.normal(size=len(X)) * 0.005
    h = BoundedGapHead(members=1, max_iter=30, losses=("squared_error",), extra=({"distances": True},), **geo)
    h.fit(X[:200], g[:200], X[200:], g[200:])
    assert len(h.forests) == 2 and max(f.feature.max() for f in h.forests) >= X.shape[1]  # reads a distance column
    assert h.forests[0].feature.max() < X.shape[1]  # the plain member reads counts only
    _assert_bounded_invariant_round_trip(h, X, occ, host, rng, tmp_path)


def _assert_bounded_invariant_round_trip(h, X, occ, host, rng, tmp_path) -> None:
    """A fitted gap head's served gaps lie in (0, eg_max) with positive std, are bit-identical on symmetry
    images of ``occ`` (counts ``X``), and survive a save / load."""
    from invdesign.predict.gap import BoundedGapHead

    m, s = h.predict(X)
    assert (m > 0).all() and (m < h.eg_max).all() and (s > 0).all()
    img = apply_op(occ, host, rng.integers(0, host.n_ops, len(occ)))
    assert np.array_equal(h.predict(cluster_counts(img, host))[0], m)
    torch.save(h.state(), tmp_path / "h.pt")
    h2 = BoundedGapHead.from_state(torch.load(tmp_path / "h.pt", weights_only=True))
    assert np.array_equal(h2.predict(X)[0], m)


def test_bounded_gap_head_anchor_members_read_their_anchor_block(host, tmp_path):
    """A member with ``anchor`` reads the counts plus that anchor's nearest-neighbour block: it learns a
    level set by the V_Mo's nearest defect, stays bounded, exactly invariant, and round-trips."""
    from invdesign.predict.features import anchor_neighbours, orbit_distances
    from invdesign.predict.gap import BoundedGapHead, _sigmoid

    rng = np.random.default_rng(7)
    occ = np.concatenate([sample_configurations(host, {"V_Mo": 1, "V_S": 1, "Se_S": 1}, 200, rng),
                          sample_configurations(host, {"W_Mo": 1, "V_S": 1}, 80, rng)])
    X = cluster_counts(occ, host).astype(float)
    geo = {"n_types": len(host.defect_types), "orbit_distance": orbit_distances(host)}
    A = anchor_neighbours(X, geo["n_types"], geo["orbit_distance"], 1)
    se_first = A[:, 2 + 2] == 1  # the V_Mo's nearest defect is the Se_S
    g = np.where(X[:, 1] > 0, np.where(se_first, 0.27, 0.42), 1.1) + rng.normal(size=len(X)) * 0.003
    kw = {"members": 1, "max_iter": 40, "losses": ("squared_error",), **geo}
    h = BoundedGapHead(**kw, extra=({"anchor": 1},)).fit(X[:220], g[:220], X[220:], g[220:])
    p = X.shape[1]
    assert len(h.forests) == 2 and h.forests[0].feature.max() < p
    assert p <= h.forests[1].feature.max() < p + 2 + 2 * geo["n_types"]  # reads its anchor block
    _assert_bounded_invariant_round_trip(h, X, occ, host, rng, tmp_path)
    # the anchor member alone tells the two levels apart on held-out rows; the counts-only member less so
    err = [np.abs(_sigmoid(f.predict(h._design(X[220:])), h.eg_max) - g[220:]).mean() for f in h.forests]
    assert err[1] < err[0]
    with pytest.raises(ValueError, match="anchor"):
        BoundedGapHead(extra=({"anchor": 9},), **geo)
    with pytest.raises(ValueError, match="orbit_distance"):
        BoundedGapHead(extra=({"anchor": 1},))
    with pytest.raises(ValueError, match="orbit_distance"):
        BoundedGapHead(anchor=1)
    # head-level anchor: every member (bootstrap ones and extras) reads the block; round-trips
    ha = BoundedGapHead(**{**kw, "members": 2}, extra=({"loss": "absolute_error"},), anchor=1).fit(X[:220], g[:220], X[220:], g[220:])
    assert len(ha.forests) == 3 and all(p <= f.feature[~f.leaf].max() < p + 2 + 2 * geo["n_types"] for f in ha.forests)
    _assert_bounded_invariant_round_trip(ha, X, occ, host, rng, tmp_path)
    assert BoundedGapHead.from_state(ha.state()).anchor == 1
    dense = sample_configurations(host, {"V_Mo": 12, "V_S": 24, "Se_S": 12}, 6, rng)  # far beyond the data
    md, sd = ha.predict(cluster_counts(dense, host).astype(float))
    assert (md > 0).all() and (md < ha.eg_max).all() and np.isfinite(sd).all()


def test_bounded_gap_head_refit_with_val_keeps_the_calibration_and_refits_on_both(tmp_path):
    """``refit_with_val``: the std scale comes from members that never saw val; the served members are the
    same recipe refitted on train + val (equal to a head fitted on the concatenation), still bounded."""
    from invdesign.predict.gap import BoundedGapHead

    rng = np.random.default_rng(3)
    X = rng.integers(0, 4, (500, 8)).astype(float)
    g = np.clip(np.where(X[:, 0] > 1, 0.35, 1.8) - 0.05 * X[:, 1] + rng.normal(size=500) * 0.01, 0.05, 1.9)
    kw = {"members": 1, "bootstrap": False, "max_iter": 40, "losses": ("squared_error", "absolute_error")}
    plain = BoundedGapHead(**kw).fit(X[:350], g[:350], X[350:430], g[350:430])
    ref = BoundedGapHead(**kw, refit_with_val=True).fit(X[:350], g[:350], X[350:430], g[350:430])
    both = BoundedGapHead(**kw).fit(X[:430], g[:430], X[350:430], g[350:430])
    assert np.array_equal(ref.scale_b, plain.scale_b) and ref.s0 == plain.s0
    assert all(np.array_equal(a.predict(X[430:]), b.predict(X[430:])) for a, b in zip(ref.forests, both.forests))
    assert not np.array_equal(ref.predict(X[430:])[0], plain.predict(X[430:])[0])
    m, s = ref.predict(X[430:])
    assert np.abs(m - g[430:]).mean() < 0.05 and (s > 0).all() and (np.abs(m - g[430:]) <= 2 * s).mean() >= 0.9
    mw, _ = ref.predict(rng.normal(scale=1e3, size=(200, 8)))
    assert (mw > 0).all() and (mw < ref.eg_max).all()
    torch.save(ref.state(), tmp_path / "h.pt")
    h2 = BoundedGapHead.from_state(torch.load(tmp_path / "h.pt", weights_only=True))
    assert h2.refit_with_val and np.array_equal(h2.predict(X[430:])[0], m)


def test_packaged_gaps_stay_physical_at_any_density(packaged, host):
    """Issue 11: no served gap outside [0, eg_max) on 2,100 random configurations at 1-48 defects; at 1-3
    defects beyond the trained composition, and beyond the DFT host model's 24 defects, the gap is marked
    unvalidated with (at least) the uninformed std; at 4-24 defects the host model's validated gap serves."""
    from invdesign.api import predict
    from invdesign.predict.gap import unvalidated_std

    rng = np.random.default_rng(0)
    labels = ["W_Mo", "V_Mo", "Se_S", "V_S"]
    occ, ks = [], []
    for k in (1, 3, 6, 8, 12, 24, 48):
        for _ in range(300):
            counts = np.bincount(rng.integers(0, 4, k), minlength=4)
            occ.append(sample_configurations(host, {lab: int(c) for lab, c in zip(labels, counts) if c}, 1, rng)[0])
            ks.append(k)
    occ, ks = np.stack(occ), np.array(ks)
    m, s = packaged.predict(occ)
    eg = packaged.heads["gap_gbt"].eg_max
    assert (m[:, 1] >= 0).all() and (m[:, 1] < eg).all() and np.isfinite(s).all() and (s > 0).all()
    val = packaged.gap_validated(occ)
    hd = packaged.high_density_model()
    assert hd is not None  # the packaged model serves 4+ defects from the DFT host model
    assert val[(ks > 3) & (ks <= 24)].all() and not val[ks > 24].any() and val[ks <= 3].mean() > 0.5
    low = ks <= 3
    assert (s[~val & low, 1] >= unvalidated_std(eg) - 1e-12).all() and np.median(s[val & low, 1]) < 0.05
    assert (s[ks > 24, 1] >= hd.host_gap() / np.sqrt(12) - 1e-12).all()
    df = predict(occ[ks == 48][:5], model=packaged)
    assert "homo_lumo_gap_validated" in df and not df["homo_lumo_gap_validated"].any()


def test_predict_target_serves_exactly_the_predict_column():
    """One target alone (only its head runs) equals that column of predict, mean and std, at any density."""
    from invdesign.lattice.enumerate import sample_configurations
    from invdesign.model import load_model

    m = load_model()
    rng = np.random.default_rng(3)
    occ = np.concatenate([sample_configurations(m.host, c, 20, rng) for c in ({"V_S": 2, "W_Mo": 1}, {"V_Mo": 3, "V_S": 5, "W_Mo": 2})])
    mean, std = m.predict(occ)
    for j, t in enumerate(m.targets):
        mt, st = m.predict_target(occ, t)
        assert np.array_equal(mt, mean[:, j]) and np.array_equal(st, std[:, j])
    with pytest.raises(InvdesignError, match="unknown target"):
        m.predict_target(occ, "band_gap")


def test_benchmark_knows_the_packaged_model_was_trained_on_its_set(packaged):
    """The packaged model's own rows (deep ensembles, best head) appear on the set it was trained on, even though
    its recorded fingerprint predates the current host definition; another set of the host does not match."""
    from conftest import shared_dir

    from invdesign.data.dataset import load_2dmd
    from invdesign.predict.benchmark import trained_on

    root = shared_dir() / "data"
    if not (root / "2dmd-mos2-low").is_dir():
        pytest.skip("2DMD share absent")
    assert trained_on(packaged, load_2dmd(root / "2dmd-mos2-low")) in ("fingerprint", "name and size")
    assert trained_on(packaged, load_2dmd(root / "2dmd-mos2-high")) is None
