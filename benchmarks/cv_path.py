"""Time a K-fold ridge CV curve from sufficient statistics against scikit-learn, side by side.

    python benchmarks/cv_path.py                      # N = 1,000,000 x D = 50, 200 lambdas, 10 folds
    python benchmarks/cv_path.py --n 100000 --sklearn-points 200   # every baseline on the full grid

Baselines, on the same data, grid and folds, in this process:

- ``RidgeCV(cv=folds)``, i.e. ``GridSearchCV`` over ``Ridge``: one fit per (lambda, fold). Its
  cost is linear in the number of lambdas, so by default it runs on ``--sklearn-points``
  lambdas of the grid and the time is scaled up to the full grid (printed as such); the
  curves are compared on those points.
- ``RidgeCV(cv=None)``: scikit-learn's efficient leave-one-out (SVD of X), full grid; shown
  beside this project's closed-form LOO.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import GridSearchCV

from hyperbayes.inference.methods.cross_validation import cross_validate, fold_indices
from hyperbayes.models.data import simulate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=50)
    parser.add_argument("--lambdas", type=int, default=200)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument(
        "--sklearn-points",
        type=int,
        default=10,
        help="lambdas GridSearchCV runs on (its time is scaled to the full grid)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = simulate(n=args.n, d=args.d, sigma=0.1, noise=1.0, seed=args.seed).data
    scale = args.n  # the mean eigenvalue of X^T X for standard-normal X
    grid = np.geomspace(1e-6 * scale, 1e1 * scale, args.lambdas)
    sub = grid[np.linspace(0, args.lambdas - 1, min(args.sklearn_points, args.lambdas)).astype(int)]
    print(f"N = {args.n:,} x D = {args.d}, {args.lambdas} lambdas, {args.folds} folds")

    ours, t_ours = timed(
        lambda: cross_validate(
            data, scheme="kfold", lambdas=grid, folds=args.folds, seed=args.seed, noise=1.0
        )
    )
    print(f"hyperbayes K-fold (sufficient statistics), {grid.size} lambdas: {t_ours:9.2f} s")

    parts = fold_indices(args.n, args.folds, args.seed)
    splits = [(np.setdiff1d(np.arange(args.n), rows), rows) for rows in parts]
    search = GridSearchCV(
        Ridge(fit_intercept=False, solver="cholesky"),
        {"alpha": sub},
        cv=splits,
        scoring="neg_mean_squared_error",
    )
    _, t_grid = timed(lambda: search.fit(data.X, data.y))
    t_grid_full = t_grid * grid.size / sub.size
    print(
        f"scikit-learn GridSearchCV(Ridge), {sub.size} lambdas: {t_grid:9.2f} s "
        f"-> {t_grid_full:.1f} s scaled to {grid.size} lambdas"
    )
    on_sub = np.searchsorted(grid, sub)
    diff = np.max(np.abs(-search.cv_results_["mean_test_score"] / ours.score[on_sub] - 1))
    print(f"  same curve on the shared points: max relative difference {diff:.1e}")

    loo, t_loo = timed(lambda: cross_validate(data, scheme="loo", lambdas=grid, noise=1.0))
    print(f"hyperbayes closed-form LOO, {grid.size} lambdas: {t_loo:9.2f} s")
    ref, t_ridgecv = timed(lambda: RidgeCV(alphas=grid, fit_intercept=False).fit(data.X, data.y))
    print(
        f"scikit-learn RidgeCV (LOO), {grid.size} lambdas: {t_ridgecv:9.2f} s "
        f"(same lambda chosen: {ref.alpha_ == loo.lambda_})"
    )

    print(f"ratio GridSearchCV / hyperbayes K-fold: {t_grid_full / t_ours:8.1f}x")
    print(f"ratio RidgeCV(LOO) / hyperbayes K-fold: {t_ridgecv / t_ours:8.1f}x")
    print(f"ratio RidgeCV(LOO) / hyperbayes LOO:    {t_ridgecv / t_loo:8.1f}x")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


if __name__ == "__main__":
    main()
