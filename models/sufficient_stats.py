"""Sufficient statistics of the linear-Gaussian model: G = X^T X, b = X^T y, v = y^T y, N.

Everything the model says about the data goes through these (MATH.md section 1). They are
built in one pass, can be accumulated chunk by chunk and merged (``a + b``), and carry one
cached eigendecomposition of G, so that every later evaluation of the marginal likelihood,
the posterior of w or a ridge fit costs O(D) or O(D^2).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["Eigen", "SufficientStats"]


@dataclass(frozen=True)
class Eigen:
    """G = V diag(lam) V^T and the rotated cross-product bt = V^T b."""

    lam: NDArray[np.float64]
    V: NDArray[np.float64]
    bt: NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class SufficientStats:
    """(G, b, v, N) for data (X, y); see MATH.md section 1.

    Build with :meth:`from_arrays` or :meth:`from_dataset`; add two to pool their data.
    """

    G: NDArray[np.float64]
    b: NDArray[np.float64]
    v: float
    n: int

    @classmethod
    def from_arrays(cls, X: ArrayLike, y: ArrayLike, *, block_rows: int = 8192) -> SufficientStats:
        """Statistics of one chunk of rows (X: n x D, y: n), in one pass over X.

        Rows are taken ``block_rows`` at a time and G and b are accumulated together, so each
        block of X is read from memory once while it is in cache (two separate products
        X^T X and X^T y would stream all of X twice).
        """
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        d = X.shape[1]
        G, b = np.zeros((d, d)), np.zeros(d)
        for start in range(0, X.shape[0], block_rows):
            Xb, yb = X[start : start + block_rows], y[start : start + block_rows]
            G += Xb.T @ Xb
            b += Xb.T @ yb
        return cls(G=G, b=b, v=float(y @ y), n=int(X.shape[0]))

    @classmethod
    def from_dataset(cls, data) -> SufficientStats:
        """Statistics of a :class:`hyperbayes.models.data.Dataset`, or the ones a
        :class:`hyperbayes.models.streaming.StreamedData` carries (it holds no rows)."""
        stats = getattr(data, "stats", None)
        if isinstance(stats, SufficientStats):
            return stats
        return cls.from_arrays(data.X, data.y)

    @classmethod
    def from_dask(cls, collection, *, target: str | int = -1, intercept: bool = False):
        """Statistics of a ``dask.dataframe`` (``target`` a column name) or a 2-D ``dask.array``
        (``target`` a column index), from one pass over its partitions and a tree reduction of
        their pairwise merges; runs on whatever Dask scheduler is active.

        With ``intercept`` the statistics are those of the centred data (as after
        ``Dataset.center()``). See :func:`hyperbayes.models.dask_source.dask_statistics`.
        """
        from hyperbayes.models.dask_source import dask_data

        data = dask_data(collection, target=target)
        return (data.center()[0] if intercept else data).stats

    def __add__(self, other: SufficientStats) -> SufficientStats:
        if self.G.shape != other.G.shape:
            raise ValueError(f"cannot merge statistics of D={self.d} and D={other.d} features.")
        return SufficientStats(self.G + other.G, self.b + other.b, self.v + other.v, self.n + other.n)

    def __sub__(self, other: SufficientStats) -> SufficientStats:
        """Remove a chunk's statistics (e.g. a CV fold) from the totals."""
        if self.G.shape != other.G.shape:
            raise ValueError(f"cannot subtract statistics of D={other.d} from D={self.d}.")
        return SufficientStats(self.G - other.G, self.b - other.b, self.v - other.v, self.n - other.n)

    def with_eigen(self, eigen: Eigen) -> SufficientStats:
        """The same statistics carrying a precomputed eigendecomposition (e.g. from an SVD of
        X, more accurate than eigh(G) when X is ill-conditioned)."""
        if eigen.lam.shape != (self.d,) or eigen.V.shape != (self.d, self.d):
            raise ValueError(f"an eigendecomposition of a {self.d} x {self.d} G is needed.")
        out = SufficientStats(self.G, self.b, self.v, self.n)
        out.__dict__["eigen"] = eigen  # where functools.cached_property keeps its value
        return out

    @property
    def d(self) -> int:
        """Number of features D."""
        return self.G.shape[0]

    @cached_property
    def eigen(self) -> Eigen:
        """The eigendecomposition of G (computed once; negative round-off clipped to 0)."""
        lam, V = np.linalg.eigh(self.G)
        bt = V.T @ self.b
        # Directions with (numerically) zero eigenvalue are the null space of X; b = X^T y has
        # no component there in exact arithmetic, so round-off must not be left to be
        # amplified by sigma^2 (N < D, collinear columns).
        null = lam <= lam.max(initial=0.0) * self.d * np.finfo(float).eps
        lam = np.where(null, 0.0, lam)
        bt = np.where(null, 0.0, bt)
        return Eigen(lam=lam, V=V, bt=bt)

    def residual_sum_of_squares(self, w: ArrayLike) -> float:
        """||y - X w||^2 = v - 2 w.b + w^T G w, without the data."""
        w = np.asarray(w, dtype=float)
        return float(self.v - 2 * w @ self.b + w @ self.G @ w)


def log_marginal_likelihood_eigen(lam, bt, v, n, sigma2, noise2, xp=np):
    """log p(y | sigma, delta) from the eigen-statistics (MATH.md section 3), O(D).

    One implementation serves NumPy (``xp=numpy``, vectorised: ``sigma2`` and ``noise2``
    broadcast against each other, any shape) and PyTensor (``xp=pytensor.tensor``, inside a
    PyMC model). The quadratic term is written as bt^2 sigma^2 / (delta^2 + sigma^2 lam), which
    stays finite at sigma = 0 and for lam = 0 (rank-deficient X, N < D).
    """
    s2 = sigma2[..., None]
    d2 = noise2[..., None]
    logdet = xp.sum(xp.log1p(s2 * lam / d2), axis=-1)
    explained = xp.sum(bt**2 * s2 / (d2 + s2 * lam), axis=-1)
    return -0.5 * (n * xp.log(2 * np.pi * noise2) + logdet + (v - explained) / noise2)
