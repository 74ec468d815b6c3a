"""Collapse in self-distillation, measured: short runs of the out g2g loss alone on real clips, with the teacher's
centering and sharpening switched on and off.

    batches = ClipBatches(["data/videos"], cfg.crops, batch_size=6)
    runs = collapse_runs(cfg.model, batches, steps=150, settings=COLLAPSE_SETTINGS)
    runs["no centering"][-1]["batch_entropy"]      # -> 0: every target picks the same output dimension

A student that predicts a teacher which is a moving average of itself has two trivial solutions, both with no
information about the input: every target the same one-hot vector (one dimension wins), or every target uniform.
**Sharpening** (a teacher temperature below the student's, 0.04 vs 0.1) pushes each target toward one-hot, away
from uniform; **centering** (subtracting a running mean of the teacher's logits) pushes the targets of a batch
apart, away from one dimension. INO, like DINO, needs both. The monitors are :func:`inolib.run.trainer.collapse_monitors`:
``entropy`` (of one target: log K when uniform, 0 when one-hot) and ``batch_entropy`` (of the batch-mean target:
0 when all targets pick the same dimension).

A setting may also name its frame ``pairing`` (lesson 04): ``"partner"`` (Eq. 1: frame n with frame L/2 + n) or
``"self"`` (every frame with itself, the same crop; the bug of an off-by-L/2). With ``held_out`` crops, the runs
are scored every ``eval_every`` steps on them with both pairings:

    runs = collapse_runs(cfg.model, batches, steps=120, settings=SELF_PAIR_SETTINGS, held_out=crops)
    runs["self-pair"][-1]["held_out_g2g"]      # Eq. 1 on the correct pairs of clips it never trained on
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import CropConfig, LossConfig, ModelConfig
from ..losses import frame_pairs, g2g_loss

# name -> (update the center, teacher temperature): INO's setting and the two ways to collapse
COLLAPSE_SETTINGS = {
    "centering + sharpening (INO)": {"centering": True, "teacher_temp": 0.04},  # Sec. 4.1; the released teacher temperature
    "no centering": {"centering": False, "teacher_temp": 0.04},
    "no sharpening": {"centering": True, "teacher_temp": 0.4},  # a teacher 4x softer than the student's 0.1
}

# which frame's teacher each student frame predicts: Eq. 1's partner (n <-> L/2 + n), or the frame itself
PAIRINGS = ("partner", "self")
# lesson 04: INO's pairing against every frame paired with itself, both with centering and sharpening
SELF_PAIR_SETTINGS = {
    "partner frames (INO)": {"centering": True, "teacher_temp": 0.04, "pairing": "partner"},
    "self-pair": {"centering": True, "teacher_temp": 0.04, "pairing": "self"},
}


def swap_halves(x: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) -> the same frames in the order [T/2, T) then [0, T/2): frame n moves to its partner's place."""
    h = len(frame_pairs(x.shape[1]))
    return torch.cat([x[:, h:], x[:, :h]], dim=1)


def self_pair_g2g(student_global: torch.Tensor, teacher_global: torch.Tensor, center: torch.Tensor,
                  student_temp: float, teacher_temp: float) -> torch.Tensor:
    """Eq. 1 with every frame paired with itself: the teacher of frame n is the target of the student of frame n
    (:func:`inolib.losses.g2g_loss` on a teacher whose halves are swapped, so that its own swap undoes it).
    Shapes as ``g2g_loss``; a per-frame center (T, K) is swapped with the teacher."""
    if center.dim() == 2 and center.shape[0] == student_global.shape[1] > 1:
        center = swap_halves(center[None])[0]
    return g2g_loss(student_global, swap_halves(teacher_global), center, student_temp, teacher_temp)


class SelfPairTeacher(nn.Module):
    """A teacher whose class logits come out with their halves swapped, so that ``g2g_loss`` (and the trainer's
    step) pairs every frame with itself. ``module`` is the teacher itself: :func:`inolib.teacher.ema_update`
    unwraps to it, so the EMA is unchanged."""

    def __init__(self, teacher: nn.Module):
        super().__init__()
        self.module = teacher

    def forward(self, *args, **kwargs) -> dict:
        out = dict(self.module(*args, **kwargs))
        out["cls_global"] = swap_halves(out["cls_global"])
        return out


class ClipBatches:
    """Batches of fresh global crops of a few clips decoded once from real videos: ``batches(step)`` ->
    (B, T, 3, S, S) float, the same for the same step (crops drawn from a generator seeded by the step).

    Args:
        sources: video folders or files (as ``ino train --data``).
        crops: the crop settings (``clip_len``, ``fps``, ``global_size``...).
        clips_per_video: clips decoded from each video (at its start and spread over it).
        batch_size: clips per batch, drawn with replacement.
    """

    def __init__(self, sources: list, crops: CropConfig, clips_per_video: int = 2, batch_size: int = 6):
        from ..data.clips import ClipDataset
        from ..data.index import VideoIndex, resolve_sources

        if batch_size < 1 or clips_per_video < 1:
            raise ValueError(f"batch_size and clips_per_video must be >= 1, got {batch_size}, {clips_per_video}")
        index = VideoIndex.build(resolve_sources([Path(s) for s in sources]), progress=False)
        self.data = ClipDataset(index, crops)
        self.clips = [self.data.clip_frames(v, (k * (n - 1)) // max(1, clips_per_video - 1))[1]
                      for v, n in enumerate(self.data.num_starts) for k in range(clips_per_video)]
        self.batch_size = batch_size

    def __call__(self, step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(step))
        pick = torch.randint(len(self.clips), (self.batch_size,), generator=g).tolist()
        return torch.stack([self.data.augment(self.clips[i], 1000 * int(step) + j)[0] for j, i in enumerate(pick)])


def collapse_runs(model: ModelConfig, batches, steps: int, settings: dict | None = None, lr: float = 3e-4,
                  momentum: float = 0.99, seed: int = 0, device: str | torch.device = "cpu",
                  progress: bool = False, held_out: torch.Tensor | None = None,
                  eval_every: int = 10) -> dict[str, list[dict]]:
    """Train one fresh student/teacher pair per setting with out g2g only, on the same batches.

    Args:
        model: the network's configuration (``config.smoke().model`` trains in seconds).
        batches: ``batches(step)`` -> global crops (B, T, 3, S, S), T even (:class:`ClipBatches`).
        settings: ``{name: {"centering": bool, "teacher_temp": float}}``, optionally ``"pairing"`` (in
            :data:`PAIRINGS`; default "partner"); default :data:`COLLAPSE_SETTINGS`.
        lr: AdamW learning rate; momentum: the teacher's EMA momentum (fixed).
        held_out: crops like a batch, scored every ``eval_every`` steps and at the last: ``held_out_g2g`` (correct
            pairs) and ``held_out_self`` (self-pairs).
    Returns ``{name: [{"step", "loss", "entropy", "batch_entropy", "top_share"}, ...]}``, one record per step
    (``loss``: the run's own pairing).
    """
    from tqdm.auto import tqdm

    from ..losses import INOLoss
    from ..model import build_network
    from ..run.trainer import train_step
    from ..teacher import make_teacher

    settings = COLLAPSE_SETTINGS if settings is None else settings
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1, got {steps!r}")
    if not isinstance(eval_every, int) or eval_every < 1:
        raise ValueError(f"eval_every must be a whole number >= 1, got {eval_every!r}")
    for name, s in settings.items():
        if not {"centering", "teacher_temp"} <= set(s) <= {"centering", "teacher_temp", "pairing"} \
                or not s["teacher_temp"] > 0 or s.get("pairing", "partner") not in PAIRINGS:
            raise ValueError(f"settings[{name!r}] must be {{'centering': bool, 'teacher_temp': > 0}}, optionally "
                             f"with 'pairing' in {PAIRINGS}, got {s!r}")
    dev = torch.device(device)
    loss_cfg = LossConfig(l2g=False, mim=False, aff=False)
    runs = {}
    for name, s in settings.items():
        torch.manual_seed(seed)
        student = build_network(model).to(dev)
        teacher = make_teacher(student, model).to(dev)
        paired = SelfPairTeacher(teacher) if s.get("pairing") == "self" else teacher
        criterion = INOLoss(loss_cfg, model.head_out_dim).to(dev)
        opt = torch.optim.AdamW(student.parameters(), lr=lr)
        records = []
        for step in tqdm(range(steps), desc=name, disable=not progress, leave=False):
            r = train_step(student, paired, criterion, opt, batches(step).to(dev), None, None, momentum=momentum,
                           update_center=s["centering"], teacher_temp=s["teacher_temp"])
            records.append({"step": step, **{k: r[k] for k in ("loss", "entropy", "batch_entropy", "top_share")}})
            if held_out is not None and (step % eval_every == 0 or step == steps - 1):
                records[-1].update(_score_held_out(student, teacher, criterion.center.cls, held_out.to(dev),
                                                   loss_cfg.student_temp, s["teacher_temp"]))
        runs[name] = records
    return runs


@torch.no_grad()
def _score_held_out(student: nn.Module, teacher: nn.Module, center: torch.Tensor, crops: torch.Tensor,
                    student_temp: float, teacher_temp: float) -> dict[str, float]:
    """Out g2g of ``crops`` with the correct pairs and with every frame paired with itself (no update)."""
    student.eval()
    s = student(crops)["cls_global"]
    t = teacher(crops, apply_mask=False)["cls_global"]
    student.train()
    return {"held_out_g2g": float(g2g_loss(s, t, center, student_temp, teacher_temp)),
            "held_out_self": float(self_pair_g2g(s, t, center, student_temp, teacher_temp))}
