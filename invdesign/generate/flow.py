"""Conditional normalizing flow on the invariant embedding: ``p(z | properties, composition)``.

The flow is a masked autoregressive flow (MAF): normflows' masked affine autoregressive
transforms (with a two-sided scale) used in their one-pass direction for density evaluation (training is ``d`` times
faster; sampling takes ``d`` passes) with a fixed random permutation between them, on the standardised ``d``-dimensional embedding ``z`` of a
:class:`~invdesign.model.Model`. Its context is

``c = [(y - y_mean) / y_std  (2 targets),  counts (K)]``

where ``counts`` is the defect composition (``K`` = number of the host's defect types, counts per
type; a flow fitted on 1-D counts uses the total number of defects, ``K = 1``). Composition sets
most of the formation energy (it is nearly additive over defects), so a flow told the composition
only has to resolve arrangements within it. A target window is sampled from the flow's
:class:`ContextPrior`, the empirical distribution of ``(y, counts)`` over its training set
(kernel-smoothed in ``y``): contexts are drawn from that distribution restricted to the window
(and to the compositions the limits allow), then ``z ~ p(z | context)``. That is
``p(z | y in window)`` of the training distribution, rather than ``y`` uniform in the window with
a composition chosen blind, which spends most samples on compositions that cannot reach a narrow
window. The flow works on whitened embeddings (mean and full covariance of the training set), so it
contains the best Gaussian as its starting point. Training adds Gaussian noise (``config["noise"]``,
whitened units) to the embeddings: without it the flow spends its capacity on the fine structure of the finite set of
training embeddings and nearly ignores the context (held-out NLL with shuffled context within
0.1 nats of the true one); with 0.1 the context is what it learns (shuffled context costs
hundreds of nats) and decoded samples follow the requested properties. :func:`attach_flow` fits it by default on
``model.embed`` of every enumerated 1-3-defect orbit except the VAL configurations', conditioned on the model's
predicted properties (the quantity design windows are judged by), VAL (predicted properties) for early stopping;
``config["train_set"] = "train"`` fits the TRAIN split with its DFT targets instead. It
stores plain tensors and numbers in ``model.extras["flow"]`` so that
``Model.save``/``Model.load`` round-trip it; :func:`get_flow` rebuilds it from there.

Log-likelihoods are in nats per configuration, in the units of the (unstandardised) embedding.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from invdesign.errors import InvdesignError
from invdesign.generate.threads import one_thread, torch_imported

torch_imported()  # imported inside one_thread(): one thread from here on

FORMAT = "invdesign.flow/2"  # /2: composition context and context prior (/1: one-hot defect count)
PRIOR_MIN_BANDWIDTH = 0.01  # floor of the context prior's kernel width, in units of each target's std

DEFAULT_CONFIG: dict = {
    "n_layers": 4,
    "hidden": 64,
    "num_blocks": 1,
    "lr": 3e-3,
    "weight_decay": 1e-5,
    "batch_size": 512,
    "max_epochs": 400,
    "patience": 30,
    "noise": 0.1,  # std of Gaussian noise added to the whitened training embeddings
    # what attach_flow fits: "orbits" = every enumerated 1-3-defect orbit except the VAL split's,
    # conditioned on the model's predicted properties; "train" = the TRAIN split with its DFT targets
    "train_set": "orbits",
}


def _affine_autoregressive(dim: int, hidden: int, n_context: int, num_blocks: int):
    """normflows' masked affine autoregressive transform with a two-sided scale.

    normflows bounds the scale by a sigmoid (at most 1, so the density direction could only
    contract); here ``log scale = 3 tanh(a / 3)``: scales between e^-3 and e^3, identity at init.
    """
    import normflows as nf

    class TwoSidedMAF(nf.flows.MaskedAffineAutoregressive):
        def _log_scale_and_shift(self, params):
            raw, shift = self._unconstrained_scale_and_shift(params)
            return 3.0 * torch.tanh(raw / 3.0), shift

        def _elementwise_forward(self, inputs, autoregressive_params):
            log_scale, shift = self._log_scale_and_shift(autoregressive_params)
            return torch.exp(log_scale) * inputs + shift, log_scale.sum(dim=1)

        def _elementwise_inverse(self, inputs, autoregressive_params):
            log_scale, shift = self._log_scale_and_shift(autoregressive_params)
            return (inputs - shift) * torch.exp(-log_scale), -log_scale.sum(dim=1)

    return TwoSidedMAF(dim, hidden, context_features=n_context, num_blocks=num_blocks)


def _logdet(chol: np.ndarray) -> float:
    """log |det| of the whitening's inverse (the Jacobian term between raw and whitened ``z``)."""
    return float(np.log(np.abs(np.diag(chol))).sum())


def _inverted(flow):
    """``flow`` used backwards: density evaluation takes its one-pass direction (a MAF)."""
    import normflows as nf

    class Inverted(nf.flows.Flow):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, z, context=None):
            return self.inner.inverse(z, context=context)

        def inverse(self, z, context=None):
            return self.inner.forward(z, context=context)

    return Inverted(flow)


def _build(dim: int, n_context: int, cfg: dict, seed: int):
    import normflows as nf

    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        flows = []
        for _ in range(cfg["n_layers"]):
            flows.append(_inverted(_affine_autoregressive(dim, cfg["hidden"], n_context, cfg["num_blocks"])))
            flows.append(nf.flows.Permute(dim, mode="shuffle"))
        q0 = nf.distributions.DiagGaussian(dim, trainable=False)
        return nf.ConditionalNormalizingFlow(q0, flows)
    finally:
        torch.random.set_rng_state(gen_state)


def _log_interval(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``log(Phi(b) - Phi(a))`` for standard-normal ``a <= b``, accurate far in either tail."""
    from scipy.special import log_ndtr

    flip = a > 0  # both in the upper tail: use the mirror image, where log_ndtr is accurate
    lo, hi = np.where(flip, -b, a), np.where(flip, -a, b)
    la, lb = log_ndtr(lo), log_ndtr(hi)
    with np.errstate(divide="ignore"):
        return lb + np.log1p(-np.exp(np.minimum(la - lb, 0.0)))


@dataclass
class ContextPrior:
    """Empirical ``p(y, counts)`` of a flow's training set, kernel-smoothed in ``y``.

    Each training item ``i`` contributes a Gaussian in ``y`` of its group's width (Scott's rule
    within the items of the same ``counts``, floored at ``min_bandwidth``). Used to draw contexts
    for a window: ``p(y, counts | y in window)``.

    Attributes:
        y: ``(N, n_targets)`` properties (eV) the flow was trained on.
        counts: ``(N, K)`` their counts (composition, or ``K = 1`` total defects).
        bandwidth: ``(N, n_targets)`` kernel width per item (eV).
    """

    y: np.ndarray
    counts: np.ndarray
    bandwidth: np.ndarray

    @classmethod
    def fit(cls, y: np.ndarray, counts: np.ndarray, min_bandwidth: np.ndarray) -> ContextPrior:
        y = np.asarray(y, dtype=np.float64)
        counts = np.asarray(counts, dtype=np.int64).reshape(len(y), -1)
        _, group = np.unique(counts, axis=0, return_inverse=True)
        group = group.reshape(-1)
        bw = np.empty_like(y)
        for g in np.unique(group):
            rows = group == g
            sd = y[rows].std(axis=0) if rows.sum() > 1 else np.zeros(y.shape[1])
            bw[rows] = np.maximum(sd * rows.sum() ** (-1.0 / (4 + y.shape[1])), min_bandwidth)
        return cls(y, counts, bw)

    def log_weights(self, window: np.ndarray) -> np.ndarray:
        """``(N,)`` log P(item's kernel lies in ``window (n_targets, 2)``), eV bounds, inf allowed."""
        w = np.asarray(window, dtype=np.float64).reshape(self.y.shape[1], 2)
        a = (w[:, 0][None, :] - self.y) / self.bandwidth
        b = (w[:, 1][None, :] - self.y) / self.bandwidth
        return _log_interval(a, b).sum(axis=1)

    def sample(
        self, window: np.ndarray, n: int, allowed: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` contexts from ``p(y, counts | y in window)`` over the ``allowed (N,)`` items.

        Returns ``y (n, n_targets)`` eV, inside the window, and ``counts (n, K)``.
        """
        from scipy.stats import truncnorm

        w = np.asarray(window, dtype=np.float64).reshape(self.y.shape[1], 2)
        lw = self.log_weights(w)
        if allowed is not None:
            lw = np.where(allowed, lw, -np.inf)
        if not np.isfinite(lw).any():
            raise InvdesignError("the flow saw no configuration within these limits; it cannot sample them")
        p = np.exp(lw - lw.max())
        i = rng.choice(len(p), size=n, p=p / p.sum())
        mu, sd = self.y[i], self.bandwidth[i]
        a, b = (w[:, 0][None, :] - mu) / sd, (w[:, 1][None, :] - mu) / sd
        y = truncnorm.rvs(a, b, loc=mu, scale=sd, random_state=rng)
        return np.clip(y, w[:, 0], w[:, 1]), self.counts[i].copy()

    def nearest(self, window: np.ndarray, k: int, allowed: np.ndarray | None, scale: np.ndarray) -> np.ndarray:
        """Indices of the ``k`` allowed items nearest the window (distance in units of ``scale`` eV)."""
        w = np.asarray(window, dtype=np.float64).reshape(self.y.shape[1], 2)
        out = np.maximum(w[:, 0][None, :] - self.y, 0.0) + np.maximum(self.y - w[:, 1][None, :], 0.0)
        d = np.sqrt(((out / scale) ** 2).sum(axis=1))
        if allowed is not None:
            d = np.where(allowed, d, np.inf)
        order = np.argsort(d, kind="stable")[:k]
        return order[np.isfinite(d[order])]

    def to_state(self) -> dict:
        return {
            "y": torch.as_tensor(self.y, dtype=torch.float32),
            "counts": torch.as_tensor(self.counts, dtype=torch.int16),
            "bandwidth": torch.as_tensor(self.bandwidth, dtype=torch.float32),
        }

    @classmethod
    def from_state(cls, state: dict) -> ContextPrior:
        return cls(
            np.asarray(state["y"], dtype=np.float64),
            np.asarray(state["counts"], dtype=np.int64),
            np.asarray(state["bandwidth"], dtype=np.float64),
        )


def as_counts(counts: np.ndarray, n: int) -> np.ndarray:
    """``(n, K)`` float counts from ``(n,)`` total defects or ``(n, K)`` compositions."""
    c = np.asarray(counts, dtype=np.float64)
    return c.reshape(n, -1) if c.ndim <= 1 else c.reshape(n, c.shape[-1])


@dataclass
class ConditionalFlow:
    """``p(z | y, counts)`` on a ``dim``-dimensional embedding.

    Attributes:
        dim: embedding dimension ``d``.
        n_targets: number of conditioning properties (2: TARGETS order, eV).
        n_counts: ``K``, width of the counts context (the host's defect types, or 1 for total defects).
        z_mean: ``(d,)`` mean of the training embeddings.
        z_chol: ``(d, d)`` lower Cholesky factor of their covariance (the flow sees whitened ``z``).
        y_mean, y_std: ``(n_targets,)`` standardisation of the properties (eV).
        config: hyper-parameters (see :data:`DEFAULT_CONFIG`).
        seed: seed of the initialisation (fixes the permutations).
        report: training summary (epochs, best validation NLL, ...).
        prior: the training set's ``(y, counts)``, for drawing contexts in a window.
    """

    dim: int
    n_targets: int
    n_counts: int
    z_mean: np.ndarray
    z_chol: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray
    config: dict = field(default_factory=lambda: dict(DEFAULT_CONFIG))
    seed: int = 0
    report: dict = field(default_factory=dict)
    prior: ContextPrior | None = None

    def __post_init__(self) -> None:
        self.net = _build(self.dim, self.n_targets + self.n_counts, self.config, self.seed)
        self.net.eval()

    # ------------------------------------------------------------------ context
    def context(self, y: np.ndarray, counts: np.ndarray) -> torch.Tensor:
        """``(N, n_targets + K)`` context from ``y (N, n_targets)`` eV and ``counts (N,)`` or ``(N, K)``."""
        y = np.asarray(y, dtype=np.float64).reshape(-1, self.n_targets)
        c = as_counts(counts, len(y))
        if c.shape[1] != self.n_counts:
            raise InvdesignError(f"the flow is conditioned on {self.n_counts} count(s) per configuration, got {c.shape[1]}")
        ys = (y - self.y_mean) / self.y_std
        return torch.as_tensor(np.concatenate([ys, c], axis=1), dtype=torch.float32)

    def _zs(self, z: np.ndarray) -> torch.Tensor:
        u = np.linalg.solve(self.z_chol, (np.asarray(z, dtype=np.float64) - self.z_mean).T).T
        return torch.as_tensor(u, dtype=torch.float32)

    # ------------------------------------------------------------------ use
    def log_prob(self, z: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """``(N,)`` log p(z | y, counts) in nats (density in the units of the raw embedding)."""
        with torch.no_grad(), one_thread():
            lp = self.net.log_prob(self._zs(z), self.context(y, counts)).double().numpy()
        return lp - _logdet(self.z_chol)

    def sample(self, y: np.ndarray, counts: np.ndarray, seed: int = 0, temperature: float = 1.0) -> np.ndarray:
        """``(N, d)`` embeddings drawn from ``p(z | y_i, counts_i)``, one per row of the context.

        ``temperature`` scales the base Gaussian (1: the fitted density; > 1 spreads the samples).
        """
        ctx = self.context(y, counts)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad(), one_thread():
            zs = torch.randn(len(ctx), self.dim, generator=gen) * float(temperature)
            for f in self.net.flows:
                zs, _ = f(zs, context=ctx)
        return zs.double().numpy() @ self.z_chol.T + self.z_mean

    def sample_window(
        self,
        window: dict[str, tuple[float, float]] | np.ndarray,
        n: int,
        allowed: np.ndarray | None = None,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw ``n`` embeddings for a target window.

        Contexts come from :attr:`prior` restricted to the window (see :class:`ContextPrior`).

        Args:
            window: ``(n_targets, 2)`` [lo, hi] in eV per target (infinite bounds allowed).
            n: number of samples.
            allowed: ``(N_prior,)`` bool over the prior's items (e.g. compositions within limits);
                None: all.
            seed: seeds the context draw and the flow.
            temperature: scale of the base Gaussian (see :meth:`sample`).

        Returns:
            ``z (n, d)``, the drawn ``y (n, n_targets)`` eV and ``counts (n, K)``.
        """
        if self.prior is None:
            raise InvdesignError("this flow carries no context prior; refit it (invdesign train)")
        rng = np.random.default_rng(seed)
        y, c = self.prior.sample(np.asarray(window, dtype=np.float64), n, allowed, rng)
        return self.sample(y, c, seed=seed + 1, temperature=temperature), y, c

    # ------------------------------------------------------------------ persistence
    def to_state(self) -> dict:
        """Plain tensors, lists and numbers (what ``model.extras["flow"]`` holds)."""
        return {
            "format": FORMAT,
            "dim": self.dim,
            "n_targets": self.n_targets,
            "n_counts": self.n_counts,
            "z_mean": [float(v) for v in self.z_mean],
            "z_chol": [[float(v) for v in row] for row in self.z_chol],
            "y_mean": [float(v) for v in self.y_mean],
            "y_std": [float(v) for v in self.y_std],
            "config": dict(self.config),
            "seed": int(self.seed),
            "report": copy.deepcopy(self.report),
            "state_dict": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "prior": None if self.prior is None else self.prior.to_state(),
        }

    @classmethod
    def from_state(cls, state: dict) -> ConditionalFlow:
        if not isinstance(state, dict) or not str(state.get("format", "")).startswith("invdesign.flow/"):
            raise InvdesignError("model carries no readable conditional flow (extras['flow'])")
        if state["format"] != FORMAT:
            raise InvdesignError(
                f"the model's conditional flow is in the old format {state['format']!r} (this version reads {FORMAT}); "
                "refit it with `invdesign train` or attach_flow"
            )
        flow = cls(
            dim=int(state["dim"]),
            n_targets=int(state["n_targets"]),
            n_counts=int(state["n_counts"]),
            z_mean=np.asarray(state["z_mean"], float),
            z_chol=np.asarray(state["z_chol"], float),
            y_mean=np.asarray(state["y_mean"], float),
            y_std=np.asarray(state["y_std"], float),
            config=dict(state["config"]),
            seed=int(state["seed"]),
            report=dict(state.get("report", {})),
            prior=None if state.get("prior") is None else ContextPrior.from_state(state["prior"]),
        )
        flow.net.load_state_dict({k: torch.as_tensor(v) for k, v in state["state_dict"].items()})
        flow.net.eval()
        return flow


def fit_flow(
    z_train: np.ndarray,
    y_train: np.ndarray,
    c_train: np.ndarray,
    z_val: np.ndarray,
    y_val: np.ndarray,
    c_val: np.ndarray,
    seed: int = 0,
    config: dict | None = None,
    progress: bool = True,
) -> ConditionalFlow:
    """Fit ``p(z | y, counts)`` by maximum likelihood with early stopping on the validation NLL.

    Args:
        z_train, z_val: ``(N, d)`` embeddings.
        y_train, y_val: ``(N, n_targets)`` properties in eV.
        c_train, c_val: ``(N, K)`` compositions (defect counts per type) or ``(N,)`` total defect
            counts. The training ``(y, counts)`` become the flow's :class:`ContextPrior`.
        seed: seeds initialisation and minibatch order.
        config: overrides of :data:`DEFAULT_CONFIG`.

    Returns:
        the fitted flow (best validation epoch), with ``report`` holding ``train_nll``, ``val_nll``
        (nats per configuration) and ``epochs``.
    """
    from invdesign.progress import task

    cfg = {**DEFAULT_CONFIG, **(config or {})}
    z_train = np.asarray(z_train, float)
    if len(z_train) < 2 or len(z_val) < 1:
        raise InvdesignError("the flow needs at least 2 training and 1 validation configurations")
    y_train = np.asarray(y_train, float).reshape(len(z_train), -1)
    z_mean = z_train.mean(0)
    z_chol = np.linalg.cholesky(np.cov(z_train.T) + 1e-10 * np.eye(z_train.shape[1]))
    y_mean, y_std = y_train.mean(0), y_train.std(0) + 1e-8
    c_tr = as_counts(c_train, len(z_train))
    flow = ConditionalFlow(
        dim=z_train.shape[1], n_targets=y_train.shape[1], n_counts=c_tr.shape[1], z_mean=z_mean, z_chol=z_chol,
        y_mean=y_mean, y_std=y_std, config=cfg, seed=seed,
        prior=ContextPrior.fit(y_train, c_tr, min_bandwidth=PRIOR_MIN_BANDWIDTH * y_std),
    )
    net = flow.net
    zt, ct = flow._zs(z_train), flow.context(y_train, c_tr)
    zv, cv = flow._zs(z_val), flow.context(y_val, c_val)
    shift = _logdet(z_chol)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    gen = torch.Generator().manual_seed(seed)
    best, best_state, best_epoch, bad = math.inf, copy.deepcopy(net.state_dict()), 0, 0
    train_nll = math.nan
    epoch = 0
    with task("training conditional flow", total=cfg["max_epochs"]) as advance, one_thread():
        for epoch in range(1, cfg["max_epochs"] + 1):
            net.train()
            order = torch.randperm(len(zt), generator=gen)
            tot = 0.0
            for s in range(0, len(zt), cfg["batch_size"]):
                b = order[s : s + cfg["batch_size"]]
                zb = zt[b]
                if cfg["noise"] > 0:  # smooths the discrete set of embeddings so the context carries the signal
                    zb = zb + cfg["noise"] * torch.randn(zb.shape, generator=gen)
                loss = -net.log_prob(zb, ct[b]).mean()
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
                opt.step()
                tot += float(loss.detach()) * len(b)
            net.eval()
            with torch.no_grad():
                val = float(-net.log_prob(zv, cv).mean()) + shift
            advance()
            if np.isfinite(val) and val < best - 1e-4:
                best, best_state, best_epoch, bad = val, copy.deepcopy(net.state_dict()), epoch, 0
                train_nll = tot / len(zt) + shift
            else:
                bad += 1
                if bad >= cfg["patience"]:
                    break
    net.load_state_dict(best_state)
    net.eval()
    flow.report = {
        "train_nll": float(train_nll),
        "val_nll": float(best),
        "best_epoch": int(best_epoch),
        "epochs": int(epoch),
        "n_train": int(len(zt)),
        "n_val": int(len(zv)),
        "units": "nats per configuration, density of the raw embedding",
    }
    return flow


def attach_flow(model, dataset, seed: int = 0, config: dict | None = None):
    """Fit the conditional flow for ``model`` and store it in ``model.extras["flow"]``.

    The split is :func:`~invdesign.data.dataset.split_indices` ``(dataset.ids, seed=0)``. With
    ``config["train_set"] == "orbits"`` (the default) the flow fits every enumerated 1-3-defect
    orbit (the design space) except the orbits of the VAL configurations, each conditioned on the
    model's predicted properties, and stops early on the VAL configurations (predicted properties):
    the design pipeline and the exhaustive screen define "in the window" by the model's
    predictions, and a flow fitted only to the ~4k labelled TRAIN configurations with their DFT
    values puts almost no density on design-space regions the model predicts in a window but
    where no training configuration lies (recall of such in-window sets stalled at 0.3-0.7). No
    DFT label outside TRAIN is used (the flow uses none at all in this mode). With ``"train"`` it
    fits the TRAIN split conditioned on the DFT targets, VAL for early stopping. TEST is never
    used as a labelled set. Either way the context is ``(properties, composition)`` and the
    training set's contexts become the flow's :class:`ContextPrior`. Returns ``model`` (plain
    tensors and numbers, saved with the model).
    """
    from invdesign.data.dataset import TARGETS, split_indices
    from invdesign.lattice.enumerate import compositions

    cfg = {**DEFAULT_CONFIG, **(config or {})}
    unknown = sorted(set(cfg) - set(DEFAULT_CONFIG))
    if unknown:
        raise InvdesignError(f"unknown flow setting(s) {unknown}; known: {sorted(DEFAULT_CONFIG)}")
    sp = getattr(model, "meta", {}).get("split", {})  # the model's own split: the flow never sees its TEST
    split = split_indices(dataset.ids, tuple(sp.get("fractions", (0.8, 0.1, 0.1))), sp.get("seed", 0))
    comp = compositions(dataset.occ, model.host)  # (N, T) defect counts per type: the flow's context
    tr, va = split["train"], split["val"]
    if cfg["train_set"] == "train":
        y = dataset.y(TARGETS)
        z = np.asarray(model.embed(dataset.occ[np.concatenate([tr, va])]), float)
        zt, zv = z[: len(tr)], z[len(tr) :]
        flow = fit_flow(zt, y[tr], comp[tr], zv, y[va], comp[va], seed=seed, config=cfg)
    elif cfg["train_set"] == "orbits":
        from invdesign.generate.decoder import Limits, orbit_index, orbit_predictions

        idx = orbit_index(model, Limits.make(model.host))
        val_keys = set(dataset.subset(va).keys)
        keep = np.array([str(k) not in val_keys for k in idx.keys], dtype=bool)
        y_orb, _ = orbit_predictions(model, idx)
        zv = np.asarray(model.embed(dataset.occ[va]), float)
        yv = np.asarray(model.predict(dataset.occ[va])[0], float)
        flow = fit_flow(idx.z[keep], y_orb[keep], idx.composition[keep], zv, yv, comp[va], seed=seed, config=cfg)
        flow.report["train_set"] = "enumerated 1-3-defect orbits except VAL's, model-predicted targets"
    else:
        raise InvdesignError(f"flow train_set must be 'orbits' or 'train', not {cfg['train_set']!r}")
    model.extras["flow"] = flow.to_state()
    _FLOW_CACHE.pop(id(model), None)
    store_design_tables(model)
    return model


def store_design_tables(model) -> None:
    """Keep the embeddings of every 1-3-defect orbit and of the training set in ``model.extras``.

    A saved model then decodes and checks without re-embedding the 13,609 orbits on first use
    (cold start); the tables are tagged with the embedding they came from and ignored otherwise.
    """
    from invdesign.generate.checks import known_set
    from invdesign.generate.decoder import _model_tag, orbit_index

    idx = orbit_index(model)
    ks = known_set(model)
    model.extras["design_tables"] = {
        "tag": _model_tag(model, model.host),
        "orbit_max_defects": int(idx.max_defects),
        "orbit_types": [int(t) for t in idx.types],
        "orbit_z": torch.as_tensor(idx.z, dtype=torch.float64),
        "train_z": torch.as_tensor(ks.z, dtype=torch.float64),
    }


_FLOW_CACHE: dict[int, tuple[object, ConditionalFlow]] = {}


def get_flow(model) -> ConditionalFlow:
    """The model's conditional flow (rebuilt once per model object from ``extras["flow"]``)."""
    hit = _FLOW_CACHE.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    state = getattr(model, "extras", {}).get("flow")
    if state is None:
        raise InvdesignError("this model has no conditional flow; train it with `invdesign train` (or attach_flow)")
    flow = ConditionalFlow.from_state(state)
    _FLOW_CACHE[id(model)] = (model, flow)
    return flow
