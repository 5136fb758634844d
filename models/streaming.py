"""Streamed sufficient statistics, and the data object the methods take when no rows are held.

One pass over the chunks of a source (:mod:`hyperbayes.models.sources`: Parquet, CSV; or the
partitions of a Dask collection, :mod:`hyperbayes.models.dask_source`) accumulates the
statistics of MATH.md section 7: per chunk the weighted means and the centred co-moment of
Z = [F', X, y], merged with the pairwise update of Chan, Golub and LeVeque (1979)
(:meth:`FamilyStats.merge`), so a large common mean never cancels and the result does not
depend on the chunking beyond round-off.

K-fold cross-validation needs each fold's statistics. A row's fold is a deterministic hash of
its row number in the source (SplitMix64 of the row number and the seed, modulo K), so one pass
builds all K folds' statistics side by side, and the totals are their merge: no second pass,
no permutation of N rows held in memory.

:class:`StreamedData` carries what the methods need (N, D, the names, the statistics, the fold
statistics, the column means for the intercept, the per-column extremes for the checks) and
how the data were read. Asking it for rows (``X``, ``y``) raises a :class:`RowsNotHeld`
(a :class:`DataError`) that says why; the methods that need rows check for it first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from hyperbayes.models.data import Centering
from hyperbayes.models.data_checks import DataError, check_magnitudes
from hyperbayes.models.family_stats import FamilyStats
from hyperbayes.models.prefetch import prefetched
from hyperbayes.models.sources import (
    DEFAULT_CHUNK_ROWS,
    BufferPool,
    Chunk,
    Columns,
    Piece,
    ReadInfo,
    file_bytes,
    iter_chunks,
    iter_piece_chunks,
    resolve,
    select_columns,
)
from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = [
    "FOLDS",
    "RowsNotHeld",
    "StatsAccumulator",
    "StreamResult",
    "StreamedData",
    "fold_of_rows",
    "piece_statistics",
    "stream_data",
    "stream_statistics",
    "tree_merge",
]

#: Folds hashed during the pass (the K of K-fold CV; the methods' default).
FOLDS = 10

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


class RowsNotHeld(DataError):
    """A computation asked for the rows of data that were streamed into statistics only."""


def fold_of_rows(start: int, n: int, folds: int, seed: int = 0) -> NDArray[np.uint8]:
    """The fold (0..folds-1) of rows start..start+n-1: SplitMix64(row + seed * golden) % folds.

    Independent of how the rows were chunked or partitioned; about N / folds rows per fold.
    """
    if not 1 <= folds <= 255:
        raise ValueError(f"folds must be between 1 and 255, got {folds}.")
    x = np.arange(start, start + n, dtype=np.uint64)
    x += np.uint64(((int(seed) + 1) * _GOLDEN) % (1 << 64))  # in Python ints: no overflow
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return (x % np.uint64(folds)).astype(np.uint8)


def tree_merge(parts: Sequence[FamilyStats]) -> FamilyStats:
    """Merge statistics pairwise in a balanced tree (depth log2 of their number)."""
    parts = list(parts)
    if not parts:
        raise ValueError("no statistics to merge.")
    while len(parts) > 1:
        parts = [parts[i].merge(parts[i + 1]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


#: Chunks decoded ahead of the one being added (2 x 10^8 x 21 rows: depth 2 32.0 s, 4 30.4 s).
PREFETCH_DEPTH = 4


class StatsAccumulator:
    """Chunk by chunk: the statistics of each hashed fold (or of all rows), and column extremes."""

    def __init__(self, *, n_fixed_columns: int, n_dense: int, intercept: bool = True,
                 folds: int | None = None, seed: int = 0) -> None:
        self.p, self.d, self.intercept = int(n_fixed_columns), int(n_dense), bool(intercept)
        self.folds, self.seed = folds, int(seed)
        self._parts: list[FamilyStats | None] = [None] * (folds or 1)
        k = self.p + self.d + 1
        self.lo, self.hi = np.full(k, np.inf), np.full(k, -np.inf)
        self.rows = self.chunks = 0

    def add(self, Z: NDArray[np.float64], weights: NDArray[np.float64] | None, start: int, *,
            lo: NDArray[np.float64] | None = None, hi: NDArray[np.float64] | None = None) -> None:
        """Add the rows start..start+n-1 of the source (Z = [F', X, y], n x K); ``lo``/``hi``
        are Z's column extremes when the caller has them already."""
        n = Z.shape[0]
        if n == 0:
            return
        self.lo = np.minimum(self.lo, Z.min(axis=0) if lo is None else lo)
        self.hi = np.maximum(self.hi, Z.max(axis=0) if hi is None else hi)
        self.rows += n
        self.chunks += 1
        if not self.folds:
            self._merge(0, Z, weights)
            return
        fold = fold_of_rows(start, n, self.folds, self.seed)
        order = np.argsort(fold, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(fold, minlength=self.folds))]
        # Column by column into a Fortran-ordered matrix: Z[order] is C-ordered, twice as slow to
        # gather and 2.7x as slow in the co-moment's blocks (2^19 x 21: 41 + 80 ms vs 21 + 29 ms).
        Zs = np.empty(Z.shape, order="F")
        for j in range(Z.shape[1]):
            np.take(Z[:, j], order, out=Zs[:, j])
        ws = None if weights is None else weights[order]
        for f in range(self.folds):
            a, b = bounds[f], bounds[f + 1]
            if b > a:
                self._merge(f, Zs[a:b], None if ws is None else ws[a:b])

    def add_columns(self, columns, start: int, *, lo, hi) -> None:
        """:meth:`add` for unweighted rows given as K columns, without folds: the statistics
        from small centred blocks (:meth:`FamilyStats.from_columns`), no n x K matrix."""
        if self.folds:
            raise ValueError("add_columns has no folds; use add.")
        n = len(columns[0])
        if n == 0:
            return
        self.lo, self.hi = np.minimum(self.lo, lo), np.maximum(self.hi, hi)
        self.rows += n
        self.chunks += 1
        part = FamilyStats.from_columns(columns, n_fixed_columns=self.p, n_dense=self.d,
                                        intercept=self.intercept)
        old = self._parts[0]
        self._parts[0] = part if old is None else old.merge(part)

    def _merge(self, k: int, Z, w) -> None:
        part = FamilyStats.from_matrix(Z, n_fixed_columns=self.p, n_dense=self.d, weights=w,
                                       intercept=self.intercept)
        old = self._parts[k]
        self._parts[k] = part if old is None else old.merge(part)

    def merge(self, other: StatsAccumulator) -> StatsAccumulator:
        """Pool two accumulators of disjoint rows (Dask partitions), fold by fold."""
        out = StatsAccumulator(n_fixed_columns=self.p, n_dense=self.d, intercept=self.intercept,
                               folds=self.folds, seed=self.seed)
        out._parts = [a if b is None else b if a is None else a.merge(b)
                      for a, b in zip(self._parts, other._parts, strict=True)]
        out.lo, out.hi = np.minimum(self.lo, other.lo), np.maximum(self.hi, other.hi)
        out.rows, out.chunks = self.rows + other.rows, self.chunks + other.chunks
        return out

    def result(self, columns: Columns, info: ReadInfo) -> StreamResult:
        parts = [p for p in self._parts if p is not None]
        if not parts:
            raise DataError(f"{info.source} has no data rows.")
        empty = self.folds and len(parts) < self.folds
        folds = None if not self.folds or empty else tuple(self._parts)
        return StreamResult(tree_merge(parts), folds, columns, self.lo, self.hi, info)


@dataclass(frozen=True, eq=False)
class StreamResult:
    """The merged statistics of a pass, the folds' (None without folds), and the extremes."""

    family: FamilyStats
    folds: tuple[FamilyStats, ...] | None
    columns: Columns
    lo: NDArray[np.float64]
    hi: NDArray[np.float64]
    info: ReadInfo


def stream_statistics(
    path,
    *,
    target: str,
    features: Sequence[str] | None = None,
    fixed: Sequence[str] = (),
    weights: str | None = None,
    intercept: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    folds: int | None = None,
    seed: int = 0,
) -> StreamResult:
    """One pass over a Parquet file, directory or glob, or a CSV file: the merged statistics.

    Raises
    ------
    DataError
        A file that cannot be read, a column missing from one file, a null, NaN or infinite
        value (the message names the file, the row in it and the column), a non-positive
        weight, a magnitude float64 cannot work with.
    """
    t0 = time.perf_counter()
    fmt, files = resolve(path)
    columns = select_columns(fmt, files, target=target, features=features, fixed=fixed, weights=weights)
    chunks = iter_chunks(fmt, files, columns, chunk_rows=chunk_rows, pool=BufferPool())
    acc = accumulate(prefetched(chunks, depth=PREFETCH_DEPTH),
                     _accumulator(columns, intercept=intercept, folds=folds, seed=seed))
    info = ReadInfo(str(path), fmt, len(files), acc.rows, acc.chunks, 1, file_bytes(files),
                    time.perf_counter() - t0, chunk_rows)
    out = acc.result(columns, info)
    _check_magnitudes(out)
    return out


def piece_statistics(piece: Piece, columns: Columns, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                     intercept: bool = True, folds: int | None = None, seed: int = 0) -> StatsAccumulator:
    """The pass of :func:`stream_statistics` over one :class:`Piece` of a Parquet data set.

    The rows keep their numbers in the whole data set (``piece.start`` on), so the hashed
    folds and the messages are those of the single pass; the accumulators of the pieces merge
    (:meth:`StatsAccumulator.merge`, in any tree) into the statistics of all rows.
    """
    return accumulate(iter_piece_chunks(piece, columns, chunk_rows=chunk_rows, pool=BufferPool()),
                      _accumulator(columns, intercept=intercept, folds=folds, seed=seed))


def accumulate(chunks: Iterable[Chunk], acc: StatsAccumulator) -> StatsAccumulator:
    for chunk in chunks:
        lo, hi = chunk.extremes()  # raises the located DataError for a NaN or an infinity
        if chunk.Z is None and not acc.folds:
            acc.add_columns(chunk.columns, chunk.start, lo=lo, hi=hi)
        else:
            acc.add(chunk.matrix(), chunk.weights, chunk.start, lo=lo, hi=hi)
        chunk.release()
    return acc


def _accumulator(columns: Columns, *, intercept: bool, folds: int | None, seed: int) -> StatsAccumulator:
    return StatsAccumulator(n_fixed_columns=len(columns.fixed), n_dense=len(columns.features),
                            intercept=intercept, folds=folds, seed=seed)


def _check_magnitudes(res: StreamResult) -> None:
    peak = np.maximum(np.abs(res.lo), np.abs(res.hi))[None, :]
    cols = res.columns.matrix
    check_magnitudes(peak[:, :-1], [f"column {c!r}" for c in cols[:-1]], target=False)
    check_magnitudes(peak[:, -1:], [f"the target {cols[-1]!r}"], target=True)


# ------------------------------------------------------------------------------ StreamedData


@dataclass(frozen=True, eq=False)
class StreamedData:
    """Data known through their statistics only: what the methods take instead of rows.

    Mirrors the parts of :class:`~hyperbayes.models.data.Dataset` the methods use (``n``,
    ``d``, ``feature_names``, ``target_name``, :meth:`center`, :meth:`methods_note`) and
    adds ``stats`` (the :class:`SufficientStats` of the data as the methods see them: centred
    after :meth:`center`, exactly as ``SufficientStats.from_dataset(dataset.center()[0])``),
    ``fold_stats`` (the hashed folds' statistics in the same frame) and ``reading``.
    """

    family: FamilyStats
    fold_family: tuple[FamilyStats, ...] | None
    feature_names: tuple[str, ...]
    target_name: str
    lo: NDArray[np.float64]
    hi: NDArray[np.float64]
    reading: ReadInfo
    centred: bool = False

    @classmethod
    def from_result(cls, res: StreamResult) -> StreamedData:
        if res.columns.fixed or res.columns.weights:
            raise DataError(
                "the methods take one target and penalised features; fixed covariates and "
                "weights go through the model family (FamilyStats.projected())."
            )
        return cls(res.family, res.folds, res.columns.features, res.columns.target,
                   res.lo, res.hi, res.info)

    @property
    def n(self) -> int:
        return self.family.n_rows

    @property
    def d(self) -> int:
        return self.family.n_dense

    @property
    def X(self):
        raise RowsNotHeld(self._no_rows("X"))

    @property
    def y(self):
        raise RowsNotHeld(self._no_rows("y"))

    def _no_rows(self, what: str) -> str:
        return (
            f"the data were streamed ({self.n:,} rows) into sufficient statistics, so their rows "
            f"({what}) are not held; this computation needs rows."
        )

    @cached_property
    def stats(self) -> SufficientStats:
        """(G, b, v, N) of the data as the methods see them (centred after :meth:`center`)."""
        return _frame_stats(self.family, self.family.mean if self.centred else None, self.d)

    @cached_property
    def fold_stats(self) -> tuple[SufficientStats, ...] | None:
        """The hashed folds' statistics, in the frame of :attr:`stats` (they sum to it)."""
        if self.fold_family is None:
            return None
        m = self.family.mean if self.centred else None
        return tuple(_frame_stats(f, m, self.d) for f in self.fold_family)

    def constant_columns(self) -> tuple[str, ...]:
        return tuple(n for n, a, b in zip(self.feature_names, self.lo, self.hi, strict=False) if a == b)

    def center(self) -> tuple[StreamedData, Centering]:
        """The centred view (statistics about the column means) and the means (as Dataset)."""
        if self.lo[-1] == self.hi[-1]:
            raise DataError(
                f"the target {self.target_name!r} is constant (every value is {self.lo[-1]:.6g}), "
                "so an intercept explains it completely and nothing is left to fit."
            )
        constant = self.constant_columns()
        if constant:
            raise DataError(
                f"column(s) {', '.join(constant)} are constant, so they duplicate the intercept; "
                "drop them, or fit without an intercept (--no-intercept)."
            )
        mean = self.family.mean
        x_mean = mean[: self.d].copy()
        x_mean.setflags(write=False)
        return replace(self, centred=True), Centering(x_mean=x_mean, y_mean=float(mean[self.d]))

    def column_moments(self) -> tuple[float, float, float, float]:
        """(population sd of y, rms of the column variances of X, rms of y, rms of X) of the
        data as the methods see them: what the default priors and the scale checks use."""
        C, n, d = self.family.comoment, self.n, self.d
        var = np.diag(C) / n
        st = self.stats
        return (float(np.sqrt(var[d])), float(np.sqrt(np.mean(var[:d]))),
                float(np.sqrt(st.v / n)), float(np.sqrt(np.trace(st.G) / (n * d))))

    def to_csv(self, path) -> None:
        """Refuse: no rows are held (a run directory keeps :meth:`write_json` instead)."""
        raise RowsNotHeld(self._no_rows("to write data.csv"))

    def write_json(self, path) -> None:
        """The statistics (O(D^2) numbers, whatever N) as JSON; :meth:`read_json` reads them."""
        f = self.family
        doc = {
            "format": "hyperbayes streamed statistics 1",
            "feature_names": list(self.feature_names), "target_name": self.target_name,
            "centred": self.centred, "lo": self.lo.tolist(), "hi": self.hi.tolist(),
            "reading": {k: getattr(self.reading, k) for k in self.reading.__dataclass_fields__},
            "family": _family_json(f),
            "folds": None if self.fold_family is None else [_family_json(g) for g in self.fold_family],
        }
        Path(path).write_text(json.dumps(doc))

    @classmethod
    def read_json(cls, path) -> StreamedData:
        doc = json.loads(Path(path).read_text())
        folds = doc["folds"]
        return cls(_family_from_json(doc["family"]),
                   None if folds is None else tuple(_family_from_json(g) for g in folds),
                   tuple(doc["feature_names"]), doc["target_name"], np.array(doc["lo"]),
                   np.array(doc["hi"]), ReadInfo(**doc["reading"]), bool(doc["centred"]))

    def methods_note(self) -> str | None:
        return None if self.n >= self.d else (
            f"N = {self.n} < D = {self.d}: the exact oracle needs the rows (an SVD of X) here."
        )


def _family_json(f: FamilyStats) -> dict:
    return {"level_weight": f.level_weight.tolist(), "level_mean": f.level_mean.tolist(),
            "within": f.within.tolist(), "n_rows": f.n_rows, "sum_log_omega": f.sum_log_omega,
            "n_fixed_columns": f.n_fixed_columns, "n_dense": f.n_dense,
            "intercept": f.intercept, "has_factor": f.has_factor}


def _family_from_json(doc: dict) -> FamilyStats:
    arrays = {k: np.array(doc[k], dtype=np.float64) for k in ("level_weight", "level_mean", "within")}
    return FamilyStats(**(doc | arrays))


def _frame_stats(fam: FamilyStats, centre, d: int) -> SufficientStats:
    """G, b, v of [X, y] about ``centre`` (None: uncentred), n = the rows of ``fam``.

    About the overall mean m: sum (z - m)(z - m)^T = C + n (mean - m)(mean - m)^T, with the
    fold's own centred co-moment C: no raw sums, so nothing cancels.
    """
    if centre is None:
        S = fam.gram()
    else:
        dev = fam.mean - centre
        S = fam.comoment + fam.total_weight * np.outer(dev, dev)
    return SufficientStats(G=S[:d, :d].copy(), b=S[:d, d].copy(), v=float(S[d, d]), n=fam.n_rows)


def stream_data(path, *, target: str, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                folds: int | None = None, seed: int = 0) -> StreamedData:
    """Stream a Parquet file, directory or glob, or a CSV, into :class:`StreamedData`."""
    res = stream_statistics(path, target=target, chunk_rows=chunk_rows, folds=folds, seed=seed)
    return StreamedData.from_result(res)
