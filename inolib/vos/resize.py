"""Frames -> network input for label propagation: resizing and normalisation as the released inference does.

Two modes (``propagation.resize``):

- ``"released"``: what the released INO inference (and DINO's eval_video_segmentation) does. OpenCV's
  ``cv2.resize(img, (w, h))``, i.e. INTER_LINEAR on the uint8 frame: bilinear with half-pixel centres, no
  antialiasing, 11-bit fixed-point weights and OpenCV's rounding back to uint8. Then /255 and normalisation
  with mean (0.485, 0.456, 0.406) and std (0.228, 0.224, 0.225). :func:`resize_cv2_linear` reproduces the
  OpenCV arithmetic in torch (bit-exact on the DAVIS frames the tests use), so OpenCV is not needed.
- ``"antialias"``: torch's antialiased bilinear on float frames, normalised with the training std
  (0.229, 0.224, 0.225). Smoother when downscaling a lot; not what the released numbers were computed with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import IMAGENET_MEAN, IMAGENET_STD, INFERENCE_STD

RESIZE_MODES = ("released", "antialias")
_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: weights are integers out of 2048


def check_resize_mode(mode: str) -> str:
    """Return ``mode`` if it is one of ``RESIZE_MODES``; ValueError naming ``propagation.resize`` otherwise."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"propagation.resize must be one of {RESIZE_MODES}, got {mode!r}")
    return mode


def _linear_taps(src: int, dst: int, clamp_weights: bool, device) -> tuple[torch.Tensor, ...]:
    """OpenCV's INTER_LINEAR taps along one axis: source indices i0, i1 (dst,) and integer weights w0, w1 (dst,).

    The position ``(d + 0.5) * scale - 0.5`` is computed in double and rounded to float, as OpenCV does; the
    weights are ``round(2048 * (1 - f))`` and ``round(2048 * f)``. Along x, a position left of the first or right
    of the last pixel is clamped to it with weight (2048, 0) (``clamp_weights``); along y OpenCV keeps the
    fractional weights and only clamps the row indices, so the two taps read the same row.
    """
    scale = 1.0 / (dst / src)  # OpenCV: scale = 1 / inv_scale, inv_scale = dst / src
    pos = ((torch.arange(dst, dtype=torch.float64, device=device) + 0.5) * scale - 0.5).float()
    i0 = torch.floor(pos)
    frac = pos - i0
    i0 = i0.long()
    if clamp_weights:
        outside = (i0 < 0) | (i0 >= src - 1)
        frac = torch.where(outside, torch.zeros_like(frac), frac)
        i0 = i0.clamp(0, src - 1)
    one = float(1 << _COEF_BITS)
    w0 = torch.round((1 - frac) * one).to(torch.int32)  # round half to even, as cvRound
    w1 = torch.round(frac * one).to(torch.int32)
    return i0.clamp(0, src - 1), (i0 + 1).clamp(0, src - 1), w0, w1


def resize_cv2_linear(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``cv2.resize(img, (w, h))`` (INTER_LINEAR) on uint8 frames, in torch: uint8 (B, C, H, W) -> uint8 (B, C, h, w).

    Separable fixed-point bilinear as OpenCV computes it: a horizontal pass with 11-bit weights into int32, then
    a vertical pass with OpenCV's vectorised rounding ``((w0 * (s0 >> 4)) >> 16 + (w1 * (s1 >> 4)) >> 16 + 2) >> 2``.
    Upscaling and downscaling alike (no antialiasing: a downscale by more than 2 skips pixels, as OpenCV does).
    Runs on the frames' device.
    """
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8 or frames.dim() != 4:
        got = f"{frames.dtype} {tuple(frames.shape)}" if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"frames must be a uint8 tensor (B, C, H, W), got {got}")
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be a positive (height, width), got {tuple(size)}")
    H, W = frames.shape[-2:]
    if H < 1 or W < 1:
        raise ValueError(f"frames must have a positive size, got {H}x{W}")
    dev = frames.device
    x0, x1, a0, a1 = _linear_taps(W, w, True, dev)
    y0, y1, b0, b1 = _linear_taps(H, h, False, dev)
    src = frames.to(torch.int32)
    rows = src[..., x0] * a0 + src[..., x1] * a1  # (B, C, H, w), values up to 255 * 2048
    b0, b1 = b0[:, None], b1[:, None]
    out = (((b0 * (rows[..., y0, :] >> 4)) >> 16) + ((b1 * (rows[..., y1, :] >> 4)) >> 16) + 2) >> 2
    return out.clamp_(0, 255).to(torch.uint8)


def frames_to_input(frames: torch.Tensor, size: tuple[int, int], resize: str = "released") -> torch.Tensor:
    """uint8 RGB frames (B, 3, H, W) -> normalised float32 network input (B, 3, h, w), ``size`` = (h, w).

    ``resize="released"``: :func:`resize_cv2_linear`, then /255, minus the mean, divided by the released
    inference std (0.228, 0.224, 0.225). ``"antialias"``: /255, torch antialiased bilinear, training std.
    """
    check_resize_mode(resize)
    if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (B, 3, H, W), got shape {tuple(getattr(frames, 'shape', ()))}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    dev = frames.device
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    if resize == "released":
        std = torch.tensor(INFERENCE_STD, device=dev).view(1, 3, 1, 1)
        x = resize_cv2_linear(frames, size).float().div_(255)
    else:
        std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
        x = F.interpolate(frames.float().div_(255), size=tuple(int(s) for s in size), mode="bilinear",
                          align_corners=False, antialias=True)
    return (x - mean) / std  # subtract then divide, as the released color_normalize
