"""Decoding where nothing can be enumerated: local search on ``|z - embed(c)|`` with incremental updates.

For a target embedding ``z`` and limits (defect count range, allowed types):

1. *Start*: a seed bank of random configurations (:func:`seeds_per_count` per defect count in the range, types
   uniform among the allowed ones; embedded once per decode call and shared by every row) gives
   each row the ``restarts`` bank entries nearest ``z`` (the count and composition are the
   embedding's coarsest features, so the nearest random configuration already has roughly the
   right ones).
2. *Search*: stochastic steepest descent. Each step takes one defect ``m`` (in a shuffled cycle),
   ranks every move of it (hop to any free site of its sublattice with any allowed type, re-type,
   removal) and :data:`N_ADD` random additions by the cheap screen
   (:meth:`~invdesign.embed.incremental.IncrementalEmbedding.screen`: exact node and pair terms),
   and evaluates exactly the ``batch`` best of them (a quarter of the batch: random others); the
   best move is taken when it brings ``embed(c)`` closer to ``z``. Where a step is cheap
   (:func:`exhaustive_max`: up to 6 defects with the packaged encoder) every move of every defect
   is evaluated exactly instead (steepest descent: the screen ranks the last move home too low).
   A restart ends at a local minimum (no gain in a full exhaustive step, or in two cycles over
   the defects) or after ``steps`` steps. Every exact evaluation is
   an :class:`~invdesign.embed.incremental.IncrementalEmbedding` update (``O(k)`` table rows with the
   product-term encoder, ``O(k^2)`` triples with the triple MLP), in float32 (the ranking); the answer's distance is recomputed exactly (float64,
   the full embedding). Measured (``benchmarks/results/decode.md``): from one displaced defect the
   exhaustive descent (4 and 6 defects) returns ``c`` exactly, the screened one did not at 6 (before the
   threshold followed the encoder kind); from random starts it ends on other configurations whose
   embeddings lie about as close to ``z`` as ``c``'s single-move neighbours (the 12-D landscape
   is rugged), so beyond 3 defects decoding is approximate.
3. *Answer*: the nearest configuration seen within the limits (``distinct``: the nearest whose
   canonical key is not taken). The search stops early at an exact hit (``|z - embed(c)|`` at
   round-off), i.e. when it found a configuration that embeds onto ``z``.

This module knows nothing of :mod:`invdesign.generate.decoder` (which calls it): limits arrive as
``(min_defects, max_defects, types)``.
"""

from __future__ import annotations

import numpy as np
import torch

from invdesign.embed.incremental import IncrementalEmbedding
from invdesign.lattice.canonical import canonical_keys
from invdesign.lattice.host import HostLattice

STEPS = 30  # search steps per restart (default)
BATCH = 6  # exact move evaluations per step (the screen's best; a quarter random)
SEEDS_PER_COUNT = {8: 32, 12: 16, 16: 8}  # random configurations per defect count in the seed bank (up to k defects); 4 beyond


def seeds_per_count(k: int) -> int:
    """Seed-bank configurations per count ``k``: many where embedding is cheap (the start matters most)."""
    return next((v for kk, v in SEEDS_PER_COUNT.items() if k <= kk), 4)
MAX_BANK_COUNTS = 10  # defect counts in the seed bank (spread over the range)
N_ADD = 32  # random additions screened per step
PER_STEP = 1  # defects whose every move is screened in one step (a shuffled cycle)
EXHAUSTIVE_FLOPS = 6e9  # a step evaluates every move of every defect exactly when it costs at most this (triple-MLP encoder)
#: the same for the product three-body encoder, whose exact move touches ``O(k)`` table rows (elements gathered and
#: summed, memory-bound): set where a whole-budget exhaustive descent costs about what the screened one does
#: (benchmarks/results/exhaustive.md, packaged encoder, 4 restarts x 24 steps: 1.14x the time at 6 defects; 1.49x
#: at 8 and 3.1x at 12, where it also lands closer; pass ``exhaustive=k`` to pay that)
EXHAUSTIVE_ELEMS = 9e7


def exhaustive_max(encoder, host: HostLattice) -> int:
    """Largest defect count ``k`` whose full move set (``k`` x the largest sublattice's sites x 2 moves) costs at
    most the budget per step. Triple-MLP encoder: ``3 k^2 P`` triple rows of ``W^2`` (x 2 flops) per move, budget
    :data:`EXHAUSTIVE_FLOPS` (4 at W = 64). Product encoder (``three_body="product"``): ``P (4 k (W + 2R) + 2 R W)``
    table elements per move, budget :data:`EXHAUSTIVE_ELEMS` (6 for the packaged encoder: W = 64, R = 16)."""
    from invdesign.embed.geometry import point_op_representatives

    P, W = len(point_op_representatives(host)), encoder.width
    per_defect = max(int((host.sublattice == s).sum()) for s in range(len(host.sublattices))) * 2
    product = getattr(encoder, "three_body", "mlp") == "product"
    R = encoder.rank if product else 0
    budget = EXHAUSTIVE_ELEMS if product else EXHAUSTIVE_FLOPS

    def step(k: int) -> float:
        per_move = P * (4 * k * (W + 2 * R) + 2 * R * W) if product else 6 * k**2 * P * W * W
        return k * per_defect * per_move

    k = 1
    while step(k + 1) <= budget:
        k += 1
    return k


HIT_TOL = 3e-6  # |z - embed(c)| <= HIT_TOL (1 + |z|): an exact hit (float32 round-off is ~1e-7 |z|)
POOL = 24  # best configurations kept per row (for distinct answers)


class _Space:
    """Sites and codes of the allowed defect types of a host (per sublattice)."""

    def __init__(self, host: HostLattice, types: tuple[int, ...]) -> None:
        self.host = host
        self.types = tuple(types)
        self.by_sub: dict[int, list[int]] = {}
        for t in self.types:
            self.by_sub.setdefault(host.defect_types[t][0], []).append(t)
        self.subs = sorted(self.by_sub)
        self.sites = {s: np.flatnonzero(host.sublattice == s) for s in self.subs}
        w = np.array([len(self.sites[s]) * len(self.by_sub[s]) for s in self.subs], dtype=float)
        self.sub_p = w / w.sum()

    def random(self, rng: np.random.Generator, k: int) -> np.ndarray:
        """``(n_sites,)`` a random configuration of ``k`` defects (sublattice by free sites x types)."""
        h = self.host
        occ = h.host_code.copy()
        placed = 0
        while placed < k:
            s = self.subs[rng.choice(len(self.subs), p=self.sub_p)]
            free = self.sites[s][occ[self.sites[s]] == h.host_code[self.sites[s]]]
            if not len(free):
                if all(not (occ[self.sites[q]] == h.host_code[self.sites[q]]).any() for q in self.subs):
                    raise ValueError(f"{k} defects do not fit on the allowed sublattices")
                continue
            t = self.by_sub[s][rng.integers(len(self.by_sub[s]))]
            occ[free[rng.integers(len(free))]] = h.defect_types[t][1]
            placed += 1
        return occ


def _bank_counts(lo: int, hi: int) -> np.ndarray:
    n = hi - lo + 1
    if n <= MAX_BANK_COUNTS:
        return np.arange(lo, hi + 1)
    return np.unique(np.round(np.linspace(lo, hi, MAX_BANK_COUNTS)).astype(int))


_BANK: dict[tuple, tuple[object, np.ndarray, np.ndarray]] = {}


def seed_bank(model, space: _Space, lo: int, hi: int, seeds: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``occ (S, n_sites)`` random configurations across the counts ``lo..hi`` and their embeddings ``(S, d)``.

    Cached per (model, limits, seed).
    """
    key = (id(model), space.types, lo, hi, seeds, seed)
    hit = _BANK.get(key)
    if hit is not None and hit[0] is model:
        return hit[1], hit[2]
    rng = np.random.default_rng([seed, 7919])
    occ = np.array([space.random(rng, int(k)) for k in _bank_counts(lo, hi) for _ in range(seeds or seeds_per_count(int(k)))],
                   dtype=np.uint8)
    z = np.asarray(model.embed(occ), dtype=np.float64)
    _BANK[key] = (model, occ, z)
    return occ, z


def _propose(state: IncrementalEmbedding, space: _Space, rng: np.random.Generator, m: int, n_add: int,
             lo: int, hi: int) -> np.ndarray:
    """``(M, 3)`` moves ``(m, x, t)`` around defect ``m``: every hop to a free site of its sublattice and
    re-type (any allowed type), its removal, and ``n_add`` random additions (counts within ``lo..hi``)."""
    h = space.host
    occupied = np.zeros(h.n_sites, dtype=bool)
    occupied[state.sites] = True
    site, t_m = int(state.sites[m]), int(state.types[m])
    sub = int(h.sublattice[site])
    ts = np.array(space.by_sub[sub], dtype=np.int64)
    dest = space.sites[sub][~occupied[space.sites[sub]]]
    dest = np.append(dest, site)
    mv = np.stack(np.broadcast_arrays(m, dest[:, None], ts[None, :]), axis=-1).reshape(-1, 3)
    mv = mv[~((mv[:, 1] == site) & (mv[:, 2] == t_m))]
    parts = [mv]
    if state.k > lo:
        parts.append(np.array([[m, -1, 0]]))
    if state.k < hi and n_add:
        adds = []
        for _ in range(n_add):
            s = space.subs[rng.choice(len(space.subs), p=space.sub_p)]
            free = space.sites[s][~occupied[space.sites[s]]]
            if len(free):
                adds.append((-1, int(free[rng.integers(len(free))]), int(space.by_sub[s][rng.integers(len(space.by_sub[s]))])))
        if adds:
            parts.append(np.unique(np.array(adds, dtype=np.int64), axis=0))
    return np.concatenate(parts)


def _after(occ: np.ndarray, state: IncrementalEmbedding, move) -> np.ndarray:
    m, x, t = (int(v) for v in move)
    new = occ.copy()
    h = state.host
    if m >= 0:
        s = int(state.sites[m])
        new[s] = h.host_code[s]
    if x >= 0:
        new[x] = h.defect_types[t][1]
    return new


def search_decode(
    z: np.ndarray,
    model,
    host: HostLattice,
    min_defects: int,
    max_defects: int,
    types: tuple[int, ...],
    exclude: set[str],
    distinct: bool,
    *,
    steps: int = STEPS,
    batch: int = BATCH,
    restarts: int = 1,
    seeds: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    temperature: float = 0.0,
    per_step: int = PER_STEP,
    exhaustive: int | None = None,
    start: np.ndarray | None = None,
    desc: str = "decoding by incremental search",
) -> tuple[np.ndarray, list[str], np.ndarray, dict]:
    """Decode ``(N, d)`` embeddings into configurations with ``min..max`` defects of ``types``.

    Args:
        z: ``(N, d)`` target embeddings.
        model: has ``host``, ``encoder`` (an :class:`~invdesign.embed.encoder.InvariantEncoder`) and ``embed``.
        exclude: canonical keys never returned; ``distinct``: no key returned twice.
        steps, batch: search steps per restart and exact move evaluations per step.
        restarts: searches per row, from its ``restarts`` nearest seed-bank entries.
        seeds: random configurations per defect count in the seed bank (None: :func:`seeds_per_count`).
        seed: seeds everything (row ``i`` uses ``default_rng([seed, i])``).
        dtype: arithmetic of the search (the returned distances are float64, full embedding).
        temperature: Metropolis acceptance of worse moves, relative to the start distance (0: descent only).
        per_step: defects whose moves are screened per step (a shuffled cycle when fewer than ``k``).
        exhaustive: up to this many defects, every move of every defect is evaluated exactly in
            each step (steepest descent) instead of screened (None: :func:`exhaustive_max`).
        start: optional ``(N, n_sites)`` starting configurations (e.g. an amortised guess or a flow
            sample's neighbour), searched first; then ``restarts - 1`` seed-bank starts. A start outside
            the limits is ignored.

    Returns:
        ``occ (N, n_sites)`` uint8, canonical keys, ``distance (N,)`` exact ``|embed(occ) - z|``, and
        stats ``{"evaluations", "hits", "seconds_bank"}``.
    """
    import time

    from invdesign.progress import track

    z = np.asarray(z, dtype=np.float64)
    space = _Space(host, types)
    lo, hi = int(min_defects), int(max_defects)
    t0 = time.perf_counter()
    bank_occ, bank_z = seed_bank(model, space, lo, hi, seeds, seed)
    t_bank = time.perf_counter() - t0
    state = IncrementalEmbedding(model.encoder, host, dtype)
    exhaustive_k = exhaustive_max(model.encoder, host) if exhaustive is None else int(exhaustive)
    type_of = np.full((host.n_sites, host.n_species), -1, dtype=np.int64)  # (site, species) -> defect type
    for t, (sub, code) in enumerate(host.defect_types):
        type_of[host.sublattice == sub, code] = t
    if start is not None:
        start = np.asarray(start)
        if start.shape != (len(z), host.n_sites):
            raise ValueError(f"start must be ({len(z)}, {host.n_sites}); got {start.shape}")
    taken = set(exclude)
    occ_out = np.empty((len(z), host.n_sites), dtype=np.uint8)
    keys_out: list[str] = []
    evals = hits = 0
    for i in track(range(len(z)), desc):
        rng = np.random.default_rng([seed, i])
        target = z[i]
        tol = HIT_TOL * (1.0 + float(np.linalg.norm(target)))
        starts = [bank_occ[r] for r in np.argsort(np.linalg.norm(bank_z - target, axis=1), kind="stable")[: max(1, restarts)]]
        if start is not None:
            n0 = int((start[i] != host.host_code).sum())
            allowed = all(space.by_sub.get(int(host.sublattice[x]), []) and int(type_of[x, start[i][x]]) in space.types
                          for x in np.flatnonzero(start[i] != host.host_code))
            if lo <= n0 <= hi and allowed:
                starts = [np.asarray(start[i], dtype=np.uint8)] + starts[: max(0, restarts - 1)]
        pool: dict[bytes, float] = {}
        hit = False
        for st0 in starts:
            cur = st0.copy()
            state.set(cur)
            d = float(np.linalg.norm(state.z() - target))
            temp0 = temperature * d
            pool[cur.tobytes()] = d
            order: list[int] = []
            stall = 0
            for step in range(steps):
                if d <= tol:
                    hit = True
                    break
                if stall >= (1 if state.k <= exhaustive_k else 2 * state.k):
                    break  # a local minimum: every move tried (exhaustive) or two cycles without a gain
                if per_step >= state.k or state.k <= exhaustive_k:
                    ms = list(range(state.k))
                else:
                    ms = []
                    while len(ms) < per_step:
                        if not order:
                            order = [o for o in rng.permutation(state.k) if o not in ms]
                        ms.append(order.pop())
                allm = np.concatenate([_propose(state, space, rng, m, N_ADD if i == 0 else 0, lo, hi) for i, m in enumerate(ms)])
                if not len(allm):
                    continue
                if state.k <= exhaustive_k:  # every move exactly (the screen misses the last moves home)
                    moves = allm
                else:  # rank every move by the cheap screen, evaluate the best exactly (plus a few random ones)
                    ds = np.linalg.norm(state.screen(allm) - target, axis=1)
                    n_rand = batch // 4
                    top = np.argsort(ds, kind="stable")[: batch - n_rand]
                    rest = np.setdiff1d(np.arange(len(allm)), top)
                    pick = np.concatenate([top, rng.choice(rest, min(n_rand, len(rest)), replace=False)]) if len(rest) else top
                    moves = allm[pick]
                dz = np.linalg.norm(state.evaluate(moves) - target, axis=1)
                evals += len(moves)
                for j in np.argsort(dz)[:4]:
                    new = _after(cur, state, moves[j])
                    pool.setdefault(new.tobytes(), float(dz[j]))
                j = int(np.argmin(dz))
                temp = temp0 * 1e-3 ** (step / max(1, steps - 1))
                stall = 0 if dz[j] < d else stall + 1
                if dz[j] < d or (temp > 0 and rng.random() < np.exp(-(dz[j] - d) / temp)):
                    cur = _after(cur, state, moves[j])
                    state.apply(moves[j])
                    d = float(dz[j])
                    mj = int(moves[j][0])
                    order = [o - (o > mj) if mj >= 0 else o for o in order if o != mj]
            if d <= tol:
                hit = True
            if hit:
                break
        hits += hit
        best = sorted(pool.items(), key=lambda kv: kv[1])[:POOL]
        cand = np.frombuffer(b"".join(b for b, _ in best), dtype=np.uint8).reshape(-1, host.n_sites)
        keys = canonical_keys(cand, host)
        pick = next((j for j, key in enumerate(keys) if key not in taken), None)
        while pick is None:  # every configuration seen is taken: a fresh random one within the limits
            extra = space.random(rng, int(rng.integers(lo, hi + 1)))
            key = canonical_keys(extra[None], host)[0]
            if key not in taken:
                cand, keys, pick = extra[None], [key], 0
        occ_out[i] = cand[pick]
        keys_out.append(keys[pick])
        if distinct:
            taken.add(keys[pick])
    dist = np.linalg.norm(np.asarray(model.embed(occ_out), dtype=np.float64) - z, axis=1) if len(z) else np.zeros(0)
    return occ_out, keys_out, dist, {"evaluations": evals, "hits": hits, "seconds_bank": round(t_bank, 3)}
