"""Every method held against the exact oracle, in units of its own error.

Where the exact posterior applies (the ``exact`` method ran: one shared sigma, proper priors),
the numbers a sampling method reports are Monte Carlo estimates of numbers the oracle knows
(MATH.md section 4). :func:`oracle_checks` measures each gap in the estimate's own standard
error,

    z = (estimate - exact) / (Monte Carlo standard error of the estimate),

for the posterior mean and the 2.5% and 97.5% quantiles of sigma, and for the log evidence
where a method estimates it with a standard error (SMC). A correct sampler gives |z| of order
1; beyond :data:`DISAGREEMENT_Z` the gap is more than sampling noise, the comparison marks
the method ``disagrees`` and says what disagrees, by how much, and what to do. A point
estimator (empirical Bayes, cross-validation, joint MAP) has no sampling error; it is placed
in the exact posterior instead, by the posterior probability below its sigma (its quantile).

The comparison table (:func:`hyperbayes.inference.workflow.compare.table_html`) shows both in
its ``vs exact`` column, with :func:`oracle_cell`.
"""

from __future__ import annotations

import html
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import arviz_stats as azs
import numpy as np

from hyperbayes.inference.methods.arviz_io import INTERVAL_PROB, pooled_draws
from hyperbayes.inference.methods.results import MethodSummary

__all__ = [
    "DISAGREEMENT_Z",
    "ORACLE_NOTE",
    "QUANTITIES",
    "Gap",
    "OracleCheck",
    "exact_sigma_cdf",
    "oracle_cell",
    "oracle_check",
    "oracle_checks",
    "remedy",
    "scale_estimates",
    "usable_error",
]

#: |z| above this is a disagreement. Under a correct sampler z is close to N(0, 1), so 4 units
#: is a false alarm in about 6 of 100,000 quantities; and the MCSE itself is an estimate (from
#: the draws' ESS), which is worth a margin over the usual 2 or 3.
DISAGREEMENT_Z = 4.0
_TAILS = ((1 - INTERVAL_PROB) / 2, (1 + INTERVAL_PROB) / 2)
#: The quantities compared, as keys of ``OracleCheck.z`` and of the table's ``oracle_z``.
QUANTITIES = ("sigma_mean", "sigma_q025", "sigma_q975", "log_evidence")
_LABELS = {
    "sigma_mean": "the posterior mean of sigma",
    "sigma_q025": f"the {_TAILS[0]:.1%} quantile of sigma",
    "sigma_q975": f"the {_TAILS[1]:.1%} quantile of sigma",
    "log_evidence": "the log evidence",
}
_SHORT = {
    "sigma_mean": "mean",
    "sigma_q025": "2.5%",
    "sigma_q975": "97.5%",
    "log_evidence": "log\N{NO-BREAK SPACE}p(y)",
}
#: What the ``vs exact`` column means, for a caption under the table.
ORACLE_NOTE = (
    "vs exact: for a sampler, how far its answer lies from the exact oracle's in units of its "
    "own Monte Carlo error, z = (estimate - exact) / MCSE, for the posterior mean and the 2.5% and "
    "97.5% quantiles of sigma, and for the log evidence in standard errors; "
    f"|z| > {DISAGREEMENT_Z:g} marks a disagreement. For a point estimate, the exact posterior "
    "probability below its sigma (its quantile)."
)


@dataclass(frozen=True)
class Gap:
    """One quantity of one method against the oracle: ``z = (estimate - exact) / error``."""

    quantity: str
    estimate: float
    exact: float
    error: float
    #: Where ``error`` comes from, when the words should say (e.g. "from the spread of 4 chains").
    basis: str = ""
    #: What the quantity is, in words (default: the shared sigma's labels, by ``quantity``).
    label: str = ""

    @property
    def z(self) -> float:
        return (self.estimate - self.exact) / self.error

    def describe(self) -> str:
        """The gap in words, e.g. 'the posterior mean of sigma 512.3 against the exact 348.9
        (z = +12.1, MCSE 13.5)'."""
        if self.quantity == "log_evidence":
            values, unit = f"{self.estimate:.3f} against the exact {self.exact:.3f}", "s.e."
        else:
            values, unit = f"{self.estimate:.4g} against the exact {self.exact:.4g}", "MCSE"
        error = f"{unit} {self.error:.3g}" + (f" {self.basis}" if self.basis else "")
        return f"{self.label or _LABELS[self.quantity]} {values} (z = {self.z:+.1f}, {error})"


@dataclass(frozen=True)
class OracleCheck:
    """How one method's answer sits in the exact posterior; build it with :func:`oracle_check`.

    Attributes
    ----------
    method : str
    gaps : tuple of Gap
        A sampler's compared quantities (empty for a point estimator).
    quantile : float or None
        A point estimator's exact posterior probability P(sigma <= sigma_hat | y) (None for
        a sampler).
    message : str or None
        What disagrees, by how much, and the remedy, when some |z| exceeds ``DISAGREEMENT_Z``.
    """

    method: str
    gaps: tuple[Gap, ...] = ()
    quantile: float | None = None
    message: str | None = None

    @property
    def disagrees(self) -> bool:
        return self.message is not None

    @property
    def z(self) -> dict[str, float | None] | None:
        """Every quantity of :data:`QUANTITIES` -> z (None where not compared); None for a
        point estimator."""
        if not self.gaps and self.quantile is not None:
            return None
        found = {g.quantity: g.z for g in self.gaps}
        return {q: found.get(q) for q in QUANTITIES}


def oracle_checks(results: Mapping[str, MethodSummary]) -> dict[str, OracleCheck]:
    """Check every method of ``results`` against ``results["exact"]``.

    Parameters
    ----------
    results : mapping of str to MethodSummary
        The summaries of the methods that ran, the exact oracle's under ``"exact"``.

    Returns
    -------
    dict of str to OracleCheck
        One entry per method that could be compared (a sampler with scalar sigma draws, or a
        point estimator with a sigma); empty when the oracle did not run.
    """
    exact = results.get("exact")
    if exact is None or exact.sigma is None or exact.sigma_interval is None:
        return {}
    out = {}
    for name, summary in results.items():
        if name != "exact" and (check := oracle_check(summary, exact)) is not None:
            out[name] = check
    return out


def oracle_check(summary: MethodSummary, exact: MethodSummary) -> OracleCheck | None:
    """One method against the exact oracle's summary (None when there is nothing to compare).

    Parameters
    ----------
    summary : MethodSummary
        A sampler's (with ``draws`` holding a scalar ``sigma`` per draw) or a point
        estimator's (``sigma`` only).
    exact : MethodSummary
        The ``exact`` method's: ``sigma`` is the exact posterior mean, ``sigma_interval`` the
        exact 2.5% and 97.5% quantiles, ``log_evidence`` the exact log p(y), and
        ``extra["log_sigma_density"]`` the exact density of log sigma on a grid.

    Returns
    -------
    OracleCheck or None

    Notes
    -----
    The oracle's own error is negligible: its quadrature is accurate to ~1e-6 in the log
    evidence and to a fraction of a grid cell (a few parts in 10^4) in the quantiles.

    The Monte Carlo standard errors are ArviZ's (``arviz_stats.mcse``, methods ``mean`` and
    ``quantile``: Vehtari et al. 2021), from the ESS of the draws across chains. For NUTS
    these are the usual MCMC errors. SMC's draws are particles, not a Markov chain; the same
    estimator is still an honest error for them, for two reasons. PyMC resamples
    systematically, which keeps the copies of a particle next to each other, so the
    autocorrelation along the draw axis sees the duplication that resampling leaves. And the
    chains are independent runs, whose disagreement the multi-chain ESS includes (it falls
    when the chains' means differ by more than their spread allows). A bias shared by every
    chain (tempered targets not re-equilibrated: MATH.md section 8) is no Monte Carlo error
    at all; it is what this check exists to show. The log evidence's error is the method's
    own standard error, ``extra["log_evidence_se"]`` (SMC: the delta method on the spread of
    the chains' evidences). That one is estimated from C chains, so its z follows Student's t
    with C - 1 degrees of freedom rather than N(0, 1): |z| > 4 by chance in 2.8% of runs with
    4 chains (16% with 2). The message says so, and names more chains as the remedy.
    """
    sigma = _scalar_sigma_draws(summary)
    if sigma is None:
        if summary.sigma is None or summary.draws is not None:
            return None  # nothing to place (ARD, or draws without one sigma per draw)
        return OracleCheck(summary.method, quantile=exact_sigma_cdf(exact, summary.sigma))
    exact_values = {
        "sigma_mean": exact.sigma,
        "sigma_q025": exact.sigma_interval[0],
        "sigma_q975": exact.sigma_interval[1],
    }
    estimates = scale_estimates(sigma)
    gaps = [
        Gap(q, value, exact_values[q], error)
        for q, (value, error) in estimates.items()
        if usable_error(error)
    ]
    se = summary.extra.get("log_evidence_se")
    if summary.log_evidence is not None and exact.log_evidence is not None and usable_error(se):
        chains = len(summary.extra.get("chain_log_evidence") or ())
        basis = f"from the spread of {chains} chains" if chains else ""
        gaps.append(Gap("log_evidence", summary.log_evidence, exact.log_evidence, float(se), basis))
    bad = [g for g in gaps if abs(g.z) > DISAGREEMENT_Z]
    message = None
    if bad:
        message = (
            f"Disagrees with the exact oracle by more than {DISAGREEMENT_Z:g} units of its own "
            "error: "
            + "; ".join(g.describe() for g in bad)
            + ". "
            + remedy(summary, {g.quantity for g in bad})
        )
    return OracleCheck(summary.method, gaps=tuple(gaps), message=message)


def exact_sigma_cdf(exact: MethodSummary, sigma: float) -> float:
    """The exact posterior probability P(sigma' <= ``sigma`` | y).

    From the exact density of log sigma on its grid (``extra["log_sigma_density"]``),
    integrated by the trapezoid rule; where the summary has no grid, from its i.i.d. draws.
    0 or 1 beyond the grid, which covers all but a few millionths of the mass.
    """
    if not (sigma > 0):
        return 0.0
    curve = exact.extra.get("log_sigma_density")
    if curve:
        u = np.asarray(curve["log_sigma"], dtype=float)
        f = np.asarray(curve["density"], dtype=float)
        cdf = np.concatenate([[0.0], np.cumsum(np.diff(u) * (f[1:] + f[:-1]) / 2)])
        return float(np.interp(math.log(sigma), u, cdf / cdf[-1], left=0.0, right=1.0))
    return float(np.mean(pooled_draws(exact.draws, "sigma") <= sigma))


def oracle_cell(row: Mapping[str, Any]) -> str:
    """The ``vs exact`` cell of one table row (its ``ComparisonRow.to_json()`` form), as
    escaped HTML: the z values (in bold beyond ``DISAGREEMENT_Z``), or the quantile."""
    if row.get("method") == "exact" and row.get("status") not in ("failed", "not applicable"):
        return "the oracle"
    z = row.get("oracle_z")
    if z:
        parts = []
        for key in QUANTITIES:
            value = z.get(key)
            if value is None:
                continue
            text = f"{_SHORT[key]}\N{NO-BREAK SPACE}{value:+.1f}".replace("-", "\N{MINUS SIGN}")
            text = html.escape(text)
            parts.append(f"<b>{text}</b>" if abs(value) > DISAGREEMENT_Z else text)
        return ("z: " + ", ".join(parts)) if parts else ""
    q = row.get("oracle_quantile")
    if q is not None:
        shown = "&lt;0.001" if q < 0.001 else "&gt;0.999" if q > 0.999 else f"{q:.3f}"
        return f"quantile {shown}"
    return ""


# --------------------------------------------------------------------------- helpers


def _scalar_sigma_draws(summary: MethodSummary) -> np.ndarray | None:
    """The sigma draws as (chain, draw), or None (no draws, or sigma per feature)."""
    tree = summary.draws
    if tree is None or "posterior" not in tree.children or "sigma" not in tree["posterior"]:
        return None
    values = np.asarray(tree["posterior"]["sigma"].values, dtype=float)
    return values if values.ndim == 2 else None


def scale_estimates(sigma: np.ndarray) -> dict[str, tuple[float, float]]:
    """The posterior mean and 2.5% and 97.5% quantiles of a scale from its (chain, draw)
    draws, each with its MCSE (nan if unknown), keyed ``sigma_mean``, ``sigma_q025``,
    ``sigma_q975``."""
    pooled = sigma.ravel()
    with warnings.catch_warnings():
        # Too few draws: ArviZ divides by zero and returns nan, which is then left out.
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_se = float(azs.mcse(sigma, method="mean"))
        tail_se = [float(azs.mcse(sigma, method="quantile", prob=p)) for p in _TAILS]
    lo, hi = np.quantile(pooled, _TAILS)
    return {
        "sigma_mean": (float(pooled.mean()), mean_se),
        "sigma_q025": (float(lo), tail_se[0]),
        "sigma_q975": (float(hi), tail_se[1]),
    }


def usable_error(error: Any) -> bool:
    """Whether a standard error is a positive finite number (else its z is left out)."""
    return error is not None and math.isfinite(float(error)) and float(error) > 0


def remedy(summary: MethodSummary, bad: set[str]) -> str:
    """What to do about a disagreement in the quantities ``bad`` (``"log_evidence"`` among
    them, or not), for the method at hand."""
    more = (
        "Run more draws (--draws): a chance fluctuation does not survive them, while a bias "
        "grows in units of the shrinking error."
    )
    if summary.method == "smc":
        out = [more]
        if "log_evidence" in bad:
            out.append(
                "The evidence's standard error rests on the spread of a few chains and is itself "
                "uncertain (with 4 chains |z| > 4 happens by chance in about 3% of runs): run "
                "more chains (--chains) before trusting or dismissing the gap."
            )
        if summary.extra.get("model") == "collapsed":
            out.append(
                "This run already moved on the collapsed model (the scales only): take smaller "
                "tempering steps (smc_evidence(..., threshold=0.95)) and compare with NUTS."
            )
        elif bad - {"log_evidence"} or summary.extra.get("model") == "full":
            out.append(
                "On the full hierarchical model SMC moves every weight through the tempered "
                "posteriors and its particles do not fully re-equilibrate between stages "
                "(MATH.md section 8): run SMC on the collapsed model (model='collapsed', the "
                "scales only, w integrated out), and take the posterior of sigma from NUTS."
            )
        return " ".join(out)
    if summary.method == "nuts":
        if summary.extra.get("parametrization") == "marginal":
            switch = (
                "This run already sampled the collapsed model (parametrization='marginal'): "
                "check the diagnostics, raise target_accept, or try "
                "parametrization='noncentered'."
            )
        else:
            switch = (
                "Sample the collapsed model (parametrization='marginal'), where no funnel is "
                "left, or another parametrisation."
            )
        return f"{more} If it persists the sampler misses part of the posterior. {switch}"
    return f"{more} If it persists the method is biased for this model."
