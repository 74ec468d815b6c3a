"""Patch masks for the student's global crops (in-generative learning, Sec. 3.3).

Two schemes, both returning a bool tensor (B, T, N) over B clips, T frames and N = h*w patches
(True = masked), drawn from an explicit ``torch.Generator``:

* ``random_mask``: what the released ``mask_generator.py`` does. With probability ``prob`` the step is
  masked: a ratio r ~ U(ratio) is drawn and int(r*N) patches, chosen uniformly at random, are masked;
  otherwise nothing is masked. ONE pattern is shared by every clip and frame of the step.
* ``block_mask``: the paper's blockwise masking (Sec. 3.3; BEiT/iBOT-style rectangles). Same
  probability and ratio, but each clip gets its own block pattern, shared by its frames (L_in_aff
  compares the same positions across frames).

In a distributed run every rank must use the same mask (the released code broadcasts rank 0's): seed the
generator identically on every rank (``Trainer`` seeds it from the run seed and the step, never the rank).
"""

from __future__ import annotations

import math

import torch

from .config import MaskConfig


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * torch.rand((), generator=generator).item()


def _check_ratio(ratio: tuple[float, float], prob: float) -> None:
    lo, hi = ratio
    if not (0.0 <= lo <= hi <= 1.0):
        raise ValueError(f"mask ratio must satisfy 0 <= low <= high <= 1, got {ratio}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"mask probability must be in [0, 1], got {prob}")


def random_mask(
    batch_size: int,
    num_frames: int,
    grid: tuple[int, int],
    ratio: tuple[float, float] = (0.1, 0.5),
    prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The released scheme: one uniformly random pattern shared by the whole step.

    Returns bool (B, T, N), N = grid[0] * grid[1]; masked with probability ``prob``, all False otherwise.
    """
    _check_ratio(ratio, prob)
    return _random_mask(batch_size, num_frames, grid, ratio, prob, generator)


def _random_mask(batch_size, num_frames, grid, ratio, prob, generator) -> torch.Tensor:
    N = grid[0] * grid[1]
    mask = torch.zeros(N, dtype=torch.bool)
    if torch.rand((), generator=generator).item() < prob:
        k = int(_uniform(ratio[0], ratio[1], generator) * N)
        mask[torch.randperm(N, generator=generator)[:k]] = True
    return mask.expand(batch_size, num_frames, N).clone()


def _block_pattern(h: int, w: int, num_mask: int, min_patches: int, aspect: float,
                   generator: torch.Generator | None) -> torch.Tensor:
    """Cover about ``num_mask`` cells of an (h, w) grid with random rectangles (BEiT's algorithm)."""
    mask = torch.zeros(h, w, dtype=torch.bool)
    log_lo, log_hi = math.log(aspect), math.log(1 / aspect)
    count = 0
    while count < num_mask:
        budget = num_mask - count
        added = 0
        for _ in range(10):  # a few tries to place a block that adds 1..budget new cells
            area = _uniform(min(min_patches, budget), budget, generator)
            ar = math.exp(_uniform(log_lo, log_hi, generator))
            bh = max(1, int(round(math.sqrt(area * ar))))
            bw = max(1, int(round(math.sqrt(area / ar))))
            if bh > h or bw > w:
                continue
            top = int(torch.randint(0, h - bh + 1, (), generator=generator))
            left = int(torch.randint(0, w - bw + 1, (), generator=generator))
            region = mask[top:top + bh, left:left + bw]
            new = bh * bw - int(region.sum())
            if 0 < new <= budget:
                region.fill_(True)
                added = new
                break
        if added == 0:
            break
        count += added
    return mask.flatten()


def block_mask(
    batch_size: int,
    num_frames: int,
    grid: tuple[int, int],
    ratio: tuple[float, float] = (0.1, 0.5),
    prob: float = 0.5,
    generator: torch.Generator | None = None,
    min_patches: int = 4,
    aspect: float = 0.3,
) -> torch.Tensor:
    """The paper's blockwise masking: per clip, rectangles covering about r*N patches, shared by frames.

    Returns bool (B, T, N); masked with probability ``prob``, all False otherwise. r is drawn once per step.
    """
    _check_ratio(ratio, prob)
    if not 0 < aspect <= 1:
        raise ValueError(f"block aspect must be in (0, 1], got {aspect}")
    return _block_mask(batch_size, num_frames, grid, ratio, prob, generator, min_patches, aspect)


def _block_mask(batch_size, num_frames, grid, ratio, prob, generator, min_patches, aspect) -> torch.Tensor:
    h, w = grid
    N = h * w
    mask = torch.zeros(batch_size, N, dtype=torch.bool)
    if torch.rand((), generator=generator).item() < prob:
        k = int(_uniform(ratio[0], ratio[1], generator) * N)
        for b in range(batch_size):  # a handful of clips; the loop is over blocks, not pixels
            mask[b] = _block_pattern(h, w, k, min_patches, aspect, generator)
    return mask[:, None].expand(batch_size, num_frames, N).clone()


def make_mask(cfg: MaskConfig, batch_size: int, num_frames: int, grid: tuple[int, int],
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The mask of one training step as ``cfg`` says: bool (B, T, N)."""
    return mask_sampler(cfg)(batch_size, num_frames, grid, generator)


def mask_sampler(cfg: MaskConfig):
    """``cfg`` checked once, then a function ``draw(batch_size, num_frames, grid, generator) -> bool (B, T, N)``
    that draws the mask of a step (the trainer draws one per step). ValueError naming ``masking.mode`` or the
    ratio, probability or block aspect that cannot work."""
    if cfg.mode not in ("random", "block"):
        raise ValueError(f"masking.mode must be 'random' or 'block', got {cfg.mode!r}")
    _check_ratio(cfg.ratio, cfg.prob)
    if cfg.mode == "random":
        return lambda B, T, grid, generator=None: _random_mask(B, T, grid, cfg.ratio, cfg.prob, generator)
    if not 0 < cfg.block_aspect <= 1:
        raise ValueError(f"block aspect must be in (0, 1], got {cfg.block_aspect}")
    return lambda B, T, grid, generator=None: _block_mask(B, T, grid, cfg.ratio, cfg.prob, generator,
                                                          cfg.block_min_patches, cfg.block_aspect)


def masked_positions(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Compact layout of the masked positions of each frame.

    Args:
        mask: bool (B, T, N).
    Returns:
        index: long (B, T, P), the masked positions of each frame in increasing order, padded with
            unmasked positions; P is the largest masked count of any frame (0 if nothing is masked).
        valid: bool (B, T, P), True where ``index`` is a masked position.

    Gathering tokens with ``index`` and passing ``valid`` as the mask gives the losses exactly what the
    full (B, T, N) layout gives them, while the head runs on P instead of N tokens per frame.
    """
    if mask.dtype != torch.bool or mask.dim() != 3:
        raise ValueError(f"mask must be bool (B, T, N), got {mask.dtype} {tuple(mask.shape)}")
    counts = mask.sum(-1)  # (B, T)
    P = int(counts.max()) if mask.numel() else 0
    order = torch.argsort((~mask).to(torch.uint8), dim=-1, stable=True)  # masked first, in order
    index = order[..., :P]
    valid = torch.arange(P, device=mask.device) < counts[..., None]
    return index, valid
