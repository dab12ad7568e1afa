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

import json
import math
import os
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


def _nan_to_none(v) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


class Store:
    """A campaign's SQLite file. Open with :meth:`open` (existing) or :meth:`create` (new)."""

    def __init__(self, path: str | Path, conn: sqlite3.Connection) -> None:
        self.path = Path(path)
        self.conn = conn

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
        # recognised read-only first: a foreign SQLite file is refused unchanged (never switched to WAL)
        probe = cls(path, cls._connect_readonly(path))
        try:
            version = probe.get_meta("schema_version")
        except sqlite3.DatabaseError as exc:
            probe.close()
            raise InvdesignError(f"not a campaign database ({exc})", source=str(path)) from None
        if version is None:
            probe.close()
            raise InvdesignError("not a campaign database (no config)", source=str(path))
        if readonly:
            return probe
        probe.close()
        return cls(path, cls._connect(path))

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
        try:
            conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True, timeout=5.0)
            try:
                return conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            return False

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

        fd, tmp = temp_file(path.absolute())
        os.close(fd)
        store = cls(tmp, cls._connect(tmp))
        try:
            with store.transaction() as c:
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.executemany(
                    "INSERT INTO candidates (idx, id, canonical_key, occ, source) VALUES (?, ?, ?, ?, ?)",
                    [(i, str(r.id), str(r.canonical_key), np.ascontiguousarray(occ[i], dtype=np.uint8).tobytes(), str(r.source))
                     for i, r in enumerate(candidates.itertuples(index=False))],
                )
                for name, arr in arrays.items():
                    store._put_array(c, name, arr)
                store._set_meta(c, "config", json.dumps(config))
                store._set_meta(c, "step", "0")
                store._set_meta(c, "created", repr(time.time()))
                store._set_meta(c, "schema_version", SCHEMA_VERSION)
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            store.close()  # the last connection: its WAL is folded into the file
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
        except BaseException:
            store.close()
            cls._remove(tmp)
            raise
        return cls(path, cls._connect(path))

    def close(self) -> None:
        self.conn.close()  # closing twice is harmless

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception): one campaign step."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------------ meta and arrays
    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _set_meta(c: sqlite3.Connection, key: str, value: str) -> None:
        c.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    @property
    def config(self) -> dict:
        return json.loads(self.get_meta("config") or "{}")

    @staticmethod
    def _put_array(c: sqlite3.Connection, name: str, arr: np.ndarray) -> None:
        a = np.ascontiguousarray(arr)
        c.execute("INSERT OR REPLACE INTO arrays (name, dtype, shape, data) VALUES (?, ?, ?, ?)",
                  (name, a.dtype.str, json.dumps(list(a.shape)), a.tobytes()))

    def array(self, name: str) -> np.ndarray | None:
        row = self.conn.execute("SELECT dtype, shape, data FROM arrays WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return np.frombuffer(row[2], dtype=np.dtype(row[0])).reshape(json.loads(row[1])).copy()

    # ------------------------------------------------------------------ candidates
    def candidates(self) -> tuple[pd.DataFrame, np.ndarray]:
        """Candidate table (``idx, id, canonical_key, source``) and ``(C, n_sites)`` uint8 occupancies."""
        rows = self.conn.execute("SELECT idx, id, canonical_key, source, occ FROM candidates ORDER BY idx").fetchall()
        df = pd.DataFrame([r[:4] for r in rows], columns=["idx", "id", "canonical_key", "source"])
        occ = np.stack([np.frombuffer(r[4], dtype=np.uint8) for r in rows]) if rows else np.zeros((0, 0), np.uint8)
        return df, occ

    # ------------------------------------------------------------------ suggestions
    def suggestions(self, status: str | None = None) -> pd.DataFrame:
        q = "SELECT * FROM suggestions" + (" WHERE status = ?" if status else "") + " ORDER BY sid"
        return pd.read_sql_query(q, self.conn, params=(status,) if status else ())

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

    def mark_failed(self, key: str, error: str) -> None:
        with self.transaction() as c:
            c.execute("UPDATE suggestions SET status = 'failed', error = ? WHERE canonical_key = ? AND status = 'pending'",
                      (error[:500], key))

    # ------------------------------------------------------------------ observations
    def observations(self) -> pd.DataFrame:
        """All observations in evaluation order: ``seq, canonical_key, id, <targets>, source, step, created``."""
        cols = ["seq", "canonical_key", "id", *TARGETS, "source", "step", "created"]
        df = pd.read_sql_query(f"SELECT {', '.join(cols)} FROM observations ORDER BY seq", self.conn)
        for t in TARGETS:
            df[t] = df[t].astype(float)
        return df

    def observation_occ(self) -> np.ndarray:
        rows = self.conn.execute("SELECT occ FROM observations ORDER BY seq").fetchall()
        return np.stack([np.frombuffer(r[0], dtype=np.uint8) for r in rows]) if rows else np.zeros((0, 0), np.uint8)

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
            step = int(self._meta_in(c, "step") or 0)
            for r in rows:
                old = c.execute(f"SELECT {', '.join(TARGETS)}, id FROM observations WHERE canonical_key = ?",
                                (r["canonical_key"],)).fetchone()
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

    def counts(self) -> dict[str, int]:
        """``evaluations``, ``pending``, ``failed``, ``suggested``, ``step`` (one consistent read)."""
        c = self.conn
        c.execute("BEGIN")
        try:
            ev = c.execute("SELECT COUNT(*) FROM observations").fetchone()[0]
            by = dict(c.execute("SELECT status, COUNT(*) FROM suggestions GROUP BY status").fetchall())
            step = int(self._meta_in(c, "step") or 0)
        finally:
            c.execute("COMMIT")
        return {"evaluations": int(ev), "pending": int(by.get("pending", 0)), "failed": int(by.get("failed", 0)),
                "suggested": int(sum(by.values())), "step": step}

    def failures(self, limit: int = 5) -> list[dict]:
        """The first ``limit`` failed suggestions: ``id``, ``canonical_key``, ``error``."""
        rows = self.conn.execute("SELECT id, canonical_key, error FROM suggestions WHERE status = 'failed' ORDER BY sid LIMIT ?",
                                 (limit,)).fetchall()
        return [{"id": r[0], "canonical_key": r[1], "error": r[2]} for r in rows]

    def integrity(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]
