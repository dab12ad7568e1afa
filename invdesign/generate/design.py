"""The design pipeline: target window -> candidates that are decoded, checked and ranked.

Modes (``mode=``):

- ``"flow"``: sample the conditional flow for the window (beyond enumeration: the high-density flow) (contexts ``(y, composition)`` drawn from
  the flow's training distribution restricted to the window and to compositions the limits allow;
  base Gaussian at temperature :data:`FLOW_TEMPERATURE`) -> decode each sample to a configuration
  not taken yet (so candidates are distinct up to symmetry): in enumerable spaces the one with the
  highest ``p_in_window`` among the sample's :data:`DECODE_K_PREFER` nearest free orbits (a local
  choice: 8 of ~13,600 orbits, all within the sample's neighbourhood), otherwise the local-search
  decoder's nearest -> check -> rank. The flow alone (nearest-orbit decoding) recovers less of a
  narrow window's in-window set: windows in the low-gap tail of a composition hold orbits
  scattered among out-of-window neighbours in the embedding (``benchmarks/results/design.md``
  reports both).
- ``"exhaustive"``: enumerate every orbit within the limits, screen all of them with the model,
  rank. Exact with respect to the model; only for enumerable spaces.
- ``"anneal"``: simulated annealing in configuration space on the model's cluster-count heads
  (:mod:`invdesign.generate.anneal`): harvests distinct configurations whose predicted mean lies in
  the window, then checks them. For spaces beyond enumeration (many defects).
- ``"flow-anneal"``: the same annealing, its chains started (and restarted) from samples of the
  high-density conditional flow for the window (:mod:`invdesign.generate.flow_hd`, a separate
  resource fitted on 4-30-defect configurations, loaded only here and by ``"flow"`` beyond
  enumeration): the flow proposes compositions and arrangements the model puts in the window,
  annealing makes each an in-window configuration of its own.
- ``"auto"``: exhaustive when the space is enumerable (the exact decoder embeds every orbit of
  such a space anyway, so screening them all costs one more head evaluation and is never slower
  than sampling), otherwise the sampler with the lowest measured median time to 50 in-window
  candidates (:data:`MEASURED_TIME_TO_50`, from ``benchmarks/results/anneal.md``: flow-seeded
  annealing) that the model can run (the high-density flow must match its embedding; else annealing,
  and ``auto_reason`` in ``summary.json`` says why).

Every mode is a sampler (:mod:`invdesign.generate.samplers`) registered in :data:`SAMPLERS`.
- pool (``pool=`` given): rank the given structures with the same checks.

Ranking is by ``p_in_window`` (Gaussian, product over targets) with a diversity penalty in
embedding space. When no candidate reaches ``p_in_window >= reach_p`` the window is declared
unreachable: one line says so and candidates are ranked by their distance to the window (the
nearest achievable ones) instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from invdesign.data.dataset import TARGETS
from invdesign.errors import InvdesignError
from invdesign.generate.checks import EXTRAPOLATION_POLICY, check_candidates, known_set, rank_with_diversity
from invdesign.generate.decoder import (
    Limits,
    decode,
    is_enumerable,
    orbit_index,
    orbit_moment_predictions,
    orbit_predictions,
)
from invdesign.generate.samplers import Proposal, Request
from invdesign.generate.window import Window

LEADING = ["rank", "id", "canonical_key", "source", *TARGETS, *(f"{t}_std" for t in TARGETS), "p_in_window"]


def leading(window: Window) -> list[str]:
    """The leading columns of ``candidates.csv``: :data:`LEADING`, with ``total_mag`` and ``total_mag_std`` beside
    the gap's where the window bounds the moment."""
    names = window.names
    return ["rank", "id", "canonical_key", "source", *names, *(f"{t}_std" for t in names), "p_in_window"]
MODES = ("auto", "flow", "exhaustive", "anneal", "flow-anneal")
FLOW_TEMPERATURE = 1.3  # scale of the flow's base Gaussian when sampling for a window (chosen on VAL windows)
DECODE_K_PREFER = 8  # flow samples decode to the best p_in_window among this many nearest free orbits (VAL windows)
CHECK_TOP = 2000  # exhaustive mode checks in full at least this many of the best-screened orbits
IN_WINDOW_P = 0.5  # p_in_window at which a configuration counts as "in the window" in reports


@dataclass
class DesignResult:
    """What :func:`design` returns.

    Attributes:
        candidates: ranked table; leading columns :func:`leading` (:data:`LEADING`, eV, and with a moment window
            ``total_mag``, ``total_mag_std`` in Bohr magnetons per cell; ``p_in_window`` in [0, 1]).
        occ: ``(n, n_sites)`` uint8 configurations in rank order.
        summary: request, model, seeds, counts, timings (what ``summary.json`` holds).
        message: one line when the window is unreachable, else None.
        relaxed: with a physics check (:func:`invdesign.api.design` ``check=``), the relaxed pymatgen
            Structures of the checked candidates by id (what ``relaxed/<id>.cif`` holds); else empty.
    """

    candidates: pd.DataFrame
    occ: np.ndarray
    summary: dict
    message: str | None = None
    host: object = field(default=None, repr=False)
    train_y: np.ndarray | None = field(default=None, repr=False)
    window: Window | None = field(default=None, repr=False)
    relaxed: dict = field(default_factory=dict, repr=False)

    def structures(self) -> list:
        """The candidates as pymatgen Structures in rank order (what ``structures/<id>.cif`` holds);
        ``AseAtomsAdaptor.get_atoms(s)`` makes ASE Atoms of them."""
        from invdesign.lattice.config import config_to_structure

        return [config_to_structure(o, self.host) for o in self.occ]

    def write(self, out: str | Path, overwrite: bool = False, extra=None) -> Path:
        """Write ``candidates.csv``, ``structures/<id>.cif``, ``poscar/<id>.vasp``, ``summary.json``, ``candidates.png``.

        Under the output policy of :mod:`invdesign.outputs`: a previous ``design`` output in ``out``
        is replaced only with ``overwrite``; a folder holding anything else is refused.

        POSCARs go to their own folder so that ``structures/`` stays a valid STRUCTURES argument
        (ids are file stems; a CIF and a POSCAR of the same id in one folder would be duplicates).
        ``extra(tmp)``, if given, writes more files into the folder before it replaces ``out``.
        """
        from invdesign.io import atomic_dir, atomic_write_json, write_csv, write_structure
        from invdesign.progress import track

        out = Path(out)
        t0 = time.perf_counter()
        with atomic_dir(out, "design", overwrite) as tmp:
            write_csv(tmp / "candidates.csv", self.candidates)
            (tmp / "structures").mkdir()
            (tmp / "poscar").mkdir()
            for i, cid in track(list(enumerate(self.candidates["id"])), "writing structures"):
                write_structure(self.occ[i], self.host, [tmp / "structures" / f"{cid}.cif", tmp / "poscar" / f"{cid}.vasp"])
            plot_candidates(self, tmp / "candidates.png")
            if extra is not None:
                extra(tmp)
            from invdesign.columns import GUIDE, column_units

            self.summary["columns"] = {"units": column_units(self.candidates.columns), "guide": GUIDE}
            self.summary.setdefault("timings_s", {})["write_s"] = round(time.perf_counter() - t0, 4)
            atomic_write_json(tmp / "summary.json", self.summary)
        return out


def _as_window(target) -> Window:
    if isinstance(target, Window):
        return target
    if isinstance(target, dict):
        return Window.from_dict(target)
    if isinstance(target, str):
        return Window.parse([target])
    if isinstance(target, Iterable):
        return Window.parse(list(target))
    raise InvdesignError(f"cannot read a target window from {type(target).__name__}")


def _resolve_exclude(exclude, host) -> set[str]:
    """Canonical keys from keys, key files (.csv with canonical_key / .txt) and STRUCTURES."""
    if exclude is None:
        return set()
    if isinstance(exclude, (str, Path)):
        exclude = [exclude]
    keys: set[str] = set()
    paths: list[Path] = []
    for item in exclude:
        p = Path(str(item))
        if p.suffix in (".csv", ".txt") and p.is_file():
            if p.suffix == ".csv":
                df = pd.read_csv(p)
                if "canonical_key" not in df.columns:
                    raise InvdesignError("exclusion CSV needs a canonical_key column", source=str(p))
                keys |= set(df["canonical_key"].astype(str))
            else:
                keys |= {ln.strip() for ln in p.read_text().splitlines() if ln.strip()}
        elif p.exists():
            paths.append(p)
        elif isinstance(item, str) and item.startswith(f"{host.name}:"):
            keys.add(item)
        else:
            raise InvdesignError("not a file, folder or canonical key to exclude", source=str(item))
    if paths:
        from invdesign.data.dataset import map_structures

        keys |= set(map_structures(paths, host).keys)
    bad = [k for k in keys if not k.startswith(f"{host.name}:")]
    if bad:
        raise InvdesignError(f"excluded key {bad[0]!r} is not for host {host.name}")
    return keys


def _model_info(model) -> dict:
    from invdesign.generate.decoder import _model_tag

    meta = dict(getattr(model, "meta", {}) or {})
    info = {k: meta[k] for k in ("version", "name", "created", "fingerprint", "seed", "path") if k in meta}
    if getattr(model, "design_modes", None) is not None:  # a host model (no embedding tag, no flow)
        info["host_model"] = {"serving": meta.get("serving"), "trained_on": getattr(model, "model", None) and
                              model.model.meta.get("trained_on")}
        return info
    info["embedding_tag"] = _model_tag(model, model.host)
    return info


def design(
    target,
    n: int = 50,
    *,
    model=None,
    pool: Sequence[str | Path] | None = None,
    max_defects: int | None = None,
    min_defects: int = 1,
    types: Sequence[str] | None = None,
    exclude=None,
    seed: int = 0,
    mode: str = "auto",
    samples: int | None = None,
    diversity: float = 0.05,
    reach_p: float = 0.05,
    out: str | Path | None = None,
    overwrite: bool = False,
    time_limit_s: float = 900.0,
) -> DesignResult:
    """Candidates for a target window, decoded, checked and ranked.

    Args:
        target: the window: ``{"formation_energy_per_site": (lo, hi), "homo_lumo_gap": (lo, hi)}``
            in eV (on a spin-polarised host also ``"total_mag": (lo, hi)``, Bohr magnetons per cell), a
            :class:`Window`, or CLI strings ``["NAME=LO:HI", ...]``.
        n: number of candidates wanted.
        model: a :class:`~invdesign.model.Model`, a path to one (``.npz``: a host model), a host model's
            predictor (:func:`invdesign.predict.host_serving.predictor_for`), or None for the packaged default
            (a pool of paths on a packaged host other than MoS2: that host's packaged model).
        pool: STRUCTURES to rank instead of generating (files, folders, 2DMD archives), a Dataset, or
            pymatgen Structures / ASE Atoms (ids ``"0"``, ``"1"``, ... in their order).
        max_defects, min_defects, types: limits on the configurations (types like ``"V_S"``); ``max_defects``
            None: 3 when generating, and with a pool no limit (pool members beyond the limits rank last).
        exclude: canonical keys, key files (CSV with ``canonical_key`` or text) or STRUCTURES never to return.
        seed: seeds the flow samples (results are reproducible from the summary).
        mode: ``"auto"``, ``"flow"``, ``"exhaustive"`` or ``"anneal"`` (ignored with ``pool``).
        samples: flow samples to draw (default ``10 * n`` with the exact decoder, ``2 * n`` with search).
        diversity: weight of the diversity penalty in the ranking (0: plain sort by p_in_window).
        reach_p: below this best ``p_in_window`` the window is reported unreachable.
        out: if given, the output folder (written atomically; checked before any work).
        overwrite: replace a previous ``design`` output in ``out`` (:mod:`invdesign.outputs`).
        time_limit_s: requests estimated to take longer are refused before any work (one line says what to change).

    Returns:
        a :class:`DesignResult`.
    """
    t0 = time.perf_counter()
    window = _as_window(target)
    if n < 1:
        raise InvdesignError(f"-n must be at least 1, not {n}")
    if mode not in MODES:
        raise InvdesignError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    from invdesign.data.dataset import Dataset
    from invdesign.lattice.config import as_structure

    if pool is not None and (isinstance(pool, (str, Path)) or as_structure(pool) is not None):
        pool = [pool]
    structs = None  # a pool of pymatgen Structures / ASE Atoms: mapped onto the model's host below
    if pool is not None and not isinstance(pool, Dataset):
        pool = list(pool)
        structs = [as_structure(p) for p in pool]
        kinds = {"path" if isinstance(p, (str, Path)) else "structure" if st is not None else type(p).__name__
                 for p, st in zip(pool, structs)}
        if len(kinds) > 1 or not kinds <= {"path", "structure"}:
            raise InvdesignError(f"pool must be STRUCTURES paths, a Dataset, or pymatgen Structures / ASE Atoms, "
                                 f"one kind at a time (got {', '.join(sorted(kinds))})")
        if kinds != {"structure"}:
            structs = None
            missing = [str(p) for p in pool if not Path(p).exists()]
            if missing:
                raise InvdesignError("pool file or folder not found", source=missing[0])
    if out is not None:
        from invdesign.outputs import check_dir

        check_dir(out, "design", overwrite)
    if model is None or isinstance(model, (str, Path)):
        from invdesign.model import _host_model_for, load_model

        # as the CLI: a host model file (.npz), or a pool on a packaged host other than MoS2 -> its host model
        hm = _host_model_for([str(p) for p in pool], model) if pool is not None and not isinstance(pool, Dataset) \
            and structs is None else _host_model_for([], model)
        model = hm if hm is not None else load_model(model)
    host = model.host
    window.check_model(model)  # a total_mag window needs a model that predicts the moment (one line, before any work)
    if structs is not None:
        from invdesign.data.dataset import structures_dataset

        pool = structures_dataset(structs, host)
    if max_defects is None:  # a pool keeps its own range (a 3-defect limit would rank a high-density pool backwards)
        from invdesign.lattice.enumerate import parse_defect_types
        from invdesign.limits import _type_sites

        max_defects = 3 if pool is None else max(min_defects, _type_sites(host, parse_defect_types(host, types or None)))
    limits = Limits.make(host, max_defects, min_defects, types)
    excl = _resolve_exclude(exclude, host)
    timings: dict[str, float] = {}
    counts: dict[str, float | int] = {}
    extra: dict = {}

    if pool is not None:
        used = "pool"
        occ, ids, table, z = _pool(pool, model, window, limits, excl, timings, counts)
        source = np.full(len(occ), "pool", dtype=object)
    else:
        used = mode
        if mode == "auto":
            used, extra["auto_reason"] = auto_mode(model, limits)
        if used in ("anneal", "flow", "flow-anneal") and not is_enumerable(host, limits):
            refuse_if_too_long(host, limits, n, used, time_limit_s)
        req = Request(model, window, limits, excl, n, samples, seed, timings, counts)
        prop = SAMPLERS[used](req)
        occ, table, z = prop.occ, prop.table, prop.z
        ids = None
        source = np.full(len(occ), used, dtype=object)

    t = time.perf_counter()
    p = table["p_in_window"].to_numpy()
    best_p = float(p.max()) if len(p) else 0.0
    message = None
    reachable = best_p >= reach_p
    if len(p) and not reachable:
        message = (
            f"the window {window.describe()} is out of reach of this model within the limits "
            f"(best p_in_window {best_p:.3g} < {reach_p:g}); showing the nearest achievable candidates "
            "ranked by predicted distance to the window"
        )
        if used == "flow":
            occ, table, z, source = _flow_nearest(model, window, limits, excl, n, seed, occ, table, z, source, timings, counts)
    ok = table["within_limits"].to_numpy()
    if reachable:
        score = p + ok.astype(float)  # candidates within the limits first (only the pool may break them)
    else:
        d = table["window_distance"].to_numpy()
        score = -d / ((np.nanmax(d) if len(d) else 0.0) + 1e-12) + ok.astype(float)
    order = rank_with_diversity(score, z, n, diversity if reachable else 0.0)
    timings["rank_s"] = time.perf_counter() - t
    cand = table.iloc[order].reset_index(drop=True)
    occ = occ[order]
    cand.insert(0, "rank", np.arange(1, len(cand) + 1))
    cand.insert(1, "id", [str(ids[i]) for i in order] if ids is not None else [f"cand{r:04d}" for r in range(1, len(cand) + 1)])
    cand.insert(3, "source", source[order])
    lead = leading(window)
    cand = cand[lead + [c for c in cand.columns if c not in lead]]
    counts["returned"] = len(cand)
    notes = _shortfall_notes(n, len(cand), used, counts, samples)
    counts["shortfall"] = max(0, n - len(cand))
    counts["returned_in_window"] = int((cand["p_in_window"] >= IN_WINDOW_P).sum())
    counts["returned_novel"] = int(cand["novel"].sum())
    counts["returned_extrapolation"] = int(cand["extrapolation"].sum())
    if "homo_lumo_gap_validated" in cand:
        counts["returned_gap_unvalidated"] = int((~cand["homo_lumo_gap_validated"].astype(bool)).sum())
    if "formation_energy_reference" in cand:  # above 3 defects: DFT-trained model + correction toward corrected CHGNet
        counts["returned_fe_corrected_toward_chgnet"] = int(cand["formation_energy_reference"].str.contains("corrected CHGNet").sum())
    timings["total_s"] = time.perf_counter() - t0
    from invdesign import __version__

    summary = {
        "request": {
            "target": window.as_dict(),
            "n": n,
            "mode": mode,
            "mode_used": used,
            **limits.as_dict(host),
            "excluded_keys": len(excl),
            "pool": None if pool is None else (pool.name or "dataset") if isinstance(pool, Dataset) else [str(p) for p in pool],
            "seed": seed,
            "samples": samples,
            "diversity": diversity,
            "reach_p": reach_p,
            "flow_temperature": FLOW_TEMPERATURE,
            "decode_k_prefer": DECODE_K_PREFER,
        },
        "units": "eV; p_in_window = prod over targets of P(lo <= y <= hi), y ~ Normal(prediction, std)"
                 + ("; total_mag in Bohr magnetons per cell, its y ~ Normal(prediction, std) restricted to y >= 0"
                    if window.has_moment else ""),
        "invdesign_version": __version__,
        "model": _model_info(model),
        "host": host.name,
        "reachable": bool(reachable) if len(p) else False,
        "message": message,
        "notes": notes,
        "extrapolation_policy": EXTRAPOLATION_POLICY,
        "counts": counts,
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        **extra,
    }
    res = DesignResult(cand, occ, summary, message, host=host, train_y=np.asarray(model.train_y, float), window=window)
    if out is not None:
        res.write(out, overwrite)
    return res


def _shortfall_notes(n: int, returned: int, used: str, counts: dict, samples: int | None) -> list[str]:
    """One line when fewer than ``n`` candidates come back, saying why (also in ``summary.json``)."""
    if returned >= n:
        return []
    head = f"{returned} candidates, not the {n} asked for: "
    if used == "pool":
        why = (f"the pool holds {counts.get('pool', 0)} structures ({counts.get('pool_distinct', 0)} distinct classes, "
               f"{counts.get('excluded', 0)} excluded)")
    elif used == "exhaustive":
        why = f"only {counts.get('orbits_screened', returned)} configurations exist within the limits (after exclusions)"
    elif used == "anneal" and "harvested" in counts:
        why = (f"the {counts.get('chains', '')} annealing chains found {counts['harvested']} distinct configurations "
               "near the window within the limits; widen the window or --max-defects, or use --mode exhaustive where "
               "the space is enumerable")
    else:
        why = (f"the {counts.get('sampled', samples)} flow samples decoded to {counts.get('decoded_distinct', returned)} "
               "distinct configurations; raise --samples or use --mode exhaustive")
    return [head + why]


# ---------------------------------------------------------------------- modes
def _pool(pool, model, window, limits, excl, timings, counts):
    from invdesign.data.dataset import Dataset, map_structures

    t = time.perf_counter()
    ds = pool if isinstance(pool, Dataset) else map_structures(pool, model.host)
    if len(ds) == 0:
        raise InvdesignError("the pool holds no structures", source=",".join(map(str, pool)))
    keys = ds.keys
    keep = np.array([k not in excl for k in keys], dtype=bool)
    if not keep.any():
        raise InvdesignError(f"every structure of the pool ({len(ds)}) is excluded (--exclude); nothing left to rank",
                             source=",".join(map(str, pool)) if not isinstance(pool, Dataset) else (pool.name or "pool"))
    occ, ids, keys = ds.occ[keep], ds.ids[keep], [k for k, m in zip(keys, keep) if m]
    timings["read_s"] = time.perf_counter() - t
    t = time.perf_counter()
    z = np.asarray(model.embed(occ), float)
    table = check_candidates(occ, model, window, limits, z=z, keys=keys)
    timings["check_s"] = time.perf_counter() - t
    counts.update(pool=len(ds), excluded=int((~keep).sum()), checked=len(occ), pool_distinct=len(set(keys)))
    counts["in_window"] = int((table["p_in_window"] >= IN_WINDOW_P).sum())
    return occ, ids, table, z


def screen(model, window: Window, limits: Limits, exclude: set[str] = frozenset()):
    """Exhaustive screen: every orbit within ``limits`` with its predictions and ``p_in_window``.

    Returns:
        ``(index, rows, mean (R, k), std (R, k), p (R,))``: the orbit table, the rows of it within
        the limits, and predictions for those rows (eV; ``k = window.n_targets``: a moment window adds
        ``total_mag``, Bohr magnetons per cell).
    """
    idx = orbit_index(model, limits)
    rows = np.flatnonzero(idx.mask(limits, set(exclude)))
    mean, std = orbit_moment_predictions(model, idx) if window.has_moment else orbit_predictions(model, idx)
    return idx, rows, mean[rows], std[rows], window.p_in(mean[rows], std[rows])


def _exhaustive(model, window, limits, excl, timings, counts, n=0):
    t = time.perf_counter()
    idx, rows, mean, std, p = screen(model, window, limits, excl)
    timings["screen_s"] = time.perf_counter() - t
    t = time.perf_counter()
    # the top max(2000, n) by p and by window distance are checked in full: -n is never capped below what exists
    n_keep = min(len(rows), max(CHECK_TOP, n))
    top = np.unique(np.concatenate([np.argsort(-p, kind="stable")[:n_keep], np.argsort(window.distance(mean), kind="stable")[:n_keep]]))
    sel = rows[top]
    table = check_candidates(
        idx.occ[sel], model, window, limits, z=idx.z[sel], keys=[str(k) for k in idx.keys[sel]], prediction=(mean[top], std[top])
    )
    table["decode_method"] = "enumerated"
    timings["check_s"] = time.perf_counter() - t
    counts.update(
        orbits_screened=len(rows),
        orbits_in_window=int((p >= IN_WINDOW_P).sum()),
        expected_in_window=round(float(p.sum()), 3),
        checked=len(sel),
    )
    return idx.occ[sel], table, idx.z[sel]


def prior_allowed(flow, host, limits: Limits) -> np.ndarray:
    """``(N_prior,)`` bool: the flow's context-prior items whose counts the limits allow.

    Compositions (or total counts) below ``limits.min_defects`` are kept only when the prior holds
    nothing at or above it (more defects than the flow was trained on: the local-search decoder
    then adds defects, and the checks flag the candidates as extrapolation).
    """
    c = flow.prior.counts
    if c.shape[1] == len(host.defect_types):
        banned = [t for t in range(c.shape[1]) if t not in limits.types]
        ok = c[:, banned].sum(axis=1) == 0 if banned else np.ones(len(c), dtype=bool)
        n = c.sum(axis=1)
    else:  # a flow conditioned on the total number of defects only
        ok, n = np.ones(len(c), dtype=bool), c[:, 0]
    ok &= n <= limits.max_defects
    if (ok & (n >= limits.min_defects)).any():
        ok &= n >= limits.min_defects
    if not ok.any():
        raise InvdesignError(f"the flow was trained on no composition within the limits {limits.as_dict(host)}")
    return ok


def _flow(
    model, window, limits, excl, n, samples, seed, timings, counts, near=False, temperature=FLOW_TEMPERATURE,
    k_prefer=DECODE_K_PREFER,
):
    """Sample the flow for ``window`` (``near``: for the prior's items nearest it), decode, check.

    With an enumerable space each sample decodes to the orbit with the highest ``p_in_window``
    among its ``k_prefer`` nearest free orbits (1: plain nearest-orbit decoding).
    """
    host = model.host
    exact = is_enumerable(host, limits)
    t = time.perf_counter()
    flow, allowed = _design_flow(model, limits, exact)
    timings["flow_load_s"] = timings.get("flow_load_s", 0.0) + time.perf_counter() - t
    m = samples or (10 * n if exact else 2 * n)
    if exact:
        n_space = int(orbit_index(model, limits).mask(limits, excl).sum())
        m = min(m, n_space)
    t = time.perf_counter()
    if not near:
        z_s, _, _ = flow.sample_window(window.array, m, allowed, seed=seed, temperature=temperature)
    else:
        rows = flow.prior.nearest(window.array, max(10, n), allowed, scale=flow.y_std)
        rng = np.random.default_rng(seed)
        pick = rows[rng.integers(0, len(rows), m)]
        z_s = flow.sample(flow.prior.y[pick], flow.prior.counts[pick], seed=seed + 1, temperature=temperature)
    timings["sample_s"] = timings.get("sample_s", 0.0) + time.perf_counter() - t
    t = time.perf_counter()
    # nearest in the flow's whitened coordinates: the metric the flow's density is isotropic in
    prefer = pred = None
    if exact:  # every orbit's prediction is cached: score the decoder's choices and the checks from it
        idx = orbit_index(model, limits)
        y_all, s_all = orbit_predictions(model, idx)
        prefer = window.p_in(y_all, s_all) if k_prefer > 1 else None
    dec = decode(z_s, model, limits, exclude=excl, distinct=True, metric=np.linalg.inv(flow.z_chol),
                 prefer=prefer, k_prefer=k_prefer)
    timings["decode_s"] = timings.get("decode_s", 0.0) + time.perf_counter() - t
    t = time.perf_counter()
    if exact:
        r = np.array([idx.key_index[k] for k in dec.keys], dtype=np.int64)
        pred = (y_all[r], s_all[r])
    z = np.asarray(model.embed(dec.occ), float)
    table = check_candidates(dec.occ, model, window, limits, z=z, z_sampled=z_s, keys=dec.keys, prediction=pred)
    table["decode_method"] = dec.method
    timings["check_s"] = timings.get("check_s", 0.0) + time.perf_counter() - t
    counts["sampled"] = counts.get("sampled", 0) + m
    counts["decoded_distinct"] = counts.get("decoded_distinct", 0) + len(set(dec.keys))
    counts["checked"] = counts.get("checked", 0) + len(dec.keys)
    counts["in_window"] = counts.get("in_window", 0) + int((table["p_in_window"] >= IN_WINDOW_P).sum())
    counts["mean_reembed_distance"] = round(float(np.mean(table["reembed_distance"])), 5)
    return dec.occ, table, z


def _design_flow(model, limits: Limits, exact: bool):
    """``(flow, allowed)``: the model's own flow (1-3-defect orbits) where the space is enumerable, the
    high-density flow (:mod:`invdesign.generate.flow_hd`, loaded only here) beyond it; ``allowed``
    marks its context-prior items within the limits."""
    if exact:
        from invdesign.generate.flow import get_flow

        flow = get_flow(model)
        return flow, prior_allowed(flow, model.host, limits)
    from invdesign.generate.flow_hd import get_hd_flow

    hd = get_hd_flow(model)
    allowed = hd.allowed(model.host, limits)
    if not allowed.any():
        raise InvdesignError(f"the high-density flow saw no composition within the limits {limits.as_dict(model.host)}")
    return hd.flow, allowed


def _flow_nearest(model, window, limits, excl, n, seed, occ, table, z, source, timings, counts):
    """Unreachable window: add flow samples conditioned on the training contexts nearest the window."""
    taken = excl | set(table["canonical_key"])
    occ2, table2, z2 = _flow(model, window, limits, taken, n, 5 * n, seed + 7, timings, counts, near=True)
    return (
        np.concatenate([occ, occ2]),
        pd.concat([table, table2], ignore_index=True),
        np.concatenate([z, z2]),
        np.concatenate([source, np.full(len(occ2), "flow", dtype=object)]),
    )


# ---------------------------------------------------------------------- anneal + the sampler registry
ANNEAL_EXTRA = 0.3  # harvest this fraction more than n, so the diversity ranking has a choice
EMBED_S_PER_K3 = 3.5e-5  # seconds per configuration / k^3 to embed one candidate for its checks (measured, 1 core)
STEP_S = 0.03  # seconds per annealing step of 64 chains (measured, 8-24 defects, 1 core)
DECODE_S_PER_K2 = 0.035  # seconds per flow sample / k^2 for the incremental search decoder (measured, 8-24 defects, 1 loaded core)
ANNEAL_MAX_S = 45.0  # the search stops here; fewer in-window states than wanted -> the nearest ones fill in


# median wall time (s) to 50 distinct in-window candidates over the bands and windows of
# benchmarks/results/anneal.md (a method that did not get there within the cap counts as the cap):
# what --mode auto picks by beyond enumeration
MEASURED_TIME_TO_50 = {"flow-anneal": 2.9, "anneal": 10.5, "flow": 60.0}  # flow: none reached 50 within the 60 s cap


def auto_mode(model, limits: Limits) -> tuple[str, str]:
    """``(mode, reason)`` for ``--mode auto``: exhaustive where the space is enumerable, else the sampler
    with the lowest measured time to 50 in-window candidates (:data:`MEASURED_TIME_TO_50`) that this
    model can run (flow-based ones need the high-density flow fitted for its embedding)."""
    modes = getattr(model, "design_modes", None)  # a host model: the modes it supports (no flow)
    if is_enumerable(model.host, limits) and (modes is None or "exhaustive" in modes):
        return "exhaustive", "the space within the limits is enumerable: screening every orbit is exact and no slower than sampling"
    if modes is not None:
        return "anneal", "a host model (no invertible embedding, no flow) designs by annealing on its predictions"
    from invdesign.generate.flow_hd import hd_flow_available

    skipped = []
    for mode, sec in sorted(MEASURED_TIME_TO_50.items(), key=lambda kv: kv[1]):
        if mode in ("flow", "flow-anneal"):
            ok, why = hd_flow_available(model, limits)
            if not ok:
                skipped.append(f"{mode} skipped: {why}")
                continue
        others = ", ".join(f"{m} {v:g} s" for m, v in sorted(MEASURED_TIME_TO_50.items(), key=lambda kv: kv[1]) if m != mode)
        reason = (f"the space within the limits is too large to enumerate: {mode} has the lowest measured median time "
                  f"to 50 in-window candidates ({sec:g} s; {others}; benchmarks/results/anneal.md)")
        return mode, reason + ("; " + "; ".join(skipped) if skipped else "")
    raise AssertionError("anneal needs nothing and is always available")


def estimate_seconds(limits: Limits, n: int, mode: str) -> float:
    """Rough wall time (s) of a generative design request beyond enumeration: the checks embed every
    candidate (cost ~ k^3, the encoder's triple term) and the search runs a few hundred steps."""
    want = math.ceil(n * (1 + ANNEAL_EXTRA))
    k = limits.max_defects
    return want * EMBED_S_PER_K3 * k**3 + 300 * STEP_S + (2 * n * DECODE_S_PER_K2 * k**2 if mode == "flow" else 0)


def refuse_if_too_long(host, limits: Limits, n: int, mode: str, time_limit_s: float) -> None:
    """Raise before any work when the request would take longer than ``time_limit_s``."""
    if limits.max_defects > host.n_sites // 2:
        raise InvdesignError(
            f"--max-defects {limits.max_defects} is above half the {host.n_sites} sites of {host.name}; "
            "beyond that the host is no longer the majority phase: lower --max-defects"
        )
    est = estimate_seconds(limits, n, mode)
    if mode == "flow" and est > time_limit_s:
        raise InvdesignError(
            f"design --mode flow -n {n} with up to {limits.max_defects} defects would take about {est / 3600:.1f} h "
            f"(limit {time_limit_s / 60:.0f} min; decoding one flow sample costs ~{DECODE_S_PER_K2:g} s x k^2): "
            "use --mode flow-anneal or --mode auto, or lower --max-defects"
        )
    if est > time_limit_s:
        k_ok = int(((time_limit_s - 300 * STEP_S) / (math.ceil(n * (1 + ANNEAL_EXTRA)) * EMBED_S_PER_K3)) ** (1 / 3))
        raise InvdesignError(
            f"design -n {n} with up to {limits.max_defects} defects would take about {est / 60:.0f} min "
            f"(limit {time_limit_s / 60:.0f} min; each candidate's checks cost ~k^3): lower -n or --max-defects "
            f"(about {max(k_ok, 1)} defects fit with -n {n})"
        )


def flow_seeds(model, window: Window, limits: Limits, seed: int = 0, batch: int = 64):
    """``(start, restart)`` for :func:`~invdesign.generate.anneal.anneal` from the high-density flow.

    ``start``: ``(batch, n_sites)`` start configurations from flow samples for the window
    (:meth:`~invdesign.generate.flow_hd.HDFlow.starts`); ``restart(rng, m)`` draws ``m`` more, a new
    batch of flow samples whenever the current one is used up (seeded: same seed, same sequence).
    """
    from invdesign.generate.flow_hd import get_hd_flow

    hd = get_hd_flow(model)
    host = model.host
    start = hd.starts(host, window, limits, batch, seed=seed)
    queue: list[np.ndarray] = []
    calls = [0]

    def restart(rng: np.random.Generator, m: int) -> np.ndarray:
        while len(queue) < m:
            calls[0] += 1
            queue.extend(hd.starts(host, window, limits, batch, seed=seed + 1000 * calls[0]))
        out = np.stack(queue[:m])
        del queue[:m]
        return out

    return start, restart


def _anneal(req: Request, seeded: bool = False) -> Proposal:
    """Simulated annealing on the model toward the window (:mod:`invdesign.generate.anneal`), then the checks.

    ``seeded``: chains start (and restart) from high-density flow samples for the window
    (:func:`flow_seeds`) instead of random configurations.
    """
    from invdesign.generate.anneal import CHAINS, anneal
    from invdesign.progress import task

    model, window, limits = req.model, req.window, req.limits
    want = req.samples or math.ceil(req.n * (1 + ANNEAL_EXTRA))
    start = restart = None
    if seeded:
        t = time.perf_counter()
        start, restart = flow_seeds(model, window, limits, seed=req.seed, batch=CHAINS)
        req.timings["flow_seed_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with task("annealing toward the window", total=want) as advance:
        res = anneal(model, window, limits, want, exclude=req.exclude, seed=req.seed, progress=advance,
                     max_seconds=ANNEAL_MAX_S, start=start, restart=restart)
    req.timings["anneal_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if not len(res.occ):
        raise InvdesignError(f"annealing found no configuration within the limits {limits.as_dict(model.host)}")
    from invdesign.progress import track

    z = np.concatenate([np.asarray(model.embed(res.occ[s : s + 16]), float)
                        for s in track(range(0, len(res.occ), 16), "embedding the candidates")])
    table = check_candidates(res.occ, model, window, limits, z=z, keys=res.keys, prediction=(res.mean, res.std))
    table["decode_method"] = "flow-anneal" if seeded else "anneal"
    req.timings["check_s"] = time.perf_counter() - t
    req.counts.update(
        anneal_steps=res.steps, evaluated=res.evaluations, harvested=len(res.keys),
        harvested_mean_in_window=res.stats.get("harvested_in_window", 0), chains=res.stats.get("chains"),
        acceptance=res.stats.get("acceptance"), checked=len(res.keys),
        in_window=int((table["p_in_window"] >= IN_WINDOW_P).sum()),
    )
    return Proposal(res.occ, table, z)


def _exhaustive_sampler(req: Request) -> Proposal:
    return Proposal(*_exhaustive(req.model, req.window, req.limits, req.exclude, req.timings, req.counts, req.n))


def _flow_sampler(req: Request) -> Proposal:
    return Proposal(*_flow(req.model, req.window, req.limits, req.exclude, req.n, req.samples, req.seed, req.timings, req.counts))


def _flow_anneal(req: Request) -> Proposal:
    return _anneal(req, seeded=True)


SAMPLERS = {"exhaustive": _exhaustive_sampler, "flow": _flow_sampler, "anneal": _anneal, "flow-anneal": _flow_anneal}


# ---------------------------------------------------------------------- reports
def generator_recall(
    model, window: Window, limits: Limits | None = None, factor: float = 10.0, seed: int = 0, k_prefer: int = DECODE_K_PREFER
) -> dict:
    """Recall of the exhaustive in-window set (``p_in_window >= 0.5``) by flow + decoder.

    The flow draws ``factor x |in-window set|`` samples for the window; each decodes as in the
    design pipeline (best ``p_in_window`` of its ``k_prefer`` nearest free orbits; ``k_prefer=1``:
    the nearest free orbit, the flow alone). Returns the set size, samples, hits and recall.
    """
    limits = limits or Limits.make(model.host)
    idx, rows, mean, std, p = screen(model, window, limits)
    truth = {str(k) for k in idx.keys[rows[p >= IN_WINDOW_P]]}
    if not truth:
        return {"in_window": 0, "samples": 0, "hits": 0, "recall": math.nan}
    m = int(math.ceil(factor * len(truth)))
    timings: dict[str, float] = {}
    counts: dict = {}
    _, table, _ = _flow(model, window, limits, set(), m, m, seed, timings, counts, k_prefer=k_prefer)
    got = set(table["canonical_key"])
    hits = len(truth & got)
    ks = known_set(model)
    comp = {str(k): tuple(c) for k, c in zip(idx.keys[rows], idx.composition[rows])}
    seen = {k for k in truth if comp[k] in ks.compositions}
    return {
        "in_window": len(truth),
        "samples": counts["sampled"],
        "space": len(rows),
        "hits": hits,
        "recall": hits / len(truth),
        "in_window_trained_compositions": len(seen),
        "recall_trained_compositions": len(seen & got) / len(seen) if seen else math.nan,
        "sampled_in_window_precision": float((table["p_in_window"] >= IN_WINDOW_P).mean()),
        "time_s": round(sum(timings.values()), 3),
    }


def _zoom_range(v: np.ndarray, s: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    """Axis limits around the candidates (mean +- std), widened to the window's finite edges where they are
    near (within the candidates' own spread, so the candidates keep at least half the axis), padded; never
    narrower than 0.02 eV."""
    s = np.nan_to_num(np.asarray(s, float))
    lo, hi = float(np.min(v - s)), float(np.max(v + s))
    span = max(hi - lo, 0.02)
    for e in edges[np.isfinite(edges)]:
        if lo - span <= e <= hi + span:
            lo, hi = min(lo, float(e)), max(hi, float(e))
    span = max(hi - lo, 0.02)
    mid = 0.5 * (lo + hi)
    return mid - 0.56 * span, mid + 0.56 * span


def plot_candidates(res: DesignResult, path: str | Path) -> Path:
    """Candidates in property space (eV), two panels: every training configuration with the candidates and
    the window (left, the zoomed area dotted), and a zoom onto the candidates (right: error bars of one std,
    colour = ``p_in_window``, the top five labelled by rank, the window drawn, training data in grey). The plane
    is formation energy x gap: a ``total_mag`` window is not drawn (the title says so; ``p_in_window`` holds it)."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state, faster import
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(11.5, 5.4), dpi=110, layout="constrained")  # room for the legends below the axes
    ax_all, ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.3]})
    c = res.candidates
    ty = res.train_y if res.train_y is not None else np.zeros((0, 2))
    w = res.window.array if res.window is not None else np.array([[-np.inf, np.inf]] * 2)
    x = c[TARGETS[0]].to_numpy(float) if len(c) else np.zeros(0)
    y = c[TARGETS[1]].to_numpy(float) if len(c) else np.zeros(0)

    # left: the whole property space
    allx, ally = np.concatenate([ty[:, 0], x]), np.concatenate([ty[:, 1], y])
    xs = np.concatenate([allx, w[0][np.isfinite(w[0])]])
    ys = np.concatenate([ally, w[1][np.isfinite(w[1])]])
    xlo, xhi = (float(xs.min()), float(xs.max())) if len(xs) else (0.0, 1.0)
    ylo, yhi = (float(ys.min()), float(ys.max())) if len(ys) else (0.0, 1.0)
    padx, pady = 0.05 * (xhi - xlo + 1e-3), 0.05 * (yhi - ylo + 1e-3)
    ax_all.set_xlim(xlo - padx, xhi + padx)
    ax_all.set_ylim(ylo - pady, yhi + pady)
    if len(ty):
        ax_all.scatter(ty[:, 0], ty[:, 1], s=4, c="0.8", label="training data (DFT)", zorder=1, rasterized=True)
    if len(c):  # coloured as on the right (p_in_window), so that the two panels read alike
        ax_all.scatter(x, y, s=14, c=c["p_in_window"], cmap="viridis", vmin=0, vmax=1, edgecolors="k", linewidths=0.3,
                       zorder=3, label="candidates (colour: p_in_window)")

    def window_patch(a, lim_x, lim_y, label):
        x0 = w[0, 0] if np.isfinite(w[0, 0]) else lim_x[0]
        x1 = w[0, 1] if np.isfinite(w[0, 1]) else lim_x[1]
        y0 = w[1, 0] if np.isfinite(w[1, 0]) else lim_y[0]
        y1 = w[1, 1] if np.isfinite(w[1, 1]) else lim_y[1]
        a.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="crimson", lw=1.5, ls="--", label=label, zorder=4))

    window_patch(ax_all, ax_all.get_xlim(), ax_all.get_ylim(), "target window")
    ax_all.set_title("all of property space", fontsize=10)

    # right: zoom onto the candidates
    if len(c):
        sx, sy = c[f"{TARGETS[0]}_std"].to_numpy(float), c[f"{TARGETS[1]}_std"].to_numpy(float)
        zx, zy = _zoom_range(x, sx, w[0]), _zoom_range(y, sy, w[1])
        zy = (max(zy[0], -0.03 * (zy[1] - zy[0])), zy[1])  # a gap is >= 0: the view and the error bars stop there
        sy_lo = np.minimum(np.nan_to_num(sy), np.maximum(y, 0.0))
        ax.set_xlim(*zx)
        ax.set_ylim(*zy)
        if len(ty):
            inside = (ty[:, 0] >= zx[0]) & (ty[:, 0] <= zx[1]) & (ty[:, 1] >= zy[0]) & (ty[:, 1] <= zy[1])
            if inside.any():
                ax.scatter(ty[inside, 0], ty[inside, 1], s=6, c="0.75", label="training data (DFT)", zorder=1)
        ax.errorbar(x, y, xerr=sx, yerr=[sy_lo, sy], fmt="none", ecolor="0.45", lw=0.6, zorder=2,
                    label="one std (gap cut at 0)")
        sc = ax.scatter(x, y, c=c["p_in_window"], cmap="viridis", vmin=0, vmax=1, s=30, edgecolors="k",
                        linewidths=0.4, zorder=3, label="candidates (colour: p_in_window)")
        fig.colorbar(sc, ax=ax, label="p_in_window (probability inside the window)")
        ranks = c["rank"].to_numpy() if "rank" in c.columns else np.arange(1, len(c) + 1)
        for i in range(min(5, len(c))):
            ax.annotate(str(ranks[i]), (x[i], y[i]), xytext=(5, 3 + 6 * (i % 2)), textcoords="offset points",
                        fontsize=7, zorder=6, fontweight="bold")
        if "unlikely_to_form" in c.columns and c["unlikely_to_form"].any():  # synthesis planning: arrangement too high
            u = c["unlikely_to_form"].to_numpy(bool)
            ax.scatter(x[u], y[u], marker="x", c="crimson", s=40, lw=1.0, zorder=5,
                       label="unlikely to form (> 3 kT)")
        window_patch(ax, zx, zy, "target window")
        visible = not (w[0, 1] < zx[0] or w[0, 0] > zx[1] or w[1, 1] < zy[0] or w[1, 0] > zy[1])
        beyond = [f"{name} {e:g}" for name, edges, (v0, v1) in (("FE", w[0], zx), ("gap", w[1], zy))
                  for e in edges if np.isfinite(e) and not v0 <= e <= v1]
        if not visible:
            ax.text(0.02, 0.02, "the target window lies outside this view (left panel)", transform=ax.transAxes,
                    fontsize=8, color="crimson")
        title = "zoom on the candidates (labels: rank)"
        if visible and beyond:  # the view is the candidates': say where the window's other edges are (off the data)
            title += "\nwindow edges beyond this view: " + ", ".join(beyond) + " eV"
        ax_all.add_patch(Rectangle((zx[0], zy[0]), zx[1] - zx[0], zy[1] - zy[0], fill=False, ec="0.3", lw=0.8, ls=":",
                                   label="zoomed area (right)", zorder=5))
        ax.set_title(title, fontsize=10)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=7, frameon=False)  # never on the data
    else:
        ax.text(0.5, 0.5, "no candidates", transform=ax.transAxes, ha="center")
    ax_all.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=7, frameon=False)
    for a in (ax_all, ax):
        a.set_xlabel("formation energy per defect site (eV)")
        a.set_ylabel("HOMO-LUMO gap (eV)")
    mode = res.summary.get("request", {}).get("mode_used", "")
    title = f"{len(c)} candidates ({mode})" + ("; window unreachable: nearest candidates shown" if res.message else "")
    if res.window is not None and res.window.has_moment:  # the plane is FE x gap: say what of the window is not drawn
        a, b = res.window.moment
        title += (f"\nwindow drawn on FE and gap only; its total_mag in [{a:g}, {b:g}] Bohr magnetons per cell is not "
                  "drawn (it is in p_in_window, the colour)")
    fig.suptitle(title)
    fig.savefig(path)
    return Path(path)

