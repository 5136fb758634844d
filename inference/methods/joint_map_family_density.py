"""The NumPy joint density J of a family member, for joint MAP
(:mod:`~hyperbayes.inference.methods.joint_map_family` defines J, optimises it and judges it).

This module owns :class:`_Density`, J and its gradient in the optimiser's non-centred
coordinates x = [beta, z = c / sigma, log sigma_learned, log delta] (and J in the natural
coordinates, for the collapse paths), and :func:`_prior`, each hyperprior's log density over
its scale and slope in the log scale, in closed form. J is computed on the
:class:`~hyperbayes.models.family_stats.FamilyStats`: with a = [-beta', -w, 1] over the
columns [F', X, y], the weighted residual sum of squares is
a^T W a + sum_l n_l (mean_l . a - beta_0 - u_l)^2, O(L K + K^2) per evaluation.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

from hyperbayes.models.family_stats import FamilyStats
from hyperbayes.models.hyperpriors import Hyperprior
from hyperbayes.models.specification import ModelSpec

__all__: list[str] = []  # private to joint_map_family (and its tests)

_LOG_2PI = float(np.log(2 * np.pi))


class _Density:
    """J and its gradient in the optimiser's coordinates x = [beta, z, log sigma_L, log delta]."""

    def __init__(self, spec: ModelSpec, st: FamilyStats, jacobian: bool):
        self.spec, self.st, self.jac = spec, st, float(jacobian)
        self.P, self.p, self.d = st.n_fixed, st.n_fixed_columns, st.n_dense
        self.L = spec.factor.n_levels if spec.factor is not None else 0
        self.learned = list(spec.learned_groups)
        self.learn_noise = spec.noise is None
        self.priors = [g.prior for g in spec.groups]
        self.fixed_sig = np.array([g.scale if g.scale is not None else np.nan for g in spec.groups])
        self.col_group = spec.group_of_dense_column()
        self.n_g = np.array([self.L if g.factor is not None else len(g.columns) for g in spec.groups])

    # -- coordinates
    def unpack(self, x):
        P, d, L = self.P, self.d, self.L
        beta, zw, zu = x[:P], x[P:P + d], x[P + d:P + d + L]
        k = len(self.learned)
        sig = self.fixed_sig.copy()
        sig[self.learned] = np.exp(x[P + d + L:P + d + L + k])
        noise = float(np.exp(x[-1])) if self.learn_noise else float(self.spec.noise)
        return beta, zw, zu, sig, noise

    def pack(self, beta, w, u, sig, noise):
        fg = self.spec.factor_group
        zw = np.asarray(w, float) / sig[self.col_group] if self.d else np.zeros(0)
        zu = np.asarray(u, float) / sig[fg] if self.L else np.zeros(0)
        tail = [np.log(noise)] if self.learn_noise else []
        return np.concatenate([beta, zw, zu, np.log(sig[self.learned]), tail])

    # -- the density in natural coordinates (the collapse paths use this)
    def natural(self, beta, w, u, sig, noise) -> float:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            fg = self.spec.factor_group
            zw = np.asarray(w, float) / sig[self.col_group] if self.d else np.zeros(0)
            zu = np.asarray(u, float) / sig[fg] if self.L else np.zeros(0)
            out = self._value(beta, w, u, zw, zu, sig, noise)
        return out if np.isfinite(out) or out == np.inf else -np.inf

    def _value(self, beta, w, u, zw, zu, sig, noise):
        rss, _, _, _ = self._rss(beta, w, u)
        n = self.st.n_rows
        out = -0.5 * (n * (_LOG_2PI + 2 * np.log(noise)) - self.st.sum_log_omega + rss / noise**2)
        out += -0.5 * (zw @ zw + zu @ zu) - 0.5 * self.n_g.sum() * _LOG_2PI
        out -= np.sum(self.n_g * np.log(sig))
        for k in self.learned:
            out += _prior(self.priors[k], sig[k])[0] + self.jac * np.log(sig[k])
        if self.learn_noise:
            out += _prior(self.spec.noise_prior, noise)[0] + self.jac * np.log(noise)
        return float(out)

    def _rss(self, beta, w, u):
        st, p = self.st, self.p
        a = np.concatenate([-beta[self.P - p:], -np.asarray(w, float), [1.0]])
        r = st.level_mean @ a - (beta[0] if st.intercept else 0.0) - (u if self.L else 0.0)
        Wa = st.within @ a
        return float(a @ Wa + st.level_weight @ r**2), a, r, Wa

    # -- the objective of the optimiser: (-J, -grad) in x
    def __call__(self, x):
        beta, zw, zu, sig, noise = self.unpack(x)
        fg = self.spec.factor_group
        w = sig[self.col_group] * zw
        u = sig[fg] * zu if self.L else zu
        value = self._value(beta, w, u, zw, zu, sig, noise)
        rss, a, r, Wa = self._rss(beta, w, u)
        q = noise**2
        nr = self.st.level_weight * r
        g_a = -(Wa + self.st.level_mean.T @ nr) / q  # dJ/da (the data term)
        g_beta = np.r_[[nr.sum() / q] if self.st.intercept else [], -g_a[:self.p]]
        g_w = -g_a[self.p:self.p + self.d]
        g_u = nr / q if self.L else np.zeros(0)
        g_logsig = -self.n_g.astype(float)
        np.add.at(g_logsig, self.col_group, g_w * w)
        if self.L:
            g_logsig[fg] += g_u @ u
        grads = [g_beta, g_w * sig[self.col_group] - zw, (g_u * sig[fg] if self.L else g_u) - zu]
        tail = [g_logsig[k] + _prior(self.priors[k], sig[k])[1] + self.jac for k in self.learned]
        if self.learn_noise:
            tail.append(-self.st.n_rows + rss / q + _prior(self.spec.noise_prior, noise)[1] + self.jac)
        grad = np.concatenate([*grads, tail])
        if not np.isfinite(value):
            return np.inf, np.zeros_like(x)
        return -value, -grad


def _prior(prior: Hyperprior | None, s: float) -> tuple[float, float]:
    """(log p(s), d log p(s) / d log s) over the scale, in closed form (``Hyperprior.logpdf``
    goes through scipy.stats, ~100 times slower per call); a missing prior is flat."""
    kind, par = ("flat", ()) if prior is None else (prior.kind, prior.params)
    match kind:
        case "flat":
            return 0.0, 0.0
        case "halfnormal":
            return 0.5 * np.log(2 / np.pi) - np.log(par[0]) - 0.5 * (s / par[0]) ** 2, -(s / par[0]) ** 2
        case "halfcauchy":
            r = (s / par[0]) ** 2
            return np.log(2 / np.pi) - np.log(par[0]) - np.log1p(r), -2 * r / (1 + r)
        case "exponential":
            return -np.log(par[0]) - s / par[0], -s / par[0]
        case "invgamma":  # a prior on s^2: the density over s is IG(s^2; a, b) * 2 s
            a, b = par
            logp = a * np.log(b) - gammaln(a) - 2 * (a + 1) * np.log(s) - b / s**2 + np.log(2 * s)
            return logp, -2 * (a + 1) + 2 * b / s**2 + 1
        case "loguniform":
            inside = par[0] <= s <= par[1]
            return (-np.log(s) - np.log(np.log(par[1] / par[0])) if inside else -np.inf), -1.0
    raise AssertionError(kind)  # pragma: no cover
