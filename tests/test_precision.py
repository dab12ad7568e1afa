"""CSV rounding (issue 24): each float column rounded by its unit, --full-precision writes repr floats equal to the
Python API's values, and nothing a command reads back is rounded (embed -> decode, label, campaign sheets)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from invdesign.cli import main
from invdesign.columns import ROUNDING, display, round_values, rounded, rounding, rounding_text, unit

ROOT = Path(__file__).resolve().parents[1]
WINDOW = ["--target", "formation_energy_per_site=1.0:1.2", "--target", "homo_lumo_gap=0.9:1.3"]
WINDOW_API = {"formation_energy_per_site": (1.0, 1.2), "homo_lumo_gap": (0.9, 1.3)}


def _cells(path: Path) -> dict[str, list[str]]:
    """The CSV's cells as written (text), by column."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return {c: [r[i] for r in rows[1:]] for i, c in enumerate(rows[0])}


def _decimals(text: str) -> int:
    """Digits after the point of a plain decimal (``1.25`` -> 2; ``3.0`` -> 0)."""
    assert re.fullmatch(r"-?\d+(\.\d+)?", text), text
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


def _check_rounded(path: Path, reference: pd.DataFrame) -> set[str]:
    """Every float column of ``path`` holds exactly the documented rounding of ``reference`` (the API's values,
    row for row) and no more digits than its rule; returns the columns checked."""
    cells, got = _cells(path), pd.read_csv(path, float_precision="round_trip", keep_default_na=False, na_values=[""])
    checked = set()
    for c in reference.columns:
        rule = rounding(c)
        if rule is None or not pd.api.types.is_float_dtype(reference[c]):
            continue
        want = round_values(reference[c].to_numpy(float), rule)
        np.testing.assert_array_equal(got[c].to_numpy(float), want, err_msg=c)
        for text in cells[c]:
            if text in ("", "nan", "NaN"):
                continue
            if rule[0] == "decimals":
                assert _decimals(text) <= rule[1], (c, text)
            else:
                assert float(f"{float(text):.{rule[1]}g}") == float(text), (c, text)
        checked.add(c)
    return checked


def _check_repr(path: Path, reference: pd.DataFrame) -> None:
    """Every float cell of ``path`` is the repr of the API's value (NaN as empty)."""
    cells = _cells(path)
    for c in reference.columns:
        if pd.api.types.is_float_dtype(reference[c]):
            assert cells[c] == ["" if np.isnan(v) else repr(float(v)) for v in reference[c]], c


def test_units_and_rules():
    assert rounding("formation_energy_per_site") == ("decimals", 4) == rounding("homo_lumo_gap_std")
    assert rounding("e_above_arrangement_min") == ("decimals", 1)
    assert rounding("p_in_window") == ("decimals", 3) == rounding("check_p_in_window")
    assert rounding("arrangement_population") == ("significant", 3)
    assert rounding("z3") is None and rounding_text("z3") == "exact"  # decode reads them back
    assert rounding("dn_S") is None and rounding("n_defects") is None and rounding("id") is None
    assert unit("formation_energy_per_site_mean") == "eV" and rounding("score") == ("decimals", 4)
    assert round_values(np.array([1.23456789, -0.00001, np.nan]), ("decimals", 4)).tolist()[:2] == [1.2346, 0.0]
    assert str(round_values(-0.00001, ("decimals", 4))) == "0.0"  # no "-0.0"
    assert round_values(1.23456e-9, ("significant", 3)) == 1.23e-9
    assert display("homo_lumo_gap", 1.0) == "1.0000" and display("homo_lumo_gap", 1.0, full=True) == "1.0"
    assert display("arrangement_population", 0.000773456) == "0.000773"
    df = pd.DataFrame({"id": ["a"], "homo_lumo_gap": [1.23456789], "dn_S": [-1.0], "z0": [0.123456789123]})
    r = rounded(df)
    assert r["homo_lumo_gap"].iat[0] == 1.2346 and r["dn_S"].iat[0] == -1.0 and r["z0"].iat[0] == 0.123456789123
    assert df["homo_lumo_gap"].iat[0] == 1.23456789  # a copy
    # every unit of a float column in the guide has a rule
    from invdesign.columns import UNITS

    for u in set(UNITS.values()) - {"-", "text", "bool", "count", "atoms"}:
        assert u in ROUNDING, u


def test_docs_rounding_table_is_the_rule_table():
    text = (ROOT / "docs" / "outputs.md").read_text()
    section = re.search(r"^## Rounding\n(.*?)(?=^## )", text, flags=re.M | re.S).group(1)
    documented = {}
    for m in re.finditer(r"^\| ([^|]+?) \| (\d+) (decimals?|significant digits)[^|]*\|$", section, flags=re.M):
        units = re.sub(r" \(`[^`]+`\)", "", m.group(1))
        for u in (units.split(", ") if "(0-1)," in units or units.startswith("eV,") else [units]):
            documented[u] = ("decimals" if m.group(3).startswith("decimal") else "significant", int(m.group(2)))
    assert documented == ROUNDING


@pytest.fixture(scope="module")
def structures(tmp_path_factory):
    d = tmp_path_factory.mktemp("precision")
    assert main(["enumerate", "--max-defects", "2", "--type", "V_S", "--type", "W_Mo", "--structures", str(d / "s"),
                 "--out", str(d / "e.csv")]) == 0
    (d / "six").mkdir()
    for f in sorted((d / "s").glob("*.cif"))[::7][:6]:  # one and two defects, both types
        (d / "six" / f.name).write_bytes(f.read_bytes())
    return d, sorted((d / "six").glob("*.cif"))


def test_predict_csv_rounded_and_full_precision_equals_the_api(structures, tmp_path):
    from invdesign.api import predict

    _, files = structures
    api = predict([str(f) for f in files])
    assert main(["predict", *map(str, files), "--out", str(tmp_path / "p.csv")]) == 0
    checked = _check_rounded(tmp_path / "p.csv", api)
    assert {"formation_energy_per_site", "homo_lumo_gap", "formation_energy_per_site_std", "homo_lumo_gap_std"} <= checked
    assert main(["predict", *map(str, files), "--out", str(tmp_path / "f.csv"), "--full-precision"]) == 0
    _check_repr(tmp_path / "f.csv", api)
    full = pd.read_csv(tmp_path / "f.csv", float_precision="round_trip")
    pd.testing.assert_frame_equal(full[api.select_dtypes("float").columns], api.select_dtypes("float"), check_exact=True)
    # the API's out= writes the same bytes, either way
    predict([str(f) for f in files], out=tmp_path / "a.csv")
    predict([str(f) for f in files], out=tmp_path / "af.csv", full_precision=True)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "p.csv").read_bytes()
    assert (tmp_path / "af.csv").read_bytes() == (tmp_path / "f.csv").read_bytes()


def test_design_csv_rounded_and_full_precision_equals_the_api(tmp_path, capsys):
    from invdesign.api import design

    res = design(WINDOW_API, n=4)
    api = res.candidates
    assert main(["design", *WINDOW, "-n", "4", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    checked = _check_rounded(tmp_path / "r" / "candidates.csv", api)
    assert {"formation_energy_per_site", "p_in_window", "e_above_arrangement_min", "arrangement_population",
            "nearest_known_distance", "window_distance"} <= checked
    # the console table shows the CSV's values
    c = pd.read_csv(tmp_path / "r" / "candidates.csv", float_precision="round_trip")
    for r in c.itertuples():
        assert f"{r.formation_energy_per_site:.4f} ± {r.formation_energy_per_site_std:.4f}" in out
        assert f" {r.p_in_window:.3f} " in out
    assert main(["design", *WINDOW, "-n", "4", "--out", str(tmp_path / "f"), "--full-precision"]) == 0
    full_out = capsys.readouterr().out
    _check_repr(tmp_path / "f" / "candidates.csv", api)
    assert repr(float(api["formation_energy_per_site"].iat[0])) in full_out
    res2 = design(WINDOW_API, n=4, out=tmp_path / "af", full_precision=True)
    assert (tmp_path / "af" / "candidates.csv").read_bytes() == (tmp_path / "f" / "candidates.csv").read_bytes()
    pd.testing.assert_frame_equal(res2.candidates, api)  # the API's table is at full precision either way


def test_embed_decode_round_trip_is_exact(structures, tmp_path):
    """decode reads embed's CSV: its coordinates are the model's to the last bit, and every row decodes exactly."""
    from invdesign.api import embed

    _, files = structures
    assert main(["embed", *map(str, files), "--out", str(tmp_path / "e.csv")]) == 0
    api = embed([str(f) for f in files])
    _check_repr(tmp_path / "e.csv", api)
    assert main(["decode", str(tmp_path / "e.csv"), "--max-defects", "2", "--out", str(tmp_path / "d")]) == 0
    dec = pd.read_csv(tmp_path / "d" / "decoded.csv", dtype={"id": str})
    assert (dec["embedding_distance"] == 0).all() and (dec["method"] == "exact").all()
    from invdesign.data.dataset import map_structures
    from invdesign.lattice.host import HostLattice

    keys = dict(zip(map(str, map_structures(files, HostLattice.default()).ids), map_structures(files, HostLattice.default()).keys))
    assert dec.set_index("id")["canonical_key"].to_dict() == keys


def test_label_and_campaign_sheets_round_trip(structures, tmp_path):
    """label's file (resumed from, and read by table: oracles) keeps the oracle's values exactly; a rounded
    suggest sheet reads back through observe by its ids and keys."""
    d, files = structures
    rng = np.random.default_rng(0)
    from invdesign.data.dataset import map_structures
    from invdesign.lattice.host import HostLattice

    ds = map_structures(files, HostLattice.default())
    table = pd.DataFrame({"_id": list(map(str, ds.ids)), "formation_energy_per_site": rng.normal(1, 0.3, len(ds)),
                          "homo_lumo_gap": rng.uniform(0.5, 1.5, len(ds))})
    table.to_csv(tmp_path / "t.csv", index=False)
    assert main(["label", *map(str, files), "--oracle", f"table:{tmp_path / 't.csv'}", "--out", str(tmp_path / "l.csv")]) == 0
    lab = pd.read_csv(tmp_path / "l.csv", float_precision="round_trip", dtype={"id": str}).set_index("id")
    want = table.set_index("_id").loc[lab.index]
    for t in ("formation_energy_per_site", "homo_lumo_gap"):
        assert (lab[t].to_numpy() == want[t].to_numpy()).all(), t
    db, sheet = tmp_path / "c.db", tmp_path / "s.csv"
    assert main(["campaign", "init", "--db", str(db), "--pool", str(d / "six"), "--features", "pairs", "--batch", "2",
                 "--target", "formation_energy_per_site=0.9:1.1"]) == 0
    assert main(["campaign", "suggest", "--db", str(db), "--out", str(sheet)]) == 0
    s = pd.read_csv(sheet, dtype={"id": str})
    for t in ("formation_energy_per_site", "homo_lumo_gap"):
        s[t] = table.set_index("_id").loc[s["id"], t].to_numpy()
    s.to_csv(sheet, index=False)
    assert main(["campaign", "observe", "--db", str(db), "--from", str(sheet)]) == 0
    from invdesign.campaign import Campaign

    with Campaign.open(db, readonly=True) as c:
        obs = c.observations().set_index("id")
    assert set(obs.index) == set(s["id"])
    np.testing.assert_array_equal(obs.loc[s["id"], "homo_lumo_gap"].to_numpy(),
                                  table.set_index("_id").loc[s["id"], "homo_lumo_gap"].to_numpy())
