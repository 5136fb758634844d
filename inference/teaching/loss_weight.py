"""A loss weight learned on the training objective goes to a boundary (MATH.md section 2).

The same lesson as joint MAP over (w, sigma), in the setting of seed 002: a model is trained
on a mix of two losses, J''(theta, alpha) = alpha J(theta) + (1 - alpha) J'(theta), and one
asks why alpha is not simply learned along with theta. Here, for linear regression,

* J(theta) = (1 / N) ||y - X theta||^2, the clean training loss;
* J'(theta) = E ||y - (X + E) theta||^2 / N with E ~ N(0, s^2) entrywise, the loss under input
  noise, = J(theta) + s^2 ||theta||^2 (Bishop 1995): the "robust" term, always the harder one.

J'' is linear in alpha with slope J - J' = -s^2 ||theta||^2 <= 0, so minimising it over
(theta, alpha) on the training data drives alpha to 1: all weight on the easier clean loss,
the robust term dropped, i.e. ordinary least squares. Choosing alpha by the loss of
theta(alpha) = argmin_theta J'' on held-out data instead gives an interior value. Pure NumPy
and SciPy; small on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize
from numpy.typing import ArrayLike, NDArray

from hyperbayes.models.data import simulate

__all__ = ["LossWeightDemo", "fit_theta", "loss_weight_demo", "two_loss_objective"]

#: A learned alpha within this of 0 or 1 is "on the boundary" (L-BFGS-B lands exactly on a
#: bound; the tolerance only absorbs round-off).
BOUNDARY_TOL = 1e-6


@dataclass(frozen=True)
class LossWeightDemo:
    """Training-objective alpha against held-out alpha, on one simulated data set.

    Attributes
    ----------
    alphas : ndarray
        Grid on [0, 1].
    train_objective : ndarray
        min over theta of J''(theta, alpha) on the training data, on the grid: a minimum of
        functions linear in alpha, hence concave, so its minimum is at an end point.
    validation_loss : ndarray
        Clean held-out mean squared error of theta(alpha), on the grid.
    alpha_train : float
        Best alpha of the joint minimisation of J'' over (theta, alpha) from every start.
    alpha_train_starts : tuple of (float, float)
        (starting alpha, alpha reached) for each seeded start.
    alpha_validation : float
        Minimiser of the held-out loss over [0, 1].
    input_noise : float
        s, the input-noise scale of the robust loss.
    explanation : str
    """

    alphas: NDArray[np.float64]
    train_objective: NDArray[np.float64]
    validation_loss: NDArray[np.float64]
    alpha_train: float
    alpha_train_starts: tuple[tuple[float, float], ...]
    alpha_validation: float
    input_noise: float
    explanation: str

    @property
    def train_on_boundary(self) -> bool:
        return min(self.alpha_train, 1.0 - self.alpha_train) <= BOUNDARY_TOL

    @property
    def validation_interior(self) -> bool:
        return BOUNDARY_TOL < self.alpha_validation < 1.0 - BOUNDARY_TOL


def two_loss_objective(
    theta: ArrayLike, alpha: float, X: ArrayLike, y: ArrayLike, *, input_noise: float
) -> tuple[float, NDArray[np.float64], float]:
    """J''(theta, alpha) = alpha J + (1 - alpha) J' with its gradients in theta and alpha.

    Returns
    -------
    value, grad_theta, grad_alpha
        grad_alpha = J - J' = -s^2 ||theta||^2: never positive, so alpha only ever rises.
    """
    theta, X, y = np.asarray(theta, float), np.asarray(X, float), np.asarray(y, float)
    n = y.size
    r = y - X @ theta
    clean = r @ r / n
    penalty = input_noise**2 * theta @ theta  # J' - J
    value = clean + (1.0 - alpha) * penalty
    grad_theta = -2.0 * X.T @ r / n + 2.0 * (1.0 - alpha) * input_noise**2 * theta
    return float(value), grad_theta, float(-penalty)


def fit_theta(
    X: ArrayLike, y: ArrayLike, alpha: float, *, input_noise: float
) -> NDArray[np.float64]:
    """argmin_theta J''(theta, alpha): ridge with penalty N (1 - alpha) s^2 (closed form)."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    n, d = X.shape
    lam = n * (1.0 - alpha) * input_noise**2
    return np.linalg.lstsq(X.T @ X + lam * np.eye(d), X.T @ y, rcond=None)[0]


def loss_weight_demo(
    *,
    n_train: int = 30,
    n_val: int = 300,
    d: int = 20,
    sigma: float = 0.3,
    noise: float = 1.0,
    input_noise: float = 1.0,
    n_starts: int = 5,
    grid: int = 101,
    seed: int | np.random.Generator = 0,
) -> LossWeightDemo:
    """Learn alpha on the training objective and on held-out data, on simulated regression data.

    Parameters
    ----------
    n_train, n_val, d : int
        Training rows, held-out rows, features. With D close to N_train least squares overfits,
        so the robust term is worth having.
    sigma, noise : float
        True weight scale and observation noise of :func:`hyperbayes.models.data.simulate`.
    input_noise : float
        s of the robust loss.
    n_starts : int
        Seeded starts (alpha ~ U(0, 1), theta ~ N(0, sigma^2)) of the joint minimisation.
    grid : int
        Points of the alpha grid for the curves.
    seed : int or Generator

    Notes
    -----
    Training: L-BFGS-B on (theta, alpha) with alpha in [0, 1] and exact gradients; since
    dJ''/dalpha <= 0 everywhere it stops on alpha = 1. Held out: theta(alpha) is ridge with
    lambda = N (1 - alpha) s^2, and alpha is chosen by the clean validation error (a bounded
    scalar search started from the best grid point). References: Goodfellow, Shlens and
    Szegedy (2015) for the mixed objective; Bishop (1995), Training with noise is equivalent
    to Tikhonov regularization.
    """
    if min(n_train, n_val, d, n_starts) < 1 or grid < 3:
        raise ValueError("n_train, n_val, d and n_starts must be >= 1 and grid >= 3.")
    if not input_noise > 0:
        raise ValueError(f"input_noise must be positive, got {input_noise}.")
    rng = np.random.default_rng(seed)
    sim = simulate(n=n_train + n_val, d=d, sigma=sigma, noise=noise, seed=rng)
    X, y = sim.data.X[:n_train], sim.data.y[:n_train]
    Xv, yv = sim.data.X[n_train:], sim.data.y[n_train:]

    def val_loss(alpha):
        r = yv - Xv @ fit_theta(X, y, alpha, input_noise=input_noise)
        return float(r @ r / yv.size)

    alphas = np.linspace(0.0, 1.0, grid)
    train_curve = np.array(
        [
            two_loss_objective(
                fit_theta(X, y, a, input_noise=input_noise), a, X, y, input_noise=input_noise
            )[0]
            for a in alphas
        ]
    )
    val_curve = np.array([val_loss(a) for a in alphas])

    starts = []
    for _ in range(n_starts):
        a0, th0 = rng.uniform(), sigma * rng.standard_normal(d)
        starts.append((float(a0), _joint_minimise(X, y, th0, a0, input_noise)))
    alpha_train = min(starts, key=lambda s: s[1][1])[1][0]
    on_bound = sum(min(a, 1.0 - a) <= BOUNDARY_TOL for _, (a, _) in starts)

    k = int(np.argmin(val_curve))
    lo, hi = alphas[max(k - 1, 0)], alphas[min(k + 1, grid - 1)]
    alpha_val = float(scipy.optimize.minimize_scalar(val_loss, bounds=(lo, hi), method="bounded").x)

    explanation = (
        f"Minimising the training objective over theta and alpha together ends at alpha = "
        f"{alpha_train:.3g} ({on_bound} of {n_starts} seeded starts end on the boundary): the objective is linear in alpha with slope "
        f"J - J' = -s^2 ||theta||^2 <= 0, so all the weight goes to the easier clean loss and "
        f"the robust term is dropped (plain least squares). Choosing alpha by the loss on "
        f"{n_val} held-out rows gives alpha = {alpha_val:.3g}, inside (0, 1): held-out error "
        f"{val_loss(alpha_val):.3g} against {val_loss(alpha_train):.3g} at the training choice."
    )
    return LossWeightDemo(
        alphas=alphas,
        train_objective=train_curve,
        validation_loss=val_curve,
        alpha_train=float(alpha_train),
        alpha_train_starts=tuple((a0, res[0]) for a0, res in starts),
        alpha_validation=alpha_val,
        input_noise=float(input_noise),
        explanation=explanation,
    )


def _joint_minimise(X, y, theta0, alpha0, s) -> tuple[float, float]:
    """L-BFGS-B over (theta, alpha in [0, 1]); returns (alpha reached, objective there)."""
    d = theta0.size

    def fun(x):
        value, g_theta, g_alpha = two_loss_objective(x[:d], x[d], X, y, input_noise=s)
        return value, np.append(g_theta, g_alpha)

    bounds = [(None, None)] * d + [(0.0, 1.0)]
    res = scipy.optimize.minimize(
        fun, np.append(theta0, alpha0), jac=True, method="L-BFGS-B", bounds=bounds
    )
    return float(res.x[d]), float(res.fun)
