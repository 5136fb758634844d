"""Joint MAP over (w, sigma): run it with ``pm.find_MAP`` and show why it has no answer.

Maximising the joint density p(y | w) p(w | sigma) p(sigma) over the weights *and* their
prior scale looks like the obvious way to learn sigma. It is not (MATH.md section 2): the
density is unbounded along the collapse path w -> 0, sigma -> 0, for every data set and for
every hyperprior with p(0) > 0 or flat. An optimiser either runs down that path ("runaway"),
or, with strong data, stops at a finite local mode that is not a maximum ("local mode").
Only a hyperprior that vanishes fast at sigma = 0 (InverseGamma on sigma^2) makes the density
bounded ("proper"), and then the mode is placed by the hyperprior, not by the data.

:func:`joint_map` runs the optimiser from several starts and decides the verdict from the
density itself (evaluated along the collapse path and the w = 0 axis by
:mod:`hyperbayes.inference.mathematics.collapse_path`), never from whether the optimiser happened to converge.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from hyperbayes.inference.mathematics.collapse_path import (
    T_MIN,
    CollapseEvidence,
    collapse_evidence,
)
from hyperbayes.inference.mathematics.joint_density import (
    joint_log_density,
    profile_log_density,
    rescale_hyperprior,
    sigma_sq_curvature,
    sigma_sq_stationary,
)
from hyperbayes.inference.methods.joint_map_problem import OptimizerRun, Problem, start_points
from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.models.data import Dataset
from hyperbayes.models.hyperpriors import Hyperprior, noise_spec, parse_hyperprior

__all__ = [
    "CollapseEvidence",
    "JointMapResult",
    "OptimizerRun",
    "joint_log_density",
    "joint_map",
    "profile_log_density",
    "rescale_hyperprior",
    "run",
    "sigma_sq_curvature",
    "sigma_sq_stationary",
]

Kind = Literal["runaway", "local mode", "proper"]

#: Factors on the hyperprior's scale for the sensitivity check of a proper mode.
SENSITIVITY_FACTORS = (0.5, 2.0)


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class JointMapResult:
    """What joint MAP returned, and the verdict on it.

    Attributes
    ----------
    hyperprior : Hyperprior
    noise : float or Hyperprior
        The known noise scale, or the prior of a learned one.
    runs : tuple of OptimizerRun
        Every start; ``runs[0]`` is PyMC's default start, whose result is *the* answer a user
        of ``pm.find_MAP`` would get (``point``).
    collapse : CollapseEvidence
    degenerate : bool
        The joint density is unbounded, so "joint MAP" has no maximum.
    kind : {"runaway", "local mode", "proper"}
    explanation : str
        One paragraph in plain words (used by the CLI and the report).
    sensitivity : tuple of (factor, sigma)
        Only for ``"proper"``: the best mode's sigma when the hyperprior's scale is multiplied
        by each factor (1.0 included), the data unchanged.
    feature_names : tuple of str
    """

    hyperprior: Hyperprior
    noise: float | Hyperprior
    runs: tuple[OptimizerRun, ...]
    collapse: CollapseEvidence
    degenerate: bool
    kind: Kind
    explanation: str
    sensitivity: tuple[tuple[float, float], ...] = ()
    feature_names: tuple[str, ...] = field(default=())

    @property
    def point(self) -> OptimizerRun:
        """The default start's result."""
        return self.runs[0]

    @property
    def best(self) -> OptimizerRun:
        """The run with the highest log density (for a degenerate density: deepest in the neck)."""
        return max(self.runs, key=lambda r: r.log_density)

    @property
    def sigma(self) -> float:
        return self.point.sigma

    @property
    def w(self) -> NDArray[np.float64]:
        return self.point.w

    @property
    def log_density(self) -> float:
        return self.point.log_density


# ----------------------------------------------------------------------------- the runner


def joint_map(
    data: Dataset,
    *,
    hyperprior: Hyperprior | str,
    noise: float | Hyperprior | str,
    n_starts: int = 6,
    seed: int | np.random.Generator = 0,
    t_min: float = T_MIN,
    sensitivity_factors: tuple[float, ...] = SENSITIVITY_FACTORS,
) -> JointMapResult:
    """Maximise p(y | w) p(w | sigma) p(sigma) over (w, sigma) and judge the result.

    Parameters
    ----------
    data : Dataset
        Centred already if an intercept is wanted.
    hyperprior : Hyperprior or str
        Prior on sigma, e.g. ``"halfnormal:2"``, ``"flat"``, ``"invgamma:2,1"``.
    noise : float, Hyperprior or str
        Known noise scale, or a prior on it: the noise is then one more variable of the joint
        optimisation (held at its optimised value along the collapse path).
    n_starts : int
        How many optimiser runs: PyMC's default start first, then near zero (w = 1e-3 w_hat),
        near w_ML (w = w_hat, sigma = ||w_hat|| / sqrt(D)), then random ones, in that order.
        The verdict needs only the first; the others show where the optimiser goes.
    seed : int or Generator
        Seed of the random starts.
    t_min : float
        Smallest t of the collapse path (``T_MIN``).
    sensitivity_factors : tuple of float
        For a proper mode: factors on the hyperprior's scale to show how the mode moves.

    Returns
    -------
    JointMapResult

    Notes
    -----
    The model is :func:`hyperbayes.models.builders.hierarchical_regression` with
    ``parametrization="centered"``: the degeneracy is a property of the density in (w, sigma),
    p(y | w) p(w | sigma) p(sigma). The non-centred model's density in (z, sigma), with
    w = sigma z, is a different function (no -D log sigma term: the Jacobian of w = sigma z
    cancels it), so its MAP answers another question. ``pm.find_MAP`` maximises
    ``model.logp(jacobian=False)``; the collapse path is evaluated with that same compiled
    density at the same transformed points.

    Collapse path: w = t w_hat, sigma = t ||w_hat|| / sqrt(D), t -> 0, where
    J = log p(y | t w_hat) - D log t + const -> +inf (MATH.md section 2); on the axis w = 0,
    J(0, sigma) = log p(y | 0) - D log sigma + log p(sigma) -> +inf as well. InverseGamma(a, b)
    on sigma^2 adds -b / sigma^2 and the limit becomes -inf.

    References: MacKay (1996), Hyperparameters: optimize, or integrate out?; Neal (2003),
    Slice sampling (the funnel).
    """
    hp = parse_hyperprior(hyperprior)
    noise_spec = noise if isinstance(noise, float | int) else parse_hyperprior(noise)
    if not (0 < t_min < 1):
        raise ValueError(f"t_min must be in (0, 1), got {t_min}.")
    if n_starts < 1:
        raise ValueError(f"n_starts must be at least 1 (the default start), got {n_starts}.")
    problem = Problem.build(data, hp, noise_spec)
    starts = start_points(problem, n_starts, np.random.default_rng(seed))
    runs = tuple(problem.find_map(label, start) for label, start in starts)
    point = runs[0]
    collapse = collapse_evidence(
        problem.density,
        w_hat=problem.w_hat,
        sigma_ref=problem.sigma_ref,
        noise=point.noise,
        fixed_noise=problem.noise,
        returned_log_density=point.log_density,
        t_min=t_min,
    )
    degenerate = collapse.unbounded
    if not degenerate:
        kind: Kind = "proper"
    else:
        kind = "local mode" if point.stationary else "runaway"
    sensitivity = ()
    if kind == "proper" and hp.kind != "flat":
        sensitivity = _sensitivity(data, hp, noise_spec, runs, sensitivity_factors)
    return JointMapResult(
        hyperprior=hp,
        noise=noise_spec,
        runs=runs,
        collapse=collapse,
        degenerate=degenerate,
        kind=kind,
        explanation=_explain(
            kind, hp, point, max(runs, key=lambda r: r.log_density), collapse, sensitivity
        ),
        sensitivity=sensitivity,
        feature_names=data.feature_names,
    )


def _sensitivity(data, hp, noise, runs, factors) -> tuple[tuple[float, float], ...]:
    """The best mode's sigma for the hyperprior's scale times each factor, same data."""
    out = [(1.0, max(runs, key=lambda r: r.log_density).sigma)]
    for f in factors:
        problem = Problem.build(data, rescale_hyperprior(hp, f), noise)
        fixed = start_points(problem, 3, np.random.default_rng(0))
        best = max(
            (problem.find_map(label, st) for label, st in fixed), key=lambda r: r.log_density
        )
        out.append((float(f), best.sigma))
    return tuple(sorted(out))


def _explain(
    kind: Kind, hp, point: OptimizerRun, best: OptimizerRun, ev: CollapseEvidence, sens
) -> str:
    d = point.w.size
    advice = (
        "Learn sigma from a quantity that integrates w out or holds data out instead: empirical "
        "Bayes (the marginal likelihood), the full posterior (NUTS, exact), or cross-validation."
    )
    if kind == "proper":
        moves = ", ".join(f"x{f:g}: sigma = {s:.3g}" for f, s in sens)
        lower = hp.support()[0]
        why = (
            f"The {hp} hyperprior has no mass below sigma = {lower:g}, which cuts the collapse "
            f"path off, so a finite mode exists (best found: sigma = {best.sigma:.3g}, on or near "
            f"that bound). "
            if lower > 0
            else f"The {hp} hyperprior vanishes fast enough at sigma = 0 to keep the joint density "
            f"bounded (it falls along the collapse path), so a finite mode exists (best found: "
            f"sigma = {best.sigma:.3g}). "
        )
        return (
            f"{why}That mode is placed by the hyperprior, not by the data: multiplying the "
            f"hyperprior's scale by each factor, with the data unchanged, moves it ({moves}). "
            f"{advice}"
        )
    there = (
        f"along the collapse path (w = t * w_hat, sigma = t * ||w_hat|| / sqrt(D), t -> 0) the "
        f"log density keeps rising by about {max(ev.growth_per_decade, ev.axis_growth_per_decade):.1f} per decade of t and "
    )
    if ev.exceeds_returned:
        there += f"reaches {np.nanmax(ev.log_density):.1f} at t = {ev.t[-1]:.0e}, above the returned point's {point.log_density:.1f}"
    else:
        there += (
            f"would pass the returned point's {point.log_density:.1f} near t = {ev.crossing_t:.0e}"
        )
    if kind == "runaway":
        return (
            f"Joint MAP has no answer here: the joint density p(y|w) p(w|sigma) p(sigma) under the "
            f"{hp} hyperprior is unbounded, because shrinking w and sigma together always raises it; "
            f"{there}. From its default start the optimiser ran down that path and stopped at "
            f"sigma = {point.sigma:.2g} only because of its own tolerance (it still climbed "
            f"{-point.grad_log_sigma:.2g} nats per unit of -log sigma there), so this sigma says "
            f"nothing about the data. {advice}"
        )
    if kind == "local mode":
        restatement = (
            f"for D = 1 it is just |w| = {abs(point.w[0]):.3g}, a restatement of the one weight"
            if d == 1
            else "it is the root mean square of the fitted weights"
        )
        return (
            f"The optimiser converged from its default start (sigma = {point.sigma:.3g}, log density "
            f"{point.log_density:.2f}), but to a local mode, not a maximum: the joint density under "
            f"the {hp} hyperprior is unbounded as w -> 0 and sigma -> 0; {there}"
            f" (the best of the optimiser's starts reached {best.log_density:.1f} at sigma = "
            f"{best.sigma:.2g}). The returned sigma is about ||w|| / sqrt(D) of the fitted weights: "
            f"{restatement}, not a prior scale learned from the data. {advice}"
        )
    raise AssertionError(kind)  # pragma: no cover


# ----------------------------------------------------------------------------- CLI entry


def run(data: Dataset, options: RunOptions) -> MethodSummary:
    """The ``joint-map`` method of the CLI and ``compare``.

    ``sigma`` is the default start's sigma (what ``pm.find_MAP`` returns); ``degenerate`` and
    the explanation (in ``warnings``) carry the verdict. A learned noise (``options.noise``
    None) is optimised jointly, with ``options.noise_prior``.
    """
    start = time.perf_counter()
    noise = noise_spec(options.noise, options.noise_prior)
    res = joint_map(data, hyperprior=options.hyperprior, noise=noise, seed=options.seed)
    notes = [res.explanation]
    if options.ard:
        notes.append(
            "joint MAP runs with one shared sigma; --ard is ignored here (each sigma_j would "
            "collapse with its own weight in the same way)."
        )
    if options.noise is None and data.n <= data.d:
        notes.append(
            f"N = {data.n} <= D = {data.d} with a learned noise: weights that interpolate y and "
            "noise -> 0 are a second unbounded direction of the joint density."
        )
    p = res.point
    extra: dict[str, Any] = {
        "kind": res.kind,
        "log_density": p.log_density,
        "collapse_path": res.collapse.to_json(),
        "starts": [r.to_json() for r in res.runs],
    }
    if res.sensitivity:
        extra["hyperprior_sensitivity"] = [{"factor": f, "sigma": s} for f, s in res.sensitivity]
    return MethodSummary(
        method="joint-map",
        sigma=p.sigma,
        sigma_interval=None,
        noise=p.noise if p.noise is not None else options.noise,
        log_evidence=None,
        weights=tuple(map(float, p.w)),
        degenerate=res.degenerate,
        diagnostics={
            "success": p.success,
            "iterations": p.iterations,
            "grad_log_sigma": p.grad_log_sigma,
            "stationary": p.stationary,
        },
        warnings=tuple(notes),
        extra=extra,
        wall_time=time.perf_counter() - start,
    )
