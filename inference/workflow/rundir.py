"""Writing a run directory atomically: everything appears at once, or nothing does.

Files are written into a temporary sibling directory which is renamed to the target only
after the last file is complete, so an interrupted or failed run never leaves a half-written
directory behind (the temporary one, and any parent directory made for it, is removed on
failure; a second interrupt cannot stop that cleanup half way).

:func:`check_destination` says before any work whether the directory can be created, so a
bad ``--out`` fails in a second, not after the sampling. Only SIGKILL (or a power cut) can stop
a writer before it cleans up: its temporary sibling, ``.NAME.PID@HOST.TOKEN.partial``, names
the process that made it, and the next write to ``NAME`` removes it once that process is gone
(:func:`remove_stale_partials`). One whose process still runs, or that another host made, is
never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hyperbayes.inference.methods.arviz_io import save_datatree
from hyperbayes.inference.methods.results import json_safe

__all__ = [
    "RunDirectoryExists",
    "UnusableDestination",
    "check_destination",
    "remove_stale_partials",
    "write_run_directory",
]

_SUFFIX = ".partial"
#: The part of a temporary sibling's name between ``.NAME.`` and ``.partial``.
_OWNER = re.compile(r"(?P<pid>[0-9]+)@(?P<host>[A-Za-z0-9_-]+)\.[0-9a-f]{32}")
#: This host, as it appears in temporary names (a shared file system may hold other hosts').
_HOST = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64] or "host"


class RunDirectoryExists(FileExistsError):
    """The output directory exists already; it is never overwritten."""


class UnusableDestination(ValueError):
    """The output directory cannot be created there (a parent is a file, or not writable)."""


def check_destination(out: str | Path) -> Path:
    """Check that the run directory ``out`` can be created, before any work is done.

    Looks at the nearest existing parent of ``out`` and creates (and at once removes) a
    temporary directory in it, named as :func:`write_run_directory` names its own: the honest
    test for a read-only file system, an ACL, or a system directory such as ``/proc``, where
    permission bits say nothing (for root above all). Nothing is left behind.

    Parameters
    ----------
    out : path
        The run directory to be created.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    RunDirectoryExists
        If ``out`` exists (or is a symbolic link).
    UnusableDestination
        If a parent of ``out`` is a file, does not exist at all, or cannot be written.
    """
    out = Path(out)
    if os.path.lexists(out):
        raise RunDirectoryExists(
            f"output directory {out} exists already; choose a new --out or remove it."
        )
    existing = out.parent
    while not os.path.exists(existing) and existing != existing.parent:
        existing = existing.parent
    if not os.path.isdir(existing):
        what = "is a file, not a directory" if os.path.exists(existing) else "does not exist"
        raise UnusableDestination(
            f"cannot create output directory {out}: {existing} {what}; choose another --out."
        )
    probe = existing / _temporary_name(out.name)
    try:
        probe.mkdir()
    except OSError as exc:
        raise UnusableDestination(
            f"cannot create output directory {out}: {existing} is not writable "
            f"({exc.strerror or exc}); choose a --out in a directory you can write to."
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()
    return out


def remove_stale_partials(out: str | Path) -> list[Path]:
    """Remove temporary siblings of ``out`` whose writer was killed before it cleaned up.

    A temporary sibling ``.NAME.PID@HOST.TOKEN.partial`` is stale when HOST is this host and
    no process PID runs. Others (a live writer's, another host's, any other name) are left
    alone. Returns the directories removed.
    """
    out = Path(out)
    prefix = f".{out.name}."
    try:
        siblings = [p for p in out.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:  # no parent yet: nothing stale
        return []
    removed = []
    for path in siblings:
        owner = _OWNER.fullmatch(path.name[len(prefix) : -len(_SUFFIX)])
        if not path.name.endswith(_SUFFIX) or owner is None or owner["host"] != _HOST:
            continue
        if not _process_exists(int(owner["pid"])):
            _remove_tree(path)
            removed.append(path)
    return removed


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
    UnusableDestination
        If ``out`` cannot be created (see :func:`check_destination`).
    """
    out = Path(out)
    check_destination(out)
    remove_stale_partials(out)
    missing = _missing_parents(out.parent)
    tmp = out.parent / _temporary_name(out.name)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # Not tempfile.mkdtemp: its mode 0700 would survive the rename and hide the results
        # from everyone else; mkdir honours the user's umask like any other new directory.
        tmp.mkdir()
        (tmp / "summary.json").write_text(json.dumps(json_safe(summary), indent=2) + "\n")
        for name, tree in (datatrees or {}).items():
            if tree is not None:
                save_datatree(tree, tmp / f"{name}.nc")
        for name, writer in (extra_files or {}).items():
            writer(tmp / name)
        os.rename(tmp, out)
    except BaseException:
        _remove_tree(tmp, then_empty=missing)
        raise
    return out


def _temporary_name(name: str) -> str:
    return f".{name}.{os.getpid()}@{_HOST}.{uuid.uuid4().hex}{_SUFFIX}"


def _missing_parents(parent: Path) -> list[Path]:
    """The directories ``parent.mkdir(parents=True)`` would create, deepest first."""
    missing = []
    while not os.path.exists(parent) and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    return missing


def _process_exists(pid: int) -> bool:
    """Whether process ``pid`` runs (or may: when in doubt, say yes, so nothing is removed)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: it runs, as another user
        return True
    return True


def _remove_tree(path: Path, *, then_empty: Sequence[Path] = ()) -> None:
    """Remove ``path``, then each of ``then_empty`` (in order) that is empty now.

    A second interrupt (Ctrl-C twice, SIGTERM then SIGINT) cannot stop this half way: it is
    noted, the removal goes on, and the interrupt is raised once everything is gone.
    """
    pending: KeyboardInterrupt | None = None
    while True:
        try:
            shutil.rmtree(path, ignore_errors=True)
            for parent in then_empty:
                with contextlib.suppress(OSError):  # not empty (or gone): it stays
                    parent.rmdir()
            break
        except KeyboardInterrupt as exc:
            pending = exc
    if pending is not None:
        raise pending
