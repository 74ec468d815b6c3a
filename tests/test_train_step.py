"""One training step: the student moves, the teacher follows by EMA, the centers update, NaN stops."""

import copy

import pytest
import torch

from inolib import config as C
from inolib.losses import INOLoss
from inolib.masking import random_mask
from inolib.model import build_network
from inolib.teacher import make_teacher
from inolib.run.trainer import collapse_monitors, train_step


def setup():
    cfg = C.smoke()
    torch.manual_seed(0)
    student = build_network(cfg.model)
    teacher = make_teacher(student, cfg.model)
    crit = INOLoss(cfg.loss, cfg.model.head_out_dim)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    g = torch.randn(2, 4, 3, 64, 64)
    l = torch.randn(2, 4, 2, 3, 32, 32)
    mask = random_mask(2, 4, (8, 8), prob=1.0, generator=torch.Generator().manual_seed(0))
    return cfg, student, teacher, crit, opt, g, l, mask


def test_step_updates_student_teacher_and_centers():
    cfg, student, teacher, crit, opt, g, l, mask = setup()
    s0, t0 = copy.deepcopy(student.state_dict()), copy.deepcopy(teacher.state_dict())
    out = train_step(student, teacher, crit, opt, g, l, mask, momentum=0.9, clip_grad=3.0)
    for k in ("loss", "g2g", "l2g", "mim", "aff", "entropy", "batch_entropy", "top_share"):
        assert k in out and out[k] == out[k]
    assert out["mim"] > 0 and out["aff"] > 0
    name = "backbone.mask_token"
    s1, t1 = student.state_dict()[name], teacher.state_dict()[name]
    assert not torch.equal(s1, s0[name])
    torch.testing.assert_close(t1, 0.9 * t0[name] + 0.1 * s1)
    assert crit.center.cls.abs().sum() > 0 and crit.center.patch.abs().sum() > 0


def test_frozen_centers_and_non_finite_loss():
    cfg, student, teacher, crit, opt, g, l, mask = setup()
    train_step(student, teacher, crit, opt, g, None, None, momentum=0.99, update_center=False)
    assert crit.center.cls.abs().sum() == 0
    before = copy.deepcopy(student.state_dict())
    with pytest.raises(FloatingPointError, match="non-finite"):
        train_step(student, teacher, crit, opt, g * float("nan"), l, mask, momentum=0.99)
    for k, v in student.state_dict().items():  # nothing was stepped
        assert torch.equal(v, before[k])


def test_collapse_monitors():
    K = 16
    uniform_targets = torch.zeros(8, K)
    m = collapse_monitors(uniform_targets, torch.zeros(1, K), 0.04)
    assert abs(m["entropy"] - torch.log(torch.tensor(16.0)).item()) < 1e-5 and m["top_share"] == pytest.approx(1 / 16)
    one_dim = torch.zeros(8, K)
    one_dim[:, 3] = 10
    m = collapse_monitors(one_dim, torch.zeros(1, K), 0.04)
    assert m["batch_entropy"] < 1e-3 and m["top_share"] > 0.999
