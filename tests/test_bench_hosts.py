"""benchmarks/bench_hosts.py's bookkeeping: the whole set as one pool of out-of-fold predictions, and the
low-density rows refitted by ``--low-only`` replacing the full runs' (the figures themselves are in results/)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_hosts.py"
    spec = importlib.util.spec_from_file_location("bench_hosts", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _lines(y: np.ndarray, mu: np.ndarray, folds: list[np.ndarray]) -> list[dict]:
    b = _bench()
    return [{"test_pred": {"index": f.tolist(), "n": [5] * len(f), "y": b._listed(y[f]), "mu": b._listed(mu[f]),
                           "std": b._listed(np.full_like(mu[f], 0.01))}} for f in folds]


def test_pooled_ranking_ranks_the_whole_set_once():
    b = _bench()
    rng = np.random.default_rng(0)
    y = np.column_stack([rng.uniform(1, 3, 200), rng.uniform(0, 1, 200), np.full(200, np.nan)])
    folds = np.array_split(rng.permutation(200), 5)
    exact = b.pooled_ranking(_lines(y, y, folds))  # predictions equal to DFT: every top 5 is in its window
    assert len(exact) == 100 and all(w["n_pool"] == 200 for w in exact)
    assert all(0.08 <= w["n_in_window"] / 200 <= 0.12 for w in exact)
    assert all(w["precision_at_5"] == 1.0 for w in exact)
    shuffled = b.pooled_ranking(_lines(y, y[rng.permutation(200)], folds))  # no information: about the window's share
    assert np.mean([w["precision_at_5"] for w in shuffled]) < 0.4
    # folds that miss or repeat a structure are no pool of the whole set
    assert b.pooled_ranking(_lines(y, y, folds[:4])) is None
    assert b.pooled_ranking(_lines(y, y, [*folds, folds[0]])) is None
    assert b.pooled_ranking([{"fold": 0}]) is None
    # NaN (a target the set lacks) travels as null and back
    assert _lines(y, y, folds)[0]["test_pred"]["y"][0][2] is None


def test_low_only_lines_replace_the_full_runs_low_density_rows():
    b = _bench()
    full = {"set": "wse2-high", "variant": "+low", "fold": 0, "n_test": 80, "n_train": 320, "seconds": 1.0,
            "settings": {"radius_energy": 8.0, "radius_ce": 8.0}, "mae": {"formation_energy_per_site": 20.0, "homo_lumo_gap": 40.0}, "cover2": {
                "formation_energy_per_site": 0.95, "homo_lumo_gap": 0.95}, "bands": {},
            "low": {"set": "wse2-low", "n_test": 1068, "mae": {"formation_energy_per_site": 4.0, "homo_lumo_gap": 7.5},
                    "cover2": {"formation_energy_per_site": 0.95, "homo_lumo_gap": 0.95}}}
    low = {"set": "wse2-high", "variant": "+low", "fold": 0, "low": {
        "set": "wse2-low", "n_test": 1068, "mae": {"formation_energy_per_site": 4.0, "homo_lumo_gap": 6.25},
        "cover2": {"formation_energy_per_site": 0.95, "homo_lumo_gap": 0.96}}}
    assert "**7.5 +- 0.0**" in b.summarise([full])
    md = b.summarise([full], [low])
    assert "**6.2 +- 0.0**" in md and "**7.5 +- 0.0**" not in md and "--low-only" in md
