"""Accuracy and cost of the SMC log evidence against the exact oracle (tracker issue 6).

For each case (D, N) and each number of particles, several seeds of ``smc_evidence`` (4 chains,
pooled in probability space): the error of the log evidence against ``exact_posterior``
(mean, sd, median |error|), the coverage of the reported standard error (fraction of seeds
with |error| <= 2 se), the number of stages, and wall and sampling time, with the time per
1000 particles so linearity in draws can be read off. The exact oracle's time is printed
beside it (the baseline: SMC's value is judged against it, in accuracy and in cost).

A second section shows the cause of the superlinear time at 5000 draws: PyMC's sampling time
at 2000 and 5000 draws with OpenBLAS free to use its threads and with one BLAS thread, side by
side in this process.

Run (full size takes tens of minutes on 2 cores)::

    python benchmarks/smc_accuracy.py                       # every case, 10 seeds
    python benchmarks/smc_accuracy.py --cases d10 --draws 2000 --seeds 5
    python benchmarks/smc_accuracy.py --threshold 0.5       # PyMC's default tempering

Timing is wall-clock on a shared machine; other processes add noise (compare ratios).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hyperbayes.inference.methods.exact import exact_posterior  # noqa: E402
from hyperbayes.inference.methods.smc import THRESHOLD, SmcEvidenceWarning, smc_evidence  # noqa: E402
from hyperbayes.models.data import simulate  # noqa: E402

#: name -> (D, N); data from simulate(sigma=1, noise=1), hyperprior HalfNormal(1), noise known.
CASES = {"d1n20": (1, 20), "d1n200": (1, 200), "d10": (10, 100), "d30": (30, 300)}
HYPERPRIOR = "halfnormal:1"
NOISE = 1.0


def accuracy(case: str, draws_list, seeds: int, chains: int, threshold: float, kernel: str):
    d, n = CASES[case]
    data = simulate(n=n, d=d, sigma=1.0, noise=NOISE, seed=2024).data
    t = time.perf_counter()
    reps = 20
    for _ in range(reps):
        exact = exact_posterior(data, hyperprior=HYPERPRIOR, noise=NOISE).log_evidence
    exact_time = (time.perf_counter() - t) / reps
    print(
        f"\n{case}: D={d}, N={n}, exact log Z = {exact:.4f}, exact oracle {exact_time * 1e3:.2f} ms"
    )
    print(
        f"{'draws':>6} {'mean err':>9} {'sd err':>7} {'med|err|':>8} {'cover2se':>8} "
        f"{'mean se':>7} {'stages':>6} {'wall s':>7} {'sample s':>8} {'s/1000dr':>8} {'x exact':>8}"
    )
    for draws in draws_list:
        errs, ses, stages, walls, samples = [], [], [], [], []
        for seed in range(seeds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SmcEvidenceWarning)  # reported in the table
                r = smc_evidence(
                    data,
                    hyperprior=HYPERPRIOR,
                    noise=NOISE,
                    draws=draws,
                    chains=chains,
                    seed=seed,
                    kernel=kernel,
                    threshold=threshold,
                    exact=False,
                )
            errs.append(r.log_evidence - exact)
            ses.append(r.log_evidence_se)
            stages.append(np.mean(r.n_stages))
            walls.append(r.wall_time)
            samples.append(r.sampling_time)
        errs, ses = np.array(errs), np.array(ses)
        cover = np.mean(np.abs(errs) <= 2 * ses)
        print(
            f"{draws:>6} {errs.mean():+9.3f} {errs.std(ddof=1) if seeds > 1 else np.nan:7.3f} "
            f"{np.median(np.abs(errs)):8.3f} {cover:8.0%} {ses.mean():7.3f} {np.mean(stages):6.1f} "
            f"{np.mean(walls):7.2f} {np.mean(samples):8.2f} {np.mean(samples) / draws * 1e3:8.3f} "
            f"{np.mean(walls) / exact_time:8.0f}",
            flush=True,
        )


def blas_threads(draws_list=(2000, 5000)):
    """PyMC's sampling time with free OpenBLAS threads vs one thread (D = 10, N = 100)."""
    import pymc as pm
    from threadpoolctl import threadpool_limits

    from hyperbayes.models.builders import hierarchical_regression

    data = simulate(n=100, d=10, sigma=1.0, noise=NOISE, seed=2024).data
    model = hierarchical_regression(
        data, hyperprior=HYPERPRIOR, noise=NOISE, likelihood="sufficient"
    )
    print("\nBLAS threads (pm.sample_smc, 1 chain, D=10, N=100): sampling seconds, wall and CPU")
    print(f"{'draws':>6} {'free wall':>9} {'free cpu':>9} {'1thr wall':>9} {'1thr cpu':>9}")
    for draws in draws_list:
        row = []
        for limit in (None, 1):
            with model, threadpool_limits(limits=limit, user_api="blas"):
                w, c = time.perf_counter(), time.process_time()
                pm.sample_smc(
                    draws=draws,
                    chains=1,
                    cores=1,
                    random_seed=3,
                    progressbar=False,
                    compute_convergence_checks=False,
                )
                row += [time.perf_counter() - w, time.process_time() - c]
        print(f"{draws:>6} {row[0]:9.2f} {row[1]:9.2f} {row[2]:9.2f} {row[3]:9.2f}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--draws", nargs="+", type=int, default=[500, 2000, 5000])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--threshold", type=float, default=THRESHOLD)
    parser.add_argument("--kernel", default="imh", choices=["imh", "mh"])
    parser.add_argument("--no-blas", action="store_true", help="skip the BLAS-threads section")
    args = parser.parse_args(argv)
    logging.getLogger("pymc").setLevel(logging.WARNING)  # a script: quiet PyMC's progress lines
    print(
        f"SMC log evidence vs exact: {args.chains} chains pooled by logsumexp, "
        f"{args.seeds} seeds, kernel {args.kernel}, threshold {args.threshold}"
    )
    for case in args.cases:
        accuracy(case, args.draws, args.seeds, args.chains, args.threshold, args.kernel)
    if not args.no_blas:
        blas_threads()


if __name__ == "__main__":
    main()
