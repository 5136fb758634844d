"""The linear-Gaussian family as a model specification on top of a :class:`Dataset`.

    y = F beta + X w + eps,   eps ~ N(0, delta^2 diag(1 / omega_i)),   w_g ~ N(0, sigma_g^2 I)

(MATH.md section 7). A :class:`ModelSpec` says which columns of the data are unpenalised
covariates (F, with the intercept unless switched off), which columns form each group of
penalised weights with its own scale (learned, optionally with a hyperprior, or fixed), which
categorical column is a random intercept (a group of indicator columns that is never built as
a dense matrix), and what is known about the noise: per-row weights omega_i, or known standard
errors s_i (then omega_i = 1 / s_i^2 and delta = 1). Build one with :func:`specify`; it checks
everything once and raises a :class:`DataError` that names the problem and the fix.

Special cases: ``specify(data)`` is today's model (intercept, one shared sigma, equal noise);
``specify(data, ard=True)`` is ARD; eight schools is
``specify(data, standard_errors="s", categorical={"school": names})``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hyperbayes.models.data import DataError, Dataset
from hyperbayes.models.factors import Factor
from hyperbayes.models.hyperpriors import Hyperprior, parse_hyperprior

__all__ = ["Factor", "Group", "ModelSpec", "specify"]


@dataclass(frozen=True)
class Group:
    """A group of penalised weights with one scale: w_g ~ N(0, sigma_g^2 I).

    Give ``columns`` (numeric columns of the Dataset) or ``factor`` (the name of a categorical
    column: a random intercept). ``scale`` fixes sigma_g; otherwise it is learned, and
    ``prior`` is its hyperprior for the Bayesian methods (empirical Bayes needs none).
    """

    name: str
    columns: tuple[str, ...] = ()
    factor: str | None = None
    prior: Hyperprior | None = None
    scale: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        if self.prior is not None:
            object.__setattr__(self, "prior", parse_hyperprior(self.prior))
        if self.columns and self.factor is not None:
            raise DataError(
                f"group {self.name!r} names both columns and a factor; a categorical random "
                "intercept is its own group: split them."
            )
        if not self.columns and self.factor is None:
            raise DataError(
                f"group {self.name!r} has no columns; give it columns=(...) or factor=NAME, or "
                "remove it."
            )
        if self.scale is not None:
            if not (np.isfinite(self.scale) and self.scale > 0):
                raise DataError(f"group {self.name!r}: a fixed scale must be positive, got {self.scale}.")
            if self.prior is not None:
                raise DataError(
                    f"group {self.name!r} has both a fixed scale and a hyperprior; give one."
                )

    @property
    def learned(self) -> bool:
        return self.scale is None


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """A validated member of the linear-Gaussian family (build with :func:`specify`).

    Attributes
    ----------
    data : Dataset
        The numeric columns and the target.
    fixed : tuple of str
        Unpenalised covariates besides the intercept (columns of F).
    intercept : bool
        Whether F holds a column of ones.
    groups : tuple of Group
        Penalised groups; at most one is a factor (random intercept).
    factor : Factor or None
        The categorical column of the factor group.
    obs_weights : ndarray or None
        omega_i (None: all one).
    noise : float or None
        The known noise scale delta (1 with standard errors), or None to learn it.
    noise_prior : Hyperprior or None
        Hyperprior on delta when learned (for the Bayesian methods).
    standard_errors : bool
        Whether ``obs_weights`` came from known standard errors.
    fixed_prior_sd : float or None
        s when the fixed effects have the prior N(0, s^2) as group ``"fixed"`` (``fixed_prior``).
    """

    data: Dataset
    fixed: tuple[str, ...]
    intercept: bool
    groups: tuple[Group, ...]
    factor: Factor | None
    obs_weights: NDArray[np.float64] | None
    noise: float | None
    noise_prior: Hyperprior | None
    standard_errors: bool = False
    fixed_prior_sd: float | None = None
    _column_index: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return self.data.n

    @property
    def n_fixed(self) -> int:
        """P: the number of columns of F (with the intercept)."""
        return len(self.fixed) + int(self.intercept)

    @property
    def dense_groups(self) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if g.factor is None)

    @property
    def dense_columns(self) -> tuple[str, ...]:
        return tuple(c for g in self.dense_groups for c in g.columns)

    @property
    def factor_group(self) -> int | None:
        """Index (in ``groups``) of the random-intercept group, or None."""
        return next((k for k, g in enumerate(self.groups) if g.factor is not None), None)

    @property
    def learned_groups(self) -> tuple[int, ...]:
        return tuple(k for k, g in enumerate(self.groups) if g.learned)

    @property
    def n_unknown_scales(self) -> int:
        """Learned group scales, plus one when the noise is learned."""
        return len(self.learned_groups) + int(self.noise is None)

    def column(self, name: str) -> NDArray[np.float64]:
        return self.data.X[:, self._column_index[name]]

    def fixed_matrix(self) -> NDArray[np.float64]:
        """F without the intercept (N x P')."""
        return self.data.X[:, [self._column_index[c] for c in self.fixed]]

    def dense_matrix(self) -> NDArray[np.float64]:
        """The penalised numeric columns, group by group (N x D)."""
        return self.data.X[:, [self._column_index[c] for c in self.dense_columns]]

    def group_of_dense_column(self) -> NDArray[np.intp]:
        """For each dense column, the index of its group in ``groups``."""
        return np.array(
            [k for k, g in enumerate(self.groups) if g.factor is None for _ in g.columns],
            dtype=np.intp,
        )

    def describe(self) -> str:
        """One line per part of the model (for reports and notebooks)."""
        noise = (
            "known standard errors (delta = 1)" if self.standard_errors
            else f"delta = {self.noise:g}" if self.noise is not None else "delta learned"
        )
        lines = [
            f"N = {self.n}, F = {['intercept'] * self.intercept + list(self.fixed)}, noise: {noise}"
            + (", weighted rows" if self.obs_weights is not None and not self.standard_errors else "")
        ]
        for g in self.groups:
            what = (f"factor {g.factor!r} ({self.factor.n_levels} levels)" if g.factor
                    else f"{len(g.columns)} column(s)")
            how = f"fixed at {g.scale:g}" if g.scale is not None else (
                f"learned, prior {g.prior}" if g.prior else "learned")
            lines.append(f"group {g.name!r}: {what}, scale {how}")
        return "\n".join(lines)


def specify(
    data: Dataset,
    *,
    fixed: Sequence[str] = (),
    intercept: bool = True,
    groups: Sequence[Group] | Mapping[str, Sequence[str]] | None = None,
    categorical: Mapping[str, ArrayLike | str] | None = None,
    weights: ArrayLike | str | None = None,
    standard_errors: ArrayLike | str | None = None,
    noise: float | None = None,
    noise_prior: Hyperprior | str | None = None,
    ard: bool = False,
    prior: Hyperprior | str | None = None,
    fixed_prior: float | None = None,
) -> ModelSpec:
    """Validate and build a :class:`ModelSpec` (MATH.md section 7).

    Parameters
    ----------
    data : Dataset
        Numeric columns and target. Columns used as weights, standard errors or integer-coded
        categoricals are taken out of the design.
    fixed : sequence of str
        Unpenalised covariates (besides the intercept).
    intercept : bool
        Include a column of ones in F (default).
    groups : sequence of Group, or mapping name -> columns, optional
        The penalised groups. Default: every remaining numeric column in one group
        ``"sigma"`` (one per column with ``ard=True``), plus one group per categorical.
    categorical : mapping name -> values or column name, optional
        Categorical columns (strings or integers per row; or the name of an integer-coded
        column of ``data``). Each becomes a random-intercept group named after it unless a
        Group refers to it. At most one is supported.
    weights : array or column name, optional
        omega_i > 0: observation i has noise variance delta^2 / omega_i.
    standard_errors : array or column name, optional
        Known s_i > 0 (meta-analysis): omega_i = 1 / s_i^2 and the noise scale is fixed at 1.
    noise, noise_prior
        A known noise scale, or a hyperprior to learn it with (both None: learned, no prior).
    ard : bool
        With ``groups=None``: one group per column instead of one shared group.
    prior : Hyperprior or str, optional
        Hyperprior of the default groups' scales.
    fixed_prior : float, optional
        s: the prior N(0, s^2) on the fixed effects, intercept included (``models.fixed_prior``).

    Raises
    ------
    DataError
        Bad weights or standard errors, an unknown or doubly used column, an empty group, a
        one-level categorical, no penalised group, or collinear fixed effects (named).
    """
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a Dataset, got {type(data).__name__}.")
    names = data.feature_names
    used: dict[str, str] = {}

    def claim(col: str, role: str) -> None:
        if col not in names:
            raise DataError(f"{role}: unknown column {col!r}; the columns are {list(names)}.")
        if col in used:
            raise DataError(
                f"column {col!r} is named twice (as {used[col]} and as {role}); each column can "
                "play one part in the model."
            )
        used[col] = role

    omega, se = _observation_weights(data, weights, standard_errors, claim)
    if se:
        if noise not in (None, 1.0) or noise_prior is not None:
            raise DataError(
                "with known standard errors the noise scale is fixed at 1; drop noise / "
                "noise_prior (or pass weights= to learn a common noise scale)."
            )
        noise = 1.0
    if noise is not None and not (np.isfinite(noise) and noise > 0):
        raise DataError(f"the noise scale must be a positive number, got {noise}.")
    factors = _factors(data, categorical or {}, claim)
    for c in fixed:
        claim(c, "a fixed effect")
    group_list = _groups(names, used, groups, factors, ard, prior, claim)
    fgroups = [g for g in group_list if g.factor is not None]
    if len(fgroups) > 1:
        raise DataError(
            f"{len(fgroups)} categorical groups ({[g.factor for g in fgroups]}); one random "
            "intercept is supported: fit the others as fixed effects or drop them."
        )
    unused = [c for c in names if c not in used]
    if unused:
        raise DataError(
            f"column(s) {unused} are in no group and not fixed effects; add them to a group or "
            "to fixed=..., or drop them with data.subset(features=...)."
        )
    spec = ModelSpec(
        data=data, fixed=tuple(fixed), intercept=bool(intercept), groups=tuple(group_list),
        factor=factors[fgroups[0].factor] if fgroups else None, obs_weights=omega,
        noise=None if noise is None else float(noise),
        noise_prior=None if noise_prior is None else parse_hyperprior(noise_prior),
        standard_errors=se, _column_index={c: j for j, c in enumerate(names)},
    )
    _check_fixed_rank(spec)
    if fixed_prior is not None:
        from hyperbayes.models.fixed_prior import with_fixed_prior  # (it imports this module)
        spec = with_fixed_prior(spec, fixed_prior)
    return spec


def _observation_weights(data, weights, standard_errors, claim):
    if weights is not None and standard_errors is not None:
        raise DataError("give weights or standard_errors, not both (omega_i = 1 / s_i^2).")
    given, label = (weights, "weights") if weights is not None else (standard_errors, "standard_errors")
    if given is None:
        return None, False
    if isinstance(given, str):
        claim(given, label)
        values, where = data.X[:, data.feature_names.index(given)], f"column {given!r}"
    else:
        try:
            values = np.asarray(given, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{label} must be numbers (one per row); None marks a missing value.") from None
        where = label
    if values.shape != (data.n,):
        raise DataError(f"{label} ({where}) has shape {values.shape}; it needs one value per row ({data.n}).")
    bad = ~np.isfinite(values)
    if bad.any():
        raise DataError(
            f"{label} ({where}) has {int(bad.sum())} missing or non-finite value(s) (first at row "
            f"{int(np.argmax(bad))}); every row needs a positive value: fill them in or drop the rows."
        )
    bad = values <= 0
    if bad.any():
        raise DataError(
            f"{label} ({where}) has {int(bad.sum())} non-positive value(s) (first at row "
            f"{int(np.argmax(bad))}: {values[np.argmax(bad)]}); they must be > 0."
        )
    omega = 1.0 / values**2 if label == "standard_errors" else np.array(values)
    omega.setflags(write=False)
    return omega, label == "standard_errors"


def _factors(data, categorical, claim) -> dict[str, Factor]:
    out = {}
    for name, values in categorical.items():
        if isinstance(values, str):
            claim(values, f"categorical {name!r}")
            values = data.X[:, data.feature_names.index(values)]
        values = np.asarray(values)
        if values.shape[:1] != (data.n,):
            raise DataError(
                f"categorical {name!r} has {values.shape[0] if values.ndim else 0} values for "
                f"{data.n} rows; give one level per row."
            )
        out[name] = Factor.from_values(name, values)
    return out


def _groups(names, used, groups, factors, ard, prior, claim) -> list[Group]:
    prior = None if prior is None else parse_hyperprior(prior)
    if groups is None:
        free = [c for c in names if c not in used]
        out = [Group(c, (c,), prior=prior) for c in free] if ard else (
            [Group("sigma", tuple(free), prior=prior)] if free else [])
    elif isinstance(groups, Mapping):
        out = [Group(k, tuple(v), prior=prior) for k, v in groups.items()]
    else:
        out = list(groups)
    seen_names: set[str] = set()
    for g in out:
        if not isinstance(g, Group):
            raise TypeError(f"groups must hold Group objects, got {type(g).__name__}.")
        if g.name in seen_names:
            raise DataError(f"two groups are named {g.name!r}; give each group its own name.")
        seen_names.add(g.name)
        for c in g.columns:
            claim(c, f"group {g.name!r}")
        if g.factor is not None and g.factor not in factors:
            raise DataError(
                f"group {g.name!r} refers to categorical {g.factor!r}, which was not given; pass "
                f"categorical={{{g.factor!r}: values}}."
            )
    referenced = {g.factor for g in out}
    for name in factors:
        if name not in referenced:
            if name in seen_names:
                raise DataError(f"a group is already named {name!r}; name the categorical's group.")
            out.append(Group(name, factor=name, prior=prior))
    if not out:
        raise DataError(
            "the model has no penalised group (every column is a fixed effect); give at least "
            "one group, or fit ordinary least squares."
        )
    return out


def _check_fixed_rank(spec: ModelSpec) -> None:
    """F (weighted) must have full column rank; name the columns of a collinear set."""
    if spec.n_fixed == 0:
        return
    F = spec.fixed_matrix()
    names = list(spec.fixed)
    if spec.intercept:
        F, names = np.column_stack([np.ones(spec.n), F]), ["intercept", *names]
    if spec.obs_weights is not None:
        F = F * np.sqrt(spec.obs_weights)[:, None]
    if spec.n < F.shape[1]:
        raise DataError(
            f"F has {F.shape[1]} columns ({names}) but there are only {spec.n} rows; use fewer "
            "fixed effects."
        )
    norms = np.linalg.norm(F, axis=0)
    zero = [n for n, v in zip(names, norms, strict=True) if v == 0]
    if zero:
        raise DataError(f"fixed effect column(s) {zero} are all zero; drop them.")
    R = np.linalg.qr(F / norms, mode="r")  # the singular values of F are those of R
    _, s, vt = np.linalg.svd(R)
    if s[-1] <= s[0] * 1e-10:
        involved = [n for n, v in zip(names, vt[-1], strict=True) if abs(v) > 1e-6]
        raise DataError(
            f"the fixed effects are collinear: {involved} are linearly dependent (F is not of "
            "full column rank), so their coefficients are not identified; drop one of them"
            + (" (a constant column duplicates the intercept)" if "intercept" in involved else "")
            + "."
        )
