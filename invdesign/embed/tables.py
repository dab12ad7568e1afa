"""Fast inference of the invariant encoder by table lookup (same function, cost that grows with the work).

Every input of the encoder's node and pair networks is a function of the *image* sites only:
a node feature is (type, height of the site), a pair feature is (types, minimum-image distance,
Fourier features of the fractional displacement, the two heights). All of these are unchanged by
a lattice translation, so they depend on a pair of sites only through its *pair class*
``(basis atom of i, fractional displacement j - i mod 1)``: ``B * n_cells`` classes (576 for
8x8 MoS2, 2,304 for 16x16) instead of ``n_sites^2``. Hence, for a fitted
:class:`~invdesign.embed.encoder.InvariantEncoder`:

- the node network is a table ``(n_basis, T, W)`` and the pair network a table ``(C, T, T, W)``:
  their sums over defects and pairs become gathers (no matrix product per pair);
- the triple network's first layer is linear in ``[e_ij, e_il]``, so it splits into two tables
  ``(C, T, T, W)``; only its second layer runs per triple; its last layer is linear and is applied
  after the sum over triples.

For the product three-body term (``three_body="product"``) all of it is one table
``X (C T T, W + 2R)`` with rows ``[Q | f | g]``, ``Q = b - L(f * g)``: a configuration gathers each
ordered pair's row once and sums it per centre ``i`` (``torch.nn.functional.embedding_bag``, no
``(k^2, W + 2R)`` intermediate), then ``u = sum_i a_i + sum_i Q_i + L(sum_i F_i * G_i)``: cost
``P k (k-1) (W + 2R)`` per configuration, exact at every defect count (no cutoff).

The result equals :meth:`InvariantEncoder.forward_group` up to float64 round-off (~1e-14; checked
in the tests). For the MLP triple term its cost is ``k (k-1) (k-2) P W^2`` per configuration (the triple hidden layer),
against ``k (k-1) (k-2) P (2F + 2W) W`` for the direct evaluation, and batches are sized so that
no intermediate exceeds :data:`MAX_ELEMS` elements (bounded memory at any defect count).

With ``cutoff`` (Angstrom; MLP triple term only), configurations with more than ``exact_below`` defects keep only the
triples whose two legs ``ij`` and ``il`` are both at most ``cutoff`` long (the three-body term
then counts local clusters; its cost grows as ``k`` times the neighbours within the cutoff).
Configurations with at most ``exact_below`` defects are always exact, so every prediction and
table of the 1-3-defect space is untouched. ``benchmarks/bench_scaling.py`` measures the error the
cutoff makes (relative to the distance between classes) where the full sum is still affordable.
"""

from __future__ import annotations

import numpy as np
import torch

from invdesign.embed.geometry import defect_cloud, pair_features, point_op_representatives, site_heights
from invdesign.lattice.host import HostLattice

MAX_ELEMS = 8_000_000  # largest (rows x W) intermediate per chunk: 64 MB in float64
TRIPLE_CUTOFF = 6.5  # Angstrom; legs of the three-body term kept above EXACT_BELOW defects
EXACT_BELOW = 8  # configurations with at most this many defects use every triple


def basis_index(host: HostLattice) -> np.ndarray:
    """``(n_sites,)`` index of each site's atom in the unit cell (its sublattice-with-position)."""
    cached = host._cache.get("basis_index")
    if cached is None:
        f_uc = np.mod(host.frac_coords @ host.matrix.astype(float), 1.0)
        basis = np.mod(host.unit_cell.frac_coords, 1.0)
        d = f_uc[:, None, :] - basis[None, :, :]
        d -= np.round(d)
        cached = np.argmin(np.linalg.norm(d @ host.unit_cell.lattice.matrix, axis=-1), axis=1).astype(np.int64)
        host._cache["basis_index"] = cached
    return cached


def pair_classes(host: HostLattice) -> tuple[np.ndarray, np.ndarray]:
    """Translation classes of ordered site pairs.

    Returns:
        ``cls (n_sites, n_sites)`` int32 class of ``(i, j)`` (``-1`` on the diagonal) and ``rep (C, 2)``
        one representative pair per class. Classes: ``(basis(i), (f_j - f_i) mod 1)``.
    """
    cached = host._cache.get("pair_classes")
    if cached is None:
        n = host.n_sites
        f = host.frac_coords
        b = basis_index(host)
        cls = np.full((n, n), -1, dtype=np.int32)
        seen: dict[tuple, int] = {}
        reps = []
        for i in range(n):
            d = np.round(np.mod(f - f[i], 1.0) * 1e4).astype(np.int64) % 10_000
            keys = ((b[i] * 10_000 + d[:, 0]) * 10_000 + d[:, 1]) * 10_000 + d[:, 2]
            for j in range(n):
                if j == i:
                    continue
                c = seen.get(int(keys[j]))
                if c is None:
                    c = seen[int(keys[j])] = len(reps)
                    reps.append((i, j))
                cls[i, j] = c
        cached = (cls, np.array(reps, dtype=np.int64))
        host._cache["pair_classes"] = cached
    return cached


class EncoderTables:
    """Lookup tables of one encoder on one host (build once; see the module docstring).

    Attributes:
        node: ``(B, T, W)`` node-network outputs by (basis atom, type).
        pair: ``(C, T, T, W)`` pair-network outputs by (pair class, type i, type j).
        ta, tb: ``(C, T, T, W)`` the triple network's first layer applied to ``e_ij`` / ``e_il``.
    """

    def __init__(self, model, host: HostLattice) -> None:
        self.model = model
        self.host = host
        dtype = next(model.parameters()).dtype
        T = len(host.defect_types)
        self.T = T
        self.ops = point_op_representatives(host)
        self.img = host.perms[self.ops].astype(np.int64)  # (P, n_sites)
        self.cls, rep = pair_classes(host)
        self.basis = basis_index(host)
        C = len(rep)
        geo = pair_features(rep, np.zeros_like(rep), host)[:, 0, 0]  # identity op (row 0), pair (0 -> 1): (C, F)
        feats = np.repeat(geo[:, None, None, :], T, axis=1).repeat(T, axis=2)  # (C, T, T, F)
        feats[..., : 2 * T] = 0.0
        eye = np.eye(T)
        feats[..., :T] += eye[None, :, None, :]
        feats[..., T : 2 * T] += eye[None, None, :, :]
        feats = feats.reshape(C * T * T, -1)
        # the identity must be among the representatives for feats to be the plain pair features
        assert self.ops[0] == 0
        h = site_heights(host) / 3.0
        nb = int(self.basis.max()) + 1
        first = np.array([int(np.flatnonzero(self.basis == b)[0]) for b in range(nb)])
        nodes = np.zeros((nb, T, T + 1))
        nodes[:, :, :T] = np.eye(T)[None]
        nodes[:, :, T] = h[first][:, None]
        self.kind = getattr(model, "three_body", "mlp")
        with torch.no_grad():
            e = torch.as_tensor(feats, dtype=dtype)
            self.node = model.node(torch.as_tensor(nodes, dtype=dtype))  # (B, T, W)
            self.pair = model.pair(e).reshape(C, T, T, -1)
            if self.kind == "product":
                f, g = model.tri_f(e), model.tri_g(e)
                self.R = f.shape[-1]
                self.tf = f.reshape(C, T, T, -1)
                self.tg = g.reshape(C, T, T, -1)
                self.L = model.tri_l.weight.detach()  # (W, R)
            else:
                lin1 = model.triple[0]
                F = e.shape[1]
                self.ta = (e @ lin1.weight[:, :F].T).reshape(C, T, T, -1)
                self.tb = (e @ lin1.weight[:, F:].T).reshape(C, T, T, -1)
                self.b1 = lin1.bias.detach()
                self.lin2 = model.triple[2]
                self.lin3 = model.triple[4]
        self.W = self.node.shape[-1]
        self.dist = host.min_image_distance
        if self.kind == "product":
            self._stack()

    def _stack(self) -> None:
        """The product kind's one gather table ``X (C T T + 1, W + 2R)``: rows ``[Q | f | g]`` by
        ``(pair class, t_i, t_j)`` flattened, ``Q = b - L(f * g)`` (a zero row of ``pair, tf, tg``: a pair with no terms)."""
        C, T = self.pair.shape[:2]
        q = self.pair - (self.tf * self.tg) @ self.L.T
        self.X = torch.cat([q, self.tf, self.tg], dim=-1).reshape(C * T * T, -1).contiguous()
        self._pidx: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _u_product(self, sites: np.ndarray, types: np.ndarray) -> torch.Tensor:
        """``(M, P, W)`` of the product kind: ``sum_i a + sum_{i != j} Q_ij + L(sum_i F_i * G_i)`` (one gather per pair)."""
        M, k = sites.shape
        T, W, R = self.T, self.W, self.R
        img = self.img[:, sites].transpose(1, 0, 2)  # (M, P, k)
        tt = torch.as_tensor(types)
        u = self.node[torch.as_tensor(self.basis[img]), tt[:, None, :]].sum(dim=2)  # (M, P, W)
        if k < 2:
            return u
        idx = self._pidx.get(k)
        if idx is None:
            idx = self._pidx[k] = np.nonzero(~np.eye(k, dtype=bool))
        ii, jj = idx
        base = getattr(self, "_cls_rows", None)
        if base is None:  # X row of (pair class, type 0, type 0) per site pair; int32 (small, cache friendly)
            base = self._cls_rows = (self.cls.astype(np.int64) * (T * T)).astype(np.int32)
        img = img.astype(np.int32)
        t32 = types.astype(np.int32)
        row = base[img[:, :, ii], img[:, :, jj]]  # (M, P, k (k-1)); the diagonal (-1) never occurs
        row += (t32[:, ii] * T + t32[:, jj])[:, None, :]
        P = img.shape[1]
        # per centre i, the sum over j of the rows [Q | f | g]: one fused gather-and-sum (no (k^2, W + 2R) intermediate)
        s = torch.nn.functional.embedding_bag(torch.from_numpy(row.reshape(M * P * k, k - 1)), self.X, mode="sum")
        s = s.view(M, P, k, W + 2 * R)
        u = u + s[..., :W].sum(dim=2)
        return u + (s[..., W : W + R] * s[..., W + R :]).sum(dim=2) @ self.L.T

    def _u(self, sites: np.ndarray, types: np.ndarray, cutoff: float | None) -> torch.Tensor:
        """``(M, P, W)`` summed node + pair + triple terms of ``M`` configurations with ``k`` defects."""
        if self.kind == "product":
            if cutoff is not None:
                raise ValueError("the product three-body term is exact at every defect count: no triple cutoff")
            return self._u_product(sites, types)
        M, k = sites.shape
        P = len(self.ops)
        img = self.img[:, sites].transpose(1, 0, 2)  # (M, P, k)
        tt = torch.as_tensor(types)
        u = self.node[torch.as_tensor(self.basis[img]), tt[:, None, :]].sum(dim=2)  # (M, P, W)
        if k < 2:
            return u
        ii, jj = np.nonzero(~np.eye(k, dtype=bool))
        cij = torch.as_tensor(self.cls[img[:, :, ii], img[:, :, jj]].astype(np.int64))  # (M, P, k(k-1))
        ti, tj = tt[:, ii][:, None, :], tt[:, jj][:, None, :]
        u = u + self.pair[cij, ti, tj].sum(dim=2)
        if k < 3:
            return u
        a_ = self.ta[cij, ti, tj]  # (M, P, npair, W)
        b_ = self.tb[cij, ti, tj]
        # triples (i, j, l): pairs p = (i, j), q = (i, l), j != l
        pnum = -np.ones((k, k), dtype=np.int64)
        pnum[ii, jj] = np.arange(len(ii))
        trip = []
        if cutoff is not None:
            near = self.dist[sites[:, :, None], sites[:, None, :]] <= cutoff  # (M, k, k)
            near &= ~np.eye(k, dtype=bool)[None]
            m3, i3, j3, l3 = np.nonzero(near[:, :, :, None] & near[:, :, None, :] & ~np.eye(k, dtype=bool)[None, None])
            trip = [(m3, pnum[i3, j3], pnum[i3, l3])]
        out = torch.zeros((M, P, self.W), dtype=u.dtype)
        if cutoff is None:
            # by centre i: h1 = silu(A[i, j] + B[i, l]) over all (j, l) by one broadcast add, minus the j == l terms
            a_ = a_ + self.b1
            pos = pnum  # (k, k) pair number of (i, j), -1 on the diagonal
            for i in range(k):
                others = torch.as_tensor(pos[i][pos[i] >= 0])
                A = a_[:, :, others]  # (M, P, k-1, W)
                B = b_[:, :, others]
                h = torch.nn.functional.silu(A[:, :, :, None, :] + B[:, :, None, :, :])
                full = torch.nn.functional.silu(self.lin2(h)).sum(dim=(2, 3))
                diag = torch.nn.functional.silu(self.lin2(torch.nn.functional.silu(A + B))).sum(dim=2)
                out += full - diag
            n_t = torch.full((M, 1, 1), float(k * (k - 1) * (k - 2)), dtype=u.dtype)
        else:
            m3, p3, q3 = trip[0]
            if len(p3) == 0:
                return u
            step = max(1, MAX_ELEMS // (P * self.W))
            mm_all = torch.as_tensor(m3)
            for s in range(0, len(p3), step):
                mm = mm_all[s : s + step]
                pp, qq = torch.as_tensor(p3[s : s + step]), torch.as_tensor(q3[s : s + step])
                h = torch.nn.functional.silu(a_[mm, :, pp] + b_[mm, :, qq] + self.b1)  # (t, P, W)
                out.index_add_(0, mm, torch.nn.functional.silu(self.lin2(h)))
            n_t = torch.as_tensor(np.bincount(m3, minlength=M).astype(float), dtype=u.dtype)[:, None, None]
        return u + out @ self.lin3.weight.T + n_t * self.lin3.bias

    #: the triple-leg cutoff (A) where none is asked for or the count is exact (None: every triple)
    default_cutoff: float | None = None

    def embed(self, occ: np.ndarray, cutoff: float | None = None, exact_below: int = EXACT_BELOW) -> np.ndarray:
        """``(N, n_sites)`` uint8 -> ``(N, d)`` float64 embeddings, batched by defect count in bounded memory."""
        cloud = defect_cloud(occ, self.host)
        model = self.model
        out = np.zeros((cloud.n, model.dim))
        P = len(self.ops)
        with torch.no_grad():
            for k, (rows, sites, types) in cloud.groups.items():
                cut = cutoff if (cutoff is not None and k > exact_below) else self.default_cutoff
                per = 3 * P * self.W * max(1, k * k)
                if self.kind == "product":
                    cut = cutoff if (cutoff is not None and k > exact_below) else None
                    per = P * (self.W + 2 * self.R + k) * max(1, k)  # per-centre sums and the row indices  # (M, P, k^2, W) intermediates: pair gathers, one centre's triples
                chunk = max(1, MAX_ELEMS // per)
                for s in range(0, len(rows), chunk):
                    u = self._u(sites[s : s + chunk], types[s : s + chunk], cut)
                    z = model.out(model.post(u).mean(dim=1))
                    out[rows[s : s + chunk]] = z.double().numpy()
        return out


_TABLES: dict[tuple, tuple[tuple, EncoderTables]] = {}


def encoder_tables(model, host: HostLattice) -> EncoderTables:
    """The cached :class:`EncoderTables` of ``model`` on ``host`` (rebuilt when the weights change)."""
    params = list(model.parameters())
    key = (id(model), host.fingerprint, tuple(p._version for p in params), tuple(p.data_ptr() for p in params), params[0].dtype)
    hit = _TABLES.get(key[:2])
    if hit is not None and hit[0] == key and hit[1].model is model:
        return hit[1]
    tab = EncoderTables(model, host)
    _TABLES[key[:2]] = (key, tab)
    return tab
