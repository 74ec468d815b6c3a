"""``make book``: every lesson executed (laptop mode by default) and rendered to static HTML, with a contents page.

    python -m inolib.course.book --out build/book            # laptop mode, all notebooks/NN_*.ipynb
    python -m inolib.course.book --mode smoke --lessons 00_overview

Each lesson runs in a fresh kernel with nbclient (the runner papermill and ``nbconvert --execute`` use) from the
notebooks folder, and is written with nbconvert's HTML exporter, images embedded, so ``build/book`` can be copied
anywhere and read without Python. Widget state is kept, so explorers show their last figure. A lesson that fails
is still rendered, with its error, and named on the contents page and in the return value.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
import time
from pathlib import Path

from ..config import COURSE_MODES

LESSON = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")


def list_lessons(folder: str | Path) -> list[Path]:
    """The lessons of ``folder``: files named ``NN_name.ipynb``, in order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"notebooks folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if LESSON.match(p.name))


def lesson_title(path: str | Path) -> str:
    """The first Markdown heading of a notebook (its file name if it has none)."""
    cells = json.loads(Path(path).read_text())["cells"]
    for c in cells:
        if c["cell_type"] == "markdown":
            for line in "".join(c["source"]).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return Path(path).stem


def _write(path: Path, text: str) -> None:
    from ..atomic import atomic_write_text

    atomic_write_text(path, text)


def build_book(notebooks: str | Path = "notebooks", out: str | Path = "build/book", mode: str = "laptop",
               lessons: list[str] | None = None, timeout: int = 900, echo=print) -> dict:
    """Execute and render the lessons; write ``out/<lesson>.html`` and ``out/index.html``.

    Args:
        notebooks: the folder of ``NN_name.ipynb`` lessons.
        out: the output folder (created; only its HTML files are replaced).
        mode: the course mode the lessons run in (``smoke``, ``laptop``, ``paper``).
        lessons: only these lesson names (stems, e.g. ``["00_overview"]``); default all.
        timeout: seconds one cell may run.
    Returns ``{"index": Path, "pages": {stem: Path}, "failed": {stem: error line}, "seconds": {stem: float}}``.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from nbconvert import HTMLExporter

    if mode not in COURSE_MODES:
        raise ValueError(f"mode must be one of {COURSE_MODES}, got {mode!r}")
    paths = list_lessons(notebooks)
    if lessons is not None:
        unknown = set(lessons) - {p.stem for p in paths}
        if unknown:
            raise ValueError(f"lessons {sorted(unknown)} are not in {notebooks} (have {[p.stem for p in paths]})")
        paths = [p for p in paths if p.stem in lessons]
    if not paths:
        raise ValueError(f"no lessons (NN_name.ipynb) in {notebooks}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    pages, failed, seconds = {}, {}, {}
    # the kernels get the mode in their environment; this process's own environment is left alone
    kernel_env = dict(os.environ, INOLIB_MODE=mode, INOLIB_SMOKE="1" if mode == "smoke" else "0")
    for path in paths:
        echo(f"{path.stem}: running in {mode} mode ...")
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        try:
            NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                           resources={"metadata": {"path": str(path.parent.resolve())}}).execute(env=kernel_env)
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:  # the other lessons still render
            failed[path.stem] = (str(e).strip().splitlines()[-1][:300] if str(e).strip() else "") or type(e).__name__
            echo(f"{path.stem}: FAILED: {failed[path.stem]}")
        seconds[path.stem] = time.perf_counter() - t0
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": lesson_title(path)}})
        pages[path.stem] = out / f"{path.stem}.html"
        _write(pages[path.stem], body)
        echo(f"{path.stem}: {seconds[path.stem]:.0f} s -> {pages[path.stem]}")
    rows = "\n".join(
        f'<li><a href="{html.escape(p.name)}">{html.escape(lesson_title(Path(notebooks) / (stem + ".ipynb")))}</a>'
        f' <small>({seconds[stem]:.0f} s{", FAILED: " + html.escape(failed[stem]) if stem in failed else ""})'
        f"</small></li>" for stem, p in pages.items())
    index = out / "index.html"
    _write(index, "<!doctype html><html><head><meta charset='utf-8'><title>The INO course</title>"
                  "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto;line-height:1.5}</style></head>"
                  f"<body><h1>The INO course</h1><p>Every lesson executed in <b>{html.escape(mode)}</b> mode on "
                  f"{time.strftime('%Y-%m-%d')}; open one to read it with its figures.</p><ol start='0'>{rows}</ol>"
                  "</body></html>")
    return {"index": index, "pages": pages, "failed": failed, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inolib.course.book", description=__doc__.splitlines()[0])
    ap.add_argument("--notebooks", default="notebooks")
    ap.add_argument("--out", default="build/book")
    ap.add_argument("--mode", default="laptop", choices=COURSE_MODES)
    ap.add_argument("--lessons", nargs="+", default=None, help="only these lessons (e.g. 00_overview)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds one cell may run")
    args = ap.parse_args(argv)
    try:
        r = build_book(args.notebooks, args.out, args.mode, args.lessons, args.timeout)
    except (OSError, ValueError) as e:
        print(f"book: error: {e}", file=sys.stderr)
        return 2
    print(f"contents: {r['index']}" + (f"; {len(r['failed'])} lesson(s) failed: {sorted(r['failed'])}"
                                       if r["failed"] else ""))
    return 1 if r["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
