"""Running ``pm.sample_smc`` for :mod:`hyperbayes.inference.methods.smc`, and checking its options.

:func:`build_model` makes the PyMC model of either route (collapsed or full) and
:func:`kernel_class` picks its SMC kernel; :func:`sample` runs the sampler with one BLAS thread
(why: the module notes of :mod:`hyperbayes.inference.methods.smc`) and turns PyMC's numerical
warnings into messages; :func:`check_sizes` and :func:`noise_model_argument` validate the
options before the model is built.
"""

from __future__ import annotations

import warnings
from typing import Literal

import pymc as pm
from threadpoolctl import threadpool_limits

from hyperbayes.inference.methods.nuts_draws import with_exact_weights
from hyperbayes.inference.methods.sampler_interrupts import propagate_interrupts
from hyperbayes.inference.methods.smc_kernel import BatchedIMH
from hyperbayes.inference.methods.smc_stages import DRAWS_PER_DIMENSION
from hyperbayes.models.builders import hierarchical_regression, marginal_regression
from hyperbayes.models.data import Dataset
from hyperbayes.models.hyperpriors import Hyperprior, noise_spec, parse_hyperprior

__all__ = [
    "ROUTES",
    "Route",
    "build_model",
    "check_particles",
    "check_sizes",
    "kernel_class",
    "noise_model_argument",
    "sample",
    "with_weights",
]

Route = Literal["collapsed", "full"]
#: The models SMC can run on: w integrated out (the default), or the full hierarchical model.
ROUTES = ("collapsed", "full")

_KERNELS = {"imh": pm.smc.IMH, "mh": pm.smc.MH}


def build_model(
    data: Dataset, *, route: str, hyperprior: Hyperprior, noise: float | Hyperprior, ard: bool
) -> pm.Model:
    """The PyMC model of ``route``: free variables the scales alone, or the scales and z.

    ``"collapsed"`` is :func:`~hyperbayes.models.builders.marginal_regression` (the collapsed
    likelihood of MATH.md section 3 as a Potential, one shared sigma); ``"full"`` is the
    non-centred :func:`~hyperbayes.models.builders.hierarchical_regression` with its likelihood
    through the sufficient statistics.
    """
    if route == "collapsed":
        if ard:
            raise ValueError(
                "the collapsed SMC model has one shared sigma; for ARD use model='full'."
            )
        return marginal_regression(data, hyperprior=hyperprior, noise=noise)
    return hierarchical_regression(
        data, hyperprior=hyperprior, noise=noise, likelihood="sufficient", ard=ard
    )


def kernel_class(kernel: str) -> type:
    """The PyMC kernel class: for ``"imh"`` PyMC's IMH evaluating all particles in one call
    (:mod:`hyperbayes.inference.methods.smc_kernel`), for ``"mh"`` PyMC's own MH."""
    return BatchedIMH if kernel == "imh" else _KERNELS[kernel]


def sample(model, *, draws, chains, cores, seed, kernel, threshold, progressbar):
    """Run pm.sample_smc with one BLAS thread; return the tree and PyMC's warning messages.

    ``kernel`` is a PyMC SMC kernel class (:func:`kernel_class`).

    An interrupt ends the run: PyMC's parallel SMC workers swallow ``KeyboardInterrupt``, and
    :func:`propagate_interrupts` raises one that the main process saw even if PyMC went on.
    """
    with (
        model,
        threadpool_limits(limits=1, user_api="blas"),
        warnings.catch_warnings(record=True) as caught,
        propagate_interrupts(),
    ):
        warnings.simplefilter("always")
        try:
            tree = pm.sample_smc(
                draws=draws,
                kernel=kernel,
                chains=chains,
                cores=cores,
                blas_cores=cores,
                random_seed=seed,
                progressbar=progressbar,
                threshold=threshold,
                compute_convergence_checks=False,  # diagnose() does this for the project
            )
        except ValueError as err:
            if "covariances" not in str(err):
                raise
            raise ValueError(
                f"SMC failed: {err} With draws={draws} the particles' covariance could not be "
                "estimated; raise draws (at least 100 per free parameter)."
            ) from err
    # Numerical warnings (covariance, overflow) concern this estimate and become its messages;
    # deprecations concern the code, so they are passed on unchanged.
    about_code = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
    for w in caught:
        if issubclass(w.category, about_code):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return tree, tuple(
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if not issubclass(w.category, about_code)
    )


def with_weights(tree, data: Dataset, noise: float | None, *, seed: int):
    """The collapsed route's draws with one exact draw of w | sigma, delta, y per particle
    (:func:`~hyperbayes.inference.methods.nuts_draws.with_exact_weights`, as NUTS's marginal
    route), under one BLAS thread: its D x D products per draw are too small for OpenBLAS's
    threads, which then spin and stall (D = 100, 8000 draws: 37 s free, 1.2 s with one thread
    on the 2-core machine)."""
    with threadpool_limits(limits=1, user_api="blas"):
        return with_exact_weights(tree, data, noise, seed=seed)


def noise_model_argument(noise, noise_prior):
    """The builder's ``noise``: the known scale, or the (proper) prior to learn it."""
    spec = noise_spec(noise, noise_prior)
    if noise is not None:
        return spec
    prior = parse_hyperprior(spec)
    prior.require_proper("the SMC evidence with learned noise")
    return prior


def check_sizes(
    *, draws: int, chains: int, cores: int, kernel: str, threshold: float, route: str
) -> None:
    if route not in ROUTES:
        raise ValueError(f"unknown SMC model {route!r}; choose one of {', '.join(ROUTES)}.")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {threshold}.")
    if kernel not in _KERNELS:
        raise ValueError(f"unknown SMC kernel {kernel!r}; choose one of {', '.join(_KERNELS)}.")
    for name, value in (("draws", draws), ("chains", chains), ("cores", cores)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def check_particles(draws: int, n_free: int) -> None:
    """Refuse fewer than 2 particles per free parameter: the kernel fits their covariance."""
    if draws < 2 * n_free:
        raise ValueError(
            f"draws={draws} is too few for {n_free} free parameters: the kernel fits a "
            f"covariance to the particles; use at least {2 * n_free} "
            f"(better {DRAWS_PER_DIMENSION * n_free})."
        )
