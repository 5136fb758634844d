"""Bulk ESS of sigma per second for the NUTS variants, side by side, in one process.

Run:  python benchmarks/nuts_ess.py [--n-large 10000] [--n-huge 1000000] [--draws 1000]

For each data set (N = n_large x D = 20, and N = 20 x D = 1) it samples, with the same
draws, tuning and chains (run one after another, ``cores=1``):

* baseline: the naive centred model, one likelihood term per observation, ``pm.sample`` with
  its defaults (target_accept 0.8) and PyMC's own NUTS;
* the same naive model on nutpie (how much the backend alone buys);
* non-centred, per observation, and with sufficient statistics (O(D^2) per gradient);
* marginal (w integrated out, O(D) per gradient, exact w draws) with PyMC's NUTS;
* marginal with nutpie: what ``sample_posterior`` does by default.

It prints bulk ESS of sigma per second of wall time (model build + compile + sampling) and per
second of sampling alone, divergences, and the ratios to the baseline. Each backend's one-off
start-up in a fresh process is paid by a warm-up first and printed on its own line, so that
it is not charged to whichever variant happens to run first. Then it times one gradient of
the log density at N = n_large and N = n_huge for the per-observation, sufficient-statistics
and marginal models, to show which cost grows with N.
"""

from __future__ import annotations

import argparse
import gc
import logging
import time

import arviz_stats as azs
import numpy as np
import pymc as pm

from hyperbayes.inference.methods.nuts import sample_posterior
from hyperbayes.models.builders import hierarchical_regression, marginal_regression
from hyperbayes.models.data import simulate

HYPERPRIOR = "halfnormal:1"
NOISE = 1.0


def baseline(data, *, draws, chains, seed):
    """The naive centred per-observation model with pm.sample's defaults."""
    start = time.perf_counter()
    model = hierarchical_regression(data, hyperprior=HYPERPRIOR, noise=NOISE, parametrization="centered",
                                    likelihood="observations")
    with model:
        tree = pm.sample(draws=draws, tune=draws, chains=chains, cores=1, random_seed=seed,
                         nuts_sampler="pymc", progressbar=False, compute_convergence_checks=False)
    wall = time.perf_counter() - start
    divergences = int(tree["sample_stats"]["diverging"].sum())
    return tree, wall, float(tree["posterior"].attrs["sampling_time"]), divergences


def ours(data, *, draws, chains, seed, **kw):
    r = sample_posterior(data, hyperprior=HYPERPRIOR, noise=NOISE, draws=draws, tune=draws, chains=chains,
                         seed=seed, log_likelihood=False, **kw)
    return r.draws, r.wall_time, r.sampling_time, r.diagnostics.divergences


VARIANTS = {
    "centred, per obs, pm.sample defaults (baseline)": baseline,
    # PyMC 6's pm.sample itself picks nutpie when it is installed; this line shows how much of
    # the gain is the backend alone, on the naive model.
    "centred, per obs, nutpie": lambda d, **k: ours(
        d, parametrization="centered", likelihood="observations", target_accept=0.8, backend="nutpie", **k),
    "non-centred, per obs": lambda d, **k: ours(
        d, parametrization="noncentered", likelihood="observations", backend="pymc", **k),
    "non-centred, sufficient stats": lambda d, **k: ours(
        d, parametrization="noncentered", likelihood="sufficient", backend="pymc", **k),
    "non-centred, sufficient stats, nutpie": lambda d, **k: ours(
        d, parametrization="noncentered", likelihood="sufficient", backend="nutpie", **k),
    "marginal, PyMC NUTS": lambda d, **k: ours(d, parametrization="marginal", backend="pymc", **k),
    # The default 0.99 is for weak data (steep hyperprior tail); on near-Gaussian posteriors 0.8
    # takes ~2 leapfrog steps per draw instead of ~6 and gives twice the ESS per draw.
    "marginal, PyMC NUTS, target_accept 0.8": lambda d, **k: ours(
        d, parametrization="marginal", backend="pymc", target_accept=0.8, **k),
    "marginal, nutpie (the default)": lambda d, **k: ours(d, parametrization="marginal", backend="nutpie", **k),
}


def warm_up(*, seed):
    """Pay each backend's one-off, per-process start-up before anything is timed.

    Numba compiles its own machinery the first time a process uses it (nutpie's C callbacks
    cost ~4 s in a fresh process, ~1 s for each later model). Whichever variant ran first
    would otherwise carry that cost alone; it is printed here instead.
    """
    tiny = simulate(n=5, d=1, sigma=1.0, noise=NOISE, seed=seed).data
    print("\n== one-off start-up per process (a 5-observation model, 2 x 10 draws) ==")
    for backend in ("pymc", "nutpie"):
        start = time.perf_counter()
        sample_posterior(tiny, hyperprior=HYPERPRIOR, noise=NOISE, draws=10, tune=10, chains=2,
                         seed=seed, backend=backend, log_likelihood=False)
        print(f"{backend:8s} {time.perf_counter() - start:6.2f} s", flush=True)


def compare_samplers(data, *, draws, chains, seed):
    print(f"\n== N = {data.n}, D = {data.d}: {chains} chains x {draws} draws (+ {draws} tuning) ==")
    print(f"{'variant':48s} {'ESS':>7s} {'wall s':>7s} {'samp s':>7s} {'ESS/s wall':>10s} "
          f"{'ESS/s samp':>10s} {'x base':>7s} {'x base':>7s} {'div':>5s}")
    base = None
    for name, fn in VARIANTS.items():
        # The previous variant's garbage would otherwise be collected inside the next timing
        # (measured: a 0.08 s nutpie run took 0.31 s right after the baseline's).
        gc.collect()
        tree, wall, samp, div = fn(data, draws=draws, chains=chains, seed=seed)
        ess = float(azs.ess(tree["posterior"].to_dataset()[["sigma"]], method="bulk")["sigma"])
        rates = (ess / wall, ess / samp)
        base = base or rates
        print(f"{name:48s} {ess:7.0f} {wall:7.2f} {samp:7.2f} {rates[0]:10.1f} {rates[1]:10.1f} "
              f"{rates[0] / base[0]:7.1f} {rates[1] / base[1]:7.1f} {div:5d}", flush=True)


def gradient_seconds(model, *, budget=0.3, blocks=3):
    """Seconds per evaluation of the gradient of the log density at the initial point.

    The best of ``blocks`` blocks of about ``budget`` seconds each, after a warm-up: the
    machine is shared, and the minimum is the least disturbed estimate.
    """
    dlogp = model.compile_dlogp()
    point = model.initial_point()
    for _ in range(5):  # warm up caches and allocations
        dlogp(point)
    best = np.inf
    for _ in range(blocks):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < budget or calls < 3:
            dlogp(point)
            calls += 1
        best = min(best, elapsed / calls)
    return best


def compare_gradients(sizes, *, d, seed):
    print(f"\n== seconds per gradient evaluation (D = {d}) ==")
    builders = {
        "non-centred, per obs": lambda x: hierarchical_regression(
            x, hyperprior=HYPERPRIOR, noise=NOISE, likelihood="observations"),
        "non-centred, sufficient stats": lambda x: hierarchical_regression(
            x, hyperprior=HYPERPRIOR, noise=NOISE, likelihood="sufficient"),
        "marginal": lambda x: marginal_regression(x, hyperprior=HYPERPRIOR, noise=NOISE),
    }
    print(f"{'model':32s}" + "".join(f"{'N = ' + str(n):>16s}" for n in sizes) + f"{'ratio':>8s}")
    datasets = [simulate(n=n, d=d, sigma=0.5, noise=NOISE, seed=seed).data for n in sizes]
    for name, build in builders.items():
        times = [gradient_seconds(build(x)) for x in datasets]
        print(f"{name:32s}" + "".join(f"{t * 1e6:13.1f} us" for t in times) + f"{times[-1] / times[0]:8.1f}",
              flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-large", type=int, default=10_000)
    p.add_argument("--n-huge", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=20)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.getLogger("pymc").setLevel(logging.ERROR)
    large = simulate(n=args.n_large, d=args.d, sigma=0.5, noise=NOISE, seed=args.seed).data
    small = simulate(n=20, d=1, sigma=0.1, noise=NOISE, seed=args.seed).data
    warm_up(seed=args.seed)
    for data in (large, small):
        compare_samplers(data, draws=args.draws, chains=args.chains, seed=args.seed)
    compare_gradients((args.n_large, args.n_huge), d=args.d, seed=args.seed)


if __name__ == "__main__":
    main()
