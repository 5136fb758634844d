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
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pymc as pm
import pytensor
from numpy.typing import ArrayLike, NDArray

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
from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.models.builders import hierarchical_regression
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

#: |dJ/d log sigma| at the optimiser's stopping point, per feature, above which the point is
#: not stationary. On the collapse path the slope is -D (so D per feature); at a local mode
#: it is 0 up to L-BFGS-B's tolerance (~1e-4 here).
STATIONARY_TOL = 0.1
#: Step in log sigma of the central difference giving dJ/d log sigma; truncation ~1e-10.
_FD_STEP = 1e-5
#: Compile mode of the optimiser's functions: the graphs are tiny, so compiling with every
#: rewrite (the default) costs more than all the evaluations together; the values are the same.
_MODE = "FAST_COMPILE"
#: Factors on the hyperprior's scale for the sensitivity check of a proper mode.
SENSITIVITY_FACTORS = (0.5, 2.0)


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class OptimizerRun:
    """One ``pm.find_MAP`` run from one start.

    Attributes
    ----------
    label : str
        ``"default"`` (PyMC's initial point), ``"near zero"``, ``"near w_ML"`` or ``"random k"``.
    start_sigma : float
        sigma at the start (the starting w is ``path_w[0]``).
    sigma, w, noise : float, ndarray (D,), float or None
        Where the optimiser stopped (``noise`` only when it is learned).
    log_density : float
        The joint log density there (PyMC's ``logp(jacobian=False)``, the objective).
    success : bool
        scipy's own convergence flag: it says nothing about whether the point is a maximum.
    message : str
        scipy's message.
    iterations : int
    grad_log_sigma : float
        dJ / d log sigma at the stopping point: 0 at a stationary point, about -D on the
        collapse path (the density still rises as sigma falls).
    path_sigma, path_w : ndarray (k,), ndarray (k, D)
        The iterates, start first, for plotting.
    """

    label: str
    start_sigma: float
    sigma: float
    w: NDArray[np.float64]
    noise: float | None
    log_density: float
    success: bool
    message: str
    iterations: int
    grad_log_sigma: float
    path_sigma: NDArray[np.float64]
    path_w: NDArray[np.float64]

    @property
    def stationary(self) -> bool:
        """Whether the optimiser stopped where the slope in log sigma vanishes."""
        return abs(self.grad_log_sigma) <= STATIONARY_TOL * self.w.size

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "start_sigma": self.start_sigma,
            "sigma": self.sigma,
            "w": self.w.tolist(),
            "noise": self.noise,
            "log_density": self.log_density,
            "success": self.success,
            "iterations": self.iterations,
            "grad_log_sigma": self.grad_log_sigma,
        }


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
    problem = _Problem.build(data, hp, noise_spec)
    starts = _starts(problem, n_starts, np.random.default_rng(seed))
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


@dataclass(frozen=True, eq=False)
class _Problem:
    """One model, compiled once: find_MAP from any start, and the density at any point."""

    model: pm.Model
    sigma_name: str  # the free variable: "sigma" or "sigma_sq"
    noise_name: str | None  # "noise", "noise_sq" or None (known noise)
    noise: float | None  # the known noise
    w_hat: NDArray[np.float64]
    support: tuple[float, float]
    logp: Any  # compiled logp(jacobian=False) on the value variables
    to_values: Any  # natural free-variable values -> value-variable values
    to_natural: Any  # point (value variables) -> (sigma, w[, noise])
    initial_point: dict[str, NDArray]  # PyMC's default start, on the value variables

    @classmethod
    def build(cls, data: Dataset, hp: Hyperprior, noise: float | Hyperprior) -> _Problem:
        # "sufficient": the likelihood through (G, b, v, N), O(D^2) per gradient for any N.
        model = hierarchical_regression(
            data, hyperprior=hp, noise=noise, parametrization="centered", likelihood="sufficient"
        )
        free = {rv.name: rv for rv in model.free_RVs}
        sigma_name = "sigma_sq" if "sigma_sq" in free else "sigma"
        noise_name = next((n for n in ("noise", "noise_sq") if n in free), None)
        natural_in = [rv.type(rv.name) for rv in model.free_RVs]
        values_out = []
        for rv, x in zip(model.free_RVs, natural_in, strict=True):
            tr = model.rvs_to_transforms.get(rv)
            values_out.append(x if tr is None else tr.forward(x, *rv.owner.inputs))
        to_values = pytensor.function(natural_in, values_out, on_unused_input="ignore", mode=_MODE)
        outs = [model["sigma"], model["w"]] + ([model["noise"]] if noise_name else [])
        to_natural = model.compile_fn(
            model.replace_rvs_by_values(outs),
            inputs=model.value_vars,
            on_unused_input="ignore",
            mode=_MODE,
        )
        w_hat = np.linalg.lstsq(data.X, data.y, rcond=None)[0]
        if not np.any(w_hat):  # y orthogonal to X: any direction shows the collapse
            w_hat = np.full(data.d, 1.0 / np.sqrt(data.d))
        return cls(
            model=model,
            sigma_name=sigma_name,
            noise_name=noise_name,
            noise=None if noise_name else float(noise),
            w_hat=w_hat,
            support=hp.support(),
            logp=model.compile_logp(jacobian=False),
            to_values=to_values,
            to_natural=to_natural,
            initial_point=model.initial_point(),
        )

    @property
    def sigma_ref(self) -> float:
        """||w_hat|| / sqrt(D): the scale of sigma the data suggest, for starts and paths."""
        return float(np.linalg.norm(self.w_hat) / np.sqrt(self.w_hat.size))

    def natural(self, sigma: float, w: ArrayLike, noise: float | None = None) -> dict[str, Any]:
        """Free-variable values (by name) for a point given as (sigma, w[, noise]); a learned
        noise left as None takes its value at PyMC's default start."""
        out = {self.sigma_name: sigma**2 if self.sigma_name == "sigma_sq" else sigma}
        out["w"] = np.asarray(w, dtype=float)
        if self.noise_name is not None:
            if noise is None:  # a learned noise starts where PyMC's default start has it
                noise = self._unravel(self._start_vector(None))[2]
            out[self.noise_name] = noise**2 if self.noise_name == "noise_sq" else noise
        return out

    def density(self, sigma: float, w: ArrayLike, noise: float | None) -> float:
        """The joint log density find_MAP maximises, at (sigma, w[, noise]); -inf off support."""
        nat = self.natural(sigma, w, noise)
        with np.errstate(all="ignore"):
            values = self.to_values(*[np.asarray(nat[rv.name]) for rv in self.model.free_RVs])
            point = {v.name: x for v, x in zip(self.model.value_vars, values, strict=True)}
            out = float(self.logp(point))
        return out if np.isfinite(out) or out == np.inf else -np.inf

    def find_map(self, label: str, start: dict[str, Any] | None) -> OptimizerRun:
        """One ``pm.find_MAP`` run; ``start`` gives free-variable values (None: PyMC's default)."""
        xs: list[NDArray] = []
        # Deep in the funnel the line search probes sigma = exp(-700) and beyond: overflow
        # there is expected and handled (the run is reported as it ended), not an error.
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            # Non-convergence is reported in the result (success, message), not as a warning.
            warnings.filterwarnings("ignore", "The optimizer did not converge", UserWarning)
            tree = pm.find_MAP(
                model=self.model,
                initvals=start,
                jitter=False,  # the starts are chosen explicitly (and seeded) here
                return_inferencedata=True,
                progressbar=False,
                compile_kwargs={"mode": _MODE},
                callback=lambda r: xs.append(np.array(r.x, dtype=float)),
            )
        res = tree["optimizer_result"].to_dataset()
        x0 = self._start_vector(start)
        path = [self._unravel(x) for x in [x0, *xs]]
        sigma, w, noise = self._unravel(np.asarray(res["x"].values))
        return OptimizerRun(
            label=label,
            start_sigma=path[0][0],
            sigma=sigma,
            w=w,
            noise=noise,
            log_density=-float(res["fun"]),
            success=bool(res["success"]),
            message=str(res["message"].values),
            iterations=int(res["nit"]) if "nit" in res else len(xs),
            grad_log_sigma=self._grad_log_sigma(sigma, w, noise),
            path_sigma=np.array([p[0] for p in path]),
            path_w=np.array([p[1] for p in path]),
        )

    def _start_vector(self, start: dict[str, Any] | None) -> NDArray:
        """The optimiser's starting vector (value variables, model order)."""
        if start is None:
            point = self.initial_point
        else:
            values = self.to_values(*[np.asarray(start[rv.name]) for rv in self.model.free_RVs])
            point = {v.name: x for v, x in zip(self.model.value_vars, values, strict=True)}
        return np.concatenate([np.ravel(point[v.name]) for v in self.model.value_vars])

    def _unravel(self, x: NDArray) -> tuple[float, NDArray, float | None]:
        point, i = {}, 0
        for v in self.model.value_vars:
            shape = np.shape(self.initial_point[v.name])
            size = int(np.prod(shape))
            point[v.name] = x[i : i + size].reshape(shape)
            i += size
        out = self.to_natural(point)
        return float(out[0]), np.array(out[1], dtype=float), float(out[2]) if len(out) > 2 else None

    def _grad_log_sigma(self, sigma: float, w: NDArray, noise: float | None) -> float:
        up = self.density(sigma * np.exp(_FD_STEP), w, noise)
        down = self.density(sigma * np.exp(-_FD_STEP), w, noise)
        return (up - down) / (2 * _FD_STEP) if np.isfinite(up - down) else float("nan")


def _starts(problem: _Problem, n: int, rng: np.random.Generator):
    """(label, free-variable values) for every start: PyMC's default first, then ours."""
    s, w_hat = problem.sigma_ref, problem.w_hat
    lo, hi = problem.support

    def start(sigma, w):
        sigma = float(np.clip(sigma, lo * 1.01, hi / 1.01))  # inside a bounded support
        return problem.natural(sigma, w)

    out = [
        ("default", None),
        ("near zero", start(1e-3 * s, 1e-3 * w_hat)),
        ("near w_ML", start(s, w_hat)),
    ]
    for k in range(max(n - len(out), 0)):
        log_sigma = np.log(s) + rng.uniform(-4.0, 1.0)  # from 1e-4/5 to e times the data's scale
        out.append(
            (f"random {k + 1}", start(np.exp(log_sigma), w_hat * rng.uniform(0.0, 1.5, w_hat.size)))
        )
    return out[:n]


def _sensitivity(data, hp, noise, runs, factors) -> tuple[tuple[float, float], ...]:
    """The best mode's sigma for the hyperprior's scale times each factor, same data."""
    out = [(1.0, max(runs, key=lambda r: r.log_density).sigma)]
    for f in factors:
        problem = _Problem.build(data, rescale_hyperprior(hp, f), noise)
        fixed = _starts(problem, 3, np.random.default_rng(0))
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
