"""The command line's errors: bad input (exit 2) apart from a method failing (exit 1).

Bad input raises one of the project's validation errors (DataError, OptionError,
ImproperPriorError, ...) before any method runs, and is one line naming the input and the fix.
Anything else a method raises, a NumPy ValueError included, is a failure: one line naming the
method, the traceback only with --debug. Each case here was a report of the wrong kind first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import hyperbayes.inference.workflow.api as api
from hyperbayes.inference.workflow.cli import main
from hyperbayes.models.data import DataError

# Words of raw NumPy floating-point warnings, which must not reach the user.
NUMPY_NOISE = re.compile(r"encountered|RuntimeWarning|Traceback")


def write_csv(path: Path, X, y, *, names=("a", "b", "c"), index=False) -> Path:
    header = ([""] if index else []) + [*names[: X.shape[1]], "t"]
    rows = [
        ([str(i)] if index else []) + [repr(float(v)) for v in (*x, t)]
        for i, (x, t) in enumerate(zip(X, y, strict=True))
    ]
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    rng = np.random.default_rng(8)
    X = rng.standard_normal((30, 3))
    y = X @ [1.0, 0.5, -0.3] + 0.5 * rng.standard_normal(30)
    d = tmp_path_factory.mktemp("cli_errors")
    write_csv(d / "good.csv", X, y)
    write_csv(d / "indexed.csv", X, y, index=True)  # as DataFrame.to_csv writes by default
    write_csv(d / "one.csv", X[:, :1], y)
    write_csv(d / "constant_y.csv", X, np.full(30, 3.0))
    write_csv(d / "huge_x.csv", X * [1e307, 1, 1], y)
    write_csv(d / "tiny_x.csv", X * [1e-308, 1, 1], y)
    write_csv(d / "huge_y.csv", X, y * 1e307)
    (d / "unnamed.csv").write_text(",a,t\n0.5,1,3\n1.5,2,4\n2.5,4,1\n")
    (d / "exact_fit.csv").write_text("a,b,t\n1,2,3\n2,1,5\n4,4,1\n")  # N = D + 1, centred
    return d


def run_main(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def fit(method, data_dir, csv="good.csv", *extra):
    return ["fit", method, "--data", str(data_dir / csv), "--target", "t", "--quiet", *extra]


# --------------------------------------------------------------------------- bad input: 2

BAD_INPUT = {
    # Before: exit 0, sigma = 8e-163 (exact); exit 2 "All-NaN slice encountered" (eb).
    "constant target": (
        ("exact", "constant_y.csv"),
        r"the target 't' is constant \(every value is 3\).*--target",
    ),
    "constant target, eb": (("eb", "constant_y.csv"), r"the target 't' is constant"),
    # Before: exit 1 "FloatingPointError: the posterior has no mass" (exact), exit 2 "All-NaN
    # slice encountered" (eb), after raw RuntimeWarnings.
    "noise 1e-300": (
        ("exact", "good.csv", "--noise", "1e-300"),
        r"the noise scale is 1e-300, outside the range these data can use, \S+ to \S+: below "
        r"that, float64 round-off",
    ),
    "noise 1e-300, eb": (("eb", "good.csv", "--noise", "1e-300"), r"the noise scale is 1e-300"),
    # Before: exit 1 "OverflowError: (34, 'Numerical result out of range')".
    "noise 1e300": (
        ("exact", "good.csv", "--noise", "1e300"),
        r"the noise scale is 1e\+300, outside .* times sd\(y\)",
    ),
    # Before: exit 1 "FloatingPointError: the posterior has no mass on the search grid".
    "prior scale 1e-300": (
        ("exact", "good.csv", "--hyperprior", "halfnormal:1e-300"),
        r"the scale of the hyperprior halfnormal:1e-300 is 1e-300, outside the range these data "
        r"can use, \S+ to \S+: .*default hyperprior is halfnormal:",
    ),
    "noise prior scale 1e-300": (
        ("exact", "good.csv", "--noise-prior", "halfnormal:1e-300"),
        r"the scale of the noise prior halfnormal:1e-300 is 1e-300",
    ),
    # Before: exit 2 "expected non-negative integer" (NumPy's words, no mention of the seed).
    "negative seed": (("exact", "good.csv", "--seed", "-1"), r"the seed must be a whole number >= 0"),
    "negative seed, cv": (("cv", "good.csv", "--seed", "-1"), r"the seed must be a whole number"),
    # Before: "halfnormal: scale must be a positive number, got 0.0" (the default prior built
    # from an overflowed sd), after "overflow encountered in square".
    "values near 1e308": (
        ("exact", "huge_x.csv"),
        r"column 'a' has values up to \S+e\+307 in magnitude.*divide column 'a' by 1e\+307",
    ),
    "target near 1e308": (("exact", "huge_y.csv"), r"divide the target 't' by 1e\+30[78]"),
    # Before: exit 0 with every weight 0 (exact), exit 2 "X is all zeros" (eb).
    "values near 1e-308": (
        ("eb", "tiny_x.csv"),
        r"column 'a' has values no larger than \S+e-308 .*multiply column 'a' by 1e\+308",
    ),
    # Before: exit 0 with sigma = 7e73 and only R-hat / divergence warnings.
    "flat prior, NUTS, one feature, known noise": (
        ("nuts", "one.csv", "--hyperprior", "flat", "--noise", "1"),
        r"NUTS needs a proper posterior, but it is improper here: rank\(X\) = 1 .* sigma\^-1",
    ),
    "flat prior, NUTS, one feature, learned noise": (
        ("nuts", "one.csv", "--hyperprior", "flat"),
        r"NUTS needs a proper posterior.*rank\(X\) = 1",
    ),
    "flat prior, NUTS, ARD": (
        ("nuts", "good.csv", "--hyperprior", "flat", "--noise", "1", "--ard"),
        r"NUTS needs a proper posterior.*with ARD each sigma_j",
    ),
    # An exact fit with a learned noise: the exact oracle's own check (ImproperPosteriorError)
    # and NUTS's (the shared rule) are both bad input. Before: exit 0 from NUTS.
    "exact fit, learned noise, exact": (
        ("exact", "exact_fit.csv"),
        r"the posterior is improper: y lies in the column space of X",
    ),
    "exact fit, learned noise, NUTS": (
        ("nuts", "exact_fit.csv"),
        r"NUTS needs a proper posterior.*exact fit.*delta\^-1",
    ),
    "unnamed column that is not an index": (("exact", "unnamed.csv"), r"column 1 of .* has no name"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_naming_it(capsys, tmp_path, data_dir, case):
    (method, csv, *extra), message = BAD_INPUT[case]
    out_dir = tmp_path / "run"
    code, out, err = run_main(capsys, fit(method, data_dir, csv, *extra, "--out", str(out_dir)))
    assert (code, out) == (2, ""), err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("hyperbayes: error: ")
    assert re.search(message, err), err
    assert not NUMPY_NOISE.search(err), err
    assert not out_dir.exists()


def test_debug_shows_the_bad_input_as_an_exception(data_dir):
    with pytest.raises(DataError, match="is constant"):
        main(fit("exact", data_dir, "constant_y.csv", "--debug"))


# --------------------------------------------------------------------------- failures: 1


def _failing(exc: Exception):
    def runner(data, options):
        raise exc

    return lambda method: runner


def test_a_numpy_value_error_inside_a_method_is_a_failure(capsys, monkeypatch, data_dir):
    def all_nan(data, options):  # NumPy's own ValueError, as a method meets it
        np.nanargmax(np.full(3, np.nan))

    monkeypatch.setattr(api, "get_runner", lambda method: all_nan)
    code, out, err = run_main(capsys, fit("eb", data_dir))
    assert (code, out) == (1, "")
    assert err == (
        "hyperbayes: failed: eb: ValueError: All-NaN slice encountered "
        "(rerun with --debug for the traceback)\n"
    )


def test_a_failure_is_one_line_even_when_the_message_is_not(capsys, monkeypatch, data_dir):
    message = "Initial evaluation of model at starting point failed!\nStarting values:\n{...}"
    monkeypatch.setattr(api, "get_runner", _failing(RuntimeError(message)))
    code, _, err = run_main(capsys, fit("joint-map", data_dir))
    assert code == 1
    assert err.splitlines() == [
        "hyperbayes: failed: joint-map: RuntimeError: Initial evaluation of model at starting "
        "point failed! (rerun with --debug for the traceback)"
    ]


def test_debug_shows_the_failure_with_its_traceback(monkeypatch, data_dir):
    monkeypatch.setattr(api, "get_runner", _failing(FloatingPointError("no mass")))
    with pytest.raises(FloatingPointError, match="no mass"):
        main(fit("exact", data_dir, "good.csv", "--debug"))


# --------------------------------------------------------------------------- report


def _summary(**changes):
    summary = {"n": 30, "d": 3, "hyperprior": "halfnormal:1", "table": [], "methods": {}}
    return json.dumps({k: v for k, v in (summary | changes).items() if v is not None})


REPORT_CASES = {
    # Before: exit 2 "Expecting property name enclosed in double quotes: line 2 column 1".
    "corrupt JSON": ('{"n": 30,\n', r"summary.json is not a valid run summary: it is not JSON"),
    # Before: exit 1 "AttributeError: 'list' object has no attribute 'get'".
    "a JSON array": ("[1, 2]", r"summary.json is not a valid run summary: it holds a JSON array"),
    # Before: exit 2 "no such file: DIR/data.csv; check the path given with --data".
    "keys missing": ('{"table": 3}', r"summary.json is not a valid run summary: table, n, d"),
    "a row that is not an object": (_summary(table=[1]), r"not a valid run summary: table missing"),
    "a fit directory": (
        '{"method": "exact", "sigma": 1.0}',
        r"holds the result of one `hyperbayes fit`, not a comparison",
    ),
    "no data.csv": (_summary(), r"has no data.csv"),
    "not UTF-8": (b"\xff\xfe{", r"summary.json is not a valid run summary: it is not JSON"),
}


@pytest.mark.parametrize("case", list(REPORT_CASES))
def test_report_refuses_a_summary_it_cannot_render_and_names_the_file(capsys, tmp_path, case):
    content, message = REPORT_CASES[case]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path = run_dir / "summary.json"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    code, out, err = run_main(capsys, ["report", str(run_dir)])
    assert (code, out) == (2, ""), err
    assert len(err.splitlines()) == 1 and str(run_dir) in err
    assert re.search(message, err), err
    assert not (run_dir / "report.html").exists()


# --------------------------------------------------------------------------- small things


def test_a_pandas_row_index_is_dropped_with_a_warning_not_fitted(capsys, data_dir):
    code, out, err = run_main(capsys, fit("eb", data_dir, "indexed.csv", "--json"))
    assert code == 0, err
    assert err.splitlines() == [
        "hyperbayes: warning: the first column of "
        f"{data_dir / 'indexed.csv'} has no name and holds distinct whole numbers: a row index, "
        "as pandas' DataFrame.to_csv writes by default; it was dropped, not fitted (write the "
        "file with index=False to avoid this warning)."
    ]
    assert len(json.loads(out)["weights"]) == 3


def test_one_draw_nuts_run_carries_its_warning_in_the_json(capsys, data_dir):
    code, out, err = run_main(
        capsys, fit("nuts", data_dir, "good.csv", "--draws", "1", "--noise", "0.5", "--json")
    )
    assert code == 0, err
    warnings = json.loads(out)["warnings"]
    assert any("only 1 draw(s) per chain" in w and "Run more draws" in w for w in warnings)
    assert "draw(s) per chain" not in err  # once, in the result, not also on stderr
    assert "chain dimension to be longer" not in err  # ArviZ's guess about dimension names


def test_compare_marks_nuts_not_applicable_for_an_improper_posterior(capsys, tmp_path, data_dir):
    out_dir = tmp_path / "cmp"
    argv = ["compare", "--data", str(data_dir / "one.csv"), "--target", "t", "--quiet",
            "--hyperprior", "flat", "--noise", "1", "--methods", "nuts,eb", "--out", str(out_dir)]  # fmt: skip
    code, _, err = run_main(capsys, argv)
    assert code == 0, err
    rows = {r["method"]: r for r in json.loads((out_dir / "summary.json").read_text())["table"]}
    assert rows["nuts"]["status"] == "not applicable"
    assert "rank(X) = 1" in rows["nuts"]["message"]
    assert rows["eb"]["status"] in ("ok", "warnings")
