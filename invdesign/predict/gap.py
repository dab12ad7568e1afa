"""Bounded band-gap head: an ensemble of gradient-boosted trees in a logit space, conformal std.

The HOMO-LUMO gap of a defect configuration is a mixture: configurations whose defects leave the
host gap free (W_Mo, Se_S: ~1.80 eV, the 8x8 MoS2 supercell's own gap) and configurations with
in-gap states (V_S: ~1.15 eV, V_S pairs down to ~0.65 eV, V_Mo: ~0.1-0.55 eV). Trees on exact
cluster counts (:func:`invdesign.predict.features.cluster_counts`, so exactly invariant) follow
such thresholds far better than smooth regressors (benchmarks/results/gap.md).

Physical bound by construction: the trees regress ``u = logit(g / eg_max)`` and the served gap is
``eg_max * sigmoid(u)``, strictly inside ``(0, eg_max)`` for any input, at any density.
``eg_max`` (eV) is the widest host gap of the allowed chemistries (:data:`EG_MAX`).

Mean: ``members`` models per loss (squared and absolute error), each on a bootstrap resample when
``members > 1``, else on the whole training set, plus ``extra`` members with their own settings, all
averaged in logit space. :data:`invdesign.model.DEFAULT_CONFIG` ships three bootstrap members per loss
(squared and absolute error; the two losses together are more accurate than either) plus one model per
loss on the whole train split (``extra``): a model on all rows is more accurate than one on a bootstrap
resample, while the bootstrap members' spread is the sharper uncertainty signal (two full-set models
alone: same MAE, +-2 std intervals 35 -> 48 meV); the eight together were best on validation. An ``extra``
member may also read the shortest pair distances per defect-type pair
(:func:`invdesign.predict.features.pair_distances`, a function of the counts, so exactly invariant);
it improves validation MAE but extrapolates badly to compositions absent from training, so it is not
shipped (benchmarks/results/gap_tune_study.md; the loss ensemble: gap_blend_study.md). Every member
(``anchor``; DEFAULT_CONFIG: V_Mo) also reads the anchor type's two nearest pairs, jointly over the partner's
type (:func:`invdesign.predict.features.anchor_neighbours`): the V_Mo's neighbours pick its in-gap level
(5-split val 5.19 -> 4.91, test 5.25 -> 5.18 meV, +-2 std 35 -> 30 meV; benchmarks/results/gap_round_d.md).

Uncertainty: the spread of all those models
``s(x)`` (eV) is turned into a calibrated std by split-conformal calibration on validation,
``std = c_b (s(x) + s0)`` with ``c_b`` the conformal 95.45 % quantile of ``|g - mean| / (s + s0)``
divided by 2 (so mean +- 2 std covers 95.45 % of validation), per regime ``b`` of the predicted
gap (:data:`BANDS`: deep in-gap states, shallow in-gap states, host gap; a Mondrian conformal
predictor) where validation has enough rows in it, else pooled. ``s0`` is the median validation
spread. The regime, not the defect count, sets the error scale here (99 % of the 2DMD
configurations have 3 defects, so per-count calibration is pooled calibration).

Trees are stored as plain arrays (``state()``) and evaluated in numpy, so a model file loads with
``torch.load(weights_only=True)`` and needs no pickled scikit-learn objects. Up to
:data:`NUMPY_ROWS` rows are evaluated in plain numpy (no scikit-learn import, which costs seconds),
more with scikit-learn's compiled predictor; both add the trees in the same order, so they agree
bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

#: Upper bound of a served gap (eV): the widest host gap among the allowed chemistries
#: (Mo/W x S/Se). In the 2DMD data the 8x8 MoS2 host with only isovalent substitutions has
#: 1.80-1.81 eV (PBE); monolayer WS2, the widest of MoS2/WS2/MoSe2/WSe2, has a PBE gap about
#: 0.1-0.15 eV above MoS2's (e.g. Ramasubramaniam, PRB 86, 115409 (2012); C2DB). 2.0 eV bounds both.
EG_MAX = 2.0

#: Two-sided Gaussian mass within 2 std; the conformal level.
LEVEL = 0.9545
MIN_GROUP = 30  # validation rows needed to calibrate one regime on its own
#: Edges (eV) of the predicted-gap regimes calibrated separately: V_Mo-like deep states below 0.6,
#: V_S-like states up to 1.5, the host gap above.
BANDS = (0.6, 1.5)
#: Up to this many rows the trees are walked in numpy: cheaper than importing scikit-learn's
#: compiled predictor (1-4 s on 2 shared cores); numpy costs about 1 ms per row and member.
NUMPY_ROWS = 512


def use_compiled(n_rows: int) -> bool:
    """Whether to walk ``n_rows`` rows with the compiled kernel (:mod:`invdesign.predict.tree_walk`): where it is loaded
    already, or for more than :data:`NUMPY_ROWS` rows where it is available (loading it costs about half a second,
    more than numpy spends on a few rows). Every walk gives the same floats."""
    from invdesign.predict import tree_walk

    return tree_walk.loaded() or (n_rows > NUMPY_ROWS and tree_walk.available())


def stack_of(owner, forests: list) -> ForestStack:
    """The :class:`ForestStack` of ``forests``, kept on ``owner`` (``_stack``, left out of prediction digests) and
    made again when its list of forests is replaced."""
    st = owner.__dict__.get("_stack")
    if st is None or st[0] is not forests:  # (the forests it stacks, the stack)
        st = owner._stack = (forests, ForestStack(forests))
    return st[1]


def _logit(g: np.ndarray, eg_max: float) -> np.ndarray:
    p = np.clip(np.asarray(g, dtype=np.float64) / eg_max, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def _sigmoid(u: np.ndarray, eg_max: float) -> np.ndarray:
    return eg_max / (1.0 + np.exp(-np.asarray(u, dtype=np.float64)))


class _Forest:
    """Flattened additive trees of one boosted model: ``baseline + sum_t leaf_t(x)``."""

    FIELDS = ("feature", "threshold", "left", "right", "leaf", "value")

    def __init__(self, feature, threshold, left, right, leaf, value, roots, baseline: float) -> None:
        self.feature = np.asarray(feature, dtype=np.int64)
        self.threshold = np.asarray(threshold, dtype=np.float64)
        self.left = np.asarray(left, dtype=np.int64)
        self.right = np.asarray(right, dtype=np.int64)
        self.leaf = np.asarray(leaf, dtype=bool)
        self.value = np.asarray(value, dtype=np.float64)
        self.roots = np.asarray(roots, dtype=np.int64)
        self.baseline = float(baseline)

    @classmethod
    def from_sklearn(cls, est) -> _Forest:
        """From a fitted ``HistGradientBoostingRegressor`` (numerical features, no missing values)."""
        parts, roots, off = [], [], 0
        for (pred,) in est._predictors:
            nd = pred.nodes
            parts.append((nd["feature_idx"], nd["num_threshold"], nd["left"].astype(np.int64) + off,
                          nd["right"].astype(np.int64) + off, nd["is_leaf"].astype(bool), nd["value"]))
            roots.append(off)
            off += len(nd)
        cat = [np.concatenate([p[i] for p in parts]) for i in range(6)]
        return cls(*cat, roots=np.array(roots), baseline=float(np.ravel(est._baseline_prediction)[0]))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """``(N, p)`` features -> ``(N,)`` raw (transformed-space) predictions.

        The compiled walk (numba) where :func:`use_compiled`; else up to :data:`NUMPY_ROWS` rows
        :meth:`predict_numpy`, more scikit-learn's compiled tree predictor on the stored arrays (where numba
        is missing); all add the same leaves in the same order, so the same floats.
        """
        if use_compiled(len(X)):
            return self._one_stack().predict(X, compiled=True)[0]
        if len(X) <= NUMPY_ROWS:
            return self.predict_numpy(X)
        trees = self._compiled()
        if trees is None:
            return self.predict_numpy(X)
        X = np.ascontiguousarray(np.asarray(X)[:, self._used], dtype=np.float64)  # only the columns the trees read
        cat = np.zeros((0, 8), dtype=np.uint32)
        fmap = np.zeros(X.shape[1], dtype=np.uint32)
        out = np.full(len(X), self.baseline)
        for t in trees:
            out += t.predict(X, cat, fmap, 1)
        return out

    def _compiled(self) -> list | None:
        if getattr(self, "_trees", None) is None:
            try:
                from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
                from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

                ends = [*self.roots[1:], len(self.feature)]
                self._used = np.unique(self.feature[~self.leaf])
                local = np.searchsorted(self._used, self.feature)  # column numbers within X[:, used]
                # every tree's node records in one array (node links relative to the tree's root), each tree a view
                root = np.repeat(self.roots, np.diff([*self.roots, len(self.feature)]))
                nd = np.zeros(len(self.feature), dtype=PREDICTOR_RECORD_DTYPE)
                nd["value"], nd["feature_idx"], nd["num_threshold"] = self.value, local, self.threshold
                nd["left"] = np.where(self.leaf, 0, self.left - root)
                nd["right"] = np.where(self.leaf, 0, self.right - root)
                nd["is_leaf"] = self.leaf
                none = np.zeros((0, 8), np.uint32)
                self._trees = [TreePredictor(nd[r:e], none, none) for r, e in zip(self.roots, ends)]
            except (ImportError, AttributeError, TypeError, ValueError):  # a scikit-learn without these internals
                self._trees = False
        return self._trees or None

    def predict_numpy(self, X: np.ndarray) -> np.ndarray:
        """:meth:`predict` in plain numpy (all trees walked together, level by level; the leaves are added
        tree after tree onto the baseline, as the compiled predictor does): a one-forest :class:`ForestStack`."""
        return self._one_stack().predict(X, compiled=False)[0]

    def _one_stack(self) -> ForestStack:
        stack = self.__dict__.get("_stack")
        if stack is None:
            stack = self.__dict__["_stack"] = ForestStack([self])
        return stack

    def state(self) -> dict:
        import torch

        st = {k: torch.as_tensor(getattr(self, k)) for k in self.FIELDS}
        st["roots"] = torch.as_tensor(self.roots)
        st["baseline"] = self.baseline
        return st

    @classmethod
    def from_state(cls, st: dict) -> _Forest:
        return cls(*(st[k].numpy() for k in cls.FIELDS), roots=st["roots"].numpy(), baseline=st["baseline"])


class ForestStack:
    """Several forests (:class:`_Forest`) evaluated together in numpy: ``predict(X)`` equals
    ``np.stack([f.predict_numpy(X) for f in forests])`` bit for bit, a few times faster on few rows (an annealing
    step: 1-64 rows through 8 forests of 400 trees).

    Every (row, tree) pair walks down from its root, the pairs not yet at a leaf advancing one level per pass
    (``x <= threshold`` goes left, as in :meth:`_Forest.predict_numpy`); the leaves are then summed per forest onto its
    baseline tree after tree (``np.cumsum`` along the trees: the same sequential sum), so the floats are the same.
    """

    def __init__(self, forests) -> None:
        forests = list(forests)
        offsets = np.cumsum([0] + [len(f.feature) for f in forests])[:-1]
        self.feature = np.concatenate([f.feature for f in forests]).astype(np.intp) if forests else np.zeros(0, np.intp)
        self.threshold = np.concatenate([f.threshold for f in forests]) if forests else np.zeros(0)
        self.left = np.concatenate([f.left + o for f, o in zip(forests, offsets)]).astype(np.intp) if forests else np.zeros(0, np.intp)
        self.right = np.concatenate([f.right + o for f, o in zip(forests, offsets)]).astype(np.intp) if forests else np.zeros(0, np.intp)
        self.leaf = np.concatenate([f.leaf for f in forests]) if forests else np.zeros(0, bool)
        self.value = np.concatenate([f.value for f in forests]) if forests else np.zeros(0)
        self.roots = np.concatenate([f.roots + o for f, o in zip(forests, offsets)]).astype(np.intp) if forests else np.zeros(0, np.intp)
        self.counts = [len(f.roots) for f in forests]
        self.baselines = [f.baseline for f in forests]

    def layout(self):
        """The forests re-laid for the compiled walk (:class:`invdesign.predict.tree_walk.Layout`), made once."""
        if "_layout" not in self.__dict__:
            from invdesign.predict.tree_walk import Layout

            self._layout = Layout.make(self.feature, self.threshold, self.left, self.right, self.leaf, self.value,
                                       self.roots, np.repeat(np.arange(len(self.counts)), self.counts))
        return self._layout

    def predict(self, X: np.ndarray, chunk: int = 1 << 21, compiled: bool | None = None) -> np.ndarray:
        """``(N, p)`` features -> ``(M, N)`` every forest's raw prediction (as :meth:`_Forest.predict_numpy`).

        ``compiled``: walk in numba (:func:`invdesign.predict.tree_walk.walk`, the same floats, 5-10x faster) where
        it is available; False: the numpy walk; None: as :func:`use_compiled` decides for ``N`` rows."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if compiled is None:
            compiled = use_compiled(len(X))
        if compiled and len(self.roots):
            from invdesign.predict.tree_walk import walk

            out = walk(X, self.layout(), np.asarray(self.baselines, np.float64))
            if out is not None:
                return out
        N, p = X.shape
        T = len(self.roots)
        out = np.empty((len(self.counts), N))
        step = max(1, chunk // max(T, 1))
        for s in range(0, N, step):
            x = X[s : s + step]
            n = len(x)
            node = np.tile(self.roots, n)  # (n * T,) row-major: row r's trees at r * T ...
            row_at = np.repeat(np.arange(n) * p, T)
            flat = x.ravel()
            act = np.flatnonzero(~self.leaf[node])
            while len(act):
                cur = node[act]
                nxt = np.where(flat[row_at[act] + self.feature[cur]] <= self.threshold[cur], self.left[cur], self.right[cur])
                node[act] = nxt
                act = act[~self.leaf[nxt]]
            vals = self.value[node].reshape(n, T)
            t0 = 0
            for m, (c, b) in enumerate(zip(self.counts, self.baselines)):
                seq = np.empty((n, c + 1))
                seq[:, 0] = b
                seq[:, 1:] = vals[:, t0 : t0 + c]
                out[m, s : s + n] = np.cumsum(seq, axis=1)[:, -1]
                t0 += c
        return out


class BoundedGapHead:
    """Gradient-boosted trees on cluster counts, averaged, bounded to ``(0, eg_max)``, conformal std.

    Args:
        eg_max: upper bound of the gap (eV); default :data:`EG_MAX`.
        members: models per loss (bootstrap resamples when > 1; the spread of all members is the raw
            uncertainty).
        max_iter, learning_rate, max_leaf_nodes, min_samples_leaf: the boosted trees' settings
            (scikit-learn ``HistGradientBoostingRegressor``; squared error in logit space).
        seed: seed of the resamples and of the trees.
        losses: the trees' losses in logit space (``squared_error``, ``absolute_error``); ``members``
            models are fitted per loss and all are averaged (an ensemble of the two losses is more
            accurate than either: benchmarks/results/gap_blend_study.md).
        bootstrap: members fitted on bootstrap resamples (else all on the full training set, their
            diversity then coming from ``max_features < 1``, the share of features tried per split).
        l2_regularization: the trees' L2 penalty on leaf values.
        extra: further members, each a dict overriding some of ``loss``, ``bootstrap``,
            ``max_leaf_nodes``, ``min_samples_leaf``, ``l2_regularization``, ``max_features``,
            ``learning_rate``, ``max_iter``, ``distances``, ``anchor`` (e.g. ``{"loss": "absolute_error", "bootstrap": False}``:
            one model on the full training set); averaged with the others in logit space. Models of
            different settings err differently, so the average gains (benchmarks/results/gap_tune_study.md).
            ``distances: True``: the member also sees the shortest pair distances per defect-type pair
            (:func:`invdesign.predict.features.pair_distances`, read off the counts, so exactly invariant);
            needs ``n_types`` and ``orbit_distance``.
            ``anchor: a`` (a defect-type index): the member also sees the two shortest pairs that involve a
            defect of type ``a``, jointly over the partner's type (distances and one-hot partner types,
            :func:`invdesign.predict.features.anchor_neighbours`; a function of the counts, so exactly
            invariant): for ``a`` = V_Mo the three-body environment that picks its in-gap level; needs
            ``n_types`` and ``orbit_distance``.
        n_types, orbit_distance: the host's defect-type count and ``(n_pair_orbits,)`` pair-orbit distances
            (A; :func:`invdesign.predict.features.orbit_distances`), for members with ``distances``.
        anchor: a defect-type index (None: off): every member reads the counts plus this type's two nearest
            pairs (:func:`invdesign.predict.features.anchor_neighbours`; exactly invariant). With V_Mo the
            three-body rule that picks the V_Mo's in-gap level is one or two cuts
            (benchmarks/results/gap_round_d.md); needs ``n_types`` and ``orbit_distance``.
        refit_with_val: after the std is calibrated on validation (with members that never saw it),
            refit every member, same settings and seeds, on train + validation and serve those. The
            calibrated scale is kept: members fitted on more data err less on new data, so it stays
            conservative for them (coverage measured on held-out test rows: benchmarks/results/gap.md).
            The validation rows then are training rows of the served head: its MAE on them is no
            longer a held-out figure.
    """

    #: keys an ``extra`` member may set
    EXTRA_KEYS = ("loss", "bootstrap", "max_leaf_nodes", "min_samples_leaf", "l2_regularization", "max_features",
                  "learning_rate", "max_iter", "distances", "anchor")

    def __init__(self, eg_max: float = EG_MAX, members: int = 3, max_iter: int = 500, learning_rate: float = 0.1,
                 max_leaf_nodes: int = 31, min_samples_leaf: int = 5, seed: int = 0, losses: tuple[str, ...] | list[str] = ("squared_error",),
                 bootstrap: bool = True, max_features: float = 1.0, l2_regularization: float = 0.0,
                 extra: tuple[dict, ...] | list[dict] = (), refit_with_val: bool = False, n_types: int = 0,
                 orbit_distance: tuple[float, ...] | list[float] | np.ndarray = (), anchor: int | None = None) -> None:
        self.eg_max, self.members, self.max_iter, self.learning_rate = float(eg_max), members, max_iter, learning_rate
        self.losses, self.bootstrap, self.max_features = tuple(losses), bootstrap, max_features
        self.l2_regularization = float(l2_regularization)
        self.extra = tuple(dict(e) for e in extra)
        self.refit_with_val = bool(refit_with_val)
        self.n_types, self.orbit_distance = int(n_types), [float(d) for d in np.asarray(orbit_distance, dtype=np.float64).ravel()]
        self.anchor = None if anchor is None else int(anchor)
        if (anchor is not None or any(e.get("distances") or "anchor" in e for e in self.extra)) and not (self.n_types and self.orbit_distance):
            raise ValueError("gap members with distances or an anchor need n_types and orbit_distance (the host's pair-orbit distances)")
        for e in self.extra:
            bad = set(e) - set(self.EXTRA_KEYS)
            if bad:
                raise ValueError(f"extra gap member settings {sorted(bad)} unknown; allowed: {list(self.EXTRA_KEYS)}")
        for a in [e["anchor"] for e in self.extra if "anchor" in e] + ([] if anchor is None else [anchor]):
            if not (isinstance(a, (int, np.integer)) and 0 <= a < self.n_types):
                raise ValueError(f"gap member anchor {a!r} is not a defect-type index below {self.n_types}")
        self.max_leaf_nodes, self.min_samples_leaf, self.seed = max_leaf_nodes, min_samples_leaf, seed

    def config(self) -> dict:
        return {"eg_max": self.eg_max, "members": self.members, "max_iter": self.max_iter, "learning_rate": self.learning_rate,
                "max_leaf_nodes": self.max_leaf_nodes, "min_samples_leaf": self.min_samples_leaf, "seed": self.seed, "losses": list(self.losses),
                "bootstrap": self.bootstrap, "max_features": self.max_features, "l2_regularization": self.l2_regularization,
                "extra": [dict(e) for e in self.extra], "refit_with_val": self.refit_with_val,
                "n_types": self.n_types, "orbit_distance": list(self.orbit_distance), "anchor": self.anchor}

    def _blocks(self, p: int) -> dict:
        """Column ranges of the derived feature blocks in :meth:`_design` for ``p`` count columns:
        ``{"distances": (start, stop), ("anchor", a): (start, stop), ...}``."""
        T = self.n_types
        out, at = {}, p
        if any(e.get("distances") for e in self.extra):
            out["distances"] = (at, at + T * (T + 1) // 2 * 3)
            at = out["distances"][1]
        for a in sorted({e["anchor"] for e in self.extra if "anchor" in e} | ({self.anchor} if self.anchor is not None else set())):
            out[("anchor", a)] = (at, at + 2 + 2 * T)
            at += 2 + 2 * T
        return out

    def _design(self, X: np.ndarray) -> np.ndarray:
        """``(N, p)`` counts -> the matrix the members read: the counts, then (when a member uses them) the
        pair distances and the anchor blocks (:meth:`_blocks`); members read the counts plus their own block."""
        X = np.asarray(X, dtype=np.float64)
        blocks = self._blocks(X.shape[1])
        if not blocks:
            return X
        from invdesign.predict.features import anchor_neighbours, pair_distances

        od = np.asarray(self.orbit_distance)
        parts = [X]
        for b in blocks:
            parts.append(pair_distances(X, self.n_types, od) if b == "distances" else anchor_neighbours(X, self.n_types, od, b[1]))
        return np.hstack(parts)

    def fit(self, X: np.ndarray, g: np.ndarray, Xv: np.ndarray, gv: np.ndarray, progress=None) -> BoundedGapHead:
        """Fit on ``X (N, p)``, gaps ``g (N,)`` (eV); calibrate the std on ``Xv (Nv, p), gv (Nv,)``.

        ``progress()`` is called once per fitted model (``members * len(losses) + len(extra)``; twice
        that with ``refit_with_val``).
        """
        X, Xv = np.asarray(X, dtype=np.float64), np.asarray(Xv, dtype=np.float64)
        g, gv = np.asarray(g, dtype=np.float64).ravel(), np.asarray(gv, dtype=np.float64).ravel()
        if (g <= 0).any() or (g >= self.eg_max).any():
            raise ValueError(f"training gaps must lie in (0, {self.eg_max}) eV; got {g.min():.4f}..{g.max():.4f}")
        self.forests = self._fit_members(self._design(X), X.shape[1], _logit(g, self.eg_max), progress)
        mean, spread = self.raw(Xv)
        self.s0 = float(np.median(spread)) if len(spread) else 0.0
        self.s0 = self.s0 if self.s0 > 0 else 1e-3  # single member: the std is the band's conformal scale x 1 meV
        score = np.abs(gv - mean) / (spread + self.s0)
        self.scale = _conformal(score) / 2.0
        band = np.digitize(mean, BANDS)
        self.scale_b = np.full(len(BANDS) + 1, self.scale)
        for b in range(len(BANDS) + 1):
            if (band == b).sum() >= MIN_GROUP:
                self.scale_b[b] = _conformal(score[band == b]) / 2.0
        if self.refit_with_val and len(Xv):
            if (gv >= self.eg_max).any():
                raise ValueError(f"validation gaps must lie below {self.eg_max} eV to refit on them; got {gv.max():.4f}")
            gall = np.concatenate([g, np.maximum(gv, 1e-4)])
            self.forests = self._fit_members(self._design(np.concatenate([X, Xv])), X.shape[1], _logit(gall, self.eg_max), progress)
        return self

    def _fit_members(self, X: np.ndarray, p: int, u: np.ndarray, progress=None) -> list[_Forest]:
        """All members (``members`` per loss, then ``extra``) on the design matrix ``X (N, p [+ d])``
        (:meth:`_design`; the first ``p`` columns are the counts), logit targets ``u (N,)``."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        rng = np.random.default_rng(self.seed)
        varying = X.std(0) > 0  # constant columns cost binning time and carry nothing
        blocks = self._blocks(p)
        shared_cols = np.flatnonzero(varying[:p])
        if self.anchor is not None:  # every member reads the head's anchor block too
            a, b = blocks[("anchor", self.anchor)]
            shared_cols = np.concatenate([shared_cols, np.arange(a, b)[varying[a:b]]])
        base = {"max_features": self.max_features, "learning_rate": self.learning_rate, "max_iter": self.max_iter,
                "max_leaf_nodes": self.max_leaf_nodes, "min_samples_leaf": self.min_samples_leaf,
                "l2_regularization": self.l2_regularization}
        runs = [({**base, "loss": loss}, self.members > 1 and self.bootstrap, self.seed * 1000 + 100 * li + m, False)
                for li, loss in enumerate(self.losses) for m in range(self.members)]
        for i, e in enumerate(self.extra):
            e = {"loss": "squared_error", **e}
            own = [blocks["distances"]] if e.get("distances") else []
            own += [blocks[("anchor", e["anchor"])]] if "anchor" in e and e["anchor"] != self.anchor else []
            cols = np.concatenate([shared_cols, *[np.arange(a, b)[varying[a:b]] for a, b in own]])
            runs.append(({**base, **{k: v for k, v in e.items() if k not in ("bootstrap", "distances", "anchor")}},
                         bool(e.get("bootstrap", False)), self.seed * 1000 + 500 + i, cols))
        forests = []
        for settings, boot, rs, cols in runs:
            cols = shared_cols if cols is False else cols
            rows = rng.integers(0, len(X), len(X)) if boot else np.arange(len(X))
            est = HistGradientBoostingRegressor(**settings, early_stopping=False, random_state=rs).fit(X[rows][:, cols], u[rows])
            forest = _Forest.from_sklearn(est)
            forest.feature = cols[forest.feature]  # back to the caller's column numbers
            forests.append(forest)
            if progress is not None:
                progress()
        return forests

    def raw(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N,)`` mean gap (eV; members averaged in logit space) and ``(N,)`` member spread (eV)."""
        X = self._design(X)
        U = self._forests_predict(X)  # (M, N)
        G = _sigmoid(U, self.eg_max)
        spread = G.std(0, ddof=1) if len(self.forests) > 1 else np.zeros(U.shape[1])
        return _sigmoid(U.mean(0), self.eg_max), spread

    def _forests_predict(self, X: np.ndarray) -> np.ndarray:
        """``(M, N)`` every member's raw prediction of the design rows ``X (N, q)``. Many rows (an exhaustive
        screen): each row distinct on the columns the trees read is walked once and the results spread back
        (rows equal there take the same paths, so the same floats)."""
        if not self.forests:
            return np.zeros((0, len(X)))
        if use_compiled(len(X)):  # all members in one compiled walk (the same floats as member by member)
            return stack_of(self, self.forests).predict(X, compiled=True)
        if len(X) <= NUMPY_ROWS:
            return np.stack([f.predict(X) for f in self.forests])
        if getattr(self, "_read_cols", None) is None:
            self._read_cols = np.unique(np.concatenate([f.feature[~f.leaf] for f in self.forests]))
        cols = self._read_cols
        Xc = np.ascontiguousarray(X[:, cols])
        _, first, inverse = np.unique(Xc.view(np.dtype((np.void, Xc.dtype.itemsize * Xc.shape[1]))).ravel(),
                                      return_index=True, return_inverse=True)
        if len(first) > 0.9 * len(X):  # hardly any repeats: not worth the gather
            return np.stack([f.predict(X) for f in self.forests])
        Xu = X[first]
        # C order, as np.stack gives: the members' mean then sums in the same order (the same floats)
        return np.ascontiguousarray(np.stack([f.predict(Xu) for f in self.forests])[:, np.ravel(inverse)])

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N,)`` gap mean in ``(0, eg_max)`` and ``(N,)`` calibrated std (eV)."""
        mean, spread = self.raw(X)
        return mean, self.scale_b[np.digitize(mean, BANDS)] * (spread + self.s0)

    def state(self) -> dict:
        import torch

        return {"config": self.config(), "forests": [f.state() for f in self.forests], "scale": float(self.scale),
                "scale_b": torch.as_tensor(self.scale_b), "s0": self.s0}

    @classmethod
    def from_state(cls, st: dict) -> BoundedGapHead:
        h = cls(**st["config"])
        h.forests = [_Forest.from_state(f) for f in st["forests"]]
        h.scale, h.scale_b, h.s0 = float(st["scale"]), st["scale_b"].numpy(), float(st["s0"])
        return h


def _conformal(score: np.ndarray, level: float = LEVEL) -> float:
    """Split-conformal quantile: the ``ceil((n + 1) level)``-th smallest score (the largest when n is small)."""
    score = np.sort(np.asarray(score, dtype=np.float64))
    if not len(score):
        return 1.0
    r = min(len(score), math.ceil((len(score) + 1) * level))
    return float(score[r - 1])


def unvalidated_std(eg_max: float = EG_MAX) -> float:
    """Std (eV) of a gap known only to lie in ``(0, eg_max)``: the uniform distribution's, ``eg_max / sqrt(12)``."""
    return eg_max / math.sqrt(12.0)
