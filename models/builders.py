"""PyMC models of Bayesian linear regression with a hyperprior on the prior scale.

Two builders, one model (MATH.md sections 1, 3 and 5):

* :func:`hierarchical_regression`: sigma ~ hyperprior, w ~ N(0, sigma^2), y ~ N(X w, delta^2),
  for joint MAP, NUTS and SMC;
* :func:`marginal_regression`: the same with w integrated out, for empirical Bayes and evidence.

Coordinates are named after the features, so ArviZ output is labelled.

Both also accept a :class:`~hyperbayes.models.specification.ModelSpec` (the family of MATH.md
section 7: fixed effects, groups of scales, a random intercept, weights) in place of the
Dataset; they then build :func:`~hyperbayes.models.family_builders.hierarchical_family` and
:func:`~hyperbayes.models.family_builders.marginal_family`, with the priors and the noise taken
from the specification (``parametrization`` passes through, ``hyperprior``, ``noise``,
``likelihood`` and ``ard`` do not apply).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from hyperbayes.models.data import Dataset
from hyperbayes.models.hyperpriors import Hyperprior, OptionError, parse_hyperprior
from hyperbayes.models.specification import ModelSpec
from hyperbayes.models.sufficient_stats import SufficientStats, log_marginal_likelihood_eigen

__all__ = ["hierarchical_regression", "marginal_regression", "prior_variable"]

Parametrization = Literal["noncentered", "centered"]
Likelihood = Literal["observations", "sufficient"]


def hierarchical_regression(
    data: Dataset | ModelSpec,
    *,
    hyperprior: Hyperprior | str | None = None,
    noise: float | Hyperprior | str | None = None,
    parametrization: Parametrization = "noncentered",
    likelihood: Likelihood = "observations",
    ard: bool = False,
) -> pm.Model:
    """The full hierarchical model: sigma ~ hyperprior, w | sigma ~ N(0, sigma^2 I), y | w.

    Parameters
    ----------
    data : Dataset or ModelSpec
        The (already centred, if an intercept is wanted) data; or a model specification, which
        builds :func:`~hyperbayes.models.family_builders.hierarchical_family` (its priors and
        noise come from the specification; ``parametrization`` passes through, a mapping
        group name -> parametrization included; ``likelihood`` and ``ard`` do not apply).
    hyperprior : Hyperprior or str
        Prior on sigma, e.g. ``"halfnormal:1"`` (required with a Dataset).
    noise : float, Hyperprior or str
        The noise scale delta: a positive number when known, or a hyperprior (``"halfnormal:1"``)
        to learn it as the random variable ``noise`` (required with a Dataset).
    parametrization : {"noncentered", "centered"}
        ``"centered"`` draws w ~ N(0, sigma^2) directly (Neal's funnel, MATH.md section 5);
        ``"noncentered"`` draws z ~ N(0, 1) and sets w = sigma z.
    likelihood : {"observations", "sufficient"}
        ``"observations"``: an observed ``y`` node, one term per row (pointwise log likelihood
        available for LOO). ``"sufficient"``: the same log density through (G, b, v, N) as a
        Potential ``y_loglik``, so a gradient costs O(D^2) whatever N is.
    ard : bool
        One sigma per feature (automatic relevance determination) instead of a shared one.

    Returns
    -------
    pymc.Model
        Free variables ``sigma`` (or ``sigma_sq`` for an InverseGamma prior), ``w`` or ``z``,
        and ``noise`` when learned; ``w`` is always present (a Deterministic when non-centred).
    """
    if isinstance(data, ModelSpec):
        from hyperbayes.models.family_builders import hierarchical_family  # imports this module

        return hierarchical_family(data, parametrization=parametrization)
    hp = parse_hyperprior(_required(hyperprior, "hyperprior"))
    noise = _required(noise, "noise")
    coords = {"feature": list(data.feature_names)}
    if likelihood == "observations":  # N labels only where there are N terms (N may be 10^8)
        coords["obs"] = np.arange(data.n)
    with pm.Model(coords=coords) as model:
        sigma = prior_variable(hp, "sigma", dims="feature" if ard else None)
        delta = _noise(noise)
        if parametrization == "centered":
            w = pm.Normal("w", mu=0.0, sigma=sigma, dims="feature")
        elif parametrization == "noncentered":
            z = pm.Normal("z", mu=0.0, sigma=1.0, dims="feature")
            w = pm.Deterministic("w", sigma * z, dims="feature")
        else:
            raise ValueError(
                f"parametrization must be 'noncentered' or 'centered', got {parametrization!r}."
            )
        if likelihood == "observations":
            pm.Normal("y", mu=pt.dot(data.X, w), sigma=delta, observed=data.y, dims="obs")
        elif likelihood == "sufficient":
            st = SufficientStats.from_dataset(data)
            rss = st.v - 2 * pt.dot(w, st.b) + pt.dot(w, pt.dot(st.G, w))
            pm.Potential("y_loglik", -0.5 * (st.n * pt.log(2 * np.pi * delta**2) + rss / delta**2))
        else:
            raise ValueError(
                f"likelihood must be 'observations' or 'sufficient', got {likelihood!r}."
            )
    return model


def marginal_regression(
    data: Dataset | ModelSpec,
    *,
    hyperprior: Hyperprior | str | None = None,
    noise: float | Hyperprior | str | None = None,
    ard: bool = False,
) -> pm.Model:
    """The hierarchical model with w integrated out: y | sigma, delta ~ N(0, sigma^2 X X^T + delta^2 I).

    The marginal likelihood enters as the Potential ``y_marginal``, evaluated in O(D) from one
    eigendecomposition of X^T X (O(D^3) with Cholesky for ARD), never as an N x N covariance.
    Valid for N < D. Maximising it over sigma (``pm.find_MAP`` with a ``flat`` hyperprior) is
    empirical Bayes; sampling it is the collapsed ("marginal") NUTS of the inference package.

    Parameters are as in :func:`hierarchical_regression`. With a ModelSpec this builds
    :func:`~hyperbayes.models.family_builders.marginal_family` (the restricted likelihood,
    beta integrated out; the priors and noise from the specification).
    """
    if isinstance(data, ModelSpec):
        from hyperbayes.models.family_builders import marginal_family  # imports this module

        return marginal_family(data)
    hp = parse_hyperprior(_required(hyperprior, "hyperprior"))
    noise = _required(noise, "noise")
    st = SufficientStats.from_dataset(data)
    with pm.Model(coords={"feature": list(data.feature_names)}) as model:
        sigma = prior_variable(hp, "sigma", dims="feature" if ard else None)
        delta = _noise(noise)
        if ard:
            loglik = _ard_log_marginal(st, sigma**2, delta**2)
        else:
            e = st.eigen
            loglik = log_marginal_likelihood_eigen(
                e.lam, e.bt, st.v, st.n, sigma**2, pt.as_tensor(delta) ** 2, xp=pt
            )
        pm.Potential("y_marginal", loglik)
    return model


def _required(value, name: str):
    """A Dataset model needs ``hyperprior`` and ``noise`` (a ModelSpec carries its own)."""
    if value is None:
        raise OptionError(
            f"{name}= is required with a Dataset (e.g. {name}='halfnormal:1'); a ModelSpec "
            "carries its own priors and noise."
        )
    return value


def _noise(noise: float | Hyperprior | str):
    """The noise scale: a constant, or the random variable ``noise`` with the given prior."""
    if isinstance(noise, Hyperprior | str):
        return prior_variable(parse_hyperprior(noise), "noise")
    noise = float(noise)
    if not (np.isfinite(noise) and noise > 0):
        raise ValueError(f"noise must be a positive number, got {noise}; or pass a hyperprior.")
    return np.float64(noise)  # not a Python float: PyTensor would make 0.5 a float32 constant


def _ard_log_marginal(st: SufficientStats, sigma2, noise2):
    """log p(y | sigma_1..D, delta) by Woodbury with A = G / delta^2 + diag(1 / sigma_j^2)."""
    A = st.G / noise2 + pt.diag(1.0 / sigma2)
    L = pt.linalg.cholesky(A)
    logdet_A = 2 * pt.sum(pt.log(pt.diag(L)))
    u = pt.linalg.solve_triangular(L, st.b, lower=True)
    quad = st.v / noise2 - pt.sum(u**2) / noise2**2
    return -0.5 * (st.n * pt.log(2 * np.pi * noise2) + pt.sum(pt.log(sigma2)) + logdet_A + quad)


def prior_variable(hyperprior: Hyperprior, name: str, *, dims: str | None = None, shape=None):
    """Add ``hyperprior`` as the random variable ``name`` to the current PyMC model.

    The variable is the *scale* in every case: for ``invgamma`` the variance is the free
    variable ``name + "_sq"`` and ``name`` is its square root (a Deterministic), so that
    the joint density seen by ``find_MAP`` is the one the prior is stated in.
    """
    kw = {"dims": dims} if dims is not None else {"shape": shape} if shape is not None else {}
    # NumPy float64, not Python floats: PyTensor turns a Python float that is exact in
    # float32 (2.0, 0.5) into a float32 constant, and log(scale) would lose ~1e-9.
    p = tuple(np.float64(x) for x in hyperprior.params)
    match hyperprior.kind:
        case "halfnormal":
            return pm.HalfNormal(name, sigma=p[0], **kw)
        case "halfcauchy":
            return pm.HalfCauchy(name, beta=p[0], **kw)
        case "exponential":
            return pm.Exponential(name, scale=p[0], **kw)
        case "invgamma":
            a, b = p
            variance = pm.InverseGamma(f"{name}_sq", alpha=a, beta=b, **kw)
            return pm.Deterministic(name, pt.sqrt(variance), **({"dims": dims} if dims else {}))
        case "loguniform":
            lo, hi = p
            return pm.CustomDist(
                name,
                lo,
                hi,
                dist=_loguniform_dist,
                transform=pm.distributions.transforms.Interval(lo, hi),
                **kw,
            )
        case "flat":
            return pm.HalfFlat(name, **kw)
    raise AssertionError(hyperprior.kind)  # pragma: no cover


def _loguniform_dist(lower, upper, size):
    # exp of a uniform on [log lower, log upper]: PyMC derives the density 1/(s log(U/L)).
    return pt.exp(pm.Uniform.dist(pt.log(lower), pt.log(upper), size=size))
