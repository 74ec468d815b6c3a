"""Notebook helpers."""

import pytest
import torch

from inolib.course import notebook as nb


def test_check_exercise_states(capsys):
    ref = lambda x: x * 2
    assert nb.check_exercise(lambda x: ..., ref, torch.ones(3)) is None
    assert "not attempted" in capsys.readouterr().out

    def todo(x):
        raise NotImplementedError
    assert nb.check_exercise(todo, ref, torch.ones(3)) is None
    assert nb.check_exercise(lambda x: x * 2, ref, torch.ones(3)) is True
    assert nb.check_exercise(lambda x: x * 3, ref, torch.ones(3)) is False
    assert nb.check_exercise(lambda x: x[:2] * 2, ref, torch.ones(3)) is False
    assert "shape" in capsys.readouterr().out


def test_check_shape_and_data_dir(data_dir, monkeypatch):
    nb.check_shape(torch.zeros(2, 3), (2, 3))
    with pytest.raises(AssertionError, match=r"\(2, 4\)"):
        nb.check_shape(torch.zeros(2, 3), (2, 4))
    assert (nb.data_dir() / "davis_sample").is_dir()
    monkeypatch.setenv("INOLIB_DATA", "/nowhere")
    assert str(nb.data_dir()) == "/nowhere"


def test_environment_check_reports_nothing_here(capsys):
    assert nb.environment_check() == []
    assert "environment OK" in capsys.readouterr().out


def test_environment_check_names_a_missing_or_doubled_decoder(monkeypatch, capsys):
    real = nb._version

    def without(*names):
        return lambda dist: None if dist in names else real(dist)

    monkeypatch.setattr(nb, "_version", without("decord", "decord2"))
    assert nb.decoder_version() is None
    assert any("no video decoder" in p and "pip install decord2" in p for p in nb.environment_check())
    monkeypatch.setattr(nb, "_version", lambda dist: "3.4.0" if dist in ("decord", "decord2") else real(dist))
    assert nb.decoder_version() == "decord2 3.4.0"
    assert any("both installed" in p for p in nb.environment_check())


def test_check_shape_returns_nothing_to_print():
    assert nb.check_shape(torch.zeros(2, 3), (2, 3)) is None


def test_course_modes(monkeypatch):
    from inolib.config import course_mode

    monkeypatch.delenv("INOLIB_MODE", raising=False)
    monkeypatch.setenv("INOLIB_SMOKE", "1")
    assert course_mode() == "smoke" and course_mode("paper") == "paper"
    monkeypatch.setenv("INOLIB_SMOKE", "0")
    assert course_mode(gpu=False) == "laptop" and course_mode(gpu=True) == "paper"
    monkeypatch.setenv("INOLIB_MODE", "Laptop")
    assert course_mode(gpu=True) == "laptop"
    with pytest.raises(ValueError, match="mode must be one of"):
        course_mode("fast")
    env = nb.setup(mode="laptop")
    assert env["mode"] == "laptop" and not env["smoke"] and env["device"].type == "cpu"
    assert nb.setup(smoke=True)["mode"] == "smoke"
