"""The table of methods: name -> ``module:function`` of its ``run(data, options)``.

Imports are lazy, so ``hyperbayes --help`` stays fast and a method's dependencies load only
when it runs. ``compare`` and the CLI loop over this table; adding a method is one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.models.data import Dataset

__all__ = ["METHODS", "get_runner"]

#: Every method, in the order ``compare`` runs and reports them.
METHODS: dict[str, str] = {
    "exact": "hyperbayes.inference.methods.exact:run",
    "eb": "hyperbayes.inference.methods.empirical_bayes:run",
    "joint-map": "hyperbayes.inference.methods.joint_map:run",
    "nuts": "hyperbayes.inference.methods.nuts:run",
    "smc": "hyperbayes.inference.methods.smc:run",
    "cv": "hyperbayes.inference.methods.cross_validation:run",
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
