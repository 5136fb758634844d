"""The model specification: special cases, the shipped data sets, and bad input as DataErrors
that name the column and the fix."""

from __future__ import annotations

import numpy as np
import pytest

from hyperbayes.models.data import DataError, Dataset
from hyperbayes.models.datasets import bcg_table, load_bcg, load_eight_schools
from hyperbayes.models.hyperpriors import Hyperprior
from hyperbayes.models.specification import Factor, Group, specify


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4))
    X[:, 3] = rng.integers(0, 5, 30)
    return Dataset.from_arrays(X, rng.standard_normal(30), feature_names=["a", "b", "c", "site"])


def test_default_is_todays_model(data):
    spec = specify(data.subset(features=["a", "b", "c"]))
    assert spec.intercept and spec.fixed == () and spec.noise is None
    assert [g.columns for g in spec.groups] == [("a", "b", "c")]
    assert spec.n_fixed == 1 and spec.n_unknown_scales == 2


def test_ard_is_one_group_per_column(data):
    spec = specify(data.subset(features=["a", "b"]), ard=True, prior="halfnormal:1")
    assert [g.name for g in spec.groups] == ["a", "b"]
    assert all(g.prior == Hyperprior("halfnormal", (1.0,)) for g in spec.groups)


def test_categorical_from_integer_column_and_strings(data):
    spec = specify(data, fixed=["a"], groups={"w": ["b", "c"]}, categorical={"site": "site"})
    assert spec.factor.n_levels == 5 and spec.factor_group == 1
    assert spec.dense_columns == ("b", "c")
    names = np.array([f"s{int(v)}" for v in data.X[:, 3]])
    spec2 = specify(data.subset(features=["a", "b", "c"]), categorical={"site": names})
    assert spec2.factor.levels == tuple(f"s{k}" for k in range(5))
    np.testing.assert_array_equal(spec2.factor.codes, spec.factor.codes)


def test_loaders():
    es = load_eight_schools(tau_prior="halfcauchy:5")
    assert es.n == 8 and es.factor.n_levels == 8 and es.noise == 1.0 and es.standard_errors
    assert es.groups[0].prior == Hyperprior("halfcauchy", (5.0,))
    np.testing.assert_allclose(es.obs_weights, 1 / np.array([15, 10, 16, 11, 9, 11, 10, 18.0]) ** 2)
    bcg = load_bcg(latitude=True)
    t = bcg_table()
    assert bcg.fixed == ("ablat",) and bcg.n == 13
    # Aronson (1948): log RR = log((4/123) / (11/139)) = -0.8893, v = 0.3256 (metafor's escalc).
    assert t["yi"][0] == pytest.approx(-0.8893, abs=5e-5)
    assert t["vi"][0] == pytest.approx(0.3256, abs=5e-5)
    np.testing.assert_allclose(bcg.obs_weights, 1 / t["vi"])


@pytest.mark.parametrize("bad", [[0.0], [-1.0], [np.nan], [np.inf], [None]])
@pytest.mark.parametrize("kind", ["weights", "standard_errors"])
def test_bad_weights_name_the_problem(data, kind, bad):
    values = np.ones(30, dtype=object)
    values[7] = bad[0]
    with pytest.raises(DataError, match=rf"{kind}.*row 7"):
        specify(data.subset(features=["a", "b"]), **{kind: values})


def test_weights_from_a_column_and_errors_name_the_column(data):
    X = np.abs(data.X) + 0.1
    X[4, 2] = 0.0
    d = Dataset.from_arrays(X, data.y, feature_names=data.feature_names)
    with pytest.raises(DataError, match=r"column 'c'.*non-positive"):
        specify(d.subset(features=["a", "b", "c"]), standard_errors="c")


def test_weights_and_standard_errors_together(data):
    with pytest.raises(DataError, match="not both"):
        specify(data, weights=np.ones(30), standard_errors=np.ones(30))


def test_standard_errors_fix_the_noise(data):
    with pytest.raises(DataError, match="fixed at 1"):
        specify(data.subset(features=["a"]), standard_errors=np.ones(30), noise=2.0)


def test_collinear_fixed_effects_are_named(data):
    X = np.column_stack([data.X[:, :3], 2 * data.X[:, 0] - data.X[:, 1]])
    d = Dataset.from_arrays(X, data.y, feature_names=["a", "b", "c", "d"])
    with pytest.raises(DataError, match=r"collinear: \['a', 'b', 'd'\]"):
        specify(d, fixed=["a", "b", "d"])


def test_constant_fixed_effect_duplicates_the_intercept(data):
    X = np.column_stack([data.X[:, :2], np.full(30, 3.0)])
    with pytest.warns(UserWarning, match="constant"):
        d = Dataset.from_arrays(X, data.y, feature_names=["a", "b", "k"])
    with pytest.raises(DataError, match=r"\['intercept', 'k'\].*duplicates the intercept"):
        specify(d, fixed=["k"])


def test_group_without_columns():
    with pytest.raises(DataError, match="group 'g' has no columns"):
        Group("g")


def test_one_level_categorical(data):
    with pytest.raises(DataError, match="one level"):
        specify(data.subset(features=["a"]), categorical={"site": ["x"] * 30})


def test_one_row_per_level_is_legal():
    f = Factor.from_values("school", list("ABCDEFGH"))
    assert f.n_levels == 8


@pytest.mark.parametrize("missing", [None, "", np.nan])
def test_missing_level_is_an_error(data, missing):
    values = np.array(["x", "y"] * 15, dtype=object)
    values[3] = missing
    with pytest.raises(DataError, match=r"'site' has 1 missing.*row 3"):
        specify(data.subset(features=["a"]), categorical={"site": values})


def test_column_named_twice(data):
    with pytest.raises(DataError, match=r"column 'a' is named twice"):
        specify(data.subset(features=["a", "b"]), fixed=["a"], groups={"g": ["a", "b"]})
    with pytest.raises(DataError, match=r"column 'b' is named twice"):
        specify(data.subset(features=["a", "b"]), groups={"g": ["a", "b"], "h": ["b"]})


def test_unknown_and_unused_columns(data):
    with pytest.raises(DataError, match=r"unknown column 'zz'"):
        specify(data, fixed=["zz"])
    with pytest.raises(DataError, match=r"\['c', 'site'\] are in no group"):
        specify(data, groups={"g": ["a", "b"]})


def test_two_categoricals_are_refused(data):
    with pytest.raises(DataError, match="one random intercept is supported"):
        specify(data.subset(features=["a"]), categorical={"s": ["x", "y"] * 15, "t": ["u", "v", "w"] * 10})


def test_no_penalised_group(data):
    with pytest.raises(DataError, match="no penalised group"):
        specify(data.subset(features=["a"]), fixed=["a"])


def test_fixed_scale_and_prior_conflict():
    with pytest.raises(DataError, match="both a fixed scale and a hyperprior"):
        Group("g", ("a",), prior=Hyperprior("halfnormal", (1.0,)), scale=1.0)
