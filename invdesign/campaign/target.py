"""What a campaign looks for: a window on the targets, or one target to minimise/maximise.

A *window* is ``{name: (lo, hi)}`` in eV over :data:`~invdesign.data.dataset.TARGETS`
(``formation_energy_per_site``, ``homo_lumo_gap``); a configuration is a *hit* when every
windowed target lies in its closed interval. A single *objective* (``minimise``/``maximise``
one target) has hits only when a ``threshold`` is given (value <= threshold for minimise,
>= for maximise); otherwise campaigns report the best value found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from invdesign.data.dataset import TARGETS
from invdesign.errors import InvdesignError


def parse_window(specs: list[str] | tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """``["formation_energy_per_site=1.0:1.5", "homo_lumo_gap=0.4:0.6"]`` -> ``{name: (lo, hi)}`` (eV).

    An empty bound (``NAME=:0.5`` or ``NAME=1.2:``) is open on that side.
    """
    out: dict[str, tuple[float, float]] = {}
    for spec in specs:
        name, sep, rng = spec.partition("=")
        name = name.strip()
        if not sep or ":" not in rng:
            raise InvdesignError(f"target {spec!r} is not of the form NAME=LO:HI")
        if name not in TARGETS:
            raise InvdesignError(f"unknown target {name!r}; targets are {', '.join(TARGETS)}")
        lo_s, _, hi_s = rng.partition(":")
        try:
            lo = float(lo_s) if lo_s.strip() else -math.inf
            hi = float(hi_s) if hi_s.strip() else math.inf
        except ValueError:
            raise InvdesignError(f"target {spec!r}: bounds must be numbers in eV") from None
        if not lo < hi:
            raise InvdesignError(f"target {spec!r}: LO must be below HI")
        if name in out:
            raise InvdesignError(f"target {name!r} given twice")
        out[name] = (lo, hi)
    return out


@dataclass(frozen=True)
class Target:
    """The goal of a campaign.

    Attributes:
        window: ``{target name: (lo, hi)}`` in eV (may be empty for a single objective).
        objective: ``None`` for a window, else ``(name, "min" | "max")``.
        threshold: for an objective, the value (eV) at or beyond which an observation is a hit.
    """

    window: dict[str, tuple[float, float]] = field(default_factory=dict)
    objective: tuple[str, str] | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.objective is None and not self.window:
            raise InvdesignError("a campaign needs --target NAME=LO:HI, --minimise NAME or --maximise NAME")
        if self.objective is not None and self.window:
            raise InvdesignError("give either target windows or one objective to minimise/maximise, not both")
        if self.objective is not None:
            name, sense = self.objective
            if name not in TARGETS:
                raise InvdesignError(f"unknown target {name!r}; targets are {', '.join(TARGETS)}")
            if sense not in ("min", "max"):
                raise InvdesignError(f"objective sense must be 'min' or 'max', not {sense!r}")
        for name in self.window:
            if name not in TARGETS:
                raise InvdesignError(f"unknown target {name!r}; targets are {', '.join(TARGETS)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_cli(
        cls, target: list[str] | None = None, minimise: str | None = None, maximise: str | None = None,
        threshold: float | None = None,
    ) -> Target:
        """Build from ``--target`` specs or ``--minimise`` / ``--maximise`` (one of them)."""
        given = sum(bool(x) for x in (target, minimise, maximise))
        if given != 1:
            raise InvdesignError("give exactly one of --target (repeatable), --minimise or --maximise")
        if target:
            return cls(window=parse_window(target))
        name = minimise or maximise
        return cls(objective=(str(name), "min" if minimise else "max"), threshold=threshold)

    def to_dict(self) -> dict:
        return {
            "window": {k: [_enc(lo), _enc(hi)] for k, (lo, hi) in self.window.items()},
            "objective": list(self.objective) if self.objective else None,
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Target:
        window = {k: (_dec(v[0]), _dec(v[1])) for k, v in (d.get("window") or {}).items()}
        obj = tuple(d["objective"]) if d.get("objective") else None
        return cls(window=window, objective=obj, threshold=d.get("threshold"))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ queries
    @property
    def names(self) -> list[str]:
        """Target names this goal uses, in TARGETS order."""
        used = set(self.window) | ({self.objective[0]} if self.objective else set())
        return [t for t in TARGETS if t in used]

    def describe(self) -> str:
        if self.objective:
            name, sense = self.objective
            thr = f" (hit: {'<=' if sense == 'min' else '>='} {self.threshold} eV)" if self.threshold is not None else ""
            return f"{'minimise' if sense == 'min' else 'maximise'} {name}{thr}"
        return ", ".join(f"{k} in [{lo:g}, {hi:g}] eV" for k, (lo, hi) in self.window.items())

    def hits(self, y: np.ndarray) -> np.ndarray:
        """``(N,)`` bool hit mask of ``(N, 2)`` values (eV, TARGETS order; NaN never hits)."""
        y = np.asarray(y, dtype=float).reshape(-1, len(TARGETS))
        if self.objective:
            if self.threshold is None:
                return np.zeros(len(y), dtype=bool)
            v = y[:, TARGETS.index(self.objective[0])]
            with np.errstate(invalid="ignore"):
                return v <= self.threshold if self.objective[1] == "min" else v >= self.threshold
        ok = np.ones(len(y), dtype=bool)
        for name, (lo, hi) in self.window.items():
            v = y[:, TARGETS.index(name)]
            with np.errstate(invalid="ignore"):
                ok &= (v >= lo) & (v <= hi)
        return ok

    def score(self, y: np.ndarray) -> np.ndarray:
        """``(N,)`` larger-is-better score for best-so-far curves.

        Window: minus the distance to the window box in units of each window's width
        (0 inside); objective: the value (negated for minimise). NaN where a used target is NaN.
        """
        y = np.asarray(y, dtype=float).reshape(-1, len(TARGETS))
        if self.objective:
            v = y[:, TARGETS.index(self.objective[0])]
            return -v if self.objective[1] == "min" else v
        d2 = np.zeros(len(y))
        for name, (lo, hi) in self.window.items():
            v = y[:, TARGETS.index(name)]
            width = (hi - lo) if math.isfinite(hi - lo) else 1.0
            gap = np.maximum(lo - v, 0.0) + np.maximum(v - hi, 0.0)
            d2 = d2 + (gap / width) ** 2
        return -np.sqrt(d2)


def _enc(v: float) -> float | str:
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")


def _dec(v: float | str) -> float:
    return float(v)
