"""Reading structures: CIF, POSCAR, pymatgen JSON, folders of them and 2DMD archives.

Every STRUCTURES argument of the CLI goes through :func:`iter_sources`, which expands files,
folders and ``*.tar.gz`` archives into ``(id, source, text)`` records; :func:`parse` turns one
into a :class:`RawStructure` (lattice, species, fractional coordinates). Plain P1 CIFs (like
every 2DMD file) take a fast path that reads the cell and the ``_atom_site`` loop directly;
anything else goes through pymatgen. The two agree exactly on the 2DMD share (tested).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from invdesign.errors import InvdesignError

STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar", ".json")
STRUCTURE_NAMES = ("POSCAR", "CONTCAR")
MAX_STRUCTURE_BYTES = 50 << 20  # one structure file (or archive member): a 2DMD CIF is ~10 kB
MAX_ARCHIVE_BYTES = 4 << 30  # all members of one archive, uncompressed
MAX_FRAC = 1e3  # fractional coordinates beyond this are not a structure's (a 2DMD file stays within [-1, 2])
MAX_ID_CHARS = 200


@dataclass
class RawStructure:
    """A parsed structure before mapping to a host.

    Attributes:
        id: file stem.
        source: where it came from (path, or ``archive.tar.gz:member``), for error messages.
        lattice: ``(3, 3)`` lattice vectors as rows, Angstrom.
        species: element symbols, one per atom.
        frac: ``(m, 3)`` fractional coordinates.
    """

    id: str
    source: str
    lattice: np.ndarray
    species: list[str]
    frac: np.ndarray


@dataclass
class SourceRecord:
    id: str
    source: str
    text: str
    kind: str  # "cif" | "poscar" | "json"


def _kind(name: str) -> str | None:
    base = Path(name).name
    low = base.lower()
    if low.endswith(".cif"):
        return "cif"
    if low.endswith(".json"):
        return "json"
    if low.endswith((".vasp", ".poscar")) or base.startswith(STRUCTURE_NAMES):
        return "poscar"
    return None


def _stem(name: str) -> str:
    """Structure id of a file: its stem (``a.b.cif`` -> ``a.b``); a bare POSCAR/CONTCAR takes its folder's name."""
    base = Path(name).name
    if base in STRUCTURE_NAMES:
        return Path(name).parent.name or base
    low = base.lower()
    for suffix in STRUCTURE_SUFFIXES:
        if low.endswith(suffix):
            return base[: -len(suffix)]
    return base


def check_id(cid: str, source: str, what: str = "structure id", fix: str = "(the file name's stem) {reason}; rename the file") -> str:
    """``cid`` when it is usable as a file name (ids become ``structures/<id>.cif``); one line otherwise.

    Refused: empty, ``.``/``..`` or a leading dot (hidden), a path separator, a control character
    (newline, tab, NUL, ...), or more than :data:`MAX_ID_CHARS` characters.
    """
    reason = None
    if not cid:
        reason = "is empty"
    elif cid.startswith("."):
        reason = "starts with a dot"
    elif "/" in cid or "\\" in cid:
        reason = "holds a path separator"
    elif any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in cid):
        reason = "holds a control character (newline, tab, ...)"
    elif len(cid) > MAX_ID_CHARS:
        reason = f"is longer than {MAX_ID_CHARS} characters"
    if reason:
        raise InvdesignError(f"{what} {cid[:60]!r} " + fix.format(reason=reason), source=source)
    return cid


def _read_regular(path: Path) -> str:
    """Text of a structure file, read only if it is a regular file (a FIFO or a device would block or never
    end) of at most :data:`MAX_STRUCTURE_BYTES`."""
    try:
        st = os.stat(path)  # follows links: a link to /dev/zero is a device
        if not stat.S_ISREG(st.st_mode):
            raise InvdesignError("not a regular file (a pipe, device or socket is never read)", source=str(path))
        if st.st_size > MAX_STRUCTURE_BYTES:
            raise InvdesignError(f"file is {st.st_size / 2**20:.0f} MB; a structure file may hold at most "
                                 f"{MAX_STRUCTURE_BYTES >> 20} MB", source=str(path))
        with open(path, "rb") as fh:
            data = fh.read(MAX_STRUCTURE_BYTES + 1)
        if len(data) > MAX_STRUCTURE_BYTES:
            raise InvdesignError(f"file grew past {MAX_STRUCTURE_BYTES >> 20} MB while read", source=str(path))
        return data.decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvdesignError(f"cannot read ({exc.__class__.__name__})", source=str(path)) from None


def _check_regular(path: Path) -> None:
    try:
        ok = stat.S_ISREG(os.stat(path).st_mode)
    except OSError as exc:
        raise InvdesignError(f"cannot read ({exc.__class__.__name__})", source=str(path)) from None
    if not ok:
        raise InvdesignError("not a regular file (a pipe, device or socket is never read)", source=str(path))


def _holds_structures(folder: Path) -> bool:
    """True when ``folder`` (any depth; hidden entries skipped) holds a structure file or an archive."""
    for _root, dnames, fnames in os.walk(folder):
        dnames[:] = [d for d in dnames if not d.startswith(".")]
        if any(not f.startswith(".") and (_kind(f) or is_archive(Path(f))) for f in fnames):
            return True
    return False


def is_archive(path: Path) -> bool:
    return path.name.endswith((".tar.gz", ".tgz", ".tar"))


def iter_sources(paths: Iterable[str | Path]) -> Iterator[SourceRecord]:
    """Expand files, folders and tar archives into structure records (sorted within folders; hidden files skipped)."""
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise InvdesignError("no such file or folder", source=str(path))
        if path.is_dir():
            sub = sorted(q for q in path.iterdir() if (q.is_file() and not q.name.startswith(".") and (_kind(q.name) or is_archive(q))))
            if (path / "initial").is_dir():
                sub.append(path / "initial")
            layout_2dmd = (path / "initial").is_dir() or (path / "initial.tar.gz").is_file()
            for q in sorted(path.iterdir()):
                # nested folders are not read: one holding structures is refused (never skipped in silence);
                # a 2DMD dataset's unit_cells/ holds its host cells, not structures
                if q.name.startswith(".") or q.name == "initial" or not q.is_dir() \
                        or (layout_2dmd and q.name == "unit_cells"):
                    continue
                if _holds_structures(q):
                    raise InvdesignError(f"holds a subfolder {q.name}/ with structure files; subfolders are not read: "
                                         "give it as its own argument", source=str(path))
            if not sub:
                raise InvdesignError("folder holds no CIF/POSCAR/JSON files or archives", source=str(path))
            yield from iter_sources(sub)
        elif is_archive(path):
            yield from _iter_archive(path)
        else:
            kind = _kind(path.name)
            if kind is None:
                raise InvdesignError("not a CIF, POSCAR, pymatgen JSON or tar archive", source=str(path))
            cid = check_id(_stem(str(path)), str(path))
            yield SourceRecord(cid, str(path), _read_regular(path), kind)


def _iter_archive(path: Path) -> Iterator[SourceRecord]:
    _check_regular(path)
    try:
        with tarfile.open(path) as tar:
            members = sorted((m for m in tar.getmembers() if m.isfile() and _kind(m.name)), key=lambda m: m.name)
            if not members:
                raise InvdesignError("archive holds no structure files", source=str(path))
            total = 0
            for m in members:
                src = f"{path}:{m.name}"
                if m.size > MAX_STRUCTURE_BYTES:
                    raise InvdesignError(f"member is {m.size / 2**20:.0f} MB; a structure file may hold at most "
                                         f"{MAX_STRUCTURE_BYTES >> 20} MB", source=src)
                total += m.size
                if total > MAX_ARCHIVE_BYTES:
                    raise InvdesignError(f"archive unpacks to more than {MAX_ARCHIVE_BYTES >> 30} GB of structures",
                                         source=str(path))
                check_id(_stem(m.name), src)
                fh = tar.extractfile(m)
                assert fh is not None
                try:
                    text = fh.read(MAX_STRUCTURE_BYTES + 1).decode()
                except UnicodeDecodeError:
                    raise InvdesignError("cannot read (not a text file)", source=src) from None
                yield SourceRecord(_stem(m.name), src, text, _kind(m.name))  # type: ignore[arg-type]
    except tarfile.ReadError:
        raise InvdesignError("cannot read archive (damaged, or not a tar or tar.gz file)", source=str(path)) from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        reason = " ".join(str(exc).split()) or exc.__class__.__name__  # one line, whatever the library says
        raise InvdesignError(f"cannot read archive ({reason})", source=str(path)) from None


# ---------------------------------------------------------------------- fast CIF
_NUM = re.compile(r"^([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)(\([0-9]+\))?$")
_CELL_KEYS = ("_cell_length_a", "_cell_length_b", "_cell_length_c", "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma")
_IDENTITY_OPS = {"x,y,z", "+x,+y,+z"}


def _num(tok: str) -> float:
    m = _NUM.match(tok)
    if not m:
        raise ValueError(tok)
    return float(m.group(1))


def lattice_from_parameters(a: float, b: float, c: float, alpha: float, beta: float, gamma: float) -> np.ndarray:
    """``(3, 3)`` lattice rows in Angstrom with pymatgen's convention (``Lattice.from_parameters``)."""
    return _lattice_from_parameters(a, b, c, alpha, beta, gamma).copy()


@lru_cache(maxsize=256)
def _lattice_from_parameters(a: float, b: float, c: float, alpha: float, beta: float, gamma: float) -> np.ndarray:
    from pymatgen.core import Lattice

    return Lattice.from_parameters(a, b, c, alpha, beta, gamma).matrix


def _floats(col: list[str]) -> list[float]:
    """Convert a column of CIF numbers (``1.23`` or ``1.23(4)``) to float."""
    try:
        return list(map(float, col))
    except ValueError:
        return [_num(t) for t in col]


# The newline before the first line that ends a loop body: a tag, comment, loop_, data_, blank line or
# the end of the text. Starting with a literal "\n" lets the regex engine skip ahead quickly.
_LOOP_END = re.compile(r"\n[ \t]*(?:[_#]|loop_|data_|\n|\Z)")


def parse_cif_fast(text: str) -> tuple[np.ndarray, list[str], np.ndarray] | None:
    """Parse a single-block P1 CIF with whole-occupancy atoms; None when it is anything else.

    Tags are read line by line; loop bodies are cut out of the text in one regex search and
    tokenised in bulk, which is what makes this ~50x faster than a general CIF parser.
    """
    cell: dict[str, float] = {}
    n = len(text)
    pos = 0
    blocks = 0
    atoms: list[str] | None = None
    atoms_cols: list[str] = []
    ops: list[str] = []
    while pos < n:
        end = text.find("\n", pos)
        if end < 0:
            end = n
        line = text[pos:end].strip()
        pos = end + 1
        if not line or line[0] == "#":
            continue
        if line.startswith("data_"):
            blocks += 1
            if blocks > 1:
                return None
            continue
        if line[0] == "_":
            parts = line.split(None, 1)
            key = parts[0]
            if key in _CELL_KEYS:
                if len(parts) < 2:
                    return None
                cell[key] = _num(parts[1].strip())
            elif key in ("_symmetry_space_group_name_H-M", "_space_group_name_H-M_alt"):
                val = parts[1].strip().strip("'\"").replace(" ", "") if len(parts) > 1 else ""
                if val != "P1":
                    return None
            continue
        if line == "loop_":
            cols = []
            while pos < n:
                end = text.find("\n", pos)
                if end < 0:
                    end = n
                s = text[pos:end].strip()
                if not s.startswith("_"):
                    break
                cols.append(s.split()[0])
                pos = end + 1
            m = _LOOP_END.search(text, pos - 1)
            stop = m.start() + 1 if m else n
            body = text[pos:stop]
            pos = stop
            if any(c.startswith("_atom_site_") and not c.startswith("_atom_site_aniso") for c in cols):
                if atoms is not None or "'" in body or '"' in body:
                    return None
                toks = body.split()
                if not toks or len(toks) % len(cols) or len(toks) // len(cols) != body.strip().count("\n") + 1:
                    return None
                atoms = toks
                atoms_cols = cols
            elif any(c in ("_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz") for c in cols):
                col = next(j for j, c in enumerate(cols) if c.endswith("_xyz"))
                for row in body.strip().splitlines():
                    toks = re.findall(r"'[^']*'|\"[^\"]*\"|\S+", row)
                    if len(toks) != len(cols):
                        return None
                    ops.append(toks[col].strip("'\"").replace(" ", "").lower())
            continue
        # a value on its own line, text fields, or anything unexpected: let pymatgen handle it
        return None
    if len(cell) != 6 or atoms is None:
        return None
    if ops and set(ops) - _IDENTITY_OPS:
        return None
    need = ("_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z", "_atom_site_type_symbol")
    if any(c not in atoms_cols for c in need):
        return None
    ix, iy, iz, isp = (atoms_cols.index(c) for c in need)
    w = len(atoms_cols)
    try:
        try:
            frac = np.array([atoms[ix::w], atoms[iy::w], atoms[iz::w]], dtype=float).T
        except ValueError:  # numbers with uncertainties, e.g. 0.25(3)
            frac = np.array([_floats(atoms[ix::w]), _floats(atoms[iy::w]), _floats(atoms[iz::w])]).T
        if "_atom_site_occupancy" in atoms_cols:
            occ = _floats(sorted(set(atoms[atoms_cols.index("_atom_site_occupancy") :: w])))
            if any(abs(o - 1.0) > 1e-6 for o in occ):
                return None
    except ValueError:
        return None
    raw = atoms[isp::w]
    if not "".join(raw).isalpha():
        raw = [re.sub(r"[^A-Za-z]", "", t) for t in raw]
    if not all(t[:1].isupper() and t[1:].islower() or len(t) == 1 for t in set(raw)):
        raw = [t[:1].upper() + t[1:].lower() for t in raw]
    lattice = lattice_from_parameters(*(cell[k] for k in _CELL_KEYS))
    return lattice, raw, frac


def _pymatgen_parse(rec: SourceRecord) -> tuple[np.ndarray, list[str], np.ndarray]:
    import warnings

    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if rec.kind == "cif":
            from pymatgen.io.cif import CifParser

            structs = CifParser(io.StringIO(rec.text)).parse_structures(primitive=False)
            if len(structs) != 1:
                raise InvdesignError(f"CIF holds {len(structs)} structures; give one per file", source=rec.source)
            st = structs[0]
        elif rec.kind == "poscar":
            from pymatgen.io.vasp import Poscar

            st = Poscar.from_str(rec.text).structure
        else:
            st = Structure.from_dict(json.loads(rec.text))
    if not st.is_ordered:
        raise InvdesignError("structure has partial occupancies", source=rec.source)
    return st.lattice.matrix.copy(), [s.specie.symbol for s in st], st.frac_coords.copy()


def parse(rec: SourceRecord, fast: bool = True) -> RawStructure:
    """Parse one record; the fast CIF path when it applies, pymatgen otherwise."""
    out = None
    if fast and rec.kind == "cif":
        try:
            out = parse_cif_fast(rec.text)
        except (ValueError, ArithmeticError):  # e.g. "_cell_length_a ?": pymatgen decides, and names the reason
            out = None
    if out is None:
        try:
            out = _pymatgen_parse(rec)
        except InvdesignError:
            raise
        except Exception as exc:  # parser errors of every kind are the file's fault
            msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise InvdesignError(f"cannot parse {rec.kind.upper()} ({msg})", source=rec.source) from None
    lattice, species, frac = out
    if len(species) == 0:
        raise InvdesignError("structure has no atoms", source=rec.source)
    check_coordinates(lattice, frac, rec.source)
    return RawStructure(rec.id, rec.source, lattice, species, frac)


def check_coordinates(lattice: np.ndarray, frac: np.ndarray, source: str) -> None:
    """Refuse a non-finite cell or a non-finite or absurd (``|x| >`` :data:`MAX_FRAC`) fractional coordinate:
    such an atom would otherwise be wrapped onto some site."""
    lat = np.asarray(lattice, dtype=float)
    if not np.isfinite(lat).all():
        raise InvdesignError("the cell has a non-finite length or angle", source=source)
    f = np.asarray(frac, dtype=float).reshape(-1, 3)
    bad = ~np.isfinite(f) | (np.abs(np.nan_to_num(f, nan=0.0)) > MAX_FRAC)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        v = f[i, j]
        what = "not a finite number" if not math.isfinite(v) else f"beyond +-{MAX_FRAC:g} (not a position in the cell)"
        raise InvdesignError(f"atom {i}: fractional coordinate {'xyz'[j]} = {v:g} is {what}", source=source)


def raw_from_structure(structure, id: str = "structure", source: str = "<structure>") -> RawStructure:
    """Wrap a pymatgen Structure as a :class:`RawStructure`."""
    if not structure.is_ordered:
        raise InvdesignError("structure has partial occupancies", source=source)
    check_coordinates(structure.lattice.matrix, structure.frac_coords, source)
    return RawStructure(id, source, structure.lattice.matrix.copy(), [s.specie.symbol for s in structure], structure.frac_coords.copy())
