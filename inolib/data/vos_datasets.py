"""DAVIS-2017 and YouTube-VOS 2018 readers for semi-supervised video object segmentation.

    seqs = load_davis("DAVIS", split="val")              # list of VOSSequence, validated first masks
    seq = seqs[0]
    frames = seq.load_frames()                            # uint8 (T, 3, H, W)
    labels = seq.first_labels()                           # uint8 (H, W): 0 background, 1..K objects, 255 void
    gt = seq.load_masks()                                 # uint8 (T, H, W), DAVIS only (every frame annotated)

    yt = read_ytvos_sequence("ytvos2018", "003234408d", split="valid")
    yt.first_frame                                        # {object id: first frame index holding it}
    yt.load_mask(i) for i in yt.mask_paths                # sparse annotations (only where objects appear)

Layouts:

- DAVIS-2017: ``root/JPEGImages/<res>/<seq>/00000.jpg``, ``root/Annotations/<res>/<seq>/00000.png`` (palette
  PNG, pixel value = object id, 255 = void), ``root/ImageSets/2017/<split>.txt`` (one sequence a line).
  In the semi-supervised task every object is labelled in frame 0.
- YouTube-VOS 2018: ``root/<split>/JPEGImages/<video>/<frame>.jpg`` (every 5th original frame in ``valid``),
  ``root/<split>/Annotations/<video>/<frame>.png`` (in ``valid`` only the frames where an object first
  appears, holding those objects), ``root/<split>/meta.json`` (``{"videos": {video: {"objects": {id: ...}}}}``).

Masks are returned as stored: object ids unchanged and the void label 255 kept as 255 (never an object).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .video import read_image

VOID_LABEL = 255


def davis_palette() -> np.ndarray:
    """The palette of DAVIS annotations (the PASCAL-VOC colour map): uint8 (256, 3).

    Colour ``i`` spreads the bits of ``i`` over the channels: bit 3j of i goes to bit (7 - j) of red,
    bit 3j+1 to green, bit 3j+2 to blue. 0 = black, 1 = (128, 0, 0), 2 = (0, 128, 0), 3 = (128, 128, 0).
    """
    ids = np.arange(256, dtype=np.int64)
    rgb = np.zeros((256, 3), dtype=np.int64)
    for j in range(8):  # 8 groups of 3 bits, vectorised over the 256 ids
        for c in range(3):
            rgb[:, c] |= ((ids >> (3 * j + c)) & 1) << (7 - j)
    return rgb.astype(np.uint8)


def _palette_of(im: Image.Image) -> np.ndarray | None:
    """The palette of a "P" image as uint8 (256, 3) (zero-padded when shorter), else None."""
    if im.mode != "P":
        return None
    pal = im.getpalette() or []
    arr = np.zeros(256 * 3, dtype=np.uint8)
    arr[: min(len(pal), 768)] = np.asarray(pal[:768], dtype=np.uint8)
    return arr.reshape(256, 3)


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file, reading only its header."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: cannot read image ({e})") from e
    return h, w


def _read_label_png(path: Path, frame_size: tuple[int, int] | None, require_indexed: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an annotation PNG as uint8 (H, W) of object ids, and its palette (256, 3) or None.

    Raises ValueError naming ``path`` if it is not a palette image (when ``require_indexed``), holds no
    object ids (a mode other than "P" or "L"), or differs in size from ``frame_size`` = (H, W).
    """
    if not path.is_file():
        raise FileNotFoundError(f"annotation not found: {path}")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if require_indexed and mode != "P":
                raise ValueError(f"{path}: annotation is not an indexed palette ('P' mode) PNG but mode "
                                 f"'{mode}'; pass require_indexed=False to accept 'L' masks")
            if mode not in ("P", "L"):
                raise ValueError(f"{path}: annotation mode '{mode}' holds no object ids (need 'P' or 'L')")
            arr = np.array(im, dtype=np.uint8)
            pal = _palette_of(im)
    except ValueError:
        raise
    except (OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: cannot read annotation ({e})") from e
    if frame_size is not None and arr.shape != tuple(frame_size):
        raise ValueError(f"{path}: annotation size {arr.shape[1]}x{arr.shape[0]} (WxH) differs from its frame "
                         f"{frame_size[1]}x{frame_size[0]}")
    return arr, pal


def _object_ids(mask: np.ndarray) -> set[int]:
    """Object ids present in a mask (uint8 (H, W)), without background 0 and void 255."""
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    return {int(i) for i in present if i not in (0, VOID_LABEL)}


@dataclass
class VOSSequence:
    """One video of a VOS benchmark: frame files and the annotation files of its labelled frames.

    Attributes:
        name: sequence / video name.
        frame_paths: the JPEG frames in temporal order (T files).
        mask_paths: frame index -> annotation PNG, only for annotated frames.
        object_ids: sorted object ids (without 0 and the void label 255).
        first_frame: object id -> index of the first frame whose annotation holds it.
        palette: uint8 (256, 3) palette of the first annotation, or None for non-indexed masks.
        require_indexed: masks must be palette ("P" mode) PNGs when loaded.
    """

    name: str
    frame_paths: list[Path]
    mask_paths: dict[int, Path]
    object_ids: list[int]
    first_frame: dict[int, int]
    palette: np.ndarray | None = None
    require_indexed: bool = True
    _sizes: dict[int, tuple[int, int]] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def num_frames(self) -> int:
        """T, the number of frames."""
        return len(self.frame_paths)

    @property
    def num_objects(self) -> int:
        """K, the number of objects."""
        return len(self.object_ids)

    def frame_size(self, i: int) -> tuple[int, int]:
        """(H, W) of frame ``i`` (read from the JPEG header, cached)."""
        if not 0 <= i < self.num_frames:
            raise ValueError(f"sequence {self.name}: frame index {i} out of range 0..{self.num_frames - 1}")
        if i not in self._sizes:
            self._sizes[i] = _image_size(self.frame_paths[i])
        return self._sizes[i]

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of frame 0."""
        return self.frame_size(0)

    def load_frames(self, indices: list[int] | None = None) -> torch.Tensor:
        """Frames ``indices`` (all by default) as uint8 (T, 3, H, W); ValueError naming a frame of another size."""
        idx = list(range(self.num_frames)) if indices is None else [int(i) for i in indices]
        frames = []
        for i in idx:
            if not 0 <= i < self.num_frames:
                raise ValueError(f"sequence {self.name}: frame index {i} out of range 0..{self.num_frames - 1}")
            img = read_image(self.frame_paths[i])
            if frames and img.shape != frames[0].shape:
                raise ValueError(f"{self.frame_paths[i]}: frame size {tuple(img.shape[1:])} differs from "
                                 f"{self.frame_paths[idx[0]].name} {tuple(frames[0].shape[1:])}")
            frames.append(img)
        if not frames:
            raise ValueError(f"sequence {self.name}: no frame indices given")
        return torch.stack(frames)

    def load_mask(self, i: int) -> torch.Tensor:
        """Annotation of frame ``i`` as uint8 (H, W): object ids, 0 background, 255 void.

        Raises ValueError naming the file if frame ``i`` has no annotation, the PNG is not indexed (unless
        ``require_indexed`` is False), or its size differs from frame ``i``.
        """
        if i not in self.mask_paths:
            name = self.frame_paths[i].name if 0 <= i < self.num_frames else f"#{i}"
            raise ValueError(f"sequence {self.name}: frame {i} ({name}) has no annotation")
        arr, _ = _read_label_png(self.mask_paths[i], self.frame_size(i), self.require_indexed)
        return torch.from_numpy(arr)

    def load_masks(self) -> torch.Tensor:
        """All annotations as uint8 (T, H, W); only for fully annotated sequences (DAVIS), else ValueError."""
        missing = [i for i in range(self.num_frames) if i not in self.mask_paths]
        if missing:
            raise ValueError(f"sequence {self.name}: {len(missing)} of {self.num_frames} frames have no annotation "
                             f"(first: {self.frame_paths[missing[0]].name}); load_masks needs every frame "
                             f"annotated, use load_mask(i) for sparse annotations")
        return torch.stack([self.load_mask(i) for i in range(self.num_frames)])

    def first_labels(self) -> torch.Tensor:
        """The annotation of frame 0: uint8 (H, W)."""
        return self.load_mask(0)

    def head(self, n: int) -> "VOSSequence":
        """The first ``n`` frames as a sequence of their own (the same files; a shorter run for smoke tests)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a whole number >= 1, got {n!r}")
        masks = {i: p for i, p in self.mask_paths.items() if i < n}
        first = {o: f for o, f in self.first_frame.items() if f < n}
        return VOSSequence(self.name, self.frame_paths[:n], masks, sorted(first), first, self.palette,
                           self.require_indexed)


# ----------------------------------------------------------------------------------------------- DAVIS


def plain_name(name: str, what: str) -> str:
    """``name`` if it is one plain path component (a sequence, video, split or resolution folder name), else a
    ValueError naming ``what`` (where it came from): a name like ``../../x`` must not lead a writer out of its
    folder, e.g. onto a dataset's ground truth."""
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name
            or Path(name).name != name or Path(name).is_absolute()):
        raise ValueError(f"{what}: {name!r} is not a plain folder name (one path component, no '/' or '..')")
    return name


def list_davis_sequences(root: str | Path, split: str = "val", resolution: str = "480p") -> list[str]:
    """Sequence names of ``root/ImageSets/2017/<split>.txt``, in file order.

    Raises FileNotFoundError if the list file or a listed ``JPEGImages/<resolution>/<seq>`` folder is missing.
    """
    root = Path(root)
    plain_name(split, "DAVIS split")
    plain_name(resolution, "DAVIS resolution")
    list_file = root / "ImageSets" / "2017" / f"{split}.txt"
    if not list_file.is_file():
        raise FileNotFoundError(f"DAVIS split list not found: {list_file}")
    names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    for name in names:
        plain_name(name, f"{list_file}: sequence")
        folder = root / "JPEGImages" / resolution / name
        if not folder.is_dir():
            raise FileNotFoundError(f"{list_file}: sequence '{name}' has no frame folder {folder}")
    return names


def read_davis_sequence(root: str | Path, name: str, resolution: str = "480p", require_indexed: bool = True,
                        check_all: bool = False) -> VOSSequence:
    """A DAVIS-2017 sequence: sorted ``JPEGImages/<res>/<name>/*.jpg``, annotations matched by file stem.

    The first-frame annotation is always read and checked (exists, indexed when ``require_indexed``, same
    size as frame 0); ``object_ids`` are the ids it holds, each with ``first_frame`` 0. With ``check_all``
    every annotation is read and checked too, and one holding an object id absent from frame 0, or whose
    name matches no frame, is an error (semi-supervised DAVIS labels every object in frame 0).
    Errors are ValueError / FileNotFoundError naming the offending file or folder.
    """
    root = Path(root)
    plain_name(name, "DAVIS sequence")
    plain_name(resolution, "DAVIS resolution")
    frame_dir = root / "JPEGImages" / resolution / name
    ann_dir = root / "Annotations" / resolution / name
    if not frame_dir.is_dir():
        raise FileNotFoundError(f"DAVIS frame folder not found: {frame_dir}")
    frames = sorted(frame_dir.glob("*.jpg"))
    if not frames:
        raise ValueError(f"{frame_dir}: no .jpg frames (empty sequence '{name}')")
    pngs = {p.stem: p for p in sorted(ann_dir.glob("*.png"))} if ann_dir.is_dir() else {}
    mask_paths = {i: pngs[f.stem] for i, f in enumerate(frames) if f.stem in pngs}
    if 0 not in mask_paths:
        raise FileNotFoundError(f"first-frame annotation not found: {ann_dir / (frames[0].stem + '.png')}")
    seq = VOSSequence(name=name, frame_paths=frames, mask_paths=mask_paths, object_ids=[], first_frame={},
                      require_indexed=require_indexed)
    first, palette = _read_label_png(mask_paths[0], seq.frame_size(0), require_indexed)
    ids = _object_ids(first)
    if check_all:
        stems = {f.stem for f in frames}
        for stem, p in pngs.items():
            if stem not in stems:
                raise ValueError(f"{p}: annotation matches no frame of {frame_dir}")
        for i in sorted(mask_paths)[1:]:
            arr, _ = _read_label_png(mask_paths[i], seq.frame_size(i), require_indexed)
            extra = _object_ids(arr) - ids
            if extra:
                raise ValueError(f"{mask_paths[i]}: object id(s) {sorted(extra)} not in the first-frame annotation "
                                 f"{mask_paths[0].name} (ids {sorted(ids)})")
    seq.object_ids = sorted(ids)
    seq.first_frame = {k: 0 for k in seq.object_ids}
    seq.palette = palette
    return seq


def load_davis(root: str | Path, split: str = "val", resolution: str = "480p", **kw) -> list[VOSSequence]:
    """All sequences of a DAVIS-2017 split; ``kw`` goes to :func:`read_davis_sequence`."""
    return [read_davis_sequence(root, n, resolution=resolution, **kw)
            for n in list_davis_sequences(root, split=split, resolution=resolution)]


# ------------------------------------------------------------------------------------------ YouTube-VOS


def _read_ytvos_meta(root: Path, split: str) -> tuple[Path, dict]:
    """(path, the "videos" dict) of ``root/<split>/meta.json``."""
    meta_file = root / plain_name(split, "YouTube-VOS split") / "meta.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"YouTube-VOS meta file not found: {meta_file}")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{meta_file}: cannot parse JSON ({e})") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise ValueError(f"{meta_file}: no 'videos' dictionary")
    return meta_file, meta["videos"]


def list_ytvos_videos(root: str | Path, split: str = "valid") -> list[str]:
    """Sorted video names of ``root/<split>/meta.json``; FileNotFoundError if it is missing."""
    meta_file, videos = _read_ytvos_meta(Path(root), split)
    return sorted(plain_name(name, f"{meta_file}: video") for name in videos)


def _ytvos_sequence(root: Path, name: str, split: str, meta_file: Path, videos: dict,
                    require_indexed: bool) -> VOSSequence:
    plain_name(name, f"{meta_file}: video")
    if name not in videos:
        raise ValueError(f"{meta_file}: no video '{name}'")
    try:
        meta_ids = sorted(int(k) for k in videos[name].get("objects", {}))
    except (AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"{meta_file}: video '{name}' has malformed 'objects' ({e})") from e
    frame_dir = root / split / "JPEGImages" / name
    ann_dir = root / split / "Annotations" / name
    if not frame_dir.is_dir():
        raise FileNotFoundError(f"YouTube-VOS frame folder not found: {frame_dir}")
    frames = sorted(frame_dir.glob("*.jpg"))
    if not frames:
        raise ValueError(f"{frame_dir}: no .jpg frames (empty video '{name}')")
    index = {f.stem: i for i, f in enumerate(frames)}
    mask_paths: dict[int, Path] = {}
    for p in sorted(ann_dir.glob("*.png")) if ann_dir.is_dir() else []:
        if p.stem not in index:
            raise ValueError(f"{p}: annotation matches no frame of {frame_dir}")
        mask_paths[index[p.stem]] = p
    seq = VOSSequence(name=name, frame_paths=frames, mask_paths=mask_paths, object_ids=meta_ids, first_frame={},
                      require_indexed=require_indexed)
    first_frame: dict[int, int] = {}
    for i in sorted(mask_paths):
        arr, pal = _read_label_png(mask_paths[i], seq.frame_size(i), require_indexed)
        if i == min(mask_paths):
            seq.palette = pal
        found = _object_ids(arr)
        unknown = found - set(meta_ids)
        if unknown:
            raise ValueError(f"{mask_paths[i]}: object id(s) {sorted(unknown)} are not listed for video '{name}' "
                             f"in {meta_file}")
        for k in found:
            first_frame.setdefault(k, i)
    never = [k for k in meta_ids if k not in first_frame]
    if never:
        raise ValueError(f"video '{name}': object id(s) {never} listed in {meta_file} appear in no annotation "
                         f"under {ann_dir}")
    seq.first_frame = {k: first_frame[k] for k in meta_ids}
    return seq


def read_ytvos_sequence(root: str | Path, name: str, split: str = "valid", require_indexed: bool = True) -> VOSSequence:
    """A YouTube-VOS 2018 video: frames sorted by name, sparse annotations matched by file stem.

    Every annotation is read: ``first_frame[k]`` is the first annotated frame holding object ``k``. An
    object listed in meta.json but in no annotation, an annotation id not listed there, an annotation of
    another size than its frame, or one matching no frame, is a ValueError naming the video / file.
    ``load_masks()`` fails on such sparse sequences; use ``load_mask(i)`` for ``i in mask_paths``.
    """
    root = Path(root)
    meta_file, videos = _read_ytvos_meta(root, split)
    return _ytvos_sequence(root, name, split, meta_file, videos, require_indexed)


def load_ytvos(root: str | Path, split: str = "valid", require_indexed: bool = True) -> list[VOSSequence]:
    """All videos of a YouTube-VOS split (meta.json parsed once), sorted by name."""
    root = Path(root)
    meta_file, videos = _read_ytvos_meta(root, split)
    return [_ytvos_sequence(root, n, split, meta_file, videos, require_indexed) for n in sorted(videos)]
