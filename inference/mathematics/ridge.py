"""The ridge path: w(lambda) = (G + lambda I)^-1 b for many lambda from one eigendecomposition.

Ridge with lambda = delta^2 / sigma^2 is the posterior mean of w given sigma (MATH.md sections
4 and 6). With G = V diag(lam) V^T and bt = V^T b (cached on :class:`SufficientStats`),

    w(lambda) = V diag(1 / (lam + lambda)) bt,

so after the one O(D^3) eigendecomposition every lambda costs O(D^2), and the residual sum
of squares on any other set of rows needs only that set's statistics. Pure NumPy.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = [
    "as_lambdas",
    "default_lambda_grid",
    "effective_dof",
    "noise_variance_estimate",
    "residual_sum_of_squares_path",
    "ridge_path",
]

#: Default span of the lambda grid, in units of the mean eigenvalue of G (trace(G) / D).
#: At 1e-6 the shrinkage is negligible for every well-conditioned direction (near least
#: squares); at 1e3 every direction is shrunk by >99.9% (near w = 0).
DEFAULT_SPAN = (1e-6, 1e3)

#: Residual degrees of freedom below which the noise estimate is reported as nan: the fit then
#: (nearly) interpolates and RSS / (N - tr H) is a ratio of two round-off-sized numbers.
MIN_RESIDUAL_DOF = 1e-6


def as_lambdas(lambdas: ArrayLike) -> NDArray[np.float64]:
    """Validate a grid of ridge penalties: a 1-D array of finite positive numbers."""
    grid = np.atleast_1d(np.asarray(lambdas, dtype=float))
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"lambdas must be a non-empty 1-D sequence, got shape {grid.shape}.")
    if not np.all(np.isfinite(grid) & (grid > 0)):
        raise ValueError(
            f"every lambda must be a finite positive number, got min {grid.min()!r}; "
            "lambda = delta^2 / sigma^2 > 0 (use a small positive value for 'almost no penalty')."
        )
    return grid


def default_lambda_grid(
    stats: SufficientStats, *, num: int = 100, span: tuple[float, float] = DEFAULT_SPAN
) -> NDArray[np.float64]:
    """``num`` log-spaced penalties over ``span`` times the mean eigenvalue of G.

    The mean eigenvalue trace(G) / D sets the scale of lambda (it grows with N), so the same
    relative span suits any N and any scaling of X.
    """
    if num < 2:
        raise ValueError(f"a lambda grid needs at least 2 points, got num={num}.")
    lo, hi = span
    if not 0 < lo < hi:
        raise ValueError(f"the span must satisfy 0 < low < high, got {span}.")
    scale = float(np.trace(stats.G)) / stats.d
    if not scale > 0:
        scale = 1.0  # X is all zeros: any lambda gives w = 0; keep a usable grid
    return np.geomspace(lo * scale, hi * scale, num)


def ridge_path(stats: SufficientStats, lambdas: ArrayLike) -> NDArray[np.float64]:
    """Ridge weights for each penalty: array of shape (len(lambdas), D).

    Notes
    -----
    w(lambda) = V diag(1 / (lam + lambda)) V^T b, from the cached eigendecomposition of G:
    O(D^2) per lambda. Valid for N < D and rank-deficient X (lambda > 0).
    """
    grid = as_lambdas(lambdas)
    e = stats.eigen
    return (e.bt / (e.lam + grid[:, None])) @ e.V.T


def residual_sum_of_squares_path(stats: SufficientStats, weights: ArrayLike) -> NDArray[np.float64]:
    """||y - X w||^2 for each row of ``weights`` (shape (L, D)), from ``stats`` alone.

    ``stats`` may be those of any rows (a validation fold): v - 2 w.b + w^T G w, O(D^2) each.
    """
    W = np.atleast_2d(np.asarray(weights, dtype=float))
    return stats.v - 2.0 * (W @ stats.b) + np.einsum("ld,ld->l", W @ stats.G, W)


def effective_dof(stats: SufficientStats, lambdas: ArrayLike) -> NDArray[np.float64]:
    """Effective degrees of freedom tr H(lambda) = sum_k lam_k / (lam_k + lambda)."""
    grid = as_lambdas(lambdas)
    lam = stats.eigen.lam
    return np.sum(lam / (lam + grid[:, None]), axis=1)


def noise_variance_estimate(stats: SufficientStats, lambdas: ArrayLike) -> NDArray[np.float64]:
    """delta_hat^2 = RSS(lambda) / (N - tr H(lambda)), the ridge residual variance.

    The effective degrees of freedom tr H replace D of least squares (Hastie, Tibshirani and
    Friedman 2009, section 3.4.1). nan where N - tr H <= 0 (an interpolating fit leaves no
    residual degrees of freedom; below ``MIN_RESIDUAL_DOF``).
    """
    grid = as_lambdas(lambdas)
    rss = residual_sum_of_squares_path(stats, ridge_path(stats, grid))
    resid_dof = stats.n - effective_dof(stats, grid)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(resid_dof > MIN_RESIDUAL_DOF, np.maximum(rss, 0.0) / resid_dof, np.nan)
