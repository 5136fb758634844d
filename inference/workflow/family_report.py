"""The report of a family run, rendered from its run directory like the shared-sigma report.

A family run directory holds ``summary.json`` (the model description, the table, every
method's JSON with ``sigmas``, ``fixed_effects`` and ``random_effects``, and the shrinkage
plot's numbers), ``data.csv`` (the numeric columns and the target), one ``METHOD.nc`` per
method with draws, ``report.html``, and the report's figures as PNG files in ``figures/``: the
posterior of each unknown scale (``scale_<name>.png``), the shrinkage plot
(``shrinkage.png``), NUTS diagnostics and SMC's evidence. ``hyperbayes report DIR`` re-renders
both the page and the PNG files from the other files, without re-running anything.
"""

from __future__ import annotations

import csv
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperbayes.inference.methods.arviz_io import load_datatree
from hyperbayes.inference.workflow import figures
from hyperbayes.inference.workflow.family_compare import (
    EVIDENCE_NOTE,
    FamilyComparison,
    family_table_html,
)
from hyperbayes.inference.workflow.family_figures import (
    family_nuts_images,
    scale_posterior,
    shrinkage_plot,
)
from hyperbayes.inference.workflow.family_oracle import FAMILY_ORACLE_NOTE
from hyperbayes.inference.workflow.report_html import page, section, warning_box
from hyperbayes.inference.workflow.rundir import write_run_directory

__all__ = ["FIGURES_DIR", "render_family_report", "write_family_comparison", "write_family_report"]

#: The subdirectory of a family run directory that holds the report's figures as PNG files.
FIGURES_DIR = "figures"
_REPORT_NAME = "report.html"  # = report.REPORT_NAME (not imported: report imports this module)

_INTRO = {
    "scale": "The posterior of this scale: every sampler's draws against the exact density "
    "(where the oracle applies), with the point estimates of empirical Bayes, joint MAP and "
    "cross-validation as vertical lines; an estimate of 0 (a boundary solution) is an arrow "
    "at the left edge.",
    "shrinkage": "Each level's raw mean of y (for one row per level, the study's own estimate "
    "with +-1.96 standard errors) against its posterior mean with a 95% interval: the "
    "samplers' posteriors average over the between-level scale, empirical Bayes plugs its "
    "estimate in (at an estimate of 0 every level is pulled to the pooled mean).",
    "nuts": "NUTS diagnostics: trace and rank plots of the scales and fixed effects, and the "
    "energy plot (BFMI).",
    "smc": "Sequential Monte Carlo estimate of the evidence p(y) with its standard error from the "
    "spread between chains, against the exact value.",
}


def write_family_comparison(out: str | Path, result: FamilyComparison, *, dataset: str = "") -> Path:
    """Write a family comparison's run directory atomically (module docstring).

    Parameters
    ----------
    out : path
        The run directory to create; it must not exist yet.
    result : FamilyComparison
    dataset : str
        Where the data came from, for the report's head.
    """
    summary = result.to_json()
    summary["dataset"] = dataset
    summary["target"] = result.spec.data.target_name
    trees = {name: s.draws for name, s in result.results.items() if s.draws is not None}
    return write_run_directory(
        out,
        summary=summary,
        datatrees=trees,
        extra_files={
            "data.csv": lambda path: _write_data(result.spec, path),
            _REPORT_NAME: lambda path: write_family_report(path.parent, out=path),
        },
    )


def _write_data(spec, path: Path) -> None:
    """data.csv of a family run: the numeric columns, the factor by its level names (not its
    integer codes), and the target."""
    data = spec.data
    names, columns = list(data.feature_names), [list(map(repr, col)) for col in data.X.T.tolist()]
    if spec.factor is not None:
        levels = [str(spec.factor.levels[c]) for c in spec.factor.codes]
        if spec.factor.name in names:
            columns[names.index(spec.factor.name)] = levels
        else:
            names.append(spec.factor.name)
            columns.append(levels)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow((*names, data.target_name))
        writer.writerows(zip(*columns, map(repr, data.y.tolist()), strict=True))


def write_family_report(run_dir: str | Path, *, out: str | Path | None = None) -> Path:
    """Render the report of the family run ``run_dir``; write it (default
    ``run_dir/report.html``) and its figures as PNG files in ``figures/`` beside it."""
    run_dir = Path(run_dir)
    target = Path(out) if out is not None else run_dir / _REPORT_NAME
    text, images = render_family_report(run_dir)
    folder = target.parent / FIGURES_DIR
    folder.mkdir(exist_ok=True)
    for name, png in images.items():
        (folder / name).write_bytes(png)
    target.write_text(text)
    return target


def render_family_report(run_dir: str | Path) -> tuple[str, dict[str, bytes]]:
    """The HTML text of the report of the family run ``run_dir``, and its figures by PNG file
    name (the same images the page embeds)."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    methods: dict[str, Any] = summary.get("methods", {})
    trees = {p.stem: load_datatree(p) for p in sorted(run_dir.glob("*.nc"))}
    parts = [_head(summary), warning_box(summary), _table(summary)]
    images: dict[str, bytes] = {}
    for part in _sections(summary, methods, trees):
        pngs: list[bytes] = []
        note = part.note
        if part.draw is not None:
            try:
                pngs = [p if isinstance(p, bytes) else figures.figure_png(p) for p in part.draw()]
            except Exception as exc:  # a figure that cannot be drawn is said, not hidden
                note = f"figure could not be drawn: {type(exc).__name__}: {exc}"
        for i, png in enumerate(pngs):
            images[f"{part.stem}_{i + 1}.png" if len(pngs) > 1 else f"{part.stem}.png"] = png
        parts.append(section(part.key, part.title, pngs, intro=_INTRO[part.intro], note=note))
    return page("".join(parts)), images


@dataclass(frozen=True)
class _Section:
    key: str  # the element id
    stem: str  # the PNG file name without .png
    title: str
    intro: str  # a key of _INTRO
    draw: Callable[[], list[Any]] | None  # Figures or PNG bytes
    note: str | None = None


def _sections(summary: dict[str, Any], methods: dict[str, Any], trees: dict[str, Any]):
    """The report's figure sections, in order (each drawn inside ``figures.offscreen``)."""
    out = []
    for key in summary.get("scales", []):
        name = "noise" if key == "noise" else key[len("sigma["):-1]
        title = "Posterior of the noise scale" if key == "noise" else f"Posterior of {key}"
        out.append(_Section(f"scale-{_slug(name)}", f"scale_{_slug(name)}", title, "scale",
                            lambda name=name: [scale_posterior(summary, name, trees=trees)]))
    title = "Shrinkage of the random effects"
    if summary.get("shrinkage"):
        out.append(_Section("shrinkage", "shrinkage", title, "shrinkage",
                            lambda: [shrinkage_plot(summary)]))
    else:
        out.append(_Section("shrinkage", "shrinkage", title, "shrinkage", None,
                            "the model has no random intercept (no categorical group)."))
    if "nuts" in trees:
        out.append(_Section("nuts", "nuts", "NUTS", "nuts",
                            lambda: family_nuts_images(trees["nuts"])))
    if methods.get("smc", {}).get("log_evidence") is not None:
        out.append(_Section("smc", "smc_evidence", "SMC evidence", "smc",
                            lambda: [figures.smc_evidence(methods)]))
    return out


def _slug(name: str) -> str:
    """A group name as a safe file and element name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "group"


def _head(summary: dict[str, Any]) -> str:
    dataset = summary.get("dataset")
    return (
        "<h1>hyperbayes: how should the scales be learned?</h1>"
        f"<p>Data: N = {summary['n']}"
        f"{' (' + html.escape(dataset) + ')' if dataset else ''}; "
        f"seed {summary.get('seed')}; empirical Bayes convention "
        f"{html.escape(str(summary.get('convention', 'reml')).upper())}. The model:</p>"
        f"<pre>{html.escape(summary.get('model', ''))}</pre>"
    )


def _table(summary: dict[str, Any]) -> str:
    return (
        "<h2>Comparison</h2>"
        + family_table_html(summary.get("table", []))
        + '<p class="small">Each group\'s scale with its 95% interval (posterior for the '
        "samplers, Laplace in the log scale for empirical Bayes; a scale at 0 is a boundary "
        "solution); fixed effects as estimate ± standard error (posterior sd for the samplers). "
        f"{html.escape(summary.get('evidence_note') or EVIDENCE_NOTE)} {html.escape(FAMILY_ORACLE_NOTE)}</p>"
    )
