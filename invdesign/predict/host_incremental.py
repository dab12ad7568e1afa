"""Incremental, batched evaluation of a host model's served properties for Monte Carlo chains.

:class:`~invdesign.predict.defect_env.HostModel` builds every property from per-defect terms: each defect's
environment row (defects of each type in each pair orbit within a radius) goes through small networks, and
the pair cluster expansion is a sum of per-defect rows too. A single-defect move therefore changes only the
environment rows of the defects within the radius of the moved one (each by one count), the moved defect's
own row, and so only those rows' network terms. :class:`HostChains` keeps, for ``C`` chains of at most ``K``
defects each:

- the defects in ``K`` slots: ``site (C, K)``, ``typ (C, K)`` (``-1``: empty slot) and ``occ (C, S)``;
- the environment rows ``Fe (C, K, De)``, ``Fg (C, K, Dg)`` (float32 counts, exact) of the energy and the
  level environments (:class:`~invdesign.predict.defect_env.DefectEnvironment`);
- the networks' per-defect outputs ``Oe (Me, C, K)`` (energy terms) and ``Og (Mg, C, K, 3)`` (levels, moments)
  and the expansion's per-defect energy ``Ece (C, K)``.

:meth:`HostChains.propose` applies one move per chain to a copy: the partners' rows get ``-1`` / ``+1`` in one
column, the moved row is rebuilt from its ``k - 1`` partners, and the networks run on the changed rows of all
chains at once (all members stacked in three matrix products), so a step costs a fixed number of numpy calls
whatever ``C``. The served mean and std then follow from the slot sums exactly as
:meth:`HostModel.predict` computes them (blend, soft minimum of levels, softplus of the summed moment terms and its shrinkage toward the median,
calibration per density band); :meth:`HostChains.predict` returns the moment too where a window bounds it.
Everything reads the model's public attributes; the result equals :meth:`HostModel.predict` to float32
round-off of the networks (``tests/test_host_incremental.py`` walks random moves and compares).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from invdesign.lattice.host import HostLattice
from invdesign.predict.defect_env import BANDS, CONTEXT_SCALE, TAU, HostModel, band_of
from invdesign.predict.features import orbit_distances
from invdesign.predict.gap import ForestStack
from invdesign.predict.tree_walk import available, walk


def _silu(x: np.ndarray) -> np.ndarray:
    """``x / (1 + exp(-x))`` in one temporary (the same floats)."""
    y = np.negative(x)
    np.exp(y, out=y)
    y += 1.0
    return np.divide(x, y, out=y)


class _Stack:
    """The members of one network ensemble stacked: ``(R, D)`` rows -> ``(M, R, 3)`` outputs (float32 layers, as
    :meth:`EnvNet.terms`: the input scaling folded into the first layer)."""

    def __init__(self, nets) -> None:
        parts = []
        for m in nets:
            W1, b1, W2, b2, W3, b3 = m.weights
            W1s = W1 / m.scale[:, None]
            parts.append([np.asarray(w, np.float32) for w in (W1s, b1 - m.mean @ W1s, W2, b2, W3, b3)])
        self.M = len(parts)
        self.H = parts[0][0].shape[1] if parts else 0
        self.W1 = np.stack([p[0] for p in parts]) if parts else None  # (M, D, H)
        self.b1 = np.stack([p[1] for p in parts])[:, None, :] if parts else None  # (M, 1, H)
        self.W2 = np.stack([p[2] for p in parts]) if parts else None  # (M, H, H)
        self.b2 = np.stack([p[3] for p in parts])[:, None, :] if parts else None
        self.W3 = np.stack([p[4] for p in parts]) if parts else None  # (M, H, 3)
        self.b3 = np.stack([p[5] for p in parts])[:, None, :] if parts else None
        self.host_gap = np.array([m.host_gap for m in nets], dtype=np.float64)

    def __call__(self, F: np.ndarray) -> np.ndarray:
        h = np.matmul(np.asarray(F, np.float32)[None], self.W1)  # (M, R, H), each member's block contiguous
        h += self.b1
        h = _silu(h)
        h = np.matmul(h, self.W2)
        h += self.b2
        h = _silu(h)
        return (np.matmul(h, self.W3) + self.b3).astype(np.float64)


class _EnvTable:
    """What a :class:`DefectEnvironment` needs to update rows: the column of each site pair and the radius."""

    def __init__(self, host: HostLattice, radius: float, n_types: int, context: bool = False) -> None:
        od = orbit_distances(host)
        orbs = np.flatnonzero((od > 0) & (od <= radius + 1e-6))
        omap = np.full(len(od), -1, dtype=np.int64)
        omap[orbs] = np.arange(len(orbs))
        self.O = len(orbs)
        self.T = n_types
        self.context = bool(context)  # rows end with the cell's net charge (DefectEnvironment.charges)
        self.D = n_types * (1 + self.O) + self.context
        self.site_orbit = omap[host.pair_orbits]  # (S, S) local orbit of each site pair, -1 beyond the radius
        self.orbits = orbs  # (O,) global pair-orbit numbers


@dataclass
class Moves:
    """One move per chain: empty ``slot`` (``C,``) gets / loses a defect.

    ``old_site, old_typ`` (``-1``: no defect leaves) and ``new_site, new_typ`` (``-1``: none arrives): a hop moves
    a defect (both, same type), a retype changes its type (both, same site), an add fills an empty slot (new
    only), a remove empties one (old only); ``old_*`` and ``new_*`` both ``-1``: no move (the same state).
    """

    slot: np.ndarray
    old_site: np.ndarray
    old_typ: np.ndarray
    new_site: np.ndarray
    new_typ: np.ndarray


class HostChains:
    """``C`` configurations of a :class:`HostModel`'s host with their per-defect terms; move by move.

    Args:
        model: the host model (its fitted networks, expansion and calibration are read, never changed).
        occ: ``(C, S)`` uint8 starting configurations, at most ``max_defects`` defects each.
        max_defects: slots per chain ``K``.
    """

    def __init__(self, model: HostModel, occ: np.ndarray, max_defects: int) -> None:
        self.model = model
        host = model.host
        self.host = host
        self.K = int(max_defects)
        T = len(host.defect_types)
        self.T = T
        self.code_type = model.env._code_type  # (sublattice, species code) -> defect type, -1 for host atoms
        self.type_code = np.array([c for _, c in host.defect_types], dtype=np.uint8)
        self.sublattice = host.sublattice.astype(np.int64)
        self.host_code = host.host_code
        self.env_e = _EnvTable(host, model.env_e.radius, T, model.env_e.charges is not None)
        self.env_g = _EnvTable(host, model.env_g.radius, T, model.env_g.charges is not None)
        # the expansion's charge-balance term c |sum_t q_t n_t| (PairCE; zero without it)
        self.charges = np.asarray(model.ce.charges, np.float64)
        self.c_charge = float(model.ce.coef[-1]) if model.ce.charge else 0.0
        self.net_e = _Stack(model.nets_e)
        self.net_g = _Stack(model.nets_g)
        # the pair expansion as a per-defect linear form on the energy environment: Wce[t_d] . Fe[d]
        ce = model.ce
        if ce.radius > model.env_e.radius + 1e-9:
            raise ValueError("the pair expansion reaches beyond the energy environment")
        npo = int(host.pair_orbits.max()) + 1
        od = orbit_distances(host)
        keep = np.zeros((T, T, npo), bool)
        keep[:, :, od <= ce.radius + 1e-6] = True
        cols = np.concatenate([np.arange(T), T + np.flatnonzero(keep.ravel())])
        full = np.zeros(T + T * T * npo)
        full[cols] = np.asarray(ce.coef, dtype=np.float64)[: len(cols)]
        pair = full[T:].reshape(T, T, npo)
        ee = self.env_e
        self.Wce = np.zeros((T, ee.D))
        for a in range(T):
            self.Wce[a, a] = 10.0 * full[a]  # singlets enter the expansion scaled by 10
            self.Wce[a, T: T + T * ee.O] = pair[a][:, ee.orbits].ravel()
        # blend weights per density band (BANDS)
        self.blend = np.broadcast_to(np.asarray(model.blend, float), (len(BANDS),)).copy()
        self.blend_gap = np.broadcast_to(np.asarray(model.blend_gap, float), (len(BANDS),)).copy()
        self.blend_mag, self.mag_center = np.asarray(model.blend_mag, float).copy(), float(model.mag_center)
        self.trees = list(model.trees_g) if model.trees_g and (self.blend_gap > 0).any() else []
        if self.trees:
            self._ce_cols = cols
            self._tree_stack = ForestStack(self.trees)
            # each kept pair column (t1, t2, orbit) of the expansion: where it sits among the energy rows summed by
            # the owner's type, (T_own, De) flattened; -1 where no row holds it (the self pair, orbits beyond the radius)
            envpos = np.full(npo, -1, np.int64)
            envpos[ee.orbits] = np.arange(ee.O)
            t12, o = np.divmod(cols[T:] - T, npo)
            t1, t2 = np.divmod(t12, T)
            self._tree_src = np.where(envpos[o] >= 0, t1 * ee.D + T + t2 * ee.O + envpos[o], -1)
            self._tree_used = self._used_columns(len(cols) + bool(model.ce.charge))
        cal = model.calibration
        self.cal, self.cal_validated = cal, cal.validated
        self.kmin, self.kmax = model.meta.get("kmin", 1), model.meta.get("kmax", 10_000)
        self.known = np.array(model.meta.get("targets_known", [True, True, True]), bool)
        self.host_gap = model.host_gap()
        self.set_state(np.asarray(occ, np.uint8))

    # ------------------------------------------------------------------ state
    def _slots(self, occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(m, S)`` occupancies -> ``site, typ (m, K)`` (defects in site order; empty slots ``0, -1``)."""
        ty = self.code_type[self.sublattice[None, :], occ]  # (m, S)
        is_def = ty >= 0
        k = is_def.sum(1)
        if (k > self.K).any():
            raise ValueError(f"a configuration has {int(k.max())} defects > {self.K} slots")
        order = np.argsort(~is_def, axis=1, kind="stable")[:, : self.K]
        valid = np.arange(self.K)[None, :] < k[:, None]
        site = np.where(valid, order, 0)
        typ = np.where(valid, np.take_along_axis(ty, order, axis=1), -1)
        return site.astype(np.int64), typ.astype(np.int64)

    def _rows_full(self, env: _EnvTable, site: np.ndarray, typ: np.ndarray) -> np.ndarray:
        """``(m, K, D)`` environment rows built from scratch (:meth:`DefectEnvironment.transform`'s counts)."""
        m, K = site.shape
        valid = typ >= 0
        oo = env.site_orbit[site[:, :, None], site[:, None, :]]  # (m, K, K)
        pair = valid[:, :, None] & valid[:, None, :] & (oo >= 0) & ~np.eye(K, dtype=bool)[None]
        n_i, i, j = np.nonzero(pair)
        col = env.T + typ[n_i, j] * env.O + oo[n_i, i, j]
        F = np.bincount((n_i * K + i) * env.D + col, minlength=m * K * env.D).astype(np.float32).reshape(m, K, env.D)
        c, s = np.nonzero(valid)
        F[c, s, typ[c, s]] = 1.0
        if env.context:
            F[..., -1] = np.where(valid, self._net_charge(typ)[:, None] / CONTEXT_SCALE, 0.0)
        return F

    def _net_charge(self, typ: np.ndarray) -> np.ndarray:
        """``(m,)`` the net charge ``|sum_t q_t n_t|`` of slot types ``(m, K)``."""
        counts = ((typ[:, :, None] == np.arange(self.T)[None, None, :]) & (typ >= 0)[:, :, None]).sum(1)
        return np.abs(counts @ self.charges)

    def _terms(self, Fe: np.ndarray, Fg: np.ndarray, typ: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-slot outputs of rows ``(m, K, D)``: ``Oe (Me, m, K)``, ``Og (Mg, m, K, 3)``, ``Ece (m, K)`` (0 in empty slots)."""
        m, K = typ.shape
        valid = typ >= 0
        Oe = np.zeros((self.net_e.M, m, K))
        Og = np.zeros((self.net_g.M, m, K, 3))
        c, s = np.nonzero(valid)
        if len(c):
            Oe[:, c, s] = self.net_e(Fe[c, s])[:, :, 0]
            Og[:, c, s] = self.net_g(Fg[c, s])
        Ece = np.where(valid, np.einsum("ckd,ckd->ck", Fe.astype(np.float64), self.Wce[np.maximum(typ, 0)]), 0.0)
        return Oe, Og, Ece

    def set_state(self, occ: np.ndarray, rows: np.ndarray | None = None) -> None:
        """(Re)start chains ``rows`` (default all) from ``occ (len(rows), S)``: a full evaluation."""
        occ = np.asarray(occ, np.uint8)
        site, typ = self._slots(occ)
        Fe, Fg = self._rows_full(self.env_e, site, typ), self._rows_full(self.env_g, site, typ)
        Oe, Og, Ece = self._terms(Fe, Fg, typ)
        if rows is None:
            self.occ, self.site, self.typ, self.Fe, self.Fg = occ.copy(), site, typ, Fe, Fg
            self.Oe, self.Og, self.Ece = Oe, Og, Ece
            return
        self.occ[rows], self.site[rows], self.typ[rows], self.Fe[rows], self.Fg[rows] = occ, site, typ, Fe, Fg
        self.Oe[:, rows], self.Og[:, rows], self.Ece[rows] = Oe, Og, Ece

    # ------------------------------------------------------------------ moves
    def propose(self, mv: Moves) -> dict:
        """The chains after one move each (a new state dict; the current state is unchanged)."""
        C, K = self.typ.shape
        cc = np.arange(C)
        slot = np.asarray(mv.slot, np.int64)
        has_old, has_new = mv.old_site >= 0, mv.new_site >= 0
        a, b = np.maximum(mv.old_site, 0), np.maximum(mv.new_site, 0)
        valid = self.typ >= 0
        others = valid.copy()
        others[cc, slot] = False
        typ = self.typ.copy()
        site = self.site.copy()
        typ[cc, slot] = np.where(has_new, mv.new_typ, np.where(has_old, -1, typ[cc, slot]))
        site[cc, slot] = np.where(has_new, b, np.where(has_old, 0, site[cc, slot]))
        moved = has_old | has_new
        occ = self.occ.copy()
        occ[cc[has_old], a[has_old]] = self.host_code[a[has_old]]
        occ[cc[has_new], b[has_new]] = self.type_code[mv.new_typ[has_new]]
        out = {"occ": occ, "site": site, "typ": typ}
        changed_rows = {}
        for tag, env, F0 in (("e", self.env_e, self.Fe), ("g", self.env_g, self.Fg)):
            F = F0.copy()
            Ff = F.reshape(C * K, env.D)
            oa = env.site_orbit[self.site, a[:, None]]  # (C, K) partner's orbit to the old site
            ob = env.site_orbit[self.site, b[:, None]]
            rm = others & has_old[:, None] & (oa >= 0)
            ad = others & has_new[:, None] & (ob >= 0)
            c1, j1 = np.nonzero(rm)
            Ff[c1 * K + j1, env.T + mv.old_typ[c1] * env.O + oa[c1, j1]] -= 1.0
            c2, j2 = np.nonzero(ad)
            Ff[c2 * K + j2, env.T + mv.new_typ[c2] * env.O + ob[c2, j2]] += 1.0
            # the moved slot's own row, rebuilt from its partners
            F[cc[moved], slot[moved]] = 0.0
            cn = cc[has_new]
            F[cn, slot[cn], mv.new_typ[cn]] = 1.0
            c3, j3 = np.nonzero(ad)
            ob_own = env.site_orbit[b[c3], self.site[c3, j3]]  # the arriving defect's orbit to each partner
            np.add.at(Ff, (c3 * K + slot[c3], env.T + self.typ[c3, j3] * env.O + ob_own), 1.0)
            ch = rm | ad
            ch[cc[has_new], slot[has_new]] = True
            if env.context:  # a changed net charge changes every row of its chain
                new_valid = typ >= 0
                q = self._net_charge(typ) / CONTEXT_SCALE
                F[..., -1] = np.where(new_valid, q[:, None], 0.0)
                ch |= new_valid & (self._net_charge(self.typ) / CONTEXT_SCALE != q)[:, None]
            changed_rows[tag] = np.nonzero(ch)
            out["F" + tag] = F
        Oe, Og = self.Oe.copy(), self.Og.copy()
        Oe[:, cc[moved], slot[moved]] = 0.0  # an emptied slot holds no terms (rebuilt below where a defect arrives)
        Og[:, cc[moved], slot[moved]] = 0.0
        c, s = changed_rows["e"]
        if len(c):
            Oe[:, c, s] = self.net_e(out["Fe"][c, s])[:, :, 0]
        c, s = changed_rows["g"]
        if len(c):
            Og[:, c, s] = self.net_g(out["Fg"][c, s])
        Ece = self.Ece.copy()
        Ece[cc[moved], slot[moved]] = 0.0
        c, s = changed_rows["e"]
        if len(c):
            Ece[c, s] = np.einsum("rd,rd->r", out["Fe"][c, s].astype(np.float64), self.Wce[typ[c, s]])
        out.update(Oe=Oe, Og=Og, Ece=Ece)
        return out

    def accept(self, prop: dict, ok: np.ndarray) -> None:
        """Take the proposal's state for chains ``ok`` (``(C,)`` bool)."""
        if not ok.any():
            return
        for k in ("occ", "site", "typ", "Fe", "Fg", "Ece"):
            getattr(self, k)[ok] = prop[k][ok]
        self.Oe[:, ok] = prop["Oe"][:, ok]
        self.Og[:, ok] = prop["Og"][:, ok]

    # ------------------------------------------------------------------ predictions
    def current(self) -> dict:
        return {k: getattr(self, k) for k in ("occ", "site", "typ", "Fe", "Fg", "Oe", "Og", "Ece")}

    def predict(self, st: dict | None = None, n_targets: int = 2, trees: bool | np.ndarray = True) -> tuple[np.ndarray, np.ndarray]:
        """``(C, n_targets)`` mean and std of a state (default: the current one), as :meth:`HostModel.predict` serves
        them: formation energy per defect site and gap (eV), and with ``n_targets=3`` the moment ``total_mag`` (Bohr
        magnetons per cell; NaN on a host without one), for windows that bound it.

        ``trees``: the chains ``(C,)`` bool whose gap takes the gradient-boosted trees' share (True: all, as served;
        False: none). Without them a chain's gap is the level networks' alone (mean, spread and calibration as
        served otherwise): all :func:`invdesign.generate.anneal.anneal` needs of a proposal when the window leaves the
        gap open, the trees then walking for the accepted moves only."""
        if n_targets not in (2, 3):
            raise ValueError(f"n_targets must be 2 or 3, not {n_targets}")
        return self.serve(self.parts(self.current() if st is None else st), n_targets, trees)

    @property
    def has_trees(self) -> bool:
        """Whether the served gap blends gradient-boosted trees (the expensive part of an evaluation)."""
        return bool(self.trees)

    def parts(self, st: dict) -> dict:
        """Everything of a state's prediction but the trees and the calibration (:meth:`serve` finishes it; one
        ``parts`` may be served twice, without and with the trees, as :meth:`predict` would serve each)."""
        typ = st["typ"]
        valid = typ >= 0
        n = valid.sum(1)
        nf = n.astype(np.float64)
        C = len(typ)
        mu = np.full((C, 3), np.nan)
        spread = np.full((C, 3), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            E = st["Oe"].sum(2) / nf[None, :]  # (Me, C) per site
            ce = (st["Ece"].sum(1) + self.c_charge * self._net_charge(typ)) / nf
            E = np.where(n[None, :] > 0, E, np.nan)
            ce = np.where(n > 0, ce, np.nan)
        bi = np.clip(band_of(n), 0, len(BANDS) - 1)
        bc, bg = self.blend[bi], self.blend_gap[bi]
        mu[:, 0] = bc * ce + (1 - bc) * E.mean(0)
        spread[:, 0] = np.sqrt(np.mean((np.concatenate([E, ce[None]]) - mu[None, :, 0]) ** 2, axis=0))
        Og = st["Og"]  # (Mg, C, K, 3)
        hg = self.net_g.host_gap[:, None]  # (Mg, 1)
        lv = np.where(valid[None], -Og[..., 1] / TAU, -np.inf)  # (Mg, C, K)
        mx = np.maximum(-hg / TAU, lv.max(axis=2))  # (Mg, C)
        s = np.exp(-hg / TAU - mx) + np.exp(lv - mx[..., None]).sum(2)
        G = np.logaddexp(0.0, -TAU * (np.log(s) + mx) * 10.0) / 10.0
        G = np.minimum(G, hg)
        M = np.logaddexp(0.0, Og[..., 2].sum(2))
        mu[:, 1], spread[:, 1] = G.mean(0), G.std(0)
        bm = self.blend_mag[bi]  # the moment, shrunk toward the training median as HostModel serves it
        mu[:, 2], spread[:, 2] = bm * M.mean(0) + (1 - bm) * self.mag_center, bm * M.std(0)
        return {"st": st, "n": n, "mu": mu, "spread": spread, "G": G, "bg": bg}

    @property
    def gap_std_without_trees(self) -> bool:
        """Whether the served gap std is the same whatever the trees give (its calibration ignores the ensemble's
        spread, one std per density band): then :meth:`serve` without the trees serves the gap std exactly."""
        return bool(self.cal.spread_weight[1] == 0)

    def gap_mean_bounds(self, parts: dict) -> tuple[np.ndarray, np.ndarray]:
        """``(C,)`` lowest and highest gap mean :meth:`serve` can give a state of :meth:`parts`, whatever its trees
        give: each forest's output is clipped to ``[0, host gap]`` and blended with weight ``bg`` (eV; equal where a
        chain's band gives the trees no weight)."""
        G, bg = parts["G"].mean(0), parts["bg"]
        lo = np.clip((1 - bg) * G, 0.0, self.host_gap)
        hi = np.clip(bg * self.host_gap + (1 - bg) * G, 0.0, self.host_gap)
        return lo, hi

    def serve(self, parts: dict, n_targets: int = 2, trees: bool | np.ndarray = True) -> tuple[np.ndarray, np.ndarray]:
        """``(C, n_targets)`` mean and std from :meth:`parts`, the trees on the chains ``trees`` (:meth:`predict`)."""
        st, n, G, bg = parts["st"], parts["n"], parts["G"], parts["bg"]
        mu, spread = parts["mu"].copy(), parts["spread"].copy()
        rows = np.flatnonzero(np.broadcast_to(np.asarray(trees, bool), n.shape)) if self.trees else np.zeros(0, np.int64)
        if len(rows):
            sub = {"typ": st["typ"][rows], "Fe": st["Fe"][rows]}
            if available():  # the compiled walk on the columns it reads, built alone
                Tg = walk(self._tree_rows(sub), self._tree_stack.layout(), np.asarray(self._tree_stack.baselines), gathered=True)
            else:
                Tg = self._tree_stack.predict(self._tree_features(sub), compiled=False)
            Tg = np.clip(Tg, 0.0, self.host_gap)  # all forests, one walk
            Gr = G[:, rows]
            mu[rows, 1] = np.clip(bg[rows] * Tg.mean(0) + (1 - bg[rows]) * Gr.mean(0), 0.0, self.host_gap)
            spread[rows, 1] = np.sqrt(np.mean((np.concatenate([Gr, Tg]) - mu[None, rows, 1]) ** 2, axis=0))
        b = band_of(n)
        bb = np.clip(b, 0, len(BANDS) - 1)
        std = np.full_like(mu, np.nan)
        ok = np.zeros(mu.shape, bool)
        in_range = (n >= self.kmin) & (n <= self.kmax)
        for j in range(3):
            std[:, j] = self.cal.std(spread[:, j], bb, j)
            ok[:, j] = self.cal_validated[j, bb] & in_range & (b >= 0)
        std[:, 1] = np.where(ok[:, 1] | (b < 0), std[:, 1], np.maximum(std[:, 1], self.host_gap / np.sqrt(12.0)))
        mu[:, ~self.known] = np.nan
        std[:, ~self.known] = np.nan
        return mu[:, :n_targets], std[:, :n_targets]

    def _used_columns(self, p1: int) -> dict:
        """How to build only the tree-row columns some split reads (the compiled walk's ``columns``): of the full row
        ``[X (p1), X / n (p1), n]`` (:meth:`_tree_features`), each read column's part (0, 1, 2) and its column of
        ``X``; ``X``'s columns are the type counts, the pair counts (``_tree_src``) and the net charge."""
        cols = self._tree_stack.layout().columns
        part = np.minimum(cols // p1, 2)
        j = np.where(part < 2, cols - part * p1, 0)
        need = np.unique(j[part < 2])
        T, nc = self.T, len(self._ce_cols)
        src = np.where((need >= T) & (need < nc), self._tree_src[np.clip(need - T, 0, len(self._tree_src) - 1)], -1)
        ps = src[src >= 0]
        return {"part": part, "at": np.searchsorted(need, j), "need": need, "types": np.flatnonzero(need < T),
                "pairs": np.flatnonzero(src >= 0), "pair_type": ps // self.env_e.D, "pair_col": ps % self.env_e.D,
                "charge": np.flatnonzero(need == nc)}

    def _tree_rows(self, st: dict) -> np.ndarray:
        """``(C, p_used)`` only the columns of :meth:`_tree_features` the trees read, in the compiled walk's order (the
        same floats as those columns of the full rows)."""
        u = self._tree_used
        typ = st["typ"]
        T = self.T
        valid = typ >= 0
        onehot = (typ[:, :, None] == np.arange(T)[None, None, :]) & valid[:, :, None]  # (C, K, T)
        counts = onehot.sum(1)
        X = np.zeros((len(typ), len(u["need"])))
        X[:, u["types"]] = counts[:, u["need"][u["types"]]]
        if len(u["pairs"]):  # each read pair count: its column of the rows of defects of its first type, summed
            rows = st["Fe"][:, :, u["pair_col"]].astype(np.float64)  # (C, K, pairs) integer counts: exact sums
            X[:, u["pairs"]] = (onehot[:, :, u["pair_type"]] * rows).sum(1)
        if len(u["charge"]):
            X[:, u["charge"]] = self._net_charge(typ)[:, None]
        n = np.maximum(counts.astype(np.float64).sum(1), 1.0)
        Z = np.empty((len(typ), len(u["part"])))
        for p in (0, 1, 2):
            k = np.flatnonzero(u["part"] == p)
            if len(k):
                Z[:, k] = X[:, u["at"][k]] if p == 0 else (X[:, u["at"][k]] / n[:, None] if p == 1 else n[:, None])
        return Z

    def _tree_features(self, st: dict) -> np.ndarray:
        """The gap trees' inputs (:meth:`HostModel._tree_features`) from the slot rows: the expansion's cluster
        counts are the energy rows summed by the defect's own type."""
        typ, Fe = st["typ"], st["Fe"].astype(np.float64)
        T, env = self.T, self.env_e
        valid = typ >= 0
        onehot = (typ[:, :, None] == np.arange(T)[None, None, :]) & valid[:, :, None]  # (C, K, T)
        sums = np.einsum("ckt,ckd->ctd", onehot.astype(np.float64), Fe).reshape(len(typ), T * env.D)  # (C, T_own D)
        X = np.zeros((len(typ), len(self._ce_cols)))
        X[:, :T] = onehot.sum(1)
        src = self._tree_src
        X[:, T + np.flatnonzero(src >= 0)] = sums[:, src[src >= 0]]
        if self.model.ce.charge:
            X = np.concatenate([X, self._net_charge(typ)[:, None]], axis=1)
        n = np.maximum(X[:, :T].sum(1), 1.0)
        return np.concatenate([X, X / n[:, None], n[:, None]], axis=1)


def served_host_model(model, min_defects: int):
    """The :class:`HostModel` that serves every configuration of at least ``min_defects`` defects of ``model`` (a
    :class:`~invdesign.predict.host_serving.HostPredictor`, or a predictor whose high-density host model takes
    over from :data:`~invdesign.predict.serving.HD_MIN` defects), else None."""
    from invdesign.predict.host_serving import HostPredictor
    from invdesign.predict.low_density import LD_MAX
    from invdesign.predict.serving import HD_MIN, Predictor

    if isinstance(model, HostPredictor):
        # the low-density heads (cluster counts of the whole cell) have no per-move update
        return model.model if model.model.ld is None or min_defects > LD_MAX else None
    if isinstance(model, Predictor) and min_defects >= HD_MIN:
        return model.high_density_model()
    return None
