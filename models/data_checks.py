"""The checks behind :class:`~hyperbayes.models.data.Dataset`: what makes data unusable, and why.

Every check raises a :class:`DataError` whose message names the column and the fix, or warns
with a :class:`DataWarning`. :mod:`hyperbayes.models.data` re-exports both classes.

The scale range
---------------
The methods square and multiply the data and the scales they infer: X^T X sums N squares,
the likelihood holds sigma^2 lam / delta^2, a prior density (sigma / s)^2, and the quadrature
and samplers range over many orders of magnitude (about 1e+-35) around the data's own scale.
Float64 holds magnitudes from about 1e-308 to 1e308. Keeping every scale of the problem (each
column of X, the target, the weights' scale sd(y) / rms sd(x), and every scale option) within
:data:`SCALE_RANGE` = 1e-30 to 1e30 of 1 (options: of the data's scale) keeps all those
products near or inside 1e+-200, well clear of overflow and underflow. Values of 1e308 would
otherwise overflow to inf while X is centred, and values of 1e-308 square to zero, so that X
looked "all zeros" to the methods. Rescaling is the fix: the model is equivariant under it
(y -> c y scales sigma, the noise, the weights and the intercept by c).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "SCALE_RANGE",
    "DataError",
    "DataWarning",
    "as_float_array",
    "check_finite",
    "check_magnitudes",
    "check_unique",
    "drop_index_column",
    "power_of_ten",
]

#: Smallest and largest magnitude accepted for every scale of a problem (see the module notes).
SCALE_RANGE = (1e-30, 1e30)


class DataError(ValueError):
    """The data cannot be used as given; the message says what is wrong and how to fix it."""


class DataWarning(UserWarning):
    """The data can be used, but a method may behave badly on it (e.g. a constant column)."""


def as_float_array(a: ArrayLike, name: str) -> NDArray[np.float64]:
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(
            f"{name} could not be read as numbers; every entry must be numeric (encode "
            "categorical values numerically)."
        ) from None


def check_finite(a: NDArray[np.float64], name: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        where = np.argwhere(bad)[0]
        kind = "NaN" if np.isnan(a[tuple(where)]) else "infinite"
        raise DataError(
            f"{name} has {int(bad.sum())} non-finite value(s) (first: {kind} at index "
            f"{tuple(int(i) for i in where)}); remove or impute those rows before fitting."
        )


def check_unique(names: Sequence[str], *, where: str = "the column names") -> None:
    seen: set[str] = set()
    dup = sorted({n for n in names if n in seen or seen.add(n)})
    if dup:
        raise DataError(f"duplicate column name(s) {dup} in {where}; every column needs its own name.")


def power_of_ten(x: float) -> str:
    """The power of ten nearest ``x`` (> 0) in the form ``1e+307``: exact even where 10**k or
    its reciprocal is not a float64 (1 / 1e-310 overflows)."""
    return f"1e{round(math.log10(x)):+03d}"


def check_magnitudes(a: NDArray[np.float64], labels: Sequence[str], *, target: bool) -> None:
    """Refuse a column whose largest magnitude is outside :data:`SCALE_RANGE` (zero is fine).

    ``a`` is one column (``labels`` one label) or N x D (one label per column); the labels are
    phrases such as ``"column 'a'"``. The message gives the power of ten to rescale by.
    """
    lo, hi = SCALE_RANGE
    peak = np.max(np.abs(a.reshape(a.shape[0], -1)), axis=0)
    for label, m in zip(labels, peak, strict=True):
        if lo <= m <= hi or m == 0:
            continue
        big = m > hi
        k = power_of_ten(m).replace("e-", "e+")  # the factor to divide or multiply by, > 1
        fix = f"{'divide' if big else 'multiply'} {label} by {k}"
        size = "smaller" if big == target else "larger"
        then = (
            f"sigma, the noise, the weights and the intercept then come out {k} times {size}"
            if target
            else f"its weight then comes out {k} times {size}"
        )
        raise DataError(
            f"{label} has values {'up to' if big else 'no larger than'} {m:.3g} in magnitude, "
            f"{'above' if big else 'below'} the {hi if big else lo:.0e} that the methods can "
            f"work with in float64 (squares and products of such numbers "
            f"{'overflow' if big else 'underflow to zero'}); {fix} and refit ({then})."
        )


def drop_index_column(
    header: list[str], values: NDArray[np.float64], *, target: str, source: str
) -> tuple[list[str], NDArray[np.float64]]:
    """Drop a first column that is a row index written by ``DataFrame.to_csv``, with a warning.

    Such a column has a blank name (pandas reads it back as ``Unnamed: 0``) and distinct
    integer values. Fitting it would add the row number as a feature, which no one means, so it
    is dropped and a :class:`DataWarning` says so. Any other column without a name is refused:
    it cannot be named with ``--target`` or in a report, and guessing what it holds would change
    the model silently.
    """
    first = header[0] if header else None
    if first is not None and (first == "" or first == "Unnamed: 0") and first != target:
        col = values[:, 0]
        if len(header) > 1 and np.all(col == np.round(col)) and np.unique(col).size == col.size:
            warnings.warn(
                f"the first column of {source} has no name and holds distinct whole numbers: a "
                "row index, as pandas' DataFrame.to_csv writes by default; it was dropped, not "
                "fitted (write the file with index=False to avoid this warning).",
                DataWarning,
                stacklevel=4,
            )
            return _no_blank_names(header[1:], source, offset=1), values[:, 1:]
    return _no_blank_names(header, source, offset=0), values


def _no_blank_names(header: list[str], source: str, *, offset: int) -> list[str]:
    blank = [j + 1 + offset for j, h in enumerate(header) if not h]
    if blank:
        raise DataError(
            f"column {blank[0]} of {source} has no name in the header; name it (or drop it) so "
            "that it can be told apart from the others."
        )
    return header
