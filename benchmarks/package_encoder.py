"""Retrain the packaged model's encoder with a given recipe; refit everything that reads the embedding.

    OMP_NUM_THREADS=1 python benchmarks/package_encoder.py --epochs 60 --w-sup 3 \
        --hd-data ../shared/data/2dmd-mos2-high --hd-repeat 4 [--state F.pt] [--model PATH] [--out PATH]
    # then the high-density flow, which is tied to the embedding:
    OMP_NUM_THREADS=1 python benchmarks/fit_flow_hd.py sample --work /tmp/flow_hd_new --n 4600
    OMP_NUM_THREADS=1 python benchmarks/fit_flow_hd.py fit --work /tmp/flow_hd_new

The encoder is trained on the packaged model's low-density train split (``model.meta["split"]``) and, with
``--hd-data``, on the train split (``split_indices`` seed 0) of the 2DMD high-density set too, its rows
repeated ``--hd-repeat`` times so that a few hundred 4-24-defect structures weigh in the supervised term
beside thousands of 1-3-defect ones (:func:`invdesign.embed.train.train_encoder`: the linear read-out of ``z``
fits the standardised formation energy and gap; the contrastive terms separate every enumerated 1-3-defect
class). No validation or test structure of either set is trained on. ``--state F.pt``: take the encoder
weights a run of this recipe wrote (``--save-state``), instead of training again (the recipe must match the
one recorded beside them).

Everything that reads the embedding is refitted as ``invdesign train`` does it: the embedding heads
``ridge_z``, ``poly_z`` and ``ensemble_z`` (and their val/test metrics), the conditional flow (its packaged
config) and the design tables (orbit and train-set embeddings). The cluster-count heads (``ridge_ce``,
``ensemble_ce``, ``gap_gbt``) and the train arrays are kept byte-identical; the script ASSERTS that the served
formation-energy and gap predictions (means and stds) on the 2DMD test split are unchanged bit for bit and that
the formation-energy head fingerprint (``hd_correction.npz`` is tied to it) is the same, before it writes.

Quality gates, old vs new encoder side by side (-> ``benchmarks/results/encoder_retrain.{json,md}``): the seed's
four embedding rows (ridge on ``z``, ridge on its 91 polynomial features; low density: the packaged split, high
density: ``split_indices`` seed 0 of the high-density set, heads fitted on its train part and tuned on its val
part, as ``invdesign benchmark`` does), nearest-other-class distance over all enumerated 1-3-defect classes
(minimum, how many below the training margin) and the symmetry error (largest spread over random host operations).
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
from invdesign.embed.encoder import build_encoder, embed_occ  # noqa: E402
from invdesign.embed.train import DEFAULTS as ENCODER_DEFAULTS  # noqa: E402
from invdesign.embed.train import nearest_other, train_encoder  # noqa: E402
from invdesign.generate.flow import attach_flow, store_design_tables  # noqa: E402
from invdesign.lattice.enumerate import enumerate_orbits  # noqa: E402
from invdesign.model import Model, _mae_mev, default_model_path  # noqa: E402
from invdesign.predict.benchmark import SEED_TABLE  # noqa: E402
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


def seed_rows(model: Model, sets: list[tuple[str, object, dict]]) -> dict:
    """The seed's four embedding cells per density: ridge on ``z`` and on ``poly2(z)``, fitted on the train part,
    the penalty chosen on the val part, MAE (meV) on the test part (as :func:`invdesign.predict.benchmark.evaluate`)."""
    out: dict = {}
    for name, ds, sp in sets:
        Y = ds.y(TARGETS)
        z = model.embed(ds.occ)
        tr, va, te = sp["train"], sp["val"], sp["test"]
        for row, F in (("SNN embeddings", z), ("SNN embeddings + polynomial features", poly2(z))):
            pred = RidgeHead().fit(F[tr], Y[tr], F[va], Y[va]).predict(F[te])[0]
            out.setdefault(row, {})[name] = {t: float(np.abs(pred[:, j] - Y[te, j]).mean() * 1000) for j, t in enumerate(TARGETS)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "2dmd-mos2-low"))
    ap.add_argument("--hd-data", default=None, help="a 2DMD high-density set of the same host: its train split joins the supervised term")
    ap.add_argument("--hd-repeat", type=int, default=4, help="times each high-density train row enters the encoder's training rows")
    ap.add_argument("--epochs", type=int, default=ENCODER_DEFAULTS["epochs"])
    ap.add_argument("--w-sup", type=float, default=ENCODER_DEFAULTS["w_sup"])
    ap.add_argument("--model", default=str(default_model_path()))
    ap.add_argument("--out", default=str(default_model_path()))
    ap.add_argument("--state", default=None, help="encoder weights written by --save-state of a run with the same recipe")
    ap.add_argument("--save-state", default=None, help="write the trained encoder's weights and recipe here")
    ap.add_argument("--results", default=str(OUT), help="folder for encoder_retrain.{json,md}")
    ap.add_argument("--smoke", action="store_true", help="tiny epochs, results not written (checks the path end to end)")
    a = ap.parse_args()
    if a.smoke and Path(a.out).resolve() == default_model_path().resolve():
        ap.error("--smoke needs --out elsewhere than the packaged model")
    torch.set_num_threads(1)
    old = Model.load(a.model)
    ds = load_2dmd(a.data)
    seed = int(old.meta.get("seed", 0))
    sp = split_indices(ds.ids, tuple(old.meta["split"]["fractions"]), old.meta["split"]["seed"])
    tr, va, te = sp["train"], sp["val"], sp["test"]
    occ, Y = ds.occ, ds.y(TARGETS)
    assert np.array_equal(old.train_occ, occ[tr]), "the model's train arrays are not this dataset's train split"
    sets = [("low density", ds, sp)]
    enc_occ, enc_y = occ[tr], Y[tr]
    hd_info = None
    if a.hd_data:
        hd = load_2dmd(a.hd_data, host=old.host)
        hsp = split_indices(hd.ids, seed=0)
        sets.append(("high density", hd, hsp))
        enc_occ = np.concatenate([enc_occ] + [hd.occ[hsp["train"]]] * a.hd_repeat)
        enc_y = np.concatenate([enc_y] + [hd.y(TARGETS)[hsp["train"]]] * a.hd_repeat)
        hd_info = {"set": hd.name, "train_rows": len(hsp["train"]), "repeat": a.hd_repeat}
    before = served(old, occ[te])
    fp_before = _fingerprint(old)
    corr = HDCorrection.load(old.host)
    assert corr is not None and corr.fingerprint == fp_before, "hd_correction.npz does not match the packaged FE head"
    cfg = {**old.meta["config"]}
    orbits = enumerate_orbits(old.host, int(cfg.get("max_orbit_defects", 3)))
    report: dict = {"old": gates(old, orbits.occ, float(cfg["margin"])), "seed_rows": {"old": seed_rows(old, sets)}}
    print(json.dumps({"old": report["old"]}), flush=True)

    # ---- the new encoder: the packaged recipe with this run's epochs, supervised weight and rows
    enc_cfg = {k: cfg.get(k, v) for k, v in ENCODER_DEFAULTS.items()}
    enc_cfg.update(epochs=1 if a.smoke else a.epochs, w_sup=a.w_sup)
    if a.smoke:
        cfg.update(z_epochs=2)
    recipe = {"encoder": enc_cfg, "seed": seed, "hd": hd_info, "rows": len(enc_occ)}
    t0 = time.time()
    if a.state:
        saved = torch.load(a.state, weights_only=False)
        if saved["recipe"] != json.loads(json.dumps(recipe)):
            sys.exit(f"{a.state}: written by another recipe ({saved['recipe']} != {recipe})")
        enc = build_encoder(old.host, enc_cfg["dim"], enc_cfg["width"], seed, enc_cfg["three_body"], enc_cfg["rank"])
        enc.load_state_dict(saved["state"])
        hist, t_enc = saved["history"], float(saved["train_s"])
    else:
        enc, hist = train_encoder(old.host, enc_occ, enc_y, orbits.occ, enc_cfg, seed)
        t_enc = time.time() - t0
        if a.save_state:
            torch.save({"recipe": json.loads(json.dumps(recipe)), "state": enc.state_dict(), "history": hist, "train_s": t_enc},
                       a.save_state)
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
    meta["config"].update(epochs=enc_cfg["epochs"], w_sup=a.w_sup, encoder_hd=hd_info)
    meta["encoder_history"] = {k: v for k, v in hist.items() if k != "config"}
    meta["timings"].update(encoder_s=t_enc, ensemble_z_s=t_z)
    for split, idx in (("val", va), ("test", te)):
        for head in ("ridge_z", "poly_z", "ensemble_z"):
            meta["metrics"].setdefault(head, {})[split] = _mae_mev(model.predict_head(occ[idx], head)[0], Y[idx])
    report["new"] = gates(model, orbits.occ, float(cfg["margin"]))
    report["seed_rows"]["new"] = seed_rows(model, sets)
    meta["orbit_table"].update(min_distance=report["new"]["min_nearest_other"], below_margin=report["new"]["below_margin"])
    meta["encoder_retrain"] = {"recipe": recipe, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "script": "benchmarks/package_encoder.py"}
    report["new"]["encoder_train_s"] = round(t_enc, 1)
    report["recipe"] = recipe
    print(json.dumps({"new": report["new"], "seed_rows": report["seed_rows"]["new"]}), flush=True)

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
    # reload check: the saved file serves the same and embeds the same
    back = Model.load(a.out)
    assert np.array_equal(served(back, occ[te])[0], before[0]) and np.array_equal(served(back, occ[te])[1], before[1])
    assert np.array_equal(back.embed(occ[te[:50]]), embed_occ(model.encoder, occ[te[:50]], model.host))
    if a.smoke:
        print(json.dumps(report, indent=1, default=str))
        return
    res_dir = Path(a.results)
    res_dir.mkdir(exist_ok=True)
    (res_dir / "encoder_retrain.json").write_text(json.dumps(report, indent=1, default=str))
    o, n = report["old"], report["new"]
    hd_txt = (f" plus the {hd_info['train_rows']} train-split structures of {hd_info['set']} (each {hd_info['repeat']} times)"
              if hd_info else "")
    lines = ["# The packaged encoder retrained: the seed's embedding rows, class separation, symmetry", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; 8x8 MoS2. New recipe: {enc_cfg['epochs']} epochs (before: "
             f"{old.meta['config'].get('epochs')}), supervised weight {a.w_sup} (before: {old.meta['config'].get('w_sup')}), "
             f"trained on the low-density train split{hd_txt}; same architecture, margin and seed; encoder training "
             f"{t_enc / 60:.0f} min on one core. Served FE/gap predictions on the {len(te)} test rows: bit-identical.", "",
             "The seed's rows (MAE meV on held-out test splits; seed in brackets; ridge on the 12-D embedding / on its 91 "
             "polynomial features, fitted on the train part, penalty chosen on the val part):", "",
             "| row | encoder | FE low density | FE high density | gap low density | gap high density |", "|---|---|---|---|---|---|"]
    for row in ("SNN embeddings", "SNN embeddings + polynomial features"):
        sd = SEED_TABLE[row]
        for tag in ("old", "new"):
            r = report["seed_rows"][tag][row]
            cells = ["-" if (v := r.get(dens, {}).get(t)) is None else f"{v:.1f} [{sd[t][j]}]"
                     for t in TARGETS for j, dens in enumerate(("low density", "high density"))]
            lines.append(f"| {row} | {'packaged before' if tag == 'old' else 'retrained'} | " + " | ".join(cells) + " |")
    lines += ["", "| | before | retrained |", "|---|---|---|",
              f"| min nearest-other-class distance ({o['classes']:,} classes) | {o['min_nearest_other']:.3g} | {n['min_nearest_other']:.3g} |",
              f"| median nearest-other-class distance | {o['median_nearest_other']:.3g} | {n['median_nearest_other']:.3g} |",
              f"| classes below the margin {o['margin']} | {o['below_margin']:,} | {n['below_margin']:,} |",
              f"| symmetry error (max spread, 24 classes x all ops) | {o['symmetry_error']:.2g} | {n['symmetry_error']:.2g} |",
              f"| symmetry error / min distance | {o['symmetry_error_over_min_distance']:.2g} | {n['symmetry_error_over_min_distance']:.2g} |",
              f"| embed all classes (s, 1 thread) | {o['embed_orbits_s']} | {n['embed_orbits_s']} |"]
    for head, v in report["embedding_heads_test_mae_meV"].items():
        lines.append(f"| {head} test MAE FE / gap (meV, low density) | {v['old']['formation_energy_per_site']:.1f} / "
                     f"{v['old']['homo_lumo_gap']:.1f} | {v['new']['formation_energy_per_site']:.1f} / {v['new']['homo_lumo_gap']:.1f} |")
    fo, fn = report["flow"]["old"] or {}, report["flow"]["new"] or {}
    lines.append(f"| flow val NLL (nats / configuration) | {fo.get('val_nll', float('nan')):.2f} | {fn.get('val_nll', float('nan')):.2f} |")
    (res_dir / "encoder_retrain.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
