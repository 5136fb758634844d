"""Sources of rows: Parquet files (one, a directory, a glob) and CSV files, read in chunks.

Each chunk is decoded by pyarrow straight into one float64 matrix Z = [F', X, y] (the layout
of :class:`~hyperbayes.models.family_stats.FamilyStats`) plus the observation weights, checked
row-exactly (a null, NaN or infinity is reported with its file, its row in that file and its
column), and handed on; nothing holds more than one chunk, so memory is bounded by
``chunk_rows`` whatever the number of rows. What becomes of the chunks (their statistics) is
:mod:`hyperbayes.models.streaming`'s business.

Files are read in sorted path order, so row numbers, and the folds hashed from them, are the
same on every run.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from hyperbayes.models.data_checks import DataError, check_unique

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "Chunk",
    "Columns",
    "Piece",
    "ReadInfo",
    "iter_chunks",
    "iter_piece_chunks",
    "parquet_pieces",
    "resolve",
    "select_columns",
]

#: Rows per chunk: 2^19 rows of 21 float64 columns is 88 MB, and a chunk exists in at most
#: three copies at a time (pyarrow's batch, Z, Z sorted by fold), so the peak stays far below
#: 1 GB whatever N is.
DEFAULT_CHUNK_ROWS = 1 << 19

_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Columns:
    """Which columns of the files are the target, the features, fixed covariates and weights."""

    target: str
    features: tuple[str, ...]
    fixed: tuple[str, ...] = ()
    weights: str | None = None

    @property
    def matrix(self) -> tuple[str, ...]:
        """The columns of Z in order: fixed covariates, features, target."""
        return (*self.fixed, *self.features, self.target)

    @property
    def read(self) -> tuple[str, ...]:
        """Every column read from the files."""
        return self.matrix + ((self.weights,) if self.weights else ())


@dataclass(frozen=True)
class Chunk:
    """One chunk of rows: Z (n x K, float64), the weights (or None), and where it came from.

    A chunk decoded for a prefetched pass without weights holds its K columns (views of the
    Arrow buffers) instead of Z: the consumer then builds only small centred blocks from them
    (:meth:`FamilyStats.from_columns`), and :meth:`matrix` builds Z where one is needed (folds,
    error messages).
    """

    Z: NDArray[np.float64] | None
    weights: NDArray[np.float64] | None
    file: str
    first_row: int  # 0-based row in its file
    start: int  # 0-based row in the whole source (all files in order)
    names: tuple[str, ...] = ()  # Z's columns, for messages
    pool: BufferPool | None = None  # where Z goes back once the chunk has been used
    columns: tuple[NDArray[np.float64], ...] = ()  # set instead of Z (see above)

    @property
    def rows(self) -> int:
        return self.Z.shape[0] if self.Z is not None else len(self.columns[0])

    def matrix(self) -> NDArray[np.float64]:
        """Z, built from the columns (into a pooled buffer) when the chunk holds columns."""
        if self.Z is None:
            k = len(self.columns)
            Z = self.pool.take(self.rows, k) if self.pool is not None else np.empty((self.rows, k), order="F")
            for j, col in enumerate(self.columns):
                Z[:, j] = col
            object.__setattr__(self, "Z", Z)
        return self.Z

    def extremes(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Z's column minima and maxima; a NaN or an infinity shows in them (NaN propagates),
        and is then reported with its file, row and column (a DataError).

        Done by the consumer of a prefetched pass, not while decoding: the decoding thread is
        the busier one (pyarrow's decode).
        """
        if self.Z is None:
            lo = np.array([col.min() for col in self.columns])
            hi = np.array([col.max() for col in self.columns])
        else:
            lo, hi = self.Z.min(axis=0), self.Z.max(axis=0)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            _report_nonfinite(self.matrix(), self.names, self.file, self.first_row)
        return lo, hi

    def release(self) -> None:
        """Hand Z back to its pool for the next chunk (the caller is done with it)."""
        if self.pool is not None and self.Z is not None:
            self.pool.give(self.Z)


class BufferPool:
    """Reused chunk matrices: a fresh 88 MB array per chunk costs ~21,000 page faults, a
    quarter of a streamed pass's system time at 2 x 10^8 rows. Thread-safe (the producer of
    a prefetched pass takes, the consumer gives back); it never holds more buffers than there
    were chunks alive at once."""

    def __init__(self) -> None:
        import queue

        self._free: queue.SimpleQueue = queue.SimpleQueue()

    def take(self, n: int, k: int) -> NDArray[np.float64]:
        """An n x k Fortran-ordered float64 array (contents undefined)."""
        import queue

        try:
            Z = self._free.get_nowait()
        except queue.Empty:
            Z = None
        if Z is None or Z.shape != (n, k):
            Z = np.empty((n, k), order="F")
        return Z

    def give(self, Z: NDArray[np.float64]) -> None:
        self._free.put(Z)


@dataclass(frozen=True)
class Piece:
    """Consecutive row groups of one Parquet file: what one task of a parallel pass reads."""

    file: str
    row_groups: tuple[int, ...]
    first_row: int  # 0-based row in its file
    start: int  # 0-based row in the whole source (all files in order)
    rows: int


@dataclass(frozen=True)
class ReadInfo:
    """How the data were read: what the report and the summary say about it."""

    source: str
    format: str  # "parquet", "csv", "dask" or "memory"
    files: int
    rows: int
    chunks: int
    passes: int
    bytes: int
    seconds: float
    chunk_rows: int | None

    def describe(self) -> str:
        size = f"{self.bytes / 1e6:,.1f} MB" if self.bytes else "size unknown"
        if not self.files:
            what = f"a {self.format} collection"
        elif self.format == "dask":
            what = f"{self.files} Parquet file(s) read by Dask workers"
        else:
            what = f"{self.files} {self.format} file(s)"
        per = f" of <= {self.chunk_rows:,} rows" if self.chunk_rows else ""
        return (
            f"streamed: {self.rows:,} rows in {self.chunks:,} chunk(s){per} from {what} "
            f"({size}), {self.passes} pass(es), {self.seconds:.2f} s; only the sufficient "
            "statistics were kept"
        )

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"how": self.describe()}


def resolve(path: str | os.PathLike) -> tuple[str, list[Path]]:
    """The format ("parquet" or "csv") and the sorted files of a file, directory or glob."""
    text = os.fspath(path)
    if _GLOB_CHARS & set(text):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"no file matches {text!r}; check the pattern given with --data.")
    elif Path(text).is_dir():
        files = sorted(p for p in Path(text).rglob("*") if p.is_file() and p.suffix.lower() in _PARQUET_SUFFIXES)
        if not files:
            raise DataError(f"{text} is a directory with no Parquet files (*.parquet) in it.")
    elif Path(text).is_file():
        files = [Path(text)]
    else:
        raise DataError(f"no such file: {text}; check the path given with --data.")
    formats = {_format_of(f) for f in files}
    if len(formats) > 1:
        raise DataError(f"{text} mixes Parquet and CSV files; give one format at a time.")
    return formats.pop(), files


def select_columns(
    fmt: str,
    files: Sequence[Path],
    *,
    target: str,
    features: Sequence[str] | None = None,
    fixed: Sequence[str] = (),
    weights: str | None = None,
) -> Columns:
    """Check the named columns against the first file's header; default features: the rest."""
    names = _column_names(fmt, files[0])
    check_unique(names, where=f"the header of {files[0]}")
    used = [target, *fixed, *([weights] if weights else []), *(features or [])]
    missing = [c for c in used if c not in names]
    if missing:
        raise DataError(
            f"column(s) {missing} are not in {files[0]}; its columns are {names}. "
            "Name the target with --target."
        )
    if features is None:
        taken = {target, *fixed, weights}
        features = [c for c in names if c not in taken]
    if not features:
        raise DataError(f"{files[0]} has no feature columns besides the target {target!r}.")
    check_unique([*fixed, *features, target, *([weights] if weights else [])])
    return Columns(target, tuple(features), tuple(fixed), weights)


def iter_chunks(fmt: str, files: Sequence[Path], columns: Columns, *, chunk_rows: int,
                pool: BufferPool | None = None) -> Iterator[Chunk]:
    """The chunks of every file in turn (at most ``chunk_rows`` rows each), validated; with a
    ``pool``, each chunk's Z comes from it (give it back with ``chunk.release()``)."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}.")
    start = 0
    for path in files:
        reader = _parquet_batches if fmt == "parquet" else _csv_batches
        for chunk in _chunks(reader(path, columns, chunk_rows), columns, str(path), 0, start, chunk_rows,
                             pool):
            start += chunk.rows
            yield chunk


def parquet_pieces(files: Sequence[Path], columns: Columns, *, min_rows: int) -> Iterator[Piece]:
    """The files cut into pieces of whole row groups, in order, each of at least ``min_rows``
    rows (but the last of a file) and carrying its row numbers; reads only the footers.

    A piece is read by :func:`iter_piece_chunks`, so the files can be read in parallel (one
    Dask task a piece) into the same chunks, row numbers and messages as :func:`iter_chunks`.
    A file that cannot be read, or lacks a column, raises its DataError when it is reached:
    the pieces before it are yielded first.
    """
    import pyarrow.parquet as pq

    start = 0
    for path in files:
        pf = _parquet_file(path, pq)
        _check_schema(path, pf.schema_arrow, columns)
        meta = pf.metadata
        first, group, run = 0, [], 0
        for g in range(meta.num_row_groups):
            group.append(g)
            run += meta.row_group(g).num_rows
            if run >= min_rows or (run and g == meta.num_row_groups - 1):
                yield Piece(str(path), tuple(group), first, start, run)
                first, start, group, run = first + run, start + run, [], 0


def iter_piece_chunks(piece: Piece, columns: Columns, *, chunk_rows: int,
                      pool: BufferPool | None = None) -> Iterator[Chunk]:
    """The chunks of one :class:`Piece` (at most ``chunk_rows`` rows each), validated; ``pool``
    as for :func:`iter_chunks`."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}.")
    path = Path(piece.file)
    batches = _parquet_batches(path, columns, chunk_rows, row_groups=piece.row_groups)
    yield from _chunks(batches, columns, piece.file, piece.first_row, piece.start, chunk_rows, pool)


def _chunks(batches, columns: Columns, file: str, row: int, start: int, chunk_rows: int,
            pool: BufferPool | None = None) -> Iterator[Chunk]:
    for batch in batches:
        for lo in range(0, batch.num_rows, chunk_rows):
            piece = batch.slice(lo, chunk_rows)
            yield _decode(piece, columns, file, row, start, pool)
            row += piece.num_rows
            start += piece.num_rows


def file_bytes(files: Sequence[Path]) -> int:
    return int(sum(p.stat().st_size for p in files))


# ------------------------------------------------------------------------------ the readers


def _format_of(path: Path) -> str:
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        return "parquet"
    with open(path, "rb") as f:
        return "parquet" if f.read(4) == b"PAR1" else "csv"


def _column_names(fmt: str, path: Path) -> list[str]:
    import pyarrow.parquet as pq

    if fmt == "parquet":
        return list(_parquet_file(path, pq).schema_arrow.names)
    import csv

    with open(path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise DataError(f"{path} is empty; it needs a header row and at least one data row.")
    return [h.strip() for h in header]


def _parquet_file(path: Path, pq):
    import pyarrow as pa

    try:
        # pre_buffer=False: pyarrow's pre-buffering holds whole column chunks ahead of the
        # batches; measured on 10^7 x 21 (1.8 GB, one file): peak RSS 2.1 GB and 33 s with it,
        # 0.53 GB and 9.5 s without (benchmarks/streaming.py).
        return pq.ParquetFile(path, pre_buffer=False)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file ({_short(exc)}); replace or remove it.") from None


def _parquet_batches(path: Path, columns: Columns, chunk_rows: int, row_groups=None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = _parquet_file(path, pq)
    _check_schema(path, pf.schema_arrow, columns)
    try:
        yield from pf.iter_batches(batch_size=chunk_rows, row_groups=row_groups,
                                   columns=list(columns.read), use_threads=True)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file ({_short(exc)}); replace or remove it.") from None


def _check_schema(path: Path, schema, columns: Columns) -> None:
    import pyarrow as pa

    missing = [c for c in columns.read if c not in schema.names]
    if missing:
        raise DataError(
            f"{path} has no column(s) {missing} (the other files have them); every file of the "
            "data set needs the same columns."
        )
    for name in columns.read:
        kind = schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise DataError(
                f"{path}, column {name!r} holds {kind}, not numbers; encode it numerically or "
                "leave it out."
            )


def _csv_batches(path: Path, columns: Columns, chunk_rows: int):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = _column_names("csv", path)
    missing = [c for c in columns.read if c not in names]
    if missing:
        raise DataError(f"{path} has no column(s) {missing}; its columns are {names}.")
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    per_row = max(8, len(head) // max(1, head.count(b"\n")))
    block = int(min(max(per_row * chunk_rows, 1 << 16), 1 << 28))
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=block),
            convert_options=pacsv.ConvertOptions(
                include_columns=list(columns.read),
                column_types={c: pa.float64() for c in columns.read},
            ),
        )
        yield from reader
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"{path}: {_short(exc)}; encode categorical columns numerically, fill empty cells, "
            "or drop them."
        ) from None


def _decode(batch, columns: Columns, file: str, first_row: int, start: int,
            pool: BufferPool | None = None) -> Chunk:
    n = batch.num_rows
    names = columns.matrix
    if pool is not None and not columns.weights:  # a prefetched pass: the consumer takes columns
        cols = tuple(_column(batch, name, file, first_row) for name in names)
        return Chunk(None, None, file, first_row, start, tuple(names), pool, cols)
    Z = pool.take(n, len(names)) if pool is not None else np.empty((n, len(names)), order="F")
    for j, name in enumerate(names):
        Z[:, j] = _column(batch, name, file, first_row)
    w = None
    if columns.weights:
        w = np.asarray(_column(batch, columns.weights, file, first_row), dtype=np.float64)
        bad = ~(np.isfinite(w) & (w > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{file}, row {first_row + i + 1:,}, column {columns.weights!r}: weight {w[i]!r}; "
                "observation weights must be positive and finite."
            )
    return Chunk(Z, w, file, first_row, start, tuple(names), pool)


def _column(batch, name: str, file: str, first_row: int) -> NDArray:
    col = batch.column(name)
    if col.null_count:
        i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(
            f"{file}, row {first_row + i + 1:,}, column {name!r}: missing value; remove or impute "
            "that row, then read the data again."
        )
    return _float64_values(col)


def _float64_values(col) -> NDArray[np.float64]:
    """A null-free numeric Arrow array as float64, a view of its buffer when it is float64.

    The buffer is read directly: ``Array.to_numpy`` would import pandas (0.6 s, once per
    process: on every Dask worker). Other numeric types are cast first, unchecked, rounding
    as NumPy's ``astype(float)`` does.
    """
    import pyarrow as pa

    if not pa.types.is_float64(col.type):
        try:
            col = col.cast(pa.float64(), safe=False)
        except pa.ArrowNotImplementedError:
            return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
    return np.frombuffer(col.buffers()[1], dtype=np.float64, count=len(col), offset=col.offset * 8)


def _report_nonfinite(Z, names, file: str, first_row: int) -> None:
    bad = ~np.isfinite(Z)
    if not bad.any():  # the column sums overflowed: values that large fail the magnitude check
        return
    i, j = (int(k) for k in np.argwhere(bad)[0])
    kind = "NaN" if np.isnan(Z[i, j]) else "infinite"
    raise DataError(
        f"{file}, row {first_row + i + 1:,}, column {names[j]!r}: {kind} value; remove or impute "
        "that row, then read the data again."
    )


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
