"""A user's own video as a segmentation sequence: the first-frame mask reader (colour or grey drawings, DAVIS
palettes) and :class:`VideoSequence`, which reads the video's frames on demand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .vos_datasets import davis_palette


def read_first_mask(path: str | Path, max_colours: int = 20) -> np.ndarray:
    """A hand-made first-frame mask as uint8 object ids (H, W) (0 background, 255 void).

    Accepts an indexed PNG (indices are ids), a greyscale image (small levels are ids, a light drawing is
    object 1), an RGBA alpha drawing, or a few flat colours (black is background; DAVIS palette colours keep
    their index, others get the next free ids).

    Raises ValueError naming the file for an ambiguous mask, too many colours (JPEG) or ids above 254.
    """
    # Grey rules (:func:`_grey_ids`): ids when every level but 0 and 255 (void) is below 128, or, in a 16/32-bit
    # image, the levels are exactly 1..K; one level >= 128 is object 1; more than ``max_colours`` levels (soft
    # edges): >= 128 is object 1 (half the brightest level when that is above 255); anything else (e.g. levels 0,
    # 100, 200) is refused. Ids above 254 are refused, never thresholded or wrapped (the output PNGs are 8-bit).
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.array(im)
    except (OSError, Image.DecompressionBombError) as e:  # a bomb: a huge image in a small file
        raise ValueError(f"{path}: not a readable image ({e})") from None
    if mode == "P":
        return arr.astype(np.uint8)
    if mode == "1":
        return arr.astype(np.uint8)
    if mode == "LA" and (arr[..., 1] < 255).any() and (arr[..., 0] == arr[..., 0].flat[0]).all():
        return (arr[..., 1] >= 128).astype(np.uint8)  # one flat grey, drawn with the alpha channel
    if mode in ("L", "LA", "I", "F") or mode.startswith("I;16"):
        return _grey_ids(arr[..., 0] if mode == "LA" else arr, path, max_colours)
    if mode not in ("RGB", "RGBA"):
        raise ValueError(f"{path}: a first-frame mask must be an indexed, greyscale or RGB(A) PNG, got mode {mode}")
    rgb = arr[..., :3]
    if mode == "RGBA" and (arr[..., 3] < 255).any() and (rgb == rgb.reshape(-1, 3)[0]).all():
        return (arr[..., 3] >= 128).astype(np.uint8)  # one flat colour, drawn with the alpha channel
    if (rgb[..., :1] == rgb).all():
        return _grey_ids(rgb[..., 0], path, max_colours)  # grey levels stored as RGB
    colours, inverse = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)  # sorted: black first
    drawn = colours.any(1)  # black is the background
    if drawn.sum() > max_colours:
        raise ValueError(f"{path}: {int(drawn.sum())} different colours; a mask needs a few flat colours (one per "
                         f"object). Save it as an indexed or greyscale PNG (not JPEG, no anti-aliasing)")
    known = {tuple(c): i for i, c in enumerate(davis_palette().tolist()) if 0 < i < 255}
    palette_ids = [known.get(tuple(c), 0) if d else 0 for c, d in zip(colours.tolist(), drawn)]
    used = set(palette_ids)
    free = (i for i in range(1, 255) if i not in used)
    lut = np.array([i or (next(free) if d else 0) for i, d in zip(palette_ids, drawn)], dtype=np.uint8)
    return lut[inverse.reshape(rgb.shape[:2])]  # one id per colour


SHAPES = ("ellipse", "box")


def shape_mask(height: int, width: int, shapes: dict[int, dict]) -> np.ndarray:
    """A first-frame mask drawn from simple shapes: uint8 ids (height, width), 0 background.

    ``shapes``: ``{object id: {"shape": "ellipse" | "box", "cx", "cy", "w", "h"}}`` with the centre and the size
    as fractions of the frame (0..1). Later ids are drawn over earlier ones where they overlap. A rough mask:
    label propagation carries whatever it covers, background included (lesson 11 shows how much that costs).
    """
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise ValueError(f"height and width must be whole numbers > 0, got {height!r}, {width!r}")
    ys = (np.arange(height)[:, None] + 0.5) / height
    xs = (np.arange(width)[None, :] + 0.5) / width
    out = np.zeros((height, width), dtype=np.uint8)
    for obj in sorted(shapes):
        d = shapes[obj]
        if not isinstance(obj, int) or not 1 <= obj <= 254:
            raise ValueError(f"object ids must be whole numbers 1..254, got {obj!r}")
        if d.get("shape") not in SHAPES or any(not isinstance(d.get(k), (int, float)) or isinstance(d.get(k), bool)
                                               or not np.isfinite(d.get(k)) for k in ("cx", "cy", "w", "h")):
            raise ValueError(f"shapes[{obj}] must be {{'shape': one of {SHAPES}, 'cx', 'cy', 'w', 'h'}} with finite "
                             f"numbers, got {d!r}")
        dx, dy = (xs - d["cx"]) / max(d["w"] / 2, 1e-9), (ys - d["cy"]) / max(d["h"] / 2, 1e-9)
        inside = (dx * dx + dy * dy <= 1) if d["shape"] == "ellipse" else ((np.abs(dx) <= 1) & (np.abs(dy) <= 1))
        if not inside.any():  # outside the frame, or smaller than a pixel: a mask without it would be saved
            raise ValueError(f"shapes[{obj}] covers no pixel of the {width}x{height} frame (outside it, or smaller "
                             f"than one pixel): move or enlarge it, or remove object {obj}")
        out[inside] = obj
    return out


def _grey_ids(grey: np.ndarray, path: Path, max_colours: int) -> np.ndarray:
    """Object ids from one channel of levels (see :func:`read_first_mask` for the rules)."""
    if grey.dtype.kind == "f":
        if not np.isfinite(grey).all() or (grey != np.round(grey)).any():
            raise ValueError(f"{path}: a floating-point image with fractional or non-finite values is not a mask; "
                             f"save the object ids as an indexed or 8-bit greyscale PNG")
    wide = grey.dtype.itemsize > 1  # a 16/32-bit image may hold ids above 127
    grey = grey.astype(np.int64)
    if grey.size and grey.min() < 0:
        raise ValueError(f"{path}: negative values ({int(grey.min())}) are not object ids")
    levels = np.unique(grey)
    nonzero = levels[levels > 0]
    ids = nonzero[nonzero != 255]  # 255 is void

    def as_ids() -> np.ndarray:
        if ids.size and ids.max() > 254:
            raise ValueError(f"{path}: object ids up to {int(ids.max())} ({len(ids)} objects) do not fit the 8-bit "
                             f"output PNGs (ids 1..254, 255 is void); renumber the objects 1..254")
        return grey.astype(np.uint8)

    if len(nonzero) == 0:
        return np.zeros(grey.shape, np.uint8)
    if len(nonzero) == 1 and nonzero[0] >= 128:
        return (grey > 0).astype(np.uint8)  # black and white: one object
    if ids.size == 0 or ids.max() < 128:
        return as_ids()  # small ids (255 void)
    consecutive = len(nonzero) == int(nonzero.max())  # exactly 1..K
    if wide and consecutive:
        return as_ids()
    if len(nonzero) > max_colours:
        top = int(nonzero.max())
        return (grey >= (128 if top <= 255 else (top + 1) // 2)).astype(np.uint8)  # soft edges: threshold
    shown = ", ".join(map(str, nonzero[:8].tolist())) + (" ..." if len(nonzero) > 8 else "")
    raise ValueError(f"{path}: ambiguous grey levels {shown}: not object ids (ids are below 128, with 255 as void), "
                     f"not black and white (one level), and too few levels for soft edges; save the mask as an "
                     f"indexed (palette) PNG of object ids, or in black and white")


class VideoSequence:
    """A video file with one first-frame mask, shaped like a :class:`VOSSequence` for :func:`segment_sequence`.

    The mask may be an indexed PNG (object ids), a greyscale image of small ids or a black-and-white drawing
    (object 1), an RGBA drawing (alpha) or a colour image with one flat colour per object (see
    :func:`read_first_mask`). A mask without any object is refused, as for DAVIS and YouTube-VOS sequences.
    """

    def __init__(self, video: str | Path, first_mask: str | Path, max_frames: int | None = None):
        from .video import probe_video

        if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int)
                                       or max_frames < 1):
            raise ValueError(f"max_frames must be a whole number >= 1 or None, got {max_frames!r}")
        self.video = Path(video)
        info = probe_video(self.video)
        if info.error is not None:
            raise ValueError(f"{self.video}: {info.error}")
        self.name = self.video.stem
        self.num_frames = info.num_frames if max_frames is None else min(info.num_frames, max_frames)
        self.size = (info.height, info.width)
        self.fps = info.fps
        mask_path = Path(first_mask)
        if not mask_path.is_file():
            raise FileNotFoundError(f"first-frame mask not found: {mask_path}")
        arr = read_first_mask(mask_path)
        if arr.shape != self.size:
            raise ValueError(f"{mask_path}: mask is {arr.shape[1]}x{arr.shape[0]}, the video is "
                             f"{self.size[1]}x{self.size[0]}")
        self.mask = torch.from_numpy(arr)
        self.object_ids = sorted(int(i) for i in np.unique(arr) if 0 < i < 255)
        if not self.object_ids:
            raise ValueError(f"{mask_path}: the first-frame mask holds no object (only background or void 255): "
                             f"nothing to propagate")
        self.first_frame = {o: 0 for o in self.object_ids}
        self.mask_paths = {0: mask_path}
        self.palette = None  # written with the DAVIS palette
        self.frame_paths = [Path(f"{i:05d}.jpg") for i in range(self.num_frames)]

    def load_frames(self, indices=None) -> torch.Tensor:
        from .video import read_frames

        return read_frames(self.video, list(range(self.num_frames)) if indices is None else indices)

    def load_mask(self, i: int) -> torch.Tensor:
        if i != 0:
            raise ValueError(f"{self.video}: only frame 0 has a mask")
        return self.mask
