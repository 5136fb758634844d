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

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from hyperbayes.models.data_checks import SCALE_RANGE, DataError

__all__ = [
    "FORMS",
    "Hyperprior",
    "ImproperPriorError",
    "OptionError",
    "check_scales",
    "default_hyperpriors",
    "noise_spec",
    "parse_hyperprior",
]

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


class OptionError(ValueError):
    """An option cannot be used as given (a malformed prior spec, a scale out of range, a
    negative seed); the message names the option and the fix. Bad input, like a DataError."""


class ImproperPriorError(ValueError):
    """The posterior (or a prior that a method samples or integrates) does not integrate.

    Raised when a method needs a proper hyperprior and was given ``flat``, and by
    :func:`hyperbayes.models.propriety.require_proper_posterior` when the data and priors
    give an improper posterior; the message says why and what to choose instead.
    """


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
            raise OptionError(f"unknown hyperprior {self.kind!r}; {_USAGE}.")
        names = FORMS[self.kind]
        if len(self.params) != len(names):
            raise OptionError(
                f"{self.kind} takes {len(names)} parameter(s) ({', '.join(names) or 'none'}), "
                f"got {len(self.params)}; {_USAGE}."
            )
        object.__setattr__(self, "params", tuple(float(p) for p in self.params))
        for name, value in zip(names, self.params, strict=True):
            if not (np.isfinite(value) and value > 0):
                raise OptionError(
                    f"{self.kind}: {name} must be a positive number, got {value}; {_USAGE}."
                )
        if self.kind == "loguniform" and not self.params[0] < self.params[1]:
            raise OptionError(f"loguniform needs LOWER < UPPER, got {self.params}; {_USAGE}.")

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

    def typical_scale(self) -> float | None:
        """A representative scale under this prior, for range checks (None for ``flat``).

        SCALE for the one-parameter forms, sqrt(BETA / ALPHA) for ``invgamma`` (sigma^2 ~
        InverseGamma(ALPHA, BETA)), the geometric mean sqrt(LOWER * UPPER) for ``loguniform``.
        """
        match self.kind:
            case "flat":
                return None
            case "invgamma":
                return math.sqrt(self.params[1] / self.params[0])
            case "loguniform":
                return math.sqrt(self.params[0]) * math.sqrt(self.params[1])
        return self.params[0]

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
    OptionError
        An unknown name, a wrong number of parameters or a non-positive parameter; the message
        lists the valid forms. (A ``ValueError``.)
    """
    if isinstance(spec, Hyperprior):
        return spec
    text = str(spec).strip().lower()
    name, _, rest = text.partition(":")
    if name not in FORMS:
        raise OptionError(f"unknown hyperprior {spec!r}; {_USAGE}.")
    try:
        params = tuple(float(p) for p in rest.split(",")) if rest else ()
    except ValueError:
        raise OptionError(f"could not read the numbers in hyperprior {spec!r}; {_USAGE}.") from None
    return Hyperprior(name, params)  # type: ignore[arg-type]


def default_hyperpriors(data) -> tuple[Hyperprior, Hyperprior]:
    """Weakly informative defaults scaled to the data: (prior on sigma, prior on delta).

    sigma ~ HalfNormal(sd(y) / rms sd(x_j)): a weight of that size moves y by about one
    standard deviation per feature standard deviation. delta ~ HalfNormal(sd(y)): the noise
    cannot be much larger than the spread of y. Both are rounded to 3 significant digits so
    the spec prints cleanly. For standardised data both are HalfNormal(1).
    """
    if hasattr(data, "column_moments"):  # streamed data: the same numbers from the statistics
        sd_y, sd_x = (m or 1.0 for m in data.column_moments()[:2])
    else:
        sd_y = float(np.std(data.y)) or 1.0
        sd_x = float(np.sqrt(np.mean(np.var(data.X, axis=0)))) or 1.0
    return (
        Hyperprior("halfnormal", (float(f"{sd_y / sd_x:.3g}"),)),
        Hyperprior("halfnormal", (float(f"{sd_y:.3g}"),)),
    )


#: The smallest usable noise scale is this multiple of sqrt(eps * y.y): there the round-off of
#: the residual sum of squares (~eps * y.y, from v - 2 w.b + w^T G w), divided by the noise
#: variance, adds ~0.01 nats to the log likelihood. Measured (N = 30, sd(y) = 1.4, floor
#: 1.1e-6): a known noise of 1e-7 sd(y) (0.7 nats of round-off) gave the exact posterior mean of
#: sigma to three digits; 1e-8 sd(y) (66 nats) moved it by 13%, 1e-9 sd(y) crashed the oracle.
NOISE_ROUNDOFF = 10.0


def check_scales(
    data, *, hyperprior: Hyperprior, noise: float | None, noise_prior: Hyperprior | None
) -> None:
    """Refuse scales that float64 cannot work with for these data, before any method runs.

    ``data`` is the data as the methods see them (centred for an intercept). Its scales are
    the root mean squares of y and of X (sd(y) and rms sd(x_j) once centred) and their ratio,
    the weights' scale: each must lie in :data:`~hyperbayes.models.data_checks.SCALE_RANGE`.
    The prior on sigma must have its :meth:`Hyperprior.typical_scale` within that range times
    the weights' scale; a known noise scale, and that of the noise prior, within it times
    sd(y), and above the round-off floor ``NOISE_ROUNDOFF * sqrt(eps * y.y)``.

    Raises
    ------
    DataError
        y or X is all zeros, or the weights' scale is out of range.
    OptionError
        A scale option is out of range; the message gives the usable range for these data.
    """
    lo, hi = SCALE_RANGE
    if hasattr(data, "column_moments"):  # streamed data: the same numbers from the statistics
        y_scale, x_scale = data.column_moments()[2:]
        v = y_scale**2 * data.n
    else:
        y, X = np.asarray(data.y, dtype=float), np.asarray(data.X, dtype=float)
        v = float(y @ y)
        y_scale, x_scale = math.sqrt(v / y.size), math.sqrt(float(np.mean(X**2)))
    if y_scale == 0 or x_scale == 0:
        what = f"the target {data.target_name!r} is" if y_scale == 0 else "every column of X is"
        raise DataError(f"{what} all zeros, so there is nothing to fit; check the data.")
    w_scale = y_scale / x_scale
    if not lo <= w_scale <= hi:
        raise DataError(
            f"the weights' scale, rms(y) / rms(X) = {y_scale:.3g} / {x_scale:.3g} = "
            f"{w_scale:.3g}, is outside the {lo:.0e} to {hi:.0e} the methods can work with in "
            "float64; rescale y or the columns of X (e.g. standardise them) and refit."
        )
    floor = NOISE_ROUNDOFF * math.sqrt(np.finfo(float).eps * v)
    noise_range = (max(floor, lo * y_scale), hi * y_scale)
    y_ref = ("sd(y)", y_scale, f"the default noise prior is halfnormal:{y_scale:.3g}")
    if noise is not None:
        known = ("sd(y)", y_scale, f"sd(y) is {y_scale:.3g}")
        _check_range("the noise scale", noise, noise_range, known, floor)
    if noise_prior is not None and noise_prior.typical_scale() is not None:
        what = f"the scale of the noise prior {noise_prior}{_SCALE_OF[noise_prior.kind]}"
        _check_range(what, noise_prior.typical_scale(), noise_range, y_ref, floor)
    if hyperprior.typical_scale() is not None:
        what = f"the scale of the hyperprior {hyperprior}{_SCALE_OF[hyperprior.kind]}"
        w_ref = (
            "the weights' scale sd(y) / rms sd(x)",
            w_scale,
            f"the default hyperprior is halfnormal:{w_scale:.3g}",
        )
        span = (lo * w_scale, hi * w_scale)
        _check_range(what, hyperprior.typical_scale(), span, w_ref, 0.0)


_SCALE_OF = {"invgamma": " (sqrt(BETA / ALPHA))", "loguniform": " (sqrt(LOWER * UPPER))"}
_SCALE_OF = dict.fromkeys(FORMS, "") | _SCALE_OF


def _check_range(what: str, value: float, span, ref: tuple[str, float, str], floor: float) -> None:
    """Raise OptionError unless ``span[0] <= value <= span[1]``; ``ref`` is the data's scale
    (its name and value) and a hint for the message."""
    a, b = span
    if a <= value <= b:
        return
    name, scale, hint = ref
    if value < a and a == floor:
        why = (
            "below that, float64 round-off in the residual sum of squares (about 1e-16 y.y), "
            "divided by the noise variance, swamps the likelihood"
        )
    else:
        why = (
            f"it is {value / scale:.1g} times {name}, {scale:.3g}; float64 cannot hold the "
            "squares and products the methods form with scales that far from the data's"
        )
    raise OptionError(
        f"{what} is {value:.3g}, outside the range these data can use, {a:.3g} to {b:.3g}: "
        f"{why}. Choose a value in that range ({hint})."
    )


def noise_spec(
    noise: float | None, noise_prior: Hyperprior | str | None
) -> float | Hyperprior | str:
    """The ``noise`` argument of the builders from the methods' pair of options.

    Exactly one must be given: a known noise scale, or a prior to learn it with.
    """
    if (noise is None) == (noise_prior is None):
        raise OptionError(
            "give exactly one of noise (a known noise scale) and noise_prior (to learn it), "
            f"got noise={noise!r}, noise_prior={noise_prior!r}."
        )
    return noise if noise is not None else noise_prior
