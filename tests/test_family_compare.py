"""The family comparison: a column per group scale, the oracle check per scale, the shrinkage
numbers, and the run directory with its report and figures.

Two models: eight schools (known standard errors, one random-intercept scale tau) and a small
simulated random-intercept set with a fixed covariate and a learned noise (two unknown scales,
so the exact oracle still applies). The oracle check is tested on stand-in samplers made of
the oracle's own i.i.d. draws (a correct one, and one shifted by a planted number of its own
Monte Carlo errors), independently of the real samplers, which run once on eight schools.
"""

from __future__ import annotations

import base64
import json
import re

import matplotlib.figure
import numpy as np
import pytest

from hyperbayes.inference.mathematics.family_likelihood import layout_of
from hyperbayes.inference.methods.exact_family import exact_family_posterior
from hyperbayes.inference.methods.family_draws import (
    draw_coefficients,
    family_datatree,
    full_scales,
)
from hyperbayes.inference.methods.family_summary import summary_from_draws
from hyperbayes.inference.methods.results import RunOptions
from hyperbayes.inference.workflow import family_compare, figures
from hyperbayes.inference.workflow.cli import main
from hyperbayes.inference.workflow.compare import run_comparison
from hyperbayes.inference.workflow.family_compare import FamilyComparison
from hyperbayes.inference.workflow.family_figures import scale_posterior, shrinkage_plot
from hyperbayes.inference.workflow.family_oracle import (
    family_oracle_checks,
    family_quantities,
)
from hyperbayes.inference.workflow.family_shrinkage import (
    level_estimates_at_scales,
    raw_level_means,
)
from hyperbayes.inference.workflow.oracle_check import DISAGREEMENT_Z
from hyperbayes.inference.workflow.report import render_report, write_comparison
from hyperbayes.models.data import Dataset
from hyperbayes.models.datasets import eight_schools_table, load_eight_schools
from hyperbayes.models.family_priors import with_default_priors
from hyperbayes.models.family_stats import family_stats
from hyperbayes.models.hyperpriors import parse_hyperprior
from hyperbayes.models.specification import Group, specify

#: The family methods take priors and noise from the spec; these fields are ignored there.
OPTIONS = RunOptions(hyperprior=parse_hyperprior("halfnormal:1"), noise=1.0, noise_prior=None,
                     seed=3, draws=400, chains=2)
#: A planted shift, in Monte Carlo standard errors: well past DISAGREEMENT_Z.
PLANTED = 10.0
#: i.i.d. draws per stand-in sampler (4 chains).
STAND_IN_DRAWS = 4000


def _simulated(seed: int = 2):
    """12 sites of 3 to 8 rows, y = 1 + 0.8 x + u_site + noise, x a fixed covariate."""
    rng = np.random.default_rng(seed)
    site = np.repeat(np.arange(12), rng.integers(3, 9, 12))
    x = rng.normal(size=site.size)
    y = 1.0 + 0.8 * x + rng.normal(0, 0.9, 12)[site] + rng.normal(0, 1.2, site.size)
    data = Dataset.from_arrays(x[:, None], y, feature_names=["x"], target_name="y")
    spec = specify(data, fixed=["x"], categorical={"site": site})
    return with_default_priors(spec), site, y


@pytest.fixture(scope="module")
def schools():
    return load_eight_schools(tau_prior="halfcauchy:5")


@pytest.fixture(scope="module")
def schools_run(schools):
    """Every family method that exists today on eight schools, the real samplers included."""
    return run_comparison(schools, OPTIONS, methods=["exact", "eb", "nuts", "smc"])


@pytest.fixture(scope="module")
def simulated():
    return _simulated()


@pytest.fixture(scope="module")
def sim_run(simulated):
    return run_comparison(simulated[0], OPTIONS, methods=["exact", "eb"])


@pytest.fixture(scope="module")
def sim_post(simulated):
    """The oracle itself (two scales: a 2-D quadrature, computed once)."""
    return exact_family_posterior(simulated[0])


def _stand_in(spec, post, *, seed: int, shift: dict[str, float] | None = None):
    """A 'nuts' summary whose draws are the oracle's i.i.d. draws (4 chains), scales shifted
    by ``shift`` (scale name -> amount)."""
    draws = post.sample(STAND_IN_DRAWS, seed=seed)
    names = [spec.groups[k].name for k in spec.learned_groups] + (["noise"] if spec.noise is None else [])
    scales = {n: draws[n] + (shift or {}).get(n, 0.0) for n in names}
    tree = family_datatree(spec, scales, draws, chains=4)
    return summary_from_draws("nuts", spec, tree)


# ------------------------------------------------------------------------------ the table


def test_the_table_has_a_column_per_scale_and_the_exact_row(sim_run, sim_post):
    post = sim_post
    df = sim_run.to_pandas()
    assert isinstance(sim_run, FamilyComparison) and list(df.index) == ["exact", "eb"]
    for col in ("sigma[site]", "sigma[site]_lower", "noise", "noise_upper", "log_evidence",
                "beta[Intercept]", "beta[x]_se", "oracle_z_sigma[site]_mean",
                "oracle_z_noise_q975", "oracle_quantile_sigma[site]"):
        assert col in df.columns, col
    exact = df.loc["exact"]
    assert exact["status"] == "ok"
    assert exact["sigma[site]"] == pytest.approx(post.scale_mean[0])
    assert exact["noise"] == pytest.approx(post.scale_mean[1])
    assert exact["log_evidence"] == pytest.approx(post.log_evidence)
    assert exact["beta[x]"] == pytest.approx(post.beta_mean[1])
    # EB's log evidence column is its maximised REML likelihood, above the evidence.
    assert df.loc["eb", "log_evidence"] > exact["log_evidence"]
    page = sim_run._repr_html_()
    for text in ("sigma[site]", "beta[x]", "the oracle", "flat prior on the fixed effects"):
        assert text in page


def test_a_point_estimate_is_placed_by_its_exact_quantile(sim_run, sim_post):
    """EB's quantile from the oracle's density, against the share of the oracle's i.i.d.
    draws below EB's value (binomial error, plus a grid cell's worth)."""
    q = sim_run.row("eb").oracle_quantile
    draws = sim_post.sample(20_000, seed=9)
    for key, name in (("sigma[site]", "site"), ("noise", "noise")):
        value = sim_run.results["eb"].sigmas["site"] if name == "site" else sim_run.results["eb"].noise
        share = float(np.mean(draws[name] <= value))
        assert abs(q[key] - share) < 4 * np.sqrt(share * (1 - share) / 20_000) + 0.005, key
    assert sim_run.row("eb").oracle_z is None


def test_the_exact_row_is_not_applicable_beyond_two_scales():
    rng = np.random.default_rng(4)
    site = np.repeat(np.arange(6), 5)
    x, z = rng.normal(size=(2, site.size))
    y = x + rng.normal(size=6)[site] + rng.normal(size=site.size)
    data = Dataset.from_arrays(np.column_stack([x, z]), y, feature_names=["x", "z"])
    spec = with_default_priors(specify(data, categorical={"site": site},
                                       groups=[Group("x", ("x",)), Group("z", ("z",))]))
    result = run_comparison(spec, OPTIONS, methods=["exact", "eb"])
    row = result.row("exact")
    assert row.status == "not applicable" and "at most two unknown scales" in row.message
    assert result.row("eb").status in ("ok", "warnings") and result.row("eb").oracle_z is None
    assert set(result.row("eb").sigmas) == {"x", "z", "site"}


# ---------------------------------------------------------------- the oracle check per scale


def test_a_correct_stand_in_sampler_stays_within_its_error(simulated, sim_run, sim_post):
    spec = simulated[0]
    check = family_oracle_checks({"exact": sim_run.results["exact"],
                                  "nuts": _stand_in(spec, sim_post, seed=1)}, spec)["nuts"]
    z = {k: v for k, v in check.z.items() if v is not None}
    assert set(z) == set(family_quantities(spec)) - {"log_evidence"}
    assert all(abs(v) < DISAGREEMENT_Z for v in z.values()), z
    assert not check.disagrees


def test_a_shifted_stand_in_disagrees_in_the_table(simulated, sim_run, sim_post, monkeypatch):
    """Draws of sigma[site] moved by PLANTED of their MCSE: z moves by PLANTED, the row
    becomes 'disagrees' and its warning names the scale; the noise stays in agreement."""
    spec = simulated[0]
    exact = sim_run.results["exact"]
    honest = family_oracle_checks({"exact": exact, "nuts": _stand_in(spec, sim_post, seed=1)},
                                  spec)["nuts"]
    mcse = next(g.error for g in honest.gaps if g.quantity == "sigma[site]_mean")
    shifted = _stand_in(spec, sim_post, seed=1, shift={"site": PLANTED * mcse})
    given = {"exact": exact, "nuts": shifted}
    monkeypatch.setattr(family_compare, "get_runner",
                        lambda name, family: lambda s, o: given[name])
    result = run_comparison(spec, OPTIONS, methods=["exact", "nuts"])
    row = result.row("nuts")
    assert row.status == "disagrees"
    assert row.oracle_z["sigma[site]_mean"] == pytest.approx(
        honest.z["sigma[site]_mean"] + PLANTED, abs=0.5)
    assert abs(row.oracle_z["noise_mean"]) < DISAGREEMENT_Z
    assert any("posterior mean of sigma[site]" in w for w in row.warnings)
    assert "<b>" in family_compare.family_table_html([row.to_json()])  # the bold z


def test_the_real_samplers_agree_with_the_oracle_on_eight_schools(schools_run):
    for method in ("nuts", "smc"):
        row = schools_run.row(method)
        assert row.status != "failed", row.message
        z = {k: v for k, v in (row.oracle_z or {}).items() if v is not None}
        assert {"sigma[tau]_mean", "sigma[tau]_q025", "sigma[tau]_q975"} <= set(z), method
        assert all(abs(v) < DISAGREEMENT_Z for v in z.values()), (method, z)
    assert schools_run.row("smc").oracle_z["log_evidence"] is not None
    assert schools_run.row("eb").oracle_quantile == {"sigma[tau]": 0.0}  # tau_EB = 0


# --------------------------------------------------------------------- the shrinkage numbers


def test_raw_means_are_the_studies_and_the_level_means(schools, simulated):
    table = eight_schools_table()
    raw = raw_level_means(schools)
    np.testing.assert_allclose(raw.mean, table["y"], rtol=1e-12)
    np.testing.assert_allclose(raw.se, table["s"], rtol=1e-12)
    assert raw.levels == tuple("ABCDEFGH") and np.all(raw.rows == 1)
    spec, site, y = simulated
    raw = raw_level_means(spec)
    counts = np.bincount(site)
    means = np.bincount(site, weights=y) / counts
    within = np.sqrt(np.sum((y - means[site]) ** 2) / (y.size - counts.size))
    np.testing.assert_allclose(raw.mean, means, rtol=1e-10)
    np.testing.assert_allclose(raw.se, within / np.sqrt(counts), rtol=1e-10)


def test_the_plug_in_level_posterior_matches_exact_draws_at_those_scales(simulated):
    """theta_l at EB-like scales by the closed form, against 40,000 exact conditional draws of
    (beta, u) at the same scales: means in MCSE units, sds to 2%."""
    spec = simulated[0]
    st = family_stats(spec)
    sig, noise = np.array([0.7]), 1.1
    est = level_estimates_at_scales(spec, sig, noise, st)
    n = 40_000
    s, d = full_scales(spec, np.full((n, 1), 0.7), np.full(n, noise))
    draws = draw_coefficients(st, layout_of(spec), s, d, np.random.default_rng(5))
    c = np.column_stack([np.ones(st.n_levels), st.level_mean[:, 0]])  # [1, xbar_l]
    theta = draws["beta"] @ c.T + draws["u"]
    sd = (est.upper - est.mean) / 1.959963984540054
    assert np.all(np.abs(theta.mean(0) - est.mean) < 4.5 * sd / np.sqrt(n))
    np.testing.assert_allclose(theta.std(0), sd, rtol=0.02)


def test_the_shrinkage_of_eight_schools(schools_run, schools):
    sh = schools_run.shrinkage
    post = exact_family_posterior(schools)
    assert not sh.adjusted and set(sh.estimates) == {"exact", "eb", "nuts", "smc"}
    # the exact draws' theta_l against the oracle's posterior mean of mu + u_l
    exact_theta = schools_run.results["exact"].draws["posterior"]["theta"].values.reshape(-1, 8)
    mcse = exact_theta.std(0) / np.sqrt(exact_theta.shape[0])
    z = (sh.estimates["exact"].mean - (post.beta_mean[0] + post.u_mean)) / mcse
    assert np.all(np.abs(z) < 4), z
    # EB's tau = 0: complete pooling, every level at mu_hat +- 1.96 se(mu_hat)
    mu, se = schools_run.results["eb"].fixed_effects["Intercept"]
    np.testing.assert_allclose(sh.estimates["eb"].mean, mu, rtol=1e-10)
    np.testing.assert_allclose(sh.estimates["eb"].upper, mu + 1.959963984540054 * se, rtol=1e-8)


# ------------------------------------------------------------ run directory, report, figures


@pytest.fixture(scope="module")
def run_dir(schools_run, schools, tmp_path_factory):
    return write_comparison(tmp_path_factory.mktemp("family") / "run", schools_run, schools,
                            dataset="eight schools")


def _images(section_html: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"',
                                                    section_html)]


def test_the_report_shows_the_scale_and_shrinkage_figures(run_dir):
    text = (run_dir / "report.html").read_text()
    for key, png in (("scale-tau", "scale_tau.png"), ("shrinkage", "shrinkage.png")):
        body = text.split(f'<section id="{key}">')[1].split("</section>")[0]
        images = _images(body)
        assert len(images) == 1 and 'class="note"' not in body, body[:500]
        assert (run_dir / "figures" / png).read_bytes() == images[0]
    assert '<section id="nuts">' in text and '<section id="smc">' in text
    assert "sigma[tau]" in text and "the oracle" in text and "Intercept" in text
    assert not re.search(r'(src|href)="(?!data:)', text)


def test_summary_json_carries_the_model_and_every_methods_scales(run_dir, schools):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["family"] is True and summary["model"] == schools.describe()
    for method in ("exact", "eb", "nuts", "smc"):
        m = summary["methods"][method]
        assert set(m["sigmas"]) == {"tau"}, method
        assert set(m["fixed_effects"]) == {"Intercept"}
        assert set(m["random_effects"]["tau"]) == set("ABCDEFGH")
    assert summary["shrinkage"]["raw_mean"] == list(eight_schools_table()["y"])
    assert {r["method"] for r in summary["table"]} == {"exact", "eb", "nuts", "smc"}


def test_the_report_rerenders_identically_from_disk(run_dir):
    assert render_report(run_dir) == (run_dir / "report.html").read_text()
    before = (run_dir / "figures" / "shrinkage.png").read_bytes()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "figures" / "shrinkage.png").read_bytes() == before


def test_the_figures_draw_inline_from_a_comparison(sim_run):
    with figures.offscreen():
        for fig in (scale_posterior(sim_run, "site"), scale_posterior(sim_run, "noise"),
                    shrinkage_plot(sim_run)):
            assert isinstance(fig, matplotlib.figure.Figure) and fig.axes
        labels = scale_posterior(sim_run, "site").axes[0].get_legend_handles_labels()[1]
        assert labels[0] == "exact" and any(label.startswith("eb: ") for label in labels)
        left, right = shrinkage_plot(sim_run).axes
        assert len(left.get_yticks()) == 12 and "covariate averages" in left.get_xlabel()


def test_data_csv_names_the_levels_and_reads_back_as_the_same_model(run_dir, schools):
    import pandas as pd

    from hyperbayes.inference.mathematics.family_likelihood import family_log_ml, layout_of
    from hyperbayes.models.family_stats import family_stats
    from hyperbayes.models.formula import spec_from_formula

    frame = pd.read_csv(run_dir / "data.csv")
    assert list(frame["school"]) == list("ABCDEFGH")
    again = spec_from_formula("y ~ 1 + (1|school)", frame, standard_errors="s")
    taus = np.array([[0.5], [3.0], [10.0]])
    np.testing.assert_allclose(
        family_log_ml(family_stats(again), layout_of(again), taus, np.ones(3)),
        family_log_ml(family_stats(schools), layout_of(schools), taus, np.ones(3)), rtol=1e-12)
