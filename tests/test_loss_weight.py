"""A loss weight learned on the training objective lands on a boundary; held out, inside."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from hyperbayes.inference.teaching.loss_weight import (
    fit_theta,
    loss_weight_demo,
    two_loss_objective,
)

#: Ridge by lstsq against scikit-learn's solver: both direct, well-conditioned (lambda > 0).
RIDGE_RTOL = 1e-8
#: Central differences with step 1e-6 on an O(1) quadratic: truncation ~1e-12, round-off ~1e-9.
GRAD_ATOL = 1e-6


@pytest.fixture(scope="module")
def demo():
    return loss_weight_demo(seed=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_alpha_on_boundary_held_out_alpha_inside(seed):
    res = loss_weight_demo(seed=seed)
    assert res.train_on_boundary and res.alpha_train == 1.0  # all weight on the clean loss
    assert all(end == 1.0 for _, end in res.alpha_train_starts)  # from every start
    assert res.validation_interior
    assert 0.05 < res.alpha_validation < 0.99


def test_held_out_choice_beats_the_training_choice(demo):
    k = int(np.argmin(np.abs(demo.alphas - demo.alpha_validation)))
    assert demo.validation_loss[k] < demo.validation_loss[-1]  # alpha = 1 (training choice)
    assert demo.validation_loss[k] < demo.validation_loss[0]  # alpha = 0


def test_training_profile_is_concave_with_end_point_minimum(demo):
    """min_theta J'' is a minimum of functions linear in alpha: concave, so minimised at an end."""
    assert np.all(np.diff(demo.train_objective, 2) <= 1e-12)
    assert int(np.argmin(demo.train_objective)) in (0, demo.alphas.size - 1)


def test_objective_gradients_and_closed_form_minimiser():
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(15, 4)), rng.normal(size=15)
    theta, alpha, s = rng.normal(size=4), 0.3, 0.7
    value, g_theta, g_alpha = two_loss_objective(theta, alpha, X, y, input_noise=s)
    eps = 1e-6
    fd = [
        (
            two_loss_objective(theta + eps * e, alpha, X, y, input_noise=s)[0]
            - two_loss_objective(theta - eps * e, alpha, X, y, input_noise=s)[0]
        )
        / (2 * eps)
        for e in np.eye(4)
    ]
    np.testing.assert_allclose(g_theta, fd, atol=GRAD_ATOL)
    assert g_alpha == pytest.approx(-(s**2) * theta @ theta)  # J - J' <= 0
    best = fit_theta(X, y, alpha, input_noise=s)
    np.testing.assert_allclose(
        two_loss_objective(best, alpha, X, y, input_noise=s)[1], 0, atol=GRAD_ATOL
    )
    ref = Ridge(alpha=15 * (1 - alpha) * s**2, fit_intercept=False).fit(X, y).coef_
    np.testing.assert_allclose(best, ref, rtol=RIDGE_RTOL)


def test_reproducible_and_validated():
    a, b = loss_weight_demo(seed=4, n_starts=2), loss_weight_demo(seed=4, n_starts=2)
    assert a.alpha_validation == b.alpha_validation and a.alpha_train_starts == b.alpha_train_starts
    with pytest.raises(ValueError, match="input_noise"):
        loss_weight_demo(input_noise=0.0)
    with pytest.raises(ValueError, match="grid"):
        loss_weight_demo(grid=2)
