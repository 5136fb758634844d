"""The model family through the front doors: ``hyperbayes fit/compare/demo`` and ``hb.fit``.

References: statsmodels' MixedLM (an independent REML/ML implementation) for a random-intercept
data set, run through the command line on a CSV file; the eight schools' boundary solution
tau = 0, where mu is the precision-weighted mean of the y_j (7.6856, as published for the
REML/ML fit, e.g. metafor's ``rma(yi, sei = s)``).
"""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import hyperbayes as hb
from hyperbayes.inference.methods.empirical_bayes_family import empirical_bayes_family
from hyperbayes.inference.methods.exact_family import exact_family_posterior
from hyperbayes.inference.workflow.cli import main
from hyperbayes.models.datasets import bcg_table, eight_schools_table, load_eight_schools

#: statsmodels stops its L-BFGS where the likelihood is flat to ~1e-10 nats, which moves the
#: variance parameters by ~1e-5 relative; ours maximise it to ~1e-12 (a higher likelihood).
MIXEDLM_RTOL = 1e-4
#: Both compute the same restricted/profile log likelihood (with the same constants).
LOGLIK_ATOL = 1e-6
#: The same deterministic computation through two doors.
SAME_RTOL = 1e-12
#: Two optimisers (the shared EB's and the family's) on the same likelihood.
SHARED_ML_RTOL = 1e-8
#: The published eight-schools mu at tau = 0 has 4 decimals.
PUBLISHED_MU, PUBLISHED_ATOL = 7.6856, 5e-5


def run_main(capsys, argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A random-intercept CSV (15 unequal groups, text labels, a covariate) and eight schools."""
    d = tmp_path_factory.mktemp("family_cli")
    rng = np.random.default_rng(7)
    sizes = rng.integers(3, 12, size=15)
    codes = np.repeat(np.arange(15), sizes)
    x = rng.normal(size=codes.size)
    y = 2.0 + 0.7 * x + rng.normal(0, 0.8, 15)[codes] + rng.normal(0, 1.0, codes.size)
    frame = pd.DataFrame({"y": y, "x": x, "g": [f"site{k:02d}" for k in codes]})
    frame.to_csv(d / "sites.csv", index=False)
    schools = pd.DataFrame(eight_schools_table())
    schools.to_csv(d / "schools.csv", index=False)
    schools.assign(school="A").to_csv(d / "one_school.csv", index=False)
    schools.to_parquet(d / "schools.parquet")
    bcg = bcg_table()
    pd.DataFrame({"trial": [f"{int(k)} {a}" for k, a in zip(bcg["trial"], bcg["author"], strict=True)],
                  "yi": bcg["yi"], "sei": np.sqrt(bcg["vi"]),
                  "ablat": bcg["ablat"]}).to_csv(d / "bcg.csv", index=False)
    return {"dir": d, "sites": frame, "schools": schools}


def _fit_json(capsys, *argv):
    code, out, err = run_main(capsys, ["fit", "eb", *argv, "--json", "--quiet"])
    assert code == 0, err
    return json.loads(out)


# ------------------------------------------------------------------ against statsmodels


@pytest.mark.parametrize("convention", ["reml", "ml"])
def test_eb_through_the_cli_agrees_with_statsmodels_mixedlm(capsys, files, convention):
    import statsmodels.formula.api as smf

    flag = "--ml" if convention == "ml" else "--reml"
    got = _fit_json(capsys, "--data", files["dir"] / "sites.csv", "--formula", "y ~ x + (1|g)", flag)
    frame = files["sites"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' own convergence chatter
        ref = smf.mixedlm("y ~ x", frame, groups=frame["g"]).fit(reml=convention == "reml",
                                                                   method="lbfgs")
    assert got["convention"] == convention
    rtol = MIXEDLM_RTOL
    np.testing.assert_allclose(got["sigmas"]["g"], np.sqrt(ref.cov_re.iloc[0, 0]), rtol=rtol)
    np.testing.assert_allclose(got["noise"], np.sqrt(ref.scale), rtol=rtol)
    for name in ("Intercept", "x"):
        fe = got["fixed_effects"][name]
        np.testing.assert_allclose(fe["estimate"], ref.fe_params[name], rtol=rtol)
        np.testing.assert_allclose(fe["se"], ref.bse_fe[name], rtol=rtol)
    np.testing.assert_allclose(got["log_ml"], ref.llf, atol=LOGLIK_ATOL)
    assert got["log_ml"] >= ref.llf - 1e-9  # ours is the maximum, theirs a point near it
    # The family keys of the JSON contract: every scale, its interval, the BLUPs per level.
    lo, hi = got["sigma_intervals"]["g"]
    assert lo < got["sigmas"]["g"] < hi
    assert got["sigma"] == got["sigmas"]["g"]  # one group: sigma is its scale
    assert got["intercept"] == got["fixed_effects"]["Intercept"]["estimate"]
    blups = got["random_effects"]["g"]
    assert sorted(blups) == sorted(frame["g"].unique())
    ref_blups = {k: float(v.iloc[0]) for k, v in ref.random_effects.items()}
    np.testing.assert_allclose([blups[k]["mean"] for k in ref_blups], list(ref_blups.values()),
                               rtol=10 * rtol, atol=10 * rtol)
    assert all(v["sd"] > 0 for v in blups.values())
    assert "'g'" in got["model"] and got["priors"]["g"].startswith("halfnormal")


# ------------------------------------------------------------------ eight schools


@pytest.mark.parametrize("flag", ["--reml", "--ml"])
def test_eight_schools_eb_is_the_boundary_with_the_published_mu(capsys, files, flag):
    got = _fit_json(capsys, "--data", files["dir"] / "schools.csv",
                    "--formula", "y ~ 1 + (1|school)", "--se", "s", flag)
    assert got["sigmas"] == {"school": 0.0}
    assert got["at_boundary"] == ["school"]
    assert got["noise"] == 1.0
    mu, se = got["fixed_effects"]["Intercept"]["estimate"], got["fixed_effects"]["Intercept"]["se"]
    t = eight_schools_table()
    w = 1 / t["s"] ** 2  # at tau = 0 the GLS estimate is the precision-weighted mean
    np.testing.assert_allclose(mu, np.sum(w * t["y"]) / np.sum(w), rtol=1e-10)
    np.testing.assert_allclose(se, 1 / np.sqrt(np.sum(w)), rtol=1e-10)
    assert abs(mu - PUBLISHED_MU) < PUBLISHED_ATOL
    direct = empirical_bayes_family(load_eight_schools(), convention=flag[2:])
    np.testing.assert_allclose(mu, direct.beta[0], rtol=SAME_RTOL)
    assert direct.at_boundary == ("tau",)  # the same fit; the group is named in the formula


#: metafor's documented mixed-effects meta-regression of the BCG trials,
#: ``rma(yi, vi, mods = ~ ablat, data = dat.bcg)`` (REML): tau^2 = 0.0764, intercept 0.2515
#: (se 0.2491), ablat -0.0291 (se 0.0072); printed to 4 decimals.
METAFOR_BCG = {"tau2": 0.0764, "Intercept": (0.2515, 0.2491), "ablat": (-0.0291, 0.0072)}
#: metafor's Fisher scoring stops once tau^2 changes by < 1e-5 (its ``threshold``): its printed
#: 0.0764 is an iterate at >= 0.07635, while the maximum is at 0.076348.
METAFOR_TAU2_ATOL = 1e-4
#: The REML maximum of the direct formula, found by a bounded scalar search.
DIRECT_RTOL = 1e-6


def _direct_reml_meta_regression(y, v, X):
    """tau^2 maximising -1/2 [sum log(v + tau^2) + log det X'WX + r'Wr], and its GLS fit."""
    from scipy import optimize

    def gls(t2):
        w = 1 / (v + t2)
        A = X.T @ (w[:, None] * X)
        b = np.linalg.solve(A, X.T @ (w * y))
        return w, A, b

    def nll(t2):
        w, A, b = gls(t2)
        r = y - X @ b
        return 0.5 * (np.sum(np.log(v + t2)) + np.linalg.slogdet(A)[1] + r @ (w * r))

    t2 = optimize.minimize_scalar(nll, bounds=(0, 1), method="bounded", options={"xatol": 1e-12}).x
    _, A, b = gls(t2)
    return t2, b, np.sqrt(np.diag(np.linalg.inv(A)))


def test_bcg_meta_regression_through_the_cli_reproduces_metafor(capsys, files):
    got = _fit_json(capsys, "--data", files["dir"] / "bcg.csv", "--formula",
                    "yi ~ ablat + (1|trial)", "--se", "sei")
    tau2 = got["sigmas"]["trial"] ** 2
    assert abs(tau2 - METAFOR_BCG["tau2"]) < METAFOR_TAU2_ATOL
    for name in ("Intercept", "ablat"):
        estimate, se = METAFOR_BCG[name]
        assert abs(got["fixed_effects"][name]["estimate"] - estimate) < PUBLISHED_ATOL
        assert abs(got["fixed_effects"][name]["se"] - se) < PUBLISHED_ATOL
    t = bcg_table()
    ref_t2, ref_b, ref_se = _direct_reml_meta_regression(
        t["yi"], t["vi"], np.column_stack([np.ones(t["yi"].size), t["ablat"]]))
    np.testing.assert_allclose(tau2, ref_t2, rtol=DIRECT_RTOL)
    for j, name in enumerate(("Intercept", "ablat")):
        np.testing.assert_allclose(got["fixed_effects"][name]["estimate"], ref_b[j], rtol=DIRECT_RTOL)
        np.testing.assert_allclose(got["fixed_effects"][name]["se"], ref_se[j], rtol=DIRECT_RTOL)


def test_python_fit_with_a_formula_equals_the_cli(capsys, files):
    cli = _fit_json(capsys, "--data", files["dir"] / "schools.csv",
                    "--formula", "y ~ 1 + (1|school)", "--se", "s")
    py = hb.fit("eb", files["schools"], formula="y ~ 1 + (1|school)", standard_errors="s")
    py_json = py.to_json()
    assert {"sigmas", "fixed_effects", "random_effects", "log_ml"} <= py_json.keys()
    for key, value in py_json.items():  # every key but the time (the CLI adds the model's)
        assert key == "wall_time" or value == cli[key], key
    # ... and so does a path, and the formula-less route with a categorical column
    from_path = hb.fit("eb", files["dir"] / "schools.csv", formula="y ~ 1 + (1|school)",
                       standard_errors="s")
    plain = hb.fit("eb", files["schools"], target="y", standard_errors="s", categorical=["school"])
    for other in (from_path, plain):
        np.testing.assert_allclose(other.fixed_effects["Intercept"], py.fixed_effects["Intercept"],
                                   rtol=SAME_RTOL)
        assert other.sigmas == py.sigmas


def test_python_fit_on_a_spec_is_a_family_run_with_default_priors():
    run = hb.prepare_run(load_eight_schools())
    assert run.family and run.centering is None
    assert str(run.data.groups[0].prior).startswith("halfnormal")  # filled, scaled to the data
    assert run.options.noise == 1.0 and run.options.hyperprior == run.data.groups[0].prior
    kept = hb.prepare_run(load_eight_schools(tau_prior="halfcauchy:5"))
    assert str(kept.data.groups[0].prior) == "halfcauchy:5"
    assert hb.prepare_run(hb.load_diabetes(), convention="reml").family  # a family notion
    assert not hb.prepare_run(hb.load_diabetes()).family  # today's route, unchanged


def test_ml_on_plain_data_is_todays_centred_eb_and_reml_is_not(capsys):
    """Centring and maximising over N rows is the profile likelihood: ``fit eb`` equals
    ``fit eb --ml`` (intercept and weights included); ``--reml`` uses N - 1 degrees of freedom."""
    shared, ml, reml = (_fit_json(capsys, *flag) for flag in ([], ["--ml"], ["--reml"]))
    assert "sigmas" not in shared and ml["convention"] == "ml" and reml["convention"] == "reml"
    for key in ("sigma", "noise", "intercept"):
        np.testing.assert_allclose(ml[key], shared[key], rtol=SHARED_ML_RTOL)
    np.testing.assert_allclose(ml["weights"], shared["weights"], rtol=SHARED_ML_RTOL)
    assert reml["noise"] > ml["noise"] * (1 + 1e-4)  # REML's variance is not biased down


# ------------------------------------------------------------------ bad input: exit 2


BAD = {
    "unknown column in the formula": (
        ["--data", "schools.csv", "--formula", "y ~ 1 + (1|schol)", "--se", "s"],
        r"column 'schol' named by the formula is not in .*schools.csv; its columns are",
    ),
    "formula syntax error": (
        ["--data", "schools.csv", "--formula", "y ~ (1|", "--se", "s"],
        r"formula 'y ~ \(1\|' could not be parsed",
    ),
    "grouping factor with one level": (
        ["--data", "one_school.csv", "--formula", "y ~ 1 + (1|school)", "--se", "s"],
        r"'school'.* one level",
    ),
    "formula on a Parquet file": (
        ["--data", "schools.parquet", "--formula", "y ~ 1 + (1|school)", "--se", "s"],
        r"schools.parquet is 1 Parquet file\(s\), which are streamed; --formula .* CSV",
    ),
    "unknown --se column": (
        ["--data", "schools.csv", "--formula", "y ~ 1 + (1|school)", "--se", "sd"],
        r"column 'sd' named by standard_errors \(--se\) is not in",
    ),
    "text column without a formula": (
        ["--data", "schools.csv", "--target", "y", "--se", "s"],
        r"column 'school' of .*schools.csv is text; use --formula \"y ~ \.\.\. \+ \(1\|school\)\"",
    ),
    "text column, shared-sigma run": (
        ["--data", "schools.csv", "--target", "y"],
        r"column 'school' of .*schools.csv is text; use --formula",
    ),
    "--se with a learned noise": (
        ["--data", "schools.csv", "--formula", "y ~ 1 + (1|school)", "--se", "s", "--learn-noise"],
        r"--se fixes the noise scale at 1",
    ),
    "--target that is not the response": (
        ["--data", "schools.csv", "--formula", "y ~ 1 + (1|school)", "--se", "s", "--target", "s"],
        r"the target 's' \(--target\) is not the formula's response 'y'",
    ),
    "--no-intercept with a formula": (
        ["--data", "schools.csv", "--formula", "y ~ 1 + (1|school)", "--se", "s", "--no-intercept"],
        r"write '0 \+' in it",
    ),
    "--ml on streamed data": (
        ["--data", "schools.parquet", "--target", "y", "--ml"],
        r"is 1 Parquet file\(s\), which are streamed",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_family_input_exits_2_with_one_line_and_no_run_directory(capsys, files, case):
    argv, message = BAD[case]
    d = files["dir"]
    argv = [str(d / a) if a.endswith((".csv", ".parquet")) else a for a in argv]
    out_dir = d / f"run-{re.sub(r'[^a-z]+', '-', case)}"
    code, out, err = run_main(capsys, ["fit", "eb", *argv, "--out", out_dir])
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hyperbayes: error: ") and "Traceback" not in err
    assert re.search(message, lines[0]), lines[0]
    assert out == "" and not out_dir.exists()


def test_the_human_output_lists_every_scale_and_fixed_effect(capsys, files):
    code, out, _ = run_main(capsys, ["fit", "eb", "--data", files["dir"] / "sites.csv",
                                     "--formula", "y ~ x + (1|g)", "--quiet"])
    assert code == 0
    assert re.search(r"^sigma\[g\]: \d", out, re.M) and re.search(r"^sigma\[g\] 95% interval", out, re.M)
    assert re.search(r"^beta\[Intercept\]: .*\(se ", out, re.M) and "beta[x]:" in out


# ------------------------------------------------------------------ compare and demo


def _check_run_directory(run_dir, methods):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r["method"] for r in summary["table"]] == list(methods)
    for r in summary["table"]:
        assert r["status"] != "failed", (r["method"], r.get("message"))
    report = (run_dir / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 2  # the per-group figure and the shrinkage
    assert len(list(run_dir.rglob("*.png"))) >= 2 and "shrinkage" in report.lower()
    return summary


def test_compare_writes_a_family_run_directory_for_the_point_methods(capsys, files):
    out_dir = files["dir"] / "compare-fast"
    code, out, err = run_main(capsys, [
        "compare", "--data", files["dir"] / "schools.csv", "--formula", "y ~ 1 + (1|school)",
        "--se", "s", "--methods", "exact,eb", "--out", out_dir, "--quiet"])
    assert code == 0, err
    assert out.strip() == f"report: {out_dir / 'report.html'}"
    summary = _check_run_directory(out_dir, ["exact", "eb"])
    assert summary["methods"]["eb"]["sigmas"] == {"school": 0.0}
    assert "school" in summary["methods"]["exact"]["sigmas"]
    before = (out_dir / "report.html").read_text()
    code, out, err = run_main(capsys, ["report", out_dir])  # re-rendered from the files alone
    assert code == 0, err
    assert (out_dir / "report.html").read_text() == before


def test_compare_writes_a_complete_family_run_directory(capsys, files):
    out_dir = files["dir"] / "compare-all"
    code, _, err = run_main(capsys, [
        "compare", "--data", files["dir"] / "schools.csv", "--formula", "y ~ 1 + (1|school)",
        "--se", "s", "--out", out_dir, "--quiet", "--draws", "500", "--chains", "2"])
    assert code == 0, err
    _check_run_directory(out_dir, hb.METHODS)


def test_demo_eight_schools_writes_its_report(capsys, tmp_path):
    out_dir = tmp_path / "demo"
    code, out, err = run_main(capsys, ["demo", "--data", "eight-schools", "--out", out_dir, "--quiet"])
    assert code == 0, err
    assert out.strip() == f"report: {out_dir / 'report.html'}"
    summary = _check_run_directory(out_dir, hb.METHODS)
    assert "halfcauchy:5" in summary["dataset"]
    oracle = exact_family_posterior(load_eight_schools(tau_prior="halfcauchy:5"))
    np.testing.assert_allclose(summary["methods"]["exact"]["sigmas"]["tau"], oracle.scale_mean[0],
                               rtol=SAME_RTOL)
