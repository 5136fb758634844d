"""diagnose(): thresholds, messages with remedies, and graceful handling of short or odd input.

The draws are synthetic (known i.i.d., shifted, autocorrelated, random-walk energy), so each
check is made to pass or fail on purpose; values are compared with direct NumPy formulas.
"""

from __future__ import annotations

import math
import warnings

import arviz_base as azb
import numpy as np
import pytest

from hyperbayes.inference.methods.diagnostics import (
    BFMI_MIN,
    ESS_MIN,
    RHAT_MAX,
    Diagnostics,
    DiagnosticsWarning,
    diagnose,
)

CHAINS, DRAWS = 4, 500
JSON_KEYS = {
    "divergences",
    "divergence_fraction",
    "r_hat_max",
    "ess_bulk_min",
    "ess_tail_min",
    "bfmi_min",
    "tree_depth_saturation",
}


def _tree(posterior, sample_stats=None):
    groups = {"posterior": posterior}
    if sample_stats is not None:
        groups["sample_stats"] = sample_stats
    return azb.from_dict(groups)


def _healthy_stats(rng, chains=CHAINS, draws=DRAWS):
    return {
        "diverging": np.zeros((chains, draws), bool),
        "reached_max_treedepth": np.zeros((chains, draws), bool),
        "energy": rng.standard_normal((chains, draws)),  # i.i.d. energy: E-BFMI near 2
    }


def _ar1(rng, phi, shape):
    x = np.empty(shape)
    x[..., 0] = rng.standard_normal(shape[:-1])
    for t in range(1, shape[-1]):
        x[..., t] = phi * x[..., t - 1] + math.sqrt(1 - phi**2) * rng.standard_normal(shape[:-1])
    return x


def test_iid_draws_pass_every_check(rng):
    tree = _tree(
        {"a": rng.standard_normal((CHAINS, DRAWS)), "b": rng.standard_normal((CHAINS, DRAWS, 3))},
        _healthy_stats(rng),
    )
    d = diagnose(tree)
    assert d.ok and d.messages == ()
    assert d.chains == CHAINS and d.draws == DRAWS
    assert d.divergences == 0 and d.divergence_fraction == 0.0
    assert d.tree_depth_saturation == 0.0
    assert d.r_hat_max < RHAT_MAX
    assert d.ess_bulk_min > ESS_MIN and d.ess_tail_min > ESS_MIN
    assert d.bfmi_min > BFMI_MIN
    assert set(d.to_json()) == JSON_KEYS


def test_bfmi_matches_its_formula(rng):
    energy = _ar1(rng, 0.5, (CHAINS, DRAWS))
    stats = {**_healthy_stats(rng), "energy": energy}
    d = diagnose(_tree({"a": rng.standard_normal((CHAINS, DRAWS))}, stats))
    # E-BFMI = sum (E_t - E_{t-1})^2 / sum (E_t - mean E)^2 per chain (Betancourt 2016).
    direct = (np.diff(energy, axis=1) ** 2).sum(1) / ((energy - energy.mean(1, keepdims=True)) ** 2).sum(1)
    assert d.bfmi_min == pytest.approx(direct.min(), rel=1e-10)


def test_divergences_are_counted_and_explained(rng):
    stats = _healthy_stats(rng)
    stats["diverging"][1, :7] = True
    d = diagnose(_tree({"a": rng.standard_normal((CHAINS, DRAWS))}, stats))
    assert d.divergences == 7
    assert d.divergence_fraction == pytest.approx(7 / (CHAINS * DRAWS))
    (msg,) = d.messages
    assert "7 of 2000 draws" in msg and "divergence" in msg
    assert "Reparametrise" in msg and "target_accept" in msg


def test_unconverged_chains_fail_r_hat(rng):
    a = rng.standard_normal((CHAINS, DRAWS)) + np.arange(CHAINS)[:, None]  # chains disagree
    d = diagnose(_tree({"a": a}, _healthy_stats(rng)))
    assert d.r_hat_max > 1.5
    assert d.worst["r_hat_max"] == "a"
    assert any("R-hat" in m and "not converged" in m and "more tuning" in m for m in d.messages)


def test_autocorrelated_draws_fail_ess_with_the_variable_named(rng):
    slow = _ar1(rng, 0.99, (CHAINS, 2, DRAWS)).transpose(0, 2, 1)
    d = diagnose(_tree({"fast": rng.standard_normal((CHAINS, DRAWS)), "slow": slow}))
    assert d.ess_bulk_min < ESS_MIN and d.ess_tail_min < ESS_MIN
    assert d.worst["ess_bulk_min"].startswith("slow[")
    bulk = [m for m in d.messages if "bulk effective sample size" in m]
    tail = [m for m in d.messages if "tail effective sample size" in m]
    assert len(bulk) == 1 and len(tail) == 1 and "more draws" in bulk[0]


def test_low_bfmi_is_flagged(rng):
    stats = {**_healthy_stats(rng), "energy": np.cumsum(rng.standard_normal((CHAINS, DRAWS)), 1)}
    d = diagnose(_tree({"a": rng.standard_normal((CHAINS, DRAWS))}, stats))
    assert d.bfmi_min < BFMI_MIN
    assert any("E-BFMI" in m and "Reparametrise" in m for m in d.messages)


@pytest.mark.parametrize("name", ["reached_max_treedepth", "maxdepth_reached"])  # PyMC, nutpie
def test_tree_depth_saturation_is_a_fraction(rng, name):
    stats = _healthy_stats(rng)
    del stats["reached_max_treedepth"]
    stats[name] = np.zeros((CHAINS, DRAWS), bool)
    stats[name][:, :50] = True
    d = diagnose(_tree({"a": rng.standard_normal((CHAINS, DRAWS))}, stats))
    assert d.tree_depth_saturation == pytest.approx(50 / DRAWS)
    assert any("maximum tree depth" in m and "max_treedepth" in m for m in d.messages)


def test_without_sample_stats_sampler_checks_are_none_and_silent(rng):
    # SMC output or exact i.i.d. draws: one chain, no sampler statistics; nothing to warn about.
    tree = _tree({"sigma": rng.standard_normal((1, 1000))})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = diagnose(tree)
    assert d.divergences is None and d.divergence_fraction is None
    assert d.bfmi_min is None and d.tree_depth_saturation is None
    assert math.isnan(d.r_hat_max)
    assert d.ess_bulk_min > ESS_MIN and d.ok


def test_single_mcmc_chain_gives_nan_r_hat_and_a_warning(rng):
    tree = _tree({"a": rng.standard_normal((1, DRAWS))}, _healthy_stats(rng, chains=1))
    with pytest.warns(DiagnosticsWarning, match="single chain"):
        d = diagnose(tree)
    assert math.isnan(d.r_hat_max) and np.isfinite(d.ess_bulk_min)
    assert d.ok and len(d.notes) == 1 and "single chain" in d.notes[0]  # carried, not a failure


@pytest.mark.parametrize("draws", [1, 2, 3])
def test_too_short_chains_give_nan_and_a_warning(rng, draws):
    tree = _tree({"a": rng.standard_normal((1, draws))}, _healthy_stats(rng, chains=1, draws=draws))
    with pytest.warns(DiagnosticsWarning, match="draw") as caught:
        d = diagnose(tree)
    assert math.isnan(d.r_hat_max) and math.isnan(d.ess_bulk_min) and math.isnan(d.ess_tail_min)
    assert isinstance(d, Diagnostics)
    # the result carries the warning too, so that a method's summary can report it
    assert d.notes == (str(caught[0].message),) and f"only {draws} draw(s)" in d.notes[0]


def test_a_constant_variable_does_not_spoil_the_extremes(rng):
    tree = _tree({"a": rng.standard_normal((CHAINS, DRAWS)), "fixed": np.ones((CHAINS, DRAWS))})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = diagnose(tree)
    assert np.isfinite(d.r_hat_max) and d.r_hat_max < RHAT_MAX
    assert d.notes == ()


def test_var_names_restricts_the_checks(rng):
    bad = rng.standard_normal((CHAINS, DRAWS)) + np.arange(CHAINS)[:, None]
    tree = _tree({"good": rng.standard_normal((CHAINS, DRAWS)), "bad": bad})
    assert diagnose(tree, var_names=["good"]).ok
    assert not diagnose(tree).ok


def test_a_tree_without_the_group_is_a_clear_error():
    tree = azb.from_dict({"prior": {"a": np.zeros((1, 10))}})
    with pytest.raises(ValueError, match="no 'posterior' group"):
        diagnose(tree)
