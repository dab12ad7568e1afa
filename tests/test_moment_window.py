"""Windows on the magnetic moment (issue 22 item 3): ``--target total_mag=LO:HI`` (Bohr magnetons per cell) on the
spin-polarised hosts, alone or with formation-energy and gap windows, in pool, exhaustive and annealing design;
``p_in_window`` holds the moment's probability (a Gaussian with the served std restricted to ``total_mag >= 0``);
refused in one line on hosts without a moment (MoS2, WSe2), for bad bounds, and by campaigns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import shared_dir
from scipy.special import ndtr
from scipy.stats import truncnorm

from invdesign.cli import main
from invdesign.errors import InvdesignError
from invdesign.generate.window import Window

FE, GAP, MAG = "formation_energy_per_site", "homo_lumo_gap", "total_mag"


def release(name: str):
    root = shared_dir() / "data" / f"2dmd-{name}-high"
    if not (root / "initial.tar.gz").is_file():
        pytest.skip("2DMD share absent")
    return root


def p_moment(lo: float, hi: float, m, s):
    """P(lo <= y <= hi) for y ~ N(m, s^2) restricted to y >= 0 (scipy's truncated normal)."""
    m, s = np.asarray(m, float), np.asarray(s, float)
    a = (0.0 - m) / s
    return truncnorm.cdf(hi, a, np.inf, loc=m, scale=s) - truncnorm.cdf(max(lo, 0.0), a, np.inf, loc=m, scale=s)


def p_gauss(lo: float, hi: float, m, s):
    m, s = np.asarray(m, float), np.asarray(s, float)
    return ndtr((hi - m) / s) - ndtr((lo - m) / s)


def test_window_on_the_moment_parses_and_its_probability_is_the_truncated_gaussian():
    w = Window.parse([f"{MAG}=1:2"])
    assert w.names == (FE, GAP, MAG) and w.has_moment and w.moment == (1.0, 2.0) and w.n_targets == 3
    assert w.as_dict() == {MAG: [1.0, 2.0]} and w.describe() == "total_mag in [1, 2] Bohr magnetons per cell"
    mean = np.array([[0.0, 0.0, 1.5], [0.0, 0.0, 0.1], [0.0, 0.0, 6.0], [0.0, 0.0, 1e-3]])
    std = np.array([[1.0, 1.0, 0.3], [1.0, 1.0, 0.3], [1.0, 1.0, 0.3], [1.0, 1.0, 2.0]])
    want = p_moment(1.0, 2.0, mean[:, 2], std[:, 2])
    np.testing.assert_allclose(w.p_in(mean, std), want, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(w.log_p_in(mean, std)[:2], np.log(want[:2]), rtol=1e-9)
    assert np.isfinite(w.log_p_in(mean, std)).all()  # far outside the window: finite, for annealing
    assert w.hits(mean).tolist() == [True, False, False, False] and w.distance(mean)[2] == pytest.approx(4.0)
    # open LO: everything from 0 up to HI (the restriction makes an open LO and LO = 0 the same)
    w0, wz = Window.parse([f"{MAG}=:0.5"]), Window.parse([f"{MAG}=0:0.5"])
    np.testing.assert_allclose(w0.p_in(mean, std), wz.p_in(mean, std))
    # combined with a formation-energy window: the product of the two
    wc = Window.from_dict({FE: (-0.5, 0.5), MAG: (1.0, 2.0)})
    np.testing.assert_allclose(wc.p_in(mean, std), p_gauss(-0.5, 0.5, 0.0, 1.0) * want, rtol=1e-9)
    # a two-target window is unchanged, and reads the first two columns of a prediction with the moment
    w2 = Window.parse([f"{FE}=-0.5:0.5"])
    assert w2.names == (FE, GAP) and not w2.has_moment and w2.lo == (-0.5, -np.inf)
    np.testing.assert_array_equal(w2.p_in(mean, std), w2.p_in(mean[:, :2], std[:, :2]))
    with pytest.raises(ValueError, match="3 columns"):
        wc.p_in(mean[:, :2], std[:, :2])
    # None is an open end in the dictionary form (as the API documents)
    assert Window.from_dict({MAG: (None, 2.0)}).moment == (-np.inf, 2.0)


@pytest.mark.parametrize("spec, words", [
    (f"{MAG}=-1:2", "bound -1 Bohr magnetons per cell is below 0"),
    (f"{MAG}=:-0.5", "below 0"),
    (f"{MAG}=0:0", "no width"),
    (f"{MAG}=1.5:1.5", "no width"),
    (f"{MAG}=2:1", "LO 2 is above HI 1"),
    (f"{MAG}=1:5000", "bound 5000 Bohr magnetons per cell is beyond +-1000 Bohr magnetons per cell"),
    (f"{MAG}=:", "constrains nothing; give LO, HI or both (Bohr magnetons per cell)"),
    ("magnetisation=1:2", "unknown target 'magnetisation'"),
])
def test_bad_moment_bounds_are_refused_in_one_line_with_the_unit(spec, words, tmp_path, capsys):
    with pytest.raises(InvdesignError, match=words.replace("+", r"\+").replace("(", r"\(").replace(")", r"\)")):
        Window.parse([spec])
    assert main(["design", "--host", "BN", "--target", spec, "-n", "2", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and not (tmp_path / "x").exists()


def _check_moment_columns(c: pd.DataFrame, w: Window) -> None:
    """The candidates' p_in_window is the window's probability under their (effective) served stds."""
    p = np.ones(len(c))
    for name, (lo, hi) in w.bounds.items():
        m, s = c[name].to_numpy(float), c[f"{name}_std_effective"].to_numpy(float)
        p = p * (p_moment(lo, hi, m, s) if name == MAG else p_gauss(lo, hi, m, s))
    np.testing.assert_allclose(c["p_in_window"].to_numpy(float), p, rtol=1e-6, atol=1e-12)
    plain = ~c["extrapolation"].to_numpy(bool)
    np.testing.assert_array_equal(c.loc[plain, f"{MAG}_std_effective"], c.loc[plain, f"{MAG}_std"])
    assert (c[MAG] >= 0).all() and (c[f"{MAG}_std"] > 0).all()


def test_pool_design_on_a_moment_window_returns_candidates_inside_it():
    """h-BN's 400 release structures ranked for total_mag in [2, 3]: the top five predicted inside, p_in_window
    as the served std gives it, the moment the host model's own prediction, the ranking by p_in_window."""
    from invdesign.api import design
    from invdesign.lattice.hosts import packaged_host
    from invdesign.predict.host_serving import predictor_for

    res = design({MAG: (2.0, 3.0)}, n=5, pool=release("hbn") / "initial.tar.gz", diversity=0.0)
    c = res.candidates
    w = Window.from_dict({MAG: (2.0, 3.0)})
    assert list(c.columns[4:11]) == [FE, GAP, MAG, f"{FE}_std", f"{GAP}_std", f"{MAG}_std", "p_in_window"]
    assert len(c) == 5 and ((c[MAG] >= 2.0) & (c[MAG] <= 3.0)).all() and (c["p_in_window"] >= 0.5).all()
    assert c["p_in_window"].is_monotonic_decreasing
    _check_moment_columns(c, w)
    mean, std = predictor_for(packaged_host("BN")).predict_with_moment(res.occ)
    np.testing.assert_allclose(c[MAG], mean[:, 2], rtol=1e-6)  # float32 networks, other batch shapes
    np.testing.assert_allclose(c[f"{MAG}_std"], std[:, 2], rtol=1e-6)
    s = res.summary
    assert s["request"]["target"] == {MAG: [2.0, 3.0]} and "Bohr magnetons per cell" in s["units"]
    assert s["counts"]["in_window"] >= 5


def test_cli_pool_with_a_formation_energy_and_moment_window(tmp_path, capsys):
    """GaSe: FE and total_mag windows together through the CLI; the table, summary.json, the console and the plot
    carry the moment (the plot says it draws FE and gap only)."""
    out = tmp_path / "d"
    assert main(["design", "--pool", str(release("gase") / "initial.tar.gz"), "--target", f"{FE}=1.0:1.4",
                 "--target", f"{MAG}=0.5:1.0", "-n", "5", "--full-precision", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "total_mag" in printed and "Bohr magnetons per cell" in printed
    c = pd.read_csv(out / "candidates.csv")
    s = json.loads((out / "summary.json").read_text())
    w = Window.from_dict({FE: (1.0, 1.4), MAG: (0.5, 1.0)})
    assert s["request"]["target"] == {FE: [1.0, 1.4], MAG: [0.5, 1.0]}
    assert s["columns"]["units"][MAG] == "Bohr magnetons per cell"
    assert s["columns"]["units"][f"{MAG}_std_effective"] == "Bohr magnetons per cell"
    # the served moment stds of GaSe are wide (median ~0.6 Bohr magnetons): the best three lie inside, the rest near
    assert len(c) == 5 and w.hits(c[[FE, GAP, MAG]].to_numpy()[:3]).all()
    assert c["p_in_window"].iloc[0] == c["p_in_window"].max() > 0.3
    assert s["counts"]["returned_in_window"] == int((c["p_in_window"] >= 0.5).sum())
    _check_moment_columns(c, w)
    assert (out / "candidates.png").stat().st_size > 10_000


def test_exhaustive_and_anneal_design_on_a_moment_window():
    """Generating on h-BN: the exhaustive screen (3 defects) returns the screen's best p_in_window with the moment
    in it; annealing (6-10 defects, the incremental fast path) harvests states whose predicted moment lies in the
    window, with the full model's predictions."""
    from invdesign.api import design
    from invdesign.generate.anneal import anneal
    from invdesign.generate.decoder import Limits
    from invdesign.lattice.hosts import packaged_host
    from invdesign.predict.host_serving import predictor_for

    w = Window.from_dict({MAG: (1.0, 2.0)})
    ex = design(w, n=6, host="BN", min_defects=3, max_defects=3, diversity=0.0)
    c = ex.candidates
    assert ex.summary["request"]["mode_used"] == "exhaustive" and (c["n_defects"] == 3).all()
    assert (c["p_in_window"] >= 0.5).all() and ((c[MAG] >= 1.0) & (c[MAG] <= 2.0)).all()
    _check_moment_columns(c, w)
    pred = predictor_for(packaged_host("BN"))
    from invdesign.generate.design import screen

    _, _, mean, std, p = screen(pred, w, Limits.make(pred.host, 3, 3))
    assert mean.shape[1] == 3 and c["p_in_window"].iloc[0] == pytest.approx(p.max(), rel=1e-9)

    wc = Window.from_dict({FE: (4.0, 5.0), MAG: (2.0, 3.0)})
    limits = Limits.make(pred.host, max_defects=10, min_defects=6)
    res = anneal(pred, wc, limits, 8, chains=16, max_steps=400, seed=0)
    assert res.stats["incremental"] and len(res.keys) == 8 and res.mean.shape == (8, 3)
    assert res.stats["harvested_in_window"] == 8 and wc.hits(res.mean).all()
    m, s = pred.predict_with_moment(res.occ)
    assert np.abs(m - res.mean).max() < 2e-5 and np.abs(s - res.std).max() < 2e-5
    an = design(wc, n=4, host="BN", mode="anneal", min_defects=6, max_defects=10, seed=0)
    c = an.candidates
    assert an.summary["request"]["mode_used"] == "anneal" and len(c) == 4 and c["canonical_key"].nunique() == 4
    assert wc.hits(c[[FE, GAP, MAG]].to_numpy()).all() and (c["source"] == "anneal").all()
    _check_moment_columns(c, wc)


@pytest.mark.parametrize("host", ["MoS2", "WSe2"])
def test_a_moment_window_on_a_host_without_a_moment_is_refused_in_one_line(host, tmp_path, capsys):
    assert main(["design", "--host", host, "--target", f"{MAG}=0:1", "-n", "2", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and host in err[0] and "no magnetic moment" not in err[0]
    assert "needs a host with a magnetic moment" in err[0] and "without spin polarisation" in err[0]
    assert "h-BN, GaSe, InSe and black P" in err[0] and not (tmp_path / "x").exists()
    from invdesign.api import design

    with pytest.raises(InvdesignError, match=f"{host}.*has none"):
        design({MAG: (0.0, 1.0), FE: (1.0, 2.0)}, n=2, host=host)


def test_campaigns_refuse_a_moment_goal_before_any_work(tmp_path, capsys):
    db = tmp_path / "c.db"
    for cmd in (["campaign", "init"], ["campaign", "run", "--budget", "3"]):
        assert main([*cmd, "--db", str(db), "--target", f"{MAG}=0:1", "--host", "BN"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "campaigns target formation_energy_per_site and homo_lumo_gap only" in err[0]
        assert "invdesign design --target total_mag=LO:HI" in err[0] and not db.exists()
