"""J&F of a trained checkpoint against its baselines, on the DAVIS sample and on held-out synthetic sequences.

    python benchmarks/shipped_model.py [--checkpoint data/checkpoints/ino_tiny.pth] [--short-sides 160 240 320]

For each propagation short side: the checkpoint's student and teacher, a random initialisation of the same network
(seed 0), raw pixels (``inolib.vos.baselines.PixelFeatures``) and "copy frame 0" (the first mask repeated, a tracker
that never moves), scored with the official J&F protocol through ``inolib.vos.validation.davis_jf`` (the pipeline of
``ino propagate`` + ``ino evaluate``). The held-out synthetic sequences use seeds training never uses
(``inolib.data.synthetic.HELD_OUT_SEED``). Prints a Markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from inolib import config as C
from inolib.vos.baselines import PixelFeatures
from inolib.checkpoint import load_backbone, read_config
from inolib.data.synthetic import HARD_SCENE, write_held_out_davis
from inolib.vos.metrics import _global_results, evaluate_sequence, object_statistics
from inolib.model import build_backbone
from inolib.vos.validation import davis_jf, load_davis_for_validation

REPO = Path(__file__).resolve().parents[1]


def copy_first(sequences) -> float:
    """J&F-Mean of repeating the first ground-truth mask in every frame."""
    objects = {}
    for seq in sequences:
        gt = seq.load_masks()
        first = gt[:1].expand_as(gt).clone()
        first[first == 255] = 0
        for k, s in evaluate_sequence(first, gt, max(seq.object_ids, default=0), seq.name).items():
            objects[f"{seq.name}_{k}"] = object_statistics(s)
    return _global_results(objects)["J&F-Mean"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(REPO / "data/checkpoints/ino_tiny.pth"))
    ap.add_argument("--short-sides", type=int, nargs="+", default=None, help="default: the checkpoint's")
    ap.add_argument("--held-out", type=int, default=4, help="held-out synthetic sequences")
    ap.add_argument("--held-out-dir", default=None, help="where to write them (default: a temporary folder)")
    ap.add_argument("--hard", type=int, default=4, help="held-out synthetic sequences of the hard scene "
                    "(camouflage, look-alike distractors, changing light: inolib.data.synthetic.HARD_SCENE)")
    ap.add_argument("--networks", nargs="+", default=["student", "teacher", "random init", "raw pixels"])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    cfg = read_config(args.checkpoint)
    held_dir = Path(args.held_out_dir or tempfile.mkdtemp(prefix="heldout_"))
    sets = {"DAVIS sample": load_davis_for_validation(REPO / "data/davis_sample/DAVIS"),
            "held-out synthetic": load_davis_for_validation(write_held_out_davis(held_dir, args.held_out,
                                                                                 cfg.synthetic))}
    if args.hard:
        sets["held-out hard synthetic"] = load_davis_for_validation(
            write_held_out_davis(held_dir / "hard", args.hard, cfg.synthetic, scene=HARD_SCENE))
    torch.manual_seed(0)
    nets = {"student": load_backbone(args.checkpoint, key="student", device=args.device)[0],
            "teacher": load_backbone(args.checkpoint, key="teacher", device=args.device)[0],
            "random init": build_backbone(cfg.model).to(args.device).eval(),
            "raw pixels": PixelFeatures(cfg.model.patch_size)}
    print(f"checkpoint {args.checkpoint}; machine {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print("| short side | features | " + " | ".join(sets) + " | seconds |")
    print("|---|---|" + "---|" * (len(sets) + 1))
    for name, seqs in sets.items():
        print(f"| - | copy frame 0 | " + " | ".join(f"{copy_first(s):.3f}" if n == name else "" for n, s in sets.items())
              + " | |")
    for side in args.short_sides or [cfg.propagation.short_side]:
        prop = C.override(cfg, {"propagation.short_side": side}).propagation
        for name in args.networks:
            t0 = time.perf_counter()
            scores = [davis_jf(nets[name], seqs, prop, args.device)["J&F-Mean"] for seqs in sets.values()]
            print(f"| {side} | {name} | " + " | ".join(f"{s:.3f}" for s in scores)
                  + f" | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
