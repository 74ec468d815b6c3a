"""Notebook helpers."""

import pytest
import torch

from inolib import nb


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
