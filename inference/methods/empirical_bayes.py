"""Empirical Bayes (type-II maximum likelihood) for the prior scale sigma (MATH.md section 3).

The weights are integrated out and the marginal likelihood p(y | sigma, delta) is maximised
over log sigma (and log delta when the noise is learned; one log sigma_j per feature with
``ard=True``). With one shared sigma every evaluation costs O(D) in the eigenbasis of G, so
after one pass over the data the fit itself is negligible; ARD costs O(D^3) per step.

The search with one shared sigma is: a vectorised grid over the log scales (finds the global
maximum, and whether it is the boundary sigma = 0), then damped Newton steps with analytic
gradients and a finite-difference Hessian of them. That Hessian also gives the Laplace
standard error of log sigma, and the size of the last Newton step is the convergence test.
ARD starts with simultaneous exact per-feature updates (Tipping & Faul 2003), then Newton.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hyperbayes.inference.mathematics.linear_gaussian import (
    RCOND_GRAM,
    ard_terms,
    log_marginal_likelihood,
    posterior_weights,
    sufficient_stats,
)
from hyperbayes.inference.mathematics.optimise import laplace_se
from hyperbayes.inference.methods.empirical_bayes_ard import ARDFit, fit_ard
from hyperbayes.inference.methods.empirical_bayes_shared import (
    NOISE_FLOOR_MESSAGE,
    SharedFit,
    fit_shared,
)
from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.models.data import DataError, Dataset
from hyperbayes.models.streaming import StreamedData
from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = ["EmpiricalBayesResult", "OneDimensionalEB", "empirical_bayes", "one_dimensional_eb", "run"]


@dataclass(frozen=True)
class OneDimensionalEB:
    """The closed form for one feature and known noise (MATH.md section 3).

    Attributes
    ----------
    sigma2 : float
        sigma_hat^2 = max(0, (m^2 - c delta^2) / c^2) with c = x.x, m = x.y.
    w_ml : float
        m / c (nan when c = 0).
    w_map : float
        sigma_hat^2 m / (delta^2 + sigma_hat^2 c), the posterior mean at sigma_hat.
    at_boundary : bool
        m^2 <= c delta^2: the evidence is maximised at sigma = 0.
    """

    sigma2: float
    w_ml: float
    w_map: float
    at_boundary: bool


def one_dimensional_eb(x: ArrayLike, y: ArrayLike, *, noise: float) -> OneDimensionalEB:
    """Empirical Bayes for y = w x + eps with known noise, in closed form.

    Notes
    -----
    Setting d/d sigma^2 of log p(y | sigma) = 0 gives sigma^2 = (m^2 - c delta^2) / c^2, and
    whenever that is positive it equals w_ML * w_MAP(sigma^2): the estimated prior variance is
    the product of the unregularised and the regularised weight. Seed 001's identity; it has no
    analogue for D > 1.
    """
    _check_noise(noise)
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    c, m, d2 = float(x @ x), float(x @ y), float(noise) ** 2
    sigma2 = max(0.0, (m * m - c * d2) / (c * c)) if c > 0 else 0.0
    w_ml = m / c if c > 0 else float("nan")
    w_map = sigma2 * m / (d2 + sigma2 * c)
    return OneDimensionalEB(sigma2, w_ml, w_map, sigma2 == 0.0)


@dataclass(frozen=True)
class EmpiricalBayesResult:
    """The type-II maximum-likelihood estimates and what follows from them.

    Attributes
    ----------
    sigma : float
        The estimated prior scale (with ARD: the root mean square of ``sigmas``, i.e. the
        prior scale of a weight picked at random).
    sigmas : ndarray (D,)
        One scale per feature (all equal to ``sigma`` without ARD; 0 for pruned features).
    noise : float
        The noise scale delta: estimated when ``noise_learned``, else the given one.
    noise_learned : bool
    log_evidence : float
        log p(y | sigma_hat, delta_hat): the maximised marginal likelihood (not the evidence
        under a hyperprior).
    w_mean, w_cov : ndarray
        Posterior mean (D,) and covariance (D, D) of w given the estimates.
    ridge_lambda : float
        delta^2 / sigma^2 (inf at the boundary): the ridge penalty EB picks. ``ridge_lambdas``
        is the per-feature version.
    log_sigma_se : float
        Laplace standard error of log sigma from the curvature of the log marginal
        likelihood (nan at the boundary and with ARD; see ``log_sigmas_se``).
    log_sigmas_se : ndarray (D,)
        Per-feature Laplace standard errors (nan for pruned features).
    log_noise_se : float or None
        Laplace standard error of log delta when it is learned.
    iterations : int
        Optimiser iterations (Newton steps; with ARD plus the per-feature update sweeps; 0 for
        the 1-D closed form).
    converged : bool
        Whether the last Newton step was below ``STEP_TOL`` (or the closed form was used).
    at_boundary : bool
        The optimum is sigma = 0 (all sigma_j = 0 with ARD): the data prefer w = 0.
    pruned : tuple of str
        ARD: the features whose sigma_j went to 0 (irrelevant to the evidence).
    route : str
        How the eigen-statistics were computed: ``"gram"`` or ``"qr"`` (ill-conditioned X).
    message : str
        A sentence on how the optimum was found, or why it is at the boundary.
    """

    sigma: float
    sigmas: NDArray[np.float64]
    noise: float
    noise_learned: bool
    log_evidence: float
    w_mean: NDArray[np.float64]
    w_cov: NDArray[np.float64]
    ridge_lambda: float
    ridge_lambdas: NDArray[np.float64]
    log_sigma_se: float
    log_sigmas_se: NDArray[np.float64]
    log_noise_se: float | None
    iterations: int
    converged: bool
    at_boundary: bool
    pruned: tuple[str, ...]
    feature_names: tuple[str, ...]
    ard: bool
    route: str
    message: str


def empirical_bayes(
    data: Dataset | SufficientStats,
    *,
    noise: float | None = None,
    ard: bool = False,
    max_iter: int = 500,
) -> EmpiricalBayesResult:
    """Maximise the marginal likelihood over sigma (and delta; and sigma_j with ARD).

    Parameters
    ----------
    data : Dataset or SufficientStats
        The data (centred already if an intercept is wanted). From a Dataset the statistics
        are built with :func:`hyperbayes.inference.mathematics.linear_gaussian.sufficient_stats`, which switches to a
        QR/SVD route for ill-conditioned X; given statistics are used as they are.
    noise : float or None
        Known noise scale delta, or None to estimate it too.
    ard : bool
        One prior scale per feature (automatic relevance determination).
    max_iter : int
        Iteration limit (Newton steps; ARD update sweeps). Hitting it is reported
        (``converged=False`` and ``message``), not raised.

    Returns
    -------
    EmpiricalBayesResult

    Examples
    --------
    >>> from hyperbayes.models.data import simulate
    >>> sim = simulate(n=200, d=10, sigma=1.0, noise=0.5, seed=3)
    >>> fit = empirical_bayes(sim.data)
    >>> round(fit.sigma, 3), round(fit.noise, 3), fit.converged
    (0.747, 0.457, True)

    Notes
    -----
    log p(y | sigma, delta) = -1/2 [N log(2 pi delta^2) + sum_i log(1 + sigma^2 lam_i / delta^2)
    + (v - sum_i bt_i^2 sigma^2 / (delta^2 + sigma^2 lam_i)) / delta^2]  (MATH.md section 3).
    With a_i = delta^2 + sigma^2 lam_i its gradient in u = log sigma is
    -sigma^2 sum_i (lam_i / a_i - bt_i^2 / a_i^2); at sigma = 0 its sign is that of
    ||b||^2 - delta^2 tr(G), so sigma = 0 is a local maximum when ||b||^2 <= delta^2 tr(G)
    (for D = 1: m^2 <= c delta^2). The grid decides between that boundary and an interior
    maximum. References: MacKay (1992), Bayesian interpolation; Bishop (2006), section 3.5;
    Tipping (2001), Sparse Bayesian learning and the relevance vector machine.
    """
    if noise is not None:
        _check_noise(noise)
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}.")
    if isinstance(data, Dataset):
        stats, names = sufficient_stats(data), data.feature_names
        lam = stats.eigen.lam
        route = "qr" if lam[0] < RCOND_GRAM * lam[-1] else "gram"  # the switch sufficient_stats makes
    elif isinstance(data, StreamedData):  # statistics of a streamed pass (no rows for QR)
        stats, names, route = data.stats, data.feature_names, "streamed"
    elif isinstance(data, SufficientStats):
        stats, names, route = data, tuple(f"x{j}" for j in range(data.d)), "given"
    else:
        raise TypeError(f"data must be a Dataset or SufficientStats, got {type(data).__name__}.")
    if stats.eigen.lam[-1] <= 0.0:
        raise DataError("X is all zeros, so the data say nothing about sigma; check the columns.")
    shared = fit_shared(stats, noise, max_iter)
    if ard:
        start = np.exp(shared.theta[0]) if np.isfinite(shared.theta[0]) else 1.0
        fit = fit_ard(stats, noise=noise, max_iter=max_iter, start_sigma=start, start_noise=shared.noise)
        return _ard_result(stats, fit, names, route, noise)
    return _shared_result(stats, shared, names, route)


# ---------------------------------------------------------------- results


def _shared_result(stats, fit: SharedFit, names, route) -> EmpiricalBayesResult:
    sigma = float(np.exp(fit.theta[0]))
    learn = fit.theta.size == 2
    mean, cov = posterior_weights(stats, sigma, fit.noise)
    se = laplace_se(fit.hessian) if fit.hessian is not None else np.full(fit.theta.size, np.nan)
    lam = fit.noise**2 / sigma**2 if sigma > 0 else np.inf
    return EmpiricalBayesResult(
        sigma=sigma, sigmas=np.full(stats.d, sigma), noise=fit.noise, noise_learned=learn,
        log_evidence=float(log_marginal_likelihood(stats, sigma, fit.noise)),
        w_mean=mean, w_cov=cov, ridge_lambda=lam, ridge_lambdas=np.full(stats.d, lam),
        log_sigma_se=float(se[0]), log_sigmas_se=np.full(stats.d, se[0]),
        log_noise_se=float(se[1]) if learn else None, iterations=fit.iterations,
        converged=fit.converged, at_boundary=fit.at_boundary,
        pruned=tuple(names) if fit.at_boundary else (), feature_names=tuple(names),
        ard=False, route=route, message=fit.message,
    )


def _ard_result(stats, fit: ARDFit, names, route, noise) -> EmpiricalBayesResult:
    d, learn = stats.d, noise is None
    theta, H, pruned, iterations = fit.theta, fit.hessian, fit.pruned, fit.iterations
    at_noise_floor, converged = fit.at_noise_floor, fit.converged
    sigmas = np.exp(theta[:d])
    delta = float(np.exp(theta[d])) if learn else float(noise)
    tr = ard_terms(stats, sigmas, delta)
    active = np.r_[~pruned, [True] if learn else []].astype(bool)
    se = np.full(theta.size, np.nan)
    if H is not None:
        se[active] = laplace_se(H)
    names_pruned = tuple(n for n, p in zip(names, pruned, strict=True) if p)
    all_pruned = bool(pruned.all())
    if at_noise_floor:
        msg = NOISE_FLOOR_MESSAGE
    elif not converged:
        msg = (f"the ARD optimiser did not converge after {iterations} iterations; "
               "the estimates are not reliable: raise max_iter.")
    elif all_pruned:
        msg = "every sigma_j went to 0: the data prefer w = 0."
    else:
        msg = f"ARD maximum found; {len(names_pruned)} of {d} features pruned (sigma_j = 0)."
    with np.errstate(divide="ignore"):
        lams = delta**2 / sigmas**2
    mean_s2 = float(np.mean(sigmas**2))
    return EmpiricalBayesResult(
        sigma=float(np.sqrt(mean_s2)), sigmas=sigmas, noise=delta, noise_learned=learn,
        log_evidence=tr.log_ml, w_mean=tr.mean, w_cov=tr.cov,
        ridge_lambda=delta**2 / mean_s2 if mean_s2 > 0 else np.inf,
        ridge_lambdas=lams, log_sigma_se=float("nan"), log_sigmas_se=se[:d],
        log_noise_se=float(se[d]) if learn else None, iterations=iterations,
        converged=converged, at_boundary=all_pruned, pruned=names_pruned,
        feature_names=tuple(names), ard=True, route=route, message=msg,
    )


# ---------------------------------------------------------------- runner


def run(data: Dataset, options: RunOptions) -> MethodSummary:
    """The ``eb`` method of the CLI and ``compare``: :func:`empirical_bayes` as a MethodSummary.

    The hyperpriors in ``options`` are ignored (empirical Bayes maximises the likelihood);
    ``options.noise`` None means the noise is estimated too.
    """
    start = time.perf_counter()
    res = empirical_bayes(data, noise=options.noise, ard=options.ard)
    wall = time.perf_counter() - start
    warnings = []
    if not res.converged:
        warnings.append(res.message)
    if res.at_boundary:
        warnings.append(res.message)
    interval = None
    if not res.ard and np.isfinite(res.log_sigma_se):
        half = 1.959963984540054 * res.log_sigma_se
        interval = (res.sigma * np.exp(-half), res.sigma * np.exp(half))
    extra = {
        "kind": "type-II maximum likelihood",
        "lambda": res.ridge_lambda,
        "at_boundary": res.at_boundary,
        "log_sigma_se": res.log_sigma_se,
        "log_noise_se": res.log_noise_se,
        "noise_learned": res.noise_learned,
        "converged": res.converged,
        "iterations": res.iterations,
        "route": res.route,
        "message": res.message,
    }
    if res.ard:
        extra |= {
            "ard": True,
            "sigma_per_feature": dict(zip(res.feature_names, res.sigmas.tolist(), strict=True)),
            "log_sigma_se_per_feature": dict(zip(res.feature_names, res.log_sigmas_se.tolist(), strict=True)),
            "pruned": list(res.pruned),
        }
    return MethodSummary(
        method="eb", sigma=res.sigma, sigma_interval=interval, noise=res.noise,
        log_evidence=res.log_evidence, weights=tuple(res.w_mean.tolist()),
        diagnostics={"converged": res.converged, "iterations": res.iterations},
        warnings=tuple(warnings), extra=extra, wall_time=wall,
    )


def _check_noise(noise) -> None:
    if not (np.isfinite(noise) and noise > 0):
        raise ValueError(f"the noise scale must be a positive number, got {noise}; "
                         "pass noise=None to estimate it.")

