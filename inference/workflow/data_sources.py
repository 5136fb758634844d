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
cluster) a Parquet path is read by Dask's workers instead (``dask.dataframe.read_parquet``;
``s3://...`` works where the Dask install has the filesystem).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

from hyperbayes.models.data import Dataset, load_csv
from hyperbayes.models.sources import DEFAULT_CHUNK_ROWS, resolve
from hyperbayes.models.streaming import StreamedData, stream_data

__all__ = ["STREAM_CSV_BYTES", "dask_client", "is_source_path", "read_data"]

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
                               scheduler=scheduler)
    fmt, files = resolve(text)
    if fmt == "csv" and chunk_rows is None and len(files) == 1 and files[0].stat().st_size <= STREAM_CSV_BYTES:
        return load_csv(files[0], target=target)
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


def _read_with_dask(path: str, *, target, folds, seed, dask, scheduler) -> StreamedData:
    import dask.dataframe as dd

    from hyperbayes.models.dask_source import dask_data

    remote = "://" in path
    files = [path] if remote else [str(p) for p in resolve(path)[1]]
    csv = not remote and resolve(path)[0] == "csv"
    frame = dd.read_csv(files, dtype="float64") if csv else dd.read_parquet(path if remote else files, split_row_groups=True)
    with dask_client(dask=dask, scheduler=scheduler):
        return dask_data(frame, target=target, folds=folds, seed=seed, source=path)
