"""The family's shared contract: coefficient draws given the scales, the DataTree layout, the
MethodSummary family fields, data-scaled priors, and the exact and EB methods as run_family."""

import json

import numpy as np
import pytest

from hyperbayes.inference.mathematics.family_likelihood import family_terms, layout_of
from hyperbayes.inference.methods.empirical_bayes_family import empirical_bayes_family
from hyperbayes.inference.methods.exact_family import exact_family_posterior
from hyperbayes.inference.methods.family_draws import (
    draw_coefficients,
    family_datatree,
    full_scales,
)
from hyperbayes.inference.methods.results import RunOptions
from hyperbayes.inference.workflow.registry import get_runner
from hyperbayes.models.data import Dataset
from hyperbayes.models.datasets import load_eight_schools
from hyperbayes.models.family_priors import with_default_priors
from hyperbayes.models.family_stats import family_stats
from hyperbayes.models.hyperpriors import Hyperprior, OptionError
from hyperbayes.models.specification import Group, specify


def _options(**kw):
    return RunOptions(hyperprior=Hyperprior("halfnormal", (1.0,)), noise=1.0, noise_prior=None, **kw)


def _random_intercept(seed=0):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(12), 6)
    x, z = rng.normal(size=(2, g.size))
    y = 1.0 + 0.5 * x + rng.normal(0, 0.7, 12)[g] + 0.3 * z + rng.normal(size=g.size)
    data = Dataset.from_arrays(np.column_stack([x, z]), y, feature_names=["x", "z"], target_name="y")
    return specify(data, fixed=["x"], categorical={"site": g},
                   groups=[Group("z", ("z",), prior="halfnormal:1"),
                           Group("site", factor="site", prior="halfnormal:2")],
                   noise=1.0)


def test_coefficient_draws_have_the_conditional_moments():
    spec = _random_intercept()
    st, lay = family_stats(spec), layout_of(spec)
    sig, noise = full_scales(spec, [[0.4, 0.8]])
    n = 20_000
    draws = draw_coefficients(st, lay, np.repeat(sig, n, 0), np.repeat(noise, n), np.random.default_rng(1))
    t = family_terms(st, lay, sig, noise)
    coef = np.column_stack([draws["beta"], draws["w"]])
    se = t.coef_cov[0].diagonal() ** 0.5 / np.sqrt(n)
    z = (coef.mean(0) - np.r_[t.beta_mean[0], t.w_mean[0]]) / se
    assert np.all(np.abs(z) < 4), z
    zu = (draws["u"].mean(0) - t.u_mean[0]) / np.sqrt(t.u_var[0] / n)
    assert np.all(np.abs(zu) < 4.5), zu
    # the conditional sd of u given the scales is sqrt(u_var)
    assert np.allclose(draws["u"].std(0), np.sqrt(t.u_var[0]), rtol=0.05)


def test_datatree_names_read_as_the_model():
    spec = load_eight_schools(tau_prior="halfcauchy:5")
    post = exact_family_posterior(spec)
    draws = post.sample(200, seed=0)
    tree = family_datatree(spec, {"tau": draws["tau"]}, draws, chains=2)
    p = tree["posterior"]
    assert p["sigma"].dims == ("chain", "draw", "group") and list(p["group"].values) == ["tau"]
    assert list(p["school"].values) == list("ABCDEFGH")
    assert p["beta"].sel(fixed="Intercept").shape == (2, 100)
    np.testing.assert_allclose(p["theta"].sel(school="A"), p["u"].sel(school="A") + p["beta"].sel(fixed="Intercept"))


def test_exact_run_family_summary_matches_the_oracle():
    spec = load_eight_schools(tau_prior="halfcauchy:5")
    post = exact_family_posterior(spec)
    s = get_runner("exact", family=True)(spec, _options(draws=500))
    assert s.sigma == pytest.approx(post.scale_mean[0]) and s.sigmas == {"tau": s.sigma}
    assert s.fixed_effects["Intercept"][0] == pytest.approx(post.beta_mean[0])
    assert s.intercept == pytest.approx(post.beta_mean[0])
    assert s.random_effects["tau"]["A"][0] == pytest.approx(post.u_mean[0])
    assert s.log_evidence == pytest.approx(post.log_evidence)
    out = json.loads(json.dumps(s.to_json()))
    assert set(out["fixed_effects"]["Intercept"]) == {"estimate", "se"}
    assert out["sigma_intervals"]["tau"][0] < out["sigmas"]["tau"] < out["sigma_intervals"]["tau"][1]
    assert "Lebesgue" in out["evidence_note"]


@pytest.mark.parametrize("convention", ["reml", "ml"])
def test_eb_run_family_follows_the_convention(convention):
    spec = _random_intercept()
    fit = empirical_bayes_family(spec, convention=convention)
    s = get_runner("eb", family=True)(spec, _options(convention=convention))
    assert s.sigmas == pytest.approx(dict(zip(fit.group_names, fit.sigmas, strict=True)))
    assert s.fixed_effects["x"][1] == pytest.approx(np.sqrt(fit.beta_cov[1, 1]))
    assert s.extra["convention"] == convention and s.sigma is None  # two groups: no single sigma


def test_eb_run_family_eight_schools_boundary():
    s = get_runner("eb", family=True)(load_eight_schools(), _options())
    assert s.sigmas == {"tau": 0.0} and s.intercept == pytest.approx(7.6856, abs=1e-4)
    assert any("boundary" in w for w in s.warnings)


def test_bad_convention_is_an_option_error():
    with pytest.raises(OptionError, match="reml"):
        _options(convention="restricted")


def test_default_priors_are_scaled_to_the_data():
    spec = with_default_priors(load_eight_schools())
    prior = spec.groups[0].prior
    assert prior.kind == "halfnormal"
    assert prior.params[0] == pytest.approx(np.std(spec.data.y), rel=1e-2)
    given = with_default_priors(load_eight_schools(tau_prior="halfcauchy:5"))
    assert given.groups[0].prior.kind == "halfcauchy"  # a given prior is kept
    learned = with_default_priors(specify(Dataset.from_arrays(np.eye(4)[:, :2] + 0.1, np.arange(4.0))))
    assert learned.noise_prior is not None


@pytest.mark.parametrize("two_scales", [False, True])
def test_scale_density_is_smooth_and_matches_the_draws(two_scales):
    spec = load_eight_schools(tau_prior="halfcauchy:5") if not two_scales else with_default_priors(
        specify(_random_intercept().data, fixed=["x", "z"], categorical={"site": np.repeat(np.arange(12), 6)}))
    post = exact_family_posterior(spec)
    name = post.scale_names[0]
    grid, dens = post.scale_density(name)
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=2e-3)
    # no Simpson ripple: the log density is smooth from node to node
    logd = np.log(dens[dens > dens.max() * 1e-3])
    assert np.max(np.abs(np.diff(logd, 2))) < 0.05
    # the probability between the draws' quartiles is one half
    draws = post.sample(40_000, seed=3)[name]
    cdf = np.r_[0.0, np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))]
    mass = np.diff(np.interp(np.quantile(draws, [0.25, 0.75]), grid, cdf))[0]
    assert mass == pytest.approx(0.5, abs=4 * np.sqrt(0.25 / 40_000) + 0.005)
