"""Validation while training: J&F of a backbone on DAVIS-layout sequences, computed in memory.

    scores = davis_jf(vit, "data/davis_sample/DAVIS", cfg.propagation)
    scores["J&F-Mean"], scores["sequences"]["blackswan"]

The same pipeline as ``ino propagate --davis`` followed by ``ino evaluate`` (label propagation with the
configured protocol, then the official semi-supervised J and F), without writing PNG files: the id maps are
scored as they are produced. :class:`inolib.train.Trainer` calls it every ``eval_every`` steps
(``ino train --eval-davis ROOT``) for the student and the teacher.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .config import PropagationConfig
from .data.vos import list_davis_sequences, read_davis_sequence
from .evaluate import _global_results, evaluate_sequence, object_statistics
from .model import INOViT
from .segment import segment_sequence


def load_davis_for_validation(root: str | Path, split: str = "val", sequences: list[str] | None = None,
                              resolution: str = "480p") -> list:
    """The :class:`inolib.data.vos.VOSSequence` objects to validate on (read once, reused at every evaluation);
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
                        copy_baseline: bool = True) -> dict:
    """Propagate one sequence's first mask with each network and score every result against its ground truth.

    Args:
        networks: {name: backbone} (INOViT, or a baseline such as ``PixelFeatures``).
        seq: a fully annotated :class:`inolib.data.vos.VOSSequence` with at least 3 frames (``seq.head(n)`` for
            fewer frames).
        copy_baseline: also score "copy frame 0" (:func:`inolib.baselines.copy_first_mask`).
    Returns ``{name: {"ids": uint8 (T, H, W), "J": float (T,) per-frame J (mean over objects, frame 0
    included), "J&F": the sequence's J&F-Mean (official: frames 1..T-2, mean over objects)}}`` plus
    ``"ground truth"`` with its ids.
    """
    from .baselines import copy_first_mask
    from .evaluate import jaccard

    if not isinstance(networks, dict) or not networks:
        raise ValueError("networks must be a non-empty dict {name: backbone}")
    gt = seq.load_masks()
    if gt.shape[0] < 3:
        raise ValueError(f"sequence {seq.name}: {gt.shape[0]} frames; J&F needs at least 3")
    objects = list(seq.object_ids)
    results = {name: segment_sequence(net, seq, cfg, device) for name, net in networks.items()}
    if copy_baseline:
        results["copy frame 0"] = copy_first_mask(gt[0], gt.shape[0])
    out = {}
    for name, ids in results.items():
        per_frame = torch.stack([torch.as_tensor(jaccard(ids == o, gt == o), dtype=torch.float64)
                                 for o in objects]).mean(0)
        scores = evaluate_sequence(ids, gt, max(objects, default=0), seq.name)
        rows = [object_statistics(s) for s in scores.values()]
        out[name] = {"ids": ids.to(torch.uint8), "J": per_frame,
                     "J&F": float(np.mean([(r["J_mean"] + r["F_mean"]) / 2 for r in rows]))}
    out["ground truth"] = {"ids": torch.where(gt == 255, torch.zeros_like(gt), gt)}
    return out
