"""Empirical Bayes (REML) on a random-intercept model against statsmodels MixedLM(reml=True).

Usage: python benchmarks/random_effects.py [--scale 1.0] [--repeat 3]

Random intercept, N = 100,000 rows, 1,000 groups, 3 covariates, learned noise (``--scale``
multiplies N and the groups). Both fits run side by side in one process on the same arrays;
printed: the wall time of each (best of ``--repeat``; hyperbayes from the raw arrays, i.e.
specification + one pass for the statistics + the fit), the ratio, and the relative
differences of the variance components and fixed effects. Then the large case of the issue:
10^6 rows with 10^4 levels, hyperbayes only (time and the size of the statistics).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import statsmodels.api as sm

from hyperbayes.inference.methods.empirical_bayes_family import empirical_bayes_family
from hyperbayes.models.data import Dataset
from hyperbayes.models.family_stats import family_stats
from hyperbayes.models.specification import specify


def simulate(n, L, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, L, n)
    X = rng.standard_normal((n, 3))
    y = 1.0 + X @ [0.5, -0.3, 0.2] + 0.7 * rng.standard_normal(L)[codes] + rng.standard_normal(n)
    return X, codes, y


def hyperbayes_fit(X, codes, y):
    data = Dataset.from_arrays(np.column_stack([X, codes]), y, feature_names=["a", "b", "c", "g"])
    spec = specify(data, fixed=["a", "b", "c"], categorical={"g": "g"})
    return empirical_bayes_family(spec)


def best(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, L = int(100_000 * args.scale), max(int(1_000 * args.scale), 2)
    X, codes, y = simulate(n, L, seed=0)
    t_hb, fit = best(lambda: hyperbayes_fit(X, codes, y), args.repeat)
    exog = np.column_stack([np.ones(n), X])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_sm, ref = best(lambda: sm.MixedLM(y, exog, groups=codes).fit(reml=True), args.repeat)
    print(f"random intercept: N={n:,}, {L:,} groups, 3 covariates, learned noise (REML)")
    print(f"  hyperbayes EB (spec + pass + fit): {t_hb:.3f} s   statsmodels MixedLM: {t_sm:.3f} s   "
          f"ratio {t_sm / t_hb:.1f}x")
    print(f"  tau^2 {fit.scale('g') ** 2:.6f} vs {ref.cov_re[0, 0]:.6f} "
          f"(rel {fit.scale('g') ** 2 / ref.cov_re[0, 0] - 1:.1e}); delta^2 {fit.noise ** 2:.6f} vs "
          f"{ref.scale:.6f} (rel {fit.noise ** 2 / ref.scale - 1:.1e}); fixed effects max rel "
          f"{np.max(np.abs(fit.beta / ref.fe_params - 1)):.1e}  (MixedLM at its default tolerances)")
    n2, L2 = int(1_000_000 * args.scale), max(int(10_000 * args.scale), 2)
    X, codes, y = simulate(n2, L2, seed=1)
    t, fit = best(lambda: hyperbayes_fit(X, codes, y), 1)
    data = Dataset.from_arrays(np.column_stack([X, codes]), y, feature_names=["a", "b", "c", "g"])
    st = family_stats(specify(data, fixed=["a", "b", "c"], categorical={"g": "g"}))
    size = st.level_mean.nbytes + st.level_weight.nbytes + st.within.nbytes
    print(f"large: N={n2:,}, {L2:,} levels: {t:.2f} s; statistics {size / 1e6:.2f} MB "
          f"(the data: {X.nbytes / 1e6:.0f} MB); tau={fit.scale('g'):.4f} converged={fit.converged}")


if __name__ == "__main__":
    main()
