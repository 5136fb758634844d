"""Sequential Monte Carlo (SMC) estimates of the evidence p(y), checked against the exact value.

:func:`smc_evidence` runs ``pm.sample_smc`` on :func:`hyperbayes.models.builders.hierarchical_regression`,
reads each chain's log evidence out of PyMC's per-stage statistics and pools the chains (both
in :mod:`hyperbayes.inference.methods.smc_stages`), and puts the exact oracle's value (MATH.md section 4) beside
the estimate. :func:`run` is the ``smc`` method of the CLI and ``compare``.

How SMC estimates the evidence: the particles move from the prior (beta = 0) to the posterior
(beta = 1) through tempered targets p(y | theta)^beta p(theta). At each stage the incremental
weights exp((beta_t - beta_{t-1}) log p(y | theta_i)) are averaged over the particles, and the
product of those averages over the stages is an estimate of Z = p(y) (Del Moral, Doucet and
Jasra 2006). PyMC accumulates the log of that product and records it at the last stage only.

Timing (the "5000 draws take 4x the time of 2000" puzzle): the cost of one run is
(stages) x (mutation steps per stage) x (draws) likelihood evaluations, a Python loop calling a
compiled function per particle. Two effects made it superlinear:

1. OpenBLAS threads. At a few thousand particles the (draws x D) covariance, whitening and
   proposal draws of the IMH kernel cross OpenBLAS's threshold for multithreading; its idle
   worker threads then spin-wait and take the second core away from the single-threaded
   per-particle loop (measured: CPU time 8 s at 5000 draws against 3.4 s with one BLAS thread,
   on the 2-core machine). PyMC's ``blas_cores`` does not help here: it is a no-op with the
   "fork" start method (pymc issue 7354) and for sequential chains. We run the sampler inside
   ``threadpoolctl.threadpool_limits(1, "blas")``, which restores the limit on exit.
2. More mutation steps per stage. The IMH kernel mutates until the particles' Pearson
   correlation with the stage's start stops falling by ``correlation_threshold`` (0.01). The
   noise floor of an estimated correlation is about draws^-1/2, so with more particles the
   rule runs longer: 68, 76 and 90 steps in total at 500, 2000 and 5000 draws (D = 10,
   N = 100). This ~1.2x per 2.5x draws is PyMC's adaptive design, documented, not changed.

Besides, each chain pays a fixed 0.2-0.8 s at its start (PyMC copies the compiled log
densities and compiles a function for the prior draws, per chain), which dominates small runs.

Accuracy: the chains' estimates of log p(y) share a bias the between-chain standard error
cannot see. PyMC's IMH kernel proposes from one Gaussian fitted to the particles; where the
tempered posteriors are far from Gaussian (the non-centred (log sigma, z) geometry of an
informative posterior) the particles do not fully re-equilibrate between stages and the
estimate comes out low: by ~0.2 nats at D = 10, N = 100, 2000 draws with PyMC's default
tempering threshold 0.5 (tripling the mutation steps halved it, so it is a mixing effect).
Smaller tempering steps remove most of it: the project's default :data:`THRESHOLD` = 0.9 costs
about 3x the stages and brought the mean error to -0.01 nats. The bias grows with dimension
(D = 30: see benchmarks/smc_accuracy.py); at D = 1 the error is within ~0.01 nats.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from hyperbayes.inference.methods.arviz_io import pooled_draws, posterior_summary
from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.inference.methods.smc_sampling import check_sizes, noise_model_argument, sample
from hyperbayes.inference.methods.smc_stages import (
    SmcEvidenceWarning,
    pool_log_evidence,
    read_stage_stats,
    with_clean_stage_stats,
)
from hyperbayes.models.builders import hierarchical_regression
from hyperbayes.models.data import Dataset
from hyperbayes.models.hyperpriors import Hyperprior, parse_hyperprior

__all__ = [
    "DISAGREEMENT_NATS",
    "THRESHOLD",
    "DRAWS_PER_DIMENSION",
    "SmcEvidenceWarning",  # from hyperbayes.inference.methods.smc_stages, where the evidence is pooled
    "SmcResult",
    "run",
    "smc_evidence",
]

Kernel = Literal["imh", "mh"]

#: Fewer particles per free parameter than this and the estimate is flagged. A rule of thumb,
#: not a sharp edge: the kernels fit a covariance (p(p+1)/2 entries) to the particles, and the
#: chains' estimates scatter by several hundredths of a nat even at D = 1 with 300 particles.
DRAWS_PER_DIMENSION = 100
#: Chains whose log evidences have a standard deviation above this disagree more than SMC's
#: Monte Carlo error should allow at a trustworthy size; the delta-method standard error then
#: understates the error too, because the probability-space mean is ruled by the largest chain.
DISAGREEMENT_NATS = 0.5
#: Default tempering threshold (PyMC's is 0.5): each stage keeps this fraction of the
#: particles' effective sample size. At D = 10, N = 100, 2000 draws, 4 chains, 5 seeds
#: (benchmarks/smc_accuracy.py): 0.5 gave a mean error of -0.185 nats (sd 0.076) in 13 stages;
#: 0.8 gave -0.081 (sd 0.097) in 25 stages; 0.9 gave -0.008 (sd 0.064, median |error| 0.055)
#: in 37 stages, about 3x PyMC's default cost. The random-walk "mh" kernel at 0.8: -0.140.
THRESHOLD = 0.9


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
    exact_log_evidence : float or None
        The exact oracle's value when it applies (one shared sigma), else None.
    sampling_time : float
        Seconds PyMC spent sampling (after compiling the model's functions).
    tree : xarray.DataTree
        The posterior draws (``posterior`` group) and, in ``sample_stats``, the per-stage
        statistics as float arrays (chain, stage) padded with nan after a chain's last stage.
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
    kernel: Kernel = "imh",
    threshold: float = THRESHOLD,
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
        Seed of every random step.
    kernel : {"imh", "mh"}
        PyMC's independent Metropolis-Hastings kernel (default) or its random-walk MH kernel.
    threshold : float
        Target effective sample size of each tempering step, as a fraction of ``draws``
        (PyMC's ``threshold``); higher means more, smaller stages. See :data:`THRESHOLD`.
    cores : int
        Chains run in parallel processes when > 1 (1: sequentially, fastest to start).
    ard : bool
        One sigma per feature; the exact oracle then does not apply.
    exact : bool
        Compute the exact log evidence beside the estimate when the oracle applies.
    progressbar : bool
        Show PyMC's progress bar.

    Returns
    -------
    SmcResult

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
    check_sizes(draws=draws, chains=chains, cores=cores, kernel=kernel, threshold=threshold)
    model = hierarchical_regression(
        data, hyperprior=hp, noise=noise_arg, likelihood="sufficient", ard=ard
    )
    n_free = sum(int(np.size(v)) for v in model.initial_point().values())
    if draws < 2 * n_free:
        raise ValueError(
            f"draws={draws} is too few for {n_free} free parameters: the kernel fits a "
            f"covariance to the particles; use at least {2 * n_free} "
            f"(better {DRAWS_PER_DIMENSION * n_free})."
        )
    tree, pymc_warnings = sample(
        model,
        draws=draws,
        chains=chains,
        cores=cores,
        seed=seed,
        kernel=kernel,
        threshold=threshold,
        progressbar=progressbar,
    )
    stats = read_stage_stats(tree["sample_stats"].to_dataset())
    log_z, se = pool_log_evidence(stats["log_evidence"], warn=False)
    tree = with_clean_stage_stats(tree, stats)
    exact_value = None
    if exact and not ard:
        from hyperbayes.inference.methods.exact import exact_posterior  # the oracle (NumPy only)

        exact_value = exact_posterior(
            data, hyperprior=hp, noise=noise, noise_prior=noise_prior
        ).log_evidence
    messages = _trust_messages(
        stats["log_evidence"], draws=draws, n_free=n_free, pymc_warnings=pymc_warnings
    )
    for message in messages:
        warnings.warn(message, SmcEvidenceWarning, stacklevel=2)
    return SmcResult(
        log_evidence=log_z,
        log_evidence_se=se,
        chain_log_evidence=tuple(map(float, stats["log_evidence"])),
        n_stages=tuple(map(int, stats["n_stages"])),
        betas=tuple(tuple(map(float, b[np.isfinite(b)])) for b in stats["beta"]),
        draws=draws,
        chains=chains,
        kernel=kernel,
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
    chains), ``chain_n_stages``, ``chain_log_evidence``, ``exact_log_evidence`` and ``error``.
    With ``options.ard`` the per-feature sigmas are in ``extra["sigma_ard"]``, sigma is None.
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


def _trust_messages(
    chain_log_z: NDArray, *, draws: int, n_free: int, pymc_warnings: Sequence[str]
) -> tuple[str, ...]:
    """Plain-words reasons to distrust the estimate, each with its remedy."""
    out = []
    if draws < DRAWS_PER_DIMENSION * n_free:
        out.append(
            f"{draws} particles for {n_free} free parameters (fewer than "
            f"{DRAWS_PER_DIMENSION} per parameter): the SMC log evidence tends to be biased "
            f"low at this size; use draws >= {DRAWS_PER_DIMENSION * n_free}."
        )
    if chain_log_z.size < 2:
        out.append("one chain: the log evidence has no standard error; run 4 chains.")
    else:
        spread = float(np.std(chain_log_z, ddof=1))
        if spread > DISAGREEMENT_NATS:
            out.append(
                f"the chains' log evidences disagree (sd {spread:.2f} nats > "
                f"{DISAGREEMENT_NATS}): the pooled value is ruled by the largest chain and its "
                "standard error is unreliable; raise draws."
            )
    out.extend(f"PyMC warned while sampling: {w}" for w in pymc_warnings)
    return tuple(out)
