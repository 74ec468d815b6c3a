"""DINOv2's released ViT files (LayerScale, (1, D) mask token, patch 14, a 37x37 table) load as inolib backbones.

The reference is timm's ``vit_small_patch14_dinov2`` (random weights) written in DINOv2's key layout, and for other
input sizes DINOv2's own position interpolation, re-implemented here from its description (Oquab et al. 2023,
github.com/facebookresearch/dinov2, ``interpolate_pos_encoding``: bicubic, ``scale_factor=(h0 + 0.1) / M`` per
side, float32, no antialias, the table unchanged at M x M).
"""

import math

import pytest
import timm
import torch
import torch.nn.functional as F

from inolib import config as C
from inolib.checkpoint import load_backbone
from inolib.model import INOViT

PATCH, DIM = 14, 384


def dinov2_keys(depth: int) -> set[str]:
    """The keys of DINOv2's ``dinov2_vits14_pretrain.pth`` for ``depth`` blocks."""
    per_block = [f"{m}.{t}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
                 for t in ("weight", "bias")] + ["ls1.gamma", "ls2.gamma"]
    return {"cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight", "patch_embed.proj.bias",
            "norm.weight", "norm.bias"} | {f"blocks.{i}.{k}" for i in range(depth) for k in per_block}


def timm_dinov2(depth: int = 2, seed: int = 0):
    """timm's ViT-S/14 DINOv2 with random weights (LayerScale gammas and norms far from their init, so every
    weight matters) and its state dict in DINOv2's layout, with a (1, 384) mask token."""
    torch.manual_seed(seed)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, depth=depth).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".gamma"):
                p.uniform_(0.2, 1.0)
            else:
                p.add_(torch.randn_like(p) * 0.02)
    keys = dinov2_keys(depth)
    state = {k: v.clone() for k, v in model.state_dict().items() if k in keys}
    assert set(state) == keys - {"mask_token"}
    state["mask_token"] = torch.randn(1, DIM) * 0.02
    return model, state


def dinov2_table(pos_embed: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """DINOv2's position table for an h x w patch grid, written from its description: (1, 1 + h*w, D)."""
    N = pos_embed.shape[1] - 1
    M = int(math.sqrt(N))
    if (h, w) == (M, M):
        return pos_embed
    table = pos_embed.float()
    grid = table[:, 1:].reshape(1, M, M, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=(float(h + 0.1) / M, float(w + 0.1) / M), mode="bicubic",
                         antialias=False)
    assert grid.shape[-2:] == (h, w)
    return torch.cat([table[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1).to(pos_embed.dtype)


@torch.no_grad()
def dinov2_forward(model, images: torch.Tensor) -> torch.Tensor:
    """DINOv2's forward_features on timm's modules: (B, 1 + N, D) tokens after the final norm."""
    B, _, H, W = images.shape
    x = model.patch_embed.proj(images).flatten(2).transpose(1, 2)
    x = torch.cat([model.cls_token.expand(B, -1, -1), x], dim=1)
    x = x + dinov2_table(model.pos_embed, H // PATCH, W // PATCH)
    return model.norm(model.blocks(x))


def save(state: dict, path):
    torch.save(state, path)
    return path


def test_default_vit_has_no_layer_scale():
    vit = INOViT(patch_size=8, embed_dim=48, depth=2, num_heads=3)
    assert not any(".ls" in k for k in vit.state_dict())
    assert isinstance(vit.blocks[0].ls1, torch.nn.Identity)
    with_ls = INOViT(patch_size=8, embed_dim=48, depth=2, num_heads=3, init_values=1e-5)
    assert set(with_ls.state_dict()) - set(vit.state_dict()) == {f"blocks.{i}.ls{j}.gamma" for i in (0, 1)
                                                                   for j in (1, 2)}


def test_dinov2_file_matches_timm_at_518(tmp_path):
    model, state = timm_dinov2(depth=2)
    vit, rep = load_backbone(save(state, tmp_path / "dinov2_vits14_pretrain.pth"))
    assert rep["format"] == "dinov2" and rep["network"] == "bare state dict" and rep["mask_token"]
    assert (rep["patch_size"], rep["embed_dim"], rep["depth"], tuple(rep["pos_table"])) == (14, 384, 2, (37, 37))
    assert vit.blocks[0].attn.num_heads == 6 and vit.pos_embed_resize == "released"
    assert tuple(vit.mask_token.shape) == (1, 1, DIM)
    torch.testing.assert_close(vit.mask_token.reshape(1, DIM), state["mask_token"], rtol=0, atol=0)
    torch.manual_seed(1)
    x = torch.randn(1, 3, 518, 518)
    with torch.no_grad():
        cls, patches = vit.encode(x)
        ref = model.forward_features(x)
    assert patches.shape == (1, 37 * 37, DIM)
    torch.testing.assert_close(cls, ref[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(patches, ref[:, 1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ref, dinov2_forward(model, x), rtol=1e-5, atol=1e-5)  # the reference itself
    assert vit.pos_embed_for((37, 37)) is vit.pos_embed  # native grid: the table as stored, as DINOv2


def test_dinov2_position_interpolation_off_the_native_size(tmp_path):
    """224 x 308 (16 x 22 patches): inolib's table is DINOv2's, not a size= resize, and the features follow."""
    model, state = timm_dinov2(depth=12, seed=2)
    vit, rep = load_backbone(save(state, tmp_path / "vits14.pth"))
    assert rep["format"] == "dinov2" and rep["depth"] == 12
    h, w = 224 // PATCH, 308 // PATCH
    table = vit.pos_embed_for((h, w))
    want = dinov2_table(state["pos_embed"], h, w)
    assert table.shape == (1, 1 + h * w, DIM) and table.dtype == torch.float32
    torch.testing.assert_close(table, want, rtol=0, atol=0)
    grid = state["pos_embed"][:, 1:].reshape(1, 37, 37, DIM).permute(0, 3, 1, 2)
    by_size = F.interpolate(grid, size=(h, w), mode="bicubic").permute(0, 2, 3, 1).reshape(1, h * w, DIM)
    assert (table[:, 1:] - by_size).abs().max() > 1e-4  # the +0.1 scale-factor form is not a size= resize
    torch.manual_seed(3)
    x = torch.randn(2, 3, 224, 308)
    with torch.no_grad():
        cls, patches = vit.encode(x)
        fmap = vit.patch_feature_map(x, block=12)
    ref = dinov2_forward(model, x)
    assert torch.isfinite(cls).all() and torch.isfinite(patches).all()
    torch.testing.assert_close(cls, ref[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(patches, ref[:, 1:], rtol=1e-5, atol=1e-5)
    assert fmap.shape == (2, DIM, h, w)
    torch.testing.assert_close(fmap.flatten(2).transpose(1, 2), patches, rtol=0, atol=0)


def test_unsupported_dinov2_variants_are_refused(tmp_path):
    _, state = timm_dinov2(depth=1)
    regs = save({**state, "register_tokens": torch.zeros(1, 4, DIM)}, tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    with pytest.raises(ValueError, match=r"dinov2_vits14_reg4_pretrain\.pth.*register"):
        load_backbone(regs)
    swiglu = {k: v for k, v in state.items() if ".mlp." not in k}
    swiglu.update({"blocks.0.mlp.w12.weight": torch.zeros(2048, DIM), "blocks.0.mlp.w12.bias": torch.zeros(2048),
                   "blocks.0.mlp.w3.weight": torch.zeros(DIM, 1024), "blocks.0.mlp.w3.bias": torch.zeros(DIM)})
    with pytest.raises(ValueError, match=r"dinov2_vitg14\.pth.*SwiGLU"):
        load_backbone(save(swiglu, tmp_path / "dinov2_vitg14.pth"))


@pytest.mark.parametrize("round_to", [14, 0])
def test_label_propagation_on_a_patch_14_grid(tmp_path, round_to):
    from inolib.data import make_synthetic_video, read_davis_sequence, write_davis_layout
    from inolib.vos.segment import segment_sequence, sequence_features

    _, state = timm_dinov2(depth=2, seed=4)
    vit, _ = load_backbone(save(state, tmp_path / "dinov2.pth"))
    video = make_synthetic_video(num_frames=4, height=64, width=96, num_objects=2, late_objects=0, seed=1, name="s")
    write_davis_layout(video, tmp_path / "DAVIS")
    seq = read_davis_sequence(tmp_path / "DAVIS", "s")
    cfg = C.PropagationConfig(short_side=112, round_to=round_to, feature_block=2)
    feats = sequence_features(vit, seq, cfg)
    assert feats.shape == (4, DIM, 112 // PATCH, 168 // PATCH) and torch.isfinite(feats).all()
    masks = segment_sequence(vit, seq, cfg, features=feats)
    assert masks.shape == (4, 64, 96) and masks.dtype == torch.uint8
    assert set(masks.unique().tolist()) <= {0, 1, 2}
    assert set(masks[1:].unique().tolist()) & {1, 2}  # the objects are carried into later frames
