"""Compiled walk of flattened tree ensembles (numba), with the numpy walk as the fallback.

:class:`invdesign.predict.gap.ForestStack` holds several boosted forests as flat node arrays. Walking them
in numpy advances every (row, tree) pair one level per pass: a dozen passes of array operations over
``rows x trees`` elements, about 0.6 ms per row for the 3,200 trees of a packaged host model's gap head.
Annealing evaluates 64 proposals per step, so that walk was most of a step (issue 25).

Here the same trees are laid out again (:class:`Layout`): the two children of every split side by side, so a
step down is ``node = child[node] + (not x[feature] <= threshold)`` with no branch, and every leaf points to
itself (``child = leaf - 1`` with a NaN threshold, which always steps by one). The compiled loop (numba) takes one
tree at a time and advances all rows one level per pass (independent loads the processor overlaps) until every
row stands on a leaf, then adds each row's leaf onto its forest's sum; many rows go in blocks of :data:`BLOCK`, each
block through every tree before the next, so its inputs stay in cache. Trees are
added in order onto each forest's baseline: the sequential sum :meth:`ForestStack.predict` computes with
``np.cumsum``, so the floats are the same bit for bit (``tests/test_forest_stack.py``).

numba is a dependency of the package; where it cannot be imported (a platform without its wheels) or
``INVDESIGN_NUMBA=0``, :func:`walk` returns None and the caller walks in numpy. numba caches the compiled
function on disk (``cache=True``), so only the first process on a machine pays its compilation (seconds);
loading it costs a process about half a second, so a few rows walked once (a ``predict`` of a handful of
structures) stay in numpy unless the kernel is loaded already (:func:`invdesign.predict.gap.use_compiled`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

_KERNEL = None  # the compiled function; False where numba is unavailable or switched off
BLOCK = 256  # rows walked through every tree before the next rows (a block of inputs stays in cache)


@dataclass
class Layout:
    """Trees re-laid for a branch-free walk. Node arrays ``(nodes,)``: ``feature`` (int32 column), ``threshold``
    (float64; NaN at leaves), ``child`` (int32: the left child, the right one at ``child + 1``; a leaf's own
    index minus one), ``value`` (float64 leaf value); per tree ``(trees,)``: ``root`` (int32), ``depth`` (int32
    levels to its deepest leaf), ``forest`` (int32 forest it adds to)."""

    feature: np.ndarray
    threshold: np.ndarray
    child: np.ndarray
    value: np.ndarray
    root: np.ndarray
    depth: np.ndarray
    forest: np.ndarray
    #: ``(p_used,)`` the input columns some split reads, ascending; ``feature`` numbers columns within them
    columns: np.ndarray | None = None

    @property
    def link(self) -> np.ndarray:
        """``(nodes, 2)`` int64 ``[feature, child]`` of each node side by side (one cache line per step: ~10 % faster)."""
        if "_link" not in self.__dict__:
            self._link = np.stack([self.feature.astype(np.int64), self.child.astype(np.int64)], axis=1)
        return self._link

    @classmethod
    def make(cls, feature, threshold, left, right, leaf, value, roots, forest) -> Layout:
        """From flat node arrays with explicit ``left``/``right`` child indices, ``leaf`` flags and tree ``roots``
        (:class:`~invdesign.predict.gap.ForestStack`'s); vectorised level by level over all trees."""
        leaf = np.asarray(leaf, bool)
        n_nodes, T = len(leaf), len(roots)
        f_new = np.zeros(n_nodes, np.int32)
        t_new = np.full(n_nodes, np.nan)
        c_new = np.zeros(n_nodes, np.int32)
        v_new = np.zeros(n_nodes)
        depth = np.zeros(T, np.int32)
        old = np.asarray(roots, np.int64)
        new = np.arange(T, dtype=np.int64)
        tree = np.arange(T, dtype=np.int64)
        free, level = T, 0
        while len(old):
            lf = leaf[old]
            lo, ln = old[lf], new[lf]
            c_new[ln] = ln - 1
            v_new[ln] = np.asarray(value)[lo]
            io, inn, it = old[~lf], new[~lf], tree[~lf]
            k = len(io)
            base = free + 2 * np.arange(k, dtype=np.int64)
            f_new[inn] = np.asarray(feature)[io]
            t_new[inn] = np.asarray(threshold)[io]
            c_new[inn] = base
            depth[it] = level + 1
            free += 2 * k
            old = np.stack([np.asarray(left)[io], np.asarray(right)[io]], axis=1).ravel()
            new = np.stack([base, base + 1], axis=1).ravel()
            tree = np.repeat(it, 2)
            level += 1
        if free != n_nodes:
            raise ValueError(f"tree arrays are not binary trees from the roots ({free} of {n_nodes} nodes reached)")
        split = ~np.isnan(t_new)
        columns = np.unique(f_new[split]).astype(np.int64)  # the walk reads these columns only (a narrower X in cache)
        f_new = np.where(split, np.searchsorted(columns, f_new), 0).astype(np.int32)
        return cls(f_new, t_new, c_new, v_new, np.arange(T, dtype=np.int32), depth, np.asarray(forest, np.int32), columns)


def _kernel():
    global _KERNEL
    if _KERNEL is None:
        if os.environ.get("INVDESIGN_NUMBA", "1").strip().lower() in ("0", "false", "no", "off"):
            _KERNEL = False
            return None
        try:
            import numba
        except ImportError:  # no numba on this platform: the numpy walk
            _KERNEL = False
            return None

        def _walk(X, link, threshold, value, root, depth, forest, baselines, out, node):  # pragma: no cover
            n = X.shape[0]
            for m in range(baselines.shape[0]):
                for r in range(n):
                    out[m, r] = baselines[m]
            for t in range(root.shape[0]):
                for r in range(n):
                    node[r] = root[t]
                for _ in range(depth[t]):
                    live = False  # some row not yet at a leaf (a leaf's threshold is NaN)
                    for r in range(n):
                        nd = node[r]
                        th = threshold[nd]
                        live |= th == th
                        node[r] = link[nd, 1] + (0 if X[r, link[nd, 0]] <= th else 1)
                    if not live:
                        break
                m = forest[t]
                for r in range(n):
                    out[m, r] += value[node[r]]

        try:  # compiled once per machine, cached beside the module or in the user's cache folder
            _KERNEL = numba.njit(cache=True, nogil=True, boundscheck=False)(_walk)
        except RuntimeError:  # no writable cache location: compile in every process (the same floats)
            _KERNEL = numba.njit(cache=False, nogil=True, boundscheck=False)(_walk)
    return _KERNEL or None


def loaded() -> bool:
    """Whether the compiled walk is loaded in this process already (then it is the cheapest walk at any size)."""
    return callable(_KERNEL)


def available() -> bool:
    """Whether the compiled walk runs here (numba importable and not switched off by ``INVDESIGN_NUMBA=0``)."""
    return _kernel() is not None


def walk(X: np.ndarray, layout: Layout, baselines: np.ndarray, gathered: bool = False) -> np.ndarray | None:
    """``(M, N)`` each forest's raw prediction of rows ``X (N, p)``, or None without numba.

    ``baselines (M,)``: each forest's starting value; the trees of ``layout`` are added in their order.
    ``gathered``: ``X`` holds only the layout's ``columns``, in their order (a caller that builds just those).
    """
    k = _kernel()
    if k is None:
        return None
    X = np.asarray(X, dtype=np.float64)
    X = np.ascontiguousarray(X if layout.columns is None or gathered else X[:, layout.columns])
    base = np.asarray(baselines, np.float64)
    out = np.empty((len(base), len(X)))
    node = np.empty(min(BLOCK, len(X)), np.int64)
    for r0 in range(0, len(X), BLOCK):  # each block through every tree: its inputs stay in cache
        b = min(BLOCK, len(X) - r0)
        part = out if b == len(X) else np.empty((len(base), b))  # the kernel writes contiguous rows
        k(X[r0 : r0 + b], layout.link, layout.threshold, layout.value, layout.root, layout.depth, layout.forest, base,
          part, node[:b])
        if part is not out:
            out[:, r0 : r0 + b] = part
    return out
