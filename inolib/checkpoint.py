"""Saving and loading weights: our checkpoints, the released INO format, DINO's ViT checkpoints, timm state dicts.

``load_backbone(path)`` returns an :class:`inolib.model.INOViT` with the checkpoint's backbone weights and a
small report of what was taken (for our own files also the run's config and step; ``read_config(path)`` gives the
config alone). It recognises:

* inolib checkpoints (``save_checkpoint``): ``{"format": "inolib", "config", "student", "teacher", ...}``;
* released INO checkpoints: ``student``/``teacher`` state dicts of a multi-crop wrapper, keys prefixed with
  ``module.`` and ``backbone.``, an 8x8 position table for 64x64 inputs (released model); default network: student;
* DINO's released ViT checkpoints: a ``teacher``/``student`` dict or a bare backbone state dict with a table for
  224x224 inputs; default network: teacher;
* timm ``VisionTransformer`` state dicts (bare);
* DINOv2's released ViTs (Oquab et al. 2023, github.com/facebookresearch/dinov2), e.g. ``dinov2_vits14_pretrain.pth``:
  a bare state dict with LayerScale (``blocks.N.ls1.gamma``, ``ls2.gamma``), a (1, D) ``mask_token`` and patch 14
  with a 37x37 table for 518x518 inputs (timm's ``vit_*_patch14_dinov2`` weights load too); report format
  ``"dinov2"``. Registers and SwiGLU MLPs (the ``_reg`` models, ViT-g/14) are refused.

The architecture (patch size, width, depth, position-table size) is read from the weights; the number of
heads from the width (192 -> 3, 384 -> 6, 768 -> 12, 1024 -> 16) unless given. Keys the backbone does not
have, or tensors of the wrong shape, raise ``ValueError`` naming them; projection-head weights are set aside
(label propagation uses the backbone only). A missing ``mask_token`` (DINO, timm) is allowed: it only
matters for training.

Files are read with ``torch.load(weights_only=True)``, allowing only the Python objects released checkpoints
hold (``args``: an ``argparse.Namespace`` with numpy scalars and dtypes), so loading never runs code from the
file; anything else is refused, naming the file and the object, unless ``trust=True``
(``ino propagate --trust-checkpoint``).
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write
from .config import UPPER_LIMITS, INOConfig
from .model import INOViT

HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16}
_HEAD_PREFIXES = ("head.", "headlist.", "fc_norm.", "last_layer.")
FORMAT = "inolib"


def save_checkpoint(path: str | Path, cfg: INOConfig, student: nn.Module, teacher: nn.Module | None = None,
                    **extra: Any) -> Path:
    """Write ``{"format": "inolib", "config": cfg.to_dict(), "student", "teacher", **extra}`` atomically
    (:func:`inolib.atomic.atomic_write`: a temporary file renamed over the target, removed if the save fails, so
    an interrupted or failed save, e.g. a full disk, leaves the previous checkpoint and no orphan file)."""
    from .teacher import unwrap

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "config": cfg.to_dict(), "student": unwrap(student).state_dict()}
    if teacher is not None:
        state["teacher"] = unwrap(teacher).state_dict()
    state.update(extra)
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def _allowed_globals() -> list:
    """What released INO/DINO checkpoints hold besides tensors: ``args`` (an ``argparse.Namespace``) with numpy
    scalars and dtypes. Nothing here runs code: a namespace is filled from a dict, a numpy scalar from bytes."""
    import argparse

    import numpy as np

    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar
    # checkpoints written under numpy 1.x name the scalar constructor numpy.core..., under 2.x numpy._core...
    names = [(scalar, f"numpy.{m}.multiarray.scalar") for m in ("core", "_core")]
    dtypes = {type(np.dtype(c)) for c in "?bhilqpBHILQPefdgFDGSUmM"}  # numeric, bool, bytes/str, datetime
    return [argparse.Namespace, np.dtype, *names, *sorted(dtypes, key=str)]


_SAFE_PREFIXES = ("torch.", "collections.OrderedDict", "_codecs.encode", "builtins.set", "builtins.frozenset",
                  "builtins.bytearray", "builtins.slice", "builtins.complex")


def _pickle_globals(path: Path) -> list[str]:
    """The globals (``module.name``) a pickle or torch file refers to, read with ``pickletools`` (nothing is
    executed); the ``data.pkl`` of a torch zip file, or the first few pickles of a plain file."""
    import io
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                data = [z.read(n) for n in z.namelist() if n.endswith("data.pkl")][:1]
        else:
            data = [path.read_bytes()]
    except (OSError, zipfile.BadZipFile):
        return []
    found: list[str] = []
    for blob in data:
        f = io.BytesIO(blob)
        for _ in range(5):  # the legacy torch format is several pickles in a row
            recent: list = [None, None]  # the last two values pushed, for STACK_GLOBAL
            memo: dict = {}
            try:
                for op, arg, _pos in pickletools.genops(f):
                    if op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                        memo[len(memo) if op.name == "MEMOIZE" else arg] = recent[-1]
                    elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                        recent.append(memo.get(arg))
                    elif op.name == "GLOBAL":
                        found.append(str(arg).replace(" ", "."))
                        recent.append(None)
                    elif op.name == "STACK_GLOBAL":
                        found.append(f"{recent[-2]}.{recent[-1]}")
                        recent.append(None)
                    elif isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name):
                        recent.append(arg)
                    elif op.stack_after:
                        recent.append(None)
                    recent = recent[-2:]
            except Exception:  # noqa: BLE001 - the end of the pickles, or not a pickle at all
                break
            if f.tell() >= len(blob):
                break
    return found


def _refused_global(path: Path, e: BaseException) -> str | None:
    """The global a weights-only load refused: from torch's message, else the first one in the file that is
    neither ours to allow nor torch's."""
    text = str(e)
    m = re.search(r"GLOBAL (\S+)", text) or re.search(r"but got <class '([^']+)'>", text)
    if m:
        return m.group(1)
    allowed = {name if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"
               for g in _allowed_globals() for name in ([g[1]] if isinstance(g, tuple) else [None])}
    return next((g for g in _pickle_globals(path) if g not in allowed and not g.startswith(_SAFE_PREFIXES)), None)


def read_checkpoint(path: str | Path, trust: bool = False) -> Any:
    """``torch.load`` on the CPU with ``weights_only=True``: tensors, containers, numbers, strings and the few
    Python objects released checkpoints hold (``argparse.Namespace``, numpy scalars and dtypes). Nothing in the
    file can run code: any other global is refused with a ``ValueError`` naming the file and the global.

    ``trust=True`` (``ino propagate --trust-checkpoint``) retries a refused file with full unpickling, with a
    warning: only for files you made or trust, since unpickling can run any code the file holds.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes), not a checkpoint (an interrupted download or copy?)")
    try:
        with torch.serialization.safe_globals(_allowed_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a plain pickle: refused below
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - an unpickling restriction, or a file that is not a checkpoint
        refused = _refused_global(path, e)
        if not trust:
            if refused is not None:
                raise ValueError(f"{path}: refused to load the Python object {refused} (loading it could run code); "
                                 f"a checkpoint should hold tensors only. If you made this file or trust its "
                                 f"source, pass --trust-checkpoint (read_checkpoint(..., trust=True))") from None
            raise ValueError(f"{path}: not a readable torch checkpoint ({_first_line(e)})") from None
    warnings.warn(f"{path}: loading with full unpickling because it was trusted (--trust-checkpoint); it holds "
                  f"{refused or 'objects a weights-only load refuses'}. Unpickling runs any code the file holds",
                  stacklevel=2)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable torch checkpoint ({_first_line(e)})") from e


def _first_line(e: BaseException) -> str:
    """The reason in a loading error, without torch's advice about ``weights_only``."""
    boiler = ("Weights only load failed", "(1)", "(2)", "Check the documentation", "Please file an issue")
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith(boiler)]
    line = lines[0].removeprefix("WeightsUnpickler error:").strip() if lines else ""
    return f"{type(e).__name__}: {line}"[:200] if line else type(e).__name__


def _pick_state(obj: Any, path: Path, key: str | None) -> tuple[dict, str]:
    """The state dict of the chosen network and a description of where it came from."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict, found {type(obj).__name__}")
    is_state = lambda d: isinstance(d, dict) and d and all(isinstance(v, torch.Tensor) for v in d.values())
    nets = [k for k in ("student", "teacher", "model", "state_dict") if is_state(obj.get(k))]
    if key is not None:
        if not is_state(obj.get(key)):
            raise ValueError(f"{path}: no network {key!r} in the checkpoint (it has {sorted(obj)[:10]})")
        return obj[key], key
    if obj.get("format") == FORMAT:
        key = _config_field(obj, "propagation", "checkpoint_key")
        key = key if key in ("student", "teacher") else "student"
        if not is_state(obj.get(key)):
            raise ValueError(f"{path}: inolib checkpoint without a {key!r} network state dict (it has "
                             f"{sorted(map(str, obj))[:10]})")
        return obj[key], key
    if is_state(obj):
        return obj, "bare state dict"
    if nets:
        # released INO saves "dino_loss_cls_list"/"dino_loss_hw_list" and a "headlist" head (its inference
        # default is the student); DINO saves "dino_loss" and a "head" (its evaluation uses the teacher)
        is_ino = (any(k.startswith("dino_loss_") for k in obj)
                  or any("headlist." in k for k in (obj.get("student") or {}) if isinstance(k, str))
                  or _table_for_64(obj.get("student")))
        key = "student" if is_ino and "student" in nets else ("teacher" if "teacher" in nets else nets[0])
        return obj[key], key
    raise ValueError(f"{path}: no state dict found (keys {sorted(obj)[:10]})")


def _table_for_64(state: Any) -> bool:
    """Whether ``state`` holds a position table made for 64x64 inputs (grid x patch = 64): the released INO
    model's, even without its loss entries or head (DINO's tables are for 224x224 inputs)."""
    if not isinstance(state, dict):
        return False
    pos = next((v for k, v in state.items() if str(k).endswith("pos_embed")), None)
    proj = next((v for k, v in state.items() if str(k).endswith("patch_embed.proj.weight")), None)
    if not (isinstance(pos, torch.Tensor) and pos.dim() == 3 and isinstance(proj, torch.Tensor) and proj.dim() == 4):
        return False
    g = math.isqrt(pos.shape[1] - 1)
    return g * g == pos.shape[1] - 1 and g * proj.shape[-1] == 64


def _config_field(obj: dict, section: str, field: str) -> Any:
    """``obj["config"][section][field]`` of an inolib checkpoint, or None where any level is missing or not a
    dict (a damaged or hostile file: the caller decides what that means)."""
    part = obj.get("config")
    part = part.get(section) if isinstance(part, dict) else None
    return part.get(field) if isinstance(part, dict) else None


def _clean(state: dict) -> tuple[dict, list[str]]:
    """Strip ``module.``/``backbone.`` prefixes; set projection-head weights aside."""
    out, head = {}, []
    for k, v in state.items():
        k = re.sub(r"^(module\.)?(backbone\.)?", "", k)
        if k.startswith(_HEAD_PREFIXES) or k.startswith("module."):
            head.append(k)
            continue
        out[k] = v
    return out, head


_LAYER_SCALE = re.compile(r"blocks\.\d+\.ls[12]\.gamma$")
_SWIGLU = re.compile(r"blocks\.\d+\.mlp\.(w12|w3|fc1_g|fc1_x)\.")


def _is_dinov2(state: dict) -> bool:
    """True for DINOv2's layout (Oquab et al. 2023): LayerScale weights or a (1, D) ``mask_token``."""
    mask = state.get("mask_token")
    return any(_LAYER_SCALE.match(k) for k in state) or (isinstance(mask, torch.Tensor) and mask.dim() == 2)


def _check_supported(state: dict, path: str | Path) -> None:
    """ValueError naming ``path`` for the DINOv2 variants an INOViT cannot hold: registers, SwiGLU MLPs."""
    regs = [k for k in ("register_tokens", "reg_token") if k in state]
    if regs:
        n = state[regs[0]].shape[1] if state[regs[0]].dim() == 3 else "?"
        raise ValueError(f"{path}: a DINOv2 ViT with {n} register tokens ({regs[0]!r}, the '_reg' models) is not "
                         f"supported: inolib's ViT has no register tokens; use the model without registers")
    swiglu = sorted(k for k in state if _SWIGLU.match(k))
    if swiglu:
        raise ValueError(f"{path}: a ViT with a SwiGLU MLP ({swiglu[0]!r}, DINOv2's ViT-g/14) is not supported: "
                         f"inolib's ViT blocks have the plain GELU MLP (fc1, fc2)")


def build_from_state(state: dict, path: str | Path = "<state>", num_heads: int | None = None) -> INOViT:
    """An INOViT shaped like the backbone weights ``state`` (already without prefixes); LayerScale when the
    weights have it (DINOv2). Raises ValueError naming ``path`` when ``state`` is no ViT it can hold."""
    for need in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if need not in state:
            raise ValueError(f"{path}: not a ViT backbone, missing {need!r} (keys: {sorted(state)[:8]} ...)")
    _check_supported(state, path)
    # sizes come from the file: bound them before anything is built (a hostile file must not make us allocate)
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and v.numel() and v.untyped_storage().nbytes() < v.numel() * v.element_size():
            raise ValueError(f"{path}: tensor {k!r} of shape {tuple(v.shape)} holds less data than its shape claims "
                             "(a stride-0 tensor): not a checkpoint's weights")
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    if blocks != list(range(len(blocks))):
        raise ValueError(f"{path}: transformer blocks numbered {blocks[:3]}...{blocks[-3:]}, not 0..N-1")
    dim = state["cls_token"].shape[-1]
    patch = state["patch_embed.proj.weight"].shape[-1]
    depth = len(blocks)
    for what, value, key in (("blocks", depth, "model.depth"), ("width", dim, "model.embed_dim"),
                             ("patch", patch, "model.patch_size")):
        if not 1 <= value <= UPPER_LIMITS[key]:
            raise ValueError(f"{path}: a ViT with {what} {value}: outside 1..{UPPER_LIMITS[key]}")
    n_pos = state["pos_embed"].shape[1] - 1
    g = int(round(math.sqrt(n_pos)))
    if g * g != n_pos:
        raise ValueError(f"{path}: position table of {n_pos} entries is not a square grid")
    heads = num_heads or HEADS_BY_WIDTH.get(dim)
    if heads is None:
        raise ValueError(f"{path}: cannot tell the number of heads of a {dim}-wide ViT; pass num_heads")
    if dim % heads:
        raise ValueError(f"{path}: a {dim}-wide ViT cannot have {heads} heads (the width must divide by them)")
    qkv_bias = "blocks.0.attn.qkv.bias" in state
    # DINOv2's LayerScale init (1e-5); the loaded gammas replace it. "released" resizes as DINOv2 does (model.py).
    init_values = 1e-5 if any(_LAYER_SCALE.match(k) for k in state) else None
    return INOViT(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, qkv_bias=qkv_bias,
                  pos_embed_size=g * patch, pos_embed_resize="released", init_values=init_values)


def load_backbone(path: str | Path, key: str | None = None, num_heads: int | None = None,
                  device: str | torch.device = "cpu", trust: bool = False) -> tuple[INOViT, dict]:
    """The backbone of a checkpoint (see the module docstring) and a report ``{"network", "format", ...}``; for an
    inolib file the report also holds its ``"config"`` (:class:`INOConfig`; None with a warning when it does not
    parse) and training ``"step"`` (else None).

    The file is read with ``weights_only=True`` (:func:`read_checkpoint`); ``trust`` allows full unpickling."""
    path = Path(path)
    return backbone_from(read_checkpoint(path, trust=trust), path, key, num_heads, device)


def backbone_from(obj: Any, path: str | Path, key: str | None = None, num_heads: int | None = None,
                  device: str | torch.device = "cpu") -> tuple[INOViT, dict]:
    """:func:`load_backbone` on a checkpoint already read by :func:`read_checkpoint` (``path`` names it in errors),
    so that a caller who also needs its config (:func:`config_from`) reads the file once."""
    vit, report = _backbone_from(obj, Path(path), key, num_heads)
    return vit.to(device).eval(), report


def _backbone_from(obj: Any, path: Path, key: str | None, num_heads: int | None) -> tuple[INOViT, dict]:
    """The backbone of an already read checkpoint ``obj``: CPU, float32."""
    state, network = _pick_state(obj, path, key)
    state, head_keys = _clean(state)
    dinov2 = _is_dinov2(state)
    mask = state.get("mask_token")
    if dinov2 and isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[0] == 1:
        state["mask_token"] = mask.reshape(1, 1, -1)  # DINOv2 keeps (1, D), inolib (1, 1, D)
    if num_heads is None and isinstance(obj, dict) and obj.get("format") == FORMAT:
        heads = _config_field(obj, "model", "num_heads")
        num_heads = heads if isinstance(heads, int) and not isinstance(heads, bool) and heads >= 1 else None
    vit = build_from_state(state, path, num_heads)
    own = vit.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} keys the ViT does not have: {unknown[:8]}")
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})" for k in state if state[k].shape != own[k].shape]
    if wrong:
        raise ValueError(f"{path}: tensors of the wrong shape: {wrong[:5]}")
    missing = sorted(set(own) - set(state) - {"mask_token"})
    if missing:
        raise ValueError(f"{path}: missing backbone weights: {missing[:8]}")
    vit.load_state_dict(state, strict=False)  # only mask_token may be absent, checked above
    fmt = "inolib" if isinstance(obj, dict) and obj.get("format") == FORMAT else "dinov2" if dinov2 else (
        "bare" if network == "bare state dict" else "released/DINO")
    report = {"network": network, "format": fmt, "patch_size": vit.patch_embed.patch_size[0],
              "embed_dim": vit.embed_dim, "depth": len(vit.blocks), "pos_table": vit.patch_embed.grid_size,
              "head_keys_ignored": len(head_keys), "mask_token": "mask_token" in state,
              "config": _config_or_warn(obj, path) if fmt == "inolib" else None,
              "step": obj.get("step") if fmt == "inolib" else None}
    return vit, report


def _config_or_warn(obj: Any, path: Path) -> INOConfig | None:
    """:func:`_config_of`, or None with a warning naming the file when its config does not parse (a file of
    another inolib version, say): the weights alone are still usable for label propagation."""
    try:
        return _config_of(obj, path)
    except ValueError as e:
        warnings.warn(f"{e}; the weights are loaded without it", stacklevel=3)
        return None


def _config_of(obj: Any, path: Path) -> INOConfig:
    """The :class:`INOConfig` stored in an already read inolib checkpoint ``obj``; ``ValueError`` naming ``path``
    when the file is not one or its config does not parse."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path}: not an inolib checkpoint (no format {FORMAT!r}), so it carries no inolib config")
    if not isinstance(obj.get("config"), dict):
        raise ValueError(f"{path}: inolib checkpoint without a config dict")
    try:
        return INOConfig.from_dict(obj["config"])
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: its config does not parse: {e}") from None


def config_from(obj: Any, path: str | Path) -> INOConfig:
    """The :class:`INOConfig` of a checkpoint already read by :func:`read_checkpoint`; ``ValueError`` naming ``path``
    for other formats and configs that do not parse."""
    return _config_of(obj, Path(path))


def read_config(path: str | Path, trust: bool = False) -> INOConfig:
    """The configuration an inolib checkpoint (training checkpoint or :func:`export_backbones` file) was trained
    with. Reads the file like :func:`load_backbone`; when the weights are needed too, take ``report["config"]``
    of :func:`load_backbone` instead (one read). ``ValueError`` naming the file for other formats (released INO,
    DINO, timm) and for unreadable files."""
    path = Path(path)
    return _config_of(read_checkpoint(path, trust=trust), path)


def export_backbones(run_checkpoint: str | Path, out_path: str | Path, dtype: torch.dtype = torch.float16,
                     heads: bool = False, **extra: Any) -> Path:
    """A small file to share or ship: the student and teacher backbones of a training checkpoint (no optimizer),
    weights cast to ``dtype``, with the run's config and step. ``load_backbone`` reads it like the full
    checkpoint (weights come back as float32).

    ``heads`` also keeps the projection heads and the loss centers (``"student_head"``, ``"teacher_head"``: head
    state dicts without the ``head.`` prefix, cast to ``dtype``; ``"center"``: ``{"cls": (1, K), "patch":
    (1, K)}`` float32), which :func:`load_network` needs to rebuild whole networks: lessons use them to look at
    the distributions the losses compare (label propagation does not). Written atomically; returns ``out_path``."""
    run_checkpoint, out_path = Path(run_checkpoint), Path(out_path)
    ck = torch.load(run_checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != FORMAT or "student" not in ck or "teacher" not in ck:
        raise ValueError(f"{run_checkpoint}: not an inolib training checkpoint with a student and a teacher")

    def part(state: dict, prefix: str, strip: bool) -> dict:
        out = {(k[len(prefix):] if strip else k): (v.to(dtype) if v.is_floating_point() else v)
               for k, v in state.items() if k.startswith(prefix)}
        if not out:
            raise ValueError(f"{run_checkpoint}: the network has no {prefix.rstrip('.')} weights")
        return out

    state = {"format": FORMAT, "config": ck["config"], "student": part(ck["student"], "backbone.", False),
             "teacher": part(ck["teacher"], "backbone.", False), "step": ck.get("step"), **extra}
    if heads:
        centers = ck.get("criterion") or {}
        if "center.patch" not in centers or "center.cls" not in centers:
            raise ValueError(f"{run_checkpoint}: no loss centers ('criterion' with center.cls and center.patch)")
        state.update(student_head=part(ck["student"], "head.", True), teacher_head=part(ck["teacher"], "head.", True),
                     center={"cls": centers["center.cls"].float(), "patch": centers["center.patch"].float()})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out_path, lambda tmp: torch.save(state, tmp))


def load_network(path: str | Path, key: str = "student", device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Backbone + projection head of one network (``key``: student or teacher) from a file written by
    :func:`export_backbones` with ``heads=True``.

    Returns an :class:`inolib.model.INONetwork` in eval mode (float32) and the loss centers ``{"cls", "patch"}``,
    each (1, K). Raises ``ValueError`` naming the file when it holds no such head or no centers."""
    path = Path(path)
    return network_from(read_checkpoint(path), path, key, device)


def network_from(obj: Any, path: str | Path, key: str = "student",
                 device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """:func:`load_network` on a checkpoint already read by :func:`read_checkpoint` (``path`` names it in errors)."""
    from .model import INONetwork, build_head

    if key not in ("student", "teacher"):
        raise ValueError(f"key must be 'student' or 'teacher', got {key!r}")
    path = Path(path)
    vit, report = _backbone_from(obj, path, key, None)
    if not isinstance(obj, dict) or not isinstance(obj.get(f"{key}_head"), dict) or not isinstance(obj.get("center"), dict):
        raise ValueError(f"{path}: no {key} head or no loss centers in the file (export it with "
                         f"export_backbones(..., heads=True))")
    cfg = report["config"] or _config_of(obj, path)  # parsed with the backbone; None: the head needs it, so raise
    head = build_head(cfg.model)
    state = obj[f"{key}_head"]
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: the {key} head holds values that are not tensors")
    try:
        head.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as e:
        raise ValueError(f"{path}: the {key} head does not fit the file's config: {' '.join(str(e).split())[:300]}") from None
    K = cfg.model.head_out_dim
    centers = {}
    for name in ("cls", "patch"):
        c = obj["center"].get(name)
        if not isinstance(c, torch.Tensor) or tuple(c.shape) != (1, K) or not c.is_floating_point():
            raise ValueError(f"{path}: loss center {name!r} must be a float (1, {K}) tensor, got "
                             f"{tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__}")
        centers[name] = c.float().to(device)
    net = INONetwork(vit, head).to(device).eval()
    return net, centers
