"""A family member's results as a :class:`MethodSummary`: one builder for every method.

Point methods (empirical Bayes, joint MAP, cross-validation) give estimates; samplers (the exact
oracle's draws, NUTS, SMC) give a DataTree laid out by
:func:`~hyperbayes.inference.methods.family_draws.family_datatree`. Both become the same
summary: ``sigmas`` by group, ``fixed_effects`` with standard errors (posterior sds for the
samplers), ``random_effects`` per level, ``sigma`` when there is one group, and ``intercept``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from hyperbayes.inference.methods.arviz_io import INTERVAL_PROB
from hyperbayes.inference.methods.family_draws import INTERCEPT_NAME, fixed_names
from hyperbayes.inference.methods.results import MethodSummary
from hyperbayes.models.specification import ModelSpec

__all__ = ["summary_from_draws", "summary_from_estimates"]


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
    **fields: Any,
) -> MethodSummary:
    """The summary of a point method; ``fields`` are further :class:`MethodSummary` fields
    (``log_evidence``, ``degenerate``, ``diagnostics``, ``warnings``, ``extra``, ...)."""
    sigmas = {str(k): float(v) for k, v in sigmas.items()}
    fixed = {n: (float(m), float(s)) for n, m, s in zip(fixed_names(spec), np.ravel(beta),
                                                        np.ravel(beta_se), strict=True)}
    return MethodSummary(
        method=method,
        sigma=_single(sigmas),
        sigma_interval=_single(sigma_intervals or {}),
        noise=float(noise),
        log_evidence=fields.pop("log_evidence", None),
        weights=tuple(float(x) for x in np.ravel(w)),
        intercept=fixed[INTERCEPT_NAME][0] if INTERCEPT_NAME in fixed else None,
        sigmas=sigmas,
        sigma_intervals=dict(sigma_intervals) if sigma_intervals else None,
        fixed_effects=fixed,
        random_effects=_random(spec, u_mean, u_sd),
        **fields,
    )


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
    beta = pooled("beta") if fixed_names(spec) else np.zeros((1, 0))
    u = pooled("u") if "u" in post else np.zeros((1, 0))
    return summary_from_estimates(
        method, spec, sigmas=sigmas,
        noise=float(pooled("noise").mean()) if spec.noise is None else spec.noise,
        beta=beta.mean(axis=0), beta_se=beta.std(axis=0, ddof=1) if beta.shape[0] > 1 else beta[0] * 0,
        w=pooled("w").mean(axis=0) if "w" in post else (),
        u_mean=u.mean(axis=0), u_sd=u.std(axis=0, ddof=1) if u.shape[0] > 1 else u[0] * 0,
        sigma_intervals=intervals or None, draws=tree, **fields,
    )


def _single(values: Mapping[str, Any]) -> Any:
    return next(iter(values.values())) if len(values) == 1 else None


def _random(spec: ModelSpec, mean: Sequence[float], sd: Sequence[float]):
    if spec.factor is None or spec.factor_group is None:
        return None
    group = spec.groups[spec.factor_group].name
    return {group: {str(lv): (float(m), float(s)) for lv, m, s in zip(
        spec.factor.levels, np.ravel(mean), np.ravel(sd), strict=True)}}
