"""The ``ino`` command line."""

import json
import re
import subprocess
import sys

from inolib.cli import main


def test_info_lists_versions_device_and_presets(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "timm" in out and "device" in out
    for preset in ("smoke", "tiny", "charades", "kinetics"):
        assert preset in out


def test_config_applies_overrides(capsys):
    assert main(["config", "--preset", "smoke", "--loss.teacher_temp", "0.02", "--crops.num_local", "5"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["name"] == "smoke" and d["loss"]["teacher_temp"] == 0.02 and d["crops"]["num_local"] == 5


def test_bad_value_is_a_clear_error(capsys):
    assert main(["config", "--optim.epochs", "many"]) == 2
    err = capsys.readouterr().err
    assert "optim.epochs" in err and "expected int" in err


def test_each_command_shows_only_the_flags_it_uses():
    from inolib.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices
    flags = lambda cmd: {o for a in sub[cmd]._actions for o in a.option_strings}  # noqa: E731
    prop, ev, train = flags("propagate"), flags("evaluate"), flags("train")
    assert {"--propagation.topk", "--model.embed_dim", "--checkpoint"} <= prop
    assert not any(f.split(".")[0] in ("--crops", "--loss", "--optim", "--masking", "--synthetic") for f in prop)
    assert not any(f.startswith(("--model.head_", "--model.norm_last", "--model.drop_path")) for f in prop)  # unused
    assert "--model.head_out_dim" in train
    assert not any("." in f for f in ev)
    assert {"--loss.teacher_temp", "--optim.epochs", "--propagation.short_side", "--synthetic.seed"} <= train


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "inolib", "config", "--preset", "tiny"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"]["embed_dim"] == 192


# -- hostile and careless input to `ino propagate` / `ino evaluate` -------------------------------------------

import hashlib  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def tiny_davis(root: Path) -> Path:
    """A 6-frame 96x64 DAVIS layout (two objects) under ``root``."""
    from inolib.data import make_synthetic_video, write_davis_layout

    write_davis_layout(make_synthetic_video(num_frames=6, height=64, width=96, num_objects=2, late_objects=0,
                                            seed=1), root)
    return root


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def propagate_args(davis: Path, out, *extra: str) -> list[str]:
    return ["propagate", "--checkpoint", "random", "--preset", "smoke", "--davis", str(davis), "--out", str(out),
            "--propagation.short_side", "64", *extra]


def test_ground_truth_is_never_overwritten(tmp_path, capsys):
    from inolib.data import make_synthetic_video, write_ytvos_layout

    davis = tiny_davis(tmp_path / "DAVIS")
    before = tree_digest(davis)
    (tmp_path / "link").symlink_to(davis / "Annotations" / "480p")
    for out in (davis / "Annotations" / "480p", davis / "Annotations", davis / "JPEGImages" / "480p" / "x",
                tmp_path / "link", tmp_path / "link" / "sub", davis, davis / "results"):
        assert main(propagate_args(davis, out)) == 2, out
        err = capsys.readouterr().err
        assert f"--out {out}: the masks would go inside" in err and "an input folder" in err, err
    assert tree_digest(davis) == before
    ytvos = tmp_path / "YTVOS"
    write_ytvos_layout(make_synthetic_video(num_frames=10, height=64, width=96, num_objects=2, seed=2), ytvos)
    before = tree_digest(ytvos)
    for out in (ytvos / "valid", ytvos / "valid" / "Annotations" / "x", ytvos, ytvos / "results"):
        args = ["propagate", "--checkpoint", "random", "--preset", "smoke", "--ytvos", str(ytvos), "--out", str(out),
                "--propagation.short_side", "64"]
        assert main(args) == 2
        assert "--out" in capsys.readouterr().err
    assert tree_digest(ytvos) == before
    video = REPO / "data/videos/cotracker_apple/apple.mp4"
    (tmp_path / "v" / "apple").mkdir(parents=True)
    mask = tmp_path / "v" / "apple" / "00000.png"
    mask.write_bytes((REPO / "data/videos/cotracker_apple/apple_mask.png").read_bytes())
    assert main(["propagate", "--checkpoint", "random", "--preset", "smoke", "--video", str(video), "--first-mask",
                 str(mask), "--out", str(tmp_path / "v")]) == 2
    assert "--first-mask" in capsys.readouterr().err
    assert mask.read_bytes() == (REPO / "data/videos/cotracker_apple/apple_mask.png").read_bytes()
    from PIL import Image

    gif = tmp_path / "g" / "apple_overlay.gif"  # a first mask saved where the overlay GIF goes
    gif.parent.mkdir()
    Image.open(REPO / "data/videos/cotracker_apple/apple_mask.png").save(gif)
    before = gif.read_bytes()
    assert main(["propagate", "--checkpoint", "random", "--preset", "smoke", "--video", str(video), "--first-mask",
                 str(gif), "--out", str(tmp_path / "g")]) == 2
    assert "would be written over the --first-mask" in capsys.readouterr().err and gif.read_bytes() == before
    for results in (davis / "Annotations" / "480p", davis / "Annotations" / "480p" / "synthetic", tmp_path / "link"):
        assert main(["evaluate", "--davis", str(davis), "--results", str(results)]) == 2
        assert "--results" in capsys.readouterr().err
    assert tree_digest(davis) == tree_digest(tiny_davis(tmp_path / "again"))  # nothing written into it


def test_a_malicious_checkpoint_does_not_run_from_the_command_line(tmp_path, capsys):
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"student": Payload()}))
    davis = tiny_davis(tmp_path / "DAVIS")
    args = propagate_args(davis, tmp_path / "out")
    args[2] = str(tmp_path / "evil.pth")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "evil.pth" in err and "system" in err and "--trust-checkpoint" in err
    assert not (tmp_path / "pwned").exists()


def test_outputs_are_checked_before_any_computation(tmp_path, capsys, monkeypatch):
    import inolib.vos.metrics
    import inolib.vos.segment

    davis = tiny_davis(tmp_path / "DAVIS")
    (tmp_path / "afile").write_text("x")

    def never(*a, **kw):
        raise AssertionError("computed before checking the outputs")

    monkeypatch.setattr(inolib.vos.segment, "segment_davis", never)
    monkeypatch.setattr(inolib.vos.metrics, "evaluate_davis", never)
    for out, match in ((tmp_path / "afile", "afile.*not a folder"), (tmp_path / "afile" / "sub", "afile"),
                       (tmp_path / "o1", "synthetic.*file")):
        if out.name == "o1":
            out.mkdir()
            (out / "synthetic").write_text("a file where a sequence folder goes")
        assert main(propagate_args(davis, out)) == 2
        cap = capsys.readouterr()
        assert "--out" in cap.err and re.search(match, cap.err), cap.err
        assert "backbone:" not in cap.out and len(cap.err.strip().splitlines()) == 1
    results = tmp_path / "results"
    (results / "global_results-val.csv").mkdir(parents=True)
    assert main(["evaluate", "--davis", str(davis), "--results", str(results)]) == 2
    assert "global_results-val.csv" in capsys.readouterr().err
    with pytest.raises(ValueError, match="afile"):
        main(["--debug"] + propagate_args(davis, tmp_path / "afile"))
    with pytest.raises(ValueError, match="afile"):
        main(propagate_args(davis, tmp_path / "afile") + ["--debug"])


def test_os_errors_are_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    import inolib.vos.segment

    def denied(*a, **kw):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out" / "synthetic" / "00003.png"))

    monkeypatch.setattr(inolib.vos.segment, "segment_davis", denied)
    assert main(propagate_args(tiny_davis(tmp_path / "DAVIS"), tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "00003.png" in err and "Permission denied" in err


@pytest.mark.parametrize("extra,match", [
    (["--device", "bogus"], r"--device 'bogus'.*not a torch device"),
    (["--propagation.topk", "0"], r"propagation\.topk.*>= 1"),
    (["--propagation.radius", "-1"], r"propagation\.radius.*>= 0"),
    (["--propagation.temperature", "0"], r"propagation\.temperature.*> 0"),
    (["--propagation.short_side", "7"], r"propagation\.short_side 7.*patch"),
])
def test_bad_flags_are_clear_errors(tmp_path, capsys, extra, match):
    assert main(propagate_args(tiny_davis(tmp_path / "DAVIS"), tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert not list((tmp_path / "out").rglob("*.png"))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is available here")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert main(propagate_args(tiny_davis(tmp_path / "DAVIS"), tmp_path / "out", "--device", "cuda")) == 2
    assert re.search(r"--device cuda: no CUDA GPU", capsys.readouterr().err)


def test_empty_or_folder_checkpoint_is_a_clear_error(tmp_path, capsys):
    davis = tiny_davis(tmp_path / "DAVIS")
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "dir.pth").mkdir()
    for ckpt, match in (("empty.pth", "empty.pth: empty file"), ("dir.pth", "dir.pth: is a folder")):
        args = propagate_args(davis, tmp_path / "out")
        args[2] = str(tmp_path / ckpt)
        assert main(args) == 2
        assert match in capsys.readouterr().err


def test_propagate_takes_an_inolib_checkpoint_s_own_settings(tmp_path, data_dir, capsys, monkeypatch):
    """Without --preset, a tiny checkpoint propagates with the tiny preset's settings (block 4 of 6, short side
    240), not the paper's block 7 of a 12-block ViT; --preset and --propagation.* still override."""
    from inolib import config as C
    from inolib.cli import main
    from inolib.data.synthetic import make_synthetic_video, write_davis_layout
    from inolib.run.trainer import Trainer

    tr = Trainer(C.override(C.smoke(), {"propagation.short_side": "64", "propagation.feature_block": "1"}),
                 [data_dir / "videos"], tmp_path / "run", progress=False, tensorboard=False, max_steps=1)
    tr.fit()
    davis = tmp_path / "davis"
    write_davis_layout(make_synthetic_video(5, 64, 96, 1, 0, seed=30_001, name="s"), davis)
    ck = str(tmp_path / "run/checkpoint.pth")
    import torch

    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: loads.append(str(f)) or real_load(f, *a, **k))
    assert main(["propagate", "--checkpoint", ck, "--davis", str(davis), "--out", str(tmp_path / "o")]) == 0
    assert loads == [ck]  # the file is read once: its settings and its weights
    monkeypatch.undo()
    assert "block 1," in capsys.readouterr().out
    assert main(["propagate", "--checkpoint", ck, "--davis", str(davis), "--out", str(tmp_path / "o2"),
                 "--propagation.feature_block", "2"]) == 0
    assert "block 2," in capsys.readouterr().out
    assert main(["propagate", "--checkpoint", ck, "--davis", str(davis), "--out", str(tmp_path / "o3"),
                 "--preset", "charades"]) == 2  # charades: block 7, the 2-block smoke ViT has none
    assert "block" in capsys.readouterr().err


# -- hostile and careless input to `ino train` / `ino demo` -------------------------------------------------

def train_args(out, *extra: str) -> list[str]:
    return ["train", "--preset", "smoke", "--data", str(REPO / "data/videos"), "--out", str(out), "--no-tensorboard",
            "--max-steps", "1", *extra]


@pytest.mark.parametrize("extra,message", [
    (["--loss.teacher_temp", "0"], "--loss.teacher_temp 0: must be > 0"),
    (["--crops.global_scale", "0.9,1.2"], "--crops.global_scale 0.9,1.2: must be MIN,MAX with 0 < MIN <= MAX <= 1"),
    (["--crops.local_scale", "0,0.5"], "--crops.local_scale 0,0.5: must be MIN,MAX"),
    (["--optim.batch_size_per_gpu", "0"], "--optim.batch_size_per_gpu 0: must be >= 1"),
    (["--optim.warmup_epochs", "5"], "--optim.warmup_epochs 5: must be in 0..1"),
    (["--propagation.topk", "0"], "--propagation.topk 0: must be >= 1"),
    (["--max-steps", "0"], "--max-steps 0: must be >= 1"),
    (["--max-steps", "-3"], "--max-steps -3: must be >= 1"),
    (["--keep-every", "-1"], "--keep-every -1: must be >= 0"),
    (["--save-every", "0"], "--save-every 0: must be >= 1"),
    (["--log-every", "-1"], "--log-every -1: must be >= 1"),
    (["--eval-every", "0"], "--eval-every 0: must be >= 1"),
    (["--device", "bogus"], "--device 'bogus': not a torch device"),
])
def test_train_values_that_cannot_work_are_one_line_errors_before_any_work(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert main(train_args(out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()  # nothing made, indexed or built


@pytest.mark.parametrize("data,message", [
    (["synthetic:0"], "--data 'synthetic:0': write synthetic:N with N >= 1"),
    (["data/videos", "synthetic:x"], "--data 'synthetic:x': write synthetic:N with N >= 1"),
    (["synthetic:99999999"], "synthetic.seed: training seeds 0..99999998 must lie in 0..9999"),
    (["no/such/folder"], "--data no/such/folder: no such folder, video or list file"),
    (["SYNTHETIC:2"], "no such folder, video or list file (synthetic videos: synthetic:N, lower case)"),
    (["EMPTY"], "no video found in"),
])
def test_train_data_sources_that_cannot_work_leave_no_run_folder(tmp_path, capsys, data, message):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    data = [str(REPO / d) if d.startswith("data/") else str(tmp_path / "empty") if d == "EMPTY" else d for d in data]
    args = ["train", "--preset", "smoke", "--out", str(out), "--no-tensorboard", "--max-steps", "1", "--data", *data]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()  # a typo in --data leaves no half-made run folder (a lock file, synthetic videos)


def test_train_never_writes_into_its_video_folders(tmp_path, capsys):
    import shutil

    videos = Path(shutil.copytree(REPO / "data/videos", tmp_path / "videos"))
    before = tree_digest(videos)
    (tmp_path / "link").symlink_to(videos)
    for out, extra in ((videos, []), (videos / "run", []), (videos / "cotracker_apple", []),
                       (tmp_path / "link" / "run", []), (videos / "run", ["synthetic:1"])):
        args = ["train", "--preset", "smoke", "--out", str(out), "--no-tensorboard", "--max-steps", "1",
                "--data", str(videos), *extra]
        assert main(args) == 2, out
        err = capsys.readouterr().err.strip()
        assert f"--out {out}: inside the --data folder" in err and len(err.splitlines()) == 1, err
    assert main(["train", "--preset", "smoke", "--out", str(videos / "run"), "--no-tensorboard", "--max-steps", "1",
                 "--data", str(REPO / "data/videos"), "--video-root", str(videos)]) == 2
    assert "inside the --video-root folder" in capsys.readouterr().err
    assert tree_digest(videos) == before
    davis = tiny_davis(tmp_path / "DAVIS")
    before = tree_digest(davis)
    assert main(["train", "--preset", "smoke", "--out", str(davis / "run"), "--no-tensorboard", "--max-steps", "1",
                 "--data", str(REPO / "data/videos"), "--eval-davis", str(davis)]) == 2
    assert "inside the --eval-davis folder" in capsys.readouterr().err
    assert tree_digest(davis) == before


def test_train_eval_every_without_eval_davis_is_an_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(out, "--eval-every", "5")) == 2
    err = capsys.readouterr().err.strip()
    assert "--eval-every 5: J&F is measured only with --eval-davis ROOT" in err and not out.exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is available here")
def test_train_and_demo_on_cuda_without_a_gpu_are_clear_errors(tmp_path, capsys):
    for args in (train_args(tmp_path / "run", "--device", "cuda"),
                 ["demo", "--device", "cuda", "--out", str(tmp_path / "demo"), "--data", str(REPO / "data")],
                 ["demo", "--tour", "--preset", "smoke", "--device", "cuda:1", "--data", str(REPO / "data")]):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert re.search(r"--device cuda(:1)?: no CUDA GPU", err) and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "demo").exists()


def test_demo_never_writes_into_its_data_folder(tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    for part in ("videos", "davis_sample", "checkpoints"):
        shutil.copytree(REPO / "data" / part, data / part)
    before = tree_digest(data)
    for out in (data, data / "demo", data / "davis_sample" / "DAVIS"):
        assert main(["demo", "--out", str(out), "--data", str(data)]) == 2
        err = capsys.readouterr().err.strip()
        assert f"--out {out}: inside the --data folder" in err and len(err.splitlines()) == 1, err
    assert tree_digest(data) == before


def test_demo_with_a_bogus_device_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", "--device", "bogus", "--out", str(tmp_path / "demo"), "--data", str(REPO / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--device 'bogus'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "demo").exists()


def test_sizes_and_non_finite_numbers_from_flags_are_refused_before_any_work(tmp_path, capsys):
    from inolib.cli import main

    out = tmp_path / "o"
    assert main(["propagate", "--checkpoint", "random", "--preset", "smoke", "--model.depth", "100000", "--davis",
                 str(REPO / "data/davis_sample/DAVIS"), "--out", str(out)]) == 2
    assert "--model.depth 100000: must be <= 128" in capsys.readouterr().err and not out.exists()
    assert main(["demo", "--train-seconds", "nan", "--out", str(out)]) == 2
    assert "--train-seconds nan" in capsys.readouterr().err and not out.exists()
