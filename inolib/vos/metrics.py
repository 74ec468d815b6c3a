"""DAVIS-2017 semi-supervised evaluation: region similarity J, boundary F-measure, and the J&F tables.

    result = evaluate_davis("DAVIS", "results/davis", split="val")      # reads results/davis/<seq>/<frame>.png
    print(format_table(result))
    write_tables(result, "results/davis", "val")   # global_results-val.csv, per-sequence_results-val.csv

This re-implements the protocol of the official DAVIS-2017 evaluator (``davis2017-evaluation``,
``evaluation_method.py --task semi-supervised``), vectorised over frames with torch:

- Every object ``k = 1..K`` of a sequence is scored on its own binary masks (prediction ``== k`` against
  ground truth ``== k``), where ``K`` is the largest object id of the first ground-truth frame. The first and
  the last frame are left out. A predicted id above ``K`` is an error; a predicted object that is missing
  simply scores as an empty mask.
- J (:func:`jaccard`) is the intersection over union; it is 1 when both masks are empty.
- F (:func:`f_measure`) is the F-measure of boundary precision and recall. Boundaries are one pixel wide
  (:func:`seg2bmap`); a boundary pixel counts as matched when a boundary pixel of the other mask lies within
  the disk of radius ``ceil(bound_th * sqrt(H^2 + W^2))`` (8 px at 480p) around it.
- Per object, :func:`db_statistics` turns the per-frame values into mean, recall (fraction > 0.5) and decay
  (first minus last of four temporal bins). The global J-Mean (J-Recall, ...) is the mean over all objects
  of the per-object values, and J&F-Mean = (J-Mean + F-Mean) / 2.

Void pixels (label 255). The official semi-supervised evaluator sets void ground-truth pixels to background
and passes no void mask to the metrics, so void pixels are scored like background; ``exclude_void=False``
(the default) reproduces that. With ``exclude_void=True`` the void pixels are left out of J and F instead, as
the metric functions do when given ``void`` (the same rule as the official ``db_eval_iou`` / ``f_measure``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..atomic import atomic_write
from ..data.vos_datasets import VOID_LABEL, VOSSequence, list_davis_sequences, read_davis_sequence

BOUND_TH = 0.008
GLOBAL_COLUMNS = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
SEQUENCE_COLUMNS = ["Sequence", "J-Mean", "F-Mean"]

ArrayLike = np.ndarray | torch.Tensor


# ------------------------------------------------------------------------------------------- helpers


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    """A tensor view of a numpy array or tensor (no copy where possible)."""
    if isinstance(x, torch.Tensor):
        return x
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or arr.dtype.kind in "iuf":
        return torch.from_numpy(np.ascontiguousarray(arr))
    raise TypeError(f"expected a numeric or boolean array, got dtype {arr.dtype}")


def _as_bool(x: ArrayLike) -> torch.Tensor:
    """Binary mask: True where ``x`` is non-zero (the official code's ``astype(bool)``)."""
    t = _as_tensor(x)
    return t if t.dtype == torch.bool else t != 0


def _binary_inputs(pred: ArrayLike, gt: ArrayLike, void: ArrayLike | None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
    """(pred, gt, void) as bool (N, H, W) on one device, and whether the input was a single (H, W) frame."""
    p, g = _as_bool(pred), _as_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from ground-truth shape {tuple(g.shape)}")
    if p.ndim not in (2, 3):
        raise ValueError(f"masks must be (H, W) or (T, H, W), got shape {tuple(p.shape)}")
    v = None
    if void is not None:
        v = _as_bool(void)
        if v.shape != p.shape:
            raise ValueError(f"void shape {tuple(v.shape)} differs from mask shape {tuple(p.shape)}")
        v = v.to(p.device)
    g = g.to(p.device)
    single = p.ndim == 2
    if single:
        p, g = p[None], g[None]
        v = None if v is None else v[None]
    return p, g, v, single


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den in float64 (int64 inputs), nan where den == 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / den


# -------------------------------------------------------------------------------------------- J


def jaccard(pred: ArrayLike, gt: ArrayLike, void: ArrayLike | None = None) -> np.ndarray | float:
    """Region similarity J (intersection over union) per frame.

    Args:
        pred: predicted binary mask, bool (T, H, W) or (H, W) (any non-zero value counts as foreground).
        gt: ground-truth binary mask, same shape.
        void: optional bool mask of the same shape; void pixels are left out of intersection and union.

    Returns:
        float64 (T,) for (T, H, W) inputs, a float for (H, W). J = 1 where the union is empty (both masks
        empty outside the void), as in the official ``db_eval_iou``.
    """
    p, g, v, single = _binary_inputs(pred, gt, void)
    inter, union = p & g, p | g
    if v is not None:
        keep = ~v
        inter, union = inter & keep, union & keep
    i = torch.count_nonzero(inter, dim=(-2, -1)).cpu().numpy().astype(np.int64)
    u = torch.count_nonzero(union, dim=(-2, -1)).cpu().numpy().astype(np.int64)
    j = _ratio(i, u)
    j[u == 0] = 1.0
    return float(j[0]) if single else j


# -------------------------------------------------------------------------------------------- F


def seg2bmap(seg: ArrayLike) -> torch.Tensor:
    """One-pixel-wide boundary map of binary masks (the construction of the official ``_seg2bmap``).

    A pixel is a boundary pixel when it differs from its right, lower or lower-right neighbour; in the last
    row only the right neighbour is compared, in the last column only the lower one, and the bottom-right
    pixel is never a boundary. Boundaries therefore lie half a pixel towards the origin from the edge.

    Args:
        seg: bool (..., H, W) masks (non-zero = foreground).

    Returns:
        bool (..., H, W) boundary maps.
    """
    s = _as_bool(seg)
    if s.ndim < 2:
        raise ValueError(f"seg2bmap needs (..., H, W) masks, got shape {tuple(s.shape)}")
    b = torch.zeros_like(s)
    c = s[..., :-1, :-1]
    b[..., :-1, :-1] = (c ^ s[..., :-1, 1:]) | (c ^ s[..., 1:, :-1]) | (c ^ s[..., 1:, 1:])
    b[..., -1, :-1] = s[..., -1, :-1] ^ s[..., -1, 1:]
    b[..., :-1, -1] = s[..., :-1, -1] ^ s[..., 1:, -1]
    return b


def bound_radius(height: int, width: int, bound_th: float = BOUND_TH) -> float:
    """Matching tolerance in pixels: ``bound_th`` itself if >= 1, else ``ceil(bound_th * ||(H, W)||)``."""
    if bound_th >= 1:
        return float(bound_th)
    return float(math.ceil(bound_th * math.sqrt(float(height * height + width * width))))


def disk(radius: float) -> np.ndarray:
    """Disk structuring element: bool (L, L) with ``X^2 + Y^2 <= radius^2`` on the grid
    ``arange(-radius, radius + 1)`` in each direction (skimage's ``disk``; L = 2 * radius + 1 for integer radii).
    """
    grid = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(grid, grid)
    return xx ** 2 + yy ** 2 <= radius ** 2


def _kernel_runs(kernel: np.ndarray) -> list[tuple[int, int, int]]:
    """The structuring element as horizontal runs ``(dy, dx0, dx1)`` of offsets from its anchor.

    The anchor is the element's centre ``(L_h // 2, L_w // 2)`` (OpenCV's default), and the dilation of
    ``src`` is ``dst(y, x) = max over set offsets (dy, dx) of src(y + dy, x + dx)``, outside pixels ignored.
    """
    kh, kw = kernel.shape
    ay, ax = kh // 2, kw // 2
    runs = []
    for i in range(kh):
        cols = np.flatnonzero(kernel[i])
        if cols.size == 0:
            continue
        cut = np.flatnonzero(np.diff(cols) > 1)
        starts = np.concatenate([cols[:1], cols[cut + 1]])
        ends = np.concatenate([cols[cut], cols[-1:]])
        runs += [(i - ay, int(s) - ax, int(e) - ax) for s, e in zip(starts, ends)]
    return runs


def _matched(points_of: torch.Tensor, near: torch.Tensor, runs: list[tuple[int, int, int]]) -> torch.Tensor:
    """Per frame, how many True pixels of ``points_of`` lie inside the dilation of ``near`` by ``runs``.

    Equal to ``(points_of & dilate(near)).sum((-2, -1))`` but evaluated only at the (sparse) True pixels of
    ``points_of``: a row-wise prefix sum of ``near`` answers "any True pixel of ``near`` in row y + dy between
    columns x + dx0 and x + dx1" in O(1) per run.

    Args:
        points_of, near: bool (N, H, W).
        runs: offsets of the structuring element, from :func:`_kernel_runs`.

    Returns:
        int64 (N,).
    """
    n_frames, h, w = near.shape
    prefix = torch.zeros((n_frames, h, w + 1), dtype=torch.int32, device=near.device)
    prefix[..., 1:] = torch.cumsum(near, dim=-1, dtype=torch.int32)
    flat = prefix.reshape(-1)
    n, y, x = points_of.nonzero(as_tuple=True)
    hit = torch.zeros_like(n, dtype=torch.bool)
    for dy, dx0, dx1 in runs:
        yy = y + dy
        inside = (yy >= 0) & (yy < h)
        base = (n * h + yy.clamp(0, h - 1)) * (w + 1)
        lo = (x + dx0).clamp(0, w)
        hi = (x + dx1 + 1).clamp(0, w)
        hit |= inside & (flat[base + hi] > flat[base + lo])
    return torch.bincount(n[hit], minlength=n_frames)


def f_measure(pred: ArrayLike, gt: ArrayLike, void: ArrayLike | None = None, bound_th: float = BOUND_TH,
              chunk: int = 32) -> np.ndarray | float:
    """Boundary F-measure per frame, as the official ``f_measure`` / ``db_eval_boundary`` (Sec. 4.1, metric F).

    ``pred``, ``gt`` and the optional ``void`` are bool (T, H, W) or (H, W); void pixels become background.
    A boundary pixel (:func:`seg2bmap`) matches when the other mask has one within :func:`bound_radius`
    (``bound_th``: a fraction of the diagonal if < 1, else pixels). ``chunk`` bounds memory only.
    Returns float64 (T,), or a float for (H, W); 1 when neither mask has a boundary.
    """
    # Equals the official cv2.dilate(bmap, disk(r)) (for a non-integer pixel tolerance the even-sized element
    # takes OpenCV's default anchor, not checked against OpenCV), but computed at the boundary pixels only,
    # with row prefix sums. Special cases as official: no predicted boundary gives P = 1, R = 0; no
    # ground-truth boundary P = 0, R = 1; neither P = R = 1; F = 0 when P + R = 0.
    p, g, v, single = _binary_inputs(pred, gt, void)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if p.shape[0] == 0:
        return np.zeros(0)
    h, w = p.shape[-2:]
    runs = _kernel_runs(disk(bound_radius(h, w, bound_th)))
    counts = []
    for start in range(0, p.shape[0], chunk):
        ps, gs = p[start:start + chunk], g[start:start + chunk]
        if v is not None:
            keep = ~v[start:start + chunk]
            ps, gs = ps & keep, gs & keep
        fb, gb = seg2bmap(ps), seg2bmap(gs)
        counts.append(torch.stack([torch.count_nonzero(fb, dim=(-2, -1)), torch.count_nonzero(gb, dim=(-2, -1)),
                                   _matched(fb, gb, runs), _matched(gb, fb, runs)]).cpu())
    n_fg, n_gt, fg_match, gt_match = torch.cat(counts, dim=1).numpy().astype(np.int64)
    precision = np.where(n_fg == 0, 1.0, np.where(n_gt == 0, 0.0, _ratio(fg_match, n_fg)))
    recall = np.where(n_gt == 0, 1.0, np.where(n_fg == 0, 0.0, _ratio(gt_match, n_gt)))
    denom = precision + recall
    f = np.where(denom == 0, 0.0, _ratio(2 * precision * recall, denom))
    return float(f[0]) if single else f


# ---------------------------------------------------------------------------------------- statistics


def db_statistics(per_frame: ArrayLike) -> tuple[float, float, float]:
    """Mean, recall and decay of one object's per-frame values (the official ``db_statistics``).

    Args:
        per_frame: float (T,) per-frame J or F.

    Returns:
        (mean, recall, decay): the nan-aware mean; the fraction of frames > 0.5 (nan counts as not);
        and the mean of the first of 4 temporal bins minus that of the last (neighbouring bins share a frame,
        as official). All nan for T = 0; decay may be nan for T < 4.
    """
    # Bin edges round(linspace(1, T, 5) + 1e-10) - 1, bin i = frames edge[i]..edge[i+1] inclusive. The official
    # code stores the edges as uint8, which wraps for T > 256; int64 here, identical up to 256 frames.
    x = np.asarray(per_frame.cpu() if isinstance(per_frame, torch.Tensor) else per_frame, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"db_statistics needs a 1-D per-frame array, got shape {x.shape}")
    if x.size == 0:
        return math.nan, math.nan, math.nan

    def nanmean(a: np.ndarray) -> float:
        ok = ~np.isnan(a)
        return float(np.nanmean(a)) if ok.any() else math.nan

    mean = nanmean(x)
    recall = float(np.mean(x > 0.5))
    edges = (np.round(np.linspace(1, len(x), 5) + 1e-10) - 1).astype(np.int64)
    bins = [x[edges[i]:edges[i + 1] + 1] for i in range(4)]
    decay = nanmean(bins[0]) - nanmean(bins[3])
    return mean, recall, decay


# ------------------------------------------------------------------------------------------ sequences


def _check_ids(pred: torch.Tensor, num_objects: int, name: str, frame_labels: Sequence[str]) -> None:
    """ValueError naming the sequence and frame if ``pred`` (T, H, W) holds an id above ``num_objects``."""
    if pred.numel() == 0 or int(pred.max()) <= num_objects:
        return
    bad = (pred > num_objects).flatten(1).any(dim=1)
    t = int(bad.nonzero()[0, 0])
    frame_max = int(pred[t].max())
    raise ValueError(f"sequence {name}: predicted object id {frame_max} in frame {frame_labels[t]} is beyond the "
                     f"{num_objects} object(s) of the ground truth (valid ids 0..{num_objects}; the void label "
                     f"{VOID_LABEL} must not be written into results)")


def _score_objects(pred: torch.Tensor, gt: torch.Tensor, num_objects: int, name: str,
                   frame_labels: Sequence[str], bound_th: float,
                   exclude_void: bool) -> dict[int, dict[str, np.ndarray]]:
    """J and F of objects 1..num_objects on every frame of pred / gt (int (T, H, W)); no frames dropped."""
    if pred.shape != gt.shape:
        raise ValueError(f"sequence {name}: prediction shape {tuple(pred.shape)} differs from ground-truth shape "
                         f"{tuple(gt.shape)}")
    _check_ids(pred, num_objects, name, frame_labels)
    gt = gt.to(pred.device)
    void = (gt == VOID_LABEL) if exclude_void else None
    scores = {}
    for k in range(1, num_objects + 1):
        pk, gk = pred == k, gt == k
        scores[k] = {"J": jaccard(pk, gk, void), "F": f_measure(pk, gk, void, bound_th=bound_th)}
    return scores


def _as_id_tensor(x: ArrayLike, what: str) -> torch.Tensor:
    t = _as_tensor(x)
    if t.dtype == torch.bool or t.is_floating_point():
        raise TypeError(f"{what} must be an integer id map, got dtype {t.dtype}")
    if t.ndim != 3:
        raise ValueError(f"{what} must be (T, H, W), got shape {tuple(t.shape)}")
    return t.long()


def evaluate_sequence(pred_masks: ArrayLike, gt_masks: ArrayLike, num_objects: int, name: str = "sequence",
                      bound_th: float = BOUND_TH, exclude_void: bool = False) -> dict[int, dict[str, np.ndarray]]:
    """Per-frame J and F of each object of one sequence, semi-supervised protocol (Sec. 4.1).

    ``pred_masks``, ``gt_masks``: int (T, H, W) id maps (255 = void, scored as background, as official, unless
    ``exclude_void``). Returns ``{k: {"J": float64 (T - 2,), "F": float64 (T - 2,)}}`` for k = 1..K =
    ``num_objects`` (first and last frame left out; a missing object scores as empty).

    Raises ValueError naming the sequence for a scored id above K, < 3 frames, or differing shapes.
    """
    pred = _as_id_tensor(pred_masks, f"sequence {name}: predictions")
    gt = _as_id_tensor(gt_masks, f"sequence {name}: ground truth")
    if pred.shape != gt.shape:
        raise ValueError(f"sequence {name}: prediction shape {tuple(pred.shape)} differs from ground-truth shape "
                         f"{tuple(gt.shape)}")
    if pred.shape[0] < 3:
        raise ValueError(f"sequence {name}: {pred.shape[0]} frame(s); the semi-supervised protocol leaves out the "
                         f"first and the last frame, so at least 3 are needed")
    labels = [str(t) for t in range(1, pred.shape[0] - 1)]
    return _score_objects(pred[1:-1], gt[1:-1], int(num_objects), name, labels, bound_th, exclude_void)


# ------------------------------------------------------------------------------------------- results


def read_results(results_dir: str | Path, seq: VOSSequence, frames: Iterable[int] | None = None) -> torch.Tensor:
    """Read a method's id maps ``results_dir/<seq.name>/<frame>.png`` as uint8 (len(frames), H, W).

    ``<frame>`` is the stem of the JPEG frame (``00000`` ...); the pixel value of an indexed or greyscale PNG
    is the object id. ``frames`` defaults to all ``seq.num_frames``.

    Raises FileNotFoundError / ValueError naming the path for a missing folder or a missing, unreadable, RGB or
    wrongly sized PNG.
    """
    folder = Path(results_dir) / seq.name
    if not folder.is_dir():
        raise FileNotFoundError(f"results folder for sequence {seq.name} not found: {folder}")
    idx = list(range(seq.num_frames)) if frames is None else [int(i) for i in frames]
    out = []
    for i in idx:
        if not 0 <= i < seq.num_frames:
            raise ValueError(f"sequence {seq.name}: frame index {i} out of range 0..{seq.num_frames - 1}")
        stem = Path(seq.frame_paths[i]).stem
        path = folder / f"{stem}.png"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: frame {stem} not found in the results of sequence {seq.name} "
                                    f"(every evaluated frame needs <frame>.png)")
        try:
            with Image.open(path) as im:
                mode = im.mode
                arr = np.array(im)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"{path}: cannot read PNG ({e})") from e
        if arr.ndim != 2:
            raise ValueError(f"{path}: PNG mode '{mode}' has {arr.shape[-1] if arr.ndim == 3 else '?'} channels; "
                             f"results must be id maps (indexed 'P' or greyscale 'L' PNG, pixel value = object id), "
                             f"not colour images")
        h, w = seq.frame_size(i)
        if arr.shape != (h, w):
            raise ValueError(f"{path}: size {arr.shape[1]}x{arr.shape[0]} (WxH) differs from the ground-truth frame "
                             f"{w}x{h} of sequence {seq.name}")
        if arr.dtype != np.uint8:
            if arr.dtype.kind not in "biu" or (arr.size and (arr.min() < 0 or arr.max() > 255)):
                raise ValueError(f"{path}: PNG mode '{mode}' values are not object ids 0..255")
            arr = arr.astype(np.uint8)
        out.append(torch.from_numpy(arr))
    if not out:
        h, w = seq.size
        return torch.zeros((0, h, w), dtype=torch.uint8)
    return torch.stack(out)


def object_statistics(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """``{"J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay"}`` of one object's per-frame
    ``{"J": (T,), "F": (T,)}`` (an entry of :func:`evaluate_sequence`), by :func:`db_statistics`."""
    jm, jr, jd = db_statistics(scores["J"])
    fm, fr, fd = db_statistics(scores["F"])
    return {"J_mean": jm, "J_recall": jr, "J_decay": jd, "F_mean": fm, "F_recall": fr, "F_decay": fd}


def _global_results(objects: dict[str, dict]) -> dict[str, float]:
    """The global row: means over all objects of the per-object statistics (official evaluation_method.py)."""
    if not objects:
        return {c: math.nan for c in GLOBAL_COLUMNS}
    rows = list(objects.values())
    col = {key: float(np.mean([r[key] for r in rows]))
           for key in ("J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay")}
    return {"J&F-Mean": (col["J_mean"] + col["F_mean"]) / 2.0,
            "J-Mean": col["J_mean"], "J-Recall": col["J_recall"], "J-Decay": col["J_decay"],
            "F-Mean": col["F_mean"], "F-Recall": col["F_recall"], "F-Decay": col["F_decay"]}


def evaluate_davis(davis_root: str | Path, results_dir: str | Path, split: str = "val",
                   sequences: Sequence[str] | None = None, progress: bool = True, resolution: str = "480p",
                   bound_th: float = BOUND_TH, exclude_void: bool = False) -> dict:
    """Evaluate a folder of DAVIS-2017 results with the semi-supervised protocol (Sec. 4.1).

    ``results_dir`` holds ``<seq>/<frame>.png`` id maps (frames 1..T-2 read, as official); ``sequences``
    replaces the ``split`` list; ``exclude_void``: see the module docstring (default False = official).

    Returns:
        ``{"split", "objects": {"<seq>_<k>": row}, "global": {column: float}}``; a row holds ``sequence``,
        ``object_id``, ``frame_ids``, ``J_per_frame`` / ``F_per_frame`` (float64 (T - 2,)) and the
        :func:`object_statistics`; ``global`` has ``GLOBAL_COLUMNS``.
    """
    names = list(sequences) if sequences is not None else list_davis_sequences(davis_root, split, resolution)
    objects: dict[str, dict] = {}
    for name in tqdm(names, desc="evaluating", unit="seq", disable=not progress):
        seq = read_davis_sequence(davis_root, name, resolution)
        if seq.num_frames < 3:
            raise ValueError(f"sequence {name}: {seq.num_frames} frame(s); the semi-supervised protocol leaves out "
                             f"the first and the last frame, so at least 3 are needed")
        frames = list(range(1, seq.num_frames - 1))
        stems = [Path(seq.frame_paths[i]).stem for i in frames]
        gt = seq.load_masks()[1:-1]
        pred = read_results(results_dir, seq, frames)
        num_objects = max(seq.object_ids, default=0)
        scores = _score_objects(pred, gt, num_objects, name, stems, bound_th, exclude_void)
        for k, s in scores.items():
            objects[f"{name}_{k}"] = {"sequence": name, "object_id": k, "frame_ids": stems,
                                      "J_per_frame": s["J"], "F_per_frame": s["F"], **object_statistics(s)}
    return {"split": split, "objects": objects, "global": _global_results(objects)}


# -------------------------------------------------------------------------------------------- tables


def _csv_number(x: float) -> str:
    """pandas ``to_csv(float_format="%.3f")``: three decimals, an empty field for nan."""
    return "" if x is None or math.isnan(x) else "%.3f" % x


def write_tables(result: dict, results_dir: str | Path, split: str | None = None) -> tuple[Path, Path]:
    """Write ``global_results-<split>.csv`` and ``per-sequence_results-<split>.csv`` into ``results_dir``.

    The files have the official layout: a header line (``J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,
    F-Decay`` and ``Sequence,J-Mean,F-Mean``), then rows with values written with three decimals. Existing
    files are replaced atomically. ``split`` defaults to ``result["split"]``. Returns the two paths.
    """
    split = result["split"] if split is None else split
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    g_path = folder / f"global_results-{split}.csv"
    s_path = folder / f"per-sequence_results-{split}.csv"
    rows = {g_path: [GLOBAL_COLUMNS, [_csv_number(result["global"][c]) for c in GLOBAL_COLUMNS]],
            s_path: [SEQUENCE_COLUMNS] + [[key, _csv_number(row["J_mean"]), _csv_number(row["F_mean"])]
                                          for key, row in result["objects"].items()]}
    for path, lines in rows.items():  # atomic: a temporary file renamed over the table
        def write(tmp, lines=lines):
            with open(tmp, "w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerows(lines)

        atomic_write(path, write)
    return g_path, s_path


def _format_column(values: list[float]) -> list[str]:
    """Floats as pandas prints a column: six decimals, trailing zeros dropped alike across the column."""
    cells = ["%.6f" % v for v in values if not math.isnan(v)]
    while cells and all(c.endswith("0") and not c.endswith(".0") for c in cells):
        cells = [c[:-1] for c in cells]
    it = iter(cells)
    return ["NaN" if math.isnan(v) else next(it) for v in values]


def _text_table(header: list[str], columns: list[list[str]], numeric: list[bool]) -> str:
    """Columns as pandas ``to_string(index=False)`` lays them out: right-aligned, one space apart, and the
    header of a numeric column led by a space."""
    header = [(" " + h) if num else h for h, num in zip(header, numeric)]
    widths = [max([len(h)] + [len(c) for c in col]) for h, col in zip(header, columns)]
    lines = [" ".join(h.rjust(wd) for h, wd in zip(header, widths))]
    for r in range(len(columns[0]) if columns else 0):
        lines.append(" ".join(col[r].rjust(wd) for col, wd in zip(columns, widths)))
    return "\n".join(lines)


def format_table(result: dict) -> str:
    """The global and per-object tables as the official ``evaluation_method.py`` prints them."""
    split = result["split"]
    g = result["global"]
    global_table = _text_table(GLOBAL_COLUMNS, [_format_column([g[c]]) for c in GLOBAL_COLUMNS],
                               [True] * len(GLOBAL_COLUMNS))
    rows = result["objects"]
    seq_table = _text_table(SEQUENCE_COLUMNS, [list(rows),
                                               _format_column([r["J_mean"] for r in rows.values()]),
                                               _format_column([r["F_mean"] for r in rows.values()])],
                            [False, True, True])
    return (f"--------------------------- Global results for {split} ---------------------------\n"
            f"{global_table}\n\n"
            f"---------- Per sequence results for {split} ----------\n"
            f"{seq_table}")
