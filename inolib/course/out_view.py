r"""Out-view agreement of class tokens: does a view of one frame point to the right view of another frame?

The out-generative losses (out g2g, Eq. 1; out l2g, Eq. 2) ask the student's class token of one view (a global
crop of frame n, or a small local crop) to predict the teacher's class distribution of a *global* crop of the
paired frame. A trained network should therefore give a view and its partner similar class tokens, and views of
other clips different ones. This module measures that on real frames with backbones only (the shipped checkpoint
keeps no projection heads), as a retrieval among candidate teacher views:

    views_s = global_views(frames_a, cfg.crops, seed=0)       # (R, 3, S, S) student inputs
    views_t = global_views(frames_b, cfg.crops, seed=1)       # (C, 3, S, S) candidate teacher targets
    P = match_probs(class_tokens(student, views_s), class_tokens(teacher, views_t))   # (R, C), rows sum to 1
    partner_cross_entropy(P, targets)                         # mean -log P[r, targets[r]] (nats)

``match_probs`` subtracts each set's mean token (the feature-space counterpart of the teacher's centering: a
direction shared by every view carries no information), L2-normalises, and takes a softmax of the cosine
similarities at ``temperature`` over the candidates. It is a probe, not INO's loss: the loss compares K-dimensional
head outputs; the probe compares backbone class tokens across a handful of clips.

The crops (``global_views``, ``local_views``, ``crop_views``) are the training's geometry without its colour
augmentation, seeded so a figure is the same on every run: boxes drawn by :func:`inolib.augment.crop_boxes`
(torchvision's ``RandomResizedCrop`` rule: an area fraction and an aspect ratio, ten tries, then the centred
fallback), resized (bicubic, antialiased) and normalised with the crop settings' mean and std.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..augment import crop_boxes
from ..config import CropConfig


def _check_frames(frames: torch.Tensor, name: str, dim: int) -> None:
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8 or frames.dim() != dim \
            or frames.shape[-3] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        want = "(T, 3, H, W)" if dim == 4 else "(3, H, W)"
        raise ValueError(f"{name} must be a uint8 tensor {want}, got {getattr(frames, 'dtype', '')} {shape}")


def crop_views(frame: torch.Tensor, boxes: torch.Tensor, size: int, crops: CropConfig) -> torch.Tensor:
    """Cut ``boxes`` (n, 4) ``(top, left, h, w)`` out of a uint8 frame (3, H, W), resize each to size x size
    (bicubic, antialiased, as the training crops) and normalise with ``crops.mean``/``crops.std``:
    float (n, 3, size, size), the network's input."""
    _check_frames(frame, "frame", 3)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (n, 4) rows (top, left, h, w), got {tuple(boxes.shape)}")
    H, W = frame.shape[-2:]
    top, left, h, w = boxes.long().unbind(1)
    if bool((top < 0).any() | (left < 0).any() | (h < 1).any() | (w < 1).any() | (top + h > H).any()
            | (left + w > W).any()):
        raise ValueError(f"boxes must lie inside the frame ({H} x {W}), got {boxes.tolist()}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    mean = torch.tensor(crops.mean).view(3, 1, 1)
    std = torch.tensor(crops.std).view(3, 1, 1)
    out = [TF.resized_crop(frame, int(t), int(l), int(hh), int(ww), [size, size],
                           interpolation=InterpolationMode.BICUBIC, antialias=True) for t, l, hh, ww in boxes.tolist()]
    return (torch.stack(out).float() / 255 - mean) / std


def global_views(frames: torch.Tensor, crops: CropConfig, seed: int = 0) -> torch.Tensor:
    """One global crop per frame, as in training without colour augmentation: uint8 (T, 3, H, W) ->
    float (T, 3, global_size, global_size); area fraction in ``crops.global_scale``, seeded per frame."""
    _check_frames(frames, "frames", 4)
    H, W = frames.shape[-2:]
    return torch.cat([crop_views(f, crop_boxes(H, W, crops.global_scale, crops.ratio, 1, seed=1000 * seed + i),
                                 crops.global_size, crops) for i, f in enumerate(frames)])


def local_views(frames: Sequence[torch.Tensor], scale: tuple[float, float], n: int, crops: CropConfig,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` local crops of each of S frames (uint8 (3, H, W) each, sizes may differ), area fraction drawn from
    ``scale``, resized to ``crops.local_size`` and normalised: float (S * n, 3, Sl, Sl), frame-major (the crops of
    frame 0 first), and their boxes int64 (S, n, 4) ``(top, left, h, w)``. Frame i uses seed ``seed + i``."""
    if len(frames) == 0:
        raise ValueError("frames must hold at least one frame")
    boxes = [crop_boxes(f.shape[-2], f.shape[-1], scale, crops.ratio, n, seed=seed + i) for i, f in enumerate(frames)]
    views = torch.cat([crop_views(f, b, crops.local_size, crops) for f, b in zip(frames, boxes)])
    return views, torch.stack(boxes)


@torch.no_grad()
def class_tokens(vit, views: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """The backbone's class token (after the final norm) of each view: (N, 3, S, S) -> (N, D), in batches of
    ``batch`` views, on the backbone's device, returned on the CPU."""
    if views.dim() != 4 or views.shape[1] != 3:
        raise ValueError(f"views must be (N, 3, S, S), got {tuple(views.shape)}")
    dev = next(vit.parameters()).device
    return torch.cat([vit.encode(views[i:i + batch].to(dev))[0].float().cpu() for i in range(0, len(views), batch)])


def match_probs(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, temperature: float = 0.1,
                center: bool = True) -> torch.Tensor:
    """Which teacher view does each student view point to? (R, D) and (C, D) class tokens -> (R, C)
    probabilities, rows summing to 1: ``softmax(cos(s_r - mean_s, t_c - mean_t) / temperature)`` over c.

    ``center=False`` skips the mean subtraction (then a direction common to all tokens, which a random network
    has, makes every view look alike)."""
    if student_tokens.dim() != 2 or teacher_tokens.dim() != 2 or student_tokens.shape[1] != teacher_tokens.shape[1]:
        raise ValueError(f"student_tokens {tuple(student_tokens.shape)} and teacher_tokens "
                         f"{tuple(teacher_tokens.shape)} must be (R, D) and (C, D)")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    s, t = student_tokens.float(), teacher_tokens.float()
    if center:
        s, t = s - s.mean(0, keepdim=True), t - t.mean(0, keepdim=True)
    return torch.softmax(F.normalize(s, dim=-1) @ F.normalize(t, dim=-1).T / temperature, dim=-1)


def partner_cross_entropy(probs: torch.Tensor, targets: Sequence[int] | torch.Tensor | None = None) -> float:
    """Mean over rows of ``-log probs[r, targets[r]]`` in nats (targets default: the diagonal, r -> r).
    0 when every view puts all its probability on its partner; log C when it cannot tell the C candidates apart."""
    if probs.dim() != 2:
        raise ValueError(f"probs must be (R, C), got {tuple(probs.shape)}")
    idx = torch.arange(probs.shape[0]) if targets is None else torch.as_tensor(targets, dtype=torch.long)
    if idx.shape != (probs.shape[0],) or bool((idx < 0).any() | (idx >= probs.shape[1]).any()):
        raise ValueError(f"targets must hold one column index in 0..{probs.shape[1] - 1} per row "
                         f"({probs.shape[0]}), got {idx.tolist()}")
    return float(-probs[torch.arange(len(idx)), idx].clamp_min(1e-12).log().mean())
