"""hyperbayes.inference: the layers above the data and models, each a subpackage.

Imports point down only (checked by import-linter, see pyproject.toml):

- ``workflow``: the front doors (``fit``/``compare``, the CLI, the report, run directories);
- ``teaching``: computations the notebooks use to show why (Monte Carlo evidence, loss weights);
- ``methods``: the five answers and the exact oracle, one contract (``RunOptions`` in,
  ``MethodSummary`` out), with their diagnostics and ArviZ conversion;
- ``mathematics``: the linear-Gaussian formulas on sufficient statistics (NumPy/SciPy only).
"""
