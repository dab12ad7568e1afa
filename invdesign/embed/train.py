"""Siamese contrastive training of the invariant encoder, with a supervised term.

Loss per step (weights in the config):

- *supervised*: a linear read-out of ``z`` fits the standardised targets of a batch of
  training configurations (so properties vary smoothly, near-linearly, in ``z``);
- *negatives*: configurations of different symmetry classes, drawn from the exhaustive orbit
  table (every class with up to ``max_orbit_defects`` defects; classes currently closer than the
  margin to another are drawn ``1 + hard_boost`` times as often), each with its current nearest
  other class (hard negatives, refreshed every epoch; mostly same composition and nearby
  placements), are pushed at least ``margin`` apart: ``relu(margin - |z_a - z_b|)^2`` over all
  pairs in the batch;
- *positives*: a configuration and a random symmetry image of it (from
  :func:`invdesign.lattice.canonical.apply_op`) are pulled together, ``|z - z'|^2``. The encoder
  is invariant by construction, so this term is ~1e-14 and serves as a running check;
- *scale*: each embedding dimension is kept near zero mean and unit variance over the orbit
  table, so the margin means something and the flow/GP see a standardised space.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from invdesign.embed.encoder import InvariantEncoder, PreparedBatch, build_encoder, encode
from invdesign.lattice.canonical import apply_op
from invdesign.lattice.host import HostLattice

DEFAULTS = {
    "dim": 12,
    "width": 64,
    "three_body": "product",  # the O(k^2) factorised three-body term (see invdesign.embed.encoder)
    "rank": 16,
    "epochs": 6,
    "batch": 256,
    "orbit_batch": 256,
    "hard_boost": 10.0,
    "margin": 0.1,
    "lr": 2e-3,
    "w_sup": 1.0,
    "w_neg": 10.0,
    "w_pos": 1.0,
    "w_scale": 0.1,
}


def nearest_other(z: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Index and distance of each row's nearest other row of ``z (N, d)`` (exact, chunked)."""
    zt = torch.as_tensor(z, dtype=torch.float64)
    idx = np.zeros(len(z), dtype=np.int64)
    dist = np.zeros(len(z))
    for s in range(0, len(z), chunk):
        d = torch.cdist(zt[s : s + chunk], zt)
        d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")
        v, i = d.min(dim=1)
        idx[s : s + chunk] = i.numpy()
        dist[s : s + chunk] = v.numpy()
    return idx, dist


def train_encoder(
    host: HostLattice,
    occ: np.ndarray,
    y: np.ndarray,
    orbits: np.ndarray,
    config: dict | None = None,
    seed: int = 0,
    progress=None,
) -> tuple[InvariantEncoder, dict]:
    """Train the encoder.

    Args:
        host: host lattice.
        occ: ``(M, n_sites)`` training configurations (train split only).
        y: ``(M, 2)`` targets in eV (standardised internally).
        orbits: ``(R, n_sites)`` one representative per symmetry class (negatives; no labels used).
        config: overrides of :data:`DEFAULTS`.
        seed: seed of initialisation and sampling.
        progress: optional callable, called once per epoch.

    Returns:
        the encoder (eval mode) and a history dict (losses per epoch, seconds).
    """
    cfg = {**DEFAULTS, **(config or {})}
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = build_encoder(host, cfg["dim"], cfg["width"], seed, cfg["three_body"], cfg["rank"])
    read = torch.nn.Linear(cfg["dim"], y.shape[1]).double()
    opt = torch.optim.AdamW(list(model.parameters()) + list(read.parameters()), cfg["lr"], weight_decay=1e-5)
    steps_per_epoch = max(1, int(np.ceil(len(occ) / cfg["batch"])))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg["epochs"] * steps_per_epoch)
    ym, ys = y.mean(0), y.std(0) + 1e-12
    yt = torch.as_tensor((y - ym) / ys)
    train_b = PreparedBatch(occ, host)
    orbit_b = PreparedBatch(orbits, host)
    margin = cfg["margin"]
    hist: dict = {"loss": [], "sup": [], "neg": [], "pos": [], "min_orbit_distance": []}
    t0 = time.time()
    hard = None
    for _epoch in range(cfg["epochs"]):
        model.eval()
        with torch.no_grad():
            zo = encode(model, orbit_b).double().numpy()
        hard, dmin = nearest_other(zo)
        hist["min_orbit_distance"].append(float(dmin.min()))
        weight = 1.0 + cfg["hard_boost"] * (dmin < margin)
        weight /= weight.sum()
        model.train()
        order = rng.permutation(len(occ))
        sums = np.zeros(4)
        for s in range(steps_per_epoch):
            i = order[s * cfg["batch"] : (s + 1) * cfg["batch"]]
            z = encode(model, train_b.select(i)).double()
            sup = ((read(z) - yt[i]) ** 2).mean()
            # negatives: random classes plus the current nearest class of each (hard)
            a = rng.choice(len(orbits), size=min(cfg["orbit_batch"] // 2, len(orbits)), replace=False, p=weight)
            half = len(a)
            sel = np.concatenate([a, hard[a]])
            zb = encode(model, orbit_b.select(sel)).double()
            d = torch.cdist(zb, zb) + torch.eye(len(sel), dtype=zb.dtype) * 1e3
            same = torch.as_tensor(sel[:, None] == sel[None, :])
            neg = (torch.relu(margin - d[~same]) ** 2).mean() + (torch.relu(margin - (zb[:half] - zb[len(a) :]).norm(dim=1)) ** 2).mean()
            scale = (zb.mean(0) ** 2).mean() + ((zb.var(0) - 1.0) ** 2).mean()
            # positives: symmetry images of a few training configurations
            p = i[: min(32, len(i))]
            img = apply_op(occ[p], host, rng.integers(0, host.n_ops, size=len(p)))
            zi = encode(model, PreparedBatch(img, host)).double()
            pos = ((zi - z[: len(p)]) ** 2).sum(1).mean()
            loss = cfg["w_sup"] * sup + cfg["w_neg"] * neg + cfg["w_pos"] * pos + cfg["w_scale"] * scale
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            sums += [float(v.detach()) for v in (loss, sup, neg, pos)]
        for name, v in zip(("loss", "sup", "neg", "pos"), sums / steps_per_epoch):
            hist[name].append(float(v))
        if progress is not None:
            progress()
    model.eval()
    hist["seconds"] = time.time() - t0
    hist["config"] = cfg
    return model, hist
