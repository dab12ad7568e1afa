"""Incremental embedding updates == the full exact embedding; the decoder built on them beyond enumeration."""

from __future__ import annotations

import numpy as np
import pytest

from invdesign.embed.encoder import build_encoder, embed_occ
from invdesign.embed.incremental import IncrementalEmbedding, ProductIncrementalEmbedding
from invdesign.embed.tables import encoder_tables
from invdesign.errors import InvdesignError
from invdesign.generate.decoder import Limits, decode, is_enumerable, validate
from invdesign.generate.search import _Space
from invdesign.lattice.canonical import canonical_keys
from invdesign.lattice.enumerate import compositions


class EncModel:
    """A model with a small seeded float64 encoder (what the decoder needs: host, encoder, embed)."""

    def __init__(self, host, width: int = 16, seed: int = 0, three_body: str = "product") -> None:
        self.host = host
        self.encoder = build_encoder(host, dim=12, width=width, seed=seed, three_body=three_body).double().eval()

    def embed(self, occ):
        return embed_occ(self.encoder, occ, self.host)


@pytest.fixture(scope="module")
def enc_model(host):
    return EncModel(host)


@pytest.fixture(scope="module", params=["product", "mlp"])
def any_model(host, request):
    """Both kinds of three-body term (the O(k^2) product, and the MLP triple of older model files)."""
    return EncModel(host, three_body=request.param)


def _random_moves(state: IncrementalEmbedding, host, rng, n: int) -> np.ndarray:
    moves = []
    for r in range(n):
        free = np.setdiff1d(np.arange(host.n_sites), state.sites)
        m = -1 if r == 0 else int(rng.integers(-1, state.k))
        x = -1 if (r == 1 and state.k > 1) else int(rng.choice(free))
        if x < 0 and m < 0:
            m = 0
        if r == 2 and state.k:  # a re-type in place
            m = int(rng.integers(state.k))
            x = int(state.sites[m])
        t = 0
        if x >= 0:
            ts = [i for i, (s, _c) in enumerate(host.defect_types) if s == host.sublattice[x]]
            t = int(rng.choice(ts))
        moves.append((m, x, t))
    return np.array(moves, dtype=np.int64)


def _occ_after(state: IncrementalEmbedding, host, move) -> np.ndarray:
    m, x, t = move
    occ = state.occ()
    if m >= 0:
        occ[state.sites[m]] = host.host_code[state.sites[m]]
    if x >= 0:
        occ[x] = host.defect_types[t][1]
    return occ


@pytest.mark.parametrize("k", [4, 9, 17, 30])
def test_incremental_embedding_equals_the_full_exact_embedding(any_model, host, k):
    enc_model = any_model
    tab = encoder_tables(enc_model.encoder, host)
    rng = np.random.default_rng(k)
    space = _Space(host, tuple(range(len(host.defect_types))))
    occ = space.random(rng, k)
    state = IncrementalEmbedding(enc_model.encoder, host)
    assert isinstance(state, ProductIncrementalEmbedding) == (enc_model.encoder.three_body == "product")
    state.set(occ)
    assert np.array_equal(state.occ(), occ)
    z_full = tab.embed(occ[None])[0]
    scale = np.abs(z_full).max()
    np.testing.assert_allclose(state.z(), z_full, rtol=0, atol=1e-12 * scale)
    if k <= 9:  # and the network itself, evaluated directly
        np.testing.assert_allclose(state.z(), embed_occ(enc_model.encoder, occ[None], host, fast=False)[0], atol=1e-11 * scale)
    for _ in range(3 if k < 20 else 1):
        moves = _random_moves(state, host, rng, 6)
        after = np.array([_occ_after(state, host, mv) for mv in moves])
        want = tab.embed(after)
        np.testing.assert_allclose(state.evaluate(moves), want, rtol=0, atol=1e-12 * scale)
        j = int(rng.integers(len(moves)))
        state.apply(moves[j])
        assert np.array_equal(state.occ(), after[j])
        np.testing.assert_allclose(state.z(), want[j], rtol=0, atol=1e-12 * scale)
    # removals down to nothing stay exact
    while state.k > 1:
        state.apply((int(rng.integers(state.k)), -1, 0))
    np.testing.assert_allclose(state.z(), tab.embed(state.occ()[None])[0], rtol=0, atol=1e-12 * scale)
    with pytest.raises(ValueError, match="already"):
        state.apply((-1, int(state.sites[0]), int(state.types[0])))


def test_screen_is_exact_for_removals_and_cheap_elsewhere(any_model, host):
    rng = np.random.default_rng(3)
    state = IncrementalEmbedding(any_model.encoder, host)
    state.set(_Space(host, (0, 1, 2, 3)).random(rng, 8))
    rem = np.array([(m, -1, 0) for m in range(state.k)])
    np.testing.assert_allclose(state.screen(rem), state.evaluate(rem), atol=1e-10)
    moves = _random_moves(state, host, rng, 8)
    assert state.screen(moves).shape == (8, 12) and np.isfinite(state.screen(moves)).all()
    if any_model.encoder.three_body == "product":  # O(k) per move: the screen is the exact evaluation
        np.testing.assert_array_equal(state.screen(moves), state.evaluate(moves))
    snap = state.copy_state()
    z0 = state.z()
    state.apply(moves[0])
    state.restore(snap)
    np.testing.assert_array_equal(state.z(), z0)


def test_incremental_decoder_round_trip_and_validity(enc_model, host):
    limits = Limits.make(host, 6, 6)
    assert not is_enumerable(host, limits)
    rng = np.random.default_rng(11)
    space = _Space(host, limits.types)
    occ = np.array([space.random(rng, 6) for _ in range(4)])
    z = enc_model.embed(occ)
    res = decode(z, enc_model, limits, max_steps=15, seed=0, search={"exhaustive": 3})  # the screened path
    assert (res.method == "incremental").all()
    assert validate(res.occ, host, limits).all() and res.keys == canonical_keys(res.occ, host)
    np.testing.assert_allclose(res.distance, np.linalg.norm(enc_model.embed(res.occ) - z, axis=1), atol=1e-9)
    # deterministic: the same seed, the same answer
    assert decode(z, enc_model, limits, max_steps=15, seed=0, search={"exhaustive": 3}).keys == res.keys
    # the search improves on its start (the nearest seed-bank configuration)
    from invdesign.generate.search import seed_bank

    _bo, bz = seed_bank(enc_model, space, 6, 6, None, 0)
    start = np.linalg.norm(bz[None] - z[:, None], axis=2).min(axis=1)
    assert (res.distance <= start + 1e-9).all() and (res.distance < start).any()


def test_incremental_decoder_limits_exclusions_and_distinct(enc_model, host):
    limits = Limits.make(host, 9, 7, ["V_S", "W_Mo"])
    rng = np.random.default_rng(2)
    z = enc_model.embed(np.array([_Space(host, limits.types).random(rng, 8) for _ in range(2)]))
    z = np.concatenate([z, z, rng.normal(size=(2, 12)) * 50])
    first = decode(z[:1], enc_model, limits, max_steps=3)
    res = decode(z, enc_model, limits, max_steps=3, distinct=True, exclude=set(first.keys), search={"exhaustive": 3})
    assert validate(res.occ, host, limits).all()
    n = compositions(res.occ, host).sum(1)
    assert ((n >= 7) & (n <= 9)).all()
    assert len(set(res.keys)) == len(z) and first.keys[0] not in res.keys
    with pytest.raises(InvdesignError, match="incremental"):
        decode(z, enc_model, limits, method="nope")
    with pytest.raises(InvdesignError, match="beyond the 64 sites"):  # 66 W on 64 Mo sites: refused with the limits
        decode(z, enc_model, Limits.make(host, 70, 66, ["W_Mo"]))


def _displace(occ: np.ndarray, host, rng, n: int) -> np.ndarray:
    """``occ`` with ``n`` of its defects moved to random free sites of their sublattice."""
    out = occ.copy()
    for s in rng.choice(np.flatnonzero(occ != host.host_code), n, replace=False):
        free = np.flatnonzero((host.sublattice == host.sublattice[s]) & (out == host.host_code))
        x = rng.choice(free)
        out[x], out[s] = out[s], host.host_code[s]
    return out


@pytest.mark.parametrize("k", [4, 6])
def test_round_trip_from_one_move_away(enc_model, host, k):
    """decode(embed(c)) == c up to symmetry when the search starts one defect away from c."""
    limits = Limits.make(host, k, k)
    rng = np.random.default_rng(20 + k)
    space = _Space(host, limits.types)
    occ = np.array([space.random(rng, k) for _ in range(4)])
    start = np.array([_displace(c, host, rng, 1) for c in occ])
    z = enc_model.embed(occ)
    assert (np.linalg.norm(enc_model.embed(start) - z, axis=1) > 1e-3).all()
    res = decode(z, enc_model, limits, max_steps=3, start=start)  # small encoder: exhaustive steepest descent up to 10 defects
    assert res.keys == canonical_keys(occ, host)
    np.testing.assert_allclose(res.distance, 0.0, atol=1e-9)
    with pytest.raises(InvdesignError, match="start"):
        decode(z, enc_model, limits, start=start[:1])


def test_packaged_product_encoder_descends_exhaustively_to_six_defects():
    """The exhaustive-step threshold follows the encoder kind's cost: the packaged product-term encoder
    (O(k) table rows per move) gets 6 defects, the same width with the triple MLP (O(k^2) rows of W^2) 4; at 6
    defects the packaged model's exhaustive descent brings a start one defect away back to c."""
    import copy

    from invdesign.generate.search import exhaustive_max
    from invdesign.model import load_model

    model = load_model()
    h = model.host
    assert exhaustive_max(model.encoder, h) == 6
    mlp = copy.copy(model.encoder)
    mlp.three_body = "mlp"
    assert exhaustive_max(mlp, h) == 4
    limits = Limits.make(h, 6, 6)
    rng = np.random.default_rng(3)
    space = _Space(h, limits.types)
    occ = np.array([space.random(rng, 6) for _ in range(3)])
    start = np.array([_displace(c, h, rng, 1) for c in occ])
    res = decode(model.embed(occ), model, limits, max_steps=24, restarts=1, seed=0, start=start)
    assert res.keys == canonical_keys(occ, h)
