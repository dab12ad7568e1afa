"""`invdesign design` and `invdesign decode` end to end with a small real Model saved to a file.

The model is an :class:`invdesign.model.Model` with a freshly initialised (exactly invariant)
encoder, heads fitted for a few epochs on the train split and a small conditional flow: the
real classes, save/load and CLI plumbing, at test speed.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from invdesign.cli import main
from invdesign.data.dataset import TARGETS, split_indices
from invdesign.generate.design import LEADING

torch.set_num_threads(1)


def _targets(dataset) -> np.ndarray:
    """Targets (eV) of the share, or smooth synthetic ones for generated configurations."""
    if "formation_energy_per_site" in dataset.targets.columns:
        return dataset.y(TARGETS)
    comp = dataset.composition.astype(float)
    return np.column_stack([comp @ np.array([0.4, 2.5, 0.3, 1.8]) / comp.sum(1), 1.8 - comp @ np.array([0.1, 0.3, 0.05, 0.25])])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, dataset):
    from invdesign.embed.encoder import build_encoder, embed_occ
    from invdesign.generate.flow import fit_flow, store_design_tables
    from invdesign.model import Model
    from invdesign.predict.features import cluster_counts, poly2
    from invdesign.predict.heads import EnsembleHead, RidgeHead

    host = dataset.host
    sp = split_indices(dataset.ids, seed=0)
    tr, va = sp["train"], sp["val"]
    Y = _targets(dataset)
    enc = build_encoder(host, seed=0)
    z = embed_occ(enc, dataset.occ, host)
    X = cluster_counts(dataset.occ, host)
    k = np.maximum(dataset.n_defects, 1).astype(float)
    Yt = Y.copy()
    Yt[:, 0] *= k
    heads = {
        "ridge_z": RidgeHead().fit(z[tr], Y[tr], z[va], Y[va]),
        "poly_z": RidgeHead().fit(poly2(z)[tr], Y[tr], poly2(z)[va], Y[va]),
        "ensemble_z": EnsembleHead(2, 32, 15, seed=0).fit(z[tr], Y[tr], z[va], Y[va]),
        "ensemble_ce": EnsembleHead(2, 64, 40, seed=0).fit(X[tr], Yt[tr], X[va], Yt[va]),
    }
    meta = {"version": "test-small", "targets": list(TARGETS), "embedding_dim": 12}
    model = Model(host, enc, heads, meta, dataset.occ[tr], Y[tr])
    n = dataset.n_defects
    cfg = {"n_layers": 2, "hidden": 24, "max_epochs": 20, "patience": 5}
    model.extras["flow"] = fit_flow(z[tr], Y[tr], n[tr], z[va], Y[va], n[va], seed=0, config=cfg).to_state()
    store_design_tables(model)  # what attach_flow does: orbit and training embeddings saved with the model
    path = tmp_path_factory.mktemp("model") / "small.pt"
    model.save(path)
    return path


def _window_args(model_file, dataset) -> list[str]:
    from invdesign.model import load_model

    m = load_model(model_file)
    mean, _ = m.predict(dataset.occ[:200])
    c = np.median(mean, axis=0)
    return [
        "--target", f"formation_energy_per_site={c[0] - 0.15:.4f}:{c[0] + 0.15:.4f}",
        "--target", f"homo_lumo_gap={c[1] - 0.15:.4f}:{c[1] + 0.15:.4f}",
    ]


def test_design_cli_end_to_end(model_file, dataset, tmp_path):
    out = tmp_path / "run"
    args = ["design", *_window_args(model_file, dataset), "-n", "8", "--out", str(out), "--model", str(model_file), "--mode", "flow"]
    assert main(args) == 0
    c = pd.read_csv(out / "candidates.csv")
    assert list(c.columns[: len(LEADING)]) == LEADING
    assert LEADING == ["rank", "id", "canonical_key", "source", "formation_energy_per_site", "homo_lumo_gap",
                       "formation_energy_per_site_std", "homo_lumo_gap_std", "p_in_window"]
    assert len(c) == 8 and c["canonical_key"].is_unique and list(c["rank"]) == list(range(1, 9))
    assert (c["source"] == "flow").all() and c["within_limits"].all() and (c["n_defects"] <= 3).all()
    assert ((c["p_in_window"] >= 0) & (c["p_in_window"] <= 1)).all() and (c["homo_lumo_gap_std"] > 0).all()
    # structures: one CIF and one POSCAR per candidate, and both read back to the same classes
    assert sorted(p.name for p in (out / "structures").iterdir()) == sorted(f"{i}.cif" for i in c["id"])
    assert sorted(p.name for p in (out / "poscar").iterdir()) == sorted(f"{i}.vasp" for i in c["id"])
    for folder in ("structures", "poscar"):
        assert main(["canon", str(out / folder), "--out", str(tmp_path / "keys.csv"), "--overwrite"]) == 0
        keys = pd.read_csv(tmp_path / "keys.csv").set_index("id")["canonical_key"]
        assert [keys[i] for i in c["id"]] == list(c["canonical_key"])
    s = json.loads((out / "summary.json").read_text())
    assert s["request"]["n"] == 8 and s["request"]["seed"] == 0 and s["model"]["version"] == "test-small"
    assert s["counts"]["returned"] == 8 and "total_s" in s["timings_s"]
    assert (out / "candidates.png").read_bytes()[:4] == b"\x89PNG"
    # exhaustive mode with limits: only V_S/Se_S, at most 2 defects
    out2 = tmp_path / "exh"
    args = ["design", *_window_args(model_file, dataset), "-n", "5", "--out", str(out2), "--model", str(model_file),
            "--types", "V_S,Se_S", "--max-defects", "2", "--mode", "auto"]
    assert main(args) == 0
    c2 = pd.read_csv(out2 / "candidates.csv")
    assert (c2["source"] == "exhaustive").all() and (c2["n_defects"] <= 2).all()
    assert not c2["composition"].str.contains("Mo").any()
    num = c2.drop(columns=["extrapolation_reason"]).select_dtypes("number")  # (that one is text, empty: no reason)
    # no NaN in any numeric column (issue 28: reembed_distance was NaN in every exhaustive row)
    assert np.isfinite(num.to_numpy(float)).all(), num.columns[~np.isfinite(num).all()].tolist()


def test_design_cli_pool_mode(model_file, dataset, tmp_path):
    from invdesign.io import write_structure

    te = split_indices(dataset.ids, seed=0)["test"][:6]
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in te:
        write_structure(dataset.occ[i], dataset.host, pool / f"{dataset.ids[i]}.vasp")
    out = tmp_path / "run"
    assert main(["design", *_window_args(model_file, dataset), "-n", "4", "--out", str(out), "--model", str(model_file), "--pool", str(pool)]) == 0
    c = pd.read_csv(out / "candidates.csv", dtype={"id": str})
    assert len(c) == 4 and (c["source"] == "pool").all() and set(c["id"]) <= {str(dataset.ids[i]) for i in te}
    assert (c["p_in_window"].diff().dropna() <= 1e-12).all()  # sorted (diversity only breaks near-ties)


def test_design_cli_unreachable_window(model_file, tmp_path, capsys):
    out = tmp_path / "far"
    args = ["design", "--target", "homo_lumo_gap=40:41", "-n", "3", "--out", str(out), "--model", str(model_file)]
    assert main(args) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "out of reach" in ln]
    assert len(lines) == 1 and "nearest achievable" in lines[0]
    c = pd.read_csv(out / "candidates.csv")
    assert len(c) == 3 and (c["window_distance"].diff().dropna() >= -1e-12).all()
    assert json.loads((out / "summary.json").read_text())["reachable"] is False


@pytest.mark.parametrize(
    "target, extra, message",
    [
        ("homo_lumo_gap=1.0-2.0", [], "expected NAME=LO:HI"),
        ("homo_lumo_gap=2.0:1.0", [], "LO 2 is above HI 1"),
        ("band_gap=1.0:2.0", [], "unknown target 'band_gap'"),
        ("homo_lumo_gap=1.0:2.0", ["--pool", "does/not/exist"], "pool file or folder not found"),
        ("homo_lumo_gap=1.0:2.0", ["--mode", "magic"], "--mode must be one of"),
        ("homo_lumo_gap=1.0:2.0", ["--types", "V_Q"], "unknown defect type"),
    ],
)
def test_design_cli_bad_input(model_file, tmp_path, capsys, target, extra, message):
    out = tmp_path / "bad"
    code = main(["design", "--target", target, "-n", "3", "--out", str(out), "--model", str(model_file), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_decode_cli_round_trip(model_file, dataset, tmp_path, capsys):
    from invdesign.model import load_model

    m = load_model(model_file)
    te = split_indices(dataset.ids, seed=0)["test"][:40]
    z = m.embed(dataset.occ[te])
    df = pd.DataFrame(z, columns=[f"z{i}" for i in range(z.shape[1])])
    df.insert(0, "id", [str(i) for i in dataset.ids[te]])
    df.to_csv(tmp_path / "F.csv", index=False)
    out = tmp_path / "dec"
    assert main(["decode", str(tmp_path / "F.csv"), "--out", str(out), "--model", str(model_file)]) == 0
    dec = pd.read_csv(out / "decoded.csv", dtype={"id": str})
    assert list(dec.columns[:2]) == ["id", "canonical_key"] and list(dec["id"]) == list(df["id"])
    assert list(dec["canonical_key"]) == [dataset.keys[i] for i in te]
    assert (dec["embedding_distance"] < 1e-5).all() and (dec["method"] == "exact").all()
    assert sorted(p.stem for p in out.glob("*.cif")) == sorted(df["id"])
    # the orbit table saved with the model is this model's embedding of the enumerated orbits
    from invdesign.generate.decoder import orbit_index, stored_table

    idx = orbit_index(m)
    stored = stored_table(m, "orbit_z", len(idx), 3, tuple(range(4)))
    assert stored is not None
    np.testing.assert_allclose(stored[:50], m.embed(idx.occ[:50]), atol=1e-9)
    # bad inputs: a missing column, a non-numeric value -> one line, exit 2, nothing written
    df.drop(columns=["z3"]).to_csv(tmp_path / "G.csv", index=False)
    bad = df.astype({"z0": object})
    bad.loc[2, "z0"] = "abc"
    bad.to_csv(tmp_path / "H.csv", index=False)
    capsys.readouterr()
    for name, msg in (("G.csv", "missing z3"), ("H.csv", "row 3"), ("nope.csv", "not found")):
        assert main(["decode", str(tmp_path / name), "--out", str(tmp_path / "o2"), "--model", str(model_file)]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1
        assert not (tmp_path / "o2").exists()


def test_design_cli_check_with_corrected_chgnet(model_file, dataset, tmp_path, capsys):
    """--check chgnet: the top candidates relaxed (2 FIRE steps here), corrected CHGNet energy, re-ranked."""
    pytest.importorskip("chgnet")
    from invdesign.io import write_structure

    te = split_indices(dataset.ids, seed=0)["test"][:4]
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in te:
        write_structure(dataset.occ[i], dataset.host, pool / f"{dataset.ids[i]}.cif")
    out = tmp_path / "run"
    args = ["design", "--target", "formation_energy_per_site=0:5", "-n", "3", "--out", str(out), "--model", str(model_file),
            "--pool", str(pool)]
    assert main([*args, "--check", "nonsense"]) == 2 and not out.exists()
    assert "--check 'nonsense'" in capsys.readouterr().err
    assert main([*args, "--check", "chgnet", "--check-top", "2", "--check-steps", "2", "--check-executor", "inline"]) == 0
    c = pd.read_csv(out / "candidates.csv", dtype={"id": str})
    s = json.loads((out / "summary.json").read_text())["check"]
    top = c[c["check_status"] != "unchecked"]
    assert len(top) == 2 and s["checked"] == 2 and "corrected CHGNet" in s["reference"]
    assert top["check_formation_energy_per_site"].between(0, 5).all() == top["check_in_window"].all()
    assert (top["check_formation_energy_per_site_std"] > 0).all()
    assert top["check_max_displacement"].between(1e-4, 0.7).all() and top["check_same_configuration"].all()
    assert (top["check_status"] == "pass").sum() == s["status"]["pass"]
    assert c["rank"].tolist() == [1, 2, 3] and sorted(c["model_rank"]) == [1, 2, 3]
    assert sorted(p.stem for p in (out / "relaxed").iterdir()) == sorted(top["id"])
