"""Shipped random-effects data sets: the eight schools and the BCG vaccine trials.

Both are public and small, shipped inside the package (``models/data/*.csv``; sources below and
in ``../shared/data/README.md``). The loaders return a ready :class:`ModelSpec` (known standard
errors, an intercept, one random-intercept group ``tau`` with one level per study); the
``*_table`` functions return the raw columns.
"""

from __future__ import annotations

import csv
from importlib import resources

import numpy as np
from numpy.typing import NDArray

from hyperbayes.models.data import Dataset
from hyperbayes.models.hyperpriors import Hyperprior
from hyperbayes.models.specification import Group, ModelSpec, specify

__all__ = ["bcg_table", "eight_schools_table", "load_bcg", "load_eight_schools"]


def _read(name: str) -> dict[str, list[str]]:
    text = resources.files("hyperbayes.models").joinpath(f"data/{name}").read_text()
    rows = list(csv.reader(text.splitlines()))
    return {h: [r[j] for r in rows[1:]] for j, h in enumerate(rows[0])}


def eight_schools_table() -> dict[str, NDArray]:
    """The eight schools of Rubin (1981), as in Gelman et al., *Bayesian Data Analysis*
    (3rd ed.), Table 5.2: ``school`` (A-H), estimated coaching effect ``y``, its standard
    error ``s``."""
    raw = _read("eight_schools.csv")
    return {"school": np.array(raw["school"]), "y": np.array(raw["y"], float),
            "s": np.array(raw["s"], float)}


def load_eight_schools(*, tau_prior: Hyperprior | str | None = None) -> ModelSpec:
    """y_j ~ N(theta_j, s_j^2) with s_j known, theta_j = mu + u_j, u_j ~ N(0, tau^2).

    F = 1 (mu); the group ``tau`` is a random intercept over the schools (one row each);
    the noise scale is fixed at 1 with omega_j = 1 / s_j^2 (MATH.md section 7).
    """
    t = eight_schools_table()
    data = Dataset.from_arrays(t["s"][:, None], t["y"], feature_names=["s"], target_name="y")
    return specify(data, standard_errors="s", categorical={"school": t["school"]},
                   groups=[Group("tau", factor="school", prior=tau_prior)])


def bcg_table() -> dict[str, NDArray]:
    """The BCG vaccine trials of Colditz et al. (1994, JAMA 271:698): the ``dat.bcg`` table of
    the metadat R package, with the log risk ratio ``yi`` and its sampling variance ``vi``.

    yi = log((tpos / (tpos + tneg)) / (cpos / (cpos + cneg))),
    vi = 1/tpos - 1/(tpos + tneg) + 1/cpos - 1/(cpos + cneg).
    """
    raw = _read("bcg.csv")
    out: dict[str, NDArray] = {k: np.array(raw[k]) for k in ("author", "alloc")}
    for k in ("trial", "year", "tpos", "tneg", "cpos", "cneg", "ablat"):
        out[k] = np.array(raw[k], dtype=float)
    tp, tn, cp, cn = out["tpos"], out["tneg"], out["cpos"], out["cneg"]
    out["yi"] = np.log((tp / (tp + tn)) / (cp / (cp + cn)))
    out["vi"] = 1 / tp - 1 / (tp + tn) + 1 / cp - 1 / (cp + cn)
    return out


def load_bcg(*, latitude: bool = False, tau_prior: Hyperprior | str | None = None) -> ModelSpec:
    """Random-effects meta-analysis of the 13 BCG trials on the log risk ratio.

    y_i = log RR_i with known variance v_i; F = 1, plus absolute latitude ``ablat`` as a
    covariate with ``latitude=True`` (a meta-regression); group ``tau`` is a random intercept
    per trial.
    """
    t = bcg_table()
    cols, names = [np.sqrt(t["vi"])], ["se"]
    if latitude:
        cols.append(t["ablat"])
        names.append("ablat")
    data = Dataset.from_arrays(np.column_stack(cols), t["yi"], feature_names=names,
                               target_name="log_rr")
    trial = np.array([f"{int(k)} {a}" for k, a in zip(t["trial"], t["author"], strict=True)])
    return specify(data, standard_errors="se", fixed=("ablat",) if latitude else (),
                   categorical={"trial": trial}, groups=[Group("tau", factor="trial", prior=tau_prior)])
