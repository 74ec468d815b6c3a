"""The ``ino`` command line."""

import json
import subprocess
import sys

from inolib.cli import main


def test_info_lists_versions_device_and_presets(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "timm" in out and "device" in out
    for preset in ("smoke", "tiny", "charades", "kinetics"):
        assert preset in out


def test_config_applies_overrides(capsys):
    assert main(["config", "--preset", "smoke", "--loss.teacher_temp", "0.02", "--crops.num_local", "5"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["name"] == "smoke" and d["loss"]["teacher_temp"] == 0.02 and d["crops"]["num_local"] == 5


def test_bad_value_is_a_clear_error(capsys):
    assert main(["config", "--optim.epochs", "many"]) == 2
    err = capsys.readouterr().err
    assert "optim.epochs" in err and "expected int" in err


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "inolib", "config", "--preset", "tiny"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"]["embed_dim"] == 192
