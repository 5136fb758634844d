"""The methods: the exact oracle, empirical Bayes, joint MAP, NUTS, SMC, cross-validation and HOAG.

Each has a function with its own frozen result and a ``run(data, options) -> MethodSummary``
entry point (the contract in ``results``); ``diagnostics`` and ``arviz_io`` are what every
sampling method reports through. Nothing here imports the workflow.
"""
