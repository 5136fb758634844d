"""SMC evidence on the model family (inference/methods/smc_family.py) against the exact oracle.

Two members, 2000 particles x 4 chains, seed 0: eight schools (HalfCauchy(5) on tau, known
standard errors: one unknown scale) and a simulated random intercept with a covariate and
learned noise (two unknown scales). Measured at seed 0 (seeds 0-7 in brackets, the range):

==================  ===================================  =====================================
                    eight schools                        random intercept + covariate
==================  ===================================  =====================================
error, se (nats)    +0.0061, 0.0096                      +0.0024, 0.0102
error / se          +0.63 (-1.04 to +1.01)               +0.24 (-1.47 to +0.85)
scale means / MCSE  tau +0.19 (-0.94 to +0.46)           site +0.67, noise +0.85 (all |z| < 1.3)
stages per chain    2-3                                  11
time                ~1.6 s (first, compiling), ~0.6 s    ~2.2 s, plus ~1.7 s for the oracle
==================  ===================================  =====================================

The tolerance of the evidence is 4 standard errors (error / se of 4 chains is about Student's
t_3) plus the collapsed route's bias floor; of the posterior means, 4 Monte Carlo standard
errors (ArviZ's MCSE of the mean over the particles, which counts their duplicates).
"""

from __future__ import annotations

import math

import arviz_stats as azs
import numpy as np
import pytest

from hyperbayes.inference.methods.exact_family import exact_family_posterior
from hyperbayes.inference.methods.results import RunOptions
from hyperbayes.inference.methods.smc_family import (
    AGREEMENT_FLOOR,
    AGREEMENT_SE,
    EVIDENCE_NOTE,
    _disagreement,
    run_family,
    smc_family,
)
from hyperbayes.inference.methods.smc_stages import SmcEvidenceWarning
from hyperbayes.inference.workflow.registry import get_runner
from hyperbayes.models.data import Dataset
from hyperbayes.models.datasets import load_eight_schools
from hyperbayes.models.hyperpriors import Hyperprior, ImproperPriorError, OptionError
from hyperbayes.models.specification import Group, specify

#: The evidence's tolerance: SE_TOL standard errors plus the collapsed route's bias floor
#: (smc.py's accuracy table: median |error| <= 0.011 nats; tests/test_smc.py's 0.03).
SE_TOL = AGREEMENT_SE
BIAS_FLOOR = AGREEMENT_FLOOR
#: Posterior means within this many Monte Carlo standard errors of the exact ones.
MCSE_TOL = 4.0
#: The fraction of particles below an exact posterior q-quantile: within this many
#: sqrt(q (1 - q) / n_eff) of q (n_eff: ArviZ's ESS of that quantile over the particles).
QUANTILE_SDS = 5.0
QUANTILES = (0.025, 0.5, 0.975)


def _random_intercept_spec():
    """10 sites x 8 rows: y = 1 + 0.5 x + u_site + e, sd(u) = 0.8, sd(e) = 1; the noise, the
    site scale (HalfNormal(2) each) and the slope of x (a fixed effect) are unknown."""
    rng = np.random.default_rng(0)
    site = np.repeat(np.arange(10), 8)
    x = rng.normal(size=site.size)
    y = 1.0 + 0.5 * x + rng.normal(0, 0.8, 10)[site] + rng.normal(size=site.size)
    data = Dataset.from_arrays(x[:, None], y, feature_names=["x"], target_name="y")
    return specify(
        data, fixed=["x"], categorical={"site": site},
        groups=[Group("site", factor="site", prior="halfnormal:2")], noise_prior="halfnormal:2",
    )


@pytest.fixture(scope="module")
def schools():
    spec = load_eight_schools(tau_prior="halfcauchy:5")
    return spec, exact_family_posterior(spec), smc_family(spec, seed=0)


@pytest.fixture(scope="module")
def intercepts():
    spec = _random_intercept_spec()
    return spec, exact_family_posterior(spec), smc_family(spec, seed=0)


def _scale_draws(result, name):
    """(chain, draw) particles of one unknown scale."""
    post = result.tree["posterior"]
    if name == "noise":
        return post["noise"].values
    return post["sigma"].sel(group=name).values


def _assert_evidence_agrees(result, exact):
    assert result.exact_log_evidence == pytest.approx(exact.log_evidence, abs=1e-12)
    assert math.isfinite(result.log_evidence_se) and result.log_evidence_se > 0
    tolerance = SE_TOL * result.log_evidence_se + BIAS_FLOOR
    assert abs(result.error) <= tolerance, (result.error, result.log_evidence_se)
    assert result.error_z == pytest.approx(result.error / result.log_evidence_se)


def _assert_mean_agrees(draws, exact_mean):
    """(chain, draw) draws: their mean within MCSE_TOL Monte Carlo standard errors."""
    mcse = float(azs.mcse(np.asarray(draws)))
    z = (np.mean(draws) - exact_mean) / mcse
    assert abs(z) <= MCSE_TOL, (np.mean(draws), exact_mean, mcse)


def _assert_quantiles_agree(draws, exact, name):
    draws = np.asarray(draws)
    q = np.asarray(QUANTILES)
    n_eff = np.array([float(azs.ess(draws, method="quantile", prob=p)) for p in q])
    below = np.array([np.mean(draws <= x) for x in exact.scale_quantile(name, q)])
    assert np.all(np.abs(below - q) <= QUANTILE_SDS * np.sqrt(q * (1 - q) / n_eff)), below


def test_eight_schools_evidence_matches_the_exact_value(schools):
    spec, exact, result = schools
    _assert_evidence_agrees(result, exact)
    assert result.scale_names == ("tau",) and result.n_free == 1
    assert result.warnings == ()


def test_eight_schools_posterior_matches_the_oracle(schools):
    spec, exact, result = schools
    tau = _scale_draws(result, "tau")
    assert tau.shape == (4, 2000)
    _assert_mean_agrees(tau, exact.scale_mean[0])
    _assert_quantiles_agree(tau, exact, "tau")
    # the coefficients: one exact draw given each particle's tau
    post = result.tree["posterior"]
    _assert_mean_agrees(post["beta"].sel(fixed="Intercept").values, exact.beta_mean[0])
    for j, school in enumerate("ABCDEFGH"):
        _assert_mean_agrees(post["u"].sel(school=school).values, exact.u_mean[j])


def test_random_intercept_with_learned_noise_matches_the_oracle(intercepts):
    spec, exact, result = intercepts
    _assert_evidence_agrees(result, exact)
    assert result.scale_names == ("site", "noise") == exact.scale_names
    for j, name in enumerate(exact.scale_names):
        draws = _scale_draws(result, name)
        _assert_mean_agrees(draws, exact.scale_mean[j])
        _assert_quantiles_agree(draws, exact, name)
    slope = result.tree["posterior"]["beta"].sel(fixed="x").values
    _assert_mean_agrees(slope, exact.beta_mean[1])


def test_stage_statistics_are_recorded(intercepts):
    """Each stage's importance ESS is PyMC's tempering target (threshold x draws) except the
    last, clipped at beta = 1, whose ESS is at least that; the schedule ends at 1."""
    _, _, result = intercepts
    stats = result.tree["sample_stats"]
    target = result.threshold * result.draws
    for c, n in enumerate(result.n_stages):
        ess = stats["ess"].values[c, :n]
        np.testing.assert_allclose(ess[:-1], target, rtol=0.01)
        assert target * 0.99 <= ess[-1] <= result.draws == 2000
        assert result.last_stage_ess[c] == ess[-1]
        assert result.betas[c][-1] == 1.0 and len(result.betas[c]) == n
        assert np.all(np.isnan(stats["ess"].values[c, n:]))


def test_run_family_summary(schools):
    spec, exact, _ = schools
    before = np.random.get_state()[1].copy()  # noqa: NPY002 (checking the global RNG)
    options = RunOptions(hyperprior=Hyperprior("halfnormal", (1.0,)), noise=1.0, noise_prior=None,
                         seed=0, draws=2000, chains=4)
    summary = get_runner("smc", family=True)(spec, options)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    result = smc_family(spec, seed=0)  # the same seed: the same particles
    assert summary.method == "smc"
    assert summary.log_evidence == result.log_evidence
    assert summary.sigmas == {"tau": pytest.approx(float(_scale_draws(result, "tau").mean()))}
    lo, hi = summary.sigma_intervals["tau"]
    assert lo < exact.scale_mean[0] < hi
    assert set(summary.fixed_effects) == {"Intercept"}
    assert set(summary.random_effects["tau"]) == set("ABCDEFGH")
    extra = summary.extra
    assert extra["exact_log_evidence"] == pytest.approx(exact.log_evidence)
    assert extra["error"] == pytest.approx(summary.log_evidence - exact.log_evidence)
    assert extra["error_z"] == pytest.approx(extra["error"] / extra["log_evidence_se"])
    assert extra["evidence_note"] == EVIDENCE_NOTE
    assert extra["n_stages"] == max(extra["chain_n_stages"]) and extra["last_stage_ess"] > 0
    assert summary.diagnostics["ess_bulk_min"] > 400
    # an intercept alone: the note is in extra, not a warning
    assert not any("Lebesgue" in w for w in summary.warnings)
    assert summary.to_json()["evidence_note"] == EVIDENCE_NOTE


def test_run_family_warns_about_the_evidence_of_a_covariate():
    spec = _random_intercept_spec()
    options = RunOptions(hyperprior=Hyperprior("halfnormal", (1.0,)), noise=1.0, noise_prior=None,
                         seed=1, draws=150, chains=2)
    with pytest.warns(SmcEvidenceWarning) as record:  # 75 particles per scale: flagged
        summary = run_family(spec, options)
    assert any("fewer than 100 per parameter" in str(w.message) for w in record)
    assert any("fewer than 100 per parameter" in w for w in summary.warnings)
    assert any("Lebesgue" in w for w in summary.warnings)
    assert set(summary.fixed_effects) == {"Intercept", "x"}
    assert summary.noise == pytest.approx(float(summary.draws["posterior"]["noise"].mean()))
    assert set(summary.sigmas) == {"site"} and summary.random_effects["site"].keys() == {
        str(k) for k in range(10)
    }


def test_random_walk_kernel_agrees_too():
    spec = load_eight_schools(tau_prior="halfcauchy:5")
    result = smc_family(spec, seed=2, kernel="mh", draws=1000)
    exact = exact_family_posterior(spec)
    _assert_evidence_agrees(result, exact)
    assert "mean_accept_rate" in result.tree["sample_stats"] and result.kernel == "mh"


def test_disagreement_with_the_exact_value_is_reported():
    assert _disagreement(-10.0, 0.01, -10.0 + 0.06) == ()  # 0.06 <= 4 x 0.01 + 0.03
    (message,) = _disagreement(-10.0, 0.01, -10.0 + 0.08)
    assert "-0.080 nats" in message and "-8.0 standard errors" in message
    assert _disagreement(-10.0, float("nan"), -11.0) == ()  # one chain: no scale to judge by
    assert _disagreement(-10.0, 0.01, None) == ()


def test_bad_input_is_refused_before_sampling():
    schools = load_eight_schools()
    with pytest.raises(OptionError, match="no hyperprior"):
        smc_family(schools)
    with pytest.raises(ImproperPriorError):
        smc_family(load_eight_schools(tau_prior="flat"))
    fixed = specify(schools.data, standard_errors="s", categorical={"school": list("ABCDEFGH")},
                    groups=[Group("tau", factor="school", scale=5.0)])
    with pytest.raises(OptionError, match="nothing for SMC to sample"):
        smc_family(fixed)
    good = load_eight_schools(tau_prior="halfcauchy:5")
    with pytest.raises(OptionError, match="threshold"):
        smc_family(good, threshold=1.5)
    with pytest.raises(OptionError, match="unknown SMC kernel"):
        smc_family(good, kernel="nuts")
    with pytest.raises(OptionError, match="too few"):
        smc_family(good, draws=1)


@pytest.mark.slow
def test_three_scales_without_oracle_two_seeds_agree():
    """No exact value beyond two unknown scales: the summary says so, and two independent
    runs agree within their combined standard error (plus twice the bias floor). ~20 s."""
    rng = np.random.default_rng(0)
    site = np.repeat(np.arange(12), 6)
    x, z = rng.normal(size=(2, site.size))
    y = 1.0 + 0.5 * x + rng.normal(0, 0.7, 12)[site] + 0.3 * z + rng.normal(size=site.size)
    data = Dataset.from_arrays(np.column_stack([x, z]), y, feature_names=["x", "z"], target_name="y")
    spec = specify(data, fixed=["x"], categorical={"site": site}, noise_prior="halfnormal:2",
                   groups=[Group("z", ("z",), prior="halfnormal:1"),
                           Group("site", factor="site", prior="halfnormal:2")])
    options = RunOptions(hyperprior=Hyperprior("halfnormal", (1.0,)), noise=1.0, noise_prior=None,
                         seed=1)
    first = run_family(spec, options)
    assert first.extra["exact_log_evidence"] is None and first.extra["error_z"] is None
    assert "at most 2 unknown scales" in first.extra["exact_note"]
    second = smc_family(spec, seed=2)
    se = math.hypot(first.extra["log_evidence_se"], second.log_evidence_se)
    assert abs(first.log_evidence - second.log_evidence) <= SE_TOL * se + 2 * BIAS_FLOOR
