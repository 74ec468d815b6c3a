"""One training step of the released INO code, transcribed for timing against ``inolib.run.trainer.train_step``.

It follows ``main_VOS.py`` (``train_one_epoch``) and ``losses.py`` of the official repository as released, loops
included (their cost is the point):

* the released tensor layout: frames first (``(T, B, ...)`` flattened t-major; locals ``(T, M, B, ...)``);
* the projection head on **every** token of every crop: class and patch tokens of the global crops (student and
  teacher) and of the local crops (student; their patch logits are discarded), in one head call per network;
* ``calc_cross_frame_dino``: per frame pair ``(n, T/2 + n)``, ``DINOLoss.forward`` over 18 student and 2 teacher
  chunks (34 terms, ``v == iq`` skipped), then ``update_center`` from that pair's 2B teacher rows;
* ``calc_mim_loss``: per frame, ``if mask.sum() == 0: continue`` (a host sync), boolean indexing of the masked
  rows, one CE term against the patch center, then ``update_center`` from that frame's masked teacher rows;
* ``calc_affine`` when ``mask.sum() != 0`` (a host sync): affinities of consecutive frames' normalised logits at
  the shared masked positions;
* ``math.isfinite(loss.item())``, fp16 autocast with a ``GradScaler`` (``unscale_`` before clipping), DINO's
  ``clip_gradients`` (per parameter tensor: ``norm.item()`` and a Python comparison), ``optimizer.zero_grad()``
  that zeroes (torch 1.7), and the EMA as a Python loop over parameters.

The backbone forward is inolib's ViT: the released boolean index-put of a float mask token into bf16/fp16
embeddings fails under autocast on recent PyTorch; inolib replaces the masked patch embeddings with
``torch.where``, the same values. Centers are all-reduced in the released code; in one process that is the
identity, so it is left out.

``tests/test_gpu_check.py`` checks that these losses and center updates equal ``inolib.losses.INOLoss``
(``out_weighting="reference"``, ``center_update="released"``) and that a whole step equals ``train_step``.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ReleasedDINOLoss(nn.Module):
    """``DINOLoss`` of the released ``losses.py``: a (1, K) center buffer, momentum 0.9, the two forms used."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, teacher_temp: float = 0.04,
                 center_momentum: float = 0.9):
        super().__init__()
        self.student_temp, self.teacher_temp, self.center_momentum = student_temp, teacher_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def glb_local2glb(self, student_output: torch.Tensor, teacher_output: torch.Tensor, n_student: int,
                      n_teacher: int) -> torch.Tensor:
        """``forward(..., local2glb_only=False)``: every (teacher chunk iq, student chunk v != iq) CE term, averaged
        over the terms; then ``update_center`` from the teacher rows."""
        student_out = (student_output / self.student_temp).chunk(n_student)
        teacher_out = F.softmax((teacher_output - self.center) / self.teacher_temp, dim=-1).detach().chunk(n_teacher)
        total_loss, n_loss_terms = 0, 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue
                loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
                total_loss = total_loss + loss.mean()
                n_loss_terms += 1
        total_loss = total_loss / n_loss_terms
        self.update_center(teacher_output)
        return total_loss

    def local2glb_only(self, student_output: torch.Tensor, teacher_output: torch.Tensor) -> torch.Tensor:
        """``forward(..., local2glb_only=True, n_local=1, n_gloabl=1)``: one CE term, then ``update_center``."""
        q = F.softmax((teacher_output - self.center) / self.teacher_temp, dim=-1).detach()
        loss = torch.sum(-q * F.log_softmax(student_output / self.student_temp, dim=-1), dim=-1).mean()
        self.update_center(teacher_output)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        batch_center = torch.sum(teacher_output, dim=0, keepdim=True) / len(teacher_output)  # all-reduce: 1 process
        self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)


class ReleasedLosses(nn.Module):
    """The two DINOLoss instances (class and patch center) and the affinity temperatures of the released code."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, teacher_temp: float = 0.04,
                 aff_student_temp: float = 0.1, aff_teacher_temp: float = 0.04, center_momentum: float = 0.9):
        super().__init__()
        self.cls = ReleasedDINOLoss(out_dim, student_temp, teacher_temp, center_momentum)
        self.patch = ReleasedDINOLoss(out_dim, student_temp, teacher_temp, center_momentum)
        self.aff_student_temp, self.aff_teacher_temp = aff_student_temp, aff_teacher_temp

    def forward(self, s_cls: torch.Tensor, s_loc: torch.Tensor | None, s_patch: torch.Tensor | None,
                t_cls: torch.Tensor, t_patch: torch.Tensor | None, mask: torch.Tensor | None, T: int,
                B: int) -> dict[str, torch.Tensor]:
        """Released layout: s_cls, t_cls (T B, K); s_loc (T M B, K) or None; s_patch, t_patch (T B, N, K);
        mask bool (T B, N), one pattern shared by every clip and frame (the released masking). Returns loss, out,
        mim, aff."""
        out = self.cross_frame_dino(s_cls, s_loc, t_cls, T, B)
        zero = out.new_zeros(())
        mim = aff = zero
        if mask is not None and s_patch is not None:
            if mask.sum() != 0:  # main_VOS.py:340
                mim = self.mim(s_patch, t_patch, mask, T, B)
                aff = self.affine(s_patch, t_patch, mask, T, B)
        return {"loss": out + mim + aff, "out": out, "mim": mim, "aff": aff}

    def cross_frame_dino(self, s_cls, s_loc, t_cls, T, B):
        """``calc_cross_frame_dino``: pairs (n, T/2 + n), 18 student and 2 teacher chunks each."""
        K = s_cls.shape[-1]
        h = T // 2
        sg = s_cls.view(2, h, B, K).transpose(0, 1)  # (h, 2, B, K): the pairs
        tg = t_cls.view(2, h, B, K).transpose(0, 1)
        sl = None
        if s_loc is not None:
            M = s_loc.shape[0] // (T * B)
            sl = s_loc.view(2, h, M, B, K).transpose(0, 1)  # (h, 2, M, B, K)
        losses = []
        for n in range(h):
            chunks = [sg[n, 0], sg[n, 1]]
            if sl is not None:
                chunks += [sl[n, 0, j] for j in range(sl.shape[2])] + [sl[n, 1, j] for j in range(sl.shape[2])]
            student = torch.cat(chunks)
            teacher = torch.cat([tg[n, 0], tg[n, 1]])
            losses.append(self.cls.glb_local2glb(student, teacher, len(chunks), 2))
        return sum(losses) / len(losses)

    def mim(self, s_patch, t_patch, mask, T, B):
        """``calc_mim_loss``: per frame, the masked rows of all clips; mean over the frames with a mask."""
        N, K = s_patch.shape[-2:]
        sp, tp, m = s_patch.view(T, B, N, K), t_patch.view(T, B, N, K), mask.view(T, B, N)
        losses = []
        for i in range(T):
            if m[i].sum() == 0:
                continue
            losses.append(self.patch.local2glb_only(sp[i][m[i]], tp[i][m[i]]))
        return sum(losses) / len(losses)

    def affine(self, s_patch, t_patch, mask, T, B):
        """``calc_affine``: the shared masked positions, L2 over the logits, consecutive-frame affinities."""
        N, K = s_patch.shape[-2:]
        m = mask.view(T, B, N)
        xs = s_patch.view(T, B, N, K)[m].view(T, B, -1, K)  # (T, B, P, K): the same P positions everywhere
        xt = t_patch.detach().view(T, B, N, K)[m].view(T, B, -1, K)
        xs = F.normalize(xs.permute(1, 3, 0, 2), dim=1)  # (B, C, T, P)
        xt = F.normalize(xt.permute(1, 3, 0, 2), dim=1)
        a_s = torch.einsum("bctn,bctm->btnm", xs[:, :, :-1], xs[:, :, 1:])
        a_t = torch.einsum("bctn,bctm->btnm", xt[:, :, :-1], xt[:, :, 1:])
        p_t = F.softmax(a_t / self.aff_teacher_temp, dim=-1)
        return torch.sum(-p_t * F.log_softmax(a_s / self.aff_student_temp, dim=-1), dim=-1).mean()


def to_released_layout(global_crops: torch.Tensor, local_crops: torch.Tensor | None, mask: torch.Tensor | None):
    """inolib's (B, T, ...) batch as the released collation lays it out: (T B, ...), (T M B, ...), (T B, N)."""
    g = global_crops.transpose(0, 1).flatten(0, 1)
    loc = None if local_crops is None else local_crops.permute(1, 2, 0, 3, 4, 5).flatten(0, 2)
    m = None if mask is None else mask.transpose(0, 1).flatten(0, 1)
    return g, loc, m


def released_forward(net: nn.Module, global_crops: torch.Tensor, local_crops: torch.Tensor | None = None,
                     mask: torch.Tensor | None = None):
    """The released multi-crop wrapper on inolib's backbone and head: the head on every token of every crop.

    Inputs in the released layout (``to_released_layout``); ``mask`` (T B, N) masks the global crops.
    Returns the class logits of the global crops (T B, K), of the local crops (T M B, K) or None, and the patch
    logits of the global crops (T B, N, K). The local crops' patch logits are computed and dropped, as released.
    """
    bb = net.backbone
    tokens = []
    cls_g, patch_g = bb.encode(global_crops, mask)
    tokens.append(torch.cat([cls_g[:, None], patch_g], dim=1))
    if local_crops is not None:
        cls_l, patch_l = bb.encode(local_crops)
        tokens.append(torch.cat([cls_l[:, None], patch_l], dim=1))
    sizes = [t.shape[0] * t.shape[1] for t in tokens]
    logits = net.head(torch.cat([t.flatten(0, 1) for t in tokens])).split(sizes)
    out_g = logits[0].view(tokens[0].shape[0], tokens[0].shape[1], -1)
    cls_l = None
    if local_crops is not None:
        cls_l = logits[1].view(tokens[1].shape[0], tokens[1].shape[1], -1)[:, 0]
    return out_g[:, 0], cls_l, out_g[:, 1:]


def released_clip_gradients(model: nn.Module, clip: float) -> list[float]:
    """DINO's ``utils.clip_gradients``: per parameter tensor, its norm read back (``.item()``) and a Python test."""
    norms = []
    for _, p in model.named_parameters():
        if p.grad is not None:
            param_norm = p.grad.data.norm(2)
            norms.append(param_norm.item())
            clip_coef = clip / (param_norm + 1e-6)
            if clip_coef < 1:
                p.grad.data.mul_(clip_coef)
    return norms


@torch.no_grad()
def released_ema(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """``main_VOS.py:384-387``: the EMA as a loop over ``student.parameters()`` and ``teacher.parameters()``."""
    for param_q, param_k in zip(student.parameters(), teacher.parameters()):
        param_k.data.mul_(momentum).add_((1 - momentum) * param_q.detach().data)


def released_train_step(student: nn.Module, teacher: nn.Module, losses: ReleasedLosses,
                        optimizer: torch.optim.Optimizer, global_crops: torch.Tensor,
                        local_crops: torch.Tensor | None, mask: torch.Tensor | None, momentum: float,
                        clip_grad: float = 3.0, amp_dtype: torch.dtype | None = torch.float16,
                        scaler: torch.amp.GradScaler | None = None,
                        mark: Callable[[str], None] | None = None) -> dict[str, torch.Tensor]:
    """One released training step on inolib's (B, T, ...) batch (converted to the released layout first).

    ``mark(name)`` (optional) is called at the phase boundaries "forward" (networks and losses done),
    "backward", "optimizer" (unscale, clipping, step) and "ema". Returns the loss terms (detached).
    """
    B, T = global_crops.shape[:2]
    g, loc, m = to_released_layout(global_crops, local_crops, mask)
    student.train()
    with torch.autocast(g.device.type, dtype=amp_dtype or torch.float16, enabled=amp_dtype is not None):
        t_cls, _, t_patch = released_forward(teacher, g)  # the teacher's parameters need no grad
        s_cls, s_loc, s_patch = released_forward(student, g, loc, m)
        terms = losses(s_cls, s_loc, s_patch, t_cls, t_patch, m, T, B)
    loss = terms["loss"]
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"Loss is {loss.item()}, stopping training")
    if mark:
        mark("forward")
    optimizer.zero_grad(set_to_none=False)  # torch 1.7 zeroes the gradients
    if scaler is None:
        loss.backward()
        if mark:
            mark("backward")
        if clip_grad:
            released_clip_gradients(student, clip_grad)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        if mark:
            mark("backward")
        if clip_grad:
            scaler.unscale_(optimizer)  # unscale the gradients of the optimizer's params in place
            released_clip_gradients(student, clip_grad)
        scaler.step(optimizer)
        scaler.update()
    if mark:
        mark("optimizer")
    released_ema(student, teacher, momentum)
    if mark:
        mark("ema")
    return {k: v.detach() for k, v in terms.items()}


def released_cosine(base, final, epochs, niter, warmup_epochs=0, start_warmup=0.0):
    """DINO/INO utils.cosine_scheduler, transcribed with numpy."""
    warmup_iters = warmup_epochs * niter
    warm = np.linspace(start_warmup, base, warmup_iters) if warmup_epochs > 0 else np.array([])
    iters = np.arange(epochs * niter - warmup_iters)
    sched = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warm, sched))
