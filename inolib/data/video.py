"""Reading frames of real videos and image sequences.

Clips are L frames at a target rate of 8 fps (App. A.1 "frameskip 8", which the released loader
implements as resampling each video to 8 fps, ref §4): frame k of the resampled video is source frame
``floor(k * native_fps / target_fps)``. Videos are decoded with decord, one reader per call, one
decoding thread, released after use (decord leaks memory and can hang when readers are shared).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def resample_indices(num_frames: int, native_fps: float, target_fps: float) -> torch.Tensor:
    """Source-frame indices of a video resampled to ``target_fps``: long (K,), K = floor(n * target / native).

    ``index[k] = floor(k * native_fps / target_fps)`` (torchvision VideoClips' rule, used by the released
    loader). When the video is slower than the target, frames repeat.
    """
    if native_fps <= 0 or target_fps <= 0:
        raise ValueError(f"fps must be positive, got native {native_fps}, target {target_fps}")
    count = int(math.floor(num_frames * target_fps / native_fps))
    step = native_fps / target_fps
    idx = torch.floor(torch.arange(count, dtype=torch.float64) * step).long()
    return idx[idx < num_frames]


def read_clip(path: str | Path, num_frames: int = 4, fps: float = 8.0, start: int = 0) -> torch.Tensor:
    """``num_frames`` consecutive frames of the video resampled to ``fps``, from resampled frame ``start``.

    Returns uint8 (T, 3, H, W). Raises ``ValueError`` naming the file if it cannot be read or is too short.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    try:
        import decord
    except ImportError as e:  # decord has no wheel for some platforms (ref user_pitfalls)
        raise ImportError("reading videos needs decord (pip install decord; x86_64 only). "
                          "DAVIS-style JPEG folders work without it.") from e
    vr = None
    try:
        vr = decord.VideoReader(str(path), num_threads=1)
        n, native = len(vr), float(vr.get_avg_fps())
        idx = resample_indices(n, native, fps)
        if start < 0 or start + num_frames > len(idx):
            raise ValueError(f"{path}: {len(idx)} frames at {fps:g} fps, cannot take {num_frames} from {start}")
        frames = vr.get_batch(idx[start:start + num_frames].tolist()).asnumpy()  # (T, H, W, 3)
    except (decord.DECORDError, RuntimeError) as e:
        raise ValueError(f"{path}: cannot decode video ({str(e).splitlines()[0]})") from e
    finally:
        vr = None  # release the reader and its decoder
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()


def read_image(path: str | Path) -> torch.Tensor:
    """An RGB image file as uint8 (3, H, W)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read image ({e})") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def read_frame_folder(folder: str | Path, num_frames: int | None = None, start: int = 0) -> torch.Tensor:
    """Sorted JPEG frames of a folder (DAVIS ``JPEGImages/480p/<seq>``) as uint8 (T, 3, H, W)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.jpg"))
    if not files:
        raise ValueError(f"no .jpg frames in {folder}")
    files = files[start:] if num_frames is None else files[start:start + num_frames]
    if num_frames is not None and len(files) < num_frames:
        raise ValueError(f"{folder}: needs {num_frames} frames from {start}, has {len(files)}")
    return torch.stack([read_image(f) for f in files])


def write_avi(path: str | Path, frames: torch.Tensor, fps: float = 8.0, quality: int = 90) -> Path:
    """Write uint8 frames (T, 3, H, W) as a Motion-JPEG AVI that decord (and ffmpeg) can read.

    A minimal RIFF/AVI 1.0 writer (no encoder library needed), used to make synthetic test videos.
    """
    import io
    import struct

    if frames.dim() != 4 or frames.shape[1] != 3 or frames.dtype != torch.uint8 or frames.shape[0] < 1:
        raise ValueError(f"write_avi expects uint8 frames (T, 3, H, W), got {frames.dtype} {tuple(frames.shape)}")
    T, _, H, W = frames.shape
    jpegs = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
        data = buf.getvalue()
        jpegs.append(data + b"\0" * (len(data) % 2))  # chunks are word aligned

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return tag + struct.pack("<I", len(payload)) + payload

    def lst(kind: bytes, payload: bytes) -> bytes:
        return chunk(b"LIST", kind + payload)

    rate, scale = int(round(fps * 1000)), 1000
    max_bytes = max(len(j) for j in jpegs)
    avih = struct.pack("<14I", int(1e6 / fps), max_bytes * int(math.ceil(fps)), 0, 0x10, T, 0, 1,
                       max_bytes, W, H, 0, 0, 0, 0)
    strh = struct.pack("<4s4sIHHIIIIIIIIhhhh", b"vids", b"MJPG", 0, 0, 0, 0, scale, rate, 0, T,
                       max_bytes, 0xFFFFFFFF, 0, 0, 0, W, H)
    strf = struct.pack("<IiiHH4sIiiII", 40, W, H, 1, 24, b"MJPG", W * H * 3, 0, 0, 0, 0)
    hdrl = lst(b"hdrl", chunk(b"avih", avih) + lst(b"strl", chunk(b"strh", strh) + chunk(b"strf", strf)))
    movi_chunks, index, offset = [], [], 4
    for j in jpegs:
        c = chunk(b"00dc", j)
        index.append(struct.pack("<4sIII", b"00dc", 0x10, offset, len(j)))
        movi_chunks.append(c)
        offset += len(c)
    movi = lst(b"movi", b"".join(movi_chunks))
    body = b"AVI " + hdrl + movi + chunk(b"idx1", b"".join(index))
    path = Path(path)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path
