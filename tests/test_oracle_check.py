"""Every method against the exact oracle: z values in units of each method's own error.

The samplers here are stand-ins built from the oracle's own i.i.d. draws, so that a correct
"sampler" is known to be correct, and a planted disagreement (the draws shifted by a stated
number of Monte Carlo standard errors, an evidence off by a stated number of standard errors)
is known to be wrong by exactly that much. Real NUTS and SMC runs go through the same code in
tests/test_compare.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from hyperbayes.inference.methods.arviz_io import draws_to_datatree, pooled_draws
from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.inference.workflow import compare as compare_module
from hyperbayes.inference.workflow.compare import Comparison, run_comparison, table_html
from hyperbayes.inference.workflow.oracle_check import (
    DISAGREEMENT_Z,
    QUANTITIES,
    exact_sigma_cdf,
    oracle_cell,
    oracle_check,
    oracle_checks,
)
from hyperbayes.inference.workflow.report import _page, _table, _warning_box
from hyperbayes.models.data import simulate
from hyperbayes.models.hyperpriors import parse_hyperprior

OPTIONS = RunOptions(
    hyperprior=parse_hyperprior("halfnormal:2"),
    noise=None,
    noise_prior=parse_hyperprior("halfnormal:2"),
    seed=7,
    draws=4000,
)
#: The planted shift, in Monte Carlo standard errors of the shifted quantity: well past
#: DISAGREEMENT_Z even after the stand-in's own chance gap (|z| < 3 for these seeds).
PLANTED = 10.0
#: A correct stand-in stays within this many units (|z| ~ N(0, 1); 3 is a 1-in-370 event per
#: quantity, and the seeds are fixed).
CORRECT_Z = 3.0


@pytest.fixture(scope="module")
def data():
    return simulate(n=40, d=3, sigma=0.8, noise=1.0, seed=5).data.center()[0]


@pytest.fixture(scope="module")
def exact(data):
    from hyperbayes.inference.methods.exact import run

    return run(data, OPTIONS)


@pytest.fixture(scope="module")
def posterior(data):
    from hyperbayes.inference.methods.exact import exact_posterior

    return exact_posterior(data, hyperprior=OPTIONS.hyperprior, noise_prior=OPTIONS.noise_prior)


def _sampler(posterior, method: str, *, seed: int, shift: float = 0.0, **extra) -> MethodSummary:
    """A stand-in sampler: fresh exact i.i.d. draws in 4 chains of 1000, sigma + ``shift``."""
    s = posterior.sample(4000, seed=seed)
    s["sigma"] = s["sigma"] + shift
    tree = draws_to_datatree(
        {k: v.reshape(4, 1000, *v.shape[1:]) for k, v in s.items()},
        feature_names=posterior.feature_names,
    )
    sigma = pooled_draws(tree, "sigma")
    return MethodSummary(
        method=method,
        sigma=float(sigma.mean()),
        sigma_interval=tuple(np.quantile(sigma, [0.025, 0.975])),
        noise=float(s["noise"].mean()),
        log_evidence=extra.pop("log_evidence", None),
        weights=tuple(s["w"].mean(axis=0)),
        extra=extra,
        draws=tree,
    )


def _point(method: str, sigma: float) -> MethodSummary:
    return MethodSummary(method, sigma, None, 1.0, None, (0.0, 0.0, 0.0))


# ------------------------------------------------------------------ the check itself


def test_a_correct_sampler_stays_within_its_error(exact, posterior):
    check = oracle_check(_sampler(posterior, "nuts", seed=1), exact)
    assert not check.disagrees and check.message is None
    assert set(check.z) == set(QUANTITIES) and check.z["log_evidence"] is None
    for q in ("sigma_mean", "sigma_q025", "sigma_q975"):
        assert abs(check.z[q]) < CORRECT_Z, (q, check.z[q])


def test_shifted_draws_disagree_and_the_message_carries_the_numbers(exact, posterior):
    honest = oracle_check(_sampler(posterior, "nuts", seed=1), exact)
    mcse = next(g.error for g in honest.gaps if g.quantity == "sigma_mean")
    shifted = _sampler(posterior, "nuts", seed=1, shift=PLANTED * mcse, parametrization="marginal")
    check = oracle_check(shifted, exact)
    gap = next(g for g in check.gaps if g.quantity == "sigma_mean")
    assert gap.z == pytest.approx(honest.z["sigma_mean"] + PLANTED, abs=0.5)
    assert check.disagrees
    text = check.message
    assert "posterior mean of sigma" in text
    assert f"{gap.estimate:.4g}" in text and f"{exact.sigma:.4g}" in text
    assert f"z = {gap.z:+.1f}" in text and f"MCSE {gap.error:.3g}" in text
    assert "more draws" in text and "parametrization=" in text  # the remedy


def test_an_evidence_off_by_ten_standard_errors_disagrees(exact, posterior):
    se = 0.05
    smc = _sampler(posterior, "smc", seed=2, log_evidence=exact.log_evidence + PLANTED * se,
                   log_evidence_se=se, chain_log_evidence=[0.0] * 4)
    check = oracle_check(smc, exact)
    assert check.z["log_evidence"] == pytest.approx(PLANTED)
    assert check.disagrees
    text = check.message
    assert "the log evidence" in text and "z = +10.0" in text
    assert f"{exact.log_evidence:.3f}" in text and "s.e. 0.05 from the spread of 4 chains" in text
    assert "--chains" in text  # the remedy for an uncertain standard error
    assert "posterior mean of sigma" not in text  # only what disagrees is named ...
    assert "collapsed model" not in text  # ... and remedied
    right = replace(smc, log_evidence=exact.log_evidence + 0.5 * se)
    assert not oracle_check(right, exact).disagrees


def test_smc_remedy_depends_on_its_model(exact, posterior):
    smc = _sampler(posterior, "smc", seed=2)
    sigma = smc.draws["posterior"]["sigma"]
    median = float(sigma.median())
    tree = smc.draws.copy()  # the upper half squeezed: a short upper tail, as SMC's on D = 10
    tree["posterior"]["sigma"] = sigma.where(sigma < median, median + 0.7 * (sigma - median))
    check = oracle_check(replace(smc, draws=tree, extra={"model": "full"}), exact)
    assert check.z["sigma_q975"] < -DISAGREEMENT_Z
    assert "97.5% quantile of sigma" in check.message and "model='collapsed'" in check.message
    collapsed = oracle_check(replace(smc, draws=tree, extra={"model": "collapsed"}), exact)
    assert "already moved on the collapsed model" in collapsed.message


def test_point_estimators_get_their_exact_quantile(exact):
    lo, hi = exact.sigma_interval
    assert exact_sigma_cdf(exact, lo) == pytest.approx(0.025, abs=2e-3)
    assert exact_sigma_cdf(exact, hi) == pytest.approx(0.975, abs=2e-3)
    median_draws = float(np.median(pooled_draws(exact.draws, "sigma")))
    assert exact_sigma_cdf(exact, median_draws) == pytest.approx(0.5, abs=0.03)  # 4000 draws
    check = oracle_check(_point("eb", exact.sigma), exact)
    assert 0 < check.quantile < 1 and check.z is None and not check.disagrees
    assert oracle_check(_point("joint-map", 1e-9), exact).quantile == 0.0
    assert oracle_check(_point("cv", 1e9), exact).quantile == 1.0
    no_grid = replace(exact, extra={})  # falls back on the exact draws
    assert exact_sigma_cdf(no_grid, exact.sigma) == pytest.approx(check.quantile, abs=0.03)


def test_nothing_to_compare_gives_no_check(exact):
    assert oracle_checks({"eb": _point("eb", 1.0)}) == {}  # no oracle
    ard = replace(_point("nuts", 1.0), sigma=None)
    assert oracle_check(ard, exact) is None


def test_too_few_draws_give_no_z_rather_than_a_crash(exact, posterior):
    tiny = _sampler(posterior, "nuts", seed=3)
    tree = tiny.draws.isel(draw=slice(0, 1))
    check = oracle_check(replace(tiny, draws=tree), exact)
    assert check is not None and not check.disagrees
    assert all(v is None or math.isfinite(v) for v in check.z.values())


# ------------------------------------------------------------------ in the comparison


@pytest.fixture(scope="module")
def planted(data, exact, posterior, monkeypatch_module):
    """A comparison whose 'nuts' is the stand-in shifted by PLANTED MCSEs, and 'smc' a correct
    stand-in with an evidence PLANTED standard errors off; exact and eb are real."""
    honest = oracle_check(_sampler(posterior, "nuts", seed=1), exact)
    mcse = next(g.error for g in honest.gaps if g.quantity == "sigma_mean")
    fakes = {
        "nuts": _sampler(posterior, "nuts", seed=1, shift=PLANTED * mcse,
                         parametrization="marginal"),
        "smc": _sampler(posterior, "smc", seed=2, log_evidence=exact.log_evidence + PLANTED * 0.05,
                        log_evidence_se=0.05),
    }
    real = compare_module.get_runner

    def get_runner(name):
        return (lambda data, options: fakes[name]) if name in fakes else real(name)

    monkeypatch_module.setattr(compare_module, "get_runner", get_runner)
    return run_comparison(data, OPTIONS, methods=["exact", "eb", "nuts", "smc"])


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_planted_disagreements_flip_the_status(planted):
    nuts, smc = planted.row("nuts"), planted.row("smc")
    assert nuts.status == "disagrees" and smc.status == "disagrees"
    assert nuts.oracle_z["sigma_mean"] > DISAGREEMENT_Z
    assert smc.oracle_z["log_evidence"] == pytest.approx(PLANTED)
    assert any(w.startswith("Disagrees with the exact oracle") for w in nuts.warnings)
    assert planted.row("exact").status == "ok" and planted.row("exact").oracle_z is None
    eb = planted.row("eb")
    assert eb.status == "ok" and 0 < eb.oracle_quantile < 1 and eb.oracle_z is None


def test_the_oracle_fields_are_new_json_keys_and_pandas_columns(planted):
    table = json.loads(json.dumps(planted.to_json()))["table"]
    rows = {r["method"]: r for r in table}
    assert set(rows["nuts"]["oracle_z"]) == set(QUANTITIES)
    assert rows["nuts"]["oracle_z"]["log_evidence"] is None
    assert rows["eb"]["oracle_quantile"] == planted.row("eb").oracle_quantile
    assert rows["exact"]["oracle_z"] is None and rows["exact"]["oracle_quantile"] is None
    frame = planted.to_pandas()
    assert frame.loc["smc", "oracle_z_log_evidence"] == pytest.approx(PLANTED)
    assert math.isnan(frame.loc["eb", "oracle_z_sigma_mean"])
    assert frame.loc["eb", "oracle_quantile"] == planted.row("eb").oracle_quantile


def test_the_table_and_the_warning_box_show_it(planted):
    summary = planted.to_json()
    table = table_html(summary["table"])
    assert '<th class="oracle">vs exact</th>' in table
    smc_cell = oracle_cell(summary["table"][3])
    assert "<b>log\N{NO-BREAK SPACE}p(y)\N{NO-BREAK SPACE}+10.0</b>" in smc_cell
    assert smc_cell in table and "the oracle" in table and "quantile 0." in table
    assert '<tr class="disagrees"><td>nuts</td>' in table
    box = _warning_box(summary)
    assert "<b>nuts</b>: Disagrees with the exact oracle" in box and "z = +" in box
    assert "<b>smc</b>: Disagrees" in box and "z = +10.0" in box
    page = _page(_table(summary))
    assert "tr.disagrees{" in page and "vs exact: for a sampler" in page


def test_without_the_oracle_the_comparison_still_works(data):
    result = run_comparison(data, OPTIONS, methods=["eb", "cv"])
    assert isinstance(result, Comparison)
    for row in result.rows:
        assert row.oracle_z is None and row.oracle_quantile is None
        assert row.status in ("ok", "warnings")
        assert oracle_cell(row.to_json()) == ""
    assert '<th class="oracle">vs exact</th>' in table_html(result.to_json()["table"])
