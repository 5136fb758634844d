"""PyMC models of the linear-Gaussian family (MATH.md section 7): collapsed and per-observation.

Two builders over one :class:`~hyperbayes.models.specification.ModelSpec`:

* :func:`marginal_family`: beta (flat prior), w and u integrated out; only the scales are free
  and the restricted (REML, default) or profile (ML) log marginal likelihood enters as the
  Potential ``y_marginal``. It is written symbolically from the
  :class:`~hyperbayes.models.family_stats.FamilyStats` with the elimination of
  :mod:`hyperbayes.inference.mathematics.family_likelihood`: the factor's diagonal block per
  level, the intercept by a weighted centring of the level means, then one K x K Cholesky
  (K = P' + D + 1). No L x L or N x N matrix and no Python Op, so it compiles with nutpie's
  Numba backend and runs under ``pm.sample_smc``.
* :func:`hierarchical_family`: every coefficient explicit, y observed row by row.

Both share the scale variables and the coords:

==============  ========================  ===============================================
name            dims                      what
==============  ========================  ===============================================
``sigma_<g>``   (none)                    learned group g's scale (its hyperprior)
``noise``       (none)                    delta, when learned
``sigma``       ``group``                 Deterministic: the learned scales stacked
``beta``        ``fixed``                 fixed effects, ``Intercept`` first (hierarchical)
``w``           ``feature``               dense penalised weights (hierarchical)
``u``           the factor's name         each level's deviation (hierarchical)
``theta``       the factor's name         Intercept + u (hierarchical, with an intercept)
==============  ========================  ===============================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from hyperbayes.models.builders import prior_variable
from hyperbayes.models.family_stats import FamilyStats, family_stats
from hyperbayes.models.hyperpriors import OptionError
from hyperbayes.models.specification import ModelSpec

__all__ = ["INTERCEPT_NAME", "family_coords", "hierarchical_family", "marginal_family"]

#: The intercept's label among the fixed effects (as in ``inference.methods.family_draws``).
INTERCEPT_NAME = "Intercept"
_LOG_2PI = float(np.log(2 * np.pi))

Convention = Literal["reml", "ml"]
Parametrization = Literal["noncentered", "centered"]


def family_coords(spec: ModelSpec) -> dict[str, list[str]]:
    """The coords both builders share: ``group``, ``fixed``, ``feature`` and the factor's name,
    each present only when the model has such things."""
    coords: dict[str, list[str]] = {}
    learned = [spec.groups[k].name for k in spec.learned_groups]
    if learned:
        coords["group"] = learned
    fixed = [INTERCEPT_NAME] * spec.intercept + list(spec.fixed)
    if fixed:
        coords["fixed"] = fixed
    if spec.dense_columns:
        coords["feature"] = list(spec.dense_columns)
    if spec.factor is not None:
        coords[spec.factor.name] = [str(level) for level in spec.factor.levels]
    return coords


def _scales(spec: ModelSpec):
    """Add the scale variables to the current model; return (sigma per group, noise).

    Learned groups get ``sigma_<name>`` from their hyperprior, fixed groups their constant; a
    learned noise gets ``noise``. The Deterministic ``sigma`` stacks the learned scales.
    """
    sig = []
    learned = []
    for g in spec.groups:
        if g.learned:
            if g.prior is None:
                raise OptionError(
                    f"group {g.name!r} has a learned scale but no hyperprior; give it one "
                    "(Group(..., prior='halfnormal:1')) or fill the defaults with "
                    "hyperbayes.models.family_priors.with_default_priors(spec)."
                )
            s = prior_variable(g.prior, f"sigma_{g.name}")
            learned.append(s)
        else:
            s = pt.as_tensor(np.float64(g.scale))
        sig.append(s)
    if learned:
        pm.Deterministic("sigma", pt.stack(learned), dims="group")
    if spec.noise is None:
        if spec.noise_prior is None:
            raise OptionError(
                "the noise is learned but has no hyperprior; give specify(..., noise_prior=...) "
                "or fill the default with hyperbayes.models.family_priors.with_default_priors(spec)."
            )
        noise = prior_variable(spec.noise_prior, "noise")
    else:
        noise = pt.as_tensor(np.float64(spec.noise))
    return sig, noise


def marginal_family(
    spec: ModelSpec,
    *,
    stats: FamilyStats | None = None,
    convention: Convention = "reml",
) -> pm.Model:
    """The family with beta, w and u integrated out: the scales' model.

    Parameters
    ----------
    spec : ModelSpec
        Every learned scale needs a hyperprior (see
        :func:`~hyperbayes.models.family_priors.with_default_priors`).
    stats : FamilyStats, optional
        Precomputed (e.g. streamed) statistics of ``spec``.
    convention : {"reml", "ml"}
        ``"reml"`` (default): beta integrated out under a flat prior (Lebesgue measure), the
        Bayesian answer; ``"ml"``: beta maximised out (the profile likelihood).

    Returns
    -------
    pymc.Model
        Free variables ``sigma_<group>`` per learned group and ``noise`` when learned; the
        Deterministic ``sigma`` (dims ``group``); the Potential ``y_marginal``.

    Notes
    -----
    With rho_g = sigma_g^2 / delta^2 and the factor's levels weighted e_l = n_l / (1 + rho n_l),
    the system [F', X~, y] left after eliminating the indicators and the intercept is
    A = diag(s) (W + sum_l e_l dev_l dev_l^T) diag(s) + I_X with dev_l the level means centred
    at their e-weighted mean and s = sqrt(rho) on the dense columns; with A = L L^T and r the
    last pivot squared,

        REML = -1/2 [(N - P) log(2 pi delta^2) + sum_l log(1 + rho n_l) + log sum_l e_l
                     + log det A_(F', X) + r / delta^2] + 1/2 sum_i log omega_i,

    equal to MATH.md section 7's projected form (Harville 1977; Bates et al. 2015).

    Examples
    --------
    >>> from hyperbayes.models.datasets import load_eight_schools
    >>> model = marginal_family(load_eight_schools(tau_prior="halfcauchy:5"))
    >>> sorted(v.name for v in model.free_RVs)
    ['sigma_tau']
    """
    if convention not in ("reml", "ml"):
        raise OptionError(f"convention must be 'reml' or 'ml', got {convention!r}.")
    st = family_stats(spec) if stats is None else stats
    if st.n_levels != (spec.factor.n_levels if spec.factor is not None else 1) or (
        st.n_dense != len(spec.dense_columns) or st.n_fixed_columns != len(spec.fixed)
    ):
        raise OptionError("stats do not match spec (different columns or levels); pass "
                          "family_stats(spec) or leave stats=None.")
    with pm.Model(coords=family_coords(spec)) as model:
        sig, noise = _scales(spec)
        loglik = _log_marginal(spec, st, pt.stack(sig), noise, convention)
        pm.Potential("y_marginal", loglik)
    return model


def _log_marginal(spec: ModelSpec, st: FamilyStats, sig, noise, convention):
    """The symbolic log marginal likelihood (the elimination of family_likelihood._evaluate)."""
    q = noise**2
    rho = sig**2 / q
    p, d, k = st.n_fixed_columns, st.n_dense, st.k
    nl = pt.as_tensor(np.asarray(st.level_weight, dtype=np.float64))
    mean = pt.as_tensor(np.asarray(st.level_mean, dtype=np.float64))
    within = np.asarray(st.within, dtype=np.float64)
    # 1. The factor's diagonal block: d_l = 1 + rho n_l, weights e_l = n_l / d_l.
    if spec.factor_group is not None:
        dl = 1.0 + rho[spec.factor_group] * nl
        e = nl / dl
        logdet_z = pt.sum(pt.log(dl))
    else:
        e, logdet_z = nl, 0.0
    # 2. The intercept: centre the level means at their e-weighted mean.
    if st.intercept:
        E = pt.sum(e)
        dev = mean - pt.dot(e, mean) / E
        logdet_int = pt.log(E)
    else:
        dev, logdet_int = mean, 0.0
    S2 = within + pt.dot((dev * e[:, None]).T, dev)
    # 3. Scale the dense columns, add the prior's identity, one K x K Cholesky.
    ones_p, ones_y = np.ones(p), np.ones(1)
    dense_group = spec.group_of_dense_column()
    s = pt.concatenate([ones_p, pt.sqrt(rho)[dense_group], ones_y]) if d else pt.as_tensor(np.ones(k))
    eye_x = np.diag(np.r_[np.zeros(p), np.ones(d), 0.0])
    A = s[:, None] * S2 * s[None, :] + eye_x
    L = pt.linalg.cholesky(A, lower=True)
    diag = pt.diagonal(L)
    logdet_rest = 2.0 * pt.sum(pt.log(diag[:-1]))
    r = diag[-1] ** 2
    const = 0.5 * st.sum_log_omega
    n, P = st.n_rows, st.n_fixed
    if convention == "reml":
        return -0.5 * ((n - P) * (_LOG_2PI + pt.log(q)) + logdet_z + logdet_int + logdet_rest + r / q) + const
    logdet_k = logdet_z
    if d:
        xs = slice(p, p + d)
        mX = mean[:, xs]
        G = within[xs, xs] + pt.dot((mX * e[:, None]).T, mX)
        sx = s[xs]
        K1 = sx[:, None] * G * sx[None, :] + np.eye(d)
        logdet_k = logdet_k + 2.0 * pt.sum(pt.log(pt.diagonal(pt.linalg.cholesky(K1, lower=True))))
    return -0.5 * (n * (_LOG_2PI + pt.log(q)) + logdet_k + r / q) + const


def _parametrizations(spec: ModelSpec, parametrization) -> dict[str, str]:
    """Group name -> "centered"/"noncentered", checked."""
    valid = ("noncentered", "centered")
    names = [g.name for g in spec.groups]
    if isinstance(parametrization, Mapping):
        unknown = sorted(set(parametrization) - set(names))
        if unknown:
            raise OptionError(f"parametrization names unknown group(s) {unknown}; the groups are {names}.")
        out = {n: parametrization.get(n, "noncentered") for n in names}
    else:
        out = dict.fromkeys(names, parametrization)
    for name, value in out.items():
        if value not in valid:
            raise OptionError(
                f"parametrization of group {name!r} must be 'noncentered' or 'centered', got {value!r}."
            )
    return out


def hierarchical_family(
    spec: ModelSpec,
    *,
    parametrization: Parametrization | Mapping[str, Parametrization] = "noncentered",
    beta_prior_sd: float | None = None,
) -> pm.Model:
    """The per-observation model of the family: every coefficient explicit.

    Parameters
    ----------
    spec : ModelSpec
        Every learned scale needs a hyperprior (see
        :func:`~hyperbayes.models.family_priors.with_default_priors`).
    parametrization : {"noncentered", "centered"} or mapping group name -> one of them
        ``"centered"``: the group's coefficients ~ N(0, sigma_g^2) directly (the funnel);
        ``"noncentered"``: z ~ N(0, 1) and coefficients = sigma_g z. A mapping sets it per
        group (groups it omits are non-centred).
    beta_prior_sd : float, optional
        beta ~ N(0, beta_prior_sd^2) instead of the flat (improper) prior of the REML model.

    Returns
    -------
    pymc.Model
        The scales as in :func:`marginal_family`; ``beta`` (dims ``fixed``); per dense group g
        ``w_<g>`` (centred) or ``z_<g>`` (non-centred) over dims ``feature_<g>`` and the
        Deterministic ``w`` (dims ``feature``); for the factor group ``u`` (centred) or
        ``z_<g>`` and the Deterministic ``u`` (dims the factor's name), and ``theta`` =
        Intercept + u; ``y`` observed, dims ``obs``, sd noise / sqrt(omega_i).
    """
    how = _parametrizations(spec, parametrization)
    if beta_prior_sd is not None and not (np.isfinite(beta_prior_sd) and beta_prior_sd > 0):
        raise OptionError(f"beta_prior_sd must be a positive number or None, got {beta_prior_sd}.")
    coords = family_coords(spec)
    for g in spec.dense_groups:
        coords[f"feature_{g.name}"] = list(g.columns)
    coords["obs"] = np.arange(spec.n)
    y = np.asarray(spec.data.y, dtype=np.float64)
    with pm.Model(coords=coords) as model:
        sig, noise = _scales(spec)
        mu = pt.zeros(spec.n, dtype="float64")
        beta = None
        if "fixed" in coords:
            if beta_prior_sd is None:
                beta = pm.Flat("beta", dims="fixed")
            else:
                beta = pm.Normal("beta", mu=0.0, sigma=np.float64(beta_prior_sd), dims="fixed")
            F = spec.fixed_matrix()
            if spec.intercept:
                F = np.column_stack([np.ones(spec.n), F])
            mu = mu + pt.dot(F, beta)
        if spec.dense_columns:
            parts = [
                _coefficients(f"w_{g.name}", g.name, sig[k], how[g.name], f"feature_{g.name}")
                for k, g in enumerate(spec.groups) if g.factor is None
            ]
            w = pm.Deterministic("w", pt.concatenate(parts), dims="feature")
            mu = mu + pt.dot(spec.dense_matrix(), w)
        if spec.factor is not None:
            k = spec.factor_group
            dim = spec.factor.name
            u = _coefficients("u", spec.groups[k].name, sig[k], how[spec.groups[k].name], dim)
            if how[spec.groups[k].name] == "noncentered":
                u = pm.Deterministic("u", u, dims=dim)
            if beta is not None and spec.intercept:
                pm.Deterministic("theta", beta[0] + u, dims=dim)
            mu = mu + u[spec.factor.codes]
        sd = noise if spec.obs_weights is None else noise / np.sqrt(spec.obs_weights)
        pm.Normal("y", mu=mu, sigma=sd, observed=y, dims="obs")
    return model


def _coefficients(centred_name: str, group: str, scale, how: str, dims: str):
    """One group's coefficients: N(0, scale^2) centred, or scale * z with z ~ N(0, 1)."""
    if how == "centered":
        return pm.Normal(centred_name, mu=0.0, sigma=scale, dims=dims)
    z = pm.Normal(f"z_{group}", mu=0.0, sigma=1.0, dims=dims)
    return scale * z
