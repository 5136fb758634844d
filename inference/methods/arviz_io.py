"""The one place results become ArviZ data (``xarray.DataTree``) and go to or from netCDF."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import arviz_base as azb
import numpy as np
import xarray as xr

__all__ = [
    "PosteriorSummary",
    "draws_to_datatree",
    "load_datatree",
    "pooled_draws",
    "posterior_summary",
    "save_datatree",
]

#: Probability mass of the reported sigma interval (equal-tailed).
INTERVAL_PROB = 0.95


def draws_to_datatree(
    posterior: Mapping[str, np.ndarray],
    *,
    feature_names: Sequence[str],
    sample_stats: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping[str, object] | None = None,
) -> xr.DataTree:
    """Wrap draws shaped (chain, draw, ...) as a DataTree with a ``posterior`` group.

    Variables whose last axis has length D (``w``, ARD ``sigma``) get the ``feature`` dim, so
    they line up with the PyMC samplers' output in every plot.
    """
    d = len(feature_names)
    dims = {
        name: ["feature"]
        for name, value in posterior.items()
        if np.ndim(value) == 3 and np.shape(value)[-1] == d
    }
    groups = {"posterior": dict(posterior)}
    if sample_stats:
        groups["sample_stats"] = dict(sample_stats)
    return azb.from_dict(
        groups,
        coords={"feature": list(feature_names)},
        dims=dims,
        attrs={"/": dict(attrs or {})},
    )


def save_datatree(tree: xr.DataTree, path: str | Path) -> None:
    """Write a DataTree as netCDF (h5netcdf engine; no system netCDF library needed).

    netCDF attributes must be numbers, strings or arrays: booleans become 0/1, None is
    dropped, and anything else (dicts, lists of mixed types) is stored as JSON text. Every
    numeric variable is written zlib-compressed (level :data:`COMPRESSION_LEVEL`, with HDF5's
    byte shuffle), which shrinks draws and pointwise log likelihoods several-fold at a small
    cost in time; reading needs nothing special.
    """
    clean = tree.copy()
    encoding = {}
    for node in clean.subtree:
        node.attrs = {k: _netcdf_attr(v) for k, v in node.attrs.items() if v is not None}
        numeric = {
            name: {"zlib": True, "complevel": COMPRESSION_LEVEL, "shuffle": True}
            for name, var in node.dataset.variables.items()
            if var.dtype.kind in "fiub" and var.ndim > 0
        }
        if numeric:
            encoding[node.path] = numeric
    clean.to_netcdf(path, engine="h5netcdf", encoding=encoding)


#: zlib level of the netCDF files: 4 is within a few percent of 9's size at a fraction of its time.
COMPRESSION_LEVEL = 4


def _netcdf_attr(value):
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, str | int | float | np.number | np.ndarray):
        return value
    if isinstance(value, list | tuple) and value and (
        all(isinstance(v, str) for v in value)
        or all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        return list(value)  # e.g. ArviZ's sample_dims, which it reads back as a list
    return json.dumps(value, default=str)


def load_datatree(path: str | Path) -> xr.DataTree:
    """Read a DataTree written by :func:`save_datatree`, fully into memory."""
    with xr.open_datatree(path, engine="h5netcdf") as tree:
        return tree.load()


def pooled_draws(tree: xr.DataTree, name: str) -> np.ndarray:
    """All posterior draws of ``name`` with chains pooled: shape (chains * draws, ...)."""
    values = np.asarray(tree["posterior"][name].values, dtype=float)
    return values.reshape(-1, *values.shape[2:])


@dataclass(frozen=True)
class PosteriorSummary:
    """Point summaries of posterior draws, as every sampler reports them.

    ``sigma`` is the posterior mean and ``sigma_interval`` the equal-tailed ``INTERVAL_PROB``
    interval (both None with ARD, whose per-feature means are ``sigma_ard``); ``noise`` is the
    posterior mean when the noise was learned, else the known value; ``weights`` the means of w.
    """

    sigma: float | None
    sigma_interval: tuple[float, float] | None
    sigma_ard: list[float] | None
    noise: float
    weights: tuple[float, ...]


def posterior_summary(tree: xr.DataTree, *, ard: bool, noise: float | None) -> PosteriorSummary:
    """Summarise the ``sigma``, ``w`` (and ``noise`` when ``noise`` is None) draws of ``tree``."""
    sigma = pooled_draws(tree, "sigma")
    tail = (1 - INTERVAL_PROB) / 2
    if ard:
        mean, interval, per_feature = None, None, sigma.mean(axis=0).tolist()
    else:
        mean = float(sigma.mean())
        interval = (float(np.quantile(sigma, tail)), float(np.quantile(sigma, 1 - tail)))
        per_feature = None
    return PosteriorSummary(
        sigma=mean,
        sigma_interval=interval,
        sigma_ard=per_feature,
        noise=float(pooled_draws(tree, "noise").mean()) if noise is None else noise,
        weights=tuple(float(x) for x in pooled_draws(tree, "w").mean(axis=0)),
    )
