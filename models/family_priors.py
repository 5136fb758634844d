"""Hyperpriors for a model specification's learned scales, scaled to the data when not given.

The Bayesian methods (exact, NUTS, SMC) need a proper prior on every learned scale; empirical
Bayes, joint MAP and cross-validation do not use them. :func:`with_default_priors` fills in the
missing ones the way :func:`~hyperbayes.models.hyperpriors.default_hyperpriors` does for the
shared model: a group of numeric columns gets HalfNormal(sd(y) / rms sd of its columns), a
random intercept HalfNormal(sd(y)) (its columns are indicators), a learned noise
HalfNormal(sd(y)); each rounded to 3 significant digits so the spec prints cleanly.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from hyperbayes.models.hyperpriors import Hyperprior, parse_hyperprior
from hyperbayes.models.specification import ModelSpec

__all__ = ["default_group_prior", "with_default_priors"]


def _halfnormal(scale: float) -> Hyperprior:
    return Hyperprior("halfnormal", (float(f"{scale:.3g}"),))


def _sd_y(spec: ModelSpec) -> float:
    return float(np.std(spec.data.y)) or 1.0


def default_group_prior(spec: ModelSpec, k: int) -> Hyperprior:
    """The data-scaled default prior of group ``k`` of ``spec``."""
    g = spec.groups[k]
    if g.factor is not None:
        return _halfnormal(_sd_y(spec))
    cols = np.column_stack([spec.column(c) for c in g.columns])
    sd_x = float(np.sqrt(np.mean(np.var(cols, axis=0)))) or 1.0
    return _halfnormal(_sd_y(spec) / sd_x)


def with_default_priors(
    spec: ModelSpec,
    *,
    group_prior: Hyperprior | str | None = None,
    noise_prior: Hyperprior | str | None = None,
) -> ModelSpec:
    """``spec`` with a prior on every learned scale that has none.

    Parameters
    ----------
    spec : ModelSpec
    group_prior : Hyperprior or str, optional
        The prior for every learned group without one (default: scaled to the data, above).
    noise_prior : Hyperprior or str, optional
        The prior of a learned noise scale without one (default HalfNormal(sd(y))).
    """
    given = None if group_prior is None else parse_hyperprior(group_prior)
    groups = tuple(
        replace(g, prior=given if given is not None else default_group_prior(spec, k))
        if g.learned and g.prior is None else g
        for k, g in enumerate(spec.groups)
    )
    noise = spec.noise_prior
    if spec.noise is None and noise is None:
        noise = parse_hyperprior(noise_prior) if noise_prior is not None else _halfnormal(_sd_y(spec))
    return replace(spec, groups=groups, noise_prior=noise)
