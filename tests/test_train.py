"""The training loop: schedules, clipping, exact resume, NaN stop, config guard, broken videos, torchrun DDP."""

import json
import math
import multiprocessing
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from inolib import config as C
from inolib.released.step import released_cosine
from inolib.schedules import cosine_schedule, make_schedules, param_groups, peak_lr
from inolib.run.trainer import Trainer, clip_gradients


@pytest.mark.parametrize("epochs,niter,warmup", [(25, 7, 5), (3, 4, 0), (2, 5, 1)])
def test_cosine_schedule_equals_the_released_one(epochs, niter, warmup):
    ours = cosine_schedule(1e-3, 1e-6, epochs * niter, warmup * niter).numpy()
    ref = released_cosine(1e-3, 1e-6, epochs, niter, warmup)
    assert ours.shape == ref.shape and np.allclose(ours, ref, rtol=1e-12, atol=0)


def test_peak_lr_and_schedules_follow_appendix_a1():
    assert math.isclose(peak_lr(C.charades().optim, 4, world_size=4), 1.875e-4)  # 4 GPUs x 4 clips x L=4
    assert math.isclose(peak_lr(C.kinetics().optim, 4, world_size=8), 3.75e-5)  # 8 GPUs
    s = make_schedules(C.charades().optim, steps_per_epoch=10, clip_len=4, world_size=4)
    assert s["lr"].shape == (250,) and s["lr"][0] == 0 and math.isclose(float(s["lr"][49]), 1.875e-4)
    assert math.isclose(float(s["wd"][0]), 0.04) and float(s["wd"][-1]) > 0.399
    assert math.isclose(float(s["momentum"][0]), 0.996) and float(s["momentum"][-1]) > 0.99999


def test_released_schedule_is_the_released_loop_s_slice():
    """optim.schedule released: epochs 1..E-1 on schedule steps [n, E n) as released: the warmup starts at base/5."""
    o = C.OptimConfig(schedule="released")
    n = 7
    s = make_schedules(o, n, 4, 4)
    base = peak_lr(o, 4, 4)
    want = released_cosine(base, o.min_lr, o.epochs, n, o.warmup_epochs)[n:]
    assert len(s["lr"]) == (o.epochs - 1) * n
    np.testing.assert_allclose(s["lr"].numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(s["momentum"].numpy(), released_cosine(0.996, 1.0, o.epochs, n)[n:], rtol=1e-12)
    assert abs(s["lr"][0].item() - base / o.warmup_epochs) < 0.01 * base
    clean = make_schedules(C.OptimConfig(), n, 4, 4)
    assert len(clean["lr"]) == o.epochs * n and clean["lr"][0] == 0
    with pytest.raises(ValueError, match="optim.schedule"):
        make_schedules(C.OptimConfig(schedule="dino"), n, 4, 4)


def test_param_groups_exclude_biases_and_norms_from_weight_decay():
    from inolib.model import build_network

    net = build_network(C.smoke().model)
    decay, no_decay = param_groups(net)
    names = {id(p): n for n, p in net.named_parameters()}
    assert all(p.ndim > 1 and not names[id(p)].endswith(".bias") for p in decay["params"])
    assert any(names[id(p)].endswith("norm.weight") for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == sum(p.requires_grad for p in net.parameters())


def test_clip_gradients_is_the_per_parameter_rule():
    g = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.zeros(s)) for s in [(3, 4), (5,), (2, 2, 2)]]
    for p, scale in zip(ps, [10.0, 0.1, 3.0]):
        p.grad = torch.randn(p.shape, generator=g) * scale
    ref = [p.grad.clone() for p in ps]
    for r in ref:
        n = r.norm()
        if 1.0 / (n + 1e-6) < 1:
            r.mul_(1.0 / (n + 1e-6))
    clip_gradients(ps, 1.0)
    for p, r in zip(ps, ref):
        assert torch.allclose(p.grad, r, atol=1e-7)
    assert math.isclose(float(ps[1].grad.norm()), float(ref[1].norm()))  # a small gradient is left alone


def small_cfg(**over):
    cfg = C.override(C.smoke(), {"optim.epochs": "2", "model.drop_path_rate": "0.1", "crops.clips_per_video": "2",
                                 **over})
    return cfg


def read_log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_resume_mid_epoch_repeats_the_uninterrupted_run(tmp_path, data_dir):
    videos = data_dir / "videos"
    cfg = small_cfg()
    whole = Trainer(cfg, videos, tmp_path / "whole", log_every=1, progress=False, tensorboard=False)
    whole.fit()
    spe = whole.steps_per_epoch
    assert whole.step == 2 * spe and spe >= 2

    part = Trainer(cfg, videos, tmp_path / "part", log_every=1, progress=False, tensorboard=False,
                   max_steps=spe + 1)  # stops inside the second epoch
    part.fit()
    assert torch.load(tmp_path / "part/checkpoint.pth", weights_only=True)["step"] == spe + 1  # tensors only
    resumed = Trainer(cfg, videos, tmp_path / "part", log_every=1, progress=False, tensorboard=False)
    assert resumed.step == spe + 1
    resumed.fit()

    a = {r["step"]: r for r in read_log(tmp_path / "whole") if "loss" in r}
    b = {r["step"]: r for r in read_log(tmp_path / "part") if "loss" in r}
    assert sorted(a) == sorted(b) == list(range(1, 2 * spe + 1))
    for step in a:
        for k in ("loss", "g2g", "l2g", "mim", "aff", "lr", "momentum"):
            assert a[step][k] == b[step][k], (step, k)
    for (n, p), (_, q) in zip(whole.teacher.state_dict().items(), resumed.teacher.state_dict().items()):
        assert torch.equal(p, q), n
    assert torch.equal(whole.criterion.center.cls, resumed.criterion.center.cls)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
    run = tmp_path / "run"
    tr = Trainer(small_cfg(), data_dir / "videos", run, log_every=1, progress=False, tensorboard=False)
    spe = tr.steps_per_epoch  # the checkpoint is written at the end of the first epoch
    forward = tr.criterion.forward

    def poisoned(*a, **k):
        out = forward(*a, **k)
        if tr.step == spe + 1:  # the second step of the second epoch
            out["loss"] = out["loss"] * float("nan")
        return out

    tr.criterion.forward = poisoned
    with pytest.raises(FloatingPointError, match=f"step {spe + 2} .*checkpoint.pth"):
        tr.fit()
    kept = torch.load(run / "checkpoint.pth", weights_only=True)
    assert kept["step"] == spe
    assert all(torch.isfinite(v).all() for v in kept["student"].values() if v.is_floating_point())
    assert read_log(run)[-1]["event"] == "nan" and read_log(run)[-1]["step"] == spe + 2  # numbered like the others


def test_resume_with_another_configuration_names_the_difference(tmp_path, data_dir):
    run = tmp_path / "run"
    Trainer(small_cfg(), data_dir / "videos", run, progress=False, tensorboard=False, keep_every=1).fit()
    assert torch.equal(torch.load(run / "checkpoint_e0002.pth", weights_only=True)["teacher"]["head.mlp.0.weight"],
                       torch.load(run / "checkpoint.pth", weights_only=True)["teacher"]["head.mlp.0.weight"])
    assert sorted(p.name for p in run.glob("checkpoint*")) == ["checkpoint.pth", "checkpoint_e0001.pth",
                                                               "checkpoint_e0002.pth"]
    with pytest.raises(ValueError, match="loss.teacher_temp"):
        Trainer(small_cfg(**{"loss.teacher_temp": "0.02"}), data_dir / "videos", run, progress=False,
                tensorboard=False)
    fresh = Trainer(small_cfg(**{"loss.teacher_temp": "0.02"}), data_dir / "videos", run, progress=False,
                    tensorboard=False, resume=False)
    assert fresh.step == 0
    fresh.close()  # it holds the run folder until then
    (run / "checkpoint.pth").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="checkpoint.pth: not a resumable"):
        Trainer(small_cfg(), data_dir / "videos", run, progress=False, tensorboard=False)


@pytest.fixture(scope="module")
def one_step_checkpoint(tmp_path_factory, data_dir):
    run = tmp_path_factory.mktemp("onestep") / "run"
    tr = Trainer(small_cfg(), data_dir / "videos", run, progress=False, tensorboard=False, max_steps=1)
    tr.fit()
    return torch.load(run / "checkpoint.pth", weights_only=True)


@pytest.mark.parametrize("damage,reason", [
    (lambda ck: [1, 2], r"a list, not a dict"),
    (lambda ck: {**ck, "config": [1]}, r"its 'config' is not a dict"),
    (lambda ck: {**ck, "step": "x"}, r"ValueError: invalid literal"),
    (lambda ck: {**ck, "step": -5}, r"step -5 and skipped_steps 0 must be >= 0"),
    (lambda ck: {**ck, "rng": []}, r"IndexError"),
    (lambda ck: {**ck, "student": {"a": torch.zeros(1)}}, r"RuntimeError: Error\(s\) in loading state_dict .*Missing"),
    (lambda ck: {**ck, "optimizer": {"state": {}}}, r"(KeyError|ValueError)"),
])
def test_a_damaged_run_checkpoint_is_refused_naming_the_file(tmp_path, data_dir, one_step_checkpoint, damage, reason):
    run = tmp_path / "run"
    run.mkdir()
    torch.save(damage(dict(one_step_checkpoint)), run / "checkpoint.pth")
    before = (run / "checkpoint.pth").read_bytes()
    with pytest.raises(ValueError, match=r"checkpoint\.pth: not a resumable inolib checkpoint \(.*" + reason):
        Trainer(small_cfg(), data_dir / "videos", run, progress=False, tensorboard=False)
    assert (run / "checkpoint.pth").read_bytes() == before  # kept as it was: --no-resume is the user's choice


def test_a_broken_video_is_skipped_with_its_name(tmp_path, data_dir):
    videos = tmp_path / "videos"
    videos.mkdir()
    good = data_dir / "videos/kinetics400_mmaction2/demo_arm_wrestling.mp4"
    shutil.copy(good, videos / "good.mp4")
    (videos / "broken.mp4").write_bytes(good.read_bytes()[:3000])
    with pytest.warns(UserWarning, match="broken.mp4"):
        tr = Trainer(small_cfg(**{"optim.epochs": "1", "crops.clips_per_video": "4"}), videos, tmp_path / "run", log_every=1, progress=False,
                     tensorboard=False, max_steps=2)
    last = tr.fit()
    assert last["step"] == 2 and last["skipped_videos"] == 1 and math.isfinite(last["loss"])


def test_ino_train_under_torchrun_with_two_processes(tmp_path, data_dir):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "inolib", "train", "--preset", "smoke", "--data", str(data_dir / "videos"), "--out", str(run),
           "--max-steps", "2", "--log-every", "1", "--no-tensorboard", "--optim.batch_size_per_gpu", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                           "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    ck = torch.load(run / "checkpoint.pth", weights_only=True)
    assert ck["step"] == 2 and ck["world_size"] == 2 and len(ck["rng"]) == 2  # each process's generators
    steps = [rec["step"] for rec in read_log(run) if "loss" in rec]
    assert steps == [1, 2]  # one line per step: only rank 0 writes
    assert r.stdout.count("training 'smoke'") == 1


def test_read_log_names_a_broken_line_and_skips_a_torn_last_line(tmp_path):
    from inolib.run.log import read_log

    (tmp_path / "log.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n{"step": 3, "loss": 1.0}\n')
    with pytest.raises(ValueError, match="log.jsonl:2"):  # a broken line in the middle
        read_log(tmp_path)
    (tmp_path / "log.jsonl").write_text('{"step": 1, "loss": 2.0}\n\n')
    assert read_log(tmp_path / "log.jsonl") == [{"step": 1, "loss": 2.0}]
    for torn in ('{"step": 1, "loss": 2.0}\n{"step": 2, "lo', '{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n\n'):
        (tmp_path / "log.jsonl").write_text(torn)  # the process was killed (or the disk filled) mid-line
        with pytest.warns(UserWarning, match="log.jsonl:2: skipping the last line"):
            assert read_log(tmp_path) == [{"step": 1, "loss": 2.0}]


def test_a_nan_on_one_process_stops_every_process(tmp_path, data_dir):
    """Under torchrun, a non-finite loss on rank 1 only must stop both ranks (not leave rank 0 waiting in DDP)."""
    script = tmp_path / "nan_rank1.py"
    script.write_text(f"""
import os, sys
from inolib import config as C
from inolib.distributed import cleanup
from inolib.run.trainer import Trainer
cfg = C.override(C.smoke(), {{"optim.batch_size_per_gpu": "1"}})
tr = Trainer(cfg, {str(data_dir / "videos")!r}, {str(tmp_path / "run")!r}, progress=False, tensorboard=False)
forward = tr.criterion.forward
def poisoned(*a, **k):
    out = forward(*a, **k)
    if tr.dist.rank == 1 and tr.step == 1:
        out["loss"] = out["loss"] * float("nan")
    return out
tr.criterion.forward = poisoned
try:
    tr.fit()
    outcome = "finished"
except FloatingPointError as e:
    outcome = f"stopped at step {{tr.step}}"
open({str(tmp_path)!r} + f"/rank{{tr.dist.rank}}.txt", "w").write(outcome)  # one file per rank: no interleaving
cleanup()
""")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert [(tmp_path / f"rank{i}.txt").read_text() for i in (0, 1)] == ["stopped at step 1"] * 2


def test_ino_train_command_resumes_and_then_has_nothing_to_do(tmp_path, data_dir, capsys):
    from inolib.cli import main

    args = ["train", "--preset", "smoke", "--data", str(data_dir / "videos"), "--out", str(tmp_path / "r"),
            "--no-tensorboard", "--log-every", "1"]
    assert main(args + ["--max-steps", "2"]) == 0
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "resumed at step 2" in out and "step 7: loss" in out
    assert main(args) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(args + ["--optim.amp", "fp32"]) == 2  # a bad value is a clear error, not a traceback
    assert "optim.amp" in capsys.readouterr().err


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_steps_on_a_cpu(tmp_path, data_dir, amp):
    cfg = small_cfg(**{"optim.amp": amp, "optim.epochs": "1"})
    if amp == "fp16":  # fp16 autocast and its GradScaler are for GPUs: bf16 on a CPU, said aloud
        with pytest.warns(UserWarning, match="fp16 is for GPUs"):
            tr = Trainer(cfg, data_dir / "videos", tmp_path, progress=False, tensorboard=False, max_steps=2)
    else:
        tr = Trainer(cfg, data_dir / "videos", tmp_path, progress=False, tensorboard=False, max_steps=2)
    assert tr.amp_dtype is torch.bfloat16 and tr.scaler is None
    last = tr.fit()
    assert last["step"] == 2 and math.isfinite(last["loss"])
    assert all(p.dtype == torch.float32 for p in tr.teacher.parameters())  # weights stay fp32


# ----------------------------------------------------------------------------------------------------
# Masking as released: one mask per step for every process, none without an in-loss, skipped empty steps


def test_every_process_uses_the_same_mask_at_every_step(tmp_path, data_dir):
    """torchrun with 2 processes: both see identical masks at every step, including whether it is masked."""
    script = tmp_path / "masks.py"
    script.write_text(f"""
import torch
from inolib import config as C
from inolib.distributed import cleanup
from inolib.run.trainer import Trainer
cfg = C.override(C.smoke(), {{"optim.batch_size_per_gpu": "1", "optim.epochs": "1"}})
tr = Trainer(cfg, {str(data_dir / "videos")!r}, {str(tmp_path / "run")!r}, progress=False, tensorboard=False)
seen = []
make = tr._mask
def recording(b):
    m = make(b)
    seen.append(m.clone())
    return m
tr._mask = recording
tr.fit()
torch.save(torch.stack(seen), {str(tmp_path)!r} + f"/masks{{tr.dist.rank}}.pt")
cleanup()
""")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    m0, m1 = (torch.load(tmp_path / f"masks{i}.pt", weights_only=True) for i in (0, 1))
    assert m0.shape[0] >= 5
    masked = m0.flatten(1).any(1)
    assert masked.any() and not masked.all()  # both kinds of step occur, and ...
    assert torch.equal(m0, m1)  # ... every step is the same on both processes


def test_no_mask_when_no_in_loss_is_on(tmp_path, data_dir):
    """Out-only runs (Tab. 4): the student sees its global crops unmasked at every step."""
    cfg = small_cfg(**{"loss.mim": "false", "loss.aff": "false", "masking.prob": "1.0", "optim.epochs": "1"})
    tr = Trainer(cfg, data_dir / "videos", tmp_path / "run", log_every=1, progress=False, tensorboard=False,
                 max_steps=3)
    masks = []
    forward = tr.student.forward
    tr.student.forward = lambda g, loc, mask, **kw: masks.append(mask) or forward(g, loc, mask, **kw)
    tr.fit()
    assert len(masks) == 3 and all(m is None for m in masks)
    assert all(rec["masked"] == 0 and rec["mim"] == 0 for rec in read_log(tmp_path / "run") if "loss" in rec)
    # with an in-loss on, prob 1.0 masks every step
    tr = Trainer(small_cfg(**{"masking.prob": "1.0", "optim.epochs": "1"}), data_dir / "videos", tmp_path / "r2",
                 log_every=1, progress=False, tensorboard=False, max_steps=3)
    tr.fit()
    assert all(rec["masked"] > 0 for rec in read_log(tmp_path / "r2") if "loss" in rec)


def test_a_step_without_any_gradient_is_skipped_and_counted(tmp_path, data_dir):
    """g2g and l2g off: an unmasked step has nothing to learn; it is skipped (not a backward() error)."""
    cfg = small_cfg(**{"loss.g2g": "false", "loss.l2g": "false", "optim.epochs": "1"})
    tr = Trainer(cfg, data_dir / "videos", tmp_path / "run", log_every=1, progress=False, tensorboard=False)
    before = {k: v.clone() for k, v in tr.student.state_dict().items()}
    last = tr.fit()
    log = [rec for rec in read_log(tmp_path / "run") if "loss" in rec]
    unmasked = [rec["step"] for rec in log if rec["masked"] == 0]
    assert unmasked and len(unmasked) < len(log)  # prob 0.5: both kinds in this run
    assert tr.skipped_steps == len(unmasked) == last["skipped_steps"]
    assert all(math.isfinite(rec["loss"]) for rec in log)
    changed = any(not torch.equal(before[k], v) for k, v in tr.student.state_dict().items())
    assert changed  # the masked steps trained

    never = small_cfg(**{"loss.g2g": "false", "loss.l2g": "false", "masking.prob": "0.0", "optim.epochs": "1"})
    tr = Trainer(never, data_dir / "videos", tmp_path / "never", log_every=1, progress=False, tensorboard=False)
    before = {k: v.clone() for k, v in tr.student.state_dict().items()}
    tr.fit()
    assert tr.skipped_steps == tr.step == tr.steps_per_epoch
    assert all(torch.equal(before[k], v) for k, v in tr.student.state_dict().items())


# ----------------------------------------------------------------------------------------------------
# Stopping on a signal, one writer per run folder


def _train_cmd(data_dir, out, *extra):
    return [sys.executable, "-m", "inolib", "train", "--preset", "smoke", "--data", str(data_dir / "videos"),
            "--out", str(out), "--log-every", "1", "--no-tensorboard", "--optim.epochs", "2",
            "--crops.clips_per_video", "2", *extra]


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory, data_dir):
    import os

    whole = tmp_path_factory.mktemp("whole")
    r = subprocess.run(_train_cmd(data_dir, whole), capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    return whole


@pytest.mark.parametrize("sig", ["SIGINT"])
def test_a_signal_saves_at_the_step_boundary_and_the_rerun_resumes_exactly(tmp_path, data_dir, sig,
                                                                          uninterrupted_run):
    import os
    import signal
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = uninterrupted_run
    run = tmp_path / "run"
    p = subprocess.Popen(_train_cmd(data_dir, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env)
    deadline = time.time() + 200
    while time.time() < deadline:  # wait for two logged steps, then interrupt mid-run
        if (run / "log.jsonl").is_file() and sum('"loss"' in x for x in (run / "log.jsonl").read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    p.send_signal(getattr(signal, sig))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 128 + getattr(signal, sig), err[-2000:]
    assert sig in err and "resume" in err
    ck = torch.load(run / "checkpoint.pth", weights_only=True)
    total = len([x for x in read_log(whole) if "loss" in x])
    assert 2 <= ck["step"] < total  # stopped part-way, at a step boundary
    r = subprocess.run(_train_cmd(data_dir, run), capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and f"resumed at step {ck['step']}" in r.stdout, r.stderr[-2000:]
    a = {x["step"]: x for x in read_log(whole) if "loss" in x}
    b = {x["step"]: x for x in read_log(run) if "loss" in x}
    assert sorted(b) == sorted(a) == list(range(1, total + 1))
    for step in a:
        for k in ("loss", "g2g", "l2g", "mim", "aff"):
            assert a[step][k] == b[step][k], (step, k)
    assert [x["event"] for x in read_log(run) if "event" in x] == ["start", "interrupted", "resume"]


def test_two_runs_on_one_folder_the_second_refuses(tmp_path, data_dir, capsys):
    import os
    import signal
    import time

    from inolib.cli import main
    from inolib.run.lock import RunFolderBusy, RunLock

    run = tmp_path / "run"
    first = Trainer(small_cfg(), data_dir / "videos", run, progress=False, tensorboard=False)
    with pytest.raises(RunFolderBusy, match="in use by another training run"):
        Trainer(small_cfg(), data_dir / "videos", run, progress=False, tensorboard=False)
    first.close()
    Trainer(small_cfg(), data_dir / "videos", run, progress=False, tensorboard=False).close()  # free again

    # another process holds the folder: `ino train` refuses with a message; killed with -9, it leaves no lock
    run.mkdir(exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", f"from inolib.run.lock import RunLock; import time; "
                               f"lock = RunLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    args = ["train", "--preset", "smoke", "--data", str(data_dir / "videos"), "--out", str(run), "--no-tensorboard"]
    assert main(args + ["--max-steps", "1"]) == 2
    assert f"pid {holder.pid}" in capsys.readouterr().err
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    time.sleep(0.1)
    RunLock(run).acquire().release()
    assert main(args + ["--max-steps", "1"]) == 0


def test_released_schedule_runs_one_epoch_fewer(tmp_path, data_dir):
    tr = Trainer(small_cfg(**{"optim.schedule": "released", "optim.epochs": "3"}), data_dir / "videos", tmp_path,
                 progress=False, tensorboard=False)
    assert tr.total_steps == 2 * tr.steps_per_epoch
    tr.close()


# ----------------------------------------------------------------------------------------------------
# Synthetic training videos and J&F while training


def test_synthetic_source_writes_seeded_videos_once(tmp_path):
    from inolib.data.synthetic import parse_synthetic_source

    cfg = C.override(small_cfg(), {"synthetic.num_frames": "24", "synthetic.height": "64", "synthetic.width": "96",
                                   "synthetic.num_objects": "2"})
    tr = Trainer(cfg, ["synthetic:3"], tmp_path / "run", progress=False, tensorboard=False)
    files = sorted((tmp_path / "run/synthetic").glob("*.avi"))
    assert [f.name for f in files] == ["synthetic_0000.avi", "synthetic_0001.avi", "synthetic_0002.avi"]
    assert len(tr.dataset.videos) == 3
    data = [f.read_bytes() for f in files]
    tr.close()
    other = Trainer(cfg, ["synthetic:3"], tmp_path / "again", progress=False, tensorboard=False)
    assert [f.read_bytes() for f in sorted((tmp_path / "again/synthetic").glob("*.avi"))] == data  # seeded
    other.close()
    assert data[0] != data[1]
    assert parse_synthetic_source("data/videos") is None and parse_synthetic_source("synthetic:12") == 12
    for bad in ("synthetic:0", "synthetic:x", "synthetic:"):
        with pytest.raises(ValueError, match="synthetic:N"):
            parse_synthetic_source(bad)


@pytest.fixture(scope="module")
def tiny_davis(tmp_path_factory):
    from inolib.data.synthetic import make_synthetic_video, write_davis_layout

    root = tmp_path_factory.mktemp("davis")
    for seed in (1, 2):
        write_davis_layout(make_synthetic_video(6, 64, 96, 2, 0, seed=10_000 + seed, name=f"seq{seed}"), root)
    return root


def test_eval_davis_logs_jf_and_never_changes_the_training(tmp_path, data_dir, tiny_davis):
    cfg = small_cfg(**{"optim.epochs": "1", "propagation.short_side": "64"})
    plain = Trainer(cfg, data_dir / "videos", tmp_path / "plain", log_every=1, progress=False, tensorboard=False,
                    max_steps=3)
    plain.fit()
    watched = Trainer(cfg, data_dir / "videos", tmp_path / "watched", log_every=1, progress=False,
                      tensorboard=False, max_steps=3, eval_davis=tiny_davis, eval_every=2)
    watched.fit()
    a = [r for r in read_log(tmp_path / "plain") if "loss" in r]
    b = [r for r in read_log(tmp_path / "watched") if "loss" in r]
    assert [(r["step"], r["loss"], r["mim"]) for r in a] == [(r["step"], r["loss"], r["mim"]) for r in b]
    for (n, p), (_, q) in zip(plain.teacher.state_dict().items(), watched.teacher.state_dict().items()):
        assert torch.equal(p, q), n
    evals = [r for r in read_log(tmp_path / "watched") if "jf_student" in r]
    assert [r["step"] for r in evals] == [0, 2, 3]  # random init, every 2 steps, the end
    assert all(0 <= r["jf_student"] <= 1 and 0 <= r["jf_teacher"] <= 1 for r in evals)
    assert evals[0]["jf_student"] == evals[0]["jf_teacher"]  # the teacher starts as a copy of the student
    assert watched.student.training  # evaluation put it back in training mode


def test_eval_davis_command_line(tmp_path, data_dir, tiny_davis, capsys):
    from inolib.cli import main

    args = ["train", "--preset", "smoke", "--data", str(data_dir / "videos"), "--out", str(tmp_path / "r"),
            "--no-tensorboard", "--max-steps", "1", "--eval-davis", str(tiny_davis), "--propagation.short_side", "64"]
    assert main(args) == 0
    assert [r["step"] for r in read_log(tmp_path / "r") if "jf_teacher" in r] == [0, 1]
    assert main(args[:-4] + ["--eval-davis", str(tmp_path / "nowhere"), "--no-resume"]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_sigterm_in_process_stops_at_the_step_boundary_with_a_checkpoint(tmp_path, data_dir):
    """What a cluster scheduler sends: the step under way finishes, a checkpoint is written, then it stops."""
    import os
    import signal

    from inolib.run.trainer import TrainingInterrupted

    tr = Trainer(small_cfg(**{"optim.epochs": "1"}), data_dir / "videos", tmp_path / "run", log_every=1,
                 progress=False, tensorboard=False)
    forward = tr.criterion.forward

    def terminated_during_step_2(*a, **k):
        if tr.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of step 2
        return forward(*a, **k)

    tr.criterion.forward = terminated_during_step_2
    with pytest.raises(TrainingInterrupted, match="SIGTERM") as e:
        tr.fit()
    assert e.value.signum == signal.SIGTERM
    assert torch.load(tmp_path / "run/checkpoint.pth", weights_only=True)["step"] == 2  # step 2 completed
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
    assert Trainer(small_cfg(**{"optim.epochs": "1"}), data_dir / "videos", tmp_path / "run", progress=False,
                   tensorboard=False).step == 2


def test_temporary_files_of_a_dead_writer_are_removed_at_start(tmp_path, data_dir):
    import os

    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    dead = 2**22 + 12345  # above Linux's largest pid: no such process
    stale = [run / f"checkpoint.pth.tmp{dead}", run / f".video_index.json.tmp{dead}"]
    kept = [run / "notes.tmp", run / "clip.tmp12a", run / f"sub/checkpoint.pth.tmp{dead}",
            run / f".log.jsonl.tmp{os.getpid()}"]  # not our naming, a subfolder, a live process
    for p in stale + kept:
        p.write_bytes(b"half")
    with pytest.warns(UserWarning, match=f"checkpoint.pth.tmp{dead}"):
        Trainer(small_cfg(), data_dir / "videos", run, progress=False, tensorboard=False).close()
    assert [p.exists() for p in stale] == [False, False] and all(p.exists() for p in kept)


def test_resume_cuts_the_log_back_to_the_checkpoint(tmp_path, data_dir):
    """Steps logged after the last checkpoint and a torn last line (a kill) are not kept twice or broken."""
    run = tmp_path / "run"
    cfg = small_cfg()
    kw = dict(log_every=1, progress=False, tensorboard=False)
    Trainer(cfg, data_dir / "videos", run, max_steps=2, **kw).fit()  # checkpoint at step 2
    with open(run / "log.jsonl", "a") as f:  # steps 3 and 4 logged, then killed while writing step 5
        f.write('{"step": 3, "epoch": 1, "loss": 99.0}\n{"step": 4, "epoch": 2, "loss": 99.0}\n{"step": 5, "lo')
    tr = Trainer(cfg, data_dir / "videos", run, max_steps=4, **kw)
    assert tr.step == 2
    tr.fit()
    records = read_log(run)  # every line is JSON
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert all(r["loss"] != 99.0 for r in records if "loss" in r)
    assert [(r["event"], r["step"]) for r in records if "event" in r] == [("start", 0), ("resume", 2)]


@pytest.mark.parametrize("workers", [0, 1])
def test_every_video_failing_while_training_is_one_clear_error(tmp_path, data_dir, workers):
    """Indexing succeeded, then every file was cut short: a ValueError naming the files, not a traceback or a loop."""
    from inolib.data.clips import UnusableVideos

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(data_dir / "videos/kinetics400_mmaction2/demo_arm_wrestling.mp4", videos / name)
    tr = Trainer(small_cfg(**{"optim.num_workers": str(workers)}), videos, tmp_path / "run", progress=False,
                 tensorboard=False, max_steps=3)
    for name in ("a.mp4", "b.mp4"):  # damaged after indexing (a copy cut short, a failing disk)
        (videos / name).write_bytes((videos / name).read_bytes()[:3000])
    with pytest.raises(UnusableVideos) as e:
        tr.fit()
    msg = str(e.value)
    assert isinstance(e.value, ValueError) and len(msg.splitlines()) == 1 and "Traceback" not in msg, msg
    assert "no video left to train on" in msg and "a.mp4" in msg and "b.mp4" in msg
    assert "changed since it was indexed" in msg  # the reason: the files are not what was indexed
    assert read_log(tmp_path / "run")[-1]["event"] == "no_usable_video"
    # the loader worker ended with the loop, although the error is still alive here (it ignores SIGTERM: left
    # waiting, it would hang the interpreter's exit)
    assert not multiprocessing.active_children()


def test_ino_train_reports_videos_that_all_fail_while_training_in_one_line(tmp_path, data_dir, capsys, monkeypatch):
    import inolib.data.clips

    def broken(path, indices, size=None):
        raise ValueError(f"{path}: cannot decode frame {int(indices[0])}")

    monkeypatch.setattr(inolib.data.clips, "read_frames", broken)
    from inolib.cli import main

    assert main(["train", "--preset", "smoke", "--data", str(data_dir / "videos"), "--out", str(tmp_path / "r"),
                 "--no-tensorboard", "--max-steps", "2"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "ino train" in line]  # (stderr also has the progress bars)
    assert len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith("ino train: error: no video left to train on") and "apple.mp4" in errors[0]


def test_init_starts_both_backbones_from_the_weights_and_resume_keeps_the_run(tmp_path, data_dir, capsys):
    """--model.init (ino train --init): the step-0 student and teacher backbones are the file's (its position
    table resized to the run's grid; heads fresh); the config records it; a resumed run continues its own weights."""
    from inolib.cli import main
    from inolib.model import build_backbone

    arch = {"model.embed_dim": "192", "model.num_heads": "3"}  # a width the loader knows (ViT-Tiny)
    src = C.override(C.smoke(), {**arch, "model.pos_embed_size": "128"})  # a 16x16 table; the run's is 8x8
    torch.manual_seed(5)
    vit = build_backbone(src.model)
    state = {k: v for k, v in vit.state_dict().items() if k != "mask_token"}  # DINO-style: no mask token
    torch.save(state, tmp_path / "pre.pth")
    cfg = C.override(C.smoke(), {**arch, "model.init": str(tmp_path / "pre.pth")})
    g = cfg.model.pos_embed_size // cfg.model.patch_size
    tr = Trainer(cfg, data_dir / "videos", tmp_path / "run", progress=False, tensorboard=False, max_steps=2)
    student, teacher = tr.student.backbone.state_dict(), tr.teacher.backbone.state_dict()
    for k, v in state.items():
        want = vit.pos_embed_for((g, g)) if k == "pos_embed" else v
        assert torch.equal(student[k], want) and torch.equal(teacher[k], want), k
    assert student["pos_embed"].shape == (1, 1 + g * g, 192)
    tr.fit()
    ck = torch.load(tmp_path / "run/checkpoint.pth", weights_only=True)
    assert ck["config"]["model"]["init"] == str(tmp_path / "pre.pth") and ck["step"] == 2
    again = Trainer(cfg, data_dir / "videos", tmp_path / "run", progress=False, tensorboard=False, max_steps=3)
    assert again.step == 2 and torch.equal(again.student.backbone.pos_embed, ck["student"]["backbone.pos_embed"])
    again.fit()
    assert again.step == 3
    deeper = C.override(cfg, {"model.depth": "3"})
    with pytest.raises(ValueError, match=r"--model.init .*pre.pth: a ViT of patch 8, width 192, 2 blocks"):
        Trainer(deeper, data_dir / "videos", tmp_path / "run2", progress=False, tensorboard=False, max_steps=1)
    assert not (tmp_path / "run2").exists()  # refused before the run folder was made
    args = ["train", "--preset", "smoke", "--model.embed_dim", "192", "--model.num_heads", "3", "--data",
            str(data_dir / "videos"), "--out", str(tmp_path / "cli"), "--max-steps", "1", "--no-tensorboard",
            "--init", str(tmp_path / "pre.pth")]
    assert main(args) == 0
    assert torch.load(tmp_path / "cli/checkpoint.pth", weights_only=True)["config"]["model"]["init"] == str(
        tmp_path / "pre.pth")
    unknown = [a if a != str(tmp_path / "pre.pth") else "no-such-weights" for a in args]
    unknown[unknown.index("--out") + 1] = str(tmp_path / "cli2")
    assert main(unknown) == 2 and "known names" in capsys.readouterr().err and not (tmp_path / "cli2").exists()


def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_keeps_the_last_checkpoint(tmp_path, data_dir,
                                                                                        monkeypatch, capsys):
    """torch.save raises RuntimeError, not OSError, when the disk fills: ino train prints one line, exit 2."""
    from inolib.cli import main

    args = ["train", "--preset", "smoke", "--data", str(data_dir / "videos"), "--out", str(tmp_path / "run"),
            "--max-steps", "2", "--save-every", "1", "--no-tensorboard"]
    assert main(args) == 0
    before = (tmp_path / "run/checkpoint.pth").read_bytes()
    real = torch.save

    def full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed")
    monkeypatch.setattr(torch, "save", full)
    args[args.index("2")] = "4"
    assert main(args) == 2
    text = capsys.readouterr().err
    err = [line for line in text.replace("\r", "\n").splitlines() if "ino train: error:" in line]
    assert len(err) == 1 and "checkpoint" in err[0] and "is the disk full?" in err[0] and "Traceback" not in text
    monkeypatch.setattr(torch, "save", real)
    assert (tmp_path / "run/checkpoint.pth").read_bytes() == before  # the last good checkpoint is intact
    assert not [p for p in (tmp_path / "run").iterdir() if ".tmp" in p.name]
