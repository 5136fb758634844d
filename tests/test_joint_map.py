"""Joint MAP over (w, sigma) degenerates; checked against the mathematics of MATH.md section 2.

Every verdict is compared with something independent of the optimiser: the growth rate of
the density along the collapse path (exactly D per e-fold of t), a NumPy evaluation of the
joint density, closed-form stationary points and finite differences.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import optimize, stats

from hyperbayes.inference.methods.joint_map import (
    joint_log_density,
    joint_map,
    profile_log_density,
    rescale_hyperprior,
    run,
    sigma_sq_curvature,
    sigma_sq_stationary,
)
from hyperbayes.inference.methods.results import RunOptions
from hyperbayes.inference.workflow.cli import main
from hyperbayes.models.data import simulate
from hyperbayes.models.hyperpriors import Hyperprior, parse_hyperprior
from hyperbayes.models.sufficient_stats import SufficientStats

#: PyMC's compiled density against the NumPy formula: the same float64 operations in another
#: order; the values are O(10..300), so 1e-9 relative is round-off with a wide margin.
DENSITY_RTOL = 1e-9
#: Growth of J per decade of t far down the collapse path is D ln 10 up to terms O(t) and
#: O(t^2) (the likelihood and hyperprior flatten out); at t < 1e-12 that is 1e-8 relative.
GROWTH_RTOL = 1e-6
#: L-BFGS-B stops at a relative reduction of ~1e-9 in the objective; the mode's location
#: is then known to ~1e-4 relative (square root of the objective's tolerance, times slack).
MODE_RTOL = 1e-3
#: Finite-difference second derivative with step 1e-3 s: truncation error ~1e-6 relative.
FD_RTOL = 1e-5

NON_VANISHING = ["halfnormal:2", "halfcauchy:1", "exponential:1", "flat"]

DATASETS = {
    # name: (simulated data, known noise, D)
    "weak_1d": (dict(n=20, d=1, sigma=0.1, noise=1.0, seed=11), 1.0),
    "strong_1d": (dict(n=20, d=1, sigma=2.0, noise=0.5, seed=12), 0.5),
    "weak_10d": (dict(n=50, d=10, sigma=0.1, noise=3.0, seed=1), 3.0),
    "strong_10d": (dict(n=50, d=10, sigma=1.0, noise=1.0, seed=1), 1.0),
}


@pytest.fixture(scope="module")
def datasets():
    return {name: (simulate(**kw).data, noise) for name, (kw, noise) in DATASETS.items()}


@pytest.fixture(scope="module")
def moderate_1d():
    """Strong enough for a local mode (|w_ML| ~ 5 standard errors), weak enough that the
    optimiser's runaway from near zero (stopped by its tolerance at sigma ~ 1e-8) already
    beats it. The strong_1d set needs t ~ 1e-33 for that."""
    return simulate(n=20, d=1, sigma=1.0, noise=1.0, seed=2).data, 1.0


@pytest.fixture(scope="module")
def strong_1d_full(moderate_1d):
    """Six starts on moderate 1-D data with a HalfNormal(2) hyperprior."""
    data, noise = moderate_1d
    return joint_map(data, hyperprior="halfnormal:2", noise=noise, n_starts=6, seed=3)


@pytest.fixture(scope="module")
def invgamma_weak(datasets):
    data, noise = datasets["weak_1d"]
    return joint_map(data, hyperprior="invgamma:2,1", noise=noise, n_starts=3)


# ----------------------------------------------------------------------------- the verdict


@pytest.mark.parametrize("name", list(DATASETS))
@pytest.mark.parametrize("hyperprior", NON_VANISHING)
def test_degenerate_whatever_the_data_for_hyperpriors_positive_at_zero(datasets, name, hyperprior):
    data, noise = datasets[name]
    res = joint_map(data, hyperprior=hyperprior, noise=noise, n_starts=1)
    assert res.degenerate
    ev = res.collapse
    # Unbounded: the density passes the returned point's value and keeps growing at the
    # theoretical rate, D ln(10) per decade of t (the -D log sigma term).
    assert ev.exceeds_returned
    assert np.nanmax(ev.log_density) > res.log_density
    assert np.all(np.diff(ev.log_density[-16:]) > 0)
    assert ev.growth_per_decade == pytest.approx(data.d * math.log(10), rel=GROWTH_RTOL)
    assert ev.axis_growth_per_decade == pytest.approx(data.d * math.log(10), rel=GROWTH_RTOL)
    # Weak data: the optimiser runs down the neck; strong data: it stops at a local mode.
    expected = "runaway" if name.startswith("weak") else "local mode"
    assert res.kind == expected
    if expected == "runaway":
        assert res.sigma < 1e-6 * ev.axis_sigma[0]
        assert res.point.grad_log_sigma == pytest.approx(-data.d, rel=1e-3)
    else:
        assert res.point.success and res.point.stationary
        assert res.sigma > 0.1


def test_local_mode_is_beaten_by_starts_near_zero(strong_1d_full):
    res = strong_1d_full
    assert res.kind == "local mode" and res.point.success
    near_zero = next(r for r in res.runs if r.label == "near zero")
    # From near zero the optimiser runs away, to a higher density than the "converged" mode.
    assert near_zero.sigma < 1e-6
    assert near_zero.log_density > res.point.log_density
    assert res.best.log_density >= near_zero.log_density
    assert len(res.runs) == 6 and [r.label for r in res.runs[:3]] == [
        "default",
        "near zero",
        "near w_ML",
    ]
    assert "local mode" in res.explanation and "|w|" in res.explanation


def test_flat_local_mode_is_sigma_equal_abs_w(datasets):
    """D = 1, flat hyperprior: at the local mode sigma = |w| exactly (MATH.md section 2)."""
    data, noise = datasets["strong_1d"]
    res = joint_map(data, hyperprior="flat", noise=noise, n_starts=1)
    assert res.kind == "local mode"
    assert res.sigma == pytest.approx(abs(res.w[0]), rel=MODE_RTOL)


def test_pymc_density_equals_numpy_formula(moderate_1d, strong_1d_full):
    """The collapse path is evaluated with the density find_MAP maximised (PyMC), which must
    equal MATH.md section 2's J, also at t = 1e-16 and beyond."""
    data, noise = moderate_1d
    st = SufficientStats.from_dataset(data)
    ev = strong_1d_full.collapse
    s_ref = np.linalg.norm(ev.w_hat) / math.sqrt(data.d)
    w = ev.t[:, None] * ev.w_hat
    J = joint_log_density(st, w, ev.t * s_ref, noise=noise, hyperprior="halfnormal:2")
    np.testing.assert_allclose(ev.log_density, J, rtol=DENSITY_RTOL)
    J_axis = joint_log_density(
        st, np.zeros_like(w), ev.axis_sigma, noise=noise, hyperprior="halfnormal:2"
    )
    np.testing.assert_allclose(ev.axis_log_density, J_axis, rtol=DENSITY_RTOL)
    for r in strong_1d_full.runs:  # the optimiser's objective at its own optimum
        assert r.log_density == pytest.approx(
            float(joint_log_density(st, r.w, r.sigma, noise=noise, hyperprior="halfnormal:2")),
            rel=DENSITY_RTOL,
        )


def test_profile_grows_without_bound_as_w_goes_to_zero(datasets):
    data, noise = datasets["strong_10d"]
    st = SufficientStats.from_dataset(data)
    w_hat = np.linalg.lstsq(data.X, data.y, rcond=None)[0]
    t = np.logspace(-8, -40, 9)
    prof = profile_log_density(st, t[:, None] * w_hat, noise=noise, hyperprior="flat")
    # -(D/2) log ||w||^2 with a flat hyperprior: exactly D ln 10 per decade once p(y|w) is flat.
    np.testing.assert_allclose(np.diff(prof) / 4, data.d * math.log(10), rtol=GROWTH_RTOL)


# ----------------------------------------------------------------------------- proper case


def test_invgamma_gives_a_finite_mode(invgamma_weak, datasets):
    res = invgamma_weak
    assert not res.degenerate and res.kind == "proper"
    assert res.collapse.growth_per_decade < -1e6  # -b / sigma^2 wins: the density falls
    sigmas = [r.sigma for r in res.runs]
    np.testing.assert_allclose(sigmas, sigmas[0], rtol=MODE_RTOL)  # one mode from every start
    # Stationary in s = sigma^2 (the free variable, no Jacobian): for fixed w,
    # s = (||w||^2 / 2 + b) / (D / 2 + a + 1).
    a, b = 2.0, 1.0
    w = res.point.w
    s_star = (w @ w / 2 + b) / (w.size / 2 + a + 1)
    assert res.sigma**2 == pytest.approx(s_star, rel=MODE_RTOL)


def test_invgamma_mode_moves_with_the_hyperprior_scale(invgamma_weak):
    """Same data, hyperprior scale x0.5 / x2: the mode follows the hyperprior."""
    sens = dict(invgamma_weak.sensitivity)
    assert set(sens) == {0.5, 1.0, 2.0}
    assert sens[0.5] < sens[1.0] < sens[2.0]
    # On weak data w ~ 0 at the mode, so s = b / (D/2 + a + 1): sigma is proportional to the
    # hyperprior's scale (b scales with factor^2).
    assert sens[2.0] / sens[0.5] == pytest.approx(4.0, rel=0.05)
    assert "placed by the hyperprior" in invgamma_weak.explanation


# ----------------------------------------------------------------------------- sigma for fixed w


@pytest.mark.parametrize("d", [1, 3, 10])
def test_sigma_stationary_point_is_a_maximum(d):
    """For fixed w, log p(w | sigma) in s = sigma^2 peaks at ||w||^2 / D with curvature
    -D / (2 s^2) < 0 (the source document's positive sign is a slip; MATH.md section 2)."""
    w = np.random.default_rng(d).normal(size=d)
    s = sigma_sq_stationary(w)
    assert s == pytest.approx(w @ w / d)

    def f(s2):
        return stats.norm.logpdf(w, scale=np.sqrt(s2)).sum()

    h = 1e-3 * s
    first = (f(s + h) - f(s - h)) / (2 * h)
    second = (f(s + h) - 2 * f(s) + f(s - h)) / h**2
    assert abs(first) < FD_RTOL * d / s  # 0 up to truncation, against terms of size D / s
    assert second < 0
    assert second == pytest.approx(sigma_sq_curvature(w), rel=FD_RTOL)
    assert sigma_sq_curvature(w) == pytest.approx(-d / (2 * s**2))
    # And the joint density (flat hyperprior), maximised over log sigma for this w, peaks there.
    st = SufficientStats.from_arrays(np.eye(d), w)
    res = optimize.minimize_scalar(
        lambda u: -float(joint_log_density(st, w, np.exp(u), noise=1.0, hyperprior="flat")),
        bracket=(-3.0, 0.0, 3.0),
    )
    assert np.exp(2 * res.x) == pytest.approx(s, rel=1e-6)


# ----------------------------------------------------------------------------- contract


def test_run_summary_and_learned_noise(datasets):
    data, _ = datasets["strong_1d"]
    options = RunOptions(
        hyperprior=parse_hyperprior("halfnormal:2"),
        noise=None,
        noise_prior=parse_hyperprior("halfnormal:1"),
        ard=True,
    )
    summary = run(data, options)
    assert summary.method == "joint-map" and summary.degenerate
    assert summary.noise is not None and 0 < summary.noise < 5
    assert summary.extra["kind"] in {"runaway", "local mode"}
    assert any("--ard is ignored" in w for w in summary.warnings)
    out = summary.to_json()
    json.dumps(out)  # strict JSON
    assert len(out["collapse_path"]["t"]) == len(out["collapse_path"]["log_density"])
    assert len(out["starts"]) == 6 and out["starts"][0]["label"] == "default"


def test_cli_exit_zero_with_verdict(datasets, tmp_path, capsys):
    data, _ = datasets["weak_1d"]
    path = tmp_path / "weak.csv"
    data.to_csv(path)
    code = main(
        [
            "fit",
            "joint-map",
            "--data",
            str(path),
            "--target",
            "y",
            "--noise",
            "1",
            "--hyperprior",
            "halfnormal:2",
            "--json",
            "--quiet",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["degenerate"] is True and out["kind"] == "runaway"
    assert out["warnings"] and "unbounded" in out["warnings"][0]


def test_no_warning_reaches_the_user_and_seeds_reproduce(datasets):
    data, noise = datasets["weak_1d"]
    state = np.random.get_state()[1].copy()  # noqa: NPY002 - checking the legacy global RNG is the point
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = joint_map(data, hyperprior="exponential:1", noise=noise, n_starts=4, seed=7)
    assert not caught, [str(w.message) for w in caught]  # no FutureWarning from find_MAP
    b = joint_map(data, hyperprior="exponential:1", noise=noise, n_starts=4, seed=7)
    assert a.runs[3].start_sigma == b.runs[3].start_sigma
    assert a.runs[3].sigma == b.runs[3].sigma
    assert np.array_equal(np.random.get_state()[1], state)  # noqa: NPY002 - global RNG untouched


def test_bad_arguments_are_named():
    data = simulate(n=5, d=1, sigma=1.0, noise=1.0, seed=0).data
    with pytest.raises(ValueError, match="n_starts"):
        joint_map(data, hyperprior="flat", noise=1.0, n_starts=0)
    with pytest.raises(ValueError, match="t_min"):
        joint_map(data, hyperprior="flat", noise=1.0, t_min=2.0)
    with pytest.raises(ValueError, match="no scale"):
        rescale_hyperprior("flat", 2.0)
    assert rescale_hyperprior("invgamma:2,1", 2.0) == Hyperprior("invgamma", (2.0, 4.0))


def test_loguniform_support_cuts_the_path_off(datasets):
    """A lower bound on sigma makes the density bounded; the mode then sits on that bound."""
    data, noise = datasets["weak_1d"]
    res = joint_map(
        data, hyperprior="loguniform:0.01,10", noise=noise, n_starts=1, sensitivity_factors=()
    )
    assert res.kind == "proper" and not res.degenerate
    assert np.isneginf(res.collapse.log_density[-1])  # below the support
    assert res.sigma == pytest.approx(0.01, rel=1e-4)
    assert "no mass below sigma = 0.01" in res.explanation
