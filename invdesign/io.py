"""Writing outputs atomically: CSV/JSON files and output folders, CIF/POSCAR/JSON structures.

Nothing half-written: files are written to a temporary sibling and renamed into place;
folders are filled in a temporary sibling and renamed when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from invdesign.errors import InvdesignError
from invdesign.lattice.config import config_to_structure
from invdesign.lattice.host import HostLattice


def _check_parent(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise InvdesignError("output folder does not exist", source=str(parent))
    if not os.access(parent, os.W_OK):
        raise InvdesignError("output folder is not writable", source=str(parent))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file and a rename."""
    path = Path(path)
    _check_parent(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_csv(path: str | Path, df) -> Path:
    """Write a pandas DataFrame atomically (no index)."""
    return atomic_write_text(path, df.to_csv(index=False))


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``path`` when the block finishes without error."""
    path = Path(path)
    _check_parent(path)
    if path.exists() and not path.is_dir():
        raise InvdesignError("output exists and is not a folder", source=str(path))
    if path.exists() and not overwrite:
        raise InvdesignError("output folder exists", source=str(path))
    tmp = Path(tempfile.mkdtemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_structure(occ: np.ndarray, host: HostLattice, path: str | Path, fmt: str | None = None) -> Path:
    """Write one configuration as CIF, POSCAR or pymatgen JSON (format from suffix or ``fmt``)."""
    from pymatgen.io.cif import CifWriter
    from pymatgen.io.vasp import Poscar

    path = Path(path)
    st = config_to_structure(occ, host)
    fmt = fmt or ("cif" if path.suffix == ".cif" else "json" if path.suffix == ".json" else "poscar")
    if fmt == "cif":
        text = str(CifWriter(st))
    elif fmt == "poscar":
        text = Poscar(st, comment=path.stem).get_str()
    elif fmt == "json":
        text = json.dumps(st.as_dict())
    else:
        raise InvdesignError(f"unknown structure format {fmt!r} (cif, poscar, json)")
    return atomic_write_text(path, text)
