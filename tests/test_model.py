"""ViT with mask token, position-table resize, projection head and the multi-crop network."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from inolib import config as C
from inolib.masking import masked_positions, random_mask
from inolib.model import (INOViT, ProjectionHead, build_backbone, build_network, count_parameters,
                          released_resize_is_exact, resize_pos_grid)

SMALL = dict(patch_size=8, embed_dim=48, depth=3, num_heads=3)


def small_vit(**kw):
    torch.manual_seed(0)
    return INOViT(**{**SMALL, **kw}).eval()


def plain_timm_vit(vit: INOViT) -> VisionTransformer:
    """timm's own ViT with the same weights (no mask token)."""
    ref = VisionTransformer(img_size=64, patch_size=8, embed_dim=48, depth=3, num_heads=3, num_classes=0,
                            global_pool="token", class_token=True, dynamic_img_size=True, qkv_bias=True)
    sd = {k: v for k, v in vit.state_dict().items() if k != "mask_token"}
    ref.load_state_dict(sd)
    return ref.eval()


def dino_interpolate(pos_embed: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Transcription of DINO/INO ``interpolate_pos_encoding`` (scale_factor form with +0.1)."""
    N = pos_embed.shape[1] - 1
    dim = pos_embed.shape[-1]
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    w0, h0 = h + 0.1, w + 0.1  # DINO names dim -2 "w0"
    g = int(math.sqrt(N))
    patch_pos = F.interpolate(patch_pos.reshape(1, g, g, dim).permute(0, 3, 1, 2),
                              scale_factor=(w0 / math.sqrt(N), h0 / math.sqrt(N)), mode="bicubic")
    assert int(w0) == patch_pos.shape[-2] and int(h0) == patch_pos.shape[-1]
    patch_pos = patch_pos.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((cls_pos, patch_pos), dim=1)


# -- mask token --------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(64, 64), (96, 80), (40, 120)])
def test_unmasked_path_equals_timm_forward(size):
    vit = small_vit(pos_embed_resize="timm")
    ref = plain_timm_vit(vit)
    x = torch.randn(2, 3, *size)
    N = (size[0] // 8) * (size[1] // 8)
    with torch.no_grad():
        cls, patches = vit.encode(x, mask=torch.zeros(2, N, dtype=torch.bool))
        expected = ref.forward_features(x)
    torch.testing.assert_close(cls, expected[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(patches, expected[:, 1:], rtol=1e-5, atol=1e-5)


def test_released_resize_equals_timm_forward_at_native_size():
    vit = small_vit()  # released resize: no resize at all at 64x64
    ref = plain_timm_vit(vit)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        cls, patches = vit.encode(x)
        torch.testing.assert_close(torch.cat([cls[:, None], patches], 1), ref.forward_features(x))


def test_mask_token_replaces_patch_embedding_before_position():
    vit = small_vit()
    x = torch.randn(2, 3, 96, 64)
    h, w = 12, 8
    gen = torch.Generator().manual_seed(3)
    mask = torch.rand(2, h * w, generator=gen) < 0.4
    seen = {}
    hook = vit.blocks[0].register_forward_pre_hook(lambda mod, args: seen.__setitem__("x", args[0].clone()))
    with torch.no_grad():
        vit.encode(x, mask)
        masked_in = seen["x"]
        vit.encode(x)
        clean_in = seen["x"]
    hook.remove()
    pos = vit.pos_embed_for((h, w))[0]  # (1 + N, D)
    # class token never masked, unmasked patches unchanged
    torch.testing.assert_close(masked_in[:, 0], clean_in[:, 0])
    keep = ~mask
    torch.testing.assert_close(masked_in[:, 1:][keep], clean_in[:, 1:][keep])
    # masked patches: mask token + position embedding of that position
    expected = vit.mask_token[0, 0] + pos[1:].expand(2, -1, -1)
    torch.testing.assert_close(masked_in[:, 1:][mask], expected[mask])
    assert not torch.allclose(masked_in[:, 1:][mask], clean_in[:, 1:][mask])


def test_mask_shape_and_dtype_are_checked():
    vit = small_vit()
    x = torch.randn(2, 3, 64, 64)
    with pytest.raises(ValueError, match="mask"):
        vit.encode(x, torch.zeros(2, 63, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        vit.encode(x, torch.zeros(2, 64))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        vit.encode(torch.randn(1, 3, 60, 64))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu_forward_and_backward(dtype):
    cfg = C.smoke()
    net = build_network(cfg.model)
    g = torch.randn(2, 4, 3, 64, 64)
    l = torch.randn(2, 4, 2, 3, 32, 32)
    mask = random_mask(2, 4, (8, 8), prob=1.0, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=dtype):
        out = net(g, l, mask)
        loss = sum(v.float().square().mean() for k, v in out.items() if v.is_floating_point())
    assert out["patch"].dtype == dtype
    loss.backward()
    assert torch.isfinite(net.backbone.mask_token.grad).all()
    assert net.backbone.mask_token.grad.abs().sum() > 0


# -- position embedding --------------------------------------------------------------------------

def test_pos_embed_initialised_for_64_and_resized_to_224_and_480p():
    vit = build_backbone(C.charades().model)
    assert vit.pos_embed.shape == (1, 1 + 8 * 8, 384)
    assert vit.pos_embed_for((28, 28)).shape == (1, 1 + 28 * 28, 384)
    assert vit.pos_embed_for((60, 106)).shape == (1, 1 + 60 * 106, 384)
    with torch.no_grad():
        _, p = vit.encode(torch.randn(1, 3, 224, 224))
    assert p.shape == (1, 784, 384)


def test_released_resize_reproduces_dino_form_bit_for_bit():
    vit = small_vit()
    sizes = [(28, 28), (60, 106), (106, 60), (9, 7), (13, 31), (45, 80), (90, 160), (1, 5)]
    with torch.no_grad():
        for h, w in sizes:
            assert released_resize_is_exact((8, 8), (h, w))
            assert torch.equal(vit.pos_embed_for((h, w)), dino_interpolate(vit.pos_embed, h, w)), (h, w)


def test_released_and_timm_resizes_differ_and_timm_matches_timm():
    vit = small_vit()
    grid = vit.pos_embed[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    a = resize_pos_grid(grid, (28, 28), "released")
    b = resize_pos_grid(grid, (28, 28), "timm")
    rel = (a - b).norm() / b.norm()
    assert 0.005 < rel < 0.1  # docs/released_code.md, "Model": 1-3.5 % apart
    from timm.layers import resample_abs_pos_embed
    t = resample_abs_pos_embed(vit.pos_embed, new_size=(28, 28), old_size=(8, 8), num_prefix_tokens=1)
    torch.testing.assert_close(b.flatten(2).transpose(1, 2), t[:, 1:])


def test_resize_gives_requested_grid_for_many_non_square_sizes():
    torch.manual_seed(0)
    for g in (8, 14):
        grid = torch.randn(1, 4, g, g)
        for h in range(1, 130, 3):
            for w in (1, 7, 53, 61, 106, 115, 122):
                for mode in ("released", "timm"):
                    assert resize_pos_grid(grid, (h, w), mode).shape[-2:] == (h, w)


def test_one_cell_short_scale_factor_falls_back_to_explicit_size():
    # Without DINO's +0.1 a 14x14 table (ViT/16 at 224) floors to 60 instead of 61 cells (dino issue 8).
    grid = torch.randn(1, 4, 14, 14)
    assert not released_resize_is_exact((14, 14), (61, 61), offset=0.0)
    raw = F.interpolate(grid, scale_factor=(61 / 14, 61 / 14), mode="bicubic", align_corners=False)
    assert raw.shape[-2:] == (60, 60)
    out = resize_pos_grid(grid, (61, 61), "released", offset=0.0)
    assert out.shape[-2:] == (61, 61)
    torch.testing.assert_close(out, F.interpolate(grid, size=(61, 61), mode="bicubic", align_corners=False))
    with pytest.raises(ValueError):
        resize_pos_grid(grid, (20, 20), "nearest")


# -- features and attention ------------------------------------------------------------------------

def test_block_features_last_block_equals_encode_and_timm_intermediates():
    vit = small_vit()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        cls, patches = vit.encode(x)
        c3, p3 = vit.block_features(x, block=3)
        torch.testing.assert_close(c3, cls)
        torch.testing.assert_close(p3, patches)
        c2, p2 = vit.block_features(x, block=2, norm=True)
        ((p_timm, c_timm),) = vit.forward_intermediates(x, indices=[1], norm=True, return_prefix_tokens=True,
                                                         output_fmt="NLC", intermediates_only=True)
        torch.testing.assert_close(p2, p_timm)
        torch.testing.assert_close(c2, c_timm[:, 0])
        assert not torch.allclose(p2, p3)
        fmap = vit.patch_feature_map(x, block=2)
    assert fmap.shape == (2, 48, 8, 10)
    torch.testing.assert_close(fmap.flatten(2).transpose(1, 2), p2)
    with pytest.raises(ValueError):
        vit.block_features(x, block=4)


def test_last_attention_matches_the_block_computation():
    vit = small_vit()
    x = torch.randn(2, 3, 64, 64)
    attn = vit.last_attention(x)
    assert attn.shape == (2, 3, 65, 65)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3, 65))
    # attn @ v through the projection equals the block's own (fused SDPA) attention output
    with torch.no_grad():
        t = vit.prepare_tokens(x)
        for blk in vit.blocks[:-1]:
            t = blk(t)
        blk = vit.blocks[-1]
        y = blk.norm1(t)
        v = blk.attn.qkv(y).reshape(2, 65, 3, 3, 16).permute(2, 0, 3, 1, 4)[2]
        mine = blk.attn.proj((attn @ v).transpose(1, 2).reshape(2, 65, 48))
        torch.testing.assert_close(mine, blk.attn(y), rtol=1e-4, atol=1e-5)


# -- head and network ------------------------------------------------------------------------------

def test_head_architecture_deepcopy_and_old_weight_norm_keys():
    torch.manual_seed(0)
    head = ProjectionHead(48, out_dim=64, hidden_dim=32, bottleneck_dim=16, num_layers=3)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(48, 32), (32, 32), (32, 16)]
    x = torch.randn(5, 48)
    y = head(x)
    assert y.shape == (5, 64)
    gain = head.last_layer.parametrizations.weight.original0
    assert not gain.requires_grad and torch.all(gain == 1)
    # with unit gain the last layer's rows are unit vectors, and its input is L2-normalised
    w = head.last_layer.weight
    torch.testing.assert_close(w.norm(dim=1), torch.ones(64))
    twin = copy.deepcopy(head)  # the old nn.utils.weight_norm breaks deepcopy after a forward
    torch.testing.assert_close(twin(x), y)
    # DINO-format state dict (weight_g / weight_v) loads
    sd = {k: v for k, v in head.state_dict().items() if "parametrizations" not in k}
    sd["last_layer.weight_g"] = torch.ones(64, 1)
    sd["last_layer.weight_v"] = head.last_layer.parametrizations.weight.original1.detach() * 3
    other = ProjectionHead(48, out_dim=64, hidden_dim=32, bottleneck_dim=16, num_layers=3)
    other.load_state_dict(sd)
    torch.testing.assert_close(other(x), y)
    assert len(ProjectionHead(48, 64, 32, 16, num_layers=1).mlp.weight.shape) == 2
    assert ProjectionHead(48, 64, 32, 16, norm_last_layer=False).last_layer.parametrizations.weight.original0.requires_grad


def test_network_runs_head_only_on_tokens_that_feed_a_loss():
    cfg = C.smoke()
    torch.manual_seed(0)
    net = build_network(cfg.model).eval()
    B, T, M = 2, 4, 3
    g = torch.randn(B, T, 3, 64, 64)
    l = torch.randn(B, T, M, 3, 32, 32)
    mask = random_mask(B, T, (8, 8), ratio=(0.25, 0.25), prob=1.0, generator=torch.Generator().manual_seed(0))
    P = int(mask[0, 0].sum())
    head_rows, embed_calls = [], []
    net.head.register_forward_hook(lambda m, a, o: head_rows.append(a[0].shape[0]))
    net.backbone.patch_embed.register_forward_hook(lambda m, a, o: embed_calls.append(tuple(a[0].shape)))
    with torch.no_grad():
        out = net(g, l, mask)
    assert embed_calls == [(B * T, 3, 64, 64), (B * T * M, 3, 32, 32)]  # one backbone call per resolution
    assert head_rows == [B * T + B * T * M + B * T * P]  # no local patch token, no unmasked patch token
    assert out["cls_global"].shape == (B, T, 128)
    assert out["cls_local"].shape == (B, T, M, 128)
    assert out["patch"].shape == (B, T, P, 128)
    # the logits are the head of the right tokens
    with torch.no_grad():
        cls, patches = net.backbone.encode(g.flatten(0, 1), mask.flatten(0, 1))
        index, valid = masked_positions(mask)
        sel = patches.reshape(B, T, 64, -1).gather(2, index[..., None].expand(-1, -1, -1, patches.shape[-1]))
        torch.testing.assert_close(out["patch"], net.head(sel))
        torch.testing.assert_close(out["cls_global"], net.head(cls).reshape(B, T, -1))
        # the teacher path: same positions, no mask token
        t = net(g, None, mask, apply_mask=False)
        _, clean = net.backbone.encode(g.flatten(0, 1))
        clean_sel = clean.reshape(B, T, 64, -1).gather(2, index[..., None].expand(-1, -1, -1, clean.shape[-1]))
        torch.testing.assert_close(t["patch"], net.head(clean_sel))
    assert valid.all() and "cls_local" not in t
    assert torch.equal(out["patch_index"], index)


def test_network_without_mask_skips_patch_logits():
    net = build_network(C.smoke().model).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 2, 3, 64, 64))
    assert set(out) == {"cls_global"}


def test_paper_architectures():
    vit = build_backbone(C.charades().model)
    assert (vit.embed_dim, len(vit.blocks), vit.blocks[0].attn.num_heads) == (384, 12, 6)
    assert vit.patch_embed.patch_size == (8, 8)
    assert 21.0e6 < count_parameters(vit) < 22.5e6  # ViT-S/8: 21 M (Tab. 7)
    assert vit.blocks[0].norm1.eps == 1e-6
    tiny = build_backbone(C.tiny().model)
    assert 1e6 < count_parameters(tiny) < 5e6
    vit_t8 = build_backbone(C.with_arch(C.charades(), "vit_tiny").model)  # Tab. 6
    assert (vit_t8.embed_dim, len(vit_t8.blocks), vit_t8.blocks[0].attn.num_heads) == (192, 12, 3)
    assert 5.0e6 < count_parameters(vit_t8) < 6.0e6
    with pytest.raises(ValueError, match="unknown arch"):
        C.with_arch(C.charades(), "vit_huge")
