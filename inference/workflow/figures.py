"""The report's figures, each drawn from what a run directory holds (no method is re-run).

Every function returns a matplotlib Figure (or, for ArviZ plots, PNG bytes); the report
embeds them. Plotting lives here and in the notebooks only, never in a runner.

Nothing here selects a matplotlib backend: figures are made with pyplot and so follow the
caller's backend, inline in Jupyter (end the call with ``;`` to skip the returned Figure's own
repr) and in a window from a script. The HTML report draws them off-screen with Agg and
restores the caller's backend (``hyperbayes.inference.workflow.report``).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from hyperbayes.inference.mathematics.joint_density import joint_log_density
from hyperbayes.inference.mathematics.linear_gaussian import log_marginal_likelihood
from hyperbayes.models.data import Dataset
from hyperbayes.models.hyperpriors import parse_hyperprior
from hyperbayes.models.sufficient_stats import SufficientStats

__all__ = [
    "offscreen",
    "arviz_png",
    "cv_curve",
    "figure_png",
    "joint_map_landscape",
    "marginal_likelihood_curve",
    "sigma_posteriors",
    "smc_evidence",
]


@contextmanager
def offscreen() -> Iterator[None]:
    """Draw with pyplot on Agg, whatever the caller's backend; restore it on the way out.

    The reports render inside this, so they need no display and leave the caller's backend
    (inline in Jupyter, a GUI, svg) as it was. Only the figures made inside are closed. When
    no backend was selected yet, the one matplotlib selects by itself is the one restored.
    """
    previous = matplotlib.get_backend()
    before = set(plt.get_fignums())
    plt.switch_backend("agg")
    try:
        yield
    finally:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)
        plt.switch_backend(previous)

COLORS = {"exact": "black", "nuts": "C0", "smc": "C1", "eb": "C2", "joint-map": "C3", "cv": "C4"}


def figure_png(fig, *, dpi: int = 90) -> bytes:
    """A Matplotlib figure as PNG bytes; the figure is closed (only it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def arviz_png(plot_collection) -> bytes:
    """An ArviZ (arviz_plots, matplotlib backend) PlotCollection as PNG bytes; its figure is
    closed, and no other.

    ArviZ lays its grids out with fixed spacing, so two-line panel titles ("w" over the
    feature's name) ran into the tick labels of the row above; matplotlib's constrained
    layout makes room for them.
    """
    fig = plot_collection.get_viz("figure")
    fig.set_layout_engine("constrained")
    return figure_png(fig, dpi=80)


def joint_map_landscape(data: Dataset, summary: dict[str, Any], methods: dict[str, Any]):
    """Joint log density on the slice w = t * w_EB, over (log10 t, log sigma), with the
    collapse path; and the density along that path.

    In logarithmic coordinates the collapse path sigma = t ||w_EB|| / sqrt(D) is a straight
    line, and the contours show J rising without bound towards t -> 0, sigma -> 0 (MATH.md
    section 2) while the data's own mode sits near t = 1.
    """
    jm = methods.get("joint-map", {})
    noise = jm.get("noise") or summary.get("noise") or methods.get("eb", {}).get("noise") or 1.0
    hp = parse_hyperprior(summary["hyperprior"])
    st = SufficientStats.from_dataset(data)
    w_dir = np.asarray(methods.get("eb", {}).get("weights") or jm.get("weights") or np.ones(data.d))
    if not np.any(w_dir):
        w_dir = np.ones(data.d)
    center = np.log(np.linalg.norm(w_dir) / np.sqrt(data.d))  # sigma_hat(w_dir), at t = 1
    log10_t = np.linspace(-16, 0.5, 300)
    log_s = np.linspace(center + np.log(10.0) * -17, center + 4, 300)
    T, U = np.meshgrid(log10_t, log_s)
    learned = summary.get("noise") is None
    noise_prior = summary.get("noise_prior") if learned else None
    J = joint_log_density(
        st, (10.0**T)[..., None] * w_dir, np.exp(U), noise=noise, hyperprior=hp, noise_prior=noise_prior
    )
    J = np.where(np.isfinite(J), J, np.nan)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    at_one = joint_log_density(  # the best value at t = 1: the data's own region
        st, np.broadcast_to(w_dir, (log_s.size, data.d)), np.exp(log_s), noise=noise,
        hyperprior=hp, noise_prior=noise_prior,
    )
    ref = float(np.nanmax(np.where(np.isfinite(at_one), at_one, np.nan)))
    levels = ref + np.array([-400, -200, -100, -50, -20, 0, 20, 50, 100, 200, 400])
    cf = axes[0].contourf(T, U, J - ref, levels=levels - ref, cmap="RdBu_r", extend="both")
    fig.colorbar(cf, ax=axes[0], label="J minus its best value near t = 1")
    axes[0].plot(log10_t, center + np.log(10.0) * log10_t, "k--", lw=1, label="collapse path")
    eb = methods.get("eb", {})
    if eb.get("sigma"):
        axes[0].plot(0, np.log(eb["sigma"]), "o", color=COLORS["eb"], label="EB sigma at t = 1")
    if jm.get("sigma"):
        axes[0].axhline(np.log(jm["sigma"]), color=COLORS["joint-map"], ls=":", label="joint-MAP sigma")
    axes[0].set_xlabel("log10 t   (w = t * w_EB)")
    axes[0].set_ylabel("log sigma")
    axes[0].set_title("joint log density: higher (red) towards w = 0, sigma = 0")
    axes[0].legend(loc="lower right", fontsize=7)
    path = jm.get("collapse_path") or {}
    ts, ld = path.get("t"), path.get("log_density")
    if ts and ld:
        axes[1].semilogx(ts, ld, "o-", ms=3, color=COLORS["joint-map"], label="along the collapse path")
        if jm.get("log_density") is not None:
            axes[1].axhline(jm["log_density"], color="grey", ls=":", label="optimiser's point")
        axes[1].invert_xaxis()
        axes[1].set_xlabel("t  (w = t w_hat, sigma = t ||w_hat|| / sqrt(D))")
        axes[1].set_ylabel("joint log density")
        axes[1].legend(fontsize=8)
        axes[1].set_title("the density keeps growing as t -> 0")
    else:
        axes[1].text(0.5, 0.5, "no collapse path recorded", ha="center", transform=axes[1].transAxes)
    fig.tight_layout()
    return fig


def marginal_likelihood_curve(data: Dataset, methods: dict[str, Any]):
    """log p(y | sigma, delta_EB) over sigma, with the empirical-Bayes optimum marked."""
    eb = methods["eb"]
    st = SufficientStats.from_dataset(data)
    center = eb["sigma"] if eb.get("sigma") else 1.0
    sig = np.exp(np.linspace(np.log(center) - 6, np.log(center) + 4, 400))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.semilogx(sig, log_marginal_likelihood(st, sig, eb["noise"]), color=COLORS["eb"])
    if eb.get("sigma"):
        ax.axvline(eb["sigma"], color=COLORS["eb"], ls="--", label=f"EB sigma = {eb['sigma']:.3g}")
    for name in ("joint-map", "cv"):
        s = methods.get(name, {}).get("sigma")
        if s:
            ax.axvline(s, color=COLORS[name], ls=":", label=f"{name} sigma = {s:.3g}")
    ax.set_xlabel("sigma")
    ax.set_ylabel("log p(y | sigma)")
    ax.set_title(f"marginal likelihood at delta = {eb['noise']:.3g}")
    ax.legend(fontsize=8)
    return fig


def sigma_posteriors(trees: dict[str, Any], methods: dict[str, Any]):
    """The posterior of sigma from NUTS, SMC and the exact oracle, with the point estimates."""
    fig, ax = plt.subplots(figsize=(7, 4))
    all_draws = []
    curve = methods.get("exact", {}).get("log_sigma_density")
    if curve:
        ax.plot(curve["log_sigma"], curve["density"], color=COLORS["exact"], lw=2.5, label="exact")
    for name in ("exact", "nuts", "smc"):
        if name == "exact" and curve:
            continue
        tree = trees.get(name)
        if tree is None or "sigma" not in tree.posterior:
            continue
        s = np.asarray(tree.posterior["sigma"]).ravel()
        all_draws.append(s)
        lw = 2.5 if name == "exact" else 1.5
        ax.hist(np.log(s), bins=60, density=True, histtype="step", lw=lw, color=COLORS[name], label=name)
    if all_draws or curve:
        pooled = np.log(np.concatenate(all_draws)) if all_draws else np.asarray(curve["log_sigma"])
        lo, hi = np.quantile(pooled, [0.0005, 0.9995])
        pad = 0.15 * (hi - lo)
        ax.set_xlim(lo - pad, hi + pad)
    left, right = ax.get_xlim()
    for name in ("eb", "joint-map", "cv"):
        s = methods.get(name, {}).get("sigma")
        if not (s and s > 0):
            continue
        if left <= np.log(s) <= right:
            ax.axvline(np.log(s), color=COLORS[name], ls="--", label=f"{name}: {s:.3g}")
        else:  # off the scale: an arrow at the edge says where
            edge = left if np.log(s) < left else right
            ax.annotate(
                f"{name}: {s:.3g}", xy=(edge, 0.5), xycoords=("data", "axes fraction"),
                xytext=(0.5 if edge == left else -0.5, 0), textcoords="offset fontsize",
                ha="left" if edge == left else "right", color=COLORS[name],
                arrowprops={"arrowstyle": "<-" if edge == left else "->", "color": COLORS[name]},
            )
    ax.set_xlabel("log sigma")
    ax.set_ylabel("posterior density (of log sigma)")
    ax.set_title("posterior of the prior scale sigma")
    ax.legend(fontsize=8)
    return fig


def smc_evidence(methods: dict[str, Any]):
    """SMC's log evidence with its error bar (and each chain), against the exact value."""
    smc, exact = methods["smc"], methods.get("exact", {})
    fig, ax = plt.subplots(figsize=(6, 3))
    se = smc.get("log_evidence_se") or 0.0
    ax.errorbar([smc["log_evidence"]], [1], xerr=[2 * se], fmt="o", color=COLORS["smc"], capsize=4, label="SMC (+-2 se)")
    chains = smc.get("chain_log_evidence") or []
    ax.plot(chains, np.full(len(chains), 0.8), "|", ms=12, color=COLORS["smc"], label="chains")
    if exact.get("log_evidence") is not None:
        ax.axvline(exact["log_evidence"], color="black", label="exact")
    ax.set_yticks([])
    ax.set_ylim(0.5, 1.4)
    ax.set_xlabel("log p(y)")
    ax.legend(fontsize=8)
    return fig


def cv_curve(methods: dict[str, Any]):
    """The cross-validation curve with its standard-error band and the choices; and, where
    HOAG ran, its path in a panel of its own.

    HOAG descends the held-out error of one train/validation split, not the K-fold mean: its
    losses are on another scale and its lambda may leave the curve's grid, so on the curve's
    axes it would float beside the curve and read as an error. Its panel shows that one
    split's error along the path, from the start (circle) to where it stopped (star), with
    the K-fold choice marked for reference.
    """
    cv = methods["cv"]
    hoag = cv.get("hoag_path") or {}
    has_hoag = bool(hoag.get("lambda") and hoag.get("loss"))
    fig, axes = plt.subplots(1, 2 if has_hoag else 1, figsize=(11.5 if has_hoag else 6.5, 3.8),
                             squeeze=False)
    _kfold_panel(axes[0, 0], cv, methods.get("eb", {}))
    if has_hoag:
        _hoag_panel(axes[0, 1], hoag, cv)
    fig.tight_layout()
    return fig


def _kfold_panel(ax, cv: dict[str, Any], eb: dict[str, Any]) -> None:
    curve = cv.get("curve") or {}
    lam, score, se = (np.asarray(curve.get(k, []), dtype=float) for k in ("lambda", "score", "se"))
    if lam.size:
        ax.semilogx(lam, score, color=COLORS["cv"], label=f"{cv.get('scheme', 'cv')} score")
        if se.size == lam.size:
            ax.fill_between(lam, score - se, score + se, color=COLORS["cv"], alpha=0.2)
    if cv.get("lambda"):
        ax.axvline(cv["lambda"], color=COLORS["cv"], ls="--", label=f"CV lambda = {cv['lambda']:.3g}")
    if cv.get("lambda_1se"):
        ax.axvline(cv["lambda_1se"], color=COLORS["cv"], ls=":", label="one-standard-error choice")
    if eb.get("sigma") and eb.get("noise"):
        eb_lambda = (eb["noise"] / eb["sigma"]) ** 2
        ax.axvline(eb_lambda, color=COLORS["eb"], ls="--", label=f"EB lambda = {eb_lambda:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("lambda = delta^2 / sigma^2")
    ax.set_ylabel("held-out error (mean over folds)")
    ax.set_title("cross-validation curve")
    ax.legend(loc="upper left", fontsize=8)


def _hoag_panel(ax, hoag: dict[str, Any], cv: dict[str, Any]) -> None:
    lam, loss = np.asarray(hoag["lambda"], dtype=float), np.asarray(hoag["loss"], dtype=float)
    color = "C5"
    ax.semilogx(lam, loss, "o-", ms=3, lw=0.8, color=color, label="HOAG iterates")
    ax.plot(lam[0], loss[0], "o", ms=9, mfc="none", color=color,
            label=f"start: lambda = {lam[0]:.3g}")
    ax.plot(lam[-1], loss[-1], "*", ms=13, color=color, label=f"stopped: lambda = {lam[-1]:.3g}")
    if cv.get("lambda"):
        ax.axvline(cv["lambda"], color=COLORS["cv"], ls="--", lw=1, label="K-fold CV lambda")
    ax.set_xlabel("lambda")
    ax.set_ylabel("held-out error of the one split")
    ax.set_title("HOAG on one split (the first fold held out)")
    ax.legend(fontsize=8)


#: The family's figures live in ``family_figures`` (which imports this module); they are
#: reachable here too, so a notebook finds every figure as ``hb.figures.NAME``.
_FAMILY_FIGURES = ("scale_posterior", "shrinkage_plot")


def __dir__() -> list[str]:
    return sorted([*globals(), *_FAMILY_FIGURES])


def __getattr__(name: str):
    if name in _FAMILY_FIGURES:
        from hyperbayes.inference.workflow import family_figures

        return getattr(family_figures, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
