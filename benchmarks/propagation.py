"""Feature extraction and label propagation at 480p on the bundled DAVIS sample, and our propagation against a
plain transcription of the released chunked kernel (labelprop/dino.py) on the same features, in the same run.

    python benchmarks/propagation.py [--frames 12] [--device cpu] [--sequence blackswan] [--protocol ino]

A random-init ViT-S/8 gives the features (speed does not depend on the weights). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from inolib import config as C  # noqa: E402
from inolib.data import read_davis_sequence  # noqa: E402
from inolib.model import build_backbone  # noqa: E402
from inolib.released.propagation import released_video  # noqa: E402
from inolib.vos.propagation import PROTOCOLS, FrameSize, labels_to_grid, propagate, window_mask  # noqa: E402
from inolib.vos.segment import extract_features  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_peak(dev):
    sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def peak_bytes(dev) -> int:
    """Peak memory since the last reset_peak: allocated GPU memory, or the process's peak RSS on a CPU."""
    sync(dev)
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--sequence", default="blackswan")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=2, help="frames per feature-extraction batch")
    ap.add_argument("--skip-released", action="store_true")
    ap.add_argument("--protocol", default="ino", choices=["ino", "ino_ytvos", "dino"],
                    help="k / context / radius of inolib.vos.propagation.PROTOCOLS (the transcription covers these)")
    ap.add_argument("--width", type=int, default=None,
                    help="stretch the frames to this width (e.g. 1152: DAVIS 'shooting', dino issue 98)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cfg = C.charades()
    seq = read_davis_sequence(REPO / "data/davis_sample/DAVIS", args.sequence)
    T = min(args.frames, seq.num_frames)
    frames = seq.load_frames(list(range(T)))
    mask0 = seq.first_labels()
    if args.width:
        frames = F.interpolate(frames.float(), size=(frames.shape[-2], args.width), mode="bilinear").round().byte()
        mask0 = F.interpolate(mask0[None, None].float(), size=frames.shape[-2:], mode="nearest")[0, 0].long()
    H, W = frames.shape[-2:]
    size = FrameSize.for_frame(H, W, cfg.propagation.short_side, cfg.model.patch_size)
    torch.manual_seed(0)
    vit = build_backbone(cfg.model).to(dev).eval()

    reset_peak(dev)
    t0 = time.perf_counter()
    load = lambda idx: frames[idx]
    feats = torch.stack(list(extract_features(vit, load, T, size, cfg.propagation.feature_block, args.batch, dev)))
    sync(dev)
    t_feat = time.perf_counter() - t0  # (T, D, h, w) features above
    h, w = feats.shape[-2:]
    mem_feat = peak_bytes(dev)
    first = labels_to_grid(mask0.to(dev), seq.num_objects + 1, (h, w))
    p = C.override(cfg, {f"propagation.{k}": v for k, v in PROTOCOLS[args.protocol].items()
                         if k in ("topk", "num_context", "radius", "temperature")}).propagation

    reset_peak(dev)
    t0 = time.perf_counter()
    ours = propagate(feats, first, topk=p.topk, num_context=p.num_context, radius=p.radius, temperature=p.temperature)
    sync(dev)
    t_ours = time.perf_counter() - t0
    mem_prop = peak_bytes(dev)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, device {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "") + f"; torch {torch.__version__}")
    print(f"{args.sequence}: {T} frames {H}x{W} -> {size.height}x{size.width}, grid {h}x{w}; ViT-S/8 block "
          f"{p.feature_block}; k={p.topk}, {p.num_context} context frames, radius {p.radius}")
    print(f"feature extraction: {T / t_feat:.2f} frames/s ({t_feat:.1f} s)")
    print(f"propagation (inolib): {(T - 1) / t_ours:.2f} frames/s ({t_ours:.2f} s)")
    print(f"peak memory: feature extraction {mem_feat / 2**30:.2f} GiB, propagation {mem_prop / 2**30:.2f} GiB "
          + ("(torch.cuda.max_memory_allocated)" if dev.type == "cuda" else "(process peak RSS so far, CPU)"))
    if not args.skip_released:
        # the released code loads this (hw x hw) window from a disk cache: build it outside the timing
        neigh = window_mask((h, w), p.radius, device=dev).float()
        sync(dev)
        t0 = time.perf_counter()
        with torch.no_grad():
            ref = released_video(feats, first, topk=p.topk, n_last=p.num_context, radius=p.radius, neigh=neigh,
                                 chunk=100)
        sync(dev)
        t_ref = time.perf_counter() - t0
        same = torch.equal(ours.argmax(1), ref.argmax(1))
        print(f"propagation (released kernel transcription, chunks of 100 queries, same device): "
              f"{(T - 1) / t_ref:.3f} frames/s ({t_ref:.1f} s)")
        print(f"speed-up {t_ref / t_ours:.1f}x; max |soft label difference| {(ours - ref).abs().max():.2e}; "
              f"identical argmax: {same}")


if __name__ == "__main__":
    main()
