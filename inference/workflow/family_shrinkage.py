"""The numbers behind the shrinkage plot: each level's raw mean against its posterior mean.

For a model with a random intercept (factor levels l = 1..L, deviations u_l), the *raw* mean of
level l is the weighted mean of y over its rows, ybar_l = sum omega_i y_i / n_l (one row per
level, as in a meta-analysis: the study's own estimate y_j), with standard error
delta / sqrt(n_l) (s_j for a study with known standard error s_j; with a learned noise, delta
is the pooled within-level standard deviation, sqrt(W_yy / (N - L)), which needs no method).

Its model counterpart is the level's mean response at the level's own covariate averages,

    theta_l = c_l . [beta, w] + u_l,     c_l = [1, fbar_l, xbar_l]

(Intercept + u_l when the model has no covariates, as for eight schools; with covariates
this keeps both axes the same quantity, so that the plot shows shrinkage and not the
covariates' effect). A sampler gives theta_l per draw. At a point estimate of the scales
(empirical Bayes) theta_l is Gaussian: given [beta, w] the deviation is
u_l = a_l (ybar_l - c_l . [beta, w]) + e_l, with a_l = rho n_l / (1 + rho n_l),
rho = sigma_u^2 / delta^2 and e_l ~ N(0, delta^2 rho / (1 + rho n_l)) (MATH.md section 7), so

    E theta_l = c_l . m + E u_l,     Var theta_l = (1 - a_l)^2 c_l' S c_l + delta^2 rho / (1 + rho n_l)

with m, S the posterior mean and covariance of [beta, w] given the scales (beta under its flat
prior). At sigma_u = 0 every level's theta_l is the pooled mean (complete pooling).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hyperbayes.inference.mathematics.family_likelihood import family_terms, layout_of
from hyperbayes.inference.methods.arviz_io import INTERVAL_PROB
from hyperbayes.inference.methods.family_draws import INTERCEPT_NAME, fixed_effect_names
from hyperbayes.inference.methods.results import MethodSummary, json_safe
from hyperbayes.models.family_stats import FamilyStats, family_stats
from hyperbayes.models.specification import ModelSpec

__all__ = [
    "LevelEstimates",
    "RawLevelMeans",
    "Shrinkage",
    "level_estimates_at_scales",
    "level_estimates_from_draws",
    "raw_level_means",
    "shrinkage",
]

_Z = 1.959963984540054  # the normal 97.5% point
#: Point methods whose estimate of the scales is shown (the others' scales are not meant as
#: a posterior: joint MAP collapses, CV chooses a penalty).
POINT_METHODS = ("eb",)


@dataclass(frozen=True)
class RawLevelMeans:
    """Each level's weighted mean of y, its standard error and its number of rows."""

    levels: tuple[str, ...]
    mean: NDArray[np.float64]
    se: NDArray[np.float64] | None
    rows: NDArray[np.intp]


@dataclass(frozen=True)
class LevelEstimates:
    """One method's posterior mean of theta_l per level with a 95% interval."""

    mean: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]

    def to_json(self) -> dict[str, Any]:
        return json_safe({"mean": self.mean, "lower": self.lower, "upper": self.upper})


@dataclass(frozen=True)
class Shrinkage:
    """Everything the shrinkage plot shows (JSON in ``summary.json`` under ``shrinkage``).

    Attributes
    ----------
    group, factor : str
        The random-intercept group and its categorical column.
    raw : RawLevelMeans
    adjusted : bool
        Whether the model has covariates, so that theta_l is taken at each level's covariate
        averages rather than Intercept + u_l.
    estimates : dict of str to LevelEstimates
        By method: the samplers' (from their draws) and empirical Bayes'.
    pooled : dict of str to float
        By method, the posterior mean of the intercept (the complete-pooling value, drawn
        when the model has no covariates).
    """

    group: str
    factor: str
    raw: RawLevelMeans
    adjusted: bool
    estimates: Mapping[str, LevelEstimates] = field(default_factory=dict)
    pooled: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return json_safe({
            "group": self.group,
            "factor": self.factor,
            "levels": list(self.raw.levels),
            "raw_mean": self.raw.mean,
            "raw_se": self.raw.se,
            "rows": self.raw.rows,
            "one_row_per_level": bool(np.all(self.raw.rows == 1)),
            "adjusted": self.adjusted,
            "estimates": {m: e.to_json() for m, e in self.estimates.items()},
            "pooled": dict(self.pooled),
        })


def raw_level_means(spec: ModelSpec, stats: FamilyStats | None = None) -> RawLevelMeans:
    """Each level's weighted mean of y and its standard error (module docstring).

    Raises
    ------
    ValueError
        If the model has no random intercept.
    """
    if spec.factor is None:
        raise ValueError("the model has no random intercept (no categorical group): there are "
                         "no levels to shrink.")
    st = family_stats(spec) if stats is None else stats
    rows = np.bincount(spec.factor.codes, minlength=spec.factor.n_levels).astype(np.intp)
    n_l = st.level_weight
    if spec.noise is not None:
        delta = spec.noise
    elif st.n_rows > st.n_levels:
        delta = float(np.sqrt(max(st.within[-1, -1], 0.0) / (st.n_rows - st.n_levels)))
    else:  # one row per level and a learned noise: no within-level spread to estimate it from
        delta = None
    se = None if delta is None else delta / np.sqrt(n_l)
    return RawLevelMeans(tuple(spec.factor.levels), st.level_mean[:, -1].copy(), se, rows)


def _level_design(spec: ModelSpec, st: FamilyStats) -> NDArray[np.float64]:
    """c_l for every level (L, P + D): [1, fbar_l, xbar_l]."""
    covariates = st.level_mean[:, :-1]
    ones = np.ones((st.n_levels, 1)) if spec.intercept else np.zeros((st.n_levels, 0))
    return np.column_stack([ones, covariates])


def level_estimates_at_scales(
    spec: ModelSpec, sigmas: NDArray, noise: float, stats: FamilyStats | None = None
) -> LevelEstimates:
    """theta_l's Gaussian posterior given every group's scale (G,) and the noise scale.

    Exact (module docstring): the uncertainty of [beta, w] is included, the scales' is not.
    """
    st = family_stats(spec) if stats is None else stats
    sig = np.asarray(sigmas, dtype=float).reshape(1, -1)
    t = family_terms(st, layout_of(spec), sig, np.array([float(noise)]))
    c = _level_design(spec, st)
    m = np.r_[t.beta_mean[0], t.w_mean[0]]
    rho = sig[0, spec.factor_group] ** 2 / noise**2
    n_l = st.level_weight
    a = rho * n_l / (1.0 + rho * n_l)
    cov_part = np.einsum("li,ij,lj->l", c, t.coef_cov[0], c)
    var = (1.0 - a) ** 2 * cov_part + noise**2 * rho / (1.0 + rho * n_l)
    mean = c @ m + t.u_mean[0]
    sd = np.sqrt(np.maximum(var, 0.0))
    return LevelEstimates(mean, mean - _Z * sd, mean + _Z * sd)


def level_estimates_from_draws(
    spec: ModelSpec, tree: Any, stats: FamilyStats | None = None
) -> LevelEstimates | None:
    """theta_l's posterior mean and equal-tailed 95% interval from a family DataTree's draws
    of beta, w and u (None when the draws hold no u)."""
    post = tree["posterior"] if tree is not None and "posterior" in tree.children else None
    if post is None or "u" not in post:
        return None
    st = family_stats(spec) if stats is None else stats

    u = np.asarray(post["u"].values, dtype=float)
    u = u.reshape(-1, u.shape[-1])

    def pooled(name: str, width: int) -> NDArray[np.float64]:
        if width == 0 or name not in post:
            return np.zeros((u.shape[0], 0))
        x = np.asarray(post[name].values, dtype=float)
        return x.reshape(-1, x.shape[-1])

    c = _level_design(spec, st)
    # [beta, w] in the dense order also under a proper prior on beta (its group comes first)
    coef = np.column_stack([pooled("beta", len(fixed_effect_names(spec))),
                            pooled("w", len(spec.dense_columns))])
    theta = coef @ c.T + u
    tail = (1 - INTERVAL_PROB) / 2
    lower, upper = np.quantile(theta, [tail, 1 - tail], axis=0)
    return LevelEstimates(theta.mean(axis=0), lower, upper)


def shrinkage(spec: ModelSpec, results: Mapping[str, MethodSummary]) -> Shrinkage | None:
    """The shrinkage plot's numbers for a family run (None without a random intercept).

    Parameters
    ----------
    spec : ModelSpec
    results : mapping of str to MethodSummary
        The family summaries: every sampler with draws of u, and empirical Bayes, give a row.
    """
    if spec.factor is None or spec.factor_group is None:
        return None
    st = family_stats(spec)
    group = spec.groups[spec.factor_group].name
    estimates: dict[str, LevelEstimates] = {}
    pooled: dict[str, float] = {}
    for name, summary in results.items():
        est = None
        if summary.draws is not None:
            est = level_estimates_from_draws(spec, summary.draws, st)
        elif name in POINT_METHODS and summary.sigmas and summary.noise is not None:
            scales = np.array([summary.sigmas.get(g.name, g.scale) for g in spec.groups], dtype=float)
            if np.all(np.isfinite(scales)) and np.all(scales >= 0) and summary.noise > 0:
                est = level_estimates_at_scales(spec, scales, summary.noise, st)
        if est is None:
            continue
        estimates[name] = est
        intercept = (summary.fixed_effects or {}).get(INTERCEPT_NAME)
        if intercept is not None:
            pooled[name] = float(intercept[0])
    # covariates besides the intercept (F's, or the fixed group's under a proper prior)
    covariates = st.n_fixed + st.n_dense - int(INTERCEPT_NAME in fixed_effect_names(spec))
    return Shrinkage(group, spec.factor.name, raw_level_means(spec, st),
                     adjusted=covariates > 0, estimates=estimates, pooled=pooled)
