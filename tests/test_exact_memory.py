"""The exact oracle with N < D and at large D: dense brute-force references, and its memory.

References, independent of the oracle's eigenbasis, reduction and grid: the log evidence by
scipy.integrate.dblquad over (log sigma, log delta) of the dense Gaussian marginal likelihood
N(y; 0, sigma^2 X X^T + delta^2 I) (Cholesky of the N x N covariance); the posterior moments of w
by a fine trapezoid rule over (log sigma, log delta) of the data-space conditionals
E[w | .] = sigma^2 X^T C^-1 y, Cov[w | .] = sigma^2 I - sigma^4 X^T C^-1 X (C the covariance of
y). The trapezoid rule converges geometrically for a smooth integrand that decays inside its box.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import integrate
from scipy.special import gammaln, logsumexp

from hyperbayes.inference.mathematics.linear_gaussian import log_marginal_likelihood
from hyperbayes.inference.methods.exact import (
    ImproperPosteriorError,
    QuadratureWarning,
    exact_posterior,
)
from hyperbayes.inference.methods.exact_quadrature import MAX_GRID
from hyperbayes.inference.methods.exact_reduced import ReducedEigen
from hyperbayes.models.data import simulate
from hyperbayes.models.hyperpriors import default_hyperpriors
from hyperbayes.models.sufficient_stats import SufficientStats

EVIDENCE_TOL = 1e-6  # nats: the oracle's promise; dblquad runs at epsrel 1e-9
MOMENT_RTOL = 1e-6  # both sides are converged quadratures (the trapezoid checked at h and 2h)
Z_MC = 4.5  # draws vs exact moments: within 4.5 Monte Carlo standard errors
#: tracemalloc peak of a 30 x 2000 learned-noise oracle run. Measured ~66 MiB: the grid at 1025
#: points a side (8 MiB per array of nodes, a few of them, and blocks of 2 MiB temporaries) plus
#: the 2000 x 2000 covariance of w (31 MiB). The formula before the reduction asked for
#: 1601 x 401 x 2000 doubles (9.6 GiB) on its search grid alone.
PEAK_BOUND_30x2000 = 160 * 2**20
#: tracemalloc peak with the grid refined to its cap, MAX_GRID = 2049 points a side (4.2 million
#: nodes, 32 MiB per array of them). Measured ~144 MiB.
PEAK_BOUND_CAPPED = 300 * 2**20

SIGMA_PRIOR = "halfnormal:2"


@pytest.fixture(scope="module")
def wide():
    """N = 8 < D = 15. ``raw``: rank X = N, so y lies in its column space; ``centred``: as for
    an intercept, rank N - 1, still an exact fit."""
    raw = simulate(n=8, d=15, sigma=0.5, noise=1.0, seed=0).data
    return {"raw": (raw, "halfnormal:2"), "centred": (raw.center()[0], "invgamma:2,1")}


def _log_prior(spec, s):
    """The two priors used here, written out (p(s) for halfnormal:SCALE; invgamma:A,B is on s^2)."""
    kind, params = spec.split(":")
    a, *b = map(float, params.split(","))
    if kind == "halfnormal":
        return 0.5 * np.log(2 / np.pi) - np.log(a) - s**2 / (2 * a**2)
    assert kind == "invgamma" and b
    return a * np.log(b[0]) - gammaln(a) - (a + 1) * np.log(s**2) - b[0] / s**2 + np.log(2 * s)


def _dense_log_integrand(data, noise_prior, u, t):
    """log of p(y | e^u, e^t) p(e^u) p(e^t) e^u e^t from the dense N x N covariance of y.

    Vectorised over u and t (arrays of one shape); -inf where the covariance is numerically
    singular (there a prior that vanishes at delta = 0 has no mass in any case).
    """
    X, y = data.X, data.y
    u, t = np.broadcast_arrays(np.atleast_1d(u), np.atleast_1d(t))
    s2, d2 = np.exp(2 * u)[:, None, None], np.exp(2 * t)[:, None, None]
    C = s2 * (X @ X.T) + d2 * np.eye(y.size)
    sign, logdet = np.linalg.slogdet(C)
    quad = np.einsum("i,mi->m", y, _solve(C, np.broadcast_to(y[:, None], (u.size, y.size, 1)))[..., 0])
    loglik = -0.5 * (y.size * np.log(2 * np.pi) + logdet + quad)
    out = loglik + _log_prior(SIGMA_PRIOR, np.exp(u)) + _log_prior(noise_prior, np.exp(t)) + u + t
    return np.where((sign > 0) & np.isfinite(quad), out, -np.inf)


def _solve(C, B):
    """Batched solve; a singular matrix gives nan (instead of failing the whole batch)."""
    try:
        return np.linalg.solve(C, B)
    except np.linalg.LinAlgError:
        out = np.full(np.broadcast_shapes(C.shape[:-2], B.shape[:-2]) + B.shape[-2:], np.nan)
        for i in range(C.shape[0]):
            try:
                out[i] = np.linalg.solve(C[i], B[i])
            except np.linalg.LinAlgError:
                pass
        return out


def _dense_moments(data, noise_prior, h):
    """E[w], Cov[w], E[sigma], E[delta] by the trapezoid rule with step h in (log sigma, log delta)."""
    cu, ct = (a.ravel() for a in np.meshgrid(np.arange(-30, 5, 0.5), np.arange(-50, 5, 0.5), indexing="ij"))
    f = _dense_log_integrand(data, noise_prior, cu, ct)
    inside = f > f.max() - 45.0
    u = np.arange(cu[inside].min() - 1.0, cu[inside].max() + 1.0, h)
    t = np.arange(ct[inside].min() - 1.0, ct[inside].max() + 1.0, h)
    uu, tt = (a.ravel() for a in np.meshgrid(u, t, indexing="ij"))
    logw = _dense_log_integrand(data, noise_prior, uu, tt)
    keep = logw > logw.max() - 60.0
    uu, tt, logw = uu[keep], tt[keep], logw[keep]
    w = np.exp(logw - logsumexp(logw))
    X, y, d = data.X, data.y, data.d
    first, second = np.zeros(d), np.zeros((d, d))
    for s in range(0, uu.size, 4000):
        s2, d2, ws = np.exp(2 * uu[s : s + 4000]), np.exp(2 * tt[s : s + 4000]), w[s : s + 4000]
        C = s2[:, None, None] * (X @ X.T) + d2[:, None, None] * np.eye(y.size)
        Cinv_y = _solve(C, np.broadcast_to(y[:, None], (ws.size, y.size, 1)))[..., 0]
        Cinv_X = _solve(C, np.broadcast_to(X, (ws.size, *X.shape)))
        mean = s2[:, None] * (Cinv_y @ X)  # sigma^2 X^T C^-1 y
        cov = s2[:, None, None] * np.eye(d) - (s2**2)[:, None, None] * np.einsum("ni,mnj->mij", X, Cinv_X)
        first += ws @ mean
        second += np.einsum("m,mij->ij", ws, cov) + (mean * ws[:, None]).T @ mean
    return first, second - np.outer(first, first), w @ np.exp(uu), w @ np.exp(tt)


@pytest.mark.parametrize("case", ["raw", "centred"])
def test_wide_learned_noise_evidence_matches_dense_dblquad(wide, case):
    data, noise_prior = wide[case]
    post = exact_posterior(data, hyperprior=SIGMA_PRIOR, noise_prior=noise_prior)

    X, y = data.X, data.y
    K, eye = X @ X.T, np.eye(y.size)

    def f(t, u):  # dblquad integrates func(y, x): inner t = log delta, outer u = log sigma
        s, dl = np.exp(u), np.exp(t)
        sign, logdet = np.linalg.slogdet(s**2 * K + dl**2 * eye)
        if sign <= 0:
            return 0.0
        loglik = -0.5 * (y.size * np.log(2 * np.pi) + logdet + y @ np.linalg.solve(s**2 * K + dl**2 * eye, y))
        lp = loglik + _log_prior(SIGMA_PRIOR, s) + _log_prior(noise_prior, dl) + u + t
        return np.exp(lp - post.log_evidence)

    val, _ = integrate.dblquad(f, -30.0, 5.0, -50.0, 5.0, epsabs=0, epsrel=1e-9)
    assert np.log(val) == pytest.approx(0.0, abs=EVIDENCE_TOL)
    assert post.quadrature_error < EVIDENCE_TOL


@pytest.mark.parametrize("case", ["raw", "centred"])
def test_wide_moments_match_dense_computation(wide, case):
    data, noise_prior = wide[case]
    post = exact_posterior(data, hyperprior=SIGMA_PRIOR, noise_prior=noise_prior)
    mean, cov, sigma_mean, noise_mean = _dense_moments(data, noise_prior, h=0.1)
    mean2, cov2, *_ = _dense_moments(data, noise_prior, h=0.2)
    # The reference has converged: already at 2h it agrees to ~1e-8, and the trapezoid error
    # falls geometrically in 1 / h (it is squared when h is halved).
    np.testing.assert_allclose(mean2, mean, rtol=1e-7, atol=1e-7 * np.abs(mean).max())
    np.testing.assert_allclose(cov2, cov, rtol=1e-7, atol=1e-7 * np.abs(cov).max())
    scale = np.abs(cov).max()
    np.testing.assert_allclose(post.w_mean, mean, rtol=MOMENT_RTOL, atol=MOMENT_RTOL * np.abs(mean).max())
    np.testing.assert_allclose(post.w_cov, cov, rtol=MOMENT_RTOL, atol=MOMENT_RTOL * scale)
    assert post.sigma_mean == pytest.approx(sigma_mean, rel=MOMENT_RTOL)
    assert post.noise_mean == pytest.approx(noise_mean, rel=MOMENT_RTOL)


def test_wide_draws_match_moments_and_the_prior_on_the_null_space(wide):
    data, noise_prior = wide["raw"]
    post = exact_posterior(data, hyperprior=SIGMA_PRIOR, noise_prior=noise_prior)
    null = np.linalg.svd(data.X)[2][-1]  # a unit vector with X @ null = 0
    # On the null space of X the posterior of w is its prior: variance E[sigma^2].
    assert null @ post.w_cov @ null == pytest.approx(post.sigma_mean**2 + post.sigma_sd**2, rel=1e-10)
    n = 20000
    w = post.sample(n, seed=5)["w"]
    assert np.all(np.abs(w.mean(axis=0) - post.w_mean) < Z_MC * post.w_sd / np.sqrt(n))
    p2 = (w @ null) ** 2
    assert abs(p2.mean() - null @ post.w_cov @ null) < Z_MC * p2.std() / np.sqrt(n)
    np.testing.assert_allclose(w.std(axis=0), post.w_sd, rtol=0.05)  # sd of an sd ~ 1/sqrt(2n)
    np.testing.assert_array_equal(post.sample(7, seed=2)["w"], post.sample(7, seed=2)["w"])


def test_intercept_with_an_exact_fit_and_halfnormal_noise_is_improper(wide):
    """Centred data with N <= D + 1 are fitted exactly with rank X = N - 1, so at fixed sigma the
    dense likelihood grows like 1 / delta as delta -> 0: times a noise prior that is positive at
    0 and the Jacobian delta, the integrand in log delta tends to a constant, so the integral
    over log delta diverges. The oracle says so instead of returning a number."""
    data, _ = wide["centred"]
    f = _dense_log_integrand(data, "halfnormal:2", np.log(0.5), np.array([-6.0, -8.0, -10.0]))
    np.testing.assert_allclose(f, f[0], atol=1e-5)  # flat over a factor e^4 in delta
    with pytest.raises(ImproperPosteriorError, match="improper.*rank\\(X\\) = 7 < N = 8"):
        exact_posterior(data, hyperprior=SIGMA_PRIOR, noise_prior="halfnormal:2")
    post = exact_posterior(data, hyperprior=SIGMA_PRIOR, noise=1.0)  # known noise is fine
    assert np.isfinite(post.log_evidence)


@pytest.mark.parametrize(("n", "d"), [(8, 15), (40, 6)])
def test_reduced_likelihood_equals_the_full_eigen_formula(n, d):
    data = simulate(n=n, d=d, sigma=0.5, noise=1.0, seed=1).data
    red = ReducedEigen.from_dataset(data)
    assert red.k == min(n, d)
    sigma, noise = np.array([0.01, 0.3, 2.0, 30.0]), np.array([0.2, 1.0, 1.5, 3.0])
    full = log_marginal_likelihood(SufficientStats.from_dataset(data), sigma, noise)
    np.testing.assert_allclose(red.log_likelihood(np.log(sigma / noise), np.log(noise)), full, rtol=1e-12)


def _peak(fn):
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_at_2000_features_is_bounded():
    data = simulate(n=30, d=2000, sigma=0.1, noise=1.0, seed=0).data
    hp, nhp = default_hyperpriors(data)
    post, peak = _peak(lambda: exact_posterior(data, hyperprior=hp, noise_prior=nhp))
    assert peak < PEAK_BOUND_30x2000, f"peak {peak / 2**20:.0f} MiB"
    assert np.isfinite(post.log_evidence) and post.quadrature_error < EVIDENCE_TOL
    assert post.w_cov.shape == (2000, 2000)


def test_the_refined_grid_is_capped(wide):
    data, noise_prior = wide["raw"]
    with pytest.warns(QuadratureWarning, match="quadrature stopped"):
        post, peak = _peak(
            lambda: exact_posterior(data, hyperprior=SIGMA_PRIOR, noise_prior=noise_prior, tol=0.0)
        )
    assert post._weights.size <= MAX_GRID**2
    assert peak < PEAK_BOUND_CAPPED, f"peak {peak / 2**20:.0f} MiB"
