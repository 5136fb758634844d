"""A family run held against the exact oracle, scale by scale, in units of each method's error.

The family's exact oracle (``exact_family``: at most two unknown scales, every one with a
proper prior) knows the posterior of every unknown scale: each learned group's sigma_g and the
noise scale delta when it is learned. As for the shared sigma
(:mod:`~hyperbayes.inference.workflow.oracle_check`), a sampler's posterior mean and 2.5% and
97.5% quantiles of each scale, and its log evidence where it gives a standard error, are placed
against the exact values in units of their Monte Carlo standard errors,

    z = (estimate - exact) / MCSE,

with ArviZ's MCSE from the draws' ESS (Vehtari et al. 2021). Beyond
:data:`~hyperbayes.inference.workflow.oracle_check.DISAGREEMENT_Z` the method
``disagrees``. A point estimator (empirical Bayes, joint MAP, cross-validation) is placed by
the exact posterior probability below its estimate of each scale (its quantile).

The quantities are keyed ``"<scale>_mean"``, ``"<scale>_q025"``, ``"<scale>_q975"`` (scale
keys ``sigma[<group>]`` and ``noise``: :func:`scale_keys`) and ``"log_evidence"``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hyperbayes.inference.methods.results import MethodSummary
from hyperbayes.inference.workflow.oracle_check import (
    DISAGREEMENT_Z,
    Gap,
    remedy,
    scale_estimates,
    usable_error,
)
from hyperbayes.models.specification import ModelSpec

__all__ = [
    "FAMILY_ORACLE_NOTE",
    "FamilyOracleCheck",
    "family_oracle_cell",
    "family_oracle_checks",
    "family_quantities",
    "scale_cdf",
    "scale_keys",
]

_STATS = (("mean", "sigma_mean", "mean"), ("q025", "sigma_q025", "2.5%"),
          ("q975", "sigma_q975", "97.5%"))
_WORDS = {"mean": "the posterior mean", "q025": "the 2.5% quantile", "q975": "the 97.5% quantile"}

#: What the family table's ``vs exact`` column means, for a caption under it.
FAMILY_ORACLE_NOTE = (
    "vs exact: for a sampler, how far its answer lies from the exact oracle's in units of its "
    "own Monte Carlo error, z = (estimate - exact) / MCSE, for the posterior mean and the 2.5% "
    "and 97.5% quantiles of every unknown scale (each group's sigma, and the noise when it is "
    "learned), and for the log evidence in standard errors; "
    f"|z| > {DISAGREEMENT_Z:g} marks a disagreement. For a point estimate, the exact posterior "
    "probability below its value of each scale (its quantile). The oracle applies with at most "
    "two unknown scales, each with a proper prior."
)


def scale_keys(spec: ModelSpec) -> tuple[str, ...]:
    """The unknown scales' keys: ``sigma[<group>]`` for each learned group, then ``noise``
    when it is learned."""
    keys = tuple(f"sigma[{spec.groups[k].name}]" for k in spec.learned_groups)
    return keys + (("noise",) if spec.noise is None else ())


def family_quantities(spec: ModelSpec) -> tuple[str, ...]:
    """Every compared quantity of ``spec``, in table order (the keys of ``oracle_z``)."""
    return tuple(f"{key}_{stat}" for key in scale_keys(spec) for stat, _, _ in _STATS) + (
        "log_evidence",)


@dataclass(frozen=True)
class FamilyOracleCheck:
    """How one method's answer sits in the exact posterior of a family member.

    Attributes
    ----------
    method : str
    gaps : tuple of Gap
        A sampler's compared quantities (empty for a point estimator).
    quantiles : dict of str to float
        A point estimator's exact posterior probability below its value, per scale key.
    message : str or None
        What disagrees, by how much, and the remedy, when some |z| exceeds ``DISAGREEMENT_Z``.
    quantities : tuple of str
        The model's quantities (:func:`family_quantities`).
    """

    method: str
    gaps: tuple[Gap, ...] = ()
    quantiles: Mapping[str, float] = field(default_factory=dict)
    message: str | None = None
    quantities: tuple[str, ...] = ()

    @property
    def disagrees(self) -> bool:
        return self.message is not None

    @property
    def z(self) -> dict[str, float | None] | None:
        """Every quantity -> z (None where not compared); None for a point estimator."""
        if not self.gaps:
            return None
        found = {g.quantity: g.z for g in self.gaps}
        return {q: found.get(q) for q in self.quantities}


def family_oracle_checks(
    results: Mapping[str, MethodSummary], spec: ModelSpec
) -> dict[str, FamilyOracleCheck]:
    """Check every method of ``results`` against ``results["exact"]`` (the family oracle).

    Parameters
    ----------
    results : mapping of str to MethodSummary
        The family summaries of the methods that ran, the exact oracle's under ``"exact"``.
    spec : ModelSpec
        The model they ran on.

    Returns
    -------
    dict of str to FamilyOracleCheck
        One entry per method that could be compared (a sampler with draws of the scales, a
        point estimator with estimates of them); empty when the oracle did not run.
    """
    exact = results.get("exact")
    if exact is None or not exact.extra.get("log_scale_density"):
        return {}
    reference = _exact_values(exact, spec)
    out = {}
    for name, summary in results.items():
        if name == "exact":
            continue
        check = _check(summary, exact, spec, reference)
        if check is not None:
            out[name] = check
    return out


def _exact_values(exact: MethodSummary, spec: ModelSpec) -> dict[str, float]:
    """The oracle's posterior mean and 2.5%/97.5% quantiles of each scale, by quantity."""
    out: dict[str, float] = {}
    for key in scale_keys(spec):
        if key == "noise":
            mean, interval = exact.noise, exact.extra.get("noise_interval")
        else:
            name = key[len("sigma["):-1]
            mean = (exact.sigmas or {}).get(name)
            interval = (exact.sigma_intervals or {}).get(name)
        if mean is None or interval is None:
            continue
        out[f"{key}_mean"], out[f"{key}_q025"], out[f"{key}_q975"] = mean, *interval
    return out


def _check(summary, exact, spec, reference) -> FamilyOracleCheck | None:
    quantities = family_quantities(spec)
    draws = _scale_draws(summary, spec)
    if not draws:
        if summary.draws is not None or summary.sigmas is None:
            return None
        return FamilyOracleCheck(summary.method, quantiles=_point_quantiles(summary, exact, spec),
                                 quantities=quantities)
    gaps = []
    for key, values in draws.items():
        estimates = scale_estimates(values)
        for stat, shared_key, _ in _STATS:
            quantity = f"{key}_{stat}"
            value, error = estimates[shared_key]
            if quantity in reference and usable_error(error):
                gaps.append(Gap(quantity, value, reference[quantity], error,
                                label=f"{_WORDS[stat]} of {key}"))
    se = summary.extra.get("log_evidence_se")
    if summary.log_evidence is not None and exact.log_evidence is not None and usable_error(se):
        chains = len(summary.extra.get("chain_log_evidence") or ())
        basis = f"from the spread of {chains} chains" if chains else ""
        gaps.append(Gap("log_evidence", summary.log_evidence, exact.log_evidence, float(se), basis))
    bad = [g for g in gaps if abs(g.z) > DISAGREEMENT_Z]
    message = None
    if bad:
        shared = {"log_evidence" if g.quantity == "log_evidence" else "sigma_mean" for g in bad}
        message = (
            f"Disagrees with the exact oracle by more than {DISAGREEMENT_Z:g} units of its own "
            "error: " + "; ".join(g.describe() for g in bad) + ". " + remedy(summary, shared)
        )
    return FamilyOracleCheck(summary.method, gaps=tuple(gaps), message=message,
                             quantities=quantities)


def _scale_draws(summary: MethodSummary, spec: ModelSpec) -> dict[str, np.ndarray]:
    """Each unknown scale's draws as (chain, draw), from a family DataTree (else empty)."""
    tree = summary.draws
    if tree is None or "posterior" not in tree.children:
        return {}
    post = tree["posterior"]
    out = {}
    if "sigma" in post and "group" in post["sigma"].dims:
        groups = [str(g) for g in post["sigma"]["group"].values]
        for k in spec.learned_groups:
            name = spec.groups[k].name
            if name in groups:
                values = post["sigma"].sel(group=name).transpose("chain", "draw").values
                out[f"sigma[{name}]"] = np.asarray(values, dtype=float)
    if spec.noise is None and "noise" in post:
        out["noise"] = np.asarray(post["noise"].transpose("chain", "draw").values, dtype=float)
    return out


def _point_quantiles(summary, exact, spec) -> dict[str, float]:
    curves = exact.extra.get("log_scale_density") or {}
    out = {}
    for key in scale_keys(spec):
        if key == "noise":
            value, curve = summary.noise, curves.get("noise")
        else:
            name = key[len("sigma["):-1]
            value, curve = (summary.sigmas or {}).get(name), curves.get(name)
        if value is not None and curve:
            out[key] = scale_cdf(curve["log_scale"], curve["density"], value)
    return out


def scale_cdf(log_scale: Sequence[float], density: Sequence[float], value: float) -> float:
    """P(scale <= ``value``) from the density of the log scale on a grid (trapezoid rule);
    0 at or below 0 and below the grid, 1 beyond it."""
    if not (value > 0):
        return 0.0
    u = np.asarray(log_scale, dtype=float)
    f = np.asarray(density, dtype=float)
    cdf = np.concatenate([[0.0], np.cumsum(np.diff(u) * (f[1:] + f[:-1]) / 2)])
    return float(np.interp(math.log(value), u, cdf / cdf[-1], left=0.0, right=1.0))


def family_oracle_cell(row: Mapping[str, Any]) -> str:
    """The ``vs exact`` cell of one family table row (its JSON form), as escaped HTML: per
    scale the z values (in bold beyond ``DISAGREEMENT_Z``), or the quantiles."""
    if row.get("method") == "exact" and row.get("status") not in ("failed", "not applicable"):
        return "the oracle"
    z = row.get("oracle_z")
    if z:
        parts: dict[str, list[str]] = {}
        for quantity, value in z.items():
            if value is None:
                continue
            key, _, stat = quantity.rpartition("_")
            label = dict((s, short) for s, _, short in _STATS).get(stat)
            if quantity == "log_evidence":
                key, label = "log\N{NO-BREAK SPACE}p(y)", ""
            text = f"{label}\N{NO-BREAK SPACE}{value:+.1f}" if label else f"{value:+.1f}"
            text = html.escape(text.replace("-", "\N{MINUS SIGN}"))
            parts.setdefault(key, []).append(f"<b>{text}</b>" if abs(value) > DISAGREEMENT_Z else text)
        return "<br>".join(f"{html.escape(k)}: " + ", ".join(v) for k, v in parts.items())
    q = row.get("oracle_quantile")
    if q:
        return "<br>".join(f"{html.escape(k)}: quantile {_quantile_text(v)}" for k, v in q.items())
    return ""


def _quantile_text(q: float) -> str:
    return "&lt;0.001" if q < 0.001 else "&gt;0.999" if q > 0.999 else f"{q:.3f}"
