"""``invdesign campaign init|suggest|observe|status|run|report|fit-chgnet``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from invdesign.commands.common import FullPrecisionOpt, LazyConsole, OverwriteOpt, oracle_threads, print_table
from invdesign.errors import InvdesignError

console = LazyConsole()
err_console = LazyConsole(stderr=True)

DbOpt = typer.Option(..., "--db", help="The campaign's SQLite file.")
TargetOpt = typer.Option(None, "--target", help="Window NAME=LO:HI in eV (repeat), e.g. homo_lumo_gap=0.4:0.6.")
MinOpt = typer.Option(None, "--minimise", help="Single objective: minimise this target.")
MaxOpt = typer.Option(None, "--maximise", help="Single objective: maximise this target.")
ThrOpt = typer.Option(None, "--threshold", help="With --minimise/--maximise: values at or beyond this (eV) are hits.")
PoolOpt = typer.Option(None, "--pool", help="Candidate STRUCTURES (files, folders, initial.tar.gz; repeat). Default: enumeration.")
OracleOpt = typer.Option(None, "--oracle", help="table:F.csv (labels by _id), surrogate[:MODEL], chgnet:MU.json, chgnet+delta[:FILE] (CHGNet corrected toward DFT), xtb[:MU.json] (GFN1-xTB gap; formation energy with MU.json), xtb+delta[:FILE] (xTB gap corrected toward DFT), gpaw[:MU.json] (PBE gap; formation energy with MU.json) or python:module:function.")
BatchOpt = typer.Option(5, "--batch", min=1, help="Suggestions per step.")
BudgetOpt = typer.Option(None, "--budget", min=1, help="Most evaluations.")
UntilOpt = typer.Option(None, "--until-hits", min=1, help="Stop after this many hits (distinct in-window configurations).")
SeedOpt = typer.Option(0, "--seed", help="Random seed (GP fits, random steps).")
ModelOpt = typer.Option(None, "--model", help="Model file (default: the packaged model).")
FeatOpt = typer.Option("model", "--features", help="GP features: model (12-D embedding, warm start) or pairs (exact, no model).")
WarmOpt = typer.Option(True, "--warm-start/--no-warm-start", help="Use the model's predictions as the GP prior mean.")
AcqOpt = typer.Option("auto", "--acquisition", help="pwin (window), ei (single objective), random, or auto.")
ExecOpt = typer.Option(None, "--executor", help="auto, inline, process[:N], thread[:N], dask-local[:N], dask://host:port.")
MaxDefOpt = typer.Option(3, "--max-defects", min=1, help="Enumeration: largest number of defects.")
MinDefOpt = typer.Option(1, "--min-defects", min=1, help="Enumeration: smallest number of defects.")
TypeOpt = typer.Option(None, "--type", help="Enumeration: allowed defect types, e.g. V_S (repeat; default all).")
HostOpt = typer.Option(None, "--host", help="Host: a packaged host (MoS2, WSe2, BN, GaSe, InSe, P), a pristine unit-cell "
                       "CIF or a host TOML; default: recognised from the --pool structures, else 8x8 MoS2.")
SupercellOpt = typer.Option(None, "--supercell", help="Supercell of the host, e.g. 8x8 (default: a packaged host's 2DMD "
                            "cell, else 8x8).")
GenOpt = typer.Option(None, "--generate", min=1, help="Candidates: N configurations from the model's flow + decoder for the window.")


def _create(db: Path, target, minimise, maximise, threshold, pool, oracle, batch, budget, until_hits, seed, model,
            features, warm_start, acquisition, executor, max_defects, min_defects, types, host, supercell, generate=None,
            allow_failures=False):
    from invdesign.campaign import Campaign, Target

    tgt = Target.from_cli(target, minimise, maximise, threshold)
    return Campaign.create(
        db, tgt, pool or None, max_defects=max_defects, min_defects=min_defects, defect_types=types or None,
        host=host, supercell=supercell, oracle=oracle, batch=batch, budget=budget, until_hits=until_hits, seed=seed,
        model=model, features=features, warm_start=warm_start, acquisition=acquisition, executor=executor or "auto",
        generate=generate, allow_failures=allow_failures,
    )


def init(
    db: Path = DbOpt, target: list[str] = TargetOpt, minimise: str = MinOpt, maximise: str = MaxOpt,
    threshold: float = ThrOpt, pool: list[Path] = PoolOpt, oracle: str = OracleOpt, batch: int = BatchOpt,
    budget: int = BudgetOpt, until_hits: int = UntilOpt, seed: int = SeedOpt, model: str = ModelOpt,
    features: str = FeatOpt, warm_start: bool = WarmOpt, acquisition: str = AcqOpt, executor: str = ExecOpt,
    max_defects: int = MaxDefOpt, min_defects: int = MinDefOpt, types: list[str] = TypeOpt,
    host: str = HostOpt, supercell: str = SupercellOpt, generate: int = GenOpt,
) -> None:
    """Create a campaign: target, search space (pool or enumeration), oracle, batch size."""
    c = _create(db, target, minimise, maximise, threshold, pool, oracle, batch, budget, until_hits, seed, model,
                features, warm_start, acquisition, executor, max_defects, min_defects, types, host, supercell, generate)
    with c:
        st = c.status()
    console.print(f"campaign {db}: {st['target']}; {st['candidates']} candidates; oracle {st['oracle']}", highlight=False)


def suggest(
    db: Path = DbOpt,
    n: int = typer.Option(None, "-n", min=1, help="How many (default: the campaign's batch size)."),
    out: Path = typer.Option(None, "--out", help="Also write the batch as CSV (id, canonical_key, predictions; fill in the targets)."),
    structures: Path = typer.Option(None, "--structures", help="Also write one CIF per suggestion into this folder."),
    overwrite: bool = OverwriteOpt,
    full_precision: bool = FullPrecisionOpt,
) -> None:
    """Suggest the next batch (recorded as pending) and print it."""
    from invdesign.campaign import Campaign
    from invdesign.commands.common import check_out_dir, check_out_file
    from invdesign.data.dataset import TARGETS
    from invdesign.io import atomic_dir, write_csv, write_structure

    if n is not None:
        from invdesign.campaign.campaign import MAX_COUNT
        from invdesign.limits import check_number

        check_number("-n", n, 1, MAX_COUNT, integer=True)
    if out is not None:  # both outputs are checked before anything is suggested (and recorded)
        check_out_file(out, overwrite=overwrite)
    if structures is not None:
        check_out_dir(structures, "campaign suggest --structures", overwrite)
    with Campaign.open(db) as c:
        st_batch = int(c.config["batch"])
        if structures is not None:  # ids come from the database (data, not trusted): file names inside the folder only
            from invdesign.data.readers import check_id

            for cid in c.candidates[0]["id"]:
                check_id(str(cid), str(db), "candidate id", "{reason}, so it cannot name a file (was the database "
                         "edited?); nothing was suggested")
        from contextlib import ExitStack

        with ExitStack() as staged:
            def write_batch(df) -> None:  # before the batch is recorded: a failed write records nothing
                if out is not None:
                    sheet = df.copy()
                    for t in TARGETS:
                        sheet[t] = ""
                    write_csv(out, sheet, full_precision=full_precision)
                if structures is not None:
                    cands, occ = c.candidates
                    idx = dict(zip(cands["canonical_key"], range(len(cands))))
                    tmp = staged.enter_context(atomic_dir(structures, "campaign suggest --structures", overwrite))
                    for r in df.itertuples(index=False):
                        write_structure(occ[idx[r.canonical_key]], c.host, tmp / f"{r.id}.cif")

            df = c.suggest(n, on_batch=write_batch)
        # (the structures folder is moved into place once the batch is recorded)
    if not len(df):
        console.print("nothing left to suggest (candidates or budget exhausted)")
        return
    want = n or st_batch
    if len(df) < want:
        err_console.print(f"invdesign: {len(df)} suggestions, not {want}: the budget or the candidates left allow no more",
                          highlight=False, soft_wrap=True)
    from rich.table import Table

    from invdesign.columns import display

    t = Table(title=f"step {int(df['step'].iat[0])}: {len(df)} suggestions")
    shown = ("acquisition", *(f"{x}_mean" for x in TARGETS))
    for col in ("id", "canonical_key", *shown):
        t.add_column(col.replace("formation_energy_per_site", "E_f").replace("homo_lumo_gap", "gap"), justify="right")
    for r in df.itertuples(index=False):  # as the --out CSV has them
        t.add_row(str(r.id), str(r.canonical_key), *(display(k, getattr(r, k), full_precision) for k in shown))
    print_table(console, t)


def observe(
    db: Path = DbOpt,
    source: Path = typer.Option(..., "--from", help="CSV with id and/or canonical_key and target columns (eV)."),
) -> None:
    """Record results (e.g. DFT) from a CSV; idempotent by canonical key."""
    from invdesign.campaign import Campaign

    if not source.is_file():
        raise InvdesignError("no such file", source=str(source))
    with Campaign.open(db) as c:
        new, rep = c.observe_csv(source)
        skipped = getattr(c, "last_skipped", 0)
        st = c.status()
    console.print(f"{new} new observations, {rep} already recorded; {st['evaluations']} evaluations, {st['hits']} hits",
                  highlight=False)
    if skipped:
        err_console.print(f"invdesign: {skipped} row(s) of {source} have no target value and were skipped (not measured)",
                          highlight=False, soft_wrap=True)


def status(db: Path = DbOpt, as_json: bool = typer.Option(False, "--json", help="Print JSON (values at full precision).")) -> None:
    """Evaluations, hits, pending suggestions and the best observation (eV rounded to 4 decimals in the table)."""
    from invdesign.campaign import Campaign

    with Campaign.open(db, readonly=True) as c:
        c.validate()  # what run and suggest would refuse is refused here too (not reported as a healthy campaign)
        st = c.status()
    if as_json:
        print(json.dumps(st, indent=2))
        return
    from rich.table import Table

    t = Table(title=f"campaign {db}: {st['target']}")
    t.add_column("")
    t.add_column("", justify="right")
    for k in ("evaluations", "hits", "pending", "failed", "steps", "candidates", "budget", "until_hits", "oracle", "done"):
        t.add_row(k, str(st[k]))
    if st["best"]:
        b = st["best"]
        from invdesign.columns import display

        fe, gap = (display(k, b[k]) if b[k] is not None else "n/a" for k in ("formation_energy_per_site", "homo_lumo_gap"))
        t.add_row("best", f"{b['id']} (E_f {fe}, gap {gap} eV)")
    print_table(console, t)
    _say_failures(st)


def _say_failures(st: dict) -> None:
    """One line on stderr when evaluations failed (count and the first reason)."""
    if st.get("failed"):
        f = (st.get("failures") or [{}])[0]
        err_console.print(f"invdesign: {st['failed']} evaluation(s) failed (not observed, budget spent); first: "
                          f"{f.get('id')}: {f.get('error')}", highlight=False, soft_wrap=True)


def run(
    db: Path = DbOpt, target: list[str] = TargetOpt, minimise: str = MinOpt, maximise: str = MaxOpt,
    threshold: float = ThrOpt, pool: list[Path] = PoolOpt, oracle: str = OracleOpt,
    batch: int = typer.Option(None, "--batch", min=1, help="Suggestions per step (default 5; a resumed campaign keeps its own)."),
    budget: int = BudgetOpt, until_hits: int = UntilOpt, seed: int = SeedOpt, model: str = ModelOpt,
    features: str = typer.Option(None, "--features", help="GP features: model (default; 12-D embedding, warm start) or pairs (exact, no model)."),
    warm_start: bool = WarmOpt, acquisition: str = AcqOpt, executor: str = ExecOpt,
    max_defects: int = MaxDefOpt, min_defects: int = MinDefOpt, types: list[str] = TypeOpt,
    host: str = HostOpt, supercell: str = SupercellOpt, generate: int = GenOpt,
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Stop after this many suggest steps."),
    allow_failures: bool = typer.Option(
        False, "--allow-failures",
        help="Record bad labels (inf, NaN, text, missing ids in a table oracle) as failed evaluations instead of stopping; "
             "failures are counted and reported, and the exit status is 1 when nothing could be evaluated."),
    trust_db: bool = typer.Option(
        False, "--trust-db",
        help="Run the oracle stored in the database even if it imports code (python:, ase:); otherwise such an "
             "oracle runs only when --oracle names it again."),
    threads: int = typer.Option(
        1, "--threads", min=1, max=1024,
        help="Torch threads per CHGNet calculation in each worker; default 1: a pool of one worker per core, each on one "
             "thread, keeps the cores busy without contention (with --executor inline, give the number of cores). xTB "
             "runs one thread per calculation; Dask workers keep the thread settings they were started with."),
) -> None:
    """Run (or resume) a campaign until --until-hits hits or --budget evaluations."""
    from invdesign.campaign import Campaign, Target
    from invdesign.campaign.campaign import absolute_path, absolute_spec
    from invdesign.campaign.store import Store

    if target or minimise or maximise:  # a goal campaigns cannot take (e.g. total_mag) is refused before anything else
        Target.from_cli(target, minimise, maximise, threshold)
    exists = db.exists() and db.stat().st_size > 0 and not Store.blank(db)  # a blank file: a killed creation, recreated
    if not exists and budget is None and until_hits is None:
        raise InvdesignError("give --budget or --until-hits (or both) so that the campaign can stop; nothing was created",
                             source=str(db))
    if executor and executor.startswith("dask://") and not exists:  # no scheduler there: refused before a database is made
        from invdesign.campaign.executors import check_spec, make_executor

        with make_executor(check_spec(executor)):
            pass
    if exists:
        c = Campaign.open(db)
        cfg = c.config
        if budget is None and until_hits is None and cfg.get("budget") is None and cfg.get("until_hits") is None:
            c.close()
            raise InvdesignError("give --budget or --until-hits (or both) so that the campaign can stop", source=str(db))
        if target or minimise or maximise:
            given = Target.from_cli(target, minimise, maximise, threshold)
            if given.to_dict() != c.target.to_dict():
                c.close()
                raise InvdesignError(f"the campaign's target is {c.target.describe()}, not {given.describe()}", source=str(db))
        base = db.absolute().parent
        if oracle and cfg.get("oracle") and absolute_spec(oracle) != absolute_spec(cfg["oracle"], base):
            c.close()
            raise InvdesignError(f"the campaign's oracle is {cfg['oracle']}, not {oracle}", source=str(db))
        for name, given, stored in (("batch", batch, cfg.get("batch")), ("features", features, cfg.get("features"))):
            if given is not None and stored is not None and given != stored:
                c.close()
                raise InvdesignError(f"the campaign's {name} is {stored}, not {given}; start a new --db to change it", source=str(db))
        if pool and [absolute_path(p, base) for p in cfg["space"].get("paths") or []] != [absolute_path(p) for p in pool]:
            c.close()
            raise InvdesignError(f"the campaign's pool is {cfg['space'].get('paths')}, not {[str(p) for p in pool]}", source=str(db))
        resumed = True
    else:
        c = _create(db, target, minimise, maximise, threshold, pool, oracle, batch or 5, budget, until_hits, seed, model,
                    features or "model", warm_start, acquisition, executor, max_defects, min_defects, types, host, supercell,
                    generate, allow_failures)
        resumed = False
    from invdesign.campaign.campaign import LostEvaluations

    with c, oracle_threads(threads):  # (an xTB oracle is made inside the run: its calculations use the environment's)
        before = c.status()["evaluations"]
        failed_before = c.status()["failed"]
        try:
            st = c.run(oracle or None, until_hits=until_hits, budget=budget, executor=executor, max_steps=max_steps,
                       allow_failures=allow_failures, trust_stored_code=trust_db)
        except LostEvaluations as exc:  # not the oracle's answer, so not final: exit 1 as label does
            err_console.print(f"invdesign: error: {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
    new = st["evaluations"] - before
    console.print(
        f"{'resumed' if resumed else 'ran'} {db}: {st['evaluations']} evaluations ({new} new), "
        f"{st['hits']} hits; target {st['target']}"
        + (f"; {st['failed']} failed" if st["failed"] else ""), highlight=False)
    _say_failures(st)
    if st["failed"] > failed_before and new == 0:
        err_console.print("invdesign: error: nothing could be evaluated in this run", highlight=False)
        raise typer.Exit(1)  # main() returns the code (exit status 1: nothing could be evaluated)


def report(db: Path = DbOpt, out: Path = typer.Option(..., "--out", help="Output folder."),
           overwrite: bool = OverwriteOpt, full_precision: bool = FullPrecisionOpt) -> None:
    """Plots (best so far, hits vs evaluations), observations.csv and the hits' CIFs (the database is only read)."""
    from invdesign.campaign import Campaign
    from invdesign.commands.common import check_out_dir
    from invdesign.io import csv_precision

    check_out_dir(out, "campaign report", overwrite)
    with Campaign.open(db, readonly=True) as c, csv_precision(full_precision):
        c.validate()
        path = c.report(out, overwrite)
        st = c.status()
    console.print(f"{st['evaluations']} observations, {st['hits']} hits -> {path}", highlight=False)


def fit_chgnet(
    data: Path = typer.Option(..., "--data", help="A labelled 2DMD dataset folder (the share)."),
    out: Path = typer.Option(..., "--out", help="JSON file for the fitted chemical potentials (use as --oracle chgnet:OUT)."),
    n: int = typer.Option(12, "-n", min=4, help="Structures to fit on (stratified over defect types)."),
    fmax: float = typer.Option(0.1, "--fmax", help="Relaxation force threshold (eV/Angstrom)."),
    steps: int = typer.Option(50, "--steps", min=0, help="Most relaxation steps (0 = single point)."),
    seed: int = SeedOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Fit CHGNet chemical potentials to DFT formation energies on a sample of a labelled dataset."""
    from invdesign.campaign.oracles import ChgnetOracle, fit_chemical_potentials, stratified_sample
    from invdesign.commands.common import check_out_file
    from invdesign.data.dataset import load_dataset

    check_out_file(out, (".json",), overwrite)
    ds = load_dataset(data)
    idx = stratified_sample(ds, n, seed)
    oracle = ChgnetOracle(fmax=fmax, steps=steps, host=ds.host)
    oracle.mu = fit_chemical_potentials(oracle, ds.occ[idx], ds.y(["formation_energy_per_site"])[idx, 0])
    oracle.save(out)
    console.print(f"chemical potentials (eV/atom) {oracle.mu} from {len(idx)} structures -> {out}", highlight=False)


def register(app: typer.Typer) -> None:
    camp = typer.Typer(help="Bayesian-optimisation campaigns (persistent, resumable).", no_args_is_help=True)
    camp.command("init")(init)
    camp.command("suggest")(suggest)
    camp.command("observe")(observe)
    camp.command("status")(status)
    camp.command("run")(run)
    camp.command("report")(report)
    camp.command("fit-chgnet")(fit_chgnet)
    app.add_typer(camp, name="campaign")
