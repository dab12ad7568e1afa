"""Property heads: ridge regression and a deep ensemble with calibrated uncertainty.

Heads follow the scikit-learn pattern (``fit``/``predict``) and serialise to plain dicts of
tensors (``state()``/``from_state()``) so models load with ``torch.load(weights_only=True)``.
All targets are in eV; ``predict`` returns ``(mean, std)`` arrays of shape ``(N, n_targets)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where a deep ensemble or a state is used: ridge serving runs without it
    import torch
    from torch import nn

ALPHAS = tuple(float(a) for a in np.logspace(-6, 3, 19))


def _t(a: np.ndarray) -> torch.Tensor:
    import torch

    return torch.as_tensor(np.asarray(a, dtype=np.float64))


class RidgeHead:
    """Ridge regression on standardised features; ``alpha`` per target chosen on a validation set.

    The uncertainty is the ridge (Bayesian linear regression) predictive std per configuration,
    ``sigma_j sqrt(1 + h_j(x))`` with the leverage ``h_j(x) = a^T (A^T A + alpha_j I)^-1 a``
    restricted to the span of the training features (``a``: standardised features; components
    outside the span have no fitted weight at all and are flagged as extrapolation by the model
    instead); ``sigma_j`` is calibrated so that the validation z-scores have unit RMS. Heads saved
    before this (no ``basis``) give the constant validation RMSE.
    """

    def __init__(self, alphas: tuple[float, ...] = ALPHAS) -> None:
        self.alphas = alphas

    def fit(self, X: np.ndarray, Y: np.ndarray, Xv: np.ndarray, Yv: np.ndarray) -> RidgeHead:
        """Fit on ``X (N, p)``, ``Y (N, m)``; choose ``alpha`` per target on ``Xv, Yv``."""
        X, Y, Xv, Yv = (np.asarray(a, dtype=np.float64) for a in (X, Y, Xv, Yv))
        self.mu = X.mean(0)
        self.sd = X.std(0)
        self.sd[self.sd < 1e-12] = 1.0
        A = (X - self.mu) / self.sd
        Av = (Xv - self.mu) / self.sd
        self.ym = Y.mean(0)
        U, s, Vt = np.linalg.svd(A, full_matrices=False)
        UtY = U.T @ (Y - self.ym)
        best = [None] * Y.shape[1]
        for a in self.alphas:
            W = Vt.T @ ((s / (s**2 + a))[:, None] * UtY)
            err = np.abs(Av @ W + self.ym - Yv).mean(0)
            for j in range(Y.shape[1]):
                if best[j] is None or err[j] < best[j][0]:
                    best[j] = (err[j], a, W[:, j])
        self.alpha = np.array([b[1] for b in best])
        self.W = np.stack([b[2] for b in best], axis=1)
        res = self._mean(Xv) - Yv
        self.rmse = np.sqrt((res**2).mean(0))
        keep = s > 1e-8 * s[0] if len(s) else np.zeros(0, dtype=bool)
        self.basis, self.sv = Vt[keep], s[keep]  # (r, p) right singular vectors spanning the training features
        self.sigma = np.ones(Y.shape[1])
        lev = self.leverage(Xv)
        self.sigma = np.sqrt((res**2 / (1.0 + lev)).mean(0))  # validation z-scores have unit RMS
        return self

    def _mean(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float64) - self.mu) / self.sd) @ self.W + self.ym

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """``(coef (p, m), b (m,))`` with mean ``= X @ coef + b``: the standardisation folded into the weights."""
        coef = self.W / self.sd[:, None]
        return coef, self.ym - self.mu @ coef

    def leverage(self, X: np.ndarray) -> np.ndarray:
        """``(N, m)`` leverage ``h_j(x)`` of each row per target, within the training span."""
        proj = (((np.asarray(X, dtype=np.float64) - self.mu) / self.sd) @ self.basis.T) ** 2  # (N, r)
        return proj @ (1.0 / (self.sv[:, None] ** 2 + self.alpha[None, :]))

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self._mean(X)
        if getattr(self, "basis", None) is None:
            return m, np.broadcast_to(self.rmse, m.shape).copy()
        return m, self.sigma * np.sqrt(1.0 + self.leverage(X))

    def state(self) -> dict:
        keys = ["mu", "sd", "ym", "W", "alpha", "rmse"]
        if getattr(self, "basis", None) is not None:
            keys += ["basis", "sv", "sigma"]
        return {k: _t(getattr(self, k)) for k in keys}

    @classmethod
    def from_state(cls, st: dict) -> RidgeHead:
        h = cls()
        for k, v in st.items():
            setattr(h, k, v.numpy())
        return h


def _net(n_in: int, width: int, n_out: int) -> nn.Sequential:
    from torch import nn

    return nn.Sequential(nn.Linear(n_in, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, n_out))


class EnsembleHead:
    """Deep ensemble of small MLPs; mean and calibrated standard deviation per target.

    Members differ in initialisation and batch order (seeded). The ensemble spread is scaled per
    target so that it matches the validation RMSE (``calibration``), the usual recalibration of
    deep ensembles. Inputs are standardised; columns constant on the training set are dropped.

    Args:
        members: ensemble size.
        width: hidden width.
        epochs: passes over the training set.
        lr: AdamW learning rate (cosine schedule).
        seed: base seed.
    """

    def __init__(self, members: int = 5, width: int = 256, epochs: int = 300, lr: float = 2e-3, seed: int = 0,
                 batch: int = 128, weight_decay: float = 1e-4) -> None:
        self.members, self.width, self.epochs, self.lr, self.seed = members, width, epochs, lr, seed
        self.batch, self.weight_decay = batch, weight_decay

    def _prep(self, X: np.ndarray) -> torch.Tensor:
        import torch

        X = np.asarray(X, dtype=np.float64)[:, self.cols]
        return torch.as_tensor((X - self.mu) / self.sd, dtype=torch.float32)

    def fit(self, X: np.ndarray, Y: np.ndarray, Xv: np.ndarray, Yv: np.ndarray, progress=None) -> EnsembleHead:
        """Fit on ``X (N, p)``, ``Y (N, m)`` (eV); calibrate on ``Xv, Yv``. ``progress()`` per epoch."""
        import torch
        from torch import nn

        X = np.asarray(X, dtype=np.float64)
        self.cols = np.flatnonzero(X.std(0) > 0)
        self.mu = X[:, self.cols].mean(0)
        self.sd = X[:, self.cols].std(0)
        self.ym = np.asarray(Y).mean(0)
        self.ys = np.asarray(Y).std(0) + 1e-12
        Xt = self._prep(X)
        Yt = torch.as_tensor((np.asarray(Y) - self.ym) / self.ys, dtype=torch.float32)
        self.nets = []
        n_in, n_out = Xt.shape[1], Yt.shape[1]
        for m in range(self.members):
            g = torch.Generator().manual_seed(self.seed * 1000 + m)
            with torch.random.fork_rng():
                torch.manual_seed(self.seed * 1000 + m)
                net = _net(n_in, self.width, n_out)
            opt = torch.optim.AdamW(net.parameters(), self.lr, weight_decay=self.weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, self.epochs))
            for _ in range(self.epochs):
                perm = torch.randperm(len(Xt), generator=g)
                for s in range(0, len(perm), self.batch):
                    i = perm[s : s + self.batch]
                    loss = nn.functional.smooth_l1_loss(net(Xt[i]), Yt[i], beta=0.05)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                sched.step()
                if progress is not None:
                    progress()
            net.eval()
            self.nets.append(net)
        self.calibration = np.ones(n_out)
        mean, std = self.predict(Xv)
        rmse = np.sqrt(((mean - np.asarray(Yv)) ** 2).mean(0))
        self.calibration = rmse / np.maximum(np.sqrt((std**2).mean(0)), 1e-12)
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, m)`` mean and standard deviation in target units (eV)."""
        import torch

        Xt = self._prep(X)
        with torch.no_grad():
            P = torch.stack([net(Xt) for net in self.nets]).double().numpy() * self.ys + self.ym  # (M, N, m)
        std = P.std(0, ddof=1) if len(self.nets) > 1 else np.zeros(P.shape[1:])
        return P.mean(0), std * self.calibration

    def state(self) -> dict:
        import torch

        return {
            "config": {"members": self.members, "width": self.width, "epochs": self.epochs, "lr": self.lr, "seed": self.seed},
            "cols": torch.as_tensor(self.cols),
            **{k: _t(getattr(self, k)) for k in ("mu", "sd", "ym", "ys", "calibration")},
            "n_in": len(self.cols),
            "n_out": len(self.ym),
            "nets": [net.state_dict() for net in self.nets],
        }

    @classmethod
    def from_state(cls, st: dict) -> EnsembleHead:
        h = cls(**st["config"])
        h.cols = st["cols"].numpy()
        for k in ("mu", "sd", "ym", "ys", "calibration"):
            setattr(h, k, st[k].numpy())
        h.nets = []
        for sd in st["nets"]:
            net = _net(st["n_in"], h.width, st["n_out"])
            net.load_state_dict(sd)
            net.eval()
            h.nets.append(net)
        return h
