"""Cross-validated penalties for a family member: one lambda_g per group, learned jointly.

With G groups the penalties lambda_g = delta^2 / sigma_g^2 span a G-dimensional space, where a
grid of held-out errors costs (grid points)^G fits; the held-out error's exact gradient in every
log lambda_g costs one more solve (:mod:`~hyperbayes.inference.mathematics.group_ridge`), so the
score is minimised by a quasi-Newton method instead (MATH.md section 6; Pedregosa 2016).

- ``"kfold"``: each fold's :class:`~hyperbayes.models.family_stats.FamilyStats` is computed once
  from its rows (rows assigned to folds by a seeded permutation); the training statistics of
  a fold are the merge of the others. The score is sum_f SSE_f / sum_i omega_i, the weighted
  mean squared prediction error of held-out rows; a level absent from a fold's training rows
  has u_l = 0, so its rows are predicted by the fixed and dense effects alone (eight schools:
  a held-out school is predicted by mu).
- ``"gcv"``: weighted generalised cross-validation on all rows (no folds).

The optimiser is L-BFGS-B on t_g = log lambda_g over the learned groups, bounded to
[-16, +24] around each group's data scale, started at the REML empirical-Bayes penalties
(delta_EB^2 / sigma_EB^2; the data scale for a group whose EB scale is 0). HOAG's machinery
(approximate inner solves with shrinking tolerances) is not needed here: every inner solve
is a direct factorisation, so the hypergradient is exact to round-off and a standard
quasi-Newton method applies. The score need not be convex in t; a local optimum from the EB
start is what is reported.

The noise: known (or 1 with standard errors), or estimated at the optimum as the weighted
residual variance delta^2 = sum_i omega_i e_i^2 / (N - tr S) with tr S the effective number of
parameters of the penalised fit (the weighted hat matrix's trace). A group with a fixed scale
s_g has lambda_g = delta^2 / s_g^2; with a learned noise that depends on the estimate, so the
search and the estimate alternate until delta settles.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import optimize

from hyperbayes.inference.mathematics.family_likelihood import layout_of
from hyperbayes.inference.mathematics.group_ridge import (
    effective_dof,
    gcv_score,
    group_ridge,
    heldout_error,
    kfold_score,
    kfold_splits,
)
from hyperbayes.inference.mathematics.ridge import MIN_RESIDUAL_DOF
from hyperbayes.inference.methods.cross_validation import fold_indices
from hyperbayes.inference.methods.empirical_bayes_family import (
    empirical_bayes_family,
    reference_scales,
)
from hyperbayes.inference.methods.family_draws import fixed_names
from hyperbayes.inference.methods.family_summary import summary_from_estimates
from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.models.data import DataError
from hyperbayes.models.family_stats import FamilyStats, family_stats
from hyperbayes.models.hyperpriors import OptionError
from hyperbayes.models.specification import ModelSpec

__all__ = ["DEFAULT_FOLDS", "SCHEMES", "FamilyCVResult", "cross_validate_family",
           "fold_statistics", "run_family"]

Scheme = Literal["kfold", "gcv"]
SCHEMES: tuple[str, ...] = ("kfold", "gcv")

#: Five folds: every training set keeps 80% of the rows (and of each level, on average), and
#: the cost after the one pass is five small factorisations per evaluation.
DEFAULT_FOLDS = 5
#: Search range of log lambda_g around the data scale delta_ref^2 / sigma_ref^2: e^-16 below
#: (sigma_g e^8 above its data scale: the group is unpenalised for any practical purpose) to
#: e^24 above (sigma_g e^-12 below it: the group is shrunk away); the same range in sigma as
#: empirical Bayes searches.
_LOG_BELOW, _LOG_ABOVE = 16.0, 24.0
#: A learned lambda more than e^10 from its data scale (sigma e^5 away) is reported as at the
#: limit: the score is flat out there (the group is shrunk away, or left unpenalised), so the
#: optimiser stops wherever the slope falls below its tolerance, up to the search bound.
_AT_LIMIT = 10.0
#: Alternations of the search and the noise estimate (fixed-scale groups, learned noise).
_NOISE_ROUNDS, _NOISE_RTOL = 50, 1e-10


@dataclass(frozen=True)
class FamilyCVResult:
    """Cross-validated penalties and the penalised fit at them.

    Attributes
    ----------
    scheme : {"kfold", "gcv"}
    group_names : tuple of str
    lambdas : ndarray (G,)
        lambda_g per group (learned, or delta^2 / s_g^2 for a fixed scale s_g).
    learned : ndarray of bool (G,)
    sigmas : ndarray (G,)
        delta / sqrt(lambda_g) for learned groups, the fixed scale otherwise.
    noise : float
        delta: known, or estimated (``noise_estimated``) as sum omega e^2 / (N - tr S).
    noise_estimated : bool
    score : float
        The minimised score (weighted mean squared prediction error per unit weight).
    folds : int or None
        Folds used (``min(folds, N)``); None for GCV.
    route : str
        How the score was computed and minimised, and where the search started.
    beta, beta_cov, beta_names
        Fixed effects (intercept first) of the penalised fit on all rows, with covariance
        delta^2 (H^-1)_beta (the posterior given the scales, flat prior on beta).
    w, dense_names
        Dense penalised weights.
    u_mean, u_sd, levels
        Level effects and their posterior standard deviations given the scales.
    effective_dof : float
        tr S, the weighted hat matrix's trace at the optimum.
    converged : bool
    iterations : int
        Quasi-Newton iterations (summed over noise rounds).
    at_bound : tuple of str
        Learned groups whose lambda ended more than e^10 above or below its data scale, where
        the score is flat: shrunk away (sigma ~ 0) or unpenalised; named in ``warnings``.
    warnings : tuple of str
    """

    scheme: str
    group_names: tuple[str, ...]
    lambdas: NDArray[np.float64]
    learned: NDArray[np.bool_]
    sigmas: NDArray[np.float64]
    noise: float
    noise_estimated: bool
    score: float
    folds: int | None
    route: str
    beta: NDArray[np.float64]
    beta_cov: NDArray[np.float64]
    beta_names: tuple[str, ...]
    w: NDArray[np.float64]
    dense_names: tuple[str, ...]
    u_mean: NDArray[np.float64]
    u_sd: NDArray[np.float64]
    levels: tuple[str, ...]
    effective_dof: float
    converged: bool
    iterations: int
    at_bound: tuple[str, ...]
    warnings: tuple[str, ...]

    def scale(self, group: str) -> float:
        """sigma of one group, by name."""
        return float(self.sigmas[self.group_names.index(group)])

    def penalty(self, group: str) -> float:
        """lambda of one group, by name."""
        return float(self.lambdas[self.group_names.index(group)])


def cross_validate_family(
    spec: ModelSpec,
    *,
    scheme: Scheme = "kfold",
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    max_iter: int = 200,
) -> FamilyCVResult:
    """Learn every group's penalty by held-out error (K-fold) or GCV, jointly.

    Parameters
    ----------
    spec : ModelSpec
        The model (see :func:`hyperbayes.models.specification.specify`).
    scheme : {"kfold", "gcv"}, default "kfold"
    folds : int, default 5
        Number of folds (at least 2); ``min(folds, N)`` are used.
    seed : int, default 0
        Seeds the permutation that assigns rows to folds.
    max_iter : int, default 200
        L-BFGS-B iterations per search; hitting it is reported, not raised.

    Returns
    -------
    FamilyCVResult

    Notes
    -----
    See the module notes and :mod:`hyperbayes.inference.mathematics.group_ridge` for the
    score, its hypergradient and the elimination that makes each evaluation
    O(L K^2 + K^3). References: Golub, Heath and Wahba (1979) for GCV; Larsen et al. (1996)
    and Pedregosa (ICML 2016) for gradient-based hyperparameter search.

    Examples
    --------
    >>> from hyperbayes.models.datasets import load_eight_schools
    >>> res = cross_validate_family(load_eight_schools())
    >>> res.folds, res.group_names
    (5, ('tau',))
    """
    if scheme not in SCHEMES:
        raise OptionError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}.")
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 2:
        raise OptionError(f"folds must be a whole number >= 2, got {folds!r}.")
    if max_iter < 1:
        raise OptionError(f"max_iter must be at least 1, got {max_iter}.")
    if spec.n < 2:
        raise DataError(f"cross-validation needs at least 2 rows, got N = {spec.n}.")
    st, lay = family_stats(spec), layout_of(spec)
    k = min(int(folds), spec.n) if scheme == "kfold" else None
    if k is not None:
        splits = kfold_splits(fold_statistics(spec, folds=k, seed=seed))

        def objective(lam):
            return kfold_score(splits, lay, lam)
        where = f"{k}-fold CV from fold statistics"
    else:
        def objective(lam):
            return gcv_score(st, lay, lam)
        where = "weighted GCV on all rows"
    search = _Search(spec, st, objective)
    t, noise, info = search.run(max_iter)
    return _result(spec, st, search, t, noise, info, scheme, k, where)


def fold_statistics(spec: ModelSpec, *, folds: int, seed: int) -> tuple[FamilyStats, ...]:
    """Each fold's statistics, from its rows (a seeded permutation cut into ``folds`` parts)."""
    fixed = spec.fixed_matrix() if spec.fixed else None
    dense = spec.dense_matrix() if spec.dense_columns else None
    codes = spec.factor.codes if spec.factor is not None else None
    L = spec.factor.n_levels if spec.factor is not None else None
    omega, y = spec.obs_weights, spec.data.y
    return tuple(
        FamilyStats.from_arrays(
            y[rows], fixed=None if fixed is None else fixed[rows],
            dense=None if dense is None else dense[rows],
            codes=None if codes is None else codes[rows], n_levels=L,
            weights=None if omega is None else omega[rows], intercept=spec.intercept)
        for rows in fold_indices(spec.n, folds, seed)
    )


def run_family(spec: ModelSpec, options: RunOptions) -> MethodSummary:
    """Cross-validation on a family member as a method (``hyperbayes fit cv`` on a spec):
    5-fold (fewer when N < 5), seeded by ``options.seed``; priors are not used."""
    start = time.perf_counter()
    res = cross_validate_family(spec, seed=options.seed)
    names = res.group_names
    extra = {
        "kind": f"cross-validation ({res.scheme}, L-BFGS-B with the exact hypergradient)",
        "scheme": res.scheme,
        "lambdas": dict(zip(names, res.lambdas.tolist(), strict=True)),
        "cv_score": res.score,
        "folds": res.folds,
        "route": res.route,
        "iterations": res.iterations,
        "converged": res.converged,
        "noise_estimated": res.noise_estimated,
        "effective_dof": res.effective_dof,
        "at_bound": list(res.at_bound),
    }
    return summary_from_estimates(
        "cv", spec, sigmas=dict(zip(names, res.sigmas.tolist(), strict=True)), noise=res.noise,
        beta=res.beta, beta_se=np.sqrt(np.diag(res.beta_cov)), w=res.w, u_mean=res.u_mean,
        u_sd=res.u_sd, degenerate=False, warnings=res.warnings,
        diagnostics={"folds": res.folds, "iterations": res.iterations, "converged": res.converged},
        extra=extra, wall_time=time.perf_counter() - start,
    )


@dataclass
class _Info:
    score: float
    iterations: int
    converged: bool
    start: str
    notes: list[str]


class _Search:
    """The score in t = log lambda over the learned groups, and its minimisation."""

    def __init__(self, spec: ModelSpec, st: FamilyStats, objective):
        self.spec, self.st, self.objective = spec, st, objective
        self.learned = np.array(spec.learned_groups, dtype=np.intp)
        self.fixed_scale = np.array([g.scale if g.scale is not None else np.nan for g in spec.groups])
        ref_noise, refs = reference_scales(spec, st)
        self.t_ref = 2.0 * np.log(ref_noise) - 2.0 * np.log(refs[self.learned])
        self.lo, self.hi = self.t_ref - _LOG_BELOW, self.t_ref + _LOG_ABOVE

    def lambdas(self, t, noise):
        lam = noise**2 / self.fixed_scale**2
        lam[self.learned] = np.exp(t)
        return lam

    def start(self):
        """(t0, noise0, label): the REML EB penalties where the EB scale is interior."""
        eb = empirical_bayes_family(self.spec)
        with np.errstate(divide="ignore"):
            t_eb = 2.0 * np.log(eb.noise) - 2.0 * np.log(eb.sigmas[self.learned])
        ok = np.isfinite(t_eb) & (t_eb > self.lo + 1.0) & (t_eb < self.hi - 1.0)
        label = ("the REML empirical-Bayes penalties" if ok.all() else "the REML empirical-Bayes "
                 "penalties (the data scale for groups whose EB scale is 0)")
        return np.where(ok, t_eb, self.t_ref), eb.noise, label

    def minimise(self, t0, noise, max_iter):
        if not self.learned.size:
            return t0, float(self.objective(self.lambdas(t0, noise)).score[0]), 0, True
        s0 = float(self.objective(self.lambdas(t0, noise)).score[0]) or 1.0

        def fun(t):
            terms = self.objective(self.lambdas(t, noise))
            return terms.score[0] / s0, terms.grad_log_lambda[0, self.learned] / s0

        res = optimize.minimize(fun, t0, jac=True, method="L-BFGS-B",
                                bounds=list(zip(self.lo, self.hi, strict=True)),
                                options={"maxiter": max_iter, "ftol": 1e-15, "gtol": 1e-10})
        return res.x, float(res.fun * s0), int(res.nit), bool(res.success) or _stationary(res)

    def noise_estimate(self, lam):
        fit = group_ridge(self.st, layout_of(self.spec), lam)
        dof = self.st.n_rows - float(effective_dof(fit)[0])
        rss = float(heldout_error(fit, self.st)[0])
        return np.sqrt(max(rss, 0.0) / dof) if dof > MIN_RESIDUAL_DOF else np.nan

    def run(self, max_iter):
        t, noise0, label = self.start()
        known = self.spec.noise is not None
        noise = self.spec.noise if known else noise0
        rounds = 1 if known or not np.isfinite(self.fixed_scale).any() else _NOISE_ROUNDS
        notes, iterations = [], 0
        for _ in range(rounds):
            t, score, nit, converged = self.minimise(t, noise, max_iter)
            iterations += nit
            if rounds == 1:
                break
            new = self.noise_estimate(self.lambdas(t, noise))
            settled = not np.isfinite(new) or abs(new / noise - 1.0) < _NOISE_RTOL
            noise = new if np.isfinite(new) else noise
            if settled:
                break
        else:
            notes.append(f"the noise estimate and the fixed groups' penalties did not settle in "
                         f"{_NOISE_ROUNDS} rounds; the last round is reported.")
        if not known:
            noise = self.noise_estimate(self.lambdas(t, noise))
        return t, noise, _Info(score, iterations, converged, label, notes)


def _stationary(res) -> bool:
    """L-BFGS-B can stop with an 'abnormal' line search at an optimum resolved to round-off;
    accept that when the projected gradient is negligible."""
    return bool(np.max(np.abs(res.jac), initial=0.0) < 1e-7)


def _result(spec, st, search: _Search, t, noise, info: _Info, scheme, k, where) -> FamilyCVResult:
    lam = search.lambdas(t, noise if np.isfinite(noise) else 1.0)
    fit = group_ridge(st, layout_of(spec), lam)
    notes = list(info.notes)
    learned = np.array([g.learned for g in spec.groups])
    sigmas = np.where(learned, noise / np.sqrt(lam), search.fixed_scale)
    names = tuple(g.name for g in spec.groups)
    at_bound = []
    for j, g in enumerate(search.learned):
        offset = t[j] - search.t_ref[j]
        if abs(offset) > _AT_LIMIT:
            at_bound.append(names[g])
            notes.append(
                f"the {scheme} score of group {names[g]!r} keeps falling (or is flat) toward "
                + ("large lambda: the group is shrunk away (sigma -> 0)" if offset > 0
                   else "small lambda: the group is left unpenalised (sigma -> infinity)")
                + f"; lambda = {lam[g]:.3g} (e^{offset:.0f} times its data scale) is where the "
                "search stopped, not an interior optimum.")
    if not info.converged:
        notes.append("L-BFGS-B stopped before converging; the penalties are not reliable: raise "
                     "max_iter.")
    if spec.noise is None:
        notes.append(f"the noise scale was estimated: delta = {noise:.4g} is the weighted residual "
                     "standard deviation of the penalised fit with N - tr S degrees of freedom, so "
                     "every sigma_g = delta / sqrt(lambda_g) carries that estimate's error.")
    route = (f"{where}; L-BFGS-B on log lambda with the exact hypergradient, from {info.start}"
             if search.learned.size else f"{where}; no learned group (nothing to search)")
    return FamilyCVResult(
        scheme=scheme, group_names=names, lambdas=lam, learned=learned, sigmas=sigmas,
        noise=float(noise), noise_estimated=spec.noise is None, score=info.score, folds=k,
        route=route, beta=fit.beta[0], beta_cov=fit.coef_cov(noise)[0][:spec.n_fixed, :spec.n_fixed],
        beta_names=fixed_names(spec), w=fit.w[0], dense_names=spec.dense_columns,
        u_mean=fit.u[0], u_sd=np.sqrt(fit.u_var(noise)[0]),
        levels=spec.factor.levels if spec.factor is not None else (),
        effective_dof=float(effective_dof(fit)[0]), converged=info.converged,
        iterations=info.iterations, at_bound=tuple(at_bound), warnings=tuple(notes),
    )

