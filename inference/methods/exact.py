"""The exact hierarchical posterior of the linear-Gaussian model: the project's oracle.

Given sigma (and delta) the weights are Gaussian, so the whole posterior reduces to a one-
(known noise) or two-dimensional (learned noise) integral over the scales, done here by
quadrature (MATH.md section 4). Every sampler in the project is checked against this.

Accuracy: the log evidence is computed by composite Simpson rules whose grids are doubled
until two successive values agree to ``tol`` (default 1e-8 nats), on a range that drops the
integrand by at least 60 nats at both ends (or stops at the edge of the prior's support), so
the stated accuracy of 1e-6 absolute holds with margin; ``quadrature_error`` reports the last
change.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp

from hyperbayes.inference.mathematics.linear_gaussian import log_marginal_likelihood
from hyperbayes.inference.methods.arviz_io import draws_to_datatree
from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.models.data import Dataset
from hyperbayes.models.hyperpriors import Hyperprior, noise_spec, parse_hyperprior
from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = ["ExactPosterior", "QuadratureWarning", "exact_posterior", "run"]

_TAIL = 60.0  # nats below the peak at which the integrand is treated as zero (e^-60 ~ 1e-26)
_MAX_DOUBLINGS = 7


class QuadratureWarning(RuntimeWarning):
    """The quadrature did not reach the requested accuracy."""


@dataclass(frozen=True, eq=False)
class ExactPosterior:
    """The exact posterior over (sigma[, delta], w), held as a quadrature grid.

    Attributes
    ----------
    log_evidence : float
        log p(y), marginal over sigma (and delta) and w.
    sigma_grid, sigma_density : ndarray
        The marginal posterior density of sigma on a grid (for plots).
    sigma_mean, sigma_sd : float
    w_mean : ndarray (D,), w_cov : ndarray (D, D)
        Posterior moments of w, a scale mixture of Gaussians.
    noise : float or None
        The known noise scale (None when learned).
    noise_mean, noise_sd : float or None
        Posterior moments of delta when it is learned.
    quadrature_error : float
        Change in the log evidence at the last grid refinement.
    """

    log_evidence: float
    sigma_grid: NDArray[np.float64]
    sigma_density: NDArray[np.float64]
    sigma_mean: float
    sigma_sd: float
    w_mean: NDArray[np.float64]
    w_cov: NDArray[np.float64]
    noise: float | None
    noise_mean: float | None
    noise_sd: float | None
    quadrature_error: float
    feature_names: tuple[str, ...]
    # Quadrature nodes: log sigma, log delta, normalised weights; used for quantiles and draws.
    _log_sigma: NDArray[np.float64] = field(repr=False)
    _log_noise: NDArray[np.float64] = field(repr=False)
    _weights: NDArray[np.float64] = field(repr=False)
    _stats: SufficientStats = field(repr=False)

    @property
    def w_sd(self) -> NDArray[np.float64]:
        """Posterior standard deviations of the weights."""
        return np.sqrt(np.diag(self.w_cov))

    def sigma_quantile(self, q: ArrayLike) -> NDArray[np.float64]:
        """Posterior quantiles of sigma (exact up to the grid's interpolation)."""
        return np.exp(_quantile(self._log_sigma, self._weights, q))

    def noise_quantile(self, q: ArrayLike) -> NDArray[np.float64]:
        """Posterior quantiles of delta (learned noise only)."""
        if self.noise is not None:
            raise ValueError("the noise is known in this posterior; it has no quantiles.")
        return np.exp(_quantile(self._log_noise, self._weights, q))

    def sample(self, n: int, *, seed: int | np.random.Generator) -> dict[str, NDArray]:
        """Exact i.i.d. draws: (sigma, delta) from the quadrature measure, then w | sigma, delta.

        The scales are drawn by inverse CDF of the node weights with uniform jitter inside a
        node's cell (continuous, exact up to the grid spacing); w is drawn from its Gaussian.
        """
        rng = np.random.default_rng(seed)
        idx = rng.choice(self._weights.size, size=n, p=self._weights)
        log_sigma = self._log_sigma[idx] + _jitter(self._log_sigma, rng, n)
        log_noise = self._log_noise[idx] + (0 if self.noise is not None else _jitter(self._log_noise, rng, n))
        sigma, noise = np.exp(log_sigma), np.exp(log_noise)
        e = self._stats.eigen
        shrink = sigma[:, None] ** 2 / (sigma[:, None] ** 2 * e.lam + noise[:, None] ** 2)
        mean_rot = shrink * e.bt
        sd_rot = np.sqrt(noise[:, None] ** 2 * shrink)
        w = (mean_rot + sd_rot * rng.standard_normal(mean_rot.shape)) @ e.V.T
        out = {"sigma": sigma, "w": w}
        if self.noise is None:
            out["noise"] = noise
        return out

    def draws(self, n: int = 4000, *, seed: int | np.random.Generator) -> object:
        """:meth:`sample` as an ArviZ DataTree (one chain), to sit beside MCMC output."""
        s = self.sample(n, seed=seed)
        return draws_to_datatree(
            {k: v[None, ...] for k, v in s.items()},
            feature_names=self.feature_names,
            attrs={"method": "exact", "log_evidence": self.log_evidence},
        )


def exact_posterior(
    data: Dataset,
    *,
    hyperprior: Hyperprior | str,
    noise: float | None = None,
    noise_prior: Hyperprior | str | None = None,
    tol: float = 1e-8,
) -> ExactPosterior:
    """Compute the exact posterior of sigma (and delta) and w by quadrature.

    Parameters
    ----------
    data : Dataset
        The data (centred already if an intercept is wanted).
    hyperprior : Hyperprior or str
        Proper prior on sigma.
    noise : float, optional
        Known noise scale delta. Give exactly one of ``noise`` and ``noise_prior``.
    noise_prior : Hyperprior or str, optional
        Proper prior on delta, to learn it.
    tol : float
        Grid refinement stops when the log evidence changes by less than this.

    Returns
    -------
    ExactPosterior

    Notes
    -----
    With u = log sigma the evidence is p(y) = int p(y | e^u, delta) p_sigma(e^u) e^u du
    (MATH.md section 4). With the noise learned the integral is two-dimensional; it is taken
    in (rho, t) = (log(sigma / delta), log delta), in which, for fixed rho, the likelihood is an
    inverse-gamma kernel in delta^2 centred at Q(rho) / N with Q(rho) = y^T (rho^2 X X^T + I)^-1 y,
    so each inner grid can be centred where the mass is.
    """
    hp = parse_hyperprior(hyperprior)
    hp.require_proper("the exact posterior (the evidence)")
    noise_spec(noise, noise_prior)  # exactly one of the two
    stats = SufficientStats.from_dataset(data)
    if noise is not None:
        noise = float(noise)
        if not (np.isfinite(noise) and noise > 0):
            raise ValueError(f"noise must be a positive number, got {noise}.")
        nodes = _known_noise_nodes(stats, hp, noise, tol)
    else:
        np_ = parse_hyperprior(noise_prior)
        np_.require_proper("the exact posterior with learned noise")
        nodes = _learned_noise_nodes(stats, hp, np_, tol)
    log_sigma, log_noise, log_w, log_z, err, log_density = nodes
    weights = np.exp(log_w - log_z)
    weights /= weights.sum()
    return _assemble(data, stats, noise, log_sigma, log_noise, weights, log_z, err, log_density)


def run(data: Dataset, options: RunOptions) -> MethodSummary:
    """The exact oracle as a method of the comparison (``hyperbayes fit exact``)."""
    start = time.perf_counter()
    post = exact_posterior(
        data,
        hyperprior=options.hyperprior,
        noise=options.noise,
        noise_prior=options.noise_prior,
    )
    warn = []
    if options.ard:
        warn.append("the exact oracle has one shared sigma; --ard is ignored here.")
    lo, hi = post.sigma_quantile([0.025, 0.975])
    extra = {
        "sigma_sd": post.sigma_sd,
        "quadrature_error": post.quadrature_error,
        # The density of log sigma on a grid, so plots can draw the exact curve.
        "log_sigma_density": {
            "log_sigma": np.log(post.sigma_grid).tolist(),
            "density": (post.sigma_density * post.sigma_grid).tolist(),
        },
    }
    if post.noise is None:
        extra["noise_interval"] = list(post.noise_quantile([0.025, 0.975]))
    return MethodSummary(
        method="exact",
        sigma=post.sigma_mean,
        sigma_interval=(float(lo), float(hi)),
        noise=post.noise if post.noise is not None else post.noise_mean,
        log_evidence=post.log_evidence,
        weights=tuple(map(float, post.w_mean)),
        warnings=tuple(warn),
        extra=extra,
        draws=post.draws(options.draws or 4000, seed=options.seed),
        wall_time=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- quadrature


def _known_noise_nodes(stats, hp: Hyperprior, noise: float, tol: float):
    def logf(u):
        s = np.exp(u)
        return log_marginal_likelihood(stats, s, noise) + hp.logpdf(s) + u

    lo, hi = _range_1d(logf, _reference_log_scale(stats, noise), _log_support(hp))
    u, logw, log_z, err = _simpson_refined(logf, lo, hi, tol)

    def log_density(u_grid):  # of log sigma: the normalised integrand itself
        return logf(u_grid) - log_z

    return u, np.full_like(u, np.log(noise)), logw, log_z, err, log_density


def _learned_noise_nodes(stats, hp: Hyperprior, noise_prior: Hyperprior, tol: float):
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


def _quantile(log_x: NDArray, weights: NDArray, q: ArrayLike) -> NDArray[np.float64]:
    order = np.argsort(log_x, kind="stable")
    xs, cdf = log_x[order], np.cumsum(weights[order])
    cdf = (cdf - 0.5 * weights[order]) / cdf[-1]  # mid-point rule: each node's mass centred
    return np.interp(np.asarray(q, dtype=float), cdf, xs)


def _jitter(log_x: NDArray, rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    """Uniform offsets within one grid cell (the spacing of the distinct node values)."""
    steps = np.diff(np.unique(log_x))
    h = float(np.min(steps)) if steps.size else 0.0
    return rng.uniform(-h / 2, h / 2, size=n)


def _assemble(
    data, stats, noise, log_sigma, log_noise, weights, log_z, err, log_density
) -> ExactPosterior:
    e = stats.eigen
    sel = weights > weights.max() * 1e-18  # nodes below this carry no measurable mass
    ls, ln, pw = log_sigma[sel], log_noise[sel], weights[sel] / weights[sel].sum()
    s2, d2 = np.exp(2 * ls)[:, None], np.exp(2 * ln)[:, None]
    shrink = s2 / (s2 * e.lam + d2)  # per node, in the eigenbasis
    m_rot = shrink * e.bt
    mean_rot = pw @ m_rot
    second = (m_rot * pw[:, None]).T @ m_rot + np.diag(pw @ (d2 * shrink))
    cov_rot = second - np.outer(mean_rot, mean_rot)
    sigma = np.exp(ls)
    sigma_mean = float(pw @ sigma)
    sigma_sd = float(np.sqrt(max(pw @ sigma**2 - sigma_mean**2, 0.0)))
    # Plot grid over the central 1 - 2e-6 of the mass (the nodes reach far into the tails).
    u = np.linspace(*_quantile(ls, pw, [1e-6, 1 - 1e-6]), 400)
    grid, density = np.exp(u), np.exp(log_density(u) - u)  # p(sigma) = p(log sigma) / sigma
    noise_mean = noise_sd = None
    if noise is None:
        dn = np.exp(ln)
        noise_mean = float(pw @ dn)
        noise_sd = float(np.sqrt(max(pw @ dn**2 - noise_mean**2, 0.0)))
    return ExactPosterior(
        log_evidence=log_z,
        sigma_grid=grid,
        sigma_density=density,
        sigma_mean=sigma_mean,
        sigma_sd=sigma_sd,
        w_mean=e.V @ mean_rot,
        w_cov=e.V @ cov_rot @ e.V.T,
        noise=noise,
        noise_mean=noise_mean,
        noise_sd=noise_sd,
        quadrature_error=float(err),
        feature_names=data.feature_names,
        _log_sigma=ls,
        _log_noise=ln,
        _weights=pw,
        _stats=stats,
    )
