"""Atom bookkeeping of a configuration: what must be added to or removed from the host.

For a configuration ``occ`` (``(n_sites,)`` species codes) on a :class:`HostLattice`:

- ``dn[El]`` = (atoms of ``El`` in the configuration) - (atoms of ``El`` in the pristine host):
  one sulfur vacancy has ``dn_S = -1``; W on a Mo site has ``dn_W = +1, dn_Mo = -1``.
  These are the exchanges with the chemical-potential reservoirs that enter a formation energy
  ``E_f = E_def - E_host - sum_El dn_El mu_El``.
- the defect list in Kroeger-Vink notation: ``V_S^x``, ``W_Mo^x``, ``Se_S^x`` (all neutral: the
  2DMD data and the model are for neutral supercells, so the effective charge is ``x``).

Pure arrays in, arrays out: no model, no Structure.
"""

from __future__ import annotations

import numpy as np

from invdesign.lattice.host import VACANCY, HostLattice


def elements(host: HostLattice) -> list[str]:
    """Chemical elements the host's configurations can hold (host elements, then substituents), no ``Vac``."""
    return [s for s in host.species if s != VACANCY]


def dn_matrix(occ: np.ndarray, host: HostLattice) -> np.ndarray:
    """``(N, E)`` int: atoms added minus removed per element of :func:`elements`, per configuration.

    Args:
        occ: ``(N, n_sites)`` or ``(n_sites,)`` species codes.
    """
    occ = np.atleast_2d(np.asarray(occ))
    els = elements(host)
    codes = np.array([host.species_code[e] for e in els])
    have = (occ[:, :, None] == codes[None, None, :]).sum(axis=1)
    pristine = (host.host_code[:, None] == codes[None, :]).sum(axis=0)
    return (have - pristine[None, :]).astype(np.int64)


def dn_columns(occ: np.ndarray, host: HostLattice) -> dict[str, np.ndarray]:
    """``{"dn_Mo": (N,), "dn_S": (N,), ...}`` int columns for output tables."""
    d = dn_matrix(occ, host)
    return {f"dn_{e}": d[:, j] for j, e in enumerate(elements(host))}


def kroger_vink(sublattice: str, species: str, charge: str = "x") -> str:
    """Kroeger-Vink label: ``V_S^x`` for a vacancy, ``W_Mo^x`` for W on a Mo site (neutral: ``x``)."""
    return f"{'V' if species == VACANCY else species}_{sublattice}^{charge}"


def defect_list(occ: np.ndarray, host: HostLattice) -> list[dict]:
    """Defects of one configuration ``(n_sites,)``: dicts with ``kv`` (``"V_S^x"``), ``type``
    (``"V_S"``), ``site`` (host site index), ``species`` (``"Vac"``/``"W"``/...), ``host_species`` and
    ``cart`` (Cartesian position of the host site, Angstrom), in site order.
    """
    occ = np.asarray(occ)
    sites = np.flatnonzero(occ != host.host_code)
    out = []
    for s in sites:
        sub = host.sublattices[int(host.sublattice[s])]
        sp = host.species[int(occ[s])]
        out.append({
            "kv": kroger_vink(sub, sp),
            "type": f"{'V' if sp == VACANCY else sp}_{sub}",
            "site": int(s),
            "species": sp,
            "host_species": sub,
            "cart": [float(x) for x in host.cart_coords[s]],
        })
    return out


def kv_strings(occ: np.ndarray, host: HostLattice) -> list[str]:
    """``(N,)`` compact defect lists per configuration, e.g. ``"V_S^x+W_Mo^x+W_Mo^x"`` (sorted)."""
    occ = np.atleast_2d(np.asarray(occ))
    return ["+".join(sorted(d["kv"] for d in defect_list(o, host))) for o in occ]
