"""Empirical Bayes for the family: mixed-model and meta-analysis references, boundaries, the
special cases of sections 1 and 3, and the Laplace standard errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import statsmodels.api as sm
import statsmodels.stats.meta_analysis as meta
from sklearn.linear_model import BayesianRidge

from hyperbayes.inference.mathematics.family_likelihood import (
    family_log_ml,
    family_terms,
    layout_of,
)
from hyperbayes.inference.methods.empirical_bayes import empirical_bayes, one_dimensional_eb
from hyperbayes.inference.methods.empirical_bayes_family import empirical_bayes_family
from hyperbayes.models.data import Dataset, load_diabetes
from hyperbayes.models.datasets import bcg_table, eight_schools_table, load_bcg, load_eight_schools
from hyperbayes.models.family_stats import family_stats
from hyperbayes.models.specification import Group, specify

#: statsmodels MixedLM with method="bfgs", gtol=1e-12 stops where its gradient is ~1e-12;
#: measured agreement ~1e-12. Its default (a chain of optimisers with gtol ~1e-5) stops
#: early: 2.5e-5 relative on tau^2 was measured with the defaults, hence the tight options.
MIXEDLM_RTOL = 1e-6
#: metafor prints 4 decimals (README of wviechtb/metafor and Viechtbauer 2010), and its Fisher
#: scoring stops when tau^2 changes by less than 1e-5 (rma's default control threshold). With
#: latitude it prints 0.0764 where PyMARE and this package both give 0.076348 (5.2e-5 away):
#: rounding (5e-5) plus the stopping rule, so 1e-4.
METAFOR_ATOL = 1e-4
#: PyMARE's VarianceBasedLikelihoodEstimator runs scipy's minimize with default tolerances:
#: measured 3e-8 relative on tau^2 here; 1e-5 allows for other SciPy versions.
PYMARE_RTOL = 1e-5
#: Newton-polished optimum vs closed forms and the existing eigen route: round-off only.
EXACT_RTOL = 1e-8
#: BayesianRidge with its Gamma priors off and tol 1e-10 is pure type-II ML (MacKay's fixed
#: point run to convergence), the ML convention (it centres with N); measured ~1e-12.
SKLEARN_RTOL = 1e-7


@pytest.fixture(scope="module")
def random_intercept_data():
    """600 rows, 40 groups of unequal size, two covariates, learned noise."""
    rng = np.random.default_rng(7)
    n, L = 600, 40
    codes = rng.integers(0, L, n)
    X = rng.standard_normal((n, 2))
    y = 1.0 + X @ [0.5, -0.3] + 0.8 * rng.standard_normal(L)[codes] + rng.standard_normal(n)
    data = Dataset.from_arrays(np.column_stack([X, codes]), y, feature_names=["a", "b", "g"])
    return data, X, codes


@pytest.mark.parametrize("convention", ["reml", "ml"])
def test_matches_statsmodels_mixedlm(random_intercept_data, convention):
    data, X, codes = random_intercept_data
    spec = specify(data, fixed=["a", "b"], categorical={"g": "g"})
    fit = empirical_bayes_family(spec, convention=convention)
    ref = sm.MixedLM(data.y, np.column_stack([np.ones(data.n), X]), groups=codes).fit(
        reml=convention == "reml", method="bfgs", gtol=1e-12)
    assert fit.converged and not fit.at_boundary
    assert fit.scale("g") ** 2 == pytest.approx(ref.cov_re[0, 0], rel=MIXEDLM_RTOL)
    assert fit.noise**2 == pytest.approx(ref.scale, rel=MIXEDLM_RTOL)
    np.testing.assert_allclose(fit.beta, ref.fe_params, rtol=MIXEDLM_RTOL)
    # BLUPs of the random intercepts (statsmodels reports them per group).
    blups = np.array([ref.random_effects[k].iloc[0] for k in range(40)])
    np.testing.assert_allclose(fit.u_mean, blups, rtol=1e-5, atol=1e-8)


# metafor's README, "fit random-effects model" and "mixed-effects meta-regression model with
# absolute latitude as moderator" (REML; Viechtbauer 2010, J. Stat. Softw. 36(3)):
# tau^2 = 0.3132, estimate -0.7145; with ablat tau^2 = 0.0764, 0.2515, -0.0291.
METAFOR_REML = {False: (0.3132, [-0.7145]), True: (0.0764, [0.2515, -0.0291])}


@pytest.mark.parametrize("latitude", [False, True])
def test_bcg_reml_matches_metafor(latitude):
    fit = empirical_bayes_family(load_bcg(latitude=latitude))
    tau2, beta = METAFOR_REML[latitude]
    assert fit.scale("tau") ** 2 == pytest.approx(tau2, abs=METAFOR_ATOL)
    np.testing.assert_allclose(fit.beta, beta, atol=METAFOR_ATOL)
    assert fit.noise == 1.0 and not fit.noise_learned


@pytest.mark.parametrize("convention", ["reml", "ml"])
@pytest.mark.parametrize("latitude", [False, True])
def test_bcg_matches_pymare(latitude, convention):
    from pymare import Dataset as PymareDataset
    from pymare.estimators import VarianceBasedLikelihoodEstimator

    t = bcg_table()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyMARE's own deprecations are not ours to fix
        ds = PymareDataset(y=t["yi"], v=t["vi"], X=t["ablat"][:, None] if latitude else None)
        ref = VarianceBasedLikelihoodEstimator(method=convention.upper()).fit_dataset(ds).params_
    fit = empirical_bayes_family(load_bcg(latitude=latitude), convention=convention)
    assert fit.scale("tau") ** 2 == pytest.approx(float(ref["tau2"][0, 0]), rel=PYMARE_RTOL)
    np.testing.assert_allclose(fit.beta, ref["fe_params"][:, 0], rtol=PYMARE_RTOL)


@pytest.mark.parametrize("convention", ["reml", "ml"])
def test_eight_schools_is_a_boundary_solution(convention):
    fit = empirical_bayes_family(load_eight_schools(), convention=convention)
    t = eight_schools_table()
    w = 1 / t["s"] ** 2
    assert fit.at_boundary == ("tau",) and fit.scale("tau") == 0.0
    assert fit.converged and "boundary" in fit.message
    assert np.isnan(fit.log_sigma_se[0])
    assert fit.beta[0] == pytest.approx(w @ t["y"] / w.sum(), rel=EXACT_RTOL)  # the pooled mean
    np.testing.assert_array_equal(fit.u_mean, 0.0)
    # The boundary is a maximum: any tau > 0 has a lower likelihood.
    st, lay = family_stats(load_eight_schools()), layout_of(load_eight_schools())
    curve = family_log_ml(st, lay, np.geomspace(1e-3, 30, 50)[:, None], 1.0, convention=convention)
    assert np.all(curve < fit.log_ml)


def test_statsmodels_dersimonian_laird_is_not_truncated():
    """A reference must be read: combine_effects' DL tau^2 on eight schools is negative
    (-44.6); truncated at 0 it agrees with the boundary solution above."""
    t = eight_schools_table()
    res = meta.combine_effects(t["y"], t["s"] ** 2, method_re="chi2")
    assert res.tau2 == pytest.approx(-44.6, abs=0.05)
    assert max(res.tau2, 0.0) == empirical_bayes_family(load_eight_schools()).scale("tau")


# ---------------------------------------------------------------- special cases


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_one_dimensional_identities(seed):
    """No weights, no covariates, one feature, known noise: section 3's closed form,
    sigma^2 = w_ML * w_MAP, and the boundary when m^2 <= c delta^2."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(25)
    y = (0.6 if seed < 3 else 0.02) * x + rng.standard_normal(25)
    spec = specify(Dataset.from_arrays(x[:, None], y), intercept=False, noise=1.0)
    cf = one_dimensional_eb(x, y, noise=1.0)
    for convention in ("reml", "ml"):  # identical without fixed effects
        fit = empirical_bayes_family(spec, convention=convention)
        assert fit.scale("sigma") ** 2 == pytest.approx(cf.sigma2, rel=EXACT_RTOL, abs=1e-300)
        assert bool(fit.at_boundary) == cf.at_boundary
        if not cf.at_boundary:
            assert fit.scale("sigma") ** 2 == pytest.approx(cf.w_ml * fit.w_mean[0], rel=EXACT_RTOL)


@pytest.mark.parametrize("noise", [None, 50.0])
def test_shared_sigma_ml_reproduces_empirical_bayes(noise):
    """Diabetes (centred columns), F = 1: ML is today's fit on centred data exactly; REML with
    known noise gives the same sigma (N enters only through the noise term)."""
    data = load_diabetes()
    old = empirical_bayes(data.center()[0], noise=noise)
    spec = specify(data, noise=noise)
    ml = empirical_bayes_family(spec, convention="ml")
    assert ml.scale("sigma") == pytest.approx(old.sigma, rel=EXACT_RTOL)
    assert ml.noise == pytest.approx(old.noise, rel=EXACT_RTOL)
    assert ml.log_ml == pytest.approx(old.log_evidence, rel=1e-12)
    np.testing.assert_allclose(ml.w_mean, old.w_mean, rtol=1e-7)
    reml = empirical_bayes_family(spec)
    if noise is not None:
        assert reml.scale("sigma") == pytest.approx(old.sigma, rel=EXACT_RTOL)
    else:
        # Learned noise: REML uses N - 1 = 441 rows. Measured: sigma 295.3412 vs 295.3685
        # (-9.3e-5), delta 54.2142 vs 54.1515 (+1.16e-3, about sqrt(442 / 441) - 1).
        assert reml.noise / old.noise - 1 == pytest.approx(1.157e-3, abs=2e-5)
        assert reml.scale("sigma") / old.sigma - 1 == pytest.approx(-9.26e-5, abs=2e-6)


def test_ml_matches_bayesian_ridge_with_intercept():
    """scikit-learn centres with N, i.e. the ML convention: agreement stays meaningful."""
    data = load_diabetes()
    br = BayesianRidge(tol=1e-10, alpha_1=0, alpha_2=0, lambda_1=0, lambda_2=0, max_iter=10_000)
    br.fit(data.X, data.y)
    fit = empirical_bayes_family(specify(data), convention="ml")
    assert fit.scale("sigma") == pytest.approx(1 / np.sqrt(br.lambda_), rel=SKLEARN_RTOL)
    assert fit.noise == pytest.approx(1 / np.sqrt(br.alpha_), rel=SKLEARN_RTOL)
    assert fit.beta[0] == pytest.approx(br.intercept_, rel=SKLEARN_RTOL)


# ---------------------------------------------------------------- groups, boundary, SE


@pytest.fixture(scope="module")
def three_groups():
    """Three groups of 4 columns with scales 1, 0.3 and 0 (the last should sit at 0)."""
    rng = np.random.default_rng(11)
    n = 300
    X = rng.standard_normal((n, 12))
    w = np.r_[rng.standard_normal(4), 0.3 * rng.standard_normal(4), np.zeros(4)]
    y = 2.0 + X @ w + 0.7 * rng.standard_normal(n)
    names = [f"x{j}" for j in range(12)]
    data = Dataset.from_arrays(X, y, feature_names=names)
    return specify(data, groups={"big": names[:4], "small": names[4:8], "none": names[8:]})


def test_several_groups_are_a_stationary_maximum(three_groups):
    fit = empirical_bayes_family(three_groups)
    assert fit.converged
    st, lay = family_stats(three_groups), layout_of(three_groups)
    t = family_terms(st, lay, fit.sigmas, fit.noise)
    free = fit.sigmas > 0
    np.testing.assert_allclose(t.grad_log_sigma[0, free], 0, atol=1e-6)
    assert abs(t.grad_log_noise[0]) < 1e-6
    # Coordinates at 0 are local maxima: a small positive scale lowers the likelihood.
    for g in np.nonzero(~free)[0]:
        s = fit.sigmas.copy()
        s[g] = 1e-2
        assert float(family_log_ml(st, lay, s, fit.noise)[()]) < fit.log_ml
    assert fit.sigmas[0] > fit.sigmas[1]


def test_boundary_in_one_group_only():
    rng = np.random.default_rng(3)
    n = 200
    X = rng.standard_normal((n, 6))
    y = X[:, :3] @ [1.0, -1.0, 0.5] + rng.standard_normal(n)
    data = Dataset.from_arrays(X, y, feature_names=list("abcdef"))
    spec = specify(data, groups={"signal": list("abc"), "noise_cols": list("def")})
    fit = empirical_bayes_family(spec)
    lml_zero = float(family_log_ml(family_stats(spec), layout_of(spec), [fit.sigmas[0], 0.0], fit.noise)[()])
    if fit.at_boundary:
        assert fit.at_boundary == ("noise_cols",) and np.isnan(fit.log_sigma_se[1])
        assert np.isfinite(fit.log_sigma_se[0])
    else:  # an interior optimum must beat the boundary
        assert fit.log_ml > lml_zero


def test_laplace_standard_errors_match_the_curvature(random_intercept_data):
    """SE of (log tau, log delta) = sqrt(diag(-H^-1)), H by second differences of the REML."""
    data, _, _ = random_intercept_data
    spec = specify(data, fixed=["a", "b"], categorical={"g": "g"})
    fit = empirical_bayes_family(spec)
    st, lay = family_stats(spec), layout_of(spec)
    theta = np.log([fit.sigmas[0], fit.noise])

    def f(th):
        return float(family_log_ml(st, lay, [np.exp(th[0])], np.exp(th[1]))[()])

    h, H = 1e-4, np.empty((2, 2))
    for i in range(2):
        for j in range(2):
            ei, ej = np.eye(2)[i] * h, np.eye(2)[j] * h
            H[i, j] = (f(theta + ei + ej) - f(theta + ei - ej) - f(theta - ei + ej) + f(theta - ei - ej)) / (4 * h * h)
    se = np.sqrt(np.diag(np.linalg.inv(-H)))
    # Second differences of a log likelihood of size ~1e3 at h = 1e-4: error ~1e-13 * 1e3 / 1e-8.
    assert fit.log_sigma_se[0] == pytest.approx(se[0], rel=1e-3)
    assert fit.log_noise_se == pytest.approx(se[1], rel=1e-3)


def test_fixed_scale_groups_and_weights():
    """A group with a fixed scale is not estimated; weights enter as omega."""
    rng = np.random.default_rng(5)
    n = 150
    X = rng.standard_normal((n, 4))
    omega = rng.uniform(0.5, 2.0, n)
    y = X @ [1, 1, 0.2, 0.2] + rng.standard_normal(n) / np.sqrt(omega)
    data = Dataset.from_arrays(X, y, feature_names=list("abcd"))
    spec = specify(data, weights=omega,
                   groups=[Group("learned", ("a", "b")), Group("known", ("c", "d"), scale=0.5)])
    fit = empirical_bayes_family(spec)
    assert fit.scale("known") == 0.5 and np.isnan(fit.log_sigma_se[1])
    assert list(fit.learned) == [True, False]
    assert fit.noise == pytest.approx(1.0, rel=0.2)  # simulated with delta = 1


def test_bad_options():
    with pytest.raises(ValueError, match="convention"):
        empirical_bayes_family(load_eight_schools(), convention="reml2")
