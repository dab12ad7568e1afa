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
and starts again (cyclic annealing). Every visited state with ``p_in_window >= accept_p`` whose
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
        mean, std: ``(R, 2)`` predictions (eV) at harvest.
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
    """``(N,)`` ``log p_in_window`` accurate far outside the window (no underflow to -inf)."""
    from scipy.special import log_ndtr

    mean = np.asarray(mean, float)
    std = np.maximum(np.asarray(std, float), 1e-9)
    a = (np.array(window.lo) - mean) / std
    b = (np.array(window.hi) - mean) / std
    flip = a > 0
    lo, hi = np.where(flip, -b, a), np.where(flip, -a, b)
    la, lb = log_ndtr(lo), log_ndtr(hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = lb + np.log1p(-np.exp(np.minimum(la - lb, 0.0)))
    out = np.where(np.isfinite(out), out, lb - 50.0)  # lo == hi: a point window
    return out.sum(axis=1)


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
) -> AnnealResult:
    """Harvest up to ``want`` distinct configurations with ``p_in_window >= accept_p`` by annealing.

    Args:
        model: predicts ``(mean, std)`` ``(N, 2)`` eV from ``(N, n_sites)`` occupancies (``model.predict``).
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
    mean, std = model.predict(state)
    energy = -log_p_in(window, mean, std)
    harvested: dict[str, int] = {}
    h_occ, h_mean, h_std = [], [], []
    per_chain = np.zeros(chains, dtype=np.int64)
    excl = set(exclude)
    evals = chains
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
    while len(harvested) < want and step < max_steps:
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
        temp = T_START * ratio ** ((step % SWEEP) / max(1, SWEEP - 1))
        prop = np.stack([mv.propose(state[c], rng) for c in range(chains)])
        pm, ps = model.predict(prop)
        pe = -log_p_in(window, pm, ps)
        evals += chains
        ok = (pe <= energy) | (rng.random(chains) < np.exp(-np.clip(pe - energy, 0.0, 700 * temp) / temp))
        accepted += int(ok.sum())
        state[ok], energy[ok], mean[ok], std[ok] = prop[ok], pe[ok], pm[ok], ps[ok]
        harvest(np.flatnonzero(ok & inside(pm, pe)), state, mean, std)
        reserve.extend((float(energy[c]), state[c].tobytes()) for c in np.flatnonzero(ok))
        if len(reserve) > 8 * want:
            reserve = sorted(set(reserve))[: 2 * want]
        done = np.flatnonzero(per_chain >= cap)
        if len(done):  # restart chains that have harvested their share: spread over many basins
            state[done] = mv.random(rng, len(done)) if restart is None else restart(rng, len(done))
            mean[done], std[done] = model.predict(state[done])
            energy[done] = -log_p_in(window, mean[done], std[done])
            per_chain[done] = 0
            evals += len(done)
        step += 1
    n_in = len(harvested)
    if n_in < want and reserve:  # the window is not reached often enough: add the best states seen
        best = sorted(set(reserve))
        occ_r = np.frombuffer(b"".join(b for _, b in best), dtype=np.uint8).reshape(-1, host.n_sites)
        mr, sr = model.predict(occ_r)
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
        mean=np.array(h_mean, float).reshape(-1, 2),
        std=np.array(h_std, float).reshape(-1, 2),
        steps=step,
        evaluations=evals,
        seconds=time.perf_counter() - t0,
        stats={"chains": chains, "cap": cap, "acceptance": round(accepted / max(1, step * chains), 4),
               "harvested_in_window": n_in},
    )


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
        m, s = model.predict(occ)
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
        mean=np.array(h_mean, float).reshape(-1, 2), std=np.array(h_std, float).reshape(-1, 2),
        steps=evals // batch, evaluations=evals, seconds=time.perf_counter() - t0,
    )
