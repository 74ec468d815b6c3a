"""Clip-loading throughput and memory: clips per second for 0, 1 and 2 workers, index time, skipped files,
and resident memory over many epochs (decord readers are opened per sample and released).

    python benchmarks/data_loader.py [FOLDER_OR_LIST] [--preset charades] [--epochs 20] [--workers 0 1 2]

Defaults to the bundled videos in data/videos. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
import warnings
from pathlib import Path

import psutil
import torch

from inolib import config as C
from inolib.data.clips import ClipDataset, ClipSampler, SkipLog, make_clip_loader
from inolib.data.index import VideoIndex, resolve_sources

REPO = Path(__file__).resolve().parents[1]


def rss_mib(proc: psutil.Process, children: bool) -> float:
    procs = [proc] + (proc.children(recursive=True) if children else [])
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", nargs="?", default=str(REPO / "data/videos"), help="video folder or list file")
    ap.add_argument("--root", default=None, help="video folder for a Charades csv")
    ap.add_argument("--preset", default="charades", choices=sorted(C.PRESETS))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=1, help="epochs per worker setting for the throughput figure")
    ap.add_argument("--memory-epochs", type=int, default=20, help="epochs of the memory run (0 to skip)")
    args = ap.parse_args()

    cfg = C.get_preset(args.preset).crops
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}")
    print(f"preset {args.preset}: clips of {cfg.clip_len} frames at {cfg.fps:g} fps, global {cfg.global_size}, "
          f"{cfg.num_local} x local {cfg.local_size}, {cfg.clips_per_video} clips per video per epoch")
    paths = resolve_sources(args.source, args.root)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "video_index.json"
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            index = VideoIndex.build(paths, cache_file=cache, progress=False)
        t_index = time.perf_counter() - t0
        t0 = time.perf_counter()
        VideoIndex.build(paths, cache_file=cache, progress=False)
        t_cached = time.perf_counter() - t0
    ds = ClipDataset(index, cfg)
    print(f"index: {len(paths)} files in {t_index:.2f} s (cached: {t_cached * 1000:.1f} ms); "
          f"{len(ds.videos)} usable, {len(ds.index_skipped)} skipped")
    for p, r in ds.index_skipped:
        print(f"  skipped {p}: {r}")

    sampler = ClipSampler(ds.num_starts, cfg.clips_per_video, seed=0)
    for w in args.workers:
        loader = make_clip_loader(ds, sampler, args.batch, num_workers=w, drop_last=False)
        log = SkipLog(ds.index_skipped)
        n, t0 = 0, time.perf_counter()
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            for e in range(args.epochs):
                sampler.set_epoch(e)
                for batch in loader:
                    log.update(batch)
                    n += batch["globals"].shape[0]
        dt = time.perf_counter() - t0
        print(f"workers {w}: {n} clips in {dt:.2f} s = {n / dt:.1f} clips/s (including worker start-up); "
              f"{log.summary()}")
        for p, r in list(log.files.items())[log.at_index:]:
            print(f"  skipped while decoding {p}: {r}")

    if args.memory_epochs:
        w = max(args.workers)
        loader = make_clip_loader(ds, sampler, args.batch, num_workers=w, drop_last=False, persistent_workers=w > 0)
        me = psutil.Process()
        marks = []
        for e in range(args.memory_epochs):
            sampler.set_epoch(e)
            for _ in loader:
                pass
            marks.append(rss_mib(me, children=True))
        peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"memory over {args.memory_epochs} epochs with {w} persistent workers (RSS of main + workers, MiB): "
              f"after epoch 1 {marks[0]:.0f}, epoch {len(marks) // 2} {marks[len(marks) // 2 - 1]:.0f}, "
              f"epoch {len(marks)} {marks[-1]:.0f}; peak RSS of the main process {peak_self:.0f} MiB")


if __name__ == "__main__":
    main()
