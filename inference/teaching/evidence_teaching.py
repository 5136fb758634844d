"""Two teaching computations around the evidence (MATH.md section 3; seed 001's picture).

* :func:`monte_carlo_log_evidence` estimates log p(y | sigma) by averaging the likelihood over
  prior draws of w (logsumexp), and :func:`monte_carlo_error_table` shows, against the exact
  value, how that estimate falls apart as the number of features D grows.
* :func:`nested_model_evidence` measures Occam's razor: the maximised evidence of nested
  models (the first k features, e.g. polynomial degree k - 1) on data from a known model.

Neither is used for inference; the exact O(D) formula of :mod:`hyperbayes.inference.mathematics.linear_gaussian` is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp

from hyperbayes.inference.mathematics.linear_gaussian import log_marginal_likelihood
from hyperbayes.inference.methods.empirical_bayes import empirical_bayes
from hyperbayes.models.data import Dataset, simulate
from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = [
    "MonteCarloErrorTable",
    "NestedEvidence",
    "legendre_design",
    "monte_carlo_error_table",
    "monte_carlo_log_evidence",
    "nested_model_evidence",
]

_CHUNK = 8192  # prior draws per block, so memory stays O(chunk * D)


def monte_carlo_log_evidence(
    stats: SufficientStats, *, sigma: float, noise: float, draws: int, seed: int | np.random.Generator
) -> float:
    """Simple Monte Carlo estimate of log p(y | sigma): logsumexp_k log p(y | w_k) - log K.

    Parameters
    ----------
    stats : SufficientStats
    sigma, noise : float
        Prior scale and (known) noise scale.
    draws : int
        Number K of prior draws w_k ~ N(0, sigma^2 I).
    seed : int or Generator

    Notes
    -----
    The average of p(y | w_k) is unbiased for p(y | sigma), so its log is biased low (Jensen).
    Almost all of the prior mass gives a likelihood far below the best draw's, so the sum is
    dominated by the few draws nearest the posterior; the fraction of prior volume the
    posterior occupies shrinks geometrically with D, and with it the chance that any of K
    draws lands there. log p(y | w) = -1/2 [N log(2 pi delta^2) + (v - 2 w.b + w^T G w) /
    delta^2] uses only the sufficient statistics.
    """
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}.")
    rng = np.random.default_rng(seed)
    d2 = float(noise) ** 2
    parts = []
    for start in range(0, draws, _CHUNK):
        W = sigma * rng.standard_normal((min(_CHUNK, draws - start), stats.d))
        rss = stats.v - 2 * W @ stats.b + np.einsum("kd,de,ke->k", W, stats.G, W)
        parts.append(-0.5 * (stats.n * np.log(2 * np.pi * d2) + rss / d2))
    return float(logsumexp(np.concatenate(parts)) - np.log(draws))


@dataclass(frozen=True)
class MonteCarloErrorTable:
    """Error of the simple Monte Carlo log evidence against the exact value, per D.

    Attributes
    ----------
    d : ndarray
        Numbers of features.
    exact : ndarray
        Exact log p(y | sigma) per D.
    estimate_mean, estimate_sd : ndarray
        Mean and spread of the Monte Carlo estimates over ``repeats`` seeds.
    error : ndarray
        estimate_mean - exact (negative: the estimate is biased low).
    draws, repeats, n : int
    """

    d: NDArray[np.int_]
    exact: NDArray[np.float64]
    estimate_mean: NDArray[np.float64]
    estimate_sd: NDArray[np.float64]
    error: NDArray[np.float64]
    draws: int
    repeats: int
    n: int

    def __str__(self) -> str:
        lines = [f"{'D':>4} {'exact':>12} {'MC mean':>12} {'MC sd':>8} {'error':>10}"]
        for row in zip(self.d, self.exact, self.estimate_mean, self.estimate_sd, self.error, strict=True):
            lines.append("{:>4d} {:>12.3f} {:>12.3f} {:>8.3f} {:>10.3f}".format(*row))
        return "\n".join(lines)


def monte_carlo_error_table(
    *,
    dims: Sequence[int] = (1, 2, 4, 8, 16, 32),
    n: int = 50,
    sigma: float = 1.0,
    noise: float = 1.0,
    draws: int = 10_000,
    repeats: int = 5,
    seed: int,
) -> MonteCarloErrorTable:
    """Simulate data for each D, estimate log p(y | sigma) by Monte Carlo, compare to exact.

    The data for each D are drawn from the model itself (``hyperbayes.models.data.simulate`` with the
    given sigma and noise) and the evidence is evaluated at the true sigma, so any error is the
    estimator's alone. ``repeats`` independent estimates give its spread.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for d in dims:
        data = simulate(n=n, d=int(d), sigma=sigma, noise=noise, seed=rng).data
        stats = SufficientStats.from_dataset(data)
        exact = float(log_marginal_likelihood(stats, sigma, noise))
        est = [monte_carlo_log_evidence(stats, sigma=sigma, noise=noise, draws=draws, seed=rng)
               for _ in range(repeats)]
        rows.append((exact, np.mean(est), np.std(est, ddof=1) if repeats > 1 else np.nan))
    exact, mean, sd = (np.array(c) for c in zip(*rows, strict=True))
    return MonteCarloErrorTable(np.asarray(dims), exact, mean, sd, mean - exact, draws, repeats, n)


def legendre_design(x: ArrayLike, degree: int) -> NDArray[np.float64]:
    """Columns P_1(x) .. P_degree(x) (Legendre polynomials; x rescaled to [-1, 1]).

    Orthogonal on [-1, 1], so one prior scale for all coefficients is reasonable, and the
    models of degree 1 .. degree are nested (the first k columns). The constant P_0 is left
    to the intercept (centre the data).
    """
    x = np.asarray(x, dtype=float)
    lo, hi = x.min(), x.max()
    z = 2 * (x - lo) / (hi - lo) - 1 if hi > lo else np.zeros_like(x)
    return np.polynomial.legendre.legvander(z, degree)[:, 1:]


@dataclass(frozen=True)
class NestedEvidence:
    """Maximised log evidence of the nested models using the first k features, k = 1..K.

    Attributes
    ----------
    k : ndarray
        Number of features in each model.
    log_evidence : ndarray
        max over sigma (and delta when learned) of log p(y | sigma, delta) for each model.
    sigma, noise : ndarray
        The estimates at each k.
    best_k : int
        The k with the largest evidence.
    """

    k: NDArray[np.int_]
    log_evidence: NDArray[np.float64]
    sigma: NDArray[np.float64]
    noise: NDArray[np.float64]
    best_k: int


def nested_model_evidence(data: Dataset, *, noise: float | None = None) -> NestedEvidence:
    """Occam's razor, measured: the type-II maximum likelihood of each nested model.

    The model with k features uses columns 0..k-1 of X. A bigger model always fits at least as
    well (its least-squares residual is smaller), but its evidence pays for the prior volume
    its extra weights spread over; on data from a known model the evidence peaks at or near
    the true k (MacKay 1992; Bishop 2006, section 3.4).

    Parameters
    ----------
    data : Dataset
        Features in nesting order (e.g. :func:`legendre_design` columns), centred if an
        intercept is wanted.
    noise : float or None
        Known noise scale, or None to estimate it for every model.
    """
    ks = np.arange(1, data.d + 1)
    fits = [empirical_bayes(data.subset(features=list(data.feature_names[:k])), noise=noise) for k in ks]
    ev = np.array([f.log_evidence for f in fits])
    return NestedEvidence(
        k=ks, log_evidence=ev, sigma=np.array([f.sigma for f in fits]),
        noise=np.array([f.noise for f in fits]), best_k=int(ks[np.argmax(ev)]),
    )
