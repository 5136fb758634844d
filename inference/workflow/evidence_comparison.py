"""Model comparison by the evidence: log p(y | model) and Bayes factors, SMC beside exact.

:func:`compare_evidence` runs :func:`hyperbayes.inference.methods.smc.smc_evidence` on each competing model of
the same target y -- other hyperpriors on sigma, other feature subsets, other polynomial
degrees -- and returns the project's model-comparison table (:class:`EvidenceTable`), with
the exact oracle's values beside the SMC estimates wherever the oracle applies.
:func:`polynomial_dataset` builds the polynomial-degree candidates from a 1-D x.

Bayes factors: log BF(a : b) = log p(y | a) - log p(y | b). The models are run with
independent seeds, so the standard error of a log Bayes factor is sqrt(se_a^2 + se_b^2).
On Jeffreys' scale, |log BF| < 1 is barely worth mentioning, 1 to 3 positive, 3 to 5 strong,
above 5 very strong (Kass and Raftery 1995, in nats: log 3, log 20, log 150).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from hyperbayes.inference.methods.results import json_safe
from hyperbayes.inference.methods.smc import Kernel, Route, SmcResult, smc_evidence
from hyperbayes.models.data import DataError, Dataset
from hyperbayes.models.hyperpriors import Hyperprior, parse_hyperprior

__all__ = ["Candidate", "EvidenceRow", "EvidenceTable", "compare_evidence", "polynomial_dataset"]


@dataclass(frozen=True)
class Candidate:
    """One competing model: its name, its design matrix (as a Dataset) and its priors.

    Give exactly one of ``noise`` (known delta) and ``noise_prior`` (delta learned).
    """

    name: str
    data: Dataset
    hyperprior: Hyperprior | str
    noise: float | None = None
    noise_prior: Hyperprior | str | None = None

    def __post_init__(self) -> None:
        if (self.noise is None) == (self.noise_prior is None):
            raise ValueError(f"candidate {self.name!r}: give exactly one of noise and noise_prior.")
        object.__setattr__(self, "hyperprior", parse_hyperprior(self.hyperprior))


@dataclass(frozen=True)
class EvidenceRow:
    """One model of the table. ``log_bf`` is against the table's reference model."""

    name: str
    d: int
    hyperprior: str
    log_evidence: float
    log_evidence_se: float
    exact_log_evidence: float | None
    log_bf: float
    log_bf_se: float
    exact_log_bf: float | None
    n_stages: int
    wall_time: float
    warnings: tuple[str, ...] = ()

    @property
    def error(self) -> float | None:
        """SMC minus exact log evidence (None when the oracle does not apply)."""
        if self.exact_log_evidence is None:
            return None
        return self.log_evidence - self.exact_log_evidence


@dataclass(frozen=True)
class EvidenceTable:
    """The model-comparison table: one :class:`EvidenceRow` per candidate, in input order.

    ``model`` is the model SMC ran on (``"collapsed"`` or ``"full"``, see
    :func:`hyperbayes.inference.methods.smc.smc_evidence`).
    """

    rows: tuple[EvidenceRow, ...]
    reference: str
    draws: int
    chains: int
    kernel: str
    model: str = "collapsed"
    results: tuple[SmcResult, ...] = field(repr=False, default=())

    def row(self, name: str) -> EvidenceRow:
        """The row of model ``name``."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no model {name!r}; the models are {[r.name for r in self.rows]}.")

    def log_bayes_factor(self, a: str, b: str) -> tuple[float, float, float | None]:
        """log BF(a : b) by SMC, its standard error, and the exact value (or None)."""
        ra, rb = self.row(a), self.row(b)
        exact = None
        if ra.exact_log_evidence is not None and rb.exact_log_evidence is not None:
            exact = ra.exact_log_evidence - rb.exact_log_evidence
        return (
            ra.log_evidence - rb.log_evidence,
            math.hypot(ra.log_evidence_se, rb.log_evidence_se),
            exact,
        )

    @property
    def best(self) -> str:
        """The model with the largest SMC log evidence."""
        return max(self.rows, key=lambda r: r.log_evidence).name

    def to_json(self) -> dict[str, Any]:
        """Strict-JSON form (nan -> null)."""
        rows = [
            {
                "name": r.name,
                "d": r.d,
                "hyperprior": r.hyperprior,
                "log_evidence": r.log_evidence,
                "log_evidence_se": r.log_evidence_se,
                "exact_log_evidence": r.exact_log_evidence,
                "error": r.error,
                "log_bf": r.log_bf,
                "log_bf_se": r.log_bf_se,
                "exact_log_bf": r.exact_log_bf,
                "n_stages": r.n_stages,
                "wall_time": r.wall_time,
                "warnings": list(r.warnings),
            }
            for r in self.rows
        ]
        meta = {"reference": self.reference, "draws": self.draws, "chains": self.chains}
        return json_safe({**meta, "kernel": self.kernel, "model": self.model, "rows": rows})

    def to_text(self) -> str:
        """A fixed-width table for terminals and notebooks."""
        head = (
            f"{'model':<22}{'D':>4}  {'log Z (SMC)':>14}  {'exact':>10}  {'error':>7}  "
            f"{'log BF':>14}  {'exact BF':>9}"
        )
        lines = [head, "-" * len(head)]
        for r in self.rows:
            ex = f"{r.exact_log_evidence:10.3f}" if r.exact_log_evidence is not None else " " * 10
            err = f"{r.error:+7.3f}" if r.error is not None else " " * 7
            xbf = f"{r.exact_log_bf:+9.3f}" if r.exact_log_bf is not None else " " * 9
            lines.append(
                f"{r.name:<22}{r.d:>4}  {r.log_evidence:8.3f}+-{r.log_evidence_se:<4.2f}  {ex}  "
                f"{err}  {r.log_bf:+8.3f}+-{r.log_bf_se:<4.2f}  {xbf}"
            )
        lines.append(
            f"log BF is against {self.reference!r}; positive favours the row's model. "
            f"SMC on the {self.model} model."
        )
        return "\n".join(lines)


def compare_evidence(
    candidates: Sequence[Candidate],
    *,
    draws: int = 2000,
    chains: int = 4,
    seed: int,
    model: Route = "collapsed",
    kernel: Kernel = "imh",
    reference: str | None = None,
    cores: int = 1,
    exact: bool = True,
) -> EvidenceTable:
    """Log evidence and Bayes factors of competing models of the same target, by SMC.

    Parameters
    ----------
    candidates : sequence of Candidate
        The models, each with its own design matrix and priors; all must share y.
    draws, chains, model, kernel, cores
        Passed to :func:`hyperbayes.inference.methods.smc.smc_evidence` for every model
        (``model``: SMC on the collapsed model, the default, or on the full hierarchical one).
    seed : int
        Each model gets its own stream, spawned from this seed (independent runs).
    reference : str, optional
        The model the Bayes factors are taken against (default: the first).
    exact : bool
        Put the exact oracle's values beside the SMC ones where the oracle applies.

    Returns
    -------
    EvidenceTable

    Raises
    ------
    ValueError
        Fewer than two candidates, duplicate names, or an unknown reference.
    DataError
        Candidates whose targets differ: evidences of different data are not comparable.

    Notes
    -----
    p(y | M) is comparable across models only for the same y (same rows, same centring).
    The Bayes factor BF(a : b) = p(y | a) / p(y | b) is the posterior odds of a over b at
    prior odds 1 (Kass and Raftery 1995, JASA 90(430), 773-795). SMC warnings of each model
    (see :func:`hyperbayes.inference.methods.smc.smc_evidence`) are kept in its row.
    """
    if len(candidates) < 2:
        raise ValueError("compare_evidence needs at least two candidate models.")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names must be unique, got {names}.")
    reference = names[0] if reference is None else reference
    if reference not in names:
        raise ValueError(f"unknown reference {reference!r}; the models are {names}.")
    y0 = candidates[0].data.y
    for c in candidates[1:]:
        if c.data.y.shape != y0.shape or not np.array_equal(c.data.y, y0):
            raise DataError(
                f"candidate {c.name!r} has a different target y from {names[0]!r}: the "
                "evidence compares models of the same data; use the same rows and centring."
            )
    seeds = np.random.SeedSequence(seed).generate_state(len(candidates))
    results = tuple(
        smc_evidence(
            c.data,
            hyperprior=c.hyperprior,
            noise=c.noise,
            noise_prior=c.noise_prior,
            draws=draws,
            chains=chains,
            seed=int(s),
            model=model,
            kernel=kernel,
            cores=cores,
            exact=exact,
        )
        for c, s in zip(candidates, seeds, strict=True)
    )
    ref = results[names.index(reference)]
    rows = tuple(_row(c, r, ref) for c, r in zip(candidates, results, strict=True))
    return EvidenceTable(rows, reference, draws, chains, kernel, model, results)


def polynomial_dataset(
    x: ArrayLike, y: ArrayLike, *, degree: int, standardize: bool = True
) -> Dataset:
    """Features x, x^2, ..., x^degree of a 1-D input, centred, for polynomial-degree candidates.

    Columns are centred (and, with ``standardize``, scaled to unit standard deviation) so one
    prior scale sigma suits every power; y is centred, so every degree shares the same target
    and their evidences are comparable. Names are ``x^1``, ``x^2``, ...
    """
    if int(degree) != degree or degree < 1:
        raise ValueError(f"degree must be a positive integer, got {degree!r}.")
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    X = np.column_stack([x**k for k in range(1, degree + 1)])
    X = X - X.mean(axis=0)
    if standardize:
        sd = X.std(axis=0)
        X = X / np.where(sd > 0, sd, 1.0)
    names = [f"x^{k}" for k in range(1, degree + 1)]
    return Dataset.from_arrays(X, y - y.mean(), feature_names=names)


def _row(c: Candidate, r: SmcResult, ref: SmcResult) -> EvidenceRow:
    same = r is ref
    exact_bf = None
    if r.exact_log_evidence is not None and ref.exact_log_evidence is not None:
        exact_bf = r.exact_log_evidence - ref.exact_log_evidence
    return EvidenceRow(
        name=c.name,
        d=c.data.d,
        hyperprior=str(c.hyperprior),
        log_evidence=r.log_evidence,
        log_evidence_se=r.log_evidence_se,
        exact_log_evidence=r.exact_log_evidence,
        log_bf=r.log_evidence - ref.log_evidence,
        log_bf_se=0.0 if same else math.hypot(r.log_evidence_se, ref.log_evidence_se),
        exact_log_bf=exact_bf,
        n_stages=max(r.n_stages),
        wall_time=r.wall_time,
        warnings=r.warnings,
    )
