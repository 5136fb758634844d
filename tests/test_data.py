"""Dataset validation, CSV input/output, centring, the built-in diabetes data, simulation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import sklearn.datasets
from sklearn.linear_model import LinearRegression

from hyperbayes.models.data import (
    Centering,
    DataError,
    Dataset,
    DataWarning,
    load_csv,
    load_diabetes,
    simulate,
)

# sklearn scales the same raw integers with a differently ordered float64 computation.
DIABETES_ATOL = 1e-12
# Least-squares intercepts from two solvers on a well-conditioned problem.
LSTSQ_RTOL = 1e-10


def small_xy(n=6, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal(n)


# --------------------------------------------------------------------------- from_arrays


@pytest.mark.parametrize(
    ("where", "value", "kind"),
    [
        ("X", np.nan, "NaN"),
        ("X", np.inf, "infinite"),
        ("y", np.nan, "NaN"),
        ("y", -np.inf, "infinite"),
    ],
)
def test_non_finite_values_are_rejected(where, value, kind):
    X, y = small_xy()
    if where == "X":
        X[2, 1] = value
    else:
        y[4] = value
    with pytest.raises(DataError, match=rf"{where} has 1 non-finite value\(s\) \(first: {kind}"):
        Dataset.from_arrays(X, y)


def test_mismatched_lengths():
    X, y = small_xy()
    with pytest.raises(DataError, match="X has 6 rows but y has 5 values"):
        Dataset.from_arrays(X, y[:5])


def test_empty_data():
    with pytest.raises(DataError, match="empty"):
        Dataset.from_arrays(np.empty((0, 3)), np.empty(0))


def test_zero_features():
    with pytest.raises(DataError, match="no feature columns"):
        Dataset.from_arrays(np.empty((5, 0)), np.zeros(5))


def test_non_numeric_entries():
    X = [["1.0", "a"], ["2", "3"]]
    with pytest.raises(DataError, match="X could not be read as numbers"):
        Dataset.from_arrays(X, [1.0, 2.0])
    with pytest.raises(DataError, match="y could not be read as numbers"):
        Dataset.from_arrays([[1.0], [2.0]], [1.0, "b"])


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (np.ones(4), np.ones(4), "X is 1-D"),
        (np.ones((2, 2, 2)), np.ones(2), "X must be 2-D"),
        (np.ones((3, 2)), np.ones((3, 2)), "y must be 1-D"),
    ],
)
def test_wrong_shapes(X, y, match):
    with pytest.raises(DataError, match=match):
        Dataset.from_arrays(X, y)


def test_column_vector_target_is_accepted():
    X, y = small_xy()
    assert Dataset.from_arrays(X, y[:, None]).y.shape == (6,)


def test_feature_names():
    X, y = small_xy()
    assert Dataset.from_arrays(X, y).feature_names == ("x0", "x1", "x2")
    with pytest.raises(DataError, match="2 feature names were given for 3 columns"):
        Dataset.from_arrays(X, y, feature_names=["a", "b"])
    with pytest.raises(DataError, match=r"duplicate column name\(s\) \['a'\]"):
        Dataset.from_arrays(X, y, feature_names=["a", "b", "a"])
    with pytest.raises(DataError, match=r"duplicate column name\(s\) \['y'\]"):
        Dataset.from_arrays(X, y, feature_names=["a", "b", "y"])  # clashes with the target


def test_arrays_are_read_only_and_copied():
    X, y = small_xy()
    data = Dataset.from_arrays(X, y)
    X[0, 0] = 99.0
    assert data.X[0, 0] != 99.0
    with pytest.raises(ValueError, match="read-only"):
        data.X[0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        data.y[0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.target_name = "z"  # type: ignore[misc]
    assert data.X.dtype == np.float64 and data.X.flags.c_contiguous
    assert (data.n, data.d) == (6, 3)


def test_constant_column_warns_and_centering_refuses_it():
    X, y = small_xy()
    X[:, 1] = 3.0
    with pytest.warns(DataWarning, match="column.*x1 are constant"):
        data = Dataset.from_arrays(X, y)
    assert data.constant_columns() == ("x1",)
    with pytest.raises(DataError, match="x1 are constant.*--no-intercept"):
        data.center()


@pytest.mark.parametrize(
    ("column", "scale", "match"),
    [
        # Near float64's limits: once "non-finite values" (the centring overflowed) and "X is
        # all zeros" (the squares underflowed); now the true cause and the factor.
        ("a", 1e307, r"column 'a' has values up to .*e\+307 .* divide column 'a' by 1e\+307"),
        ("a", 1e-308, r"column 'a' has values no larger than .*multiply column 'a' by 1e\+308"),
        ("a", 1e-310, r"no larger than .*multiply column 'a' by 1e\+310"),  # subnormal
        ("y", 1e40, r"the target 'y' has values up to .*divide the target 'y' by 1e\+40"),
        ("y", 1e-40, r"the target 'y' .* multiply the target 'y' by 1e\+40 .* 1e\+40 times larger"),
    ],
)
def test_magnitudes_float64_cannot_work_with_are_refused_with_the_factor(column, scale, match):
    X, y = small_xy()
    if column == "y":
        y = y * scale
    else:
        X[:, 0] *= scale
    with pytest.raises(DataError, match=match):
        Dataset.from_arrays(X, y, feature_names=["a", "b", "c"])


def test_magnitudes_inside_the_range_and_zeros_are_accepted():
    X, y = small_xy()
    X[:, 0] *= 1e25
    X[0, 1] = 1e-300  # one tiny entry in an ordinary column is fine: the column's scale is 1
    data = Dataset.from_arrays(X, y * 1e-25)
    assert data.center()[0].X[:, 0].max() > 1e24
    X[:, 2] = 0.0
    with pytest.warns(DataWarning, match="constant"):
        Dataset.from_arrays(X, y)


def test_centring_a_constant_target_is_refused():
    X, y = small_xy()
    data = Dataset.from_arrays(X, np.full(6, 3.0), target_name="t")
    with pytest.raises(DataError, match=r"the target 't' is constant \(every value is 3\).*--target"):
        data.center()


def test_n_smaller_than_d_is_allowed_and_explained():
    X, y = small_xy(n=3, d=8)
    data = Dataset.from_arrays(X, y)
    assert (data.n, data.d) == (3, 8)
    note = data.methods_note()
    for method in (
        "marginal likelihood",
        "exact oracle",
        "empirical Bayes",
        "NUTS",
        "SMC",
        "ridge/CV",
    ):
        assert method in note
    assert "w_ML" in note  # what does not work
    assert Dataset.from_arrays(*small_xy(n=8, d=8)).methods_note() is None


# --------------------------------------------------------------------------- centring, subset


def test_center_and_intercept_match_least_squares_with_an_intercept():
    X, y = small_xy(n=40, d=3, seed=1)
    y = y + 5.0
    data, centering = Dataset.from_arrays(X, y).center()
    assert isinstance(centering, Centering)
    np.testing.assert_allclose(data.X.mean(axis=0), 0.0, atol=1e-15)
    assert abs(data.y.mean()) < 1e-14
    np.testing.assert_allclose(centering.x_mean, X.mean(axis=0))
    assert centering.y_mean == pytest.approx(y.mean())
    w, *_ = np.linalg.lstsq(data.X, data.y, rcond=None)
    ref = LinearRegression().fit(X, y)
    np.testing.assert_allclose(w, ref.coef_, rtol=LSTSQ_RTOL)
    assert centering.intercept(w) == pytest.approx(ref.intercept_, rel=LSTSQ_RTOL)
    assert centering.intercept(np.zeros(3)) == pytest.approx(y.mean())


def test_subset():
    X, y = small_xy(n=10, d=3)
    data = Dataset.from_arrays(X, y, feature_names=["a", "b", "c"], target_name="t")
    sub = data.subset([0, 2, 4], features=["c", "a"])
    np.testing.assert_array_equal(sub.X, X[[0, 2, 4]][:, [2, 0]])
    np.testing.assert_array_equal(sub.y, y[[0, 2, 4]])
    assert (sub.feature_names, sub.target_name) == (("c", "a"), "t")
    assert data.subset(np.arange(10) < 5).n == 5
    with pytest.raises(DataError, match=r"unknown feature\(s\) \['z'\]"):
        data.subset(features=["z"])


# --------------------------------------------------------------------------- CSV


def test_csv_round_trip_is_exact(tmp_path):
    X, y = small_xy(n=7, d=3, seed=2)
    X[0, 0] = 1e-300
    y[1] = 0.1 + 0.2  # needs all 17 digits
    names = ["age", "a,b", 'quoted "name"']
    data = Dataset.from_arrays(X, y, feature_names=names, target_name="target")
    path = tmp_path / "data.csv"
    data.to_csv(path)
    back = load_csv(path, target="target")
    np.testing.assert_array_equal(back.X, data.X)
    np.testing.assert_array_equal(back.y, data.y)
    assert back.feature_names == tuple(names)
    assert back.target_name == "target"


def test_csv_target_can_be_any_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,t,b\n1,10,2\n3,20,5\n\n6,30,7\n")  # blank lines are skipped
    data = load_csv(path, target="t")
    assert data.feature_names == ("a", "b")
    np.testing.assert_array_equal(data.X, [[1, 2], [3, 5], [6, 7]])
    np.testing.assert_array_equal(data.y, [10, 20, 30])


@pytest.mark.parametrize(
    ("text", "target", "match"),
    [
        ("a,y\n1,2\n3,nan\n", "y", r"y has 1 non-finite value\(s\) \(first: NaN"),
        ("a,y\ninf,2\n3,4\n", "y", r"X has 1 non-finite value\(s\) \(first: infinite"),
        ("a,y\n1,2\n3,abc\n", "y", r"line 3, column 'y': 'abc' is not a number"),
        ("a,y\n1,2\n,4\n", "y", r"line 3, column 'a': '' is not a number"),
        ("a,y\n1,2\n", "z", r"target column 'z' is not in .*the columns are \['a', 'y'\]"),
        ("a,a,y\n1,2,3\n", "y", r"duplicate column name\(s\) \['a'\]"),
        ("", "y", "is empty"),
        ("a,y\n", "y", "has a header but no data rows"),
        ("a,y\n1,2\n3\n", "y", "line 3 has 1 cells but the header has 2"),
        ("y\n1\n2\n", "y", "no feature columns"),
    ],
)
def test_csv_errors(tmp_path, text, target, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        load_csv(path, target=target)


def test_csv_errors_name_the_line_in_the_file(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("a,y\n\n1,2\n\n\n3,oops\n")  # blank lines still count as lines
    with pytest.raises(DataError, match="line 6, column 'y'"):
        load_csv(path, target="y")


def test_csv_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("age,y\n1,2\n3,5\n".encode("utf-8-sig"))
    assert load_csv(path, target="y").feature_names == ("age",)
    assert load_csv(path, target="age").target_name == "age"


def test_csv_constant_column_warns(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("a,k,y\n1,5,2\n2,5,3\n4,5,1\n")
    with pytest.warns(DataWarning, match="k are constant"):
        load_csv(path, target="y")


def test_csv_row_index_from_pandas_is_dropped_with_a_warning(tmp_path):
    path = tmp_path / "indexed.csv"
    path.write_text(",a,b,t\n0,1.5,2,3\n1,2.5,1,4\n2,0.5,7,1\n")  # DataFrame.to_csv(path)
    with pytest.warns(DataWarning, match="no name and holds distinct whole numbers.*dropped"):
        data = load_csv(path, target="t")
    assert data.feature_names == ("a", "b")
    np.testing.assert_array_equal(data.X[:, 0], [1.5, 2.5, 0.5])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (",a,t\n0.5,1,3\n1.5,2,4\n", "column 1 of .* has no name"),  # not a row index
        ("a,,t\n1,0,3\n2,1,4\n", "column 2 of .* has no name"),  # not the first column
        (",a,t\nx,1,3\ny,2,4\n", r"column 1 of .* has no name.*line 2 holds 'x'"),
    ],
)
def test_csv_other_unnamed_columns_are_refused(tmp_path, text, match):
    path = tmp_path / "unnamed.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        load_csv(path, target="t")


def test_dataframe_row_index_read_back_by_pandas_is_dropped(tmp_path):
    import pandas as pd

    from hyperbayes.inference.workflow.api import prepare_run

    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0, 3.0], "b": [0.5, 0.1, 0.2, 0.9], "t": [1, 3, 2, 5]})
    frame.to_csv(tmp_path / "f.csv")  # with the index, as pandas writes by default
    back = pd.read_csv(tmp_path / "f.csv")
    assert back.columns[0] == "Unnamed: 0"
    with pytest.warns(DataWarning, match="dropped"):
        run = prepare_run(back, target="t")
    assert run.data.feature_names == ("a", "b")


def test_csv_file_problems(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_csv(tmp_path / "missing.csv", target="y")
    with pytest.raises(DataError, match="is a directory"):
        load_csv(tmp_path, target="y")
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match="could not be decoded"):
        load_csv(binary, target="y")


# --------------------------------------------------------------------------- diabetes


def test_diabetes_matches_scikit_learn():
    data = load_diabetes()
    ref = sklearn.datasets.load_diabetes()
    assert (data.n, data.d) == (442, 10)
    assert data.feature_names == tuple(ref.feature_names)
    np.testing.assert_allclose(data.X, ref.data, rtol=0, atol=DIABETES_ATOL)
    np.testing.assert_array_equal(data.y, ref.target)
    np.testing.assert_allclose(np.linalg.norm(data.X, axis=0), 1.0, rtol=1e-14)


def test_diabetes_raw_matches_scikit_learn():
    raw = load_diabetes(scaled=False)
    ref = sklearn.datasets.load_diabetes(scaled=False)
    np.testing.assert_array_equal(raw.X, ref.data)
    np.testing.assert_array_equal(raw.y, ref.target)
    assert raw.target_name == "progression"


# --------------------------------------------------------------------------- simulate


def test_simulate_is_reproducible_and_leaves_global_rng_alone():
    before = np.random.get_state()[1].copy()  # noqa: NPY002 (checking the global RNG)
    a = simulate(n=15, d=4, sigma=0.8, noise=0.3, seed=5)
    b = simulate(n=15, d=4, sigma=0.8, noise=0.3, seed=np.random.default_rng(5))
    c = simulate(n=15, d=4, sigma=0.8, noise=0.3, seed=6)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    np.testing.assert_array_equal(a.data.X, b.data.X)
    np.testing.assert_array_equal(a.data.y, b.data.y)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert not np.array_equal(a.data.y, c.data.y)
    assert (a.data.n, a.data.d, a.weights.shape) == (15, 4, (4,))
    assert (a.sigma, a.noise) == (0.8, 0.3)


def test_simulate_draws_from_the_model():
    # sigma = 0 gives w = 0, so y is pure noise with the stated scale; with a large N its sample
    # standard deviation is within 5 standard errors (sd / sqrt(2N)) of the truth.
    sim = simulate(n=20000, d=2, sigma=0.0, noise=0.7, seed=1)
    np.testing.assert_array_equal(sim.weights, 0.0)
    assert abs(sim.data.y.std() - 0.7) < 5 * 0.7 / np.sqrt(2 * 20000)
    sim = simulate(n=5, d=3, sigma=1.0, noise=1e-9, seed=2)
    np.testing.assert_allclose(sim.data.y, sim.data.X @ sim.weights, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs",
    [dict(n=0, d=2), dict(n=5, d=0), dict(sigma=-1.0), dict(noise=0.0), dict(noise=np.nan)],
)
def test_simulate_rejects_bad_arguments(kwargs):
    args = dict(n=5, d=2, sigma=1.0, noise=1.0, seed=0) | kwargs
    with pytest.raises(ValueError, match="must be"):
        simulate(**args)
