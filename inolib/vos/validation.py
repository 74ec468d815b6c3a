"""Validation while training: J&F of a backbone on DAVIS-layout sequences, computed in memory.

    scores = davis_jf(vit, "data/davis_sample/DAVIS", cfg.propagation)
    scores["J&F-Mean"], scores["sequences"]["blackswan"]

The same pipeline as ``ino propagate --davis`` followed by ``ino evaluate`` (label propagation with the
configured protocol, then the official semi-supervised J and F), without writing PNG files: the id maps are
scored as they are produced. :class:`inolib.run.trainer.Trainer` calls it every ``eval_every`` steps
(``ino train --eval-davis ROOT``) for the student and the teacher.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import PropagationConfig
from ..data.vos_datasets import list_davis_sequences, read_davis_sequence
from .metrics import _global_results, evaluate_sequence, object_statistics
from ..model import INOViT
from .segment import segment_sequence


def load_davis_for_validation(root: str | Path, split: str = "val", sequences: list[str] | None = None,
                              resolution: str = "480p") -> list:
    """The :class:`inolib.data.vos_datasets.VOSSequence` objects to validate on (read once, reused at every evaluation);
    ValueError naming the root when there are none or one is shorter than 3 frames."""
    names = list(sequences) if sequences else list_davis_sequences(root, split, resolution)
    if not names:
        raise ValueError(f"--eval-davis {root}: no sequences in split {split!r}")
    seqs = [read_davis_sequence(root, n, resolution) for n in names]
    short = [s.name for s in seqs if s.num_frames < 3]
    if short:
        raise ValueError(f"--eval-davis {root}: sequences {short} have fewer than 3 frames (J&F leaves out the "
                         "first and the last)")
    return seqs


@torch.no_grad()
def davis_jf(vit: INOViT, sequences, cfg: PropagationConfig, device: str | torch.device = "cpu") -> dict:
    """J&F of ``vit`` on DAVIS sequences: a root folder (its ``val`` split) or a list of loaded sequences.

    Returns ``{"J&F-Mean", "J-Mean", "F-Mean", ..., "sequences": {name: J&F-Mean of its objects}}``, the
    official global row (means over all objects). ``vit`` is put in eval mode and restored afterwards; no
    random number generator is used.
    """
    if not hasattr(vit, "patch_feature_map"):
        raise ValueError(f"vit must be an inolib INOViT (or a baseline such as PixelFeatures), got {type(vit).__name__}")
    seqs = load_davis_for_validation(sequences) if isinstance(sequences, (str, Path)) else list(sequences)
    was_training = vit.training
    vit.eval()
    objects: dict[str, dict] = {}
    per_sequence = {}
    try:
        for seq in seqs:
            pred = segment_sequence(vit, seq, cfg, device)
            scores = evaluate_sequence(pred, seq.load_masks(), max(seq.object_ids, default=0), seq.name)
            rows = []
            for k, s in scores.items():
                row = objects[f"{seq.name}_{k}"] = object_statistics(s)
                rows.append((row["J_mean"] + row["F_mean"]) / 2)
            per_sequence[seq.name] = float(np.mean(rows)) if rows else float("nan")
    finally:
        vit.train(was_training)
    return {**_global_results(objects), "sequences": per_sequence}


@torch.no_grad()
def compare_on_sequence(networks: dict, seq, cfg: PropagationConfig, device: str | torch.device = "cpu",
                        copy_baseline: bool = True, keep_features: bool = False) -> dict:
    """Propagate one sequence's first mask with each network and score every result against its ground truth.

    ``networks``: {name: backbone} (INOViT, or a baseline such as ``PixelFeatures``); ``seq``: a fully annotated
    :class:`inolib.data.vos_datasets.VOSSequence` of >= 3 frames. Returns ``{name: {"ids": uint8 (T, H, W),
    "J": float (T,) per-frame J (frame 0 included), "J&F": the official J&F-Mean}}`` plus ``"ground truth"``;
    ``copy_baseline`` adds "copy frame 0", ``keep_features`` each network's ``"features"`` (T, D, h, w) on the CPU.
    """
    # J is the mean over objects per frame; J&F follows the official protocol (frames 1..T-2). keep_features
    # serves :class:`inolib.course.widgets.PropagationExplorer` without extracting the features twice.
    from .baselines import copy_first_mask

    if not isinstance(networks, dict) or not networks:
        raise ValueError("networks must be a non-empty dict {name: backbone}")
    gt = seq.load_masks()
    if gt.shape[0] < 3:
        raise ValueError(f"sequence {seq.name}: {gt.shape[0]} frames; J&F needs at least 3")
    from .segment import sequence_features

    feats = {name: sequence_features(net, seq, cfg, device) if keep_features else None
             for name, net in networks.items()}
    results = {name: segment_sequence(net, seq, cfg, device, features=feats[name]) for name, net in networks.items()}
    if copy_baseline:
        results["copy frame 0"] = copy_first_mask(gt[0], gt.shape[0])
    out = {name: _score(ids, gt, seq) for name, ids in results.items()}
    for name, f in feats.items():
        if f is not None:
            out[name]["features"] = f
    out["ground truth"] = {"ids": torch.where(gt == 255, torch.zeros_like(gt), gt)}
    return out


# propagation settings that only change how features are propagated (not the features themselves)
SWEEPABLE = ("topk", "num_context", "radius", "temperature")


def sweep_propagation(vit, seq, cfg: PropagationConfig, setting: str, values, device: str | torch.device = "cpu"
                      ) -> dict:
    """J&F of one sequence for each value of one propagation setting, the features extracted once.

    Args:
        vit: a backbone (INOViT or a baseline such as ``PixelFeatures``); seq: a fully annotated sequence
            (at least 3 frames); cfg: the other settings; setting: one of ``SWEEPABLE`` (topk, num_context,
            radius, temperature); values: the values to try.
    Returns ``{value: {"J&F": float, "J": float (T,) per frame, "ids": uint8 (T, H, W)}}``, scored as
    :func:`compare_on_sequence` scores (official J&F over frames 1..T-2, mean over objects).
    """
    from dataclasses import replace

    from .segment import sequence_features

    if setting not in SWEEPABLE:
        raise ValueError(f"setting must be one of {SWEEPABLE} (short_side and feature_block change the features "
                         f"themselves), got {setting!r}")
    values = list(values)
    if not values:
        raise ValueError("values: give at least one value to try")
    gt = seq.load_masks()
    if gt.shape[0] < 3:
        raise ValueError(f"sequence {seq.name}: {gt.shape[0]} frames; J&F needs at least 3")
    feats = sequence_features(vit, seq, cfg, device)
    out = {}
    for v in values:
        run = replace(cfg, **{setting: v})
        ids = segment_sequence(vit, seq, run, device, features=feats)
        out[v] = _score(ids, gt, seq)
    return out


def _score(ids: torch.Tensor, gt: torch.Tensor, seq) -> dict:
    """Per-frame J (mean over objects, frame 0 included) and the official J&F-Mean of one sequence's ids."""
    from .metrics import jaccard

    objects = list(seq.object_ids)
    per_frame = torch.stack([torch.as_tensor(jaccard(ids == o, gt == o), dtype=torch.float64)
                             for o in objects]).mean(0)
    rows = [object_statistics(s) for s in evaluate_sequence(ids, gt, max(objects, default=0), seq.name).values()]
    return {"ids": ids.to(torch.uint8), "J": per_frame,
            "J&F": float(np.mean([(r["J_mean"] + r["F_mean"]) / 2 for r in rows]))}
