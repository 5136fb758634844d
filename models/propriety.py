"""When the posterior of the scales is proper: the one rule every method that needs it calls.

A proper hyperprior always gives a proper posterior unless the data fit exactly (below). An
improper one (``flat``) gives a proper posterior only if the likelihood falls fast enough
where the prior does not. The rule, with r = rank(X) of the data as fitted (centring for an
intercept removes one dimension), N observations, and G = X^T X with r nonzero eigenvalues:

Flat prior on sigma, known noise
    log p(y | sigma) = -1/2 [sum_i log(1 + sigma^2 lam_i / delta^2) + quadratic term] + const,
    and as sigma -> infinity each of the r terms grows like 2 log sigma while the quadratic
    term tends to the least-squares residual over delta^2. So p(y | sigma) ~ sigma^-r, and
    integral^infinity sigma^-r d sigma is finite iff r >= 2. (At sigma -> 0, p(y | sigma) tends
    to p(y | 0) > 0, finite.) One feature, or collinear features of rank one: improper.
Flat prior on sigma, learned noise with a proper prior
    Substituting sigma = delta t, integral p(y | sigma, delta) d sigma = delta^(1 - N) h(delta)
    with h(delta) = (2 pi)^(-N/2) integral prod_i (1 + t^2 lam_i)^-1/2 exp(-Q(t) / (2 delta^2))
    dt, finite iff r >= 2 (its integrand falls like t^-r), and delta^(1 - N) h(delta) bounded
    (as delta -> 0 by exp(-rss / (2 delta^2)) when the residual rss > 0, by h ~ delta^(N - 1)
    when r = N), so a proper noise prior integrates it: proper iff r >= 2.
Flat prior on the noise
    For delta -> infinity, p(y | sigma, delta) <= (2 pi)^(-N/2) delta^-N for every sigma; with
    a proper prior on sigma the tail integral is finite iff N >= 2; with a flat prior on sigma
    too the sigma integral above leaves delta^(1 - N), finite iff N >= 3.
With ARD (one sigma_j per feature), a flat prior on each
    Growing one sigma_j alone is a rank-one update of the covariance: its determinant grows
    like sigma_j^2, so p(y | sigma) ~ 1 / sigma_j, which never integrates: always improper.
An exact fit with a learned noise (any prior on sigma)
    If y lies in the column space of X (zero least-squares residual) and r < N, then for fixed
    sigma p(y | sigma, delta) ~ delta^-(N - r) as delta -> 0: N - r eigenvalues of the
    covariance are delta^2 while the quadratic form stays bounded. A noise prior with positive
    density at 0 (halfnormal, halfcauchy, exponential, flat) cannot stop that; invgamma
    (density ~ exp(-BETA / delta^2)) and loguniform (no mass below LOWER) can. A constant
    target is the extreme case; :meth:`Dataset.center` refuses it outright.

``tests/test_propriety.py`` checks each tail exponent against the marginal likelihood.
"""

from __future__ import annotations

import numpy as np

from hyperbayes.models.hyperpriors import Hyperprior, ImproperPriorError, parse_hyperprior
from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = ["exact_fit", "posterior_impropriety", "require_proper_posterior"]

#: A least-squares residual below this multiple of eps * y.y * (r + 1) is round-off: an exact fit.
RSS_ROUNDOFF = 32.0
#: Noise priors whose density at delta -> 0 is positive (so they cannot offset delta^-(N - r)).
_POSITIVE_AT_ZERO = ("halfnormal", "halfcauchy", "exponential", "flat")


def posterior_impropriety(
    *,
    rank: int,
    n: int,
    exact: bool,
    hyperprior: Hyperprior,
    noise_prior: Hyperprior | None,
    ard: bool = False,
) -> str | None:
    """Why p(sigma [, delta] | y) does not integrate, or None when it does (module notes).

    Parameters
    ----------
    rank, n : int
        rank(X) of the data as fitted, and the number of observations N.
    exact : bool
        Whether y lies in the column space of X (see :func:`exact_fit`).
    hyperprior : Hyperprior
        The prior on sigma (on each sigma_j with ``ard``).
    noise_prior : Hyperprior or None
        The prior on the noise scale, or None for a known noise.
    ard : bool
        One sigma per feature.

    Returns
    -------
    str or None
        One sentence giving the reason and the fix, for an :class:`ImproperPriorError`.
    """
    if noise_prior is not None and exact and rank < n and noise_prior.kind in _POSITIVE_AT_ZERO:
        return (
            f"y lies in the column space of X (an exact fit) while rank(X) = {rank} < N = {n}, "
            f"so p(y | sigma, delta) grows like delta^-{n - rank} as delta -> 0 and the noise "
            f"prior {noise_prior}, positive at 0, does not stop it; fix the noise scale "
            "(--noise / noise=...), or use a noise prior that vanishes at 0 (invgamma:A,B or "
            "loguniform:LOWER,UPPER)"
        )
    if not hyperprior.proper and ard:
        return (
            "with ARD each sigma_j has its own flat prior, and p(y | sigma) falls only like "
            "1/sigma_j as one sigma_j grows, which does not integrate; use a proper hyperprior "
            "(e.g. halfnormal:SCALE)"
        )
    if not hyperprior.proper and rank < 2:
        return (
            f"rank(X) = {rank} (after centring, if an intercept is fitted), so p(y | sigma) falls "
            f"only like sigma^-{rank} as sigma grows, and with the flat hyperprior that does not "
            "integrate (it needs rank(X) >= 2); use a proper hyperprior such as halfnormal:SCALE "
            "or loguniform:LOWER,UPPER"
        )
    needed = 2 if hyperprior.proper else 3  # delta^-N, or delta^(1 - N) after a flat sigma
    if noise_prior is not None and not noise_prior.proper and n < needed:
        both = "" if hyperprior.proper else " (with the flat prior on sigma integrated out)"
        return (
            f"with N = {n} observation(s), p(y | delta){both} falls only like "
            f"delta^-{n + 2 - needed} as the noise scale delta grows, so the flat noise prior "
            f"does not integrate (it needs N >= {needed}); use a proper noise prior such as "
            "halfnormal:SCALE"
        )
    return None


def exact_fit(data) -> tuple[int, bool]:
    """(rank(X), whether y lies in the column space of X) for the data as fitted.

    N >= D: from the eigenvalues of G = X^T X (those below lam_max D eps are zero, as in
    :class:`SufficientStats`) and the residual v - sum_i bt_i^2 / lam_i; N < D: from the thin
    SVD of X, with the residual ||y - U U^T y||^2 computed directly. A residual below
    ``RSS_ROUNDOFF * (r + 1) * eps * y.y`` is round-off, and r >= N fits any y exactly.
    """
    eps = np.finfo(float).eps
    if data.n >= data.d:  # from the statistics, so streamed data (no rows held) work too
        st = SufficientStats.from_dataset(data)
        e, v = st.eigen, st.v
        keep = e.lam > 0
        rank, rss = int(keep.sum()), v - float(np.sum(e.bt[keep] ** 2 / e.lam[keep]))
    else:
        X, y = np.asarray(data.X, dtype=float), np.asarray(data.y, dtype=float)
        v = float(y @ y)
        U, s, _ = np.linalg.svd(X, full_matrices=False)
        keep = s > s.max(initial=0.0) * max(X.shape) * eps
        U = U[:, keep]
        rank, rss = int(keep.sum()), float(np.sum((y - U @ (U.T @ y)) ** 2))
    exact = rank >= data.n or rss <= RSS_ROUNDOFF * (rank + 1) * eps * v
    return rank, bool(exact)


def require_proper_posterior(
    data,
    *,
    hyperprior: Hyperprior | str,
    noise_prior: Hyperprior | str | None,
    ard: bool = False,
    purpose: str,
) -> None:
    """Raise :class:`ImproperPriorError` if these data and priors give an improper posterior.

    ``noise_prior`` is None for a known noise scale; ``purpose`` names what needs the posterior
    (e.g. ``"NUTS"``) and starts the message.
    """
    hp = parse_hyperprior(hyperprior)
    np_ = None if noise_prior is None else parse_hyperprior(noise_prior)
    if hp.proper and (np_ is None or (np_.proper and np_.kind not in _POSITIVE_AT_ZERO)):
        return  # proper priors, and no exact-fit case to look for: skip the decomposition
    rank, exact = exact_fit(data)
    reason = posterior_impropriety(
        rank=rank, n=data.n, exact=exact, hyperprior=hp, noise_prior=np_, ard=ard
    )
    if reason is not None:
        raise ImproperPriorError(f"{purpose} needs a proper posterior, but it is improper here: {reason}.")
