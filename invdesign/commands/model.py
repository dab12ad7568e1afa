"""``invdesign train``, ``embed``, ``predict``, ``benchmark`` and ``plot umap``."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from invdesign.commands.common import (
    FullPrecisionOpt,
    LazyConsole,
    ModelHostOpt,
    ModelSupercellOpt,
    OverwriteOpt,
    TolOpt,
    check_inputs,
    check_out_dir,
    check_out_file,
    place_model,
    requested_host,
)
from invdesign.errors import InvdesignError

if TYPE_CHECKING:  # annotations only: heavy imports stay inside the commands (fast --help)
    import numpy as np

console = LazyConsole()
err_console = LazyConsole(stderr=True)

ModelOpt = typer.Option(None, "--model", help="A trained model (invdesign train --out); default: the packaged model.")
StructuresArg = typer.Argument(..., help="CIF/POSCAR/JSON files, folders, or 2DMD initial.tar.gz archives.")


def read_config(path: Path | None) -> dict:
    """Training settings from a TOML file (top level or a ``[train]`` table)."""
    if path is None:
        return {}
    if not path.is_file():
        raise InvdesignError("config file not found", source=str(path))
    try:
        cfg = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvdesignError(f"cannot read config ({exc})", source=str(path)) from None
    return dict(cfg.get("train", {k: v for k, v in cfg.items() if k != "flow"}))


def read_flow_config(path: Path | None) -> dict:
    """Flow settings from the ``[flow]`` table of the same TOML (see ``invdesign.generate.flow.DEFAULT_CONFIG``)."""
    if path is None:
        return {}
    return dict(tomllib.loads(path.read_text()).get("flow", {}))


def _model(path: Path | None):
    from invdesign.model import load_model

    if path is not None and not path.exists():
        raise InvdesignError("model not found", source=str(path))
    return load_model(path)


def _structures(paths: list[Path], model, tol: float):
    from invdesign.data.dataset import map_structures

    return map_structures(paths, model.host, tol)


def _inputs(structures: list[Path], out: Path, model_path: Path | None, tol: float, overwrite: bool = False,
            serving: bool = False, host: str | None = None, supercell: str | None = None):
    """Check the inputs and ``out`` (before the model loads), load the model, map the structures, warn on extrapolation.

    ``serving``: load only what ``predict`` needs (:func:`invdesign.predictor.load_predictor`: cached
    per model file, no torch import). ``host``/``supercell``: the structures' host when it is not the
    model's (a larger cell of it; :func:`invdesign.predict.placement.place_model`).
    """
    check_inputs(structures)
    if model_path is not None and not Path(model_path).exists():
        raise InvdesignError("model not found", source=str(model_path))
    check_out_file(out, overwrite=overwrite)
    request = requested_host(host, supercell)
    auto = _packaged_host_request(structures, model_path, request)
    if model_path is not None and str(model_path).endswith(".npz"):
        if not serving:
            raise InvdesignError("a host model (.npz) predicts; embeddings need the full model (.pt)", source=str(model_path))
        from invdesign.predict.defect_env import HostModel
        from invdesign.predict.host_serving import HostPredictor

        m = HostPredictor(HostModel.load(model_path))
        ds = _structures(structures, m, tol)
        _warn_extrapolation(m, ds.occ, ds.ids)
        return m, ds
    if auto is not None:
        if not serving:
            raise InvdesignError(f"the packaged embedding is 8x8 MoS2's: to embed structures on {auto.name}, train one on "
                                 "its data (invdesign train --data DIR --out F.pt, minutes) and give --model F.pt; "
                                 "predict, design, canon and enumerate work on it without")
        from invdesign.predict.host_serving import predictor_for

        m = predictor_for(auto)
        ds = _structures(structures, m, tol)
        _warn_extrapolation(m, ds.occ, ds.ids)
        return m, ds
    if serving:
        from invdesign.predictor import load_predictor

        m = load_predictor(model_path)
    else:
        m = _model(model_path)
    m = place_model(m, request)
    ds = _structures(structures, m, tol)
    _warn_extrapolation(m, ds.occ, ds.ids)
    return m, ds


def _packaged_host_request(structures: list[Path], model_path: Path | None, request):
    """The packaged host whose packaged host model serves these structures, or None for the classic path
    (a model file given, a larger MoS2 cell, or a host no packaged model covers). Without ``--model`` and
    ``--host``, the structures' host is recognised: every packaged host but MoS2 is served by its host model."""
    import numpy as np

    from invdesign.lattice.host import HostLattice
    from invdesign.lattice.hosts import host_spec_of
    from invdesign.predict.host_serving import host_model_resource

    if model_path is not None or isinstance(request, str):
        return None
    h = request if isinstance(request, HostLattice) else None
    if h is None:
        from invdesign.commands.common import recognised_host

        h = recognised_host(structures)
    if h is None:
        return None
    s = host_spec_of(h)
    if s is None or s.name == "MoS2" or tuple(int(v) for v in np.diag(h.matrix)[:2]) != s.supercell \
            or not host_model_resource(s.name).is_file():
        return None  # 8x8 MoS2: the packaged model, which serves > 3 defects from the MoS2 host model itself
    return h


def _warn_extrapolation(model, occ: np.ndarray, ids) -> list[str]:
    flags = model.extrapolation(occ)
    bad = [(i, f) for i, f in zip(ids, flags) if f]
    if bad:
        first = ", ".join(f"{i} ({f})" for i, f in bad[:3])
        err_console.print(
            f"invdesign: warning: {len(bad)} of {len(flags)} structures lie outside the training domain "
            f"(predictions are extrapolations): {first}{' ...' if len(bad) > 3 else ''}",
            highlight=False, soft_wrap=True,
        )
    return flags


def _train_host_model(data: list[Path], out: Path, seed: int, overwrite: bool) -> None:
    """``invdesign train --out F.npz``: a host model (any packaged host, any density) on one or more 2DMD sets."""
    import numpy as np

    from invdesign.data.dataset import load_dataset
    from invdesign.lattice.hosts import host_spec_of
    from invdesign.predict.defect_env import HostModel, stack
    from invdesign.progress import task

    check_out_file(out, (".npz",), overwrite)
    check_inputs(data)
    sets = [load_dataset(d) for d in data]
    host, occ, y = stack(sets)
    spec = host_spec_of(host)
    if spec is None:
        raise InvdesignError(f"host {host.name} is not a packaged host; host models need one", source=str(data[0]))
    if not np.isfinite(y[:, :2]).all():
        raise InvdesignError("the data lacks formation_energy_per_site or homo_lumo_gap(_min) for some structures",
                             source=str(data[0]))
    t0 = time.time()
    m = HostModel(host, seed=seed)
    nets = m.members_energy + m.members_levels
    with task(f"host model on {len(occ)} structures of {host.name} ({nets} networks)", total=m.fit_steps(occ)) as advance:
        m.fit(occ, y, progress=lambda _: advance())
    m.meta["trained_on"] = [d.name for d in sets]
    m.save(out, {"name": spec.name, "supercell": [int(v) for v in np.diag(host.matrix)[:2]]})
    held = m.meta["heldout_mae_meV"]
    console.print(f"host model for {host.name} trained on {len(occ)} structures of {', '.join(d.name for d in sets)} "
                  f"in {time.time() - t0:.0f} s -> {out}; out-of-fold MAE (each structure predicted by the members that "
                  f"did not train on it; the std calibration's data): formation_energy_per_site "
                  f"{held['formation_energy_per_site']:.1f} meV, homo_lumo_gap {held['homo_lumo_gap']:.1f} meV; pair expansion "
                  f"within {m.radius_ce:g} A (chosen by its 4-fold CV on these data)", highlight=False)


def train_cmd(
    data: list[Path] = typer.Option(..., "--data", help="2DMD dataset folder (or a folder of structures with targets.csv); "
                                    "repeat for several sets of one host (host models, --out F.npz)."),
    out: Path = typer.Option(..., "--out", help="Output model file: .pt for the full 8x8 MoS2 model (encoder, heads, flow; "
                             "one --data), .npz for a host model (any packaged host, any density, one or more --data)."),
    config: Path = typer.Option(None, "--config", help="TOML with training settings (see configs/train_default.toml)."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random choice in training."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the train/val/test split (by id hash)."),
    flow: bool = typer.Option(True, "--flow/--no-flow", help="Also fit the conditional flow that `design` samples from."),
    overwrite: bool = OverwriteOpt,
) -> None:
    """Train the encoder, heads and generative flow on the train split; tune on val; report test MAE (meV). Restartable:
    the model is written atomically at the end, so an interrupted run leaves nothing and is simply rerun."""
    if out.name.endswith(".npz"):
        return _train_host_model(data, out, seed, overwrite)
    if len(data) != 1:
        raise InvdesignError("the full model (.pt) trains on one --data; for several sets of one host write a host model "
                             "(--out F.npz)")
    data = data[0]
    import torch

    from invdesign.data.dataset import load_dataset
    from invdesign.model import train_model
    from invdesign.progress import _progress, enabled

    check_out_file(out, (".pt", ".npz"), overwrite)
    check_inputs([data])
    cfg = read_config(config)
    flow_cfg = read_flow_config(config) if flow else {}
    if flow:
        from invdesign.generate.flow import DEFAULT_CONFIG as FLOW_DEFAULTS

        bad = sorted(set(flow_cfg) - set(FLOW_DEFAULTS))
        if bad:
            raise InvdesignError(f"unknown flow setting(s) {bad}; known: {sorted(FLOW_DEFAULTS)}", source=str(config))
    ds = load_dataset(data)
    torch.set_num_threads(1)
    t0 = time.time()
    if enabled():
        with _progress() as prog:
            tasks: dict = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = prog.add_task(stage, total=total)
                prog.update(tasks[stage], completed=done)

            model = train_model(ds, seed=seed, config=cfg, split_seed=split_seed, progress=progress)
    else:
        model = train_model(ds, seed=seed, config=cfg, split_seed=split_seed)
    if flow:
        from invdesign.generate.flow import attach_flow
        from invdesign.progress import task

        t1 = time.time()
        with task("conditional flow (train split, early stop on val)"):
            attach_flow(model, ds, seed=seed, config=flow_cfg)
        model.meta.setdefault("timings", {})["flow_s"] = round(time.time() - t1, 1)
    model.save(out)
    m = model.meta["metrics"]
    console.print(f"trained on {model.meta['split']['train']} structures of {ds.name} in {time.time() - t0:.0f} s -> {out}", highlight=False)
    for head, v in m.items():
        t = v.get("test", v.get("val"))
        console.print(f"  {head:12s} test MAE: formation_energy_per_site {t['formation_energy_per_site']:.1f} meV, "
                      f"homo_lumo_gap {t['homo_lumo_gap']:.1f} meV", highlight=False)
    ot = model.meta["orbit_table"]
    console.print(f"  embedding: {ot['classes']} classes, min distance between classes {ot['min_distance']:.2e}", highlight=False)


def embed_cmd(
    structures: list[Path] = StructuresArg,
    out: Path = typer.Option(..., "--out", help="Output CSV: id,z0..z{d-1} (full precision: decode reads it back)."),
    model: Path = ModelOpt,
    tol: float = TolOpt,
    host: str = ModelHostOpt,
    supercell: str = ModelSupercellOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Symmetry-invariant embeddings of structures (written at full precision: invdesign decode reads them back)."""
    import pandas as pd

    from invdesign.io import write_csv

    m, ds = _inputs(structures, out, model, tol, overwrite, host=host, supercell=supercell)
    z = m.embed(ds.occ)
    df = pd.DataFrame(z, columns=[f"z{i}" for i in range(z.shape[1])])
    df.insert(0, "id", ds.ids)
    write_csv(out, df)  # z0.. are never rounded (invdesign.columns.EXACT)
    console.print(f"{len(df)} embeddings ({z.shape[1]}-D) -> {out}", highlight=False)


def predict_cmd(
    structures: list[Path] = StructuresArg,
    out: Path = typer.Option(..., "--out", help="Output CSV: id,<targets>,<targets>_std (eV),extrapolation,extrapolation_reason,note."),
    model: Path = ModelOpt,
    tol: float = TolOpt,
    mu: str = typer.Option(None, "--mu", help="Chemical potentials for the formation energy: a limit of the host (MoS2: "
                           "S-rich, Mo-rich; WSe2: W-rich, Se-rich; BN: B-rich, N-rich; GaSe: Ga-rich, Se-rich; InSe: "
                           "In-rich, Se-rich; P: N-rich) or FILE.json (eV/atom in the model's 2DMD reference, or doped's "
                           "format as FILE.json[#LIMIT]); default: the reference."),
    host: str = ModelHostOpt,
    supercell: str = ModelSupercellOpt,
    overwrite: bool = OverwriteOpt,
    full_precision: bool = FullPrecisionOpt,
) -> None:
    """Formation energy per defect site and HOMO-LUMO gap (eV) with one-sigma uncertainties, an extrapolation
    flag and its reason (columns extrapolation, extrapolation_reason; note: why a value is NaN), dn_<El> and
    defects (Kroeger-Vink)."""
    from invdesign.io import write_csv
    from invdesign.predict.serving import prediction_table
    from invdesign.synthesis.chempot import check_mu_spec, read_mu, with_mu
    from invdesign.synthesis.plan import bookkeeping

    check_mu_spec(mu)
    m, ds = _inputs(structures, out, model, tol, overwrite, serving=True, host=host, supercell=supercell)
    chem = read_mu(mu, m.host)  # the host's own reference and limits
    table = prediction_table(with_mu(m, chem), ds.ids, ds.occ)
    if hasattr(m, "magnetisation_columns"):  # spin-polarised hosts: the cell's moment beside the gap
        for k, v in m.magnetisation_columns(ds.occ).items():
            table[k] = v
    df = bookkeeping(table, ds.occ, m.host)
    df["mu"] = chem.name
    pristine = int((df["note"] != "").sum())
    if pristine:
        err_console.print(f"invdesign: {pristine} structure(s) without defects: formation_energy_per_site is undefined "
                          f"for them (NaN; see the note column), e.g. {df.loc[df['note'] != '', 'id'].iat[0]}",
                          highlight=False, soft_wrap=True)
    if "homo_lumo_gap_validated" in df and not df["homo_lumo_gap_validated"].all():
        console.print(f"{int((~df['homo_lumo_gap_validated']).sum())} of {len(df)} gap predictions lie beyond the trained "
                      "density or composition: bounded but unvalidated (homo_lumo_gap_validated = False; their std is the "
                      "uninformed one)", highlight=False)
    if "formation_energy_reference" in df:
        corrected = df["formation_energy_reference"].str.contains("corrected CHGNet")
        if corrected.any():
            console.print(f"{int(corrected.sum())} of {len(df)} formation energies lie beyond the DFT data (> 3 defects): "
                          "DFT-trained model + correction toward corrected CHGNet, its std included "
                          "(formation_energy_reference)", highlight=False)
    write_csv(out, df, full_precision=full_precision)
    heads = ", ".join(f"{t}: {h}" for t, h in m.meta.get("serving", {}).items()) or m.meta.get("serving_head", "?")
    console.print(f"{len(df)} predictions (heads {heads}) -> {out}", highlight=False)


def benchmark_cmd(
    data: Path = typer.Option(..., "--data", help="The 2DMD low-density dataset folder."),
    out: Path = typer.Option(..., "--out", help="Output folder for benchmark.md and benchmark.json."),
    model: Path = ModelOpt,
    high_density: Path = typer.Option(None, "--high-density", help="2DMD high-density release folder (MoS2_500/...); absent: 'no data'."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Include the Coulomb-matrix and bag-of-bonds rows (minutes)."),
    max_train: int = typer.Option(None, "--max-train", help="Use at most this many training structures for every row (quick runs)."),
    overwrite: bool = OverwriteOpt,
) -> None:
    """The seed's table (MAE in meV on the held-out test split, descriptor length, wall time) plus our rows."""
    from invdesign.data.dataset import load_dataset
    from invdesign.io import atomic_dir
    from invdesign.predict.benchmark import run_benchmark, write_report

    check_out_dir(out, "benchmark", overwrite)
    check_inputs([data])
    if model is not None and not model.exists():
        raise InvdesignError("model not found", source=str(model))
    if high_density is not None and not high_density.exists():
        raise InvdesignError("high-density folder not found", source=str(high_density))
    m = _model(model)
    ds = load_dataset(data)
    if ds.host.fingerprint != m.host.fingerprint:
        raise InvdesignError(f"benchmark reproduces the seed's table on the model's host {m.host.name}, not {ds.host.name}; "
                             "the host models of every 2DMD set are measured by benchmarks/bench_hosts.py", source=str(data))
    res = run_benchmark(ds, m, high_density=high_density, baselines=baselines, max_train=max_train)
    with atomic_dir(out, "benchmark", overwrite) as tmp:
        md = write_report(res, tmp)
    console.print(md, highlight=False, markup=False)
    console.print(f"-> {out}/benchmark.md, {out}/benchmark.json", highlight=False)


def umap_cmd(
    out: Path = typer.Option(..., "--out", help="Output PNG."),
    model: Path = ModelOpt,
    configs: int = typer.Option(12, "--configs", help="Configurations per defect count."),
    images: int = typer.Option(40, "--images", help="Symmetry images drawn per configuration."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampled configurations, images and UMAP."),
    background: int = typer.Option(1500, "--background", help="Other symmetry classes the UMAP is fitted on."),
    overwrite: bool = OverwriteOpt,
) -> None:
    """The seed's Figure 1: UMAP of embeddings for 1, 2 and 3 defects; symmetry images share a colour."""
    from invdesign.embed.plots import umap_figure

    check_out_file(out, (".png",), overwrite)
    if configs < 1 or images < 1 or background < 20:
        raise InvdesignError("--configs and --images must be at least 1, --background at least 20")
    if model is not None and not model.exists():
        raise InvdesignError("model not found", source=str(model))
    from invdesign.progress import task

    with task(f"UMAP figure ({configs} configurations x {images} images per defect count, {background} background)"):
        m = _model(model)
        umap_figure(m, out, n_configs=configs, n_images=images, seed=seed, background=background)
    console.print(f"UMAP figure -> {out}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("embed")(embed_cmd)
    app.command("predict")(predict_cmd)
    app.command("benchmark")(benchmark_cmd)
    plot_app = typer.Typer(help="Figures.", no_args_is_help=True)
    plot_app.command("umap")(umap_cmd)
    app.add_typer(plot_app, name="plot")

