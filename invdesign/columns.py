"""The unit of every column ``invdesign design`` and ``invdesign predict`` write, for machines, and how CSVs round it.

``docs/outputs.md`` (*Outputs and columns*) explains each column; this table gives the units it lists
(``tests/test_docs.py`` holds the two to each other), and ``summary.json`` of a design carries the units of
its own ``candidates.csv`` (:func:`column_units`). Energies are in eV, except ``e_above_arrangement_min``
(meV per cell).

CSVs round each float column to a precision that suits its unit (:data:`ROUNDING`, :func:`rounded`; eV to
4 decimals, meV to 1, probabilities to 3); ``--full-precision`` (``full_precision=True`` in the API) writes
repr floats instead. Embedding coordinates (``z0..``) are never rounded: ``decode`` reads them back.
"""

from __future__ import annotations

import re

GUIDE = "docs/outputs.md (Outputs and columns): every column explained"

UNITS: dict[str, str] = {
    "rank": "-", "model_rank": "-", "id": "-", "canonical_key": "-", "source": "-",
    "formation_energy_per_site": "eV per defect site", "formation_energy_per_site_std": "eV",
    "formation_energy_per_site_std_effective": "eV", "formation_energy_per_site_ref": "eV per defect site",
    "homo_lumo_gap": "eV", "homo_lumo_gap_std": "eV", "homo_lumo_gap_std_effective": "eV",
    "homo_lumo_gap_validated": "bool", "formation_energy_reference": "text",
    "p_in_window": "probability (0-1)", "window_distance": "eV",
    "n_defects": "count", "composition": "text", "within_limits": "bool",
    "reembed_distance": "embedding units", "novel": "bool", "nearest_known_distance": "embedding units",
    "nearest_known_key": "-", "unseen_clusters": "count",
    "extrapolation": "bool", "extrapolation_reason": "text", "note": "text", "decode_method": "text",
    "total_mag": "Bohr magnetons per cell", "total_mag_std": "Bohr magnetons per cell",
    "total_mag_std_effective": "Bohr magnetons per cell",
    "defects": "text", "mu": "text",
    "e_above_arrangement_min": "meV per cell", "arrangement_population": "fraction (0-1)",
    "arrangement_population_std": "fraction", "arrangement_method": "text", "unlikely_to_form": "bool",
    "check_formation_energy_per_site": "eV per defect site", "check_formation_energy_per_site_std": "eV",
    "check_in_window": "bool", "check_max_displacement": "Angstrom", "check_same_configuration": "bool",
    "check_relaxed_key": "-", "check_status": "text", "check_error": "text", "check_seconds": "s",
    "check_homo_lumo_gap": "eV", "check_homo_lumo_gap_std": "eV", "check_gap_in_window": "bool",
    "check_p_in_window": "probability (0-1)",
}
# the other commands' float columns (embed, decode, campaign suggest and report; docs/outputs.md, their sections)
OTHER_UNITS: dict[str, str] = {
    "embedding_distance": "embedding units",
    "acquisition": "probability (0-1) or log EI", "score": "window widths or eV",
    "formation_energy_per_site_mean": "eV", "homo_lumo_gap_mean": "eV",
}
_PATTERNS = [(re.compile(r"dn_[A-Z][a-z]?"), "atoms"),  # one column per element of the host and its substituents
             (re.compile(r"z[0-9]+"), "embedding units")]  # embed's coordinates

# How a CSV rounds a float column of each unit: ("decimals", n) or ("significant", n). The precision is about a
# tenth of the smallest uncertainty the tool gives in that unit (a few meV on energies); a unit not here
# (counts, atoms, ids) is written as it is.
ROUNDING: dict[str, tuple[str, int]] = {
    "eV": ("decimals", 4), "eV per defect site": ("decimals", 4),  # 0.1 meV
    "meV per cell": ("decimals", 1),
    "probability (0-1)": ("decimals", 3),
    "fraction (0-1)": ("significant", 3), "fraction": ("significant", 3),  # populations span decades (1e-9 .. 1)
    "embedding units": ("decimals", 8),  # 5 digits on the smallest distance between classes (6e-4); noise -> 0
    "Angstrom": ("decimals", 4), "s": ("decimals", 2), "Bohr magnetons per cell": ("decimals", 3),
    "probability (0-1) or log EI": ("significant", 4), "window widths or eV": ("decimals", 4),
}
# never rounded, whatever their unit: coordinates a command reads back (decode reads embed's z0..; rounded to 6
# significant digits, 10 of 20 training configurations no longer decode exactly onto their orbit)
EXACT = [re.compile(r"z[0-9]+")]


def unit(column: str) -> str | None:
    """The unit of ``column`` (``"-"``: an identifier or rank; ``"text"``, ``"bool"``); None if unknown."""
    if column in UNITS:
        return UNITS[column]
    if column in OTHER_UNITS:
        return OTHER_UNITS[column]
    return next((u for p, u in _PATTERNS if p.fullmatch(column)), None)


def rounding(column: str) -> tuple[str, int] | None:
    """How CSVs round ``column`` (``("decimals", n)`` or ``("significant", n)``); None: written as it is."""
    if any(p.fullmatch(column) for p in EXACT):
        return None
    return ROUNDING.get(unit(column) or "")


def rounding_text(column: str) -> str:
    """:func:`rounding` in words: ``"4 decimals"``, ``"3 significant digits"``, ``"exact"`` for a float never
    rounded, ``""`` for a column that is not a measured float (ids, text, counts)."""
    rule = rounding(column)
    if rule is None:
        return "exact" if any(p.fullmatch(column) for p in EXACT) else ""
    kind, n = rule
    return f"{n} decimal{'s' if n != 1 else ''}" if kind == "decimals" else f"{n} significant digits"


def round_values(values, rule: tuple[str, int] | None):
    """``values`` (a float array or number) rounded by ``rule`` (None: unchanged); NaN and inf stay, -0.0 becomes 0.0."""
    import numpy as np

    if rule is None:
        return values
    kind, n = rule
    a = np.asarray(values, dtype=float)
    if kind == "decimals":
        r = np.round(a, n)
    else:
        r = np.array([float(f"{v:.{n}g}") for v in a.ravel()], dtype=float).reshape(a.shape)
    r = r + 0.0  # -0.0 -> 0.0
    return float(r) if r.ndim == 0 else r


def rounded(df):
    """A copy of the DataFrame ``df`` whose float columns are rounded as CSVs write them (:func:`rounding`)."""
    import pandas as pd

    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            rule = rounding(str(c))
            if rule is not None:
                out[c] = round_values(out[c].to_numpy(), rule)
    return out


def display(column: str, value, full: bool = False) -> str:
    """``value`` of ``column`` as a console table shows it: the CSV's rounded value (fixed decimals, or
    significant digits), or its repr with ``full``."""
    import math

    v = float(value)
    if full or not math.isfinite(v):
        return repr(v)
    rule = rounding(column)
    if rule is None:
        return repr(v)
    r = round_values(v, rule)
    return f"{r:.{rule[1]}f}" if rule[0] == "decimals" else f"{r:.{rule[1]}g}"


def column_units(columns) -> dict[str, str]:
    """``{column: unit}`` for ``columns`` in their order (``"see docs/outputs.md"`` for one not in the table)."""
    return {str(c): unit(str(c)) or "see docs/outputs.md" for c in columns}


# The guide's rows (docs/outputs.md, the predict and design sections, backticks dropped), for ``invdesign columns``:
# (column names sharing the row, meaning); the unit is unit(first name). tests/test_columns_cmd.py holds them to the guide.

PREDICT: list[tuple[tuple[str, ...], str]] = [
    (('id',), "the structure's file stem"),
    (('formation_energy_per_site',), "predicted formation energy at the chemical potentials of --mu (default: the model's 2DMD reference); NaN for a structure without defects (see note)"),
    (('homo_lumo_gap',), "predicted HOMO-LUMO gap; never negative, never above the host model's learned host gap (MoS2 1-3 defects: inside (0, 2.0) eV)"),
    (('formation_energy_per_site_std',), "one-sigma uncertainty of the formation energy (above 3 defects the high-density correction's std is included in quadrature)"),
    (('homo_lumo_gap_std',), 'one-sigma uncertainty of the gap (at least 0.58 eV when homo_lumo_gap_validated is False)'),
    (('extrapolation',), "True when the structure lies outside the training domain: a composition or defect count never trained on, a defect pair (type pair x pair orbit) with no training example, far from every training configuration in the embedding, or a larger cell than the model's"),
    (('extrapolation_reason',), 'why extrapolation is True (empty otherwise), e.g. composition 1W_Mo not in training'),
    (('note',), 'why a value is NaN (e.g. a pristine structure has no formation energy per defect site); empty otherwise'),
    (('homo_lumo_gap_validated',), 'False beyond the trained density or composition: the gap is bounded but checked by nothing'),
    (('formation_energy_reference',), 'what the formation energy is: DFT-trained model (2DMD, PBE) at 1-3 defects on MoS2; DFT-trained host model (2DMD ..., PBE) at 4+ defects on MoS2 and on every other host (with INVDESIGN_HD_MODEL=0, MoS2 above 3 defects: the earlier DFT-trained model plus the correction toward corrected CHGNet)'),
    (('total_mag', 'total_mag_std'), "spin-polarised hosts only (h-BN, GaSe, InSe, black P): the cell's magnetic moment (2DMD total_mag) and its one-sigma uncertainty; where the defect environments predict it no better than a constant out of fold (black P), it is served near the training median with a std to match"),
    (('dn_Mo', 'dn_S', 'dn_W', 'dn_Se'), 'atoms added minus removed relative to the host (dn_S = -1 for a V_S; dn_W = +1, dn_Mo = -1 for a W_Mo); one column per element of the host and its substituents'),
    (('defects',), 'the defects in Kroeger-Vink notation, neutral, sorted: Se_S^x+V_S^x+W_Mo^x'),
    (('mu',), 'the chemical potentials the formation energy refers to: reference, a limit of the host (S-rich, Mo-rich on MoS2; Ga-rich, Se-rich on GaSe; ...) or the file given to --mu'),
]
DESIGN: list[tuple[tuple[str, ...], str]] = [
    (('rank',), '1 = best; ranked by p_in_window with a small diversity term (--diversity); with --check, the checked top is re-ranked (see below)'),
    (('id',), "candNNNN (generated) or the pool structure's id (--pool); the stem of its CIF and POSCAR"),
    (('canonical_key',), 'exact symmetry key of the configuration'),
    (('source',), 'how it was found: exhaustive, flow, anneal, flow-anneal or pool'),
    (('formation_energy_per_site',), 'predicted, at the chemical potentials of --mu (the window applies to this value)'),
    (('homo_lumo_gap',), 'predicted gap'),
    (('formation_energy_per_site_std',), "the model's one-sigma uncertainty"),
    (('homo_lumo_gap_std',), "the model's one-sigma uncertainty"),
    (('p_in_window',), 'probability that the true values lie in the window: product over the targets of P(lo <= y <= hi) with y ~ Normal(prediction, *_std_effective) (for total_mag restricted to y >= 0: the moment is never negative); >= 0.5 counts as "in the window" in the console and summary.json'),
    (('window_distance',), 'Euclidean distance of the predicted values to the window box (0 inside; a total_mag window adds its distance in Bohr magnetons per cell)'),
    (('n_defects',), 'defects in the configuration'),
    (('composition',), 'defect counts by type, e.g. W_Mo:1,Se_S:1,V_S:1'),
    (('within_limits',), 'the configuration satisfies --min-defects, --max-defects and --types (only a --pool member can fail)'),
    (('reembed_distance',), "distance between a flow sample's embedding and the embedding of the configuration it was decoded to; 0 for candidates scored directly (exhaustive screen, pool, anneal)"),
    (('novel',), "the configuration (up to symmetry) is not in the model's training set"),
    (('nearest_known_distance',), 'distance to the nearest training configuration (0 for a known one)'),
    (('nearest_known_key',), 'canonical key of that training configuration'),
    (('unseen_clusters',), 'defect pairs (type pair x pair orbit) with no training example; their formation-energy terms come from a distance-decaying prior with its std'),
    (('extrapolation',), 'outside the training domain (as in predict)'),
    (('extrapolation_reason',), 'why (empty when not flagged)'),
    (('formation_energy_per_site_std_effective',), "the std used for p_in_window: the model's std, inflated in quadrature by the training spread of the target (sqrt(std^2 + sd_train^2)) when extrapolation is True"),
    (('homo_lumo_gap_std_effective',), 'the same for the gap'),
    (('total_mag_std_effective',), 'the same for the moment (only with a total_mag window)'),
    (('homo_lumo_gap_validated',), 'False beyond the trained density or composition (as in predict)'),
    (('formation_energy_reference',), 'what the formation energy is (as in predict)'),
    (('decode_method',), 'how the configuration was obtained: enumerated (exhaustive screen), exact / incremental / search (decoded from a flow sample), anneal, flow-anneal; absent with --pool'),
    (('dn_Mo', 'dn_S', 'dn_W', 'dn_Se'), 'atoms added minus removed (as in predict); on another host its own elements (dn_Ga, dn_Se, dn_In, dn_S on GaSe)'),
    (('defects',), 'Kroeger-Vink defect list (as in predict)'),
    (('total_mag', 'total_mag_std'), 'spin-polarised hosts only (as in predict); a window target there (--target total_mag=LO:HI), these columns then follow the gap\'s'),
    (('formation_energy_per_site_ref',), "the formation energy at the model's 2DMD reference chemical potentials (equal to formation_energy_per_site without --mu)"),
    (('e_above_arrangement_min',), 'how far this arrangement lies above the lowest-energy arrangement of the same defects in the cell (model energies)'),
    (('arrangement_population',), 'Boltzmann population of this arrangement among all arrangements of its composition at --temperature (orbit sizes as degeneracies)'),
    (('arrangement_population_std',), 'Monte Carlo standard error of the population (0 where exact)'),
    (('arrangement_method',), 'exact:R (enumerated over R symmetry classes) or mc:M (Monte Carlo with M samples; e_above_arrangement_min is then a lower bound). Draws come in batches of 500 up to 4,000 and stop early once every candidate of the composition lies more than 3 k_B T above a drawn arrangement: the unlikely_to_form flag is then settled (more draws only lower the minimum)'),
    (('unlikely_to_form',), 'e_above_arrangement_min above 3 k_B T at --temperature (marked with a red x in candidates.png)'),
    (('model_rank',), 'the rank the model gave before the check'),
    (('check_formation_energy_per_site',), 'formation energy from the check (corrected CHGNet: single point + correction toward DFT)'),
    (('check_formation_energy_per_site_std',), 'its one-sigma uncertainty'),
    (('check_in_window',), 'the checked formation energy lies in the formation-energy window'),
    (('check_max_displacement',), 'largest atomic displacement in the relaxation'),
    (('check_same_configuration',), 'the relaxed structure still maps (within 0.7 Angstrom) onto the same configuration'),
    (('check_relaxed_key',), 'canonical key of the relaxed structure (empty when it maps onto none)'),
    (('check_status',), 'pass, out_of_window, changed_configuration, failed or unchecked; checked candidates are ranked in this order, each group in model order, then the unchecked ones'),
    (('check_error',), 'why a check failed or what the configuration relaxed into'),
    (('check_seconds',), 'wall time of the check'),
    (('check_homo_lumo_gap',), 'HOMO-LUMO gap from the check (xTB corrected toward DFT for xtb+delta)'),
    (('check_homo_lumo_gap_std',), 'its one-sigma uncertainty'),
    (('check_gap_in_window',), 'the checked gap lies in the gap window'),
    (('check_p_in_window',), "probability that formation energy and gap both lie in the window, from the check's values and stds"),
]


def guide(which: str = "all") -> list[dict[str, str]]:
    """The column guide of ``which`` (``design``, ``predict`` or ``all``): ``[{"command", "column", "unit", "rounding",
    "meaning"}]`` in the guide's order (``rounding``: how CSVs round the column, :func:`rounding_text`); a row naming
    several columns (``dn_Mo, dn_S, ...``) is one entry."""
    if which not in ("design", "predict", "all"):
        raise ValueError(f"which must be design, predict or all, not {which!r}")
    rows = []
    for command, table in (("predict", PREDICT), ("design", DESIGN)):
        if which in (command, "all"):
            rows += [{"command": command, "column": ", ".join(names), "unit": unit(names[0]) or "",
                      "rounding": rounding_text(names[0]), "meaning": meaning} for names, meaning in table]
    return rows
