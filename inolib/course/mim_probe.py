"""Masked image modelling, measured: how well a student predicts its teacher at masked patches (Sec. 3.3, Eq. 3).

Training computes L_in_mim only at the masked positions (:func:`inolib.losses.mim_loss`, fed by
:class:`inolib.model.INONetwork`, which runs the head there only). To look at what the loss compares, these
functions run the head on EVERY patch of the student's masked input and of the teacher's clean input, so that the
masked positions (the loss) and the unmasked ones (what a loss over all tokens would add) can be set side by side.

Shapes: clips (B, T, 3, H, W); N = (H / p) * (W / p) patches; K = head output dimension.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import MaskConfig
from ..losses import student_log_probs, teacher_probs
from ..masking import make_mask


def _check(clips: torch.Tensor, mask: torch.Tensor, center: torch.Tensor) -> None:
    if clips.dim() != 5 or clips.shape[2] != 3:
        raise ValueError(f"clips must be (B, T, 3, H, W), got {tuple(clips.shape)}")
    if mask.dtype != torch.bool or mask.dim() != 3 or mask.shape[:2] != clips.shape[:2]:
        raise ValueError(f"mask must be bool (B, T, N) for clips {tuple(clips.shape[:2])}, got "
                         f"{mask.dtype} {tuple(mask.shape)}")
    if center.dim() != 2 or center.shape[0] != 1:
        raise ValueError(f"center must be (1, K), got {tuple(center.shape)}")


@torch.no_grad()
def masked_predictions(student: nn.Module, teacher: nn.Module, clips: torch.Tensor, mask: torch.Tensor,
                       center: torch.Tensor, student_temp: float = 0.1, teacher_temp: float = 0.04) -> dict:
    """Teacher patch distributions (clean input) and student predictions (masked input) at every patch (Eq. 3).

    ``student``, ``teacher``: :class:`inolib.model.INONetwork` (may be the same one); ``clips`` (B, T, 3, H, W)
    normalised; ``mask`` bool (B, T, N), True = mask token; ``center`` (1, K) teacher patch center.
    Returns ``{"teacher": q, "student": log p}`` (B, T, N, K) and ``"ce"`` (B, T, N) = -sum_k q log p (nats),
    whose mean over masked positions, averaged over frames, is :func:`inolib.losses.mim_loss`.
    """
    # ce matches mim_loss because every frame has the same number of masked patches under both masking schemes.
    _check(clips, mask, center)
    B, T = clips.shape[:2]
    x = clips.flatten(0, 1)  # (B*T, 3, H, W)
    s_logits = student.patch_logits(x, mask.flatten(0, 1))  # (B*T, N, K): masked input
    if s_logits.shape[1] != mask.shape[-1]:
        raise ValueError(f"mask has {mask.shape[-1]} patches per frame, the clips give {s_logits.shape[1]}")
    q = teacher_probs(teacher.patch_logits(x), center, teacher_temp)  # (B*T, N, K): clean input
    logp = student_log_probs(s_logits, student_temp)
    ce = -(q * logp).sum(-1)  # (B*T, N)
    K = q.shape[-1]
    return {"teacher": q.view(B, T, -1, K), "student": logp.view(B, T, -1, K), "ce": ce.view(B, T, -1)}


def mim_by_ratio(student: nn.Module, teacher: nn.Module, clips: torch.Tensor, center: torch.Tensor,
                 ratios, mode: str = "random", draws: int = 3, seed: int = 0, student_temp: float = 0.1,
                 teacher_temp: float = 0.04) -> list[dict]:
    """The cross-entropy of masked and unmasked patches as the masking ratio grows.

    For each ratio r in ``ratios``, ``draws`` masks of exactly r (``mode``: "random" or "block", always masked)
    are drawn from a generator seeded with ``seed``. Returns one record per ratio: ``{"ratio", "mim"`` (mean
    cross-entropy over masked patches, i.e. L_in_mim), ``"unmasked"`` (over the other patches, nan at r = 1),
    ``"all_tokens"`` (over every patch: a loss that forgets the mask), ``"masked_patches"`` (per frame)``}``.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if not ratios:
        raise ValueError("ratios must hold at least one ratio")
    B, T, _, H, W = clips.shape
    p = student.backbone.patch_embed.patch_size[0]
    grid = (H // p, W // p)
    gen = torch.Generator().manual_seed(seed)
    records = []
    for r in ratios:
        if not 0 < r <= 1:
            raise ValueError(f"every ratio must be in (0, 1], got {r}")
        cfg = MaskConfig(mode=mode, prob=1.0, ratio=(float(r), float(r)))
        sums = {"mim": 0.0, "unmasked": 0.0, "all_tokens": 0.0, "masked_patches": 0.0}
        for _ in range(draws):
            mask = make_mask(cfg, B, T, grid, gen)
            ce = masked_predictions(student, teacher, clips, mask, center, student_temp, teacher_temp)["ce"]
            sums["mim"] += float(ce[mask].mean()) if mask.any() else 0.0
            sums["unmasked"] += float(ce[~mask].mean()) if (~mask).any() else float("nan")
            sums["all_tokens"] += float(ce.mean())
            sums["masked_patches"] += float(mask.sum(-1).float().mean())
        records.append({"ratio": float(r), **{k: v / draws for k, v in sums.items()}})
    return records
