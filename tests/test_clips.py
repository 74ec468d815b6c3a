"""The training clip pipeline on the real bundled videos: sources, index cache, 8 fps clips, sampler,
workers, determinism, and broken files that are skipped with a warning naming them."""

import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from inolib.config import CropConfig
from inolib.data import index as index_mod
from inolib.data.clips import (ClipDataset, ClipSampler, SkipLog, collate_clips, decode_size, load_clip_views,
                               make_clip_loader)
from inolib.data.index import VideoIndex, find_videos, read_video_list, resolve_sources
from inolib.data.video import resample_indices, write_avi

VIDEOS = {  # bundled real videos: native fps (data/videos/README.md)
    "demo_arm_wrestling.mp4": 28.0,
    "test_cleaning_pool.mp4": 30.0,
    "apple.mp4": 10.0,
}
REPO_VIDEOS = Path(__file__).resolve().parents[1] / "data" / "videos"
SMALL = CropConfig(global_size=48, local_size=24, num_local=2)  # fast crops, same code path


def build(paths, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VideoIndex.build(paths, progress=False, **kw)


def real_videos(data_dir):
    return find_videos(data_dir / "videos")


def epoch_batches(ds, sampler, num_workers, batch_size=3):
    loader = make_clip_loader(ds, sampler, batch_size=batch_size, num_workers=num_workers, drop_last=False)
    return list(loader)


# -- sources and index -------------------------------------------------------------------------------

def test_sources_folder_list_and_charades_csv(tmp_path, data_dir):
    vids = real_videos(data_dir)
    assert sorted(p.name for p in vids) == sorted(VIDEOS)
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    shutil.copy(vids[0], nested / "X1.MP4")
    (nested / "notes.txt").write_text("not a video")
    assert find_videos(tmp_path) == [nested / "X1.MP4"]
    # released layout: first column is a path, relative to the list's folder
    lst = tmp_path / "train_list.csv"
    lst.write_text("a/b/X1.MP4,extra\n/abs/Y.mp4\n")
    assert read_video_list(lst) == [nested / "X1.MP4", Path("/abs/Y.mp4")]
    # Charades' own annotation file: column id, videos in a separate folder (see test_charades_as_downloaded)
    ch = tmp_path / "Charades_v1_train.csv"
    ch.write_text("id,subject,scene,quality\n46GP8,HR43,Kitchen,6\nN11GT,0KZ7,Stairs,6\n")
    (tmp_path / "Charades_v1_480").mkdir()
    for name in ("46GP8.mp4", "N11GT.mp4"):
        (tmp_path / "Charades_v1_480" / name).write_bytes(b"")
    assert resolve_sources(ch, root=tmp_path / "Charades_v1_480") == resolve_sources(ch) == [
        tmp_path / "Charades_v1_480/46GP8.mp4", tmp_path / "Charades_v1_480/N11GT.mp4"]
    with pytest.raises(FileNotFoundError, match="Charades annotation file.*elsewhere.*--video-root"):
        resolve_sources(ch, root=tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        resolve_sources(tmp_path / "nowhere")


@pytest.mark.parametrize("how", ["chmod", "scandir"])
def test_an_unreadable_subfolder_is_named_in_a_warning(tmp_path, data_dir, monkeypatch, how):
    import errno

    videos = tmp_path / "videos"
    ok, secret = videos / "ok", videos / "secret"
    for folder, name in ((ok, "a.mp4"), (secret, "b.mp4"), (secret / "deeper", "c.mp4")):
        folder.mkdir(parents=True)
        shutil.copy(data_dir / "videos/cotracker_apple/apple.mp4", folder / name)
    if how == "chmod":
        secret.chmod(0)
        if os.access(secret, os.R_OK):  # root reads it anyway; the "scandir" case covers it
            secret.chmod(0o755)
            pytest.skip("chmod 000 does not stop this user (root) from reading")
    else:  # what a folder without read permission does to a listing, for any user
        real = os.scandir

        def scandir(path="."):
            if Path(path) == secret:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)
    try:
        with pytest.warns(UserWarning, match=r"cannot read 1 folder.*secret \(Permission denied\)"):
            found = find_videos(videos)
    finally:
        secret.chmod(0o755)
    assert found == [ok / "a.mp4"]


def test_space_and_tab_separated_lists_keep_every_row(tmp_path, data_dir):
    def listed(text, name="list.txt"):
        (tmp_path / name).write_text(text)
        return [str(p.relative_to(tmp_path)) for p in read_video_list(tmp_path / name)]

    assert listed("video1.mp4 label1\nvideo2.mp4 label2\n") == ["video1.mp4", "video2.mp4"]
    assert listed("a.mp4 b.mp4\nc.mp4 d.mp4\n") == ["a.mp4", "c.mp4"]
    assert listed("clip1.mp4\t12.5\nclip2.MP4\t3\n", "list.tsv") == ["clip1.mp4", "clip2.MP4"]
    assert listed("path label\nsub/x.avi 3 4\n") == ["sub/x.avi"]  # a header row is still dropped
    shutil.copy(data_dir / "videos/cotracker_apple/apple.mp4", tmp_path / "my clip.mp4")
    assert listed("my clip.mp4\nmy clip.mp4 7\n") == ["my clip.mp4", "my clip.mp4"]  # spaces in a name
    # the rows name real files: every one is indexed
    real = real_videos(data_dir)
    (tmp_path / "real.txt").write_text("".join(f"{p} {i}\n" for i, p in enumerate(real)))
    idx = build(resolve_sources(tmp_path / "real.txt"))
    assert len(idx.ok) == len(real) == 3 and not idx.skipped


CHARADES_HEADER = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
CHARADES_ROWS = (  # the official format: quoted fields with commas (and a line break) inside
    '46GP8,HR43,Kitchen,6,7,Yes,"A person cooking on a stove, then watching something out a window.",food;stove;window,'
    '"A person cooks food on a stove before looking out of a window.",c092 11.90 21.20;c147 0.00 12.60,24.83\n'
    'N11GT,0KZ7,Stairs,6,7,Yes,"One person opens up a folded blanket, then sneezes.",blanket,"Person at the bottom '
    'of the staircase shakes a blanket out,\nand then sneezes, walks up the stairs.",c098 8.60 14.20;c075 0.00 11.70,'
    '19.96\n'
    '0IH69,6RE8,Bedroom,6,5,Yes,"A person is sitting on a bed, holding a book.",bed;book,"A person sits on a bed.",'
    'c026 0.00 8.10,30.25\n'
)


def charades_download(root, present=("46GP8", "N11GT")):
    """Charades_v1_train.csv in the official format, and Charades_v1_480/<id>.mp4 of the bundled clips."""
    bundled = [REPO_VIDEOS / "kinetics400_mmaction2/demo_arm_wrestling.mp4", REPO_VIDEOS / "cotracker_apple/apple.mp4"]
    (root / "Charades_v1_480").mkdir(parents=True)
    for video_id, clip in zip(present, bundled):
        shutil.copy(clip, root / "Charades_v1_480" / f"{video_id}.mp4")
    csv_file = root / "Charades_v1_train.csv"
    csv_file.write_text(CHARADES_HEADER + CHARADES_ROWS)
    return csv_file


def test_charades_as_downloaded(tmp_path):
    """The annotation csv finds its videos in Charades_v1_480/ next to it (or --video-root); missing ids are named."""
    csv_file = charades_download(tmp_path)
    folder = tmp_path / "Charades_v1_480"
    with pytest.warns(UserWarning, match=r"1 of its 3 videos are not in .*Charades_v1_480 .*ids 0IH69\); training on "
                                         r"the other 2"):
        paths = resolve_sources(csv_file)
    assert paths == [folder / "46GP8.mp4", folder / "N11GT.mp4"]
    assert len(build(paths).ok) == 2
    moved = tmp_path / "videos"
    folder.rename(moved)
    with pytest.warns(UserWarning, match="0IH69"):
        assert resolve_sources(csv_file, root=moved) == [moved / "46GP8.mp4", moved / "N11GT.mp4"]
    with pytest.raises(FileNotFoundError, match=r"Charades_v1_480 \(the default: Charades_v1_480/ next to the csv\).*"
                                                r"--video-root"):
        resolve_sources(csv_file)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"none of its 3 videos is in .*empty \(no <id>.mp4 for 46GP8, N11GT, 0IH69\)"):
        resolve_sources(csv_file, root=tmp_path / "empty")


def test_ino_train_on_the_charades_csv(tmp_path, capsys):
    from inolib.cli import main

    csv_file = charades_download(tmp_path / "charades")
    args = ["train", "--preset", "smoke", "--data", str(csv_file), "--no-tensorboard", "--max-steps", "1"]
    with pytest.warns(UserWarning, match="0IH69"):
        assert main(args + ["--out", str(tmp_path / "run")]) == 0
    assert "training 'smoke' on 2 videos" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(args + ["--out", str(tmp_path / "run2"), "--video-root", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert "none of its 3 videos is in" in err and "46GP8, N11GT, 0IH69" in err and len(err.splitlines()) == 1


def test_index_probes_real_videos_and_cache_is_reused_until_a_file_changes(tmp_path, data_dir, monkeypatch):
    for p in real_videos(data_dir):
        shutil.copy(p, tmp_path / p.name)
    paths = find_videos(tmp_path)
    cache = tmp_path / "run" / "video_index.json"
    idx = build(paths, cache_file=cache)
    info = {Path(e.path).name: e for e in idx.entries}
    for name, fps in VIDEOS.items():
        assert info[name].error is None and info[name].fps == pytest.approx(fps, rel=1e-3)
    assert (info["demo_arm_wrestling.mp4"].num_frames, info["demo_arm_wrestling.mp4"].width) == (280, 340)
    assert (info["apple.mp4"].width, info["apple.mp4"].height) == (1296, 720)
    assert cache.is_file()

    calls = []
    real_probe = index_mod.probe_video
    monkeypatch.setattr(index_mod, "probe_video", lambda p: calls.append(Path(p).name) or real_probe(p))
    again = build(paths, cache_file=cache)
    assert calls == [] and [e.num_frames for e in again.entries] == [e.num_frames for e in idx.entries]
    changed = tmp_path / "apple.mp4"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    build(paths, cache_file=cache)
    assert calls == ["apple.mp4"]


def test_a_video_replaced_with_the_same_size_and_time_or_removed_is_probed_again(tmp_path, data_dir):
    """A stale index entry (280 frames of 340x256 for what is now a 50-frame 1296x720 video) is never used."""
    arm = (data_dir / "videos/kinetics400_mmaction2/demo_arm_wrestling.mp4").read_bytes()
    apple = (data_dir / "videos/cotracker_apple/apple.mp4").read_bytes()
    size = max(len(arm), len(apple))  # both padded to one size: decoders ignore bytes after the last atom
    video, gone = tmp_path / "v.mp4", tmp_path / "gone.mp4"
    video.write_bytes(arm.ljust(size, b"\0"))
    gone.write_bytes(arm)
    cache = tmp_path / "run" / "video_index.json"
    first = build([video, gone], cache_file=cache)
    assert (first.entries[0].num_frames, first.entries[0].width) == (280, 340) and not first.skipped
    st = video.stat()
    video.write_bytes(apple.ljust(size, b"\0"))  # another video, same size ...
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the same time (cp -p, rsync -t, a restore)
    assert (video.stat().st_size, video.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    gone.unlink()
    with pytest.warns(UserWarning, match=r"skipping 1 of 2 files: .*gone.mp4: missing"):
        again = VideoIndex.build([video, gone], cache_file=cache, progress=False)
    assert (again.entries[0].num_frames, again.entries[0].width) == (50, 1296)


# -- clips -------------------------------------------------------------------------------------------

def test_clips_are_four_frames_at_8_fps_of_the_native_rate(data_dir):
    idx = build(real_videos(data_dir))
    ds = ClipDataset(idx, SMALL)
    sampler = ClipSampler(ds.num_starts, clips_per_video=5, seed=1)
    batches = epoch_batches(ds, sampler, 0)
    seen = 0
    for b in batches:
        B = len(b["video"])
        assert b["globals"].shape == (B, 4, 3, 48, 48) and b["locals"].shape == (B, 4, 2, 3, 24, 24)
        for path, start, frames in zip(b["video"], b["start"].tolist(), b["frames"]):
            fps = VIDEOS[Path(path).name]
            expected = [int((k * fps / 8.0) // 1) for k in range(start, start + 4)]
            assert frames.tolist() == expected
            seen += 1
    assert seen == 15  # 3 videos x 5 clips
    assert len(ds) == 15


def test_same_seed_same_clips_and_workers_do_not_change_them(data_dir):
    idx = build(real_videos(data_dir))
    ds = ClipDataset(idx, SMALL)
    a = epoch_batches(ds, ClipSampler(ds.num_starts, 5, seed=3), 0)
    b = epoch_batches(ds, ClipSampler(ds.num_starts, 5, seed=3), 2)
    assert [x["video"] for x in a] == [x["video"] for x in b]
    for x, y in zip(a, b):
        assert torch.equal(x["start"], y["start"])
        assert torch.equal(x["globals"], y["globals"]) and torch.equal(x["locals"], y["locals"])
    c = epoch_batches(ds, ClipSampler(ds.num_starts, 5, seed=4), 0)
    assert [x["start"].tolist() for x in c] != [x["start"].tolist() for x in a]


def test_sampler_splits_ranks_and_reshuffles_each_epoch():
    starts = [77, 0, 3, 120, 40]
    full = ClipSampler(starts, clips_per_video=5, seed=0)
    plan = full.plan()
    assert len(plan) == 5 + 0 + 3 + 5 + 5
    assert sum(1 for v, _, _ in plan if v == 2) == 3 and all(v != 1 for v, _, _ in plan)
    ranks = [list(ClipSampler(starts, 5, seed=0, rank=r, world_size=3)) for r in range(3)]
    assert [len(r) for r in ranks] == [6, 6, 6]  # 18 clips, padded to a multiple of 3
    assert sorted(k for r in ranks for k in r) == sorted(plan)
    assert not set(ranks[0]) & set(ranks[1])
    full.set_epoch(1)
    assert full.plan() != plan
    full.set_epoch(0)
    assert full.plan() == plan
    with pytest.raises(ValueError):
        ClipSampler(starts, 5, rank=3, world_size=3)
    with pytest.raises(ValueError, match="no video"):
        ClipSampler([0, 0])


def test_decode_size_reduces_only_when_crops_allow():
    cfg = CropConfig()  # 224 global at scale >= 0.8, 64 local at scale >= 0.05
    assert decode_size(340, 256, cfg) is None  # small Kinetics frames: full size
    w, h = decode_size(854, 480, cfg)
    assert w < 854 and h < 480 and abs(w / h - 854 / 480) < 0.02
    # no crop of the smallest scale and extreme aspect falls below its output size
    assert (0.05 * w * h * 0.75) ** 0.5 >= 64 and (0.8 * w * h * 0.75) ** 0.5 >= 224


def test_load_clip_views_for_notebooks(data_dir):
    v = load_clip_views(data_dir / "videos/cotracker_apple/apple.mp4", SMALL, start=3, seed=0)
    assert v["frames"].shape == (4, 3, 720, 1296) and v["frames"].dtype == torch.uint8
    assert v["indices"].tolist() == resample_indices(50, 10.0, 8.0)[3:7].tolist() == [3, 5, 6, 7]
    assert v["globals"].shape == (4, 3, 48, 48) and v["locals"].shape == (4, 2, 3, 24, 24)
    with pytest.raises(ValueError, match="apple.mp4"):
        load_clip_views(data_dir / "videos/cotracker_apple/apple.mp4", SMALL, start=40)


# -- broken input ------------------------------------------------------------------------------------

def make_broken_folder(tmp_path, data_dir):
    folder = tmp_path / "videos"
    folder.mkdir()
    for p in real_videos(data_dir):
        shutil.copy(p, folder / p.name)
    arm = (data_dir / "videos/kinetics400_mmaction2/demo_arm_wrestling.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(arm[:200_000])
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("this is not a video\n" * 20)
    mid = bytearray(arm)
    mid[60_000:600_000] = bytes(540_000)  # header and first frames fine, frame data damaged after
    (folder / "midbroken.mp4").write_bytes(bytes(mid))
    write_avi(folder / "twoframes.avi", torch.full((2, 3, 32, 48), 128, dtype=torch.uint8), fps=8.0)
    return folder


def test_broken_files_are_skipped_with_a_warning_naming_them(tmp_path, data_dir):
    folder = make_broken_folder(tmp_path, data_dir)
    with pytest.warns(UserWarning) as rec:
        idx = VideoIndex.build(find_videos(folder), progress=False)
    text = " ".join(str(w.message) for w in rec)
    for name in ("truncated.mp4", "zero.mp4", "text.mp4"):
        assert name in text
    assert "midbroken.mp4" not in text  # its header and first frame are fine
    reasons = dict((Path(p).name, r) for p, r in idx.skipped)
    assert "0 bytes" in reasons["zero.mp4"] and "decode" in reasons["text.mp4"]

    with pytest.warns(UserWarning, match=r"skipping 1 of \d+ videos too short for one clip: .*twoframes\.avi"):
        ds = ClipDataset(idx, SMALL)  # it opens, so the index kept it: the dataset names it
    too_short = dict((Path(p).name, r) for p, r in ds.index_skipped)
    assert "too short" in too_short["twoframes.avi"]
    log = SkipLog(ds.index_skipped)
    sampler = ClipSampler(ds.num_starts, clips_per_video=5, seed=0)
    loader = make_clip_loader(ds, sampler, batch_size=3, num_workers=2, drop_last=False)
    clips = 0
    with pytest.warns(UserWarning, match="midbroken.mp4"):
        for batch in loader:
            log.update(batch)
            clips += batch["globals"].shape[0]
            assert torch.isfinite(batch["globals"]).all()
    assert clips == len(sampler) == 20  # 4 videos x 5 clips: failed clips were replaced, the epoch loaded
    assert "midbroken.mp4" in " ".join(log.files) and log.count == 5
    assert "1 while decoding" in log.summary()


def test_missing_file_in_a_list_is_skipped(tmp_path, data_dir):
    lst = tmp_path / "list.txt"
    lst.write_text(f"{data_dir / 'videos/cotracker_apple/apple.mp4'}\n{tmp_path / 'gone.mp4'}\n")
    idx = build(resolve_sources(lst))
    assert [Path(p).name for p, _ in idx.skipped] == ["gone.mp4"]
    assert "missing" in idx.skipped[0][1]
    with pytest.raises(ValueError, match="no usable video"):
        ClipDataset(build([tmp_path / "gone.mp4"]), SMALL)


def test_collate_gathers_skips():
    s = {"globals": torch.zeros(4, 3, 8, 8), "locals": torch.zeros(4, 2, 3, 4, 4), "start": 1,
         "frames": torch.arange(4), "video": "a.mp4", "skipped": [("b.mp4", "bad")]}
    b = collate_clips([s, {**s, "skipped": []}])
    assert b["globals"].shape == (2, 4, 3, 8, 8) and b["skipped"] == [("b.mp4", "bad")]


def test_steps_per_epoch_is_one_rule_for_the_trainer_and_the_sizing():
    from inolib import config as C
    from inolib.run.launch import run_size

    s = ClipSampler([5] * 3, 5, world_size=2)  # 15 clips, 8 per rank (padded)
    assert len(s) == 8 and s.steps_per_epoch(3) == 2 and s.steps_per_epoch(8) == 1
    with pytest.raises(ValueError, match="fewer than one batch of 9.*optim.batch_size_per_gpu"):
        s.steps_per_epoch(9)
    cfg = C.override(C.smoke(), {"optim.batch_size_per_gpu": "3", "crops.clips_per_video": "5"})
    assert run_size(cfg, 3, 2)["steps_per_epoch"] == s.steps_per_epoch(3)


def test_real_world_list_files_and_odd_entries(tmp_path, data_dir):
    """A list saved with a byte-order mark and CRLF (Excel, Notepad) reads; a binary file given as a list says so;
    a .m4v is a video; entries named like videos that are not video files are named in a warning."""
    arm = data_dir / "videos/kinetics400_mmaction2/demo_arm_wrestling.mp4"
    folder = tmp_path / "v"
    folder.mkdir()
    shutil.copy(arm, folder / "a.mp4")
    shutil.copy(arm, folder / "b.m4v")
    (tmp_path / "list.csv").write_bytes(b"\xef\xbb\xbfpath,label\r\nv/a.mp4,1\r\nv/b.m4v,2\r\n")
    assert read_video_list(tmp_path / "list.csv") == [tmp_path / "v/a.mp4", tmp_path / "v/b.m4v"]
    charades = tmp_path / "Charades_v1_train.csv"
    charades.write_bytes(b"\xef\xbb\xbfid,subject\r\na,x\r\n")
    assert read_video_list(charades, root=folder) == [folder / "a.mp4"]
    (tmp_path / "clip.bin").write_bytes(arm.read_bytes()[:4000])  # a video whose extension is not a video's
    with pytest.raises(ValueError, match=r"clip.bin: not a UTF-8 text list of videos"):
        read_video_list(tmp_path / "clip.bin")
    (folder / "dir.mp4").mkdir()
    os.mkfifo(folder / "pipe.mp4")
    (folder / "loop.mp4").symlink_to(folder / "loop.mp4")
    with pytest.warns(UserWarning, match=r"3 entries named like videos are not video files.*dir.mp4 \(a folder\)"):
        found = find_videos(folder)
    assert found == [folder / "a.mp4", folder / "b.m4v"]


def test_a_video_name_that_is_not_utf8_is_read(tmp_path, data_dir):
    from inolib.data.video import probe_video, read_frames

    arm = data_dir / "videos/kinetics400_mmaction2/demo_arm_wrestling.mp4"
    os.link(arm, os.fsencode(tmp_path) + b"/caf\xe9.mp4")  # a Latin-1 byte, as copied from another system
    (path,) = find_videos(tmp_path)
    assert probe_video(path).error is None
    assert read_frames(path, [0, 2], size=(170, 128)).shape == (2, 3, 128, 170)


def test_training_never_deletes_videos_it_did_not_write_and_counts_a_source_once(tmp_path, data_dir):
    from inolib import config as C
    from inolib.run.trainer import Trainer

    mine = tmp_path / "run/synthetic/synthetic_0.avi"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's own file")
    with pytest.raises(ValueError, match=r"synthetic_\*.avi file\(s\) .* that inolib did not write"):
        Trainer(C.smoke(), ["synthetic:2"], tmp_path / "run", progress=False, tensorboard=False, max_steps=1)
    assert mine.read_bytes() == b"the user's own file"
    with pytest.warns(UserWarning, match=r"--data: 3 video\(s\) given more than once are used once"):
        tr = Trainer(C.smoke(), [data_dir / "videos", data_dir / "videos"], tmp_path / "run2", progress=False,
                     tensorboard=False, max_steps=1)
    assert len(tr.dataset.num_starts) == 3  # the three bundled videos, once each
