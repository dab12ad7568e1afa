"""Oracles: what a campaign spends its budget on. One small protocol, many implementations.

An oracle is any object with ``evaluate(occ, ids) -> (N, 2) float array`` (eV, columns
``formation_energy_per_site, homo_lumo_gap``; NaN where it does not supply a target), taking
``occ (N, n_sites)`` uint8 occupancies and their ``N`` ids. Oracles are picklable so that a
process pool or a Dask cluster can run them. ``cheap = True`` marks oracles that are faster
inline than in a worker process.

- :class:`TableOracle` (``table:F.csv``): labels looked up by ``_id``/``id`` (and by
  ``canonical_key`` when the table has that column): replays a campaign on labelled data.
- :class:`SurrogateOracle` (``surrogate`` or ``surrogate:MODEL``): the model's predictions.
- :class:`AseOracle`: any ASE calculator; relaxes the structure and returns the formation energy
  per defect site, with chemical potentials fitted by least squares to DFT formation energies
  (:func:`fit_chemical_potentials`). It supplies no HOMO-LUMO gap (NaN).
- :class:`ChgnetOracle` (``chgnet`` or ``chgnet:MU.json``): :class:`AseOracle` with CHGNet.
- :class:`CallableOracle`: a Python function of the batch, or of one pymatgen ``Structure``.
- :class:`XtbOracle` (``xtb`` or ``xtb:MU.json``): GFN1-xTB single point (tblite): energy and HOMO-LUMO gap;
  :class:`XtbDeltaOracle` (``xtb+delta[:FILE]``): its gap corrected toward DFT, with per-configuration stds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from invdesign.campaign.gpaw import PROTOCOL as GPAW_PROTOCOL  # numpy only: GPAW itself is imported where it runs
from invdesign.data.dataset import TARGETS, read_targets
from invdesign.errors import InvdesignError
from invdesign.lattice.host import VACANCY, HostLattice


@runtime_checkable
class Oracle(Protocol):
    """``evaluate(occ (N, n_sites) uint8, ids) -> (N, 2)`` eV, NaN for targets not supplied."""

    def evaluate(self, occ: np.ndarray, ids: Sequence[str]) -> np.ndarray: ...


_MISSING = {"", "nan", "na", "n/a", "null", "none"}


MAX_LABEL_EV = 1e3  # eV: no formation energy per site or gap of a defect configuration is beyond this


def unphysical(column: str, vals) -> np.ndarray:
    """Bool mask of finite values of target ``column`` that no measurement gives: beyond +-:data:`MAX_LABEL_EV`
    eV, or a negative HOMO-LUMO gap."""
    v = np.asarray(vals, dtype=float)
    with np.errstate(invalid="ignore"):
        bad = np.isfinite(v) & (np.abs(v) > MAX_LABEL_EV)
        if column == "homo_lumo_gap":
            bad |= np.isfinite(v) & (v < 0)
    return bad


def _unphysical_reason(column: str, v: float) -> str:
    if column == "homo_lumo_gap" and v < 0:
        return "is negative (a HOMO-LUMO gap is >= 0 eV)"
    return f"is beyond +-{MAX_LABEL_EV:g} eV (no defect property is)"


def check_labels(df: pd.DataFrame, columns: Sequence[str], source: str, required: Sequence[str] = (),
                 line_offset: int = 2, physical: bool = True) -> pd.DataFrame:
    """Target columns of a label table as floats (eV), refusing anything that is not a finite number.

    ``inf``/``-inf`` and text are refused everywhere; a blank or NaN cell is refused in the
    ``required`` columns (allowed, meaning "not measured", in the others). The error names the
    file, the line (``line_offset`` = the line of the first data row) and the column.

    Args:
        df: the table as read (any dtypes; strings are kept when read with ``dtype=str``).
        columns: target columns to check (those present in ``df``).
        required: columns where a missing value is an error.
        physical: also refuse finite values no measurement gives (:func:`unphysical`: a negative gap, 1e308 eV).

    Returns:
        ``df`` with the checked columns converted to float (NaN = not measured).
    """
    df = df.copy()
    cols = [c for c in columns if c in df.columns]
    vals = {c: pd.to_numeric(df[c], errors="coerce").astype(float) for c in cols}
    blank = {c: df[c].isna() | df[c].astype(str).str.strip().str.lower().isin(_MISSING) for c in cols}
    odd = {c: pd.Series(unphysical(c, vals[c]) & physical, index=df.index) & ~blank[c] for c in cols}
    bad = {c: (blank[c] & (c in required)) | (~blank[c] & ~np.isfinite(vals[c])) | odd[c] for c in cols}
    rows = [i for i in range(len(df)) if any(bad[c].iat[i] for c in cols)]
    if rows:  # the first bad cell in file order (line, then column)
        i = rows[0]
        c = next(c for c in cols if bad[c].iat[i])
        if blank[c].iat[i]:
            raise InvdesignError(f"line {i + line_offset}, column {c}: missing value (a finite number in eV is needed)",
                                 source=source)
        if odd[c].iat[i]:
            raise InvdesignError(f"line {i + line_offset}, column {c}: {df[c].iat[i]!r} {_unphysical_reason(c, vals[c].iat[i])}",
                                 source=source)
        what = "is not a finite number" if np.isinf(vals[c].iat[i]) else "is not a number"
        raise InvdesignError(f"line {i + line_offset}, column {c}: {df[c].iat[i]!r} {what} (eV)", source=source)
    for c in cols:
        df[c] = vals[c].where(~blank[c], np.nan)
    return df


class TableOracle:
    """Labels from a table (CSV with ``_id`` or ``id``, optional ``canonical_key``, target columns).

    Every label is checked when the table is read: text and ``inf``/``-inf`` are refused with the
    file, line and column, and so is a missing value in a ``needed`` column (the campaign's
    targets). With ``allow_failures`` such labels are kept as NaN instead and the evaluations that
    hit them are recorded as failed (counted and reported by the campaign).

    Args:
        table: path of the CSV (``.csv`` or ``.csv.gz``) or a DataFrame.
        host: host lattice; needed only to label configurations by canonical key.
        needed: target names that must have a finite value in every row (default: none).
        allow_failures: do not refuse bad labels; they become failed evaluations.
    """

    cheap = True

    def __init__(self, table: str | Path | pd.DataFrame, host: HostLattice | None = None,
                 needed: Sequence[str] = (), allow_failures: bool = False) -> None:
        if isinstance(table, pd.DataFrame):
            df = table.copy()
            if "_id" not in df.columns and "id" in df.columns:
                df = df.rename(columns={"id": "_id"})
            self.name = "table:<DataFrame>"
            source = "<DataFrame>"
        else:
            path = Path(table)
            if not path.is_file():
                raise InvdesignError("oracle table not found", source=str(path))
            df = read_targets(path, raw=True)
            self.name = f"table:{path}"
            source = str(path)
        present = [t for t in TARGETS if t in df.columns]
        if not present:
            raise InvdesignError(f"oracle table has none of the target columns {list(TARGETS)}", source=self.name)
        missing_needed = [t for t in needed if t not in df.columns]
        if missing_needed and not allow_failures:
            t = missing_needed[0]
            why = (" (these are energy labels from a CHGNet/ASE oracle, which gives no gap)"
                   if t == "homo_lumo_gap" and "raw_energy" in df.columns else "")
            raise InvdesignError(f"the table has no column {t}, a target of the campaign{why}; {GIVES[t]}", source=source)
        if allow_failures:
            for t in present:
                vals = pd.to_numeric(df[t], errors="coerce").astype(float)
                df[t] = vals.where(np.isfinite(vals) & ~unphysical(t, vals), np.nan)
        else:
            df = check_labels(df, present, source, required=list(needed))
        for t in TARGETS:
            df[t] = df[t].astype(float) if t in df.columns else np.nan
        self.by_id = {str(k): v for k, v in zip(df["_id"].astype(str), df[list(TARGETS)].to_numpy(float))}
        self.by_key = (
            {str(k): v for k, v in zip(df["canonical_key"].astype(str), df[list(TARGETS)].to_numpy(float))}
            if "canonical_key" in df.columns else {}
        )
        self.host = host
        self.needed = [TARGETS.index(t) for t in needed if t in TARGETS]
        self.present = present
        self.lines = {str(k): i + 2 for i, k in enumerate(df["_id"].astype(str))}

    def check_complete(self, ids: Sequence[str], keys: Sequence[str]) -> None:
        """For ``label``: refuse (one line, before anything is written) an id with no label in the table, by id or
        canonical key, or whose label lacks a finite value in a target column the table has."""
        for cid, key in zip(ids, keys):
            row = self.by_id.get(str(cid))
            if row is None:
                row = self.by_key.get(str(key))
            if row is None:
                raise InvdesignError(f"no label for {cid!r} ({key}) by id or canonical_key; label every structure",
                                     source=self.name)
            miss = [t for t in self.present if not np.isfinite(row[TARGETS.index(t)])]
            if miss:
                line = self.lines.get(str(cid))
                raise InvdesignError(f"{'line ' + str(line) + ': ' if line else ''}the label of {cid!r} has no finite "
                                     f"{miss[0]} (a missing or NaN value)", source=self.name)

    @property
    def label_columns(self) -> list[str]:
        """The target columns the table holds (``label`` writes those, never a column of NaN)."""
        return list(self.present)

    def check_covers(self, ids: Sequence[str], keys: Sequence[str]) -> None:
        """Refuse (one line naming the table) when a candidate has no label in the table, by id or canonical key."""
        for cid, key in zip(ids, keys):
            if str(cid) not in self.by_id and str(key) not in self.by_key:
                raise InvdesignError(f"no label for candidate {cid!r} ({len(ids)} candidates); label every candidate "
                                     "or give --allow-failures to record missing labels as failures", source=self.name)

    def evaluate(self, occ: np.ndarray, ids: Sequence[str]) -> np.ndarray:
        """``(N, 2)`` labels (eV); an id without a label, or without a finite value for a needed target, is an error."""
        out = np.full((len(ids), len(TARGETS)), np.nan)
        keys = None
        for i, cid in enumerate(ids):
            row = self.by_id.get(str(cid))
            if row is None and self.by_key and self.host is not None:
                if keys is None:
                    from invdesign.lattice.canonical import canonical_keys

                    keys = canonical_keys(np.asarray(occ), self.host)
                row = self.by_key.get(keys[i])
            if row is None:
                raise InvdesignError(f"no label for {cid!r} in the table", source=self.name)
            miss = [TARGETS[j] for j in getattr(self, "needed", []) if not np.isfinite(row[j])]
            if miss:
                raise InvdesignError(f"the label of {cid!r} has no finite {miss[0]}", source=self.name)
            out[i] = row
        return out


class SurrogateOracle:
    """The model's mean predictions (eV) as labels: a free stand-in for rehearsing campaigns."""

    cheap = True

    def __init__(self, model_path: str | None = None, host: HostLattice | None = None) -> None:
        self.model_path = model_path
        self.host = host  # the campaign's host: a larger cell of the model's is served by local geometry
        self.name = f"surrogate:{model_path}" if model_path else "surrogate"
        self._model = None

    def __getstate__(self) -> dict:
        return {"model_path": self.model_path, "host": self.host, "name": self.name, "_model": None}

    def evaluate(self, occ: np.ndarray, ids: Sequence[str]) -> np.ndarray:
        if self._model is None:
            from invdesign.predict.host_serving import packaged_predictor

            # a packaged host other than MoS2 (GaSe, h-BN, ...): its packaged host model
            self._model = packaged_predictor(self.host) if self.model_path is None and self.host is not None else None
            if self.model_path is not None and str(self.model_path).lower().endswith(".npz"):  # a host model file
                from invdesign.predict.host_serving import load_host_predictor

                self._model = load_host_predictor(self.model_path)
            if self._model is None:
                from invdesign.model import load_model
                from invdesign.predict.transfer import on_host

                self._model = on_host(load_model(self.model_path), self.host)
        mean, _ = self._model.predict(np.asarray(occ, dtype=np.uint8))
        return np.asarray(mean, dtype=float)


class CallableOracle:
    """Wrap a function: ``fn(occ, ids) -> (N, 2)`` (``per="batch"``) or ``fn(Structure) -> (fe, gap)``.

    For ``per="structure"`` the function gets each configuration as a pymatgen Structure and
    returns a pair of floats (eV; NaN for a target it does not supply) or a dict by target name.
    """

    cheap = False

    def __init__(self, fn: Callable, host: HostLattice | None = None, per: str = "batch", name: str | None = None) -> None:
        if per not in ("batch", "structure"):
            raise InvdesignError(f"per must be 'batch' or 'structure', not {per!r}")
        self.fn, self.host, self.per = fn, host or HostLattice.default(), per
        self.name = name or f"python:{getattr(fn, '__name__', type(fn).__name__)}"

    def evaluate(self, occ: np.ndarray, ids: Sequence[str]) -> np.ndarray:
        if self.per == "batch":
            out = np.asarray(self.fn(np.asarray(occ), list(ids)), dtype=float)
            if out.shape != (len(ids), len(TARGETS)):
                raise InvdesignError(f"oracle {self.name} returned shape {out.shape}, expected {(len(ids), len(TARGETS))}")
            return out
        from invdesign.lattice.config import config_to_structure

        out = np.full((len(ids), len(TARGETS)), np.nan)
        for i, row in enumerate(np.asarray(occ)):
            v = self.fn(config_to_structure(row, self.host))
            out[i] = [v.get(t, np.nan) for t in TARGETS] if isinstance(v, dict) else list(v)
        return out


# ---------------------------------------------------------------------- ASE / CHGNet
def species_delta(occ: np.ndarray, host: HostLattice) -> dict[str, np.ndarray]:
    """Atoms removed from the host per element: ``{element: (N,) int}`` (negative = added).

    For MoS2 with one W_Mo and one V_S: ``{"Mo": 1, "S": 1, "W": -1, "Se": 0}``.
    """
    occ = np.asarray(occ)
    elems = [s for s in host.species if s != VACANCY]
    out = {}
    for e in elems:
        code = host.species_code[e]
        out[e] = (host.host_code[None, :] == code).sum(axis=1) - (occ == code).sum(axis=1)
    return out


def n_defect_sites(occ: np.ndarray, host: HostLattice) -> np.ndarray:
    return (np.asarray(occ) != host.host_code[None, :]).sum(axis=1)


class AseOracle:
    """Formation energy per defect site (eV) from an ASE calculator, with a short relaxation.

    ``E_f = (E[config] - E[pristine] + sum_e n_e mu_e) / n_defects`` where ``n_e`` atoms of
    element ``e`` were removed from the host (negative when added) and ``mu_e`` are chemical
    potentials (eV/atom). The HOMO-LUMO gap is not supplied (NaN).

    Args:
        calculator: a zero-argument factory returning an ASE calculator (called once per worker).
        mu: chemical potentials ``{element: eV}`` (see :func:`fit_chemical_potentials`).
        host: host lattice.
        fmax: relaxation force threshold (eV/Angstrom); ``steps``: most optimiser steps (0 = single point).
    """

    cheap = False

    def __init__(self, calculator: Callable[[], object], mu: dict[str, float] | None = None,
                 host: HostLattice | None = None, fmax: float = 0.1, steps: int = 50, name: str = "ase") -> None:
        self.calculator = calculator
        self.mu = dict(mu) if mu else None
        self.host = host or HostLattice.default()
        self.fmax, self.steps, self.name = fmax, steps, name
        self._calc = None
        self._e_pristine: float | None = None

    def __getstate__(self) -> dict:
        d = self.__dict__.copy()
        d["_calc"] = None
        return d

    @property
    def protocol(self) -> str:
        """The relaxation protocol, e.g. ``FIRE fmax 0.1 eV/A, <= 50 steps`` or ``single point``."""
        return "single point" if self.steps <= 0 else f"FIRE fmax {self.fmax:g} eV/A, <= {self.steps} steps"

    def relax(self, occ_row: np.ndarray, steps: int | None = None) -> tuple[float, object, float, int, float]:
        """Relax one configuration (at most ``steps``, default :attr:`steps`, FIRE steps to :attr:`fmax`).

        Returns ``(energy eV, relaxed pymatgen Structure, largest displacement A, steps taken,
        single-point energy eV of the ideal host geometry)``.
        """
        from ase.optimize import FIRE
        from pymatgen.io.ase import AseAtomsAdaptor

        from invdesign.lattice.config import config_to_structure

        steps = self.steps if steps is None else steps
        if self._calc is None:
            self._calc = self.calculator()
        atoms = AseAtomsAdaptor.get_atoms(config_to_structure(np.asarray(occ_row), self.host))
        start = atoms.get_positions().copy()
        atoms.calc = self._calc
        e0 = float(atoms.get_potential_energy())
        n = 0
        if steps > 0:
            opt = FIRE(atoms, logfile=None)
            opt.run(fmax=self.fmax, steps=steps)
            n = int(opt.get_number_of_steps())
        disp = float(np.linalg.norm(atoms.get_positions() - start, axis=1).max()) if len(atoms) else 0.0
        return float(atoms.get_potential_energy()), AseAtomsAdaptor.get_structure(atoms), disp, n, e0

    def energy(self, occ_row: np.ndarray) -> float:
        """Total energy (eV) of one configuration after at most ``steps`` FIRE steps."""
        return self.relax(occ_row)[0]

    @property
    def label_columns(self) -> list[str]:
        """Columns of :meth:`label` (besides the relaxed structure)."""
        return ["energy", "raw_energy", "formation_energy_per_site", "max_displacement", "relax_steps"]

    #: structure check only: relax this many steps (at :attr:`check_fmax`) after the energy is taken;
    #: with ``steps == 0`` the energy stays the single point of the ideal geometry.
    check_steps: int = 0
    check_fmax: float = 0.2

    def label(self, occ_row: np.ndarray) -> dict:
        """One configuration's outputs: total ``energy`` and ``raw_energy = E - E_pristine`` (eV, same
        protocol), ``formation_energy_per_site`` (eV; NaN without chemical potentials), the largest
        atomic displacement in the relaxation (Angstrom), the optimiser steps, and ``relaxed``
        (pymatgen Structure). With ``steps == 0`` and :attr:`check_steps` > 0 the energy is the
        single point and the structure is relaxed afterwards for the structural check only."""
        occ_row = np.asarray(occ_row)
        if self.steps == 0 and self.check_steps > 0:
            fmax, self.fmax = self.fmax, self.check_fmax
            try:
                _, relaxed, disp, n, e = self.relax(occ_row, self.check_steps)
            finally:
                self.fmax = fmax
        else:
            e, relaxed, disp, n, _ = self.relax(occ_row)
        raw = e - self.pristine_energy()
        fe = (formation_energy_per_site(np.array([raw]), occ_row[None], self.host, self.mu)[0]
              if self.mu else float("nan"))
        return {"energy": e, "raw_energy": raw, "formation_energy_per_site": float(fe),
                "max_displacement": disp, "relax_steps": n, "relaxed": relaxed}

    def pristine_energy(self) -> float:
        """Energy (eV) of the pristine host under the same protocol (cached)."""
        if self._e_pristine is None:
            self._e_pristine = self.energy(self.host.host_code)
        return self._e_pristine

    def raw_energies(self, occ: np.ndarray) -> np.ndarray:
        """``(N,)`` ``E[config] - E[pristine]`` in eV."""
        e0 = self.pristine_energy()
        return np.array([self.energy(r) - e0 for r in np.asarray(occ)])

    def evaluate(self, occ: np.ndarray, ids: Sequence[str]) -> np.ndarray:
        if self.mu is None:
            raise InvdesignError(f"oracle {self.name} needs chemical potentials (fit them with fit_chemical_potentials)")
        occ = np.asarray(occ)
        out = np.full((len(occ), len(TARGETS)), np.nan)
        out[:, 0] = formation_energy_per_site(self.raw_energies(occ), occ, self.host, self.mu)
        return out


def fit_chemical_potentials(oracle: AseOracle, occ: np.ndarray, fe_per_site: np.ndarray,
                            raw: np.ndarray | None = None) -> dict[str, float]:
    """Least-squares chemical potentials so that the oracle reproduces DFT formation energies.

    Solves ``sum_e n_e mu_e = n_def * E_f(DFT) - (E - E_pristine)`` over the sample (minimum-norm
    solution when some element never changes).

    Args:
        occ: ``(N, n_sites)`` sample configurations; fe_per_site: ``(N,)`` DFT values (eV).
        raw: ``(N,)`` precomputed ``E - E_pristine`` (eV) from :meth:`AseOracle.raw_energies`.
    """
    occ = np.asarray(occ)
    de = oracle.raw_energies(occ) if raw is None else np.asarray(raw, float)
    delta = species_delta(occ, oracle.host)
    elems = list(delta)
    A = np.stack([delta[e] for e in elems], axis=1).astype(float)
    b = n_defect_sites(occ, oracle.host) * np.asarray(fe_per_site, float) - de
    sol, *_ = np.linalg.lstsq(A, b, rcond=None)
    return {e: float(v) for e, v in zip(elems, sol)}


def formation_energy_per_site(raw: np.ndarray, occ: np.ndarray, host: HostLattice, mu: dict[str, float]) -> np.ndarray:
    """``(N,)`` ``(E - E_pristine + sum_e n_e mu_e) / n_defects`` in eV from raw energy differences ``(N,)``."""
    delta = species_delta(occ, host)
    shift = sum(delta[e] * mu.get(e, 0.0) for e in delta)
    return (np.asarray(raw, float) + shift) / np.maximum(n_defect_sites(occ, host), 1)


def _chgnet_calculator():
    from chgnet.model.dynamics import CHGNetCalculator

    return CHGNetCalculator(use_device="cpu")


class ChgnetOracle(AseOracle):
    """CHGNet (ships its weights) through :class:`AseOracle`: formation energy only, gap NaN."""

    def __init__(self, mu: dict[str, float] | None = None, host: HostLattice | None = None,
                 fmax: float = 0.1, steps: int = 50) -> None:
        super().__init__(_chgnet_calculator, mu, host, fmax, steps, name="chgnet")

    @classmethod
    def from_file(cls, path: str | Path, host: HostLattice | None = None) -> ChgnetOracle:
        """Read ``{"mu": {...}, "fmax": .., "steps": ..}`` written by :meth:`save`."""
        try:
            d = json.loads(Path(path).read_text())
            return cls(d["mu"], host, d.get("fmax", 0.1), d.get("steps", 50))
        except (OSError, ValueError, KeyError) as exc:
            raise InvdesignError(f"cannot read CHGNet oracle settings ({exc})", source=str(path)) from None

    def save(self, path: str | Path) -> None:
        from invdesign.io import atomic_write_json

        atomic_write_json(path, {"mu": self.mu, "fmax": self.fmax, "steps": self.steps})


class ChgnetDeltaOracle(ChgnetOracle):
    """CHGNet corrected toward DFT (``chgnet+delta``): raw CHGNet formation energy per site plus a
    learned correction.

    The correction is linear in the exact cluster counts of the configuration
    (:func:`invdesign.predict.features.cluster_counts`: defects per type and defect pairs per
    (type, type, pair orbit)), fitted by ridge regression on the *total* energy difference
    ``n_def * (E_f[DFT] - E_f[CHGNet])`` of training-split structures (``benchmarks/fit_chgnet_delta.py``),
    so it is extensive and applies at any density. Its singlet weights re-reference each defect
    type (they absorb the per-type bias of CHGNet and of the fitted chemical potentials); its pair
    weights correct CHGNet's defect-defect interactions where the training data has them.

    Args:
        mu: chemical potentials (eV/atom) fitted with the same protocol.
        weights: ``(n_features,)`` eV per count. sigma: per-site RMSE of the corrected value (eV,
            cross-validated on the training split at 1-3 defects).
        cov: optional ``(columns (K,), covariance (K, K) eV^2, noise per defect eV^2)``: the Gaussian
            posterior of the weights, giving a per-configuration std that grows with the pair terms
            a configuration leans on (:meth:`std`); without it the std is ``sigma``. The noise is one value,
            or ``(len(BANDS),)`` values, one per density band (:data:`invdesign.predict.defect_env.BANDS`),
            where the correction was fitted on low- and high-density data.
    """

    def __init__(self, mu: dict[str, float], weights: np.ndarray, sigma: float, host: HostLattice | None = None,
                 fmax: float = 0.1, steps: int = 0, source: str = "chgnet+delta",
                 cov: tuple[np.ndarray, np.ndarray, float | np.ndarray] | None = None) -> None:
        super().__init__(mu, host, fmax, steps)
        self.weights = np.asarray(weights, dtype=float)
        self.sigma = float(sigma)
        self.cov = cov
        self.name = source

    @classmethod
    def from_file(cls, path: str | Path | None = None, host: HostLattice | None = None) -> ChgnetDeltaOracle:
        """Read a correction written by ``benchmarks/fit_chgnet_delta.py`` (default: the packaged one)."""
        from invdesign.predict.features import n_cluster_features

        if path is None:
            from importlib.resources import files

            path = Path(str(files("invdesign.resources") / "chgnet_delta.json"))
            if not path.is_file():
                raise InvdesignError("no packaged CHGNet correction (run benchmarks/fit_chgnet_delta.py)", source=str(path))
        host = host or HostLattice.default()
        try:
            d = json.loads(Path(path).read_text())
            w = np.zeros(int(d["n_features"]))
            for k, v in d["weights"].items():
                w[int(k)] = float(v)
            cov = None
            if d.get("covariance"):
                z = np.load(Path(path).parent / d["covariance"])
                noise = float(d["noise_per_defect_eV2"])
                if "noise_per_defect_eV2_by_band" in d:  # fitted on 1-3 and 4+ defects: one noise per density band
                    from invdesign.predict.defect_env import BANDS, band_label

                    by = d["noise_per_defect_eV2_by_band"]
                    noise = np.array([float(by[band_label(b)]) for b in range(len(BANDS))])
                cov = (z["columns"].astype(np.int64), z["cov"].astype(float), noise)
            o = cls(d["mu"], w, d["sigma"], host, d.get("fmax", 0.1), d.get("steps", 0), source=f"chgnet+delta:{path}",
                    cov=cov)
        except (OSError, ValueError, KeyError, IndexError) as exc:
            raise InvdesignError(f"cannot read the CHGNet correction ({exc})", source=str(path)) from None
        from invdesign.lattice.hosts import host_spec_of

        spec = host_spec_of(host)
        if spec is not None and spec.name != "MoS2" and spec.name not in str(d.get("host", "MoS2")):
            raise InvdesignError(f"this CHGNet correction was fitted on {d.get('host', 'MoS2')} DFT and does not apply to "
                                 f"{host.name}: use chgnet:MU.json, CHGNet with chemical potentials fitted on its data "
                                 "(invdesign campaign fit-chgnet --data DIR --out MU.json)", source=str(path))
        if len(w) != n_cluster_features(host):
            raise InvdesignError(f"the CHGNet correction has {len(w)} features, the host {host.name} needs "
                                 f"{n_cluster_features(host)}", source=str(path))
        return o

    def correction(self, occ: np.ndarray) -> np.ndarray:
        """``(N,)`` per-site correction (eV) added to the raw CHGNet formation energy per site."""
        from invdesign.predict.features import cluster_counts

        occ = np.atleast_2d(np.asarray(occ))
        return cluster_counts(occ, self.host).astype(float) @ self.weights / np.maximum(n_defect_sites(occ, self.host), 1)

    def std(self, occ: np.ndarray) -> np.ndarray:
        """``(N,)`` per-site std (eV) of the corrected formation energy: ``sqrt(x^T C x + s2 n) / n``
        with ``x`` the cluster counts, ``C`` the weights' posterior covariance, ``s2`` the noise per
        defect (of the configuration's density band where the correction has one per band) and ``n`` the
        number of defects (``sigma`` for every configuration without ``cov``)."""
        occ = np.atleast_2d(np.asarray(occ))
        if self.cov is None:
            return np.full(len(occ), self.sigma)
        from invdesign.predict.features import cluster_counts

        cols, C, s2 = self.cov
        x = cluster_counts(occ, self.host).astype(float)[:, cols]
        n = np.maximum(n_defect_sites(occ, self.host), 1)
        if np.ndim(s2):
            from invdesign.predict.defect_env import band_of

            s2 = np.asarray(s2)[band_of(n)]
        return np.sqrt(np.einsum("ij,jk,ik->i", x, C, x) + s2 * n) / n

    def evaluate(self, occ: np.ndarray, ids: Sequence[str]) -> np.ndarray:
        out = super().evaluate(occ, ids)
        out[:, 0] += self.correction(occ)
        return out

    @property
    def label_columns(self) -> list[str]:
        return ["energy", "raw_energy", "formation_energy_per_site_chgnet", "correction", "formation_energy_per_site",
                "formation_energy_per_site_std", "max_displacement", "relax_steps"]

    def label(self, occ_row: np.ndarray) -> dict:
        d = super().label(occ_row)
        corr = float(self.correction(occ_row)[0])
        d["formation_energy_per_site_chgnet"] = d["formation_energy_per_site"]
        d["correction"] = corr
        d["formation_energy_per_site"] = d["formation_energy_per_site_chgnet"] + corr
        d["formation_energy_per_site_std"] = float(self.std(occ_row)[0])
        return d


# ---------------------------------------------------------------------- GFN1-xTB (tblite)
class XtbOracle:
    """GFN1-xTB single point (``xtb`` or ``xtb:MU.json``): total energy and HOMO-LUMO gap (eV).

    Periodic, gamma point, on the unrelaxed geometry of the configuration on the host lattice, through
    ``tblite`` in a subprocess with OpenBLAS preloaded (:func:`invdesign.campaign.xtb.run`). The formation
    energy per defect site follows the CHGNet oracle's convention, ``(E - E_pristine + sum_e n_e mu_e) /
    n_defects`` with chemical potentials ``mu`` (eV/atom) fitted by least squares to DFT formation energies
    (:func:`fit_chemical_potentials`) in xTB's own energy reference; without ``mu`` it is NaN (``label``
    still gives the energies and the gap). The gap is raw GFN1-xTB: about 0.1 eV from DFT, with offsets
    that depend on the defect types (``xtb+delta`` corrects them).

    Args:
        mu: chemical potentials ``{element: eV}`` in xTB's reference, or None.
        host: host lattice. method: ``GFN1-xTB`` (``GFN2-xTB`` works, but nothing here is fitted on it).
        threads: BLAS/OpenMP threads per calculation. timeout: seconds per calculation (None: no limit).
    """

    cheap = False

    def __init__(self, mu: dict[str, float] | None = None, host: HostLattice | None = None, method: str = "GFN1-xTB",
                 threads: int = 1, timeout: float | None = None, name: str = "xtb") -> None:
        self.mu = dict(mu) if mu else None
        self.host = host or HostLattice.default()
        self.method, self.threads, self.timeout, self.name = method, int(threads), timeout, name
        self._e_pristine: float | None = None

    protocol = "GFN1-xTB single point (tblite; periodic, gamma point, unrelaxed geometry)"
    package, pristine_cache = "tblite", "xtb_pristine.json"  # the pristine energy's cache key and file

    @classmethod
    def from_file(cls, path: str | Path, host: HostLattice | None = None) -> XtbOracle:
        """Read ``{"mu": {...}}`` (optionally ``"method"``), e.g. a file written by :meth:`save`."""
        try:
            d = json.loads(Path(path).read_text())
            return cls(d["mu"], host, d.get("method", "GFN1-xTB"), name=f"xtb:{path}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvdesignError(f"cannot read xTB oracle settings ({exc.__class__.__name__}: {exc})",
                                 source=str(path)) from None

    def save(self, path: str | Path) -> None:
        from invdesign.io import atomic_write_json

        atomic_write_json(path, {"mu": self.mu, "method": self.method})

    def singlepoint(self, occ_row: np.ndarray) -> dict:
        """:func:`invdesign.campaign.xtb.run` on one configuration (eV, CPU-s)."""
        from invdesign.campaign.xtb import run_structure
        from invdesign.lattice.config import config_to_structure

        return run_structure(config_to_structure(np.asarray(occ_row), self.host), self.method, self.threads,
                             self.timeout)

    def pristine_energy(self) -> float:
        """Energy (eV) of the pristine host, same protocol: computed once per host, method and version of the
        package (:attr:`package`) and kept in ``<cache dir>/<pristine_cache>`` (every worker of a pool would
        otherwise spend its CPU time on it: ~20-40 CPU-s with xTB, minutes with GPAW)."""
        if self._e_pristine is None:
            from importlib.metadata import PackageNotFoundError, version

            from invdesign.data.dataset import cache_dir
            from invdesign.io import atomic_write_json

            try:
                tb = version(self.package)
            except PackageNotFoundError:
                tb = "?"
            key = f"{self.method}|{self.host.fingerprint}|{self.package} {tb}"
            path = cache_dir() / self.pristine_cache
            try:
                cache = json.loads(path.read_text())
                self._e_pristine = float(cache[key]) if isinstance(cache, dict) and key in cache else None
            except (OSError, ValueError, TypeError):
                cache = {}
            if self._e_pristine is None:
                self._e_pristine = float(self.singlepoint(self.host.host_code)["energy"])
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_json(path, {**(cache if isinstance(cache, dict) else {}), key: self._e_pristine})
                except OSError:
                    pass  # a read-only cache dir: computed again next time, nothing else changes
        return self._e_pristine

    def raw_energies(self, occ: np.ndarray) -> np.ndarray:
        """``(N,)`` ``E[config] - E[pristine]`` in eV (for :func:`fit_chemical_potentials`)."""
        e0 = self.pristine_energy()
        return np.array([self.singlepoint(r)["energy"] - e0 for r in np.asarray(occ)])

    @property
    def label_columns(self) -> list[str]:
        return ["energy", "raw_energy", "formation_energy_per_site", "homo_lumo_gap", "homo", "lumo", "cpu_s", "blas"]

    def label(self, occ_row: np.ndarray) -> dict:
        """One configuration: total ``energy`` and ``raw_energy = E - E_pristine`` (eV),
        ``formation_energy_per_site`` (eV; NaN without ``mu``), ``homo_lumo_gap``, ``homo``, ``lumo`` (eV),
        ``cpu_s`` (CPU seconds of this calculation) and ``blas`` (the BLAS it ran on)."""
        occ_row = np.asarray(occ_row)
        r = self.singlepoint(occ_row)
        raw = float(r["energy"]) - self.pristine_energy()
        fe = (formation_energy_per_site(np.array([raw]), occ_row[None], self.host, self.mu)[0]
              if self.mu else float("nan"))
        return {"energy": float(r["energy"]), "raw_energy": raw, "formation_energy_per_site": float(fe),
                "homo_lumo_gap": float(r["gap"]), "homo": float(r["homo"]), "lumo": float(r["lumo"]),
                "cpu_s": float(r["cpu_s"]), **self._extras(r)}

    def _extras(self, r: dict) -> dict:
        """The code-specific outputs of one :meth:`singlepoint` result ``r`` that :meth:`label` adds."""
        return {"blas": r["blas"]}

    def evaluate(self, occ: np.ndarray, ids: Sequence[str]) -> np.ndarray:
        """``(N, 2)`` formation energy per site (NaN without ``mu``) and gap, eV."""
        rows = [self.label(r) for r in np.asarray(occ)]
        return np.array([[d[t] for t in TARGETS] for d in rows], dtype=float).reshape(len(rows), len(TARGETS))


def xtb_gap_features(occ: np.ndarray, host: HostLattice, gap: np.ndarray, recipe: str) -> np.ndarray:
    """``(N, K)`` features of the ``xtb+delta`` gap correction (eV target ``gap_DFT - gap_xTB``).

    Recipes (columns): ``const`` (1, gap); ``types`` (1, each defect type present, log(1 + count) per type);
    ``types+gap`` (``types`` plus gap and gap x each type present: a per-type slope, since xTB squeezes
    some types' gaps); ``types+gap+n`` (plus log(1 + number of defects)); ``types+gapc`` (``types`` plus gap
    and gap x log(1 + count) per type: slopes that grow with the count). ``gap`` is the raw xTB gap (eV).
    """
    from invdesign.lattice.enumerate import compositions

    comp = compositions(np.atleast_2d(np.asarray(occ)), host).astype(float)
    g = np.asarray(gap, float).reshape(-1, 1)
    one = np.ones_like(g)
    pres = (comp > 0).astype(float)
    if recipe == "const":
        return np.hstack([one, g])
    cols = [one, pres, np.log1p(comp)]
    if recipe in ("types+gap", "types+gap+n"):
        cols += [g, g * pres]
    if recipe == "types+gap+n":
        cols.append(np.log1p(comp.sum(axis=1, keepdims=True)))
    if recipe == "types+gapc":
        cols += [g, g * np.log1p(comp)]
    if recipe not in ("types", "types+gap", "types+gap+n", "types+gapc"):
        raise InvdesignError(f"unknown xtb+delta feature recipe {recipe!r}")
    return np.hstack(cols)


class XtbDeltaOracle(XtbOracle):
    """GFN1-xTB corrected toward DFT (``xtb+delta`` or ``xtb+delta:FILE``), with a per-configuration std.

    Gap: raw xTB gap plus a ridge correction linear in :func:`xtb_gap_features` (defect types present,
    their counts, the raw gap per type), fitted on 2DMD train splits by ``benchmarks/bench_xtb_gap.py``;
    clipped at 0 eV. Its std is the ridge predictive std ``sqrt(s2 (1 + x^T A^-1 x))`` with ``s2``
    calibrated on out-of-fold residuals of the train split so that 95% of them lie within 2 std, one ``s2``
    for 1-3 defects and one for 4 or more where the correction has both (``s2_by_density``).
    Formation energy per site: raw xTB with the fitted chemical potentials (their least squares absorb
    one offset per element, i.e. per defect type), std = the out-of-fold RMSE per site.
    """

    def __init__(self, mu: dict[str, float], gap: dict, fe_sigma: float, host: HostLattice | None = None,
                 name: str = "xtb+delta") -> None:
        super().__init__(mu, host, name=name)
        self.recipe = str(gap["recipe"])
        self.w = np.asarray(gap["weights"], float)
        self.Ainv = np.asarray(gap["Ainv"], float)
        self.s2 = float(gap["s2"])
        # noise scale per density where fitted: {"1-3": s2, "4+": s2} (defects per cell)
        self.s2_by_density = {str(k): float(v) for k, v in gap.get("s2_by_density", {}).items()}
        self.fe_sigma = float(fe_sigma)

    @classmethod
    def from_file(cls, path: str | Path | None = None, host: HostLattice | None = None) -> XtbDeltaOracle:
        """Read a correction written by ``benchmarks/bench_xtb_gap.py --write-resource`` (default: the packaged one)."""
        if path is None:
            from importlib.resources import files

            path = Path(str(files("invdesign.resources") / "xtb_delta.json"))
            if not path.is_file():
                raise InvdesignError("no packaged xTB correction (run benchmarks/bench_xtb_gap.py --write-resource)",
                                     source=str(path))
        host = host or HostLattice.default()
        try:
            d = json.loads(Path(path).read_text())
            o = cls(d["mu"], d["gap"], d["fe_sigma"], host, name=f"xtb+delta:{path}")
            k = xtb_gap_features(host.host_code[None], host, np.zeros(1), o.recipe).shape[1]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvdesignError(f"cannot read the xTB correction ({exc.__class__.__name__}: {exc})",
                                 source=str(path)) from None
        if len(o.w) != k or o.Ainv.shape != (k, k):
            raise InvdesignError(f"the xTB correction has {len(o.w)} weights, its recipe {o.recipe!r} needs {k} "
                                 f"on host {host.name}", source=str(path))
        from invdesign.lattice.hosts import host_spec_of

        spec = host_spec_of(host)
        fitted = str(d.get("host", "MoS2"))
        if spec is not None and spec.name not in fitted:
            raise InvdesignError(f"this xTB correction was fitted on {fitted} DFT and does not apply to {host.name}: "
                                 "use xtb (raw GFN1-xTB) or fit one on its data", source=str(path))
        return o

    def gap_correction(self, occ: np.ndarray, gap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N,)`` corrected gap (eV, >= 0) and ``(N,)`` its std (eV) from raw xTB gaps ``(N,)``."""
        occ = np.atleast_2d(np.asarray(occ))
        X = xtb_gap_features(occ, self.host, gap, self.recipe)
        corr = np.maximum(np.asarray(gap, float) + X @ self.w, 0.0)
        s2 = np.full(len(occ), self.s2)
        if self.s2_by_density:
            dense = n_defect_sites(occ, self.host) >= 4
            s2 = np.where(dense, self.s2_by_density.get("4+", self.s2), self.s2_by_density.get("1-3", self.s2))
        std = np.sqrt(s2 * (1.0 + np.einsum("ij,jk,ik->i", X, self.Ainv, X)))
        return corr, std

    @property
    def label_columns(self) -> list[str]:
        return ["energy", "raw_energy", "formation_energy_per_site", "formation_energy_per_site_std", "homo_lumo_gap",
                "homo_lumo_gap_std", "homo_lumo_gap_xtb", "homo", "lumo", "cpu_s", "blas"]

    def label(self, occ_row: np.ndarray) -> dict:
        """:meth:`XtbOracle.label` with the corrected gap and both stds (eV); the raw gap is ``homo_lumo_gap_xtb``."""
        d = super().label(occ_row)
        g, s = self.gap_correction(np.asarray(occ_row)[None], np.array([d["homo_lumo_gap"]]))
        d["homo_lumo_gap_xtb"] = d["homo_lumo_gap"]
        d["homo_lumo_gap"], d["homo_lumo_gap_std"] = float(g[0]), float(s[0])
        d["formation_energy_per_site_std"] = self.fe_sigma
        return d


# ---------------------------------------------------------------------- PBE (GPAW)
class GpawOracle(XtbOracle):
    """PBE single point through GPAW (``gpaw`` or ``gpaw:MU.json``): total energy and HOMO-LUMO gap (eV).

    The training data's functional, in LCAO (:data:`invdesign.campaign.gpaw.SETTINGS`; gamma point, unrelaxed
    geometry; spin-polarised on the hosts whose 2DMD data is, the gap then the smaller channel's, and
    ``total_mag`` reported). Minutes per 192-atom cell on one core instead of xTB's seconds; no correction toward
    2DMD is fitted (its agreement, with the missing relaxation, is measured in ``benchmarks/bench_gpaw.py``).
    Formation energy per defect site as for xTB: ``(E - E_pristine + sum_e n_e mu_e) / n_defects`` with
    chemical potentials in GPAW's reference (NaN without them). Runs in the calling process (a worker of a
    ``label`` process pool or Dask): GPAW's own C extension, no subprocess.
    """

    protocol = GPAW_PROTOCOL
    package, pristine_cache = "gpaw", "gpaw_pristine.json"

    def __init__(self, mu: dict[str, float] | None = None, host: HostLattice | None = None, name: str = "gpaw") -> None:
        super().__init__(mu, host, method="PBE-LCAO-dzp", name=name)
        from invdesign.lattice.hosts import host_spec_of

        spec = host_spec_of(self.host)
        self.spinpol = bool(spec is not None and spec.spin_polarised)

    @classmethod
    def from_file(cls, path: str | Path, host: HostLattice | None = None) -> GpawOracle:
        """Read ``{"mu": {...}}`` (chemical potentials in GPAW's reference, eV/atom)."""
        try:
            return cls(json.loads(Path(path).read_text())["mu"], host, name=f"gpaw:{path}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvdesignError(f"cannot read GPAW oracle settings ({exc.__class__.__name__}: {exc})",
                                 source=str(path)) from None

    def singlepoint(self, occ_row: np.ndarray) -> dict:
        """:func:`invdesign.campaign.gpaw.run_structure` on one configuration (eV, CPU-s)."""
        from invdesign.campaign.gpaw import run_structure
        from invdesign.lattice.config import config_to_structure

        r = run_structure(config_to_structure(np.asarray(occ_row), self.host), self.spinpol)
        return {**r, "gap": r["homo_lumo_gap"]}

    @property
    def label_columns(self) -> list[str]:
        return ["energy", "raw_energy", "formation_energy_per_site", "homo_lumo_gap", "homo", "lumo", "total_mag",
                "cpu_s"]

    def _extras(self, r: dict) -> dict:
        """:meth:`label` adds ``total_mag`` (Bohr magnetons; 0 on spin-restricted hosts) where xTB adds ``blas``."""
        return {"total_mag": float(r["total_mag"])}


def load_callable(path: str, what: str = "oracle"):
    """``module:function`` -> the function (the module must be importable, also on Dask workers)."""
    import importlib

    mod, _, fn = path.rpartition(":")
    if not mod or not fn:
        raise InvdesignError(f"{what} {path!r} is not of the form module:function")
    try:
        obj = getattr(importlib.import_module(mod), fn)
    except ImportError as exc:
        raise InvdesignError(f"cannot import {mod!r} for {what} {path!r} ({exc})") from None
    except AttributeError:
        raise InvdesignError(f"module {mod!r} has no {fn!r} ({what} {path!r})") from None
    if not callable(obj):
        raise InvdesignError(f"{what} {path!r} is not callable")
    return obj


#: where a target's values can come from (the end of the one-line refusal when an oracle cannot give one)
GIVES = {
    "homo_lumo_gap": "a homo_lumo_gap target needs an oracle that gives a gap: table:F.csv with DFT gaps (a 2DMD "
                     "targets.csv.gz, your own DFT results), python:module:function returning the gap, or surrogate "
                     "(the model's own predictions: a rehearsal, not a measurement), xtb or xtb+delta (GFN1-xTB), gpaw (PBE); "
                     "CHGNet, chgnet+delta and ASE calculators give energies only",
    "formation_energy_per_site": "a formation_energy_per_site target needs an oracle that gives it: table:F.csv, "
                                 "chgnet+delta, chgnet:MU.json, python:module:function or surrogate",
}


def oracle_gives(oracle) -> list[str] | None:
    """The targets an oracle can give (``None``: unknown until it runs, e.g. a Python function)."""
    if isinstance(oracle, TableOracle):
        return list(oracle.present)
    if isinstance(oracle, AseOracle):
        return ["formation_energy_per_site"] if oracle.mu or isinstance(oracle, ChgnetDeltaOracle) else []
    if isinstance(oracle, SurrogateOracle):
        return list(TARGETS)
    if isinstance(oracle, XtbOracle):  # also GpawOracle
        return list(TARGETS) if oracle.mu else ["homo_lumo_gap"]
    return None


def check_gives(oracle, needed: Sequence[str], spec: str | None = None) -> None:
    """Refuse (one line, before any work) an oracle that cannot give one of the ``needed`` targets."""
    gives = oracle_gives(oracle)
    if gives is None:
        return
    for t in needed:
        if t not in gives:
            name = spec or getattr(oracle, "name", type(oracle).__name__)
            raise InvdesignError(f"oracle {name} gives no {t}; {GIVES.get(t, 'choose an oracle that gives it')}")


SPECS = ("table:F.csv, surrogate[:MODEL], chgnet:MU.json, chgnet+delta[:FILE], xtb[:MU.json], xtb+delta[:FILE], "
         "gpaw[:MU.json], "
         "python:module:function "
         "(fn(Structure) -> (E_f, gap) or dict), ase:module:factory (factory() -> ASE calculator; raw energies, label only)")


def _make_oracle(spec: str, host: HostLattice | None, needed: Sequence[str], allow_failures: bool,
                 need_mu: bool) -> Oracle:
    kind, _, arg = spec.partition(":")
    if kind == "table":
        if not arg:
            raise InvdesignError("oracle table:F.csv needs a file")
        return TableOracle(arg, host, needed=needed, allow_failures=allow_failures)
    if kind == "surrogate":
        if arg and not Path(arg).expanduser().is_file():  # refused now, not as an error in every row
            raise InvdesignError("model file not found (oracle surrogate:MODEL)", source=arg)
        return SurrogateOracle(str(Path(arg).expanduser()) if arg else None, host)
    if kind == "chgnet":
        if not arg:
            if need_mu:
                raise InvdesignError("oracle chgnet:MU.json needs fitted chemical potentials "
                                     "(`invdesign campaign fit-chgnet --data DIR --out MU.json`), or use chgnet+delta")
            return ChgnetOracle(host=host)
        return ChgnetOracle.from_file(arg, host)
    if kind == "chgnet+delta":
        return ChgnetDeltaOracle.from_file(arg or None, host)
    if kind in ("xtb", "xtb+delta"):
        from invdesign.campaign.xtb import find_openblas, tblite_available

        if not tblite_available():
            raise InvdesignError(f"oracle {spec} needs the tblite package (pip install tblite, or the peers extra)")
        find_openblas()  # a bad $INVDESIGN_XTB_BLAS is refused now, not in every row
        if kind == "xtb+delta":
            return XtbDeltaOracle.from_file(arg or None, host)
        return XtbOracle.from_file(arg, host) if arg else XtbOracle(host=host)
    if kind == "gpaw":
        from invdesign.campaign.gpaw import gpaw_problem

        h = host or HostLattice.default()
        why = gpaw_problem([sp for sp in h.species if sp != VACANCY])
        if why:
            raise InvdesignError(f"oracle {spec}: {why}")
        return GpawOracle.from_file(arg, host) if arg else GpawOracle(host=host)
    if kind == "python":
        fn = load_callable(arg)
        return CallableOracle(fn, host, per="structure", name=spec)
    if kind == "ase":
        factory = load_callable(arg, "ASE calculator factory")
        if need_mu:
            raise InvdesignError("oracle ase:module:factory gives raw energies only here; use it with invdesign label")
        return AseOracle(factory, None, host, name=spec)
    raise InvdesignError(f"unknown oracle {spec!r} ({SPECS})")


def make_oracle(spec: str, host: HostLattice | None = None, needed: Sequence[str] = (),
                allow_failures: bool = False, need_mu: bool = True) -> Oracle:
    """Oracle from a spec string (see :data:`SPECS`).

    ``needed`` (the campaign's target names) and ``allow_failures`` go to :class:`TableOracle`; an
    oracle that cannot give a ``needed`` target (CHGNet and a gap) is refused before any work.
    ``need_mu=False`` (``invdesign label``) also accepts plain ``chgnet`` (raw energies; no
    chemical potentials, so no formation energy).
    """
    orc = _make_oracle(spec, host, needed, allow_failures, need_mu)
    if not (allow_failures and isinstance(orc, TableOracle)):
        check_gives(orc, needed, spec)
    return orc


def stratified_sample(dataset, n: int, seed: int = 0) -> np.ndarray:
    """``(<=n,)`` indices of a sample that covers every defect type (round-robin over types, then random).

    Used to fit chemical potentials: each element whose count changes must appear in the sample.
    """
    rng = np.random.default_rng(seed)
    comp = dataset.composition
    chosen: list[int] = []
    order = rng.permutation(len(dataset))
    T = comp.shape[1]
    for k in range(n):
        t = k % T
        for i in order:
            if comp[i, t] > 0 and int(i) not in chosen:
                chosen.append(int(i))
                break
    for i in order:
        if len(chosen) >= n:
            break
        if int(i) not in chosen:
            chosen.append(int(i))
    return np.array(chosen[:n], dtype=np.int64)
