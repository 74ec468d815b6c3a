"""Figures for the course: pure matplotlib, each function returns a ``Figure`` (testable without a browser).

Images are uint8 (3, H, W) or normalised float (3, H, W) tensors; pass ``mean``/``std`` to undo the
normalisation of crops. Nothing here computes INO quantities: callers pass what inolib computed.
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..config import IMAGENET_MEAN, IMAGENET_STD
from ..vos.writers import blend_ids
from .vit_tokens import fraction_cell, pos_similarity


def to_image(x: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """(3, H, W) uint8 or float tensor -> (H, W, 3) float array in [0, 1] for ``imshow``.

    Float input is un-normalised with ``mean``/``std`` when given (ImageNet for crops).
    """
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        x = x.float() / 255
    elif mean is not None and std is not None:
        x = x.float() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def _grid(n: int, cols: int) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return math.ceil(n / cols), cols


def _new(rows: int, cols: int, size: float = 2.2, height: float | None = None, **kw) -> tuple[Figure, np.ndarray]:
    """A grid of panels without ticks, ``size`` wide and ``height`` (default ``size``) high each."""
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, (height or size) * rows), squeeze=False, **kw)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def _done(fig: Figure) -> Figure:
    fig.tight_layout()
    plt.close(fig)  # returned, not shown twice in notebooks
    return fig


def show_frames(frames: torch.Tensor, titles: Sequence[str] | None = None, cols: int = 4,
                mean=None, std=None) -> Figure:
    """A row (or grid) of frames (T, 3, H, W)."""
    rows, cols = _grid(len(frames), cols)
    fig, axes = _new(rows, cols, size=2.6)
    for i, ax in enumerate(axes.flat):
        if i < len(frames):
            ax.imshow(to_image(frames[i], mean, std))
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
        else:
            ax.axis("off")
    return _done(fig)


def show_clip_crops(frames: torch.Tensor, global_crops: torch.Tensor, local_crops: torch.Tensor,
                    indices: Sequence[int] | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Figure:
    """Each frame of a clip (T, 3, H, W) with its global crop (T, 3, Sg, Sg) and local crops (T, M, 3, Sl, Sl)."""
    T, M = local_crops.shape[:2]
    fig, axes = _new(T, 2 + M, size=1.6)
    for t in range(T):
        axes[t, 0].imshow(to_image(frames[t]))
        axes[t, 0].set_ylabel(f"frame {indices[t] if indices is not None else t}", fontsize=8)
        axes[t, 1].imshow(to_image(global_crops[t], mean, std))
        for m in range(M):
            axes[t, 2 + m].imshow(to_image(local_crops[t, m], mean, std))
    axes[0, 0].set_title("frame", fontsize=9)
    axes[0, 1].set_title("global", fontsize=9)
    for m in range(M):
        axes[0, 2 + m].set_title(f"local {m + 1}", fontsize=9)
    return _done(fig)


def show_crop_boxes(frame: torch.Tensor, boxes: torch.Tensor, values: dict[str, torch.Tensor], cbar_label: str = "",
                    vmin: float = 0.0, vmax: float = 1.0, cmap: str = "RdYlGn") -> Figure:
    """One frame (3, H, W) with crop boxes (n, 4) ``(top, left, h, w)`` drawn on it, once per entry of ``values``
    ``{panel title: (n,) one value per box}``; each box's outline is coloured by its value on a shared scale
    (``vmin`` to ``vmax``) with a colour bar. Axes in pixels of the frame."""
    if frame.dim() != 3 or frame.shape[0] != 3:
        raise ValueError(f"frame must be (3, H, W), got {tuple(frame.shape)}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (n, 4) rows (top, left, h, w), got {tuple(boxes.shape)}")
    if not values or any(torch.as_tensor(v).numel() != len(boxes) for v in values.values()):
        raise ValueError(f"values must map each panel to {len(boxes)} values (one per box), got "
                         f"{ {k: torch.as_tensor(v).numel() for k, v in values.items()} }")
    import matplotlib as mpl

    norm = mpl.colors.Normalize(vmin=vmin, vmax=vmax)
    colours = plt.get_cmap(cmap)
    H, W = frame.shape[-2:]
    fig, axes = plt.subplots(1, len(values), figsize=(3.8 * len(values) + 0.8, 3.8 * H / W + 0.6), squeeze=False)
    order = None
    for ax, (name, v) in zip(axes[0], values.items()):
        v = torch.as_tensor(v).detach().float().cpu()
        order = torch.argsort(v, descending=True)  # the worst boxes drawn last, on top
        ax.imshow(to_image(frame))
        for i in order.tolist():
            t, l, h, w = (int(x) for x in boxes[i])
            ax.add_patch(Rectangle((l - 0.5, t - 0.5), w, h, fill=False, lw=2, edgecolor=colours(norm(float(v[i])))))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
    fig.tight_layout()
    fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=colours), ax=list(axes[0]), label=cbar_label, shrink=0.9)
    plt.close(fig)
    return fig


def show_crop_sets(frame: torch.Tensor, boxes: dict[str, torch.Tensor], title: str = "") -> Figure:
    """Crop boxes drawn on a frame: ``frame`` uint8 (3, H, W), ``boxes`` {label: (n, 4) rows (top, left, height,
    width) in pixels} (e.g. :func:`inolib.augment.crop_boxes`), one colour per label. Axes in pixels."""
    if not boxes:
        raise ValueError("boxes must hold at least one set of boxes")
    for name, b in boxes.items():
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes[{name!r}] must be (n, 4) rows (top, left, height, width), got {tuple(b.shape)}")
    img = to_image(frame)
    H, W = img.shape[:2]
    fig, ax = plt.subplots(figsize=(6.4, 6.4 * H / W + 0.6))
    ax.imshow(img)
    colours = plt.get_cmap("tab10").colors
    for c, (name, b) in enumerate(boxes.items()):
        for k, (t, l, h, w) in enumerate(b.tolist()):
            ax.add_patch(Rectangle((l - 0.5, t - 0.5), w, h, fill=False, ec=colours[c % 10], lw=1.8,
                                   label=name if k == 0 else None))
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    ax.legend(fontsize=8, loc="upper right", framealpha=0.8)
    if title:
        ax.set_title(title, fontsize=10)
    return _done(fig)


def show_patch_grid(image: torch.Tensor, patch_size: int, mask: torch.Tensor | None = None,
                    title: str | None = None, mean=None, std=None) -> Figure:
    """An image with its patch grid; ``mask`` (N,) or (h, w) bool shades masked patches."""
    img = to_image(image, mean, std)
    H, W = img.shape[:2]
    h, w = H // patch_size, W // patch_size
    fig, axes = _new(1, 1, size=4)
    ax = axes[0, 0]
    ax.imshow(img)
    if mask is not None:
        m = mask.detach().cpu().reshape(h, w).float().numpy()
        ax.imshow(np.kron(m, np.ones((patch_size, patch_size))), cmap="Greys", alpha=0.75 * (np.kron(
            m, np.ones((patch_size, patch_size))) > 0), vmin=0, vmax=1, extent=(0, w * patch_size, h * patch_size, 0))
    for i in range(1, h):
        ax.axhline(i * patch_size - 0.5, color="w", lw=0.4, alpha=0.7)
    for j in range(1, w):
        ax.axvline(j * patch_size - 0.5, color="w", lw=0.4, alpha=0.7)
    ax.set_title(title or f"{h} x {w} = {h * w} patches of {patch_size} px", fontsize=9)
    return _done(fig)


def compare_feature_pca(image: torch.Tensor, maps: dict[str, torch.Tensor], notes: dict[str, str] | None = None,
                        mean=None, std=None) -> Figure:
    """Patch features as colours, side by side: the image, then one panel per network.

    Args:
        image: (3, H, W) uint8, or normalised float with ``mean``/``std``.
        maps: {network name: (h, w, 3)} values in [0, 1], e.g. :func:`inolib.course.vit_tokens.pca_rgb` of its feature map
            (the three leading principal components as red, green and blue).
        notes: optional {network name: text} added under the panel's title (e.g. the explained variance).
    Axes are in patches; patches of similar colour have similar features (within one panel only: each network
    has its own components).
    """
    if not maps:
        raise ValueError("maps must hold at least one network")
    for name, m in maps.items():
        if m.dim() != 3 or m.shape[-1] != 3:
            raise ValueError(f"maps[{name!r}] must be (h, w, 3), got {tuple(m.shape)}")
    img = to_image(image, mean, std)
    H, W = img.shape[:2]
    n = len(maps) + 1
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6 * H / W + 0.9), squeeze=False)
    axes[0, 0].imshow(img)
    axes[0, 0].set_title("frame", fontsize=9)
    axes[0, 0].set_xticks([]), axes[0, 0].set_yticks([])
    for ax, (name, m) in zip(axes[0, 1:], maps.items()):
        ax.imshow(m.detach().float().cpu().clamp(0, 1).numpy(), interpolation="nearest")
        note = (notes or {}).get(name)
        ax.set_title(f"{name}: PC 1-3 as R, G, B" + (f"\n{note}" if note else ""), fontsize=9)
        ax.set_xlabel("column (patches)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 1].set_ylabel("row (patches)", fontsize=8)
    return _done(fig)


def _patch_map(x: torch.Tensor, grid: tuple[int, int], name: str) -> np.ndarray:
    """(N,) or (h, w) per-patch values -> (h, w) float array; raises naming ``name`` on a wrong size."""
    h, w = grid
    x = torch.as_tensor(x).detach().float().cpu()
    if x.numel() != h * w:
        raise ValueError(f"{name} has {x.numel()} values, the patch grid {h}x{w} has {h * w}")
    return x.reshape(h, w).numpy()


def show_masks(image: torch.Tensor, masks: dict[str, torch.Tensor], patch_size: int, mean=None, std=None) -> Figure:
    """Several patch masks on the same image, one panel each: masked patches (True) greyed out.

    Args:
        image: (3, H, W), uint8 or normalised with ``mean``/``std``; H, W multiples of ``patch_size``.
        masks: {title: bool (N,) or (h, w)}, N = (H / patch_size) * (W / patch_size).
    Each title gets the count of masked patches appended.
    """
    if not masks:
        raise ValueError("masks must hold at least one mask")
    img = to_image(image, mean, std)
    H, W = img.shape[:2]
    if H % patch_size or W % patch_size:
        raise ValueError(f"image {H}x{W} is not a multiple of patch_size {patch_size}")
    grid = (H // patch_size, W // patch_size)
    fig, axes = _new(1, len(masks), size=3.0, height=3.0 * H / W + 0.4)
    for ax, (name, m) in zip(axes[0], masks.items()):
        m = _patch_map(m, grid, f"masks[{name!r}]") > 0
        shade = np.kron(m, np.ones((patch_size, patch_size)))[..., None]
        ax.imshow(np.where(shade > 0, 0.25 + 0.15 * img, img))  # masked: dark grey, a trace of the image left
        ax.set_title(f"{name}: {int(m.sum())} of {m.size} masked", fontsize=9)
    axes[0, 0].set_ylabel(f"{grid[0]} x {grid[1]} patches of {patch_size} px", fontsize=8)
    return _done(fig)


def show_pos_similarity(tables: dict[str, torch.Tensor], queries: Sequence[tuple[float, float]] = ((0.5, 0.5), (0.1, 0.1))) -> Figure:
    """Cosine similarity of chosen positions to every other position, for position tables (h, w, D).

    ``queries`` are (row, col) as fractions of the grid, so tables of different sizes are comparable. One column
    per table, one row per query (marked with a red cross); axes in patches, one shared colour bar from -1 to 1.
    """
    if not tables:
        raise ValueError("tables must hold at least one (h, w, D) table")
    for name, tab in tables.items():
        if tab.dim() != 3:
            raise ValueError(f"tables[{name!r}] must be (h, w, D), got {tuple(tab.shape)}")
    fig, axes = plt.subplots(len(queries), len(tables), figsize=(2.9 * len(tables) + 0.9, 2.5 * len(queries)),
                             squeeze=False)
    im = None
    for c, (name, tab) in enumerate(tables.items()):
        tab = tab.detach().float().cpu()
        h, w, _ = tab.shape
        for r, (qy, qx) in enumerate(queries):
            i, j = fraction_cell(qy, h), fraction_cell(qx, w)
            sim = pos_similarity(tab, i, j).numpy()
            ax = axes[r, c]
            im = ax.imshow(sim, cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
            ax.plot(j, i, "r+", ms=8)
            if r == 0:
                ax.set_title(f"{name}: {h}x{w}", fontsize=9)
            if r == len(queries) - 1:
                ax.set_xlabel("column (patches)", fontsize=8)
            if c == 0:
                ax.set_ylabel("row (patches)", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.colorbar(im, ax=list(axes.flat), label="cosine similarity to the + position", shrink=0.9)
    plt.close(fig)
    return fig


def show_attention(image: torch.Tensor, attn: torch.Tensor, grid: tuple[int, int], mean=None, std=None) -> Figure:
    """The class token's attention to the patches, per head: ``attn`` (heads, N) over the (h, w) grid."""
    heads = attn.shape[0]
    fig, axes = _new(1, heads + 1, size=2.4)
    axes[0, 0].imshow(to_image(image, mean, std))
    axes[0, 0].set_title("input", fontsize=9)
    for k in range(heads):
        axes[0, k + 1].imshow(attn[k].detach().float().cpu().reshape(grid).numpy(), cmap="inferno")
        axes[0, k + 1].set_title(f"head {k + 1}", fontsize=9)
    return _done(fig)


def compare_attention(image: torch.Tensor, attns: dict[str, torch.Tensor], grid: tuple[int, int], mean=None,
                      std=None, per_row: bool = False) -> Figure:
    """The class token's attention per head for several networks on the same image: one row per network.

    Args:
        image: (3, H, W) uint8, or normalised float with ``mean``/``std``.
        attns: {network name: (heads, N)}: the class token's attention to the N = h*w patches; head counts may
            differ between networks.
        grid: (h, w) patch grid.
        per_row: a colour scale per network instead of one shared (peaks far apart: a ViT-S/8 beside a tiny one).
    Maps show attention x N: 1 is "as much as a uniform head".
    """
    if not attns:
        raise ValueError("attns must hold at least one network")
    h, w = grid
    if any(a.dim() != 2 or a.shape[1] != h * w for a in attns.values()):
        raise ValueError(f"every attention must be (heads, {h * w}), got {[tuple(a.shape) for a in attns.values()]}")
    H = max(a.shape[0] for a in attns.values())
    maps = {k: a.detach().float().cpu().reshape(-1, h, w).numpy() * (h * w) for k, a in attns.items()}
    hi = max(float(m.max()) for m in maps.values())
    img = to_image(image, mean, std)
    fig, axes = plt.subplots(len(maps), H + 1, figsize=(2.7 * (H + 1) + 1.0, 2.7 * len(maps) * h / w + 0.6),
                             squeeze=False)
    ims = []
    for r, (name, m) in enumerate(maps.items()):
        axes[r, 0].imshow(img)
        axes[r, 0].set_xticks([]), axes[r, 0].set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=10)
        top = float(m.max()) if per_row else hi
        for k in range(H):
            ax = axes[r, k + 1]
            if k >= len(m):
                ax.axis("off")
                continue
            im = ax.imshow(m[k], cmap="inferno", vmin=0, vmax=top, interpolation="nearest")
            ax.set_title(f"{name}, head {k + 1}", fontsize=8)
            ax.tick_params(labelsize=6)
            if r == len(maps) - 1:
                ax.set_xlabel("column (patches)", fontsize=7)
            if k == 0:
                ax.set_ylabel("row (patches)", fontsize=7)
        ims.append((im, [axes[r, k + 1] for k in range(len(m))]))
    axes[0, 0].set_title("input", fontsize=8)
    fig.tight_layout()
    label = "attention x N (1 = uniform)"
    if per_row:
        for im, row in ims:
            fig.colorbar(im, ax=row, label=label, shrink=0.9)
    else:
        fig.colorbar(ims[-1][0], ax=list(axes.flat), label=label, shrink=0.9)
    plt.close(fig)
    return fig


def show_patch_values(image: torch.Tensor, maps: dict[str, torch.Tensor], grid: tuple[int, int],
                      mask: torch.Tensor | None = None, cbar_label: str = "", mean=None, std=None,
                      vmin: float | None = None, vmax: float | None = None, cmap: str = "magma") -> Figure:
    """An image and per-patch values over it (e.g. a cross-entropy per masked patch), one panel per map.

    Args:
        image: (3, H, W), uint8 or normalised with ``mean``/``std``.
        maps: {title: (N,) or (h, w) values}, N = h * w; NaN leaves a patch uncoloured.
        grid: (h, w) patch grid.
        mask: optional bool (N,) or (h, w): shaded on the first panel, and only these patches are coloured.
    The maps share one colour scale (``vmin``/``vmax``, default their range) and one colour bar.
    """
    if not maps:
        raise ValueError("maps must hold at least one map")
    img = to_image(image, mean, std)
    H, W = img.shape[:2]
    h, w = grid
    arrays = {k: _patch_map(v, grid, f"maps[{k!r}]") for k, v in maps.items()}
    keep = None if mask is None else _patch_map(mask, grid, "mask") > 0
    if keep is not None:
        arrays = {k: np.where(keep, a, np.nan) for k, a in arrays.items()}
    finite = [a[np.isfinite(a)] for a in arrays.values()]
    lo = vmin if vmin is not None else min((f.min() for f in finite if f.size), default=0.0)
    hi = vmax if vmax is not None else max((f.max() for f in finite if f.size), default=1.0)
    fig, axes = _new(1, 1 + len(arrays), size=3.0, height=3.0 * H / W + 0.4)
    if keep is None:
        axes[0, 0].imshow(img)
    else:  # masked patches dark grey, as in show_masks
        shade = np.kron(keep, np.ones((H // h, W // w)))[..., None] if H % h == 0 and W % w == 0 else None
        axes[0, 0].imshow(img if shade is None else np.where(shade > 0, 0.25 + 0.15 * img, img))
    axes[0, 0].set_title("input" if keep is None else f"input, {int(keep.sum())} patches masked", fontsize=9)
    im = None
    grey = img.mean(-1)
    for ax, (name, a) in zip(axes[0, 1:], arrays.items()):
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
        im = ax.imshow(a, cmap=cmap, vmin=lo, vmax=hi, extent=(0, W, H, 0), interpolation="nearest", alpha=0.9)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    fig.colorbar(im, ax=list(axes[0]), label=cbar_label, shrink=0.85)
    plt.close(fig)
    return fig


def show_distributions(dists: dict[str, torch.Tensor], top: int = 50) -> Figure:
    """Categorical distributions (K,) side by side, each sorted by the first one's order (its top ``top``)."""
    names = list(dists)
    order = torch.argsort(dists[names[0]].detach().float().cpu(), descending=True)[:top]
    fig, ax = plt.subplots(figsize=(7, 3))
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        p = dists[n].detach().float().cpu()[order].numpy()
        ax.bar(np.arange(len(order)) + i * width, p, width=width, label=n)
    ax.set_xlabel(f"output dimension: top {len(order)} of {dists[names[0]].numel()}, sorted by {names[0]}")
    ax.set_ylabel("probability")
    ax.legend(fontsize=8)
    return _done(fig)


def show_affinity(frame_a: torch.Tensor, frame_b: torch.Tensor, affinity: torch.Tensor, grid: tuple[int, int],
                  query: int, title: str = "", mean=None, std=None) -> Figure:
    """Affinity between two frames' patches: ``affinity`` (N, N) rows = patches of frame a, columns = frame b.

    Left: frame a with the query patch; middle: the query's row as a heat map over frame b; right: the
    whole matrix with the query's row highlighted.
    """
    h, w = grid
    A = affinity.detach().float().cpu()
    img_a, img_b = to_image(frame_a, mean, std), to_image(frame_b, mean, std)
    H, W = img_a.shape[:2]
    fig, axes = _new(1, 3, size=3.2)
    qi, qj = divmod(int(query), w)
    axes[0, 0].imshow(img_a)
    axes[0, 0].add_patch(Rectangle((qj * W / w, qi * H / h), W / w, H / h, fill=False, ec="r", lw=2))
    axes[0, 0].set_title("frame t, query patch", fontsize=9)
    axes[0, 1].imshow(img_b)
    axes[0, 1].imshow(A[query].reshape(h, w).numpy(), cmap="jet", alpha=0.55, extent=(0, W, H, 0))
    axes[0, 1].set_title("its affinity in frame t+1", fontsize=9)
    axes[0, 2].imshow(A.numpy(), cmap="viridis", aspect="auto")
    axes[0, 2].axhline(query, color="r", lw=1)
    axes[0, 2].set_title(title or f"affinity matrix {A.shape[0]} x {A.shape[1]}", fontsize=9)
    return _done(fig)


def compare_affinity_rows(frame_a: torch.Tensor, frame_b: torch.Tensor, rows: dict[str, torch.Tensor],
                          grid: tuple[int, int], query: int, cbar_label: str = "affinity weight", mean=None, std=None,
                          vmax: float | None = None, log: bool = True) -> Figure:
    """One query patch of frame t and its affinity row over frame t+1, for several networks or temperatures.

    ``frame_a``, ``frame_b``: (3, H, W), uint8 or normalised with ``mean``/``std``; ``rows``: {title: (N,)
    weights over frame t+1}, N = h * w of ``grid``; ``query``: flat patch index in frame t. Returns a Figure:
    one heat map per row on a shared scale up to ``vmax`` (default the largest weight), logarithmic from
    ``vmax`` / 1000 unless ``log`` is False.
    """
    from matplotlib.colors import LogNorm, Normalize

    if not rows:
        raise ValueError("rows must hold at least one row")
    h, w = grid
    if not 0 <= int(query) < h * w:
        raise ValueError(f"query must be a patch index in [0, {h * w}), got {query}")
    maps = {k: _patch_map(v, grid, f"rows[{k!r}]") for k, v in rows.items()}
    img_a, img_b = to_image(frame_a, mean, std), to_image(frame_b, mean, std)
    H, W = img_a.shape[:2]
    hi = vmax if vmax is not None else max(float(a.max()) for a in maps.values())
    norm = LogNorm(vmin=hi / 1000, vmax=hi, clip=True) if log else Normalize(vmin=0, vmax=hi)
    fig, axes = _new(1, 1 + len(maps), size=3.0, height=3.0 * H / W + 0.4)
    qi, qj = divmod(int(query), w)
    axes[0, 0].imshow(img_a)
    axes[0, 0].add_patch(Rectangle((qj * W / w, qi * H / h), W / w, H / h, fill=False, ec="r", lw=2))
    axes[0, 0].set_title("frame t, query boxed", fontsize=9)
    im = None
    for ax, (name, a) in zip(axes[0, 1:], maps.items()):
        ax.imshow(img_b.mean(-1), cmap="gray", vmin=0, vmax=1)
        im = ax.imshow(np.maximum(a, hi / 1000) if log else a, cmap="inferno", norm=norm, alpha=0.8,
                       extent=(0, W, H, 0), interpolation="nearest")
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    fig.colorbar(im, ax=list(axes[0]), label=cbar_label, shrink=0.85)
    plt.close(fig)
    return fig


def overlay_labels(image: torch.Tensor, labels: torch.Tensor, palette: np.ndarray | None = None,
                   alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) float image with integer ``labels`` (H, W) coloured by ``palette`` (256, 3); 0 stays clear."""
    if palette is None:
        palette = np.array(plt.get_cmap("tab10").colors)[np.arange(256) % 10] * 255
    return blend_ids(to_image(image), labels, palette, alpha)


def show_propagation(frames: torch.Tensor, labels: torch.Tensor, palette: np.ndarray | None = None,
                     titles: Sequence[str] | None = None, cols: int = 4) -> Figure:
    """Label maps (T, H, W) over frames (T, 3, H, W)."""
    rows, cols = _grid(len(frames), cols)
    fig, axes = _new(rows, cols, size=2.6)
    for i, ax in enumerate(axes.flat):
        if i < len(frames):
            ax.imshow(overlay_labels(frames[i], labels[i], palette))
            ax.set_title(titles[i] if titles is not None else f"frame {i}", fontsize=9)
        else:
            ax.axis("off")
    return _done(fig)


def plot_curves(records: Sequence[dict], keys: Sequence[str], x: str = "step", title: str = "",
                ylabel: str = "", marker: str | None = None, baselines: dict[str, float] | None = None) -> Figure:
    """Line plot of ``keys`` from a sequence of log records (dicts, e.g. a run's JSONL log), with each of
    ``baselines`` ({name: value}, measured like the curves) as a dashed horizontal line."""
    fig, ax = plt.subplots(figsize=(6, 3))
    for k in keys:
        pts = [(r[x], r[k]) for r in records if k in r and x in r]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=k, marker=marker)
    for i, (name, v) in enumerate((baselines or {}).items()):
        ax.axhline(float(v), ls="--", lw=1, color=f"C{len(keys) + i}", label=name)
    ax.set_xlabel(x)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _done(fig)


def plot_schedules(schedules: dict[str, torch.Tensor], steps_per_epoch: int, title: str = "") -> Figure:
    """One panel per schedule (each (S,) values per step), the x axis in epochs."""
    fig, axes = plt.subplots(1, len(schedules), figsize=(3.2 * len(schedules), 2.6), squeeze=False)
    for ax, (name, values) in zip(axes[0], schedules.items()):
        v = torch.as_tensor(values).double().cpu().numpy()
        ax.plot(np.arange(len(v)) / steps_per_epoch, v)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
    if title:
        fig.suptitle(title, fontsize=10)
    return _done(fig)


def show_propagation_step(frame: torch.Tensor, pred: torch.Tensor, grid: tuple[int, int], query: int,
                          context_frames: dict[int, torch.Tensor], sources: list[tuple[int, int, float]],
                          palette: np.ndarray | None = None, j_curve: Sequence[float] | None = None,
                          t: int | None = None) -> Figure:
    """One propagated frame explained: the frame with its predicted labels and the query cell; the context
    frames (index -> (3, H, W)) with the top-k source cells of that query (``sources``: (frame index, flat cell,
    weight)); and, when given, J per frame with ``t`` marked."""
    h, w = grid
    n_ctx = len(context_frames)
    cols = max(2, n_ctx)
    rows = 3 if j_curve is not None else 2
    fig = plt.figure(figsize=(2.6 * cols, 2.4 * rows))
    gs = fig.add_gridspec(rows, cols)
    ax = fig.add_subplot(gs[0, :])
    img = overlay_labels(frame, pred, palette)
    H, W = img.shape[:2]
    ax.imshow(img)
    qi, qj = divmod(int(query), w)
    ax.add_patch(Rectangle((qj * W / w, qi * H / h), W / w, H / h, fill=False, ec="yellow", lw=2))
    ax.set_title(f"frame {t}: propagated labels and the query cell" if t is not None else "query", fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
    for k, (idx, img_c) in enumerate(sorted(context_frames.items())):
        a = fig.add_subplot(gs[1, k])
        a.imshow(to_image(img_c))
        for f, cell, weight in sources:
            if f == idx:
                ci, cj = divmod(int(cell), w)
                a.add_patch(Rectangle((cj * W / w, ci * H / h), W / w, H / h, fill=False, ec="red",
                                      lw=1 + 4 * float(weight)))
        a.set_title(f"context frame {idx}", fontsize=8)
        a.set_xticks([]), a.set_yticks([])
    if j_curve is not None:
        a = fig.add_subplot(gs[2, :])
        a.plot(range(len(j_curve)), j_curve, "-o", ms=2)
        if t is not None and t < len(j_curve):
            a.axvline(t, color="r", lw=1)
        a.set_xlabel("frame")
        a.set_ylabel("J (IoU)")
        a.set_ylim(0, 1.02)
    return _done(fig)


def plot_ino_overview(clip_len: int = 4) -> Figure:
    """The data flow of one INO training step (the paper's Fig. 2 redrawn): a clip of ``clip_len`` frames ->
    per-frame global and local crops -> student (masked globals + locals) and EMA teacher (intact globals) ->
    class and patch tokens -> the four losses. A diagram: no data, no axes."""
    if not isinstance(clip_len, int) or clip_len < 2 or clip_len % 2:
        raise ValueError(f"clip_len must be an even whole number >= 2 (frames pair as (n, L/2+n)), got {clip_len!r}")
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(12, 6.8))
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 7.0)
    ax.axis("off")

    def box(x, y, w, h, text, colour, size=9, weight="normal"):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04,rounding_size=0.12", fc=colour,
                                    ec="0.25", lw=1.0))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, weight=weight, wrap=True)

    def arrow(x0, y0, x1, y1, text="", colour="0.2", style="-|>", ls="-", rad=0.0):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle=style, mutation_scale=12, color=colour, lw=1.3,
                                     ls=ls, connectionstyle=f"arc3,rad={rad}"))
        if text:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.12, text, ha="center", va="bottom", fontsize=8, color=colour)

    # the clip
    # the headers sit above the top row of boxes (y <= 6.2); frames are numbered from 0, as frame_pairs numbers them
    head = {"ha": "center", "va": "bottom", "fontsize": 9, "weight": "bold"}
    ax.text(0.9, 6.45, f"a clip of L = {clip_len}\nframes (8 fps)", **head)
    for t in range(clip_len):
        y = 5.4 - t * 1.05
        box(0.25, y, 1.3, 0.8, f"frame {t}", "#dde8f5")
        arrow(1.6, y + 0.4, 2.25, y + 0.4)
    # crops
    ax.text(3.05, 6.45, "crops of\neach frame", **head)
    for t in range(clip_len):
        y = 5.4 - t * 1.05
        box(2.3, y + 0.38, 1.5, 0.42, "global (masked\nfor the student)", "#fbe3c8", size=7)
        box(2.3, y - 0.02, 1.5, 0.34, "local crops", "#fff4c2", size=7)
    # networks
    box(4.6, 3.75, 1.7, 1.25, "student ViT\n+ head\n(gradients)", "#cfe8cf", size=9, weight="bold")
    box(4.6, 1.2, 1.7, 1.25, "teacher ViT\n+ head\n(EMA of the student)", "#e6d5ef", size=9, weight="bold")
    arrow(3.85, 4.3, 4.55, 4.35)
    ax.text(4.2, 5.1, "masked globals\n+ locals", ha="center", fontsize=8, color="0.2")
    arrow(3.85, 2.0, 4.55, 1.85, "intact globals")
    arrow(5.2, 3.7, 5.2, 2.5, "EMA", colour="#7a4a9a", ls="--")
    # tokens
    box(6.9, 4.55, 1.6, 0.55, "class tokens", "#f2f2f2", size=8)
    box(6.9, 3.75, 1.6, 0.55, "patch tokens", "#f2f2f2", size=8)
    box(6.9, 2.0, 1.6, 0.55, "class tokens", "#f2f2f2", size=8)
    box(6.9, 1.2, 1.6, 0.55, "patch tokens", "#f2f2f2", size=8)
    for y in (4.82, 4.02):
        arrow(6.35, 4.4, 6.85, y)
    for y in (2.27, 1.47):
        arrow(6.35, 1.85, 6.85, y)
    # losses
    ax.text(10.5, 6.45, "the four generative losses", **head)
    from ..losses import frame_pairs
    pairs = ", ".join(f"({a}, {b})" for a, b in frame_pairs(clip_len))
    losses = [
        (5.05, "out g2g (Eq. 1)", f"frames paired (n, L/2+n): {pairs};\nteacher class token of one -> student's of the other",
         "#ffd9d9"),
        (3.85, "out l2g (Eq. 2)", "teacher global class token\n-> student's local crops", "#ffd9d9"),
        (2.45, "in MIM (Eq. 3)", "teacher patch tokens\n-> student's masked ones", "#d9e6ff"),
        (1.05, "in aff (Eq. 4-5)", "teacher affinity of frames t, t+1\n-> student's affinity", "#d9e6ff"),
    ]
    for y, name, what, colour in losses:
        box(9.1, y, 2.8, 0.95, f"{name}\n{what}", colour, size=7.5)
    arrow(8.55, 4.82, 9.05, 5.5, colour="#b03030")
    arrow(8.55, 4.82, 9.05, 4.3, colour="#b03030")
    arrow(8.55, 2.27, 9.05, 5.3, colour="#b03030", ls="--")
    arrow(8.55, 2.27, 9.05, 4.15, colour="#b03030", ls="--")
    arrow(8.55, 4.02, 9.05, 2.95, colour="#3050b0")
    arrow(8.55, 4.02, 9.05, 1.55, colour="#3050b0")
    arrow(8.55, 1.47, 9.05, 2.8, colour="#3050b0", ls="--")
    arrow(8.55, 1.47, 9.05, 1.4, colour="#3050b0", ls="--")
    ax.text(6.0, 0.25, "solid: student side (gets the gradient)    dashed: teacher side (the target, no gradient)    "
            "red: 'out' = image level (class tokens)    blue: 'in' = pixel level (patch tokens)",
            ha="center", fontsize=8, color="0.3")
    return _done(fig)


def compare_propagation(frames: torch.Tensor, labels: dict[str, torch.Tensor], show: Sequence[int],
                        scores: dict[str, Sequence[float]] | None = None, palette: np.ndarray | None = None,
                        score_name: str = "J") -> Figure:
    """One row per method: its label maps over ``frames`` at the frame indices ``show``.

    Args:
        frames: uint8 (T, 3, H, W); labels: {method: (T, H, W) integer ids} (e.g. "ground truth", "shipped");
        show: frame indices (columns); scores: optional {method: (T,) per-frame score}, written in the titles.
    """
    if not labels:
        raise ValueError("labels must hold at least one method")
    T = len(frames)
    for name, lab in labels.items():
        if tuple(lab.shape) != (T, *frames.shape[-2:]):
            raise ValueError(f"labels[{name!r}] must have shape {(T, *frames.shape[-2:])}, got {tuple(lab.shape)}")
    if not show or any(not 0 <= t < T for t in show):
        raise ValueError(f"show must be frame indices in [0, {T}), got {list(show)}")
    H, W = frames.shape[-2:]
    fig, axes = _new(len(labels), len(show), size=2.6, height=2.6 * H / W + 0.35)
    for r, (name, lab) in enumerate(labels.items()):
        for c, t in enumerate(show):
            ax = axes[r, c]
            ax.imshow(overlay_labels(frames[t], lab[t], palette))
            title = f"frame {t}"
            if scores is not None and name in scores:
                title += f", {score_name} = {float(scores[name][t]):.2f}"
            ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=10)
    return _done(fig)


def plot_per_frame(series: dict[str, Sequence[float]], ylabel: str = "J (region IoU)", title: str = "") -> Figure:
    """One line per method over the frames of a video: ``{method: (T,) scores}``."""
    if not series:
        raise ValueError("series must hold at least one method")
    fig, ax = plt.subplots(figsize=(6.5, 3))
    for name, v in series.items():
        v = torch.as_tensor(v).double().cpu().numpy()
        ax.plot(np.arange(len(v)), v, label=name, lw=1.5)
    ax.set_xlabel("frame")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _done(fig)


def plot_bars(values: dict[str, float], ylabel: str = "J&F-Mean", title: str = "",
              lines: dict[str, float] | None = None) -> Figure:
    """Bars of ``{method: value}`` with the value written on each bar; ``lines`` adds labelled horizontal
    reference lines (e.g. the paper's result)."""
    if not values:
        raise ValueError("values must hold at least one method")
    fig, ax = plt.subplots(figsize=(1.3 * len(values) + 2.5, 3))
    names = list(values)
    v = [float(values[n]) for n in names]
    bars = ax.bar(range(len(v)), v, color=plt.get_cmap("tab10").colors[:len(v)])
    for b, x in zip(bars, v):
        ax.text(b.get_x() + b.get_width() / 2, x + 0.01, f"{x:.3f}", ha="center", va="bottom", fontsize=8)
    for i, (name, y) in enumerate((lines or {}).items()):
        ax.axhline(y, ls="--", color="0.4", lw=1)
        ax.text(len(v) - 0.5, y + 0.01, name, ha="right", va="bottom", fontsize=8, color="0.3")
    ax.set_xticks(range(len(v)))
    ax.set_xticklabels(names, fontsize=8, rotation=15)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, max(v + list((lines or {}).values()) + [0]) * 1.15 + 1e-9)
    if title:
        ax.set_title(title, fontsize=10)
    return _done(fig)


def plot_grouped_bars(groups: dict[str, dict[str, float]], ylabel: str = "", title: str = "",
                      lines: dict[str, float] | None = None) -> Figure:
    """Bars in groups: ``groups`` is ``{group: {series: value}}`` (e.g. ``{run: {monitor: value}}``), one colour
    per series and the value written on each bar; ``lines`` ``{label: y}`` adds labelled dashed references."""
    if not groups or not any(groups.values()):
        raise ValueError("groups must hold at least one value")
    names = list(groups)
    series = list(dict.fromkeys(s for g in groups.values() for s in g))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(1.1 * len(names) * len(series) + 2.5, 3.2))
    top = low = 0.0
    for i, s in enumerate(series):
        xs = [k + (i - (len(series) - 1) / 2) * width for k, g in enumerate(names) if s in groups[g]]
        v = [float(groups[g][s]) for g in names if s in groups[g]]
        bars = ax.bar(xs, v, width=width, label=s, color=f"C{i}")
        for b, y in zip(bars, v):
            ax.text(b.get_x() + b.get_width() / 2, y, f"{y:.2f}", ha="center", va="bottom", fontsize=7)
        top, low = max([top] + v), min([low] + v)
    for name, y in (lines or {}).items():
        ax.axhline(y, ls="--", color="0.4", lw=1)
        ax.text(-0.5, y, " " + name, ha="left", va="bottom", fontsize=8, color="0.3")
        top = max(top, y)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(low * 1.2, top * 1.35 + 1e-9)
    ax.legend(fontsize=8, loc="upper center")
    if title:
        ax.set_title(title, fontsize=10)
    return _done(fig)


def plot_runs(runs: dict[str, Sequence[dict]], keys: Sequence[str], labels: dict[str, str] | None = None,
              lines: dict[str, dict[str, float]] | None = None, log_keys: Sequence[str] = (),
              x: str = "step") -> Figure:
    """One panel per key (e.g. a collapse monitor), one line per run: ``runs`` is ``{run name: [record, ...]}``.
    ``labels`` names each key's y axis (with its unit); ``lines`` ``{key: {label: y}}`` adds labelled dashed
    references to that key's panel; the keys in ``log_keys`` get a logarithmic y axis."""
    if not runs or not keys:
        raise ValueError("runs and keys must be non-empty")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.1), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, recs in runs.items():
            pts = [(r[x], r[key]) for r in recs if key in r]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, label=name, lw=1.5)
        for text, y in (lines or {}).get(key, {}).items():
            ax.axhline(y, ls="--", color="0.5", lw=1)
            ax.text(ax.get_xlim()[0], y, " " + text, va="bottom", fontsize=7, color="0.35")
        if key in log_keys:
            ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel((labels or {}).get(key, key))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _done(fig)


def show_matrices(mats: dict[str, torch.Tensor], xlabel: str = "", ylabel: str = "", cbar_label: str = "",
                  vmin: float | None = None, vmax: float | None = None) -> Figure:
    """Matrices (R, C) side by side as heat maps with a shared colour scale and a colour bar."""
    if not mats:
        raise ValueError("mats must hold at least one matrix")
    arrays = {k: torch.as_tensor(v).detach().float().cpu().numpy() for k, v in mats.items()}
    if any(a.ndim != 2 for a in arrays.values()):
        raise ValueError(f"every matrix must be 2-d, got shapes {[a.shape for a in arrays.values()]}")
    lo = min(a.min() for a in arrays.values()) if vmin is None else vmin
    hi = max(a.max() for a in arrays.values()) if vmax is None else vmax
    fig, axes = plt.subplots(1, len(arrays), figsize=(3.6 * len(arrays) + 0.8, 3.0), squeeze=False)
    im = None
    from matplotlib.ticker import MaxNLocator

    for i, (ax, (name, a)) in enumerate(zip(axes[0], arrays.items())):
        im = ax.imshow(a, vmin=lo, vmax=hi, cmap="viridis", aspect="auto", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel)
        if i == 0:
            ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.colorbar(im, ax=list(axes[0]), label=cbar_label, shrink=0.9)
    plt.close(fig)
    return fig
