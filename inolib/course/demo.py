"""``ino demo``: INO end to end on the bundled data, and ``ino demo --tour``: one forward pass explained.

:func:`run_demo` (``make demo``) trains the tiny model for a couple of minutes (so the loop is seen working),
then segments the DAVIS sample by label propagation with the shipped checkpoint (``data/checkpoints/ino_tiny.pth``),
with a random initialisation of the same network and with raw pixels, scores the three with the official J&F
protocol and writes a self-contained ``runs/demo/report.html`` (see :mod:`inolib.course.demo_report`).

:func:`run_tour` builds the student and the EMA teacher, reads two real clips from ``data/`` at 8 fps (a Kinetics
video with decord and a DAVIS JPEG sequence), makes per-frame global and local crops, masks the student's global
crops, runs one forward pass of both networks and prints the four losses with the shapes that produced them.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from .. import config as C
from ..augment import MultiCrop
from ..data import read_clip, read_frame_folder
from ..losses import INOLoss
from ..masking import make_mask
from ..model import build_network, count_parameters
from ..teacher import make_teacher

DEFAULT_VIDEO = Path("videos/kinetics400_mmaction2/demo_arm_wrestling.mp4")
DEFAULT_FRAMES = Path("davis_sample/DAVIS/JPEGImages/480p/blackswan")


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def load_demo_clips(data_dir: Path, num_frames: int, fps: float) -> torch.Tensor:
    """Two real clips from ``data_dir``: uint8 (2, T, 3, H, W), both resized to the smaller frame size."""
    video = read_clip(data_dir / DEFAULT_VIDEO, num_frames=num_frames, fps=fps, start=8)
    # DAVIS frames are 24 fps: every 3rd frame is 8 fps.
    davis = read_frame_folder(data_dir / DEFAULT_FRAMES, num_frames=3 * num_frames)[::3]
    H, W = min(video.shape[-2], davis.shape[-2]), min(video.shape[-1], davis.shape[-1])
    resize = lambda x: torch.nn.functional.interpolate(x.float(), size=(H, W), mode="bilinear",
                                                       antialias=True).round().clamp(0, 255).to(torch.uint8)
    return torch.stack([resize(video), resize(davis)])


def run_tour(cfg: C.INOConfig, data_dir: str | Path = "data", device: str = "cpu", seed: int = 0,
             echo=print) -> dict[str, float]:
    """Run the tour and return the loss values. ``echo`` receives each printed line."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    data_dir = Path(data_dir)
    dev = torch.device(device)
    m = cfg.model
    echo(f"INO tour, preset {cfg.name!r}, device {dev}")
    student = build_network(m).to(dev)
    teacher = make_teacher(student, m).to(dev)
    echo(f"student: ViT patch {m.patch_size}, dim {m.embed_dim}, {m.depth} blocks, {m.num_heads} heads; "
         f"head {m.head_num_layers} layers -> {m.head_out_dim}; {count_parameters(student) / 1e6:.2f} M parameters")
    echo("teacher: same architecture, weights copied from the student, no gradients (EMA, Sec. 3.1)")

    clips = load_demo_clips(data_dir, cfg.crops.clip_len, cfg.crops.fps)
    echo(f"clips: 2 real clips from {data_dir}/ ({DEFAULT_VIDEO.name} and DAVIS blackswan), "
         f"{cfg.crops.clip_len} frames at {cfg.crops.fps:g} fps, uint8 {_shape(clips)}")
    crops = MultiCrop(cfg.crops)
    pairs = [crops(c) for c in clips]
    global_crops = torch.stack([g for g, _ in pairs]).to(dev)
    local_crops = torch.stack([l for _, l in pairs]).to(dev)
    echo(f"global crops {_shape(global_crops)}, local crops {_shape(local_crops)} (per-frame, App. A.1)")

    grid = (cfg.crops.global_size // m.patch_size,) * 2
    gen = torch.Generator().manual_seed(seed)
    mask_cfg = C.MaskConfig(mode=cfg.masking.mode, prob=1.0, ratio=cfg.masking.ratio)  # always mask here
    mask = make_mask(mask_cfg, global_crops.shape[0], global_crops.shape[1], grid, gen)
    echo(f"mask {_shape(mask)} ({cfg.masking.mode}): {int(mask[0, 0].sum())} of {grid[0] * grid[1]} patches "
         f"masked in every frame (in training a step is masked with probability {cfg.masking.prob})")

    with torch.no_grad():
        s = student(global_crops, local_crops, mask)
        t = teacher(global_crops, None, mask, apply_mask=False)
    for name, out in (("student", s), ("teacher", t)):
        echo(f"{name} logits: " + ", ".join(f"{k} {_shape(v)}" for k, v in out.items() if v.is_floating_point()))

    criterion = INOLoss(cfg.loss, m.head_out_dim).to(dev)
    with torch.no_grad():
        losses = criterion(s, t)
    rows = [
        ("out g2g", "g2g", "Eq. 1", f"global class logits {_shape(s['cls_global'])}, pairs (n, L/2+n)"),
        ("out l2g", "l2g", "Eq. 2", f"local class logits {_shape(s['cls_local'])} -> teacher globals"),
        ("in mim", "mim", "Eq. 3", f"masked patch logits {_shape(s['patch'])}"),
        ("in aff", "aff", "Eq. 4-5", f"affinities of consecutive frames, {s['patch'].shape[2]} x {s['patch'].shape[2]}"),
    ]
    echo("")
    echo(f"{'loss':<9} {'value':>8}  {'paper':<8} inputs")
    for label, key, eq, what in rows:
        echo(f"{label:<9} {losses[key].item():8.4f}  {eq:<8} {what}")
    echo(f"{'L_INO':<9} {losses['loss'].item():8.4f}  {'Eq. 6':<8} out weighting {cfg.loss.out_weighting!r}: "
         f"out = {losses['out'].item():.4f}, + mim + aff")
    echo(f"done in {time.perf_counter() - t0:.1f} s")
    return {k: v.item() for k, v in losses.items()}


# ----------------------------------------------------------------------------------------------------
# The end-to-end demo

SHIPPED = Path("checkpoints/ino_tiny.pth")  # under the data folder
# The demo propagates at a short side of 192, not the tiny preset's 240: three propagations of the DAVIS sample
# take about 36 s each at 192 and 74 s at 240 on 2 CPU cores, and the whole demo must stay under 5 minutes. The
# shipped model gains about as much at both sizes (+0.098 and +0.104 J&F-Mean over a random initialisation;
# BENCHMARKS.md, "A model that learned"); `ino demo --short-side 240` shows the default's numbers.
DEMO_SHORT_SIDE = 192
DAVIS_SAMPLE = Path("davis_sample/DAVIS")


def run_demo(data_dir: str | Path = "data", out_dir: str | Path = "runs/demo", checkpoint: str | Path | None = None,
             train_seconds: float = 120.0, device: str = "cpu", seed: int = 0,
             short_side: int | None = DEMO_SHORT_SIDE,
             sequences: list[str] | None = None, echo=print) -> dict:
    """Train briefly, segment the DAVIS sample with three feature extractors, score them, write the report.

    Args:
        data_dir: the bundled data (``videos/``, ``davis_sample/DAVIS``, ``checkpoints/ino_tiny.pth``).
        out_dir: receives ``live/`` (the short run), ``results/<method>/<seq>/*.png`` and ``report.html``.
        checkpoint: the trained model (default: the shipped ``data/checkpoints/ino_tiny.pth``).
        train_seconds: time budget of the live training (0 skips it).
        short_side: propagation short side (default :data:`DEMO_SHORT_SIDE`; None: the checkpoint's own, the tiny
            preset's 240).
        sequences: DAVIS sequences to use (default: all of the sample).
    Returns ``{"jf": {method: global J&F row}, "report": Path}``.
    """
    from ..atomic import is_inside
    from ..checkpoint import backbone_from, build_from_state, config_from, read_checkpoint
    from ..weights import resolve
    from ..vos.metrics import evaluate_davis
    from ..model import build_backbone
    from ..vos.baselines import PixelFeatures
    from .demo_report import write_demo_report
    from ..vos.segment import segment_davis
    from ..run.trainer import Trainer

    t0 = time.perf_counter()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    checkpoint = resolve(checkpoint) if checkpoint is not None else data_dir / SHIPPED  # a file or a name
    davis = data_dir / DAVIS_SAMPLE
    for need in (checkpoint, davis, data_dir / "videos"):
        if not need.exists():
            raise FileNotFoundError(f"demo: {need} not found (run from the repository root, or pass --data)")
    if is_inside(out_dir, data_dir):
        raise ValueError(f"--out {out_dir}: inside the --data folder {data_dir}, the demo's input; choose a folder "
                         "outside it (default runs/demo)")
    obj = read_checkpoint(checkpoint)  # read once: its config now, its backbone after the live run
    try:
        shipped_cfg, label = config_from(obj, checkpoint), "shipped"
    except ValueError:  # released INO, DINO, DINOv2: no inolib config; the live run trains the tiny preset, and
        # propagation takes the paper-scale (charades) settings at the demo's short side
        shipped_cfg, label = dataclasses.replace(C.tiny(), propagation=C.charades().propagation), checkpoint.stem
    out_dir.mkdir(parents=True, exist_ok=True)

    live_log = None
    if train_seconds > 0:
        echo(f"1/4 training the {shipped_cfg.name!r} model from scratch for {train_seconds:.0f} s on the bundled "
             "videos (the shipped model trained for much longer, with synthetic videos too: "
             f"{checkpoint.parent / 'README.md'})")
        trainer = Trainer(shipped_cfg, [data_dir / "videos"], out_dir / "live", device=device, resume=False,
                          log_every=5, tensorboard=False, max_seconds=train_seconds)
        last = trainer.fit()
        live_log = out_dir / "live" / "log.jsonl"
        echo(f"    {trainer.step} steps, loss {last.get('loss', float('nan')):.3f}")

    torch.manual_seed(seed)
    shipped, _ = backbone_from(obj, checkpoint, key="student" if label == "shipped" else None, device=device)
    del obj
    random_init = (build_backbone(shipped_cfg.model) if label == "shipped"  # the same ViT, untrained
                   else build_from_state(shipped.state_dict(), checkpoint))
    patch = shipped.patch_embed.patch_size[0]
    prop = shipped_cfg.propagation if short_side is None else C.override(
        shipped_cfg, {"propagation.short_side": short_side}).propagation
    if label != "shipped":  # a ViT shallower than the paper's: its last block
        prop = dataclasses.replace(prop, feature_block=min(prop.feature_block, len(shipped.blocks)))
    networks = {label: shipped, "random init": random_init.to(device).eval(),
                "raw pixels": PixelFeatures(patch).to(device)}
    echo(f"2/4 label propagation on the DAVIS sample (short side {prop.short_side}, block {prop.feature_block}, "
         f"k={prop.topk}, {prop.num_context} context frames, radius {prop.radius})")
    folders = {}
    for name, net in networks.items():
        folders[name] = out_dir / "results" / name.replace(" ", "_")
        segment_davis(net, davis, folders[name], prop, sequences=sequences, device=device, progress=True)
    echo("3/4 J&F (the official semi-supervised protocol)")
    jf = {name: evaluate_davis(davis, folder, sequences=sequences, progress=False)
          for name, folder in folders.items()}
    echo(f"    {'features':<12} {'J&F-Mean':>8} {'J-Mean':>7} {'F-Mean':>7}")
    for name, r in jf.items():
        g = r["global"]
        echo(f"    {name:<12} {g['J&F-Mean']:8.3f} {g['J-Mean']:7.3f} {g['F-Mean']:7.3f}")
    echo("4/4 writing the report")
    report = write_demo_report(out_dir / "report.html", jf=jf, folders=folders, davis_root=davis,
                               networks=networks, propagation=prop, live_log=live_log,
                               shipped_log=checkpoint.parent / "log.jsonl" if label == "shipped" else None,
                               device=device, curve_short_side=shipped_cfg.propagation.short_side)
    echo(f"report: {report}  ({time.perf_counter() - t0:.0f} s in all)")
    return {"jf": {k: v["global"] for k, v in jf.items()}, "report": report}
