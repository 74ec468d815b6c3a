"""Where training videos come from, and the cached index of what each file holds.

Sources (``resolve_sources``):
    * a folder, searched recursively for .mp4 .webm .mkv .avi .mov files;
    * a text/CSV list whose first column is a video path (the released ``charades_train_list.csv``);
      relative paths are taken relative to ``root`` (or the list's folder);
    * Charades' own ``Charades_v1_train.csv`` (a header with an ``id`` column) plus its video folder
      (``root``, e.g. ``Charades_v1_480/``): the file of id X is ``root/X.mp4``.

``VideoIndex.build`` probes every file once (frame count, fps, size, or the reason it is unusable),
in parallel threads with a progress bar, and caches the result as JSON next to the run. A second start
reads the cache; files whose size or modification time changed (or that are new) are probed again.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from ..atomic import atomic_write_text
from .video import VIDEO_EXTENSIONS, VideoInfo, probe_video

CACHE_VERSION = 1


def find_videos(folder: str | Path) -> list[Path]:
    """Video files under ``folder`` (recursive), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"video folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def read_video_list(list_file: str | Path, root: str | Path | None = None) -> list[Path]:
    """Paths from a text/CSV list: first column of each row; a Charades ``id`` header maps ids to ``root/<id>.mp4``."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"video list not found: {list_file}")
    with open(list_file, newline="") as f:
        rows = [r for r in csv.reader(f) if r and r[0].strip() and not r[0].lstrip().startswith("#")]
    if not rows:
        raise ValueError(f"{list_file}: the video list is empty")
    header = [c.strip().lower() for c in rows[0]]
    if "id" in header and not Path(rows[0][0]).suffix.lower() in VIDEO_EXTENSIONS:  # Charades_v1_*.csv
        if root is None:
            raise ValueError(f"{list_file} is a Charades annotation file (column 'id'): pass the video folder as root")
        col = header.index("id")
        return [Path(root) / f"{r[col].strip()}.mp4" for r in rows[1:] if len(r) > col and r[col].strip()]
    base = Path(root) if root is not None else list_file.parent
    paths = []
    for i, r in enumerate(rows):
        p = Path(r[0].strip())
        if i == 0 and p.suffix.lower() not in VIDEO_EXTENSIONS:
            continue  # a header row
        paths.append(p if p.is_absolute() else base / p)
    return paths


def resolve_sources(source: str | Path | list, root: str | Path | None = None) -> list[Path]:
    """Video paths from a folder, a list file, or a list of those (see the module docstring)."""
    if isinstance(source, (list, tuple)):
        return [p for s in source for p in resolve_sources(s, root)]
    source = Path(source)
    if source.is_dir():
        return find_videos(source)
    if source.suffix.lower() in VIDEO_EXTENSIONS:
        return [source]
    return read_video_list(source, root)


class VideoIndex:
    """Probed metadata of a set of videos: ``entries`` (one :class:`VideoInfo` per path, in order)."""

    def __init__(self, entries: list[VideoInfo]):
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def ok(self) -> list[VideoInfo]:
        """Files that opened and decoded their first frame."""
        return [e for e in self.entries if e.error is None]

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every unusable file."""
        return [(e.path, e.error) for e in self.entries if e.error is not None]

    @classmethod
    def build(cls, paths: list[str | Path], cache_file: str | Path | None = None, workers: int = 8,
              progress: bool = True) -> "VideoIndex":
        """Probe ``paths`` (reusing ``cache_file`` where a file's size and mtime are unchanged) and save the cache.

        Unusable files are kept with their reason and reported in one warning at the end.
        """
        cached = _read_cache(cache_file) if cache_file else {}
        entries: list[VideoInfo | None] = [None] * len(paths)
        todo = []
        for i, p in enumerate(paths):
            old = cached.get(str(p))
            if old is not None and _unchanged(old, p):
                entries[i] = old
            else:
                todo.append(i)
        if todo:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # decord releases the GIL
                results = pool.map(lambda i: probe_video(paths[i]), todo)
                for i, info in tqdm(zip(todo, results), total=len(todo), desc="indexing videos",
                                    unit="video", disable=not progress):
                    entries[i] = info
        index = cls(entries)
        if cache_file and (todo or len(cached) != len(paths)):
            index.save(cache_file)
        bad = index.skipped
        if bad:
            shown = "; ".join(f"{p}: {r}" for p, r in bad[:20])
            more = f" (and {len(bad) - 20} more)" if len(bad) > 20 else ""
            warnings.warn(f"video index: skipping {len(bad)} of {len(entries)} files: {shown}{more}", stacklevel=2)
        return index

    def save(self, cache_file: str | Path) -> None:
        """Write the index as JSON, atomically (a crash never leaves a half-written cache)."""
        cache_file = Path(cache_file)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_file, json.dumps({"version": CACHE_VERSION,
                                                  "entries": [asdict(e) for e in self.entries]}))


def _unchanged(info: VideoInfo, path: str | Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return info.size_bytes == -1 and info.error is not None  # still missing
    return st.st_size == info.size_bytes and st.st_mtime_ns == info.mtime_ns


def _read_cache(cache_file: str | Path) -> dict[str, VideoInfo]:
    cache_file = Path(cache_file)
    if not cache_file.is_file():
        return {}
    try:
        data = json.loads(cache_file.read_text())
        if data.get("version") != CACHE_VERSION:
            return {}
        return {e["path"]: VideoInfo(**e) for e in data["entries"]}
    except (ValueError, TypeError, KeyError) as e:
        warnings.warn(f"ignoring unreadable video index cache {cache_file}: {e}", stacklevel=3)
        return {}
