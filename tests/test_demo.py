"""The demo tour runs on the real bundled frames and prints the four losses."""

import math
import subprocess
import sys

from inolib import config as C
from inolib.course.demo import load_demo_clips, run_tour


def test_demo_clips_are_real_frames(data_dir):
    clips = load_demo_clips(data_dir, 4, 8.0)
    assert clips.shape[:3] == (2, 4, 3) and clips.dtype.is_floating_point is False
    # consecutive 8-fps frames of a real video differ, but not completely
    d = (clips[:, 1:].float() - clips[:, :-1].float()).abs().mean()
    assert 0.5 < d < 60


def test_run_tour_returns_four_finite_losses(data_dir):
    lines = []
    out = run_tour(C.smoke(), data_dir=data_dir, echo=lines.append)
    for key in ("g2g", "l2g", "mim", "aff", "loss"):
        assert math.isfinite(out[key]) and out[key] > 0
    text = "\n".join(lines)
    for label in ("out g2g", "out l2g", "in mim", "in aff", "L_INO"):
        assert label in text


def test_ino_demo_command(data_dir):
    r = subprocess.run([sys.executable, "-m", "inolib", "demo", "--tour", "--preset", "smoke", "--data", str(data_dir)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "in aff" in r.stdout and "L_INO" in r.stdout


def test_ino_demo_missing_data_is_a_clear_error(tmp_path, capsys):
    from inolib.cli import main

    assert main(["demo", "--tour", "--preset", "smoke", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and str(tmp_path) in err
    assert main(["demo", "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2  # the end-to-end demo too
    err = capsys.readouterr().err
    assert "not found" in err and str(tmp_path) in err


# ----------------------------------------------------------------------------------------------------
# The end-to-end demo (a smoke model stands in for the shipped checkpoint)


def _fake_data(tmp_path, data_dir):
    """A data folder like the bundled one, whose checkpoint is a 2-step smoke run exported like the shipped one."""
    import shutil

    from inolib.checkpoint import export_backbones
    from inolib.run.trainer import Trainer

    tr = Trainer(C.smoke(), [data_dir / "videos"], tmp_path / "run", progress=False, tensorboard=False, max_steps=2)
    tr.fit()
    data = tmp_path / "data"
    (data / "checkpoints").mkdir(parents=True)
    (data / "videos").symlink_to(data_dir / "videos")
    from inolib.data.synthetic import make_synthetic_video, write_davis_layout

    for seed in (1, 2):  # a small DAVIS-layout sample keeps the test fast
        write_davis_layout(make_synthetic_video(8, 64, 96, 2, 0, seed=20_000 + seed, name=f"seq{seed}"),
                           data / "davis_sample/DAVIS")
    export_backbones(tmp_path / "run/checkpoint.pth", data / "checkpoints/ino_tiny.pth")
    shutil.copy(tmp_path / "run/log.jsonl", data / "checkpoints/log.jsonl")
    return data


def test_export_backbones_is_small_and_loads_like_the_run(tmp_path, data_dir):
    import torch

    from inolib.checkpoint import load_backbone

    data = _fake_data(tmp_path, data_dir)
    small, full = data / "checkpoints/ino_tiny.pth", tmp_path / "run/checkpoint.pth"
    assert small.stat().st_size < full.stat().st_size / 3  # no heads, no optimizer, fp16
    for net in ("student", "teacher"):
        a, _ = load_backbone(small, key=net)
        b, _ = load_backbone(full, key=net)
        x = torch.randn(1, 3, 64, 64)
        fa, fb = a.patch_feature_map(x, block=2), b.patch_feature_map(x, block=2)
        assert a.pos_embed.dtype == torch.float32
        assert torch.allclose(fa, fb, atol=2e-2, rtol=1e-2)  # fp16 weights, float32 compute


def test_run_demo_writes_the_report_with_three_feature_extractors(tmp_path, data_dir, monkeypatch):
    import torch

    from inolib.course.demo import SHIPPED, run_demo

    data = _fake_data(tmp_path, data_dir)
    lines, loads = [], []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: loads.append(str(f)) or real_load(f, *a, **k))
    r = run_demo(data, tmp_path / "out", train_seconds=3, echo=lines.append)
    assert loads.count(str(data / SHIPPED)) == 1  # the shipped file is read once: its config and its weights
    assert set(r["jf"]) == {"shipped", "random init", "raw pixels"}
    assert all(0 <= g["J&F-Mean"] <= 1 for g in r["jf"].values())
    page = r["report"].read_text()
    assert page.count("data:image/png;base64") >= 4  # live loss, affinity, masks of the two sequences
    assert "raw pixels" in page and "J&amp;F-Mean" in page
    for name in ("shipped", "random_init", "raw_pixels"):
        assert len(list((tmp_path / "out/results" / name / "seq1").glob("*.png"))) == 8
    assert any("J&F" in line for line in lines) and (tmp_path / "out/live/checkpoint.pth").is_file()


def test_demo_takes_only_the_flags_it_uses(tmp_path, capsys):
    import pytest

    from inolib.cli import main

    with pytest.raises(SystemExit):  # not a demo flag at all: argparse refuses it
        main(["demo", "--propagation.topk", "3", "--out", str(tmp_path / "a")])
    assert main(["demo", "--model.depth", "3", "--out", str(tmp_path / "b")]) == 2
    assert "--model.depth: the demo segments with the shipped model's own settings" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    assert main(["demo", "--tour", "--loss.teacher_temp", "0"]) == 2  # printed NaN losses, exit 0
    assert "--loss.teacher_temp 0: must be > 0" in capsys.readouterr().err


def test_report_titles_show_dollar_signs_as_text():
    from inolib.course.demo_report import _curves, _png

    png = _png(_curves([{"step": 1, "loss": 2.0}], ["loss"], r"sequence $\notamacro{$ of a user", "loss"))
    assert png.startswith("<img") or "base64" in png


def test_the_learning_curve_draws_the_raw_pixel_line_only_at_its_own_short_side(tmp_path, data_dir):
    import json

    from inolib import config as C
    from inolib.course.demo_report import write_demo_report

    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps({"step": s, "jf_student": 0.3 + s / 100, "jf_teacher": 0.3}) for s in (0, 5)))
    jf = {"raw pixels": {"global": {"J&F-Mean": 0.26, "J-Mean": 0.2, "F-Mean": 0.3}, "objects": {}}}
    prop = C.override(C.tiny(), {"propagation.short_side": "192"}).propagation
    page = write_demo_report(tmp_path / "a.html", jf=jf, folders={}, davis_root=data_dir / "davis_sample/DAVIS",
                             networks={}, propagation=prop, shipped_log=log, curve_short_side=240).read_text()
    assert "Measured during training at short side 240; this report propagates at 192" in page
    same = write_demo_report(tmp_path / "b.html", jf=jf, folders={}, davis_root=data_dir / "davis_sample/DAVIS",
                             networks={}, propagation=prop, shipped_log=log, curve_short_side=192).read_text()
    assert "Measured during training" not in same
