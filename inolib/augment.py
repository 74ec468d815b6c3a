"""Per-frame multi-crop augmentation (Sec. 3.2, App. A.1, Tab. 5; released augs.py).

Each frame of a clip gets its own crops, independently (the released code): one global crop
(224x224, scale (0.8, 0.95), bicubic, no flip or colour jitter by default) and M local crops (64x64,
scale (0.05, 0.8), bicubic, flip, colour jitter, grayscale, Gaussian blur). Everything works on uint8
tensors with ``torchvision.transforms.v2`` (no PIL round trip) and ends with ImageNet normalisation.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from .config import CropConfig


def _photometric(cfg: CropConfig) -> list:
    return [
        v2.RandomHorizontalFlip(p=cfg.flip_p),
        v2.RandomApply([v2.ColorJitter(*cfg.jitter)], p=cfg.jitter_p),
    ]


def _finish(cfg: CropConfig) -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(cfg.mean), std=list(cfg.std))]


def global_transform(cfg: CropConfig) -> v2.Compose:
    """uint8 (3, H, W) -> float (3, global_size, global_size)."""
    ops = [v2.RandomResizedCrop(cfg.global_size, scale=cfg.global_scale, ratio=cfg.ratio,
                                interpolation=InterpolationMode.BICUBIC, antialias=True)]
    if cfg.global_flip_jitter:  # Tab. 5: off by default
        ops += _photometric(cfg)
    return v2.Compose(ops + _finish(cfg))


def local_transform(cfg: CropConfig) -> v2.Compose:
    """uint8 (3, H, W) -> float (3, local_size, local_size)."""
    ops = [v2.RandomResizedCrop(cfg.local_size, scale=cfg.local_scale, ratio=cfg.ratio,
                                interpolation=InterpolationMode.BICUBIC, antialias=True)]
    if cfg.local_flip_jitter:  # Tab. 5: on by default
        ops += _photometric(cfg)
    kernel = 2 * math.ceil(3 * cfg.blur_sigma[1]) + 1  # covers +-3 sigma of the widest blur
    ops += [
        v2.RandomGrayscale(p=cfg.grayscale_p),
        v2.RandomApply([v2.GaussianBlur(kernel, sigma=cfg.blur_sigma)], p=cfg.blur_p),
    ]
    return v2.Compose(ops + _finish(cfg))


class MultiCrop:
    """Callable: uint8 clip (T, 3, H, W) -> (globals (T, 3, Sg, Sg), locals (T, M, 3, Sl, Sl)).

    Randomness comes from torch's global RNG (seed it, or seed each DataLoader worker).
    """

    def __init__(self, cfg: CropConfig):
        self.cfg = cfg
        self.global_tf = global_transform(cfg)
        self.local_tf = local_transform(cfg)

    def __call__(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if clip.dim() != 4 or clip.shape[1] != 3 or clip.dtype != torch.uint8:
            raise ValueError(f"MultiCrop expects a uint8 clip (T, 3, H, W), got {clip.dtype} {tuple(clip.shape)}")
        M = self.cfg.num_local
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # many tiny ops: intra-op threads only add overhead (10x on 2 cores)
        try:
            globals_ = torch.stack([self.global_tf(f) for f in clip])
            locals_ = torch.stack([torch.stack([self.local_tf(f) for _ in range(M)]) for f in clip]) if M else \
                clip.new_zeros((clip.shape[0], 0, 3, self.cfg.local_size, self.cfg.local_size), dtype=torch.float32)
        finally:
            torch.set_num_threads(threads)
        return globals_, locals_


def crop_boxes(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], num: int,
               seed: int = 0) -> torch.Tensor:
    """``num`` crop boxes of an H x W frame drawn as ``RandomResizedCrop`` draws them (Sec. 3.2, App. A.1): long
    (num, 4) rows (top, left, box height, box width) in pixels.

    Up to 10 tries, then a centred fallback box, as torchvision. Seeded by ``seed`` alone (torch's global
    generator is left as it was).
    """
    # torchvision's rule: up to 10 tries of an area s * H * W, s ~ U(scale), aspect w / h log-uniform in ratio; the
    # first box that fits is taken, else the centred frame box clipped to the ratio range (the whole frame if its own
    # aspect ratio is inside it).
    from torchvision.transforms import RandomResizedCrop

    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height} x {width}")
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi <= 1, got {tuple(scale)}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must be (lo, hi) with 0 < lo <= hi, got {tuple(ratio)}")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a whole number >= 1, got {num!r}")
    frame = torch.empty(1, int(height), int(width))  # only its size is read
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        boxes = [RandomResizedCrop.get_params(frame, list(scale), list(ratio)) for _ in range(num)]
    return torch.tensor(boxes, dtype=torch.long)


def object_share(mask: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Share of an object's pixels inside each crop box: ``mask`` (H, W) (nonzero = object), ``boxes`` (n, 4)
    rows (top, left, height, width) as :func:`crop_boxes` gives them. Returns float (n,): 0 = the crop shows none
    of the object, 1 = all of it. ValueError for an empty mask."""
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError(f"mask must be an (H, W) tensor, got {getattr(mask, 'shape', type(mask))}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (n, 4) rows (top, left, height, width), got {tuple(boxes.shape)}")
    obj = (mask != 0).float()
    total = obj.sum()
    if total == 0:
        raise ValueError("mask holds no object pixel")
    # summed-area table: the object pixels of any box in four look-ups
    sat = torch.nn.functional.pad(obj.cumsum(0).cumsum(1), (1, 0, 1, 0))
    t, l, h, w = boxes.unbind(1)
    inside = sat[t + h, l + w] - sat[t, l + w] - sat[t + h, l] + sat[t, l]
    return inside / total
