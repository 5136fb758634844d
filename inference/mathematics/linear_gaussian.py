"""Closed-form linear-Gaussian computations on sufficient statistics (MATH.md sections 3, 4).

Pure NumPy/SciPy: no PyMC, no I/O. Every function takes a :class:`models.SufficientStats` and is
O(D) or O(D^2) per evaluation after the one cached eigendecomposition of G (O(D^3) per
evaluation for the ARD variants, which have no common eigenbasis).

Building the statistics as G = X^T X squares the condition number of X: an eigenvalue of G
smaller than about eps * lam_max is lost in round-off. :func:`sufficient_stats` detects that
and then computes the same eigen-statistics (lam = s^2, bt = s * U^T y) from a streamed QR of
[X | y] and the SVD of its small triangular factor, so every consumer of ``stats.eigen``
works unchanged and keeps its accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike, NDArray

from hyperbayes.models.data import Dataset
from hyperbayes.models.sufficient_stats import Eigen, SufficientStats, log_marginal_likelihood_eigen

__all__ = [
    "ARDTerms",
    "ard_terms",
    "eigen_from_qr",
    "log_marginal_likelihood",
    "log_marginal_likelihood_ard",
    "posterior_weights",
    "sufficient_stats",
]

#: Below this ratio lam_min / lam_max the eigenvalues of the Gram matrix carry a relative
#: error of at least eps / RCOND_GRAM ~ 2e-8 (Weyl: the absolute error is ~ eps * lam_max),
#: so :func:`sufficient_stats` switches to the QR/SVD route.
RCOND_GRAM = 1e-8

#: Rows per block of the streamed QR (a block of 65,536 x (D + 1) floats stays small).
_QR_BLOCK_ROWS = 65_536

Route = Literal["auto", "gram", "qr"]


def sufficient_stats(data: Dataset, *, route: Route = "auto") -> SufficientStats:
    """Sufficient statistics with an eigendecomposition that is accurate for ill-conditioned X.

    Parameters
    ----------
    data : Dataset
        The data (already centred if an intercept is wanted).
    route : {"auto", "gram", "qr"}
        ``"gram"``: eigendecomposition of G = X^T X (one pass over the data, the fast path).
        ``"qr"``: the eigen-statistics from the thin SVD of X, computed as a streamed QR of
        [X | y] followed by the SVD of the (D + 1) x (D + 1) factor. ``"auto"`` (default) takes
        the Gram route and falls back to QR when lam_min < RCOND_GRAM * lam_max.

    Returns
    -------
    SufficientStats
        With ``.eigen`` already filled in (by whichever route); G, b, v, N are always the plain
        cross-products, so pooling and ``residual_sum_of_squares`` behave as usual.

    Notes
    -----
    X = Q R and R = U_r diag(s) V^T give X = (Q U_r) diag(s) V^T, so lam = s^2 and
    bt = V^T X^T y = s * U_r^T (Q^T y); Q^T y is the last column of the QR factor of [X | y].
    Rounding X itself perturbs s_i by about eps * s_max, i.e. lam_i by a relative
    2 eps cond(X); the Gram route gives eps cond(X)^2 (Golub & Van Loan, section 5.3.8).
    """
    if route not in ("auto", "gram", "qr"):
        raise ValueError(f"route must be 'auto', 'gram' or 'qr', got {route!r}.")
    stats = SufficientStats.from_dataset(data)
    if route == "gram":
        return stats
    if route == "auto":
        lam = stats.eigen.lam
        if lam[0] >= RCOND_GRAM * lam[-1]:
            return stats
    return stats.with_eigen(eigen_from_qr(data.X, data.y))


def eigen_from_qr(X: ArrayLike, y: ArrayLike) -> Eigen:
    """The eigen-statistics (lam, V, bt) of G = X^T X from a streamed QR of [X | y].

    Memory is one block of rows plus a (D + 1) x (D + 1) factor: no copy of X and no
    N x N matrix. Valid for N < D (the missing eigenvalues are zero).
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = X.shape
    R = np.zeros((0, d + 1))
    for start in range(0, n, _QR_BLOCK_ROWS):
        block = np.column_stack([X[start : start + _QR_BLOCK_ROWS], y[start : start + _QR_BLOCK_ROWS]])
        (R,) = scipy.linalg.qr(np.vstack([R, block]), mode="r", check_finite=False)
        R = R[: d + 1]
    k = min(R.shape[0], d)
    Rx, z = R[:k, :d], R[:k, d]
    U, s, Vt = np.linalg.svd(Rx, full_matrices=True)
    lam = np.zeros(d)
    bt = np.zeros(d)
    lam[: s.size] = s**2
    bt[: s.size] = s * (U.T @ z)[: s.size]
    # Ascending order, as numpy.linalg.eigh returns it (consumers may rely on lam[-1] = max).
    return Eigen(lam=lam[::-1].copy(), V=Vt[::-1].T.copy(), bt=bt[::-1].copy())


def log_marginal_likelihood(
    stats: SufficientStats, sigma: ArrayLike, noise: ArrayLike
) -> NDArray[np.float64]:
    """log p(y | sigma, delta), vectorised: ``sigma`` and ``noise`` broadcast together.

    Valid for any N and D (including N < D and rank-deficient X) and at sigma = 0, where it
    is the log density of y under w = 0. See MATH.md section 3.
    """
    sigma, noise = np.broadcast_arrays(np.asarray(sigma, float), np.asarray(noise, float))
    e = stats.eigen
    return log_marginal_likelihood_eigen(e.lam, e.bt, stats.v, stats.n, sigma**2, noise**2)


def posterior_weights(
    stats: SufficientStats, sigma: float, noise: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and covariance of w | y, sigma, delta (a Gaussian; MATH.md section 4).

    Precision A = G / delta^2 + I / sigma^2; in the eigenbasis of G it is diagonal, so
    mean = V diag(1 / (lam + delta^2 / sigma^2)) bt and cov = V diag(1 / (lam / delta^2 +
    1 / sigma^2)) V^T. Written as sigma^2 / (sigma^2 lam + delta^2) so that sigma = 0 gives 0.
    """
    e = stats.eigen
    s2, d2 = float(sigma) ** 2, float(noise) ** 2
    shrink = s2 / (s2 * e.lam + d2)
    mean = e.V @ (shrink * e.bt)
    cov = (e.V * (d2 * shrink)) @ e.V.T
    return mean, cov


@dataclass(frozen=True)
class ARDTerms:
    """Everything the ARD marginal likelihood gives at one (sigma_1..D, delta).

    Attributes
    ----------
    log_ml : float
        log p(y | sigma_1..D, delta).
    mean, cov : ndarray
        Posterior mean and covariance of w.
    grad_log_sigma : ndarray (D,)
        d log_ml / d log sigma_j.
    grad_log_noise : float
        d log_ml / d log delta.
    noise2 : float
        delta^2 at which they were computed.
    """

    log_ml: float
    mean: NDArray[np.float64]
    cov: NDArray[np.float64]
    grad_log_sigma: NDArray[np.float64]
    grad_log_noise: float
    noise2: float


def ard_terms(stats: SufficientStats, sigmas: ArrayLike, noise: float) -> ARDTerms:
    """Log marginal likelihood, posterior of w and gradients with one sigma_j per feature.

    Notes
    -----
    With S = diag(sigma_j) and q = delta^2, B = I + S G S / q is well conditioned and defined
    at sigma_j = 0 (a pruned feature), so everything is written through its Cholesky factor:

        det(sigma^2-weighted X X^T + q I) = q^N det(B)              (determinant lemma)
        Cov(w | y) = S B^-1 S,   E(w | y) = Cov b / q                (Woodbury)
        log p(y) = -1/2 [N log(2 pi q) + log det B + (v - b.E(w | y)) / q]
        d log p / d log sigma_j = (B^-1)_jj + (B^-1 S b)_j^2 / q^2 - 1
        d log p / d log delta  = (||y - X E w||^2 + tr(Cov G)) / q - N

    (Tipping 2001, eqs. 13-15, in log-scale coordinates.) O(D^3) per call.
    """
    s = np.asarray(sigmas, dtype=float)
    q = float(noise) ** 2
    d = stats.d
    B = np.eye(d) + (s[:, None] * stats.G * s[None, :]) / q
    chol = scipy.linalg.cho_factor(B, lower=True, check_finite=False)
    Binv = scipy.linalg.cho_solve(chol, np.eye(d), check_finite=False)
    c = Binv @ (s * stats.b) / q  # = S^-1 E(w | y) where sigma_j > 0
    mean = s * c
    cov = s[:, None] * Binv * s[None, :]
    logdet_B = 2.0 * np.sum(np.log(np.diag(chol[0])))
    log_ml = -0.5 * (stats.n * np.log(2 * np.pi * q) + logdet_B + (stats.v - stats.b @ mean) / q)
    grad_sigma = np.diag(Binv) + c**2 - 1.0
    rss = stats.residual_sum_of_squares(mean)
    grad_noise = (rss + np.sum(cov * stats.G)) / q - stats.n
    return ARDTerms(float(log_ml), mean, cov, grad_sigma, float(grad_noise), q)


def log_marginal_likelihood_ard(stats: SufficientStats, sigmas: ArrayLike, noise: float) -> float:
    """log p(y | sigma_1..D, delta) with one prior scale per feature (see :func:`ard_terms`)."""
    return ard_terms(stats, sigmas, noise).log_ml
