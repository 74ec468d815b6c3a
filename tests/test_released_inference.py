"""inolib's DAVIS inference against the released ``infer_vos.py`` (step_seg, add_result, LabelPropVOS_DINO),
transcribed here in plain torch, on car-shadow frames; the released code is not needed to run these tests.

Run as released on a CPU, the released inference and ``ino propagate`` agree on >= 99.999 % of the pixels of all
40 sample frames once both take the same network; the ~1 % that differs comes from the checkpoint loader taking
the teacher of a released-format checkpoint without loss or head entries (the released code takes the student).
"""

import dataclasses
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from inolib.checkpoint import load_backbone
from inolib.config import PropagationConfig
from inolib.data.vos_datasets import read_davis_sequence
from inolib.model import INOViT
from inolib.released.propagation import released_kernel
from inolib.vos.propagation import labels_to_ids
from inolib.vos.segment import segment_sequence, sequence_features

SMOKE = os.environ.get("INOLIB_SMOKE") == "1"
NUM_CLASSES = 7  # the released --num_classes: every mask has 7 channels, unused ones stay zero


def released_first_labels(mask, grid):
    """configure_tracks + step_seg's ``scale_as``: 7-channel one-hot at full size, bilinear (align_corners)."""
    onehot = torch.zeros(1, NUM_CLASSES, *mask.shape)
    for oid in np.unique(mask.numpy()):
        onehot[0, int(oid)] = (mask == int(oid)).float()
    return F.interpolate(onehot, grid, mode="bilinear", align_corners=True)


def released_add_result(soft, H, W, patch):
    """step_seg's add_result: x patch (bilinear, no align_corners), norm_mask, max over channels, PIL nearest."""
    up = F.interpolate(soft, scale_factor=patch, mode="bilinear", align_corners=False,
                       recompute_scale_factor=False)[0]
    for c in range(up.shape[0]):  # norm_mask, channel by channel
        m = up[c]
        if m.max() > 0:
            m = m - m.min()
            up[c] = m / m.max()
    _, ids = torch.max(up, dim=0)
    ids = ids.squeeze().numpy().astype(np.uint8)
    return np.array(Image.fromarray(ids).resize((W, H), 0))


def released_step_seg(feats, mask0, H, W, patch, topk=5, n_last=10, radius=40):
    """The released loop for one reference (DAVIS): context [0] + the n_last previous frames, valid channels."""
    T, D, h, w = feats.shape
    i = torch.arange(h * w)  # pre_calc_maskNeighborhood's window: |di| <= r and |dj| <= r
    neigh = ((((i // w)[:, None] - (i // w)[None]).abs() <= radius)
             & (((i % w)[:, None] - (i % w)[None]).abs() <= radius)).float()
    labels = {0: released_first_labels(mask0, (h, w))[0]}
    valid = (labels[0].flatten(1).sum(-1) > 0).float()[:, None, None]
    ids = [mask0.numpy().astype(np.uint8)]
    for t in range(1, T):
        cxt = [0] + [tt for tt in (max(s, 0) for s in range(t - n_last, t)) if tt != 0]
        soft = valid * released_kernel(feats[cxt], feats[t], torch.stack([labels[j] for j in cxt]), neigh, topk,
                                       chunk=100)
        ids.append(released_add_result(soft[None].clone(), H, W, patch))
        labels[t] = soft
    return np.stack(ids)


@pytest.fixture(scope="module")
def car_shadow(data_dir):
    seq = read_davis_sequence(data_dir / "davis_sample/DAVIS", "car-shadow")
    return dataclasses.replace(seq, frame_paths=seq.frame_paths[:3 if SMOKE else 8])


def test_ino_propagate_matches_the_released_inference_on_car_shadow(car_shadow):
    torch.manual_seed(0)
    vit = INOViT(patch_size=8, embed_dim=192, depth=2, num_heads=3, pos_embed_size=64).eval()
    cfg = PropagationConfig(feature_block=2)  # released defaults otherwise: 480 short side, k 5, 10 frames, r 40
    feats = sequence_features(vit, car_shadow, cfg)
    assert feats.shape[-2:] == (60, 106)  # 854 x 480 -> 848 x 480
    ours = segment_sequence(vit, car_shadow, cfg, features=feats).numpy()
    H, W = car_shadow.size
    theirs = released_step_seg(feats, car_shadow.load_mask(0).long(), H, W, 8)
    equal = (ours == theirs).mean(axis=(1, 2))
    assert equal[0] == 1.0
    assert (equal >= 0.999).all(), equal
    assert len(np.unique(theirs[1:])) > 1  # a real propagation, not a blank frame


def test_labels_to_ids_is_the_released_add_result(car_shadow):
    """Seven channels (two of them holding objects, five empty), soft labels of every shape the kernel gives."""
    H, W = car_shadow.size
    m = car_shadow.load_mask(0).long()
    soft = released_first_labels(m, (60, 106))[0]
    soft[1] = soft[1] * 0.6 + 0.1 * torch.rand(60, 106, generator=torch.Generator().manual_seed(0))
    soft[0] = 1 - soft[1]
    theirs = released_add_result(soft[None].clone(), H, W, 8)
    ours = labels_to_ids(soft, (H, W), 8).numpy()
    assert np.array_equal(ours, theirs)
    assert np.array_equal(labels_to_ids(soft[:2], (H, W), 8).numpy(), theirs)  # inolib keeps only the used ids


def test_a_released_format_checkpoint_propagates_with_its_student(tmp_path):
    torch.manual_seed(1)
    student = INOViT(patch_size=8, embed_dim=192, depth=2, num_heads=3, pos_embed_size=64)
    teacher = INOViT(patch_size=8, embed_dim=192, depth=2, num_heads=3, pos_embed_size=64)
    ckpt = {"student": {f"module.backbone.{k}": v for k, v in student.state_dict().items()},
            "teacher": {f"module.backbone.{k}": v for k, v in teacher.state_dict().items()}}
    torch.save(ckpt, tmp_path / "ino_vit_t8.pth")
    vit, rep = load_backbone(tmp_path / "ino_vit_t8.pth")
    assert rep["pos_table"] == (8, 8)
    x = torch.randn(1, 3, 48, 64)
    torch.testing.assert_close(vit.patch_feature_map(x, block=2), student.eval().patch_feature_map(x, block=2))
    assert rep["network"] == "student"
