"""The seed's Figure 1: a UMAP of embeddings for 1, 2 and 3 defects, symmetry images coloured alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from invdesign.lattice.canonical import apply_op
from invdesign.lattice.enumerate import enumerate_orbits


def umap_figure(model, out: str | Path, n_configs: int = 12, n_images: int = 40, seed: int = 0,
                background: int = 1500, max_defects: int = 3) -> dict:
    """Draw the figure to ``out`` (PNG) and return what was drawn.

    UMAP (umap-learn) is fitted on the embeddings of ``background`` random symmetry classes with
    1..``max_defects`` defects plus the chosen configurations; then ``n_images`` random symmetry
    images of each of ``n_configs`` configurations per defect count are embedded and placed with
    ``transform``. Images of one configuration share a colour and, the encoder being exactly
    invariant, land on one spot. One panel per defect count.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import umap

    host = model.host
    rng = np.random.default_rng(seed)
    tab = enumerate_orbits(host, max_defects)
    k_of = tab.n_defects
    chosen = {k: rng.choice(np.flatnonzero(k_of == k), size=min(n_configs, int((k_of == k).sum())), replace=False)
              for k in range(1, max_defects + 1)}
    bg = rng.choice(len(tab), size=min(background, len(tab)), replace=False)
    fit_idx = np.unique(np.concatenate([bg, *chosen.values()]))
    z_fit = model.embed(tab.occ[fit_idx])
    reducer = umap.UMAP(n_neighbors=15, min_dist=0.3, random_state=seed, n_jobs=1)
    xy_fit = reducer.fit_transform(z_fit)
    fig, axes = plt.subplots(1, max_defects, figsize=(5 * max_defects, 4.6))
    axes = np.atleast_1d(axes)
    cmap = plt.get_cmap("tab20")
    spreads = []
    for p, k in enumerate(range(1, max_defects + 1)):
        ax = axes[p]
        ax.scatter(xy_fit[:, 0], xy_fit[:, 1], s=3, c="0.85", lw=0, label="other classes")
        for c, r in enumerate(chosen[k]):
            imgs = apply_op(np.repeat(tab.occ[r][None], n_images, axis=0), host, rng.integers(0, host.n_ops, size=n_images))
            z = model.embed(imgs)
            spreads.append(float(np.linalg.norm(z - z.mean(0), axis=1).max()))
            xy = reducer.transform(z)
            ax.scatter(xy[:, 0], xy[:, 1], s=40, color=cmap(c % 20), edgecolor="k", lw=0.3, alpha=0.7)
        ax.set_title(f"{k} defect{'s' if k > 1 else ''}: {len(chosen[k])} configurations x {n_images} symmetry images")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2" if p == 0 else "")
    fig.suptitle(f"UMAP of the {model.dim}-D embedding; one colour = the symmetry images of one configuration "
                 f"(largest spread in z: {max(spreads):.1e})", fontsize=10)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", ms=3, mfc="0.85", mec="none",
                      label=f"{len(fit_idx):,} random symmetry classes with 1-{max_defects} defects (UMAP is fitted on these)"),
               Line2D([], [], ls="", marker="o", ms=7, mfc=cmap(0), mec="k", mew=0.3,
                      label=f"{n_images} symmetry images of one configuration: one spot (the embedding is invariant)"),
               Line2D([], [], ls="", marker="o", ms=7, mfc=cmap(1), mec="k", mew=0.3,
                      label="another configuration: its own colour and spot")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    import io

    from invdesign.outputs import write_bytes_atomic

    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    write_bytes_atomic(out, buf.getvalue())
    return {"configs": {k: len(v) for k, v in chosen.items()}, "images": n_images, "max_spread": max(spreads)}
