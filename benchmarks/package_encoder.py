"""Swap the packaged model's encoder for one with the O(k^2) product three-body term; refit what reads it.

    OMP_NUM_THREADS=1 python benchmarks/package_encoder.py [--data DIR] [--model PATH] [--out PATH]
    # then the high-density flow, which is tied to the embedding:
    OMP_NUM_THREADS=1 python benchmarks/fit_flow_hd.py sample --work /tmp/flow_hd_product --n 4600
    OMP_NUM_THREADS=1 python benchmarks/fit_flow_hd.py fit --work /tmp/flow_hd_product

The encoder is trained with the packaged recipe (``model.meta["config"]``: same data split, seed,
epochs, margin, ...) and ``three_body="product"`` (:mod:`invdesign.embed.encoder`). Everything that
reads the embedding is refitted as ``invdesign train`` does it: the embedding heads ``ridge_z``,
``poly_z`` and ``ensemble_z`` (and their val/test metrics), the conditional flow (its packaged config)
and the design tables (orbit and train-set embeddings). The cluster-count heads (``ridge_ce``,
``ensemble_ce``, ``gap_gbt``) and the train arrays are kept byte-identical; the script ASSERTS that
the served formation-energy and gap predictions (means and stds) on the 2DMD test split are unchanged
bit for bit and that the formation-energy head fingerprint (``hd_correction.npz`` is tied to it) is
the same, before it writes anything.

Quality gates, old vs new encoder side by side (-> ``benchmarks/results/encoder_product.{json,md}``):
nearest-other-class distance over all enumerated 1-3-defect classes (minimum, how many below the
training margin), symmetry error (largest spread over random host operations of a sample), and the
embedding heads' test MAE (meV).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's invdesign, not an installed one

from invdesign.data.dataset import TARGETS, load_2dmd, split_indices  # noqa: E402
from invdesign.embed.checks import orbit_spread  # noqa: E402
from invdesign.embed.encoder import embed_occ  # noqa: E402
from invdesign.embed.train import DEFAULTS as ENCODER_DEFAULTS  # noqa: E402
from invdesign.embed.train import nearest_other, train_encoder  # noqa: E402
from invdesign.generate.flow import attach_flow, store_design_tables  # noqa: E402
from invdesign.lattice.enumerate import enumerate_orbits  # noqa: E402
from invdesign.model import Model, _mae_mev, default_model_path  # noqa: E402
from invdesign.predict.features import poly2  # noqa: E402
from invdesign.predict.hd_correction import HDCorrection, fe_head_fingerprint  # noqa: E402
from invdesign.predict.heads import EnsembleHead, RidgeHead  # noqa: E402

OUT = ROOT / "benchmarks" / "results"


def gates(model: Model, orbits_occ: np.ndarray, margin: float, rng_seed: int = 1) -> dict:
    """Separation of all enumerated classes and the symmetry error of ``model``'s embedding."""
    t = time.perf_counter()
    z = model.embed(orbits_occ)
    t_embed = time.perf_counter() - t
    _, dmin = nearest_other(z)
    rng = np.random.default_rng(rng_seed)
    sample = rng.choice(len(orbits_occ), 24, replace=False)
    spread = float(orbit_spread(model, orbits_occ[sample]).max())
    return {"classes": len(z), "min_nearest_other": float(dmin.min()), "median_nearest_other": float(np.median(dmin)),
            "below_margin": int((dmin < margin).sum()), "margin": margin, "symmetry_error": spread,
            "symmetry_error_over_min_distance": spread / float(dmin.min()), "embed_orbits_s": round(t_embed, 2)}


def _fingerprint(model: Model) -> str:
    """The formation-energy head fingerprint that ``hd_correction.npz`` is tied to."""
    return fe_head_fingerprint(model.heads["ridge_ce"], np.asarray(model.train_stats().seen_clusters, bool))


def served(model: Model, occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m, s = model.predict(occ)
    return np.asarray(m).copy(), np.asarray(s).copy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "2dmd-mos2-low"))
    ap.add_argument("--model", default=str(default_model_path()))
    ap.add_argument("--out", default=str(default_model_path()))
    ap.add_argument("--rank", type=int, default=ENCODER_DEFAULTS["rank"])
    ap.add_argument("--smoke", action="store_true", help="tiny epochs, results not written (checks the path end to end)")
    a = ap.parse_args()
    if a.smoke and Path(a.out).resolve() == default_model_path().resolve():
        ap.error("--smoke needs --out elsewhere than the packaged model")
    torch.set_num_threads(1)
    old = Model.load(a.model)
    if getattr(old.encoder, "three_body", "mlp") == "product":
        sys.exit(f"{a.model}: its encoder already has the product three-body term; nothing to swap")
    ds = load_2dmd(a.data)
    seed = int(old.meta.get("seed", 0))
    sp = split_indices(ds.ids, tuple(old.meta["split"]["fractions"]), old.meta["split"]["seed"])
    tr, va, te = sp["train"], sp["val"], sp["test"]
    occ, Y = ds.occ, ds.y(TARGETS)
    assert np.array_equal(old.train_occ, occ[tr]), "the model's train arrays are not this dataset's train split"
    before = served(old, occ[te])
    fp_before = _fingerprint(old)
    corr = HDCorrection.load(old.host)
    assert corr is not None and corr.fingerprint == fp_before, "hd_correction.npz does not match the packaged FE head"
    cfg = {**old.meta["config"]}
    orbits = enumerate_orbits(old.host, int(cfg.get("max_orbit_defects", 3)))
    report: dict = {"old": gates(old, orbits.occ, float(cfg["margin"]))}
    print(json.dumps({"old": report["old"]}), flush=True)

    # ---- the new encoder, the packaged recipe with the product three-body term
    enc_cfg = {k: cfg.get(k, v) for k, v in ENCODER_DEFAULTS.items()}
    enc_cfg.update(three_body="product", rank=a.rank)
    if a.smoke:
        enc_cfg["epochs"] = 1
        cfg.update(z_epochs=2)
    t0 = time.time()
    enc, hist = train_encoder(old.host, occ[tr], Y[tr], orbits.occ, enc_cfg, seed)
    t_enc = time.time() - t0
    model = Model(old.host, enc.double().eval(), dict(old.heads), copy.deepcopy(old.meta), old.train_occ, old.train_y,
                  {k: v for k, v in old.extras.items() if k not in ("flow", "design_tables")})
    z = model.embed(occ)
    heads = model.heads
    heads["ridge_z"] = RidgeHead().fit(z[tr], Y[tr], z[va], Y[va])
    pz = poly2(z)
    heads["poly_z"] = RidgeHead().fit(pz[tr], Y[tr], pz[va], Y[va])
    t1 = time.time()
    heads["ensemble_z"] = EnsembleHead(cfg["z_members"], cfg["z_width"], cfg["z_epochs"], seed=seed).fit(z[tr], Y[tr], z[va], Y[va])
    t_z = time.time() - t1
    meta = model.meta
    meta["config"].update(three_body="product", rank=a.rank)
    meta["encoder_history"] = {k: v for k, v in hist.items() if k != "config"}
    meta["timings"].update(encoder_s=t_enc, ensemble_z_s=t_z)
    for split, idx in (("val", va), ("test", te)):
        for head in ("ridge_z", "poly_z", "ensemble_z"):
            meta["metrics"].setdefault(head, {})[split] = _mae_mev(model.predict_head(occ[idx], head)[0], Y[idx])
    report["new"] = gates(model, orbits.occ, float(cfg["margin"]))
    meta["orbit_table"].update(min_distance=report["new"]["min_nearest_other"], below_margin=report["new"]["below_margin"])
    meta["encoder_swap"] = {"from": "mlp triple (O(k^3))", "to": f"product three-body term, rank {a.rank} (O(k^2))",
                            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                            "script": "benchmarks/package_encoder.py"}
    report["new"]["encoder_train_s"] = round(t_enc, 1)
    print(json.dumps({"new": report["new"]}), flush=True)

    # ---- served predictions must not move at all
    after = served(model, occ[te])
    fp_after = _fingerprint(model)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1]), "served predictions changed"
    assert fp_before == fp_after, "formation-energy head fingerprint changed"
    report["served_test_predictions_bit_identical"] = True
    report["test_rows"] = len(te)

    # ---- the flow and the design tables read the embedding: refit them
    t1 = time.time()
    attach_flow(model, ds, seed=seed, config={**old.extras["flow"]["config"], **({"max_epochs": 2} if a.smoke else {})})
    meta["timings"]["flow_s"] = round(time.time() - t1, 1)
    store_design_tables(model)
    report["flow"] = {"old": old.extras["flow"].get("report"), "new": model.extras["flow"].get("report"), "fit_s": meta["timings"]["flow_s"]}
    for head in ("ridge_z", "poly_z", "ensemble_z"):
        report.setdefault("embedding_heads_test_mae_meV", {})[head] = {"old": old.meta["metrics"][head]["test"], "new": meta["metrics"][head]["test"]}
    assert np.array_equal(served(model, occ[te])[0], before[0])
    model.save(a.out)
    # reload check: the saved file serves the same and embeds with the product kind
    back = Model.load(a.out)
    assert back.encoder.three_body == "product"
    assert np.array_equal(served(back, occ[te])[0], before[0]) and np.array_equal(served(back, occ[te])[1], before[1])
    assert np.array_equal(back.embed(occ[te[:50]]), embed_occ(model.encoder, occ[te[:50]], model.host))
    if a.smoke:
        print(json.dumps(report, indent=1, default=str))
        return
    OUT.mkdir(exist_ok=True)
    (OUT / "encoder_product.json").write_text(json.dumps(report, indent=1))
    o, n = report["old"], report["new"]
    lines = ["# Encoder three-body term: MLP over all triples (packaged before) vs factorised product (packaged now)", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; 8x8 MoS2; all {o['classes']:,} enumerated 1-3-defect classes; "
             f"same recipe, split and seed; product rank {a.rank}. Served FE/gap predictions on the {len(te)} test rows: bit-identical.", "",
             "| | MLP triple (old) | product (new) |", "|---|---|---|",
             f"| min nearest-other-class distance | {o['min_nearest_other']:.3g} | {n['min_nearest_other']:.3g} |",
             f"| median nearest-other-class distance | {o['median_nearest_other']:.3g} | {n['median_nearest_other']:.3g} |",
             f"| classes below the margin {o['margin']} | {o['below_margin']:,} | {n['below_margin']:,} |",
             f"| symmetry error (max spread, 24 classes x all ops) | {o['symmetry_error']:.2g} | {n['symmetry_error']:.2g} |",
             f"| symmetry error / min distance | {o['symmetry_error_over_min_distance']:.2g} | {n['symmetry_error_over_min_distance']:.2g} |",
             f"| embed all classes (s, 1 thread) | {o['embed_orbits_s']} | {n['embed_orbits_s']} |"]
    for head, v in report["embedding_heads_test_mae_meV"].items():
        lines.append(f"| {head} test MAE FE / gap (meV) | {v['old']['formation_energy_per_site']:.1f} / {v['old']['homo_lumo_gap']:.1f} | "
                     f"{v['new']['formation_energy_per_site']:.1f} / {v['new']['homo_lumo_gap']:.1f} |")
    fo, fn = report["flow"]["old"] or {}, report["flow"]["new"] or {}
    lines.append(f"| flow val NLL (nats / configuration) | {fo.get('val_nll', float('nan')):.2f} | {fn.get('val_nll', float('nan')):.2f} |")
    (OUT / "encoder_product.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
