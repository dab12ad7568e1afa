"""The Python API of the two main commands, at parity with the CLI.

:func:`design` takes every option of ``invdesign design``, :func:`predict` every option of
``invdesign predict`` and :func:`embed` every option of ``invdesign embed`` (the same names, in Python spelling: ``--check-top`` is ``check_top``), and they
return the columns those commands write (``candidates.csv``, the predict CSV; see *Outputs and columns*).
Wherever the CLI takes STRUCTURES they also take pymatgen ``Structure``s and ASE ``Atoms`` (and an
``(N, n_sites)`` occupancy array for :func:`predict`). Errors are :class:`~invdesign.errors.InvdesignError`
(a ``ValueError``) whose one line names the Python argument (``overwrite=True``, not ``--overwrite``);
warnings the CLI prints (structures outside the training domain) are Python warnings.

``from invdesign import design, predict`` gives these two functions. The lower-level
:func:`invdesign.generate.design.design` (no synthesis planning, no check) stays for code that composes the
steps itself.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from invdesign.errors import InvdesignError

DEFAULT_TOL = 0.7  # Angstrom: largest atom-to-site distance when mapping structures (the CLI's --tol)
MAX_CANDIDATES = 100_000  # n: candidates (each a CIF and a POSCAR when written), as the CLI
MAX_SAMPLES = 10_000_000  # samples: flow samples, as the CLI
MAX_SEED = 2**63 - 1  # seed: every generator takes it (numpy, torch), as the CLI's --seed

# the CLI's option names in messages shared with the CLI, and what a Python caller passes instead
_OPTIONS = ("overwrite", "mu", "temperature", "export", "check-top", "check-steps", "check-executor", "check",
            "mode", "samples", "diversity", "min-defects", "max-defects", "types", "exclude", "seed", "pool",
            "host", "supercell", "tol", "target", "model")
_OPTION_RE = re.compile(r"(?<![\w-])--(" + "|".join(re.escape(o) for o in _OPTIONS) + r")(?![\w-])")


def _python_message(text: str) -> str:
    """A CLI message in Python terms: ``give --overwrite`` -> ``pass overwrite=True``, ``--check-top`` ->
    ``check_top``, ``-n`` -> ``n``."""
    text = re.sub(r"\bgive --overwrite\b", "pass overwrite=True", text)
    text = re.sub(r"(?<![\w-])-n(?![\w-])", "n", text)
    return _OPTION_RE.sub(lambda m: m.group(1).replace("-", "_"), text)


def _python_terms(fn):
    """Re-raise an :class:`InvdesignError` of the shared checks with the Python argument names."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InvdesignError as exc:
            reason = _python_message(exc.reason)
            if reason == exc.reason:
                raise
            raise InvdesignError(reason, source=exc.source) from None

    return wrapper


# ---------------------------------------------------------------------------------------------- inputs
def _kind(items: list) -> str:
    """``"path"``, ``"structure"`` (pymatgen / ASE) or ``"empty"``; mixed or other kinds are refused."""
    from invdesign.lattice.config import as_structure

    kinds = {"path" if isinstance(s, (str, Path)) else "structure" if as_structure(s) is not None else type(s).__name__
             for s in items}
    if not kinds:
        return "empty"
    if len(kinds) > 1 or not kinds <= {"path", "structure"}:
        raise InvdesignError("structures must be STRUCTURES paths (files, folders, archives), pymatgen Structures or "
                             f"ASE Atoms, one kind at a time (got {', '.join(sorted(kinds))})")
    return kinds.pop()


def _items(structures) -> list:
    from invdesign.lattice.config import as_structure

    if isinstance(structures, (str, Path)) or as_structure(structures) is not None:
        return [structures]
    if isinstance(structures, (list, tuple)):
        return list(structures)
    try:
        return list(structures)
    except TypeError:
        raise InvdesignError("structures must be paths, pymatgen Structures, ASE Atoms, or an (N, n_sites) "
                             f"occupancy array, not {type(structures).__name__}") from None


def _recognised(items: list, kind: str):
    """The packaged host of the first structure (None: none recognised; the model's own host then)."""
    if kind == "path":
        from invdesign.data.dataset import recognised_host

        return recognised_host(items)
    if kind == "structure":
        from invdesign.lattice.config import as_structure
        from invdesign.lattice.hosts import recognise

        st = as_structure(items[0])
        try:
            return recognise(st.lattice.matrix, [str(s) for s in st.species], "structure 0")
        except InvdesignError:
            return None
    return None


def _request(host, supercell):
    """What ``host``/``supercell`` ask for (the CLI's ``--host``/``--supercell``): a HostLattice, the
    supercell text, or None (the model's host). ``host`` may be a :class:`HostLattice` itself."""
    from invdesign.lattice.host import HostLattice

    if isinstance(host, HostLattice):
        if supercell is not None:
            raise InvdesignError("host is a HostLattice (its supercell is its own); drop supercell")
        return host
    from invdesign.predict.placement import requested_host

    return requested_host(None if host is None else str(host), None if supercell is None else str(supercell))


def _auto_host_model(model, request, items: list, kind: str):
    """The packaged host model serving these inputs where the CLI's would: no model given, and the
    host (``host=``, else recognised from the first structure) a packaged one other than 8x8 MoS2."""
    from invdesign.lattice.host import HostLattice

    if model is not None or isinstance(request, str):
        return None
    h = request if isinstance(request, HostLattice) else _recognised(items, kind) if items else None
    if h is None:
        return None
    from invdesign.predict.host_serving import packaged_predictor

    return packaged_predictor(h)


def _is_model_object(model) -> bool:
    return model is not None and not isinstance(model, (str, Path)) and hasattr(model, "host") and hasattr(model, "predict")


def _host_model_file(model, request):
    """A host model file (``.npz``, ``invdesign train --out F.npz``) as a predictor on its own host."""
    from invdesign.lattice.host import HostLattice
    from invdesign.predict.host_serving import load_host_predictor

    m = load_host_predictor(model)
    if request is not None and not (isinstance(request, HostLattice) and request.fingerprint == m.host.fingerprint):
        raise InvdesignError(f"this host model serves its own host {m.host.name} only; drop host/supercell",
                             source=str(model))
    return m


def _check_model_path(model) -> None:
    if isinstance(model, (str, Path)) and not Path(model).exists():
        raise InvdesignError("model not found", source=str(model))


def _mu(mu):
    """``mu`` checked before any work: None, ``"reference"``, a limit name, ``FILE.json[#LIMIT]``, a dict of
    eV/atom or a :class:`~invdesign.synthesis.chempot.ChemicalPotentials`."""
    from invdesign.synthesis.chempot import check_mu_spec

    if mu is None or isinstance(mu, str):
        check_mu_spec(mu)
    elif isinstance(mu, Path):
        check_mu_spec(str(mu))
        mu = str(mu)
    return mu


def _model_mu(model, mu):
    """A model already standing on chemical potentials (``with_mu(model, mu)``) keeps them when ``mu`` is None."""
    from invdesign.synthesis.chempot import ReferencedModel

    if isinstance(model, ReferencedModel):
        if mu is not None:
            raise InvdesignError(f"model already stands on the chemical potentials {model.mu.name!r}; pass the plain "
                                 "model with mu=... (or drop mu)")
        return model.base, model.mu
    return model, mu


def _occ_of(items_or_array, kind: str, m, tol: float):
    """ids and occupancies of the inputs on ``m``'s host."""
    if isinstance(items_or_array, np.ndarray):
        occ = np.asarray(items_or_array)
        if occ.ndim != 2 or occ.shape[1] != m.host.n_sites:
            raise InvdesignError(f"an occupancy array must be (N, {m.host.n_sites}) for {m.host.name}, not {occ.shape}")
        check = getattr(m, "_check", None)
        occ = check(occ) if check is not None else occ.astype(np.uint8)
        return [str(i) for i in range(len(occ))], occ
    if kind == "path":
        from invdesign.data.dataset import map_structures

        ds = map_structures(items_or_array, m.host, tol)
    else:
        from invdesign.data.dataset import structures_dataset

        ds = structures_dataset(items_or_array, m.host, tol)
    return [str(i) for i in ds.ids], ds.occ


def _warn_extrapolation(m, occ, ids) -> None:
    flags = m.extrapolation(occ)
    bad = [(i, f) for i, f in zip(ids, flags) if f]
    if bad:
        first = ", ".join(f"{i} ({f})" for i, f in bad[:3])
        warnings.warn(f"{len(bad)} of {len(flags)} structures lie outside the training domain (predictions are "
                      f"extrapolations): {first}{' ...' if len(bad) > 3 else ''}", stacklevel=3)


# --------------------------------------------------------------------------------------------- predict
@_python_terms
def predict(structures, model=None, *, mu=None, tol: float = DEFAULT_TOL, host=None, supercell=None,
            out: str | Path | None = None, overwrite: bool = False, full_precision: bool = False):
    """Formation energy per defect site and HOMO-LUMO gap (eV) with one-sigma uncertainties: the table
    ``invdesign predict`` writes, column for column.

    Args:
        structures: STRUCTURES paths (CIF/POSCAR/pymatgen-JSON files, folders, 2DMD ``initial.tar.gz``
            archives; ids are file stems), pymatgen Structures or ASE Atoms (ids ``"0"``, ``"1"``, ... in their
            order), or an ``(N, n_sites)`` uint8 occupancy array on the model's host (ids are row numbers).
        model: a model file (``.pt``; ``.npz``: a host model from ``invdesign train --out F.npz``), a loaded
            model or predictor, or None: the packaged model (structures recognised as a packaged host other
            than 8x8 MoS2, e.g. GaSe or h-BN, are served by that host's packaged model, as on the CLI).
        mu: chemical potentials of the formation energy: ``"reference"`` (default: the model's 2DMD
            reference), a limit of the host (``"S-rich"``, ``"Mo-rich"``; ``"Ga-rich"``, ...), ``"FILE.json"``
            (``[#LIMIT]``, doped's format too), a dict of eV/atom or a ``ChemicalPotentials``.
        tol: largest atom-to-site distance (Angstrom) when mapping structures.
        host, supercell: the structures' host when it is not the model's (``--host``: a unit-cell CIF, a host
            TOML, ``builtin:MoS2``, a packaged host's name, or a HostLattice; ``--supercell`` e.g. ``"12x12"``).
        out: also write the table to this CSV (checked before any work; an existing file only with
            ``overwrite=True``), rounded as the CLI writes it (eV to 4 decimals, probabilities to 3: *Outputs and
            columns*, Rounding).
        full_precision: write ``out`` at full precision (every float its repr), as ``--full-precision``.

    Returns:
        a DataFrame, at full precision: ``id``, the two targets, their ``_std``, ``extrapolation``,
        ``extrapolation_reason``, ``note``, ``homo_lumo_gap_validated``, ``formation_energy_reference``, ``total_mag``
        and ``total_mag_std`` on spin-polarised hosts, ``dn_<El>``, ``defects`` and ``mu`` (units: *Outputs and
        columns*).
    """
    from invdesign.synthesis.chempot import read_mu, with_mu
    from invdesign.synthesis.plan import bookkeeping

    array, items, kind = _structures_in(structures, tol)
    model, mu = _model_mu(model, mu)
    mu = _mu(mu)
    _check_model_path(model)
    if out is not None:
        from invdesign.outputs import check_file

        check_file(out, overwrite=overwrite)
    request = _request(host, supercell)
    if _is_model_object(model):
        from invdesign.predict.placement import place_model

        m = place_model(model, request)
    elif model is not None and str(model).lower().endswith(".npz"):
        m = _host_model_file(model, request)
    else:
        m = None if array else _auto_host_model(model, request, items, kind)
        if m is None:
            from invdesign.predict.placement import place_model
            from invdesign.predictor import load_predictor

            m = place_model(load_predictor(model), request)
    ids, occ = _occ_of(structures if array else items, kind, m, tol)
    _warn_extrapolation(m, occ, ids)
    from invdesign.predict.serving import prediction_table

    chem = read_mu(mu, m.host)  # the host's own reference and limits
    table = prediction_table(with_mu(m, chem), ids, occ)
    if hasattr(m, "magnetisation_columns"):  # spin-polarised hosts: the cell's moment beside the gap
        for k, v in m.magnetisation_columns(occ).items():
            table[k] = v
    df = bookkeeping(table, occ, m.host)
    df["mu"] = chem.name
    if out is not None:
        from invdesign.io import write_csv

        write_csv(out, df, full_precision=full_precision)
    return df


def _structures_in(structures, tol: float):
    """``(array, items, kind)`` of a ``predict``/``embed`` input (an occupancy array, or paths, Structures or Atoms),
    refused where empty, where a path is missing or where ``tol`` is not a finite positive distance."""
    array = isinstance(structures, np.ndarray)
    items = None if array else _items(structures)
    kind = "array" if array else _kind(items)
    if kind == "empty":
        raise InvdesignError("no structures given")
    if kind == "path":
        for p in items:
            if not Path(p).exists():
                raise InvdesignError("structure file or folder not found", source=str(p))
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise InvdesignError(f"tol must be a finite positive distance in Angstrom, not {tol!r}")
    return array, items, kind


# ----------------------------------------------------------------------------------------------- embed
@_python_terms
def embed(structures, model=None, *, tol: float = DEFAULT_TOL, host=None, supercell=None,
          out: str | Path | None = None, overwrite: bool = False):
    """Symmetry-invariant embeddings: the table ``invdesign embed`` writes (``id, z0..z{d-1}``, embedding units;
    ``out`` is written at full precision, as the CLI's: ``decode`` reads it back).

    Args:
        structures: as for :func:`predict` (paths, pymatgen Structures, ASE Atoms, or an occupancy array).
        model: a full model file (``.pt``) or a loaded model, or None: the packaged 8x8 MoS2 model (a host
            model ``.npz`` predicts but has no embedding; so do the packaged models of the other hosts).
        tol, host, supercell, out, overwrite: as for :func:`predict`.
    """
    import pandas as pd

    array, items, kind = _structures_in(structures, tol)
    _check_model_path(model)
    if model is not None and str(model).lower().endswith(".npz"):
        raise InvdesignError("a host model (.npz) predicts; embeddings need the full model (.pt)", source=str(model))
    if out is not None:
        from invdesign.outputs import check_file

        check_file(out, overwrite=overwrite)
    request = _request(host, supercell)
    from invdesign.predict.placement import place_model

    if _is_model_object(model):
        m = place_model(model, request)
    else:
        auto = None if array else _auto_host_model(model, request, items, kind)
        if auto is not None:
            raise InvdesignError(f"the packaged embedding is 8x8 MoS2's: to embed structures on {auto.host.name}, train "
                                 "one on its data (invdesign train --data DIR --out F.pt, minutes) and pass model='F.pt'; "
                                 "predict, design, canonical_key and enumerate work on it without")
        from invdesign.model import load_model

        m = place_model(load_model(model), request)
    ids, occ = _occ_of(structures if array else items, kind, m, tol)
    _warn_extrapolation(m, occ, ids)
    z = m.embed(occ)
    df = pd.DataFrame(z, columns=[f"z{i}" for i in range(z.shape[1])])
    df.insert(0, "id", ids)
    if out is not None:
        from invdesign.io import write_csv

        write_csv(out, df)
    return df


# ---------------------------------------------------------------------------------------------- design
@_python_terms
def design(
    target,
    n: int = 50,
    *,
    model=None,
    pool=None,
    max_defects: int | None = None,
    min_defects: int = 1,
    types: str | Sequence[str] | None = None,
    exclude=None,
    seed: int = 0,
    mode: str = "auto",
    samples: int | None = None,
    diversity: float = 0.05,
    mu=None,
    temperature: float = 1000.0,
    export: str | Sequence[str] | None = None,
    check: str | None = None,
    check_top: int = 10,
    check_steps: int = 20,
    check_executor: str = "auto",
    host=None,
    supercell=None,
    out: str | Path | None = None,
    overwrite: bool = False,
    full_precision: bool = False,
    reach_p: float = 0.05,
    time_limit_s: float = 900.0,
):
    """Candidates whose predicted properties lie in the target window: decoded, checked, ranked, planned
    and (with ``out``) written, as ``invdesign design`` does; the same columns as its ``candidates.csv``.

    Args:
        target: the window: ``{"formation_energy_per_site": (lo, hi), "homo_lumo_gap": (lo, hi)}`` in eV
            (either may be left out; ``None`` for an open end), on the spin-polarised hosts (h-BN, GaSe, InSe,
            black P) also ``"total_mag": (lo, hi)`` in Bohr magnetons per cell (alone or with the others; refused on
            MoS2 and WSe2, which have no moment), a ``Window``, or CLI strings ``["NAME=LO:HI"]``.
        n: number of candidates.
        model: a model file (``.pt``, or a host model ``.npz``), a loaded model or host predictor, or None: the
            packaged model (a pool, or ``host=``, on a packaged host other than 8x8 MoS2: that host's model).
        pool: rank these instead of generating: STRUCTURES paths, pymatgen Structures or ASE Atoms (ids
            ``"0"``, ``"1"``, ...), or a Dataset.
        max_defects, min_defects: defects per configuration (``max_defects`` None: 3 when generating; with a
            pool, the pool's own range).
        types: allowed defect types, ``"V_S,W_Mo"`` or ``["V_S", "W_Mo"]`` (None: all).
        exclude: canonical keys, key files (``.csv``/``.txt``) or STRUCTURES never to return.
        seed: seed of the flow samples and annealing chains.
        mode: ``"auto"``, ``"anneal"``, ``"flow-anneal"``, ``"flow"`` or ``"exhaustive"``.
        samples: flow samples (default ``10 * n`` with the exact decoder).
        diversity: diversity weight in the ranking (0: sort by ``p_in_window``).
        mu: chemical potentials the formation-energy window applies to (as :func:`predict`'s ``mu``).
        temperature: growth temperature (K) of the arrangement populations.
        export: per-candidate inputs for the next tools, any of ``"vasp,qe,json"`` (or a list): written under
            ``out/export/<id>/`` (needs ``out``).
        check: check the top candidates with physics: ``"chgnet"``, ``"chgnet+delta:FILE"``,
            ``"chgnet:MU.json"``, ``"xtb+delta[:FILE]"`` or ``"xtb:MU.json"`` (adds the ``check_*`` columns and
            ``model_rank``, re-ranks the checked top; ``result.relaxed`` holds the relaxed Structures by id).
        check_top, check_steps, check_executor: how many of the top to check, FIRE steps of the relaxation,
            where the checks run (``"auto"``, ``"inline"``, ``"process[:N]"``, ``"dask-local[:N]"``, ``"dask://host:port"``).
        host, supercell: design on this host (a packaged host's name such as ``"GaSe"``, a unit-cell CIF, a host
            TOML, ``builtin:MoS2`` or a HostLattice) or a larger cell of the model's host (``"12x12"``).
        out: the output folder (``candidates.csv``, ``structures/``, ``poscar/``, ``summary.json``,
            ``candidates.png``; checked before any work; a previous design output only with ``overwrite=True``);
            ``candidates.csv`` is rounded as the CLI writes it (*Outputs and columns*, Rounding).
        full_precision: write ``candidates.csv`` at full precision (every float its repr), as ``--full-precision``
            (``result.candidates`` is at full precision either way).
        reach_p: below this best ``p_in_window`` the window is reported out of reach (``result.message``).
        time_limit_s: requests estimated to take longer are refused before any work.

    Returns:
        a :class:`~invdesign.generate.design.DesignResult`: ``candidates`` (the columns of
        ``candidates.csv``), ``occ``, ``summary`` (``summary.json``), ``message``; ``structures()`` gives the
        candidates as pymatgen Structures.
    """
    from invdesign.generate.design import MODES, _as_window
    from invdesign.limits import check_number

    window = _as_window(target)
    check_number("n", n, 1, MAX_CANDIDATES, integer=True)
    if mode not in MODES:
        raise InvdesignError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if samples is not None:
        check_number("samples", samples, 1, MAX_SAMPLES, integer=True)
    check_number("diversity", diversity, 0.0, 1.0)
    check_number("seed", seed, 0, MAX_SEED, integer=True)
    check_number("check_top", check_top, 1, MAX_CANDIDATES, integer=True)
    check_number("check_steps", check_steps, 0, 100_000, integer=True)
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise InvdesignError(f"temperature must be a positive number of kelvin, not {temperature!r}")
    if isinstance(types, str):
        types = [t.strip() for t in types.split(",") if t.strip()]
        if not types:
            raise InvdesignError("types is empty; give labels like 'V_S,W_Mo'")
    if max_defects is not None and (max_defects < 0 or min_defects < 0 or min_defects > max_defects):
        raise InvdesignError(f"min_defects {min_defects} and max_defects {max_defects} must satisfy 0 <= min <= max")
    from invdesign.synthesis.export import parse_export

    kinds = parse_export(export if export is None or isinstance(export, str) else ",".join(export))
    if kinds and out is None:
        raise InvdesignError("export writes files under out/export/<id>/: give out as well")
    model, mu = _model_mu(model, mu)
    mu = _mu(mu)
    _check_model_path(model)
    if isinstance(exclude, (str, Path)):
        exclude = [exclude]
    for e in exclude if isinstance(exclude, (list, tuple, set)) else []:
        if isinstance(e, (str, Path)) and not Path(e).exists() and ":" not in str(e):
            raise InvdesignError("not a file, folder or canonical key to exclude", source=str(e))
    items, kind = None, None
    from invdesign.data.dataset import Dataset

    if pool is not None and not isinstance(pool, Dataset):
        items = _items(pool)
        kind = _kind(items)
        if kind == "path":
            for p in items:
                if not Path(p).exists():
                    raise InvdesignError("pool file or folder not found", source=str(p))
    if out is not None:
        from invdesign.outputs import check_dir

        check_dir(out, "design", overwrite)
    request = _request(host, supercell)
    if max_defects is None and pool is None:
        max_defects = 3
    if _is_model_object(model):
        from invdesign.predict.placement import place_model

        m = place_model(model, request)
    elif model is not None and str(model).lower().endswith(".npz"):
        m = _host_model_file(model, request)
    else:
        m = _auto_host_model(model, request, items or [], kind)
        if m is None:
            from invdesign.predict.placement import place_model

            screen_only = pool is None and mode in ("auto", "exhaustive") and max_defects is not None and max_defects <= 3
            if screen_only:  # the numpy copy serves where the run needs no embedding or flow (as the CLI)
                from invdesign.generate.design_model import load_design_model

                m = load_design_model(model)
            else:
                from invdesign.model import load_model

                m = load_model(model)
            m = place_model(m, request)
    window.check_model(m)  # a total_mag window on a host without a moment: one line, before any work
    if getattr(m, "design_modes", None) is not None and mode not in ("auto", *m.design_modes):
        raise InvdesignError(f"the {m.host.name} host model has no flow: it designs by annealing or by screening every "
                             f"orbit (mode {', '.join(repr(x) for x in m.design_modes)} or 'auto'), not mode {mode!r}")
    if mode == "flow" and hasattr(m, "cell_map"):
        raise InvdesignError(f"mode 'flow' samples the flow trained on {m.trained.host.name}; on {m.host.name} use "
                             "mode 'anneal', 'exhaustive' or 'auto'")
    from invdesign.synthesis.chempot import read_mu, with_mu

    chem = read_mu(mu, m.host)  # the host's own reference and limits
    if max_defects is not None:
        from invdesign.generate.decoder import Limits

        Limits.make(m.host, max_defects, min_defects, types)
    checker = None
    if check is not None:
        from invdesign.campaign.check import check_oracle
        from invdesign.campaign.executors import check_spec

        if chem.name != "reference":
            raise InvdesignError("check with mu is not supported yet: the check's corrected energies stand on the 2DMD "
                                 "reference chemical potentials; drop mu to check, or check to re-reference")
        check_spec(check_executor)
        checker = check_oracle(check, m.host, steps=check_steps)
    from invdesign.generate.design import design as _design
    from invdesign.generate.threads import one_thread
    from invdesign.synthesis.plan import plan_design, write_design

    mm = with_mu(m, chem)  # the window applies to formation energies under mu
    with one_thread():  # small batches: one torch thread is fastest and leaves the other cores alone
        res = _design(window, n, model=mm, pool=items if items is not None else pool, max_defects=max_defects,
                      min_defects=min_defects, types=types, exclude=exclude, seed=seed, mode=mode, samples=samples,
                      diversity=diversity, reach_p=reach_p, out=None, time_limit_s=time_limit_s)
        res = plan_design(res, mm, chem, temperature, kinds, None)
    if checker is not None:
        check_design(res, checker, check_top, check_executor)
    if out is not None:
        from invdesign.io import csv_precision

        with csv_precision(full_precision):
            write_design(res, mm, chem, temperature, kinds, out, overwrite, extra=relaxed_writer(res.relaxed))
    return res


def check_design(res, checker, top: int, executor: str, on_row=None) -> None:
    """The physics check of the top ``top`` candidates of the design ``res``, merged and re-ranked in place
    (``invdesign design --check``): ``res.candidates`` gains the check's columns, ``res.relaxed`` the relaxed
    Structures by id, ``res.summary["check"]`` the protocol and the counts. ``on_row``: called once per checked
    candidate (a progress bar)."""
    from invdesign.campaign.check import apply_check, check_configurations, reference_of

    c = res.candidates
    k = min(top, len(c))
    lo, hi = res.window.lo[0], res.window.hi[0]
    glo, ghi = res.window.lo[1], res.window.hi[1]
    gives_gap = "homo_lumo_gap" in getattr(checker, "label_columns", [])
    table, relaxed = check_configurations(res.occ[:k], c["id"].head(k).tolist(), checker, (lo, hi), executor,
                                          on_row=on_row, gap_window=(glo, ghi))
    res.candidates, res.occ = apply_check(c, res.occ, table)
    res.relaxed = dict(relaxed)
    st = table["check_status"].value_counts().to_dict()
    if gives_gap:
        relaxation = "none (single point of the unrelaxed configuration; the structural check is not made)"
        passing = "formation energy and HOMO-LUMO gap of the checker both in their windows"
        gap = {"checked": True, "window": [glo, ghi],
               "share_in_window": float(table["check_gap_in_window"].mean()) if k else None}
    else:
        relaxation = f"FIRE fmax {checker.check_fmax:g} eV/A, <= {checker.check_steps} steps"
        passing = "same configuration after relaxation, corrected CHGNet formation energy in the window"
        gap = "not checked (CHGNet gives no HOMO-LUMO gap)"
    res.summary["check"] = {
        "oracle": checker.name, "reference": reference_of(checker),
        "energy_protocol": checker.protocol, "relaxation": relaxation,
        "checked": k, "status": {s: int(st.get(s, 0)) for s in ("pass", "out_of_window", "changed_configuration", "failed")},
        "share_in_window": float(table["check_in_window"].mean()) if k else None,
        "formation_energy_window": [lo, hi],
        "ranking": f"the top {k} by the model were checked and re-ranked: pass ({passing}) first, then out_of_window, "
                   "changed_configuration, failed, each in model order; the rest follow unchecked in model order; "
                   "model_rank keeps the model's rank",
        "gap": gap,
    }
    if res.window.has_moment:  # no checker gives a magnetic moment
        res.summary["check"]["total_mag"] = (f"not checked ({checker.name} gives no magnetic moment): the {res.window.moment} "
                                             "Bohr magnetons per cell window stands on the model's prediction only")


def relaxed_writer(relaxed: dict):
    """The ``extra`` writer of :func:`invdesign.synthesis.plan.write_design` that adds ``relaxed/<id>.cif`` for the
    checked candidates' relaxed Structures (None where there are none)."""
    if not relaxed:
        return None

    def write(tmp: Path) -> None:
        from pymatgen.io.cif import CifWriter

        from invdesign.io import atomic_write_text

        (tmp / "relaxed").mkdir(exist_ok=True)
        for cid, st in relaxed.items():
            atomic_write_text(tmp / "relaxed" / f"{cid}.cif", str(CifWriter(st)))

    return write
