"""Seeded synthetic videos with exact ground-truth masks, and writers for the DAVIS / YouTube-VOS layouts.

    video = make_synthetic_video(num_frames=24, height=96, width=128, num_objects=3, late_objects=1, seed=0)
    video.frames   # uint8 (T, 3, H, W)
    video.masks    # uint8 (T, H, W): 0 background, 1..K visible object
    write_davis_layout(video, "tmp/DAVIS")          # JPEGImages/480p/<name>, Annotations/480p/<name>, ImageSets
    write_ytvos_layout(video, "tmp/ytvos", every=5) # valid/JPEGImages, valid/Annotations (first appearances), meta.json
    write_video_file(video, "tmp/synthetic.avi")    # Motion-JPEG AVI readable by decord
    write_training_videos("runs/x/synthetic", 12, cfg.synthetic)   # the videos of a ``synthetic:12`` source

Scene: a static textured background (random sinusoids, smooth noise) and K textured objects (ellipse,
rectangle or polygon, each with its own hue and stripes or checks that move with it) following straight
paths that bounce off the borders, while their axes oscillate and they rotate. A higher id is drawn on top
(fixed depth order) and the mask holds the visible object. The last ``late_objects`` ids are absent from
frame 0 and enter through a border at a later frame. Every random draw comes from one ``torch.Generator``
seeded with ``seed``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..atomic import atomic_write_text
from .video import write_avi
from .vos_datasets import davis_palette

_ELLIPSE, _RECTANGLE, _POLYGON = 0, 1, 2


@dataclass
class SyntheticVideo:
    """A synthetic video and its ground truth.

    Attributes:
        frames: uint8 (T, 3, H, W).
        masks: uint8 (T, H, W), the visible object at each pixel: 0 background, 1..K object ids.
        fps: frame rate used when writing a video file.
        name: sequence name used by the layout writers.
        amodal: bool (T, K, H, W), the full extent of each object before occlusion (object k at index k - 1),
            or None unless asked for with ``keep_amodal=True``.
    """

    frames: torch.Tensor
    masks: torch.Tensor
    fps: float
    name: str
    amodal: torch.Tensor | None = None


def _uniform(g: torch.Generator, lo: float, hi: float, n: int | tuple = ()) -> torch.Tensor:
    """Uniform float64 samples in [lo, hi) of shape ``n``."""
    shape = (n,) if isinstance(n, int) else n
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """An integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] (any shape S) to RGB in [0, 255]: (*S, 3)."""
    n = torch.tensor([5.0, 3.0, 1.0], dtype=h.dtype)
    k = (n + h.unsqueeze(-1) * 6.0) % 6.0
    f = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return 255.0 * (v.unsqueeze(-1) - v.unsqueeze(-1) * s.unsqueeze(-1) * f)


def _reflect(z: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Fold positions ``z`` into [lo, hi] as a point bouncing between the two walls would move."""
    span = max(hi - lo, 1e-6)
    m = torch.remainder(z - lo, 2.0 * span)
    return lo + span - (m - span).abs()


def _background(g: torch.Generator, height: int, width: int) -> torch.Tensor:
    """A smooth random textured background: float (3, H, W) in about [0, 255]."""
    y = torch.arange(height, dtype=torch.float64)[:, None]
    x = torch.arange(width, dtype=torch.float64)[None, :]
    base = _hsv_to_rgb(_uniform(g, 0, 1), _uniform(g, 0.15, 0.35), _uniform(g, 0.45, 0.65))  # (3,)
    img = base[:, None, None].expand(3, height, width).clone()
    size = float(min(height, width))
    for _ in range(4):  # a few plane waves of 1..4 cycles across the image
        cycles, angle, phase = _uniform(g, 1.0, 4.0), _uniform(g, 0, math.pi), _uniform(g, 0, 2 * math.pi)
        amp = _uniform(g, 6.0, 20.0, 3)
        wave = torch.sin(2 * math.pi * cycles / size * (x * torch.cos(angle) + y * torch.sin(angle)) + phase)
        img = img + amp[:, None, None] * wave
    coarse = torch.randn((1, 3, height // 12 + 2, width // 12 + 2), generator=g, dtype=torch.float64)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[0]
    return (img + 10.0 * smooth).clamp(0, 255)


def _draw_objects(g: torch.Generator, num_frames: int, height: int, width: int, num_objects: int,
                  late_objects: int) -> list[dict]:
    """Random shape, texture, motion and deformation parameters of each object (index k - 1)."""
    size = float(min(height, width))
    hue0 = float(_uniform(g, 0, 1))
    shape_offset = _randint(g, 0, 2)
    objs = []
    for j in range(num_objects):
        r = float(_uniform(g, 0.11, 0.19)) * size
        o = dict(
            shape=(shape_offset + j) % 3,
            sides=_randint(g, 3, 6),
            a0=r, b0=r * float(_uniform(g, 0.55, 1.0)),
            amp=_uniform(g, 0.12, 0.25, 2), period=_uniform(g, 10.0, 28.0, 2), phase=_uniform(g, 0, 2 * math.pi, 2),
            theta0=float(_uniform(g, 0, 2 * math.pi)),
            omega=float(_uniform(g, 0.03, 0.10)) * (1.0 if float(_uniform(g, 0, 1)) < 0.5 else -1.0),
            speed=float(_uniform(g, 0.012, 0.03)) * size,
            heading=float(_uniform(g, 0, 2 * math.pi)),
            start=(float(_uniform(g, 0, 1)), float(_uniform(g, 0, 1))),
            checks=bool(float(_uniform(g, 0, 1)) < 0.5),
            tex_period=max(3.0, float(_uniform(g, 0.3, 0.55)) * r),
            tex_angle=float(_uniform(g, 0, math.pi)),
            hue=(hue0 + (j + float(_uniform(g, -0.15, 0.15))) / num_objects) % 1.0,
            sat=float(_uniform(g, 0.65, 1.0)), val=float(_uniform(g, 0.8, 1.0)), dark=float(_uniform(g, 0.25, 0.45)),
            appear=0, side=-1,
        )
        if j >= num_objects - late_objects:
            o["appear"] = _randint(g, 1, max(1, num_frames // 3))
            o["side"] = _randint(g, 0, 3)  # 0 left, 1 right, 2 top, 3 bottom
        objs.append(o)
    return objs


def _trajectory(o: dict, num_frames: int, height: int, width: int) -> dict[str, torch.Tensor]:
    """Per-frame centre (cx, cy), semi-axes (a, b) and rotation (theta) of one object: float64 (T,) each."""
    t = torch.arange(num_frames, dtype=torch.float64)
    tt = t - o["appear"]
    margin = 0.7 * o["a0"]
    lo_x, hi_x = margin, max(width - 1 - margin, margin + 1)
    lo_y, hi_y = margin, max(height - 1 - margin, margin + 1)
    vx, vy = o["speed"] * math.cos(o["heading"]), o["speed"] * math.sin(o["heading"])
    x0 = lo_x + o["start"][0] * (hi_x - lo_x)
    y0 = lo_y + o["start"][1] * (hi_y - lo_y)
    cx, cy = _reflect(x0 + vx * tt, lo_x, hi_x), _reflect(y0 + vy * tt, lo_y, hi_y)
    if o["side"] >= 0:  # enters through a border: the centre starts outside, then bounces as usual
        along_x = o["side"] < 2
        lo, hi = (lo_x, hi_x) if along_x else (lo_y, hi_y)
        inward = o["speed"] * (0.8 + 0.2 * abs(math.cos(o["heading"])))
        raw = -0.25 * o["b0"] + inward * tt
        pos = torch.where(raw < lo, raw, _reflect(raw, lo, hi))
        if o["side"] in (1, 3):
            pos = ((width if along_x else height) - 1) - pos
        if along_x:
            cx = pos
        else:
            cy = pos
    a = o["a0"] * (1 + o["amp"][0] * torch.sin(2 * math.pi * t / o["period"][0] + o["phase"][0]))
    b = o["b0"] * (1 + o["amp"][1] * torch.sin(2 * math.pi * t / o["period"][1] + o["phase"][1]))
    return dict(cx=cx, cy=cy, a=a, b=b, theta=o["theta0"] + o["omega"] * t)


def _box(tr: dict, t: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Pixel box (y0, y1, x0, x1) that holds the object at frame ``t`` (any shape, any rotation), clipped."""
    reach = 1.25 * max(float(tr["a"][t]), float(tr["b"][t])) + 1.0  # >= the circumradius of every shape
    cx, cy = float(tr["cx"][t]), float(tr["cy"][t])
    y0, y1 = max(0, math.floor(cy - reach)), min(height, math.ceil(cy + reach) + 1)
    x0, x1 = max(0, math.floor(cx - reach)), min(width, math.ceil(cx + reach) + 1)
    return y0, max(y0, y1), x0, max(x0, x1)


def _local_coords(tr: dict, t: int, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Object-frame coordinates (u, v) at frame ``t`` of pixels ``xs`` (1, w), ``ys`` (h, 1): float (h, w) each."""
    dx, dy = xs - tr["cx"][t], ys - tr["cy"][t]
    c, s = torch.cos(tr["theta"][t]), torch.sin(tr["theta"][t])
    return c * dx + s * dy, -s * dx + c * dy


def _support(o: dict, tr: dict, t: int, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Pixels covered by the object at frame ``t`` (before occlusion): bool (h, w) for the pixel
    coordinates ``xs`` (1, w) and ``ys`` (h, 1) (the whole grid or a box of it)."""
    if t < o["appear"]:
        return torch.zeros(ys.shape[0], xs.shape[1], dtype=torch.bool)
    u, v = _local_coords(tr, t, xs, ys)
    un, vn = u / tr["a"][t], v / tr["b"][t]
    if o["shape"] == _ELLIPSE:
        return un * un + vn * vn <= 1.0
    if o["shape"] == _RECTANGLE:
        return (un.abs() <= 0.85) & (vn.abs() <= 0.85)
    n = o["sides"]  # regular polygon of unit circumradius in the scaled frame, polar form
    sector = 2 * math.pi / n
    phi = torch.remainder(torch.atan2(vn, un), sector) - sector / 2
    return torch.sqrt(un * un + vn * vn) * torch.cos(phi) <= math.cos(math.pi / n)


def _texture(o: dict, tr: dict, t: int, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """The object's colour at frame ``t`` (stripes or checks fixed to the object) at pixels ``xs`` (1, w),
    ``ys`` (h, 1): float (3, h, w)."""
    u, v = _local_coords(tr, t, xs, ys)
    w = 2 * math.pi / o["tex_period"]
    ca, sa = math.cos(o["tex_angle"]), math.sin(o["tex_angle"])
    p1 = torch.sin(w * (ca * u + sa * v))
    wave = p1 * torch.sin(w * (-sa * u + ca * v)) if o["checks"] else p1
    p = 0.5 + 0.5 * torch.tanh(3.0 * wave)
    h, s = torch.full((2,), o["hue"], dtype=torch.float64), torch.full((2,), o["sat"], dtype=torch.float64)
    light, dark = _hsv_to_rgb(h, s, torch.tensor([o["val"], o["val"] * o["dark"]], dtype=torch.float64))  # (3,) each
    return dark[:, None, None] + (light - dark)[:, None, None] * p


def _compose_masks(objs: list[dict], trs: list[dict], num_frames: int, xs: torch.Tensor, ys: torch.Tensor,
                   keep_amodal: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Visible-object masks uint8 (T, H, W) (higher id on top) and optionally amodal bool (T, K, H, W)."""
    H, W = ys.shape[0], xs.shape[1]
    masks = torch.zeros(num_frames, H, W, dtype=torch.uint8)
    amodal = torch.zeros(num_frames, len(objs), H, W, dtype=torch.bool) if keep_amodal else None
    for t in range(num_frames):
        for j, (o, tr) in enumerate(zip(objs, trs)):
            y0, y1, x0, x1 = _box(tr, t, H, W)
            if y1 == y0 or x1 == x0:
                continue
            sup = _support(o, tr, t, xs[:, x0:x1], ys[y0:y1])  # (h, w) inside the box
            masks[t, y0:y1, x0:x1][sup] = j + 1
            if amodal is not None:
                amodal[t, j, y0:y1, x0:x1] = sup
    return masks, amodal


def _visible_enough(masks: torch.Tensor, objs: list[dict], min_pixels: int, min_frames: int) -> bool:
    """Objects present at frame 0 are visible there, and every object is visible in enough frames."""
    K = len(objs)
    areas = torch.stack([torch.bincount(m.flatten().long(), minlength=K + 1) for m in masks])  # (T, K + 1)
    for j, o in enumerate(objs):
        seen = areas[:, j + 1] >= min_pixels
        if o["appear"] == 0 and not bool(seen[0]):
            return False
        if int(seen.sum()) < min(min_frames, masks.shape[0] - o["appear"]):
            return False
    return True


def _camouflage(g: torch.Generator, objs: list[dict], height: int, width: int, cells: int = 10) -> torch.Tensor:
    """A static background made of the objects' own textures: float (3, H, W). The frame is cut into the Voronoi
    cells of ``cells`` random points, each painted with the stripes or checks of a random object (fixed to the
    image, not moving)."""
    ys = torch.arange(height, dtype=torch.float64)[:, None]
    xs = torch.arange(width, dtype=torch.float64)[None, :]
    px, py = _uniform(g, 0, width, cells), _uniform(g, 0, height, cells)
    owner = torch.randint(0, len(objs), (cells,), generator=g)
    cell = ((xs[None] - px[:, None, None]) ** 2 + (ys[None] - py[:, None, None]) ** 2).argmin(0)  # (H, W)
    still = dict(cx=torch.zeros(1, dtype=torch.float64), cy=torch.zeros(1, dtype=torch.float64),
                 theta=torch.zeros(1, dtype=torch.float64))
    textures = torch.stack([_texture(o, still, 0, xs, ys) for o in objs])  # (K, 3, H, W)
    pick = owner[cell]  # (H, W): whose texture each pixel shows
    return textures.gather(0, pick[None, None].expand(1, 3, height, width))[0]


def make_synthetic_video(num_frames: int = 24, height: int = 96, width: int = 128, num_objects: int = 3,
                         late_objects: int = 1, seed: int = 0, fps: float = 24.0, name: str = "synthetic",
                         keep_amodal: bool = False, max_tries: int = 50, distractors: int = 0,
                         camouflage: float = 0.0, illumination: float = 0.0) -> SyntheticVideo:
    """A seeded synthetic video with ground-truth masks: frames uint8 (T, 3, H, W), masks uint8 (T, H, W).

    Objects 1..K are drawn in id order (K on top); the last ``late_objects`` enter through a border after
    frame 0. ``keep_amodal`` adds the unoccluded extents, bool (T, K, H, W). ``distractors``, ``camouflage``
    and ``illumination`` make harder scenes (off by default; the default videos are unchanged).

    Raises ValueError when ``max_tries`` layouts leave an object too small to see (use larger frames).
    """
    # Late objects enter at a random frame in [1, max(1, T // 3)]. Layouts are redrawn from the same generator
    # (still deterministic) until each object present at frame 0 shows >= max(4, H * W / 500) pixels there and in
    # at least min(4, its frames) frames. Distractors (mask 0) wear a labelled object's texture beneath the labelled
    # ones; camouflage blends the background with the objects' textures; illumination oscillates each channel's
    # brightness over time.
    if num_frames < 1 or height < 16 or width < 16:
        raise ValueError(f"need num_frames >= 1 and a frame of at least 16x16, got T={num_frames}, {height}x{width}")
    if not 1 <= num_objects <= 254:
        raise ValueError(f"num_objects must be in 1..254 (255 is the void label), got {num_objects}")
    if not 0 <= late_objects <= num_objects:
        raise ValueError(f"late_objects must be in 0..num_objects={num_objects}, got {late_objects}")
    if late_objects and num_frames < 2:
        raise ValueError("late objects need at least 2 frames")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if not 0 <= int(distractors) == distractors:
        raise ValueError(f"distractors must be an integer >= 0, got {distractors}")
    if not 0.0 <= camouflage <= 1.0:
        raise ValueError(f"camouflage must be in [0, 1], got {camouflage}")
    if not 0.0 <= illumination < 1.0:
        raise ValueError(f"illumination must be in [0, 1), got {illumination}")
    g = torch.Generator().manual_seed(int(seed))
    ys = torch.arange(height, dtype=torch.float64)[:, None]
    xs = torch.arange(width, dtype=torch.float64)[None, :]
    background = _background(g, height, width)
    min_pixels = max(4, (height * width) // 500)
    for _ in range(max_tries):
        objs = _draw_objects(g, num_frames, height, width, num_objects, late_objects)
        trs = [_trajectory(o, num_frames, height, width) for o in objs]
        masks, amodal = _compose_masks(objs, trs, num_frames, xs, ys, keep_amodal)
        if _visible_enough(masks, objs, min_pixels, min_frames=4):
            break
    else:
        raise ValueError(f"could not place {num_objects} visible objects in {max_tries} tries on "
                         f"{height}x{width} frames; use larger frames or fewer objects")
    # the harder-scene draws come after the plain ones, so the default videos do not change
    fakes, fake_trs = [], []
    for _ in range(int(distractors)):
        fake = _draw_objects(g, num_frames, height, width, 1, 0)[0]
        model = objs[_randint(g, 0, num_objects - 1)]
        fake.update({k: model[k] for k in ("shape", "sides", "checks", "tex_period", "tex_angle", "hue", "sat",
                                           "val", "dark")})
        fakes.append(fake)
        fake_trs.append(_trajectory(fake, num_frames, height, width))
    if camouflage > 0:
        background = (1 - camouflage) * background + camouflage * _camouflage(g, objs, height, width)
    gain = torch.ones(num_frames, 3, dtype=torch.float64)
    if illumination > 0:
        t_axis = torch.arange(num_frames, dtype=torch.float64)[:, None]
        period, phase = _uniform(g, 24.0, 48.0), _uniform(g, 0, 2 * math.pi, 3)
        gain = 1 + illumination * torch.sin(2 * math.pi * t_axis / period + phase[None])  # (T, 3)
    frames = torch.empty(num_frames, 3, height, width, dtype=torch.uint8)
    for t in range(num_frames):
        img = background.clone()
        for o, tr in zip(fakes, fake_trs):  # beneath the labelled objects, so the masks stay exact
            y0, y1, x0, x1 = _box(tr, t, height, width)
            if y1 > y0 and x1 > x0:
                sup = _support(o, tr, t, xs[:, x0:x1], ys[y0:y1])
                img[:, y0:y1, x0:x1] = torch.where(sup, _texture(o, tr, t, xs[:, x0:x1], ys[y0:y1]),
                                                   img[:, y0:y1, x0:x1])
        for j, (o, tr) in enumerate(zip(objs, trs)):
            y0, y1, x0, x1 = _box(tr, t, height, width)
            visible = masks[t, y0:y1, x0:x1] == j + 1
            if bool(visible.any()):
                crop = img[:, y0:y1, x0:x1]
                img[:, y0:y1, x0:x1] = torch.where(visible, _texture(o, tr, t, xs[:, x0:x1], ys[y0:y1]), crop)
        img = img * gain[t][:, None, None] + 2.0 * torch.randn(img.shape, generator=g, dtype=torch.float64)
        frames[t] = img.round().clamp(0, 255).to(torch.uint8)
    return SyntheticVideo(frames=frames, masks=masks, fps=float(fps), name=name, amodal=amodal)


# ----------------------------------------------------------------------------------------------- writers


def _save_jpeg(frame: torch.Tensor, path: Path) -> None:
    """Save uint8 (3, H, W) as a JPEG of quality 95."""
    Image.fromarray(frame.permute(1, 2, 0).contiguous().numpy()).save(path, format="JPEG", quality=95)


def _save_palette_png(mask: torch.Tensor | np.ndarray, path: Path) -> None:
    """Save uint8 (H, W) object ids as a palette ("P" mode) PNG with the DAVIS palette."""
    arr = np.ascontiguousarray(np.asarray(mask, dtype=np.uint8))
    if arr.ndim != 2:
        raise ValueError(f"{path}: mask must be (H, W), got shape {arr.shape}")
    im = Image.fromarray(arr)  # "L"
    im.putpalette(davis_palette().flatten().tolist())  # turns the "L" image into "P", indices unchanged
    im.save(path, format="PNG")


def _check_video(video: SyntheticVideo) -> None:
    f, m = video.frames, video.masks
    if f.dtype != torch.uint8 or f.dim() != 4 or f.shape[1] != 3:
        raise ValueError(f"video '{video.name}': frames must be uint8 (T, 3, H, W), got {f.dtype} {tuple(f.shape)}")
    if m.dtype != torch.uint8 or m.shape != (f.shape[0],) + tuple(f.shape[2:]):
        raise ValueError(f"video '{video.name}': masks must be uint8 (T, H, W) matching the frames, "
                         f"got {m.dtype} {tuple(m.shape)}")
    if not video.name or "/" in video.name or "\\" in video.name:
        raise ValueError(f"video name {video.name!r} is not a valid folder name")


def write_davis_layout(video: SyntheticVideo, root: str | Path, resolution: str = "480p", split: str = "val") -> Path:
    """Write the video in the DAVIS-2017 layout under ``root``; returns the frame folder of the sequence.

    ``JPEGImages/<resolution>/<name>/00000.jpg ...`` (JPEG quality 95), ``Annotations/<resolution>/<name>/
    00000.png ...`` (every frame, palette PNG with the DAVIS palette) and ``name`` added once to
    ``ImageSets/2017/<split>.txt``. Frames are stored at their own size, whatever ``resolution`` says.
    """
    _check_video(video)
    root = Path(root)
    img_dir = root / "JPEGImages" / resolution / video.name
    ann_dir = root / "Annotations" / resolution / video.name
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for t in range(video.frames.shape[0]):
        _save_jpeg(video.frames[t], img_dir / f"{t:05d}.jpg")
        _save_palette_png(video.masks[t].numpy(), ann_dir / f"{t:05d}.png")
    list_file = root / "ImageSets" / "2017" / f"{split}.txt"
    list_file.parent.mkdir(parents=True, exist_ok=True)
    text = list_file.read_text() if list_file.is_file() else ""
    names = [line.strip() for line in text.splitlines()]
    if video.name not in names:
        if text and not text.endswith("\n"):
            text += "\n"
        atomic_write_text(list_file, text + video.name + "\n")
    return img_dir


def write_ytvos_layout(video: SyntheticVideo, root: str | Path, split: str = "valid", every: int = 5) -> Path:
    """Write the video in the YouTube-VOS 2018 layout under ``root/<split>``; returns the frame folder.

    Frames 0, every, 2 * every, ... go to ``JPEGImages/<name>/<frame:05d>.jpg`` (original frame numbers).
    As in the real valid split, ``Annotations/<name>/<frame>.png`` is written only for the frames where some
    object first appears (among the written frames), holding only those objects. ``meta.json`` gets
    ``{"videos": {name: {"objects": {"<id>": {"category": "synthetic", "frames": [...]}}}}}`` merged in, where
    ``frames`` are the written frame names where the object is visible. An object visible in no written
    frame is left out (as an object never annotated would be).
    """
    _check_video(video)
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    base = Path(root) / split
    img_dir, ann_dir = base / "JPEGImages" / video.name, base / "Annotations" / video.name
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    kept = list(range(0, video.frames.shape[0], every))
    masks = video.masks[kept]  # (N, H, W)
    num_ids = int(video.masks.max()) + 1 if video.masks.numel() else 1
    present = torch.stack([torch.bincount(m.flatten().long(), minlength=num_ids) for m in masks]) > 0  # (N, ids)
    objects, first = {}, {}
    for k in range(1, num_ids):
        rows = torch.nonzero(present[:, k]).flatten().tolist()
        if k == 255 or not rows:
            continue
        objects[str(k)] = {"category": "synthetic", "frames": [f"{kept[r]:05d}" for r in rows]}
        first[k] = rows[0]
    for n, t in enumerate(kept):
        _save_jpeg(video.frames[t], img_dir / f"{t:05d}.jpg")
        new = [k for k, r in first.items() if r == n]
        if new:
            m = masks[n]
            keep = torch.isin(m, torch.tensor(new, dtype=m.dtype))
            _save_palette_png(torch.where(keep, m, torch.zeros_like(m)).numpy(), ann_dir / f"{t:05d}.png")
    meta_file = base / "meta.json"
    meta = {"videos": {}}
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
        except ValueError as e:
            raise ValueError(f"{meta_file}: cannot parse existing JSON ({e})") from e
        if not isinstance(meta, dict) or not isinstance(meta.setdefault("videos", {}), dict):
            raise ValueError(f"{meta_file}: existing file has no 'videos' dictionary")
    meta["videos"][video.name] = {"objects": objects}
    atomic_write_text(meta_file, json.dumps(meta, indent=1))
    return img_dir


def write_video_file(video: SyntheticVideo, path: str | Path) -> Path:
    """Write the frames as a Motion-JPEG AVI at ``video.fps`` (see :func:`inolib.data.video.write_avi`)."""
    _check_video(video)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_avi(path, video.frames, video.fps)


SYNTHETIC_SOURCE = "synthetic:"
HELD_OUT_SEED = 10_000  # seeds from here on are never used for training videos (evaluation only)


def parse_synthetic_source(source) -> int | None:
    """The N of a ``"synthetic:N"`` data source, or None for any other source; ValueError for a bad N."""
    if not isinstance(source, str) or not source.startswith(SYNTHETIC_SOURCE):
        return None
    text = source[len(SYNTHETIC_SOURCE):]
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"--data {source!r}: write synthetic:N with N >= 1 videos (e.g. synthetic:12)")
    return n


def training_video_paths(folder: str | Path, count: int, cfg) -> list[Path]:
    """Where :func:`write_training_videos` puts ``count`` videos of ``cfg`` (``synthetic_<seed>.avi``)."""
    return [Path(folder) / f"synthetic_{cfg.seed + i:04d}.avi" for i in range(count)]


def check_training_seeds(count: int, cfg) -> None:
    """``ValueError`` unless ``count`` >= 1 training videos of :class:`inolib.config.SyntheticConfig` ``cfg``
    (seeds ``cfg.seed`` .. ``cfg.seed + count - 1``) stay below ``HELD_OUT_SEED``."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if cfg.seed < 0 or cfg.seed + count > HELD_OUT_SEED:
        raise ValueError(f"synthetic.seed: training seeds {cfg.seed}..{cfg.seed + count - 1} must lie in "
                         f"0..{HELD_OUT_SEED - 1} (higher seeds are kept for held-out evaluation)")


def write_training_videos(folder: str | Path, count: int, cfg) -> list[Path]:
    """Write ``count`` seeded synthetic training videos (:class:`inolib.config.SyntheticConfig` ``cfg``) into
    ``folder`` as ``synthetic_<seed>.avi`` and return their paths.

    Video i uses seed ``cfg.seed + i``, which must stay below ``HELD_OUT_SEED``. Files already written with the
    same settings (``folder/settings.json``) are kept, so a resumed run reuses them; each file is written
    under a temporary name and renamed.
    """
    from dataclasses import asdict

    check_training_seeds(count, cfg)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    settings = folder / "settings.json"
    want = {k: v for k, v in asdict(cfg).items() if k != "seed"}
    try:
        same = settings.is_file() and json.loads(settings.read_text() or "{}") == want
    except ValueError:
        same = False  # a torn settings file of ours: its videos are rewritten
    old = sorted(folder.glob("synthetic_*.avi"))
    if not same and old and not settings.is_file():  # not ours: inolib writes settings.json with its videos
        raise ValueError(f"{folder}: holds {len(old)} synthetic_*.avi file(s) ({old[0].name}, ...) that inolib did "
                         "not write (no settings.json); move them away or choose another --out")
    if not same:
        for path in old:
            path.unlink()
        atomic_write_text(settings, json.dumps(want))
    paths = training_video_paths(folder, count, cfg)
    for seed, path in enumerate(paths, start=cfg.seed):
        if not path.is_file():
            video = make_synthetic_video(cfg.num_frames, cfg.height, cfg.width, cfg.num_objects, late_objects=0,
                                         seed=seed, fps=cfg.fps, name=path.stem)
            tmp = path.with_name(path.stem + ".tmp.avi")
            write_video_file(video, tmp)
            tmp.replace(path)
    return paths


# The held-out scenes where colour alone fails (camouflaged background, look-alike distractors, changing light):
# the plain synthetic scenes are tracked as well by raw pixels as by any network (BENCHMARKS.md)
HARD_SCENE = {"distractors": 3, "camouflage": 0.7, "illumination": 0.3}


def write_held_out_davis(root: str | Path, count: int, cfg, num_frames: int = 48, scene: dict | None = None) -> Path:
    """A DAVIS-layout validation set of ``count`` synthetic sequences that training never sees: the settings of
    :class:`inolib.config.SyntheticConfig` ``cfg`` (size, objects) with seeds ``HELD_OUT_SEED + i`` and
    ``num_frames`` frames. ``scene`` adds the harder-scene arguments of :func:`make_synthetic_video`
    (e.g. :data:`HARD_SCENE`); such sequences are named ``heldout_hard_<seed>``. Written once (kept when
    ``root`` already lists them); returns ``root``."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    scene = dict(scene or {})
    unknown = set(scene) - {"distractors", "camouflage", "illumination"}
    if unknown:
        raise ValueError(f"scene: unknown keys {sorted(unknown)} (distractors, camouflage, illumination)")
    root = Path(root)
    prefix = "heldout_hard" if scene else "heldout"
    names = [f"{prefix}_{HELD_OUT_SEED + i}" for i in range(count)]
    listed = root / "ImageSets" / "2017" / "val.txt"
    if listed.is_file() and listed.read_text().split() == names:
        return root
    for i, name in enumerate(names):
        video = make_synthetic_video(num_frames, cfg.height, cfg.width, cfg.num_objects, late_objects=0,
                                     seed=HELD_OUT_SEED + i, fps=cfg.fps, name=name, **scene)
        write_davis_layout(video, root)
    return root
