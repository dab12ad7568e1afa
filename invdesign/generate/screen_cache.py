"""Disk cache of the exhaustive screen: every enumerated orbit's predictions, exact or absent.

Screening an enumerable space (13,609 orbits at 1-3 defects on 8x8 MoS2) predicts every orbit with
the serving heads; the gap head's tree ensembles make that seconds of work (and an import of
scikit-learn's compiled predictor) in every new process. The predictions are a pure function of

- the model's serving state (:meth:`invdesign.predict.serving.Predictor.prediction_digest`: host,
  metadata, heads, training configurations and targets) and, for a model re-referenced to chemical
  potentials (:class:`invdesign.synthesis.chempot.ReferencedModel`), those potentials;
- the code prediction runs through and the packaged resources, by content (:data:`CODE`: ``data``,
  ``embed``, ``lattice``, ``predict``, ``synthesis`` and ``resources`` with the high-density correction
  and the packaged DFT host models, the model and error modules, this module and the decoder; the
  commands, campaigns, outputs and samplers only call it);
- the enumerated orbit table (its configurations, byte for byte);
- the numerical environment (Python, numpy and scikit-learn versions, the machine, thread settings (torch's
  where a deep ensemble serves), and every ``INVDESIGN_*`` switch but the cache folder and the progress bars).

Their SHA-256 names the cache file (``screen-<key>.npz`` in ``$INVDESIGN_CACHE_DIR``), so a cached
screen is only ever read back for the very computation that wrote it: a changed model, code file,
resource, orbit table or library gives another name and the screen is recomputed. What is read back
are the floats that computation returned (``tests/test_screen_cache.py`` compares them with a fresh
screen bit for bit). A model whose state cannot be hashed (another predictor type, an attribute of an
unknown kind) is never cached. ``INVDESIGN_SCREEN_CACHE=0`` switches the cache off. At most
:data:`KEEP` screens are kept; older ones are removed when a new one is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

#: Layout of the cache file (part of the key).
FORMAT = 1
#: Screens kept in the cache folder (the newest by modification time).
KEEP = 8
#: ``INVDESIGN_*`` variables that change no prediction (left out of the key).
NEUTRAL_ENV = frozenset({"INVDESIGN_CACHE_DIR", "INVDESIGN_PROGRESS", "INVDESIGN_SCREEN_CACHE"})
#: Thread settings of the numerical libraries (in the key: a reduction may be split by thread count).
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

#: What :func:`package_digest` hashes, relative to the package: every file of these folders and these files (what
#: ``model.predict`` executes or reads, traced on 1-7-defect rows under chemical potentials: ``tests/test_screen_cache.py``).
CODE = ("data", "embed", "lattice", "predict", "synthesis", "resources", "generate/decoder.py", "generate/screen_cache.py",
        "__init__.py", "errors.py", "model.py", "predictor.py")

_PACKAGE_DIGEST: str | None = None


def enabled() -> bool:
    """False when ``INVDESIGN_SCREEN_CACHE=0`` (or false/no/off)."""
    return os.environ.get("INVDESIGN_SCREEN_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def package_digest() -> str:
    """SHA-256 of the code and resources predictions depend on (:data:`CODE`; relative paths and contents),
    computed once per process. Compiled byte code is left out (it follows the sources)."""
    global _PACKAGE_DIGEST
    if _PACKAGE_DIGEST is None:
        root = Path(__file__).resolve().parent.parent
        files: set[Path] = set()
        for c in CODE:
            q = root / c
            files.update(q.rglob("*") if q.is_dir() else [q])
        h = hashlib.sha256()
        for p in sorted(files):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                h.update(str(p.relative_to(root)).encode() + b"\0")
                h.update(p.read_bytes())
                h.update(b"\0")
        _PACKAGE_DIGEST = h.hexdigest()
    return _PACKAGE_DIGEST


def _torch_serves(model) -> bool:
    """True where torch computes some of ``model``'s predictions (a deep ensemble serves a target): its thread
    count then enters the key. Ridge, trees and the DFT host model serve in numpy."""
    base = getattr(model, "base", model)
    try:
        return "ensemble_ce" in base.serving_heads().values()
    except (AttributeError, TypeError, ValueError):
        return True


def _environment(torch_serves: bool = True) -> dict:
    from importlib import metadata

    try:
        sklearn = metadata.version("scikit-learn")
    except metadata.PackageNotFoundError:
        sklearn = None
    torch = sys.modules.get("torch")
    return {
        "python": sys.version,
        "numpy": np.__version__,
        "scikit-learn": sklearn,
        "machine": platform.machine(),
        "node": platform.node(),
        "threads": {k: os.environ.get(k) for k in THREAD_ENV},
        "torch_threads": torch.get_num_threads() if torch is not None and torch_serves else None,
        "invdesign_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("INVDESIGN_") and k not in NEUTRAL_ENV},
    }


def model_digest(model) -> str | None:
    """Digest of what ``model.predict`` reads besides code and resources, or None (not cacheable).

    A :class:`~invdesign.predict.serving.Predictor` gives its own
    (:meth:`~invdesign.predict.serving.Predictor.prediction_digest`); a
    :class:`~invdesign.synthesis.chempot.ReferencedModel` its base's with its chemical potentials.
    The type is tested exactly: a wrapper forwarding attributes to a model must not pass for it.
    """
    from invdesign.predict.serving import Predictor

    if isinstance(model, Predictor):
        return model.prediction_digest()
    cls = type(model)  # by its qualified name: importing chempot here would close an import cycle through the flow
    if (cls.__module__, cls.__qualname__) == ("invdesign.synthesis.chempot", "ReferencedModel"):
        base = model_digest(model.base)
        if base is None:
            return None
        return hashlib.sha256(json.dumps(["ReferencedModel", base, model.mu.as_dict(), model.mu.extra], sort_keys=True,
                                         default=repr).encode()).hexdigest()
    return None


def screen_key(model, idx) -> str | None:
    """The cache key of ``model``'s predictions of every orbit of ``idx`` (an
    :class:`~invdesign.generate.decoder.OrbitIndex`), or None when it is not to be cached."""
    if not enabled():
        return None
    m = model_digest(model)
    if m is None:
        return None
    occ = np.ascontiguousarray(idx.occ)
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "model": m, "package": package_digest(), "env": _environment(_torch_serves(model)),
                         "host": idx.host.fingerprint, "occ": [str(occ.dtype), list(occ.shape)]},
                        sort_keys=True, default=repr).encode())
    h.update(occ.tobytes())
    return h.hexdigest()[:40]


def _path(key: str) -> Path:
    from invdesign.data.dataset import cache_dir

    return cache_dir() / f"screen-{key}.npz"


def read(key: str, rows: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached ``(mean, std)`` of ``rows`` orbits under ``key``, or None (absent, unreadable, wrong shape)."""
    path = _path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            mean, std, k = f["mean"], f["std"], str(f["key"])
    except (OSError, ValueError, KeyError):
        return None
    if k != key or mean.shape != std.shape or mean.ndim != 2 or len(mean) != rows:
        return None
    if mean.dtype != np.float64 or std.dtype != np.float64:
        return None
    return mean, std


def write(key: str, mean: np.ndarray, std: np.ndarray) -> None:
    """Store a screen under ``key`` (atomically; a read-only or full cache folder only costs time) and keep
    the newest :data:`KEEP` screens."""
    path = _path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="screen-", suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, mean=np.asarray(mean, np.float64), std=np.asarray(std, np.float64), key=np.array(key))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        old = sorted(path.parent.glob("screen-*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP:]
        for p in old:
            p.unlink(missing_ok=True)
    except OSError:
        pass
