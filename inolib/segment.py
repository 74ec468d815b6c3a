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

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .config import PropagationConfig
from .data.vos import VOSSequence, davis_palette, list_davis_sequences, read_davis_sequence
from .model import INOViT
from .propagate import FrameSize, Propagator, labels_to_grid, labels_to_ids
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


@torch.no_grad()
def segment_sequence(vit: INOViT, seq: VOSSequence, cfg: PropagationConfig, device: str | torch.device = "cpu",
                     batch: int = 4, first_label_mode: str = "bilinear", progress: bool = False) -> torch.Tensor:
    """Propagate the sequence's given masks through all its frames: uint8 ids (T, H, W) at the original size.

    Objects whose first mask is on a later frame (YouTube-VOS) join at that frame (see :class:`Propagator`).
    ``progress`` shows a bar over the frames.
    """
    H, W = seq.size
    patch = vit.patch_embed.patch_size[0]
    size = FrameSize.for_frame(H, W, cfg.short_side, cfg.round_to if cfg.round_to else patch, patch)
    grid = (size.height // patch, size.width // patch)
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
    feats = extract_features(vit, seq.load_frames, seq.num_frames, size, cfg.feature_block, batch, dev,
                             resize=cfg.resize)
    if 0 in seq.mask_paths:  # frame 0 is the given mask (void 255 written as background)
        m0 = seq.load_mask(0)
        out = [torch.where(m0 == 255, torch.zeros_like(m0), m0)]
    else:
        out = [labels_to_ids(starts[0], (H, W), patch)]
    prop = None
    bar = tqdm(feats, total=seq.num_frames, desc=getattr(seq, "name", "frames"), unit="frame", leave=False,
               disable=not progress)
    for t, f in enumerate(bar):
        if t == 0:
            prop = Propagator(f, starts[0], topk=cfg.topk, num_context=cfg.num_context, radius=cfg.radius,
                              temperature=cfg.temperature)
            continue
        soft = prop.step(f, starts.get(t))
        out.append(labels_to_ids(soft, (H, W), patch))
    return torch.stack(out)


def write_ids_png(path: str | Path, ids: torch.Tensor | np.ndarray, palette: np.ndarray | None = None) -> Path:
    """Write an id map (H, W) as an indexed palette PNG (DAVIS palette by default)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.uint8)
    im = Image.fromarray(arr, mode="P")
    im.putpalette((davis_palette() if palette is None else np.asarray(palette, dtype=np.uint8)).flatten().tolist())
    im.save(path)
    return path


def segment_davis(vit: INOViT, davis_root: str | Path, out_dir: str | Path, cfg: PropagationConfig,
                  split: str = "val", sequences: list[str] | None = None, device: str | torch.device = "cpu",
                  resume: bool = False, progress: bool = True, resolution: str = "480p") -> list[str]:
    """Segment every sequence of a DAVIS split and write ``out_dir/<seq>/<frame>.png``; returns the sequences done.

    With ``resume`` a sequence whose PNGs are all present is skipped.
    """
    out_dir = Path(out_dir)
    names = sequences or list_davis_sequences(davis_root, split, resolution)
    done = []
    for name in tqdm(names, desc="sequences", unit="seq", disable=not progress):
        seq = read_davis_sequence(davis_root, name, resolution)
        if write_sequence(vit, seq, out_dir / name, cfg, device, resume, progress):
            done.append(name)
    return done


def write_sequence(vit: INOViT, seq, target: str | Path, cfg: PropagationConfig,
                   device: str | torch.device = "cpu", resume: bool = False, progress: bool = False) -> bool:
    """Segment ``seq`` and write ``target/<frame>.png`` for each frame; with ``resume`` skip a sequence whose PNGs
    are all there. Returns whether it was segmented. ``progress`` shows a bar over the frames."""
    target = Path(target)
    if resume and target.is_dir() and len(list(target.glob("*.png"))) == seq.num_frames:
        return False
    ids = segment_sequence(vit, seq, cfg, device, progress=progress)
    for path, m in zip(seq.frame_paths, ids):
        write_ids_png(target / f"{Path(path).stem}.png", m, seq.palette)
    return True


def read_first_mask(path: str | Path, max_colours: int = 20) -> np.ndarray:
    """A hand-made first-frame mask as uint8 object ids (H, W) (0 background, 255 void).

    Accepted: an indexed PNG (its indices are the ids); a greyscale or black-and-white image (>= 128 is object 1);
    an RGBA image whose alpha is the drawing (alpha >= 128 is object 1); a colour image with a few flat colours
    (black is background; DAVIS palette colours keep their index, other colours get the next free ids in
    RGB order). ValueError naming the file otherwise, e.g. for a JPEG-smoothed mask with many colours.
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
    if mode in ("L", "1", "I;16", "I", "F", "LA"):
        grey = arr[..., 0] if mode == "LA" else arr
        return (np.asarray(grey) >= (128 if mode != "1" else 1)).astype(np.uint8)
    if mode not in ("RGB", "RGBA"):
        raise ValueError(f"{path}: a first-frame mask must be an indexed, greyscale or RGB(A) PNG, got mode {mode}")
    rgb = arr[..., :3]
    if mode == "RGBA" and (arr[..., 3] < 255).any() and (rgb == rgb.reshape(-1, 3)[0]).all():
        return (arr[..., 3] >= 128).astype(np.uint8)  # one flat colour, drawn with the alpha channel
    if (rgb[..., :1] == rgb).all():
        return (rgb[..., 0] >= 128).astype(np.uint8)  # grey levels stored as RGB
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


class VideoSequence:
    """A video file with one first-frame mask, shaped like a :class:`VOSSequence` for :func:`segment_sequence`.

    The mask may be an indexed PNG (object ids), a greyscale/binary image (thresholded at 128: object 1), an RGBA
    drawing (alpha) or a colour image with one flat colour per object (see :func:`read_first_mask`).
    """

    def __init__(self, video: str | Path, first_mask: str | Path):
        from .data.video import probe_video

        self.video = Path(video)
        info = probe_video(self.video)
        if info.error is not None:
            raise ValueError(f"{self.video}: {info.error}")
        self.name = self.video.stem
        self.num_frames = info.num_frames
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
            raise ValueError(f"{mask_path}: the mask holds no object")
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


def write_overlay_gif(path: str | Path, seq, ids: torch.Tensor, max_width: int = 480, fps: float = 8.0) -> Path:
    """An animated GIF of the frames with the propagated masks over them (to look at a result)."""
    from .viz import overlay_labels

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    H, W = ids.shape[-2:]
    scale = min(1.0, max_width / W)
    size = (max(1, int(W * scale)), max(1, int(H * scale)))
    images = []
    for start in range(0, len(ids), 16):
        frames = seq.load_frames(list(range(start, min(start + 16, len(ids)))))
        for f, m in zip(frames, ids[start:start + 16]):
            rgb = (overlay_labels(f, m, davis_palette()) * 255).astype(np.uint8)
            images.append(Image.fromarray(rgb).resize(size, Image.BILINEAR))
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path
