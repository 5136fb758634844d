"""One NUTS call for every NUTS method: the backend check and ``pm.sample`` made safe.

:func:`~hyperbayes.inference.methods.nuts.sample_posterior` (shared sigma) and
:func:`~hyperbayes.inference.methods.nuts_family.nuts_family` (the model family) build their
PyMC models differently but sample them the same way, here: Ctrl-C raised again when the
sampler swallows it (:func:`~hyperbayes.inference.methods.sampler_interrupts.propagate_interrupts`),
no convergence checks inside PyMC (the callers run
:func:`~hyperbayes.inference.methods.diagnostics.diagnose` once, their way), and a partial
sample refused.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

import pymc as pm
import xarray as xr

from hyperbayes.inference.methods.sampler_interrupts import propagate_interrupts

__all__ = ["Backend", "check_backend", "sample_model"]

Backend = Literal["pymc", "nutpie", "numpyro"]

#: The module each optional backend needs, and how to get it.
_BACKEND_MODULES = {"nutpie": "nutpie", "numpyro": "numpyro"}


def check_backend(backend: str) -> None:
    """Raise unless ``backend`` is a known NUTS implementation that is installed.

    Raises
    ------
    ValueError
        An unknown backend, or one whose module cannot be imported.
    """
    if backend == "pymc":
        return
    if backend not in _BACKEND_MODULES:
        raise ValueError(f"unknown backend {backend!r}; choose nutpie, pymc or numpyro.")
    if importlib.util.find_spec(_BACKEND_MODULES[backend]) is None:
        raise ValueError(
            f"backend {backend!r} is not installed; `pip install {backend}` or use backend='pymc'."
        )


def sample_model(
    model: pm.Model,
    *,
    draws: int,
    tune: int,
    chains: int,
    cores: int,
    seed: int,
    target_accept: float,
    backend: Backend,
    progressbar: bool,
) -> xr.DataTree:
    """NUTS on ``model``: every chain complete, or an interrupt.

    Parameters
    ----------
    model : pymc.Model
        The model to sample.
    draws, tune, chains : int
        Draws kept per chain, tuning steps per chain, number of chains.
    cores : int
        Chains run in parallel (threads with nutpie, processes with PyMC); 1 runs them in turn.
    seed : int
        Seeds the sampler (every chain).
    target_accept : float
        NUTS step-size adaptation target.
    backend : {"nutpie", "pymc", "numpyro"}
        The NUTS implementation (``nuts_sampler`` of ``pm.sample``); check it first with
        :func:`check_backend`.
    progressbar : bool
        Show the sampler's progress bar.

    Returns
    -------
    xarray.DataTree
        What ``pm.sample`` returns (``posterior``, ``sample_stats``, ...), with exactly
        ``chains`` x ``draws`` draws and no NaN in any posterior variable.

    Raises
    ------
    KeyboardInterrupt
        The run was interrupted (Ctrl-C, SIGTERM, SIGHUP), even when the sampler caught the
        interrupt and returned the draws it had, or the sample is partial for a reason this
        process could not see (a sampler run outside the main thread).
    """
    # nutpie and PyMC's NUTS catch Ctrl-C and return the draws so far; raise it again, and
    # with PyMC's NUTS stop the chains it would still start (external samplers take no callback).
    with model, propagate_interrupts() as watch:
        tree = pm.sample(
            draws=draws,
            tune=tune,
            chains=chains,
            cores=cores,
            random_seed=seed,
            target_accept=target_accept,
            nuts_sampler=backend,
            progressbar=progressbar,
            compute_convergence_checks=False,  # the callers diagnose() once, their way
            callback=watch.check if backend == "pymc" else None,
        )
    _check_complete(tree, draws=draws, chains=chains)
    return tree


def _check_complete(tree: xr.DataTree, *, draws: int, chains: int) -> None:
    """Refuse a partial sample: an interrupted sampler returns fewer chains or draws than asked
    for, or pads its unfinished chains with NaN (nutpie, in every variable; so any posterior
    variable with a NaN is refused, whatever the model calls its variables).
    :func:`propagate_interrupts` raises the interrupt itself where it can see it; this catches
    any it cannot (a sampler run outside the main thread)."""
    post = tree["posterior"]
    got_chains, got_draws = post.sizes.get("chain", 0), post.sizes.get("draw", 0)
    padded = any(bool(values.isnull().any()) for values in post.data_vars.values())
    if (got_chains, got_draws) != (chains, draws) or padded:
        raise KeyboardInterrupt(
            f"NUTS stopped early ({got_chains} chain(s) x {got_draws} draws of {chains} x "
            f"{draws}, some missing): it was interrupted."
        )
