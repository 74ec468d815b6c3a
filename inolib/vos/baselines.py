"""Baselines for label propagation: what a network has to beat.

:class:`PixelFeatures` stands in for a backbone anywhere one is accepted (``segment_sequence``,
``inolib.vos.validation.davis_jf``): the feature of a patch is its own normalised pixels. Propagating labels with it
measures how far colour alone carries the masks; a model that learned must do better.
:func:`copy_first_mask` is the tracker that never moves: every frame gets the first frame's mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _PatchSize(nn.Module):
    def __init__(self, patch_size: int):
        super().__init__()
        self.patch_size = (patch_size, patch_size)


class PixelFeatures(nn.Module):
    """Raw pixels as patch features: a patch's p x p normalised RGB values, (3 p^2)-dimensional.

    Has the attributes label propagation reads from a ViT (``patch_embed.patch_size``,
    :meth:`patch_feature_map`), no weights.
    """

    def __init__(self, patch_size: int = 8):
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        self.patch_embed = _PatchSize(patch_size)

    def patch_feature_map(self, images: torch.Tensor, block: int | None = None, norm: bool = True) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, 3 p^2, H / p, W / p); ``block`` and ``norm`` are ignored."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        p = self.patch_embed.patch_size[0]
        B, _, H, W = images.shape
        if H % p or W % p:
            raise ValueError(f"images {H}x{W} are not a multiple of the patch size {p}")
        return F.unfold(images.float(), kernel_size=p, stride=p).view(B, 3 * p * p, H // p, W // p)


def copy_first_mask(first_mask: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The first frame's ids (H, W) repeated for ``num_frames`` frames: (T, H, W), void (255) as background.

    The baseline every tracker must beat: on slow videos it scores well, since nothing moves far.
    """
    if not isinstance(first_mask, torch.Tensor) or first_mask.dim() != 2:
        raise ValueError(f"first_mask must be an (H, W) id map, got {getattr(first_mask, 'shape', type(first_mask))}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a whole number >= 1, got {num_frames!r}")
    m = torch.where(first_mask == 255, torch.zeros_like(first_mask), first_mask)
    return m[None].expand(num_frames, -1, -1).clone()
