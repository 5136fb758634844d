"""The figures of a family run: each scale's posterior, and the shrinkage plot.

Each function takes a :class:`~hyperbayes.inference.workflow.family_compare.FamilyComparison`
(in a notebook) or the ``summary.json`` of its run directory as a dict with the loaded
DataTrees (in the report), and returns a matplotlib Figure, drawn with pyplot on the caller's
backend (inline in Jupyter; end the call with ``;`` to skip the Figure's own repr). Nothing
here selects a backend; the report draws inside
:func:`hyperbayes.inference.workflow.figures.offscreen`.

>>> fig = scale_posterior(comparison, "tau")       # doctest: +SKIP
>>> fig = shrinkage_plot(comparison)               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from hyperbayes.inference.workflow.figures import COLORS, arviz_png

__all__ = ["family_nuts_images", "scale_posterior", "shrinkage_plot"]

#: Point estimates drawn as vertical lines on each scale's posterior.
_POINT_METHODS = ("eb", "joint-map", "cv")
_Z = 1.959963984540054


def _parts(source: Any, trees: Mapping[str, Any] | None):
    """(methods' JSON, DataTrees, shrinkage JSON) from a FamilyComparison or a summary dict."""
    if hasattr(source, "results"):
        methods = {m: s.to_json() for m, s in source.results.items()}
        found = {m: s.draws for m, s in source.results.items() if s.draws is not None}
        shrink = source.shrinkage.to_json() if source.shrinkage is not None else None
        return methods, dict(trees) if trees is not None else found, shrink
    return dict(source.get("methods", {})), dict(trees or {}), source.get("shrinkage")


def _scale_draws(tree: Any, scale: str) -> np.ndarray | None:
    post = tree["posterior"] if "posterior" in tree.children else None
    if post is None:
        return None
    if scale == "noise":
        return np.asarray(post["noise"].values, float).ravel() if "noise" in post else None
    if "sigma" in post and "group" in post["sigma"].dims:
        groups = [str(g) for g in post["sigma"]["group"].values]
        if scale in groups:
            return np.asarray(post["sigma"].sel(group=scale).values, float).ravel()
    return None


def _point_value(method_json: Mapping[str, Any], scale: str) -> float | None:
    if scale == "noise":
        return method_json.get("noise")
    return (method_json.get("sigmas") or {}).get(scale)


def scale_posterior(source: Any, scale: str, *, trees: Mapping[str, Any] | None = None):
    """The posterior of one unknown scale: every sampler's draws, the exact density, and the
    point estimates of empirical Bayes, joint MAP and cross-validation as vertical lines.

    Parameters
    ----------
    source : FamilyComparison or dict
        A family comparison, or its ``summary.json`` as a dict.
    scale : str
        A learned group's name (e.g. ``"tau"``), or ``"noise"``.
    trees : mapping of str to DataTree, optional
        The samplers' draws by method (from the run directory's ``METHOD.nc``); taken from
        the comparison when ``source`` is one.

    Returns
    -------
    matplotlib.figure.Figure
        Over log scale: a point estimate of 0 (a boundary solution) is an arrow at the left
        edge, labelled with its value.
    """
    methods, trees, _ = _parts(source, trees)
    fig, ax = plt.subplots(figsize=(7, 4))
    curve = (methods.get("exact", {}).get("log_scale_density") or {}).get(scale)
    spread = []
    if curve:
        u, f = np.asarray(curve["log_scale"], float), np.asarray(curve["density"], float)
        ax.plot(u, f, color=COLORS["exact"], lw=2.5, label="exact")
        cdf = np.concatenate([[0.0], np.cumsum(np.diff(u) * (f[1:] + f[:-1]) / 2)])
        spread.append(np.interp([0.0005, 0.9995], cdf / cdf[-1], u))
    for name, tree in trees.items():
        if name == "exact" and curve:
            continue
        draws = _scale_draws(tree, scale)
        if draws is None or not np.any(draws > 0):
            continue
        logs = np.log(draws[draws > 0])
        spread.append(logs)
        ax.hist(logs, bins=60, density=True, histtype="step", lw=1.5,
                color=COLORS.get(name, "grey"), label=f"{name} ({draws.size} draws)")
    if spread:
        lo, hi = np.quantile(np.concatenate(spread), [0.0005, 0.9995])
        pad = 0.15 * (hi - lo) or 1.0
        ax.set_xlim(lo - pad, hi + pad)
    left, right = ax.get_xlim()
    off_axis = 0  # estimates outside the axis are arrows at its edge, stacked so labels never overlap
    for name in _POINT_METHODS:
        value = _point_value(methods.get(name, {}), scale)
        if value is None:
            continue
        color = COLORS.get(name, "grey")
        if value > 0 and left <= np.log(value) <= right:
            ax.axvline(np.log(value), color=color, ls="--", label=f"{name}: {value:.3g}")
            continue
        at_left = not value > 0 or np.log(value) < left
        edge = left if at_left else right
        note = " (boundary)" if not value > 0 else ""
        height = 0.6 - 0.1 * off_axis
        off_axis += 1
        ax.annotate(
            f"{name}: {value:.3g}{note}", xy=(edge, height), xycoords=("data", "axes fraction"),
            xytext=(0.5 if at_left else -0.5, 0), textcoords="offset fontsize",
            ha="left" if at_left else "right", color=color,
            arrowprops={"arrowstyle": "<-" if at_left else "->", "color": color},
        )
    label = "noise" if scale == "noise" else f"sigma[{scale}]"
    ax.set_xlabel(f"log {label}")
    ax.set_ylabel(f"posterior density (of log {label})")
    ax.set_title(f"posterior of the scale {label}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def shrinkage_plot(source: Any):
    """Each level's raw mean against its posterior mean, for empirical Bayes and the
    samplers (exact, NUTS, SMC), with 95% intervals.

    Left: one row per level; the raw mean of y (the study's own estimate y_j with
    +-1.96 s_j when there is one row per level) in grey, each method's posterior mean of the
    level's mean theta_l with its interval, and the pooled mean (the intercept) as a dotted
    line when the model has no covariates. Right: posterior mean against raw mean; a slope
    below the diagonal is the shrinkage.

    Parameters
    ----------
    source : FamilyComparison or dict
        A family comparison, or its ``summary.json`` as a dict (its ``shrinkage`` entry).

    Returns
    -------
    matplotlib.figure.Figure
    """
    _, _, shrink = _parts(source, {})
    if not shrink:
        raise ValueError("the model has no random intercept: there is no shrinkage to plot.")
    levels = list(shrink["levels"])
    raw = np.asarray(shrink["raw_mean"], float)
    se = shrink.get("raw_se")
    estimates = shrink.get("estimates") or {}
    n_lv = len(levels)
    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(11.5, max(3.6, 0.32 * n_lv * (1 + 0.25 * len(estimates)) + 1.2)),
        gridspec_kw={"width_ratios": [1.7, 1]},
    )
    rows = np.empty(n_lv)
    rows[np.argsort(raw, kind="stable")] = np.arange(n_lv)  # sorted by raw mean, largest on top
    series = [("raw", raw, None if se is None else _Z * np.asarray(se, float))]
    for name, e in estimates.items():
        mean = np.asarray(e["mean"], float)
        series.append((name, mean, np.vstack([mean - np.asarray(e["lower"], float),
                                              np.asarray(e["upper"], float) - mean])))
    step = 0.7 / max(len(series), 1)
    for k, (name, mean, err) in enumerate(series):
        y = rows + 0.35 - step * (k + 0.5)
        color = "grey" if name == "raw" else COLORS.get(name, f"C{k}")
        label = name
        if name == "raw":
            label = "raw mean" if se is None else (
                "raw mean y_j +- 1.96 s_j" if shrink.get("one_row_per_level")
                else "raw mean +- 1.96 se")
        ax.errorbar(mean, y, xerr=err, fmt="s" if name == "raw" else "o", ms=4, lw=1,
                    capsize=2, color=color, label=label)
    pooled = shrink.get("pooled") or {}
    ref = next((pooled[m] for m in ("exact", "nuts", "smc", "eb") if m in pooled), None)
    if ref is not None and not shrink.get("adjusted"):
        ax.axvline(ref, color="black", ls=":", lw=1, label=f"pooled mean {ref:.3g}")
        ax2.axhline(ref, color="black", ls=":", lw=1)
    ax.set_yticks(rows, levels)
    ax.set_ylabel(shrink.get("factor", "level"))
    what = ("level mean at its covariate averages" if shrink.get("adjusted")
            else "Intercept + u_l")
    ax.set_xlabel(f"raw mean of y, and posterior mean of theta_l ({what}), 95% intervals")
    ax.set_title(f"shrinkage of the levels of group {shrink.get('group')!r}")
    ax.legend(fontsize=7, loc="best")
    for k, (name, mean, _) in enumerate(series[1:], start=1):
        ax2.plot(raw, mean, "o", ms=4, color=COLORS.get(name, f"C{k}"), label=name)
    lims = [min(raw.min(), *(s[1].min() for s in series)), max(raw.max(), *(s[1].max() for s in series))]
    ax2.plot(lims, lims, color="grey", lw=0.8, label="no pooling (y = x)")
    ax2.set_xlabel("raw mean")
    ax2.set_ylabel("posterior mean")
    ax2.set_title("posterior against raw mean")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def family_nuts_images(tree: Any) -> list[bytes]:
    """NUTS diagnostics of a family run as PNGs: trace and rank plots of the scales and the
    fixed effects, and the energy plot (BFMI) when the draws carry it."""
    import arviz_plots as azp

    var_names = [v for v in ("sigma", "noise", "beta") if v in tree.posterior]
    images = [
        arviz_png(azp.plot_trace_dist(tree, var_names=var_names, backend="matplotlib")),
        arviz_png(azp.plot_rank(tree, var_names=var_names, backend="matplotlib")),
    ]
    if "sample_stats" in tree.children and "energy" in tree.sample_stats:
        images.append(arviz_png(azp.plot_energy(tree, backend="matplotlib")))
    return images
