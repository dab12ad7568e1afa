"""The seed's table, reproduced and extended: MAE (meV) per method on a held-out test split.

Every row is fitted on the train split, tuned on the validation split and scored once on the
test split of :func:`invdesign.data.dataset.split_indices` (seed 0 unless the model was trained
with another). Wall time is featurisation of all structures + fitting, on this machine, now;
for the model's deep-ensemble heads (trained by ``invdesign train``) it is their training time
from the model's metadata plus featurisation now.

The high-density column needs the 2DMD high-density release (``--high-density``); where it is
absent the table says "no data".
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from invdesign.data.dataset import TARGETS, Dataset, load_2dmd_collection, split_indices
from invdesign.predict.baselines import BagOfBonds, KernelRidge, coulomb_matrices
from invdesign.predict.features import cluster_counts, poly2
from invdesign.predict.heads import RidgeHead
from invdesign.progress import task

SEED_TABLE = {  # the seed's Figure 2 (meV): low / high density
    "Bag of Bonds": {"length": 18336, "formation_energy_per_site": (956.8, 482.5), "homo_lumo_gap": (612.1, 240.2)},
    "Coulomb Matrix": {"length": 36864, "formation_energy_per_site": (184.7, 198.8), "homo_lumo_gap": (106.2, 159.4)},
    "SNN embeddings": {"length": 12, "formation_energy_per_site": (47.1, 382.7), "homo_lumo_gap": (141.4, 158.4)},
    "SNN embeddings + polynomial features": {"length": 91, "formation_energy_per_site": (39.9, 139.6), "homo_lumo_gap": (63.2, 110.1)},
}


def _mae(pred: np.ndarray, y: np.ndarray) -> dict:
    return {t: float(np.abs(pred[:, j] - y[:, j]).mean() * 1000) for j, t in enumerate(TARGETS)}


def _compact_cm(X: np.ndarray, n: int) -> np.ndarray:
    """Upper triangle of flattened symmetric matrices, off-diagonals x sqrt(2): same Euclidean distances, half the size."""
    iu, ju = np.triu_indices(n)
    w = np.where(iu == ju, 1.0, np.sqrt(2.0)).astype(np.float32)
    return X.reshape(len(X), n, n)[:, iu, ju] * w


def _splits(ds: Dataset, seed: int, max_train: int | None) -> dict:
    sp = split_indices(ds.ids, seed=seed)
    if max_train is not None and len(sp["train"]) > max_train:
        sp["train"] = np.sort(np.random.default_rng(0).choice(sp["train"], max_train, replace=False))
    return sp


def evaluate(ds: Dataset, model, baselines: bool = True, max_train: int | None = None, split_seed: int = 0,
             use_model_heads: bool = True) -> dict:
    """MAE (meV) and wall time of every method on ``ds``'s test split; ``{method: row}``."""
    Y = ds.y(TARGETS)
    sp = _splits(ds, split_seed, max_train)
    tr, va, te = sp["train"], sp["val"], sp["test"]
    host = ds.host
    rows: dict = {}
    n_steps = 6 + (2 if baselines else 0)
    with task(f"benchmark on {ds.name}", total=n_steps) as advance:
        if baselines:
            t0 = time.time()
            bob = BagOfBonds().fit(ds.occ, host)
            X = bob.transform(ds.occ)
            kr = KernelRidge().fit(X[tr], Y[tr], X[va], Y[va])
            rows["Bag of Bonds"] = {"length": bob.length, "regressor": "Gaussian kernel ridge", "test": _mae(kr.predict(X[te]), Y[te]),
                                    "wall_s": time.time() - t0}
            del X
            advance()
            t0 = time.time()
            X = _compact_cm(coulomb_matrices(ds.occ, host), host.n_sites)
            kr = KernelRidge().fit(X[tr], Y[tr], X[va], Y[va])
            rows["Coulomb Matrix"] = {"length": host.n_sites**2, "regressor": "Gaussian kernel ridge",
                                      "test": _mae(kr.predict(X[te]), Y[te]), "wall_s": time.time() - t0}
            del X
            advance()
        t0 = time.time()
        z = model.embed(ds.occ)
        t_embed = time.time() - t0
        advance()
        t0 = time.time()
        r = RidgeHead().fit(z[tr], Y[tr], z[va], Y[va])
        rows["SNN embeddings"] = {"length": z.shape[1], "regressor": "ridge", "test": _mae(r.predict(z[te])[0], Y[te]),
                                  "wall_s": t_embed + time.time() - t0}
        t0 = time.time()
        P = poly2(z)
        r = RidgeHead().fit(P[tr], Y[tr], P[va], Y[va])
        rows["SNN embeddings + polynomial features"] = {"length": P.shape[1], "regressor": "ridge",
                                                        "test": _mae(r.predict(P[te])[0], Y[te]), "wall_s": t_embed + time.time() - t0}
        advance()
        t0 = time.time()
        C = cluster_counts(ds.occ, host)
        t_cc = time.time() - t0
        k = np.maximum(ds.n_defects, 1).astype(float)
        Yt = Y.copy()
        Yt[:, 0] *= k
        r = RidgeHead().fit(C[tr], Yt[tr], C[va], Yt[va])
        pred = r.predict(C[te])[0]
        pred[:, 0] /= k[te]
        rows["Cluster counts (ours)"] = {"length": C.shape[1], "regressor": "ridge (total formation energy / n_defects)",
                                         "test": _mae(pred, Y[te]), "wall_s": t_cc + time.time() - t0}
        advance()
        t0 = time.time()
        from invdesign.predict.defect_env import HostModel

        fit_rows = np.concatenate([tr, va])
        y3 = np.column_stack([Y[fit_rows], np.full(len(fit_rows), np.nan)])  # no moment column here
        hm = HostModel(host).fit(ds.occ[fit_rows], y3)
        rows["Defect environments + host model (ours)"] = {
            "length": hm.env_e.dim + hm.env_g.dim, "regressor": "pair expansion + defect-environment networks + gap trees "
            "(cross-fitted on train + val)", "test": _mae(hm.predict(ds.occ[te])[0][:, :2], Y[te]), "wall_s": time.time() - t0}
        advance()
        timings = model.meta.get("timings", {})
        if use_model_heads:
            t0 = time.time()
            pred, _ = model.predict_embedding(z)
            rows["SNN embeddings + deep ensemble (ours)"] = {
                "length": z.shape[1], "regressor": "deep ensemble (model head ensemble_z)", "test": _mae(pred[te], Y[te]),
                "wall_s": t_embed + time.time() - t0 + float(timings.get("ensemble_z_s", 0.0))}
            t0 = time.time()
            pred, _ = model.predict_head(ds.occ, "ensemble_ce")
            rows["Cluster counts + deep ensemble (ours)"] = {
                "length": C.shape[1], "regressor": "deep ensemble (model head ensemble_ce)", "test": _mae(pred[te], Y[te]),
                "wall_s": time.time() - t0 + float(timings.get("ensemble_ce_s", 0.0))}
            t0 = time.time()
            pred, _ = model.predict(ds.occ)
            serving = model.meta.get("serving", {})
            rows["Best head (ours, serves predict)"] = {
                "length": C.shape[1], "regressor": "per target, chosen on val: " + ", ".join(f"{t}: {h}" for t, h in serving.items()),
                "test": _mae(pred[te], Y[te]),
                "wall_s": time.time() - t0 + float(timings.get("ensemble_ce_s", 0.0)) + float(timings.get("ridge_ce_s", 0.0))}
        advance()
    return {"rows": rows, "split": {"seed": split_seed, "train": len(tr), "val": len(va), "test": len(te)}}


def throughput(ds: Dataset, model, n: int = 1000) -> dict:
    """Configurations per second: our embedding vs dscribe's and our sorted Coulomb matrix, same structures."""
    occ = ds.occ[:n]
    out: dict = {"structures": len(occ)}
    model.embed(occ[:10])
    t0 = time.time()
    model.embed(occ)
    out["embedding_configs_per_s"] = len(occ) / (time.time() - t0)
    t0 = time.time()
    cluster_counts(occ, ds.host)
    out["cluster_counts_configs_per_s"] = len(occ) / (time.time() - t0)
    t0 = time.time()
    coulomb_matrices(occ, ds.host)
    out["coulomb_matrix_numpy_configs_per_s"] = len(occ) / (time.time() - t0)
    try:
        from dscribe.descriptors import CoulombMatrix
        from pymatgen.io.ase import AseAtomsAdaptor

        from invdesign.lattice.config import config_to_structure

        t0 = time.time()
        atoms = [AseAtomsAdaptor.get_atoms(config_to_structure(o, ds.host)) for o in occ]
        out["ase_conversion_s"] = time.time() - t0
        cm = CoulombMatrix(n_atoms_max=ds.host.n_sites, permutation="sorted_l2")
        t0 = time.time()
        cm.create(atoms, n_jobs=1)
        out["dscribe_coulomb_matrix_configs_per_s"] = len(occ) / (time.time() - t0)
    except ImportError:
        out["dscribe_coulomb_matrix_configs_per_s"] = None
    return out


def trained_on(model, ds: Dataset) -> str | None:
    """How ``model`` is known to have been trained on ``ds`` (so its own heads' rows use its split): ``"fingerprint"``
    (the recorded content hash matches), ``"name and size"`` (same set name, structure count and host lattice: a
    fingerprint recorded before the host definition changed), or None."""
    d = model.meta.get("data", {})
    if d.get("fingerprint") == ds.fingerprint:
        return "fingerprint"
    if d.get("name") == ds.name and d.get("n_structures") == len(ds) and model.host.fingerprint == ds.host.fingerprint:
        return "name and size"
    return None


def run_benchmark(ds: Dataset, model, high_density: str | Path | None = None, baselines: bool = True,
                  max_train: int | None = None, throughput_n: int = 1000) -> dict:
    """The whole table: low density (``ds``), high density (``high_density`` or "no data"), throughput."""
    split_seed = int(model.meta.get("split", {}).get("seed", 0))
    match = trained_on(model, ds)
    same = match is not None
    t0 = time.time()
    low = evaluate(ds, model, baselines, max_train, split_seed, use_model_heads=same)
    high: dict | None = None
    high_note = "no data (the 2DMD high-density release is not given; --high-density DIR)"
    if high_density is not None:
        sets = [d for d in load_2dmd_collection(high_density) if d.host.fingerprint == model.host.fingerprint]
        if sets:
            hd = sets[0]
            high = evaluate(hd, model, baselines, max_train, split_seed, use_model_heads=False)
            high_note = f"{hd.name}: {len(hd)} structures, heads refitted on its train split; deep-ensemble rows not retrained"
        else:
            high_note = f"no data for host {model.host.name} in {high_density}"
    rows = []
    names = list(low["rows"])
    for name in names:
        r = low["rows"][name]
        h = high["rows"].get(name) if high else None
        seed = SEED_TABLE.get(name)
        rows.append({
            "method": name,
            "descriptor_length": r["length"],
            "regressor": r["regressor"],
            **{f"mae_{t}_meV": {"low_density": r["test"][t], "high_density": h["test"][t] if h else "no data"} for t in TARGETS},
            "wall_s": r["wall_s"],
            "seed": ({"descriptor_length": seed["length"], **{f"mae_{t}_meV": {"low_density": seed[t][0], "high_density": seed[t][1]} for t in TARGETS}}
                     if seed else None),
        })
    return {
        "dataset": {"name": ds.name, "fingerprint": ds.fingerprint, "structures": len(ds)},
        "model": {"fingerprint_match": match == "fingerprint", "data_match": match, "meta_version": model.meta.get("version"), "serving": model.meta.get("serving"),
                  "train_seconds": model.meta.get("train_seconds"), "orbit_table": model.meta.get("orbit_table")},
        "split": low["split"],
        "max_train": max_train,
        "high_density": high_note,
        "rows": rows,
        "throughput": throughput(ds, model, throughput_n),
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "seconds": time.time() - t0,
    }


def _fmt(v) -> str:
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def markdown(res: dict) -> str:
    """The table as markdown (ours next to the seed's numbers)."""
    lines = [
        f"MAE in meV on the held-out test split ({res['split']['test']} structures; trained on {res['split']['train']}, "
        f"tuned on {res['split']['val']}; split seed {res['split']['seed']}) of {res['dataset']['name']}. "
        "Seed numbers in brackets. High density: " + res["high_density"] + "."
        + (" The model's own rows: it was trained on a set of this name and size (its recorded fingerprint "
           "predates the current host definition)." if res["model"].get("data_match") == "name and size" else ""),
        "",
        "| method | descriptor length | regressor | formation_energy_per_site, low density | formation_energy_per_site, high density "
        "| homo_lumo_gap, low density | homo_lumo_gap, high density | wall time, s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        s = r["seed"]
        cells = []
        for t in TARGETS:
            for dens in ("low_density", "high_density"):
                v = _fmt(r[f"mae_{t}_meV"][dens])
                if s:
                    v += f" [{s[f'mae_{t}_meV'][dens]}]"
                cells.append(v)
        length = f"{r['descriptor_length']}" + (f" [{s['descriptor_length']}]" if s else "")
        lines.append(f"| {r['method']} | {length} | {r['regressor']} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | {r['wall_s']:.1f} |")
    tp = res["throughput"]
    lines += [
        "",
        f"Throughput on the same {tp['structures']} structures (configurations/s, one run): "
        f"our {res['rows'][2]['descriptor_length'] if len(res['rows']) > 2 else ''}-D embedding {tp['embedding_configs_per_s']:.0f}, "
        f"cluster counts {tp['cluster_counts_configs_per_s']:.0f}, sorted Coulomb matrix (numpy) {tp['coulomb_matrix_numpy_configs_per_s']:.0f}, "
        f"dscribe CoulombMatrix {_fmt(tp.get('dscribe_coulomb_matrix_configs_per_s'))} "
        f"(+{_fmt(tp.get('ase_conversion_s'))} s to build ASE Atoms).",
    ]
    return "\n".join(lines) + "\n"


def write_report(res: dict, folder: str | Path, stem: str = "benchmark") -> str:
    """Write ``<stem>.md`` and ``<stem>.json`` into ``folder``; returns the markdown."""
    from invdesign.io import _json_default

    folder = Path(folder)
    md = markdown(res)
    (folder / f"{stem}.md").write_text(md)
    (folder / f"{stem}.json").write_text(json.dumps(res, indent=2, default=_json_default) + "\n")
    return md
