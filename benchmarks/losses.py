"""Vectorised INO losses against a loop transcription of the released code, at the paper's shapes.

    python benchmarks/losses.py [--device cpu] [--repeats 5]

The loop version is the one the tests check against (tests/test_losses.py: per frame pair, per
(teacher, student) chunk, per frame, per clip). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from inolib.losses import aff_loss, g2g_loss, l2g_loss, mim_loss
from inolib.released.losses import released_aff, released_mim, released_out


def bench(fn, device, repeats):
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4, help="clips per GPU (App. A.1: 4)")
    ap.add_argument("--ratio", type=float, default=0.3, help="mask ratio (released: U(0.1, 0.5))")
    args = ap.parse_args()
    dev = torch.device(args.device)
    B, T, M, N, K = args.batch, 4, 8, 784, 4096  # Sec. 4.1 / App. A.1 shapes
    g = torch.Generator().manual_seed(0)
    s_glob, t_glob = torch.randn(B, T, K, generator=g), torch.randn(B, T, K, generator=g)
    s_loc = torch.randn(B, T, M, K, generator=g)
    P = int(args.ratio * N)
    s_patch, t_patch = torch.randn(B, T, P, K, generator=g), torch.randn(B, T, P, K, generator=g)
    mask = torch.ones(B, T, P, dtype=torch.bool)  # compact layout: every kept position is masked
    center = torch.randn(1, K, generator=g)
    to = lambda *xs: [x.to(dev) for x in xs]
    s_glob, t_glob, s_loc, s_patch, t_patch, mask, center = to(s_glob, t_glob, s_loc, s_patch, t_patch, mask, center)
    for x in (s_glob, s_loc, s_patch):
        x.requires_grad_(True)

    def fwd_bwd(f):
        def run():
            loss = f()
            loss.backward()
        return run

    rows = [
        ("L_out (g2g + l2g)",
         lambda: g2g_loss(s_glob, t_glob, center, 0.1, 0.04) + l2g_loss(s_loc, t_glob, center, 0.1, 0.04),
         lambda: released_out(s_glob, s_loc, t_glob, center)[0]),
        ("L_in_mim", lambda: mim_loss(s_patch, t_patch, mask, center, 0.1, 0.04),
         lambda: released_mim(s_patch, t_patch, mask, center)),
        ("L_in_aff", lambda: aff_loss(s_patch, t_patch, mask), lambda: released_aff(s_patch, t_patch, mask)),
    ]
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, device {dev}; torch {torch.__version__}")
    print(f"shapes: B={B}, T={T}, M={M}, K={K}, P={P} masked patches of {N}; forward + backward, median of {args.repeats}")
    print(f"{'loss':<20} {'inolib':>10} {'loops':>10} {'speed-up':>9}")
    for name, ours, loops in rows:
        fwd_bwd(ours)()
        fwd_bwd(loops)()  # warm-up
        a = bench(fwd_bwd(ours), dev, args.repeats)
        b = bench(fwd_bwd(loops), dev, args.repeats)
        print(f"{name:<20} {a:8.1f}ms {b:8.1f}ms {b / a:8.1f}x")


if __name__ == "__main__":
    main()
