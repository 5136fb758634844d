"""The exact posterior of a family member with at most two unknown scales: the oracle.

Unknown scales are the learned groups' sigma_g (each with a proper hyperprior) and delta when
the noise is learned; with at most two of them the posterior of the scales is a one- or
two-dimensional integral of the restricted likelihood (beta integrated out under its flat
prior, MATH.md section 7) times the hyperpriors, done by composite Simpson quadrature in the
log scales. Given the scales, beta, w and the random intercepts are Gaussian, so posterior
moments are mixtures over the quadrature nodes and draws are exact: scales from the node
measure (jittered within a cell), then [beta, w] jointly, then each level's u_l, which are
independent given [beta, w] (the indicator block of the precision is diagonal).

The evidence uses the flat prior on beta with Lebesgue measure (the REML constant of section
7); compare evidences only between models with the same fixed effects F.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp

from hyperbayes.inference.mathematics.family_likelihood import (
    family_log_ml,
    family_terms,
    layout_of,
)
from hyperbayes.inference.methods.empirical_bayes_family import reference_scales
from hyperbayes.inference.methods.exact import QuadratureWarning
from hyperbayes.inference.methods.family_draws import (
    draw_coefficients,
    family_datatree,
    fixed_names,
)
from hyperbayes.inference.methods.family_summary import evidence_note, summary_from_estimates
from hyperbayes.inference.methods.results import MethodSummary
from hyperbayes.models.family_stats import FamilyStats, family_stats
from hyperbayes.models.specification import ModelSpec

__all__ = ["FamilyPosterior", "exact_family_posterior"]

_TAIL = 60.0  # nats below the peak treated as zero mass
_MAX_DOUBLINGS = 6
_CHUNK_FLOATS = 4_000_000  # bounds the batch of scale settings evaluated at once


@dataclass(frozen=True, eq=False)
class FamilyPosterior:
    """The exact posterior over the unknown scales and the coefficients.

    Attributes
    ----------
    log_evidence : float
        log p(y) (flat prior on beta, Lebesgue measure).
    scale_names : tuple of str
        The unknown scales: learned group names, then ``"noise"`` when learned.
    scale_mean, scale_sd : ndarray
    beta_mean, beta_cov, beta_names : posterior of the fixed effects (intercept first)
    w_mean, w_cov : posterior of the dense penalised weights
    u_mean, u_sd, levels : posterior of each level's random intercept
    quadrature_error : float
        Change of the log evidence at the last grid refinement.
    """

    log_evidence: float
    scale_names: tuple[str, ...]
    scale_mean: NDArray[np.float64]
    scale_sd: NDArray[np.float64]
    beta_mean: NDArray[np.float64]
    beta_cov: NDArray[np.float64]
    beta_names: tuple[str, ...]
    w_mean: NDArray[np.float64]
    w_cov: NDArray[np.float64]
    u_mean: NDArray[np.float64]
    u_sd: NDArray[np.float64]
    levels: tuple[str, ...]
    quadrature_error: float
    _log_scales: NDArray[np.float64] = field(repr=False)  # (M, k) nodes
    _weights: NDArray[np.float64] = field(repr=False)
    _steps: NDArray[np.float64] = field(repr=False)
    _log_densities: tuple = field(repr=False)  # per scale: (log-scale nodes, density of log s)
    _spec: ModelSpec = field(repr=False)
    _stats: FamilyStats = field(repr=False)

    def scale_quantile(self, name: str, q: ArrayLike) -> NDArray[np.float64]:
        """Posterior quantiles of one unknown scale (by name)."""
        x = self._log_scales[:, self.scale_names.index(name)]
        order = np.argsort(x, kind="stable")
        cdf = np.cumsum(self._weights[order])
        cdf = (cdf - 0.5 * self._weights[order]) / cdf[-1]
        return np.exp(np.interp(np.asarray(q, float), cdf, x[order]))

    def scale_density(self, name: str) -> tuple[NDArray, NDArray]:
        """(grid, density) of one scale's marginal posterior at the quadrature nodes (plots).

        The density of log s at a node is its integrand divided by the evidence, integrated
        over the other scale (if any) with that axis's Simpson weights; divided by s it is the
        density of s. No binning: the nodes' own weights alternate (Simpson's 4, 2, 4), which a
        histogram would show as ripples.
        """
        x, dens_log = self._log_densities[self.scale_names.index(name)]
        return np.exp(x), dens_log / np.exp(x)

    def sample(self, n: int, *, seed: int | np.random.Generator) -> dict[str, NDArray]:
        """Exact i.i.d. draws of the unknown scales, beta, w and u (one row per draw)."""
        rng = np.random.default_rng(seed)
        idx = rng.choice(self._weights.size, size=n, p=self._weights)
        logs = self._log_scales[idx] + rng.uniform(-0.5, 0.5, (n, self._steps.size)) * self._steps
        sig, noise = _unpack(self._spec, logs)
        out = {name: np.exp(logs[:, j]) for j, name in enumerate(self.scale_names)}
        return out | draw_coefficients(self._stats, layout_of(self._spec), sig, noise, rng)


def exact_family_posterior(spec: ModelSpec, *, tol: float = 1e-8) -> FamilyPosterior:
    """Compute the exact posterior by quadrature over at most two unknown scales.

    Parameters
    ----------
    spec : ModelSpec
        Every learned group needs a proper hyperprior (``Group(prior=...)``), and a learned
        noise needs ``noise_prior``.
    tol : float
        Grid refinement stops when the log evidence changes by less than this.

    Raises
    ------
    ValueError
        More than two unknown scales, or a missing or improper hyperprior.
    """
    names, priors = _unknowns(spec)
    st, lay = family_stats(spec), layout_of(spec)

    def logf(U):
        sig, noise = _unpack(spec, U)
        out = np.empty(U.shape[0])
        for sl in _chunks(U.shape[0], st):
            out[sl] = family_log_ml(st, lay, sig[sl], noise[sl])
        for j, hp in enumerate(priors):
            out += hp.logpdf(np.exp(U[:, j])) + U[:, j]
        return np.where(np.isnan(out), -np.inf, out)

    ref_noise, ref_groups = reference_scales(spec, st)
    ref = np.log(np.r_[ref_groups[list(spec.learned_groups)], [ref_noise] if spec.noise is None else []])
    box = _find_box(logf, ref, priors)
    U, logw, log_z, err, steps, axis_w = _simpson(logf, box, tol)
    weights = np.exp(logw - log_z)
    densities = tuple(_marginal_density(U[:, j], weights / axis_w[:, j]) for j in range(len(names)))
    keep = weights > weights.max() * 1e-18  # every node counts above; the moments need these
    U, weights = U[keep], weights[keep] / weights[keep].sum()
    return _assemble(spec, st, names, U, weights, log_z, err, steps, densities)


def _marginal_density(x, values):
    """Sum ``values`` over the nodes that share each value of ``x`` (the other axis's Simpson
    weights are in ``values``): the marginal density of that log scale at its nodes."""
    nodes, inverse = np.unique(x, return_inverse=True)
    return nodes, np.bincount(inverse, weights=values)


def _unknowns(spec: ModelSpec):
    names, priors = [], []
    for k in spec.learned_groups:
        g = spec.groups[k]
        if g.prior is None:
            raise ValueError(f"group {g.name!r} is learned but has no hyperprior; give it "
                             "prior=... (e.g. 'halfnormal:1') or a fixed scale.")
        g.prior.require_proper(f"the exact posterior (group {g.name!r})")
        names.append(g.name)
        priors.append(g.prior)
    if spec.noise is None:
        if spec.noise_prior is None:
            raise ValueError("the noise is learned but has no hyperprior; pass noise_prior=... "
                             "to specify(), or a known noise.")
        spec.noise_prior.require_proper("the exact posterior (the noise)")
        names.append("noise")
        priors.append(spec.noise_prior)
    if not 1 <= len(names) <= 2:
        raise ValueError(
            f"the exact oracle integrates over at most two unknown scales; this model has "
            f"{len(names)} ({names}); fix some scales (Group(scale=...), noise=...) or use a sampler."
        )
    return tuple(names), priors


def _unpack(spec: ModelSpec, U):
    learned = list(spec.learned_groups)
    sig = np.tile([g.scale if g.scale is not None else 0.0 for g in spec.groups], (U.shape[0], 1))
    sig[:, learned] = np.exp(U[:, : len(learned)])
    noise = np.exp(U[:, -1]) if spec.noise is None else np.full(U.shape[0], spec.noise)
    return sig, noise


def _chunks(m: int, st: FamilyStats):
    size = max(1, _CHUNK_FLOATS // (st.n_levels * st.k + st.k**2 * 4))
    return [slice(a, a + size) for a in range(0, m, size)]


def _grid(box, m):
    axes = [np.linspace(lo, hi, m) for lo, hi in box]
    mesh = np.meshgrid(*axes, indexing="ij")
    return axes, np.column_stack([x.ravel() for x in mesh])


def _find_box(logf, ref, priors):
    """A box in the log scales outside which the integrand is _TAIL nats below its peak."""
    support = [tuple(np.log(np.clip(hp.support(), 1e-300, None)) + [1e-12, -1e-12]) for hp in priors]
    box = [(max(r - 30.0, s[0]), min(r + 12.0, s[1])) for r, s in zip(ref, support, strict=True)]
    for _ in range(30):
        m = 161 if len(box) == 2 else 2001
        axes, U = _grid(box, m)
        f = logf(U).reshape((m,) * len(box))
        peak = f.max()
        if not np.isfinite(peak):
            raise FloatingPointError("the posterior has no mass on the search grid.")
        inside = np.argwhere(f > peak - _TAIL)
        new, grew = [], False
        for j, ax in enumerate(axes):
            i0, i1 = inside[:, j].min(), inside[:, j].max()
            span = ax[-1] - ax[0]
            lo = ax[max(i0 - 1, 0)] if i0 > 0 or ax[0] <= support[j][0] else max(ax[0] - span, support[j][0])
            hi = ax[min(i1 + 1, m - 1)] if i1 < m - 1 or ax[-1] >= support[j][1] else min(ax[-1] + span, support[j][1])
            grew |= (i0 == 0 and ax[0] > support[j][0]) or (i1 == m - 1 and ax[-1] < support[j][1])
            new.append((lo, hi))
        shrunk = any((hi - lo) < 0.5 * (b[1] - b[0]) for (lo, hi), b in zip(new, box, strict=True))
        box = new
        if not grew and not shrunk:
            return box
    warnings.warn("the posterior mass reaches the edge of the search window; the evidence may "
                  "be inaccurate.", QuadratureWarning, stacklevel=3)
    return box


def _simpson_weights(m, h):
    w = np.ones(m)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return w * h / 3.0


def _simpson(logf, box, tol):
    prev, m, err = None, 129 if len(box) == 2 else 257, np.inf
    for _ in range(_MAX_DOUBLINGS):
        axes, U = _grid(box, m)
        lw = [np.log(_simpson_weights(m, ax[1] - ax[0])) for ax in axes]
        logw = logf(U) + (np.add.outer(*lw).ravel() if len(lw) == 2 else lw[0])
        log_z = float(logsumexp(logw))
        if prev is not None:
            err = abs(log_z - prev)
            if err < tol:
                break
        prev, m = log_z, 2 * m - 1
    else:
        warnings.warn(f"quadrature stopped with a last change of {err:.2g} nats (requested "
                      f"{tol:.1g}).", QuadratureWarning, stacklevel=3)
    steps = np.array([ax[1] - ax[0] for ax in axes])
    axis_w = np.exp(np.column_stack([x.ravel() for x in np.meshgrid(*lw, indexing="ij")]))
    return U, logw, log_z, err, steps, axis_w


def _assemble(spec, st, names, U, p, log_z, err, steps, densities) -> FamilyPosterior:
    lay = layout_of(spec)
    sig, noise = _unpack(spec, U)
    S = np.exp(U)
    mean_s = p @ S
    sd_s = np.sqrt(np.maximum(p @ S**2 - mean_s**2, 0.0))
    acc = None
    for sl in _chunks(U.shape[0], st):
        t = family_terms(st, lay, sig[sl], noise[sl])
        ps = p[sl]
        coef = np.column_stack([t.beta_mean, t.w_mean])
        part = [ps @ coef, np.einsum("b,bi,bj->ij", ps, coef, coef) + np.einsum("b,bij->ij", ps, t.coef_cov),
                ps @ t.u_mean, ps @ (t.u_var + t.u_mean**2)]
        acc = part if acc is None else [a + b for a, b in zip(acc, part, strict=True)]
    mean, second, um, u2 = acc
    cov = second - np.outer(mean, mean)
    P = spec.n_fixed
    return FamilyPosterior(
        log_evidence=log_z, scale_names=names, scale_mean=mean_s, scale_sd=sd_s,
        beta_mean=mean[:P], beta_cov=cov[:P, :P],
        beta_names=fixed_names(spec),
        w_mean=mean[P:], w_cov=cov[P:, P:], u_mean=um, u_sd=np.sqrt(np.maximum(u2 - um**2, 0.0)),
        levels=spec.factor.levels if spec.factor is not None else (),
        quadrature_error=float(err), _log_scales=U, _weights=p, _steps=steps, _log_densities=densities, _spec=spec, _stats=st,
    )



def run_family(spec: ModelSpec, options) -> MethodSummary:
    """The exact oracle of a family member as a method (``hyperbayes fit exact`` on a spec)."""
    start = time.perf_counter()
    post = exact_family_posterior(spec)
    names = post.scale_names
    learned = {n: float(m) for n, m in zip(names, post.scale_mean, strict=True) if n != "noise"}
    sigmas = {g.name: learned.get(g.name, g.scale) for g in spec.groups}
    intervals = {n: tuple(float(x) for x in post.scale_quantile(n, [0.025, 0.975])) for n in learned}
    n = options.draws or 4000
    draws = post.sample(n, seed=options.seed)
    scales = {name: draws[name] for name in names}
    tree = family_datatree(spec, scales, draws, chains=1, attrs={"method": "exact"})
    densities = {}
    for name in names:
        grid, dens = post.scale_density(name)
        densities[name] = {"log_scale": np.log(grid).tolist(), "density": (dens * grid).tolist()}
    extra = {
        "scale_sd": dict(zip(names, post.scale_sd.tolist(), strict=True)),
        "quadrature_error": post.quadrature_error,
        "log_scale_density": densities,
        "evidence_note": evidence_note(spec, flat="p(y) under a flat prior on the fixed effects "
                                       "(Lebesgue measure): compare evidences only between "
                                       "models with the same fixed effects."),
    }
    if spec.noise is None:
        j = names.index("noise")
        extra["noise_interval"] = list(post.scale_quantile("noise", [0.025, 0.975]))
        noise = float(post.scale_mean[j])
    else:
        noise = spec.noise
    return summary_from_estimates(
        "exact", spec, sigmas=sigmas, noise=noise, beta=post.beta_mean,
        beta_se=np.sqrt(np.diag(post.beta_cov)), w=post.w_mean, w_se=np.sqrt(np.diag(post.w_cov)),
        u_mean=post.u_mean, u_sd=post.u_sd, sigma_intervals=intervals, log_evidence=post.log_evidence,
        extra=extra, draws=tree, wall_time=time.perf_counter() - start,
    )
