"""inolib.course.vit_tokens: the measures lesson 02 uses to compare a trained ViT with a random one."""

import math

import pytest
import torch

from inolib.course import vit_tokens as tokens
from inolib.config import smoke
from inolib.model import build_backbone


def test_pos_table_is_the_network_table_and_its_resize():
    vit = build_backbone(smoke().model)
    t = tokens.pos_table(vit)
    assert t.shape == (8, 8, vit.embed_dim)
    torch.testing.assert_close(t.reshape(64, -1), vit.pos_embed[0, 1:].detach())
    big = tokens.pos_table(vit, (30, 53))
    assert big.shape == (30, 53, vit.embed_dim)
    torch.testing.assert_close(big.reshape(30 * 53, -1), vit.pos_embed_for((30, 53))[0, 1:].detach())
    with pytest.raises(ValueError, match="grid"):
        tokens.pos_table(vit, (0, 5))


def test_pos_similarity_is_one_at_the_query_and_cosine_elsewhere():
    table = torch.zeros(2, 3, 2)
    table[..., 0] = 1.0
    table[1, 2] = torch.tensor([0.0, 1.0])
    table[0, 1] = torch.tensor([-1.0, 0.0])
    s = tokens.pos_similarity(table, 0, 0)
    assert s.shape == (2, 3) and s[0, 0] == 1 and s[1, 2] == 0 and s[0, 1] == -1
    with pytest.raises(ValueError, match="row, col"):
        tokens.pos_similarity(table, 2, 0)


def test_pca_finds_the_planted_directions_and_fixes_signs():
    g = torch.Generator().manual_seed(0)
    N, D = 200, 10
    basis = torch.linalg.qr(torch.randn(D, D, generator=g))[0]
    coords = torch.randn(N, 3, generator=g) * torch.tensor([5.0, 3.0, 2.0])
    feats = coords @ basis[:, :3].T + 0.01 * torch.randn(N, D, generator=g)
    ev = tokens.explained_variance(feats, 3)
    assert ev.sum() > 0.99 and ev[0] > ev[1] > ev[2]
    fmap = feats.T.reshape(D, 10, 20)
    rgb = tokens.pca_rgb(fmap)
    assert rgb.shape == (10, 20, 3) and rgb.min() >= 0 and rgb.max() <= 1
    perm = torch.randperm(D, generator=g)       # reordering the feature dimensions changes nothing, signs included
    torch.testing.assert_close(tokens.pca_rgb(fmap[perm]), rgb, atol=1e-5, rtol=0)
    # the red channel follows the first planted coordinate
    r = torch.corrcoef(torch.stack([rgb[..., 0].reshape(-1), coords[:, 0]]))[0, 1]
    assert abs(float(r)) > 0.95
    with pytest.raises(ValueError, match="k must be"):
        tokens.explained_variance(feats, 11)


def test_colour_share_is_one_for_colour_features_and_small_for_noise():
    g = torch.Generator().manual_seed(1)
    colours = torch.rand(300, 3, generator=g)
    feats = colours @ torch.randn(3, 16, generator=g) + 2.0
    assert tokens.colour_share(feats, colours) == pytest.approx(1.0, abs=1e-9)
    noise = torch.randn(300, 16, generator=g)
    assert tokens.colour_share(noise, colours) < 0.05
    with pytest.raises(ValueError, match="colours"):
        tokens.colour_share(feats, colours[:10])


def test_patch_colours_cell_coverage_and_attention_share():
    frame = torch.zeros(3, 16, 24, dtype=torch.uint8)
    frame[0, :8, :8] = 255                       # the top-left 8x8 cell is red
    c = tokens.patch_colours(frame, (2, 3))
    assert c.shape == (6, 3) and c[0].tolist() == [1.0, 0.0, 0.0] and c[1:].sum() == 0
    mask = torch.zeros(16, 24)
    mask[:8, :4] = 1                             # half of the top-left cell
    cover = tokens.cell_coverage(mask, (2, 3))
    assert cover[0, 0] == 0.5 and cover.sum() == 0.5
    uniform = torch.full((2, 6), 1 / 6)
    share = tokens.attention_share(uniform, cover)
    assert share.shape == (2,) and math.isclose(float(share[0]), float(cover.mean()), rel_tol=1e-6)
    with pytest.raises(ValueError, match="cells"):
        tokens.attention_share(uniform, torch.zeros(2, 2))


def test_similarity_by_distance_separates_a_smooth_table_from_noise():
    h, w = 6, 6
    rows, cols = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    # one Gaussian bump per grid cell: nearby positions share bumps, far ones do not
    smooth = torch.exp(-((rows[..., None] - rows.reshape(-1)) ** 2 + (cols[..., None] - cols.reshape(-1)) ** 2) / 2)
    d, s = tokens.similarity_by_distance(smooth)
    assert d.tolist() == [1, 2, 3, 4, 5] and s[0] > s[-1] and s[0] > 0.5
    noise = torch.randn(h, w, 256, generator=torch.Generator().manual_seed(0))
    _, sn = tokens.similarity_by_distance(noise)
    assert sn.abs().max() < 0.1
    with pytest.raises(ValueError, match="table"):
        tokens.similarity_by_distance(torch.zeros(1, 1, 4))


def test_fraction_cell_queries_grids_of_any_size_at_the_same_place():
    assert [tokens.fraction_cell(f, 10) for f in (0.0, 0.05, 0.5, 0.99, 1.0)] == [0, 0, 5, 9, 9]
    assert tokens.fraction_cell(0.5, 7) == 3 and tokens.fraction_cell(0.5, 1) == 0
    with pytest.raises(ValueError, match="fraction"):
        tokens.fraction_cell(1.5, 4)
    with pytest.raises(ValueError, match="size"):
        tokens.fraction_cell(0.5, 0)
