"""Accuracy and cost of the SMC log evidence on both models, against the exact oracle.

For each case (D, N, noise known or learned) the two routes of ``smc_evidence`` run side by
side on the same data with the same seeds: ``collapsed`` (w integrated out, the default) and
``full`` (the hierarchical model, the naive contrast). Per route, over the seeds (4 chains
pooled in probability space each):

* the error of the log evidence against ``exact_posterior``: mean, sd and median |error|;
* the coverage of the reported standard error: the fraction of seeds with |error| <= 1 se and
  <= 2 se. With C = 4 chains the se is estimated from 3 degrees of freedom, so error / se
  follows Student's t_3 and the nominal rates are P(|t_3| <= 1) = 61% and P(|t_3| <= 2) = 86%
  (printed in the header), not the normal 68% and 95%;
* the posterior quantiles of every scale: for q = 2.5, 50, 97.5%, the fraction p of the final
  particles below the exact q-quantile, as mean and sd over the seeds. A sampler of the right
  posterior has mean p = q up to the Monte Carlo error of that mean (sd / sqrt(seeds)); the sd
  is compared with sqrt(q (1 - q) / particles), the sd for independent draws;
* stages, wall time and PyMC's sampling time per run. The exact oracle's time is the baseline.

A last section times the collapsed route against D and N with the cases interleaved in this
process (the least of a few repeats, so that other processes' load shows less): the one pass
over the data, the whole call, PyMC's sampling time, and sampling time per stage and chain
(after one warm-up run: the first run in a process pays one-off imports and compilations).

Run (the full route is the slow one; ``--full-seeds`` runs it on the first seeds only)::

    python benchmarks/smc_accuracy.py                                  # every case, 20 seeds
    python benchmarks/smc_accuracy.py --cases d10 --seeds 5 --routes collapsed
    python benchmarks/smc_accuracy.py --threshold 0.5                  # PyMC's default tempering
    python benchmarks/smc_accuracy.py --cases --timing-repeats 5       # the timing section only

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
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hyperbayes.inference.methods.exact import exact_posterior  # noqa: E402
from hyperbayes.inference.methods.smc import ROUTES, SmcEvidenceWarning, smc_evidence  # noqa: E402
from hyperbayes.models.data import simulate  # noqa: E402
from hyperbayes.models.sufficient_stats import SufficientStats  # noqa: E402

#: name -> (D, N, learned noise); data from simulate(sigma=1, noise=1), HalfNormal(1) on sigma.
CASES = {
    "d1": (1, 20, False),
    "d10": (10, 100, False),
    "d30": (30, 300, False),
    "d100": (100, 1000, False),
    "d10-learned": (10, 100, True),
    "d10-n100k": (10, 100_000, False),
}
HYPERPRIOR = "halfnormal:1"
NOISE_PRIOR = "halfnormal:2"
QUANTILES = (0.025, 0.5, 0.975)
CHAINS = 4


def run_case(case: str, args) -> None:
    d, n, learned = CASES[case]
    data = simulate(n=n, d=d, sigma=1.0, noise=1.0, seed=2024).data
    noise = {"noise_prior": NOISE_PRIOR} if learned else {"noise": 1.0}
    t = time.perf_counter()
    exact = exact_posterior(data, hyperprior=HYPERPRIOR, **noise)
    exact_time = time.perf_counter() - t
    scales = {"sigma": exact.sigma_quantile(QUANTILES)}
    if learned:
        scales["noise"] = exact.noise_quantile(QUANTILES)
    print(
        f"\n{case}: D={d}, N={n}, noise {'learned' if learned else 'known'}, exact log Z = "
        f"{exact.log_evidence:.4f} ({exact_time * 1e3:.0f} ms); exact quantiles "
        + "; ".join(f"{k} {np.round(v, 3).tolist()}" for k, v in scales.items())
    )
    print(
        f"{'route':>9} {'seeds':>5} {'mean err':>9} {'sd err':>7} {'med|err|':>8} {'mean se':>7} "
        f"{'cov1se':>6} {'cov2se':>6} {'stages':>6} {'wall s':>6} {'samp s':>6} {'x exact':>7}"
        "   particles below the exact 2.5/50/97.5% quantiles: mean (sd) over seeds"
    )
    for route in args.routes:
        seeds = args.seeds if route == "collapsed" else min(args.seeds, args.full_seeds)
        rows = [_one(data, route, seed, noise, scales, args) for seed in range(seeds)]
        _print_route(route, rows, exact.log_evidence, exact_time, scales)


def _one(data, route, seed, noise, scales, args) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmcEvidenceWarning)  # too few particles: in the table
        r = smc_evidence(
            data,
            hyperprior=HYPERPRIOR,
            draws=args.draws,
            chains=CHAINS,
            seed=seed,
            model=route,
            threshold=args.threshold,
            exact=False,
            **noise,
        )
    below = {
        name: [float(np.mean(r.pooled(name) <= x)) for x in xs] for name, xs in scales.items()
    }
    return {
        "log_z": r.log_evidence,
        "se": r.log_evidence_se,
        "stages": float(np.mean(r.n_stages)),
        "wall": r.wall_time,
        "sampling": r.sampling_time,
        "below": below,
    }


def _print_route(route, rows, exact_log_z, exact_time, scales) -> None:
    err = np.array([r["log_z"] for r in rows]) - exact_log_z
    se = np.array([r["se"] for r in rows])
    wall = np.mean([r["wall"] for r in rows])
    parts = []
    for name in scales:
        below = np.array([r["below"][name] for r in rows])  # (seeds, quantiles)
        sd = below.std(axis=0, ddof=1) if len(rows) > 1 else np.full(len(QUANTILES), np.nan)
        cells = " ".join(f"{m:.3f}({s:.3f})" for m, s in zip(below.mean(axis=0), sd, strict=True))
        parts.append(f"{name} {cells}")
    print(
        f"{route:>9} {len(rows):>5} {err.mean():+9.4f} "
        f"{err.std(ddof=1) if len(rows) > 1 else np.nan:7.4f} {np.median(np.abs(err)):8.4f} "
        f"{se.mean():7.4f} {np.mean(np.abs(err) <= se):6.0%} {np.mean(np.abs(err) <= 2 * se):6.0%} "
        f"{np.mean([r['stages'] for r in rows]):6.1f} {wall:6.2f} "
        f"{np.mean([r['sampling'] for r in rows]):6.2f} {wall / exact_time:7.0f}   "
        + "; ".join(parts),
        flush=True,
    )


def timing(args) -> None:
    """The collapsed route's cost against D and N, cases interleaved, least of the repeats."""
    cases = [name for name in ("d1", "d10", "d10-n100k", "d100") if name in CASES]
    data = {
        c: simulate(n=CASES[c][1], d=CASES[c][0], sigma=1.0, noise=1.0, seed=2024).data
        for c in cases
    }
    best: dict[str, dict[str, float]] = {c: {} for c in cases}
    smc_evidence(data[cases[0]], hyperprior=HYPERPRIOR, noise=1.0, draws=200, chains=2, seed=0)
    for rep in range(args.timing_repeats):
        for c in cases:
            t = time.perf_counter()
            _ = SufficientStats.from_dataset(data[c]).eigen  # the one pass, then eigh(G)
            one_pass = time.perf_counter() - t
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SmcEvidenceWarning)
                r = smc_evidence(
                    data[c],
                    hyperprior=HYPERPRIOR,
                    noise=1.0,
                    draws=args.draws,
                    chains=CHAINS,
                    seed=rep,
                    exact=False,
                )
            stages = float(np.mean(r.n_stages))
            now = {
                "pass": one_pass,
                "wall": r.wall_time,
                "sampling": r.sampling_time,
                "stages": stages,
                "per_stage": r.sampling_time / (stages * CHAINS),
            }
            for k, v in now.items():
                best[c][k] = min(best[c].get(k, np.inf), v)
    print(
        f"\ncollapsed route, cost against D and N ({CHAINS} x {args.draws} particles, least of "
        f"{args.timing_repeats} interleaved repeats)"
    )
    print(
        f"{'case':>10} {'D':>4} {'N':>7} {'pass s':>7} {'wall s':>7} {'samp s':>7} {'stages':>6} "
        f"{'ms/stage/chain':>14}"
    )
    for c in cases:
        b = best[c]
        print(
            f"{c:>10} {CASES[c][0]:>4} {CASES[c][1]:>7} {b['pass']:7.3f} {b['wall']:7.2f} "
            f"{b['sampling']:7.2f} {b['stages']:6.1f} {b['per_stage'] * 1e3:14.1f}",
            flush=True,
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES))
    parser.add_argument("--draws", type=int, default=2000, help="particles per chain")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--full-seeds", type=int, default=20, help="seeds of the full route")
    parser.add_argument(
        "--threshold", type=float, default=None, help="tempering threshold (default: per route)"
    )
    parser.add_argument(
        "--timing-repeats", type=int, default=3, help="repeats of the timing section (0: skip)"
    )
    args = parser.parse_args(argv)
    logging.getLogger("pymc").setLevel(logging.WARNING)  # a script: quiet PyMC's progress lines
    nominal = [2 * stats.t.cdf(k, CHAINS - 1) - 1 for k in (1, 2)]
    print(
        f"SMC log evidence vs exact: {CHAINS} chains x {args.draws} particles, pooled by "
        f"logsumexp; nominal coverage of 1 and 2 se with {CHAINS} chains (t_{CHAINS - 1}): "
        f"{nominal[0]:.0%} and {nominal[1]:.0%}; sd of a fraction below a quantile for "
        f"{CHAINS * args.draws} independent draws: "
        + ", ".join(f"{np.sqrt(q * (1 - q) / (CHAINS * args.draws)):.4f}" for q in QUANTILES)
    )
    for case in args.cases:
        run_case(case, args)
    if args.timing_repeats > 0:
        timing(args)


if __name__ == "__main__":
    main()
