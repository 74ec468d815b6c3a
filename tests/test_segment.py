"""Segmenting DAVIS and YouTube-VOS sequences with a (tiny) backbone and writing palette PNGs."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inolib import config as C
from inolib.data import make_synthetic_video, read_davis_sequence, read_ytvos_sequence, write_ytvos_layout
from inolib.data.vos_datasets import davis_palette
from inolib.model import build_backbone
from inolib.vos.segment import segment_davis, segment_sequence
from inolib.vos.writers import write_ids_png

SMALL = C.PropagationConfig(short_side=64, feature_block=2, radius=6)


def vit():
    torch.manual_seed(0)
    return build_backbone(C.smoke().model).eval()


def test_segment_davis_refuses_to_write_into_the_dataset(tmp_path, data_dir):
    import shutil

    root = Path(shutil.copytree(data_dir / "davis_sample" / "DAVIS", tmp_path / "DAVIS"))
    (tmp_path / "link").symlink_to(root)
    for out in (root, root / "results", tmp_path / "link" / "x"):
        with pytest.raises(ValueError, match=r"out_dir .*: inside the DAVIS folder"):
            segment_davis(vit(), root, out, SMALL, sequences=["blackswan"], progress=False)
    assert not (root / "results").exists() and not (root / "blackswan").exists()


def test_segment_davis_writes_palette_pngs_and_resumes(tmp_path, data_dir):
    root = data_dir / "davis_sample/DAVIS"
    done = segment_davis(vit(), root, tmp_path, SMALL, sequences=["car-shadow"], progress=False)
    assert done == ["car-shadow"]
    files = sorted((tmp_path / "car-shadow").glob("*.png"))
    seq = read_davis_sequence(root, "car-shadow")
    assert len(files) == seq.num_frames == 40
    im = Image.open(files[5])
    assert im.mode == "P" and im.size == (854, 480)
    assert np.array_equal(np.array(im.getpalette()[:768]).reshape(256, 3), davis_palette())
    assert np.array_equal(np.array(Image.open(files[0])), seq.load_mask(0).numpy())  # frame 0 = the given mask
    assert set(np.unique(np.array(im))) <= {0, 1}
    assert segment_davis(vit(), root, tmp_path, SMALL, sequences=["car-shadow"], resume=True, progress=False) == []


def test_late_object_of_a_youtube_vos_video(tmp_path):
    video = make_synthetic_video(num_frames=30, height=64, width=96, num_objects=2, late_objects=1, seed=3)
    write_ytvos_layout(video, tmp_path, split="valid", every=5)
    seq = read_ytvos_sequence(tmp_path, video.name, split="valid")
    late = max(seq.first_frame, key=seq.first_frame.get)
    t0 = seq.first_frame[late]
    assert t0 > 0
    ids = segment_sequence(vit(), seq, SMALL)
    assert ids.shape == (seq.num_frames, 64, 96)
    assert not (ids[:t0] == late).any()  # absent before its first mask
    pred, gt = ids[t0] == late, seq.load_mask(t0) == late  # its given mask at t0, through the feature grid
    assert (pred & gt).sum() / (pred | gt).sum() > 0.5


def test_write_ids_png_round_trip(tmp_path):
    ids = torch.randint(0, 4, (10, 12), dtype=torch.uint8)
    p = write_ids_png(tmp_path / "a" / "00000.png", ids)
    assert np.array_equal(np.array(Image.open(p)), ids.numpy()) and Image.open(p).mode == "P"


def test_ino_propagate_on_a_video_and_on_davis_with_a_checkpoint(tmp_path, data_dir, capsys):
    """``python -m inolib propagate`` on a video (a fresh process: the entry point), then, in this process
    (cli.main, the same code without another start of Python and torch), a bad first mask and a DAVIS sequence
    with a checkpoint."""
    import subprocess
    import sys

    from inolib import cli
    from inolib.checkpoint import save_checkpoint
    from inolib.model import build_network

    vid = data_dir / "videos/cotracker_apple/apple.mp4"
    mask = data_dir / "videos/cotracker_apple/apple_mask.png"
    r = subprocess.run([sys.executable, "-m", "inolib", "propagate", "--checkpoint", "random", "--preset", "smoke",
                        "--video", str(vid), "--first-mask", str(mask), "--out", str(tmp_path / "v"),
                        "--propagation.short_side", "64"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    pngs = sorted((tmp_path / "v/apple").glob("*.png"))
    assert len(pngs) == 50 and (tmp_path / "v/apple_overlay.gif").is_file()
    first = np.array(Image.open(pngs[0]))
    assert first.shape == (720, 1296) and first.sum() == (np.array(Image.open(mask)) >= 128).sum()

    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (1296, 720)).save(rgb)
    capsys.readouterr()
    assert cli.main(["propagate", "--checkpoint", "random", "--preset", "smoke", "--video", str(vid),
                     "--first-mask", str(rgb), "--out", str(tmp_path / "bad")]) == 2
    assert "rgb.png" in capsys.readouterr().err

    cfg = C.smoke()
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "ckpt.pth", cfg, build_network(cfg.model))
    assert cli.main(["propagate", "--checkpoint", str(ckpt), "--preset", "smoke", "--davis",
                     str(data_dir / "davis_sample/DAVIS"), "--sequences", "blackswan", "--out", str(tmp_path / "d"),
                     "--propagation.short_side", "64"]) == 0
    assert "network student" in capsys.readouterr().out
    assert len(list((tmp_path / "d/blackswan").glob("*.png"))) == 50


def test_ino_evaluate_on_propagated_results(tmp_path, data_dir):
    import subprocess
    import sys

    root = data_dir / "davis_sample/DAVIS"
    segment_davis(vit(), root, tmp_path, SMALL, sequences=["blackswan"], progress=False)
    r = subprocess.run([sys.executable, "-m", "inolib", "evaluate", "--davis", str(root), "--results", str(tmp_path),
                        "--sequences", "blackswan"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "J&F-Mean" in r.stdout and "blackswan_1" in r.stdout
    lines = (tmp_path / "global_results-val.csv").read_text().splitlines()
    assert lines[0].startswith("J&F-Mean,J-Mean,J-Recall")
    jf = float(lines[1].split(",")[0])
    assert 0.0 < jf < 1.0  # a random-init tiny ViT at 64 px: some overlap, far from perfect (0.143 measured)


def test_video_sequence_names_the_bad_file(tmp_path, data_dir):
    import pytest

    from inolib.data.user_video import VideoSequence

    vid = data_dir / "videos/cotracker_apple/apple.mp4"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(vid.read_bytes()[:2000])  # a truncated download
    mask = data_dir / "videos/cotracker_apple/apple_mask.png"
    with pytest.raises(ValueError, match="broken.mp4"):
        VideoSequence(broken, mask)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        VideoSequence(vid, tmp_path / "missing.png")
    small = tmp_path / "small.png"
    Image.new("L", (64, 36), 255).save(small)
    with pytest.raises(ValueError, match="small.png.*64x36.*1296x720"):
        VideoSequence(vid, small)
    empty = tmp_path / "empty.png"
    Image.new("L", (1296, 720), 0).save(empty)
    with pytest.raises(ValueError, match="empty.png.*no object"):
        VideoSequence(vid, empty)
    seq = VideoSequence(vid, mask)
    assert seq.num_frames == 50 and seq.object_ids == [1]


def test_segment_sequence_shows_frame_progress(capsys, data_dir):
    seq = read_davis_sequence(data_dir / "davis_sample/DAVIS", "blackswan")
    seq.frame_paths = seq.frame_paths[:3]  # the first three frames are enough
    segment_sequence(vit(), seq, SMALL, progress=True)
    err = capsys.readouterr().err
    assert "blackswan" in err and "/3 " in err and "frame" in err  # a bar over the 3 frames, named


def test_read_first_mask_accepts_hand_made_masks(tmp_path):
    import pytest

    from inolib.data.user_video import read_first_mask

    ids = np.zeros((6, 8), np.uint8)
    ids[1:3, 1:4], ids[4:, 5:] = 1, 2
    write_ids_png(tmp_path / "p.png", ids)
    assert np.array_equal(read_first_mask(tmp_path / "p.png"), ids)
    Image.fromarray((ids > 0).astype(np.uint8) * 255).save(tmp_path / "l.png")
    assert np.array_equal(read_first_mask(tmp_path / "l.png"), (ids > 0).astype(np.uint8))
    grey_rgb = np.repeat(((ids > 0) * 200).astype(np.uint8)[..., None], 3, -1)
    Image.fromarray(grey_rgb).save(tmp_path / "g.png")
    assert np.array_equal(read_first_mask(tmp_path / "g.png"), (ids > 0).astype(np.uint8))
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = (ids > 0) * 255  # a red brush on a transparent layer
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(read_first_mask(tmp_path / "a.png"), (ids > 0).astype(np.uint8))
    colour = davis_palette()[ids]  # DAVIS colours keep their index ...
    colour[ids == 2] = (10, 200, 30)  # ... another colour gets the next free id
    Image.fromarray(colour).save(tmp_path / "c.png")
    got = read_first_mask(tmp_path / "c.png")
    assert np.array_equal(got == 1, ids == 1) and np.array_equal(got == 2, ids == 2)
    noisy = np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp_path / "n.png")
    with pytest.raises(ValueError, match="n.png.*colours"):
        read_first_mask(tmp_path / "n.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        read_first_mask(tmp_path / "bad.png")


def _grey(arr, path):
    Image.fromarray(arr).save(path)
    return path


def test_greyscale_id_maps_are_ids_and_ambiguous_levels_are_refused(tmp_path):
    import pytest

    from inolib.data.user_video import read_first_mask

    ids = np.zeros((20, 30), np.uint16)
    for k in range(1, 6):
        ids[2 * k:2 * k + 2, 3 * k:3 * k + 3] = k
    p16 = _grey(ids, tmp_path / "ids16.png")
    assert Image.open(p16).mode.startswith("I")
    assert np.array_equal(read_first_mask(p16), ids.astype(np.uint8))  # 16-bit ids 1..5 stay ids
    small = _grey(ids.astype(np.uint8), tmp_path / "ids8.png")
    assert Image.open(small).mode == "L"
    assert np.array_equal(read_first_mask(small), ids.astype(np.uint8))  # 8-bit ids 1..5 (not thresholded away)
    void = ids.astype(np.uint8).copy()
    void[0, :4] = 255
    assert np.array_equal(read_first_mask(_grey(void, tmp_path / "void.png")), void)  # 255 stays void
    many = np.arange(1, 601, dtype=np.uint16).reshape(20, 30) % 300 + 1  # ids 1..300
    with pytest.raises(ValueError, match=r"many.png.*ids up to 300.*8-bit"):
        read_first_mask(_grey(many, tmp_path / "many.png"))
    wide = np.zeros((20, 30), np.uint16)
    wide[5:15, 5:20] = 65535
    assert np.array_equal(read_first_mask(_grey(wide, tmp_path / "bw16.png")), (wide > 0).astype(np.uint8))
    levels = np.zeros((20, 30), np.uint8)
    levels[:10, :10], levels[10:, 10:20] = 100, 200
    with pytest.raises(ValueError, match=r"levels.png.*ambiguous.*100, 200"):
        read_first_mask(_grey(levels, tmp_path / "levels.png"))


def _tiny_davis(root, num_frames=6, first=None):
    from inolib.data import SyntheticVideo, write_davis_layout

    video = make_synthetic_video(num_frames=num_frames, height=64, width=96, num_objects=2, late_objects=0, seed=1)
    if first is not None:
        masks = video.masks.clone()
        masks[0] = first
        video = SyntheticVideo(video.frames, masks, video.fps, video.name)
    write_davis_layout(video, root)
    return video


@pytest.mark.parametrize("value", [0, 255])
def test_a_davis_sequence_without_objects_is_refused_like_a_video(tmp_path, value):
    import pytest

    _tiny_davis(tmp_path / "DAVIS", first=torch.full((64, 96), value, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"00000.png.*holds no object"):
        segment_davis(vit(), tmp_path / "DAVIS", tmp_path / "out", SMALL, progress=False)
    assert not list((tmp_path / "out").rglob("*.png"))


def test_pngs_are_written_atomically_and_resume_checks_the_last_one(tmp_path, monkeypatch):
    import warnings

    import pytest

    _tiny_davis(tmp_path / "DAVIS")
    out = tmp_path / "out"
    real_save = Image.Image.save
    calls = []

    def crash_on_third(self, fp, *a, **kw):
        calls.append(1)
        if len(calls) == 3:
            fp.write(b"\x89PNG half")  # a partial write, then the process dies
            raise KeyboardInterrupt
        return real_save(self, fp, *a, **kw)

    monkeypatch.setattr(Image.Image, "save", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        segment_davis(vit(), tmp_path / "DAVIS", out, SMALL, progress=False)
    monkeypatch.setattr(Image.Image, "save", real_save)
    names = sorted(p.name for p in (out / "synthetic").iterdir())
    assert names == ["00000.png", "00001.png"]  # no partial 00002.png, no temporary file left
    assert segment_davis(vit(), tmp_path / "DAVIS", out, SMALL, resume=True, progress=False) == ["synthetic"]
    last = out / "synthetic" / "00005.png"
    last.write_bytes(last.read_bytes()[:100])  # truncated by something else (a full disk, an older writer)
    with pytest.warns(UserWarning, match="00005.png.*again"):
        assert segment_davis(vit(), tmp_path / "DAVIS", out, SMALL, resume=True, progress=False) == ["synthetic"]
    assert Image.open(last).size == (96, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert segment_davis(vit(), tmp_path / "DAVIS", out, SMALL, resume=True, progress=False) == []


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc (VmHWM)")
def test_ino_propagate_memory_does_not_grow_with_the_video_length(tmp_path):
    """50, then 300 frames of a 160x120 video through `ino propagate --video` in a fresh process: the peak resident
    memory of each run must be the same (keeping every mask and every GIF frame, as before, added about 30 MB)."""
    import os
    import subprocess
    import sys

    import inolib
    from inolib.data import SyntheticVideo, write_video_file

    clip = make_synthetic_video(num_frames=60, height=120, width=160, num_objects=2, late_objects=0, seed=2)
    loop = SyntheticVideo(clip.frames.repeat(5, 1, 1, 1), clip.masks.repeat(5, 1, 1), clip.fps, "long")  # 300
    write_video_file(loop, tmp_path / "long.avi")
    write_video_file(SyntheticVideo(clip.frames[:50], clip.masks[:50], clip.fps, "short"), tmp_path / "short.avi")
    write_ids_png(tmp_path / "first.png", clip.masks[0])
    # one process (the imports once), two runs: before each the high-water mark of resident memory is reset
    # (clear_refs 5) and after it VmHWM is read back (getrusage's ru_maxrss would carry the parent's size over);
    # torch is imported before decord: decord2 imported first breaks torch's CPU matmul (docs/install.md)
    code = """
import sys, torch, decord, inolib.cli, inolib.vos.segment, inolib.course.viz, inolib.model, inolib.checkpoint
def run(name):
    open('/proc/self/clear_refs', 'w').write('5')
    rc = inolib.cli.main(['propagate', '--checkpoint', 'random', '--preset', 'smoke', '--video', f'{name}.avi',
                          '--first-mask', 'first.png', '--out', 'out', '--propagation.short_side', '32',
                          '--propagation.num_context', '3'])
    assert rc == 0, rc
    return int([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])
print('PEAKS_KB', run('short'), run('long'))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env=dict(os.environ, OMP_NUM_THREADS="1",
                                PYTHONPATH=os.pathsep.join([str(Path(inolib.__file__).parents[1]),
                                                            os.environ.get("PYTHONPATH", "")])))
    assert r.returncode == 0, r.stderr
    peaks = dict(zip(("short", "long"), map(int, r.stdout.split("PEAKS_KB")[-1].split())))
    for name, frames in (("short", 50), ("long", 300)):
        assert len(list((tmp_path / "out" / name).glob("*.png"))) == frames
        with Image.open(tmp_path / "out" / f"{name}_overlay.gif") as gif:
            assert gif.n_frames == frames and gif.size == (160, 120)
    growth = peaks["long"] - peaks["short"]
    assert growth < 8_000, f"peak RSS {peaks['short']} kB for 50 frames, {peaks['long']} kB for 300"


def test_small_temperature_and_nan_features_through_segmentation(tmp_path):
    import pytest

    from inolib.data import read_davis_sequence

    _tiny_davis(tmp_path / "DAVIS")
    seq = read_davis_sequence(tmp_path / "DAVIS", "synthetic")
    cold = C.PropagationConfig(short_side=64, feature_block=2, radius=6, temperature=0.01)
    ids = segment_sequence(vit(), seq, cold)
    # exp(cos / 0.01) overflowed: frames 2.. came out all background (10, 0, 0, 0, 0 object pixels); now
    # 212, 232, 244, 232, 276, as at temperature 0.02 (197, 214, 219, 185, 249; ground truth 310 to 350)
    assert all(int((ids[t] > 0).sum()) > 100 for t in range(1, seq.num_frames))
    broken = vit()
    with torch.no_grad():
        broken.norm.weight[0] = float("nan")  # a checkpoint with a NaN weight
    with pytest.raises(ValueError, match="synthetic, frame 1.*NaN or inf"):
        segment_sequence(broken, seq, SMALL)


def test_video_sequence_max_frames_keeps_the_first_frames(data_dir):
    from inolib.data.user_video import VideoSequence

    apple = data_dir / "videos/cotracker_apple"
    full = VideoSequence(apple / "apple.mp4", apple / "apple_mask.png")
    short = VideoSequence(apple / "apple.mp4", apple / "apple_mask.png", max_frames=5)
    assert short.num_frames == 5 < full.num_frames and len(short.frame_paths) == 5
    assert torch.equal(short.load_frames(), full.load_frames([0, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match="max_frames"):
        VideoSequence(apple / "apple.mp4", apple / "apple_mask.png", max_frames=0)


def test_share_balances_frames_and_gives_each_sequence_to_one_process():
    from inolib.vos.segment import share

    names, frames = ["a", "b", "c", "d", "e"], [90, 10, 50, 40, 30]
    parts = [share(names, frames, r, 2) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == names and not set(parts[0]) & set(parts[1])
    loads = [sum(f for n, f in zip(names, frames) if n in p) for p in parts]
    assert abs(loads[0] - loads[1]) <= 30  # LPT: 90 | 50+40 ... balanced within the smallest piece
    assert share(names, frames, 0, 1) == names and all(p == sorted(p, key=names.index) for p in parts)


def test_torchrun_shares_the_sequences_and_writes_what_one_process_writes(tmp_path):
    """Two processes (torchrun's environment, gloo on the CPU) each segment their share; the masks equal a
    one-process run's, and no sequence is segmented twice."""
    import hashlib

    from inolib.cli import main
    from inolib.data.synthetic import make_synthetic_video, write_davis_layout
    from inolib.run.launch import launch_local

    davis = tmp_path / "D"
    for i, T in enumerate((6, 3, 5, 4)):
        write_davis_layout(make_synthetic_video(T, 40, 56, 1, 0, seed=31_000 + i, name=f"s{i}"), davis)
    args = ["propagate", "--checkpoint", "random", "--preset", "smoke", "--davis", str(davis),
            "--propagation.short_side", "40", "--propagation.feature_block", "2"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert launch_local([*args, "--out", str(tmp_path / "two")], 2, tmp_path / "logs", timeout=240) == [0, 0]

    def digest(folder):
        return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*.png"))}

    assert digest(tmp_path / "one") == digest(tmp_path / "two") and len(digest(tmp_path / "one")) == 18
    logs = [(tmp_path / "logs" / f"rank{r}.log").read_text() for r in range(2)]
    done = [{name for name in ("s0", "s1", "s2", "s3") if f"{name}:" in log} for log in logs]  # progress bars
    assert "wrote 4 sequences" in logs[0] and "2 processes" in logs[0]
    assert not done[0] & done[1] and done[0] | done[1] == {"s0", "s1", "s2", "s3"}


def test_the_feature_batch_is_a_setting_that_does_not_change_the_masks(tmp_path):
    import dataclasses

    from inolib import config as C
    from inolib.data import read_davis_sequence
    from inolib.data.synthetic import make_synthetic_video, write_davis_layout
    from inolib.model import build_backbone
    from inolib.vos.segment import segment_sequence

    write_davis_layout(make_synthetic_video(7, 40, 56, 2, 0, seed=31_100, name="b"), tmp_path / "D")
    seq = read_davis_sequence(tmp_path / "D", "b")
    torch.manual_seed(0)
    vit = build_backbone(C.smoke().model).eval()
    base = C.override(C.smoke(), {"propagation.short_side": "40"}).propagation
    one = segment_sequence(vit, seq, dataclasses.replace(base, batch=1))
    seven = segment_sequence(vit, seq, dataclasses.replace(base, batch=7))
    assert one.shape == (7, 40, 56) and torch.equal(one, seven)
    assert C.override(C.smoke(), {"propagation.batch": "16"}).propagation.batch == 16
    with pytest.raises(ValueError, match="--propagation.batch 0"):
        C.validate(C.override(C.smoke(), {"propagation.batch": "0"}))


def test_a_huge_but_legitimate_video_is_refused_before_any_frame_is_read(monkeypatch):
    """A 16x8000 panorama at short side 480 becomes 480 x 240000 pixels: the estimate says so first."""
    from types import SimpleNamespace

    from inolib import config as C
    from inolib.vos import segment

    cfg = C.charades().propagation
    pano = SimpleNamespace(name="panorama", size=(16, 8000))
    size, grid = segment._propagation_size(pano, cfg, 8)
    assert (size.height, size.width) == (480, 240000)
    need = segment.memory_needed(size, grid, 384, cfg)
    assert need > 100 * 2**30  # far beyond a workstation
    monkeypatch.setattr(segment, "_available_ram", lambda: 16 * 2**30)
    with pytest.raises(ValueError, match=r"sequence panorama: its 8000x16 frames .* need about \d+\.\d GiB"):
        segment._check_memory(pano, size, grid, 384, cfg, torch.device("cpu"))
    davis = SimpleNamespace(name="davis", size=(480, 854))
    size, grid = segment._propagation_size(davis, cfg, 8)
    assert segment.memory_needed(size, grid, 384, cfg) < 2 * 2**30  # a DAVIS frame at 480p: well under
    segment._check_memory(davis, size, grid, 384, cfg, torch.device("cpu"))
