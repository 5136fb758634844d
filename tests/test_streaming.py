"""Streamed sufficient statistics (Parquet, CSV, Dask) against the in-memory ones.

References: the in-memory statistics of the centred Dataset (``Dataset.center()`` then
``SufficientStats.from_dataset``), computed by NumPy from all rows at once; for the large-mean
case, the two-pass co-moment of the exactly shifted data (x - 1e6 is exact in float64 for x in
[5e5, 2e6], Sterbenz), which has no cancellation at all.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from hyperbayes.inference.methods import cross_validation, empirical_bayes, exact
from hyperbayes.inference.methods.results import RunOptions
from hyperbayes.models.data import DataError, Dataset
from hyperbayes.models.family_stats import FamilyStats
from hyperbayes.models.hyperpriors import parse_hyperprior
from hyperbayes.models.streaming import (
    FOLDS,
    RowsNotHeld,
    StreamedData,
    fold_of_rows,
    stream_data,
    stream_statistics,
)
from hyperbayes.models.sufficient_stats import SufficientStats

#: Streamed = in-memory, relative (Frobenius) error: both are float64 sums of the same terms in
#: different orders; the spread of the data here is O(1) around means O(1-10).
STREAM_RTOL = 1e-12
#: With means 1e6 and unit spread the condition number of the centring is 1e6, so any float64
#: method is accurate to ~1e6 eps ~ 1e-10 at best; the pairwise merge reaches that.
LARGE_MEAN_RTOL = 1e-9
N, D = 1000, 4


def _rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


def _frame(n=N, d=D, seed=0, shift=3.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.arange(1, d + 1) + shift
    y = X @ np.linspace(-1, 1, d) + rng.standard_normal(n) + 2 * shift
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(d)])
    df["y"] = y
    return df


def _dataset(df) -> Dataset:
    return Dataset.from_arrays(df.iloc[:, :-1].to_numpy(), df["y"].to_numpy(),
                               feature_names=list(df.columns[:-1]), target_name="y")


def _write(df, path, fmt, *, rows_per_group=128):
    table = pa.Table.from_pandas(df, preserve_index=False)
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=rows_per_group)
    else:
        pacsv.write_csv(table, path)
    return path


@pytest.fixture(scope="module")
def frame():
    return _frame()


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_streamed_statistics_equal_in_memory(tmp_path, frame, fmt, chunk_rows):
    path = _write(frame, tmp_path / f"d.{fmt}", fmt)
    streamed = stream_data(path, target="y", chunk_rows=chunk_rows, folds=FOLDS)
    centred, centering = streamed.center()
    ref_data, ref_centering = _dataset(frame).center()
    ref = SufficientStats.from_dataset(ref_data)
    got = SufficientStats.from_dataset(centred)  # what every method calls
    assert got.n == ref.n == N
    assert _rel(got.G, ref.G) < STREAM_RTOL
    assert _rel(got.b, ref.b) < STREAM_RTOL
    assert abs(got.v - ref.v) / ref.v < STREAM_RTOL
    assert _rel(centering.x_mean, ref_centering.x_mean) < STREAM_RTOL
    assert abs(centering.y_mean - ref_centering.y_mean) / abs(ref_centering.y_mean) < STREAM_RTOL
    # The K hashed folds come from the same pass and add up to the totals.
    folds = centred.fold_stats
    assert len(folds) == FOLDS and sum(f.n for f in folds) == N
    total = sum(folds[1:], folds[0])
    assert _rel(total.G, ref.G) < STREAM_RTOL
    info = streamed.reading
    assert (info.rows, info.passes, info.format) == (N, 1, fmt)
    assert info.chunks == -(-N // chunk_rows) or fmt == "csv"  # CSV blocks may split further
    assert f"{N:,} rows" in info.describe()


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_family_statistics_with_weights_and_fixed_effects(tmp_path, frame, chunk_rows):
    df = frame.copy()
    rng = np.random.default_rng(5)
    df.insert(0, "age", rng.uniform(20, 60, N))
    df["w"] = rng.uniform(0.5, 2.0, N)
    path = _write(df, tmp_path / "fam.parquet", "parquet")
    res = stream_statistics(path, target="y", fixed=("age",), weights="w", chunk_rows=chunk_rows)
    feats = [f"x{j}" for j in range(D)]
    ref = FamilyStats.from_arrays(df["y"].to_numpy(), fixed=df[["age"]].to_numpy(),
                                  dense=df[feats].to_numpy(), weights=df["w"].to_numpy())
    got, want = res.family.projected(), ref.projected()
    assert res.columns.features == tuple(feats)
    assert got.n == want.n == N - 2  # intercept and age projected off
    assert _rel(got.G, want.G) < STREAM_RTOL and _rel(got.b, want.b) < STREAM_RTOL
    assert abs(got.v - want.v) / want.v < STREAM_RTOL
    assert res.family.log_det_fixed() == pytest.approx(ref.log_det_fixed(), rel=STREAM_RTOL)
    assert res.family.sum_log_omega == pytest.approx(ref.sum_log_omega, rel=STREAM_RTOL)


def test_pairwise_merge_keeps_the_digits_raw_sums_lose(tmp_path):
    """Means 1e6, unit variance: G - n m m^T from raw sums cancels ~12 of 16 digits."""
    n = 20_000
    rng = np.random.default_rng(7)
    Z = 1e6 + rng.standard_normal((n, 3))
    df = pd.DataFrame(Z, columns=["a", "b", "y"])
    path = _write(df, tmp_path / "big_mean.parquet", "parquet", rows_per_group=4096)
    shifted = Z - 1e6  # exact (Sterbenz): the reference has no cancellation
    dev = shifted - shifted.mean(axis=0)
    reference = dev.T @ dev
    # Raw sums, accumulated chunk by chunk as a naive stream would: sum z z^T, sum z.
    S, s = np.zeros((3, 3)), np.zeros(3)
    for lo in range(0, n, 7):
        block = Z[lo : lo + 7]
        S += block.T @ block
        s += block.sum(axis=0)
    raw = S - np.outer(s, s) / n
    assert _rel(raw, reference) > 1e-6  # the raw-sum failure: most digits gone (measured ~1e-3+)
    for chunk_rows in (7, 1000):
        fam = stream_statistics(path, target="y", chunk_rows=chunk_rows).family
        assert _rel(fam.comoment, reference) < LARGE_MEAN_RTOL
        # Each merge rounds the mean to ~1 ulp of 1e6 (1e-16 relative); thousands of merges
        # leave it within ~1e-14.
        assert np.allclose(fam.mean, 1e6 + shifted.mean(axis=0), rtol=1e-13, atol=0)


def test_fold_hash_is_deterministic_balanced_and_chunk_free():
    whole = fold_of_rows(0, 100_000, 10, seed=3)
    pieces = np.concatenate([fold_of_rows(a, 7, 10, seed=3) for a in range(0, 100_000, 7)])[:100_000]
    assert np.array_equal(whole, pieces)
    counts = np.bincount(whole, minlength=10)
    assert counts.min() > 9_700 and counts.max() < 10_300  # ~ 10,000 +- 3 sd of a binomial
    assert not np.array_equal(whole, fold_of_rows(0, 100_000, 10, seed=4))


def test_streamed_kfold_cv_equals_in_memory_cv_with_the_same_folds(tmp_path, frame, monkeypatch):
    path = _write(frame, tmp_path / "cv.parquet", "parquet")
    centred, _ = stream_data(path, target="y", chunk_rows=97, folds=FOLDS, seed=2).center()
    got = cross_validation.cross_validate(centred, folds=FOLDS, seed=2)
    hashed = fold_of_rows(0, N, FOLDS, seed=2)
    monkeypatch.setattr(cross_validation, "fold_indices",
                        lambda n, k, seed: [np.flatnonzero(hashed == f) for f in range(k)])
    want = cross_validation.cross_validate(_dataset(frame).center()[0], folds=FOLDS, seed=2)
    np.testing.assert_allclose(got.score, want.score, rtol=1e-10)
    assert got.lambda_ == pytest.approx(want.lambda_, rel=1e-12)
    assert cross_validation.cross_validate(centred, scheme="gcv").lambda_ == pytest.approx(
        cross_validation.cross_validate(_dataset(frame).center()[0], scheme="gcv").lambda_)
    with pytest.raises(RowsNotHeld, match="leave-one-out needs every row"):
        cross_validation.cross_validate(centred, scheme="loo")


def test_methods_run_from_statistics_alone(tmp_path, frame):
    path = _write(frame, tmp_path / "m.parquet", "parquet")
    centred, _ = stream_data(path, target="y", folds=FOLDS).center()
    memory, _ = _dataset(frame).center()
    with pytest.raises(RowsNotHeld, match="streamed"):
        _ = centred.X
    opts = RunOptions(hyperprior=parse_hyperprior("halfnormal:1"), noise=None,
                      noise_prior=parse_hyperprior("halfnormal:5"))
    for module in (exact, empirical_bayes):
        a, b = module.run(centred, opts), module.run(memory, opts)
        assert a.sigma == pytest.approx(b.sigma, rel=1e-9)
        assert a.log_evidence == pytest.approx(b.log_evidence, rel=1e-12)
        np.testing.assert_allclose(a.weights, b.weights, rtol=1e-8)
    summary = cross_validation.run(centred, opts)
    assert any("HOAG" in w and "streamed" in w for w in summary.warnings)


def _parquet_dir(tmp_path, frames):
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, df in enumerate(frames):
        _write(df, folder / f"part-{i:03d}.parquet", "parquet", rows_per_group=1000)
    return folder


def test_streamed_directory_and_glob_equal_one_file(tmp_path, frame):
    folder = _parquet_dir(tmp_path, [frame.iloc[:300], frame.iloc[300:650], frame.iloc[650:]])
    one = _write(frame, tmp_path / "one.parquet", "parquet")
    ref = stream_data(one, target="y", folds=FOLDS)
    for source in (folder, f"{folder}/part-*.parquet"):
        got = stream_data(source, target="y", folds=FOLDS)
        assert got.reading.files == 3 and got.n == N
        assert _rel(got.center()[0].stats.G, ref.center()[0].stats.G) < STREAM_RTOL
        # The same rows land in the same folds however the files split them.
        assert [f.n for f in got.fold_stats] == [f.n for f in ref.fold_stats]


def test_a_nan_deep_in_a_file_is_reported_with_file_row_and_column(tmp_path):
    df = _frame(n=20_000)
    df.loc[17_312, "x2"] = np.nan
    folder = _parquet_dir(tmp_path, [_frame(n=500, seed=3), df])
    with pytest.raises(DataError, match=r"part-001\.parquet, row 17,313, column 'x2': missing value"):
        stream_data(folder, target="y", chunk_rows=4096)
    csv = _write(df, tmp_path / "nan.csv", "csv")
    with pytest.raises(DataError, match=r"nan\.csv, row 17,313, column 'x2'"):
        stream_data(csv, target="y", chunk_rows=4096)
    arr = df.to_numpy()
    arr[5, 0] = np.inf
    pq.write_table(pa.table({c: arr[:, j] for j, c in enumerate(df.columns)}), tmp_path / "inf.parquet")
    with pytest.raises(DataError, match=r"inf\.parquet, row 6, column 'x0': infinite value"):
        stream_data(tmp_path / "inf.parquet", target="y")


def test_a_missing_column_in_one_file_and_a_corrupt_file_are_named(tmp_path, frame):
    folder = _parquet_dir(tmp_path, [frame.iloc[:500], frame.iloc[500:].drop(columns="x1")])
    with pytest.raises(DataError, match=r"part-001\.parquet has no column\(s\) \['x1'\]"):
        stream_data(folder, target="y")
    bad = tmp_path / "bad"
    bad.mkdir()
    _write(frame, bad / "a.parquet", "parquet")
    (bad / "b.parquet").write_bytes(b"PAR1 this is not parquet at all PAR1")
    with pytest.raises(DataError, match=r"b\.parquet is not a readable Parquet file"):
        stream_data(bad, target="y")
    with pytest.raises(DataError, match="no such file"):
        stream_data(tmp_path / "absent.parquet", target="y")
    with pytest.raises(DataError, match="no file matches"):
        stream_data(f"{tmp_path}/nothing-*.parquet", target="y")


def test_integer_boolean_and_float32_columns_are_read_as_float64(tmp_path, frame):
    """Columns that are not float64 are cast (the float64 ones are read from their buffers)."""
    rng = np.random.default_rng(8)
    table = pa.table({
        "k": pa.array(rng.integers(-(2**40), 2**40, N), pa.int64()),
        "u": pa.array(rng.integers(0, 200, N), pa.uint8()),
        "b": pa.array(rng.random(N) < 0.3),
        "h": pa.array(frame["x0"].to_numpy(np.float32)),
        "y": pa.array(frame["y"].to_numpy()),
    })
    pq.write_table(table, tmp_path / "types.parquet", row_group_size=300)
    dense = np.column_stack([np.asarray(table[c].to_numpy(), dtype=np.float64) for c in "kubh"])
    ref = FamilyStats.from_arrays(frame["y"].to_numpy(), dense=dense)
    for chunk_rows in (7, 1000):
        got = stream_statistics(tmp_path / "types.parquet", target="y", chunk_rows=chunk_rows)
        assert got.columns.features == ("k", "u", "b", "h")
        assert _rel(got.family.comoment, ref.comoment) < STREAM_RTOL
        np.testing.assert_array_equal(got.lo, np.r_[dense.min(axis=0), frame["y"].min()])
        np.testing.assert_array_equal(got.hi, np.r_[dense.max(axis=0), frame["y"].max()])


def test_streamed_data_refuse_constant_columns_like_a_dataset(tmp_path, frame):
    df = frame.copy()
    df["x3"] = 2.5
    path = _write(df, tmp_path / "c.parquet", "parquet")
    with pytest.raises(DataError, match="x3 are constant"):
        stream_data(path, target="y").center()


@pytest.fixture(scope="module")
def local_cluster():
    """Two worker processes, one thread each (started once for the Dask tests of this file)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_dask_local_cluster_equals_in_memory(tmp_path, frame, local_cluster):
    """Two worker processes, one thread each: partition statistics merged in a tree."""
    import dask.array as da
    import dask.dataframe as dd

    from hyperbayes.models.dask_source import dask_data

    ref_data, ref_centering = _dataset(frame).center()
    ref = SufficientStats.from_dataset(ref_data)
    path = _write(frame, tmp_path / "dask.parquet", "parquet")
    single = stream_data(path, target="y", folds=FOLDS)
    from_frame = dask_data(dd.from_pandas(frame, npartitions=6), target="y", folds=FOLDS)
    from_array = SufficientStats.from_dask(
        da.from_array(frame.to_numpy(), chunks=(170, D + 1)), target=-1, intercept=True)
    got, centering = from_frame.center()
    assert from_frame.reading.chunks == 6 and from_frame.n == N
    for stats in (got.stats, from_array):
        assert _rel(stats.G, ref.G) < STREAM_RTOL and _rel(stats.b, ref.b) < STREAM_RTOL
        assert abs(stats.v - ref.v) / ref.v < STREAM_RTOL
    assert _rel(centering.x_mean, ref_centering.x_mean) < STREAM_RTOL
    assert [f.n for f in got.fold_stats] == [f.n for f in single.fold_stats]


def _family_dir(tmp_path, name, sizes, *, seed=1):
    """Parquet files of the given row counts (row groups of 64 rows): age, x0..x3, y, w."""
    rng = np.random.default_rng(seed)
    folder = tmp_path / name
    folder.mkdir()
    frames = []
    for i, n in enumerate(sizes):
        df = _frame(n=n, seed=seed + i)
        df.insert(0, "age", rng.uniform(20, 60, n))
        df["w"] = rng.uniform(0.5, 2.0, n)
        _write(df, folder / f"part-{i}.parquet", "parquet", rows_per_group=64)
        frames.append(df)
    return folder, frames


def test_dask_parquet_pieces_equal_the_single_stream(tmp_path, local_cluster):
    """--dask on a local path: row-group pieces, each read by the streaming reader in a task."""
    from hyperbayes.models.dask_source import parquet_statistics
    from hyperbayes.models.sources import parquet_pieces, resolve, select_columns

    folder, _ = _family_dir(tmp_path, "parts", [300, 0, 700])  # an empty file in the middle
    kw = {"target": "y", "fixed": ("age",), "weights": "w", "folds": FOLDS, "seed": 3, "chunk_rows": 50}
    single = stream_statistics(folder, **kw)
    dist = parquet_statistics(folder, piece_rows=100, **kw)
    assert (dist.info.format, dist.info.rows, dist.info.files, dist.info.passes) == ("dask", N, 3, 1)
    assert "3 Parquet file(s) read by Dask workers" in dist.info.describe()
    assert dist.columns == single.columns
    pairs = list(zip([dist.family, *dist.folds], [single.family, *single.folds], strict=True))
    for got, want in pairs:  # the totals and each hashed fold: the same rows, the same numbers
        assert got.n_rows == want.n_rows
        assert _rel(got.comoment, want.comoment) < STREAM_RTOL
        assert _rel(got.mean, want.mean) < STREAM_RTOL
        assert got.sum_log_omega == pytest.approx(want.sum_log_omega, rel=STREAM_RTOL)
    np.testing.assert_array_equal(dist.lo, single.lo)
    np.testing.assert_array_equal(dist.hi, single.hi)
    # The pieces: whole row groups of >= 100 rows (3 x 128 + 44 in the first file, 5 x 128 +
    # 60 in the last), numbered on from file to file.
    fmt, files = resolve(folder)
    pieces = list(parquet_pieces(files, select_columns(fmt, files, target="y"), min_rows=100))
    assert [p.rows for p in pieces] == [128, 128, 44, 128, 128, 128, 128, 128, 60]
    assert [p.start for p in pieces] == list(np.cumsum([0] + [p.rows for p in pieces[:-1]]))
    assert [p.first_row for p in pieces[3:5]] == [0, 128] and pieces[3].row_groups == (0, 1)


def test_dask_parquet_pieces_report_the_errors_of_the_single_stream(tmp_path, local_cluster):
    """The earliest bad rows' message, word for word, whichever task fails first."""
    from hyperbayes.models.dask_source import parquet_statistics

    folder, frames = _family_dir(tmp_path, "bad", [200, 500, 300])
    frames[1].loc[410, "x2"] = np.nan  # in the 4th piece of part-1
    frames[1].loc[30, "x0"] = np.inf  # ... and an earlier one, in its 1st piece
    frames[2].loc[5, "y"] = np.nan
    for i in (1, 2):
        _write(frames[i], folder / f"part-{i}.parquet", "parquet", rows_per_group=64)
    (folder / "part-3.parquet").write_bytes(b"PAR1 this is not parquet at all PAR1")

    def message(fn, path):
        with pytest.raises(DataError) as err:
            fn(path, target="y", weights="w", chunk_rows=50)
        return str(err.value)

    want = message(stream_statistics, folder)
    assert "part-1.parquet, row 31, column 'x0': infinite value" in want
    assert message(parquet_statistics, folder) == want
    frames[1].loc[30, "x0"] = 1.0  # now the NaN at row 411 is the first
    _write(frames[1], folder / "part-1.parquet", "parquet", rows_per_group=64)
    assert "row 411, column 'x2'" in message(parquet_statistics, folder)
    assert message(parquet_statistics, folder) == message(stream_statistics, folder)
    frames[1].loc[410, "x2"] = frames[2].loc[5, "y"] = 1.0  # only the corrupt file is left
    for i in (1, 2):
        _write(frames[i], folder / f"part-{i}.parquet", "parquet", rows_per_group=64)
    assert "part-3.parquet is not a readable Parquet file" in message(parquet_statistics, folder)
    (folder / "part-3.parquet").unlink()
    _write(frames[2].drop(columns="x1"), folder / "part-2.parquet", "parquet")
    assert message(parquet_statistics, folder) == message(stream_statistics, folder)
    assert "part-2.parquet has no column(s) ['x1']" in message(parquet_statistics, folder)
    csv = _write(frames[0], tmp_path / "d.csv", "csv")
    with pytest.raises(DataError, match="is CSV"):
        parquet_statistics(csv, target="y")


def test_streamed_data_is_what_the_methods_take(tmp_path, frame):
    path = _write(frame, tmp_path / "s.parquet", "parquet")
    data = stream_data(path, target="y")
    assert isinstance(data, StreamedData)
    assert (data.n, data.d, data.feature_names, data.target_name) == (N, D, tuple(frame.columns[:-1]), "y")
    assert data.fold_stats is None  # folds only when asked for (CV)
    with pytest.raises(RowsNotHeld, match="needs the folds"):
        cross_validation.cross_validate(data.center()[0])


def test_statistics_from_columns_equal_those_from_the_matrix():
    """The prefetched pass's column route (no n x K matrix) gives the same statistics,
    bit for bit, including on data whose means dwarf their spread."""
    from hyperbayes.models.family_stats import FamilyStats

    rng = np.random.default_rng(5)
    for n in (1, 7, 1000, 70_000):  # 70,000 > one block of rows
        Z = np.asfortranarray(rng.normal(1e6, 1.0, size=(n, 5)))
        a = FamilyStats.from_matrix(Z, n_fixed_columns=1, n_dense=3)
        b = FamilyStats.from_columns([Z[:, j].copy() for j in range(5)], n_fixed_columns=1, n_dense=3)
        np.testing.assert_array_equal(a.within, b.within)
        np.testing.assert_array_equal(a.level_mean, b.level_mean)
        assert (a.n_rows, a.level_weight.tolist()) == (b.n_rows, b.level_weight.tolist())
