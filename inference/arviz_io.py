"""The one place results become ArviZ data (``xarray.DataTree``) and go to or from netCDF."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import arviz_base as azb
import numpy as np
import xarray as xr

__all__ = ["draws_to_datatree", "load_datatree", "pooled_draws", "save_datatree"]


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
    dropped, and anything else (dicts, lists of mixed types) is stored as JSON text.
    """
    clean = tree.copy()
    for node in clean.subtree:
        node.attrs = {k: _netcdf_attr(v) for k, v in node.attrs.items() if v is not None}
    clean.to_netcdf(path, engine="h5netcdf")


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
