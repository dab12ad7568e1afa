"""Orbit enumeration, Burnside counts and random sampling of configurations.

Enumeration is orderly generation by canonical augmentation: the orbit representatives with
``k`` defects are the distinct canonical forms of every ``(k-1)``-defect representative plus one
more defect. Every ``k``-orbit is reached (remove any defect, map the rest to its
representative), so the result is complete; :func:`burnside_count` checks it independently from
the cycle structure of the group.

Compositions are ``(T,)`` integer vectors over :attr:`HostLattice.defect_types`
(e.g. ``[W_Mo, V_Mo, Se_S, V_S]`` for MoS2).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from invdesign.errors import InvdesignError
from invdesign.lattice.canonical import canonical_forms, form_to_key
from invdesign.lattice.host import HostLattice


def parse_defect_types(host: HostLattice, labels: Iterable[str] | None) -> list[int]:
    """Indices into ``host.defect_types`` for labels like ``"V_S"``, ``"W_Mo"`` (None: all)."""
    names = [host.defect_label(s, c) for s, c in host.defect_types]
    if labels is None:
        return list(range(len(names)))
    out = []
    for lab in labels:
        if lab not in names:
            raise InvdesignError(f"unknown defect type {lab!r}; host {host.name} has {', '.join(names)}")
        out.append(names.index(lab))
    return out


def compositions(occ: np.ndarray, host: HostLattice) -> np.ndarray:
    """``(N, T)`` counts of each defect type in ``(N, n_sites)`` occupancies."""
    occ = np.asarray(occ)
    sub = host.sublattice[None, :]
    return np.stack([((sub == s) & (occ == c)).sum(axis=1) for s, c in host.defect_types], axis=1)


@dataclass
class OrbitTable:
    """Orbit representatives of an enumeration.

    Attributes:
        occ: ``(R, n_sites)`` uint8 canonical representatives.
        keys: ``R`` canonical keys.
        orbit_size: ``(R,)`` number of distinct configurations in each orbit.
        composition: ``(R, T)`` defect-type counts.
    """

    host: HostLattice
    occ: np.ndarray
    keys: list[str]
    orbit_size: np.ndarray
    composition: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def n_defects(self) -> np.ndarray:
        return self.composition.sum(axis=1)


def enumerate_orbits(
    host: HostLattice,
    max_defects: int = 3,
    min_defects: int = 1,
    defect_types: Iterable[str] | None = None,
    max_counts: dict[str, int] | None = None,
    progress=None,
) -> OrbitTable:
    """All symmetry-distinct configurations with ``min_defects..max_defects`` defects.

    Args:
        host: the host lattice.
        max_defects, min_defects: total defect count range.
        defect_types: labels allowed (``"V_S"``, ``"Se_S"``, ...); default all of the host's.
        max_counts: optional upper bound per defect type label.
        progress: optional callable ``progress(k, n_reps)`` called after each level.
    """
    if max_defects < 0 or min_defects < 0 or min_defects > max_defects:
        raise InvdesignError(f"bad defect range {min_defects}..{max_defects}")
    types = parse_defect_types(host, defect_types)
    limits = np.full(len(host.defect_types), max_defects)
    for lab, n in (max_counts or {}).items():
        limits[parse_defect_types(host, [lab])[0]] = n
    ns = host.n_species
    level = np.repeat(host.host_code[None], 1, axis=0)  # k = 0: pristine
    out_occ, out_keys, out_size = [], [], []
    G = host.n_ops
    for k in range(0, max_defects + 1):
        if k > 0:
            cands = []
            for occ in level:
                free = np.flatnonzero(occ == host.host_code)
                comp = compositions(occ[None], host)[0]
                for t in types:
                    if comp[t] + 1 > limits[t]:
                        continue
                    sub, code = host.defect_types[t]
                    sites = free[host.sublattice[free] == sub]
                    new = np.repeat(occ[None], len(sites), axis=0)
                    new[np.arange(len(sites)), sites] = code
                    cands.append(new)
            if not cands:
                break
            cand = np.concatenate(cands)
            forms, _, stab = canonical_forms(cand, host)
            seen: dict[tuple[int, ...], int] = {}
            for i, f in enumerate(forms):
                seen.setdefault(f, i)
            order = sorted(seen)
            level = np.repeat(host.host_code[None], len(order), axis=0)
            for r, f in enumerate(order):
                for c in f:
                    level[r, c // ns] = c % ns
            sizes = np.array([G // stab[seen[f]] for f in order], dtype=np.int64)
            keys = [form_to_key(f, host) for f in order]
        else:
            sizes = np.array([1])
            keys = [form_to_key((), host)]
        if progress is not None:
            progress(k, len(level))
        if k >= min_defects:
            out_occ.append(level.copy())
            out_keys.extend(keys)
            out_size.append(sizes)
    occ = np.concatenate(out_occ) if out_occ else np.zeros((0, host.n_sites), np.uint8)
    return OrbitTable(
        host=host,
        occ=occ,
        keys=out_keys,
        orbit_size=np.concatenate(out_size) if out_size else np.zeros(0, np.int64),
        composition=compositions(occ, host),
    )


def _cycles(perm: np.ndarray) -> list[np.ndarray]:
    seen = np.zeros(len(perm), dtype=bool)
    out = []
    for start in range(len(perm)):
        if seen[start]:
            continue
        cyc = []
        i = start
        while not seen[i]:
            seen[i] = True
            cyc.append(i)
            i = perm[i]
        out.append(np.array(cyc))
    return out


def _cycle_signatures(host: HostLattice) -> dict[tuple, int]:
    """Cycle type of every operation, ``((cycle length, sublattice), ...)`` -> multiplicity (cached)."""
    cached = host._cache.get("cycle_signatures")
    if cached is None:
        cached = {}
        for perm in host.perms:
            sig = tuple(sorted((len(c), int(host.sublattice[c[0]])) for c in _cycles(perm)))
            cached[sig] = cached.get(sig, 0) + 1
        host._cache["cycle_signatures"] = cached
    return cached


def burnside_count(host: HostLattice, composition: dict[str, int]) -> int:
    """Number of orbits of configurations with exactly ``composition`` (label -> count).

    Burnside: orbits = (1/|G|) sum_g |Fix(g)|. A configuration fixed by ``g`` is constant on the
    cycles of ``g``; the fixed ones are counted with a generating function over cycles,
    ``prod_c (1 + sum_{t on sublattice(c)} x_t^len(c))``, truncated at ``composition``.
    """
    idx = {parse_defect_types(host, [lab])[0]: n for lab, n in composition.items() if n > 0}
    types = sorted(idx)
    target = tuple(idx[t] for t in types)
    shape = tuple(n + 1 for n in target)
    by_signature = _cycle_signatures(host)
    total = 0
    for sig, mult in by_signature.items():
        poly = np.zeros(shape, dtype=object)
        poly[(0,) * len(types)] = 1
        for length, sub in sig:
            new = poly.copy()
            for j, t in enumerate(types):
                if host.defect_types[t][0] != sub or length > target[j]:
                    continue
                src = [slice(None)] * len(types)
                dst = [slice(None)] * len(types)
                src[j] = slice(0, shape[j] - length)
                dst[j] = slice(length, shape[j])
                new[tuple(dst)] += poly[tuple(src)]
            poly = new
        total += mult * int(poly[target])
    if total % host.n_ops:
        raise ArithmeticError("Burnside sum not divisible by the group order")
    return total // host.n_ops


def sample_configurations(
    host: HostLattice,
    composition: dict[str, int],
    n: int,
    rng: np.random.Generator | int | None = None,
    uniform: str = "placement",
) -> np.ndarray:
    """``(n, n_sites)`` random configurations with an exact ``composition`` (label -> count).

    ``uniform="placement"`` draws every labelled placement with equal probability;
    ``uniform="orbit"`` draws every symmetry class with equal probability: placements are
    accepted with probability ``|stabilizer| / S``, where ``S = k * max_site |Stab(site)|`` bounds
    every stabilizer of a ``k``-defect configuration (the stabilizer permutes the ``k`` defect
    sites, so ``|Stab(c)| <= k * |Stab(c) and Stab(site)|``).
    """
    if uniform not in ("placement", "orbit"):
        raise InvdesignError(f"uniform must be 'placement' or 'orbit', not {uniform!r}")
    rng = np.random.default_rng(rng)
    want = [(parse_defect_types(host, [lab])[0], c) for lab, c in composition.items() if c > 0]
    for t, c in want:
        sub = host.defect_types[t][0]
        if c > int((host.sublattice == sub).sum()):
            raise InvdesignError(f"composition asks for more defects than {host.sublattices[sub]} sites")
    k_total = sum(c for _, c in want)
    orbit_sizes = np.bincount(host.site_orbits)
    bound = min(host.n_ops, max(1, k_total) * host.n_ops // int(orbit_sizes.min()))
    out = np.empty((n, host.n_sites), dtype=np.uint8)
    filled = 0
    while filled < n:
        m = n - filled if uniform == "placement" else max(4 * (n - filled), 64)
        batch = np.repeat(host.host_code[None], m, axis=0)
        for sub in range(len(host.sublattices)):
            sites = np.flatnonzero(host.sublattice == sub)
            codes = [code for t, c in want if host.defect_types[t][0] == sub for code in [host.defect_types[t][1]] * c]
            if not codes:
                continue
            pick = np.argsort(rng.random((m, len(sites))), axis=1)[:, : len(codes)]
            batch[np.arange(m)[:, None], sites[pick]] = np.array(codes, dtype=np.uint8)[None, :]
        if uniform == "orbit":
            _, _, stab = canonical_forms(batch, host)
            batch = batch[rng.random(m) < stab / bound]
        take = min(len(batch), n - filled)
        out[filled : filled + take] = batch[:take]
        filled += take
    return out
