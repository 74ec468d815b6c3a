"""DAVIS J&F evaluation: a known answer from the official evaluator, hand-made cases, statistics and errors."""

import functools
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from inolib.data.vos_datasets import read_davis_sequence
from inolib.vos.metrics import (GLOBAL_COLUMNS, bound_radius, db_statistics, disk, evaluate_davis, evaluate_sequence, f_measure, format_table, jaccard, read_results, seg2bmap, write_tables)

DAVIS = "davis_sample/DAVIS"
OSVOS = "davis_sample/reference_results/semi-supervised/osvos"
EXPECTED = "davis_sample/reference_results/osvos_expected_metrics.json"
TENNIS = "davis_sample/extras/davis2017_tennis_2frames/DAVIS"


@functools.lru_cache(maxsize=1)
def _osvos_result(data_dir: str) -> dict:
    """The full sample evaluated once per test session (about 2 s)."""
    return evaluate_davis(f"{data_dir}/{DAVIS}", f"{data_dir}/{OSVOS}", split="val", progress=False)


def _copy_results(data_dir, tmp_path, seq="blackswan"):
    dst = tmp_path / "results"
    shutil.copytree(data_dir / OSVOS / seq, dst / seq)
    return dst


# ------------------------------------------------------------------------------------ known answer


def test_osvos_matches_the_official_evaluator(data_dir):
    expected = json.loads((data_dir / EXPECTED).read_text())
    result = _osvos_result(str(data_dir))
    assert result["split"] == "val"
    assert list(result["objects"]) == list(expected["sequences"]) == ["blackswan_1", "car-shadow_1", "drift-chicane_1"]
    for key, exp in expected["sequences"].items():
        got = result["objects"][key]
        assert got["frame_ids"] == exp["frame_ids"]  # first and last frame left out
        assert got["J_per_frame"].shape == got["F_per_frame"].shape == (len(exp["frame_ids"]),)
        # per frame: the same float64 operations as the official code, so equal to rounding (in fact bit-exact)
        np.testing.assert_allclose(got["J_per_frame"], exp["J_per_frame"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got["F_per_frame"], exp["F_per_frame"], rtol=0, atol=1e-12)
        for stat in ("J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay"):
            assert got[stat] == pytest.approx(exp[stat], abs=1e-4), (key, stat)
            assert got[stat] == pytest.approx(exp[stat], rel=0, abs=1e-12), (key, stat)
    for col in GLOBAL_COLUMNS:
        assert result["global"][col] == pytest.approx(expected["global"][col], rel=0, abs=1e-12), col
    assert result["global"]["J&F-Mean"] == pytest.approx(0.8943397583163986, abs=1e-4)


def test_format_table_looks_like_the_official_print(data_dir):
    text = format_table(_osvos_result(str(data_dir)))
    lines = text.splitlines()
    # the official CLI's output on this sample (data/davis_sample/README.md)
    assert lines[0] == "--------------------------- Global results for val ---------------------------"
    assert lines[1] == " J&F-Mean   J-Mean  J-Recall  J-Decay   F-Mean  F-Recall  F-Decay"
    assert lines[2] == "  0.89434 0.881881       1.0 0.003496 0.906799       1.0 0.029302"
    assert "---------- Per sequence results for val ----------" in lines
    assert any(line.split() == ["drift-chicane_1", "0.774220", "0.828893"] for line in lines)


def test_write_tables_official_files(data_dir, tmp_path):
    result = _osvos_result(str(data_dir))
    g_path, s_path = write_tables(result, tmp_path, "val")
    assert g_path == tmp_path / "global_results-val.csv" and g_path.is_file()
    assert s_path == tmp_path / "per-sequence_results-val.csv" and s_path.is_file()
    assert g_path.read_text().splitlines() == ["J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay",
                                               "0.894,0.882,1.000,0.003,0.907,1.000,0.029"]
    assert s_path.read_text().splitlines() == ["Sequence,J-Mean,F-Mean", "blackswan_1,0.943,0.974",
                                               "car-shadow_1,0.928,0.917", "drift-chicane_1,0.774,0.829"]
    write_tables(result, tmp_path / "new")  # split defaults to the result's
    assert (tmp_path / "new" / "global_results-val.csv").is_file()


def test_only_the_scored_frames_are_read(data_dir, tmp_path):
    """As officially, the first and last frame PNGs are not needed; greyscale id PNGs read like indexed ones."""
    res = _copy_results(data_dir, tmp_path)
    (res / "blackswan" / "00000.png").unlink()
    (res / "blackswan" / "00049.png").unlink()
    for p in list((res / "blackswan").glob("*.png"))[:5]:
        with Image.open(p) as im:
            Image.fromarray(np.array(im), mode="L").save(p)
    got = evaluate_davis(data_dir / DAVIS, res, sequences=["blackswan"], progress=False)
    exp = _osvos_result(str(data_dir))["objects"]["blackswan_1"]
    assert list(got["objects"]) == ["blackswan_1"]
    assert np.array_equal(got["objects"]["blackswan_1"]["J_per_frame"], exp["J_per_frame"])
    assert np.array_equal(got["objects"]["blackswan_1"]["F_per_frame"], exp["F_per_frame"])
    with pytest.raises(FileNotFoundError, match="frame 00000 not found"):
        read_results(res, read_davis_sequence(data_dir / DAVIS, "blackswan"))


# ------------------------------------------------------------------------------------------------ J


def test_jaccard_hand_made():
    a = np.zeros((3, 20, 30), dtype=bool)
    a[:, 5:10, 5:15] = True
    b = np.zeros_like(a)
    b[:, 12:18, 20:25] = True
    empty = np.zeros_like(a)
    assert np.array_equal(jaccard(a, a), np.ones(3))
    assert np.array_equal(jaccard(a, b), np.zeros(3))
    assert np.array_equal(jaccard(empty, empty), np.ones(3))  # both empty: 1 (official)
    assert np.array_equal(jaccard(a, empty), np.zeros(3))
    half = a.copy()
    half[:, 5:10, 10:15] = False
    assert jaccard(half[0], a[0]) == pytest.approx(0.5)  # (H, W) in, a float out
    assert isinstance(jaccard(half[0], a[0]), float)
    # ints and tensors behave like bool arrays
    assert np.array_equal(jaccard(torch.from_numpy(a.astype(np.uint8) * 3), torch.from_numpy(half)), np.full(3, 0.5))


def test_jaccard_void_and_tennis(data_dir):
    seq = read_davis_sequence(data_dir / TENNIS, "tennis")
    gt = seq.load_masks()[1]
    void = gt == 255
    assert void.any() and (gt == 1).any() and (gt == 2).any()
    obj = gt == 1
    pred = obj | void  # wrong only on void pixels
    assert jaccard(pred, obj, void) == 1.0
    assert jaccard(pred, obj) < 1.0
    assert f_measure(pred, obj, void) == 1.0
    assert f_measure(pred, obj) < 1.0
    # everything void: the union is empty, J = 1
    assert jaccard(pred, obj, torch.ones_like(obj)) == 1.0


# ------------------------------------------------------------------------------------------------ F


def _square(h, w, y0, x0, size, frames=1):
    m = np.zeros((frames, h, w), dtype=bool)
    m[:, y0:y0 + size, x0:x0 + size] = True
    return m


def test_f_measure_hand_made():
    h, w = 480, 854
    assert bound_radius(h, w) == 8.0  # ceil(0.008 * 979.65)
    gt = _square(h, w, 100, 200, 120)
    assert np.array_equal(f_measure(gt, gt), [1.0])
    # a shift within the 8 px tolerance is perfect, one pixel more is not
    for dx, perfect in ((3, True), (8, True), (9, False), (30, False)):
        f = f_measure(np.roll(gt, dx, axis=-1), gt)[0]
        assert (f == 1.0) == perfect, (dx, f)
        assert 0 < f <= 1
    # bound_th >= 1 is a tolerance in pixels
    assert f_measure(np.roll(gt, 3, axis=-2), gt, bound_th=3)[0] == 1.0
    assert f_measure(np.roll(gt, 4, axis=-2), gt, bound_th=3)[0] < 1.0
    # the official special cases of empty boundaries
    empty = np.zeros_like(gt)
    assert f_measure(empty[0], gt[0]) == 0.0
    assert f_measure(gt[0], empty[0]) == 0.0
    assert f_measure(empty[0], empty[0]) == 1.0
    full = np.ones_like(gt)  # a full mask has no boundary either (the bottom-right pixel never counts)
    assert not seg2bmap(full).any()


def test_seg2bmap_definition():
    rng = np.random.default_rng(0)
    seg = rng.random((3, 9, 11)) < 0.4
    got = seg2bmap(seg).numpy()
    h, w = seg.shape[1:]
    for t in range(3):
        s = seg[t]
        for y in range(h):
            for x in range(w):
                if y < h - 1 and x < w - 1:
                    exp = s[y, x] != s[y, x + 1] or s[y, x] != s[y + 1, x] or s[y, x] != s[y + 1, x + 1]
                elif y == h - 1 and x < w - 1:
                    exp = s[y, x] != s[y, x + 1]
                elif x == w - 1 and y < h - 1:
                    exp = s[y, x] != s[y + 1, x]
                else:
                    exp = False
                assert got[t, y, x] == exp, (t, y, x)


def _reference_f(pred, gt, void, bound_th):
    """Slow reference: dense disk dilation by explicit offsets (OpenCV's rule, anchor at the centre)."""
    h, w = gt.shape
    if void is not None:
        pred, gt = pred & ~void, gt & ~void
    fb, gb = seg2bmap(pred).numpy(), seg2bmap(gt).numpy()
    k = disk(bound_radius(h, w, bound_th))
    ay, ax = k.shape[0] // 2, k.shape[1] // 2

    def dilate(b):
        out = np.zeros_like(b)
        for i, j in zip(*np.nonzero(k)):
            dy, dx = i - ay, j - ax  # out(y, x) |= b(y + dy, x + dx)
            out[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] |= \
                b[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
        return out

    n_fg, n_gt = fb.sum(), gb.sum()
    if n_fg == 0 and n_gt > 0:
        p, r = 1, 0
    elif n_fg > 0 and n_gt == 0:
        p, r = 0, 1
    elif n_fg == 0 and n_gt == 0:
        p, r = 1, 1
    else:
        p, r = (fb & dilate(gb)).sum() / n_fg, (gb & dilate(fb)).sum() / n_gt
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


@pytest.mark.parametrize("bound_th", [0.008, 0.05, 2, 2.5, 6])
def test_f_measure_equals_dense_dilation(bound_th):
    rng = np.random.default_rng(1)
    h, w = 37, 53
    # blobby random masks: thresholded, box-smoothed noise
    noise = torch.from_numpy(rng.random((6, 1, h, w))).float()
    smooth = torch.nn.functional.avg_pool2d(noise, 7, stride=1, padding=3)[:, 0].numpy()
    gt = smooth > 0.5
    pred = np.roll(smooth, 2, axis=-1) > 0.52
    pred[0] = False  # an empty prediction
    void = rng.random((6, h, w)) < 0.02
    for v in (None, void):
        got = f_measure(pred, gt, v, bound_th=bound_th)
        exp = [_reference_f(pred[t], gt[t], None if v is None else v[t], bound_th) for t in range(6)]
        np.testing.assert_allclose(got, exp, rtol=0, atol=1e-15)
        # chunking and 2-D calls give the same numbers
        assert np.array_equal(f_measure(pred, gt, v, bound_th=bound_th, chunk=1), got)
        assert f_measure(pred[3], gt[3], None if v is None else v[3], bound_th=bound_th) == got[3]


def test_disk_is_skimage_disk():
    assert disk(1).astype(int).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    d8 = disk(8.0)
    assert d8.shape == (17, 17) and d8.sum() == 197 and d8[8].all() and d8[0].sum() == 1


# ------------------------------------------------------------------------------------- statistics


def test_db_statistics():
    rising = np.arange(10) / 10  # bins: frames 0-2, 2-5, 5-7, 7-9
    mean, recall, decay = db_statistics(rising)
    assert mean == pytest.approx(0.45)
    assert recall == pytest.approx(0.4)  # 0.6 .. 0.9; 0.5 is not > 0.5
    assert decay == pytest.approx(0.1 - 0.8)
    assert db_statistics(1 - rising)[2] == pytest.approx(0.9 - 0.2)
    assert db_statistics(np.ones(48)) == (1.0, 1.0, 0.0)
    with_nan = rising.copy()
    with_nan[0] = np.nan
    mean, recall, decay = db_statistics(with_nan)
    assert mean == pytest.approx(np.arange(1, 10).mean() / 10)
    assert recall == pytest.approx(0.4)  # nan counts as a frame that is not > 0.5
    assert decay == pytest.approx(0.15 - 0.8)
    assert db_statistics(torch.tensor([0.7], dtype=torch.float64)) == (0.7, 1.0, 0.0)
    assert all(math.isnan(v) for v in db_statistics(np.zeros(0)))


# ------------------------------------------------------------------------------------------ protocol


def test_evaluate_sequence_protocol():
    t, h, w = 5, 40, 60
    gt = np.zeros((t, h, w), dtype=np.uint8)
    gt[:, 5:20, 5:20] = 1
    gt[:, 25:35, 30:50] = 2
    gt[:, 0:3, :] = 255  # void strip
    pred = np.where(gt == 255, 0, gt)
    pred[0] = 0  # the first and last frame are not scored
    pred[-1] = 0
    scores = evaluate_sequence(pred, gt, 2, name="toy")
    assert sorted(scores) == [1, 2]
    for k in (1, 2):
        assert np.array_equal(scores[k]["J"], np.ones(t - 2)) and np.array_equal(scores[k]["F"], np.ones(t - 2))
    # fewer predicted objects: the missing one scores 0 where the ground truth has it
    only_one = np.where(pred == 2, 0, pred)
    scores = evaluate_sequence(only_one, gt, 2, name="toy")
    assert np.array_equal(scores[1]["J"], np.ones(t - 2))
    assert np.array_equal(scores[2]["J"], np.zeros(t - 2)) and np.array_equal(scores[2]["F"], np.zeros(t - 2))
    # void: scored as background by default (official), left out with exclude_void
    on_void = pred.copy()
    on_void[:, 0:3, 5:20] = 1
    assert (evaluate_sequence(on_void, gt, 2)[1]["J"] < 1).all()
    assert np.array_equal(evaluate_sequence(on_void, gt, 2, exclude_void=True)[1]["J"], np.ones(t - 2))
    # torch inputs give the same numbers
    s_t = evaluate_sequence(torch.from_numpy(on_void), torch.from_numpy(gt), 2)
    assert np.array_equal(s_t[1]["F"], evaluate_sequence(on_void, gt, 2)[1]["F"])


def test_evaluate_sequence_errors():
    gt = np.zeros((4, 10, 10), dtype=np.uint8)
    gt[:, 2:5, 2:5] = 1
    pred = gt.copy()
    pred[2, 7, 7] = 2
    with pytest.raises(ValueError, match=r"sequence kite-surf: predicted object id 2 in frame 2"):
        evaluate_sequence(pred, gt, 1, name="kite-surf")
    pred[2, 7, 7] = 255  # void written into results is an id beyond the ground truth too
    with pytest.raises(ValueError, match="kite-surf.*255"):
        evaluate_sequence(pred, gt, 1, name="kite-surf")
    pred[0, 7, 7] = 2  # but the first frame is never scored
    pred[2, 7, 7] = 0
    assert evaluate_sequence(pred, gt, 1)[1]["J"].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="at least 3"):
        evaluate_sequence(gt[:2], gt[:2], 1, name="short")
    with pytest.raises(ValueError, match="shape"):
        evaluate_sequence(gt, gt[:, :5], 1)


def test_two_frame_tennis_has_nothing_to_score(data_dir, tmp_path):
    res = tmp_path / "results" / "tennis"
    res.mkdir(parents=True)
    with pytest.raises(ValueError, match="tennis.*at least 3"):
        evaluate_davis(data_dir / TENNIS, res.parent, sequences=["tennis"], progress=False)


# --------------------------------------------------------------------------------------- file errors


def test_missing_frame_names_the_frame(data_dir, tmp_path):
    res = _copy_results(data_dir, tmp_path)
    (res / "blackswan" / "00005.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"00005\.png: frame 00005 not found.*blackswan"):
        evaluate_davis(data_dir / DAVIS, res, sequences=["blackswan"], progress=False)
    with pytest.raises(FileNotFoundError, match="results folder for sequence car-shadow"):
        evaluate_davis(data_dir / DAVIS, res, sequences=["car-shadow"], progress=False)


def test_wrong_size_and_rgb_name_the_file(data_dir, tmp_path):
    res = _copy_results(data_dir, tmp_path)
    bad = res / "blackswan" / "00003.png"
    Image.fromarray(np.zeros((240, 427), dtype=np.uint8), mode="L").save(bad)
    with pytest.raises(ValueError, match=r"00003\.png: size 427x240 \(WxH\) differs from the ground-truth frame "
                                         r"854x480"):
        evaluate_davis(data_dir / DAVIS, res, sequences=["blackswan"], progress=False)
    Image.fromarray(np.zeros((480, 854, 3), dtype=np.uint8), mode="RGB").save(bad)
    with pytest.raises(ValueError, match=r"00003\.png: PNG mode 'RGB' has 3 channels.*id maps"):
        evaluate_davis(data_dir / DAVIS, res, sequences=["blackswan"], progress=False)


def test_id_beyond_ground_truth_names_the_sequence(data_dir, tmp_path):
    res = _copy_results(data_dir, tmp_path)
    path = res / "blackswan" / "00004.png"
    with Image.open(path) as im:
        arr = np.array(im)
        palette = im.getpalette()
    arr[:10, :10] = 2
    out = Image.fromarray(arr, mode="P")
    out.putpalette(palette)
    out.save(path)
    with pytest.raises(ValueError, match="sequence blackswan: predicted object id 2 in frame 00004"):
        evaluate_davis(data_dir / DAVIS, res, sequences=["blackswan"], progress=False)
