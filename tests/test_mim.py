"""Masked image modelling measured at every patch: agrees with the training loss at the masked ones."""

import math

import pytest
import torch

from inolib import config as C
from inolib.losses import mim_loss
from inolib.masking import random_mask
from inolib.course.mim_probe import masked_predictions, mim_by_ratio
from inolib.model import build_network


def _pair():
    torch.manual_seed(0)
    cfg = C.smoke()
    student = build_network(cfg.model).eval()
    torch.manual_seed(1)
    teacher = build_network(cfg.model).eval()
    return cfg, student, teacher


def test_masked_positions_give_the_training_loss():
    cfg, student, teacher = _pair()
    S, p = 32, cfg.model.patch_size
    grid = (S // p, S // p)
    clips = torch.randn(2, 4, 3, S, S)
    mask = random_mask(2, 4, grid, (0.4, 0.4), 1.0, torch.Generator().manual_seed(0))
    center = 0.1 * torch.randn(1, cfg.model.head_out_dim)
    out = masked_predictions(student, teacher, clips, mask, center)
    assert out["ce"].shape == (2, 4, grid[0] * grid[1])
    assert out["teacher"].shape[-1] == cfg.model.head_out_dim
    torch.testing.assert_close(out["teacher"].sum(-1), torch.ones(2, 4, grid[0] * grid[1]))
    with torch.no_grad():
        s, t = student(clips, None, mask), teacher(clips, None, mask, apply_mask=False)
    want = mim_loss(s["patch"], t["patch"], s["patch_mask"], center, 0.1, 0.04)
    torch.testing.assert_close(out["ce"][mask].mean(), want, atol=1e-4, rtol=1e-4)


def test_mim_by_ratio_records_and_checks():
    cfg, student, teacher = _pair()
    clips = torch.randn(1, 2, 3, 32, 32)
    center = torch.zeros(1, cfg.model.head_out_dim)
    recs = mim_by_ratio(student, teacher, clips, center, [0.25, 1.0], draws=2)
    assert [r["ratio"] for r in recs] == [0.25, 1.0]
    assert recs[0]["masked_patches"] == 4 and recs[1]["masked_patches"] == 16
    assert math.isnan(recs[1]["unmasked"]) and recs[1]["all_tokens"] == pytest.approx(recs[1]["mim"])
    r = recs[0]
    assert r["all_tokens"] == pytest.approx(0.25 * r["mim"] + 0.75 * r["unmasked"], rel=1e-4)
    assert mim_by_ratio(student, teacher, clips, center, [0.5], mode="block", draws=1)[0]["mim"] > 0
    with pytest.raises(ValueError, match="ratio"):
        mim_by_ratio(student, teacher, clips, center, [0.0])
    with pytest.raises(ValueError, match="mask"):
        masked_predictions(student, teacher, clips, torch.zeros(1, 2, 16), center)
    with pytest.raises(ValueError, match="center"):
        masked_predictions(student, teacher, clips, torch.zeros(1, 2, 16, dtype=torch.bool), torch.zeros(1, 2, 3))


def test_patch_logits_of_every_patch_match_the_training_forward():
    cfg, student, _ = _pair()
    x = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, :5] = True
    with torch.no_grad():
        every = student.patch_logits(x, mask)  # (B, N, K)
        out = student(x[:, None], None, mask[:, None])
    assert every.shape == (2, 16, cfg.model.head_out_dim)
    torch.testing.assert_close(every[:, :5], out["patch"][:, 0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="images"):
        student.patch_logits(x[:, None])


def test_row_mass_of_an_affinity():
    from inolib.losses import row_mass

    aff = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    rows, cols = torch.tensor([True, True]), torch.tensor([True, False, False])
    low = float(row_mass(aff, 0.01, rows, cols))  # row 0 all on column 0, row 1 uniform (1/3)
    assert low == pytest.approx((1.0 + 1 / 3) / 2, abs=1e-4)
    assert float(row_mass(aff, 100.0, rows, cols)) == pytest.approx(1 / 3, abs=1e-2)
    with pytest.raises(ValueError, match="rows"):
        row_mass(aff, 0.1, torch.tensor([True]), cols)
    with pytest.raises(ValueError, match="tau"):
        row_mass(aff, 0.0, rows, cols)
