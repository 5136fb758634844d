"""The joint density J(w, sigma) of MATH.md section 2, in NumPy: the mathematics of why joint
MAP over (w, sigma) degenerates, separate from the optimiser that demonstrates it.

Pure NumPy (no PyMC): used by :mod:`hyperbayes.inference.methods.joint_map`, the report's figure and the notebook.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hyperbayes.models.hyperpriors import Hyperprior, parse_hyperprior
from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = [
    "joint_log_density",
    "profile_log_density",
    "rescale_hyperprior",
    "sigma_sq_curvature",
    "sigma_sq_stationary",
]


def sigma_sq_stationary(w: ArrayLike) -> float:
    """The stationary point ||w||^2 / D of log p(w | sigma) in sigma^2, for fixed w."""
    w = np.atleast_1d(np.asarray(w, dtype=float))
    return float(w @ w / w.size)


def sigma_sq_curvature(w: ArrayLike) -> float:
    """d^2 log p(w | sigma) / d(sigma^2)^2 at :func:`sigma_sq_stationary`: -D / (2 s^4) < 0.

    Notes
    -----
    With s = sigma^2, log p(w | s) = -||w||^2 / (2 s) - (D / 2) log s + const, so
    d/ds = ||w||^2 / (2 s^2) - D / (2 s) and d^2/ds^2 = -||w||^2 / s^3 + D / (2 s^2). At
    s = ||w||^2 / D the first term is -D / s^2, so d^2/ds^2 = -D / (2 s^2) = -D / (2 sigma^4):
    a maximum in sigma^2, not the minimum the source document claims (MATH.md section 2
    explains its sign slip).
    """
    s = sigma_sq_stationary(w)
    return -np.atleast_1d(w).size / (2.0 * s**2)


def joint_log_density(
    stats: SufficientStats,
    w: ArrayLike,
    sigma: ArrayLike,
    *,
    noise: float,
    hyperprior: Hyperprior | str,
    noise_prior: Hyperprior | str | None = None,
) -> NDArray[np.float64]:
    """J(w, sigma) = log p(y | w) + log p(w | sigma) + log p(sigma), in NumPy, vectorised.

    The same density ``pm.find_MAP`` maximises on :func:`hierarchical_regression` with the
    centred parametrisation: no Jacobian of the log transform, and the hyperprior's density
    taken over the variable it is stated in (sigma, or sigma^2 for ``invgamma``). With
    ``noise_prior`` the noise prior's log density at ``noise`` is added (a learned noise).

    Parameters
    ----------
    stats : SufficientStats
    w : array_like (..., D)
    sigma : array_like (...)
        Broadcast against the leading axes of ``w``.
    noise : float
    hyperprior, noise_prior : Hyperprior or str

    Notes
    -----
    log p(y | w) = -1/2 [N log(2 pi delta^2) + (v - 2 w.b + w^T G w) / delta^2] (section 5),
    log p(w | sigma) = -||w||^2 / (2 sigma^2) - D log sigma - (D / 2) log(2 pi).
    """
    w = np.asarray(w, dtype=float)
    sigma = np.asarray(sigma, dtype=float)
    rss = stats.v - 2 * w @ stats.b + np.einsum("...i,ij,...j->...", w, stats.G, w)
    loglik = -0.5 * (stats.n * np.log(2 * np.pi * noise**2) + rss / noise**2)
    d = stats.d
    with np.errstate(divide="ignore"):
        # (w / sigma)^2, not w^2 / sigma^2: both squares underflow far along the collapse path
        z2 = np.sum((w / sigma[..., None]) ** 2, axis=-1)
        logprior = -0.5 * z2 - d * np.log(sigma) - 0.5 * d * np.log(2 * np.pi)
    out = loglik + logprior + _free_variable_logpdf(parse_hyperprior(hyperprior), sigma)
    if noise_prior is not None:
        out = out + _free_variable_logpdf(parse_hyperprior(noise_prior), np.asarray(noise))
    return out


def profile_log_density(
    stats: SufficientStats, w: ArrayLike, *, noise: float, hyperprior: Hyperprior | str
) -> NDArray[np.float64]:
    """J(w, sigma_hat(w)) with sigma_hat(w) = ||w|| / sqrt(D): grows without bound as w -> 0.

    Notes
    -----
    = log p(y | w) - (D / 2) log(||w||^2 / D) - D / 2 + log p(sigma_hat(w)) + const
    (MATH.md section 2). log p(y | w) tends to log p(y | 0), a finite number, so the
    -(D / 2) log ||w||^2 term wins whatever the data are.
    """
    w = np.asarray(w, dtype=float)
    sigma_hat = np.sqrt(np.sum(w**2, axis=-1) / w.shape[-1])
    return joint_log_density(stats, w, sigma_hat, noise=noise, hyperprior=hyperprior)


def rescale_hyperprior(hyperprior: Hyperprior | str, factor: float) -> Hyperprior:
    """The same family with its scale *on sigma* multiplied by ``factor``.

    ``invgamma:a,b`` is on sigma^2, so its b is multiplied by factor^2; ``loguniform`` moves
    both bounds; ``flat`` has no scale (a ValueError).
    """
    hp = parse_hyperprior(hyperprior)
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"factor must be a positive number, got {factor}.")
    match hp.kind:
        case "halfnormal" | "halfcauchy" | "exponential":
            return Hyperprior(hp.kind, (hp.params[0] * factor,))
        case "invgamma":
            return Hyperprior("invgamma", (hp.params[0], hp.params[1] * factor**2))
        case "loguniform":
            return Hyperprior("loguniform", (hp.params[0] * factor, hp.params[1] * factor))
    raise ValueError(f"the {hp.kind} hyperprior has no scale to change; choose one with a scale.")


def _free_variable_logpdf(hp: Hyperprior, scale: NDArray) -> NDArray[np.float64]:
    """Log density over the free variable PyMC uses: the scale, or its square for invgamma."""
    out = hp.logpdf(scale)
    if hp.kind == "invgamma":  # density over scale^2: remove the change of variables 2 * scale
        with np.errstate(divide="ignore", invalid="ignore"):
            out = out - np.log(2 * scale)
    return out
