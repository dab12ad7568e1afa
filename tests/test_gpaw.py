"""The ``gpaw`` oracle (PBE, GPAW LCAO): refusals everywhere; a real single point where GPAW and its setups exist.

GPAW is optional (a source build); where it is missing the real calculations are skipped and only the refusals
run. The 8x8 cell end to end with its agreement against 2DMD: ``benchmarks/bench_gpaw.py``.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from invdesign.campaign import gpaw as gpaw_mod
from invdesign.campaign.oracles import GpawOracle, make_oracle, oracle_gives
from invdesign.cli import main
from invdesign.errors import InvdesignError
from invdesign.lattice.host import HostLattice


def _have_gpaw() -> bool:
    """Import GPAW as a user's process does. Imported while pytest is loaded, GPAW turns on its debug wrappers for
    the whole process (``np.empty`` filled with NaN or -42, numpy errors raised), which breaks every later test:
    pytest is hidden from ``sys.modules`` for that one import."""
    if "gpaw" in sys.modules:
        return sys.modules["gpaw"] is not None
    saved = sys.modules.pop("pytest")
    try:
        import gpaw  # noqa: F401
    except ImportError:
        return False
    finally:
        sys.modules["pytest"] = saved
    return True


@pytest.fixture(scope="module")
def host() -> HostLattice:
    return HostLattice.from_unit_cell("builtin:MoS2", (2, 2))


def test_missing_gpaw_is_refused_in_one_line(host, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "gpaw", None)  # import gpaw -> ImportError
    with pytest.raises(InvdesignError, match="gpaw package does not import"):
        make_oracle("gpaw", host, need_mu=False)
    (tmp_path / "s").mkdir()
    out = tmp_path / "labels.csv"
    from invdesign.io import write_structure

    occ = host.host_code.copy()
    occ[0] = host.species_code["Vac"]
    write_structure(occ, host, tmp_path / "s" / "a.cif")
    rc = main(["label", str(tmp_path / "s"), "--oracle", "gpaw", "--out", str(out), "--host", "MoS2", "--supercell", "2x2"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "gpaw" in err and "Traceback" not in err
    assert not out.exists()  # nothing half-written


def test_missing_setups_are_named(monkeypatch, tmp_path):
    if not _have_gpaw():
        pytest.skip("GPAW is not installed (the dft extra)")
    monkeypatch.setattr(gpaw_mod, "setup_dirs", lambda: [str(tmp_path)])
    why = gpaw_mod.gpaw_problem(["Mo", "S"])
    assert why is not None and "no GPAW PBE setup for Mo" in why


def test_gpaw_gives_a_gap_and_a_formation_energy_only_with_mu(host):
    assert oracle_gives(GpawOracle(host=host)) == ["homo_lumo_gap"]
    o = GpawOracle({"Mo": -10.0, "S": -4.0, "W": -12.0, "Se": -3.5}, host)
    assert "formation_energy_per_site" in oracle_gives(o)
    assert not o.spinpol  # MoS2's 2DMD data is spin-restricted; h-BN's is not
    assert GpawOracle(host=HostLattice.from_unit_cell("builtin:BN", (2, 2))).spinpol


def test_a_real_pbe_single_point(host, tmp_path, monkeypatch):
    """2x2 MoS2 (12 atoms), pristine and one S vacancy: PBE gaps in the known range, the vacancy's smaller."""
    if not _have_gpaw():
        pytest.skip("GPAW is not installed (the dft extra)")
    if gpaw_mod.gpaw_problem(["Mo", "S"]):
        pytest.skip(gpaw_mod.gpaw_problem(["Mo", "S"]))
    monkeypatch.setenv("INVDESIGN_CACHE_DIR", str(tmp_path))
    o = GpawOracle(host=host)
    occ = host.host_code.copy()
    occ[np.flatnonzero(host.host_code == host.species_code["S"])[0]] = host.species_code["Vac"]
    d = o.label(occ)
    assert set(o.label_columns) <= set(d)
    pristine = o.singlepoint(host.host_code)
    assert 1.4 < pristine["gap"] < 2.2  # PBE monolayer MoS2 ~1.7 eV (2x2 cell: a folded zone, still direct at K -> gamma)
    assert 0 <= d["homo_lumo_gap"] < pristine["gap"]
    assert d["raw_energy"] == pytest.approx(d["energy"] - pristine["energy"], abs=1e-6)
    assert 0 < d["raw_energy"] < 12  # removing an S atom costs energy (no chemical potential yet)
    assert np.isnan(d["formation_energy_per_site"]) and d["cpu_s"] > 0


def test_design_check_with_gpaw(host, tmp_path, monkeypatch):
    """``design --check gpaw:MU.json``'s check on a 2x2 cell: the PBE gap and formation energy, pass / out of window
    by the gap window (no std: a point value); ``--check gpaw`` without chemical potentials is refused in one line."""
    import json

    from invdesign.campaign.check import check_configurations, check_oracle, reference_of

    with pytest.raises(InvdesignError, match="gpaw:MU.json"):
        check_oracle("gpaw", host)
    if not _have_gpaw():
        pytest.skip("GPAW is not installed (the dft extra)")
    if gpaw_mod.gpaw_problem(["Mo", "S"]):
        pytest.skip(gpaw_mod.gpaw_problem(["Mo", "S"]))
    monkeypatch.setenv("INVDESIGN_CACHE_DIR", str(tmp_path))
    mu = tmp_path / "mu.json"
    mu.write_text(json.dumps({"mu": {"Mo": -10.8, "S": -4.0, "W": -11.4, "Se": -3.1}}))
    orc = check_oracle(f"gpaw:{mu}", host)
    assert isinstance(orc, GpawOracle) and reference_of(orc).startswith("PBE, uncorrected")
    occ = host.host_code.copy()[None]
    occ[0, np.flatnonzero(host.host_code == host.species_code["S"])[0]] = host.species_code["Vac"]
    table, _ = check_configurations(occ, ["vs"], orc, (-1e3, 1e3), executor="inline", gap_window=(0.0, 5.0))
    t = table.set_index("id")
    assert t.loc["vs", "check_status"] == "pass" and 0 <= t.loc["vs", "check_homo_lumo_gap"] < 2.2
    assert np.isfinite(t.loc["vs", "check_formation_energy_per_site"])
    narrow, _ = check_configurations(occ, ["vs"], orc, (-1e3, 1e3), executor="inline", gap_window=(4.0, 5.0))
    assert narrow.set_index("id").loc["vs", "check_status"] == "out_of_window"
