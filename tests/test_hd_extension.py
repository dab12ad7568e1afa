"""The train-only extension of the high-density reference (benchmarks/hd_reference.py extend): reproducible,
no configuration of the original set (test part included), ids that cannot collide, and the interleaved
band / placement schedule that keeps any labelled prefix balanced."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "chgnet"


def test_extension_is_reproducible_disjoint_and_interleaved(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from hd_reference import EXT_BLOCKS, PLACEMENTS, extend
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    extend(tmp_path, 30, 12, RESULTS / "hd_manifest.csv")
    capsys.readouterr()
    df = pd.read_csv(tmp_path / "manifest.csv")
    committed = pd.read_csv(RESULTS / "hd_ext_manifest.csv")
    pd.testing.assert_frame_equal(df, committed.iloc[:30].reset_index(drop=True))  # same seed, same draws
    original = pd.read_csv(RESULTS / "hd_manifest.csv")
    assert not set(committed["canonical_key"]) & set(original["canonical_key"])
    assert committed["canonical_key"].is_unique and committed["id"].is_unique
    assert not set(committed["id"]) & set(original["id"]) and (committed["split"] == "train").all()
    for i, r in committed.iterrows():
        lo, hi = EXT_BLOCKS[(i // 3) % len(EXT_BLOCKS)]
        assert lo <= r["n_defects"] <= hi and r["placement"] == PLACEMENTS[i % 3] and r["id"] == f"hdx12_{i:04d}"
    assert sorted(p.stem for p in (tmp_path / "structures").glob("*.cif")) == df["id"].tolist()
    assert committed["family"].nunique() == 11  # every composition family (1, 2 or all 4 of the defect types)
