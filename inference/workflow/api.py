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
from hyperbayes.inference.workflow.data_sources import read_data
from hyperbayes.inference.workflow.registry import get_runner
from hyperbayes.models.data import Centering, DataError, Dataset
from hyperbayes.models.data_checks import as_float_array, drop_index_column
from hyperbayes.models.hyperpriors import (
    Hyperprior,
    OptionError,
    check_scales,
    default_hyperpriors,
    parse_hyperprior,
)
from hyperbayes.models.streaming import FOLDS as DEFAULT_FOLDS  # = cross_validation's default
from hyperbayes.models.streaming import StreamedData

__all__ = ["PreparedRun", "compare", "fit", "prepare_run"]

HyperpriorLike = str | Hyperprior


@dataclass(frozen=True)
class PreparedRun:
    """The data as the methods see them (centred when there is an intercept) and the options."""

    data: Dataset | StreamedData
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
    chunk_rows: int | None = None,
    folds: int | None = None,
    dask: bool = False,
    scheduler: str | None = None,
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
    chunk_rows : int, optional
        Rows per chunk when a file is streamed (Parquet always; CSV above
        ``data_sources.STREAM_CSV_BYTES`` or whenever this is given).
    folds : int, optional
        Hash the rows into this many folds during the streamed pass (K-fold CV needs them;
        :func:`fit` and :func:`compare` ask for them when ``cv`` runs).
    dask, scheduler
        Read a path on a Dask LocalCluster of this machine (``dask=True``) or on the cluster
        at ``scheduler``; a Dask collection as ``data`` is reduced on the active scheduler.

    Raises
    ------
    DataError
        The data cannot be used as given (e.g. a constant target with an intercept, values
        float64 cannot work with).
    OptionError
        A bad option (a malformed spec, ``noise`` together with ``noise_prior``, a negative
        seed, a noise or prior scale too far from the data's scale for float64; see
        :func:`~hyperbayes.models.hyperpriors.check_scales`). A ``ValueError``.
    """
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
    if method == "cv":
        options.setdefault("folds", DEFAULT_FOLDS)  # hashed in the pass, if the data stream
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
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):  # a pandas DataFrame
        if target is None:
            raise OptionError("a DataFrame needs target=COLUMN naming the column to predict.")
        columns = [str(c) for c in data.columns]
        if target not in columns:
            raise DataError(f"no column {target!r} in the DataFrame; its columns are {columns}.")
        values = as_float_array(data.to_numpy(), "the DataFrame")
        # A row index written by to_csv and read back by pandas is a column "Unnamed: 0".
        columns, values = drop_index_column(columns, values, target=target, source="the DataFrame")
        j = columns.index(target)
        keep = [i for i in range(len(columns)) if i != j]
        return Dataset.from_arrays(
            values[:, keep], values[:, j], feature_names=[columns[i] for i in keep], target_name=target
        )
    raise TypeError(
        f"data must be a Dataset, a pandas DataFrame or a CSV path, not {type(data).__name__}."
    )
