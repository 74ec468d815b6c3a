"""One INO training step, and the collapse monitors (Sec. 3.1).

    student -> masked global crops + local crops -> L_INO -> backward -> clip -> optimizer step
    teacher <- EMA of the student; centers <- teacher outputs

:class:`Trainer` is the full loop around :func:`train_step`: data, schedules, AMP, DDP, checkpoints with exact
resume, logs.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..atomic import atomic_write, remove_stale_temporaries
from ..checkpoint import save_checkpoint
from ..config import INOConfig, ModelConfig, validate
from ..data.clips import ClipDataset, ClipSampler, SkipLog, UnusableVideos, _seed, make_clip_loader
from ..data.index import VideoIndex, resolve_sources
from ..distributed import all_reduce_mean, barrier, ready
from ..losses import INOLoss
from ..masking import mask_sampler
from ..model import build_network
from ..schedules import make_schedules, param_groups
from ..teacher import ema_update, make_teacher, unwrap
from .lock import RunLock
from .log import truncate_log


@torch.no_grad()
def collapse_monitors(teacher_cls: torch.Tensor, center: torch.Tensor, teacher_temp: float,
                      as_tensors: bool = False) -> dict:
    """Signs of collapse of the teacher's class targets (B, T, K) or (R, K).

    ``entropy``: mean entropy of one target (-> 0 when every target is one-hot: sharpening wins);
    ``batch_entropy``: entropy of the batch-mean target (-> 0 when all targets pick the same dimension:
    collapse to one output; -> log K when targets are uniform: centering wins);
    ``top_share``: the largest probability of the batch-mean target.
    """
    t = teacher_cls.reshape(-1, teacher_cls.shape[-1]).float()
    q = torch.softmax((t - center.float()) / teacher_temp, dim=-1)
    ent = -(q * q.clamp_min(1e-12).log()).sum(-1).mean()
    mean_q = q.mean(0)
    batch_ent = -(mean_q * mean_q.clamp_min(1e-12).log()).sum()
    out = {"entropy": ent, "batch_entropy": batch_ent, "top_share": mean_q.max()}
    return out if as_tensors else {k: float(v) for k, v in out.items()}


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float) -> None:
    """Scale each parameter's gradient to norm at most ``max_norm`` (the released per-tensor rule, DINO's
    ``clip_gradients``: ``g *= max_norm / (|g| + 1e-6)`` where that is < 1), with multi-tensor ops and no host
    sync."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack(torch._foreach_norm(grads))
    coef = (max_norm / (norms.float() + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, list(coef.to(grads[0].dtype).unbind()))


def train_step(student: nn.Module, teacher: nn.Module, criterion: INOLoss, optimizer: torch.optim.Optimizer,
               global_crops: torch.Tensor, local_crops: torch.Tensor | None, mask: torch.Tensor | None,
               momentum: float, clip_grad: float = 0.0, update_center: bool = True,
               teacher_temp: float | None = None, *, amp_dtype: torch.dtype | None = None,
               scaler: torch.amp.GradScaler | None = None, freeze_last_layer: bool = False,
               as_tensors: bool = False) -> dict:
    """One optimisation step on a batch (Sec. 3, App. A.1): L_INO, backward, per-tensor clipping (``clip_grad``,
    0: off), optimizer step, EMA of the teacher with ``momentum``. Crops: global (B, T, 3, Hg, Wg), local
    (B, T, M, 3, Hl, Wl) or None; ``mask`` bool (B, T, N) or None; ``amp_dtype`` autocasts the forwards.

    Returns the loss terms, the collapse monitors and ``skipped`` (1 when no loss had a gradient; only the
    centers moved); 0-d tensors with ``as_tensors``.
    Raises:
        FloatingPointError: the loss is not finite (nothing has been updated).
    """
    student.train()
    with torch.autocast(global_crops.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        s = student(global_crops, local_crops, mask)
        with torch.no_grad():
            t = teacher(global_crops, None, mask, apply_mask=False)
        center_before = criterion.center.cls.clone()
        terms = criterion(s, t, update_center=update_center, teacher_temp=teacher_temp)
    loss = terms["loss"]
    finite = torch.isfinite(loss.detach()).float()
    if ready():
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)  # every process stops together
    if not finite.item():
        raise FloatingPointError(f"non-finite loss {float(loss.detach())} (on this or another process): "
                                 + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items()))
    tt = criterion.cfg.teacher_temp if teacher_temp is None else teacher_temp
    out = {k: v.detach() for k, v in terms.items()}
    out.update(collapse_monitors(t["cls_global"], center_before, tt, as_tensors=True))
    if not loss.requires_grad:  # no term depends on the student in this step: nothing to learn from it
        out["skipped"] = torch.tensor(1.0)  # on the CPU: known without a device sync
        return out if as_tensors else {k: float(v) for k, v in out.items()}
    out["skipped"] = torch.tensor(0.0)
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip_grad > 0:
        clip_gradients(list(student.parameters()), clip_grad)
    if freeze_last_layer:
        for p in unwrap(student).head.last_layer.parameters():
            p.grad = None
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    ema_update(student, teacher, momentum)
    return out if as_tensors else {k: float(v) for k, v in out.items()}


# ----------------------------------------------------------------------------------------------------
# The training loop


def init_backbone_state(model: ModelConfig) -> dict:
    """The backbone weights ``model.init`` names (a file or a weights name, fetched once), as a state dict for a
    backbone of ``model``: the position table resized to its grid; a missing mask token keeps its random init.
    Raises: ValueError naming ``--model.init`` when the file's ViT is not the configured one."""
    from ..checkpoint import load_backbone
    from ..weights import resolve

    vit, report = load_backbone(resolve(model.init))
    want = (model.patch_size, model.embed_dim, model.depth, model.num_heads)
    got = (report["patch_size"], report["embed_dim"], report["depth"], vit.blocks[0].attn.num_heads)
    state = vit.state_dict()
    scaled = any(k.endswith(".ls1.gamma") for k in state)  # DINOv2's LayerScale: not in inolib's training ViT
    if got != want or scaled:
        raise ValueError(f"--model.init {model.init}: a ViT of patch {got[0]}, width {got[1]}, {got[2]} blocks, "
                         f"{got[3]} heads{' with LayerScale' if scaled else ''}; this run trains patch {want[0]}, "
                         f"width {want[1]}, {want[2]} blocks, {want[3]} heads without LayerScale (--model.*)")
    g = model.pos_embed_size // model.patch_size
    state["pos_embed"] = vit.pos_embed_for((g, g)).detach().clone()  # the file's table on this run's grid
    if not report["mask_token"]:
        del state["mask_token"]
    return state


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT (Ctrl-C) or SIGTERM after writing a checkpoint; ``signum`` says which."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class StopRequests:
    """While active, SIGINT and SIGTERM only set :attr:`signum`; the loop stops at the next step boundary.

    A second Ctrl-C raises KeyboardInterrupt at once (for a step that hangs). Outside the main thread (where
    Python cannot install handlers) nothing changes.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def _handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


def _rng_state() -> dict:
    """Every generator's state in plain tensors and numbers (so checkpoints load with ``weights_only=True``)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": [version, list(mt), gauss],
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's current GPU
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _whole(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_run_args(*, max_steps: int | None = None, log_every: int = 10, save_every: int = 500, keep_every: int = 5,
                   eval_every: int = 250, max_seconds: float | None = None, index_workers: int = 8) -> None:
    """ValueError naming the ``ino train`` flag (``--max-steps``, ``--log-every``, ...) of a :class:`Trainer`
    argument that cannot work: ``max_steps`` must be None (all epochs) or >= 1; ``log_every``, ``save_every``
    and ``eval_every`` >= 1 (steps); ``keep_every`` >= 0 (epochs, 0: never); ``max_seconds`` None or > 0."""
    found = []
    if max_steps is not None and (not _whole(max_steps) or max_steps < 1):
        found.append(f"--max-steps {max_steps}: must be >= 1 (omit it to train every epoch)")
    for flag, value in (("--log-every", log_every), ("--save-every", save_every), ("--eval-every", eval_every)):
        if not _whole(value) or value < 1:
            found.append(f"{flag} {value}: must be >= 1 (steps)")
    if not _whole(keep_every) or keep_every < 0:
        found.append(f"--keep-every {keep_every}: must be >= 0 (epochs; 0 keeps no per-epoch copy)")
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
        found.append(f"max_seconds {max_seconds}: must be > 0 (a time budget in seconds)")
    if not _whole(index_workers) or index_workers < 1:
        found.append(f"index_workers {index_workers}: must be >= 1")
    if found:
        raise ValueError("; ".join(found))


class Trainer:
    """INO training (Sec. 3, App. A.1): student + EMA teacher on clips of unlabeled videos.

        trainer = Trainer(cfg, sources=["data/videos"], out_dir="runs/smoke", device="cpu")
        trainer.fit()            # resumes from out_dir/checkpoint.pth when it exists

    ``sources``: video folders or files, list files (found under ``video_root``) and ``synthetic:N``.
    ``out_dir`` receives ``checkpoint.pth`` (atomic), ``log.jsonl`` and TensorBoard scalars; a resumed run
    computes the same steps as an uninterrupted one, and a non-finite loss stops it with the last good
    checkpoint kept. Raises: ValueError naming the ``ino train`` flag of a bad argument, before any work.
    """
    # Per step: per-frame crops of B clips, one shared mask, L_INO, AdamW on per-step schedules, per-tensor
    # clipping, teacher EMA; bf16/fp16 autocast; torchrun DDP (student wrapped, teacher local, centers averaged).
    # Resume restores weights, optimizer, scaler, centers, every RNG and the position in the epoch;
    # log.jsonl is cut back to the starting step (truncate_log); a killed writer's temporaries are removed.

    def __init__(self, cfg: INOConfig, sources, out_dir: str | Path, device: str | torch.device = "cpu",
                 resume: bool = True, log_every: int = 10, save_every: int = 500, keep_every: int = 5,
                 progress: bool = True, tensorboard: bool = True, max_steps: int | None = None,
                 index_workers: int = 8, eval_davis: str | Path | None = None, eval_every: int | None = None,
                 eval_networks: tuple[str, ...] = ("student", "teacher"), max_seconds: float | None = None,
                 video_root: str | Path | None = None):
        from ..distributed import init_distributed

        # everything given is checked before any work (no video indexed, no model built, no folder made)
        validate(cfg)
        check_run_args(max_steps=max_steps, log_every=log_every, save_every=save_every, keep_every=keep_every,
                       eval_every=250 if eval_every is None else eval_every, max_seconds=max_seconds,
                       index_workers=index_workers)
        if eval_every is not None and eval_davis is None:
            raise ValueError(f"--eval-every {eval_every}: J&F is measured only with --eval-davis ROOT (a DAVIS "
                             "folder such as data/davis_sample/DAVIS); give both or neither")
        eval_every = 250 if eval_every is None else eval_every  # steps between evaluations, with eval_davis
        self.cfg = cfg
        self._draw_mask = mask_sampler(cfg.masking)  # the masking config, checked once
        self.out = Path(out_dir)
        self.dist = init_distributed(device)
        self.device = self.dist.device
        self.log_every, self.save_every, self.keep_every = log_every, save_every, keep_every
        self.progress = progress and self.dist.is_main
        self.max_steps = max_steps
        self.max_seconds = max_seconds  # a time budget for fit(): it stops at the first step boundary after it
        bad = set(eval_networks) - {"student", "teacher"}
        if bad or not eval_networks:
            raise ValueError(f"eval_networks must be 'student' and/or 'teacher', got {eval_networks!r}")
        self.eval_davis, self.eval_every, self.eval_networks = eval_davis, eval_every, tuple(eval_networks)
        self.eval_sequences = None
        if eval_davis is not None and self.dist.is_main:
            from ..vos.validation import load_davis_for_validation

            self.eval_sequences = load_davis_for_validation(eval_davis)  # read once, before any training
        # the data sources too: a typo in --data must not leave a new run folder behind
        plan = self._plan_sources(sources, video_root)
        resuming = resume and (self.out / "checkpoint.pth").is_file()
        init = None if resuming or not cfg.model.init else init_backbone_state(cfg.model)  # read (fetched) once
        self.amp_dtype = AMP_DTYPES[cfg.optim.amp]
        if self.amp_dtype is torch.float16 and self.device.type == "cpu":
            warnings.warn("optim.amp fp16 is for GPUs; using bf16 autocast on the CPU", stacklevel=2)
            self.amp_dtype = torch.bfloat16
        self.out.mkdir(parents=True, exist_ok=True)
        self.lock = RunLock(self.out)
        if self.dist.is_main:
            self.lock.acquire()  # one writer per run folder; released when fit() returns (or by close())
            # what a killed writer left half-written (checkpoint.pth.tmpPID, ...): we hold the folder now
            remove_stale_temporaries(self.out)
        torch.manual_seed(cfg.optim.seed)

        # data: every process indexes the same sources (cached), then takes its share of the clips
        paths = self._source_paths(plan)
        cache = self.out / "video_index.json"
        if self.dist.distributed and not self.dist.is_main:
            barrier()  # rank 0 probes the videos once; the others read its cache
        index = VideoIndex.build(paths, cache_file=cache, workers=index_workers, progress=self.progress)
        if self.dist.distributed and self.dist.is_main:
            barrier()
        self.dataset = ClipDataset(index, cfg.crops)
        self.sampler = ClipSampler(self.dataset.num_starts, cfg.crops.clips_per_video, seed=cfg.optim.seed,
                                   rank=self.dist.rank, world_size=self.dist.world_size)
        self.steps_per_epoch = self.sampler.steps_per_epoch(cfg.optim.batch_size_per_gpu)
        self.skips = SkipLog(self.dataset.index_skipped)

        # networks, loss, optimiser, schedules
        student = build_network(cfg.model)
        if init is not None:  # pretrained backbone weights; the heads start fresh (the teacher copies the student)
            result = student.backbone.load_state_dict(init, strict=False)
            assert not result.unexpected_keys and set(result.missing_keys) <= {"mask_token"}, result
        student = student.to(self.device)
        self.teacher = make_teacher(student, cfg.model).to(self.device)
        self.student = student
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP
            self.student = DDP(student, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.criterion = INOLoss(cfg.loss, cfg.model.head_out_dim).to(self.device)
        self.optimizer = torch.optim.AdamW(param_groups(student), lr=0.0, weight_decay=0.0)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype is torch.float16 else None
        self.schedules = make_schedules(cfg.optim, self.steps_per_epoch, cfg.crops.clip_len, self.dist.world_size)
        self.grid = (cfg.crops.global_size // cfg.model.patch_size,) * 2
        self.step = 0  # optimisation steps done
        self._postfix: dict[str, str] = {}  # what the progress bar shows after the counts
        self.skipped_steps = 0  # steps whose loss had no gradient (nothing to learn), see train_step
        self.last_checkpoint: Path | None = None
        if resuming:
            self.load(self.out / "checkpoint.pth")
        if self.dist.is_main:
            truncate_log(self.out / "log.jsonl", self.step)  # each step once in the log, also after a kill
        self._tb = None
        if tensorboard and self.dist.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(self.out / "tb"))
            except ImportError:  # tensorboard is optional at run time
                self._tb = None

    def _plan_sources(self, sources, video_root) -> list:
        """``sources`` checked before anything is written: each item becomes the video paths it names (a
        folder, a video, a list file: :func:`inolib.data.index.resolve_sources`) or, for ``"synthetic:N"``, the
        number N (its seeds checked). ``ValueError`` / ``FileNotFoundError`` naming the bad source; ValueError
        when no video and no synthetic source remains, or when the run folder lies in a source folder, the
        ``video_root`` or the ``eval_davis`` folder (the user's data: nothing is written there)."""
        from ..atomic import is_inside
        from ..data.synthetic import check_training_seeds, parse_synthetic_source

        items = list(sources) if isinstance(sources, (list, tuple)) else [sources]
        inputs = [("--data", Path(s)) for s in items if isinstance(s, (str, Path)) and Path(s).is_dir()]
        inputs += [("--video-root", Path(video_root))] if video_root is not None else []
        inputs += [("--eval-davis", Path(self.eval_davis))] if self.eval_davis is not None else []
        for flag, folder in inputs:
            if is_inside(self.out, folder):
                raise ValueError(f"--out {self.out}: inside the {flag} folder {folder}; the run's checkpoints, logs "
                                 "and synthetic videos must not be written among your data: choose a folder "
                                 "outside it")
        plan = []
        for item in items:
            n = parse_synthetic_source(item)
            if n is not None:
                check_training_seeds(n, self.cfg.synthetic)
            plan.append(n if n is not None else resolve_sources(item, root=video_root))
        if not any(isinstance(p, int) or p for p in plan):
            raise ValueError(f"no video found in {sources!r}")
        return plan

    def _source_paths(self, plan: list) -> list[Path]:
        """The video paths of a :meth:`_plan_sources` plan, in order, with each synthetic N replaced by N seeded
        synthetic videos written (once, by the main process) into ``OUT/synthetic``."""
        from ..data.synthetic import training_video_paths, write_training_videos

        out = []
        for item in plan:
            if not isinstance(item, int):
                out.extend(item)
                continue
            if self.dist.is_main:
                paths = write_training_videos(self.out / "synthetic", item, self.cfg.synthetic)
            barrier()
            if not self.dist.is_main:
                paths = training_video_paths(self.out / "synthetic", item, self.cfg.synthetic)
            out.extend(paths)
        seen, once, twice = set(), [], []  # a folder or synthetic:N given twice, a video in a folder and a list
        for p in out:
            real = p.resolve()
            (twice if real in seen else once).append(p)
            seen.add(real)
        if twice and self.dist.is_main:
            warnings.warn(f"--data: {len(twice)} video(s) given more than once are used once: "
                          + ", ".join(map(str, twice[:5])) + (" ..." if len(twice) > 5 else ""), stacklevel=3)
        return once

    @property
    def total_steps(self) -> int:
        return len(self.schedules["lr"])  # epochs x steps per epoch (one epoch fewer with optim.schedule released)

    # -- checkpoints ---------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Everything a resumed run needs, written atomically (main process only)."""
        path = Path(path)
        rng = [_rng_state()]  # one state per process (drop-path draws differ between GPUs)
        if self.dist.distributed:
            rng = [None] * self.dist.world_size
            torch.distributed.all_gather_object(rng, _rng_state())
        if self.dist.is_main:
            save_checkpoint(path, self.cfg, self.student, self.teacher, optimizer=self.optimizer.state_dict(),
                            scaler=self.scaler.state_dict() if self.scaler else None,
                            criterion=self.criterion.state_dict(), step=self.step,
                            epoch=self.step // self.steps_per_epoch, steps_per_epoch=self.steps_per_epoch,
                            world_size=self.dist.world_size, rng=rng, skipped_steps=self.skipped_steps)
        barrier()
        self.last_checkpoint = path
        return path

    def load(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save` (errors name the file and the mismatch)."""
        path = Path(path)
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - truncated file, foreign pickle, ...
            raise ValueError(f"{path}: not a resumable inolib checkpoint ({str(e).splitlines()[0][:200]})") from None
        if not isinstance(ck, dict):
            raise ValueError(f"{path}: not a resumable inolib checkpoint (a {type(ck).__name__}, not a dict)")
        for key in ("student", "teacher", "optimizer", "criterion", "step", "rng"):
            if key not in ck:
                raise ValueError(f"{path}: not a resumable inolib checkpoint (no {key!r})")
        mine, theirs = self.cfg.to_dict(), ck.get("config")
        if not isinstance(theirs, dict):
            raise ValueError(f"{path}: not a resumable inolib checkpoint (its 'config' is not a dict)")
        section = lambda sec: theirs.get(sec) if isinstance(theirs.get(sec), dict) else {}  # noqa: E731
        default = INOConfig().to_dict()  # a field newer than the checkpoint counts as its default
        diff = [f"{sec}.{k}" for sec in mine if isinstance(mine[sec], dict)
                for k in mine[sec] if (sec, k) != ("optim", "num_workers")
                and mine[sec][k] != section(sec).get(k, default[sec][k])]
        if diff:
            raise ValueError(f"{path}: written with another configuration ({', '.join(diff[:8])} differ); "
                             "resume with the same flags, or start a new run (another --out, or --no-resume)")
        if ck.get("steps_per_epoch") != self.steps_per_epoch or ck.get("world_size") != self.dist.world_size:
            raise ValueError(f"{path}: written with {ck.get('steps_per_epoch')} steps per epoch on "
                             f"{ck.get('world_size')} processes; this run has {self.steps_per_epoch} on "
                             f"{self.dist.world_size} (same data, batch size and process count are needed to resume)")
        try:
            step, skipped = int(ck["step"]), int(ck.get("skipped_steps", 0))
            if step < 0 or skipped < 0:
                raise ValueError(f"step {step} and skipped_steps {skipped} must be >= 0")
            unwrap(self.student).load_state_dict(ck["student"])
            self.teacher.load_state_dict(ck["teacher"])
            self.optimizer.load_state_dict(ck["optimizer"])
            if self.scaler is not None and ck.get("scaler"):
                self.scaler.load_state_dict(ck["scaler"])
            self.criterion.load_state_dict(ck["criterion"])
            _set_rng_state(ck["rng"][self.dist.rank])
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            # a damaged file; nothing was written, and the run stops here (start over with --no-resume)
            reason = " ".join(str(e).split())[:200]
            raise ValueError(f"{path}: not a resumable inolib checkpoint ({type(e).__name__}: {reason}); "
                             "--no-resume starts over") from None
        self.step, self.skipped_steps = step, skipped
        self.last_checkpoint = path

    # -- logging -------------------------------------------------------------------------------------

    def _log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None and "step" in record and "event" not in record:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    group = "eval" if k.startswith("jf_") or k == "eval_seconds" else "train"
                    self._tb.add_scalar(f"{group}/{k}", v, record["step"])

    # -- the loop ------------------------------------------------------------------------------------

    def _mask(self, batch_size: int) -> torch.Tensor | None:
        """The step's mask, bool (B, T, N), or None when no in-loss is on (the released code masks only for
        L_in_mim / L_in_aff). Seeded by the run seed and the step, not the rank: every process draws the same
        mask, including whether the step is masked at all (the released code broadcasts rank 0's)."""
        if not (self.cfg.loss.mim or self.cfg.loss.aff):
            return None
        g = torch.Generator().manual_seed(_seed(self.cfg.optim.seed, self.step))
        return self._draw_mask(batch_size, self.cfg.crops.clip_len, self.grid, g)

    def evaluate(self) -> dict:
        """J&F-Mean of each of ``eval_networks`` on the ``eval_davis`` sequences (main process; the others wait).

        Runs the backbones in eval mode under forked RNGs, so training continues exactly as without it.
        Returns ``{"jf_student": ..., "jf_teacher": ..., "eval_seconds": ...}`` ({} without ``eval_davis``).
        """
        record = {}
        if self.eval_davis is None:
            return record
        if self.dist.is_main:
            from ..vos.validation import davis_jf

            t0 = time.perf_counter()
            nets = {"student": unwrap(self.student).backbone, "teacher": unwrap(self.teacher).backbone}
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                for name in self.eval_networks:
                    record[f"jf_{name}"] = davis_jf(nets[name], self.eval_sequences, self.cfg.propagation,
                                                    self.device)["J&F-Mean"]
            record["eval_seconds"] = time.perf_counter() - t0
        barrier()
        return record

    def _log_eval(self, epoch: int) -> dict:
        """Evaluate, log the record (JSONL, TensorBoard ``eval/``) and show it on the progress bar."""
        record = self.evaluate()
        if record:
            self._log({"step": self.step, "epoch": epoch, **record})
            self._postfix.update({f"J&F {k[3:]}": f"{v:.3f}" for k, v in record.items() if k.startswith("jf_")})
        return record

    def close(self) -> None:
        """Release the run folder (another Trainer may then write to it) and flush TensorBoard."""
        self.lock.release()
        if self._tb is not None:
            self._tb.flush()

    def fit(self) -> dict:
        """Train until ``optim.epochs`` (or ``max_steps``); returns the last logged record.

        SIGINT (Ctrl-C) or SIGTERM makes it write a checkpoint at the next step boundary and raise
        :class:`TrainingInterrupted`; running again resumes exactly. The run folder is locked meanwhile.
        """
        if self.dist.is_main:
            self.lock.acquire()
        try:
            with StopRequests() as stop:
                return self._fit(stop)
        finally:
            self.close()

    def _max_over_processes(self, value: float) -> float:
        """The largest ``value`` of any process (one all-reduce in DDP, none in a single process), so every
        process takes the same decision (stop on a signal, stop when the time budget is spent)."""
        if not self.dist.distributed:
            return value
        t = torch.tensor([float(value)], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return float(t.item())

    def _checked(self, batches, epoch: int, bar):
        """``batches``, with :class:`UnusableVideos` (no video left that decodes) re-raised with the dataset's own
        one-line message (a loader worker's error carries its traceback), logged as an event, the progress ``bar``
        closed first (the message then starts a line of its own).

        The loader's worker processes are shut down as soon as the loop ends, by a ``break``, the end of the epoch
        or any exception: an exception kept alive (by a caller or a notebook) would otherwise keep the workers
        waiting, and since they ignore SIGTERM (see :mod:`inolib.data.clips`), the interpreter could not end them
        at exit."""
        try:
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                except UnusableVideos as e:
                    error = UnusableVideos.from_loader(e)
                    bar.close()
                    self._log({"event": "no_usable_video", "step": self.step, "epoch": epoch + 1,
                               "error": str(error)})
                    raise error from None
                yield batch
        finally:
            shutdown = getattr(batches, "_shutdown_workers", None)  # multi-process loader iterators only
            if shutdown is not None:
                shutdown()

    def _fit(self, stop: StopRequests) -> dict:
        cfg, o = self.cfg, self.cfg.optim
        end = self.total_steps if self.max_steps is None else min(self.total_steps, self.max_steps)
        started = time.perf_counter()
        loader_kw = dict(batch_size=o.batch_size_per_gpu, num_workers=o.num_workers,
                         pin_memory=self.device.type == "cuda")
        last: dict = {}
        if self.dist.is_main:
            self._log({"event": "start" if self.step == 0 else "resume", "step": self.step,
                       "config": cfg.to_dict(), "world_size": self.dist.world_size,
                       "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps})
        if self.step == 0 and self.step < end:
            self._log_eval(0)  # the starting point of the run's learning curve (random init)
        while self.step < end:
            epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch, skip=in_epoch * o.batch_size_per_gpu)
            loader = make_clip_loader(self.dataset, self.sampler, **loader_kw)
            with torch.random.fork_rng(devices=[]):  # the loader's seed draw must not move the global RNG
                batches = iter(loader)
            bar = tqdm(total=self.steps_per_epoch, initial=in_epoch, desc=f"epoch {epoch + 1}/{self.total_steps // self.steps_per_epoch}",
                       unit="step", disable=not self.progress)
            t0, seen = time.perf_counter(), 0
            for batch in self._checked(batches, epoch, bar):
                if self.step >= end:
                    break
                self.skips.update(batch)
                it = self.step
                for group in self.optimizer.param_groups:
                    group["lr"] = float(self.schedules["lr"][it])
                    if group.get("decay", True):
                        group["weight_decay"] = float(self.schedules["wd"][it])
                g = batch["globals"].to(self.device, non_blocking=True)
                loc = batch["locals"].to(self.device, non_blocking=True) if cfg.crops.num_local else None
                mask = self._mask(g.shape[0])
                masked = float(mask.float().mean()) if mask is not None else 0.0
                if mask is not None:
                    mask = mask.to(self.device, non_blocking=True)
                try:
                    terms = train_step(self.student, self.teacher, self.criterion, self.optimizer, g, loc, mask,
                                       momentum=float(self.schedules["momentum"][it]), clip_grad=o.clip_grad,
                                       amp_dtype=self.amp_dtype, scaler=self.scaler,
                                       freeze_last_layer=epoch < o.freeze_last_layer, as_tensors=True)
                except FloatingPointError as e:
                    kept = self.last_checkpoint or "none yet"
                    self._log({"event": "nan", "step": it + 1, "epoch": epoch + 1, "error": str(e)})
                    raise FloatingPointError(f"step {it + 1} (epoch {epoch + 1}): {e}. Training stopped; the "
                                             f"last good checkpoint is {kept}") from None
                if float(terms.pop("skipped")):
                    self.skipped_steps += 1
                self.step += 1
                seen += g.shape[0]
                bar.update(1)
                if self.max_seconds is not None and self._max_over_processes(
                        time.perf_counter() - started >= self.max_seconds):
                    end = self.step  # the time budget is spent: this step is the last (logged, evaluated, saved)
                if self.step % self.log_every == 0 or self.step == end:
                    vals = all_reduce_mean({k: float(v) for k, v in terms.items()}, self.device)
                    dt = time.perf_counter() - t0
                    last = {"step": self.step, "epoch": epoch + 1, "lr": float(self.schedules["lr"][it]),
                            "wd": float(self.schedules["wd"][it]),
                            "momentum": float(self.schedules["momentum"][it]), **vals,
                            "masked": masked, "clips_per_s": seen * self.dist.world_size / max(dt, 1e-9),
                            "skipped_videos": self.skips.count, "skipped_steps": self.skipped_steps}
                    self._log(last)
                    self._postfix["loss"] = f"{vals['loss']:.3f}"
                    bar.set_postfix(self._postfix)
                if self.step % self.eval_every == 0 or self.step == end:
                    self._log_eval(epoch + 1)
                    bar.set_postfix(self._postfix)
                if self.step % self.save_every == 0 and self.step % self.steps_per_epoch:
                    self.save(self.out / "checkpoint.pth")
                signum = int(self._max_over_processes(stop.signum or 0))  # the same on every process
                if signum:
                    bar.close()
                    path = self.save(self.out / "checkpoint.pth")
                    name = signal.Signals(signum).name
                    self._log({"event": "interrupted", "step": self.step, "signal": name})
                    raise TrainingInterrupted(f"{name} received: stopped after step {self.step} (epoch {epoch + 1}); "
                                              f"checkpoint {path}. Run the same command again to resume.", signum)
            bar.close()
            if self.step % self.steps_per_epoch == 0:  # an epoch ended
                latest = self.save(self.out / "checkpoint.pth")
                done = self.step // self.steps_per_epoch
                if self.keep_every and done % self.keep_every == 0 and self.dist.is_main:
                    keep = self.out / f"checkpoint_e{done:04d}.pth"
                    atomic_write(keep, lambda tmp: shutil.copyfile(latest, tmp))
            elif self.step >= end:  # stopped by max_steps mid-epoch
                self.save(self.out / "checkpoint.pth")
        return last
