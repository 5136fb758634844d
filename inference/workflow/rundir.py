"""Writing a run directory atomically: everything appears at once, or nothing does.

Files are written into a temporary sibling directory which is renamed to the target only
after the last file is complete, so an interrupted or failed run never leaves a half-written
directory behind (the temporary one is removed on failure).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hyperbayes.inference.methods.arviz_io import save_datatree
from hyperbayes.inference.methods.results import json_safe

__all__ = ["RunDirectoryExists", "write_run_directory"]


class RunDirectoryExists(FileExistsError):
    """The output directory exists already; it is never overwritten."""


def write_run_directory(
    out: str | Path,
    *,
    summary: Mapping[str, Any],
    datatrees: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, Callable[[Path], None]] | None = None,
) -> Path:
    """Create ``out`` with ``summary.json``, one ``NAME.nc`` per DataTree, and extra files.

    Parameters
    ----------
    out : path
        The run directory to create; it must not exist yet.
    summary : mapping
        Written as ``summary.json`` (strict JSON: non-finite numbers become null).
    datatrees : mapping of name -> DataTree, optional
        Each written as ``name.nc`` (netCDF).
    extra_files : mapping of file name -> writer(path), optional
        Callables that write one more file (e.g. ``report.html``) at the path they are given.

    Raises
    ------
    RunDirectoryExists
        If ``out`` exists; choose a new directory or remove the old one.
    """
    out = Path(out)
    if out.exists():
        raise RunDirectoryExists(
            f"output directory {out} exists already; choose a new --out or remove it."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its mode 0700 would survive the rename and hide the results from
    # everyone else; mkdir honours the user's umask like any other new directory.
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex}.partial"
    tmp.mkdir()
    try:
        (tmp / "summary.json").write_text(json.dumps(json_safe(summary), indent=2) + "\n")
        for name, tree in (datatrees or {}).items():
            if tree is not None:
                save_datatree(tree, tmp / f"{name}.nc")
        for name, writer in (extra_files or {}).items():
            writer(tmp / name)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
