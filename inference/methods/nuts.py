"""The full hierarchical posterior p(sigma, w [, delta] | y) by NUTS (MATH.md sections 4 and 5).

Three parametrisations of one model:

* ``"centered"``: w ~ N(0, sigma^2 I) sampled directly. On weak data its posterior is Neal's
  funnel (MATH.md section 2) and NUTS diverges; kept to show that.
* ``"noncentered"``: z ~ N(0, I), w = sigma z. Removes the funnel when the data are weak, but
  builds the opposite one when they are strong (w pinned by the data, so z = w / sigma is
  tied to sigma): at PyMC's default target_accept it diverges at moderate strength, and on
  strong data its effective sample size of sigma collapses.
* ``"marginal"`` (default): NUTS on (sigma [, delta]) alone with w integrated out (the
  collapsed likelihood of MATH.md section 3), then one exact draw of w | sigma, delta, y per
  draw (MATH.md section 4). No funnel at any data strength, and each gradient costs O(D).

Every result carries a pointwise ``log_likelihood`` group (variable ``y``, dim ``obs``) so
that ``arviz_stats.loo`` works the same for all three.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pymc as pm
import xarray as xr
from numpy.typing import NDArray

from hyperbayes.inference.methods.arviz_io import pooled_draws, posterior_summary
from hyperbayes.inference.methods.diagnostics import Diagnostics, DiagnosticsWarning, diagnose
from hyperbayes.inference.methods.nuts_draws import (
    AUX_NAME,
    with_exact_weights,
    with_log_likelihood,
    without_auxiliary,
)
from hyperbayes.inference.methods.nuts_sampling import Backend, check_backend, sample_model
from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.models.builders import hierarchical_regression, marginal_regression
from hyperbayes.models.data import Dataset
from hyperbayes.models.hyperpriors import Hyperprior, noise_spec
from hyperbayes.models.propriety import require_proper_posterior
from hyperbayes.models.streaming import StreamedData

__all__ = ["NutsResult", "default_target_accept", "run", "sample_posterior"]

Parametrization = Literal["marginal", "noncentered", "centered"]
Likelihood = Literal["sufficient", "observations"]

PARAMETRIZATIONS = ("marginal", "noncentered", "centered")
#: Default NUTS adaptation targets (see :func:`default_target_accept`). PyMC's 0.8 leaves
#: divergences even in the marginal model: a HalfNormal hyperprior seen in log sigma has a right
#: tail steeper than any exponential (log density ~ -e^(2u) / 2), which the bulk-tuned step
#: overshoots (HalfNormal(1) alone: 46 divergences in 4000 draws at 0.8). Measured, 4 x 1000
#: draws per run, five hyperpriors (halfnormal, halfcauchy, exponential, invgamma, loguniform):
#:
#: * known noise, nutpie (one parameter, log sigma): 0.95 gave no divergence in 270 runs (weak
#:   N = 20, D = 1; N = 5; N < D: 8 x 15 and 5 x 30; strong; N = 2000, D = 20); at 0.9 one run
#:   in 96 had one, at 0.8 every weak run had 2-6. 0.95 gives 1.2-1.6x the ESS per second of 0.99.
#: * learned noise: with N < D, (sigma, delta) lie on a curved ridge (only sigma^2 G + delta^2
#:   is pinned down); at 0.95 four seeds gave 0-8 divergences on nutpie, 5-29 on PyMC's NUTS;
#:   at 0.99, 0 and 0-1. So 0.99.
#: * PyMC's NUTS tunes its step from the bulk alone and keeps 0.99 for the marginal model.
#:
#: 0.95 removed the non-centred model's divergences in every case measured with either backend.
TARGET_ACCEPT_MARGINAL_ONE_PARAMETER = 0.95
TARGET_ACCEPT_MARGINAL = 0.99
TARGET_ACCEPT_HIERARCHICAL = 0.95
#: Independent N(0, 1) variables sampled alongside (sigma [, delta]) in the marginal model and
#: dropped afterwards. They leave the posterior of (sigma, delta) exactly as it is (the joint
#: density factorises) but fix NUTS's known weakness in one or two dimensions: there the
#: no-U-turn check fires at the first turning point of the coordinate, often well before half
#: an orbit, so successive draws are positively correlated (a 1-D Gaussian: bulk ESS 0.25 per
#: draw at target_accept 0.99). With more dimensions the trajectory runs for about half an orbit
#: and the draws become antithetic. Measured (4 x 1000 draws, 3 seeds, target_accept 0.99): ESS
#: of sigma per draw 0.2 -> 0.8-1.5, ESS per second of sampling x2-2.6 (N = 20, D = 1 weak,
#: moderate and learned-noise cases; N = 10,000, D = 20), no divergences; 8 gave more than 3.
#: nutpie has the same weakness: at N = 10,000, D = 20, 2 x 1000 draws, ESS 476 -> 2538.
AUXILIARY_DIMS = 8
#: ``run`` stores the pointwise log likelihood only up to this many values (chains x draws x N,
#: 8 bytes each: 160 MB); past it LOO is unavailable and the summary says so.
MAX_LOG_LIKELIHOOD_VALUES = 20_000_000


@dataclass(frozen=True)
class NutsResult:
    """Posterior draws from :func:`sample_posterior` and their diagnostics.

    Attributes
    ----------
    draws : xarray.DataTree
        Groups ``posterior`` (``sigma``, ``w`` with dim ``feature``, ``noise`` when learned,
        plus the sampler's own variables such as ``z``), ``sample_stats``, ``log_likelihood``
        (``y`` with dim ``obs``) and ``observed_data``.
    diagnostics : Diagnostics
        Convergence checks (:func:`hyperbayes.inference.methods.diagnostics.diagnose`).
    parametrization, backend : str
        How the draws were made.
    wall_time : float
        Seconds for the whole call, model compilation included.
    sampling_time : float
        Seconds the sampler itself reported (tuning plus draws, no compilation).
    """

    draws: xr.DataTree
    diagnostics: Diagnostics
    parametrization: str
    backend: str
    wall_time: float
    sampling_time: float

    def pooled(self, name: str) -> NDArray[np.float64]:
        """All draws of a posterior variable, chains pooled: shape (chains * draws, ...)."""
        return pooled_draws(self.draws, name)


def sample_posterior(
    data: Dataset,
    *,
    hyperprior: Hyperprior | str,
    noise: float | None = None,
    noise_prior: Hyperprior | str | None = None,
    parametrization: Parametrization = "marginal",
    likelihood: Likelihood = "sufficient",
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    cores: int = 1,
    target_accept: float | None = None,
    seed: int,
    backend: Backend = "nutpie",
    ard: bool = False,
    log_likelihood: bool = True,
    progressbar: bool = False,
) -> NutsResult:
    """Sample the hierarchical posterior of sigma, w (and delta) with NUTS.

    Parameters
    ----------
    data : Dataset
        The (already centred, if an intercept is wanted) data.
    hyperprior : Hyperprior or str
        Prior on sigma, e.g. ``"halfnormal:1"``.
    noise : float, optional
        Known noise scale delta. Give exactly one of ``noise`` and ``noise_prior``.
    noise_prior : Hyperprior or str, optional
        Prior on delta, to learn it.
    parametrization : {"marginal", "noncentered", "centered"}
        ``"marginal"`` (the default) is the only one that samples well on both weak and strong
        data: NUTS on the hyperparameters with w integrated out, then w drawn exactly. Measured
        (tests and ``benchmarks/nuts_ess.py``, 4000 draws unless said): on weak data (N = 20,
        D = 1, small w) the centred model diverges (48-381 divergences), the others do not
        at their default ``target_accept``; on strong data (N = 10,000, D = 20) the non-centred
        model keeps a funnel of its own (bulk ESS of sigma 75-152 of 2000 draws, against 2700-3600
        for the marginal one); at D = 10 the marginal model has no divergences either. It is also
        the cheapest per gradient (O(D), flat in N).
    likelihood : {"sufficient", "observations"}
        For the hierarchical parametrisations: the likelihood through (G, b, v, N), O(D^2) per
        gradient whatever N is (default), or one term per observation, O(N D). Ignored by
        ``"marginal"``, which always uses the O(D) eigen form.
    draws, tune, chains : int
        Draws kept per chain, tuning steps per chain, number of chains.
    cores : int
        Chains run in parallel (threads with nutpie, processes with PyMC). 1 runs them in turn.
    target_accept : float, optional
        NUTS step-size adaptation target (default: :func:`default_target_accept`). Higher means
        smaller steps: fewer divergences, longer trajectories.
    seed : int
        Seeds the sampler (every chain) and the exact draws of w; equal seeds give equal draws.
    backend : {"nutpie", "pymc", "numpyro"}
        The NUTS implementation. ``"nutpie"`` (the default, a declared dependency) runs NUTS in
        compiled code on the Numba-compiled log density; ``"pymc"`` is PyMC's own NUTS, whose
        Python tree building costs ~80 us per leapfrog step against ~5 us for the O(D)
        gradient of the marginal model. Measured (``benchmarks/nuts_ess.py``, N = 10,000,
        D = 20, 2 x 1000 draws): ESS of sigma per second of sampling ~66,000 with nutpie against
        ~1,300 with PyMC's NUTS on the same model (24-49x the naive baseline's over three seeds,
        against 1.0x). Its compilation (~4 s for the first model in a process, ~1 s for later
        ones) costs about what PyMC's slower sampling does at 4 x 1000 draws: in a fresh process
        the first call takes as long either way (5.7 s against 6.1 s at N = 10,000), and every
        later one is much faster. ``"numpyro"`` needs numpyro.
    ard : bool
        One sigma per feature (hierarchical parametrisations only).
    log_likelihood : bool
        Add the pointwise log likelihood group (N values per draw; switch off for very large N
        when LOO is not needed).
    progressbar : bool
        Show the sampler's progress bar.

    Returns
    -------
    NutsResult

    Raises
    ------
    ValueError
        An unknown parametrisation or backend, ``ard`` with ``"marginal"``, a missing backend,
        or not exactly one of ``noise`` and ``noise_prior``.
    ImproperPriorError
        The posterior is improper for these data and priors (e.g. ``flat`` with rank(X) < 2);
        :func:`hyperbayes.models.propriety.posterior_impropriety` gives the rule.

    Notes
    -----
    The marginal draws use p(sigma, delta | y) ∝ p(y | sigma, delta) p(sigma) p(delta), where
    log p(y | sigma, delta) is the collapsed likelihood of MATH.md section 3, and then
    w | sigma, delta, y ~ N(A^-1 b / delta^2, A^-1) with A = G / delta^2 + I / sigma^2
    (section 4). The pair (sigma, delta, w) is an exact draw from the joint posterior whenever
    (sigma, delta) is one from its marginal, so the funnel never enters the sampler.
    The pointwise log likelihood is log N(y_i | x_i . w, delta^2) for every draw.

    References
    ----------
    Neal (2003), Slice sampling, Annals of Statistics 31(3) (the funnel). Betancourt and
    Girolami (2015), Hamiltonian Monte Carlo for hierarchical models. Hoffman and Gelman
    (2014), The No-U-Turn sampler, JMLR 15.
    """
    noise_arg = noise_spec(noise, noise_prior)
    _check_options(parametrization, backend, ard)
    # NUTS would wander off to infinity in an improper posterior and report it as a result.
    require_proper_posterior(
        data, hyperprior=hyperprior, noise_prior=noise_prior, ard=ard, purpose="NUTS"
    )
    start = time.perf_counter()
    if parametrization == "marginal":
        model = marginal_regression(data, hyperprior=hyperprior, noise=noise_arg)
        with model:
            pm.Normal(AUX_NAME, 0.0, 1.0, shape=AUXILIARY_DIMS)
    else:
        model = hierarchical_regression(
            data,
            hyperprior=hyperprior,
            noise=noise_arg,
            parametrization=parametrization,
            likelihood=likelihood,
            ard=ard,
        )
    tree = sample_model(
        model,
        draws=draws,
        tune=tune,
        chains=chains,
        cores=cores,
        seed=seed,
        target_accept=target_accept
        or default_target_accept(parametrization, backend=backend, learned_noise=noise is None),
        backend=backend,
        progressbar=progressbar,
    )
    if parametrization == "marginal":
        tree = with_exact_weights(without_auxiliary(tree), data, noise, seed=seed)
    if log_likelihood:
        tree = with_log_likelihood(tree, data, noise)
    wall = time.perf_counter() - start
    return NutsResult(
        draws=tree,
        diagnostics=diagnose(tree),
        parametrization=parametrization,
        backend=backend,
        wall_time=wall,
        sampling_time=float(tree["posterior"].attrs.get("sampling_time", np.nan)),
    )


def run(data: Dataset, options: RunOptions) -> MethodSummary:
    """The ``nuts`` method of the CLI and ``compare``: posterior means and a 95% interval.

    ``sigma`` is the posterior mean, ``sigma_interval`` the equal-tailed 95% interval,
    ``weights`` the posterior means of w, ``noise`` the posterior mean when learned. Failed
    diagnostics become ``warnings``. The pointwise log likelihood (for LOO) is stored unless it
    would exceed ``MAX_LOG_LIKELIHOOD_VALUES`` numbers. With ``options.ard`` the per-feature
    sigmas are in ``extra["sigma_ard"]`` and ``sigma`` is None.
    """
    start = time.perf_counter()
    draws, chains = options.draws or 1000, options.chains or 4
    streamed = isinstance(data, StreamedData)  # no rows: no pointwise log likelihood
    keep_loglik = not streamed and draws * chains * data.n <= MAX_LOG_LIKELIHOOD_VALUES
    with warnings.catch_warnings():
        # Diagnostics that cannot be computed (too few draws) are in the summary's warnings
        # (diagnostics.notes), so not raised as well; with fewer draws than chains ArviZ's
        # "chain dimension longer than draw dimension" is that same fact, not a naming error.
        warnings.simplefilter("ignore", DiagnosticsWarning)
        warnings.filterwarnings("ignore", message="Found chain dimension to be longer than draw")
        result = sample_posterior(
            data,
            hyperprior=options.hyperprior,
            noise=options.noise,
            noise_prior=options.noise_prior,
            parametrization="noncentered" if options.ard else "marginal",
            draws=draws,
            chains=chains,
            seed=options.seed,
            ard=options.ard,
            log_likelihood=keep_loglik,
            progressbar=options.progress,
        )
    post = posterior_summary(result.draws, ard=options.ard, noise=options.noise)
    extra: dict[str, object] = {
        "parametrization": result.parametrization,
        "backend": result.backend,
        "draws": draws * chains,
    }
    if post.sigma_ard is not None:
        extra["sigma_ard"] = post.sigma_ard
    return MethodSummary(
        method="nuts",
        sigma=post.sigma,
        sigma_interval=post.sigma_interval,
        noise=post.noise,
        log_evidence=None,
        weights=post.weights,
        diagnostics=result.diagnostics.to_json(),
        warnings=(
            result.diagnostics.messages
            + result.diagnostics.notes
            + _loglik_note(keep_loglik, data.n, streamed=streamed)
        ),
        extra=extra,
        draws=result.draws,
        wall_time=time.perf_counter() - start,
    )


def default_target_accept(parametrization: str, *, backend: str, learned_noise: bool) -> float:
    """The ``target_accept`` that left no divergences in the measured cases (notes above).

    0.95, except for the marginal model on PyMC's NUTS or with a learned noise scale: 0.99.
    """
    if parametrization != "marginal":
        return TARGET_ACCEPT_HIERARCHICAL
    if backend == "nutpie" and not learned_noise:
        return TARGET_ACCEPT_MARGINAL_ONE_PARAMETER
    return TARGET_ACCEPT_MARGINAL


def _loglik_note(kept: bool, n: int, *, streamed: bool = False) -> tuple[str, ...]:
    if kept:
        return ()
    if streamed:
        return (
            f"the pointwise log likelihood (for PSIS-LOO) was skipped: the {n:,} rows were "
            "streamed into sufficient statistics and are not held; the posterior itself needs "
            "only the statistics.",
        )
    return (
        f"the pointwise log likelihood was not stored (N = {n} values per draw would exceed "
        f"{MAX_LOG_LIKELIHOOD_VALUES:,} in all), so LOO is unavailable; use fewer draws for LOO.",
    )


def _check_options(parametrization: str, backend: str, ard: bool) -> None:
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"unknown parametrization {parametrization!r}; choose one of "
            f"{', '.join(PARAMETRIZATIONS)}."
        )
    check_backend(backend)
    if ard and parametrization == "marginal":
        raise ValueError(
            "the marginal parametrisation has one shared sigma; for ARD use "
            "parametrization='noncentered'."
        )
