"""The data a regression is fitted to: a validated, immutable design matrix and target.

Every method in the project takes a :class:`Dataset`. Constructors check the input once, here,
so that no method has to: a problem is reported as a :class:`DataError` whose message names
what is wrong and how to fix it.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hyperbayes.models.data_checks import (
    DataError,
    DataWarning,
    as_float_array,
    check_finite,
    check_magnitudes,
    check_unique,
    drop_index_column,
)

__all__ = [
    "Centering",
    "DataError",
    "DataWarning",
    "Dataset",
    "SimulatedData",
    "load_csv",
    "load_diabetes",
    "simulate",
]


@dataclass(frozen=True)
class Centering:
    """Column means removed from X and y, so that an intercept can be reported.

    With centred data the intercept is ``y_mean - x_mean @ w`` (as scikit-learn reports it).
    """

    x_mean: NDArray[np.float64]
    y_mean: float

    def intercept(self, weights: ArrayLike) -> float:
        """Intercept implied by ``weights`` fitted to the centred data."""
        return float(self.y_mean - self.x_mean @ np.asarray(weights, dtype=float))


@dataclass(frozen=True, eq=False)
class Dataset:
    """A regression data set: X (N x D, float64), y (N), and the names of both.

    Build one with :meth:`from_arrays`, :func:`load_csv`, :func:`simulate` or
    :func:`load_diabetes`; they all validate. The arrays are read-only.

    Attributes
    ----------
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,)
    feature_names : tuple of str
    target_name : str
    """

    X: NDArray[np.float64]
    y: NDArray[np.float64]
    feature_names: tuple[str, ...]
    target_name: str = "y"

    @classmethod
    def from_arrays(
        cls,
        X: ArrayLike,
        y: ArrayLike,
        *,
        feature_names: Sequence[str] | None = None,
        target_name: str = "y",
    ) -> Dataset:
        """Validate ``X`` and ``y`` and wrap them.

        Raises
        ------
        DataError
            Non-finite values, wrong shapes, mismatched lengths, empty data, zero features,
            feature names that do not fit, or a column (or y) whose magnitude float64 cannot
            work with (outside ``data_checks.SCALE_RANGE``; the message gives the factor to
            rescale by).
        """
        X = as_float_array(X, "X")
        y = as_float_array(y, "y")
        if X.ndim == 1:
            raise DataError(
                f"X is 1-D with shape {X.shape}; it must be 2-D (N rows x D features). "
                "For a single feature pass X.reshape(-1, 1)."
            )
        if X.ndim != 2:
            raise DataError(f"X must be 2-D (N rows x D features), got shape {X.shape}.")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise DataError(f"y must be 1-D (one target value per row), got shape {y.shape}.")
        n, d = X.shape
        if n == 0 or y.size == 0:
            raise DataError("the data are empty (no rows); supply at least one observation.")
        if d == 0:
            raise DataError("X has no feature columns; supply at least one feature.")
        if y.shape[0] != n:
            raise DataError(
                f"X has {n} rows but y has {y.shape[0]} values; they must match row for row."
            )
        check_finite(X, "X")
        check_finite(y, "y")
        names = tuple(f"x{j}" for j in range(d)) if feature_names is None else tuple(feature_names)
        if len(names) != d:
            raise DataError(f"{len(names)} feature names were given for {d} columns of X.")
        check_unique(names + (target_name,))
        check_magnitudes(X, [f"column {name!r}" for name in names], target=False)
        check_magnitudes(y, [f"the target {target_name!r}"], target=True)
        X = np.array(X, dtype=np.float64, order="C")
        y = np.array(y, dtype=np.float64)
        X.setflags(write=False)
        y.setflags(write=False)
        data = cls(X=X, y=y, feature_names=names, target_name=target_name)
        data._warn_constant_columns()
        return data

    @property
    def n(self) -> int:
        """Number of observations N."""
        return self.X.shape[0]

    @property
    def d(self) -> int:
        """Number of features D."""
        return self.X.shape[1]

    def constant_columns(self) -> tuple[str, ...]:
        """Names of the columns of X whose values are all equal."""
        return tuple(
            name for name, col in zip(self.feature_names, self.X.T, strict=True) if np.ptp(col) == 0
        )

    def center(self) -> tuple[Dataset, Centering]:
        """Subtract the column means from X and the mean from y (MATH.md section 1).

        Fitting the centred data and reporting ``Centering.intercept(w)`` is the same as an
        intercept with a flat prior. A constant column becomes all zeros, which carries no
        information; with an intercept it is an error, because the model cannot use it.

        Raises
        ------
        DataError
            If a column is constant (it duplicates the intercept), or if y is (then nothing is
            left to explain).
        """
        if np.ptp(self.y) == 0:
            raise DataError(
                f"the target {self.target_name!r} is constant (every value is {self.y[0]:.6g}), so "
                "an intercept explains it completely and nothing is left to fit; check the target "
                "column (--target)."
            )
        constant = self.constant_columns()
        if constant:
            raise DataError(
                f"column(s) {', '.join(constant)} are constant, so they duplicate the intercept; "
                "drop them, or fit without an intercept (--no-intercept)."
            )
        x_mean = self.X.mean(axis=0)
        y_mean = float(self.y.mean())
        centred = Dataset.from_arrays(
            self.X - x_mean,
            self.y - y_mean,
            feature_names=self.feature_names,
            target_name=self.target_name,
        )
        x_mean.setflags(write=False)
        return centred, Centering(x_mean=x_mean, y_mean=y_mean)

    def subset(self, rows: ArrayLike | None = None, *, features: Sequence[str] | None = None) -> Dataset:
        """A new Dataset with the given rows (indices or mask) and/or features (by name)."""
        X, y, names = self.X, self.y, self.feature_names
        if rows is not None:
            X, y = X[rows], y[rows]
        if features is not None:
            missing = [f for f in features if f not in names]
            if missing:
                raise DataError(
                    f"unknown feature(s) {missing}; the features are {list(names)}."
                )
            idx = [names.index(f) for f in features]
            X, names = X[:, idx], tuple(features)
        return Dataset.from_arrays(X, y, feature_names=names, target_name=self.target_name)

    def to_csv(self, path: str | Path) -> None:
        """Write the data as CSV (features then target), readable by :func:`load_csv`."""
        # The csv module quotes names containing commas or quotes, so load_csv reads them back;
        # repr() of a float is the shortest string that round-trips exactly.
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow((*self.feature_names, self.target_name))
            writer.writerows(
                [*map(repr, row)] for row in np.column_stack([self.X, self.y]).tolist()
            )

    def methods_note(self) -> str | None:
        """A note for N < D: which methods still work, or None when N >= D."""
        if self.n >= self.d:
            return None
        return (
            f"N = {self.n} < D = {self.d}: the least-squares solution is not unique, but the "
            "marginal likelihood, the exact oracle, empirical Bayes, NUTS, SMC and ridge/CV are "
            "all still defined because the prior regularises w; only unregularised quantities "
            "(w_ML) are not."
        )

    def _warn_constant_columns(self) -> None:
        constant = self.constant_columns()
        if constant:
            warnings.warn(
                f"column(s) {', '.join(constant)} are constant: they carry no information once "
                "an intercept is fitted (an error there), and without one they act as an "
                "intercept column.",
                DataWarning,
                stacklevel=3,
            )


@dataclass(frozen=True)
class SimulatedData:
    """A simulated data set together with the truth it was drawn from."""

    data: Dataset
    weights: NDArray[np.float64]
    sigma: float
    noise: float


def simulate(
    *, n: int, d: int, sigma: float, noise: float, seed: int | np.random.Generator
) -> SimulatedData:
    """Draw a data set from the model of MATH.md section 1.

    X has i.i.d. standard-normal entries, w ~ N(0, sigma^2 I), y = X w + N(0, noise^2).

    Parameters
    ----------
    n, d : int
        Observations and features (both >= 1).
    sigma : float
        True prior scale of the weights (>= 0; 0 gives w = 0).
    noise : float
        Noise standard deviation delta (> 0).
    seed : int or numpy.random.Generator
        Source of randomness; the same seed gives the same data.
    """
    if n < 1 or d < 1:
        raise ValueError(f"n and d must be at least 1, got n={n}, d={d}.")
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}.")
    if not noise > 0:
        raise ValueError(f"noise must be > 0, got {noise}.")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = sigma * rng.standard_normal(d)
    y = X @ w + noise * rng.standard_normal(n)
    w.setflags(write=False)
    return SimulatedData(Dataset.from_arrays(X, y), w, float(sigma), float(noise))


def load_csv(path: str | Path, *, target: str) -> Dataset:
    """Read a CSV file with a header row; ``target`` names the y column, the rest are features.

    Raises
    ------
    DataError
        Missing file, missing or duplicate columns, non-numeric or empty cells, too few rows.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # not the locale's; drops an Excel BOM
    except FileNotFoundError:
        raise DataError(f"no such file: {path}; check the path given with --data.") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory; --data needs a CSV file.") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a text CSV file (it could not be decoded).") from None
    return _dataset_from_csv_text(text, target=target, source=str(path))


def load_diabetes(*, scaled: bool = True) -> Dataset:
    """The diabetes data of Efron, Hastie, Johnstone and Tibshirani (2004): 442 x 10.

    Shipped with the package (no network). The target is disease progression after one year.

    Parameters
    ----------
    scaled : bool, default True
        Centre each feature and scale it to unit Euclidean norm, as scikit-learn's
        ``load_diabetes()`` does, so that one prior scale for all weights is meaningful. With
        ``False`` the raw clinical units are returned.
    """
    text = resources.files("hyperbayes.models").joinpath("data/diabetes.csv").read_text()
    data = _dataset_from_csv_text(text, target="progression", source="diabetes.csv")
    if not scaled:
        return data
    X = data.X - data.X.mean(axis=0)
    X = X / np.linalg.norm(X, axis=0)
    return Dataset.from_arrays(
        X, data.y, feature_names=data.feature_names, target_name=data.target_name
    )


def _dataset_from_csv_text(text: str, *, target: str, source: str) -> Dataset:
    # Blank lines are skipped, but each row keeps its line number in the file for messages.
    reader = csv.reader(text.splitlines())
    rows = [(reader.line_num, r) for r in reader if any(cell.strip() for cell in r)]
    if not rows:
        raise DataError(f"{source} is empty; it needs a header row and at least one data row.")
    header = [h.strip() for h in rows[0][1]]
    check_unique(header, where=f"the header of {source}")
    if target not in header:
        raise DataError(
            f"target column {target!r} is not in {source}; the columns are {header}. "
            "Name one of them with --target."
        )
    body = rows[1:]
    if not body:
        raise DataError(f"{source} has a header but no data rows.")
    values = np.empty((len(body), len(header)))
    for k, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise DataError(
                f"{source} line {line} has {len(row)} cells but the header has {len(header)}."
            )
        for j, cell in enumerate(row):
            try:
                values[k, j] = float(cell)
            except ValueError:
                if not header[j]:
                    raise DataError(
                        f"column {j + 1} of {source} has no name in the header, and line {line} "
                        f"holds {cell!r} there, not a number; drop that column or name it and "
                        "encode it numerically."
                    ) from None
                raise DataError(
                    f"{source} line {line}, column {header[j]!r}: {cell!r} is not a number; "
                    "encode categorical columns numerically, fill empty cells, or drop them."
                ) from None
    header, values = drop_index_column(header, values, target=target, source=source)
    t = header.index(target)
    features = [h for j, h in enumerate(header) if j != t]
    X = np.delete(values, t, axis=1)
    return Dataset.from_arrays(X, values[:, t], feature_names=features, target_name=target)
