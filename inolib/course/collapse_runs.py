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
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import CropConfig, LossConfig, ModelConfig

# name -> (update the center, teacher temperature): INO's setting and the two ways to collapse
COLLAPSE_SETTINGS = {
    "centering + sharpening (INO)": {"centering": True, "teacher_temp": 0.04},  # Sec. 4.1; the released teacher temperature
    "no centering": {"centering": False, "teacher_temp": 0.04},
    "no sharpening": {"centering": True, "teacher_temp": 0.4},  # a teacher 4x softer than the student's 0.1
}


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
                  progress: bool = False) -> dict[str, list[dict]]:
    """Train one fresh student/teacher pair per setting with out g2g only, on the same batches.

    Args:
        model: the network's configuration (``config.smoke().model`` trains in seconds).
        batches: ``batches(step)`` -> global crops (B, T, 3, S, S), T even (e.g. :class:`ClipBatches`).
        steps: optimisation steps per run.
        settings: ``{name: {"centering": bool, "teacher_temp": float}}`` (default :data:`COLLAPSE_SETTINGS`).
        lr: AdamW learning rate; momentum: the teacher's EMA momentum (fixed).
    Returns ``{name: [{"step", "loss", "entropy", "batch_entropy", "top_share"}, ...]}``: one record per step.
    """
    from tqdm.auto import tqdm

    from ..losses import INOLoss
    from ..model import build_network
    from ..teacher import make_teacher
    from ..run.trainer import train_step

    settings = COLLAPSE_SETTINGS if settings is None else settings
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1, got {steps!r}")
    for name, s in settings.items():
        if set(s) != {"centering", "teacher_temp"} or not s["teacher_temp"] > 0:
            raise ValueError(f"settings[{name!r}] must be {{'centering': bool, 'teacher_temp': > 0}}, got {s!r}")
    dev = torch.device(device)
    loss_cfg = LossConfig(l2g=False, mim=False, aff=False)
    runs = {}
    for name, s in settings.items():
        torch.manual_seed(seed)
        student = build_network(model).to(dev)
        teacher = make_teacher(student, model).to(dev)
        criterion = INOLoss(loss_cfg, model.head_out_dim).to(dev)
        opt = torch.optim.AdamW(student.parameters(), lr=lr)
        records = []
        for step in tqdm(range(steps), desc=name, disable=not progress, leave=False):
            r = train_step(student, teacher, criterion, opt, batches(step).to(dev), None, None, momentum=momentum,
                           update_center=s["centering"], teacher_temp=s["teacher_temp"])
            records.append({"step": step, **{k: r[k] for k in ("loss", "entropy", "batch_entropy", "top_share")}})
        runs[name] = records
    return runs
