"""hyperbayes models: data sets and their validation, hyperpriors, and PyMC model builders."""

from models.data import (
    Centering,
    DataError,
    Dataset,
    DataWarning,
    load_csv,
    load_diabetes,
    simulate,
)
from models.hyperpriors import Hyperprior, ImproperPriorError, parse_hyperprior
from models.sufficient_stats import SufficientStats

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
