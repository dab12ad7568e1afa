"""Acquisition functions over a discrete candidate set, and batch selection.

Window goal (``pwin``): the acquisition is the posterior probability that a candidate lies in
the window, ``P = prod_t [Phi((hi_t - mu_t)/s_t) - Phi((lo_t - mu_t)/s_t)]`` (computed in log
space with botorch's ``compute_log_prob_feas_from_bounds``). The campaign's aim is the *number*
of distinct in-window configurations, and the expected number of hits in a batch is the sum of
the marginal probabilities whatever the correlations between candidates; so the batch that
maximises it is the top-``q`` candidates by ``P`` among those neither observed nor pending.
Pending points are therefore excluded, and need no fantasies (a fantasy averaged over its
predictive distribution leaves every marginal ``P`` unchanged).

Single objective (``ei``): log expected improvement over the best observed value, with batches
built greedily by the Kriging believer: after each pick, the GP is conditioned on the pick at its
posterior mean (a pending point), which shrinks the variance around it and spreads the batch.
"""

from __future__ import annotations

import numpy as np
import torch

from invdesign.campaign.target import Target
from invdesign.data.dataset import TARGETS


def log_p_window(mean: np.ndarray, std: np.ndarray, target: Target) -> np.ndarray:
    """``(C,)`` log probability that each candidate lies in the window.

    Args:
        mean, std: ``(C, 2)`` posterior means and standard deviations in eV (TARGETS order).
    """
    from botorch.acquisition.analytic import compute_log_prob_feas_from_bounds

    names = list(target.window)
    cols = [TARGETS.index(n) for n in names]
    mu = torch.as_tensor(np.asarray(mean, dtype=np.float64)[:, cols])
    sd = torch.as_tensor(np.maximum(np.asarray(std, dtype=np.float64)[:, cols], 1e-9))
    lo_i, up_i, both_i, lo, up, both = [], [], [], [], [], []
    for k, n in enumerate(names):
        a, b = target.window[n]
        if np.isfinite(a) and np.isfinite(b):
            both_i.append(k)
            both.append([a, b])
        elif np.isfinite(a):
            lo_i.append(k)
            lo.append(a)
        else:
            up_i.append(k)
            up.append(b)
    t = torch.float64
    out = compute_log_prob_feas_from_bounds(
        torch.tensor(lo_i, dtype=torch.long), torch.tensor(up_i, dtype=torch.long), torch.tensor(both_i, dtype=torch.long),
        torch.tensor(lo, dtype=t), torch.tensor(up, dtype=t), torch.tensor(both, dtype=t).reshape(-1, 2), mu, sd,
    )
    return out.numpy()


def log_ei(mean: np.ndarray, std: np.ndarray, best: float, maximise: bool) -> np.ndarray:
    """``(C,)`` log expected improvement over ``best`` (eV) for ``(C,)`` means and stds (eV)."""
    from botorch.acquisition.analytic import _log_ei_helper

    mu = torch.as_tensor(np.asarray(mean, dtype=np.float64))
    sd = torch.as_tensor(np.maximum(np.asarray(std, dtype=np.float64), 1e-9))
    u = (mu - best) / sd if maximise else (best - mu) / sd
    return (_log_ei_helper(u) + sd.log()).numpy()


def top_q(score: np.ndarray, q: int, allowed: np.ndarray) -> np.ndarray:
    """Indices of the ``q`` best ``score`` among ``allowed`` (ties broken by lower index)."""
    idx = np.flatnonzero(allowed)
    s = np.where(np.isfinite(score[idx]), score[idx], -np.inf)
    order = np.lexsort((idx, -s))  # primary: score descending, then index ascending
    return idx[order[:q]]


def kriging_believer_ei(gp, prior_cand: np.ndarray | None, X_cand: np.ndarray, q: int, allowed: np.ndarray,
                        best: float, maximise: bool, X_pending: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy batch of ``q`` candidates by log EI with Kriging-believer fantasies.

    Args:
        gp: a fitted :class:`~invdesign.campaign.gp.TargetGP` (on residuals if ``prior_cand``).
        prior_cand: ``(C,)`` prior mean (eV) or None.
        X_cand: ``(C, d)`` candidate features; ``allowed``: ``(C,)`` bool.
        X_pending: ``(p, d)`` features of pending points, conditioned in first.

    Returns:
        chosen indices ``(<=q,)`` and their log EI at the time of choice.
    """
    allowed = allowed.copy()
    prior = np.zeros(len(X_cand)) if prior_cand is None else prior_cand
    if X_pending is not None and len(X_pending):
        mu_p, _ = gp.predict(X_pending)
        gp.condition(X_pending, mu_p)
    chosen, scores = [], []
    for _ in range(q):
        if not allowed.any():
            break
        mu, sd = gp.predict(X_cand)
        a = log_ei(mu + prior, sd, best, maximise)
        i = int(top_q(a, 1, allowed)[0])
        chosen.append(i)
        scores.append(float(a[i]))
        allowed[i] = False
        believed = float(mu[i] + prior[i])
        best = max(best, believed) if maximise else min(best, believed)
        gp.condition(X_cand[i : i + 1], mu[i : i + 1])
    return np.array(chosen, dtype=np.int64), np.array(scores)
