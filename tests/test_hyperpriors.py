"""Hyperprior specifications: parsing, densities against scipy.stats, draws, and PyMC."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytest
from scipy import integrate, stats

from hyperbayes.models.builders import prior_variable
from hyperbayes.models.data import DataError, Dataset, load_diabetes
from hyperbayes.models.hyperpriors import (
    FORMS,
    Hyperprior,
    ImproperPriorError,
    OptionError,
    check_scales,
    default_hyperpriors,
    parse_hyperprior,
)

# PyTensor's Python-implemented ops compile in ~50 ms instead of ~2 s through Numba; the graph
# is what is under test here (tests/test_backend.py covers the Numba backend).
FAST = "FAST_COMPILE"
# Two independent float64 evaluations of the same closed form differ only by round-off.
DENSITY_RTOL = 1e-12
# PyMC's graphs evaluate the same densities with different (but exact) algebra.
PYMC_ATOL = 1e-10
# PyMC 6.4's HalfCauchy.logp adds pt.log(2) of an integer constant, which PyTensor computes in
# float32: a constant offset of 1.9e-9 nats (upstream; harmless for sampling and MAP).
HALFCAUCHY_ATOL = 5e-9
# scipy.integrate.quad's own error estimate on these smooth one-dimensional densities.
QUAD_ATOL = 1e-7

PROPER_SPECS = [
    "halfnormal:2",
    "halfcauchy:0.5",
    "exponential:3",
    "invgamma:3,2",
    "loguniform:0.01,100",
]
SCALES = np.array([1e-3, 0.05, 0.3, 1.0, 2.5, 17.0])


def scipy_logpdf(hp: Hyperprior, s):
    """The density over the scale, written out independently from scipy.stats."""
    s = np.asarray(s, dtype=float)
    p = hp.params
    match hp.kind:
        case "halfnormal":
            return stats.halfnorm(scale=p[0]).logpdf(s)
        case "halfcauchy":
            return stats.halfcauchy(scale=p[0]).logpdf(s)
        case "exponential":  # mean SCALE, i.e. rate 1/SCALE
            return np.log(1 / p[0]) - s / p[0]
        case "invgamma":
            # s^2 ~ InvGamma(a, b) means 1/s = sqrt(G / b) with G ~ Gamma(a), i.e. 1/s is
            # generalised-gamma(a, 2) with scale 1/sqrt(b); then p(s) = p_{1/s}(1/s) / s^2.
            return stats.gengamma(p[0], 2, scale=1 / np.sqrt(p[1])).logpdf(1 / s) - 2 * np.log(s)
        case "loguniform":
            return stats.reciprocal(p[0], p[1]).logpdf(s)
    raise AssertionError(hp.kind)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("spec", "kind", "params"),
    [
        ("halfnormal:2", "halfnormal", (2.0,)),
        ("HalfCauchy:0.5", "halfcauchy", (0.5,)),
        (" exponential:3 ", "exponential", (3.0,)),
        ("invgamma:2, 1", "invgamma", (2.0, 1.0)),
        ("loguniform:1e-3,1e3", "loguniform", (1e-3, 1e3)),
        ("flat", "flat", ()),
    ],
)
def test_parse_every_form(spec, kind, params):
    hp = parse_hyperprior(spec)
    assert (hp.kind, hp.params) == (kind, params)
    assert parse_hyperprior(hp) is hp


@pytest.mark.parametrize(
    "spec", ["halfnormal:1234567", "invgamma:2,0.1", "halfcauchy:0.123456789", "flat"]
)
def test_str_round_trips(spec):
    hp = parse_hyperprior(spec)
    assert parse_hyperprior(str(hp)) == hp


@pytest.mark.parametrize(
    "spec",
    [
        "normal:1",  # unknown name
        "halfnormal",  # missing parameter
        "halfnormal:1,2",  # too many
        "invgamma:2",  # too few
        "flat:1",
        "halfnormal:abc",  # not a number
        "halfnormal:-1",  # not positive
        "halfnormal:0",
        "halfnormal:nan",
        "exponential:inf",
        "loguniform:10,1",  # LOWER >= UPPER
        "loguniform:1,1",
    ],
)
def test_parse_errors_list_the_valid_forms(spec):
    with pytest.raises(OptionError, match="valid forms") as info:  # bad input: exit 2
        parse_hyperprior(spec)
    for kind in FORMS:
        assert kind in str(info.value)


def test_direct_construction_validates():
    assert issubclass(OptionError, ValueError)
    with pytest.raises(OptionError, match="valid forms"):
        Hyperprior("gamma", (1.0,))  # type: ignore[arg-type]
    assert Hyperprior("halfnormal", [2]).params == (2.0,)


def test_flat_is_rejected_where_a_proper_prior_is_needed():
    flat = parse_hyperprior("flat")
    assert not flat.proper
    with pytest.raises(ImproperPriorError, match="the evidence needs a proper hyperprior"):
        flat.require_proper("the evidence")
    with pytest.raises(ImproperPriorError):
        flat.rvs(3, seed=0)
    with pytest.raises(ImproperPriorError):
        flat.ppf(0.5)
    for spec in PROPER_SPECS:
        hp = parse_hyperprior(spec)
        assert hp.proper
        hp.require_proper("the evidence")  # no error


# --------------------------------------------------------------------------- densities


@pytest.mark.parametrize("spec", PROPER_SPECS)
def test_logpdf_equals_scipy(spec):
    hp = parse_hyperprior(spec)
    lo, hi = hp.support()
    s = SCALES[(SCALES >= lo) & (SCALES <= hi)]
    np.testing.assert_allclose(hp.logpdf(s), scipy_logpdf(hp, s), rtol=DENSITY_RTOL)


@pytest.mark.parametrize("spec", PROPER_SPECS)
def test_logpdf_integrates_to_one(spec):
    # An independent check of the normalising constants and the invgamma change of variables.
    hp = parse_hyperprior(spec)
    lo, hi = hp.support()
    total, _ = integrate.quad(lambda s: np.exp(hp.logpdf(s)), lo, hi, limit=200)
    assert total == pytest.approx(1.0, abs=QUAD_ATOL)


@pytest.mark.parametrize("spec", [*PROPER_SPECS, "flat"])
def test_logpdf_outside_support_is_minus_inf(spec):
    hp = parse_hyperprior(spec)
    assert np.all(hp.logpdf([-1.0, 0.0]) == -np.inf)
    if hp.kind == "loguniform":
        assert np.all(hp.logpdf([1e-3, 1e3]) == -np.inf)


def test_flat_logpdf_is_zero_on_the_positive_axis():
    np.testing.assert_array_equal(parse_hyperprior("flat").logpdf(SCALES), 0.0)


@pytest.mark.parametrize("spec", PROPER_SPECS)
def test_ppf_inverts_the_cdf(spec):
    hp = parse_hyperprior(spec)
    q = np.array([0.01, 0.25, 0.5, 0.9, 0.99])
    lo, _ = hp.support()
    cdf = [integrate.quad(lambda s: np.exp(hp.logpdf(s)), lo, x, limit=200)[0] for x in hp.ppf(q)]
    np.testing.assert_allclose(cdf, q, atol=QUAD_ATOL)


# --------------------------------------------------------------------------- draws


@pytest.mark.parametrize("spec", PROPER_SPECS)
def test_rvs_reproducible_and_leaves_global_rng_alone(spec):
    hp = parse_hyperprior(spec)
    before = np.random.get_state()[1].copy()  # noqa: NPY002 (checking the global RNG)
    a = hp.rvs(50, seed=3)
    b = hp.rvs(50, seed=3)
    c = hp.rvs(50, seed=4)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert hp.rvs((2, 3), seed=np.random.default_rng(0)).shape == (2, 3)


@pytest.mark.parametrize("spec", PROPER_SPECS)
def test_rvs_follow_the_density(spec):
    # Kolmogorov-Smirnov against the CDF from scipy; the seed is fixed, so the p-value is a
    # fixed number, and 1e-3 would flag any real mismatch at this sample size.
    hp = parse_hyperprior(spec)
    p = hp.params
    cdf = {
        "halfnormal": stats.halfnorm(scale=p[0]).cdf,
        "halfcauchy": stats.halfcauchy(scale=p[0]).cdf,
        "exponential": stats.expon(scale=p[0]).cdf,
        "invgamma": lambda s: stats.invgamma(p[0], scale=p[-1]).cdf(s**2),
        "loguniform": stats.reciprocal(p[0], p[-1]).cdf,
    }[hp.kind]
    assert stats.kstest(hp.rvs(4000, seed=1), cdf).pvalue > 1e-3


# --------------------------------------------------------------------------- PyMC


@pytest.fixture(scope="module")
def prior_model():
    """One model holding one variable per form, so one compilation serves every check."""
    with pm.Model() as model:
        for spec in [*PROPER_SPECS, "flat"]:
            hp = parse_hyperprior(spec)
            prior_variable(hp, hp.kind)
    terms = model.compile_logp(jacobian=False, sum=False, mode=FAST)
    return model, terms


def _point(model, values):
    """A point of the model's value variables (in transformed space) for the given values."""
    point = {}
    for name, value in values.items():
        rv = model[name]
        transform = model.rvs_to_transforms[rv]
        value = transform.forward(np.asarray(value)).eval(mode=FAST)
        point[model.rvs_to_values[rv].name] = value
    return point


@pytest.mark.parametrize("s", [0.05, 0.7, 3.0])
def test_pymc_densities_equal_logpdf(prior_model, s):
    model, terms = prior_model
    names = [rv.name for rv in model.free_RVs]
    assert names == [
        "halfnormal",
        "halfcauchy",
        "exponential",
        "invgamma_sq",
        "loguniform",
        "flat",
    ]
    values = {name: s for name in names}
    values["invgamma_sq"] = s**2
    got = dict(zip(names, (float(t) for t in terms(_point(model, values))), strict=True))
    for spec in PROPER_SPECS:
        hp = parse_hyperprior(spec)
        want = float(hp.logpdf(s))
        if hp.kind == "invgamma":
            # PyMC's free variable is the variance: p(sigma^2) = p(sigma) / (2 sigma).
            assert got["invgamma_sq"] == pytest.approx(want - np.log(2 * s), abs=PYMC_ATOL)
        else:
            atol = HALFCAUCHY_ATOL if hp.kind == "halfcauchy" else PYMC_ATOL
            assert got[hp.kind] == pytest.approx(want, abs=atol), spec
    assert got["flat"] == 0.0


def test_invgamma_scale_is_a_deterministic():
    with pm.Model() as model:
        prior_variable(parse_hyperprior("invgamma:3,2"), "sigma")
    assert [rv.name for rv in model.free_RVs] == ["sigma_sq"]
    assert [d.name for d in model.deterministics] == ["sigma"]


def test_to_pymc_shapes():
    with pm.Model(coords={"feature": ["a", "b", "c"]}) as model:
        prior_variable(parse_hyperprior("loguniform:0.1,10"), "s1", dims="feature")
        prior_variable(parse_hyperprior("invgamma:2,1"), "s2", dims="feature")
        prior_variable(parse_hyperprior("halfnormal:1"), "s3", shape=2)
    shapes = {k: v.shape for k, v in model.initial_point().items()}
    assert shapes == {"s1_interval__": (3,), "s2_sq_log__": (3,), "s3_log__": (2,)}
    assert model.named_vars_to_dims["s2"] == ("feature",)


# --------------------------------------------------------------------------- defaults


def test_default_hyperpriors_follow_the_data():
    data = load_diabetes()
    sigma_hp, noise_hp = default_hyperpriors(data)
    sd_y = np.std(data.y)
    rms_sd_x = np.sqrt(np.mean(np.var(data.X, axis=0)))
    assert sigma_hp.kind == noise_hp.kind == "halfnormal"
    assert sigma_hp.params[0] == pytest.approx(sd_y / rms_sd_x, rel=5e-3)  # 3 significant digits
    assert noise_hp.params[0] == pytest.approx(sd_y, rel=5e-3)
    assert str(sigma_hp) == "halfnormal:1620"  # prints cleanly


def test_default_hyperpriors_are_unit_for_standardised_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    y = rng.standard_normal(50)
    X = (X - X.mean(0)) / X.std(0)
    y = (y - y.mean()) / y.std()
    sigma_hp, noise_hp = default_hyperpriors(Dataset.from_arrays(X, y))
    assert sigma_hp == noise_hp == Hyperprior("halfnormal", (1.0,))


def test_default_hyperpriors_survive_a_constant_target():
    data = Dataset.from_arrays([[1.0], [2.0], [3.0]], [5.0, 5.0, 5.0])
    sigma_hp, noise_hp = default_hyperpriors(data)
    assert sigma_hp.proper and noise_hp.params == (1.0,)


# --------------------------------------------------------------------------- usable scales


@pytest.mark.parametrize(
    ("spec", "scale"),
    [
        ("halfnormal:2", 2.0),
        ("exponential:3", 3.0),
        ("invgamma:2,8", 2.0),  # sqrt(BETA / ALPHA)
        ("loguniform:0.01,100", 1.0),  # geometric mean
        ("flat", None),
    ],
)
def test_typical_scale(spec, scale):
    assert parse_hyperprior(spec).typical_scale() == (pytest.approx(scale) if scale else None)


@pytest.fixture(scope="module")
def centred():
    """N = 100, sd(y) = 2 exactly, sd(x_j) = 1 exactly: the weights' scale is 2."""
    rng = np.random.default_rng(7)
    X, y = rng.standard_normal((100, 2)), rng.standard_normal(100)
    X, y = (X - X.mean(0)) / X.std(0), 2 * (y - y.mean()) / y.std()
    return Dataset.from_arrays(X, y)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        # The round-off floor: 10 sqrt(eps y.y) = 10 * 1.49e-8 * 20 = 2.98e-6.
        ({"noise": 1e-300}, r"noise scale is 1e-300, outside .* 2.98e-06 to 2e\+30: below that"),
        ({"noise": 1e300}, r"noise scale is 1e\+300, .* 5e\+299 times sd\(y\), 2;"),
        ({"hyperprior": "halfnormal:1e-300"}, r"hyperprior halfnormal:1e-300 is 1e-300, .* 2e-30 to 2e\+30"),
        ({"noise_prior": "halfnormal:1e-300"}, r"noise prior halfnormal:1e-300 is .* 2.98e-06 to"),
        ({"hyperprior": "loguniform:1e40,1e50"}, r"loguniform:1e\+40,1e\+50 \(sqrt\(LOWER \* UPPER\)\)"),
    ],
)
def test_scales_float64_cannot_work_with_are_refused_with_the_usable_range(centred, options, match):
    kwargs = {"hyperprior": "halfnormal:1", "noise": None, "noise_prior": "halfnormal:1"} | options
    if kwargs["noise"] is not None:
        kwargs["noise_prior"] = None
    parsed = {k: parse_hyperprior(v) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(OptionError, match=match):
        check_scales(centred, **parsed)


def test_usable_scales_pass(centred):
    for noise in (3e-6, 1e-3, 2.0, 1e29):
        check_scales(centred, hyperprior=parse_hyperprior("flat"), noise=noise, noise_prior=None)
    check_scales(
        centred,
        hyperprior=parse_hyperprior("loguniform:1e-40,1e40"),  # wide, but centred on the data
        noise=None,
        noise_prior=parse_hyperprior("invgamma:1e-3,1e-3"),
    )


def test_weights_scale_out_of_range_is_a_data_error(centred):
    tiny_x = Dataset.from_arrays(centred.X * 1e-20, centred.y * 1e15)  # weights ~ 1e35
    with pytest.raises(DataError, match=r"weights' scale.*outside the 1e-30 to 1e\+30"):
        check_scales(tiny_x, hyperprior=parse_hyperprior("flat"), noise=1e15, noise_prior=None)
