"""Per-step schedules of INO training (App. A.1; released ``utils.cosine_scheduler``).

    lr        linear warmup 0 -> peak over ``warmup_epochs``, then cosine peak -> ``min_lr``
    peak lr   ``base_lr * clips_per_step * L / 1024`` (App. A.1; released: lr * B * L * world / (256 * 4))
    wd        cosine 0.04 -> 0.4, no warmup
    momentum  cosine 0.996 -> 1 (teacher EMA)

Each schedule is a float64 tensor with one value per optimisation step of the whole run, so a resumed run
reads the same value at the same step.

``optim.schedule="released"`` reproduces what the released loop really ran (``docs/released_code.md``,
"Teacher and schedules"): schedules built for ``epochs`` epochs, but training starts at epoch 1 and crashes
before the last, so it runs ``epochs - 1`` epochs on schedule steps [n, epochs * n): the lr warmup starts at
base / warmup_epochs instead of 0 and the momentum and weight decay start one epoch into their cosines.
``"clean"`` (default) runs all of it.
"""

from __future__ import annotations

import math

import torch

from .config import OptimConfig


def cosine_schedule(base: float, final: float, total_steps: int, warmup_steps: int = 0,
                    warmup_start: float = 0.0) -> torch.Tensor:
    """(total_steps,) float64, the released rule: ``warmup_steps`` values evenly from ``warmup_start`` to
    ``base`` (both included), then ``final + (base - final) * (1 + cos(pi * k / n)) / 2`` for k = 0..n-1 over
    the n remaining steps."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup_steps = min(max(0, warmup_steps), total_steps)
    warm = torch.linspace(warmup_start, base, warmup_steps, dtype=torch.float64)
    n = total_steps - warmup_steps
    k = torch.arange(n, dtype=torch.float64)
    cos = final + 0.5 * (base - final) * (1 + torch.cos(math.pi * k / max(n, 1)))
    return torch.cat([warm, cos])


def peak_lr(cfg: OptimConfig, clip_len: int, world_size: int) -> float:
    """The learning rate after warmup: ``base_lr * (batch_size_per_gpu * world_size) * clip_len / 1024``
    (App. A.1, the released ``args.lr * B_gpu * L * world / (256 * 4)`` of ``main_VOS.py``)."""
    return cfg.base_lr * cfg.batch_size_per_gpu * world_size * clip_len / 1024


def make_schedules(cfg: OptimConfig, steps_per_epoch: int, clip_len: int, world_size: int = 1) -> dict[str, torch.Tensor]:
    """The ``lr``, ``wd`` and ``momentum`` schedules of a run, each (S,) float64 with S the run's steps:
    ``epochs * steps_per_epoch`` (``optim.schedule="clean"``) or ``(epochs - 1) * steps_per_epoch``, the
    first epoch's values dropped (``"released"``, see the module docstring)."""
    if cfg.schedule not in ("clean", "released"):
        raise ValueError(f"optim.schedule must be 'clean' or 'released', got {cfg.schedule!r}")
    if cfg.schedule == "released" and cfg.epochs < 2:
        raise ValueError(f"optim.schedule released runs optim.epochs - 1 epochs: optim.epochs must be >= 2, "
                         f"got {cfg.epochs}")
    total = cfg.epochs * steps_per_epoch
    full = {
        "lr": cosine_schedule(peak_lr(cfg, clip_len, world_size), cfg.min_lr, total, cfg.warmup_epochs * steps_per_epoch),
        "wd": cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, total),
        "momentum": cosine_schedule(cfg.momentum_teacher, 1.0, total),
    }
    skip = steps_per_epoch if cfg.schedule == "released" else 0
    return {k: v[skip:] for k, v in full.items()}


def param_groups(model: torch.nn.Module) -> list[dict]:
    """Two AdamW groups as in the released ``utils.py``: weights with decay; biases and 1-D tensors (norms, the
    class/mask tokens' own dims are 3-D and decay) without. The ``"decay"`` key says which is which."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith(".bias") or p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "decay": True}, {"params": no_decay, "weight_decay": 0.0, "decay": False}]
