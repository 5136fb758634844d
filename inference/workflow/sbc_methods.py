"""The methods simulation-based calibration checks, each as posterior draws on one data set.

Every entry of :data:`SBC_METHODS` is called as ``fn(data, *, hyperprior, noise_prior, draws,
seed)`` and returns :class:`MethodDraws`: draws of sigma, delta and w shaped (chain, draw, ...)
and a few numbers about the run. The SBC runner thins them to ``draws`` nearly independent
ones. Sampler sizes are chosen here so that the thinned draws are close to independent:

* ``exact``: the oracle's i.i.d. draws (MATH.md section 4), exactly ``draws`` of them.
* ``nuts-*``: :func:`~hyperbayes.inference.methods.nuts.sample_posterior` in one
  parametrisation, :data:`NUTS_CHAINS` chains of :data:`NUTS_THIN` x ``draws`` / chains draws
  each (every fifth draw is kept). ``info`` has the divergences and the bulk ESS of sigma over
  all draws: an ESS below ``draws`` means the kept draws are autocorrelated, which by itself
  makes ranks non-uniform.
* ``smc-full`` / ``smc-collapsed``: the final particles of
  :func:`~hyperbayes.inference.methods.smc.smc_evidence` on the hierarchical model (w sampled)
  or the collapsed one (w integrated out, MATH.md section 8), :data:`SMC_CHAINS` chains of at
  least ``DRAWS_PER_DIMENSION`` particles per free parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hyperbayes.models.data import Dataset
from hyperbayes.models.hyperpriors import Hyperprior, OptionError

__all__ = [
    "SBC_METHODS",
    "MethodDraws",
    "exact_log_sigma_moments",
    "resolve_method",
]

#: Defaults of an SBC run: L = 99 draws kept per simulation (ranks 0..99), a simulated design of
#: N = 20 rows and D = 2 columns, and half-normal priors. With these priors the data are weak,
#: but the centred model's bias is small (~0.05 posterior sd of log sigma, measured against the
#: oracle): no affordable K detects it. A prior flat in log sigma (``loguniform:0.001,10``)
#: opens the funnel's neck, and SBC sees the centred model fail at K = 100.
DEFAULT_DRAWS, DEFAULT_N, DEFAULT_D = 99, 20, 2
DEFAULT_HYPERPRIOR = DEFAULT_NOISE_PRIOR = "halfnormal:1"
NUTS_CHAINS = 2
#: Draws made per draw kept. Marginal NUTS gives an ESS of sigma of ~0.8-1.5 per draw
#: (nuts.py, AUXILIARY_DIMS), the hierarchical ones less; keeping one in five leaves the kept
#: draws close to independent where the sampler works. The ESS is recorded so this is checked.
NUTS_THIN = 5
NUTS_TUNE = 1000
SMC_CHAINS = 2
#: Exact draws per simulation for the oracle's moments of log sigma (the bias reference), and
#: the quadrature tolerance used for them. The moments need ~1e-3 of a posterior sd, not the
#: oracle's default 1e-8 nats in the log evidence: at 1e-3 nats they agree with the default
#: to ~0.005 sd (measured on five loguniform:0.001,10 simulations), in a tenth of the time.
REFERENCE_DRAWS = 4000
REFERENCE_TOL = 1e-3


@dataclass(frozen=True)
class MethodDraws:
    """Posterior draws from one method on one data set.

    Attributes
    ----------
    sigma, noise : ndarray (chain, draw)
    w : ndarray (chain, draw, D)
    info : dict of str -> float
        Numbers about the run (divergences, ESS of sigma, SMC stages), recorded per simulation.
    """

    sigma: NDArray[np.float64]
    noise: NDArray[np.float64]
    w: NDArray[np.float64]
    info: dict[str, float] = field(default_factory=dict)


MethodFn = Callable[..., MethodDraws]


def exact_draws(
    data: Dataset, *, hyperprior: Hyperprior, noise_prior: Hyperprior, draws: int, seed: int
) -> MethodDraws:
    """The exact oracle's i.i.d. draws (one chain)."""
    from hyperbayes.inference.methods.exact import exact_posterior

    post = exact_posterior(data, hyperprior=hyperprior, noise_prior=noise_prior)
    s = post.sample(draws, seed=seed)
    return MethodDraws(sigma=s["sigma"][None], noise=s["noise"][None], w=s["w"][None])


def exact_log_sigma_moments(
    data: Dataset, *, hyperprior: Hyperprior, noise_prior: Hyperprior, seed: int
) -> tuple[float, float]:
    """Mean and standard deviation of log sigma under the exact posterior (from
    :data:`REFERENCE_DRAWS` exact draws: Monte Carlo error ~0.016 sd in the mean)."""
    from hyperbayes.inference.methods.exact import exact_posterior

    post = exact_posterior(data, hyperprior=hyperprior, noise_prior=noise_prior, tol=REFERENCE_TOL)
    log_sigma = np.log(post.sample(REFERENCE_DRAWS, seed=seed)["sigma"])
    return float(log_sigma.mean()), float(log_sigma.std())


def _nuts(parametrization: str) -> MethodFn:
    def run(
        data: Dataset, *, hyperprior: Hyperprior, noise_prior: Hyperprior, draws: int, seed: int
    ) -> MethodDraws:
        import arviz_stats as azs

        from hyperbayes.inference.methods.nuts import sample_posterior

        result = sample_posterior(
            data,
            hyperprior=hyperprior,
            noise_prior=noise_prior,
            parametrization=parametrization,
            draws=math.ceil(NUTS_THIN * draws / NUTS_CHAINS),
            tune=NUTS_TUNE,
            chains=NUTS_CHAINS,
            seed=seed,
            log_likelihood=False,
        )
        post = result.draws["posterior"]
        info = {
            "divergences": float(result.draws["sample_stats"]["diverging"].sum()),
            "ess_sigma": float(azs.ess(post["sigma"].to_dataset(), method="bulk")["sigma"]),
        }
        return _from_posterior(post, info)

    run.__name__ = f"nuts_{parametrization}"
    return run


def _smc(model: str) -> MethodFn:
    def run(
        data: Dataset, *, hyperprior: Hyperprior, noise_prior: Hyperprior, draws: int, seed: int
    ) -> MethodDraws:
        from hyperbayes.inference.methods.smc import DRAWS_PER_DIMENSION, smc_evidence

        n_free = 2 if model == "collapsed" else data.d + 2
        result = smc_evidence(
            data,
            hyperprior=hyperprior,
            noise_prior=noise_prior,
            draws=max(math.ceil(draws / SMC_CHAINS), DRAWS_PER_DIMENSION * n_free),
            chains=SMC_CHAINS,
            seed=seed,
            model=model,
            exact=False,
        )
        return _from_posterior(result.tree["posterior"], {"stages": float(max(result.n_stages))})

    run.__name__ = f"smc_{model}"
    return run


def _from_posterior(post: Any, info: dict[str, float]) -> MethodDraws:
    return MethodDraws(
        sigma=np.asarray(post["sigma"].values, dtype=float),
        noise=np.asarray(post["noise"].values, dtype=float),
        w=np.asarray(post["w"].transpose("chain", "draw", "feature").values, dtype=float),
        info=info,
    )


#: Every method SBC can check, by name.
SBC_METHODS: dict[str, MethodFn] = {
    "exact": exact_draws,
    "nuts-marginal": _nuts("marginal"),
    "nuts-noncentered": _nuts("noncentered"),
    "nuts-centered": _nuts("centered"),
    "smc-full": _smc("full"),
    "smc-collapsed": _smc("collapsed"),
}
#: Short names: ``nuts`` is the NUTS method's default parametrisation.
ALIASES = {"nuts": "nuts-marginal"}


def resolve_method(method: str | MethodFn) -> tuple[str, MethodFn]:
    """(name, function) of a method name or a callable with the :class:`MethodDraws` contract.

    Raises
    ------
    OptionError
        An unknown name (the message lists the valid ones).
    """
    if callable(method):
        return getattr(method, "__name__", "custom"), method
    name = ALIASES.get(method, method)
    if name not in SBC_METHODS:
        raise OptionError(
            f"unknown SBC method {method!r}; choose one of {', '.join([*SBC_METHODS, *ALIASES])}."
        )
    return name, SBC_METHODS[name]
