"""Patch masks: the released random scheme, the paper's blockwise scheme, dispatch and the compact layout."""

import pytest
import torch

from inolib.config import MaskConfig
from inolib.masking import block_mask, make_mask, masked_positions, random_mask

GRID = (14, 14)
N = GRID[0] * GRID[1]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_random_mask_statistics():
    g = _gen(0)
    B, T, draws = 2, 3, 2000
    empty, lo, hi = 0, int(0.1 * N), int(0.5 * N)
    counts = []
    for _ in range(draws):
        m = random_mask(B, T, GRID, (0.1, 0.5), 0.5, g)
        assert m.dtype == torch.bool and m.shape == (B, T, N)
        assert (m == m[0, 0]).all()  # one pattern for every clip and frame
        k = int(m[0, 0].sum())
        if k == 0:
            empty += 1
        else:
            assert lo <= k <= hi
            counts.append(k)
    assert abs(empty / draws - 0.5) < 0.05
    counts = torch.tensor(counts, dtype=torch.float)
    # k = int(U(0.1, 0.5) * N): spread over the whole range, mean near 0.3 N
    assert abs(counts.mean().item() / N - 0.3) < 0.02
    assert counts.min() <= lo + 3 and counts.max() >= hi - 3


def test_random_mask_positions_are_uniform():
    g = _gen(1)
    hits = torch.zeros(N)
    for _ in range(500):
        hits += random_mask(1, 1, GRID, (0.3, 0.3), 1.0, g)[0, 0].float()
    # every draw masks int(0.3 * 196) = 58 cells; each cell is hit ~148 times out of 500
    assert (hits.sum() == 500 * int(0.3 * N))
    assert hits.min() > 90 and hits.max() < 210


def test_random_mask_seeding_and_prob():
    a = random_mask(2, 3, GRID, (0.1, 0.5), 1.0, _gen(5))
    b = random_mask(2, 3, GRID, (0.1, 0.5), 1.0, _gen(5))
    c = random_mask(2, 3, GRID, (0.1, 0.5), 1.0, _gen(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g = _gen(7)
    for _ in range(50):
        assert random_mask(2, 2, GRID, (0.1, 0.5), 1.0, g).any()  # prob=1: always masked
        assert not random_mask(2, 2, GRID, (0.1, 0.5), 0.0, g).any()  # prob=0: never


def _components(cells: torch.Tensor) -> int:
    """4-connected components of a boolean (h, w) grid."""
    h, w = cells.shape
    seen = torch.zeros_like(cells)
    n = 0
    for i in range(h):
        for j in range(w):
            if cells[i, j] and not seen[i, j]:
                n += 1
                stack = [(i, j)]
                seen[i, j] = True
                while stack:
                    y, x = stack.pop()
                    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < h and 0 <= xx < w and cells[yy, xx] and not seen[yy, xx]:
                            seen[yy, xx] = True
                            stack.append((yy, xx))
    return n


def test_block_mask_structure():
    g = _gen(10)
    B, T = 4, 3
    masked_steps, differ, n_cells, n_comp = 0, 0, 0, 0
    for _ in range(40):
        m = block_mask(B, T, GRID, (0.1, 0.5), 0.5, g)
        assert m.dtype == torch.bool and m.shape == (B, T, N)
        assert (m == m[:, :1]).all()  # shared by the frames of a clip
        counts = m[:, 0].sum(-1)
        if not m.any():
            continue
        masked_steps += 1
        assert (counts > 0).all() and (counts <= int(0.5 * N)).all()
        differ += int(any(not torch.equal(m[0, 0], m[b, 0]) for b in range(1, B)))
        for b in range(B):
            n_cells += int(counts[b])
            n_comp += _components(m[b, 0].reshape(GRID))
    assert 10 <= masked_steps <= 30
    assert differ == masked_steps  # clips get their own patterns
    assert n_comp * 5 < n_cells  # rectangles, not scattered cells


def test_block_mask_small_ratio_is_blocky():
    g = _gen(11)
    comps = []
    for _ in range(20):
        m = block_mask(2, 2, GRID, (0.1, 0.1), 1.0, g)
        for b in range(2):
            cells = m[b, 0]
            assert 0 < int(cells.sum()) <= int(0.1 * N)
            comps.append(_components(cells.reshape(GRID)))
    # 19 cells in a few rectangles (a uniform shuffle of 19 cells gives ~16 components)
    assert sum(comps) / len(comps) < 4


def test_block_mask_seeding_and_prob():
    a = block_mask(3, 2, GRID, (0.1, 0.5), 1.0, _gen(3))
    b = block_mask(3, 2, GRID, (0.1, 0.5), 1.0, _gen(3))
    c = block_mask(3, 2, GRID, (0.1, 0.5), 1.0, _gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not block_mask(3, 2, GRID, (0.1, 0.5), 0.0, _gen(5)).any()
    with pytest.raises(ValueError):
        block_mask(3, 2, GRID, (0.1, 0.5), 0.5, _gen(5), aspect=0.0)


def test_random_mask_is_not_blocky():
    """Control for the component test above: uniform shuffles give many components."""
    g = _gen(12)
    n_cells = n_comp = 0
    for _ in range(20):
        cells = random_mask(1, 1, GRID, (0.1, 0.1), 1.0, g)[0, 0]
        n_cells += int(cells.sum())
        n_comp += _components(cells.reshape(GRID))
    assert n_comp * 2 > n_cells


def test_make_mask_dispatch_and_errors():
    r = make_mask(MaskConfig(mode="random", prob=1.0, ratio=(0.2, 0.4)), 2, 3, GRID, _gen(1))
    assert torch.equal(r, random_mask(2, 3, GRID, (0.2, 0.4), 1.0, _gen(1)))
    cfg = MaskConfig(mode="block", prob=1.0, ratio=(0.2, 0.4), block_min_patches=6, block_aspect=0.5)
    b = make_mask(cfg, 2, 3, GRID, _gen(1))
    assert torch.equal(b, block_mask(2, 3, GRID, (0.2, 0.4), 1.0, _gen(1), min_patches=6, aspect=0.5))
    assert not torch.equal(r, b)
    assert make_mask(MaskConfig(), 1, 1, GRID, _gen(0)).shape == (1, 1, N)
    with pytest.raises(ValueError):
        make_mask(MaskConfig(mode="grid"), 2, 3, GRID, _gen(1))
    for ratio in ((0.6, 0.2), (-0.1, 0.5), (0.1, 1.5)):
        for mode in ("random", "block"):
            with pytest.raises(ValueError):
                make_mask(MaskConfig(mode=mode, ratio=ratio), 2, 3, GRID, _gen(1))
    for prob in (-0.1, 1.1):
        with pytest.raises(ValueError):
            random_mask(2, 3, GRID, (0.1, 0.5), prob, _gen(1))


def test_masked_positions():
    g = _gen(20)
    B, T, n = 3, 4, 10
    mask = torch.rand(B, T, n, generator=g) < 0.35
    mask[1, 2] = False
    mask[2, 3] = True
    index, valid = masked_positions(mask)
    P = int(mask.sum(-1).max())
    assert P == n
    assert index.shape == (B, T, P) and valid.shape == (B, T, P)
    assert index.dtype == torch.long and valid.dtype == torch.bool
    assert torch.equal(valid.sum(-1), mask.sum(-1))
    for b in range(B):
        for t in range(T):
            k = int(mask[b, t].sum())
            assert valid[b, t, :k].all() and not valid[b, t, k:].any()  # valid first
            assert torch.equal(index[b, t, :k], torch.nonzero(mask[b, t]).flatten())  # ascending
            assert len(set(index[b, t].tolist())) == P  # distinct positions
            assert not mask[b, t, index[b, t, k:]].any()  # padded with unmasked positions
    # compact P smaller than N
    small = mask.clone()
    small[2, 3] = False
    small[2, 3, :2] = True
    idx2, valid2 = masked_positions(small)
    assert idx2.shape[-1] == int(small.sum(-1).max()) < n


def test_masked_positions_empty_and_errors():
    index, valid = masked_positions(torch.zeros(2, 3, 7, dtype=torch.bool))
    assert index.shape == (2, 3, 0) and valid.shape == (2, 3, 0)
    with pytest.raises(ValueError):
        masked_positions(torch.zeros(2, 3, 7))
    with pytest.raises(ValueError):
        masked_positions(torch.zeros(3, 7, dtype=torch.bool))


@pytest.mark.parametrize("mode", ["random", "block"])
@pytest.mark.parametrize("prob", [0.2, 0.8])
def test_prob_is_the_probability_of_masking(mode, prob):
    """``masking.prob`` is the chance that a step is masked (the released ``--mask_prob``), not of skipping."""
    cfg = MaskConfig(mode=mode, prob=prob, ratio=(0.2, 0.4))
    g = _gen(99)
    n = 400
    rate = sum(bool(make_mask(cfg, 1, 2, GRID, g).any()) for _ in range(n)) / n
    assert abs(rate - prob) < 0.07, f"{mode}: masked in {rate:.2f} of steps at prob {prob}"


def test_the_trainer_checks_the_masking_config_once_and_draws_the_same_masks(tmp_path, data_dir, monkeypatch):
    from dataclasses import replace

    from inolib import config as C
    from inolib import masking
    from inolib.run.trainer import Trainer

    for mode in ("random", "block"):
        cfg = replace(C.smoke().masking, mode=mode, prob=1.0)
        draw = masking.mask_sampler(cfg)
        a = draw(2, 3, (6, 7), torch.Generator().manual_seed(5))
        b = masking.make_mask(cfg, 2, 3, (6, 7), torch.Generator().manual_seed(5))
        assert a.shape == (2, 3, 42) and a.any() and torch.equal(a, b)
    with pytest.raises(ValueError, match="masking.mode"):
        masking.mask_sampler(replace(C.smoke().masking, mode="grid"))
    calls = []
    real = masking._check_ratio
    monkeypatch.setattr(masking, "_check_ratio", lambda *a: calls.append(a) or real(*a))
    tr = Trainer(C.smoke(), data_dir / "videos", tmp_path, progress=False, tensorboard=False, max_steps=3)
    tr.fit()
    assert tr.step == 3 and len(calls) == 1  # at construction, not at every step
