"""Larger supercells (12x12 MoS2) with the packaged 8x8-trained model: invariance, transfer, CLI end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from invdesign.cli import main
from invdesign.lattice.host import HostLattice


@pytest.fixture(scope="module")
def big():
    return HostLattice.from_unit_cell("builtin:MoS2", "12x12")


@pytest.fixture(scope="module")
def model():
    from invdesign.model import load_model

    return load_model()


@pytest.fixture(scope="module")
def moved(model, big):
    from invdesign.predict.transfer import on_host

    return on_host(model, big)


def _random(host, n, lo, hi, seed):
    from invdesign.generate.anneal import _Moves
    from invdesign.generate.decoder import Limits

    return _Moves(host, Limits.make(host, hi, lo)).random(np.random.default_rng(seed), n)


def test_own_host_is_the_model_itself(model):
    from invdesign.commands.common import place_model as cli_place_model
    from invdesign.predict.placement import place_model, requested_host
    from invdesign.predict.transfer import on_host

    assert on_host(model, HostLattice.default()) is model
    assert place_model(model, requested_host("builtin:MoS2", "8x8")) is model
    assert place_model(model, requested_host(None, "8x8")) is model
    assert place_model(model, requested_host(None, None)) is model
    assert cli_place_model is place_model  # the commands use the library's


def test_cell_map_geometry_and_symmetry(big):
    """Mapped pairs have the same separation as their 8x8 pair, which is its unique minimum image;
    the set of pairs beyond the range is invariant under the big cell's group."""
    from invdesign.lattice.transfer import cell_map, min_images

    small = HostLattice.default()
    cm = cell_map(big, small)
    ii, jj = np.nonzero(cm.reach)
    _, d8, u8 = min_images(small)
    si, sj = cm.small_i[ii, jj], cm.small_j[ii, jj]
    assert np.allclose(d8[si, sj], big.min_image_distance[ii, jj], atol=1e-9)
    assert u8[si, sj].all()
    assert (big.sublattice[ii] == small.sublattice[si]).all() and (big.sublattice[jj] == small.sublattice[sj]).all()
    assert 12.0 < cm.range_A < 13.5 and 0 < cm.reach.mean() < 1
    assert not cm.reach.diagonal().any()
    rng = np.random.default_rng(0)
    P = big.perms.astype(np.int64)
    for g in rng.choice(len(P), 12, replace=False):
        assert np.array_equal(cm.reach[np.ix_(P[g], P[g])], cm.reach)
    # every pair orbit of the big cell within range falls into one 8x8 pair orbit
    po = small.pair_orbits[si, sj]
    df = pd.DataFrame({"big": big.pair_orbits[ii, jj], "small": po})
    assert (df.groupby("big")["small"].nunique() == 1).all()


def test_invariance_under_big_cell_symmetry(moved, big):
    """Random 12x12 configurations and random operations of the 12x12 group: embeddings equal to float
    round-off, canonical keys equal, predictions identical."""
    from invdesign.lattice.canonical import canonical_keys

    occ = _random(big, 8, 2, 8, seed=3)
    rng = np.random.default_rng(4)
    P = big.perms.astype(np.int64)
    img = np.empty_like(occ)
    for r, g in enumerate(rng.integers(1, len(P), len(occ))):
        img[r, P[g]] = occ[r]
    assert not np.array_equal(img, occ)
    z, zi = moved.embed(occ), moved.embed(img)
    assert np.abs(z - zi).max() < 1e-10
    assert canonical_keys(occ, big) == canonical_keys(img, big)
    (m, s), (mi, si) = moved.predict(occ), moved.predict(img)
    assert np.allclose(m, mi, atol=1e-12) and np.allclose(s, si, atol=1e-12)
    assert (m[:, 1] > 0).all() and (m[:, 1] < 2.0).all()


def test_local_clusters_transfer_exactly(model, moved):
    """An 8x8 training configuration unwrapped into 12x12: with every pair within the range the embedding
    and the predicted means and stds equal the 8x8 ones; pairs beyond the range widen the std."""
    occ8 = np.asarray(model.train_occ[:120])
    occb = moved.cell_map.unwrap(occ8)
    nb = moved.beyond_pairs(occb)
    inside = nb == 0
    assert inside.sum() > 20 and (~inside).sum() > 5
    z8, zb = model.embed(occ8[inside]), moved.embed(occb[inside])
    assert np.abs(z8 - zb).max() < 1e-10
    (m8, s8), (mb, sb) = model.predict(occ8), moved.predict(occb)
    assert np.array_equal(m8[inside], mb[inside]) and np.array_equal(s8[inside], sb[inside])
    # pairs beyond the range: no trained term; each widens the std by the far-shell term magnitude of the 8x8 heads
    from invdesign.predict.serving import Predictor, n_defects
    from invdesign.predict.transfer import far_term_magnitudes

    m0, s0 = Predictor.predict(moved, occb)  # the heads on the mapped counts, std not widened
    assert np.array_equal(m0, mb)
    w = far_term_magnitudes(model)
    assert (w > 0).all() and (w < 0.1).all()
    k = n_defects(occb, moved.host)
    assert np.allclose(sb[:, 0], np.hypot(s0[:, 0], nb * w[0] / k))
    assert np.allclose(sb[:, 1], np.hypot(s0[:, 1], nb * w[1]))
    assert (sb[~inside] > s0[~inside]).all()
    reasons = moved.extrapolation(occb[:5])
    assert all(r.startswith("cell 12x12 larger than trained 8x8; ") for r in reasons)
    assert f"{nb[0]} pair(s) beyond the trained range" in reasons[0]


def test_cli_predict_8x8_unchanged(tmp_path, model):
    """--host builtin:MoS2 --supercell 8x8 gives byte-identical output to no host option."""
    from invdesign.io import write_structure

    folder = tmp_path / "s"
    folder.mkdir()
    for i in range(4):
        write_structure(model.train_occ[i], model.host, folder / f"x{i}.cif")
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["predict", str(folder), "--out", str(a)]) == 0
    assert main(["predict", str(folder), "--out", str(b), "--host", "builtin:MoS2", "--supercell", "8x8"]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_cli_predict_embed_design_12x12(tmp_path, big, capsys):
    from invdesign.io import write_structure

    folder = tmp_path / "s12"
    folder.mkdir()
    occ = _random(big, 3, 1, 5, seed=7)
    for i, o in enumerate(occ):
        write_structure(o, big, folder / f"c{i}.cif")
    pred, emb, keys = tmp_path / "p.csv", tmp_path / "z.csv", tmp_path / "k.csv"
    assert main(["predict", str(folder), "--supercell", "12x12", "--out", str(pred)]) == 0
    df = pd.read_csv(pred)
    assert len(df) == 3 and df["extrapolation"].all()
    assert df["extrapolation_reason"].str.startswith("cell 12x12 larger than trained 8x8").all()
    assert ((df["homo_lumo_gap"] > 0) & (df["homo_lumo_gap"] < 2.0)).all()
    assert (df["formation_energy_per_site_std"] > 0).all()
    from importlib import resources

    cif = str(resources.files("invdesign.resources") / "MoS2_unit_cell.cif")  # the documented spelling: --host CIF
    pred2 = tmp_path / "p2.csv"
    assert main(["predict", str(folder), "--host", cif, "--supercell", "12x12", "--out", str(pred2)]) == 0
    assert pred2.read_bytes() == pred.read_bytes()
    assert main(["embed", str(folder), "--supercell", "12x12", "--out", str(emb)]) == 0
    assert pd.read_csv(emb).shape == (3, 13)
    assert main(["canon", str(folder), "--supercell", "12x12", "--out", str(keys)]) == 0
    assert pd.read_csv(keys)["canonical_key"].str.startswith("MoS2-12x12:").all()
    out = tmp_path / "d"
    rc = main(["design", "--target", "formation_energy_per_site=1.5:2.0", "-n", "3", "--min-defects", "4",
               "--max-defects", "5", "--supercell", "12x12", "--mode", "anneal", "--out", str(out)])
    assert rc == 0
    c = pd.read_csv(out / "candidates.csv")
    assert len(c) == 3 and c["canonical_key"].str.startswith("MoS2-12x12:").all()
    assert c["n_defects"].between(4, 5).all() and c["extrapolation"].all()
    assert c["extrapolation_reason"].str.startswith("cell 12x12 larger than trained 8x8; ").all()
    assert len(list((out / "structures").glob("*.cif"))) == 3


def test_cli_refusals(tmp_path, capsys):
    rc = main(["design", "--target", "formation_energy_per_site=1.5:2.0", "-n", "2", "--supercell", "12x12",
               "--mode", "flow", "--out", str(tmp_path / "f")])
    assert rc == 2 and "--mode flow" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()
    (tmp_path / "x.cif").write_text("data_x\n")
    rc = main(["predict", str(tmp_path / "x.cif"), "--supercell", "4x4", "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "smaller than the trained" in err and err.count("\n") == 1
    assert not (tmp_path / "p.csv").exists()


def test_campaign_on_12x12_pool(tmp_path, big, moved):
    """A campaign over 12x12 structures: model features (the embedding on 12x12) and the surrogate oracle
    predict with the model served on the campaign's host."""
    from invdesign.campaign.campaign import Campaign
    from invdesign.campaign.target import Target
    from invdesign.io import write_structure

    folder = tmp_path / "pool"
    folder.mkdir()
    occ = _random(big, 6, 1, 4, seed=11)
    for i, o in enumerate(occ):
        write_structure(o, big, folder / f"p{i}.cif")
    mean, _ = moved.predict(occ)
    lo, hi = float(np.sort(mean[:, 0])[1]) - 1e-6, float(np.sort(mean[:, 0])[3]) + 1e-6  # 3 of the 6 inside
    target = Target(window={"formation_energy_per_site": (lo, hi)})
    with Campaign.create(tmp_path / "c.db", target, [folder], supercell="12x12", oracle="surrogate", batch=2,
                         budget=4, seed=0) as c:
        st = c.run(executor="inline", progress=False)
        assert c.host.name == "MoS2-12x12"
    assert st["evaluations"] == 4 and st["hits"] >= 1
    assert st["best"]["canonical_key"].startswith("MoS2-12x12:")


def test_mean_only_path_on_a_larger_cell(moved, big):
    """The arrangement populations' mean-only formation energy on 12x12 is the served mean (mapped counts)."""
    from invdesign.synthesis.arrangements import arrangement_stats

    occ = _random(big, 6, 4, 8, seed=9)
    mean, std = moved.predict_target(occ, "formation_energy_per_site")
    fast, none = moved.predict_target(occ, "formation_energy_per_site", with_std=False)
    assert none is None and std.shape == mean.shape
    np.testing.assert_allclose(fast, mean, rtol=0, atol=1e-12)
    st = arrangement_stats(moved, occ[:2], temperature=1000.0, samples=200)
    assert np.isfinite(st.population).all() and (st.population > 0).all()


def test_no_high_density_correction_on_a_larger_cell(moved, big):
    """The correction toward the 8x8 high-density reference is not applied on 12x12 (other densities), and says so."""
    prior, corr, status = moved.fe_terms()
    assert corr is None and "not applied on 12x12" in status
    occ = _random(big, 3, 5, 8, seed=11)
    assert not any("correction toward" in r for r in moved.fe_reference(occ))


@pytest.mark.parametrize("kind", ["product", "mlp"])
def test_transferred_tables_both_three_body_kinds(big, kind):
    """Both encoder kinds on 12x12: local clusters embed as on 8x8, and the embedding is invariant under the
    big cell's group (the product kind drops far legs through zero table rows, the MLP kind through its cutoff)."""
    from invdesign.embed.encoder import build_encoder
    from invdesign.embed.tables import encoder_tables
    from invdesign.embed.transfer import transferred_tables
    from invdesign.lattice.transfer import cell_map

    small = HostLattice.default()
    enc = build_encoder(small, dim=6, width=16, seed=2, three_body=kind).double().eval()
    tt = transferred_tables(enc, small, big)
    occ8 = _random(small, 40, 2, 5, seed=8)
    cm = cell_map(big, small)
    occb = cm.unwrap(occ8)
    inside = cm.beyond_pairs(occb) == 0
    assert inside.sum() > 5 and (~inside).sum() > 5
    z8, zb = encoder_tables(enc, small).embed(occ8[inside]), tt.embed(occb[inside])
    assert np.abs(z8 - zb).max() < 1e-12 * np.abs(z8).max()
    rng = np.random.default_rng(1)
    P = big.perms.astype(np.int64)
    occ = _random(big, 6, 6, 12, seed=9)
    img = np.empty_like(occ)
    for r, g in enumerate(rng.integers(1, len(P), len(occ))):
        img[r, P[g]] = occ[r]
    z, zi = tt.embed(occ), tt.embed(img)
    assert np.abs(z - zi).max() < 1e-12 * np.abs(z).max()
