"""The exact oracle against independent computations (MATH.md section 4).

References: the log evidence by scipy.integrate.quad directly over sigma (no log transform,
no grid) and by dblquad for learned noise; posterior moments of w from the Gaussian
conditionals integrated by quad; the oracle's own draws reproduce its moments within Monte
Carlo error.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from hyperbayes.inference.mathematics.linear_gaussian import (
    log_marginal_likelihood,
    posterior_weights,
)
from hyperbayes.inference.methods.exact import exact_posterior
from hyperbayes.models.data import simulate
from hyperbayes.models.hyperpriors import ImproperPriorError, parse_hyperprior
from hyperbayes.models.sufficient_stats import SufficientStats

EVIDENCE_TOL = 1e-6  # the accuracy the oracle promises for the log evidence (nats)
MOMENT_RTOL = 1e-6  # quad-integrated moments: both sides are converged quadratures
Z_MC = 4.5  # draws vs exact moments: |error| < 4.5 Monte Carlo standard errors (i.i.d. draws)

HYPERPRIORS = ["halfnormal:2", "halfcauchy:1", "exponential:1", "invgamma:2,1", "loguniform:0.01,10"]


def _quad_over_sigma(data, hyperprior, noise, g=lambda s: 1.0):
    """log of int g(s) p(y|s) p(s) ds by adaptive quadrature, split at multiples of the mode."""
    hp = parse_hyperprior(hyperprior)
    st = SufficientStats.from_dataset(data)

    def logf(s):
        return float(log_marginal_likelihood(st, s, noise) + hp.logpdf(s))

    grid = np.exp(np.linspace(-15, 8, 4001))
    vals = np.array([logf(s) for s in grid])
    peak, mode = vals.max(), grid[vals.argmax()]
    lo, hi = hp.support()
    cuts = sorted({min(max(mode * k, lo), hi) for k in (1e-3, 0.1, 0.5, 1, 2, 10, 1e3)})
    edges = [lo, *cuts, hi]
    total = sum(
        integrate.quad(lambda s: g(s) * np.exp(logf(s) - peak), a, b, limit=1000, epsabs=0, epsrel=1e-13)[0]
        for a, b in zip(edges[:-1], edges[1:], strict=True)
        if b > a
    )
    return np.log(total) + peak


@pytest.mark.parametrize("hyperprior", HYPERPRIORS)
@pytest.mark.parametrize(("n", "d", "sigma"), [(20, 1, 0.1), (20, 1, 2.0), (50, 5, 0.5), (10, 30, 0.5)])
def test_log_evidence_matches_brute_force_quadrature(n, d, sigma, hyperprior):
    data = simulate(n=n, d=d, sigma=sigma, noise=1.0, seed=3).data
    post = exact_posterior(data, hyperprior=hyperprior, noise=1.0)
    assert post.log_evidence == pytest.approx(_quad_over_sigma(data, hyperprior, 1.0), abs=EVIDENCE_TOL)
    assert post.quadrature_error < EVIDENCE_TOL


def test_sigma_mean_and_w_mean_match_quadrature(medium_10d):
    data, hp = medium_10d.data, "halfcauchy:1"
    post = exact_posterior(data, hyperprior=hp, noise=1.0)
    log_z = _quad_over_sigma(data, hp, 1.0)
    sigma_mean = np.exp(_quad_over_sigma(data, hp, 1.0, g=lambda s: s) - log_z)
    assert post.sigma_mean == pytest.approx(sigma_mean, rel=MOMENT_RTOL)
    st = SufficientStats.from_dataset(data)
    # E[w_j] = int mean_j(s) p(s | y) ds, for the first weight (positive shift keeps quad's log safe).
    shift = 10.0
    w0 = np.exp(
        _quad_over_sigma(data, hp, 1.0, g=lambda s: posterior_weights(st, s, 1.0)[0][0] + shift) - log_z
    ) - shift
    assert post.w_mean[0] == pytest.approx(w0, rel=MOMENT_RTOL, abs=1e-9)


def test_learned_noise_evidence_matches_dblquad():
    data = simulate(n=20, d=2, sigma=1.0, noise=0.7, seed=4).data
    hp, nhp = parse_hyperprior("halfnormal:2"), parse_hyperprior("halfnormal:2")
    post = exact_posterior(data, hyperprior=hp, noise_prior=nhp)
    st = SufficientStats.from_dataset(data)

    def f(u, t):  # integrand in (log sigma, log delta), scaled by the oracle's own value
        s, dd = np.exp(u), np.exp(t)
        lp = log_marginal_likelihood(st, s, dd) + hp.logpdf(s) + nhp.logpdf(dd) + u + t
        return np.exp(float(lp) - post.log_evidence)

    val, _ = integrate.dblquad(f, -4, 2.5, -40, 4, epsabs=1e-12, epsrel=1e-11)
    assert post.log_evidence + np.log(val) == pytest.approx(post.log_evidence, abs=EVIDENCE_TOL)
    assert post.noise_mean == pytest.approx(0.63, abs=0.2)  # sanity: near the true 0.7


@pytest.mark.parametrize("noise", [1.0, None])
def test_draws_reproduce_moments(medium_10d, noise):
    data = medium_10d.data
    post = exact_posterior(
        data, hyperprior="halfnormal:1", noise=noise, noise_prior=None if noise else "halfnormal:2"
    )
    n = 20000
    s = post.sample(n, seed=1)
    z_sigma = (s["sigma"].mean() - post.sigma_mean) / (post.sigma_sd / np.sqrt(n))
    z_w = (s["w"].mean(axis=0) - post.w_mean) / (post.w_sd / np.sqrt(n))
    assert abs(z_sigma) < Z_MC
    assert np.all(np.abs(z_w) < Z_MC)
    # Quantiles: the empirical CDF at the exact median is 1/2 within its binomial error.
    med = post.sigma_quantile(0.5)
    assert abs(np.mean(s["sigma"] < med) - 0.5) < Z_MC * 0.5 / np.sqrt(n)
    if noise is None:
        assert abs(s["noise"].mean() - post.noise_mean) < Z_MC * post.noise_sd / np.sqrt(n)
    # The same seed gives the same draws.
    np.testing.assert_array_equal(post.sample(10, seed=3)["w"], post.sample(10, seed=3)["w"])


def test_draws_are_arviz_data(weak_1d):
    post = exact_posterior(weak_1d.data, hyperprior="halfnormal:1", noise=1.0)
    tree = post.draws(100, seed=0)
    assert tree.posterior["w"].dims == ("chain", "draw", "feature")
    assert tree.posterior["sigma"].shape == (1, 100)


def test_density_integrates_to_one(strong_1d):
    post = exact_posterior(strong_1d.data, hyperprior="halfnormal:2", noise=0.5)
    assert np.trapezoid(post.sigma_density, post.sigma_grid) == pytest.approx(1.0, abs=1e-3)


def test_improper_and_bad_inputs(weak_1d):
    with pytest.raises(ImproperPriorError, match="proper hyperprior"):
        exact_posterior(weak_1d.data, hyperprior="flat", noise=1.0)
    with pytest.raises(ValueError, match="positive"):
        exact_posterior(weak_1d.data, hyperprior="halfnormal:1", noise=-1.0)
    with pytest.raises(ValueError, match="exactly one"):
        exact_posterior(weak_1d.data, hyperprior="halfnormal:1")
