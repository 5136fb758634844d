"""The propriety rule (models/propriety.py) against the mathematics it rests on.

Each rule is a statement about how fast p(y | ...) falls (or grows) in a tail; each test
measures that exponent on y ~ N(0, X diag(s^2) X^T + delta^2 I), written here from the SVD of
X diag(s) (independently of the project's eigen formulas, and free of the cancellation and
conditioning that a dense slogdet suffers at sigma / delta ~ 1e7; checked against the dense
form where that is accurate), and checks that the rule calls the posterior improper exactly
when the tail does not integrate.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hyperbayes.models.data import Dataset
from hyperbayes.models.hyperpriors import ImproperPriorError, parse_hyperprior
from hyperbayes.models.propriety import exact_fit, posterior_impropriety, require_proper_posterior

FLAT = parse_hyperprior("flat")
HALFNORMAL = parse_hyperprior("halfnormal:1")
INVGAMMA = parse_hyperprior("invgamma:2,1")
# A tail exponent read off two points two decades apart; the next-order terms are ~1e-4 there.
SLOPE_ATOL = 0.01
# The SVD and the dense forms of one Gaussian log density at moderate scales.
FORMS_RTOL = 1e-9


def log_lik(X, y, s2, delta) -> float:
    """log N(y; 0, X diag(s2) X^T + delta^2 I): the covariance has eigenvalues S_i^2 + delta^2
    on the span of U (X diag(s) = U S W^T) and delta^2 on its complement."""
    n = y.size
    U, S, _ = np.linalg.svd(X * np.sqrt(np.broadcast_to(s2, X.shape[1])), full_matrices=False)
    keep = S > S.max() * max(X.shape) * np.finfo(float).eps
    U, S = U[:, keep], S[keep]
    uy = U.T @ y
    resid = float(np.sum((y - U @ uy) ** 2))
    e = S**2 + delta**2
    logdet = np.sum(np.log(e)) + (n - S.size) * np.log(delta**2)
    return -0.5 * (n * np.log(2 * np.pi) + logdet + np.sum(uy**2 / e) + resid / delta**2)


def test_the_svd_form_is_the_gaussian_density():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((7, 3)), rng.standard_normal(7)
    for s2, delta in [(2.0, 0.5), (np.array([0.1, 3.0, 1.0]), 2.0), (100.0, 0.1)]:
        cov = (X * s2) @ X.T + delta**2 * np.eye(7)
        dense = stats.multivariate_normal(np.zeros(7), cov).logpdf(y)
        assert log_lik(X, y, s2, delta) == pytest.approx(dense, rel=FORMS_RTOL)


def slope(f, a: float, b: float) -> float:
    """d log f / d log x between x = a and x = b (f returns a log value)."""
    return (f(b) - f(a)) / (np.log(b) - np.log(a))


def design(name: str, rng) -> tuple[np.ndarray, np.ndarray]:
    n = 4 if name == "N < D" else 20
    d = {"one feature": 1, "two equal columns": 2, "three features": 3, "N < D": 6}[name]
    X = rng.standard_normal((n, d))
    if name == "two equal columns":
        X[:, 1] = X[:, 0]
    return X, X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n)


DESIGNS = ["one feature", "two equal columns", "three features", "N < D"]


@pytest.mark.parametrize("name", DESIGNS)
def test_known_noise_tail_is_sigma_to_the_minus_rank(name):
    X, y = design(name, np.random.default_rng(1))
    rank, exact = exact_fit(Dataset.from_arrays(X, y))
    assert rank == np.linalg.matrix_rank(X)
    tail = slope(lambda s: log_lik(X, y, s**2, 0.5), 1e5, 1e7)
    assert tail == pytest.approx(-rank, abs=SLOPE_ATOL)
    # integral^infinity sigma^tail d sigma is finite iff tail < -1
    reason = posterior_impropriety(rank=rank, n=y.size, exact=exact, hyperprior=FLAT, noise_prior=None)
    assert (reason is None) == (tail < -1)
    if reason is not None:
        assert f"rank(X) = {rank}" in reason and "halfnormal:SCALE" in reason


@pytest.mark.parametrize("name", ["one feature", "three features"])
def test_learned_noise_tail_is_also_sigma_to_the_minus_rank(name):
    X, y = design(name, np.random.default_rng(2))
    rank, exact = exact_fit(Dataset.from_arrays(X, y))
    t = np.linspace(-8.0, 4.0, 2401)  # log delta; the halfnormal(1) prior holds it in there

    def log_marginal(sigma):  # log integral p(y | sigma, delta) p(delta) d delta
        vals = [log_lik(X, y, sigma**2, np.exp(u)) for u in t]
        return np.log(np.trapezoid(np.exp(vals) * stats.halfnorm.pdf(np.exp(t)) * np.exp(t), t))

    tail = slope(log_marginal, 1e5, 1e7)
    assert tail == pytest.approx(-rank, abs=SLOPE_ATOL)
    reason = posterior_impropriety(
        rank=rank, n=y.size, exact=exact, hyperprior=FLAT, noise_prior=HALFNORMAL
    )
    assert (reason is None) == (tail < -1)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_flat_noise_prior_tail(n):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((n, 2))
    y = X @ [1.0, -1.0] + 0.3 * rng.standard_normal(n)
    rank, exact = exact_fit(Dataset.from_arrays(X, y))
    # sigma fixed (a proper prior integrates over it): p(y | sigma, delta) ~ delta^-N
    assert slope(lambda d: log_lik(X, y, 1.0, d), 1e5, 1e7) == pytest.approx(-n, abs=SLOPE_ATOL)
    # sigma flat too: integral p(y | sigma, delta) d sigma ~ delta^(1 - N)
    u = np.linspace(-40.0, 60.0, 5001)  # log sigma; the integrand falls like e^(-u) at the top

    def flat_sigma(delta):
        vals = np.array([log_lik(X, y, np.exp(2 * a), delta) for a in u]) + u
        return vals.max() + np.log(np.trapezoid(np.exp(vals - vals.max()), u))

    both = slope(flat_sigma, 1e5, 1e7)
    assert both == pytest.approx(1 - n, abs=SLOPE_ATOL)
    common = dict(rank=rank, n=n, exact=exact, noise_prior=FLAT)
    assert (posterior_impropriety(hyperprior=HALFNORMAL, **common) is None) == (-n < -1)
    assert (posterior_impropriety(hyperprior=FLAT, **common) is None) == (both < -1)


def test_exact_fit_grows_like_delta_to_the_rank_minus_n():
    X = np.array([[1, 0], [0, 1], [1, 1], [2, -1], [3, 2], [-1, 4]], dtype=float)
    y = X @ [1.0, -2.0]  # exactly in the column space (integers: no round-off)
    n, rank = 6, 2
    assert exact_fit(Dataset.from_arrays(X, y)) == (rank, True)
    growth = slope(lambda d: log_lik(X, y, 1.0, d), 1e-5, 1e-3)
    assert growth == pytest.approx(-(n - rank), abs=SLOPE_ATOL)
    # integral_0 delta^-(N - r) p(delta) d delta diverges when p(0) > 0 and N - r >= 1
    for prior, proper in [(HALFNORMAL, False), (FLAT, False), (INVGAMMA, True)]:
        reason = posterior_impropriety(
            rank=rank, n=n, exact=True, hyperprior=HALFNORMAL, noise_prior=prior
        )
        assert (reason is None) == proper, prior
    assert "exact fit" in posterior_impropriety(
        rank=rank, n=n, exact=True, hyperprior=HALFNORMAL, noise_prior=HALFNORMAL
    )
    # a known noise scale has no delta -> 0 tail
    assert posterior_impropriety(rank=rank, n=n, exact=True, hyperprior=HALFNORMAL, noise_prior=None) is None
    # rank N fits every y exactly, yet the covariance keeps sigma^2 X X^T: no growth
    assert posterior_impropriety(rank=n, n=n, exact=True, hyperprior=HALFNORMAL, noise_prior=HALFNORMAL) is None


def test_ard_with_flat_priors_falls_like_one_over_sigma_j():
    X, y = design("three features", np.random.default_rng(4))
    tail = slope(lambda s: log_lik(X, y, np.array([s**2, 1.0, 1.0]), 0.5), 1e5, 1e7)
    assert tail == pytest.approx(-1.0, abs=SLOPE_ATOL)
    reason = posterior_impropriety(rank=3, n=20, exact=False, hyperprior=FLAT, noise_prior=None, ard=True)
    assert reason is not None and "ARD" in reason


def test_proper_priors_give_proper_posteriors_when_the_fit_is_not_exact():
    for rank in (0, 1, 2):
        for noise_prior in (None, HALFNORMAL, INVGAMMA):
            assert posterior_impropriety(
                rank=rank, n=10, exact=False, hyperprior=HALFNORMAL, noise_prior=noise_prior
            ) is None


def test_require_proper_posterior_names_the_purpose_and_the_reason():
    X, y = design("one feature", np.random.default_rng(5))
    data = Dataset.from_arrays(X, y)
    with pytest.raises(ImproperPriorError, match=r"^NUTS needs a proper posterior.*rank\(X\) = 1"):
        require_proper_posterior(data, hyperprior="flat", noise_prior=None, purpose="NUTS")
    require_proper_posterior(data, hyperprior="halfnormal:1", noise_prior="halfnormal:1", purpose="NUTS")
    X3, y3 = design("three features", np.random.default_rng(5))
    require_proper_posterior(Dataset.from_arrays(X3, y3), hyperprior="flat", noise_prior=None, purpose="NUTS")
