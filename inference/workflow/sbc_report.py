"""An SBC run directory (summary.json, sbc.nc, report.html) and its figures.

``sbc.nc`` holds the ranks in a ``prior_sbc`` group with dims (chain = 1, draw = simulation),
the layout of the simuk package, so ``arviz_plots.plot_ecdf_pit(tree)`` reads it as it is;
beside it the truths (``truth``), the fractional ranks (``pit``), the per-simulation numbers
(``sbc_stats``) and the ECDF band the verdict used (``band``). The report is rendered from
those two files alone, so it shows exactly the numbers the verdict was computed from.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from arviz_stats.ecdf_utils import compute_ecdf
from scipy import stats

from hyperbayes.inference.methods.arviz_io import load_datatree
from hyperbayes.inference.workflow import figures
from hyperbayes.inference.workflow.rundir import write_run_directory
from hyperbayes.inference.workflow.sbc import SbcResult

__all__ = ["REPORT_NAME", "TREE_NAME", "render_sbc_report", "sbc_datatree", "write_sbc"]

REPORT_NAME = "report.html"
TREE_NAME = "sbc"
LABELS = {"sigma": "sigma", "noise": "delta (noise)", "w0": "w[0]", "w1": "w[1]"}


def sbc_datatree(result: SbcResult) -> xr.DataTree:
    """The result's arrays as a DataTree (see the module notes for the groups)."""
    dims = ("chain", "draw")

    def per_quantity(values: np.ndarray) -> xr.Dataset:
        return xr.Dataset({q: (dims, values[None, :, j]) for j, q in enumerate(result.quantities)})

    sim_stats = {k: (dims, v[None, :]) for k, v in result.info.items()}
    sim_stats["failed"] = (dims, np.array([[s != "ok" for s in result.status]]))
    groups = {
        "prior_sbc": per_quantity(result.ranks),
        "truth": per_quantity(result.truth),
        "pit": per_quantity(result.pit),
        "sbc_stats": xr.Dataset(sim_stats),
    }
    if result.uniformity is not None:
        band = result.uniformity.band
        groups["band"] = xr.Dataset(
            {"lower": ("z", band.lower), "upper": ("z", band.upper)},
            coords={"z": band.z},
            attrs={"prob": band.prob},
        )
    index = {"draw": np.arange(result.first, result.first + result.sims)}  # simulation index
    groups = {k: v.assign_coords(index) if "draw" in v.dims else v for k, v in groups.items()}
    tree = xr.DataTree.from_dict({f"/{name}": ds for name, ds in groups.items()})
    tree.attrs = {"method": result.method, "draws": result.setup.draws, "kind": "sbc"}
    return tree


def write_sbc(out: str | Path, result: SbcResult) -> Path:
    """Write the run directory ``out`` atomically: summary.json, sbc.nc and report.html."""
    return write_run_directory(
        out,
        summary=result.to_json(),
        datatrees={TREE_NAME: sbc_datatree(result)},
        extra_files={REPORT_NAME: lambda path: path.write_text(render_sbc_report(path.parent))},
    )


def render_sbc_report(run_dir: str | Path) -> str:
    """The HTML text of the SBC report of ``run_dir`` (from its summary.json and sbc.nc)."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    tree = load_datatree(run_dir / f"{TREE_NAME}.nc")
    parts = [_head(summary), _verdict(summary), _table(summary), _sampler_notes(tree, summary)]
    with figures.offscreen():
        images = []
        note = ""
        try:
            images.append(figures.figure_png(rank_figure(tree, summary)))
            if "bias_z" in tree["sbc_stats"]:
                images.append(figures.figure_png(bias_figure(tree)))
        except Exception as exc:  # a figure that cannot be drawn is said, not hidden
            note = f"figure could not be drawn: {type(exc).__name__}: {exc}"
    parts.append(_figures(images, note))
    parts.append(_failures(summary))
    return _page("".join(parts))


def rank_figure(tree: xr.DataTree, summary: dict[str, Any]):
    """Per quantity: the rank histogram (top) and the ECDF difference with its band (bottom)."""
    quantities = summary["quantities"]
    pit = tree["pit"].to_dataset()
    checks = {q["name"]: q for q in (summary.get("uniformity") or {}).get("quantities", [])}
    bins = (summary.get("uniformity") or {}).get("bins", 10)
    draws = summary["draws"]
    fig, axes = plt.subplots(2, len(quantities), figsize=(3.4 * len(quantities), 5.6), squeeze=False)
    for j, q in enumerate(quantities):
        u = np.asarray(pit[q]).ravel()
        u = u[np.isfinite(u)]
        _rank_histogram(axes[0, j], u, bins, draws)
        if "band" in tree.children:
            _ecdf_difference(axes[1, j], u, tree["band"].to_dataset())
        check = checks.get(q)
        title = LABELS.get(q, q)
        if check:
            verdict = "inside band" if check["inside_band"] else "OUTSIDE band"
            title += f"\nchi2 p = {check['chi2_p']:.3g}, {verdict}"
        axes[0, j].set_title(title, fontsize=9, color="black" if not check or check["passed"] else "C3")
    fig.suptitle(
        f"SBC of {summary['method']}: K = {summary['completed']} simulations, L = {draws} draws",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _rank_histogram(ax, u: np.ndarray, bins: int, draws: int) -> None:
    n = u.size
    ax.hist(u * (draws + 1), bins=bins, range=(0, draws + 1), color="C0", alpha=0.7)
    lo, hi = stats.binom.ppf([0.005, 0.995], n, 1 / bins)
    ax.axhspan(lo, hi, color="grey", alpha=0.2, lw=0, zorder=0, label="99% per bin")
    ax.axhline(n / bins, color="grey", lw=1)
    ax.set_xlabel(f"rank (0..{draws}, ties jittered)", fontsize=8)
    ax.set_xlim(0, draws + 1)


def _ecdf_difference(ax, u: np.ndarray, band: xr.Dataset) -> None:
    z = np.asarray(band["z"])
    if u.size != z.size - 1:  # the band belongs to the completed simulations
        return
    ecdf = np.concatenate(([0.0], compute_ecdf(u, z[1:-1]), [1.0]))
    ax.fill_between(
        z, np.asarray(band["lower"]) - z, np.asarray(band["upper"]) - z, step="post",
        color="grey", alpha=0.25, lw=0, label=f"{band.attrs.get('prob', 0):.4g} simultaneous band",
    )
    ax.step(z, ecdf - z, where="post", color="C0", lw=1.2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("fractional rank u", fontsize=8)
    ax.set_ylabel("ECDF(u) - u", fontsize=8)
    ax.legend(fontsize=7, loc="lower center")


def bias_figure(tree: xr.DataTree):
    """Each simulation's bias of log sigma against the exact posterior, over the true sigma
    (divergent NUTS runs marked): where a miscalibration comes from."""
    s = tree["sbc_stats"].to_dataset()
    sigma = np.asarray(tree["truth"]["sigma"]).ravel()
    bias = np.asarray(s["bias_z"]).ravel()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.semilogx(sigma, bias, "o", ms=3, alpha=0.6, color="C0", label="simulation")
    if "divergences" in s:
        div = np.asarray(s["divergences"]).ravel() > 0
        ax.semilogx(sigma[div], bias[div], "x", ms=5, color="C3", label="with divergences")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("true sigma (drawn from the prior)")
    ax.set_ylabel("(mean - exact mean) / exact sd")
    ax.set_title("posterior mean of log sigma against the exact oracle", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _head(summary: dict[str, Any]) -> str:
    return (
        f"<h1>Simulation-based calibration: {html.escape(summary['method'])}</h1>"
        f"<p>{summary['sims']} simulations ({summary['completed']} completed), L = "
        f"{summary['draws']} draws kept per simulation; design N = {summary['n']}, D = "
        f"{summary['d']}; sigma ~ <code>{html.escape(summary['hyperprior'])}</code>, delta ~ "
        f"<code>{html.escape(summary['noise_prior'])}</code>; seed {summary['seed']}; "
        f"{summary['n_workers']} Dask worker(s), {summary['wall_time']:.1f} s.</p>"
    )


def _verdict(summary: dict[str, Any]) -> str:
    uni = summary.get("uniformity")
    if uni is None:
        return '<div class="warn">Too few simulations completed to test uniformity.</div>'
    failing = [q["name"] for q in uni["quantities"] if not q["passed"]]
    rule = (
        f"each of the {2 * len(uni['quantities'])} tests at level {uni['level_per_test']:.4g} "
        f"(family-wise {uni['alpha']:g}, Bonferroni)"
    )
    if uni["passed"]:
        text = f'<div class="ok">Calibrated: no test rejects uniform ranks ({rule}).</div>'
    else:
        text = (
            f'<div class="warn">Not calibrated: the ranks of {html.escape(", ".join(failing))} '
            f"are not uniform ({rule}).</div>"
        )
    if summary["failed"]:
        text += (
            f'<div class="warn">{len(summary["failed"])} simulation(s) failed and are left out; '
            "failures that depend on the data select the simulations, which can hide or cause "
            "a miscalibration.</div>"
        )
    return text


def _table(summary: dict[str, Any]) -> str:
    uni = summary.get("uniformity") or {"quantities": []}
    rows = "".join(
        f"<tr><td>{html.escape(LABELS.get(q['name'], q['name']))}</td><td>{q['n']}</td>"
        f"<td>{q['chi2']:.2f} ({q['dof']} dof)</td><td>{q['chi2_p']:.3g}</td>"
        f"<td>{'inside' if q['inside_band'] else 'outside'}</td><td>{q['max_ecdf_diff']:.3f}</td>"
        f"<td>{'pass' if q['passed'] else 'FAIL'}</td></tr>"
        for q in uni["quantities"]
    )
    info = "".join(
        f"<li>{html.escape(k)}: mean {_fmt(v.get('mean'))}, max {_fmt(v.get('max'))}"
        + (f", standard error {_fmt(v['se'])}" if "se" in v else "")
        + "</li>"
        for k, v in summary.get("info", {}).items()
    )
    return (
        "<h2>Uniformity of the ranks</h2><table><tr><th>quantity</th><th>K</th><th>chi-square"
        "</th><th>p</th><th>ECDF band</th><th>max |ECDF - u|</th><th>verdict</th></tr>"
        f"{rows}</table><h2>Per simulation</h2><ul>{info}</ul>"
    )


def _sampler_notes(tree: xr.DataTree, summary: dict[str, Any]) -> str:
    """How many simulations had too few effective draws for L, or divergences: the two ways a
    sampler's ranks go wrong besides a bias."""
    s = tree["sbc_stats"].to_dataset()
    notes = []
    if "ess_sigma" in s:
        low = int((np.asarray(s["ess_sigma"]) < summary["draws"]).sum())
        notes.append(
            f"{low} of {summary['completed']} simulations had a bulk ESS of sigma below L = "
            f"{summary['draws']}: their kept draws are autocorrelated, which alone spreads the "
            "ranks towards 0 and L."
        )
    if "divergences" in s:
        div = np.asarray(s["divergences"])
        notes.append(f"{int((div > 0).sum())} simulations had divergent transitions ({int(np.nansum(div))} in all).")
    return "".join(f"<p>{html.escape(n)}</p>" for n in notes)


def _figures(images: list[bytes], note: str) -> str:
    body = f'<p class="note">{html.escape(note)}</p>' if note else ""
    for png in images:
        b64 = base64.b64encode(png).decode("ascii")
        body += f'<img alt="SBC figure" src="data:image/png;base64,{b64}"/>'
    return f'<section id="figures"><h2>Ranks</h2>{body}</section>'


def _failures(summary: dict[str, Any]) -> str:
    items = [f"simulation {f['index']}: {html.escape(f['message'])}" for f in summary["failed"][:50]]
    warned = [f"{html.escape(m)} ({n} simulations)" for m, n in summary.get("warnings", {}).items()]
    out = ""
    if items:
        out += "<h2>Failed simulations</h2><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"
    if warned:
        out += "<h2>Warnings raised</h2><ul>" + "".join(f"<li>{w}</li>" for w in warned) + "</ul>"
    return out


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _page(body: str) -> str:
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child{text-align:left}.warn{background:#fff4d6;border:2px solid #e0a000;"
        "padding:0.5em 1em;margin:0.5em 0}.ok{background:#e6f6e6;padding:0.5em 1em}"
        ".note{color:#a00}img{max-width:100%;display:block;margin:0.5em 0}"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>hyperbayes SBC</title>'
        f"<style>{style}</style></head><body>{body}</body></html>\n"
    )
