"""The ``ino`` command line (also ``python -m inolib``).

    ino info                       versions, devices, presets
    ino config --preset tiny [--loss.teacher_temp 0.02 ...]    print a resolved config as JSON
    ino demo [--preset tiny] [--device cpu] [--data data]       the tour on bundled real frames
    ino propagate --checkpoint CKPT --davis ROOT --out DIR      label propagation (also --ytvos, --video)
    ino evaluate --davis ROOT --results DIR                     DAVIS J&F tables
    ino train --data VIDEOS --out RUN [--preset tiny]           INO training (torchrun for several GPUs)

Every config field is a flag ``--<section>.<field>``; the flags are generated from the dataclasses in
:mod:`inolib.config`, so the command line never drifts from the code.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata

from . import config as C


def add_config_args(parser: argparse.ArgumentParser, default_preset: str) -> None:
    """Add ``--preset`` and one ``--section.field`` flag per leaf field of :class:`INOConfig`."""
    parser.add_argument("--preset", default=default_preset, choices=sorted(C.PRESETS),
                        help=f"starting configuration (default {default_preset})")
    group = parser.add_argument_group("config overrides (defaults shown are the charades preset's)")
    for name, tp, default in C.iter_fields():
        if name == "name":
            continue
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        tname = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
        group.add_argument(f"--{name}", dest=f"cfg:{name}", default=None, metavar=tname.upper(),
                           help=f"default {shown}")


def config_from_args(args: argparse.Namespace) -> C.INOConfig:
    """The preset named by ``--preset`` with every given ``--section.field`` applied."""
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:") and v is not None}
    return C.override(C.get_preset(args.preset), overrides)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from .model import build_backbone, build_head, count_parameters

    print("inolib", _version("inolib"))
    print(f"python {platform.python_version()} ({platform.machine()}, {platform.system()})")
    for dist in ("torch", "torchvision", "timm", "numpy", "decord", "matplotlib", "ipywidgets", "jupyterlab"):
        print(f"  {dist:<12} {_version(dist)}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            bf16 = "bf16" if torch.cuda.is_bf16_supported() else "no bf16"
            print(f"device cuda:{i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, {bf16}")
    else:
        print(f"device: cpu only ({torch.get_num_threads()} threads); GPU training needs CUDA")
    print(f"smoke mode (INOLIB_SMOKE): {'on' if C.smoke_mode() else 'off'}")
    print("presets:")
    for name in C.PRESETS:
        cfg = C.get_preset(name)
        m, o = cfg.model, cfg.optim
        params = count_parameters(build_backbone(m)) + count_parameters(build_head(m))
        print(f"  {name:<9} ViT dim {m.embed_dim} x {m.depth} blocks, patch {m.patch_size}, head -> {m.head_out_dim}; "
              f"{params / 1e6:.1f} M params; crops {cfg.crops.global_size}/{cfg.crops.local_size} x{cfg.crops.num_local}; "
              f"{o.epochs} epochs, {o.batch_size_per_gpu} clips/GPU")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(config_from_args(args).to_dict(), indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(config_from_args(args), data_dir=args.data, device=args.device, seed=args.seed)
    return 0


def _backbone(args: argparse.Namespace, cfg: C.INOConfig):
    """The backbone to segment with: a checkpoint, or a random-init model of the preset (``--checkpoint random``)."""
    import torch

    from .checkpoint import load_backbone
    from .model import build_backbone

    if args.checkpoint == "random":
        torch.manual_seed(args.seed)
        print(f"backbone: random initialisation of the {cfg.name!r} preset (a baseline, not a trained model)")
        return build_backbone(cfg.model).to(args.device).eval()
    vit, rep = load_backbone(args.checkpoint, key=args.network, device=args.device, trust=args.trust_checkpoint)
    print(f"backbone: {args.checkpoint} ({rep['format']}, network {rep['network']}): ViT-{rep['embed_dim']}/"
          f"{rep['patch_size']}, {rep['depth']} blocks, position table {rep['pos_table']}")
    return vit


def cmd_propagate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .segment import (VideoSequence, segment_davis, segment_sequence, write_ids_png, write_overlay_gif,
                          write_sequence)

    cfg = config_from_args(args)
    sources = [x for x in (args.davis, args.ytvos, args.video) if x]
    if len(sources) != 1:
        raise ValueError("give exactly one of --davis ROOT, --ytvos ROOT or --video FILE")
    vit = _backbone(args, cfg)
    p = cfg.propagation
    print(f"propagation: block {p.feature_block}, k={p.topk}, {p.num_context} context frames, radius {p.radius}, "
          f"short side {p.short_side}")
    out = Path(args.out)
    if args.davis:
        done = segment_davis(vit, args.davis, out, p, split=args.split or "val", sequences=args.sequences,
                             device=args.device, resume=args.resume)
        print(f"wrote {len(done)} sequences to {out}")
    elif args.ytvos:
        from .data.vos import list_ytvos_videos, read_ytvos_sequence
        from tqdm.auto import tqdm

        split = args.split or "valid"
        for name in tqdm(args.sequences or list_ytvos_videos(args.ytvos, split), desc="videos", unit="video"):
            write_sequence(vit, read_ytvos_sequence(args.ytvos, name, split), out / "Annotations" / name, p,
                           args.device, args.resume, progress=True)
        print(f"wrote the YouTube-VOS layout under {out / 'Annotations'}")
    else:
        if not args.first_mask:
            raise ValueError("--video needs --first-mask PNG (the mask of frame 0)")
        seq = VideoSequence(args.video, args.first_mask)
        ids = segment_sequence(vit, seq, p, args.device, progress=True)
        for t, m in enumerate(ids):
            write_ids_png(out / seq.name / f"{t:05d}.png", m)
        gif = write_overlay_gif(out / f"{seq.name}_overlay.gif", seq, ids, fps=min(seq.fps, 25.0))
        print(f"wrote {len(ids)} masks to {out / seq.name} and an overlay to {gif}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .distributed import cleanup

    try:
        return _train(args)
    finally:
        cleanup()  # leave the process group cleanly, also when a NaN stops the run


def _train(args: argparse.Namespace) -> int:
    from .train import Trainer

    cfg = config_from_args(args)
    trainer = Trainer(cfg, args.data, args.out, device=args.device, resume=not args.no_resume,
                      log_every=args.log_every, save_every=args.save_every, keep_every=args.keep_every,
                      tensorboard=not args.no_tensorboard, max_steps=args.max_steps)
    if trainer.dist.is_main:
        print(f"training {cfg.name!r} on {len(trainer.dataset.videos)} videos: {trainer.steps_per_epoch} steps per "
              f"epoch x {cfg.optim.epochs} epochs, {trainer.dist.world_size} process(es) on {trainer.device}"
              + (f"; resumed at step {trainer.step} from {trainer.last_checkpoint}" if trainer.step else ""))
    if trainer.step >= trainer.total_steps:
        if trainer.dist.is_main:
            print(f"nothing to do: {trainer.out} holds a finished run ({trainer.step} steps); --no-resume starts over")
        return 0
    last = trainer.fit()
    if trainer.dist.is_main:
        shown = ", ".join(f"{k} {last[k]:.4g}" for k in ("loss", "g2g", "l2g", "mim", "aff") if k in last)
        print(f"step {trainer.step}: {shown}; checkpoint {trainer.last_checkpoint}; log {trainer.out / 'log.jsonl'}")
        if trainer.skips.count:
            print(trainer.skips.summary())
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_davis, format_table, write_tables

    result = evaluate_davis(args.davis, args.results, split=args.split, sequences=args.sequences,
                            exclude_void=args.exclude_void)
    paths = write_tables(result, args.results, args.split)
    print(format_table(result))
    print("wrote " + " and ".join(str(p) for p in paths))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ino", description="INO: In-N-Out generative learning for video segmentation")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="versions, devices and presets")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("config", help="print a resolved configuration as JSON")
    add_config_args(p, "charades")
    p.set_defaults(func=cmd_config)
    p = sub.add_parser("demo", help="tour: model, masks and the four losses on real bundled frames")
    add_config_args(p, "tiny")
    p.add_argument("--data", default="data", help="folder with the bundled data (default data)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("propagate", help="segment DAVIS, YouTube-VOS or your own video by label propagation")
    add_config_args(p, "charades")
    p.add_argument("--checkpoint", required=True, help="checkpoint file (ours, released INO, DINO, timm) or 'random'")
    p.add_argument("--network", default=None, help="network in the checkpoint: student or teacher (default: the format's)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a checkpoint holding Python objects other than tensors and the released code's args "
                        "to be fully unpickled (that can run code: only for files you trust)")
    p.add_argument("--davis", help="DAVIS root (JPEGImages/, Annotations/, ImageSets/)")
    p.add_argument("--ytvos", help="YouTube-VOS root (<split>/JPEGImages, Annotations, meta.json)")
    p.add_argument("--video", help="a video file (decord) to segment from --first-mask")
    p.add_argument("--first-mask", help="mask of the video's first frame: indexed PNG, greyscale or black-and-white, "
                                        "RGBA drawing, or flat colours")
    p.add_argument("--split", default=None, help="DAVIS split (val) or YouTube-VOS split (valid)")
    p.add_argument("--sequences", nargs="+", default=None, help="only these sequences")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="skip sequences already written")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_propagate)

    p = sub.add_parser("train", help="train INO on a folder or list of videos (torchrun --nproc_per_node N for DDP)")
    add_config_args(p, "tiny")
    p.add_argument("--data", nargs="+", required=True, help="video folder(s), video files or list files (Charades csv)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, log.jsonl, tb/")
    p.add_argument("--device", default="cpu", help="cpu or cuda (each torchrun process takes GPU LOCAL_RANK)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint.pth exists")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in all (a checkpoint is written)")
    p.add_argument("--log-every", type=int, default=10, help="steps between log lines")
    p.add_argument("--save-every", type=int, default=500, help="steps between checkpoints within an epoch")
    p.add_argument("--keep-every", type=int, default=5, help="keep checkpoint_eNNNN.pth every N epochs (0: never)")
    p.add_argument("--no-tensorboard", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="DAVIS J&F of a results folder (the official semi-supervised protocol)")
    p.add_argument("--davis", required=True, help="DAVIS root with the ground truth")
    p.add_argument("--results", required=True, help="folder with <sequence>/<frame>.png id maps")
    p.add_argument("--split", default="val")
    p.add_argument("--sequences", nargs="+", default=None, help="only these sequences")
    p.add_argument("--exclude-void", action="store_true", help="leave void (255) pixels out (official: scored as background)")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"ino {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"ino {args.command}: stopped: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
