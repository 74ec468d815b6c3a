"""Atomic writes: a result is either the old file or the complete new one, never a half-written file.

    atomic_write("runs/x/checkpoint.pth", lambda tmp: torch.save(state, tmp))

The writer gets a temporary path in the target's folder (``.<name>.tmp<pid>``, so the rename never crosses a
file system); when it returns, the temporary file is renamed over the target (``os.replace``, atomic on POSIX
and Windows). When it raises (a full disk, Ctrl-C, a bug), the temporary file is removed and the exception goes
on: no orphan is left next to the result, and the previous result is untouched.

A process killed outright (``kill -9``, power loss) cannot clean up; :func:`remove_stale_temporaries` removes
such leftovers of dead processes from a folder (``ino train`` does it in its run folder at start).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable

# our temporary names: ".<name>.tmp<pid>" (and "<name>.tmp<pid>", written by inolib before this module)
TEMP_NAME = re.compile(r"^(?P<name>.+)\.tmp(?P<pid>\d+)$")


def temp_path(path: str | Path) -> Path:
    """The temporary name this process writes ``path`` under: ``.<name>.tmp<pid>`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` to write the whole result to the temporary path ``tmp`` (see :func:`temp_path`), then
    rename it over ``path``. On any exception the temporary file is removed and the exception re-raised; ``path``
    keeps its previous content. The folder of ``path`` must exist. Returns ``path`` (as a Path)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        try:
            write(tmp)
        except RuntimeError as e:
            # torch.save reports a full disk or a failed write as RuntimeError ("PytorchStreamWriter failed
            # writing file ..."): an OSError naming the file, which the command line shows as one line
            if "writ" not in str(e).lower():
                raise
            raise OSError(f"{path}: cannot write it ({' '.join(str(e).split())[:200]}); is the disk full?") from e
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # the original error matters more than a failed clean-up
            pass
        raise
    return path


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, symlinks resolved: how writers check that a result does
    not go into an input folder (a dataset, its ground truth)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of a text file (UTF-8)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (a process of another user counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists but is not ours, or cannot tell: leave its files alone
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files of dead processes in ``folder`` itself (not its subfolders): files named like
    ours (``.<name>.tmp<pid>`` or ``<name>.tmp<pid>``) whose pid is not a running process. Warns naming them;
    returns the removed paths."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = TEMP_NAME.match(entry.name)
        if m is None or not entry.is_file(follow_symlinks=False) or _alive(int(m["pid"])):
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    if removed:
        warnings.warn(f"removed {len(removed)} temporary file(s) left in {folder} by a process that stopped while "
                      f"writing: {', '.join(p.name for p in sorted(removed))}", stacklevel=2)
    return sorted(removed)
