"""PyMC's independent Metropolis-Hastings SMC kernel with the particles evaluated in one call.

:class:`BatchedIMH` is ``pm.smc.IMH`` (PyMC 6.4) with two changes: the prior and likelihood log
densities of all particles are computed by one compiled function of a (particles x parameters)
matrix, instead of two compiled calls per particle in a Python loop; and the initial prior
draws come from one compiled call too. Tempering, resampling, the Gaussian proposal, the
acceptance rule, the stopping rule of the mutation steps and the order of the random draws
after the start are PyMC's own, so from the same initial particles a run gives PyMC's IMH
result up to floating-point round-off (tests/test_smc.py checks it).

Why: each per-particle call costs ~10 us of Python overhead whatever the model, so on the
collapsed model (MATH.md section 8; O(D) per evaluation) PyMC's loops were nearly the whole
cost: 4 chains x 2000 particles on the diabetes data took ~3.7 s with PyMC's IMH, ~0.9 s with
the batched log densities (warm, one process; the prior draws were another ~0.1-0.3 s per
chain). On the full model (D = 10, N = 100, 2 chains x 2000 particles, 36 stages) the same
run took 29 s with PyMC's IMH and 15 s batched, with the same result; the rest is PyMC's
proposal in D + 1 dimensions and the many stages the funnel needs.

The batched function is the model's log density graph vectorised over a leading particle axis
(``pytensor.graph.replace.vectorize_graph``), run with NumPy (:data:`BATCH_MODE`).

:class:`StageEssIMH` and :class:`StageEssMH` are :class:`BatchedIMH` and ``pm.smc.MH`` that
also record each stage's importance-sampling ESS as the stage statistic ``ess``
(:mod:`~hyperbayes.inference.methods.smc_family` reports the last stage's).
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from numpy.typing import NDArray
from pymc.distributions.distribution import SymbolicRandomVariable
from pymc.distributions.shape_utils import change_dist_size
from pymc.model import modelcontext
from pymc.pytensorf import (
    collect_default_updates,
    join_nonshared_inputs,
    make_shared_replacements,
    reseed_rngs,
)
from pymc.pytensorf import compile as compile_pymc
from pymc.smc.kernels import Pearson
from pytensor.compile.mode import Mode
from pytensor.graph.replace import vectorize_graph
from pytensor.graph.traversal import ancestors, io_toposort
from pytensor.tensor.random.op import RandomVariable

__all__ = ["BATCH_MODE", "BatchedIMH", "StageESS", "StageEssIMH", "StageEssMH"]

#: Compile mode of the batched functions: PyTensor's full rewrites (its numerical
#: stabilisations included), run by the Python linker, one NumPy call per node on all the
#: particles at once. PyTensor's default, Numba, compiles every new model's graph to machine
#: code at its first call, 4-6 s per data set on the 2-core machine, while these functions are
#: called only once per mutation step: ~1.1 ms per call at 2000 particles, D = 10, against
#: ~0.8 ms compiled, with the same values. Fusion is excluded because a fused elementwise
#: operation runs element by element in Python on this linker.
BATCH_MODE = Mode(linker="py", optimizer="fast_run").excluding("fusion")


class BatchedIMH(pm.smc.IMH):
    """``pm.smc.IMH`` evaluating every particle's log densities in one compiled call.

    Pass the class as ``pm.sample_smc(kernel=BatchedIMH, ...)``; it takes IMH's keywords.
    """

    def __init__(self, *args, compile_kwargs: dict | None = None, **kwargs):
        # PyMC compiles per-particle log density functions here; this kernel never calls them,
        # so they get PyTensor's cheapest compile mode (saves ~0.3-1 s per run).
        cheap = {**(compile_kwargs or {}), "mode": "FAST_COMPILE"}
        super().__init__(*args, compile_kwargs=cheap, **kwargs)
        model = modelcontext(kwargs.get("model"))
        point = model.initial_point()
        shared = make_shared_replacements(point, self.variables, model)
        (prior, likelihood), flat = join_nonshared_inputs(
            point, [model.varlogp, model.datalogp], self.variables, shared
        )
        particles = pt.matrix("particles", dtype=flat.dtype)
        batched = vectorize_graph([prior, likelihood], {flat: particles})
        self._log_densities = compile_pymc(
            [particles], batched, on_unused_input="ignore", mode=BATCH_MODE
        )
        self._log_densities.trust_input = True
        # PyMC's initialize_population compiles a prior-draw function for every chain and
        # calls it once per particle; this one is compiled once and draws all particles.
        # (Models whose free variables depend on each other keep PyMC's way.)
        prior_draws = _with_particle_axis(self._prior_expression, self.draws)
        self._prior_draw = None
        if prior_draws is not None:
            self._prior_draw = compile_pymc([], prior_draws, random_seed=False, mode=BATCH_MODE)
            self._prior_rngs = list(collect_default_updates(outputs=prior_draws))

    def set_rng(self, rng: np.random.Generator) -> None:
        # PyMC copies its compiled functions here to give each chain its own random streams;
        # the log density function draws no random numbers, so the chain's generator suffices.
        self.rng = rng

    def initialize_population(self) -> dict[str, NDArray]:
        """``draws`` prior draws of every free variable (transformed), in one call, seeded from
        the chain's generator as PyMC seeds its per-particle draws."""
        if self._prior_draw is None:
            return super().initialize_population()
        reseed_rngs(self._prior_rngs, int(self.rng.integers(2**30)))
        values = self._prior_draw()
        return dict(zip(self._prior_var_names, values, strict=True))

    def _initialize_kernel(self) -> None:
        start = self.start if self.start else self.initialize_population()
        columns = [np.reshape(start[v.name], (self.draws, -1)) for v in self.variables]
        self.tempered_posterior = np.hstack(columns).astype(float)
        self.prior_logp, self.likelihood_logp = self._evaluate(self.tempered_posterior)

    def _evaluate(self, particles: NDArray) -> tuple[NDArray, NDArray]:
        """(log prior, log likelihood) of each row of ``particles``."""
        prior, likelihood = self._log_densities(np.ascontiguousarray(particles, dtype=float))
        return np.asarray(prior, dtype=float), np.asarray(likelihood, dtype=float)

    def mutate(self) -> None:
        """IMH steps until the particles decorrelate from the stage's start (PyMC's rule)."""
        self.n_steps = 1
        old_corr = 2
        corr = Pearson(self.tempered_posterior)
        accepted_steps = []
        while True:
            log_r = np.log(self.rng.random(self.draws))
            proposal = self.proposal_dist.rvs(size=self.draws, random_state=self.rng)
            proposal = np.asarray(proposal, dtype=float).reshape(self.draws, -1)
            forward = self.proposal_dist.logpdf(proposal)
            backward = self.proposal_dist.logpdf(self.tempered_posterior)
            prior, likelihood = self._evaluate(proposal)
            proposal_logp = prior + likelihood * self.beta
            accepted = log_r < (proposal_logp + backward) - (self.tempered_posterior_logp + forward)
            self.tempered_posterior[accepted] = proposal[accepted]
            self.tempered_posterior_logp[accepted] = proposal_logp[accepted]
            self.prior_logp[accepted] = prior[accepted]
            self.likelihood_logp[accepted] = likelihood[accepted]
            accepted_steps.append(accepted)
            self.n_steps += 1
            pearson_r = corr.get(self.tempered_posterior)
            if np.mean((old_corr - pearson_r) > self.correlation_threshold) > 0.9:
                old_corr = pearson_r
            else:
                break
        self.acc_rate = np.mean(accepted_steps)


class StageESS:
    """Records each stage's importance-sampling ESS, 1 / sum_i W_i^2 of the normalised
    incremental weights of the particles (BDA3 eq. 10.4), as the stage statistic ``ess``.

    A mixin: list it before an SMC kernel class, and add ``"ess": (float, [])`` to the
    kernel's ``stats_dtypes_shapes`` (as :class:`StageEssIMH` and :class:`StageEssMH` do).
    """

    def sample_stats(self):
        stats = super().sample_stats()
        stats["ess"] = float(1.0 / np.sum(np.square(self.weights)))
        return stats


class StageEssIMH(StageESS, BatchedIMH):
    """:class:`BatchedIMH` recording each stage's importance ESS (:class:`StageESS`)."""

    stats_dtypes_shapes = {**BatchedIMH.stats_dtypes_shapes, "ess": (float, [])}


class StageEssMH(StageESS, pm.smc.MH):
    """``pm.smc.MH`` recording each stage's importance ESS (:class:`StageESS`)."""

    stats_dtypes_shapes = {**pm.smc.MH.stats_dtypes_shapes, "ess": (float, [])}


def _with_particle_axis(expression: list, draws: int) -> list | None:
    """The prior-draw graph with a leading axis of ``draws`` independent particles, or None
    when some random variable depends on another (PyTensor cannot vectorise a random variable
    of fixed size over batched parameters).

    Each random variable is redrawn with ``draws`` more leading values (``change_dist_size``),
    and the transforms to the value variables are vectorised over that axis.
    """
    nodes = [
        node
        for node in io_toposort([], expression)
        if isinstance(node.op, RandomVariable | SymbolicRandomVariable)
    ]
    values = {node.default_output() for node in nodes}
    if any(values & set(ancestors(node.inputs)) for node in nodes):
        return None
    resized = {v: change_dist_size(v, (draws,), expand=True) for v in values}
    return vectorize_graph(expression, resized)
