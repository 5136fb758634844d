"""The layers of ARCHITECTURE.md are a checked contract (import-linter, configured in
pyproject.toml): imports point down only, and the mathematics imports no PyMC.

The contract is run on the package as it is (it must hold), and on copies of the package with
one deliberately wrong import each (it must fail, naming the import): a contract that cannot
fail would prove nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_package_keeps_its_layers():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("KEPT") == 2 and "BROKEN" not in res.stdout


#: (module that gains the import, the import, what the contract must name)
VIOLATIONS = [
    ("models/data.py", "import hyperbayes.inference.methods.exact", "hyperbayes.models"),
    (
        "inference/mathematics/ridge.py",
        "import hyperbayes.inference.workflow.report",
        "hyperbayes.inference.mathematics",
    ),
    (
        "inference/methods/exact.py",
        "import hyperbayes.inference.workflow.compare",
        "hyperbayes.inference.methods",
    ),
    ("inference/mathematics/ridge.py", "import pymc", "pymc"),
]


@pytest.mark.parametrize("module, statement, named", VIOLATIONS, ids=[v[1] for v in VIOLATIONS])
def test_a_wrong_import_breaks_the_contract(tmp_path, module, statement, named):
    pkg = tmp_path / "src" / "hyperbayes"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("models", "inference"):
        shutil.copytree(ROOT / part, pkg / part, ignore=ignore)
    shutil.copy(ROOT / "__init__.py", pkg / "__init__.py")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = pkg / module
    target.write_text(target.read_text() + f"\n{statement}  # deliberately wrong\n")

    res = _lint(tmp_path, pythonpath=tmp_path / "src")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "BROKEN" in res.stdout and named in res.stdout
    assert "deliberately" not in res.stderr  # the copy was linted, not skipped
