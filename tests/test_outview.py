"""Out-view agreement of class tokens (lessons 04 and 05): crop boxes, views, the retrieval probe."""

import math

import pytest
import torch

from inolib import config as C
from inolib.model import build_backbone
from inolib.outview import (class_tokens, crop_views, global_views, local_views, match_probs, partner_cross_entropy,
                            sample_boxes)


def test_boxes_have_the_asked_area_fit_the_frame_and_are_seeded():
    b = sample_boxes(120, 200, (0.05, 0.2), 50, seed=3)
    assert b.shape == (50, 4) and b.dtype == torch.long
    top, left, h, w = b.unbind(1)
    assert bool((top >= 0).all() and (left >= 0).all() and (top + h <= 120).all() and (left + w <= 200).all())
    area = (h * w).double() / (120 * 200)
    assert 0.04 < float(area.min()) and float(area.max()) < 0.22
    assert torch.equal(b, sample_boxes(120, 200, (0.05, 0.2), 50, seed=3))
    assert not torch.equal(b, sample_boxes(120, 200, (0.05, 0.2), 50, seed=4))
    fixed = sample_boxes(100, 100, (0.25, 0.25), 4, ratio=(1, 1))
    assert bool((fixed[:, 2:] == 50).all())
    for bad in (dict(scale=(0.0, 0.5)), dict(scale=(0.5, 0.2)), dict(n=0), dict(ratio=(2, 1))):
        kw = dict(height=10, width=10, scale=(0.1, 0.2), n=2) | bad
        with pytest.raises(ValueError, match=next(iter(bad))):
            sample_boxes(**kw)


def test_crop_views_resize_and_normalise_the_box():
    crops = C.CropConfig(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    frame = torch.zeros(3, 40, 60, dtype=torch.uint8)
    frame[:, 10:20, 30:50] = 255                                    # a white box
    v = crop_views(frame, torch.tensor([[10, 30, 10, 20], [0, 0, 8, 8]]), 16, crops)
    assert v.shape == (2, 3, 16, 16)
    assert torch.allclose(v[0], torch.ones_like(v[0]), atol=1e-3)   # all white -> (1 - 0.5) / 0.5
    assert torch.allclose(v[1], -torch.ones_like(v[1]), atol=1e-3)  # all black
    with pytest.raises(ValueError, match="inside the frame"):
        crop_views(frame, torch.tensor([[35, 0, 10, 10]]), 16, crops)
    with pytest.raises(ValueError, match="frame must be a uint8"):
        crop_views(frame.float(), torch.tensor([[0, 0, 8, 8]]), 16, crops)
    g = global_views(torch.stack([frame, frame]), C.smoke().crops, seed=1)
    assert g.shape == (2, 3, 64, 64) and torch.equal(g, global_views(torch.stack([frame, frame]), C.smoke().crops, 1))


def test_match_probs_find_the_partner_and_cross_entropy_reads_them():
    torch.manual_seed(0)
    t = torch.randn(5, 8)
    s = t + 0.05 * torch.randn(5, 8)
    P = match_probs(s, t, temperature=0.1)
    assert P.shape == (5, 5) and torch.allclose(P.sum(1), torch.ones(5))
    assert torch.equal(P.argmax(1), torch.arange(5))
    assert partner_cross_entropy(P) < 0.1
    flat = torch.full((4, 4), 0.25)
    assert partner_cross_entropy(flat) == pytest.approx(math.log(4))
    assert partner_cross_entropy(flat, [3, 2, 1, 0]) == pytest.approx(math.log(4))
    shared = torch.randn(1, 8) * 50                                 # one direction in every token
    assert float(match_probs(s + shared, t + shared, center=False).diagonal().mean()) < float(P.diagonal().mean())
    with pytest.raises(ValueError, match="targets"):
        partner_cross_entropy(P, [0, 1])
    with pytest.raises(ValueError, match="temperature"):
        match_probs(s, t, temperature=0)


def test_class_tokens_batch_like_one_call():
    vit = build_backbone(C.smoke().model).eval()
    x = torch.randn(5, 3, 32, 32)
    tok = class_tokens(vit, x, batch=2)
    with torch.no_grad():
        assert torch.allclose(tok, vit.encode(x)[0], atol=1e-5)


def test_local_views_are_frame_major_with_their_boxes():
    crops = C.smoke().crops
    frames = [torch.zeros(3, 40, 60, dtype=torch.uint8), torch.full((3, 50, 30), 255, dtype=torch.uint8)]
    v, b = local_views(frames, (0.1, 0.2), 3, crops, seed=5)
    assert v.shape == (6, 3, crops.local_size, crops.local_size) and b.shape == (2, 3, 4)
    assert float(v[:3].mean()) < 0 < float(v[3:].mean())                 # black frame first, then the white one
    assert torch.equal(b[1], sample_boxes(50, 30, (0.1, 0.2), 3, crops.ratio, seed=6))
    with pytest.raises(ValueError, match="at least one"):
        local_views([], (0.1, 0.2), 3, crops)
