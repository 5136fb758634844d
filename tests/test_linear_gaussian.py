"""The closed-form linear-Gaussian layer against dense, independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hyperbayes.inference.mathematics.linear_gaussian import (
    ard_terms,
    eigen_from_qr,
    log_marginal_likelihood,
    log_marginal_likelihood_ard,
    posterior_weights,
    sufficient_stats,
)
from hyperbayes.models.data import Dataset, simulate
from hyperbayes.models.sufficient_stats import SufficientStats

#: The O(D) eigen formula and a dense N x N Cholesky are both backward stable; for these
#: small, well-conditioned problems they agree to a few ulps of the log density (~1e2).
LOGPDF_ATOL = 1e-9
#: Posterior moments: an eigendecomposition vs a dense inverse, relative to their scale.
MOMENT_RTOL = 1e-9
#: Finite differences with step 1e-5: truncation ~1e-10, round-off ~eps |f| / h ~ 1e-9.
FD_ATOL = 1e-6

SHAPES = {"N>D": (40, 6), "N<D": (5, 12), "D=1": (25, 1)}


@pytest.fixture(scope="module", params=list(SHAPES))
def sim(request):
    n, d = SHAPES[request.param]
    return simulate(n=n, d=d, sigma=1.3, noise=0.7, seed=11)


def _dense_logpdf(X, y, sigmas, noise):
    cov = (X * np.asarray(sigmas) ** 2) @ X.T + noise**2 * np.eye(X.shape[0])
    return stats.multivariate_normal(np.zeros(X.shape[0]), cov).logpdf(y)


@pytest.mark.parametrize("route", ["gram", "qr"])
@pytest.mark.parametrize(("sigma", "noise"), [(1.1, 0.6), (0.05, 2.0), (7.0, 0.3)])
def test_log_marginal_likelihood_matches_dense_normal(sim, route, sigma, noise):
    X, y = sim.data.X, sim.data.y
    st = sufficient_stats(sim.data, route=route)
    got = log_marginal_likelihood(st, sigma, noise)
    assert got == pytest.approx(_dense_logpdf(X, y, sigma, noise), abs=LOGPDF_ATOL)


def test_log_marginal_likelihood_is_vectorised_and_defined_at_zero(sim):
    st = SufficientStats.from_dataset(sim.data)
    sig = np.array([[0.0, 0.5], [1.0, 2.0]])
    got = log_marginal_likelihood(st, sig, 0.7)
    want = [[log_marginal_likelihood(st, s, 0.7) for s in row] for row in sig]
    np.testing.assert_allclose(got, want, rtol=1e-14)
    # sigma = 0: y ~ N(0, delta^2 I)
    assert got[0, 0] == pytest.approx(stats.norm(0, 0.7).logpdf(sim.data.y).sum(), abs=LOGPDF_ATOL)


def test_posterior_weights_match_dense_inverse(sim):
    X, y = sim.data.X, sim.data.y
    sigma, noise = 1.1, 0.6
    A = X.T @ X / noise**2 + np.eye(X.shape[1]) / sigma**2
    cov = np.linalg.inv(A)
    mean = cov @ X.T @ y / noise**2
    m, c = posterior_weights(sufficient_stats(sim.data), sigma, noise)
    np.testing.assert_allclose(m, mean, rtol=MOMENT_RTOL, atol=MOMENT_RTOL * np.abs(mean).max())
    np.testing.assert_allclose(c, cov, rtol=MOMENT_RTOL, atol=MOMENT_RTOL * np.abs(cov).max())


def test_ard_matches_dense_normal_and_posterior(sim):
    X, y = sim.data.X, sim.data.y
    d = X.shape[1]
    sigmas = np.linspace(0.4, 2.0, d)
    st = SufficientStats.from_dataset(sim.data)
    t = ard_terms(st, sigmas, 0.6)
    assert t.log_ml == pytest.approx(_dense_logpdf(X, y, sigmas, 0.6), abs=LOGPDF_ATOL)
    cov = np.linalg.inv(X.T @ X / 0.36 + np.diag(1 / sigmas**2))
    np.testing.assert_allclose(t.cov, cov, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(t.mean, cov @ X.T @ y / 0.36, rtol=1e-9, atol=1e-12)
    # with all scales equal it is the shared-sigma formula
    assert log_marginal_likelihood_ard(st, np.full(d, 0.9), 0.6) == pytest.approx(
        float(log_marginal_likelihood(st, 0.9, 0.6)), abs=LOGPDF_ATOL
    )


def test_ard_gradients_match_finite_differences(sim):
    st = SufficientStats.from_dataset(sim.data)
    d, h = st.d, 1e-5
    u = np.log(np.linspace(0.4, 2.0, d))
    t = ard_terms(st, np.exp(u), 0.6)
    for j in range(d):
        e = np.zeros(d)
        e[j] = h
        fd = (log_marginal_likelihood_ard(st, np.exp(u + e), 0.6)
              - log_marginal_likelihood_ard(st, np.exp(u - e), 0.6)) / (2 * h)
        assert t.grad_log_sigma[j] == pytest.approx(fd, abs=FD_ATOL)
    fd = (log_marginal_likelihood_ard(st, np.exp(u), 0.6 * np.exp(h))
          - log_marginal_likelihood_ard(st, np.exp(u), 0.6 * np.exp(-h))) / (2 * h)
    assert t.grad_log_noise == pytest.approx(fd, abs=FD_ATOL)


def test_ard_allows_pruned_features():
    sim = simulate(n=30, d=3, sigma=1.0, noise=0.5, seed=2)
    st = SufficientStats.from_dataset(sim.data)
    t = ard_terms(st, [1.0, 0.0, 2.0], 0.5)
    sub = SufficientStats.from_arrays(sim.data.X[:, [0, 2]], sim.data.y)
    assert t.log_ml == pytest.approx(log_marginal_likelihood_ard(sub, [1.0, 2.0], 0.5), abs=LOGPDF_ATOL)
    assert t.mean[1] == 0.0 and np.all(t.cov[1] == 0.0)


def test_qr_route_keeps_small_eigenvalues_accurate():
    # X = U diag(s) V^T by construction, cond(X) = 1e6: the Gram route loses the small
    # eigenvalue to relative error ~eps cond^2 ~ 1e-4; the QR route keeps ~eps cond ~ 1e-10.
    rng = np.random.default_rng(0)
    n = 200
    U, _ = np.linalg.qr(rng.standard_normal((n, 2)))
    s = np.array([1.0, 1e-6]) * np.sqrt(n)
    c = np.sqrt(0.5)
    V = np.array([[c, -c], [c, c]])  # nearly collinear columns
    X = (U * s) @ V.T
    y = U @ np.array([3.0, 2e-6 * np.sqrt(n)]) + 1e-9 * rng.standard_normal(n)
    data = Dataset.from_arrays(X, y)
    e = eigen_from_qr(X, y)
    np.testing.assert_allclose(e.lam, np.sort(s**2), rtol=1e-8)
    gram = SufficientStats.from_dataset(data).eigen
    assert abs(gram.lam[0] / s[1] ** 2 - 1) > 1e-6  # the failure the fallback exists for
    auto = sufficient_stats(data).eigen
    np.testing.assert_allclose(auto.lam, e.lam, rtol=1e-12)
    bt_exact = (s * (U.T @ y))[::-1]
    np.testing.assert_allclose(np.abs(auto.bt), np.abs(bt_exact), rtol=1e-7)


def test_qr_route_handles_n_less_than_d():
    sim = simulate(n=4, d=9, sigma=1.0, noise=0.5, seed=3)
    e = eigen_from_qr(sim.data.X, sim.data.y)
    G = sim.data.X.T @ sim.data.X
    np.testing.assert_allclose((e.V * e.lam) @ e.V.T, G, atol=1e-12 * np.abs(G).max())
    np.testing.assert_allclose(e.bt, e.V.T @ sim.data.X.T @ sim.data.y, atol=1e-10)
    assert np.sum(e.lam > 1e-10) == 4


def test_unknown_route_is_rejected():
    with pytest.raises(ValueError, match="route must be"):
        sufficient_stats(simulate(n=5, d=2, sigma=1, noise=1, seed=0).data, route="cholesky")
