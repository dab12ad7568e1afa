"""Decoder: embedding ``z`` -> defect configuration (the inverse of ``Model.embed``).

Two methods, chosen by the size of the constrained space (limits: defect count range, allowed
defect types):

- ``exact``: where the space is enumerable (at most :data:`ENUM_LIMIT` symmetry-distinct
  configurations; every 1-3-defect configuration of 8x8 MoS2 is 13,609 orbits) every orbit
  representative is embedded once per model (:func:`orbit_index`, cached in memory and on disk)
  and ``z`` decodes to the orbit with the nearest embedding. ``decode(embed(c))`` is then ``c``
  up to symmetry whenever the embedding separates ``c`` from every other orbit.
- ``incremental``: otherwise (e.g. 4+ defects) for a model with an invariant encoder: start from
  the nearest of a bank of random configurations across the allowed counts, then stochastic
  steepest descent on ``|z - embed(c)|`` over single-defect moves, each evaluated exactly by an
  incremental embedding update (:mod:`invdesign.generate.search`,
  :mod:`invdesign.embed.incremental`: ``O(k^2)`` triple terms per move instead of ``O(k^3)``).
  Exact when the search lands on a configuration embedding onto ``z`` (it stops there); otherwise
  the nearest configuration found, flagged ``method == "incremental"``.
- ``search``: the same beyond enumeration for any model with ``embed`` (no encoder needed; slow:
  every candidate re-embedded whole): start from the nearest enumerable orbit, then repeatedly
  take the best of all single moves (add, remove, re-type or move one defect) by embedding
  distance to ``z``. The answer is approximate and flagged ``method == "search"``.

Every returned configuration is valid: allowed species on each sublattice, defect count and
types within the limits (:func:`validate` is applied to every answer).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from invdesign.errors import InvdesignError
from invdesign.lattice.canonical import canonical_keys
from invdesign.lattice.enumerate import compositions, enumerate_orbits, parse_defect_types
from invdesign.lattice.host import HostLattice

ENUM_LIMIT = 200_000  # largest constrained space (orbits) decoded exactly
BASE_MAX_DEFECTS = 3  # the shared orbit table: all types, 1..3 defects


@dataclass(frozen=True)
class Limits:
    """Constraints on configurations: defect count range and allowed defect types.

    Attributes:
        max_defects, min_defects: inclusive range of the total number of defects.
        types: allowed indices into ``host.defect_types`` (sorted).
    """

    max_defects: int = 3
    min_defects: int = 1
    types: tuple[int, ...] = ()

    @classmethod
    def make(
        cls, host: HostLattice, max_defects: int = 3, min_defects: int = 1, types: list[str] | tuple[str, ...] | None = None
    ) -> Limits:
        """Validated limits; ``types`` are labels like ``"V_S"`` (None: all the host's types)."""
        if min_defects < 1:
            raise InvdesignError(f"--min-defects must be >= 1, not {min_defects}")
        if max_defects < min_defects:
            raise InvdesignError(f"--max-defects {max_defects} is below the minimum {min_defects}")
        idx = parse_defect_types(host, list(types) if types else None)
        if not idx:
            raise InvdesignError("no defect types allowed")
        from invdesign.limits import check_defect_range

        check_defect_range(host, max_defects, min_defects, idx)
        return cls(int(max_defects), int(min_defects), tuple(sorted(set(idx))))

    def labels(self, host: HostLattice) -> list[str]:
        return [host.defect_label(*host.defect_types[t]) for t in self.types]

    def as_dict(self, host: HostLattice) -> dict:
        return {"min_defects": self.min_defects, "max_defects": self.max_defects, "types": self.labels(host)}


def validate(occ: np.ndarray, host: HostLattice, limits: Limits) -> np.ndarray:
    """``(N,)`` bool: allowed species on every site, and defect count and types within ``limits``."""
    occ = np.asarray(occ)
    ok = host.allowed[host.sublattice[None, :], occ].all(axis=1)
    comp = compositions(occ, host)
    n = comp.sum(axis=1)
    banned = [t for t in range(len(host.defect_types)) if t not in limits.types]
    ok &= (n >= limits.min_defects) & (n <= limits.max_defects)
    if banned:
        ok &= comp[:, banned].sum(axis=1) == 0
    return ok


def estimate_orbits(host: HostLattice, limits: Limits) -> float:
    """Approximate number of symmetry-distinct configurations within ``limits``
    (:func:`invdesign.limits.estimate_orbit_count`: labelled placements over the group order, a lower bound)."""
    from invdesign.limits import estimate_orbit_count

    return estimate_orbit_count(host, limits.max_defects, limits.min_defects, limits.types)


# ---------------------------------------------------------------------- the orbit table
@dataclass
class OrbitIndex:
    """Embedded orbit representatives of a constrained space.

    Attributes:
        host: host lattice.
        occ: ``(R, n_sites)`` uint8 canonical representatives.
        keys: ``R`` canonical keys.
        composition: ``(R, T)`` defect-type counts.
        orbit_size: ``(R,)`` configurations per orbit.
        z: ``(R, d)`` embeddings under the model.
        max_defects, types: what was enumerated.
    """

    host: HostLattice
    occ: np.ndarray
    keys: np.ndarray
    composition: np.ndarray
    orbit_size: np.ndarray
    z: np.ndarray
    max_defects: int
    types: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def n_defects(self) -> np.ndarray:
        return self.composition.sum(axis=1)

    @cached_property
    def key_index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.keys)}

    def mask(self, limits: Limits, exclude: set[str] | frozenset[str] = frozenset()) -> np.ndarray:
        """``(R,)`` bool: orbits within ``limits`` and not in ``exclude`` (canonical keys)."""
        n = self.n_defects
        ok = (n >= limits.min_defects) & (n <= limits.max_defects)
        banned = [t for t in range(self.composition.shape[1]) if t not in limits.types]
        if banned:
            ok &= self.composition[:, banned].sum(axis=1) == 0
        for k in exclude:
            i = self.key_index.get(k)
            if i is not None:
                ok[i] = False
        return ok

    def covers(self, limits: Limits) -> bool:
        return limits.max_defects <= self.max_defects and set(limits.types) <= set(self.types)

    def nearest(
        self, z: np.ndarray, mask: np.ndarray | None = None, k: int = 1, metric: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(N, k)`` indices and distances of the ``k`` nearest orbits (within ``mask``).

        ``metric``: optional ``(d, d)`` matrix ``A``; distances are ``|A (z - z')|`` (Euclidean if None).
        """
        z = np.asarray(z, dtype=np.float64).reshape(-1, self.z.shape[1])
        cand = np.flatnonzero(mask) if mask is not None else np.arange(len(self))
        if len(cand) == 0:
            raise InvdesignError("no configuration satisfies the limits (all excluded?)")
        k = min(k, len(cand))
        zc = self.z[cand]
        if metric is not None:
            zc = zc @ np.asarray(metric, dtype=np.float64).T
            z = z @ np.asarray(metric, dtype=np.float64).T
        sq = (zc**2).sum(1)
        idx = np.empty((len(z), k), dtype=np.int64)
        dist = np.empty((len(z), k))
        step = max(1, 4_000_000 // len(cand))
        for s in range(0, len(z), step):
            q = z[s : s + step]
            d2 = np.maximum((q**2).sum(1)[:, None] + sq[None, :] - 2 * q @ zc.T, 0.0)
            part = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < len(cand) else np.tile(np.arange(len(cand)), (len(q), 1))
            pd = np.take_along_axis(d2, part, axis=1)
            order = np.argsort(pd, axis=1, kind="stable")
            part = np.take_along_axis(part, order, axis=1)
            # exact distances for the winners (the expansion above loses precision near 0)
            exact = np.linalg.norm(zc[part] - q[:, None, :], axis=2)
            idx[s : s + step] = cand[part]
            dist[s : s + step] = exact
        return idx, dist


def _model_tag(model, host: HostLattice) -> str:
    """Content tag of a model's embedding: hash of the embeddings of fixed probe configurations."""
    tag = getattr(model, "_invdesign_probe_tag", None)
    if tag is not None:
        return tag
    rng = np.random.default_rng(12345)
    probe = np.repeat(host.host_code[None], 16, axis=0)
    for i in range(16):
        for t in rng.choice(len(host.defect_types), size=1 + i % 3):
            sub, code = host.defect_types[t]
            sites = np.flatnonzero((host.sublattice == sub) & (probe[i] == host.host_code))
            probe[i, rng.choice(sites)] = code
    z = np.asarray(model.embed(probe), dtype=np.float64)
    h = hashlib.sha256(host.fingerprint.encode())
    h.update(np.round(z, 5).tobytes())
    tag = h.hexdigest()[:20]
    try:
        model._invdesign_probe_tag = tag
    except AttributeError:
        pass
    return tag


_INDEX_CACHE: dict[tuple, tuple[object, OrbitIndex]] = {}


def _embed_batched(model, occ: np.ndarray, desc: str, batch: int = 4096) -> np.ndarray:
    from invdesign.progress import track

    parts = [np.asarray(model.embed(occ[s : s + batch]), dtype=np.float64) for s in track(range(0, len(occ), batch), desc)]
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def orbit_index(model, limits: Limits | None = None, use_cache: bool = True) -> OrbitIndex:
    """The embedded orbit table covering ``limits`` (enumerable spaces only), cached per model.

    Limits within 1..3 defects share one table of all types; larger enumerable spaces get their
    own. Cached in memory per model object and on disk (``$INVDESIGN_CACHE_DIR``) per embedding.
    """
    host = model.host
    limits = limits or Limits.make(host)
    if limits.max_defects <= BASE_MAX_DEFECTS:
        max_d, types = BASE_MAX_DEFECTS, tuple(range(len(host.defect_types)))
    else:
        if estimate_orbits(host, limits) > ENUM_LIMIT:
            raise InvdesignError(f"the space within {limits.as_dict(host)} is too large to enumerate")
        max_d, types = limits.max_defects, limits.types
    ck = (id(model), max_d, types)
    hit = _INDEX_CACHE.get(ck)
    if hit is not None and hit[0] is model:
        return hit[1]
    tag = _model_tag(model, host)
    from invdesign.data.dataset import cache_dir

    path = cache_dir() / f"orbits-{tag}-{max_d}-{'-'.join(map(str, types))}.npz"
    idx = None
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                idx = OrbitIndex(host, f["occ"], f["keys"].astype(object), f["composition"], f["orbit_size"], f["z"], max_d, types)
        except (OSError, ValueError, KeyError):
            idx = None
    if idx is None:
        labels = [host.defect_label(*host.defect_types[t]) for t in types]
        tab = enumerate_orbits(host, max_d, 1, labels)
        z = stored_table(model, "orbit_z", len(tab), max_d, types)
        if z is None:
            z = _embed_batched(model, tab.occ, "embedding the enumerated orbits")
        idx = OrbitIndex(host, tab.occ, np.array(tab.keys, dtype=object), tab.composition, tab.orbit_size, z, max_d, types)
        if use_cache:
            _save_index(path, idx)
    _INDEX_CACHE[ck] = (model, idx)
    return idx


_PRED_CACHE: dict[int, tuple[object, object, tuple[np.ndarray, np.ndarray]]] = {}
_MOMENT_CACHE: dict[int, tuple[object, object, tuple[np.ndarray, np.ndarray]]] = {}


def orbit_moment_predictions(model, idx) -> tuple[np.ndarray, np.ndarray]:
    """``(R, 3)`` mean and std of every orbit of ``idx`` with the moment column (``model.predict_with_moment``: eV,
    eV, Bohr magnetons per cell): for windows that bound ``total_mag``. Cached per model in memory (not on disk)."""
    hit = _MOMENT_CACHE.get(id(model))
    if hit is not None and hit[0] is model and hit[1] is idx:
        return hit[2]
    from invdesign.progress import track

    means, stds = [], []
    for s in track(range(0, len(idx.occ), 4096), "screening the enumerated orbits (with the moment)"):
        m, sd = model.predict_with_moment(idx.occ[s : s + 4096])
        means.append(np.asarray(m, float)[:, :3])
        stds.append(np.asarray(sd, float)[:, :3])
    out = (np.concatenate(means), np.concatenate(stds))
    _MOMENT_CACHE.clear()  # one model's table at a time (a screen holds every orbit)
    _MOMENT_CACHE[id(model)] = (model, idx, out)
    return out


def orbit_predictions(model, idx, use_cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(R, 2)`` mean and std (eV, best head) for every orbit of ``idx``.

    Cached per model in memory and, with ``use_cache``, on disk (:mod:`invdesign.generate.screen_cache`:
    keyed by the model's serving state, the code and resources, the orbit table and the numerical
    environment, so a hit returns the floats this very computation gives).
    """
    hit = _PRED_CACHE.get(id(model))
    if hit is not None and hit[0] is model and hit[1] is idx:
        return hit[2]
    from invdesign.generate import screen_cache

    key = screen_cache.screen_key(model, idx) if use_cache else None  # before predicting (which fills caches)
    out = screen_cache.read(key, len(idx.occ)) if key is not None else None
    if out is None:
        from invdesign.progress import track

        means, stds = [], []
        for s in track(range(0, len(idx.occ), 4096), "screening the enumerated orbits"):
            m, sd = model.predict(idx.occ[s : s + 4096])
            means.append(np.asarray(m, float))
            stds.append(np.asarray(sd, float))
        out = (np.concatenate(means), np.concatenate(stds))
        if key is not None:
            screen_cache.write(key, *out)
    _PRED_CACHE[id(model)] = (model, idx, out)
    return out


def stored_table(model, name: str, rows: int, max_defects: int | None = None, types: tuple[int, ...] | None = None):
    """``(rows, d)`` embeddings saved with the model (``extras["design_tables"][name]``), or None.

    Used only when the tables carry this model's embedding tag (and, for the orbit table, the same
    enumeration); anything else is recomputed.
    """
    tables = getattr(model, "extras", {}).get("design_tables")
    if not isinstance(tables, dict) or tables.get("tag") != _model_tag(model, model.host):
        return None
    if max_defects is not None and (tables.get("orbit_max_defects") != max_defects or tuple(tables.get("orbit_types", ())) != tuple(types)):
        return None
    z = tables.get(name)
    if z is None:
        return None
    z = np.asarray(z, dtype=np.float64)
    return z if z.ndim == 2 and z.shape[0] == rows else None


def _save_index(path, idx: OrbitIndex) -> None:
    import os
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(
                fh, occ=idx.occ, keys=np.array(idx.keys, dtype=str), composition=idx.composition,
                orbit_size=idx.orbit_size, z=idx.z,
            )
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs time


def is_enumerable(host: HostLattice, limits: Limits) -> bool:
    """True when the constrained space is small enough for the exact decoder and exhaustive mode."""
    return limits.max_defects <= BASE_MAX_DEFECTS or estimate_orbits(host, limits) <= ENUM_LIMIT


# ---------------------------------------------------------------------- decoding
@dataclass
class DecodeResult:
    """Decoded configurations.

    Attributes:
        occ: ``(N, n_sites)`` uint8 valid configurations (canonical representatives when exact).
        keys: ``N`` canonical keys.
        distance: ``(N,)`` embedding distance ``||embed(occ_i) - z_i||``.
        method: ``(N,)`` ``"exact"`` (nearest enumerated orbit), ``"incremental"`` (search with
            incremental embedding updates) or ``"search"`` (local search, full re-embedding).
    """

    occ: np.ndarray
    keys: list[str]
    distance: np.ndarray
    method: np.ndarray


def decode(
    z: np.ndarray,
    model,
    limits: Limits | None = None,
    exclude: set[str] | frozenset[str] = frozenset(),
    distinct: bool = False,
    method: str = "auto",
    max_steps: int = 30,
    metric: np.ndarray | None = None,
    prefer: np.ndarray | None = None,
    k_prefer: int = 1,
    seed: int = 0,
    restarts: int = 1,
    batch: int | None = None,
    start: np.ndarray | None = None,
    search: dict | None = None,
) -> DecodeResult:
    """Decode ``(N, d)`` embeddings into valid configurations within ``limits``.

    Args:
        z: ``(N, d)`` embeddings (the model's units).
        model: a :class:`~invdesign.model.Model` (``host``, ``embed``).
        limits: constraints (default: 1..3 defects, every type).
        exclude: canonical keys never returned.
        distinct: decode each row to the nearest configuration not returned for an earlier row
            (rows are processed in order), so the answers are distinct up to symmetry.
        method: ``"auto"`` (exact where enumerable, else ``"incremental"`` for a model with an
            invariant encoder, else ``"search"``), ``"exact"``, ``"incremental"`` or ``"search"``.
        max_steps: move limit of the local search (``incremental``: search steps per restart, each
            evaluating ``batch`` moves).
        metric: optional ``(d, d)`` matrix ``A`` for the exact decoder's nearest-orbit search,
            distance ``|A (z - z')|`` (the design pipeline uses the flow's whitening); reported
            distances are always Euclidean.
        prefer: optional ``(R,)`` score over the orbit table of ``limits`` (:func:`orbit_index`),
            exact decoder only: each row takes the highest-scoring of its ``k_prefer`` nearest
            free orbits (ties: the nearest). ``k_prefer = 1`` (default) is the plain nearest
            orbit; the design pipeline passes ``p_in_window`` to pick, among the few orbits
            around a flow sample, one the model puts in the window.
        seed, restarts, batch: ``incremental`` only: seeds the search (same seed, same answer);
            searches per row (from the nearest seed-bank entries); exact move evaluations per step
            (default :data:`invdesign.generate.search.BATCH`).
        start: ``incremental`` only: optional ``(N, n_sites)`` starting configurations searched first
            (e.g. a guess near each row); one outside the limits is ignored.
        search: ``incremental`` only: further options of :func:`invdesign.generate.search.search_decode`
            (``temperature``, ``per_step``, ``exhaustive``, ``seeds``).

    Returns:
        a :class:`DecodeResult` with ``N`` rows.
    """
    host = model.host
    limits = limits or Limits.make(host)
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or not np.isfinite(z).all():
        raise InvdesignError(f"embeddings must be a finite (N, d) array; got shape {z.shape}")
    if method not in ("auto", "exact", "search", "incremental"):
        raise InvdesignError(f"decode method must be auto, exact, incremental or search, not {method!r}")
    if estimate_orbits(host, limits) == 0:
        raise InvdesignError(f"no configuration satisfies the limits {limits.as_dict(host)} (more defects than sites?)")
    if method == "auto":
        method = "exact" if is_enumerable(host, limits) else ("incremental" if _has_encoder(model) else "search")
    if method == "exact":
        res = _decode_exact(z, model, limits, set(exclude), distinct, metric, prefer, k_prefer)
    elif method == "incremental":
        if not _has_encoder(model):
            raise InvdesignError("the incremental decoder needs a model with an invariant encoder")
        from invdesign.generate.search import BATCH, search_decode

        if z.shape[1] != model.encoder.dim:
            raise InvdesignError(f"embeddings have {z.shape[1]} dimensions, the model {model.encoder.dim}")
        if start is not None and np.shape(start) != (len(z), host.n_sites):
            raise InvdesignError(f"start must be ({len(z)}, {host.n_sites}) occupancies; got {np.shape(start)}")
        subs = {host.defect_types[t][0] for t in limits.types}
        capacity = int(sum((host.sublattice == s_).sum() for s_ in subs))
        if limits.min_defects > capacity:
            raise InvdesignError(f"--min-defects {limits.min_defects} exceeds the {capacity} sites the allowed types can occupy")
        occ, keys, dist, _stats = search_decode(
            z, model, host, limits.min_defects, min(limits.max_defects, capacity), limits.types, set(exclude), distinct,
            steps=max_steps, batch=batch or BATCH, restarts=restarts, seed=seed, start=start, **(search or {}),
        )
        res = DecodeResult(occ, keys, dist, np.full(len(z), "incremental", dtype=object))
    else:
        res = _decode_search(z, model, limits, set(exclude), distinct, max_steps)
    ok = validate(res.occ, host, limits)
    if not ok.all():  # a bug, not a user error: the decoder must never return invalid configurations
        raise AssertionError(f"decoder produced {int((~ok).sum())} invalid configurations")
    return res


def _has_encoder(model) -> bool:
    from invdesign.embed.encoder import InvariantEncoder

    return isinstance(getattr(model, "encoder", None), InvariantEncoder)


def _decode_exact(
    z: np.ndarray, model, limits: Limits, exclude: set[str], distinct: bool, metric=None,
    prefer: np.ndarray | None = None, k_prefer: int = 1,
) -> DecodeResult:
    idx_tab = orbit_index(model, limits)
    if z.shape[1] != idx_tab.z.shape[1]:
        raise InvdesignError(f"embeddings have {z.shape[1]} dimensions, the model {idx_tab.z.shape[1]}")
    mask = idx_tab.mask(limits, exclude)
    n_ok = int(mask.sum())
    if n_ok == 0:
        raise InvdesignError("no configuration satisfies the limits (all excluded?)")
    k_prefer = max(1, int(k_prefer)) if prefer is not None else 1
    if prefer is not None and len(prefer) != len(idx_tab):
        raise InvdesignError(f"prefer has {len(prefer)} scores; the orbit table has {len(idx_tab)} orbits")

    def pick(cands: np.ndarray) -> int:
        """The best-scoring of the first k_prefer candidates (distance order); the nearest if no scores."""
        if k_prefer == 1:
            return int(cands[0])
        c = cands[:k_prefer]
        return int(c[int(np.argmax(prefer[c]))])  # argmax returns the first (nearest) of ties

    if not distinct:
        nn, _ = idx_tab.nearest(z, mask, k_prefer, metric)
        rows = np.array([pick(r) for r in nn], dtype=np.int64)
    else:
        if len(z) > n_ok:
            raise InvdesignError(f"asked for {len(z)} distinct configurations; only {n_ok} satisfy the limits")
        k = min(n_ok, max(32, 4 * k_prefer))
        nn, _ = idx_tab.nearest(z, mask, k, metric)
        taken = np.zeros(len(idx_tab), dtype=bool)
        rows = np.empty(len(z), dtype=np.int64)
        for i in range(len(z)):
            free = nn[i][~taken[nn[i]]]
            if len(free) < k_prefer and len(free) < n_ok - int(taken.sum()):
                more = idx_tab.nearest(z[i : i + 1], mask & ~taken, min(k_prefer, n_ok - int(taken.sum())), metric)[0][0]
                free = more
            rows[i] = pick(free)
            taken[rows[i]] = True
    d = np.linalg.norm(idx_tab.z[rows] - z, axis=1)
    return DecodeResult(idx_tab.occ[rows].copy(), [str(k) for k in idx_tab.keys[rows]], d, np.full(len(z), "exact", dtype=object))


def _neighbours(occ: np.ndarray, host: HostLattice, limits: Limits) -> np.ndarray:
    """All configurations one move from ``occ``: add, remove, re-type or move one defect."""
    hc = host.host_code
    defects = np.flatnonzero(occ != hc)
    k = len(defects)
    out = []
    type_sub = [(host.defect_types[t][0], host.defect_types[t][1]) for t in limits.types]

    def adds(base: np.ndarray) -> list[np.ndarray]:
        res = []
        free = base == hc
        for sub, code in type_sub:
            sites = np.flatnonzero(free & (host.sublattice == sub))
            if len(sites):
                new = np.repeat(base[None], len(sites), axis=0)
                new[np.arange(len(sites)), sites] = code
                res.append(new)
        return res

    if k < limits.max_defects:
        out += adds(occ)
    for i in defects:
        removed = occ.copy()
        removed[i] = hc[i]
        if k - 1 >= 1:
            out.append(removed[None])
        out += adds(removed)  # moves and re-types (and the same defect back, harmless)
    return np.concatenate(out) if out else occ[None].copy()


def _decode_search(z: np.ndarray, model, limits: Limits, exclude: set[str], distinct: bool, max_steps: int) -> DecodeResult:
    host = model.host
    start_limits = Limits(min(limits.max_defects, BASE_MAX_DEFECTS), 1, limits.types)
    idx_tab = orbit_index(model, start_limits)
    nn, _ = idx_tab.nearest(z, idx_tab.mask(start_limits), 1)
    taken: set[str] = set(exclude)
    occ_out = np.empty((len(z), host.n_sites), dtype=np.uint8)
    keys_out: list[str] = []
    dist_out = np.empty(len(z))
    from invdesign.progress import track

    for i in track(range(len(z)), "decoding by local search"):
        cur = idx_tab.occ[nn[i, 0]].copy()
        cur_d = float(np.linalg.norm(np.asarray(model.embed(cur[None]), float)[0] - z[i]))
        best: tuple[float, np.ndarray, str] | None = None

        def consider(cands: np.ndarray, dists: np.ndarray) -> None:
            nonlocal best
            ok = validate(cands, host, limits)
            if not ok.any():
                return
            order = np.flatnonzero(ok)[np.argsort(dists[ok], kind="stable")]
            for j in order[:64]:
                if best is not None and dists[j] >= best[0]:
                    return
                key = canonical_keys(cands[j : j + 1], host)[0]
                if key not in taken:
                    best = (float(dists[j]), cands[j].copy(), key)
                    return

        consider(cur[None], np.array([cur_d]))
        for _ in range(max_steps):
            nb = _neighbours(cur, host, limits_for_moves(limits))
            dz = np.linalg.norm(np.asarray(model.embed(nb), float) - z[i], axis=1)
            consider(nb, dz)
            j = int(np.argmin(dz))
            below_min = int((cur != host.host_code).sum()) < limits.min_defects
            if dz[j] < cur_d - 1e-12 or below_min:
                cur, cur_d = nb[j], float(dz[j])
            else:
                break
        while best is None:  # still below the minimum count: keep adding the best defect
            nb = _neighbours(cur, host, Limits(limits.max_defects, 1, limits.types))
            nb = nb[(nb != host.host_code).sum(1) > (cur != host.host_code).sum()]
            if len(nb) == 0:
                raise InvdesignError(f"no configuration satisfies the limits {limits.as_dict(host)}")
            dz = np.linalg.norm(np.asarray(model.embed(nb), float) - z[i], axis=1)
            consider(nb, dz)
            cur = nb[int(np.argmin(dz))]
        d, occ, key = best
        occ_out[i], dist_out[i] = occ, d
        keys_out.append(key)
        if distinct:
            taken.add(key)
    return DecodeResult(occ_out, keys_out, dist_out, np.full(len(z), "search", dtype=object))


def limits_for_moves(limits: Limits) -> Limits:
    """Limits used to generate moves: counts may dip below the minimum while searching."""
    return Limits(limits.max_defects, 1, limits.types)
