"""``fit`` and ``compare`` with the command line's options, for Python users.

The CLI is a thin layer over these two functions: the same keyword options (hyperprior specs
as strings or :class:`~hyperbayes.models.hyperpriors.Hyperprior` objects, priors scaled to the
data when not given, the intercept handled by centring) give the same numbers from a notebook
as from ``hyperbayes fit`` and ``hyperbayes compare``.

A *family run* (MATH.md section 7) is one on a :class:`~hyperbayes.models.specification.ModelSpec`:
the data are one when ``data`` is already a ModelSpec or when any model option is given (a
``formula`` such as ``"y ~ age + (1|site)"``, ``standard_errors``, ``weights``, ``penalise``,
``fixed``, ``categorical``, a ``convention`` or a ``fixed_prior``). Then the intercept is a fixed effect (no
centring), every learned scale without a prior gets the data-scaled default
(:func:`~hyperbayes.models.family_priors.with_default_priors`), and the methods are the family
versions (``FAMILY_METHODS``). The rows must be in memory (a DataFrame, a Dataset or one CSV
file); streamed sources are refused with an :class:`OptionError`. The ModelSpec and options of
a family run are built in :mod:`hyperbayes.inference.workflow.family_run`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.inference.workflow.compare import Comparison, run_comparison
from hyperbayes.inference.workflow.data_sources import dataset_from_frame, read_data
from hyperbayes.inference.workflow.family_run import family_run, is_frame
from hyperbayes.inference.workflow.registry import get_runner
from hyperbayes.models.data import Centering, Dataset
from hyperbayes.models.hyperpriors import (
    Hyperprior,
    OptionError,
    check_scales,
    default_hyperpriors,
    parse_hyperprior,
)
from hyperbayes.models.specification import ModelSpec
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
    fixed_prior: float | None = None,
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
    fixed_prior : float, optional
        s: a Normal(0, s^2) prior on the fixed effects, intercept included
        (:func:`~hyperbayes.models.fixed_prior.with_fixed_prior`; a family run, also on a
        ModelSpec), which makes the log evidence a true log p(y), comparable across models with
        different fixed effects; the results still show them as ``fixed_effects``.

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
    if isinstance(data, ModelSpec) or any(v is not None for v in [*model.values(), convention,
                                                                   fixed_prior]):
        if noise is not None and noise_prior is not None:
            raise OptionError("noise_prior goes with a learned noise; drop it or drop noise.")
        if chunk_rows is not None or dask or scheduler:
            raise OptionError("a family run (a formula or model option) reads its rows into memory; "
                              "drop chunk_rows / dask / scheduler.")
        spec, options = family_run(data, model=model, target=target, intercept=intercept,
                                   hyperprior=hyperprior, noise=noise, noise_prior=noise_prior,
                                   ard=ard, seed=seed, draws=draws, chains=chains,
                                   progress=progress, convention=convention or "reml",
                                   fixed_prior=fixed_prior)
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
        ``convention``, ``fixed``, ``categorical``, ``fixed_prior``).

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
        makes it a family run: one column per group scale; ``fixed_prior`` makes its log
        evidence a true p(y)).

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
    if is_frame(data):
        if target is None:
            raise OptionError("a DataFrame needs target=COLUMN naming the column to predict.")
        return dataset_from_frame(data, target=target)
    raise TypeError(
        f"data must be a Dataset, a pandas DataFrame or a CSV path, not {type(data).__name__}."
    )
