"""The ``ino`` command line (also ``python -m inolib``).

    ino info                       versions, devices, presets
    ino config --preset tiny [--loss.teacher_temp 0.02 ...]    print a resolved config as JSON
    ino demo [--train-seconds 120] [--device cpu] [--data data]  train, segment, score, report (runs/demo)
    ino demo --tour [--preset tiny]                               one forward pass on bundled real frames
    ino propagate --checkpoint CKPT --davis ROOT --out DIR      label propagation (also --ytvos, --video)
    ino evaluate --davis ROOT --results DIR                     DAVIS J&F tables
    ino train --data VIDEOS --out RUN [--preset tiny]           INO training (torchrun for several GPUs)
    ino train --data Charades_v1_train.csv [--video-root Charades_v1_480] --out RUN --preset charades

Every config field is a flag ``--<section>.<field>``; the flags are generated from the dataclasses in
:mod:`inolib.config`, so the command line never drifts from the code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from dataclasses import fields
from importlib import metadata

from . import config as C


def add_config_args(parser: argparse.ArgumentParser, default_preset: str | None,
                    preset_help: str | None = None, sections: tuple[str, ...] | None = None,
                    skip: tuple[str, ...] = ()) -> None:
    """Add ``--preset`` and one ``--section.field`` flag per leaf field of :class:`INOConfig` (only the fields of
    ``sections``, e.g. ``("model", "propagation")``, when given, and none whose name starts with one of ``skip``:
    a command shows the flags it uses)."""
    known = {f.name for f in fields(C.INOConfig)} - {"name"}
    if sections is not None and not set(sections) <= known:
        raise ValueError(f"sections must be among {sorted(known)}, got {sections!r}")
    parser.add_argument("--preset", default=default_preset, choices=sorted(C.PRESETS),
                        help=preset_help or f"starting configuration (default {default_preset})")
    group = parser.add_argument_group("config overrides (defaults shown are the charades preset's)")
    for name, tp, default in C.iter_fields():
        if name == "name" or (sections is not None and name.split(".")[0] not in sections) \
                or name.startswith(tuple(skip)):
            continue
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        tname = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
        group.add_argument(f"--{name}", dest=f"cfg:{name}", default=None, metavar=tname.upper(),
                           help=f"default {shown}")


def config_from_args(args: argparse.Namespace, base: C.INOConfig | None = None) -> C.INOConfig:
    """``base`` (default: the preset named by ``--preset``, charades if none) with every given ``--section.field``
    applied."""
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:") and v is not None}
    return C.override(base if base is not None else C.get_preset(args.preset or "charades"), overrides)


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
    for dist in ("torch", "torchvision", "timm", "numpy", "matplotlib", "ipywidgets", "jupyterlab"):
        print(f"  {dist:<12} {_version(dist)}")
    from .course.notebook import decoder_version

    print(f"  {'decoder':<12} {decoder_version() or 'none (pip install decord2)'}")
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
    from .course.demo import run_demo, run_tour

    _check_device(args.device)  # before any work
    if not (math.isfinite(args.train_seconds) and 0 <= args.train_seconds <= 86400):
        raise ValueError(f"--train-seconds {args.train_seconds}: must be a number of seconds in 0..86400 (0: skip)")
    given = sorted(k[4:] for k, v in vars(args).items() if k.startswith("cfg:") and v is not None)
    if args.tour:
        args.preset = args.preset or "tiny"
        run_tour(C.validate(config_from_args(args)), data_dir=args.data, device=args.device, seed=args.seed)
        return 0
    if given or args.preset is not None:
        flag = f"--{given[0]}" if given else "--preset"
        raise ValueError(f"{flag}: the demo segments with the shipped model's own settings and reports them; "
                         "--preset and the --section.field flags apply to --tour only")
    run_demo(data_dir=args.data, out_dir=args.out, checkpoint=args.checkpoint, train_seconds=args.train_seconds,
             device=args.device, seed=args.seed, **({} if args.short_side is None else {"short_side": args.short_side}))
    return 0


def _backbone(args: argparse.Namespace, cfg: C.INOConfig, checkpoint=None, say=print, device=None):
    """The backbone to segment with: the checkpoint already read (:func:`inolib.checkpoint.read_checkpoint`), or a
    random-init model of the preset (``--checkpoint random``)."""
    import torch

    from .checkpoint import backbone_from
    from .model import build_backbone

    if args.checkpoint == "random":
        torch.manual_seed(args.seed)
        say(f"backbone: random initialisation of the {cfg.name!r} preset (a baseline, not a trained model)")
        return build_backbone(cfg.model).to(device or args.device).eval()
    vit, rep = backbone_from(checkpoint, args.checkpoint, key=args.network, device=device or args.device)
    say(f"backbone: {args.checkpoint} ({rep['format']}, network {rep['network']}): ViT-{rep['embed_dim']}/"
          f"{rep['patch_size']}, {rep['depth']} blocks, position table {rep['pos_table']}")
    return vit


def _check_device(device: str) -> None:
    """ValueError naming ``--device`` for a string torch does not know or a device this machine does not have."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"--device {device!r}: not a torch device (cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a build without CUDA"
            raise ValueError(f"--device {device}: no CUDA GPU is available (torch {torch.__version__}, {build}); "
                             f"use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {device}: MPS (Apple GPU) is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise ValueError(f"--device {device}: inolib runs on cpu, cuda or mps")


def _refuse_inside(path, protected: list, flag: str, what: str, kind: str = "ground truth or frames") -> None:
    """ValueError naming ``flag`` when ``path`` is one of the ``protected`` input folders or inside one."""
    from .atomic import is_inside

    for folder in protected:
        if is_inside(path, folder):
            raise ValueError(f"{flag} {path}: {what} would go inside {folder}, an input folder ({kind}) that must "
                             f"not be written into; choose a folder outside it")


def _output_folder(path, flag: str) -> None:
    """Create ``path`` and write a probe file there, before any computation: ValueError naming ``flag`` when it is
    a file, under a file, or not writable."""
    import os
    import tempfile

    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ino-write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None


def _path_free(path, folder: bool, flag: str) -> None:
    """ValueError naming ``flag`` when the output ``path``, needed as a folder (``folder``) or a file, is taken by
    the other kind."""
    if path.exists() and path.is_dir() != folder:
        raise ValueError(f"{flag}: {path} exists and is a {'folder' if path.is_dir() else 'file'}; it is needed "
                         f"as a {'folder' if folder else 'file'}")


def cmd_propagate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .checkpoint import FORMAT, config_from, read_checkpoint
    from .data.user_video import VideoSequence
    from .data.vos_datasets import plain_name
    from .vos.segment import check_propagation_config, segment_davis, segment_video, segment_ytvos
    from .weights import resolve

    sources = [x for x in (args.davis, args.ytvos, args.video) if x]
    if len(sources) != 1:
        raise ValueError("give exactly one of --davis ROOT, --ytvos ROOT or --video FILE")
    for name in args.sequences or []:
        plain_name(name, "--sequences")  # a sequence name is a folder name, never a path out of --out
    checkpoint, base = None, None
    if args.checkpoint != "random":  # the file is read once: its weights, and an inolib file's own settings
        args.checkpoint = str(resolve(args.checkpoint))  # a weights name: its cached file, fetched once
        checkpoint = read_checkpoint(args.checkpoint, trust=args.trust_checkpoint)
        if args.preset is None and isinstance(checkpoint, dict) and checkpoint.get("format") == FORMAT:
            try:
                base = config_from(checkpoint, args.checkpoint)
            except ValueError:
                base = None  # an unparsable config: the backbone load warns about it, the weights still load
    cfg = config_from_args(args, base)
    if args.checkpoint == "random":  # the architecture is built from the --model.* flags: checked (bounded) first
        bad = [line for line in C.problems(cfg) if line.startswith("--model.")]
        if bad:
            raise ValueError("; ".join(bad))
    p = cfg.propagation
    check_propagation_config(p)  # the --propagation.* values, before anything is loaded
    _check_device(args.device)
    out = Path(args.out)
    # inputs and outputs are checked before any computation
    if args.davis:
        from .data.vos_datasets import list_davis_sequences

        root = Path(args.davis)
        # the dataset folder is the user's input: nothing is written into it (its ground truth least of all)
        _refuse_inside(out, [root], "--out", "the masks", "the dataset given to --davis")
        names = args.sequences or list_davis_sequences(root, args.split or "val")
        targets = [out / n for n in names]
    elif args.ytvos:
        from .data.vos_datasets import list_ytvos_videos

        root, split = Path(args.ytvos), args.split or "valid"
        # every split folder of the root (valid, train, test) holds ground truth
        splits = {split} | {d.name for d in (root.iterdir() if root.is_dir() else [])
                            if (d / "JPEGImages").is_dir() or (d / "meta.json").is_file()}
        protected = [root / s / k for s in sorted(splits) for k in ("Annotations", "JPEGImages")]
        _refuse_inside(out / "Annotations", protected, "--out", "the masks (OUT/Annotations/<video>)")
        _refuse_inside(out, [root], "--out", "the masks", "the dataset given to --ytvos")
        names = args.sequences or list_ytvos_videos(root, split)
        targets = [out / "Annotations" / n for n in names]
    else:
        if not args.first_mask:
            raise ValueError("--video needs --first-mask PNG (the mask of frame 0)")
        seq = VideoSequence(args.video, args.first_mask)
        targets = [out / seq.name]
        gif_path = out / f"{seq.name}_overlay.gif"
        _path_free(gif_path, False, "--out")
        mask = Path(args.first_mask)
        if mask.resolve() == gif_path.resolve():
            raise ValueError(f"--out {out}: the overlay {gif_path.name} would be written over the --first-mask "
                             f"{mask}; choose another folder")
        if mask.parent.resolve() == targets[0].resolve() and mask.stem.isdigit():
            raise ValueError(f"--out {out}: the masks would be written over the --first-mask {mask}; choose another "
                             f"folder")
    _output_folder(out, "--out")
    for target in targets:
        _path_free(target, True, "--out")
    from .distributed import all_reduce_mean, cleanup, init_distributed

    # under torchrun each process segments its share of the sequences (balanced by frames), on GPU LOCAL_RANK or
    # with its share of the CPU cores; a plain process does them all
    info = init_distributed(args.device)
    try:
        if info.distributed and info.device.type == "cpu":
            local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
            import torch

            torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // local))
        say = print if info.is_main else (lambda *a, **k: None)
        vit = _backbone(args, cfg, checkpoint, say, info.device)
        del checkpoint  # the backbone holds the weights now
        say(f"propagation: block {p.feature_block}, k={p.topk}, {p.num_context} context frames, radius {p.radius}, "
            f"short side {p.short_side}" + (f"; {info.world_size} processes" if info.distributed else ""))
        share = dict(device=info.device, resume=args.resume, rank=info.rank, world_size=info.world_size)
        if args.davis:
            done = segment_davis(vit, args.davis, out, p, split=args.split or "val", sequences=names, **share)
            total = round(all_reduce_mean({"n": float(len(done))}, info.device)["n"] * info.world_size)
            say(f"wrote {total} sequences to {out}")
        elif args.ytvos:
            segment_ytvos(vit, args.ytvos, out, p, split=split, videos=names, **share)
            say(f"wrote the YouTube-VOS layout under {out / 'Annotations'}")
        elif info.is_main:  # one video: one process does it
            count, gif = segment_video(vit, seq, out, p, device=info.device)
            print(f"wrote {count} masks to {targets[0]} and an overlay to {gif}")
    finally:
        cleanup()
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .distributed import cleanup
    from .run.lock import RunFolderBusy
    from .run.trainer import TrainingInterrupted

    try:
        return _train(args)
    except RunFolderBusy as e:
        print(f"ino train: error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"ino train: {e}", file=sys.stderr)
        return 128 + e.signum  # the shell's convention for a run ended by a signal (130 Ctrl-C, 143 SIGTERM)
    finally:
        cleanup()  # leave the process group cleanly, also when a NaN stops the run


def _train(args: argparse.Namespace) -> int:
    from .run.trainer import Trainer

    # every flag is checked before any work (no folder made, no video indexed, no model built): the config and the
    # run's numbers by the Trainer, the rest here
    cfg = config_from_args(args)
    if args.init is not None:
        cfg = C.override(cfg, {"model.init": args.init})
    _check_device(args.device)
    trainer = Trainer(cfg, args.data, args.out, device=args.device, resume=not args.no_resume,
                      log_every=args.log_every, save_every=args.save_every, keep_every=args.keep_every,
                      tensorboard=not args.no_tensorboard, max_steps=args.max_steps, eval_davis=args.eval_davis,
                      eval_every=args.eval_every, video_root=args.video_root)
    if trainer.dist.is_main:
        print(f"training {cfg.name!r} on {len(trainer.dataset.videos)} videos: {trainer.steps_per_epoch} steps per "
              f"epoch x {trainer.total_steps // trainer.steps_per_epoch} epochs, {trainer.dist.world_size} process(es) on {trainer.device}"
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
        if trainer.skipped_steps:
            print(f"{trainer.skipped_steps} steps had no loss that depends on the student (unmasked steps with "
                  "loss.g2g and loss.l2g off) and were skipped")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from . import weights

    if args.action == "list":
        rows = weights.table()
        print(f"cache: {weights.cache_dir()} (INOLIB_CACHE); mirror: "
              f"{os.environ.get('INOLIB_WEIGHTS_MIRROR') or 'none'} (INOLIB_WEIGHTS_MIRROR)")
        for r in rows:
            print(f"{r['name']:<20} {r['what']}\n{'':<20} source {r['source']}; {r['size']}; licence {r['licence']}; "
                  f"{'cached ' + r['cached'] if r['cached'] else 'not cached'}")
        return 0
    if not args.name:
        raise ValueError("ino weights fetch NAME: give a name (ino weights list shows them)")
    print(f"{args.name}: {weights.fetch(args.name)}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .vos.metrics import evaluate_davis, format_table, write_tables

    results, root = Path(args.results), Path(args.davis)
    _refuse_inside(results, [root / "Annotations", root / "JPEGImages"], "--results", "the results and score tables")
    if not results.is_dir():
        raise FileNotFoundError(f"--results {results}: no such folder (it should hold <sequence>/<frame>.png)")
    # the score tables are written into --results: checked before the (long) evaluation, not after it
    _output_folder(results, "--results")
    for name in (f"global_results-{args.split}.csv", f"per-sequence_results-{args.split}.csv"):
        _path_free(results / name, False, "--results")
    result = evaluate_davis(args.davis, args.results, split=args.split, sequences=args.sequences,
                            exclude_void=args.exclude_void)
    paths = write_tables(result, args.results, args.split)
    print(format_table(result))
    print("wrote " + " and ".join(str(p) for p in paths))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ino", description="INO: In-N-Out generative learning for video segmentation")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="versions, devices and presets")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("config", help="print a resolved configuration as JSON")
    add_config_args(p, "charades")
    p.set_defaults(func=cmd_config)
    p = sub.add_parser("demo", help="train briefly, segment the DAVIS sample with the shipped model, random init "
                                    "and raw pixels, write runs/demo/report.html (--tour: one forward pass explained)")
    add_config_args(p, None, "--tour only: its starting configuration (default tiny); the demo itself uses the "
                             "shipped model's settings", sections=("model", "crops", "masking", "loss"))
    p.add_argument("--tour", action="store_true", help="print the model, the masks and the four losses of one "
                                                       "forward pass on real frames instead (uses --preset and the "
                                                       "--model/crops/masking/loss.* flags)")
    p.add_argument("--data", default="data", help="folder with the bundled data (default data)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--checkpoint", default=None, help="trained model: a file, or a name of `ino weights list` such "
                   "as ino-vits8-charades (default DATA/checkpoints/ino_tiny.pth)")
    p.add_argument("--train-seconds", type=float, default=120.0, help="live training time budget (0: skip)")
    p.add_argument("--short-side", type=int, default=None, help="propagation short side of the demo (default 192, "
                                                                "to stay under 5 minutes; ino propagate uses 240)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("propagate", help="segment DAVIS, YouTube-VOS or your own video by label propagation")
    add_config_args(p, None, "starting configuration (default: the settings an inolib checkpoint was trained "
                             "with, e.g. the tiny preset's for data/checkpoints/ino_tiny.pth; otherwise charades)",
                    sections=("model", "propagation"),  # model.*: the architecture of --checkpoint random
                    skip=("model.head_", "model.norm_last_layer", "model.drop_path_rate", "model.init"))  # training
    p.add_argument("--checkpoint", required=True, help="checkpoint file (ours, released INO, DINO, DINOv2, timm), a "
                                                       "weights name (ino weights list; fetched once) or 'random'")
    p.add_argument("--network", default=None, help="network in the checkpoint: student or teacher (default: the format's)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a checkpoint holding Python objects other than tensors and the released code's args "
                        "to be fully unpickled (that can run code: only for files you trust)")
    p.add_argument("--davis", help="DAVIS root (JPEGImages/, Annotations/, ImageSets/)")
    p.add_argument("--ytvos", help="YouTube-VOS root (<split>/JPEGImages, Annotations, meta.json)")
    p.add_argument("--video", help="a video file (decord) to segment from --first-mask")
    p.add_argument("--first-mask", help="mask of the video's first frame: indexed PNG, greyscale ids (1..127) or "
                                        "black-and-white, RGBA drawing, or flat colours")
    p.add_argument("--split", default=None, help="DAVIS split (val) or YouTube-VOS split (valid)")
    p.add_argument("--sequences", nargs="+", default=None, help="only these sequences")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="skip sequences already written")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process under torchrun on a CPU (default: the cores / processes)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_propagate)

    p = sub.add_parser("train", help="train INO on a folder or list of videos (torchrun --nproc_per_node N for DDP)")
    add_config_args(p, "tiny")
    p.add_argument("--data", nargs="+", required=True, help="video folder(s), video files, list files (Charades csv), or synthetic:N "
                        "(N seeded synthetic videos, written into OUT/synthetic; see --synthetic.*)")
    p.add_argument("--video-root", default=None, metavar="DIR",
                   help="where the videos of a --data list file are: the <id>.mp4 files of Charades' annotation csv "
                        "(default: Charades_v1_480/ next to Charades_v1_train.csv, as downloaded), or the folder "
                        "relative paths in a list start from (default: the list's folder)")
    p.add_argument("--init", default=None, metavar="NAME|PATH",
                   help="start the student and teacher backbones from these weights (a file or a weights name, e.g. "
                        "dino-vits8; heads fresh); the same as --model.init, recorded in the run's config")
    p.add_argument("--out", required=True, help="run folder: checkpoints, log.jsonl, tb/")
    p.add_argument("--device", default="cpu", help="cpu or cuda (each torchrun process takes GPU LOCAL_RANK)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint.pth exists")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in all (a checkpoint is written)")
    p.add_argument("--log-every", type=int, default=10, help="steps between log lines")
    p.add_argument("--save-every", type=int, default=500, help="steps between checkpoints within an epoch")
    p.add_argument("--keep-every", type=int, default=5, help="keep checkpoint_eNNNN.pth every N epochs (0: never)")
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--eval-davis", default=None, metavar="ROOT",
                   help="a DAVIS folder (e.g. data/davis_sample/DAVIS): J&F-Mean of the student and the teacher on "
                        "its val sequences at step 0, every --eval-every steps and at the end (log.jsonl, "
                        "TensorBoard eval/, the progress bar); uses the --propagation.* settings")
    p.add_argument("--eval-every", type=int, default=None,
                   help="steps between J&F evaluations with --eval-davis (default 250: a learning curve of ~10 "
                        "points on the tiny preset's 2,250 steps)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("weights", help="named pretrained weights (released INO, DINO, DINOv2): list them, fetch one")
    p.add_argument("action", choices=("list", "fetch"), help="list: names, sources, licences, cache; fetch NAME")
    p.add_argument("name", nargs="?", default=None, help="the name to fetch (see ino weights list)")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("evaluate", help="DAVIS J&F of a results folder (the official semi-supervised protocol)")
    p.add_argument("--davis", required=True, help="DAVIS root with the ground truth")
    p.add_argument("--results", required=True, help="folder with <sequence>/<frame>.png id maps")
    p.add_argument("--split", default="val")
    p.add_argument("--sequences", nargs="+", default=None, help="only these sequences")
    p.add_argument("--exclude-void", action="store_true", help="leave void (255) pixels out (official: scored as background)")
    p.set_defaults(func=cmd_evaluate)
    for p in sub.choices.values():  # --debug also after the command (ino propagate ... --debug)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


DEBUG_HELP = "show the full traceback of an error instead of one line"


def _message(e: BaseException) -> str:
    """An error on one line, with the path an OSError is about."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}" + (f" (with {e.filename2})" if e.filename2 is not None else "")
    else:
        text = str(e) or type(e).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Run one command. An ``OSError``, ``ValueError`` or ``ImportError`` is one line on stderr and exit code 2
    (``--debug``: the traceback instead); a ``FloatingPointError`` (a NaN stopped training) exits with 3."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, ImportError) as e:
        if args.debug:
            raise
        print(f"ino {args.command}: error: {_message(e)}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        if args.debug:
            raise
        print(f"ino {args.command}: stopped: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
