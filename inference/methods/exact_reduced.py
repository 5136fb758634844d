"""The eigen system of G restricted to its nonzero eigenvalues, evaluated in bounded memory.

Only the k = rank(X) <= min(N, D) nonzero eigenvalues of G = X^T X enter the marginal
likelihood and the posterior of w given the scales: a zero eigenvalue adds log(1 + 0) = 0 to
the log determinant and has bt = 0 (MATH.md section 3). On the null space of X the posterior of
w is its prior, N(0, sigma^2 I). The oracle therefore works with k numbers per evaluation, not
D, and never forms an array of (quadrature nodes x D): the marginal likelihood and the moments
of w depend on the two scales only through their ratio r = sigma / delta, which takes one value
per row of the quadrature grid, and the draws of w are made a block of draws at a time.

With rho = log r and t = log delta,

    log p(y | sigma, delta) = -1/2 [N log(2 pi) + 2 N t + L(rho) + Q(rho) e^(-2 t)]
    L(rho) = sum_i log(1 + r^2 lam_i)
    Q(rho) = y^T (r^2 X X^T + I)^-1 y = rss + sum_i (bt_i^2 / lam_i) / (1 + r^2 lam_i)

where rss = v - sum_i bt_i^2 / lam_i is the least-squares residual sum of squares. This form of
Q is a sum of nonnegative terms. The form v - sum_i bt_i^2 r^2 / (1 + r^2 lam_i) loses Q to
cancellation when y lies in (or near) the column space of X, as it always does for N <= D:
Q -> rss = 0 as r -> infinity while both terms stay of size v, so the round-off (~eps v),
divided by delta^2 ~ Q / N, made the log likelihood +inf or garbage on part of the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hyperbayes.models.data import Dataset
from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = ["BLOCK_FLOATS", "ReducedEigen"]

#: Floats per temporary block (2 MiB); a step allocates up to ~10 such blocks at a time, so the
#: working memory of an evaluation stays below ~32 MiB whatever the grid and D.
BLOCK_FLOATS = 1 << 18

#: rss below this multiple of eps * v * (k + 1) is round-off: y lies in the column space of X.
_RSS_ROUNDOFF = 32.0

_LOG_2PI = float(np.log(2 * np.pi))


@dataclass(frozen=True, eq=False)
class ReducedEigen:
    """The k nonzero eigenvalues of G with their eigenvectors and rotated cross-products.

    Attributes
    ----------
    lam : ndarray (k,)
        The positive eigenvalues of G (ascending).
    bt : ndarray (k,)
        V_k^T b.
    V : ndarray (D, k)
        Their eigenvectors; the rest of R^D is the null space of X.
    rss : float
        min_w ||y - X w||^2 = v - sum bt^2 / lam, set to 0 when it is round-off (an exact fit).
    v : float
        y^T y.
    n, d : int
        Observations and features.
    """

    lam: NDArray[np.float64]
    bt: NDArray[np.float64]
    V: NDArray[np.float64]
    rss: float
    v: float
    n: int
    d: int

    @classmethod
    def from_dataset(cls, data: Dataset) -> ReducedEigen:
        """The reduced system of a data set, by the cheaper exact route.

        N >= D: the eigendecomposition of G = X^T X (:meth:`from_stats`, O(N D^2 + D^3)).
        N < D: the thin SVD X = U diag(s) W^T, so lam = s^2, V_k = W and bt = s U^T y, in
        O(N^2 D) time and O(N D) memory without forming the D x D matrix G; singular values
        below s_max max(N, D) eps are zero (numpy.linalg.matrix_rank's rule). The residual
        rss = ||y - U U^T y||^2 is then computed directly, free of cancellation.
        """
        if data.n >= data.d:
            return cls.from_stats(SufficientStats.from_dataset(data))
        X, y = np.asarray(data.X, dtype=float), np.asarray(data.y, dtype=float)
        U, s, Wt = np.linalg.svd(X, full_matrices=False)
        keep = s > s.max(initial=0.0) * max(X.shape) * np.finfo(float).eps
        U, s, Wt = U[:, keep][:, ::-1], s[keep][::-1], Wt[keep][::-1]  # ascending, as eigh
        uy = U.T @ y
        rss = float(np.sum((y - U @ uy) ** 2))
        return cls._with_rss(s**2, s * uy, np.ascontiguousarray(Wt.T), rss, float(y @ y), data.n)

    @classmethod
    def from_stats(cls, stats: SufficientStats) -> ReducedEigen:
        """Keep the eigenpairs of ``stats.eigen`` whose eigenvalue is not (numerically) zero."""
        e = stats.eigen
        keep = e.lam > 0  # Eigen already set round-off eigenvalues (and their bt) to exactly 0
        lam, bt = e.lam[keep], e.bt[keep]
        V = e.V if keep.all() else e.V[:, keep]
        rss = float(stats.v - np.sum(bt**2 / lam))
        return cls._with_rss(lam, bt, V, rss, float(stats.v), int(stats.n))

    @classmethod
    def _with_rss(cls, lam, bt, V, rss: float, v: float, n: int) -> ReducedEigen:
        k = lam.size
        if k >= n or rss <= _RSS_ROUNDOFF * (k + 1) * np.finfo(float).eps * v:
            rss = 0.0  # rank N fits any y exactly; otherwise the residual is below round-off
        return cls(lam=lam, bt=bt, V=V, rss=rss, v=v, n=n, d=V.shape[0])

    @property
    def k(self) -> int:
        """The number of nonzero eigenvalues, rank(X)."""
        return self.lam.size

    def ratio_terms(self, rho: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """L(rho) and Q(rho) of the module notes, elementwise over ``rho`` = log(sigma / delta).

        Computed a block of elements at a time, so the (elements x k) temporaries stay within
        :data:`BLOCK_FLOATS`.
        """
        rho = np.asarray(rho, dtype=float)
        flat = rho.reshape(-1)
        logdet, q = np.empty(flat.size), np.empty(flat.size)
        coef = self.bt**2 / self.lam
        step = max(1, BLOCK_FLOATS // max(self.k, 1))
        with np.errstate(over="ignore"):
            for start in range(0, flat.size, step):
                x = np.exp(2 * flat[start : start + step])[:, None] * self.lam
                logdet[start : start + step] = np.log1p(x).sum(axis=1)
                q[start : start + step] = self.rss + (coef / (1 + x)).sum(axis=1)
        return logdet.reshape(rho.shape), q.reshape(rho.shape)

    def log_likelihood(self, rho: ArrayLike, t: ArrayLike) -> NDArray[np.float64]:
        """log p(y | sigma = e^(rho + t), delta = e^t); ``rho`` and ``t`` broadcast together.

        The (elements x k) work is done once per element of ``rho``, so a grid whose rows share
        one rho (``rho`` of shape (m, 1), ``t`` of shape (m, m')) costs O(m k + m m').
        """
        logdet, q = self.ratio_terms(rho)
        t = np.asarray(t, dtype=float)
        with np.errstate(over="ignore", invalid="ignore"):
            return -0.5 * (self.n * (_LOG_2PI + 2 * t) + logdet + q * np.exp(-2 * t))

    def mixture_moments(
        self, rho: ArrayLike, mass: ArrayLike, mass_noise2: ArrayLike, sigma2_mean: float
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Mean and covariance of w under a mixture of its Gaussian conditionals.

        Parameters
        ----------
        rho : ndarray (m,)
            The distinct values of log(sigma / delta) among the mixture's nodes.
        mass : ndarray (m,)
            Total mixture weight of the nodes at each rho (summing to one).
        mass_noise2 : ndarray (m,)
            Sum of weight * delta^2 over the nodes at each rho.
        sigma2_mean : float
            E[sigma^2] under the mixture (the variance of w on the null space of X).

        Notes
        -----
        Given the scales, in the eigenbasis: mean_i = f_i bt_i and var_i = delta^2 f_i with
        f_i = 1 / (lam_i + e^(-2 rho)) = sigma^2 / (sigma^2 lam_i + delta^2), so
        E[w_rot] = bt * sum_j P_j f_j and E[w_rot w_rot^T] = (bt bt^T) * sum_j P_j f_j f_j^T
        + diag(sum_j E_j f_j), accumulated a block of rho values at a time: O(m k^2) time,
        O(k^2 + block) memory. Back in R^D, Cov = V_k C V_k^T + E[sigma^2] (I - V_k V_k^T).
        """
        rho, mass, mass_noise2 = (np.asarray(a, dtype=float) for a in (rho, mass, mass_noise2))
        k = self.k
        first, outer, diag = np.zeros(k), np.zeros((k, k)), np.zeros(k)
        step = max(1, BLOCK_FLOATS // max(k, 1))
        with np.errstate(over="ignore"):
            for start in range(0, rho.size, step):
                f = 1.0 / (self.lam + np.exp(-2 * rho[start : start + step])[:, None])
                p = mass[start : start + step]
                first += p @ f
                outer += (f * p[:, None]).T @ f
                diag += mass_noise2[start : start + step] @ f
        mean_rot = first * self.bt
        cov_rot = outer * np.outer(self.bt, self.bt) + np.diag(diag) - np.outer(mean_rot, mean_rot)
        mean = self.V @ mean_rot
        if k == self.d:
            return mean, self.V @ cov_rot @ self.V.T
        # V_k C V_k^T + s2 (I - V_k V_k^T) = V_k (C - s2 I) V_k^T + s2 I, in O(D^2 k).
        cov = (self.V @ (cov_rot - sigma2_mean * np.eye(k))) @ self.V.T
        cov[np.diag_indices_from(cov)] += sigma2_mean
        return mean, cov

    def sample_weights(
        self, sigma: NDArray[np.float64], noise: NDArray[np.float64], rng: np.random.Generator
    ) -> NDArray[np.float64]:
        """One draw of w | sigma_j, delta_j for each j (exact Gaussian draws), shape (n, D).

        Drawn a block of rows at a time (the same normal stream as one call): the eigenbasis
        part as mean + sd * z, and, when X has a null space, sigma times the projection of a
        standard normal vector onto it, sigma (z' - V_k V_k^T z').
        """
        out = np.empty((sigma.size, self.d))
        step = max(1, 4 * BLOCK_FLOATS // self.d)  # temporaries of 8 MiB: BLAS-sized blocks
        for start in range(0, sigma.size, step):
            s2 = sigma[start : start + step, None] ** 2
            d2 = noise[start : start + step, None] ** 2
            shrink = s2 / (s2 * self.lam + d2)
            z = rng.standard_normal(shrink.shape)
            out[start : start + step] = (shrink * self.bt + np.sqrt(d2 * shrink) * z) @ self.V.T
            if self.k < self.d:
                z0 = rng.standard_normal((shrink.shape[0], self.d))
                z0 -= (z0 @ self.V) @ self.V.T
                out[start : start + step] += np.sqrt(s2) * z0
        return out
