"""Will this arrangement form? Boltzmann statistics among the arrangements of one composition.

For a candidate of composition ``c`` (defect counts per type) at temperature ``T``:

- ``e_above_arrangement_min`` (meV per cell): its predicted formation energy per cell minus the
  lowest of all arrangements of ``c``. Chemical potentials shift every arrangement of ``c`` by the
  same amount, so this does not depend on ``mu``.
- ``arrangement_population``: ``g_a exp(-E_a / kT) / sum_b g_b exp(-E_b / kT)`` over the symmetry
  classes ``b`` of composition ``c`` (``g`` = orbit size: the class's share of the labelled
  arrangements), i.e. the equilibrium probability that an arrangement of these defects in this cell
  is this one. Configurational entropy only; vibrations are not included.

Exact by enumeration where the host's orbit table covers the composition (every 1-3-defect class of
8x8 MoS2); otherwise Monte Carlo: ``M`` labelled arrangements drawn uniformly (one draw per composition,
shared by all its candidates, seeded by the composition), ``Z / N = mean(w)``,
``w = exp(-(E - E_c)/kT)``, population ``g_c / (N mean(w))`` with its delta-method standard error,
and the minimum over the samples (so ``e_above_arrangement_min`` is then a lower bound).
Energies are the model's predictions (eV, DFT-trained).

The draws come in batches of :data:`BATCH` (each seeded by the composition and its number), up to ``samples``.
They stop early, settled, once every candidate of the composition lies more than ``settle_kt`` k_B T
(default :data:`UNLIKELY_KT`, the ``unlikely_to_form`` flag's threshold) above an arrangement already drawn:
further draws can only lower the minimum, so the flag cannot change, and such a candidate's population is
already far below the composition's lowest classes (uniform draws that miss the rare low arrangements
overestimate a population, so a population from fewer draws errs high). ``arrangement_method`` says how many
were drawn (``mc:M``). Candidates at or near the lowest arrangement seen get every draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from invdesign.errors import InvdesignError

K_B = 8.617333262e-5  # eV/K
UNLIKELY_KT = 3.0  # e_above_arrangement_min above this many k_B T flags a candidate as unlikely to form
BATCH = 500  # arrangements drawn per batch (Monte Carlo)


@dataclass
class ArrangementStats:
    """Per-candidate arrays ``(N,)``: meV per cell above the composition minimum, population, its std
    (0 where exact), the method (``"exact:R"`` with R classes, ``"mc:M"`` with M samples)."""

    e_above_min_meV: np.ndarray
    population: np.ndarray
    population_std: np.ndarray
    method: list[str]


def orbit_size(occ: np.ndarray, host) -> int:
    """Number of distinct symmetry images of one configuration ``(n_sites,)``.

    By the orbit-stabiliser theorem: the host's site permutations (a group) divided by those that map the
    configuration onto itself (no sort of the images: 64x faster on 8x8 MoS2, the same integers; the images are
    counted one by one where the division is not exact).
    """
    perms = np.asarray(host.perms, dtype=np.int64)
    occ = np.asarray(occ)
    imgs = occ[perms]
    stab = int((imgs == occ[None, :]).all(axis=1).sum())
    if stab and len(perms) % stab == 0:
        return len(perms) // stab
    return int(len(np.unique(imgs, axis=0)))


def boltzmann(e_cell: np.ndarray, g: np.ndarray, temperature: float) -> np.ndarray:
    """``(R,)`` populations of classes with energies ``e_cell`` (eV) and degeneracies ``g`` at ``T`` (K)."""
    e = np.asarray(e_cell, float)
    lw = np.log(np.asarray(g, float)) - (e - e.min()) / (K_B * temperature)
    w = np.exp(lw - lw.max())
    return w / w.sum()


def _cell_energy(model, occ: np.ndarray) -> np.ndarray:
    from invdesign.synthesis.chempot import n_defect_sites

    # the formation energy alone (its serving head; no gap head runs). Within one composition the
    # chemical potentials cancel, so the reference energies of a ReferencedModel's base serve as well.
    base = getattr(model, "base", model)
    if hasattr(base, "predict_target"):
        mean, _ = base.predict_target(occ, "formation_energy_per_site", with_std=False)
    else:  # any predictor with predict() -> (N, 2)
        mean = np.asarray(model.predict(occ)[0], float)[:, 0]
    return np.asarray(mean, float) * n_defect_sites(occ, model.host)


def exact_table(model, composition: np.ndarray):
    """All classes of one composition from the model's enumerated orbit table.

    Returns ``(keys (R,), orbit sizes (R,), E per cell (R,) in eV)`` or None when not enumerated.
    """
    from invdesign.generate.decoder import BASE_MAX_DEFECTS, Limits, orbit_index, orbit_predictions

    host = model.host
    if int(np.sum(composition)) > BASE_MAX_DEFECTS or int(np.sum(composition)) < 1:
        return None
    idx = orbit_index(model, Limits.make(host))
    rows = np.flatnonzero(np.all(idx.composition == np.asarray(composition)[None], axis=1))
    if not len(rows):
        return None
    mean, _ = orbit_predictions(model, idx)
    n = idx.composition[rows].sum(axis=1)
    return idx.keys[rows], idx.orbit_size[rows].astype(float), mean[rows, 0] * n


def sampled_energies(model, composition: np.ndarray, samples: int = 4000, seed: int = 0) -> np.ndarray:
    """``(M,)`` predicted cell energies (eV) of ``M`` labelled arrangements of one composition, drawn uniformly.

    One draw serves every candidate of that composition (the partition function is a property of
    the composition), so a design with many candidates of few compositions pays once per composition.
    """
    from invdesign.lattice.enumerate import sample_configurations

    host = model.host
    labels = [host.defect_label(*t) for t in host.defect_types]
    want = {labels[t]: int(c) for t, c in enumerate(composition) if c}
    draws = sample_configurations(host, want, samples, rng=seed, uniform="placement")
    return _cell_energy(model, draws)


def _composition_seed(seed: int, composition: np.ndarray) -> int:
    """Deterministic seed of one composition's draws (independent of the candidates' order)."""
    return int(np.random.SeedSequence([int(seed), *(int(c) for c in composition)]).generate_state(1)[0])


def monte_carlo(model, occ: np.ndarray, temperature: float, samples: int = 4000, seed: int = 0,
                energies: np.ndarray | None = None, e_c: float | None = None) -> tuple[float, float, float]:
    """``(population, its standard error, E_c - min sampled E in eV)`` for one configuration by uniform sampling.

    ``energies``: the composition's sampled cell energies (:func:`sampled_energies`), drawn here if None;
    ``e_c``: the configuration's own cell energy (eV), predicted here if None.
    """
    from invdesign.lattice.enumerate import compositions

    host = model.host
    comp = compositions(np.asarray(occ)[None], host)[0]
    e = sampled_energies(model, comp, samples, seed) if energies is None else np.asarray(energies, float)
    e_c = float(_cell_energy(model, np.asarray(occ)[None])[0]) if e_c is None else float(e_c)
    w = np.exp(-(e - e_c) / (K_B * temperature))
    n_lab = _n_labelled(host, comp)
    mw = float(w.mean())
    se = float(w.std(ddof=1) / math.sqrt(len(w)))
    g = orbit_size(occ, host)
    pop = g / (n_lab * mw)
    return pop, pop * se / mw, e_c - min(e_c, float(e.min()))


def _n_labelled(host, comp: np.ndarray) -> float:
    """Number of labelled arrangements of a composition (multinomial over each sublattice)."""
    total = 1.0
    for sub in range(len(host.sublattices)):
        n_sites = int((host.sublattice == sub).sum())
        counts = [int(comp[t]) for t, (s, _) in enumerate(host.defect_types) if s == sub]
        left = n_sites
        for c in counts:
            total *= math.comb(left, c)
            left -= c
    return total


def _settled_energies(model, comp: np.ndarray, e_cand: np.ndarray, temperature: float, samples: int, seed: int,
                      settle_kt: float | None) -> np.ndarray:
    """``(M,)`` sampled cell energies (eV) of one composition, drawn in batches of :data:`BATCH` up to ``samples``;
    with ``settle_kt``, no more once every candidate energy of ``e_cand (n,)`` lies more than ``settle_kt k_B T``
    above the lowest drawn."""
    parts: list[np.ndarray] = []
    drawn, low = 0, np.inf
    while drawn < samples:
        m = min(BATCH, samples - drawn)
        parts.append(sampled_energies(model, comp, m, _composition_seed(seed, np.append(comp, len(parts)))))
        drawn += m
        low = min(low, float(parts[-1].min()))
        if settle_kt is not None and drawn < samples and (e_cand - low > settle_kt * K_B * temperature).all():
            break
    return np.concatenate(parts)


def arrangement_stats(model, occ: np.ndarray, temperature: float = 1000.0, samples: int = 4000, seed: int = 0,
                      settle_kt: float | None = UNLIKELY_KT) -> ArrangementStats:
    """:class:`ArrangementStats` for candidates ``occ`` ``(N, n_sites)`` at ``temperature`` (K).

    ``samples``: the most arrangements drawn per composition beyond the orbit table; ``settle_kt``: stop drawing
    once every candidate of the composition is more than this many k_B T above a drawn arrangement (None: draw
    ``samples`` always)."""
    from invdesign.lattice.canonical import canonical_keys
    from invdesign.lattice.enumerate import compositions

    if not (temperature > 0 and math.isfinite(temperature)):
        raise InvdesignError(f"--temperature must be a positive number of kelvin, not {temperature}")
    occ = np.atleast_2d(np.asarray(occ))
    host = model.host
    comp = compositions(occ, host)
    keys = canonical_keys(occ, host)
    n = len(occ)
    e_above, pop, pop_sd = np.zeros(n), np.zeros(n), np.zeros(n)
    method = [""] * n
    tables: dict[tuple, object] = {}
    sampled: dict[tuple, np.ndarray] = {}
    from invdesign.progress import track

    e_cell: np.ndarray | None = None  # the candidates' own cell energies (eV), where sampling needs them
    for i in track(range(n), "arrangement populations", total=n):
        c = tuple(int(v) for v in comp[i])
        if c not in tables:
            tables[c] = exact_table(model, np.array(c))
        tab = tables[c]
        if tab is not None:
            k, g, e = tab
            p = boltzmann(e, g, temperature)
            j = int(np.flatnonzero(k == keys[i])[0])
            e_above[i], pop[i], method[i] = (e[j] - e.min()) * 1e3, p[j], f"exact:{len(k)}"
        elif sum(c) == 0:
            e_above[i], pop[i], method[i] = 0.0, 1.0, "exact:1"
        else:
            if e_cell is None:  # one batch in a canonical row order: the same floats whatever the candidates' order
                order = np.lexsort(occ.T[::-1])
                e_cell = np.empty(n)
                e_cell[order] = _cell_energy(model, occ[order])
            if c not in sampled:  # one draw per composition, shared by its candidates
                same = np.all(comp == np.array(c)[None], axis=1)
                sampled[c] = _settled_energies(model, np.array(c), e_cell[same], temperature, samples, seed, settle_kt)
            p, sd, de = monte_carlo(model, occ[i], temperature, len(sampled[c]), energies=sampled[c], e_c=e_cell[i])
            e_above[i], pop[i], pop_sd[i], method[i] = de * 1e3, p, sd, f"mc:{len(sampled[c])}"
    return ArrangementStats(e_above, pop, pop_sd, method)
