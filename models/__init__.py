"""hyperbayes models: data sets and their validation, hyperpriors, and PyMC model builders.

The names below load lazily (PEP 562), so importing a submodule (a Dask worker reading one
Parquet piece imports ``hyperbayes.models.streaming``) does not import SciPy's statistics.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Centering": "data",
    "DataError": "data",
    "DataWarning": "data",
    "Dataset": "data",
    "load_csv": "data",
    "load_diabetes": "data",
    "simulate": "data",
    "Hyperprior": "hyperpriors",
    "ImproperPriorError": "hyperpriors",
    "parse_hyperprior": "hyperpriors",
    "SufficientStats": "sufficient_stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
