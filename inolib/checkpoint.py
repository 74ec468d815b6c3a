"""Saving and loading weights: our checkpoints, the released INO format, DINO's ViT checkpoints, timm state dicts.

``load_backbone(path)`` returns an :class:`inolib.model.INOViT` with the checkpoint's backbone weights and a
small report of what was taken. It recognises:

* inolib checkpoints (``save_checkpoint``): ``{"format": "inolib", "config", "student", "teacher", ...}``;
* released INO checkpoints: ``student``/``teacher`` state dicts of a multi-crop wrapper, keys prefixed with
  ``module.`` and ``backbone.``, an 8x8 position table for 64x64 inputs (ref §2); default network: student;
* DINO's released ViT checkpoints: a ``teacher``/``student`` dict or a bare backbone state dict with a table for
  224x224 inputs; default network: teacher;
* timm ``VisionTransformer`` state dicts (bare).

The architecture (patch size, width, depth, position-table size) is read from the weights; the number of
heads from the width (192 -> 3, 384 -> 6, 768 -> 12, 1024 -> 16) unless given. Keys the backbone does not
have, or tensors of the wrong shape, raise ``ValueError`` naming them; projection-head weights are set aside
(label propagation uses the backbone only). A missing ``mask_token`` (DINO, timm) is allowed: it only
matters for training.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import INOConfig
from .model import INOViT

HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16}
_HEAD_PREFIXES = ("head.", "headlist.", "fc_norm.", "last_layer.")
FORMAT = "inolib"


def save_checkpoint(path: str | Path, cfg: INOConfig, student: nn.Module, teacher: nn.Module | None = None,
                    **extra: Any) -> Path:
    """Write ``{"format": "inolib", "config": cfg.to_dict(), "student", "teacher", **extra}`` atomically
    (a temporary file renamed over the target: an interrupted save never leaves a broken checkpoint)."""
    from .teacher import unwrap

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "config": cfg.to_dict(), "student": unwrap(student).state_dict()}
    if teacher is not None:
        state["teacher"] = unwrap(teacher).state_dict()
    state.update(extra)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load`` on the CPU; tensors-only first, then (with a warning) full unpickling for files that hold
    Python objects, such as the released code's ``args``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - any unpickling restriction
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise ValueError(f"{path}: not a readable torch checkpoint ({e})") from e
        warnings.warn(f"{path} holds Python objects besides tensors ({str(first).splitlines()[0][:120]}); "
                      "loaded with full unpickling: only load checkpoints you trust", stacklevel=2)
        return obj


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
        key = obj.get("config", {}).get("propagation", {}).get("checkpoint_key", "student")
        return obj[key], key
    if is_state(obj):
        return obj, "bare state dict"
    if nets:
        # released INO saves "dino_loss_cls_list"/"dino_loss_hw_list" and a "headlist" head (its inference
        # default is the student); DINO saves "dino_loss" and a "head" (its evaluation uses the teacher)
        is_ino = any(k.startswith("dino_loss_") for k in obj) or any(
            "headlist." in k for k in (obj.get("student") or {}) if isinstance(k, str))
        key = "student" if is_ino and "student" in nets else ("teacher" if "teacher" in nets else nets[0])
        return obj[key], key
    raise ValueError(f"{path}: no state dict found (keys {sorted(obj)[:10]})")


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


def build_from_state(state: dict, path: str | Path = "<state>", num_heads: int | None = None) -> INOViT:
    """An INOViT shaped like the backbone weights ``state`` (already without prefixes)."""
    for need in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if need not in state:
            raise ValueError(f"{path}: not a ViT backbone, missing {need!r} (keys: {sorted(state)[:8]} ...)")
    dim = state["cls_token"].shape[-1]
    patch = state["patch_embed.proj.weight"].shape[-1]
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    n_pos = state["pos_embed"].shape[1] - 1
    g = int(round(math.sqrt(n_pos)))
    if g * g != n_pos:
        raise ValueError(f"{path}: position table of {n_pos} entries is not a square grid")
    heads = num_heads or HEADS_BY_WIDTH.get(dim)
    if heads is None:
        raise ValueError(f"{path}: cannot tell the number of heads of a {dim}-wide ViT; pass num_heads")
    qkv_bias = "blocks.0.attn.qkv.bias" in state
    return INOViT(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, qkv_bias=qkv_bias,
                  pos_embed_size=g * patch, pos_embed_resize="released")


def load_backbone(path: str | Path, key: str | None = None, num_heads: int | None = None,
                  device: str | torch.device = "cpu") -> tuple[INOViT, dict]:
    """The backbone of a checkpoint (see the module docstring) and a report ``{"network", "format", ...}``."""
    path = Path(path)
    obj = read_checkpoint(path)
    state, network = _pick_state(obj, path, key)
    state, head_keys = _clean(state)
    if num_heads is None and isinstance(obj, dict) and obj.get("format") == FORMAT:
        num_heads = obj["config"]["model"]["num_heads"]
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
    fmt = "inolib" if isinstance(obj, dict) and obj.get("format") == FORMAT else (
        "bare" if network == "bare state dict" else "released/DINO")
    report = {"network": network, "format": fmt, "patch_size": vit.patch_embed.patch_size[0],
              "embed_dim": vit.embed_dim, "depth": len(vit.blocks), "pos_table": vit.patch_embed.grid_size,
              "head_keys_ignored": len(head_keys), "mask_token": "mask_token" in state}
    return vit.to(device).eval(), report


def export_backbones(run_checkpoint: str | Path, out_path: str | Path, dtype: torch.dtype = torch.float16,
                     **extra: Any) -> Path:
    """A small file to share or ship: the student and teacher backbones of a training checkpoint (no heads, no
    optimizer), weights cast to ``dtype``, with the run's config and step. ``load_backbone`` reads it like the
    full checkpoint (weights come back as float32). Written atomically; returns ``out_path``."""
    run_checkpoint, out_path = Path(run_checkpoint), Path(out_path)
    ck = torch.load(run_checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != FORMAT or "student" not in ck or "teacher" not in ck:
        raise ValueError(f"{run_checkpoint}: not an inolib training checkpoint with a student and a teacher")

    def backbone(state: dict) -> dict:
        return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()
                if k.startswith("backbone.")}

    state = {"format": FORMAT, "config": ck["config"], "student": backbone(ck["student"]),
             "teacher": backbone(ck["teacher"]), "step": ck.get("step"), **extra}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, out_path)
    return out_path
