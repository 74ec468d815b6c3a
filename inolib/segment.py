"""Video object segmentation with a trained backbone: features -> label propagation -> id masks -> PNG files.

    vit, report = checkpoint.load_backbone("checkpoint.pth")
    segment_davis(vit, "DAVIS", "results/davis", cfg.propagation)     # results/davis/<seq>/00000.png ...

Frames are resized to the released code's size (short side 480, long side floored to a multiple of
``propagation.round_to`` = 8; one direct resize, no crop). With ``propagation.resize="released"`` (default) they are resized as the released
inference does, OpenCV's bilinear on the uint8 frame reproduced in torch, normalised with its std 0.228 and
encoded in float32; ``"antialias"`` uses torch's antialiased bilinear and bf16 on a GPU (see
:mod:`inolib.resize`). Frames are encoded in batches up to the chosen block (block 7 through the final norm by
default); only the blocks needed run. Features are extracted once per frame and streamed into
the propagator, whose context queue bounds memory whatever the video's length.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .atomic import atomic_write, is_inside, temp_path
from .config import PropagationConfig
from .data.vos import VOSSequence, davis_palette, list_davis_sequences, read_davis_sequence
from .model import INOViT
from .propagate import FrameSize, Propagator, check_parameters, labels_to_grid, labels_to_ids
from .resize import check_resize_mode, frames_to_input


def extract_features(vit: INOViT, load, num_frames: int, size: FrameSize, block: int, batch: int = 4,
                     device: str | torch.device = "cpu", amp: bool = True,
                     resize: str = "released") -> Iterator[torch.Tensor]:
    """Yield the (D, h, w) feature map of each frame, computed ``batch`` frames at a time.

    ``load(indices) -> uint8 (B, 3, H, W)`` reads frames (e.g. ``VOSSequence.load_frames``); they are resized to
    ``size`` and normalised by :func:`inolib.resize.frames_to_input` with ``resize`` (``propagation.resize``).
    ``"released"`` runs the network in float32 as the released inference does; ``"antialias"`` uses bf16
    autocast on a GPU when ``amp``. Features are returned in float32. The arguments are checked here, before the
    first frame is read.
    """
    check_resize_mode(resize)
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return _features(vit, load, num_frames, size, block, batch, torch.device(device), amp, resize)


@torch.no_grad()
def _features(vit, load, num_frames, size, block, batch, dev, amp, resize):
    use_amp = amp and dev.type == "cuda" and resize == "antialias"
    for start in range(0, num_frames, batch):
        idx = list(range(start, min(start + batch, num_frames)))
        x = frames_to_input(load(idx).to(dev, non_blocking=True), (size.height, size.width), resize)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            fmap = vit.patch_feature_map(x, block=block)
        yield from fmap.float()


def _num_classes(seq: VOSSequence) -> int:
    return max(seq.object_ids, default=0) + 1


def check_propagation_config(cfg: PropagationConfig, patch_size: int | None = None) -> None:
    """ValueError naming the ``propagation.<field>`` (the ``--propagation.<field>`` flag) that cannot work:
    top-k, radius, temperature, context length, sizes; with ``patch_size``, a ``short_side`` below one patch."""
    check_parameters(topk=cfg.topk, radius=cfg.radius, temperature=cfg.temperature, num_context=cfg.num_context,
                     prefix="propagation.")
    check_resize_mode(cfg.resize)
    def whole(v) -> bool:
        return not isinstance(v, bool) and isinstance(v, (int, np.integer))

    for name, zero in (("short_side", "no resize"), ("round_to", "the patch size")):
        v = getattr(cfg, name)
        if v is not None and (not whole(v) or v < 0):
            raise ValueError(f"propagation.{name} must be a whole number >= 0 (0: {zero}), got {v!r}")
    if not whole(cfg.feature_block) or cfg.feature_block < 1:
        raise ValueError(f"propagation.feature_block must be a block number >= 1, got {cfg.feature_block!r}")
    if patch_size is not None and cfg.short_side and cfg.short_side < max(patch_size, cfg.round_to or 0):
        raise ValueError(f"propagation.short_side {cfg.short_side} is smaller than one {patch_size}-pixel patch "
                         f"(and the long side is floored to a multiple of {cfg.round_to or patch_size}): no feature "
                         f"grid is left; use at least {max(patch_size, cfg.round_to or 0)} (480 as released)")


def _first_mask_file(seq) -> str:
    """The annotation that holds the sequence's first labels (for messages)."""
    paths = getattr(seq, "mask_paths", None) or {}
    return str(paths[min(paths)]) if paths else f"sequence {getattr(seq, 'name', '?')}"


@torch.no_grad()
def segment_sequence(vit: INOViT, seq: VOSSequence, cfg: PropagationConfig, device: str | torch.device = "cpu",
                     batch: int = 4, first_label_mode: str = "bilinear", progress: bool = False,
                     features: torch.Tensor | None = None) -> torch.Tensor:
    """Propagate the sequence's given masks through all its frames: uint8 ids (T, H, W) at the original size.

    Objects whose first mask is on a later frame (YouTube-VOS) join at that frame (see :class:`Propagator`).
    ``progress`` shows a bar over the frames. This keeps every mask (T x H x W bytes); to write or look at a
    long video frame by frame use :func:`iter_segment_sequence`, whose memory does not depend on T.
    ``features`` (T, D, h, w): the sequence's features already extracted with these settings (see
    :func:`sequence_features`), to propagate them again with other propagation settings.
    """
    return torch.stack(list(iter_segment_sequence(vit, seq, cfg, device, batch, first_label_mode, progress,
                                                  features)))


def _propagation_size(seq: VOSSequence, cfg: PropagationConfig, patch: int) -> tuple[FrameSize, tuple[int, int]]:
    """The size ``seq``'s frames are resized to for propagation and its patch grid (h, w); ValueError naming the
    sequence when the resized frames hold no patch."""
    H, W = seq.size
    size = FrameSize.for_frame(H, W, cfg.short_side, cfg.round_to if cfg.round_to else patch, patch)
    grid = (size.height // patch, size.width // patch)
    if min(grid) < 1:
        raise ValueError(f"sequence {getattr(seq, 'name', '?')}: {W}x{H} frames resized to {size.width}x"
                         f"{size.height} (propagation.short_side {cfg.short_side}) hold no {patch}-pixel patch")
    return size, grid


@torch.no_grad()
def sequence_features(vit: INOViT, seq: VOSSequence, cfg: PropagationConfig, device: str | torch.device = "cpu",
                      batch: int = 4) -> torch.Tensor:
    """The features label propagation uses for every frame of ``seq``: float (T, D, h, w) on the CPU (block
    ``cfg.feature_block``, frames resized as ``cfg`` says), for :func:`segment_sequence`'s ``features``."""
    patch = vit.patch_embed.patch_size[0]
    check_propagation_config(cfg, patch)
    size, _ = _propagation_size(seq, cfg, patch)
    return torch.stack([f.cpu() for f in extract_features(vit, seq.load_frames, seq.num_frames, size,
                                                          cfg.feature_block, batch, torch.device(device),
                                                          resize=cfg.resize)])


@torch.no_grad()
def iter_segment_sequence(vit: INOViT, seq: VOSSequence, cfg: PropagationConfig, device: str | torch.device = "cpu",
                          batch: int = 4, first_label_mode: str = "bilinear", progress: bool = False,
                          features: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Yield the uint8 ids (H, W) of frames 0, 1, ..., T-1 at the original size, each as soon as it is final.

    Only the propagator's context queue is kept, so memory does not depend on the number of frames. The
    configuration is checked first (:func:`check_propagation_config`); a sequence without any object in its
    masks (only background or void) is a ValueError naming the mask, as for :class:`VideoSequence`.
    """
    H, W = seq.size
    patch = vit.patch_embed.patch_size[0]
    check_propagation_config(cfg, patch)
    if not seq.object_ids:
        raise ValueError(f"{_first_mask_file(seq)}: the first-frame mask holds no object (only background or void "
                         f"255): nothing to propagate")
    size, grid = _propagation_size(seq, cfg, patch)
    C = _num_classes(seq)
    dev = torch.device(device)
    starts: dict[int, torch.Tensor] = {}
    for t in sorted(set(seq.first_frame.values()) | {0}):
        mask = seq.load_mask(t).long() if t in seq.mask_paths else torch.zeros(H, W, dtype=torch.long)
        if t > 0:  # only the objects that first appear here
            new = [o for o, f in seq.first_frame.items() if f == t]
            mask = torch.where(torch.isin(mask, torch.tensor(new)), mask, torch.zeros_like(mask))
        labels = labels_to_grid(mask.to(dev), C, grid, first_label_mode)
        if t > 0:
            labels[0] = 0  # a late reference carries only its new objects
        starts[t] = labels
    if features is None:
        feats = extract_features(vit, seq.load_frames, seq.num_frames, size, cfg.feature_block, batch, dev,
                                 resize=cfg.resize)
    else:
        want = (seq.num_frames, "D", *grid)
        if (not isinstance(features, torch.Tensor) or features.dim() != 4 or features.shape[0] != seq.num_frames
                or tuple(features.shape[2:]) != grid):
            raise ValueError(f"features must be the sequence's features of shape {want} (sequence_features with the "
                             f"same short_side), got {_shape_of(features)}")
        feats = (f.to(dev) for f in features)
    if 0 in seq.mask_paths:  # frame 0 is the given mask (void 255 written as background)
        m0 = seq.load_mask(0)
        yield torch.where(m0 == 255, torch.zeros_like(m0), m0)
    else:
        yield labels_to_ids(starts[0], (H, W), patch)
    prop = None
    bar = tqdm(feats, total=seq.num_frames, desc=getattr(seq, "name", "frames"), unit="frame", leave=False,
               disable=not progress)
    for t, f in enumerate(bar):
        if t == 0:
            prop = Propagator(f, starts[0], topk=cfg.topk, num_context=cfg.num_context, radius=cfg.radius,
                              temperature=cfg.temperature)
            continue
        try:
            soft = prop.step(f, starts.get(t))
        except ValueError as e:
            raise ValueError(f"sequence {getattr(seq, 'name', '?')}, frame {t}: {e}") from None
        yield labels_to_ids(soft, (H, W), patch)


def _shape_of(x) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def write_ids_png(path: str | Path, ids: torch.Tensor | np.ndarray, palette: np.ndarray | None = None) -> Path:
    """Write an id map (H, W) of ids 0..255 as an indexed palette PNG (DAVIS palette by default).

    Atomic: the PNG is written under a temporary name in the same folder and renamed over ``path``, so an
    interrupted run never leaves a truncated ``<frame>.png`` (which ``--resume`` would count as done)."""
    path = Path(path)
    raw = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)
    if raw.ndim != 2:
        raise ValueError(f"{path}: an id map must be (H, W), got shape {raw.shape}")
    if raw.dtype != np.uint8 and raw.size and (raw.min() < 0 or raw.max() > 255):
        raise ValueError(f"{path}: ids {int(raw.min())}..{int(raw.max())} do not fit an 8-bit PNG (0..255)")
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(raw.astype(np.uint8, copy=False), mode="P")
    im.putpalette((davis_palette() if palette is None else np.asarray(palette, dtype=np.uint8)).flatten().tolist())

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            im.save(f, format="PNG")

    return atomic_write(path, write)


def segment_davis(vit: INOViT, davis_root: str | Path, out_dir: str | Path, cfg: PropagationConfig,
                  split: str = "val", sequences: list[str] | None = None, device: str | torch.device = "cpu",
                  resume: bool = False, progress: bool = True, resolution: str = "480p") -> list[str]:
    """Segment every sequence of a DAVIS split and write ``out_dir/<seq>/<frame>.png``; returns the sequences done.

    With ``resume`` a sequence whose PNGs are all present is skipped. ``out_dir`` inside ``davis_root`` (the
    user's dataset) is refused with a ``ValueError`` naming both.
    """
    out_dir = Path(out_dir)
    if is_inside(out_dir, davis_root):
        raise ValueError(f"out_dir {out_dir}: inside the DAVIS folder {davis_root}, an input folder that must not be "
                         "written into; choose a folder outside it")
    names = sequences or list_davis_sequences(davis_root, split, resolution)
    check_propagation_config(cfg, vit.patch_embed.patch_size[0])
    seqs = [read_davis_sequence(davis_root, name, resolution) for name in names]  # every input checked first
    for seq in seqs:
        if not seq.object_ids:
            raise ValueError(f"{_first_mask_file(seq)}: the first-frame mask holds no object (only background or "
                             f"void 255): nothing to propagate")
    done = []
    for seq in tqdm(seqs, desc="sequences", unit="seq", disable=not progress):
        if write_sequence(vit, seq, out_dir / seq.name, cfg, device, resume, progress):
            done.append(seq.name)
    return done


def write_sequence(vit: INOViT, seq, target: str | Path, cfg: PropagationConfig,
                   device: str | torch.device = "cpu", resume: bool = False, progress: bool = False) -> bool:
    """Segment ``seq`` and write ``target/<frame>.png`` for each frame as soon as it is final (memory does not
    depend on the number of frames; every PNG is written atomically). With ``resume`` skip a sequence whose PNGs
    are all there and whose last one reads back at the frame's size. Returns whether it was segmented.
    ``progress`` shows a bar over the frames."""
    target = Path(target)
    if resume and _already_written(target, seq):
        return False
    target.mkdir(parents=True, exist_ok=True)  # before any computation: a file in the way fails here
    for path, m in zip(seq.frame_paths, iter_segment_sequence(vit, seq, cfg, device, progress=progress)):
        write_ids_png(target / f"{Path(path).stem}.png", m, seq.palette)
    return True


def _already_written(target: Path, seq) -> bool:
    """Whether ``target`` holds ``<frame>.png`` for every frame and the last one is a readable id map of the last
    frame's size (written last, so it tells whether the run finished)."""
    names = [f"{Path(p).stem}.png" for p in seq.frame_paths]
    if not target.is_dir() or not all((target / n).is_file() for n in names):
        return False
    last = target / names[-1]
    try:
        with Image.open(last) as im:
            im.load()
            size, mode = im.size, im.mode
    except (OSError, ValueError) as e:
        warnings.warn(f"{last}: unreadable ({e}); segmenting {seq.name} again", stacklevel=3)
        return False
    h, w = seq.frame_size(seq.num_frames - 1)
    if size != (w, h) or mode not in ("P", "L"):
        warnings.warn(f"{last}: a {size[0]}x{size[1]} '{mode}' image, expected a {w}x{h} id map; segmenting "
                      f"{seq.name} again", stacklevel=3)
        return False
    return True


def read_first_mask(path: str | Path, max_colours: int = 20) -> np.ndarray:
    """A hand-made first-frame mask as uint8 object ids (H, W) (0 background, 255 void).

    Accepted:

    * an indexed PNG: its indices are the ids;
    * a single-channel image (greyscale 8-bit, 16-bit ``I;16``, 32-bit, or grey levels stored as RGB):
      - object ids when every level other than 0 (and 255, void) is below 128 (e.g. 1..5), or, in a 16/32-bit
        image, when the levels are exactly 1..K;
      - a black-and-white drawing: one level >= 128 (255, 65535, a light grey) is object 1;
      - a drawing with soft edges (more than ``max_colours`` levels): >= 128 is object 1 (half the brightest
        level when it is above 255);
      - anything else (e.g. levels 0, 100 and 200: ids or a drawing?) is refused, with the reason;
    * an RGBA image whose alpha is the drawing (alpha >= 128 is object 1);
    * a colour image with a few flat colours (black is background; DAVIS palette colours keep their index,
      other colours get the next free ids in RGB order).

    Ids above 254 (255 is void) cannot be written to the 8-bit output PNGs: such a mask is refused (renumber the
    objects 1..254), never thresholded or wrapped. Every refusal is a ValueError naming the file, e.g. for a
    JPEG-smoothed colour mask with many colours.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.array(im)
    except OSError as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None
    if mode == "P":
        return arr.astype(np.uint8)
    if mode == "1":
        return arr.astype(np.uint8)
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
        if d.get("shape") not in SHAPES or any(not isinstance(d.get(k), (int, float)) for k in ("cx", "cy", "w", "h")):
            raise ValueError(f"shapes[{obj}] must be {{'shape': one of {SHAPES}, 'cx', 'cy', 'w', 'h'}}, got {d!r}")
        dx, dy = (xs - d["cx"]) / max(d["w"] / 2, 1e-9), (ys - d["cy"]) / max(d["h"] / 2, 1e-9)
        inside = (dx * dx + dy * dy <= 1) if d["shape"] == "ellipse" else ((np.abs(dx) <= 1) & (np.abs(dy) <= 1))
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
        from .data.video import probe_video

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
        from .data.video import read_frames

        return read_frames(self.video, list(range(self.num_frames)) if indices is None else indices)

    def load_mask(self, i: int) -> torch.Tensor:
        if i != 0:
            raise ValueError(f"{self.video}: only frame 0 has a mask")
        return self.mask


class GifWriter:
    """An animated GIF written one frame at a time, so memory does not depend on the number of frames.

    ``with GifWriter(path, fps) as gif: gif.add(rgb)`` for uint8 (H, W, 3) frames of one size. PIL encodes each
    frame as a one-frame GIF with its own palette (fast octree quantisation), which becomes that frame's local
    colour table (PIL's ``save_all`` keeps every frame until the end). The file is written under a temporary name
    and renamed into place when the block ends without an error; on an error it is removed.
    """

    def __init__(self, path: str | Path, fps: float = 8.0, loop: int = 0):
        self.path = Path(path)
        self.tmp = temp_path(self.path)
        self.delay = max(2, round(100 / fps))  # hundredths of a second (viewers treat 0-1 as 10)
        self.loop = loop
        self.size: tuple[int, int] | None = None
        self.count = 0
        self.file = open(self.tmp, "wb")

    def add(self, rgb: np.ndarray) -> None:
        """Append one uint8 (H, W, 3) frame."""
        buf = io.BytesIO()
        # fast octree palette (about 1 ms for 320x180, against 250 ms for PIL's default median cut)
        im = Image.fromarray(np.ascontiguousarray(rgb)).quantize(256, method=Image.Quantize.FASTOCTREE)
        im.save(buf, format="GIF")
        b = buf.getvalue()
        w, h, packed = struct.unpack_from("<HHB", b, 6)
        pos, table = 13, b""
        if packed & 0x80:  # global colour table: it becomes this frame's local table
            n = 3 << ((packed & 7) + 1)
            table, pos = b[pos:pos + n], pos + n
        while b[pos] == 0x21:  # extension blocks (none for a still image): skip
            pos += 2
            while b[pos]:
                pos += b[pos] + 1
            pos += 1
        if b[pos] != 0x2C or b[-1] != 0x3B:
            raise ValueError(f"{self.path}: unexpected GIF layout from PIL")
        desc = bytearray(b[pos:pos + 10])
        if desc[9] & 0x80:  # the frame has a local table already (part of the data below)
            table = b""
        elif table:
            desc[9] = (desc[9] & 0x40) | 0x80 | (packed & 7)  # keep interlacing, add the local table
        if self.size is None:
            self.size = (w, h)
            self.file.write(b"GIF89a" + struct.pack("<HHBBB", w, h, 0x70, 0, 0))  # no global colour table
            self.file.write(b"!\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", self.loop) + b"\x00")
        elif (w, h) != self.size:
            raise ValueError(f"{self.path}: frame {self.count} is {w}x{h}, the GIF is {self.size[0]}x{self.size[1]}")
        # graphic control: leave the frame in place (disposal 1), delay in 1/100 s
        self.file.write(b"!\xf9\x04\x04" + struct.pack("<H", self.delay) + b"\x00\x00")
        self.file.write(bytes(desc) + table + b[pos + 10:-1])
        self.count += 1

    def close(self) -> Path:
        """Finish the file and move it into place."""
        if self.count == 0:
            self.discard()
            raise ValueError(f"{self.path}: no frames to write")
        self.file.write(b";")
        self.file.close()
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "GifWriter":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()


def write_overlay_gif(path: str | Path, seq, ids: torch.Tensor | Iterable[torch.Tensor], max_width: int = 480,
                      fps: float = 8.0) -> Path:
    """An animated GIF of the frames with the propagated masks over them (to look at a result).

    ``ids``: uint8 id maps, a (T, H, W) tensor or any iterable of (H, W) maps in frame order (e.g. the masks of
    :func:`iter_segment_sequence` as they are written). Frames are decoded 16 at a time and each GIF frame is
    written as soon as it is made (:class:`GifWriter`), so memory does not depend on the number of frames.
    """
    from .viz import overlay_labels

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pending: list[torch.Tensor] = []
    with GifWriter(path, fps) as gif:
        size = None

        def flush() -> None:
            frames = seq.load_frames(list(range(gif.count, gif.count + len(pending))))
            for f, m in zip(frames, pending):
                rgb = (overlay_labels(f, m, davis_palette()) * 255).astype(np.uint8)
                gif.add(np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR)))
            pending.clear()

        for m in ids:
            if size is None:
                H, W = m.shape[-2:]
                scale = min(1.0, max_width / W)
                size = (max(1, int(W * scale)), max(1, int(H * scale)))
            pending.append(m)
            if len(pending) == 16:
                flush()
        if pending:
            flush()
    return path
