"""Symmetry-invariant embedding: geometry, encoder, contrastive training, checks, figure.

``invdesign.embed`` is both this package and the public function :func:`invdesign.api.embed`
(``from invdesign import embed; embed(paths)``): calling the package calls the function.
"""

from __future__ import annotations

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from invdesign.api import embed

        return embed(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
