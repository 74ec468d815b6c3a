"""Video object segmentation with a trained backbone: features -> label propagation -> id masks -> PNG files.

    vit, report = checkpoint.load_backbone("checkpoint.pth")
    segment_davis(vit, "DAVIS", "results/davis", cfg.propagation)     # results/davis/<seq>/00000.png ...

Frames are resized to the released code's size (short side 480, long side floored to a multiple of
``propagation.round_to`` = 8; one direct resize, no crop). With ``propagation.resize="released"`` (default) they are resized as the released
inference does, OpenCV's bilinear on the uint8 frame reproduced in torch, normalised with its std 0.228 and
encoded in float32; ``"antialias"`` uses torch's antialiased bilinear and bf16 on a GPU (see
:mod:`inolib.vos.resize`). Frames are encoded in batches up to the chosen block (block 7 through the final norm by
default); only the blocks needed run. Features are extracted once per frame and streamed into
the propagator, whose context queue bounds memory whatever the video's length.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..atomic import is_inside
from ..config import PropagationConfig, propagation_problems
from ..data.vos_datasets import (VOSSequence, list_davis_sequences, list_ytvos_videos, plain_name,
                                 read_davis_sequence, read_ytvos_sequence)
from ..model import INOViT
from .propagation import FrameSize, Propagator, labels_to_grid, labels_to_ids
from .resize import check_resize_mode, frames_to_input
from .writers import _shape_of, write_ids_png, write_overlay_gif


def extract_features(vit: INOViT, load, num_frames: int, size: FrameSize, block: int, batch: int = 4,
                     device: str | torch.device = "cpu", amp: bool = True,
                     resize: str = "released") -> Iterator[torch.Tensor]:
    """Yield the (D, h, w) feature map of each frame, computed ``batch`` frames at a time.

    ``load(indices) -> uint8 (B, 3, H, W)`` reads frames (e.g. ``VOSSequence.load_frames``); they are resized to
    ``size`` and normalised by :func:`inolib.vos.resize.frames_to_input` with ``resize`` (``propagation.resize``).
    On a GPU the network runs under bf16 autocast when ``amp`` (``propagation.amp``; the released inference is
    float32). Features are returned in float32. The arguments are checked here, before the first frame is read.
    """
    check_resize_mode(resize)
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return _features(vit, load, num_frames, size, block, batch, torch.device(device), amp, resize)


@torch.no_grad()
def _features(vit, load, num_frames, size, block, batch, dev, amp, resize):
    use_amp = amp and dev.type == "cuda"
    for start in range(0, num_frames, batch):
        idx = list(range(start, min(start + batch, num_frames)))
        x = frames_to_input(load(idx).to(dev, non_blocking=True), (size.height, size.width), resize)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            fmap = vit.patch_feature_map(x, block=block)
        yield from fmap.float()


def _num_classes(seq: VOSSequence) -> int:
    return max(seq.object_ids, default=0) + 1


def check_propagation_config(cfg: PropagationConfig, patch_size: int | None = None, depth: int | None = None) -> None:
    """ValueError naming each ``--propagation.<field>`` that cannot work (the rules of
    :func:`inolib.config.propagation_problems`), for a ViT of ``patch_size`` and ``depth`` when given."""
    found = propagation_problems(cfg, patch_size, depth)
    if found:
        raise ValueError("; ".join(found))


def _check(cfg: PropagationConfig, vit: INOViT) -> None:
    """The settings against this network: its patch size and, for a ViT, its depth (``feature_block``)."""
    blocks = getattr(vit, "blocks", None)
    check_propagation_config(cfg, vit.patch_embed.patch_size[0], len(blocks) if blocks is not None else None)


def _first_mask_file(seq) -> str:
    """The annotation that holds the sequence's first labels (for messages)."""
    paths = getattr(seq, "mask_paths", None) or {}
    return str(paths[min(paths)]) if paths else f"sequence {getattr(seq, 'name', '?')}"


@torch.no_grad()
def segment_sequence(vit: INOViT, seq: VOSSequence, cfg: PropagationConfig, device: str | torch.device = "cpu",
                     batch: int | None = None, first_label_mode: str = "bilinear", progress: bool = False,
                     features: torch.Tensor | None = None) -> torch.Tensor:
    """Propagate the sequence's given masks through all its frames: uint8 ids (T, H, W) at the original size.

    Objects whose first mask is on a later frame (YouTube-VOS) join at that frame (see :class:`Propagator`).
    ``progress`` shows a bar over the frames. This keeps every mask (T x H x W bytes); to write or look at a
    long video frame by frame use :func:`iter_segment_sequence`, whose memory does not depend on T.
    ``features`` (T, D, h, w): the sequence's features already extracted with these settings (see
    :func:`sequence_features`), to propagate them again with other propagation settings.
    """
    _check(cfg, vit)
    return torch.stack(list(_iter_segment(vit, seq, cfg, device, batch, first_label_mode, progress, features)))


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


def memory_needed(size: FrameSize, grid: tuple[int, int], width: int, cfg: PropagationConfig) -> int:
    """Bytes label propagation holds for frames of ``size`` (patch ``grid``, ``width``-dim features): the context
    queue's features (first frame + ``num_context``, float32) and a batch of frames through the network (about 20
    float32 activations of that width per token)."""
    tokens = grid[0] * grid[1]
    queue = (cfg.num_context + 2) * tokens * width * 4
    network = cfg.batch * (size.height * size.width * 3 * 4 + 20 * tokens * width * 4)
    return queue + network


def _available_ram() -> int | None:
    """Bytes of memory the system can still give (Linux MemAvailable, page cache included), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: nothing to compare with
        return None


def _check_memory(seq, size: FrameSize, grid: tuple[int, int], width: int, cfg: PropagationConfig,
                  dev: torch.device) -> None:
    """ValueError naming the sequence when propagating it needs more memory than ``dev`` has free, before any
    frame is read (a legitimate but huge video, e.g. a 16x8000 panorama at short side 480)."""
    need = memory_needed(size, grid, width, cfg)
    free = torch.cuda.mem_get_info(dev)[0] if dev.type == "cuda" else _available_ram()
    if free is not None and need > free:
        raise ValueError(f"sequence {getattr(seq, 'name', '?')}: its {seq.size[1]}x{seq.size[0]} frames at "
                         f"{size.width}x{size.height} ({grid[1]}x{grid[0]} patches) need about {need / 2**30:.1f} "
                         f"GiB for label propagation, {free / 2**30:.1f} GiB are free on {dev}; lower "
                         f"--propagation.short_side, --propagation.num_context or --propagation.batch")


@torch.no_grad()
def sequence_features(vit: INOViT, seq: VOSSequence, cfg: PropagationConfig, device: str | torch.device = "cpu",
                      batch: int | None = None) -> torch.Tensor:
    """The features label propagation uses for every frame of ``seq``: float (T, D, h, w) on the CPU (block
    ``cfg.feature_block``, frames resized as ``cfg`` says), for :func:`segment_sequence`'s ``features``."""
    patch = vit.patch_embed.patch_size[0]
    _check(cfg, vit)
    size, _ = _propagation_size(seq, cfg, patch)
    return torch.stack([f.cpu() for f in extract_features(vit, seq.load_frames, seq.num_frames, size,
                                                          cfg.feature_block, batch or cfg.batch,
                                                          torch.device(device), cfg.amp, cfg.resize)])


@torch.no_grad()
def iter_segment_sequence(vit: INOViT, seq: VOSSequence, cfg: PropagationConfig, device: str | torch.device = "cpu",
                          batch: int | None = None, first_label_mode: str = "bilinear", progress: bool = False,
                          features: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Yield the uint8 ids (H, W) of frames 0, 1, ..., T-1 at the original size, each as soon as it is final.

    Only the propagator's context queue is kept, so memory does not depend on the number of frames. The
    configuration is checked first (:func:`check_propagation_config`); a sequence without any object in its
    masks (only background or void) is a ValueError naming the mask, as for :class:`VideoSequence`.
    """
    _check(cfg, vit)
    yield from _iter_segment(vit, seq, cfg, device, batch, first_label_mode, progress, features)


@torch.no_grad()
def _iter_segment(vit: INOViT, seq: VOSSequence, cfg: PropagationConfig, device: str | torch.device = "cpu",
                  batch: int | None = None, first_label_mode: str = "bilinear", progress: bool = False,
                  features: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """:func:`iter_segment_sequence` with a configuration already checked."""
    H, W = seq.size
    patch = vit.patch_embed.patch_size[0]
    if not seq.object_ids:
        raise ValueError(f"{_first_mask_file(seq)}: the first-frame mask holds no object (only background or void "
                         f"255): nothing to propagate")
    size, grid = _propagation_size(seq, cfg, patch)
    C = _num_classes(seq)
    dev = torch.device(device)
    _check_memory(seq, size, grid, vit.embed_dim if hasattr(vit, "embed_dim") else 3 * patch * patch, cfg, dev)
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
        feats = extract_features(vit, seq.load_frames, seq.num_frames, size, cfg.feature_block, batch or cfg.batch,
                                 dev, cfg.amp, cfg.resize)
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


def _check_target(out_dir: Path, name: str, dataset: str | Path) -> None:
    """ValueError unless ``out_dir/name`` is a folder of ``out_dir`` outside the ``dataset`` (symlinks resolved):
    a sequence name is one path component, and no link leads the masks onto the dataset's ground truth."""
    target = out_dir / plain_name(name, "sequence")
    if not is_inside(target, out_dir) or target.resolve().parent != out_dir.resolve():
        raise ValueError(f"{target}: not a folder of {out_dir} (a link leading elsewhere?); masks go only there")
    if is_inside(target, dataset):
        raise ValueError(f"{target}: leads into the dataset {dataset}, an input folder that must not be written "
                         "into; choose another --out")


def share(names: list[str], frames: list[int], rank: int = 0, world_size: int = 1) -> list[str]:
    """The names process ``rank`` of ``world_size`` segments: sequences dealt longest first to the process with
    the fewest frames so far (balanced by frame count), kept in their given order. Every name goes to one process."""
    if world_size <= 1:
        return list(names)
    load, mine = [0] * world_size, set()
    for i in sorted(range(len(names)), key=lambda i: (-frames[i], i)):
        who = min(range(world_size), key=lambda r: (load[r], r))
        load[who] += frames[i]
        if who == rank:
            mine.add(i)
    return [n for i, n in enumerate(names) if i in mine]


def segment_davis(vit: INOViT, davis_root: str | Path, out_dir: str | Path, cfg: PropagationConfig,
                  split: str = "val", sequences: list[str] | None = None, device: str | torch.device = "cpu",
                  resume: bool = False, progress: bool = True, resolution: str = "480p", rank: int = 0,
                  world_size: int = 1) -> list[str]:
    """Segment every sequence of a DAVIS split and write ``out_dir/<seq>/<frame>.png``; returns the sequences done.

    With ``resume`` a sequence whose PNGs are all present is skipped; ``rank`` of ``world_size`` processes
    (torchrun) segments only its :func:`share`. ``out_dir`` inside ``davis_root`` is a ``ValueError``.
    """
    out_dir = Path(out_dir)
    if is_inside(out_dir, davis_root):
        raise ValueError(f"out_dir {out_dir}: inside the DAVIS folder {davis_root}, an input folder that must not be "
                         "written into; choose a folder outside it")
    names = sequences or list_davis_sequences(davis_root, split, resolution)
    _check(cfg, vit)
    seqs = [read_davis_sequence(davis_root, name, resolution) for name in names]  # every input checked first
    for seq in seqs:
        if not seq.object_ids:
            raise ValueError(f"{_first_mask_file(seq)}: the first-frame mask holds no object (only background or "
                             f"void 255): nothing to propagate")
    for seq in seqs:
        _check_target(out_dir, seq.name, davis_root)
    mine = set(share([s.name for s in seqs], [s.num_frames for s in seqs], rank, world_size))
    seqs = [s for s in seqs if s.name in mine]
    done = []
    for seq in tqdm(seqs, desc="sequences", unit="seq", disable=not progress):
        if _write_sequence(vit, seq, out_dir / seq.name, cfg, device, resume, progress):
            done.append(seq.name)
    return done


def segment_ytvos(vit: INOViT, ytvos_root: str | Path, out_dir: str | Path, cfg: PropagationConfig,
                  split: str = "valid", videos: list[str] | None = None, device: str | torch.device = "cpu",
                  resume: bool = False, progress: bool = True, rank: int = 0, world_size: int = 1) -> list[str]:
    """Segment the videos of a YouTube-VOS 2018 split and write ``out_dir/Annotations/<video>/<frame>.png`` (the
    layout the official server takes); returns the videos done. Objects join at the frame of their first mask.
    With ``resume`` a video whose PNGs are all present is skipped. ``out_dir`` inside ``ytvos_root`` is refused
    (ValueError naming both)."""
    out_dir = Path(out_dir)
    if is_inside(out_dir, ytvos_root):
        raise ValueError(f"out_dir {out_dir}: inside the YouTube-VOS folder {ytvos_root}, an input folder that must "
                         "not be written into; choose a folder outside it")
    names = videos or list_ytvos_videos(ytvos_root, split)
    _check(cfg, vit)
    done = []
    for name in names:
        _check_target(out_dir / "Annotations", name, ytvos_root)
    if world_size > 1:  # balanced by frame count: the frames each video folder holds
        frames = [len(list((Path(ytvos_root) / split / "JPEGImages" / n).glob("*.jpg"))) for n in names]
        names = share(names, frames, rank, world_size)
    for name in tqdm(names, desc="videos", unit="video", disable=not progress):
        seq = read_ytvos_sequence(ytvos_root, name, split)
        if _write_sequence(vit, seq, out_dir / "Annotations" / name, cfg, device, resume, progress):
            done.append(name)
    return done


def segment_video(vit: INOViT, seq, out_dir: str | Path, cfg: PropagationConfig,
                  device: str | torch.device = "cpu", progress: bool = True) -> tuple[int, Path]:
    """Segment one video of a user (a :class:`inolib.data.user_video.VideoSequence`): writes
    ``out_dir/<name>/<frame:05d>.png`` for every frame and ``out_dir/<name>_overlay.gif`` (the masks over the
    frames), each mask as soon as it is final. Returns (masks written, the GIF's path)."""
    out_dir = Path(out_dir)
    _check(cfg, vit)
    target = out_dir / seq.name
    count = 0

    def written():  # each mask goes to its PNG, then on to the GIF
        nonlocal count
        for t, m in enumerate(_iter_segment(vit, seq, cfg, device, progress=progress)):
            write_ids_png(target / f"{t:05d}.png", m)
            count += 1
            yield m

    target.mkdir(parents=True, exist_ok=True)
    gif = write_overlay_gif(out_dir / f"{seq.name}_overlay.gif", seq, written(), fps=min(seq.fps, 25.0))
    return count, gif


def write_sequence(vit: INOViT, seq, target: str | Path, cfg: PropagationConfig,
                   device: str | torch.device = "cpu", resume: bool = False, progress: bool = False) -> bool:
    """Segment ``seq`` and write ``target/<frame>.png`` for each frame as soon as it is final (memory does not
    depend on the number of frames; every PNG is written atomically). With ``resume`` skip a sequence whose PNGs
    are all there and whose last one reads back at the frame's size. Returns whether it was segmented.
    ``progress`` shows a bar over the frames."""
    _check(cfg, vit)
    return _write_sequence(vit, seq, target, cfg, device, resume, progress)


def _write_sequence(vit, seq, target, cfg, device, resume, progress) -> bool:
    """:func:`write_sequence` with a configuration already checked."""
    target = Path(target)
    if resume and _already_written(target, seq):
        return False
    target.mkdir(parents=True, exist_ok=True)  # before any computation: a file in the way fails here
    for path, m in zip(seq.frame_paths, _iter_segment(vit, seq, cfg, device, progress=progress)):
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
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        warnings.warn(f"{last}: unreadable ({e}); segmenting {seq.name} again", stacklevel=3)
        return False
    h, w = seq.frame_size(seq.num_frames - 1)
    if size != (w, h) or mode not in ("P", "L"):
        warnings.warn(f"{last}: a {size[0]}x{size[1]} '{mode}' image, expected a {w}x{h} id map; segmenting "
                      f"{seq.name} again", stacklevel=3)
        return False
    return True
