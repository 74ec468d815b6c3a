"""Teacher centering (Sec. 3.1, after DINO): running means subtracted from the teacher's logits.

Two centers, as in the released code (two ``DINOLoss`` objects): one for class-token logits (used by L_out_g2g and
L_out_l2g) and one for patch-token logits (used by L_in_mim). Both use momentum 0.9:
``c <- m * c + (1 - m) * batch_mean``.

Two cadences (``loss.center_update``):

* ``"released"`` (default; what produced the paper's numbers, as released): the class center moves once
  per frame pair (pairs (n, T/2 + n), each from that pair's 2B teacher class logits) and the patch center
  once per masked frame (from that frame's masked teacher tokens), inside the loss, so a later pair or
  frame is scored against the already moved center. At L = 4 the step's effective momentum is 0.81 for
  the class center and 0.66 for the patch center. :meth:`Center.released` computes the whole sequence at
  once: the teacher outputs are known before any update, so each center is a closed-form geometric sum
  (:func:`sequential_centers`).
* ``"step"``: each center moves once per step from all of the step's teacher outputs (:meth:`Center.update`).

When a process group is initialised the sums and counts are all-reduced, so every rank keeps the same
centers; a plain single process needs no ``torch.distributed`` at all.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .distributed import ready


def sequential_centers(start: torch.Tensor, means: torch.Tensor, valid: torch.Tensor, momentum: float) -> torch.Tensor:
    """(S + 1, K) centers of S momentum updates ``c <- m c + (1 - m) mean`` applied in turn, in closed form (Sec. 3.1).

    ``start`` (1, K) is the initial center, ``means`` (S, K) the update targets, ``valid`` bool (S,) marks the
    updates made (the others leave the center). Row s is the center before update s, row S the final one;
    computed in float64, returned in ``start``'s dtype.

    Raises ValueError for mismatched shapes.
    """
    # c_s = m^n_s c_0 + (1 - m) sum_{j < s, valid_j} m^(n_s - n_j - 1) mean_j, n_s = valid updates before s.
    if start.dim() != 2 or start.shape[0] != 1 or means.dim() != 2 or means.shape[1] != start.shape[1]:
        raise ValueError(f"sequential_centers: start {tuple(start.shape)} must be (1, K) and means "
                         f"{tuple(means.shape)} (S, K)")
    if valid.shape != means.shape[:1]:
        raise ValueError(f"sequential_centers: valid {tuple(valid.shape)} must be ({means.shape[0]},)")
    S = means.shape[0]
    v = valid.to(torch.float64)
    n = torch.cat([v.new_zeros(1), v.cumsum(0)])  # (S + 1,) valid updates before each row
    m = torch.tensor(momentum, dtype=torch.float64, device=means.device)
    s_idx = torch.arange(S + 1, device=means.device)[:, None]
    j_idx = torch.arange(S, device=means.device)[None, :]
    expo = (n[:, None] - n[None, :S] - 1).clamp(min=0)  # (S + 1, S)
    applies = (j_idx < s_idx) & valid[None, :].bool()  # update j happened before row s
    weights = ((1 - m) * m ** expo) * applies
    out = m ** n[:, None] * start.to(torch.float64) + weights @ means.to(torch.float64)
    return out.to(start.dtype)


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

    @torch.no_grad()
    def released(self, teacher_cls: torch.Tensor, teacher_patches: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The released cadence: the centers each frame is scored with, and the centers after the step (Sec. 3.1).

        ``teacher_cls`` (B, T, K), T even (pairs (n, T/2 + n)); optional ``teacher_patches`` (B, T, N, K) (full or
        compact layout) with ``mask`` bool (B, T, N). Returns ``cls`` (T, K) (each frame's pair center before that
        pair's update), ``patch`` (T, K) (before the frame's own update) and ``cls_after`` / ``patch_after`` (1, K).
        The buffers are not changed (see :meth:`set`).
        """
        # A frame without masked tokens (in every process) leaves the patch center unchanged.
        if teacher_cls.dim() != 3 or teacher_cls.shape[1] % 2:
            raise ValueError(f"teacher_cls must be (B, T, K) with T even, got {tuple(teacher_cls.shape)}")
        B, T, K = teacher_cls.shape
        h = T // 2
        t = teacher_cls.float()
        pair_sum = t[:, :h].sum(0) + t[:, h:].sum(0)  # (h, K): frames n and T/2 + n
        pair_cnt = pair_sum.new_full((h,), 2.0 * B)
        if teacher_patches is not None and mask is not None:
            w = mask.to(teacher_patches.device, torch.float32)  # (B, T, N)
            with torch.autocast(device_type=w.device.type, enabled=False):
                frame_sum = torch.einsum("btn,btnk->tk", w, teacher_patches.float())  # (T, K)
            frame_cnt = w.sum(dim=(0, 2))  # (T,)
        else:
            frame_sum = pair_sum.new_zeros(T, K)
            frame_cnt = pair_sum.new_zeros(T)
        stats = torch.cat([pair_sum.flatten(), pair_cnt, frame_sum.flatten(), frame_cnt])  # one all-reduce
        if ready():
            dist.all_reduce(stats)
        pair_sum, pair_cnt, frame_sum, frame_cnt = stats.split([h * K, h, T * K, T])
        pair_mean = pair_sum.view(h, K) / pair_cnt[:, None]
        frame_mean = frame_sum.view(T, K) / frame_cnt.clamp(min=1)[:, None]
        m = self.momentum
        cls_seq = sequential_centers(self.cls, pair_mean, torch.ones(h, dtype=torch.bool, device=t.device), m)
        patch_seq = sequential_centers(self.patch, frame_mean, frame_cnt > 0, m)
        return {"cls": torch.cat([cls_seq[:h], cls_seq[:h]]), "patch": patch_seq[:T],
                "cls_after": cls_seq[h:], "patch_after": patch_seq[T:]}

    @torch.no_grad()
    def set(self, cls: torch.Tensor, patch: torch.Tensor) -> None:
        """Overwrite both centers with (1, K) tensors (e.g. ``released(...)["cls_after"]``)."""
        self.cls.copy_(cls)
        self.patch.copy_(patch)
