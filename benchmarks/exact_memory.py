"""Memory and time of the exact oracle with learned noise as D grows (N = 30), vs the old formula.

For each D: ``exact_posterior`` on simulate(n=30, d=D, sigma=0.1, noise=1, seed=0) with the
default half-normal priors (scaled to the data) and no intercept. With an intercept and a
half-normal noise prior these data have an improper posterior (y is fitted exactly by a rank
N - 1 design), so the intercept case is run with the noise prior invgamma:2,1, which vanishes at
zero. Each case runs in a fresh process and reports:

* wall time of ``exact_posterior`` and of 4000 exact draws;
* the tracemalloc peak of each (NumPy's allocations are traced) and the growth of the process's
  peak RSS over its RSS before the call;
* the baseline: the old formula evaluated the marginal likelihood on its 1601 x 401 search grid
  as one (1601 x 401 x D) float64 array, 1601 * 401 * D * 8 bytes, before refining to larger
  grids. That figure is printed for every D; for D <= 200 the old formula is also run on the
  search grid (``log_marginal_likelihood`` broadcast over the grid, as the old code did) and its
  measured tracemalloc peak printed beside it.

Run::

    python benchmarks/exact_memory.py                 # D = 100, 500, 2000
    python benchmarks/exact_memory.py --d 2000        # one size

Timing is wall-clock on a shared machine; other processes add noise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

N = 30
SEARCH_GRID = (1601, 401)  # the old learned-noise search grid (rho x offset of log delta)
MIB = 2**20


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb * 1024


def _measure(fn):
    """(result, seconds, tracemalloc peak, growth of peak RSS over the RSS before the call)."""
    rss0 = _rss_bytes()
    t = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak, rss_growth


def one(d: int, intercept: bool) -> dict:
    from hyperbayes.inference.mathematics.linear_gaussian import log_marginal_likelihood
    from hyperbayes.inference.methods.exact import exact_posterior
    from hyperbayes.models.data import simulate
    from hyperbayes.models.hyperpriors import default_hyperpriors
    from hyperbayes.models.sufficient_stats import SufficientStats

    data = simulate(n=N, d=d, sigma=0.1, noise=1.0, seed=0).data
    if intercept:
        data = data.center()[0]
    hp, nhp = default_hyperpriors(data)
    if intercept:
        nhp = "invgamma:2,1"
    post, t_post, peak_post, rss_post = _measure(
        lambda: exact_posterior(data, hyperprior=hp, noise_prior=nhp)
    )
    _, t_draw, peak_draw, _ = _measure(lambda: post.sample(4000, seed=0))
    old_measured = None
    if d <= 200:  # the old formula on its search grid, where it still fits in memory
        stats = SufficientStats.from_dataset(data)
        s = np.exp(np.linspace(-3, 3, SEARCH_GRID[0]))[:, None]
        dl = np.exp(np.linspace(-2, 2, SEARCH_GRID[1]))[None, :]
        stats.eigen  # noqa: B018 (the eigendecomposition is not part of the grid's cost)
        old_measured = _measure(lambda: log_marginal_likelihood(stats, s, dl))[2]
    return {
        "d": d,
        "intercept": intercept,
        "noise_prior": str(nhp),
        "log_evidence": post.log_evidence,
        "quadrature_error": post.quadrature_error,
        "nodes": int(post._weights.size),
        "t_post": t_post,
        "peak_post": peak_post,
        "rss_post": rss_post,
        "t_draw": t_draw,
        "peak_draw": peak_draw,
        "old_formula": SEARCH_GRID[0] * SEARCH_GRID[1] * d * 8,
        "old_measured": old_measured,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, nargs="*", default=[100, 500, 2000])
    parser.add_argument("--one", nargs=2, metavar=("D", "INTERCEPT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1] == "1")))
        return
    print(f"exact oracle, learned noise, N = {N}; each row in a fresh process")
    print(
        f"{'D':>5} {'intercept':>9} {'time s':>7} {'peak MiB':>8} {'RSS+ MiB':>8} "
        f"{'draws s':>7} {'draws MiB':>9} {'nodes':>8} | {'old formula MiB':>15} "
        f"{'old measured':>12} {'old/now':>8}"
    )
    for d in args.d:
        for intercept in (False, True):
            proc = subprocess.run(
                [sys.executable, __file__, "--one", str(d), str(int(intercept))],
                capture_output=True, text=True, check=True,
            )
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            old_m = f"{r['old_measured'] / MIB:12.0f}" if r["old_measured"] else f"{'n/a':>12}"
            print(
                f"{d:>5} {'yes' if intercept else 'no':>9} {r['t_post']:7.2f} "
                f"{r['peak_post'] / MIB:8.1f} {r['rss_post'] / MIB:8.1f} {r['t_draw']:7.2f} "
                f"{r['peak_draw'] / MIB:9.1f} {r['nodes']:8d} | {r['old_formula'] / MIB:15.0f} "
                f"{old_m} {r['old_formula'] / r['peak_post']:8.0f}"
            )
    print(
        "peak MiB: tracemalloc peak of exact_posterior; RSS+: growth of the process's peak RSS "
        "during it;\ndraws: 4000 exact draws (the output alone is 4000 x D x 8 bytes); old "
        "formula: one 1601 x 401 x D float64 array,\nthe first of the (grid x grid x D) arrays "
        "the old code allocated (old measured: its tracemalloc peak there)."
    )


if __name__ == "__main__":
    main()
