"""The same statistics from a Dask collection: per-partition statistics, merged in a tree.

Each partition of a ``dask.dataframe`` (or each row block of a 2-D ``dask.array``) becomes one
:class:`~hyperbayes.models.streaming.StatsAccumulator` on the worker that holds it (the rows
never travel), and the accumulators are merged pairwise in a balanced tree of tasks: log2(P)
levels of D x D merges whatever N is. The pass runs on the active Dask scheduler: a
``distributed.Client`` (a ``LocalCluster`` or a remote cluster), or Dask's default threads.
Reading (``dask.dataframe.read_parquet("s3://...")``) is Dask's business.

Rows keep their row number in the collection (partition offsets come from the partition
lengths: known for arrays, one cheap ``len`` task per partition for data frames), so the
hashed folds equal the single-process stream's and a bad value is reported with its row.

A local Parquet data set (a file, a directory, a glob) has a faster route,
:func:`parquet_statistics`: the files are cut into pieces of whole row groups from their
footers alone (:func:`~hyperbayes.models.sources.parquet_pieces`, which also gives each piece
its first row number), and each task runs the single-process reader on its piece
(:func:`~hyperbayes.models.streaming.piece_statistics`: pyarrow batches decoded straight into
the float64 chunk, no pandas, no length pass), returning its accumulator; the accumulators
merge in the same tree. The folds, the statistics (to round-off) and the messages are the
single stream's: a piece that fails returns its error instead of raising, the tree keeps the
failure of the earliest rows, and that is the one raised, as the single pass would. The
workers must see the path (one machine, or a shared filesystem), as for ``read_parquet``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hyperbayes.models.data_checks import DataError
from hyperbayes.models.sources import (
    DEFAULT_CHUNK_ROWS,
    Columns,
    Piece,
    ReadInfo,
    file_bytes,
    parquet_pieces,
    resolve,
    select_columns,
)
from hyperbayes.models.streaming import (
    StatsAccumulator,
    StreamedData,
    StreamResult,
    _check_magnitudes,
    piece_statistics,
)

__all__ = ["dask_data", "dask_statistics", "parquet_data", "parquet_statistics"]


def dask_statistics(
    collection,
    *,
    target: str | int = -1,
    features: Sequence[str] | None = None,
    folds: int | None = None,
    seed: int = 0,
    source: str = "dask collection",
) -> StreamResult:
    """One pass over a Dask data frame or 2-D array: the merged statistics (see module notes)."""
    import dask

    t0 = time.perf_counter()
    blocks, columns, lengths = _blocks(collection, target, features)
    offsets = np.r_[0, np.cumsum(lengths)[:-1]].astype(int)
    k = len(columns.features)
    parts = [
        dask.delayed(_partition_stats)(b, columns.matrix, int(o), i, k, folds, seed)
        for i, (b, o) in enumerate(zip(blocks, offsets, strict=True))
    ]
    while len(parts) > 1:
        parts = [dask.delayed(_merge)(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    (acc,) = dask.compute(parts[0])
    info = ReadInfo(source, "dask", 0, acc.rows, len(blocks), 1, 0, time.perf_counter() - t0, None)
    out = acc.result(columns, info)
    _check_magnitudes(out)
    return out


def dask_data(collection, *, target: str | int = -1, features: Sequence[str] | None = None,
              folds: int | None = None, seed: int = 0, source: str = "dask collection") -> StreamedData:
    """:class:`StreamedData` of a Dask collection (uncentred; ``.center()`` as for a Dataset)."""
    return StreamedData.from_result(
        dask_statistics(collection, target=target, features=features, folds=folds, seed=seed,
                        source=source))


def parquet_statistics(
    path: str | os.PathLike,
    *,
    target: str,
    features: Sequence[str] | None = None,
    fixed: Sequence[str] = (),
    weights: str | None = None,
    intercept: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    piece_rows: int | None = None,
    folds: int | None = None,
    seed: int = 0,
) -> StreamResult:
    """:func:`~hyperbayes.models.streaming.stream_statistics` with the pieces of a local
    Parquet file, directory or glob read in parallel on the active Dask scheduler.

    Parameters
    ----------
    path : str or PathLike
        A Parquet file, a directory of Parquet files or a glob, readable by the workers.
    target, features, fixed, weights, intercept, chunk_rows, folds, seed
        As for :func:`~hyperbayes.models.streaming.stream_statistics`.
    piece_rows : int, optional
        Rows (whole row groups) at least per task; default ``chunk_rows``. A row group is
        never split, so a file of one row group is one task.

    Raises
    ------
    DataError
        As :func:`~hyperbayes.models.streaming.stream_statistics`, with the same message
        (that of the earliest bad rows); also for a CSV path (read it with
        :func:`dask_statistics` of a ``dask.dataframe``).
    """
    import dask

    if chunk_rows < 1 or (piece_rows is not None and piece_rows < 1):
        raise ValueError(f"chunk_rows and piece_rows must be at least 1, got {chunk_rows}, {piece_rows}.")
    t0 = time.perf_counter()
    fmt, files = resolve(path)
    if fmt != "parquet":
        raise DataError(f"{os.fspath(path)} is CSV; the parallel reader takes Parquet files.")
    columns = select_columns(fmt, files, target=target, features=features, fixed=fixed, weights=weights)
    pieces, failure = [], None
    try:
        pieces.extend(parquet_pieces(files, columns, min_rows=piece_rows or chunk_rows))
    except DataError as exc:  # a file that cannot be read: after the rows before it, as in one pass
        failure = exc
    options = {"chunk_rows": chunk_rows, "intercept": intercept, "folds": folds, "seed": seed}
    parts = [dask.delayed(_piece_task)(p, columns, options) for p in pieces]
    while len(parts) > 1:
        parts = [dask.delayed(_merge_or_fail)(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    if parts:
        (acc,) = dask.compute(parts[0])
    else:
        acc = StatsAccumulator(n_fixed_columns=len(columns.fixed), n_dense=len(columns.features),
                               intercept=intercept, folds=folds, seed=seed)
    if isinstance(acc, _Failed):
        raise acc.error from None
    if failure is not None:
        raise failure from None
    info = ReadInfo(os.fspath(path), "dask", len(files), acc.rows, acc.chunks, 1, file_bytes(files),
                    time.perf_counter() - t0, chunk_rows)
    out = acc.result(columns, info)
    _check_magnitudes(out)
    return out


def parquet_data(path: str | os.PathLike, *, target: str, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 folds: int | None = None, seed: int = 0) -> StreamedData:
    """:class:`StreamedData` of a local Parquet data set read by :func:`parquet_statistics`."""
    return StreamedData.from_result(
        parquet_statistics(path, target=target, chunk_rows=chunk_rows, folds=folds, seed=seed))


@dataclass(frozen=True)
class _Failed:
    """A piece that raised: where its rows start, and the error (raised on the client)."""

    start: int
    error: DataError


def _piece_task(piece: Piece, columns: Columns, options: dict) -> StatsAccumulator | _Failed:
    """One piece's statistics (runs on a worker); a bad value or file becomes a _Failed."""
    try:
        return piece_statistics(piece, columns, **options)
    except DataError as exc:
        return _Failed(piece.start, exc)


def _merge_or_fail(a, b):
    """Merge two accumulators of consecutive rows; of failures, keep the earliest rows'."""
    if isinstance(a, _Failed) or isinstance(b, _Failed):
        failed = [x for x in (a, b) if isinstance(x, _Failed)]
        return min(failed, key=lambda f: f.start)
    return a.merge(b)


def _blocks(collection, target, features):
    import dask.array as da

    if isinstance(collection, da.Array):
        if collection.ndim != 2 or collection.shape[1] < 2:
            raise DataError(f"a dask array must be 2-D with a target and >= 1 feature column, got shape {collection.shape}.")
        ncol = collection.shape[1]
        t = int(target) % ncol
        order = [j for j in range(ncol) if j != t] + [t]
        arr = collection[:, order].rechunk({1: -1})
        names = tuple(f"x{j}" for j in range(ncol) if j != t)
        lengths = list(arr.chunks[0])
        return list(arr.to_delayed().ravel()), Columns("y", names), lengths
    if not hasattr(collection, "to_delayed") or not hasattr(collection, "columns"):
        raise TypeError(f"expected a dask DataFrame or a 2-D dask Array, got {type(collection).__name__}.")
    cols = [str(c) for c in collection.columns]
    if target not in cols:
        raise DataError(f"target column {target!r} is not in the collection; its columns are {cols}.")
    feats = tuple(features) if features is not None else tuple(c for c in cols if c != target)
    missing = [c for c in feats if c not in cols]
    if missing:
        raise DataError(f"column(s) {missing} are not in the collection; its columns are {cols}.")
    frame = collection[[*feats, target]]
    lengths = frame.map_partitions(len).compute().tolist()
    return list(frame.to_delayed()), Columns(target, feats), lengths


def _partition_stats(block, names, start: int, index: int, k: int, folds, seed) -> StatsAccumulator:
    """Statistics of one partition (runs on a worker)."""
    Z = block.to_numpy(dtype=np.float64) if hasattr(block, "to_numpy") else np.asarray(block, dtype=np.float64)
    bad = ~np.isfinite(Z)
    if bad.any():
        i, j = (int(x) for x in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(Z[i, j]) else "infinite"
        raise DataError(
            f"partition {index}, row {i + 1:,} (row {start + i + 1:,} of the collection), column "
            f"{names[j]!r}: {kind} or missing value; remove or impute that row."
        )
    acc = StatsAccumulator(n_fixed_columns=0, n_dense=k, folds=folds, seed=seed)
    acc.add(Z, None, start)
    return acc


def _merge(a: StatsAccumulator, b: StatsAccumulator) -> StatsAccumulator:
    return a.merge(b)
