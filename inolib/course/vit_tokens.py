"""Looking inside the ViT's tokens: the position table, patch features as colours, the class token's attention.

Lesson 02 compares the shipped model with a random initialisation of the same network through these measures:

    pos_table(vit, grid)           the patch position table (h, w, D), resized as the network resizes it
    pos_similarity(table, i, j)    cosine similarity of one position to every position: (h, w)
    similarity_by_distance(table)  mean cosine similarity of two positions at each grid distance 1, 2, ...
    pca_rgb(fmap)                  the 3 leading principal components of a (D, h, w) feature map as an RGB image
    explained_variance(feats, k)   the share of the feature variance in each of the k leading components
    patch_colours(frame, grid)     the mean RGB colour of every patch: (h*w, 3)
    colour_share(feats, colours)   the share of the feature variance a linear function of the colour explains
    cell_coverage(mask, grid)      the fraction of each patch that a pixel mask covers: (h, w)
    attention_share(attn, cover)   the share of the class token's attention that falls on a covered region

Nothing here trains or changes a network; every function is a pure function of tensors (and ``pos_table`` of a
network's parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_grid(grid, name: str = "grid") -> tuple[int, int]:
    if len(grid) != 2 or any(int(g) != g or g < 1 for g in grid):
        raise ValueError(f"{name} must be a (rows, columns) pair of whole numbers >= 1, got {tuple(grid)}")
    return int(grid[0]), int(grid[1])


def pos_table(vit, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """The position table of ``vit``'s patch tokens as a grid (h, w, D), class-token position left out.

    Without ``grid`` it is the table as learned (8 x 8 for a 64-pixel table at patch 8); with ``grid`` = (h, w) it is
    resized exactly as the network resizes it for an input of that many patches (``vit.pos_embed_for``: the
    released bicubic form by default).
    """
    native = tuple(vit.patch_embed.grid_size)
    grid = native if grid is None else _check_grid(grid)
    with torch.no_grad():
        table = vit.pos_embed_for(grid)[0, 1:]  # (h*w, D)
    return table.detach().float().reshape(grid[0], grid[1], -1)


def pos_similarity(table: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """Cosine similarity of the position (row, col) of ``table`` (h, w, D) to every position: (h, w) in [-1, 1]."""
    if not isinstance(table, torch.Tensor) or table.dim() != 3:
        raise ValueError(f"table must be a (h, w, D) tensor, got {getattr(table, 'shape', type(table))}")
    h, w, D = table.shape
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"(row, col) must lie in the {h}x{w} table, got ({row}, {col})")
    z = F.normalize(table.float().reshape(h * w, D), dim=-1)
    return (z @ z[row * w + col]).reshape(h, w)


def fraction_cell(fraction: float, size: int) -> int:
    """The cell of a grid of ``size`` cells at ``fraction`` (0-1) of its extent: ``min(size - 1,
    floor(fraction * size))``, so tables of different sizes are queried at the same place."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return min(size - 1, int(fraction * size))


def similarity_by_distance(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cosine similarity of two positions of ``table`` (h, w, D) as a function of their grid distance.

    The distance is the Chebyshev distance max(|row difference|, |column difference|) in patches. Returns
    ``distances`` (K,) = 1..max(h, w) - 1 and ``similarity`` (K,), the mean over all pairs at that distance. A table
    that encodes position smoothly starts high at distance 1 and falls; an untrained one is near 0 everywhere.
    """
    if not isinstance(table, torch.Tensor) or table.dim() != 3 or max(table.shape[:2]) < 2:
        raise ValueError(f"table must be a (h, w, D) tensor with at least 2 positions, got "
                         f"{getattr(table, 'shape', type(table))}")
    h, w, D = table.shape
    z = F.normalize(table.detach().float().reshape(h * w, D), dim=-1)
    sim = z @ z.T  # (hw, hw)
    rows, cols = torch.arange(h).repeat_interleave(w), torch.arange(w).repeat(h)
    dist = torch.maximum((rows[:, None] - rows[None]).abs(), (cols[:, None] - cols[None]).abs())
    distances = torch.arange(1, max(h, w))
    means = torch.stack([sim[dist == d].mean() for d in distances.tolist()])
    return distances, means


def _check_feats(feats: torch.Tensor) -> torch.Tensor:
    if not isinstance(feats, torch.Tensor) or feats.dim() != 2 or feats.shape[0] < 2:
        raise ValueError(f"feats must be a (N, D) tensor with N >= 2 rows, got {getattr(feats, 'shape', type(feats))}")
    return feats.detach().double()


def _components(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred x (N, D) -> the k leading principal directions (D, k), sign-fixed, and all singular values."""
    _, S, Vh = torch.linalg.svd(x, full_matrices=False)
    V = Vh[:k].T  # (D, k)
    # a component's sign is arbitrary: fix it so that its largest loading is positive (as scikit-learn does)
    sign = torch.sign(V.gather(0, V.abs().argmax(0, keepdim=True)))
    return V * sign, S


def explained_variance(feats: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Share of the total variance of ``feats`` (N, D) in each of its ``k`` leading principal components: (k,)."""
    x = _check_feats(feats)
    if not 1 <= k <= min(x.shape):
        raise ValueError(f"k must be in 1..{min(x.shape)} for feats {tuple(x.shape)}, got {k}")
    x = x - x.mean(0)
    _, S = _components(x, k)
    var = S ** 2
    return (var[:k] / var.sum()).float()


def pca_rgb(fmap: torch.Tensor, k: int = 3, clip: float = 0.01) -> torch.Tensor:
    """A feature map (D, h, w) as an image: its ``k`` = 3 leading principal components as R, G, B: (h, w, 3).

    The components are fitted on this map's own h*w patch features (centred), each projection is scaled to [0, 1]
    between its ``clip`` and ``1 - clip`` quantiles (a few extreme patches do not wash out the rest), and each
    component's sign is fixed (largest loading positive), so the same features give the same colours.
    """
    if not isinstance(fmap, torch.Tensor) or fmap.dim() != 3:
        raise ValueError(f"fmap must be a (D, h, w) feature map, got {getattr(fmap, 'shape', type(fmap))}")
    if k != 3:
        raise ValueError(f"k must be 3 (one component per colour channel), got {k}")
    if not 0 <= clip < 0.5:
        raise ValueError(f"clip must be in [0, 0.5), got {clip}")
    D, h, w = fmap.shape
    x = _check_feats(fmap.reshape(D, h * w).T)
    x = x - x.mean(0)
    V, _ = _components(x, k)
    proj = x @ V  # (N, 3)
    lo, hi = torch.quantile(proj, clip, dim=0), torch.quantile(proj, 1 - clip, dim=0)
    rgb = ((proj - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    return rgb.reshape(h, w, 3).float()


def patch_colours(frame: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Mean RGB colour in [0, 1] of each cell of a (h, w) grid over ``frame`` uint8 (3, H, W): (h*w, 3), row-major."""
    h, w = _check_grid(grid)
    if not isinstance(frame, torch.Tensor) or frame.dim() != 3 or frame.shape[0] != 3 or frame.dtype != torch.uint8:
        raise ValueError(f"frame must be a uint8 (3, H, W) image, got {getattr(frame, 'dtype', None)} "
                         f"{tuple(getattr(frame, 'shape', ()))}")
    cells = F.adaptive_avg_pool2d(frame[None].float() / 255, (h, w))[0]  # (3, h, w)
    return cells.reshape(3, h * w).T


def colour_share(feats: torch.Tensor, colours: torch.Tensor) -> float:
    """Share of the variance of ``feats`` (N, D) that a linear function of ``colours`` (N, C) explains (R^2).

    Least squares of the centred features on the colours plus a constant; 1 means the features are a linear
    function of the colour (they carry nothing else), 0 that the colour predicts none of them.
    """
    x = _check_feats(feats)
    if not isinstance(colours, torch.Tensor) or colours.dim() != 2 or colours.shape[0] != x.shape[0]:
        raise ValueError(f"colours must be ({x.shape[0]}, C), one row per feature row, got "
                         f"{tuple(getattr(colours, 'shape', ()))}")
    x = x - x.mean(0)
    colours = colours.to(x.device).double()
    A = torch.cat([colours, torch.ones(len(colours), 1, dtype=torch.double, device=x.device)], dim=1)
    coef = torch.linalg.lstsq(A, x).solution
    return float(1 - ((x - A @ coef) ** 2).sum() / (x ** 2).sum().clamp_min(1e-30))


def cell_coverage(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Fraction of each cell of a (h, w) grid that the pixel mask (H, W) (nonzero = inside) covers: (h, w)."""
    h, w = _check_grid(grid)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError(f"mask must be an (H, W) tensor, got {getattr(mask, 'shape', type(mask))}")
    return F.adaptive_avg_pool2d((mask != 0).float()[None, None], (h, w))[0, 0]


def attention_share(attn: torch.Tensor, cover: torch.Tensor) -> torch.Tensor:
    """Share of each head's attention that falls on a region: ``attn`` (heads, N) over N patches (each row summing
    to at most 1, e.g. the class token's row without itself), ``cover`` (h, w) with h*w = N the fraction of each
    patch inside the region (:func:`cell_coverage`). Returns (heads,). A head that ignores the region's content
    gets about ``cover.mean()``, the region's share of the area."""
    if not isinstance(attn, torch.Tensor) or attn.dim() != 2:
        raise ValueError(f"attn must be (heads, N), got {getattr(attn, 'shape', type(attn))}")
    if cover.numel() != attn.shape[1]:
        raise ValueError(f"cover has {cover.numel()} cells but attn has {attn.shape[1]} patches")
    return attn.float() @ cover.reshape(-1).float().to(attn.device)
