"""The one contract every method shares: options in, a :class:`MethodSummary` out.

Each method module (``exact``, ``empirical_bayes``, ``joint_map``, ``nuts``, ``smc``,
``cross_validation``) has its own frozen result type with everything it computed, and a
``run(data, options) -> MethodSummary`` entry point that the CLI and ``compare`` call in a
loop. The summary's JSON form is the ``fit --json`` contract scripts depend on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hyperbayes.models.data import Centering
from hyperbayes.models.hyperpriors import Hyperprior, noise_spec

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
    """

    hyperprior: Hyperprior
    noise: float | None
    noise_prior: Hyperprior | None
    seed: int = 0
    draws: int | None = None
    chains: int | None = None
    ard: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        noise_spec(self.noise, self.noise_prior)  # exactly one: known, or learned with a prior
        if self.noise is not None and not (math.isfinite(self.noise) and self.noise > 0):
            raise ValueError(f"the noise scale must be a positive number, got {self.noise}.")
        for name in ("draws", "chains"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}.")

    @property
    def learn_noise(self) -> bool:
        return self.noise is None


@dataclass(frozen=True)
class MethodSummary:
    """What every method reports, in the same shape (the ``fit --json`` contract).

    ``draws`` (an ArviZ DataTree, or None) and ``wall_time`` are not part of the JSON object's
    required keys; ``extra`` holds method-specific JSON keys (e.g. ``kind``, ``lambda``).
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

    def with_centering(self, centering: Centering | None) -> MethodSummary:
        """The same summary with the intercept implied by ``centering`` (None: no intercept)."""
        if centering is None or not self.weights:
            return self
        return replace(self, intercept=centering.intercept(self.weights))

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
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return json_safe(out)


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
