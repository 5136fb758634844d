"""Every method on the same data, side by side: the comparison table behind the report.

``run_comparison`` loops over the method table (``hyperbayes.inference.workflow.registry.METHODS``), calls each method's
``run`` with the same options and seed, and isolates failures: a method that raises is a row
marked ``failed`` with its message while the others complete.

A :class:`Comparison` shows itself as an HTML table in Jupyter and becomes a pandas DataFrame
with ``to_pandas()``; :func:`table_html` is the same table for the report, which renders it
from ``summary.json``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from hyperbayes.inference.methods.results import MethodSummary, RunOptions, json_safe
from hyperbayes.inference.workflow.method_runs import run_isolated
from hyperbayes.inference.workflow.oracle_check import (
    ORACLE_NOTE,
    QUANTITIES,
    OracleCheck,
    oracle_cell,
    oracle_checks,
)
from hyperbayes.inference.workflow.registry import METHODS, get_runner
from hyperbayes.models.data import Centering, Dataset
from hyperbayes.models.specification import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Comparison",
    "ComparisonRow",
    "message_items",
    "run_comparison",
    "table_html",
]

Status = Literal["ok", "warnings", "disagrees", "degenerate", "failed", "not applicable"]

_ORACLE_COLUMNS = (*(f"oracle_z_{q}" for q in QUANTITIES), "oracle_quantile")
#: The columns of ``Comparison.to_pandas()`` (``method`` becomes the index).
TABLE_COLUMNS = (
    "method", "status", "sigma", "sigma_lower", "sigma_upper", "noise", "lambda",
    "log_evidence", "heldout_error", "wall_time", "warnings", "message", *_ORACLE_COLUMNS,
)
_HEAD = (
    "method", "status", "sigma", "95% interval", "noise", "lambda", "log evidence",
    "held-out error", "vs exact", "time (s)",
)


@dataclass(frozen=True)
class ComparisonRow:
    """One method's line of the comparison table.

    ``oracle_z`` (quantity -> z, see :mod:`hyperbayes.inference.workflow.oracle_check`) is set
    for a sampler and ``oracle_quantile`` for a point estimator, when the exact oracle ran.
    """

    method: str
    status: Status
    sigma: float | None = None
    sigma_interval: tuple[float, float] | None = None
    noise: float | None = None
    ridge_lambda: float | None = None
    log_evidence: float | None = None
    heldout_error: float | None = None
    wall_time: float | None = None
    warnings: tuple[str, ...] = ()
    message: str | None = None
    oracle_z: Mapping[str, float | None] | None = None
    oracle_quantile: float | None = None

    def to_json(self) -> dict[str, Any]:
        return json_safe(
            {
                "method": self.method,
                "status": self.status,
                "sigma": self.sigma,
                "sigma_interval": self.sigma_interval,
                "noise": self.noise,
                "lambda": self.ridge_lambda,
                "log_evidence": self.log_evidence,
                "heldout_error": self.heldout_error,
                "wall_time": self.wall_time,
                "warnings": list(self.warnings),
                "message": self.message,
                "oracle_z": dict(self.oracle_z) if self.oracle_z is not None else None,
                "oracle_quantile": self.oracle_quantile,
            }
        )

    def with_oracle(self, check: OracleCheck) -> ComparisonRow:
        """This row with its place against the exact oracle; a disagreement becomes the status
        (unless the row is worse off already) and its message a warning."""
        status = self.status
        warns = self.warnings
        if check.message is not None:
            warns = (*warns, check.message)
            status = "disagrees" if status in ("ok", "warnings") else status
        return replace(
            self, oracle_z=check.z, oracle_quantile=check.quantile, status=status, warnings=warns
        )


@dataclass(frozen=True)
class Comparison:
    """The table (one row per method, the exact oracle's among them) and the full results."""

    rows: tuple[ComparisonRow, ...]
    results: dict[str, MethodSummary] = field(repr=False)
    options: RunOptions
    n: int
    d: int

    def row(self, method: str) -> ComparisonRow:
        for r in self.rows:
            if r.method == method:
                return r
        raise KeyError(f"no row for {method!r}; the rows are {[r.method for r in self.rows]}.")

    def _repr_html_(self) -> str:
        """The table, then each method's failure message and warnings, as HTML (Jupyter shows
        a Comparison with it); every text is escaped."""
        table = [r.to_json() for r in self.rows]
        noise = (
            f"known, delta = {self.options.noise:.4g}"
            if self.options.noise is not None
            else f"learned, prior <code>{html.escape(str(self.options.noise_prior))}</code>"
        )
        head = (
            f"<p><b>hyperbayes comparison</b>: N = {self.n}, D = {self.d}; hyperprior on sigma "
            f"<code>{html.escape(str(self.options.hyperprior))}</code>; noise {noise}; "
            f"seed {self.options.seed}.</p>"
        )
        items = message_items(table)
        notes = "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>" if items else ""
        legend = f"<p><small>{html.escape(ORACLE_NOTE)}</small></p>"
        return head + table_html(table) + legend + notes

    def to_pandas(self) -> pd.DataFrame:
        """The table as a pandas DataFrame, one row per method.

        Returns
        -------
        pandas.DataFrame
            Indexed by ``method``, in the order the methods ran. Columns (``TABLE_COLUMNS``):
            ``status``; ``sigma``, ``sigma_lower`` and ``sigma_upper`` (the 95% interval),
            ``noise``, ``lambda``, ``log_evidence``, ``heldout_error``, ``wall_time`` (floats,
            NaN where a method has no value); ``warnings`` (a tuple of str) and ``message``
            (why a method failed or does not apply, else None); then the place against the
            exact oracle: ``oracle_z_sigma_mean``, ``oracle_z_sigma_q025``,
            ``oracle_z_sigma_q975``, ``oracle_z_log_evidence`` (a sampler's z values) and
            ``oracle_quantile`` (a point estimator's quantile), NaN where they do not apply.
        """
        import pandas as pd

        records = []
        for r in self.rows:
            lower, upper = r.sigma_interval if r.sigma_interval else (None, None)
            numbers = {
                "sigma": r.sigma,
                "sigma_lower": lower,
                "sigma_upper": upper,
                "noise": r.noise,
                "lambda": r.ridge_lambda,
                "log_evidence": r.log_evidence,
                "heldout_error": r.heldout_error,
                "wall_time": r.wall_time,
            }
            oracle = {f"oracle_z_{k}": v for k, v in (r.oracle_z or {}).items()}
            oracle["oracle_quantile"] = r.oracle_quantile
            oracle = {k: oracle.get(k) for k in _ORACLE_COLUMNS}
            records.append(
                {"method": r.method, "status": r.status}
                | {k: math.nan if v is None else float(v) for k, v in numbers.items()}
                | {"warnings": tuple(r.warnings), "message": r.message}
                | {k: math.nan if v is None else float(v) for k, v in oracle.items()}
            )
        return pd.DataFrame.from_records(records, columns=TABLE_COLUMNS).set_index("method")

    def to_json(self) -> dict[str, Any]:
        """The ``summary.json`` of a run directory (per-method objects follow ``fit --json``)."""
        return json_safe(
            {
                "n": self.n,
                "d": self.d,
                "hyperprior": str(self.options.hyperprior),
                "noise": self.options.noise,
                "noise_prior": str(self.options.noise_prior) if self.options.noise_prior else None,
                "seed": self.options.seed,
                "table": [r.to_json() for r in self.rows],
                "methods": {m: s.to_json() for m, s in self.results.items()},
            }
        )


def run_comparison(
    data: Dataset | ModelSpec,
    options: RunOptions,
    *,
    methods: Sequence[str] | None = None,
    centering: Centering | None = None,
    progress: bool = False,
) -> Comparison:
    """Run ``methods`` (default: all of them) on ``data`` with the same options and seed.

    Parameters
    ----------
    data : Dataset or ModelSpec
        Validated (and centred, if an intercept is wanted) data; or a model specification
        (groups, fixed effects, a random intercept: a *family run*, see
        :func:`hyperbayes.inference.workflow.family_compare.run_family_comparison`).
    options : RunOptions
        Hyperprior, noise, seed and sampler sizes, shared by every method (a family run takes
        priors, noise and groups from the specification, and from ``options`` only the seed,
        sampler sizes, progress and the EB convention).
    methods : sequence of str, optional
        Names from ``hyperbayes.inference.workflow.registry.METHODS``; default all, in that table's order.
    centering : Centering, optional
        Used to report each method's intercept (not for a family run, which estimates it).
    progress : bool
        Say on stderr which method is running.

    Returns
    -------
    Comparison
        A :class:`~hyperbayes.inference.workflow.family_compare.FamilyComparison` for a
        family run.
    """
    if isinstance(data, ModelSpec):  # a family run: one column per group scale
        from hyperbayes.inference.workflow.family_compare import run_family_comparison

        return run_family_comparison(data, options, methods=methods, progress=progress)
    names = list(METHODS) if methods is None else list(methods)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}.")
    rows, results = run_isolated(
        names,
        lambda name: get_runner(name)(data, options).with_centering(centering),
        make_row=_row,
        failed_row=ComparisonRow,
        progress=progress,
    )
    if not options.ard:  # with ARD the oracle (one shared sigma) is another model
        checks = oracle_checks(results)
        rows = [r.with_oracle(checks[r.method]) if r.method in checks else r for r in rows]
    return Comparison(tuple(rows), results, options, data.n, data.d)


def _row(s: MethodSummary, elapsed: float) -> ComparisonRow:
    lam = s.extra.get("lambda")
    if lam is None and s.sigma and s.noise:
        lam = (s.noise / s.sigma) ** 2  # the ridge penalty implied by (sigma, delta)
    status: Status = "degenerate" if s.degenerate else ("warnings" if s.warnings else "ok")
    return ComparisonRow(
        method=s.method,
        status=status,
        sigma=s.sigma,
        sigma_interval=s.sigma_interval,
        noise=s.noise,
        ridge_lambda=lam,
        log_evidence=s.log_evidence,
        heldout_error=s.extra.get("cv_score"),
        wall_time=s.wall_time if s.wall_time is not None else elapsed,
        warnings=tuple(s.warnings),
    )


def table_html(table: Sequence[Mapping[str, Any]]) -> str:
    """The comparison table as an HTML ``<table>``, from its rows' JSON form.

    Parameters
    ----------
    table : sequence of mapping
        ``ComparisonRow.to_json()`` objects (the ``table`` of ``summary.json``).

    Returns
    -------
    str
        One ``<tr>`` per method, classed by its status (``failed``, ``disagrees``, ...);
        every text is escaped. The ``vs exact`` column is described by ``ORACLE_NOTE``.
    """

    def num(x, fmt="{:.4g}"):
        return "" if x is None else fmt.format(x)

    rows = []
    for r in table:
        interval = r.get("sigma_interval")
        cells = [
            html.escape(r["method"]),
            html.escape(r["status"]),
            num(r.get("sigma")),
            f"[{interval[0]:.3g}, {interval[1]:.3g}]" if interval else "",
            num(r.get("noise")),
            num(r.get("lambda")),
            num(r.get("log_evidence"), "{:.3f}"),
            num(r.get("heldout_error")),
            oracle_cell(r),
            num(r.get("wall_time"), "{:.1f}"),
        ]
        oracle = len(cells) - 2  # the "vs exact" cell: left-aligned, may wrap between entries
        rows.append(
            f'<tr class="{html.escape(r["status"]).replace(" ", "-")}">'
            + "".join(
                f'<td class="oracle">{c}</td>' if i == oracle else f"<td>{c}</td>"
                for i, c in enumerate(cells)
            )
            + "</tr>"
        )
    head = "<tr>" + "".join(
        f'<th class="oracle">{h}</th>' if h == "vs exact" else f"<th>{h}</th>" for h in _HEAD
    ) + "</tr>"
    return "<table>" + head + "".join(rows) + "</table>"


def message_items(table: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each method's failure message and warnings, as escaped HTML list items' contents.

    Parameters
    ----------
    table : sequence of mapping
        ``ComparisonRow.to_json()`` objects, as for :func:`table_html`.
    """
    items = []
    for row in table:
        method = html.escape(row["method"])
        if row["status"] in ("failed", "not applicable") and row.get("message"):
            items.append(f"<b>{method}</b> {row['status']}: {html.escape(row['message'])}")
        for w in row.get("warnings", []):
            items.append(f"<b>{method}</b>: {html.escape(w)}")
    return items
