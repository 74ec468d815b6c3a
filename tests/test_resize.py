"""Frame resizing for propagation: the released inference's cv2 bilinear on uint8, reproduced in torch.

OpenCV (``opencv-python-headless``, in the ``dev`` extra) is the reference here; the package does not use it.
"""

import dataclasses

import numpy as np
import pytest
import torch

from inolib import config as C
from inolib.data import read_davis_sequence
from inolib.model import build_backbone
from inolib.released.propagation import released_input, released_size
from inolib.vos.propagation import FrameSize, Propagator, labels_to_grid, labels_to_ids
from inolib.vos.resize import frames_to_input, resize_cv2_linear
from inolib.vos.segment import extract_features, segment_sequence

SEQUENCES = ("blackswan", "car-shadow", "drift-chicane")


def frame_path(data_dir, name, index=10):
    return data_dir / "davis_sample/DAVIS/JPEGImages/480p" / name / f"{index:05d}.jpg"


@pytest.mark.parametrize("target", ["short side 240", "short side 480, floored to 8", "upscale 600x1064"])
def test_resize_matches_cv2_linear_on_davis_frames(data_dir, target):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (dev extra) is the reference")
    for name in SEQUENCES:
        bgr = cv2.imread(str(frame_path(data_dir, name)))
        H, W = bgr.shape[:2]
        h, w = {"short side 240": released_size(H, W, 240, 8), "upscale 600x1064": (600, 1064),
                "short side 480, floored to 8": released_size(H, W, 480, 8)}[target]
        want = torch.from_numpy(np.ascontiguousarray(cv2.resize(bgr, (w, h))[:, :, ::-1].transpose(2, 0, 1)))
        rgb = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1)))
        got = resize_cv2_linear(rgb[None], (h, w))[0]
        assert got.dtype == torch.uint8 and got.shape == want.shape == (3, h, w)
        diff = (got.int() - want.int()).abs()
        equal = (diff == 0).double().mean().item()
        msg = f"{name} {H}x{W} -> {h}x{w}: {equal:.6f} of the values equal cv2's, max difference {diff.max().item()}"
        assert diff.max().item() <= 1 and equal >= 0.999, msg


def test_resize_handles_tiny_and_odd_sizes_like_cv2():
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (dev extra) is the reference")
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (2, 3, 37, 53), dtype=torch.uint8, generator=g)
    for h, w in [(1, 1), (2, 3), (18, 26), (37, 53), (74, 106), (91, 17), (5, 200)]:
        got = resize_cv2_linear(img, (h, w))
        for b in range(2):
            want = cv2.resize(np.ascontiguousarray(img[b].permute(1, 2, 0).numpy()), (w, h))
            diff = (got[b].permute(1, 2, 0).int() - torch.from_numpy(want.reshape(h, w, 3)).int()).abs()
            assert diff.max().item() <= 1 and (diff == 0).double().mean().item() >= 0.99, (h, w)


def test_frame_size_is_the_released_one():
    for H in range(200, 1300, 7):
        for W in (H, H + 1, 854, 1280, 1920, 3 * H // 2):
            assert FrameSize.for_frame(H, W, 480, 8) == FrameSize(*released_size(H, W, 480, 8)), (H, W)
            assert FrameSize.for_frame(W, H, 480, 64, 8) == FrameSize(*released_size(W, H, 480, 64)), (W, H)
    assert FrameSize.for_frame(1490, 1490) == FrameSize(480, 480)  # int(1490 * (480 / 1490)) would give 479
    assert FrameSize.for_frame(480, 854, 480, 64, 8) == FrameSize(480, 832)  # DINO's protocol


def test_released_and_antialias_inputs_differ_and_a_bad_mode_names_the_flag(data_dir):
    seq = read_davis_sequence(data_dir / "davis_sample/DAVIS", "blackswan")
    frames = seq.load_frames([0, 1])
    size = (240, 424)
    released, smooth = frames_to_input(frames, size, "released"), frames_to_input(frames, size, "antialias")
    assert released.shape == smooth.shape == (2, 3, 240, 424) and released.dtype == smooth.dtype == torch.float32
    assert (released - smooth).abs().max() > 0.5  # skipped pixels vs averaged ones (a 2x downscale)
    std_red = (frames_to_input(frames, frames.shape[-2:], "released") * 0.228 + 0.485) * 255  # identity resize
    assert torch.allclose(std_red[:, 0], frames[:, 0].float(), atol=1e-3)
    with pytest.raises(ValueError, match="propagation.resize"):
        frames_to_input(frames, size, "cv2")
    with pytest.raises(ValueError, match="propagation.resize"):
        extract_features(torch.nn.Identity(), None, 1, FrameSize(*size), 1, resize="bilinear")  # before any read
    cfg = C.override(C.smoke(), {"propagation.resize": "nearest"}).propagation
    vit = build_backbone(C.smoke().model).eval()
    with pytest.raises(ValueError, match="propagation.resize"):
        segment_sequence(vit, seq, cfg)
    assert C.smoke().propagation.resize == C.tiny().propagation.resize == C.charades().propagation.resize == "released"


def released_pipeline(cv2, vit, seq, cfg, patch):
    """The released inference transcribed: cv2 preprocessing, one fp32 frame at a time, then our propagation."""
    H, W = seq.size
    C_ = max(seq.object_ids) + 1
    feats = [vit.patch_feature_map(released_input(cv2, p, cfg.short_side, cfg.round_to)[None], cfg.feature_block)[0]
             for p in seq.frame_paths]
    first = labels_to_grid(seq.load_mask(0).long(), C_, feats[0].shape[-2:], "bilinear")
    prop = Propagator(feats[0], first, topk=cfg.topk, num_context=cfg.num_context, radius=cfg.radius,
                      temperature=cfg.temperature)
    out = [seq.load_mask(0)]
    for f in feats[1:]:
        out.append(labels_to_ids(prop.step(f), (H, W), patch))
    return torch.stack(out)


@torch.no_grad()
def test_segment_sequence_matches_the_released_preprocessing_end_to_end(data_dir):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (dev extra) is the reference")
    seq = read_davis_sequence(data_dir / "davis_sample/DAVIS", "blackswan")
    seq = dataclasses.replace(seq, frame_paths=seq.frame_paths[:8])
    torch.manual_seed(0)
    model_cfg = dataclasses.replace(C.smoke().model, depth=3)
    vit = build_backbone(model_cfg).eval()
    cfg = C.PropagationConfig(short_side=240, feature_block=2, radius=12)
    want = released_pipeline(cv2, vit, seq, cfg, model_cfg.patch_size)
    agree = {}
    for mode in ("released", "antialias"):
        got = segment_sequence(vit, seq, dataclasses.replace(cfg, resize=mode))
        assert got.shape == want.shape
        agree[mode] = (got == want).double().mean().item()
    msg = f"share of pixels equal to the released pipeline's: {agree}"
    assert agree["released"] >= 0.999 and agree["antialias"] < agree["released"], msg


def test_frame_sizes_on_a_patch_14_grid():
    """DINOv2's patch 14 with the released multiple 8: both sides land on the patch grid (the long side on 56)."""
    assert FrameSize.for_frame(480, 854, 480, 8, 14) == FrameSize(476, 840)
    for H in range(100, 1300, 37):
        for W in (H, 854, 1920, 3 * H // 2):
            for short in (0, 240, 480):
                s = FrameSize.for_frame(H, W, short, 8, 14)
                assert s.height % 14 == 0 and s.width % 14 == 0 and min(s.height, s.width) > 0, (H, W, short)
                assert FrameSize.for_frame(H, W, short, 8, 8) == FrameSize.for_frame(H, W, short, 8), (H, W)
