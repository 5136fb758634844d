"""Sufficient statistics of the linear-Gaussian family (MATH.md section 7), in one pass.

The columns z_i = [f_i, x_i, y_i] (F without the intercept, the penalised numeric columns, the
target; K columns) enter every likelihood of the family only through, per level l of the
random-intercept factor (one level when there is none),

    n_l   = sum_{i in l} omega_i                                  weighted count
    mean_l = sum_{i in l} omega_i z_i / n_l                       weighted level means (L x K)
    W      = sum_l sum_{i in l} omega_i (z_i - mean_l)(z_i - mean_l)^T    pooled within-level co-moment

plus N, sum_i log omega_i. The counts and sums per level are bincounts (no N x L indicator
matrix); W is accumulated from centred rows, so a large common mean never cancels; chunks
merge by the pairwise update of Chan, Golub and LeVeque (1979), level by level:

    n = n_a + n_b,  mean = mean_a + (n_b / n)(mean_b - mean_a),
    W = W_a + W_b + sum_l (n_al n_bl / n_l)(mean_bl - mean_al)(mean_bl - mean_al)^T.

Memory is O(L K + K^2) for the statistics and one block of rows while they are built. The
overall weighted mean and centred co-moment follow without cancellation:
C = W + sum_l n_l (mean_l - mean)(mean_l - mean)^T. Projection off F (the intercept by
centring, the other fixed columns by a Schur complement of C) gives the statistics of
section 1, :meth:`FamilyStats.projected`, and with them the O(D) eigen route.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = ["FamilyStats", "family_stats"]

#: Rows per block when the within-level co-moment is accumulated (bounds the temporaries).
BLOCK_ROWS = 65_536


@dataclass(frozen=True, eq=False)
class FamilyStats:
    """Merged statistics of the family for P' fixed columns, D penalised, and y.

    Attributes
    ----------
    level_weight : ndarray (L,)
        n_l, the summed observation weights per level (L = 1 without a factor).
    level_mean : ndarray (L, K)
        Weighted means of [F', X, y] per level.
    within : ndarray (K, K)
        Pooled within-level centred co-moment W.
    n_rows : int
    sum_log_omega : float
    n_fixed_columns, n_dense : int
        P' (fixed columns other than the intercept) and D; K = P' + D + 1.
    intercept : bool
    has_factor : bool
    """

    level_weight: NDArray[np.float64]
    level_mean: NDArray[np.float64]
    within: NDArray[np.float64]
    n_rows: int
    sum_log_omega: float
    n_fixed_columns: int
    n_dense: int
    intercept: bool
    has_factor: bool

    @classmethod
    def from_arrays(
        cls,
        y: ArrayLike,
        *,
        fixed: ArrayLike | None = None,
        dense: ArrayLike | None = None,
        codes: ArrayLike | None = None,
        n_levels: int | None = None,
        weights: ArrayLike | None = None,
        intercept: bool = True,
    ) -> FamilyStats:
        """Statistics of one chunk of rows.

        ``codes`` (integers in 0..n_levels-1) are the factor's levels; a level with no row in
        this chunk has weight 0 (chunks of one data set must share ``n_levels``).
        """
        y = np.asarray(y, dtype=np.float64)
        n = y.shape[0]
        parts = [np.asarray(a, dtype=np.float64).reshape(n, -1) for a in (fixed, dense) if a is not None]
        p = 0 if fixed is None else parts[0].shape[1]
        d = 0 if dense is None else parts[-1].shape[1]
        return cls.from_matrix(np.column_stack([*parts, y]), n_fixed_columns=p, n_dense=d,
                               codes=codes, n_levels=n_levels, weights=weights,
                               intercept=intercept)

    @classmethod
    def from_matrix(
        cls,
        Z: ArrayLike,
        *,
        n_fixed_columns: int,
        n_dense: int,
        codes: ArrayLike | None = None,
        n_levels: int | None = None,
        weights: ArrayLike | None = None,
        intercept: bool = True,
    ) -> FamilyStats:
        """Statistics of one chunk given as one matrix Z = [F', X, y] (n x (P' + D + 1)).

        The entry point of the streamed sources, which decode a chunk straight into Z (either
        memory order) without the extra copy :meth:`from_arrays` makes to stack its arguments.
        """
        Z = np.asarray(Z, dtype=np.float64)
        p, d = int(n_fixed_columns), int(n_dense)
        if Z.ndim != 2 or Z.shape[1] != p + d + 1:
            raise ValueError(f"Z must be n x {p + d + 1} ([F', X, y]), got shape {Z.shape}.")
        omega = None if weights is None else np.asarray(weights, dtype=np.float64)
        has_factor = codes is not None
        if has_factor:
            codes = np.asarray(codes, dtype=np.intp)
            L = int(n_levels if n_levels is not None else codes.max() + 1)
        else:
            L = 1
        nl, means = _level_means(Z, codes, omega, L)
        W, means = _within(Z, codes, omega, means, nl)
        slo = 0.0 if omega is None else float(np.sum(np.log(omega)))
        return cls(nl, means, W, Z.shape[0], slo, p, d, bool(intercept), has_factor)

    @classmethod
    def from_columns(
        cls,
        columns,
        *,
        n_fixed_columns: int,
        n_dense: int,
        intercept: bool = True,
    ) -> FamilyStats:
        """:meth:`from_matrix` for unweighted rows with no factor, given as the K columns of Z
        (1-D arrays of one length): the same statistics, computed from centred blocks of
        ``BLOCK_ROWS`` rows built straight from the columns, so no n x K matrix is made."""
        cols = [np.asarray(c, dtype=np.float64) for c in columns]
        p, d = int(n_fixed_columns), int(n_dense)
        if len(cols) != p + d + 1:
            raise ValueError(f"need {p + d + 1} columns ([F', X, y]), got {len(cols)}.")
        n = len(cols[0])
        nl = np.array([float(n)])
        means = np.array([[c.sum() for c in cols]]) / n if n else np.zeros((1, len(cols)))

        def block(sl, out):
            for j, c in enumerate(cols):
                np.subtract(c[sl], means[0, j], out=out[:, j])
            return out

        W, means = _within_blocks(block, n, len(cols), means, nl)
        return cls(nl, means, W, n, 0.0, p, d, bool(intercept), False)

    def merge(self, other: FamilyStats) -> FamilyStats:
        """Pool two chunks (the pairwise centred update; exact, and stable for large means)."""
        if (self.level_mean.shape != other.level_mean.shape or self.intercept != other.intercept
                or self.n_fixed_columns != other.n_fixed_columns):
            raise ValueError("cannot merge statistics of differently shaped models.")
        na, nb = self.level_weight, other.level_weight
        n = na + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(n > 0, nb / n, 0.0)
            c = np.where(n > 0, na * nb / n, 0.0)
        delta = other.level_mean - self.level_mean
        mean = self.level_mean + frac[:, None] * delta
        W = self.within + other.within + (delta * c[:, None]).T @ delta
        return FamilyStats(n, mean, W, self.n_rows + other.n_rows,
                           self.sum_log_omega + other.sum_log_omega, self.n_fixed_columns,
                           self.n_dense, self.intercept, self.has_factor)

    __add__ = merge

    @property
    def n_levels(self) -> int:
        return self.level_weight.shape[0]

    @property
    def k(self) -> int:
        return self.within.shape[0]

    @property
    def n_fixed(self) -> int:
        """P, the columns of F including the intercept."""
        return self.n_fixed_columns + int(self.intercept)

    @cached_property
    def total_weight(self) -> float:
        return float(self.level_weight.sum())

    @cached_property
    def mean(self) -> NDArray[np.float64]:
        """Overall weighted mean of [F', X, y]."""
        return self.level_weight @ self.level_mean / self.total_weight

    @cached_property
    def comoment(self) -> NDArray[np.float64]:
        """Overall weighted centred co-moment C (K x K)."""
        dev = self.level_mean - self.mean
        return self.within + (dev * self.level_weight[:, None]).T @ dev

    def gram(self) -> NDArray[np.float64]:
        """The uncentred weighted Gram of [F', X, y] (what no intercept needs)."""
        return self.comoment + self.total_weight * np.outer(self.mean, self.mean)

    def log_det_fixed(self) -> float:
        """log det S_FF (F with the intercept, weighted): the constant of MATH.md section 7."""
        p = self.n_fixed_columns
        if self.intercept:
            out = np.log(self.total_weight)
            S = self.comoment[:p, :p]
        else:
            out, S = 0.0, self.gram()[:p, :p]
        if p:
            out += 2 * np.sum(np.log(np.diag(np.linalg.cholesky(S))))
        return float(out)

    def projected(self) -> SufficientStats:
        """(G~, b~, v~, N~ = N - P) of the dense columns projected off F (no factor only).

        With the intercept this is the weighted centred co-moment; the other fixed columns are
        removed by a Schur complement. The weights are absorbed (the statistics of
        Omega^(1/2) [F X y]).
        """
        if self.has_factor:
            raise ValueError("with a categorical group the projection is not a dense Gram; "
                             "use the structured likelihood.")
        S = self.comoment if self.intercept else self.gram()
        p = self.n_fixed_columns
        if p:
            S = S[p:, p:] - S[p:, :p] @ np.linalg.solve(S[:p, :p], S[:p, p:])
        d = self.n_dense
        return SufficientStats(G=S[:d, :d].copy(), b=S[:d, d].copy(), v=float(S[d, d]),
                               n=self.n_rows - self.n_fixed)


def family_stats(spec, *, block_rows: int = BLOCK_ROWS) -> FamilyStats:
    """The statistics of a :class:`hyperbayes.models.specification.ModelSpec`, in chunks.

    The rows are taken ``block_rows`` at a time, each block's statistics built and merged:
    the same path a stream of chunks (Parquet, Dask partitions) takes.
    """
    fixed = spec.fixed_matrix() if spec.fixed else None
    dense = spec.dense_matrix() if spec.dense_columns else None
    codes = spec.factor.codes if spec.factor is not None else None
    L = spec.factor.n_levels if spec.factor is not None else None
    w = spec.obs_weights
    y = spec.data.y
    out = None
    for start in range(0, spec.n, block_rows):
        sl = slice(start, start + block_rows)
        chunk = FamilyStats.from_arrays(
            y[sl], fixed=None if fixed is None else fixed[sl],
            dense=None if dense is None else dense[sl],
            codes=None if codes is None else codes[sl], n_levels=L,
            weights=None if w is None else w[sl], intercept=spec.intercept)
        out = chunk if out is None else out.merge(chunk)
    return out


def _level_means(Z, codes, omega, L):
    w = _level_sums(np.ones((Z.shape[0], 1)), codes, omega, L)[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(w[:, None] > 0, _level_sums(Z, codes, omega, L) / w[:, None], 0.0)
    return w, means


def _level_sums(Z, codes, omega, L):
    if codes is None:
        return (Z.sum(axis=0) if omega is None else omega @ Z)[None, :]
    wz = Z if omega is None else Z * omega[:, None]
    return np.column_stack([np.bincount(codes, weights=wz[:, j], minlength=L) for j in range(Z.shape[1])])


def _within_blocks(block, n, k, means, w):
    """:func:`_within` for one level and no weights, with ``block(slice, out)`` filling ``out``
    with the rows of the slice minus the means."""
    W = np.zeros((k, k))
    S = np.zeros_like(means)
    buffer = np.empty((min(BLOCK_ROWS, max(n, 1)), k), order="F")
    for start in range(0, n, BLOCK_ROWS):
        sl = slice(start, min(start + BLOCK_ROWS, n))
        R = block(sl, buffer[: sl.stop - sl.start])
        W += R.T @ R
        S += R.sum(axis=0)
    e = np.where(w[:, None] > 0, S / np.maximum(w[:, None], 1e-300), 0.0)
    W -= (e * w[:, None]).T @ e
    return W, means + e


def _within(Z, codes, omega, means, w):
    """Centred co-moment around the level means, and the compensated means.

    One sweep over blocks of R = Z - mean[level]: W = R^T Omega R - sum_l n_l e_l e_l^T with
    e_l the weighted mean of R in level l (zero but for round-off in the first-pass means;
    adding it back makes the means accurate even when |mean| >> spread).
    """
    k = Z.shape[1]
    W = np.zeros((k, k))
    S = np.zeros_like(means)
    buffer = np.empty((min(BLOCK_ROWS, Z.shape[0]), k), order="F")  # one allocation, reused
    for start in range(0, Z.shape[0], BLOCK_ROWS):
        sl = slice(start, start + BLOCK_ROWS)
        cb = None if codes is None else codes[sl]
        R = np.subtract(Z[sl], means[0] if codes is None else means[cb], out=buffer[: len(Z[sl])])
        ob = None if omega is None else omega[sl]
        W += (R if ob is None else R * ob[:, None]).T @ R
        S += _level_sums(R, cb, ob, means.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.where(w[:, None] > 0, S / w[:, None], 0.0)
    W -= (e * w[:, None]).T @ e
    return W, means + e
