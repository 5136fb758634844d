"""Results that show themselves: HTML and pandas forms of a comparison and of one method's
summary; and figures that leave the caller's matplotlib backend alone (no global change at
import, none after a report is rendered).

The backend checks run in fresh interpreters (``subprocess``): the backend is process-wide
state that this test session has already touched.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

import hyperbayes as hb
from hyperbayes.inference.workflow.report import write_comparison

METHODS = ("exact", "eb", "joint-map", "cv")
#: Sections of the report that must hold figures for the run below (joint MAP, SMC not run
#: there: the report says so instead of drawing).
FIGURE_SECTIONS = ("eb", "posterior", "nuts", "cv")


@pytest.fixture(scope="module")
def data():
    return hb.simulate(n=40, d=3, sigma=0.8, noise=1.0, seed=5).data


@pytest.fixture(scope="module")
def comparison(data):
    return hb.compare(data, methods=list(METHODS), intercept=False, hyperprior="halfnormal:2",
                      noise=1.0, seed=3)


@pytest.fixture(scope="module")
def failed():
    """A hand-made comparison: one method fine, one failed with a message that needs escaping."""
    options = hb.RunOptions(hyperprior=hb.parse_hyperprior("halfnormal:1"), noise=1.0,
                            noise_prior=None, seed=0)
    rows = (
        hb.ComparisonRow("exact", "ok", sigma=0.5, sigma_interval=(0.2, 1.1), noise=1.0,
                         ridge_lambda=4.0, log_evidence=-12.5, wall_time=0.1),
        hb.ComparisonRow("eb", "failed", wall_time=0.2,
                         message="RuntimeError: <Gram> matrix & not positive definite"),
    )
    return hb.Comparison(rows, {}, options, 30, 2)


@pytest.fixture(scope="module")
def run_dir(data, tmp_path_factory):
    """A run directory with the figures of every kind: matplotlib and ArviZ (NUTS)."""
    run = hb.prepare_run(data, intercept=False, hyperprior="halfnormal:2", noise=1.0, seed=3,
                         draws=200, chains=2)
    result = run.compare(["exact", "eb", "nuts", "cv"])
    return write_comparison(tmp_path_factory.mktemp("runs") / "run", result, run.data), result


# ------------------------------------------------------------------ Comparison


def test_comparison_html_has_every_row_and_the_warnings(comparison):
    text = comparison._repr_html_()
    assert text.count("<tr") == len(METHODS) + 1  # the header and one row per method
    for method in METHODS:
        assert f"<td>{method}</td>" in text
    jm = comparison.results["joint-map"]
    assert jm.degenerate and jm.warnings
    first_words = jm.warnings[0].split(":")[0]  # "Joint MAP has no answer here"
    assert first_words in text
    assert text.index("</table>") < text.index(first_words)  # warnings follow the table


def test_comparison_html_shows_a_failure_escaped(failed):
    text = failed._repr_html_()
    assert '<tr class="failed"><td>eb</td><td>failed</td>' in text
    assert "&lt;Gram&gt; matrix &amp; not positive definite" in text
    assert "<Gram>" not in text


def test_comparison_to_pandas(comparison, failed):
    frame = comparison.to_pandas()
    assert list(frame.index) == list(METHODS) and frame.index.name == "method"
    assert list(frame.columns) == [
        "status", "sigma", "sigma_lower", "sigma_upper", "noise", "lambda", "log_evidence",
        "heldout_error", "wall_time", "warnings", "message", "oracle_z_sigma_mean",
        "oracle_z_sigma_q025", "oracle_z_sigma_q975", "oracle_z_log_evidence", "oracle_quantile",
    ]
    for row in comparison.rows:
        line = frame.loc[row.method]
        assert line["status"] == row.status
        assert line["sigma"] == row.sigma and line["noise"] == row.noise
        assert line["lambda"] == row.ridge_lambda
        assert line["warnings"] == row.warnings
        if row.sigma_interval:
            assert (line["sigma_lower"], line["sigma_upper"]) == row.sigma_interval
    assert math.isnan(frame.loc["joint-map", "sigma_lower"])  # no interval: NaN, not None
    assert frame.loc["cv", "heldout_error"] == comparison.results["cv"].extra["cv_score"]
    assert frame.loc["exact", "log_evidence"] == comparison.results["exact"].log_evidence
    for method in ("eb", "joint-map", "cv"):  # point estimates, placed in the exact posterior
        assert frame.loc[method, "oracle_quantile"] == comparison.row(method).oracle_quantile
        assert math.isnan(frame.loc[method, "oracle_z_sigma_mean"])
    gone = failed.to_pandas().loc["eb"]
    assert gone["status"] == "failed" and "not positive definite" in gone["message"]
    assert math.isnan(gone["sigma"])


def test_report_table_is_the_comparisons_table(run_dir):
    """The report (rendered from summary.json) and Jupyter show the same table."""
    path, result = run_dir
    report = (path / "report.html").read_text()
    table = result._repr_html_().split("<table>")[1].split("</table>")[0]
    assert f"<h2>Comparison</h2><table>{table}</table>" in report


# ------------------------------------------------------------------ MethodSummary


def test_method_summary_html_has_its_fields_and_warnings(comparison):
    jm = comparison.results["joint-map"]
    text = jm._repr_html_()
    assert "<b>joint-map</b>" in text
    assert "<th>sigma</th>" in text and "<th>degenerate</th><td>True</td>" in text
    assert "<th>kind</th>" in text  # a method-specific scalar
    assert "collapse_path" not in text  # ... but not its structured extras
    assert jm.warnings[0].split(":")[0] in text
    eb = comparison.results["eb"]
    assert f"<td>{eb.sigma:.6g}</td>" in eb._repr_html_()


def test_method_summary_html_escapes(comparison):
    from dataclasses import replace

    odd = replace(comparison.results["eb"], warnings=("<script>alert(1)</script>",))
    text = odd._repr_html_()
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_method_summary_to_pandas(comparison):
    import pandas as pd

    eb = comparison.results["eb"]
    frame = eb.to_pandas()
    assert frame.shape[0] == 1 and list(frame.index) == ["eb"] and frame.index.name == "method"
    assert list(frame.columns[:8]) == [
        "sigma", "sigma_lower", "sigma_upper", "noise", "log_evidence", "intercept",
        "wall_time", "degenerate",
    ]
    row = frame.loc["eb"]
    assert row["sigma"] == eb.sigma and row["noise"] == eb.noise
    assert (row["sigma_lower"], row["sigma_upper"]) == eb.sigma_interval
    assert row["lambda"] == eb.extra["lambda"] and row["kind"] == eb.extra["kind"]
    assert row["weights"] == eb.weights and row["warnings"] == eb.warnings
    assert math.isnan(row["intercept"])  # fitted without an intercept
    stacked = pd.concat([s.to_pandas() for s in comparison.results.values()])
    assert list(stacked.index) == list(comparison.results)


def test_html_and_pandas_leave_the_json_alone(comparison):
    before = json.dumps(comparison.to_json(), sort_keys=True)
    comparison._repr_html_(), comparison.to_pandas()
    for s in comparison.results.values():
        s._repr_html_(), s.to_pandas()
    assert json.dumps(comparison.to_json(), sort_keys=True) == before


# ------------------------------------------------------------------ the matplotlib backend


def _run(code: str) -> dict:
    """Run ``code`` in a fresh interpreter without MPLBACKEND; it prints one JSON object."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_figures_selects_no_backend():
    out = _run("""
        import json
        import matplotlib
        import hyperbayes as hb
        hb.figures  # loads pyplot and the report's figures
        import hyperbayes.inference.workflow.report
        print(json.dumps({"backend": matplotlib.get_backend(auto_select=False)}))
    """)
    assert out["backend"] is None  # still unselected: the user's first plot chooses


def test_import_and_report_keep_the_callers_backend(run_dir):
    path, _ = run_dir
    out = _run(f"""
        import json
        import matplotlib
        matplotlib.use("svg")
        import matplotlib.pyplot as plt
        import hyperbayes.inference.workflow.figures
        after_import = matplotlib.get_backend()
        mine = plt.figure()  # a figure of the caller's, open across the render
        from hyperbayes.inference.workflow.report import render_report
        text = render_report({str(path)!r})
        print(json.dumps({{"after_import": after_import, "after_report": matplotlib.get_backend(),
                          "open": plt.get_fignums(), "mine": mine.number, "html": text}}))
    """)
    assert out["after_import"] == "svg"
    assert out["after_report"] == "svg"
    assert out["open"] == [out["mine"]]  # the report closed its figures, and only those
    text = out["html"]
    for section in FIGURE_SECTIONS:
        body = text.split(f'<section id="{section}">')[1].split("</section>")[0]
        assert '<img alt="' in body and "data:image/png;base64," in body, section
        assert 'class="note"' not in body, body[:500]
    assert text.count("<img ") >= len(FIGURE_SECTIONS) + 3  # NUTS: trace, rank, pair (+ energy)
