"""Log marginal likelihood of the linear-Gaussian family, restricted (REML) and profile (ML).

Pure NumPy/SciPy on :class:`hyperbayes.models.family_stats.FamilyStats` (MATH.md section 7).
Everything is vectorised over a batch of scale settings, so a quadrature grid is one call.

Notes
-----
With the random columns scaled to unit prior variance, R~ = [Z, X] Lambda^(1/2) / delta, the
mixed-model system over (F, R~, y) is

    A = [[S_FF, S_FR~, S_Fy], [S_R~F, I + S_R~R~, S_R~y], [S_yF, S_yR~, S_yy]]   (S: weighted Grams)

and, with K = I + S_R~R~ and r the Schur complement of y in A (r / delta^2 = y^T P y, P the
GLS residual projector of V = delta^2 (Omega^-1 + R~ R~^T)),

    REML: log p = -1/2 [(N - P) log(2 pi delta^2) + log det A_(F,R~) + r / delta^2] + 1/2 sum log omega
    ML:   log p = -1/2 [N log(2 pi delta^2) + log det K + r / delta^2] + 1/2 sum log omega

(det A_(F,R~) = det K det(F^T V^-1 F delta^2) = det S_FF det K~: the same numbers as section 7's
projected form). The elimination order makes the categorical cheap: the indicator block of K
is diagonal, d_l = 1 + rho n_l (rho = tau^2 / delta^2), and eliminating it leaves the Gram
W + sum_l e_l mean_l mean_l^T with e_l = n_l / d_l over [1, F', X, y]; eliminating the
intercept next is a centring of the level means with weights e_l (no cancellation). What is left
is a K x K Cholesky (K = P' + D + 1): O(L K^2 + K^3) per evaluation, never an L x L matrix.

Gradients in log sigma_g at fixed delta are the EM identities, per random column j,
-1 + (A^-1)_jj + c~_j^2 / delta^2 (REML; ML uses (K^-1)_jj), where c~ is the solution for the
scaled coefficients; in log delta at fixed sigmas: -(N - P) + r / delta^2 - sum_j of the former
(N instead of N - P for ML). See Harville (1977) and Bates et al. (2015, lme4) for the forms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hyperbayes.models.family_stats import FamilyStats
from hyperbayes.models.sufficient_stats import log_marginal_likelihood_eigen

__all__ = [
    "Convention",
    "FamilyTerms",
    "Layout",
    "family_log_ml",
    "family_terms",
    "layout_of",
    "restricted_log_ml_eigen",
]

Convention = Literal["reml", "ml"]
_LOG_2PI = float(np.log(2 * np.pi))


@dataclass(frozen=True)
class Layout:
    """Which scale each random column has: dense column j -> group ``dense_group[j]``."""

    n_groups: int
    dense_group: NDArray[np.intp]
    factor_group: int | None


def layout_of(spec) -> Layout:
    """The layout of a :class:`hyperbayes.models.specification.ModelSpec`."""
    return Layout(len(spec.groups), spec.group_of_dense_column(), spec.factor_group)


@dataclass(frozen=True)
class FamilyTerms:
    """Everything one evaluation gives (batched: leading dimension B).

    ``beta_*`` are over F with the intercept first; ``w_*`` over the dense columns;
    ``u_*`` over the factor's levels (empty without one); ``coef_cov`` is the joint
    covariance of [beta, w] (given them, the levels' u_l are independent). Covariances are those of the
    posterior given the scales with beta integrated out under its flat prior (the REML
    posterior); the means are the GLS estimate and the BLUPs in both conventions.
    """

    log_ml: NDArray[np.float64]
    grad_log_sigma: NDArray[np.float64]
    grad_log_noise: NDArray[np.float64]
    beta_mean: NDArray[np.float64]
    beta_cov: NDArray[np.float64]
    w_mean: NDArray[np.float64]
    w_cov: NDArray[np.float64]
    coef_cov: NDArray[np.float64]
    u_mean: NDArray[np.float64]
    u_var: NDArray[np.float64]


def family_log_ml(
    stats: FamilyStats,
    layout: Layout,
    sigmas: ArrayLike,
    noise: ArrayLike,
    *,
    convention: Convention = "reml",
) -> NDArray[np.float64]:
    """log p(y | sigma_1..G, delta), vectorised: ``sigmas`` (..., G) and ``noise`` (...).

    ``convention="reml"`` (default) integrates beta out under a flat prior (the Bayesian
    answer); ``"ml"`` maximises over beta (what mixed-model software calls ML).
    """
    sig, noi, shape = _batch(layout, sigmas, noise)
    return _evaluate(stats, layout, sig, noi, convention, full=False)["log_ml"].reshape(shape)


def family_terms(
    stats: FamilyStats,
    layout: Layout,
    sigmas: ArrayLike,
    noise: ArrayLike,
    *,
    convention: Convention = "reml",
) -> FamilyTerms:
    """Log likelihood, gradients and posterior moments at a batch of scale settings."""
    sig, noi, _ = _batch(layout, sigmas, noise)
    out = _evaluate(stats, layout, sig, noi, convention, full=True)
    return FamilyTerms(**out)


def restricted_log_ml_eigen(stats: FamilyStats, sigma: ArrayLike, noise: ArrayLike) -> NDArray[np.float64]:
    """REML log p(y | sigma, delta) with one dense group and no factor, in O(D) per point.

    Section 3's formula on the projected statistics with N - P rows, plus
    1/2 sum log omega - 1/2 log det S_FF (MATH.md section 7). The eigendecomposition of the
    projected Gram is computed once and cached on the statistics.
    """
    proj = _projected(stats)
    sigma, noise = np.broadcast_arrays(np.asarray(sigma, float), np.asarray(noise, float))
    e = proj.eigen
    core = log_marginal_likelihood_eigen(e.lam, e.bt, proj.v, proj.n, sigma**2, noise**2)
    return core + 0.5 * stats.sum_log_omega - 0.5 * stats.log_det_fixed()


def _projected(stats: FamilyStats):
    cache = stats.__dict__
    if "_projected" not in cache:
        cache["_projected"] = stats.projected()
    return cache["_projected"]


def _batch(layout: Layout, sigmas, noise):
    sig = np.asarray(sigmas, dtype=np.float64)
    if sig.shape[-1:] != (layout.n_groups,):
        raise ValueError(f"sigmas must end in one value per group ({layout.n_groups}), got shape {sig.shape}.")
    noi = np.asarray(noise, dtype=np.float64)
    shape = np.broadcast_shapes(sig.shape[:-1], noi.shape)
    sig = np.broadcast_to(sig, (*shape, layout.n_groups)).reshape(-1, layout.n_groups)
    return sig, np.broadcast_to(noi, shape).reshape(-1), shape


def _evaluate(stats: FamilyStats, layout: Layout, sig, noi, convention, *, full: bool) -> dict:
    if convention not in ("reml", "ml"):
        raise ValueError(f"convention must be 'reml' or 'ml', got {convention!r}.")
    q = noi**2
    rho = sig**2 / q[:, None]
    p, d, k = stats.n_fixed_columns, stats.n_dense, stats.k
    xs = slice(p, p + d)
    nl, mean = stats.level_weight, stats.level_mean
    # 1. The factor's diagonal block.
    if layout.factor_group is not None:
        rz = rho[:, layout.factor_group]
        dl = 1.0 + rz[:, None] * nl
        e = nl / dl
        logdet_z = np.sum(np.log(dl), axis=1)
    else:
        e = np.broadcast_to(nl, (sig.shape[0], nl.size))
        logdet_z = np.zeros(sig.shape[0])
    # 2. The intercept: centre the level means with weights e_l.
    if stats.intercept:
        E = e.sum(axis=1)
        mbar = (e @ mean) / E[:, None]
        dev = mean[None, :, :] - mbar[:, None, :]
        logdet_int = np.log(E)
    else:
        E = None
        mbar = np.zeros((sig.shape[0], k))
        dev = np.broadcast_to(mean, (sig.shape[0], *mean.shape))
        logdet_int = np.zeros(sig.shape[0])
    S2 = stats.within + np.einsum("bl,blk,blj->bkj", e, dev, dev)
    # 3. Scale the dense columns, add the prior's identity, Cholesky of the K x K system.
    s = np.ones((sig.shape[0], k))
    s[:, xs] = np.sqrt(rho[:, layout.dense_group])
    A = s[:, :, None] * S2 * s[:, None, :]
    A[:, xs, xs] += np.eye(d)
    Lc = np.linalg.cholesky(A)
    diag = np.diagonal(Lc, axis1=1, axis2=2)
    logdet_rest = 2.0 * np.sum(np.log(diag[:, :-1]), axis=1)
    r = diag[:, -1] ** 2
    n, P = stats.n_rows, stats.n_fixed
    const = 0.5 * stats.sum_log_omega
    if convention == "reml":
        log_ml = -0.5 * ((n - P) * (_LOG_2PI + np.log(q)) + logdet_z + logdet_int + logdet_rest + r / q) + const
    else:
        K1 = _ml_block(stats, layout, e, s, xs)
        logdet_k = logdet_z + (2.0 * np.sum(np.log(np.diagonal(np.linalg.cholesky(K1), axis1=1, axis2=2)), axis=1) if d else 0.0)
        log_ml = -0.5 * (n * (_LOG_2PI + np.log(q)) + logdet_k + r / q) + const
    if not full:
        return {"log_ml": log_ml}
    return _terms(stats, layout, convention, log_ml, q, rho, e, E, mbar, dev, s, Lc, r)


def _ml_block(stats, layout, e, s, xs):
    """K restricted to the dense columns after the factor (uncentred: ML keeps F's effect)."""
    mX = stats.level_mean[:, xs]
    G = stats.within[xs, xs] + np.einsum("bl,lk,lj->bkj", e, mX, mX)
    sx = s[:, xs]
    return sx[:, :, None] * G * sx[:, None, :] + np.eye(mX.shape[1])


def _terms(stats, layout, convention, log_ml, q, rho, e, E, mbar, dev, s, Lc, r) -> dict:
    B = log_ml.shape[0]
    p, d, k = stats.n_fixed_columns, stats.n_dense, stats.k
    xs = slice(p, p + d)
    m = k - 1
    Lsub = Lc[:, :m, :m]
    # NumPy's batched inverse runs in C (SciPy's batched triangular solve loops in Python);
    # for the small, well-conditioned factors here the two agree to round-off.
    Linv = np.linalg.inv(Lsub) if m else np.zeros((B, 0, 0))
    Ainv = np.swapaxes(Linv, 1, 2) @ Linv
    c = np.einsum("bji,bj->bi", Linv, Lc[:, -1, :m])  # L^-T (L^-1 a)
    n, P = stats.n_rows, stats.n_fixed
    if convention == "ml" and d:
        K1inv = np.linalg.inv(_ml_block(stats, layout, e, s, xs))
        var_x = np.diagonal(K1inv, axis1=1, axis2=2)
    else:
        var_x = np.diagonal(Ainv, axis1=1, axis2=2)[:, xs]
    g_col = -1.0 + var_x + c[:, xs] ** 2 / q[:, None]
    grad = np.zeros((B, layout.n_groups))
    for j, g in enumerate(layout.dense_group):
        grad[:, g] += g_col[:, j]
    w_mean = s[:, xs] * c[:, xs]
    u_mean = np.zeros((B, 0))
    u_var = np.zeros((B, 0))
    if layout.factor_group is not None:
        fg = layout.factor_group
        rz = rho[:, fg]
        nl = stats.level_weight
        dl = 1.0 + rz[:, None] * nl
        u = dev[:, :, :m] * s[:, None, :m]
        resid = dev[:, :, -1] - np.einsum("blk,bk->bl", u, c)
        h = rz[:, None] * nl**2 / dl**2
        quad = np.einsum("blk,bkj,blj->bl", u, Ainv, u)
        extra = quad + (1.0 / E[:, None] if stats.intercept else 0.0)
        if convention == "ml":
            ux = stats.level_mean[None, :, xs] * s[:, None, xs]
            extra = np.einsum("blk,bkj,blj->bl", ux, K1inv, ux) if d else np.zeros_like(quad)
        ct = np.sqrt(rz)[:, None] * nl / dl * resid
        grad[:, fg] += -nl.size + np.sum(1.0 / dl + h * extra, axis=1) + np.sum(ct**2, axis=1) / q
        u_mean = rz[:, None] * nl / dl * resid
        var_full = 1.0 / dl + h * (quad + (1.0 / E[:, None] if stats.intercept else 0.0))
        u_var = q[:, None] * rz[:, None] * var_full
    lost = (n - P) if convention == "reml" else n
    grad_noise = -lost + r / q - grad.sum(axis=1)
    beta_mean, joint = _joint(stats, q, mbar, s, c, Ainv, E)
    P = beta_mean.shape[1]
    return {
        "log_ml": log_ml, "grad_log_sigma": grad, "grad_log_noise": grad_noise,
        "beta_mean": beta_mean, "beta_cov": joint[:, :P, :P], "w_mean": w_mean,
        "w_cov": joint[:, P:, P:], "coef_cov": joint, "u_mean": u_mean, "u_var": u_var,
    }


def _joint(stats, q, mbar, s, c, Ainv, E):
    """Mean of beta (intercept first) and the joint covariance of [beta, w].

    In the reduced system the coordinates are (beta0', c) with covariance
    delta^2 blockdiag(1 / E, A^-1) (beta0' the intercept of the centred system, c the
    coefficients of [F', X~]); beta0 = beta0' - a.c with a the scaled centring, w = s_X c_X.
    """
    p = stats.n_fixed_columns
    m = stats.k - 1
    B = c.shape[0]
    J = np.zeros((B, p + int(stats.intercept) + m - p, m + 1))
    scale = s[:, :m]  # 1 on F', sqrt(rho_j) on X
    off = int(stats.intercept)
    idx = np.arange(m)
    J[:, off + idx, 1 + idx] = scale
    base = np.zeros((B, m + 1, m + 1))
    base[:, 1:, 1:] = Ainv
    if stats.intercept:
        a = mbar[:, :m] * s[:, :m]
        J[:, 0, 0] = 1.0
        J[:, 0, 1:] = -a
        base[:, 0, 0] = 1.0 / E
        b0 = mbar[:, -1] - np.sum(a * c, axis=1)
        beta = np.column_stack([b0, c[:, :p]])
    else:
        base[:, 0, 0] = 1.0  # unused coordinate (no intercept): J's column 0 is zero
        beta = c[:, :p]
    joint = q[:, None, None] * (J @ base @ np.swapaxes(J, 1, 2))
    return beta, joint
