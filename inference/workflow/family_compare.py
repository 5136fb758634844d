"""Every method on a model specification, side by side: the family's comparison table.

:func:`run_family_comparison` (what :func:`~hyperbayes.inference.workflow.compare.run_comparison`
does with a :class:`~hyperbayes.models.specification.ModelSpec`) runs each method's
``run_family(spec, options)`` from ``FAMILY_METHODS``, isolating failures as the shared-sigma
comparison does. Its rows carry every group's scale (``sigma[tau]``) with its 95% interval, the
noise, the log evidence, the fixed effects with their standard errors, and the place of each
method against the exact oracle, scale by scale
(:mod:`~hyperbayes.inference.workflow.family_oracle`), where the oracle applies: at most two
unknown scales, each with a proper prior.

The log evidence is p(y) with a flat prior on the fixed effects (Lebesgue measure): it is
defined up to that prior's constant, so compare it only between models with the same fixed
effects (:data:`EVIDENCE_NOTE`). Under a proper N(0, s^2) prior on the fixed effects
(:func:`~hyperbayes.models.fixed_prior.with_fixed_prior`) it is a true p(y), comparable across
models with different fixed effects (:func:`evidence_caption`); the table then shows the fixed
effects as such, not their group's known scale.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from hyperbayes.inference.methods.arviz_io import INTERVAL_PROB
from hyperbayes.inference.methods.family_draws import fixed_effect_names
from hyperbayes.inference.methods.results import MethodSummary, RunOptions, json_safe
from hyperbayes.inference.workflow.compare import Comparison, Status, message_items
from hyperbayes.inference.workflow.family_oracle import (
    FAMILY_ORACLE_NOTE,
    FamilyOracleCheck,
    family_oracle_cell,
    family_oracle_checks,
    family_quantities,
    scale_keys,
)
from hyperbayes.inference.workflow.family_shrinkage import Shrinkage, shrinkage
from hyperbayes.inference.workflow.method_runs import run_isolated
from hyperbayes.inference.workflow.registry import FAMILY_METHODS, get_runner
from hyperbayes.models.fixed_prior import fixed_prior_group
from hyperbayes.models.specification import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "EVIDENCE_NOTE",
    "FamilyComparison",
    "FamilyRow",
    "evidence_caption",
    "exact_not_applicable",
    "family_table_html",
    "run_family_comparison",
]

#: What the family table's log evidence means, for a caption under it.
EVIDENCE_NOTE = (
    "Log evidence: log p(y) with a flat prior on the fixed effects (Lebesgue measure), defined "
    "up to that prior's constant: compare it only between models with the same fixed effects. "
    "For empirical Bayes (REML) it is the maximised restricted likelihood "
    "log p(y | scales_hat), which is higher than the evidence because it does not pay for the "
    "uncertainty in the scales; with the ML convention (a profile likelihood) it is not shown."
)
_Z = 1.959963984540054


def evidence_caption(spec: ModelSpec) -> str:
    """The caption of the table's log evidence for ``spec``: :data:`EVIDENCE_NOTE`, or under a
    proper prior on the fixed effects (``spec.fixed_prior_sd``) what makes it a true p(y)."""
    if spec.fixed_prior_sd is None:
        return EVIDENCE_NOTE
    return (
        f"Log evidence: a true log p(y), under the N(0, {spec.fixed_prior_sd:g}^2) prior on the "
        "fixed effects (intercept included), so it is comparable across models with different "
        "fixed effects. For empirical Bayes it is the maximised log p(y | scales_hat), which is "
        "higher than the evidence because it does not pay for the uncertainty in the scales."
    )


@dataclass(frozen=True)
class FamilyRow:
    """One method's line of a family comparison table.

    ``sigmas`` holds every group's scale (fixed ones included) by group name; ``oracle_z``
    (quantity -> z, :func:`~hyperbayes.inference.workflow.family_oracle.family_quantities`)
    is set for a sampler and ``oracle_quantile`` (scale key -> probability) for a point
    estimator, when the exact oracle ran.
    """

    method: str
    status: Status
    sigmas: Mapping[str, float] | None = None
    sigma_intervals: Mapping[str, tuple[float, float]] | None = None
    noise: float | None = None
    noise_interval: tuple[float, float] | None = None
    log_evidence: float | None = None
    fixed_effects: Mapping[str, tuple[float, float]] | None = None
    wall_time: float | None = None
    warnings: tuple[str, ...] = ()
    message: str | None = None
    oracle_z: Mapping[str, float | None] | None = None
    oracle_quantile: Mapping[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return json_safe({
            "method": self.method,
            "status": self.status,
            "sigmas": dict(self.sigmas) if self.sigmas is not None else None,
            "sigma_intervals": dict(self.sigma_intervals) if self.sigma_intervals else None,
            "noise": self.noise,
            "noise_interval": self.noise_interval,
            "log_evidence": self.log_evidence,
            "fixed_effects": dict(self.fixed_effects) if self.fixed_effects else None,
            "wall_time": self.wall_time,
            "warnings": list(self.warnings),
            "message": self.message,
            "oracle_z": dict(self.oracle_z) if self.oracle_z is not None else None,
            "oracle_quantile": dict(self.oracle_quantile) if self.oracle_quantile else None,
        })

    def with_oracle(self, check: FamilyOracleCheck) -> FamilyRow:
        """This row with its place against the exact oracle; a disagreement becomes the status
        (unless the row is worse off already) and its message a warning."""
        status, warns = self.status, self.warnings
        if check.message is not None:
            warns = (*warns, check.message)
            status = "disagrees" if status in ("ok", "warnings") else status
        return replace(self, oracle_z=check.z, oracle_quantile=dict(check.quantiles) or None,
                       status=status, warnings=warns)


@dataclass(frozen=True)
class FamilyComparison(Comparison):
    """A family run's table (one :class:`FamilyRow` per method), the full results, the model,
    and the shrinkage plot's numbers (None without a random intercept).

    ``n`` is the number of rows and ``d`` the number of coefficients (fixed effects, dense
    penalised weights and factor levels). Build it with :func:`run_family_comparison` (or
    :func:`~hyperbayes.inference.workflow.compare.run_comparison` on a ModelSpec).
    """

    spec: ModelSpec = field(repr=False, default=None)  # type: ignore[assignment]
    shrinkage: Shrinkage | None = field(repr=False, default=None)

    @property
    def scales(self) -> tuple[str, ...]:
        """The unknown scales' keys (``sigma[<group>]``, ``noise``)."""
        return scale_keys(self.spec)

    def _repr_html_(self) -> str:
        """The model, the table, the notes and each method's messages, as HTML."""
        table = [r.to_json() for r in self.rows]
        head = (
            "<p><b>hyperbayes comparison</b> (model family), seed "
            f"{self.options.seed}:</p><pre>{html.escape(self.spec.describe())}</pre>"
        )
        items = message_items(table)
        notes = "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>" if items else ""
        legend = (f"<p><small>{html.escape(FAMILY_ORACLE_NOTE)} "
                  f"{html.escape(evidence_caption(self.spec))}</small></p>")
        return head + family_table_html(table) + legend + notes

    def to_pandas(self) -> pd.DataFrame:
        """The table as a pandas DataFrame, one row per method (index ``method``).

        Columns: ``status``; per group ``sigma[<group>]`` with ``sigma[<group>]_lower`` and
        ``_upper`` (95% interval); ``noise``, ``noise_lower``, ``noise_upper``;
        ``log_evidence``; per fixed effect ``beta[<name>]`` and ``beta[<name>]_se``;
        ``wall_time``; ``warnings`` (tuple) and ``message``; then ``oracle_z_<quantity>`` per
        compared quantity (e.g. ``oracle_z_sigma[tau]_mean``, ``oracle_z_log_evidence``) and
        ``oracle_quantile_<scale>`` per unknown scale. Numbers are floats, NaN where absent.
        """
        import pandas as pd

        groups = [g.name for g in self.spec.groups if g.name not in _prior_groups(self.spec)]
        fixed = list(fixed_effect_names(self.spec))
        quantities = family_quantities(self.spec)
        records = []
        for r in self.rows:
            num: dict[str, Any] = {}
            for g in groups:
                lo, hi = (r.sigma_intervals or {}).get(g) or (None, None)
                num |= {f"sigma[{g}]": (r.sigmas or {}).get(g), f"sigma[{g}]_lower": lo,
                        f"sigma[{g}]_upper": hi}
            lo, hi = r.noise_interval or (None, None)
            num |= {"noise": r.noise, "noise_lower": lo, "noise_upper": hi,
                    "log_evidence": r.log_evidence}
            for f in fixed:
                est, se = (r.fixed_effects or {}).get(f) or (None, None)
                num |= {f"beta[{f}]": est, f"beta[{f}]_se": se}
            num["wall_time"] = r.wall_time
            oracle = {f"oracle_z_{q}": (r.oracle_z or {}).get(q) for q in quantities}
            oracle |= {f"oracle_quantile_{k}": (r.oracle_quantile or {}).get(k)
                       for k in self.scales}
            records.append(
                {"method": r.method, "status": r.status}
                | {k: math.nan if v is None else float(v) for k, v in num.items()}
                | {"warnings": tuple(r.warnings), "message": r.message}
                | {k: math.nan if v is None else float(v) for k, v in oracle.items()}
            )
        return pd.DataFrame.from_records(records).set_index("method")

    def to_json(self) -> dict[str, Any]:
        """The ``summary.json`` of a family run: the model, the table, every method's JSON
        (with ``sigmas``, ``fixed_effects``, ``random_effects``) and the shrinkage numbers."""
        spec = self.spec
        return json_safe({
            "family": True,
            "n": self.n,
            "d": self.d,
            "hyperprior": _priors_text(spec),
            "noise": spec.noise,
            "noise_prior": str(spec.noise_prior) if spec.noise_prior is not None else None,
            "seed": self.options.seed,
            "convention": self.options.convention,
            "model": spec.describe(),
            "groups": [g.name for g in spec.groups],
            "scales": list(self.scales),
            "fixed": list(fixed_effect_names(spec)),
            "fixed_prior_sd": spec.fixed_prior_sd,
            "evidence_note": evidence_caption(spec),
            "table": [r.to_json() for r in self.rows],
            "methods": {m: s.to_json() for m, s in self.results.items()},
            "shrinkage": self.shrinkage.to_json() if self.shrinkage is not None else None,
        })


def run_family_comparison(
    spec: ModelSpec,
    options: RunOptions,
    *,
    methods: Sequence[str] | None = None,
    progress: bool = False,
) -> FamilyComparison:
    """Run ``methods`` (default all of ``FAMILY_METHODS``) on a model specification.

    Parameters
    ----------
    spec : ModelSpec
        The model: groups, priors (the Bayesian methods need one on every learned scale, e.g.
        from :func:`~hyperbayes.models.family_priors.with_default_priors`), noise.
    options : RunOptions
        From it the methods take the seed, sampler sizes, progress and the EB convention.
    methods : sequence of str, optional
        Names from ``FAMILY_METHODS``; default all, in that table's order.
    progress : bool
        Say on stderr which method is running.

    Returns
    -------
    FamilyComparison
        A method that raises is a ``failed`` row; the exact oracle is ``not applicable``
        (with the reason) beyond two unknown scales or without proper priors.
    """
    names = list(FAMILY_METHODS) if methods is None else list(methods)
    unknown = [m for m in names if m not in FAMILY_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(FAMILY_METHODS)}.")
    reason = exact_not_applicable(spec)
    run = [m for m in names if not (m == "exact" and reason is not None)]
    done, results = run_isolated(
        run, lambda name: get_runner(name, family=True)(spec, options), make_row=_row,
        failed_row=FamilyRow, progress=progress,
    )
    by_name = {r.method: r for r in done}
    rows = [by_name.get(m) or FamilyRow(m, "not applicable", message=reason) for m in names]
    checks = family_oracle_checks(results, spec)
    rows = [r.with_oracle(checks[r.method]) if r.method in checks else r for r in rows]
    n_coef = spec.n_fixed + len(spec.dense_columns) + (spec.factor.n_levels if spec.factor else 0)
    return FamilyComparison(tuple(rows), results, options, spec.n, n_coef, spec=spec,
                            shrinkage=shrinkage(spec, results))


def exact_not_applicable(spec: ModelSpec) -> str | None:
    """Why the exact oracle does not apply to ``spec`` (None when it does): more than two
    unknown scales, or a learned scale without a hyperprior. (An improper prior is reported
    by the method itself.)"""
    keys = scale_keys(spec)
    if len(keys) > 2:
        return (f"the exact oracle integrates over at most two unknown scales; this model has "
                f"{len(keys)} ({', '.join(keys)}): fix some scales or compare the samplers alone.")
    missing = [f"sigma[{spec.groups[k].name}]" for k in spec.learned_groups
               if spec.groups[k].prior is None]
    if spec.noise is None and spec.noise_prior is None:
        missing.append("noise")
    if missing:
        return (f"the exact oracle needs a hyperprior on every learned scale; {', '.join(missing)} "
                "has none: give priors (e.g. with_default_priors(spec)).")
    return None


def _prior_groups(spec: ModelSpec) -> tuple[str, ...]:
    """The group that holds the fixed effects under a proper prior (shown as fixed effects)."""
    k = fixed_prior_group(spec)
    return () if k is None else (spec.groups[k].name,)


def _row(s: MethodSummary, elapsed: float) -> FamilyRow:
    status: Status = "degenerate" if s.degenerate else ("warnings" if s.warnings else "ok")
    log_evidence = s.log_evidence
    if log_evidence is None and s.extra.get("convention") == "reml":
        log_evidence = s.extra.get("log_ml")
    return FamilyRow(
        method=s.method,
        status=status,
        sigmas=dict(s.sigmas) if s.sigmas is not None else None,
        sigma_intervals=dict(s.sigma_intervals) if s.sigma_intervals else None,
        noise=s.noise,
        noise_interval=_noise_interval(s),
        log_evidence=log_evidence,
        fixed_effects=dict(s.fixed_effects) if s.fixed_effects else None,
        wall_time=s.wall_time if s.wall_time is not None else elapsed,
        warnings=tuple(s.warnings),
    )


def _noise_interval(s: MethodSummary) -> tuple[float, float] | None:
    """The 95% interval of a learned noise scale: the method's own, its draws', or the
    Laplace one of empirical Bayes (None when the noise is known)."""
    given = s.extra.get("noise_interval")
    if given is not None:
        return float(given[0]), float(given[1])
    tree = s.draws
    if tree is not None and "posterior" in tree.children and "noise" in tree["posterior"]:
        values = np.asarray(tree["posterior"]["noise"].values, dtype=float).ravel()
        tail = (1 - INTERVAL_PROB) / 2
        return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))
    se = s.extra.get("log_noise_se")
    if s.extra.get("noise_learned") and se is not None and math.isfinite(se) and s.noise:
        return s.noise * math.exp(-_Z * se), s.noise * math.exp(_Z * se)
    return None


def _priors_text(spec: ModelSpec) -> str:
    """Each group's prior (or fixed scale), e.g. ``tau: halfcauchy:5``."""
    parts = [f"{g.name}: " + (f"fixed {g.scale:g}" if g.scale is not None else str(g.prior or "none"))
             for g in spec.groups]
    return "; ".join(parts)


def family_table_html(table: Sequence[Mapping[str, Any]]) -> str:
    """The family comparison table as an HTML ``<table>``, from its rows' JSON form.

    Parameters
    ----------
    table : sequence of mapping
        ``FamilyRow.to_json()`` objects (the ``table`` of a family ``summary.json``).

    Returns
    -------
    str
        A column per group scale (with its 95% interval), the noise, the log evidence, a column
        per fixed effect (estimate ± standard error), ``vs exact`` and the time; one ``<tr>``
        per method, classed by its status. Every text is escaped.
    """
    groups = list(dict.fromkeys(g for r in table for g in (r.get("sigmas") or {})))
    fixed = list(dict.fromkeys(f for r in table for f in (r.get("fixed_effects") or {})))

    def num(x, fmt="{:.4g}"):
        return "" if x is None else fmt.format(x)

    def with_interval(value, interval):
        text = num(value)
        if interval:
            text += f'<br><small>[{interval[0]:.3g}, {interval[1]:.3g}]</small>'
        return text

    head = (["method", "status"] + [f"sigma[{g}]" for g in groups]
            + ["noise", "log evidence"] + [f"beta[{f}]" for f in fixed] + ["vs exact", "time (s)"])
    rows = []
    for r in table:
        intervals = r.get("sigma_intervals") or {}
        effects = r.get("fixed_effects") or {}
        cells = [html.escape(r["method"]), html.escape(r["status"])]
        cells += [with_interval((r.get("sigmas") or {}).get(g), intervals.get(g)) for g in groups]
        cells += [with_interval(r.get("noise"), r.get("noise_interval")),
                  num(r.get("log_evidence"), "{:.3f}")]
        cells += [f"{effects[f][0]:.4g} ± {effects[f][1]:.2g}"
                  if f in effects and None not in effects[f] else "" for f in fixed]
        cells += [family_oracle_cell(r), num(r.get("wall_time"), "{:.1f}")]
        oracle = len(cells) - 2
        rows.append(
            f'<tr class="{html.escape(r["status"]).replace(" ", "-")}">'
            + "".join(f'<td class="oracle">{c}</td>' if i == oracle else f"<td>{c}</td>"
                      for i, c in enumerate(cells))
            + "</tr>"
        )
    header = "<tr>" + "".join(
        f'<th class="oracle">{html.escape(h)}</th>' if h == "vs exact" else f"<th>{html.escape(h)}</th>"
        for h in head) + "</tr>"
    return '<table class="family">' + header + "".join(rows) + "</table>"
