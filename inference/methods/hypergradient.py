"""Learning lambda by gradient descent on a validation loss: implicit hypergradients and HOAG.

The ridge fit w(lambda) solves (G + lambda I) w = b on the training rows; the validation loss
is the mean squared error L(lambda) = ||y_val - X_val w(lambda)||^2 / N_val. By the implicit
function theorem (MATH.md section 6)

    dw/dlambda = -(G + lambda I)^-1 w,   dL/dlambda = -w^T (G + lambda I)^-1 grad_w L,

so one extra linear solve gives the gradient. HOAG (Pedregosa 2016) takes gradient steps on
t = log lambda with both solves only approximate, to tolerances eps_k that shrink so that
sum_k eps_k < infinity, which is enough for convergence. NumPy and SciPy only.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.sparse.linalg import LinearOperator, cg

from hyperbayes.inference.mathematics.ridge import as_lambdas
from hyperbayes.models.data import DataError, Dataset
from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = [
    "CG_MIN_FEATURES",
    "HypergradientPath",
    "HypergradientResult",
    "hypergradient_descent",
    "validation_loss_gradient",
]

Solver = Literal["auto", "direct", "cg"]
Decrease = Literal["exponential", "quadratic", "cubic"]

#: With ``solver="auto"``, conjugate gradients are used from this many features on. Below it,
#: G = X^T X (O(N D^2)) and one eigendecomposition (O(D^3), about a second at D = 1000) make
#: every later solve exact and O(D^2); above it, CG needs only products with X (O(N D) each,
#: O(N D) memory) and never forms the D x D matrix.
CG_MIN_FEATURES = 1000

#: Slack constant of HOAG's step-size test (Pedregosa's reference code uses 0.25).
_C = 0.25


@dataclass(frozen=True)
class HypergradientPath:
    """One row per outer iteration (arrays of equal length).

    Attributes
    ----------
    lambdas, loss : ndarray
        lambda_k and the validation loss at the approximate inner solution.
    gradient : ndarray
        dL / dlog(lambda) from the approximate solves (nan on a rejected step).
    tolerance : ndarray
        eps_k, the relative residual both linear solves were held to.
    accepted : ndarray of bool
        False where the loss rose beyond the tolerance-dependent bound, so lambda went back
        to the previous point and the step was halved.
    cg_iterations : ndarray of int
        CG iterations spent at this step (0 with the direct solver).
    """

    lambdas: NDArray[np.float64]
    loss: NDArray[np.float64]
    gradient: NDArray[np.float64]
    tolerance: NDArray[np.float64]
    accepted: NDArray[np.bool_]
    cg_iterations: NDArray[np.int_]


@dataclass(frozen=True)
class HypergradientResult:
    """Outcome of :func:`hypergradient_descent`.

    Attributes
    ----------
    lambda_ : float
        Final lambda. ``loss``: the validation loss there. ``weights``: w(lambda_).
    solver : {"direct", "cg"}
        How the inner problem and the hypergradient system were solved.
    converged : bool
        Whether the last log-lambda step was below ``tol`` before ``max_iter``.
    n_iter : int
    message : str
    path : HypergradientPath
    """

    lambda_: float
    loss: float
    weights: NDArray[np.float64]
    solver: str
    converged: bool
    n_iter: int
    message: str
    path: HypergradientPath


def validation_loss_gradient(
    train: SufficientStats, validation: SufficientStats, lambdas: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Exact validation loss and dL/dlambda on a grid, from the two sets of statistics.

    Notes
    -----
    With G = V diag(lam) V^T and c = bt / (lam + lambda) (so w = V c), the gradient of the
    loss in w is g = 2 (G_val w - b_val) / N_val and dL/dlambda = -sum_k c_k (V^T g)_k /
    (lam_k + lambda): O(D^2) per lambda.
    """
    grid = as_lambdas(lambdas)
    e = train.eigen
    inv = 1.0 / (e.lam + grid[:, None])
    coef = e.bt * inv
    W = coef @ e.V.T
    loss = validation.v - 2 * W @ validation.b + np.einsum("ld,ld->l", W @ validation.G, W)
    grad_w = 2.0 * (W @ validation.G - validation.b) / validation.n
    dloss = -np.sum(coef * (grad_w @ e.V) * inv, axis=1)
    return loss / validation.n, dloss


def hypergradient_descent(
    data: Dataset,
    *,
    validation: Dataset,
    lambda0: float,
    solver: Solver = "auto",
    max_iter: int = 200,
    tol: float = 1e-6,
    epsilon0: float = 1e-3,
    tolerance_decrease: Decrease = "exponential",
    bounds: tuple[float, float] | None = None,
    max_step: float = 1.0,
) -> HypergradientResult:
    """HOAG: descend the validation loss in log(lambda) with approximate implicit gradients.

    Parameters
    ----------
    data : Dataset
        Training rows (the inner ridge problem).
    validation : Dataset
        Held-out rows defining the loss; same features.
    lambda0 : float
        Starting penalty (> 0).
    solver : {"auto", "direct", "cg"}, default "auto"
        ``"direct"``: one eigendecomposition of X^T X, every solve exact. ``"cg"``: conjugate
        gradients with products by X only, stopped at relative residual eps_k (warm-started
        from the previous step). ``"auto"``: CG when D >= ``CG_MIN_FEATURES``.
    max_iter : int, default 200
    tol : float, default 1e-6
        Stop when a step changes log(lambda) by less than this.
    epsilon0 : float, default 1e-3
        First tolerance eps_1 (HOAG's default).
    tolerance_decrease : {"exponential", "quadratic", "cubic"}, default "exponential"
        eps_k = epsilon0 * 0.9^k, epsilon0 / k^2 or epsilon0 / k^3: all summable.
    bounds : (float, float), optional
        Range lambda is projected onto; default 1e-8 to 1e8 times the mean eigenvalue of X^T X.
    max_step : float, default 1.0
        Largest change of log(lambda) in one step. The validation loss is not convex in
        log(lambda): its slope can grow fast along the way (and vanish on the plateau
        lambda -> infinity, where w -> 0), so an uncapped step 1 / L_k fitted to a gentle
        slope can jump across the minimum onto that plateau.

    Returns
    -------
    HypergradientResult
        Warns (RuntimeWarning) if ``max_iter`` is reached first.

    Notes
    -----
    Step k (Pedregosa 2016, Algorithm 1, on t = log lambda): solve (G + lambda_k I) w = b and
    (G + lambda_k I) q = grad_w L(w) to relative residual eps_k; the hypergradient is
    p_k = dL/dt = -lambda_k w^T q; then t_{k+1} = t_k - p_k / L_k (at most ``max_step``),
    projected onto ``bounds``. The step size 1 / L_k adapts as in the reference code: with
    L_1 = |p_1| (a first step of one unit of log lambda), L shrinks by 0.95 when the loss fell
    by at least (L / 2) |dt|^2; when it rose by more than a slack of (C eps + (C + 1) eps |dt|)
    times the first loss (room for the error of the approximate solves), lambda returns to the
    previous point, L doubles and eps halves. Two departures from the reference code, both for
    stability near the minimum: the factor 1/2 is the descent lemma's (a step 1 / L with L
    above the curvature lowers the loss by at least L |dt|^2 / 2), and the slack only guards
    rejection, not the shrinking of L, which otherwise falls below the curvature while the
    loss changes by less than the slack, and the iterates oscillate.

    References
    ----------
    F. Pedregosa, "Hyperparameter optimization with approximate gradient", ICML 2016.
    """
    _check_inputs(data, validation, lambda0, max_iter, tol, epsilon0, tolerance_decrease)
    if not max_step > 0:
        raise ValueError(f"max_step must be positive, got {max_step!r}.")
    solver = ("cg" if data.d >= CG_MIN_FEATURES else "direct") if solver == "auto" else solver
    if solver not in ("direct", "cg"):
        raise ValueError(f"unknown solver {solver!r}; choose 'auto', 'direct' or 'cg'.")
    solve = _DirectSolver(data) if solver == "direct" else _CGSolver(data)
    scale = float(np.sum(data.X**2)) / data.d or 1.0
    lo, hi = as_lambdas(bounds) if bounds is not None else (1e-8 * scale, 1e8 * scale)
    b = data.X.T @ data.y
    t_lo, t_hi = math.log(lo), math.log(hi)
    t = min(max(math.log(lambda0), t_lo), t_hi)
    w = np.zeros(data.d)
    q = np.zeros(data.d)
    eps = eps_prev = epsilon0
    step_l, g_prev, g_ref, t_prev, dt, w_prev = None, math.inf, None, t, 0.0, w
    rows: list[tuple] = []
    rejected = False
    converged, message = False, f"max_iter = {max_iter} reached"
    for k in range(1, max_iter + 1):
        lam = math.exp(t)
        w, it_w = solve(lam, b, w, eps)
        g, grad_w = _loss(validation, w)
        g_ref = g if g_ref is None else g_ref
        slack = abs(g_ref) * (_C * eps_prev + (_C + 1) * eps_prev * dt) if k > 1 else 0.0
        if k > 1 and not rejected and g > g_prev + slack:
            rows.append((lam, g, math.nan, eps, False, it_w))
            step_l, eps, t, rejected = 2 * step_l, eps / 2, t_prev, True
            continue
        if k > 1 and not rejected and g <= g_prev - 0.5 * step_l * dt**2:
            step_l *= 0.95
        rejected = False
        q, it_q = solve(lam, grad_w, q, eps)
        p = -lam * float(w @ q)
        rows.append((lam, g, p, eps, True, it_w + it_q))
        step_l = step_l or max(abs(p), np.finfo(float).tiny)
        t_new = min(max(t - float(np.clip(p / step_l, -max_step, max_step)), t_lo), t_hi)
        t_prev, g_prev, eps_prev, w_prev, dt, t = t, g, eps, w, abs(t_new - t), t_new
        if dt < tol:
            converged = True
            at_bound = t in (t_lo, t_hi)
            message = "stopped at the lambda bound" if at_bound else f"|d log lambda| < {tol}"
            break
        eps = _next_tolerance(epsilon0, eps, k, tolerance_decrease)
    if not converged:
        warnings.warn(
            f"HOAG stopped after {max_iter} iterations without converging (last step in log "
            f"lambda {dt:.2g} > tol = {tol}); raise max_iter or loosen tol.",
            RuntimeWarning,
            stacklevel=2,
        )
    path = HypergradientPath(*(np.array(col) for col in zip(*rows, strict=True)))
    return HypergradientResult(
        lambda_=math.exp(t_prev),
        loss=float(g_prev),
        weights=w_prev,
        solver=solver,
        converged=converged,
        n_iter=len(rows),
        message=message,
        path=path,
    )


def _check_inputs(data, validation, lambda0, max_iter, tol, epsilon0, decrease) -> None:
    if validation.d != data.d:
        raise DataError(
            f"the validation data have {validation.d} features but the training data {data.d}; "
            "they must have the same columns."
        )
    if not (math.isfinite(lambda0) and lambda0 > 0):
        raise ValueError(f"lambda0 must be a positive number, got {lambda0!r}.")
    if max_iter < 1 or not tol > 0 or not 0 < epsilon0 < 1:
        raise ValueError(
            f"need max_iter >= 1, tol > 0 and 0 < epsilon0 < 1; got {max_iter}, {tol}, {epsilon0}."
        )
    if decrease not in ("exponential", "quadratic", "cubic"):
        raise ValueError(
            f"unknown tolerance_decrease {decrease!r}; choose 'exponential', 'quadratic' or 'cubic'."
        )


def _next_tolerance(epsilon0: float, eps: float, k: int, decrease: str) -> float:
    if decrease == "exponential":
        return eps * 0.9
    return epsilon0 / (k + 1) ** (2 if decrease == "quadratic" else 3)


def _loss(validation: Dataset, w: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
    """Validation mean squared error and its gradient in w."""
    resid = validation.y - validation.X @ w
    return float(resid @ resid) / validation.n, -2.0 * (validation.X.T @ resid) / validation.n


class _DirectSolver:
    """Exact solves of (G + lambda I) x = r in the eigenbasis of G (tolerance unused)."""

    def __init__(self, data: Dataset) -> None:
        self._eigen = SufficientStats.from_dataset(data).eigen

    def __call__(self, lam, rhs, x0, eps):
        e = self._eigen
        return e.V @ ((e.V.T @ rhs) / (e.lam + lam)), 0


class _CGSolver:
    """Conjugate gradients on (X^T X + lambda I) x = r, warm-started, relative residual eps."""

    def __init__(self, data: Dataset) -> None:
        self._X = data.X

    def __call__(self, lam, rhs, x0, eps):
        X = self._X
        op = LinearOperator(
            (X.shape[1],) * 2, matvec=lambda v: X.T @ (X @ v) + lam * v, dtype=float
        )
        count = [0]

        def tick(_):
            count[0] += 1

        x, _info = cg(op, rhs, x0=x0, rtol=eps, atol=0.0, maxiter=10 * X.shape[1], callback=tick)
        return x, count[0]
