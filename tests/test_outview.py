"""Out-view agreement of class tokens (lessons 04 and 05): crop boxes, views, the retrieval probe."""

import dataclasses
import math

import pytest
import torch

from inolib import config as C
from inolib.model import build_backbone
from inolib.augment import crop_boxes
from inolib.course.out_view import (class_tokens, crop_views, global_views, local_views, match_probs, partner_cross_entropy)


def test_views_use_the_training_s_box_rule():
    """The views' boxes are augment.crop_boxes's (torchvision's RandomResizedCrop rule), seeded per frame: on a
    16:9 frame a global scale no 4:3 box can reach falls back to the centred 4:3 box, as in training."""
    crops = C.smoke().crops
    frame = torch.randint(0, 256, (3, 90, 160), dtype=torch.uint8)
    _, boxes = local_views([frame, frame], (0.1, 0.2), 5, crops, seed=7)
    assert torch.equal(boxes[0], crop_boxes(90, 160, (0.1, 0.2), crops.ratio, 5, seed=7))
    assert torch.equal(boxes[1], crop_boxes(90, 160, (0.1, 0.2), crops.ratio, 5, seed=8))
    wide = dataclasses.replace(crops, global_scale=(0.8, 0.95))
    g = global_views(torch.stack([frame, frame]), wide, seed=2)
    centred = crop_views(frame, torch.tensor([[0, 20, 90, 120]]), wide.global_size, wide)
    assert torch.equal(g[0], centred[0]) and torch.equal(g[1], centred[0])


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
    assert torch.equal(b[1], crop_boxes(50, 30, (0.1, 0.2), crops.ratio, 3, seed=6))
    with pytest.raises(ValueError, match="at least one"):
        local_views([], (0.1, 0.2), 3, crops)
