"""Every notebook under notebooks/ runs top to bottom (small sizes: HYPERBAYES_SMALL=1) and shows
every figure it draws.

Notebooks are stored without outputs; this test executes them in memory and never writes
them back. The kernel is this interpreter (a kernel spec made in a temporary JUPYTER_PATH), so
the notebooks see exactly the environment the tests run in. MPLBACKEND is removed from the
kernel's environment, so the kernel uses its own inline backend as Jupyter does: a figure that
a notebook user would not see (say, because an import switched the backend to Agg) is a
plotting cell without an image, and fails the test.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
TIMEOUT_PER_CELL = 600

#: Module aliases whose every function call draws: pyplot, arviz_plots, the report's figures.
PLOTTING_NAMESPACES = ("plt", "azp", "hb.figures")
#: Method names that draw whatever object they are called on (``ax.plot``, ``fig.subplots``).
PLOTTING_METHODS = frozenset({"plot", "subplots"})


def _dotted(node: ast.expr) -> str | None:
    """``hb.figures.cv_curve`` for the call target ``hb.figures.cv_curve``; None if not a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def plots(source: str) -> bool:
    """Whether a code cell draws a figure, by what it calls (comments and strings are not code).

    The rule: the cell's code (anywhere in it, function bodies included) calls

    * a function of pyplot, arviz_plots or the report's figures, named through the aliases
      the notebooks use: ``plt.NAME(...)``, ``azp.NAME(...)``, ``hb.figures.NAME(...)``
      (except ``hb.figures.*_png``, which return PNG bytes and close their figure); or
    * a method named ``plot`` or ``subplots`` on anything (``ax.plot``, ``df.plot``).

    Anything else (``ax.hist`` on axes made in an earlier cell, an aliased import) is not
    recognised; make plotting cells create their figure, as every notebook here does.
    IPython magics and shell lines (``%...``, ``!...``) are skipped.
    """
    code = "\n".join(
        line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
    )
    for node in ast.walk(ast.parse(code)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name is None:
            if isinstance(node.func, ast.Attribute) and node.func.attr in PLOTTING_METHODS:
                return True  # e.g. fig.add_subfigure(...).subplots(...)
            continue
        namespace, _, function = name.rpartition(".")
        if namespace in PLOTTING_NAMESPACES and not function.endswith("_png"):
            return True
        if namespace and function in PLOTTING_METHODS:
            return True
    return False


def _has_image(cell) -> bool:
    return any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "hyperbayes-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "hyperbayes tests",
                "language": "python",
            }
        )
    )
    return {"JUPYTER_PATH": str(root), "HYPERBAYES_SMALL": "1"}


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("fig, ax = plt.subplots()\nax.hist(x)", True),
        ("ax.plot(x, y)", True),
        ("hb.figures.sigma_posteriors(trees, methods);", True),
        ("azp.plot_rank(tree)", True),
        ("plt.show()", True),
        ("png = hb.figures.figure_png(fig)", False),
        ("import matplotlib.pyplot as plt\nimport arviz_plots as azp", False),
        ("# plt.show()\nprint('ax.plot(x)')", False),
        ("result = hb.compare(data)\nresult", False),
        ("%matplotlib inline\nplt.plot([1, 2])", True),
    ],
)
def test_the_plotting_rule(source, expected):
    assert plots(source) is expected


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_env, monkeypatch):
    for key, value in kernel_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel picks its inline backend
    nb = nbformat.read(path, as_version=4)
    assert all(
        not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"
    ), f"{path.name} is stored with outputs; clear them (notebooks are stored without outputs)"
    client = NotebookClient(
        nb,
        timeout=TIMEOUT_PER_CELL,
        kernel_name="hyperbayes-test",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    errors = [
        out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors
    blank = [
        i for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and plots(cell.source) and not _has_image(cell)
    ]
    assert not blank, (
        f"{path.name}: the plotting cell(s) at index {blank} (0-based, among all cells) show no "
        "image/png output; a figure the reader never sees (was the backend switched to Agg?)"
    )
