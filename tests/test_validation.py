"""Comparing feature extractors on one DAVIS sequence (lessons 00 and 10), the copy-frame-0 baseline, and
VOSSequence.head."""

import pytest
import torch

from inolib import config as C
from inolib.vos.baselines import PixelFeatures, copy_first_mask
from inolib.data import read_davis_sequence
from inolib.vos.metrics import evaluate_sequence
from inolib.vos.segment import segment_sequence, sequence_features
from inolib.vos.validation import compare_on_sequence, sweep_propagation


def test_head_keeps_the_first_frames_and_their_masks(data_dir):
    seq = read_davis_sequence(data_dir / "davis_sample/DAVIS", "blackswan")
    short = seq.head(4)
    assert short.num_frames == 4 and sorted(short.mask_paths) == [0, 1, 2, 3]
    assert short.object_ids == seq.object_ids and torch.equal(short.load_masks(), seq.load_masks()[:4])
    with pytest.raises(ValueError, match="n must"):
        seq.head(0)


def test_copy_first_mask_repeats_frame_0_without_void():
    m = torch.tensor([[0, 1], [255, 2]], dtype=torch.uint8)
    out = copy_first_mask(m, 3)
    assert out.shape == (3, 2, 2) and out[2].tolist() == [[0, 1], [0, 2]]
    out[0, 0, 0] = 7  # a copy, not a view of the input
    assert m[0, 0] == 0
    with pytest.raises(ValueError, match="num_frames"):
        copy_first_mask(m, 0)


def test_compare_on_sequence_scores_each_method_as_the_official_protocol(data_dir):
    seq = read_davis_sequence(data_dir / "davis_sample/DAVIS", "car-shadow").head(5)
    cfg = C.override(C.smoke(), {"propagation.short_side": 64, "propagation.radius": 4}).propagation
    r = compare_on_sequence({"pixels": PixelFeatures(8)}, seq, cfg)
    assert set(r) == {"pixels", "copy frame 0", "ground truth"}
    gt = seq.load_masks()
    for name in ("pixels", "copy frame 0"):
        ids = r[name]["ids"]
        assert ids.shape == gt.shape and ids.dtype == torch.uint8 and r[name]["J"].shape == (5,)
        assert r[name]["J"][0] == 1.0  # frame 0 is the given mask
        s = evaluate_sequence(ids, gt, max(seq.object_ids), seq.name)
        want = sum((v["J"].mean() + v["F"].mean()) / 2 for v in s.values()) / len(s)
        assert r[name]["J&F"] == pytest.approx(float(want))
    assert torch.equal(r["copy frame 0"]["ids"][3], r["copy frame 0"]["ids"][0])
    kept = compare_on_sequence({"pixels": PixelFeatures(8)}, seq, cfg, keep_features=True, copy_baseline=False)
    assert torch.equal(kept["pixels"]["ids"], r["pixels"]["ids"]) and kept["pixels"]["features"].shape[:2] == (5, 192)
    assert "features" not in r["pixels"]
    with pytest.raises(ValueError, match="networks"):
        compare_on_sequence({}, seq, cfg)


def test_sweep_propagation_equals_propagating_each_setting_from_scratch(data_dir):
    seq = read_davis_sequence(data_dir / "davis_sample/DAVIS", "car-shadow").head(5)
    cfg = C.override(C.smoke(), {"propagation.short_side": 64, "propagation.radius": 4}).propagation
    torch.manual_seed(0)
    from inolib.model import build_backbone
    vit = build_backbone(C.smoke().model).eval()
    r = sweep_propagation(vit, seq, cfg, "radius", [1, 4])
    assert list(r) == [1, 4]
    for radius in (1, 4):
        fresh = compare_on_sequence({"net": vit}, seq, C.override(C.smoke(), {
            "propagation.short_side": 64, "propagation.radius": radius}).propagation, copy_baseline=False)["net"]
        assert torch.equal(r[radius]["ids"], fresh["ids"]) and r[radius]["J&F"] == pytest.approx(fresh["J&F"])
    assert not torch.equal(r[1]["ids"], r[4]["ids"])  # the setting really changes the result
    with pytest.raises(ValueError, match="short_side"):
        sweep_propagation(vit, seq, cfg, "short_side", [64])
    with pytest.raises(ValueError, match="values"):
        sweep_propagation(vit, seq, cfg, "topk", [])


def test_segment_sequence_checks_given_features(data_dir):
    seq = read_davis_sequence(data_dir / "davis_sample/DAVIS", "car-shadow").head(3)
    cfg = C.override(C.smoke(), {"propagation.short_side": 64}).propagation
    feats = sequence_features(PixelFeatures(8), seq, cfg)
    assert feats.shape[0] == 3 and feats.shape[1] == 3 * 64
    assert torch.equal(segment_sequence(PixelFeatures(8), seq, cfg, features=feats),
                       segment_sequence(PixelFeatures(8), seq, cfg))
    with pytest.raises(ValueError, match="features must"):
        segment_sequence(PixelFeatures(8), seq, cfg, features=feats[:2])
