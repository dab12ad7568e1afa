"""The target window: one box in property space, used by design and by campaigns.

``Window(lo, hi)`` holds ``lo[i] <= y_i <= hi[i]`` eV for each of :data:`TARGETS`
(``formation_energy_per_site``, ``homo_lumo_gap``); targets the user did not constrain are
``(-inf, inf)``. Design ranks by :meth:`Window.p_in` (Gaussian predictions) and
:meth:`Window.distance`; campaigns count :meth:`Window.hits` and plot :meth:`Window.score`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from invdesign.data.dataset import TARGETS
from invdesign.errors import InvdesignError

MAX_BOUND = 1e3  # eV: a window bound beyond this is no property of a defect configuration (typo or overflow)
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf"


@dataclass(frozen=True)
class Window:
    """Target window: ``lo[i] <= y_i <= hi[i]`` eV for each of :data:`TARGETS`.

    Targets the user did not constrain are ``(-inf, inf)``.
    """

    lo: tuple[float, ...]
    hi: tuple[float, ...]

    @classmethod
    def from_dict(cls, spec: dict[str, tuple[float, float]]) -> Window:
        """From ``{"formation_energy_per_site": (lo, hi), ...}`` (eV)."""
        if not spec:
            raise InvdesignError(f"give at least one target window, e.g. --target {TARGETS[0]}=LO:HI")
        lo = [-math.inf] * len(TARGETS)
        hi = [math.inf] * len(TARGETS)
        for name, bounds in spec.items():
            if name == "total_mag":
                raise InvdesignError("a total_mag window is not supported yet: windows take " + ", ".join(TARGETS)
                                     + "; on spin-polarised hosts candidates.csv carries total_mag and total_mag_std "
                                     "(Bohr magnetons per cell) to filter on")
            if name not in TARGETS:
                raise InvdesignError(f"unknown target {name!r}; targets are {', '.join(TARGETS)}")
            try:
                a, b = (float(v) for v in bounds)
            except (TypeError, ValueError):
                raise InvdesignError(f"target {name} needs two numbers (LO, HI), got {bounds!r}") from None
            if math.isnan(a) or math.isnan(b):
                raise InvdesignError(f"target {name}: bounds must be numbers")
            if a == math.inf or b == -math.inf:
                raise InvdesignError(f"target {name}: the window {a:g}:{b:g} is empty (LO must be below +inf, HI above -inf); "
                                     "leave a side empty to leave it open")
            if a == -math.inf and b == math.inf:
                raise InvdesignError(f"target {name}: the window -inf:inf constrains nothing; give LO, HI or both (eV)")
            big = next((v for v in (a, b) if math.isfinite(v) and abs(v) > MAX_BOUND), None)
            if big is not None:
                raise InvdesignError(f"target {name}: bound {big:g} eV is beyond +-{MAX_BOUND:g} eV (no defect property "
                                     "is); leave a side empty to leave it open")
            if a > b:
                raise InvdesignError(f"target {name}: LO {a:g} is above HI {b:g}")
            i = TARGETS.index(name)
            lo[i], hi[i] = a, b
        return cls(tuple(lo), tuple(hi))

    @classmethod
    def parse(cls, specs: list[str]) -> Window:
        """From CLI strings ``NAME=LO:HI`` (eV; ``LO`` or ``HI`` may be empty for an open side)."""
        out: dict[str, tuple[float, float]] = {}
        for s in specs or []:
            m = re.fullmatch(rf"\s*([A-Za-z_]\w*)\s*=\s*({_NUM})?\s*:\s*({_NUM})?\s*", s)
            if m is None:
                raise InvdesignError(f"bad --target {s!r}; expected NAME=LO:HI, e.g. {TARGETS[0]}=1.0:1.5")
            name = m.group(1)
            if name in out:
                raise InvdesignError(f"target {name} given twice")
            lo = float(m.group(2)) if m.group(2) else -math.inf
            hi = float(m.group(3)) if m.group(3) else math.inf
            for text, v in ((m.group(2), lo), (m.group(3), hi)):
                if text and math.isinf(v) and "inf" not in text.lower():
                    raise InvdesignError(f"target {name}: {text} overflows a float; give a bound within +-{MAX_BOUND:g} eV")
            out[name] = (lo, hi)
        return cls.from_dict(out)

    @property
    def array(self) -> np.ndarray:
        """``(n_targets, 2)`` [lo, hi] eV."""
        return np.array([self.lo, self.hi], dtype=float).T

    def as_dict(self) -> dict[str, list[float | None]]:
        return {
            n: [None if math.isinf(a) else a, None if math.isinf(b) else b]
            for n, a, b in zip(TARGETS, self.lo, self.hi)
            if not (math.isinf(a) and math.isinf(b))
        }

    def p_in(self, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        """``(N,)`` probability that ``y ~ N(mean, std^2)`` (independent targets) lies in the window."""
        mean = np.asarray(mean, float)
        std = np.maximum(np.asarray(std, float), 1e-9)
        lo, hi = np.array(self.lo), np.array(self.hi)
        p = ndtr((hi - mean) / std) - ndtr((lo - mean) / std)
        return np.clip(p, 0.0, 1.0).prod(axis=1)

    def distance(self, y: np.ndarray) -> np.ndarray:
        """``(N,)`` Euclidean distance (eV) from ``y (N, n_targets)`` to the window (0 inside)."""
        y = np.asarray(y, float)
        gap = np.maximum(np.array(self.lo) - y, 0) + np.maximum(y - np.array(self.hi), 0)
        return np.sqrt((gap**2).sum(axis=1))

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        """``{name: (lo, hi)}`` eV of the constrained targets (open sides are +-inf)."""
        return {n: (a, b) for n, a, b in zip(TARGETS, self.lo, self.hi) if not (math.isinf(a) and math.isinf(b))}

    def hits(self, y: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: every constrained target of ``y (N, n_targets)`` (eV) in its closed interval; NaN never hits."""
        y = np.asarray(y, dtype=float).reshape(-1, len(TARGETS))
        lo, hi = np.array(self.lo), np.array(self.hi)
        with np.errstate(invalid="ignore"):
            inside = (y >= lo) & (y <= hi)
        used = ~(np.isinf(lo) & np.isinf(hi))
        return inside[:, used].all(axis=1)

    def score(self, y: np.ndarray) -> np.ndarray:
        """``(N,)`` minus the distance to the box in units of each window's width (0 inside; NaN where a used target is NaN)."""
        y = np.asarray(y, dtype=float).reshape(-1, len(TARGETS))
        d2 = np.zeros(len(y))
        for name, (lo, hi) in self.bounds.items():
            v = y[:, TARGETS.index(name)]
            width = (hi - lo) if math.isfinite(hi - lo) and hi > lo else 1.0
            gap = np.maximum(lo - v, 0.0) + np.maximum(v - hi, 0.0)
            d2 = d2 + (gap / width) ** 2
        return -np.sqrt(d2)

    def describe(self) -> str:
        parts = []
        for n, a, b in zip(TARGETS, self.lo, self.hi):
            if not (math.isinf(a) and math.isinf(b)):
                parts.append(f"{n} in [{a:g}, {b:g}] eV")
        return " and ".join(parts)
