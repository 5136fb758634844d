"""Empirical Bayes with one prior scale per feature (ARD; MATH.md section 3).

Called by :func:`hyperbayes.inference.methods.empirical_bayes.empirical_bayes` with ``ard=True``, which turns the
raw :class:`ARDFit` into its result. O(D^3) per step through
:func:`hyperbayes.inference.mathematics.linear_gaussian.ard_terms`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hyperbayes.inference.mathematics.linear_gaussian import ard_terms
from hyperbayes.inference.mathematics.optimise import NOISE_FLOOR, newton_ascent
from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = ["ARDFit", "fit_ard", "sparsity_quality"]


@dataclass(frozen=True)
class ARDFit:
    """The raw ARD optimum: theta = (log sigma_1..D[, log delta]), -inf for pruned features."""

    theta: NDArray[np.float64]
    hessian: NDArray[np.float64] | None  # over the unpruned coordinates
    pruned: NDArray[np.bool_]
    iterations: int
    converged: bool
    at_noise_floor: bool


def fit_ard(
    stats: SufficientStats,
    *,
    noise: float | None,
    max_iter: int,
    start_sigma: float,
    start_noise: float,
) -> ARDFit:
    """ARD: simultaneous per-feature optimal updates to the basin, then exact pruning + Newton.

    Each feature's scale is set to its exact optimum given the others (Tipping & Faul 2003;
    zero when q_j^2 <= s_j, which prunes it exactly), the noise to MacKay's fixed point
    delta^2 = ||y - X mean||^2 / (N - sum gamma_j); a step that lowers the likelihood is
    halved in log scale. Newton polishing on the unpruned scales then converges quadratically,
    and the pruned set is re-tested at the end.
    """
    learn, d = noise is None, stats.d
    s2 = np.full(d, float(start_sigma) ** 2)
    q = float(start_noise) ** 2
    q_floor = stats.v / stats.n * np.exp(-2 * NOISE_FLOOR)
    best = ard_terms(stats, np.sqrt(s2), np.sqrt(q))
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (it is read after the loop)
        s_loo, q_loo = sparsity_quality(stats, best, np.sqrt(s2))
        s2_new = np.where(q_loo**2 > s_loo, (q_loo**2 - s_loo) / s_loo**2, 0.0)
        q_new = q
        if learn:
            gamma = np.where(s2 > 0, 1.0 - np.diag(best.cov) / np.where(s2 > 0, s2, 1.0), 0.0)
            q_new = stats.residual_sum_of_squares(best.mean) / max(stats.n - gamma.sum(), 1e-12)
            q_new = max(q_new, q_floor)
        for _ in range(30):
            trial = ard_terms(stats, np.sqrt(s2_new), np.sqrt(q_new))
            if trial.log_ml >= best.log_ml:
                break
            # damp in log scale (pruning moves are kept: they are exact coordinate optima)
            s2_new = np.where((s2_new > 0) & (s2 > 0), np.sqrt(s2_new * s2), s2_new)
            q_new = np.sqrt(q_new * q)
        with np.errstate(divide="ignore", invalid="ignore"):
            moved = np.nanmax(np.abs(np.log(s2_new / s2))[(s2_new > 0) & (s2 > 0)], initial=0.0)
        stable = np.array_equal(s2_new > 0, s2 > 0) and moved < 1e-3 and abs(np.log(q_new / q)) < 1e-3
        s2, q, best = s2_new, q_new, trial
        if stable:
            break
    with np.errstate(divide="ignore"):  # log 0 = -inf marks a pruned feature
        theta = np.r_[0.5 * np.log(s2), [0.5 * np.log(q)] if learn else []]
    pruned = s2 == 0
    H, steps, converged = None, 0, it < max_iter
    for _ in range(5):  # Newton on the unpruned scales, then re-test the pruned set
        theta, H, steps_k, ok = _polish_active(stats, theta, pruned, noise)
        steps, converged = steps + steps_k, converged and ok
        tr = ard_terms(stats, np.exp(theta[:d]), np.exp(theta[d]) if learn else noise)
        s_loo, q_loo = sparsity_quality(stats, tr, np.exp(theta[:d]))
        want = q_loo**2 <= s_loo
        if np.array_equal(want, pruned):
            break
        revive = pruned & ~want
        theta[:d][revive] = 0.5 * np.log((q_loo[revive] ** 2 - s_loo[revive]) / s_loo[revive] ** 2)
        theta[:d][want] = -np.inf
        pruned = want
    else:
        converged = False
    at_noise_floor = bool(learn and theta[d] <= 0.5 * np.log(q_floor) + 0.5)
    return ARDFit(theta, H, pruned, it + steps, bool(converged and not at_noise_floor), at_noise_floor)


def _polish_active(stats, theta, pruned, noise):
    learn, d = noise is None, stats.d
    active = np.r_[~pruned, [True] if learn else []].astype(bool)
    if not active.any():
        return theta, None, 0, True

    def fun_active(x):
        th = theta.copy()
        th[active] = x
        tr = ard_terms(stats, np.exp(th[:d]), np.exp(th[d]) if learn else noise)
        g = np.r_[tr.grad_log_sigma, [tr.grad_log_noise] if learn else []]
        return -tr.log_ml, -g[active]

    x, H, steps, converged = newton_ascent(theta[active], fun_active, max_iter=50)
    theta = theta.copy()
    theta[active] = x
    return theta, H, steps, converged


def sparsity_quality(stats, tr, sigmas):
    """Leave-feature-j-out "sparsity" s_j and "quality" q_j of Tipping & Faul (2003).

    With everything but feature j fixed, log p(y) as a function of sigma_j^2 is maximised at
    sigma_j^2 = (q_j^2 - s_j) / s_j^2 when q_j^2 > s_j and at sigma_j = 0 otherwise (for D = 1
    this is the closed form of MATH.md section 3). S_j = G_jj / q - (G Cov G)_jj / q^2 and
    Q_j = (b - G mean)_j / q are the same quantities with feature j included.
    """
    q = tr.noise2
    GC = stats.G @ tr.cov
    S = np.diag(stats.G) / q - np.einsum("ij,ji->i", GC, stats.G) / q**2
    Q = (stats.b - stats.G @ tr.mean) / q
    denom = 1.0 - sigmas**2 * S
    return S / denom, Q / denom


