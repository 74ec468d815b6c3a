"""Time one INO training step (student + teacher forward, the four losses, backward) and show what
running the head only on tokens that feed a loss saves, against the released code's head on every
global and local patch token.

    python benchmarks/train_step.py --preset tiny --batch 2 --device cpu
    python benchmarks/train_step.py --preset charades --batch 4 --device cuda --amp bf16

Prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from inolib import config as C
from inolib.losses import INOLoss
from inolib.masking import random_mask
from inolib.model import build_network, count_parameters
from inolib.teacher import make_teacher
from inolib.run.trainer import clip_gradients


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=sorted(C.PRESETS))
    ap.add_argument("--batch", type=int, default=2, help="clips per step")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    ap.add_argument("--ratio", type=float, default=0.3, help="mask ratio of the timed (masked) step")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    torch.manual_seed(0)
    cfg = C.get_preset(args.preset)
    dev = torch.device(args.device)
    m, c = cfg.model, cfg.crops
    B, T, M = args.batch, c.clip_len, c.num_local
    student = build_network(m).to(dev)
    teacher = make_teacher(student, m).to(dev)
    crit = INOLoss(cfg.loss, m.head_out_dim).to(dev)
    g = torch.randn(B, T, 3, c.global_size, c.global_size, device=dev)
    l = torch.randn(B, T, M, 3, c.local_size, c.local_size, device=dev)
    grid = (c.global_size // m.patch_size,) * 2
    N = grid[0] * grid[1]
    mask = random_mask(B, T, grid, (args.ratio, args.ratio), 1.0, torch.Generator().manual_seed(0))
    P = int(mask[0, 0].sum())
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    amp = torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None)

    def backward(masked: bool):
        """Student and teacher forward, L_INO, backward: leaves the gradients on the student."""
        mk = mask if masked else None
        with amp:
            s = student(g, l, mk)
            with torch.no_grad():
                t = teacher(g, None, mk, apply_mask=False)
            loss = crit(s, t)["loss"]
        loss.backward()

    def step(masked: bool):
        backward(masked)
        student.zero_grad(set_to_none=True)

    step(True)  # warm-up
    t_masked = _time(lambda: step(True), dev, args.repeats)
    t_plain = _time(lambda: step(False), dev, args.repeats)

    # The head on what the released code feeds it: every global patch token (student and teacher)
    # and every local crop's patch tokens (student), on top of the class tokens.
    n_local_patch = (c.local_size // m.patch_size) ** 2
    ours_rows = B * T * (1 + M + P) + B * T * (1 + P)
    released_rows = B * T * (1 + M + N + M * n_local_patch) + B * T * (1 + N)
    x_ours = torch.randn(ours_rows, m.embed_dim, device=dev)
    x_rel = torch.randn(released_rows, m.embed_dim, device=dev)
    with torch.no_grad(), amp:
        h_ours = _time(lambda: student.head(x_ours), dev, args.repeats)
        h_rel = _time(lambda: student.head(x_rel), dev, args.repeats)

    # Gradient clipping at 3.0 per parameter tensor: the released loop (one norm and one scale per tensor)
    # against inolib.run.trainer.clip_gradients (multi-tensor norms and scales), on this model's gradients.
    backward(True)
    params = [p for p in student.parameters() if p.grad is not None]
    saved = [p.grad.clone() for p in params]

    def restore():
        for p, gr in zip(params, saved):
            p.grad.copy_(gr)

    def released_clip():
        restore()
        for p in params:
            norm = p.grad.norm(2)
            coef = 3.0 / (norm + 1e-6)
            if coef < 1:  # .item() on each tensor, as released
                p.grad.mul_(coef)

    def ours_clip():
        restore()
        clip_gradients(params, 3.0)

    c_rel = _time(released_clip, dev, args.repeats)
    c_ours = _time(ours_clip, dev, args.repeats)
    c_copy = _time(restore, dev, args.repeats)

    ms = lambda xs: f"{1000 * statistics.median(xs):8.1f} ms (min {1000 * min(xs):.1f})"
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, device {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""))
    print(f"torch {torch.__version__}; preset {cfg.name}: {count_parameters(student) / 1e6:.1f} M params, "
          f"B={B} clips x T={T} frames, global {c.global_size}px (N={N}), {M} local {c.local_size}px, amp {args.amp}")
    print(f"train step, masked (P={P} of {N} patches): {ms(t_masked)}")
    print(f"train step, unmasked:                  {ms(t_plain)}")
    print(f"head rows per step: ours {ours_rows}, released {released_rows} ({released_rows / ours_rows:.1f}x)")
    print(f"head forward on ours:     {ms(h_ours)}")
    print(f"head forward on released: {ms(h_rel)}")
    print(f"clip {len(params)} gradient tensors, released loop: {ms(c_rel)}; clip_gradients: {ms(c_ours)} "
          f"(both include restoring the gradients: {ms(c_copy).strip()})")


if __name__ == "__main__":
    main()
