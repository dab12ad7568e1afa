"""Property-based tests (hypothesis) of the CLI contract over generated inputs.

For every generated input a command either exits 0 with a valid result, or exits 2 with exactly
one line on stderr (``invdesign: error: ...``) and nothing written or destroyed (the working
folder is byte-for-byte as before). Inputs: target windows and ``-n``, output paths (new,
nested, existing, user-owned, previous outputs, ``.``), label tables with NaN / inf / text /
missing ids, and structures with random perturbations.

Deterministic (``derandomize=True``, no example database) and small (``max_examples``), so the
suite runs in CI in about a minute on one core. ``pytest --hypothesis-show-statistics`` prints
how many cases each property tried.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from invdesign.cli import main  # noqa: E402
from invdesign.data.dataset import TARGETS  # noqa: E402

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TRIED: dict[str, int] = {}


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(root)) + "/"] = ""
    return out


def _run(capsys, argv: list[str], root: Path, name: str, changes: tuple[str, ...] = (),
         sidecars: tuple[str, ...] = ()) -> tuple[int, str]:
    """Run the CLI; on exit 2 assert one line and an untouched ``root``; on exit 0 nothing but the command's
    own outputs (and the files in ``changes``, e.g. the campaign database it records into) changed.
    ``sidecars`` are ignored either way (SQLite's ``-wal``/``-shm`` files, which it creates when reading a
    database in WAL mode). Returns ``(code, stdout)``."""
    TRIED[name] = TRIED.get(name, 0) + 1
    capsys.readouterr()
    before = _tree(root)
    code = main(argv)
    cap = capsys.readouterr()
    _run.last_err = cap.err
    assert code in (0, 2), (argv, code, cap.err)
    if code == 2:
        lines = cap.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("invdesign: error: ") and "Traceback" not in cap.err, (argv, cap.err)
        after = {k: v for k, v in _tree(root).items() if k not in sidecars}
        assert after == {k: v for k, v in before.items() if k not in sidecars}, argv
    else:  # nothing that was there is lost or changed, except a previous output the command replaces
        after = _tree(root)
        lost = [k for k, h in before.items()
                if after.get(k) != h and not k.startswith(_replaceable(argv)) and k not in changes + sidecars]
        assert not lost, (argv, lost)
    return code, cap.out


def _replaceable(argv: list[str]) -> str:
    """Relative prefix of what ``argv`` may replace (its outputs, with --overwrite)."""
    if "--overwrite" not in argv:
        return "\0"
    return "out"


@pytest.fixture(scope="module")
def pool(tmp_path_factory, host):
    from conftest import write_small_pool

    return write_small_pool(tmp_path_factory.mktemp("hpool") / "pool", host)


@pytest.fixture(scope="module")
def template_db(tmp_path_factory, pool):
    db = tmp_path_factory.mktemp("hdb") / "c.sqlite"
    assert main(["campaign", "init", "--db", str(db), "--pool", str(pool), "--features", "pairs",
                 "--target", "homo_lumo_gap=1.0:1.2"]) == 0
    return db


def _work() -> Path:
    return Path(tempfile.mkdtemp(prefix="hyp-"))


# ---------------------------------------------------------------------- targets and -n
_num = st.one_of(st.floats(-5, 5, allow_nan=False).map(lambda x: f"{x:.3f}"), st.just(""), st.sampled_from(
    ["inf", "-inf", "nan", "1e400", "abc", "1,5", " 0.5 "]))
_target = st.one_of(
    st.builds(lambda n, a, b: f"{n}={a}:{b}", st.sampled_from([*TARGETS, "band_gap", "E"]), _num, _num),
    st.text(max_size=12),
)


@settings(max_examples=14, **SETTINGS)
@given(targets=st.lists(_target, min_size=1, max_size=3), n=st.integers(-2, 12))  # no --target: a usage error (main(), the lead's)
def test_design_targets_and_n(capsys, pool, targets, n):
    root = _work()
    try:
        argv = ["design", *[a for t in targets for a in ("--target", t)], "-n", str(n), "--pool", str(pool),
                "--out", str(root / "out")]
        code, _ = _run(capsys, argv, root, "design targets/-n")
        if code == 0:
            c = pd.read_csv(root / "out" / "candidates.csv")
            s = json.loads((root / "out" / "summary.json").read_text())
            assert len(c) == min(n, 6) and c["p_in_window"].between(0, 1).all()
            assert s["counts"]["shortfall"] == n - len(c) and bool(s["notes"]) == (len(c) < n)
        else:
            assert not (root / "out").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------- output paths
_kinds = st.sampled_from(["new", "nested-missing", "empty", "foreign", "previous", "other-command", "file", "dot",
                          "spaces é", "previous+foreign"])


def _prepare(root: Path, kind: str) -> str:
    out = root / "out"
    if kind == "nested-missing":
        return str(root / "missing" / "out")
    if kind == "spaces é":
        return str(root / "out dir é")
    if kind in ("empty", "foreign", "previous", "other-command", "previous+foreign", "dot"):
        out.mkdir()
    if kind in ("previous", "previous+foreign"):
        out.rmdir()
        assert main(["enumerate", "--max-defects", "1", "--out", str(root / "prev.csv"), "--structures", str(out)]) == 0
        (root / "prev.csv").unlink()
    if kind in ("foreign", "previous+foreign"):
        (out / "thesis.txt").write_text("mine")
    if kind == "other-command":
        (out / ".invdesign-manifest.json").write_text(json.dumps({"command": "design", "files": [], "dirs": []}))
    if kind == "file":
        out.write_text("a file")
    if kind == "dot":
        return "."
    return str(out)


@settings(max_examples=20, **SETTINGS)
@given(kind=_kinds, overwrite=st.booleans())
def test_output_folder_policy(capsys, monkeypatch, kind, overwrite):
    root = _work()
    try:
        out = _prepare(root, kind)
        monkeypatch.chdir(root / "out" if kind == "dot" else root)
        argv = ["enumerate", "--max-defects", "1", "--out", str(root / "e.csv"), "--structures", out]
        if overwrite:
            argv.append("--overwrite")
        code, _ = _run(capsys, argv, root, "output folders")
        expect_ok = kind in ("new", "empty", "spaces é", "dot") or (kind == "previous" and overwrite)
        assert (code == 0) == expect_ok, (kind, overwrite, code)
        if code == 0:
            d = Path(out) if kind != "dot" else root / "out"
            man = json.loads((d / ".invdesign-manifest.json").read_text())
            assert sorted(p.name for p in d.glob("*.cif")) == sorted(man["files"])
            assert not [p for p in root.rglob(".*tmp*")]
    finally:
        shutil.rmtree(root, ignore_errors=True)


@settings(max_examples=12, **SETTINGS)
@given(kind=st.sampled_from(["new", "exists", "dir", "missing-parent", "bad-suffix", "dot"]), overwrite=st.booleans())
def test_output_file_policy(capsys, monkeypatch, pool, kind, overwrite):
    root = _work()
    try:
        monkeypatch.chdir(root)
        out = {"new": "k.csv", "exists": "out", "dir": "d", "missing-parent": "no/k.csv", "bad-suffix": "k.txt",
               "dot": "."}[kind]
        if kind == "exists":
            out = "out.csv"
            (root / out).write_text("mine\n")
        if kind == "dir":
            (root / "d.csv").mkdir()
            out = "d.csv"
        argv = ["canon", str(pool), "--out", out] + (["--overwrite"] if overwrite else [])
        # an existing file may be replaced only with --overwrite: the snapshot may change only then
        code, _ = _run(capsys, argv, root, "output files")
        assert (code == 0) == (kind == "new" or (kind == "exists" and overwrite)), (kind, overwrite)
        if code == 0:
            assert len(pd.read_csv(root / out)) == 6
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------- label tables
_value = st.one_of(st.floats(-3, 3, allow_nan=False).map(lambda x: f"{x:.4f}"),
                   st.sampled_from(["", "nan", "NaN", "inf", "-inf", "Infinity", "abc", "1e999", "0x1"]))
_ident = st.sampled_from(["s0", "s1", "s2", "s3", "s4", "s5", "zzz", ""])


@settings(max_examples=25, **SETTINGS)
@given(rows=st.lists(st.tuples(_ident, _value, _value), min_size=1, max_size=5, unique_by=lambda r: r[0]))
def test_observe_label_tables(capsys, template_db, rows):
    root = _work()
    try:
        db = root / "c.sqlite"
        shutil.copy(template_db, db)
        f = root / "r.csv"
        f.write_text("id,formation_energy_per_site,homo_lumo_gap\n" + "".join(f"{i},{a},{b}\n" for i, a, b in rows))
        code, _ = _run(capsys, ["campaign", "observe", "--db", str(db), "--from", str(f)], root, "observe labels",
                       changes=("c.sqlite",))
        assert main(["campaign", "status", "--db", str(db), "--json"]) == 0
        st_ = json.loads(capsys.readouterr().out)
        if code == 0:
            from invdesign.campaign import Campaign

            with Campaign.open(db, readonly=True) as c:
                obs = c.observations()
            vals = obs[list(TARGETS)].to_numpy(float)
            assert not np.isinf(vals).any() and (np.isfinite(vals).any(axis=1)).all()
            assert st_["evaluations"] == len(obs) <= len(rows)
        else:
            assert st_["evaluations"] == 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


@settings(max_examples=10, **SETTINGS)
@given(rows=st.lists(st.tuples(st.sampled_from(["s0", "s1", "s2", "s3", "s4", "s5", "zzz"]), _value, _value),
                     min_size=1, max_size=6, unique_by=lambda r: r[0]))
def test_table_oracle_label_tables(capsys, pool, rows):
    root = _work()
    try:
        f = root / "labels.csv"
        f.write_text("_id,formation_energy_per_site,homo_lumo_gap\n" + "".join(f"{i},{a},{b}\n" for i, a, b in rows))
        argv = ["campaign", "run", "--db", str(root / "c.sqlite"), "--pool", str(pool), "--oracle", f"table:{f}",
                "--target", "homo_lumo_gap=1.0:1.2", "--features", "pairs", "--batch", "2", "--budget", "4"]
        code, _ = _run(capsys, argv, root, "table oracle labels")
        if code == 0:
            assert main(["campaign", "status", "--db", str(root / "c.sqlite"), "--json"]) == 0
            s = json.loads(capsys.readouterr().out)
            assert s["failed"] == 0 and s["evaluations"] >= 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------- perturbed structures
@settings(max_examples=16, **SETTINGS)
@given(sigma=st.sampled_from([0.0, 0.05, 0.2, 0.5, 1.0, 3.0]), seed=st.integers(0, 2**16),
       drop=st.integers(0, 3), scale=st.sampled_from([1.0, 1.0, 1.02, 1.3]))
def test_perturbed_structures(capsys, host, sigma, seed, drop, scale):
    from invdesign.lattice.config import config_to_structure
    from invdesign.lattice.enumerate import sample_configurations

    root = _work()
    try:
        occ = sample_configurations(host, {"V_S": 1, "W_Mo": 1}, 1, seed)[0]
        s = config_to_structure(occ, host)
        rng = np.random.default_rng(seed)
        for i in range(len(s)):
            s.translate_sites([i], rng.normal(0, sigma, 3) if sigma else np.zeros(3), frac_coords=False)
        if drop:
            s.remove_sites(list(rng.choice(len(s), drop, replace=False)))
        if scale != 1.0:
            s.scale_lattice(s.volume * scale**2)
        (root / "in").mkdir()
        s.to(filename=str(root / "in" / "x.cif"))
        code, _ = _run(capsys, ["canon", str(root / "in"), "--out", str(root / "k.csv")], root, "perturbed canon")
        if code == 0:
            k = pd.read_csv(root / "k.csv")
            assert len(k) == 1 and k["canonical_key"].iat[0].startswith(host.name)
        code, _ = _run(capsys, ["predict", str(root / "in"), "--out", str(root / "p.csv")], root, "perturbed predict")
        if code == 0:
            p = pd.read_csv(root / "p.csv")
            assert len(p) == 1 and math.isfinite(p["homo_lumo_gap"].iat[0]) and p["homo_lumo_gap_std"].iat[0] > 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------- option values and campaign databases
_opt = st.one_of(st.integers(-3, 10**6), st.sampled_from([2**64, 2**63, -(2**63)]),
                 st.floats(allow_nan=True, allow_infinity=True).map(repr), st.sampled_from(["nan", "inf", "1e400"]))


@settings(max_examples=16, **SETTINGS)
@given(option=st.sampled_from(["-n", "--diversity", "--seed", "--samples", "--max-defects", "--min-defects",
                               "--check-top"]), value=_opt)
def test_design_option_values(capsys, option, value):
    """Any value of a numeric design option: refused in one line before any model loads, or a valid value
    (the run then stops at the missing pool, also in one line)."""
    root = _work()
    try:
        argv = ["design", "--target", "homo_lumo_gap=1:2", option, str(value), "--pool", str(root / "missing"),
                "--out", str(root / "out")]
        code, _ = _run(capsys, argv, root, "design option values")
        assert code == 2 and not (root / "out").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)


_MISSING = "missing-input"
_OPTIONS = [  # (command line with a missing input, numeric option): every other command's numeric options
    *[(["campaign", "init", "--db", "{root}/c.sqlite", "--pool", "{root}/" + _MISSING, "--features", "pairs",
        "--target", "homo_lumo_gap=1:2"], o)
      for o in ("--batch", "--budget", "--until-hits", "--seed", "--generate", "--max-defects", "--min-defects",
                "--threshold")],
    *[(["campaign", "run", "--db", "{root}/c.sqlite", "--pool", "{root}/" + _MISSING, "--features", "pairs",
        "--target", "homo_lumo_gap=1:2", "--oracle", "surrogate", "--budget", "2"], o)
      for o in ("--batch", "--budget", "--until-hits", "--seed", "--max-steps", "--threshold")],
    *[(["label", "{root}/" + _MISSING, "--oracle", "surrogate", "--out", "{root}/l.csv"], o)
      for o in ("--steps", "--fmax", "--tol")],
    (["canon", "{root}/" + _MISSING, "--out", "{root}/k.csv"], "--tol"),
    (["predict", "{root}/" + _MISSING, "--out", "{root}/p.csv"], "--tol"),
    (["embed", "{root}/" + _MISSING, "--out", "{root}/e.csv"], "--tol"),
    (["enumerate", "--out", "{root}/" + _MISSING + "/e.csv"], "--max-defects"),
]


def _absurd(value) -> bool:
    """A value no numeric option of these commands may take: not a finite number, or negative."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return True
    return not math.isfinite(x) or x < 0


@settings(max_examples=40, **SETTINGS)
@given(spec=st.sampled_from(_OPTIONS), value=_opt)
def test_command_option_values(capsys, spec, value):
    """Any value of a numeric option of campaign init / run, label, canon, predict, embed, enumerate: refused in
    one line naming the option (always so for a non-finite or negative value), or accepted, the run then stopping
    at the missing input, also in one line; nothing written either way."""
    root = _work()
    try:
        base, option = spec
        argv = [a.replace("{root}", str(root)) for a in base] + [option, str(value)]
        code, _ = _run(capsys, argv, root, "other commands' option values")
        err = _run.last_err
        assert code == 2 and (option in err or _MISSING in err), (argv, err)
        if _absurd(value):
            assert option in err, (argv, err)
    finally:
        shutil.rmtree(root, ignore_errors=True)


_spec = st.one_of(st.builds(lambda k, v: f"{k}:{v}", st.sampled_from(["process", "thread", "dask-local", "inline", "x"]),
                            _opt),
                  st.builds(lambda h, p: f"dask://{h}:{p}", st.sampled_from(["127.0.0.1", "", "[::1]", "a b", "h/x"]),
                            st.one_of(st.integers(-5, 70000), st.just("x"))),
                  st.text(max_size=12), st.sampled_from(["dask://", "auto", "inline", "process", "thread:0"]))


@settings(max_examples=20, **SETTINGS)
@given(spec=_spec)
def test_executor_specs(capsys, spec):
    """Any ``--executor`` value: refused in one line naming the executor, or accepted, the run then stopping at the
    missing input (nothing started, nothing written)."""
    root = _work()
    try:
        argv = ["label", str(root / _MISSING), "--oracle", "surrogate", "--out", str(root / "l.csv"), "--executor", spec]
        code, _ = _run(capsys, argv, root, "executor specs")
        err = _run.last_err
        assert code == 2 and ("executor" in err or _MISSING in err), (spec, err)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@settings(max_examples=12, **SETTINGS)
@given(cid=st.one_of(st.text(max_size=12), st.sampled_from(["../x", "/tmp/x", "a/b", "..", ".", "", "a\nb", "ok-id"])))
def test_campaign_database_ids(capsys, template_db, cid):
    """A candidate id edited in the database: suggest --structures writes only inside its folder, or refuses
    in one line with nothing recorded."""
    import sqlite3

    root = _work()
    try:
        db = root / "c.sqlite"
        shutil.copy(template_db, db)
        con = sqlite3.connect(db)
        con.execute("UPDATE candidates SET id = ? WHERE idx = 0", (cid,))
        con.commit()
        con.close()
        argv = ["campaign", "suggest", "--db", str(db), "-n", "6", "--structures", str(root / "sug")]
        code, _ = _run(capsys, argv, root, "campaign database ids", changes=("c.sqlite", "c.sqlite-wal", "c.sqlite-shm"))
        outside = [p for p in root.rglob("*") if p.suffix == ".cif" and root / "sug" not in p.parents]
        assert not outside and not (Path("/tmp") / "x.cif").exists()
        if code == 0:
            assert len(list((root / "sug").glob("*.cif"))) == 6
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def observed_db(tmp_path_factory, template_db):
    """The template campaign with two observations and one pending suggestion."""
    d = tmp_path_factory.mktemp("hobs")
    db = d / "c.sqlite"
    shutil.copy(template_db, db)
    (d / "obs.csv").write_text("id,formation_energy_per_site,homo_lumo_gap\ns0,1.1,0.7\ns3,1.3,1.1\n")
    assert main(["campaign", "observe", "--db", str(db), "--from", str(d / "obs.csv")]) == 0
    assert main(["campaign", "suggest", "--db", str(db), "-n", "1"]) == 0
    return db


_CELLS = [("observations", "homo_lumo_gap", "seq = 1"), ("observations", "formation_energy_per_site", "seq = 2"),
          ("observations", "step", "seq = 1"), ("observations", "occ", "seq = 1"), ("observations", "canonical_key", "seq = 2"),
          ("suggestions", "acquisition", "sid = 1"), ("suggestions", "homo_lumo_gap_std", "sid = 1"),
          ("suggestions", "step", "sid = 1"), ("suggestions", "idx", "sid = 1"), ("candidates", "occ", "idx = 2"),
          ("candidates", "canonical_key", "idx = 4"), ("meta", "value", "key = 'step'"),
          ("arrays", "data", "name = 'features'"), ("arrays", "shape", "name = 'features'")]
_cell = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**63), 2**63 - 1),
                  st.text(max_size=8), st.binary(max_size=8), st.none(), st.sampled_from([1e308, -1.0, "1e400", "0.5"]))


@settings(max_examples=24, **SETTINGS)
@given(cell=st.sampled_from(_CELLS), value=_cell)
def test_campaign_database_values(capsys, observed_db, cell, value):
    """Any value written by hand into a campaign database (observations, suggestions, candidates, the step,
    the features): suggest and status either work or refuse in one line, with the database unchanged, and
    never print NaN or infinity."""
    import sqlite3

    root = _work()
    try:
        db = root / "c.sqlite"
        shutil.copy(observed_db, db)
        table, column, where = cell
        con = sqlite3.connect(db)
        try:
            con.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (value,))
            con.commit()
        except sqlite3.IntegrityError:  # NOT NULL / UNIQUE / CHECK: SQLite itself keeps this value out
            return
        finally:
            con.close()
        TRIED["campaign database values"] = TRIED.get("campaign database values", 0) + 1
        sidecars = ("c.sqlite-wal", "c.sqlite-shm")
        code, out = _run(capsys, ["campaign", "status", "--db", str(db), "--json"], root, "campaign database status",
                         sidecars=sidecars)
        if code == 0:
            assert "NaN" not in out and "Infinity" not in out, out
        argv = ["campaign", "suggest", "--db", str(db), "-n", "1", "--structures", str(root / "sug")]
        code, _ = _run(capsys, argv, root, "campaign database suggest", changes=("c.sqlite",), sidecars=sidecars)
        assert (code == 0) == (root / "sug").is_dir()
    finally:
        shutil.rmtree(root, ignore_errors=True)


_CONFIG_KEYS = ["batch", "budget", "until_hits", "seed", "oracle", "target", "host", "acquisition", "executor",
                "features", "warm_start", "space", "model", "version", "allow_failures"]
_json_value = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=10), st.lists(st.integers(-3, 3), max_size=2),
                        st.dictionaries(st.sampled_from(["window", "host", "supercell", "kind"]), st.integers(-2, 2),
                                        max_size=2),
                        st.sampled_from(["python:this:x", "python:os:system", "table:/etc/passwd", "surrogate",
                                         "dask://127.0.0.1:1", "process:99999999", "dask-local:100000", "builtin:MoS2",
                                         "../../x", "/etc/passwd", "ei", "pwin", "model", "pairs"]))


@settings(max_examples=30, **SETTINGS)
@given(key=st.sampled_from(_CONFIG_KEYS), value=_json_value)
def test_campaign_database_config(capsys, template_db, key, value):
    """Any value written by hand into a campaign's stored config (JSON, NaN and Infinity tokens included): status,
    suggest and run (which names no oracle) either work or refuse in one line, nothing outside the database
    changes, no NaN or Infinity is printed, and a stored oracle that imports code (``python:this:x`` prints the Zen
    of Python on import) never runs."""
    import sqlite3

    root = _work()
    try:
        db = root / "c.sqlite"
        shutil.copy(template_db, db)
        con = sqlite3.connect(db)
        cfg = json.loads(con.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
        cfg[key] = value
        con.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(cfg),))
        con.commit()
        con.close()
        sidecars = ("c.sqlite-wal", "c.sqlite-shm")
        code, out = _run(capsys, ["campaign", "status", "--db", str(db), "--json"], root, "campaign database config",
                         sidecars=sidecars)
        if code == 0:
            assert "NaN" not in out and "Infinity" not in out, out
        code, out = _run(capsys, ["campaign", "suggest", "--db", str(db), "-n", "1"], root, "campaign database config",
                         changes=("c.sqlite",), sidecars=sidecars)
        named = [] if key == "oracle" else ["--oracle", "surrogate"]  # the stored oracle runs only if named again
        code, out = _run(capsys, ["campaign", "run", "--db", str(db), "--max-steps", "1", "--budget", "1",
                                  "--executor", "inline", *named], root, "campaign database config",
                         changes=("c.sqlite",), sidecars=sidecars)
        assert "Beautiful is better than ugly" not in out + _run.last_err
        if isinstance(value, str) and value.startswith("python:") and key == "oracle":
            assert code == 2 and "--trust-db" in _run.last_err, _run.last_err
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_zz_cases_tried():
    """How many generated cases the properties above ran (printed with ``-s``; at least one each)."""
    print("hypothesis cases tried:", json.dumps(TRIED), "total", sum(TRIED.values()))
    if TRIED:
        assert all(v >= 1 for v in TRIED.values())
