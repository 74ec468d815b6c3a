#!/usr/bin/env python
"""One GPU check (issue #13): every GPU figure of the project in one prepared run of under 8 minutes, side by side
with transcriptions of the released code.

    make gpu-check                                     # one CUDA GPU; writes outputs/gpu_check_results.md
    python benchmarks/gpu_check.py --out results.md    # the same
    python benchmarks/gpu_check.py --stages propagation,davis     # some stages only
    python benchmarks/gpu_check.py --dry               # the same code paths on a CPU with tiny shapes (make test)

Stages (each in its own forked process with a time budget; one that fails or overruns is reported, with its
traceback, and the run goes on; the whole run stops starting stages at ``--deadline`` seconds):

    env          the machine, torch / CUDA / cuDNN versions, the packages the later stages need
    train_step   ViT-S/8 at the paper's shapes (4 clips, L = 4, 224 px globals, 8 locals of 64 px, K = 4096, a
                 masked step): clips/s, peak memory and where the time goes (forward, backward, optimizer, EMA)
                 of inolib's ``train_step`` in bf16 and fp16 and of the released step (inolib/released/step.py)
    propagation  label propagation at 480p (60x106 grid) and at the 1152-wide "shooting" size: inolib.vos.propagation
                 against the released kernel (tests/test_propagate.py), identical labels checked
    davis        ``ino propagate`` + ``ino evaluate`` on the bundled DAVIS sample with a random-init ViT-S/8 (short side
                 480, --propagation.batch 4, --propagation.amp: bf16 features), extrapolated to DAVIS-2017 val (30
                 sequences, 1,999 frames): goal ``ino propagate`` <= 60 s on one GPU (about 33 frames/s), evaluate on
                 a row of its own; then ``ino propagate`` on blackswan stretched to 480x1152 ("shooting"'s size), its
                 peak memory (torch.cuda.max_memory_allocated) within 16 GiB
    davis2       ``torchrun --standalone --nproc_per_node 2 -m inolib propagate`` on the DAVIS sample against the same
                 command with one process: seconds, speed-up, every mask PNG byte for byte; needs 2 GPUs (one
                 skipped row on fewer; the dry run uses 2 CPU processes with gloo)
    train        ``torchrun --standalone --nproc_per_node 1 -m inolib train`` (tiny preset) for about 2 minutes,
                 SIGTERM, the same command again (resume); its losses against an uninterrupted run of the same steps
    lesson08, lesson10   the lessons in full mode (INOLIB_SMOKE=0) with nbclient, each timed
    compile      torch.compile of the ViT blocks (student and teacher) in the bf16 training step; gets the time
                 left before the deadline (off with --no-compile)

Prints one Markdown table (stage, figure, ours, released, ratio, goal, met) and writes it, with the machine, the
versions, the date, per-stage times, details (profiles) and tracebacks, to ``--out``, ready to paste into
BENCHMARKS.md. Exit code 1 when a stage failed or overran, else 0 (goals not met are figures, not failures).
"""

from __future__ import annotations

import time

_T_START = time.monotonic()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "benchmarks"):  # inolib without an install (a GPU machine has no registry), gpu_runner
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

# Everything the stages use is imported once here, before the stages are forked: a forked stage starts at once.
# No CUDA call happens in this process (a forked child could not use CUDA otherwise).
import torch  # noqa: E402

from inolib import config as C  # noqa: E402
from inolib.losses import INOLoss  # noqa: E402
from inolib.masking import random_mask  # noqa: E402
from inolib.model import build_backbone, build_network  # noqa: E402
from inolib.vos.propagation import FrameSize, labels_to_grid, propagate, window_mask  # noqa: E402
from inolib.schedules import param_groups  # noqa: E402
from inolib.vos.segment import extract_features, share as share_sequences  # noqa: E402
from inolib.teacher import make_teacher  # noqa: E402
import inolib.cli  # noqa: E402
import inolib.run.trainer  # noqa: E402
from inolib.data import list_davis_sequences, read_davis_sequence  # noqa: E402

from gpu_runner import (GIB, NA, Ctx, Phases, StageResult, fmt, kill_tree, ratio_str, render,  # noqa: E402
                        run_notebook, run_stage)
from inolib.released.propagation import released_video  # noqa: E402  (the released kernel the tests check against)
from inolib.released.step import ReleasedLosses, released_train_step  # noqa: E402

for _mod in ("ipykernel.kernelspec", "jupyter_client.manager", "nbclient", "nbformat"):  # the lessons' runner
    with contextlib.suppress(ImportError):  # a missing one is reported by the lesson stages
        importlib.import_module(_mod)

IMPORT_SECONDS = time.monotonic() - _T_START
DAVIS = REPO / "data/davis_sample/DAVIS"
VIDEOS = REPO / "data/videos"
DAVIS17_VAL_FRAMES = 1999  # 30 sequences
VAL_GOAL_S = 60.0  # ino propagate on all of DAVIS-2017 val, one GPU (issue 24): about 33 frames/s
SHOOTING = (480, 1152)  # the frame size of DAVIS-2017 val's "shooting" (dino #98)


# ----------------------------------------------------------------------------------------------------
# Settings: the GPU run and the CPU dry run differ only in sizes and budgets


@dataclass
class Settings:
    dry: bool
    device: str
    step_preset: str = "charades"  # ViT-S/8, 224 px globals, 8 locals of 64 px, K = 4096, L = 4
    step_batch: int = 4  # clips per GPU (App. A.1)
    step_warmup: int = 3
    step_timed: int = 10
    mask_ratio: float = 0.3  # the mean of U(0.1, 0.5): 235 of 784 patches masked
    profile_steps: int = 2
    profile_warmup: int = 2
    compile_backend: str = "inductor"
    prop_preset: str = "charades"  # ViT-S/8 block 7, k = 5, 10 context frames, radius 40, short side 480
    prop_frames: int = 14  # from frame 11 on the context is full
    prop_batch: int = 4
    shooting_width: int = 1152  # DAVIS "shooting" (dino #98): 480 x 1152 -> a 60 x 144 grid
    davis_preset: str = "charades"  # ViT-S/8, short side 480 (DAVIS 480p)
    davis_batch: int = 4  # --propagation.batch: frames per forward
    davis_amp: bool = True  # --propagation.amp: bf16 autocast for the features on CUDA
    davis_cold: str = "car-shadow"  # the first (cold) command runs this sequence alone
    davis_frames: int | None = None  # None: the bundled sample; N: a copy of its first N frames of davis_cold
    shooting_frames: int = 20  # frames of the 480x1152 sequence (the context queue is full from frame 11 on)
    davis2_frames: int | None = None  # 2 processes: None, the bundled sample; N, the first N frames of each of
    davis2_sequences: tuple = ("blackswan", "car-shadow")  # these sequences (one for each process)
    train_preset: str = "tiny"
    train_overrides: tuple = ("--optim.epochs", "100", "--crops.clips_per_video", "40")
    kill_after_step: int | None = None  # SIGTERM the first run after this step (dry) ...
    kill_after_s: float | None = 40.0  # ... or this many seconds after its start
    end_after_s: float | None = 100.0  # SIGTERM the resumed run at this time (None: let it finish)
    resume_torchrun: bool = True  # False (dry): the resumed run is `ino train` forked from the check (no launcher)
    lessons: bool = True  # False: run a one-cell notebook through the same runner instead
    budgets: dict = field(default_factory=dict)
    deadline: float = 465.0


# One GPU: 465 s without compile (davis2 records that it was skipped within a second); compile runs last and gets
# what is left before the deadline. With 2 GPUs davis2 runs two torchrun commands (about a minute).
REAL_BUDGETS = {"env": 20, "train_step": 75, "propagation": 45, "davis": 55, "davis2": 60, "train": 130,
                "lesson08": 85, "lesson10": 55, "compile": 150}
DRY_BUDGETS = {"env": 60, "train_step": 90, "propagation": 60, "davis": 90, "davis2": 90, "train": 150,
               "lesson08": 90, "lesson10": 60, "compile": 90}


def make_settings(dry: bool, device: str | None, deadline: float | None) -> Settings:
    if not dry:
        s = Settings(dry=False, device=device or "cuda", budgets=dict(REAL_BUDGETS))
    else:
        s = Settings(dry=True, device=device or "cpu", step_preset="smoke", step_batch=1, step_warmup=0, step_timed=1,
                     profile_steps=1, profile_warmup=0, compile_backend="eager", prop_preset="smoke", prop_frames=4,
                     prop_batch=2, davis_preset="smoke", davis_batch=2, davis_cold="blackswan", davis_frames=6,
                     shooting_frames=3, davis2_frames=3, train_preset="smoke",
                     train_overrides=("--max-steps", "5"), kill_after_step=1, kill_after_s=None, end_after_s=None,
                     resume_torchrun=False, lessons=False, budgets=dict(DRY_BUDGETS), deadline=600.0)
    if deadline is not None:
        s.deadline = deadline
    return s


# ----------------------------------------------------------------------------------------------------
# Phase marks inside inolib's training step


@contextlib.contextmanager
def ours_phase_marks(optimizer, scaler, phases: Phases):
    """Phase marks inside ``inolib.run.trainer.train_step`` without changing it: the forward ends where it zeroes the
    gradients, the backward where it unscales (fp16) or clips, the optimizer where the EMA starts."""
    tr = inolib.run.trainer
    orig = (optimizer.zero_grad, tr.clip_gradients, tr.ema_update, scaler.unscale_ if scaler else None)

    def zero_grad(*a, **k):
        phases.mark("forward")
        return orig[0](*a, **k)

    def clip(*a, **k):
        phases.mark("backward")
        return orig[1](*a, **k)

    def ema(*a, **k):
        phases.mark("backward")
        phases.mark("optimizer")
        out = orig[2](*a, **k)
        phases.mark("ema")
        return out

    def unscale(*a, **k):
        phases.mark("backward")
        return orig[3](*a, **k)

    optimizer.zero_grad, tr.clip_gradients, tr.ema_update = zero_grad, clip, ema
    if scaler is not None:
        scaler.unscale_ = unscale
    try:
        yield
    finally:
        optimizer.zero_grad, tr.clip_gradients, tr.ema_update = orig[:3]
        if scaler is not None:
            scaler.unscale_ = orig[3]


# ----------------------------------------------------------------------------------------------------
# Stage env


def stage_env(ctx: Ctx) -> None:
    dev = ctx.device
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cpu_cores": os.cpu_count(), "platform": f"{platform.system()} {platform.machine()}",
            "import_seconds": round(IMPORT_SECONDS, 1)}
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device visible to torch (torch.cuda.is_available() is False); run "
                               "`python benchmarks/gpu_check.py --dry` on a machine without a GPU")
        p = torch.cuda.get_device_properties(dev)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / GIB, 1), sms=p.multi_processor_count,
                    cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported())
        with contextlib.suppress(Exception):
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip()
    needs = {"timm": "every stage", "decord": "train, lesson08, lesson10 (mp4 videos)",
             "nbclient": "lesson08, lesson10", "nbformat": "lesson08, lesson10", "ipykernel": "lesson08, lesson10",
             "ipywidgets": "lesson08, lesson10"}
    missing = []
    from importlib import metadata
    for mod, used in needs.items():
        try:
            info[mod] = metadata.version(mod)
        except metadata.PackageNotFoundError:
            missing.append(f"{mod} ({used})")
    if "timm" in info and not info["timm"].startswith("1.0"):
        missing.append(f"timm 1.0.x (found {info['timm']}; inolib overrides a private timm 1.0 method)")
    info["missing"] = missing
    ctx.share("machine", info)
    print(json.dumps(info, indent=1), flush=True)


# ----------------------------------------------------------------------------------------------------
# Stage train_step


def _step_batch(ctx: Ctx):
    cfg = C.get_preset(ctx.s.step_preset)
    m, c = cfg.model, cfg.crops
    B, T, M = ctx.s.step_batch, c.clip_len, c.num_local
    g = torch.Generator().manual_seed(0)
    glob = torch.randn(B, T, 3, c.global_size, c.global_size, generator=g).to(ctx.device)
    loc = torch.randn(B, T, M, 3, c.local_size, c.local_size, generator=g).to(ctx.device)
    grid = (c.global_size // m.patch_size,) * 2
    r = ctx.s.mask_ratio
    mask = random_mask(B, T, grid, (r, r), prob=1.0, generator=torch.Generator().manual_seed(0)).to(ctx.device)
    return cfg, glob, loc, mask


def _build_step(ctx: Ctx, cfg, who: str, amp: str, compile_blocks: bool = False):
    """Student, teacher, loss, optimizer, scaler and ``step(phases)`` for ``who`` in ("ours", "released")."""
    torch.manual_seed(0)
    dev = ctx.device
    student = build_network(cfg.model).to(dev)
    teacher = make_teacher(student, cfg.model).to(dev)
    if compile_blocks:  # the same wrapping on both networks keeps the parameter names (EMA) matched
        for net in (student, teacher):
            blocks = net.backbone.blocks
            for i in range(len(blocks)):
                blocks[i] = torch.compile(blocks[i], backend=ctx.s.compile_backend)
    opt = torch.optim.AdamW(param_groups(student), lr=1e-5, weight_decay=0.04)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    scaler = torch.amp.GradScaler(dev.type) if amp == "fp16" else None
    K = cfg.model.head_out_dim
    if who == "ours":
        crit = INOLoss(cfg.loss, K).to(dev)

        def step(batch, phases: Phases | None):
            g, l, mask = batch
            if phases is None:
                return inolib.run.trainer.train_step(student, teacher, crit, opt, g, l, mask, momentum=0.996,
                                               clip_grad=3.0, amp_dtype=dtype, scaler=scaler, as_tensors=True)
            with ours_phase_marks(opt, scaler, phases):
                phases.start()
                return inolib.run.trainer.train_step(student, teacher, crit, opt, g, l, mask, momentum=0.996,
                                               clip_grad=3.0, amp_dtype=dtype, scaler=scaler, as_tensors=True)
    else:
        losses = ReleasedLosses(K).to(dev)

        def step(batch, phases: Phases | None):
            g, l, mask = batch
            if phases is not None:
                phases.start()
            return released_train_step(student, teacher, losses, opt, g, l, mask, momentum=0.996, clip_grad=3.0,
                                       amp_dtype=dtype, scaler=scaler, mark=phases.mark if phases else None)
    return step, scaler


def _measure_step(ctx: Ctx, cfg, batch, who: str, amp: str, compile_blocks: bool = False) -> dict:
    clock = ctx.clock
    clock.free()
    before = clock.allocated_gib()  # the batch only: nothing of an earlier measurement may count
    step, scaler = _build_step(ctx, cfg, who, amp, compile_blocks)
    _, first = clock.timed(lambda: step(batch, None))  # includes compilation with compile_blocks
    for _ in range(ctx.s.step_warmup):
        step(batch, None)
    scale0 = scaler.get_scale() if scaler else None
    phases = Phases(clock)
    clock.reset_peak()
    t0 = clock.mark()
    for _ in range(ctx.s.step_timed):
        step(batch, phases)
    t1 = clock.mark()
    total = clock.seconds(t0, t1)
    out = {"clips_s": ctx.s.step_batch * ctx.s.step_timed / total, "peak_gib": clock.peak_gib(),
           "phases": phases.median_ms(), "first_step_s": first, "ms": 1000 * total / ctx.s.step_timed,
           "allocated_before_gib": before}
    if scaler is not None:
        out["scale"] = (scale0, scaler.get_scale())
    return out


def _profile(ctx: Ctx, cfg, batch, who: str, amp: str) -> str:
    from torch.profiler import ProfilerActivity, profile
    step, _ = _build_step(ctx, cfg, who, amp)
    for _ in range(ctx.s.profile_warmup):
        step(batch, None)
    ctx.clock.sync()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.clock.cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(ctx.s.profile_steps):
            step(batch, None)
        ctx.clock.sync()
    avg = prof.key_averages()
    for key in (("self_device_time_total", "self_cuda_time_total") if ctx.clock.cuda else ("self_cpu_time_total",)):
        with contextlib.suppress(Exception):
            return avg.table(sort_by=key, row_limit=15, max_name_column_width=60)
    return avg.table(row_limit=15)


def stage_train_step(ctx: Ctx) -> None:
    cfg, *batch = _step_batch(ctx)
    m, c = cfg.model, cfg.crops
    N = (c.global_size // m.patch_size) ** 2
    P = int(batch[2][0, 0].sum())
    ctx.detail("training-step shapes", f"preset {cfg.name}: ViT dim {m.embed_dim} x {m.depth}, patch {m.patch_size}, "
               f"K={m.head_out_dim}; B={ctx.s.step_batch} clips x T={c.clip_len}, global {c.global_size}px (N={N}), "
               f"{c.num_local} locals {c.local_size}px; masked step P={P} of {N}; {ctx.s.step_warmup} warm-up and "
               f"{ctx.s.step_timed} timed steps each; peak = max_memory_allocated over the timed steps")
    res = {}
    for who, amp in (("ours", "bf16"), ("ours", "fp16"), ("released", "fp16")):
        try:
            res[who, amp] = _measure_step(ctx, cfg, batch, who, amp)
            r = res[who, amp]
            print(f"[train_step] {who} {amp}: {r['clips_s']:.2f} clips/s, {r['ms']:.1f} ms/step, peak {r['peak_gib']}, "
                  f"phases {r['phases']}, first step {r['first_step_s']:.2f} s, scale {r.get('scale')}", flush=True)
        except Exception as e:  # noqa: BLE001
            ctx.fail(f"train step {who} {amp}", e)
        finally:
            ctx.clock.free()
    rel = res.get(("released", "fp16"))
    r_c, r_m = (rel["clips_s"], rel["peak_gib"]) if rel else (None, None)
    mem = lambda x: "n/a (CPU)" if x is None else fmt(x)  # noqa: E731
    for amp in ("bf16", "fp16"):
        ours = res.get(("ours", amp))
        if ours is None:
            continue
        ctx.share(f"ours_{amp}_clips_s", ours["clips_s"])
        ctx.share(f"ours_{amp}_peak_gib", ours["peak_gib"])
        ctx.row(f"clips/s: ours {amp} vs released fp16", fmt(ours["clips_s"]), fmt(r_c),
                ratio_str(ours["clips_s"], r_c),
                ">= 2x", ctx.perf_met(ours["clips_s"] >= 2 * r_c) if rel else "")
        ctx.row(f"peak memory GiB: ours {amp} vs released fp16", mem(ours["peak_gib"]), mem(r_m) if rel else NA,
                ratio_str(ours["peak_gib"], r_m), "<= 0.5x",
                ctx.perf_met(r_m is not None and ours["peak_gib"] <= 0.5 * r_m) if rel else "")
    phase_str = lambda r: " / ".join(fmt(r["phases"][n]) for n in Phases.NAMES)  # noqa: E731
    for amp in ("bf16", "fp16"):
        ours = res.get(("ours", amp))
        if ours is not None:
            ctx.row(f"ms per step, forward / backward / optimizer / EMA: ours {amp}, released fp16", phase_str(ours),
                    phase_str(rel) if rel else NA)
    ctx.detail("per measurement", "\n".join(
        f"{' '.join(key)}: {r['ms']:.1f} ms/step; first step {r['first_step_s']:.2f} s; GiB allocated before building "
        f"the networks {fmt(r['allocated_before_gib'])}" + (f"; GradScaler scale before / after the timed steps "
                                                            f"{r['scale']}" if "scale" in r else "")
        for key, r in res.items()))
    for who, amp in (("ours", "bf16"), ("released", "fp16")):
        try:
            ctx.detail(f"torch.profiler, {ctx.s.profile_steps} steps, {who} {amp}", _profile(ctx, cfg, batch, who, amp))
        except Exception as e:  # noqa: BLE001
            ctx.fail(f"profile {who} {amp}", e)
        finally:
            ctx.clock.free()


def stage_compile(ctx: Ctx) -> None:
    cfg, *batch = _step_batch(ctx)
    eager = ctx.shared.get("ours_bf16_clips_s"), ctx.shared.get("ours_bf16_peak_gib")
    if eager[0] is None:  # the train_step stage did not run or failed: measure eager here
        r = _measure_step(ctx, cfg, batch, "ours", "bf16")
        eager = r["clips_s"], r["peak_gib"]
        ctx.clock.free()
    r = _measure_step(ctx, cfg, batch, "ours", "bf16", compile_blocks=True)
    ctx.row(f"torch.compile ({ctx.s.compile_backend}) of the ViT blocks: first step s (compiling)",
            fmt(r["first_step_s"]))
    ctx.row("clips/s bf16: compiled (ours col.) vs eager (released col.)", fmt(r["clips_s"]), fmt(eager[0]),
            ratio_str(r["clips_s"], eager[0]))
    ctx.row("peak memory GiB bf16: compiled vs eager", fmt(r["peak_gib"]) if r["peak_gib"] else "n/a (CPU)",
            fmt(eager[1]) if eager[1] else "n/a (CPU)", ratio_str(r["peak_gib"], eager[1]))


# ----------------------------------------------------------------------------------------------------
# Stage propagation


def _propagation_case(ctx: Ctx, vit, cfg, seq, frames: torch.Tensor, mask0: torch.Tensor, label: str) -> None:
    """One frame size: features, then inolib.vos.propagation and the released kernel on the same features."""
    s, dev, clock, p = ctx.s, ctx.device, ctx.clock, cfg.propagation
    T, H, W = frames.shape[0], *frames.shape[-2:]
    size = FrameSize.for_frame(H, W, p.short_side, cfg.model.patch_size)
    clock.reset_peak()
    feats, t_feat = clock.timed(lambda: torch.stack(list(extract_features(
        vit, lambda idx: frames[idx], T, size, p.feature_block, s.prop_batch, dev, resize=p.resize))))
    mem_feat = clock.peak_gib()
    h, w = feats.shape[-2:]
    first = labels_to_grid(mask0.to(dev), seq.num_objects + 1, (h, w))
    kw = dict(topk=p.topk, num_context=p.num_context, radius=p.radius, temperature=p.temperature)
    neigh = window_mask((h, w), p.radius, device=dev).float()  # the released code loads it from disk: not timed
    released = lambda f: released_video(f, first, topk=p.topk, n_last=p.num_context, radius=p.radius,  # noqa: E731
                                        neigh=neigh, chunk=100)
    with torch.no_grad():
        propagate(feats[:3], first, **kw)  # warm-up (kernels, allocator)
        released(feats[:2])
        clock.reset_peak()
        ours, t_ours = clock.timed(lambda: propagate(feats, first, **kw))
        mem_ours = clock.peak_gib()
        clock.reset_peak()
        ref, t_ref = clock.timed(lambda: released(feats))
        mem_ref = clock.peak_gib()
    same = torch.equal(ours.argmax(1), ref.argmax(1))
    diff = float((ours - ref).abs().max())
    fps_o, fps_r = (T - 1) / t_ours, (T - 1) / t_ref
    mem = lambda x: fmt(x) if x is not None else "n/a (CPU)"  # noqa: E731
    ctx.row(f"propagation frames/s, {label} {H}x{W} -> grid {h}x{w}", fmt(fps_o), fmt(fps_r), ratio_str(fps_o, fps_r),
            ">= 5x", ctx.perf_met(fps_o >= 5 * fps_r))
    ctx.row(f"identical labels (argmax), max soft-label difference, {label}",
            f"{'identical' if same else 'DIFFERENT'}, {diff:.1e}", goal="identical", met="yes" if same else "no")
    ctx.row(f"peak memory GiB of the propagation, {label}", mem(mem_ours), mem(mem_ref), ratio_str(mem_ours, mem_ref))
    m = cfg.model
    ctx.row(f"feature extraction (ViT {m.embed_dim}-d/{m.patch_size}, block {p.feature_block}): frames/s, peak GiB, "
            f"{label}", f"{fmt(T / t_feat)} fr/s, {mem(mem_feat)}")
    if label == "shooting":
        worst = None if mem_ours is None else max(mem_feat, mem_ours)
        ctx.row("shooting: peak memory of extraction and propagation (ours)", mem(worst), goal="<= 16 GiB",
                met=ctx.perf_met(worst is not None and worst <= 16.0))


def stage_propagation(ctx: Ctx) -> None:
    s = ctx.s
    cfg = C.get_preset(s.prop_preset)
    p = cfg.propagation
    seq = read_davis_sequence(DAVIS, "blackswan")
    T = min(s.prop_frames, seq.num_frames)
    torch.manual_seed(0)
    vit = build_backbone(cfg.model).to(ctx.device).eval()
    ctx.detail("propagation settings", f"preset {cfg.name} (random-init ViT, block {p.feature_block}); DAVIS "
               f"blackswan, {T} frames; k={p.topk}, {p.num_context} context frames, radius {p.radius}, temperature "
               f"{p.temperature}; released kernel: tests/test_propagate.py released_video, chunks of 100 queries, its "
               "window built outside the timing (the released code loads it from disk)")
    frames, mask0 = seq.load_frames(list(range(T))), seq.first_labels()
    wide = torch.nn.functional.interpolate(frames.float(), size=(frames.shape[-2], s.shooting_width),
                                           mode="bilinear").round().byte()  # stretched, as benchmarks/propagation.py
    wide_mask = torch.nn.functional.interpolate(mask0[None, None].float(), size=wide.shape[-2:],
                                                mode="nearest")[0, 0].long()
    for label, f, m in (("480p", frames, mask0), ("shooting", wide, wide_mask)):
        try:
            _propagation_case(ctx, vit, cfg, seq, f, m, label)
        except Exception as e:  # noqa: BLE001
            ctx.fail(f"propagation {label}", e)
        finally:
            ctx.clock.free()


# ----------------------------------------------------------------------------------------------------
# Stage davis: ino propagate + ino evaluate


def _ino(argv: list[str]) -> float:
    """``ino ARGV`` in this process (inolib.cli.main, the console script's entry point); its wall seconds."""
    print("$ ino " + " ".join(argv), flush=True)
    t0 = time.perf_counter()
    rc = inolib.cli.main(argv)
    dt = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"`ino {' '.join(argv)}` returned {rc} (its message is above)")
    return dt


def trimmed_davis(src: Path, dst: Path, names, frames: int) -> Path:
    """A DAVIS folder holding the first ``frames`` frames of each sequence of ``names`` (the dry run's sample)."""
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        for sub in ("JPEGImages/480p", "Annotations/480p"):
            files = sorted((src / sub / name).iterdir())[:frames]
            (dst / sub / name).mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copy(f, dst / sub / name / f.name)
    (dst / "ImageSets/2017").mkdir(parents=True, exist_ok=True)
    (dst / "ImageSets/2017/val.txt").write_text("".join(n + "\n" for n in names))
    return dst


def stretched_davis(src: Path, dst: Path, name: str, frames: int, size: tuple[int, int] = SHOOTING,
                    new_name: str | None = None) -> tuple[Path, str]:
    """A DAVIS folder holding one sequence: the first ``frames`` frames of ``name`` stretched to ``size`` = (H, W)
    (bilinear JPEGs) with its annotations resized by nearest neighbour (indexed PNGs: palette and ids kept).
    Returns (the folder, the sequence's name)."""
    from PIL import Image
    H, W = size
    new_name = new_name or f"{name}-{W}x{H}"
    jpg, ann = dst / "JPEGImages/480p" / new_name, dst / "Annotations/480p" / new_name
    jpg.mkdir(parents=True, exist_ok=True)
    ann.mkdir(parents=True, exist_ok=True)
    for f in sorted((src / "JPEGImages/480p" / name).glob("*.jpg"))[:frames]:
        with Image.open(f) as im:
            im.convert("RGB").resize((W, H), Image.BILINEAR).save(jpg / f.name, quality=95)
        png = src / "Annotations/480p" / name / f"{f.stem}.png"
        if png.is_file():
            with Image.open(png) as im:  # mode P: resize keeps the palette; nearest keeps the ids
                im.resize((W, H), Image.NEAREST).save(ann / png.name)
    (dst / "ImageSets/2017").mkdir(parents=True, exist_ok=True)
    (dst / "ImageSets/2017/val.txt").write_text(new_name + "\n")
    seq, orig = read_davis_sequence(dst, new_name), read_davis_sequence(src, name)
    same_palette = (seq.palette is None) == (orig.palette is None) and (
        seq.palette is None or bool((seq.palette == orig.palette).all()))
    if seq.size != (H, W) or seq.object_ids != orig.object_ids or not same_palette:
        raise RuntimeError(f"{dst}: the stretched sequence is {seq.size} with ids {seq.object_ids}, expected "
                           f"{(H, W)} with the ids {orig.object_ids} and the palette of {name}")
    return dst, new_name


def _davis_argv(s: Settings, davis: Path) -> list[str]:
    """``ino propagate``'s arguments (without --out) of stage 3 and of its 2-process run."""
    return ["propagate", "--checkpoint", "random", "--preset", s.davis_preset, "--propagation.batch",
            str(s.davis_batch), "--propagation.amp", str(s.davis_amp).lower(), "--davis", str(davis), "--device",
            s.device]


def _davis_cfg(s: Settings):
    return C.override(C.get_preset(s.davis_preset), {"propagation.batch": s.davis_batch,
                                                     "propagation.amp": s.davis_amp})


def _settings_str(cfg, device: torch.device) -> str:
    """E.g. "ViT-S/8, short side 480, batch 4, bf16": the settings a row's figure holds for."""
    m, p = cfg.model, cfg.propagation
    size = {384: "S", 768: "B"}.get(m.embed_dim) if m.depth == 12 else None
    vit = f"ViT-{size}/{m.patch_size}" if size else f"ViT {m.embed_dim}-d x {m.depth}/{m.patch_size} ({cfg.name})"
    amp = "bf16" if p.amp and device.type == "cuda" else "float32"  # amp: bf16 autocast on CUDA only
    return f"{vit}, short side {p.short_side}, batch {p.batch}, {amp}"


def stage_davis(ctx: Ctx) -> None:
    s, dev = ctx.s, ctx.device
    out = ctx.work / "davis"
    shutil.rmtree(out, ignore_errors=True)
    davis = DAVIS if s.davis_frames is None else trimmed_davis(DAVIS, out / "DAVIS", s.davis_cold, s.davis_frames)
    names = list_davis_sequences(davis, "val")
    counts = {n: read_davis_sequence(davis, n).num_frames for n in names}
    frames = sum(counts.values())
    common = _davis_argv(s, davis)
    how = _settings_str(_davis_cfg(s), dev)
    t_cold = _ino([*common, "--out", str(out / "cold"), "--sequences", s.davis_cold])
    t_warm = _ino([*common, "--out", str(out / "all")])
    t_eval = _ino(["evaluate", "--davis", str(davis), "--results", str(out / "all")])
    per_frame = t_warm / frames
    fixed = max(0.0, t_cold - counts[s.davis_cold] * per_frame)  # CUDA start-up, model build: once per command
    startup = IMPORT_SECONDS  # this process's imports (torch, timm, inolib): paid once per command as well
    val_prop = startup + fixed + DAVIS17_VAL_FRAMES * per_frame
    val_eval = startup + DAVIS17_VAL_FRAMES * t_eval / frames
    fps, need = frames / t_warm, DAVIS17_VAL_FRAMES / VAL_GOAL_S
    left = VAL_GOAL_S - startup - fixed  # what the frames may take once a fresh command has started
    ctx.share("davis_per_frame_s", per_frame)
    ctx.detail("davis", f"{len(names)} sequences ({', '.join(f'{n} {k}' for n, k in counts.items())} frames); "
               f"preset {s.davis_preset} (random-init ViT, not a trained model): {how}; the commands run in this "
               f"process (inolib.cli.main); start-up of a fresh process (imports) measured at {startup:.1f} s and "
               f"added once per command to the extrapolation; cold run {t_cold:.1f} s on {s.davis_cold} "
               f"({counts[s.davis_cold]} frames) gives the fixed cost {fixed:.1f} s\n"
               f"command: ino {' '.join(common)} --out {out / 'all'}")
    ctx.row(f"ino propagate, DAVIS sample, {frames} frames (warm process; {how}): s, frames/s",
            f"{t_warm:.1f} s, {fmt(fps)} fr/s")
    ctx.row(f"ino propagate, first command ({s.davis_cold}, {counts[s.davis_cold]} frames, cold): s", f"{t_cold:.1f} s")
    ctx.row(f"frames/s of ino propagate: measured vs needed for DAVIS-2017 val in {VAL_GOAL_S:.0f} s",
            f"{fmt(fps)} fr/s measured; {fmt(need)} needed ({DAVIS17_VAL_FRAMES} / {VAL_GOAL_S:.0f} s), "
            + (f"{fmt(DAVIS17_VAL_FRAMES / left)} after the start-up and fixed cost ({startup + fixed:.1f} s)"
               if left > 0 else f"the start-up and fixed cost alone take {startup + fixed:.1f} s"),
            goal=f">= {need:.1f} fr/s", met=ctx.perf_met(fps >= need))
    ctx.row(f"DAVIS-2017 val ({DAVIS17_VAL_FRAMES} frames) extrapolated, ino propagate, one process ({how}): s",
            f"{val_prop:.0f} s (start-up {startup:.1f} + fixed {fixed:.1f} + {DAVIS17_VAL_FRAMES} x "
            f"{1000 * per_frame:.1f} ms)", goal=f"<= {VAL_GOAL_S:.0f} s", met=ctx.perf_met(val_prop <= VAL_GOAL_S))
    ctx.row(f"ino evaluate, {frames} frames: s, frames/s", f"{t_eval:.1f} s, {fmt(frames / t_eval)} fr/s")
    ctx.row(f"DAVIS-2017 val ({DAVIS17_VAL_FRAMES} frames) extrapolated, ino evaluate (CPU): s",
            f"{val_eval:.0f} s (start-up {startup:.1f} + {DAVIS17_VAL_FRAMES} x {1000 * t_eval / frames:.1f} ms)")
    with contextlib.suppress(Exception):
        line = (out / "all" / "global_results-val.csv").read_text().splitlines()[1]
        ctx.row("J&F-Mean of the random-init network (a baseline, not a trained model)", line.split(",")[0])
    try:
        _shooting(ctx, out)
    except Exception as e:  # noqa: BLE001
        ctx.fail(f"shooting {SHOOTING[0]}x{SHOOTING[1]} through ino propagate", e)


def _shooting(ctx: Ctx, out: Path) -> None:
    """``ino propagate`` end to end on a sequence of DAVIS "shooting"'s frame size; peak memory of the command."""
    s, clock = ctx.s, ctx.clock
    H, W = SHOOTING
    root, name = stretched_davis(DAVIS, out / "DAVIS_shooting", "blackswan", s.shooting_frames)
    argv = [*_davis_argv(s, root), "--out", str(out / "shooting")]
    clock.free()
    clock.reset_peak()  # torch.cuda.reset_peak_memory_stats
    before = clock.allocated_gib()
    secs = _ino(argv)
    peak = clock.peak_gib()  # torch.cuda.max_memory_allocated since the reset
    reserved = torch.cuda.max_memory_reserved(ctx.device) / GIB if clock.cuda else None
    written = len(list((out / "shooting" / name).glob("*.png")))
    if written != s.shooting_frames:
        raise RuntimeError(f"ino propagate wrote {written} masks for {s.shooting_frames} frames of {name}")
    how = _settings_str(_davis_cfg(s), ctx.device)
    ctx.detail("shooting", f"{root}: {name}, the first {s.shooting_frames} frames of blackswan stretched to {W}x{H} "
               f"(DAVIS shooting's size), annotations resized by nearest neighbour; {how}; GiB allocated before the "
               f"command {fmt(before)}; peak reserved {fmt(reserved)}\ncommand: ino {' '.join(argv)}")
    ctx.row(f"shooting {H}x{W} through ino propagate, {s.shooting_frames} frames ({how}): s, frames/s",
            f"{secs:.1f} s, {fmt(s.shooting_frames / secs)} fr/s (model build included)")
    ctx.row(f"shooting {H}x{W} through ino propagate: peak GiB",
            "n/a (CPU)" if peak is None else f"{fmt(peak)} allocated ({fmt(reserved)} reserved)", goal="<= 16 GiB",
            met=ctx.perf_met(peak is not None and peak <= 16.0))


# ----------------------------------------------------------------------------------------------------
# Stage train: torchrun, SIGTERM, resume, against an uninterrupted run


def _read_records(path: Path) -> list[dict]:
    """The complete lines of a log.jsonl that may still be written."""
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.splitlines()
    if text and not text.endswith("\n"):
        lines = lines[:-1]
    out = []
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def _last_step(path: Path) -> int:
    return max((r["step"] for r in _read_records(path) if "loss" in r), default=0)


class Proc:
    """An ``ino`` command: a torchrun subprocess (``nproc`` processes), or ``ino ARGV`` in a forked copy of this
    process."""

    def __init__(self, name: str, argv: list[str], log: Path, torchrun: bool, nproc: int = 1, tag: str = "train"):
        self.name, self.log, self.tag = name, log, tag
        self.t0 = time.monotonic()
        out = open(log, "ab")
        if torchrun:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                   "-m", "inolib", *argv]
            print(f"[{tag}] {name}: torchrun " + " ".join(cmd[4:]), flush=True)
            self.popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
            self.pid = self.popen.pid
        else:
            print(f"[{tag}] {name}: ino " + " ".join(argv) + "  (a fork of this process)", flush=True)
            sys.stdout.flush()
            sys.stderr.flush()
            self.popen = None
            self.pid = os.fork()
            if self.pid == 0:  # the uninterrupted run: ino train in this (already imported) interpreter
                code = 1
                try:
                    os.dup2(out.fileno(), 1)
                    os.dup2(out.fileno(), 2)
                    code = inolib.cli.main(argv)
                except BaseException:  # noqa: BLE001
                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code if isinstance(code, int) else 1)
        out.close()
        self.rc = None

    def poll(self):
        if self.rc is None:
            if self.popen is not None:
                self.rc = self.popen.poll()
            else:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.rc = os.waitstatus_to_exitcode(status)
        return self.rc

    def wait(self, timeout: float) -> int:
        end = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > end:
                kill_tree(self.pid)
                raise TimeoutError(f"{self.name} did not exit within {timeout:.0f} s (killed)")
            time.sleep(0.05)
        self.seconds = time.monotonic() - self.t0  # from the start to the exit seen (within 0.05 s)
        return self.rc

    def terminate(self) -> None:
        """SIGTERM, as a scheduler or ``kill`` sends it (torchrun forwards it to its worker)."""
        if self.poll() is None:
            print(f"[{self.tag}] SIGTERM -> {self.name} (pid {self.pid})", flush=True)
            os.kill(self.pid, signal.SIGTERM)

    def tail(self, n: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return ""


def _wait_until(cond: Callable[[], bool], timeout: float, what: str, procs: list[Proc]) -> None:
    end = time.monotonic() + timeout
    while not cond():
        for p in procs:
            if p.poll() is not None and p.rc != 0 and not cond():
                raise RuntimeError(f"{p.name} exited with {p.rc} while waiting for {what}:\n{p.tail()}")
        if time.monotonic() > end:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.25)


TERMS = ("loss", "out", "g2g", "l2g", "mim", "aff")


def stage_train(ctx: Ctx) -> None:
    s = ctx.s
    work = ctx.work
    U, I = work / "uninterrupted", work / "interrupted"
    common = ["train", "--data", str(VIDEOS), "--preset", s.train_preset, "--device", s.device, "--log-every", "1",
              "--no-tensorboard", *s.train_overrides]
    procs: list[Proc] = []
    t0 = time.monotonic()
    try:
        # no torch call in this process before the fork below
        u = Proc("uninterrupted run", [*common, "--out", str(U)], work / "uninterrupted.log", torchrun=False)
        procs.append(u)
        i1 = Proc("run 1", [*common, "--out", str(I)], work / "run1.log", torchrun=True)
        procs.append(i1)
        if s.kill_after_step is not None:
            _wait_until(lambda: _last_step(I / "log.jsonl") >= s.kill_after_step, 300, f"step {s.kill_after_step}",
                        [i1])
        else:
            _wait_until(lambda: _last_step(I / "log.jsonl") >= 1, 300, "the first step", [i1])
            time.sleep(max(0.0, s.kill_after_s - (time.monotonic() - t0)))
        t_kill = time.monotonic() - t0
        i1.terminate()
        rc1 = i1.wait(120)
        k = _last_step(I / "log.jsonl")
        recs1 = _read_records(I / "log.jsonl")
        saved = work / "checkpoint_after_sigterm.pth"
        shutil.copy(I / "checkpoint.pth", saved)  # read after run 2 starts: no torch call before a fork
        i2 = Proc("run 2 (same command: resume)", [*common, "--out", str(I)], work / "run2.log",
                  torchrun=s.resume_torchrun)
        procs.append(i2)
        ck = torch.load(saved, map_location="cpu", weights_only=True)
        said = f"SIGTERM received: stopped after step {k}" in i1.tail(400)
        event = recs1[-1] if recs1 else {}
        ok_kill = said and event.get("event") == "interrupted" and event.get("step") == k and int(ck["step"]) == k
        ctx.row("SIGTERM to torchrun: checkpoint at the next step boundary",
                f"SIGTERM at {t_kill:.0f} s, stopped after step {k}; checkpoint step {int(ck['step'])}; log event "
                f"{event.get('event')!r}; worker said so: {said}; torchrun rc {rc1}", goal="checkpoint = last step",
                met="yes" if ok_kill else "no")
        if s.end_after_s is not None:
            _wait_until(lambda: _last_step(I / "log.jsonl") > k or i2.poll() is not None, 300, "the first resumed step",
                        [i2])
            end = t0 + s.end_after_s
            while time.monotonic() < end and i2.poll() is None:
                time.sleep(0.25)
            i2.terminate()
        rc2 = i2.wait(300)
        n = _last_step(I / "log.jsonl")
        # the reference must have passed every step the interrupted run logged
        _wait_until(lambda: _last_step(U / "log.jsonl") >= n or u.poll() is not None, 300,
                    f"step {n} of the uninterrupted run", [u])
        u.terminate()
        rcu = u.wait(120)
        wall = time.monotonic() - t0

        recs_i = _read_records(I / "log.jsonl")
        recs_u = _read_records(U / "log.jsonl")
        steps_i = [r["step"] for r in recs_i if "loss" in r]
        resume = [r for r in recs_i if r.get("event") == "resume"]
        contiguous = steps_i == list(range(1, len(steps_i) + 1))
        ok_resume = bool(resume) and resume[0].get("step") == k and contiguous
        ctx.row("same command again: resumed at the checkpoint, log continuous",
                f"resumed at step {resume[0].get('step') if resume else None}, ran to step {n} (rc {rc2}); steps "
                f"1..{n} each logged once: {contiguous}", goal="resume at step k", met="yes" if ok_resume else "no")
        by_u = {r["step"]: r for r in recs_u if "loss" in r}
        finite = all(math.isfinite(r[t]) for r in recs_i + recs_u if "loss" in r for t in TERMS if t in r)
        ctx.row("losses finite (both runs, every logged term)", str(finite), goal="finite",
                met="yes" if finite else "no")

        def compare(steps):
            same, worst = 0, 0.0
            for st in steps:
                a, b = next(r for r in recs_i if r.get("step") == st and "loss" in r), by_u[st]
                if all(a[t] == b[t] for t in TERMS):
                    same += 1
                worst = max(worst, max(abs(a[t] - b[t]) / max(abs(b[t]), 1e-12) for t in TERMS))
            return same, worst

        pre = [st for st in steps_i if st <= k and st in by_u]
        post = [st for st in steps_i if st > k and st in by_u]
        same_pre, worst_pre = compare(pre)
        same_post, worst_post = compare(post)
        exact = bool(post) and same_post == len(post)
        ctx.row("resumed steps equal the uninterrupted run (all loss terms, bit for bit)",
                f"{same_post}/{len(post)} identical (max rel. diff {worst_post:.1e})", goal="all identical",
                met="yes" if exact else "no")
        ctx.row("steps before the interruption equal the uninterrupted run (GPU run-to-run determinism)",
                f"{same_pre}/{len(pre)} identical (max rel. diff {worst_pre:.1e})")
        ctx.row("training wall time (torchrun run 1 + run 2; the uninterrupted run alongside)",
                f"{wall:.0f} s, {n} steps; uninterrupted run rc {rcu}")
        for p, rc, fine in ((i1, rc1, (1, 143)), (i2, rc2, (0, 1, 143)), (u, rcu, (0, 143))):
            if rc not in fine or not (ok_kill and ok_resume and exact and finite):
                ctx.detail(f"the end of {p.name}'s output ({p.log.name}, rc {rc})", p.tail(40))
        ctx.detail("train commands", "\n".join([
            "torchrun --standalone --nproc_per_node 1 -m inolib " + " ".join([*common, "--out", str(I)]),
            "(the same command again after SIGTERM: resume)" if s.resume_torchrun else
            "(the resume: the same ino command forked from the check, without torchrun, in the dry run)",
            "reference: ino " + " ".join([*common, "--out", str(U)]) + "   (forked from the check, no torchrun)",
            f"world size 1: the trainer creates no process group in one process (no NCCL/gloo collective runs); "
            f"device {s.device}"]))
    finally:
        for p in procs:
            if p.poll() is None:
                kill_tree(p.pid)
                with contextlib.suppress(Exception):
                    p.wait(10)


# ----------------------------------------------------------------------------------------------------
# Stage davis2: ino propagate with 2 processes (torchrun) against one process


def _png_differences(a: Path, b: Path) -> tuple[int, list[str]]:
    """(PNGs under ``a`` or ``b``, those whose bytes differ between the two or that are missing on one side)."""
    pa = {p.relative_to(a) for p in a.rglob("*.png")}
    pb = {p.relative_to(b) for p in b.rglob("*.png")}
    differ = sorted(str(r) for r in pa ^ pb)
    differ += sorted(str(r) for r in pa & pb if (a / r).read_bytes() != (b / r).read_bytes())
    return len(pa | pb), differ


def _pixels_differing(a: Path, b: Path, rels: list[str]) -> str:
    """How many pixels of the differing masks disagree (labels, not bytes)."""
    import numpy as np
    from PIL import Image
    n = tot = 0
    for r in rels:
        with contextlib.suppress(OSError, ValueError):
            x, y = np.asarray(Image.open(a / r)), np.asarray(Image.open(b / r))
            if x.shape == y.shape:
                n, tot = n + int((x != y).sum()), tot + x.size
    return f"{n} of {tot} pixels of the masks compared"


def stage_davis2(ctx: Ctx) -> None:
    s = ctx.s
    cuda = ctx.device.type == "cuda"
    gpus = torch.cuda.device_count() if cuda else 0
    if gpus < 2 and (cuda or not s.dry):  # the dry run on a CPU: 2 processes with gloo
        ctx.row("2 processes (torchrun --nproc_per_node 2): ino propagate on the DAVIS sample",
                f"skipped: {gpus} GPU{'s' if gpus != 1 else ''} (needs 2)")
        return
    out = ctx.work
    davis = DAVIS if s.davis2_frames is None else trimmed_davis(DAVIS, out / "DAVIS", s.davis2_sequences,
                                                                s.davis2_frames)
    names = list_davis_sequences(davis, "val")
    counts = [read_davis_sequence(davis, n).num_frames for n in names]
    frames = sum(counts)
    parts = [share_sequences(names, counts, r, 2) for r in range(2)]
    most = max(sum(counts[names.index(n)] for n in part) for part in parts)
    how = _settings_str(_davis_cfg(s), ctx.device)
    common = _davis_argv(s, davis)
    runs = {}
    for nproc in (1, 2):
        res = out / f"nproc{nproc}"
        p = Proc(f"{nproc} process{'es' if nproc > 1 else ''}", [*common, "--out", str(res)],
                 out / f"nproc{nproc}.log", torchrun=True, nproc=nproc, tag="davis2")
        try:
            rc = p.wait(max(30.0, s.budgets.get("davis2", 60) - 5))
        finally:
            if p.poll() is None:
                kill_tree(p.pid)
        if rc != 0:
            raise RuntimeError(f"torchrun --nproc_per_node {nproc} ... propagate exited with {rc}:\n{p.tail(30)}")
        runs[nproc] = (p.seconds, res, p.tail(400))
    (t1, r1, _), (t2, r2, log2) = runs[1], runs[2]
    count, differ = _png_differences(r1, r2)
    same = count > 0 and not differ
    split = "; ".join(f"rank {r}: {', '.join(part) or 'nothing'}" for r, part in enumerate(parts))
    both = "; 2 processes" in log2 and f"wrote {len(names)} sequences" in log2 and all(parts)
    ctx.detail("two processes", f"{len(names)} sequences, {frames} frames; share by frames: {split} (the larger "
               f"share {most} frames); {how}; device {s.device}"
               + (f", {gpus} GPUs (one per process: cuda:LOCAL_RANK)" if cuda else "")
               + f"\ncommand: torchrun --standalone --nproc_per_node N -m inolib {' '.join(common)} --out "
               f"{out}/nprocN   (N = 1, then 2; both timed from the launch to the exit)"
               + (f"\nmasks that differ: {', '.join(differ[:20])}; {_pixels_differing(r1, r2, differ)}"
                  if differ else ""))
    ctx.row(f"2 processes (torchrun --nproc_per_node 2, {'NCCL, 2 GPUs' if cuda else 'gloo on the CPU'}): "
            f"ino propagate, {len(names)} sequences / {frames} frames ({how}): s, 2 processes (ours col.) vs 1 "
            f"(released col.), ratio = speed-up",
            f"{t2:.1f} s", f"{t1:.1f} s (1 process)", ratio_str(t1, t2))
    ctx.row("2 processes: each ran its share of the sequences (balanced by frames)",
            f"{'yes' if both else 'no'} ({split})", goal="both ranks", met="yes" if both else "no")
    ctx.row("2 processes: masks equal one process (every PNG byte for byte)",
            f"{'yes' if same else 'no'}: {count - len(differ)} of {count} equal", goal="equal",
            met="yes" if same else "no")
    per_frame = ctx.shared.get("davis_per_frame_s")
    if per_frame is not None:  # from stage 3's warm run: the sample's frames on the larger share, the rest fixed
        start2 = max(0.0, t2 - most * per_frame)
        val2 = start2 + DAVIS17_VAL_FRAMES / 2 * per_frame
        ctx.row(f"DAVIS-2017 val ({DAVIS17_VAL_FRAMES} frames) extrapolated, 2 processes: s",
                f"{val2:.0f} s (start-up and fixed {start2:.1f} + {DAVIS17_VAL_FRAMES} / 2 x {1000 * per_frame:.1f} ms"
                f" of stage 3)")


# ----------------------------------------------------------------------------------------------------
# Stage lessons: nbclient in full mode


def _lesson(ctx: Ctx, name: str) -> None:
    budget = int(ctx.s.budgets.get(ctx.stage, 120))
    if ctx.s.lessons:
        path = REPO / "notebooks" / name
        try:
            secs = run_notebook(path, path.parent, budget, {"INOLIB_SMOKE": "0"}, save=ctx.work / f"executed_{name}")
        except Exception as e:  # nbclient's CellExecutionError: its first line says only that a cell failed
            if hasattr(e, "ename"):
                raise RuntimeError(f"a cell of {name} raised {e.ename}: {str(e.evalue)[:300]}") from e
            raise
        ctx.row(f"lesson {name} in full mode (INOLIB_SMOKE=0), nbclient: s", f"{secs:.0f} s", goal="runs", met="yes")
        return
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        "import os, inolib\nprint('INOLIB_SMOKE =', os.environ.get('INOLIB_SMOKE'), '| inolib', inolib.__version__)"))
    path = ctx.work / f"runner_check_{name}"
    nbformat.write(nb, path)
    secs = run_notebook(path, REPO / "notebooks", budget, {"INOLIB_SMOKE": "0"}, save=path)
    printed = "".join(o.get("text", "") for o in nbformat.read(path, as_version=4).cells[0].outputs)
    ok = "INOLIB_SMOKE = 0" in printed
    ctx.row(f"lesson {name}: dry run executes a one-cell notebook with the same runner (make test runs the lessons "
            f"in smoke mode under nbval)", f"{secs:.1f} s; the kernel saw {printed.strip()!r}", goal="runs",
            met="yes" if ok else "no")


def stage_lesson08(ctx: Ctx) -> None:
    _lesson(ctx, "08_training_on_a_laptop.ipynb")


def stage_lesson10(ctx: Ctx) -> None:
    _lesson(ctx, "10_label_propagation.ipynb")


# ----------------------------------------------------------------------------------------------------
# The stages in order; each runs in a forked process with a time limit (gpu_runner.run_stage)


STAGES = [  # (name, label in the table, function)
    ("env", "0 machine", stage_env),
    ("train_step", "1 training step", stage_train_step),
    ("propagation", "2 label propagation", stage_propagation),
    ("davis", "3 ino propagate + evaluate", stage_davis),
    ("davis2", "3b ino propagate, 2 processes", stage_davis2),
    ("train", "4 torchrun training", stage_train),
    ("lesson08", "5 lesson 08", stage_lesson08),
    ("lesson10", "5 lesson 10", stage_lesson10),
    ("compile", "1b torch.compile", stage_compile),
]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry", action="store_true", help="CPU dry run: tiny shapes, the same code paths (make test)")
    ap.add_argument("--device", default=None, help="torch device (default cuda; cpu with --dry)")
    ap.add_argument("--out", default=str(REPO / "outputs/gpu_check_results.md"), help="the Markdown results file")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    ap.add_argument("--work", default=None, help="scratch folder (default: outputs/gpu_check[_dry])")
    ap.add_argument("--stages", default=None, help="comma-separated subset of: " + ", ".join(n for n, *_ in STAGES))
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile stage")
    ap.add_argument("--deadline", type=float, default=None,
                    help="start no stage after this many seconds and cut budgets to it (default 465; 600 with --dry)")
    ap.add_argument("--budget", action="append", default=[], metavar="STAGE=SECONDS", help="override a stage's budget")
    args = ap.parse_args(argv)
    # what the stages' subprocesses (torchrun's worker, the notebook kernels) inherit
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    os.environ.setdefault("TQDM_DISABLE", "1")  # fewer progress bars in the logs
    s = make_settings(args.dry, args.device, args.deadline)
    for item in args.budget:
        name, _, secs = item.partition("=")
        if name not in s.budgets or not secs:
            ap.error(f"--budget {item!r}: expected STAGE=SECONDS with STAGE one of {sorted(s.budgets)}")
        s.budgets[name] = float(secs)
    names = [n for n, *_ in STAGES]
    wanted = names if args.stages is None else [x.strip() for x in args.stages.split(",") if x.strip()]
    unknown = sorted(set(wanted) - {n for n, *_ in STAGES})
    if unknown:
        ap.error(f"unknown stage(s) {unknown}; choose from {[n for n, *_ in STAGES]}")
    if "env" not in wanted:
        wanted.insert(0, "env")
    if args.no_compile and "compile" in wanted:
        wanted.remove("compile")
    work = Path(args.work or REPO / ("outputs/gpu_check_dry" if s.dry else "outputs/gpu_check")).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shared: dict = {}
    results: list[StageResult] = []
    for name, label, fn in STAGES:
        if name not in wanted:
            continue
        left = s.deadline - (time.monotonic() - _T_START)
        if left < 5:
            results.append(StageResult(name, label, "skipped",
                                       note=f"no time left before the {s.deadline:.0f} s deadline"))
            continue
        res = run_stage(name, label, fn, s, work, shared, min(s.budgets.get(name, 60), left))
        results.append(res)
        if name == "env" and res.status != "ok":
            print("the machine check failed: no other stage can run", file=sys.stderr)
            break
    wall = time.monotonic() - _T_START
    text = render(results, shared, s, argv, wall, IMPORT_SECONDS)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "dry": s.dry, "wall_seconds": wall, "machine": shared.get("machine"),
            "stages": [{"name": r.name, "label": r.label, "status": r.status, "seconds": r.seconds, "budget": r.budget,
                        "note": r.note, "rows": r.rows, "errors": [w for w, _ in r.errors]} for r in results]},
                                          indent=1))
    print("\n" + text.split("\n## ")[0])  # the tables; details and tracebacks are in the file
    print(f"wrote {out} (with the details and tracebacks)")
    bad = [r.name for r in results if r.status not in ("ok", "skipped")]
    if bad:
        print(f"stages with errors: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
