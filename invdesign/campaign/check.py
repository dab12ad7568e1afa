"""Check designed candidates with physics: CHGNet (corrected toward DFT) plus a short relaxation.

For each configuration :func:`check_configurations` evaluates the corrected CHGNet formation
energy per defect site (eV; the energy protocol of the correction, e.g. a single point of the
ideal geometry), relaxes the structure (FIRE, ``check_steps`` at ``check_fmax``), measures the
largest atomic displacement (Angstrom) and maps the relaxed structure back onto the host lattice:
a defect that migrated, or a lattice that reconstructed, is a different material (or none), and the
candidate fails the check. CHGNet gives no HOMO-LUMO gap, so with it only the formation-energy window is
checked.

With ``xtb+delta`` (GFN1-xTB corrected toward DFT) or ``xtb:MU.json`` both targets are checked: the formation
energy per site and the HOMO-LUMO gap of a single point of the unrelaxed configuration, each with the checker's
std; a candidate passes when both lie in their windows. xTB relaxes nothing, so the structural check
(``check_same_configuration``) is not made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from invdesign.errors import InvdesignError
from invdesign.lattice.host import HostLattice

STATUS_ORDER = ("pass", "out_of_window", "changed_configuration", "failed")


def check_oracle(spec: str, host: HostLattice, steps: int = 20, fmax: float = 0.2):
    """The oracle for ``design --check SPEC``: ``chgnet`` (the packaged correction), ``chgnet+delta[:FILE]``,
    or ``chgnet:MU.json`` (raw CHGNet with those chemical potentials, or a correction file)."""
    import json
    from pathlib import Path

    from invdesign.campaign.oracles import ChgnetDeltaOracle, ChgnetOracle

    kind, _, arg = spec.partition(":")
    if kind in ("xtb", "xtb+delta", "gpaw"):
        from invdesign.campaign.oracles import make_oracle

        if kind == "xtb" and not arg:
            raise InvdesignError("--check xtb needs chemical potentials for the formation energy: use xtb+delta "
                                 "(corrected toward DFT, packaged) or xtb:MU.json")
        if kind == "gpaw" and not arg:
            raise InvdesignError("--check gpaw needs chemical potentials for the formation energy (eV/atom in GPAW's "
                                 "reference): gpaw:MU.json, e.g. fitted by benchmarks/bench_gpaw.py")
        return make_oracle(spec, host)
    if kind == "chgnet" and not arg:
        orc = ChgnetDeltaOracle.from_file(None, host)
    elif kind == "chgnet+delta":
        orc = ChgnetDeltaOracle.from_file(arg or None, host)
    elif kind == "chgnet":
        p = Path(arg)
        try:
            has_weights = "weights" in json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise InvdesignError(f"cannot read CHGNet settings ({exc})", source=arg) from None
        orc = ChgnetDeltaOracle.from_file(p, host) if has_weights else ChgnetOracle.from_file(p, host)
    else:
        raise InvdesignError(f"--check {spec!r}: use chgnet, chgnet:MU.json, chgnet+delta[:FILE], xtb+delta[:FILE], "
                             "xtb:MU.json or gpaw:MU.json")
    orc.check_steps, orc.check_fmax = steps, fmax
    return orc


def reference_of(oracle) -> str:
    """Which reference the check's energies stand on (said in outputs)."""
    from invdesign.campaign.oracles import ChgnetDeltaOracle, GpawOracle, XtbDeltaOracle, XtbOracle

    if isinstance(oracle, GpawOracle):
        return f"PBE, uncorrected ({oracle.protocol}; chemical potentials from a file; no std)"
    if isinstance(oracle, XtbDeltaOracle):
        return (f"GFN1-xTB corrected toward 2DMD DFT (xtb+delta; {oracle.protocol}; per-configuration stds of the "
                "gap and the formation energy)")
    if isinstance(oracle, XtbOracle):
        return f"GFN1-xTB, uncorrected ({oracle.protocol}; chemical potentials from a file)"

    if isinstance(oracle, ChgnetDeltaOracle):
        from pathlib import Path

        src = Path(oracle.name.partition(":")[2]).name or "packaged"
        by_band = oracle.cov is not None and np.ndim(oracle.cov[2]) > 0
        return (f"corrected CHGNet (chgnet+delta {src}; {oracle.protocol}; correction toward 2DMD DFT"
                + (" fitted on 1-3 and 4-24 defects; per-configuration std with a noise per density band"
                   if by_band else f"; per-configuration std, {1000 * oracle.sigma:.1f} meV/site CV RMSE at 1-3 defects")
                + ")")
    return f"CHGNet, uncorrected ({oracle.protocol}; chemical potentials from a file)"


def _p_in(lo: float, hi: float, mean: float, std: float) -> float:
    """``P(lo <= y <= hi)`` for ``y ~ N(mean, std^2)`` (a point mass when ``std`` is 0 or NaN)."""
    import math

    if not np.isfinite(mean):
        return float("nan")
    if not np.isfinite(std) or std <= 0:
        return float(lo <= mean <= hi)
    cdf = lambda x: 0.5 * (1.0 + math.erf((x - mean) / (std * math.sqrt(2.0))))  # noqa: E731
    return cdf(hi) - cdf(lo)


def check_configurations(
    occ: np.ndarray, ids: Sequence[str], oracle, fe_window: tuple[float, float], executor: str = "auto",
    tol: float = 0.7, on_row: Callable[[int], None] | None = None,
    gap_window: tuple[float, float] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Check ``occ (K, n_sites)``; returns a table by id and the relaxed pymatgen Structures by id.

    Columns: ``check_formation_energy_per_site`` (eV), ``check_formation_energy_per_site_std`` (eV),
    ``check_in_window`` (the formation energy, and with a gap-giving oracle and ``gap_window`` also the gap,
    in its window), ``check_max_displacement`` (A), ``check_same_configuration`` (the relaxed structure maps,
    within ``tol`` A, onto the same occupancy; True without a relaxation, which then is not checked),
    ``check_relaxed_key`` (its canonical key; empty when it maps onto no configuration), ``check_status`` (one
    of :data:`STATUS_ORDER`), ``check_error``, ``check_seconds``. A gap-giving oracle (``xtb+delta``) adds
    ``check_homo_lumo_gap``, ``check_homo_lumo_gap_std`` (eV), ``check_gap_in_window`` and
    ``check_p_in_window`` (the probability that both targets lie in their windows, independent Gaussians with
    the checker's stds).
    """
    from invdesign.campaign.label import evaluate_many
    from invdesign.lattice.canonical import canonical_keys
    from invdesign.lattice.config import get_mapper

    occ = np.asarray(occ)
    res = evaluate_many(occ, ids, oracle, executor, on_row=on_row)
    mapper = get_mapper(oracle.host)
    lo, hi = fe_window
    glo, ghi = gap_window if gap_window is not None else (-np.inf, np.inf)
    gives_gap = "homo_lumo_gap" in getattr(oracle, "label_columns", [])
    relaxes = not gives_gap  # the xTB oracles are single points of the ideal geometry
    rows, relaxed_by_id = [], {}
    for i, cid in enumerate(map(str, ids)):
        out, sec, err = res[cid]
        fe = float(out.get("formation_energy_per_site", np.nan)) if not err else np.nan
        std = float(out.get("formation_energy_per_site_std", np.nan)) if not err else np.nan
        gap = float(out.get("homo_lumo_gap", np.nan)) if not err else np.nan
        gstd = float(out.get("homo_lumo_gap_std", np.nan)) if not err else np.nan
        same, rkey, note = not relaxes, "", ""
        st = out.get("relaxed")
        if st is not None:
            relaxed_by_id[cid] = st
            try:
                r_occ = mapper.map_atoms([s.specie.symbol for s in st], st.frac_coords, source=cid, tol=tol)
                same = bool(np.array_equal(r_occ, occ[i]))
                rkey = canonical_keys(r_occ[None], oracle.host)[0]
                note = "" if same else f"relaxed into another configuration ({rkey})"
            except InvdesignError as exc:
                note = f"relaxed structure maps onto no configuration ({exc.reason})"
        fe_in = bool(lo <= fe <= hi) if np.isfinite(fe) else False
        gap_in = bool(glo <= gap <= ghi) if np.isfinite(gap) else False
        inside = fe_in and (gap_in or not gives_gap)
        if err or not np.isfinite(fe) or (relaxes and st is None) or (gives_gap and not np.isfinite(gap)):
            status = "failed"
            err = err or ("the oracle returned no energy or no relaxed structure" if relaxes
                          else "the oracle returned no energy or no gap")
        elif not same:
            status, err = "changed_configuration", note
        elif not inside:
            status = "out_of_window"
        else:
            status = "pass"
        row = {"id": cid, "check_formation_energy_per_site": fe, "check_formation_energy_per_site_std": std,
               "check_in_window": inside, "check_max_displacement": float(out.get("max_displacement", np.nan)),
               "check_same_configuration": same, "check_relaxed_key": rkey, "check_status": status,
               "check_error": err, "check_seconds": sec}
        if gives_gap:
            row.update({"check_homo_lumo_gap": gap, "check_homo_lumo_gap_std": gstd, "check_gap_in_window": gap_in,
                        "check_p_in_window": _p_in(lo, hi, fe, std) * _p_in(glo, ghi, gap, gstd)})
        rows.append(row)
    return pd.DataFrame(rows), relaxed_by_id


def apply_check(candidates: pd.DataFrame, occ: np.ndarray, table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Merge the check into the ranked candidates and re-rank the checked top: those that pass first,
    then out of window, then changed configuration, then failed (model order inside each group);
    unchecked candidates follow in model order. ``model_rank`` keeps the model's rank."""
    df = candidates.copy()
    df.insert(1, "model_rank", df["rank"].to_numpy())
    df = df.merge(table, on="id", how="left")
    df["check_status"] = df["check_status"].fillna("unchecked")
    order_key = {s: k for k, s in enumerate((*STATUS_ORDER, "unchecked"))}
    checked = df["check_status"] != "unchecked"
    grp = np.where(checked, df["check_status"].map(order_key), len(STATUS_ORDER) + 1)
    order = np.lexsort((df["model_rank"].to_numpy(), grp))
    df = df.iloc[order].reset_index(drop=True)
    df["rank"] = np.arange(1, len(df) + 1)
    return df, np.asarray(occ)[order]
