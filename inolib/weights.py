"""Named pretrained weights: the released INO checkpoints, DINO and DINOv2 backbones, fetched once into a cache.

    ino weights list                       what each name is, its source, licence and whether it is cached
    ino weights fetch dino-vits8           download (with a progress bar; an interrupted transfer resumes), check
    ino propagate --checkpoint dino-vits8  any command that takes a checkpoint takes a name too

Files live in ``$INOLIB_CACHE/weights/NAME.pth`` (default ``~/.cache/inolib``). A download is checked before it
enters the cache: it must load with ``weights_only=True`` as a ViT backbone of the expected patch, width and depth,
and match its SHA-256 where one is known. ``INOLIB_WEIGHTS_MIRROR=URL`` fetches every name from ``URL/NAME.pth``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

CHUNK = 1 << 20


@dataclass(frozen=True)
class Weights:
    """One named checkpoint: where it comes from and what its backbone must be once loaded."""

    name: str
    what: str
    url: str  # a file URL, or "gdrive-folder:<id>" (a shared Google Drive folder; ``pick`` chooses the file)
    licence: str
    patch: int
    width: int
    depth: int
    size: int | None = None  # bytes, where known
    sha256: str | None = None  # where the source publishes one (or once known)
    pick: str = ""  # for a Drive folder: a regular expression the file's name must match
    published: str = ""  # the DAVIS-2017 val J&F-Mean its authors report, for the GPU check


REGISTRY = {w.name: w for w in (
    Weights("ino-vits8-charades", "INO ViT-S/8 trained on Charades, the paper's checkpoint (student and teacher)",
            "gdrive-folder:1gf5XZ8Y9OPhXcsgzlI3Cp3h3dGQOm8My", "MIT (github.com/pansanity666/INO_VOS)", 8, 384, 12,
            pick=r"(?i)charades|^checkpoint[^/]*\.pth$", published="67.0 (Tab. 2)"),
    Weights("ino-vits8-kinetics", "INO ViT-S/8 trained on Kinetics-400, where the released folder holds it",
            "gdrive-folder:1gf5XZ8Y9OPhXcsgzlI3Cp3h3dGQOm8My", "MIT (github.com/pansanity666/INO_VOS)", 8, 384, 12,
            pick=r"(?i)kinetics|k400", published="72.5 (Tab. 2)"),
    Weights("dino-vits8", "DINO ViT-S/8 backbone (ImageNet, self-supervised)",
            "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth",
            "Apache-2.0 (github.com/facebookresearch/dino)", 8, 384, 12, published="69.9 (DINO paper)"),
    Weights("dino-vits16", "DINO ViT-S/16 backbone (ImageNet, self-supervised)",
            "https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth",
            "Apache-2.0 (github.com/facebookresearch/dino)", 16, 384, 12, published="61.8 (DINO paper)"),
    Weights("dinov2-vits14", "DINOv2 ViT-S/14 backbone (LVD-142M, self-supervised)",
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
            "Apache-2.0 (github.com/facebookresearch/dinov2)", 14, 384, 12,
            published="73.6 at 840 px (DINOv3 paper's protocol)"),
)}


class WeightsError(ValueError):
    """A name that is not known, a download that failed or a file that is not what its name promises."""


def cache_dir(env: dict | None = None) -> Path:
    """``$INOLIB_CACHE/weights``, default ``$XDG_CACHE_HOME/inolib/weights`` or ``~/.cache/inolib/weights``."""
    env = os.environ if env is None else env
    root = env.get("INOLIB_CACHE") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                                   "inolib")
    return Path(root).expanduser() / "weights"


def cached(name: str, env: dict | None = None) -> Path | None:
    """The cached file of ``name``, or None when it has not been fetched."""
    path = cache_dir(env) / f"{name}.pth"
    return path if path.is_file() else None


def lookup(name: str) -> Weights:
    """The registry entry of ``name``. Raises: WeightsError listing the known names."""
    if name not in REGISTRY:
        raise WeightsError(f"{name!r}: not a file and not a known weights name; known names: "
                           f"{', '.join(REGISTRY)} (ino weights list)")
    return REGISTRY[name]


def resolve(checkpoint: str | Path, env: dict | None = None, progress: bool = True) -> Path:
    """A ``--checkpoint`` value as a file: an existing path as it is, a known name from the cache (fetched first
    when missing). Raises: WeightsError for anything else, naming the known names."""
    path = Path(checkpoint)
    if path.exists() or os.sep in str(checkpoint) or str(checkpoint).endswith((".pth", ".pt", ".bin")):
        return path  # a path (a missing one is reported by the loader, naming it)
    return fetch(lookup(str(checkpoint)).name, env=env, progress=progress)


def fetch(name: str, env: dict | None = None, progress: bool = True) -> Path:
    """Download ``name`` into the cache unless it is there; returns the checked file.

    Raises: WeightsError naming the file for a download that fails or a file that is not the backbone the name
    promises; nothing is left in the cache then, except a partial transfer to resume.
    """
    w = lookup(name)
    env = os.environ if env is None else env
    folder = cache_dir(env)
    final = folder / f"{w.name}.pth"
    if final.is_file():
        return final
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{w.name}.pth.part"
    mirror = env.get("INOLIB_WEIGHTS_MIRROR")
    if mirror:
        download(f"{mirror.rstrip('/')}/{w.name}.pth", part, progress=progress, label=w.name)
    elif w.url.startswith("gdrive-folder:"):
        _from_drive_folder(w, part, progress)
    else:
        download(w.url, part, progress=progress, label=w.name)
    try:
        check(part, w)
    except WeightsError:
        part.unlink(missing_ok=True)  # a damaged file is not kept to resume from
        raise
    os.replace(part, final)  # the cache holds checked files only
    return final


def download(url: str, part: Path, progress: bool = True, label: str = "", tries: int = 3) -> Path:
    """Stream ``url`` into ``part``, resuming a partial ``part`` with an HTTP range request; a transfer cut by the
    network is retried from where it stopped (``tries`` times). Raises: WeightsError naming the URL."""
    for attempt in range(tries):
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"User-Agent": "inolib"})
        if have:
            req.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                if have and r.status != 206:  # the server ignored the range: start over
                    have = 0
                length = r.headers.get("Content-Length")
                total = have + int(length) if length and length.isdigit() else None
                with open(part, "ab" if have else "wb") as f, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=label or Path(part).name, disable=not progress) as bar:
                    while chunk := r.read(CHUNK):
                        f.write(chunk)
                        bar.update(len(chunk))
                got = part.stat().st_size
                if total is not None and got < total:
                    raise ConnectionError(f"the transfer stopped at {got} of {total} bytes")
                return part
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing left to send: the partial file is complete
                return part
            raise WeightsError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (ConnectionError, TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as e:
            if attempt == tries - 1:
                kept = part.stat().st_size if part.exists() else 0
                raise WeightsError(f"{url}: download failed ({getattr(e, 'reason', e)}); {kept} bytes kept in "
                                   f"{part}, the same command resumes from there") from None
    return part


def _from_drive_folder(w: Weights, part: Path, progress: bool) -> None:
    """The file of a shared Google Drive folder that ``w.pick`` names, through gdown (Drive's listing and its
    confirmation step for large files)."""
    try:
        import gdown
    except ImportError:
        raise WeightsError(f"{w.name}: its source is a Google Drive folder, which needs gdown (pip install gdown), "
                           "or set INOLIB_WEIGHTS_MIRROR to a mirror that holds NAME.pth files") from None
    folder_id = w.url.split(":", 1)[1]
    with tempfile.TemporaryDirectory(dir=part.parent, prefix=".drive-") as tmp:
        try:
            files = gdown.download_folder(id=folder_id, output=tmp, quiet=True, skip_download=True) or []
        except Exception as e:  # noqa: BLE001 - gdown raises many kinds; one line naming the source
            raise WeightsError(f"{w.name}: cannot list the Google Drive folder {folder_id} ({e})") from None
        names = [(Path(getattr(f, "path", "")).name, getattr(f, "id", None)) for f in files]
        chosen = [(n, i) for n, i in names if n.endswith(".pth") and re.search(w.pick, n)]
        if len(chosen) != 1:
            raise WeightsError(f"{w.name}: the Google Drive folder {folder_id} holds {[n for n, _ in names]}; "
                               f"{'none' if not chosen else 'more than one'} of them matches {w.pick!r}")
        target = Path(tmp) / chosen[0][0]
        try:
            gdown.download(id=chosen[0][1], output=str(target), quiet=not progress, resume=True)
        except Exception as e:  # noqa: BLE001
            raise WeightsError(f"{w.name}: download of {chosen[0][0]} from Google Drive failed ({e})") from None
        if not target.is_file():
            raise WeightsError(f"{w.name}: Google Drive gave no file for {chosen[0][0]}")
        shutil.move(str(target), part)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def check(path: Path, w: Weights) -> None:
    """Raises WeightsError naming ``path`` unless it loads (``weights_only=True``) as the backbone ``w`` promises:
    its patch size, width and depth, and its SHA-256 where one is known."""
    from .checkpoint import load_backbone

    if w.sha256 and sha256(path) != w.sha256:
        raise WeightsError(f"{path}: SHA-256 differs from the published one for {w.name}: a damaged download")
    try:
        vit, report = load_backbone(path)
    except Exception as e:  # noqa: BLE001 - whatever a damaged file raises, one line naming it
        raise WeightsError(f"{path}: not a usable {w.name} checkpoint ({str(e).splitlines()[0][:300]})") from None
    got = (report["patch_size"], report["embed_dim"], report["depth"])
    if got != (w.patch, w.width, w.depth):
        raise WeightsError(f"{path}: a ViT with patch {got[0]}, width {got[1]}, {got[2]} blocks; {w.name} is patch "
                           f"{w.patch}, width {w.width}, {w.depth} blocks")
    del vit


def table(env: dict | None = None) -> list[dict]:
    """One row per name: name, what, source, size, licence, cached (path or "")."""
    return [{"name": w.name, "what": w.what, "source": w.url, "licence": w.licence,
             "size": f"{w.size / 2**20:.0f} MiB" if w.size else "?", "cached": str(cached(w.name, env) or "")}
            for w in REGISTRY.values()]
