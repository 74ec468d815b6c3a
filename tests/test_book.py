"""make book: lessons executed and rendered to static HTML with a contents page."""

import json

import nbformat
import pytest

from inolib.course.book import build_book, lesson_title, list_lessons


def _lesson(path, title, code):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {title}\n\ntext"),
                                         nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_book_runs_each_lesson_in_its_mode_and_links_them(tmp_path):
    src = tmp_path / "notebooks"
    src.mkdir()
    _lesson(src / "00_first.ipynb", "00 · First", "import os\nprint('mode', os.environ['INOLIB_MODE'])")
    _lesson(src / "01_broken.ipynb", "01 · Broken", "raise RuntimeError('boom')")
    (src / "README.md").write_text("not a lesson")
    (src / "scratch.ipynb").write_text(json.dumps({"cells": []}))  # not NN_name: not a lesson
    assert [p.name for p in list_lessons(src)] == ["00_first.ipynb", "01_broken.ipynb"]
    assert lesson_title(src / "00_first.ipynb") == "00 · First"
    r = build_book(src, tmp_path / "book", mode="smoke", timeout=60, echo=lambda *_: None)
    assert set(r["pages"]) == {"00_first", "01_broken"} and set(r["failed"]) == {"01_broken"}
    first = (tmp_path / "book" / "00_first.html").read_text()
    assert "mode smoke" in first  # executed, in the mode asked for
    assert "boom" in (tmp_path / "book" / "01_broken.html").read_text()  # rendered with its error
    index = r["index"].read_text()
    assert 'href="00_first.html"' in index and "00 · First" in index and "FAILED" in index
    assert not list((tmp_path / "book").glob("*.tmp*")) and not list(src.glob("*.html"))  # inputs untouched
    with pytest.raises(ValueError, match="mode"):
        build_book(src, tmp_path / "book", mode="fast")
    with pytest.raises(ValueError, match="nope"):
        build_book(src, tmp_path / "book", lessons=["nope"])


def test_a_cell_timeout_or_a_dead_kernel_fails_one_lesson_and_the_others_render(tmp_path):
    src = tmp_path / "notebooks"
    src.mkdir()
    _lesson(src / "00_slow.ipynb", "00 · Slow", "import time\ntime.sleep(30)")
    _lesson(src / "01_dies.ipynb", "01 · Dies", "import os\nos._exit(1)")
    _lesson(src / "02_fine.ipynb", "02 · Fine", "print('fine')")
    r = build_book(src, tmp_path / "book", mode="smoke", timeout=3, echo=lambda *_: None)
    assert set(r["failed"]) == {"00_slow", "01_dies"} and set(r["pages"]) == {"00_slow", "01_dies", "02_fine"}
    assert "fine" in (tmp_path / "book" / "02_fine.html").read_text()
    assert r["index"].read_text().count("FAILED") == 2
