"""Label propagation for semi-supervised video object segmentation (App. A.2; the released kernel).

The first frame's labels are carried through the video by feature similarity. For each target frame t:

    context   = the first frame + the ``num_context`` previous frames (their features and soft labels)
    sim       = cosine similarity of every target position to every context position
    window    = only context positions within ``radius`` patch cells of the query (a square window,
                Chebyshev distance, applied to every context frame: the released code)
    top-k     = the k most similar context positions, taken jointly over all context frames
    weights   = exp(sim / temperature), normalised over the kept k (entries tied with the k-th are kept)
    labels_t  = sum of weights x the context frames' soft labels

Everything is vectorised: the window comes from index arithmetic (never a cache of an hw x hw matrix),
queries are processed in chunks sized from a memory budget, and only the context frames' features are
kept (a queue), so peak memory does not depend on the length of the video.

Protocols (``PROTOCOLS``): ``"ino"`` (App. A.2, DAVIS: k=5, 10 context frames, radius 40), ``"ino_ytvos"``
(20 frames, radius 50), ``"dino"`` (DINO's eval_video_segmentation: 7 frames, radius 12; use hard first
labels), ``"crw"`` (k=10, temperature 0.05, 20 frames, a Euclidean radius 12 not applied to the first frame;
CRW also pads the context with copies of frame 0, which is not reproduced here). INO and DINO read frames the
same way (cv2 bilinear on uint8, std 0.228, float32: ``propagation.resize="released"``, see :mod:`inolib.vos.resize`);
DINO floors the long side to a multiple of 64 (``propagation.round_to=64``) where INO floors to 8.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

WINDOWS = ("square", "circle")  # released/DINO Chebyshev window; CRW's Euclidean one
PROTOCOLS = {
    "ino": dict(topk=5, num_context=10, radius=40, temperature=0.1, window="square", window_on_first=True),
    "ino_ytvos": dict(topk=5, num_context=20, radius=50, temperature=0.1, window="square", window_on_first=True),
    "dino": dict(topk=5, num_context=7, radius=12, temperature=0.1, window="square", window_on_first=True),
    "crw": dict(topk=10, num_context=20, radius=12, temperature=0.05, window="circle", window_on_first=False),
}


def context_indices(t: int, t0: int = 0, num_context: int = 10) -> list[int]:
    """Context frames of target ``t`` for a reference starting at ``t0``: ``[t0] + [max(t - n, t0 + 1) .. t - 1]``."""
    return [t0] + list(range(max(t - num_context, t0 + 1), t))


def window_mask(grid: tuple[int, int], radius: int, rows: torch.Tensor | None = None, shape: str = "square",
                device=None) -> torch.Tensor:
    """Which source cells each query cell may look at: bool (Q, h*w), from index arithmetic.

    Args:
        grid: (h, w) patch grid; rows: optional (Q,) query indices (default: all h*w).
        shape: ``"square"`` (|di| <= r and |dj| <= r, the released code) or ``"circle"`` (di^2 + dj^2 < r^2, CRW).
    """
    h, w = grid
    src = torch.arange(h * w, device=device)
    rows = src if rows is None else rows.to(device=src.device)
    dy = (rows // w)[:, None] - (src // w)[None, :]
    dx = (rows % w)[:, None] - (src % w)[None, :]
    return _inside(dx, dy, radius, shape)


def _inside(dx: torch.Tensor, dy: torch.Tensor, radius: int, shape: str) -> torch.Tensor:
    """Whether cell offsets (dx, dy) (broadcastable integer tensors) fall in the window: bool."""
    if shape == "square":
        return (dx.abs() <= radius) & (dy.abs() <= radius)
    if shape == "circle":
        return dx * dx + dy * dy < radius * radius
    raise ValueError(f"window shape must be one of {WINDOWS}, got {shape!r}")


def _chunk_size(num_sources: int, max_bytes: int) -> int:
    # per query: the fp32 affinity row (4 bytes per source) plus a comparison mask (1 byte per source)
    return max(1, min(65536, max_bytes // max(1, 5 * num_sources)))


def _band_width(h: int, w: int, reach: int, num_context: int, max_bytes: int) -> int:
    """Columns per band: as many as the memory budget allows, at most half the radius (so a band's key columns,
    its width plus the window on both sides, stay within ~25% of what any one of its queries may see)."""
    cap = max(1, min(w, reach // 2))
    for bw in range(cap, 0, -1):
        if 5 * bw * h * min(w, bw + 2 * reach) * num_context * h <= max_bytes:
            return bw
    return 1


def default_memory_budget(device: torch.device) -> int:
    """Bytes the affinity chunks may use: a quarter of free GPU memory (at most 4 GiB), or 24 MiB on a CPU
    (below glibc's 32 MiB mmap threshold, so the buffer is reused instead of page-faulted in every chunk)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(min(free // 4, 4 << 30))
    return 24 << 20


def check_parameters(*, topk: int = 5, radius: int = 40, temperature: float = 0.1, window: str = "square",
                     window_on_first: bool = True, num_context: int | None = None, prefix: str = "") -> None:
    """ValueError naming the parameter (``prefix`` + name, e.g. ``propagation.topk``) that cannot work."""
    def whole(x) -> bool:
        return not isinstance(x, bool) and isinstance(x, (int, np.integer, float)) and float(x).is_integer()

    if window not in WINDOWS:
        raise ValueError(f"{prefix}window shape must be one of {WINDOWS}, got {window!r}")
    if not whole(topk) or topk < 1:
        raise ValueError(f"{prefix}topk must be a whole number >= 1 (sources kept per query), got {topk!r}")
    if not whole(radius) or radius < 0:
        raise ValueError(f"{prefix}radius must be a whole number >= 0 (patch cells), got {radius!r}")
    if window == "circle" and radius < 1 and window_on_first:
        raise ValueError(f"{prefix}radius must be >= 1 for a circle window (d^2 < r^2 holds no cell at r = 0)")
    if not isinstance(temperature, (int, float, np.floating)) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"{prefix}temperature must be a finite number > 0, got {temperature!r}")
    if num_context is not None and (not whole(num_context) or num_context < 0):
        raise ValueError(f"{prefix}num_context must be a whole number >= 0 (previous frames), got {num_context!r}")


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"


def _check_map(name: str, x, expected: str, ok) -> None:
    """ValueError ``name must be <expected>, got <shape>`` unless ``x`` is a tensor and ``ok(x)``."""
    if not isinstance(x, torch.Tensor) or not ok(x):
        raise ValueError(f"{name} must be a tensor of shape {expected}, got {_shape(x)}")


def _check_frame_inputs(query, context_feats, context_labels) -> None:
    _check_map("query", query, "(D, h, w)", lambda x: x.dim() == 3 and x.numel() > 0)
    D, h, w = query.shape
    _check_map("context_feats", context_feats, f"(NC, {D}, {h}, {w}) (the query's D, h, w)",
               lambda x: x.dim() == 4 and tuple(x.shape[1:]) == (D, h, w))
    NC = context_feats.shape[0]
    if NC == 0:
        raise ValueError("context_feats must hold at least one frame (the first frame), got NC = 0")
    _check_map("context_labels", context_labels, f"({NC}, C, {h}, {w}) (context_feats' NC, the query's h, w)",
               lambda x: x.dim() == 4 and x.shape[0] == NC and x.shape[1] > 0 and tuple(x.shape[2:]) == (h, w))


@torch.no_grad()
def propagate_frame(query: torch.Tensor, context_feats: torch.Tensor, context_labels: torch.Tensor, *,
                    topk: int = 5, radius: int = 40, temperature: float = 0.1, window: str = "square",
                    window_on_first: bool = True, max_bytes: int | None = None) -> torch.Tensor:
    """(C, h, w) soft labels of one target frame, exactly the released kernel's arithmetic (App. A.2).

    ``query`` (D, h, w) and ``context_feats`` (NC, D, h, w; the first frame first) are features, L2-normalised
    here; ``context_labels`` (NC, C, h, w) are the context's soft labels. Each query keeps the top-k context
    cells inside the window, ties with the k-th included (as released), weighted by exp(cos / temperature).

    Raises ValueError naming the argument for bad shapes, parameters or non-finite features.
    """
    check_parameters(topk=topk, radius=radius, temperature=temperature, window=window,
                     window_on_first=window_on_first)
    _check_frame_inputs(query, context_feats, context_labels)
    # Same entries and ties as released: top-k on the logits cos / temperature (exp is monotone), weights
    # exp(logit - row max) normalised (the released ratio without its float32 overflow at temperature 0.01).
    # Only the key columns within ``radius`` of a band of queries are scored; the released code zeroes the
    # rest, and those zeros never reach the top-k, so skipping them changes only the time.
    return _propagate_frame(query, context_feats, context_labels, topk=topk, radius=radius, temperature=temperature,
                            window=window, window_on_first=window_on_first, max_bytes=max_bytes)


def _propagate_frame(query, context_feats, context_labels, *, topk, radius, temperature, window, window_on_first,
                     max_bytes) -> torch.Tensor:
    """:func:`propagate_frame` with parameters and shapes already checked (by :class:`Propagator`)."""
    finite = torch.isfinite(query).all() & torch.isfinite(context_feats).all()
    if not bool(finite & torch.isfinite(context_labels).all()):  # the one host sync of this check
        name = next(n for n, x in (("query", query), ("context_feats", context_feats),
                                   ("context_labels", context_labels)) if not bool(torch.isfinite(x).all()))
        raise ValueError(f"{name} holds NaN or inf; label propagation needs finite features (a checkpoint "
                         f"with non-finite weights, or an overflow in reduced precision?)")
    D, h, w = query.shape
    NC, C = context_labels.shape[:2]
    flip = h > w  # bands run across the longer side
    if flip:
        query, context_feats, context_labels = (x.transpose(-1, -2) for x in (query, context_feats, context_labels))
        h, w = w, h
    dev = query.device
    # cells in column-major order (col, row); sources in (col, frame, row) order, so a column band is contiguous
    q = F.normalize(query.float(), dim=0).permute(2, 1, 0).reshape(w * h, D)
    keys = F.normalize(context_feats.float(), dim=1).permute(3, 0, 2, 1).reshape(w * NC * h, D)
    labels = context_labels.float().permute(1, 3, 0, 2).reshape(C, w * NC * h)
    budget = max_bytes if max_bytes is not None else default_memory_budget(dev)
    reach = radius if window_on_first else w  # CRW: the first frame is seen whole, so every column is a source
    bw = _band_width(h, w, reach, NC, budget)
    rows = torch.arange(h, device=dev)
    out = torch.empty(C, w * h, device=dev)
    for c0 in range(0, w, bw):
        c1 = min(c0 + bw, w)
        a, b = max(0, c0 - reach), min(w, c1 + reach)  # key columns this band can see
        src = slice(a * NC * h, b * NC * h)
        band_keys, band_labels = keys[src], labels[:, src]
        cols = torch.arange(a, b, device=dev)
        k = min(topk, (b - a) * NC * h)
        chunk = _chunk_size((b - a) * NC * h, budget)
        for p0 in range(c0 * h, c1 * h, chunk):
            p1 = min(p0 + chunk, c1 * h)
            pos = torch.arange(p0, p1, device=dev)
            # cos / temperature as released (folding 1/temperature into q would round differently and
            # break exact ties of the k-th value, which decide how many entries are kept)
            aff = (q[p0:p1] @ band_keys.T).div_(temperature)  # (Q, (b-a)*NC*h) logits
            dx = (pos // h)[:, None] - cols[None]  # (Q, b-a)
            dy = (pos % h)[:, None] - rows[None]  # (Q, h)
            outside = ~_inside(dx[:, :, None], dy[:, None, :], radius, window)  # (Q, b-a, h)
            view = aff.view(p1 - p0, b - a, NC, h)
            (view if window_on_first else view[:, :, 1:]).masked_fill_(outside[:, :, None, :], float("-inf"))
            # top-k jointly over every context frame; one more to see whether the k-th value is tied
            vals, idx = aff.topk(min(k + 1, aff.shape[1]), dim=1)
            # exp(logit - the row's largest): every query sees its own cell, so the largest is finite
            weights = (vals[:, :k] - vals[:, :1]).exp_()
            weights /= weights.sum(1, keepdim=True)
            out[:, p0:p1] = (band_labels[:, idx[:, :k]] * weights).sum(-1)  # (C, Q)
            if vals.shape[1] > k:
                tied = (vals[:, k] == vals[:, k - 1]).nonzero()[:, 0]
                if len(tied):  # entries equal to the k-th value are all kept (the released rule): rare rows
                    sub = aff[tied]
                    keep = sub >= vals[tied, k - 1:k]
                    sub = (sub - vals[tied, :1]).exp_().mul_(keep)
                    sub.div_(sub.sum(1, keepdim=True))
                    out[:, p0 + tied] = band_labels @ sub.T
    out = out.view(C, w, h)
    return (out if flip else out.transpose(1, 2)).contiguous()


def query_weights(similarities: torch.Tensor, topk: int = 5, temperature: float = 0.1) -> torch.Tensor:
    """The weights :func:`propagate_frame` gives the context cells of ONE query whose cosine similarities to
    them are ``similarities`` (S,) in [-1, 1]: (S,), zero outside the top-k (ties with the k-th kept), summing
    to 1. For teaching and checks: it builds features with exactly these similarities (the query e_0, context
    cell j = s_j e_0 + sqrt(1 - s_j^2) e_{j+1}) and one-hot labels (cell j is its own class), so the
    propagated labels ARE the weights, computed by the real kernel."""
    if not isinstance(similarities, torch.Tensor) or similarities.dim() != 1 or similarities.numel() == 0:
        raise ValueError(f"similarities must be a non-empty (S,) tensor, got {_shape(similarities)}")
    s = similarities.double()
    if not bool(((s >= -1) & (s <= 1)).all()):
        raise ValueError("similarities must be cosine similarities in [-1, 1]")
    S = s.numel()
    query = torch.zeros(S + 1, 1, 1, dtype=torch.float64)
    query[0] = 1
    ctx = torch.zeros(S + 1, S, dtype=torch.float64)  # (D, cells)
    ctx[0] = s
    ctx[1:] = torch.diag((1 - s * s).clamp_min(0).sqrt())
    # every cell its own 1x1 context frame, so the window (radius 0, its own cell in each frame) keeps all
    feats = ctx.T.reshape(S, S + 1, 1, 1)
    labels = torch.eye(S, dtype=torch.float64).reshape(S, S, 1, 1)
    return propagate_frame(query, feats, labels, topk=topk, radius=0, temperature=temperature)[:, 0, 0]


def _valid(labels: torch.Tensor) -> torch.Tensor:
    """(C, 1, 1) 1.0 for channels with any mass."""
    return (labels.flatten(1).sum(1) > 0).to(labels.dtype)[:, None, None]


class Propagator:
    """Frame-by-frame propagation with a queue of context features (streaming; memory independent of length).

    ``Propagator(first_feat (D,h,w), first_labels (C,h,w), **protocol)``, then ``step(feat) -> (C,h,w)`` for
    frames 1, 2, ... ``step(feat, new_labels=(C,h,w))`` adds objects that first appear in this frame
    (YouTube-VOS): as in the released code, they overwrite the prediction where they are and start a
    reference of their own (with its own context), whose valid channels are merged into later frames.
    Shapes and parameters are checked here and in ``step`` (ValueError naming the argument).
    """

    def __init__(self, first_feat: torch.Tensor, first_labels: torch.Tensor, *, topk: int = 5,
                 num_context: int = 10, radius: int = 40, temperature: float = 0.1, window: str = "square",
                 window_on_first: bool = True, max_bytes: int | None = None):
        check_parameters(topk=topk, radius=radius, temperature=temperature, window=window,
                         window_on_first=window_on_first, num_context=num_context)
        _check_map("first_feat", first_feat, "(D, h, w)", lambda x: x.dim() == 3 and x.numel() > 0)
        h, w = first_feat.shape[1:]
        _check_map("first_labels", first_labels, f"(C, {h}, {w}) (the features' h, w)",
                   lambda x: x.dim() == 3 and x.shape[0] > 0 and tuple(x.shape[1:]) == (h, w))
        self.feat_shape = tuple(first_feat.shape)  # (D, h, w)
        self.label_shape = tuple(first_labels.shape)  # (C, h, w)
        self.kw = dict(topk=topk, radius=radius, temperature=temperature, window=window,
                       window_on_first=window_on_first, max_bytes=max_bytes)
        self.num_context = num_context
        self.t = 0
        # each reference: [first feature, first labels, valid channels, deque of (feature, labels)]
        self.refs = [self._reference(first_feat, first_labels)]

    def _reference(self, feat, labels):
        return {"feat": feat, "labels": labels.float(), "valid": _valid(labels.float()),
                "queue": deque(maxlen=self.num_context)}

    def step(self, feat: torch.Tensor, new_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Soft labels (C, h, w) of the next frame from its features ``feat`` (D, h, w); ``new_labels`` (C, h, w):
        objects that first appear in this frame."""
        _check_map("feat", feat, f"{self.feat_shape} (the first frame's (D, h, w))",
                   lambda x: tuple(x.shape) == self.feat_shape)
        if new_labels is not None:
            _check_map("new_labels", new_labels, f"{self.label_shape} (the first labels' (C, h, w))",
                       lambda x: tuple(x.shape) == self.label_shape)
        self.t += 1
        merged = None
        for ref in self.refs:
            feats = torch.stack([ref["feat"]] + [f for f, _ in ref["queue"]])
            labels = torch.stack([ref["labels"]] + [l for _, l in ref["queue"]])
            pred = ref["valid"] * _propagate_frame(feat, feats, labels, **self.kw)
            merged = pred if merged is None else merged + pred
        if new_labels is not None:
            new_labels = new_labels.float()
            cover = new_labels.sum(0, keepdim=True)
            merged = (1 - cover) * merged + cover * new_labels
            self.refs.append(self._reference(feat, new_labels))
        for i, ref in enumerate(self.refs):
            if new_labels is not None and i == len(self.refs) - 1:
                continue  # a new reference's first frame is this frame
            ref["queue"].append((feat, merged))
        return merged


def propagate(features, first_labels: torch.Tensor, *, topk: int = 5, num_context: int = 10, radius: int = 40,
              temperature: float = 0.1, window: str = "square", window_on_first: bool = True,
              new_labels: dict[int, torch.Tensor] | None = None, max_bytes: int | None = None) -> torch.Tensor:
    """Propagate ``first_labels`` (C, h, w) through ``features`` (T, D, h, w) (or an iterable of (D, h, w)).

    Returns (T, C, h, w) soft labels; frame 0 is ``first_labels``. ``new_labels`` maps a frame index 1..T-1 to the
    labels (C, h, w) of objects first appearing there (YouTube-VOS). Defaults: App. A.2 for DAVIS. Wrong shapes,
    no frames, or a ``new_labels`` frame outside 1..T-1 are a ValueError naming the argument.
    """
    new_labels = dict(new_labels or {})
    if isinstance(features, torch.Tensor) and features.dim() != 4:
        raise ValueError(f"features must be a tensor of shape (T, D, h, w) or an iterable of (D, h, w), "
                         f"got {_shape(features)}")
    early = sorted(t for t in new_labels if t < 1)
    if early:
        raise ValueError(f"new_labels: frame {early[0]} is not in 1..T-1 (frame 0's labels are first_labels)")
    it = iter(features)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("features: no frames (T = 0); propagation needs at least the first frame") from None
    prop = Propagator(first, first_labels, topk=topk, num_context=num_context, radius=radius,
                      temperature=temperature, window=window, window_on_first=window_on_first, max_bytes=max_bytes)
    if isinstance(features, torch.Tensor):
        _check_late_frames(new_labels, len(features))
    out = [first_labels.float()]
    for t, feat in enumerate(it, start=1):
        out.append(prop.step(feat, new_labels.get(t)))
    _check_late_frames(new_labels, len(out))
    return torch.stack(out)


def _check_late_frames(new_labels: dict, T: int) -> None:
    late = sorted(t for t in new_labels if t >= T)
    if late:
        raise ValueError(f"new_labels: frame {late[0]} is beyond the last frame {T - 1} of the features")


# -- labels on the feature grid and back --------------------------------------------------------------

def labels_to_grid(mask: torch.Tensor, num_classes: int, grid: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Integer mask (H, W) -> soft labels (C, h, w) on the feature grid.

    ``"bilinear"``: one-hot at full size, bilinear with ``align_corners=True`` (released, soft labels);
    ``"nearest"``: nearest resize then one-hot (DINO, hard labels). Ids >= ``num_classes`` (void 255) get no channel.
    """
    m = mask.long()
    if mode == "nearest":
        small = F.interpolate(m[None, None].float(), size=grid, mode="nearest")[0, 0].long()
        onehot = (small[None] == torch.arange(num_classes, device=m.device)[:, None, None]).float()
        return onehot
    if mode != "bilinear":
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    onehot = (m[None] == torch.arange(num_classes, device=m.device)[:, None, None]).float()
    return F.interpolate(onehot[None], size=grid, mode="bilinear", align_corners=True)[0]


def labels_to_ids(soft: torch.Tensor, size: tuple[int, int], patch_size: int, norm: bool = True) -> torch.Tensor:
    """Soft labels (C, h, w) -> uint8 ids (H, W) at the original frame size, as released: upsample by the patch
    size (bilinear), per-channel min-max normalisation (``norm``), argmax, nearest resize to ``size`` (H, W)."""
    up = F.interpolate(soft[None].float(), scale_factor=patch_size, mode="bilinear", align_corners=False)[0]
    if norm:
        lo = up.flatten(1).min(1).values[:, None, None]
        hi = up.flatten(1).max(1).values[:, None, None]
        scaled = (up - lo) / (hi - lo).clamp_min(1e-12)
        up = torch.where(hi > 0, scaled, up)
    ids = up.argmax(0).to(torch.uint8).cpu().numpy()
    H, W = size
    return torch.from_numpy(np.array(Image.fromarray(ids).resize((W, H), Image.NEAREST)))


@dataclass
class FrameSize:
    """How a frame is resized for feature extraction (released: short side 480, long side floored to the patch)."""

    height: int
    width: int

    @classmethod
    def for_frame(cls, H: int, W: int, short_side: int | None = 480, multiple: int = 8,
                  patch: int | None = None) -> "FrameSize":
        """The size an H x W frame is resized to (one direct resize, no crop, as the released ``read_frame``).

        The short side becomes ``short_side`` (floored to ``patch``) and the long side ``int(short_side * long /
        short)`` floored to ``multiple`` (raised to a multiple of ``patch``: 56 for patch 14 and 8); without
        ``short_side`` both sides are floored to ``multiple``.
        """
        # one division, as released (1490 x 1490 gives 480, not 479); the released code floors only the long side
        # (DINO's multiple of 64 gives 832 x 480); flooring the short side to the patch is a no-op at 480 for 8, 16
        if patch:
            multiple = math.lcm(multiple, patch)  # unchanged for patch 8 or 16 with 8 or 64
        if not short_side:
            return cls(H - H % multiple, W - W % multiple)
        short = short_side - short_side % (patch or multiple)
        if H <= W:
            long = int(short_side * W / H)
            return cls(short, long - long % multiple)
        long = int(short_side * H / W)
        return cls(long - long % multiple, short)


@torch.no_grad()
def query_sources(query: torch.Tensor, context_feats: torch.Tensor, position: int, *, topk: int = 5,
                  radius: int = 40, temperature: float = 0.1, window: str = "square",
                  window_on_first: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where one target position takes its label from: the top-k context positions and their weights.

    Args:
        query: (D, h, w) target features; context_feats: (NC, D, h, w); position: flat index in the h*w grid.
    Returns:
        frame (k,) context frame index (0 = the first frame), cell (k,) flat position in that frame,
        weight (k,) normalised weights (the released kernel's, ties beyond k dropped).
    """
    check_parameters(topk=topk, radius=radius, temperature=temperature, window=window,
                     window_on_first=window_on_first)
    _check_map("query", query, "(D, h, w)", lambda x: x.dim() == 3 and x.numel() > 0)
    _check_map("context_feats", context_feats, f"(NC, {', '.join(map(str, query.shape))}) (the query's D, h, w)",
               lambda x: x.dim() == 4 and x.shape[0] > 0 and x.shape[1:] == query.shape)
    D, h, w = query.shape
    if not 0 <= position < h * w:
        raise ValueError(f"position must be a flat index in 0..{h * w - 1} (the {h}x{w} grid), got {position}")
    NC = context_feats.shape[0]
    q = F.normalize(query.reshape(D, h * w)[:, position].float(), dim=0)
    keys = F.normalize(context_feats.reshape(NC, D, h * w).float(), dim=1)
    sim = torch.einsum("d,ndp->np", q, keys)  # (NC, hw)
    allowed = window_mask((h, w), radius, torch.tensor([position]), window, device=sim.device)[0]
    allowed = allowed[None].expand(NC, -1).clone()
    if not window_on_first:
        allowed[0] = True
    val, idx = sim.masked_fill(~allowed, float("-inf")).flatten().topk(min(topk, NC * h * w))
    return idx // (h * w), idx % (h * w), torch.softmax(val / temperature, 0)
