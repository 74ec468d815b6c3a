"""The exercise check: reference answers hidden in inolib, two hidden inputs per exercise, one clear failure line."""

import ast
import json
import math
import re
from pathlib import Path

import pytest
import torch

from inolib.course import exercises as ex
from inolib.course import notebook as nb

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SIMS = torch.tensor([0.3, 0.9, -0.2, 0.7, 0.75])


def weights(sims, k, tau):
    vals, idx = sims.topk(k)
    w = torch.zeros_like(sims)
    w[idx] = torch.softmax(vals / tau, dim=0)
    return w


def test_a_correct_answer_passes_on_the_lesson_input_and_the_hidden_ones(capsys):
    assert nb.check_exercise(weights, "00.2", SIMS, 3, 0.1) is True
    assert "correct! (on the lesson's input and 2 hidden ones)" in capsys.readouterr().out


def test_a_wrong_answer_says_how_many_values_differ_where_and_both_values(capsys):
    def fixed_tau(sims, k, tau):                       # ignores tau: wrong everywhere
        return weights(sims, k, 1.0)

    assert nb.check_exercise(fixed_tau, "00.2", SIMS, 3, 0.1) is False
    out = capsys.readouterr().out
    want = ex.EXERCISES["00.2"].reference(SIMS, 3, 0.1)
    got = fixed_tau(SIMS, 3, 0.1)
    first = int(torch.nonzero(~torch.isclose(got.double(), want.double(), atol=1e-5))[0])
    assert out.count("\n") == 1 and out.startswith("not yet, on the lesson's input: ")
    assert "3 of 5 values differ" in out and f"the first at index {first}:" in out
    assert f"yours {float(got[first]):.8g}, expected {float(want[first]):.8g}" in out
    assert "tensor(" not in out                          # no elided tensor printed


def test_an_answer_right_only_on_the_shown_input_fails_on_a_hidden_one(capsys):
    def pairs_for_six(L):                               # hard-coded for the lesson's L = 6
        return [(0, 3), (1, 4), (2, 5)]

    assert nb.check_exercise(pairs_for_six, "04.1", 6) is False
    out = capsys.readouterr().out
    assert out.startswith("not yet, on hidden input 2 of 3 (2): shape: yours (3, 2), expected (1, 2)")

    def no_max(z, tau):                                 # overflows at low tau on large logits, as 03 warns
        e = torch.exp(z / tau)
        return e / e.sum()

    assert nb.check_exercise(no_max, "03.1", torch.tensor([0.3, 0.2, 0.1, 0.05]), 0.04) is False
    out = capsys.readouterr().out
    assert "hidden input 3 of 3" in out and "yours nan, expected" in out


def test_shapes_kinds_and_containers_are_compared_and_said_as_such():
    assert "shape: yours (1,), expected () (a single number)" in ex.compare(torch.tensor([0.5]), 0.5)
    assert ex.compare([(0, 3), (1, 4)], torch.tensor([[0, 3], [1, 4]])) is None
    assert ex.compare(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool)) is None
    msg = ex.compare(torch.tensor([1.0, 0.0]), torch.tensor([True, True]))
    assert "1 of 2 values differ; the first at index 1: yours 0, expected True" in msg
    assert "yours holds float values, the reference bool ones" in msg
    assert ex.compare((1, 2), (1, 3)) == "1 of 2 values differ; the first at index 1: yours 2, expected 3"
    ragged = (torch.zeros(2), torch.ones(3))
    assert ex.compare((torch.zeros(2), torch.zeros(3)), ragged).startswith("3 of 3 values at [1] differ")
    assert ex.compare({"a": 1.0}, {"b": 1.0}) == "keys: yours ['a'], expected ['b']"
    assert ex.compare({"a": torch.zeros(2, 2)}, {"a": torch.eye(2)}).startswith("2 of 4 values at ['a'] differ")
    assert "cannot be read as numbers" in ex.compare("0.5", 0.5)
    assert ex.compare(float("nan"), float("nan")) is None


def test_a_stub_is_not_attempted_and_a_crash_is_reported_not_raised(capsys):
    def stub(L):
        raise NotImplementedError

    assert nb.check_exercise(stub, "04.1", 6) is None
    assert nb.check_exercise(lambda L: ..., "04.1", 6) is None
    assert capsys.readouterr().out.count("not attempted yet") == 2

    def crash(L):
        return [(n, L // 2 + n) for n in range(L // 2)] if L < 8 else 1 / 0

    assert nb.check_exercise(crash, "04.1", 6) is False
    out = capsys.readouterr().out
    assert "hidden input 3 of 3 (8)" in out and "ZeroDivisionError" in out and "1 / 0" in out


def test_the_check_changes_neither_the_inputs_nor_the_random_state():
    def in_place(sims, k, tau):
        sims.mul_(0)
        return torch.randn(5)

    sims = SIMS.clone()
    torch.manual_seed(3)
    nb.check_exercise(in_place, "00.2", sims, 3, 0.1)
    after = torch.randn(4)
    torch.manual_seed(3)
    assert torch.equal(sims, SIMS) and torch.equal(after, torch.randn(4))


def test_the_old_api_with_a_reference_function_still_works(capsys):
    assert nb.check_exercise(lambda x: x * 2, lambda x: x * 2, torch.ones(3)) is True
    assert nb.check_exercise(lambda x: x * 3, lambda x: x * 2, torch.ones(3)) is False
    assert "3 of 3 values differ" in capsys.readouterr().out
    with pytest.raises(KeyError, match="no exercise '99.1'"):
        nb.check_exercise(lambda x: x, "99.1", 1)


def _lesson_checks():
    """(lesson, exercise name, solution cell source, exercise cell source) of every exercise of the course."""
    found = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        for c in cells:
            src = "".join(c["source"])
            if "check_exercise" in src:
                key = re.search(r'check_exercise\(\w+, "(\d\d\.\d)"', src).group(1)
                found.append((path.stem, key, "solution" in c["metadata"].get("tags", []), src))
    return found


def test_every_lesson_check_names_its_own_exercise_and_prints_no_reference():
    checks = _lesson_checks()
    for lesson, key, solution, src in checks:
        assert key.startswith(lesson[:2]), (lesson, key)
        if not solution:                                # only stubs: no reference answer above the TODO
            assert "lambda" not in src and not re.search(r"\breference\w*\s*=", src), (lesson, src)
            for f in (n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef)):
                last = f.body[-1]
                assert isinstance(last, ast.Return) and getattr(last.value, "value", None) is ..., (lesson, f.name)
    assert sorted({(k, s) for _, k, s, _ in checks}) == sorted((k, s) for k in ex.EXERCISES for s in (False, True))


def _solutions(lesson: str) -> dict:
    """The lesson's solution functions, defined with the names the lessons import."""
    from inolib import config
    from inolib.losses import frame_pairs
    from inolib.run import launch

    scope = {"torch": torch, "math": math, "frame_pairs": frame_pairs, "launch": launch, "config": config}
    cells = json.loads(next(NOTEBOOKS.glob(f"{lesson}_*.ipynb")).read_text())["cells"]
    for c in cells:
        if "solution" in c["metadata"].get("tags", []):
            tree = ast.parse("".join(c["source"]))
            defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
            exec(compile(ast.Module(body=defs, type_ignores=[]), lesson, "exec"), scope)
    return scope


@pytest.mark.parametrize("key", list(ex.EXERCISES))
def test_each_lesson_solution_passes_its_hidden_inputs(key, capsys):
    """The hidden inputs agree with the lessons' own solutions (nbval runs them on the shown inputs)."""
    from inolib import config
    from inolib.model import build_backbone

    lesson = key[:2]
    src = next(s for _, k, sol, s in _lesson_checks() if k == key and sol)
    fn = _solutions(lesson)[re.search(r"check_exercise\((\w+_solution)", src).group(1)]
    shown = {"06.3": (build_backbone(config.smoke().model).eval(),), "09.2": (config.tiny(), 10**7, 4)}.get(key, ())
    exercise = ex.EXERCISES[key]
    hidden = exercise.hidden(*shown)
    assert 1 <= len(hidden) <= 2
    assert ex.run_check(fn, exercise.reference, [hidden[0], *hidden], atol=exercise.atol) is True, capsys.readouterr()
