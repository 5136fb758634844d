"""Damped Newton ascent for the small smooth problems of empirical Bayes, and Laplace errors.

The objectives here have one to a few hundred parameters (log scales) and cheap analytic
gradients; a finite-difference Hessian of the gradient gives quadratic convergence, the
convergence test (the size of the last Newton step) and the Laplace standard errors at once.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NOISE_FLOOR", "STEP_TOL", "fd_hessian", "laplace_se", "newton_ascent"]

#: Converged when the remaining Newton step in log sigma (log delta) is below this; that step
#: is still taken, so the estimates are then accurate to about its square (relative).
STEP_TOL = 1e-6
#: Step of the central differences of the analytic gradient that give the Hessian; the
#: truncation error is ~h^2 = 1e-10 relative.
HESS_STEP = 1e-5
#: A learned noise scale is searched down to e^-10 sd(y) ~ 4.5e-5 sd(y). Below that the
#: residual term (v - explained) / delta^2 is mostly round-off (error ~ eps v / delta^2), so
#: a fit that runs there (N <= D, where delta -> 0 really is the limit) is reported as such.
NOISE_FLOOR = 10.0


def newton_ascent(theta, fun, *, max_iter: int, lower=None, upper=None):
    """Damped Newton ascent with a finite-difference Hessian of the analytic gradient.

    ``fun(theta) -> (-log_ml, -gradient)``. Where the Hessian is not negative definite it is
    shifted until it is (Levenberg), and every step is halved until the likelihood does not
    drop, so the polish cannot make a point worse. Returns the point, the Hessian of the log
    likelihood there, the number of steps and whether the last full Newton step was below
    STEP_TOL at a negative definite Hessian. Points are clipped to [lower, upper].
    """
    theta = np.array(theta, dtype=float)
    lower = np.full(theta.size, -np.inf) if lower is None else lower
    upper = np.full(theta.size, np.inf) if upper is None else upper

    def neg_grad(x):
        return fun(x)[1]

    for it in range(max_iter + 1):
        f, ng = fun(theta)
        H = fd_hessian(neg_grad, theta)
        top = np.linalg.eigvalsh(H)[-1]
        if top < 0:
            step = np.linalg.solve(H, ng)  # -H^-1 g with g = -ng
            if np.max(np.abs(step)) < STEP_TOL:  # take it: the error is now ~ step^2
                return theta + step, H, it + 1, True
        else:
            step = np.linalg.solve(H - (top + 1.0) * np.eye(theta.size), ng)
        if it == max_iter:
            break
        step *= min(1.0, 2.0 / np.max(np.abs(step)))  # at most a factor e^2 per step
        for _ in range(40):
            trial = np.clip(theta + step, lower, upper)
            if fun(trial)[0] <= f:
                break
            step /= 2
        else:
            break  # no ascent direction left at machine precision
        if np.array_equal(trial, theta):
            break  # pinned at a bound
        theta = trial
    return theta, H, it, False


def fd_hessian(neg_grad, theta):
    k = theta.size
    H = np.empty((k, k))
    for j in range(k):
        h = np.zeros(k)
        h[j] = HESS_STEP
        H[:, j] = -(neg_grad(theta + h) - neg_grad(theta - h)) / (2 * HESS_STEP)
    return 0.5 * (H + H.T)


def laplace_se(H):
    """Standard errors from the Hessian of the log likelihood (nan unless negative definite)."""
    try:
        cov = np.linalg.inv(-H)
    except np.linalg.LinAlgError:
        return np.full(H.shape[0], np.nan)
    d = np.diag(cov)
    return np.where(d > 0, np.sqrt(np.abs(d)), np.nan)


