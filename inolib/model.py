"""The network of INO: a timm ViT with a mask token, the projection head, and the multi-crop forward.

Paper map:
    Sec. 3.1   student and teacher share this architecture: backbone + projection head
    Sec. 3.3   a learnable mask token replaces masked patch embeddings of the student's global crops
    App. A.1   the position table is initialised for 64x64 inputs and resized bicubically;
               the head is DINO's (3 layers, 4096 outputs)
    Sec. 4.1   the 7th block (through the final norm) gives the features for label propagation

The backbone *is* timm's ``VisionTransformer`` (a subclass that adds ``mask_token`` and overrides the
position-table resize), so its parameter names are the ones DINO and the released INO checkpoints use
(``cls_token``, ``pos_embed``, ``patch_embed.proj.weight``, ``blocks.0.attn.qkv.weight``, ...). With
``init_values`` its blocks get LayerScale (``blocks.N.ls1.gamma``, ``ls2.gamma``) and it holds DINOv2's ViTs
(Oquab et al. 2023, github.com/facebookresearch/dinov2; :mod:`inolib.checkpoint` reads their files).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer import VisionTransformer

from .config import ModelConfig
from .masking import masked_positions

RESIZE_MODES = ("released", "timm")


def resize_pos_grid(grid: torch.Tensor, size: tuple[int, int], mode: str = "released",
                    offset: float = 0.1) -> torch.Tensor:
    """Resize a (1, D, g_h, g_w) patch position table to (1, D, h, w) float32, ``size`` = (h, w) (App. A.1).

    ``mode="released"`` reproduces DINO/INO's ``interpolate_pos_encoding`` bit for bit (bicubic with
    ``scale_factor=(h + offset) / g_h``, 1-3 % off a ``size=`` resize; ``docs/released_code.md``, "Model"),
    and DINOv2's (float32, ``interpolate_offset=0.1``, no antialias); ``"timm"`` is timm's
    ``resample_abs_pos_embed`` (antialiased, as its ``dynamic_img_size``). ``offset=0`` shows dino issue 8.

    Raises ValueError for an unknown ``mode``.
    """
    # A scale factor (not the size ratio) maps output to input coordinates, hence the 1-3 %. When the float scale
    # factor floors to a grid one cell short (dino issue 8), "released" falls back to an exact size=(h, w) resize.
    # timm's antialiased bicubic kernel (a = -0.5, PIL style) differs from the plain one (a = -0.75).
    # DINO and DINOv2 (Oquab et al. 2023, dinov2/models/vision_transformer.py) name the image's (H, W) "(w, h)" but
    # scale dims 2, 3 by (H/p + 0.1) / M, (W/p + 0.1) / M in that order, as here; DINOv2 also interpolates in
    # float32 and M = int(sqrt(N)) equals DINO's float sqrt(N) for a square table: the same doubles, the same table.
    if mode not in RESIZE_MODES:
        raise ValueError(f"pos_embed_resize must be one of {RESIZE_MODES}, got {mode!r}")
    h, w = int(size[0]), int(size[1])
    g_h, g_w = grid.shape[-2:]
    grid = grid.float()
    if (h, w) == (g_h, g_w):
        return grid
    if mode == "timm":
        flat = grid.flatten(2).transpose(1, 2)  # (1, g_h*g_w, D)
        out = resample_abs_pos_embed(flat, new_size=(h, w), old_size=(g_h, g_w), num_prefix_tokens=0)
        return out.transpose(1, 2).reshape(1, -1, h, w)
    out = F.interpolate(grid, scale_factor=((h + offset) / g_h, (w + offset) / g_w), mode="bicubic",
                        align_corners=False)
    if out.shape[-2:] != (h, w):  # the scale-factor form came out one cell short: use the exact size
        out = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    return out


def released_resize_is_exact(grid_size: tuple[int, int], size: tuple[int, int], offset: float = 0.1) -> bool:
    """True when the released ``scale_factor`` resize lands exactly on ``size`` (no fallback needed).

    Mirrors ``F.interpolate``'s output size, ``floor(in * scale_factor)`` in double precision.
    """
    return all(math.floor(g * ((s + offset) / g)) == s for g, s in zip(grid_size, size))


class INOViT(VisionTransformer):
    """timm ViT with a learnable mask token and a position table initialised for small inputs.

    Token layout: index 0 is the class token, 1..N the patch tokens in row-major order over the
    (H/p, W/p) grid. Works at any input size that is a multiple of the patch size. ``init_values`` (None: off)
    adds LayerScale to every block, initialised to that value, as DINOv2's ViTs (1e-5).
    """

    def __init__(
        self,
        patch_size: int = 8,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        pos_embed_size: int = 64,
        pos_embed_resize: str = "released",
        init_values: float | None = None,
    ):
        if pos_embed_resize not in RESIZE_MODES:
            raise ValueError(f"pos_embed_resize must be one of {RESIZE_MODES}, got {pos_embed_resize!r}")
        if pos_embed_size % patch_size:
            raise ValueError(f"pos_embed_size {pos_embed_size} is not a multiple of patch_size {patch_size}")
        super().__init__(
            img_size=pos_embed_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path_rate=drop_path_rate,
            num_classes=0, global_pool="token", class_token=True, dynamic_img_size=True, init_values=init_values,
        )
        self.pos_embed_resize = pos_embed_resize
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))  # Sec. 3.3, iBOT/INO
        trunc_normal_(self.mask_token, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)  # DINO's init (timm uses 1e-6)

    # -- position embedding ---------------------------------------------------------------------
    def pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position table for a (h, w) patch grid: (1, 1 + h*w, D), class token first."""
        g_h, g_w = self.patch_embed.grid_size
        if tuple(grid) == (g_h, g_w):
            return self.pos_embed
        D = self.pos_embed.shape[-1]
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = patch_pos.reshape(1, g_h, g_w, D).permute(0, 3, 1, 2)
        patch_pos = resize_pos_grid(patch_pos, grid, self.pos_embed_resize)
        patch_pos = patch_pos.to(self.pos_embed.dtype).flatten(2).transpose(1, 2)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w, D) patch embeddings -> (B, 1 + h*w, D) tokens with class token and positions.

        Overrides timm so that every timm entry point (forward_features, forward_intermediates,
        get_intermediate_layers) uses the same resize as :meth:`encode`.
        """
        B, h, w, D = x.shape
        x = torch.cat([self.cls_token.expand(B, -1, -1).to(x.dtype), x.reshape(B, h * w, D)], dim=1)
        return self.pos_drop(x + self.pos_embed_for((h, w)))

    # -- tokens ----------------------------------------------------------------------------------
    def grid_size(self, images: torch.Tensor) -> tuple[int, int]:
        """Patch grid (h, w) of (B, 3, H, W) images."""
        p = self.patch_embed.patch_size
        H, W = images.shape[-2:]
        if H % p[0] or W % p[1]:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p[0]}")
        return H // p[0], W // p[1]

    def prepare_tokens(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens entering the first block.

        Args:
            images: (B, 3, H, W).
            mask: optional bool (B, N) or (B, h, w), N = h*w patches; True = replace that patch
                embedding by the mask token *before* the position embedding is added (iBOT/INO order).
                The class token is never masked.
        Returns:
            (B, 1 + N, D).
        """
        h, w = self.grid_size(images)
        x = self.patch_embed(images)  # (B, h, w, D)
        if mask is not None:
            B = x.shape[0]
            if mask.dtype != torch.bool or mask.numel() != B * h * w:
                raise ValueError(f"mask must be bool with {B}x{h * w} entries for images "
                                 f"{tuple(images.shape)}, got {mask.dtype} {tuple(mask.shape)}")
            m = mask.reshape(B, h, w, 1).to(x.device, non_blocking=True)
            x = torch.where(m, self.mask_token.to(x.dtype).reshape(1, 1, 1, -1), x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        return self.norm_pre(x)

    def encode(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Class token (B, D) and patch tokens (B, N, D) after the last block and the final norm."""
        x = self.prepare_tokens(images, mask)
        if self.grad_checkpointing and torch.is_grad_enabled():
            from timm.models._manipulate import checkpoint_seq
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        x = self.norm(x)
        return x[:, 0], x[:, 1:]

    def block_features(self, images: torch.Tensor, block: int, norm: bool = True,
                       mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Output of block ``block`` (1-based), optionally through the final norm; later blocks are skipped.

        The released label propagation uses ``block=7, norm=True`` on ViT-S/8 (``infer_vos.py``).
        Returns class token (B, D) and patch tokens (B, N, D).
        """
        if not 1 <= block <= len(self.blocks):
            raise ValueError(f"block must be in 1..{len(self.blocks)}, got {block}")
        x = self.prepare_tokens(images, mask)
        for blk in self.blocks[:block]:
            x = blk(x)
        if norm:
            x = self.norm(x)
        return x[:, 0], x[:, 1:]

    def patch_feature_map(self, images: torch.Tensor, block: int, norm: bool = True) -> torch.Tensor:
        """Patch features of ``block`` as a map: (B, D, h, w)."""
        h, w = self.grid_size(images)
        _, patches = self.block_features(images, block, norm)
        return patches.transpose(1, 2).reshape(patches.shape[0], -1, h, w)

    @torch.no_grad()
    def last_attention(self, images: torch.Tensor) -> torch.Tensor:
        """Attention probabilities of the last block, (B, heads, 1 + N, 1 + N), for visualisation.

        Row 0 is the class token's attention; ``attn[:, :, 0, 1:]`` reshaped to (h, w) is DINO's map.
        Computed explicitly from the block's qkv projection, so it works with fused SDPA attention.
        """
        x = self.prepare_tokens(images)
        for blk in self.blocks[:-1]:
            x = blk(x)
        blk = self.blocks[-1]
        attn = blk.attn
        y = blk.norm1(x)
        B, N, _ = y.shape
        qkv = attn.qkv(y).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        return ((q * attn.scale) @ k.transpose(-2, -1)).float().softmax(dim=-1)


class ProjectionHead(nn.Module):
    """DINO's projection head: MLP -> L2-normalise -> weight-normed linear layer (App. A.1).

    (..., in_dim) -> (..., out_dim) logits. ``num_layers`` counts the MLP's linear layers (N_l, App.
    B.1.4). The last layer uses ``torch.nn.utils.parametrizations.weight_norm`` (deep-copyable); its
    gain is 1 and frozen when ``norm_last_layer``. State dicts of DINO/INO heads
    (``last_layer.weight_g``/``weight_v``) load too.
    """

    def __init__(self, in_dim: int, out_dim: int = 4096, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 num_layers: int = 3, norm_last_layer: bool = True):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if num_layers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(num_layers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        gain = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad_(not norm_last_layer)
        self._register_load_state_dict_pre_hook(self._rename_old_weight_norm)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @staticmethod
    def _rename_old_weight_norm(state_dict, prefix, *args) -> None:
        for old, new in (("weight_g", "original0"), ("weight_v", "original1")):
            key = f"{prefix}last_layer.{old}"
            if key in state_dict:
                state_dict[f"{prefix}last_layer.parametrizations.weight.{new}"] = state_dict.pop(key)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2)
        return self.last_layer(x)


class INONetwork(nn.Module):
    """Backbone + head over a clip's multi-crop views: one backbone call per crop resolution.

    The head runs only on tokens that feed a loss: class tokens of global and local crops, and
    global patch tokens at the masked positions (the only ones L_in_mim and L_in_aff read). Local
    crops' patch tokens never reach the head (the released code computes and discards them).
    """

    def __init__(self, backbone: INOViT, head: ProjectionHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        apply_mask: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Run the views of B clips of T frames (Sec. 3.1, 3.3).

        ``global_crops`` (B, T, 3, Hg, Wg); optional ``local_crops`` (B, T, M, 3, Hl, Wl) and bool ``mask``
        (B, T, N). ``apply_mask`` (student) puts the mask token at masked patches; False (teacher) does not.

        Returns a dict: ``cls_global`` (B, T, K); with local crops, ``cls_local`` (B, T, M, K); with ``mask``,
        ``patch`` (B, T, P, K) at the masked ``patch_index``, valid where ``patch_mask`` (B, T, P)
        (:func:`inolib.masking.masked_positions`).
        """
        if global_crops.dim() != 5:
            raise ValueError(f"global_crops must be (B, T, 3, H, W), got {tuple(global_crops.shape)}")
        B, T = global_crops.shape[:2]
        flat_mask = None
        if mask is not None:
            if mask.shape[:2] != (B, T):
                raise ValueError(f"mask {tuple(mask.shape)} does not match clips {B}x{T}")
            if apply_mask:
                flat_mask = mask.reshape(B * T, -1)
        cls_g, patches = self.backbone.encode(global_crops.flatten(0, 1), flat_mask)  # (BT, D), (BT, N, D)
        to_head = [cls_g]
        sizes = [B * T]
        if local_crops is not None:
            if local_crops.dim() != 6 or local_crops.shape[:2] != (B, T):
                raise ValueError(f"local_crops must be (B, T, M, 3, H, W), got {tuple(local_crops.shape)}")
            M = local_crops.shape[2]
            cls_l, _ = self.backbone.encode(local_crops.flatten(0, 2))  # (BTM, D); patch tokens unused
            to_head.append(cls_l)
            sizes.append(B * T * M)
        if mask is not None:
            index, valid = masked_positions(mask)  # (B, T, P)
            index = index.to(patches.device, non_blocking=True)
            P = index.shape[-1]
            D = patches.shape[-1]
            sel = patches.gather(1, index.reshape(B * T, P, 1).expand(-1, -1, D))
            to_head.append(sel.reshape(B * T * P, D))
            sizes.append(B * T * P)
        logits = self.head(torch.cat(to_head, dim=0))  # one head call for every token that feeds a loss
        parts = logits.split(sizes, dim=0)
        K = logits.shape[-1]
        out = {"cls_global": parts[0].reshape(B, T, K)}
        if local_crops is not None:
            out["cls_local"] = parts[1].reshape(B, T, M, K)
        if mask is not None:
            out["patch"] = parts[-1].reshape(B, T, P, K)
            out["patch_index"] = index
            out["patch_mask"] = valid.to(patches.device, non_blocking=True)
        return out

    def patch_logits(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Head logits of EVERY patch token, for looking at what the patch losses compare (training runs the head
        only where a loss reads it, see :meth:`forward`).

        Args:
            images: (B, 3, H, W) normalised frames or crops.
            mask: optional bool (B, N): these patches get the mask token (the student's view).
        Returns:
            (B, N, K) logits, N = (H / p) * (W / p).
        """
        if images.dim() != 4:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        _, patches = self.backbone.encode(images, mask)  # (B, N, D)
        return self.head(patches)


def build_backbone(cfg: ModelConfig, drop_path_rate: float | None = None) -> INOViT:
    """The ViT of ``cfg`` (``drop_path_rate`` overrides the config, e.g. 0 for the teacher)."""
    return INOViT(
        patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias,
        drop_path_rate=cfg.drop_path_rate if drop_path_rate is None else drop_path_rate,
        pos_embed_size=cfg.pos_embed_size, pos_embed_resize=cfg.pos_embed_resize,
    )


def build_head(cfg: ModelConfig) -> ProjectionHead:
    """The projection head of ``cfg``."""
    return ProjectionHead(cfg.embed_dim, cfg.head_out_dim, cfg.head_hidden_dim, cfg.head_bottleneck_dim,
                          cfg.head_num_layers, cfg.norm_last_layer)


def build_network(cfg: ModelConfig, drop_path_rate: float | None = None) -> INONetwork:
    """Backbone + head of ``cfg``: the student (or, with ``drop_path_rate=0``, the teacher)."""
    return INONetwork(build_backbone(cfg, drop_path_rate), build_head(cfg))


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())
