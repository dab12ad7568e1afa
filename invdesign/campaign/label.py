"""Label many configurations with an oracle through an executor; resumable, one CSV row per structure.

``label(occ, ids, oracle, out)`` writes ``id,canonical_key,<oracle columns>,seconds,error`` to
``out``, appending each row as its structure finishes (flushed and synced), so an interrupted run
loses at most the calls in flight; a rerun reads ``out`` and skips the ids already there. Calls run
on any executor of :mod:`invdesign.campaign.executors` (a process pool, a Dask ``LocalCluster``,
or a running Dask scheduler): if a Dask worker dies, the scheduler reruns its calls elsewhere; if a
pool worker dies (every call still queued fails with it), those calls are tried again on a fresh
executor (:data:`LOST_ROUNDS`); each id is still written once (the writer is this process, and it
writes an id at most once).

The oracle is pickled once per call but each worker keeps one live copy per oracle (keyed by a
hash of its pickle), so a CHGNet model is loaded and the pristine host evaluated once per worker.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import hashlib
import io
import math
import os
import pickle
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from invdesign.data.dataset import TARGETS
from invdesign.errors import InvdesignError
from invdesign.lattice.host import HostLattice

_LIVE: dict[str, object] = {}  # per worker process: oracle token -> live oracle


def oracle_columns(oracle) -> list[str]:
    """Output columns of ``oracle`` in a label table (``label_columns`` or the targets)."""
    return list(getattr(oracle, "label_columns", TARGETS))


def label_one(oracle, occ_row: np.ndarray, cid: str) -> dict:
    """One configuration's outputs (dict by column; ``relaxed`` holds a Structure when the oracle relaxes)."""
    if hasattr(oracle, "label"):
        return oracle.label(occ_row)
    vals = np.asarray(oracle.evaluate(np.asarray(occ_row)[None], [cid]), dtype=float)[0]
    return dict(zip(TARGETS, vals))


def live_oracle(token: str | None, oracle):
    """The worker's live copy of ``oracle`` (the first one it received under ``token``; ``oracle`` itself
    when ``token`` is None): a CHGNet model is loaded, and its pristine host evaluated, once per worker."""
    return oracle if token is None else _LIVE.setdefault(token, oracle)


def oracle_token(oracle) -> str:
    """A hash of the oracle's pickle: equal oracles share one live copy per worker."""
    return _token(oracle)


def _task(token: str, oracle, occ_row: np.ndarray, cid: str) -> tuple[str, dict, float, str]:
    """Run in a worker: ``(id, outputs, seconds, error)``; an oracle error is returned, not raised."""
    live = live_oracle(token, oracle)
    t0 = time.perf_counter()
    try:
        out, err = label_one(live, occ_row, cid), ""
    except Exception as exc:  # noqa: BLE001 - one failed structure is recorded, the run goes on
        out, err = {}, f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
    return cid, out, time.perf_counter() - t0, err


def _token(oracle) -> str:
    try:
        return hashlib.sha256(pickle.dumps(oracle)).hexdigest()
    except Exception:  # noqa: BLE001 - an unpicklable oracle runs inline or in threads: its identity will do
        return f"id:{id(oracle)}"


INFRA = "infrastructure: "  # error prefix of a row whose call was lost (dead worker, cancelled future): retried on rerun
LOST_ROUNDS = 3  # calls the executor lost are tried again on a fresh executor, at most this many rounds in all


def _run(ex: cf.Executor, token: str, oracle, occ: np.ndarray, ids: Sequence[str], todo: Sequence[int]):
    """Yield ``(id, outputs, seconds, error)`` for rows ``todo`` of ``occ`` as their calls finish.

    An oracle error comes back from :func:`_task` as the error text; an exception of the future itself
    is the infrastructure's (a dead pool worker: BrokenProcessPool; Dask: CancelledError, KilledWorker),
    marked :data:`INFRA` so that a rerun labels that row again.
    """
    from invdesign.campaign.executors import completed

    futures = {ex.submit(_task, token, oracle, np.asarray(occ[i]), ids[i]): ids[i] for i in todo}
    for fut, gone in completed(ex, futures):
        if gone:  # the Dask scheduler went away with this call's result
            yield futures[fut], {}, float("nan"), INFRA + "the connection to the Dask scheduler was lost"
            continue
        try:
            yield fut.result()
        except BaseException as exc:  # noqa: BLE001 - CancelledError is a BaseException
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            yield futures[fut], {}, float("nan"), INFRA + f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]


def evaluate_many(occ: np.ndarray, ids: Sequence[str], oracle, executor: str = "auto",
                  on_row: Callable[[int], None] | None = None) -> dict[str, tuple[dict, float, str]]:
    """Like :func:`label` but in memory: ``{id: (outputs, seconds, error)}`` (outputs may hold ``relaxed``)."""
    from invdesign.campaign.executors import make_executor, resolve

    spec = resolve(executor, oracle)
    out = {}
    with make_executor(spec, cheap=getattr(oracle, "cheap", False)) as ex:
        for cid, res, sec, err in _run(ex, _token(oracle), oracle, occ, [str(i) for i in ids], range(len(ids))):
            out[cid] = (res, sec, err)
            if on_row is not None:
                on_row(1)
    return out


def read_done(out: Path, columns: list[str], retry_failed: bool = False) -> set[str]:
    """Ids already in a label file written for these ``columns`` (a torn last line is dropped).

    The header is checked before anything is changed: a file that is not a label file of this oracle
    is refused untouched (a torn last line is cut only from a file that is ours). Rows the infrastructure
    lost (:data:`INFRA`), and with ``retry_failed`` every row with an error, are dropped (atomically) so
    that this run labels them again.
    """
    if not out.exists():
        return set()
    try:
        text = out.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvdesignError(f"cannot read ({exc.__class__.__name__})", source=str(out)) from None
    if not text:
        return set()
    header_line = ",".join(columns)
    if "\n" not in text and header_line.startswith(text):  # killed while writing the header: ours, empty
        out.write_text("")
        return set()
    first = next(csv.reader([text.split("\n", 1)[0]]), [])
    if first != columns:
        raise InvdesignError(f"exists with columns {first}, not a label file of this oracle "
                             f"({columns}); choose another --out", source=str(out))
    if not text.endswith("\n"):  # killed while writing a row: drop the partial row (this file is ours)
        text = text[: text.rfind("\n") + 1]
        out.write_text(text)
    rows = list(csv.reader(text.splitlines()))
    def again(r: list[str]) -> bool:
        return r[-1].startswith(INFRA) or (retry_failed and bool(r[-1]))

    if any(r and again(r) for r in rows[1:]):  # dropped (atomically) so that this run labels them again, each id once
        from invdesign.io import atomic_write_text

        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([rows[0], *(r for r in rows[1:] if r and not again(r))])
        atomic_write_text(out, buf.getvalue())
    return {r[0] for r in rows[1:] if r and not again(r)}


@contextmanager
def _appending(out: Path, new_file: bool = False):
    """``out`` opened for appending; an OSError (disk full, permission) ends as one line naming it. A file this
    run created that holds no complete row yet is removed then (nothing half-written is left)."""
    try:
        with open(out, "a", newline="") as fh:
            yield fh
    except OSError as exc:
        kept = "the rows written so far are kept and a rerun resumes"
        if new_file:
            try:
                if out.stat().st_size == 0 or out.read_text().count("\n") <= 1:  # no row, at most the header
                    out.unlink()
                    kept = "nothing was written"
            except (OSError, UnicodeDecodeError):
                pass
        raise InvdesignError(f"cannot write ({exc.strerror or exc.__class__.__name__}); {kept}", source=str(out)) from None


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else repr(float(v))
    return str(v)


def label(
    occ: np.ndarray,
    ids: Sequence[str],
    oracle,
    out: str | Path,
    host: HostLattice,
    executor: str = "auto",
    relaxed_dir: str | Path | None = None,
    keys: Sequence[str] | None = None,
    on_row: Callable[[int], None] | None = None,
    retry_failed: bool = False,
) -> dict:
    """Label configurations ``occ (N, n_sites)`` with ``oracle``, appending rows to ``out``.

    Args:
        ids: ``N`` unique ids (file stems). keys: their canonical keys (computed when None).
        executor: an executor spec (:func:`invdesign.campaign.executors.resolve`).
        relaxed_dir: write each relaxed structure as ``<id>.cif`` there (oracles that relax).
        on_row: called as ``on_row(n)`` with ``n`` structures newly accounted for (first the skipped ones; progress).
        retry_failed: label again the rows of ``out`` whose oracle failed (rows the infrastructure lost, a dead
            worker or a cancelled future, are labelled again always).

    Returns:
        ``{"total", "skipped", "labelled", "failed", "lost", "seconds"}`` for this run (``lost``: rows whose
        call the infrastructure lost, a dead worker or a cancelled future; a rerun labels them again).
    """
    from invdesign.campaign.executors import make_executor, resolve
    from invdesign.io import atomic_write_text

    out = Path(out)
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise InvdesignError("duplicate ids among the structures")
    columns = ["id", "canonical_key", *oracle_columns(oracle), "seconds", "error"]
    done = read_done(out, columns, retry_failed)
    todo = [i for i, cid in enumerate(ids) if cid not in done]
    if keys is None:
        from invdesign.lattice.canonical import canonical_keys

        keys = canonical_keys(np.asarray(occ)[todo], host) if todo else []
        key_of = dict(zip([ids[i] for i in todo], keys))
    else:
        key_of = dict(zip(ids, keys))
    spec = resolve(executor, oracle)
    token = _token(oracle)
    rdir = Path(relaxed_dir) if relaxed_dir is not None else None
    if rdir is not None:
        rdir.mkdir(parents=True, exist_ok=True)
    stats = {"total": len(ids), "skipped": len(ids) - len(todo), "labelled": 0, "failed": 0, "lost": 0, "seconds": 0.0}
    if on_row is not None and stats["skipped"]:
        on_row(stats["skipped"])
    if not todo:
        return stats
    new_file = not out.exists() or out.stat().st_size == 0
    written: set[str] = set(done)
    t0 = time.perf_counter()
    cheap = getattr(oracle, "cheap", False)
    position = {cid: i for i, cid in enumerate(ids)}
    executor_stack = ExitStack()
    # the executor first: one that cannot start (a Dask scheduler not there) leaves no file behind
    ex = executor_stack.enter_context(make_executor(spec, cheap=cheap))
    try:
        with _appending(out, new_file) as fh:
            w = csv.writer(fh, lineterminator="\n")
            if new_file:
                w.writerow(columns)
                fh.flush()

            def write(cid: str, res: dict, sec: float, err: str) -> None:
                relaxed = res.pop("relaxed", None)
                if rdir is not None and relaxed is not None:
                    from pymatgen.io.cif import CifWriter

                    atomic_write_text(rdir / f"{cid}.cif", str(CifWriter(relaxed)))
                w.writerow([cid, key_of[cid], *(_fmt(res.get(c)) for c in columns[2:-2]), _fmt(sec), err])
                fh.flush()
                os.fsync(fh.fileno())
                written.add(cid)
                stats["labelled"] += 1
                stats["failed"] += bool(err)
                stats["lost"] += err.startswith(INFRA)
                if on_row is not None:
                    on_row(1)

            left = list(todo)
            for attempt in range(LOST_ROUNDS):
                # a dead pool worker fails every call still queued: those are tried again on a fresh executor
                # (the one call that kills its worker each time ends as lost after the last round)
                final = attempt == LOST_ROUNDS - 1
                lost: list[tuple[str, str]] = []
                for cid, res, sec, err in _run(ex, token, oracle, occ, ids, left):
                    if cid in written:
                        continue
                    if err.startswith(INFRA) and not final:
                        lost.append((cid, err))
                        continue
                    write(cid, res, sec, err)
                if not lost:
                    break
                executor_stack.close()  # the broken pool (or lost client) is shut down
                executor_stack = ExitStack()
                try:
                    ex = executor_stack.enter_context(make_executor(spec, cheap=cheap))
                except InvdesignError:  # e.g. the Dask scheduler is gone: the rows stay lost (a rerun labels them)
                    for cid, err in lost:
                        write(cid, {}, float("nan"), err)
                    break
                left = [position[cid] for cid, _ in lost]
    finally:
        executor_stack.close()
    stats["seconds"] = time.perf_counter() - t0
    return stats
