"""benchmarks/table4_mini.py's table: means, spreads and which differences to the all-losses runs are larger than
the seed spread (the training itself is exercised by its --dry run, by hand: a minute per variant and seed)."""

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import table4_mini as t4  # noqa: E402


def _r(variant, seed, davis, synthetic):
    return {f"{variant}_seed{seed}": {"variant": variant, "seed": seed, "steps": 750, "train_seconds": 1.0,
                                      "davis": davis, "synthetic": synthetic}}


def test_differences_are_judged_against_the_seed_spread():
    res = {**_r("all", 0, 0.40, 0.42), **_r("all", 1, 0.42, 0.43),          # spread 0.02, 0.01
           **_r("no_mim", 0, 0.35, 0.425), **_r("no_mim", 1, 0.36, 0.435),  # -0.055 beyond, +0.005 within
           **_r("no_aff", 0, 0.41, 0.40)}                                   # one seed: not judged
    assert t4.versus_all(res, "no_mim", "davis") == "-0.055 (beyond)"
    assert t4.versus_all(res, "no_mim", "synthetic") == "+0.005 (within)"
    assert t4.versus_all(res, "no_aff", "davis") == "-" and t4.versus_all(res, "all", "davis") == "-"
    tie = {**_r("all", 0, 0.40, 0.42), **_r("all", 1, 0.42, 0.43), **_r("no_g2g", 0, 0.4099, 0.42),
           **_r("no_g2g", 1, 0.41, 0.43)}  # 0.0001 below all's mean
    assert t4.versus_all(tie, "no_g2g", "davis") == "+0.000 (within)"
    text = t4.table(res, ["all", "no_mim", "no_aff", "in_only"])
    rows = text.splitlines()
    assert len(rows) == 5 and "in_only" not in text                          # header, rule, three variants
    assert rows[2].startswith("| all | g2g + l2g + mim + aff | 2 | 0.410 (0.020) |") and rows[2].endswith("| 67.0 |")
    assert "| no_mim | g2g + l2g + aff | 2 | 0.355 (0.010) | -0.055 (beyond) |" in text
    assert "| no_aff | g2g + l2g + mim | 1 |" in text and text.endswith("| 65.4 |")


def test_finished_runs_are_gathered_from_their_folders(tmp_path):
    for key, res in {**_r("all", 0, 0.4, 0.4), **_r("in_only", 1, 0.3, 0.35)}.items():
        (tmp_path / key).mkdir()
        (tmp_path / key / "result.json").write_text(json.dumps(res))
    (tmp_path / "out_only_seed0").mkdir()                                    # unfinished: no result.json
    assert sorted(t4.gather(tmp_path)) == ["all_seed0", "in_only_seed1"]
    for name, text in (("torn_seed0", '{"variant": "torn", "dav'), ("partial_seed0", '{"variant": "partial"}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(text)
    with pytest.warns(UserWarning, match="torn_seed0/result.json: left out") as rec:
        assert sorted(t4.gather(tmp_path)) == ["all_seed0", "in_only_seed1"]  # the others still count
    assert any("partial_seed0/result.json: left out of the table, missing davis, synthetic" in str(w.message)
               for w in rec)


def test_evaluate_reads_the_run_once_and_scores_its_student(tmp_path):
    import torch

    from inolib import config as C
    from inolib.checkpoint import save_checkpoint
    from inolib.data.synthetic import write_held_out_davis
    from inolib.model import build_network
    from inolib.teacher import make_teacher
    from inolib.vos.validation import davis_jf, load_davis_for_validation

    cfg = C.smoke()
    torch.manual_seed(0)
    student = build_network(cfg.model)
    teacher = make_teacher(student, cfg.model)
    with torch.no_grad():
        for p in teacher.parameters():
            p.normal_()  # a teacher unlike the student: evaluate must score the student
    save_checkpoint(tmp_path / "run" / "checkpoint.pth", cfg, student, teacher, step=42)
    seqs = load_davis_for_validation(write_held_out_davis(tmp_path / "held", 1, cfg.synthetic, num_frames=4))
    got = t4.evaluate(tmp_path / "run", seqs, seqs, "cpu")
    want = davis_jf(student.backbone, seqs, cfg.propagation, "cpu")["J&F-Mean"]
    assert got["steps"] == 42
    assert got["davis"] == got["synthetic"] == want
    assert want != davis_jf(teacher.backbone, seqs, cfg.propagation, "cpu")["J&F-Mean"]
