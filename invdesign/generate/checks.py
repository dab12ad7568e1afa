"""Checks on candidate configurations: validity, re-embedding, predictions, window, novelty.

:class:`~invdesign.generate.window.Window` (the target box, eV) lives in its own module.
:func:`check_candidates` gives one row per candidate with the model's predictions
(mean and std, eV, best head), the probability of lying in the window under independent
Gaussians, the distance of the predicted mean to the window, novelty against the model's
training set and the embedding distance to the nearest known configuration. Candidates whose
composition never occurs in the training set, or whose embedding lies further from every known
configuration than 99% of training configurations do from their nearest neighbour, or that hold
a defect pair (type pair x pair orbit) no training configuration has (``unseen_clusters``: its
contribution is missing from the cluster-count heads' prediction), are flagged ``extrapolation``.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import pandas as pd

from invdesign.data.dataset import TARGETS
from invdesign.generate.decoder import Limits, validate
from invdesign.generate.window import Window
from invdesign.lattice.canonical import canonical_keys
from invdesign.lattice.enumerate import compositions


class KnownSet:
    """The model's training configurations: canonical keys, compositions and embeddings."""

    def __init__(self, model) -> None:
        self.model = model
        occ = np.asarray(model.train_occ)
        self.keys = canonical_keys(occ, model.host) if len(occ) else []
        self.key_set = set(self.keys)
        self.compositions = {tuple(c) for c in compositions(occ, model.host)} if len(occ) else set()
        self.z = _cached_train_embedding(model, occ) if len(occ) else np.zeros((0, 1))

    def nearest(self, z: np.ndarray, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(N,)`` index of and distance to the nearest known configuration in embedding space."""
        z = np.asarray(z, float)
        if len(self.z) == 0:
            return np.full(len(z), -1), np.full(len(z), np.inf)
        sq = (self.z**2).sum(1)
        idx = np.empty(len(z), dtype=np.int64)
        dist = np.empty(len(z))
        step = max(1, 2_000_000 // len(self.z))
        for s in range(0, len(z), step):
            q = z[s : s + step]
            d2 = np.maximum((q**2).sum(1)[:, None] + sq[None, :] - 2 * q @ self.z.T, 0.0)
            if exclude_self:
                d2[np.arange(len(q)), np.arange(s, s + len(q))] = np.inf
            j = d2.argmin(axis=1)
            idx[s : s + step] = j
            dist[s : s + step] = np.linalg.norm(self.z[j] - q, axis=1)
        return idx, dist

    @cached_property
    def far_threshold(self) -> float:
        """99th percentile of training configurations' distance to their nearest other one."""
        if len(self.z) < 2:
            return math.inf
        _, d = self.nearest(self.z, exclude_self=True)
        return float(np.quantile(d, 0.99))


def _cached_train_embedding(model, occ: np.ndarray) -> np.ndarray:
    """``model.embed(occ)`` of the training set, cached on disk per embedding and training set."""
    import hashlib
    import os
    import tempfile

    from invdesign.data.dataset import cache_dir
    from invdesign.generate.decoder import _model_tag, stored_table

    if np.array_equal(occ, np.asarray(model.train_occ)):
        z = stored_table(model, "train_z", len(occ))
        if z is not None:
            return z
    h = hashlib.sha256(_model_tag(model, model.host).encode())
    h.update(np.ascontiguousarray(occ, dtype=np.uint8).tobytes())
    path = cache_dir() / f"known-{h.hexdigest()[:20]}.npy"
    if path.is_file():
        try:
            z = np.load(path, allow_pickle=False)
            if z.shape[0] == len(occ):
                return z
        except (OSError, ValueError):
            pass
    z = np.concatenate([np.asarray(model.embed(occ[s : s + 4096]), float) for s in range(0, len(occ), 4096)])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, z)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs time
    return z


_KNOWN: dict[int, tuple[object, KnownSet]] = {}


def known_set(model) -> KnownSet:
    """:class:`KnownSet` of ``model`` (built once per model object)."""
    hit = _KNOWN.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    ks = KnownSet(model)
    _KNOWN[id(model)] = (model, ks)
    return ks


def check_candidates(
    occ: np.ndarray,
    model,
    window: Window,
    limits: Limits,
    z: np.ndarray | None = None,
    z_sampled: np.ndarray | None = None,
    keys: list[str] | None = None,
    prediction: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """One row of checks per candidate (no rank/id/source yet).

    Args:
        occ: ``(N, n_sites)`` candidate configurations.
        model: the model (``embed``, ``predict_embedding``/``predict``, ``train_occ``).
        window: the target window.
        limits: the constraints the candidates must satisfy.
        z: ``(N, d)`` embeddings of ``occ`` when already known (else computed).
        z_sampled: ``(N, d)`` embeddings the candidates were decoded from (for ``reembed_distance``); None where
            the candidates themselves were scored (exhaustive, pool, anneal): their ``reembed_distance`` is 0.
        keys: canonical keys when already known.
        prediction: ``(mean, std)`` ``(N, window.n_targets)`` when already known (eV; a moment window adds
            ``total_mag``, Bohr magnetons per cell, as :meth:`Window.predict` gives it).

    Returns:
        DataFrame with ``canonical_key``, the predictions and stds (eV; with a moment window also ``total_mag``,
        ``total_mag_std`` and ``total_mag_std_effective``, Bohr magnetons per cell), ``p_in_window``,
        ``window_distance`` (eV), ``n_defects``, ``composition``, ``within_limits``,
        ``reembed_distance``, ``novel``, ``nearest_known_distance``, ``nearest_known_key``,
        ``unseen_clusters`` (defect pairs with no training example: the ridge head serves their
        contribution from the distance-decaying pair prior, its std included), ``extrapolation`` (composition never trained on, far from every known
        configuration in embedding space, or an unseen cluster), ``homo_lumo_gap_validated`` (False
        beyond the trained density or composition: the gap is bounded but unvalidated, its std the
        uninformed one; models with a ``gap_validated`` method), ``formation_energy_reference`` (what the
        formation energy is: the DFT-trained model, or above 3 defects that plus the correction toward
        corrected CHGNet; models with a ``fe_reference`` method).
    """
    host = model.host
    occ = np.asarray(occ)
    keys = keys if keys is not None else canonical_keys(occ, host)
    if z is None:
        z = np.asarray(model.embed(occ), float) if len(occ) else np.zeros((0, 1))
    k = window.n_targets  # 2 (eV), or 3 with a moment window (total_mag, Bohr magnetons per cell)
    if prediction is None:
        mean, std = window.predict(model, occ) if len(occ) else (np.zeros((0, k)), np.zeros((0, k)))
    else:
        mean, std = prediction
    mean, std = np.asarray(mean, float).reshape(-1, k), np.asarray(std, float).reshape(-1, k)
    comp = compositions(occ, host)
    labels = [host.defect_label(*t) for t in host.defect_types]
    ks = known_set(model)
    nk, nd = ks.nearest(z)
    df = pd.DataFrame({"canonical_key": list(keys)})
    for j, name in enumerate(window.names):
        df[name] = mean[:, j]
    for j, name in enumerate(window.names):
        df[f"{name}_std"] = std[:, j]
    df["p_in_window"] = window.p_in(mean, std)
    df["window_distance"] = window.distance(mean)
    df["n_defects"] = comp.sum(axis=1)
    df["composition"] = [",".join(f"{labels[t]}:{c[t]}" for t in range(len(labels)) if c[t]) for c in comp]
    df["within_limits"] = validate(occ, host, limits)
    df["reembed_distance"] = (
        np.linalg.norm(z - np.asarray(z_sampled, float), axis=1) if z_sampled is not None else np.zeros(len(occ))
    )
    df["novel"] = [k not in ks.key_set for k in keys]
    df["nearest_known_distance"] = nd
    df["nearest_known_key"] = [ks.keys[i] if i >= 0 else "" for i in nk]
    unseen = np.array([tuple(c) not in ks.compositions for c in comp], dtype=bool)
    if hasattr(model, "unseen_clusters"):
        df["unseen_clusters"] = np.asarray(model.unseen_clusters(occ), dtype=np.int64) if len(occ) else np.zeros(0, int)
    else:  # a predictor that does not read cluster features
        df["unseen_clusters"] = 0
    far = nd > ks.far_threshold
    flag = unseen | far | (df["unseen_clusters"].to_numpy() > 0)
    reasons = _reasons(comp.sum(axis=1), df["composition"].tolist(), unseen, df["unseen_clusters"].to_numpy(), far, nd, ks)
    if hasattr(model, "cell_reasons") and len(occ):  # served on a larger cell than trained: always an extrapolation
        reasons = [f"{c}; {r}" if r else c for c, r in zip(model.cell_reasons(occ), reasons)]
        flag = np.ones(len(occ), dtype=bool)
    if hasattr(model, "served_reasons") and len(occ):  # rows whose serving model judges its own training domain
        for i, r in enumerate(model.served_reasons(occ)):
            if r is not None:
                flag[i], reasons[i] = bool(r), r
    df["extrapolation"] = flag
    df["extrapolation_reason"] = reasons
    # flagged: p_in_window with each std inflated in quadrature by the training spread (EXTRAPOLATION_POLICY)
    spread = train_spread(model, k)
    eff = np.where(flag[:, None], np.sqrt(std**2 + spread[None, :] ** 2), std) if len(std) else std
    for j, name in enumerate(window.names):
        df[f"{name}_std_effective"] = eff[:, j] if len(eff) else np.zeros(0)
    df["p_in_window"] = window.p_in(mean, eff) if len(eff) else np.zeros(0)
    if hasattr(model, "gap_validated"):  # False: more defects or a composition than trained (the gap std says how much)
        df["homo_lumo_gap_validated"] = np.asarray(model.gap_validated(occ), dtype=bool) if len(occ) else np.zeros(0, bool)
    if hasattr(model, "fe_reference"):  # DFT-trained model, or + the high-density correction toward corrected CHGNet
        df["formation_energy_reference"] = model.fe_reference(occ) if len(occ) else []
    return df


EXTRAPOLATION_POLICY = (
    "a candidate flagged `extrapolation` (reason in `extrapolation_reason`) has its p_in_window, and so its rank, "
    "computed with each std inflated in quadrature by the training-set standard deviation of that target "
    "(`<target>_std_effective` = sqrt(std^2 + sd_train^2)): outside the training domain the model is trusted no "
    "more than the spread of the data; `<target>_std` is the model's own std"
)


def train_spread(model, n_targets: int = len(TARGETS)) -> np.ndarray:
    """``(n_targets,)`` standard deviation (eV) of the model's training targets (0 where unknown); with
    ``n_targets=3`` also that of the training ``total_mag`` (Bohr magnetons per cell, ``model.train_moment``)."""
    y = np.asarray(getattr(model, "train_y", np.zeros((0, len(TARGETS)))), float).reshape(-1, len(TARGETS))
    out = np.zeros(len(TARGETS)) if len(y) < 2 else np.nan_to_num(np.nanstd(y, axis=0), nan=0.0)
    if n_targets > len(TARGETS):
        mag = np.asarray(getattr(model, "train_moment", np.zeros(0)), float)
        sd = float(np.nanstd(mag)) if np.isfinite(mag).sum() >= 2 else 0.0
        out = np.append(out, sd)
    return out


def _reasons(n_def, comp_text, unseen, unseen_clusters, far, nd, ks) -> list[str]:
    """One reason string per candidate ('' when not flagged)."""
    kmax = max((sum(c) for c in ks.compositions), default=0)
    thr = ks.far_threshold
    out = []
    for k, ct, u, uc, f, d in zip(n_def, comp_text, unseen, unseen_clusters, far, nd):
        why = []
        if u:
            why.append(f"{int(k)} defects > {kmax} seen in training" if k > kmax else f"composition {ct or 'pristine'} not in training")
        if uc:
            why.append(f"{int(uc)} defect pair cluster(s) not in training")
        if f:
            why.append(f"embedding distance {d:.3g} to the nearest training configuration > {thr:.3g} (99th percentile)")
        out.append("; ".join(why))
    return out


def rank_with_diversity(
    score: np.ndarray, z: np.ndarray, n: int, diversity: float = 0.1, scale: float | None = None
) -> np.ndarray:
    """Greedy ranking of the ``n`` best by ``score`` with a diversity penalty.

    At each step take ``argmax score_i - diversity * exp(-d_i / scale)``, where ``d_i`` is the
    embedding distance of candidate ``i`` to the nearest already taken one; ``diversity=0`` is a
    plain sort. ``scale`` defaults to the median nearest-neighbour distance among the candidates.

    Returns:
        ``(min(n, N),)`` indices in rank order.
    """
    score = np.asarray(score, float)
    n = min(n, len(score))
    if diversity <= 0 or n <= 1:
        return np.argsort(-score, kind="stable")[:n]
    z = np.asarray(z, float)
    if scale is None:
        sub = z[np.argsort(-score, kind="stable")[: min(len(z), 400)]]
        d = np.linalg.norm(sub[:, None] - sub[None], axis=2) if len(sub) > 1 else np.ones((1, 1))
        np.fill_diagonal(d, np.inf)
        scale = float(np.median(d.min(axis=1))) if len(sub) > 1 else 1.0
        scale = scale if scale > 0 else 1.0
    mind = np.full(len(score), np.inf)
    taken = np.zeros(len(score), dtype=bool)
    out = []
    for _ in range(n):
        eff = score - diversity * np.exp(-mind / scale)
        eff[taken] = -np.inf
        i = int(np.argmax(eff))
        out.append(i)
        taken[i] = True
        mind = np.minimum(mind, np.linalg.norm(z - z[i], axis=1))
    return np.array(out, dtype=np.int64)
