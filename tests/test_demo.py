"""The demo tour runs on the real bundled frames and prints the four losses."""

import math
import subprocess
import sys

from inolib import config as C
from inolib.demo import load_demo_clips, run_tour


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


def test_ino_demo_missing_data_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "inolib", "demo", "--tour", "--preset", "smoke", "--data", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "not found" in r.stderr and str(tmp_path) in r.stderr
