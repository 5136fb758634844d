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
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from hyperbayes.models.data_checks import DataError
from hyperbayes.models.sources import Columns, ReadInfo
from hyperbayes.models.streaming import (
    StatsAccumulator,
    StreamedData,
    StreamResult,
    _check_magnitudes,
)

__all__ = ["dask_data", "dask_statistics"]


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
