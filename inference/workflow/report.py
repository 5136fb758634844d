"""The diagnostic report: one self-contained HTML file rendered from a run directory.

Everything is read from disk (``summary.json``, ``data.csv``, ``METHOD.nc``), so
``hyperbayes report DIR`` re-renders it without re-running anything. Images are embedded as
base64 PNG; the file references nothing outside itself.

The figures are drawn off-screen with Agg, chosen here where the report renders: rendering
needs no display and leaves the caller's matplotlib backend (inline in Jupyter, a GUI, svg)
as it found it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from hyperbayes.inference.methods.arviz_io import load_datatree
from hyperbayes.inference.workflow import figures
from hyperbayes.inference.workflow.compare import Comparison, table_html
from hyperbayes.inference.workflow.oracle_check import ORACLE_NOTE
from hyperbayes.inference.workflow.report_html import page, section, warning_box
from hyperbayes.inference.workflow.rundir import write_run_directory
from hyperbayes.models.data import Dataset, load_csv
from hyperbayes.models.specification import ModelSpec
from hyperbayes.models.streaming import StreamedData

__all__ = ["REPORT_NAME", "render_report", "write_comparison", "write_report"]

REPORT_NAME = "report.html"
#: The statistics a run directory keeps instead of data.csv when the data were streamed.
STATS_NAME = "statistics.json"

_INTRO = {
    "joint-map": "Maximising p(y, w | sigma) p(sigma) over w and sigma together. The joint density "
    "has no maximum: along w -> 0, sigma -> 0 it grows without bound, so any finite answer is "
    "a local point or the optimiser's luck.",
    "eb": "Empirical Bayes maximises the marginal likelihood p(y | sigma), with w integrated out.",
    "posterior": "The full posterior of sigma: NUTS and SMC against the exact oracle, with the "
    "point estimates of the other methods (the table's 'vs exact' column measures each gap).",
    "nuts": "NUTS diagnostics: trace and rank plots, energy (BFMI), and log sigma against the first "
    "weight with divergences marked.",
    "smc": "Sequential Monte Carlo estimate of the evidence p(y) with its standard error from the "
    "spread between chains, against the exact value.",
    "cv": "Cross-validation curve of the ridge penalty lambda = delta^2 / sigma^2, with the "
    "hypergradient (HOAG) path where one was run.",
}


def write_comparison(
    out: str | Path, result: Comparison, data: Dataset | ModelSpec, *, dataset: str = ""
) -> Path:
    """Write a comparison's run directory atomically: summary.json, data.csv, METHOD.nc (the
    draws of every method that has them) and report.html, rendered from the files just written.

    A family run (``result`` from a :class:`~hyperbayes.models.specification.ModelSpec`, which
    ``data`` then is) also writes its figures as PNG files under ``figures/``
    (:mod:`~hyperbayes.inference.workflow.family_report`).
    """
    if getattr(result, "spec", None) is not None:
        from hyperbayes.inference.workflow.family_report import write_family_comparison

        return write_family_comparison(out, result, dataset=dataset)
    summary = result.to_json()
    summary["dataset"] = dataset
    summary["target"] = data.target_name
    trees = {name: s.draws for name, s in result.results.items() if s.draws is not None}
    # Streamed data: their statistics (O(D^2) numbers), not rows, and how they were read.
    streamed = isinstance(data, StreamedData)
    if streamed:
        summary["data_read"] = data.reading.to_json()
    return write_run_directory(
        out,
        summary=summary,
        datatrees=trees,
        extra_files={
            STATS_NAME if streamed else "data.csv": data.write_json if streamed else data.to_csv,
            REPORT_NAME: lambda path: write_report(path.parent, out=path),
        },
    )


def write_report(run_dir: str | Path, *, out: str | Path | None = None) -> Path:
    """Render the report of ``run_dir`` and write it (default ``run_dir/report.html``)."""
    run_dir = Path(run_dir)
    target = Path(out) if out is not None else run_dir / REPORT_NAME
    if _is_family(run_dir):
        from hyperbayes.inference.workflow.family_report import write_family_report

        return write_family_report(run_dir, out=target)
    target.write_text(render_report(run_dir))
    return target


def _is_family(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a family run (its summary.json says ``"family": true``)."""
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("family") is True
    except (OSError, ValueError, AttributeError):
        return False  # the shared renderer reports what is wrong with the file


def render_report(run_dir: str | Path) -> str:
    """The HTML text of the report of ``run_dir``."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary.get("family") is True:
        from hyperbayes.inference.workflow.family_report import render_family_report

        return render_family_report(run_dir)[0]
    methods: dict[str, Any] = summary.get("methods", {})
    data = (StreamedData.read_json(run_dir / STATS_NAME) if (run_dir / STATS_NAME).is_file()
            else load_csv(run_dir / "data.csv", target=summary.get("target", "y")))
    trees = {p.stem: load_datatree(p) for p in sorted(run_dir.glob("*.nc"))}

    parts = [_head(summary), _warning_box(summary), _table(summary)]
    sections: list[tuple[str, str, Callable[[], Any] | None]] = [
        ("joint-map", "Joint MAP", lambda: figures.joint_map_landscape(data, summary, methods)),
        ("eb", "Empirical Bayes", lambda: figures.marginal_likelihood_curve(data, methods)),
        ("posterior", "Posterior of sigma", lambda: figures.sigma_posteriors(trees, methods)),
        ("nuts", "NUTS", None),
        ("smc", "SMC evidence", lambda: figures.smc_evidence(methods)),
        ("cv", "Cross-validation", lambda: figures.cv_curve(methods)),
    ]
    with figures.offscreen():
        for key, title, draw in sections:
            parts.append(_figure_section(key, title, draw, summary, methods, trees))
    return _page("".join(parts))


def _figure_section(
    key: str,
    title: str,
    draw: Callable[[], Any] | None,
    summary: dict[str, Any],
    methods: dict[str, Any],
    trees: dict[str, Any],
) -> str:
    needs = "exact" if key == "posterior" else key
    if needs not in methods and not (key == "posterior" and trees):
        return _section(key, title, [], note=_missing(summary, needs))
    images: list[bytes] = []
    note = None
    try:
        if key == "nuts":
            images = _nuts_images(trees.get("nuts"))
        else:
            images = [figures.figure_png(draw())]
    except Exception as exc:  # a figure that cannot be drawn is said, not hidden
        note = f"figure could not be drawn: {type(exc).__name__}: {exc}"
    return _section(key, title, images, note=note)


def _nuts_images(tree) -> list[bytes]:
    import arviz_plots as azp

    if tree is None:
        raise FileNotFoundError("nuts.nc is missing from the run directory")
    var_names = [v for v in ("sigma", "noise", "w") if v in tree.posterior]
    images = [
        figures.arviz_png(azp.plot_trace_dist(tree, var_names=var_names, backend="matplotlib")),
        figures.arviz_png(azp.plot_rank(tree, var_names=var_names, backend="matplotlib")),
    ]
    if "sample_stats" in tree.children and "energy" in tree.sample_stats:
        images.append(figures.arviz_png(azp.plot_energy(tree, backend="matplotlib")))
    # log sigma against the first weight: the funnel's coordinates (divergences are marked).
    post = tree["posterior"].to_dataset()
    post["log_sigma"] = np.log(post["sigma"])
    with_log = tree.copy()
    with_log["posterior"] = xr.DataTree(post)
    first = {"feature": [str(post["w"]["feature"].values[0])]}
    images.append(
        figures.arviz_png(
            azp.plot_pair_focus(
                with_log, "log_sigma", var_names=["w"], coords=first, backend="matplotlib"
            )
        )
    )
    return images


def _missing(summary: dict[str, Any], method: str) -> str:
    for row in summary.get("table", []):
        if row["method"] == method:
            return f"{method} {row['status']}: {row.get('message') or ''}"
    return f"{method} was not run."


def _head(summary: dict[str, Any]) -> str:
    return (
        "<h1>hyperbayes: how should sigma be learned?</h1>"
        f"<p>Data: N = {summary['n']}, D = {summary['d']}"
        f"{' (' + html.escape(summary['dataset']) + ')' if summary.get('dataset') else ''}. "
        f"Hyperprior on sigma: <code>{html.escape(summary['hyperprior'])}</code>; noise: "
        + (
            f"known, delta = {summary['noise']:.4g}"
            if summary.get("noise") is not None
            else f"learned, prior <code>{html.escape(str(summary.get('noise_prior')))}</code>"
        )
        + f"; seed {summary.get('seed')}.</p>"
        + (f"<p>Data read: {html.escape(summary['data_read']['how'])}.</p>"
           if summary.get("data_read") else "")
    )


def _table(summary: dict[str, Any]) -> str:
    return (
        "<h2>Comparison</h2>"
        + table_html(summary.get("table", []))
        + "<p class=\"small\">lambda = delta^2 / sigma^2, the ridge penalty each method "
        "implies. Log evidence is log p(y) for the exact oracle and SMC; for empirical Bayes it is "
        "the maximised marginal likelihood log p(y | sigma_hat, delta_hat), which is higher than "
        "the evidence because it does not pay for the uncertainty in sigma. Held-out error is the "
        f"cross-validation score (mean squared error). {html.escape(ORACLE_NOTE)}</p>"
    )


def _section(key: str, title: str, images: list[bytes], *, note: str | None = None) -> str:
    return section(key, title, images, intro=_INTRO.get(key, ""), note=note)


#: Kept under their old names (tests and older notebooks import them from here).
_page = page
_warning_box = warning_box
