"""invdesign train / embed / predict / benchmark / plot umap, the Model file and the Python API."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from invdesign.cli import main
from invdesign.data.dataset import TARGETS
from invdesign.io import write_structure
from invdesign.lattice.canonical import apply_op

torch.set_num_threads(1)

TINY = """
[train]
epochs = 1
width = 16
batch = 64
orbit_batch = 64
max_orbit_defects = 2
ce_members = 2
ce_width = 32
ce_epochs = 5
z_members = 2
z_width = 16
z_epochs = 5
gap_members = 2
gap_iter = 20

[flow]
train_set = "train"
max_epochs = 3
hidden = 16
n_layers = 2
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory, dataset, host):
    """A small 2DMD-layout folder (initial/*.cif + targets.csv) from the share (synthetic targets without it)."""
    root = tmp_path_factory.mktemp("small2dmd")
    (root / "initial").mkdir()
    idx = np.arange(0, len(dataset), max(1, len(dataset) // 160))[:160]
    sub = dataset.subset(idx)
    for i, o in zip(sub.ids, sub.occ):
        write_structure(o, host, root / "initial" / f"{i}.cif")
    if "homo_lumo_gap" in sub.targets:
        t = pd.DataFrame({"_id": sub.ids, **{c: sub.targets[c] for c in TARGETS}})
    else:
        rng = np.random.default_rng(0)
        k = (sub.occ != host.host_code).sum(1)
        t = pd.DataFrame({"_id": sub.ids, TARGETS[0]: 2.0 + 0.1 * k + rng.normal(0, 0.01, len(k)), TARGETS[1]: rng.uniform(0.1, 1.8, len(k))})
    t.to_csv(root / "targets.csv", index=False)
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, folder):
    out = tmp_path_factory.mktemp("model") / "tiny.pt"
    cfg = out.parent / "tiny.toml"
    cfg.write_text(TINY)
    assert main(["train", "--data", str(folder), "--out", str(out), "--config", str(cfg), "--seed", "1"]) == 0
    return out


def test_train_writes_a_loadable_model_with_metadata(tiny_model, folder):
    from invdesign.model import Model

    m = Model.load(tiny_model)
    meta = m.meta
    assert meta["split"]["seed"] == 0 and meta["seed"] == 1 and meta["embedding_dim"] == 12
    assert meta["data"]["fingerprint"] and meta["host"]["n_ops"] == 768
    assert set(meta["metrics"]) == {"ridge_z", "poly_z", "ensemble_z", "ensemble_ce", "ridge_ce", "gap_gbt", "best"}
    assert set(meta["serving"]) == set(TARGETS) and meta["serving"]["homo_lumo_gap"] == "gap_gbt"
    assert all(np.isfinite(v) for h in meta["metrics"].values() for s in h.values() for v in s.values())
    assert m.train_occ.shape[0] == meta["split"]["train"] and m.train_y.shape == (meta["split"]["train"], 2)
    # `invdesign train` also fits the conditional flow (settings from the [flow] table)
    assert m.extras["flow"]["config"]["max_epochs"] == 3 and m.extras["flow"]["config"]["train_set"] == "train"


def test_training_is_seeded(tiny_model, folder, tmp_path):
    from invdesign.model import Model

    out = tmp_path / "again.pt"
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    assert main(["train", "--data", str(folder), "--out", str(out), "--config", str(cfg), "--seed", "1"]) == 0
    a, b = Model.load(tiny_model), Model.load(out)
    occ = a.train_occ[:20]
    assert np.allclose(a.embed(occ), b.embed(occ))
    assert np.allclose(a.predict(occ)[0], b.predict(occ)[0])


def test_embed_and_predict_csv_contracts(tiny_model, folder, tmp_path):
    files = sorted((folder / "initial").glob("*.cif"))[:7]
    emb, pred = tmp_path / "e.csv", tmp_path / "p.csv"
    assert main(["embed", *map(str, files), "--out", str(emb), "--model", str(tiny_model)]) == 0
    e = pd.read_csv(emb, dtype={"id": str})
    assert list(e.columns) == ["id"] + [f"z{i}" for i in range(12)]
    assert e["id"].tolist() == [f.stem for f in files]
    assert main(["predict", *map(str, files), "--out", str(pred), "--model", str(tiny_model)]) == 0
    p = pd.read_csv(pred, dtype={"id": str})
    assert list(p.columns[:9]) == ["id", "formation_energy_per_site", "homo_lumo_gap", "formation_energy_per_site_std",
                                   "homo_lumo_gap_std", "extrapolation", "extrapolation_reason", "note", "homo_lumo_gap_validated"]
    assert {"dn_Mo", "dn_S", "dn_W", "dn_Se", "defects", "mu"} <= set(p.columns)  # synthesis bookkeeping (issue 13)
    num = p.columns[1:5]
    assert (p["formation_energy_per_site_std"] > 0).all() and p[num].notna().all().all()
    assert p["homo_lumo_gap_validated"].dtype == bool  # True/False per row (meaning tested on the packaged model)
    assert p["homo_lumo_gap"].between(0, 2.0, inclusive="neither").all()


def test_packaged_default_model_without_model_option(folder, tmp_path, host):
    files = sorted((folder / "initial").glob("*.cif"))[:3]
    out = tmp_path / "p.csv"
    assert main(["predict", *map(str, files), "--out", str(out)]) == 0
    p = pd.read_csv(out)
    assert len(p) == 3 and p["homo_lumo_gap"].between(0, 2.0, inclusive="neither").all()


def test_extrapolation_is_flagged(tiny_model, tmp_path, host, capsys):
    from invdesign.lattice.enumerate import sample_configurations

    occ = sample_configurations(host, {"V_S": 3, "W_Mo": 2}, 1, 0)[0]
    write_structure(occ, host, tmp_path / "five.cif")
    assert main(["predict", str(tmp_path / "five.cif"), "--out", str(tmp_path / "p.csv"), "--model", str(tiny_model)]) == 0
    err = capsys.readouterr().err
    assert "outside the training domain" in err and "5 defects" in err


def test_errors_are_one_line(tiny_model, tmp_path, folder, capsys):
    f = str(sorted((folder / "initial").glob("*.cif"))[0])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    assert main(["predict", f, "--out", str(tmp_path / "p.csv"), "--model", str(bad)]) == 2
    assert main(["embed", f, "--out", str(tmp_path / "p.txt"), "--model", str(tiny_model)]) == 2
    assert main(["predict", f, "--out", str(tmp_path / "p.csv"), "--model", str(tmp_path / "missing.pt")]) == 2
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepoch = 3\n")
    assert main(["train", "--data", str(folder), "--out", str(tmp_path / "m.pt"), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("invdesign: error:") for line in err)
    assert "unknown training setting" in err[-1]
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "m.pt").exists()


def test_model_roundtrip_and_extras(tiny_model, tmp_path, host):
    from invdesign.model import Model, load_model

    m = load_model(tiny_model)
    assert load_model(tiny_model) is m
    m2 = Model(m.host, m.encoder, m.heads, dict(m.meta), m.train_occ, m.train_y, {"flow": {"w": torch.ones(3)}})
    m2.save(tmp_path / "x.pt")
    m3 = Model.load(tmp_path / "x.pt")
    assert torch.equal(m3.extras["flow"]["w"], torch.ones(3))
    occ = apply_op(m.train_occ[:10], host, np.arange(10) * 70)
    assert np.allclose(m3.embed(occ), m.embed(m.train_occ[:10]), atol=1e-6)
    mean, std = m3.predict_embedding(m3.embed(occ))
    assert mean.shape == std.shape == (10, 2)


def test_python_api(tiny_model, folder, host):
    import invdesign
    from invdesign.lattice.config import config_to_structure

    files = sorted((folder / "initial").glob("*.cif"))[:2]
    e = invdesign.embed([str(f) for f in files], model=tiny_model)
    assert e["id"].tolist() == [f.stem for f in files]
    m = invdesign.load_model(tiny_model)
    occ = m.train_occ[:2]
    p = invdesign.predict(occ, model=m)
    p2 = invdesign.predict([config_to_structure(o, host) for o in occ], model=m)
    assert np.allclose(p[list(TARGETS)].to_numpy(), p2[list(TARGETS)].to_numpy())
    assert list(p.columns)[:5] == ["id", *TARGETS, *(f"{t}_std" for t in TARGETS)]


def test_plot_umap(tiny_model, tmp_path):
    out = tmp_path / "u.png"
    assert main(["plot", "umap", "--out", str(out), "--model", str(tiny_model), "--configs", "3", "--images", "5", "--background", "150"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_benchmark_command(tiny_model, folder, tmp_path, capsys):
    import json

    out = tmp_path / "bench"
    assert main(["benchmark", "--data", str(folder), "--out", str(out), "--model", str(tiny_model), "--max-train", "80"]) == 0
    res = json.loads((out / "benchmark.json").read_text())
    methods = [r["method"] for r in res["rows"]]
    assert methods[:4] == ["Bag of Bonds", "Coulomb Matrix", "SNN embeddings", "SNN embeddings + polynomial features"]
    assert "Best head (ours, serves predict)" in methods and res["model"]["fingerprint_match"]
    assert "no data" in (out / "benchmark.md").read_text()
    assert main(["benchmark", "--data", str(folder), "--out", str(out), "--high-density", str(tmp_path / "nope")]) == 2
