"""A proper Normal prior on the fixed effects, as a penalised group of known scale.

The family of MATH.md section 7 gives the fixed effects beta (the intercept and the covariates,
the P columns of F) a flat prior and integrates them out with Lebesgue measure, so its evidence
is defined only up to that improper prior's constant: comparable between models with the same
F, not across different fixed effects. The proper prior

    beta ~ N(0, s^2 I_P)       (s known, the intercept included)

is exactly a penalised group of the family whose scale is fixed at s and whose columns are F
(a column of ones for the intercept, then the fixed covariates). :func:`with_fixed_prior`
rewrites a :class:`ModelSpec` that way: no unpenalised columns are left (P = 0), the data gain
a column of ones named ``"Intercept"`` (when the model has an intercept), and a first group
``"fixed"`` holds those columns with ``scale=s``. Every method of the family then handles the
prior with no change of its own. With P = 0 the restricted (REML) and profile (ML) likelihoods
coincide and are a normalised density,

    log p(y | scales) = log N(y | 0, V),   V = delta^2 Omega^-1 + s^2 F F^T + sum_g sigma_g^2 X_g X_g^T,

so the evidence is a true p(y), comparable across models with different fixed effects. As
s -> infinity it approaches the flat-prior evidence minus (P / 2) log(2 pi s^2).

The spec records the prior (``ModelSpec.fixed_prior_sd``) so that results present the group's
coefficients as fixed effects rather than as penalised weights and a scale.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from hyperbayes.models.data import DataError, Dataset
from hyperbayes.models.hyperpriors import OptionError
from hyperbayes.models.specification import Group, ModelSpec

__all__ = ["FIXED_GROUP", "INTERCEPT_COLUMN", "fixed_prior_group", "with_fixed_prior"]

#: The name of the group that carries the fixed effects under a proper prior.
FIXED_GROUP = "fixed"
#: The name of the column of ones that stands for the intercept (formulae's and Bambi's word).
INTERCEPT_COLUMN = "Intercept"


def with_fixed_prior(spec: ModelSpec, sd: float) -> ModelSpec:
    """``spec`` with the prior beta ~ N(0, sd^2 I) on its fixed effects, intercept included.

    Parameters
    ----------
    spec : ModelSpec
        A model with fixed effects (an intercept, fixed covariates, or both) under the flat
        prior.
    sd : float
        The prior standard deviation s of every fixed effect, in the units of y per unit of
        the covariate (positive, finite).

    Returns
    -------
    ModelSpec
        ``intercept=False``, ``fixed=()``, the data with a column of ones ``"Intercept"``
        appended (with an intercept), the groups ``(Group("fixed", columns=("Intercept",
        *spec.fixed), scale=sd), *spec.groups)`` and ``fixed_prior_sd=sd``; everything else
        (weights, noise, priors, the factor) as in ``spec``.

    Raises
    ------
    OptionError
        ``sd`` is not a positive finite number.
    DataError
        The model has no fixed effects (nothing to put a prior on), already has the prior, or
        uses the names ``"fixed"`` (a group) or ``"Intercept"`` (a column) that the prior needs.

    Examples
    --------
    >>> from hyperbayes.models.datasets import load_eight_schools
    >>> spec = with_fixed_prior(load_eight_schools(tau_prior="halfcauchy:5"), 100.0)
    >>> [(g.name, g.columns, g.scale) for g in spec.groups][0], spec.n_fixed
    (('fixed', ('Intercept',), 100.0), 0)
    """
    sd = _check_sd(sd)
    if spec.fixed_prior_sd is not None:
        raise DataError(f"the fixed effects already have a N(0, {spec.fixed_prior_sd:g}^2) prior; "
                        "give the prior once.")
    if spec.n_fixed == 0:
        raise DataError("the model has no fixed effects (no intercept and no fixed covariates), "
                        "so there is nothing to put a prior on: drop the fixed-effect prior.")
    names = spec.data.feature_names
    if spec.intercept and INTERCEPT_COLUMN in names:
        raise DataError(f"the data already have a column named {INTERCEPT_COLUMN!r}, the name the "
                        "prior gives the intercept's column of ones; rename that column.")
    if any(g.name == FIXED_GROUP for g in spec.groups):
        raise DataError(f"a group is already named {FIXED_GROUP!r}, the name of the fixed "
                        "effects' group under their prior; rename that group.")
    data = _with_ones(spec.data) if spec.intercept else spec.data
    columns = ((INTERCEPT_COLUMN,) if spec.intercept else ()) + tuple(spec.fixed)
    group = Group(FIXED_GROUP, columns=columns, scale=sd)
    return dataclasses.replace(
        spec, data=data, fixed=(), intercept=False, groups=(group, *spec.groups),
        fixed_prior_sd=sd, _column_index={c: j for j, c in enumerate(data.feature_names)},
    )


def fixed_prior_group(spec: ModelSpec) -> int | None:
    """Index in ``spec.groups`` of the fixed effects' group under the prior (None without it)."""
    if spec.fixed_prior_sd is None:
        return None
    return next(k for k, g in enumerate(spec.groups) if g.name == FIXED_GROUP)


def _check_sd(sd) -> float:
    if isinstance(sd, bool) or not isinstance(sd, int | float | np.integer | np.floating):
        raise OptionError(f"the fixed-effect prior's sd must be a number, got {sd!r}.")
    sd = float(sd)
    if not (math.isfinite(sd) and sd > 0):
        raise OptionError(f"the fixed-effect prior's sd must be a positive finite number, got "
                          f"{sd:g}; give the prior standard deviation of the fixed effects.")
    return sd


def _with_ones(data: Dataset) -> Dataset:
    """``data`` with a column of ones appended (validated data plus ones need no new checks,
    and a constant column is intended here, so :meth:`Dataset.from_arrays`'s warning is not)."""
    X = np.column_stack([data.X, np.ones(data.n)])
    X.setflags(write=False)
    return Dataset(X=X, y=data.y, feature_names=(*data.feature_names, INTERCEPT_COLUMN),
                   target_name=data.target_name)
