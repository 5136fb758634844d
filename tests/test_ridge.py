"""The ridge path against direct solves, scikit-learn's Ridge and the Bayesian posterior mean."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from hyperbayes.inference.mathematics.linear_gaussian import posterior_weights
from hyperbayes.inference.mathematics.ridge import (
    MIN_RESIDUAL_DOF,
    as_lambdas,
    default_lambda_grid,
    effective_dof,
    noise_variance_estimate,
    residual_sum_of_squares_path,
    ridge_path,
)
from hyperbayes.models import SufficientStats, simulate

#: Eigen route vs LU solve of the same well-conditioned D x D system: agreement to round-off.
RTOL_SOLVE = 1e-9
#: scikit-learn's Ridge (cholesky) vs our eigen route: both exact up to round-off.
RTOL_SKLEARN = 1e-8
LAMBDAS = np.array([1e-3, 0.1, 1.0, 10.0, 1e3])


@pytest.fixture(scope="module", params=[(60, 6), (8, 15)], ids=["N>D", "N<D"])
def sim(request):
    n, d = request.param
    return simulate(n=n, d=d, sigma=1.0, noise=0.5, seed=11)


@pytest.fixture(scope="module")
def stats(sim):
    return SufficientStats.from_dataset(sim.data)


def test_ridge_path_equals_direct_solve(sim, stats):
    X, y = sim.data.X, sim.data.y
    expected = [np.linalg.solve(X.T @ X + lam * np.eye(sim.data.d), X.T @ y) for lam in LAMBDAS]
    np.testing.assert_allclose(ridge_path(stats, LAMBDAS), expected, rtol=RTOL_SOLVE, atol=1e-12)


def test_ridge_path_equals_sklearn_ridge(sim, stats):
    for lam, w in zip(LAMBDAS, ridge_path(stats, LAMBDAS), strict=True):
        ref = Ridge(alpha=lam, fit_intercept=False, solver="cholesky").fit(sim.data.X, sim.data.y)
        np.testing.assert_allclose(w, ref.coef_, rtol=RTOL_SKLEARN, atol=1e-10)


def test_ridge_is_posterior_mean_at_lambda_noise2_over_sigma2(stats):
    # MATH.md section 6: ridge at lambda = delta^2 / sigma^2 is E[w | y, sigma, delta].
    sigma, noise = 0.7, 0.4
    mean, _ = posterior_weights(stats, sigma, noise)
    np.testing.assert_allclose(ridge_path(stats, noise**2 / sigma**2)[0], mean, rtol=RTOL_SOLVE)


def test_rss_and_dof_equal_their_definitions(sim, stats):
    X, y = sim.data.X, sim.data.y
    W = ridge_path(stats, LAMBDAS)
    rss = [np.sum((y - X @ w) ** 2) for w in W]
    np.testing.assert_allclose(residual_sum_of_squares_path(stats, W), rss, rtol=1e-8, atol=1e-10)
    hats = [
        np.trace(X @ np.linalg.solve(X.T @ X + lam * np.eye(sim.data.d), X.T)) for lam in LAMBDAS
    ]
    np.testing.assert_allclose(effective_dof(stats, LAMBDAS), hats, rtol=RTOL_SOLVE)


def test_noise_estimate_uses_effective_dof(sim, stats):
    est = noise_variance_estimate(stats, LAMBDAS)
    resid_dof = sim.data.n - effective_dof(stats, LAMBDAS)
    rss = residual_sum_of_squares_path(stats, ridge_path(stats, LAMBDAS))
    ok = resid_dof > MIN_RESIDUAL_DOF
    np.testing.assert_allclose(est[ok], rss[ok] / resid_dof[ok], rtol=1e-12)
    assert np.all(np.isnan(est[~ok]))


def test_noise_estimate_is_nan_for_an_interpolating_fit():
    # N < D and lambda -> 0: the fit interpolates, tr H -> N, no residual degrees of freedom.
    stats = SufficientStats.from_dataset(simulate(n=5, d=10, sigma=1, noise=1, seed=0).data)
    assert np.isnan(noise_variance_estimate(stats, 1e-14)[0])


def test_default_grid_scales_with_the_data(stats):
    grid = default_lambda_grid(stats, num=50)
    assert grid.size == 50 and np.all(np.diff(grid) > 0)
    np.testing.assert_allclose(grid[[0, -1]] / (np.trace(stats.G) / stats.d), [1e-6, 1e3])


@pytest.mark.parametrize("bad", [[0.0, 1.0], [-1.0], [np.inf], [], [[1.0, 2.0]]])
def test_bad_lambdas_are_rejected(bad):
    with pytest.raises(ValueError, match="lambda"):
        as_lambdas(bad)


def test_bad_grid_options_are_rejected(stats):
    with pytest.raises(ValueError, match="at least 2"):
        default_lambda_grid(stats, num=1)
    with pytest.raises(ValueError, match="span"):
        default_lambda_grid(stats, span=(1.0, 0.1))
