"""A family member's results as a :class:`MethodSummary`: one builder for every method.

Point methods (empirical Bayes, joint MAP, cross-validation) give estimates; samplers (the exact
oracle's draws, NUTS, SMC) give a DataTree laid out by
:func:`~hyperbayes.inference.methods.family_draws.family_datatree`. Both become the same
summary: ``sigmas`` by group, ``fixed_effects`` with standard errors (posterior sds for the
samplers), ``random_effects`` per level, ``sigma`` when there is one group, and ``intercept``.

Under a proper prior on the fixed effects (:func:`~hyperbayes.models.fixed_prior.with_fixed_prior`)
the spec holds them as the penalised group ``"fixed"`` of known scale; the summary presents them
as without the prior: ``fixed_effects`` (``Intercept``, covariates) from that group's entries of
w, which are left out of ``weights``, and the group left out of ``sigmas`` (its scale is the
prior's, not learned). :func:`evidence_note` says which evidence a run reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hyperbayes.inference.mathematics.family_likelihood import family_terms, layout_of
from hyperbayes.inference.methods.arviz_io import INTERVAL_PROB
from hyperbayes.inference.methods.family_draws import (
    INTERCEPT_NAME,
    fixed_effect_mask,
    fixed_effect_names,
)
from hyperbayes.inference.methods.results import MethodSummary
from hyperbayes.models.family_stats import family_stats
from hyperbayes.models.fixed_prior import fixed_prior_group
from hyperbayes.models.specification import ModelSpec

__all__ = ["evidence_note", "summary_from_draws", "summary_from_estimates"]

_NO_FIXED_NOTE = "p(y) of a model without fixed effects: a proper evidence."


def evidence_note(spec: ModelSpec, *, flat: str) -> str:
    """What the log evidence of a run on ``spec`` is, in one sentence.

    Parameters
    ----------
    spec : ModelSpec
    flat : str
        The caller's words for the flat-prior (REML, Lebesgue measure) evidence, used when
        ``spec`` has unpenalised fixed effects.

    Returns
    -------
    str
        Under a proper prior on the fixed effects: a true p(y), comparable across models with
        different fixed effects; without fixed effects: a proper evidence; else ``flat``.
    """
    if spec.fixed_prior_sd is not None:
        return (f"log_evidence is a true log p(y), under the N(0, {spec.fixed_prior_sd:g}^2) "
                "prior on the fixed effects (intercept included): comparable across models with "
                "different fixed effects.")
    return flat if spec.n_fixed else _NO_FIXED_NOTE


def summary_from_estimates(
    method: str,
    spec: ModelSpec,
    *,
    sigmas: Mapping[str, float],
    noise: float,
    beta: ArrayLike,
    beta_se: ArrayLike,
    w: ArrayLike = (),
    u_mean: ArrayLike = (),
    u_sd: ArrayLike = (),
    sigma_intervals: Mapping[str, tuple[float, float]] | None = None,
    w_se: ArrayLike | None = None,
    **fields: Any,
) -> MethodSummary:
    """The summary of a point method; ``fields`` are further :class:`MethodSummary` fields
    (``log_evidence``, ``degenerate``, ``diagnostics``, ``warnings``, ``extra``, ...).

    ``beta`` and ``w`` are the method's coefficients of F and of the dense columns. Under a
    proper prior on the fixed effects ``beta`` is empty and the fixed effects are the group
    ``"fixed"``'s entries of ``w``, reported with the standard errors ``w_se`` (default: the
    posterior sds given the reported scales, ``sigmas`` and ``noise``).
    """
    sigmas = {str(k): float(v) for k, v in sigmas.items()}
    w = np.ravel(np.asarray(w, dtype=float))
    prior = fixed_effect_mask(spec)
    if prior.any():
        se = _conditional_w_sd(spec, sigmas, float(noise)) if w_se is None else np.ravel(w_se)
        beta, beta_se, w = w[prior], se[prior], w[~prior]
    return _summary(method, spec, sigmas, noise, beta, beta_se, w, u_mean, u_sd,
                    sigma_intervals, fields)


def summary_from_draws(method: str, spec: ModelSpec, tree: Any, **fields: Any) -> MethodSummary:
    """The summary of a sampler from its DataTree (posterior means, sds and 95% intervals)."""
    post = tree["posterior"]

    def pooled(name: str) -> np.ndarray:
        x = np.asarray(post[name].values, dtype=float)
        return x.reshape(-1, *x.shape[2:])

    tail = (1 - INTERVAL_PROB) / 2
    learned = [spec.groups[k].name for k in spec.learned_groups]
    sigmas = {g.name: float(g.scale) for g in spec.groups if g.scale is not None}
    intervals: dict[str, tuple[float, float]] = {}
    if learned:
        s = pooled("sigma")
        for j, name in enumerate(learned):
            sigmas[name] = float(s[:, j].mean())
            intervals[name] = (float(np.quantile(s[:, j], tail)), float(np.quantile(s[:, j], 1 - tail)))
    sigmas = {g.name: sigmas[g.name] for g in spec.groups}
    beta = pooled("beta") if fixed_effect_names(spec) else np.zeros((1, 0))
    u = pooled("u") if "u" in post else np.zeros((1, 0))
    return _summary(
        method, spec, sigmas,
        float(pooled("noise").mean()) if spec.noise is None else spec.noise,
        beta.mean(axis=0), beta.std(axis=0, ddof=1) if beta.shape[0] > 1 else beta[0] * 0,
        pooled("w").mean(axis=0) if "w" in post else (),
        u.mean(axis=0), u.std(axis=0, ddof=1) if u.shape[0] > 1 else u[0] * 0,
        intervals or None, fields | {"draws": tree},
    )


def _summary(method, spec, sigmas, noise, beta, beta_se, w, u_mean, u_sd, sigma_intervals,
             fields) -> MethodSummary:
    """The summary from the coefficients as presented (``beta``: the fixed effects of
    :func:`fixed_effect_names`; ``w``: the other dense weights)."""
    k = fixed_prior_group(spec)
    hidden = None if k is None else spec.groups[k].name  # the prior's group: not a learned scale
    sigmas = {str(n): float(v) for n, v in sigmas.items() if n != hidden}
    intervals = {n: v for n, v in (sigma_intervals or {}).items() if n != hidden}
    fixed = {n: (float(m), float(s)) for n, m, s in zip(fixed_effect_names(spec), np.ravel(beta),
                                                        np.ravel(beta_se), strict=True)}
    fields = dict(fields)
    return MethodSummary(
        method=method,
        sigma=_single(sigmas),
        sigma_interval=_single(intervals),
        noise=float(noise),
        log_evidence=fields.pop("log_evidence", None),
        weights=tuple(float(x) for x in np.ravel(w)),
        intercept=fixed[INTERCEPT_NAME][0] if INTERCEPT_NAME in fixed else None,
        sigmas=sigmas,
        sigma_intervals=intervals or None,
        fixed_effects=fixed,
        random_effects=_random(spec, u_mean, u_sd),
        **fields,
    )


def _conditional_w_sd(spec: ModelSpec, sigmas: Mapping[str, float], noise: float) -> NDArray:
    """Posterior sds of the dense weights given every group's scale and the noise (nan when a
    scale is missing or not a usable number)."""
    sig = np.array([[sigmas.get(g.name, np.nan) for g in spec.groups]], dtype=float)
    if not (np.all(np.isfinite(sig)) and np.all(sig >= 0) and np.isfinite(noise) and noise > 0):
        return np.full(len(spec.dense_columns), np.nan)
    t = family_terms(family_stats(spec), layout_of(spec), sig, np.array([noise]))
    return np.sqrt(np.maximum(np.diag(t.w_cov[0]), 0.0))


def _single(values: Mapping[str, Any]) -> Any:
    return next(iter(values.values())) if len(values) == 1 else None


def _random(spec: ModelSpec, mean: Sequence[float], sd: Sequence[float]):
    if spec.factor is None or spec.factor_group is None:
        return None
    group = spec.groups[spec.factor_group].name
    return {group: {str(lv): (float(m), float(s)) for lv, m, s in zip(
        spec.factor.levels, np.ravel(mean), np.ravel(sd), strict=True)}}
