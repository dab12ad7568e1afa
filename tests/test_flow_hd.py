"""The packaged high-density flow against the packaged model, through the CLI.

If this fails with "fitted for another model's embedding", ``default_model.pt`` changed: refit
``invdesign/resources/flow_hd.pt`` with ``benchmarks/fit_flow_hd.py`` (its docstring has the commands).
"""

from __future__ import annotations

import json

import pandas as pd

from invdesign.cli import main


def test_packaged_flow_matches_the_packaged_model_and_auto_seeds_annealing(tmp_path):
    from invdesign.generate.decoder import Limits
    from invdesign.generate.flow_hd import get_hd_flow
    from invdesign.model import load_model

    model = load_model()
    hd = get_hd_flow(model)  # raises (naming the refit command) when the embedding changed
    assert hd.report["n_defects_range"] == [4, 30] and hd.covers(model.host, Limits.make(model.host, 24, 16))
    out = tmp_path / "hd"
    assert main(["design", "--target", "formation_energy_per_site=3.0:3.1", "-n", "5", "--min-defects", "8",
                 "--max-defects", "10", "--seed", "3", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["request"]["mode_used"] == "flow-anneal" and "flow-anneal has the lowest measured" in s["auto_reason"]
    c = pd.read_csv(out / "candidates.csv")
    assert len(c) == 5 and c["within_limits"].all() and c["canonical_key"].is_unique
    assert c["n_defects"].between(8, 10).all()
    assert c["formation_energy_per_site"].between(3.0, 3.1).all()  # harvested by the predicted mean
