"""EMA teacher."""

import copy

import pytest
import torch

from inolib import config as C
from inolib.model import build_network
from inolib.teacher import ema_update, make_teacher


def test_teacher_copies_student_without_grad_or_drop_path():
    cfg = C.smoke().model
    torch.manual_seed(0)
    student = build_network(C.override(C.smoke(), {"model.drop_path_rate": "0.2"}).model)
    teacher = make_teacher(student, cfg)
    for (n, s), (m, t) in zip(student.named_parameters(), teacher.named_parameters()):
        assert n == m and torch.equal(s, t) and not t.requires_grad
    assert all(b.drop_path1.__class__.__name__ == "Identity" for b in teacher.backbone.blocks)


def test_ema_update_formula():
    torch.manual_seed(0)
    student = build_network(C.smoke().model)
    teacher = make_teacher(student, C.smoke().model)
    old = copy.deepcopy(teacher.state_dict())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    ema_update(student, teacher, 0.9)
    s = dict(student.named_parameters())
    for n, t in teacher.named_parameters():
        torch.testing.assert_close(t, 0.9 * old[n] + 0.1 * s[n].detach())
    with pytest.raises(ValueError):
        ema_update(student, teacher, 1.5)
