"""Issue 14: never lose a user's files, never stay silent about a wrong result.

One test (or more) per row of the issue's table; each failed on the code before the fix.
The model is the packaged one (cached after the first load); campaigns use exact pair
features (no model) on a pool of a few generated structures.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from invdesign.cli import main
from invdesign.io import write_structure

ROOT = Path(__file__).resolve().parents[1]
WINDOW = ["--target", "formation_energy_per_site=1.0:1.2", "--target", "homo_lumo_gap=0.9:1.3"]


def _one_error_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("invdesign: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, err)
    return lines[0]


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (hidden ones included)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def pool(tmp_path_factory, host):
    """Eight generated 1-2-defect structures (CIF) and a label table for them."""
    from invdesign.lattice.enumerate import sample_configurations

    root = tmp_path_factory.mktemp("pool14")
    d = root / "pool"
    d.mkdir()
    occ = np.concatenate([sample_configurations(host, {"V_S": 1, "W_Mo": 1}, 4, 1),
                          sample_configurations(host, {"Se_S": 2}, 4, 2)])
    ids = []
    for i, o in enumerate(occ):
        write_structure(o, host, d / f"s{i}.cif")
        ids.append(f"s{i}")
    labels = pd.DataFrame({"_id": ids, "formation_energy_per_site": np.linspace(0.9, 1.3, len(ids)),
                           "homo_lumo_gap": np.linspace(0.8, 1.4, len(ids))})
    labels.to_csv(root / "labels.csv", index=False)
    return root


@pytest.fixture(scope="module")
def zcsv(tmp_path_factory, pool):
    """Embeddings of three pool structures with the packaged model (for `decode`)."""
    from invdesign import embed

    z = embed(sorted((pool / "pool").glob("*.cif"))[:3])
    p = tmp_path_factory.mktemp("z14") / "z.csv"
    z.to_csv(p, index=False)
    return p


# ---------------------------------------------------------------------- row 1: outputs never destroy user files
def test_design_refuses_a_folder_holding_user_files(tmp_path, capsys):
    out = tmp_path / "mydata"
    out.mkdir()
    (out / "thesis.txt").write_text("four years of work")
    before = _tree(tmp_path)
    assert main(["design", *WINDOW, "-n", "3", "--out", str(out)]) == 2
    _one_error_line(capsys, "thesis.txt", "did not write")
    assert _tree(tmp_path) == before
    assert main(["design", *WINDOW, "-n", "3", "--out", str(out), "--overwrite"]) == 2  # --overwrite never touches it
    _one_error_line(capsys, "thesis.txt")
    assert _tree(tmp_path) == before


def test_every_folder_output_refuses_user_files(tmp_path, capsys, pool, zcsv):
    out = tmp_path / "mydata"
    out.mkdir()
    (out / "thesis.txt").write_text("four years of work")
    db = tmp_path / "c.sqlite"
    assert main(["campaign", "init", "--db", str(db), "--pool", str(pool / "pool"), "--features", "pairs",
                 "--target", "homo_lumo_gap=1.0:1.2"]) == 0
    capsys.readouterr()
    before = _tree(tmp_path)
    cases = [
        ["decode", str(zcsv), "--out", str(out)],
        ["campaign", "report", "--db", str(db), "--out", str(out)],
        ["benchmark", "--data", str(pool), "--out", str(out)],
        ["enumerate", "--max-defects", "1", "--out", str(tmp_path / "e.csv"), "--structures", str(out)],
        ["campaign", "suggest", "--db", str(db), "--structures", str(out)],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        _one_error_line(capsys, "thesis.txt")
        assert _tree(tmp_path) == before, argv
    assert main(["campaign", "status", "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pending"] == 0  # the refused suggest recorded nothing


def test_previous_output_replaced_only_with_overwrite_and_only_its_files(tmp_path, capsys, zcsv):
    out = tmp_path / "dec"
    assert main(["decode", str(zcsv), "--out", str(out)]) == 0
    man = json.loads((out / ".invdesign-manifest.json").read_text())
    assert man["command"] == "decode" and "decoded.csv" in man["files"]
    capsys.readouterr()
    first = _tree(out)
    assert main(["decode", str(zcsv), "--out", str(out)]) == 2
    _one_error_line(capsys, "--overwrite")
    assert _tree(out) == first
    assert main(["decode", str(zcsv), "--out", str(out), "--overwrite"]) == 0
    assert set(_tree(out)) == set(first)
    # another command's output is not this command's to replace
    assert main(["enumerate", "--max-defects", "1", "--out", str(tmp_path / "e.csv"), "--structures", str(out),
                 "--overwrite"]) == 2
    _one_error_line(capsys, "decode")
    # a file added by the user next to a previous output: refused even with --overwrite
    (out / "notes.md").write_text("mine")
    assert main(["decode", str(zcsv), "--out", str(out), "--overwrite"]) == 2
    _one_error_line(capsys, "notes.md")
    assert (out / "notes.md").read_text() == "mine"


def test_file_outputs_replaced_only_with_overwrite(tmp_path, capsys, pool):
    out = tmp_path / "keys.csv"
    out.write_text("my own table\n")
    assert main(["canon", str(pool / "pool"), "--out", str(out)]) == 2
    _one_error_line(capsys, "--overwrite")
    assert out.read_text() == "my own table\n"
    assert main(["canon", str(pool / "pool"), "--out", str(out), "--overwrite"]) == 0
    assert pd.read_csv(out).shape == (8, 2)


# ---------------------------------------------------------------------- row 2: --out . and edge paths
def test_out_dot_works_in_an_empty_folder(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["enumerate", "--max-defects", "1", "--out", "../e.csv", "--structures", "."]) == 0
    assert len(list(work.glob("*.cif"))) == len(pd.read_csv(tmp_path / "e.csv")) > 0
    assert (work / ".invdesign-manifest.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left anywhere
    capsys.readouterr()
    assert main(["enumerate", "--max-defects", "1", "--out", "../e.csv", "--structures", ".", "--overwrite"]) == 0


@pytest.mark.parametrize("argv, needle", [
    (["canon", "POOL", "--out", "."], "must end in .csv"),
    # e.csv would land inside the --structures folder: refused before the folder's foreign files are looked at
    (["enumerate", "--max-defects", "1", "--out", "e.csv", "--structures", "."], "writes e.csv inside this folder"),
    (["design", "-n", "2", "--out", "."], "did not write"),
    (["design", "-n", "2", "--out", "nope/deeper/run"], "does not exist"),
    (["embed", "POOL", "--out", "POOL"], "must end in .csv"),
])
def test_edge_paths_one_line_before_any_work(tmp_path, monkeypatch, capsys, pool, argv, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "thesis.txt").write_text("x")
    argv = [str(pool / "pool") if a == "POOL" else a for a in argv]
    if argv[0] == "design":
        argv[1:1] = WINDOW
    before = _tree(tmp_path)
    t = time.perf_counter()
    assert main(argv) == 2
    _one_error_line(capsys, needle)
    assert _tree(tmp_path) == before and time.perf_counter() - t < 5


# ---------------------------------------------------------------------- row 3: modes honour the umask
@pytest.mark.parametrize("umask, fmode, dmode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_outputs_honour_the_umask(tmp_path, pool, umask, fmode, dmode):
    old = os.umask(umask)
    try:
        assert main(["enumerate", "--max-defects", "1", "--out", str(tmp_path / "e.csv"),
                     "--structures", str(tmp_path / "cifs")]) == 0
        assert main(["canon", str(pool / "pool"), "--out", str(tmp_path / "k.csv")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "cifs").stat().st_mode) == dmode
    for p in [tmp_path / "e.csv", tmp_path / "k.csv", *(tmp_path / "cifs").iterdir()]:
        assert stat.S_IMODE(p.stat().st_mode) == fmode, p


# ---------------------------------------------------------------------- rows 4-5: labels inf / NaN
def _campaign(tmp_path, pool, labels: pd.DataFrame, *extra: str) -> list[str]:
    f = tmp_path / "labels.csv"
    labels.to_csv(f, index=False)
    return ["campaign", "run", "--db", str(tmp_path / "c.sqlite"), "--pool", str(pool / "pool"), "--oracle",
            f"table:{f}", "--target", "formation_energy_per_site=1.0:1.1", "--target", "homo_lumo_gap=1.0:1.2",
            "--features", "pairs", "--batch", "2", "--budget", "6", *extra]


def test_infinite_labels_are_refused_with_file_line_and_column(tmp_path, capsys, pool):
    lab = pd.read_csv(pool / "labels.csv")
    lab["homo_lumo_gap"] = lab["homo_lumo_gap"].astype(object)
    lab.loc[3, "homo_lumo_gap"] = "inf"
    lab.loc[5, "formation_energy_per_site"] = -np.inf
    assert main(_campaign(tmp_path, pool, lab)) == 2
    _one_error_line(capsys, "labels.csv", "line 5", "homo_lumo_gap", "inf")
    assert not (tmp_path / "c.sqlite").exists() or (tmp_path / "c.sqlite").stat().st_size == 0


def test_all_nan_labels_refused_or_counted_as_failures(tmp_path, capsys, pool):
    lab = pd.read_csv(pool / "labels.csv")
    lab["homo_lumo_gap"] = np.nan
    lab["formation_energy_per_site"] = np.nan
    assert main(_campaign(tmp_path, pool, lab)) == 2
    _one_error_line(capsys, "labels.csv", "line 2", "formation_energy_per_site", "missing")
    # on request: recorded as failures, counted, reported, exit 1 since nothing could be evaluated
    rc = main(_campaign(tmp_path, pool, lab, "--allow-failures"))
    cap = capsys.readouterr()
    assert rc == 1, (cap.out, cap.err)
    assert "6 failed" in cap.out and "nothing could be evaluated" in cap.err and "non-finite" not in cap.out
    assert main(["campaign", "status", "--db", str(tmp_path / "c.sqlite"), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["failed"] == 6 and st["evaluations"] == 0 and st["failures"][0]["error"]


def test_observe_refuses_infinite_values(tmp_path, capsys, pool):
    db = tmp_path / "c.sqlite"
    assert main(["campaign", "init", "--db", str(db), "--pool", str(pool / "pool"), "--features", "pairs",
                 "--target", "homo_lumo_gap=1.0:1.2"]) == 0
    (tmp_path / "r.csv").write_text("id,homo_lumo_gap\ns0,1.1\ns1,-inf\n")
    capsys.readouterr()
    assert main(["campaign", "observe", "--db", str(db), "--from", str(tmp_path / "r.csv")]) == 2
    _one_error_line(capsys, "r.csv", "line 3", "homo_lumo_gap")
    assert main(["campaign", "status", "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["evaluations"] == 0  # nothing of the file recorded


# ---------------------------------------------------------------------- rows 6-7: caps and shortfalls are said
def test_exhaustive_n_is_not_capped_silently():
    from invdesign.generate.design import design

    res = design({"formation_energy_per_site": (1.0, 1.2), "homo_lumo_gap": (0.9, 1.3)}, n=2700,
                 diversity=0.0, mode="exhaustive")
    assert len(res.candidates) == 2700  # the old code returned at most ~2,500 whatever -n said, silently
    assert res.summary["counts"]["shortfall"] == 0 and res.summary["notes"] == []


def test_n_larger_than_what_exists_is_said(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["design", *WINDOW, "-n", "50", "--max-defects", "1", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    s = json.loads((out / "summary.json").read_text())
    k = len(pd.read_csv(out / "candidates.csv"))
    assert k < 50 and s["counts"]["shortfall"] == 50 - k
    assert f"{k} candidates, not the 50 asked for" in err and "exist within the limits" in err
    assert s["notes"] and "exist within the limits" in s["notes"][0]


def test_pool_smaller_than_n_is_said(tmp_path, capsys, pool):
    out = tmp_path / "run"
    assert main(["design", *WINDOW, "-n", "20", "--pool", str(pool / "pool"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    s = json.loads((out / "summary.json").read_text())
    assert "8 candidates, not the 20 asked for" in err and "the pool holds 8 structures" in err
    assert s["counts"]["shortfall"] == 12 and "pool" in s["notes"][0]


# ---------------------------------------------------------------------- row 8: extrapolation counts
def test_extrapolation_inflates_p_in_window_and_says_why(host):
    from invdesign.generate.checks import check_candidates, train_spread
    from invdesign.generate.decoder import Limits
    from invdesign.generate.window import Window
    from invdesign.lattice.enumerate import sample_configurations
    from invdesign.model import load_model

    m = load_model(None)
    # 30 defects: beyond every DFT configuration (the host model serving 4+ defects was trained at 1-24)
    occ = np.concatenate([sample_configurations(host, {"V_S": 12, "W_Mo": 10, "Se_S": 8}, 3, 0),
                          sample_configurations(host, {"V_S": 1}, 2, 0)])
    mean, std = m.predict(occ)
    half = 2 * std[0, 0]
    w = Window.from_dict({"formation_energy_per_site": (mean[0, 0] - half, mean[0, 0] + half)})
    t = check_candidates(occ, m, w, Limits.make(host, 30, 1, None))
    flagged = t["extrapolation"].to_numpy()
    assert flagged[:3].all()
    assert all("30 defects" in r for r in t["extrapolation_reason"][:3])
    assert (t["extrapolation_reason"][~flagged] == "").all()
    sd = train_spread(m)
    eff = np.sqrt(std[:3, 0] ** 2 + sd[0] ** 2)
    assert np.allclose(t["formation_energy_per_site_std_effective"][:3], eff)
    assert np.allclose(t["formation_energy_per_site_std"], std[:, 0])
    assert t["p_in_window"].iat[0] < 0.5 < w.p_in(mean[:1], std[:1])[0]  # no longer ~1 with a meV std


def test_predict_has_extrapolation_reason(tmp_path, host, capsys):
    from invdesign.lattice.enumerate import sample_configurations

    five = sample_configurations(host, {"V_S": 12, "W_Mo": 10, "Se_S": 8}, 1, 0)[0]  # 30: beyond the DFT data
    one = sample_configurations(host, {"V_S": 1}, 1, 0)[0]
    write_structure(five, host, tmp_path / "five.cif")
    write_structure(one, host, tmp_path / "one.cif")
    assert main(["predict", str(tmp_path / "five.cif"), str(tmp_path / "one.cif"), "--out", str(tmp_path / "p.csv")]) == 0
    p = pd.read_csv(tmp_path / "p.csv", keep_default_na=False).set_index("id")
    assert p.loc["five", "extrapolation"] in (True, "True") and "30 defects" in p.loc["five", "extrapolation_reason"]
    assert p.loc["one", "extrapolation_reason"] == ""


def test_design_csv_has_extrapolation_reason(tmp_path, pool):
    out = tmp_path / "run"
    assert main(["design", *WINDOW, "-n", "5", "--pool", str(pool / "pool"), "--out", str(out)]) == 0
    c = pd.read_csv(out / "candidates.csv", keep_default_na=False)
    assert "extrapolation_reason" in c.columns
    assert ((c["extrapolation_reason"] != "") == c["extrapolation"].astype(bool)).all()
    assert "std_effective" in json.loads((out / "summary.json").read_text())["extrapolation_policy"]


# ---------------------------------------------------------------------- row 9-10: portable campaigns, read-only status
def test_campaign_resumes_from_another_folder(tmp_path, monkeypatch, capsys, pool):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "labels.csv").write_bytes((pool / "labels.csv").read_bytes())
    monkeypatch.chdir(a)
    base = ["--target", "homo_lumo_gap=1.0:1.2", "--features", "pairs", "--batch", "2"]
    assert main(["campaign", "run", "--db", "c.sqlite", "--pool", str(pool / "pool"), "--oracle", "table:labels.csv",
                 *base, "--budget", "2"]) == 0
    monkeypatch.chdir(b)
    assert main(["campaign", "run", "--db", str(a / "c.sqlite"), "--budget", "4"]) == 0
    capsys.readouterr()
    assert main(["campaign", "status", "--db", str(a / "c.sqlite"), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["evaluations"] == 4 and st["oracle"] == f"table:{a / 'labels.csv'}"


def test_read_only_commands_never_modify_the_database(tmp_path, capsys, pool):
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    assert main(["campaign", "status", "--db", str(empty)]) == 2
    _one_error_line(capsys, "empty.sqlite")
    assert empty.stat().st_size == 0
    db = tmp_path / "c.sqlite"
    assert main(["campaign", "init", "--db", str(db), "--pool", str(pool / "pool"), "--features", "pairs",
                 "--target", "homo_lumo_gap=1.0:1.2"]) == 0
    (tmp_path / "r.csv").write_text("id,homo_lumo_gap\ns0,1.1\ns1,1.5\n")
    assert main(["campaign", "observe", "--db", str(db), "--from", str(tmp_path / "r.csv")]) == 0
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    h = hashlib.sha256(db.read_bytes()).hexdigest()
    mtime = db.stat().st_mtime_ns
    assert main(["campaign", "status", "--db", str(db), "--json"]) == 0
    assert main(["campaign", "report", "--db", str(db), "--out", str(tmp_path / "rep")]) == 0
    assert hashlib.sha256(db.read_bytes()).hexdigest() == h and db.stat().st_mtime_ns == mtime


# ---------------------------------------------------------------------- row 11: validation before the model loads
@pytest.mark.parametrize("argv", [
    ["embed", "missing_dir/", "--out", "z.csv"],
    ["predict", "missing_dir/", "--out", "p.csv"],
    ["embed", "POOL", "--out", "nope/z.csv"],
    ["design", "-n", "3", "--out", "run", "--pool", "missing_dir/"],
    ["design", "-n", "3", "--out", "run", "--types", ","],
    ["decode", "Z", "--out", "nope/dec"],
    ["benchmark", "--data", "missing_dir/", "--out", "b"],
    ["plot", "umap", "--out", "u.png", "--model", "missing.pt"],
])
def test_inputs_are_checked_before_the_model_loads(tmp_path, monkeypatch, capsys, pool, zcsv, argv):
    import invdesign.model

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(invdesign.model, "load_model", boom)
    monkeypatch.chdir(tmp_path)
    argv = [str(pool / "pool") if a == "POOL" else str(zcsv) if a == "Z" else a for a in argv]
    if argv[0] == "design":
        argv[1:1] = WINDOW
    assert main(argv) == 2
    _one_error_line(capsys)
    assert _tree(tmp_path) == {}


# ---------------------------------------------------------------------- row 12: SIGKILL leaves nothing forever
def test_staging_of_a_killed_run_is_cleaned_by_the_next(tmp_path):
    out = tmp_path / "cifs"
    code = ("import sys; from invdesign.cli import main; "
            f"sys.exit(main(['enumerate', '--max-defects', '2', '--out', {str(tmp_path / 'e.csv')!r}, "
            f"'--structures', {str(out)!r}]))")
    env = {**os.environ, "INVDESIGN_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    staged = []
    t0 = time.time()
    while time.time() - t0 < 120 and proc.poll() is None:
        staged = [p for p in tmp_path.iterdir() if p.name.startswith(".cifs.") and p.is_dir()]
        if staged and len(list(staged[0].iterdir())) > 20:
            break
        time.sleep(0.02)
    assert staged, "the run never staged its output"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert staged[0].exists() and not out.exists() and not (tmp_path / "e.csv").exists()  # nothing half-written
    assert main(["enumerate", "--max-defects", "1", "--out", str(tmp_path / "e.csv"), "--structures", str(out)]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------- row 13: a pristine cell
def test_pristine_cell_has_no_formation_energy(tmp_path, host, capsys):
    write_structure(host.host_code, host, tmp_path / "pristine.cif")
    assert main(["predict", str(tmp_path / "pristine.cif"), "--out", str(tmp_path / "p.csv")]) == 0
    p = pd.read_csv(tmp_path / "p.csv")
    assert np.isnan(p["formation_energy_per_site"].iat[0]) and np.isnan(p["formation_energy_per_site_std"].iat[0])
    assert np.isfinite(p["homo_lumo_gap"].iat[0]) and "undefined" in p["note"].iat[0]
    assert "formation_energy_per_site is undefined" in capsys.readouterr().err


# ---------------------------------------------------------------------- row 14: progress when not on a terminal
def test_progress_lines_when_not_on_a_terminal(monkeypatch, capsys):
    from invdesign import progress

    monkeypatch.delenv("INVDESIGN_PROGRESS", raising=False)
    monkeypatch.setenv("INVDESIGN_PROGRESS_INTERVAL", "0.1")
    with progress.task("long stage", total=4) as advance:
        for _ in range(4):
            time.sleep(0.12)
            advance()
    for _ in progress.track(range(3), "another stage"):
        time.sleep(0.15)
    err = capsys.readouterr().err
    assert "invdesign: long stage:" in err and "/4" in err and "invdesign: another stage:" in err
    monkeypatch.setenv("INVDESIGN_PROGRESS", "0")
    with progress.task("silent", total=1):
        time.sleep(0.25)
    assert capsys.readouterr().err == ""


def test_train_progress_lines_not_on_a_terminal(monkeypatch, capsys):
    """``train`` drives its bars through ``_progress()``: off a terminal it writes lines."""
    from invdesign import progress

    monkeypatch.delenv("INVDESIGN_PROGRESS", raising=False)
    monkeypatch.setenv("INVDESIGN_PROGRESS_INTERVAL", "0.1")
    assert progress.enabled()
    with progress._progress() as prog:
        t = prog.add_task("encoder", total=10)
        for i in range(10):
            prog.update(t, completed=i + 1)
            time.sleep(0.03)
    assert "invdesign: encoder:" in capsys.readouterr().err


def test_suggest_shortfall_is_said(tmp_path, capsys, pool):
    db = tmp_path / "c.sqlite"
    assert main(["campaign", "init", "--db", str(db), "--pool", str(pool / "pool"), "--features", "pairs",
                 "--target", "homo_lumo_gap=1.0:1.2"]) == 0
    capsys.readouterr()
    assert main(["campaign", "suggest", "--db", str(db), "-n", "50"]) == 0
    err = capsys.readouterr().err
    assert "suggestions, not 50" in err and len(err.strip().splitlines()) == 1
