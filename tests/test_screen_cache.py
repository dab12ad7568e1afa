"""The disk cache of the exhaustive screen (issue 25): a hit gives the floats a fresh screen gives, bit for bit,
and any change of what the predictions depend on gives another key."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest

from invdesign.generate import decoder, screen_cache


@pytest.fixture(scope="module")
def model():
    from invdesign.model import load_model

    return load_model()


@pytest.fixture(scope="module")
def full_index(model):
    from invdesign.generate.decoder import Limits, orbit_index

    return orbit_index(model, Limits.make(model.host))


def _small_index(idx, rows: int = 700):
    """Every 19th orbit of the table (1-3 defects, all types): more rows than the gap head walks in numpy, so the
    compiled-tree path and the distinct-row path run as in a full screen."""
    return SimpleNamespace(occ=np.ascontiguousarray(idx.occ[::19][:rows]), host=idx.host)


def _fresh(model, idx):
    decoder._PRED_CACHE.clear()
    return decoder.orbit_predictions(model, idx, use_cache=False)


def test_hit_is_the_fresh_screen_bit_for_bit(model, full_index, monkeypatch):
    """The packaged model on every enumerated orbit: the first call writes the screen, a later process-fresh call
    reads it back without predicting, and both equal the screen computed without the cache, bit for bit."""
    fresh = _fresh(model, full_index)
    decoder._PRED_CACHE.clear()
    key = screen_cache.screen_key(model, full_index)
    assert key is not None
    written = decoder.orbit_predictions(model, full_index)
    assert screen_cache._path(key).is_file()
    decoder._PRED_CACHE.clear()

    def refuse(occ):
        raise AssertionError("the cached screen was not read")

    monkeypatch.setattr(model, "predict", refuse)
    read = decoder.orbit_predictions(model, full_index)
    monkeypatch.undo()
    decoder._PRED_CACHE.clear()
    for a, b, c in zip(fresh, written, read):
        assert a.dtype == b.dtype == c.dtype == np.float64
        assert np.array_equal(a, b) and np.array_equal(a, c)
        assert a.tobytes() == c.tobytes()


def test_key_follows_the_model(model, full_index):
    """Another head, other chemical potentials, another orbit table or another switch: another key; a key does not
    depend on caches the model fills while serving."""
    idx = _small_index(full_index)
    k0 = screen_cache.screen_key(model, idx)
    model.predict(idx.occ[:5])
    model.train_stats()
    assert screen_cache.screen_key(model, idx) == k0  # derived caches are left out

    changed = copy.copy(model)
    changed.heads = dict(model.heads)
    gap = copy.deepcopy(model.heads["gap_gbt"])
    gap.forests[3].value = gap.forests[3].value.copy()
    gap.forests[3].value[7] += 1e-12
    changed.heads["gap_gbt"] = gap
    assert screen_cache.screen_key(changed, idx) not in (None, k0)

    from invdesign.synthesis.chempot import read_mu, with_mu

    ref = with_mu(model, read_mu("S-rich", model.host))
    k_ref = screen_cache.screen_key(ref, idx)
    assert k_ref not in (None, k0)
    assert screen_cache.screen_key(with_mu(model, read_mu("Mo-rich", model.host)), idx) not in (None, k0, k_ref)

    other = SimpleNamespace(occ=idx.occ[:-1], host=idx.host)
    assert screen_cache.screen_key(model, other) != k0


def test_switches_and_foreign_predictors(model, full_index, monkeypatch):
    idx = _small_index(full_index)
    k0 = screen_cache.screen_key(model, idx)
    monkeypatch.setenv("INVDESIGN_HD_MODEL", "0")
    assert screen_cache.screen_key(model, idx) not in (None, k0)
    monkeypatch.delenv("INVDESIGN_HD_MODEL")
    monkeypatch.setenv("INVDESIGN_SCREEN_CACHE", "0")
    assert screen_cache.screen_key(model, idx) is None
    monkeypatch.delenv("INVDESIGN_SCREEN_CACHE")

    class Forwarding:  # forwards every attribute to the model, but predicts something else
        def __getattr__(self, name):
            return getattr(model, name)

    assert screen_cache.screen_key(Forwarding(), idx) is None


def test_small_screen_round_trip_and_damaged_file(model, full_index):
    """A cached screen of 700 orbits reads back exactly; a damaged or foreign file is ignored and rewritten."""
    idx = _small_index(full_index)
    fresh = _fresh(model, idx)
    decoder._PRED_CACHE.clear()
    key = screen_cache.screen_key(model, idx)
    decoder.orbit_predictions(model, idx)
    decoder._PRED_CACHE.clear()
    got = screen_cache.read(key, len(idx.occ))
    assert got is not None and all(np.array_equal(a, b) for a, b in zip(fresh, got))
    assert screen_cache.read(key, len(idx.occ) + 1) is None  # another table size: not this screen
    screen_cache._path(key).write_bytes(b"not a screen")
    assert screen_cache.read(key, len(idx.occ)) is None
    again = decoder.orbit_predictions(model, idx)
    decoder._PRED_CACHE.clear()
    assert all(np.array_equal(a, b) for a, b in zip(fresh, again))
    assert screen_cache.read(key, len(idx.occ)) is not None


def test_code_digest_covers_what_predict_runs(model, full_index):
    """Every module of the package that serving runs (1-3 defects, the DFT host model at 4+, chemical potentials) is
    in the code the key hashes."""
    import sys
    from pathlib import Path

    from invdesign.lattice.enumerate import sample_configurations
    from invdesign.synthesis.chempot import read_mu, with_mu

    root = Path(screen_cache.__file__).resolve().parent.parent
    occ = np.concatenate([full_index.occ[::997], sample_configurations(model.host, {"V_S": 4, "W_Mo": 3}, 5, 1)])
    ref = with_mu(model, read_mu("S-rich", model.host))
    seen: set[str] = set()

    def trace(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(str(root)):
            seen.add(str(Path(frame.f_code.co_filename).relative_to(root)))

    sys.setprofile(trace)
    try:
        ref.predict(occ)
        model.predict(occ)
    finally:
        sys.setprofile(None)
    missing = [f for f in seen if not any(f == c or f.startswith(c + "/") for c in screen_cache.CODE)]
    assert not missing, missing
