"""The output policy of every command that writes (``--out``, ``--structures``): one place, one set of rules.

Folder outputs (``design``, ``decode``, ``campaign report``, ``benchmark``, ``enumerate --structures``,
``campaign suggest --structures``):

- a folder that does not exist is created (its parent must exist);
- an existing empty folder is filled;
- an existing folder holding exactly a previous output of the *same* command (every entry listed in
  the :data:`MANIFEST` that command wrote there) is replaced only with ``--overwrite``, and then only
  the files listed in the manifest are removed or replaced;
- anything else (a file, a folder holding files invdesign did not write there, a previous output of
  another command) is refused with one line, before any work.

File outputs (CSV, PNG, model ``.pt``, JSON): a new file is written; an existing one is replaced
only with ``--overwrite``; a folder or special file at that path is refused.

Writes are atomic: a folder is filled in a hidden staging folder and then renamed into place (or,
for an existing folder, each file is renamed in); a file is written to a hidden temporary sibling
and renamed. Staging names carry the host and the process id (``.NAME.HOST-PID.RAND.tmp``), so the
next run removes those of processes that no longer exist (a SIGKILLed run leaves nothing forever).
Outputs honour the umask (``0644`` files and ``0755`` folders under the usual ``022``).

Validation (:func:`check_dir`, :func:`check_file`) is separate from writing so that commands call it
before loading a model or computing anything.

Concurrent runs on one output are refused, not interleaved: validation takes an exclusive lock
(``fcntl.flock``, non-blocking) on a lock file of the output and holds it until the command ends
(:func:`release_locks`; the CLI releases on exit, a killed process's lock is released by the kernel).
The lock file is ``.NAME.invdesign-lock`` next to the output (``.invdesign-lock`` inside an existing
output folder whose parent is not writable); it is removed when released (never listed in a manifest,
never seen as a foreign file). A second run on a locked output stops in one line naming the process
that holds it.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invdesign.errors import InvdesignError

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system: outputs are not locked
    fcntl = None

MANIFEST = ".invdesign-manifest.json"
_STAGE_IN = ".invdesign-tmp."  # staging folder inside an existing output folder
LOCK_IN = ".invdesign-lock"  # lock file inside an output folder whose parent is read-only (else ".NAME.invdesign-lock" next to it)


# ---------------------------------------------------------------------- modes and temporary names
def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


def file_mode() -> int:
    """Mode of a new output file under the current umask (0o644 under 022)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """Mode of a new output folder under the current umask (0o755 under 022)."""
    return 0o777 & ~_umask()


def _tag() -> str:
    host = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(tag_and_rand: str) -> bool:
    """True for a staging name ``HOST-PID.RAND`` of this host whose process no longer exists."""
    tag, _, _ = tag_and_rand.rpartition(".")
    host, _, pid = tag.rpartition("-")
    if not pid.isdigit() or host != _tag().rpartition("-")[0]:
        return False
    return int(pid) != os.getpid() and not _pid_alive(int(pid))


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def clean_stale(path: str | Path) -> list[Path]:
    """Remove staging files/folders of ``path`` left by killed runs (``.NAME.HOST-PID.RAND.tmp``
    next to it and ``.invdesign-tmp.HOST-PID.RAND`` inside it). Returns what was removed."""
    path = Path(path).absolute()
    removed: list[Path] = []
    parent = path.parent
    prefix = f".{path.name}."
    try:
        siblings = list(parent.iterdir()) if path.name else []
    except OSError:
        siblings = []
    for p in siblings:
        n = p.name
        if n.startswith(prefix) and n.endswith(".tmp") and _stale(n[len(prefix) : -4]):
            _remove(p)
            removed.append(p)
    if path.is_dir():
        try:
            inside = list(path.iterdir())
        except OSError:
            inside = []
        for p in inside:
            if p.name.startswith(_STAGE_IN) and _stale(p.name[len(_STAGE_IN) :]):
                _remove(p)
                removed.append(p)
    return removed


def temp_file(path: Path) -> tuple[int, Path]:
    """``(fd, tmp)``: a hidden temporary sibling of ``path`` (mode from the umask)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_tag()}.", suffix=".tmp")
    os.fchmod(fd, file_mode())
    return fd, Path(tmp)


def _temp_dir(parent: Path, prefix: str, suffix: str = "") -> Path:
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=suffix))
    os.chmod(tmp, dir_mode())
    return tmp


# ---------------------------------------------------------------------- locks (one run per output at a time)
_HELD: dict[str, tuple[int, Path]] = {}  # absolute output path -> (fd, lock file) held by this process


def lock_path(out: str | Path) -> Path:
    """The lock file of ``out``: next to it (the same file whether or not the output exists yet), or inside
    it for an existing folder whose parent is not writable."""
    ab = Path(out).absolute()
    if not os.access(ab.parent, os.W_OK) and ab.is_dir() and not ab.is_symlink():
        return ab / LOCK_IN
    return ab.parent / f".{ab.name}.invdesign-lock"


def _recorded(lock: Path) -> tuple[str, int] | None:
    """``(host, pid)`` written into a lock file by the run that took it, or None."""
    try:
        text = lock.read_text()[:100].strip()
    except (OSError, UnicodeDecodeError):
        return None
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+) (\d{1,10})", text)
    return (m.group(1), int(m.group(2))) if m else None


def _openers(path: Path) -> list[int]:
    """Pids of this user's processes that hold ``path`` open (Linux ``/proc``; empty where it cannot be read)."""
    try:
        target = os.stat(path, follow_symlinks=False)
        procs = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    found = []
    for pid in procs:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if st.st_ino == target.st_ino and st.st_dev == target.st_dev:
                found.append(int(pid))
                break
    return sorted(p for p in found if p != os.getpid())


def _holder(lock: Path) -> str:
    rec = _recorded(lock)
    return f" (pid {rec[1]} on {rec[0]})" if rec else ""


def _locked_message(lock: Path, out: str | Path) -> str:
    """The refusal of a locked output, saying what to do. A run that took the lock and died (a SIGKILL) releases
    it; when its recorded pid is gone but the lock is still held, a process it started (forked without exec)
    holds the lock file open: it is named, with what to do."""
    rec = _recorded(lock)
    here = _tag().rpartition("-")[0]
    if rec and rec[0] == here and rec[1] != os.getpid() and not _pid_alive(rec[1]):
        pids = _openers(lock)
        who = (f"process{'es' if len(pids) > 1 else ''} {', '.join(map(str, pids[:5]))} it started still hold{'' if len(pids) > 1 else 's'} "
               f"its lock ({lock}); end {'them' if len(pids) > 1 else 'it'} (kill {' '.join(map(str, pids[:5]))}) and rerun"
               if pids else f"a process it started still holds its lock ({lock}; `fuser -v {lock}` names it); end that "
               "process and rerun")
        return f"the invdesign run that was writing this output (pid {rec[1]}) has died, but {who}, or choose another output"
    return f"another invdesign run{_holder(lock)} is writing this output; wait for it to finish or choose another"


_LOCK_NAME = re.compile(r"\.(.+)\.invdesign-lock")


def clean_stale_locks(folder: Path, shown: str | Path | None = None) -> list[str]:
    """Handle the lock files ``.NAME.invdesign-lock`` of outputs inside ``folder`` (the folder is about to be
    written as an output itself): one that no process holds, written by a run of this host (a SIGKILLed run
    leaves its lock file behind; a live run holds its lock for as long as the file exists), is removed; returns the names of the outputs inside ``folder``
    that a live run is writing now (their lock is held). One written on another host is left alone."""
    if fcntl is None:
        return []
    busy = []
    try:
        names = [n for n in os.listdir(folder) if _LOCK_NAME.fullmatch(n)]
    except OSError:
        return []
    here = _tag().rpartition("-")[0]
    own = {str(lk) for _, lk in _HELD.values()}
    for n in names:
        lock = folder / n
        if str(lock) in own:  # this command's other output, inside this folder
            raise InvdesignError(f"this command also writes {_LOCK_NAME.fullmatch(n).group(1)} inside this folder; "
                                 "give its outputs separate places", source=str(shown or folder))
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue  # a link or not ours to open: left as it is (and seen as a foreign file)
        try:
            if not os.path.samestat(os.fstat(fd), os.stat(lock, follow_symlinks=False)) or \
                    not stat_is_reg(os.fstat(fd)) or os.fstat(fd).st_size > 100:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                busy.append(_LOCK_NAME.fullmatch(n).group(1))
                continue
            except OSError:
                continue
            rec = _recorded(lock)
            # held by no one (a run holds its lock for as long as the file exists): a leftover of a killed run
            if rec is None and os.fstat(fd).st_size == 0 or rec is not None and rec[0] == here:
                lock.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(fd)  # releases the flock taken to test it
    return busy


def stat_is_reg(st: os.stat_result) -> bool:
    import stat

    return stat.S_ISREG(st.st_mode)


def acquire_lock(out: str | Path) -> bool:
    """Take the exclusive lock of ``out`` (non-blocking). Returns True when taken now, False when this
    process already holds it (or no lock can be made there: a missing or read-only folder, a file system
    without locks, where validation names the problem itself). Raises :class:`InvdesignError` in one line
    when another process holds it."""
    key = str(Path(out).absolute())
    if key in _HELD or not Path(key).name or fcntl is None:
        return False
    lock = lock_path(out)
    for _ in range(5):  # the lock file may be removed by its holder between our open and our flock: retry
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode())
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InvdesignError(_locked_message(lock, out), source=str(out)) from None
        except OSError:  # no locks on this file system (ENOLCK): go on as before
            os.close(fd)
            return False
        try:
            same = os.fstat(fd).st_ino == os.stat(lock, follow_symlinks=False).st_ino
        except OSError:
            same = False
        if not same:  # locked a file its holder had already removed: take the new one
            os.close(fd)
            continue
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{_tag().rpartition('-')[0]} {os.getpid()}\n".encode())
        except OSError:
            pass  # the holder's pid is only for the message
        _HELD[key] = (fd, lock)
        return True
    return False


def release_lock(out: str | Path) -> None:
    """Release (and remove) the lock of ``out`` if this process holds it."""
    held = _HELD.pop(str(Path(out).absolute()), None)
    if held is None:
        return
    fd, lock = held
    try:  # removed while still held: a run that opened it meanwhile sees another file and retries
        if os.fstat(fd).st_ino == os.stat(lock, follow_symlinks=False).st_ino:
            lock.unlink()
    except OSError:
        pass
    os.close(fd)


def release_locks() -> None:
    """Release every output lock this process holds (the end of a command)."""
    for key in list(_HELD):
        release_lock(key)


atexit.register(release_locks)


# ---------------------------------------------------------------------- manifests
# Names an invdesign command writes into an output folder: the only ones a manifest may list for removal.
_OUTPUT_SUFFIXES = (".csv", ".cif", ".vasp", ".json", ".png", ".in", ".txt", ".md", ".npz", ".pt")
_OUTPUT_NAMES = ("POSCAR", "INCAR", "KPOINTS", "POTCAR.spec")
_MAX_MANIFEST_BYTES = 16 << 20


def _safe_entry(name: object, file: bool) -> bool:
    """True for a manifest entry that names a path strictly inside the folder (relative, no ``..``, no
    ``.``, no empty part, no NUL or backslash) and, for files, a name invdesign commands write."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name or len(name) > 4096:
        return False
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return False
    return not file or parts[-1].endswith(_OUTPUT_SUFFIXES) or parts[-1] in _OUTPUT_NAMES


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a previous output in ``folder``, or None when absent, unreadable or not one of ours.

    A manifest is data from disk, not trusted: one that lists any path outside ``folder`` (absolute,
    ``..``), or a file name no invdesign command writes, is treated as absent (so the folder is refused
    as holding files invdesign did not write, and nothing in it or beyond it is ever removed).
    """
    p = folder / MANIFEST
    if p.is_symlink() or not p.is_file():
        return None
    try:
        if p.stat().st_size > _MAX_MANIFEST_BYTES:
            return None
        m = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or not isinstance(m.get("files"), list) or not isinstance(m.get("command"), str):
        return None
    dirs = m.get("dirs", [])
    if not isinstance(dirs, list) or not all(_safe_entry(f, True) for f in m["files"]) \
            or not all(_safe_entry(d, False) for d in dirs):
        return None
    return m


def _untrusted_entry(folder: Path) -> str | None:
    """The first entry that makes the manifest in ``folder`` untrusted (:func:`read_manifest`), shortened for a
    message; None when there is no such entry (no manifest, unreadable, or rejected for its form)."""
    try:
        m = json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).stat().st_size <= _MAX_MANIFEST_BYTES else None
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict):
        return None
    for key, file in (("files", True), ("dirs", False)):
        entries = m.get(key, [])
        for e in entries if isinstance(entries, list) else []:
            if not _safe_entry(e, file):
                return repr(e if not isinstance(e, str) else e[:80])
    return None


def _entries(folder: Path) -> tuple[set[str], set[str]]:
    """Relative paths of files (incl. links) and folders under ``folder``; our live staging folders skipped."""
    files: set[str] = set()
    dirs: set[str] = set()
    for root, dnames, fnames in os.walk(folder):
        rel = Path(root).relative_to(folder)
        if rel == Path("."):
            dnames[:] = [d for d in dnames if not d.startswith(_STAGE_IN)]
            fnames = [f for f in fnames if f != LOCK_IN]
        for d in list(dnames):
            if (Path(root) / d).is_symlink():
                files.add(str(rel / d))
                dnames.remove(d)
            else:
                dirs.add(str(rel / d))
        for f in fnames:
            files.add(str(rel / f))
    return files, dirs


def _describe(names: list[str]) -> str:
    names = sorted(names)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


# ---------------------------------------------------------------------- validation (before any work)
def _check_parent(path: Path, missing: str = "output folder does not exist") -> None:
    parent = path.parent
    if not parent.exists():
        raise InvdesignError(missing, source=str(parent))
    if not parent.is_dir():
        raise InvdesignError("the output's parent is not a folder", source=str(parent))


def _locked(check):
    """Run a validation holding the output's lock: kept when it passes (until :func:`release_locks`),
    released when it refuses (if taken by it)."""
    import functools

    @functools.wraps(check)
    def wrapper(out, *args, **kwargs):
        taken = acquire_lock(out)
        try:
            return check(out, *args, **kwargs)
        except BaseException:
            if taken:
                release_lock(out)
            raise
    return wrapper


@_locked
def check_dir(out: str | Path, command: str, overwrite: bool = False) -> Path:
    """Validate a folder output of ``command`` under the policy (module docstring) before any work.

    Takes the output's lock (held until :func:`release_locks`) and removes staging leftovers of killed
    runs. Returns ``out``; raises :class:`InvdesignError`.
    """
    out = Path(out)
    ab = out.absolute()
    if out.is_symlink() and not out.is_dir():
        raise InvdesignError("output is a link to nothing", source=str(out))
    if out.exists() and not out.is_dir():
        raise InvdesignError("output exists and is not a folder", source=str(out))
    if not out.exists():
        if not ab.name:
            raise InvdesignError("not a usable output folder", source=str(out))
        _check_parent(ab, "output folder's parent does not exist")
        if not os.access(ab.parent, os.W_OK):
            raise InvdesignError("the output's folder is not writable", source=str(ab.parent))
        clean_stale(ab)
        return out
    if not os.access(ab, os.W_OK):
        raise InvdesignError("output folder is not writable", source=str(out))
    clean_stale(ab)
    busy = clean_stale_locks(ab, out)  # a killed run's lock file inside is removed; a live run's refuses the folder
    if busy:
        raise InvdesignError(f"another invdesign run is writing {_describe(busy)} inside this folder; wait for it to "
                             "finish or choose another folder", source=str(out))
    files, dirs = _entries(ab)
    if not files and not dirs:
        return out
    mine = f"{_STAGE_IN}{_tag()}."
    live = [p.name for p in ab.iterdir() if p.name.startswith(_STAGE_IN) and not p.name.startswith(mine)]
    if live:
        raise InvdesignError("another invdesign run is writing into this folder", source=str(out))
    man = read_manifest(ab)
    if man is None:
        bad = _untrusted_entry(ab)
        why = (f"its manifest lists {bad}, outside the folder or no file an invdesign command writes, so it is not "
               "trusted and the folder holds files invdesign did not write" if bad else
               "output folder holds files invdesign did not write")
        raise InvdesignError(f"{why} ({_describe(list(files | dirs))}); nothing was removed; choose a new or empty "
                             "folder", source=str(out))
    if man["command"] != command:
        raise InvdesignError(
            f"output folder holds a previous `{man['command']}` output, not `{command}`; choose another folder",
            source=str(out))
    ours = set(man["files"]) | {MANIFEST}
    foreign = (files - ours) | (dirs - set(man.get("dirs", [])))
    if foreign:
        raise InvdesignError(
            f"output folder holds files invdesign did not write ({_describe(list(foreign))}) next to a previous "
            f"`{command}` output; move them or choose another folder", source=str(out))
    if not overwrite:
        raise InvdesignError(f"output folder holds a previous `{command}` output; give --overwrite to replace it",
                             source=str(out))
    return out


@_locked
def check_file(out: str | Path, suffixes: tuple[str, ...] | None = (".csv",), overwrite: bool = False) -> Path:
    """Validate a file output before any work: suffix, parent folder, and an existing file only with ``overwrite``.
    Takes the output's lock (held until :func:`release_locks`)."""
    out = Path(out)
    if suffixes is not None and not any(out.name.endswith(s) for s in suffixes):
        raise InvdesignError(f"output must end in {' or '.join(suffixes)}", source=str(out))
    ab = out.absolute()
    if out.is_dir():
        raise InvdesignError("output is a folder, not a file", source=str(out))
    if out.exists() or out.is_symlink():
        if not out.is_file() or out.is_symlink():
            raise InvdesignError("output exists and is not a regular file", source=str(out))
        if not overwrite:
            raise InvdesignError("output file exists; give --overwrite to replace it", source=str(out))
    _check_parent(ab)
    if not os.access(ab.parent, os.W_OK):
        raise InvdesignError("the output's folder is not writable", source=str(ab.parent))
    clean_stale(ab)
    return out


# ---------------------------------------------------------------------- writing
def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a hidden temporary sibling and a rename (mode from the umask)."""
    path = Path(path)
    ab = path.absolute()
    _check_parent(ab)
    try:
        fd, tmp = temp_file(ab)
    except OSError as exc:
        raise InvdesignError(f"cannot write ({_reason(exc)})", source=str(path)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, ab)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # disk full, permission, a race: one line naming the file, nothing half-written
            raise InvdesignError(f"cannot write ({_reason(exc)})", source=str(path)) from None
        raise
    return path


def _reason(exc: OSError) -> str:
    """``No space left on device`` (the OS's words, without the path: the caller names it)."""
    return exc.strerror or exc.__class__.__name__


def _write_manifest(folder: Path, command: str, files: list[str], dirs: list[str]) -> None:
    from invdesign import __version__

    text = json.dumps({"command": command, "invdesign_version": __version__, "written": time.time(),
                       "files": sorted(files), "dirs": sorted(dirs)}, indent=1) + "\n"
    write_bytes_atomic(folder / MANIFEST, text.encode())


@contextmanager
def output_dir(out: str | Path, command: str, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder; when the block ends without error its content becomes ``out``.

    The policy is checked again (:func:`check_dir`); a new ``out`` appears at once by a rename;
    an existing (empty, or previous same-command output with ``overwrite``) folder has each file
    renamed in, the manifest's other files removed, and the manifest rewritten. On error the
    staging folder is removed and ``out`` is untouched.
    """
    out = Path(out)
    held = str(out.absolute()) in _HELD  # the command's own validation took the lock: it keeps it
    check_dir(out, command, overwrite)
    try:
        with _output_dir(out, command, overwrite) as stage:
            yield stage
    finally:
        if not held:  # taken here (a library call without a prior check): released with the output written
            release_lock(out)


@contextmanager
def _output_dir(out: Path, command: str, overwrite: bool) -> Iterator[Path]:
    ab = out.absolute()
    existing = ab.is_dir()
    try:
        stage = _temp_dir(ab, f"{_STAGE_IN}{_tag()}.") if existing else _temp_dir(ab.parent, f".{ab.name}.{_tag()}.", ".tmp")
    except OSError as exc:
        raise InvdesignError(f"cannot write ({_reason(exc)})", source=str(out)) from None
    try:
        try:
            yield stage
        except OSError as exc:  # writing the output (disk full, permission): staging removed below, out untouched
            raise InvdesignError(f"cannot write ({_reason(exc)}); nothing was written", source=str(out)) from None
        except InvdesignError as exc:  # a file of the staging folder: name it where the user will look for it
            if exc.source and exc.source.startswith(str(stage) + os.sep):
                where = out / Path(exc.source).relative_to(stage)
                raise InvdesignError(f"{exc.reason}; nothing was written", source=str(where)) from None
            raise
        try:
            _finish(stage, ab, out, command, overwrite, existing)
        except OSError as exc:
            if not existing and ab.exists():
                raise InvdesignError("another run created this output meanwhile; nothing of this run was written",
                                     source=str(out)) from None
            raise InvdesignError(f"cannot write ({_reason(exc)})", source=str(out)) from None
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _finish(stage: Path, ab: Path, out: Path, command: str, overwrite: bool, existing: bool) -> None:
    """Move the staged output into place (the second half of :func:`output_dir`)."""
    files, dirs = _entries(stage)
    files.discard(MANIFEST)
    if not existing:
        _write_manifest(stage, command, list(files), list(dirs))
        os.replace(stage, ab)
        return
    check_dir(out, command, overwrite)  # nothing foreign appeared meanwhile
    old = read_manifest(ab) or {"files": [], "dirs": []}
    # the manifest lists old and new files while they are swapped, so a crash never leaves unlisted files of ours
    _write_manifest(ab, command, list(files | set(old["files"])), list(dirs | set(old.get("dirs", []))))
    for d in sorted(dirs, key=lambda s: s.count(os.sep)):
        target = ab / d
        if not target.is_dir():
            target.mkdir()
            os.chmod(target, dir_mode())
    for f in sorted(files):
        os.replace(stage / f, ab / f)
    present, present_dirs = _entries(ab)  # walked without following links: nothing under a linked folder is ours
    for f in (set(old["files"]) - files) & present:
        target = ab / f
        if target.is_symlink() or target.is_file():
            target.unlink(missing_ok=True)
    for d in sorted((set(old.get("dirs", [])) - dirs) & present_dirs, key=lambda s: -s.count(os.sep)):
        try:
            (ab / d).rmdir()
        except OSError:
            pass
    _write_manifest(ab, command, list(files), list(dirs))
