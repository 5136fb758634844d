"""hyperbayes models: data sets and their validation, hyperpriors, and PyMC model builders."""

from hyperbayes.models.data import (
    Centering,
    DataError,
    Dataset,
    DataWarning,
    load_csv,
    load_diabetes,
    simulate,
)
from hyperbayes.models.hyperpriors import Hyperprior, ImproperPriorError, parse_hyperprior
from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = [
    "Centering",
    "DataError",
    "DataWarning",
    "Dataset",
    "Hyperprior",
    "ImproperPriorError",
    "SufficientStats",
    "load_csv",
    "load_diabetes",
    "parse_hyperprior",
    "simulate",
]
