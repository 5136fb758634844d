"""Uniformity tests of simulation-based calibration ranks (MATH.md section 8).

A rank r in 0..L becomes a fractional rank u = (r + v) / (L + 1) with v ~ U(0, 1) drawn from
the simulation's own seed. For a calibrated method r is uniform on 0..L, and then u is exactly
uniform on (0, 1): the jitter turns the discrete test into a continuous one with no
approximation (ArviZ's ``difference_ecdf_pit`` randomises discrete PIT values the same way).
Two tests are run on the u of every quantity:

* the ECDF-difference band of Sailynoja, Burkner and Vehtari (2022): a simultaneous band for
  the ECDF of K uniform values, computed by ArviZ (``arviz_stats.ecdf_utils``: the pointwise
  binomial level that gives the stated simultaneous coverage is found by simulation); the test
  fails when the ECDF leaves the band anywhere.
* Pearson's chi-square on B equal-width bins of u (equiprobable under uniformity), with
  B = K // 10 clipped to 2..20 so that each bin expects at least 5 simulations where K allows.

With m quantities there are 2m tests; each is run at level alpha / (2m) (Bonferroni), so a
calibrated method fails the whole check with probability at most alpha (default 0.05).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from arviz_stats.ecdf_utils import (
    compute_ecdf,
    get_pointwise_confidence_band,
    simulate_confidence_bands,
)
from numpy.typing import NDArray
from scipy import stats

__all__ = [
    "ALPHA",
    "EcdfBand",
    "QuantityCheck",
    "Uniformity",
    "check_uniformity",
    "chi_square",
    "ecdf_band",
    "fractional_ranks",
    "shift_power",
]

#: Family-wise level of the whole check (all quantities, both tests).
ALPHA = 0.05
#: Uniform samples ArviZ simulates to find the band's pointwise level. The band is used at
#: level 1 - alpha / (2m) (0.99375 for four quantities), a tail quantile: 5000 samples leave
#: ~30 beyond it, against 6 with ArviZ's plotting default of 1000.
BAND_SIMULATIONS = 5000
#: Most bins of the chi-square test, and the fewest simulations expected per bin.
MAX_BINS, PER_BIN = 20, 10


@dataclass(frozen=True)
class EcdfBand:
    """A simultaneous band for the ECDF of ``n`` uniform values, at points ``z``."""

    n: int
    prob: float
    z: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]


@dataclass(frozen=True)
class QuantityCheck:
    """Both tests for one quantity: chi-square statistic, dof and p-value; whether the ECDF
    stays inside the band, and its largest distance from the uniform CDF."""

    name: str
    n: int
    chi2: float
    dof: int
    chi2_p: float
    inside_band: bool
    max_ecdf_diff: float

    def passed(self, level: float) -> bool:
        return self.inside_band and self.chi2_p >= level


@dataclass(frozen=True)
class Uniformity:
    """The uniformity checks of every quantity, at a per-test ``level`` (alpha / 2m)."""

    quantities: tuple[QuantityCheck, ...]
    alpha: float
    level: float
    bins: int
    band: EcdfBand

    @property
    def passed(self) -> bool:
        """True when no test of any quantity rejects uniformity at its level."""
        return bool(self.quantities) and all(q.passed(self.level) for q in self.quantities)

    @property
    def min_chi2_p(self) -> float:
        return min((q.chi2_p for q in self.quantities), default=float("nan"))

    @property
    def outside_band(self) -> tuple[str, ...]:
        """The quantities whose ECDF leaves the band."""
        return tuple(q.name for q in self.quantities if not q.inside_band)

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "alpha": self.alpha,
            "level_per_test": self.level,
            "band_prob": self.band.prob,
            "bins": self.bins,
            "quantities": [
                {**q.__dict__, "passed": q.passed(self.level)} for q in self.quantities
            ],
        }


def fractional_ranks(ranks: NDArray, draws: int, jitter: NDArray) -> NDArray[np.float64]:
    """u = (rank + jitter) / (draws + 1), uniform on (0, 1) when the ranks are uniform on
    0..draws and the jitter is U(0, 1)."""
    return (np.asarray(ranks, dtype=float) + np.asarray(jitter, dtype=float)) / (draws + 1)


def ecdf_band(n: int, prob: float, *, seed: int = 0, n_simulations: int = BAND_SIMULATIONS) -> EcdfBand:
    """The simultaneous ``prob`` band for the ECDF of ``n`` i.i.d. U(0, 1) values.

    Evaluated at z = 0, 1/n, ..., 1 as ArviZ's ``ecdf_pit`` does (the band pins the ends at 0
    and 1). ``seed`` seeds ArviZ's simulation of the pointwise level, so the band is
    reproducible.
    """
    if n < 2:
        raise ValueError(f"an ECDF band needs at least 2 values, got {n}.")
    z = np.arange(1, n) / n
    rng = np.random.default_rng(seed)
    pointwise = simulate_confidence_bands(n, 1, z, prob, n_simulations, rng)
    lower, upper = get_pointwise_confidence_band(pointwise, n, z)
    return EcdfBand(n=n, prob=prob, z=_pad(z), lower=_pad(lower), upper=_pad(upper))


def _pad(a: NDArray) -> NDArray[np.float64]:
    return np.concatenate(([0.0], a, [1.0]))


def chi_square(u: NDArray, bins: int) -> tuple[float, int, float]:
    """Pearson's chi-square of ``u`` in ``bins`` equal-width bins of (0, 1): (stat, dof, p)."""
    counts = np.histogram(np.clip(u, 0.0, 1.0), bins=bins, range=(0.0, 1.0))[0]
    result = stats.chisquare(counts)
    return float(result.statistic), bins - 1, float(result.pvalue)


def default_bins(n: int) -> int:
    """K // 10 bins, at least 2, at most 20."""
    return int(np.clip(n // PER_BIN, 2, MAX_BINS))


def check_uniformity(
    pit: Mapping[str, NDArray], *, alpha: float = ALPHA, seed: int = 0, bins: int | None = None
) -> Uniformity:
    """Run both tests on the fractional ranks of every quantity (NaN entries are dropped:
    failed simulations).

    Parameters
    ----------
    pit : mapping of quantity name -> array of fractional ranks in (0, 1)
    alpha : float
        Family-wise level; each of the 2m tests runs at alpha / (2m).
    seed : int
        Seeds ArviZ's band simulation.
    bins : int, optional
        Chi-square bins (default :func:`default_bins` of the number of values).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}.")
    clean = {name: np.asarray(u, dtype=float) for name, u in pit.items()}
    clean = {name: u[np.isfinite(u)] for name, u in clean.items()}
    n = min((u.size for u in clean.values()), default=0)
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 completed simulations, got {n}.")
    level = alpha / (2 * len(clean))
    band = ecdf_band(n, 1 - level, seed=seed)
    nbins = bins or default_bins(n)
    checks = []
    for name, u in clean.items():
        ecdf = _pad(compute_ecdf(u, band.z[1:-1]))
        chi2, dof, p = chi_square(u, nbins)
        checks.append(
            QuantityCheck(
                name=name,
                n=int(u.size),
                chi2=chi2,
                dof=dof,
                chi2_p=p,
                inside_band=bool(np.all((band.lower <= ecdf) & (ecdf <= band.upper))),
                max_ecdf_diff=float(np.max(np.abs(ecdf - band.z))),
            )
        )
    return Uniformity(quantities=tuple(checks), alpha=alpha, level=level, bins=nbins, band=band)


def shift_power(
    shifts: NDArray,
    *,
    sims: int,
    quantities: int = 4,
    alpha: float = ALPHA,
    reps: int = 200,
    seed: int = 0,
) -> float:
    """Probability that the check rejects when one quantity's posterior is shifted.

    A power calculation for a known bias: a method whose draws of one quantity are its exact
    posterior moved by ``s`` posterior standard deviations (normal approximation) gives the
    fractional rank u = Phi(Phi^-1(U) - s). Each simulated check draws ``sims`` shifts from
    ``shifts`` (e.g. the biases measured against the exact oracle, one per simulation) and
    tests that quantity alongside ``quantities - 1`` calibrated ones at the same Bonferroni
    level. Returns the fraction of ``reps`` checks that fail.
    """
    rng = np.random.default_rng(seed)
    shifts = np.asarray(shifts, dtype=float)
    shifts = shifts[np.isfinite(shifts)]
    level = alpha / (2 * quantities)
    band = ecdf_band(sims, 1 - level, seed=seed)
    nbins = default_bins(sims)
    rejected = 0
    for _ in range(reps):
        s = rng.choice(shifts, size=sims)
        u = stats.norm.cdf(stats.norm.ppf(rng.uniform(size=sims)) - s)
        others = rng.uniform(size=(quantities - 1, sims))
        fails = False
        for values in (u, *others):
            ecdf = _pad(compute_ecdf(values, band.z[1:-1]))
            inside = np.all((band.lower <= ecdf) & (ecdf <= band.upper))
            fails |= (not inside) or chi_square(values, nbins)[2] < level
        rejected += fails
    return rejected / reps
