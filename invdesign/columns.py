"""The unit of every column ``invdesign design`` and ``invdesign predict`` write, for machines.

``docs/outputs.md`` (*Outputs and columns*) explains each column; this table gives the units it lists
(``tests/test_docs.py`` holds the two to each other), and ``summary.json`` of a design carries the units of
its own ``candidates.csv`` (:func:`column_units`). Energies are in eV, except ``e_above_arrangement_min``
(meV per cell).
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
    "defects": "text", "mu": "text",
    "e_above_arrangement_min": "meV per cell", "arrangement_population": "fraction (0-1)",
    "arrangement_population_std": "fraction", "arrangement_method": "text", "unlikely_to_form": "bool",
    "check_formation_energy_per_site": "eV per defect site", "check_formation_energy_per_site_std": "eV",
    "check_in_window": "bool", "check_max_displacement": "Angstrom", "check_same_configuration": "bool",
    "check_relaxed_key": "-", "check_status": "text", "check_error": "text", "check_seconds": "s",
    "check_homo_lumo_gap": "eV", "check_homo_lumo_gap_std": "eV", "check_gap_in_window": "bool",
    "check_p_in_window": "probability (0-1)",
}
_PATTERNS = [(re.compile(r"dn_[A-Z][a-z]?"), "atoms")]  # one column per element of the host and its substituents


def unit(column: str) -> str | None:
    """The unit of ``column`` (``"-"``: an identifier or rank; ``"text"``, ``"bool"``); None if unknown."""
    if column in UNITS:
        return UNITS[column]
    return next((u for p, u in _PATTERNS if p.fullmatch(column)), None)


def column_units(columns) -> dict[str, str]:
    """``{column: unit}`` for ``columns`` in their order (``"see docs/outputs.md"`` for one not in the table)."""
    return {str(c): unit(str(c)) or "see docs/outputs.md" for c in columns}
