"""Checks of the embedding against the exact symmetry: invariance, injectivity, recognition.

- :func:`orbit_spread`: the largest distance between the embedding of a configuration and the
  embeddings of its images under *all* host operations.
- :func:`class_separation`: over a set of distinct classes (e.g. all 13,609 enumerated orbits),
  the smallest distance between two classes and the number of *collisions* (classes closer to
  another class than a threshold, by default the orbit spread).
- :func:`equivalence_accuracy`: the Siamese test: pairs (configuration, symmetry image) and
  (configuration, other class of the same composition: the nearest in the embedding, i.e. the
  hardest negative), classified as "same material" when closer than a threshold.
"""

from __future__ import annotations

import numpy as np

from invdesign.embed.train import nearest_other
from invdesign.lattice.canonical import apply_op, canonical_keys
from invdesign.lattice.enumerate import compositions


def orbit_spread(model, occ: np.ndarray, ops: np.ndarray | None = None) -> np.ndarray:
    """``(N,)`` max distance between ``embed(occ[i])`` and ``embed(g occ[i])`` over ``ops`` (default all)."""
    host = model.host
    ops = np.arange(host.n_ops) if ops is None else np.asarray(ops)
    z0 = model.embed(occ)
    out = np.zeros(len(occ))
    for i in range(len(occ)):
        imgs = apply_op(np.repeat(occ[i][None], len(ops), axis=0), host, ops)
        out[i] = np.linalg.norm(model.embed(imgs) - z0[i], axis=1).max()
    return out


def class_separation(z: np.ndarray, threshold: float) -> dict:
    """Nearest-other-class distances of ``z (R, d)`` (one row per distinct class).

    Returns ``min_distance``, quantiles, ``collisions`` (classes whose nearest other class is
    closer than ``threshold``) and ``nearest`` (index of each class's nearest other class).
    """
    idx, d = nearest_other(z)
    return {
        "classes": int(len(z)),
        "min_distance": float(d.min()),
        "q001": float(np.quantile(d, 0.001)),
        "q01": float(np.quantile(d, 0.01)),
        "median": float(np.median(d)),
        "threshold": float(threshold),
        "collisions": int((d <= threshold).sum()),
        "nearest": idx,
        "distances": d,
    }


def equivalence_accuracy(model, occ: np.ndarray, pool: np.ndarray, threshold: float, seed: int = 0) -> dict:
    """Recognition accuracy on held-out pairs.

    For each configuration of ``occ``: one positive pair (a random symmetry image) and one hard
    negative (the configuration of ``pool`` with the same composition, a different canonical key
    and the nearest embedding). A pair is called equivalent when its distance is below ``threshold``.
    """
    host = model.host
    rng = np.random.default_rng(seed)
    z = model.embed(occ)
    zi = model.embed(apply_op(occ, host, rng.integers(0, host.n_ops, size=len(occ))))
    zp = model.embed(pool)
    keys, pkeys = canonical_keys(occ, host), np.array(canonical_keys(pool, host))
    comp, pcomp = compositions(occ, host), compositions(pool, host)
    d_pos = np.linalg.norm(z - zi, axis=1)
    d_neg = []
    for i in range(len(occ)):
        cand = np.flatnonzero((pcomp == comp[i]).all(axis=1) & (pkeys != keys[i]))
        if len(cand):
            d_neg.append(np.linalg.norm(zp[cand] - z[i], axis=1).min())
    d_neg = np.array(d_neg)
    correct = int((d_pos < threshold).sum() + (d_neg >= threshold).sum())
    total = len(d_pos) + len(d_neg)
    return {
        "pairs": total,
        "positives": len(d_pos),
        "negatives": len(d_neg),
        "accuracy": correct / max(total, 1),
        "threshold": threshold,
        "max_positive_distance": float(d_pos.max()) if len(d_pos) else 0.0,
        "min_negative_distance": float(d_neg.min()) if len(d_neg) else float("inf"),
    }
