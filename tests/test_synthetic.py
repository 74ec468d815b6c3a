"""Synthetic videos: seeded, several moving, deforming, occluding objects, late entries, and the writers."""

import json
import time

import pytest
import torch

from inolib.data.synthetic import (SyntheticVideo, make_synthetic_video, write_davis_layout, write_video_file,
                                   write_ytvos_layout)
from inolib.data.vos_datasets import (davis_palette, list_davis_sequences, list_ytvos_videos, read_davis_sequence, read_ytvos_sequence)


def _areas(masks: torch.Tensor, num_objects: int) -> torch.Tensor:
    """Visible pixels of each id per frame: long (T, K + 1)."""
    return torch.stack([torch.bincount(m.flatten().long(), minlength=num_objects + 1) for m in masks])


def _centroids(masks: torch.Tensor, k: int) -> torch.Tensor:
    """(T, 2) mean (y, x) of object k per frame (nan where absent)."""
    T, H, W = masks.shape
    ys = torch.arange(H, dtype=torch.float64)[:, None].expand(H, W)
    xs = torch.arange(W, dtype=torch.float64)[None, :].expand(H, W)
    m = (masks == k).double()
    n = m.flatten(1).sum(1)
    return torch.stack([(m * ys).flatten(1).sum(1) / n, (m * xs).flatten(1).sum(1) / n], 1)


@pytest.fixture(scope="module")
def video() -> SyntheticVideo:
    return make_synthetic_video(num_frames=24, height=96, width=128, num_objects=3, late_objects=1, seed=0,
                                keep_amodal=True)


def test_shapes_dtypes_and_ids(video):
    assert isinstance(video, SyntheticVideo)
    assert video.frames.shape == (24, 3, 96, 128) and video.frames.dtype == torch.uint8
    assert video.masks.shape == (24, 96, 128) and video.masks.dtype == torch.uint8
    assert video.amodal.shape == (24, 3, 96, 128) and video.amodal.dtype == torch.bool
    assert video.fps == 24.0 and video.name == "synthetic"
    assert set(video.masks.unique().tolist()) == {0, 1, 2, 3}
    plain = make_synthetic_video(num_frames=5, height=40, width=50, num_objects=2, late_objects=0, seed=1)
    assert plain.amodal is None and plain.frames.shape == (5, 3, 40, 50)
    assert set(plain.masks.unique().tolist()) == {0, 1, 2}


def test_same_seed_same_video_other_seed_differs():
    a = make_synthetic_video(num_frames=8, seed=3)
    b = make_synthetic_video(num_frames=8, seed=3)
    c = make_synthetic_video(num_frames=8, seed=4)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.masks, c.masks) and not torch.equal(a.frames, c.frames)


def test_every_object_visible_and_late_object_enters_later(video):
    areas = _areas(video.masks, 3)
    assert (areas[0, 1:3] >= 20).all()  # objects 1 and 2 are present at frame 0 and visible
    assert areas[0, 3] == 0  # the late object (the last id) is absent from frame 0 ...
    first = int(torch.nonzero(areas[:, 3]).min())
    assert 0 < first <= 24 // 3 + 1  # ... and enters soon after
    assert ((areas[:, 1:] >= 20).sum(0) >= 4).all()  # every object visible in several frames
    for seed in range(3):  # several late objects, with other seeds
        v = make_synthetic_video(num_frames=12, num_objects=4, late_objects=2, seed=seed)
        a = _areas(v.masks, 4)
        assert (a[0, 1:3] > 0).all() and (a[0, 3:] == 0).all() and (a[1:, 3:].sum(0) > 0).all()


def test_objects_move_and_deform(video):
    areas = _areas(video.masks, 3)
    for k in (1, 2, 3):
        c = _centroids(video.masks, k)
        c = c[~c.isnan().any(1)]
        assert (c - c[0]).norm(dim=1).max() > 8.0, f"object {k} does not move"
        full = video.amodal[:, k - 1].flatten(1).sum(1).double()
        full = full[full > 0]
        assert full.max() / full.min() > 1.15, f"object {k} does not change size"
        vis = areas[:, k].double()
        vis = vis[vis > 0]
        assert vis.max() / vis.min() > 1.15


def test_depth_order_and_occlusion():
    occluded = 0
    for seed in range(4):
        v = make_synthetic_video(num_frames=24, seed=seed, keep_amodal=True)
        K = v.amodal.shape[1]
        for k in range(1, K + 1):
            own = v.amodal[:, k - 1]
            assert not ((v.masks == k) & ~own).any()  # visible part lies inside the full shape
            above = v.amodal[:, k:].any(1)  # union of higher ids
            assert torch.equal(v.masks == k, own & ~above)  # visible exactly where no higher id covers it
            overlap = (own & above).flatten(1).sum(1)
            vis, full = (v.masks == k).flatten(1).sum(1), own.flatten(1).sum(1)
            occluded += int(((overlap > 0) & (vis.double() < 0.9 * full.double())).sum())
    assert occluded > 0, "no object is ever hidden behind another one"


def test_textured_background_and_distinct_objects(video):
    f0 = video.frames[0].double()
    bg = video.masks[0] == 0
    pix = f0[:, bg]  # (3, N)
    assert pix.std(dim=1).min() > 8.0  # not flat
    h, w = bg.shape
    left, right = f0[:, :, : w // 2][:, bg[:, : w // 2]].mean(1), f0[:, :, w // 2:][:, bg[:, w // 2:]].mean(1)
    top = f0[:, : h // 2][:, bg[: h // 2]].mean(1)
    assert ((left - right).abs().max() > 1.0) or ((left - top).abs().max() > 1.0)  # varies across the image
    t = 12
    means = [video.frames[t].double()[:, video.masks[t] == k].mean(1) for k in (1, 2, 3)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert (means[i] - means[j]).abs().max() > 20.0
    inside = video.frames[t].double()[:, video.masks[t] == 1]
    assert inside.std(dim=1).max() > 15.0  # objects are textured too


def test_fast():
    # One intra-op thread: on a machine whose cores are busy with other work, torch's thread pool can make
    # small tensor ops 10-50x slower, which would time the pool rather than this code.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        make_synthetic_video(num_frames=2, seed=0)  # warm up
        t0 = time.perf_counter()
        make_synthetic_video(num_frames=24, height=96, width=128, seed=5)
        elapsed = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    assert elapsed < 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="late_objects"):
        make_synthetic_video(num_objects=2, late_objects=3)
    with pytest.raises(ValueError, match="num_objects"):
        make_synthetic_video(num_objects=0)


def test_davis_layout_round_trip(tmp_path):
    a = make_synthetic_video(num_frames=10, late_objects=0, seed=2, name="syn-a")
    b = make_synthetic_video(num_frames=6, late_objects=1, seed=3, name="syn-b")
    root = tmp_path / "DAVIS"
    folder = write_davis_layout(a, root)
    assert folder == root / "JPEGImages" / "480p" / "syn-a"
    write_davis_layout(b, root)
    write_davis_layout(a, root)  # again: listed once
    assert list_davis_sequences(root) == ["syn-a", "syn-b"]
    assert sorted(p.name for p in folder.iterdir())[:2] == ["00000.jpg", "00001.jpg"]
    seq = read_davis_sequence(root, "syn-a", check_all=True)
    assert seq.num_frames == 10 and seq.object_ids == [1, 2, 3] and seq.size == (96, 128)
    assert (seq.palette == davis_palette()).all()
    assert torch.equal(seq.load_masks(), a.masks)
    diff = (seq.load_frames().double() - a.frames.double())
    assert diff.abs().mean() < 5.0
    psnr = 10 * torch.log10(255.0 ** 2 / diff.pow(2).mean())
    assert psnr > 28.0
    # a late object is not in frame 0: fine for reading, an error for the semi-supervised check
    seq_b = read_davis_sequence(root, "syn-b")
    assert seq_b.object_ids == [1, 2] and torch.equal(seq_b.load_masks(), b.masks)
    enters = int(torch.nonzero((b.masks == 3).flatten(1).any(1)).min())
    with pytest.raises(ValueError, match=f"syn-b/{enters:05d}.png.*not in the first-frame"):
        read_davis_sequence(root, "syn-b", check_all=True)


def test_ytvos_layout_round_trip(tmp_path):
    v = make_synthetic_video(num_frames=24, late_objects=1, seed=0, name="vid0")
    root = tmp_path / "ytvos"
    folder = write_ytvos_layout(v, root, split="valid", every=5)
    write_ytvos_layout(make_synthetic_video(num_frames=6, seed=1, name="vid1"), root, every=5)
    assert list_ytvos_videos(root) == ["vid0", "vid1"]  # meta.json merged
    assert [p.name for p in sorted(folder.glob("*.jpg"))] == ["00000.jpg", "00005.jpg", "00010.jpg", "00015.jpg",
                                                              "00020.jpg"]
    kept = [0, 5, 10, 15, 20]
    present = _areas(v.masks[kept], 3) > 0  # (5, 4)
    first = {k: int(torch.nonzero(present[:, k]).min()) for k in (1, 2, 3)}
    assert first[1] == first[2] == 0 and first[3] > 0
    seq = read_ytvos_sequence(root, "vid0", split="valid")
    assert seq.num_frames == 5 and seq.object_ids == [1, 2, 3]
    assert seq.first_frame == first
    assert sorted(seq.mask_paths) == sorted(set(first.values()))  # annotations only where objects first appear
    late = seq.load_mask(first[3])
    assert torch.equal(late == 3, v.masks[kept[first[3]]] == 3)
    assert set(late.unique().tolist()) == {0, 3}  # holds only the newly appearing object
    assert torch.equal(seq.first_labels(), v.masks[0])
    with pytest.raises(ValueError, match="no annotation"):
        seq.load_masks()
    meta = json.loads((root / "valid" / "meta.json").read_text())
    frames3 = meta["videos"]["vid0"]["objects"]["3"]["frames"]
    assert frames3 == [f"{kept[i]:05d}" for i in range(5) if present[i, 3]]
    assert meta["videos"]["vid0"]["objects"]["1"]["category"] == "synthetic"


def test_video_file_is_readable(tmp_path):
    decord = pytest.importorskip("decord")
    v = make_synthetic_video(num_frames=7, height=64, width=80, seed=0, fps=10.0)
    path = write_video_file(v, tmp_path / "sub" / "syn.avi")
    vr = decord.VideoReader(str(path), num_threads=1)
    assert len(vr) == 7 and abs(vr.get_avg_fps() - 10.0) < 1e-3
    frames = torch.from_numpy(vr.get_batch(list(range(7))).asnumpy()).permute(0, 3, 1, 2)
    del vr
    assert frames.shape == (7, 3, 64, 80)
    assert (frames.double() - v.frames.double()).abs().mean() < 8.0


def test_render_box_holds_the_whole_shape():
    """Shapes are rasterised inside a box around the object (for speed); it must never cut a shape."""
    from inolib.data.synthetic import _box, _draw_objects, _support, _trajectory

    g = torch.Generator().manual_seed(0)
    H, W, T = 60, 70, 12
    ys = torch.arange(H, dtype=torch.float64)[:, None]
    xs = torch.arange(W, dtype=torch.float64)[None, :]
    checked = 0
    for _ in range(6):
        for o in _draw_objects(g, T, H, W, num_objects=6, late_objects=2):
            tr = _trajectory(o, T, H, W)
            for t in range(T):
                full = _support(o, tr, t, xs, ys)
                y0, y1, x0, x1 = _box(tr, t, H, W)
                inside = torch.zeros_like(full)
                inside[y0:y1, x0:x1] = True
                assert not (full & ~inside).any()
                checked += int(full.any())
    assert checked > 150


# ------------------------------------------------------------------ harder scenes (held-out evaluation)


def _plain_and(**scene):
    kw = dict(num_frames=12, height=96, width=128, num_objects=3, late_objects=0, seed=5)
    return make_synthetic_video(**kw), make_synthetic_video(**kw, **scene)


def test_harder_scenes_keep_the_masks_and_leave_default_videos_alone():
    plain, hard = _plain_and(distractors=2, camouflage=0.7, illumination=0.3)
    assert torch.equal(plain.masks, hard.masks)  # the labelled objects do not move
    assert not torch.equal(plain.frames, hard.frames)
    again = make_synthetic_video(num_frames=12, height=96, width=128, num_objects=3, late_objects=0, seed=5,
                                 distractors=0, camouflage=0.0, illumination=0.0)
    assert torch.equal(plain.frames, again.frames)  # off means exactly the default video


def test_distractors_wear_an_objects_texture_in_the_background():
    plain, hard = _plain_and(distractors=3)
    bg = plain.masks == 0  # (T, H, W)
    changed = ((hard.frames.float() - plain.frames.float()).abs().amax(1) > 40) & bg  # noise sigma is 2
    assert changed.flatten(1).sum(1).min() > 50  # a distractor shows in every frame ...
    assert not (((hard.frames.float() - plain.frames.float()).abs().amax(1) > 40) & ~bg).any()  # ... never on an object
    obj = plain.frames.permute(0, 2, 3, 1)[~bg].float()[::7]  # colours the objects wear
    fake = hard.frames.permute(0, 2, 3, 1)[changed].float()[::7]
    assert torch.cdist(fake, obj).amin(1).median() < 12  # the distractors wear those colours


def test_camouflage_makes_the_background_look_like_the_objects():
    def distance(v):
        px = v.frames[0].permute(1, 2, 0).float()
        bg, obj = px[v.masks[0] == 0][::5], px[v.masks[0] > 0][::5]
        return float(torch.cdist(bg, obj).amin(1).median())

    plain, hard = _plain_and(camouflage=1.0)
    assert distance(hard) < 0.5 * distance(plain)


def test_illumination_changes_the_light_over_time():
    plain, hard = _plain_and(illumination=0.3)
    spread = lambda v: float(v.frames.float().mean((2, 3)).std(0).mean())  # per channel, over time
    assert spread(hard) > 3 * spread(plain) and spread(hard) > 5


def test_harder_scene_arguments_are_checked():
    for bad in ({"distractors": -1}, {"distractors": 1.5}, {"camouflage": 1.2}, {"illumination": 1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            make_synthetic_video(num_frames=4, **bad)


def test_held_out_hard_set(tmp_path):
    from inolib.config import SyntheticConfig
    from inolib.data.synthetic import HARD_SCENE, write_held_out_davis

    cfg = SyntheticConfig(height=64, width=96, num_objects=2)
    root = write_held_out_davis(tmp_path / "hard", 2, cfg, num_frames=5, scene=HARD_SCENE)
    assert list_davis_sequences(root) == ["heldout_hard_10000", "heldout_hard_10001"]
    plain = write_held_out_davis(tmp_path / "plain", 1, cfg, num_frames=5)
    a, b = read_davis_sequence(root, "heldout_hard_10000"), read_davis_sequence(plain, "heldout_10000")
    assert torch.equal(a.load_masks(), b.load_masks())
    with pytest.raises(ValueError, match="blur"):
        write_held_out_davis(tmp_path / "x", 1, cfg, scene={"blur": 1})
