"""The family's PyMC builders against the NumPy likelihood, NumPy joint densities and each other.

References: :func:`family_log_ml` (itself tested against a dense N x N multivariate normal in
test_family_likelihood.py) plus the hyperpriors' scipy densities and the log-transform's
Jacobian (log sigma) for the collapsed model; scipy.stats normal densities row by row for the
per-observation model; and, linking the two, the exact Gaussian integral of the hierarchical
model over all coefficients at fixed scales (its log density is quadratic in them, so
log int exp(f) = f(mode) + k/2 log 2 pi - 1/2 log det(-H) holds exactly), which must equal
the collapsed model's REML density. Densities are compiled in FAST_COMPILE mode (the graph is
under test, not the backend); one test compiles the collapsed model with nutpie (Numba).
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytest
from scipy import stats

from hyperbayes.inference.mathematics.family_likelihood import family_log_ml, layout_of
from hyperbayes.models.builders import hierarchical_regression, marginal_regression
from hyperbayes.models.data import Dataset
from hyperbayes.models.datasets import load_eight_schools
from hyperbayes.models.family_builders import hierarchical_family, marginal_family
from hyperbayes.models.family_stats import family_stats
from hyperbayes.models.hyperpriors import OptionError
from hyperbayes.models.specification import Group, specify

FAST = "FAST_COMPILE"
#: Two float64 evaluations of tens of nats by different algebra (batched NumPy vs the
#: symbolic graph) agree to ~2e-16 relative (measured); a float32 step anywhere in the graph
#: costs ~1e-9, which this must catch. PyMC's own HalfCauchy carries such a float32 constant
#: (a fixed 1.9e-9 offset), which is why no HalfCauchy prior is used here.
LOGP_RTOL = 1e-12
#: Central differences with step 1e-5 in the log scales: truncation ~1e-10, round-off ~1e-10.
FD_STEP, GRAD_ATOL = 1e-5, 1e-6
#: The Gaussian integral by Newton + a finite-difference Hessian (exact for a quadratic up to
#: round-off in the gradient differences, ~1e-9 relative on Hessian entries up to 1e4).
INTEGRAL_ATOL = 1e-6


def _simulated(*, weights: bool, fixed_scale: bool, intercept: bool = True):
    """Random intercept (6 sites) + covariate fixed effect + a 3-column penalised group."""
    rng = np.random.default_rng(7)
    n, L = 48, 6
    site = rng.integers(0, L, n)
    site[:L] = np.arange(L)
    age = rng.normal(40, 8, n)
    X = rng.normal(size=(n, 3))
    u = rng.normal(0, 1.5, L)
    y = 2.0 + 0.05 * age + X @ np.array([0.8, -0.5, 0.2]) + u[site] + rng.normal(0, 0.7, n)
    cols = [age, *X.T]
    names = ["age", "x1", "x2", "x3"]
    if weights:
        cols.append(rng.uniform(0.5, 2.0, n))
        names.append("wt")
    data = Dataset.from_arrays(np.column_stack(cols), y, feature_names=names)
    dense = Group("x", ("x1", "x2", "x3"), prior=None if fixed_scale else "halfnormal:2",
                  scale=1.5 if fixed_scale else None)
    return specify(data, fixed=("age",), intercept=intercept, weights="wt" if weights else None,
                   categorical={"site": [f"s{k}" for k in site]},
                   groups=[dense, Group("site", factor="site", prior="halfnormal:3")],
                   noise_prior="exponential:1")


SPECS = {
    "eight schools": lambda: load_eight_schools(tau_prior="halfnormal:10"),
    "simulated": lambda: _simulated(weights=False, fixed_scale=False),
    "weights": lambda: _simulated(weights=True, fixed_scale=True),
    "no intercept": lambda: _simulated(weights=True, fixed_scale=False, intercept=False),
}


@pytest.fixture(scope="module", params=list(SPECS))
def case(request):
    spec = SPECS[request.param]()
    return spec, family_stats(spec), layout_of(spec)


def _scale_points(spec, rng, n=4):
    """Natural-scale values of the unknown scales (learned groups in order, then noise)."""
    k = spec.n_unknown_scales
    return [np.exp(rng.normal(0.0, 1.2, k)) for _ in range(n)]


def _scale_values(spec, scales):
    """value-variable dict (log-transformed) and the reference log prior + log Jacobian."""
    names = [f"sigma_{spec.groups[k].name}" for k in spec.learned_groups]
    priors = [spec.groups[k].prior for k in spec.learned_groups]
    if spec.noise is None:
        names.append("noise")
        priors.append(spec.noise_prior)
    point = {f"{n}_log__": np.log(s) for n, s in zip(names, scales, strict=True)}
    ref = sum(float(p.logpdf(s)) + np.log(s) for p, s in zip(priors, scales, strict=True))
    return point, ref


def _full(spec, scales):
    sig = np.array([g.scale if g.scale is not None else np.nan for g in spec.groups])
    sig[list(spec.learned_groups)] = scales[: len(spec.learned_groups)]
    noise = scales[-1] if spec.noise is None else spec.noise
    return sig, noise


@pytest.mark.parametrize("convention", ["reml", "ml"])
def test_marginal_logp_equals_family_log_ml(case, convention):
    spec, st, lay = case
    model = marginal_family(spec, convention=convention)
    logp = model.compile_logp(mode=FAST)
    for scales in _scale_points(spec, np.random.default_rng(3)):
        point, prior = _scale_values(spec, scales)
        sig, noise = _full(spec, scales)
        ref = float(family_log_ml(st, lay, sig, noise, convention=convention)) + prior
        np.testing.assert_allclose(logp(point), ref, rtol=LOGP_RTOL)


def test_marginal_gradient_matches_finite_differences(case):
    spec, _, _ = case
    model = marginal_family(spec)
    logp, dlogp = model.compile_logp(mode=FAST), model.compile_dlogp(mode=FAST)
    names = [v.name for v in model.value_vars]
    for scales in _scale_points(spec, np.random.default_rng(4), n=2):
        point, _ = _scale_values(spec, scales)
        grad = dlogp(point)
        fd = []
        for name in names:
            up, down = dict(point), dict(point)
            up[name] = point[name] + FD_STEP
            down[name] = point[name] - FD_STEP
            fd.append((logp(up) - logp(down)) / (2 * FD_STEP))
        np.testing.assert_allclose(grad, fd, atol=GRAD_ATOL)


def test_marginal_names_and_coords():
    spec = _simulated(weights=False, fixed_scale=False)
    model = marginal_family(spec)
    assert {v.name for v in model.free_RVs} == {"sigma_x", "sigma_site", "noise"}
    assert model.named_vars_to_dims["sigma"] == ("group",)
    assert list(model.coords["group"]) == ["x", "site"]
    assert list(model.coords["fixed"]) == ["Intercept", "age"]
    assert list(model.coords["feature"]) == ["x1", "x2", "x3"]
    assert list(model.coords["site"]) == [f"s{k}" for k in range(6)]
    assert [p.name for p in model.potentials] == ["y_marginal"]
    # A fixed-scale group is a constant: only the learned scale is stacked.
    fixed = marginal_family(_simulated(weights=True, fixed_scale=True))
    assert list(fixed.coords["group"]) == ["site"]
    assert "sigma_x" not in fixed.named_vars


def test_missing_prior_is_a_clear_error():
    spec = load_eight_schools()  # tau has no prior
    with pytest.raises(ValueError, match="'tau' has a learned scale but no hyperprior"):
        marginal_family(spec)
    with pytest.raises(ValueError, match="with_default_priors"):
        hierarchical_family(spec)


def test_marginal_compiles_with_nutpie():
    """The collapsed model through nutpie's Numba backend: a few draws, finite and labelled,
    on the model with every part (Cholesky, factor, intercept, fixed effect, learned noise)."""
    import nutpie

    model = marginal_family(_simulated(weights=False, fixed_scale=False))
    compiled = nutpie.compile_pymc_model(model)
    tree = nutpie.sample(compiled, draws=30, tune=30, chains=1, seed=1, progress_bar=False)
    sigma = tree.posterior["sigma"]
    assert list(sigma.coords["group"].values) == ["x", "site"]
    assert np.all(np.isfinite(sigma.values)) and np.all(sigma.values > 0)


# ----------------------------------------------------------------------------- hierarchical


def _hier_value_point(model, spec, scales, rng):
    point, prior = _scale_values(spec, scales)
    for v in model.value_vars:
        if v.name not in point:
            point[v.name] = rng.normal(0.0, 1.0, model.initial_point()[v.name].shape)
    return point, prior


def test_hierarchical_logp_equals_numpy_joint_density(case):
    """Mixed parametrisation: the first group centred, the factor non-centred (if any)."""
    spec, _, _ = case
    first = spec.groups[0].name
    model = hierarchical_family(spec, parametrization={first: "centered"})
    logp = model.compile_logp(mode=FAST)
    rng = np.random.default_rng(5)
    for scales in _scale_points(spec, rng, n=3):
        point, ref = _hier_value_point(model, spec, scales, rng)
        sig, noise = _full(spec, scales)
        mu = np.zeros(spec.n)
        if spec.n_fixed:
            F = spec.fixed_matrix()
            if spec.intercept:
                F = np.column_stack([np.ones(spec.n), F])
            mu += F @ point["beta"]  # flat prior: density 1
        for k, g in enumerate(spec.groups):
            name = f"w_{g.name}" if g.factor is None else "u"
            if g.name == first:
                coef = point[name]
                ref += stats.norm.logpdf(coef, 0.0, sig[k]).sum()
            else:
                z = point[f"z_{g.name}"]
                ref += stats.norm.logpdf(z).sum()
                coef = sig[k] * z
            if g.factor is None:
                mu += np.column_stack([spec.column(c) for c in g.columns]) @ coef
            else:
                mu += coef[spec.factor.codes]
        omega = np.ones(spec.n) if spec.obs_weights is None else spec.obs_weights
        ref += stats.norm.logpdf(spec.data.y, mu, noise / np.sqrt(omega)).sum()
        np.testing.assert_allclose(logp(point), ref, rtol=LOGP_RTOL)


def test_integrating_the_hierarchical_model_gives_the_marginal(case):
    """int p(y, beta, w, u | scales) d(beta, w, u) under the flat beta prior = the REML
    density: the centred model's log density is quadratic in the coefficients, so one Newton
    step from anywhere reaches the mode and the Gaussian integral there is exact."""
    spec, _, _ = case
    hier = hierarchical_family(spec, parametrization="centered")
    marg = marginal_family(spec)
    logp, dlogp = hier.compile_logp(mode=FAST), hier.compile_dlogp(mode=FAST)
    mlogp = marg.compile_logp(mode=FAST)
    names = [v.name for v in hier.value_vars]
    coef = [n for n in names if not n.endswith("_log__")]
    rng = np.random.default_rng(6)
    for scales in _scale_points(spec, rng, n=2):
        point, _ = _hier_value_point(hier, spec, scales, rng)
        sizes = [point[n].size for n in coef]

        def at(x, point=point, sizes=sizes):
            return {**point, **dict(zip(coef, np.split(x, np.cumsum(sizes)[:-1]), strict=True))}

        def grad(x, at=at, point=point):
            g = dlogp(at(x))  # over every value variable, in model order
            parts = np.split(g, np.cumsum([np.size(point[n]) for n in names])[:-1])
            return np.concatenate([p for n, p in zip(names, parts, strict=True) if n in coef])

        x0 = np.concatenate([point[n].ravel() for n in coef])
        H = np.column_stack([(grad(x0 + e) - grad(x0 - e)) / 2 for e in np.eye(x0.size)])
        H = (H + H.T) / 2
        at_mode = at(x0 - np.linalg.solve(H, grad(x0)))
        integral = logp(at_mode) + 0.5 * x0.size * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(-H)[1]
        scale_point = {n: point[n] for n in names if n.endswith("_log__")}
        np.testing.assert_allclose(integral, mlogp(scale_point), atol=INTEGRAL_ATOL)


def test_eight_schools_names_dims_and_arviz_labels():
    spec = load_eight_schools(tau_prior="halfnormal:10")
    model = hierarchical_family(spec, beta_prior_sd=20.0)
    assert {v.name for v in model.free_RVs} == {"sigma_tau", "beta", "z_tau"}
    dims = model.named_vars_to_dims
    assert dims["theta"] == ("school",) and dims["u"] == ("school",)
    assert dims["beta"] == ("fixed",) and dims["sigma"] == ("group",) and dims["y"] == ("obs",)
    with model:
        tree = pm.sample_prior_predictive(draws=20, random_seed=1, compile_kwargs={"mode": FAST})
    prior = tree["prior"]
    theta_a = prior["theta"].sel(school="A").values
    mu = prior["beta"].sel(fixed="Intercept").values
    u_a = prior["u"].sel(school="A").values
    np.testing.assert_allclose(theta_a, mu + u_a, rtol=1e-12)
    np.testing.assert_array_equal(prior["sigma"].sel(group="tau").values, prior["sigma_tau"].values)
    # Centred, the factor's coefficients are the free variable u itself.
    centred = hierarchical_family(spec, parametrization="centered")
    assert {v.name for v in centred.free_RVs} == {"sigma_tau", "beta", "u"}
    assert centred.coords == {**centred.coords, **marginal_family(spec).coords}


def test_bad_parametrization_names_the_problem():
    spec = load_eight_schools(tau_prior="halfnormal:10")
    with pytest.raises(OptionError, match="unknown group"):
        hierarchical_family(spec, parametrization={"mu": "centered"})
    with pytest.raises(OptionError, match="'noncentered' or 'centered'"):
        hierarchical_family(spec, parametrization="sideways")


def test_builders_dispatch_a_model_spec():
    spec = _simulated(weights=False, fixed_scale=False)
    hier = hierarchical_regression(spec, parametrization="centered")
    assert {v.name for v in hier.free_RVs} == {"sigma_x", "sigma_site", "noise", "beta", "w_x", "u"}
    marg = marginal_regression(spec)
    ref = marginal_family(spec)
    point = {v.name: np.float64(0.3 * j) for j, v in enumerate(ref.value_vars)}
    assert marg.compile_logp(mode=FAST)(point) == ref.compile_logp(mode=FAST)(point)
