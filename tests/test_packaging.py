"""One import name of our own, and one public API.

Installed, the repository's models/ and inference/ are ``hyperbayes.models`` and
``hyperbayes.inference``: a user's own ``models.py`` or ``inference/`` in the working directory
(common in notebook folders) must not shadow them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import hyperbayes as hb

ROOT = Path(__file__).parents[1]


def test_every_subpackage_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {"hyperbayes"} | {
        "hyperbayes." + ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("models", "inference")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert listed == on_disk


def test_every_public_name_resolves():
    assert len(hb.__all__) == len(set(hb.__all__))
    missing = [name for name in hb.__all__ if getattr(hb, name, None) is None]
    assert not missing
    assert "fit" in hb.__all__ and "compare" in hb.__all__ and "RunOptions" in hb.__all__


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_importing_hyperbayes_is_light():
    res = _run(
        "import sys, hyperbayes; print(sorted(m for m in ('pymc', 'pytensor', 'matplotlib') "
        "if m in sys.modules))",
        ROOT,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_a_users_own_models_and_inference_do_not_shadow_ours(tmp_path):
    (tmp_path / "models.py").write_text("raise ImportError('the user decoy models.py was imported')\n")
    (tmp_path / "inference").mkdir()
    (tmp_path / "inference" / "__init__.py").write_text(
        "raise ImportError('the user decoy inference/ was imported')\n"
    )
    code = (
        "import json, hyperbayes as hb\n"
        "r = hb.compare(hb.load_diabetes(), methods=['exact', 'eb', 'cv'])\n"
        "s = hb.fit('eb', hb.load_diabetes())\n"
        "print(json.dumps({'status': [row.status for row in r.rows], 'eb': s.sigma,"
        " 'row': r.row('eb').sigma}))\n"
    )
    res = _run(code, tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert "failed" not in out["status"] and len(out["status"]) == 3
    assert out["eb"] == out["row"] and out["eb"] > 0


def test_fit_mirrors_the_cli(tmp_path):
    """``hb.fit`` with the CLI's options gives the CLI's JSON numbers."""
    data = hb.simulate(n=40, d=3, sigma=1.0, noise=0.5, seed=3).data
    path = tmp_path / "d.csv"
    data.to_csv(path)
    res = subprocess.run(
        [
            str(Path(sys.executable).parent / "hyperbayes"),
            "fit",
            "eb",
            "--data",
            str(path),
            "--target",
            data.target_name,
            "--hyperprior",
            "halfcauchy:2",
            "--json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    cli = json.loads(res.stdout)
    py = hb.fit("eb", path, target=data.target_name, hyperprior="halfcauchy:2").to_json()
    for key in ("sigma", "noise", "log_evidence", "weights", "intercept"):
        assert py[key] == cli[key], key


def test_the_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    result, eb, post = namespace["result"], namespace["eb"], namespace["post"]
    assert [r.method for r in result.rows] == list(namespace["hb"].METHODS)
    assert not [r.message for r in result.rows if r.status == "failed"]
    lo, hi = post.sigma_quantile([0.025, 0.975])
    assert lo < eb.sigma < hi
