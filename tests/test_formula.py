"""Formulas build the same model as the explicit specification (models/formula.py).

"The same model" is checked where it matters: the restricted and profile log marginal
likelihoods (MATH.md section 7) at several scale settings, and the empirical-Bayes estimates,
from the formula's spec and from an independently written ``specify(...)`` call (indicator
columns and level codes built by hand here, not by formulae).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hyperbayes.inference.mathematics.family_likelihood import family_log_ml, layout_of
from hyperbayes.inference.methods.empirical_bayes_family import empirical_bayes_family
from hyperbayes.models.data import DataError, Dataset
from hyperbayes.models.datasets import bcg_table, eight_schools_table, load_bcg, load_eight_schools
from hyperbayes.models.family_stats import family_stats
from hyperbayes.models.formula import formula_columns, spec_from_formula
from hyperbayes.models.hyperpriors import parse_hyperprior
from hyperbayes.models.specification import Group, specify

#: Both specs hold the same numbers in the same order, so the statistics and the likelihood
#: agree to round-off (a reordered sum); measured ~1e-15 relative.
SAME_MODEL_RTOL = 1e-11
#: EB optima of two identical problems: the same optimiser on equal objectives, round-off.
EB_RTOL = 1e-8
#: With the levels in another order (integer vs text labels) the sums are permuted.
PERMUTED_RTOL = 1e-9


def _log_ml(spec, sigmas, noise, convention):
    return family_log_ml(family_stats(spec), layout_of(spec), sigmas, noise, convention=convention)


def _assert_same_model(a, b, sigmas, noise, *, rtol=SAME_MODEL_RTOL, same_levels=True):
    """Equal log ML (both conventions) on a grid of scales and equal EB fits."""
    assert [g.learned for g in a.groups] == [g.learned for g in b.groups]
    assert (a.n_fixed, a.noise, a.standard_errors) == (b.n_fixed, b.noise, b.standard_errors)
    for convention in ("reml", "ml"):
        np.testing.assert_allclose(
            _log_ml(a, sigmas, noise, convention), _log_ml(b, sigmas, noise, convention),
            rtol=rtol)
        fa = empirical_bayes_family(a, convention=convention)
        fb = empirical_bayes_family(b, convention=convention)
        # log_ml and the scales are what the fit is about; at a boundary both are exactly 0.
        np.testing.assert_allclose(fa.log_ml, fb.log_ml, rtol=EB_RTOL)
        np.testing.assert_allclose(fa.sigmas, fb.sigmas, rtol=EB_RTOL, atol=1e-10)
        np.testing.assert_allclose(fa.noise, fb.noise, rtol=EB_RTOL)
        np.testing.assert_allclose(fa.beta, fb.beta, rtol=EB_RTOL, atol=1e-10)
        np.testing.assert_allclose(fa.beta_cov, fb.beta_cov, rtol=EB_RTOL, atol=1e-12)
        np.testing.assert_allclose(fa.w_mean, fb.w_mean, rtol=EB_RTOL, atol=1e-10)
        if same_levels:
            assert fa.levels == fb.levels
            np.testing.assert_allclose(fa.u_mean, fb.u_mean, rtol=EB_RTOL, atol=1e-10)
        else:
            ua = dict(zip(fa.levels, fa.u_mean, strict=True))
            ub = dict(zip(fb.levels, fb.u_mean, strict=True))
            assert ua.keys() == ub.keys()
            np.testing.assert_allclose([ua[k] for k in ub], list(ub.values()), rtol=EB_RTOL,
                                       atol=1e-10)


@pytest.fixture(scope="module")
def frame():
    """200 rows: age, sex (text), bmi, x1, x2, a site (text, 12 levels of unequal size)."""
    rng = np.random.default_rng(11)
    n, sites = 200, np.array([f"site{k:02d}" for k in range(12)])
    site = sites[rng.integers(0, 12, n)]
    codes = np.searchsorted(sites, site)
    sex = rng.choice(["f", "m"], n)
    age = rng.normal(50, 10, n)
    x1, x2 = rng.standard_normal((2, n))
    y = (2 + 0.05 * age + 0.7 * (sex == "m") + 0.4 * x1 - 0.2 * x2
         + 0.6 * rng.standard_normal(12)[codes] + rng.standard_normal(n))
    return pd.DataFrame({"y": y, "age": age, "sex": sex, "x1": x1, "x2": x2, "site": site,
                         "w": rng.uniform(0.5, 2.0, n)})


def test_eight_schools_formula_is_the_shipped_spec():
    table = pd.DataFrame(eight_schools_table())
    spec = spec_from_formula("y ~ 1 + (1|school)", table, standard_errors="s")
    ref = load_eight_schools()
    assert spec.factor.levels == ref.factor.levels == tuple("ABCDEFGH")
    np.testing.assert_array_equal(spec.factor.codes, ref.factor.codes)
    np.testing.assert_array_equal(spec.obs_weights, ref.obs_weights)
    tau = np.array([[0.0], [1.0], [5.0], [12.0], [40.0]])
    _assert_same_model(spec, ref, tau, np.ones(len(tau)))


def test_random_intercept_with_covariates_matches_explicit_spec(frame):
    spec = spec_from_formula("y ~ age + C(sex) + (1|site)", frame)
    assert spec.fixed == ("age", "C(sex)[m]") and spec.intercept
    assert [g.name for g in spec.groups] == ["site"]
    assert spec.factor.levels == tuple(sorted(set(frame["site"])))
    male = (frame["sex"] == "m").to_numpy(float)  # treatment coding, reference level "f"
    data = Dataset.from_arrays(np.column_stack([frame["age"], male]), frame["y"],
                               feature_names=["age", "sex_m"])
    ref = specify(data, fixed=["age", "sex_m"], categorical={"site": frame["site"].to_numpy()})
    sigmas = np.array([[0.0], [0.3], [1.0], [3.0]])
    _assert_same_model(spec, ref, sigmas, np.array([0.5, 1.0, 1.2, 2.0]))


def test_penalised_terms_match_an_explicit_group(frame):
    prior = parse_hyperprior("halfnormal:2")
    spec = spec_from_formula("y ~ age + x1 + x2 + (1|site)", frame, penalise=["x1", "x2"],
                             prior=prior, noise_prior="halfnormal:3")
    assert spec.fixed == ("age",)
    assert [(g.name, g.columns, g.prior) for g in spec.groups] == [
        ("sigma", ("x1", "x2"), prior), ("site", (), prior)]
    assert spec.noise_prior == parse_hyperprior("halfnormal:3")
    data = Dataset.from_arrays(frame[["age", "x1", "x2"]].to_numpy(), frame["y"],
                               feature_names=["age", "x1", "x2"])
    ref = specify(data, fixed=["age"], groups=[Group("sigma", ("x1", "x2"), prior=prior)],
                  categorical={"site": frame["site"].to_numpy()}, prior=prior)
    sigmas = np.array([[0.1, 0.0], [0.5, 0.3], [2.0, 1.0], [0.3, 3.0]])
    _assert_same_model(spec, ref, sigmas, np.array([0.5, 1.0, 1.2, 2.0]))


def test_all_terms_penalised_is_todays_default_model(frame):
    spec = spec_from_formula("y ~ x1 + x2", frame, penalise=["x1", "x2"])
    ref = specify(Dataset.from_arrays(frame[["x1", "x2"]].to_numpy(), frame["y"],
                                      feature_names=["x1", "x2"]))
    assert spec.describe() == ref.describe()
    sigmas = np.array([[0.01], [0.3], [1.0], [5.0]])
    _assert_same_model(spec, ref, sigmas, np.array([0.5, 1.0, 1.2, 2.0]))


def test_penalise_entries_expand_like_formula_terms(frame):
    spec = spec_from_formula("y ~ x1 * sex + age", frame, penalise=["x1*sex"])
    assert spec.fixed == ("age",)
    assert spec.groups[0].columns == ("x1", "sex[m]", "x1:sex[m]")
    male = (frame["sex"] == "m").to_numpy(float)
    np.testing.assert_array_equal(spec.dense_matrix()[:, 2], frame["x1"].to_numpy() * male)


def test_bcg_meta_regression_matches_the_shipped_spec():
    t = bcg_table()
    trial = [f"{int(k)} {a}" for k, a in zip(t["trial"], t["author"], strict=True)]
    table = pd.DataFrame({"yi": t["yi"], "se": np.sqrt(t["vi"]), "ablat": t["ablat"],
                          "trial": trial, "trial_no": t["trial"]})
    spec = spec_from_formula("yi ~ ablat + (1|trial)", table, standard_errors="se")
    ref = load_bcg(latitude=True)
    assert spec.fixed == ("ablat",) and spec.factor.levels == ref.factor.levels
    tau = np.array([[0.0], [0.1], [0.3], [1.0]])
    _assert_same_model(spec, ref, tau, np.ones(len(tau)))
    # Integer-valued trial numbers as the factor: levels "1".."13" in numeric order.
    numeric = spec_from_formula("yi ~ ablat + (1|trial_no)", table, standard_errors="se")
    assert numeric.factor.levels == tuple(str(k) for k in range(1, 14))
    for convention in ("reml", "ml"):
        np.testing.assert_allclose(_log_ml(numeric, tau, np.ones(4), convention),
                                   _log_ml(ref, tau, np.ones(4), convention), rtol=PERMUTED_RTOL)


def test_weights_column_and_no_intercept(frame):
    spec = spec_from_formula("y ~ 0 + sex + (1|site)", frame, weights="w")
    assert not spec.intercept and spec.fixed == ("sex[f]", "sex[m]")  # full-rank coding
    np.testing.assert_array_equal(spec.obs_weights, frame["w"].to_numpy())
    female = (frame["sex"] == "f").to_numpy(float)
    data = Dataset.from_arrays(np.column_stack([female, 1 - female]), frame["y"],
                               feature_names=["f", "m"])
    ref = specify(data, fixed=["f", "m"], intercept=False, weights=frame["w"].to_numpy(),
                  categorical={"site": frame["site"].to_numpy()})
    _assert_same_model(spec, ref, np.array([[0.2], [1.0]]), np.array([0.8, 1.5]))


def test_transformed_terms_and_integer_or_categorical_groups(frame):
    df = frame.assign(pos=frame["age"] / 10, g=np.arange(len(frame)) % 4 * 10,
                      cat=pd.Categorical(frame["site"]))
    spec = spec_from_formula("y ~ np.log(pos) + (1|g)", df)
    assert spec.fixed == ("np.log(pos)",) and spec.factor.levels == ("0", "10", "20", "30")
    np.testing.assert_allclose(spec.fixed_matrix()[:, 0], np.log(df["pos"]), rtol=1e-15)
    np.testing.assert_array_equal(spec.factor.codes, np.arange(len(df)) % 4)
    cat = spec_from_formula("y ~ 1 + (1|cat)", df)
    assert cat.factor.levels == tuple(sorted(set(frame["site"])))
    # A numeric column may be both a covariate and the grouping factor (a trend + year effects).
    both = spec_from_formula("y ~ g + (1|g)", df)
    assert both.fixed == ("g",) and both.factor.n_levels == 4


def test_formula_columns():
    assert formula_columns("y ~ np.log(x) + C(sex) + a:b + np.power(z, 2) + (1|site)") == {
        "y", "x", "sex", "a", "b", "z", "site"}
    with pytest.raises(DataError, match="could not be parsed"):
        formula_columns("y ~ (1|")


BAD_FORMULAS = [
    ("y ~ age + bmi + (1|site)", {}, r"unknown column\(s\) \['bmi'\]; the columns .* 'site'"),
    ("y ~ (1|", {}, r"'y ~ \(1\|' could not be parsed"),
    ("y ~ x1 ~ x2", {}, "could not be parsed"),
    ("y ~ age + 1|site", {}, "outside parentheses"),
    ("y ~ (age|site)", {}, r"random slope \(age\|site\)"),
    ("y ~ (1 + age|site)", {}, r"random slope \(age\|site\)"),
    ("y ~ (1|site) + (1|sex)", {}, "2 grouping factors"),
    ("y ~ (1|site/sex)", {}, r"nested \(1\|a/b\)"),
    ("sex ~ age + (1|site)", {}, "response 'sex' is text"),
    ("np.log(age) ~ x1 + (1|site)", {}, "transformations of the response"),
    ("age", {}, "has no response"),
    ("y ~ age + (1|y)", {}, r"response 'y' is also used in the term '1\|y'"),
    ("y ~ age + x1", {}, "no penalised part"),
    ("y ~ age + (1|site)", {"penalise": ["bmi"]}, "not a plain term"),
    ("y ~ age + w + (1|site)", {"weights": "w"}, "weights column 'w' is also used"),
    ("y ~ age + (1|site)", {"standard_errors": "se"}, r"unknown column\(s\) \['se'\]"),
    ("y ~ age + (1|site)", {"weights": "sex"}, "column 'sex' is not numeric"),
    ("y ~ foo(age) + (1|site)", {}, "could not be evaluated"),
    ("y ~ offset(age) + (1|site)", {}, "offset terms"),
    ("y ~ age + age2 + (1|site)", {}, "collinear"),  # specify's own checks still apply
]


@pytest.mark.parametrize(("formula", "options", "match"), BAD_FORMULAS)
def test_bad_formulas_raise_one_line_data_errors(frame, formula, options, match):
    df = frame.assign(age2=2 * frame["age"])
    with pytest.raises(DataError, match=match) as info:
        spec_from_formula(formula, df, **options)
    assert "\n" not in str(info.value)


def test_one_level_factor_and_missing_values(frame):
    with pytest.raises(DataError, match=r"'site' has one level \('a'\).*drop the \(1\|site\)"):
        spec_from_formula("y ~ age + (1|site)", frame.assign(site="a"))
    for column, value in (("age", np.nan), ("site", None), ("y", np.inf)):
        df = frame.copy()
        df[column] = df[column].astype(object) if value is None else df[column]
        df.loc[7, column] = value
        df.index = df.index + 100
        with pytest.raises(DataError, match=rf"column '{column}' has 1 missing.*row 7, index 107"):
            spec_from_formula("y ~ age + (1|site)", df)
    # A missing value in a column the formula does not use is no problem.
    spec_from_formula("y ~ age + (1|site)", frame.assign(x1=np.nan))
