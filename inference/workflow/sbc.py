"""Simulation-based calibration (SBC) of a method, as a map over a Dask cluster.

Talts et al. (2018), Modrak et al. (2023); MATH.md section 8. Simulation i draws the scales and
the weights from the prior, sigma ~ p(sigma), delta ~ p(delta), w ~ N(0, sigma^2 I), and the
data y = X w + N(0, delta^2 I) on a fixed design X; runs the method on (X, y); thins its draws
to L; and records the rank of each true value among them (the number of draws below it, 0..L)
for sigma, delta and the first two weights. For a method that samples the right posterior the
ranks are uniform; :mod:`hyperbayes.inference.workflow.sbc_stats` tests that.

The simulations are independent, so they run as one ``Client.map`` on ``dask.distributed``:
a LocalCluster of worker processes by default, or any cluster given by its scheduler address.
Randomness never depends on where a task runs: simulation i takes the i-th child of the run
seed's ``numpy.random.SeedSequence`` (the design X comes from the run seed itself), so the
result is the same on one worker or many. A simulation that raises (or whose worker dies) is
recorded as failed with its message; the others complete.

For every method but the oracle each simulation also computes the exact posterior of log sigma
(``reference=True``), so a miscalibration can be measured directly: ``bias_z`` is the method's
posterior mean of log sigma minus the exact one, in exact posterior standard deviations.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hyperbayes.inference.workflow.sbc_cluster import cluster_client, map_indexed
from hyperbayes.inference.workflow.sbc_methods import (
    DEFAULT_D,
    DEFAULT_DRAWS,
    DEFAULT_HYPERPRIOR,
    DEFAULT_N,
    DEFAULT_NOISE_PRIOR,
    MethodDraws,
    MethodFn,
    exact_log_sigma_moments,
    resolve_method,
)
from hyperbayes.inference.workflow.sbc_stats import (
    ALPHA,
    Uniformity,
    check_uniformity,
    fractional_ranks,
)
from hyperbayes.models.data import Dataset
from hyperbayes.models.hyperpriors import Hyperprior, OptionError, parse_hyperprior

__all__ = ["SbcResult", "SbcSetup", "run_sbc", "simulate_one", "simulation_seed"]

#: Messages kept per simulation from the warnings a method raised.
MAX_WARNINGS = 3
_NUMBER = re.compile(r"[-+]?\d+(\.\d+)?([eE][-+]?\d+)?")


@dataclass(frozen=True)
class SbcSetup:
    """What every simulation of one SBC run shares (sent to each task)."""

    method: str | MethodFn
    X: NDArray[np.float64]
    hyperprior: Hyperprior
    noise_prior: Hyperprior
    draws: int
    seed: int
    reference: bool = True

    @property
    def quantities(self) -> tuple[str, ...]:
        """The ranked quantities: sigma, noise (delta) and up to two weights, w0 and w1."""
        return ("sigma", "noise", *(f"w{j}" for j in range(min(self.X.shape[1], 2))))


@dataclass(frozen=True)
class SbcResult:
    """The outcome of :func:`run_sbc`.

    Attributes
    ----------
    method : str
    setup : SbcSetup
    quantities : tuple of str
        Column names of ``truth``, ``ranks`` and ``pit``.
    truth : ndarray (sims, m)
        The values drawn from the prior.
    ranks : ndarray (sims, m)
        Ranks among the L kept draws (0..L; NaN for failed simulations).
    pit : ndarray (sims, m)
        Fractional ranks (rank + U(0, 1)) / (L + 1), uniform on (0, 1) under calibration.
    status : tuple of str
        "ok" or "failed" per simulation; ``messages`` says why one failed.
    info : dict of str -> ndarray (sims,)
        Per-simulation numbers: ``wall_time``, the method's (divergences, ESS of sigma, SMC
        stages), and with a reference ``bias_z`` (see the module notes).
    uniformity : Uniformity or None
        The tests (None with fewer than 2 completed simulations).
    warnings : tuple of tuple of str
        Up to MAX_WARNINGS warning messages per simulation.
    wall_time : float
    n_workers : int
    first : int
        Index of the first simulation (row i is simulation ``first + i``).
    """

    method: str
    setup: SbcSetup
    quantities: tuple[str, ...]
    truth: NDArray[np.float64]
    ranks: NDArray[np.float64]
    pit: NDArray[np.float64]
    status: tuple[str, ...]
    messages: tuple[str, ...]
    info: dict[str, NDArray[np.float64]]
    uniformity: Uniformity | None
    warnings: tuple[tuple[str, ...], ...] = ()
    wall_time: float = float("nan")
    n_workers: int = 0
    first: int = 0

    @property
    def sims(self) -> int:
        return len(self.status)

    @property
    def failed(self) -> tuple[int, ...]:
        return tuple(i for i, s in enumerate(self.status) if s != "ok")

    @property
    def passed(self) -> bool:
        """Uniformity not rejected on the completed simulations (see ``failed`` too: failures
        that depend on the data select the simulations and can hide or cause a bias)."""
        return self.uniformity is not None and self.uniformity.passed

    def to_json(self) -> dict[str, Any]:
        s = self.setup
        info_summary = {
            key: {stat: _nanstat(fn, v) for stat, fn in (("mean", np.mean), ("min", np.min), ("max", np.max))}
            for key, v in self.info.items()
        }
        bias = self.info.get("bias_z")
        if bias is not None and np.isfinite(bias).sum() > 1:
            ok = bias[np.isfinite(bias)]
            info_summary["bias_z"]["se"] = float(ok.std(ddof=1) / np.sqrt(ok.size))
        return {
            "kind": "sbc",
            "method": self.method,
            "sims": self.sims,
            "first": self.first,
            "draws": s.draws,
            "seed": s.seed,
            "n": int(s.X.shape[0]),
            "d": int(s.X.shape[1]),
            "hyperprior": str(s.hyperprior),
            "noise_prior": str(s.noise_prior),
            "quantities": list(self.quantities),
            "completed": self.sims - len(self.failed),
            "failed": [{"index": self.first + i, "message": self.messages[i]} for i in self.failed],
            "passed": self.passed,
            "uniformity": self.uniformity.to_json() if self.uniformity else None,
            "info": info_summary,
            "warnings": _warning_counts(self.warnings),
            "wall_time": self.wall_time,
            "n_workers": self.n_workers,
        }


def simulation_seed(seed: int, index: int) -> np.random.SeedSequence:
    """The seed of simulation ``index``: the index-th child of ``SeedSequence(seed)``."""
    return np.random.SeedSequence(seed, spawn_key=(index,))


def simulate_one(index: int, setup: SbcSetup) -> dict[str, Any]:
    """Simulation ``index``: draw the truth and the data, run the method, rank the truth.

    The Dask task. Returns a plain dict (truth, ranks, jitter, status, message, info,
    warnings); an exception in the method is caught and reported as ``status="failed"``.
    """
    start = time.perf_counter()
    prior_seed, method_seed, jitter_seed, ref_seed = simulation_seed(setup.seed, index).spawn(4)
    rng = np.random.default_rng(prior_seed)
    sigma = float(setup.hyperprior.rvs((), seed=rng))
    noise = float(setup.noise_prior.rvs((), seed=rng))
    w = sigma * rng.standard_normal(setup.X.shape[1])
    y = setup.X @ w + noise * rng.standard_normal(setup.X.shape[0])
    m = len(setup.quantities)
    truth = np.array([sigma, noise, *w[: m - 2]])
    record: dict[str, Any] = {
        "index": index,
        "truth": truth,
        "ranks": np.full(m, np.nan),
        "jitter": np.random.default_rng(jitter_seed).uniform(size=m),
        "status": "ok",
        "message": "",
        "info": {},
        "warnings": (),
    }
    name, fn = resolve_method(setup.method)
    with warnings.catch_warnings(record=True) as caught, _quiet_logs():
        warnings.simplefilter("always")
        try:
            data = Dataset.from_arrays(setup.X, y)
            draws = fn(
                data,
                hyperprior=setup.hyperprior,
                noise_prior=setup.noise_prior,
                draws=setup.draws,
                seed=int(method_seed.generate_state(1)[0]),
            )
            record["ranks"] = _ranks(draws, truth, setup.draws)
            record["info"] = dict(draws.info)
            if setup.reference and name != "exact":
                record["info"].update(_bias(draws, data, setup, ref_seed))
        except Exception as exc:  # recorded, not fatal: the other simulations go on
            record["status"], record["message"] = "failed", f"{type(exc).__name__}: {exc}"
    record["warnings"] = tuple(dict.fromkeys(str(c.message) for c in caught))[:MAX_WARNINGS]
    record["info"]["wall_time"] = time.perf_counter() - start
    return record


def run_sbc(
    method: str | MethodFn,
    *,
    sims: int,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    first: int = 0,
    design: Dataset | ArrayLike | None = None,
    n: int = DEFAULT_N,
    d: int = DEFAULT_D,
    hyperprior: Hyperprior | str = DEFAULT_HYPERPRIOR,
    noise_prior: Hyperprior | str = DEFAULT_NOISE_PRIOR,
    reference: bool = True,
    alpha: float = ALPHA,
    client: Any = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    workers: Sequence[str] | None = None,
    progress: bool = False,
) -> SbcResult:
    """Run ``sims`` SBC simulations of ``method`` on a Dask cluster and test the ranks.

    Parameters
    ----------
    method : str or callable
        A name of :data:`~hyperbayes.inference.workflow.sbc_methods.SBC_METHODS` (``exact``,
        ``nuts-marginal``, ``nuts-noncentered``, ``nuts-centered``, ``smc-full``,
        ``smc-collapsed``), or an importable function with the same contract.
    sims : int
        Number of simulations K.
    draws : int
        Draws L kept per simulation (ranks 0..L).
    seed : int
        Seeds the design, every simulation and the band simulation.
    first : int
        Index of the first simulation: a run of simulations ``first..first + sims - 1`` with
        the same seed and setup extends one of ``0..first - 1`` (the data sets are the same as
        in one longer run, so results can be pooled, and different methods can be compared on
        the same data sets).
    design : Dataset or array (N, D), optional
        The design X (a Dataset's y is ignored). Default: N x D standard normal entries.
    n, d : int
        Size of the simulated design when ``design`` is None.
    hyperprior, noise_prior : Hyperprior or str
        Proper priors on sigma and delta; the truth is drawn from them and the method uses them.
    reference : bool
        Measure each simulation's bias of log sigma against the exact oracle.
    alpha : float
        Family-wise level of the uniformity tests.
    client : distributed.Client, optional
        Run on this client. Else ``scheduler`` (an address) is connected to, else a LocalCluster
        of ``n_workers`` single-threaded processes is started (and closed at the end).
    workers : sequence of str, optional
        Restrict the simulations to these workers of the cluster.
    progress : bool
        Draw a progress bar on stderr.
    """
    setup = _setup(method, sims, first, draws, seed, design, n, d, hyperprior, noise_prior, reference)
    name, _ = resolve_method(method)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(cluster_client(scheduler, n_workers))
        n_used = len(workers) if workers else len(client.nthreads())
        records = map_indexed(
            client, simulate_one, sims, label=f"sbc-{name}", start=first, workers=workers,
            progress=progress, setup=setup,
        )
    result = _result(name, setup, records, alpha, time.perf_counter() - start, n_used)
    return replace(result, first=first)


def _setup(
    method, sims, first, draws, seed, design, n, d, hyperprior, noise_prior, reference
) -> SbcSetup:
    resolve_method(method)  # an unknown name fails here, before any cluster starts
    if sims < 2:
        raise OptionError(f"SBC needs at least 2 simulations (--sims), got {sims}.")
    if first < 0:
        raise OptionError(f"the first simulation index (--first) must be >= 0, got {first}.")
    if draws < 1:
        raise OptionError(f"SBC keeps at least 1 draw per simulation (--draws), got {draws}.")
    priors = []
    for prior in (hyperprior, noise_prior):
        prior = parse_hyperprior(prior)
        prior.require_proper("SBC (the truth is drawn from the prior)")
        priors.append(prior)
    if design is None:
        X = np.random.default_rng(np.random.SeedSequence(seed)).standard_normal((n, d))
    else:
        X = design.X if isinstance(design, Dataset) else Dataset.from_arrays(design, np.zeros(len(design))).X
    return SbcSetup(method, np.asarray(X, dtype=float), *priors, draws, seed, reference)


def _result(name, setup: SbcSetup, records, alpha, wall, n_workers) -> SbcResult:
    m, sims = len(setup.quantities), len(records)
    truth, ranks, jitter = (np.full((sims, m), np.nan) for _ in range(3))
    keys = sorted({k for r in records for k in r.get("info", {})})
    info = {k: np.full(sims, np.nan) for k in keys}
    for i, r in enumerate(records):
        if "truth" in r:
            truth[i], ranks[i], jitter[i] = r["truth"], r["ranks"], r["jitter"]
        for k, v in r.get("info", {}).items():
            info[k][i] = v
    pit = fractional_ranks(ranks, setup.draws, jitter)
    n_ok = sum(r["status"] == "ok" for r in records)
    uniformity = None
    if n_ok >= 2:
        uniformity = check_uniformity(
            {q: pit[:, j] for j, q in enumerate(setup.quantities)}, alpha=alpha, seed=setup.seed
        )
    return SbcResult(
        method=name,
        setup=setup,
        quantities=setup.quantities,
        truth=truth,
        ranks=ranks,
        pit=pit,
        status=tuple(r["status"] for r in records),
        messages=tuple(r["message"] for r in records),
        info=info,
        uniformity=uniformity,
        warnings=tuple(tuple(r.get("warnings", ())) for r in records),
        wall_time=wall,
        n_workers=n_workers,
    )


def _ranks(draws: MethodDraws, truth: NDArray, keep: int) -> NDArray[np.float64]:
    """Thin the pooled draws evenly to ``keep`` and count the draws below each true value."""
    columns = [draws.sigma, draws.noise, *np.moveaxis(draws.w, -1, 0)[: truth.size - 2]]
    pooled = np.stack([np.asarray(c, dtype=float).reshape(-1) for c in columns], axis=1)
    if pooled.shape[0] < keep:
        raise ValueError(f"the method returned {pooled.shape[0]} draws; SBC keeps {keep}.")
    if not np.all(np.isfinite(pooled)):
        raise ValueError("the method returned non-finite draws.")
    kept = pooled[np.linspace(0, pooled.shape[0] - 1, keep).round().astype(int)]
    return (kept < truth).sum(axis=0).astype(float)


def _bias(draws: MethodDraws, data: Dataset, setup: SbcSetup, seed) -> dict[str, float]:
    """The method's posterior mean of log sigma against the exact one, in exact sd."""
    mean, sd = exact_log_sigma_moments(
        data, hyperprior=setup.hyperprior, noise_prior=setup.noise_prior, seed=seed
    )
    method_mean = float(np.mean(np.log(draws.sigma)))
    return {"log_sigma_mean": method_mean, "exact_log_sigma_mean": mean, "bias_z": (method_mean - mean) / sd}


@contextlib.contextmanager
def _quiet_logs():
    """PyMC announces every sampler run at INFO; in a worker that is noise on the console."""
    loggers = [logging.getLogger(name) for name in ("pymc", "pytensor")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _warning_counts(per_sim: tuple[tuple[str, ...], ...]) -> dict[str, int]:
    """How many simulations raised each kind of warning (numbers in the messages replaced by
    "#", so one kind is one entry), most frequent first, at most 10."""
    counts: dict[str, int] = {}
    for messages in per_sim:
        for kind in {_NUMBER.sub("#", m) for m in messages}:
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:10])


def _nanstat(fn, values: NDArray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(fn(finite)) if finite.size else None
