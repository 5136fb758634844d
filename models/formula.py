"""Model formulas in the style of lme4 and Bambi that build a :class:`ModelSpec`.

    spec_from_formula("y ~ age + C(sex) + (1|site)", frame)

The left-hand side is the response column; plain terms (``age``, ``np.log(x)``, interactions,
``C(sex)`` or text columns) are unpenalised fixed effects, coded and named as formulae codes
them (reduced-rank treatment coding with an intercept: ``C(sex)[m]``); ``0 +`` or ``- 1``
removes the intercept; ``(1|g)`` is a random intercept over the levels of column ``g``; plain
terms named in ``penalise`` go into one penalised group ``"sigma"`` with a shared scale instead
of F (MATH.md section 7).

Why formulae
------------
The parser is the Bambi team's ``formulae``: it reads group-specific terms ``(1|g)`` natively
(``formulaic`` and patsy do not), and :func:`formulae.model_description` gives the terms
without touching the data. Only the response and the common (fixed and penalised) part are
built with formulae from the data. Formulae's group-specific design matrix (N x L indicators)
is never built, as N may be huge: the factor comes from the data column itself
(:meth:`Factor.from_values`, one integer per row). Everything then goes through
:func:`specify`, so its checks (collinear fixed effects, bad weights, ...) apply unchanged.

Only what a :class:`ModelSpec` can hold is accepted: random intercepts of one grouping factor.
Random slopes ``(x|g)``, two grouping factors and nested ``(1|a/b)`` or crossed ``(1|a:b)``
factors are refused with a :class:`DataError`, as are a transformed or text response, unknown
columns, missing values in a used column, and syntax errors (formulae's own exceptions never
leak). Functions in terms are formulae's transforms (``C``, ``I``, ``scale``, ``center``, ...)
and NumPy as ``np``; every variable must be a column of the frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
from formulae import model_description
from formulae.environment import Environment
from formulae.matrices import DesignMatrices
from formulae.terms.terms import GroupSpecificTerm, Intercept, Model
from formulae.terms.variable import Variable

from hyperbayes.models.data import DataError, Dataset
from hyperbayes.models.factors import Factor
from hyperbayes.models.hyperpriors import Hyperprior
from hyperbayes.models.specification import Group, ModelSpec, specify

__all__ = ["formula_columns", "spec_from_formula"]

#: Name of the penalised group of the terms listed in ``penalise``.
PENALISED_GROUP = "sigma"
_SUPPORTED = "only a random intercept (1|g) of one grouping factor g is supported"


@dataclasses.dataclass(frozen=True)
class _Parsed:
    """What the formula says, before any data: the pieces a ModelSpec needs."""

    model: Model  # formulae's description of the response and common terms (groups removed)
    response: str
    intercept: bool
    terms: tuple[str, ...]  # plain term names, in formula order (no intercept)
    group: str | None  # the grouping column of (1|g)
    columns: frozenset[str]  # data columns the formula uses


def formula_columns(formula: str) -> set[str]:
    """The data columns a formula uses (response, terms and grouping factor).

    Parameters
    ----------
    formula : str
        An lme4-style formula such as ``"y ~ age + C(sex) + (1|site)"``.

    Raises
    ------
    DataError
        The formula cannot be parsed.

    Examples
    --------
    >>> sorted(formula_columns("y ~ np.log(x) + C(sex) + (1|site)"))
    ['sex', 'site', 'x', 'y']
    """
    return set(_variable_names(_describe(formula)))


def spec_from_formula(
    formula: str,
    frame: pd.DataFrame,
    *,
    standard_errors: str | None = None,
    weights: str | None = None,
    penalise: Sequence[str] = (),
    noise: float | None = None,
    noise_prior: Hyperprior | str | None = None,
    prior: Hyperprior | str | None = None,
    fixed_prior: float | None = None,
) -> ModelSpec:
    """Build a :class:`ModelSpec` from a formula and a data frame (MATH.md section 7).

    Parameters
    ----------
    formula : str
        ``"response ~ terms"``: plain terms are fixed effects (the intercept unless ``0 +``),
        ``(1|g)`` a random intercept over the levels of column ``g`` (text or integers).
    frame : pandas.DataFrame
        The data, numeric and text columns; only the columns the model uses are read.
    standard_errors : str, optional
        Column of known standard errors s_i (meta-analysis): omega_i = 1 / s_i^2, noise 1.
    weights : str, optional
        Column of observation weights omega_i (noise variance delta^2 / omega_i).
    penalise : sequence of str
        Plain terms (by term name, e.g. ``"x1"``, ``"C(sex)"``, ``"x1:x2"``; ``"x*z"`` expands)
        put in one penalised group ``"sigma"`` with a shared scale instead of F.
        ``penalise=`` all plain terms of ``y ~ x1 + x2`` is ``specify(data)``.
    noise : float, optional
        A known noise scale delta (default: learned, or 1 with standard errors).
    noise_prior : Hyperprior or str, optional
        Hyperprior of a learned noise scale (for the Bayesian methods).
    prior : Hyperprior or str, optional
        Hyperprior of every learned group scale.
    fixed_prior : float, optional
        s: the prior N(0, s^2) on the fixed effects, intercept included (as in :func:`specify`).

    Returns
    -------
    ModelSpec
        Built by :func:`specify`; fixed effects are named as formulae names the design
        columns (``"age"``, ``"C(sex)[m]"``), the random-intercept group after its column.

    Raises
    ------
    DataError
        A syntax error, an unknown column, an unsupported group term (random slope, two or
        nested grouping factors), a transformed or text response, missing values in a used
        column, a grouping factor with one level, a standard-error or weights column that is
        also a term, no penalised part; and everything :func:`specify` checks.

    Examples
    --------
    >>> import pandas as pd
    >>> from hyperbayes.models.datasets import eight_schools_table
    >>> spec = spec_from_formula("y ~ 1 + (1|school)", pd.DataFrame(eight_schools_table()),
    ...                          standard_errors="s")
    >>> spec.factor.levels[:3], spec.noise
    (('A', 'B', 'C'), 1.0)
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas.DataFrame, got {type(frame).__name__}.")
    parsed = _parse(formula)
    _check_columns(parsed, frame, standard_errors, weights)
    penalised = _penalised_terms(parsed, penalise)
    if parsed.group is None and not penalised:
        raise DataError(
            f"the model {formula!r} has no penalised part; add a random intercept (1|g) or "
            "name terms to shrink with penalise=[...]."
        )
    extra = [c for c in (standard_errors, weights) if c is not None]
    _check_missing(frame, [parsed.response, *sorted(parsed.columns - {parsed.response}), *extra])
    y = _response(frame, parsed.response)
    fixed, shrunk, design = _common_design(parsed, frame, penalised)
    names, cols = [*fixed, *shrunk], [design]
    for c in extra:
        if c in names:
            raise DataError(
                f"column {c!r} collides with a design column of the same name; rename it."
            )
        if not pd.api.types.is_numeric_dtype(frame[c]):
            raise DataError(f"column {c!r} is not numeric ({frame[c].dtype}); weights and "
                            "standard errors must be positive numbers.")
        names.append(c)
        cols.append(frame[c].to_numpy(dtype=np.float64)[:, None])
    factor = None
    if parsed.group is not None:
        factor = _factor(frame, parsed.group)
        codes_name = _free_name(parsed.group, names)
        names.append(codes_name)
        cols.append(factor.codes.astype(np.float64)[:, None])
    data = Dataset.from_arrays(np.hstack(cols), y, feature_names=names,
                               target_name=parsed.response)
    spec = specify(
        data, fixed=fixed, intercept=parsed.intercept,
        groups=[Group(PENALISED_GROUP, shrunk, prior=prior)] if shrunk else [],
        categorical={parsed.group: codes_name} if factor is not None else None,
        weights=weights, standard_errors=standard_errors, noise=noise,
        noise_prior=noise_prior, prior=prior, fixed_prior=fixed_prior,
    )
    if factor is None:
        return spec
    # specify encoded the codes column 0..L-1 again (same codes); keep the levels' own names.
    return dataclasses.replace(spec, factor=factor)


def _describe(formula: str) -> Model:
    if not isinstance(formula, str):
        raise TypeError(f"formula must be a string, got {type(formula).__name__}.")
    try:
        model = model_description(formula)
    except Exception as err:  # formulae's ScanError/ParseError/ResolverError and plain errors
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(
            f"the formula {formula!r} could not be parsed ({reason}); write it as "
            "'y ~ x1 + x2 + (1|g)'."
        ) from None
    if _has_bare_bar(formula):
        raise DataError(
            f"the formula {formula!r} has a '|' outside parentheses; write a random intercept "
            "in parentheses, as in 'y ~ x + (1|g)'."
        )
    return model


def _has_bare_bar(formula: str) -> bool:
    """Whether '|' occurs at parenthesis depth 0 (formulae then silently drops the group)."""
    depth, quote = 0, None
    for ch in formula:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            return True
    return False


def _variable_names(model: Model) -> list[str]:
    # Literals (the 2 of np.power(x, 2)) show up as '' or numbers among formulae's var_names.
    return sorted(v for v in model.var_names if isinstance(v, str) and v)


def _parse(formula: str) -> _Parsed:
    model = _describe(formula)
    response = _response_name(formula, model)
    group = _group_column(formula, model.group_terms)
    common = [t for t in model.common_terms if not isinstance(t, Intercept)]
    for t in [*common, *model.group_terms]:
        if response in t.var_names:
            raise DataError(
                f"the response {response!r} is also used in the term {t.name!r}; drop the term."
            )
    return _Parsed(
        model=Model(*model.common_terms), response=response,
        intercept=any(isinstance(t, Intercept) for t in model.common_terms),
        terms=tuple(t.name for t in common), group=group,
        columns=frozenset(_variable_names(model)),
    )


def _response_name(formula: str, model: Model) -> str:
    if model.response is None:
        raise DataError(
            f"the formula {formula!r} has no response; write it as 'y ~ terms' with y a column."
        )
    (component,) = model.response.term.components
    if not isinstance(component, Variable) or component.reference is not None:
        raise DataError(
            f"the response {model.response.term.name!r} is transformed; transformations of the "
            "response are not supported: add the transformed column to the frame and use its name."
        )
    return component.name


def _group_column(formula: str, terms: list[GroupSpecificTerm]) -> str | None:
    for t in terms:
        if not isinstance(t.expr, Intercept):
            raise DataError(
                f"the random slope ({t.name}) in {formula!r} is not supported ({_SUPPORTED}); "
                f"use ({'1|' + t.factor.name}) and fit {t.expr.name!r} as a plain term."
            )
    for t in terms:
        (only, *more) = t.factor.components
        if more or not isinstance(only, Variable):
            raise DataError(
                f"the grouping factor of ({t.name}) is not a plain column (nested (1|a/b) or "
                f"crossed (1|a:b) factors are not supported; {_SUPPORTED}); use one column."
            )
    if len(terms) > 1:
        raise DataError(
            f"{len(terms)} grouping factors in {formula!r} ({', '.join(t.name for t in terms)}); "
            f"{_SUPPORTED}: keep one and fit the others as plain terms."
        )
    return terms[0].factor.components[0].name if terms else None


def _check_columns(parsed: _Parsed, frame: pd.DataFrame, se: str | None, weights: str | None):
    known = set(frame.columns)
    wanted = sorted(parsed.columns) + [c for c in (se, weights) if c is not None]
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise DataError(
            f"unknown column(s) {unknown}; the columns of the frame are {list(frame.columns)}."
        )
    for label, col in (("standard_errors", se), ("weights", weights)):
        if col is not None and col in parsed.columns:
            raise DataError(
                f"the {label} column {col!r} is also used in the formula; a column plays one "
                f"part: drop it from the formula or give another {label} column."
            )


def _penalised_terms(parsed: _Parsed, penalise: Sequence[str]) -> set[str]:
    if isinstance(penalise, str):
        penalise = [penalise]
    out: set[str] = set()
    for entry in penalise:
        names = _term_names(entry)
        bad = [n for n in names if n not in parsed.terms]
        if not names or bad:
            raise DataError(
                f"penalise names {entry!r}, which is not a plain term of the formula; the plain "
                f"terms are {list(parsed.terms)} (the intercept and (1|g) cannot be penalised)."
            )
        out.update(names)
    return out


def _term_names(entry: str) -> list[str]:
    """The term names a penalise entry stands for, spelled as formulae spells them."""
    try:
        model = model_description(f"0 + {entry}")
    except Exception:  # not a formula: reported as an unknown term by the caller
        return [str(entry)]
    return [t.name for t in model.terms if not isinstance(t, Intercept)]


def _check_missing(frame: pd.DataFrame, columns: list[str]) -> None:
    for c in columns:
        values = frame[c]
        bad = values.isna().to_numpy()
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            bad = bad | ~np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
        if bad.any():
            row = int(np.argmax(bad))
            label = frame.index[row]
            where = f"row {row}" + ("" if label == row else f", index {label!r}")
            raise DataError(
                f"column {c!r} has {int(bad.sum())} missing or non-finite value(s) (first at "
                f"{where}); drop or fill those rows before fitting."
            )


def _response(frame: pd.DataFrame, name: str) -> np.ndarray:
    values = frame[name]
    if not pd.api.types.is_numeric_dtype(values):
        raise DataError(
            f"the response {name!r} is text ({values.dtype}); the model needs a numeric "
            "response: convert it to numbers."
        )
    return values.to_numpy(dtype=np.float64)


def _common_design(parsed: _Parsed, frame: pd.DataFrame, penalised: set[str]):
    """Fixed and penalised column names and the design (N x P'+D) with formulae's coding."""
    if not parsed.model.common_terms:
        return [], [], np.empty((len(frame), 0))
    used = sorted(set(_variable_names(parsed.model)))
    env = Environment([{"np": np, "numpy": np}])
    try:
        common = DesignMatrices(parsed.model, frame[used], env).common
    except Exception as err:  # an unknown function or a transform that fails on the data
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(
            f"the terms {list(parsed.terms)} could not be evaluated on the frame "
            f"({type(err).__name__}: {reason}); functions are formulae's (C, I, scale, ...) "
            "and NumPy as np."
        ) from None
    fixed, shrunk, fixed_idx, shrunk_idx = [], [], [], []
    for name, term in common.terms.items():
        if isinstance(term, Intercept):
            continue
        if term.kind == "offset":
            raise DataError(f"offset terms ({name}) are not supported; subtract it from y first.")
        cols = range(common.slices[name].start, common.slices[name].stop)
        labels, idx = (shrunk, shrunk_idx) if name in penalised else (fixed, fixed_idx)
        labels.extend(term.labels)
        idx.extend(cols)
    design = np.asarray(common.design_matrix, dtype=np.float64)
    return fixed, shrunk, design[:, fixed_idx + shrunk_idx]


def _factor(frame: pd.DataFrame, column: str) -> Factor:
    values = frame[column]
    if values.nunique() < 2:
        raise DataError(
            f"the grouping factor {column!r} has one level ({values.iloc[0]!r}); a random "
            f"intercept needs at least two levels: drop the (1|{column}) term."
        )
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    return Factor.from_values(column, values.to_numpy())


def _free_name(name: str, taken: list[str]) -> str:
    while name in taken:
        name = f"{name}[codes]"
    return name
