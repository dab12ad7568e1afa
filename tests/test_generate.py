"""Conditional flow, decoder, checks and the design pipeline on a small exactly-invariant model.

The stand-in model embeds a configuration as a fixed random projection of its counts of
(defect type, defect type, pair orbit) and (defect type) -- exactly invariant under the host
group -- and predicts properties as a smooth function of the embedding. It needs no training,
so these tests exercise the generate package on real configurations in seconds; the CLI tests
(tests/test_design_cli.py) use a real trained Model.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from invdesign.data.dataset import TARGETS, split_indices
from invdesign.errors import InvdesignError
from invdesign.generate.checks import rank_with_diversity
from invdesign.generate.decoder import Limits, decode, estimate_orbits, is_enumerable, orbit_index, validate
from invdesign.generate.design import LEADING, design, generator_recall, screen
from invdesign.generate.flow import ConditionalFlow, attach_flow, fit_flow, get_flow
from invdesign.generate.window import Window
from invdesign.lattice.canonical import apply_op, canonical_keys
from invdesign.lattice.enumerate import compositions, sample_configurations

torch.set_num_threads(1)

SMALL_FLOW = {"n_layers": 2, "hidden": 24, "max_epochs": 25, "patience": 5, "batch_size": 256}


class PairCountModel:
    """Stand-in for invdesign.model.Model: invariant embedding from pair-orbit counts, d=12."""

    def __init__(self, host, train_occ: np.ndarray, seed: int = 0, d: int = 12) -> None:
        self.host = host
        rng = np.random.default_rng(seed)
        self.T = len(host.defect_types)
        self.P = int(host.pair_orbits.max()) + 1
        self.tmap = np.full((len(host.sublattices), host.n_species), -1)
        for t, (s, c) in enumerate(host.defect_types):
            self.tmap[s, c] = t
        self.W = rng.normal(size=(self.T + self.T * self.T * self.P, d)) / 3
        self.H = rng.normal(size=(d, 2)) / 2
        self.meta = {"version": "test-pair-count"}
        self.extras: dict = {}
        self.train_occ = np.asarray(train_occ, dtype=np.uint8)
        self.train_y = self.predict(self.train_occ)[0]

    def embed(self, occ: np.ndarray) -> np.ndarray:
        occ = np.asarray(occ)
        h, T, P = self.host, self.T, self.P
        F = np.zeros((len(occ), T + T * T * P))
        F[:, :T] = compositions(occ, h)
        for n, row in enumerate(occ):
            d = np.flatnonzero(row != h.host_code)
            ty = self.tmap[h.sublattice[d], row[d]]
            a, b = np.meshgrid(np.arange(len(d)), np.arange(len(d)), indexing="ij")
            off = a != b
            cols = T + (ty[a[off]] * T + ty[b[off]]) * P + h.pair_orbits[d[a[off]], d[b[off]]]
            np.add.at(F[n], cols, 1.0)
        return F @ self.W

    def predict_embedding(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = np.tanh(np.asarray(z) @ self.H) + np.array([2.0, 1.0])
        return m, np.full_like(m, 0.03)

    def predict(self, occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.predict_embedding(self.embed(occ))


@pytest.fixture(scope="module")
def toy(host, dataset):
    split = split_indices(dataset.ids, seed=0)
    model = PairCountModel(host, dataset.occ[split["train"]])
    z = model.embed(dataset.occ)
    y = model.predict_embedding(z)[0]
    n = dataset.n_defects
    tr, va = split["train"], split["val"]
    flow = fit_flow(z[tr], y[tr], n[tr], z[va], y[va], n[va], seed=0, config=SMALL_FLOW)
    model.extras["flow"] = flow.to_state()
    return model


@pytest.fixture(scope="module")
def heldout(dataset):
    return dataset.subset(split_indices(dataset.ids, seed=0)["test"])


# ---------------------------------------------------------------------- windows
def test_window_parse_and_probabilities():
    w = Window.parse(["formation_energy_per_site=1.0:1.5", "homo_lumo_gap=:0.8"])
    assert w.lo == (1.0, -np.inf) and w.hi == (1.5, 0.8)
    assert w.as_dict() == {"formation_energy_per_site": [1.0, 1.5], "homo_lumo_gap": [None, 0.8]}
    mean = np.array([[1.25, 0.2], [1.25, 0.8], [3.0, 0.2]])
    p = w.p_in(mean, np.full_like(mean, 0.01))
    assert p[0] == pytest.approx(1.0) and p[1] == pytest.approx(0.5, abs=1e-6) and p[2] < 1e-12
    # product over targets: half on each edge -> 1/4
    w2 = Window.from_dict({"formation_energy_per_site": (1.0, 1.5), "homo_lumo_gap": (0.5, 0.8)})
    assert w2.p_in(np.array([[1.5, 0.8]]), np.array([[0.01, 0.01]]))[0] == pytest.approx(0.25, abs=1e-6)
    assert w.distance(np.array([[1.2, 0.1], [2.0, 1.1]])) == pytest.approx([0.0, np.hypot(0.5, 0.3)])
    for bad, msg in [
        (["formation_energy_per_site=1.5"], "expected NAME=LO:HI"),
        (["formation_energy_per_site=2:1"], "LO 2 is above HI 1"),
        (["band_gap=1:2"], "unknown target 'band_gap'"),
        (["homo_lumo_gap=1:2", "homo_lumo_gap=1:3"], "given twice"),
        ([], "at least one target"),
    ]:
        with pytest.raises(InvdesignError, match=msg):
            Window.parse(bad)


# ---------------------------------------------------------------------- flow
def test_flow_fits_samples_and_follows_its_context():
    rng = np.random.default_rng(0)
    N = 800
    y = rng.uniform(-1, 1, size=(N, 2))
    n = rng.integers(1, 4, size=N)
    z = np.column_stack([2 * y[:, 0], -y[:, 1], n.astype(float), rng.normal(size=N)]) + 0.05 * rng.normal(size=(N, 4))
    cfg = {"n_layers": 3, "hidden": 32, "max_epochs": 40, "patience": 10, "batch_size": 100, "lr": 5e-3, "noise": 0.0}
    flow = fit_flow(z[:600], y[:600], n[:600], z[600:700], y[600:700], n[600:700], seed=0, config=cfg)
    # entropy of z: about +3.0 nats unconditionally, -3.3 given (y, n); require most of the gain
    assert flow.report["val_nll"] < -2.0
    s_hi = flow.sample(np.tile([[0.8, -0.8]], (400, 1)), np.full(400, 3), seed=1)
    s_lo = flow.sample(np.tile([[-0.8, 0.8]], (400, 1)), np.full(400, 1), seed=1)
    assert s_hi.shape == (400, 4)
    assert s_hi[:, 0].mean() - s_lo[:, 0].mean() > 2.0  # z0 = 2 y0: expected gap 3.2
    assert s_hi[:, 1].mean() - s_lo[:, 1].mean() > 1.0  # z1 = -y1: expected gap 1.6
    assert s_hi[:, 2].mean() - s_lo[:, 2].mean() > 1.2  # z2 = n: expected gap 2
    # held-out likelihood is higher under the true context than under a shuffled one
    te = slice(700, 800)
    true_lp = flow.log_prob(z[te], y[te], n[te]).mean()
    perm = rng.permutation(100)
    assert true_lp > flow.log_prob(z[te], y[te][perm], n[te][perm]).mean() + 1.0
    # window sampling draws contexts from the training (y, n) inside the window, within the allowed counts
    allowed = np.isin(flow.prior.counts[:, 0], [2, 3])
    zs, ys, ns = flow.sample_window(np.array([[0.2, 0.4], [-np.inf, np.inf]]), 50, allowed, seed=3)
    assert zs.shape == (50, 4) and (ys[:, 0] >= 0.2).all() and (ys[:, 0] <= 0.4).all()
    assert ns.shape == (50, 1) and set(ns[:, 0]) <= {2, 3}
    with pytest.raises(InvdesignError, match="no configuration within these limits"):
        flow.sample_window(np.array([[0.2, 0.4], [-np.inf, np.inf]]), 5, np.zeros(len(allowed), bool))
    # the state survives torch.save/torch.load(weights_only=True), as inside Model.save/load
    buf = io.BytesIO()
    torch.save(flow.to_state(), buf)
    buf.seek(0)
    back = ConditionalFlow.from_state(torch.load(buf, weights_only=True))
    np.testing.assert_allclose(back.log_prob(z[te], y[te], n[te]), flow.log_prob(z[te], y[te], n[te]), rtol=1e-6)
    np.testing.assert_allclose(back.sample(y[te], n[te], seed=5), flow.sample(y[te], n[te], seed=5), rtol=1e-5)


def test_context_prior_draws_the_compositions_that_reach_the_window():
    """p(y, counts | y in window): exact window masses, far tails finite, draws in proportion."""
    from scipy.stats import norm

    from invdesign.generate.flow import ContextPrior

    rng = np.random.default_rng(0)
    # composition (1, 0) sits at y0 ~ 1.0, (0, 1) at y0 ~ 2.0; y1 is shared
    y = np.concatenate([np.column_stack([rng.normal(1.0, 0.05, 300), rng.uniform(0, 1, 300)]),
                        np.column_stack([rng.normal(2.0, 0.05, 100), rng.uniform(0, 1, 100)])])
    counts = np.array([[1, 0]] * 300 + [[0, 1]] * 100)
    prior = ContextPrior.fit(y, counts, min_bandwidth=np.array([1e-3, 1e-3]))
    assert prior.bandwidth[0, 0] == pytest.approx(y[:300, 0].std() * 300 ** (-1 / 6))
    w = np.array([[0.9, 1.1], [-np.inf, np.inf]])
    i = 7
    h = prior.bandwidth[i, 0]
    expect = np.log(norm.cdf((1.1 - y[i, 0]) / h) - norm.cdf((0.9 - y[i, 0]) / h))
    assert prior.log_weights(w)[i] == pytest.approx(expect, rel=1e-9)
    far = prior.log_weights(np.array([[50.0, 51.0], [-np.inf, np.inf]]))  # tens of thousands of sigmas away
    assert np.isfinite(far).all() and far[300:].max() > far[:300].max()  # (0, 1) is nearer
    ys, cs = prior.sample(np.array([[1.9, 2.1], [0.0, 0.5]]), 400, None, rng)
    assert (cs == [0, 1]).all(axis=1).mean() > 0.99
    assert ((ys[:, 0] >= 1.9) & (ys[:, 0] <= 2.1) & (ys[:, 1] >= 0) & (ys[:, 1] <= 0.5)).all()
    ys, cs = prior.sample(np.array([[0.0, 3.0], [-np.inf, np.inf]]), 4000, None, rng)  # both fully inside
    assert (cs == [1, 0]).all(axis=1).mean() == pytest.approx(0.75, abs=0.03)
    allowed = (counts == [0, 1]).all(axis=1)
    _, cs = prior.sample(np.array([[0.9, 1.1], [-np.inf, np.inf]]), 50, allowed, rng)
    assert (cs == [0, 1]).all()  # limits win over the window: nearest allowed contexts
    near = prior.nearest(np.array([[2.5, 3.0], [-np.inf, np.inf]]), 5, None, scale=np.ones(2))
    assert (near >= 300).all() and len(near) == 5


def test_prior_allowed_follows_the_limits(host):
    """Which of the flow's training contexts a design request may draw (composition context)."""
    from types import SimpleNamespace

    from invdesign.generate.design import prior_allowed
    from invdesign.generate.flow import ContextPrior

    labels = [host.defect_label(*t) for t in host.defect_types]
    counts = np.zeros((4, len(labels)), dtype=int)
    counts[0, labels.index("V_S")] = 1
    counts[1, labels.index("V_S")] = 2
    counts[2, [labels.index("V_S"), labels.index("W_Mo")]] = 1
    counts[3, labels.index("W_Mo")] = 3
    flow = SimpleNamespace(prior=ContextPrior(np.zeros((4, 2)), counts, np.ones((4, 2))))
    assert list(prior_allowed(flow, host, Limits.make(host))) == [True] * 4
    assert list(prior_allowed(flow, host, Limits.make(host, 2, 2))) == [False, True, True, False]
    assert list(prior_allowed(flow, host, Limits.make(host, 3, 1, ["V_S"]))) == [True, True, False, False]
    # more defects than any training context: the nearest counts below, the decoder adds the rest
    assert list(prior_allowed(flow, host, Limits.make(host, 5, 4, ["V_S"]))) == [True, True, False, False]
    with pytest.raises(InvdesignError, match="trained on no composition"):
        prior_allowed(flow, host, Limits.make(host, 3, 1, ["Se_S"]))


def test_attach_flow_uses_train_and_val_only(toy, dataset, share):
    if share is None:  # the DFT-conditioned flow needs targets; the generated dataset has none
        with pytest.raises(InvdesignError, match="no target"):
            attach_flow(toy, dataset, config={**SMALL_FLOW, "train_set": "train"})
        return
    import copy

    m = copy.copy(toy)
    m.extras = {}
    attach_flow(m, dataset, seed=0, config={**SMALL_FLOW, "max_epochs": 3, "train_set": "train"})
    sp = split_indices(dataset.ids, seed=0)
    rep = m.extras["flow"]["report"]
    assert rep["n_train"] == len(sp["train"]) and rep["n_val"] == len(sp["val"])
    assert get_flow(m).dim == 12


def test_attach_flow_on_orbits_holds_out_val(toy, dataset):
    """Default: every enumerated orbit except VAL's, conditioned on the model's predictions."""
    import copy

    m = copy.copy(toy)
    m.extras = {}
    attach_flow(m, dataset, seed=0, config={**SMALL_FLOW, "max_epochs": 2})
    sp = split_indices(dataset.ids, seed=0)
    idx = orbit_index(m)
    val_keys = set(dataset.subset(sp["val"]).keys)
    rep = m.extras["flow"]["report"]
    assert rep["n_val"] == len(sp["val"])
    assert rep["n_train"] == len(idx) - sum(str(k) in val_keys for k in idx.keys)
    assert get_flow(m).dim == 12
    with pytest.raises(InvdesignError, match="train_set"):
        attach_flow(m, dataset, config={**SMALL_FLOW, "train_set": "nope"})


# ---------------------------------------------------------------------- decoder
def test_decoder_round_trip_on_heldout_configurations(toy, heldout, host):
    z = toy.embed(heldout.occ)
    res = decode(z, toy)
    assert (res.method == "exact").all()
    np.testing.assert_allclose(res.distance, 0.0, atol=1e-9)
    # symmetry images decode to the same orbit
    img = apply_op(heldout.occ, host, np.arange(len(heldout)) % host.n_ops)
    assert decode(toy.embed(img), toy).keys == res.keys
    # where the stand-in embedding separates the orbit from every other one, the key is exact
    idx = orbit_index(toy)
    zr = np.round(idx.z, 9)
    _, inv, cnt = np.unique(zr, axis=0, return_inverse=True, return_counts=True)
    unique_keys = {k for k, c in zip(idx.keys, cnt[inv.ravel()]) if c == 1}
    mask = np.array([k in unique_keys for k in heldout.keys])
    assert mask.mean() > 0.8
    assert [k for k, m in zip(res.keys, mask) if m] == [k for k, m in zip(heldout.keys, mask) if m]


def test_decoder_never_returns_invalid_configurations(toy, host):
    rng = np.random.default_rng(1)
    for limits in (Limits.make(host), Limits.make(host, 2, 2, ["V_S", "Se_S"]), Limits.make(host, 1, 1, ["W_Mo"])):
        for scale in (0.1, 10.0, 1e4):
            z = rng.normal(size=(40, 12)) * scale
            res = decode(z, toy, limits)
            assert validate(res.occ, host, limits).all()
            assert res.keys == canonical_keys(res.occ, host)
    # distinct decoding returns distinct orbits and respects exclusions
    z = np.zeros((30, 12))
    excl = set(decode(z[:1], toy).keys)
    res = decode(z, toy, exclude=excl, distinct=True)
    assert len(set(res.keys)) == 30 and not (excl & set(res.keys))
    # only 4 single-W orbits? (1 orbit: all Mo sites are equivalent) -> asking for 2 distinct fails clearly
    with pytest.raises(InvdesignError, match="distinct"):
        decode(z[:2], toy, Limits.make(host, 1, 1, ["W_Mo"]), distinct=True)
    with pytest.raises(InvdesignError, match="finite"):
        decode(np.full((1, 12), np.nan), toy)


def test_decoder_prefers_the_best_scored_of_the_k_nearest(toy, host):
    """prefer/k_prefer: among each row's k nearest free orbits take the highest score, exactly."""
    idx = orbit_index(toy)
    rng = np.random.default_rng(4)
    z = idx.z[rng.choice(len(idx), 25, replace=False)] + 0.01 * rng.normal(size=(25, 12))
    score = rng.random(len(idx))
    plain = decode(z, toy)
    assert decode(z, toy, prefer=score, k_prefer=1).keys == plain.keys  # k = 1: the nearest orbit
    res = decode(z, toy, prefer=score, k_prefer=5)
    nn, _ = idx.nearest(z, None, 5)
    want = [str(idx.keys[r[np.argmax(score[r])]]) for r in nn]
    assert res.keys == want
    # distinct: every row takes the best of its 5 nearest orbits not taken by an earlier row
    res = decode(z, toy, prefer=score, k_prefer=5, distinct=True)
    taken: set[str] = set()
    for i, (row, key) in enumerate(zip(idx.nearest(z, None, 40)[0], res.keys)):
        free = [r for r in row if str(idx.keys[r]) not in taken][:5]
        assert key == str(idx.keys[free[int(np.argmax(score[free]))]]), i
        taken.add(key)
    with pytest.raises(InvdesignError, match="scores"):
        decode(z, toy, prefer=score[:10], k_prefer=3)


def test_search_decoder_beyond_enumeration(toy, host):
    limits = Limits.make(host, 4, 4)
    assert not is_enumerable(host, limits) and estimate_orbits(host, limits) > 1e6
    assert is_enumerable(host, Limits.make(host, 4, 1, ["V_Mo"]))
    occ = sample_configurations(host, {"V_S": 2, "W_Mo": 1, "Se_S": 1}, 2, np.random.default_rng(2))
    z = toy.embed(occ)
    start = decode(z, toy, Limits.make(host, 3, 1))
    res = decode(z, toy, limits, max_steps=6)
    assert (res.method == "search").all()
    assert validate(res.occ, host, limits).all() and (compositions(res.occ, host).sum(1) == 4).all()
    assert (res.distance < start.distance).all()
    np.testing.assert_allclose(res.distance, np.linalg.norm(toy.embed(res.occ) - z, axis=1), atol=1e-9)


# ---------------------------------------------------------------------- ranking and design
def test_rank_with_diversity():
    z = np.array([[0.0], [0.0], [5.0], [10.0]])
    score = np.array([0.9, 0.89, 0.88, 0.1])
    assert list(rank_with_diversity(score, z, 4, diversity=0)) == [0, 1, 2, 3]
    assert list(rank_with_diversity(score, z, 3, diversity=0.2, scale=1.0)) == [0, 2, 1]


def _window_around(toy, frac: float = 0.3) -> dict:
    y = toy.train_y
    c = np.quantile(y, frac, axis=0)
    return {TARGETS[0]: (c[0] - 0.1, c[0] + 0.1), TARGETS[1]: (c[1] - 0.1, c[1] + 0.1)}


def test_design_flow_mode(toy, host, tmp_path):
    res = design(_window_around(toy), 12, model=toy, mode="flow", seed=3, out=tmp_path / "run")
    c = res.candidates
    assert list(c.columns[: len(LEADING)]) == LEADING
    assert len(c) == 12 and c["canonical_key"].is_unique and (c["source"] == "flow").all()
    assert list(c["rank"]) == list(range(1, 13)) and c["within_limits"].all()
    assert np.isfinite(c["reembed_distance"]).all() and (c["decode_method"] == "exact").all()
    assert canonical_keys(res.occ, host) == list(c["canonical_key"])
    np.testing.assert_allclose(toy.predict(res.occ)[0], c[list(TARGETS)].to_numpy())
    assert res.summary["counts"]["sampled"] == 120 and res.summary["request"]["seed"] == 3
    assert res.summary["request"]["flow_temperature"] == 1.3 and res.summary["request"]["decode_k_prefer"] == 8
    # the flow was asked for this window: most samples decode to configurations inside it
    assert res.summary["counts"]["returned_in_window"] >= 6
    out = tmp_path / "run"
    disk = pd.read_csv(out / "candidates.csv")
    assert list(disk["id"]) == list(c["id"])
    for cid in c["id"]:
        assert (out / "structures" / f"{cid}.cif").is_file() and (out / "poscar" / f"{cid}.vasp").is_file()
    assert (out / "candidates.png").stat().st_size > 1000 and (out / "summary.json").is_file()
    # same seed, same candidates
    again = design(_window_around(toy), 12, model=toy, mode="flow", seed=3)
    assert list(again.candidates["canonical_key"]) == list(c["canonical_key"])


def test_design_exhaustive_is_the_best_of_the_screen(toy, host):
    w = _window_around(toy, 0.6)
    res = design(w, 5, model=toy, mode="exhaustive", diversity=0, exclude=None)
    _, rows, mean, std, p = screen(toy, Window.from_dict(w), Limits.make(host))
    assert len(rows) == 13609
    c = res.candidates
    # p_in_window is the screen's, with the std of extrapolation-flagged candidates inflated (EXTRAPOLATION_POLICY)
    eff = c[[f"{t}_std_effective" for t in TARGETS]].to_numpy()
    np.testing.assert_allclose(c["p_in_window"].to_numpy(), Window.from_dict(w).p_in(c[list(TARGETS)].to_numpy(), eff))
    np.testing.assert_allclose(eff[~c["extrapolation"].to_numpy()], c.loc[~c["extrapolation"], [f"{t}_std" for t in TARGETS]])
    assert (np.diff(c["p_in_window"].to_numpy()) <= 1e-12).all() and c["p_in_window"].max() <= p.max() + 1e-12
    if not c["extrapolation"].iat[0]:
        assert c["p_in_window"].iat[0] == pytest.approx(p.max())
    assert (res.candidates["source"] == "exhaustive").all()
    # excluded keys never come back; auto picks exhaustive for an enumerable space
    top = res.candidates["canonical_key"][0]
    res2 = design(w, 5, model=toy, mode="auto", diversity=0, exclude=[top])
    assert top not in set(res2.candidates["canonical_key"]) and res2.summary["request"]["mode_used"] == "exhaustive"
    rec = generator_recall(toy, Window.from_dict(w), factor=10)
    assert rec["samples"] >= rec["in_window"] and 0 <= rec["recall"] <= 1


def test_design_pool_mode_and_unreachable(toy, host, heldout, tmp_path):
    from invdesign.io import write_structure

    folder = tmp_path / "pool"
    folder.mkdir()
    for i in range(6):
        write_structure(heldout.occ[i], host, folder / f"{heldout.ids[i]}.cif")
    w = _window_around(toy)
    res = design(w, 4, model=toy, pool=[folder], diversity=0)
    c = res.candidates
    assert len(c) == 4 and set(c["id"]) <= set(heldout.ids[:6]) and (c["source"] == "pool").all()
    p_all = Window.from_dict(w).p_in(*toy.predict(heldout.occ[:6]))
    np.testing.assert_allclose(c["p_in_window"].to_numpy(), np.sort(p_all)[::-1][:4], atol=1e-12)
    # a window no configuration can reach: one line and the nearest achievable, by distance
    far = {TARGETS[1]: (50.0, 60.0)}
    for mode in ("exhaustive", "flow"):
        r = design(far, 5, model=toy, mode=mode)
        assert r.message is not None and "out of reach" in r.message and "\n" not in r.message
        d = r.candidates["window_distance"].to_numpy()
        assert (np.diff(d) >= -1e-12).all() and len(r.candidates) == 5
    with pytest.raises(InvdesignError, match="pool file or folder not found"):
        design(w, 4, model=toy, pool=[tmp_path / "missing"])
    with pytest.raises(InvdesignError, match="unknown defect type"):
        design(w, 4, model=toy, types=["V_Q"])


# ---------------------------------------------------------------------- annealing beyond enumeration
def _high_density_window(toy, host, k=(8, 10)):
    from invdesign.generate.anneal import _Moves

    occ = _Moves(host, Limits.make(host, k[1], k[0])).random(np.random.default_rng(1), 64)
    m = toy.predict(occ)[0]
    lo, hi = np.quantile(m, 0.4, axis=0), np.quantile(m, 0.6, axis=0)
    return Window.from_dict({TARGETS[0]: (lo[0], hi[0]), TARGETS[1]: (lo[1], hi[1])})


def test_anneal_harvests_distinct_valid_in_window_states(toy, host):
    from invdesign.generate.anneal import anneal, random_search

    lim = Limits.make(host, 10, 8)
    w = _high_density_window(toy, host)
    a = anneal(toy, w, lim, 12, seed=3, chains=16, max_steps=300)
    assert a.stats["harvested_in_window"] == len(a.keys) == 12
    assert validate(a.occ, host, lim).all()
    assert canonical_keys(a.occ, host) == a.keys and len(set(a.keys)) == 12
    assert w.hits(toy.predict(a.occ)[0]).all()
    assert np.allclose(a.mean, toy.predict(a.occ)[0])
    b = anneal(toy, w, lim, 12, seed=3, chains=16, max_steps=300)
    assert b.keys == a.keys  # seeded
    c = anneal(toy, w, lim, 12, seed=3, chains=16, max_steps=300, exclude=set(a.keys[:5]))
    assert not set(c.keys) & set(a.keys[:5])
    r = random_search(toy, w, lim, 5, seed=0, batch=64, max_evaluations=4096)
    assert validate(r.occ, host, lim).all() and w.hits(r.mean).all()


def test_anneal_falls_back_to_the_nearest_states_when_the_window_is_out_of_reach(toy, host):
    from invdesign.generate.anneal import anneal

    far = Window.from_dict({TARGETS[0]: (50.0, 51.0)})
    a = anneal(toy, far, Limits.make(host, 9, 8), 6, seed=0, chains=8, max_steps=40)
    assert a.stats["harvested_in_window"] == 0 and len(a.keys) == 6
    assert len(set(a.keys)) == 6


def test_design_anneal_mode_and_refusal(toy, host, tmp_path):
    w = _high_density_window(toy, host)
    res = design(w, 8, model=toy, mode="auto", min_defects=8, max_defects=10, seed=1, out=tmp_path / "hd")
    assert res.summary["request"]["mode_used"] == "anneal"
    c = res.candidates
    assert len(c) == 8 and (c["source"] == "anneal").all() and c["within_limits"].all()
    assert c["canonical_key"].is_unique and (c["n_defects"].between(8, 10)).all()
    assert len(list((tmp_path / "hd" / "structures").glob("*.cif"))) == 8
    with pytest.raises(InvdesignError, match="lower -n or --max-defects"):
        design(w, 2000, model=toy, mode="anneal", min_defects=8, max_defects=60, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    with pytest.raises(InvdesignError, match="half"):
        design(w, 5, model=toy, mode="anneal", max_defects=150)
    # flow + decoder at 16-24 defects: over the limit by the measured per-sample decode cost, refused up front
    with pytest.raises(InvdesignError, match="use --mode flow-anneal or --mode auto"):
        design(w, 50, model=toy, mode="flow", min_defects=16, max_defects=24, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------------- the high-density flow and flow-seeded annealing
@pytest.fixture(scope="module")
def toy_hd(toy, host, tmp_path_factory):
    from invdesign.generate.anneal import _Moves
    from invdesign.generate.flow_hd import fit_hd_flow

    occ = _Moves(host, Limits.make(host, 12, 6)).random(np.random.default_rng(5), 160)
    hd = fit_hd_flow(toy, occ, seed=0, config=SMALL_FLOW)
    return hd, hd.save(tmp_path_factory.mktemp("hd") / "flow_hd.pt")


def test_hd_flow_round_trip_starts_and_refusal(toy, toy_hd, host):
    from invdesign.generate.anneal import _Moves, log_p_in
    from invdesign.generate.flow_hd import get_hd_flow

    hd, path = toy_hd
    assert hd.report["n_configurations"] == len(hd.occ) == len(set(canonical_keys(hd.occ, host)))
    loaded = get_hd_flow(toy, path)
    assert np.array_equal(loaded.occ, hd.occ) and loaded.tag == hd.tag
    lim, w = Limits.make(host, 10, 8), _high_density_window(toy, host)
    s = loaded.starts(host, w, lim, 24, seed=1)
    assert s.shape == (24, host.n_sites) and validate(s, host, lim).all()
    assert np.array_equal(s, loaded.starts(host, w, lim, 24, seed=1))  # seeded
    lim2 = Limits.make(host, 10, 8, ["V_S", "W_Mo"])
    assert validate(loaded.starts(host, w, lim2, 24, seed=2), host, lim2).all()
    # the flow's starts lie nearer the window than random configurations of the same counts
    rnd = _Moves(host, lim).random(np.random.default_rng(0), 24)
    lp = [log_p_in(w, *toy.predict(o)).mean() for o in (s, rnd)]
    assert lp[0] > lp[1]
    other = PairCountModel(host, toy.train_occ[:10], seed=1)
    with pytest.raises(InvdesignError, match="refit it with"):
        get_hd_flow(other, path)


def test_design_flow_anneal_valid_distinct_in_limits_and_auto_by_measured_cost(toy, toy_hd, host, monkeypatch):
    import invdesign.generate.design as design_mod

    monkeypatch.setenv("INVDESIGN_FLOW_HD", str(toy_hd[1]))
    w = _high_density_window(toy, host)
    res = design(w, 8, model=toy, mode="flow-anneal", min_defects=8, max_defects=10, seed=1)
    c = res.candidates
    assert len(c) == 8 and (c["source"] == "flow-anneal").all() and c["within_limits"].all()
    assert c["canonical_key"].is_unique and c["n_defects"].between(8, 10).all()
    assert validate(res.occ, host, Limits.make(host, 10, 8)).all()
    assert canonical_keys(res.occ, host) == list(c["canonical_key"])
    assert res.summary["counts"]["harvested_mean_in_window"] == res.summary["counts"]["harvested"]
    again = design(w, 8, model=toy, mode="flow-anneal", min_defects=8, max_defects=10, seed=1)
    assert list(again.candidates["canonical_key"]) == list(c["canonical_key"])
    monkeypatch.setattr(design_mod, "MEASURED_TIME_TO_50", {"anneal": 20.0, "flow-anneal": 10.0, "flow": 120.0})
    auto = design(w, 4, model=toy, mode="auto", min_defects=8, max_defects=10, seed=1)
    assert auto.summary["request"]["mode_used"] == "flow-anneal"
    monkeypatch.setenv("INVDESIGN_FLOW_HD", str(toy_hd[1].parent / "missing.pt"))
    auto = design(w, 4, model=toy, mode="auto", min_defects=8, max_defects=10, seed=1)
    assert auto.summary["request"]["mode_used"] == "anneal"
    assert "flow-anneal skipped" in auto.summary["auto_reason"] and "no high-density flow" in auto.summary["auto_reason"]


def test_design_flow_mode_beyond_enumeration_samples_the_hd_flow(toy, toy_hd, host, monkeypatch):
    monkeypatch.setenv("INVDESIGN_FLOW_HD", str(toy_hd[1]))
    w = Window.from_dict({TARGETS[0]: (0.0, 10.0)})  # wide: every decoded sample is in it (no nearest-window resampling)
    res = design(w, 1, model=toy, mode="flow", min_defects=6, max_defects=7, samples=1, seed=0)
    c = res.candidates
    assert len(c) == 1 and (c["source"] == "flow").all() and c["within_limits"].all() and 6 <= c["n_defects"][0] <= 7
    assert res.summary["counts"]["sampled"] == 1 and (c["decode_method"] == "search").all()  # the local-search decoder (toy: no encoder)


def test_candidates_plot_zooms_onto_the_candidates():
    """The zoom panel of candidates.png: every candidate's one-std bar inside, a near window edge drawn in view,
    a far one (the window much wider than the candidates) left out so they do not collapse into one blob."""
    from invdesign.generate.design import _zoom_range

    v, s = np.array([1.04, 1.05, 1.075]), np.array([0.005, 0.005, 0.005])
    lo, hi = _zoom_range(v, s, np.array([1.0, 3.0]))
    assert lo < 1.0 < 1.035 and 1.08 < hi < 1.3  # the near edge 1.0 in view, the far edge 3.0 not
    assert (hi - lo) < 0.2 * (3.0 - 1.0)
    lo, hi = _zoom_range(np.array([2.0]), np.array([0.0]), np.array([-np.inf, np.inf]))
    assert hi - lo >= 0.02 and lo < 2.0 < hi  # one candidate, no window edge: never a zero-width axis
