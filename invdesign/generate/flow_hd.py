"""The high-density conditional flow: ``p(z | properties, composition)`` over 4-30-defect configurations.

The packaged model's own flow (:mod:`invdesign.generate.flow`) is fitted on the enumerated 1-3-defect
orbits; asked for 16-24 defects it samples where those were. This flow is fitted on configurations
that cover the large spaces (8x8 MoS2, 4-30 defects: the count uniform, one, two or all four defect
types, random / clustered / dispersed placements; ``benchmarks/fit_flow_hd.py`` regenerates it),
labelled with the model's predictions and conditioned on ``(predicted properties, composition)``.
It is stored apart from the model (:data:`RESOURCE`, tagged with the embedding it was fitted on) and
loaded lazily, only for requests beyond the enumerable space.

It also carries its training configurations, which give a cheap map from a flow sample to a start
configuration for annealing (:meth:`HDFlow.starts`): the training configuration nearest the
sample (whitened embedding) among those within the limits, moved to the sampled composition by
removing, re-typing or adding defects. Annealing then refines it
(:func:`invdesign.generate.anneal.anneal`, ``start=`` / ``restart=``): the flow chooses where to start
(compositions and arrangements whose predicted properties lie in the window), the search makes
each start an in-window configuration of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from invdesign.errors import InvdesignError
from invdesign.generate.decoder import Limits, validate
from invdesign.generate.flow import ConditionalFlow, fit_flow
from invdesign.lattice.enumerate import compositions

RESOURCE = Path(__file__).resolve().parent.parent / "resources" / "flow_hd.pt"
FORMAT = "invdesign.flow_hd/1"
REFIT = "python benchmarks/fit_flow_hd.py sample --work W --n 4600 && python benchmarks/fit_flow_hd.py fit --work W"
HD_CONFIG = {"max_epochs": 300, "patience": 25}  # flow settings for the high-density set (else DEFAULT_CONFIG)
SEED_TEMPERATURE = 1.0  # scale of the base Gaussian when sampling start configurations
SEED_SPREAD = 4  # start configurations: contexts drawn 4x over and kept round-robin over compositions


@dataclass
class HDFlow:
    """A conditional flow with its training configurations.

    Attributes:
        flow: the fitted :class:`~invdesign.generate.flow.ConditionalFlow` (context: 2 targets + 4 type counts).
        occ: ``(N, n_sites)`` uint8 training configurations (distinct up to symmetry).
        z: ``(N, d)`` their embeddings under the model the flow was fitted for.
        tag: that model's embedding tag (:func:`invdesign.generate.decoder._model_tag`).
        report: fit summary (sizes, NLLs, the context check).
    """

    flow: ConditionalFlow
    occ: np.ndarray
    z: np.ndarray
    tag: str
    report: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        import torch

        path = Path(path)
        state = {"format": FORMAT, "flow": self.flow.to_state(), "occ": torch.as_tensor(self.occ, dtype=torch.uint8),
                 "z": torch.as_tensor(self.z, dtype=torch.float32), "tag": self.tag, "report": dict(self.report)}
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> HDFlow:
        import torch

        try:
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as e:
            raise InvdesignError(f"cannot read the high-density flow ({e})", source=str(path)) from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise InvdesignError(f"not a high-density flow in format {FORMAT}", source=str(path))
        return cls(ConditionalFlow.from_state(state["flow"]), np.asarray(state["occ"], dtype=np.uint8),
                   np.asarray(state["z"], dtype=np.float64), str(state["tag"]), dict(state.get("report", {})))

    # ------------------------------------------------------------------ use
    def allowed(self, host, limits: Limits, strict: bool = True) -> np.ndarray:
        """``(N,)`` bool over the context prior: compositions within ``limits`` (count range and allowed
        types; ``strict=False``: the count range only)."""
        c = self.flow.prior.counts
        banned = [t for t in range(c.shape[1]) if t not in limits.types]
        n = c.sum(axis=1)
        ok = (n >= limits.min_defects) & (n <= limits.max_defects)
        if banned and strict:
            ok &= c[:, banned].sum(axis=1) == 0
        return ok

    def covers(self, host, limits: Limits) -> bool:
        """True when the flow saw configurations with a defect count within ``limits``."""
        return bool(self.allowed(host, limits, strict=False).any())

    def sample(self, host, window, limits: Limits, m: int, seed: int = 0, temperature: float = SEED_TEMPERATURE,
               spread: int = 1):
        """``m`` draws ``(z (m, d), y (m, 2) eV, counts (m, T))`` for ``window`` within ``limits``.

        Compositions come from the prior items within the limits; when none has only allowed types
        (e.g. ``--types`` narrower than any training family), from those with a defect count in range,
        their banned types' counts moved to allowed types (same sublattice first). ``spread > 1``:
        ``spread x m`` contexts are drawn and ``m`` kept round-robin over their distinct compositions
        (every composition drawn once before any twice), so a few compositions that dominate the
        window's prior do not take every sample.
        """
        allowed = self.allowed(host, limits)
        if not allowed.any():
            allowed = self.allowed(host, limits, strict=False)
            if not allowed.any():
                raise InvdesignError(f"the high-density flow saw no configuration with a defect count within "
                                     f"{limits.min_defects}-{limits.max_defects}; refit it to cover them ({REFIT})")
        rng = np.random.default_rng(seed)
        y, counts = self.flow.prior.sample(np.asarray(window.array, dtype=np.float64), spread * m, allowed, rng)
        if spread > 1:
            _, comp_id = np.unique(counts, axis=0, return_inverse=True)
            comp_id = comp_id.reshape(-1)
            rank = np.zeros(len(comp_id), dtype=np.int64)  # i-th draw of its composition
            seen: dict[int, int] = {}
            for i, c in enumerate(comp_id):
                rank[i] = seen.get(int(c), 0)
                seen[int(c)] = rank[i] + 1
            keep = np.lexsort((np.arange(len(rank)), rank))[:m]
            y, counts = y[keep], counts[keep]
        z = self.flow.sample(y, counts, seed=seed + 1, temperature=temperature)
        return z, y, _project(counts.astype(np.int64), host, limits)

    def starts(self, host, window, limits: Limits, m: int, seed: int = 0, temperature: float = SEED_TEMPERATURE) -> np.ndarray:
        """``(m, n_sites)`` uint8 start configurations within ``limits`` from ``m`` flow samples
        (compositions spread: :data:`SEED_SPREAD`).

        Each sample ``(z, counts)`` maps to the training configuration nearest ``z`` (the flow's
        whitened coordinates) among those within the limits, then to the sampled composition:
        surplus defects of a type are re-typed to a missing type of the same sublattice or removed,
        missing ones added on free sites of their sublattice nearest the existing defects (the
        arrangement stays close to the neighbour's). Cost: one nearest-neighbour query per sample.
        """
        rng = np.random.default_rng(seed + 17)
        z, _, counts = self.sample(host, window, limits, m, seed, temperature, spread=SEED_SPREAD)
        pool = np.flatnonzero(validate(self.occ, host, limits))
        if not len(pool):  # no training configuration within the limits: start from the host
            base = np.repeat(host.host_code[None], m, axis=0)
        else:
            w = np.linalg.inv(self.flow.z_chol)
            zp = (self.z[pool] - self.flow.z_mean) @ w.T
            zs = (z - self.flow.z_mean) @ w.T
            d2 = (zs**2).sum(1)[:, None] - 2 * zs @ zp.T + (zp**2).sum(1)[None, :]
            base = self.occ[pool[np.argmin(d2, axis=1)]].copy()
        out = np.stack([_to_composition(base[i], counts[i].astype(int), host, rng) for i in range(m)])
        bad = ~validate(out, host, limits)
        if bad.any():  # a bug, not a user error: the composition came from the limits-restricted prior
            raise AssertionError(f"{int(bad.sum())} flow start configurations outside the limits")
        return out


def _project(counts: np.ndarray, host, limits: Limits) -> np.ndarray:
    """``(m, T)`` compositions with banned types' counts moved to allowed types (same sublattice first)."""
    counts = counts.copy()
    allowed = list(limits.types)
    for t in range(counts.shape[1]):
        if t in allowed:
            continue
        same = [u for u in allowed if host.defect_types[u][0] == host.defect_types[t][0]]
        to = (same or allowed)[0]
        counts[:, to] += counts[:, t]
        counts[:, t] = 0
    return counts


def _to_composition(occ: np.ndarray, target: np.ndarray, host, rng: np.random.Generator) -> np.ndarray:
    """``occ`` moved to the composition ``target (T,)``: re-type, remove, then add near existing defects."""
    occ = occ.copy()
    hc = host.host_code
    types = host.defect_types
    have = compositions(occ[None], host)[0]
    for t, (sub, code) in enumerate(types):  # surplus: re-type to a missing type of the same sublattice, else remove
        while have[t] > target[t]:
            sites = np.flatnonzero((host.sublattice == sub) & (occ == code))
            i = sites[rng.integers(len(sites))]
            need = [u for u, (s2, _) in enumerate(types) if s2 == sub and have[u] < target[u]]
            if need:
                u = need[rng.integers(len(need))]
                occ[i] = types[u][1]
                have[u] += 1
            else:
                occ[i] = hc[i]
            have[t] -= 1
    D = host.min_image_distance
    for t, (sub, code) in enumerate(types):  # missing: add on the free site nearest the defects (a little jitter)
        while have[t] < target[t]:
            free = np.flatnonzero((host.sublattice == sub) & (occ == hc))
            defects = np.flatnonzero(occ != hc)
            d = D[np.ix_(free, defects)].min(axis=1) if len(defects) else np.zeros(len(free))
            occ[free[np.argmin(d + rng.uniform(0.0, 1.0, len(free)))]] = code
            have[t] += 1
    return occ


def fit_hd_flow(model, occ: np.ndarray, z: np.ndarray | None = None, seed: int = 0, config: dict | None = None,
                val_fraction: float = 0.1) -> HDFlow:
    """Fit the high-density flow on ``occ (N, n_sites)`` (deduplicated up to symmetry) for ``model``.

    Targets are ``model.predict`` means (eV), the context ``(targets, composition)``; a seeded
    ``val_fraction`` of the configurations stops training early. ``z`` (the configurations'
    embeddings under ``model``) may be passed when already computed. The report holds the
    validation NLL with true and with shuffled contexts (nats): their gap is what the context carries.
    """
    from invdesign.generate.decoder import _model_tag
    from invdesign.lattice.canonical import canonical_keys

    host = model.host
    occ = np.asarray(occ, dtype=np.uint8)
    keys = canonical_keys(occ, host)
    _, first = np.unique(np.array(keys, dtype=object).astype(str), return_index=True)
    keep = np.sort(first)
    occ = occ[keep]
    z = np.asarray(model.embed(occ), float) if z is None else np.asarray(z, float)[keep]
    y = np.asarray(model.predict(occ)[0], float)
    comp = compositions(occ, host)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(occ))
    n_val = max(1, int(round(val_fraction * len(occ))))
    va, tr = perm[:n_val], perm[n_val:]
    flow = fit_flow(z[tr], y[tr], comp[tr], z[va], y[va], comp[va], seed=seed, config={**HD_CONFIG, **(config or {})})
    shuffled = rng.permutation(len(va))
    nll_shuf = float(-flow.log_prob(z[va], y[va][shuffled], comp[va][shuffled]).mean())
    n_def = comp.sum(axis=1)
    flow.report.update(
        train_set="8x8 MoS2, 4-30 defects (benchmarks/fit_flow_hd.py), model-predicted targets",
        n_configurations=int(len(occ)), n_defects_range=[int(n_def.min()), int(n_def.max())],
        val_nll_shuffled_context=nll_shuf,
    )
    return HDFlow(flow, occ, z, _model_tag(model, host), dict(flow.report))


ENV = "INVDESIGN_FLOW_HD"  # path of a high-density flow to use instead of the packaged one
_LOADED: dict[str, tuple[float, HDFlow]] = {}


def flow_path() -> Path:
    """The high-density flow in use: ``$INVDESIGN_FLOW_HD`` if set, else the packaged :data:`RESOURCE`."""
    import os

    return Path(os.environ[ENV]) if os.environ.get(ENV) else RESOURCE


def get_hd_flow(model, path: str | Path | None = None) -> HDFlow:
    """The high-density flow for ``model`` (:func:`flow_path` unless ``path``; read once per file).

    Raises :class:`InvdesignError` when the file is missing or was fitted for another embedding
    (then it would sample the wrong space; the message gives the command that refits it).
    """
    from invdesign.generate.decoder import _model_tag

    path = Path(path) if path is not None else flow_path()
    if not path.is_file():
        raise InvdesignError(f"no high-density flow; fit one for this model with: {REFIT}", source=str(path))
    key = str(path.resolve())
    mtime = path.stat().st_mtime
    hit = _LOADED.get(key)
    if hit is None or hit[0] != mtime:
        hit = (mtime, HDFlow.load(path))
        _LOADED[key] = hit
    hd = hit[1]
    tag = _model_tag(model, model.host)
    if hd.tag != tag:
        raise InvdesignError(f"the high-density flow was fitted for another model's embedding (tag {hd.tag}, this "
                             f"model {tag}); refit it with: {REFIT}", source=str(path))
    return hd


def hd_flow_available(model, limits: Limits | None = None, path: str | Path | None = None) -> tuple[bool, str]:
    """``(True, "")`` when :func:`get_hd_flow` would succeed for ``model`` (and the flow covers the
    defect counts of ``limits``), else ``(False, why)``."""
    try:
        hd = get_hd_flow(model, path)
    except InvdesignError as e:
        return False, str(e)
    if limits is not None and not hd.covers(model.host, limits):
        return False, f"the high-density flow saw no configuration with {limits.min_defects}-{limits.max_defects} defects"
    return True, ""
