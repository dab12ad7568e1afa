"""The model a ``design`` run loads: without torch where the run does not need it (issue 25).

Importing torch costs 1.5-2 s of a new process, more than half of what a design in an enumerable space
may take (``design -n 100`` on 8x8 MoS2: the screen is cached on disk, :mod:`invdesign.generate.screen_cache`).
Such a run reads of the model only its serving heads (ridge and gap trees, numpy), its training
configurations and targets, its embedding tag and the stored embedding tables; the encoder, the deep
ensembles and the flow are used by the flow and annealing modes and by decoding beyond the enumerable space.

:func:`load_design_model` therefore keeps, per model file (keyed by its SHA-256, the packaged high-density
correction's and the pair prior's version, as the serving cache is), a numpy copy of those parts in
``$INVDESIGN_CACHE_DIR`` and returns a :class:`LazyModel` built from it: a
:class:`~invdesign.predict.serving.ServingModel` (whose predictions are the full model's, bit for bit:
``tests/test_serving.py``, ``tests/test_design_model.py``, and checked on probe rows before a copy is
written) that also carries the training rows, the tag
and the tables, and loads the full model (and torch) the first time anything else is asked of it (an
embedding, a head it does not hold, the flow), then answers from it. The first run on a model file loads
the full model and writes the copy. ``INVDESIGN_FAST_PREDICT=0`` loads the full model, as for ``predict``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from invdesign.predict.serving import (
    CACHE_FORMAT,
    ServingModel,
    _file_digest,
    default_model_path,
    fast_predict_enabled,
    hd_resource_path,
)

#: Layout of the cached copy (part of its name).
FORMAT = 5
#: Copies kept in the cache folder (the newest by modification time; about 15 MB each for the packaged model).
KEEP = 4


def design_cache_path(model_path: str | Path) -> Path:
    """Where the numpy copy of the model file ``model_path`` is kept (named by the SHA-256 of the file, of the
    packaged high-density correction, the pair prior's version and both layouts)."""
    from invdesign.data.dataset import cache_dir
    from invdesign.predict.pair_prior import PRIOR_VERSION

    res = hd_resource_path()
    key = (f"{_file_digest(Path(model_path))}:{_file_digest(res) if res.is_file() else 'none'}:prior{PRIOR_VERSION}"
           f":serving{CACHE_FORMAT}:design{FORMAT}")
    return cache_dir() / f"design-{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"


class _LazyMapping(Mapping):
    """A mapping of the full model's keys: the values held here are answered at once, the others load the full
    model (``owner._full()``) and come from ``getattr(full, attr)``."""

    def __init__(self, owner: LazyModel, attr: str, names: list[str], held: dict) -> None:
        self._owner, self._attr, self._names, self._held = owner, attr, list(names), dict(held)

    def __getitem__(self, key):
        if key in self._held:
            return self._held[key]
        if key not in self._names:
            raise KeyError(key)
        return getattr(self._owner._full(), self._attr)[key]

    def __contains__(self, key) -> bool:
        return key in self._names

    def __iter__(self) -> Iterator:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class LazyModel(ServingModel):
    """A :class:`ServingModel` of a model file with its training rows, embedding tag and design tables; anything
    else loads the full model (:func:`invdesign.model.load_model`) and is answered by it."""

    def __init__(self, sm: ServingModel, source: Path, train_occ: np.ndarray, train_y: np.ndarray, tag: str,
                 digest: str, head_names: list[str], extras_names: list[str], tables: dict | None,
                 attr_names: list[str], file_sha256: str = "") -> None:
        super().__init__(sm.host, sm.heads, sm.meta, sm.train_stats())
        self._source, self._full_model, self._digest = Path(source), None, digest
        self._attr_names, self._file_sha256 = frozenset(attr_names), file_sha256
        self.train_occ, self.train_y = train_occ, train_y
        self._invdesign_probe_tag = tag
        self.heads = _LazyMapping(self, "heads", head_names, sm.heads)
        self.extras = _LazyMapping(self, "extras", extras_names, {"design_tables": tables} if tables is not None else {})

    def _full(self):
        """The full model (loaded once; imports torch)."""
        if self._full_model is None:
            from invdesign.generate.threads import torch_imported
            from invdesign.model import load_model

            if _file_digest(self._source) != self._file_sha256:  # replaced since the copy was read: not this model
                from invdesign.errors import InvdesignError

                raise InvdesignError("the model file changed during the run; run it again", source=str(self._source))
            self._full_model = load_model(self._source)
            torch_imported()
        return self._full_model

    def __getattr__(self, name: str):
        # only for what this object does not hold: the full model's attributes and methods (what the full model
        # does not have either, e.g. a host model's ``design_modes``, is refused without loading it)
        if name.startswith("__") or name in ("_full_model", "_source", "_attr_names", "_file_sha256") or name not in self._attr_names:
            raise AttributeError(name)
        return getattr(self._full(), name)

    def embed(self, occ: np.ndarray) -> np.ndarray:
        return self._full().embed(occ)

    @property
    def dim(self) -> int:
        return self._full().dim

    def prediction_digest(self) -> str | None:
        """The full model's digest: the copy was checked to predict as the full model did, bit for bit, when it
        was written (:meth:`write`), so both read the same cached screen."""
        return self._digest

    @classmethod
    def write(cls, model, path: Path, source: Path) -> bool:
        """Write the numpy copy of the full ``model`` (loaded from the file ``source``) to ``path``; False where it
        has no numpy serving part (a deep ensemble serves), the copy would predict otherwise, or the folder cannot
        be written."""
        from invdesign.generate.decoder import _model_tag

        sm = ServingModel.from_model(model)
        digest = model.prediction_digest()
        if sm is None or digest is None:
            return False
        arrays = {f"serving/{k}": v for k, v in sm.arrays().items()}
        tables = (model.extras or {}).get("design_tables")
        info = {"head_names": list(model.heads), "extras_names": list(model.extras or {}), "digest": digest,
                "tag": _model_tag(model, model.host), "tables": None, "attr_names": _public_names(model),
                "file_sha256": _file_digest(source)}
        if isinstance(tables, dict):
            info["tables"] = {}
            for k, v in tables.items():
                if isinstance(v, (str, int, float, bool, list)) or v is None:
                    info["tables"][k] = v
                else:
                    arrays[f"tables/{k}"] = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        arrays["info"] = np.array(json.dumps(info))
        arrays["train_occ"] = np.asarray(model.train_occ)
        arrays["train_y"] = np.asarray(model.train_y)
        back = cls._build(arrays, source)
        if back is None or not _same_predictions(model, back):
            return False  # never serve a copy that predicts otherwise
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="design-", suffix=".npz.tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(fh, **arrays)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            old = sorted(path.parent.glob("design-*.npz"), key=lambda q: q.stat().st_mtime, reverse=True)[KEEP:]
            for q in old:  # copies of other model files (or layouts): the newest KEEP stay
                q.unlink(missing_ok=True)
        except OSError:
            return False
        return True

    @classmethod
    def read(cls, path: Path, source: Path) -> LazyModel | None:
        """The lazy model of the copy at ``path`` (of the model file ``source``), or None where it is unreadable."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls._build({k: z[k] for k in z.files}, source)
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
            return None  # unreadable: the full model is loaded and the copy rewritten

    @classmethod
    def _build(cls, z: Mapping, source: Path) -> LazyModel | None:
        try:
            sm = ServingModel.from_arrays({k[len("serving/"):]: z[k] for k in z if k.startswith("serving/")})
            info = json.loads(str(z["info"]))
            tables = None
            if info["tables"] is not None:
                tables = dict(info["tables"])
                tables.update({k[len("tables/"):]: np.asarray(z[k]) for k in z if k.startswith("tables/")})
            sm._fe_terms = None  # derived again from the resources as they are now, as the full model derives them
            return cls(sm, source, np.asarray(z["train_occ"]), np.asarray(z["train_y"]), info["tag"], info["digest"],
                       info["head_names"], info["extras_names"], tables, info["attr_names"], info["file_sha256"])
        except (ValueError, KeyError, TypeError, json.JSONDecodeError):
            return None


def _public_names(model) -> list[str]:
    """What a :class:`LazyModel` forwards to the full model: the class's attributes and the instance's own public
    ones (not the caches it fills while serving, such as ``_hd_model``: a copy fills its own)."""
    return sorted(set(dir(type(model))) | {k for k in vars(model) if not k.startswith("_")})


def _same_predictions(model, lazy: LazyModel) -> bool:
    """The copy predicts as ``model`` on probe rows (1-3 defects at random, 4-9 defects where the DFT host model
    serves, every 97th training configuration), bit for bit, with the same gap validity and extrapolation reasons."""
    from invdesign.lattice.enumerate import sample_configurations

    host = model.host
    rng = np.random.default_rng(0)
    labels = [host.defect_label(*t) for t in host.defect_types]
    occ = [sample_configurations(host, {labels[i]: 1 for i in rng.choice(len(labels), k, replace=False)}, 8, rng)
           for k in (1, 2, 3) if k <= len(labels)]
    occ += [sample_configurations(host, {labels[0]: 3, labels[-1]: k}, 4, rng) for k in (1, 3, 6)]
    occ = np.concatenate([np.asarray(o, dtype=np.uint8) for o in occ] + [np.asarray(model.train_occ[::97], np.uint8)])
    a, b = model.predict(occ), lazy.predict(occ)
    return (all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
            and np.array_equal(model.gap_validated(occ), lazy.gap_validated(occ))
            and model.extrapolation(occ) == lazy.extrapolation(occ))


def load_design_model(path: str | Path | None = None):
    """The model ``design`` uses for the model file ``path`` (None: the packaged default): a :class:`LazyModel`
    from the cached copy where there is one, else the full model (whose copy is then written). The full model
    where ``INVDESIGN_FAST_PREDICT=0``. Errors (missing or foreign file) are :func:`invdesign.model.load_model`'s."""
    p = Path(path) if path is not None else default_model_path()
    if fast_predict_enabled() and p.is_file() and p.suffix.lower() == ".pt":
        cache = design_cache_path(p)
        lazy = LazyModel.read(cache, p)
        if lazy is not None:
            return lazy
    else:
        cache = None
    from invdesign.model import load_model

    model = load_model(path)
    if cache is not None and design_cache_path(p) == cache:  # the file did not change while it loaded
        LazyModel.write(model, cache, p)
    return model
