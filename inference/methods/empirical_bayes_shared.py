"""Empirical Bayes with one prior scale shared by all features (MATH.md section 3).

Called by :func:`hyperbayes.inference.methods.empirical_bayes.empirical_bayes`, which turns the
raw :class:`SharedFit` into its result. The fit is a vectorised grid over (log sigma[, log
delta]), then damped Newton steps with analytic gradients; the boundary sigma = 0 and the 1-D
closed form (known noise) are recognised on the way. O(D) per evaluation in the eigenbasis of G.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hyperbayes.inference.mathematics.linear_gaussian import log_marginal_likelihood
from hyperbayes.inference.mathematics.optimise import NOISE_FLOOR, fd_hessian, newton_ascent
from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = ["NOISE_FLOOR_MESSAGE", "SharedFit", "fit_shared"]

#: Below e^-12 of the scale where the data start to matter, sigma is numerically zero:
#: sigma^2 lam_max / delta^2 < e^-24 changes log p(y | sigma) by less than 1e-10 per feature.
_LOG_FLOOR = 12.0
#: Grid sizes in log sigma and log delta: fine enough to land in the right basin (spacing
#: ~0.4 and ~1 in log scale), coarse enough to cost nothing next to the pass over the data.
_GRID_U, _GRID_T = 81, 21
NOISE_FLOOR_MESSAGE = (
    "the noise estimate ran to its lower limit (4.5e-5 sd(y)): the marginal likelihood keeps "
    "rising as delta -> 0 because the data can be fitted exactly (e.g. N <= D); the estimates "
    "are not a maximum. Fix the noise scale (--noise) instead."
)


@dataclass(frozen=True)
class SharedFit:
    """The raw shared-sigma optimum: theta = (log sigma[, log delta]) and how it was reached."""

    theta: NDArray[np.float64]  # (log sigma[, log delta]); log sigma = -inf at the boundary
    noise: float
    hessian: NDArray[np.float64] | None
    iterations: int
    converged: bool
    at_boundary: bool
    message: str


def _shared_grad(stats: SufficientStats, u, t):
    """Gradient of log p(y | e^u, e^t) in (u, t), vectorised over u, t (see the Notes of ``empirical_bayes``)."""
    e = stats.eigen
    s2 = np.exp(2 * np.asarray(u, float))[..., None]
    q = np.exp(2 * np.asarray(t, float))[..., None]
    a = q + s2 * e.lam
    bt2 = e.bt**2
    du = -s2[..., 0] * np.sum(e.lam / a - bt2 / a**2, axis=-1)
    dt = -(
        stats.n - stats.d + np.sum(q / a, axis=-1) - stats.v / q[..., 0]
        + np.sum(bt2 * s2 * (a + q) / (q * a**2), axis=-1)
    )
    return du, dt


def _log_ml(stats, u, t):
    return log_marginal_likelihood(stats, np.exp(u), np.exp(t))


def fit_shared(stats: SufficientStats, noise: float | None, max_iter: int) -> SharedFit:
    e, learn = stats.eigen, noise is None
    if stats.d == 1 and not learn:
        return _closed_form_fit(stats, noise)
    t0 = 0.5 * np.log(stats.v / stats.n) if learn else np.log(noise)
    t_lo, t_hi = (t0 - NOISE_FLOOR, t0 + 2.0) if learn else (t0, t0)
    lam_max = e.lam[-1]
    pos = e.lam > lam_max * 1e-12
    u_lo = t_lo - 0.5 * np.log(lam_max) - _LOG_FLOOR
    u_hi = 0.5 * np.log(np.max(e.bt[pos] ** 2 / e.lam[pos] ** 2) + np.exp(2 * t_hi) / e.lam[pos].min()) + 3
    u_grid = np.linspace(u_lo, u_hi, _GRID_U)
    t_grid = np.linspace(t_lo, t_hi, _GRID_T) if learn else np.array([t0])
    U, T = np.meshgrid(u_grid, t_grid, indexing="ij")
    values = _log_ml(stats, U, T)
    i, j = np.unravel_index(np.nanargmax(values), values.shape)
    # Boundary sigma = 0: delta_hat^2 = v / N there; a local maximum when the gradient in
    # sigma^2 points down, i.e. ||b||^2 <= delta^2 tr(G).
    t_b = 0.5 * np.log(stats.v / stats.n) if learn else t0
    boundary_ok = stats.b @ stats.b <= np.exp(2 * t_b) * np.trace(stats.G)
    if i == 0 and boundary_ok:
        return _boundary_fit(stats, t_b, learn)
    fun, jac = _objective(stats, learn, t0)
    x0 = np.array([U[i, j], T[i, j]] if learn else [U[i, j]])
    # One or two parameters from a grid point in the right basin: damped Newton converges in
    # a handful of steps (scipy's L-BFGS-B was measured to cost more than the whole fit).
    theta, hess, steps, converged = newton_ascent(
        x0, lambda th: (fun(th), jac(th)), max_iter=max_iter,
        lower=np.array([u_lo, t_lo][: x0.size]), upper=np.array([u_hi, t_hi][: x0.size]))
    if learn and not converged and theta[1] <= t_lo + 0.5:
        return SharedFit(theta, float(np.exp(theta[1])), hess, steps, False, False,
                          NOISE_FLOOR_MESSAGE)
    if boundary_ok and _log_ml(stats, -np.inf, t_b) >= -fun(theta):
        return _boundary_fit(stats, t_b, learn)
    msg = "maximum of the marginal likelihood found" if converged else (
        f"the optimiser stopped after {steps} Newton steps without converging; the estimates "
        "are not reliable: raise max_iter.")
    noise_hat = float(np.exp(theta[1])) if learn else float(noise)
    return SharedFit(theta, noise_hat, hess, steps, converged, False, msg)


def _objective(stats, learn, t0):
    if learn:
        def fun(th):
            return -float(_log_ml(stats, th[0], th[1]))

        def jac(th):
            return -np.array(_shared_grad(stats, th[0], th[1]))
    else:
        def fun(th):
            return -float(_log_ml(stats, th[0], t0))

        def jac(th):
            return -np.array([_shared_grad(stats, th[0], t0)[0]])
    return fun, jac


def _closed_form_fit(stats, noise):
    c, m, d2 = float(stats.G[0, 0]), float(stats.b[0]), float(noise) ** 2
    sigma2 = max(0.0, (m * m - c * d2) / (c * c))
    if sigma2 == 0.0:
        return _boundary_fit(stats, np.log(noise), False)
    u = 0.5 * np.log(sigma2)
    fun, jac = _objective(stats, False, np.log(noise))
    H = fd_hessian(jac, np.array([u]))
    return SharedFit(np.array([u]), float(noise), H, 0, True, False, "1-D closed form (known noise)")


def _boundary_fit(stats, t_b, learn):
    msg = ("the marginal likelihood is largest at sigma = 0: the data prefer w = 0 (no feature "
           "explains more than noise); the prior scale estimate is 0 and the weights are 0.")
    theta = np.array([-np.inf, t_b] if learn else [-np.inf])
    return SharedFit(theta, float(np.exp(t_b)), None, 0, True, True, msg)
