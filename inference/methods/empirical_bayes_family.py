"""Empirical Bayes for the linear-Gaussian family: REML or ML over any number of group scales.

The scales (sigma_g of every learned group, and delta when the noise is learned) maximise the
restricted (default) or profile marginal likelihood of MATH.md section 7. A scale whose optimum
is 0 (eight schools: tau = 0) is a *boundary solution*, reported in ``at_boundary``, never an
error; Laplace standard errors of the log scales come from the curvature at interior optima.

Search: damped Newton in the log scales from a data-scaled start (analytic gradients, a
finite-difference Hessian of them; the last step's size is the convergence test), with
L-BFGS-B to find the basin when Newton alone does not converge, then a boundary check for every scale that ran far below its data scale:
that scale is set to exactly 0, the others re-fitted, and the better of the two kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import optimize

from hyperbayes.inference.mathematics.family_likelihood import (
    Convention,
    FamilyTerms,
    Layout,
    family_terms,
    layout_of,
)
from hyperbayes.inference.mathematics.optimise import laplace_se, newton_ascent
from hyperbayes.inference.methods.family_draws import fixed_names
from hyperbayes.inference.methods.family_summary import summary_from_estimates
from hyperbayes.inference.methods.results import MethodSummary
from hyperbayes.models.data import DataError
from hyperbayes.models.family_stats import FamilyStats, family_stats
from hyperbayes.models.specification import ModelSpec

__all__ = ["FamilyEBResult", "empirical_bayes_family", "reference_scales"]

#: Search range of log sigma_g around its data scale: e^-12 below (numerically zero: the
#: scale's effect on the likelihood is then below ~e^-24 relative) to e^8 above.
_LOG_BELOW, _LOG_ABOVE = 12.0, 8.0
#: A learned scale more than e^-5 below its data scale after the interior search is checked
#: against the boundary (set to 0, the others re-fitted).
_BOUNDARY_CHECK = 5.0
#: The boundary is kept when its log likelihood is within this of the interior point's
#: (at e^-5 of the data scale the two differ by O(e^-10) relative at most).
_BOUNDARY_TIE = 1e-7


@dataclass(frozen=True)
class FamilyEBResult:
    """Type-II (restricted or profile) maximum-likelihood scales and what follows from them.

    Attributes
    ----------
    convention : {"reml", "ml"}
    group_names : tuple of str
    sigmas : ndarray (G,)
        Every group's scale: estimated (0 at the boundary) or the fixed value.
    learned : ndarray of bool (G,)
    noise : float
        delta: estimated when ``noise_learned``, else the known one (1 with standard errors).
    log_ml : float
        The maximised log marginal likelihood in ``convention``.
    beta, beta_cov : ndarray
        GLS estimate of the fixed effects (intercept first) and its covariance given the
        scales (beta integrated out under its flat prior).
    beta_names : tuple of str
    w_mean, w_cov : ndarray
        Posterior mean and covariance of the dense penalised weights at the estimates.
    u_mean, u_sd : ndarray (L,)
        Posterior mean and standard deviation of each level's random intercept (BLUPs).
    levels : tuple of str
    log_sigma_se : ndarray (G,)
        Laplace standard errors of log sigma_g (nan at the boundary and for fixed scales).
    log_noise_se : float or None
    at_boundary : tuple of str
        Groups whose estimate is 0.
    converged : bool
    iterations : int
    message : str
    """

    convention: str
    group_names: tuple[str, ...]
    sigmas: NDArray[np.float64]
    learned: NDArray[np.bool_]
    noise: float
    noise_learned: bool
    log_ml: float
    beta: NDArray[np.float64]
    beta_cov: NDArray[np.float64]
    beta_names: tuple[str, ...]
    w_mean: NDArray[np.float64]
    w_cov: NDArray[np.float64]
    dense_names: tuple[str, ...]
    u_mean: NDArray[np.float64]
    u_sd: NDArray[np.float64]
    levels: tuple[str, ...]
    log_sigma_se: NDArray[np.float64]
    log_noise_se: float | None
    at_boundary: tuple[str, ...]
    converged: bool
    iterations: int
    message: str

    def scale(self, group: str) -> float:
        """The estimate of one group's scale, by name."""
        return float(self.sigmas[self.group_names.index(group)])

    @property
    def variance_components(self) -> dict[str, float]:
        """sigma_g^2 per group and the residual variance delta^2 (as mixed-model software
        reports them)."""
        out = {n: float(s**2) for n, s in zip(self.group_names, self.sigmas, strict=True)}
        out["residual"] = self.noise**2
        return out


def empirical_bayes_family(
    spec: ModelSpec,
    *,
    convention: Convention = "reml",
    stats: FamilyStats | None = None,
    max_iter: int = 200,
) -> FamilyEBResult:
    """Maximise the restricted (``"reml"``) or profile (``"ml"``) likelihood over the scales.

    Parameters
    ----------
    spec : ModelSpec
        The model (see :func:`hyperbayes.models.specification.specify`).
    convention : {"reml", "ml"}
        REML integrates the fixed effects out under a flat prior (the Bayesian answer and the
        default); ML maximises over them (biased down for variance components by about P / N).
    stats : FamilyStats, optional
        Precomputed (e.g. streamed) statistics of ``spec``.
    max_iter : int
        Newton steps of the polish; hitting it is reported, not raised.

    Returns
    -------
    FamilyEBResult

    Examples
    --------
    >>> from hyperbayes.models.datasets import load_eight_schools
    >>> fit = empirical_bayes_family(load_eight_schools())
    >>> fit.at_boundary, round(float(fit.beta[0]), 3)
    (('tau',), 7.686)
    """
    if convention not in ("reml", "ml"):
        raise ValueError(f"convention must be 'reml' or 'ml', got {convention!r}.")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}.")
    st = family_stats(spec) if stats is None else stats
    lay = layout_of(spec)
    learn_noise = spec.noise is None
    if learn_noise and st.n_rows - spec.n_fixed < 1:
        raise DataError(f"{st.n_rows} rows and {spec.n_fixed} fixed effects leave no degree of "
                        "freedom for the noise; fix the noise scale or drop fixed effects.")
    problem = _Problem(spec, st, lay, convention)
    theta, fit = problem.solve(max_iter)
    return _result(spec, problem, theta, fit)


@dataclass
class _Fit:
    free: NDArray[np.bool_]  # which learned coordinates are interior (not at 0)
    hessian: NDArray[np.float64] | None
    iterations: int
    converged: bool
    log_ml: float


class _Problem:
    """The objective in theta = (log sigma_g for learned g, [log delta])."""

    def __init__(self, spec, st, lay: Layout, convention):
        self.spec, self.st, self.lay, self.conv = spec, st, lay, convention
        self.learned = np.array(spec.learned_groups, dtype=np.intp)
        self.learn_noise = spec.noise is None
        self.fixed_sigmas = np.array([g.scale if g.scale is not None else np.nan for g in spec.groups])
        ref_noise, ref_groups = reference_scales(spec, st)
        self.ref = np.r_[ref_groups[self.learned], [ref_noise] if self.learn_noise else []]
        lo = np.log(self.ref) - _LOG_BELOW
        hi = np.log(self.ref) + _LOG_ABOVE
        if self.learn_noise:
            lo[-1], hi[-1] = np.log(ref_noise) - 10.0, np.log(ref_noise) + 3.0
        self.lo, self.hi = lo, hi

    def unpack(self, theta, zero):
        sig = self.fixed_sigmas.copy()
        sig[self.learned] = np.where(zero, 0.0, np.exp(theta[: self.learned.size]))
        noise = np.exp(theta[-1]) if self.learn_noise else self.spec.noise
        return sig, noise

    def terms(self, theta, zero) -> FamilyTerms:
        sig, noise = self.unpack(theta, zero)
        return family_terms(self.st, self.lay, sig, noise, convention=self.conv)

    def objective(self, zero):
        def fun(theta):
            t = self.terms(theta, zero)
            g = t.grad_log_sigma[0, self.learned]
            g = np.r_[np.where(zero, 0.0, g), t.grad_log_noise if self.learn_noise else []]
            return -float(t.log_ml[0]), -g
        return fun

    def optimise(self, zero, start, max_iter) -> tuple[NDArray, _Fit]:
        fun = self.objective(zero)
        active = np.r_[~zero, [True] if self.learn_noise else []].astype(bool)
        theta = start.copy()
        if not active.any():
            return theta, _Fit(~zero, None, 0, True, -fun(theta)[0])

        def sub(x):
            full = theta.copy()
            full[active] = x
            f, g = fun(full)
            return f, g[active]

        # Damped Newton from the data-scaled start converges in a handful of steps; where it
        # does not (a non-concave start region), L-BFGS-B finds the basin and Newton polishes.
        x, H, steps, converged = newton_ascent(theta[active], sub, max_iter=max_iter,
                                               lower=self.lo[active], upper=self.hi[active])
        nit = 0
        if not converged:
            res = optimize.minimize(sub, theta[active], jac=True, method="L-BFGS-B",
                                    bounds=list(zip(self.lo[active], self.hi[active], strict=True)),
                                    options={"maxiter": 500, "ftol": 1e-15, "gtol": 1e-9})
            nit = res.nit
            x2, H2, steps2, conv2 = newton_ascent(res.x, sub, max_iter=max_iter,
                                                  lower=self.lo[active], upper=self.hi[active])
            if -sub(x2)[0] >= -sub(x)[0]:
                x, H, steps, converged = x2, H2, steps + steps2, conv2
        theta[active] = x
        return theta, _Fit(~zero, H, steps + nit, converged, -fun(theta)[0])

    def solve(self, max_iter):
        k = self.learned.size
        zero = np.zeros(k, dtype=bool)
        start = np.log(self.ref) - np.r_[np.full(k, 1.0), [0.0] if self.learn_noise else []]
        theta, fit = self.optimise(zero, start, max_iter)
        # Boundary checks, smallest scale first: a scale far below its data scale is tried at 0.
        order = np.argsort(theta[:k] - np.log(self.ref[:k]))
        for j in order:
            if theta[j] - np.log(self.ref[j]) > -_BOUNDARY_CHECK and fit.converged:
                continue
            trial_zero = zero.copy()
            trial_zero[j] = True
            t2, fit2 = self.optimise(trial_zero, theta, max_iter)
            if fit2.log_ml >= fit.log_ml - _BOUNDARY_TIE * max(1.0, abs(fit.log_ml)) * 1e-3:
                zero, theta, fit = trial_zero, t2, fit2
        return theta, fit


def reference_scales(spec: ModelSpec, st: FamilyStats):
    """Rough data scales: delta ~ sd of y, sigma_g ~ sd(y) / rms sd of the group's columns."""
    C = st.comoment
    nw = st.total_weight
    var_y = max(C[-1, -1] / nw, 1e-300)
    ref_noise = np.sqrt(C[-1, -1] / max(st.n_rows - st.n_fixed, 1))
    if spec.standard_errors or spec.noise is not None:
        ref_noise = spec.noise if spec.noise is not None else 1.0
    p = st.n_fixed_columns
    refs = np.empty(len(spec.groups))
    gid = spec.group_of_dense_column()
    for k, g in enumerate(spec.groups):
        if g.factor is not None:
            refs[k] = np.sqrt(var_y)
        else:
            cols = p + np.nonzero(gid == k)[0]
            var_x = float(np.mean(np.diag(C)[cols])) / nw
            refs[k] = np.sqrt(var_y / var_x) if var_x > 0 else np.sqrt(var_y)
    return float(ref_noise), refs


def _result(spec: ModelSpec, problem: _Problem, theta, fit: _Fit) -> FamilyEBResult:
    k = problem.learned.size
    zero = ~fit.free
    sig, noise = problem.unpack(theta, zero)
    t = problem.terms(theta, zero)
    active = np.r_[fit.free, [True] if problem.learn_noise else []].astype(bool)
    se_theta = np.full(theta.size, np.nan)
    if fit.hessian is not None:
        se_theta[active] = laplace_se(fit.hessian)
    se = np.full(len(spec.groups), np.nan)
    se[problem.learned] = se_theta[:k]
    boundary = tuple(spec.groups[g].name for g, z in zip(problem.learned, zero, strict=True) if z)
    if not fit.converged:
        msg = (f"the optimiser stopped after {fit.iterations} steps without converging; the "
               "estimates are not reliable: raise max_iter.")
    elif boundary:
        msg = (f"the {problem.conv.upper()} likelihood is largest at scale 0 for {list(boundary)}: "
               "the data are consistent with no variation in those groups beyond the noise "
               "(a boundary solution, not an error).")
    else:
        msg = f"interior maximum of the {problem.conv.upper()} likelihood found."
    names = fixed_names(spec)
    return FamilyEBResult(
        convention=problem.conv, group_names=tuple(g.name for g in spec.groups), sigmas=sig,
        learned=np.array([g.learned for g in spec.groups]), noise=float(noise),
        noise_learned=problem.learn_noise, log_ml=float(t.log_ml[0]), beta=t.beta_mean[0],
        beta_cov=t.beta_cov[0], beta_names=names, w_mean=t.w_mean[0], w_cov=t.w_cov[0],
        dense_names=spec.dense_columns, u_mean=t.u_mean[0], u_sd=np.sqrt(t.u_var[0]),
        levels=spec.factor.levels if spec.factor is not None else (), log_sigma_se=se,
        log_noise_se=float(se_theta[-1]) if problem.learn_noise else None,
        at_boundary=boundary, converged=fit.converged, iterations=fit.iterations, message=msg,
    )


def run_family(spec: ModelSpec, options) -> MethodSummary:
    """Empirical Bayes on a family member as a method (``hyperbayes fit eb`` on a spec);
    ``options.convention`` chooses REML (default) or ML."""
    start = time.perf_counter()
    res = empirical_bayes_family(spec, convention=options.convention)
    warnings = [] if res.converged and not res.at_boundary else [res.message]
    sigmas = dict(zip(res.group_names, res.sigmas.tolist(), strict=True))
    intervals = {}
    for name, s, se, learned in zip(res.group_names, res.sigmas, res.log_sigma_se, res.learned,
                                    strict=True):
        if learned and s > 0 and np.isfinite(se):
            intervals[name] = (float(s * np.exp(-1.959963984540054 * se)),
                               float(s * np.exp(1.959963984540054 * se)))
    extra = {
        "kind": f"type-II maximum likelihood ({res.convention.upper()})",
        "convention": res.convention,
        "log_ml": res.log_ml,
        "at_boundary": list(res.at_boundary),
        "log_sigma_se": dict(zip(res.group_names, res.log_sigma_se.tolist(), strict=True)),
        "log_noise_se": res.log_noise_se,
        "noise_learned": res.noise_learned,
        "variance_components": res.variance_components,
        "converged": res.converged,
        "iterations": res.iterations,
        "message": res.message,
    }
    return summary_from_estimates(
        "eb", spec, sigmas=sigmas, noise=res.noise, beta=res.beta,
        beta_se=np.sqrt(np.diag(res.beta_cov)), w=res.w_mean, u_mean=res.u_mean, u_sd=res.u_sd,
        sigma_intervals=intervals or None, degenerate=False, warnings=tuple(warnings),
        extra=extra, wall_time=time.perf_counter() - start,
    )
