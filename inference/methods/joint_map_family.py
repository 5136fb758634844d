"""Joint MAP on the linear-Gaussian family, and the per-group verdict that it has no answer.

The joint density of a family member (MATH.md sections 2 and 7), over the coefficients and the
scales together,

    J = log p(y | beta, w, u, delta) + sum_g log N(c_g | 0, sigma_g^2 I_{n_g})
        + sum_g log p(sigma_g) + log p(delta)          (flat prior on beta; c_g: group g's
                                                         n_g coefficients, w_g or u)

is unbounded along every learned group's *collapse path*: c_g = t c_hat_g,
sigma_g = t ||c_hat_g|| / sqrt(n_g), t -> 0, the rest held. The -n_g log sigma_g of the group's
prior then gains n_g nats per unit of -log t (n_g ln 10 per decade) while the likelihood and a
hyperprior with p(0) > 0 level off: J -> +inf for every data set. An optimiser either runs down
such a path (here: to the lower bound of its search in log sigma_g, "runaway") or, with strong
data, stops at a finite local mode that is not a maximum ("local mode"). A hyperprior that
vanishes fast at 0 (InverseGamma on sigma_g^2) bounds J in that group ("proper"), with a mode
placed by the hyperprior. As in :mod:`~hyperbayes.inference.methods.joint_map`, the verdict is
read off the density along each group's path and axis (c_g = 0, sigma_g -> 0), evaluated by
:func:`~hyperbayes.inference.mathematics.collapse_path.collapse_evidence`, never from whether
the optimiser converged.

J is NumPy on the :class:`~hyperbayes.models.family_stats.FamilyStats`
(:mod:`~hyperbayes.inference.methods.joint_map_family_density`); the optimiser (L-BFGS-B)
works in the non-centred coordinates (beta, z = c / sigma, log sigma, log delta), the same
function J (no Jacobian is added), better conditioned in the neck of the funnel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import optimize
from threadpoolctl import threadpool_limits

from hyperbayes.inference.mathematics.collapse_path import (
    T_MIN,
    CollapseEvidence,
    collapse_evidence,
)
from hyperbayes.inference.mathematics.family_likelihood import family_terms, layout_of
from hyperbayes.inference.methods.empirical_bayes_family import reference_scales
from hyperbayes.inference.methods.family_summary import summary_from_estimates
from hyperbayes.inference.methods.joint_map_family_density import _Density
from hyperbayes.inference.methods.results import MethodSummary
from hyperbayes.models.family_priors import with_default_priors
from hyperbayes.models.family_stats import FamilyStats, family_stats
from hyperbayes.models.hyperpriors import OptionError
from hyperbayes.models.specification import ModelSpec

__all__ = ["FamilyRun", "JointMapFamilyResult", "joint_map_family", "run_family"]

Kind = Literal["runaway", "local mode", "proper"]
#: Search range of log sigma_g (log delta) around the data's reference scale: e^-35 ~ 6e-16
#: below (where an optimiser running down a collapse path is stopped) to e^10 above.
LOG_BELOW, LOG_ABOVE = 35.0, 10.0
#: |dJ/d log sigma_g| per coefficient at the stopping point below which it is stationary
#: (on the collapse path the slope is about -n_g, i.e. 1 per coefficient).
STATIONARY_TOL = 0.1
_ADVICE = ("Learn the scales from a quantity that integrates the coefficients out or holds data "
           "out instead: empirical Bayes (REML), the full posterior (exact, NUTS, SMC) or "
           "cross-validation.")


@dataclass(frozen=True)
class FamilyRun:
    """One L-BFGS-B run from one start (natural coordinates at its end).

    ``sigmas`` holds every group's scale (fixed groups' values included), ``grad_log_sigma``
    dJ / d log sigma_g there (nan for fixed groups), ``at_lower_bound`` whether a learned
    scale ended on the lower end of the search (it was running down a collapse path).
    """

    label: str
    sigmas: NDArray[np.float64]
    noise: float
    beta: NDArray[np.float64]
    w: NDArray[np.float64]
    u: NDArray[np.float64]
    log_density: float
    success: bool
    message: str
    iterations: int
    grad_log_sigma: NDArray[np.float64]
    at_lower_bound: NDArray[np.bool_]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "sigmas": self.sigmas.tolist(), "noise": self.noise,
                "log_density": self.log_density, "success": self.success,
                "iterations": self.iterations, "grad_log_sigma": self.grad_log_sigma.tolist(),
                "at_lower_bound": self.at_lower_bound.tolist()}


@dataclass(frozen=True)
class JointMapFamilyResult:
    """Joint MAP's runs on a family member and the verdict, group by group.

    Attributes
    ----------
    group_names : tuple of str
    runs : tuple of FamilyRun
        ``runs[0]`` starts from the data's reference scales: the returned ``point``.
    collapse : dict
        Learned group name -> :class:`CollapseEvidence` along its own path (the rest held at
        the returned point).
    kinds : dict
        Learned group name -> ``"runaway"``, ``"local mode"`` or ``"proper"``.
    degenerate_groups : tuple of str
        The groups along whose path J is unbounded.
    explanation : str
        One paragraph per degenerate group (or why the density is bounded).
    jacobian : bool
        Whether J includes log sigma_g + log delta (a density over the log scales).
    """

    group_names: tuple[str, ...]
    runs: tuple[FamilyRun, ...]
    collapse: dict[str, CollapseEvidence]
    kinds: dict[str, Kind]
    degenerate_groups: tuple[str, ...]
    explanation: str
    jacobian: bool

    @property
    def point(self) -> FamilyRun:
        return self.runs[0]

    @property
    def best(self) -> FamilyRun:
        return max(self.runs, key=lambda r: r.log_density)

    @property
    def degenerate(self) -> bool:
        return bool(self.degenerate_groups)

    def sigma(self, group: str) -> float:
        return float(self.point.sigmas[self.group_names.index(group)])


def joint_map_family(
    spec: ModelSpec,
    *,
    seed: int | np.random.Generator = 0,
    n_starts: int = 4,
    jacobian: bool = False,
    stats: FamilyStats | None = None,
    t_min: float = T_MIN,
) -> JointMapFamilyResult:
    """Maximise the joint density over (beta, w, u, sigma_g, delta) and judge it per group.

    Parameters
    ----------
    spec : ModelSpec
        A learned scale without a hyperprior gets a flat one (the family's defaults come from
        :func:`~hyperbayes.models.family_priors.with_default_priors`, as :func:`run_family` does).
    seed : int or Generator
        Seed of the random starts.
    n_starts : int
        Starts: the data's reference scales (the returned point), near zero (1e-3 of them),
        then random ones (log scales uniform in [-4, 1] around the reference); coefficients at
        their conditional mode given each start's scales.
    jacobian : bool
        False (default): J is the density over the scales themselves, what ``pm.find_MAP``
        maximises (as the shared-sigma joint MAP). True: over the log scales (adds
        log sigma_g + log delta); a group's path then gains n_g - 1 per unit, so a group of one
        coefficient is bounded (its mode is a lasso-like shrinkage, MATH.md section 2).
    stats : FamilyStats, optional
        Precomputed statistics of ``spec``.
    t_min : float
        Smallest t of each collapse path.

    Returns
    -------
    JointMapFamilyResult
    """
    if n_starts < 1:
        raise OptionError(f"n_starts must be at least 1 (the reference start), got {n_starts}.")
    st = family_stats(spec) if stats is None else stats
    dens = _Density(spec, st, jacobian)
    ref_noise, ref = reference_scales(spec, st)
    lo, hi = _bounds(spec, dens, ref, ref_noise)
    rng = np.random.default_rng(seed)
    runs = tuple(_optimise(dens, lo, hi, label, x0) for label, x0 in
                 _starts(spec, st, dens, ref, ref_noise, lo, hi, n_starts, rng))
    point = runs[0]
    collapse, kinds = {}, {}
    for k in dens.learned:
        name = spec.groups[k].name
        collapse[name] = _group_collapse(spec, st, dens, point, k, ref, ref_noise, t_min)
        if not collapse[name].unbounded:
            kinds[name] = "proper"
        elif point.at_lower_bound[k] or abs(point.grad_log_sigma[k]) > STATIONARY_TOL * dens.n_g[k]:
            kinds[name] = "runaway"
        else:
            kinds[name] = "local mode"
    bad = tuple(n for n in collapse if collapse[n].unbounded)
    best = max(runs, key=lambda r: r.log_density)
    text = _explain(spec, dens, point, best, collapse, kinds, bad)
    return JointMapFamilyResult(tuple(g.name for g in spec.groups), runs, collapse, kinds, bad,
                                text, bool(jacobian))


def _bounds(spec, dens, ref, ref_noise):
    lo, hi = [], []
    for k in dens.learned:
        a, b = np.log(ref[k]) - LOG_BELOW, np.log(ref[k]) + LOG_ABOVE
        prior = spec.groups[k].prior
        if prior is not None and prior.kind == "loguniform":  # stay inside the support
            a, b = max(a, np.log(prior.params[0]) + 1e-9), min(b, np.log(prior.params[1]) - 1e-9)
        lo.append(a)
        hi.append(b)
    if dens.learn_noise:
        lo.append(np.log(ref_noise) - LOG_BELOW)
        hi.append(np.log(ref_noise) + LOG_ABOVE)
    return np.array(lo), np.array(hi)


def _conditional(spec, st, sig, noise):
    """The coefficients' conditional mode given the scales (their Gaussian mean)."""
    t = family_terms(st, layout_of(spec), sig, noise)
    return t.beta_mean[0], t.w_mean[0], t.u_mean[0]


def _starts(spec, st, dens, ref, ref_noise, lo, hi, n, rng):
    k = len(dens.learned)
    base = np.r_[np.log(ref[dens.learned]), [np.log(ref_noise)] if dens.learn_noise else []]
    shifts = [np.zeros(base.size), np.r_[np.full(k, np.log(1e-3)), np.zeros(base.size - k)]]
    shifts += [rng.uniform(-4.0, 1.0, base.size) for _ in range(max(n - 2, 0))]
    labels = ["reference", "near zero"] + [f"random {j + 1}" for j in range(max(n - 2, 0))]
    for label, shift in list(zip(labels, shifts, strict=True))[:n]:
        theta = np.clip(base + shift, lo, hi)
        sig = dens.fixed_sig.copy()
        sig[dens.learned] = np.exp(theta[:k])
        noise = float(np.exp(theta[-1])) if dens.learn_noise else float(spec.noise)
        beta, w, u = _conditional(spec, st, sig, noise)
        yield label, dens.pack(beta, w, u, sig, noise)


def _optimise(dens: _Density, lo, hi, label, x0) -> FamilyRun:
    m = x0.size - lo.size
    bounds = [(None, None)] * m + list(zip(lo, hi, strict=True))
    # One BLAS thread: L-BFGS-B makes many tiny BLAS calls, between which idle OpenBLAS workers
    # spin and take the other core (as in joint_map_problem).
    with np.errstate(all="ignore"), threadpool_limits(limits=1, user_api="blas"):
        res = optimize.minimize(dens, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                                options={"maxiter": 5000, "maxfun": 20000, "ftol": 1e-13, "gtol": 1e-8})
    beta, zw, zu, sig, noise = dens.unpack(res.x)
    fg = dens.spec.factor_group
    w = sig[dens.col_group] * zw
    u = sig[fg] * zu if dens.L else zu
    g = -dens(res.x)[1][m:]
    grad = np.full(sig.size, np.nan)
    grad[dens.learned] = g[:len(dens.learned)]
    at_lo = np.zeros(sig.size, dtype=bool)
    at_lo[dens.learned] = res.x[m:m + len(dens.learned)] <= lo[:len(dens.learned)] + 1e-6
    return FamilyRun(label, sig, noise, beta, w, u, -float(res.fun), bool(res.success),
                     str(res.message), int(res.nit), grad, at_lo)


def _group_collapse(spec, st, dens, point: FamilyRun, k, ref, ref_noise, t_min):
    """J along group k's path (the rest held at the returned point), by collapse_evidence."""
    ref_sig = dens.fixed_sig.copy()
    ref_sig[dens.learned] = ref[dens.learned]
    _, w_ref, u_ref = _conditional(spec, st, ref_sig, ref_noise if dens.learn_noise else spec.noise)
    cols = np.nonzero(dens.col_group == k)[0]
    c_hat = u_ref if k == spec.factor_group else w_ref[cols]
    if not np.any(c_hat):  # no signal at all in that direction: any direction shows it
        c_hat = np.full(dens.n_g[k], 1.0)

    def density(sigma, c, noise):
        sig = point.sigmas.copy()
        sig[k] = sigma
        w, u = point.w.copy(), point.u
        if k == spec.factor_group:
            u = c
        else:
            w[cols] = c
        return dens.natural(point.beta, w, u, sig, point.noise if noise is None else noise)

    return collapse_evidence(density, w_hat=c_hat, sigma_ref=float(np.linalg.norm(c_hat) / np.sqrt(c_hat.size)),
                             noise=None, fixed_noise=point.noise, t_min=t_min,
                             returned_log_density=point.log_density)


def _explain(spec, dens, point, best, collapse, kinds, bad) -> str:
    if not collapse:
        return "No group scale is learned: the joint density is an ordinary Gaussian in the coefficients."
    bounded = [n for n in collapse if n not in bad]
    proper = (f"The joint density is bounded along the collapse path of {bounded} (the hyperprior "
              "vanishes fast enough at 0 or has no mass near it, or the Jacobian offsets a single "
              "coefficient): a finite mode exists there, but it is placed by the hyperprior, not the "
              "data." if bounded else "")
    if not bad:
        return proper + " " + _ADVICE
    parts = []
    for name in bad:
        k = [g.name for g in spec.groups].index(name)
        ev, n_g, s = collapse[name], int(dens.n_g[k]), point.sigmas[k]
        what = "u" if k == spec.factor_group else f"w_{name}"
        gain = max(ev.growth_per_decade, ev.axis_growth_per_decade)
        where = (f"reaches {np.nanmax(ev.log_density):.1f} at t = {ev.t[-1]:.0e}, above the returned "
                 f"point's {point.log_density:.1f}" if ev.exceeds_returned else
                 f"passes the returned point's {point.log_density:.1f} only near t = "
                 f"1e{_crossing_decade(ev, point.log_density):.0f} (strong data put the crossing far "
                 "down the path, but there is no maximum)")
        head = (f"Group {name!r} ({n_g} coefficients): the joint density is unbounded along its "
                f"collapse path ({what} = t * c_hat, {name} = t * ||c_hat|| / sqrt({n_g}), "
                f"t -> 0, everything else held at the returned point): it rises by about {gain:.1f} "
                f"nats per decade of t ({n_g - int(dens.jac)} per unit of -log {name}, from the "
                f"-{n_g} log {name} of N({what} | 0, {name}^2), less the hyperprior's decay) and {where}.")
        if kinds[name] == "runaway":
            tail = (f" The optimiser ran down that path to the lower end of its search, {name} = "
                    f"{s:.2g}, where its coefficients are pinned at 0: that scale says nothing about "
                    "the data.")
        else:
            tail = (f" The optimiser stopped at a local mode ({name} = {s:.3g}, stationary), but it is "
                    "not a maximum: it is about the root mean square of the fitted coefficients, a "
                    "restatement of them, not a learned prior scale.")
        parts.append(head + tail)
    scales = ", ".join(f"{g.name} = {v:.2g}" for g, v in zip(spec.groups, best.sigmas, strict=True))
    found = (f" (The best of the optimiser's starts, {best.label!r}, reached {best.log_density:.1f} "
             f"at {scales}.)" if best.log_density > point.log_density + 1e-6 else "")
    return " ".join(["Joint MAP has no answer.", *parts, found + proper, _ADVICE]).replace("  ", " ")


def _crossing_decade(ev: CollapseEvidence, returned_log_density: float) -> float:
    """log10 of the t at which the path passes ``returned_log_density`` (extrapolated at the
    tail's growth rate; may lie far below the float range of t itself)."""
    if ev.exceeds_returned:
        above = np.nonzero(np.maximum(ev.log_density, ev.axis_log_density) > returned_log_density)[0]
        return float(np.log10(ev.t[above[0]]))
    g, last = max((ev.growth_per_decade, ev.log_density[-1]),
                  (ev.axis_growth_per_decade, ev.axis_log_density[-1]))
    return float(np.log10(ev.t[-1]) - (returned_log_density - last) / g) if g > 0 else float("nan")


def run_family(spec: ModelSpec, options) -> MethodSummary:
    """Joint MAP on a family member as a method (``hyperbayes fit joint-map`` on a spec).

    Learned scales without a hyperprior get the family's data-scaled defaults first. The point
    is the reference start's; ``degenerate`` is set when any group's path is unbounded, with
    the explanation in ``warnings`` and each such group in ``extra["degenerate_groups"]``.
    """
    start = time.perf_counter()
    spec = with_default_priors(spec)
    res = joint_map_family(spec, seed=options.seed)
    p = res.point
    notes = [res.explanation]
    n_coef = spec.n_fixed + len(spec.dense_columns) + (spec.factor.n_levels if spec.factor else 0)
    if spec.noise is None and spec.n <= n_coef:
        notes.append(f"N = {spec.n} <= {n_coef} coefficients with a learned noise: coefficients that "
                     "interpolate y and noise -> 0 are a further unbounded direction of the joint density.")
    groups = {}
    for name in res.degenerate_groups:
        k = res.group_names.index(name)
        ev = res.collapse[name]
        n_g = _n_coef(spec, k)
        groups[name] = {
            "kind": res.kinds[name], "n_coefficients": n_g, "sigma": float(p.sigmas[k]),
            "at_lower_bound": bool(p.at_lower_bound[k]), "grad_log_sigma": float(p.grad_log_sigma[k]),
            "growth_per_decade": ev.growth_per_decade,
            "expected_growth_per_decade": (n_g - int(res.jacobian)) * float(np.log(10.0)),
            "crossing_log10_t": _crossing_decade(ev, p.log_density),
            "collapse_path": ev.to_json(),
        }
    nan = np.full(spec.n_fixed, np.nan)
    return summary_from_estimates(
        "joint-map", spec, sigmas=dict(zip(res.group_names, p.sigmas.tolist(), strict=True)),
        noise=p.noise, beta=p.beta, beta_se=nan, w=p.w, u_mean=p.u, u_sd=np.full(p.u.size, np.nan),
        degenerate=res.degenerate, warnings=tuple(notes),
        diagnostics={"success": p.success, "iterations": p.iterations, "message": p.message},
        extra={"kind": _overall(res.kinds), "kinds": dict(res.kinds), "log_density": p.log_density,
               "degenerate_groups": groups, "starts": [r.to_json() for r in res.runs]},
        wall_time=time.perf_counter() - start,
    )


def _overall(kinds: dict[str, Kind]) -> str:
    """One word for the run: runaway if any group ran away, else local mode if any, else proper."""
    return next((k for k in ("runaway", "local mode") if k in kinds.values()), "proper")


def _n_coef(spec: ModelSpec, k: int) -> int:
    g = spec.groups[k]
    return spec.factor.n_levels if g.factor is not None else len(g.columns)
