"""Per-frame multi-crop augmentation: shapes, value ranges, and flip/jitter only where the config says."""

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from inolib.augment import MultiCrop, global_transform, local_transform
from inolib.config import CropConfig
from inolib.data import read_frame_folder

MEAN = torch.tensor(CropConfig().mean).view(3, 1, 1)
STD = torch.tensor(CropConfig().std).view(3, 1, 1)


@pytest.fixture(scope="module")
def frame():
    root = Path(__file__).resolve().parents[1] / "data/davis_sample/DAVIS/JPEGImages/480p/blackswan"
    f = read_frame_folder(root, num_frames=1)[0]  # (3, 480, 854) real frame, not symmetric
    return f[:, :, 187:667].contiguous()  # square 480x480 so a full-frame crop is deterministic


def plain(frame, size):
    x = F.interpolate(frame[None].float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return ((x[0].round().clamp(0, 255) / 255) - MEAN) / STD


def test_shapes_and_value_ranges(frame):
    cfg = CropConfig()
    clip = frame[None].expand(4, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    g, l = MultiCrop(cfg)(clip)
    assert g.shape == (4, 3, 224, 224) and l.shape == (4, 8, 3, 64, 64)
    for x in (g, l):
        raw = x * STD + MEAN
        assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    # frames are cropped independently
    assert not torch.equal(g[0], g[1])


def test_global_crops_are_never_flipped_or_jittered(frame):
    cfg = CropConfig(global_scale=(1.0, 1.0), ratio=(1.0, 1.0))  # crop = whole frame: output is deterministic
    tf = global_transform(cfg)
    ref = plain(frame, 224)
    for seed in range(30):
        torch.manual_seed(seed)
        torch.testing.assert_close(tf(frame), ref, atol=0.06, rtol=0)


def test_flip_and_jitter_follow_the_config(frame):
    base = CropConfig(global_scale=(1.0, 1.0), local_scale=(1.0, 1.0), ratio=(1.0, 1.0), blur_p=0.0, grayscale_p=0.0)
    g_on = global_transform(dataclasses.replace(base, global_flip_jitter=True))
    ref = plain(frame, 224)
    changed = 0
    for seed in range(30):
        torch.manual_seed(seed)
        changed += not torch.allclose(g_on(frame), ref, atol=0.06)
    assert changed >= 20  # flip p=0.5 or jitter p=0.8: nearly always changed
    l_off = local_transform(dataclasses.replace(base, local_flip_jitter=False))
    ref_l = plain(frame, 64)
    for seed in range(10):
        torch.manual_seed(seed)
        torch.testing.assert_close(l_off(frame), ref_l, atol=0.06, rtol=0)
    l_on = local_transform(base)
    flips = 0
    for seed in range(40):
        torch.manual_seed(seed)
        out = l_on(frame)
        flips += not torch.allclose(out, ref_l, atol=0.06)
    assert flips >= 25


def test_grayscale_and_counts_come_from_the_config(frame):
    cfg = CropConfig(num_local=3, local_size=32, grayscale_p=1.0, global_size=96)
    torch.manual_seed(0)
    g, l = MultiCrop(cfg)(frame[None])
    assert g.shape == (1, 3, 96, 96) and l.shape == (1, 3, 3, 32, 32)
    raw = l * STD + MEAN
    torch.testing.assert_close(raw[:, :, 0], raw[:, :, 1], atol=2e-6, rtol=0)  # grey: equal channels
    g0, l0 = MultiCrop(dataclasses.replace(cfg, num_local=0))(frame[None])
    assert l0.shape == (1, 0, 3, 32, 32)


def test_crop_boxes_follow_the_scale_and_fall_back_on_wide_frames():
    from inolib.augment import crop_boxes

    b = crop_boxes(256, 340, (0.05, 0.8), (3 / 4, 4 / 3), 200, seed=0)
    assert b.shape == (200, 4)
    area = (b[:, 2] * b[:, 3]).float() / (256 * 340)
    assert area.min() > 0.04 and area.max() < 0.82                # the scale range, up to rounding
    assert torch.all(b[:, 0] + b[:, 2] <= 256) and torch.all(b[:, 1] + b[:, 3] <= 340)
    assert torch.equal(b, crop_boxes(256, 340, (0.05, 0.8), (3 / 4, 4 / 3), 200, seed=0))   # seeded
    # 16:9 frame, scale >= 0.8 and aspect <= 4/3: no box fits, every draw is the centred 4:3 fallback
    g = crop_boxes(480, 854, (0.8, 0.95), (3 / 4, 4 / 3), 50, seed=1)
    assert {tuple(r) for r in g.tolist()} == {(0, 107, 480, 640)}
    with pytest.raises(ValueError, match="scale"):
        crop_boxes(10, 10, (0.9, 0.5), (1, 1), 1)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="num"):
            crop_boxes(10, 10, (0.1, 0.5), (1, 1), bad)


def test_object_share_counts_the_object_inside_each_box():
    from inolib.augment import object_share

    mask = torch.zeros(10, 10, dtype=torch.uint8)
    mask[2:4, 2:6] = 1                                             # 8 object pixels
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 3, 4], [5, 5, 5, 5]])
    assert object_share(mask, boxes).tolist() == [1.0, 0.25, 0.0]
    with pytest.raises(ValueError, match="no object"):
        object_share(torch.zeros(4, 4), boxes[:1])
