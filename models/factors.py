"""A categorical column as integer codes and level names: a random intercept's indicator
columns without the dense N x L matrix (one integer per row)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hyperbayes.models.data import DataError

__all__ = ["Factor"]


@dataclass(frozen=True, eq=False)
class Factor:
    """A categorical column: an integer code per row and the names of the levels.

    Build with :meth:`from_values` (strings, integers, or integer-valued floats). Memory is
    one integer per row: the indicator matrix is never formed.
    """

    name: str
    codes: NDArray[np.intp]
    levels: tuple[str, ...]

    @classmethod
    def from_values(cls, name: str, values: ArrayLike) -> Factor:
        """Encode ``values`` (one per row); levels are sorted (by value, then as text).

        Raises
        ------
        DataError
            A missing value (None, NaN, empty string), a non-integer float, or one level only.
        """
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise DataError(f"categorical column {name!r} must be 1-D (one value per row).")
        if arr.size == 0:
            raise DataError(f"categorical column {name!r} is empty.")
        if arr.dtype.kind == "f":
            bad = ~np.isfinite(arr)
            if bad.any():
                raise DataError(
                    f"categorical column {name!r} has {int(bad.sum())} missing/non-finite "
                    f"value(s) (first at row {int(np.argmax(bad))}); give every row a level "
                    "(e.g. an explicit 'unknown' level) or drop those rows."
                )
            if np.any(arr != np.round(arr)):
                raise DataError(
                    f"categorical column {name!r} has non-integer numbers; code the levels as "
                    "integers or strings."
                )
            arr = arr.astype(np.int64)
        elif arr.dtype.kind in "OUS":
            text = np.array(["" if v is None else str(v).strip() for v in arr], dtype=object)
            empty = (text == "") | np.isin(text, ["nan", "NaN", "NA", "None"])
            if empty.any():
                raise DataError(
                    f"categorical column {name!r} has {int(empty.sum())} missing value(s) "
                    f"(first at row {int(np.argmax(empty))}); give every row a level or drop "
                    "those rows."
                )
            arr = text.astype(str)
        elif arr.dtype.kind not in "iub":
            raise DataError(f"categorical column {name!r} has unsupported type {arr.dtype}.")
        uniq, codes = _encode(arr)
        if uniq.size < 2:
            raise DataError(
                f"categorical column {name!r} has one level ({uniq[0]!r}) only; a random "
                "intercept needs at least two levels (with one level it is the intercept): "
                "drop the group."
            )
        codes = codes.astype(np.intp)
        codes.setflags(write=False)
        return cls(name=name, codes=codes, levels=tuple(str(u) for u in uniq))

    @property
    def n_levels(self) -> int:
        return len(self.levels)


def _encode(arr):
    """Sorted levels and codes; integers in a compact range are encoded in O(N) (bincount)."""
    if arr.dtype.kind in "iub" and arr.size and arr.min() >= 0 and arr.max() < 4 * arr.size + 1024:
        present = np.bincount(arr.astype(np.intp)) > 0
        uniq = np.nonzero(present)[0]
        remap = np.cumsum(present) - 1
        return uniq, remap[arr]
    return np.unique(arr, return_inverse=True)
