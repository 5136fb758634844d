"""Computations the notebooks use to teach: the Monte Carlo evidence and its error, nested-model
evidence, and the loss-weight lesson of seed 002. Built on the methods; not used by the workflow."""
