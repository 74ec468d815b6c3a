"""A run's ``log.jsonl``: one JSON record per line (steps and events such as ``start``, ``resume``, ``nan``),
read back for the explorers and cut back to the step a resumed run starts from."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..atomic import atomic_write_text


def read_log(path: str | Path) -> list[dict]:
    """The records of a run's ``log.jsonl`` (a run folder or the file).

    A last line that is not JSON (cut short when the process was killed or the disk filled up) is skipped with a
    warning naming it; a broken line before the last raises ``ValueError`` naming the file and the line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "log.jsonl"
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), start=1) if line.strip()]
    records = []
    for i, (n, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                warnings.warn(f"{path}:{n}: skipping the last line, which is not complete JSON (a write cut short "
                              f"when the run stopped: {e})", stacklevel=2)
                break
            raise ValueError(f"{path}:{n}: not a JSON line ({e})") from None
    return records


def truncate_log(path: str | Path, step: int) -> int:
    """Cut a run's ``log.jsonl`` back to ``step``, the step a run starts (or resumes) from, so that it holds each
    step once: the records of later steps (logged after the last checkpoint, before the process was killed; a
    resumed run logs those steps again) and a torn last line are removed. Event records (``start``, ``resume``,
    ``nan``, ``interrupted``) stay, as does a broken line before the last (:func:`read_log` names it). Rewritten
    atomically, only when something is removed; returns the number of lines removed."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                kept.append(line)
            continue
        later = isinstance(rec, dict) and "event" not in rec and isinstance(rec.get("step"), (int, float)) \
            and rec["step"] > step
        if not later:
            kept.append(line)
    removed = len(lines) - len(kept)
    if removed:
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return removed
