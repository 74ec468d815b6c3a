"""Label propagation against a plain transcription of the released kernel and context rule."""

import pytest
import torch
import torch.nn.functional as F

from inolib.released.propagation import released_video, released_window
from inolib.vos.propagation import (PROTOCOLS, FrameSize, Propagator, context_indices, labels_to_grid, labels_to_ids,
                                    propagate, propagate_frame, window_mask)


def test_context_rule():
    assert context_indices(1) == [0]
    assert context_indices(5) == [0, 1, 2, 3, 4]
    assert context_indices(12) == [0] + list(range(2, 12))
    assert context_indices(9, t0=4, num_context=3) == [4, 6, 7, 8]
    assert context_indices(5, t0=4) == [4]


@pytest.mark.parametrize("h,w,r", [(5, 7, 1), (6, 4, 2), (3, 9, 40)])
def test_window_equals_brute_force(h, w, r):
    assert torch.equal(window_mask((h, w), r).float(), released_window(h, w, r))
    circle = window_mask((h, w), r, shape="circle")
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    d2 = (i.flatten()[:, None] - i.flatten()[None]) ** 2 + (j.flatten()[:, None] - j.flatten()[None]) ** 2
    assert torch.equal(circle, d2 < r * r)


@pytest.mark.parametrize("h,w,radius,chunk_bytes", [
    (6, 8, 40, None), (6, 8, 2, 3000), (6, 8, 1, 10**9),
    (7, 19, 3, None), (19, 7, 3, 20000), (5, 24, 2, 10**9),  # column bands, row bands (tall grid), one chunk
    (7, 19, 6, 10**9), (19, 7, 7, 10**9), (6, 23, 9, 3000),  # bands of 3 columns (GPU budgets); one query per chunk
])
def test_propagate_equals_released_transcription(h, w, radius, chunk_bytes):
    g = torch.Generator().manual_seed(0)
    T, D, C = 14, 16, 3
    feats = torch.randn(T, D, h, w, generator=g)
    first = torch.softmax(torch.randn(C, h, w, generator=g) * 3, 0)
    ours = propagate(feats, first, topk=5, num_context=10, radius=radius, max_bytes=chunk_bytes)
    ref = released_video(feats, first, topk=5, n_last=10, radius=radius)
    assert ours.shape == (T, C, h, w)
    assert (ours - ref).abs().max() < 1e-5
    assert torch.equal(ours.argmax(1), ref.argmax(1))
    assert torch.equal(ours[0], first)


def dense_reference(query, ctx, labels, allowed, on_first, topk, temperature):
    """Every source scored, the window (hw, hw) as a 0/1 factor (on every frame, or all but the first)."""
    NC, D, h, w = ctx.shape
    q = F.normalize(query.reshape(D, -1), dim=0).T
    k = F.normalize(ctx.reshape(NC, D, -1), dim=1)
    aff = torch.exp(torch.einsum("qd,ndp->qnp", q, k) / temperature)
    factor = allowed.float()[:, None].repeat(1, NC, 1)
    if not on_first:
        factor[:, 0] = 1
    aff = (aff * factor).reshape(h * w, -1)
    kth = aff.topk(topk, dim=1).values[:, -1:]
    aff = torch.where(aff < kth, 0.0, aff)
    aff = aff / aff.sum(1, keepdim=True)
    return (labels.permute(1, 0, 2, 3).reshape(labels.shape[1], -1) @ aff.T).reshape(-1, h, w)


@pytest.mark.parametrize("h,w", [(6, 17), (17, 6)])
@pytest.mark.parametrize("window,on_first", [("square", True), ("circle", True), ("circle", False), ("square", False)])
@pytest.mark.parametrize("max_bytes", [None, 4000])
def test_banded_kernel_equals_dense_scoring(h, w, window, on_first, max_bytes):
    g = torch.Generator().manual_seed(4)
    NC, D, C, r = 4, 8, 3, 3
    query, ctx = torch.randn(D, h, w, generator=g), torch.randn(NC, D, h, w, generator=g)
    labels = torch.softmax(torch.randn(NC, C, h, w, generator=g), 1)
    ours = propagate_frame(query, ctx, labels, topk=4, radius=r, temperature=0.07, window=window,
                           window_on_first=on_first, max_bytes=max_bytes)
    ref = dense_reference(query, ctx, labels, window_mask((h, w), r, shape=window), on_first, 4, 0.07)
    assert (ours - ref).abs().max() < 1e-5


def test_entries_tied_with_the_kth_are_all_kept():
    # three identical context frames: every source value comes three times, so the 5th and 6th largest tie
    g = torch.Generator().manual_seed(5)
    D, h, w, C = 8, 5, 7, 3
    frame = torch.randn(D, h, w, generator=g)
    ctx = frame.expand(3, -1, -1, -1)
    labels = torch.softmax(torch.randn(C, h, w, generator=g) * 3, 0).expand(3, -1, -1, -1)
    query = torch.randn(D, h, w, generator=g)
    ours = propagate_frame(query, ctx, labels, topk=5, radius=2)
    ref = dense_reference(query, ctx, labels, window_mask((h, w), 2), True, 5, 0.1)
    assert (ours - ref).abs().max() < 1e-6
    top4 = propagate_frame(query, ctx, labels, topk=4, radius=2)  # 4 = 3 + 1: tied as well, kept 6
    assert (top4 - ref).abs().max() < 1e-6


def test_identity_video_reproduces_the_first_mask():
    g = torch.Generator().manual_seed(1)
    D, h, w = 64, 6, 9
    f = torch.randn(D, h, w, generator=g)
    feats = f.expand(12, -1, -1, -1)
    mask = torch.zeros(h * 8, w * 8, dtype=torch.long)
    mask[8:30, 16:50] = 1
    mask[30:, 50:] = 2
    first = labels_to_grid(mask, 3, (h, w), mode="nearest")
    soft = propagate(feats, first)
    for t in range(12):
        assert torch.equal(soft[t].argmax(0), first.argmax(0))
        assert torch.equal(labels_to_ids(soft[t], (h * 8, w * 8), 8), labels_to_ids(first, (h * 8, w * 8), 8))


def test_crw_window_not_applied_to_first_frame():
    D, h, w = 8, 4, 12
    g = torch.Generator().manual_seed(2)
    base = torch.randn(D, h, w, generator=g)
    moved = torch.roll(base, shifts=6, dims=2)  # the content moved 6 cells to the right
    labels = torch.zeros(2, h, w)
    labels[1, :, :3] = 1
    labels[0] = 1 - labels[1]
    ctx = base[None]
    boxed = propagate_frame(moved, ctx, labels[None], topk=1, radius=2, window="square")
    free = propagate_frame(moved, ctx, labels[None], topk=1, radius=2, window="circle", window_on_first=False)
    assert torch.equal(free.argmax(0), torch.roll(labels, 6, dims=2).argmax(0))  # found far away
    assert not torch.equal(boxed.argmax(0), free.argmax(0))  # the window forbids it
    assert set(PROTOCOLS) >= {"ino", "dino", "crw"} and PROTOCOLS["ino"]["radius"] == 40


def test_late_object_starts_its_own_reference():
    g = torch.Generator().manual_seed(3)
    T, D, h, w = 6, 32, 5, 5
    feats = torch.randn(T, D, h, w, generator=g)
    first = torch.zeros(3, h, w)
    first[0] = 1
    first[0, :2, :2], first[1, :2, :2] = 0, 1
    late = torch.zeros(3, h, w)
    late[2, 3:, 3:] = 1
    soft = propagate(feats, first, new_labels={3: late})
    assert torch.equal(soft[3][2, 3:, 3:], torch.ones(2, 2))  # pasted where it appears
    assert soft[:3, 2].abs().sum() == 0  # absent before
    assert soft[4:, 2].sum() > 0  # propagated after


def test_labels_to_grid_and_back_and_frame_size():
    mask = torch.zeros(48, 64, dtype=torch.long)
    mask[10:37, 13:45] = 1
    mask[0, 0] = 255  # void gets no channel
    soft = labels_to_grid(mask, 2, (6, 8))
    assert soft.shape == (2, 6, 8)
    total = soft.sum(0)
    assert total[0, 0] == 0  # align_corners=True samples the void corner pixel itself: no channel
    assert torch.allclose(total.flatten()[1:], torch.ones(47), atol=1e-6)
    assert ((soft[1] > 0) & (soft[1] < 1)).any()  # bilinear: soft at the object's border
    hard = labels_to_grid(mask, 2, (6, 8), mode="nearest")
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    ids = labels_to_ids(hard, (48, 64), 8)
    assert ids.shape == (48, 64) and ids.dtype == torch.uint8
    assert (ids == (mask == 1).to(torch.uint8)).float().mean() > 0.8  # a coarse 6x8 grid
    assert FrameSize.for_frame(480, 854) == FrameSize(480, 848)  # 60 x 106 patches
    assert FrameSize.for_frame(720, 1280) == FrameSize(480, 848)
    assert FrameSize.for_frame(720, 1296, short_side=None) == FrameSize(720, 1296)


def test_streaming_memory_is_bounded_by_the_context():
    g = torch.Generator().manual_seed(4)
    p = Propagator(torch.randn(4, 3, 3, generator=g), torch.ones(2, 3, 3) / 2, num_context=3)
    for _ in range(10):
        p.step(torch.randn(4, 3, 3, generator=g))
    assert len(p.refs[0]["queue"]) == 3


def test_query_sources_explain_the_label():
    from inolib.vos.propagation import query_sources

    g = torch.Generator().manual_seed(5)
    q, ctx = torch.randn(8, 5, 6, generator=g), torch.randn(4, 8, 5, 6, generator=g)
    lab = torch.softmax(torch.randn(4, 3, 5, 6, generator=g), 1)
    for pos in (0, 7, 29):
        f, c, wt = query_sources(q, ctx, pos, radius=2)
        assert len(f) == 5 and abs(float(wt.sum()) - 1) < 1e-6
        rows, cols = c // 6, c % 6
        assert ((rows - pos // 6).abs() <= 2).all() and ((cols - pos % 6).abs() <= 2).all()
        manual = (lab.reshape(4, 3, 30)[f, :, c] * wt[:, None]).sum(0)
        torch.testing.assert_close(manual, propagate_frame(q, ctx, lab, radius=2).reshape(3, 30)[:, pos])


def test_peak_memory_does_not_grow_with_the_video_length():
    """Stream 15 frames (the context queue of 3 is then full), then 40 more through a Propagator in a fresh
    process: the peak resident memory must stay where it was after the 15 (each frame's features are 1.5 MB, so
    keeping them would add 60 MB). Few positions and many channels: the same bytes per frame at a quarter of the
    arithmetic."""
    import subprocess
    import sys

    code = """
import resource, torch
from inolib.vos.propagation import Propagator
torch.manual_seed(0)
D, h, w = 1536, 10, 24
first = torch.zeros(3, h, w); first[0] = 1; first[1, 2:5, 3:10] = 1; first[0, 2:5, 3:10] = 0
prop = Propagator(torch.randn(D, h, w), first, num_context=3, max_bytes=2 << 20)
peak = []
for n in (15, 40):
    for _ in range(n):
        prop.step(torch.randn(D, h, w))
    peak.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
print(peak[1] - peak[0])
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    growth_kb = int(r.stdout.split()[-1])
    assert growth_kb < 20_000, f"peak memory grew by {growth_kb} kB over 40 more frames"


@pytest.mark.parametrize("temperature", [0.01, 0.005])
def test_small_temperatures_do_not_overflow(temperature):
    """exp(cos / 0.01) overflows float32 where cos is near 1: the weights are computed from the logits minus
    each row's largest, and match a float64 evaluation of the released formula."""
    g = torch.Generator().manual_seed(6)
    NC, D, C, h, w = 3, 8, 3, 6, 9
    query = torch.randn(D, h, w, generator=g)
    ctx = query + 0.05 * torch.randn(NC, D, h, w, generator=g)  # cos close to 1: exp(~100) = inf in float32
    labels = torch.softmax(torch.randn(NC, C, h, w, generator=g) * 3, 1)
    ours = propagate_frame(query, ctx, labels, topk=5, radius=2, temperature=temperature)
    ref = dense_reference(query.double(), ctx.double(), labels.double(), window_mask((h, w), 2), True, 5, temperature)
    assert torch.isfinite(ours).all()
    assert (ours.double() - ref).abs().max() < 1e-5
    assert torch.allclose(ours.sum(0), torch.ones(h, w), atol=1e-5)


def test_non_finite_features_are_refused():
    g = torch.Generator().manual_seed(7)
    query, ctx = torch.randn(8, 4, 5, generator=g), torch.randn(2, 8, 4, 5, generator=g)
    labels = torch.softmax(torch.randn(2, 3, 4, 5, generator=g), 1)
    bad = query.clone()
    bad[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="query.*NaN or inf"):
        propagate_frame(bad, ctx, labels, radius=2)
    bad_ctx = ctx.clone()
    bad_ctx[1, 2, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="context_feats.*NaN or inf"):
        propagate_frame(query, bad_ctx, labels, radius=2)
    feats = torch.randn(5, 8, 4, 5, generator=g)
    feats[3, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        propagate(feats, labels[0], radius=2)


def test_wrong_shapes_name_the_argument():
    D, h, w, C = 8, 4, 5, 3
    q, ctx, lab = torch.randn(D, h, w), torch.randn(2, D, h, w), torch.rand(2, C, h, w)
    cases = [
        (lambda: propagate_frame(q[0], ctx, lab), r"query.*\(D, h, w\)"),
        (lambda: propagate_frame(q, ctx[:, :4], lab), r"context_feats.*\(NC, 8, 4, 5\)"),
        (lambda: propagate_frame(q, ctx[0], lab), r"context_feats.*\(NC, 8, 4, 5\)"),
        (lambda: propagate_frame(q, ctx, lab[:1]), r"context_labels.*\(2, C, 4, 5\)"),
        (lambda: propagate_frame(q, ctx, lab[..., :3]), r"context_labels.*\(2, C, 4, 5\)"),
        (lambda: propagate_frame(q, ctx[:0], lab[:0]), r"context_feats.*at least one"),
        (lambda: propagate(torch.empty(0, D, h, w), lab[0]), r"features.*T = 0"),
        (lambda: propagate([], lab[0]), r"features.*T = 0"),
        (lambda: propagate(torch.randn(D, h, w), lab[0]), r"features.*\(T, D, h, w\)"),
        (lambda: propagate(torch.randn(3, D, h, w), lab[0, :, :2]), r"first_labels.*\(C, 4, 5\)"),
        (lambda: propagate(torch.randn(3, D, h, w), lab[0], new_labels={0: lab[0]}), r"new_labels.*frame 0"),
        (lambda: propagate(torch.randn(3, D, h, w), lab[0], new_labels={3: lab[0]}), r"new_labels.*beyond"),
        (lambda: propagate(torch.randn(3, D, h, w), lab[0], new_labels={1: lab[0, :2]}), r"new_labels.*\(3, 4, 5\)"),
        (lambda: Propagator(q, lab[0]).step(torch.randn(D, h, w + 1)), r"feat.*\(8, 4, 5\)"),
        (lambda: Propagator(q, lab[0]).step(q, lab[0, :1]), r"new_labels.*\(3, 4, 5\)"),
        (lambda: Propagator(q, lab[0, :, :1]), r"first_labels.*\(C, 4, 5\)"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()


@pytest.mark.parametrize("kw,match", [
    (dict(topk=0), "topk.*>= 1"), (dict(topk=2.5), "topk"), (dict(radius=-1), "radius.*>= 0"),
    (dict(temperature=0.0), "temperature.*> 0"), (dict(temperature=float("nan")), "temperature"),
    (dict(window="diamond"), "window"), (dict(window="circle", radius=0), "radius"),
    (dict(num_context=-1), "num_context"),
])
def test_bad_parameters_name_the_argument(kw, match):
    q, lab = torch.randn(8, 4, 5), torch.rand(3, 4, 5)
    with pytest.raises(ValueError, match=match):
        propagate(q.expand(3, -1, -1, -1), lab, **kw)
    if "num_context" not in kw:
        with pytest.raises(ValueError, match=match):
            propagate_frame(q, q[None], lab[None], **kw)


def test_query_weights_are_the_kernels_weights_for_one_query():
    from inolib.vos.propagation import query_weights

    s = torch.tensor([0.9, 0.2, 0.85, 0.5, -0.3])
    w = query_weights(s, topk=2, temperature=0.1)
    e = torch.exp(torch.tensor([0.9, 0.85]) / 0.1)
    assert torch.allclose(w[[0, 2]], e / e.sum(), atol=1e-6) and w[[1, 3, 4]].abs().max() == 0
    assert torch.allclose(query_weights(torch.full((3,), 0.5), topk=2), torch.full((3,), 1 / 3))
    hot = query_weights(torch.tensor([0.3, 0.31]), topk=2, temperature=0.01)  # a low temperature: near argmax
    assert hot[1] > 0.7
    with pytest.raises(ValueError, match="similarities"):
        query_weights(torch.tensor([1.5]))
