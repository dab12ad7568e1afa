"""The invariant encoder: exact invariance over all host operations, injectivity, training, checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invdesign.embed.checks import class_separation, equivalence_accuracy, orbit_spread
from invdesign.embed.encoder import PreparedBatch, build_encoder, embed_occ, encode
from invdesign.embed.geometry import defect_cloud, pair_features, point_op_representatives, triple_index
from invdesign.errors import InvdesignError
from invdesign.lattice.canonical import apply_op, canonical_keys, key_to_occ
from invdesign.lattice.enumerate import enumerate_orbits, sample_configurations

torch.set_num_threads(1)


class _Wrap:
    """A model-like object around a bare encoder (what the checks need: host, embed)."""

    def __init__(self, enc, host):
        self.encoder, self.host = enc, host

    def embed(self, occ):
        return embed_occ(self.encoder, occ, self.host)


@pytest.fixture(scope="module")
def orbits(host):
    return enumerate_orbits(host, 3)


@pytest.fixture(scope="module")
def packaged():
    from invdesign.model import load_model

    return load_model()


def test_point_operations_are_coset_representatives(host):
    ops = point_op_representatives(host)
    assert len(ops) == 12 and ops[0] == 0
    # every operation is a representative composed with a pure translation
    f = host.frac_coords
    trans = []
    for p in host.perms.astype(int):
        d = np.mod(f[p] - f + 1e-9, 1.0)
        if np.allclose(d, d[0], atol=1e-6):
            trans.append(p)
    assert len(trans) == host.n_ops // 12


def test_triple_index_and_periodic_pair_features(host):
    a, b = triple_index(3)
    assert len(a) == 6 and len(set(zip(a.tolist(), b.tolist()))) == 6
    assert len(triple_index(2)[0]) == 0
    sites = np.array([[0, 9, 70]])
    types = np.array([[1, 1, 3]])
    x = pair_features(sites, types, host)
    assert x.shape[:3] == (1, 12, 6) and np.isfinite(x).all()


@pytest.mark.parametrize("kind", ["product", "mlp"])
def test_invariance_over_all_768_operations_random_init(host, orbits, kind):
    """Exactness by architecture: an untrained encoder is already invariant under every operation."""
    enc = build_encoder(host, seed=3, three_body=kind)
    rng = np.random.default_rng(0)
    pick = np.concatenate([np.flatnonzero(orbits.n_defects == k)[:2] for k in (1, 2)] + [rng.choice(np.flatnonzero(orbits.n_defects == 3), 4)])
    occ = np.concatenate([orbits.occ[pick], sample_configurations(host, {"V_S": 2, "W_Mo": 2, "Se_S": 1}, 1, rng)])
    spread = orbit_spread(_Wrap(enc, host), occ)
    assert spread.max() < 1e-5


@pytest.mark.parametrize("kind", ["product", "mlp"])
def test_chiral_triangles_are_separated(host, kind):
    """Mirror-related triangles that pair-orbit labels cannot tell apart get different embeddings."""
    a = key_to_occ("MoS2-8x8:0=Vac,1=Vac,9=Vac", host)
    b = key_to_occ("MoS2-8x8:0=Vac,1=Vac,56=Vac", host)
    assert canonical_keys(np.stack([a, b]), host)[0] != canonical_keys(np.stack([a, b]), host)[1]
    def pair_labels(sites):
        return sorted(int(host.pair_orbits[i, j]) for i in sites for j in sites if i != j)

    assert pair_labels([0, 1, 9]) == pair_labels([0, 1, 56])  # pair orbits alone cannot tell them apart
    enc = build_encoder(host, seed=0, three_body=kind)
    z = embed_occ(enc, np.stack([a, b]), host)
    spread = orbit_spread(_Wrap(enc, host), np.stack([a, b])).max()
    assert np.linalg.norm(z[0] - z[1]) > 1e3 * spread


def test_packaged_embedding_is_invariant_and_injective_on_all_orbits(host, orbits, packaged):
    z = packaged.embed(orbits.occ)
    assert z.shape == (len(orbits), 12) and np.isfinite(z).all()
    rng = np.random.default_rng(1)
    sample = rng.choice(len(orbits), 12, replace=False)
    spread = orbit_spread(packaged, orbits.occ[sample]).max()
    sep = class_separation(z, threshold=spread)
    assert sep["collisions"] == 0
    assert spread < 1e-3 * sep["min_distance"], (spread, sep["min_distance"])


def test_equivalence_recognition_on_held_out_pairs(host, dataset, packaged):
    from invdesign.data.dataset import split_indices

    test = split_indices(dataset.ids, seed=0)["test"][:150]
    res = equivalence_accuracy(packaged, dataset.occ[test], dataset.occ, threshold=1e-5, seed=0)
    assert res["negatives"] > 0 and res["accuracy"] == 1.0
    assert res["max_positive_distance"] < 1e-5 < res["min_negative_distance"]


def test_prepared_batch_select_with_repeats(host):
    rng = np.random.default_rng(2)
    occ = np.concatenate([sample_configurations(host, {"V_S": k}, 3, rng) for k in (1, 2, 3)])
    enc = build_encoder(host, seed=1)
    b = PreparedBatch(occ, host)
    with torch.no_grad():
        full = encode(enc, b)
        sub = encode(enc, b.select(np.array([8, 0, 8, 4])))
    assert torch.allclose(sub, full[[8, 0, 8, 4]])


def test_bad_occupancies(host):
    with pytest.raises(InvdesignError):
        defect_cloud(np.zeros((2, 10), np.uint8), host)
    occ = host.host_code.copy()
    occ[0] = host.species_code["Se"] if host.sublattice[0] == host.sublattices.index("Mo") else host.species_code["W"]
    with pytest.raises(InvdesignError):
        defect_cloud(occ[None], host)


def test_contrastive_training_tiny(host, dataset):
    from invdesign.embed.train import train_encoder

    rng = np.random.default_rng(0)
    occ = dataset.occ[:200]
    y = np.stack([rng.normal(size=200), rng.normal(size=200)], 1) if "homo_lumo_gap" not in dataset.targets else dataset.y()[:200]
    orbits2 = enumerate_orbits(host, 2)
    enc, hist = train_encoder(host, occ, y, orbits2.occ, {"epochs": 2, "orbit_batch": 64, "batch": 100, "width": 16}, seed=0)
    assert len(hist["loss"]) == 2 and np.isfinite(hist["loss"]).all()
    assert max(hist["pos"]) < 1e-8  # positives coincide by construction
    z = embed_occ(enc, apply_op(occ[:5], host, np.array([0, 5, 100, 400, 767])), host)
    assert np.allclose(z, embed_occ(enc, occ[:5], host), atol=1e-5)


@pytest.mark.parametrize("kind", ["product", "mlp"])
def test_table_encoder_equals_the_network_at_many_defects(host, kind):
    """The tabulated evaluation (pair classes, split triple layer / one [Q|f|g] table) is the same function, 1-9 defects."""
    from invdesign.embed.encoder import build_encoder, embed_occ
    from invdesign.embed.tables import encoder_tables, pair_classes

    enc = build_encoder(host, dim=6, width=16, seed=3, three_body=kind).double()
    rng = np.random.default_rng(5)
    occ = np.repeat(host.host_code[None], 12, axis=0)
    for r in range(len(occ)):
        k = 1 + r % 9
        for s in rng.choice(host.n_sites, k, replace=False):
            opts = [c for sub, c in host.defect_types if sub == host.sublattice[s]]
            occ[r, s] = rng.choice(opts)
    z_net = embed_occ(enc, occ, host, fast=False)
    z_tab = embed_occ(enc, occ, host)
    assert np.abs(z_net - z_tab).max() <= 1e-12 * max(1.0, np.abs(z_net).max())
    cls, rep = pair_classes(host)
    # a lattice translation maps every pair onto a pair of the same class; a rotation does not
    f = host.frac_coords
    shift = np.mod(f[host.perms.astype(np.int64)] - f[None] + 1e-6, 1.0)
    is_translation = np.ptp(shift, axis=1).max(axis=1) < 1e-4
    off = ~np.eye(host.n_sites, dtype=bool)
    t = host.perms[np.flatnonzero(is_translation)[1]].astype(np.int64)
    assert np.array_equal(cls[t[:, None], t[None, :]][off], cls[off])
    r = host.perms[np.flatnonzero(~is_translation)[0]].astype(np.int64)
    assert not np.array_equal(cls[r[:, None], r[None, :]][off], cls[off])
    assert len(rep) == cls.max() + 1
    # cache is rebuilt when the weights change
    tab = encoder_tables(enc, host)
    with torch.no_grad():
        enc.pair[0].bias += 0.1
    assert encoder_tables(enc, host) is not tab
    assert np.abs(embed_occ(enc, occ, host, fast=False) - embed_occ(enc, occ, host)).max() <= 1e-12 * max(1.0, np.abs(z_net).max())


def test_product_term_is_the_sum_over_distinct_triples(host):
    """The factorised three-body term equals sum over distinct (i, j, l) of L(f(e_ij) * g(e_il)) (brute force),
    and model files without ``three_body`` load as the original MLP triple kind, embedding identically."""
    from invdesign.embed.encoder import InvariantEncoder
    from invdesign.embed.geometry import pair_features, pair_index

    enc = build_encoder(host, dim=6, width=16, seed=4, three_body="product", rank=5).double()
    rng = np.random.default_rng(7)
    sites = np.sort(rng.choice(host.n_sites, 6, replace=False))[None]
    types = np.array([[0, 1, 2, 3, 0, 1]]) % len(host.defect_types)
    e = torch.as_tensor(pair_features(sites, types, host))  # (1, P, 30, F)
    pi, pj = pair_index(6)
    num = {(int(a), int(b)): n for n, (a, b) in enumerate(zip(pi, pj))}
    with torch.no_grad():
        f, g = enc.tri_f(e), enc.tri_g(e)
        brute = sum(enc.tri_l(f[:, :, num[(i, j)]] * g[:, :, num[(i, m)]]) for i in range(6) for j in range(6) for m in range(6)
                    if len({i, j, m}) == 3)
        F = f.reshape(1, 12, 6, 5, -1).sum(3)
        G = g.reshape(1, 12, 6, 5, -1).sum(3)
        fact = enc.tri_l((F * G).sum(2) - (f * g).sum(2))
    assert torch.allclose(fact, brute, rtol=0, atol=1e-12 * float(brute.abs().max()))
    old = build_encoder(host, dim=6, width=16, seed=4, three_body="mlp").double()
    cfg = old.config()
    assert "three_body" not in cfg and enc.config()["three_body"] == "product" and enc.config()["rank"] == 5
    again = InvariantEncoder(**cfg).double()
    again.load_state_dict(old.state_dict())
    assert again.three_body == "mlp"
    occ = sample_configurations(host, {"V_S": 2, "W_Mo": 2}, 3, rng)
    assert np.array_equal(embed_occ(again, occ, host), embed_occ(old, occ, host))
    with pytest.raises(ValueError, match="three_body"):
        InvariantEncoder(6, 10, three_body="cubic")


def test_product_tables_equal_the_network_at_48_defects(host):
    """High density, where only the O(k^2) product term is affordable: the tabulated evaluation equals the
    network evaluated directly, and a random host operation leaves the embedding unchanged (float64 round-off)."""
    from invdesign.generate.anneal import _Moves
    from invdesign.generate.decoder import Limits

    enc = build_encoder(host, dim=6, width=16, seed=5, three_body="product", rank=4).double()
    rng = np.random.default_rng(48)
    occ = np.concatenate([_Moves(host, Limits.make(host, k, k)).random(rng, 2) for k in (30, 48)])
    z_net = embed_occ(enc, occ, host, fast=False)
    z_tab = embed_occ(enc, occ, host)
    scale = np.abs(z_net).max()
    assert np.abs(z_net - z_tab).max() <= 1e-12 * scale
    img = apply_op(occ, host, rng.integers(1, host.n_ops, size=len(occ)))
    assert not np.array_equal(img, occ)
    assert np.abs(embed_occ(enc, img, host) - z_tab).max() <= 1e-12 * scale
