"""The campaign store: one SQLite file (stdlib ``sqlite3``, WAL journal, full sync).

Every step is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``): a process killed at any
moment leaves the file as of the last commit, and concurrent processes serialise on the write
lock (readers never block in WAL mode). Tables:

- ``meta(key, value)``: the campaign config (JSON) and the step counter.
- ``arrays(name, dtype, shape, data)``: candidate features ``(C, d)``, prior means/stds ``(C, 2)``.
- ``candidates(idx, id, canonical_key, occ, source)``: the search space, one row per symmetry
  class (``occ`` is the ``n_sites`` uint8 occupancy).
- ``suggestions(sid, step, idx, id, canonical_key, acquisition, mean/std per target, status)``:
  status ``pending`` -> ``observed`` or ``failed``; one suggestion per canonical key.
- ``observations(seq, canonical_key, id, <targets>, source, created, occ)``: one row per
  canonical key (idempotent ``observe``); ``seq`` is the evaluation order.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from invdesign.data.dataset import TARGETS
from invdesign.errors import InvdesignError

SCHEMA_VERSION = "1"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS arrays (name TEXT PRIMARY KEY, dtype TEXT NOT NULL, shape TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    idx INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, canonical_key TEXT NOT NULL UNIQUE,
    occ BLOB NOT NULL, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS suggestions (
    sid INTEGER PRIMARY KEY AUTOINCREMENT, step INTEGER NOT NULL, idx INTEGER, id TEXT NOT NULL,
    canonical_key TEXT NOT NULL UNIQUE, acquisition REAL,
    {", ".join(f"{t}_mean REAL, {t}_std REAL" for t in TARGETS)},
    status TEXT NOT NULL CHECK (status IN ('pending', 'observed', 'failed')), error TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS observations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, canonical_key TEXT NOT NULL UNIQUE, id TEXT NOT NULL,
    {", ".join(f"{t} REAL" for t in TARGETS)}, source TEXT NOT NULL, step INTEGER, created REAL NOT NULL, occ BLOB NOT NULL);
"""


def _same(a: float | None, b: float | None, tol: float = 1e-9) -> bool:
    fa = None if a is None or (isinstance(a, float) and math.isnan(a)) else float(a)
    fb = None if b is None or (isinstance(b, float) and math.isnan(b)) else float(b)
    if fa is None or fb is None:
        return fa is None and fb is None
    return abs(fa - fb) <= tol * max(1.0, abs(fa), abs(fb))


def _clean_stale_builds(path: Path) -> None:
    """Remove databases (and their -wal/-shm) that killed runs left half-built next to ``path``."""
    from invdesign.outputs import _stale

    prefix = f".{path.name}."
    try:
        siblings = list(path.absolute().parent.iterdir())
    except OSError:
        return
    for p in siblings:
        n = p.name
        for end in (".tmp", ".tmp-wal", ".tmp-shm", ".tmp-journal"):
            if n.startswith(prefix) and n.endswith(end) and _stale(n[len(prefix): -len(end)]):
                p.unlink(missing_ok=True)


def _absent_side_files(path: Path) -> list[Path]:
    """The ``-wal``/``-shm`` files of the SQLite file ``path`` that do not exist (yet)."""
    return [p for p in (Path(f"{path}-wal"), Path(f"{path}-shm")) if not os.path.lexists(p)]


def _drop_side_files(path: Path, made: list[Path]) -> None:
    """Remove the ``-wal``/``-shm`` files of ``path`` that our (now closed) read-only connection created (they were
    in ``made``: absent before it opened), unless another connection may use them: a WAL that holds frames, or a
    ``-shm`` whose SQLite "connection alive" byte another process holds locked. Files that existed before are
    never touched."""
    made = [p for p in made if os.path.lexists(p)]
    if not made:
        return
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    try:
        if wal in made and (wal.is_symlink() or wal.stat().st_size):
            return  # written to since: another connection's
        if shm.exists() and not shm.is_symlink():
            try:
                import fcntl
            except ImportError:  # pragma: no cover - not POSIX: leave them
                return
            fd = os.open(shm, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                # SQLite's unix VFS holds a shared lock on byte 128 of -shm (its DMS byte) for every open connection
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128)
            except OSError:
                return  # another process has the database open
            else:
                for p in made:
                    p.unlink(missing_ok=True)
            finally:
                os.close(fd)
        elif wal in made and not shm.exists():
            wal.unlink(missing_ok=True)
    except OSError:
        pass


def _nan_to_none(v) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


# ---------------------------------------------------------------------- reading (the file is data, not trusted)
EDITED = "the campaign database was edited or is damaged"
MAX_STEP = 2**62
_ARRAY_DTYPES = ("<f8", "<f4")
_STATUSES = ("pending", "observed", "failed")
SUGGESTION_COLUMNS = ["sid", "step", "idx", "id", "canonical_key", "acquisition",
                      *[f"{t}_{s}" for t in TARGETS for s in ("mean", "std")], "status", "error", "created"]
OBSERVATION_COLUMNS = ["seq", "canonical_key", "id", *TARGETS, "source", "step", "created"]


def _not_text(v) -> str:
    return "is empty" if v == "" else "is not text"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_NOT_THE_FILE = ("disk is full", "disk I/O error", "readonly database", "database is locked", "unable to open")


def _reads(fn):
    """Turn an SQLite error while reading or writing the file (a damaged page, a dropped table, a full disk)
    into one line."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise self.sqlite_error(exc, "read") from None
    return wrapper


class Store:
    """A campaign's SQLite file. Open with :meth:`open` (existing) or :meth:`create` (new)."""

    def __init__(self, path: str | Path, conn: sqlite3.Connection) -> None:
        self.path = Path(path)
        self.conn = conn
        self.n_sites: int | None = None  # the host's sites (set by the campaign): occupancy blobs are checked against it
        self.site_codes: np.ndarray | None = None  # (n_sites, 256) bool: the species codes each site may hold

    def damaged(self, what: str) -> InvdesignError:
        """One line naming the file and the stored value that is wrong."""
        return InvdesignError(f"{what}; {EDITED}", source=str(self.path))

    def sqlite_error(self, exc: sqlite3.DatabaseError, doing: str) -> InvdesignError:
        """One line for an SQLite error: the file system's (a full disk, no permission, a lock held too long:
        the transaction is rolled back, nothing of it recorded) or the file's (damaged or edited)."""
        if isinstance(exc, sqlite3.OperationalError) and any(w in str(exc) for w in _NOT_THE_FILE):
            return InvdesignError(f"cannot {doing} it ({exc}); nothing of this step was recorded", source=str(self.path))
        return self.damaged(f"cannot {doing} it ({exc})")

    # ------------------------------------------------------------------ opening
    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(str(path), timeout=120.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=120000")
        except sqlite3.DatabaseError as exc:
            raise InvdesignError(f"cannot open campaign database ({exc})", source=str(path)) from None
        return conn

    @staticmethod
    def _connect_readonly(path: Path) -> sqlite3.Connection:
        """A connection that cannot change the file (``mode=ro`` URI: no schema, no journal-mode switch)."""
        try:
            conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True, timeout=120.0,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=120000")
        except sqlite3.DatabaseError as exc:
            raise InvdesignError(f"cannot open campaign database ({exc})", source=str(path)) from None
        return conn

    @classmethod
    def open(cls, path: str | Path, readonly: bool = False) -> Store:
        """Open an existing campaign file; ``readonly`` for commands that must never modify it (status, report)."""
        path = Path(path)
        if not path.is_file():
            raise InvdesignError("no campaign database here (create one with `invdesign campaign init`)", source=str(path))
        if path.stat().st_size == 0:
            raise InvdesignError("not a campaign database (empty file)", source=str(path))
        # recognised read-only first: a foreign SQLite file is refused unchanged (never switched to WAL), and
        # the -wal/-shm files a read-only look at a WAL-mode file creates are removed again when it is refused
        made = _absent_side_files(path)
        try:
            probe = cls(path, cls._connect_readonly(path))
        except BaseException:
            _drop_side_files(path, made)
            raise
        try:
            probe._recognise()
        except BaseException:
            probe.close()
            _drop_side_files(path, made)
            raise
        if readonly:
            return probe
        probe.close()
        return cls(path, cls._connect(path))

    def _recognise(self) -> None:
        """Refuse (one line) a file that is not a campaign database of this schema, or that SQLite finds damaged."""
        path = self.path
        try:
            version = self._meta_in(self.conn, "schema_version")
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and any(w in str(exc) for w in _NOT_THE_FILE):
                raise InvdesignError(f"cannot open the campaign database ({exc})", source=str(path)) from None
            raise InvdesignError(f"not a campaign database ({exc})", source=str(path)) from None
        if version is None:
            raise InvdesignError("not a campaign database (no config)", source=str(path))
        if version != SCHEMA_VERSION:
            raise InvdesignError(f"campaign database of schema version {str(version)[:20]!r}; this invdesign reads "
                                 f"version {SCHEMA_VERSION}", source=str(path))
        try:  # a damaged page (a torn copy, a disk error, an edit) is found before any command reads or writes
            check = self.conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            check = str(exc)
        if check != "ok":
            raise self.damaged(f"SQLite finds it damaged ({str(check)[:200]})")

    @staticmethod
    def blank(path: str | Path) -> bool:
        """True for an SQLite file holding no table at all: what a run killed while creating its database left
        (before creation was atomic). It holds no data, so ``init``/``run`` recreate it."""
        path = Path(path)
        if not path.is_file() or path.is_symlink() or path.stat().st_size == 0:
            return False
        with open(path, "rb") as fh:
            if fh.read(16) != b"SQLite format 3\x00":
                return False
        made = _absent_side_files(path)
        try:
            conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True, timeout=5.0)
            try:
                empty = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            empty = False
        _drop_side_files(path, made)  # a look at a file (ours or not) leaves nothing beside it
        return empty

    @staticmethod
    def _remove(path: Path) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(path) + suffix).unlink(missing_ok=True)

    @classmethod
    def create(cls, path: str | Path, config: dict, candidates: pd.DataFrame, occ: np.ndarray,
               arrays: dict[str, np.ndarray]) -> Store:
        """Create a new store holding ``config``, the candidate table and arrays, in one transaction.

        Args:
            candidates: DataFrame with ``id, canonical_key, source`` (C rows).
            occ: ``(C, n_sites)`` uint8 occupancies in the same order.
            arrays: named arrays (``features (C, d)``, ``prior_mean``/``prior_std (C, 2)``).
        """
        path = Path(path)
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise InvdesignError("folder does not exist", source=str(parent))
        if path.exists() and path.stat().st_size > 0 and not cls.blank(path):
            raise InvdesignError("a campaign database already exists here", source=str(path))
        # built under a hidden temporary name and renamed when complete: a kill at any moment leaves either
        # no database or a whole one (and the next run removes the temporary files of dead processes)
        _clean_stale_builds(path)
        from invdesign.outputs import temp_file

        tmp = None
        try:
            fd, tmp = temp_file(path.absolute())
            os.close(fd)
            cls._build(tmp, config, candidates, occ, arrays)
            if path.exists() and path.stat().st_size > 0 and not cls.blank(path):
                raise InvdesignError("another run created a campaign database here meanwhile", source=str(path))
            if path.exists():
                cls._remove(path)  # a blank leftover
            try:
                os.link(tmp, path)  # never replaces a database another run put there meanwhile
            except FileExistsError:
                raise InvdesignError("another run created a campaign database here meanwhile", source=str(path)) from None
            except OSError:  # a file system without hard links
                os.replace(tmp, path)
            cls._remove(tmp)
        except (sqlite3.DatabaseError, OSError) as exc:  # a full disk, a permission, an I/O error
            if tmp is not None:
                cls._remove(tmp)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InvdesignError(f"cannot create the campaign database ({reason}); nothing was written",
                                 source=str(path)) from None
        except BaseException:
            if tmp is not None:
                cls._remove(tmp)
            raise
        return cls(path, cls._connect(path))

    @staticmethod
    def _build(tmp: Path, config: dict, candidates: pd.DataFrame, occ: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        """Write the whole database into ``tmp`` in one transaction, its WAL folded in (SQLite errors raised as such)."""
        conn = sqlite3.connect(str(tmp), timeout=120.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.executemany(
                "INSERT INTO candidates (idx, id, canonical_key, occ, source) VALUES (?, ?, ?, ?, ?)",
                [(i, str(r.id), str(r.canonical_key), np.ascontiguousarray(occ[i], dtype=np.uint8).tobytes(), str(r.source))
                 for i, r in enumerate(candidates.itertuples(index=False))],
            )
            for name, arr in arrays.items():
                Store._put_array(conn, name, arr)
            Store._set_meta(conn, "config", json.dumps(config))
            Store._set_meta(conn, "step", "0")
            Store._set_meta(conn, "created", repr(time.time()))
            Store._set_meta(conn, "schema_version", SCHEMA_VERSION)
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()  # the last connection: its WAL is folded into the file

    def close(self) -> None:
        self.conn.close()  # closing twice is harmless

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception): one campaign step."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise self.sqlite_error(exc, "write") from None
        try:
            yield self.conn
        except BaseException as exc:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.DatabaseError:
                pass  # a damaged file: the transaction is gone with the connection
            if isinstance(exc, sqlite3.DatabaseError):
                raise self.sqlite_error(exc, "update") from None
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.DatabaseError:
                pass
            raise self.sqlite_error(exc, "write") from None

    # ------------------------------------------------------------------ meta and arrays
    @_reads
    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _set_meta(c: sqlite3.Connection, key: str, value: str) -> None:
        c.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    @property
    def config(self) -> dict:
        """The stored config: a JSON object (its values are checked by the campaign)."""
        raw = self.get_meta("config")
        if not isinstance(raw, str):
            raise self.damaged("it holds no config")
        try:
            cfg = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise self.damaged(f"its config is not JSON ({exc})") from None
        if not isinstance(cfg, dict):
            raise self.damaged("its config is not a JSON object")
        return cfg

    def step(self, c: sqlite3.Connection | None = None) -> int:
        """The step counter (validated: an integer 0..2**62)."""
        try:
            raw = self._meta_in(c or self.conn, "step")
        except sqlite3.DatabaseError as exc:
            raise self.sqlite_error(exc, "read") from None
        if not isinstance(raw, str) or not re.fullmatch(r"\d{1,19}", raw) or int(raw) > MAX_STEP:
            raise self.damaged(f"its step counter {str(raw)[:40]!r} is not a step number")
        return int(raw)

    @staticmethod
    def _put_array(c: sqlite3.Connection, name: str, arr: np.ndarray) -> None:
        a = np.ascontiguousarray(arr)
        c.execute("INSERT OR REPLACE INTO arrays (name, dtype, shape, data) VALUES (?, ?, ?, ?)",
                  (name, a.dtype.str, json.dumps(list(a.shape)), a.tobytes()))

    @_reads
    def array(self, name: str) -> np.ndarray | None:
        """A stored array (float, 1-D or 2-D, every value finite), or None when absent."""
        row = self.conn.execute("SELECT dtype, shape, data FROM arrays WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        dtype, shape, data = row
        what = f"its array {name!r}"
        if dtype not in _ARRAY_DTYPES:
            raise self.damaged(f"{what} has dtype {str(dtype)[:20]!r}, not one of {', '.join(_ARRAY_DTYPES)}")
        try:
            shape = json.loads(shape) if isinstance(shape, str) else None
        except ValueError:
            shape = None
        if not isinstance(shape, list) or not 1 <= len(shape) <= 2 or not all(_is_int(n) and 0 <= n < 2**40 for n in shape):
            raise self.damaged(f"{what} has no valid shape ({str(row[1])[:40]!r})")
        size = math.prod(shape) * np.dtype(dtype).itemsize
        if not isinstance(data, bytes) or len(data) != size:
            raise self.damaged(f"{what} holds {len(data) if isinstance(data, bytes) else 'no'} bytes, not the "
                               f"{size} of shape {tuple(shape)}")
        a = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape).astype(np.float64)
        if not np.isfinite(a).all():
            raise self.damaged(f"{what} holds {int((~np.isfinite(a)).sum())} non-finite value(s)")
        return a

    # ------------------------------------------------------------------ candidates
    @_reads
    def candidates(self) -> tuple[pd.DataFrame, np.ndarray]:
        """Candidate table (``idx, id, canonical_key, source``) and ``(C, n_sites)`` uint8 occupancies.

        Validated: ``idx`` is 0..C-1, ids, keys and sources are text, every occupancy has ``n_sites`` bytes
        (the species codes and keys are checked against the host by the campaign)."""
        rows = self.conn.execute("SELECT idx, id, canonical_key, source, occ FROM candidates ORDER BY idx").fetchall()
        if not rows:
            raise self.damaged("it holds no candidates")
        n = self.n_sites if self.n_sites is not None else (len(rows[0][4]) if isinstance(rows[0][4], bytes) else -1)
        for pos, (idx, cid, key, source, occ) in enumerate(rows):
            where = f"candidate {idx!r}"[:60]
            if idx != pos or not _is_int(idx):
                raise self.damaged(f"its candidates are not numbered 0..{len(rows) - 1} ({where} at position {pos})")
            for field, v in (("id", cid), ("canonical_key", key), ("source", source)):
                if not isinstance(v, str) or not v:
                    raise self.damaged(f"{where}: its {field} {str(v)[:40]!r} {_not_text(v)}")
            if not isinstance(occ, bytes) or len(occ) != n:
                raise self.damaged(f"{where} ({cid}): its occupancy has "
                                   f"{len(occ) if isinstance(occ, (bytes, str)) else 'no'} bytes, not {n} (one per site)")
        df = pd.DataFrame([r[:4] for r in rows], columns=["idx", "id", "canonical_key", "source"])
        occ = np.frombuffer(b"".join(r[4] for r in rows), dtype=np.uint8).reshape(len(rows), n).copy()
        self._check_codes(occ, "candidate", df["id"])
        return df, occ

    def _check_codes(self, occ: np.ndarray, what: str, ids=None) -> None:
        """Every site holds a species it may hold (with ``site_codes``)."""
        if self.site_codes is None or not len(occ):
            return
        ok = self.site_codes[np.arange(occ.shape[1])[None, :], occ].all(axis=1)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            site = int(np.flatnonzero(~self.site_codes[np.arange(occ.shape[1]), occ[i]])[0])
            name = f" ({ids.iat[i] if hasattr(ids, 'iat') else ids[i]})" if ids is not None else ""
            raise self.damaged(f"{what} {i + 1}{name}: its occupancy holds species code {occ[i, site]} on site {site}, "
                               "which that site cannot hold")

    # ------------------------------------------------------------------ suggestions
    @_reads
    def suggestions(self, status: str | None = None) -> pd.DataFrame:
        """Suggestions (columns :data:`SUGGESTION_COLUMNS`, ``sid`` order), every stored value validated."""
        q = (f"SELECT {', '.join(SUGGESTION_COLUMNS)} FROM suggestions" + (" WHERE status = ?" if status else "")
             + " ORDER BY sid")
        rows = self.conn.execute(q, (status,) if status else ()).fetchall()
        for r in rows:
            self._check_suggestion(r)
        df = pd.DataFrame(rows, columns=SUGGESTION_COLUMNS)
        for col in SUGGESTION_COLUMNS[5:-3] + ["created"]:
            df[col] = df[col].astype(float)
        return df

    def _check_suggestion(self, r: tuple) -> None:
        d = dict(zip(SUGGESTION_COLUMNS, r))
        where = f"suggestion {str(d['sid'])[:20]}"
        if not _is_int(d["sid"]) or not _is_int(d["step"]) or not 0 <= d["step"] <= MAX_STEP:
            raise self.damaged(f"{where}: its number or step {str(d['step'])[:40]!r} is not an integer")
        if d["idx"] is not None and not (_is_int(d["idx"]) and d["idx"] >= 0):
            raise self.damaged(f"{where}: its candidate index {str(d['idx'])[:40]!r} is not an index")
        for field in ("id", "canonical_key"):
            if not isinstance(d[field], str) or not d[field]:
                raise self.damaged(f"{where}: its {field} {str(d[field])[:40]!r} {_not_text(d[field])}")
        if d["status"] not in _STATUSES or not (d["error"] is None or isinstance(d["error"], str)):
            raise self.damaged(f"{where}: its status {str(d['status'])[:40]!r} is not one of {', '.join(_STATUSES)}")
        for field in SUGGESTION_COLUMNS[5:-3] + ["created"]:
            v = d[field]
            if (v is not None or field == "created") and not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                               and math.isfinite(v)):
                raise self.damaged(f"{where}: its {field} {str(v)[:40]!r} is not a finite number")

    def add_suggestions(self, c: sqlite3.Connection, step: int, rows: list[dict]) -> None:
        """Insert suggestions (inside a transaction) and advance the step counter."""
        now = time.time()
        cols = ["step", "idx", "id", "canonical_key", "acquisition"]
        for t in TARGETS:
            cols += [f"{t}_mean", f"{t}_std"]
        cols += ["status", "created"]
        c.executemany(
            f"INSERT INTO suggestions ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [tuple([step, r["idx"], r["id"], r["canonical_key"], _nan_to_none(r.get("acquisition"))]
                   + [_nan_to_none(r.get(f"{t}_{s}")) for t in TARGETS for s in ("mean", "std")]
                   + ["pending", now]) for r in rows],
        )
        self._set_meta(c, "step", str(step))

    @_reads
    def mark_failed(self, key: str, error: str) -> None:
        with self.transaction() as c:
            c.execute("UPDATE suggestions SET status = 'failed', error = ? WHERE canonical_key = ? AND status = 'pending'",
                      (error[:500], key))

    # ------------------------------------------------------------------ observations
    @_reads
    def observations(self) -> pd.DataFrame:
        """All observations in evaluation order: ``seq, canonical_key, id, <targets>, source, step, created``.

        Validated: targets are NULL or finite numbers a measurement can give (a gap >= 0, within +-1000 eV),
        at least one per row; ids, keys and sources are text; ``step`` an integer, ``created`` a number."""
        rows = self.conn.execute(f"SELECT {', '.join(OBSERVATION_COLUMNS)} FROM observations ORDER BY seq").fetchall()
        for r in rows:
            self._check_observation(dict(zip(OBSERVATION_COLUMNS, r)))
        df = pd.DataFrame(rows, columns=OBSERVATION_COLUMNS)
        for t in TARGETS:
            df[t] = df[t].astype(float)
        df["created"] = df["created"].astype(float)
        return df

    def _check_observation(self, d: dict) -> None:
        from invdesign.campaign.oracles import unphysical

        where = f"observation {str(d.get('seq'))[:20]}"
        if "seq" in d and not _is_int(d["seq"]):
            raise self.damaged(f"{where}: its number is not an integer")
        for field in ("id", "canonical_key", "source"):
            if field in d and (not isinstance(d[field], str) or not d[field]):
                raise self.damaged(f"{where}: its {field} {str(d[field])[:40]!r} {_not_text(d[field])}")
        if "step" in d and d["step"] is not None and not (_is_int(d["step"]) and 0 <= d["step"] <= MAX_STEP):
            raise self.damaged(f"{where}: its step {str(d['step'])[:40]!r} is not an integer")
        if "created" in d and not (isinstance(d["created"], (int, float)) and math.isfinite(d["created"])):
            raise self.damaged(f"{where}: its created time {str(d['created'])[:40]!r} is not a number")
        for t in TARGETS:
            v = d[t]
            if v is None:
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise self.damaged(f"{where}: its {t} {str(v)[:40]!r} is not a finite number (eV)")
            if unphysical(t, v):
                raise self.damaged(f"{where}: its {t} {v!r} eV is no measurement (a gap >= 0, within +-1000 eV)")
        if all(d[t] is None for t in TARGETS):
            raise self.damaged(f"{where}: it holds no value")

    def _check_occ_blobs(self, blobs: list, what: str) -> np.ndarray:
        n = self.n_sites if self.n_sites is not None else (len(blobs[0]) if blobs and isinstance(blobs[0], bytes) else 0)
        for i, b in enumerate(blobs):
            if not isinstance(b, bytes) or len(b) != n:
                raise self.damaged(f"{what} {i + 1}: its occupancy has {len(b) if isinstance(b, (bytes, str)) else 'no'} "
                                   f"bytes, not {n} (one per site)")
        occ = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), n).copy()
        self._check_codes(occ, what)
        return occ

    @_reads
    def observation_occ(self) -> np.ndarray:
        rows = self.conn.execute("SELECT occ FROM observations ORDER BY seq").fetchall()
        return self._check_occ_blobs([r[0] for r in rows], "observation") if rows else np.zeros((0, 0), np.uint8)

    def observation_rows(self, c: sqlite3.Connection) -> list[tuple]:
        """``(canonical_key, <targets>, occ bytes)`` of every observation, validated (inside a transaction)."""
        rows = c.execute(f"SELECT {', '.join(OBSERVATION_COLUMNS)}, occ FROM observations ORDER BY seq").fetchall()
        for r in rows:
            self._check_observation(dict(zip(OBSERVATION_COLUMNS, r)))
        if rows:
            self._check_occ_blobs([r[-1] for r in rows], "observation")
        k = OBSERVATION_COLUMNS.index
        return [(r[k("canonical_key")], *(r[k(t)] for t in TARGETS), r[-1]) for r in rows]

    def add_observations(self, rows: list[dict], source: str) -> tuple[int, int]:
        """Record observations in one transaction; idempotent by canonical key.

        Each row has ``canonical_key, id, occ ((n_sites,) uint8)`` and the target values (eV,
        NaN for not measured). Re-observing a key with the same values is a no-op; different
        values are an error and nothing of this call is written.

        Returns:
            ``(new, repeated)`` counts.
        """
        new = rep = 0
        now = time.time()
        with self.transaction() as c:
            step = self.step(c)
            for r in rows:
                old = c.execute(f"SELECT {', '.join(TARGETS)}, id FROM observations WHERE canonical_key = ?",
                                (r["canonical_key"],)).fetchone()
                if old is not None:
                    self._check_observation({"id": old[-1], **dict(zip(TARGETS, old[:-1]))})
                vals = [_nan_to_none(r.get(t)) for t in TARGETS]
                if old is not None:
                    if all(_same(a, b) for a, b in zip(old[: len(TARGETS)], vals)):
                        rep += 1
                        continue
                    raise InvdesignError(
                        f"{r['id']} ({r['canonical_key']}) was already observed with different values "
                        f"{list(old[: len(TARGETS)])} (as {old[-1]}); nothing recorded", source=source)
                c.execute(
                    f"INSERT INTO observations (canonical_key, id, {', '.join(TARGETS)}, source, step, created, occ) "
                    f"VALUES (?, ?, {', '.join('?' * len(TARGETS))}, ?, ?, ?, ?)",
                    (r["canonical_key"], r["id"], *vals, source, step, now, np.ascontiguousarray(r["occ"], dtype=np.uint8).tobytes()),
                )
                c.execute("UPDATE suggestions SET status = 'observed', error = NULL WHERE canonical_key = ?", (r["canonical_key"],))
                new += 1
        return new, rep

    @staticmethod
    def _meta_in(c: sqlite3.Connection, key: str) -> str | None:
        row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @_reads
    def counts(self) -> dict[str, int]:
        """``evaluations``, ``pending``, ``failed``, ``suggested``, ``step`` (one consistent read)."""
        c = self.conn
        c.execute("BEGIN")
        try:
            ev = c.execute("SELECT COUNT(*) FROM observations").fetchone()[0]
            by = dict(c.execute("SELECT status, COUNT(*) FROM suggestions GROUP BY status").fetchall())
            step = self.step(c)
        finally:
            c.execute("COMMIT")
        return {"evaluations": int(ev), "pending": int(by.get("pending", 0)), "failed": int(by.get("failed", 0)),
                "suggested": int(sum(by.values())), "step": step}

    @_reads
    def failures(self, limit: int = 5) -> list[dict]:
        """The first ``limit`` failed suggestions: ``id``, ``canonical_key``, ``error``."""
        rows = self.conn.execute("SELECT id, canonical_key, error FROM suggestions WHERE status = 'failed' ORDER BY sid LIMIT ?",
                                 (limit,)).fetchall()
        return [{"id": str(r[0]), "canonical_key": str(r[1]), "error": None if r[2] is None else str(r[2])[:500]}
                for r in rows]

    @_reads
    def integrity(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]
