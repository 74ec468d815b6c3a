"""Collapse runs: out g2g alone with centering / sharpening switched off (lesson 03)."""

import math

import pytest
import torch

from inolib import config as C
from inolib.course.collapse_runs import COLLAPSE_SETTINGS, ClipBatches, collapse_runs


def test_clip_batches_are_real_crops_reproducible_per_step(data_dir):
    cfg = C.smoke()
    b = ClipBatches([data_dir / "videos"], cfg.crops, clips_per_video=2, batch_size=3)
    x = b(5)
    assert x.shape == (3, cfg.crops.clip_len, 3, cfg.crops.global_size, cfg.crops.global_size)
    assert torch.equal(x, b(5)) and not torch.equal(x, b(6))
    assert len(b.clips) == 2 * len(b.data.videos)


def test_without_sharpening_the_targets_go_uniform_and_runs_are_reproducible():
    cfg = C.smoke().model
    g = torch.Generator().manual_seed(0)
    data = torch.randn(4, 2, 3, 64, 64, generator=g)
    batches = lambda step: data + 0.1 * torch.randn(data.shape, generator=torch.Generator().manual_seed(step))  # noqa: E731
    runs = collapse_runs(cfg, batches, steps=4)
    assert set(runs) == set(COLLAPSE_SETTINGS) and all(len(r) == 4 for r in runs.values())
    log_k = math.log(cfg.head_out_dim)
    soft, ino = runs["no sharpening"][-1], runs["centering + sharpening (INO)"][-1]
    assert soft["entropy"] > 0.95 * log_k  # a teacher softer than the student: uniform targets
    assert ino["entropy"] < soft["entropy"] - 0.1
    again = collapse_runs(cfg, batches, steps=4, settings={"x": COLLAPSE_SETTINGS["no centering"]})
    assert again["x"] == runs["no centering"]
    with pytest.raises(ValueError, match="settings"):
        collapse_runs(cfg, batches, steps=1, settings={"x": {"centering": True}})
