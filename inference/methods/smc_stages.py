"""PyMC's per-stage SMC statistics, read whatever their layout; per-chain evidences pooled and
judged.

Kept apart from :mod:`hyperbayes.inference.methods.smc` (which runs the sampler) because these
are pure functions of PyMC's output: they are tested on hand-built arrays and reused on netCDF
round trips.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp

__all__ = [
    "DISAGREEMENT_NATS",
    "DRAWS_PER_DIMENSION",
    "SmcEvidenceWarning",
    "pool_log_evidence",
    "read_stage_stats",
    "trust_messages",
    "with_clean_stage_stats",
]

#: Fewer particles per free parameter than this and the estimate is flagged. A rule of thumb,
#: not a sharp edge: the kernels fit a covariance (p(p+1)/2 entries) to the particles, and the
#: chains' estimates scatter by several hundredths of a nat even at D = 1 with 300 particles.
DRAWS_PER_DIMENSION = 100
#: Chains whose log evidences have a standard deviation above this disagree more than SMC's
#: Monte Carlo error should allow at a trustworthy size; the delta-method standard error then
#: understates the error too, because the probability-space mean is ruled by the largest chain.
DISAGREEMENT_NATS = 0.5


class SmcEvidenceWarning(UserWarning):
    """The SMC evidence estimate may be untrustworthy (the message says why and what to do)."""


def pool_log_evidence(chain_log_evidence: ArrayLike, *, warn: bool = True) -> tuple[float, float]:
    """Pool per-chain log evidence estimates: (log of their mean in probability space, SE).

    Parameters
    ----------
    chain_log_evidence : array_like
        log hat Z_c of C independent runs.
    warn : bool
        Warn (SmcEvidenceWarning) when C = 1 and the standard error is nan.

    Returns
    -------
    log_evidence, se : float
        ``logsumexp(l) - log C`` and its delta-method standard error (nan when C < 2).

    Notes
    -----
    Each hat Z_c estimates p(y), not log p(y), so the mean is taken in probability space:
    bar Z = C^-1 sum_c hat Z_c is unbiased for Z whenever each hat Z_c is. Its log is biased
    low (Jensen) by about var(bar Z) / (2 Z^2) = se^2 / 2, which is negligible once se is
    below ~0.3 nats. The alternative, the mean of the logs, is biased low by var(log hat Z_c)/2
    -- C times more -- and the bias does not shrink with more chains.

    The standard error is the delta method on bar Z with the between-chain variance:
    with r_c = hat Z_c / bar Z (mean 1), se(log bar Z) = sd(bar Z) / bar Z =
    sqrt(sum_c (r_c - 1)^2 / (C (C - 1))). It assumes the chains are independent and their
    spread is representative; with few chains and heavy tails (chains disagreeing by more
    than ~0.5 nats) it understates the error, which :func:`smc_evidence` flags.
    """
    logs = np.asarray(chain_log_evidence, dtype=float).ravel()
    if logs.size == 0 or not np.all(np.isfinite(logs)):
        raise ValueError(f"the chain log evidences must be finite numbers, got {logs.tolist()}.")
    c = logs.size
    log_mean = float(logsumexp(logs) - math.log(c))
    if c < 2:
        if warn:
            warnings.warn(
                "one chain gives no standard error of the log evidence (nan); run 4 chains.",
                SmcEvidenceWarning,
                stacklevel=2,
            )
        return log_mean, math.nan
    ratios = np.exp(logs - log_mean)
    return log_mean, float(np.sqrt(np.sum((ratios - 1.0) ** 2) / (c * (c - 1))))


def read_stage_stats(sample_stats: xr.Dataset | Any) -> dict[str, NDArray]:
    """Read PyMC's per-stage SMC statistics, whatever their layout.

    ``pm.sample_smc`` records, per chain and stage, ``log_marginal_likelihood`` (nan until the
    last stage, where beta = 1, which holds the chain's log evidence) and ``beta``. When chains
    have different numbers of stages it cannot build a (chain, stage) array and stores one
    Python list per chain in a 1-D object array (the layout that broke InferenceData before,
    pymc issue 7192); when they agree it stores a 2-D object array; a netCDF round trip or a
    hand-built array may instead be float and padded with nan after a chain's last stage.

    Parameters
    ----------
    sample_stats : xarray.Dataset or mapping
        Must hold ``log_marginal_likelihood`` and ``beta``; other per-stage variables (e.g.
        ``accept_rate``) are read too.

    Returns
    -------
    dict
        ``log_evidence`` (C,), ``n_stages`` (C,) int, and every per-stage variable as a float
        array (C, S_max) padded with nan.

    Raises
    ------
    ValueError
        A chain without a finite log evidence or whose last beta is not 1 (it did not reach
        the posterior), or chains that disagree in number.
    """
    names = [n for n in ("log_marginal_likelihood", "beta") if n not in sample_stats]
    if names:
        raise ValueError(f"the SMC sample_stats lack {names}; was this run by pm.sample_smc?")
    rows = {name: _ragged_rows(sample_stats[name]) for name in sample_stats}
    lml = rows["log_marginal_likelihood"]
    n_stages, log_z = [], []
    for c, (row, beta) in enumerate(zip(lml, rows["beta"], strict=True)):
        finite = np.flatnonzero(np.isfinite(row))
        if finite.size == 0:
            raise ValueError(f"chain {c} has no finite log evidence: it did not reach beta = 1.")
        last = int(finite[-1])
        if not np.isclose(beta[last], 1.0):
            raise ValueError(f"chain {c} ends at beta = {beta[last]}, not 1: no posterior stage.")
        n_stages.append(last + 1)
        log_z.append(row[last])
    width = max(n_stages)
    out = {
        name: _pad([r[:n] for r, n in zip(rs, n_stages, strict=True)], width)
        for name, rs in rows.items()
        if len(rs) == len(lml)
    }
    out["log_evidence"] = np.asarray(log_z, dtype=float)
    out["n_stages"] = np.asarray(n_stages, dtype=int)
    return out


def _ragged_rows(values) -> list[NDArray[np.float64]]:
    """One float row per chain from a (C, S) float/object array or a (C,) array of lists."""
    arr = np.asarray(getattr(values, "values", values))
    if arr.ndim == 2:
        return [np.asarray(list(row), dtype=float) for row in arr]
    if arr.ndim == 1 and arr.dtype == object:
        return [np.asarray(row, dtype=float).ravel() for row in arr]
    raise ValueError(f"per-stage SMC statistics must be (chain, stage), got shape {arr.shape}.")


def _pad(rows: Sequence[NDArray], width: int) -> NDArray[np.float64]:
    out = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        out[i, : row.size] = row
    return out


def with_clean_stage_stats(tree: xr.DataTree, stats: dict[str, NDArray]) -> xr.DataTree:
    """Replace PyMC's object-dtype sample_stats by float (chain, stage) arrays (netCDF-safe)."""
    old = tree["sample_stats"]
    chains = np.arange(stats["n_stages"].size)
    stages = np.arange(stats["beta"].shape[1])
    data_vars = {
        name: (("chain", "stage"), value) for name, value in stats.items() if np.ndim(value) == 2
    }
    data_vars["log_evidence"] = (("chain",), stats["log_evidence"])
    data_vars["n_stages"] = (("chain",), stats["n_stages"])
    clean = xr.Dataset(data_vars, coords={"chain": chains, "stage": stages}, attrs=old.attrs)
    tree = tree.copy()
    tree["sample_stats"] = xr.DataTree(clean)
    return tree


def trust_messages(
    chain_log_z: NDArray, *, draws: int, n_free: int, pymc_warnings: Sequence[str]
) -> tuple[str, ...]:
    """Plain-words reasons to distrust an SMC evidence estimate, each with its remedy.

    From the chains' log evidences, the particles per chain, the number of free parameters
    and PyMC's warnings while sampling; empty when nothing is suspect.
    """
    out = []
    if draws < DRAWS_PER_DIMENSION * n_free:
        parameters = "parameter" if n_free == 1 else "parameters"
        out.append(
            f"{draws} particles for {n_free} free {parameters} (fewer than "
            f"{DRAWS_PER_DIMENSION} per parameter): the SMC log evidence tends to be biased "
            f"low at this size; use draws >= {DRAWS_PER_DIMENSION * n_free}."
        )
    if chain_log_z.size < 2:
        out.append("one chain: the log evidence has no standard error; run 4 chains.")
    else:
        spread = float(np.std(chain_log_z, ddof=1))
        if spread > DISAGREEMENT_NATS:
            out.append(
                f"the chains' log evidences disagree (sd {spread:.2f} nats > "
                f"{DISAGREEMENT_NATS}): the pooled value is ruled by the largest chain and its "
                "standard error is unreliable; raise draws."
            )
    out.extend(f"PyMC warned while sampling: {w}" for w in pymc_warnings)
    return tuple(out)
