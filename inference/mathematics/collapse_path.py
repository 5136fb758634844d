"""Is the joint density of (w, sigma) unbounded? Evaluate it along the collapse path.

The joint density J(w, sigma) = log p(y | w) + log p(w | sigma) + log p(sigma) has no
maximum whenever it keeps rising as w and sigma shrink together (MATH.md section 2). This
module evaluates a given J along the collapse path w = t w_hat, sigma = t ||w_hat|| / sqrt(D),
t -> 0, and along the axis w = 0, sigma -> 0, and decides from the tail of those curves
whether the density is unbounded. It needs only J as a function; :mod:`hyperbayes.inference.methods.joint_map`
passes the density ``pm.find_MAP`` maximises.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["GROWTH_PER_DECADE_MIN", "T_MIN", "CollapseEvidence", "collapse_evidence"]

#: The collapse path runs t from 1 down to this. At 1e-16 every term is still exact in
#: float64 (w^2 / sigma^2 stays O(1); sigma^2 ~ 1e-32 is far above the underflow at 1e-308).
T_MIN = 1e-16
#: How far the path is extended when very strong data put the crossing beyond ``T_MIN``.
_T_FLOOR = 1e-300
#: Points per decade of t on the collapse path and of sigma on the w = 0 axis.
POINTS_PER_DECADE = 4
#: The growth test looks at the last this-many decades of the path.
TAIL_DECADES = 4
#: An unbounded funnel gains D ln(10) ~ 2.3 D nats per decade of t (the -D log sigma term);
#: a bounded density (InverseGamma: -b / sigma^2) loses ever more. One nat per decade, with
#: every step of the tail increasing, separates the two with a wide margin.
GROWTH_PER_DECADE_MIN = 1.0


@dataclass(frozen=True)
class CollapseEvidence:
    """The joint log density along the collapse path and on the w = 0 axis (MATH.md section 2).

    Attributes
    ----------
    w_hat : ndarray (D,)
        Direction of the path: the least-squares weights (minimum-norm when N < D).
    t, log_density : ndarray
        J(t w_hat, t ||w_hat|| / sqrt(D)) for t from 1 down to ``T_MIN``.
    axis_sigma, axis_log_density : ndarray
        J(0, sigma) for sigma from ||w_hat|| / sqrt(D) down by the same factors.
    noise : float
        The noise scale held fixed along both (the returned point's, when learned).
    growth_per_decade, axis_growth_per_decade : float
        Mean gain of J per decade over the last ``TAIL_DECADES`` (-inf if J became -inf).
    unbounded : bool
        The density keeps growing along the path or the axis: every tail step increases and
        the gain is at least ``GROWTH_PER_DECADE_MIN`` per decade.
    exceeds_returned : bool
        The largest value found there is above the returned point's log density.
    crossing_t : float or None
        When the growth is established but the returned value is not yet passed at
        ``T_MIN`` (very strong data), the t at which the path passes it, extrapolated at the
        tail's growth rate; None otherwise.
    """

    w_hat: NDArray[np.float64]
    t: NDArray[np.float64]
    log_density: NDArray[np.float64]
    axis_sigma: NDArray[np.float64]
    axis_log_density: NDArray[np.float64]
    noise: float
    growth_per_decade: float
    axis_growth_per_decade: float
    unbounded: bool
    exceeds_returned: bool
    crossing_t: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.t.tolist(),
            "log_density": self.log_density.tolist(),
            "axis_sigma": self.axis_sigma.tolist(),
            "axis_log_density": self.axis_log_density.tolist(),
            "growth_per_decade": self.growth_per_decade,
            "axis_growth_per_decade": self.axis_growth_per_decade,
            "exceeds_returned": self.exceeds_returned,
            "crossing_t": self.crossing_t,
        }


def collapse_evidence(
    density: Callable[[float, NDArray[np.float64], float | None], float],
    *,
    w_hat: NDArray[np.float64],
    sigma_ref: float,
    noise: float | None,
    fixed_noise: float | None,
    returned_log_density: float,
    t_min: float = T_MIN,
) -> CollapseEvidence:
    """J along the collapse path and the w = 0 axis, and whether it is unbounded there.

    Parameters
    ----------
    density : callable
        ``density(sigma, w, noise)``: the joint log density (-inf off its support).
    w_hat : ndarray (D,)
        Direction of the path (the least-squares weights).
    sigma_ref : float
        ``||w_hat|| / sqrt(D)``: sigma at t = 1.
    noise : float or None
        The noise passed to ``density`` (a learned noise held at the returned point's value);
        None when the noise is known and ``density`` fixes it itself.
    fixed_noise : float or None
        The known noise, reported when ``noise`` is None.
    returned_log_density : float
        J at the point the optimiser returned: the path must rise above it.
    t_min : float
        Smallest t of the path; extended towards 1e-300 when the growth is established but the
        returned value is not yet passed there (very strong data).

    Returns
    -------
    CollapseEvidence
    """

    def evaluate(t):
        path = np.array([density(tk * sigma_ref, tk * w_hat, noise) for tk in t])
        axis = np.array([density(tk * sigma_ref, np.zeros_like(w_hat), noise) for tk in t])
        return path, axis

    t = _log_grid(t_min)
    path, axis = evaluate(t)
    (g_path, up_path), (g_axis, up_axis) = _tail_growth(t, path), _tail_growth(t, axis)
    crossing = None
    if up_path and max(path.max(), axis.max()) <= returned_log_density:
        # Very strong data: the path passes the returned value beyond t_min. Extend it there
        # (exact in float64 down to t ~ 1e-300: only ratios w / sigma are squared).
        crossing = float(t[-1] * 10.0 ** (-(returned_log_density - path[-1]) / g_path))
        t_far = max(crossing / 100.0, _T_FLOOR)
        if t_far < t[-1]:
            t = _log_grid(t_far)
            path, axis = evaluate(t)
    exceeds = bool(np.nanmax(np.concatenate([path, axis])) > returned_log_density)
    return CollapseEvidence(
        w_hat=w_hat,
        t=t,
        log_density=path,
        axis_sigma=t * sigma_ref,
        axis_log_density=axis,
        noise=float(noise if noise is not None else fixed_noise),
        growth_per_decade=g_path,
        axis_growth_per_decade=g_axis,
        unbounded=up_path or up_axis,
        exceeds_returned=exceeds,
        crossing_t=None if exceeds else crossing,
    )


def _log_grid(t_min: float) -> NDArray[np.float64]:
    """t from 1 down to t_min, ``POINTS_PER_DECADE`` per decade."""
    decades = -math.log10(t_min)
    return np.logspace(0.0, -decades, int(math.ceil(decades * POINTS_PER_DECADE)) + 1)


def _tail_growth(t: NDArray, j: NDArray) -> tuple[float, bool]:
    """(mean gain per decade over the last ``TAIL_DECADES``, whether J keeps growing there)."""
    k = min(TAIL_DECADES * POINTS_PER_DECADE, t.size - 1)
    tail = j[-k - 1 :]
    if not np.all(np.isfinite(tail)):
        return -np.inf, False
    rate = float((tail[-1] - tail[0]) / math.log10(t[-k - 1] / t[-1]))
    return rate, bool(np.all(np.diff(tail) > 0) and rate >= GROWTH_PER_DECADE_MIN)
