"""The target window: one box in property space, used by design and by campaigns.

``Window(lo, hi)`` holds ``lo[i] <= y_i <= hi[i]`` eV for each of :data:`TARGETS`
(``formation_energy_per_site``, ``homo_lumo_gap``); targets the user did not constrain are
``(-inf, inf)``. Design ranks by :meth:`Window.p_in` (Gaussian predictions) and
:meth:`Window.distance`; campaigns count :meth:`Window.hits` and plot :meth:`Window.score`.

On the spin-polarised hosts (h-BN, GaSe, InSe, black P) a window may also bound the cell's magnetic
moment :data:`MOMENT` (``total_mag``, Bohr magnetons per cell, >= 0): the window then has a third
entry (``lo``, ``hi`` of length 3, :attr:`Window.names` = :data:`WINDOW_TARGETS`) and takes
predictions with a third column (:meth:`Window.predict`, the model's ``predict_with_moment``). Its
probability is that of a Gaussian with the served std restricted to ``total_mag >= 0``
(:func:`moment_log_p`). A window without a moment is the two-target window it always was.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from invdesign.data.dataset import TARGETS
from invdesign.errors import InvdesignError

MAX_BOUND = 1e3  # eV (or Bohr magnetons per cell): a window bound beyond this is no property of a defect configuration
MOMENT = "total_mag"  # the cell's magnetic moment (Bohr magnetons per cell): a window target on spin-polarised hosts
WINDOW_TARGETS = (*TARGETS, MOMENT)
UNIT = {MOMENT: "Bohr magnetons per cell"}  # every other target: eV
SPIN_HOSTS = "h-BN, GaSe, InSe and black P"


def unit_of(name: str) -> str:
    return UNIT.get(name, "eV")


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf"


@dataclass(frozen=True)
class Window:
    """Target window: ``lo[i] <= y_i <= hi[i]`` eV for each of :data:`TARGETS` (and, with a third entry,
    Bohr magnetons per cell for :data:`MOMENT`).

    Targets the user did not constrain are ``(-inf, inf)``.
    """

    lo: tuple[float, ...]
    hi: tuple[float, ...]

    @classmethod
    def from_dict(cls, spec: dict[str, tuple[float, float]]) -> Window:
        """From ``{"formation_energy_per_site": (lo, hi), ...}`` (eV; ``total_mag`` in Bohr magnetons per cell; ``None``
        for an open end)."""
        if not spec:
            raise InvdesignError(f"give at least one target window, e.g. --target {TARGETS[0]}=LO:HI")
        n = len(WINDOW_TARGETS) if MOMENT in spec else len(TARGETS)
        lo = [-math.inf] * n
        hi = [math.inf] * n
        for name, bounds in spec.items():
            if name not in WINDOW_TARGETS:
                raise InvdesignError(f"unknown target {name!r}; targets are {', '.join(TARGETS)} (eV) and, on the "
                                     f"spin-polarised hosts, {MOMENT} (Bohr magnetons per cell)")
            u = unit_of(name)
            try:
                a, b = (float(d if v is None else v) for v, d in zip(bounds, (-math.inf, math.inf), strict=True))
            except (TypeError, ValueError):
                raise InvdesignError(f"target {name} needs two numbers (LO, HI), got {bounds!r}") from None
            if math.isnan(a) or math.isnan(b):
                raise InvdesignError(f"target {name}: bounds must be numbers")
            if a == math.inf or b == -math.inf:
                raise InvdesignError(f"target {name}: the window {a:g}:{b:g} is empty (LO must be below +inf, HI above -inf); "
                                     "leave a side empty to leave it open")
            if a == -math.inf and b == math.inf:
                raise InvdesignError(f"target {name}: the window -inf:inf constrains nothing; give LO, HI or both ({u})")
            big = next((v for v in (a, b) if math.isfinite(v) and abs(v) > MAX_BOUND), None)
            if big is not None:
                raise InvdesignError(f"target {name}: bound {big:g} {u} is beyond +-{MAX_BOUND:g} {u} (no defect property "
                                     "is); leave a side empty to leave it open")
            if a > b:
                raise InvdesignError(f"target {name}: LO {a:g} is above HI {b:g}")
            if name == MOMENT:
                neg = next((v for v in (a, b) if v < 0 and math.isfinite(v)), None)
                if neg is not None:
                    raise InvdesignError(f"target {MOMENT}: bound {neg:g} Bohr magnetons per cell is below 0 (the cell's "
                                         f"moment is >= 0); leave LO empty (or 0) for 0")
                if b <= max(a, 0.0):
                    raise InvdesignError(f"target {MOMENT}: the window {max(a, 0.0):g}:{b:g} Bohr magnetons per cell has "
                                         f"no width (a point window holds no probability); give one, e.g. {MOMENT}=:0.5 "
                                         "for nearly non-magnetic cells")
            i = WINDOW_TARGETS.index(name)
            lo[i], hi[i] = a, b
        return cls(tuple(lo), tuple(hi))

    @classmethod
    def parse(cls, specs: list[str]) -> Window:
        """From CLI strings ``NAME=LO:HI`` (eV; ``total_mag`` in Bohr magnetons per cell; ``LO`` or ``HI`` may be
        empty for an open side)."""
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
                    raise InvdesignError(f"target {name}: {text} overflows a float; give a bound within +-{MAX_BOUND:g} "
                                         f"{unit_of(name)}")
            out[name] = (lo, hi)
        return cls.from_dict(out)

    # ------------------------------------------------------------------ the targets
    @property
    def names(self) -> tuple[str, ...]:
        """The targets of the window's entries: :data:`TARGETS`, then :data:`MOMENT` where it bounds the moment."""
        return WINDOW_TARGETS[: len(self.lo)]

    @property
    def n_targets(self) -> int:
        """Columns the window reads of a prediction: 2, or 3 with a moment window."""
        return len(self.lo)

    @property
    def has_moment(self) -> bool:
        """The window bounds ``total_mag`` (its predictions need the moment column)."""
        return len(self.lo) > len(TARGETS) and not (math.isinf(self.lo[2]) and math.isinf(self.hi[2]))

    @property
    def moment(self) -> tuple[float, float] | None:
        """``(lo, hi)`` Bohr magnetons per cell of the moment window, or None."""
        return (self.lo[2], self.hi[2]) if self.has_moment else None

    def check_model(self, model) -> None:
        """Refuse, in one line, a moment window on a model that predicts no moment (MoS2, WSe2: not spin-polarised)."""
        if not self.has_moment:
            return
        spin = getattr(model, "spin_polarised", None)
        if callable(spin) and spin() and hasattr(model, "predict_with_moment"):
            return
        name = getattr(getattr(model, "host", None), "name", "this host")
        why = ("its 2DMD DFT was computed without spin polarisation, so its model predicts no total_mag"
               if callable(spin) or str(name).startswith(("MoS2", "WSe2"))
               else "this model predicts formation energy and gap only")
        raise InvdesignError(f"a {MOMENT} window needs a host with a magnetic moment: {name} has none ({why}); "
                             f"{MOMENT} windows work on the spin-polarised hosts {SPIN_HOSTS}")

    def predict(self, model, occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, n_targets)`` mean and std of ``occ`` as the window reads them: ``model.predict`` (eV), plus the
        moment column (``model.predict_with_moment``) where the window bounds it."""
        if self.n_targets == len(TARGETS):
            return model.predict(occ)
        mean, std = model.predict_with_moment(occ)
        return np.asarray(mean, float)[:, : self.n_targets], np.asarray(std, float)[:, : self.n_targets]

    def _cols(self, y: np.ndarray) -> np.ndarray:
        """``y`` as ``(N, n_targets)``: a prediction with more columns (the moment beside a two-target window) is cut."""
        y = np.asarray(y, float)
        if y.ndim == 2 and y.shape[1] > self.n_targets:
            return y[:, : self.n_targets]
        if y.ndim == 2 and y.shape[1] < self.n_targets:
            raise ValueError(f"the window bounds {', '.join(self.names)}: predictions need {self.n_targets} columns, "
                             f"not {y.shape[1]} (the moment comes from Window.predict)")
        return y

    @property
    def array(self) -> np.ndarray:
        """``(2, 2)`` [lo, hi] eV of :data:`TARGETS` (the box the flows condition on; the moment is :attr:`moment`)."""
        return np.array([self.lo[: len(TARGETS)], self.hi[: len(TARGETS)]], dtype=float).T

    def as_dict(self) -> dict[str, list[float | None]]:
        return {
            n: [None if math.isinf(a) else a, None if math.isinf(b) else b]
            for n, a, b in zip(self.names, self.lo, self.hi)
            if not (math.isinf(a) and math.isinf(b))
        }

    def p_in(self, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        """``(N,)`` probability that ``y ~ N(mean, std^2)`` (independent targets) lies in the window; for the moment,
        ``N(mean, std^2)`` restricted to ``total_mag >= 0`` (:func:`moment_log_p`)."""
        mean, std = self._cols(mean), self._cols(std)
        k = len(TARGETS)
        m2 = mean[..., :k]
        s2 = np.maximum(std[..., :k], 1e-9)
        lo, hi = np.array(self.lo[:k]), np.array(self.hi[:k])
        p = ndtr((hi - m2) / s2) - ndtr((lo - m2) / s2)
        p = np.clip(p, 0.0, 1.0).prod(axis=1)
        if self.has_moment:
            p = p * np.exp(moment_log_p(self.lo[2], self.hi[2], mean[:, 2], std[:, 2]))
        return p

    def log_p_in(self, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        """``(N,)`` ``log p_in`` accurate far outside the window (no underflow to -inf): what annealing descends."""
        from scipy.special import log_ndtr

        mean, std = self._cols(mean), self._cols(std)
        k = len(TARGETS)
        m2 = mean[:, :k]
        s2 = np.maximum(std[:, :k], 1e-9)
        a = (np.array(self.lo[:k]) - m2) / s2
        b = (np.array(self.hi[:k]) - m2) / s2
        flip = a > 0
        lo, hi = np.where(flip, -b, a), np.where(flip, -a, b)
        la, lb = log_ndtr(lo), log_ndtr(hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = lb + np.log1p(-np.exp(np.minimum(la - lb, 0.0)))
        out = np.where(np.isfinite(out), out, lb - 50.0)  # lo == hi: a point window
        out = out.sum(axis=1)
        if self.has_moment:
            out = out + moment_log_p(self.lo[2], self.hi[2], mean[:, 2], std[:, 2])
        return out

    def distance(self, y: np.ndarray) -> np.ndarray:
        """``(N,)`` Euclidean distance from ``y (N, n_targets)`` to the window (0 inside; eV, and Bohr magnetons per
        cell along the moment)."""
        y = self._cols(y)
        gap = np.maximum(np.array(self.lo) - y, 0) + np.maximum(y - np.array(self.hi), 0)
        return np.sqrt((gap**2).sum(axis=1))

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        """``{name: (lo, hi)}`` of the constrained targets (eV; Bohr magnetons per cell for ``total_mag``; open sides +-inf)."""
        return {n: (a, b) for n, a, b in zip(self.names, self.lo, self.hi) if not (math.isinf(a) and math.isinf(b))}

    def hits(self, y: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: every constrained target of ``y (N, n_targets)`` in its closed interval; NaN never hits."""
        y = np.asarray(y, dtype=float)
        y = self._cols(y if y.ndim == 2 else y.reshape(-1, self.n_targets))
        lo, hi = np.array(self.lo), np.array(self.hi)
        with np.errstate(invalid="ignore"):
            inside = (y >= lo) & (y <= hi)
        used = ~(np.isinf(lo) & np.isinf(hi))
        return inside[:, used].all(axis=1)

    def score(self, y: np.ndarray) -> np.ndarray:
        """``(N,)`` minus the distance to the box in units of each window's width (0 inside; NaN where a used target is NaN)."""
        y = np.asarray(y, dtype=float)
        y = self._cols(y if y.ndim == 2 else y.reshape(-1, self.n_targets))
        d2 = np.zeros(len(y))
        for name, (lo, hi) in self.bounds.items():
            v = y[:, self.names.index(name)]
            width = (hi - lo) if math.isfinite(hi - lo) and hi > lo else 1.0
            gap = np.maximum(lo - v, 0.0) + np.maximum(v - hi, 0.0)
            d2 = d2 + (gap / width) ** 2
        return -np.sqrt(d2)

    def describe(self) -> str:
        parts = []
        for n, a, b in zip(self.names, self.lo, self.hi):
            if not (math.isinf(a) and math.isinf(b)):
                parts.append(f"{n} in [{a:g}, {b:g}] {unit_of(n)}")
        return " and ".join(parts)


def moment_log_p(lo: float, hi: float, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(N,)`` ``log P(lo <= y <= hi | y >= 0)`` for ``y ~ N(mean, std^2)``: the moment's probability in its window.

    The served moment is a Gaussian with the served std; the moment is >= 0, so the Gaussian is restricted to
    ``y >= 0`` (renormalised by ``P(y >= 0)``). Computed in log space (accurate far outside the window); NaN
    predictions (a host without a moment) give ``-inf``.
    """
    from scipy.special import log_ndtr

    mean = np.asarray(mean, float)
    std = np.maximum(np.asarray(std, float), 1e-9)
    a = (max(lo, 0.0) - mean) / std
    b = (hi - mean) / std
    flip = a > 0  # both bounds in the upper tail: the difference of upper tails is accurate there
    x, z = np.where(flip, -b, a), np.where(flip, -a, b)
    lx, lz = log_ndtr(x), log_ndtr(z)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = lz + np.log1p(-np.exp(np.minimum(lx - lz, 0.0))) - log_ndtr(mean / std)
    return np.where(np.isnan(out), -np.inf, np.minimum(out, 0.0))
