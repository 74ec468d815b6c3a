"""The training clip dataset: L frames at 8 fps from unlabeled videos, with per-frame multi-crops.

    index = VideoIndex.build(resolve_sources("Charades_v1_480/"), cache_file="runs/x/video_index.json")
    data = ClipDataset(index, cfg.crops)
    sampler = ClipSampler(data.num_starts, cfg.crops.clips_per_video, seed=0, rank=rank, world_size=world)
    loader = make_clip_loader(data, sampler, batch_size=4, num_workers=8)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for batch in loader:            # batch["globals"] (B, T, 3, 224, 224), batch["locals"] (B, T, M, 3, 64, 64)
            skips.update(batch)         # SkipLog: one warning per broken file, and a count for the log

What the released code does (torchvision ``VideoClips``): each video is resampled to 8 fps and every run of
L consecutive resampled frames is a clip; each epoch takes up to 5 random clips per video (RandomClipSampler).

Robustness: a file that fails to decode while training (for instance bytes damaged in the middle of the
frame data, which indexing cannot see, or a file cut short or replaced after it was indexed, which the reason
says) is replaced by another clip; the sample reports the file and the reason in ``batch["skipped"]``, and
:class:`SkipLog` warns once per file in the main process. When no video is left that decodes,
:class:`UnusableVideos` (a ``ValueError``) names the files.

Reproducibility: the sampler's plan depends only on (seed, epoch, rank, world_size), and every sample's
augmentation is seeded from its plan entry, so a clip is the same tensor with 0, 1 or N workers.
"""

from __future__ import annotations

import math
import signal
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..augment import MultiCrop
from ..config import CropConfig
from .index import VideoIndex, describe_change, list_skipped
from .video import VideoInfo, read_frames, resample_indices

_MIX = 0x9E3779B97F4A7C15  # 64-bit golden ratio, mixes integers into seeds


def _seed(*parts: int) -> int:
    h = 0
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * _MIX + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h & 0x7FFFFFFFFFFFFFFF


def decode_size(width: int, height: int, crops: CropConfig) -> tuple[int, int] | None:
    """The smallest frame size at which no crop is upsampled more than at full size, or None (full size).

    A RandomResizedCrop of scale s and aspect r has a short side of at least sqrt(s * A * r_min) on a
    frame of area A. Decoding at area A' = max over crop types of size^2 / (s_min * r_min) keeps every
    crop at or above its output size, so smaller decoding loses nothing the crops would keep.
    """
    r_min = min(crops.ratio[0], 1 / crops.ratio[1])
    need = max(crops.global_size ** 2 / (crops.global_scale[0] * r_min),
               (crops.local_size ** 2 / (crops.local_scale[0] * r_min)) if crops.num_local else 0.0)
    area = width * height
    if need >= area:
        return None
    f = math.sqrt(need / area)
    w, h = 2 * math.ceil(width * f / 2), 2 * math.ceil(height * f / 2)  # even sizes for the scaler
    return (w, h) if (w, h) != (width, height) else None


class UnusableVideos(ValueError):
    """Training has no video left that decodes: every video failed while training (for instance files cut short
    or replaced after they were indexed), or so many that ``max_retries + 1`` clips in a row failed. The message
    (one line) names the files and the reasons."""

    @classmethod
    def from_loader(cls, error: BaseException) -> "UnusableVideos":
        """The error as raised in the dataset, from the one a DataLoader re-raises for its worker (whose message
        holds the worker's traceback, then ``...UnusableVideos: <message>`` on its last line)."""
        text = str(error)
        if "Traceback" not in text:
            return error if isinstance(error, cls) else cls(text)
        last = [line for line in text.splitlines() if line.strip()][-1]
        return cls(last.split(f"{cls.__name__}: ", 1)[-1].strip())


class ClipSampler(Sampler):
    """Yields ``(video, start, sample_seed)`` keys: up to ``clips_per_video`` random clips per video per
    epoch, shuffled, split across ``world_size`` ranks (padded so every rank has the same count).

    Args:
        num_starts: number of possible clip starts of each video (0 = unusable video).
    Call :meth:`set_epoch` before each epoch; the plan is a function of (seed, epoch) only. ``skip`` leaves out
    the first samples of this rank's share (resuming an epoch part-way).
    """

    def __init__(self, num_starts: list[int], clips_per_video: int = 5, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        if clips_per_video < 1:
            raise ValueError(f"clips_per_video must be >= 1, got {clips_per_video}")
        self.num_starts = [int(n) for n in num_starts]
        self.clips_per_video = clips_per_video
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.epoch = 0
        self.skip = 0
        total = sum(min(n, clips_per_video) for n in self.num_starts)
        if total == 0:
            raise ValueError("no video has enough frames for a clip")
        self._per_rank = math.ceil(total / world_size)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimizer steps in one epoch of this process: whole batches of ``batch_size`` clips (the remainder of a
        process's share is dropped, as the loader's ``drop_last``). ValueError when not even one batch fits."""
        steps = len(self) // batch_size
        if steps == 0:
            raise ValueError(f"{len(self)} clips per process, fewer than one batch of {batch_size}: add videos or "
                             "lower optim.batch_size_per_gpu / raise crops.clips_per_video")
        return steps

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = int(epoch)
        self.skip = max(0, int(skip))

    def plan(self) -> list[tuple[int, int, int]]:
        """The whole epoch's keys for every rank, before splitting."""
        g = torch.Generator().manual_seed(_seed(self.seed, self.epoch))
        keys = []
        for v, n in enumerate(self.num_starts):
            k = min(n, self.clips_per_video)
            if k:
                starts = torch.randperm(n, generator=g)[:k] if self.shuffle else torch.arange(k)
                keys += [(v, int(s)) for s in starts]
        if self.shuffle:
            keys = [keys[i] for i in torch.randperm(len(keys), generator=g)]
        keys = [(v, s, _seed(self.seed, self.epoch, v, s)) for v, s in keys]
        pad = self._per_rank * self.world_size - len(keys)
        return keys + keys[:pad]

    def __iter__(self):
        return iter(self.plan()[self.rank::self.world_size][self.skip:])

    def __len__(self) -> int:
        return max(0, self._per_rank - self.skip)


class ClipDataset(Dataset):
    """Map-style dataset over the usable videos of an index; keys come from :class:`ClipSampler`.

    ``data[(video, start, seed)]`` -> dict with ``globals`` (T, 3, Sg, Sg), ``locals`` (T, M, 3, Sl, Sl),
    ``video`` (path), ``start`` (resampled frame), ``frames`` (source-frame indices, long (T,)),
    ``skipped`` (list of (path, reason) that failed while producing this sample).
    """

    def __init__(self, index: VideoIndex, crops: CropConfig, max_retries: int = 20, reduce_decode: bool = True):
        self.crops = crops
        self.transform = MultiCrop(crops)
        self.max_retries = max_retries
        self.reduce_decode = reduce_decode
        self.videos: list[VideoInfo] = []
        self.index_skipped: list[tuple[str, str]] = list(index.skipped)
        short = []
        for e in index.ok:
            n = e.num_resampled(crops.fps)
            if n >= crops.clip_len:
                self.videos.append(e)
            else:
                short.append((e.path, f"too short: {n} frames at {crops.fps:g} fps, a clip needs {crops.clip_len}"))
        self.index_skipped += short
        if not self.videos:
            raise ValueError(f"no usable video among {len(index)} files: "
                             + "; ".join(f"{p}: {r}" for p, r in self.index_skipped[:5]))
        if short:  # the index warned about the files that do not open; these open but are too short
            warnings.warn(f"skipping {len(short)} of {len(index)} videos too short for one clip: "
                          f"{list_skipped(short)}", stacklevel=2)
        self.num_starts = [v.num_resampled(crops.fps) - crops.clip_len + 1 for v in self.videos]
        self._bad: dict[int, str] = {}  # per process (each worker has its own copy)

    def __len__(self) -> int:
        return sum(min(n, self.crops.clips_per_video) for n in self.num_starts)

    def clip_frames(self, video: int, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode clip ``start`` of ``video``: source indices (T,) and uint8 frames (T, 3, H, W)."""
        info = self.videos[video]
        idx = resample_indices(info.num_frames, info.fps, self.crops.fps)[start:start + self.crops.clip_len]
        size = decode_size(info.width, info.height, self.crops) if self.reduce_decode else None
        return idx, read_frames(info.path, idx, size)

    def augment(self, frames: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame multi-crop of uint8 frames (T, 3, H, W), drawn from an RNG seeded by ``seed`` alone
        (so a sample does not depend on which worker made it)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed(seed, 0))
            return self.transform(frames)

    def _failed(self, limit: int = 5) -> str:
        """The files that failed to decode so far with their reasons, for a message (the first ``limit``)."""
        items = [f"{self.videos[v].path}: {r}" for v, r in sorted(self._bad.items())]
        return "; ".join(items[:limit]) + (f" (and {len(items) - limit} more)" if len(items) > limit else "")

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        video, start, seed = key
        skipped = []
        for attempt in range(self.max_retries + 1):
            if video not in self._bad:
                try:
                    idx, frames = self.clip_frames(video, start)
                    if frames.shape[0] != self.crops.clip_len:
                        raise ValueError(f"decoded {frames.shape[0]} frames, expected {self.crops.clip_len}")
                    break
                except (ValueError, RuntimeError, OSError) as e:
                    info = self.videos[video]
                    reason = " ".join(str(e).replace(f"{info.path}: ", "").split())  # one line
                    changed = describe_change(info)  # a file rewritten, replaced or removed after indexing
                    reason = f"{changed}; {reason}" if changed else reason
                    self._bad[video] = reason
                    skipped.append((info.path, reason))
            else:
                skipped.append((self.videos[video].path, self._bad[video]))
            if len(self._bad) == len(self.videos):
                raise UnusableVideos(f"no video left to train on: all {len(self.videos)} usable videos of the index "
                                     f"failed to decode while training: {self._failed()}")
            g = torch.Generator().manual_seed(_seed(seed, attempt + 1))  # a reproducible replacement
            video = int(torch.randint(len(self.videos), (), generator=g))
            start = int(torch.randint(self.num_starts[video], (), generator=g))
        else:
            raise UnusableVideos(f"almost no video left to train on: {self.max_retries + 1} clips in a row failed to "
                                 f"decode, {len(self._bad)} of {len(self.videos)} videos so far: {self._failed()}")
        globals_, locals_ = self.augment(frames, seed)
        return {"globals": globals_, "locals": locals_, "video": self.videos[video].path, "start": start,
                "frames": idx, "skipped": skipped}


def collate_clips(samples: list[dict]) -> dict:
    """Stack samples into a batch: ``globals`` (B, T, 3, Sg, Sg), ``locals`` (B, T, M, 3, Sl, Sl), ``start`` (B,),
    ``frames`` (B, T); ``video`` a list of paths; ``skipped`` all (path, reason) pairs of the batch."""
    return {
        "globals": torch.stack([s["globals"] for s in samples]),
        "locals": torch.stack([s["locals"] for s in samples]),
        "start": torch.tensor([s["start"] for s in samples]),
        "frames": torch.stack([s["frames"] for s in samples]),
        "video": [s["video"] for s in samples],
        "skipped": [x for s in samples for x in s["skipped"]],
    }


def _fixed_mmap_threshold(nbytes: int = 4 << 20) -> None:
    """Make glibc return large blocks (decoded frames) to the OS at once.

    glibc raises its mmap threshold each time a large block is freed, after which frame-sized buffers
    come from the heap and fragment it: a worker's resident memory then creeps up over epochs (measured
    486 -> 683 MiB over 60 epochs on the bundled videos, flat with this; BENCHMARKS.md).
    """
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").mallopt(-3, nbytes)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # N workers x 1 thread; decord uses one decoding thread per reader
    _fixed_mmap_threshold()
    # Ctrl-C and a scheduler's SIGTERM reach the whole process group: the main process stops the run at a
    # step boundary and ends the workers itself; a worker that died on the signal would break that step
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def make_clip_loader(dataset: ClipDataset, sampler: ClipSampler, batch_size: int, num_workers: int = 0,
                     pin_memory: bool = False, drop_last: bool = True, persistent_workers: bool = False,
                     prefetch_factor: int | None = None) -> DataLoader:
    """A DataLoader of :func:`collate_clips` batches over ``sampler``'s keys."""
    kw = {}
    if num_workers > 0:
        kw = dict(worker_init_fn=_worker_init, persistent_workers=persistent_workers,
                  prefetch_factor=prefetch_factor or 2)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate_clips, pin_memory=pin_memory, drop_last=drop_last, **kw)


class SkipLog:
    """Main-process record of broken files: one warning per file, and counts for the training log."""

    def __init__(self, index_skipped: list[tuple[str, str]] | None = None):
        self.files: dict[str, str] = dict(index_skipped or [])
        self.at_index = len(self.files)

    def update(self, batch: dict) -> list[tuple[str, str]]:
        """Record a batch's ``skipped`` entries; warn for files not seen before. Returns the new ones."""
        new = []
        for path, reason in batch.get("skipped", []):
            if path not in self.files:
                self.files[path] = reason
                new.append((path, reason))
                warnings.warn(f"skipping video {path}: {reason}", stacklevel=2)
        return new

    @property
    def count(self) -> int:
        return len(self.files)

    def summary(self) -> str:
        during = self.count - self.at_index
        return f"{self.count} videos skipped ({self.at_index} at indexing, {during} while decoding)"


def load_clip_views(path: str | Path, crops: CropConfig, start: int = 0, seed: int = 0) -> dict:
    """One clip of one video with its crops, for notebooks: ``frames`` uint8 (T, 3, H, W) at full size,
    ``indices`` (T,) source frames, ``globals`` (T, 3, Sg, Sg), ``locals`` (T, M, 3, Sl, Sl)."""
    index = VideoIndex.build([Path(path)], progress=False)
    ds = ClipDataset(index, crops, max_retries=0, reduce_decode=False)
    if not 0 <= start < ds.num_starts[0]:
        raise ValueError(f"{path}: clip start {start} is out of range 0..{ds.num_starts[0] - 1}")
    idx, frames = ds.clip_frames(0, start)
    globals_, locals_ = ds.augment(frames, seed)
    return {"frames": frames, "indices": idx, "globals": globals_, "locals": locals_}
