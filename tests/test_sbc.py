"""Simulation-based calibration on a real Dask cluster: ranks, uniformity tests, seeding that
does not depend on the workers, failures recorded, the run directory and its report.

One LocalCluster of 2 worker processes serves the module (started once: ~5 s) and is closed at
the end. The exact oracle is the control: its ranks must be uniform.
"""

from __future__ import annotations

import argparse
import io
import json
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
from distributed import Client, LocalCluster
from scipy import stats

from hyperbayes.inference.methods.arviz_io import load_datatree
from hyperbayes.inference.workflow.cli_sbc import EXIT_OK, add_sbc_parser, sbc_command
from hyperbayes.inference.workflow.rundir import RunDirectoryExists
from hyperbayes.inference.workflow.sbc import run_sbc, simulation_seed
from hyperbayes.inference.workflow.sbc_methods import MethodDraws, resolve_method
from hyperbayes.inference.workflow.sbc_report import REPORT_NAME, write_sbc
from hyperbayes.inference.workflow.sbc_stats import check_uniformity, fractional_ranks, shift_power
from hyperbayes.models.hyperpriors import OptionError

#: Small runs of the default test suite (the exact oracle costs ~0.5-1 s per simulation).
SIMS, DRAWS = 8, 9
#: The full-size control of the slow run: enough simulations that a bias of 0.3 posterior sd
#: in one quantity is detected with high probability (see test_power_of_the_full_size_check).
FULL_SIMS, FULL_DRAWS = 400, 99


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def exact_run(client):
    return run_sbc("exact", sims=SIMS, draws=DRAWS, seed=3, client=client)


def flaky(data, *, hyperprior, noise_prior, draws, seed):
    """A method that fails on about half the data sets (a module-level function, so the
    workers can import it) and otherwise returns draws from the prior."""
    if data.y[0] > 0:
        raise RuntimeError("flaky method: y[0] > 0")
    rng = np.random.default_rng(seed)
    return MethodDraws(
        sigma=np.abs(rng.standard_normal((1, draws))),
        noise=np.abs(rng.standard_normal((1, draws))),
        w=rng.standard_normal((1, draws, data.d)),
    )


# ----------------------------------------------------------------- on the cluster


def test_exact_oracle_ranks_and_statistics(exact_run):
    r = exact_run
    assert r.status == ("ok",) * SIMS and r.n_workers == 2
    assert r.quantities == ("sigma", "noise", "w0", "w1")
    assert r.ranks.shape == (SIMS, 4)
    assert np.all((r.ranks >= 0) & (r.ranks <= DRAWS)) and np.all(r.ranks == np.round(r.ranks))
    assert np.all((r.pit > 0) & (r.pit < 1))
    assert np.all(r.truth[:, :2] > 0)  # the scales
    uni = r.uniformity
    assert [q.name for q in uni.quantities] == list(r.quantities)
    for q in uni.quantities:
        assert q.n == SIMS and 0 <= q.chi2_p <= 1 and np.isfinite(q.max_ecdf_diff)
    assert uni.level == pytest.approx(0.05 / 8)
    summary = r.to_json()
    assert summary["completed"] == SIMS and summary["uniformity"]["passed"] == r.passed


def test_same_numbers_on_one_worker_and_in_a_later_batch(client, exact_run):
    """Simulations 4..7 alone, on one of the two workers: the same numbers as in the 2-worker
    run of 0..7 (each simulation's seed depends on its index only)."""
    one = sorted(client.nthreads())[:1]
    r1 = run_sbc("exact", sims=SIMS - 4, first=4, draws=DRAWS, seed=3, client=client, workers=one)
    assert r1.n_workers == 1 and r1.first == 4
    np.testing.assert_array_equal(r1.truth, exact_run.truth[4:])
    np.testing.assert_array_equal(r1.ranks, exact_run.ranks[4:])
    np.testing.assert_array_equal(r1.pit, exact_run.pit[4:])


def test_a_failing_simulation_is_recorded_not_fatal(client):
    r = run_sbc(flaky, sims=SIMS, draws=DRAWS, seed=5, client=client, reference=False)
    failed = set(r.failed)
    assert 0 < len(failed) < SIMS  # some fail, the rest complete
    for i in range(SIMS):
        if i in failed:
            assert r.status[i] == "failed" and "flaky method" in r.messages[i]
            assert np.all(np.isnan(r.ranks[i])) and np.all(np.isfinite(r.truth[i]))
        else:
            assert r.status[i] == "ok" and np.all(np.isfinite(r.ranks[i]))
    summary = r.to_json()
    assert {f["index"] for f in summary["failed"]} == failed
    assert r.uniformity is None or r.uniformity.quantities[0].n == SIMS - len(failed)


def test_result_saves_atomically_with_report(exact_run, tmp_path):
    out = write_sbc(tmp_path / "run", exact_run)
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "sbc.nc", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "exact" and summary["sims"] == SIMS
    tree = load_datatree(out / "sbc.nc")
    assert tree["prior_sbc"]["sigma"].dims == ("chain", "draw")  # simuk's layout
    np.testing.assert_array_equal(tree["prior_sbc"]["w1"].values[0], exact_run.ranks[:, 3])
    np.testing.assert_allclose(tree["band"]["upper"].values, exact_run.uniformity.band.upper)
    html = (out / REPORT_NAME).read_text()
    assert html.count('src="data:image/png;base64,') == 1  # the rank/ECDF figure
    assert "figure could not be drawn" not in html and "Uniformity of the ranks" in html
    with pytest.raises(RunDirectoryExists):
        write_sbc(out, exact_run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no partial directory left


def sbc_args(*argv):
    parser = argparse.ArgumentParser(prog="hyperbayes")
    add_sbc_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["sbc", *argv])


def test_cli_handler_runs_on_the_given_scheduler(client, tmp_path):
    args = sbc_args(
        "--method", "exact", "--sims", "4", "--draws", "9", "--seed", "3", "--json",
        "--scheduler", client.scheduler.address, "--out", str(tmp_path / "cli"),
    )
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = args.handler(args)
    assert code == EXIT_OK
    payload = json.loads(stdout.getvalue())  # exactly one JSON object on stdout
    assert payload["method"] == "exact" and payload["completed"] == 4
    assert payload["n_workers"] == 2 and "uniformity" in payload
    assert (tmp_path / "cli" / REPORT_NAME).is_file()
    assert "4/4" in stderr.getvalue()  # the progress bar


def test_cli_handler_refuses_bad_input(tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError):
        sbc_command(sbc_args("--method", "exact", "--sims", "4", "--out", str(tmp_path / "exists")))
    with pytest.raises(OptionError, match="at least 2 simulations"):
        sbc_command(sbc_args("--method", "exact", "--sims", "1", "--quiet"))
    with pytest.raises(OptionError, match="needs --target"):
        sbc_command(sbc_args("--method", "exact", "--sims", "4", "--data", "x.csv"))
    with pytest.raises(SystemExit):
        with redirect_stderr(io.StringIO()):
            sbc_args("--method", "joint-map", "--sims", "4")  # not a sampler: not offered


# ----------------------------------------------------------------- without a cluster


def test_simulation_seeds_are_spawned_children():
    children = np.random.SeedSequence(7).spawn(5)
    for i, child in enumerate(children):
        np.testing.assert_array_equal(
            simulation_seed(7, i).generate_state(4), child.generate_state(4)
        )


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(OptionError, match="nuts-centered"):
        resolve_method("nuts-funnel")
    assert resolve_method("nuts")[0] == "nuts-marginal"


def test_uniformity_accepts_uniform_and_rejects_a_shift():
    rng = np.random.default_rng(0)
    draws, n = 99, 200
    ranks = rng.integers(0, draws + 1, size=(n, 3))
    u = fractional_ranks(ranks, draws, rng.uniform(size=ranks.shape))
    assert check_uniformity({f"q{j}": u[:, j] for j in range(3)}).passed
    # a method whose draws of q0 sit 0.5 posterior sd too high: the true values rank low
    shifted = dict(enumerate(u.T))
    shifted[0] = stats.norm.cdf(stats.norm.ppf(u[:, 0]) - 0.5)
    check = check_uniformity({str(k): v for k, v in shifted.items()})
    assert not check.passed and check.outside_band == ("0",)
    assert check.quantities[0].chi2_p < check.level


def test_power_of_the_full_size_check():
    """FULL_SIMS simulations detect a bias of 0.3 posterior sd in one of four quantities."""
    assert shift_power(np.array([0.3]), sims=FULL_SIMS, reps=40, seed=1) >= 0.9


@pytest.mark.slow
def test_exact_oracle_passes_at_full_size(tmp_path):
    """The control at full size, through the command (its own LocalCluster of 2 processes)."""
    args = sbc_args(
        "--method", "exact", "--sims", str(FULL_SIMS), "--draws", str(FULL_DRAWS),
        "--workers", "2", "--seed", "2026", "--json", "--quiet", "--out", str(tmp_path / "full"),
    )
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        assert sbc_command(args) == EXIT_OK
    payload = json.loads(stdout.getvalue())
    assert payload["completed"] == FULL_SIMS
    assert payload["passed"], payload["uniformity"]
