"""Gaussian processes on configuration features, one per target (gpytorch via botorch).

Each target gets an exact GP (botorch ``SingleTaskGP``: RBF kernel with ARD, inferred Gaussian
noise, outcome standardisation, inputs scaled to the unit cube by *fixed* bounds from the
candidate set), fitted by maximising the marginal likelihood with ``fit_gpytorch_mll``.

Warm start: when a prior mean ``m(x)`` is given (the packaged model's prediction, eV), the GP is
fitted to the residuals ``y - m(x)``; the posterior mean is ``m(x) + GP mean``. This is exactly a
GP with prior mean function ``m``. Everything is float64 and deterministic given the inputs
(training rows are sorted by canonical key before fitting, so observation order never matters).
"""

from __future__ import annotations

import numpy as np
import torch

MIN_POINTS = 3  # fewer observations than this: no GP, the prior (or random search) decides
MAXITER = 100  # L-BFGS-B iterations of the marginal-likelihood fit (enough for <= a few hundred points)


class TargetGP:
    """An exact GP on features for one target.

    Args:
        bounds: ``(2, d)`` lower/upper feature bounds used to scale inputs to ``[0, 1]^d``.
        seed: torch seed for the fit (restarts only).
    """

    def __init__(self, bounds: np.ndarray, seed: int = 0) -> None:
        b = np.asarray(bounds, dtype=np.float64)
        span = b[1] - b[0]
        self.bounds = np.stack([b[0], b[0] + np.where(span > 0, span, 1.0)])
        self.seed = seed
        self.model = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> TargetGP:
        """Fit to ``X (n, d)`` features and ``y (n,)`` values (eV or eV residuals; no NaN)."""
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.transforms import Normalize, Standardize
        from gpytorch.mlls import ExactMarginalLogLikelihood

        torch.manual_seed(self.seed)
        Xt = torch.as_tensor(np.asarray(X, dtype=np.float64))
        Yt = torch.as_tensor(np.asarray(y, dtype=np.float64)).reshape(-1, 1)
        d = Xt.shape[1]
        model = SingleTaskGP(
            Xt, Yt,
            input_transform=Normalize(d=d, bounds=torch.as_tensor(self.bounds)),
            outcome_transform=Standardize(m=1),
        )
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        try:
            fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": MAXITER}})
        except Exception:  # noqa: BLE001 - botorch raises ModelFittingError and linear-algebra errors
            # keep the prior hyperparameters: a valid (if untuned) GP is better than no suggestion
            pass
        model.eval()
        self.model = model
        return self

    def condition(self, X: np.ndarray, y: np.ndarray) -> None:
        """Condition on extra (fantasy) observations ``X (k, d)``, ``y (k,)`` without refitting hyperparameters.

        ``X`` is in feature units: botorch's ``condition_on_observations`` applies the model's input
        transform itself (passing already-normalised inputs would place the fantasy elsewhere and move
        the posterior mean at every other point).
        """
        Xt = torch.as_tensor(np.asarray(X, dtype=np.float64))
        Yt = torch.as_tensor(np.asarray(y, dtype=np.float64)).reshape(-1, 1)
        with torch.no_grad():
            self.model.posterior(Xt[:1])  # caches the prediction strategy
            self.model = self.model.condition_on_observations(Xt, Yt)

    def predict(self, X: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Posterior ``(mean (N,), std (N,))`` of the latent function at ``X (N, d)``."""
        means, stds = [], []
        with torch.no_grad():
            for s in range(0, len(X), chunk):
                post = self.model.posterior(torch.as_tensor(np.asarray(X[s : s + chunk], dtype=np.float64)))
                means.append(post.mean.reshape(-1).numpy())
                stds.append(post.variance.clamp_min(1e-18).sqrt().reshape(-1).numpy())
        return np.concatenate(means), np.concatenate(stds)


def posterior(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_cand: np.ndarray,
    bounds: np.ndarray,
    prior_train: np.ndarray | None = None,
    prior_cand: np.ndarray | None = None,
    prior_std_cand: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[TargetGP | None]]:
    """Per-target GP posteriors over candidates.

    Args:
        X_train: ``(n, d)`` features of observed configurations.
        y_train: ``(n, m)`` observed values (eV; NaN = not observed for that target).
        X_cand: ``(C, d)`` candidate features.
        bounds: ``(2, d)`` feature bounds.
        prior_train, prior_cand: ``(n, m)`` / ``(C, m)`` prior means (eV) or None (zero prior).
        prior_std_cand: ``(C, m)`` prior std (eV), used for targets with fewer than
            :data:`MIN_POINTS` observations.

    Returns:
        mean ``(C, m)``, std ``(C, m)`` in eV (NaN for a target with too few observations and no
        prior), and the fitted GPs (None where not fitted).
    """
    n_c, m = len(X_cand), y_train.shape[1]
    mean = np.full((n_c, m), np.nan)
    std = np.full((n_c, m), np.nan)
    gps: list[TargetGP | None] = []
    for j in range(m):
        ok = np.isfinite(y_train[:, j])
        p_tr = prior_train[:, j] if prior_train is not None else np.zeros(len(y_train))
        p_c = prior_cand[:, j] if prior_cand is not None else np.zeros(n_c)
        if ok.sum() < MIN_POINTS:
            gps.append(None)
            if prior_cand is not None and prior_std_cand is not None:
                mean[:, j], std[:, j] = prior_cand[:, j], prior_std_cand[:, j]
            continue
        gp = TargetGP(bounds, seed=seed).fit(X_train[ok], y_train[ok, j] - p_tr[ok])
        mu, sd = gp.predict(X_cand)
        mean[:, j], std[:, j] = mu + p_c, sd
        gps.append(gp)
    return mean, std, gps
