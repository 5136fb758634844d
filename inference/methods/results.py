"""The one contract every method shares: options in, a :class:`MethodSummary` out.

Each method module (``exact``, ``empirical_bayes``, ``joint_map``, ``nuts``, ``smc``,
``cross_validation``) has its own frozen result type with everything it computed, and a
``run(data, options) -> MethodSummary`` entry point that the CLI and ``compare`` call in a
loop. The summary's JSON form is the ``fit --json`` contract scripts depend on; in Jupyter a
summary shows itself as a small table, and ``to_pandas()`` gives it as a one-row DataFrame.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from hyperbayes.models.data import Centering
from hyperbayes.models.hyperpriors import Hyperprior, OptionError, noise_spec

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MethodSummary", "RunOptions", "json_safe"]


@dataclass(frozen=True)
class RunOptions:
    """Options shared by every method's ``run``; a method ignores what does not apply to it.

    Attributes
    ----------
    hyperprior : Hyperprior
        Prior on the weight scale sigma.
    noise : float or None
        Known noise scale delta, or None to learn it with ``noise_prior``.
    noise_prior : Hyperprior or None
        Prior on delta when it is learned; exactly one of ``noise`` and ``noise_prior`` is given.
    seed : int
        Seed for every random step.
    draws, chains : int or None
        Sampler sizes (None: the method's default).
    ard : bool
        One prior scale per feature, where the method supports it.
    progress : bool
        Show progress on stderr.
    convention : {"reml", "ml"}
        Empirical Bayes on a model specification: restricted (default) or profile likelihood.
    """

    hyperprior: Hyperprior
    noise: float | None
    noise_prior: Hyperprior | None
    seed: int = 0
    draws: int | None = None
    chains: int | None = None
    ard: bool = False
    progress: bool = False
    convention: str = "reml"

    def __post_init__(self) -> None:
        """Raise :class:`~hyperbayes.models.hyperpriors.OptionError` (a ValueError) for a bad
        value, before any method runs."""
        noise_spec(self.noise, self.noise_prior)  # exactly one: known, or learned with a prior
        if self.noise is not None and not (math.isfinite(self.noise) and self.noise > 0):
            raise OptionError(f"the noise scale must be a positive number, got {self.noise}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise OptionError(
                f"the seed must be a whole number >= 0 (0, 1, 2, ...), got {self.seed!r}; "
                "NumPy's and the samplers' random streams take no negative seeds."
            )
        if self.convention not in ("reml", "ml"):
            raise OptionError(f"convention must be 'reml' or 'ml', got {self.convention!r}.")
        for name in ("draws", "chains"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise OptionError(f"{name} must be at least 1, got {value}.")

    @property
    def learn_noise(self) -> bool:
        return self.noise is None


@dataclass(frozen=True)
class MethodSummary:
    """What every method reports, in the same shape (the ``fit --json`` contract).

    ``draws`` (an ArviZ DataTree, or None) and ``wall_time`` are not part of the JSON object's
    required keys; ``extra`` holds method-specific JSON keys (e.g. ``kind``, ``lambda``).

    A run on a model specification (groups, fixed effects, a random intercept) also fills the
    family fields, which go into the JSON when set:

    - ``sigmas``: every group's scale by group name (``sigma`` is that scale when there is one
      group, else None), with ``sigma_intervals`` (95%, where the method gives one);
    - ``fixed_effects``: name -> (estimate or posterior mean, standard error or posterior sd),
      the intercept first (``intercept`` is its estimate);
    - ``random_effects``: group name -> level -> (mean, sd) of the level's deviation u_l.
    """

    method: str
    sigma: float | None
    sigma_interval: tuple[float, float] | None
    noise: float | None
    log_evidence: float | None
    weights: tuple[float, ...]
    degenerate: bool = False
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    intercept: float | None = None
    draws: Any = None
    wall_time: float | None = None
    sigmas: Mapping[str, float] | None = None
    sigma_intervals: Mapping[str, tuple[float, float]] | None = None
    fixed_effects: Mapping[str, tuple[float, float]] | None = None
    random_effects: Mapping[str, Mapping[str, tuple[float, float]]] | None = None

    def with_centering(self, centering: Centering | None) -> MethodSummary:
        """The same summary with the intercept implied by ``centering`` (None: no intercept)."""
        if centering is None or not self.weights:
            return self
        return replace(self, intercept=centering.intercept(self.weights))

    def _repr_html_(self) -> str:
        """A two-column HTML table of the main fields and scalar extras, then the warnings
        (Jupyter shows a summary with it); every text is escaped."""
        interval = self.sigma_interval
        fields: dict[str, Any] = {
            **{f"sigma[{k}]": v for k, v in (self.sigmas or {}).items()},
            **{f"beta[{k}]": f"{m:.4g} ± {s:.2g}" for k, (m, s) in (self.fixed_effects or {}).items()},
            "sigma": self.sigma,
            "95% interval of sigma": f"[{interval[0]:.4g}, {interval[1]:.4g}]" if interval else None,
            "noise": self.noise,
            "log evidence": self.log_evidence,
            "intercept": self.intercept,
            "weights": _short_list(self.weights),
            "degenerate": self.degenerate,
            "time (s)": None if self.wall_time is None else f"{self.wall_time:.2f}",
        }
        for key, value in self._scalar_extra().items():
            fields.setdefault(key, value)
        rows = "".join(
            f"<tr><th>{html.escape(name)}</th><td>{html.escape(_cell(value))}</td></tr>"
            for name, value in fields.items()
            if value is not None
        )
        notes = "".join(f"<li>{html.escape(w)}</li>" for w in self.warnings)
        return (
            f"<p><b>{html.escape(self.method)}</b> (hyperbayes MethodSummary)</p>"
            f'<table style="text-align:left">{rows}</table>'
            + (f"<p>Warnings:</p><ul>{notes}</ul>" if notes else "")
        )

    def to_pandas(self) -> pd.DataFrame:
        """The summary as a one-row pandas DataFrame.

        One row rather than a Series, so that summaries stack into a table with
        ``pandas.concat([s.to_pandas() for s in summaries])`` (columns a method lacks are NaN).

        Returns
        -------
        pandas.DataFrame
            Indexed by ``method``. Columns: ``sigma``, ``sigma_lower``, ``sigma_upper`` (the
            95% interval), ``noise``, ``log_evidence``, ``intercept``, ``wall_time`` (floats,
            NaN where absent), ``degenerate``; then the method's scalar extras in their order
            (e.g. ``kind``, ``lambda``); then ``weights`` and ``warnings`` (tuples).
        """
        import pandas as pd

        lower, upper = self.sigma_interval if self.sigma_interval else (None, None)
        numbers = {
            "sigma": self.sigma,
            "sigma_lower": lower,
            "sigma_upper": upper,
            "noise": self.noise,
            "log_evidence": self.log_evidence,
            "intercept": self.intercept,
            "wall_time": self.wall_time,
        }
        record: dict[str, Any] = {k: math.nan if v is None else float(v) for k, v in numbers.items()}
        record["degenerate"] = bool(self.degenerate)
        for name, value in (self.sigmas or {}).items():
            record.setdefault(f"sigma[{name}]", float(value))
        for key, value in self._scalar_extra().items():
            record.setdefault(key, value)
        record |= {"weights": tuple(self.weights), "warnings": tuple(self.warnings)}
        return pd.DataFrame([record], index=pd.Index([self.method], name="method"))

    def _scalar_extra(self) -> dict[str, Any]:
        """The method-specific keys whose values are single numbers, flags or words."""
        return {
            str(k): v
            for k, v in self.extra.items()
            if isinstance(v, str | bool | int | float | np.bool_ | np.integer | np.floating)
        }

    def to_json(self) -> dict[str, Any]:
        """The JSON object: required keys first, then the method-specific ones."""
        out = {
            "method": self.method,
            "sigma": self.sigma,
            "sigma_interval": list(self.sigma_interval) if self.sigma_interval else None,
            "noise": self.noise,
            "log_evidence": self.log_evidence,
            "weights": list(self.weights),
            "intercept": self.intercept,
            "degenerate": bool(self.degenerate),
            "diagnostics": dict(self.diagnostics),
            "warnings": list(self.warnings),
            "wall_time": self.wall_time,
        }
        for key in ("sigmas", "sigma_intervals", "fixed_effects", "random_effects"):
            value = getattr(self, key)
            if value is not None:
                out[key] = _family_json(key, value)
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return json_safe(out)


def _family_json(key: str, value: Mapping[str, Any]) -> Any:
    """The family fields as JSON: pairs become {"mean", "sd"} objects (intervals stay pairs)."""
    if key == "fixed_effects":
        return {k: {"estimate": m, "se": s} for k, (m, s) in value.items()}
    if key == "random_effects":
        return {g: {lv: {"mean": m, "sd": s} for lv, (m, s) in levels.items()}
                for g, levels in value.items()}
    return {k: list(v) if isinstance(v, tuple | list) else v for k, v in value.items()}


def _cell(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return str(value)


def _short_list(values: tuple[float, ...], *, shown: int = 8) -> str:
    text = ", ".join(f"{v:.4g}" for v in values[:shown])
    more = f", ... ({len(values)} in all)" if len(values) > shown else ""
    return f"[{text}{more}]"


def json_safe(value: Any) -> Any:
    """Convert NumPy scalars/arrays and non-finite floats (-> None) for strict JSON."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        value = float(value)
        return value if math.isfinite(value) else None
    return value
