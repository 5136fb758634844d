"""Draws of a family member's coefficients given its scales, and the family's ArviZ layout.

Every sampler of the family works on the scales alone (the coefficients are integrated out);
given a draw of the scales, beta, w and the random intercepts are Gaussian (MATH.md section 7),
so :func:`draw_coefficients` completes each draw exactly: [beta, w] jointly, then each level's
u_l, independent given [beta, w] (the indicator block of the precision is diagonal). The exact
oracle, NUTS and SMC all complete their draws here, and :func:`family_datatree` names the
result the same way for each of them:

===========  ====================  ==========================================
variable     dims                  what
===========  ====================  ==========================================
``sigma``    ``group``             every learned group's scale (coords: names)
``noise``    (none)                delta, when learned
``beta``     ``fixed``             fixed effects, ``Intercept`` first
``w``        ``feature``           dense penalised weights (when there are any)
``u``        the factor's name     each level's deviation u_l (e.g. ``school``)
``theta``    the factor's name     Intercept + u_l, the level's mean (with an intercept)
===========  ====================  ==========================================

Under a proper prior on the fixed effects (:func:`~hyperbayes.models.fixed_prior.with_fixed_prior`)
they are the penalised group ``"fixed"`` of the spec, but the tree shows them as without it:
``beta`` holds that group's coefficients (``Intercept``, covariates), ``w`` the other dense
weights, ``sigma`` only the learned scales, and ``theta`` is again Intercept + u_l.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from hyperbayes.inference.mathematics.family_likelihood import Layout, family_terms, layout_of
from hyperbayes.models.family_stats import FamilyStats
from hyperbayes.models.fixed_prior import INTERCEPT_COLUMN, fixed_prior_group
from hyperbayes.models.specification import ModelSpec

__all__ = [
    "INTERCEPT_NAME",
    "draw_coefficients",
    "family_datatree",
    "fixed_effect_mask",
    "fixed_effect_names",
    "fixed_names",
    "full_scales",
]

#: The name of the intercept among the fixed effects (formulae's and Bambi's word).
INTERCEPT_NAME = INTERCEPT_COLUMN

_CHUNK_FLOATS = 4_000_000  # bounds the batch of scale settings evaluated at once


def fixed_names(spec: ModelSpec) -> tuple[str, ...]:
    """Names of the fixed effects, the intercept first."""
    return ((INTERCEPT_NAME,) if spec.intercept else ()) + tuple(spec.fixed)


def fixed_effect_names(spec: ModelSpec) -> tuple[str, ...]:
    """The fixed effects as results present them, the intercept first: the columns of F, or
    under a proper prior on them the columns of the group ``"fixed"``."""
    k = fixed_prior_group(spec)
    return fixed_names(spec) if k is None else spec.groups[k].columns


def fixed_effect_mask(spec: ModelSpec) -> NDArray[np.bool_]:
    """Which dense columns are fixed effects under a proper prior (all False without one)."""
    k = fixed_prior_group(spec)
    return spec.group_of_dense_column() == (-1 if k is None else k)


def full_scales(spec: ModelSpec, learned: NDArray, noise: NDArray | None = None):
    """(sigmas (B, G), noise (B,)) from the learned groups' scales (B, n_learned) in the order of
    ``spec.learned_groups``, the fixed groups' scales filled in, and ``noise`` (B,) when it is
    learned (else the known value)."""
    learned = np.atleast_2d(np.asarray(learned, dtype=np.float64))
    b = learned.shape[0]
    sig = np.tile([g.scale if g.scale is not None else 0.0 for g in spec.groups], (b, 1))
    sig[:, list(spec.learned_groups)] = learned
    if spec.noise is None:
        if noise is None:
            raise ValueError("the noise is learned: pass its draws.")
        out_noise = np.asarray(noise, dtype=np.float64).reshape(b)
    else:
        out_noise = np.full(b, spec.noise)
    return sig, out_noise


def draw_coefficients(
    stats: FamilyStats,
    layout: Layout,
    sigmas: NDArray,
    noise: NDArray,
    rng: np.random.Generator,
) -> dict[str, NDArray[np.float64]]:
    """One exact draw of (beta, w, u) given each setting of the scales.

    Parameters
    ----------
    stats, layout
        The model's statistics and layout.
    sigmas : ndarray (B, G)
        Every group's scale (fixed groups included).
    noise : ndarray (B,)
    rng : numpy.random.Generator

    Returns
    -------
    dict
        ``beta`` (B, P), ``w`` (B, D), and ``u`` (B, L) when the model has a factor.
    """
    sigmas = np.atleast_2d(np.asarray(sigmas, dtype=np.float64))
    noise = np.asarray(noise, dtype=np.float64).reshape(-1)
    n = sigmas.shape[0]
    P = stats.n_fixed
    size = max(1, _CHUNK_FLOATS // (stats.n_levels * stats.k + stats.k**2 * 4))
    beta, w, u = [], [], []
    for a in range(0, n, size):
        sl = slice(a, a + size)
        t = family_terms(stats, layout, sigmas[sl], noise[sl])
        mean = np.column_stack([t.beta_mean, t.w_mean])
        k = mean.shape[1]
        chol = np.linalg.cholesky(t.coef_cov + 1e-300 * np.eye(k)) if k else np.zeros((mean.shape[0], 0, 0))
        coef = mean + np.einsum("bij,bj->bi", chol, rng.standard_normal(mean.shape))
        beta.append(coef[:, :P])
        w.append(coef[:, P:])
        if layout.factor_group is not None:
            u.append(_draw_levels(stats, layout, sigmas[sl], noise[sl], coef, rng))
    out = {"beta": np.concatenate(beta), "w": np.concatenate(w)}
    if u:
        out["u"] = np.concatenate(u)
    return out


def _draw_levels(st, lay, sig, noise, coef, rng):
    """u_l | beta, w, y: independent N(rho n_l / d_l * r_l, delta^2 rho / d_l) per level, with
    r_l the level-mean residual of y after F beta + X w."""
    q = noise**2
    rho = sig[:, lay.factor_group] ** 2 / q
    nl, mean = st.level_weight, st.level_mean
    p, d = st.n_fixed_columns, st.n_dense
    P = st.n_fixed
    fitted = coef[:, P - p:P] @ mean[:, :p].T + coef[:, P:P + d] @ mean[:, p:p + d].T
    if st.intercept:
        fitted += coef[:, [0]]
    dl = 1.0 + rho[:, None] * nl
    mu = rho[:, None] * nl / dl * (mean[:, -1] - fitted)
    sd = np.sqrt(q[:, None] * rho[:, None] / dl)
    return mu + sd * rng.standard_normal(mu.shape)


def family_datatree(
    spec: ModelSpec,
    scales: Mapping[str, NDArray],
    coefficients: Mapping[str, NDArray],
    *,
    chains: int,
    sample_stats: Mapping[str, NDArray] | None = None,
    attrs: Mapping[str, object] | None = None,
):
    """The draws as an ArviZ DataTree with the family's names and coords (module docstring).

    ``scales`` maps each learned group's name (and ``"noise"`` when learned) to its draws, and
    ``coefficients`` is :func:`draw_coefficients`' output; both are flat (chains * draws, ...)
    in chain-major order and are reshaped to (chain, draw, ...).
    """
    import arviz_base as azb

    def shaped(x):
        x = np.asarray(x, dtype=np.float64)
        return x.reshape(chains, x.shape[0] // chains, *x.shape[1:])

    learned = [spec.groups[k].name for k in spec.learned_groups]
    posterior: dict[str, NDArray] = {}
    dims: dict[str, list[str]] = {}
    coords: dict[str, list[str]] = {}
    if learned:
        posterior["sigma"] = shaped(np.column_stack([scales[name] for name in learned]))
        dims["sigma"], coords["group"] = ["group"], learned
    if spec.noise is None:
        posterior["noise"] = shaped(scales["noise"])
    names = fixed_effect_names(spec)
    prior = fixed_effect_mask(spec)  # a proper prior's fixed effects: moved from w to beta
    if names:
        beta = np.asarray(coefficients["w"])[:, prior] if prior.any() else coefficients["beta"]
        posterior["beta"] = shaped(beta)
        dims["beta"], coords["fixed"] = ["fixed"], list(names)
    dense = [c for c, p in zip(spec.dense_columns, prior, strict=True) if not p]
    if dense:
        posterior["w"] = shaped(np.asarray(coefficients["w"])[:, ~prior])
        dims["w"], coords["feature"] = ["feature"], dense
    if spec.factor is not None and "u" in coefficients:
        dim = spec.factor.name
        coords[dim] = [str(level) for level in spec.factor.levels]
        posterior["u"] = shaped(coefficients["u"])
        dims["u"] = [dim]
        if INTERCEPT_NAME in names and (spec.intercept or prior.any()):
            j = names.index(INTERCEPT_NAME)
            posterior["theta"] = posterior["u"] + posterior["beta"][..., j:j + 1]
            dims["theta"] = [dim]
    groups = {"posterior": posterior}
    if sample_stats:
        groups["sample_stats"] = {k: shaped(v) if np.ndim(v) == 1 else v for k, v in sample_stats.items()}
    return azb.from_dict(groups, coords=coords, dims=dims, attrs={"/": dict(attrs or {})})


def layout_and_stats(spec: ModelSpec, stats: FamilyStats | None = None):
    """(stats, layout) of ``spec`` (the statistics computed when not given)."""
    from hyperbayes.models.family_stats import family_stats

    return (family_stats(spec) if stats is None else stats), layout_of(spec)
