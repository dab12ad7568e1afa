"""The trained encoder evaluated on a larger supercell of its host (12x12, 16x16 from an 8x8 model).

Every input of the encoder is a function of a site pair's translation class (see
:mod:`invdesign.embed.tables`). On a larger cell each ordered pair ``(i, j)`` is mapped onto the
trained cell's pair with the same local geometry (:class:`invdesign.lattice.transfer.CellMap`:
same sublattices, same unique minimum-image displacement, so the same distance, Fourier features of
the displacement, and heights) and reads that pair's table rows. Pairs the trained cell cannot
represent (separations beyond about half the trained cell, or on its boundary where two images
tie) contribute nothing: no pair term, and no three-body term with such a leg (as with the
encoder's triple cutoff). The result:

- is exactly invariant under every symmetry of the big cell (each term is a function of the image
  pair's translation class in the big cell, and the set of pairs beyond the range is invariant);
- equals the trained cell's embedding of the same local cluster whenever all its pairs are within
  the range (same terms; float64 round-off, ~1e-15);
- is a local descriptor: configurations that differ only in how far-apart clusters are placed share
  an embedding (canonical keys still tell them apart exactly).
"""

from __future__ import annotations

import numpy as np
import torch

from invdesign.embed.geometry import point_op_representatives
from invdesign.embed.tables import EncoderTables, basis_index, encoder_tables
from invdesign.lattice.host import HostLattice
from invdesign.lattice.transfer import cell_map

FAR = 1e9  # Angstrom: the "distance" of a pair beyond the trained range (never within a cutoff)


class TransferredTables(EncoderTables):
    """:class:`EncoderTables` of an encoder trained on ``small``, evaluated on the larger ``big`` cell."""

    def __init__(self, model, small: HostLattice, big: HostLattice) -> None:  # noqa: D107 (no super().__init__: tables are the small cell's)
        base = encoder_tables(model, small)
        cm = cell_map(big, small)
        self.model, self.host, self.T = model, big, base.T
        self.cell_map = cm
        self.ops = point_op_representatives(big)
        self.img = big.perms[self.ops].astype(np.int64)
        self.basis = basis_index(big)
        if not np.array_equal(np.unique(self.basis), np.unique(base.basis)):
            raise ValueError("big and small cells have different unit-cell bases")
        C = base.pair.shape[0]
        cls = np.full((big.n_sites, big.n_sites), C, dtype=np.int64)  # row C: the zero row (beyond the range)
        ok = cm.reach
        cls[ok] = base.cls[cm.small_i[ok], cm.small_j[ok]]
        self.cls = cls
        zero = torch.zeros((1,) + tuple(base.pair.shape[1:]), dtype=base.pair.dtype)
        self.node = base.node
        self.pair = torch.cat([base.pair, zero])
        self.kind, self.W = base.kind, base.W
        self.dist = np.where(ok, big.min_image_distance, FAR)
        if self.kind == "product":  # zero rows: no pair term, no f or g leg, so no three-body term with such a leg
            self.R, self.L = base.R, base.L
            zr = torch.zeros((1,) + tuple(base.tf.shape[1:]), dtype=base.tf.dtype)
            self.tf = torch.cat([base.tf, zr])
            self.tg = torch.cat([base.tg, zr])
            self._stack()
            self.default_cutoff = None
        else:
            self.ta = torch.cat([base.ta, zero])
            self.tb = torch.cat([base.tb, zero])
            self.b1, self.lin2, self.lin3 = base.b1, base.lin2, base.lin3

    #: the sum over triples always skips legs beyond the trained range (their distance is ``FAR``; the
    #: product kind needs no cutoff: its zero rows already drop every term with such a leg)
    default_cutoff = FAR / 2


_CACHE: dict[tuple, tuple[object, TransferredTables]] = {}


def transferred_tables(model, small: HostLattice, big: HostLattice) -> TransferredTables:
    """The cached :class:`TransferredTables` of ``model`` (trained on ``small``) on ``big``."""
    base = encoder_tables(model, small)
    key = (id(model), small.fingerprint, big.fingerprint)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is base:
        return hit[1]
    tab = TransferredTables(model, small, big)
    _CACHE[key] = (base, tab)
    return tab
