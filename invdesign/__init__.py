"""invdesign: generative inverse design of defect configurations in 2D crystals.

The public API mirrors the CLI and loads nothing heavy at import time::

    from invdesign import design, predict, embed, canonical_key, Campaign
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "HostLattice": ("invdesign.lattice.host", "HostLattice"),
    "Configuration": ("invdesign.lattice.config", "Configuration"),
    "canonical_key": ("invdesign.lattice.canonical", "canonical_key"),
    "canonical_keys": ("invdesign.lattice.canonical", "canonical_keys"),
    "enumerate_orbits": ("invdesign.lattice.enumerate", "enumerate_orbits"),
    "load_dataset": ("invdesign.data.dataset", "load_dataset"),
    "map_structures": ("invdesign.data.dataset", "map_structures"),
    "InvdesignError": ("invdesign.errors", "InvdesignError"),
    "embed": ("invdesign.api", "embed"),
    "predict": ("invdesign.api", "predict"),
    "load_model": ("invdesign.model", "load_model"),
    "train_model": ("invdesign.model", "train_model"),
    "design": ("invdesign.api", "design"),
    "decode": ("invdesign.generate.decoder", "decode"),
    "Campaign": ("invdesign.campaign.campaign", "Campaign"),
    "label": ("invdesign.campaign.label", "label"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'invdesign' has no attribute {name!r}")
