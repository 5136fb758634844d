"""The comparison, its run directory and report, end to end on a small simulated data set."""

from __future__ import annotations

import json
import re

import pytest

from hyperbayes.inference.methods.results import RunOptions
from hyperbayes.inference.workflow import compare as compare_module
from hyperbayes.inference.workflow.cli import main
from hyperbayes.inference.workflow.compare import run_comparison
from hyperbayes.inference.workflow.oracle_check import DISAGREEMENT_Z
from hyperbayes.inference.workflow.registry import METHODS
from hyperbayes.inference.workflow.report import render_report, write_comparison
from hyperbayes.models.data import simulate
from hyperbayes.models.hyperpriors import parse_hyperprior

SMALL = RunOptions(
    hyperprior=parse_hyperprior("halfnormal:2"),
    noise=None,
    noise_prior=parse_hyperprior("halfnormal:2"),
    seed=7,
    draws=300,
    chains=2,
)
SECTIONS = ("joint-map", "eb", "posterior", "nuts", "smc", "cv")


@pytest.fixture(scope="module")
def data():
    return simulate(n=40, d=3, sigma=0.8, noise=1.0, seed=5).data.center()


@pytest.fixture(scope="module")
def result(data):
    centred, centering = data
    return run_comparison(centred, SMALL, centering=centering)


@pytest.fixture(scope="module")
def run_dir(result, data, tmp_path_factory):
    return write_comparison(tmp_path_factory.mktemp("runs") / "run", result, data[0], dataset="sim")


def _numbers(summary: dict) -> dict:
    """summary.json without wall times, the one field that is not reproducible."""
    text = json.dumps(summary, sort_keys=True)
    return json.loads(re.sub(r'"wall_time": [0-9.e+-]+', '"wall_time": null', text))


def test_every_method_has_a_row_and_the_oracle_is_among_them(result):
    assert [r.method for r in result.rows] == list(METHODS)
    failed = {r.method: r.message for r in result.rows if r.status == "failed"}
    assert not failed
    exact = result.row("exact")
    assert exact.log_evidence is not None and exact.sigma > 0
    for r in result.rows:
        assert r.wall_time is not None and r.wall_time >= 0
        assert r.sigma is not None
    assert result.results["joint-map"].degenerate  # the headline finding of the comparison


def test_every_method_is_held_against_the_oracle(result):
    """The real samplers stay within DISAGREEMENT_Z of the exact answers at this seed (the
    planted disagreements are in test_oracle_check.py); point estimators get a quantile."""
    for method in ("nuts", "smc"):
        row = result.row(method)
        assert row.status != "disagrees", row.warnings
        z = {k: v for k, v in row.oracle_z.items() if v is not None}
        assert {"sigma_mean", "sigma_q025", "sigma_q975"} <= set(z)
        assert all(abs(v) < DISAGREEMENT_Z for v in z.values()), (method, z)
    assert result.row("smc").oracle_z["log_evidence"] is not None
    assert result.row("nuts").oracle_z["log_evidence"] is None  # NUTS estimates no evidence
    for method in ("eb", "joint-map", "cv"):
        assert 0 <= result.row(method).oracle_quantile <= 1
    assert result.row("exact").oracle_z is None and result.row("exact").oracle_quantile is None


def test_run_directory_contents(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {"summary.json", "data.csv", "report.html", "exact.nc", "nuts.nc", "smc.nc"} <= names
    summary = json.loads((run_dir / "summary.json").read_text())
    for row in summary["table"]:  # the oracle's keys come after the existing ones
        assert list(row)[-2:] == ["oracle_z", "oracle_quantile"]
    for method_json in summary["methods"].values():
        for key in ("method", "sigma", "sigma_interval", "noise", "log_evidence", "weights",
                    "intercept", "degenerate", "diagnostics", "warnings"):
            assert key in method_json
    assert not list(run_dir.parent.glob(".*partial"))  # no temporary directory left behind


def test_report_is_self_contained_with_every_section(run_dir):
    text = (run_dir / "report.html").read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in text
        body = text.split(f'<section id="{section}">')[1].split("</section>")[0]
        assert "data:image/png;base64," in body, f"section {section} has no figure"
        assert 'class="note"' not in body, f"section {section}: {body[:500]}"
    assert text.index("<h2>Comparison</h2>") < text.index('<section id="joint-map">')
    assert '<th class="oracle">vs exact</th>' in text and "the oracle" in text and "z: mean" in text
    # No external reference: every src is embedded and nothing is fetched.
    assert not re.search(r'(src|href)="(?!data:)', text)
    assert "http://" not in text and "https://" not in text


def test_report_rerenders_identically_from_disk(run_dir):
    assert render_report(run_dir) == (run_dir / "report.html").read_text()
    assert main(["report", str(run_dir)]) == 0


def test_failing_method_is_isolated(data, monkeypatch):
    real = compare_module.get_runner

    def get_runner(name):
        if name == "eb":
            def boom(data, options):
                raise RuntimeError("covariance is not positive definite")
            return boom
        return real(name)

    monkeypatch.setattr(compare_module, "get_runner", get_runner)
    centred, centering = data
    res = run_comparison(centred, SMALL, methods=["exact", "eb", "cv"], centering=centering)
    statuses = {r.method: r.status for r in res.rows}
    assert statuses["eb"] == "failed" and "positive definite" in res.row("eb").message
    assert statuses["exact"] != "failed" and statuses["cv"] != "failed"


def test_same_seed_same_summary(result, data):
    centred, centering = data
    again = run_comparison(centred, SMALL, centering=centering)
    assert _numbers(again.to_json()) == _numbers(result.to_json())


def test_bad_input_leaves_no_directory(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,y\n1,2,3\n4,oops,6\n")
    out = tmp_path / "run"
    assert main(["compare", "--data", str(bad), "--target", "y", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a number" in err[0]
    assert not out.exists()
    assert not list(tmp_path.glob(".*partial"))
