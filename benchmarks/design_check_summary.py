"""Summarise a ``design --check`` run at 8-12 defects against random configurations of the same counts.

    PYTHONPATH=. python benchmarks/design_check_summary.py --run /tmp/check_run \
        --reference invdesign/resources/hd_reference.csv

The baseline is the share of high-density reference configurations (corrected CHGNet, the same
reference as the check) with the same defect counts whose formation energy lies in the window.
Writes the pool-mode part of ``benchmarks/results/design_check.{json,md}`` (the generated-mode part,
written by ``design_check_generated.py``, is kept).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--reference", default="invdesign/resources/hd_reference.csv")
    a = ap.parse_args()
    c = pd.read_csv(a.run / "candidates.csv", dtype={"id": str})
    s = json.loads((a.run / "summary.json").read_text())
    chk = s["check"]
    lo, hi = chk["formation_energy_window"]
    top = c[c["check_status"] != "unchecked"]
    counts = sorted(set(top["n_defects"])) if "n_defects" in top else list(range(8, 13))
    ref = pd.read_csv(a.reference)
    ref = ref[~ref["id"].str.startswith("hdx")]  # the original 440 configurations (the committed baseline; hdx* came later)
    same = ref[ref["n_defects"].isin(counts)]
    inside = same["formation_energy_per_site"].between(lo, hi)
    rnd = same["placement"] == "random"
    res = {
        "window_eV": [lo, hi], "checked": int(len(top)), "status": chk["status"],
        "share_in_window_under_check": float(top["check_in_window"].mean()),
        "share_pass": float((top["check_status"] == "pass").mean()),
        "model_predicted_in_window": float(top["formation_energy_per_site"].between(lo, hi).mean()),
        "random_same_counts": {"n": int(len(same)), "share_in_window": float(inside.mean()),
                               "random_placement_only": {"n": int(rnd.sum()), "share_in_window": float(inside[rnd].mean())}},
        "defect_counts": [int(k) for k in counts], "reference": chk["reference"], "relaxation": chk["relaxation"],
        "largest_displacement_A": float(top["check_max_displacement"].max()),
        "changed": top.loc[top["check_status"] == "changed_configuration", ["id", "check_error"]].to_dict("records"),
    }
    path_json = Path("benchmarks/results/design_check.json")
    old = json.loads(path_json.read_text()) if path_json.exists() else {}
    keep = {"generated_mode": old["generated_mode"]} if "generated_mode" in old else {}
    path_json.write_text(json.dumps({"pool_mode": res, **keep}, indent=2) + "\n")
    lines = [f"# design --check at {min(counts)}-{max(counts)} defects (window E_f {lo}:{hi} eV/site)", "",
             f"Check: {chk['reference']}; structure relaxed {chk['relaxation']}.", "",
             "| | share in window |", "|---|---|",
             f"| design candidates, model's prediction ({len(top)}) | {res['model_predicted_in_window']:.2f} |",
             f"| design candidates under the check ({len(top)}) | {res['share_in_window_under_check']:.2f} |",
             f"| design candidates passing the check (same configuration and in window) | {res['share_pass']:.2f} |",
             f"| random configurations of the same counts ({len(same)}, HD reference) | {inside.mean():.2f} |",
             f"| of those, random placement only ({int(rnd.sum())}) | {inside[rnd].mean():.2f} |", "",
             f"Status: {chk['status']}; largest displacement {res['largest_displacement_A']:.2f} A. "
             "The pool is the 8-12-defect part of the high-density set (random, clustered and dispersed placements), "
             "so its own in-window share under the same reference is the random baseline."]
    path_md = Path("benchmarks/results/design_check.md")
    text = path_md.read_text() if path_md.exists() else ""
    generated = text[text.index("## Generated mode"):] if "## Generated mode" in text else ""  # design_check_generated.py
    path_md.write_text("\n".join(lines) + "\n" + ("\n" + generated if generated else ""))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
