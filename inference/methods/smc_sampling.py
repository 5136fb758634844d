"""Running ``pm.sample_smc`` for :mod:`hyperbayes.inference.methods.smc`, and checking its options.

:func:`sample` runs the sampler with one BLAS thread (why: the module notes of
:mod:`hyperbayes.inference.methods.smc`) and turns PyMC's numerical warnings into messages;
:func:`check_sizes` and :func:`noise_model_argument` validate the options before the model is
built.
"""

from __future__ import annotations

import warnings

import pymc as pm
from threadpoolctl import threadpool_limits

from hyperbayes.models.hyperpriors import noise_spec, parse_hyperprior

__all__ = ["check_sizes", "noise_model_argument", "sample"]

_KERNELS = {"imh": pm.smc.IMH, "mh": pm.smc.MH}


def sample(model, *, draws, chains, cores, seed, kernel, threshold, progressbar):
    """Run pm.sample_smc with one BLAS thread; return the tree and PyMC's warning messages."""
    with (
        model,
        threadpool_limits(limits=1, user_api="blas"),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        try:
            tree = pm.sample_smc(
                draws=draws,
                kernel=_KERNELS[kernel],
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


def noise_model_argument(noise, noise_prior):
    """The builder's ``noise``: the known scale, or the (proper) prior to learn it."""
    spec = noise_spec(noise, noise_prior)
    if noise is not None:
        return spec
    prior = parse_hyperprior(spec)
    prior.require_proper("the SMC evidence with learned noise")
    return prior


def check_sizes(*, draws: int, chains: int, cores: int, kernel: str, threshold: float) -> None:
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {threshold}.")
    if kernel not in _KERNELS:
        raise ValueError(f"unknown SMC kernel {kernel!r}; choose one of {', '.join(_KERNELS)}.")
    for name, value in (("draws", draws), ("chains", chains), ("cores", cores)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
