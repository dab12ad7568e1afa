"""``invdesign label STRUCTURES --oracle SPEC --out F.csv``: many oracle calls, resumable."""

from __future__ import annotations

from pathlib import Path

import typer

from invdesign.commands.common import (
    HostOpt,
    LazyConsole,
    SupercellOpt,
    ThreadsOpt,
    TolOpt,
    check_inputs,
    check_out_file,
    oracle_threads,
    resolve_host,
)

console = LazyConsole()


def label_cmd(
    structures: list[Path] = typer.Argument(..., help="CIF/POSCAR/JSON files, folders, or 2DMD initial.tar.gz archives."),
    oracle: str = typer.Option(..., "--oracle", help="chgnet (raw energies), chgnet:MU.json, chgnet+delta[:FILE], "
                               "xtb (GFN1-xTB energies and HOMO-LUMO gap; ~20-70 CPU-s per 192-atom cell), xtb:MU.json, "
                               "xtb+delta[:FILE] (gap corrected toward DFT, with stds), gpaw[:MU.json] (PBE, GPAW "
                               "LCAO: energy and gap; minutes per cell; needs GPAW), table:F.csv, "
                               "python:module:function, ase:module:factory."),
    out: Path = typer.Option(..., "--out", help="Output CSV, appended as structures finish; a rerun skips the ids in it."),
    executor: str = typer.Option("auto", "--executor", help="auto (process pool; inline for tables), inline, thread[:N], "
                                 "process[:N], dask-local[:N], dask://host:port."),
    relaxed: Path = typer.Option(None, "--relaxed", help="Write each relaxed structure as DIR/<id>.cif (relaxing oracles)."),
    steps: int = typer.Option(None, "--steps", min=0, help="chgnet / ase: most FIRE steps (0 = single point; default 50). "
                              "chgnet+delta: its energy stays the single point its correction was fitted on; --steps "
                              "relaxes the structures --relaxed writes (default 50)."),
    fmax: float = typer.Option(None, "--fmax", min=0.0, help="chgnet / ase / chgnet+delta --relaxed: force threshold, "
                               "eV/Angstrom (default 0.1)."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed",
        help="Label again the rows of --out whose oracle failed (rows lost by the executor, a dead worker or a "
             "cancelled call, are labelled again always)."),
    host: str = HostOpt,
    supercell: str = SupercellOpt,
    tol: float = TolOpt,
    threads: int = ThreadsOpt,
) -> None:
    """Evaluate an oracle on every structure: `id,canonical_key,<oracle outputs>,seconds,error` (eV, Angstrom, s).

    Exit status 1 when rows were lost by the executor (rerun to label them) or when every row this run
    labelled failed."""
    from invdesign.campaign.executors import check_spec
    from invdesign.campaign.label import label
    from invdesign.campaign.oracles import AseOracle, ChgnetDeltaOracle, make_oracle
    from invdesign.data.dataset import map_structures
    from invdesign.errors import InvdesignError
    from invdesign.limits import check_number
    from invdesign.progress import task

    if steps is not None:
        check_number("--steps", steps, 0, 100_000, integer=True)
    if fmax is not None:
        check_number("--fmax", fmax, 0.0, 1e3)
    check_inputs(structures)
    # an existing --out is resumed, never replaced: label() appends only to a file with its own header
    # and refuses (untouched) anything else
    check_out_file(out, overwrite=True)
    check_spec(executor)
    if relaxed is not None and relaxed.exists() and not relaxed.is_dir():
        raise InvdesignError("exists and is not a folder", source=str(relaxed))
    h = resolve_host(host, supercell, structures)  # a packaged host is recognised from the structures
    orc = make_oracle(oracle, h, need_mu=False)
    if isinstance(orc, ChgnetDeltaOracle) and orc.steps == 0:
        # the corrected energy is the single point of the ideal geometry (the protocol its correction was
        # fitted on, which a relaxation would leave); the structures --relaxed writes are relaxed afterwards
        if relaxed is None and (steps is not None or fmax is not None):
            raise InvdesignError(f"{oracle}: the energy is the single point its correction was fitted on; "
                                 "--steps/--fmax relax the structures that --relaxed DIR writes (give --relaxed)")
        if relaxed is not None:
            orc.check_steps = 50 if steps is None else steps
            orc.check_fmax = 0.1 if fmax is None else fmax
    elif steps is not None or fmax is not None:
        if not isinstance(orc, AseOracle):
            raise InvdesignError(f"--steps/--fmax apply to relaxing oracles (chgnet, ase), not {oracle}")
        if ":" in oracle and oracle.startswith("chgnet"):
            raise InvdesignError(f"the protocol of {oracle} is fixed by its file (its chemical potentials were fitted with it)")
        orc.steps = orc.steps if steps is None else steps
        orc.fmax = orc.fmax if fmax is None else fmax
    if relaxed is not None and not isinstance(orc, AseOracle):
        raise InvdesignError(f"--relaxed needs a relaxing oracle (chgnet, ase), not {oracle}")
    ds = map_structures(structures, h, tol)
    from invdesign.campaign.oracles import TableOracle

    if isinstance(orc, TableOracle):  # every label there and finite, or refused before anything is written
        orc.check_complete(list(ds.ids), ds.keys)
    desc = f"labelling with {getattr(orc, 'name', oracle)}" + (f" ({orc.protocol})" if isinstance(orc, AseOracle) else "")
    if isinstance(orc, AseOracle) and orc.steps == 0 and orc.check_steps > 0:
        desc += f"; structures relaxed after it (FIRE fmax {orc.check_fmax:g} eV/A, <= {orc.check_steps} steps)"
    with task(desc, total=len(ds)) as advance, oracle_threads(threads, orc):
        stats = label(ds.occ, list(ds.ids), orc, out, h, executor=executor, relaxed_dir=relaxed,
                      on_row=advance, retry_failed=retry_failed)
    lost = stats.get("lost", 0)  # rows the executor lost are not the oracle's failures (a rerun labels them)
    console.print(
        f"{stats['labelled'] - lost} labelled ({stats['failed'] - lost} failed), " + (f"{lost} lost, " if lost else "")
        + f"{stats['skipped']} already in {out}; {stats['total']} structures, {stats['seconds']:.1f} s", highlight=False)
    if stats.get("lost"):  # a dead worker or a cancelled future: not the oracle's answer, so not final
        import sys

        print(f"invdesign: error: {stats['lost']} structure(s) were lost by the executor (a worker died or a call was "
              f"cancelled); rerun the same command to label them", file=sys.stderr)
        raise typer.Exit(1)
    if stats["labelled"] and stats["failed"] == stats["labelled"]:  # the oracle failed on every structure
        import sys

        first = _first_error(out)
        print(f"invdesign: error: the oracle failed on all {stats['labelled']} structure(s) of this run"
              + (f" (first: {first})" if first else "") + "; fix it and rerun with --retry-failed", file=sys.stderr)
        raise typer.Exit(1)


def _first_error(out: Path) -> str:
    import csv

    try:
        with open(out, newline="") as fh:
            return next((r[-1] for r in list(csv.reader(fh))[1:] if r and r[-1]), "")[:200]
    except (OSError, csv.Error):
        return ""


def register(app: typer.Typer) -> None:
    app.command("label")(label_cmd)
