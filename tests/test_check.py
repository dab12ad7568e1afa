"""Physics checks of candidates (invdesign.campaign.check) with a cheap ASE calculator."""

from __future__ import annotations

import numpy as np
import pandas as pd

from invdesign.campaign.check import STATUS_ORDER, apply_check, check_configurations
from invdesign.campaign.oracles import AseOracle
from invdesign.lattice.host import HostLattice


def _lj():
    from ase.calculators.lj import LennardJones

    return LennardJones(sigma=2.3, epsilon=0.02, rc=5.0)


def test_check_configurations_measures_and_remaps():
    host = HostLattice.default()
    occ = np.stack([host.host_code.copy() for _ in range(3)])
    occ[0, 70] = host.species_code["Se"]
    occ[1, 0] = 0  # V_Mo
    occ[2, [64, 65]] = 0
    orc = AseOracle(_lj, mu={"Mo": -1.0, "S": -0.5, "W": -1.0, "Se": -0.5}, host=host, steps=0)
    orc.check_steps, orc.check_fmax = 3, 0.01
    fe = orc.evaluate(occ, ["a", "b", "c"])[:, 0]
    lo, hi = float(np.sort(fe)[0]) - 1e-6, float(np.sort(fe)[1]) + 1e-6  # two of three inside
    table, relaxed = check_configurations(occ, ["a", "b", "c"], orc, (lo, hi), executor="inline")
    t = table.set_index("id")
    np.testing.assert_allclose(t["check_formation_energy_per_site"].to_numpy(), fe, atol=1e-6)  # single-point energy
    assert t["check_in_window"].sum() == 2
    assert (t["check_max_displacement"] > 0).all() and (t["check_max_displacement"] < 0.7).all()
    assert t["check_same_configuration"].all() and set(relaxed) == {"a", "b", "c"}
    assert set(t["check_status"]) <= {"pass", "out_of_window"} and (t["check_status"] == "pass").sum() == 2
    # a tolerance below the displacement: the relaxed structure no longer maps onto the lattice
    tight, _ = check_configurations(occ[:1], ["a"], orc, (lo, hi), executor="inline",
                                    tol=float(t.loc["a", "check_max_displacement"]) / 10)
    assert tight["check_status"].iat[0] == "changed_configuration" and "maps onto no configuration" in tight["check_error"].iat[0]


def test_apply_check_reranks_checked_top_only():
    cands = pd.DataFrame({"rank": [1, 2, 3, 4, 5], "id": list("abcde"), "x": range(5)})
    occ = np.arange(5)[:, None] * np.ones((1, 3), int)
    table = pd.DataFrame({"id": ["a", "b", "c", "d"], "check_status": ["failed", "pass", "changed_configuration", "pass"]})
    df, o = apply_check(cands, occ, table)
    assert df["id"].tolist() == ["b", "d", "c", "a", "e"]
    assert df["rank"].tolist() == [1, 2, 3, 4, 5] and df["model_rank"].tolist() == [2, 4, 3, 1, 5]
    assert df["check_status"].iat[-1] == "unchecked" and o[:, 0].tolist() == [1, 3, 2, 0, 4]
    assert STATUS_ORDER[0] == "pass"


def test_packaged_chgnet_delta_correction_and_std():
    from invdesign.campaign.oracles import ChgnetDeltaOracle, make_oracle
    from invdesign.predict.features import cluster_counts

    host = HostLattice.default()
    orc = make_oracle("chgnet+delta", host)
    assert isinstance(orc, ChgnetDeltaOracle) and orc.steps == 0 and set(orc.mu) == {"Mo", "S", "W", "Se"}
    far = host.host_code.copy()
    far[[70, 100, 180]] = 0  # three S vacancies
    near = host.host_code.copy()
    near[np.argsort(host.min_image_distance[0])[:12]] = 0  # twelve vacancies around site 0: a hole
    occ = np.stack([far, near])
    n = (occ != host.host_code).sum(1)
    np.testing.assert_allclose(orc.correction(occ), cluster_counts(occ, host).astype(float) @ orc.weights / n)
    s = orc.std(occ)
    assert (s > 0).all() and s[1] > s[0]  # a cluster far from the training data is less certain
    assert 0 < orc.sigma < 0.1


def test_chgnet_delta_std_takes_the_noise_of_the_density_band():
    """The packaged correction was fitted on 1-3 and 4-24 defects with one noise per density band: a configuration's
    std is sqrt(x^T C x + s2[band] n) / n, with its own band's s2 (larger at high density)."""
    from invdesign.campaign.oracles import ChgnetDeltaOracle
    from invdesign.predict.defect_env import band_of
    from invdesign.predict.features import cluster_counts

    host = HostLattice.default()
    orc = ChgnetDeltaOracle.from_file(host=host)
    cols, C, s2 = orc.cov
    assert np.ndim(s2) == 1 and s2[0] < s2[-1]
    rng = np.random.default_rng(0)
    occ = np.stack([host.host_code.copy() for _ in range(3)])
    for row, k in zip(occ, (2, 8, 20)):
        row[rng.choice(np.flatnonzero(host.sublattice == 1), k, replace=False)] = 0  # k S vacancies
    n = (occ != host.host_code).sum(1)
    x = cluster_counts(occ, host).astype(float)[:, cols]
    want = np.sqrt(np.einsum("ij,jk,ik->i", x, C, x) + s2[band_of(n)] * n) / n
    np.testing.assert_allclose(orc.std(occ), want, rtol=1e-12)
    assert len(set(band_of(n).tolist())) == 3


def test_xtb_delta_std_takes_the_noise_of_its_density():
    """The packaged xtb+delta has one noise scale for 1-3 defects and one for 4 or more (split-conformal each):
    the same features give a larger std in a dense cell, exactly by the ratio of the two scales."""
    from invdesign.campaign.oracles import XtbDeltaOracle, xtb_gap_features

    host = HostLattice.default()
    orc = XtbDeltaOracle.from_file(host=host)
    lo, hi = orc.s2_by_density["1-3"], orc.s2_by_density["4+"]
    assert 0 < lo < hi
    occ = np.stack([host.host_code.copy(), host.host_code.copy()])
    s_sites = np.flatnonzero(host.sublattice == 1)
    occ[0, s_sites[:2]] = 0  # 2 S vacancies
    occ[1, s_sites[:8]] = 0  # 8 S vacancies
    g = np.array([1.0, 1.0])
    gap, std = orc.gap_correction(occ, g)
    X = xtb_gap_features(occ, host, g, orc.recipe)
    lev = 1.0 + np.einsum("ij,jk,ik->i", X, orc.Ainv, X)
    np.testing.assert_allclose(std, np.sqrt(np.array([lo, hi]) * lev), rtol=1e-12)
    assert (gap >= 0).all()
