"""Loading what ``predict`` needs of a model file: the cached serving part, or the full model.

Above both :mod:`invdesign.model` (torch) and :mod:`invdesign.predict.serving` (numpy only), so
neither imports the other's loader.
"""

from __future__ import annotations

from pathlib import Path

from invdesign.predict.serving import (
    Predictor,
    ServingModel,
    default_model_path,
    fast_predict_enabled,
    read_cache,
    serving_cache_path,
    write_cache,
)


def load_predictor(path: str | Path | None = None) -> Predictor:
    """What ``predict`` needs of the model file ``path`` (None: the packaged default).

    A :class:`ServingModel` from the cache when there is one for this file's content; else the
    full model is loaded (:func:`invdesign.model.load_model`, imports torch) and its serving part is
    cached and returned. The full model itself where a deep ensemble serves, or where
    ``INVDESIGN_FAST_PREDICT=0``. Errors (missing or foreign file) are :func:`load_model`'s.
    """
    p = Path(path) if path is not None else default_model_path()
    cache = serving_cache_path(p) if fast_predict_enabled() and p.is_file() else None
    if cache is not None:
        sm = read_cache(cache)
        if sm is not None:
            return sm
    from invdesign.model import load_model

    model = load_model(path)  # missing or foreign files: its one-line errors
    sm = ServingModel.from_model(model) if cache is not None else None
    if sm is None:
        return model
    if serving_cache_path(p) == cache:  # the file did not change while it loaded
        write_cache(cache, sm)
    return sm
