"""The model-comparison table (inference/evidence_comparison.py): Bayes factors vs exact."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hyperbayes.inference.workflow.evidence_comparison import (
    Candidate,
    compare_evidence,
    polynomial_dataset,
)
from hyperbayes.models.data import DataError, simulate

#: |SMC log BF - exact log BF| <= max(ABS_TOL, SE_TOL * se of the log BF): the same rule as the
#: evidence itself (tests/test_smc.py), applied to a difference of two independent runs.
ABS_TOL = 0.2
SE_TOL = 4.0


@pytest.fixture(scope="module")
def data():
    # D = 3, the last weight truly zero: the subset without it should win by Occam's razor.
    sim = simulate(n=40, d=3, sigma=1.0, noise=1.0, seed=11)
    X = sim.data.X.copy()
    y = X[:, :2] @ sim.weights[:2] + np.random.default_rng(0).standard_normal(40)
    from hyperbayes.models.data import Dataset

    return Dataset.from_arrays(X, y)


@pytest.fixture(scope="module")
def table(data):
    candidates = [
        Candidate("halfnormal:1", data, "halfnormal:1", noise=1.0),
        Candidate("halfnormal:0.05", data, "halfnormal:0.05", noise=1.0),
        Candidate("x0,x1 only", data.subset(features=["x0", "x1"]), "halfnormal:1", noise=1.0),
    ]
    return compare_evidence(candidates, draws=500, chains=4, seed=3)


def test_bayes_factors_match_exact_in_sign_and_size(table):
    for name in ("halfnormal:0.05", "x0,x1 only"):
        log_bf, se, exact = table.log_bayes_factor(name, "halfnormal:1")
        assert exact is not None
        assert np.sign(log_bf) == np.sign(exact), (name, log_bf, exact)
        assert abs(log_bf - exact) <= max(ABS_TOL, SE_TOL * se), (name, log_bf, exact, se)
    # The shrunk prior is strongly worse (weights of size ~1 under a prior scale of 0.05).
    assert table.row("halfnormal:0.05").exact_log_bf < -5


def test_table_rows_are_consistent(table):
    ref = table.row("halfnormal:1")
    assert ref.log_bf == 0.0 and ref.log_bf_se == 0.0 and table.reference == "halfnormal:1"
    for r in table.rows:
        assert r.error == pytest.approx(r.log_evidence - r.exact_log_evidence)
        assert r.log_bf == pytest.approx(r.log_evidence - ref.log_evidence)
        assert r.n_stages >= 1
    assert table.row("x0,x1 only").d == 2
    assert table.best == max(table.rows, key=lambda r: r.log_evidence).name
    text = table.to_text()
    assert "halfnormal:0.05" in text and "log BF" in text
    out = json.loads(json.dumps(table.to_json()))
    assert [r["name"] for r in out["rows"]] == [r.name for r in table.rows]


def test_different_targets_are_refused(data):
    other = data.subset(rows=np.arange(30))
    with pytest.raises(DataError, match="different target"):
        compare_evidence(
            [
                Candidate("a", data, "halfnormal:1", noise=1.0),
                Candidate("b", other, "halfnormal:1", noise=1.0),
            ],
            seed=0,
        )


@pytest.mark.parametrize(
    "names, reference, match",
    [(["a"], None, "at least two"), (["a", "a"], None, "unique"), (["a", "b"], "c", "reference")],
)
def test_bad_tables_are_refused(data, names, reference, match):
    cands = [Candidate(n, data, "halfnormal:1", noise=1.0) for n in names]
    with pytest.raises(ValueError, match=match):
        compare_evidence(cands, seed=0, reference=reference)


def test_candidate_needs_exactly_one_noise(data):
    with pytest.raises(ValueError, match="exactly one"):
        Candidate("a", data, "halfnormal:1")


def test_polynomial_dataset():
    x = np.linspace(-1, 2, 25)
    y = 1 + x - x**2
    d3 = polynomial_dataset(x, y, degree=3)
    assert d3.feature_names == ("x^1", "x^2", "x^3") and d3.X.shape == (25, 3)
    np.testing.assert_allclose(d3.X.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(d3.X.std(axis=0), 1)
    np.testing.assert_allclose(d3.y, y - y.mean())
    # Same target whatever the degree, so the evidences are comparable.
    np.testing.assert_array_equal(polynomial_dataset(x, y, degree=1).y, d3.y)
    with pytest.raises(ValueError, match="degree"):
        polynomial_dataset(x, y, degree=0)
    assert math.isclose(np.corrcoef(d3.X[:, 0], x)[0, 1], 1.0)
