"""The family's exact oracle against brute-force integrals of a dense multivariate normal.

Reference: the restricted likelihood computed from an explicit N x N covariance (the factor as
dense indicator columns), times the hyperpriors, integrated by scipy.integrate.quad (one scale)
or scipy.integrate.cubature (two; adaptive Gauss-Kronrod products, vectorised over points)
directly over the scales (no log transform, no grid).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from hyperbayes.inference.methods.exact import exact_posterior
from hyperbayes.inference.methods.exact_family import exact_family_posterior
from hyperbayes.models.data import Dataset, simulate
from hyperbayes.models.datasets import load_eight_schools
from hyperbayes.models.specification import Group, specify

EVIDENCE_TOL = 1e-6  # nats: the oracle's promise (Simpson refined to 1e-8; quad to 1e-10 rel)
MOMENT_RTOL = 1e-6  # both sides converged quadratures
DBL_EVIDENCE_TOL = 1e-6  # cubature at rtol 1e-9 on an integrand rescaled to peak 1
Z_MC = 4.5  # draws vs exact moments: within 4.5 Monte Carlo standard errors


def _dense(spec):
    n = spec.n
    F = [np.ones((n, 1))] if spec.intercept else []
    if spec.fixed:
        F.append(spec.fixed_matrix())
    F = np.hstack(F)
    blocks = []
    for g in spec.groups:
        if g.factor is not None:
            blocks.append(np.eye(spec.factor.n_levels)[spec.factor.codes])
        else:
            blocks.append(spec.data.X[:, [spec.data.feature_names.index(c) for c in g.columns]])
    omega = np.ones(n) if spec.obs_weights is None else spec.obs_weights
    return F, blocks, omega, spec.data.y


def dense_reml(spec, sigmas, noise):
    F, blocks, omega, y = _dense(spec)
    V = noise**2 * np.diag(1 / omega) + sum(s**2 * B @ B.T for s, B in zip(sigmas, blocks, strict=True))
    Vi = np.linalg.inv(V)
    FVF = F.T @ Vi @ F
    beta = np.linalg.solve(FVF, F.T @ Vi @ y)
    r = y - F @ beta
    return -0.5 * ((len(y) - F.shape[1]) * np.log(2 * np.pi) + np.linalg.slogdet(V)[1]
                   + np.linalg.slogdet(FVF)[1] + r @ Vi @ r), beta


def dense_reml_batch(spec, S, noise):
    """dense_reml for a batch of scale settings S (B, G) and noises (B,)."""
    F, blocks, omega, y = _dense(spec)
    V = noise[:, None, None] ** 2 * np.diag(1 / omega)
    for j, B in enumerate(blocks):
        V = V + S[:, j, None, None] ** 2 * (B @ B.T)
    Vi = np.linalg.inv(V)
    FVF = F.T @ Vi @ F
    Vy = Vi @ y
    beta = np.linalg.solve(FVF, (Vy @ F)[..., None])[..., 0]
    r = y - beta @ F.T
    quad = np.einsum("bi,bij,bj->b", r, Vi, r)
    return -0.5 * ((len(y) - F.shape[1]) * np.log(2 * np.pi) + np.linalg.slogdet(V)[1]
                   + np.linalg.slogdet(FVF)[1] + quad)


def test_eight_schools_one_scale():
    spec = load_eight_schools(tau_prior="halfcauchy:5")
    post = exact_family_posterior(spec)
    hp = spec.groups[0].prior
    peak = dense_reml(spec, [3.0], 1.0)[0]

    def f(tau, g=lambda tau: 1.0):
        return g(tau) * np.exp(dense_reml(spec, [tau], 1.0)[0] + hp.logpdf(tau) - peak)

    kw = dict(limit=500, epsabs=0, epsrel=1e-11)
    pieces = [(0, 1), (1, 10), (10, 100), (100, np.inf)]
    z = sum(integrate.quad(f, a, b, **kw)[0] for a, b in pieces)
    assert post.log_evidence == pytest.approx(np.log(z) + peak, abs=EVIDENCE_TOL)
    m1 = sum(integrate.quad(lambda t: f(t, lambda t: t), a, b, **kw)[0] for a, b in pieces) / z
    assert post.scale_mean[0] == pytest.approx(m1, rel=MOMENT_RTOL)
    mu = sum(integrate.quad(lambda t: f(t, lambda t: dense_reml(spec, [t], 1.0)[1][0]), a, b, **kw)[0]
             for a, b in pieces) / z
    assert post.beta_mean[0] == pytest.approx(mu, rel=MOMENT_RTOL)
    # Shrinkage: every school's posterior mean lies between the pooled mean and its estimate.
    theta = post.beta_mean[0] + post.u_mean
    y = spec.data.y
    assert np.all((theta - post.beta_mean[0]) * (y - post.beta_mean[0]) >= 0)
    assert np.all(np.abs(theta - post.beta_mean[0]) < np.abs(y - post.beta_mean[0]))


@pytest.fixture(scope="module")
def random_intercept():
    rng = np.random.default_rng(4)
    n, L = 24, 5
    codes = np.r_[np.arange(L), rng.integers(0, L, n - L)]
    x = rng.standard_normal(n)
    y = 1 + 0.5 * x + 0.7 * rng.standard_normal(L)[codes] + 0.8 * rng.standard_normal(n)
    data = Dataset.from_arrays(np.column_stack([x, codes]), y, feature_names=["x", "g"])
    return specify(data, fixed=["x"], categorical={"g": "g"},
                   groups=[Group("g", factor="g", prior="halfnormal:2")], noise_prior="halfnormal:2")


def test_learned_noise_two_scales(random_intercept):
    spec = random_intercept
    post = exact_family_posterior(spec)
    hp, hn = spec.groups[0].prior, spec.noise_prior
    peak = dense_reml(spec, [0.7], 0.8)[0]

    def f(x):  # x: (points, 2) = (tau, delta)
        return np.exp(dense_reml_batch(spec, x[:, :1], x[:, 1]) + hp.logpdf(x[:, 0])
                      + hn.logpdf(x[:, 1]) - peak)

    z = integrate.cubature(f, [1e-12, 0.05], [8, 6], rtol=1e-9).estimate
    assert post.log_evidence == pytest.approx(np.log(z) + peak, abs=DBL_EVIDENCE_TOL)
    assert post.scale_names == ("g", "noise")


def test_two_dense_groups_known_noise():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((20, 4))
    y = X @ [1.0, -1.0, 0.2, 0.1] + rng.standard_normal(20)
    data = Dataset.from_arrays(X, y, feature_names=list("abcd"))
    spec = specify(data, noise=1.0, groups=[Group("big", ("a", "b"), prior="halfnormal:2"),
                                            Group("small", ("c", "d"), prior="halfcauchy:1")])
    post = exact_family_posterior(spec)
    p1, p2 = spec.groups[0].prior, spec.groups[1].prior
    peak = dense_reml(spec, [1.0, 0.2], 1.0)[0]

    def f(x):  # x: (points, 2) = (sigma_big, sigma_small)
        return np.exp(dense_reml_batch(spec, x, np.ones(len(x))) + p1.logpdf(x[:, 0])
                      + p2.logpdf(x[:, 1]) - peak)

    z = integrate.cubature(f, [1e-12, 1e-12], [12, 60], rtol=1e-9).estimate
    # The half-Cauchy's tail beyond 60 carries ~(1/60) * 2/pi of its prior mass times a likelihood
    # that has fallen by e^-(a lot); negligible.
    assert post.log_evidence == pytest.approx(np.log(z) + peak, abs=DBL_EVIDENCE_TOL)


def test_shared_sigma_special_case_matches_the_existing_oracle():
    """F = 1 on centred columns, known noise: the REML evidence is the existing oracle's on the
    centred data plus 1/2 log(2 pi delta^2) - 1/2 log N (one fewer row, and the flat-prior
    constant); the posterior of sigma and w is the same."""
    sim = simulate(n=40, d=3, sigma=0.8, noise=1.0, seed=2)
    data = sim.data
    X = data.X - data.X.mean(0)
    centred = Dataset.from_arrays(X, data.y - data.y.mean())
    old = exact_posterior(centred, hyperprior="halfnormal:1", noise=1.0)
    spec = specify(Dataset.from_arrays(X, data.y), noise=1.0, prior="halfnormal:1")
    post = exact_family_posterior(spec)
    shift = 0.5 * np.log(2 * np.pi) - 0.5 * np.log(40)
    assert post.log_evidence == pytest.approx(old.log_evidence + shift, abs=EVIDENCE_TOL)
    assert post.scale_mean[0] == pytest.approx(old.sigma_mean, rel=MOMENT_RTOL)
    np.testing.assert_allclose(post.w_mean, old.w_mean, rtol=MOMENT_RTOL)
    np.testing.assert_allclose(post.w_cov, old.w_cov, rtol=1e-5, atol=1e-10)


def test_draws_reproduce_the_moments(random_intercept):
    post = exact_family_posterior(random_intercept)
    n = 20_000
    s = post.sample(n, seed=3)
    for name, j in (("g", 0), ("noise", 1)):
        assert abs(s[name].mean() - post.scale_mean[j]) < Z_MC * post.scale_sd[j] / np.sqrt(n)
    for draws, mean, sd in ((s["beta"], post.beta_mean, np.sqrt(np.diag(post.beta_cov))),
                            (s["u"], post.u_mean, post.u_sd)):
        assert np.all(np.abs(draws.mean(0) - mean) < Z_MC * sd / np.sqrt(n))
        np.testing.assert_allclose(draws.std(0), sd, rtol=0.05)  # sd of an sd: ~1/sqrt(2n) = 0.5%


def test_too_many_scales_or_missing_priors():
    rng = np.random.default_rng(0)
    data = Dataset.from_arrays(rng.standard_normal((10, 3)), rng.standard_normal(10), feature_names=list("abc"))
    spec = specify(data, ard=True, prior="halfnormal:1", noise=1.0)
    with pytest.raises(ValueError, match="at most two unknown scales.*3"):
        exact_family_posterior(spec)
    with pytest.raises(ValueError, match="no hyperprior"):
        exact_family_posterior(specify(data, noise=1.0))
    with pytest.raises(ValueError, match="noise is learned but has no hyperprior"):
        exact_family_posterior(specify(data, prior="halfnormal:1"))
