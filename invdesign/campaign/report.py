"""Campaign reports: plots, the observation table and the hits' structures.

``write_report(campaign, out)`` fills ``out/`` atomically with

- ``observations.csv``: every observation in evaluation order (``seq, id, canonical_key,
  <targets> (eV), hit, score, source, step``) joined with the GP prediction made when it was
  suggested (``<target>_mean``, ``<target>_std``, ``acquisition``);
- ``best_so_far.png``: best score (window: minus the distance outside the window in units of the
  window's width, 0 inside; objective: the value) against evaluations, beside random search's expected best so far
  (exact, :func:`random_best_so_far`, when a table oracle labels every candidate; else the legend says it is not
  available);
- ``hits.png``: cumulative hits against evaluations (integer ticks), beside random search's expected hits (exact
  when a table oracle labels every candidate, else estimated from the model prior); legends below the axes;
- ``observations.png``: the observed values against the target window (hits starred);
- ``structures/<id>.cif``: one CIF per hit (the best 10 observations when there is no hit);
- ``status.json``: :meth:`Campaign.status`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from invdesign.data.dataset import TARGETS


def write_report(campaign, out: str | Path, overwrite: bool = False) -> Path:
    """Write the report folder ``out`` (a previous report replaced only with ``overwrite``). Returns its path."""
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
        score = obs["score"].to_numpy(float)
        _plots(campaign, obs, tmp)
        sel = np.flatnonzero(obs["hit"].to_numpy(bool))
        if not len(sel):
            sel = np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")[:10]
        (tmp / "structures").mkdir()
        for i in sel:
            name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(obs["id"].iat[i]))
            write_structure(occ[i], campaign.host, tmp / "structures" / f"{name}.cif")
    return out


def _pool_labels(campaign) -> np.ndarray | None:
    """``(N, 2)`` values (eV, TARGETS order; NaN where the table has none) of every candidate, from a table oracle
    that labels every candidate; None otherwise (the report then knows the pool's labels only as a model prior)."""
    spec = str(campaign.config.get("oracle") or "")
    if not spec.startswith("table:"):
        return None
    try:
        from invdesign.campaign.oracles import TableOracle

        cands, _ = campaign.candidates
        orc = TableOracle(spec.partition(":")[2], campaign.host, allow_failures=True)
        rows = [orc.by_id.get(str(i), orc.by_key.get(str(k))) for i, k in zip(cands["id"], cands["canonical_key"])]
    except Exception:  # noqa: BLE001 - a table moved or changed since: no labels
        return None
    if not rows or any(r is None for r in rows):
        return None
    return np.array(rows, dtype=float).reshape(len(rows), -1)


def _random_reference(campaign, labels: np.ndarray | None = None) -> tuple[float, int, str] | None:
    """``(K, N, how)``: candidates in the window (exact, from a table oracle that labels every candidate; else
    the model prior's expected count) among the campaign's ``N`` candidates, for the random-search reference.
    None for an objective without a threshold (no hits to compare) or when neither is available."""
    target = campaign.target
    if target.objective and target.threshold is None:
        return None
    cands, _ = campaign.candidates
    N = len(cands)
    labels = _pool_labels(campaign) if labels is None else labels
    if labels is not None and len(labels) == N:
        K = int(target.hits(labels).sum())
        return float(K), N, f"exact: {K} of {N} candidates in the window by the table"
    pm, ps = campaign.store.array("prior_mean"), campaign.store.array("prior_std")
    if pm is None or ps is None or target.objective or len(pm) != N:
        return None
    from invdesign.campaign.acquisition import log_p_window

    K = float(np.exp(log_p_window(pm, ps, target)).sum())
    return K, N, f"estimated: the model's prior expects {K:.1f} of {N} candidates in the window"


def random_best_so_far(scores: np.ndarray, n: int) -> np.ndarray:
    """Expected best score after ``k = 1..n`` evaluations of random search: the pool's candidates in a uniformly
    random order, without replacement (exact: the best of a random ``k``-subset of ``N`` is the ``j``-th largest score
    with probability ``C(N-j, k-1) / C(N, k)``). A score that is NaN (the pool's label failed) counts as the lowest
    finite score. ``(min(n, N),)``."""
    from scipy.special import gammaln

    s = np.asarray(scores, dtype=float)
    fin = np.isfinite(s)
    if not fin.any():
        return np.full(min(n, len(s)), np.nan)
    s = np.sort(np.where(fin, s, s[fin].min()))[::-1]  # descending: s[j-1] is the j-th largest
    N = len(s)
    j = np.arange(1, N + 1)

    def lcomb(a, b):
        return gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)

    out = np.empty(min(n, N))
    for k in range(1, len(out) + 1):
        ok = N - j >= k - 1
        w = np.exp(lcomb(N - j[ok], k - 1) - lcomb(N, k))
        out[k - 1] = float(w @ s[ok]) / float(w.sum())  # w sums to 1 up to rounding
    return out


def _plots(campaign, obs, tmp: Path) -> None:
    """``best_so_far.png``, ``hits.png`` (with random search's expectation) and ``observations.png``."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator

    target = campaign.target
    n = np.arange(1, len(obs) + 1)
    score = obs["score"].to_numpy(float)
    hit = obs["hit"].to_numpy(bool)
    title = target.describe()
    import textwrap

    wrapped = textwrap.fill(title, 80)  # a two-target window's title is wider than the axes at fontsize 8

    labels = _pool_labels(campaign)
    fig = Figure(figsize=(6, 4.6), dpi=120, layout="constrained")
    ax = fig.subplots()
    best = np.fmax.accumulate(np.where(np.isfinite(score), score, -np.inf)) if len(score) else score
    ax.plot(n, best, drawstyle="steps-post", label="campaign: best so far")
    if labels is not None and len(n):
        rnd = random_best_so_far(target.score(labels), len(n))
        ax.plot(np.arange(1, len(rnd) + 1), rnd, color="0.4", ls="--",
                label=f"random search, expected (exact: the {len(labels)} candidates' labels from the table)")
    elif len(n):  # an empty entry, so the legend says why there is no reference line
        ax.plot([], [], ls="none", label="random search: not available (the report knows the pool's labels only "
                                          "from a table oracle)")
    if target.objective:
        name, sense = target.objective
        ax.set_ylabel(f"best {name} so far (eV{', negated' if sense == 'min' else ''})")
        if target.threshold is not None:
            thr = -target.threshold if sense == "min" else target.threshold
            ax.axhline(thr, color="crimson", ls="--", lw=1, label="hit threshold")
    else:
        ax.axhline(0.0, color="crimson", ls="--", lw=1, label="inside the window (0)")
        ax.set_ylabel("best so far: - distance outside the window\n(in units of the window's width; 0 = inside)")
    ax.set_xlabel("evaluations")
    ax.set_title(wrapped, fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # below the axes: never over the curves
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    fig.savefig(tmp / "best_so_far.png")

    fig = Figure(figsize=(6, 4.6), dpi=120, layout="constrained")
    ax = fig.subplots()
    ax.plot(n, np.cumsum(hit), drawstyle="steps-post", label="campaign")
    ref = _random_reference(campaign, labels)
    if ref is not None and len(n):
        K, N, how = ref
        xs = np.arange(0, max(len(n), 1) + 1)
        ax.plot(xs, xs * K / max(N, 1), color="0.4", ls="--", label=f"random search, expected\n({how})")
    elif len(n):  # an empty entry, so the legend says why there is no reference line
        ax.plot([], [], ls="none", label="random search: not available (no labelled pool or model prior)")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("hits (distinct configurations in the window)" if not target.objective else "hits")
    ax.set_title(wrapped, fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # hits are counts
    top = max(1.0, ax.get_ylim()[1])  # at least 0..1, so that even no hits get integer ticks
    ax.set_ylim(-0.05 * top, top)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    fig.savefig(tmp / "hits.png")

    names = target.names
    y = obs[names].to_numpy(float) if len(obs) else np.zeros((0, len(names)))
    if len(names) == 2 and not target.objective:
        fig = Figure(figsize=(10.5, 4.4), dpi=120, layout="constrained")
        ax_all, ax = fig.subplots(1, 2)
        (x0, x1), (y0, y1) = (target.window[names[0]], target.window[names[1]])
        fin = np.isfinite
        xs = np.concatenate([y[:, 0][fin(y[:, 0])], [v for v in (x0, x1) if fin(v)]])
        ys = np.concatenate([y[:, 1][fin(y[:, 1])], [v for v in (y0, y1) if fin(v)]])

        def lims(vals, lo, hi, around):
            """all: the data and the window's edges; around: the window and one width beyond each finite edge."""
            if around and fin(lo) and fin(hi):
                return lo - (hi - lo), hi + (hi - lo)
            if not len(vals):
                return (0.0, 1.0)
            lo_, hi_ = (min(vals.min(), lo) if around and fin(lo) else vals.min()), (max(vals.max(), hi) if around and fin(hi) else vals.max())
            pad = 0.08 * (hi_ - lo_ + 1e-3)
            return lo_ - pad, hi_ + pad

        for a, around in ((ax_all, False), (ax, True)):
            a.set_xlim(*lims(xs, x0, x1, around))
            a.set_ylim(*lims(ys, y0, y1, around))
            sc = a.scatter(y[~hit, 0], y[~hit, 1], c=n[~hit], cmap="viridis", vmin=1, vmax=max(len(n), 2), s=22,
                           edgecolors="k", linewidths=0.3, label="observations (colour: evaluation number)", zorder=2)
            a.scatter(y[hit, 0], y[hit, 1], c=n[hit], cmap="viridis", vmin=1, vmax=max(len(n), 2), s=70, marker="*",
                      edgecolors="k", linewidths=0.4, label="hits", zorder=3)
            lx, ly = a.get_xlim(), a.get_ylim()
            a.add_patch(Rectangle((x0 if fin(x0) else lx[0], y0 if fin(y0) else ly[0]),
                                  (x1 if fin(x1) else lx[1]) - (x0 if fin(x0) else lx[0]),
                                  (y1 if fin(y1) else ly[1]) - (y0 if fin(y0) else ly[0]),
                                  fill=False, ec="crimson", ls="--", lw=1.5, label="target window", zorder=4))
            a.set_xlabel(f"{names[0]} (eV)")
            a.set_ylabel(f"{names[1]} (eV)")
        ax_all.set_title("all observations", fontsize=9)
        ax.set_title("around the window (one window width beyond each edge)", fontsize=9)
        fig.colorbar(sc, ax=ax, label="evaluation number")
        ax_all.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
        fig.suptitle(f"observed values: {title}", fontsize=9)
        fig.savefig(tmp / "observations.png")
        return
    fig = Figure(figsize=(6, 4.4), dpi=120, layout="constrained")
    ax = fig.subplots()
    v = y[:, 0] if len(names) else np.zeros(len(n))
    ax.scatter(n[~hit], v[~hit], s=18, c="tab:blue", edgecolors="k", linewidths=0.3, label="observations")
    ax.scatter(n[hit], v[hit], s=60, marker="*", c="gold", edgecolors="k", linewidths=0.4, label="hits")
    if target.objective:
        if target.threshold is not None:
            ax.axhline(target.threshold, color="crimson", ls="--", lw=1, label="hit threshold")
    else:
        lo, hi = target.window[names[0]]
        ax.axhspan(lo if np.isfinite(lo) else np.nanmin(v) - 1, hi if np.isfinite(hi) else np.nanmax(v) + 1,
                   color="crimson", alpha=0.12, label="target window")
        fv = v[np.isfinite(v)]
        if len(fv):
            span = np.ptp(np.concatenate([fv, [b for b in (lo, hi) if np.isfinite(b)]])) + 1e-3
            ax.set_ylim(min(fv.min(), lo if np.isfinite(lo) else fv.min()) - 0.08 * span,
                        max(fv.max(), hi if np.isfinite(hi) else fv.max()) + 0.08 * span)
    ax.set_xlabel("evaluation number")
    ax.set_ylabel(f"{names[0]} (eV)" if names else "value (eV)")
    ax.set_title(f"observed values: {title}", fontsize=8)
    ax.legend(fontsize=7, loc="best" if len(n) < 400 else "upper right")
    fig.savefig(tmp / "observations.png")
