"""Sizing and launching a run (inolib.run.launch) and the failure drills (inolib.run.faults)."""

import math
import shlex

import pytest
import torch

from inolib import config as C
from inolib.run import faults, launch
from inolib.run.trainer import Trainer, TrainingInterrupted
from inolib.run.log import read_log


def test_train_command_parses_back_to_the_same_config():
    from inolib.cli import build_parser, config_from_args

    cfg = C.override(C.charades(), {"loss.teacher_temp": "0.02", "crops.global_scale": "0.4,0.95",
                                    "loss.mim": "false"})
    line = launch.train_command(cfg, "Charades_v1_train.csv", "runs/c4", nproc_per_node=4,
                                extra=["--video-root", "/data/Charades_v1_480"])
    argv = shlex.split(line)
    assert argv[:4] == ["torchrun", "--standalone", "--nproc_per_node", "4"]
    i = argv.index("train")
    args = build_parser().parse_args(argv[i:])
    assert config_from_args(args) == cfg and args.video_root == "/data/Charades_v1_480" and args.device == "cuda"
    assert launch.config_flags(C.charades()) == ["--preset", "charades"]  # the preset alone: no overrides
    two = launch.train_command(C.kinetics(), "k400.csv", "runs/k", nproc_per_node=8, nnodes=2)
    assert "--nnodes 2 --rdzv_backend c10d" in two and "--standalone" not in two
    with pytest.raises(ValueError, match="nproc_per_node"):
        launch.train_command(cfg, "d", "o", nproc_per_node=0)


def test_run_size_of_the_papers_charades_run():
    s = launch.run_size(C.charades(), 9848, 4)  # App. A.1: 4 GPUs x 4 clips, 25 epochs
    assert s["clips_per_epoch"] == 49240 and s["clips_per_process"] == 12310
    assert s["steps_per_epoch"] == 3077 and s["total_steps"] == 25 * 3077
    assert math.isclose(s["peak_lr"], 1.875e-4) and s["frames_per_step"] == 64
    released = C.override(C.charades(), {"optim.schedule": "released"})
    assert launch.run_size(released, 9848, 4)["total_steps"] == 24 * 3077
    assert launch.run_size(C.smoke(), 3, 1, starts_per_video=2)["clips_per_epoch"] == 6
    with pytest.raises(ValueError, match="world_size"):
        launch.run_size(C.charades(), 10, 0)


def test_state_and_activation_bytes():
    from inolib.model import build_network, count_parameters

    cfg = C.smoke()
    s = launch.state_bytes(cfg.model)
    assert s["params"] == count_parameters(build_network(cfg.model)) and s["adam"] == 8 * s["params"]
    one = launch.activation_bytes(cfg, batch_size=1, amp="none")
    two = launch.activation_bytes(cfg, batch_size=2, amp="none")
    half = launch.activation_bytes(cfg, batch_size=1, amp="bf16")
    unmasked = launch.activation_bytes(cfg, batch_size=1, amp="none", mask_ratio=0)
    assert 1.7 * one < two < 2.3 * one  # grows with the batch
    assert half < one and unmasked < one  # 2-byte activations; an unmasked step keeps less
    est = launch.memory_estimate(cfg, one, batch_size=4)
    assert math.isclose(est["activations"], 4 * one / 2**30)
    assert math.isclose(est["total"], sum(v for k, v in est.items() if k != "total"))
    with pytest.raises(ValueError, match="mask_ratio"):
        launch.activation_bytes(cfg, mask_ratio=2)


def test_launch_local_runs_ddp_with_two_processes(tmp_path, data_dir):
    argv = ["train", "--preset", "smoke", "--data", str(data_dir / "videos"), "--out", str(tmp_path / "run"),
            "--max-steps", "2", "--log-every", "1", "--no-tensorboard", "--optim.batch_size_per_gpu", "1"]
    assert launch.launch_local(argv, 2, tmp_path / "logs", timeout=240) == [0, 0]
    ck = torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=True)
    assert ck["world_size"] == 2 and ck["step"] == 2
    assert [r["step"] for r in read_log(tmp_path / "run") if "loss" in r] == [1, 2]  # rank 0 alone logs
    assert "training 'smoke'" in (tmp_path / "logs" / "rank0.log").read_text()
    assert "training 'smoke'" not in (tmp_path / "logs" / "rank1.log").read_text()


def test_a_nan_drill_keeps_the_last_good_checkpoint_and_resumes(tmp_path, data_dir):
    cfg = C.smoke()
    tr = Trainer(cfg, data_dir / "videos", tmp_path, log_every=1, save_every=2, progress=False, tensorboard=False)
    with pytest.raises(FloatingPointError, match="step 4"):
        with faults.nonfinite_loss(tr, at_step=4):
            tr.fit()
    assert "forward" not in vars(tr.criterion)  # restored
    assert read_log(tmp_path)[-1]["event"] == "nan"
    again = Trainer(cfg, data_dir / "videos", tmp_path, log_every=1, progress=False, tensorboard=False)
    assert again.step == 2  # the checkpoint written before the NaN
    with pytest.raises(ValueError, match="at_step"):
        with faults.nonfinite_loss(again, at_step=0):
            pass


def test_an_interrupt_drill_checkpoints_after_that_step(tmp_path, data_dir):
    tr = Trainer(C.smoke(), data_dir / "videos", tmp_path, log_every=1, progress=False, tensorboard=False)
    with pytest.raises(TrainingInterrupted, match="after step 3"):
        with faults.interrupt(tr, at_step=3):
            tr.fit()
    assert Trainer(C.smoke(), data_dir / "videos", tmp_path, progress=False, tensorboard=False).step == 3


def test_launch_local_from_a_process_running_threads(tmp_path, data_dir):
    """The rehearsal started from a process whose torch thread pool and other threads are running (a notebook
    kernel) finishes: workers are fresh interpreters, not forks that could wait on a lock held by a thread."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import threading, time, torch
        torch.set_num_threads(4)
        x = torch.randn(512, 512)
        for _ in range(5):
            x = (x @ x).tanh()  # warm the OpenMP pool
        stop = threading.Event()
        def busy():  # a thread that keeps running, as ipykernel's do
            while not stop.is_set():
                torch.randn(256, 256) @ torch.randn(256, 256)
        t = threading.Thread(target=busy, daemon=True)
        t.start()
        from inolib.run import launch
        argv = ["train", "--preset", "smoke", "--data", {str(data_dir / "videos")!r}, "--out", {str(tmp_path / "run")!r},
                "--max-steps", "1", "--no-tensorboard", "--optim.batch_size_per_gpu", "1", "--optim.num_workers", "0"]
        codes = launch.launch_local(argv, 2, {str(tmp_path / "logs")!r}, timeout=150)
        stop.set()
        print("codes", codes)
    """)
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env)
    log = tmp_path / "logs" / "rank0.log"
    assert "codes [0, 0]" in out.stdout, (out.stdout[-2000:], out.stderr[-2000:],
                                          log.read_text()[-2000:] if log.exists() else "no rank0.log")
    assert torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=True)["world_size"] == 2


def test_worker_env_is_torchruns():
    env = launch.worker_env(1, 2, 12345, base={"PATH": "/bin"})
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["MASTER_PORT"]) == ("1", "1", "2", "12345")
    assert env["OMP_NUM_THREADS"] == "1" and env["PATH"] == "/bin"
    assert launch.worker_env(0, 2, 1, base={"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"  # the user's choice
    assert "OMP_NUM_THREADS" not in launch.worker_env(0, 1, 1, base={})
    with pytest.raises(ValueError, match="argv"):
        launch.launch_local("train --preset smoke", 2, "unused")
