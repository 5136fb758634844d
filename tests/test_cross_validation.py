"""Cross-validation by sufficient statistics against brute-force refitting and scikit-learn."""

import json

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV

from hyperbayes.inference.methods.cross_validation import cross_validate, fold_indices, run
from hyperbayes.inference.methods.results import RunOptions
from hyperbayes.models import DataError, Dataset, DataWarning, parse_hyperprior, simulate

#: Subtraction of statistics and the eigen route vs refitting with LU solves on the rows:
#: the same numbers up to round-off, amplified at most by cond(G + lambda I) ~ 1e3 here.
RTOL_REFIT = 1e-8
#: scikit-learn's LOO (SVD of X) vs ours (eigendecomposition of X^T X): round-off only.
RTOL_SKLEARN = 1e-7
LAMBDAS = np.geomspace(1e-2, 1e3, 9)


def refit(X_train, y_train, lam):
    return np.linalg.solve(
        X_train.T @ X_train + lam * np.eye(X_train.shape[1]), X_train.T @ y_train
    )


@pytest.fixture(scope="module", params=[(40, 5), (12, 20)], ids=["N>D", "N<D"])
def data(request):
    n, d = request.param
    return simulate(n=n, d=d, sigma=0.6, noise=1.0, seed=5).data


@pytest.fixture(scope="module")
def diabetes_like():
    # Strong signal and correlated columns, so the LOO curve has a clear interior minimum.
    rng = np.random.default_rng(2)
    X = rng.standard_normal((150, 8)) @ rng.standard_normal((8, 8))
    y = X @ rng.standard_normal(8) * 0.3 + rng.standard_normal(150)
    return Dataset.from_arrays(X, y)


def brute_force_loo(data, lam):
    X, y = data.X, data.y
    errors = []
    for i in range(data.n):
        keep = np.arange(data.n) != i
        errors.append((y[i] - X[i] @ refit(X[keep], y[keep], lam)) ** 2)
    return np.mean(errors), np.std(errors, ddof=1) / np.sqrt(data.n)


def test_closed_form_loo_equals_refitting(data):
    res = cross_validate(data, scheme="loo", lambdas=LAMBDAS, noise=1.0)
    expected = np.array([brute_force_loo(data, lam) for lam in LAMBDAS])
    np.testing.assert_allclose(res.score, expected[:, 0], rtol=RTOL_REFIT)
    np.testing.assert_allclose(res.se, expected[:, 1], rtol=RTOL_REFIT)


def test_loo_in_row_blocks_equals_one_block(data, monkeypatch):
    whole = cross_validate(data, scheme="loo", lambdas=LAMBDAS, noise=1.0)
    monkeypatch.setattr("hyperbayes.inference.methods.cross_validation._LOO_BLOCK_ELEMENTS", 3 * LAMBDAS.size)
    blocked = cross_validate(data, scheme="loo", lambdas=LAMBDAS, noise=1.0)
    np.testing.assert_allclose(blocked.score, whole.score, rtol=1e-12)
    np.testing.assert_allclose(blocked.se, whole.se, rtol=1e-9)


def test_kfold_by_subtraction_equals_refitting(data):
    folds, seed = 4, 9
    res = cross_validate(data, scheme="kfold", lambdas=LAMBDAS, folds=folds, seed=seed, noise=1.0)
    X, y = data.X, data.y
    fold_mse = np.empty((folds, LAMBDAS.size))
    for f, rows in enumerate(fold_indices(data.n, folds, seed)):
        train = np.setdiff1d(np.arange(data.n), rows)
        for j, lam in enumerate(LAMBDAS):
            w = refit(X[train], y[train], lam)
            fold_mse[f, j] = np.mean((y[rows] - X[rows] @ w) ** 2)
    sizes = np.array([len(r) for r in fold_indices(data.n, folds, seed)])
    np.testing.assert_allclose(res.score, sizes @ fold_mse / data.n, rtol=RTOL_REFIT)
    np.testing.assert_allclose(res.se, fold_mse.std(axis=0, ddof=1) / np.sqrt(folds), rtol=1e-6)


def test_folds_partition_the_rows_and_follow_the_seed():
    parts = fold_indices(23, 5, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(23))
    assert {len(p) for p in parts} == {4, 5}
    again = fold_indices(23, 5, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not all(
        np.array_equal(a, b) for a, b in zip(parts, fold_indices(23, 5, seed=2), strict=True)
    )


def test_gcv_equals_its_definition(data):
    res = cross_validate(data, scheme="gcv", lambdas=LAMBDAS, noise=1.0)
    X, y, n = data.X, data.y, data.n
    for lam, score in zip(LAMBDAS, res.score, strict=True):
        H = X @ np.linalg.solve(X.T @ X + lam * np.eye(data.d), X.T)
        expected = np.mean((y - H @ y) ** 2) / (1 - np.trace(H) / n) ** 2
        np.testing.assert_allclose(score, expected, rtol=RTOL_REFIT)
    assert np.all(np.isnan(res.se)) and np.isnan(res.lambda_1se)


def test_sklearn_ridgecv_loo_picks_the_same_lambda(diabetes_like):
    grid = np.geomspace(1e-2, 1e4, 60)
    ref = RidgeCV(alphas=grid, fit_intercept=False, store_cv_results=True).fit(
        diabetes_like.X, diabetes_like.y
    )
    res = cross_validate(diabetes_like, scheme="loo", lambdas=grid, noise=1.0)
    assert res.lambda_ == ref.alpha_
    assert 0 < np.argmin(res.score) < grid.size - 1  # an interior minimum: the test can fail
    np.testing.assert_allclose(res.score, ref.cv_results_.mean(axis=0), rtol=RTOL_SKLEARN)


def test_one_standard_error_rule(diabetes_like):
    res = cross_validate(diabetes_like, scheme="kfold", lambda_range=(1e-2, 1e4), n_lambdas=80)
    best = np.argmin(res.score)
    chosen = np.flatnonzero(res.lambdas == res.lambda_1se)[0]
    assert chosen >= best
    assert res.score[chosen] <= res.score[best] + res.se[best]
    larger = np.arange(res.lambdas.size) > chosen
    assert np.all(res.score[larger] > res.score[best] + res.se[best])


def test_sigma_is_noise_over_root_lambda(diabetes_like):
    res = cross_validate(diabetes_like, scheme="loo", lambda_range=(1e-2, 1e4), noise=0.8)
    assert res.sigma == pytest.approx(0.8 / np.sqrt(res.lambda_), rel=1e-15)
    assert res.sigma_1se == pytest.approx(0.8 / np.sqrt(res.lambda_1se), rel=1e-15)
    assert not res.noise_estimated and res.warnings == ()


def test_unknown_noise_is_estimated_and_said(diabetes_like):
    res = cross_validate(diabetes_like, scheme="gcv", lambda_range=(1e-2, 1e4))
    assert res.noise_estimated
    assert any("noise scale was not given" in w for w in res.warnings)
    # The data were drawn with unit noise; 150 rows pin the residual variance to ~ +-12%.
    assert res.noise == pytest.approx(1.0, rel=0.25)


def test_optimum_at_the_edge_of_the_grid_is_reported(diabetes_like):
    res = cross_validate(diabetes_like, scheme="loo", lambdas=[1e5, 1e6, 1e7], noise=1.0)
    assert res.lambda_ == 1e5
    assert any("smallest lambda of the grid" in w for w in res.warnings)


def test_random_state_untouched_and_seed_reproducible(data):
    # The legacy global RNG on purpose: the test proves it is left alone.
    np.random.seed(123)  # noqa: NPY002
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    a = cross_validate(data, scheme="kfold", lambdas=LAMBDAS, folds=5, seed=3, noise=1.0)
    b = cross_validate(data, scheme="kfold", lambdas=LAMBDAS, folds=5, seed=3, noise=1.0)
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scheme": "bootstrap"}, "unknown scheme"),
        ({"lambdas": [1.0], "lambda_range": (1.0, 2.0)}, "not both"),
        ({"lambda_range": (2.0, 1.0)}, "low < high"),
        ({"folds": 1}, "folds must be between"),
        ({"noise": -1.0}, "noise must be"),
    ],
)
def test_bad_options_raise(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cross_validate(data, **kwargs)


def test_one_observation_is_a_data_error():
    with pytest.warns(DataWarning, match="constant"):  # one row: every column is constant
        one = Dataset.from_arrays([[1.0, 2.0]], [3.0])
    with pytest.raises(DataError, match="at least 2 observations"):
        cross_validate(one)


def test_run_gives_the_json_contract(diabetes_like):
    options = RunOptions(hyperprior=parse_hyperprior("halfnormal:2"), noise=1.0, noise_prior=None)
    summary = run(diabetes_like, options)
    out = json.loads(json.dumps(summary.to_json()))
    assert out["method"] == "cv" and out["scheme"] == "kfold"
    assert out["sigma"] == pytest.approx(1.0 / np.sqrt(out["lambda"]))
    assert out["cv_score"] == pytest.approx(min(out["curve"]["score"]))
    assert len(out["weights"]) == diabetes_like.d and out["log_evidence"] is None
    assert summary.diagnostics["folds"] == 10


def test_run_on_tiny_data_uses_fewer_folds_and_says_ard_is_ignored():
    tiny = simulate(n=6, d=2, sigma=1.0, noise=0.5, seed=0).data
    options = RunOptions(
        hyperprior=parse_hyperprior("halfnormal:2"), noise=0.5, noise_prior=None, ard=True
    )
    summary = run(tiny, options, scheme="kfold")
    assert summary.diagnostics["folds"] == 6
    assert any("ARD" in w for w in summary.warnings)
