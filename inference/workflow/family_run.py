"""The model specification and run options of a *family run* (MATH.md section 7).

:func:`~hyperbayes.inference.workflow.api.prepare_run` makes a family run when ``data`` is
already a :class:`~hyperbayes.models.specification.ModelSpec` or when any model option is given
(a ``formula``, ``standard_errors``, ``weights``, ``penalise``, ``fixed``, ``categorical``, a
``convention`` or a ``fixed_prior``); :func:`family_run` turns those options into the ModelSpec (by
:func:`~hyperbayes.models.formula.spec_from_formula` for a formula, by
:func:`~hyperbayes.models.specification.specify` on the columns otherwise), fills the data-scaled
default prior of every learned scale that has none (after ``fixed_prior``, a Normal prior on the
fixed effects, :func:`~hyperbayes.models.fixed_prior.with_fixed_prior`)
(:func:`~hyperbayes.models.family_priors.with_default_priors`) and builds the
:class:`~hyperbayes.inference.methods.results.RunOptions`. The rows must be in memory (a
DataFrame, a Dataset or one CSV file).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hyperbayes.inference.methods.results import RunOptions
from hyperbayes.inference.workflow.data_sources import dataset_from_frame, read_frame
from hyperbayes.models.data import DataError, Dataset
from hyperbayes.models.family_priors import default_group_prior, with_default_priors
from hyperbayes.models.fixed_prior import with_fixed_prior
from hyperbayes.models.hyperpriors import Hyperprior, OptionError, parse_hyperprior
from hyperbayes.models.specification import ModelSpec, specify
from hyperbayes.models.streaming import StreamedData

__all__ = ["family_run", "is_frame"]


def family_run(
    data: Any,
    *,
    model: Mapping[str, Any],
    target: str | None,
    intercept: bool,
    hyperprior: str | Hyperprior | None,
    noise: float | None,
    noise_prior: str | Hyperprior | None,
    ard: bool,
    seed: int,
    draws: int | None,
    chains: int | None,
    progress: bool,
    convention: str,
    fixed_prior: float | None = None,
) -> tuple[ModelSpec, RunOptions]:
    """The ModelSpec (with default priors filled in) and RunOptions of a family run.

    Parameters
    ----------
    data : ModelSpec, Dataset, pandas.DataFrame, str or Path
        A ModelSpec is used as it is (no model option may then be given); the others are read
        (a CSV path: only the columns the options name, with a formula).
    model : mapping
        Each model option (``formula``, ``standard_errors``, ``weights``, ``penalise``,
        ``fixed``, ``categorical``) to its value, None where not given; as for
        :func:`~hyperbayes.inference.workflow.api.prepare_run`.
    target, intercept, hyperprior, noise, noise_prior, ard, seed, draws, chains, progress
        As for :func:`~hyperbayes.inference.workflow.api.prepare_run`.
    convention : {"reml", "ml"}
        Empirical Bayes's likelihood (in the RunOptions).
    fixed_prior : float, optional
        s: the prior N(0, s^2) on the fixed effects, intercept included (a ModelSpec given as
        ``data`` gets it too), so that the evidence is a true p(y).

    Returns
    -------
    spec : ModelSpec
    options : RunOptions
        ``hyperprior`` shows the one given, else the first learned group's; the methods read
        the spec's priors group by group.

    Raises
    ------
    DataError
        A column named by an option is missing, a bad formula, unusable values.
    OptionError
        Options that contradict each other or the spec, or data that are not in memory, or a
        ``fixed_prior`` that is not a positive number.
    """
    spec = _family_spec(data, target=target, intercept=intercept, noise=noise, ard=ard,
                        noise_prior=noise_prior, model=model, fixed_prior=fixed_prior)
    spec = with_default_priors(spec, group_prior=hyperprior, noise_prior=noise_prior)
    options = _family_options(spec, hyperprior, seed=seed, draws=draws, chains=chains,
                              progress=progress, convention=convention)
    return spec, options


def is_frame(data: Any) -> bool:
    """Whether ``data`` is a pandas DataFrame (duck-typed: pandas is not imported)."""
    return hasattr(data, "columns") and hasattr(data, "to_numpy")


def _family_spec(data: Any, *, target, intercept, noise, noise_prior, ard, model,
                 fixed_prior) -> ModelSpec:
    """The ModelSpec of a family run from a ModelSpec, a DataFrame, a Dataset or a CSV path."""
    given = [k for k, v in model.items() if v is not None]
    if isinstance(data, ModelSpec):
        extra = given + ["noise"] * (noise is not None) + ["ard"] * ard + ["intercept"] * (not intercept)
        if extra or (target is not None and target != data.data.target_name):
            raise OptionError(f"a ModelSpec already says what {extra or ['target']} would; drop "
                              "them or pass the data instead of the spec.")
        return data if fixed_prior is None else with_fixed_prior(data, fixed_prior)
    if isinstance(data, StreamedData) or not (isinstance(data, str | Path | Dataset) or is_frame(data)):
        raise OptionError(
            f"a formula or model option ({', '.join(given) or 'convention'}) needs the rows in "
            f"memory (a DataFrame, a Dataset or one CSV file), not a {type(data).__name__}."
        )
    if _fixes_noise_clash(model["standard_errors"], noise, noise_prior):
        raise OptionError("standard_errors fix the noise scale at 1 (omega_i = 1 / s_i^2); drop "
                          "noise / noise_prior, or give weights= to learn a common noise scale.")
    formula = model["formula"]
    if formula is not None:
        return _formula_spec(data, formula, target=target, intercept=intercept, noise=noise,
                             ard=ard, model=model, fixed_prior=fixed_prior)
    return _columns_spec(data, target=target, intercept=intercept, noise=noise, ard=ard, model=model,
                         fixed_prior=fixed_prior)


def _columns_spec(data, *, target, intercept, noise, ard, model, fixed_prior) -> ModelSpec:
    """Without a formula: ``specify()`` on the numeric columns, the random intercept's column
    (text allowed) from ``categorical``, every other column penalised unless ``fixed``."""
    if target is None and not isinstance(data, Dataset):
        raise OptionError("without a formula, name the column to predict with target=COLUMN "
                          "(--target), or give a formula such as 'y ~ x + (1|g)' (--formula).")
    categorical = model["categorical"] or ()
    if not isinstance(categorical, Mapping):
        categorical = {c: c for c in categorical}
    columns = [v for v in categorical.values() if isinstance(v, str)]  # the others are values
    levels = {}
    if isinstance(data, Dataset):
        if target is not None and target != data.target_name:
            raise OptionError(f"target={target!r} is not this Dataset's target "
                              f"{data.target_name!r}; drop target.")
        dataset = data
    else:
        roles = dict.fromkeys(columns, "categorical") | _roles(model) | {target: "target (--target)"}
        source = str(data) if isinstance(data, str | Path) else "the DataFrame"
        frame = read_frame(data, needed=roles) if isinstance(data, str | Path) else data
        missing = [c for c in roles if c not in [str(k) for k in frame.columns]]
        if missing:
            raise DataError(f"column {missing[0]!r} named by {roles[missing[0]]} is not in "
                            f"{source}; its columns are {[str(c) for c in frame.columns]}.")
        levels = {c: frame[c].to_numpy() for c in columns}
        dataset = dataset_from_frame(frame.drop(columns=columns), target=target, source=source)
    categorical = {k: levels.get(v, v) if isinstance(v, str) else v for k, v in categorical.items()}
    penalise = model["penalise"]
    groups = ({c: (c,) for c in penalise} if ard else {"sigma": tuple(penalise)}) if penalise else None
    return specify(dataset, fixed=tuple(model["fixed"] or ()), intercept=intercept,
                   categorical=categorical or None, weights=model["weights"],
                   standard_errors=model["standard_errors"], noise=noise, ard=ard, groups=groups,
                   fixed_prior=fixed_prior)


def _fixes_noise_clash(standard_errors, noise, noise_prior) -> bool:
    return standard_errors is not None and (noise_prior is not None or noise not in (None, 1.0))


def _roles(model, *, terms: bool = True) -> dict[str, str]:
    """The columns named by the options, with the option that names them (for messages);
    ``terms=False``: not ``fixed``/``penalise`` (with a formula those name terms, not columns)."""
    out = {}
    for key, flag in (("standard_errors", "--se"), ("weights", "--weights")):
        if model[key] is not None:
            out[model[key]] = f"{key} ({flag})"
    for key, flag in (("fixed", "fixed="), ("penalise", "--penalise")) if terms else ():
        out |= {c: f"{key} ({flag})" for c in model[key] or ()}
    return out


def _formula_spec(data, formula: str, *, target, intercept, noise, ard, model,
                  fixed_prior) -> ModelSpec:
    from hyperbayes.models.formula import formula_columns, spec_from_formula

    clash = [k for k in ("fixed", "categorical") if model[k] is not None] + ["ard"] * ard
    if clash:
        raise OptionError(f"the formula says which terms are fixed and which are groups; drop "
                          f"{', '.join(clash)} (a random intercept is (1|g) in the formula).")
    if not intercept:
        raise OptionError("with a formula the intercept is the formula's: write '0 +' in it "
                          "(e.g. 'y ~ 0 + x + (1|g)') instead of intercept=False (--no-intercept).")
    if isinstance(data, Dataset):
        import pandas as pd

        frame = pd.DataFrame(data.X, columns=list(data.feature_names))
        frame[data.target_name] = data.y
    elif isinstance(data, str | Path):
        columns = formula_columns(formula)  # a bad formula is reported before the file is read
        frame = read_frame(data, needed={c: "the formula" for c in columns} | _roles(model, terms=False),
                           only_needed=True)
    else:
        frame = data
    spec = spec_from_formula(formula, frame, standard_errors=model["standard_errors"],
                             weights=model["weights"], penalise=tuple(model["penalise"] or ()),
                             noise=noise, fixed_prior=fixed_prior)
    if target is not None and target != spec.data.target_name:
        raise OptionError(f"the target {target!r} (--target) is not the formula's response "
                          f"{spec.data.target_name!r}; drop --target (the formula names it).")
    return spec


def _family_options(spec: ModelSpec, hyperprior, **fields: Any) -> RunOptions:
    """RunOptions of a family run: the priors live in the spec; ``hyperprior`` shows the one
    given, else the first learned group's (the methods read the spec's, group by group)."""
    learned = [spec.groups[k].prior for k in spec.learned_groups]
    shown = (parse_hyperprior(hyperprior) if hyperprior is not None
             else learned[0] if learned else default_group_prior(spec, 0))
    return RunOptions(hyperprior=shown, noise=spec.noise,
                      noise_prior=spec.noise_prior if spec.noise is None else None, **fields)
