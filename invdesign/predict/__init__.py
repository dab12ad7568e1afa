"""Property heads, invariant features, the seed's baselines and the benchmark table.

``invdesign.predict`` is both this package and the public function :func:`invdesign.api.predict`
(``from invdesign import predict; predict(paths)``): calling the package calls the function.
"""

from __future__ import annotations

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from invdesign.api import predict

        return predict(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
