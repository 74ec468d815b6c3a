"""One INO training step, and the collapse monitors (Sec. 3.1).

    student -> masked global crops + local crops -> L_INO -> backward -> clip -> optimizer step
    teacher <- EMA of the student; centers <- teacher outputs

The full training loop (schedules, AMP, DDP, checkpoints, logs) builds on :func:`train_step`.
"""

from __future__ import annotations

import torch
from torch import nn

from .losses import INOLoss
from .teacher import ema_update


@torch.no_grad()
def collapse_monitors(teacher_cls: torch.Tensor, center: torch.Tensor, teacher_temp: float) -> dict[str, float]:
    """Signs of collapse of the teacher's class targets (B, T, K) or (R, K).

    ``entropy``: mean entropy of one target (-> 0 when every target is one-hot: sharpening wins);
    ``batch_entropy``: entropy of the batch-mean target (-> 0 when all targets pick the same dimension:
    collapse to one output; -> log K when targets are uniform: centering wins);
    ``top_share``: the largest probability of the batch-mean target.
    """
    t = teacher_cls.reshape(-1, teacher_cls.shape[-1]).float()
    q = torch.softmax((t - center.float()) / teacher_temp, dim=-1)
    ent = -(q * q.clamp_min(1e-12).log()).sum(-1).mean()
    mean_q = q.mean(0)
    batch_ent = -(mean_q * mean_q.clamp_min(1e-12).log()).sum()
    return {"entropy": float(ent), "batch_entropy": float(batch_ent), "top_share": float(mean_q.max())}


def train_step(student: nn.Module, teacher: nn.Module, criterion: INOLoss, optimizer: torch.optim.Optimizer,
               global_crops: torch.Tensor, local_crops: torch.Tensor | None, mask: torch.Tensor | None,
               momentum: float, clip_grad: float = 0.0, update_center: bool = True,
               teacher_temp: float | None = None) -> dict[str, float]:
    """One optimisation step on a batch; returns the loss terms and the collapse monitors as floats.

    Args:
        global_crops: (B, T, 3, Hg, Wg); local_crops: (B, T, M, 3, Hl, Wl) or None; mask: bool (B, T, N) or None.
        momentum: EMA momentum of the teacher for this step.
        clip_grad: max gradient norm of each parameter tensor (the released code's per-parameter
            clipping, ref §5); 0 disables it.
        update_center: False freezes the centers (to show collapse without centering).
    """
    student.train()
    s = student(global_crops, local_crops, mask)
    with torch.no_grad():
        t = teacher(global_crops, None, mask, apply_mask=False)
    center_before = criterion.center.cls.clone()
    terms = criterion(s, t, update_center=update_center, teacher_temp=teacher_temp)
    loss = terms["loss"]
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {float(loss.detach())}: "
                                 + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items()))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad > 0:
        for p in student.parameters():
            if p.grad is not None:
                torch.nn.utils.clip_grad_norm_(p, clip_grad)
    optimizer.step()
    ema_update(student, teacher, momentum)
    out = {k: float(v.detach()) for k, v in terms.items()}
    tt = criterion.cfg.teacher_temp if teacher_temp is None else teacher_temp
    out.update(collapse_monitors(t["cls_global"], center_before, tt))
    return out
