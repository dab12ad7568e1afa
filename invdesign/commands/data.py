"""``invdesign data info``, ``invdesign canon``, ``invdesign enumerate``, ``invdesign columns``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from invdesign.commands.common import (
    HostOpt,
    LazyConsole,
    OverwriteOpt,
    SupercellOpt,
    TolOpt,
    check_inputs,
    check_out_dir,
    check_out_file,
    print_table,
    resolve_host,
)
from invdesign.errors import InvdesignError

console = LazyConsole()


def data_info(
    path: Path = typer.Argument(..., help="A 2DMD dataset folder, or a folder of structures (+ targets.csv)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Counts, defect-type table and target ranges of a dataset."""
    from invdesign.data.dataset import load_dataset

    ds = load_dataset(path)
    s = ds.summary()
    if as_json:
        print(json.dumps(s, indent=2))
        return
    from rich.table import Table

    console.print(f"[bold]{s['name']}[/]: {s['structures']} structures on {s['host']} ({s['spacegroup']}, {s['n_sites']} sites), {s['distinct_classes']} distinct symmetry classes")
    t = Table(title="defects per structure")
    t.add_column("defects")
    t.add_column("structures", justify="right")
    for k, v in s["by_n_defects"].items():
        t.add_row(str(k), str(v))
    print_table(console, t)
    t = Table(title="defect types")
    for c in ("type", "structures with it", "defects"):
        t.add_column(c, justify="right")
    for lab, v in s["defect_types"].items():
        t.add_row(lab, str(v["structures"]), str(v["defects"]))
    print_table(console, t)
    if s["targets"]:
        t = Table(title="targets (eV)")
        for c in ("target", "min", "max", "mean", "std"):
            t.add_column(c, justify="right")
        for name, v in s["targets"].items():
            t.add_row(name, *(f"{v[k]:.4f}" for k in ("min", "max", "mean", "std")))
        print_table(console, t)
    if s["extra_files"]:
        console.print(f"also present: {', '.join(s['extra_files'])}")


def canon(
    structures: list[Path] = typer.Argument(..., help="CIF/POSCAR/JSON files, folders, or 2DMD initial.tar.gz archives."),
    out: Path = typer.Option(..., "--out", help="Output CSV: id,canonical_key."),
    host: str = HostOpt,
    supercell: str = SupercellOpt,
    tol: float = TolOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Canonical keys: equal keys <=> symmetry-equivalent configurations."""
    import pandas as pd

    from invdesign.data.dataset import map_structures
    from invdesign.io import write_csv

    check_inputs(structures)
    check_out_file(out, overwrite=overwrite)
    h = resolve_host(host, supercell, structures)
    ds = map_structures(structures, h, tol)
    keys = ds.keys
    write_csv(out, pd.DataFrame({"id": ds.ids, "canonical_key": keys}))
    console.print(f"{len(ds)} structures, {len(set(keys))} distinct classes -> {out}", highlight=False)


def enumerate_cmd(
    out: Path = typer.Option(..., "--out", help="Output CSV: canonical_key,n_defects,orbit_size,<type counts>."),
    host: str = HostOpt,
    supercell: str = SupercellOpt,
    max_defects: int = typer.Option(3, "--max-defects", min=0, help="Largest number of defects."),
    min_defects: int = typer.Option(1, "--min-defects", min=0, help="Smallest number of defects."),
    types: list[str] = typer.Option(None, "--type", help="Allowed defect types, e.g. V_S (repeat; default all)."),
    structures: Path = typer.Option(None, "--structures", help="Also write one CIF per orbit into this folder."),
    overwrite: bool = OverwriteOpt,
) -> None:
    """Every symmetry-distinct configuration, with its orbit size; checked against Burnside's lemma."""
    import pandas as pd

    from invdesign.io import atomic_dir, write_csv, write_structure
    from invdesign.lattice.enumerate import burnside_count, enumerate_orbits, parse_defect_types
    from invdesign.progress import task, track

    check_out_file(out, overwrite=overwrite)
    if structures is not None:
        check_out_dir(structures, "enumerate --structures", overwrite)
    h = resolve_host(host, supercell)
    idx = parse_defect_types(h, types or None)
    if min_defects > max_defects:
        raise InvdesignError(f"--min-defects {min_defects} is above --max-defects {max_defects}")
    from invdesign.limits import check_enumeration

    check_enumeration(h, max_defects, min_defects, idx)
    labels = [h.defect_label(*h.defect_types[i]) for i in range(len(h.defect_types))]
    with task(f"enumerating {h.name} up to {max_defects} defects", total=max_defects + 1) as advance:
        tab = enumerate_orbits(h, max_defects, min_defects, [labels[i] for i in idx], progress=lambda k, n: advance())
    df = pd.DataFrame({"canonical_key": tab.keys, "n_defects": tab.n_defects, "orbit_size": tab.orbit_size})
    for t, lab in enumerate(labels):
        df[lab] = tab.composition[:, t]
    comps = df.groupby(labels).size()
    mismatch = 0
    from rich.table import Table

    table = Table(title=f"orbits of {h.name} ({h.n_ops} symmetry operations)")
    for c in ("defects", "orbits", "Burnside", "configurations"):
        table.add_column(c, justify="right")
    for k, grp in df.groupby("n_defects"):
        bs = sum(burnside_count(h, dict(zip(labels, comp))) for comp in grp.groupby(labels).size().index)
        mismatch += bs != len(grp)
        table.add_row(str(k), str(len(grp)), str(bs), str(int(grp["orbit_size"].sum())))
    print_table(console, table)
    if mismatch:
        raise SystemExit("invdesign: error: enumeration disagrees with Burnside's lemma")
    if structures is None:
        write_csv(out, df)
    else:  # the CSV is written last inside the folder's block: both appear, or neither
        with atomic_dir(structures, "enumerate --structures", overwrite) as tmp:
            for i in track(range(len(tab)), "writing CIFs"):
                write_structure(tab.occ[i], h, tmp / f"orbit{i:06d}.cif")
            write_csv(out, df)
    console.print(f"{len(df)} orbits in {len(comps)} compositions -> {out}", highlight=False)


def columns_cmd(
    which: str = typer.Argument("all", help="design (candidates.csv), predict (the predict CSV) or all.",
                                metavar="design|predict|all"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: [{command, column, unit, rounding, meaning}]."),
) -> None:
    """The column guide: every column design and predict write, with its unit, how the CSV rounds it (without
    --full-precision) and its meaning (docs/outputs.md).

    A table on a terminal; tab-separated lines (command, column, unit, rounding, meaning; a header first) when piped."""
    from invdesign.columns import guide

    if which not in ("design", "predict", "all"):
        raise typer.BadParameter(f"must be design, predict or all, not {which!r}", param_hint="WHICH")
    rows = guide(which)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    keys = ("command", "column", "unit", "rounding", "meaning") if which == "all" else ("column", "unit", "rounding", "meaning")
    if not console.is_terminal:
        print("\t".join(keys))
        for r in rows:
            print("\t".join(r[k] for k in keys))
        return
    from rich.table import Table

    for command in ("predict", "design"):  # one table per command (which == "all": both)
        if which not in (command, "all"):
            continue
        t = Table(title=f"columns of invdesign {command} (energies in eV; docs/outputs.md)", expand=True)
        for k in keys[-4:]:  # names, units and rounding whole, the meaning wrapped into the rest of the width
            t.add_column(k, no_wrap=k != "meaning", ratio=1 if k == "meaning" else None,
                         min_width=24 if k == "meaning" else None)
        for r in rows:
            if r["command"] == command:
                t.add_row(*(r[k] for k in keys[-4:]))
        console.print(t, highlight=False)


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
    data_app.command("info")(data_info)
    app.add_typer(data_app, name="data")
    app.command("canon")(canon)
    app.command("enumerate")(enumerate_cmd)
    app.command("columns")(columns_cmd)
