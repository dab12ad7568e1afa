"""Synthesis-planning columns for a table of configurations (``predict`` and ``design`` outputs).

Columns added:

- ``dn_<El>`` (int): atoms added minus removed per element; ``defects``: Kroeger-Vink list
  (``"V_S^x+W_Mo^x"``).
- design on a spin-polarised host: ``total_mag``, ``total_mag_std`` (Bohr magnetons per cell, the host model's).
- design only: ``formation_energy_per_site_ref`` (eV, under the model's ``mu_ref``; the
  ``formation_energy_per_site`` column stands on the chosen ``--mu``), ``e_above_arrangement_min``
  (meV per cell), ``arrangement_population`` (+ ``_std``, 0 where exact), ``arrangement_method``,
  ``unlikely_to_form`` (``e_above_arrangement_min > 3 k_B T``: growth at T would rather produce a
  lower arrangement of the same defects).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from invdesign.lattice.stoichiometry import dn_columns, kv_strings
from invdesign.synthesis.arrangements import K_B, UNLIKELY_KT, arrangement_stats
from invdesign.synthesis.chempot import ChemicalPotentials, n_defect_sites, shift_per_cell


def bookkeeping(table: pd.DataFrame, occ: np.ndarray, host) -> pd.DataFrame:
    """``table`` with ``dn_<El>`` and ``defects`` columns added (rows match ``occ`` ``(N, n_sites)``)."""
    out = table.copy()
    for k, v in dn_columns(occ, host).items():
        out[k] = v
    out["defects"] = kv_strings(occ, host)
    return out


def annotate_design(table: pd.DataFrame, occ: np.ndarray, model, mu: ChemicalPotentials, temperature: float = 1000.0,
                    samples: int = 4000, seed: int = 0) -> pd.DataFrame:
    """Design candidates with bookkeeping, the reference formation energy and arrangement statistics.

    ``model`` is the model whose predictions are in ``table`` (a ReferencedModel under ``mu`` or the
    plain model); arrangement energies only depend on differences within a composition.
    """
    host = model.host
    out = bookkeeping(table, occ, host)
    # spin-polarised hosts: the cell's moment beside the gap, as predict gives it (a moment window put it there already)
    if hasattr(model, "magnetisation_columns") and "total_mag" not in out:
        for k, v in model.magnetisation_columns(occ).items():
            out[k] = v
    fe = out["formation_energy_per_site"].to_numpy(float)
    out["formation_energy_per_site_ref"] = fe - shift_per_cell(occ, host, mu) / n_defect_sites(occ, host)
    st = arrangement_stats(model, occ, temperature, samples=samples, seed=seed)
    out["e_above_arrangement_min"] = st.e_above_min_meV
    out["arrangement_population"] = st.population
    out["arrangement_population_std"] = st.population_std
    out["arrangement_method"] = st.method
    out["unlikely_to_form"] = st.e_above_min_meV > UNLIKELY_KT * K_B * temperature * 1e3
    return out


def plan_design(res, model, mu: ChemicalPotentials | None = None, temperature: float = 1000.0, export=(),
                out=None, samples: int = 4000, seed: int = 0, overwrite: bool = False):
    """Add the synthesis-planning columns and summary to a :class:`~invdesign.generate.design.DesignResult`.

    Args:
        res: the design result (its predictions made by ``model``).
        model: the model ``res`` was designed with (``with_mu(model, mu)`` when ``mu`` is not the reference).
        mu: chemical potentials of the formation energies (None: the reference).
        temperature: K, for the arrangement populations.
        export: kinds among ``vasp``, ``qe``, ``json``: per-candidate files under ``export/<id>/``.
        out: output folder (written atomically with the rest of the design outputs), or None.

    Returns:
        ``res`` with the columns of :func:`annotate_design` and ``summary["chemical_potentials"]``,
        ``summary["arrangements"]`` (and ``summary["export"]``).
    """
    import time

    from invdesign.synthesis.chempot import reference_summary

    mu = mu or ChemicalPotentials.reference(model.host)
    t = time.perf_counter()
    res.candidates = annotate_design(res.candidates, res.occ, model, mu, temperature, samples, seed)
    res.summary["chemical_potentials"] = reference_summary(mu, model.host)
    res.summary["arrangements"] = {
        "temperature_K": temperature,
        "energies": "model predictions of the formation energy per cell (eV, DFT-trained); mu-independent within a composition",
        "population": "Boltzmann over the symmetry classes of the candidate's composition, orbit sizes as degeneracies; "
                      "exact by enumeration (arrangement_method exact:R) or Monte Carlo over uniformly drawn labelled "
                      "arrangements (mc:M; arrangement_population_std is its standard error, e_above_arrangement_min a lower bound)",
        "unlikely_to_form": f"e_above_arrangement_min > {UNLIKELY_KT:g} k_B T = {UNLIKELY_KT * K_B * temperature * 1e3:.0f} meV",
        "unlikely_count": int(res.candidates["unlikely_to_form"].sum()),
    }
    res.summary.setdefault("timings_s", {})["synthesis_s"] = round(time.perf_counter() - t, 4)
    kinds = list(export or [])
    if kinds:
        res.summary["export"] = {"kinds": kinds, "folder": "export/<id>/", "settings": "see invdesign.synthesis.export"}
    if out is not None:
        write_design(res, model, mu, temperature, kinds, out, overwrite)
    return res


def write_design(res, model, mu: ChemicalPotentials | None, temperature: float, export, out, overwrite: bool = False,
                 extra=None) -> None:
    """Write a planned design to ``out`` (atomically, under the output policy): the design files, the
    per-candidate exports of ``export`` and whatever ``extra(tmp)`` writes into the staging folder."""
    mu = mu or ChemicalPotentials.reference(model.host)
    kinds = list(export or [])

    def more(tmp) -> None:
        if kinds:
            _export_all(res, model, mu, temperature, kinds, tmp)
        if extra is not None:
            extra(tmp)

    res.write(out, overwrite, extra=more)  # write_s (exports included) is timed and saved inside


def _export_all(res, model, mu: ChemicalPotentials, temperature: float, kinds: list[str], tmp) -> None:
    from invdesign.lattice.config import config_to_structure
    from invdesign.progress import track
    from invdesign.synthesis.export import candidate_record, export_candidate

    host = model.host
    model_info = dict(res.summary.get("model", {}))
    mu_info = mu.as_dict()
    rows = res.candidates.to_dict("records")
    for i, row in track(list(enumerate(rows)), "exporting VASP/QE/JSON inputs"):
        rec = candidate_record(row, res.occ[i], host, model_info, mu_info, temperature)
        export_candidate(tmp / "export" / str(row["id"]), kinds, config_to_structure(res.occ[i], host), rec)
