"""Executors that run oracle calls: ``concurrent.futures`` everywhere.

Specs: ``inline`` (in this process), ``thread[:N]``, ``process[:N]`` (a local process pool, spawn
start method), ``dask-local[:N]`` (a Dask ``LocalCluster`` with N worker processes), and
``dask://host:port`` (an existing Dask scheduler, for users who outgrow one machine).
``auto`` is ``inline`` for cheap oracles (a table lookup), ``process`` for oracles that can be
pickled, and ``thread`` for those that cannot (e.g. a lambda). Process pools and Dask need a
picklable oracle; that is checked before anything runs.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from collections.abc import Iterator
from contextlib import contextmanager

from invdesign.errors import InvdesignError


class InlineExecutor(cf.Executor):
    """Runs each call at ``submit`` time in this process and returns a finished future."""

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future, like other executors
            fut.set_exception(exc)
        return fut


def die_with_parent(parent: int) -> None:
    """Pool worker initializer: the worker is killed when the process that started the pool dies (even by
    SIGKILL, which runs no clean-up), so no orphan keeps working or holds the resource tracker alive."""
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


MAX_WORKERS = 256  # the most workers an executor spec may ask for (the same on every machine: stored specs stay valid)


def _workers(arg: str, default: int) -> int:
    if not arg:
        return default
    try:
        n = int(arg)
    except ValueError:
        raise InvdesignError(f"executor worker count {arg!r} is not an integer") from None
    if n < 1:
        raise InvdesignError("executor needs at least 1 worker")
    if n > MAX_WORKERS:  # was a traceback (OverflowError) for process:2**64, and N processes for dask-local:N
        raise InvdesignError(f"executor worker count {n} is beyond {MAX_WORKERS}; give at most {MAX_WORKERS} (about "
                             f"one per CPU core helps: {os.cpu_count() or 1} here)")
    return n


def check_spec(spec: str) -> str:
    """Validate an executor spec without starting anything."""
    kind, _, arg = spec.partition(":")
    if spec.startswith("dask://"):
        import re

        if not re.fullmatch(r"[A-Za-z0-9._\-\[\]:]+:\d{1,5}", spec[len("dask://"):]):
            raise InvdesignError(f"executor {spec!r} needs a scheduler address, dask://host:port (e.g. dask://10.0.0.5:8786)")
        return spec
    if spec == "auto" or spec == "inline":
        return spec
    if kind in ("thread", "process", "dask-local"):
        _workers(arg, 1)
        return spec
    raise InvdesignError(f"unknown executor {spec!r} (auto, inline, thread[:N], process[:N], dask-local[:N], dask://host:port)")


def picklable(obj) -> bool:
    import pickle

    try:
        pickle.dumps(obj)
    except Exception:  # noqa: BLE001 - pickle raises many types (PicklingError, AttributeError, TypeError)
        return False
    return True


def resolve(spec: str, oracle) -> str:
    """The concrete executor spec for ``oracle`` (``auto`` resolved; process/Dask need a picklable oracle)."""
    check_spec(spec)
    if spec == "auto":
        if getattr(oracle, "cheap", False):
            return "inline"
        return "process" if picklable(oracle) else "thread"
    if (spec.startswith("process") or spec.startswith("dask")) and not picklable(oracle):
        raise InvdesignError(f"executor {spec} sends the oracle to other processes, but it cannot be pickled "
                             "(a lambda or a local function?); use --executor thread or inline")
    return spec


def _collect_stale_clients() -> None:
    """Finalise unreferenced Dask clients (e.g. one whose connection failed) before a new one starts: a client that
    the garbage collector finalises while another client's event loop is starting closes that loop under the lock
    the start holds, and both wait for ever (distributed 2026.8; seen in one process running many commands)."""
    import gc

    gc.collect()


@contextmanager
def make_executor(spec: str = "auto", cheap: bool = False, processes: bool = True) -> Iterator[cf.Executor]:
    """Yield a ``concurrent.futures.Executor`` for ``spec``; shut down (cluster closed) on exit.

    Args:
        spec: see the module docstring.
        cheap: the oracle is cheap (``auto`` then runs inline).
        processes: for ``dask-local``: worker processes (True) or threads in this process.
    """
    check_spec(spec)
    default_n = max(1, min(4, (os.cpu_count() or 2) - 1))
    if spec == "auto":
        spec = "inline" if cheap else "process"
    kind, _, arg = spec.partition(":")
    if spec == "inline":
        yield InlineExecutor()
    elif kind == "thread":
        with cf.ThreadPoolExecutor(_workers(arg, default_n)) as ex:
            yield ex
    elif kind == "process":
        with cf.ProcessPoolExecutor(_workers(arg, default_n), mp_context=mp.get_context("spawn"),
                                    initializer=die_with_parent, initargs=(os.getpid(),)) as ex:
            yield ex
    elif kind == "dask-local":
        from dask.distributed import Client, LocalCluster

        n = _workers(arg, default_n)
        _collect_stale_clients()
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=processes, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            yield client.get_executor()
    else:  # dask://host:port
        probe_scheduler(spec)  # nothing listening there: one line at once (Dask itself retries for its whole timeout)
        from dask.distributed import Client

        address = "tcp://" + spec[len("dask://"):]
        _collect_stale_clients()
        with _quiet_dask():
            try:
                client = Client(address, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                raise InvdesignError(f"cannot reach the Dask scheduler ({exc})", source=spec) from None
            except Exception as exc:  # noqa: BLE001 - something answers there, but not Dask's protocol
                raise InvdesignError(f"something answers there, but not as a Dask scheduler ({type(exc).__name__}); "
                                     "check the address", source=spec) from None
            try:
                yield client.get_executor()
            finally:
                try:  # a client still trying to reach a scheduler that died would wait out its whole timeout
                    client.close(timeout=2 if client.status != "running" else CONNECT_TIMEOUT)
                except Exception:  # noqa: BLE001 - closing a client whose scheduler is gone: nothing left to do
                    pass


def completed(ex: cf.Executor, futures, poll: float = 0.5) -> Iterator[tuple[cf.Future, bool]]:
    """Yield ``(future, lost)`` for ``futures`` as they finish, like ``concurrent.futures.as_completed``; ``lost``
    is True for a future left unresolved when the executor's Dask client lost its scheduler (a finished call whose
    result is still on a worker then never resolves: Dask would wait for it for ever)."""
    client = getattr(ex, "_client", None)  # a Dask ClientExecutor's client
    if client is None:
        for fut in cf.as_completed(futures):
            yield fut, False
        return
    pending = set(futures)
    while pending:
        try:  # in slices of ``poll`` seconds, looking at the client between them
            for fut in cf.as_completed(pending, timeout=poll):
                pending.discard(fut)
                yield fut, False
        except cf.TimeoutError:
            pass
        if pending and getattr(client, "status", "running") != "running":
            done, pending = cf.wait(pending, timeout=poll)  # those already on their way in
            for fut in done:
                yield fut, False
            for fut in pending:
                yield fut, True
            return


CONNECT_TIMEOUT = 10.0  # seconds: the TCP connection and Dask's handshake with the scheduler (and a reconnect after its loss)


def _host_port(spec: str) -> tuple[str, int]:
    host, _, port = spec[len("dask://"):].rpartition(":")
    return host.strip("[]"), int(port)


def probe_scheduler(spec: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Refuse, in one line and at once, a ``dask://host:port`` where no scheduler can be reached: an unknown
    host, a refused connection (nothing listens there) or no answer within ``timeout`` s. Starts nothing."""
    import socket

    host, port = _host_port(spec)
    if not 0 < port < 65536:
        raise InvdesignError(f"port {port} is not a TCP port (1-65535)", source=spec)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.gaierror:
        raise InvdesignError(f"cannot reach the Dask scheduler: unknown host {host!r}", source=spec) from None
    except ConnectionRefusedError:
        raise InvdesignError(f"cannot reach the Dask scheduler: nothing listens on {host}:{port} (start one with "
                             f"`dask scheduler --port {port}`, or give its address)", source=spec) from None
    except TimeoutError:
        raise InvdesignError(f"cannot reach the Dask scheduler: no answer from {host}:{port} within {timeout:g} s",
                             source=spec) from None
    except OSError as exc:
        raise InvdesignError(f"cannot reach the Dask scheduler ({exc.strerror or exc.__class__.__name__})",
                             source=spec) from None


@contextmanager
def _quiet_dask() -> Iterator[None]:
    """Dask's own log records (a traceback when the scheduler goes away, reconnection attempts) are kept off
    stderr while our client lives: what happened to the calls is reported by the caller in one line."""
    import logging

    names = {"distributed", "distributed.client", "distributed.utils", "distributed.core", "tornado.application"}
    names |= {n for n in logging.root.manager.loggerDict if n.startswith("distributed.")}
    loggers = [logging.getLogger(n) for n in sorted(names)]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, before):
            lg.setLevel(lv)
