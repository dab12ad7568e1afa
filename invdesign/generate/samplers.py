"""The one small interface every design sampler implements.

A sampler turns a :class:`Request` (model, window, limits, exclusions, how many, seed) into
proposed configurations with their checks: :class:`Proposal` ``(occ, table, z)``. Design modes are
samplers registered by name in :data:`invdesign.generate.design.SAMPLERS`: ``exhaustive``
(enumerate + screen), ``flow`` (conditional flow + decoder), ``anneal`` (Monte Carlo in
configuration space, :mod:`invdesign.generate.anneal`); a pool of given structures goes through
the same checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class Request:
    """What a sampler is asked for.

    Attributes:
        model: the model (``predict``, ``embed``, ``host``).
        window: the :class:`~invdesign.generate.window.Window`.
        limits: the :class:`~invdesign.generate.decoder.Limits`.
        exclude: canonical keys never to return.
        n: candidates wanted; samples: the sampler's own budget (None: its default); seed: seeds everything.
        timings, counts: filled in by the sampler (seconds; counters) for ``summary.json``.
    """

    model: object
    window: object
    limits: object
    exclude: set[str]
    n: int
    samples: int | None = None
    seed: int = 0
    timings: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)


@dataclass
class Proposal:
    """``occ (R, n_sites)`` uint8 configurations, ``table`` their checks (one row each), ``z (R, d)`` embeddings."""

    occ: np.ndarray
    table: object
    z: np.ndarray


class Sampler(Protocol):
    """``sampler(request) -> Proposal``."""

    def __call__(self, request: Request) -> Proposal: ...
