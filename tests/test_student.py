"""`make student`: the lessons without their solution cells, in a folder of their own, still running."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from inolib.course import exercises as ex

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _digests() -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(NOTEBOOKS.glob("*.ipynb"))}


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    before = _digests()
    out = tmp_path_factory.mktemp("build") / "student"
    paths = ex.write_student_edition(NOTEBOOKS, out)
    assert _digests() == before, "the lessons themselves changed"
    return out, paths


def test_twelve_lessons_without_any_solution(student):
    out, paths = student
    assert [p.name for p in paths] == sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) and len(paths) == 12
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in paths]  # no temporary file left
    for path in paths:
        text = path.read_text()
        original = json.loads((NOTEBOOKS / path.name).read_text())
        names = {n for c in original["cells"] for n in re.findall(r"def (\w+_solution)\(", "".join(c["source"]))}
        assert len(names) >= 3 and not any(n in text for n in names), path.name
        assert "_solution" not in text and '"solution"' not in text and "# Solution" not in text
        nb = json.loads(text)
        code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        assert sum("nb.check_exercise(" in s for s in code) == 3  # the learner's checks stay
        prose = " ".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        assert ex.STUDENT_NOTE in prose and "collapsed cells" not in prose
        assert len(nb["cells"]) == len(original["cells"]) - 3 + 1
        assert text == json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    strip = Path(sys.executable).parent / "nbstripout"  # as committed lessons are: no outputs, cells numbered
    if strip.exists():
        subprocess.run([str(strip), "--verify", *map(str, paths)], check=True, capture_output=True, timeout=120)


def test_never_into_the_lessons_folder(tmp_path, capsys):
    before = _digests()
    for bad in (NOTEBOOKS, NOTEBOOKS / "student"):
        with pytest.raises(ValueError, match="outside the lessons' folder"):
            ex.write_student_edition(NOTEBOOKS, bad)
    assert ex.main(["--notebooks", str(NOTEBOOKS), "--out", str(NOTEBOOKS)]) == 2
    assert "error:" in capsys.readouterr().err
    assert _digests() == before and not (NOTEBOOKS / "student").exists()
    assert ex.main(["--notebooks", str(tmp_path), "--out", str(tmp_path / "out")]) == 2  # no lessons there


def test_an_untagged_solution_is_refused():
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# title"]},
                    {"cell_type": "code", "metadata": {}, "source": ["def my_x_solution(a):\n", "    return a"]}]}
    with pytest.raises(ValueError, match="solution outside a cell tagged"):
        ex.student_notebook(nb)


def test_a_student_lesson_runs_and_its_checks_wait_for_the_learner(student):
    """Lesson 02 in smoke mode under nbclient, in the student folder: no error, three "not attempted yet"."""
    import nbformat
    from nbclient import NotebookClient

    out, _ = student
    lesson = out / "02_vit_tokens.ipynb"
    nb = nbformat.read(lesson, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(out)}}
                   ).execute(env=dict(os.environ, INOLIB_SMOKE="1"))
    printed = [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if o.output_type == "stream"]
    assert sum("exercise not attempted yet" in t for t in printed) == 3
    assert not any(o.output_type == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
