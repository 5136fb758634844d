"""SMC evidence on any member of the model family (MATH.md sections 7 and 8), collapsed.

:func:`smc_family` runs ``pm.sample_smc`` on the family's marginal model
(:func:`~hyperbayes.models.family_builders.marginal_family`: beta, w and the random intercepts
integrated out, the restricted likelihood as the Potential ``y_marginal``), so the particles
live on the learned scales alone (one ``sigma_<group>`` per learned group, and ``noise`` when it
is learned), the route that :mod:`hyperbayes.inference.methods.smc` showed to be accurate for
one shared sigma. PyMC tempers the Potential as the likelihood (its ``datalogp`` holds the
observed variables and the Potentials), so the stages move from the hyperpriors to the
posterior of the scales and the product of the stages' mean incremental weights estimates the
evidence. The chains' estimates are pooled in probability space
(:func:`~hyperbayes.inference.methods.smc_stages.pool_log_evidence`), and every final particle
is completed with one exact draw of beta, w and u given its scales
(:func:`~hyperbayes.inference.methods.family_draws.draw_coefficients`), so the DataTree is the
family's layout (:func:`~hyperbayes.inference.methods.family_draws.family_datatree`).
:func:`run_family` is the ``smc`` method of the family registry.

Which evidence: with a flat prior on the fixed effects beta, p(y) is the REML evidence, the
integral over beta with Lebesgue measure (MATH.md section 7). It is defined only up to the
constant of that improper prior: rescaling a covariate by c shifts it by -log c, so compare it
only between models with the same fixed effects in the same units. The exact oracle
(:func:`~hyperbayes.inference.methods.exact_family.exact_family_posterior`) uses the same
measure, and is put beside the estimate when it applies (at most two unknown scales).

Accuracy (tests/test_family_smc.py; 2000 particles x 4 chains, seed 0): eight schools
(HalfCauchy(5) on tau, 1 scale) and a random-intercept model with a covariate and learned
noise (2 scales) both agree with the exact evidence and posterior means within their Monte
Carlo errors; the measured numbers are in the test module's docstring. Too few particles show:
at 150 x 2 chains (75 per scale) the two-scale estimate was 0.18 nats high, 5.6 of its standard
errors, and both the particle count and the disagreement with the exact value were flagged.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from hyperbayes.inference.mathematics.family_likelihood import layout_of
from hyperbayes.inference.methods.arviz_io import pooled_draws
from hyperbayes.inference.methods.family_draws import (
    draw_coefficients,
    family_datatree,
    full_scales,
)
from hyperbayes.inference.methods.family_summary import evidence_note, summary_from_draws
from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.inference.methods.smc import THRESHOLD
from hyperbayes.inference.methods.smc_kernel import StageEssIMH, StageEssMH
from hyperbayes.inference.methods.smc_sampling import check_particles, check_sizes, sample
from hyperbayes.inference.methods.smc_stages import (
    SmcEvidenceWarning,
    pool_log_evidence,
    read_stage_stats,
    trust_messages,
    with_clean_stage_stats,
)
from hyperbayes.models.family_stats import FamilyStats, family_stats
from hyperbayes.models.hyperpriors import OptionError
from hyperbayes.models.specification import ModelSpec

__all__ = [
    "AGREEMENT_FLOOR",
    "AGREEMENT_SE",
    "EVIDENCE_NOTE",
    "FamilySmcResult",
    "Kernel",
    "run_family",
    "smc_family",
]

Kernel = Literal["imh", "mh"]

#: The estimate is flagged when it differs from the exact evidence by more than
#: AGREEMENT_SE standard errors plus AGREEMENT_FLOOR nats. 4 se: the error over the
#: between-chain se of 4 chains is Student's t_3 (|t_3| > 4 has probability 0.03); 0.03 nats:
#: the collapsed route's residual bias and the se's own noise (smc.py's accuracy table and
#: tests/test_smc.py's ``COLLAPSED_ABS_TOL``).
AGREEMENT_SE = 4.0
AGREEMENT_FLOOR = 0.03

#: What the family's evidence is (``extra["evidence_note"]`` of every run).
EVIDENCE_NOTE = (
    "p(y) under a flat prior on the fixed effects (Lebesgue measure, the REML evidence): "
    "defined only up to that prior's constant, so compare it only between models with the "
    "same fixed effects in the same units."
)

_EXACT_MAX_SCALES = 2  # the exact oracle integrates over at most this many unknown scales


_KERNELS = {"imh": StageEssIMH, "mh": StageEssMH}


@dataclass(frozen=True)
class FamilySmcResult:
    """One SMC run on a family member: the pooled log evidence, its parts and the draws.

    The fields are those of :class:`~hyperbayes.inference.methods.smc.SmcResult` (pooled
    ``log_evidence`` with its between-chain ``log_evidence_se``, ``chain_log_evidence``,
    ``n_stages``, ``betas``, ``draws``, ``chains``, ``kernel``, ``threshold``,
    ``exact_log_evidence``, ``sampling_time``, ``warnings``, ``wall_time``), and:

    Attributes
    ----------
    last_stage_ess : tuple of float
        Each chain's importance-sampling ESS of its last stage (the step to beta = 1), in
        particles: at least ``threshold * draws`` by PyMC's tempering rule.
    scale_names : tuple of str
        The sampled scales: the learned groups' names, then ``"noise"`` when learned.
    n_free : int
        Free parameters of the sampled model (the unknown scales).
    tree : xarray.DataTree
        ``posterior`` in the family's layout (``sigma``, ``noise``, ``beta``, ``w``, ``u``,
        ``theta``); ``sample_stats`` the per-stage statistics as float (chain, stage) arrays
        padded with nan after a chain's last stage (``beta``, ``ess``, acceptance rates, ...).
    """

    log_evidence: float
    log_evidence_se: float
    chain_log_evidence: tuple[float, ...]
    n_stages: tuple[int, ...]
    betas: tuple[tuple[float, ...], ...]
    last_stage_ess: tuple[float, ...]
    scale_names: tuple[str, ...]
    draws: int
    chains: int
    kernel: str
    threshold: float
    n_free: int
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

    @property
    def error_z(self) -> float | None:
        """``error`` in units of the reported standard error (None without the oracle)."""
        error, se = self.error, self.log_evidence_se
        if error is None:
            return None
        return error / se if se > 0 else float("nan")

    def pooled(self, name: str) -> NDArray[np.float64]:
        """Draws of posterior variable ``name`` with chains and draws flattened to one axis."""
        return pooled_draws(self.tree, name)


def smc_family(
    spec: ModelSpec,
    *,
    draws: int = 2000,
    chains: int = 4,
    seed: int = 0,
    kernel: Kernel = "imh",
    threshold: float | None = None,
    cores: int = 1,
    exact: bool = True,
    progress: bool = False,
) -> FamilySmcResult:
    """Estimate the (REML) evidence of a family member by SMC on its unknown scales.

    Parameters
    ----------
    spec : ModelSpec
        The model; every learned group needs a proper hyperprior (``Group(prior=...)``, or
        :func:`~hyperbayes.models.family_priors.with_default_priors`), and a learned noise a
        proper ``noise_prior``.
    draws : int
        Particles per chain (at least 2, better 100, per unknown scale).
    chains : int
        Independent SMC runs; at least 2 for a standard error (4 recommended).
    seed : int
        Seed of every random step (the exact draws of the coefficients included).
    kernel : {"imh", "mh"}
        PyMC's independent Metropolis-Hastings kernel, all particles evaluated in one call
        (default), or its random-walk MH kernel.
    threshold : float, optional
        Target effective sample size of each tempering step, as a fraction of ``draws``;
        default the collapsed route's :data:`~hyperbayes.inference.methods.smc.THRESHOLD`.
    cores : int
        Chains run in parallel processes when > 1 (1: sequentially, fastest to start).
    exact : bool
        Put the exact oracle's evidence beside the estimate when it applies (at most two
        unknown scales).
    progress : bool
        Show PyMC's progress bar.

    Returns
    -------
    FamilySmcResult

    Raises
    ------
    OptionError
        A learned scale without a hyperprior, an unknown kernel, a threshold outside (0, 1),
        sizes that are not positive integers, or too few particles for the unknown scales.
    ImproperPriorError
        An improper hyperprior (``flat``): its evidence is not defined.

    Warns
    -----
    SmcEvidenceWarning
        Too few particles for the dimension, chains that disagree, a single chain, a warning
        PyMC raised while sampling, or an estimate outside its error bars of the exact value.

    Notes
    -----
    The sampled target is p(y | scales) p(scales) with p(y | scales) the restricted
    likelihood of MATH.md section 7 (beta integrated out under its flat prior), so the
    estimated Z is int p(y | scales) p(scales) d scales, the exact oracle's quantity. Each
    chain's hat Z_c is the product over stages of the mean incremental weights (Del Moral,
    Doucet and Jasra 2006); the chains are pooled as log mean_c hat Z_c with a delta-method
    standard error from their spread.
    """
    from hyperbayes.models.family_builders import marginal_family

    start = time.perf_counter()
    names = _check_priors(spec)
    threshold = THRESHOLD["collapsed"] if threshold is None else threshold
    n_free = len(names)  # each unknown scale is one scalar free variable
    try:  # the shared-sigma checks, raised as OptionError
        check_sizes(draws=draws, chains=chains, cores=cores, kernel=kernel,
                    threshold=threshold, route="collapsed")
        check_particles(draws, n_free)
    except ValueError as err:
        raise OptionError(str(err)) from None
    stats = family_stats(spec)
    model = marginal_family(spec, stats=stats, convention="reml")
    pymc_tree, pymc_warnings = sample(
        model, draws=draws, chains=chains, cores=cores, seed=seed, kernel=_KERNELS[kernel],
        threshold=threshold, progressbar=progress,
    )
    stage = read_stage_stats(pymc_tree["sample_stats"].to_dataset())
    log_z, se = pool_log_evidence(stage["log_evidence"], warn=False)
    tree = _family_tree(spec, stats, pymc_tree, stage, chains=chains, seed=seed)
    exact_value = _exact_log_evidence(spec) if exact and len(names) <= _EXACT_MAX_SCALES else None
    messages = trust_messages(
        stage["log_evidence"], draws=draws, n_free=n_free, pymc_warnings=pymc_warnings
    ) + _disagreement(log_z, se, exact_value)
    for message in messages:
        warnings.warn(message, SmcEvidenceWarning, stacklevel=2)
    last = stage["n_stages"] - 1
    return FamilySmcResult(
        log_evidence=log_z, log_evidence_se=se,
        chain_log_evidence=tuple(map(float, stage["log_evidence"])),
        n_stages=tuple(map(int, stage["n_stages"])),
        betas=tuple(tuple(map(float, b[np.isfinite(b)])) for b in stage["beta"]),
        last_stage_ess=tuple(map(float, stage["ess"][np.arange(last.size), last])),
        scale_names=names, draws=draws, chains=chains, kernel=kernel,
        threshold=float(threshold), n_free=n_free, exact_log_evidence=exact_value,
        sampling_time=float(pymc_tree["sample_stats"].attrs.get("_t_sampling", np.nan)),
        tree=tree, warnings=messages, wall_time=time.perf_counter() - start,
    )


def run_family(spec: ModelSpec, options: RunOptions) -> MethodSummary:
    """The ``smc`` method on a model specification (the family registry's entry).

    Priors, noise and groups come from ``spec``; from ``options`` only ``seed``, ``draws``
    (default 2000), ``chains`` (default 4) and ``progress``. ``log_evidence`` is the pooled
    SMC estimate; ``sigmas``, ``fixed_effects`` and ``random_effects`` are posterior means and
    sds of the particles and their exact coefficient draws. ``extra`` holds
    ``log_evidence_se``, ``n_stages`` (the largest over chains), ``chain_n_stages``,
    ``chain_log_evidence``, ``last_stage_ess`` (the smallest over chains),
    ``exact_log_evidence``, ``error`` and ``error_z`` (error / se; None without the oracle),
    ``evidence_note``, ``convention``, ``kernel``, ``model``, ``draws``, ``chains``, and
    ``exact_note`` when the oracle does not apply (more than two unknown scales).
    """
    from hyperbayes.inference.methods.diagnostics import diagnose

    start = time.perf_counter()
    result = smc_family(
        spec, draws=options.draws or 2000, chains=options.chains or 4, seed=options.seed,
        progress=options.progress,
    )
    diagnostics = diagnose(result.tree)
    note = evidence_note(spec, flat=EVIDENCE_NOTE)  # a proper prior on beta: a true p(y)
    extra: dict[str, Any] = {
        "log_evidence_se": result.log_evidence_se, "n_stages": max(result.n_stages),
        "chain_n_stages": list(result.n_stages),
        "chain_log_evidence": list(result.chain_log_evidence),
        "last_stage_ess": min(result.last_stage_ess),
        "exact_log_evidence": result.exact_log_evidence,
        "error": result.error, "error_z": result.error_z, "evidence_note": note,
        "convention": "reml", "kernel": result.kernel, "model": "collapsed",
        "draws": result.draws, "chains": result.chains,
    }
    if result.exact_log_evidence is None:
        extra["exact_note"] = (
            f"no exact value: the oracle integrates over at most {_EXACT_MAX_SCALES} unknown "
            f"scales and this model has {len(result.scale_names)}; the standard error is the "
            "only check."
        )
    # The constant matters to a reader once a covariate's units enter the evidence.
    unit_warning = (f"log evidence: {EVIDENCE_NOTE}",) if spec.fixed else ()
    return summary_from_draws(
        "smc", spec, result.tree, log_evidence=result.log_evidence,
        diagnostics=diagnostics.to_json(),
        warnings=result.warnings + diagnostics.messages + unit_warning,
        extra=extra, wall_time=time.perf_counter() - start,
    )


def _check_priors(spec: ModelSpec) -> tuple[str, ...]:
    """The unknown scales' names; raise unless each has a proper hyperprior."""
    names = []
    for k in spec.learned_groups:
        group = spec.groups[k]
        if group.prior is None:
            raise OptionError(
                f"group {group.name!r} is learned but has no hyperprior, which SMC samples "
                "from; give it prior=... (e.g. 'halfnormal:1') or use with_default_priors(spec)."
            )
        group.prior.require_proper(f"the SMC evidence (group {group.name!r})")
        names.append(group.name)
    if spec.noise is None:
        if spec.noise_prior is None:
            raise OptionError(
                "the noise is learned but has no hyperprior; pass noise_prior=... to specify(), "
                "or use with_default_priors(spec)."
            )
        spec.noise_prior.require_proper("the SMC evidence (the noise)")
        names.append("noise")
    if not names:
        raise OptionError(
            "every scale of this model is fixed: there is nothing for SMC to sample; use the "
            "exact method, or learn a scale (Group without scale=..., or noise=None)."
        )
    return tuple(names)


def _family_tree(spec, stats: FamilyStats, pymc_tree, stage, *, chains: int, seed: int):
    """The particles' scales, one exact draw of (beta, w, u) each, in the family's layout,
    with PyMC's per-stage statistics as float (chain, stage) arrays."""
    post = pymc_tree["posterior"]
    names = [spec.groups[k].name for k in spec.learned_groups]
    scales: dict[str, NDArray] = {name: _flat(post, f"sigma_{name}") for name in names}
    if spec.noise is None:
        scales["noise"] = _flat(post, "noise")
    learned = np.column_stack([scales[name] for name in names])
    sigmas, noise = full_scales(spec, learned, scales.get("noise"))
    # A stream of its own, so the coefficients do not reuse the sampler's random numbers; one
    # BLAS thread, as smc_sampling.with_weights explains (small products, spinning threads).
    rng = np.random.default_rng([seed, 1])
    with threadpool_limits(limits=1, user_api="blas"):
        coefficients = draw_coefficients(stats, layout_of(spec), sigmas, noise, rng)
    tree = family_datatree(
        spec, scales, coefficients, chains=chains,
        attrs={"method": "smc", "model": "collapsed", "convention": "reml"},
    )
    tree["sample_stats"] = with_clean_stage_stats(pymc_tree, stage)["sample_stats"]
    return tree


def _flat(post, name: str) -> NDArray[np.float64]:
    """A scalar posterior variable's draws, chain-major, as one axis."""
    if name not in post:
        raise KeyError(
            f"the marginal family model has no variable {name!r} (it has "
            f"{', '.join(post.data_vars)}); models.family_builders and smc_family disagree."
        )
    return np.asarray(post[name].values, dtype=np.float64).reshape(-1)


def _exact_log_evidence(spec: ModelSpec) -> float:
    from hyperbayes.inference.methods.exact_family import exact_family_posterior

    return float(exact_family_posterior(spec).log_evidence)


def _disagreement(log_z: float, se: float, exact: float | None) -> tuple[str, ...]:
    """A message when the estimate is outside its error bars of the exact evidence."""
    if exact is None or not np.isfinite(se):
        return ()
    error = log_z - exact
    if abs(error) <= AGREEMENT_SE * se + AGREEMENT_FLOOR:
        return ()
    return (
        f"the SMC log evidence differs from the exact value by {error:+.3f} nats "
        f"({error / se:+.1f} standard errors of {se:.3f}): the particles have not reached the "
        "posterior of the scales; raise draws or threshold.",
    )
