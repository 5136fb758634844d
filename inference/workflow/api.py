"""``fit`` and ``compare`` with the command line's options, for Python users.

The CLI is a thin layer over these two functions: the same keyword options (hyperprior specs
as strings or :class:`~hyperbayes.models.hyperpriors.Hyperprior` objects, priors scaled to the
data when not given, the intercept handled by centring) give the same numbers from a notebook
as from ``hyperbayes fit`` and ``hyperbayes compare``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.inference.workflow.compare import Comparison, run_comparison
from hyperbayes.inference.workflow.registry import get_runner
from hyperbayes.models.data import Centering, DataError, Dataset, load_csv
from hyperbayes.models.hyperpriors import Hyperprior, default_hyperpriors, parse_hyperprior

__all__ = ["PreparedRun", "compare", "fit", "prepare_run"]

HyperpriorLike = str | Hyperprior


@dataclass(frozen=True)
class PreparedRun:
    """The data as the methods see them (centred when there is an intercept) and the options."""

    data: Dataset
    centering: Centering | None
    options: RunOptions

    def fit(self, method: str) -> MethodSummary:
        """Run ``method`` (a name of ``hyperbayes.METHODS``); the summary has the intercept."""
        runner = get_runner(method)
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
    data: Dataset | Any,
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
) -> PreparedRun:
    """Validate and centre the data and build the :class:`RunOptions`, as the CLI does.

    Parameters
    ----------
    data : Dataset, pandas.DataFrame, str or Path
        The data; a DataFrame or a CSV path needs ``target``.
    target : str, optional
        The column to predict, for a DataFrame or CSV file.
    intercept : bool, default True
        Fit an intercept (by centring X and y); each result reports it.
    hyperprior, noise_prior : str or Hyperprior, optional
        Priors on sigma and on the noise scale (e.g. ``"halfnormal:1"``); default: half-normal
        priors scaled to the data (sigma: sd(y) / rms sd(x_j); noise: sd(y)).
    noise : float, optional
        A known noise scale; without it the noise is learned (with ``noise_prior``).
    ard, seed, draws, chains, progress
        As for :class:`RunOptions`.

    Raises
    ------
    DataError
        The data cannot be used as given.
    ValueError
        A bad option (a malformed spec, ``noise`` together with ``noise_prior``, ...).
    """
    dataset = _as_dataset(data, target)
    centering = None
    if intercept:
        dataset, centering = dataset.center()
    if noise is not None and noise_prior is not None:
        raise ValueError("noise_prior goes with a learned noise; drop it or drop noise.")
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
    return PreparedRun(dataset, centering, options)


def fit(method: str, data: Dataset | Any, **options: Any) -> MethodSummary:
    """Run one method, as ``hyperbayes fit METHOD`` does.

    Parameters
    ----------
    method : str
        One of ``hyperbayes.METHODS``: ``exact``, ``eb``, ``joint-map``, ``nuts``, ``smc``,
        ``cv``.
    data : Dataset, pandas.DataFrame, str or Path
        The data (see :func:`prepare_run`).
    **options
        The keyword options of :func:`prepare_run` (``target``, ``intercept``, ``hyperprior``,
        ``noise``, ``noise_prior``, ``ard``, ``seed``, ``draws``, ``chains``, ``progress``).

    Returns
    -------
    MethodSummary
        The method's summary (its JSON form is ``hyperbayes fit --json``), with the intercept.

    Examples
    --------
    >>> import hyperbayes as hb
    >>> hb.fit("eb", hb.load_diabetes()).sigma > 0
    True
    """
    get_runner(method)  # an unknown method is reported before the data are read
    return prepare_run(data, **options).fit(method)


def compare(
    data: Dataset | Any, *, methods: list[str] | tuple[str, ...] | None = None, **options: Any
) -> Comparison:
    """Run every method (or ``methods``) on the same data, as ``hyperbayes compare`` does.

    Parameters
    ----------
    data : Dataset, pandas.DataFrame, str or Path
        The data (see :func:`prepare_run`).
    methods : sequence of str, optional
        A subset of ``hyperbayes.METHODS``, in the order to run them; default all.
    **options
        The keyword options of :func:`prepare_run`.

    Returns
    -------
    Comparison
        The table (shown as HTML in Jupyter; ``to_pandas()`` for a DataFrame) and each method's
        summary. A method that fails is a row marked ``failed``; the others complete.
    """
    return prepare_run(data, **options).compare(methods)


def _as_dataset(data: Any, target: str | None) -> Dataset:
    if isinstance(data, Dataset):
        if target is not None and target != data.target_name:
            raise ValueError(
                f"target={target!r} does not name this Dataset's target {data.target_name!r}; "
                "drop target (a Dataset knows its target)."
            )
        return data
    if isinstance(data, str | Path):
        if target is None:
            raise ValueError(f"reading {data} needs target=COLUMN naming the column to predict.")
        return load_csv(data, target=target)
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):  # a pandas DataFrame
        if target is None:
            raise ValueError("a DataFrame needs target=COLUMN naming the column to predict.")
        columns = [str(c) for c in data.columns]
        if target not in columns:
            raise DataError(f"no column {target!r} in the DataFrame; its columns are {columns}.")
        j = columns.index(target)
        keep = [i for i in range(len(columns)) if i != j]
        return Dataset.from_arrays(
            data.iloc[:, keep].to_numpy(dtype=float),
            data.iloc[:, j].to_numpy(dtype=float),
            feature_names=[columns[i] for i in keep],
            target_name=target,
        )
    raise TypeError(
        f"data must be a Dataset, a pandas DataFrame or a CSV path, not {type(data).__name__}."
    )
