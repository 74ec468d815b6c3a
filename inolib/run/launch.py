"""Sizing and launching a multi-GPU training run before paying for it.

    train_command(cfg, data, out, nproc_per_node=4)   the exact ``torchrun ... -m inolib train`` line of a config
    run_size(cfg, num_videos, world_size)              clips, steps per epoch, total steps, peak lr of that run
    state_bytes(cfg.model)                             weights, gradients, AdamW moments and teacher per GPU
    activation_bytes(cfg, batch_size=1)                bytes autograd keeps for backward in one step (measured)
    launch_local(argv, nproc, log_dir)                 ``ino ARGV`` in nproc fresh interpreters with torchrun's
                                                       environment (gloo on a CPU): a DDP rehearsal

Everything here reads the same code the run uses (:class:`inolib.data.clips.ClipSampler` for the split of clips,
:func:`inolib.schedules.make_schedules` for the steps, the network and loss of :mod:`inolib.model` and
:mod:`inolib.losses` for the memory), so the numbers cannot drift from what ``ino train`` does.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from .. import config as C


def _flag_value(value) -> str:
    """A config value as the command line spells it (``0.8,0.95`` for a tuple, ``true`` for a bool)."""
    if isinstance(value, (tuple, list)):
        return ",".join(_flag_value(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def config_flags(cfg: C.INOConfig) -> list[str]:
    """``["--preset", NAME, "--section.field", VALUE, ...]``: the preset ``cfg.name`` and one flag per field that
    differs from it, in the order of :func:`inolib.config.iter_fields`. ValueError for an unknown preset name."""
    base = C.get_preset(cfg.name)
    args = ["--preset", cfg.name]
    for key, _, _ in C.iter_fields():
        if key == "name":
            continue
        section, name = key.split(".")
        mine, theirs = getattr(getattr(cfg, section), name), getattr(getattr(base, section), name)
        if mine != theirs:
            args += [f"--{key}", _flag_value(mine)]
    return args


def train_command(cfg: C.INOConfig, data: str | list[str], out: str, nproc_per_node: int = 4, nnodes: int = 1,
                  rdzv_endpoint: str = "HOST:29500", device: str = "cuda", extra: list[str] | tuple = ()) -> str:
    """The shell line that trains ``cfg`` with ``torchrun``: one process per GPU on ``nnodes`` machines.

    ``data``: what ``--data`` gets (a folder, a Charades csv, several sources); ``extra``: further ``ino train``
    flags (``--video-root DIR``, ``--eval-davis ROOT``, ...). Config fields that differ from the preset become
    ``--section.field`` flags, so parsing the line gives back ``cfg`` exactly. ValueError for counts below 1.
    """
    if not isinstance(nproc_per_node, int) or nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be a whole number >= 1, got {nproc_per_node!r}")
    if not isinstance(nnodes, int) or nnodes < 1:
        raise ValueError(f"nnodes must be a whole number >= 1, got {nnodes!r}")
    launcher = ["torchrun"]
    if nnodes > 1:
        launcher += ["--nnodes", str(nnodes), "--rdzv_backend", "c10d", "--rdzv_endpoint", rdzv_endpoint]
    else:
        launcher += ["--standalone"]
    launcher += ["--nproc_per_node", str(nproc_per_node), "-m", "inolib", "train"]
    sources = [data] if isinstance(data, (str, Path)) else list(data)
    argv = [*launcher, *config_flags(cfg), "--data", *map(str, sources), "--out", str(out), "--device", device,
            *map(str, extra)]
    return " ".join(shlex.quote(a) for a in argv)


def run_size(cfg: C.INOConfig, num_videos: int, world_size: int, starts_per_video: int | None = None) -> dict:
    """How big a run of ``cfg`` on ``num_videos`` videos and ``world_size`` processes is, by the trainer's own rules.

    ``starts_per_video``: clip starts each video offers (default: enough for ``crops.clips_per_video``, true for
    any video of a few seconds at 8 fps). Returns ``clips_per_epoch``, ``clips_per_process`` (the sampler pads
    the last rank), ``clips_per_step`` (all processes), ``frames_per_step``, ``steps_per_epoch`` (the remainder
    of a process's share is dropped), ``total_steps`` and ``peak_lr``.
    """
    from ..data.clips import ClipSampler
    from ..schedules import make_schedules, peak_lr

    if not isinstance(num_videos, int) or num_videos < 1:
        raise ValueError(f"num_videos must be a whole number >= 1, got {num_videos!r}")
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a whole number >= 1, got {world_size!r}")
    k = cfg.crops.clips_per_video
    starts = k if starts_per_video is None else starts_per_video
    sampler = ClipSampler([starts] * num_videos, k, world_size=world_size)
    B = cfg.optim.batch_size_per_gpu
    steps = sampler.steps_per_epoch(B)
    total = len(make_schedules(cfg.optim, steps, cfg.crops.clip_len, world_size)["lr"])
    return {"clips_per_epoch": num_videos * min(starts, k), "clips_per_process": len(sampler),
            "clips_per_step": B * world_size, "frames_per_step": B * world_size * cfg.crops.clip_len,
            "steps_per_epoch": steps, "total_steps": total,
            "peak_lr": peak_lr(cfg.optim, cfg.crops.clip_len, world_size)}


def state_bytes(model: C.ModelConfig) -> dict:
    """Bytes per GPU of what training keeps between steps, from the parameter count of ``model``'s network
    (backbone + head): fp32 ``weights``, fp32 ``gradients``, AdamW's two fp32 moments (``adam``), the fp32
    ``teacher`` (same network), and ``params`` (the count). Exact arithmetic, no measurement."""
    from ..model import build_network, count_parameters

    with torch.device("meta"):  # shapes only: no memory, no time
        n = count_parameters(build_network(model))
    return {"params": n, "weights": 4 * n, "gradients": 4 * n, "adam": 8 * n, "teacher": 4 * n}


def activation_bytes(cfg: C.INOConfig, batch_size: int = 1, amp: str | None = None, mask_ratio: float = 0.5,
                     seed: int = 0) -> int:
    """Bytes of the tensors autograd saves for the backward pass of one training step of ``cfg``, measured.

    Runs the student on ``batch_size`` random clips at the config's crop sizes, masking ``mask_ratio`` of the
    patches (0.5, the paper's largest; 0: unmasked), plus the teacher and L_INO, under ``amp`` (default
    ``cfg.optim.amp``). Each saved storage counts once: the part of the GPU peak that grows with the batch.
    """
    # fp16 is counted as bf16 on a CPU (the same 2 bytes). A GPU's peak is higher (temporary buffers, the allocator's
    # cache, the CUDA context).
    from ..losses import INOLoss
    from ..model import build_network

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if not 0 <= mask_ratio <= 1:
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
    amp = cfg.optim.amp if amp is None else amp
    if amp not in ("bf16", "fp16", "none"):
        raise ValueError(f"amp must be bf16, fp16 or none, got {amp!r}")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    student = build_network(cfg.model).train()
    teacher = build_network(cfg.model, drop_path_rate=0.0).eval()
    criterion = INOLoss(cfg.loss, cfg.model.head_out_dim)
    c, T = cfg.crops, cfg.crops.clip_len
    glob = torch.randn(batch_size, T, 3, c.global_size, c.global_size, generator=g)
    loc = torch.randn(batch_size, T, c.num_local, 3, c.local_size, c.local_size, generator=g) if c.num_local else None
    n = (c.global_size // cfg.model.patch_size) ** 2
    mask = None
    if mask_ratio > 0:
        mask = torch.zeros(batch_size, T, n, dtype=torch.bool)
        mask[..., torch.randperm(n, generator=g)[:int(mask_ratio * n)]] = True  # the released shared pattern
    seen: dict = {}

    def pack(t: torch.Tensor):
        if t.device.type != "meta":
            seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp != "none"):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            s = student(glob, loc, mask)
            with torch.no_grad():
                t = teacher(glob, None, mask, apply_mask=False)
            criterion(s, t)
    return int(sum(seen.values()))


def memory_estimate(cfg: C.INOConfig, activations_per_clip: int, batch_size: int | None = None) -> dict:
    """GiB per GPU: :func:`state_bytes` plus ``activations_per_clip`` (bytes, from :func:`activation_bytes` at
    batch 1) times ``batch_size`` (default ``cfg.optim.batch_size_per_gpu``). Returns ``weights``,
    ``gradients``, ``adam``, ``teacher``, ``activations`` and ``total`` in GiB: a lower bound of the peak."""
    B = cfg.optim.batch_size_per_gpu if batch_size is None else batch_size
    if activations_per_clip < 0 or B < 1:
        raise ValueError(f"activations_per_clip must be >= 0 and batch_size >= 1, got {activations_per_clip}, {B}")
    s = state_bytes(cfg.model)
    gib = {k: s[k] / 2**30 for k in ("weights", "gradients", "adam", "teacher")}
    gib["activations"] = activations_per_clip * B / 2**30
    gib["total"] = sum(gib.values())
    return gib


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(rank: int, nproc: int, port: int, base: dict | None = None) -> dict:
    """The environment ``torchrun --standalone --nproc_per_node NPROC`` gives worker ``rank``: ``RANK``,
    ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``, and
    torchrun's ``OMP_NUM_THREADS=1`` for several workers unless ``base`` sets it. ``base`` defaults to this
    process's environment; ``PYTHONPATH`` gains the folder this ``inolib`` was imported from, so the worker runs
    the same code even where the package is not installed."""
    env = dict(os.environ if base is None else base)
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc),
               GROUP_RANK="0", RANK=str(rank), LOCAL_RANK=str(rank), PYTHONUNBUFFERED="1")
    if nproc > 1:
        env.setdefault("OMP_NUM_THREADS", "1")
    here = str(Path(sys.modules["inolib"].__file__).resolve().parent.parent)  # the folder holding inolib/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    return env


def launch_local(argv: list[str], nproc: int, log_dir: str | Path, timeout: float = 300.0) -> list[int]:
    """Run ``ino ARGV`` (e.g. ``["train", "--preset", "smoke"]``) in ``nproc`` fresh Python processes here.

    Each worker gets torchrun's environment (:func:`worker_env`) and logs to ``log_dir/rank<i>.log``: a rehearsal
    of a multi-GPU run (same process group, DDP and logging code; gloo on a CPU); use ``torchrun`` for real runs.
    Returns the exit codes in rank order; workers still running after ``timeout`` seconds, or on an interrupt,
    are killed (code -9).
    """
    # The workers are new interpreters (python -m inolib ARGV), never forks: a fork of a process that already runs
    # threads (a notebook kernel, torch's thread pool) can wait forever on a lock one of those threads held.
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ValueError(f"nproc must be a whole number >= 1, got {nproc!r}")
    if isinstance(argv, (str, bytes)) or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"argv must be a list of strings, got {argv!r}")
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    procs: list[subprocess.Popen] = []
    try:
        for rank in range(nproc):
            with open(log_dir / f"rank{rank}.log", "wb") as log:  # the child holds its own copy of the descriptor
                procs.append(subprocess.Popen([sys.executable, "-m", "inolib", *argv], stdout=log,
                                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              env=worker_env(rank, nproc, port)))
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    return [p.returncode for p in procs]
