"""The family's statistics and log marginal likelihood against a dense multivariate normal.

Reference: V = delta^2 Omega^-1 + sum_g sigma_g^2 X_g X_g^T built as an N x N matrix (the
factor as dense indicator columns), REML = log of the integral over beta of N(y; F beta, V)
under a flat prior, computed directly (log det V + log det F^T V^-1 F + y^T P y) and also as the
limit of a wide Gaussian prior on beta; ML = the MVN density at the GLS estimate.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from hyperbayes.inference.mathematics.family_likelihood import (
    family_log_ml,
    family_terms,
    layout_of,
    restricted_log_ml_eigen,
)
from hyperbayes.inference.mathematics.linear_gaussian import log_marginal_likelihood
from hyperbayes.models.data import Dataset
from hyperbayes.models.family_stats import FamilyStats, family_stats
from hyperbayes.models.specification import Group, specify
from hyperbayes.models.sufficient_stats import SufficientStats

#: Dense and structured computations are both exact; they differ by round-off of O(N) terms.
DENSE_ATOL = 1e-8
#: A N(0, kappa^2) prior on beta differs from the flat-prior limit by about
#: tr((F^T V^-1 F)^-1) / (2 kappa^2) + beta^2 / (2 kappa^2) ~ 1e-5 at kappa = 1e3.
WIDE_PRIOR_ATOL = 1e-4
#: Analytic gradients vs central differences (step 1e-5: truncation ~1e-10, round-off ~1e-9).
GRAD_ATOL = 1e-6


def _dense_design(spec):
    n = spec.n
    F = [np.ones((n, 1))] if spec.intercept else []
    if spec.fixed:
        F.append(spec.fixed_matrix())
    F = np.hstack(F) if F else np.zeros((n, 0))
    cols, col_group = [], []
    for k, g in enumerate(spec.groups):
        if g.factor is not None:
            Z = np.eye(spec.factor.n_levels)[spec.factor.codes]
            cols.append(Z)
            col_group += [k] * Z.shape[1]
        else:
            cols.append(spec.data.X[:, [spec.data.feature_names.index(c) for c in g.columns]])
            col_group += [k] * len(g.columns)
    return F, np.hstack(cols), np.array(col_group)


def dense_log_ml(spec, sigmas, noise, convention):
    F, R, cg = _dense_design(spec)
    y = spec.data.y
    omega = np.ones(spec.n) if spec.obs_weights is None else spec.obs_weights
    V = noise**2 * np.diag(1 / omega) + (R * np.asarray(sigmas)[cg] ** 2) @ R.T
    Vi = np.linalg.inv(V)
    if F.shape[1] == 0:
        return sps.multivariate_normal.logpdf(y, np.zeros(spec.n), V)
    FVF = F.T @ Vi @ F
    beta = np.linalg.solve(FVF, F.T @ Vi @ y)
    if convention == "ml":
        return sps.multivariate_normal.logpdf(y, F @ beta, V)
    res = y - F @ beta
    p = F.shape[1]
    return -0.5 * ((spec.n - p) * np.log(2 * np.pi) + np.linalg.slogdet(V)[1]
                   + np.linalg.slogdet(FVF)[1] + res @ Vi @ res)


def wide_prior_log_ml(spec, sigmas, noise, kappa=1e3):
    F, R, cg = _dense_design(spec)
    omega = np.ones(spec.n) if spec.obs_weights is None else spec.obs_weights
    V = noise**2 * np.diag(1 / omega) + (R * np.asarray(sigmas)[cg] ** 2) @ R.T
    p = F.shape[1]
    C = np.linalg.cholesky(V + kappa**2 * F @ F.T)
    z = np.linalg.solve(C, spec.data.y)
    logpdf = -0.5 * (spec.n * np.log(2 * np.pi) + z @ z) - np.sum(np.log(np.diag(C)))
    return logpdf + p * np.log(kappa * np.sqrt(2 * np.pi))


def _spec(n, d_dense, *, n_groups=1, factor_levels=0, fixed=0, weights=False, intercept=True,
          seed=0, mean_shift=0.0):
    rng = np.random.default_rng(seed)
    cols = fixed + d_dense
    X = rng.standard_normal((n, cols)) + mean_shift
    names = [f"f{j}" for j in range(fixed)] + [f"x{j}" for j in range(d_dense)]
    y = X @ rng.standard_normal(cols) + rng.standard_normal(n) + 3.0 + mean_shift
    cat = {}
    if factor_levels:
        codes = np.r_[np.arange(factor_levels), rng.integers(0, factor_levels, n - factor_levels)]
        y = y + rng.standard_normal(factor_levels)[codes]
        cat = {"site": [f"s{c}" for c in codes]}
    data = Dataset.from_arrays(X, y, feature_names=names)
    dense = names[fixed:]
    groups = [Group(f"g{k}", tuple(dense[k::n_groups])) for k in range(n_groups) if dense[k::n_groups]]
    w = rng.uniform(0.3, 3.0, n) if weights else None
    return specify(data, fixed=names[:fixed], groups=groups, categorical=cat, weights=w,
                   intercept=intercept)


CASES = {
    "N>D": dict(n=40, d_dense=5),
    "N<D": dict(n=12, d_dense=20),
    "weights+fixed": dict(n=40, d_dense=4, fixed=2, weights=True),
    "three groups": dict(n=30, d_dense=9, n_groups=3, fixed=1, weights=True),
    "N<D three groups": dict(n=10, d_dense=15, n_groups=3, fixed=1),
    "no intercept": dict(n=25, d_dense=3, intercept=False, fixed=1),
    "factor": dict(n=50, d_dense=0 + 2, factor_levels=7, fixed=1),
    "factor only, weighted": dict(n=30, d_dense=1, factor_levels=12, weights=True),
    "factor, no intercept": dict(n=30, d_dense=2, factor_levels=5, intercept=False, fixed=1),
}


@pytest.mark.parametrize("convention", ["reml", "ml"])
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_log_ml_matches_dense_mvn(case, convention):
    spec = _spec(**CASES[case])
    st, lay = family_stats(spec), layout_of(spec)
    rng = np.random.default_rng(1)
    for _ in range(3):
        sig = rng.uniform(0.2, 2.0, lay.n_groups)
        noise = rng.uniform(0.5, 1.5)
        got = float(family_log_ml(st, lay, sig, noise, convention=convention)[()])
        assert got == pytest.approx(dense_log_ml(spec, sig, noise, convention), abs=DENSE_ATOL)


@pytest.mark.parametrize("case", ["weights+fixed", "factor", "three groups"])
def test_reml_is_the_flat_prior_limit(case):
    spec = _spec(**CASES[case])
    st, lay = family_stats(spec), layout_of(spec)
    sig = np.full(lay.n_groups, 0.8)
    got = float(family_log_ml(st, lay, sig, 0.9)[()])
    assert got == pytest.approx(wide_prior_log_ml(spec, sig, 0.9), abs=WIDE_PRIOR_ATOL)


def test_zero_scale_is_the_model_without_the_group():
    spec = _spec(**CASES["factor"])
    st, lay = family_stats(spec), layout_of(spec)
    sig = np.array([0.7, 0.0])  # group order: g0 (dense), then the factor
    assert float(family_log_ml(st, lay, sig, 1.1)[()]) == pytest.approx(
        dense_log_ml(spec, sig, 1.1, "reml"), abs=DENSE_ATOL)


def test_vectorised_over_a_grid():
    spec = _spec(**CASES["three groups"])
    st, lay = family_stats(spec), layout_of(spec)
    sig = np.random.default_rng(2).uniform(0.3, 2, (4, 5, 3))
    noise = np.linspace(0.5, 1.5, 5)
    grid = family_log_ml(st, lay, sig, noise)
    assert grid.shape == (4, 5)
    assert grid[2, 3] == pytest.approx(float(family_log_ml(st, lay, sig[2, 3], noise[3])[()]), abs=1e-10)


@pytest.mark.parametrize("convention", ["reml", "ml"])
@pytest.mark.parametrize("case", ["weights+fixed", "three groups", "factor", "factor, no intercept"])
def test_gradients_match_finite_differences(case, convention):
    spec = _spec(**CASES[case])
    st, lay = family_stats(spec), layout_of(spec)
    sig, noise, h = np.linspace(0.5, 1.5, lay.n_groups), 0.8, 1e-5
    t = family_terms(st, lay, sig, noise, convention=convention)

    def f(ls, ln):
        return float(family_log_ml(st, lay, np.exp(ls), np.exp(ln), convention=convention)[()])

    for g in range(lay.n_groups):
        e = np.zeros(lay.n_groups)
        e[g] = h
        fd = (f(np.log(sig) + e, np.log(noise)) - f(np.log(sig) - e, np.log(noise))) / (2 * h)
        assert t.grad_log_sigma[0, g] == pytest.approx(fd, abs=GRAD_ATOL)
    fd = (f(np.log(sig), np.log(noise) + h) - f(np.log(sig), np.log(noise) - h)) / (2 * h)
    assert t.grad_log_noise[0] == pytest.approx(fd, abs=GRAD_ATOL)


@pytest.mark.parametrize("case", ["weights+fixed", "factor", "factor, no intercept", "three groups"])
def test_posterior_moments_match_dense_gaussian(case):
    """beta, w, u | y, scales under a flat prior on beta: the dense Gaussian conditional."""
    spec = _spec(**CASES[case])
    st, lay = family_stats(spec), layout_of(spec)
    sig, noise = np.linspace(0.6, 1.4, lay.n_groups), 0.9
    F, R, cg = _dense_design(spec)
    omega = np.ones(spec.n) if spec.obs_weights is None else spec.obs_weights
    M = np.hstack([F, R])
    prec = M.T @ (M * omega[:, None]) / noise**2
    p = F.shape[1]
    prec[p:, p:] += np.diag(1 / sig[cg] ** 2)
    cov = np.linalg.inv(prec)
    mean = cov @ (M.T @ (omega * spec.data.y)) / noise**2
    t = family_terms(st, lay, sig, noise)
    np.testing.assert_allclose(t.beta_mean[0], mean[:p], atol=1e-8)
    np.testing.assert_allclose(t.beta_cov[0], cov[:p, :p], atol=1e-8)
    dense = np.nonzero(cg != (lay.factor_group if lay.factor_group is not None else -1))[0] + p
    np.testing.assert_allclose(t.w_mean[0], mean[dense], atol=1e-8)
    np.testing.assert_allclose(t.w_cov[0], cov[np.ix_(dense, dense)], atol=1e-8)
    joint = np.r_[np.arange(p), dense]
    np.testing.assert_allclose(t.coef_cov[0], cov[np.ix_(joint, joint)], atol=1e-8)
    if lay.factor_group is not None:
        fac = np.nonzero(cg == lay.factor_group)[0] + p
        np.testing.assert_allclose(t.u_mean[0], mean[fac], atol=1e-8)
        np.testing.assert_allclose(t.u_var[0], np.diag(cov)[fac], atol=1e-8)


# ---------------------------------------------------------------- statistics


def test_chunked_merge_equals_one_pass_and_survives_large_means():
    """Chan's pairwise update: chunks merge to the one-pass statistics; a common offset of 1e8
    leaves the centred co-moment as accurate as without it (raw sums would lose ~16 digits)."""
    base = _spec(n=3000, d_dense=3, factor_levels=40, fixed=1, weights=True, seed=5)
    one = family_stats(base, block_rows=10**9)
    many = family_stats(base, block_rows=257)
    np.testing.assert_allclose(many.within, one.within, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(many.level_mean, one.level_mean, rtol=1e-12, atol=1e-12)
    shifted = _spec(n=3000, d_dense=3, factor_levels=40, fixed=1, weights=True, seed=5, mean_shift=1e8)
    sh = family_stats(shifted, block_rows=257)
    np.testing.assert_allclose(sh.within, one.within, rtol=1e-6)
    np.testing.assert_allclose(sh.comoment, one.comoment, rtol=1e-6)


def test_projection_reproduces_centred_statistics():
    """F = 1, no weights: the projected statistics are those of the centred data, N - 1 rows."""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((50, 4)) + 2, rng.standard_normal(50) + 5
    spec = specify(Dataset.from_arrays(X, y))
    proj = family_stats(spec).projected()
    ref = SufficientStats.from_arrays(X - X.mean(0), y - y.mean())
    np.testing.assert_allclose(proj.G, ref.G, rtol=1e-12)
    np.testing.assert_allclose(proj.b, ref.b, rtol=1e-12)
    assert proj.v == pytest.approx(ref.v, rel=1e-12)
    assert proj.n == 49


def test_eigen_route_equals_general_route():
    spec = _spec(**CASES["weights+fixed"])
    st, lay = family_stats(spec), layout_of(spec)
    s, d = np.array([0.3, 1.0, 4.0]), np.array([0.7, 1.0, 1.3])
    np.testing.assert_allclose(restricted_log_ml_eigen(st, s, d),
                               family_log_ml(st, lay, s[:, None], d), atol=1e-9)


def test_shared_sigma_special_case():
    """F = 1, one group, no weights, centred columns (as load_diabetes gives them): ML equals
    today's likelihood on the centred data exactly (F^T C^-1 F = N / delta^2 because centred
    columns are orthogonal to 1); REML is the same with N - 1 rows and the constant
    -1/2 log N. REML does not depend on the centring of X (beta absorbs it); ML does."""
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((30, 3)), rng.standard_normal(30) + 1
    data = Dataset.from_arrays(X - X.mean(0), y)
    spec = specify(data)
    st, lay = family_stats(spec), layout_of(spec)
    centred, _ = data.center()
    old = SufficientStats.from_dataset(centred)
    for sigma, noise in [(0.5, 1.0), (2.0, 0.3)]:
        ref = float(log_marginal_likelihood(old, sigma, noise))
        ml = float(family_log_ml(st, lay, [sigma], noise, convention="ml")[()])
        reml = float(family_log_ml(st, lay, [sigma], noise)[()])
        assert ml == pytest.approx(ref, abs=1e-9)
        assert reml == pytest.approx(ref + 0.5 * np.log(2 * np.pi * noise**2) - 0.5 * np.log(30), abs=1e-9)
        shifted = specify(Dataset.from_arrays(X + 5.0, y))
        assert float(family_log_ml(family_stats(shifted), lay, [sigma], noise)[()]) == pytest.approx(reml, abs=1e-9)


def test_section_3_without_intercept_is_unchanged():
    rng = np.random.default_rng(6)
    X, y = rng.standard_normal((20, 1)), rng.standard_normal(20)
    data = Dataset.from_arrays(X, y)
    spec = specify(data, intercept=False)
    st, lay = family_stats(spec), layout_of(spec)
    old = SufficientStats.from_dataset(data)
    for conv in ("reml", "ml"):
        assert float(family_log_ml(st, lay, [0.7], 1.2, convention=conv)[()]) == pytest.approx(
            float(log_marginal_likelihood(old, 0.7, 1.2)), abs=1e-10)


def test_stats_memory_is_per_level_not_per_indicator():
    n, L = 200_000, 5_000
    rng = np.random.default_rng(0)
    st = FamilyStats.from_arrays(rng.standard_normal(n), fixed=rng.standard_normal((n, 2)),
                                 codes=rng.integers(0, L, n), n_levels=L)
    assert st.level_mean.shape == (L, 3) and st.within.shape == (3, 3)
