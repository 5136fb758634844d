"""Convergence diagnostics of posterior draws, as one frozen result with plain-words messages.

:func:`diagnose` is the project's one diagnostics function: NUTS, SMC and ``compare`` call it
on any ``xarray.DataTree`` with a ``posterior`` group. The sampler-specific checks
(divergences, tree depth, E-BFMI) need a ``sample_stats`` group as PyMC writes it; without
one (SMC, exact i.i.d. draws) they are reported as None, silently, because they do not apply.

Thresholds are the ones ArviZ and PyMC recommend (Vehtari et al. 2021; Betancourt 2016):

========================  =================  ==========================================
check                     fails when         usual remedy
========================  =================  ==========================================
divergences               any                reparametrise, raise ``target_accept``
R-hat (rank-normalised)   max > 1.01         more tuning and draws, reparametrise
bulk / tail ESS (total)   min < 400          more draws
E-BFMI                    min < 0.3          reparametrise (more draws do not help)
tree-depth saturation     fraction > 0       raise ``max_treedepth``, reparametrise
========================  =================  ==========================================
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import arviz_stats as azs
import numpy as np
import xarray as xr

__all__ = [
    "BFMI_MIN",
    "ESS_MIN",
    "RHAT_MAX",
    "Diagnostics",
    "DiagnosticsWarning",
    "diagnose",
]

#: Largest acceptable rank-normalised split R-hat (Vehtari et al. 2021).
RHAT_MAX = 1.01
#: Smallest acceptable bulk and tail ESS, summed over chains (Vehtari et al. 2021: 100 per chain, 4 chains).
ESS_MIN = 400.0
#: Smallest acceptable E-BFMI of any chain (Betancourt 2016).
BFMI_MIN = 0.3
#: Fewer draws per chain than this and R-hat / ESS are not computed (nan plus a warning).
MIN_DRAWS_PER_CHAIN = 4


class DiagnosticsWarning(UserWarning):
    """A diagnostic could not be computed (too few draws or chains); it is reported as nan."""


@dataclass(frozen=True)
class Diagnostics:
    """Convergence diagnostics of one set of draws; build it with :func:`diagnose`.

    Attributes
    ----------
    chains, draws : int
        Number of chains and draws per chain.
    divergences : int or None
        Divergent transitions after tuning (None: no sampler statistics).
    divergence_fraction : float or None
        ``divergences / (chains * draws)``.
    r_hat_max : float
        Largest rank-normalised R-hat over all posterior variables (nan for one chain).
    ess_bulk_min, ess_tail_min : float
        Smallest bulk and tail effective sample size (total over chains).
    bfmi_min : float or None
        Smallest E-BFMI over chains (None: no energy statistic).
    tree_depth_saturation : float or None
        Fraction of draws whose trajectory hit the maximum tree depth.
    worst : dict
        The variable responsible for each of r_hat_max, ess_bulk_min and ess_tail_min.
    messages : tuple of str
        One plain-words message, with its remedy, per failed check. Empty when all pass.
    notes : tuple of str
        The checks that could not be computed (too few draws or chains), in the words of the
        :class:`DiagnosticsWarning` that :func:`diagnose` raised for each, so that a result
        can carry them. They do not make ``ok`` false.
    """

    chains: int
    draws: int
    divergences: int | None
    divergence_fraction: float | None
    r_hat_max: float
    ess_bulk_min: float
    ess_tail_min: float
    bfmi_min: float | None
    tree_depth_saturation: float | None
    worst: Mapping[str, str]
    messages: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no check failed (a check that could not be computed does not fail)."""
        return not self.messages

    def to_json(self) -> dict[str, Any]:
        """The keys of the ``diagnostics`` object in the ``fit --json`` contract."""
        return {
            "divergences": self.divergences,
            "divergence_fraction": self.divergence_fraction,
            "r_hat_max": self.r_hat_max,
            "ess_bulk_min": self.ess_bulk_min,
            "ess_tail_min": self.ess_tail_min,
            "bfmi_min": self.bfmi_min,
            "tree_depth_saturation": self.tree_depth_saturation,
        }


def diagnose(
    data: xr.DataTree, *, var_names: list[str] | None = None, group: str = "posterior"
) -> Diagnostics:
    """Check the draws in ``data`` against the recommended thresholds.

    Parameters
    ----------
    data : xarray.DataTree
        Draws with a ``posterior`` group (dims ``chain``, ``draw``, ...) and, for the
        sampler-specific checks, a PyMC-style ``sample_stats`` group (``diverging``,
        ``reached_max_treedepth``, ``energy``).
    var_names : list of str, optional
        Posterior variables to check for R-hat and ESS (default: all).
    group : str
        The group holding the draws.

    Returns
    -------
    Diagnostics
        Frozen; ``messages`` lists each failed check in plain words with its remedy.

    Warns
    -----
    DiagnosticsWarning
        Fewer than 4 draws per chain (R-hat and ESS are nan), or a single chain of an MCMC
        run (R-hat is nan: it needs several chains to compare). Never raises for short input.

    Notes
    -----
    R-hat is the rank-normalised, folded split-R-hat and ESS the bulk and tail ESS of
    Vehtari, Gelman, Simpson, Carpenter and Buerkner (2021), Bayesian Analysis 16(2), as
    computed by ``arviz_stats``. E-BFMI = sum_t (E_t - E_{t-1})^2 / sum_t (E_t - mean E)^2
    per chain (Betancourt 2016, arXiv:1604.00695). Variables that do not vary (nan R-hat)
    are left out of the maximum.
    """
    if group not in data.children:
        raise ValueError(
            f"the DataTree has no {group!r} group (groups: {', '.join(data.children)}); "
            "diagnose needs the draws in a posterior group."
        )
    post = data[group].to_dataset()
    if var_names is not None:
        post = post[var_names]
    chains, draws = int(post.sizes.get("chain", 1)), int(post.sizes.get("draw", 0))
    stats = data["sample_stats"].to_dataset() if "sample_stats" in data.children else None

    r_hat, ess_bulk, ess_tail, worst, notes = _convergence(
        post, chains, draws, mcmc=stats is not None
    )
    divergences = _count(stats, "diverging")
    saturated = _count(stats, "reached_max_treedepth", "maxdepth_reached")  # PyMC, nutpie
    total = chains * draws
    fraction = None if divergences is None else divergences / max(total, 1)
    saturation = None if saturated is None else saturated / max(total, 1)
    bfmi_min = _bfmi_min(data, stats)

    messages = _messages(
        divergences=divergences,
        total=total,
        r_hat=r_hat,
        ess_bulk=ess_bulk,
        ess_tail=ess_tail,
        bfmi_min=bfmi_min,
        saturation=saturation,
        worst=worst,
    )
    return Diagnostics(
        chains=chains,
        draws=draws,
        divergences=divergences,
        divergence_fraction=fraction,
        r_hat_max=r_hat,
        ess_bulk_min=ess_bulk,
        ess_tail_min=ess_tail,
        bfmi_min=bfmi_min,
        tree_depth_saturation=saturation,
        worst=worst,
        messages=messages,
        notes=notes,
    )


def _convergence(
    post: xr.Dataset, chains: int, draws: int, *, mcmc: bool
) -> tuple[float, float, float, dict[str, str], tuple[str, ...]]:
    """(max R-hat, min bulk ESS, min tail ESS, worst variables, notes); nan where not computable.

    Each note is also raised as a :class:`DiagnosticsWarning`.
    """
    nan = math.nan
    if draws < MIN_DRAWS_PER_CHAIN:
        note = (
            f"only {draws} draw(s) per chain: R-hat and ESS need at least {MIN_DRAWS_PER_CHAIN}; "
            "they are reported as nan. Run more draws."
        )
        warnings.warn(note, DiagnosticsWarning, stacklevel=3)
        return nan, nan, nan, {}, (note,)
    notes: tuple[str, ...] = ()
    if chains < 2 and mcmc:
        notes = (
            "a single chain: R-hat needs several chains to compare and is reported as nan. "
            "Run at least 2 (better 4) chains.",
        )
        warnings.warn(notes[0], DiagnosticsWarning, stacklevel=3)
    with warnings.catch_warnings():
        # A variable that does not vary (e.g. a fixed weight) makes ArviZ divide 0 by 0; its nan
        # is dropped below, so the RuntimeWarning carries no information.
        warnings.simplefilter("ignore", RuntimeWarning)
        r_hat = azs.rhat(post) if chains >= 2 else None
        bulk = azs.ess(post, method="bulk")
        tail = azs.ess(post, method="tail")
    worst: dict[str, str] = {}
    r_max, worst["r_hat_max"] = _extreme(r_hat, np.nanargmax) if r_hat is not None else (nan, "")
    b_min, worst["ess_bulk_min"] = _extreme(bulk, np.nanargmin)
    t_min, worst["ess_tail_min"] = _extreme(tail, np.nanargmin)
    return r_max, b_min, t_min, {k: v for k, v in worst.items() if v}, notes


def _extreme(values: xr.Dataset, pick) -> tuple[float, str]:
    """The max or min (``pick`` = nanargmax/nanargmin) over every element, with its label."""
    labels, flat = [], []
    for name, da in values.data_vars.items():
        arr = np.atleast_1d(np.asarray(da.values, dtype=float))
        for index, value in np.ndenumerate(arr.reshape(arr.shape or (1,))):
            labels.append(name if arr.size == 1 else f"{name}{list(index)}")
            flat.append(value)
    flat_arr = np.asarray(flat, dtype=float)
    if not np.isfinite(flat_arr).any():
        return math.nan, ""
    i = int(pick(np.where(np.isfinite(flat_arr), flat_arr, np.nan)))
    return float(flat_arr[i]), labels[i]


def _count(stats: xr.Dataset | None, *names: str) -> int | None:
    """How many draws have the boolean statistic set (the first of ``names`` present)."""
    for name in names:
        if stats is not None and name in stats:
            return int(np.asarray(stats[name].values, dtype=bool).sum())
    return None


def _bfmi_min(data: xr.DataTree, stats: xr.Dataset | None) -> float | None:
    if stats is None or "energy" not in stats:
        return None
    if stats.sizes.get("draw", 0) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant energy: 0/0, reported as nan
        values = np.asarray(azs.bfmi(data)["energy"].values, dtype=float)
    finite = values[np.isfinite(values)]
    return float(finite.min()) if finite.size else math.nan


def _messages(
    *,
    divergences: int | None,
    total: int,
    r_hat: float,
    ess_bulk: float,
    ess_tail: float,
    bfmi_min: float | None,
    saturation: float | None,
    worst: dict[str, str],
) -> tuple[str, ...]:
    """One plain-words message per failed check, each with the usual remedy."""
    out = []
    if divergences:
        out.append(
            f"{divergences} of {total} draws ({divergences / total:.1%}) ended in a divergence: "
            "the sampler could not follow the posterior's curvature (typically the funnel "
            "between sigma and the weights), so the draws may be biased. Reparametrise "
            "(parametrization='marginal' or 'noncentered') or raise target_accept towards 0.99."
        )
    if r_hat > RHAT_MAX:
        out.append(
            f"R-hat is {r_hat:.3f} for {worst.get('r_hat_max', '?')} (above {RHAT_MAX}): the "
            "chains disagree, so they have not converged to one distribution. Run more tuning "
            "and draws, or reparametrise."
        )
    if ess_bulk < ESS_MIN:
        out.append(
            f"the bulk effective sample size is {ess_bulk:.0f} for "
            f"{worst.get('ess_bulk_min', '?')} (below {ESS_MIN:.0f}): too few independent draws "
            "for reliable means. Run more draws (or more chains)."
        )
    if ess_tail < ESS_MIN:
        out.append(
            f"the tail effective sample size is {ess_tail:.0f} for "
            f"{worst.get('ess_tail_min', '?')} (below {ESS_MIN:.0f}): too few independent draws "
            "in the tails for reliable intervals. Run more draws (or more chains)."
        )
    if bfmi_min is not None and bfmi_min < BFMI_MIN:
        out.append(
            f"the energy fraction of missing information (E-BFMI) is {bfmi_min:.2f} in some chain "
            f"(below {BFMI_MIN}): the sampler moves through the energy levels too slowly, as in "
            "a funnel or heavy tails. Reparametrise the model; more draws will not fix it."
        )
    if saturation:
        out.append(
            f"{saturation:.1%} of draws hit the maximum tree depth: their trajectories were cut "
            "short, so exploration is slow. Reparametrise or rescale the parameters, or raise "
            "max_treedepth."
        )
    return tuple(out)
