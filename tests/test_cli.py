"""The ``hyperbayes`` command: the JSON contract, exit codes, one-line errors, run directories.

Most tests call ``main(argv)`` in-process (fast); one runs the installed console script.
"""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

import hyperbayes.inference.workflow.api as api
import hyperbayes.inference.workflow.rundir as rundir
from hyperbayes.inference.methods.arviz_io import load_datatree
from hyperbayes.inference.methods.exact import exact_posterior
from hyperbayes.inference.methods.results import MethodSummary, json_safe
from hyperbayes.inference.workflow.cli import main
from hyperbayes.models.data import Dataset, load_csv, simulate

REQUIRED_KEYS = {
    "method",
    "sigma",
    "sigma_interval",
    "noise",
    "log_evidence",
    "weights",
    "intercept",
    "degenerate",
    "diagnostics",
    "warnings",
}
# The CLI and a direct call run the same deterministic quadrature on the same data.
SAME_RTOL = 1e-12
DRAWS = "200"  # enough for the run directory's DataTree; the exact summary does not use draws


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    sim = simulate(n=30, d=3, sigma=1.0, noise=0.5, seed=21)
    data = Dataset.from_arrays(
        sim.data.X, sim.data.y + 4.0, feature_names=["a", "b", "c"], target_name="t"
    )
    path = tmp_path_factory.mktemp("cli") / "data.csv"
    data.to_csv(path)
    return path


def fit_args(csv_path, *extra):
    return [
        "fit",
        "exact",
        "--data",
        str(csv_path),
        "--target",
        "t",
        "--hyperprior",
        "halfnormal:2",
        "--draws",
        DRAWS,
        *extra,
    ]


def run_main(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def leftovers(parent: Path) -> list[str]:
    """Temporary run directories that an atomic write must not leave behind."""
    return sorted(p.name for p in parent.iterdir() if p.name.endswith(".partial"))


# --------------------------------------------------------------------------- success


@pytest.fixture(scope="module")
def fitted(csv_path, tmp_path_factory):
    """One learned-noise exact fit with --json and --out (module-scoped: run once)."""
    out_dir = tmp_path_factory.mktemp("runs") / "run1"
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = fit_args(csv_path, "--noise-prior", "halfnormal:1", "--json", "--out", str(out_dir))
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = main(argv)
    return code, stdout.getvalue(), stderr.getvalue(), out_dir


def test_fit_exact_prints_one_json_object_with_the_contract_keys(fitted):
    code, out, err, _ = fitted
    assert code == 0, err
    assert out.endswith("\n") and out.count("\n") == 1  # exactly one line on stdout
    payload = json.loads(out)
    assert isinstance(payload, dict)
    assert REQUIRED_KEYS <= payload.keys()
    assert payload["method"] == "exact"
    assert payload["degenerate"] is False
    assert len(payload["weights"]) == 3
    assert payload["hyperprior"] == "halfnormal:2"
    assert payload["noise_prior"] == "halfnormal:1"
    lo, hi = payload["sigma_interval"]
    assert lo < payload["sigma"] < hi
    assert "Traceback" not in err


def test_fit_exact_reports_the_exact_posterior(fitted, csv_path):
    payload = json.loads(fitted[1])
    data, centering = load_csv(csv_path, target="t").center()
    post = exact_posterior(data, hyperprior="halfnormal:2", noise_prior="halfnormal:1")
    assert payload["sigma"] == pytest.approx(post.sigma_mean, rel=SAME_RTOL)
    assert payload["noise"] == pytest.approx(post.noise_mean, rel=SAME_RTOL)
    assert payload["log_evidence"] == pytest.approx(post.log_evidence, rel=SAME_RTOL)
    np.testing.assert_allclose(payload["weights"], post.w_mean, rtol=SAME_RTOL)
    assert payload["intercept"] == pytest.approx(centering.intercept(post.w_mean), rel=SAME_RTOL)


def test_out_writes_summary_and_draws(fitted):
    _, out, _, out_dir = fitted
    assert sorted(p.name for p in out_dir.iterdir()) == ["exact.nc", "summary.json"]
    assert json.loads((out_dir / "summary.json").read_text()) == json.loads(out)
    tree = load_datatree(out_dir / "exact.nc")
    post = tree["posterior"]
    assert post["sigma"].shape == (1, int(DRAWS))
    assert list(post["w"].coords["feature"].values) == ["a", "b", "c"]
    assert leftovers(out_dir.parent) == []


def test_human_readable_output(capsys, csv_path):
    code, out, err = run_main(capsys, fit_args(csv_path, "--noise", "0.5", "--quiet"))
    assert code == 0, err
    assert out.splitlines()[0] == "method: exact"
    assert "intercept:" in out and "sigma 95% interval:" in out
    assert err == ""


def test_no_intercept_and_progress(capsys, csv_path):
    code, out, err = run_main(
        capsys, fit_args(csv_path, "--noise", "0.5", "--no-intercept", "--json")
    )
    assert code == 0
    assert json.loads(out)["intercept"] is None
    assert err.startswith("hyperbayes: running exact on N = 30, D = 3")


def test_data_warning_is_one_line(capsys, tmp_path):
    path = tmp_path / "k.csv"
    path.write_text("a,k,t\n1,5,2\n2,5,3\n4,5,1\n3,5,0\n")
    code, out, err = run_main(
        capsys,
        ["fit", "exact", "--data", str(path), "--target", "t", "--no-intercept", "--noise", "1",
         "--hyperprior", "halfnormal:1", "--json", "--quiet", "--draws", "10"],
    )  # fmt: skip
    assert code == 0
    json.loads(out)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hyperbayes: warning: column(s) k are constant")


def test_n_smaller_than_d_is_noted(capsys, tmp_path):
    sim = simulate(n=4, d=6, sigma=1.0, noise=0.5, seed=3)
    path = tmp_path / "wide.csv"
    sim.data.to_csv(path)
    code, out, err = run_main(
        capsys,
        ["fit", "exact", "--data", str(path), "--target", "y", "--noise", "0.5",
         "--hyperprior", "halfnormal:1", "--json", "--draws", "10"],
    )  # fmt: skip
    assert code == 0, err
    assert "hyperbayes: note: N = 4 < D = 6" in err
    assert len(json.loads(out)["weights"]) == 6


# --------------------------------------------------------------------------- bad input


def _bad_csv(tmp_path: Path, cell: str) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text(f"a,b,t\n1,2,3\n4,{cell},6\n7,8,10\n")
    return path


BAD_INPUTS = {
    "missing file": (lambda p, c: ["--data", str(p / "nope.csv"), "--target", "t"], "no such file"),
    "missing --target": (lambda p, c: ["--data", str(c)], "--data needs --target"),
    "--target without --data": (lambda p, c: ["--target", "t"], "--target needs --data"),
    "missing target column": (
        lambda p, c: ["--data", str(c), "--target", "z"],
        "target column 'z' is not in",
    ),
    "non-numeric cell": (
        lambda p, c: ["--data", str(_bad_csv(p, "x7")), "--target", "t"],
        "line 3, column 'b': 'x7' is not a number",
    ),
    "NaN cell": (
        lambda p, c: ["--data", str(_bad_csv(p, "nan")), "--target", "t"],
        r"X has 1 non-finite value\(s\)",
    ),
    "bad hyperprior": (
        lambda p, c: ["--data", str(c), "--target", "t", "--hyperprior", "normal:1"],
        "unknown hyperprior 'normal:1'; valid forms",
    ),
    "bad noise prior": (
        lambda p, c: ["--data", str(c), "--target", "t", "--noise-prior", "halfnormal:-2"],
        "must be a positive number",
    ),
    "flat hyperprior for exact": (
        lambda p, c: ["--data", str(c), "--target", "t", "--hyperprior", "flat"],
        "needs a proper hyperprior",
    ),
    "negative noise": (
        lambda p, c: ["--data", str(c), "--target", "t", "--noise", "-1"],
        "noise scale must be a positive number",
    ),
    "noise prior with known noise": (
        lambda p, c: ["--data", str(c), "--target", "t", "--noise", "1", "--noise-prior", "flat"],
        "--noise-prior goes with a learned noise",
    ),
    "zero draws": (
        lambda p, c: ["--data", str(c), "--target", "t", "--draws", "0"],
        "draws must be at least 1",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, csv_path, case):
    make_args, message = BAD_INPUTS[case]
    out_dir = tmp_path / "run"
    argv = ["fit", "exact", *make_args(tmp_path, csv_path), "--out", str(out_dir), "--quiet"]
    code, out, err = run_main(capsys, argv)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hyperbayes: error: ")
    assert "Traceback" not in err
    assert re.search(message, lines[0]), lines[0]
    assert not out_dir.exists()
    assert leftovers(tmp_path) == []


def test_bad_input_is_one_line_without_quiet(capsys, tmp_path):
    code, out, err = run_main(
        capsys, ["fit", "exact", "--data", str(tmp_path / "x.csv"), "--target", "t"]
    )
    assert (code, out, len(err.splitlines())) == (2, "", 1)


def test_existing_out_is_refused_and_left_alone(capsys, tmp_path, csv_path):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")
    code, out, err = run_main(
        capsys, fit_args(csv_path, "--noise", "1", "--out", str(out_dir), "--quiet")
    )
    assert code == 2 and out == ""
    assert err.splitlines() == [err.strip()] and "exists already" in err
    assert [p.name for p in out_dir.iterdir()] == ["keep.txt"]
    assert (out_dir / "keep.txt").read_text() == "mine"


def test_unknown_method_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "bogus"])
    assert info.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


# --------------------------------------------------------------------------- failures


def test_a_failing_method_exits_1_with_one_line(capsys, monkeypatch, tmp_path, csv_path):
    def broken(data, options):
        raise RuntimeError("the sampler fell over")

    monkeypatch.setattr(api, "get_runner", lambda method: broken)
    out_dir = tmp_path / "run"
    code, out, err = run_main(capsys, fit_args(csv_path, "--out", str(out_dir), "--quiet"))
    assert code == 1 and out == ""
    assert err == (
        "hyperbayes: failed: exact: RuntimeError: the sampler fell over "
        "(rerun with --debug for the traceback)\n"
    )
    assert not out_dir.exists()


def test_a_linear_algebra_failure_is_a_failure_not_bad_input(capsys, monkeypatch, csv_path):
    # numpy's LinAlgError is a ValueError, but only the project's validation errors mean bad input.
    def singular(data, options):
        np.linalg.cholesky(-np.eye(2))

    monkeypatch.setattr(api, "get_runner", lambda method: singular)
    code, out, err = run_main(capsys, fit_args(csv_path, "--quiet"))
    assert code == 1 and out == ""
    assert err.startswith("hyperbayes: failed: exact: LinAlgError:") and err.count("\n") == 1


def test_failure_while_writing_leaves_nothing(capsys, monkeypatch, tmp_path, csv_path):
    def half_write(tree, path):
        Path(path).write_bytes(b"\x89HDF partial")  # some bytes reach the disk, then it fails
        raise OSError("No space left on device")

    monkeypatch.setattr(rundir, "save_datatree", half_write)
    out_dir = tmp_path / "run"
    code, out, err = run_main(
        capsys, fit_args(csv_path, "--noise", "1", "--out", str(out_dir), "--json", "--quiet")
    )
    assert code == 1
    assert out == ""  # nothing is printed as if the run had succeeded
    # The method succeeded; the command failed while writing, so the message names the command.
    assert err == (
        "hyperbayes: failed: fit: OSError: No space left on device "
        "(rerun with --debug for the traceback)\n"
    )
    assert not out_dir.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- JSON contract


def test_summary_json_contract():
    s = MethodSummary(
        method="eb",
        sigma=np.float64(1.5),
        sigma_interval=None,
        noise=None,
        log_evidence=float("nan"),
        weights=(np.float64(0.5), -1.0),
        degenerate=np.bool_(True),
        diagnostics={"iterations": np.int64(12), "grad": np.array([1.0, np.inf])},
        warnings=("boundary",),
        extra={"kind": "fixed-point", "method": "not allowed to override"},
    )
    payload = s.to_json()
    assert list(payload)[: len(REQUIRED_KEYS) + 1] == [
        "method",
        "sigma",
        "sigma_interval",
        "noise",
        "log_evidence",
        "weights",
        "intercept",
        "degenerate",
        "diagnostics",
        "warnings",
        "wall_time",
    ]
    assert payload["method"] == "eb" and payload["kind"] == "fixed-point"
    assert payload["log_evidence"] is None  # non-finite numbers become null
    assert payload["diagnostics"] == {"iterations": 12, "grad": [1.0, None]}
    assert payload["degenerate"] is True
    json.dumps(payload, allow_nan=False)  # strict JSON
    assert s.with_centering(None) is s


def test_json_safe_types():
    assert json_safe({1: (np.float32(0.5), np.int8(3), math.inf)}) == {"1": [0.5, 3, None]}


# --------------------------------------------------------------------------- console script


def test_console_script(tmp_path):
    """`hyperbayes fit exact` itself: the installed entry point on the built-in data."""
    script = Path(sys.executable).parent / "hyperbayes"
    proc = subprocess.run(
        [str(script), "fit", "exact", "--json", "--quiet", "--draws", "100"],
        cwd=tmp_path,  # the packaged diabetes data, not a file in the source tree
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.count("\n") == 1
    payload = json.loads(proc.stdout)
    assert REQUIRED_KEYS <= payload.keys()
    assert len(payload["weights"]) == 10
    assert payload["hyperprior"] == "halfnormal:1620"  # the default, scaled to the data


def test_sampler_progress_goes_to_stderr_and_stdout_stays_one_json_object(tmp_path):
    """PyMC draws its progress bar on stdout; with --json (and no --quiet) the CLI must keep
    stdout for the one JSON object and show the progress on stderr."""
    csv = tmp_path / "data.csv"
    simulate(n=30, d=2, sigma=1.0, noise=1.0, seed=3).data.to_csv(csv)
    script = Path(sys.executable).parent / "hyperbayes"
    proc = subprocess.run(
        [str(script), "fit", "nuts", "--data", str(csv), "--target", "y", "--noise", "1",
         "--draws", "50", "--chains", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1
    assert json.loads(proc.stdout)["method"] == "nuts"
    assert "running nuts" in proc.stderr and "NUTS" in proc.stderr  # progress is shown


def test_quiet_compare_prints_only_the_report_path(tmp_path):
    """--quiet silences PyMC too, even though PyMC is first imported (and sets up its logger)
    inside the run."""
    csv = tmp_path / "data.csv"
    simulate(n=30, d=2, sigma=1.0, noise=1.0, seed=3).data.to_csv(csv)
    script = Path(sys.executable).parent / "hyperbayes"
    out = tmp_path / "run"
    proc = subprocess.run(
        [str(script), "compare", "--data", str(csv), "--target", "y", "--noise", "1",
         "--methods", "nuts", "--draws", "50", "--chains", "1", "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.strip() == f"report: {out / 'report.html'}"
