"""NUTS on any member of the model family (MATH.md section 7): collapsed by default.

Three routes to the same posterior:

* ``"marginal"`` (default): NUTS on the learned scales alone (one ``sigma_<group>`` per learned
  group, and ``noise`` when it is learned), on
  :func:`~hyperbayes.models.family_builders.marginal_family`, where beta (flat prior), the dense
  weights w and the random intercepts u are integrated out and the restricted likelihood is the
  Potential ``y_marginal``. Each draw of the scales is then completed with one exact draw of
  (beta, w, u) given them (:func:`~hyperbayes.inference.methods.family_draws.draw_coefficients`):
  if the scales are a draw from p(scales | y), the pair is a draw from the joint posterior, so no
  funnel ever enters the sampler. As in the shared-sigma NUTS
  (:data:`~hyperbayes.inference.methods.nuts.AUXILIARY_DIMS`), independent N(0, 1) auxiliaries
  are sampled alongside the one or two scales and dropped, so that NUTS trajectories run for
  about half an orbit instead of stopping at the first turn of a single coordinate.
* ``"noncentered"`` / ``"centered"``: NUTS on every coefficient of
  :func:`~hyperbayes.models.family_builders.hierarchical_family` (beta flat unless
  ``beta_prior_sd``). For teaching: the centred eight schools is the classic funnel and
  diverges at any usual ``target_accept``.

Every route returns the family's DataTree layout
(:func:`~hyperbayes.inference.methods.family_draws.family_datatree`: ``sigma[group]``,
``noise``, ``beta[fixed]``, ``w[feature]``, ``u[<factor>]``, ``theta[<factor>]``) with the
sampler's ``sample_stats``, so :func:`~hyperbayes.inference.methods.diagnostics.diagnose`
reports divergences, R-hat, ESS, E-BFMI and tree depth for each.

Accuracy and the funnel (tests/test_family_nuts.py, nutpie, 4 x 1000 draws): the measured
agreement with the exact oracle in Monte Carlo standard errors, and the centred model's
divergences, are in the test module's docstring.
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

from hyperbayes.inference.mathematics.family_likelihood import layout_of
from hyperbayes.inference.methods.arviz_io import pooled_draws
from hyperbayes.inference.methods.diagnostics import Diagnostics, DiagnosticsWarning, diagnose
from hyperbayes.inference.methods.family_draws import (
    draw_coefficients,
    family_datatree,
    full_scales,
)
from hyperbayes.inference.methods.family_summary import summary_from_draws
from hyperbayes.inference.methods.nuts import AUXILIARY_DIMS, default_target_accept
from hyperbayes.inference.methods.nuts_draws import AUX_NAME
from hyperbayes.inference.methods.nuts_sampling import Backend, check_backend, sample_model
from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.models.family_builders import hierarchical_family, marginal_family
from hyperbayes.models.family_stats import FamilyStats, family_stats
from hyperbayes.models.hyperpriors import OptionError
from hyperbayes.models.specification import ModelSpec

__all__ = ["FamilyNutsResult", "family_target_accept", "nuts_family", "run_family"]

Route = Literal["marginal", "noncentered", "centered"]

ROUTES = ("marginal", "noncentered", "centered")


@dataclass(frozen=True)
class FamilyNutsResult:
    """Posterior draws of a family member from :func:`nuts_family`, and their diagnostics.

    Attributes
    ----------
    draws : xarray.DataTree
        ``posterior`` in the family's layout (``sigma`` with dim ``group``, ``noise`` when
        learned, ``beta`` with dim ``fixed``, ``w`` with dim ``feature``, ``u`` and ``theta``
        with the factor's name as dim) and the sampler's ``sample_stats`` (``diverging``,
        ``energy``, ...). Root attrs: ``method``, ``model``, ``backend``, ``target_accept``,
        ``sampling_time``.
    diagnostics : Diagnostics
        :func:`~hyperbayes.inference.methods.diagnostics.diagnose` of ``draws``.
    model, backend : str
        The route (``"marginal"``, ``"noncentered"`` or ``"centered"``) and NUTS implementation.
    target_accept : float
        The step-size adaptation target used.
    wall_time : float
        Seconds for the whole call, model compilation included.
    sampling_time : float
        Seconds the sampler reported (tuning plus draws; nan when it reports none).
    """

    draws: xr.DataTree
    diagnostics: Diagnostics
    model: str
    backend: str
    target_accept: float
    wall_time: float
    sampling_time: float

    def pooled(self, name: str) -> NDArray[np.float64]:
        """All draws of a posterior variable, chains pooled: shape (chains * draws, ...)."""
        return pooled_draws(self.draws, name)


def nuts_family(
    spec: ModelSpec,
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    cores: int = 1,
    seed: int = 0,
    target_accept: float | None = None,
    backend: Backend = "nutpie",
    model: Route = "marginal",
    beta_prior_sd: float | None = None,
    stats: FamilyStats | None = None,
    progress: bool = False,
) -> FamilyNutsResult:
    """Sample the posterior of a family member's scales and coefficients with NUTS.

    Parameters
    ----------
    spec : ModelSpec
        Every learned scale needs a proper hyperprior (``Group(prior=...)``, ``noise_prior``;
        :func:`~hyperbayes.models.family_priors.with_default_priors` fills data-scaled ones).
    draws, tune, chains : int
        Draws kept per chain, tuning steps per chain, number of chains.
    cores : int
        Chains run in parallel (threads with nutpie, processes with PyMC); 1 runs them in turn.
    seed : int
        Seeds the sampler and the exact coefficient draws; equal seeds give equal draws.
    target_accept : float, optional
        NUTS adaptation target (default: :func:`family_target_accept`).
    backend : {"nutpie", "pymc", "numpyro"}
        The NUTS implementation (as in :func:`hyperbayes.inference.methods.nuts.sample_posterior`).
    model : {"marginal", "noncentered", "centered"}
        ``"marginal"`` (default): NUTS on the scales with beta, w, u integrated out, then one
        exact draw of them per draw. ``"noncentered"``/``"centered"``: NUTS on the
        per-observation hierarchical model (``"centered"`` shows the funnel).
    beta_prior_sd : float, optional
        Hierarchical routes only: beta ~ N(0, beta_prior_sd^2) instead of the flat prior that
        the marginal route (and the exact oracle) integrates over.
    stats : FamilyStats, optional
        Precomputed statistics of ``spec`` for the marginal route (default: computed).
    progress : bool
        Show the sampler's progress bar.

    Returns
    -------
    FamilyNutsResult

    Raises
    ------
    OptionError
        An unknown ``model``, a learned scale without a hyperprior, no unknown scale for the
        marginal route, ``beta_prior_sd`` with the marginal route, or bad sizes.
    ImproperPriorError
        A ``flat`` hyperprior (NUTS would wander off in an improper posterior).
    ValueError
        An unknown backend, or one that is not installed.

    Notes
    -----
    The marginal route samples p(scales | y) ∝ p_REML(y | scales) p(scales), where the
    restricted likelihood integrates beta out under its flat prior (MATH.md section 7), then
    draws [beta, w] | scales, y jointly (Gaussian, the GLS mean with w's covariance) and each
    level's u_l | beta, w, scales, y independently.

    References
    ----------
    Hoffman and Gelman (2014), The No-U-Turn sampler, JMLR 15. Betancourt and Girolami (2015),
    Hamiltonian Monte Carlo for hierarchical models. Harville (1977), JASA 72 (REML).
    """
    if model not in ROUTES:
        raise OptionError(f"unknown model {model!r}; choose one of {', '.join(ROUTES)}.")
    check_backend(backend)
    _check_spec(spec, model=model, draws=draws, tune=tune, chains=chains,
                beta_prior_sd=beta_prior_sd)
    start = time.perf_counter()
    if model == "marginal":
        stats = family_stats(spec) if stats is None else stats
        pm_model = marginal_family(spec, stats=stats)
        with pm_model:
            pm.Normal(AUX_NAME, 0.0, 1.0, shape=AUXILIARY_DIMS)
    else:
        pm_model = hierarchical_family(spec, parametrization=model, beta_prior_sd=beta_prior_sd)
    accept = target_accept or family_target_accept(spec, model=model, backend=backend)
    raw = sample_model(pm_model, draws=draws, tune=tune, chains=chains, cores=cores, seed=seed,
                       target_accept=accept, backend=backend, progressbar=progress)
    scales = _scale_draws(spec, raw)
    if model == "marginal":
        sig, noise = full_scales(spec, _learned_matrix(spec, scales), scales.get("noise"))
        rng = np.random.default_rng([seed, 1])  # not the sampler's stream
        coefficients = draw_coefficients(stats, layout_of(spec), sig, noise, rng)
    else:
        coefficients = _hierarchical_coefficients(raw)
    sampling_time = float(raw["posterior"].attrs.get("sampling_time", np.nan))
    tree = family_datatree(
        spec, scales, coefficients, chains=chains, sample_stats=_sample_stats(raw),
        attrs={"method": "nuts", "model": model, "backend": backend,
               "target_accept": accept, "sampling_time": sampling_time},
    )
    return FamilyNutsResult(
        draws=tree,
        diagnostics=diagnose(tree),
        model=model,
        backend=backend,
        target_accept=accept,
        wall_time=time.perf_counter() - start,
        sampling_time=sampling_time,
    )


def run_family(spec: ModelSpec, options: RunOptions) -> MethodSummary:
    """The ``nuts`` method of the family registry: posterior means, sds and 95% intervals.

    Marginal route, ``options.draws`` (default 1000) per chain, ``options.chains`` (default 4);
    priors, noise and groups come from ``spec``. Failed diagnostics become ``warnings``, as
    in :func:`hyperbayes.inference.methods.nuts.run`.
    """
    start = time.perf_counter()
    draws, chains = options.draws or 1000, options.chains or 4
    with warnings.catch_warnings():
        # Diagnostics that cannot be computed are in the summary's warnings (diagnostics.notes);
        # with fewer draws than chains ArviZ's "chain dimension longer" is that same fact.
        warnings.simplefilter("ignore", DiagnosticsWarning)
        warnings.filterwarnings("ignore", message="Found chain dimension to be longer than draw")
        result = nuts_family(spec, draws=draws, chains=chains, seed=options.seed,
                             progress=options.progress)
    return summary_from_draws(
        "nuts", spec, result.draws,
        log_evidence=None,
        diagnostics=result.diagnostics.to_json(),
        warnings=result.diagnostics.messages + result.diagnostics.notes,
        extra={"model": result.model, "backend": result.backend, "draws": draws * chains,
               "target_accept": result.target_accept, "sampling_time": result.sampling_time},
        wall_time=time.perf_counter() - start,
    )


def family_target_accept(spec: ModelSpec, *, model: str, backend: str) -> float:
    """The default ``target_accept``: the shared-sigma defaults by number of sampled scales.

    :func:`hyperbayes.inference.methods.nuts.default_target_accept` measured 0.95 as enough for
    one scale on nutpie, 0.99 for two (a curved ridge between them) or on PyMC's NUTS, and 0.95
    for the hierarchical models; a family member with one unknown scale is the first case, one
    with several the second.
    """
    return default_target_accept(model, backend=backend, learned_noise=spec.n_unknown_scales > 1)


# --------------------------------------------------------------------------- helpers


def _learned(spec: ModelSpec) -> list[str]:
    return [spec.groups[k].name for k in spec.learned_groups]


def _learned_matrix(spec: ModelSpec, scales) -> NDArray[np.float64]:
    """The learned groups' scale draws as (B, n_learned), in ``spec.learned_groups`` order."""
    n = len(next(iter(scales.values())))
    names = _learned(spec)
    return np.column_stack([scales[k] for k in names]) if names else np.zeros((n, 0))


def _scale_draws(spec: ModelSpec, tree: xr.DataTree) -> dict[str, NDArray[np.float64]]:
    """Each learned group's scale (by group name) and the noise when learned, chains pooled."""
    out = {name: pooled_draws(tree, f"sigma_{name}") for name in _learned(spec)}
    if spec.noise is None:
        out["noise"] = pooled_draws(tree, "noise")
    return out


def _hierarchical_coefficients(tree: xr.DataTree) -> dict[str, NDArray[np.float64]]:
    post = tree["posterior"]
    return {name: pooled_draws(tree, name) for name in ("beta", "w", "u") if name in post}


def _sample_stats(tree: xr.DataTree) -> dict[str, NDArray]:
    """The sampler's per-draw numeric statistics (``diverging``, ``energy``, tree depth, ...)."""
    if "sample_stats" not in tree.children:
        return {}
    stats = tree["sample_stats"].to_dataset()
    return {
        str(name): np.asarray(da.values)
        for name, da in stats.data_vars.items()
        if da.dims == ("chain", "draw") and da.dtype.kind in "biuf"
    }


def _check_spec(spec: ModelSpec, *, model, draws, tune, chains, beta_prior_sd) -> None:
    """Raise unless every unknown scale has a proper prior and the sizes make sense."""
    for name, value, least in (("draws", draws, 1), ("tune", tune, 0), ("chains", chains, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
            raise OptionError(f"{name} must be an integer >= {least}, got {value!r}.")
    for k in spec.learned_groups:
        g = spec.groups[k]
        if g.prior is None:
            raise OptionError(
                f"group {g.name!r} is learned but has no hyperprior, which NUTS needs; give it "
                "prior=... (e.g. 'halfnormal:1') or use with_default_priors(spec)."
            )
        g.prior.require_proper(f"NUTS (group {g.name!r})")
    if spec.noise is None:
        if spec.noise_prior is None:
            raise OptionError(
                "the noise is learned but has no hyperprior; pass noise_prior=... to specify(), "
                "or use with_default_priors(spec)."
            )
        spec.noise_prior.require_proper("NUTS (the noise)")
    if model == "marginal":
        if spec.n_unknown_scales == 0:
            raise OptionError(
                "every scale of this model is fixed: the marginal model has nothing to sample; "
                "use the exact method, or model='noncentered' to sample the coefficients."
            )
        if beta_prior_sd is not None:
            raise OptionError(
                "beta_prior_sd applies to the hierarchical routes only (the marginal route "
                "integrates beta out under its flat prior); drop it or choose "
                "model='noncentered'."
            )
