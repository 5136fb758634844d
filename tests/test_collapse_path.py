"""The collapse-path test of unboundedness on densities whose tails are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hyperbayes.inference.mathematics.collapse_path import (
    GROWTH_PER_DECADE_MIN,
    T_MIN,
    collapse_evidence,
)

D = 3
W_HAT = np.array([1.0, -2.0, 0.5])
SIGMA_REF = float(np.linalg.norm(W_HAT) / math.sqrt(D))


def funnel(sigma, w, noise):
    """log N(w | 0, sigma^2 I) up to a constant: -D log sigma - |w / sigma|^2 / 2 (the ratio
    first, as the real density does, so that t ~ 1e-300 does not underflow)."""
    z = w / sigma
    return -D * math.log(sigma) - float(z @ z) / 2


def bounded(sigma, w, noise):
    """The funnel times exp(-1 / sigma^2), as an InverseGamma hyperprior on sigma^2 adds."""
    return funnel(sigma, w, noise) - 1.0 / sigma**2


def _evidence(density, returned):
    return collapse_evidence(
        density, w_hat=W_HAT, sigma_ref=SIGMA_REF, noise=None, fixed_noise=1.0,
        returned_log_density=returned,
    )


def test_the_funnel_grows_by_d_ln10_per_decade_and_is_unbounded():
    ev = _evidence(funnel, returned=0.0)
    # Along the path J(t) = J(1) - D log t exactly, so the growth per decade is D ln 10.
    assert ev.growth_per_decade == pytest.approx(D * math.log(10), rel=1e-9)
    assert ev.axis_growth_per_decade == pytest.approx(D * math.log(10), rel=1e-9)
    assert ev.unbounded and ev.exceeds_returned and ev.crossing_t is None
    assert ev.t[0] == 1.0 and ev.t[-1] == pytest.approx(T_MIN)
    assert ev.noise == 1.0


def test_a_density_that_falls_at_sigma_zero_is_bounded():
    ev = _evidence(bounded, returned=0.0)
    assert not ev.unbounded
    assert ev.growth_per_decade < GROWTH_PER_DECADE_MIN


def test_the_path_is_extended_to_pass_a_high_returned_value():
    """Very strong data: the returned value is above J at T_MIN. The path is extended past
    the crossing, which here is known exactly: J(1) - D ln t = returned."""
    j1 = funnel(SIGMA_REF, W_HAT, None)
    returned = j1 + D * math.log(10) * 40  # crossing at t = 1e-40
    ev = _evidence(funnel, returned=returned)
    assert ev.exceeds_returned and ev.unbounded
    assert ev.t[-1] < 1e-40 <= ev.t[0]


def test_a_crossing_beyond_float_range_is_reported_not_reached():
    j1 = funnel(SIGMA_REF, W_HAT, None)
    returned = j1 + D * math.log(10) * 400  # crossing at t = 1e-400, below the 1e-300 floor
    ev = _evidence(funnel, returned=returned)
    assert ev.unbounded and not ev.exceeds_returned
    # The tail of this J is exactly linear in log10 t, so the extrapolated crossing is exact
    # up to round-off in ~400 decades of exponent (1e-6 relative leaves a wide margin).
    assert ev.crossing_t == pytest.approx(1e-400, rel=1e-6)
