"""Replaying campaigns on labelled pools: honest windows and the random-search baseline.

Used by the benchmark and the notebook: a window is drawn around a randomly chosen pool member
and widened (in units of each target's standard deviation over the pool) until it holds at
least ``min_inside`` members, so every window is reachable and its pool fraction is known.
Random search evaluates the pool in a random order; the number of evaluations until the
``n``-th hit is the position of the ``n``-th in-window member in a random permutation
(expected value ``n (N + 1) / (K + 1)`` for ``K`` members inside out of ``N``).
"""

from __future__ import annotations

import numpy as np

from invdesign.campaign.target import Target
from invdesign.data.dataset import TARGETS


def window_around_member(y: np.ndarray, rng: np.random.Generator, min_inside: int = 8,
                         names: tuple[str, ...] = TARGETS) -> tuple[Target, np.ndarray]:
    """A window around a random pool member holding at least ``min_inside`` members.

    Args:
        y: ``(N, 2)`` pool values (eV, TARGETS order).
        rng: random generator (picks the centre).
        min_inside: smallest number of pool members inside.

    Returns:
        the target and the ``(N,)`` bool mask of members inside.
    """
    y = np.asarray(y, dtype=float)
    cols = [TARGETS.index(n) for n in names]
    sd = y[:, cols].std(axis=0)
    c = y[rng.integers(len(y)), cols]
    s = 0.002
    while True:
        lo, hi = c - s * sd, c + s * sd
        inside = np.all((y[:, cols] >= lo) & (y[:, cols] <= hi), axis=1)
        if inside.sum() >= min_inside or s > 10:
            break
        s *= 1.1
    target = Target(window={n: (float(lo[k]), float(hi[k])) for k, n in enumerate(names)})
    return target, target.hits(y)


def random_search_evaluations(inside: np.ndarray, n_hits: int, rng: np.random.Generator) -> int:
    """Evaluations random search (without replacement) needs for ``n_hits`` hits (pool size if never)."""
    inside = np.asarray(inside, dtype=bool)
    order = rng.permutation(len(inside))
    pos = np.flatnonzero(inside[order])
    return int(pos[n_hits - 1] + 1) if len(pos) >= n_hits else len(inside)


def expected_random_evaluations(n_pool: int, n_inside: int, n_hits: int) -> float:
    """Expected evaluations of random search for ``n_hits`` hits: ``n_hits (N + 1) / (K + 1)``."""
    return n_hits * (n_pool + 1) / (n_inside + 1)
