"""Ridge with one penalty per group, held-out error and its exact hypergradient, from statistics.

For the family of MATH.md section 7 with lambda_g = delta^2 / sigma_g^2 the posterior mean of
c = [beta, w, u] given the scales solves the penalised weighted least-squares problem

    min_c  sum_i omega_i (y_i - f_i beta - x_i w - u_l(i))^2 + sum_g lambda_g ||c_g||^2,

H c = X~^T Omega y with H = X~^T Omega X~ + Lambda (X~ = [F, X, indicators], Lambda zero on F).
Everything here needs the rows only through :class:`~hyperbayes.models.family_stats.FamilyStats`
and is vectorised over a batch of B penalty settings (lambdas of shape (B, G)). Pure NumPy.

Notes
-----
*Elimination.* As in :mod:`~hyperbayes.inference.mathematics.family_likelihood`: the indicator
block of H is diagonal, d_l = n_l + lambda_u, so the level effects are eliminated level by level,
leaving the weights e_l = n_l lambda_u / d_l (e_l = n_l without a factor); the intercept is
eliminated by centring the level means at their e-weighted mean m (the "centre"), and what is
left is the m x m system M a = S_zy with M = W_zz + sum_l e_l dev_l dev_l^T + Lambda_a over the
coefficients a = [beta', w] of [F', X]. Cost O(L K^2 + K^3) per setting; no L x L matrix. In the
centred coordinates (intercept beta0' = beta0 + m_z . a) the inverse of H is

    H^-1 = [[S^-1, -S^-1 U^T], [-U S^-1, D^-1 + U S^-1 U^T]],   S^-1 = blockdiag(1 / E, M^-1),

with D = diag(d_l), U_l = (n_l / d_l) [1, dev_l] and E = sum_l e_l; every solve, every diagonal
and the hat-matrix trace below are read from these pieces.

*Held-out error.* For a fold with statistics (n'_l, m'_l, W'), t = [-a, 1] and the level-mean
residuals r_l = (m'_l - m) . t - u_l, the weighted squared error is t^T W' t + sum_l n'_l r_l^2.
Levels absent from the training rows have u_l = 0: their rows are predicted by F beta + X w.

*Hypergradient.* Implicit differentiation of H c = X~^T Omega y gives dc / dlambda_g =
-H^-1 E_g c (E_g: the indicator of group g's coordinates), so with q = H^-1 grad_c L one solve
gives every coordinate at once: dL / dlog lambda_g = -lambda_g sum_{j in g} q_j c_j
(Larsen et al. 1996; Pedregosa 2016 with exact inner solves).

*GCV.* With the weighted hat matrix S = Omega^(1/2) X~ H^-1 X~^T Omega^(1/2), tr S =
n_coef - sum_j lambda_j (H^-1)_jj and GCV = (RSS_w / W) / (1 - tr S / N)^2 (RSS_w = sum_i
omega_i e_i^2, W = sum_i omega_i, N rows): the weighted leave-one-out error
sum_i omega_i (e_i / (1 - S_ii))^2 / W with every S_ii replaced by their mean (Golub, Heath and
Wahba 1979). Its gradient uses dRSS_w / dlambda_g = 2 (H^-1 Lambda c)^T E_g c and
dtr S / dlambda_g = -tr(H^-1 E_g) + tr(H^-1 E_g H^-1 Lambda).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hyperbayes.inference.mathematics.family_likelihood import Layout
from hyperbayes.models.data import DataError
from hyperbayes.models.family_stats import FamilyStats

__all__ = [
    "GroupRidgeFit",
    "ScoreTerms",
    "effective_dof",
    "gcv_score",
    "group_ridge",
    "heldout_error",
    "heldout_error_gradient",
    "kfold_score",
    "kfold_splits",
]


@dataclass(frozen=True, eq=False)
class GroupRidgeFit:
    """The penalised fit at B penalty settings and the pieces of its factorisation.

    Attributes
    ----------
    lambdas : ndarray (B, G)
    beta : ndarray (B, P)
        Fixed effects, the intercept first.
    w : ndarray (B, D)
        Dense penalised weights.
    u : ndarray (B, L)
        Level effects of the factor (L = 0 without one).
    centre : ndarray (B, K)
        The e-weighted mean of the level means of [F', X, y] (zeros without an intercept).
    """

    lambdas: NDArray[np.float64]
    beta: NDArray[np.float64]
    w: NDArray[np.float64]
    u: NDArray[np.float64]
    centre: NDArray[np.float64]
    layout: Layout
    n_fixed_columns: int
    intercept: bool
    _minv: NDArray[np.float64]
    _inv_e: NDArray[np.float64]
    _dev: NDArray[np.float64]
    _shrink: NDArray[np.float64]
    _d: NDArray[np.float64]

    @property
    def a(self) -> NDArray[np.float64]:
        """Coefficients of [F', X] (B, P' + D)."""
        return np.concatenate([self.beta[:, int(self.intercept):], self.w], axis=1)

    def coef_cov(self, noise: ArrayLike = 1.0) -> NDArray[np.float64]:
        """delta^2 (H^-1) over [beta, w] (B, P + D, P + D): the posterior covariance given the
        scales with beta under a flat prior."""
        minv = self._minv
        if not self.intercept:
            return _times_noise(minv, noise)
        mz = self.centre[:, :-1]
        g = np.einsum("bij,bj->bi", minv, mz)
        B, m = mz.shape
        cov = np.empty((B, m + 1, m + 1))
        cov[:, 0, 0] = self._inv_e + np.sum(mz * g, axis=1)
        cov[:, 0, 1:] = cov[:, 1:, 0] = -g
        cov[:, 1:, 1:] = minv
        return _times_noise(cov, noise)

    def u_var(self, noise: ArrayLike = 1.0) -> NDArray[np.float64]:
        """delta^2 diag(H^-1) over the level effects (B, L)."""
        return _times_noise(_u_diag(self), noise)


@dataclass(frozen=True)
class ScoreTerms:
    """A validation score at B penalty settings and its gradient in log lambda_g (B, G)."""

    score: NDArray[np.float64]
    grad_log_lambda: NDArray[np.float64]


def group_ridge(stats: FamilyStats, layout: Layout, lambdas: ArrayLike) -> GroupRidgeFit:
    """The penalised weighted least-squares solution for each row of ``lambdas`` (B, G).

    Raises
    ------
    DataError
        The system is singular: the fixed effects are collinear in these rows.
    """
    lam = _as_lambdas(layout, lambdas)
    B = lam.shape[0]
    p, d, k = stats.n_fixed_columns, stats.n_dense, stats.k
    m = p + d
    nl, mean = stats.level_weight, stats.level_mean
    pen = np.zeros((B, m))
    pen[:, p:] = lam[:, layout.dense_group]
    if layout.factor_group is not None:
        lu = lam[:, layout.factor_group]
        dl = nl + lu[:, None]
        shrink = nl / dl
        e = shrink * lu[:, None]
    else:
        dl = shrink = np.zeros((B, 0))
        e = np.broadcast_to(nl, (B, nl.size))
    if stats.intercept:
        E = e.sum(axis=1)
        centre = (e @ mean) / E[:, None]
        inv_e = 1.0 / E
    else:
        centre, inv_e = np.zeros((B, k)), np.zeros(B)
    dev = mean[None, :, :] - centre[:, None, :]
    S2 = stats.within + np.swapaxes(dev * e[:, :, None], 1, 2) @ dev
    M = S2[:, :m, :m] + pen[:, :, None] * np.eye(m)
    minv = _spd_inverse(M)
    a = np.einsum("bij,bj->bi", minv, S2[:, :m, m])
    t = np.concatenate([-a, np.ones((B, 1))], axis=1)
    u = shrink * np.einsum("blk,bk->bl", dev, t) if layout.factor_group is not None else np.zeros((B, 0))
    beta = np.concatenate([np.sum(centre * t, axis=1)[:, None], a[:, :p]], axis=1) if stats.intercept else a[:, :p]
    return GroupRidgeFit(lam, beta, a[:, p:], u, centre, layout, p, stats.intercept, minv, inv_e,
                         dev[:, :, :m] if layout.factor_group is not None else np.zeros((B, 0, m)),
                         shrink, dl)


def heldout_error(fit: GroupRidgeFit, fold: FamilyStats) -> NDArray[np.float64]:
    """sum_i omega_i (y_i - f_i beta - x_i w - u_l(i))^2 over the rows of ``fold`` (B,).

    ``fold`` may be any rows of the same model: a held-out fold, or the fit's own rows (then
    this is RSS_w). Needs only the fold's statistics (module notes).
    """
    return _heldout(fit, fold)[0]


def heldout_error_gradient(fit: GroupRidgeFit, fold: FamilyStats) -> ScoreTerms:
    """:func:`heldout_error` and its exact gradient in every log lambda_g (one extra solve)."""
    sse, t, Wt, cm, resid = _heldout(fit, fold)
    m = t.shape[1] - 1
    wr = resid * fold.level_weight
    g0 = -2.0 * wr.sum(axis=1) if fit.intercept else None
    ga = -2.0 * (Wt[:, :m] + np.einsum("bl,blk->bk", wr, cm[:, :, :m]))
    gu = -2.0 * wr if fit.layout.factor_group is not None else np.zeros((t.shape[0], 0))
    _, qa, qu = _solve(fit, g0, ga, gu)
    return ScoreTerms(sse, -fit.lambdas * _group_sums(fit, qa[:, fit.n_fixed_columns:], qu))


def _heldout(fit: GroupRidgeFit, fold: FamilyStats):
    """The error, t = [-a, 1], t^T W', the fold's level means minus the centre, and the
    level-mean residuals r_l."""
    a = fit.a
    t = np.concatenate([-a, np.ones((a.shape[0], 1))], axis=1)
    cm = fold.level_mean[None, :, :] - fit.centre[:, None, :]
    resid = np.einsum("blk,bk->bl", cm, t)
    if fit.layout.factor_group is not None:
        resid = resid - fit.u
    Wt = t @ fold.within
    sse = np.sum(Wt * t, axis=1) + resid**2 @ fold.level_weight
    return sse, t, Wt, cm, resid


def kfold_splits(fold_stats: Sequence[FamilyStats]) -> tuple[tuple[FamilyStats, FamilyStats], ...]:
    """(training, held-out) statistics per fold: training = the merge of the other folds."""
    out = []
    for f, held in enumerate(fold_stats):
        others = [s for j, s in enumerate(fold_stats) if j != f]
        train = others[0]
        for s in others[1:]:
            train = train.merge(s)
        out.append((train, held))
    return tuple(out)


def kfold_score(
    splits: Sequence[tuple[FamilyStats, FamilyStats]], layout: Layout, lambdas: ArrayLike
) -> ScoreTerms:
    """K-fold score sum_f SSE_f / sum_i omega_i (a weighted mean squared prediction error) and
    its exact gradient in log lambda, at each row of ``lambdas`` (B, G)."""
    total = sum(held.total_weight for _, held in splits)
    score, grad = 0.0, 0.0
    for train, held in splits:
        terms = heldout_error_gradient(group_ridge(train, layout, lambdas), held)
        score, grad = score + terms.score, grad + terms.grad_log_lambda
    return ScoreTerms(score / total, grad / total)


def effective_dof(fit: GroupRidgeFit) -> NDArray[np.float64]:
    """tr S of the weighted hat matrix: n_coef - sum_j lambda_j (H^-1)_jj (B,)."""
    px, lam_x, lam_u = _penalties(fit)
    n_coef = fit.beta.shape[1] + fit.w.shape[1] + fit.u.shape[1]
    xdiag = np.diagonal(fit._minv, axis1=1, axis2=2)[:, px]
    out = n_coef - np.sum(lam_x * xdiag, axis=1)
    if fit.u.shape[1]:
        out -= lam_u * _u_diag(fit).sum(axis=1)
    return out


def gcv_score(stats: FamilyStats, layout: Layout, lambdas: ArrayLike) -> ScoreTerms:
    """Weighted generalised cross-validation on all rows and its gradient in log lambda."""
    fit = group_ridge(stats, layout, lambdas)
    rss = heldout_error(fit, stats)
    n, wt = stats.n_rows, stats.total_weight
    slack = 1.0 - effective_dof(fit) / n
    score = rss / wt / slack**2
    px, lam_x, lam_u = _penalties(fit)
    B = rss.shape[0]
    g0 = np.zeros(B) if fit.intercept else None
    ga = np.zeros((B, fit._minv.shape[1]))
    ga[:, px] = lam_x * fit.w
    _, qa, qu = _solve(fit, g0, ga, lam_u[:, None] * fit.u)
    d_rss = 2.0 * _group_sums(fit, qa[:, px], qu)
    d_trace = -_group_sums(fit, *_hinv_terms(fit), plain=True)
    grad = (d_rss / slack[:, None] ** 2 + (2.0 * rss / slack**3 / n)[:, None] * d_trace) / wt
    return ScoreTerms(score, grad * fit.lambdas)


def _hinv_terms(fit: GroupRidgeFit):
    """Per penalised coordinate j: (H^-1)_jj - sum_k lambda_k (H^-1)_jk^2 (X part, u part)."""
    px, lam_x, lam_u = _penalties(fit)
    minv = fit._minv
    mxx = minv[:, px][:, :, px]
    xdiag = np.diagonal(mxx, axis1=1, axis2=2)
    row_x = np.einsum("bjk,bk->bj", mxx**2, lam_x)
    if not fit.u.shape[1]:
        return xdiag - row_x, np.zeros_like(fit.u)
    U, V = _u_blocks(fit)
    ux = -V[:, :, int(fit.intercept):][:, :, px]  # (H^-1)_{u, X}
    udiag = _u_diag(fit)
    quv = np.einsum("bli,bij,blj->bl", V, np.swapaxes(U, 1, 2) @ U, V)
    row_u = lam_u[:, None] * (fit._d**-2 + 2.0 * (udiag - 1.0 / fit._d) / fit._d + quv)
    row_u += np.einsum("blk,bk->bl", ux**2, lam_x)
    row_x += lam_u[:, None] * np.sum(ux**2, axis=1)
    return xdiag - row_x, udiag - row_u


def _solve(fit: GroupRidgeFit, r0, ra, ru):
    """x = H^-1 r with r given in the centred coordinates (r0: intercept, ra: a, ru: u)."""
    dev, shrink = fit._dev, fit._shrink
    su = shrink * ru
    ta = np.einsum("bl,blk->bk", su, dev)
    xa = np.einsum("bij,bj->bi", fit._minv, ra - ta)
    if fit.intercept:
        x0 = fit._inv_e * (r0 - su.sum(axis=1))
        xu = ru / fit._d - shrink * (x0[:, None] + np.einsum("blk,bk->bl", dev, xa)) if ru.shape[1] else ru
    else:
        x0 = None
        xu = ru / fit._d - shrink * np.einsum("blk,bk->bl", dev, xa) if ru.shape[1] else ru
    return x0, xa, xu


def _u_blocks(fit: GroupRidgeFit):
    """U (B, L, n_v) and V = U S^-1 in the centred coordinates."""
    dev, shrink = fit._dev, fit._shrink
    V = shrink[:, :, None] * (dev @ fit._minv)
    if fit.intercept:
        U = np.concatenate([np.ones(dev.shape[:2])[:, :, None], dev], axis=2) * shrink[:, :, None]
        V = np.concatenate([(shrink * fit._inv_e[:, None])[:, :, None], V], axis=2)
    else:
        U = shrink[:, :, None] * dev
    return U, V


def _u_diag(fit: GroupRidgeFit) -> NDArray[np.float64]:
    """(H^-1)_{u_l u_l} = 1 / d_l + (n_l / d_l)^2 (1 / E + dev_l^T M^-1 dev_l)."""
    quad = np.einsum("blk,bkj,blj->bl", fit._dev, fit._minv, fit._dev)
    return 1.0 / fit._d + fit._shrink**2 * (quad + fit._inv_e[:, None])


def _group_sums(fit: GroupRidgeFit, qx, qu, *, plain: bool = False):
    """sum_{j in g} q_j c_j (or sum_{j in g} q_j with ``plain``) for every group g (B, G);
    ``qx`` over the dense columns, ``qu`` over the levels."""
    lay = fit.layout
    vx = qx if plain else qx * fit.w
    vu = qu if plain else qu * fit.u
    out = vx @ np.eye(lay.n_groups)[lay.dense_group]
    if lay.factor_group is not None:
        out[:, lay.factor_group] += vu.sum(axis=1)
    return out


def _penalties(fit: GroupRidgeFit):
    """Indices of the X coordinates in a, their lambdas (B, D), and lambda_u (B,)."""
    lay = fit.layout
    p = fit.n_fixed_columns
    px = np.arange(p, p + fit.w.shape[1])
    lam_u = fit.lambdas[:, lay.factor_group] if lay.factor_group is not None else np.zeros(fit.lambdas.shape[0])
    return px, fit.lambdas[:, lay.dense_group], lam_u


def _spd_inverse(M):
    try:
        Linv = np.linalg.inv(np.linalg.cholesky(M))
    except np.linalg.LinAlgError:
        raise DataError(
            "the penalised system is singular: the fixed effects are collinear in these rows "
            "(a fold too small for them?); use fewer folds or fewer fixed effects."
        ) from None
    return np.swapaxes(Linv, 1, 2) @ Linv


def _as_lambdas(layout: Layout, lambdas) -> NDArray[np.float64]:
    lam = np.atleast_2d(np.asarray(lambdas, dtype=np.float64))
    if lam.ndim != 2 or lam.shape[1] != layout.n_groups:
        raise ValueError(f"lambdas must be (B, {layout.n_groups}), one per group; got shape {lam.shape}.")
    if not np.all(np.isfinite(lam) & (lam > 0)):
        raise ValueError("every lambda must be a finite positive number (lambda = delta^2 / sigma^2).")
    return lam


def _times_noise(x, noise):
    q = np.asarray(noise, dtype=np.float64) ** 2
    return x * q.reshape(-1, *([1] * (x.ndim - 1))) if q.ndim else x * q
