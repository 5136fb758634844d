"""hyperbayes: how should the prior scale of a Bayesian linear regression be learned?

Joint MAP, empirical Bayes, NUTS, SMC evidence and cross-validation, side by side on the same
data and each held against the exact posterior::

    import hyperbayes as hb

    result = hb.compare(hb.load_diabetes())   # every method; shows as a table in Jupyter
    eb = hb.fit("eb", hb.load_diabetes())     # one method, as ``hyperbayes fit eb``
    post = hb.exact_posterior(data, hyperprior="halfnormal:1", noise=1.0)

This module is the public API: everything a notebook or script needs is here, in ``__all__``.
Names load on first use (PEP 562), so ``import hyperbayes`` and the command line stay fast and
PyMC is imported only by the methods that need it.

The package's layers (imports point down only, checked by import-linter):
``hyperbayes.inference.workflow`` (front doors) and ``hyperbayes.inference.teaching`` above
``hyperbayes.inference.methods`` above ``hyperbayes.inference.mathematics`` above
``hyperbayes.models`` (data, model specifications, hyperpriors, PyMC builders).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_M = "hyperbayes.models"
_MATH = "hyperbayes.inference.mathematics"
_METH = "hyperbayes.inference.methods"
_TEACH = "hyperbayes.inference.teaching"
_FLOW = "hyperbayes.inference.workflow"

#: Public name -> the module that owns it.
_EXPORTS: dict[str, str] = {
    # front doors
    "fit": f"{_FLOW}.api",
    "compare": f"{_FLOW}.api",
    "prepare_run": f"{_FLOW}.api",
    "PreparedRun": f"{_FLOW}.api",
    "Comparison": f"{_FLOW}.compare",
    "ComparisonRow": f"{_FLOW}.compare",
    "METHODS": f"{_FLOW}.registry",
    "write_comparison": f"{_FLOW}.report",
    "write_report": f"{_FLOW}.report",
    "write_simulated_parquet": f"{_FLOW}.simulate_data",
    "compare_evidence": f"{_FLOW}.evidence_comparison",
    "Candidate": f"{_FLOW}.evidence_comparison",
    "EvidenceTable": f"{_FLOW}.evidence_comparison",
    "polynomial_dataset": f"{_FLOW}.evidence_comparison",
    # the methods and their results
    "RunOptions": f"{_METH}.results",
    "MethodSummary": f"{_METH}.results",
    "exact_posterior": f"{_METH}.exact",
    "ExactPosterior": f"{_METH}.exact",
    "QuadratureWarning": f"{_METH}.exact",
    "empirical_bayes": f"{_METH}.empirical_bayes",
    "EmpiricalBayesResult": f"{_METH}.empirical_bayes",
    "one_dimensional_eb": f"{_METH}.empirical_bayes",
    "OneDimensionalEB": f"{_METH}.empirical_bayes",
    "joint_map": f"{_METH}.joint_map",
    "JointMapResult": f"{_METH}.joint_map",
    "sample_posterior": f"{_METH}.nuts",
    "NutsResult": f"{_METH}.nuts",
    "smc_evidence": f"{_METH}.smc",
    "SmcResult": f"{_METH}.smc",
    "SmcEvidenceWarning": f"{_METH}.smc",
    "cross_validate": f"{_METH}.cross_validation",
    "CVResult": f"{_METH}.cross_validation",
    "hypergradient_descent": f"{_METH}.hypergradient",
    "HypergradientResult": f"{_METH}.hypergradient",
    "validation_loss_gradient": f"{_METH}.hypergradient",
    "empirical_bayes_family": f"{_METH}.empirical_bayes_family",
    "FamilyEBResult": f"{_METH}.empirical_bayes_family",
    "exact_family_posterior": f"{_METH}.exact_family",
    "nuts_family": f"{_METH}.nuts_family",
    "FamilyNutsResult": f"{_METH}.nuts_family",
    "FamilyPosterior": f"{_METH}.exact_family",
    "diagnose": f"{_METH}.diagnostics",
    "Diagnostics": f"{_METH}.diagnostics",
    "DiagnosticsWarning": f"{_METH}.diagnostics",
    # the mathematics a notebook draws with
    "log_marginal_likelihood": f"{_MATH}.linear_gaussian",
    "posterior_weights": f"{_MATH}.linear_gaussian",
    "sufficient_stats": f"{_MATH}.linear_gaussian",
    "joint_log_density": f"{_MATH}.joint_density",
    "profile_log_density": f"{_MATH}.joint_density",
    "ridge_path": f"{_MATH}.ridge",
    "family_log_ml": f"{_MATH}.family_likelihood",
    "layout_of": f"{_MATH}.family_likelihood",
    # teaching computations
    "loss_weight_demo": f"{_TEACH}.loss_weight",
    "monte_carlo_log_evidence": f"{_TEACH}.evidence_teaching",
    "monte_carlo_error_table": f"{_TEACH}.evidence_teaching",
    "nested_model_evidence": f"{_TEACH}.evidence_teaching",
    "legendre_design": f"{_TEACH}.evidence_teaching",
    # data, hyperpriors and models
    "Dataset": f"{_M}.data",
    "DataError": f"{_M}.data",
    "DataWarning": f"{_M}.data",
    "Centering": f"{_M}.data",
    "load_csv": f"{_M}.data",
    "load_diabetes": f"{_M}.data",
    "simulate": f"{_M}.data",
    "SufficientStats": f"{_M}.sufficient_stats",
    "Hyperprior": f"{_M}.hyperpriors",
    "ImproperPriorError": f"{_M}.hyperpriors",
    "OptionError": f"{_M}.hyperpriors",
    "ImproperPosteriorError": f"{_METH}.exact",
    "parse_hyperprior": f"{_M}.hyperpriors",
    "default_hyperpriors": f"{_M}.hyperpriors",
    "specify": f"{_M}.specification",
    "ModelSpec": f"{_M}.specification",
    "Group": f"{_M}.specification",
    "Factor": f"{_M}.factors",
    "spec_from_formula": f"{_M}.formula",
    "formula_columns": f"{_M}.formula",
    "with_default_priors": f"{_M}.family_priors",
    "FamilyStats": f"{_M}.family_stats",
    "family_stats": f"{_M}.family_stats",
    "load_eight_schools": f"{_M}.datasets",
    "load_bcg": f"{_M}.datasets",
    "eight_schools_table": f"{_M}.datasets",
    "bcg_table": f"{_M}.datasets",
    "StreamedData": f"{_M}.streaming",
    "stream_data": f"{_M}.streaming",
    "stream_statistics": f"{_M}.streaming",
    "RowsNotHeld": f"{_M}.streaming",
    "dask_data": f"{_M}.dask_source",
    "hierarchical_regression": f"{_M}.builders",
    "marginal_regression": f"{_M}.builders",
}

#: Public submodules: ``hb.figures`` (the report's figures, for notebooks).
_SUBMODULES: dict[str, str] = {"figures": f"{_FLOW}.figures"}

__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name])
    else:
        raise AttributeError(f"module 'hyperbayes' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from hyperbayes.inference.workflow import figures  # noqa: F401
    from hyperbayes.inference.workflow.api import PreparedRun, compare, fit, prepare_run  # noqa: F401
