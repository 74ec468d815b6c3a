"""Reading real frames: 8 fps resampling, decord clips, JPEG folders, and clear errors."""

import pytest
import torch

from inolib.augment import MultiCrop
from inolib.config import CropConfig
from inolib.data import read_clip, read_frame_folder, resample_indices

ARM = "videos/kinetics400_mmaction2/demo_arm_wrestling.mp4"  # 280 frames at 28 fps, 340x256


def test_resample_indices_follow_floor_rule():
    idx = resample_indices(280, 28.0, 8.0)
    assert len(idx) == 80
    assert idx[:6].tolist() == [0, 3, 7, 10, 14, 17]  # floor(k * 28 / 8)
    assert resample_indices(300, 30.0, 8.0)[:4].tolist() == [0, 3, 7, 11]
    assert resample_indices(50, 10.0, 8.0).max() < 50
    slow = resample_indices(10, 4.0, 8.0)  # slower than the target: frames repeat
    assert slow[:4].tolist() == [0, 0, 1, 1]


def test_read_clip_real_video(data_dir):
    clip = read_clip(data_dir / ARM, num_frames=4, fps=8.0, start=2)
    assert clip.shape == (4, 3, 256, 340) and clip.dtype == torch.uint8
    first = read_clip(data_dir / ARM, num_frames=1, fps=28.0, start=7)  # native frame 7 = resampled 8 fps frame 2
    assert torch.equal(first[0], clip[0])
    with pytest.raises(ValueError, match="demo_arm_wrestling"):
        read_clip(data_dir / ARM, num_frames=4, fps=8.0, start=78)


def test_broken_and_missing_videos_name_the_file(tmp_path, data_dir):
    bad = tmp_path / "truncated.mp4"
    bad.write_bytes((data_dir / ARM).read_bytes()[:4000])
    with pytest.raises(ValueError, match="truncated.mp4"):
        read_clip(bad)
    with pytest.raises(FileNotFoundError, match="nothere.mp4"):
        read_clip(tmp_path / "nothere.mp4")


def test_frame_folder_and_multicrop_shapes(data_dir):
    frames = read_frame_folder(data_dir / "davis_sample/DAVIS/JPEGImages/480p/blackswan", num_frames=2)
    assert frames.shape == (2, 3, 480, 854)
    cfg = CropConfig(global_size=64, local_size=32, num_local=3)
    torch.manual_seed(0)
    g, l = MultiCrop(cfg)(frames)
    assert g.shape == (2, 3, 64, 64) and l.shape == (2, 3, 3, 32, 32)
    assert g.dtype == torch.float32 and -3 < g.mean() < 3
    with pytest.raises(ValueError, match="uint8"):
        MultiCrop(cfg)(frames.float())


def test_ffmpeg_does_not_flood_the_terminal_on_a_damaged_file(tmp_path, data_dir, capfd):
    """ffmpeg printed a line per damaged packet ("[h264 @ 0x...] error while decoding MB ..."); now only our one
    error naming the file is shown."""
    arm = bytearray((data_dir / ARM).read_bytes())
    g = torch.Generator().manual_seed(0)
    n = len(arm) // 3
    arm[n:n + 20_000] = bytes(torch.randint(0, 256, (20_000,), generator=g, dtype=torch.uint8).tolist())
    bad = tmp_path / "damaged.mp4"
    bad.write_bytes(bytes(arm))
    capfd.readouterr()
    with pytest.raises(ValueError, match="damaged.mp4"):
        read_clip(bad, num_frames=8, fps=8.0, start=24)
    err = capfd.readouterr().err
    assert "@ 0x" not in err and "error while decoding" not in err, err[:500]


def test_decoder_and_torch_matmul_live_together(data_dir):
    """decord2 imported before a CUDA build of torch crashes torch's CPU matmul (docs/install.md): importing
    inolib and then reading a video must leave matrix products working, in a fresh process."""
    import subprocess
    import sys

    code = ("import inolib, inolib.data.video as v\n"
            f"clip = v.read_clip({str(data_dir / ARM)!r}, num_frames=2, fps=8.0)\n"
            "import torch\n"
            "x = torch.nn.Linear(64, 64)(clip.float().flatten(1)[:, :64])\n"
            "print(float((x @ x.T).sum()) == float((x @ x.T).sum()))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"rc {r.returncode}: {r.stderr[-1500:]}"
    assert r.stdout.strip() == "True"


def test_a_decoder_that_cannot_scale_falls_back_to_resizing_here(monkeypatch, data_dir):
    """decord2 3.4.0 fails to scale some videos to some sizes (144x108 from 340x256: 'Check failed: from_size ==
    to_size'); read_frames then decodes at the video's size and resizes, instead of calling the video broken."""
    import decord

    from inolib.data import video

    class Picky:  # the real reader, failing at any requested size as the broken scaler does
        def __init__(self, path, num_threads=1, **kw):
            if kw:
                raise RuntimeError("Check failed: from_size == to_size (62208 vs. 46656)")
            self.vr = decord.VideoReader(path, num_threads=num_threads)

        def __len__(self):
            return len(self.vr)

        def get_batch(self, idx):
            return self.vr.get_batch(idx)

    monkeypatch.setattr(video, "_import_decord", lambda: type("D", (), {"VideoReader": Picky}))
    path = data_dir / "videos/kinetics400_mmaction2/demo_arm_wrestling.mp4"
    small = video.read_frames(path, [0, 9], size=(144, 108))
    full = video.read_frames(path, [0, 9])
    assert small.shape == (2, 3, 108, 144) and small.dtype == torch.uint8 and full.shape == (2, 3, 256, 340)
    ref = video.resize_frames(full, 108, 144)
    assert torch.equal(small, ref)
    assert (small.float().mean() - full.float().mean()).abs() < 2  # the same picture, smaller
    with pytest.raises(ValueError, match="demo_arm_wrestling.mp4: frame index out of range"):
        video.read_frames(path, [10_000], size=(144, 108))
