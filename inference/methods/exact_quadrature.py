"""Quadrature for the exact posterior: the nodes, weights and log evidence over the scales.

:func:`known_noise_nodes` integrates over log sigma (one dimension), :func:`learned_noise_nodes`
over (log(sigma / delta), log delta) (two), both with composite Simpson rules refined until the
log evidence settles; :class:`QuadratureWarning` says when it did not. Used by
:func:`hyperbayes.inference.methods.exact.exact_posterior`, which turns the nodes into moments,
quantiles and draws.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import NDArray
from scipy.special import logsumexp

from hyperbayes.inference.mathematics.linear_gaussian import log_marginal_likelihood
from hyperbayes.models.hyperpriors import Hyperprior
from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = ["QuadratureWarning", "known_noise_nodes", "learned_noise_nodes"]

_TAIL = 60.0  # nats below the peak at which the integrand is treated as zero (e^-60 ~ 1e-26)
_MAX_DOUBLINGS = 7


class QuadratureWarning(RuntimeWarning):
    """The quadrature did not reach the requested accuracy."""


def known_noise_nodes(stats, hp: Hyperprior, noise: float, tol: float):
    def logf(u):
        s = np.exp(u)
        return log_marginal_likelihood(stats, s, noise) + hp.logpdf(s) + u

    lo, hi = _range_1d(logf, _reference_log_scale(stats, noise), _log_support(hp))
    u, logw, log_z, err = _simpson_refined(logf, lo, hi, tol)

    def log_density(u_grid):  # of log sigma: the normalised integrand itself
        return logf(u_grid) - log_z

    return u, np.full_like(u, np.log(noise)), logw, log_z, err, log_density


def learned_noise_nodes(stats, hp: Hyperprior, noise_prior: Hyperprior, tol: float):
    lo_s, hi_s = _log_support(hp)
    lo_d, hi_d = _log_support(noise_prior)
    e, n = stats.eigen, stats.n

    def t_center(rho):  # the conditional mode of log delta given rho, ignoring the priors
        r2 = np.exp(2 * rho)[..., None]
        q = stats.v - np.sum(e.bt**2 * r2 / (1 + r2 * e.lam), axis=-1)
        return 0.5 * np.log(np.maximum(q, 1e-300) / n)

    def logf(rho, t):  # integrand in (rho, t); the Jacobian of (rho, t) -> (u, t) is 1
        s, d = np.exp(rho + t), np.exp(t)
        with np.errstate(invalid="ignore"):
            out = (
                log_marginal_likelihood(stats, s, d)
                + hp.logpdf(s)
                + noise_prior.logpdf(d)
                + rho
                + 2 * t
            )
        return np.where(np.isnan(out), -np.inf, out)

    # Coarse pass: locate the mass in rho and the offsets of t around t_center(rho).
    # A HalfNormal-type prior leaves an e^rho tail as sigma -> 0, so rho needs ~60 units of room.
    rho_c = np.linspace(-80.0, 80.0, 1601) + _reference_log_scale(stats, 1.0)
    off_c = np.linspace(-25.0, 25.0, 401)
    grid = logf(rho_c[:, None], t_center(rho_c)[:, None] + off_c[None, :])
    peak = grid.max()
    if not np.isfinite(peak):
        raise FloatingPointError("the posterior has no mass on the search grid.")
    keep = grid > peak - _TAIL
    rows, cols = np.nonzero(keep)
    rho_lo, rho_hi = rho_c[max(rows.min() - 1, 0)], rho_c[min(rows.max() + 1, rho_c.size - 1)]
    off_lo, off_hi = off_c[max(cols.min() - 1, 0)], off_c[min(cols.max() + 1, off_c.size - 1)]
    if rows.min() == 0 or rows.max() == rho_c.size - 1 or cols.min() == 0 or cols.max() == off_c.size - 1:
        warnings.warn(
            "the posterior mass reaches the edge of the search window; the evidence may be "
            "inaccurate (is a hyperprior extremely wide or the data degenerate?).",
            QuadratureWarning,
            stacklevel=3,
        )
    del lo_s, hi_s, lo_d, hi_d  # supports are enforced by the priors' -inf outside them

    prev = None
    m = 129
    for _ in range(_MAX_DOUBLINGS):
        rho = np.linspace(rho_lo, rho_hi, m)
        off = np.linspace(off_lo, off_hi, m)
        t = t_center(rho)[:, None] + off[None, :]
        vals = logf(rho[:, None], t)
        w_rho = _simpson_weights(m, rho[1] - rho[0])
        w_off = _simpson_weights(m, off[1] - off[0])
        logw = vals + np.log(w_rho)[:, None] + np.log(w_off)[None, :]
        log_z = float(logsumexp(logw))
        if prev is not None and abs(log_z - prev) < tol:
            break
        err = np.inf if prev is None else abs(log_z - prev)
        prev, m = log_z, 2 * m - 1
    else:
        _warn_accuracy(err, tol)
    err = abs(log_z - prev) if prev is not None else np.inf
    u = (rho[:, None] + t).ravel()

    t_lo, t_hi = float(t.min()), float(t.max())

    def log_density(u_grid):  # of log sigma: integrate the integrand over t at fixed u = rho + t
        tt = np.linspace(t_lo, t_hi, 2 * m - 1)
        vals = logf(u_grid[:, None] - tt[None, :], tt[None, :]) - log_z
        return logsumexp(vals + np.log(_simpson_weights(tt.size, tt[1] - tt[0])), axis=1)

    return u, t.ravel(), logw.ravel(), log_z, err, log_density


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


def _reference_log_scale(stats: SufficientStats, noise: float) -> float:
    """A rough log sigma where the likelihood has mass: the RMS size of a ridge fit."""
    e = stats.eigen
    w_rot = e.bt / (e.lam + noise**2 + 1e-300)
    return float(np.log(max(np.sqrt(np.mean(w_rot**2)), 1e-8)))


def _log_support(hp: Hyperprior) -> tuple[float, float]:
    # Nudged inside a finite edge so that round-off in exp(log(edge)) cannot land outside it.
    lo, hi = hp.support()
    nudge = 1e-12
    return (np.log(lo) + nudge if lo > 0 else -np.inf, np.log(hi) - nudge)
