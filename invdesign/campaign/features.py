"""Features the campaign GP works on: the model's invariant embedding, or exact pair features.

Both are functions of the canonical class only (invariant under the host's symmetry group):

- :class:`ModelFeatures`: the packaged (or a given) model's 12-D embedding ``z`` and its
  property predictions as the GP prior mean (warm start).
- :class:`PairFeatures`: defect-type counts plus, for every unordered pair of defect types, the
  sum of inverse minimum-image distances (1/Angstrom) between defects of those types. Exactly
  invariant, needs no model; used when a campaign runs without one.
"""

from __future__ import annotations

import numpy as np

from invdesign.lattice.enumerate import compositions
from invdesign.lattice.host import HostLattice


class PairFeatures:
    """``(N, T + T(T+1)/2)`` exact invariant features of configurations (no prior)."""

    name = "pairs"
    has_prior = False

    def __init__(self, host: HostLattice) -> None:
        self.host = host
        T = len(host.defect_types)
        self.pairs = [(a, b) for a in range(T) for b in range(a, T)]

    @property
    def dim(self) -> int:
        return len(self.host.defect_types) + len(self.pairs)

    def __call__(self, occ: np.ndarray) -> np.ndarray:
        """Features of ``(N, n_sites)`` uint8 occupancies."""
        occ = np.asarray(occ)
        host = self.host
        comp = compositions(occ, host).astype(np.float64)
        code_to_type = {dt: t for t, dt in enumerate(host.defect_types)}
        inv = 1.0 / np.where(host.min_image_distance > 0, host.min_image_distance, np.inf)
        out = np.zeros((len(occ), len(self.pairs)))
        pair_index = {p: k for k, p in enumerate(self.pairs)}
        sub = host.sublattice
        for n, row in enumerate(occ):
            sites = np.flatnonzero(row != host.host_code)
            types = [code_to_type[(int(sub[s]), int(row[s]))] for s in sites]
            for i in range(len(sites)):
                for j in range(i + 1, len(sites)):
                    a, b = sorted((types[i], types[j]))
                    out[n, pair_index[(a, b)]] += inv[sites[i], sites[j]]
        return np.hstack([comp, out])

    def prior(self, occ: np.ndarray) -> None:
        return None


class ModelFeatures:
    """The model's invariant embedding (``(N, d)``, d = 12 by default) and its predictions as prior."""

    name = "model"
    has_prior = True

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, occ: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.embed(np.asarray(occ, dtype=np.uint8)), dtype=np.float64)

    def prior(self, occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Prior mean and std ``(N, 2)`` in eV (TARGETS order) from the model's best head."""
        mean, std = self.model.predict(np.asarray(occ, dtype=np.uint8))
        return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
