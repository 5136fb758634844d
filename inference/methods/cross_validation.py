"""Choosing the ridge penalty lambda = delta^2 / sigma^2 by held-out prediction error.

Three estimates of the mean squared prediction error over a grid of lambda (MATH.md section 6),
all without refitting from scratch:

- ``"kfold"``: statistics of each fold from its rows; the training statistics are the totals
  minus the fold's (one D x D eigendecomposition per fold), and the fold's error
  v_f - 2 w.b_f + w^T G_f w needs only the fold's own statistics: O(D^2) per lambda and fold.
- ``"loo"``: the closed form e_i / (1 - H_ii) with H_ii = sum_k (x_i.V_k)^2 / (lam_k + lambda),
  O(N D) per lambda after one projection of X on the eigenvectors; never an N x N matrix.
- ``"gcv"``: generalised CV, (RSS / N) / (1 - tr H / N)^2, O(D) per lambda from (G, b, v, N).

Streamed data (:class:`~hyperbayes.models.streaming.StreamedData`) hold no rows: their K folds
are the ones hashed from the row numbers during the one pass that read them, so K-fold and GCV
run from statistics; leave-one-out (one term per row) and the HOAG path (rows of one split)
are refused or skipped with the reason.

The chosen lambda gives sigma = delta / sqrt(lambda). NumPy only.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hyperbayes.inference.mathematics.ridge import (
    as_lambdas,
    default_lambda_grid,
    effective_dof,
    noise_variance_estimate,
    residual_sum_of_squares_path,
    ridge_path,
)
from hyperbayes.inference.methods.hypergradient import hypergradient_descent
from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.models.data import DataError, Dataset, DataWarning
from hyperbayes.models.streaming import RowsNotHeld, StreamedData
from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = ["DEFAULT_FOLDS", "SCHEMES", "CVResult", "cross_validate", "fold_indices", "run"]

Scheme = Literal["kfold", "loo", "gcv"]
SCHEMES: tuple[str, ...] = ("kfold", "loo", "gcv")

#: Ten folds: the usual bias/variance compromise (Hastie, Tibshirani and Friedman 2009,
#: section 7.10; Kohavi 1995), enough folds for a standard error, and the cost after the one
#: pass over the data is 10 eigendecompositions of D x D, independent of N.
DEFAULT_FOLDS = 10

#: Rows per block in the leave-one-out pass, bounding its memory to about 32 MB per block.
_LOO_BLOCK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class CVResult:
    """A cross-validation curve over lambda and the choices made from it.

    Attributes
    ----------
    scheme : {"kfold", "loo", "gcv"}
    lambdas : ndarray (L,)
        The grid, increasing.
    score : ndarray (L,)
        Estimated mean squared prediction error per observation at each lambda.
    se : ndarray (L,)
        Its standard error (across folds for K-fold, across observations for LOO; nan for GCV,
        which has no per-observation terms computable from the sufficient statistics).
    lambda_ : float
        The grid point with the smallest score.
    lambda_1se : float
        The largest lambda whose score is within one standard error of the minimum (the
        "one-standard-error rule"; nan for GCV).
    cv_score : float
        ``score`` at ``lambda_``.
    weights : ndarray (D,)
        Ridge weights at ``lambda_`` fitted to all the data.
    noise : float
        delta: as given, or estimated (``noise_estimated``) as the ridge residual variance at
        ``lambda_`` with N - tr H degrees of freedom.
    noise_estimated : bool
    sigma, sigma_1se : float
        delta / sqrt(lambda) at ``lambda_`` and at ``lambda_1se``.
    folds : int or None
        Number of folds (K-fold only).
    warnings : tuple of str
        Problems worth reporting (optimum at an edge of the grid, estimated noise).
    """

    scheme: str
    lambdas: NDArray[np.float64]
    score: NDArray[np.float64]
    se: NDArray[np.float64]
    lambda_: float
    lambda_1se: float
    cv_score: float
    weights: NDArray[np.float64]
    noise: float
    noise_estimated: bool
    sigma: float
    sigma_1se: float
    folds: int | None
    warnings: tuple[str, ...]


def cross_validate(
    data: Dataset,
    *,
    scheme: Scheme = "kfold",
    lambdas: ArrayLike | None = None,
    lambda_range: tuple[float, float] | None = None,
    n_lambdas: int = 100,
    folds: int = DEFAULT_FOLDS,
    seed: int | np.random.Generator = 0,
    noise: float | None = None,
) -> CVResult:
    """Cross-validated ridge penalty over a grid, from sufficient statistics.

    Parameters
    ----------
    data : Dataset
        Centre it first if an intercept is wanted.
    scheme : {"kfold", "loo", "gcv"}, default "kfold"
        K-fold by subtraction of fold statistics, closed-form leave-one-out, or generalised CV.
    lambdas : array_like, optional
        The grid of penalties (positive). Mutually exclusive with ``lambda_range``.
    lambda_range : (float, float), optional
        Low and high end of a log-spaced grid of ``n_lambdas`` points. With neither, the grid
        spans 1e-6 to 1e3 times the mean eigenvalue of X^T X.
    n_lambdas : int, default 100
    folds : int, default 10
        Number of folds for ``"kfold"`` (2 <= folds <= N); ignored otherwise.
    seed : int or Generator, default 0
        Seeds the permutation that assigns rows to folds.
    noise : float, optional
        Known noise scale delta; None estimates it (see ``CVResult.noise``).

    Returns
    -------
    CVResult

    Notes
    -----
    With w_{-f}(lambda) the ridge fit without fold f, the K-fold score is
    sum_f ||y_f - X_f w_{-f}||^2 / N and its standard error is the standard deviation of the
    K fold means over sqrt(K). For leave-one-out, e_i(lambda) / (1 - H_ii(lambda)) is exactly
    the residual of the fit without row i (Allen 1974; Golub, Heath and Wahba 1979 for GCV).
    lambda maps to the prior scale by sigma = delta / sqrt(lambda) (MATH.md section 6).

    Examples
    --------
    >>> from hyperbayes.models import simulate
    >>> sim = simulate(n=200, d=5, sigma=1.0, noise=0.5, seed=1)
    >>> res = cross_validate(sim.data, scheme="loo", noise=0.5)
    >>> bool(res.lambdas[0] < res.lambda_ < res.lambdas[-1])
    True
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}.")
    if noise is not None and not (np.isfinite(noise) and noise > 0):
        raise ValueError(f"noise must be a positive number or None, got {noise!r}.")
    if data.n < 2:
        raise DataError(f"cross-validation needs at least 2 observations, got N = {data.n}.")
    if scheme == "loo" and isinstance(data, StreamedData):
        raise RowsNotHeld(
            f"closed-form leave-one-out needs every row's leverage, and these {data.n:,} rows were "
            "streamed into statistics; use scheme='kfold' (folds hashed in the same pass) or 'gcv'."
        )
    if scheme == "kfold":
        stats, grid, score, se = _kfold_curve(data, lambdas, lambda_range, n_lambdas, folds, seed)
    else:
        stats = SufficientStats.from_dataset(data)
        grid = _grid(stats, lambdas, lambda_range, n_lambdas)
        score, se = (_loo_curve if scheme == "loo" else _gcv_curve)(data, stats, grid)
    return _choose(stats, scheme, grid, score, se, noise, folds if scheme == "kfold" else None)


def run(
    data: Dataset, options: RunOptions, *, scheme: Scheme = "kfold", folds: int = DEFAULT_FOLDS
) -> MethodSummary:
    """The ``cv`` method of the registry: :func:`cross_validate` as a :class:`MethodSummary`.

    The default is 10-fold CV (see ``DEFAULT_FOLDS``; fewer folds when N < 10): its cost after
    one pass over the data does not grow with N, unlike leave-one-out, and it gives the
    standard error that the one-standard-error rule needs, unlike GCV. The hyperprior is not
    used (CV learns lambda from held-out error, not from a prior).
    """
    start = time.perf_counter()
    res = cross_validate(
        data, scheme=scheme, folds=min(folds, data.n), seed=options.seed, noise=options.noise
    )
    notes = list(res.warnings)
    if options.ard:
        notes.append("cross-validation fits one shared lambda; the ARD option was ignored.")
    curve = {"lambda": res.lambdas, "score": res.score, "se": res.se}
    hoag, hoag_notes = _hoag_on_first_fold(data, res, seed=options.seed)
    notes += hoag_notes
    return MethodSummary(
        method="cv",
        sigma=res.sigma,
        sigma_interval=None,
        noise=res.noise,
        log_evidence=None,
        weights=tuple(float(w) for w in res.weights),
        diagnostics={"folds": res.folds, "n_lambdas": int(res.lambdas.size)},
        warnings=tuple(notes),
        extra={
            "lambda": res.lambda_,
            "cv_score": res.cv_score,
            "scheme": res.scheme,
            "lambda_1se": res.lambda_1se,
            "sigma_1se": res.sigma_1se,
            "noise_estimated": res.noise_estimated,
            "curve": curve,
            "hoag_path": hoag,
        },
        wall_time=time.perf_counter() - start,
    )


def _hoag_on_first_fold(data: Dataset, res: CVResult, *, seed: int) -> tuple[dict, list[str]]:
    """HOAG on one split (the first fold held out), for the report: its path in lambda and
    validation mean squared error, which is on the scale of the CV curve."""
    if isinstance(data, StreamedData):
        return {}, [
            "the HOAG path (one split, an illustration beside the K-fold curve) was skipped: "
            "it runs on the rows of the split, and these data were streamed into statistics."
        ]
    if data.n < 4:
        return {}, ["too few rows for a HOAG split; no hypergradient path."]
    held = fold_indices(data.n, max(2, min(DEFAULT_FOLDS, data.n)), seed)[0]
    train = np.setdiff1d(np.arange(data.n), held)
    lambda0 = float(np.sqrt(res.lambdas[0] * res.lambdas[-1]))  # middle of the grid, in log
    with warnings.catch_warnings():
        # A fold of a few rows can have constant columns; that is harmless for a split.
        warnings.simplefilter("ignore", DataWarning)
        train_data, held_data = data.subset(train), data.subset(held)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        out = hypergradient_descent(train_data, validation=held_data, lambda0=lambda0)
    notes = [f"HOAG (first fold held out): {w.message}" for w in caught]
    ok = out.path.accepted
    path = {
        "lambda": out.path.lambdas[ok].tolist(),
        "loss": out.path.loss[ok].tolist(),  # already a mean squared error
        "lambda_final": out.lambda_,
        "converged": out.converged,
        "solver": out.solver,
    }
    return path, notes


def fold_indices(n: int, folds: int, seed: int | np.random.Generator) -> list[NDArray[np.intp]]:
    """Rows of each fold: a seeded permutation of range(n) cut into ``folds`` near-equal parts.

    Each part is sorted, so that reading its rows from X is close to contiguous.
    """
    if not 2 <= folds <= n:
        raise ValueError(f"folds must be between 2 and N = {n}, got {folds}.")
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(p) for p in np.array_split(perm, folds)]


def _grid(stats, lambdas, lambda_range, n_lambdas) -> NDArray[np.float64]:
    if lambdas is not None and lambda_range is not None:
        raise ValueError("give either lambdas or lambda_range, not both.")
    if lambdas is not None:
        return np.unique(as_lambdas(lambdas))  # sorted: the one-SE rule walks up the grid
    if lambda_range is not None:
        lo, hi = as_lambdas(lambda_range)
        if not lo < hi:
            raise ValueError(
                f"lambda_range must be (low, high) with low < high, got {lambda_range}."
            )
        return np.geomspace(lo, hi, n_lambdas)
    return default_lambda_grid(stats, num=n_lambdas)


def _kfold_curve(data, lambdas, lambda_range, n_lambdas, folds, seed):
    """Fold statistics from rows, training statistics by subtraction from their sum."""
    fold_stats = _streamed_folds(data, folds) if isinstance(data, StreamedData) else [
        SufficientStats.from_arrays(data.X[p], data.y[p]) for p in fold_indices(data.n, folds, seed)
    ]
    total = sum(fold_stats[1:], fold_stats[0])
    grid = _grid(total, lambdas, lambda_range, n_lambdas)
    fold_mse = np.empty((folds, grid.size))
    for f, held_out in enumerate(fold_stats):
        weights = ridge_path(total - held_out, grid)
        fold_mse[f] = residual_sum_of_squares_path(held_out, weights) / held_out.n
    sizes = np.array([s.n for s in fold_stats], dtype=float)
    score = sizes @ fold_mse / data.n  # pooled: sum of squared errors over all N rows
    se = np.std(fold_mse, axis=0, ddof=1) / np.sqrt(folds)
    return total, grid, score, se


def _streamed_folds(data: StreamedData, folds: int) -> list[SufficientStats]:
    """The folds hashed while the data were read (their seed was the reading's)."""
    if data.fold_stats is None or len(data.fold_stats) != folds:
        have = "no folds" if data.fold_stats is None else f"{len(data.fold_stats)} folds"
        raise RowsNotHeld(
            f"{folds}-fold CV on streamed data needs the folds' statistics from the pass that "
            f"read them, which made {have}; read the data again with folds={folds}."
        )
    return list(data.fold_stats)


def _loo_curve(data, stats, grid):
    """Closed-form leave-one-out errors, in row blocks; mean and its standard error."""
    e = stats.eigen
    inv = 1.0 / (e.lam + grid[:, None])  # (L, D)
    coef = e.bt * inv  # w(lambda) in the eigenbasis
    block = max(1, _LOO_BLOCK_ELEMENTS // max(grid.size, data.d))
    moments = (0, np.zeros(grid.size), np.zeros(grid.size))
    with np.errstate(divide="ignore", invalid="ignore"):  # H_ii = 1 (interpolation): inf/nan
        for start in range(0, data.n, block):
            P = data.X[start : start + block] @ e.V
            resid = data.y[start : start + block, None] - P @ coef.T
            leverage = (P * P) @ inv.T
            moments = _merge_moments(moments, (resid / (1.0 - leverage)) ** 2)
    n, mean, m2 = moments
    return mean, np.sqrt(m2 / (n - 1) / n)


def _merge_moments(acc, block):
    """Chan et al.'s pairwise update of (count, mean, sum of squared deviations) per column."""
    n_a, mean_a, m2_a = acc
    n_b = block.shape[0]
    mean_b = block.mean(axis=0)
    m2_b = ((block - mean_b) ** 2).sum(axis=0)
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * n_b / n, m2_a + m2_b + delta**2 * n_a * n_b / n


def _gcv_curve(data, stats, grid):
    rss = residual_sum_of_squares_path(stats, ridge_path(stats, grid))
    with np.errstate(divide="ignore"):
        score = (np.maximum(rss, 0.0) / stats.n) / (1.0 - effective_dof(stats, grid) / stats.n) ** 2
    return score, np.full(grid.size, np.nan)


def _choose(stats, scheme, grid, score, se, noise, folds) -> CVResult:
    notes = []
    finite = np.isfinite(score)
    if not finite.any():
        raise ValueError(
            f"the {scheme} score is not finite at any lambda of the grid "
            f"[{grid[0]:.3g}, {grid[-1]:.3g}]; use larger lambdas."
        )
    best = int(np.argmin(np.where(finite, score, np.inf)))
    if best in (0, grid.size - 1):
        side = "smallest" if best == 0 else "largest"
        notes.append(
            f"the {scheme} optimum is the {side} lambda of the grid ({grid[best]:.3g}); "
            "the true optimum may lie outside: widen the lambda range."
        )
    within = finite & (score <= score[best] + se[best]) & (grid >= grid[best])
    lambda_1se = float(grid[within].max()) if np.isfinite(se[best]) else float("nan")
    lambda_ = float(grid[best])
    noise_estimated = noise is None
    if noise_estimated:
        noise = float(np.sqrt(noise_variance_estimate(stats, lambda_)[0]))
        notes.append(
            f"the noise scale was not given: delta = {noise:.4g} is the ridge residual standard "
            "deviation at the chosen lambda with N - tr H(lambda) degrees of freedom, so "
            "sigma = delta / sqrt(lambda) carries that estimate's error."
        )
    return CVResult(
        scheme=scheme,
        lambdas=grid,
        score=score,
        se=se,
        lambda_=lambda_,
        lambda_1se=lambda_1se,
        cv_score=float(score[best]),
        weights=ridge_path(stats, lambda_)[0],
        noise=float(noise),
        noise_estimated=noise_estimated,
        sigma=float(noise / np.sqrt(lambda_)),
        sigma_1se=float(noise / np.sqrt(lambda_1se)),
        folds=folds,
        warnings=tuple(notes),
    )
