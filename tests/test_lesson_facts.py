"""Facts the lessons state about the paper, the released code and the shipped model, checked against the text of
the notebooks (the paper: Table 2 holds the DAVIS-2017 results, Sec. 4.1 and Table 2 give two Kinetics counts, and
it gives no center momentum, no momentum schedule and no propagation temperature)."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LESSONS = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


def _md(name):
    """The markdown prose of a lesson, one string (line breaks inside paragraphs kept)."""
    cells = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def _flat(text):
    return re.sub(r"\s+", " ", text)


_ABBREV = r"(?<!Sec\.)(?<!App\.)(?<!Eq\.)(?<!Fig\.)(?<!Tab\.)(?<!e\.g\.)(?<!i\.e\.)(?<!vs\.)(?<!al\.)"


def _sentences(text):
    """Sentences of flattened prose (a full stop, ! or ? followed by a space and a capital, a bracket or markup)."""
    return re.split(r"(?<=[.!?])" + _ABBREV + r"\s+(?=[A-Z*(\[$`])", _flat(text))


def _clauses(text):
    """Sentences cut further at semicolons and list items."""
    return [c for s in _sentences(text) for c in re.split(r";|\s-\s", s)]


def _paragraphs(text):
    return [_flat(p) for p in re.split(r"\n\s*\n|\n(?=- )", text)]


@pytest.mark.parametrize("name", LESSONS)
def test_no_lesson_calls_the_davis_results_table_1(name):
    """The paper's Table 1 compares method properties; its DAVIS-2017 val results are Table 2."""
    assert not re.search(r"\bTable 1\b|\bTab\. 1\b", _md(name)), name


def test_lesson_09_cites_table_2_for_davis_2017():
    text = _flat(_md("09_training_on_gpus"))
    assert re.search(r"DAVIS-2017 val \(Table 2\)", text)


def test_shipped_model_training_time_is_92_minutes():
    for name in LESSONS:
        assert "under an hour" not in _md(name), name
    for name in ("00_overview", "11_your_own_video"):
        text = _flat(_md(name))
        assert "92 minutes" in text or "an hour and a half" in text, name


def test_06_does_not_say_out_losses_never_train_patch_tokens():
    text = _flat(_md("06_in_mim"))
    assert "never train a patch token" not in text
    assert not re.search(r"out losses alone (never|do not|don't) train", text)
    # the corrected claim: the out-only row still propagates labels through patch features
    para = next(p for p in _paragraphs(_md("06_in_mim")) if "out losses alone" in p)
    assert "54.2" in para and "patch features" in para


def test_08_counts_4M_local_to_global_terms():
    text = _flat(_md("08_training_on_a_laptop"))
    assert "other frame's global crop" not in text
    assert re.search(r"\$4M\$ local-to-global terms", text)
    assert "both" in next(s for s in _sentences(_md("08_training_on_a_laptop")) if "local-to-global terms" in s)


def test_03_credits_center_momentum_to_released_code_or_dino():
    sents = [s for s in _sentences(_md("03_self_distillation")) if re.search(r"momentum 0\.9\b", s)]
    assert sents
    for s in sents:
        assert "4.1" not in s and ("released code" in s or "DINO" in s), s


def test_08_credits_momentum_schedule_to_released_code_or_dino():
    clauses = [c for c in _clauses(_md("08_training_on_a_laptop")) if re.search(r"0\.996.*\bto 1\b", c)]
    assert clauses
    for c in clauses:
        assert "released code" in c or "DINO" in c, c
    assert "schedules (App. A.1)" not in _flat(_md("08_training_on_a_laptop"))


def test_00_does_not_call_tau_0_1_inos_setting():
    text = _md("00_overview")
    assert "INO's setting" not in text
    clauses = [c for c in _clauses(text) if re.search(r"k = 5", c) and re.search(r"\\tau = 0\.1", c)]
    assert clauses
    assert all("released code" in c for c in clauses), clauses


def test_kinetics_counts_agree_in_01_and_09():
    """Sec. 4.1 says around 230K Kinetics videos, Table 2 lists 300K (833 h): both lessons give both."""
    for name in ("01_data_and_crops", "09_training_on_gpus"):
        text = _flat(_md(name))
        assert "230,000" in text and "300,000" in text, name
    para = next(p for p in _paragraphs(_md("01_data_and_crops")) if "230,000" in p)
    assert "Sec. 4.1" in para and "Table 2" in para and "833" in para


def test_01_says_which_crop_scale_reading_it_uses():
    para = [p for p in _paragraphs(_md("01_data_and_crops")) if "other way round" in p]
    assert para, "no footnote on Sec. 4.1's swapped crop scales"
    p = para[0]
    assert "Sec. 4.1" in p and "released code" in p and "(0.8, 0.95)" in p and "(0.05, 0.8)" in p


def test_00_davis_val_size():
    text = _flat(_md("00_overview"))
    assert "25 to 100 frames" not in text
    assert "1,999 frames" in text and "30" in text


@pytest.mark.parametrize("name", LESSONS)
def test_no_remarks_about_how_the_project_was_made(name):
    text = _flat(_md(name))
    for bad in (r"no GPU has run", r"\bon this CPU\b", r"this 2-core CPU", r"hours of runs on this",
                r"the only GPU timing we have", r"the one complete run we have"):
        assert not re.search(bad, text), f"{name}: {bad}"


def test_00_lists_lesson_09_as_a_lesson():
    text = _md("00_overview")
    row = next(line for line in text.splitlines() if "09 · training on GPUs" in line)
    assert "planned" not in row and "(09_training_on_gpus.ipynb)" in row
