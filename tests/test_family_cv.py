"""Cross-validated group penalties: the group ridge, held-out errors, hypergradients and GCV
from statistics, each against a brute-force computation on the explicit design.

References: the dense design [1, F', X, indicators] with diag(omega) and the penalty matrix
(a direct solve and an explicit inverse / hat matrix), row-by-row held-out errors, central
finite differences of the score, a fine 2-D grid of the same score, and the closed form of
eight schools' held-out prediction (the precision-weighted mean of the training schools).
"""

from __future__ import annotations

import numpy as np
import pytest

from hyperbayes.inference.mathematics.family_likelihood import family_terms, layout_of
from hyperbayes.inference.mathematics.group_ridge import (
    effective_dof,
    gcv_score,
    group_ridge,
    heldout_error,
    kfold_score,
    kfold_splits,
)
from hyperbayes.inference.methods.cross_validation import fold_indices
from hyperbayes.inference.methods.cross_validation_family import (
    cross_validate_family,
    fold_statistics,
    run_family,
)
from hyperbayes.inference.methods.results import RunOptions
from hyperbayes.models.data import Dataset
from hyperbayes.models.datasets import eight_schools_table, load_eight_schools
from hyperbayes.models.family_stats import family_stats
from hyperbayes.models.hyperpriors import OptionError, parse_hyperprior
from hyperbayes.models.specification import Group, specify

#: Elimination and dense solve are both exact; they differ by round-off (measured <= 2e-14).
SOLVE_ATOL = 1e-10
#: Central differences with step 1e-4 in log lambda: truncation ~h^2 |f'''| ~ 1e-8 relative,
#: round-off ~1e-16 / 1e-4; measured <= 1e-7 relative.
FD_RTOL, FD_STEP = 1e-6, 1e-4
#: The score at the optimiser's answer and at the fine grid's best point (step ~1e-3 in log
#: lambda, so the grid's own error is ~curvature * 2.5e-7 relative).
GRID_RTOL = 1e-6


def _spec(n=60, *, levels=6, fixed=1, groups=2, weights=True, intercept=True, seed=0,
          single_level=False):
    """Two-column dense groups, a fixed covariate, a factor (one level with a single row when
    ``single_level``), observation weights; columns offset from 0 so that centring matters."""
    rng = np.random.default_rng(seed)
    d = 2 * groups
    X = rng.standard_normal((n, fixed + d)) + 0.7
    names = [f"f{j}" for j in range(fixed)] + [f"x{j}" for j in range(d)]
    y = X @ rng.uniform(-1, 1, fixed + d) + 2.0 + rng.standard_normal(n)
    cat = {}
    if levels:
        codes = np.r_[np.arange(levels), rng.integers(1 if single_level else 0, levels, n - levels)]
        y = y + 0.8 * rng.standard_normal(levels)[codes]
        cat = {"site": [f"s{c}" for c in codes]}
    dense = names[fixed:]
    group_list = [Group(f"g{k}", tuple(dense[2 * k: 2 * k + 2])) for k in range(groups)]
    omega = rng.uniform(0.3, 3.0, n) if weights else None
    return specify(Dataset.from_arrays(X, y, feature_names=names), fixed=names[:fixed],
                   groups=group_list, categorical=cat, weights=omega, intercept=intercept)


def _design(spec, rows=None):
    """[F, X, Z], omega, y and the group of each column of X and Z (-1 for F)."""
    rows = np.arange(spec.n) if rows is None else rows
    parts = [np.ones((spec.n, 1))] if spec.intercept else []
    if spec.fixed:
        parts.append(spec.fixed_matrix())
    P = sum(p.shape[1] for p in parts)
    parts.append(spec.dense_matrix())
    col_group = [-1] * P + list(spec.group_of_dense_column())
    if spec.factor is not None:
        parts.append(np.eye(spec.factor.n_levels)[spec.factor.codes])
        col_group += [spec.factor_group] * spec.factor.n_levels
    omega = np.ones(spec.n) if spec.obs_weights is None else spec.obs_weights
    return np.hstack(parts)[rows], omega[rows], spec.data.y[rows], np.array(col_group)


def _dense_solve(A, omega, y, col_group, lam):
    pen = np.where(col_group >= 0, lam[np.maximum(col_group, 0)], 0.0)
    H = A.T @ (A * omega[:, None]) + np.diag(pen)
    return np.linalg.solve(H, A.T @ (omega * y)), np.linalg.inv(H)


def _coefficients(fit, b=0):
    return np.r_[fit.beta[b], fit.w[b], fit.u[b]]


CASES = {
    "factor+fixed+weights": dict(),
    "no intercept": dict(intercept=False),
    "no factor": dict(levels=0),
    "factor and a covariate, unweighted": dict(groups=0, weights=False),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_group_ridge_equals_dense_solve(case):
    spec = _spec(**CASES[case])
    st, lay = family_stats(spec), layout_of(spec)
    lam = np.random.default_rng(1).uniform(0.05, 20.0, (3, lay.n_groups))
    fit = group_ridge(st, lay, lam)
    A, omega, y, cg = _design(spec)
    P = spec.n_fixed + len(spec.dense_columns)
    for b in range(3):
        coef, Hinv = _dense_solve(A, omega, y, cg, lam[b])
        np.testing.assert_allclose(_coefficients(fit, b), coef, rtol=0, atol=SOLVE_ATOL)
        np.testing.assert_allclose(fit.coef_cov(0.7)[b], 0.49 * Hinv[:P, :P], rtol=0, atol=SOLVE_ATOL)
        np.testing.assert_allclose(fit.u_var(0.7)[b], 0.49 * np.diag(Hinv)[P:], rtol=0, atol=SOLVE_ATOL)


def test_group_ridge_is_the_posterior_given_the_scales():
    """lambda_g = delta^2 / sigma_g^2: the mean and covariance of family_terms (REML)."""
    spec = _spec()
    st, lay = family_stats(spec), layout_of(spec)
    sig, noise = np.array([0.6, 1.3, 0.9]), 1.1
    fit, t = group_ridge(st, lay, noise**2 / sig**2), family_terms(st, lay, sig, noise)
    np.testing.assert_allclose(fit.beta[0], t.beta_mean[0], atol=SOLVE_ATOL)
    np.testing.assert_allclose(fit.w[0], t.w_mean[0], atol=SOLVE_ATOL)
    np.testing.assert_allclose(fit.u[0], t.u_mean[0], atol=SOLVE_ATOL)
    np.testing.assert_allclose(fit.coef_cov(noise)[0], t.coef_cov[0], atol=SOLVE_ATOL)
    np.testing.assert_allclose(fit.u_var(noise)[0], t.u_var[0], atol=SOLVE_ATOL)


@pytest.mark.parametrize("case", ["factor+fixed+weights", "no intercept", "no factor"])
def test_heldout_error_from_statistics_equals_rows(case):
    """Training statistics by merging folds give the dense fit on the training rows, and the
    held-out error from the fold's statistics is the row-by-row sum; the level with one row is
    missing from one training set, where its u is 0 and its row is predicted without it."""
    spec = _spec(**CASES[case], single_level=True)
    lay = layout_of(spec)
    lam = np.array([[0.4, 3.0, 1.5][: lay.n_groups]])
    splits = kfold_splits(fold_statistics(spec, folds=4, seed=3))
    A, omega, y, cg = _design(spec)
    missing_seen = False
    for rows, (train, held) in zip(fold_indices(spec.n, 4, 3), splits, strict=True):
        keep = np.setdiff1d(np.arange(spec.n), rows)
        fit = group_ridge(train, lay, lam)
        coef, _ = _dense_solve(A[keep], omega[keep], y[keep], cg, lam[0])
        np.testing.assert_allclose(_coefficients(fit), coef, rtol=0, atol=SOLVE_ATOL)
        resid = y[rows] - A[rows] @ _coefficients(fit)
        assert heldout_error(fit, held)[0] == pytest.approx(omega[rows] @ resid**2, rel=1e-10)
        if spec.factor is not None and 0 in rows:
            missing_seen = True
            assert fit.u[0, 0] == 0.0
    assert missing_seen or spec.factor is None


def _fd_gradient(score, lam):
    out = np.empty(lam.size)
    for g in range(lam.size):
        step = np.zeros(lam.size)
        step[g] = FD_STEP
        out[g] = (score(lam * np.exp(step)) - score(lam * np.exp(-step))) / (2 * FD_STEP)
    return out


@pytest.mark.parametrize("scheme", ["kfold", "gcv"])
def test_hypergradient_equals_finite_differences_in_every_coordinate(scheme):
    """G = 3 (two dense groups and the factor): every coordinate of the exact gradient."""
    spec = _spec(n=80, levels=7)
    st, lay = family_stats(spec), layout_of(spec)
    splits = kfold_splits(fold_statistics(spec, folds=5, seed=0))

    def terms(lam):
        return kfold_score(splits, lay, lam) if scheme == "kfold" else gcv_score(st, lay, lam)

    assert lay.n_groups == 3 and lay.factor_group == 2
    points = np.array([[0.3, 4.0, 1.2], [20.0, 0.05, 0.2]])
    batch = terms(points).grad_log_lambda  # vectorised over settings
    for b, lam in enumerate(points):
        exact = terms(lam).grad_log_lambda[0]
        np.testing.assert_allclose(batch[b], exact, rtol=1e-12)
        fd = _fd_gradient(lambda x: terms(x).score[0], lam)
        np.testing.assert_allclose(exact, fd, rtol=FD_RTOL, atol=FD_RTOL * np.abs(fd).max())
        assert np.all(np.abs(exact) > 1e-4 * np.abs(fd).max())  # every coordinate is live


def _grid_minimum(score, centre, half_width, n=200):
    """Best point of an n x n grid of log lambda, then of an n x n grid 1.5 cells around it.
    Returns (best log lambda, its score, the coarse step, the fine step)."""
    steps = []
    for width in (half_width, None):
        width = half_width if width is not None else 1.5 * steps[0]
        axes = [np.linspace(c - width, c + width, n) for c in centre]
        steps.append(axes[0][1] - axes[0][0])
        T = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
        values = np.concatenate([score(np.exp(T[i:i + 10_000])) for i in range(0, len(T), 10_000)])
        j = int(np.argmin(values))
        centre, best = T[j], values[j]
    return centre, best, steps[0], steps[1]


def test_optimiser_reaches_the_optimum_of_a_fine_grid():
    """G = 2 (a dense group and the factor): L-BFGS-B with the exact hypergradient reaches the
    optimum of a 200 x 200 grid of the same 5-fold score (refined by a second 200 x 200 grid
    around the best cell)."""
    spec = _spec(n=150, levels=8, groups=1, seed=4)
    res = cross_validate_family(spec, folds=5, seed=2)
    assert res.converged and not res.at_bound
    lay = layout_of(spec)
    splits = kfold_splits(fold_statistics(spec, folds=5, seed=2))
    t_grid, s_grid, coarse, fine = _grid_minimum(
        lambda lam: kfold_score(splits, lay, lam).score, centre=(0.0, 0.0), half_width=7.0)
    t_opt = np.log(res.lambdas)
    assert np.all(np.abs(t_grid) < 6.5)  # the optimum is inside the coarse grid
    assert res.score == pytest.approx(s_grid, rel=GRID_RTOL)
    assert res.score <= s_grid * (1 + 1e-12)  # the optimiser is at least as good as the grid
    assert np.all(np.abs(t_opt - t_grid) <= fine), (t_opt, t_grid, fine, coarse)  # 5e-4 < 1.1e-3


def test_gcv_equals_its_definition_with_the_hat_matrix():
    spec = _spec()
    st, lay = family_stats(spec), layout_of(spec)
    A, omega, y, cg = _design(spec)
    lam = np.array([[0.3, 2.0, 0.8], [5.0, 0.1, 12.0]])
    got, fit = gcv_score(st, lay, lam).score, group_ridge(st, lay, lam)
    for b in range(2):
        coef, Hinv = _dense_solve(A, omega, y, cg, lam[b])
        root = np.sqrt(omega)[:, None]
        S = root * A @ Hinv @ A.T * root.T
        rss = omega @ (y - A @ coef) ** 2
        assert effective_dof(fit)[b] == pytest.approx(np.trace(S), rel=1e-12)
        expected = (rss / omega.sum()) / (1 - np.trace(S) / spec.n) ** 2
        assert got[b] == pytest.approx(expected, rel=1e-12)


def test_learned_noise_is_the_residual_variance_and_fixed_groups_follow_it():
    """delta^2 = sum omega e^2 / (N - tr S) at the returned penalties (brute force), and a group
    with a fixed scale s has lambda = delta^2 / s^2 at the settled delta."""
    base = _spec(n=70, seed=6)
    groups = (base.groups[0], Group("g1", base.groups[1].columns, scale=0.5), base.groups[2])
    spec = specify(base.data, fixed=base.fixed, groups=groups,
                   categorical={"site": np.array(base.factor.levels)[base.factor.codes]},
                   weights=base.obs_weights)
    res = cross_validate_family(spec, scheme="gcv")
    A, omega, y, cg = _design(spec)
    coef, Hinv = _dense_solve(A, omega, y, cg, res.lambdas)
    root = np.sqrt(omega)[:, None]
    dof = spec.n - np.trace(root * A @ Hinv @ A.T * root.T)
    assert res.noise == pytest.approx(np.sqrt(omega @ (y - A @ coef) ** 2 / dof), rel=1e-8)
    assert res.penalty("g1") == pytest.approx(res.noise**2 / 0.25, rel=1e-8)
    assert res.scale("g1") == 0.5 and list(res.learned) == [True, False, True]


def test_eight_schools_kfold_is_the_precision_weighted_mean_of_the_other_schools():
    t = eight_schools_table()
    y, s2 = t["y"], t["s"] ** 2
    res = cross_validate_family(load_eight_schools(), folds=5, seed=0)
    assert res.folds == 5 and res.converged
    tau2 = res.scale("tau") ** 2
    sse = 0.0
    for rows in fold_indices(8, 5, 0):
        keep = np.setdiff1d(np.arange(8), rows)
        wts = 1.0 / (s2[keep] + tau2)
        mu = wts @ y[keep] / wts.sum()
        sse += np.sum((y[rows] - mu) ** 2 / s2[rows])
    assert res.score == pytest.approx(sse / np.sum(1 / s2), rel=1e-12)
    # mu given tau is the precision-weighted mean of all schools (the GLS estimate).
    wts = 1.0 / (s2 + tau2)
    assert res.beta[0] == pytest.approx(wts @ y / wts.sum(), rel=1e-12)


def test_run_family_on_eight_schools():
    state = np.random.get_state()[1].copy()  # noqa: NPY002 (checking the global RNG)
    options = RunOptions(hyperprior=parse_hyperprior("halfnormal:10"), noise=1.0,
                         noise_prior=None, seed=0)
    out = run_family(load_eight_schools(), options)
    assert np.array_equal(np.random.get_state()[1], state)  # noqa: NPY002
    assert out.method == "cv" and set(out.sigmas) == {"tau"} and out.sigmas["tau"] > 0
    mu, se = out.fixed_effects["Intercept"]
    assert np.isfinite(mu) and se > 0 and out.noise == 1.0
    assert set(out.random_effects["tau"]) == set("ABCDEFGH")
    assert out.extra["lambdas"]["tau"] == pytest.approx(1.0 / out.sigmas["tau"] ** 2)
    assert out.extra["folds"] == 5 and out.extra["converged"]
    assert out.to_json()["fixed_effects"]["Intercept"]["estimate"] == mu
    again = run_family(load_eight_schools(), options)
    assert again.sigmas == out.sigmas  # seeded folds: the same answer


def test_a_group_without_signal_is_reported_at_the_limit():
    """y independent of x: the score falls toward lambda -> infinity, a flat limit that is
    reported (at_bound and a warning), not passed off as an interior optimum."""
    rng = np.random.default_rng(0)
    spec = specify(Dataset.from_arrays(rng.standard_normal((40, 1)), rng.standard_normal(40)),
                   noise=1.0)
    res = cross_validate_family(spec, seed=0)
    assert res.at_bound == ("sigma",) and res.scale("sigma") < 1e-4
    assert any("shrunk away" in w for w in res.warnings)


def test_bad_options_are_refused():
    spec = load_eight_schools()
    with pytest.raises(OptionError, match="scheme"):
        cross_validate_family(spec, scheme="loo")
    with pytest.raises(OptionError, match="folds"):
        cross_validate_family(spec, folds=1)
    with pytest.raises(ValueError, match="lambdas"):
        group_ridge(family_stats(spec), layout_of(spec), [[1.0, 2.0]])
    with pytest.raises(ValueError, match="positive"):
        group_ridge(family_stats(spec), layout_of(spec), [[0.0]])
