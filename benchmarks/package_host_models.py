"""Train and package one host model per 2DMD host (``invdesign/resources/host_models/<Host>.npz``).

Each model trains on every DFT structure of its host in ``../shared/data`` (MoS2 and WSe2: the low- and
high-density sets together; h-BN, GaSe, InSe, black P: their high-density set), cross-fitted as
``HostModel.fit`` does (blends and std calibration on out-of-fold predictions). The accuracy of this recipe on held-out data is what
``benchmarks/bench_hosts.py`` measures (5-fold CV); the packaged models are the same recipe on all data.

    python benchmarks/package_host_models.py [--hosts MoS2,BN,...]

One JSON line per host (training seconds on one thread, blends, out-of-fold MAE, std scales) goes to stdout
and is appended to ``benchmarks/results/host_models.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from invdesign.data.dataset import load_2dmd  # noqa: E402
from invdesign.lattice.hosts import spec  # noqa: E402
from invdesign.predict.defect_env import HostModel, stack  # noqa: E402

SHARED = Path(os.environ.get("INVDESIGN_SHARED", ROOT.parent / "shared"))
SETS = {"MoS2": ["mos2-low", "mos2-high"], "WSe2": ["wse2-low", "wse2-high"], "BN": ["hbn-high"],
        "GaSe": ["gase-high"], "InSe": ["inse-high"], "P": ["bp-high"]}


def packaged_fe_head() -> str:
    """The fingerprint of the packaged 8x8 MoS2 model's formation-energy head (what the MoS2 host model serves beside)."""
    from invdesign.predict.hd_correction import fe_head_fingerprint
    from invdesign.predictor import load_predictor

    p = load_predictor()
    return fe_head_fingerprint(p.heads["ridge_ce"], p.train_stats().seen_clusters)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", default=",".join(SETS))
    ap.add_argument("--out", default=str(ROOT / "invdesign" / "resources" / "host_models"))
    ap.add_argument("--stamp-only", action="store_true",
                    help="only record in an existing MoS2 host model which formation-energy head it serves beside")
    a = ap.parse_args()
    if a.stamp_only:
        path = Path(a.out) / "MoS2.npz"
        m = HostModel.load(path)
        m.meta.pop("header", None)
        m.meta["serves_beside"] = packaged_fe_head()
        m.save(path, {"name": "MoS2", "supercell": [8, 8]})
        print(f"{path}: serves beside {m.meta['serves_beside'][:16]}")
        return
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in a.hosts.split(","):
        t0 = time.time()
        sets = [load_2dmd(SHARED / "data" / f"2dmd-{s}") for s in SETS[name]]
        host, occ, y = stack(sets)
        m = HostModel(host).fit(occ, y)
        m.meta["trained_on"] = SETS[name]
        if name == "MoS2":  # serves the packaged model's configurations of 4+ defects (Predictor.high_density_model)
            m.meta["serves_beside"] = packaged_fe_head()
        s = spec(name)
        path = m.save(out / f"{name}.npz", {"name": s.name, "supercell": list(s.supercell)})
        line = json.dumps({"host": name, "sets": SETS[name], "structures": len(occ), "seconds": round(time.time() - t0, 1),
                           "blend_ce": m.blend.tolist(), "blend_gap_trees": m.blend_gap.tolist(),
                           "heldout_mae_meV": m.meta["heldout_mae_meV"], "radius_ce": m.radius_ce,
                           "radius_ce_cv_meV": m.meta.get("radius_ce_cv_meV"), "gap_trees_loss": m.meta.get("gap_trees_loss"),
                           "file": os.path.relpath(path, ROOT),
                           "bytes": path.stat().st_size, "std_scale": np.round(m.calibration.scale, 2).tolist()})
        print(line, flush=True)
        with (ROOT / "benchmarks" / "results" / "host_models.jsonl").open("a") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":
    main()
