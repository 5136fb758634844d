"""Joint MAP on the family degenerates group by group; checked against independent mathematics.

References: the joint density recomputed row by row with scipy.stats (the method evaluates it
from the family's statistics); its gradient by central differences; the hyperpriors' closed
forms against ``Hyperprior.logpdf`` (scipy.stats); the growth of the density along each
group's collapse path against its closed form, n_g nats per unit of -log t (n_g - 1 with the
log-scale Jacobian) up to O(t) terms (MATH.md section 2); eight schools' collapsed fit against
the GLS (tau = 0) estimate of mu from empirical Bayes.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from hyperbayes.inference.methods.empirical_bayes_family import empirical_bayes_family
from hyperbayes.inference.methods.joint_map_family import LOG_BELOW, joint_map_family, run_family
from hyperbayes.inference.methods.joint_map_family_density import _Density, _prior
from hyperbayes.inference.methods.results import RunOptions
from hyperbayes.models.data import Dataset
from hyperbayes.models.datasets import load_eight_schools
from hyperbayes.models.family_stats import family_stats
from hyperbayes.models.hyperpriors import parse_hyperprior
from hyperbayes.models.specification import Group, specify

#: The statistics-based density against the row-by-row one: O(100) nats, different summation.
DENSITY_RTOL = 1e-10
#: Central differences with step 1e-6 on O(100)-nat values: round-off ~1e-8, truncation ~1e-10.
FD_STEP, GRAD_ATOL = 1e-6, 1e-5
#: The tail of each path (t from 1e-12 to 1e-16) gains n_g ln 10 per decade up to O(t) terms
#: of the likelihood and O(t^2) of the hyperprior (1e-12 relative); 1e-6 leaves a wide margin.
GROWTH_RTOL = 1e-6
#: At the lower end of the search (tau ~ e^-35 sd(y) ~ 1e-14) the levels' u_l are O(tau).
PINNED_ATOL = 1e-10
#: mu at tau -> 0 is the GLS mean of the schools; both fits converge to ~1e-8 relative.
MU_RTOL = 1e-6


def _strong_two_groups(x_prior="halfnormal:3"):
    """A 3-column penalised group and a random intercept over 8 sites, both far above the noise."""
    rng = np.random.default_rng(3)
    n, L = 160, 8
    site = np.arange(n) % L
    X = rng.normal(size=(n, 3))
    y = 1.0 + X @ np.array([2.0, -1.5, 1.0]) + rng.normal(0, 3.0, L)[site] + rng.normal(0, 0.5, n)
    data = Dataset.from_arrays(X, y, feature_names=["x1", "x2", "x3"])
    return specify(data, categorical={"site": site}, noise_prior="halfnormal:2",
                   groups=[Group("x", ("x1", "x2", "x3"), prior=x_prior),
                           Group("site", factor="site", prior="halfnormal:5")])


def _mixed(*, intercept: bool):
    """Weights, a covariate fixed effect, a fixed-scale group, a learned random intercept."""
    rng = np.random.default_rng(8)
    n = 30
    site = rng.integers(0, 5, n)
    site[:5] = np.arange(5)
    X = np.column_stack([rng.normal(10, 2, n), rng.normal(size=(n, 2)), rng.uniform(0.5, 2, n)])
    y = 0.3 * X[:, 0] + X[:, 1] - X[:, 2] + rng.normal(0, 1, 5)[site] + rng.normal(0, 1, n)
    data = Dataset.from_arrays(X, y, feature_names=["age", "x1", "x2", "wt"])
    return specify(data, fixed=("age",), intercept=intercept, weights="wt", noise_prior="exponential:1",
                   categorical={"site": site},
                   groups=[Group("x", ("x1", "x2"), scale=1.5), Group("site", factor="site", prior="halfcauchy:2")])


SPECS = {
    "eight schools": lambda: load_eight_schools(tau_prior="halfnormal:10"),
    "strong": _strong_two_groups,
    "mixed": lambda: _mixed(intercept=True),
    "no intercept": lambda: _mixed(intercept=False),
}


def _rowwise_density(spec, beta, w, u, sig, noise, jacobian):
    """The joint density from the rows: scipy.stats normal densities, the priors' own logpdf."""
    n = spec.n
    mu = np.zeros(n)
    if spec.n_fixed:
        F = spec.fixed_matrix()
        mu += (np.column_stack([np.ones(n), F]) if spec.intercept else F) @ beta
    if spec.dense_columns:
        mu += spec.dense_matrix() @ w
    if spec.factor is not None:
        mu += u[spec.factor.codes]
    omega = np.ones(n) if spec.obs_weights is None else spec.obs_weights
    out = stats.norm.logpdf(spec.data.y, mu, noise / np.sqrt(omega)).sum()
    out += stats.norm.logpdf(w, 0.0, sig[spec.group_of_dense_column()]).sum()
    if spec.factor is not None:
        out += stats.norm.logpdf(u, 0.0, sig[spec.factor_group]).sum()
    for k in spec.learned_groups:
        out += spec.groups[k].prior.logpdf(sig[k]) + jacobian * np.log(sig[k])
    if spec.noise is None:
        out += spec.noise_prior.logpdf(noise) + jacobian * np.log(noise)
    return float(out)


@pytest.mark.parametrize("jacobian", [False, True])
@pytest.mark.parametrize("name", list(SPECS))
def test_density_and_gradient(name, jacobian):
    spec = SPECS[name]()
    dens = _Density(spec, family_stats(spec), jacobian)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.normal(0.0, 0.7, dens.P + dens.d + dens.L + len(dens.learned) + dens.learn_noise)
        beta, zw, zu, sig, noise = dens.unpack(x)
        w, u = sig[dens.col_group] * zw, (sig[spec.factor_group] * zu if dens.L else zu)
        ref = _rowwise_density(spec, beta, w, u, sig, noise, jacobian)
        np.testing.assert_allclose(-dens(x)[0], ref, rtol=DENSITY_RTOL)
        np.testing.assert_allclose(dens.natural(beta, w, u, sig, noise), ref, rtol=DENSITY_RTOL)
        fd = [(dens(x - e)[0] - dens(x + e)[0]) / (2 * FD_STEP) for e in FD_STEP * np.eye(x.size)]
        np.testing.assert_allclose(-dens(x)[1], fd, atol=GRAD_ATOL)


@pytest.mark.parametrize("prior", ["halfnormal:2", "halfcauchy:0.5", "exponential:3", "invgamma:3,2",
                                   "loguniform:0.01,100", "flat"])
def test_hyperprior_closed_forms(prior):
    hp = parse_hyperprior(prior)
    for s in (0.05, 0.7, 4.0):
        logp, slope = _prior(hp, s)
        np.testing.assert_allclose(logp, float(hp.logpdf(s)), rtol=1e-12, atol=1e-12)
        h = 1e-6
        fd = (float(hp.logpdf(s * np.exp(h))) - float(hp.logpdf(s * np.exp(-h)))) / (2 * h)
        np.testing.assert_allclose(slope, fd, atol=1e-7)


@pytest.fixture(scope="module")
def eight_schools():
    spec = load_eight_schools(tau_prior="halfnormal:10")
    return spec, joint_map_family(spec, seed=0)


def test_eight_schools_tau_collapses(eight_schools):
    spec, res = eight_schools
    p = res.point
    tau = res.sigma("tau")
    assert res.degenerate and res.degenerate_groups == ("tau",) and res.kinds == {"tau": "runaway"}
    assert p.at_lower_bound[0] and tau < math.exp(-LOG_BELOW + 5) * np.std(spec.data.y)
    mu = p.beta[0]
    np.testing.assert_allclose(mu + p.u, mu, atol=PINNED_ATOL)  # every theta_j = mu
    np.testing.assert_allclose(mu, empirical_bayes_family(spec).beta[0], rtol=MU_RTOL)
    # Every start runs down the same path (tau = 0 is also where the REML likelihood peaks).
    assert all(r.at_lower_bound[0] for r in res.runs)
    ev = res.collapse["tau"]
    np.testing.assert_allclose(ev.growth_per_decade / math.log(10), 8.0, rtol=GROWTH_RTOL)
    assert ev.exceeds_returned
    assert "'tau'" in res.explanation and "lower end" in res.explanation


@pytest.mark.parametrize("jacobian", [False, True])
def test_strong_data_every_group_collapses(jacobian):
    """Strong data: the optimiser stops at a stationary local mode, yet each group's own path
    is unbounded, rising n_g (n_g - 1 with the Jacobian) per unit of -log t."""
    spec = _strong_two_groups()
    res = joint_map_family(spec, jacobian=jacobian)
    assert res.degenerate_groups == ("x", "site")
    assert res.kinds == {"x": "local mode", "site": "local mode"}
    for name, n_g in (("x", 3), ("site", 8)):
        ev = res.collapse[name]
        expected = (n_g - jacobian) * math.log(10)
        np.testing.assert_allclose(ev.growth_per_decade, expected, rtol=GROWTH_RTOL)
        np.testing.assert_allclose(ev.axis_growth_per_decade, expected, rtol=GROWTH_RTOL)
        assert f"'{name}'" in res.explanation
    k = res.group_names.index("x")
    assert abs(res.point.grad_log_sigma[k]) < 0.1 * 3 and not res.point.at_lower_bound[k]


def test_a_vanishing_hyperprior_bounds_only_its_group():
    """InverseGamma on sigma_x^2 (log p ~ -b / sigma^2) cuts x's path off; site still collapses."""
    res = joint_map_family(_strong_two_groups(x_prior="invgamma:3,2"))
    assert res.kinds["x"] == "proper" and not res.collapse["x"].unbounded
    assert res.degenerate_groups == ("site",)
    assert "Group 'x'" not in res.explanation and "Group 'site'" in res.explanation
    assert "bounded along the collapse path of ['x']" in res.explanation


def test_run_family_summary(eight_schools):
    spec, _ = eight_schools
    opts = RunOptions(hyperprior=parse_hyperprior("halfnormal:1"), noise=1.0, noise_prior=None, seed=0)
    s = run_family(spec, opts)
    assert s.method == "joint-map" and s.degenerate
    assert set(s.sigmas) == {"tau"} and s.sigmas["tau"] < 1e-10
    assert list(s.fixed_effects) == ["Intercept"]
    assert set(s.random_effects["tau"]) == set("ABCDEFGH")
    details = s.extra["degenerate_groups"]["tau"]
    assert details["kind"] == "runaway" and details["n_coefficients"] == 8
    np.testing.assert_allclose(details["growth_per_decade"], details["expected_growth_per_decade"],
                               rtol=GROWTH_RTOL)
    assert "'tau'" in s.warnings[0]
    json.dumps(s.to_json(), allow_nan=False)
    # A missing prior is filled with the family's default before the run.
    assert run_family(load_eight_schools(), opts).degenerate
