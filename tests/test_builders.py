"""The PyMC model builders against independent densities (scipy.stats) and each other.

Every density here is compiled with PyTensor's FAST_COMPILE mode (Python implementations of
the ops, ~50 ms instead of ~2 s through Numba): what is under test is the graph each builder
writes, not the backend. tests/test_backend.py checks that Numba-compiled densities and
gradients of these builders (the observation model and the ARD marginal) equal the
FAST_COMPILE ones and raise no warning.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hyperbayes.models.builders import hierarchical_regression, marginal_regression
from hyperbayes.models.data import simulate
from hyperbayes.models.hyperpriors import parse_hyperprior
from hyperbayes.models.sufficient_stats import SufficientStats, log_marginal_likelihood_eigen

FAST = "FAST_COMPILE"
# Two float64 evaluations of the same log density (tens of nats) by different algebra
# (eigendecomposition or Cholesky against scipy's dense MVN) agree to ~1e-13 relative; a
# float32 step anywhere in the graph costs ~1e-9, which this tolerance must catch.
LOGP_RTOL = 1e-11

# Sums of a few dozen products, accumulated in a different order.
STATS_RTOL = 1e-12

HYPERPRIOR = "halfnormal:1.5"
NOISE_PRIOR = "halfnormal:2"

# (sigma, delta) pairs spanning weak and strong prior scales, including far from the data's.
SCALES = [(0.05, 0.4), (0.7, 1.0), (3.0, 0.25), (40.0, 2.5)]


@pytest.fixture(scope="module")
def datasets():
    return {
        "N>D": simulate(n=25, d=3, sigma=1.0, noise=0.5, seed=1).data,
        "N<D": simulate(n=4, d=7, sigma=1.0, noise=0.5, seed=2).data,
        "D=1": simulate(n=12, d=1, sigma=2.0, noise=0.8, seed=3).data,
    }


def value_point(model, values):
    """The model's value variables (transformed space) for natural-scale ``values``."""
    point = {}
    for name, value in values.items():
        rv = model[name]
        transform = model.rvs_to_transforms.get(rv)
        value = np.asarray(value, dtype=float)
        if transform is not None:
            value = transform.forward(value).eval(mode=FAST)
        point[model.rvs_to_values[rv].name] = value
    return point


def dense_log_marginal(data, sigma, noise):
    """log N(y | 0, X diag(sigma^2) X^T + delta^2 I), the N x N form (MATH.md section 3)."""
    s2 = np.broadcast_to(np.asarray(sigma, dtype=float) ** 2, (data.d,))
    cov = (data.X * s2) @ data.X.T + noise**2 * np.eye(data.n)
    return stats.multivariate_normal(mean=np.zeros(data.n), cov=cov).logpdf(data.y)


# --------------------------------------------------------------------------- sufficient statistics


def test_statistics_pool_and_remove_chunks(datasets):
    data = datasets["N>D"]
    whole = SufficientStats.from_dataset(data)
    a = SufficientStats.from_arrays(data.X[:10], data.y[:10])
    b = SufficientStats.from_arrays(data.X[10:], data.y[10:])
    for merged in (a + b, whole - a + a):
        np.testing.assert_allclose(merged.G, data.X.T @ data.X, rtol=STATS_RTOL)
        np.testing.assert_allclose(merged.b, data.X.T @ data.y, rtol=STATS_RTOL)
        assert merged.v == pytest.approx(data.y @ data.y, rel=STATS_RTOL)
        assert merged.n == data.n
    assert (whole - a).n == 15
    with pytest.raises(ValueError, match="D=3 and D=1"):
        whole + SufficientStats.from_arrays(np.ones((2, 1)), np.ones(2))


def test_residual_sum_of_squares_without_the_data(datasets):
    data = datasets["N<D"]
    w = np.linspace(-1, 1, data.d)
    rss = SufficientStats.from_dataset(data).residual_sum_of_squares(w)
    assert rss == pytest.approx(np.sum((data.y - data.X @ w) ** 2), rel=STATS_RTOL)


@pytest.mark.parametrize("name", ["N>D", "N<D", "D=1"])
def test_eigen_statistics(datasets, name):
    data = datasets[name]
    st = SufficientStats.from_dataset(data)
    e = st.eigen
    assert st.eigen is e  # computed once
    np.testing.assert_allclose((e.V * e.lam) @ e.V.T, st.G, atol=1e-12 * np.abs(st.G).max())
    assert np.all(e.lam >= 0)
    # N < D: exactly D - N null directions, with no cross-product there.
    null = e.lam == 0
    assert null.sum() == max(data.d - data.n, 0)
    np.testing.assert_array_equal(e.bt[null], 0.0)


@pytest.mark.parametrize("name", ["N>D", "N<D", "D=1"])
def test_numpy_log_marginal_equals_dense_mvn(datasets, name):
    data = datasets[name]
    st = SufficientStats.from_dataset(data)
    e = st.eigen
    sigma = np.array([s for s, _ in SCALES])[:, None]
    noise = np.array([d for _, d in SCALES])[None, :]
    got = log_marginal_likelihood_eigen(
        e.lam, e.bt, st.v, st.n, sigma**2 + 0 * noise, noise**2 + 0 * sigma
    )
    assert got.shape == (len(SCALES), len(SCALES))  # vectorised over both scales
    for i, (s, _) in enumerate(SCALES):
        for j, (_, d) in enumerate(SCALES):
            assert got[i, j] == pytest.approx(dense_log_marginal(data, s, d), rel=LOGP_RTOL)
    # sigma = 0: y is pure noise.
    zero = log_marginal_likelihood_eigen(e.lam, e.bt, st.v, st.n, np.array(0.0), np.array(0.25))
    assert zero == pytest.approx(stats.norm(0, 0.5).logpdf(data.y).sum(), rel=LOGP_RTOL)


# --------------------------------------------------------------------------- structure


def test_variables_of_the_hierarchical_model(datasets):
    data = datasets["N>D"]
    m = hierarchical_regression(data, hyperprior=HYPERPRIOR, noise=NOISE_PRIOR)
    assert {v.name for v in m.free_RVs} == {"sigma", "noise", "z"}
    assert [v.name for v in m.deterministics] == ["w"]
    assert [v.name for v in m.observed_RVs] == ["y"]
    assert m.named_vars_to_dims["w"] == ("feature",)
    assert m.named_vars_to_dims["y"] == ("obs",)
    assert list(m.coords["feature"]) == list(data.feature_names)

    m = hierarchical_regression(
        data,
        hyperprior="invgamma:2,1",
        noise=0.5,
        parametrization="centered",
        likelihood="sufficient",
    )
    assert {v.name for v in m.free_RVs} == {"sigma_sq", "w"}
    assert [v.name for v in m.deterministics] == ["sigma"]
    assert m.observed_RVs == [] and [p.name for p in m.potentials] == ["y_loglik"]

    m = hierarchical_regression(data, hyperprior=HYPERPRIOR, noise=0.5, ard=True)
    assert m.named_vars_to_dims["sigma"] == ("feature",)


def test_variables_of_the_marginal_model(datasets):
    m = marginal_regression(datasets["N<D"], hyperprior="flat", noise=NOISE_PRIOR, ard=True)
    assert {v.name for v in m.free_RVs} == {"sigma", "noise"}
    assert [p.name for p in m.potentials] == ["y_marginal"]
    assert m.named_vars_to_dims["sigma"] == ("feature",)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(parametrization="funnel"), "parametrization must be"),
        (dict(likelihood="pointwise"), "likelihood must be"),
        (dict(noise=0.0), "noise must be a positive number"),
        (dict(noise=-1.0), "noise must be a positive number"),
        (dict(noise="gauss:1"), "valid forms"),
        (dict(hyperprior="halfnormal:-1"), "valid forms"),
    ],
)
def test_bad_options(datasets, kwargs, match):
    args = dict(hyperprior=HYPERPRIOR, noise=0.5) | kwargs
    with pytest.raises(ValueError, match=match):
        hierarchical_regression(datasets["N>D"], **args)


# --------------------------------------------------------------------------- likelihoods


@pytest.fixture(scope="module", params=["N>D", "N<D"])
def likelihood_pair(request, datasets):
    """Compiled y-terms of the observation-wise and the sufficient-statistics models."""
    data = datasets[request.param]
    out = {}
    for likelihood, term in [("observations", "y"), ("sufficient", "y_loglik")]:
        m = hierarchical_regression(
            data, hyperprior=HYPERPRIOR, noise=NOISE_PRIOR, likelihood=likelihood
        )
        out[likelihood] = (m, m.compile_logp(vars=[m[term]], mode=FAST))
    return data, out


def test_sufficient_likelihood_equals_per_observation(likelihood_pair):
    data, fns = likelihood_pair
    rng = np.random.default_rng(0)
    for sigma, noise in SCALES:
        z = rng.standard_normal(data.d)
        w = sigma * z
        values = {"sigma": sigma, "noise": noise, "z": z}
        direct = stats.norm(data.X @ w, noise).logpdf(data.y).sum()
        for m, fn in fns.values():
            assert float(fn(value_point(m, values))) == pytest.approx(direct, rel=LOGP_RTOL)


# --------------------------------------------------------------------------- marginal


@pytest.fixture(scope="module")
def marginal_models(datasets):
    """Compiled y_marginal terms: shared sigma with learned noise on every data set, known noise
    on one, an InverseGamma hyperprior (sigma a Deterministic) on D = 1, and ARD."""
    cases = {
        ("N>D", "learned"): dict(hyperprior=HYPERPRIOR, noise=NOISE_PRIOR),
        ("N<D", "learned"): dict(hyperprior=HYPERPRIOR, noise=NOISE_PRIOR),
        ("D=1", "learned"): dict(hyperprior="invgamma:2,1", noise=NOISE_PRIOR),
        ("N>D", "known"): dict(hyperprior="loguniform:0.01,100", noise=0.5),
        ("N>D", "ard"): dict(hyperprior=HYPERPRIOR, noise=NOISE_PRIOR, ard=True),
        ("N<D", "ard"): dict(hyperprior=HYPERPRIOR, noise=NOISE_PRIOR, ard=True),
    }
    out = {}
    for (name, kind), kwargs in cases.items():
        m = marginal_regression(datasets[name], **kwargs)
        out[name, kind] = (m, m.compile_logp(vars=[m["y_marginal"]], mode=FAST))
    return out


@pytest.mark.parametrize("name", ["N>D", "N<D", "D=1"])
def test_marginal_equals_dense_mvn(datasets, marginal_models, name):
    data = datasets[name]
    m, fn = marginal_models[name, "learned"]
    sigma_var = "sigma_sq" if name == "D=1" else "sigma"
    for sigma, noise in SCALES:
        value = sigma**2 if sigma_var == "sigma_sq" else sigma
        got = float(fn(value_point(m, {sigma_var: value, "noise": noise})))
        assert got == pytest.approx(dense_log_marginal(data, sigma, noise), rel=LOGP_RTOL)


def test_marginal_with_known_noise_equals_dense_mvn(datasets, marginal_models):
    data = datasets["N>D"]
    m, fn = marginal_models["N>D", "known"]
    for sigma, _ in SCALES:
        got = float(fn(value_point(m, {"sigma": sigma})))
        assert got == pytest.approx(dense_log_marginal(data, sigma, 0.5), rel=LOGP_RTOL)


@pytest.mark.parametrize("name", ["N>D", "N<D"])
def test_ard_marginal_equals_dense_mvn(datasets, marginal_models, name):
    data = datasets[name]
    m, fn = marginal_models[name, "ard"]
    rng = np.random.default_rng(1)
    for _ in range(4):
        sigma = np.exp(rng.uniform(-3, 3, size=data.d))
        noise = float(np.exp(rng.uniform(-1.5, 1)))
        got = float(fn(value_point(m, {"sigma": sigma, "noise": noise})))
        assert got == pytest.approx(dense_log_marginal(data, sigma, noise), rel=LOGP_RTOL)


def test_ard_with_equal_scales_equals_shared(datasets, marginal_models):
    (m_ard, ard), (m_one, one) = marginal_models["N<D", "ard"], marginal_models["N<D", "learned"]
    d = datasets["N<D"].d
    for sigma, noise in SCALES:
        a = float(ard(value_point(m_ard, {"sigma": np.full(d, sigma), "noise": noise})))
        b = float(one(value_point(m_one, {"sigma": sigma, "noise": noise})))
        assert a == pytest.approx(b, rel=LOGP_RTOL)


# --------------------------------------------------------------------------- parametrisations


@pytest.fixture(scope="module", params=[False, True], ids=["shared", "ard"])
def parametrization_pair(request, datasets):
    """Full log densities (with the log-transform Jacobian) of both parametrisations."""
    data = datasets["N>D"]
    out = {}
    for p in ("centered", "noncentered"):
        m = hierarchical_regression(
            data,
            hyperprior=HYPERPRIOR,
            noise=NOISE_PRIOR,
            parametrization=p,
            likelihood="sufficient" if request.param else "observations",
            ard=request.param,
        )
        out[p] = (m, m.compile_logp(mode=FAST))
    return data, request.param, out


def test_centered_and_noncentered_differ_by_the_jacobian(parametrization_pair):
    """Both parametrise the same posterior. With w = sigma z (elementwise for ARD),

        log N(w | 0, sigma^2) = log N(z | 0, 1) - log sigma   per feature,

    and the log sigma (and log delta) coordinates and their Jacobians are shared, so

        logp_centered(log sigma, log delta, w) = logp_noncentered(log sigma, log delta, w / sigma)
                                                 - sum_j log sigma_j,

    i.e. the two densities differ by log |dw/dz| = sum_j log sigma_j, as they must for the same
    distribution on (sigma, delta, w).
    """
    data, ard, fns = parametrization_pair
    (mc, centered), (mn, noncentered) = fns["centered"], fns["noncentered"]
    rng = np.random.default_rng(2)
    for sigma, noise in SCALES:
        sig = sigma * np.exp(rng.uniform(-1, 1, size=data.d)) if ard else sigma
        w = rng.normal(0, 1.0, size=data.d)
        c = float(centered(value_point(mc, {"sigma": sig, "noise": noise, "w": w})))
        n = float(noncentered(value_point(mn, {"sigma": sig, "noise": noise, "z": w / sig})))
        jacobian = np.sum(np.broadcast_to(np.log(sig), (data.d,)))
        assert c == pytest.approx(n - jacobian, rel=LOGP_RTOL)


@pytest.mark.parametrize("likelihood", ["observations", "sufficient"])
def test_known_noise_is_a_float64_constant(datasets, likelihood):
    # 0.5 is exact in float32, so PyTensor would make a Python 0.5 a float32 constant and
    # take log(noise) in float32 (an error of ~2e-9 per observation): the builders must not.
    data = datasets["N>D"]
    m = hierarchical_regression(data, hyperprior=HYPERPRIOR, noise=0.5, likelihood=likelihood)
    assert {v.name for v in m.free_RVs} == {"sigma", "z"}
    fn = m.compile_logp(vars=[m["y" if likelihood == "observations" else "y_loglik"]], mode=FAST)
    z = np.array([0.3, -1.2, 0.8])
    want = stats.norm(data.X @ (2.0 * z), 0.5).logpdf(data.y).sum()
    got = float(fn(value_point(m, {"sigma": 2.0, "z": z})))
    assert got == pytest.approx(want, rel=LOGP_RTOL)


def test_hyperprior_object_and_string_build_the_same_model(datasets):
    data = datasets["D=1"]
    a = marginal_regression(data, hyperprior=parse_hyperprior(HYPERPRIOR), noise=0.8)
    b = marginal_regression(data, hyperprior=HYPERPRIOR, noise=0.8)
    point = a.initial_point()
    assert a.compile_logp(mode=FAST)(point) == pytest.approx(b.compile_logp(mode=FAST)(point))
