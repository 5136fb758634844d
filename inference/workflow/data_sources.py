"""What ``--data`` (or ``data=`` in Python) may name, and how each is read.

- a :class:`Dataset` or :class:`StreamedData`: used as it is;
- a pandas DataFrame: in memory (as before);
- a Parquet file, a directory of Parquet files or a glob: always streamed in chunks into
  sufficient statistics (:mod:`hyperbayes.models.streaming`): a Parquet data set is the form
  large data come in, and streaming costs a small one gets nothing but the row-wise extras;
- a CSV file: read into memory when it is at most :data:`STREAM_CSV_BYTES` and no chunk size
  is asked for (then everything that needs rows works: the closed-form LOO, the pointwise log
  likelihood, ``data.csv`` in the run directory), streamed in chunks otherwise;
- a ``dask.dataframe`` / ``dask.array``: its partitions reduced on the active Dask scheduler.

With ``dask=True`` (a ``LocalCluster`` on this machine) or ``scheduler=ADDRESS`` (an existing
cluster) a Parquet path is read by Dask's workers instead: a local one piece by piece with the
streaming reader (:func:`~hyperbayes.models.dask_source.parquet_statistics`), one in object
storage with ``dask.dataframe.read_parquet`` (``s3://...`` works where the Dask install has
the filesystem).

A family run (a formula, known standard errors, weights, a random intercept) needs the rows in
memory and keeps text columns (the levels of a grouping factor): :func:`read_frame` reads one
CSV file into a pandas DataFrame, and :func:`dataset_from_frame` takes the numeric columns of a
DataFrame, refusing a text column with the fix (a formula with ``(1|column)``).
"""

from __future__ import annotations

import contextlib
import csv
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hyperbayes.models.data import DataError, Dataset, load_csv
from hyperbayes.models.data_checks import as_float_array, check_unique, drop_index_column
from hyperbayes.models.hyperpriors import OptionError
from hyperbayes.models.sources import DEFAULT_CHUNK_ROWS, resolve
from hyperbayes.models.streaming import StreamedData, stream_data

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "STREAM_CSV_BYTES",
    "dask_client",
    "dataset_from_frame",
    "is_source_path",
    "read_data",
    "read_frame",
    "text_columns",
]

#: CSV files larger than this are streamed (64 MiB: about a million rows of 8 numbers; below
#: it a file fits in memory many times over and keeps the row-wise extras).
STREAM_CSV_BYTES = 64 << 20

#: Workers of the ``--dask`` LocalCluster: one process per core of this 2-core machine.
LOCAL_WORKERS = 2


def is_source_path(data: Any) -> bool:
    return isinstance(data, str | os.PathLike)


def read_data(
    data: Any,
    *,
    target: str,
    chunk_rows: int | None = None,
    folds: int | None = None,
    seed: int = 0,
    dask: bool = False,
    scheduler: str | None = None,
) -> Dataset | StreamedData:
    """The data a path names (see the module notes): a Dataset, or StreamedData."""
    if hasattr(data, "dask") and hasattr(data, "to_delayed"):  # a Dask collection
        from hyperbayes.models.dask_source import dask_data

        with dask_client(dask=dask, scheduler=scheduler):
            return dask_data(data, target=target, folds=folds, seed=seed)
    text = os.fspath(data)
    if dask or scheduler:
        return _read_with_dask(text, target=target, folds=folds, seed=seed, dask=dask,
                               scheduler=scheduler, chunk_rows=chunk_rows)
    fmt, files = resolve(text)
    if fmt == "csv" and chunk_rows is None and len(files) == 1 and files[0].stat().st_size <= STREAM_CSV_BYTES:
        try:
            return load_csv(files[0], target=target)
        except DataError:
            hint = _text_column_hint(files[0], target)  # only on the way out: costs nothing else
            if hint is None:
                raise
            raise DataError(hint) from None
    return stream_data(text, target=target, chunk_rows=chunk_rows or DEFAULT_CHUNK_ROWS,
                       folds=folds, seed=seed)


@contextlib.contextmanager
def dask_client(*, dask: bool = False, scheduler: str | None = None):
    """A ``distributed.Client``: to ``scheduler``, or to a new LocalCluster with ``dask``
    (closed on exit); neither: Dask's active scheduler, unchanged."""
    if not (dask or scheduler):
        yield None
        return
    from hyperbayes.inference.workflow.sbc_cluster import cluster_client

    with warnings.catch_warnings():
        # Advice about the machine while the cluster starts (a slow scratch directory on a
        # loaded machine), not about the result.
        warnings.filterwarnings("ignore", message="Creating scratch directories", category=UserWarning)
        workers = None if scheduler else LOCAL_WORKERS
        with cluster_client(scheduler or None, workers, as_default=True) as client:
            yield client


def _read_with_dask(path: str, *, target, folds, seed, dask, scheduler, chunk_rows=None) -> StreamedData:
    """A local Parquet data set: its pieces (row groups) read by the single-process reader in
    Dask tasks; object storage (``s3://...``) or CSV: a ``dask.dataframe`` of it."""
    from hyperbayes.models.dask_source import dask_data, parquet_data

    remote = "://" in path
    fmt, files = ("parquet", []) if remote else resolve(path)
    if not remote and fmt == "parquet":
        with dask_client(dask=dask, scheduler=scheduler):
            return parquet_data(path, target=target, folds=folds, seed=seed,
                                **({"chunk_rows": chunk_rows} if chunk_rows else {}))
    import dask.dataframe as dd

    names = [str(p) for p in files]
    frame = dd.read_parquet(path, split_row_groups=True) if remote else dd.read_csv(names, dtype="float64")
    with dask_client(dask=dask, scheduler=scheduler):
        return dask_data(frame, target=target, folds=folds, seed=seed, source=path)


def read_frame(data: Any, *, needed: Mapping[str, str] | None = None, only_needed: bool = False) -> pd.DataFrame:
    """One CSV file as a pandas DataFrame, text columns kept (for formulas and random intercepts).

    Parameters
    ----------
    data : str or Path
        A CSV file with a header row.
    needed : mapping column -> what names it, optional
        The columns the model uses (e.g. ``{"s": "--se (standard_errors)"}``); one that is not
        in the file is a DataError naming who asked for it and listing the file's columns.
    only_needed : bool
        Read only the ``needed`` columns (a formula's columns out of a wide file).

    Raises
    ------
    OptionError
        ``data`` is not one CSV file (Parquet, a directory, a glob, a Dask collection: those
        are streamed, and a family run needs its rows in memory).
    DataError
        A missing file, a missing column, a file pandas cannot parse, no data rows.
    """
    import pandas as pd

    if not is_source_path(data):
        raise OptionError(
            f"a formula or a model option (standard errors, weights, a random intercept) needs the "
            f"rows in memory, not a {type(data).__name__}; compute() it into a pandas DataFrame."
        )
    fmt, files = resolve(data)
    if fmt != "csv" or len(files) != 1:
        what = f"{len(files)} Parquet file(s)" if fmt == "parquet" else f"{len(files)} CSV files"
        raise OptionError(
            f"{os.fspath(data)} is {what}, which are streamed; --formula and the model options "
            "(--se, --weights, --penalise, --ml) read one CSV file into memory: write the "
            "columns the model uses to a CSV file."
        )
    path = files[0]
    header = _csv_header(path)
    check_unique(header, where=f"the header of {path}")
    needed = dict(needed or {})
    missing = [c for c in needed if c not in header]
    if missing:
        c = missing[0]
        raise DataError(f"column {c!r} named by {needed[c]} is not in {path}; its columns are {header}.")
    wanted = set(needed) if only_needed else set(header)
    try:
        frame = pd.read_csv(path, encoding="utf-8-sig", usecols=lambda c: c.strip() in wanted)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path} could not be read as a CSV file: {first}.") from None
    frame = frame.rename(columns=lambda c: str(c).strip())
    if frame.shape[0] == 0:
        raise DataError(f"{path} has a header but no data rows.")
    return frame


def text_columns(frame: pd.DataFrame, *, skip: tuple[str, ...] = ()) -> list[str]:
    """The columns of ``frame`` (other than ``skip``) that hold text: no cell reads as a number."""
    import pandas as pd

    out = []
    for c in frame.columns:
        col = frame[c]
        if str(c) in skip or pd.api.types.is_numeric_dtype(col):
            continue
        given = col.notna()
        if given.any() and pd.to_numeric(col[given], errors="coerce").isna().all():
            out.append(str(c))
    return out


def dataset_from_frame(frame: pd.DataFrame, *, target: str, source: str = "the DataFrame") -> Dataset:
    """The numeric columns of a DataFrame as a :class:`Dataset` (``target`` is y).

    A text column is refused with the fix (a random intercept over it is ``(1|column)`` in a
    formula); a column with a stray non-number names its first bad cell.
    """
    columns = [str(c) for c in frame.columns]
    if target not in columns:
        raise DataError(f"no column {target!r} in {source}; its columns are {columns}.")
    text = text_columns(frame, skip=(target,))
    if text:
        raise DataError(_text_message(text[0], target, source))
    for c in frame.columns:  # a mostly numeric column with a stray word: name the cell
        values = frame[c].to_numpy()
        if values.dtype.kind in "OUS":
            import pandas as pd

            bad = pd.to_numeric(frame[c], errors="coerce").isna() & frame[c].notna()
            if bad.any():
                row = int(np.argmax(bad.to_numpy()))
                raise DataError(
                    f"{source}, column {str(c)!r}, row {row}: {values[row]!r} is not a number; fix "
                    "the cell or drop the row."
                )
    values = as_float_array(frame.to_numpy(dtype=float, na_value=np.nan), source)
    # A row index written by to_csv and read back by pandas is a column "Unnamed: 0".
    columns, values = drop_index_column(columns, values, target=target, source=source)
    j = columns.index(target)
    keep = [i for i in range(len(columns)) if i != j]
    return Dataset.from_arrays(
        values[:, keep], values[:, j], feature_names=[columns[i] for i in keep], target_name=target
    )


def _text_message(column: str, target: str, source: str) -> str:
    return (
        f"column {column!r} of {source} is text; use --formula \"{target} ~ ... + (1|{column})\" "
        f"(formula= in Python) for a random intercept over its levels, or drop the column."
    )


def _text_column_hint(path: Path, target: str) -> str | None:
    """The text-column message for a CSV file load_csv refused, if a text column is why."""
    try:
        import pandas as pd

        frame = pd.read_csv(path, encoding="utf-8-sig").rename(columns=lambda c: str(c).strip())
    except Exception:  # the original error says what is wrong with the file
        return None
    text = text_columns(frame, skip=(target,))
    return _text_message(text[0], target, str(path)) if text else None


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for row in csv.reader(f):
                if any(cell.strip() for cell in row):
                    return [h.strip() for h in row]
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a text CSV file (it could not be decoded).") from None
    raise DataError(f"{path} is empty; it needs a header row and at least one data row.")
