"""Self-pairing (lesson 04): out g2g with every frame paired with itself, in the loss and in a training run."""

import pytest
import torch

from inolib import config as C
from inolib.course.collapse_runs import (
    SELF_PAIR_SETTINGS,
    SelfPairTeacher,
    collapse_runs,
    self_pair_g2g,
    swap_halves,
)
from inolib.losses import g2g_loss, student_log_probs, teacher_probs
from inolib.model import build_network
from inolib.teacher import ema_update, make_teacher


def _by_hand(s, t, center, pairs):
    """Mean over clips and over the listed (student frame, teacher frame) terms of -q_t . log p_s."""
    q, logp = teacher_probs(t, center, 0.04), student_log_probs(s, 0.1)
    return torch.stack([-(q[:, b] * logp[:, a]).sum(-1).mean() for a, b in pairs]).mean()


def test_self_pair_g2g_pairs_every_frame_with_itself():
    g = torch.Generator().manual_seed(0)
    s, t, c = torch.randn(3, 4, 7, generator=g), torch.randn(3, 4, 7, generator=g), torch.randn(1, 7, generator=g)
    assert torch.equal(swap_halves(torch.arange(6)[None]), torch.tensor([[3, 4, 5, 0, 1, 2]]))
    own = _by_hand(s, t, c, [(n, n) for n in range(4)])
    assert torch.allclose(self_pair_g2g(s, t, c, 0.1, 0.04), own, atol=1e-6)
    partner = _by_hand(s, t, c, [(0, 2), (2, 0), (1, 3), (3, 1)])
    assert torch.allclose(g2g_loss(s, t, c, 0.1, 0.04), partner, atol=1e-6)
    assert not torch.allclose(own, partner, atol=1e-3)
    per_frame = torch.randn(4, 7, generator=g)  # a center row per teacher frame moves with its frame
    want = torch.stack([-(teacher_probs(t[:, n], per_frame[n:n + 1], 0.04) * student_log_probs(s[:, n], 0.1))
                        .sum(-1).mean() for n in range(4)]).mean()
    assert torch.allclose(self_pair_g2g(s, t, per_frame, 0.1, 0.04), want, atol=1e-6)


def test_self_pair_teacher_swaps_only_the_class_logits_and_keeps_the_ema():
    cfg = C.smoke().model
    torch.manual_seed(0)
    student = build_network(cfg)
    teacher = make_teacher(student, cfg)
    wrapped = SelfPairTeacher(teacher)
    x = torch.randn(1, 2, 3, 64, 64)
    with torch.no_grad():
        plain, swapped = teacher(x), wrapped(x)
    assert torch.equal(swapped["cls_global"], plain["cls_global"][:, [1, 0]])
    with torch.no_grad():
        next(student.parameters()).add_(1.0)
    ema_update(student, wrapped, 0.5)  # reaches the wrapped teacher's own parameters
    assert torch.allclose(next(teacher.parameters()), next(student.parameters()) - 0.5)


def test_a_self_pair_run_trains_on_each_frame_with_itself():
    cfg = C.smoke().model
    data = torch.randn(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    runs = collapse_runs(cfg, lambda step: data, steps=3, settings=SELF_PAIR_SETTINGS, held_out=data, eval_every=2)
    torch.manual_seed(0)  # the runs' initialisation (seed 0): at step 0 student and teacher are the same network
    with torch.no_grad():
        z = build_network(cfg)(data)["cls_global"]
    zero = torch.zeros(1, z.shape[-1])  # the center before the first update
    first = {name: recs[0]["loss"] for name, recs in runs.items()}
    assert first["self-pair"] == pytest.approx(float(self_pair_g2g(z, z, zero, 0.1, 0.04)), abs=1e-5)
    assert first["partner frames (INO)"] == pytest.approx(float(g2g_loss(z, z, zero, 0.1, 0.04)), abs=1e-5)
    assert abs(first["self-pair"] - first["partner frames (INO)"]) > 1e-3
    for recs in runs.values():
        assert [r["step"] for r in recs if "held_out_g2g" in r] == [0, 2]  # every 2 steps and the last
        assert all(r["held_out_self"] >= 0 for r in recs if "held_out_self" in r)
    with pytest.raises(ValueError, match="pairing"):
        collapse_runs(cfg, lambda step: data, steps=1, settings={"x": {"centering": True, "teacher_temp": 0.04,
                                                                         "pairing": "next"}})
