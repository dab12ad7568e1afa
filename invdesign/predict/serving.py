"""What ``predict`` serves, and a torch-free way to load just that.

:class:`Predictor` is the serving logic shared by the full :class:`invdesign.model.Model` and by
:class:`ServingModel`: property means and stds from the serving head of each target (a ridge on
exact cluster counts and/or the bounded gap head; the deep ensemble only where it serves), the
gap-validity mask and the extrapolation reasons, which use training-set statistics
(:class:`TrainStats`).

:class:`ServingModel` holds only those arrays (no encoder, no flow) and loads without importing
torch or scikit-learn: :func:`invdesign.predictor.load_predictor` derives it from a model file once
(through the full model) and caches it here (:func:`serving_cache_path`) in ``$INVDESIGN_CACHE_DIR`` (default ``~/.cache/invdesign``) under the model
file's SHA-256, so the cache can never go stale: a retrained model file has another hash. Its
predictions are the full model's, bit for bit (``tests/test_serving.py``). ``INVDESIGN_FAST_PREDICT=0``
switches it off (the full model is loaded instead; the benchmark's "before" figures).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from invdesign.errors import InvdesignError
from invdesign.lattice.enumerate import compositions
from invdesign.lattice.host import HostLattice
from invdesign.predict.features import cluster_counts
from invdesign.predict.gap import BoundedGapHead, _Forest, unvalidated_std
from invdesign.predict.hd_correction import REFERENCE, HDCorrection, fe_head_fingerprint
from invdesign.predict.hd_correction import resource_path as hd_resource_path
from invdesign.predict.heads import RidgeHead
from invdesign.predict.pair_prior import PRIOR_VERSION, PairPrior

#: Version of the cached serving file's layout (part of its name).
CACHE_FORMAT = 3

PRISTINE_NOTE = "no defects: the formation energy per defect site is undefined (NaN)"


def n_defects(occ: np.ndarray, host: HostLattice) -> np.ndarray:
    """``(N,)`` number of sites of ``(N, n_sites)`` occupancies that differ from the host."""
    return (np.asarray(occ) != host.host_code[None, :]).sum(axis=1)


@dataclass
class TrainStats:
    """What the extrapolation flags need of the training set.

    Attributes:
        kmax: most defects in one training configuration.
        compositions: ``(C, T)`` int64 distinct defect-type counts of the training configurations.
        seen_clusters: ``(F,)`` bool, cluster-count columns nonzero in some training configuration.
    """

    kmax: int
    compositions: np.ndarray
    seen_clusters: np.ndarray

    @classmethod
    def of(cls, train_occ: np.ndarray, host: HostLattice) -> TrainStats:
        occ = np.asarray(train_occ)
        kmax = int(n_defects(occ, host).max()) if len(occ) else 0
        comps = np.unique(compositions(occ, host), axis=0).astype(np.int64) if len(occ) else np.zeros((0, len(host.defect_types)), np.int64)
        return cls(kmax, comps, (cluster_counts(occ, host) != 0).any(axis=0))

    def composition_set(self) -> set[tuple[int, ...]]:
        return {tuple(int(v) for v in c) for c in self.compositions}


class Predictor(ABC):
    """The serving logic; subclasses provide ``host``, ``heads``, ``meta`` and :meth:`train_stats`."""

    host: HostLattice
    heads: dict
    meta: dict

    @property
    def targets(self) -> tuple[str, ...]:
        from invdesign.data.dataset import TARGETS

        return tuple(self.meta.get("targets", TARGETS))

    @abstractmethod
    def train_stats(self) -> TrainStats:
        """Training-set statistics of the extrapolation flags (:class:`TrainStats`)."""

    def cluster_features(self, occ: np.ndarray) -> np.ndarray:
        """``(N, F)`` the heads' input: exact cluster counts on :attr:`host` (a model moved to a larger
        cell maps them onto the trained cell's, :mod:`invdesign.predict.transfer`)."""
        return cluster_counts(occ, self.host)

    def fe_terms(self) -> tuple[PairPrior | None, HDCorrection | None, str]:
        """``(pair prior, high-density correction, status)`` of the served formation energy.

        Both exist only where the ridge head serves the formation energy: the prior is derived from
        that head (:meth:`PairPrior.fit`); the correction is the packaged one
        (:func:`invdesign.predict.hd_correction.resource_path`) when it was fitted on this very head
        (:func:`fe_head_fingerprint`), else None and ``status`` says why. Computed once per object.
        """
        prior, corr, status = self._derived_fe_terms()
        if self.high_density_model() is not None:  # above 3 defects the DFT host model serves, not the correction
            return prior, None, "replaced by the DFT host model above 3 defects"
        return prior, corr, status

    def prediction_digest(self) -> str | None:
        """SHA-256 of what :meth:`predict` reads besides the code and the packaged resources: the class, the
        host, the metadata, every head and the training configurations and targets (``train_occ``,
        ``train_y``) or stored training statistics; None where some attribute is of a kind that cannot be
        hashed by content. Caches derived from those (:data:`DERIVED_ATTRS`) are left out, so the digest is
        the same before and after serving. Keys the disk cache of the exhaustive screen
        (:mod:`invdesign.generate.screen_cache`)."""
        h = hashlib.sha256(f"{type(self).__module__}.{type(self).__qualname__}".encode())
        try:
            uc = self.host.unit_cell
            host = {"lattice": uc.lattice.matrix, "frac": uc.frac_coords, "species": [str(x.specie) for x in uc],
                    "matrix": np.asarray(self.host.matrix), "substituents": self.host.substituents,
                    "symprec": getattr(self.host, "symprec", None), "fingerprint": self.host.fingerprint}
            parts = {"host": host, "meta": self.meta, "heads": self.heads}
            for name in ("train_occ", "train_y", "_stats"):
                if name in vars(self):
                    parts[name] = vars(self)[name]
            if type(self).__name__ == "ServingModel":  # its prior and correction are stored state, not derived
                parts["fe_terms"] = vars(self).get("_fe_terms")
            _feed(h, parts)
        except _Unhashable:
            return None
        return h.hexdigest()

    def _derived_fe_terms(self) -> tuple[PairPrior | None, HDCorrection | None, str]:
        """The prior and correction as derived for this head, whatever serves above 3 defects (what a serving
        cache stores; a cached serving model brings them precomputed)."""
        if getattr(self, "_fe_terms", None) is None:
            self._fe_terms = derive_fe_terms(self)
        return self._fe_terms

    def high_density_model(self):
        """The packaged DFT host model (:mod:`invdesign.predict.defect_env`, trained on 2DMD MoS2 at 1-24 defects)
        that serves configurations of more than :data:`HD_MIN` - 1 defects on 8x8 MoS2, or None (another host, or
        ``INVDESIGN_HD_MODEL=0``: the earlier serving, the correction toward corrected CHGNet). Loaded once."""
        if os.environ.get("INVDESIGN_HD_MODEL", "1") == "0":
            return None
        if not hasattr(self, "_hd_model"):
            self._hd_model = packaged_hd_model(self)
        return self._hd_model

    def _hd_rows(self, occ: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: rows the high-density host model serves."""
        if self.high_density_model() is None:
            return np.zeros(len(occ), bool)
        return n_defects(occ, self.host) >= HD_MIN

    def _fe_served(self, X: np.ndarray, mean: np.ndarray, std: np.ndarray | None, k: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-site formation energy and std ``(N,)`` from the head's total ``mean, std (N,)`` (eV per cell):
        plus the pair prior of unseen pair classes (total), divided by ``k`` defects, plus the
        high-density correction (per site, from its ``min_defects`` on); stds in quadrature. Where the
        correction applies, the prior adds its mean but not its std: the correction was fitted on the
        residuals of exactly that mean and its std (validated by cross-validation there) covers what the
        unseen pairs leave. Rows the extra terms do not touch are returned bit for bit. ``std`` None:
        the mean alone (same value), std None."""
        prior, corr, _ = self.fe_terms() if self.serving_heads().get(self.targets[0]) == "ridge_ce" else (None, None, "")
        if std is None:  # the mean alone: the same terms, no variances
            mean = np.array(mean, dtype=float)
            if prior is not None:
                pm, _ = prior.contribution(X)
                mean = np.where(pm != 0, mean + pm, mean)
            mean = mean / k
            if corr is not None:
                cm, on = corr.predict_mean(X)
                mean = np.where(on, mean + cm, mean)
            return mean, None
        mean, std = np.array(mean, dtype=float), np.array(std, dtype=float)
        cm, cs = corr.predict(X) if corr is not None else (np.zeros(len(mean)), np.zeros(len(mean)))
        if prior is not None:
            pm, ps = prior.contribution(X)
            mean = np.where(pm != 0, mean + pm, mean)
            std = np.where((ps > 0) & (cs == 0), np.hypot(std, ps), std)
        mean, std = mean / k, std / k
        on = cs > 0
        mean = np.where(on, mean + cm, mean)
        std = np.where(on, np.hypot(std, cs), std)
        return mean, std

    def _check(self, occ) -> np.ndarray:
        occ = np.asarray(occ)
        if occ.ndim == 1:
            occ = occ[None]
        if occ.ndim != 2 or occ.shape[1] != self.host.n_sites:
            raise InvdesignError(f"configurations must be (N, {self.host.n_sites}) for {self.host.name}; got {occ.shape}")
        return occ.astype(np.uint8, copy=False)

    def serving_heads(self) -> dict[str, str]:
        """``{target: head}``: the head whose column :meth:`predict` serves for each target."""
        serving = self.meta.get("serving", {})
        out = {}
        for t in self.targets:
            if t == "homo_lumo_gap" and "gap_gbt" in self.heads:
                out[t] = "gap_gbt"
            elif serving.get(t) == "ridge_ce" and "ridge_ce" in self.heads:
                out[t] = "ridge_ce"
            else:
                out[t] = "ensemble_ce"
        return out

    def predict(self, occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std ``(N, 2)`` in eV (TARGETS order) from the serving head of each target.

        Formation energy: the deep ensemble (``ensemble_ce``; std = calibrated ensemble spread) or
        ridge (``ridge_ce``; std = its calibrated predictive std) on exact cluster counts, whichever
        is better on val (``meta["serving"]``); predicted as the total formation energy and divided
        by the number of defects here (pristine cells count as one). Where the ridge head serves, pair
        classes no training configuration has get the distance-decaying prior of :mod:`invdesign.predict.pair_prior`
        (mean added, std in quadrature), and configurations with more than 3 defects the high-density
        correction toward corrected CHGNet (:mod:`invdesign.predict.hd_correction`; :meth:`fe_terms`;
        its std in quadrature replaces the prior's there, see :meth:`_fe_served`).

        Gap: the bounded head (``gap_gbt``, :class:`invdesign.predict.gap.BoundedGapHead`) whenever
        the model has one: the served gap lies in ``(0, eg_max)`` for any configuration, its std is
        conformally calibrated on val per defect count, and where the gap is not validated
        (:meth:`gap_validated`: more defects than trained, or an untrained composition) the std is
        at least that of a gap known only to lie in the bounds, ``eg_max / sqrt(12)``.
        A head whose columns are all served by others is not evaluated.
        """
        occ = self._check(occ)
        hd = self._hd_rows(occ)
        if hd.any():  # more than 3 defects on 8x8 MoS2: the DFT host model (1-24 defects, 2DMD low + high density)
            mean = np.zeros((len(occ), len(self.targets)))
            std = np.zeros_like(mean)
            hm, hs, _ = self.high_density_model().predict(occ[hd])
            mean[hd], std[hd] = hm[:, :2], hs[:, :2]
            if (~hd).any():
                mean[~hd], std[~hd] = self.predict(occ[~hd])
            return mean, std
        X = self.cluster_features(occ)
        which = self.serving_heads()
        mean = np.zeros((len(occ), len(self.targets)))
        std = np.zeros_like(mean)
        for head in ("ensemble_ce", "ridge_ce"):
            cols = [j for j, t in enumerate(self.targets) if which[t] == head]
            if cols:
                m, s = self.heads[head].predict(X)
                mean[:, cols], std[:, cols] = m[:, cols], s[:, cols]
        if "gap_gbt" in which.values():
            j = self.targets.index("homo_lumo_gap")
            head = self.heads["gap_gbt"]
            mean[:, j], std[:, j] = head.predict(X)
            std[:, j] = np.where(self.gap_validated(occ), std[:, j], np.maximum(std[:, j], unvalidated_std(head.eg_max)))
        k = np.maximum(n_defects(occ, self.host), 1).astype(float)
        mean[:, 0], std[:, 0] = self._fe_served(X, mean[:, 0], std[:, 0], k)
        return mean, std

    def predict_target(self, occ: np.ndarray, target: str, with_std: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean and std ``(N,)`` in eV of one target, exactly as :meth:`predict` serves it; only that
        target's head runs (arrangement energies need the formation energy alone).

        ``with_std=False``: the mean alone (std None), by the head's cheaper mean-only path where it
        has one (ridge heads: equal up to round-off); Monte Carlo over thousands of arrangements uses it.
        """
        if target not in self.targets:
            raise InvdesignError(f"unknown target {target!r}; the model predicts {list(self.targets)}")
        occ = self._check(occ)
        j = self.targets.index(target)
        hd = self._hd_rows(occ)
        if hd.any():  # the DFT host model's rows (only this target's ensemble runs)
            mean = np.zeros(len(occ))
            std = np.zeros(len(occ)) if with_std else None
            hm, hs, _ = self.high_density_model().predict(occ[hd], targets=(j,))
            mean[hd] = hm[:, j]
            if with_std:
                std[hd] = hs[:, j]
            if (~hd).any():
                m, s_ = self.predict_target(occ[~hd], target, with_std)
                mean[~hd] = m
                if with_std:
                    std[~hd] = s_
            return mean, std
        head = self.serving_heads()[target]
        X = self.cluster_features(occ)
        if not with_std and hasattr(self.heads[head], "folded"):  # a linear head's mean alone (no leverage)
            coef, b = self.heads[head].folded()
            mean, std = X.astype(np.float64) @ coef[:, j] + b[j], None
        elif head == "gap_gbt":
            gh = self.heads["gap_gbt"]
            mean, std = gh.predict(X)
            std = np.where(self.gap_validated(occ), std, np.maximum(std, unvalidated_std(gh.eg_max)))
        else:
            m, s = self.heads[head].predict(X)
            mean, std = m[:, j], s[:, j]
        mean = np.array(mean, dtype=float)
        std = np.array(std, dtype=float) if with_std else None
        if j == 0:  # formation energy: predicted per cell, served per defect site (pristine cells count as one)
            k = np.maximum(n_defects(occ, self.host), 1).astype(float)
            mean, std = self._fe_served(X, mean, std, k)
        return mean, std

    def gap_validated(self, occ: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: the gap prediction is inside what the training data validates.

        False for more defects than any training configuration has, or a composition (defect
        counts per type) no training configuration has. Such gaps are served (bounded, with the
        uninformed std, see :meth:`predict`) but no data checks them.
        """
        occ = self._check(occ)
        stats = self.train_stats()
        seen = stats.composition_set()
        comp_ok = np.array([tuple(int(v) for v in c) in seen for c in compositions(occ, self.host)], dtype=bool)
        out = (n_defects(occ, self.host) <= stats.kmax) & comp_ok
        hd = self._hd_rows(occ)
        if hd.any():  # the host model: validated where its density band had calibration data and the count was trained
            out[hd] = self.high_density_model().predict(occ[hd])[2][:, 1]
        return out

    def unseen_clusters(self, occ: np.ndarray) -> np.ndarray:
        """``(N,)`` number of cluster features (defect types, defect pairs per pair orbit) of each
        configuration that no training configuration has.

        The property heads read exact cluster counts; a cluster absent from the training set has no
        fitted weight (ridge: minimum-norm zero; ensemble: the column is dropped), so its
        contribution is simply missing from the prediction. ``> 0`` is exactly "the feature vector
        leaves the span of the training features" (checked on all 13,609 enumerated orbits).
        """
        occ = self._check(occ)
        seen = self.train_stats().seen_clusters
        return (self.cluster_features(occ)[:, ~seen] != 0).sum(axis=1)

    def extrapolation(self, occ: np.ndarray) -> list[str]:
        """One reason string per configuration ('' when inside the training domain).

        Flags more defects than any training configuration, compositions never trained on, and
        defect pairs (type pair x pair orbit) never seen in training (:meth:`unseen_clusters`).
        """
        occ = self._check(occ)
        unseen = self.unseen_clusters(occ)
        k = n_defects(occ, self.host)
        stats = self.train_stats()
        seen = stats.composition_set()
        labels = [self.host.defect_label(s, c) for s, c in self.host.defect_types]
        served = self.serving_heads().get(self.targets[0]) == "ridge_ce"
        prior, corr, _ = self.fe_terms() if served else (None, None, "")
        out = []
        hd = self._hd_rows(occ)
        hd_why = dict(zip(np.flatnonzero(hd).tolist(), _host_model_reasons(self.high_density_model(), occ[hd]))) if hd.any() else {}
        for i, (kk, comp, u) in enumerate(zip(k, compositions(occ, self.host), unseen)):
            if i in hd_why:
                out.append(hd_why[i])
                continue
            why = []
            if kk > stats.kmax:
                why.append(f"{kk} defects > {stats.kmax} seen in training"
                           + (f" (formation energy: {REFERENCE}, validated on the high-density reference)"
                              if corr is not None and kk >= corr.min_defects else ""))
            elif tuple(int(v) for v in comp) not in seen:
                desc = "+".join(f"{n}{lab}" for n, lab in zip(comp, labels) if n) or "pristine"
                why.append(f"composition {desc} not in training")
            if u:
                why.append(f"{int(u)} defect pair cluster(s) not in training"
                           + (" (formation energy: distance-decaying pair prior, its std included)" if prior is not None else ""))
            out.append("; ".join(why))
        return out

    def served_reasons(self, occ: np.ndarray) -> list[str | None]:
        """Per configuration: the extrapolation reason of the model that serves it where that model judges its own
        domain (rows of the high-density host model: its trained defect-count range and types; '' inside), else None
        (design's candidate checks then apply their generic tests: composition, embedding distance, unseen pairs)."""
        occ = self._check(occ)
        hd = self._hd_rows(occ)
        out: list[str | None] = [None] * len(occ)
        if hd.any():
            for i, r in zip(np.flatnonzero(hd), _host_model_reasons(self.high_density_model(), occ[hd])):
                out[i] = r
        return out

    def fe_reference(self, occ: np.ndarray) -> list[str]:
        """What each served ``formation_energy_per_site`` is, in words: the DFT-trained model, or
        :data:`invdesign.predict.hd_correction.REFERENCE` where the high-density correction applies."""
        occ = self._check(occ)
        k = n_defects(occ, self.host)
        served = self.serving_heads().get(self.targets[0]) == "ridge_ce"
        _, corr, status = self.fe_terms() if served else (None, None, "")
        kmax = self.train_stats().kmax
        out = []
        hd = self._hd_rows(occ)
        for kk, h in zip(k, hd):
            if h:
                out.append(HD_REFERENCE)
            elif corr is not None and kk >= corr.min_defects:
                out.append(REFERENCE)
            elif kk > kmax:
                out.append(f"DFT-trained model, extrapolated beyond {kmax} defects (no correction: {status or 'not a ridge head'})")
            else:
                out.append("DFT-trained model (2DMD, PBE)")
        return out


#: configurations of at least this many defects on 8x8 MoS2 are served by the DFT host model
HD_MIN = 4
HD_REFERENCE = "DFT-trained host model (2DMD MoS2 low + high density, PBE)"


def packaged_hd_model(pred: Predictor):
    """The packaged MoS2 host model for the packaged 8x8 MoS2 model ``pred`` (else None): the host model records the
    formation-energy head it serves beside (``meta["serves_beside"]``, :func:`fe_head_fingerprint`), so a model a
    user trained keeps its own predictions (and flags) beyond its data."""
    from invdesign.lattice.hosts import packaged_host
    from invdesign.predict.host_serving import host_model_resource, packaged_host_model

    if pred.host.fingerprint != packaged_host("MoS2").fingerprint or not host_model_resource("MoS2").is_file():
        return None
    if "ridge_ce" not in getattr(pred, "heads", {}):
        return None
    hm = packaged_host_model("MoS2")
    if hm.meta.get("serves_beside") != fe_head_fingerprint(pred.heads["ridge_ce"], pred.train_stats().seen_clusters):
        return None
    return hm


def _host_model_reasons(model, occ: np.ndarray) -> list[str]:
    """Extrapolation reasons of a host model's rows (the trained defect-count range, unseen defect types)."""
    from invdesign.predict.host_serving import HostPredictor

    return HostPredictor(model).extrapolation(occ)


def derive_fe_terms(pred: Predictor) -> tuple[PairPrior | None, HDCorrection | None, str]:
    """:meth:`Predictor.fe_terms` computed from the predictor's ridge head and the packaged correction."""
    if pred.serving_heads().get(pred.targets[0]) != "ridge_ce" or "ridge_ce" not in pred.heads:
        return None, None, "the formation energy is not served by the ridge head"
    head = pred.heads["ridge_ce"]
    seen = np.asarray(pred.train_stats().seen_clusters, bool)
    try:
        prior = PairPrior.fit(np.asarray(head.W, dtype=float)[:, 0] / np.asarray(head.sd, dtype=float), seen, pred.host)
    except ValueError:  # a model trained on too few pair classes: unseen pairs stay flagged, without a prior
        prior = None
    corr = HDCorrection.load(pred.host)
    if corr is None:
        return prior, None, "no high-density correction is packaged"
    if corr.fingerprint != fe_head_fingerprint(head, seen):
        return prior, None, "the packaged high-density correction was fitted on another formation-energy head"
    return prior, corr, "applied"


def host_from_state(h: dict) -> HostLattice:
    """The host of a saved model: the packaged default when the fingerprints match, else rebuilt from its unit cell."""
    if h["fingerprint"] == HostLattice.default().fingerprint:
        return HostLattice.default()
    from pymatgen.core import Structure

    return HostLattice.from_unit_cell(Structure.from_str(h["unit_cell_cif"], fmt="cif"), np.array(h["matrix"]), h["substituents"])


#: Attributes that cache what other state, the code and the packaged resources determine: left out of
#: :meth:`Predictor.prediction_digest` (``_fe_terms`` of a :class:`ServingModel` is stored state and kept).
DERIVED_ATTRS = frozenset({"_fe_terms", "_hd_model", "_train_stats", "_trees", "_used", "_read_cols", "_stack",
                           "_invdesign_probe_tag"})


class _Unhashable(Exception):
    """An attribute whose content :func:`_feed` cannot hash."""


def _feed(h, o, depth: int = 0) -> None:
    """Hash ``o`` by content into ``h``: scalars, strings, numpy arrays, torch tensors and modules (their
    state), containers, and objects by their attributes (less :data:`DERIVED_ATTRS`); anything else raises
    :class:`_Unhashable`."""
    if depth > 16:
        raise _Unhashable("too deep")
    if o is None or isinstance(o, (bool, int, float, complex, str, bytes, np.generic)):
        h.update(f"{type(o).__name__}:{o!r};".encode())
        return
    if isinstance(o, np.ndarray):
        if o.dtype.hasobject:
            _feed(h, o.tolist(), depth + 1)
            return
        a = np.ascontiguousarray(o)
        h.update(f"nd{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
        return
    if isinstance(o, dict):
        h.update(f"dict{len(o)}{{".encode())
        for k in sorted(o, key=repr):
            _feed(h, k, depth + 1)
            _feed(h, o[k], depth + 1)
        h.update(b"}")
        return
    if isinstance(o, (list, tuple)):
        h.update(f"{type(o).__name__}{len(o)}[".encode())
        for x in o:
            _feed(h, x, depth + 1)
        h.update(b"]")
        return
    if isinstance(o, (set, frozenset)):
        _feed(h, sorted(o, key=repr), depth + 1)
        return
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(o, torch.Tensor):
        _feed(h, o.detach().cpu().numpy(), depth + 1)
        return
    if torch is not None and isinstance(o, torch.nn.Module):
        h.update(f"module:{type(o).__qualname__}:{o!r};".encode())  # its repr states the layers and their sizes
        _feed(h, dict(o.state_dict()), depth + 1)
        return
    d = getattr(o, "__dict__", None)
    if d is None or type(o).__module__.split(".")[0] not in ("invdesign", "sklearn"):
        raise _Unhashable(type(o).__qualname__)
    h.update(f"obj:{type(o).__module__}.{type(o).__qualname__}{{".encode())
    _feed(h, {k: v for k, v in d.items() if k not in DERIVED_ATTRS}, depth + 1)
    h.update(b"}")


def host_state(host: HostLattice) -> dict:
    """What :func:`host_from_state` needs (plain containers)."""
    return {"unit_cell_cif": host.unit_cell.to(fmt="cif"), "matrix": np.asarray(host.matrix).tolist(),
            "substituents": host.substituents, "fingerprint": host.fingerprint}


class ServingModel(Predictor):
    """The serving heads, host, metadata and training statistics of a model: what ``predict`` needs.

    Build with :meth:`from_model` or load with :func:`invdesign.predictor.load_predictor`; numpy only.
    """

    def __init__(self, host: HostLattice, heads: dict, meta: dict, stats: TrainStats) -> None:
        self.host, self.heads, self.meta, self._stats = host, heads, meta, stats

    def train_stats(self) -> TrainStats:
        return self._stats

    @classmethod
    def from_model(cls, model) -> ServingModel | None:
        """The serving part of a full model, or None where a deep ensemble serves (needs torch)."""
        if not isinstance(model, Predictor):
            return None
        which = model.serving_heads()
        if "ensemble_ce" in which.values():
            return None
        heads = {h: model.heads[h] for h in sorted(set(which.values()))}
        sm = cls(model.host, heads, model.meta, model.train_stats())
        sm._fe_terms = derive_fe_terms(sm)  # from the resource as it is now (the model object may be older)
        return sm

    # ------------------------------------------------------------------ plain arrays
    def arrays(self) -> dict[str, np.ndarray]:
        """Everything as named numpy arrays (strings as 0-d unicode arrays): no pickles."""
        st = self._stats
        out = {
            "meta": np.array(json.dumps(self.meta)),
            "host": np.array(json.dumps(host_state(self.host))),
            "stats/kmax": np.array(st.kmax),
            "stats/compositions": st.compositions,
            "stats/seen_clusters": st.seen_clusters,
        }
        prior, corr, status = self._derived_fe_terms()  # the switch INVDESIGN_HD_MODEL acts when serving, not here
        out["fe_terms/status"] = np.array(status)
        if prior is not None:
            out.update(prior.arrays("pair_prior/"))
        if corr is not None:
            out.update(corr.arrays("hd_correction/"))
        if "ridge_ce" in self.heads:
            r = self.heads["ridge_ce"]
            for k in ("mu", "sd", "ym", "W", "alpha", "rmse", "basis", "sv", "sigma"):
                if getattr(r, k, None) is not None:
                    out[f"ridge_ce/{k}"] = np.asarray(getattr(r, k), dtype=np.float64)
        if "gap_gbt" in self.heads:
            g = self.heads["gap_gbt"]
            out["gap_gbt/config"] = np.array(json.dumps(g.config()))
            out["gap_gbt/scale"] = np.array(float(g.scale))
            out["gap_gbt/scale_b"] = np.asarray(g.scale_b, dtype=np.float64)
            out["gap_gbt/s0"] = np.array(float(g.s0))
            for i, f in enumerate(g.forests):
                for k in (*_Forest.FIELDS, "roots"):
                    out[f"gap_gbt/{i}/{k}"] = getattr(f, k)
                out[f"gap_gbt/{i}/baseline"] = np.array(f.baseline)
        return out

    @classmethod
    def from_arrays(cls, a) -> ServingModel:
        """Inverse of :meth:`arrays` (``a``: a mapping such as an open ``np.load`` file)."""
        meta = json.loads(str(a["meta"]))
        heads: dict = {}
        if "ridge_ce/W" in a:
            r = RidgeHead()
            for k in ("mu", "sd", "ym", "W", "alpha", "rmse", "basis", "sv", "sigma"):
                if f"ridge_ce/{k}" in a:
                    setattr(r, k, a[f"ridge_ce/{k}"])
            heads["ridge_ce"] = r
        if "gap_gbt/config" in a:
            g = BoundedGapHead(**json.loads(str(a["gap_gbt/config"])))
            g.scale, g.scale_b, g.s0 = float(a["gap_gbt/scale"]), a["gap_gbt/scale_b"], float(a["gap_gbt/s0"])
            g.forests = []
            i = 0
            while f"gap_gbt/{i}/roots" in a:
                p = f"gap_gbt/{i}/"
                g.forests.append(_Forest(*(a[p + k] for k in _Forest.FIELDS), roots=a[p + "roots"], baseline=float(a[p + "baseline"])))
                i += 1
            heads["gap_gbt"] = g
        stats = TrainStats(int(a["stats/kmax"]), a["stats/compositions"], a["stats/seen_clusters"])
        sm = cls(host_from_state(json.loads(str(a["host"]))), heads, meta, stats)
        prior = PairPrior.from_arrays(a, "pair_prior/") if "pair_prior/wcol" in a else None
        corr = HDCorrection.from_arrays(a, sm.host, "hd_correction/") if "hd_correction/meta" in a else None
        sm._fe_terms = (prior, corr, str(a["fe_terms/status"]))
        return sm


# ---------------------------------------------------------------------- loading
def default_model_path() -> Path:
    """Path of the packaged default model (``invdesign/resources/default_model.pt``)."""
    from importlib import resources

    return Path(str(resources.files("invdesign.resources") / "default_model.pt"))


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def serving_cache_path(model_path: str | Path) -> Path:
    """Where :func:`invdesign.predictor.load_predictor` caches the serving part of the model file ``model_path``:
    keyed by the SHA-256 of the model file, of the packaged high-density correction
    (``invdesign/resources/hd_correction.npz``) and the pair prior's version, so a change of any of
    them gives another file."""
    from invdesign.data.dataset import cache_dir

    res = hd_resource_path()
    key = f"{_file_digest(Path(model_path))}:{_file_digest(res) if res.is_file() else 'none'}:prior{PRIOR_VERSION}"
    return cache_dir() / f"serving-{hashlib.sha256(key.encode()).hexdigest()[:32]}-v{CACHE_FORMAT}.npz"


def fast_predict_enabled() -> bool:
    """False when ``INVDESIGN_FAST_PREDICT=0``: :func:`invdesign.predictor.load_predictor` then loads the full model."""
    return os.environ.get("INVDESIGN_FAST_PREDICT", "1").strip() not in ("0", "false", "no", "off")


def read_cache(path: Path) -> ServingModel | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return ServingModel.from_arrays(z)
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError, InvdesignError):
        return None  # unreadable: rebuilt from the model file and rewritten


def write_cache(path: Path, sm: ServingModel) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **sm.arrays())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # a read-only cache only costs time, never results


def prediction_table(model: Predictor, ids, occ: np.ndarray):
    """The ``predict`` table: ``id, <targets>, <targets>_std, extrapolation, extrapolation_reason, note,
    homo_lumo_gap_validated, formation_energy_reference`` (eV).

    ``extrapolation`` is a bool and ``extrapolation_reason`` says why (:meth:`Predictor.extrapolation`).
    A pristine configuration (0 defects) has no formation energy per defect site: NaN, with ``note``.
    """
    import pandas as pd

    from invdesign.data.dataset import TARGETS

    mean, std = model.predict(occ)
    df = pd.DataFrame({"id": list(ids)})
    for j, t in enumerate(TARGETS):
        df[t] = np.asarray(mean, float)[:, j]
    for j, t in enumerate(TARGETS):
        df[f"{t}_std"] = np.asarray(std, float)[:, j]
    reasons = model.extrapolation(occ)
    df["extrapolation"] = [bool(r) for r in reasons]
    df["extrapolation_reason"] = reasons
    pristine = n_defects(np.asarray(occ), model.host) == 0 if len(occ) else np.zeros(0, bool)
    if "formation_energy_per_site" in TARGETS:
        df.loc[pristine, ["formation_energy_per_site", "formation_energy_per_site_std"]] = np.nan
    df["note"] = np.where(pristine, PRISTINE_NOTE, "")
    if hasattr(model, "gap_validated"):  # False beyond the trained density or composition (Predictor.gap_validated)
        df["homo_lumo_gap_validated"] = np.asarray(model.gap_validated(occ), dtype=bool) if len(occ) else np.zeros(0, bool)
    if hasattr(model, "fe_reference"):  # DFT-trained model, or + the high-density correction toward corrected CHGNet
        df["formation_energy_reference"] = model.fe_reference(occ) if len(occ) else []
    return df
