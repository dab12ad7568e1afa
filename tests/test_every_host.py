"""Every command on every host (issue 22 item 4), on the 2DMD release files of the non-MoS2 hosts:
the host recognised from the structures, the release's own targets as a table oracle (the spin-polarised
gap is ``homo_lumo_gap_min``), campaigns and labels on the packaged host models, each host's chemical
potentials, dn and exports with its own species. Small slices of each set: seconds per test."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pandas as pd
import pytest
from conftest import shared_dir

from invdesign.cli import main

SETS = {"GaSe": "gase", "WSe2": "wse2", "BN": "hbn", "P": "bp", "InSe": "inse"}


def release(name: str):
    root = shared_dir() / "data" / f"2dmd-{SETS[name]}-high"
    if not (root / "initial.tar.gz").is_file():
        pytest.skip("2DMD share absent")
    return root


def some_structures(name: str, folder, n: int = 6) -> tuple:
    """The first ``n`` CIFs of a release archive, extracted into ``folder``; (folder, ids)."""
    root = release(name)
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    with tarfile.open(root / "initial.tar.gz") as tar:
        for m in tar:
            if m.isfile() and m.name.endswith(".cif"):
                name_ = m.name.rsplit("/", 1)[-1]
                (folder / name_).write_bytes(tar.extractfile(m).read())
                ids.append(name_[:-4])
                if len(ids) == n:
                    break
    return folder, ids


@pytest.mark.parametrize("name", ["GaSe", "BN"])
def test_label_recognises_the_host_and_reads_the_spin_polarised_release_targets(name, tmp_path):
    root = release(name)
    folder, ids = some_structures(name, tmp_path / "s")
    out = tmp_path / "labels.csv"
    assert main(["label", str(folder), "--oracle", f"table:{root / 'targets.csv.gz'}", "--out", str(out)]) == 0
    got = pd.read_csv(out).set_index("id").loc[ids]
    t = pd.read_csv(root / "targets.csv.gz").set_index("_id").loc[ids]
    np.testing.assert_allclose(got["homo_lumo_gap"], t["homo_lumo_gap_min"])  # the smaller spin channel's gap
    np.testing.assert_allclose(got["formation_energy_per_site"], t["formation_energy_per_site"])
    assert got["canonical_key"].str.startswith(f"{name}-").all()
    # the surrogate is the host's own packaged model, not MoS2's
    out2 = tmp_path / "surrogate.csv"
    assert main(["label", str(folder), "--oracle", "surrogate", "--out", str(out2)]) == 0
    s = pd.read_csv(out2)
    assert s["error"].isna().all() and np.isfinite(s["formation_energy_per_site"]).all()


def test_chgnet_delta_is_refused_on_another_host_in_one_line(tmp_path, capsys):
    folder, _ = some_structures("GaSe", tmp_path / "s", 1)
    assert main(["label", str(folder), "--oracle", "chgnet+delta", "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fitted on MoS2" in err and "chgnet:MU.json" in err
    assert not (tmp_path / "x.csv").exists()


def test_campaign_on_a_release_pool_with_its_targets_as_oracle(tmp_path):
    """No --host: the pool's host (GaSe 6x6) is recognised; the GP works on the GaSe host model's descriptors
    with its predictions as prior; the release's targets.csv.gz is the oracle (gap = homo_lumo_gap_min)."""
    root = release("GaSe")
    folder, ids = some_structures("GaSe", tmp_path / "pool", 40)
    db = tmp_path / "c.db"
    assert main(["campaign", "run", "--db", str(db), "--pool", str(folder), "--oracle", f"table:{root / 'targets.csv.gz'}",
                 "--target", "formation_energy_per_site=1.0:1.3", "--target", "homo_lumo_gap=0.3:0.8",
                 "--batch", "4", "--budget", "12"]) == 0
    from invdesign.campaign import Campaign

    with Campaign.open(db, readonly=True) as c:
        assert c.host.name == "GaSe-6x6" and c.config["host"] == {"host": "builtin:GaSe", "supercell": "6x6"}
        st = c.status()
    assert st["evaluations"] == 12
    assert main(["campaign", "report", "--db", str(db), "--out", str(tmp_path / "rep")]) == 0
    obs = pd.read_csv(tmp_path / "rep" / "observations.csv")
    t = pd.read_csv(root / "targets.csv.gz").set_index("_id").loc[obs["id"]]
    np.testing.assert_allclose(obs["homo_lumo_gap"], t["homo_lumo_gap_min"], rtol=0, atol=5e-5)  # eV: 4 decimals
    assert (tmp_path / "rep" / "hits.png").is_file()
    # a packaged host by name, enumerated, labelled by its own surrogate
    db2 = tmp_path / "p.db"
    assert main(["campaign", "run", "--db", str(db2), "--host", "P", "--oracle", "surrogate", "--max-defects", "2",
                 "--target", "formation_energy_per_site=0.9:1.0", "--budget", "5"]) == 0
    with Campaign.open(db2, readonly=True) as c:
        assert c.host.name == "P-6x6" and c.status()["evaluations"] == 5


@pytest.mark.parametrize("name", list(SETS))
def test_each_hosts_chemical_potentials_come_from_its_release(name):
    """mu_ref is elements.csv's; every named limit lies on the host's stability line (the release's pristine
    energy); re-referencing the release's formation energies to a limit equals recomputing them from the raw
    DFT energies with that limit's mu (exactly); an anion vacancy is cheaper cation-rich."""
    from invdesign.data.dataset import load_dataset
    from invdesign.lattice.stoichiometry import dn_matrix, elements
    from invdesign.synthesis.chempot import host_reference, n_defect_sites, read_mu, rereference_per_site

    root = release(name)
    ds = load_dataset(root)
    host = ds.host
    ref = host_reference(host)
    mu0 = pd.read_csv(root / "elements.csv").set_index("element")["chemical_potential"]
    assert ref["host"] == name and set(ref["mu_ref"]) == set(elements(host))
    assert all(ref["mu_ref"][e] == pytest.approx(mu0[e], abs=1e-12) for e in elements(host))
    pristine = pd.read_csv(root / "initial_structures.csv").set_index("base").loc[name, "energy"]
    comp = host.unit_cell.composition.reduced_composition
    n_fu = host.n_sites / comp.num_atoms
    t = pd.read_csv(root / "targets.csv.gz").set_index("_id").loc[ds.ids]
    d = dn_matrix(ds.occ, host).astype(float)
    n = n_defect_sites(ds.occ, host)
    assert ref["limits"]
    for limit, mu in ref["limits"].items():
        assert sum(v * mu[e.symbol] for e, v in comp.items()) == pytest.approx(pristine / n_fu, abs=1e-9)
        assert all(mu[e] <= mu0[e] + 1e-12 for e in mu)  # never richer than the elemental phase
        chem = read_mu(limit, host)
        got = rereference_per_site(t["formation_energy_per_site"].to_numpy(float), ds.occ, host, chem)
        raw = (t["energy"].to_numpy(float) - pristine - d @ np.array([mu[e] for e in elements(host)])) / n
        np.testing.assert_allclose(got, raw, rtol=0, atol=1e-8)
    if len(comp) == 2:
        cation, anion = (e.symbol for e in comp)
        one = np.zeros((1, host.n_sites), dtype=host.host_code.dtype) + host.host_code
        one[0, int(np.flatnonzero(host.sublattice == host.sublattices.index(anion))[0])] = host.species_code["Vac"]
        rich = {lim: rereference_per_site([1.0], one, host, read_mu(lim, host))[0] for lim in ref["limits"]}
        assert rich[f"{cation}-rich"] < rich[f"{anion}-rich"]  # V_anion is cheaper where its element is poor


def test_design_plan_and_exports_use_the_hosts_own_species_and_mu(tmp_path):
    """design --pool on GaSe under Ga-rich with every export: summary.json states GaSe's reference and limit,
    the exports name GaSe's species only (no Mo/S/W leaking from MoS2), candidate.json's linear formula gives
    back the formation energy under the mu used."""
    folder, _ = some_structures("GaSe", tmp_path / "pool", 12)
    out = tmp_path / "d"
    assert main(["design", "--pool", str(folder), "--target", "formation_energy_per_site=0.5:1.5", "-n", "3",
                 "--mu", "Ga-rich", "--export", "vasp,qe,json", "--out", str(out), "--full-precision"]) == 0
    summ = json.loads((out / "summary.json").read_text())
    cp = summ["chemical_potentials"]
    assert cp["host"] == "GaSe" and set(cp["mu_ref"]) == {"Ga", "Se", "In", "S"} and cp["used"]["name"] == "Ga-rich"
    assert set(cp["limits"]) == {"Ga-rich", "Se-rich"}
    c = pd.read_csv(out / "candidates.csv")
    assert {"dn_Ga", "dn_Se", "dn_In", "dn_S"} <= set(c.columns) and not any(k in c.columns for k in ("dn_Mo", "dn_W"))
    allowed = {"Ga", "Ga_d", "Se", "In", "In_d", "S"}
    for cid in c["id"]:
        folder = out / "export" / str(cid)
        assert set((folder / "vasp" / "POTCAR.spec").read_text().split()) <= allowed
        pw = (folder / "qe" / "pw.in").read_text()
        assert "Ga.pbe.UPF" in pw and "Mo.pbe.UPF" not in pw and "W.pbe.UPF" not in pw
        rec = json.loads((folder / "candidate.json").read_text())
        fe = rec["formation_energy"]
        mu = rec["chemical_potentials_used"]["mu_eV_per_atom"]
        row = c.set_index("id").loc[cid]
        per_site = (fe["constant_eV"] + sum(fe["coefficients"][e] * mu[e] for e in mu)) / fe["n_defects"]
        assert per_site == pytest.approx(row["formation_energy_per_site"], abs=1e-9)


def test_design_modes_on_a_host_model(tmp_path, capsys):
    """auto screens every orbit where the space is enumerable (1-3 defects), with the host model; the
    spin-polarised moment rides along; flow modes are refused in one line (total_mag windows:
    tests/test_moment_window.py)."""
    out = tmp_path / "d"
    assert main(["design", "--host", "InSe", "--target", "formation_energy_per_site=0.9:1.2", "-n", "8",
                 "--min-defects", "3", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    c = pd.read_csv(out / "candidates.csv")
    assert s["request"]["mode_used"] == "exhaustive" and s["counts"]["orbits_screened"] > 1000
    assert len(c) == 8 and c["canonical_key"].nunique() == 8 and (c["n_defects"] == 3).all()
    assert (c["p_in_window"] >= 0.5).all() and (c["total_mag"] >= 0).all() and (c["total_mag_std"] > 0).all()
    assert (c["source"] == "exhaustive").all() and not s["notes"]
    capsys.readouterr()
    for extra, words in ((["--mode", "flow"], "has no flow"),):
        assert main(["design", "--host", "InSe", "--target", "formation_energy_per_site=0.9:1.2", "-n", "2",
                     "--out", str(tmp_path / "x"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0] and not (tmp_path / "x").exists()


def test_a_folder_mixing_hosts_is_refused_in_one_line_naming_the_other_host(tmp_path, capsys):
    folder, _ = some_structures("BN", tmp_path / "mix", 2)
    some_structures("GaSe", folder, 1)
    assert main(["predict", str(folder), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wrong cell" in err[0] and "6x6 GaSe" in err[0] and "one host per run" in err[0]
    assert not (tmp_path / "p.csv").exists()


def test_a_host_model_file_designs_and_runs_campaigns(tmp_path):
    """--model F.npz (what invdesign train --out F.npz writes) on design, campaigns and the surrogate oracle."""
    from invdesign.predict.host_serving import host_model_resource

    path = tmp_path / "gase.npz"
    path.write_bytes(host_model_resource("GaSe").read_bytes())
    out = tmp_path / "d"
    assert main(["design", "--model", str(path), "--target", "formation_energy_per_site=1.0:1.2", "-n", "3",
                 "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["host"] == "GaSe-6x6"
    db = tmp_path / "c.db"
    assert main(["campaign", "run", "--db", str(db), "--host", "GaSe", "--model", str(path), "--max-defects", "2",
                 "--oracle", f"surrogate:{path}", "--target", "formation_energy_per_site=1.0:1.2", "--budget", "4"]) == 0


def test_commands_that_need_the_mos2_embedding_refuse_other_hosts_in_one_line(tmp_path, capsys):
    from invdesign.predict.host_serving import host_model_resource

    folder, _ = some_structures("GaSe", tmp_path / "s", 2)
    npz = tmp_path / "gase.npz"
    npz.write_bytes(host_model_resource("GaSe").read_bytes())
    cases = [
        (["embed", str(folder), "--out", str(tmp_path / "e.csv")], "invdesign train --data DIR --out F.pt"),
        (["plot", "umap", "--model", str(npz), "--out", str(tmp_path / "u.png")], "embedding model (.pt"),
        (["benchmark", "--data", str(release("GaSe")), "--out", str(tmp_path / "b"), "--no-baselines"], "bench_hosts.py"),
    ]
    for argv, words in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], argv


def test_a_high_density_pool_is_ranked_on_its_own_range(tmp_path):
    """design --pool without --max-defects ranks a release pool (3-18 defects) by p_in_window: the 3-defect
    generation default no longer pushes every larger structure below the 3-defect ones."""
    folder, _ = some_structures("GaSe", tmp_path / "pool", 30)
    out = tmp_path / "d"
    assert main(["design", "--pool", str(folder), "--target", "formation_energy_per_site=1.3:1.5", "--target",
                 "homo_lumo_gap=0.5:0.9", "-n", "30", "--diversity", "0", "--out", str(out)]) == 0
    c = pd.read_csv(out / "candidates.csv")
    assert len(c) == 30 and c["within_limits"].all() and (c["n_defects"] > 3).any()
    assert c["p_in_window"].iloc[0] >= 0.05  # a window the pool reaches: ranked by p_in_window (else by distance)
    assert (np.diff(c["p_in_window"].to_numpy()) <= 1e-12).all() and c["n_defects"].iloc[0] > 3
    # an explicit limit still applies
    assert main(["design", "--pool", str(folder), "--target", "formation_energy_per_site=1.0:1.3", "-n", "30",
                 "--max-defects", "6", "--out", str(tmp_path / "e")]) == 0
    e = pd.read_csv(tmp_path / "e" / "candidates.csv")
    assert (e["within_limits"] == (e["n_defects"] <= 6)).all() and not e["within_limits"].all()


def test_python_api_serves_other_hosts_as_the_cli_does(tmp_path):
    import invdesign
    from invdesign.lattice.hosts import packaged_host
    from invdesign.predict.host_serving import predictor_for
    from invdesign.synthesis import plan_design, read_mu, with_mu

    folder, ids = some_structures("BN", tmp_path / "s", 5)
    p = invdesign.predict(str(folder))
    assert sorted(p["id"]) == sorted(ids) and p["formation_energy_reference"].str.contains("hbn").all()
    assert {"total_mag", "total_mag_std"} <= set(p.columns)
    r = invdesign.design({"formation_energy_per_site": (4.0, 6.0)}, n=3, pool=[str(folder)])
    assert r.host.name == "BN-8x8" and r.candidates["within_limits"].all()
    host = packaged_host("BN")
    mu = read_mu("N-rich", host)
    m = with_mu(predictor_for(host), mu)
    res = plan_design(invdesign.design({"formation_energy_per_site": (4.0, 6.0)}, n=3, model=m, min_defects=3), m, mu,
                      export=["json"], out=tmp_path / "run")
    assert res.summary["chemical_potentials"]["used"]["name"] == "N-rich"
    assert (tmp_path / "run" / "export" / res.candidates["id"].iat[0] / "candidate.json").is_file()


def test_train_a_host_model_from_the_cli_and_serve_it(tmp_path, capsys):
    """invdesign train --data DIR --out F.npz on another host's structures with their DFT targets (a folder with
    targets.csv): the model file is written, says which radius its pair expansion chose and which loss its gap
    trees kept, predicts the same structures as the file it wrote, and a second run refuses to overwrite it."""
    from invdesign.predict.defect_env import GAP_LOSSES, RADII_ENERGY, HostModel

    folder, ids = some_structures("GaSe", tmp_path / "s", 48)
    t = pd.read_csv(release("GaSe") / "targets.csv.gz")
    t[t["_id"].isin(ids)].to_csv(folder / "targets.csv", index=False)
    out = tmp_path / "gase.npz"
    assert main(["train", "--data", str(folder), "--out", str(out)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    m = HostModel.load(out)
    assert m.meta["n_train"] == 48 and m.radius_ce in RADII_ENERGY and f"within {m.radius_ce:g} A" in said
    assert m.meta["gap_trees_loss"] in GAP_LOSSES and "GaSe" in m.meta["header"]["host"]["name"]
    pred = tmp_path / "p.csv"
    assert main(["predict", str(folder), "--model", str(out), "--out", str(pred)]) == 0
    p = pd.read_csv(pred).set_index("id").loc[ids]
    mu, _, _ = m.predict(m.train_occ)
    assert np.isfinite(p["homo_lumo_gap"]).all() and (p["homo_lumo_gap"] >= 0).all()
    assert np.allclose(np.sort(p["formation_energy_per_site"]), np.sort(mu[:, 0]), atol=6e-5)  # the CSV keeps 4 decimals
    before = out.read_bytes()
    assert main(["train", "--data", str(folder), "--out", str(out)]) == 2 and out.read_bytes() == before
