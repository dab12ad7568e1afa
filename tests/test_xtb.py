"""The ``xtb`` oracles: real GFN1-xTB single points (tblite) on a 3x3 MoS2 cell (27 atoms, ~1 s each)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tblite")

from invdesign.campaign.oracles import XtbDeltaOracle, XtbOracle, make_oracle, xtb_gap_features  # noqa: E402
from invdesign.campaign.xtb import homo_lumo, run, run_structure  # noqa: E402
from invdesign.cli import main  # noqa: E402
from invdesign.errors import InvdesignError  # noqa: E402
from invdesign.io import write_structure  # noqa: E402
from invdesign.lattice.config import config_to_structure  # noqa: E402
from invdesign.lattice.host import HostLattice  # noqa: E402


@pytest.fixture(scope="module")
def host() -> HostLattice:
    return HostLattice.from_unit_cell("builtin:MoS2", (3, 3))


def _with(host: HostLattice, sub: str, species: str) -> np.ndarray:
    occ = host.host_code.copy()
    occ[np.flatnonzero(host.host_code == host.species_code[sub])[0]] = host.species_code[species]
    return occ


@pytest.fixture(scope="module")
def labels(host) -> dict[str, dict]:
    orc = XtbOracle(host=host)
    cases = {"pristine": host.host_code.copy(), "V_S": _with(host, "S", "Vac"), "V_Mo": _with(host, "Mo", "Vac"),
             "W_Mo": _with(host, "Mo", "W")}
    return {k: orc.label(v) for k, v in cases.items()}


def test_gaps_follow_the_defect_chemistry(labels):
    """A semiconducting host; vacancies put states in the gap (V_Mo deepest), an isovalent W barely moves it."""
    g = {k: v["homo_lumo_gap"] for k, v in labels.items()}
    assert 1.2 < g["pristine"] < 2.5
    assert 0.0 < g["V_Mo"] < g["V_S"] < g["pristine"] - 0.3
    assert abs(g["W_Mo"] - g["pristine"]) < 0.2
    for v in labels.values():
        assert v["homo"] < v["lumo"] and v["cpu_s"] > 0 and v["blas"]
        assert np.isnan(v["formation_energy_per_site"])  # no chemical potentials given


def test_energies_are_consistent(host, labels):
    """Taking an atom out of the layer into vacuum costs bond energy (a few eV per atom, more for Mo with six
    bonds than for S with three); two far W_Mo substitutions cost about twice one."""
    assert labels["pristine"]["raw_energy"] == 0.0
    box = 15.0 * np.eye(3)  # Angstrom: an isolated atom in a periodic box
    atom = {el: run([z], np.zeros((1, 3)), box)["energy"] for el, z in (("S", 16), ("Mo", 42))}
    cost_s = labels["V_S"]["raw_energy"] + atom["S"]
    cost_mo = labels["V_Mo"]["raw_energy"] + atom["Mo"]
    assert 1.0 < cost_s < 12.0 and cost_s < cost_mo < 30.0
    occ = _with(host, "Mo", "W")
    mo = np.flatnonzero(host.host_code == host.species_code["Mo"])
    far = max(mo[1:], key=lambda j: host.supercell.get_distance(int(mo[0]), int(j)))
    occ[far] = host.species_code["W"]
    two = XtbOracle(host=host).label(occ)["raw_energy"]
    assert two == pytest.approx(2 * labels["W_Mo"]["raw_energy"], abs=0.3)


def test_formation_energy_with_chemical_potentials(host, labels, tmp_path):
    """``xtb:MU.json``: E_f = (E - E_pristine + sum n_e mu_e) / n_def, the CHGNet oracle's convention."""
    mu = {"Mo": -60.0, "S": -100.0, "W": -6.0, "Se": 0.0}
    (tmp_path / "mu.json").write_text(json.dumps({"mu": mu}))
    orc = make_oracle(f"xtb:{tmp_path / 'mu.json'}", host)
    assert orc.mu == mu
    d = orc.label(_with(host, "S", "Vac"))
    assert d["formation_energy_per_site"] == pytest.approx(labels["V_S"]["raw_energy"] + mu["S"], abs=1e-6)
    out = orc.evaluate(np.stack([_with(host, "S", "Vac"), _with(host, "Mo", "W")]), ["a", "b"])
    assert out.shape == (2, 2) and np.all(np.isfinite(out))
    assert out[1, 0] == pytest.approx(labels["W_Mo"]["raw_energy"] + mu["Mo"] - mu["W"], abs=1e-6)


def test_plain_xtb_gives_no_formation_energy_to_a_campaign(host):
    with pytest.raises(InvdesignError, match="gives no formation_energy_per_site"):
        make_oracle("xtb", host, needed=["formation_energy_per_site"])
    make_oracle("xtb", host, needed=["homo_lumo_gap"])  # a gap window alone is fine


def test_bad_blas_path_is_refused_in_one_line(host, monkeypatch):
    monkeypatch.setenv("INVDESIGN_XTB_BLAS", "/nonexistent/libopenblas.so")
    with pytest.raises(InvdesignError, match="INVDESIGN_XTB_BLAS"):
        make_oracle("xtb", host)


def test_bundled_blas_gives_the_same_numbers(host, labels, monkeypatch):
    """Preloading OpenBLAS changes the speed, not the result."""
    monkeypatch.setenv("INVDESIGN_XTB_BLAS", "bundled")
    r = run_structure(config_to_structure(_with(host, "S", "Vac"), host))
    assert r["blas"] == "bundled"
    assert r["gap"] == pytest.approx(labels["V_S"]["homo_lumo_gap"], abs=1e-4)


def test_homo_lumo_counts_electrons():
    eps = np.array([-3.0, -2.0, -1.0, 0.5, 2.0])
    assert homo_lumo(eps, 4) == (-2.0, -1.0)
    assert homo_lumo(eps, 6) == (-1.0, 0.5)
    assert homo_lumo(eps, 5) == (-2.0, -1.0)  # odd: the singly occupied level, the smaller spin-channel gap
    with pytest.raises(InvdesignError):
        homo_lumo(eps, 12)


def test_delta_correction_and_std(host, tmp_path):
    """``xtb+delta:FILE`` applies its features' weights to the raw gap; the std grows off the training data."""
    k = xtb_gap_features(host.host_code[None], host, np.zeros(1), "types+gap").shape[1]
    w = np.zeros(k)
    w[0] = 0.1  # +0.1 eV everywhere
    d = {"host": "MoS2", "mu": {"Mo": -60.0, "S": -100.0, "W": -6.0, "Se": 0.0}, "fe_sigma": 0.05,
         "gap": {"recipe": "types+gap", "weights": w.tolist(), "Ainv": (0.01 * np.eye(k)).tolist(), "s2": 0.0025}}
    f = tmp_path / "delta.json"
    f.write_text(json.dumps(d))
    orc = make_oracle(f"xtb+delta:{f}", host, needed=["formation_energy_per_site", "homo_lumo_gap"])
    assert isinstance(orc, XtbDeltaOracle)
    occ = np.stack([host.host_code, _with(host, "S", "Vac")])
    g, s = orc.gap_correction(occ, np.array([1.7, 0.9]))
    assert g == pytest.approx([1.8, 1.0])
    assert np.all(s > 0.05) and s[1] > s[0]  # a defect adds feature mass, hence variance
    bad = dict(d, gap=dict(d["gap"], weights=[0.0]))
    f.write_text(json.dumps(bad))
    with pytest.raises(InvdesignError, match="weights"):
        make_oracle(f"xtb+delta:{f}", host)


def test_label_cli_writes_gaps(host, tmp_path, labels):
    d = tmp_path / "s"
    d.mkdir()
    write_structure(_with(host, "S", "Vac"), host, d / "vs.cif")
    write_structure(_with(host, "Mo", "W"), host, d / "w.cif")
    out = tmp_path / "xtb.csv"
    assert main(["label", str(d), "--oracle", "xtb", "--out", str(out), "--supercell", "3x3",
                 "--executor", "thread:2"]) == 0
    df = pd.read_csv(out).set_index("id")
    assert set(df.index) == {"vs", "w"} and df["error"].isna().all()
    assert df.loc["vs", "homo_lumo_gap"] == pytest.approx(labels["V_S"]["homo_lumo_gap"], abs=1e-4)
    assert (df["cpu_s"] > 0).all()


def test_check_needs_both_targets_in_window(host, labels, tmp_path):
    """``design --check xtb+delta``: a candidate passes when its checked formation energy AND gap are in the window."""
    from invdesign.campaign.check import check_configurations, check_oracle

    k = xtb_gap_features(host.host_code[None], host, np.zeros(1), "types").shape[1]
    w = np.zeros(k)
    w[0] = 0.1
    f = tmp_path / "delta.json"
    f.write_text(json.dumps({"host": "MoS2", "mu": {"Mo": -60.0, "S": -100.0, "W": -6.0, "Se": 0.0}, "fe_sigma": 0.05,
                             "gap": {"recipe": "types", "weights": w.tolist(), "Ainv": np.zeros((k, k)).tolist(),
                                     "s2": 0.01}}))
    orc = check_oracle(f"xtb+delta:{f}", host)
    g = labels["V_S"]["homo_lumo_gap"] + 0.1
    occ = np.stack([_with(host, "S", "Vac"), _with(host, "Mo", "W")])
    table, relaxed = check_configurations(occ, ["vs", "w"], orc, (-1e3, 1e3), executor="inline",
                                          gap_window=(g - 0.05, g + 0.05))
    t = table.set_index("id")
    assert relaxed == {}
    assert t.loc["vs", "check_status"] == "pass" and t.loc["w", "check_status"] == "out_of_window"
    assert t.loc["vs", "check_homo_lumo_gap"] == pytest.approx(g, abs=1e-4)
    assert t.loc["vs", "check_homo_lumo_gap_std"] == pytest.approx(0.1)
    assert 0.3 < t.loc["vs", "check_p_in_window"] < 0.45  # +-0.5 std of a Gaussian: 0.383
    assert t.loc["w", "check_p_in_window"] < 1e-6
    with pytest.raises(InvdesignError, match="xtb\\+delta"):
        check_oracle("xtb", host)


def test_pristine_energy_is_cached_per_host(host, labels, monkeypatch):
    """A fresh oracle copy (a new pool worker) reads the pristine energy from the cache instead of recomputing it."""
    orc = XtbOracle(host=host)

    def boom(occ_row):
        raise AssertionError("recomputed the pristine host")

    monkeypatch.setattr(orc, "singlepoint", boom)
    assert orc.pristine_energy() == pytest.approx(labels["pristine"]["energy"], abs=1e-8)
    other = XtbOracle(host=HostLattice.from_unit_cell("builtin:MoS2", (2, 2)))
    monkeypatch.setattr(other, "singlepoint", boom)
    with pytest.raises(AssertionError, match="recomputed"):
        other.pristine_energy()


def test_packaged_correction_loads_and_is_calibrated_on_its_own_terms():
    """The packaged xtb+delta (benchmarks/bench_xtb_gap.py --write-resource) applies to 8x8 MoS2 and refuses GaSe."""
    orc = make_oracle("xtb+delta", needed=["formation_energy_per_site", "homo_lumo_gap"])
    h = orc.host
    occ = np.stack([h.host_code, h.host_code])
    occ[1, np.flatnonzero(h.host_code == h.species_code["S"])[:6]] = h.species_code["Vac"]
    g, s = orc.gap_correction(occ, np.array([1.78, 0.5]))
    assert np.all(np.isfinite(g)) and np.all(g >= 0) and np.all((s > 0.01) & (s < 1.0))
    assert set(orc.mu) == {"Mo", "S", "W", "Se"} and 0 < orc.fe_sigma < 1.0
    with pytest.raises(InvdesignError, match="does not apply"):
        XtbDeltaOracle.from_file(None, HostLattice.from_unit_cell("builtin:GaSe", (6, 6)))
