"""Quadrature for the exact posterior: the nodes, weights and log evidence over the scales.

:func:`known_noise_nodes` integrates over log sigma (one dimension), :func:`learned_noise_nodes`
over (log(sigma / delta), log delta) (two), both with composite Simpson rules refined until the
log evidence settles; :class:`QuadratureWarning` says when it did not, and
:class:`ImproperPosteriorError` when the integral is infinite. Used by
:func:`hyperbayes.inference.methods.exact.exact_posterior`, which turns the nodes into moments,
quantiles and draws.

Memory: the integrand is evaluated through :class:`ReducedEigen` (O(k) per distinct ratio
sigma / delta, never an array of nodes x D) in blocks of rows, and the two-dimensional grid has
at most :data:`MAX_GRID` points a side, so a run needs O(MAX_GRID^2) floats plus the eigen
system whatever D is. Only the nodes that carry mass are returned.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray
from scipy.special import logsumexp

from hyperbayes.inference.methods.exact_reduced import BLOCK_FLOATS, ReducedEigen
from hyperbayes.models.hyperpriors import Hyperprior, ImproperPriorError
from hyperbayes.models.propriety import posterior_impropriety

__all__ = [
    "MAX_GRID",
    "ImproperPosteriorError",
    "Nodes",
    "QuadratureWarning",
    "known_noise_nodes",
    "learned_noise_nodes",
]

_TAIL = 60.0  # nats below the peak at which the integrand is treated as zero (e^-60 ~ 1e-26)
_MAX_DOUBLINGS = 7  # the 1-D grid: 257 points, doubled at most _MAX_DOUBLINGS + 2 times
#: Points per side of the finest two-dimensional grid (129 doubled four times): a bound on the
#: oracle's memory with learned noise (MAX_GRID^2 nodes, 34 MB per array of them).
MAX_GRID = 2049
_NODE_FLOOR = np.log(1e-18)  # nodes below this fraction of the largest weight carry no mass


class QuadratureWarning(RuntimeWarning):
    """The quadrature did not reach the requested accuracy."""


class ImproperPosteriorError(ImproperPriorError):
    """The posterior does not integrate: the evidence is infinite for these data and priors
    (an :class:`ImproperPriorError`, so ``compare`` shows the oracle as not applicable)."""


class Nodes(NamedTuple):
    """The quadrature nodes that carry mass, and what the moments of w need from them.

    ``rho`` holds the distinct values of log(sigma / delta) on the grid and ``rho_index`` the
    one of each node: the conditional posterior of w depends on the scales only through it.
    """

    log_sigma: NDArray[np.float64]
    log_noise: NDArray[np.float64]
    log_weight: NDArray[np.float64]
    log_z: float
    error: float
    log_density: Callable[[NDArray[np.float64]], NDArray[np.float64]]
    rho: NDArray[np.float64]
    rho_index: NDArray[np.intp]


def known_noise_nodes(red: ReducedEigen, hp: Hyperprior, noise: float, tol: float) -> Nodes:
    """Simpson nodes over u = log sigma for a known noise scale."""
    t0 = float(np.log(noise))

    def logf(u):
        return red.log_likelihood(u - t0, t0) + hp.logpdf(np.exp(u)) + u

    lo, hi = _range_1d(logf, _reference_log_scale(red, noise), _log_support(hp))
    u, logw, log_z, err = _simpson_refined(logf, lo, hi, tol)

    def log_density(u_grid):  # of log sigma: the normalised integrand itself
        return logf(u_grid) - log_z

    (keep,) = np.nonzero(logw > logw.max() + _NODE_FLOOR)
    u, logw = u[keep], logw[keep]
    return Nodes(u, np.full_like(u, t0), logw, log_z, err, log_density, u - t0, np.arange(u.size))


def learned_noise_nodes(
    red: ReducedEigen, hp: Hyperprior, noise_prior: Hyperprior, tol: float
) -> Nodes:
    """Simpson nodes over (rho, t) = (log(sigma / delta), log delta) for a learned noise scale.

    For fixed rho the likelihood is an inverse-gamma kernel in delta^2 centred at Q(rho) / N, so
    each row of the grid is centred there (``t_center``) and spans the same offsets.
    """
    _require_integrable(red, hp, noise_prior)

    def t_center(rho):  # the conditional mode of log delta given rho, ignoring the priors
        _, q = red.ratio_terms(rho)
        return 0.5 * np.log(np.maximum(q, 1e-300) / red.n)

    def logf(rho, t):  # integrand in (rho, t); the Jacobian of (rho, t) -> (u, t) is 1
        with np.errstate(invalid="ignore"):
            out = (
                red.log_likelihood(rho, t)
                + hp.logpdf(np.exp(rho + t))
                + noise_prior.logpdf(np.exp(t))
                + rho
                + 2 * t
            )
        return np.where(np.isnan(out), -np.inf, out)

    # Coarse pass: locate the mass in rho and the offsets of t around t_center(rho).
    # A HalfNormal-type prior leaves an e^rho tail as sigma -> 0, so rho needs ~60 units of room.
    rho_c = np.linspace(-80.0, 80.0, 1601) + _reference_log_scale(red, 1.0)
    off_c = np.linspace(-25.0, 25.0, 401)
    grid = _on_grid(logf, rho_c, t_center(rho_c), off_c)
    peak = grid.max()
    if not np.isfinite(peak):
        raise FloatingPointError("the posterior has no mass on the search grid.")
    rows, cols = np.nonzero(grid > peak - _TAIL)
    rho_lo, rho_hi = rho_c[max(rows.min() - 1, 0)], rho_c[min(rows.max() + 1, rho_c.size - 1)]
    off_lo, off_hi = off_c[max(cols.min() - 1, 0)], off_c[min(cols.max() + 1, off_c.size - 1)]
    if rows.min() == 0 or rows.max() == rho_c.size - 1 or cols.min() == 0 or cols.max() == off_c.size - 1:
        warnings.warn(
            "the posterior mass reaches the edge of the search window; the evidence may be "
            "inaccurate (is a hyperprior extremely wide or the data degenerate?).",
            QuadratureWarning,
            stacklevel=3,
        )
    del grid, rows, cols

    prev, err, m = None, np.inf, 129
    while True:
        rho = np.linspace(rho_lo, rho_hi, m)
        off = np.linspace(off_lo, off_hi, m)
        tc = t_center(rho)
        logw = _on_grid(logf, rho, tc, off)
        logw += np.log(_simpson_weights(m, rho[1] - rho[0]))[:, None]
        logw += np.log(_simpson_weights(m, off[1] - off[0]))[None, :]
        log_z = _logsumexp_blocked(logw)
        if prev is not None:
            err = abs(log_z - prev)
            if err < tol:
                break
        if 2 * m - 1 > MAX_GRID:
            _warn_accuracy(err, tol)
            break
        prev, m = log_z, 2 * m - 1

    rows, cols = np.nonzero(logw > logw.max() + _NODE_FLOOR)
    t = tc[rows] + off[cols]
    t_lo, t_hi = float(tc.min() + off[0]), float(tc.max() + off[-1])

    def log_density(u_grid):  # of log sigma: integrate the integrand over t at fixed u = rho + t
        tt = np.linspace(t_lo, t_hi, 2 * m - 1)
        log_wt = np.log(_simpson_weights(tt.size, tt[1] - tt[0]))
        step = max(1, BLOCK_FLOATS // tt.size)
        out = np.empty(u_grid.size)
        for s in range(0, u_grid.size, step):
            vals = logf(u_grid[s : s + step, None] - tt[None, :], tt[None, :]) - log_z
            out[s : s + step] = logsumexp(vals + log_wt, axis=1)
        return out

    return Nodes(rho[rows] + t, t, logw[rows, cols], log_z, err, log_density, rho, rows)


def _on_grid(logf, rho: NDArray, t_center: NDArray, off: NDArray) -> NDArray[np.float64]:
    """logf(rho_i, t_center_i + off_j) on the (rho x off) grid, a block of rows at a time."""
    out = np.empty((rho.size, off.size))
    step = max(1, BLOCK_FLOATS // off.size)
    for s in range(0, rho.size, step):
        r = rho[s : s + step, None]
        out[s : s + step] = logf(r, t_center[s : s + step, None] + off[None, :])
    return out


def _logsumexp_blocked(a: NDArray) -> float:
    """log(sum(exp(a))) of a 2-D array, a block of rows at a time (no full-size temporaries)."""
    top = float(a.max())
    step = max(1, BLOCK_FLOATS // a.shape[1])
    total = sum(float(np.exp(a[s : s + step] - top).sum()) for s in range(0, a.shape[0], step))
    return top + float(np.log(total))


def _require_integrable(red: ReducedEigen, hp: Hyperprior, noise_prior: Hyperprior) -> None:
    """Raise :class:`ImproperPosteriorError` when the integral is infinite.

    The rule is :func:`hyperbayes.models.propriety.posterior_impropriety` (the one every method
    uses); the common case here is an exact fit (rss = 0, e.g. centring for an intercept with
    N <= D + 1) with a noise prior positive at 0, where p(y | sigma, delta) ~ delta^-(N - k).
    """
    reason = posterior_impropriety(
        rank=red.k, n=red.n, exact=red.rss <= 0, hyperprior=hp, noise_prior=noise_prior
    )
    if reason is not None:
        raise ImproperPosteriorError(f"the posterior is improper: {reason}.")


def _range_1d(logf, center: float, support: tuple[float, float]) -> tuple[float, float]:
    """An interval of u outside which logf is at least _TAIL below its maximum."""
    lo_s, hi_s = support
    u = np.linspace(max(center - 40, lo_s), min(center + 40, hi_s), 1601)
    f = logf(u)
    for _ in range(20):  # widen while the mass touches an open edge
        peak = f.max()
        if not np.isfinite(peak):
            raise FloatingPointError("the posterior has no mass on the search grid.")
        grow_lo = f[0] > peak - _TAIL and u[0] > lo_s
        grow_hi = f[-1] > peak - _TAIL and u[-1] < hi_s
        if not (grow_lo or grow_hi):
            break
        span = u[-1] - u[0]
        u = np.linspace(max(u[0] - span * grow_lo, lo_s), min(u[-1] + span * grow_hi, hi_s), 1601)
        f = logf(u)
    inside = np.nonzero(f > f.max() - _TAIL)[0]
    return u[max(inside[0] - 1, 0)], u[min(inside[-1] + 1, u.size - 1)]


def _simpson_refined(logf, lo: float, hi: float, tol: float):
    prev, m, err = None, 257, np.inf
    for _ in range(_MAX_DOUBLINGS + 3):
        u = np.linspace(lo, hi, m)
        logw = logf(u) + np.log(_simpson_weights(m, u[1] - u[0]))
        log_z = float(logsumexp(logw))
        if prev is not None:
            err = abs(log_z - prev)
            if err < tol:
                return u, logw, log_z, err
        prev, m = log_z, 2 * m - 1
    _warn_accuracy(err, tol)
    return u, logw, log_z, err


def _simpson_weights(m: int, h: float) -> NDArray[np.float64]:
    """Composite Simpson weights for m (odd) equally spaced points with spacing h."""
    w = np.ones(m)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return w * h / 3.0


def _warn_accuracy(err: float, tol: float) -> None:
    warnings.warn(
        f"quadrature stopped with a last change of {err:.2g} nats in the log evidence "
        f"(requested {tol:.1g}).",
        QuadratureWarning,
        stacklevel=4,
    )


def _reference_log_scale(red: ReducedEigen, noise: float) -> float:
    """A rough log sigma where the likelihood has mass: the RMS size of a ridge fit."""
    w_rot = red.bt / (red.lam + noise**2 + 1e-300)
    return float(np.log(max(np.sqrt(np.sum(w_rot**2) / red.d), 1e-8)))


def _log_support(hp: Hyperprior) -> tuple[float, float]:
    # Nudged inside a finite edge so that round-off in exp(log(edge)) cannot land outside it.
    lo, hi = hp.support()
    nudge = 1e-12
    return (np.log(lo) + nudge if lo > 0 else -np.inf, np.log(hi) - nudge)
