"""The exact hierarchical posterior of the linear-Gaussian model: the project's oracle.

Given sigma (and delta) the weights are Gaussian, so the whole posterior reduces to a one-
(known noise) or two-dimensional (learned noise) integral over the scales, done here by
quadrature (MATH.md section 4). Every sampler in the project is checked against this.

Accuracy: the log evidence is computed by composite Simpson rules whose grids are doubled
until two successive values agree to ``tol`` (default 1e-8 nats), on a range that drops the
integrand by at least 60 nats at both ends (or stops at the edge of the prior's support), so
the stated accuracy of 1e-6 absolute holds with margin; ``quadrature_error`` reports the last
change.

Memory: O(N D + D^2 + G^2) for a grid of G <= 2049 points a side (``MAX_GRID``), whatever D:
only the k = rank(X) <= min(N, D) nonzero eigenvalues of X^T X enter (``exact_reduced``), the
integrand costs O(k) per distinct ratio sigma / delta, and the work is done in bounded blocks.
The D x D posterior covariance of w is the one D^2 term. At N = 30, D = 2000 with learned noise
a run peaks at ~70 MiB, and at ~150 MiB when the grid reaches its cap
(``benchmarks/exact_memory.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hyperbayes.inference.methods.arviz_io import draws_to_datatree
from hyperbayes.inference.methods.exact_quadrature import (
    ImproperPosteriorError,
    Nodes,
    QuadratureWarning,
    known_noise_nodes,
    learned_noise_nodes,
)
from hyperbayes.inference.methods.exact_reduced import ReducedEigen
from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.models.data import Dataset
from hyperbayes.models.hyperpriors import Hyperprior, noise_spec, parse_hyperprior

__all__ = ["ExactPosterior", "ImproperPosteriorError", "QuadratureWarning", "exact_posterior", "run"]


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
    _reduced: ReducedEigen = field(repr=False)

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
        node's cell (continuous, exact up to the grid spacing); w is drawn from its Gaussian,
        whose part on the null space of X (N < D) is the prior N(0, sigma^2 I) there.
        """
        rng = np.random.default_rng(seed)
        idx = rng.choice(self._weights.size, size=n, p=self._weights)
        log_sigma = self._log_sigma[idx] + _jitter(self._log_sigma, rng, n)
        log_noise = self._log_noise[idx] + (0 if self.noise is not None else _jitter(self._log_noise, rng, n))
        sigma, noise = np.exp(log_sigma), np.exp(log_noise)
        out = {"sigma": sigma, "w": self._reduced.sample_weights(sigma, noise, rng)}
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

    Raises
    ------
    ImproperPosteriorError
        With learned noise, when the integral over delta -> 0 is infinite: y lies in the column
        space of X while rank(X) < N (centred data with N <= D + 1, for an intercept), so the
        likelihood grows like delta^-(N - rank) there, and the noise prior does not vanish at 0.

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
    if noise is not None:
        noise = float(noise)
        if not (np.isfinite(noise) and noise > 0):
            raise ValueError(f"noise must be a positive number, got {noise}.")
    else:
        np_ = parse_hyperprior(noise_prior)
        np_.require_proper("the exact posterior with learned noise")
    red = ReducedEigen.from_dataset(data)
    if noise is not None:
        nodes = known_noise_nodes(red, hp, noise, tol)
    else:
        nodes = learned_noise_nodes(red, hp, np_, tol)
    return _assemble(data, red, noise, nodes)


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


def _assemble(data: Dataset, red: ReducedEigen, noise: float | None, nodes: Nodes) -> ExactPosterior:
    ls, ln = nodes.log_sigma, nodes.log_noise
    pw = np.exp(nodes.log_weight - nodes.log_z)
    pw /= pw.sum()
    # The conditional moments of w depend on the node only through rho = log(sigma / delta):
    # sum the weights per distinct rho, then mix O(#rho) Gaussians in the eigenbasis.
    tmp = np.exp(2 * ln)
    tmp *= pw
    mass_d2 = np.bincount(nodes.rho_index, weights=tmp, minlength=nodes.rho.size)
    mass = np.bincount(nodes.rho_index, weights=pw, minlength=nodes.rho.size)
    tmp = np.exp(ls)
    sigma_mean = float(pw @ tmp)
    tmp *= tmp
    sigma2_mean = float(pw @ tmp)
    del tmp
    w_mean, w_cov = red.mixture_moments(nodes.rho, mass, mass_d2, sigma2_mean)
    sigma_sd = float(np.sqrt(max(sigma2_mean - sigma_mean**2, 0.0)))
    # Plot grid over the central 1 - 2e-6 of the mass (the nodes reach far into the tails).
    u = np.linspace(*_quantile(ls, pw, [1e-6, 1 - 1e-6]), 400)
    grid, density = np.exp(u), np.exp(nodes.log_density(u) - u)  # p(sigma) = p(log sigma) / sigma
    noise_mean = noise_sd = None
    if noise is None:
        dn = np.exp(ln)
        noise_mean = float(pw @ dn)
        noise_sd = float(np.sqrt(max(pw @ dn**2 - noise_mean**2, 0.0)))
    return ExactPosterior(
        log_evidence=nodes.log_z,
        sigma_grid=grid,
        sigma_density=density,
        sigma_mean=sigma_mean,
        sigma_sd=sigma_sd,
        w_mean=w_mean,
        w_cov=w_cov,
        noise=noise,
        noise_mean=noise_mean,
        noise_sd=noise_sd,
        quadrature_error=float(nodes.error),
        feature_names=data.feature_names,
        _log_sigma=ls,
        _log_noise=ln,
        _weights=pw,
        _reduced=red,
    )
