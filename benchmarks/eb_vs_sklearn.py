"""Empirical Bayes vs scikit-learn BayesianRidge vs one pass over the data (X^T X + eigh).

Usage: python benchmarks/eb_vs_sklearn.py [--scale 1.0]   (--scale 0.1 shrinks N tenfold)

For each (N, D) and known/learned noise, on the same float64 arrays in one process: wall time
of ``empirical_bayes`` (from the Dataset: Gram pass, eigh, fit, posterior), of
``BayesianRidge(fit_intercept=False)`` (learned noise only: it always learns it), and of the
floor ``X.T @ X`` + ``eigh``; the ratios; the peak extra memory of ``empirical_bayes``
(tracemalloc, as a multiple of X's size); and the time of the fit alone from precomputed
statistics (what EB adds to the one pass). Best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
from sklearn.linear_model import BayesianRidge

from hyperbayes.inference.mathematics.linear_gaussian import sufficient_stats
from hyperbayes.inference.methods.empirical_bayes import empirical_bayes
from hyperbayes.models.data import Dataset


def best_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply N by this")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for n, d in [(1_000_000, 50), (100_000, 200)]:
        n = int(n * args.scale)
        X = rng.standard_normal((n, d))
        y = X @ rng.standard_normal(d) + rng.standard_normal(n)
        data = Dataset.from_arrays(X, y)
        del X
        X = data.X
        floor = best_time(lambda X=X: np.linalg.eigh(X.T @ X), args.repeat)
        sk = best_time(lambda X=X, y=data.y: BayesianRidge(fit_intercept=False).fit(X, y), 1)
        print(f"N={n:,} D={d}  X: {X.nbytes / 1e6:.0f} MB  floor X.T@X+eigh: {floor:.3f} s  "
              f"BayesianRidge: {sk:.3f} s")
        for noise in (1.0, None):
            t = best_time(lambda data=data, noise=noise: empirical_bayes(data, noise=noise), args.repeat)
            tracemalloc.start()
            res = empirical_bayes(data, noise=noise)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            stats = sufficient_stats(data)
            fit_only = best_time(lambda stats=stats, noise=noise: empirical_bayes(stats, noise=noise), args.repeat)
            label = "known noise " if noise else "learned noise"
            print(f"  EB {label}: {t:.3f} s  = {t / floor:.2f} x floor, {sk / t:.1f} x faster than "
                  f"sklearn; peak extra memory {peak / X.nbytes:.3f} x X; route={res.route} "
                  f"converged={res.converged} sigma={res.sigma:.4f} noise={res.noise:.4f}; "
                  f"the fit after the pass: {fit_only * 1e3:.1f} ms")
        del data, X


if __name__ == "__main__":
    main()
