"""Where training videos come from, and the cached index of what each file holds.

Sources (``resolve_sources``):
    * a folder, searched recursively for .mp4 .webm .mkv .avi .mov files;
    * a text/CSV list whose rows start with a video path (the released ``charades_train_list.csv``; columns
      separated by commas, tabs or spaces); relative paths are taken relative to ``root`` (or the list's folder);
    * Charades' own ``Charades_v1_train.csv`` / ``Charades_v1_test.csv`` (a header with an ``id`` column), as
      downloaded: the file of id X is ``root/X.mp4``, ``root`` by default ``Charades_v1_480/`` next to the csv
      (``ino train --video-root`` sets it); ids without a file are left out with a warning naming them.

``VideoIndex.build`` probes every file once (frame count, fps, size, or the reason it is unusable),
in parallel threads with a progress bar, and caches the result as JSON next to the run. A second start
reads the cache; files whose size, modification time or status change time changed (rewritten, replaced by
another file, also one copied with its times kept), that were removed, or that are new are probed again.
"""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from ..atomic import atomic_write_text
from .video import VIDEO_EXTENSIONS, VideoInfo, probe_video

CACHE_VERSION = 2  # 2: entries hold ctime_ns


def find_videos(folder: str | Path) -> list[Path]:
    """Video files under ``folder`` (recursive, symlinked folders not followed), sorted.

    A subfolder that cannot be read (permission denied, removed while listing) is reported in one warning that
    names it; its videos are left out. Raises FileNotFoundError when ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"video folder not found: {folder}")
    unreadable: list[str] = []

    def note(e: OSError) -> None:
        unreadable.append(f"{e.filename} ({e.strerror or e})")

    found, odd = [], []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=note):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            if name in filenames and p.is_file():
                found.append(p)
            elif p.is_dir() and not p.is_symlink():
                odd.append(f"{p} (a folder)")
            elif not p.is_dir():
                odd.append(f"{p} ({'a broken or looping link' if p.is_symlink() else 'not a regular file'})")
    if odd:
        warnings.warn(f"{folder}: {len(odd)} entries named like videos are not video files and are left out: "
                      + "; ".join(odd[:10]) + (f" (and {len(odd) - 10} more)" if len(odd) > 10 else ""), stacklevel=2)
    if unreadable:
        warnings.warn(f"{folder}: cannot read {len(unreadable)} folder(s), their videos are left out: "
                      + "; ".join(unreadable[:10]) + (f" (and {len(unreadable) - 10} more)" if len(unreadable) > 10
                                                      else ""), stacklevel=2)
    return sorted(found)


# the shortest start of a list row that ends in a video extension, followed by a space, a tab or the end
_VIDEO_AT_START = re.compile(r"^(.*?\.(?:" + "|".join(e[1:] for e in VIDEO_EXTENSIONS) + r"))(?=\s|$)",
                             re.IGNORECASE)


def _video_field(field: str, base: Path) -> str | None:
    """The video path a list row's first field holds, or None when it names no video file.

    The whole field when it is an existing file; else the shortest start of it that ends in a video extension
    and is followed by a space or a tab, so a whitespace-separated row (``clip.mp4 label``, ``a.mp4 b.mp4``,
    ``clip.mp4<TAB>12.5``) gives its path, and a path with spaces (``my clip.mp4``) stays whole.
    """
    field = field.strip()
    p = Path(field)
    if (p if p.is_absolute() else base / p).is_file():
        return field
    m = _VIDEO_AT_START.match(field)
    return m.group(1) if m else None


def read_video_list(list_file: str | Path, root: str | Path | None = None) -> list[Path]:
    """Paths from a text/CSV list: the video path each row starts with (comma-, tab- or space-separated columns,
    see :func:`_video_field`); a first row without a video path is a header. A Charades ``id`` header maps ids to
    ``root/<id>.mp4``."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"video list not found: {list_file}")
    try:  # utf-8-sig: a list saved by Excel or Notepad starts with a byte-order mark; csv takes CRLF line ends
        with open(list_file, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r and r[0].strip() and not r[0].lstrip().startswith("#")]
    except UnicodeDecodeError:
        raise ValueError(f"{list_file}: not a UTF-8 text list of videos (a binary file? videos are read from the "
                         f"extensions {', '.join(VIDEO_EXTENSIONS)})") from None
    if not rows:
        raise ValueError(f"{list_file}: the video list is empty")
    header = [c.strip().lower() for c in rows[0]]
    if "id" in header and not Path(rows[0][0]).suffix.lower() in VIDEO_EXTENSIONS:  # Charades_v1_*.csv
        return _charades_videos(list_file, rows, header.index("id"), root)
    base = Path(root) if root is not None else list_file.parent
    paths = []
    for i, r in enumerate(rows):
        field = _video_field(r[0], base)
        if field is None:
            if i == 0:
                continue  # a header row (no video path in it)
            field = r[0].strip()  # kept: the index reports it as missing or unreadable, naming it
        p = Path(field)
        paths.append(p if p.is_absolute() else base / p)
    return paths


CHARADES_FOLDER = "Charades_v1_480"  # the folder Charades' videos unpack to (Charades_v1_480.zip)


def _charades_videos(list_file: Path, rows: list[list[str]], col: int, root: str | Path | None) -> list[Path]:
    """The videos of a Charades annotation file (``Charades_v1_train.csv``, ids in column ``col``): ``<id>.mp4``
    in ``root``, by default ``Charades_v1_480/`` next to the file, as the download unpacks.

    The ids whose file is missing are left out with one warning naming the first ten and how many there are (a
    partial download still trains); none found, or no such folder, is an error naming the folder."""
    ids = [r[col].strip() for r in rows[1:] if len(r) > col and r[col].strip()]
    if not ids:
        raise ValueError(f"{list_file}: a Charades annotation file (column 'id') without any id")
    folder = Path(root) if root is not None else list_file.parent / CHARADES_FOLDER
    if not folder.is_dir():
        where = "--video-root" if root is not None else f"the default: {CHARADES_FOLDER}/ next to the csv"
        raise FileNotFoundError(f"{list_file} is a Charades annotation file (column 'id'); its videos <id>.mp4 were "
                                f"looked for in {folder} ({where}), which is not a folder: pass the folder of the "
                                f"videos with --video-root")
    paths = [folder / f"{i}.mp4" for i in ids]
    missing = [i for i, p in zip(ids, paths) if not p.is_file()]

    def first(n: int = 10) -> str:
        return ", ".join(missing[:n]) + (", ..." if len(missing) > n else "")

    if len(missing) == len(ids):
        raise ValueError(f"{list_file}: none of its {len(ids)} videos is in {folder} (no <id>.mp4 for {first()}); "
                         f"pass the folder of the videos with --video-root")
    if missing:
        warnings.warn(f"{list_file}: {len(missing)} of its {len(ids)} videos are not in {folder} and are left out "
                      f"(ids {first()}); training on the other {len(ids) - len(missing)}", stacklevel=3)
        gone = set(missing)
        paths = [p for i, p in zip(ids, paths) if i not in gone]
    return paths


def resolve_sources(source: str | Path | list, root: str | Path | None = None) -> list[Path]:
    """Video paths from a folder, a video file, a list file, or a list of those (see the module docstring).

    ``root`` (``ino train --video-root``) is where the videos of a list file are: Charades' ``<id>.mp4`` files
    (default ``Charades_v1_480/`` next to the csv) or the folder relative paths start from (default the list's)."""
    if isinstance(source, (list, tuple)):
        return [p for s in source for p in resolve_sources(s, root)]
    source = Path(source)
    if not source.exists():
        hint = " (synthetic videos: synthetic:N, lower case)" if str(source).lower().startswith("synthetic:") else ""
        raise FileNotFoundError(f"--data {source}: no such folder, video or list file{hint}")
    if source.is_dir():
        return find_videos(source)
    if source.suffix.lower() in VIDEO_EXTENSIONS:
        return [source]
    return read_video_list(source, root)


def list_skipped(skipped: list[tuple[str, str]], limit: int = 20) -> str:
    """``"path: reason; path: reason (and N more)"``: the first ``limit`` skipped files of a warning."""
    more = f" (and {len(skipped) - limit} more)" if len(skipped) > limit else ""
    return "; ".join(f"{p}: {r}" for p, r in skipped[:limit]) + more


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
            warnings.warn(f"video index: skipping {len(bad)} of {len(entries)} files: {list_skipped(bad)}",
                          stacklevel=2)
        return index

    def save(self, cache_file: str | Path) -> None:
        """Write the index as JSON, atomically (a crash never leaves a half-written cache)."""
        cache_file = Path(cache_file)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_file, json.dumps({"version": CACHE_VERSION,
                                                  "entries": [asdict(e) for e in self.entries]}))


def _unchanged(info: VideoInfo, path: str | Path) -> bool:
    """Whether the file at ``path`` is still the one ``info`` describes: same size, modification time and status
    change time (a copy with its times kept, ``cp -p`` or ``rsync -t``, still gets a new ctime), or still missing."""
    try:
        st = os.stat(path)
    except OSError:
        return info.size_bytes == -1 and info.error is not None  # still missing
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns) == (info.size_bytes, info.mtime_ns, info.ctime_ns)


def describe_change(info: VideoInfo) -> str | None:
    """Why the file at ``info.path`` is no longer the one that was indexed, or None if it still is: for the
    message of a file that fails to decode while training (``removed since it was indexed``, ...)."""
    if info.size_bytes == -1:
        return None  # missing when indexed: not a change
    try:
        st = os.stat(info.path)
    except OSError:
        return "removed since it was indexed"
    if st.st_size != info.size_bytes:
        return f"changed since it was indexed ({info.size_bytes} -> {st.st_size} bytes)"
    if (st.st_mtime_ns, st.st_ctime_ns) != (info.mtime_ns, info.ctime_ns):
        return "changed since it was indexed (rewritten or replaced)"
    return None


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
