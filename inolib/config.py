"""Configuration: plain dataclasses, presets, and dict round trips.

Every default is the paper's (or, where the paper is silent or differs, the released code's) and its
comment names the source: "Sec." and "App." are sections of the paper, "Tab."/"Fig." its tables and
figures, "released" is the authors' released code, github.com/pansanity666/INO_VOS,
named by file; ``docs/released_code.md`` sums up where it differs from the paper.

Override a field with ``dataclasses.replace`` (``replace(cfg, loss=replace(cfg.loss, teacher_temp=0.02))``)
or with :func:`override` and dotted keys (``override(cfg, {"loss.teacher_temp": 0.02})``), which is what
the command line uses. ``to_dict``/``from_dict`` turn a config into plain Python types, for checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any

# ImageNet statistics used by the released training augmentation (released augs.py).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The released inference normalises with std 0.228 for red, inherited from DINO/UVC
# (released dataset/Inference_Dataset.py).
INFERENCE_STD = (0.228, 0.224, 0.225)


@dataclass
class ModelConfig:
    """The ViT backbone and the projection head (one shared head for class and patch tokens)."""

    patch_size: int = 8  # ViT-S/8, Sec. 4.1
    embed_dim: int = 384  # ViT-S, Sec. 4.1 and released main_VOS.py
    depth: int = 12  # ViT-S: 12 blocks, Sec. 4.1
    num_heads: int = 6  # ViT-S, released vit_small
    mlp_ratio: float = 4.0  # ViT default, released (DINO vit_small)
    qkv_bias: bool = True  # released (DINO vit_small)
    drop_path_rate: float = 0.1  # student only, the teacher uses 0; released main_VOS.py
    pos_embed_size: int = 64  # position table initialised for 64x64 inputs (8x8 at patch 8), App. B.1.2
    pos_embed_resize: str = "released"  # "released" (DINO scale_factor+0.1 form, released ViT) or "timm"
    head_out_dim: int = 4096  # k, App. A.1 and App. B.1.5
    head_hidden_dim: int = 2048  # DINO head, App. A.1 ("same as [4]")
    head_bottleneck_dim: int = 256  # DINO head, App. A.1 ("same as [4]")
    head_num_layers: int = 3  # N_l, App. A.1 and App. B.1.4
    norm_last_layer: bool = True  # weight-norm gain fixed to 1, released (student and teacher)
    init: str = ""  # backbone weights to start from (a file or a weights name); "": random, as Sec. 4.1 trains
    # Fields of older versions, read from their checkpoints and dropped (the block of the label-propagation
    # features is propagation.feature_block; this one was never read).
    RETIRED = ("feature_block",)  # not annotated: a class attribute, not a field


# The paper's two backbones at patch 8 (Sec. 4.1, Tab. 6): ViT-S/8 (default) and ViT-T/8.
ARCHS = {
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6),  # Sec. 4.1
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3),  # Tab. 6
}


def with_arch(cfg: "INOConfig", arch: str) -> "INOConfig":
    """``cfg`` with the backbone swapped for one of ``ARCHS`` (e.g. ``"vit_tiny"`` for Tab. 6)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **ARCHS[arch]))


@dataclass
class CropConfig:
    """Video clips and per-frame multi-crop augmentation."""

    clip_len: int = 4  # L frames per clip, Sec. 4.1 and Fig. 5
    fps: float = 8.0  # "frameskip 8" = frames resampled to 8 fps, App. A.1 and the released loader
    clips_per_video: int = 5  # random clips per video per epoch, released RandomClipSampler
    global_size: int = 224  # global crop side, Sec. 4.1
    global_scale: tuple[float, float] = (0.8, 0.95)  # (s, 0.95) with s=0.8, Sec. 4.4 and released augs.py
    num_local: int = 8  # M local crops per frame, Sec. 4.1 and Fig. 5
    local_size: int = 64  # local crop side, Sec. 4.1
    local_scale: tuple[float, float] = (0.05, 0.8)  # (0.05, s) with s=0.8, Sec. 4.4 and released augs.py
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop aspect range, released augs.py
    global_flip_jitter: bool = False  # flip and colour jitter on global crops: off, Tab. 5 and App. A.1
    local_flip_jitter: bool = True  # flip and colour jitter on local crops: on, Tab. 5 and App. A.1
    flip_p: float = 0.5  # horizontal flip probability, released augs.py
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # ColorJitter b,c,s,h, released augs.py
    jitter_p: float = 0.8  # colour jitter probability, released augs.py
    grayscale_p: float = 0.2  # local crops only, released augs.py (not in the paper)
    blur_p: float = 0.5  # Gaussian blur on local crops, released augs.py (not in the paper)
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # released augs.py
    mean: tuple[float, float, float] = IMAGENET_MEAN  # released augs.py
    std: tuple[float, float, float] = IMAGENET_STD  # released augs.py


@dataclass
class MaskConfig:
    """Patch masking of the student's global crops (in-generative learning)."""

    mode: str = "random"  # "random" (released mask_generator.py) or "block" (paper's blockwise, Sec. 3.3)
    prob: float = 0.5  # probability that a step is masked (released --mask_prob), Sec. 4.1
    ratio: tuple[float, float] = (0.1, 0.5)  # r ~ U(r_l, r_h), Sec. 4.1 and App. B.1.1
    block_min_patches: int = 4  # smallest block (BEiT/iBOT default), used when mode="block"
    block_aspect: float = 0.3  # block aspect ratio range (a, 1/a) (BEiT/iBOT default)


@dataclass
class LossConfig:
    """The four generative losses, their temperatures, the center and the ablation switches."""

    student_temp: float = 0.1  # tau_s for class and patch distributions, Sec. 4.1
    teacher_temp: float = 0.04  # tau_t, Sec. 4.1 and Fig. 5 (constant in the released code)
    aff_student_temp: float = 0.1  # tau_s of the affinity loss, Sec. 4.4
    aff_teacher_temp: float = 0.04  # tau_t of the affinity loss, Sec. 4.4 and Fig. 5
    center_momentum: float = 0.9  # released DINOLoss (losses.py)
    center_update: str = "released"  # "released" (as the released losses.py: class center per frame
    # pair, patch center per masked frame) or "step"
    g2g: bool = True  # L_out_g2g on/off, Tab. 4
    l2g: bool = True  # L_out_l2g on/off, Tab. 4
    mim: bool = True  # L_in_mim on/off, Tab. 4
    aff: bool = True  # L_in_aff on/off, Tab. 4
    out_weighting: str = "reference"  # "reference" (one average over g2g+l2g terms, the released
    # calc_cross_frame_dino) or "paper" (Eq. 1 + Eq. 2)
    weight_out: float = 1.0  # weight of L_out, Eq. 6 and released main_VOS.py
    weight_mim: float = 1.0  # weight of L_in_mim, Eq. 6 and released main_VOS.py
    weight_aff: float = 1.0  # weight of L_in_aff, Eq. 6 and released main_VOS.py


@dataclass
class OptimConfig:
    """Optimisation and schedules (used by training)."""

    epochs: int = 25  # Sec. 4.1 (the released loop effectively ran 24)
    batch_size_per_gpu: int = 4  # clips per GPU, App. A.1
    base_lr: float = 0.003  # lr = base_lr * batch * L / 1024, App. A.1 (Charades)
    min_lr: float = 1e-6  # released train_charades.sh
    warmup_epochs: int = 5  # linear LR warmup, App. A.1 (Charades)
    weight_decay: float = 0.04  # cosine 0.04 -> 0.4, App. A.1
    weight_decay_end: float = 0.4  # App. A.1
    momentum_teacher: float = 0.996  # EMA momentum, App. A.1 and App. B.1.3 (cosine to 1, released code)
    clip_grad: float = 3.0  # per-parameter gradient-norm clipping, released utils.py
    freeze_last_layer: int = 0  # epochs with the head's last layer frozen: the released code's flag is 1 but
    # never froze (its epochs start at 1), so 0 reproduces it
    schedule: str = "clean"  # "clean" (all epochs, schedules from step 0) or "released" (released code
    # main_VOS.py loop: epochs - 1 of them, from step n)
    amp: str = "bf16"  # "bf16", "fp16" (released forces fp16) or "none"
    num_workers: int = 8  # data loader workers per process (released code: 24)
    seed: int = 0  # released utils.fix_random_seeds(0)


@dataclass
class PropagationConfig:
    """Label propagation for video object segmentation (DAVIS-2017 settings)."""

    topk: int = 5  # N_k, App. A.2
    num_context: int = 10  # N_c previous frames (plus the first frame), App. A.2
    radius: int = 40  # N_r, square window in patch cells, App. A.2 and released labelprop
    temperature: float = 0.1  # softmax temperature over the top-k, released labelprop/dino.py
    short_side: int = 480  # frames resized to a 480 short side, released infer_vos.sh
    round_to: int = 8  # long side floored to a multiple of this, released infer_vos.py
    resize: str = "released"  # "released" (cv2 bilinear on uint8, std 0.228, fp32; released code, DINO's too)
    # or "antialias" (torch antialiased bilinear on float, std 0.229, bf16 on a GPU)
    feature_block: int = 7  # 7th block through the final norm, Sec. 4.1 and released infer_vos.py
    checkpoint_key: str = "student"  # network taken from a checkpoint, released infer_vos.py
    batch: int = 4  # frames per forward pass when features are extracted (memory vs speed; BENCHMARKS.md)
    amp: bool = True  # bf16 autocast for the features on a GPU, the kernel in fp32; false: fp32 as released


@dataclass
class SyntheticConfig:
    """The seeded synthetic training videos of a ``synthetic:N`` data source (``inolib.data.synthetic``).

    Not in the paper: they give a CPU run moving, textured objects to track (the course's training recipe).
    Sizes measured on the DAVIS sample with the ``tiny`` preset (BENCHMARKS.md, "A model that learned").
    """

    num_frames: int = 96  # 4 s at 24 fps = 32 frames at the training 8 fps (BENCHMARKS.md)
    height: int = 192  # BENCHMARKS.md
    width: int = 256  # BENCHMARKS.md
    num_objects: int = 4  # BENCHMARKS.md
    fps: float = 24.0  # the DAVIS frame rate; resampled to crops.fps (8) as every training video (released code)
    seed: int = 0  # video i uses seed + i; seeds >= 10_000 are held out for evaluation (BENCHMARKS.md)


@dataclass
class INOConfig:
    """Everything a run needs. ``name`` is the preset it came from."""

    name: str = "charades"
    model: ModelConfig = field(default_factory=ModelConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    masking: MaskConfig = field(default_factory=MaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    propagation: PropagationConfig = field(default_factory=PropagationConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of Python types (tuples become lists), safe for ``torch.save``/JSON."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "INOConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        return from_dict(cls, d)


# ----------------------------------------------------------------------------------------------------
# Presets


def charades() -> INOConfig:
    """The paper's Charades run: ViT-S/8, 4 GPUs x 4 clips, 25 epochs (Sec. 4.1, App. A.1)."""
    return INOConfig(name="charades")


def kinetics() -> INOConfig:
    """The paper's Kinetics-400 run: 8 GPUs x 4 clips, lr 0.0003 base, 2 warmup epochs (App. A.1)."""
    return INOConfig(
        name="kinetics",
        optim=OptimConfig(base_lr=0.0003, warmup_epochs=2),  # App. A.1
    )


def tiny() -> INOConfig:
    """A few-million-parameter ViT at patch 8 that trains on a CPU in minutes (course and demo)."""
    return INOConfig(
        name="tiny",
        model=ModelConfig(
            embed_dim=192, depth=6, num_heads=3, drop_path_rate=0.0,
            head_out_dim=1024, head_hidden_dim=512, head_bottleneck_dim=128,
        ),
        # 20 clips per video and epoch: with the 3 bundled and 12 synthetic videos, 75 steps per epoch; 30 epochs,
        # 2,250 steps (about 75 minutes on 2 CPU cores): 10 epochs gained +0.042 J&F on the DAVIS sample, 30 gained
        # more than +0.1 (BENCHMARKS.md, "A model that learned"; data/checkpoints/README.md)
        crops=CropConfig(global_size=96, local_size=32, num_local=4, clips_per_video=20),
        optim=OptimConfig(epochs=30, batch_size_per_gpu=4, warmup_epochs=1, amp="none", num_workers=2),
        # block 4 of 6: the paper takes block 7 of 12, about the same depth share; short side measured, BENCHMARKS.md
        propagation=PropagationConfig(feature_block=4, short_side=240),
    )


def smoke() -> INOConfig:
    """Seconds on a CPU: exercises every code path of the full configuration with tiny sizes."""
    return INOConfig(
        name="smoke",
        model=ModelConfig(
            embed_dim=48, depth=2, num_heads=3, drop_path_rate=0.0,
            head_out_dim=128, head_hidden_dim=64, head_bottleneck_dim=32,
        ),
        crops=CropConfig(global_size=64, local_size=32, num_local=2),
        optim=OptimConfig(epochs=1, batch_size_per_gpu=2, warmup_epochs=0, amp="none", num_workers=0),
        propagation=PropagationConfig(feature_block=2, short_side=96, radius=6),
    )


PRESETS = {"smoke": smoke, "tiny": tiny, "charades": charades, "kinetics": kinetics}


def get_preset(name: str) -> INOConfig:
    """Return a fresh config for preset ``name`` (one of ``PRESETS``)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def smoke_mode() -> bool:
    """True when ``INOLIB_SMOKE`` is set to a true value (tests and CI set it to 1)."""
    return os.environ.get("INOLIB_SMOKE", "0").strip().lower() not in ("", "0", "false", "no")


COURSE_MODES = ("smoke", "laptop", "paper")


def course_mode(requested: str | None = None, gpu: bool | None = None) -> str:
    """How big a lesson runs: ``"smoke"`` (the tests: seconds on a CPU), ``"laptop"`` (minutes on a 2-core CPU,
    the shipped checkpoint where training would take too long) or ``"paper"`` (a GPU, the paper's sizes).

    ``requested`` (a lesson's ``MODE`` parameter, e.g. ``papermill -p MODE paper``) wins; otherwise
    ``INOLIB_SMOKE=1`` gives smoke, ``INOLIB_MODE`` names a mode, and else it is paper with a CUDA GPU
    (``gpu``; default: whether torch sees one) and laptop without.
    """
    if requested is None:
        if smoke_mode():
            return "smoke"
        requested = os.environ.get("INOLIB_MODE") or None
    if requested is not None:
        mode = str(requested).strip().lower()
        if mode not in COURSE_MODES:
            raise ValueError(f"mode must be one of {COURSE_MODES} (MODE parameter or INOLIB_MODE), got {requested!r}")
        return mode
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    return "paper" if gpu else "laptop"


# ----------------------------------------------------------------------------------------------------
# Validation


def _shown(value: Any) -> str:
    """A value as the command line spells it: ``0.8,0.95`` for a tuple, ``0`` for ``0.0``."""
    if isinstance(value, tuple):
        return ",".join(_shown(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _has_type(value: Any, tp: Any) -> bool:
    """Whether ``value`` is of the annotated type ``tp`` (an int is a float too; a bool is not a number)."""
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        return isinstance(value, tuple) and len(value) == len(args) and all(map(_has_type, value, args))
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return f"{len(typing.get_args(tp))} comma-separated numbers"
    return {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


# Upper bounds far beyond any real run (ViT-g is 40 blocks 1536 wide; DINO's head has 65536 outputs), so that a
# typo or a hostile file cannot make inolib build a 100,000-block network or a 10^8-pixel frame before failing.
UPPER_LIMITS = {
    "model.patch_size": 64, "model.embed_dim": 8192, "model.depth": 128, "model.num_heads": 128,
    "model.mlp_ratio": 16, "model.pos_embed_size": 8192, "model.head_out_dim": 262144,
    "model.head_hidden_dim": 65536, "model.head_bottleneck_dim": 8192, "model.head_num_layers": 16,
    "crops.clip_len": 256, "crops.fps": 1000, "crops.clips_per_video": 100000, "crops.global_size": 4096,
    "crops.num_local": 256, "crops.local_size": 4096, "crops.ratio": 100,
    "masking.block_min_patches": 100000,
    "optim.epochs": 100000, "optim.batch_size_per_gpu": 100000, "optim.warmup_epochs": 100000,
    "optim.num_workers": 1024, "optim.freeze_last_layer": 100000,
    "propagation.topk": 100000, "propagation.num_context": 10000, "propagation.radius": 100000,
    "propagation.short_side": 8192, "propagation.round_to": 8192, "propagation.feature_block": 128,
    "propagation.batch": 4096,
    "synthetic.num_frames": 100000, "synthetic.height": 8192, "synthetic.width": 8192, "synthetic.fps": 1000,
}


def problems(cfg: INOConfig) -> list[str]:
    """Every value of ``cfg`` that cannot work for training, one ``--section.field VALUE: reason`` each (empty
    when all is well). See :func:`validate`."""
    out: list[str] = []
    for key, tp, _ in iter_fields():  # types first: the rules below compare numbers
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if not _has_type(value, tp):
            out.append(f"--{key} {_shown(value)}: must be {_type_name(tp)}")
        elif any(isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, tuple)
                                                                        else (value,))):
            out.append(f"--{key} {_shown(value)}: must be finite (no inf or nan)")
        elif key in UPPER_LIMITS and any(v > UPPER_LIMITS[key] for v in (value if isinstance(value, tuple)
                                                                         else (value,))):
            out.append(f"--{key} {_shown(value)}: must be <= {UPPER_LIMITS[key]:g} (a bound no real run reaches, "
                       "checked before anything is built)")
    if out:
        return out

    def bad(key: str, rule: str) -> None:
        section, name = key.split(".")
        out.append(f"--{key} {_shown(getattr(getattr(cfg, section), name))}: {rule}")

    def at_least(key: str, low: float, why: str = "") -> None:
        section, name = key.split(".")
        if not getattr(getattr(cfg, section), name) >= low:
            bad(key, f"must be >= {low:g}" + (f" ({why})" if why else ""))

    def positive(key: str, why: str = "") -> None:
        section, name = key.split(".")
        if not getattr(getattr(cfg, section), name) > 0:
            bad(key, "must be > 0" + (f" ({why})" if why else ""))

    def probability(key: str) -> None:
        section, name = key.split(".")
        if not 0 <= getattr(getattr(cfg, section), name) <= 1:
            bad(key, "must be in [0, 1] (a probability)")

    def choice(key: str, allowed: tuple[str, ...]) -> None:
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) not in allowed:
            bad(key, "must be one of " + ", ".join(allowed))

    def scale_range(key: str) -> None:
        section, name = key.split(".")
        lo, hi = getattr(getattr(cfg, section), name)
        if not 0 < lo <= hi <= 1:
            bad(key, "must be MIN,MAX with 0 < MIN <= MAX <= 1 (shares of the frame's area)")

    m, c, k, loss, o, p, s = cfg.model, cfg.crops, cfg.masking, cfg.loss, cfg.optim, cfg.propagation, cfg.synthetic
    # model
    for key in ("model.patch_size", "model.embed_dim", "model.depth", "model.num_heads", "model.head_out_dim",
                "model.head_hidden_dim", "model.head_bottleneck_dim", "model.head_num_layers"):
        at_least(key, 1)
    if m.num_heads >= 1 and m.embed_dim >= 1 and m.embed_dim % m.num_heads:
        bad("model.num_heads", f"must divide --model.embed_dim {m.embed_dim}")
    positive("model.mlp_ratio")
    if not 0 <= m.drop_path_rate < 1:
        bad("model.drop_path_rate", "must be in [0, 1)")
    if m.patch_size >= 1 and (m.pos_embed_size < m.patch_size or m.pos_embed_size % m.patch_size):
        bad("model.pos_embed_size", f"must be a multiple of --model.patch_size {m.patch_size}")
    choice("model.pos_embed_resize", ("released", "timm"))
    # crops
    if c.clip_len < 2 or c.clip_len % 2:
        bad("crops.clip_len", "must be even and >= 2 (the out-losses pair frame n with frame L/2 + n)")
    positive("crops.fps", "frames per second the videos are resampled to")
    at_least("crops.clips_per_video", 1)
    at_least("crops.num_local", 0, "0: no local crops")
    for key, size in (("crops.global_size", c.global_size), ("crops.local_size", c.local_size)):
        if key == "crops.local_size" and c.num_local == 0:
            continue
        if m.patch_size >= 1 and (size < m.patch_size or size % m.patch_size):
            bad(key, f"must be a multiple of --model.patch_size {m.patch_size} (pixels)")
    scale_range("crops.global_scale")
    scale_range("crops.local_scale")
    if not 0 < c.ratio[0] <= c.ratio[1]:
        bad("crops.ratio", "must be MIN,MAX aspect ratios with 0 < MIN <= MAX")
    for key in ("crops.flip_p", "crops.jitter_p", "crops.grayscale_p", "crops.blur_p"):
        probability(key)
    if min(c.jitter) < 0 or c.jitter[3] > 0.5:
        bad("crops.jitter", "brightness, contrast, saturation must be >= 0 and hue in [0, 0.5]")
    if not 0 < c.blur_sigma[0] <= c.blur_sigma[1]:
        bad("crops.blur_sigma", "must be MIN,MAX with 0 < MIN <= MAX")
    if min(c.std) <= 0:
        bad("crops.std", "must be > 0 for every channel")
    # masking
    choice("masking.mode", ("random", "block"))
    probability("masking.prob")
    if not 0 <= k.ratio[0] <= k.ratio[1] <= 1:
        bad("masking.ratio", "must be MIN,MAX with 0 <= MIN <= MAX <= 1 (shares of the patches)")
    at_least("masking.block_min_patches", 1)
    if not 0 < k.block_aspect <= 1:
        bad("masking.block_aspect", "must be in (0, 1] (blocks take aspects from a to 1/a)")
    # losses
    for key in ("loss.student_temp", "loss.teacher_temp", "loss.aff_student_temp", "loss.aff_teacher_temp"):
        positive(key, "a softmax temperature")
    probability("loss.center_momentum")
    choice("loss.center_update", ("released", "step"))
    choice("loss.out_weighting", ("reference", "paper"))
    for key in ("loss.weight_out", "loss.weight_mim", "loss.weight_aff"):
        at_least(key, 0)
    if not (loss.g2g or loss.l2g or loss.mim or loss.aff):
        out.append("--loss.g2g/l2g/mim/aff false: every loss is off, there is nothing to learn from")
    # optimisation
    at_least("optim.epochs", 1)
    at_least("optim.batch_size_per_gpu", 1, "clips per process and step")
    at_least("optim.base_lr", 0)
    at_least("optim.min_lr", 0)
    if not 0 <= o.warmup_epochs <= max(o.epochs, 0):
        bad("optim.warmup_epochs", f"must be in 0..{o.epochs} (--optim.epochs)")
    at_least("optim.weight_decay", 0)
    at_least("optim.weight_decay_end", 0)
    probability("optim.momentum_teacher")
    at_least("optim.clip_grad", 0, "0: no clipping")
    at_least("optim.freeze_last_layer", 0, "epochs")
    choice("optim.schedule", ("clean", "released"))
    if o.schedule == "released" and o.epochs < 2:
        bad("optim.epochs", "must be >= 2 with --optim.schedule released (it runs epochs - 1 of them)")
    choice("optim.amp", ("bf16", "fp16", "none"))
    at_least("optim.num_workers", 0, "0: load in the main process")
    at_least("optim.seed", 0)
    # propagation (used by --eval-davis and by ino propagate with the trained model)
    at_least("propagation.topk", 1, "sources kept per query")
    at_least("propagation.num_context", 0, "previous frames")
    at_least("propagation.radius", 0, "patch cells")
    if not (p.temperature > 0 and p.temperature < float("inf")):
        bad("propagation.temperature", "must be a finite number > 0")
    at_least("propagation.round_to", 0, "0: the patch size")
    at_least("propagation.short_side", 0, "0: no resize")
    least = max(m.patch_size, p.round_to)
    if p.short_side and p.short_side < least:
        what = (f"one {m.patch_size}-pixel patch" if least == m.patch_size else
                f"--propagation.round_to {p.round_to} (the long side is floored to a multiple of it, the short side "
                f"to one of the patch size)")
        bad("propagation.short_side", f"is smaller than {what}: no feature grid is left; use at least {least}")
    choice("propagation.resize", ("released", "antialias"))
    if not 1 <= p.feature_block <= max(m.depth, 1):
        bad("propagation.feature_block", f"must be a block of the ViT: 1..{m.depth} (--model.depth)")
    choice("propagation.checkpoint_key", ("student", "teacher"))
    at_least("propagation.batch", 1, "frames per forward pass")
    # synthetic videos (synthetic:N sources)
    at_least("synthetic.num_frames", 1)
    at_least("synthetic.height", 16, "pixels")
    at_least("synthetic.width", 16, "pixels")
    if not 1 <= s.num_objects <= 254:
        bad("synthetic.num_objects", "must be in 1..254 (255 is the void label)")
    positive("synthetic.fps")
    at_least("synthetic.seed", 0)
    return out


def propagation_problems(p: PropagationConfig, patch_size: int | None = None, depth: int | None = None) -> list[str]:
    """:func:`problems`' rules for the propagation section alone, for a ViT of ``patch_size`` and ``depth``
    (None: not known yet, e.g. before a checkpoint is read; the rules that need them wait)."""
    patch = patch_size or 1
    model = dataclasses.replace(ModelConfig(), patch_size=patch, pos_embed_size=8 * patch,
                                depth=depth or UPPER_LIMITS["model.depth"])
    return [line for line in problems(INOConfig(model=model, propagation=p)) if line.startswith("--propagation.")]


def validate(cfg: INOConfig) -> INOConfig:
    """Check a whole configuration before it is used for training; returns ``cfg``. Every preset passes.

    Raises:
        ValueError: every value that cannot work (:func:`problems`), one per line, each named by its flag, e.g.
            ``--loss.teacher_temp 0: must be > 0 (a softmax temperature)``.
    """
    if not isinstance(cfg, INOConfig):
        raise ValueError(f"validate expects an INOConfig, got {type(cfg).__name__}")
    found = problems(cfg)
    if found:
        raise ValueError(("invalid configuration: " if len(found) > 1 else "") + "; ".join(found))
    return cfg


# ----------------------------------------------------------------------------------------------------
# Dict round trip and dotted overrides


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested dataclass -> dict of plain Python types (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` (bool, int, float, str, or a tuple of them)."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        value = list(value)
        if len(value) != len(args):
            raise ValueError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: expected a boolean, got {value!r}")
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    return value


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type, d: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) nested dict; missing keys keep defaults."""
    if not isinstance(d, dict):
        raise ValueError(f"config {where or cls.__name__}: expected a dict, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    d = {k: v for k, v in d.items() if k not in getattr(cls, "RETIRED", ())}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"config {where or cls.__name__}: unknown keys {unknown}")
    types = _field_types(cls)
    kwargs = {}
    for name, value in d.items():
        tp = types[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, key)
        else:
            kwargs[name] = _coerce(tp, value, key)
    return cls(**kwargs)


def override(cfg: INOConfig, overrides: dict[str, Any]) -> INOConfig:
    """Return a copy of ``cfg`` with dotted keys replaced, e.g. ``{"loss.teacher_temp": "0.02"}``.

    Values may be strings (as from the command line); they are converted to the field's type.
    """
    d = to_dict(cfg)
    for key, value in overrides.items():
        parts = key.split(".")
        node = d
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ValueError(f"unknown config key {key!r}")
            node = node[p]
        if parts[-1] not in node or isinstance(node[parts[-1]], dict):
            raise ValueError(f"unknown config key {key!r}")
        node[parts[-1]] = value
    return from_dict(INOConfig, d)


def iter_fields(cls: type = INOConfig, prefix: str = ""):
    """Yield ``(dotted_name, type, default)`` for every leaf field (the CLI builds its flags from this)."""
    types = _field_types(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        tp = types[f.name]
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, name + ".")
        else:
            yield name, tp, getattr(default, f.name)
