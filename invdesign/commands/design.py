"""``invdesign design`` (target window -> ranked candidates) and ``invdesign decode`` (z -> CIF)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from invdesign.commands.common import (
    FullPrecisionOpt,
    LazyConsole,
    ModelHostOpt,
    ModelSupercellOpt,
    OverwriteOpt,
    ThreadsOpt,
    check_out_dir,
    check_seed,
    oracle_threads,
    place_model,
    print_table,
    requested_host,
)
from invdesign.errors import InvdesignError

if TYPE_CHECKING:  # annotations only: heavy imports stay inside the commands (fast --help)
    import numpy as np

console = LazyConsole()
err_console = LazyConsole(stderr=True)

ModelOpt = typer.Option(None, "--model", help="A trained model (invdesign train --out); default: the packaged model.")
_ID = re.compile(r"^[A-Za-z0-9._+-]+$")
MAX_CANDIDATES = 100_000  # -n: candidates written (each a CIF and a POSCAR)
MAX_SAMPLES = 10_000_000  # --samples: flow samples


def _parse_types(types: str | None) -> list[str] | None:
    if types is None:
        return None
    items = [t.strip() for t in types.split(",") if t.strip()]
    if not items:
        raise InvdesignError("--types is empty; give labels like V_S,W_Mo")
    return items


def _load_model(path: Path | None):
    from invdesign.model import load_model

    if path is not None and not path.exists():
        raise InvdesignError("model not found", source=str(path))
    return load_model(path)


def _load_design_model(path: Path | None):
    """The model a design run uses: torch only where the run needs it (:func:`invdesign.generate.design_model.load_design_model`)."""
    from invdesign.generate.design_model import load_design_model

    if path is not None and not path.exists():
        raise InvdesignError("model not found", source=str(path))
    return load_design_model(path)


def _host_model_request(model: Path | None, request, pool):
    """The packaged host (other than 8x8 MoS2) whose host model designs this request: named by ``--host``, or
    recognised from the ``--pool`` structures; None for the packaged MoS2 model (or ``--model``)."""
    from invdesign.commands.model import _packaged_host_request

    if model is not None or isinstance(request, str):
        return None
    if request is None and not pool:
        return None
    return _packaged_host_request(list(pool or []), None, request)


def design_cmd(
    target: list[str] = typer.Option(
        ..., "--target", help="NAME=LO:HI in eV, e.g. formation_energy_per_site=1.0:1.5 (repeat per target; LO or HI may be "
        "empty); on spin-polarised hosts (h-BN, GaSe, InSe, black P) also total_mag=LO:HI in Bohr magnetons per cell."
    ),
    n: int = typer.Option(50, "-n", "--n", help="Number of candidates."),
    out: Path = typer.Option(..., "--out", help="Output folder: candidates.csv, structures/<id>.cif, poscar/<id>.vasp, summary.json, candidates.png."),
    pool: list[Path] = typer.Option(None, "--pool", help="Rank these STRUCTURES instead of generating (repeat)."),
    model: Path = ModelOpt,
    max_defects: int = typer.Option(None, "--max-defects", help="Most defects per configuration (default 3; with --pool "
                                    "no limit: the pool's own range)."),
    min_defects: int = typer.Option(1, "--min-defects", help="Fewest defects per configuration."),
    types: str = typer.Option(None, "--types", help="Allowed defect types, comma separated, e.g. V_S,W_Mo (default: all)."),
    exclude: list[str] = typer.Option(None, "--exclude", help="STRUCTURES, key files (.csv/.txt) or canonical keys never to return (repeat)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the flow samples."),
    mode: str = typer.Option("auto", "--mode", help="auto | anneal | flow-anneal | flow | exhaustive (auto: exhaustive where the space is enumerable, beyond it the sampler measured fastest: benchmarks/results/anneal.md)."),
    samples: int = typer.Option(None, "--samples", help="Flow samples (default 10 x n with the exact decoder)."),
    diversity: float = typer.Option(0.05, "--diversity", help="Diversity weight in the ranking (0: sort by p_in_window)."),
    mu: str = typer.Option(None, "--mu", help="Chemical potentials the formation-energy window applies to: a limit of the "
                           "host (MoS2: S-rich, Mo-rich; WSe2: W-rich, Se-rich; BN: B-rich, N-rich; GaSe: Ga-rich, Se-rich; "
                           "InSe: In-rich, Se-rich; P: N-rich) or FILE.json (eV/atom in the model's 2DMD reference, or "
                           "doped's format as FILE.json[#LIMIT]); default: the reference."),
    temperature: float = typer.Option(1000.0, "--temperature", help="Growth temperature (K) for the arrangement populations."),
    export: str = typer.Option(None, "--export", help="Per-candidate inputs for the next tools: any of vasp,qe,json -> export/<id>/."),
    overwrite: bool = OverwriteOpt,
    check: str = typer.Option(None, "--check", help="Check the top candidates with physics: chgnet (corrected toward DFT, "
                              "packaged), chgnet+delta:FILE, or chgnet:MU.json (uncorrected): formation energy and "
                              "relaxation; xtb+delta[:FILE] (GFN1-xTB corrected toward DFT) or xtb:MU.json: formation "
                              "energy and HOMO-LUMO gap, both with stds; gpaw:MU.json (PBE, GPAW LCAO; minutes per "
                              "cell): formation energy and gap, uncorrected."),
    check_top: int = typer.Option(10, "--check-top", help="With --check: how many of the top candidates to check."),
    check_steps: int = typer.Option(20, "--check-steps", help="With --check: FIRE steps of the structural relaxation."),
    check_executor: str = typer.Option("auto", "--check-executor", help="With --check: auto (process pool), inline, "
                                       "process[:N], dask-local[:N], dask://host:port."),
    threads: int = ThreadsOpt,
    host: str = ModelHostOpt,
    supercell: str = ModelSupercellOpt,
    full_precision: bool = FullPrecisionOpt,
) -> None:
    """Candidates whose predicted properties lie in the target window: decoded, checked, ranked, exported."""
    from invdesign.generate.design import MODES
    from invdesign.generate.window import Window
    from invdesign.limits import check_number

    window = Window.parse(target)
    if n < 1:
        raise InvdesignError(f"-n must be at least 1, not {n}")
    check_number("-n", n, 1, MAX_CANDIDATES, integer=True)
    if mode not in MODES:
        raise InvdesignError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if samples is not None and samples < 1:
        raise InvdesignError(f"--samples must be at least 1, not {samples}")
    if samples is not None:
        check_number("--samples", samples, 1, MAX_SAMPLES, integer=True)
    check_number("--diversity", diversity, 0.0, 1.0)
    check_seed(seed)
    check_number("--check-top", check_top, 1, MAX_CANDIDATES, integer=True)
    check_number("--check-steps", check_steps, 0, 100_000, integer=True)
    for p in pool or []:
        if not p.exists():
            raise InvdesignError("pool file or folder not found", source=str(p))
    _parse_types(types)
    if max_defects is None and not pool:
        max_defects = 3
    if max_defects is not None and (max_defects < 0 or min_defects < 0 or min_defects > max_defects):
        raise InvdesignError(f"--min-defects {min_defects} and --max-defects {max_defects} must satisfy 0 <= min <= max")
    if model is not None and not model.exists():
        raise InvdesignError("model not found", source=str(model))
    for e in exclude or []:
        if not Path(e).exists() and ":" not in e:
            raise InvdesignError("not a file, folder or canonical key to exclude", source=str(e))
    from invdesign.synthesis.chempot import check_mu_spec, read_mu
    from invdesign.synthesis.export import parse_export

    check_mu_spec(mu)
    kinds = parse_export(export)
    if not (temperature > 0 and math.isfinite(temperature)):
        raise InvdesignError(f"--temperature must be a positive number of kelvin, not {temperature}")
    check_out_dir(out, "design", overwrite)
    request = requested_host(host, supercell)
    auto = _host_model_request(model, request, pool)
    if model is not None and model.suffix.lower() == ".npz":  # a host model file (invdesign train --out F.npz)
        from invdesign.lattice.host import HostLattice
        from invdesign.predict.host_serving import load_host_predictor

        m = load_host_predictor(model)
        if request is not None and not (isinstance(request, HostLattice) and request.fingerprint == m.host.fingerprint):
            raise InvdesignError(f"this host model designs on its own host {m.host.name} only; drop --host/--supercell",
                                 source=str(model))
    elif auto is not None:  # a packaged host other than 8x8 MoS2: its DFT host model
        from invdesign.predict.host_serving import predictor_for

        m = predictor_for(auto)
    else:
        # the numpy copy serves where the run needs no embedding or flow: the exhaustive screen of 1-3 defects
        screen_only = not pool and mode in ("auto", "exhaustive") and max_defects is not None and max_defects <= 3
        m = place_model(_load_design_model(model) if screen_only else _load_model(model), request)
    window.check_model(m)  # a total_mag window on a host without a moment: one line, before any work
    if getattr(m, "design_modes", None) is not None and mode not in ("auto", *m.design_modes):
        raise InvdesignError(f"the {m.host.name} host model has no flow: it designs by annealing or by screening every "
                             f"orbit (--mode {', '.join(m.design_modes)} or auto), not --mode {mode}; for the flow train "
                             "a full model on its data (invdesign train --data DIR --out F.pt) and give --model F.pt")
    chem = read_mu(mu, m.host)  # the host's own reference and limits
    if mode == "flow" and hasattr(m, "cell_map"):
        raise InvdesignError(f"--mode flow samples the flow trained on {m.trained.host.name}; on {m.host.name} use "
                             "--mode anneal, exhaustive or auto")
    from invdesign.generate.decoder import Limits

    if max_defects is not None:
        Limits.make(m.host, max_defects, min_defects, _parse_types(types))
    checker = None
    if check is not None:
        from invdesign.campaign.check import check_oracle
        from invdesign.campaign.executors import check_spec

        if check_top < 1 or check_steps < 0:
            raise InvdesignError("--check-top must be at least 1 and --check-steps at least 0")
        if chem is not None and chem.name != "reference":
            raise InvdesignError("--check with --mu is not supported yet: the check's corrected CHGNet energies stand on "
                                 "the 2DMD reference chemical potentials; drop --mu to check, or --check to re-reference")
        check_spec(check_executor)
        checker = check_oracle(check, m.host, steps=check_steps)
    from invdesign.generate.threads import one_thread
    from invdesign.io import csv_precision

    with one_thread(), csv_precision(full_precision):  # one torch thread: small batches; candidates.csv as asked
        res = _run_design(window, n, m, pool, max_defects, min_defects, types, exclude, seed, mode, samples, diversity,
                          None if checker is not None else out, chem, temperature, kinds, overwrite)
    if checker is not None:
        with oracle_threads(threads, checker), csv_precision(full_precision):
            _check_and_write(res, checker, check_top, check_executor, out, m, chem, temperature, kinds, overwrite)
    _print_result(res, out, full_precision)


def _check_and_write(res, checker, top: int, executor: str, out: Path, model, chem, temperature: float, kinds,
                     overwrite: bool) -> None:
    """Run the physics check on the top candidates, re-rank, then write the design (and relaxed CIFs)."""
    from invdesign.api import check_design, relaxed_writer
    from invdesign.progress import task
    from invdesign.synthesis.chempot import with_mu
    from invdesign.synthesis.plan import write_design

    k = min(top, len(res.candidates))
    with task(f"checking the top {k} candidates with {checker.name}", total=k) as advance:
        check_design(res, checker, top, executor, on_row=advance)
    write_design(res, with_mu(model, chem), chem, temperature, kinds, out, overwrite, extra=relaxed_writer(res.relaxed))
    s = res.summary["check"]["status"]
    console.print(f"check ({res.summary['check']['reference']}): {s['pass']} pass, {s['out_of_window']} out of window, "
                  f"{s['changed_configuration']} changed configuration, {s['failed']} failed of {k}", highlight=False)


def _run_design(window, n, m, pool, max_defects, min_defects, types, exclude, seed, mode, samples, diversity, out,
                chem=None, temperature=1000.0, kinds=(), overwrite=False):
    from invdesign.generate.design import design
    from invdesign.synthesis.chempot import with_mu
    from invdesign.synthesis.plan import plan_design

    m = with_mu(m, chem)  # the window applies to formation energies under --mu
    res = design(
        window, n, model=m, pool=list(pool) if pool else None, max_defects=max_defects,
        min_defects=min_defects, types=_parse_types(types), exclude=list(exclude) if exclude else None, seed=seed,
        mode=mode, samples=samples, diversity=diversity, out=None,
    )
    return plan_design(res, m, chem, temperature, kinds, out, overwrite=overwrite)


def _print_result(res, out: Path, full: bool = False) -> None:
    if res.message:
        err_console.print(f"invdesign: {res.message}", highlight=False, soft_wrap=True)
    for note in res.summary.get("notes", []):
        err_console.print(f"invdesign: {note}", highlight=False, soft_wrap=True)
    c = res.candidates
    from rich.table import Table

    from invdesign.columns import display

    def show(r, col: str) -> str:  # as candidates.csv has it (rounded to the unit, or full with --full-precision)
        return display(col, r[col], full)

    mag = "total_mag" in c.columns  # spin-polarised hosts: the moment beside the gap (a total_mag window reads it)
    unit = "eV; total_mag in Bohr magnetons per cell" if mag else "eV"
    t = Table(title=f"top candidates ({res.summary['request']['mode_used']}; {unit})")
    cols = ("rank", "id", "composition", "formation_energy_per_site", "homo_lumo_gap", *(("total_mag",) if mag else ()),
            "p_in_window", "novel", "population")
    for col in cols:
        t.add_column(col, justify="right")
    for _, r in c.head(10).iterrows():
        pop = show(r, "arrangement_population") + (" (unlikely)" if r["unlikely_to_form"] else "") \
            if "arrangement_population" in r else ""
        t.add_row(
            str(r["rank"]), str(r["id"]), str(r["composition"]),
            f"{show(r, 'formation_energy_per_site')} ± {show(r, 'formation_energy_per_site_std')}",
            f"{show(r, 'homo_lumo_gap')} ± {show(r, 'homo_lumo_gap_std')}",
            *((f"{show(r, 'total_mag')} ± {show(r, 'total_mag_std')}",) if mag else ()),
            show(r, "p_in_window"), str(bool(r["novel"])), pop,
        )
    print_table(console, t)
    s = res.summary["counts"]
    console.print(
        f"{len(c)} candidates ({s.get('returned_in_window', 0)} with p_in_window >= 0.5, {s.get('returned_novel', 0)} novel) -> {out}",
        highlight=False,
    )


def read_embeddings(path: Path, dim: int) -> tuple[list[str], np.ndarray]:
    """``ids`` and ``(N, dim)`` embeddings from a CSV with columns ``id,z0..z{dim-1}``."""
    import numpy as np
    import pandas as pd
    if not path.is_file():
        raise InvdesignError("embedding file not found", source=str(path))
    try:
        df = pd.read_csv(path, dtype={"id": str})
    except Exception as exc:  # pandas raises many types
        raise InvdesignError(f"cannot read CSV ({type(exc).__name__})", source=str(path)) from None
    cols = [f"z{i}" for i in range(dim)]
    missing = [c for c in ["id", *cols] if c not in df.columns]
    if missing:
        raise InvdesignError(f"needs columns id,z0..z{dim - 1} (the model's {dim}-D embedding); missing {missing[0]}", source=str(path))
    if len(df) == 0:
        raise InvdesignError("no rows", source=str(path))
    ids = df["id"].astype(str).tolist()
    bad = [i for i in ids if not _ID.match(i)]
    if bad:
        raise InvdesignError(f"id {bad[0]!r} is not usable as a file name", source=str(path))
    dup = pd.Series(ids)[pd.Series(ids).duplicated()]
    if len(dup):
        raise InvdesignError(f"duplicate id {dup.iloc[0]!r}", source=str(path))
    z = df[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(z).all():
        row = int(np.flatnonzero(~np.isfinite(z).all(axis=1))[0])
        raise InvdesignError(f"row {row + 1} (id {ids[row]}) has a missing or non-numeric embedding value", source=str(path))
    return ids, z


def decode_cmd(
    embeddings: Path = typer.Argument(..., help="CSV with id,z0..z{d-1} (e.g. from invdesign embed)."),
    out: Path = typer.Option(..., "--out", help="Output folder: one CIF per row and decoded.csv."),
    model: Path = ModelOpt,
    max_defects: int = typer.Option(3, "--max-defects", help="Most defects per configuration."),
    min_defects: int = typer.Option(1, "--min-defects", help="Fewest defects per configuration."),
    types: str = typer.Option(None, "--types", help="Allowed defect types, comma separated (default: all)."),
    overwrite: bool = OverwriteOpt,
    full_precision: bool = FullPrecisionOpt,
) -> None:
    """Decode embeddings into configurations (exact nearest orbit where enumerable, incremental local search otherwise)."""
    import numpy as np
    import pandas as pd

    from invdesign.generate.decoder import Limits, decode
    from invdesign.io import atomic_dir, write_csv, write_structure
    from invdesign.lattice.enumerate import compositions
    from invdesign.progress import track

    if not embeddings.is_file():
        raise InvdesignError("embedding file not found", source=str(embeddings))
    _parse_types(types)
    if model is not None and not model.exists():
        raise InvdesignError("model not found", source=str(model))
    check_out_dir(out, "decode", overwrite)
    m = _load_model(model)
    limits = Limits.make(m.host, max_defects, min_defects, _parse_types(types))
    probe = np.asarray(m.train_occ[:1]) if len(m.train_occ) else m.host.host_code[None]
    dim = int(np.asarray(m.embed(probe)).shape[1])
    ids, z = read_embeddings(embeddings, dim)
    from invdesign.generate.flow import one_thread

    with one_thread():
        res = decode(z, m, limits)
    comp = compositions(res.occ, m.host)
    labels = [m.host.defect_label(*t) for t in m.host.defect_types]
    df = pd.DataFrame({"id": ids, "canonical_key": res.keys, "embedding_distance": res.distance, "method": res.method})
    df["n_defects"] = comp.sum(axis=1)
    df["composition"] = [",".join(f"{labels[t]}:{c[t]}" for t in range(len(labels)) if c[t]) for c in comp]
    with atomic_dir(out, "decode", overwrite) as tmp:
        for i, cid in track(list(enumerate(ids)), "writing CIFs"):
            write_structure(res.occ[i], m.host, tmp / f"{cid}.cif")
        write_csv(tmp / "decoded.csv", df, full_precision=full_precision)
    exact = int((res.distance < 1e-6).sum())
    console.print(
        f"{len(ids)} embeddings decoded ({exact} exactly on an orbit, largest distance {res.distance.max():.3g}) -> {out}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("design")(design_cmd)
    app.command("decode")(decode_cmd)
