"""The symmetry-invariant encoder: defect point cloud -> ``d``-dimensional embedding (default 12).

For one configuration and one of the ``P`` point operations ``g`` (12 for MoS2) the network forms

    u_g = sum_i a(node_i^g) + sum_{i != j} b(e_ij^g) + sum_{i, j, l distinct} c(e_ij^g, e_il^g)

from node features (type one-hot, height) and oriented pair features ``e`` (types, distance RBF,
periodic Fourier features of the displacement, heights; see :mod:`invdesign.embed.geometry`),
then ``z = W mean_g phi(u_g)``. Sums over defects make it permutation invariant, relative
displacements make it translation invariant, and the mean over the ``P`` cosets makes it
invariant under the point group: the encoder is exactly invariant under all host operations by
construction. The three-body term ``c`` is needed: pair (difference) sets cannot tell a
configuration from its inversion image, which MoS2 (no inversion centre) does not identify.

Two kinds of three-body term ``c`` (config key ``three_body``):

- ``"mlp"`` (model files without the key): ``c`` is an MLP of the concatenated ``[e_ij, e_il]``,
  summed over all ``k (k-1) (k-2)`` ordered triples: cost cubic in the defect count.
- ``"product"`` (factorised, ACE-like; what new training uses): ``c(e_ij, e_il) = L(f(e_ij) * g(e_il))``
  with ``f, g`` MLPs of one oriented pair to ``R`` channels (``rank``), ``*`` elementwise and ``L``
  linear ``R -> W`` without bias. Its sum over distinct ``(i, j, l)`` is exactly

      L( sum_i F_i * G_i - sum_{i != j} f(e_ij) * g(e_ij) ),   F_i = sum_{j != i} f(e_ij),  G_i = sum_{l != i} g(e_il),

  so it costs ``O(k^2)`` (one pass over ordered pairs) and is still a genuine three-body term on
  oriented pairs (it tells a configuration from its inversion image).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from invdesign.embed.geometry import (
    defect_cloud,
    n_pair_features,
    pair_features,
    point_op_representatives,
    single_heights,
    triple_index,
)
from invdesign.lattice.host import HostLattice

THREE_BODY_KINDS = ("mlp", "product")


def _mlp(n_in: int, width: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, n_out))


class InvariantEncoder(nn.Module):
    """Exactly invariant encoder of defect point clouds.

    Args:
        n_types: number of defect types ``T``.
        n_pair: pair feature length ``F``.
        dim: embedding dimension ``d``.
        width: hidden width.
    """

    def __init__(self, n_types: int, n_pair: int, dim: int = 12, width: int = 64, three_body: str = "mlp", rank: int = 16) -> None:
        super().__init__()
        if three_body not in THREE_BODY_KINDS:
            raise ValueError(f"three_body must be one of {THREE_BODY_KINDS}; got {three_body!r}")
        self.n_types, self.n_pair, self.dim, self.width = n_types, n_pair, dim, width
        self.three_body, self.rank = three_body, rank
        self.node = _mlp(n_types + 1, width, width)
        self.pair = _mlp(n_pair, width, width)
        if three_body == "mlp":
            self.triple = _mlp(2 * n_pair, width, width)
        else:
            self.tri_f = _mlp(n_pair, width, rank)
            self.tri_g = _mlp(n_pair, width, rank)
            self.tri_l = nn.Linear(rank, width, bias=False)
        self.post = _mlp(width, width, width)
        self.out = nn.Linear(width, dim)

    def config(self) -> dict:
        cfg = {"n_types": self.n_types, "n_pair": self.n_pair, "dim": self.dim, "width": self.width}
        if self.three_body != "mlp":  # files of the original kind keep their exact config
            cfg.update(three_body=self.three_body, rank=self.rank)
        return cfg

    def forward_group(self, nodes: torch.Tensor, pairs: torch.Tensor, trip: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Embed ``M`` configurations with the same defect count ``k``.

        Args:
            nodes: ``(M, P, k, T + 1)`` node features.
            pairs: ``(M, P, k (k-1), F)`` oriented pair features.
            trip: two ``(k (k-1) (k-2),)`` long tensors indexing the pairs ``(i, j)`` and ``(i, l)``.

        Returns:
            ``(M, d)`` embeddings.
        """
        u = self.node(nodes).sum(dim=2)  # (M, P, W)
        if pairs.shape[2]:
            u = u + self.pair(pairs).sum(dim=2)
        if self.three_body == "product":
            if pairs.shape[2]:
                M, P, npair, _ = pairs.shape
                k = nodes.shape[2]
                f, g = self.tri_f(pairs), self.tri_g(pairs)  # (M, P, k (k-1), R), pairs ordered centre-major
                F = f.reshape(M, P, k, k - 1, -1).sum(dim=3)
                G = g.reshape(M, P, k, k - 1, -1).sum(dim=3)
                u = u + self.tri_l((F * G).sum(dim=2) - (f * g).sum(dim=2))
        elif len(trip[0]):
            t = torch.cat([pairs[:, :, trip[0]], pairs[:, :, trip[1]]], dim=-1)
            u = u + self.triple(t).sum(dim=2)
        return self.out(self.post(u).mean(dim=1))


class PreparedBatch:
    """Precomputed encoder inputs of a batch of configurations (reusable across epochs).

    ``groups[k] = (rows, nodes, pairs, trip)`` as tensors; see :meth:`InvariantEncoder.forward_group`.
    """

    def __init__(self, occ: np.ndarray, host: HostLattice, dtype: torch.dtype = torch.float32) -> None:
        cloud = defect_cloud(occ, host)
        T = len(host.defect_types)
        P = len(point_op_representatives(host))
        self.n = cloud.n
        self.groups: dict[int, tuple] = {}
        eye = np.eye(T)
        for k, (rows, sites, types) in cloud.groups.items():
            M = len(rows)
            nodes = np.zeros((M, P, k, T + 1))
            if k:
                nodes[..., :T] = eye[types][:, None]
                nodes[..., T] = single_heights(sites, host)
            pairs = pair_features(sites, types, host)
            a, b = triple_index(k)
            self.groups[k] = (
                torch.from_numpy(rows),
                torch.from_numpy(nodes).to(dtype),
                torch.from_numpy(pairs).to(dtype),
                (torch.from_numpy(a), torch.from_numpy(b)),
            )

    def select(self, idx: np.ndarray) -> PreparedBatch:
        """Sub-batch of rows ``idx`` (repeats allowed; positions in the new batch follow ``idx``)."""
        idx = np.asarray(idx, dtype=np.int64)
        if not hasattr(self, "_where"):
            self._where = np.zeros((self.n, 2), dtype=np.int64)
            for k, (rows, *_rest) in self.groups.items():
                self._where[rows.numpy()] = np.stack([np.full(len(rows), k), np.arange(len(rows))], axis=1)
        new = PreparedBatch.__new__(PreparedBatch)
        new.n = len(idx)
        new.groups = {}
        wk, wi = self._where[idx].T
        for k, (_rows, nodes, pairs, trip) in self.groups.items():
            sel = np.flatnonzero(wk == k)
            if len(sel):
                at = torch.from_numpy(wi[sel])
                new.groups[k] = (torch.from_numpy(sel), nodes[at], pairs[at], trip)
        return new


def encode(model: InvariantEncoder, batch: PreparedBatch, chunk: int = 4096) -> torch.Tensor:
    """``(N, d)`` embeddings of a prepared batch (differentiable when grad is enabled)."""
    parts, where = [], []
    for _k, (rows, nodes, pairs, trip) in batch.groups.items():
        for s in range(0, len(rows), chunk):
            parts.append(model.forward_group(nodes[s : s + chunk], pairs[s : s + chunk], trip))
            where.append(rows[s : s + chunk])
    if not parts:
        return torch.zeros((0, model.dim))
    z = torch.cat(parts)
    order = torch.cat(where)
    out = torch.empty_like(z)
    out[order] = z
    return out


def build_encoder(host: HostLattice, dim: int = 12, width: int = 64, seed: int = 0, three_body: str = "product",
                  rank: int = 16) -> InvariantEncoder:
    """A freshly initialised encoder for ``host`` (seeded); new encoders use the ``O(k^2)`` product three-body term."""
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        return InvariantEncoder(len(host.defect_types), n_pair_features(host), dim, width, three_body, rank)


def embed_occ(model: InvariantEncoder, occ: np.ndarray, host: HostLattice, chunk: int = 2048, fast: bool = True) -> np.ndarray:
    """``(N, n_sites)`` uint8 occupancies -> ``(N, d)`` float64 embeddings (batched, no grad).

    ``fast`` (default) evaluates the same function by table lookup (:mod:`invdesign.embed.tables`:
    equal to ~1e-15 relative, batched by defect count in bounded memory); ``fast=False`` runs the
    network directly (``chunk`` configurations at a time).

    Runs in the encoder's dtype; :class:`invdesign.model.Model` keeps its encoder in float64 so
    that symmetry images agree to ~1e-15 (float32 round-off would be ~1e-7).
    """
    occ = np.asarray(occ)
    if occ.ndim == 1:
        occ = occ[None]
    model.eval()
    if fast:
        from invdesign.embed.tables import encoder_tables

        return encoder_tables(model, host).embed(occ)
    out = np.zeros((len(occ), model.dim))
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        for s in range(0, len(occ), chunk):
            b = PreparedBatch(occ[s : s + chunk], host, dtype)
            out[s : s + chunk] = encode(model, b).double().numpy()
    return out
