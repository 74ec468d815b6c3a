"""Reading frames of real videos and image sequences.

Clips are L frames at a target rate of 8 fps (App. A.1 "frameskip 8", which the released loader
implements as resampling each video to 8 fps): frame k of the resampled video is source frame
``floor(k * native_fps / target_fps)``. Videos are decoded with decord, one reader per call, one
decoding thread, released after use (decord leaks memory and can hang when readers are shared).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image


VIDEO_EXTENSIONS = (".mp4", ".m4v", ".webm", ".mkv", ".avi", ".mov")


def resample_indices(num_frames: int, native_fps: float, target_fps: float) -> torch.Tensor:
    """Source-frame indices of a video resampled to ``target_fps``: long (K,), K = floor(n * target / native).

    ``index[k] = floor(k * native_fps / target_fps)``, computed exactly as torchvision's VideoClips (used by
    the released loader): float32 arithmetic. When the video is slower than the target, frames repeat.
    """
    if not (native_fps > 0 and target_fps > 0):
        raise ValueError(f"fps must be positive, got native {native_fps}, target {target_fps}")
    count = int(math.floor(num_frames * (float(target_fps) / native_fps)))
    step = float(native_fps) / float(target_fps)
    idx = (torch.arange(count, dtype=torch.float32) * step).floor().to(torch.int64)
    return idx[idx < num_frames]


@dataclass
class VideoInfo:
    """What the index knows of one video file; ``error`` is None for a usable file."""

    path: str
    size_bytes: int = -1
    mtime_ns: int = -1
    ctime_ns: int = -1  # status change time: moves on every write, rename or replacement, and cannot be set back
    num_frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    error: str | None = None

    def num_resampled(self, target_fps: float) -> int:
        """Frames after resampling to ``target_fps`` (0 for a broken file)."""
        if self.error is not None or self.num_frames <= 0 or self.fps <= 0:
            return 0
        return len(resample_indices(self.num_frames, self.fps, target_fps))


_QUIETED = []  # whether ffmpeg's own log was turned down (once per process)


def _import_decord():
    # torch first: decord2 imported before a CUDA build of torch loads NVBLAS globally and torch's CPU matmul then
    # crashes (docs/install.md). This module imports torch at the top; the line below keeps it so if that moves.
    import torch  # noqa: F401

    try:
        import decord
    except ImportError as e:  # decord has no wheel for some platforms (ref user_pitfalls)
        raise ImportError("reading videos needs decord (pip install decord2, the maintained fork with wheels for "
                          "Linux, macOS arm64 and Windows; it imports as decord). "
                          "DAVIS-style JPEG folders work without it.") from e
    if not _QUIETED:
        # ffmpeg prints every damaged packet of a broken file ("[h264 @ 0x...] error while decoding MB ...",
        # dozens of lines); inolib reports each broken file once, naming it. Only fatal messages stay. After
        # the first read, decord.logging.set_level(decord.logging.ERROR) brings the raw messages back.
        decord.logging.set_level(decord.logging.FATAL)
        _QUIETED.append(True)
    return decord


def _first_line(e: BaseException) -> str:
    """First line of a decoder error, without decord's "[hh:mm:ss] file.cc:123:" prefixes."""
    text = str(e).strip().splitlines()
    line = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", text[0] if text else "").strip()
    return (line or type(e).__name__)[:300]


@contextlib.contextmanager
def _openable(path: Path):
    """A name decord can open for ``path``: the path itself, or, when its name is not valid UTF-8 (decord takes
    UTF-8 strings; a file copied from another system may hold a Latin-1 byte), a link with a plain name to it in
    a temporary folder."""
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        with tempfile.TemporaryDirectory(prefix="inolib-video-") as tmp:
            link = os.path.join(tmp, "video" + path.suffix.encode("ascii", "ignore").decode())
            os.symlink(os.fsencode(path.absolute()), link)
            yield link
        return
    yield name


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, fps and size of a video, decoding its first frame. Never raises: a file that cannot
    be used gets ``error`` set to the reason (missing, empty, not a video, no frames, undecodable)."""
    path = Path(path)
    info = VideoInfo(str(path))
    try:
        st = path.stat()
    except OSError as e:
        info.error = f"missing or unreadable ({e.strerror or e})"
        return info
    info.size_bytes, info.mtime_ns, info.ctime_ns = st.st_size, st.st_mtime_ns, st.st_ctime_ns
    if st.st_size == 0:
        info.error = "empty file (0 bytes)"
        return info
    decord = _import_decord()
    vr = None
    try:
        with _openable(path) as name:
            vr = decord.VideoReader(name, num_threads=1)
        info.num_frames, info.fps = len(vr), float(vr.get_avg_fps())
        h, w = vr[0].shape[:2]  # decodes frame 0: catches files that open but do not decode
        info.width, info.height = int(w), int(h)
    except Exception as e:  # decord raises DECORDError/RuntimeError with ffmpeg's message
        info.error = f"cannot decode ({_first_line(e)})"
        return info
    finally:
        del vr  # release the reader and its decoder
    if info.num_frames <= 0:
        info.error = "no video frames"
    elif not math.isfinite(info.fps) or info.fps <= 0:
        info.error = f"invalid frame rate {info.fps}"
    return info


def _decode(decord, path: Path, idx: list[int], kw: dict) -> np.ndarray:
    """uint8 (T, H, W, 3) frames ``idx`` of ``path`` from a fresh one-thread reader (released on return)."""
    with _openable(path) as name:
        vr = decord.VideoReader(name, num_threads=1, **kw)
    try:
        if idx and (min(idx) < 0 or max(idx) >= len(vr)):
            raise ValueError(f"{path}: frame index out of range 0..{len(vr) - 1}")
        return vr.get_batch(idx).asnumpy()
    finally:
        del vr


def read_frames(path: str | Path, indices: list[int] | torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Decode only the frames ``indices`` of a video: uint8 (T, 3, H, W).

    ``size=(width, height)`` makes the decoder output smaller frames directly. Where the decoder cannot scale to
    that size (decord2 3.4.0 fails at some sizes, e.g. 144x108 from 340x256), the frames are decoded at their own
    size and resized here (antialiased bilinear). Raises ``ValueError`` naming the file if decoding fails.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    decord = _import_decord()
    idx = [int(i) for i in indices]
    kw = dict(width=int(size[0]), height=int(size[1])) if size is not None else {}
    try:
        frames = _decode(decord, path, idx, kw)
    except ValueError:
        raise
    except Exception as e:
        if not kw:
            raise ValueError(f"{path}: cannot decode video ({_first_line(e)})") from e
        try:  # the decoder's scaler failed: decode at the video's own size, resized below
            frames = _decode(decord, path, idx, {})
        except ValueError:
            raise
        except Exception:
            raise ValueError(f"{path}: cannot decode video ({_first_line(e)})") from e
    out = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()
    if kw and out.shape[-2:] != (kw["height"], kw["width"]):  # the fallback, or a decoder that ignored the size
        out = resize_frames(out, kw["height"], kw["width"])
    return out


def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (T, 3, H, W) -> uint8 (T, 3, height, width), antialiased bilinear, rounded."""
    x = torch.nn.functional.interpolate(frames.float(), size=(height, width), mode="bilinear", align_corners=False,
                                        antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).contiguous()


def read_clip(path: str | Path, num_frames: int = 4, fps: float = 8.0, start: int = 0) -> torch.Tensor:
    """``num_frames`` consecutive frames of the video resampled to ``fps``, from resampled frame ``start``.

    Returns uint8 (T, 3, H, W). Raises ``ValueError`` naming the file if it cannot be read or is too short.
    """
    info = probe_video(path)
    if info.error is not None:
        if info.error.startswith("missing"):
            raise FileNotFoundError(f"video not found: {path}")
        raise ValueError(f"{path}: {info.error}")
    idx = resample_indices(info.num_frames, info.fps, fps)
    if start < 0 or start + num_frames > len(idx):
        raise ValueError(f"{path}: {len(idx)} frames at {fps:g} fps, cannot take {num_frames} from {start}")
    return read_frames(path, idx[start:start + num_frames])


def read_image(path: str | Path) -> torch.Tensor:
    """An RGB image file as uint8 (3, H, W)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
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
