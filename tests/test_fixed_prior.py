"""A proper Normal prior on the fixed effects (models/fixed_prior.py), through every door.

beta ~ N(0, s^2 I) on the fixed effects, intercept included, is the family's penalised group of
known scale s over the columns of F, so the evidence is log N(y | 0, V) integrated over the
unknown scales, with V = delta^2 Omega^-1 + s^2 F F^T + tau^2 Z Z^T = C + s^2 F F^T. References:

- the family's flat-prior (REML, Lebesgue) evidence, where F is projected out instead, minus
  (P / 2) log(2 pi s^2): the limit s -> infinity (P = 1 and P = 2);
- the dense Gaussian log N(y | 0, V) with NumPy/SciPy matrices at fixed scales, and its
  integral over tau by ``scipy.integrate.quad`` (the whole evidence), for a moderate s;
- the dense flat-prior marginal, log N(y | F m, C) + (P / 2) log(2 pi) + 1/2 log det v with m,
  v the GLS mean and covariance of beta (the Gaussian integral over beta done by hand).

Measured (this module's seeds): the exact evidence against the flat one minus
(P / 2) log(2 pi s^2) at s = 1e4 sd(y): 4.2e-9 nats (eight schools), 1.1e-8 (the covariate
model), the prior's own effect at that width; the likelihood against the dense formula: 8e-13;
the exact evidence against quad of the dense integrand: 6e-14. Through the command line at
s = 100 the evidence is the flat one minus 1/2 log(2 pi 100^2) minus 0.0042 nats: that last
part is the prior's real effect at that width (to first order -(mu_hat^2 + v) / (2 s^2) with
mu_hat ~ 7.9, v ~ 4.7^2), so it is checked against the dense reference (2e-14), and the
limit against --fixed-prior 1e5 (4e-9).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

import hyperbayes as hb
from hyperbayes.inference.mathematics.family_likelihood import (
    family_log_ml,
    family_terms,
    layout_of,
)
from hyperbayes.inference.methods.exact_family import exact_family_posterior
from hyperbayes.inference.methods.results import RunOptions
from hyperbayes.inference.workflow.cli import main
from hyperbayes.inference.workflow.registry import get_runner
from hyperbayes.models.data import DataError, Dataset
from hyperbayes.models.datasets import eight_schools_table, load_eight_schools
from hyperbayes.models.family_stats import family_stats
from hyperbayes.models.fixed_prior import with_fixed_prior
from hyperbayes.models.formula import spec_from_formula
from hyperbayes.models.hyperpriors import OptionError, parse_hyperprior
from hyperbayes.models.specification import Group, specify

#: s -> infinity: the prior's own effect at s = 1e4 sd(y) is ~1e-8 nats; the quadrature's ~1e-13.
LIMIT_ATOL = 1e-6
#: The same Gaussian density by two routes (Cholesky of the family's system, dense matrices).
DENSE_ATOL = 1e-9
#: The exact oracle's Simpson rule (refined to 1e-8 nats) against scipy's adaptive quad.
QUAD_ATOL = 1e-8
#: The same numbers through two doors (one deterministic computation).
SAME_RTOL = 1e-10
#: SMC's evidence against the exact one (smc_family.AGREEMENT_SE standard errors).
SMC_Z = 4.0

WIDE = 1e4  # times sd(y): a prior wide enough to be flat to ~1e-8 nats


def _options(**kw):
    return RunOptions(hyperprior=None, noise=1.0, noise_prior=None, **kw)


@pytest.fixture(scope="module")
def schools():
    return load_eight_schools(tau_prior="halfcauchy:5")


@pytest.fixture(scope="module")
def covariate():
    """40 rows, 6 levels, an intercept and a covariate x (P = 2), known noise 1."""
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 6, 40)
    x = rng.normal(size=40)
    y = 1.5 + 0.8 * x + rng.normal(0, 0.7, 6)[codes] + rng.normal(0, 1.0, 40)
    data = Dataset.from_arrays(x[:, None], y, feature_names=["x"])
    return specify(data, fixed=("x",), categorical={"g": codes}, noise=1.0, prior="halfnormal:2")


@pytest.fixture(scope="module")
def dense_model():
    """No factor: an intercept, a fixed x and a learned group of two columns (no shrinkage plot)."""
    rng = np.random.default_rng(9)
    X = rng.normal(size=(30, 3))
    y = 2.0 + 0.5 * X[:, 0] + X[:, 1:] @ [0.4, -0.3] + rng.normal(0, 0.5, 30)
    data = Dataset.from_arrays(X, y, feature_names=["x", "z1", "z2"])
    return specify(data, fixed=("x",), groups=[Group("sigma", ("z1", "z2"), prior="halfnormal:1")],
                   noise=0.5)


def _matrices(spec):
    """(y, F with the intercept, Z indicators, diag of Omega^-1) of a spec under a flat prior."""
    F = np.column_stack([np.ones(spec.n)] * spec.intercept + [spec.column(c) for c in spec.fixed])
    Z = np.eye(spec.factor.n_levels)[spec.factor.codes]
    omega_inv = 1.0 / spec.obs_weights if spec.obs_weights is not None else np.ones(spec.n)
    return spec.data.y, F, Z, omega_inv


def _dense_log_ml(spec, tau, sd):
    """log N(y | 0, V), V = delta^2 Omega^-1 + sd^2 F F^T + tau^2 Z Z^T (dense)."""
    y, F, Z, omega_inv = _matrices(spec)
    V = spec.noise**2 * np.diag(omega_inv) + sd**2 * F @ F.T + tau**2 * Z @ Z.T
    return stats.multivariate_normal(np.zeros(spec.n), V).logpdf(y)


def _dense_flat_log_ml(spec, tau):
    """log of the integral over beta (Lebesgue) of N(y | F beta, C), done by hand (GLS)."""
    y, F, Z, omega_inv = _matrices(spec)
    C = spec.noise**2 * np.diag(omega_inv) + tau**2 * Z @ Z.T
    Ci = np.linalg.inv(C)
    v = np.linalg.inv(F.T @ Ci @ F)
    m = v @ F.T @ Ci @ y
    P = F.shape[1]
    return (stats.multivariate_normal(F @ m, C).logpdf(y) + 0.5 * P * np.log(2 * np.pi)
            + 0.5 * np.linalg.slogdet(v)[1])


def _quad_evidence(log_ml, log_prior):
    """log of the integral over tau of exp(log_ml(tau)) p(tau), by quad in t = log tau."""
    shift = log_ml(1.0)

    def f(t):
        tau = np.exp(t)
        return np.exp(log_ml(tau) + log_prior(tau) + t - shift)

    value, _ = integrate.quad(f, -30.0, 8.0, epsabs=0.0, epsrel=1e-11, limit=400, points=[-3, 0, 2])
    return shift + np.log(value)


# --- the specification --------------------------------------------------------------------


def test_with_fixed_prior_builds_the_fixed_group(covariate):
    spec = with_fixed_prior(covariate, 3.0)
    assert (spec.intercept, spec.fixed, spec.n_fixed, spec.fixed_prior_sd) == (False, (), 0, 3.0)
    assert spec.groups[0] == Group("fixed", ("Intercept", "x"), scale=3.0)
    assert spec.groups[1:] == covariate.groups and spec.factor is covariate.factor
    assert np.all(spec.column("Intercept") == 1.0)
    np.testing.assert_array_equal(spec.column("x"), covariate.column("x"))
    np.testing.assert_array_equal(spec.data.y, covariate.data.y)
    assert spec.noise == covariate.noise and spec.learned_groups == (1,)
    assert "group 'fixed': 2 column(s), scale fixed at 3" in spec.describe()


def test_specify_and_the_formula_take_the_keyword(covariate):
    via_specify = specify(covariate.data, fixed=("x",), categorical={"g": covariate.factor.codes},
                          noise=1.0, prior="halfnormal:2", fixed_prior=3.0)
    assert via_specify.groups == with_fixed_prior(covariate, 3.0).groups
    frame = pd.DataFrame(eight_schools_table())
    spec = spec_from_formula("y ~ 1 + (1|school)", frame, standard_errors="s", fixed_prior=10)
    assert spec.fixed_prior_sd == 10.0 and spec.groups[0].columns == ("Intercept",)
    assert spec.factor.levels[0] == "A"  # the formula's factor keeps its level names


@pytest.mark.parametrize("sd", [0.0, -1.0, np.nan, np.inf, "10", True])
def test_a_bad_sd_is_an_option_error(schools, sd):
    with pytest.raises(OptionError, match="sd must be"):
        with_fixed_prior(schools, sd)


def test_what_the_prior_cannot_be_put_on(schools, covariate):
    no_fixed = specify(covariate.data, intercept=False, categorical={"g": covariate.factor.codes},
                       groups=[Group("sigma", ("x",))], noise=1.0)
    with pytest.raises(DataError, match="nothing to put a prior on"):
        with_fixed_prior(no_fixed, 1.0)
    with pytest.raises(DataError, match="already have a N"):
        with_fixed_prior(with_fixed_prior(schools, 1.0), 1.0)
    named = Dataset.from_arrays(covariate.data.X, covariate.data.y, feature_names=["Intercept"])
    with pytest.raises(DataError, match="column named 'Intercept'"):
        specify(named, fixed=("Intercept",), categorical={"g": covariate.factor.codes},
                fixed_prior=1.0)
    taken = specify(covariate.data, groups=[Group("fixed", ("x",))], noise=1.0)
    with pytest.raises(DataError, match="already named 'fixed'"):
        with_fixed_prior(taken, 1.0)


# --- the evidence -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["schools", "covariate"])
def test_a_wide_prior_gives_the_flat_evidence_less_its_constant(request, name):
    spec = request.getfixturevalue(name)
    sd = WIDE * float(np.std(spec.data.y))
    flat = exact_family_posterior(spec)
    proper = exact_family_posterior(with_fixed_prior(spec, sd))
    P = spec.n_fixed
    assert proper.log_evidence == pytest.approx(
        flat.log_evidence - 0.5 * P * np.log(2 * np.pi * sd**2), abs=LIMIT_ATOL)
    # ... and the same posterior: the fixed effects' moments and the scale's.
    np.testing.assert_allclose(proper.w_mean[:P], flat.beta_mean, rtol=1e-6)
    np.testing.assert_allclose(proper.w_cov[:P, :P], flat.beta_cov, rtol=1e-6)
    np.testing.assert_allclose(proper.scale_mean, flat.scale_mean, rtol=1e-6)


@pytest.mark.slow
def test_a_wide_prior_with_a_learned_noise(covariate):
    """Two unknown scales (tau, delta): the prior's scale is absolute, not relative to delta."""
    from dataclasses import replace

    spec = replace(covariate, noise=None, noise_prior=parse_hyperprior("halfnormal:2"))
    sd = WIDE * float(np.std(spec.data.y))
    flat = exact_family_posterior(spec).log_evidence
    proper = exact_family_posterior(with_fixed_prior(spec, sd)).log_evidence
    assert proper == pytest.approx(flat - np.log(2 * np.pi * sd**2), abs=LIMIT_ATOL)


@pytest.mark.parametrize("name", ["schools", "covariate"])
@pytest.mark.parametrize("convention", ["ml", "reml"])
def test_the_likelihood_is_the_dense_gaussian(request, name, convention):
    spec = request.getfixturevalue(name)
    sd = 2.0 * float(np.std(spec.data.y))
    proper = with_fixed_prior(spec, sd)
    taus = np.array([0.0, 0.3, 2.0, 15.0])
    sigmas = np.column_stack([np.full(taus.size, sd), taus])
    got = family_log_ml(family_stats(proper), layout_of(proper), sigmas, np.ones(taus.size),
                        convention=convention)
    want = [_dense_log_ml(spec, t, sd) for t in taus]
    np.testing.assert_allclose(got, want, rtol=0, atol=DENSE_ATOL)


def test_the_exact_evidence_is_the_integral_of_the_dense_marginal(schools):
    sd = 10.0
    post = exact_family_posterior(with_fixed_prior(schools, sd))
    want = _quad_evidence(lambda t: _dense_log_ml(schools, t, sd),
                          stats.halfcauchy(scale=5.0).logpdf)
    assert post.log_evidence == pytest.approx(want, abs=QUAD_ATOL)


# --- the methods present the prior's group as fixed effects --------------------------------


@pytest.mark.parametrize("method", ["exact", "eb"])
def test_run_family_reports_fixed_effects_not_a_group(schools, method):
    spec = with_fixed_prior(schools, WIDE * float(np.std(schools.data.y)))
    s = get_runner(method, family=True)(spec, _options(draws=400))
    flat = get_runner(method, family=True)(schools, _options(draws=400))
    assert set(s.sigmas) == {"tau"} and s.sigma == s.sigmas["tau"] and s.weights == ()
    assert set(s.fixed_effects) == {"Intercept"} and s.intercept == s.fixed_effects["Intercept"][0]
    # A prior this wide is flat: the same estimates and standard errors as without it.
    np.testing.assert_allclose(s.fixed_effects["Intercept"], flat.fixed_effects["Intercept"], rtol=1e-6)
    assert s.sigmas["tau"] == pytest.approx(flat.sigmas["tau"], rel=1e-6, abs=1e-9)


def test_the_exact_summary_and_draws(schools):
    spec = with_fixed_prior(schools, 10.0)
    post = exact_family_posterior(spec)
    s = get_runner("exact", family=True)(spec, _options(draws=300, seed=2))
    assert s.fixed_effects["Intercept"] == pytest.approx((post.w_mean[0], np.sqrt(post.w_cov[0, 0])))
    assert "true log p(y)" in s.extra["evidence_note"] and "N(0, 10^2)" in s.extra["evidence_note"]
    post_tree = s.draws["posterior"]
    assert "w" not in post_tree and list(post_tree["beta"].coords["fixed"].values) == ["Intercept"]
    assert list(post_tree["sigma"].coords["group"].values) == ["tau"]
    theta = post_tree["u"].values + post_tree["beta"].values[..., :1]
    np.testing.assert_allclose(post_tree["theta"].values, theta)


def test_weights_leave_out_the_fixed_effects(dense_model):
    spec = with_fixed_prior(dense_model, 5.0)
    stats_, lay = family_stats(spec), layout_of(spec)
    s = get_runner("eb", family=True)(spec, _options())
    t = family_terms(stats_, lay, np.array([[5.0, s.sigmas["sigma"]]]), np.array([0.5]))
    assert list(s.fixed_effects) == ["Intercept", "x"] and set(s.sigmas) == {"sigma"}
    np.testing.assert_allclose(s.weights, t.w_mean[0, 2:], rtol=1e-10)
    est, se = zip(*s.fixed_effects.values(), strict=True)
    np.testing.assert_allclose(est, t.w_mean[0, :2], rtol=1e-10)
    np.testing.assert_allclose(se, np.sqrt(np.diag(t.w_cov[0])[:2]), rtol=1e-10)


def test_smc_evidence_and_note_under_the_prior(schools):
    spec = with_fixed_prior(schools, 10.0)
    s = get_runner("smc", family=True)(spec, _options(draws=500, chains=2, seed=1))
    exact = exact_family_posterior(spec).log_evidence
    assert abs(s.log_evidence - exact) < SMC_Z * s.extra["log_evidence_se"]
    assert "true log p(y)" in s.extra["evidence_note"] and set(s.fixed_effects) == {"Intercept"}


def test_compare_captions_a_true_evidence(dense_model):
    c = hb.compare(dense_model, fixed_prior=5.0, methods=["exact", "eb"])
    out = c.to_json()
    assert out["fixed"] == ["Intercept", "x"] and out["fixed_prior_sd"] == 5.0
    assert "true log p(y)" in out["evidence_note"] and "N(0, 5^2)" in out["evidence_note"]
    table = c.to_pandas()
    assert "sigma[fixed]" not in table.columns and "beta[x]_se" in table.columns
    flat = hb.compare(dense_model, methods=["exact"]).to_json()
    assert "Lebesgue" in flat["evidence_note"] and flat["fixed_prior_sd"] is None


# --- the front doors ------------------------------------------------------------------------


def test_prepare_run_and_fit_pass_it_to_the_spec(schools):
    run = hb.prepare_run(schools, fixed_prior=10.0)
    assert run.family and run.data.fixed_prior_sd == 10.0
    assert hb.prepare_run(hb.load_diabetes(), fixed_prior=100.0).data.groups[0].name == "fixed"
    direct = get_runner("exact", family=True)(with_fixed_prior(schools, 10.0), _options(draws=50))
    via_fit = hb.fit("exact", schools, fixed_prior=10.0, draws=50)
    assert via_fit.log_evidence == pytest.approx(direct.log_evidence, rel=SAME_RTOL)


def _cli(capsys, argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_flag(capsys, tmp_path):
    path = tmp_path / "schools.csv"
    pd.DataFrame(eight_schools_table()).to_csv(path, index=False)
    base = ["fit", "exact", "--data", path, "--formula", "y ~ 1 + (1|school)", "--se", "s",
            "--json", "--quiet"]
    runs = {}
    for flag in ([], ["--fixed-prior", 100], ["--fixed-prior", 1e5]):
        code, out, _ = _cli(capsys, base + flag)
        assert code == 0
        runs[flag[1] if flag else None] = json.loads(out)
    flat, at_100, wide = runs[None], runs[100], runs[1e5]
    scale = float(flat["priors"]["school"].split(":")[1])  # the data-scaled default prior
    prior = stats.halfnorm(scale=scale).logpdf
    spec = load_eight_schools()
    assert flat["log_evidence"] == pytest.approx(
        _quad_evidence(lambda t: _dense_flat_log_ml(spec, t), prior), abs=QUAD_ATOL)
    assert at_100["log_evidence"] == pytest.approx(
        _quad_evidence(lambda t: _dense_log_ml(spec, t, 100.0), prior), abs=QUAD_ATOL)
    assert wide["log_evidence"] == pytest.approx(
        flat["log_evidence"] - 0.5 * np.log(2 * np.pi * 1e10), abs=LIMIT_ATOL)
    assert "sigma[fixed]" not in at_100 and set(at_100["sigmas"]) == {"school"}
    assert set(at_100["fixed_effects"]) == {"Intercept"}
    code, out, err = _cli(capsys, base + ["--fixed-prior", -1])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "positive finite" in err
