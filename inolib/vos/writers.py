"""Writing segmentation results: id masks as indexed PNGs (the DAVIS format) and animated GIFs of the masks
over the frames."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from ..atomic import atomic_write, temp_path
from ..data.vos_datasets import davis_palette


def blend_ids(image: np.ndarray, ids: torch.Tensor, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) float image in [0, 1] with the objects of the id map ``ids`` (H, W) painted over it in the colours
    of ``palette`` (256, 3) at opacity ``alpha``; background (0) and void (255) stay clear."""
    lab = ids.detach().cpu().numpy().astype(np.int64)
    colours = np.asarray(palette, dtype=np.float64)[lab] / 255
    fg = ((lab > 0) & (lab < 255))[..., None]
    return np.where(fg, (1 - alpha) * image + alpha * colours, image)


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pending: list[torch.Tensor] = []
    with GifWriter(path, fps) as gif:
        size = None

        def flush() -> None:
            frames = seq.load_frames(list(range(gif.count, gif.count + len(pending))))
            for f, m in zip(frames, pending):
                img = f.permute(1, 2, 0).float().numpy() / 255
                rgb = (blend_ids(img, m, davis_palette()) * 255).astype(np.uint8)
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
