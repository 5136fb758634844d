"""``fit`` and ``compare`` with the command line's options, for Python users.

The CLI is a thin layer over these two functions: the same keyword options (hyperprior specs
as strings or :class:`~hyperbayes.models.hyperpriors.Hyperprior` objects, priors scaled to the
data when not given, the intercept handled by centring) give the same numbers from a notebook
as from ``hyperbayes fit`` and ``hyperbayes compare``.

A *family run* (MATH.md section 7) is one on a :class:`~hyperbayes.models.specification.ModelSpec`:
the data are one when ``data`` is already a ModelSpec or when any model option is given (a
``formula`` such as ``"y ~ age + (1|site)"``, ``standard_errors``, ``weights``, ``penalise``,
``fixed``, ``categorical``, or a ``convention``). Then the intercept is a fixed effect (no
centring), every learned scale without a prior gets the data-scaled default
(:func:`~hyperbayes.models.family_priors.with_default_priors`), and the methods are the family
versions (``FAMILY_METHODS``). The rows must be in memory (a DataFrame, a Dataset or one CSV
file); streamed sources are refused with an :class:`OptionError`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.inference.workflow.compare import Comparison, run_comparison
from hyperbayes.inference.workflow.data_sources import dataset_from_frame, read_data, read_frame
from hyperbayes.inference.workflow.registry import get_runner
from hyperbayes.models.data import Centering, DataError, Dataset
from hyperbayes.models.family_priors import default_group_prior, with_default_priors
from hyperbayes.models.hyperpriors import (
    Hyperprior,
    OptionError,
    check_scales,
    default_hyperpriors,
    parse_hyperprior,
)
from hyperbayes.models.specification import ModelSpec, specify
from hyperbayes.models.streaming import FOLDS as DEFAULT_FOLDS  # = cross_validation's default
from hyperbayes.models.streaming import StreamedData

__all__ = ["PreparedRun", "compare", "fit", "prepare_run"]

HyperpriorLike = str | Hyperprior


@dataclass(frozen=True)
class PreparedRun:
    """The data as the methods see them (centred when there is an intercept; a ModelSpec for a
    family run, whose intercept is a fixed effect) and the options."""

    data: Dataset | StreamedData | ModelSpec
    centering: Centering | None
    options: RunOptions

    @property
    def family(self) -> bool:
        """Whether this is a family run (the data are a ModelSpec)."""
        return isinstance(self.data, ModelSpec)

    def fit(self, method: str) -> MethodSummary:
        """Run ``method`` (a name of ``hyperbayes.METHODS``); the summary has the intercept."""
        runner = get_runner(method, family=True) if self.family else get_runner(method)
        start = time.perf_counter()
        summary = runner(self.data, self.options).with_centering(self.centering)
        if summary.wall_time is None:
            summary = replace(summary, wall_time=time.perf_counter() - start)
        return summary

    def compare(self, methods: list[str] | tuple[str, ...] | None = None) -> Comparison:
        """Run ``methods`` (default all) side by side; failures are rows, not exceptions."""
        return run_comparison(
            self.data,
            self.options,
            methods=methods,
            centering=self.centering,
            progress=self.options.progress,
        )


def prepare_run(
    data: Dataset | ModelSpec | Any,
    *,
    target: str | None = None,
    intercept: bool = True,
    hyperprior: HyperpriorLike | None = None,
    noise: float | None = None,
    noise_prior: HyperpriorLike | None = None,
    ard: bool = False,
    seed: int = 0,
    draws: int | None = None,
    chains: int | None = None,
    progress: bool = False,
    chunk_rows: int | None = None,
    folds: int | None = None,
    dask: bool = False,
    scheduler: str | None = None,
    formula: str | None = None,
    standard_errors: str | None = None,
    weights: str | None = None,
    penalise: Sequence[str] | None = None,
    convention: str | None = None,
    fixed: Sequence[str] | None = None,
    categorical: Sequence[str] | Mapping[str, Any] | None = None,
) -> PreparedRun:
    """Validate and centre the data and build the :class:`RunOptions`, as the CLI does.

    Parameters
    ----------
    data : Dataset, ModelSpec, pandas.DataFrame, str or Path
        The data; a DataFrame or a CSV path needs ``target`` (or a ``formula``).
    target : str, optional
        The column to predict, for a DataFrame or CSV file.
    intercept : bool, default True
        Fit an intercept (by centring X and y; in a family run, as a fixed effect); each result
        reports it. With a formula write ``0 +`` in it instead.
    hyperprior, noise_prior : str or Hyperprior, optional
        Priors on sigma (every learned group's scale in a family run) and on the noise scale
        (e.g. ``"halfnormal:1"``); default: half-normal priors scaled to the data (sigma:
        sd(y) / rms sd(x_j), a random intercept's scale sd(y); noise: sd(y)).
    noise : float, optional
        A known noise scale; without it the noise is learned (with ``noise_prior``).
    ard, seed, draws, chains, progress
        As for :class:`RunOptions` (``ard`` in a family run without a formula: one group per
        penalised column).
    chunk_rows : int, optional
        Rows per chunk when a file is streamed (Parquet always; CSV above
        ``data_sources.STREAM_CSV_BYTES`` or whenever this is given).
    folds : int, optional
        Hash the rows into this many folds during the streamed pass (K-fold CV needs them;
        :func:`fit` and :func:`compare` ask for them when ``cv`` runs).
    dask, scheduler
        Read a path on a Dask LocalCluster of this machine (``dask=True``) or on the cluster
        at ``scheduler``; a Dask collection as ``data`` is reduced on the active scheduler.
    formula : str, optional
        A model formula, e.g. ``"y ~ age + C(sex) + (1|site)"``
        (:func:`hyperbayes.models.formula.spec_from_formula`): plain terms are fixed effects,
        ``(1|g)`` a random intercept over the levels of column g (text or integers).
    standard_errors, weights : str, optional
        The column of known standard errors s_i (meta-analysis: omega_i = 1 / s_i^2, the noise
        scale fixed at 1) or of observation weights omega_i (the noise scale learned).
    penalise : sequence of str, optional
        With a formula, the plain terms to put in one penalised group ``"sigma"`` instead of
        fixing them; without one, the columns of that group (the others must be ``fixed``).
    convention : {"reml", "ml"}, optional
        Empirical Bayes in a family run: restricted (the default) or profile likelihood. Either
        makes it a family run: today's centred shared-sigma EB maximises the likelihood of the
        centred data over N rows, which is the profile (ML) answer, not REML's N - 1.
    fixed : sequence of str, optional
        Without a formula: the unpenalised covariates besides the intercept.
    categorical : sequence of column names, or mapping name -> values, optional
        Without a formula: the random intercept's column (text or integer codes).

    Raises
    ------
    DataError
        The data cannot be used as given (e.g. a constant target with an intercept, values
        float64 cannot work with, an unknown column, a bad formula, a text column outside a
        formula).
    OptionError
        A bad option (a malformed spec, ``noise`` together with ``noise_prior``, a negative
        seed, a noise or prior scale too far from the data's scale for float64; see
        :func:`~hyperbayes.models.hyperpriors.check_scales`; a model option on streamed data).
        A ``ValueError``.
    """
    model = {"formula": formula, "standard_errors": standard_errors, "weights": weights,
             "penalise": penalise, "fixed": fixed, "categorical": categorical}
    if isinstance(data, ModelSpec) or any(v is not None for v in [*model.values(), convention]):
        if noise is not None and noise_prior is not None:
            raise OptionError("noise_prior goes with a learned noise; drop it or drop noise.")
        if chunk_rows is not None or dask or scheduler:
            raise OptionError("a family run (a formula or model option) reads its rows into memory; "
                              "drop chunk_rows / dask / scheduler.")
        spec = _family_spec(data, target=target, intercept=intercept, noise=noise, ard=ard,
                            noise_prior=noise_prior, model=model)
        spec = with_default_priors(spec, group_prior=hyperprior, noise_prior=noise_prior)
        options = _family_options(spec, hyperprior, seed=seed, draws=draws, chains=chains,
                                  progress=progress, convention=convention or "reml")
        return PreparedRun(spec, None, options)
    read = {"chunk_rows": chunk_rows, "folds": folds, "seed": seed, "dask": dask,
            "scheduler": scheduler}
    dataset = _as_dataset(data, target, read)
    centering = None
    if intercept:
        dataset, centering = dataset.center()
    if noise is not None and noise_prior is not None:
        raise OptionError("noise_prior goes with a learned noise; drop it or drop noise.")
    default_sigma, default_noise = default_hyperpriors(dataset)
    options = RunOptions(
        hyperprior=parse_hyperprior(hyperprior) if hyperprior is not None else default_sigma,
        noise=noise,
        noise_prior=None
        if noise is not None
        else (parse_hyperprior(noise_prior) if noise_prior is not None else default_noise),
        seed=seed,
        draws=draws,
        chains=chains,
        ard=ard,
        progress=progress,
    )
    check_scales(
        dataset, hyperprior=options.hyperprior, noise=options.noise, noise_prior=options.noise_prior
    )
    return PreparedRun(dataset, centering, options)


def fit(method: str, data: Dataset | Any, **options: Any) -> MethodSummary:
    """Run one method, as ``hyperbayes fit METHOD`` does.

    Parameters
    ----------
    method : str
        One of ``hyperbayes.METHODS``: ``exact``, ``eb``, ``joint-map``, ``nuts``, ``smc``,
        ``cv``.
    data : Dataset, ModelSpec, pandas.DataFrame, str or Path
        The data (see :func:`prepare_run`).
    **options
        The keyword options of :func:`prepare_run` (``target``, ``intercept``, ``hyperprior``,
        ``noise``, ``noise_prior``, ``ard``, ``seed``, ``draws``, ``chains``, ``progress``;
        for a family run ``formula``, ``standard_errors``, ``weights``, ``penalise``,
        ``convention``, ``fixed``, ``categorical``).

    Returns
    -------
    MethodSummary
        The method's summary (its JSON form is ``hyperbayes fit --json``), with the intercept.

    Examples
    --------
    >>> import hyperbayes as hb
    >>> hb.fit("eb", hb.load_diabetes()).sigma > 0
    True
    >>> round(hb.fit("eb", hb.load_eight_schools()).fixed_effects["Intercept"][0], 3)
    7.686
    """
    get_runner(method)  # an unknown method is reported before the data are read
    if method == "cv":
        options.setdefault("folds", DEFAULT_FOLDS)  # hashed in the pass, if the data stream
    return prepare_run(data, **options).fit(method)


def compare(
    data: Dataset | Any, *, methods: list[str] | tuple[str, ...] | None = None, **options: Any
) -> Comparison:
    """Run every method (or ``methods``) on the same data, as ``hyperbayes compare`` does.

    Parameters
    ----------
    data : Dataset, ModelSpec, pandas.DataFrame, str or Path
        The data (see :func:`prepare_run`).
    methods : sequence of str, optional
        A subset of ``hyperbayes.METHODS``, in the order to run them; default all.
    **options
        The keyword options of :func:`prepare_run` (a ``formula`` or another model option
        makes it a family run: one column per group scale).

    Returns
    -------
    Comparison
        The table (shown as HTML in Jupyter; ``to_pandas()`` for a DataFrame) and each method's
        summary. A method that fails is a row marked ``failed``; the others complete.
    """
    if methods is None or "cv" in methods:
        options.setdefault("folds", DEFAULT_FOLDS)  # hashed in the pass, if the data stream
    return prepare_run(data, **options).compare(methods)


def _as_dataset(data: Any, target: str | None, read: dict[str, Any]) -> Dataset | StreamedData:
    if isinstance(data, StreamedData):
        return data
    if isinstance(data, str | Path) or (hasattr(data, "dask") and hasattr(data, "to_delayed")):
        if target is None:
            raise OptionError(f"reading {data} needs target=COLUMN naming the column to predict.")
        return read_data(data, target=target, **read)
    if isinstance(data, Dataset):
        if target is not None and target != data.target_name:
            raise OptionError(
                f"target={target!r} does not name this Dataset's target {data.target_name!r}; "
                "drop target (a Dataset knows its target)."
            )
        return data
    if _is_frame(data):
        if target is None:
            raise OptionError("a DataFrame needs target=COLUMN naming the column to predict.")
        return dataset_from_frame(data, target=target)
    raise TypeError(
        f"data must be a Dataset, a pandas DataFrame or a CSV path, not {type(data).__name__}."
    )


def _is_frame(data: Any) -> bool:
    return hasattr(data, "columns") and hasattr(data, "to_numpy")  # a pandas DataFrame


def _family_spec(data: Any, *, target, intercept, noise, noise_prior, ard, model) -> ModelSpec:
    """The ModelSpec of a family run from a ModelSpec, a DataFrame, a Dataset or a CSV path."""
    given = [k for k, v in model.items() if v is not None]
    if isinstance(data, ModelSpec):
        extra = given + ["noise"] * (noise is not None) + ["ard"] * ard + ["intercept"] * (not intercept)
        if extra or (target is not None and target != data.data.target_name):
            raise OptionError(f"a ModelSpec already says what {extra or ['target']} would; drop "
                              "them or pass the data instead of the spec.")
        return data
    if isinstance(data, StreamedData) or not (isinstance(data, str | Path | Dataset) or _is_frame(data)):
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
                             ard=ard, model=model)
    return _columns_spec(data, target=target, intercept=intercept, noise=noise, ard=ard, model=model)


def _columns_spec(data, *, target, intercept, noise, ard, model) -> ModelSpec:
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
                   standard_errors=model["standard_errors"], noise=noise, ard=ard, groups=groups)


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


def _formula_spec(data, formula: str, *, target, intercept, noise, ard, model) -> ModelSpec:
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
                             noise=noise)
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
