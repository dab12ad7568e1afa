"""The trained model: invariant encoder + property heads, saved as one file.

:class:`Model` bundles the 12-D symmetry-invariant embedding (``embed``), the head that serves
property predictions with uncertainty (``predict``: a deep ensemble on exact cluster counts),
the 12-D embedding head used by the flow/decoder/GP (``predict_embedding``: a deep ensemble on
``z``), the seed's ridge rows (kept for the benchmark), the training configurations and metadata.
:func:`train_model` trains all of it on the train split, chooses everything on the validation
split and reports (never uses) the test split. :func:`load_model` loads a file or the packaged
default.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch

from invdesign.data.dataset import TARGETS, Dataset, split_indices
from invdesign.embed.encoder import InvariantEncoder, embed_occ
from invdesign.embed.train import DEFAULTS as ENCODER_DEFAULTS
from invdesign.embed.train import nearest_other, train_encoder
from invdesign.errors import InvdesignError
from invdesign.lattice.enumerate import enumerate_orbits
from invdesign.lattice.host import HostLattice
from invdesign.predict.features import cluster_counts, orbit_distances, poly2
from invdesign.predict.gap import EG_MAX, BoundedGapHead
from invdesign.predict.heads import EnsembleHead, RidgeHead
from invdesign.predict.serving import (
    PRISTINE_NOTE,
    Predictor,
    TrainStats,
    default_model_path,
    host_from_state,
    host_state,
    prediction_table,
)
from invdesign.predict.serving import n_defects as _n_defects

FORMAT = "invdesign-model/1"

DEFAULT_CONFIG: dict = {
    **ENCODER_DEFAULTS,
    "max_orbit_defects": 3,  # negatives: every class with up to this many defects
    "ce_members": 4,
    "ce_width": 256,
    "ce_epochs": 120,
    "z_members": 4,
    "z_width": 128,
    "z_epochs": 100,
    "gap_members": 3,  # bounded gap head: boosted-tree models per loss (> 1: bootstrap resamples; 1: the whole train split)
    "gap_iter": 500,
    "gap_losses": ("squared_error", "absolute_error"),
    # further gap members (BoundedGapHead ``extra``): one model per loss on the whole train split
    # (benchmarks/results/gap_tune_study.md)
    "gap_extra": ({"loss": "squared_error"}, {"loss": "absolute_error"}),
    "gap_refit_with_val": False,  # gap members refitted on train + val after the std is calibrated on val
    # every gap member also reads this defect type's two nearest pairs (BoundedGapHead ``anchor``): the V_Mo's
    # neighbours pick its in-gap level (benchmarks/results/gap_round_d.md); None, or a type the host lacks: off
    "gap_anchor": "V_Mo",
}
#: the gap head's recipe: :func:`attach_gap_head` refits with these from :data:`DEFAULT_CONFIG`
GAP_KEYS = ("gap_members", "gap_iter", "gap_losses", "gap_extra", "gap_refit_with_val", "gap_anchor")


def gap_geometry(host: HostLattice | None) -> dict:
    """``n_types`` and ``orbit_distance`` (A) of ``host`` for :class:`BoundedGapHead` (empty for None)."""
    if host is None:
        return {}
    return {"n_types": len(host.defect_types), "orbit_distance": orbit_distances(host)}


def gap_anchor(host: HostLattice | None, label: str | None) -> dict:
    """``{"anchor": index}`` of the defect type ``label`` (e.g. ``"V_Mo"``) among ``host.defect_types`` for
    :class:`BoundedGapHead`; empty when ``label`` is None, there is no host, or the host has no such type."""
    if host is None or label is None:
        return {}
    labels = [host.defect_label(*t) for t in host.defect_types]
    return {"anchor": labels.index(label)} if label in labels else {}


def _n_gap_fits(cfg: dict) -> int:
    """Boosted models the gap head fits under ``cfg`` (for progress bars)."""
    n = cfg["gap_members"] * len(cfg["gap_losses"]) + len(cfg.get("gap_extra", ()))
    return 2 * n if cfg.get("gap_refit_with_val") else n


__all__ = ["PRISTINE_NOTE", "Model", "default_model_path", "load_model", "prediction_table", "train_model"]


class Model(Predictor):
    """Encoder + heads + metadata. Build with :func:`train_model`, or :meth:`load`.

    Attributes:
        host: the host lattice.
        encoder: the invariant encoder (torch module).
        heads: ``{"ridge_z", "poly_z", "ensemble_z", "ensemble_ce", "ridge_ce"}`` fitted heads.
        meta: version, data name and fingerprint, split, sizes, metrics (MAE meV), seconds, dim, targets.
        train_occ: ``(M, n_sites)`` uint8 training configurations; ``train_y``: ``(M, 2)`` eV.
        extras: other components' states, saved and loaded verbatim (e.g. ``extras["flow"]``).
    """

    def __init__(self, host: HostLattice, encoder: InvariantEncoder, heads: dict, meta: dict,
                 train_occ: np.ndarray, train_y: np.ndarray, extras: dict | None = None) -> None:
        self.host = host
        self.encoder = encoder.double().eval()  # float64 inference: symmetry images agree to ~1e-15
        self.heads = heads
        self.meta = meta
        self.train_occ = np.asarray(train_occ, dtype=np.uint8)
        self.train_y = np.asarray(train_y, dtype=np.float64)
        self.extras = extras if extras is not None else {}

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def embed(self, occ: np.ndarray) -> np.ndarray:
        """``(N, n_sites)`` uint8 -> ``(N, d)`` float64 embedding, exactly invariant under the host group."""
        return embed_occ(self.encoder, self._check(occ), self.host)

    def train_stats(self) -> TrainStats:
        """Training-set statistics of the extrapolation flags (computed once per model)."""
        if getattr(self, "_train_stats", None) is None:
            self._train_stats = TrainStats.of(self.train_occ, self.host)
        return self._train_stats

    def predict_embedding(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std ``(N, 2)`` in eV from the embedding head (deep ensemble on ``z (N, d)``)."""
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise InvdesignError(f"embeddings must be (N, {self.dim}); got {z.shape}")
        return self.heads["ensemble_z"].predict(z)

    def predict_head(self, occ: np.ndarray, head: str) -> tuple[np.ndarray, np.ndarray]:
        """Predictions of one head: ``best`` (what :meth:`predict` serves), ``ensemble_ce``, ``ridge_ce``,
        ``ridge_z``, ``poly_z``, ``ensemble_z``, ``gap_gbt`` (its gap column; formation energy from ``ensemble_ce``)."""
        occ = self._check(occ)
        if head == "best":
            return self.predict(occ)
        if head == "gap_gbt":
            X = cluster_counts(occ, self.host)
            mean, std = self.heads["ensemble_ce"].predict(X)  # formation energy column: the ensemble's
            j = self.targets.index("homo_lumo_gap")
            mean[:, j], std[:, j] = self.heads["gap_gbt"].predict(X)
            k = np.maximum(_n_defects(occ, self.host), 1).astype(float)
            mean[:, 0] /= k
            std[:, 0] /= k
            return mean, std
        if head in ("ensemble_ce", "ridge_ce"):
            mean, std = self.heads[head].predict(cluster_counts(occ, self.host))
            k = np.maximum(_n_defects(occ, self.host), 1).astype(float)
            mean[:, 0] /= k
            std[:, 0] /= k
            return mean, std
        z = self.embed(occ)
        if head == "ridge_z":
            return self.heads["ridge_z"].predict(z)
        if head == "poly_z":
            return self.heads["poly_z"].predict(poly2(z))
        if head == "ensemble_z":
            return self.predict_embedding(z)
        raise InvdesignError(f"unknown head {head!r}")

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict:
        return {
            "format": FORMAT,
            "meta": self.meta,
            "host": host_state(self.host),
            "encoder": {"config": self.encoder.config(), "state": self.encoder.state_dict()},
            "heads": {name: head.state() for name, head in self.heads.items()},
            "train_occ": torch.as_tensor(self.train_occ),
            "train_y": torch.as_tensor(self.train_y),
            "extras": self.extras,
        }

    def save(self, path: str | Path) -> Path:
        """Write the model to one file atomically (``torch.save`` of tensors and plain containers)."""
        path = Path(path)
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise InvdesignError("output folder does not exist", source=str(parent))
        from invdesign.outputs import write_bytes_atomic

        buf = io.BytesIO()
        torch.save(self.state(), buf)
        return write_bytes_atomic(path, buf.getvalue())  # temp sibling + rename, mode from the umask

    @classmethod
    def from_state(cls, st: dict, source: str = "model") -> Model:
        if not isinstance(st, dict) or st.get("format") != FORMAT:
            raise InvdesignError(f"not an invdesign model (expected format {FORMAT})", source=source)
        try:
            host = host_from_state(st["host"])
            enc = InvariantEncoder(**st["encoder"]["config"])
            enc.load_state_dict(st["encoder"]["state"])
            enc.eval()
            heads = {
                "ridge_z": RidgeHead.from_state(st["heads"]["ridge_z"]),
                "poly_z": RidgeHead.from_state(st["heads"]["poly_z"]),
                "ensemble_z": EnsembleHead.from_state(st["heads"]["ensemble_z"]),
                "ensemble_ce": EnsembleHead.from_state(st["heads"]["ensemble_ce"]),
            }
            if "ridge_ce" in st["heads"]:
                heads["ridge_ce"] = RidgeHead.from_state(st["heads"]["ridge_ce"])
            if "gap_gbt" in st["heads"]:
                heads["gap_gbt"] = BoundedGapHead.from_state(st["heads"]["gap_gbt"])
            return cls(host, enc, heads, st["meta"], st["train_occ"].numpy(), st["train_y"].numpy(), st.get("extras") or {})
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise InvdesignError(f"model file is incomplete or corrupt ({type(exc).__name__}: {exc})", source=source) from None

    @classmethod
    def load(cls, path: str | Path) -> Model:
        """Load a model file; anything that is not one gives an :class:`InvdesignError`."""
        p = Path(path)
        if not p.is_file():
            raise InvdesignError("model file not found", source=str(p))
        if p.suffix.lower() == ".npz":
            raise InvdesignError("a host model (.npz, from invdesign train --out F.npz) serves predict, design, campaigns "
                                 "and the surrogate oracle; this needs an embedding model (.pt: the packaged 8x8 MoS2 "
                                 "one, or invdesign train --data DIR --out F.pt on another host's data)", source=str(p))
        try:
            st = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for foreign or truncated files
            raise InvdesignError(f"not a readable model file ({type(exc).__name__})", source=str(p)) from None
        return cls.from_state(st, str(p))


_CACHE: dict[str, Model] = {}


def load_model(path: str | Path | None = None) -> Model:
    """Load ``path``, or the packaged default when None; cached per process (by resolved path and mtime)."""
    p = Path(path) if path is not None else default_model_path()
    if path is None and not p.is_file():
        raise InvdesignError("the packaged default model is missing; train one with `invdesign train`", source=str(p))
    key = f"{p.resolve()}:{p.stat().st_mtime_ns if p.is_file() else 0}"
    if key not in _CACHE:
        _CACHE[key] = Model.load(p)
    return _CACHE[key]


def _mae_mev(pred: np.ndarray, y: np.ndarray) -> dict:
    return {t: float(np.abs(pred[:, j] - y[:, j]).mean() * 1000) for j, t in enumerate(TARGETS)}


def train_model(dataset: Dataset, seed: int = 0, config: dict | None = None, split_seed: int = 0,
                fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), progress=None) -> Model:
    """Train encoder and heads on the train split of ``dataset``; tune on val; report test.

    Args:
        dataset: configurations with ``formation_energy_per_site`` and ``homo_lumo_gap`` (eV).
        seed: seed of every random choice in training.
        config: overrides of :data:`DEFAULT_CONFIG` (tests use tiny settings).
        split_seed, fractions: the split (:func:`invdesign.data.dataset.split_indices`).
        progress: optional ``progress(stage: str, done: int, total: int)`` callback.

    Returns:
        the :class:`Model`; ``meta["metrics"]`` has val and test MAE (meV) of every head.
    """
    from invdesign import __version__

    cfg = {**DEFAULT_CONFIG, **(config or {})}
    unknown = sorted(set(cfg) - set(DEFAULT_CONFIG))
    if unknown:
        raise InvdesignError(f"unknown training setting(s) {unknown}; known: {sorted(DEFAULT_CONFIG)}")
    torch.manual_seed(seed)
    host = dataset.host
    Y = dataset.y(TARGETS)
    if not np.isfinite(Y).all():
        raise InvdesignError(f"dataset {dataset.name} has missing target values")
    sp = split_indices(dataset.ids, fractions, split_seed)
    tr, va, te = sp["train"], sp["val"], sp["test"]
    if len(tr) < 2 or len(va) < 1:
        raise InvdesignError(f"dataset {dataset.name} is too small to split ({len(tr)} train, {len(va)} val)")
    occ = dataset.occ
    k = np.maximum(_n_defects(occ, host), 1).astype(float)
    t0 = time.time()
    timings = {}

    def stage(name: str, total: int):
        done = [0]

        def tick():
            done[0] += 1
            if progress is not None:
                progress(name, done[0], total)

        return tick

    orbits = enumerate_orbits(host, cfg["max_orbit_defects"])
    encoder, hist = train_encoder(host, occ[tr], Y[tr], orbits.occ, {k_: cfg[k_] for k_ in ENCODER_DEFAULTS}, seed,
                                  stage("encoder", cfg["epochs"]))
    timings["encoder_s"] = time.time() - t0
    encoder = encoder.double()
    z = embed_occ(encoder, occ, host)
    zo = embed_occ(encoder, orbits.occ, host)
    _, dmin = nearest_other(zo)
    heads: dict = {}
    heads["ridge_z"] = RidgeHead().fit(z[tr], Y[tr], z[va], Y[va])
    pz = poly2(z)
    heads["poly_z"] = RidgeHead().fit(pz[tr], Y[tr], pz[va], Y[va])
    t1 = time.time()
    heads["ensemble_z"] = EnsembleHead(cfg["z_members"], cfg["z_width"], cfg["z_epochs"], seed=seed).fit(
        z[tr], Y[tr], z[va], Y[va], stage("embedding head", cfg["z_members"] * cfg["z_epochs"]))
    timings["ensemble_z_s"] = time.time() - t1
    t1 = time.time()
    X = cluster_counts(occ, host)
    Yt = Y.copy()
    Yt[:, 0] *= k  # total formation energy
    heads["ensemble_ce"] = EnsembleHead(cfg["ce_members"], cfg["ce_width"], cfg["ce_epochs"], seed=seed).fit(
        X[tr], Yt[tr], X[va], Yt[va], stage("cluster-count head", cfg["ce_members"] * cfg["ce_epochs"]))
    timings["ensemble_ce_s"] = time.time() - t1
    t1 = time.time()
    heads["ridge_ce"] = RidgeHead().fit(X[tr], Yt[tr], X[va], Yt[va])
    timings["ridge_ce_s"] = time.time() - t1
    t1 = time.time()
    heads["gap_gbt"] = fit_gap_head(X, Y[:, TARGETS.index("homo_lumo_gap")], tr, va, cfg, seed,
                                    stage("bounded gap head", _n_gap_fits(cfg)), host)
    timings["gap_gbt_s"] = time.time() - t1
    meta = {
        "version": __version__,
        "format": FORMAT,
        "targets": list(TARGETS),
        "units": "eV (MAE in meV)",
        "data": {"name": dataset.name, "fingerprint": dataset.fingerprint, "n_structures": len(dataset)},
        "host": {"name": host.name, "fingerprint": host.fingerprint, "n_ops": host.n_ops},
        "split": {"seed": split_seed, "fractions": list(fractions), "train": len(tr), "val": len(va), "test": len(te)},
        "seed": seed,
        "config": cfg,
        "embedding_dim": encoder.dim,
        "serving_head": "best",
        "serving": {},
        "embedding_head": "ensemble_z",
        "orbit_table": {"max_defects": cfg["max_orbit_defects"], "classes": len(orbits),
                        "min_distance": float(dmin.min()), "margin": cfg["margin"],
                        "below_margin": int((dmin < cfg["margin"]).sum())},
        "encoder_history": {k_: v for k_, v in hist.items() if k_ != "config"},
        "train_seconds": None,
        "timings": timings,
        "metrics": {},
    }
    model = Model(host, encoder, heads, meta, occ[tr], Y[tr])
    for head in ("ensemble_ce", "ridge_ce"):  # choose the serving head per target on val
        pred, _ = model.predict_head(occ[va], head)
        meta["metrics"].setdefault(head, {})["val"] = _mae_mev(pred, Y[va])
    for t in TARGETS:
        meta["serving"][t] = min(("ensemble_ce", "ridge_ce"), key=lambda h: meta["metrics"][h]["val"][t])
    meta["serving"]["homo_lumo_gap"] = "gap_gbt"  # the bounded head always serves the gap (physics, not val MAE)
    for split, idx in (("val", va), ("test", te)):
        if len(idx) == 0:
            continue
        for head in [*heads, "best"]:
            pred, _ = model.predict_head(occ[idx], head)
            meta["metrics"].setdefault(head, {})[split] = _mae_mev(pred, Y[idx])
    meta["train_seconds"] = time.time() - t0
    return model


def _host_model_for(structures, model):
    """The host-model predictor serving ``structures`` where the CLI's would (None: the classic model)."""
    if model is not None and not isinstance(model, Model) and str(model).lower().endswith(".npz"):
        from invdesign.predict.host_serving import load_host_predictor

        return load_host_predictor(model)
    if model is not None or isinstance(structures, np.ndarray):
        return None
    items = list(structures) if isinstance(structures, (list, tuple)) else [structures]
    if not items or not all(isinstance(s, (str, Path)) for s in items):
        return None
    from invdesign.data.dataset import recognised_host
    from invdesign.predict.host_serving import packaged_predictor

    host = recognised_host(items)
    return packaged_predictor(host) if host is not None else None


def fit_gap_head(X: np.ndarray, gap: np.ndarray, tr: np.ndarray, va: np.ndarray, config: dict | None = None,
                 seed: int = 0, progress=None, host: HostLattice | None = None) -> BoundedGapHead:
    """Fit the bounded gap head on rows ``tr`` of cluster counts ``X (N, p)`` and gaps ``gap (N,)`` (eV);
    its std is conformally calibrated on rows ``va``. Columns constant on ``tr`` are kept (trees ignore them).
    ``host`` gives the pair-orbit distances that members with ``distances`` or an anchor read (needed for those;
    ``config["gap_anchor"]`` is resolved on it, :func:`gap_anchor`)."""
    cfg = {**DEFAULT_CONFIG, **(config or {})}
    gap = np.asarray(gap, dtype=np.float64)
    if (gap[tr] < 0).any():
        raise InvdesignError(f"training data has negative band gaps (lowest {gap[tr].min():.4f} eV); a gap is >= 0")
    # the widest host gap of the 2DMD chemistries; a host with a wider gap (e.g. hBN) sets its own bound
    eg_max = EG_MAX if gap[tr].max() < 0.95 * EG_MAX else float(np.ceil(gap[tr].max() * 1.1 * 10) / 10)
    return BoundedGapHead(eg_max=eg_max, members=cfg["gap_members"], max_iter=cfg["gap_iter"], seed=seed,
                          losses=tuple(cfg["gap_losses"]), extra=tuple(cfg.get("gap_extra", ())),
                          refit_with_val=bool(cfg.get("gap_refit_with_val", False)),
                          **gap_geometry(host), **gap_anchor(host, cfg.get("gap_anchor"))).fit(
        X[tr], np.maximum(gap[tr], 1e-4), X[va], gap[va], progress)


def attach_gap_head(model: Model, dataset: Dataset, progress=None) -> Model:
    """Refit the bounded gap head of ``model`` in place on its own split of ``dataset`` (the packaging path
    for a model trained before the head existed); the val/test metrics of ``gap_gbt`` and ``best`` are redone."""
    sp = split_indices(dataset.ids, tuple(model.meta["split"]["fractions"]), model.meta["split"]["seed"])
    tr, va, te = sp["train"], sp["val"], sp["test"]
    t0 = time.time()
    X = cluster_counts(dataset.occ, model.host)
    Y = dataset.y(TARGETS)
    cfg = {**DEFAULT_CONFIG, **model.meta.get("config", {}), **{k: DEFAULT_CONFIG[k] for k in GAP_KEYS}}
    model.heads["gap_gbt"] = fit_gap_head(X, Y[:, TARGETS.index("homo_lumo_gap")], tr, va, cfg,
                                          int(model.meta.get("seed", 0)), progress, model.host)
    model.meta.setdefault("timings", {})["gap_gbt_s"] = time.time() - t0
    model.meta["config"] = cfg
    model.meta.setdefault("serving", {})["homo_lumo_gap"] = "gap_gbt"
    for split, idx in (("val", va), ("test", te)):
        for head in ("gap_gbt", "best"):
            pred, _ = model.predict_head(dataset.occ[idx], head)
            model.meta["metrics"].setdefault(head, {})[split] = _mae_mev(pred, Y[idx])
    return model
