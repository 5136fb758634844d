"""Shared fixtures: small data sets built once per session (PyMC compiles per model)."""

from __future__ import annotations

import numpy as np
import pytest

from hyperbayes.models.data import simulate


@pytest.fixture(scope="session")
def weak_1d():
    """N = 20, D = 1, small true weight: the data barely inform sigma (the funnel regime)."""
    return simulate(n=20, d=1, sigma=0.1, noise=1.0, seed=11)


@pytest.fixture(scope="session")
def strong_1d():
    """N = 20, D = 1, a weight well above the noise level."""
    return simulate(n=20, d=1, sigma=2.0, noise=0.5, seed=12)


@pytest.fixture(scope="session")
def medium_10d():
    """N = 100, D = 10."""
    return simulate(n=100, d=10, sigma=0.7, noise=1.0, seed=13)


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)
