r"""The four generative losses of INO (Sec. 3.2-3.4) and their sum.

Notation (all logits are post-head and pre-softmax):
    B clips, T = L frames per clip, M local crops per frame, N patches per global crop, K = head out_dim.
    Teacher targets are ``softmax((t - center) / teacher_temp)`` (stop-gradient); student predictions
    are ``log_softmax(s / student_temp)``. ``center`` is (1, K), or (T, K) with one center per frame (the
    released cadence, where later frame pairs see a center already moved by earlier ones); the loss
    functions never update it (:class:`INOLoss` does, see :mod:`inolib.center`). Losses are computed in at least float32, also under autocast.

    out g2g  (Eq. 1)  frame pairs (n, T/2 + n): teacher of one frame -> student of the other
    out l2g  (Eq. 2)  per pair, both frames' teacher globals -> all 2M local crops of the pair
    in mim   (Eq. 3)  teacher (unmasked input) -> student (mask tokens) at masked patches
    in aff   (Eq. 4-5) affinity of consecutive frames' masked patches, teacher -> student

Where the released code differs from the paper's equations these functions follow the code
(``docs/released_code.md``, "Losses and their weighting"): means instead of sums, and, in :class:`INOLoss`
with ``out_weighting="reference"``, one average over all g2g and l2g terms of a pair.

Every masked loss takes its mask as bool (B, T, N). The patch tensors may be the full layout
(B, T, N, K) or the compact layout of :func:`inolib.masking.masked_positions` (B, T, P, K) with its
``valid`` mask: both give the same value.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .center import Center
from .config import LossConfig

# Fill value for affinity logits of unmasked columns: exp(_NEG - max) is exactly 0 in float32.
_NEG = -1e9


def _atleast_f32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def _full_precision(x: torch.Tensor):
    """Context that keeps matmuls on ``x``'s device out of autocast (they would run in bf16/fp16)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def teacher_probs(teacher: torch.Tensor, center: torch.Tensor, teacher_temp: float) -> torch.Tensor:
    """Centered, sharpened, detached teacher distribution: softmax((t - center) / teacher_temp)."""
    t = _atleast_f32(teacher.detach())
    return F.softmax((t - center.to(t.dtype)) / teacher_temp, dim=-1)


def student_log_probs(student: torch.Tensor, student_temp: float) -> torch.Tensor:
    """log_softmax(s / student_temp)."""
    return F.log_softmax(_atleast_f32(student) / student_temp, dim=-1)


def _per_frame(center: torch.Tensor, T: int, name: str) -> torch.Tensor:
    """A (1, K) center, or a (T, K) one per frame; other shapes raise naming the loss."""
    if center.dim() != 2 or center.shape[0] not in (1, T):
        raise ValueError(f"{name}: center {tuple(center.shape)} must be (1, K) or (T={T}, K)")
    return center


def _check_pairs(T: int) -> int:
    if T < 2 or T % 2:
        raise ValueError(f"frame pairs (n, T/2 + n) need an even number of frames >= 2, got T={T}")
    return T // 2


def frame_pairs(T: int) -> list[tuple[int, int]]:
    """The frame pairs of out g2g and out l2g (Eq. 1-2): ``[(n, T/2 + n) for n < T/2]`` (0-based), the
    pairing the loss functions use when they split the T frames into halves and zip them."""
    if isinstance(T, bool) or not isinstance(T, int):
        raise ValueError(f"T must be a whole number of frames, got {T!r}")
    h = _check_pairs(T)
    return [(n, h + n) for n in range(h)]


def g2g_loss(student_global: torch.Tensor, teacher_global: torch.Tensor, center: torch.Tensor,
             student_temp: float, teacher_temp: float) -> torch.Tensor:
    """L_out_g2g (Eq. 1), global-to-global over frame pairs.

    Args:
        student_global, teacher_global: (B, T, K) class logits of the global crops, T even.
        center: (1, K) class center, or (T, K): one per frame (the released cadence, see :class:`INOLoss`).
    Frames are split into halves and zipped into pairs (n, T/2 + n); each pair gives two cross terms
    (teacher of frame n -> student of frame T/2 + n, and the reverse). Each term is the cross-entropy
    averaged over clips; the result is the mean over all T terms. Returns a scalar.
    """
    if student_global.shape != teacher_global.shape or student_global.dim() != 3:
        raise ValueError(f"g2g_loss: student {tuple(student_global.shape)} and teacher "
                         f"{tuple(teacher_global.shape)} must both be (B, T, K)")
    h = _check_pairs(student_global.shape[1])
    q = teacher_probs(teacher_global, _per_frame(center, student_global.shape[1], "g2g_loss"), teacher_temp)
    logp = student_log_probs(student_global, student_temp)  # (B, T, K)
    logp_partner = torch.cat([logp[:, h:], logp[:, :h]], dim=1)  # frame n <-> frame n + T/2
    return -(q * logp_partner).sum(-1).mean()


def l2g_loss(student_local: torch.Tensor, teacher_global: torch.Tensor, center: torch.Tensor,
             student_temp: float, teacher_temp: float) -> torch.Tensor:
    """L_out_l2g (Eq. 2), local-to-global over frame pairs.

    Args:
        student_local: (B, T, M, K) class logits of the local crops.
        teacher_global: (B, T, K) class logits of the global crops, T even.
        center: (1, K) class center, or (T, K): one per frame.
    For each pair (n, T/2 + n), both frames' teacher globals are targets for all 2M local crops of
    the pair (4M terms per pair). Each term is averaged over clips; the result is the mean over all
    terms. Returns a scalar.
    """
    if student_local.dim() != 4 or teacher_global.dim() != 3 or \
            student_local.shape[:2] != teacher_global.shape[:2] or student_local.shape[-1] != teacher_global.shape[-1]:
        raise ValueError(f"l2g_loss: student_local {tuple(student_local.shape)} must be (B, T, M, K) and "
                         f"teacher_global {tuple(teacher_global.shape)} (B, T, K)")
    B, T, M, K = student_local.shape
    h = _check_pairs(T)
    q = teacher_probs(teacher_global, _per_frame(center, T, "l2g_loss"), teacher_temp)
    q = q.reshape(B, 2, h, K).transpose(1, 2)  # (B, h, 2, K)
    logp = student_log_probs(student_local, student_temp).reshape(B, 2, h, M, K).transpose(1, 2)
    logp = logp.reshape(B, h, 2 * M, K)  # the 2M local crops of each pair
    with _full_precision(q):
        return -torch.einsum("bpik,bpjk->bpij", q, logp).mean()


def _check_patches(name: str, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> None:
    if student.shape != teacher.shape or student.dim() != 4 or mask.shape != student.shape[:3] \
            or mask.dtype != torch.bool:
        raise ValueError(f"{name}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must be "
                         f"(B, T, N, K) and mask {tuple(mask.shape)} bool (B, T, N)")


def mim_loss(student_patches: torch.Tensor, teacher_patches: torch.Tensor, mask: torch.Tensor,
             center: torch.Tensor, student_temp: float, teacher_temp: float) -> torch.Tensor:
    """L_in_mim (Eq. 3), masked patch modelling.

    Args:
        student_patches: (B, T, N, K) patch logits of the masked global crops.
        teacher_patches: (B, T, N, K) patch logits of the same crops, unmasked.
        mask: bool (B, T, N), True at masked patches.
        center: (1, K) patch center, or (T, K): one per frame (the released cadence).
    Cross-entropy at masked positions; for each frame index t the mean over its masked tokens of all
    clips (as the released per-frame loop), then the mean over the frame indices that have masked
    tokens. Exactly 0, with zero gradients, when nothing is masked. Returns a scalar.
    """
    _check_patches("mim_loss", student_patches, teacher_patches, mask)
    q = teacher_probs(teacher_patches, _per_frame(center, student_patches.shape[1], "mim_loss")[:, None], teacher_temp)
    logits = _atleast_f32(student_patches) / student_temp
    # fused soft-target cross-entropy: one pass, no (B, T, N, K) product tensor
    ce = F.cross_entropy(logits.flatten(0, 2), q.flatten(0, 2), reduction="none").view(mask.shape)  # (B, T, N)
    w = mask.to(ce.dtype)
    count = w.sum(dim=(0, 2))  # (T,)
    per_frame = (ce * w).sum(dim=(0, 2)) / count.clamp(min=1)
    has = (count > 0).to(ce.dtype)
    return (per_frame * has).sum() / has.sum().clamp(min=1)


def affinity(x: torch.Tensor) -> torch.Tensor:
    """Cosine affinity of consecutive frames: (B, T, N, C) -> (B, T-1, N, N), A[b,t,i,j] = <x_t,i, x_t+1,j>."""
    z = F.normalize(_atleast_f32(x), dim=-1)
    with _full_precision(z):
        return z[:, :-1] @ z[:, 1:].transpose(-1, -2)


def row_mass(aff: torch.Tensor, tau: float, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """How much of each chosen row's softmax(aff / tau) lands on chosen columns, averaged: a scalar in [0, 1].

    ``aff`` (R, C): e.g. one frame pair of :func:`affinity` (row i: patch i of frame t). ``rows`` bool (R,) and
    ``cols`` bool (C,): e.g. the object's patches in frames t and t+1. 1: chosen patches match only chosen
    patches; a uniform row gives the share of chosen columns.

    Raises ValueError for mismatched shapes, non-bool or empty ``rows``, or ``tau <= 0``.
    """
    if aff.dim() != 2 or rows.shape != aff.shape[:1] or cols.shape != aff.shape[1:]:
        raise ValueError(f"row_mass: aff {tuple(aff.shape)} must be (R, C), rows (R,) and cols (C,), got rows "
                         f"{tuple(rows.shape)} and cols {tuple(cols.shape)}")
    if rows.dtype != torch.bool or cols.dtype != torch.bool or not rows.any():
        raise ValueError("row_mass: rows and cols must be bool, with at least one row chosen")
    if not tau > 0:
        raise ValueError(f"row_mass: tau must be > 0, got {tau}")
    p = F.softmax(_atleast_f32(aff[rows]) / tau, dim=-1)  # (r, C)
    return p[:, cols].sum(-1).mean()


def aff_loss(student_patches: torch.Tensor, teacher_patches: torch.Tensor, mask: torch.Tensor,
             student_temp: float = 0.1, teacher_temp: float = 0.04) -> torch.Tensor:
    """L_in_aff (Eq. 4-5), inter-frame affinity consistency.

    Args:
        student_patches, teacher_patches: (B, T, N, K) patch logits (no centering is applied).
        mask: bool (B, T, N); the masked positions, the same in every frame of a clip.
    At the masked positions the logits are L2-normalised and the affinity between consecutive frames
    (t, t+1) is formed (rows: frame t, columns: frame t+1). Cross-entropy of softmax(A_teacher /
    teacher_temp) against log_softmax(A_student / student_temp) over each row, mean over rows, then
    over frame pairs, then over clips that have masked tokens. Exactly 0 when nothing is masked.
    Returns a scalar.
    """
    _check_patches("aff_loss", student_patches, teacher_patches, mask)
    if student_patches.shape[1] < 2:
        raise ValueError(f"aff_loss needs at least 2 frames, got T={student_patches.shape[1]}")
    a_s = affinity(student_patches) / student_temp  # (B, T-1, N, N)
    a_t = affinity(teacher_patches.detach()) / teacher_temp
    cols = ~mask[:, 1:, None, :]  # unmasked columns of frame t+1
    log_p_s = F.log_softmax(a_s.masked_fill(cols, _NEG), dim=-1)
    p_t = F.softmax(a_t.masked_fill(cols, _NEG), dim=-1)
    ce = -(p_t * log_p_s).sum(-1)  # (B, T-1, N) one value per row
    rows = mask[:, :-1].to(ce.dtype)
    n_rows = rows.sum(-1)  # (B, T-1)
    per_pair = (ce * rows).sum(-1) / n_rows.clamp(min=1)
    pair_ok = (n_rows > 0).to(ce.dtype)
    per_clip = (per_pair * pair_ok).sum(-1) / pair_ok.sum(-1).clamp(min=1)  # (B,)
    clip_ok = (pair_ok.sum(-1) > 0).to(ce.dtype)
    return (per_clip * clip_ok).sum() / clip_ok.sum().clamp(min=1)


class INOLoss(nn.Module):
    """L_INO (Eq. 6): the four terms from a :class:`LossConfig`, with the class/patch centers.

    ``forward(student, teacher)`` takes :class:`inolib.model.INONetwork` output dicts, returns
    ``{"loss", "out", "g2g", "l2g", "mim", "aff"}`` (scalars; a switched-off term is 0), then updates the centers.
    ``out_weighting``: ``"reference"`` (default, released: out = (2 g2g + 4M l2g) / (2 + 4M)) or ``"paper"``
    (g2g + l2g, Eq. 1 + 2). ``center_update`` (:mod:`inolib.center`): ``"released"`` (default, the released
    order of losses and updates) or ``"step"`` (once per step, after the losses).
    """
    # "reference" is what produced the paper's numbers: g2g and l2g are one average over all terms of a frame pair,
    # so g2g carries 2/(2+4M) of the weight (2/34 for M = 8). "released": the class center moves once per frame pair,
    # the patch center once per masked frame, each scored against the center as moved by the ones before it.

    def __init__(self, cfg: LossConfig, out_dim: int):
        super().__init__()
        if cfg.out_weighting not in ("reference", "paper"):
            raise ValueError(f"loss.out_weighting must be 'reference' or 'paper', got {cfg.out_weighting!r}")
        if cfg.center_update not in ("released", "step"):
            raise ValueError(f"loss.center_update must be 'released' or 'step', got {cfg.center_update!r}")
        self.cfg = cfg
        self.center = Center(out_dim, cfg.center_momentum)

    def _check_inputs(self, student, teacher, teacher_temp) -> None:
        """ValueError naming the argument and the expected shape (see :meth:`forward`)."""
        K = self.center.cls.shape[-1]

        def shape(x) -> str:
            return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"

        for name, d in (("student", student), ("teacher", teacher)):
            if not isinstance(d, Mapping):
                raise ValueError(f"INOLoss: {name} must be the dict of INONetwork outputs ('cls_global', ...), "
                                 f"got a {type(d).__name__}")
            if not isinstance(d.get("cls_global"), torch.Tensor):
                raise ValueError(f"INOLoss: {name}['cls_global'] must be a tensor (B, T, K) of class logits, got "
                                 + ("nothing (no such key)" if "cls_global" not in d else shape(d["cls_global"])))
        s = student["cls_global"]
        if s.dim() != 3 or s.shape[1] < 2 or s.shape[1] % 2 or s.shape[-1] != K:
            raise ValueError(f"INOLoss: student['cls_global'] must be (B, T, K) with T even >= 2 (frame pairs) and "
                             f"K = {K} (the head's out_dim), got {shape(s)}")
        B, T = s.shape[:2]
        if teacher["cls_global"].shape != s.shape:
            raise ValueError(f"INOLoss: teacher['cls_global'] must be ({B}, {T}, {K}) like student['cls_global'], "
                             f"got {shape(teacher['cls_global'])}")
        loc = student.get("cls_local")
        if loc is not None and (not isinstance(loc, torch.Tensor) or loc.dim() != 4 or loc.shape[:2] != (B, T)
                                or loc.shape[-1] != K):
            raise ValueError(f"INOLoss: student['cls_local'] must be (B, T, M, K) = ({B}, {T}, M, {K}), got "
                             f"{shape(loc)}")
        patch = student.get("patch")
        if patch is not None:
            if not isinstance(patch, torch.Tensor) or patch.dim() != 4 or patch.shape[:2] != (B, T) \
                    or patch.shape[-1] != K:
                raise ValueError(f"INOLoss: student['patch'] must be (B, T, P, K) = ({B}, {T}, P, {K}), got "
                                 f"{shape(patch)}")
            P = patch.shape[2]
            mask = student.get("patch_mask")
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != patch.shape[:3]:
                raise ValueError(f"INOLoss: student['patch_mask'] must be bool ({B}, {T}, {P}), True where "
                                 f"student['patch'] holds a masked patch, got "
                                 + ("nothing" if mask is None else f"{getattr(mask, 'dtype', '')} {shape(mask)}"))
            t_patch = teacher.get("patch")
            if t_patch is not None and (not isinstance(t_patch, torch.Tensor) or t_patch.shape != patch.shape):
                raise ValueError(f"INOLoss: teacher['patch'] must be {tuple(patch.shape)} like student['patch'] "
                                 f"(the teacher run with the same mask), got {shape(t_patch)}")
        if teacher_temp is not None and not (isinstance(teacher_temp, (int, float)) and teacher_temp > 0):
            raise ValueError(f"INOLoss: teacher_temp must be > 0, got {teacher_temp!r}")

    def forward(self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                update_center: bool = True, teacher_temp: float | None = None) -> dict[str, torch.Tensor]:
        """L_INO of one step (Eq. 6), then the center update unless ``update_center`` is False.

        ``student``: ``cls_global`` (B, T, K), T even; optionally ``cls_local`` (B, T, M, K) and ``patch``
        (B, T, P, K) with bool ``patch_mask`` (B, T, P) (compact or full layout). ``teacher``: ``cls_global`` and,
        with student patches, ``patch``, shaped alike. ``teacher_temp`` overrides ``loss.teacher_temp``.
        Returns ``{"loss", "out", "g2g", "l2g", "mim", "aff"}`` (0-d tensors).

        Raises ValueError naming the argument and expected shape (K: the constructor's ``out_dim``).
        """
        self._check_inputs(student, teacher, teacher_temp)
        c = self.cfg
        tt = c.teacher_temp if teacher_temp is None else teacher_temp
        s_cls, t_cls = student["cls_global"], teacher["cls_global"]
        zero = s_cls.new_zeros((), dtype=torch.float32)
        terms = dict(g2g=zero, l2g=zero, mim=zero, aff=zero)
        s_loc = student.get("cls_local")
        has_local = s_loc is not None and s_loc.shape[2] > 0
        s_patch, t_patch = student.get("patch"), teacher.get("patch")
        mask = student.get("patch_mask")
        has_patch = s_patch is not None and s_patch.shape[2] > 0
        if has_patch and t_patch is None:
            raise ValueError("the student has masked patch logits but the teacher has none: "
                             "run the teacher with the same mask (apply_mask=False)")
        released = None
        if update_center and c.center_update == "released":
            released = self.center.released(t_cls, t_patch if has_patch else None, mask if has_patch else None)
        c_cls = self.center.cls if released is None else released["cls"]
        c_patch = self.center.patch if released is None else released["patch"]
        if c.g2g:
            terms["g2g"] = g2g_loss(s_cls, t_cls, c_cls, c.student_temp, tt)
        if c.l2g and has_local:
            terms["l2g"] = l2g_loss(s_loc, t_cls, c_cls, c.student_temp, tt)
        if c.mim and has_patch:
            terms["mim"] = mim_loss(s_patch, t_patch, mask, c_patch, c.student_temp, tt)
        if c.aff and has_patch:
            terms["aff"] = aff_loss(s_patch, t_patch, mask, c.aff_student_temp, c.aff_teacher_temp)

        if c.out_weighting == "reference":
            w_g = 2.0 if c.g2g else 0.0  # per pair: 2 g2g terms ...
            w_l = 4.0 * s_loc.shape[2] if (c.l2g and has_local) else 0.0  # ... and 4M l2g terms
            out = (w_g * terms["g2g"] + w_l * terms["l2g"]) / (w_g + w_l) if w_g + w_l > 0 else zero
        else:
            out = terms["g2g"] + terms["l2g"]
        total = c.weight_out * out + c.weight_mim * terms["mim"] + c.weight_aff * terms["aff"]
        if released is not None:
            self.center.set(released["cls_after"], released["patch_after"])
        elif update_center:
            self.center.update(t_cls, t_patch if has_patch else None, mask if has_patch else None)
        return {"loss": total, "out": out, **terms}
