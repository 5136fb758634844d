"""The table of methods: name -> ``module:function`` of its ``run(data, options)``.

Imports are lazy, so ``hyperbayes --help`` stays fast and a method's dependencies load only
when it runs. ``compare`` and the CLI loop over this table; adding a method is one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from hyperbayes.inference.methods.results import MethodSummary, RunOptions
from hyperbayes.models.data import Dataset

__all__ = ["FAMILY_METHODS", "METHODS", "get_runner"]

#: Every method, in the order ``compare`` runs and reports them.
METHODS: dict[str, str] = {
    "exact": "hyperbayes.inference.methods.exact:run",
    "eb": "hyperbayes.inference.methods.empirical_bayes:run",
    "joint-map": "hyperbayes.inference.methods.joint_map:run",
    "nuts": "hyperbayes.inference.methods.nuts:run",
    "smc": "hyperbayes.inference.methods.smc:run",
    "cv": "hyperbayes.inference.methods.cross_validation:run",
}

#: The same methods on a model specification (groups, fixed effects, a random intercept,
#: weights or known standard errors): ``run_family(spec, options)``.
FAMILY_METHODS: dict[str, str] = {
    "exact": "hyperbayes.inference.methods.exact_family:run_family",
    "eb": "hyperbayes.inference.methods.empirical_bayes_family:run_family",
    "joint-map": "hyperbayes.inference.methods.joint_map_family:run_family",
    "nuts": "hyperbayes.inference.methods.nuts_family:run_family",
    "smc": "hyperbayes.inference.methods.smc_family:run_family",
    "cv": "hyperbayes.inference.methods.cross_validation_family:run_family",
}

Runner = Callable[[Dataset, RunOptions], MethodSummary]


def get_runner(method: str, *, family: bool = False) -> Runner:
    """The ``run`` function of ``method`` (``run_family`` with ``family=True``, for a
    :class:`~hyperbayes.models.specification.ModelSpec`); a ValueError lists the valid names."""
    try:
        target = (FAMILY_METHODS if family else METHODS)[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.") from None
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)
