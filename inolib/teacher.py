"""The EMA teacher (Sec. 3.1, App. A.1): same architecture as the student, no gradients, and its weights
an exponential moving average of the student's, ``teacher <- m * teacher + (1 - m) * student``.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .model import INONetwork, build_network


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / torch.compile wrapper (or the module itself)."""
    while True:
        if hasattr(module, "module") and isinstance(module.module, nn.Module):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):
            module = module._orig_mod
        else:
            return module


def make_teacher(student: nn.Module, cfg: ModelConfig) -> INONetwork:
    """A teacher built like ``student`` but without drop-path, with the student's weights, frozen."""
    teacher = build_network(cfg, drop_path_rate=0.0)
    teacher.load_state_dict(unwrap(student).state_dict())
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """In place: every teacher parameter <- momentum * teacher + (1 - momentum) * student.

    One fused multi-tensor op, no host sync. Parameters are matched by name.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    s_params = dict(unwrap(student).named_parameters())
    t_named = list(unwrap(teacher).named_parameters())
    missing = [n for n, _ in t_named if n not in s_params]
    if missing:
        raise ValueError(f"teacher parameters missing from the student: {missing[:5]}")
    t = [p for _, p in t_named]
    s = [s_params[n].detach().to(p.dtype) for n, p in t_named]
    torch._foreach_lerp_(t, s, 1.0 - momentum)
