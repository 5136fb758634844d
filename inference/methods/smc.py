"""Sequential Monte Carlo (SMC) estimates of the evidence p(y), checked against the exact value.

:func:`smc_evidence` runs ``pm.sample_smc`` on one of two models of the same data (its
``model`` keyword), reads each chain's log evidence out of PyMC's per-stage statistics and pools
the chains (both in :mod:`hyperbayes.inference.methods.smc_stages`), and puts the exact oracle's
value (MATH.md section 4) beside the estimate. :func:`run` is the ``smc`` method of the CLI and
``compare``.

* ``"collapsed"`` (the default; MATH.md section 8): w integrated out
  (:func:`~hyperbayes.models.builders.marginal_regression`), so the particles live on the 1 or 2
  scales alone, where PyMC's independent Metropolis-Hastings (IMH) kernel, a Gaussian fitted to
  the particles, proposes almost from the target itself. Each particle is then given one exact
  draw of w | sigma, delta, y (as NUTS's marginal route does), so the weights are reported too.
* ``"full"``: the non-centred hierarchical model
  (:func:`~hyperbayes.models.builders.hierarchical_regression`): the kernel must move D + 2
  coordinates through a funnel-shaped posterior, and the estimate drifts by more than its
  standard error as D grows. Kept as the naive contrast, and for ARD (the collapsed model has
  one shared sigma).

How SMC estimates the evidence: the particles move from the prior (beta = 0) to the posterior
(beta = 1) through tempered targets p(y | theta)^beta p(theta). At each stage the incremental
weights exp((beta_t - beta_{t-1}) log p(y | theta_i)) are averaged over the particles, and the
product of those averages over the stages estimates Z = p(y) (Del Moral, Doucet and Jasra 2006),
the same number on both models: integrating w out changes the target, not the evidence.

Accuracy (benchmarks/smc_accuracy.py: simulated data, HalfNormal(1) on sigma, 2000 particles
x 4 chains, the same 20 seeds for both routes; median |error| in nats, coverage of +-2 se,
stages; the nominal coverage is 86% with 4 chains, as error / se ~ Student's t_3):

=================  ======================  ======================
D, N               collapsed               full
=================  ======================  ======================
1, 20              0.003, 85%, 2           0.008, 95%, 8
10, 100            0.005, 100%, 6          0.039, 70%, 37
30, 300            0.008, 95%, 8           0.28 (all low), 0%, 70
100, 1000          0.010, 75%, 10          6.2 (all high), 0%, 147
10, 100, learned   0.011, 75%, 12          1.7 (low), 5%, 34
=================  ======================  ======================

On the full model the chains share a bias that the between-chain standard error cannot see:
the particles do not re-equilibrate between stages in the non-centred (log sigma, z) geometry,
and the final particles are too narrow in sigma (D = 10: 0.3% of them above the exact 97.5%
quantile; D = 100: 0.1% below the 2.5% one). On the collapsed model the fraction of particles
below each exact 2.5/50/97.5% quantile of every scale is within its Monte Carlo error (sd over
seeds 0.001-0.007, about that of independent draws), learned noise included; over 40 seeds at
D = 100 the sd of the error was 0.012 nats against a root-mean-square se of 0.010.

Cost: a run is (stages) x (mutation steps per stage) x (particles) log density evaluations.
PyMC's kernels evaluate them one particle at a time from Python, so the project runs PyMC's IMH
as :class:`~hyperbayes.inference.methods.smc_kernel.BatchedIMH`, which evaluates all particles
at once (same result from the same start). On the collapsed model an evaluation is O(D) on the
eigen-statistics after one pass over the data: 4 chains x 2000 particles took 0.3-0.5 s at
D = 1 and 10 whether N = 100 or 100,000, ~13 ms per stage and chain at every D up to 100 (the
exact draws of w, O(D^3) each, add ~0.8 s at D = 100). Two effects are kept in check:

1. OpenBLAS threads. Between small matrix products OpenBLAS's idle worker threads spin-wait and
   take the second core from the single-threaded sampler (CPU time 8 s at 5000 draws against
   3.4 s with one BLAS thread, 2-core machine). PyMC's ``blas_cores`` does not help (a no-op with
   the "fork" start method, pymc issue 7354, and for sequential chains), so we sample inside
   ``threadpoolctl.threadpool_limits(1, "blas")``, which restores the limit on exit.
2. More mutation steps per stage. The IMH kernel mutates until the particles' Pearson
   correlation with the stage's start stops falling by ``correlation_threshold`` (0.01); its
   noise floor is about draws^-1/2, so more particles take more steps: 68, 76 and 90 in total at
   500, 2000 and 5000 draws on the full model (D = 10, N = 100). PyMC's design, not changed.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from hyperbayes.inference.methods.arviz_io import pooled_draws, posterior_summary
from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.inference.methods.smc_sampling import (
    ROUTES,
    Route,
    build_model,
    check_particles,
    check_sizes,
    kernel_class,
    noise_model_argument,
    sample,
    with_weights,
)
from hyperbayes.inference.methods.smc_stages import (
    DISAGREEMENT_NATS,
    DRAWS_PER_DIMENSION,
    SmcEvidenceWarning,
    pool_log_evidence,
    read_stage_stats,
    trust_messages,
    with_clean_stage_stats,
)
from hyperbayes.models.data import Dataset
from hyperbayes.models.hyperpriors import Hyperprior, parse_hyperprior

__all__ = [
    "DISAGREEMENT_NATS",
    "DRAWS_PER_DIMENSION",
    "Kernel",
    "ROUTES",
    "Route",
    "THRESHOLD",
    # From hyperbayes.inference.methods.smc_stages, where the evidence is pooled and judged:
    "SmcEvidenceWarning",
    "SmcResult",
    "run",
    "smc_evidence",
]

Kernel = Literal["imh", "mh"]

#: Default tempering threshold of each route (PyMC's is 0.5): each stage keeps this fraction of
#: the particles' effective sample size. Full route, at D = 10, N = 100, 2000 draws, 4 chains,
#: 5 seeds: 0.5 gave a mean error of -0.185 nats (sd 0.076) in 13 stages; 0.8 gave -0.081
#: (sd 0.097) in 25 stages; 0.9 gave -0.008 (sd 0.064, median |error| 0.055) in 37 stages,
#: about 3x PyMC's default cost. The random-walk "mh" kernel at 0.8: -0.140.
#: Collapsed route: 0.9 too, as its stages are cheap (12 at D = 10 with learned noise, against
#: 4 at 0.5) and smaller steps cut the error: over 40 seeds there its sd was 0.013 nats at 0.9
#: and 0.020 at 0.5, both without bias (mean error +0.004 and -0.001).
THRESHOLD: dict[str, float] = {"collapsed": 0.9, "full": 0.9}


@dataclass(frozen=True)
class SmcResult:
    """One SMC run: the pooled log evidence, its parts and the posterior draws.

    Attributes
    ----------
    log_evidence : float
        log of the mean over chains of the evidence estimates (see :func:`pool_log_evidence`).
    log_evidence_se : float
        Standard error of ``log_evidence`` from the spread between chains (nan for one chain).
    chain_log_evidence : tuple of float
        Each chain's estimate of log p(y).
    n_stages : tuple of int
        Each chain's number of tempering stages.
    betas : tuple of tuple of float
        Each chain's tempering schedule (inverse temperatures, ending at 1).
    draws, chains : int
        Particles per chain and number of chains.
    kernel : str
        The mutation kernel ("imh" or "mh").
    model : str
        The model the particles moved on: ``"collapsed"`` (the scales) or ``"full"``.
    threshold : float
        The tempering threshold used.
    exact_log_evidence : float or None
        The exact oracle's value when it applies (one shared sigma), else None.
    sampling_time : float
        Seconds PyMC spent sampling (after compiling the model's functions).
    tree : xarray.DataTree
        The posterior draws (``posterior``: ``sigma``, ``w``, ``noise`` when learned; on the
        collapsed route ``w`` is one exact draw given each particle's scales) and, in
        ``sample_stats``, the per-stage statistics as float arrays (chain, stage) padded with
        nan after a chain's last stage.
    warnings : tuple of str
        Why the estimate may be untrustworthy (empty when nothing was flagged).
    wall_time : float
        Seconds for the whole call, sampling included.
    """

    log_evidence: float
    log_evidence_se: float
    chain_log_evidence: tuple[float, ...]
    n_stages: tuple[int, ...]
    betas: tuple[tuple[float, ...], ...]
    draws: int
    chains: int
    kernel: str
    model: str
    threshold: float
    exact_log_evidence: float | None
    sampling_time: float
    tree: xr.DataTree
    warnings: tuple[str, ...]
    wall_time: float

    @property
    def error(self) -> float | None:
        """SMC minus exact log evidence (None when the oracle does not apply)."""
        if self.exact_log_evidence is None:
            return None
        return self.log_evidence - self.exact_log_evidence

    def pooled(self, name: str) -> NDArray[np.float64]:
        """Draws of posterior variable ``name`` with chains and draws flattened to one axis."""
        return pooled_draws(self.tree, name)


def smc_evidence(
    data: Dataset,
    *,
    hyperprior: Hyperprior | str,
    noise: float | None = None,
    noise_prior: Hyperprior | str | None = None,
    draws: int = 2000,
    chains: int = 4,
    seed: int,
    model: Route = "collapsed",
    kernel: Kernel = "imh",
    threshold: float | None = None,
    cores: int = 1,
    ard: bool = False,
    exact: bool = True,
    progressbar: bool = False,
) -> SmcResult:
    """Estimate the log evidence log p(y) of the hierarchical regression by SMC.

    Parameters
    ----------
    data : Dataset
        The data (already centred when an intercept is wanted).
    hyperprior : Hyperprior or str
        Proper prior on sigma (``flat`` is refused: its evidence is not defined).
    noise : float, optional
        Known noise scale delta. Give exactly one of ``noise`` and ``noise_prior``.
    noise_prior : Hyperprior or str, optional
        Proper prior on delta, to learn it.
    draws : int
        Particles per chain (at least 2 x the number of free parameters).
    chains : int
        Independent SMC runs; at least 2 for a standard error (4 recommended).
    seed : int
        Seed of every random step (the exact draws of w on the collapsed route included).
    model : {"collapsed", "full"}
        The model the particles move on. ``"collapsed"`` (default): the scales alone, w
        integrated out (MATH.md section 8), then one exact draw of w per particle; accurate
        and its cost independent of N and D after one pass over the data. ``"full"``: the
        non-centred hierarchical model, sigma, z (and delta) sampled; its estimate drifts by
        more than its standard error as D grows (module notes); the contrast, and for ARD.
    kernel : {"imh", "mh"}
        PyMC's independent Metropolis-Hastings kernel (default) or its random-walk MH kernel.
    threshold : float, optional
        Target effective sample size of each tempering step, as a fraction of ``draws``
        (PyMC's ``threshold``); higher means more, smaller stages. Default: the route's
        :data:`THRESHOLD`.
    cores : int
        Chains run in parallel processes when > 1 (1: sequentially, fastest to start).
    ard : bool
        One sigma per feature (``model="full"`` only); the exact oracle then does not apply.
    exact : bool
        Compute the exact log evidence beside the estimate when the oracle applies.
    progressbar : bool
        Show PyMC's progress bar.

    Returns
    -------
    SmcResult

    Raises
    ------
    ValueError
        An unknown model or kernel, a threshold outside (0, 1), sizes that are not positive
        integers, too few particles for the free parameters, or ``ard`` on the collapsed model.

    Warns
    -----
    SmcEvidenceWarning
        Too few particles for the dimension, chains that disagree, a single chain (no
        standard error), or a warning PyMC raised while sampling (e.g. about covariances).

    Notes
    -----
    Each chain c returns hat Z_c, an estimate of Z = p(y) (unbiased for an idealised SMC;
    PyMC's adaptive tempering and finite mutation make it slightly biased in practice). The
    chains are pooled in probability space, log hat Z = logsumexp_c(log hat Z_c) - log C, the
    log of the mean of C independent estimates of Z (see :func:`pool_log_evidence` for the
    standard error and the remaining bias of the log).

    References
    ----------
    Del Moral, P., Doucet, A. and Jasra, A. (2006). Sequential Monte Carlo samplers.
    JRSS B 68(3), 411-436. Ching, J. and Chen, Y. (2007). Transitional Markov chain Monte
    Carlo method. J. Eng. Mech. 133(7), 816-832.
    """
    start = time.perf_counter()
    hp = parse_hyperprior(hyperprior)
    hp.require_proper("the SMC evidence")
    noise_arg = noise_model_argument(noise, noise_prior)
    route = model
    threshold = THRESHOLD.get(route, np.nan) if threshold is None else threshold
    check_sizes(
        draws=draws, chains=chains, cores=cores, kernel=kernel, threshold=threshold, route=route
    )
    pm_model = build_model(data, route=route, hyperprior=hp, noise=noise_arg, ard=ard)
    n_free = sum(int(np.size(v)) for v in pm_model.initial_point().values())
    check_particles(draws, n_free)
    tree, pymc_warnings = sample(
        pm_model,
        draws=draws,
        chains=chains,
        cores=cores,
        seed=seed,
        kernel=kernel_class(kernel),
        threshold=threshold,
        progressbar=progressbar,
    )
    stats = read_stage_stats(tree["sample_stats"].to_dataset())
    log_z, se = pool_log_evidence(stats["log_evidence"], warn=False)
    tree = with_clean_stage_stats(tree, stats)
    if route == "collapsed":
        tree = with_weights(tree, data, noise, seed=seed)
    messages = trust_messages(
        stats["log_evidence"], draws=draws, n_free=n_free, pymc_warnings=pymc_warnings
    )
    for message in messages:
        warnings.warn(message, SmcEvidenceWarning, stacklevel=2)
    exact_value = _exact_log_evidence(data, hp, noise, noise_prior) if exact and not ard else None
    return SmcResult(
        log_evidence=log_z,
        log_evidence_se=se,
        chain_log_evidence=tuple(map(float, stats["log_evidence"])),
        n_stages=tuple(map(int, stats["n_stages"])),
        betas=tuple(tuple(map(float, b[np.isfinite(b)])) for b in stats["beta"]),
        draws=draws,
        chains=chains,
        kernel=kernel,
        model=route,
        threshold=float(threshold),
        exact_log_evidence=exact_value,
        sampling_time=float(tree["sample_stats"].attrs.get("_t_sampling", np.nan)),
        tree=tree,
        warnings=messages,
        wall_time=time.perf_counter() - start,
    )


def run(data: Dataset, options: RunOptions) -> MethodSummary:
    """The ``smc`` method of the CLI and ``compare``.

    ``log_evidence`` is the pooled SMC estimate; ``sigma`` the posterior mean and
    ``sigma_interval`` the equal-tailed 95% interval of the final particles; ``weights`` the
    posterior means of w. ``extra`` holds ``log_evidence_se``, ``n_stages`` (the largest over
    chains), ``chain_n_stages``, ``chain_log_evidence``, ``exact_log_evidence``, ``error`` and
    ``model``. The collapsed model is run (:func:`smc_evidence`'s default; ``RunOptions`` has no
    field to choose), except with ``options.ard``, which needs the full model: the per-feature
    sigmas are then in ``extra["sigma_ard"]`` and sigma is None.
    """
    from hyperbayes.inference.methods.diagnostics import diagnose

    start = time.perf_counter()
    result = smc_evidence(
        data,
        hyperprior=options.hyperprior,
        noise=options.noise,
        noise_prior=options.noise_prior,
        draws=options.draws or 2000,
        chains=options.chains or 4,
        seed=options.seed,
        model="full" if options.ard else "collapsed",
        ard=options.ard,
        progressbar=options.progress,
    )
    diagnostics = diagnose(result.tree)
    extra: dict[str, Any] = {
        "log_evidence_se": result.log_evidence_se,
        "n_stages": max(result.n_stages),
        "chain_n_stages": list(result.n_stages),
        "chain_log_evidence": list(result.chain_log_evidence),
        "exact_log_evidence": result.exact_log_evidence,
        "error": result.error,
        "kernel": result.kernel,
        "model": result.model,
        "draws": result.draws,
        "chains": result.chains,
    }
    post = posterior_summary(result.tree, ard=options.ard, noise=options.noise)
    if post.sigma_ard is not None:
        extra["sigma_ard"] = post.sigma_ard
    return MethodSummary(
        method="smc",
        sigma=post.sigma,
        sigma_interval=post.sigma_interval,
        noise=post.noise,
        log_evidence=result.log_evidence,
        weights=post.weights,
        diagnostics=diagnostics.to_json(),
        warnings=result.warnings + diagnostics.messages,
        extra=extra,
        draws=result.tree,
        wall_time=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- helpers


def _exact_log_evidence(data, hyperprior, noise, noise_prior) -> float:
    from hyperbayes.inference.methods.exact import exact_posterior  # the oracle (NumPy only)

    return exact_posterior(
        data, hyperprior=hyperprior, noise=noise, noise_prior=noise_prior
    ).log_evidence
