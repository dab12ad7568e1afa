"""Every command on every host (issue 22 item 4), on the 2DMD release files of the non-MoS2 hosts:
the host recognised from the structures, the release's own targets as a table oracle (the spin-polarised
gap is ``homo_lumo_gap_min``), campaigns and labels on the packaged host models, each host's chemical
potentials, dn and exports with its own species. Small slices of each set: seconds per test."""

from __future__ import annotations

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
    np.testing.assert_allclose(obs["homo_lumo_gap"], t["homo_lumo_gap_min"])
    assert (tmp_path / "rep" / "hits.png").is_file()
    # a packaged host by name, enumerated, labelled by its own surrogate
    db2 = tmp_path / "p.db"
    assert main(["campaign", "run", "--db", str(db2), "--host", "P", "--oracle", "surrogate", "--max-defects", "2",
                 "--target", "formation_energy_per_site=0.9:1.0", "--budget", "5"]) == 0
    with Campaign.open(db2, readonly=True) as c:
        assert c.host.name == "P-6x6" and c.status()["evaluations"] == 5
