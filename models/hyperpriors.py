"""Hyperpriors on a scale parameter (the prior scale sigma, or the noise scale delta).

A :class:`Hyperprior` is a small value object: it parses from the CLI's string form, knows
its log density *as a density over the scale itself* (for the exact oracle), and adds itself
to a PyMC model. Every form::

    halfnormal:SCALE       sigma ~ HalfNormal(SCALE)
    halfcauchy:SCALE       sigma ~ HalfCauchy(SCALE)
    exponential:SCALE      sigma ~ Exponential with mean SCALE
    invgamma:ALPHA,BETA    sigma^2 ~ InverseGamma(ALPHA, BETA)  (a prior on the variance)
    loguniform:LOWER,UPPER sigma ~ LogUniform(LOWER, UPPER), density 1 / (sigma log(UPPER/LOWER))
    flat                   improper flat density on sigma > 0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

__all__ = ["FORMS", "Hyperprior", "ImproperPriorError", "default_hyperpriors", "noise_spec", "parse_hyperprior"]

Kind = Literal["halfnormal", "halfcauchy", "exponential", "invgamma", "loguniform", "flat"]

#: Parameter names of every form, in the order the string form lists them.
FORMS: dict[str, tuple[str, ...]] = {
    "halfnormal": ("scale",),
    "halfcauchy": ("scale",),
    "exponential": ("scale",),
    "invgamma": ("alpha", "beta"),
    "loguniform": ("lower", "upper"),
    "flat": (),
}

_USAGE = (
    "valid forms: halfnormal:SCALE, halfcauchy:SCALE, exponential:SCALE (mean SCALE), "
    "invgamma:ALPHA,BETA (on sigma^2), loguniform:LOWER,UPPER, flat"
)


class ImproperPriorError(ValueError):
    """A method needs a proper (normalisable) hyperprior and was given ``flat``."""


@dataclass(frozen=True)
class Hyperprior:
    """A prior on a positive scale parameter.

    Use :func:`parse_hyperprior` for the string form, or construct directly:
    ``Hyperprior("halfnormal", (2.0,))``.
    """

    kind: Kind
    params: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in FORMS:
            raise ValueError(f"unknown hyperprior {self.kind!r}; {_USAGE}.")
        names = FORMS[self.kind]
        if len(self.params) != len(names):
            raise ValueError(
                f"{self.kind} takes {len(names)} parameter(s) ({', '.join(names) or 'none'}), "
                f"got {len(self.params)}; {_USAGE}."
            )
        object.__setattr__(self, "params", tuple(float(p) for p in self.params))
        for name, value in zip(names, self.params, strict=True):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(
                    f"{self.kind}: {name} must be a positive number, got {value}; {_USAGE}."
                )
        if self.kind == "loguniform" and not self.params[0] < self.params[1]:
            raise ValueError(f"loguniform needs LOWER < UPPER, got {self.params}; {_USAGE}.")

    def __str__(self) -> str:
        if not self.params:
            return self.kind
        # Short form where it is exact, else repr, so that parse_hyperprior(str(h)) == h.
        return f"{self.kind}:" + ",".join(
            f"{p:g}" if float(f"{p:g}") == p else repr(p) for p in self.params
        )

    @property
    def proper(self) -> bool:
        """Whether the density integrates to one (``flat`` does not)."""
        return self.kind != "flat"

    def require_proper(self, purpose: str) -> None:
        """Raise :class:`ImproperPriorError` unless proper; ``purpose`` says what needs it."""
        if not self.proper:
            raise ImproperPriorError(
                f"{purpose} needs a proper hyperprior, but 'flat' does not integrate to one "
                "(the evidence would be infinite and the prior cannot be sampled); choose e.g. "
                "halfnormal:1 or loguniform:1e-3,1e3."
            )

    def support(self) -> tuple[float, float]:
        """The interval of scales with positive density."""
        if self.kind == "loguniform":
            return self.params[0], self.params[1]
        return 0.0, np.inf

    def logpdf(self, scale: ArrayLike) -> NDArray[np.float64]:
        """Log density over the scale (``flat``: 0, unnormalised), -inf outside the support.

        For ``invgamma`` the prior is stated on the variance; the density over the scale
        includes the change of variables: p(sigma) = p_IG(sigma^2) * 2 sigma.
        """
        s = np.asarray(scale, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            match self.kind:
                case "halfnormal":
                    out = stats.halfnorm.logpdf(s, scale=self.params[0])
                case "halfcauchy":
                    out = stats.halfcauchy.logpdf(s, scale=self.params[0])
                case "exponential":
                    out = stats.expon.logpdf(s, scale=self.params[0])
                case "invgamma":
                    a, b = self.params
                    out = stats.invgamma.logpdf(s**2, a, scale=b) + np.log(2 * s)
                case "loguniform":
                    out = stats.loguniform.logpdf(s, *self.params)
                case "flat":
                    out = np.where(s > 0, 0.0, -np.inf)
        return np.where(s > 0, out, -np.inf)

    def ppf(self, q: ArrayLike) -> NDArray[np.float64]:
        """Quantile function (for proper priors), used to draw from and bracket the prior."""
        self.require_proper("a quantile of the hyperprior")
        q = np.asarray(q, dtype=float)
        match self.kind:
            case "halfnormal":
                return stats.halfnorm.ppf(q, scale=self.params[0])
            case "halfcauchy":
                return stats.halfcauchy.ppf(q, scale=self.params[0])
            case "exponential":
                return stats.expon.ppf(q, scale=self.params[0])
            case "invgamma":
                a, b = self.params
                return np.sqrt(stats.invgamma.ppf(q, a, scale=b))
            case "loguniform":
                return stats.loguniform.ppf(q, *self.params)
        raise AssertionError(self.kind)  # pragma: no cover

    def rvs(self, size: int | tuple[int, ...], *, seed: int | np.random.Generator) -> NDArray:
        """Draws from the prior, by inverse CDF with the given seed."""
        rng = np.random.default_rng(seed)
        return self.ppf(rng.uniform(size=size))


def parse_hyperprior(spec: str | Hyperprior) -> Hyperprior:
    """Parse the string form (e.g. ``"halfnormal:2"``, ``"invgamma:2,1"``, ``"flat"``).

    Raises
    ------
    ValueError
        An unknown name, a wrong number of parameters or a non-positive parameter; the message
        lists the valid forms.
    """
    if isinstance(spec, Hyperprior):
        return spec
    text = str(spec).strip().lower()
    name, _, rest = text.partition(":")
    if name not in FORMS:
        raise ValueError(f"unknown hyperprior {spec!r}; {_USAGE}.")
    try:
        params = tuple(float(p) for p in rest.split(",")) if rest else ()
    except ValueError:
        raise ValueError(f"could not read the numbers in hyperprior {spec!r}; {_USAGE}.") from None
    return Hyperprior(name, params)  # type: ignore[arg-type]


def default_hyperpriors(data) -> tuple[Hyperprior, Hyperprior]:
    """Weakly informative defaults scaled to the data: (prior on sigma, prior on delta).

    sigma ~ HalfNormal(sd(y) / rms sd(x_j)): a weight of that size moves y by about one
    standard deviation per feature standard deviation. delta ~ HalfNormal(sd(y)): the noise
    cannot be much larger than the spread of y. Both are rounded to 3 significant digits so
    the spec prints cleanly. For standardised data both are HalfNormal(1).
    """
    sd_y = float(np.std(data.y)) or 1.0
    sd_x = float(np.sqrt(np.mean(np.var(data.X, axis=0)))) or 1.0
    return (
        Hyperprior("halfnormal", (float(f"{sd_y / sd_x:.3g}"),)),
        Hyperprior("halfnormal", (float(f"{sd_y:.3g}"),)),
    )


def noise_spec(
    noise: float | None, noise_prior: Hyperprior | str | None
) -> float | Hyperprior | str:
    """The ``noise`` argument of the builders from the methods' pair of options.

    Exactly one must be given: a known noise scale, or a prior to learn it with.
    """
    if (noise is None) == (noise_prior is None):
        raise ValueError(
            "give exactly one of noise (a known noise scale) and noise_prior (to learn it), "
            f"got noise={noise!r}, noise_prior={noise_prior!r}."
        )
    return noise if noise is not None else noise_prior
