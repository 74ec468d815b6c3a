"""Teacher centering (Sec. 3.1, after DINO): running means subtracted from the teacher's logits.

Two centers, as in the released code (ref §3.5): one for class-token logits (used by L_out_g2g and
L_out_l2g) and one for patch-token logits (used by L_in_mim). Both use momentum 0.9:
``c <- m * c + (1 - m) * batch_mean``.

Deliberate simplification: here each center is updated ONCE per training step, from all of the
step's teacher outputs (class: every global crop's class logits; patch: the teacher patch logits at
the masked positions). The released code updates the class center once per frame pair (twice per
step for L=4, each time from that pair's logits) and the patch center once per frame (four times per
masked step). With equal-size updates the difference is only how the momentum compounds within a
step. When a process group is initialised the sums and counts are all-reduced, so every rank keeps
the same centers; a plain single process needs no ``torch.distributed`` at all.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .distributed import ready


class Center(nn.Module):
    """Class and patch centers, buffers ``cls`` (1, K) and ``patch`` (1, K)."""

    def __init__(self, dim: int, momentum: float = 0.9):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"center momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("cls", torch.zeros(1, dim))
        self.register_buffer("patch", torch.zeros(1, dim))

    @torch.no_grad()
    def update(self, teacher_cls: torch.Tensor, teacher_patches: torch.Tensor | None = None,
               mask: torch.Tensor | None = None) -> None:
        """Move the centers toward this step's teacher means.

        Args:
            teacher_cls: (..., K) class logits of every global crop, e.g. (B, T, K).
            teacher_patches: optional (B, T, N, K) patch logits (full or compact layout).
            mask: bool (B, T, N), the positions whose logits enter the patch center. With no masked
                position anywhere (in any process) the patch center is left unchanged.
        """
        K = self.cls.shape[-1]
        cls_rows = teacher_cls.reshape(-1, K).float()
        cls_sum = cls_rows.sum(0)  # (K,)
        cls_cnt = cls_sum.new_tensor([cls_rows.shape[0]])
        if teacher_patches is not None and mask is not None:
            w = mask.to(teacher_patches.device, torch.float32)  # (B, T, N)
            with torch.autocast(device_type=w.device.type, enabled=False):  # keep the sum in float32
                patch_sum = torch.einsum("btn,btnk->k", w, teacher_patches.float())
            patch_cnt = w.sum().reshape(1)
        else:
            patch_sum = cls_sum.new_zeros(K)
            patch_cnt = cls_sum.new_zeros(1)
        stats = torch.cat([cls_sum, cls_cnt, patch_sum, patch_cnt])  # one all-reduce for everything
        if ready():
            dist.all_reduce(stats)
        cls_sum, cls_cnt, patch_sum, patch_cnt = stats.split([K, 1, K, 1])
        m = self.momentum
        self.cls.mul_(m).add_((cls_sum / cls_cnt.clamp(min=1)).unsqueeze(0), alpha=1 - m)
        new_patch = m * self.patch + (1 - m) * (patch_sum / patch_cnt.clamp(min=1)).unsqueeze(0)
        self.patch.copy_(torch.where(patch_cnt > 0, new_patch, self.patch))  # no host sync
