"""Incremental embedding: one configuration's encoder sums kept and updated move by move.

The encoder (:mod:`invdesign.embed.encoder`) is, per point operation ``g`` (``P`` of them),

    u_g = sum_i a(i) + sum_{i != j} b(ij) + sum_{i, j, l distinct} c(ij, il),    z = W mean_g phi(u_g),

so moving one defect changes only the terms that touch it: its node term, its ``2 (k-1)`` pair
terms and its ``3 (k-1) (k-2)`` triple terms, against ``k (k-1) (k-2)`` triples for a full
embedding (:class:`ProductIncrementalEmbedding`, which ``IncrementalEmbedding(encoder, ...)`` returns for an
encoder with the product three-body term, touches only ``O(k)`` pairs per move). :class:`IncrementalEmbedding`
keeps, for the current configuration of ``k`` defects:

- ``A, B``: ``(P, k, k, W)`` the triple network's first layer on every ordered pair (tabulated by
  pair class, :class:`~invdesign.embed.tables.EncoderTables`; ``A`` includes the bias);
- per defect ``m``: its node term, the sum of its pair terms, and ``S_m`` the sum of the triple
  network's hidden outputs (before its linear last layer) over the triples containing ``m``;
- the totals ``N, Pr (P, W)`` and ``H (P, W)``.

Removing ``m`` subtracts its node, pair and ``S_m`` terms (no network call); adding a defect runs
the triple network's hidden layer on its ``3 (k-1) (k-2)`` new triples only. ``z`` follows from
``u = N + Pr + H W3^T + n_triples b3`` through ``phi`` and ``W``. The result equals
:meth:`EncoderTables.embed` (the exact, full sum) to float64 round-off (checked in the tests).

:meth:`IncrementalEmbedding.screen` gives a cheap approximate ``z`` for many candidate moves at once
(exact node and pair terms, the moved defect's triple sum carried over): used to rank moves before
the exact :meth:`IncrementalEmbedding.evaluate` of the best few.
"""

from __future__ import annotations

import numpy as np
import torch

from invdesign.embed.geometry import type_table
from invdesign.embed.tables import EncoderTables, encoder_tables
from invdesign.lattice.host import HostLattice

MAX_ELEMS = 6_000_000  # largest (candidates x P x k x k x W) intermediate per chunk (48 MB in float64)


def _n_triples(k: int) -> int:
    return k * (k - 1) * (k - 2)


class IncrementalEmbedding:
    """The embedding of one configuration, updated by single-defect moves.

    A *move* is ``(m, x, t)``: remove defect number ``m`` (an index into :attr:`sites`; ``-1``: none)
    and put a defect of type ``t`` on site ``x`` (``-1``: none). ``m >= 0, x >= 0`` moves or re-types
    a defect, ``m = -1`` adds one, ``x = -1`` removes one. ``x`` must be free once ``m`` is removed.

    Args:
        encoder: a fitted :class:`~invdesign.embed.encoder.InvariantEncoder` (float64 for exactness).
        host: the host lattice.
        dtype: arithmetic of the state (default: the encoder's). ``torch.float32`` is about twice as
            fast and agrees to ~1e-6 relative (a search's ranking; report distances in float64).
    """

    def __new__(cls, encoder, host: HostLattice, dtype: torch.dtype | None = None):
        if cls is IncrementalEmbedding and getattr(encoder, "three_body", "mlp") == "product":
            cls = ProductIncrementalEmbedding  # the same interface for the O(k^2) encoder
        return super().__new__(cls)

    def __init__(self, encoder, host: HostLattice, dtype: torch.dtype | None = None) -> None:
        tab = self._setup(encoder, host, dtype)
        dt = self.dtype
        self.node_tab, self.pair_tab, self.ta, self.tb = (t.to(dt) for t in (tab.node, tab.pair, tab.ta, tab.tb))
        self.b1 = tab.b1.to(dt)
        self.lin2 = self._as_dtype(tab.lin2)
        self.w3, self.b3 = tab.lin3.weight.detach().to(dt), tab.lin3.bias.detach().to(dt)
        self.clear()

    def _setup(self, encoder, host: HostLattice, dtype: torch.dtype | None) -> EncoderTables:
        """The state both encoder kinds share (tables, site images, pair classes, read-out); returns the tables."""
        tab: EncoderTables = encoder_tables(encoder, host)
        self.host, self.encoder, self._tab_dtype = host, encoder, tab.node.dtype
        self.dtype = dtype or tab.node.dtype
        self.P, self.W = len(tab.ops), tab.W
        self.img = torch.as_tensor(tab.img)  # (P, n_sites)
        self.cls = torch.as_tensor(tab.cls.astype(np.int64))  # (n_sites, n_sites), -1 on the diagonal
        self.basis = torch.as_tensor(tab.basis)
        self.post, self.out = self._as_dtype(encoder.post), self._as_dtype(encoder.out)
        self.dim = encoder.dim
        self._type_table = type_table(host)
        self.n_types = len(host.defect_types)
        return tab

    def _as_dtype(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` itself in the tables' dtype, else a copy in the state's dtype."""
        import copy

        return module if self.dtype == self._tab_dtype else copy.deepcopy(module).to(self.dtype)

    # ------------------------------------------------------------------ state
    def clear(self) -> None:
        """The empty configuration (the pristine host)."""
        P, W, dt = self.P, self.W, self.dtype
        self.sites = np.zeros(0, dtype=np.int64)
        self.types = np.zeros(0, dtype=np.int64)
        self.A = torch.zeros((P, 0, 0, W), dtype=dt)
        self.B = torch.zeros((P, 0, 0, W), dtype=dt)
        self.node_m = torch.zeros((0, P, W), dtype=dt)
        self.pair_m = torch.zeros((0, P, W), dtype=dt)
        self.S = torch.zeros((0, P, W), dtype=dt)
        self.N = torch.zeros((P, W), dtype=dt)
        self.Pr = torch.zeros((P, W), dtype=dt)
        self.H = torch.zeros((P, W), dtype=dt)
        self._z: np.ndarray | None = None
        self._field: torch.Tensor | None = None

    @property
    def k(self) -> int:
        return len(self.sites)

    def set(self, occ: np.ndarray) -> None:
        """Start from occupancy ``(n_sites,)`` (defects added one by one: ``O(k^3)`` once)."""
        occ = np.asarray(occ)
        self.clear()
        sites = np.flatnonzero(occ != self.host.host_code)
        types = self._type_table[self.host.sublattice[sites].astype(np.int64), occ[sites].astype(np.int64)]
        if (types < 0).any():
            raise ValueError("a species is not allowed on its sublattice")
        for s, t in zip(sites, types):
            self.apply((-1, int(s), int(t)))

    def occ(self) -> np.ndarray:
        """``(n_sites,)`` uint8 occupancy of the current configuration."""
        out = self.host.host_code.copy()
        for s, t in zip(self.sites, self.types):
            out[s] = self.host.defect_types[t][1]
        return out

    def copy_state(self) -> tuple:
        """A snapshot for :meth:`restore` (tensors are never modified in place, so this is cheap)."""
        return (self.sites.copy(), self.types.copy(), self.A, self.B, self.node_m, self.pair_m, self.S,
                self.N, self.Pr, self.H, self._z, self._field)

    def restore(self, snap: tuple) -> None:
        (self.sites, self.types, self.A, self.B, self.node_m, self.pair_m, self.S,
         self.N, self.Pr, self.H, self._z, self._field) = snap
        self.sites, self.types = self.sites.copy(), self.types.copy()

    def u(self) -> torch.Tensor:
        """``(P, W)`` the summed node, pair and triple terms of the current configuration."""
        return self.N + self.Pr + self.H @ self.w3.T + _n_triples(self.k) * self.b3

    def z(self) -> np.ndarray:
        """``(d,)`` float64 embedding of the current configuration."""
        if self._z is None:
            self._z = self._phi(self.u()[None])[0]
        return self._z

    @torch.no_grad()
    def _phi(self, u: torch.Tensor) -> np.ndarray:
        """``(M, P, W)`` -> ``(M, d)`` embeddings: ``W mean_g phi(u_g)``."""
        out = []
        step = max(1, 2_000_000 // (self.P * self.W))
        for s in range(0, len(u), step):
            out.append(self.out(self.post(u[s : s + step]).mean(dim=1)))
        return torch.cat(out).double().numpy() if out else np.zeros((0, self.dim))

    # ------------------------------------------------------------------ the terms of one new defect
    def _f(self, x: torch.Tensor) -> torch.Tensor:
        """The triple network's hidden layers on first-layer outputs: ``silu(lin2(silu(x)))``."""
        return torch.nn.functional.silu(self.lin2(torch.nn.functional.silu(x)))

    def _links(self, xs: torch.Tensor, xt: torch.Tensor, others: np.ndarray):
        """Pair quantities between new defects ``(N,)`` (sites ``xs``, types ``xt``) and the defects ``others``.

        Returns ``pairs (N, P, kO, W)`` (both orientations summed), ``Axo, Bxo, Aox, Box (N, P, kO, W)``.
        """
        ox = torch.as_tensor(self.sites[others])
        ot = torch.as_tensor(self.types[others])
        ix = self.img[:, xs].T  # (N, P)
        io = self.img[:, ox]  # (P, kO)
        cxo = self.cls[ix[:, :, None], io[None]]  # (N, P, kO)
        cox = self.cls[io[None], ix[:, :, None]]
        tx = xt[:, None, None]
        to = ot[None, None, :]
        pairs = self.pair_tab[cxo, tx, to] + self.pair_tab[cox, to, tx]
        return pairs, self.ta[cxo, tx, to] + self.b1, self.tb[cxo, tx, to], self.ta[cox, to, tx] + self.b1, self.tb[cox, to, tx]

    def _node(self, xs: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        """``(N, P, W)`` node terms of defects on sites ``xs`` with types ``xt``."""
        return self.node_tab[self.basis[self.img[:, xs].T], xt[:, None]]

    def _triples(self, Axo, Bxo, Aox, Box, A_O, B_O, attribute: bool):
        """The new defect's triple terms against ``kO`` others.

        Returns ``S_x (N, P, W)`` and, with ``attribute``, ``(N, kO, P, W)`` each other defect's share
        (the sum over the new triples containing it).
        """
        N, P, kO, W = Axo.shape
        if kO < 2:
            return torch.zeros((N, P, W), dtype=Axo.dtype), (torch.zeros((N, kO, P, W), dtype=Axo.dtype) if attribute else None)
        off = (~torch.eye(kO, dtype=torch.bool)).to(Axo.dtype)[None, None, :, :, None]  # (1, 1, kO, kO, 1)
        f1 = self._f(Axo[:, :, :, None] + Bxo[:, :, None, :]) * off  # centre x: (x, j, l)
        f2 = self._f(Aox[:, :, :, None] + B_O[None]) * off  # centre i: (i, x, l)
        f3 = self._f(A_O[None] + Box[:, :, :, None]) * off  # centre i: (i, j, x)
        s_x = f1.sum(dim=(2, 3)) + f2.sum(dim=(2, 3)) + f3.sum(dim=(2, 3))
        if not attribute:
            return s_x, None
        share = f1.sum(3) + f1.sum(2) + f2.sum(3) + f2.sum(2) + f3.sum(3) + f3.sum(2)  # (N, P, kO, W)
        return s_x, share.permute(0, 2, 1, 3)

    def _chunk(self, kO: int) -> int:
        return max(1, MAX_ELEMS // (3 * self.P * self.W * max(1, kO * kO)))

    # ------------------------------------------------------------------ moves
    def _removed(self, m: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Totals without defect ``m`` (``-1``: unchanged): others, N, Pr, H, A_O, B_O."""
        if m < 0:
            return np.arange(self.k), self.N, self.Pr, self.H, self.A, self.B
        others = np.delete(np.arange(self.k), m)
        o = torch.as_tensor(others)
        A_O = self.A[:, o][:, :, o]
        B_O = self.B[:, o][:, :, o]
        return others, self.N - self.node_m[m], self.Pr - self.pair_m[m], self.H - self.S[m], A_O, B_O

    @torch.no_grad()
    def evaluate(self, moves) -> np.ndarray:
        """``(M, d)`` exact embeddings after each of ``moves`` (``(M, 3)`` ints ``m, x, t``); the state is unchanged."""
        moves = np.asarray(moves, dtype=np.int64).reshape(-1, 3)
        out = np.empty((len(moves), self.dim))
        for m in np.unique(moves[:, 0]):
            rows = np.flatnonzero(moves[:, 0] == m)
            rm = self._removed(int(m))
            rem = rows[moves[rows, 1] < 0]
            if len(rem):
                out[rem] = self._phi(self._u_removal(rm)[None])[0]
            add = rows[moves[rows, 1] >= 0]
            step = self._chunk(len(rm[0]))
            for s in range(0, len(add), step):
                r = add[s : s + step]
                out[r] = self._phi(self._u_addition(rm, torch.as_tensor(moves[r, 1]), torch.as_tensor(moves[r, 2])))
        return out

    def _u_removal(self, rm: tuple) -> torch.Tensor:
        """``(P, W)`` encoder sums with defect ``m`` removed (``rm``: :meth:`_removed` of ``m``)."""
        others, N, Pr, H, _A_O, _B_O = rm
        return N + Pr + H @ self.w3.T + _n_triples(len(others)) * self.b3

    def _u_addition(self, rm: tuple, xs: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        """``(n, P, W)`` encoder sums with ``m`` removed (``rm``) and a defect of type ``xt[c]`` added on site ``xs[c]``."""
        others, N, Pr, H, A_O, B_O = rm
        pairs, Axo, Bxo, Aox, Box = self._links(xs, xt, others)
        s_x, _ = self._triples(Axo, Bxo, Aox, Box, A_O, B_O, attribute=False)
        return N + self._node(xs, xt) + Pr + pairs.sum(2) + (H + s_x) @ self.w3.T + _n_triples(len(others) + 1) * self.b3

    @torch.no_grad()
    def apply(self, move) -> None:
        """Make one move ``(m, x, t)`` on the state."""
        m, x, t = (int(v) for v in move)
        if self._field is not None:
            if m >= 0:
                self._field = self._field - self._field_of(int(self.sites[m]), int(self.types[m]))
            if x >= 0:
                self._field = self._field + self._field_of(x, t)
        if m >= 0:
            others, N, Pr, H, A_O, B_O = self._removed(m)
            kO = len(others)
            # the other defects lose their pair terms with m and their shares of the triples containing m
            ms, mt = torch.as_tensor([self.sites[m]]), torch.as_tensor([self.types[m]])
            pairs, Axo, Bxo, Aox, Box = self._links(ms, mt, others)
            _, share = self._triples(Axo, Bxo, Aox, Box, A_O, B_O, attribute=True)
            o = torch.as_tensor(others)
            self.pair_m = self.pair_m[o] - pairs[0].permute(1, 0, 2)
            self.S = self.S[o] - share[0]
            self.node_m = self.node_m[o]
            self.N, self.Pr, self.H, self.A, self.B = N, Pr, H, A_O, B_O
            self.sites, self.types = self.sites[others], self.types[others]
        if x >= 0:
            if (self.sites == x).any():
                raise ValueError(f"site {x} is already a defect")
            kO = self.k
            others = np.arange(kO)
            xs, xt = torch.as_tensor([x]), torch.as_tensor([t])
            pairs, Axo, Bxo, Aox, Box = self._links(xs, xt, others)
            s_x, share = self._triples(Axo, Bxo, Aox, Box, self.A, self.B, attribute=True)
            node = self._node(xs, xt)
            pr = pairs[0].permute(1, 0, 2)  # (kO, P, W)
            self.pair_m = torch.cat([self.pair_m + pr, pairs[0].sum(1)[None]])
            self.S = torch.cat([self.S + share[0], s_x])
            self.node_m = torch.cat([self.node_m, node])
            self.N = self.N + node[0]
            self.Pr = self.Pr + pairs[0].sum(1)
            self.H = self.H + s_x[0]
            P, W = self.P, self.W
            A = torch.zeros((P, kO + 1, kO + 1, W), dtype=self.dtype)
            B = torch.zeros_like(A)
            A[:, :kO, :kO], B[:, :kO, :kO] = self.A, self.B
            A[:, kO, :kO], B[:, kO, :kO] = Axo[0], Bxo[0]
            A[:, :kO, kO], B[:, :kO, kO] = Aox[0], Box[0]
            self.A, self.B = A, B
            self.sites = np.append(self.sites, x)
            self.types = np.append(self.types, t)
        self._z = None

    @torch.no_grad()
    def screen(self, moves, field: torch.Tensor | None = None) -> np.ndarray:
        """``(M, d)`` approximate embeddings after each move, cheaply (no triple network call).

        Node and pair terms are exact; the triple sum of a moved or re-typed defect is carried
        over unchanged (``S_x ~ S_m``), an added defect gets the mean share of the present ones
        (scaled to its triple count); removals are exact. ``field``: :meth:`_pair_field`, reused.
        """
        moves = np.asarray(moves, dtype=np.int64).reshape(-1, 3)
        if field is None:
            field = self._pair_field()
        k, M = self.k, len(moves)
        m, x, t = (torch.as_tensor(moves[:, i]) for i in range(3))
        has_m, has_x = m >= 0, x >= 0
        kO = k - has_m.to(torch.int64)
        k_new = kO + has_x.to(torch.int64)
        n_t = (k_new * (k_new - 1) * (k_new - 2)).to(self.dtype)
        u = (self.N + self.Pr + self.H @ self.w3.T).expand(M, -1, -1) + n_t[:, None, None] * self.b3
        if k:
            # a removed (or moved) defect takes its node and pair terms; a removal also its triples
            rem = torch.nonzero(has_m).ravel()
            if len(rem):
                mm = m[rem]
                gone = self.node_m[mm] + self.pair_m[mm]
                only = (~has_x[rem]).to(self.dtype)[:, None, None]
                gone = gone + only * (self.S[mm] @ self.w3.T)
                u = u.index_add(0, rem, -gone)
        add = torch.nonzero(has_x).ravel()
        if len(add):
            xx, tx = x[add], t[add]
            new = self._node(xx, tx) + field[:, xx, tx].permute(1, 0, 2)  # (A, P, W)
            ma = m[add]
            moved = torch.nonzero(ma >= 0).ravel()
            if len(moved):  # the new defect has no pair with the one it replaces
                mi = ma[moved]
                ms, mt = torch.as_tensor(self.sites)[mi], torch.as_tensor(self.types)[mi]
                ix, im = self.img[:, xx[moved]].T, self.img[:, ms].T  # (A', P)
                tm_, tx_ = mt[:, None], tx[moved][:, None]
                with_m = self.pair_tab[self.cls[ix, im], tx_, tm_] + self.pair_tab[self.cls[im, ix], tm_, tx_]
                new = new.index_add(0, moved, -with_m)
            pure = torch.nonzero(ma < 0).ravel()
            if len(pure) and k >= 3:  # an added defect: the mean triple share of the present ones, scaled
                share = self.S.mean(0) @ self.w3.T  # (P, W)
                ratio = (k * (k - 1)) / ((k - 1) * (k - 2))
                new = new.index_add(0, pure, (ratio * share).expand(len(pure), -1, -1))
            u = u.index_add(0, add, new)
        return self._phi(u)

    @torch.no_grad()
    def _field_of(self, s: int, ty: int) -> torch.Tensor:
        """``(P, n_sites, T, W)`` pair terms of a defect of type ``ty`` on ``s`` with a defect on every site / type."""
        allx = torch.arange(self.host.n_sites)
        tt = torch.arange(self.n_types)
        c1 = self.cls[self.img[:, allx], self.img[:, [s]]]  # (P, n): class of (x, s)
        c2 = self.cls[self.img[:, [s]], self.img[:, allx]]
        return self.pair_tab[c1[:, :, None], tt[None, None, :], ty] + self.pair_tab[c2[:, :, None], ty, tt[None, None, :]]

    @torch.no_grad()
    def _pair_field(self) -> torch.Tensor:
        """``(P, n_sites, T, W)``: for a defect of type ``t`` on site ``x``, its pair terms with every present defect.

        Computed once, then kept up to date by :meth:`apply` (``O(P n_sites T W)`` per move).
        """
        if self._field is None:
            out = torch.zeros((self.P, self.host.n_sites, self.n_types, self.W), dtype=self.dtype)
            for s, ty in zip(self.sites, self.types):
                out += self._field_of(int(s), int(ty))
            self._field = out
        return self._field


class ProductIncrementalEmbedding(IncrementalEmbedding):
    """:class:`IncrementalEmbedding` of an encoder with the product three-body term (``three_body="product"``).

    The encoder's sums are, per point operation, ``u = sum_i a_i + sum_{i != j} Q_ij + L(sum_i F_i * G_i)``
    with ``F_i = sum_{j != i} f_ij``, ``G_i = sum_{l != i} g_il`` (see :mod:`invdesign.embed.encoder`; rows of
    :attr:`EncoderTables.X <invdesign.embed.tables.EncoderTables>`). The state keeps, per defect ``m``, its node
    term, the sum of its pair terms ``Q`` (both orientations) and its ``F_m, G_m (P, R)``. A move touches
    ``O(k)`` pairs: removing ``m`` takes ``f_om, g_om`` off every other centre, adding ``x`` puts ``f_ox, g_ox``
    on them and gives ``x`` its own sums. :meth:`screen` is exact here (no triple network to skip).
    """

    def __init__(self, encoder, host: HostLattice, dtype: torch.dtype | None = None) -> None:  # noqa: D107
        tab = self._setup(encoder, host, dtype)
        self.R, self.T = tab.R, tab.T
        self.node_tab = tab.node.to(self.dtype)
        self.X = tab.X.to(self.dtype)  # (C T T, W + 2R) rows [Q | f | g]
        self.L = tab.L.to(self.dtype)  # (W, R)
        self.clear()

    def clear(self) -> None:
        """The empty configuration (the pristine host)."""
        P, W, R, dt = self.P, self.W, self.R, self.dtype
        self.sites = np.zeros(0, dtype=np.int64)
        self.types = np.zeros(0, dtype=np.int64)
        self.node_m = torch.zeros((0, P, W), dtype=dt)
        self.pair_m = torch.zeros((0, P, W), dtype=dt)
        self.Fm = torch.zeros((0, P, R), dtype=dt)
        self.Gm = torch.zeros((0, P, R), dtype=dt)
        self.N = torch.zeros((P, W), dtype=dt)
        self.Pr = torch.zeros((P, W), dtype=dt)
        self._z = None

    def copy_state(self) -> tuple:
        """A snapshot for :meth:`restore` (tensors are never modified in place)."""
        return (self.sites.copy(), self.types.copy(), self.node_m, self.pair_m, self.Fm, self.Gm, self.N, self.Pr, self._z)

    def restore(self, snap: tuple) -> None:
        (self.sites, self.types, self.node_m, self.pair_m, self.Fm, self.Gm, self.N, self.Pr, self._z) = snap
        self.sites, self.types = self.sites.copy(), self.types.copy()

    def u(self) -> torch.Tensor:
        """``(P, W)`` the summed node, pair and three-body terms of the current configuration."""
        return self.N + self.Pr + (self.Fm * self.Gm).sum(0) @ self.L.T

    def _rows(self, xs: torch.Tensor, xt: torch.Tensor, others: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``X`` rows of the pairs ``(x, o)`` and ``(o, x)``: two ``(N, P, kO, W + 2R)`` for new defects ``xs, xt (N,)``."""
        T = self.T
        ox = torch.as_tensor(self.sites[others])
        ot = torch.as_tensor(self.types[others])[None, None, :]
        ix = self.img[:, xs].T[:, :, None]  # (N, P, 1)
        io = self.img[:, ox][None]  # (1, P, kO)
        tx = xt[:, None, None]
        rxo = (self.cls[ix, io] * T + tx) * T + ot
        rox = (self.cls[io, ix] * T + ot) * T + tx
        return self.X[rxo], self.X[rox]

    def _removed(self, m: int):
        """Sums without defect ``m`` (``-1``: unchanged): others, N, Pr, F_O, G_O, pair_O."""
        if m < 0:
            return np.arange(self.k), self.N, self.Pr, self.Fm, self.Gm, self.pair_m
        W, R = self.W, self.R
        others = np.delete(np.arange(self.k), m)
        o = torch.as_tensor(others)
        xmo, xom = self._rows(torch.as_tensor([self.sites[m]]), torch.as_tensor([self.types[m]]), others)
        xmo, xom = xmo[0].permute(1, 0, 2), xom[0].permute(1, 0, 2)  # (kO, P, W + 2R)
        F_O = self.Fm[o] - xom[..., W : W + R]
        G_O = self.Gm[o] - xom[..., W + R :]
        pair_O = self.pair_m[o] - xmo[..., :W] - xom[..., :W]
        return others, self.N - self.node_m[m], self.Pr - self.pair_m[m], F_O, G_O, pair_O

    def _added(self, xs, xt, others, F_O, G_O):
        """For new defects ``(N,)``: their pair sums ``(N, P, W)``, ``F_x, G_x (N, P, R)``, the others' new
        ``F, G (N, P, kO, R)`` and the per-pair ``Q`` rows of both orientations ``(N, P, kO, W)``."""
        W, R = self.W, self.R
        xxo, xox = self._rows(xs, xt, others)
        q = xxo[..., :W] + xox[..., :W]
        F_o = F_O.permute(1, 0, 2)[None] + xox[..., W : W + R]
        G_o = G_O.permute(1, 0, 2)[None] + xox[..., W + R :]
        return q.sum(2), xxo[..., W : W + R].sum(2), xxo[..., W + R :].sum(2), F_o, G_o, q

    def _chunk(self, kO: int) -> int:
        return max(1, MAX_ELEMS // (4 * self.P * (self.W + 2 * self.R) * max(1, kO)))

    def _u_removal(self, rm: tuple) -> torch.Tensor:
        _others, N, Pr, F_O, G_O, _ = rm
        return N + Pr + (F_O * G_O).sum(0) @ self.L.T

    def _u_addition(self, rm: tuple, xs: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        others, N, Pr, F_O, G_O, _ = rm
        q, F_x, G_x, F_o, G_o, _ = self._added(xs, xt, others, F_O, G_O)
        h = (F_o * G_o).sum(2) + F_x * G_x  # (n, P, R)
        return N + self._node(xs, xt) + Pr + q + h @ self.L.T

    @torch.no_grad()
    def apply(self, move) -> None:
        """Make one move ``(m, x, t)`` on the state."""
        m, x, t = (int(v) for v in move)
        if m >= 0:
            others, self.N, self.Pr, self.Fm, self.Gm, self.pair_m = self._removed(m)
            self.node_m = self.node_m[torch.as_tensor(others)]
            self.sites, self.types = self.sites[others], self.types[others]
        if x >= 0:
            if (self.sites == x).any():
                raise ValueError(f"site {x} is already a defect")
            xs, xt = torch.as_tensor([x]), torch.as_tensor([t])
            q, F_x, G_x, F_o, G_o, qo = self._added(xs, xt, np.arange(self.k), self.Fm, self.Gm)
            node = self._node(xs, xt)
            self.pair_m = torch.cat([self.pair_m + qo[0].permute(1, 0, 2), q])
            self.Fm = torch.cat([F_o[0].permute(1, 0, 2), F_x])
            self.Gm = torch.cat([G_o[0].permute(1, 0, 2), G_x])
            self.node_m = torch.cat([self.node_m, node])
            self.N = self.N + node[0]
            self.Pr = self.Pr + q[0]
            self.sites = np.append(self.sites, x)
            self.types = np.append(self.types, t)
        self._z = None

    def screen(self, moves, field: torch.Tensor | None = None) -> np.ndarray:
        """``(M, d)`` embeddings after each move: exact (:meth:`evaluate`; a move costs ``O(k)`` here; ``field``
        is unused: this kind keeps no pair field)."""
        return self.evaluate(moves)
