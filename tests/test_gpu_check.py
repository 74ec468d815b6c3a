"""The GPU check (benchmarks/gpu_check.py): its released-step transcription against inolib, its stage runner, and its
CPU dry run (every stage's code path with tiny shapes)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from inolib import config as C
from inolib.config import LossConfig
from inolib.losses import INOLoss
from inolib.masking import random_mask
from inolib.model import build_network
from inolib.schedules import param_groups
from inolib.teacher import make_teacher
from inolib.run.trainer import train_step

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from inolib.released.step import ReleasedLosses, released_forward, released_train_step, to_released_layout  # noqa: E402,E501


def _shared_mask(B, T, N, g, count):
    """The released scheme: one pattern for every clip and frame."""
    pattern = torch.zeros(N, dtype=torch.bool)
    pattern[torch.randperm(N, generator=g)[:count]] = True
    return pattern.expand(B, T, N).clone()


def _rel(a, b):
    a, b = float(a), float(b)
    return abs(a - b) / max(abs(b), 1e-300)


def _rel_norm(a, b):
    """||a - b|| / ||b||: the centers (inolib accumulates them in float32, so single entries near 0 differ more)."""
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))


@pytest.mark.parametrize("B,T,M,N,K,count", [(2, 4, 3, 9, 16, 4), (3, 2, 1, 5, 7, 1), (1, 6, 2, 6, 8, 6),
                                             (2, 4, 2, 7, 8, 0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_released_losses_and_centers_equal_inoloss(B, T, M, N, K, count, seed):
    """The transcription's per-pair / per-frame loops with the centers moved inside them give INOLoss's values
    (reference weighting, released cadence) and its centers after the step, in float64 (rel < 1e-6)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    mask = _shared_mask(B, T, N, g, count)
    student = {"cls_global": r(B, T, K), "cls_local": r(B, T, M, K), "patch": r(B, T, N, K), "patch_mask": mask}
    teacher = {"cls_global": r(B, T, K), "patch": r(B, T, N, K)}
    ours = INOLoss(LossConfig(out_weighting="reference", center_update="released"), out_dim=K).double()
    ours.center.cls.copy_(r(1, K) * 0.3)
    ours.center.patch.copy_(r(1, K) * 0.3)
    rel = ReleasedLosses(K).double()
    rel.cls.center = ours.center.cls.clone()
    rel.patch.center = ours.center.patch.clone()

    # the released layout: frames first
    tb = lambda x: x.transpose(0, 1).flatten(0, 1)  # noqa: E731  (B, T, ...) -> (T B, ...)
    s_loc = student["cls_local"].permute(1, 2, 0, 3).flatten(0, 2)  # (T M B, K)
    want = rel(tb(student["cls_global"]), s_loc, tb(student["patch"]), tb(teacher["cls_global"]), tb(teacher["patch"]),
               tb(mask), T, B)
    got = ours(student, teacher)
    for name in ("loss", "out", "mim", "aff"):
        assert _rel(got[name], want[name]) < 1e-6 or abs(float(got[name]) - float(want[name])) < 1e-12, name
    if count == 0:
        assert float(want["mim"]) == 0 and float(want["aff"]) == 0
    assert _rel_norm(ours.center.cls, rel.cls.center) < 1e-6
    assert _rel_norm(ours.center.patch, rel.patch.center) < 1e-6


def test_released_forward_runs_the_head_on_every_token():
    cfg = C.smoke()
    torch.manual_seed(0)
    net = build_network(cfg.model).double().eval()
    B, T, M = 2, 4, 2
    glob, loc = torch.randn(B, T, 3, 64, 64, dtype=torch.float64), torch.randn(B, T, M, 3, 32, 32, dtype=torch.float64)
    mask = random_mask(B, T, (8, 8), (0.3, 0.3), prob=1.0, generator=torch.Generator().manual_seed(0))
    g, l, m = to_released_layout(glob, loc, mask)
    cls_g, cls_l, patch = released_forward(net, g, l, m)
    assert cls_g.shape == (T * B, 128) and cls_l.shape == (T * M * B, 128) and patch.shape == (T * B, 64, 128)
    ours = net(glob, loc, mask)  # the head on class tokens and masked patches only
    torch.testing.assert_close(cls_g, ours["cls_global"].transpose(0, 1).flatten(0, 1))
    torch.testing.assert_close(cls_l, ours["cls_local"].permute(1, 2, 0, 3).flatten(0, 2))
    idx = ours["patch_index"][0, 0]
    torch.testing.assert_close(patch.view(T, B, 64, 128)[0, 0, idx], ours["patch"][0, 0])


@pytest.mark.parametrize("masked", [True, False])
def test_released_step_equals_train_step(masked):
    """A whole released step (head on every token, loops, per-tensor clipping with .item(), EMA loop) and
    inolib's train_step give the same loss terms, centers, student and teacher in float64."""
    cfg = C.smoke()
    torch.manual_seed(0)
    nets = []
    for _ in range(2):
        torch.manual_seed(0)
        s = build_network(cfg.model).double()
        t = make_teacher(s, cfg.model).double()
        nets.append((s, t, torch.optim.AdamW(param_groups(s), lr=1e-4, weight_decay=0.04)))
    K = cfg.model.head_out_dim
    crit = INOLoss(cfg.loss, K).double()
    rel = ReleasedLosses(K).double()
    rel.cls.center = crit.center.cls.clone()
    rel.patch.center = crit.center.patch.clone()
    g = torch.Generator().manual_seed(1)
    B, T, M = 2, 4, 2
    glob = torch.randn(B, T, 3, 64, 64, generator=g, dtype=torch.float64)
    loc = torch.randn(B, T, M, 3, 32, 32, generator=g, dtype=torch.float64)
    mask = random_mask(B, T, (8, 8), (0.3, 0.3), prob=1.0 if masked else 0.0, generator=g)
    (s1, t1, o1), (s2, t2, o2) = nets
    for _ in range(2):  # the second step starts from moved centers and weights
        a = train_step(s1, t1, crit, o1, glob, loc, mask, momentum=0.9, clip_grad=0.05)
        b = released_train_step(s2, t2, rel, o2, glob, loc, mask, momentum=0.9, clip_grad=0.05, amp_dtype=None)
        for name in ("loss", "out", "mim", "aff"):
            assert _rel(a[name], b[name]) < 1e-6 or abs(a[name] - float(b[name])) < 1e-12, name
        clipped = 0
        for (n, p), q in zip(s1.named_parameters(), s2.parameters()):  # the clipped gradients the optimizer used
            if p.grad is not None and p.grad.norm() > 0:
                assert _rel_norm(p.grad, q.grad) < 1e-6, n
                clipped += bool(abs(float(p.grad.norm()) - 0.05) < 1e-6)
        assert clipped > 10  # the clipping was active
    assert _rel_norm(crit.center.cls, rel.cls.center) < 1e-6
    assert _rel_norm(crit.center.patch, rel.patch.center) < 1e-6 or not masked
    if not masked:  # nothing masked: the patch center stays
        assert torch.equal(crit.center.patch, rel.patch.center)
    # Adam divides by |g| + 1e-8: a gradient entry near 0 turns the float32 rounding of inolib's centers (1e-7 of
    # the gradient, checked above) into up to lr / eps = 1e4 times that in the parameter; 1e-6 is 1 % of lr = 1e-4
    for (n, p), q in zip(s1.named_parameters(), s2.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=n)
    for p, q in zip(t1.parameters(), t2.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    assert not torch.equal(s1.backbone.blocks[0].attn.qkv.weight, t1.backbone.blocks[0].attn.qkv.weight)


# ----------------------------------------------------------------------------------------------------
# The runner


def _load_gpu_check():
    import importlib
    return importlib.import_module("gpu_check")


def _stage_sleeps(ctx):
    ctx.row("before the hang", "1")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    (ctx.work / "child.pid").write_text(str(child.pid))
    time.sleep(600)


def _stage_raises(ctx):
    ctx.row("a figure", "2")
    try:
        raise ValueError("a part broke")
    except ValueError as e:
        ctx.fail("part one", e)
    raise RuntimeError("the stage broke")


def test_runner_enforces_budgets_and_keeps_going(tmp_path):
    gc = _load_gpu_check()
    s = gc.make_settings(True, None, None)
    shared = {}
    res = gc.run_stage("hang", "X hang", _stage_sleeps, s, tmp_path, shared, budget=4.0)
    assert res.status == "timeout" and res.seconds < 10
    assert res.rows[0][:2] == ["before the hang", "1"]  # what was recorded before the hang is kept
    pid = int((tmp_path / "hang" / "child.pid").read_text())
    time.sleep(0.5)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    res = gc.run_stage("boom", "Y boom", _stage_raises, s, tmp_path, shared, budget=30)
    assert res.status == "failed" and "the stage broke" in res.note
    assert [w for w, _ in res.errors] == ["part one", "stage"]
    assert any(r[1].startswith("error: ValueError: a part broke") for r in res.rows)
    text = gc.render([res], shared, s, ["--dry"], 1.0)
    assert "| Y boom | a figure | 2 |" in text and "the stage broke" in text


def test_real_budgets_fit_the_deadline():
    """On one GPU every stage but compile (which gets what is left) fits the deadline at its full budget; the
    2-process stage only records that it was skipped there."""
    gc = _load_gpu_check()
    for dry in (False, True):
        s = gc.make_settings(dry, None, None)
        assert set(s.budgets) == {n for n, *_ in gc.STAGES}
    s = gc.make_settings(False, None, None)
    assert sum(v for k, v in s.budgets.items() if k not in ("compile", "davis2")) <= s.deadline == 465


def test_two_process_stage_without_two_gpus_is_skipped_not_failed(tmp_path):
    gc = _load_gpu_check()
    s = gc.make_settings(False, "cpu", None)  # a real (not dry) run with no GPU: fewer than 2
    res = gc.run_stage("davis2", "3b", gc.stage_davis2, s, tmp_path, {}, budget=60)
    assert res.status == "ok" and len(res.rows) == 1, res
    assert res.rows[0][1] == "skipped: 0 GPUs (needs 2)" and res.rows[0][5] == "—"


def test_mask_comparison_finds_a_changed_or_missing_png(tmp_path):
    gc = _load_gpu_check()
    from inolib.vos.writers import write_ids_png
    a, b = tmp_path / "a", tmp_path / "b"
    ids = torch.tensor([[0, 1, 1, 2], [0, 0, 2, 2], [1, 1, 0, 0]], dtype=torch.uint8)
    for root in (a, b):
        for name in ("x/00000.png", "x/00001.png", "y/00000.png"):
            write_ids_png(root / name, ids)
    assert gc._png_differences(a, b) == (3, [])
    other = ids.clone()
    other[0, 0] = 1  # one pixel of one mask
    write_ids_png(b / "x/00001.png", other)
    (b / "y/00000.png").unlink()
    assert gc._png_differences(a, b) == (3, ["y/00000.png", "x/00001.png"])
    assert gc._pixels_differing(a, b, ["x/00001.png"]) == "1 of 12 pixels of the masks compared"


def test_dry_run(tmp_path):
    """``gpu_check.py --dry``: every stage runs on the CPU with tiny shapes; correctness goals are met."""
    out, js = tmp_path / "dry.md", tmp_path / "dry.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--dry", "--out", str(out),
                           "--json", str(js), "--work", str(tmp_path / "work")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    res = json.loads(js.read_text())
    assert res["dry"] and [s["status"] for s in res["stages"]] == ["ok"] * 9, res["stages"]
    names = [s["name"] for s in res["stages"]]
    assert names == ["env", "train_step", "propagation", "davis", "davis2", "train", "lesson08", "lesson10",
                     "compile"]
    rows = [r for s in res["stages"] for r in s["rows"]]
    for r in rows:  # every goal is met, or a performance goal that a CPU cannot judge
        assert r[5] in ("yes", "—", "n/a (dry)"), r
    checks = [r[0] for r in rows if r[5] == "yes"]
    assert any("identical labels" in c and "480p" in c for c in checks)
    assert any("identical labels" in c and "shooting" in c for c in checks)
    assert any("resumed steps equal" in c for c in checks)
    assert any("SIGTERM" in c for c in checks)
    by_stage = {s["name"]: s["rows"] for s in res["stages"]}
    # stage 3: the goal for ino propagate on all of DAVIS-2017 val, evaluate on a row of its own
    val = [r for r in by_stage["davis"] if r[0].startswith("DAVIS-2017 val (1999 frames) extrapolated, ino propagate")]
    assert len(val) == 1 and val[0][4:] == ["<= 60 s", "n/a (dry)"] and val[0][1].endswith("ms)"), val
    assert "short side 96, batch 2, float32" in val[0][0]  # the settings the figure holds for
    assert any(r[0].startswith("DAVIS-2017 val (1999 frames) extrapolated, ino evaluate") for r in by_stage["davis"])
    fps = [r for r in by_stage["davis"] if r[0].startswith("frames/s of ino propagate")]
    assert len(fps) == 1 and fps[0][4] == ">= 33.3 fr/s" and "33.3 needed" in fps[0][1], fps
    # shooting's frame size through the whole command; memory is a GPU figure
    shoot = {r[0]: r for r in by_stage["davis"] if r[0].startswith("shooting 480x1152 through ino propagate")}
    peak = shoot.get("shooting 480x1152 through ino propagate: peak GiB")
    assert peak == [peak[0], "n/a (CPU)", "—", "—", "<= 16 GiB", "n/a (dry)"], shoot
    assert any(k.endswith("frames/s") for k in shoot), shoot
    shots = list((tmp_path / "work/davis/davis/shooting").glob("*/*.png"))
    assert len(shots) == 3 and Image.open(shots[0]).size == (1152, 480) and Image.open(shots[0]).mode == "P"
    # the 2-process stage (gloo on the CPU): both ranks worked and their masks equal one process's
    two = {r[0]: r for r in by_stage["davis2"]}
    equal = two["2 processes: masks equal one process (every PNG byte for byte)"]
    assert equal[1] == "yes: 6 of 6 equal" and equal[4:] == ["equal", "yes"], equal
    ranks = two["2 processes: each ran its share of the sequences (balanced by frames)"]
    assert ranks[1] == "yes (rank 0: blackswan; rank 1: car-shadow)" and ranks[5] == "yes", ranks
    timed = [r for k, r in two.items() if k.startswith("2 processes (torchrun --nproc_per_node 2, gloo on the CPU)")]
    assert len(timed) == 1 and timed[0][1].endswith(" s") and timed[0][2].endswith("s (1 process)"), two
    text = out.read_text()
    assert "| stage | figure | ours | released | ratio | goal | met |" in text and "CPU dry run" in text
