"""NUTS on the model family against the exact oracle (MATH.md section 7).

Reference: :func:`~hyperbayes.inference.methods.exact_family.exact_family_posterior`
(quadrature over the one or two unknown scales, exact Gaussian moments of beta and u given
them). Posterior means are compared in units of ArviZ's Monte Carlo standard error
(``arviz_stats.mcse``, which accounts for autocorrelation). Each sampled case is a
module-scoped fixture, so every model compiles once.

Measured (nutpie, 4 x 1000 draws, this file's seeds; z = (NUTS - exact) / MCSE):

* eight schools, HalfCauchy(5) on tau, marginal route, seed 0: tau z = +0.61, mu z = +0.50,
  the eight theta_j |z| <= 1.69; 0 divergences (0 in each of seeds 0-19), R-hat 1.001, bulk
  ESS >= 3016 of 4000 (the auxiliary dimensions at work), E-BFMI 0.97.
* weak random intercept (30 groups x 5 rows, true group sd 0.2, noise 1, learned;
  posterior mean of the group scale 0.14 +- 0.10), marginal route, seed 0: group scale
  z = -1.13, noise z = -0.47, mu z = +0.36, the 30 theta_l |z| <= 1.38; 0 divergences (0 in
  seeds 0-7 even at target_accept 0.8 and 0.95), R-hat 1.003, bulk ESS >= 1623; posterior
  sds of the two scales within 1% of the exact ones.
* centred eight schools at the default target_accept 0.95, seed 2: 11 divergences, R-hat
  1.55, E-BFMI 0.14, bulk ESS 7 (non-centred, same seed: 0, 1.006, 0.91, 1625). Over seeds 0-19: divergences in 11 runs (1-11 each), E-BFMI < 0.3 in all
  20, R-hat > 1.01 in 19; the non-centred route had 0 divergences and E-BFMI > 0.9 in all 20
  (at PyMC's 0.8 both hierarchical routes diverge on nutpie in nearly every seed).

Runtime: each NUTS call is ~3 s, nearly all model compilation (sampling 0.2-0.6 s); the
first in a process ~8 s (Numba warm-up). This file's default run: ~25 s.
"""

from __future__ import annotations

import logging

import arviz_stats as azs
import numpy as np
import pytest

from hyperbayes.inference.methods.exact_family import exact_family_posterior
from hyperbayes.inference.methods.nuts_family import nuts_family, run_family
from hyperbayes.inference.methods.results import RunOptions
from hyperbayes.models.data import Dataset
from hyperbayes.models.datasets import eight_schools_table, load_eight_schools
from hyperbayes.models.hyperpriors import Hyperprior, ImproperPriorError, OptionError
from hyperbayes.models.specification import Group, specify

#: Sampler vs exact: within 4 Monte Carlo standard errors (about 6e-5 two-sided per
#: comparison for a correct sampler; 42 comparisons here).
Z_MCSE = 4.0
#: The seed at which the centred eight schools diverges at the default target_accept.
FUNNEL_SEED = 2


@pytest.fixture(autouse=True, scope="module")
def _quiet_pymc():
    # PyMC logs the sampled variables at INFO; the tests read diagnose() instead.
    logger = logging.getLogger("pymc")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def _weak_random_intercept(seed: int = 1):
    """30 groups x 5 rows, y = 1 + u_g + e with u_g ~ N(0, 0.2^2), e ~ N(0, 1): the data barely
    inform the group scale (its posterior piles up near 0), and the noise is learned."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(30), 5)
    y = 1.0 + rng.normal(0, 0.2, 30)[g] + rng.normal(0, 1.0, g.size)
    data = Dataset.from_arrays(g[:, None].astype(float), y, feature_names=["g"], target_name="y")
    return specify(data, categorical={"site": "g"},
                   groups=[Group("site", factor="site", prior="halfnormal:1")],
                   noise_prior="halfnormal:2")


@pytest.fixture(scope="module")
def schools():
    return load_eight_schools(tau_prior="halfcauchy:5")


@pytest.fixture(scope="module")
def schools_exact(schools):
    return exact_family_posterior(schools)


@pytest.fixture(scope="module")
def schools_marginal(schools):
    return nuts_family(schools, seed=0)


@pytest.fixture(scope="module")
def weak():
    return _weak_random_intercept()


@pytest.fixture(scope="module")
def weak_marginal(weak):
    return nuts_family(weak, seed=0)


def _z(result, name, exact, **sel):
    """(posterior mean - exact) / MCSE of one variable (selected by coords), as an array."""
    post = result.draws["posterior"][name]
    mcse = azs.mcse(result.draws, method="mean")[name]
    if sel:
        post, mcse = post.sel(**sel), mcse.sel(**sel)
    return (post.mean(("chain", "draw")).values - exact) / np.asarray(mcse.values)


def test_eight_schools_marginal_agrees_with_the_oracle(schools_marginal, schools_exact):
    res, ex = schools_marginal, schools_exact
    assert res.diagnostics.divergences == 0 and res.diagnostics.ok, res.diagnostics.messages
    assert res.model == "marginal" and res.target_accept == 0.95
    z = {
        "tau": _z(res, "sigma", ex.scale_mean[0], group="tau"),
        "mu": _z(res, "beta", ex.beta_mean[0], fixed="Intercept"),
        "theta": _z(res, "theta", ex.beta_mean[0] + ex.u_mean),
    }
    for name, value in z.items():
        assert np.all(np.abs(value) < Z_MCSE), (name, value)


def test_weak_random_intercept_marginal_agrees_with_the_oracle(weak, weak_marginal):
    res, ex = weak_marginal, exact_family_posterior(weak)
    assert ex.scale_names == ("site", "noise")
    d = res.diagnostics
    assert d.divergences == 0 and d.r_hat_max <= 1.01 and d.ok, d.messages
    assert res.target_accept == 0.99  # two sampled scales
    z = {
        "site": _z(res, "sigma", ex.scale_mean[0], group="site"),
        "noise": _z(res, "noise", ex.scale_mean[1]),
        "mu": _z(res, "beta", ex.beta_mean[0], fixed="Intercept"),
        "theta": _z(res, "theta", ex.beta_mean[0] + ex.u_mean),
    }
    for name, value in z.items():
        assert np.all(np.abs(value) < Z_MCSE), (name, value)
    # the posterior sd of the scales, not only their means, is the oracle's (a loose check:
    # the sd's own Monte Carlo error is a few percent at this ESS)
    sd = [res.draws["posterior"]["sigma"].std().item(), res.draws["posterior"]["noise"].std().item()]
    np.testing.assert_allclose(sd, ex.scale_sd, rtol=0.1)


def test_centred_eight_schools_diverges_where_the_others_do_not(schools, schools_marginal):
    centred = nuts_family(schools, model="centered", seed=FUNNEL_SEED)
    noncentred = nuts_family(schools, model="noncentered", seed=FUNNEL_SEED)
    assert centred.target_accept == noncentred.target_accept == 0.95  # the defaults
    assert centred.diagnostics.divergences > 0
    assert centred.diagnostics.bfmi_min < 0.3
    assert any("divergence" in m for m in centred.diagnostics.messages)
    assert any("E-BFMI" in m for m in centred.diagnostics.messages)
    assert noncentred.diagnostics.divergences == 0
    assert schools_marginal.diagnostics.divergences == 0
    # the hierarchical routes return the family's layout too
    post = centred.draws["posterior"]
    assert set(post.data_vars) == {"sigma", "beta", "u", "theta"}
    np.testing.assert_allclose(post["theta"].sel(school="C"),
                               post["u"].sel(school="C") + post["beta"].sel(fixed="Intercept"))


def test_run_family_summary(schools):
    state = np.random.get_state()[1].copy()  # noqa: NPY002 (checking the global RNG)
    options = RunOptions(hyperprior=Hyperprior("halfnormal", (1.0,)), noise=1.0,
                         noise_prior=None, seed=3, draws=100, chains=2)
    s = run_family(schools, options)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002
    post = s.draws["posterior"]
    assert s.method == "nuts" and s.extra["model"] == "marginal" and s.log_evidence is None
    assert s.sigmas["tau"] == pytest.approx(post["sigma"].sel(group="tau").mean().item())
    assert s.sigma == s.sigmas["tau"]
    lo, hi = s.sigma_intervals["tau"]
    assert lo < s.sigmas["tau"] < hi
    beta = post["beta"].sel(fixed="Intercept")
    assert s.fixed_effects["Intercept"][0] == pytest.approx(beta.mean().item())
    assert s.intercept == s.fixed_effects["Intercept"][0]
    u_a = post["u"].sel(school="A")
    assert s.random_effects["tau"]["A"] == pytest.approx((u_a.mean().item(), u_a.std(ddof=1).item()))
    np.testing.assert_allclose(post["theta"].sel(school="A"), u_a + beta)
    assert post["theta"].dims == ("chain", "draw", "school") and post.sizes["draw"] == 100
    # 200 draws cannot reach an ESS of 400: the diagnostics say so, never silently
    assert s.diagnostics["divergences"] == 0
    assert s.diagnostics["ess_bulk_min"] < 400
    assert any("effective sample size" in w for w in s.warnings)
    # equal seeds give equal draws
    again = nuts_family(schools, draws=100, chains=2, seed=3)
    np.testing.assert_array_equal(again.draws["posterior"]["theta"], post["theta"])


def test_bad_options_are_refused(schools, weak):
    with pytest.raises(OptionError, match="unknown model"):
        nuts_family(schools, model="funnel")
    with pytest.raises(OptionError, match="beta_prior_sd"):
        nuts_family(schools, beta_prior_sd=10.0)
    with pytest.raises(OptionError, match="draws"):
        nuts_family(schools, draws=0)
    with pytest.raises(OptionError, match="no hyperprior"):
        nuts_family(load_eight_schools())
    with pytest.raises(ImproperPriorError, match="NUTS"):
        nuts_family(load_eight_schools(tau_prior="flat"))
    table = eight_schools_table()
    data = Dataset.from_arrays(table["s"][:, None], table["y"], feature_names=["s"])
    fixed = specify(data, standard_errors="s", categorical={"school": table["school"]},
                    groups=[Group("tau", factor="school", scale=5.0)])
    with pytest.raises(OptionError, match="nothing to sample"):
        nuts_family(fixed)
    with pytest.raises(ValueError, match="backend"):
        nuts_family(weak, backend="stan")


@pytest.mark.slow
def test_routes_over_seeds(schools, weak):
    """The defaults over ten seeds: the marginal route never diverges on either data set; the
    centred funnel fails diagnose() every time (divergences or E-BFMI)."""
    for seed in range(10):
        for spec in (schools, weak):
            assert nuts_family(spec, seed=seed).diagnostics.divergences == 0, seed
        centred = nuts_family(schools, model="centered", seed=seed).diagnostics
        assert not centred.ok and centred.bfmi_min < 0.3, seed
