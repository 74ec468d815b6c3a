"""INO at paper scale in the lessons: the released ViT-S/8 and other pretrained backbones beside the course's tiny
model, when their weights are cached (``ino weights fetch NAME``) or the lesson runs in ``paper`` mode.

Offline (no cached weights, as in CI) a random ViT-S/8 written and read in the released checkpoint format stands
in, so the same code path runs and the lesson says in one line how to fetch the real weights.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import torch

from ..checkpoint import backbone_from, read_checkpoint
from ..config import PropagationConfig
from ..model import INOViT
from ..weights import cached, fetch

# the names a lesson shows, in order: the released INO model first, then frozen self-supervised image models
PAPER_NAMES = ("ino-vits8-charades", "dino-vits8", "dinov2-vits14")
STAND_IN = "random ViT-S/8 (released format)"


def random_released_vits8(seed: int = 0, depth: int = 12) -> INOViT:
    """A random ViT-S/8 (``depth`` blocks) saved in the released INO checkpoint layout (``student`` state dict with
    ``module.backbone.`` keys, an 8x8 position table) and loaded back as :func:`inolib.checkpoint.load_backbone`
    reads released files: the offline stand-in for ``ino-vits8-charades``."""
    with torch.random.fork_rng(devices=[]):  # building networks draws random numbers: not from the lesson's
        torch.manual_seed(seed)
        vit = INOViT(patch_size=8, embed_dim=384, depth=depth, num_heads=6, pos_embed_size=64)
        state = {f"module.backbone.{k}": v for k, v in vit.state_dict().items()}
        buf = io.BytesIO()
        torch.save({"student": state, "teacher": state, "dino_loss_cls_list": {}}, buf)
        buf.seek(0)
        obj = torch.load(buf, weights_only=True)
        return backbone_from(obj, STAND_IN, key="student")[0]


def paper_backbones(mode: str, device: str | torch.device = "cpu", names: tuple[str, ...] = PAPER_NAMES,
                    stand_in_depth: int | None = None) -> tuple[dict[str, torch.nn.Module], str]:
    """The pretrained backbones of ``names`` whose weights are cached (all fetched first in ``paper`` mode) as
    ``{name: backbone}``, and one line saying what was used; without any, the random released-format ViT-S/8
    (``stand_in_depth`` blocks; default 3 in ``smoke`` mode, else the paper's 12) under :data:`STAND_IN`."""
    if mode not in ("smoke", "laptop", "paper"):
        raise ValueError(f"mode must be 'smoke', 'laptop' or 'paper', got {mode!r}")
    if not names:
        raise ValueError("names must name at least one weights entry (see `ino weights list`)")
    if stand_in_depth is None:
        stand_in_depth = 3 if mode == "smoke" else 12
    found: dict[str, torch.nn.Module] = {}
    for name in names:
        path = fetch(name) if mode == "paper" else cached(name)
        if path is not None:
            with torch.random.fork_rng(devices=[]):
                found[name] = backbone_from(read_checkpoint(Path(path)), path, device=device)[0]
    if found:
        return found, "pretrained weights: " + ", ".join(found)
    stand_in = random_released_vits8(depth=stand_in_depth).to(device).eval()
    more = f" (and {', '.join(names[1:])})" if len(names) > 1 else ""
    return {STAND_IN: stand_in}, (f"no pretrained weights cached: a {STAND_IN} stands in (same code path); "
                                  f"`ino weights fetch {names[0]}`{more} shows the real ones")


def paper_propagation(lesson: PropagationConfig, backbones: dict[str, torch.nn.Module]) -> PropagationConfig:
    """The lesson's propagation settings (``lesson``: its resolution, radius...) with the paper's feature block,
    block 7 of 12 (Sec. 4.1 and the released inference), or the last block of the shallowest of ``backbones`` when it
    has fewer (the smoke-mode stand-in)."""
    if not isinstance(lesson, PropagationConfig):
        raise TypeError(f"lesson must be a PropagationConfig, got {type(lesson).__name__}")
    if not backbones:
        raise ValueError("backbones must hold at least one network")
    depth = min(len(b.blocks) for b in backbones.values())
    return dataclasses.replace(lesson, feature_block=min(PropagationConfig.feature_block, depth))


def frozen_feature_table(paper: dict[str, torch.nn.Module], course: dict[str, torch.nn.Module], sequences: list,
                         lesson: PropagationConfig, device: str | torch.device = "cpu", frames: int | None = None,
                         progress: bool = True) -> dict[str, dict[str, float]]:
    """J&F-Mean of frozen features on each sequence, every network through the same kernel and frames.

    Args:
        paper: {name: pretrained backbone}, each read at the paper's block (:func:`paper_propagation`, per network).
        course: {name: backbone} (the shipped model, its random init, ``PixelFeatures``) at ``lesson``'s block;
            "copy frame 0" is added once.
        sequences: fully annotated :class:`inolib.data.vos_datasets.VOSSequence` objects (>= 3 frames).
        lesson: the propagation settings (resolution, k, context, radius) every network shares.
        frames: score the first ``frames`` frames of each sequence (a CPU's budget); None: all of them.
    Returns ``{name: {sequence name: J&F, ..., "mean": mean over the sequences}}``, paper networks first.
    """
    from tqdm.auto import tqdm

    from ..vos.validation import compare_on_sequence

    if not sequences:
        raise ValueError("sequences must hold at least one sequence")
    if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 3):
        raise ValueError(f"frames must be None or a whole number >= 3 (J&F leaves out the first and last), "
                         f"got {frames!r}")
    groups = [({name: net}, paper_propagation(lesson, {name: net}), False) for name, net in paper.items()]
    if course:
        groups.append((course, lesson, True))
    table: dict[str, dict[str, float]] = {}
    bar = tqdm(total=len(groups) * len(sequences), desc="frozen features", disable=not progress)
    for nets, settings, copy in groups:
        for seq in sequences:
            seq = seq.head(frames) if frames is not None and seq.num_frames > frames else seq
            res = compare_on_sequence(nets, seq, settings, device, copy_baseline=copy)
            for name, r in res.items():
                if "J&F" in r:
                    table.setdefault(name, {})[seq.name] = float(r["J&F"])
            bar.update(1)
    bar.close()
    for row in table.values():
        row["mean"] = sum(row.values()) / len(row)
    return table
