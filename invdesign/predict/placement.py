"""Which host a request names, and a model placed on it: shared by the CLI and the Python API.

:func:`resolve_host` (a host lattice from a host name or file and a supercell, or recognised from the
structures), :func:`requested_host` (what a host/supercell request asks of a model, checked before any model
loads) and :func:`place_model` (the model on that host). No CLI here: the commands
(:mod:`invdesign.commands.common`) and :mod:`invdesign.api` both import these. Messages name the CLI's
options (``--supercell``); :mod:`invdesign.api` re-raises them in Python terms (``supercell``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from invdesign.errors import InvdesignError

if TYPE_CHECKING:
    from invdesign.lattice.host import HostLattice


def recognised_host(paths) -> HostLattice | None:
    """The packaged host of the first structure among STRUCTURES ``paths`` (None: none there, or no packaged
    host fits it; the caller then uses its default and the mapping names any misfit file)."""
    from invdesign.data.dataset import recognised_host as recognise_first

    return recognise_first(paths)


def _packaged_names() -> set[str]:
    from invdesign.lattice.hosts import PACKAGED

    return {s.name.lower() for s in PACKAGED} | {a for s in PACKAGED for a in s.aliases}


def resolve_host(host: str | None, supercell: str | None, structures=None) -> HostLattice:
    """Host lattice from a host (``--host``) and a supercell (``--supercell``); with neither, the host recognised
    from ``structures`` (:func:`recognised_host`), else 8x8 MoS2. ``host`` may name a packaged host (``BN``,
    ``GaSe``, ...)."""
    from invdesign.lattice.host import HostLattice
    from invdesign.lattice.hosts import packaged_host, spec

    if host is None and supercell is None and structures:
        found = recognised_host(structures)
        if found is not None:
            return found
    host = host or "builtin:MoS2"
    if host.removeprefix("builtin:").lower() in _packaged_names() and not Path(host).exists():
        name = spec(host).name
        if supercell is None:
            return packaged_host(name)
        from invdesign.limits import check_supercell

        check_supercell(f"builtin:{name}", supercell)
        return HostLattice.from_unit_cell(f"builtin:{name}", supercell)
    supercell = supercell or "8x8"
    if host == "builtin:MoS2" and supercell in ("8x8", "8x8x1"):
        return HostLattice.default()
    from invdesign.limits import check_supercell

    check_supercell(host, supercell)  # before the supercell is built
    if host.endswith(".toml"):
        return HostLattice.from_config(host)
    return HostLattice.from_unit_cell(host, supercell)


def requested_host(host: str | None, supercell: str | None):
    """What a host/supercell request asks for, checked before any model loads: a HostLattice (``host``
    given), the supercell text (only ``supercell``: the model's unit cell), or None (the model's host)."""
    if host is None and supercell is None:
        return None
    if host is None:
        import numpy as np

        from invdesign.lattice.host import _as_matrix
        from invdesign.limits import MAX_SITES

        cells = abs(round(float(np.linalg.det(_as_matrix(supercell).astype(float)))))
        if cells > MAX_SITES:  # every cell holds at least one site: refused before any model loads
            raise InvdesignError(f"supercell {supercell} has {cells:,} cells; at most {MAX_SITES:,} sites fit: lower --supercell")
        return supercell
    from invdesign.lattice.hosts import PACKAGED

    if not host.startswith("builtin:") and not Path(host).exists() and host.lower() not in _packaged_names():
        raise InvdesignError("host unit cell or config not found (or name a packaged host: "
                             f"{', '.join(s.name for s in PACKAGED)})", source=host)
    return resolve_host(host, supercell)


def place_model(model, request):
    """``model`` on the host of :func:`requested_host` (itself on its own host; a larger cell of its
    host: :class:`invdesign.predict.transfer.TransferredModel`)."""
    if request is None:
        return model
    from invdesign.lattice.host import HostLattice
    from invdesign.predict.transfer import on_host

    if isinstance(request, str):
        from invdesign.limits import check_supercell

        check_supercell(model.host.unit_cell, request)
        request = HostLattice.from_unit_cell(model.host.unit_cell, request, model.host.substituents)
    return on_host(model, request)
