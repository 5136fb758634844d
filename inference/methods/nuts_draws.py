"""Post-processing of NUTS draws for :mod:`hyperbayes.inference.methods.nuts`.

:func:`without_auxiliary` drops the marginal model's auxiliary variables,
:func:`with_exact_weights` adds one exact draw of w | sigma, delta, y per draw of the scales
(MATH.md section 4), and :func:`with_log_likelihood` adds the pointwise log likelihood and the
observed data, the same for every parametrisation.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from hyperbayes.inference.mathematics.linear_gaussian import posterior_weights
from hyperbayes.models.data import Dataset
from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = ["AUX_NAME", "with_exact_weights", "with_log_likelihood", "without_auxiliary"]

#: Name of the auxiliary N(0, 1) variables of the marginal model (see ``nuts.AUXILIARY_DIMS``).
AUX_NAME = "nuts_auxiliary"


def with_exact_weights(
    tree: xr.DataTree, data: Dataset, noise: float | None, *, seed: int
) -> xr.DataTree:
    """Add ``w`` (chain, draw, feature): one exact draw of w | sigma, delta, y per draw."""
    post = tree["posterior"].to_dataset()
    sigma = np.asarray(post["sigma"].values, dtype=float)
    delta = _noise_draws(post, noise, sigma.shape)
    stats = SufficientStats.from_dataset(data)
    # A stream of its own, so the weights do not reuse the sampler's random numbers.
    rng = np.random.default_rng([seed, 1])
    eps = rng.standard_normal((*sigma.shape, data.d))
    w = np.empty_like(eps)
    for index in np.ndindex(sigma.shape):
        mean, cov = posterior_weights(stats, sigma[index], delta[index])
        w[index] = mean + _cov_sqrt(cov) @ eps[index]
    post["w"] = xr.DataArray(
        w, dims=("chain", "draw", "feature"), coords={"feature": list(data.feature_names)}
    )
    out = tree.copy()
    out["posterior"] = xr.DataTree(post)
    return out


def without_auxiliary(tree: xr.DataTree) -> xr.DataTree:
    """Drop the auxiliary variables (see ``AUXILIARY_DIMS``) and their dimension."""
    post = tree["posterior"].to_dataset()
    dims = set(post[AUX_NAME].dims) - {"chain", "draw"}
    out = tree.copy()
    out["posterior"] = xr.DataTree(post.drop_vars(AUX_NAME).drop_dims(dims, errors="ignore"))
    return out


def _cov_sqrt(cov: NDArray[np.float64]) -> NDArray[np.float64]:
    """A square root L with L L^T = cov: Cholesky, or the symmetric root if round-off bites."""
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        lam, V = np.linalg.eigh(cov)
        return V * np.sqrt(np.clip(lam, 0.0, None))


def _noise_draws(post: xr.Dataset, noise: float | None, shape: tuple[int, ...]) -> NDArray:
    if noise is not None:
        return np.full(shape, float(noise))
    return np.asarray(post["noise"].values, dtype=float)


def with_log_likelihood(tree: xr.DataTree, data: Dataset, noise: float | None) -> xr.DataTree:
    """Add ``log_likelihood/y`` = log N(y_i | x_i . w, delta^2) and ``observed_data/y``.

    One NumPy implementation for every parametrisation (the marginal and sufficient-statistics
    models have no per-observation node for PyMC to evaluate). Computed a chain at a time, so
    the only large array is the result itself (chains x draws x N).
    """
    post = tree["posterior"].to_dataset()
    w = np.asarray(post["w"].values, dtype=float)
    delta = _noise_draws(post, noise, w.shape[:2])
    loglik = np.empty((*w.shape[:2], data.n))
    for c in range(w.shape[0]):
        resid = data.y[None, :] - w[c] @ data.X.T
        d2 = delta[c][:, None] ** 2
        loglik[c] = -0.5 * (np.log(2 * np.pi * d2) + resid**2 / d2)
    obs = {"obs": np.arange(data.n)}
    out = tree.copy()
    out["log_likelihood"] = xr.DataTree(
        xr.Dataset({"y": (("chain", "draw", "obs"), loglik)}, coords={**_sample_coords(post), **obs})
    )
    out["observed_data"] = xr.DataTree(xr.Dataset({"y": ("obs", data.y)}, coords=obs))
    return out


def _sample_coords(post: xr.Dataset) -> Mapping[str, np.ndarray]:
    return {"chain": post["chain"].values, "draw": post["draw"].values}
