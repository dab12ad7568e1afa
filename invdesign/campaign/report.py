"""Campaign reports: plots, the observation table and the hits' structures.

``write_report(campaign, out)`` fills ``out/`` atomically with

- ``observations.csv``: every observation in evaluation order (``seq, id, canonical_key,
  <targets> (eV), hit, score, source, step``) joined with the GP prediction made when it was
  suggested (``<target>_mean``, ``<target>_std``, ``acquisition``);
- ``best_so_far.png``: best score (window: minus the distance to the window in window widths;
  objective: the value) against evaluations;
- ``hits.png``: cumulative hits against evaluations;
- ``structures/<id>.cif``: one CIF per hit (the best 10 observations when there is no hit);
- ``status.json``: :meth:`Campaign.status`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from invdesign.data.dataset import TARGETS


def write_report(campaign, out: str | Path, overwrite: bool = False) -> Path:
    """Write the report folder ``out`` (a previous report replaced only with ``overwrite``). Returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from invdesign.io import atomic_dir, atomic_write_json, write_csv, write_structure

    out = Path(out)
    obs = campaign.observations()
    sug = campaign.suggestions()
    pred_cols = ["canonical_key", "acquisition"] + [f"{t}_{s}" for t in TARGETS for s in ("mean", "std")]
    table = obs.drop(columns=["created"]).merge(sug[pred_cols], on="canonical_key", how="left")
    occ = campaign.observation_occ()
    status = campaign.status()
    with atomic_dir(out, "campaign report", overwrite) as tmp:
        write_csv(tmp / "observations.csv", table)
        atomic_write_json(tmp / "status.json", status)
        n = np.arange(1, len(obs) + 1)
        score = obs["score"].to_numpy(float)
        best = np.fmax.accumulate(np.where(np.isfinite(score), score, -np.inf)) if len(score) else score
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(n, best, drawstyle="steps-post")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best score" + (" (eV)" if campaign.target.objective else " (-distance to window, widths)"))
        ax.set_title(campaign.target.describe(), fontsize=8)
        fig.tight_layout()
        fig.savefig(tmp / "best_so_far.png", dpi=120)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(n, np.cumsum(obs["hit"].to_numpy(bool)), drawstyle="steps-post")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("hits (distinct configurations)")
        ax.set_title(campaign.target.describe(), fontsize=8)
        fig.tight_layout()
        fig.savefig(tmp / "hits.png", dpi=120)
        plt.close(fig)
        sel = np.flatnonzero(obs["hit"].to_numpy(bool))
        if not len(sel):
            sel = np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")[:10]
        (tmp / "structures").mkdir()
        for i in sel:
            name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(obs["id"].iat[i]))
            write_structure(occ[i], campaign.host, tmp / "structures" / f"{name}.cif")
    return out
