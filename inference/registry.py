"""The table of methods: name -> ``module:function`` of its ``run(data, options)``.

Imports are lazy, so ``hyperbayes --help`` stays fast and a method's dependencies load only
when it runs. ``compare`` and the CLI loop over this table; adding a method is one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from inference.results import MethodSummary, RunOptions
from models.data import Dataset

__all__ = ["METHODS", "get_runner"]

#: Every method, in the order ``compare`` runs and reports them.
METHODS: dict[str, str] = {
    "exact": "inference.exact:run",
    "eb": "inference.empirical_bayes:run",
    "joint-map": "inference.joint_map:run",
    "nuts": "inference.nuts:run",
    "smc": "inference.smc:run",
    "cv": "inference.cross_validation:run",
}

Runner = Callable[[Dataset, RunOptions], MethodSummary]


def get_runner(method: str) -> Runner:
    """The ``run`` function of ``method``; a ValueError lists the valid names."""
    try:
        target = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.") from None
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)
