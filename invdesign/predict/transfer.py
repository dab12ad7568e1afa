"""A model trained on one supercell, served on a larger supercell of the same host (12x12, 16x16 from 8x8).

The heads read exact cluster counts: defects per type and ordered defect pairs per (type, type,
pair orbit). On a larger cell every defect pair is mapped onto the trained cell's pair with the same
local geometry (:class:`invdesign.lattice.transfer.CellMap`) and counted in that pair's orbit, so
formation energy (per defect site) and gap come from the very same heads and the gap stays inside
the gap head's bounds by construction. Pairs beyond what the trained cell represents (separations
past about half the trained cell) have no trained term: they are left out of the counts, and each
one widens the std by the typical magnitude such long-range terms have in the trained cell
(:func:`far_term_magnitudes`; added linearly over the missing pairs, i.e. as if they were fully
correlated, then in quadrature to the head's std). Every prediction on a larger cell is flagged as
extrapolation (``cell 12x12 larger than trained 8x8; N pair(s) beyond the trained range``): the
trained terms already hold the trained cell's periodic images, so even a compact cluster differs
from its 8x8 value by the finite-size interaction.

:func:`on_host` returns the model itself on its own host (unchanged, byte-identical outputs) and a
:class:`TransferredModel` on a larger cell.
"""

from __future__ import annotations

import numpy as np

from invdesign.errors import InvdesignError
from invdesign.lattice.host import HostLattice
from invdesign.lattice.transfer import CellMap, cell_map, cell_tag, min_images
from invdesign.predict.features import cluster_counts
from invdesign.predict.serving import Predictor, TrainStats

FAR_SHELL = 0.8  # pairs at >= this fraction of the longest separation the trained cell represents make the "far shell"


def mapped_cluster_counts(occ: np.ndarray, cm: CellMap) -> np.ndarray:
    """``(N, n_big)`` uint8 configurations of ``cm.big`` -> ``(N, F_small)`` float32 cluster counts of the
    trained cell ``cm.small`` (pairs beyond the trained range are not counted)."""
    big, small = cm.big, cm.small
    orb = cm.__dict__.get("_orbits")
    if orb is None:
        orb = np.full((big.n_sites, big.n_sites), -1, dtype=np.int64)
        orb[cm.reach] = small.pair_orbits[cm.small_i[cm.reach], cm.small_j[cm.reach]]
        cm.__dict__["_orbits"] = orb
    return cluster_counts(occ, big, orbits=orb, n_orbits=int(small.pair_orbits.max()) + 1)


def _head_means(model: Predictor, X: np.ndarray) -> np.ndarray:
    """``(N, 2)`` what the serving heads give for cluster counts ``X``: formation energy per *cell*, gap (eV)."""
    which = model.serving_heads()
    out = np.zeros((len(X), 2))
    for j, t in enumerate(model.targets[:2]):
        h = which[t]
        if h == "gap_gbt":
            out[:, j] = model.heads["gap_gbt"].predict(X)[0]
        else:
            out[:, j] = model.heads[h].predict(X)[0][:, j]
    return out


def far_term_magnitudes(model: Predictor) -> np.ndarray:
    """``(2,)`` eV: root mean square of what one defect pair in the trained cell's far shell adds to the
    formation energy per cell and to the gap, by the serving heads.

    Far shell: pairs whose (unique) minimum-image separation is at least :data:`FAR_SHELL` of the longest
    the trained cell represents. For each such pair orbit and each pair of defect types its sites allow
    (both ordered columns seen in training), the term is the heads' prediction for the two defects with
    the pair counted minus without it. This is the size of the terms a larger cell's beyond-range pairs
    miss.
    """
    cached = getattr(model, "_far_terms", None)
    if cached is not None:
        return cached
    host = model.host
    _, dist, uniq = min_images(host)
    rep = uniq & ~np.eye(host.n_sites, dtype=bool)
    sel = rep & (dist >= FAR_SHELL * dist[rep].max())
    po = host.pair_orbits
    seen = model.train_stats().seen_clusters
    T = len(host.defect_types)
    npo = int(po.max()) + 1
    rows = []
    for o in np.unique(po[sel]):
        i, j = (int(v[0]) for v in np.nonzero(sel & (po == o)))
        for t1, (s1, c1) in enumerate(host.defect_types):
            for t2, (s2, c2) in enumerate(host.defect_types):
                if host.sublattice[i] != s1 or host.sublattice[j] != s2:
                    continue
                if not (seen[T + (t1 * T + t2) * npo + o] and seen[T + (t2 * T + t1) * npo + po[j, i]]):
                    continue
                occ = host.host_code.copy()
                occ[i], occ[j] = c1, c2
                rows.append(occ)
    if not rows:
        out = np.zeros(2)
    else:
        X = cluster_counts(np.array(rows), host)
        X0 = X.copy()
        X0[:, T:] = 0.0
        d = _head_means(model, X) - _head_means(model, X0)
        out = np.sqrt((d**2).mean(axis=0))
    try:
        model._far_terms = out
    except AttributeError:
        pass
    return out


class TransferredModel(Predictor):
    """A trained model served on a larger supercell ``host`` of its own host (see the module docstring).

    Predicts (means, stds, flags) with numpy only; :meth:`embed` needs the full model's encoder.
    Attributes not listed are not forwarded: what has no meaning on the larger cell is absent.
    """

    def __init__(self, trained: Predictor, host: HostLattice) -> None:
        small = trained.host
        nb, ns = np.diag(np.asarray(host.matrix)), np.diag(np.asarray(small.matrix))
        if (nb[:2] < ns[:2]).any():
            raise InvdesignError(f"host {host.name} is smaller than the trained {small.name}; only larger cells are served")
        self.cell_map = cell_map(host, small)
        self.trained, self.host = trained, host
        self.heads, self.meta = trained.heads, trained.meta
        self._train_occ = None

    # ------------------------------------------------------------------ the Predictor contract
    def train_stats(self) -> TrainStats:
        return self.trained.train_stats()

    def cluster_features(self, occ: np.ndarray) -> np.ndarray:
        return mapped_cluster_counts(occ, self.cell_map)

    def fe_terms(self):
        """The trained model's pair prior (it reads the mapped counts, i.e. the trained cell's columns); no
        high-density correction: it was fitted on the trained cell's densities (defects per site), which a
        larger cell does not share."""
        prior, corr, status = self.trained._derived_fe_terms()  # the 8x8 host model does not serve this cell either
        if corr is not None:
            status = (f"the high-density correction was fitted on {cell_tag(self.trained.host)} cells; "
                      f"not applied on {cell_tag(self.host)}")
        return prior, None, status

    def beyond_pairs(self, occ: np.ndarray) -> np.ndarray:
        """``(N,)`` unordered defect pairs beyond the trained range (no trained term)."""
        return self.cell_map.beyond_pairs(self._check(occ))

    def _inflate(self, occ: np.ndarray, std: np.ndarray, j: int) -> np.ndarray:
        """Std ``(N,)`` of target column ``j`` widened by the beyond-range pairs (per defect site for formation energy)."""
        w = far_term_magnitudes(self.trained)[j]
        extra = self.beyond_pairs(occ) * w
        if j == 0:
            from invdesign.predict.serving import n_defects

            extra = extra / np.maximum(n_defects(occ, self.host), 1)
        return np.sqrt(np.asarray(std, float) ** 2 + extra**2)

    def predict(self, occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std ``(N, 2)`` eV from the trained heads on mapped counts; stds widened (module docstring)."""
        occ = self._check(occ)
        mean, std = super().predict(occ)
        for j in range(std.shape[1]):
            std[:, j] = self._inflate(occ, std[:, j], j)
        return mean, std

    def predict_target(self, occ: np.ndarray, target: str, with_std: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        occ = self._check(occ)
        mean, std = super().predict_target(occ, target, with_std)
        return mean, (self._inflate(occ, std, self.targets.index(target)) if with_std else None)

    def cell_reasons(self, occ: np.ndarray) -> list[str]:
        """Why every configuration on this cell is an extrapolation: ``cell 12x12 larger than trained 8x8; N pair(s)
        beyond the trained range (13.0 A)`` (design's checks prepend it to their own reasons)."""
        head = f"cell {cell_tag(self.host)} larger than trained {cell_tag(self.trained.host)}"
        return [f"{head}; {int(nb)} pair(s) beyond the trained range ({self.cell_map.range_A:.1f} A)"
                for nb in self.beyond_pairs(occ)]

    def extrapolation(self, occ: np.ndarray) -> list[str]:
        """Every configuration is flagged: :meth:`cell_reasons`, then the trained model's own reasons (density,
        composition, unseen clusters)."""
        occ = self._check(occ)
        return [f"{c}; {why}" if why else c for c, why in zip(self.cell_reasons(occ), super().extrapolation(occ))]

    # ------------------------------------------------------------------ what design and campaigns read
    def embed(self, occ: np.ndarray) -> np.ndarray:
        """``(N, n_big)`` -> ``(N, d)`` embeddings by the trained encoder (:mod:`invdesign.embed.transfer`)."""
        enc = getattr(self.trained, "encoder", None)
        if enc is None:
            raise InvdesignError("embedding needs the full model (this one was loaded for predictions only)")
        from invdesign.embed.transfer import transferred_tables

        return transferred_tables(enc, self.trained.host, self.host).embed(self._check(occ))

    @property
    def encoder(self):
        return self.trained.encoder

    @property
    def dim(self) -> int:
        return self.trained.dim

    @property
    def extras(self) -> dict:
        return {}  # the flow and the stored tables are the trained cell's

    @property
    def train_y(self) -> np.ndarray:
        return self.trained.train_y

    @property
    def train_occ(self) -> np.ndarray:
        """The training configurations, each unwrapped into the larger cell (:meth:`CellMap.unwrap`): novelty and
        nearest-known checks then mean "the same local cluster as a training configuration"."""
        if self._train_occ is None:
            self._train_occ = self.cell_map.unwrap(self.trained.train_occ)
        return self._train_occ

    def predict_embedding(self, z: np.ndarray):
        return self.trained.predict_embedding(z)


def on_host(model, host: HostLattice | None):
    """``model`` on ``host``: the model itself on its own host (or ``host=None``), else a :class:`TransferredModel`."""
    if host is None or host.fingerprint == model.host.fingerprint:
        return model
    if isinstance(model, TransferredModel):
        model = model.trained
    return TransferredModel(model, host)
