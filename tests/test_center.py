"""Teacher centers: momentum update of the class and patch centers, with and without torch.distributed."""

import socket

import pytest
import torch
import torch.distributed as dist

from inolib.center import Center
from inolib.config import LossConfig
from inolib.losses import INOLoss


def _data(seed, B=3, T=4, N=6, K=5):
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(B, T, K, generator=g)
    patches = torch.randn(B, T, N, K, generator=g)
    mask = torch.rand(B, T, N, generator=g) < 0.4
    mask[0, 0, 0] = True
    mask[1, 2, 3] = False
    return cls, patches, mask


def _start(center: Center, seed=99):
    g = torch.Generator().manual_seed(seed)
    center.cls.copy_(torch.randn(center.cls.shape, generator=g))
    center.patch.copy_(torch.randn(center.patch.shape, generator=g))
    return center.cls.clone(), center.patch.clone()


def _expected(old_cls, old_patch, cls, patches, mask, m):
    K = cls.shape[-1]
    new_cls = m * old_cls + (1 - m) * cls.reshape(-1, K).mean(0, keepdim=True)
    rows = patches[mask]  # only the masked tokens
    new_patch = m * old_patch + (1 - m) * rows.mean(0, keepdim=True) if rows.shape[0] else old_patch
    return new_cls, new_patch


def test_buffers_and_defaults():
    c = Center(7)
    assert c.momentum == 0.9
    assert c.cls.shape == (1, 7) and c.patch.shape == (1, 7)
    assert (c.cls == 0).all() and (c.patch == 0).all()
    assert set(dict(c.named_buffers())) == {"cls", "patch"}
    with pytest.raises(ValueError):
        Center(7, momentum=1.0)
    with pytest.raises(ValueError):
        Center(7, momentum=-0.1)


@pytest.mark.parametrize("m", [0.9, 0.5, 0.0])
def test_update_cls_and_patch(m):
    cls, patches, mask = _data(0)
    c = Center(cls.shape[-1], momentum=m)
    old_cls, old_patch = _start(c)
    c.update(cls, patches, mask)
    exp_cls, exp_patch = _expected(old_cls, old_patch, cls, patches, mask, m)
    torch.testing.assert_close(c.cls, exp_cls, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(c.patch, exp_patch, rtol=1e-6, atol=1e-6)
    # the patch center is NOT the mean over all tokens
    all_mean = m * old_patch + (1 - m) * patches.reshape(-1, patches.shape[-1]).mean(0, keepdim=True)
    assert not torch.allclose(c.patch, all_mean, atol=1e-4)


def test_update_without_mask_keeps_patch_exactly():
    cls, patches, mask = _data(1)
    c = Center(cls.shape[-1])
    old_cls, old_patch = _start(c)
    c.update(cls, patches, torch.zeros_like(mask))
    assert torch.equal(c.patch, old_patch)
    exp_cls, _ = _expected(old_cls, old_patch, cls, patches, mask, 0.9)
    torch.testing.assert_close(c.cls, exp_cls, rtol=1e-6, atol=1e-6)
    for args in ((cls,), (cls, None, None), (cls, patches, None)):
        c2 = Center(cls.shape[-1])
        _start(c2)
        c2.update(*args)
        assert torch.equal(c2.patch, old_patch)
        torch.testing.assert_close(c2.cls, exp_cls, rtol=1e-6, atol=1e-6)


def test_update_compact_layout_and_float64_inputs():
    """Patch center from a compact (B, T, P, K) layout with its valid mask; float64 inputs are fine."""
    from inolib.masking import masked_positions
    cls, patches, mask = _data(2)
    index, valid = masked_positions(mask)
    gathered = torch.gather(patches, 2, index[..., None].expand(*index.shape, patches.shape[-1]))
    a, b = Center(5), Center(5)
    _start(a)
    _start(b)
    a.update(cls, patches, mask)
    b.update(cls.double(), gathered.double(), valid)
    assert b.cls.dtype == torch.float32 and b.patch.dtype == torch.float32
    torch.testing.assert_close(a.cls, b.cls, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.patch, b.patch, rtol=1e-6, atol=1e-6)


def test_no_process_group_needed():
    assert not (dist.is_available() and dist.is_initialized())
    cls, patches, mask = _data(3)
    c = Center(5)
    old = _start(c)
    c.update(cls, patches, mask)
    exp = _expected(*old, cls, patches, mask, 0.9)
    torch.testing.assert_close(c.cls, exp[0], rtol=1e-6, atol=1e-6)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built")
def test_single_process_gloo_group_gives_same_result():
    cls, patches, mask = _data(4)
    plain = Center(5)
    _start(plain)
    plain.update(cls, patches, mask)
    empty_plain = Center(5)
    _start(empty_plain)
    empty_plain.update(cls, patches, torch.zeros_like(mask))

    assert not dist.is_initialized()
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{_free_port()}")
    try:
        assert dist.is_initialized()
        grouped = Center(5)
        _start(grouped)
        grouped.update(cls, patches, mask)
        empty = Center(5)
        old_patch = _start(empty)[1]
        empty.update(cls, patches, torch.zeros_like(mask))
    finally:
        dist.destroy_process_group()
    assert not dist.is_initialized()
    torch.testing.assert_close(grouped.cls, plain.cls, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grouped.patch, plain.patch, rtol=1e-6, atol=1e-6)
    assert torch.equal(empty.patch, old_patch)
    torch.testing.assert_close(empty.cls, empty_plain.cls, rtol=1e-6, atol=1e-6)


def _step(seed, B=2, T=4, M=2, N=6, K=5):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, T, N, dtype=torch.bool)
    mask[:, :, torch.randperm(N, generator=g)[:3]] = True
    student = {"cls_global": torch.randn(B, T, K, generator=g), "cls_local": torch.randn(B, T, M, K, generator=g),
               "patch": torch.randn(B, T, N, K, generator=g), "patch_mask": mask}
    teacher = {"cls_global": torch.randn(B, T, K, generator=g), "patch": torch.randn(B, T, N, K, generator=g)}
    return student, teacher


def test_inoloss_updates_center_once_after_computing_with_old_center():
    K = 5
    student, teacher = _step(5, K=K)
    with_update = INOLoss(LossConfig(center_update="step"), out_dim=K)
    old_cls, old_patch = _start(with_update.center)
    frozen = INOLoss(LossConfig(center_update="step"), out_dim=K)
    frozen.load_state_dict(with_update.state_dict())

    r_frozen = frozen(student, teacher, update_center=False)
    assert torch.equal(frozen.center.cls, old_cls) and torch.equal(frozen.center.patch, old_patch)
    r_upd = with_update(student, teacher, update_center=True)
    for name in r_frozen:
        assert torch.equal(r_upd[name], r_frozen[name]), name  # computed with the OLD centers

    exp_cls, exp_patch = _expected(old_cls, old_patch, teacher["cls_global"], teacher["patch"],
                                   student["patch_mask"], 0.9)
    torch.testing.assert_close(with_update.center.cls, exp_cls, rtol=1e-6, atol=1e-6)  # exactly one update
    torch.testing.assert_close(with_update.center.patch, exp_patch, rtol=1e-6, atol=1e-6)

    # the next call sees the new centers
    r_next = with_update(student, teacher, update_center=False)
    assert abs(r_next["g2g"].item() - r_frozen["g2g"].item()) > 1e-6
    assert abs(r_next["mim"].item() - r_frozen["mim"].item()) > 1e-6


def test_inoloss_unmasked_step_leaves_patch_center():
    K = 5
    student, teacher = _step(6, K=K)
    loss = INOLoss(LossConfig(center_momentum=0.5, center_update="step"), out_dim=K)
    old_cls, old_patch = _start(loss.center)
    loss({k: student[k] for k in ("cls_global", "cls_local")}, {"cls_global": teacher["cls_global"]})
    assert torch.equal(loss.center.patch, old_patch)
    exp_cls = 0.5 * old_cls + 0.5 * teacher["cls_global"].reshape(-1, K).mean(0, keepdim=True)
    torch.testing.assert_close(loss.center.cls, exp_cls, rtol=1e-6, atol=1e-6)
    released = INOLoss(LossConfig(center_momentum=0.5), out_dim=K)  # the released cadence: per pair, no patch
    old_cls, old_patch = _start(released.center)
    released({k: student[k] for k in ("cls_global", "cls_local")}, {"cls_global": teacher["cls_global"]})
    assert torch.equal(released.center.patch, old_patch)
    c = old_cls
    for n in range(2):  # T = 4: pairs (0, 2) and (1, 3)
        c = 0.5 * c + 0.5 * teacher["cls_global"][:, [n, n + 2]].reshape(-1, K).mean(0, keepdim=True)
    torch.testing.assert_close(released.center.cls, c, rtol=1e-6, atol=1e-6)


def test_update_under_bf16_autocast_sums_in_float32():
    g = torch.Generator().manual_seed(5)
    patches = torch.randn(2, 4, 9, 64, generator=g) * 30
    cls = torch.randn(2, 4, 64, generator=g)
    mask = torch.rand(2, 4, 9, generator=g) < 0.5
    ref = Center(64)
    ref.update(cls, patches, mask)
    c = Center(64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c.update(cls, patches, mask)
    assert c.patch.dtype == torch.float32
    torch.testing.assert_close(c.patch, ref.patch, rtol=1e-6, atol=1e-6)
