"""The model a design run loads (issue 25): the numpy copy answers as the full model does, bit for bit, and a design
in an enumerable space whose screen is cached runs without torch or scikit-learn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from invdesign.generate.design_model import LazyModel, design_cache_path, load_design_model
from invdesign.predict.serving import default_model_path

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pair():
    """The packaged model, full and lazy (the first load writes the copy, the second reads it)."""
    from invdesign.model import Model

    path = default_model_path()
    design_cache_path(path).unlink(missing_ok=True)
    full = load_design_model(None)
    assert isinstance(full, Model) and design_cache_path(path).is_file()
    lazy = load_design_model(None)
    assert isinstance(lazy, LazyModel)
    return full, lazy


def test_lazy_model_predicts_as_the_full_model(pair):
    from invdesign.generate.decoder import Limits, _model_tag, orbit_index, stored_table
    from invdesign.lattice.enumerate import sample_configurations

    full, lazy = pair
    idx = orbit_index(full, Limits.make(full.host))
    occ = np.concatenate([idx.occ[::17], sample_configurations(full.host, {"V_S": 4, "W_Mo": 3, "Se_S": 2}, 30, 3)])
    for a, b in zip(full.predict(occ), lazy.predict(occ)):
        assert a.tobytes() == b.tobytes()
    assert np.array_equal(full.gap_validated(occ), lazy.gap_validated(occ))
    assert full.extrapolation(occ) == lazy.extrapolation(occ)
    assert np.array_equal(full.fe_reference(occ), lazy.fe_reference(occ))
    assert np.array_equal(full.train_occ, lazy.train_occ) and np.array_equal(full.train_y, lazy.train_y)
    assert _model_tag(lazy, lazy.host) == _model_tag(full, full.host)
    assert list(lazy.heads) == list(full.heads) and "ensemble_z" in lazy.heads
    assert list(lazy.extras) == list(full.extras)
    for name in ("train_z", "orbit_z"):
        assert np.array_equal(stored_table(lazy, name, len(full.train_occ) if name == "train_z" else len(idx.occ), 3, idx.types),
                              stored_table(full, name, len(full.train_occ) if name == "train_z" else len(idx.occ), 3, idx.types))
    assert getattr(lazy, "design_modes", None) is None and lazy._full_model is None  # refused without loading
    full.high_density_model()  # the full model's own caches are never forwarded: a copy fills its own
    assert not any(k.startswith("_") for k in lazy._attr_names & set(vars(full)))
    lazy.high_density_model()
    assert lazy._full_model is None
    assert lazy.prediction_digest() == full.prediction_digest()  # checked equal when written: one cached screen
    # what it does not hold comes from the full model
    assert np.array_equal(lazy.embed(occ[:5]), full.embed(occ[:5])) and lazy._full_model is not None
    assert lazy.heads["ensemble_z"] is full.heads["ensemble_z"] and lazy.dim == full.dim


def test_design_with_the_lazy_model_is_the_full_models(pair):
    """design() in the enumerable space (exhaustive screen, checks, ranking) gives the same table on both."""
    from invdesign.generate.design import design

    full, lazy = pair
    lazy = load_design_model(None)  # a fresh one: nothing loaded yet
    target = {"formation_energy_per_site": (1.0, 1.2), "homo_lumo_gap": (0.9, 1.3)}
    a = design(target, 40, model=full)
    b = design(target, 40, model=lazy)
    assert a.candidates.equals(b.candidates)
    assert np.array_equal(a.occ, b.occ)
    assert lazy._full_model is None


def test_cached_design_cli_imports_neither_torch_nor_sklearn(tmp_path):
    """Second design run in a new process (the copy and the screen cached): no torch, no scikit-learn; the same
    candidates.csv as the first run, which loaded the full model."""
    env = {**os.environ, "INVDESIGN_CACHE_DIR": str(tmp_path / "cache"), "INVDESIGN_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    code = ("import sys; from invdesign.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(json.dumps({'torch': 'torch' in sys.modules, 'sklearn': 'sklearn' in sys.modules}))")
    out = []
    for run in ("a", "b"):
        argv = ["invdesign", "design", "--target", "formation_energy_per_site=1.0:1.2", "--target",
                "homo_lumo_gap=0.9:1.3", "-n", "100", "--out", str(tmp_path / run)]
        r = subprocess.run([sys.executable, "-c", f"import json, sys; sys.argv = {argv!r}\n{code}"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert out[0]["torch"] and not out[1]["torch"] and not out[1]["sklearn"]
    assert (tmp_path / "a" / "candidates.csv").read_bytes() == (tmp_path / "b" / "candidates.csv").read_bytes()


def test_old_copies_are_pruned(pair):
    """Writing a copy keeps the newest KEEP copies (other model files' or layouts') in the cache folder."""
    from invdesign.generate.design_model import KEEP

    path = design_cache_path(default_model_path())
    for i in range(KEEP + 2):
        old = path.parent / f"design-old{i}.npz"
        old.write_bytes(b"x")
        os.utime(old, (1_000_000 + i, 1_000_000 + i))
    path.unlink()
    load_design_model(None)
    kept = sorted(path.parent.glob("design-*.npz"))
    assert path in kept and len(kept) == KEEP
    assert isinstance(load_design_model(None), LazyModel)
