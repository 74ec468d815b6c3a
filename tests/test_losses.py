"""The four INO losses against an independent, loop-by-loop transcription of the released code.

The transcription is :mod:`inolib.released.losses` (``DINOLoss`` with the ``v == iq`` skip, the per-frame
``calc_mim_loss`` loop with boolean indexing, ``calc_affine`` with ``einsum``); it uses none of inolib's helpers.
"""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from inolib.config import LossConfig
from inolib.losses import INOLoss, aff_loss, g2g_loss, l2g_loss, mim_loss
from inolib.masking import masked_positions

from inolib.released.losses import (ATT, AST, ST, TT, _released_affine_shared, released_aff, released_mim,
                                    released_out, released_step)

RTOL = 1e-5


# ----------------------------------------------------------------------------------------------------
# Helpers


def _close(a, b, rtol=RTOL):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert torch.allclose(a, b, rtol=rtol, atol=1e-12), (a.item(), b.item())


def _entropy(q):
    return -(q * torch.log(q)).sum(-1)


def _rand_mask_shared(B, T, N, g, count=None):
    """The released scheme: one pattern for every clip and frame."""
    k = count if count is not None else int(torch.randint(1, N, (), generator=g))
    pattern = torch.zeros(N, dtype=torch.bool)
    pattern[torch.randperm(N, generator=g)[:k]] = True
    return pattern.expand(B, T, N).clone()


def _rand_mask_per_clip(B, T, N, g, counts):
    """Per clip a pattern of ``counts[b]`` positions, shared by the clip's frames."""
    mask = torch.zeros(B, T, N, dtype=torch.bool)
    for b in range(B):
        mask[b, :, torch.randperm(N, generator=g)[:counts[b]]] = True
    return mask


def _rand_mask_free(B, T, N, g, empty_frames=()):
    """A mask that differs between clips and frames; frames in ``empty_frames`` are fully unmasked."""
    mask = torch.rand(B, T, N, generator=g) < 0.4
    mask[0, 0, 0] = True
    mask[-1, -1, -1] = True
    for t in empty_frames:
        mask[:, t] = False
    return mask


SHAPES = [  # (B, T, M, N, K)
    (1, 2, 1, 5, 7),
    (3, 4, 3, 9, 16),
    (3, 6, 1, 5, 16),
    (1, 4, 3, 9, 7),
    (3, 2, 3, 9, 7),
]
SEEDS = [0, 1, 2]


def _gen(seed):
    g = torch.Generator().manual_seed(seed)
    return g


def _randn(*shape, g, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# ----------------------------------------------------------------------------------------------------
# Equivalence with the transcription


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_g2g_l2g_match_released_terms(shape, seed):
    B, T, M, N, K = shape
    g = _gen(seed)
    s_glob, s_loc, t_glob = _randn(B, T, K, g=g), _randn(B, T, M, K, g=g), _randn(B, T, K, g=g)
    center = _randn(1, K, g=g, scale=0.3)
    _, g2g_terms, l2g_terms = released_out(s_glob, s_loc, t_glob, center)
    assert len(g2g_terms) == T and len(l2g_terms) == 2 * M * T
    _close(g2g_loss(s_glob, t_glob, center, ST, TT), torch.stack(g2g_terms).mean())
    _close(l2g_loss(s_loc, t_glob, center, ST, TT), torch.stack(l2g_terms).mean())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_mim_matches_released_loop(shape, seed):
    B, T, M, N, K = shape
    g = _gen(seed)
    s, t = _randn(B, T, N, K, g=g), _randn(B, T, N, K, g=g)
    center = _randn(1, K, g=g, scale=0.3)
    masks = [_rand_mask_shared(B, T, N, g), _rand_mask_free(B, T, N, g)]
    if T > 2:
        masks.append(_rand_mask_free(B, T, N, g, empty_frames=(0, T - 2)))
    for mask in masks:
        _close(mim_loss(s, t, mask, center, ST, TT), released_mim(s, t, mask, center))


def test_mim_pools_rows_over_clips_per_frame():
    """Not a mean of per-clip means: a frame's rows of all clips are pooled (released boolean indexing)."""
    g = _gen(7)
    B, T, N, K = 2, 2, 6, 5
    s, t = _randn(B, T, N, K, g=g), _randn(B, T, N, K, g=g)
    center = torch.zeros(1, K, dtype=torch.float64)
    mask = torch.zeros(B, T, N, dtype=torch.bool)
    mask[0, :, :1] = True  # clip 0: 1 row per frame
    mask[1, :, :5] = True  # clip 1: 5 rows per frame
    got = mim_loss(s, t, mask, center, ST, TT)
    _close(got, released_mim(s, t, mask, center))
    ce = -(torch.softmax(t / TT, -1) * torch.log_softmax(s / ST, -1)).sum(-1)
    per_clip_mean = torch.stack([ce[0, :, :1].mean(), ce[1, :, :5].mean()]).mean()
    assert not torch.allclose(got, per_clip_mean, rtol=1e-3)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_aff_matches_released_calc_affine(shape, seed):
    B, T, M, N, K = shape
    g = _gen(seed)
    s, t = _randn(B, T, N, K, g=g), _randn(B, T, N, K, g=g)
    shared = _rand_mask_shared(B, T, N, g)
    _close(aff_loss(s, t, shared, AST, ATT), _released_affine_shared(s, t, torch.nonzero(shared[0, 0]).flatten()))
    _close(aff_loss(s, t, shared, AST, ATT), released_aff(s, t, shared))
    counts = [int(c) for c in torch.randint(1, N + 1, (B,), generator=g)]
    if B > 1:
        counts[1] = 0  # a clip with nothing masked is left out of the mean
    per_clip = _rand_mask_per_clip(B, T, N, g, counts)
    _close(aff_loss(s, t, per_clip, AST, ATT), released_aff(s, t, per_clip))


def test_aff_uses_consecutive_frames_not_pairs():
    """T=4: the affinity is over (0,1), (1,2), (2,3); swapping frames 1 and 2 changes it."""
    g = _gen(3)
    B, T, N, K = 2, 4, 6, 8
    s, t = _randn(B, T, N, K, g=g), _randn(B, T, N, K, g=g)
    mask = _rand_mask_shared(B, T, N, g, count=4)
    perm = [0, 2, 1, 3]
    a = aff_loss(s, t, mask)
    b = aff_loss(s[:, perm], t[:, perm], mask)
    _close(b, released_aff(s[:, perm], t[:, perm], mask))
    assert abs(a.item() - b.item()) > 1e-6


def test_aff_default_temperatures_are_released_ones():
    g = _gen(4)
    s, t = _randn(2, 3, 6, 8, g=g), _randn(2, 3, 6, 8, g=g)
    mask = _rand_mask_shared(2, 3, 6, g, count=3)
    _close(aff_loss(s, t, mask), released_aff(s, t, mask, 0.1, 0.04))


def test_aff_applies_no_centering_and_is_scale_invariant():
    """The logits are L2-normalised: scaling either input by a positive factor changes nothing."""
    g = _gen(5)
    s, t = _randn(2, 3, 6, 8, g=g), _randn(2, 3, 6, 8, g=g)
    mask = _rand_mask_shared(2, 3, 6, g, count=3)
    _close(aff_loss(3.0 * s, 0.2 * t, mask), aff_loss(s, t, mask))


def _inputs(B, T, M, N, K, g, mask):
    student = {"cls_global": _randn(B, T, K, g=g), "cls_local": _randn(B, T, M, K, g=g),
               "patch": _randn(B, T, N, K, g=g), "patch_mask": mask}
    teacher = {"cls_global": _randn(B, T, K, g=g), "patch": _randn(B, T, N, K, g=g)}
    return student, teacher


def _loss_module(K, g, **kw):
    loss = INOLoss(LossConfig(**kw), out_dim=K)
    loss.center.cls.copy_(torch.randn(1, K, generator=g) * 0.3)
    loss.center.patch.copy_(torch.randn(1, K, generator=g) * 0.3)
    return loss


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_inoloss_reference_and_paper_weighting(shape, seed):
    B, T, M, N, K = shape
    g = _gen(seed)
    mask = _rand_mask_shared(B, T, N, g)
    student, teacher = _inputs(B, T, M, N, K, g, mask)
    loss = _loss_module(K, g)
    c_cls = loss.center.cls.to(torch.float64)
    c_patch = loss.center.patch.to(torch.float64)
    out_ref, g2g_terms, l2g_terms = released_out(student["cls_global"], student["cls_local"],
                                                 teacher["cls_global"], c_cls)
    mim_ref = released_mim(student["patch"], teacher["patch"], mask, c_patch)
    aff_ref = released_aff(student["patch"], teacher["patch"], mask)

    r = loss(student, teacher, update_center=False)
    _close(r["out"], out_ref)
    _close(r["g2g"], torch.stack(g2g_terms).mean())
    _close(r["l2g"], torch.stack(l2g_terms).mean())
    _close(r["mim"], mim_ref)
    _close(r["aff"], aff_ref)
    _close(r["loss"], out_ref + mim_ref + aff_ref)  # released total: 1.0 each (main_VOS.py)

    paper = INOLoss(LossConfig(out_weighting="paper"), out_dim=K)
    paper.load_state_dict(loss.state_dict())
    p = paper(student, teacher, update_center=False)
    _close(p["out"], torch.stack(g2g_terms).mean() + torch.stack(l2g_terms).mean())
    _close(p["loss"], p["out"] + mim_ref + aff_ref)
    # the two weightings really differ
    assert abs(p["out"].item() - r["out"].item()) > 1e-6


def test_inoloss_bad_weighting_raises():
    with pytest.raises(ValueError, match="loss.out_weighting"):
        INOLoss(LossConfig(out_weighting="sum"), out_dim=4)
    with pytest.raises(ValueError, match="loss.center_update"):
        INOLoss(LossConfig(center_update="epoch"), out_dim=4)


# ----------------------------------------------------------------------------------------------------
# The released sequence of losses and center updates within one step


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_released_center_cadence_equals_the_released_loop(shape, seed):
    B, T, M, N, K = shape
    g = _gen(seed)
    masks = [_rand_mask_shared(B, T, N, g)]
    if T > 2:
        masks.append(_rand_mask_free(B, T, N, g, empty_frames=(1,)))  # a frame without a mask: no update
    for mask in masks:
        student, teacher = _inputs(B, T, M, N, K, g, mask)
        loss = _loss_module(K, g)  # center_update="released" is the default
        assert loss.cfg.center_update == "released"
        c_cls, c_patch = loss.center.cls.double(), loss.center.patch.double()
        want = released_step(student, teacher, mask, c_cls, c_patch)
        r = loss(student, teacher)
        for name, w in zip(("loss", "out", "mim", "aff"), want[:4]):
            _close(r[name], w, rtol=1e-6)
        torch.testing.assert_close(loss.center.cls.double(), want[4], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(loss.center.patch.double(), want[5], rtol=1e-6, atol=1e-7)


def test_released_and_step_cadences_differ():
    """At L = 4 the released cadence moves the centers further per step (0.81 / 0.66 effective momentum)."""
    B, T, M, N, K = 3, 4, 2, 9, 16
    g = _gen(11)
    mask = _rand_mask_shared(B, T, N, g, count=4)
    student, teacher = _inputs(B, T, M, N, K, g, mask)
    rel = _loss_module(K, _gen(1))
    step = _loss_module(K, _gen(1), center_update="step")
    a, b = rel(student, teacher), step(student, teacher)
    assert abs(a["out"].item() - b["out"].item()) > 1e-6 and abs(a["mim"].item() - b["mim"].item()) > 1e-6
    assert not torch.allclose(rel.center.cls, step.center.cls)


# ----------------------------------------------------------------------------------------------------
# Gradients


def test_gradcheck_g2g():
    g = _gen(10)
    s = _randn(2, 2, 4, g=g).requires_grad_()
    t, c = _randn(2, 2, 4, g=g), _randn(1, 4, g=g, scale=0.3)
    assert torch.autograd.gradcheck(lambda x: g2g_loss(x, t, c, ST, TT), (s,))


def test_gradcheck_l2g():
    g = _gen(11)
    s = _randn(2, 2, 2, 4, g=g).requires_grad_()
    t, c = _randn(2, 2, 4, g=g), _randn(1, 4, g=g, scale=0.3)
    assert torch.autograd.gradcheck(lambda x: l2g_loss(x, t, c, ST, TT), (s,))


def test_gradcheck_mim():
    g = _gen(12)
    s = _randn(2, 2, 3, 4, g=g).requires_grad_()
    t, c = _randn(2, 2, 3, 4, g=g), _randn(1, 4, g=g, scale=0.3)
    mask = torch.tensor([[[True, False, True], [False, False, True]],
                         [[False, True, False], [False, False, False]]])
    assert torch.autograd.gradcheck(lambda x: mim_loss(x, t, mask, c, ST, TT), (s,))


def test_gradcheck_aff():
    g = _gen(13)
    s = _randn(2, 3, 4, 5, g=g).requires_grad_()
    t = _randn(2, 3, 4, 5, g=g)
    mask = _rand_mask_per_clip(2, 3, 4, g, [3, 2])
    assert torch.autograd.gradcheck(lambda x: aff_loss(x, t, mask, AST, ATT), (s,))


def test_teacher_gets_no_gradient():
    g = _gen(14)
    B, T, M, N, K = 2, 2, 2, 4, 5
    mask = _rand_mask_shared(B, T, N, g, count=2)
    s_glob, s_loc, s_p = _randn(B, T, K, g=g), _randn(B, T, M, K, g=g), _randn(B, T, N, K, g=g)
    t_glob = _randn(B, T, K, g=g).requires_grad_()
    t_p = _randn(B, T, N, K, g=g).requires_grad_()
    c = torch.zeros(1, K, dtype=torch.float64)
    for val in (g2g_loss(s_glob, t_glob, c, ST, TT), l2g_loss(s_loc, t_glob, c, ST, TT),
                mim_loss(s_p, t_p, mask, c, ST, TT), aff_loss(s_p, t_p, mask)):
        assert not val.requires_grad


# ----------------------------------------------------------------------------------------------------
# Known values


def _target_logits(t, center):
    """Student logits whose softmax(s / ST) equals softmax((t - center) / TT)."""
    return (t - center) / TT * ST


def test_g2g_known_minimum_is_entropy():
    g = _gen(20)
    B, T, K = 3, 4, 9
    center = _randn(1, K, g=g, scale=0.3)
    # identical frames per clip: partner targets are identical
    t = _randn(B, 1, K, g=g).expand(B, T, K).clone()
    s = _target_logits(t, center)
    q = torch.softmax((t[:, 0] - center) / TT, -1)
    _close(g2g_loss(s, t, center, ST, TT), _entropy(q).mean())
    # different frames: the student of frame n must match the target of its partner n +- T/2
    t = _randn(B, T, K, g=g)
    partner = [2, 3, 0, 1]
    s = _target_logits(t[:, partner], center)
    q = torch.softmax((t - center) / TT, -1)
    _close(g2g_loss(s, t, center, ST, TT), _entropy(q).mean())
    s_wrong = _target_logits(t, center)  # matches its own frame, not the partner
    assert g2g_loss(s_wrong, t, center, ST, TT) > _entropy(q).mean() + 1e-3


def test_l2g_known_minimum_is_entropy():
    g = _gen(21)
    B, T, M, K = 2, 4, 3, 9
    center = _randn(1, K, g=g, scale=0.3)
    t = _randn(B, 1, K, g=g).expand(B, T, K).clone()
    s = _target_logits(t, center)[:, :, None].expand(B, T, M, K).clone()
    q = torch.softmax((t[:, 0] - center) / TT, -1)
    _close(l2g_loss(s, t, center, ST, TT), _entropy(q).mean())


def test_mim_known_minimum_is_entropy():
    g = _gen(22)
    B, T, N, K = 3, 4, 7, 9
    center = _randn(1, K, g=g, scale=0.3)
    t = _randn(B, T, N, K, g=g)
    s = _target_logits(t, center)
    mask = _rand_mask_free(B, T, N, g, empty_frames=(1,))
    H = _entropy(torch.softmax((t - center) / TT, -1))  # (B, T, N)
    expected = torch.stack([H[:, f][mask[:, f]].mean() for f in range(T) if mask[:, f].any()]).mean()
    _close(mim_loss(s, t, mask, center, ST, TT), expected)


def test_aff_known_minimum_is_entropy():
    g = _gen(23)
    B, T, N, K = 2, 3, 6, 8
    t = _randn(B, T, N, K, g=g)
    mask = _rand_mask_shared(B, T, N, g, count=4)
    pos = torch.nonzero(mask[0, 0]).flatten()
    z = F.normalize(t[:, :, pos], dim=-1)
    A = torch.einsum("btnc,btmc->btnm", z[:, :-1], z[:, 1:])
    expected = _entropy(torch.softmax(A / ATT, -1)).mean()
    got = aff_loss(t, t, mask, student_temp=ATT, teacher_temp=ATT)
    _close(got, expected)
    for _ in range(3):  # Gibbs: any other student costs more
        other = t + 0.5 * _randn(B, T, N, K, g=g)
        assert aff_loss(other, t, mask, ATT, ATT) > got


@pytest.mark.parametrize("seed", SEEDS)
def test_losses_decrease_toward_target(seed):
    g = _gen(30 + seed)
    B, T, M, N, K = 2, 4, 2, 6, 8
    center = _randn(1, K, g=g, scale=0.3)
    t_glob, t_p = _randn(B, T, K, g=g), _randn(B, T, N, K, g=g)
    mask = _rand_mask_free(B, T, N, g)
    partner = [2, 3, 0, 1]

    s = _randn(B, T, K, g=g)
    tgt = _target_logits(t_glob[:, partner], center)
    assert g2g_loss(s + 0.5 * (tgt - s), t_glob, center, ST, TT) < g2g_loss(s, t_glob, center, ST, TT)

    s = _randn(B, T, M, K, g=g)
    q = torch.softmax((t_glob - center) / TT, -1)
    mix = 0.5 * (q + q[:, partner])  # each local crop of a pair has both frames' teachers as targets
    tgt = (ST * torch.log(mix))[:, :, None].expand(B, T, M, K)  # the minimiser: softmax(tgt / ST) = mix
    assert l2g_loss(s + 0.5 * (tgt - s), t_glob, center, ST, TT) < l2g_loss(s, t_glob, center, ST, TT)
    _close(l2g_loss(tgt, t_glob, center, ST, TT), -(q[:, :, None] * torch.log(mix)[:, partner][:, :, None]).sum(-1).mean() * 0.5
           + -(q[:, :, None] * torch.log(mix)[:, :, None]).sum(-1).mean() * 0.5)

    s = _randn(B, T, N, K, g=g)
    tgt = _target_logits(t_p, center)
    assert mim_loss(s + 0.5 * (tgt - s), t_p, mask, center, ST, TT) < mim_loss(s, t_p, mask, center, ST, TT)

    shared = _rand_mask_shared(B, T, N, g, count=4)
    s = _randn(B, T, N, K, g=g)
    assert aff_loss(s + 0.5 * (t_p - s), t_p, shared, ATT, ATT) < aff_loss(s, t_p, shared, ATT, ATT)


# ----------------------------------------------------------------------------------------------------
# Empty masks and the compact layout


@pytest.mark.parametrize("P", [None, 0])
def test_empty_mask_gives_exact_zero_and_zero_grad(P):
    g = _gen(40)
    B, T, N, K = 2, 3, 5, 6
    n = N if P is None else P
    s = torch.randn(B, T, n, K, generator=g).requires_grad_()
    t = torch.randn(B, T, n, K, generator=g)
    mask = torch.zeros(B, T, n, dtype=torch.bool)
    c = torch.randn(1, K, generator=g)
    for fn in (lambda x: mim_loss(x, t, mask, c, ST, TT), lambda x: aff_loss(x, t, mask, AST, ATT)):
        s.grad = None
        val = fn(s)
        assert val.item() == 0.0
        val.backward()
        assert s.grad is not None and torch.isfinite(s.grad).all() and (s.grad == 0).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_compact_layout_equals_full_layout(seed):
    g = _gen(50 + seed)
    B, T, N, K = 3, 4, 9, 7
    s, t = _randn(B, T, N, K, g=g), _randn(B, T, N, K, g=g)
    c = _randn(1, K, g=g, scale=0.3)
    free = _rand_mask_free(B, T, N, g, empty_frames=(2,))
    per_clip = _rand_mask_per_clip(B, T, N, g, [4, 0, 2])
    for mask in (free, per_clip, _rand_mask_shared(B, T, N, g)):
        index, valid = masked_positions(mask)
        assert index.shape[2] < N or mask.sum(-1).max() == N
        idx = index[..., None].expand(*index.shape, K)
        s_c, t_c = torch.gather(s, 2, idx), torch.gather(t, 2, idx)
        _close(mim_loss(s_c, t_c, valid, c, ST, TT), mim_loss(s, t, mask, c, ST, TT))
        if mask is not free:  # the affinity needs the same positions in every frame of a clip
            _close(aff_loss(s_c, t_c, valid), aff_loss(s, t, mask))


# ----------------------------------------------------------------------------------------------------
# Errors


def test_shape_errors():
    K = 4
    c = torch.zeros(1, K)
    with pytest.raises(ValueError):
        g2g_loss(torch.randn(2, 3, K), torch.randn(2, 3, K), c, ST, TT)  # odd T
    with pytest.raises(ValueError):
        l2g_loss(torch.randn(2, 3, 2, K), torch.randn(2, 3, K), c, ST, TT)  # odd T
    with pytest.raises(ValueError):
        g2g_loss(torch.randn(2, 4, K), torch.randn(2, 4, K + 1), c, ST, TT)
    with pytest.raises(ValueError):
        g2g_loss(torch.randn(2, 4, K), torch.randn(3, 4, K), c, ST, TT)
    with pytest.raises(ValueError):
        l2g_loss(torch.randn(2, 4, 2, K), torch.randn(2, 2, K), c, ST, TT)
    with pytest.raises(ValueError):
        l2g_loss(torch.randn(2, 4, 2, K), torch.randn(2, 4, K + 1), c, ST, TT)
    s, t = torch.randn(2, 2, 5, K), torch.randn(2, 2, 5, K)
    mask = torch.ones(2, 2, 5, dtype=torch.bool)
    for fn in (lambda a, b, m: mim_loss(a, b, m, c, ST, TT), lambda a, b, m: aff_loss(a, b, m)):
        with pytest.raises(ValueError):
            fn(s, torch.randn(2, 2, 6, K), mask)
        with pytest.raises(ValueError):
            fn(s, t, torch.ones(2, 2, 4, dtype=torch.bool))
        with pytest.raises(ValueError):
            fn(s, t, mask.float())
    with pytest.raises(ValueError):
        aff_loss(torch.randn(2, 1, 5, K), torch.randn(2, 1, 5, K), torch.ones(2, 1, 5, dtype=torch.bool))


# ----------------------------------------------------------------------------------------------------
# INOLoss switches and weights


WEIGHTS = dict(weight_out=0.7, weight_mim=1.3, weight_aff=2.1)


@pytest.mark.parametrize("weighting", ["reference", "paper"])
@pytest.mark.parametrize("off", [None, "g2g", "l2g", "mim", "aff"])
def test_inoloss_switches(off, weighting):
    g = _gen(60)
    B, T, M, N, K = 2, 4, 2, 6, 8
    mask = _rand_mask_shared(B, T, N, g, count=3)
    student, teacher = _inputs(B, T, M, N, K, g, mask)
    full = _loss_module(K, g, out_weighting=weighting, **WEIGHTS)
    r_full = full(student, teacher, update_center=False)
    cfg = full.cfg if off is None else replace(full.cfg, **{off: False})
    part = INOLoss(cfg, out_dim=K)
    part.load_state_dict(full.state_dict())
    r = part(student, teacher, update_center=False)

    for name in ("g2g", "l2g", "mim", "aff"):
        if name == off:
            assert r[name].item() == 0.0
        else:
            assert r[name].item() != 0.0
            _close(r[name], r_full[name])
    w_g, w_l = (0.0 if off == "g2g" else 2.0), (0.0 if off == "l2g" else 4.0 * M)
    if weighting == "reference":
        expected_out = (w_g * r["g2g"] + w_l * r["l2g"]) / (w_g + w_l)
    else:
        expected_out = r["g2g"] + r["l2g"]
    _close(r["out"], expected_out)
    _close(r["loss"], 0.7 * r["out"] + 1.3 * r["mim"] + 2.1 * r["aff"])
    if off in ("mim", "aff"):
        w = WEIGHTS["weight_" + off]
        _close(r_full["loss"] - r["loss"], w * r_full[off])


def test_inoloss_all_out_terms_off_and_no_patches():
    g = _gen(61)
    B, T, M, N, K = 2, 2, 2, 4, 5
    student, teacher = _inputs(B, T, M, N, K, g, _rand_mask_shared(B, T, N, g, count=2))
    loss = _loss_module(K, g, g2g=False, l2g=False)
    r = loss(student, teacher, update_center=False)
    assert r["out"].item() == 0.0
    _close(r["loss"], r["mim"] + r["aff"])
    # without masked patch logits (an unmasked step) only L_out remains
    plain = _loss_module(K, g)
    r = plain({k: student[k] for k in ("cls_global", "cls_local")}, {"cls_global": teacher["cls_global"]},
              update_center=False)
    assert r["mim"].item() == 0.0 and r["aff"].item() == 0.0
    _close(r["loss"], r["out"])
    with pytest.raises(ValueError):  # student has patch logits but the teacher not
        plain(student, {"cls_global": teacher["cls_global"]}, update_center=False)


# ----------------------------------------------------------------------------------------------------
# Mixed precision


def test_bf16_autocast_returns_float32():
    """Losses are computed in float32 under autocast (module docstring): float32 dtype, finite, and the
    value of float32 arithmetic on the same (bf16-representable) inputs."""
    g = _gen(70)
    B, T, M, N, K = 2, 4, 3, 9, 16
    bf = lambda *shape: torch.randn(*shape, generator=g).bfloat16()  # noqa: E731
    s_glob, s_loc, t_glob, s_p, t_p = bf(B, T, K), bf(B, T, M, K), bf(B, T, K), bf(B, T, N, K), bf(B, T, N, K)
    c = torch.randn(1, K, generator=g) * 0.3
    mask = _rand_mask_shared(B, T, N, g, count=5)
    calls = {
        "g2g": lambda f: g2g_loss(f(s_glob), f(t_glob), c, ST, TT),
        "l2g": lambda f: l2g_loss(f(s_loc), f(t_glob), c, ST, TT),
        "mim": lambda f: mim_loss(f(s_p), f(t_p), mask, c, ST, TT),
        "aff": lambda f: aff_loss(f(s_p), f(t_p), mask),
    }
    failures = []
    for name, call in calls.items():
        ref = call(lambda x: x.float())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            val = call(lambda x: x)
        if val.dtype != torch.float32 or not torch.isfinite(val) or \
                not torch.allclose(val.float(), ref, rtol=1e-4):
            failures.append(f"{name}: {val.dtype} {val.item()!r} vs float32 {ref.item()!r}")
    assert not failures, failures


def test_bf16_autocast_inoloss_finite_float32():
    g = _gen(71)
    B, T, M, N, K = 2, 2, 2, 4, 8
    mask = _rand_mask_shared(B, T, N, g, count=2)
    student, teacher = _inputs(B, T, M, N, K, g, mask)
    student = {k: (v.bfloat16() if v.is_floating_point() else v) for k, v in student.items()}
    teacher = {k: v.bfloat16() for k, v in teacher.items()}
    loss = _loss_module(K, g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = loss(student, teacher, update_center=False)
    for name, val in r.items():
        assert val.dtype == torch.float32, (name, val.dtype)
        assert torch.isfinite(val), name


def test_frame_pairs_are_the_pairs_the_losses_use():
    from inolib.losses import frame_pairs

    assert frame_pairs(4) == [(0, 2), (1, 3)] and frame_pairs(2) == [(0, 1)]
    with pytest.raises(ValueError, match="even"):
        frame_pairs(3)
    # g2g is the mean over these pairs of the two cross terms (teacher a -> student b, teacher b -> student a)
    B, T, K = 2, 4, 5
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(B, T, K, generator=g), torch.randn(B, T, K, generator=g)
    ce = lambda ti, si: -(F.softmax(t[:, ti] / 0.04, -1) * F.log_softmax(s[:, si] / 0.1, -1)).sum(-1).mean()  # noqa: E731
    terms = [ce(a, b) for a, b in frame_pairs(T)] + [ce(b, a) for a, b in frame_pairs(T)]
    assert torch.isclose(g2g_loss(s, t, torch.zeros(1, K), 0.1, 0.04), torch.stack(terms).mean(), atol=1e-6)


def test_inoloss_checks_its_inputs_and_names_the_argument():
    g = _gen(62)
    B, T, M, N, K = 2, 4, 2, 6, 8
    mask = _rand_mask_shared(B, T, N, g, count=3)
    student, teacher = _inputs(B, T, M, N, K, g, mask)
    loss = _loss_module(K, g)
    loss(student, teacher)  # the right shapes
    cases = [
        ({**student, "cls_global": _randn(B, T, K + 1, g=g)}, teacher,
         r"student\['cls_global'\] must be \(B, T, K\) with T even >= 2 .*K = 8 .*got \(2, 4, 9\)"),
        ({**student, "cls_global": _randn(B * T, K, g=g)}, teacher, r"student\['cls_global'\] must be \(B, T, K\)"),
        ({**student, "cls_global": _randn(B, T, K + 1, g=g)}, {**teacher, "cls_global": _randn(B, T, K + 1, g=g)},
         r"K = 8 \(the head's out_dim\), got \(2, 4, 9\)"),  # not the centers' width
        ({**student, "cls_global": _randn(B, 3, K, g=g)}, teacher, r"T even .*got \(2, 3, 8\)"),
        ({k: v for k, v in student.items() if k != "cls_global"}, teacher,
         r"student\['cls_global'\] must be a tensor .*no such key"),
        (student, {**teacher, "cls_global": _randn(B + 1, T, K, g=g)},
         r"teacher\['cls_global'\] must be \(2, 4, 8\) like student\['cls_global'\], got \(3, 4, 8\)"),
        ({**student, "cls_local": _randn(B, T, M, K - 1, g=g)}, teacher,
         r"student\['cls_local'\] must be \(B, T, M, K\) = \(2, 4, M, 8\), got \(2, 4, 2, 7\)"),
        ({**student, "patch": _randn(B, T, N, K - 1, g=g)}, teacher, r"student\['patch'\] must be \(B, T, P, K\)"),
        ({k: v for k, v in student.items() if k != "patch_mask"}, teacher,
         r"student\['patch_mask'\] must be bool \(2, 4, 6\).*got nothing"),
        ({**student, "patch_mask": mask.float()}, teacher, r"student\['patch_mask'\] must be bool"),
        (student, {**teacher, "patch": _randn(B, T, N - 1, K, g=g)},
         r"teacher\['patch'\] must be \(2, 4, 6, 8\) like student\['patch'\]"),
        ([student["cls_global"]], teacher, r"student must be the dict of INONetwork outputs"),
    ]
    for s, t, match in cases:
        with pytest.raises(ValueError, match=match):
            loss(s, t)
    with pytest.raises(ValueError, match="teacher_temp must be > 0"):
        loss(student, teacher, teacher_temp=0.0)
