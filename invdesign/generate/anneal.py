"""Simulated annealing in configuration space toward a target window (the cluster-expansion peers' way).

icet, CASM and smol answer "configurations with a property in a window" by Monte Carlo on a
cheap property model; this module does the same on the model's serving heads, which read exact
cluster counts (:func:`invdesign.predict.features.cluster_counts`): one evaluation of ``C`` chains
costs one batched head call, at any defect count.

``C`` independent chains (seeded) start from random configurations within the limits (defect count
uniform in ``[min, max]``, types uniform among the allowed ones, sites uniform on their sublattice).
Each step proposes one move per chain:

- *hop*: a defect moves to a random host site of its sublattice;
- *retype*: a defect changes to another allowed type of its sublattice (``V_Mo <-> W_Mo``);
- *add* / *remove* a defect (within the count limits).

The energy is ``-log p_in_window`` (Gaussian predictions, accurate far in the tails, so chains far
from the window still feel which way it lies); moves are accepted with the Metropolis rule at a
temperature that falls geometrically from :data:`T_START` to :data:`T_END` in :data:`SWEEP` steps
and starts again (cyclic annealing).

Where a host model's gap blends gradient-boosted trees (most of an evaluation's cost) and the window leaves the
gap open, the trees walk only for the accepted moves: the energy does not read the gap, so every decision is the
one the full evaluation makes (the same random draws, the same chains), and every accepted state still carries
its full prediction. Every visited state with ``p_in_window >= accept_p`` whose
canonical key is new (and not excluded) is *harvested*; a chain that has harvested ``cap`` states
restarts from a fresh random configuration, so the harvest spreads over many basins rather than
one neighbourhood. The run stops when ``want`` distinct states are harvested or after ``max_steps``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from invdesign.generate.decoder import Limits
from invdesign.generate.window import Window
from invdesign.lattice.canonical import canonical_keys
from invdesign.lattice.host import HostLattice

T_START = 2.0  # Metropolis temperature at the start of a sweep (units of -log p)
T_END = 0.05
SWEEP = 60  # steps per cooling cycle
CHAINS = 64
MOVES = ("hop", "retype", "add", "remove")
MOVE_P = np.array([0.45, 0.25, 0.15, 0.15])


@dataclass
class AnnealResult:
    """Harvested configurations and the run's bookkeeping.

    Attributes:
        occ: ``(R, n_sites)`` uint8 distinct harvested configurations (in harvest order).
        keys: their canonical keys.
        mean, std: ``(R, k)`` predictions at harvest (eV; ``k = window.n_targets``: a moment window adds
            ``total_mag``, Bohr magnetons per cell).
        steps: steps run; evaluations: configurations evaluated by the model; seconds: wall time.
    """

    occ: np.ndarray
    keys: list[str]
    mean: np.ndarray
    std: np.ndarray
    steps: int = 0
    evaluations: int = 0
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)


def log_p_in(window: Window, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(N,)`` ``log p_in_window`` accurate far outside the window (no underflow to -inf); a moment window's
    ``total_mag`` column counts as :meth:`Window.p_in` counts it (:meth:`Window.log_p_in`)."""
    return window.log_p_in(mean, std)


class _Moves:
    """Per-host move tables: sites of each sublattice and the defect codes allowed on it."""

    def __init__(self, host: HostLattice, limits: Limits) -> None:
        self.host = host
        self.limits = limits
        self.codes: dict[int, np.ndarray] = {}
        for t in limits.types:
            s, c = host.defect_types[t]
            self.codes.setdefault(s, [])
            self.codes[s].append(c)
        self.codes = {s: np.array(sorted(v), dtype=np.uint8) for s, v in self.codes.items()}
        self.subs = np.array(sorted(self.codes), dtype=np.int64)
        self.sites = {s: np.flatnonzero(host.sublattice == s) for s in self.subs}
        # choose a sublattice for a new defect in proportion to (sites x allowed codes)
        w = np.array([len(self.sites[s]) * len(self.codes[s]) for s in self.subs], dtype=float)
        self.sub_p = w / w.sum()
        self.host_code = host.host_code
        self.sublattice = host.sublattice.astype(np.int64)
        # padded tables for batched proposals (:meth:`propose_batch`)
        nsub = len(host.sublattices)
        self.n_sites_sub = np.zeros(nsub, np.int64)
        self.n_codes = np.zeros(nsub, np.int64)
        width = max(len(v) for v in self.sites.values())
        self.sites_pad = np.zeros((nsub, width), np.int64)
        self.codes_pad = np.zeros((nsub, max(len(v) for v in self.codes.values())), np.int64)
        for s in self.subs:
            self.n_sites_sub[s], self.n_codes[s] = len(self.sites[s]), len(self.codes[s])
            self.sites_pad[s, : len(self.sites[s])] = self.sites[s]
            self.codes_pad[s, : len(self.codes[s])] = self.codes[s]
        self.code_type = np.full((nsub, host.n_species), -1, np.int64)
        for t, (sub, code) in enumerate(host.defect_types):
            self.code_type[sub, code] = t
        self.type_sub = np.array([sub for sub, _ in host.defect_types], np.int64)
        self.type_code = np.array([code for _, code in host.defect_types], np.int64)

    def random(self, rng: np.random.Generator, m: int) -> np.ndarray:
        """``(m, n_sites)`` random configurations within the limits."""
        lim = self.limits
        out = np.repeat(self.host_code[None], m, axis=0)
        for r in range(m):
            k = int(rng.integers(lim.min_defects, lim.max_defects + 1))
            for _ in range(k):
                self._add(out[r], rng)
        return out

    def _add(self, occ: np.ndarray, rng: np.random.Generator) -> bool:
        s = self.subs[rng.choice(len(self.subs), p=self.sub_p)]
        free = self.sites[s][occ[self.sites[s]] == self.host_code[self.sites[s]]]
        if not len(free):
            return False
        occ[free[rng.integers(len(free))]] = self.codes[s][rng.integers(len(self.codes[s]))]
        return True

    def propose(self, occ: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One random move of one configuration (a copy; the same state when no move applies)."""
        new = occ.copy()
        defects = np.flatnonzero(new != self.host_code)
        k = len(defects)
        lim = self.limits
        for _ in range(4):
            move = MOVES[rng.choice(4, p=MOVE_P)]
            if move == "add" and k < lim.max_defects:
                if self._add(new, rng):
                    return new
            elif move == "remove" and k > lim.min_defects:
                i = defects[rng.integers(k)]
                new[i] = self.host_code[i]
                return new
            elif move == "hop" and k:
                i = defects[rng.integers(k)]
                s = self.sublattice[i]
                free = self.sites[s][new[self.sites[s]] == self.host_code[self.sites[s]]]
                if len(free):
                    new[free[rng.integers(len(free))]] = new[i]
                    new[i] = self.host_code[i]
                    return new
            elif move == "retype" and k:
                i = defects[rng.integers(k)]
                codes = self.codes[self.sublattice[i]]
                others = codes[codes != new[i]]
                if len(others):
                    new[i] = others[rng.integers(len(others))]
                    return new
        return new

    def propose_batch(self, site: np.ndarray, typ: np.ndarray, occ: np.ndarray, rng: np.random.Generator, tries: int = 8):
        """One random move per chain of slot states ``site, typ (C, K)`` (``typ -1``: empty slot) with occupancies
        ``occ (C, S)``, as :class:`~invdesign.predict.host_incremental.Moves`, drawn like :meth:`propose` (the move
        type by :data:`MOVE_P`, the first of four draws that applies; a defect uniform among the chain's defects; a
        free site uniform on its sublattice, by up to ``tries`` draws; no free site found: no move)."""
        from invdesign.predict.host_incremental import Moves

        C, K = typ.shape
        cc = np.arange(C)
        lim = self.limits
        valid = typ >= 0
        k = valid.sum(1)
        u = rng.random((C, 6))
        # a random defect's slot (k > 0) and the first empty slot
        r = np.minimum((u[:, 0] * k).astype(np.int64), np.maximum(k - 1, 0))
        slot_d = np.argmax(np.cumsum(valid, axis=1) > r[:, None], axis=1)
        slot_e = np.argmax(~valid, axis=1)
        t_d = np.maximum(typ[cc, slot_d], 0)
        sub_d = self.type_sub[t_d]
        draws = rng.choice(4, size=(C, 4), p=MOVE_P)  # hop, retype, add, remove
        can = np.stack([k > 0, (k > 0) & (self.n_codes[sub_d] > 1), k < lim.max_defects, k > lim.min_defects], axis=1)
        app = np.take_along_axis(can, draws, axis=1)
        any_app = app.any(1)
        move = np.where(any_app, draws[cc, np.argmax(app, axis=1)], -1)
        hop, ret, add, rem = (move == 0), (move == 1), (move == 2), (move == 3)
        # the sublattice of the arriving defect: the moved one's (hop), or drawn as :meth:`_add` draws it (add)
        sub_add = self.subs[np.minimum(np.searchsorted(np.cumsum(self.sub_p), u[:, 1], side="right"), len(self.subs) - 1)]
        sub_new = np.where(add, sub_add, sub_d)
        idx = (rng.random((C, tries)) * self.n_sites_sub[sub_new][:, None]).astype(np.int64)
        cand = self.sites_pad[sub_new[:, None], idx]  # (C, tries)
        free = occ[cc[:, None], cand] == self.host_code[cand]
        got = free.any(1)
        b = cand[cc, np.argmax(free, axis=1)]
        hop, add = hop & got, add & got
        # codes: a new defect's (uniform among the sublattice's allowed codes), a retyped one's (another one)
        code_add = self.codes_pad[sub_add, np.minimum((u[:, 2] * self.n_codes[sub_add]).astype(np.int64), self.n_codes[sub_add] - 1)]
        nc = self.n_codes[sub_d]
        j = np.minimum((u[:, 3] * np.maximum(nc - 1, 1)).astype(np.int64), np.maximum(nc - 2, 0))
        cur = self.type_code[t_d]
        pos = np.argmax(self.codes_pad[sub_d] == cur[:, None], axis=1)
        code_ret = self.codes_pad[sub_d, j + (j >= pos)]
        t_add = self.code_type[sub_add, code_add]
        t_ret = self.code_type[sub_d, code_ret]
        neg = np.full(C, -1, np.int64)
        has_old = hop | ret | rem
        old_site = np.where(has_old, site[cc, slot_d], neg)
        old_typ = np.where(has_old, t_d, neg)
        new_site = np.where(hop | add, b, np.where(ret, site[cc, slot_d], neg))
        new_typ = np.where(hop, t_d, np.where(ret, t_ret, np.where(add, t_add, neg)))
        slot = np.where(add, slot_e, slot_d)
        return Moves(slot, old_site, old_typ, new_site, new_typ)


def anneal(
    model,
    window: Window,
    limits: Limits,
    want: int,
    *,
    exclude: set[str] | frozenset[str] = frozenset(),
    seed: int = 0,
    chains: int = CHAINS,
    accept_p: float | None = None,
    max_steps: int = 3000,
    cap: int | None = None,
    start: np.ndarray | None = None,
    restart=None,
    progress=None,
    max_seconds: float | None = None,
    fast: bool | None = None,
    lazy_trees: bool | None = None,
) -> AnnealResult:
    """Harvest up to ``want`` distinct configurations with ``p_in_window >= accept_p`` by annealing.

    Args:
        model: predicts ``(mean, std)`` ``(N, 2)`` eV from ``(N, n_sites)`` occupancies (``model.predict``; with a
            moment window ``(N, 3)`` from ``model.predict_with_moment``, :meth:`Window.predict`).
        window, limits: the target and the constraints every state satisfies.
        want: distinct configurations to harvest.
        exclude: canonical keys never to harvest.
        seed: seeds everything (same seed, same result).
        chains: parallel chains ``C``.
        accept_p: harvest threshold on ``p_in_window``; None (default): the predicted mean lies in the window.
        max_steps: the most steps (each evaluates ``C`` configurations).
        cap: harvests per chain before it restarts (default ``max(1, 2 want / C)``).
        start: ``(C0, n_sites)`` optional starting configurations (e.g. flow samples); the rest are random.
        restart: optional ``restart(rng, m) -> (m, n_sites)`` configurations within the limits for chains
            that restart (e.g. more flow samples); default: random configurations.
        progress: ``advance(n)`` callback per harvested configuration.
        max_seconds: stop after this much wall time (None: no limit).
        fast: evaluate moves incrementally (:class:`~invdesign.predict.host_incremental.HostChains`: the
            changed per-defect terms only, all chains in one batch) where a host model serves every state
            within the limits; None (default): wherever possible (``INVDESIGN_FAST_ANNEAL=0`` switches it
            off); False: the full :meth:`model.predict` of every proposal (the same predictions to float32
            round-off; another random stream).
        lazy_trees: on the fast path, with a window that leaves the gap open, walk the gap's trees for accepted moves
            only; with a gap window, only for the proposals that the most favourable gap the trees could give would
            still let pass the Metropolis test (its uniform drawn first; the rest are rejected whatever the trees
            give). None (default): both; False walks them for every proposal (the same chains).

    Returns:
        an :class:`AnnealResult`.
    """
    t0 = time.perf_counter()
    host = model.host
    rng = np.random.default_rng(seed)
    mv = _Moves(host, limits)
    cap = cap or max(1, math.ceil(2 * want / chains))
    state = mv.random(rng, chains)
    if start is not None and len(start):
        m = min(len(start), chains)
        state[:m] = start[:m]
    hm = _fast_model(model, limits) if fast is not False else None
    if fast and hm is None:
        raise ValueError("no incremental evaluation for this model and these limits (a host model must serve every state)")
    k = window.n_targets  # 2, or 3 where the window bounds the moment (its column comes along)
    if hm is not None:
        from invdesign.predict.host_incremental import HostChains

        fc = HostChains(hm, state, limits.max_defects)
        state = fc.occ
        # the energy does not read an open gap: the trees are needed for accepted states only
        lazy = fc.has_trees and lazy_trees is not False and window.lo[1] == -math.inf and window.hi[1] == math.inf
        # a gap window: the trees walk only for proposals that the most favourable gap mean could still accept
        screen = fc.has_trees and not lazy and lazy_trees is not False and fc.gap_std_without_trees
        mean, std = fc.predict(n_targets=k)
    else:
        mean, std = window.predict(model, state)
    energy = -log_p_in(window, mean, std)
    harvested: dict[str, int] = {}
    h_occ, h_mean, h_std = [], [], []
    per_chain = np.zeros(chains, dtype=np.int64)
    excl = set(exclude)
    evals = chains
    full_evals = chains
    accepted = 0
    step = 0

    def harvest(rows: np.ndarray, occ: np.ndarray, m: np.ndarray, s: np.ndarray) -> None:
        if not len(rows):
            return
        keys = canonical_keys(occ[rows], host)
        for r, key in zip(rows, keys):
            if key in harvested or key in excl or len(harvested) >= want:
                continue
            harvested[key] = len(h_occ)
            h_occ.append(occ[r].copy())
            h_mean.append(m[r].copy())
            h_std.append(s[r].copy())
            per_chain[r] += 1
            if progress is not None:
                progress(1)

    def inside(m: np.ndarray, e: np.ndarray) -> np.ndarray:
        return window.hits(m) if accept_p is None else e <= -math.log(accept_p)

    reserve: list[tuple[float, bytes]] = []  # best states seen (energy, occupancy): the fallback when few are harvested

    harvest(np.flatnonzero(inside(mean, energy)), state, mean, std)
    ratio = T_END / T_START
    t_loop = time.perf_counter()
    while len(harvested) < want and step < max_steps:
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
        temp = T_START * ratio ** ((step % SWEEP) / max(1, SWEEP - 1))
        if hm is not None and lazy:
            pst = fc.propose(mv.propose_batch(fc.site, fc.typ, fc.occ, rng))
            parts = fc.parts(pst)
            pe = -log_p_in(window, *fc.serve(parts, k, False))  # the full energy: the gap is not in it
            ok = _metropolis(pe - energy, temp, rng)
            pm, ps = fc.serve(parts, k, ok)  # the full prediction of the accepted moves
            full_evals += int(ok.sum())
        elif hm is not None and screen:
            pst = fc.propose(mv.propose_batch(fc.site, fc.typ, fc.occ, rng))
            parts = fc.parts(pst)
            u = rng.random(chains)  # the draw _metropolis makes: the same decisions, the same chains
            bm, bs = fc.serve(parts, k, False)  # everything but the trees' share of the gap mean: exact
            bm[:, 1] = _best_gap(window, *fc.gap_mean_bounds(parts))
            # the energy can only be higher and the acceptance only lower: what this lower bound rejects stays rejected
            maybe = _accepted(-log_p_in(window, bm, bs) - energy, temp, u)
            pm, ps = fc.serve(parts, k, maybe)
            pe = -log_p_in(window, pm, ps)
            ok = maybe & _accepted(pe - energy, temp, u)
            full_evals += int(maybe.sum())
        elif hm is not None:
            pst = fc.propose(mv.propose_batch(fc.site, fc.typ, fc.occ, rng))
            pm, ps = fc.predict(pst, n_targets=k)
            pe = -log_p_in(window, pm, ps)
            ok = _metropolis(pe - energy, temp, rng)
            full_evals += chains
        else:
            prop = np.stack([mv.propose(state[c], rng) for c in range(chains)])
            pm, ps = window.predict(model, prop)
            pe = -log_p_in(window, pm, ps)
            ok = _metropolis(pe - energy, temp, rng)
            full_evals += chains
        evals += chains
        accepted += int(ok.sum())
        if hm is not None:
            fc.accept(pst, ok)
        else:
            state[ok] = prop[ok]
        energy[ok], mean[ok], std[ok] = pe[ok], pm[ok], ps[ok]
        harvest(np.flatnonzero(ok & inside(pm, pe)), state, mean, std)
        reserve.extend((float(energy[c]), state[c].tobytes()) for c in np.flatnonzero(ok))
        if len(reserve) > 8 * want:
            reserve = sorted(set(reserve))[: 2 * want]
        done = np.flatnonzero(per_chain >= cap)
        if len(done):  # restart chains that have harvested their share: spread over many basins
            fresh = mv.random(rng, len(done)) if restart is None else restart(rng, len(done))
            if hm is not None:
                fc.set_state(fresh, rows=done)
                mean[done], std[done] = (a[done] for a in fc.predict(n_targets=k, trees=np.isin(np.arange(chains), done)))
                full_evals += len(done)
            else:
                state[done] = fresh
                mean[done], std[done] = window.predict(model, state[done])
            energy[done] = -log_p_in(window, mean[done], std[done])
            per_chain[done] = 0
            evals += len(done)
        step += 1
    loop_s = time.perf_counter() - t_loop
    n_in = len(harvested)
    if n_in < want and reserve:  # the window is not reached often enough: add the best states seen
        best = sorted(set(reserve))
        occ_r = np.frombuffer(b"".join(b for _, b in best), dtype=np.uint8).reshape(-1, host.n_sites)
        mr, sr = window.predict(model, occ_r)
        for o, key, m_, s_ in zip(occ_r, canonical_keys(occ_r, host), mr, sr):
            if len(harvested) >= want:
                break
            if key in harvested or key in excl:
                continue
            harvested[key] = len(h_occ)
            h_occ.append(o.copy())
            h_mean.append(m_)
            h_std.append(s_)
    occ = np.array(h_occ, dtype=np.uint8).reshape(-1, host.n_sites)
    return AnnealResult(
        occ=occ,
        keys=list(harvested),
        mean=np.array(h_mean, float).reshape(-1, k),
        std=np.array(h_std, float).reshape(-1, k),
        steps=step,
        evaluations=evals,
        seconds=time.perf_counter() - t0,
        stats={"chains": chains, "cap": cap, "acceptance": round(accepted / max(1, step * chains), 4),
               "harvested_in_window": n_in, "incremental": hm is not None,
               "lazy_trees": hm is not None and lazy, "screened_trees": hm is not None and screen,
               "full_evaluations": full_evals,
               "loop_seconds": round(loop_s, 4)},
    )


def _metropolis(de: np.ndarray, temp: float, rng: np.random.Generator) -> np.ndarray:
    """``(C,)`` accept with probability ``min(1, exp(-de / temp))`` (one uniform draw per chain)."""
    return _accepted(de, temp, rng.random(len(de)))


def _accepted(de: np.ndarray, temp: float, u: np.ndarray) -> np.ndarray:
    """``(C,)`` the Metropolis decision for energy changes ``de`` and uniform draws ``u``."""
    return (de <= 0) | (u < np.exp(-np.clip(de, 0.0, 700 * temp) / temp))


def _best_gap(window: Window, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``(C,)`` the gap mean within ``[lo, hi]`` (eV) that maximises the probability of the window's gap interval for
    a fixed std: its centre, or the nearest bound (a Gaussian's mass in an interval falls as its mean moves away
    from the centre; an open side: as far toward it as the bounds allow)."""
    a, b = window.lo[1], window.hi[1]
    c = -math.inf if a == -math.inf else math.inf if b == math.inf else 0.5 * (a + b)
    return np.clip(c, lo, hi)


def _fast_model(model, limits: Limits):
    """The host model that serves every state within ``limits`` (so :func:`anneal` can evaluate moves
    incrementally), or None (``INVDESIGN_FAST_ANNEAL=0``, or another head serves some states)."""
    import os

    if os.environ.get("INVDESIGN_FAST_ANNEAL", "1").strip() in ("0", "false", "no", "off"):
        return None
    from invdesign.predict.host_incremental import served_host_model

    return served_host_model(model, limits.min_defects)


def random_search(
    model, window: Window, limits: Limits, want: int, *, exclude=frozenset(), seed: int = 0, batch: int = 256,
    accept_p: float | None = None, max_evaluations: int = 200_000,
) -> AnnealResult:
    """The baseline: random configurations within the limits, filtered by the model (same harvest rule)."""
    t0 = time.perf_counter()
    host = model.host
    rng = np.random.default_rng(seed)
    mv = _Moves(host, limits)
    keys_seen: dict[str, int] = {}
    h_occ, h_mean, h_std = [], [], []
    evals = 0
    excl = set(exclude)
    while len(keys_seen) < want and evals < max_evaluations:
        occ = mv.random(rng, batch)
        m, s = window.predict(model, occ)
        evals += batch
        rows = np.flatnonzero(window.hits(m) if accept_p is None else window.p_in(m, s) >= accept_p)
        for r, key in zip(rows, canonical_keys(occ[rows], host) if len(rows) else []):
            if key in keys_seen or key in excl or len(keys_seen) >= want:
                continue
            keys_seen[key] = len(h_occ)
            h_occ.append(occ[r])
            h_mean.append(m[r].copy())
            h_std.append(s[r].copy())
    return AnnealResult(
        occ=np.array(h_occ, dtype=np.uint8).reshape(-1, host.n_sites), keys=list(keys_seen),
        mean=np.array(h_mean, float).reshape(-1, window.n_targets), std=np.array(h_std, float).reshape(-1, window.n_targets),
        steps=evals // batch, evaluations=evals, seconds=time.perf_counter() - t0,
    )
