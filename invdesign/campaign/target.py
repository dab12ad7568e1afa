"""What a campaign looks for: a window on the targets, or one target to minimise/maximise.

A *window* (:class:`~invdesign.generate.window.Window`, shared with design) is ``{name: (lo, hi)}`` in eV over :data:`~invdesign.data.dataset.TARGETS`
(``formation_energy_per_site``, ``homo_lumo_gap``; a ``total_mag`` window, which design takes on
spin-polarised hosts, is refused: campaigns label and store those two targets only); a configuration is a *hit* when every
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
from invdesign.generate.window import MOMENT, Window


def parse_window(specs: list[str] | tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """``["formation_energy_per_site=1.0:1.5", "homo_lumo_gap=0.4:0.6"]`` -> ``{name: (lo, hi)}`` (eV).

    An empty bound (``NAME=:0.5`` or ``NAME=1.2:``) is open on that side. Parsed by
    :meth:`invdesign.generate.window.Window.parse`, the one home of the window (design uses it too).
    """
    return Window.parse(list(specs)).bounds


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
        used = set(self.window) | ({self.objective[0]} if self.objective else set())
        if MOMENT in used:  # the oracles, the store and the GP prior carry formation energy and gap only
            raise InvdesignError(f"campaigns target {' and '.join(TARGETS)} only (their oracles, labels and database carry "
                                 f"those two), not {MOMENT}: for a {MOMENT} window use invdesign design --target "
                                 f"{MOMENT}=LO:HI on a spin-polarised host")
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
        if threshold is not None and not math.isfinite(threshold):
            raise InvdesignError(f"--threshold must be a finite number (eV), not {threshold}")
        if target:
            if threshold is not None:  # was ignored without a word (any value, NaN included)
                raise InvdesignError("--threshold applies to --minimise / --maximise only; with --target the "
                                     "window's bounds are the thresholds")
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
    def as_window(self) -> Window:
        """The window as a :class:`~invdesign.generate.window.Window` (only for window goals)."""
        if self.objective:
            raise InvdesignError("an objective goal has no window")
        return Window.from_dict(self.window)

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
        return self.as_window().hits(y)

    def score(self, y: np.ndarray) -> np.ndarray:
        """``(N,)`` larger-is-better score for best-so-far curves.

        Window: minus the distance to the window box in units of each window's width
        (0 inside); objective: the value (negated for minimise). NaN where a used target is NaN.
        """
        y = np.asarray(y, dtype=float).reshape(-1, len(TARGETS))
        if self.objective:
            v = y[:, TARGETS.index(self.objective[0])]
            return -v if self.objective[1] == "min" else v
        return self.as_window().score(y)


def _enc(v: float) -> float | str:
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")


def _dec(v: float | str) -> float:
    return float(v)
