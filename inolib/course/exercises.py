"""The lessons' exercises: their reference answers, the inputs the learner does not see, the check that compares a
learner's function with the reference, and the student edition of the lessons (``make student``)."""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

SOLUTION_TAG = "solution"


# -- comparing a result with the reference ------------------------------------------------------------------------

def _numbers(x: Any) -> torch.Tensor | None:
    """``x`` as a float64 tensor (numbers, arrays, tensors, nested lists of them), or None when it is not numbers."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    if isinstance(x, (str, bytes, dict)) or x is None or x is ...:
        return None
    try:
        return torch.as_tensor(np.asarray(x, dtype=np.float64) if isinstance(x, np.ndarray) else x,
                               dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return None


def _kind(x: Any) -> str:
    """``bool``, ``integer`` or ``float``: what kind of numbers ``x`` holds."""
    dtype = getattr(x, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return "bool" if dtype == torch.bool else ("float" if dtype.is_floating_point or dtype.is_complex
                                                   else "integer")
    if isinstance(dtype, np.dtype):
        return "bool" if dtype.kind == "b" else ("integer" if dtype.kind in "iu" else "float")
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, int):
        return "integer"
    if isinstance(x, (list, tuple)) and x:
        kinds = {_kind(v) for v in x}
        return "float" if "float" in kinds else ("integer" if "integer" in kinds else "bool")
    return "float"


def _value(v: float, kind: str) -> str:
    if math.isfinite(v) and kind in ("bool", "integer") and v == int(v):
        return str(bool(v)) if kind == "bool" else str(int(v))
    return f"{v:.8g}"


def _shape_text(shape: tuple) -> str:
    return f"{tuple(shape)}" + (" (a single number)" if len(shape) == 0 else "")


def compare(got: Any, want: Any, atol: float = 1e-5, rtol: float = 1e-5, where: str = "") -> str | None:
    """None when ``got`` matches ``want`` (numbers to ``atol + rtol * |want|``; tuples, lists and dicts element by
    element), else what differs: the shapes or kinds, or how many values differ, the first differing index and
    both values there."""
    at = f" at {where}" if where else ""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            keys = sorted(map(str, got)) if isinstance(got, dict) else f"a {type(got).__name__}"
            return f"keys{at}: yours {keys}, expected {sorted(map(str, want))}"
        for k in want:
            msg = compare(got[k], want[k], atol, rtol, f"{where}[{k!r}]")
            if msg:
                return msg
        return None
    want_t = _numbers(want)
    if want_t is None:
        if isinstance(want, (list, tuple)):
            if not isinstance(got, (list, tuple)) or len(got) != len(want):
                n = len(got) if isinstance(got, (list, tuple)) else f"a {type(got).__name__}"
                return f"length{at}: yours {n}, expected {len(want)}"
            for i, (g, w) in enumerate(zip(got, want)):
                msg = compare(g, w, atol, rtol, f"{where}[{i}]")
                if msg:
                    return msg
            return None
        return None if got == want else f"value{at}: yours {got!r}, expected {want!r}"
    got_t = _numbers(got)
    if got_t is None:
        return f"your result{at} (a {type(got).__name__}) cannot be read as numbers"
    if got_t.shape != want_t.shape:
        return f"shape{at}: yours {_shape_text(got_t.shape)}, expected {_shape_text(want_t.shape)}"
    bad = ~torch.isclose(got_t, want_t, rtol=rtol, atol=atol, equal_nan=True)
    n = int(bad.sum())
    if n == 0:
        return None
    gk, wk = _kind(got), _kind(want)
    kinds = f" (yours holds {gk} values, the reference {wk} ones)" if gk != wk else ""
    if want_t.dim() == 0:
        return f"the value{at} differs: yours {_value(float(got_t), gk)}, expected {_value(float(want_t), wk)}{kinds}"
    idx = tuple(torch.nonzero(bad)[0].tolist())
    shown = f"{idx[0]}" if len(idx) == 1 else f"{idx}"
    tol = f" (tolerance {atol:g})" if wk == "float" else ""
    return (f"{n} of {want_t.numel()} values{at} differ{tol}; the first at index {shown}: "
            f"yours {_value(float(got_t[idx]), gk)}, expected {_value(float(want_t[idx]), wk)}{kinds}")


def describe(args: tuple) -> str:
    """A short description of a function's arguments: tensor shapes, small values, type names."""
    def one(x):
        if isinstance(x, torch.Tensor):
            return f"{str(x.dtype).replace('torch.', '')} tensor {tuple(x.shape)}" if x.dim() else f"{x.item():g}"
        if isinstance(x, np.ndarray):
            return f"{x.dtype} array {x.shape}"
        if isinstance(x, (bool, int, float, str)) or x is None:
            return repr(x)
        if isinstance(x, dict):
            return "dict with keys " + ", ".join(map(str, list(x)[:6])) + (", ..." if len(x) > 6 else "")
        if isinstance(x, (list, tuple)) and len(x) <= 6 and all(isinstance(v, (int, float)) for v in x):
            return repr(x)
        if isinstance(x, (list, tuple)):
            return f"{type(x).__name__} of {len(x)}"
        return type(x).__name__
    return ", ".join(one(a) for a in args)


def _copy(x: Any) -> Any:
    """A copy the learner's function may change in place without touching the reference's input."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, (list, tuple)):
        return type(x)(_copy(v) for v in x)
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    return x  # networks, configs: read only


def _where(fn: Callable, e: Exception) -> str:
    """`` (line N: code)``, the last line of ``fn``'s own file that the error passed through, or ``""``."""
    code = getattr(fn, "__code__", None)
    frames = [f for f in traceback.extract_tb(e.__traceback__) if code and f.filename == code.co_filename]
    return f" (line {frames[-1].lineno}: {frames[-1].line.strip()})" if frames and frames[-1].line else ""


def run_check(fn: Callable, reference: Callable, inputs: list[tuple], atol: float = 1e-5,
              rtol: float = 1e-5) -> bool | None:
    """Run ``fn`` and ``reference`` on each argument tuple of ``inputs`` (the first one the lesson shows, the others
    hidden) and print one line: correct, not attempted yet (``fn`` raises NotImplementedError or returns ``...``;
    returns None), or what differs on the first input where it differs (returns False)."""
    with torch.random.fork_rng(devices=[]):  # the check leaves the lesson's random state as it found it
        for i, args in enumerate(inputs):
            which = "the lesson's input" if i == 0 else f"hidden input {i + 1} of {len(inputs)} ({describe(args)})"
            want = reference(*args)
            try:
                got = fn(*_copy(args))
            except NotImplementedError:
                got = ...
            except Exception as e:  # noqa: BLE001  (the learner's bug, reported rather than raised)
                print(f"not yet, on {which}: your function raised {type(e).__name__}: {e}{_where(fn, e)}")
                return False
            if got is ...:
                print("exercise not attempted yet: fill in the function above and run this cell again")
                return None
            msg = compare(got, want, atol, rtol)
            if msg:
                print(f"not yet, on {which}: {msg}")
                return False
    hidden = len(inputs) - 1
    print("correct!" + (f" (on the lesson's input and {hidden} hidden one{'s' * (hidden > 1)})" if hidden else ""))
    return True


# -- the exercises -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Exercise:
    """One exercise: ``reference(*args)`` is the answer, ``hidden(*args)`` the argument tuples the lesson never
    shows (built from the lesson's own arguments where they need its data or network), ``atol`` the tolerance."""

    reference: Callable
    hidden: Callable[..., list[tuple]]
    atol: float = 1e-5


def _rand(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _uniform(seed: int, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _gap_closed(score, baseline) -> float:
    return (float(score) - float(baseline)) / (1.0 - float(baseline))


def _frames_lost(J, threshold) -> int:
    return int((torch.as_tensor(J)[1:] < threshold).sum())


def _box_size(H, W, s, r) -> tuple[int, int]:
    a = s * H * W
    return round(math.sqrt(a / r)), round(math.sqrt(a * r))


def _share_inputs(*_):
    mask = torch.zeros(30, 40, dtype=torch.uint8)
    mask[8:20, 10:25] = 1
    mask[2:4, 35:39] = 3  # a second id: nonzero is object
    boxes = torch.tensor([[0, 0, 30, 40], [5, 5, 10, 10], [20, 30, 10, 10], [0, 30, 6, 10], [10, 12, 1, 1]])
    return [(mask, boxes), (mask[:, :20] == 1, boxes[1:2])]


def _frame_grid(H, W, s, p=8) -> tuple[int, int]:
    from ..vos.propagation import FrameSize

    size = FrameSize.for_frame(H, W, s, p, patch=p)
    return size.height // p, size.width // p


def _tokens(H, W, s, p) -> int:
    h, w = _frame_grid(H, W, s, p)
    return h * w + 1


def _center(c, z, m) -> torch.Tensor:
    from ..center import Center

    ctr = Center(c.shape[-1], momentum=m)
    ctr.cls.copy_(c)
    ctr.update(z)
    return ctr.cls


def _batch_entropy(z, c, t) -> float:
    from ..run.trainer import collapse_monitors

    return collapse_monitors(z, c, t)["batch_entropy"]


def _reference_out(sg, sl, tg, c) -> torch.Tensor:
    from .. import config
    from ..losses import INOLoss

    crit = INOLoss(config.LossConfig(out_weighting="reference", mim=False, aff=False), c.shape[-1])
    crit.center.cls.copy_(c)
    return crit({"cls_global": sg, "cls_local": sl}, {"cls_global": tg}, update_center=False)["out"]


def _num_masked(H, W, ps, r) -> int:
    from ..masking import random_mask

    return int(random_mask(1, 1, (H // ps, W // ps), (r, r), 1.0).sum())


def _mim_inputs(*_):
    m1 = _uniform(31, 1, 3, 5) < 0.5
    m1[:, 0] = False  # a frame without masked tokens
    m1[0, 1, 0] = True
    return [(_rand(32, 1, 3, 5, 8), _rand(33, 1, 3, 5, 8), m1, _rand(34, 1, 8, scale=0.1)),
            (_rand(35, 3, 2, 4, 8), _rand(36, 3, 2, 4, 8), torch.ones(3, 2, 4, dtype=torch.bool), torch.zeros(1, 8))]


def _prepare_tokens(vit, x, m) -> torch.Tensor:
    with torch.no_grad():
        return vit.prepare_tokens(x, m)


def _tokens_inputs(vit, *_):
    p = vit.patch_embed.patch_size
    p = p[0] if isinstance(p, tuple) else p
    return [(vit, _rand(61, 1, 3, 6 * p, 4 * p), torch.ones(1, 24, dtype=torch.bool)),
            (vit, _rand(62, 3, 3, 2 * p, 3 * p), _uniform(63, 3, 6) < 0.3)]


def _affinity(a, b) -> torch.Tensor:
    from ..losses import affinity

    return affinity(torch.stack([a, b])[None])[0, 0]


def _aff_loss(s, t, ts, tt) -> torch.Tensor:
    from ..losses import aff_loss

    return aff_loss(s[None], t[None], torch.ones(1, *s.shape[:2], dtype=torch.bool), ts, tt)


def _row_mass_inputs(*_):
    rows, cols = _uniform(71, 12) < 0.4, _uniform(72, 15) < 0.3
    rows[0] = True
    return [(_rand(73, 12, 15, scale=0.3), 0.1, rows, cols), (_rand(74, 5, 5), 1.0, torch.ones(5, dtype=torch.bool),
                                                              torch.arange(5) == 2)]


def _l_ino(record, M) -> float:
    out = (2 * record["g2g"] + 4 * M * record["l2g"]) / (2 + 4 * M)
    return out + record["mim"] + record["aff"]


def _record(M: int, g2g: float, l2g: float, mim: float, aff: float, with_loss: bool = True) -> dict:
    out = (2 * g2g + 4 * M * l2g) / (2 + 4 * M)
    rec = {"g2g": g2g, "l2g": l2g, "out": out, "mim": mim, "aff": aff, "masked": int(mim > 0)}
    if with_loss:
        rec["loss"] = out + mim + aff
    return rec


def _local_crops(record) -> float:
    return (2 * record["g2g"] - 2 * record["out"]) / (4 * (record["out"] - record["l2g"]))


def _trainer_steps(num_videos, clips_per_video, world_size, batch) -> int:
    from .. import config
    from ..run import launch

    cfg = config.override(config.charades(), {"crops.clips_per_video": str(clips_per_video),
                                              "optim.batch_size_per_gpu": str(batch)})
    return launch.run_size(cfg, num_videos, world_size)["steps_per_epoch"]


def _memory(cfg, act, batch) -> float:
    from ..run import launch

    return launch.memory_estimate(cfg, act, batch)["total"]


def _memory_inputs(cfg, act, batch):
    from .. import config

    return [(cfg, act // 3 + 1, batch + 3), (config.tiny(), 50_000_000, 2)]


def _steps_lost(crash_step, save_every, steps_per_epoch) -> int:
    last = 0  # replays the saving rule step by step
    for s in range(1, crash_step + 1):
        if s % save_every == 0 or s % steps_per_epoch == 0:
            last = s
    return crash_step - last


def _jaccard(a, b) -> float:
    from ..vos.metrics import jaccard

    return float(jaccard(a, b))


def _context(t, num_context) -> list[int]:
    from ..vos.propagation import context_indices

    return context_indices(t, 0, num_context)


def _window(g, c, r) -> torch.Tensor:
    from ..vos.propagation import window_mask

    return window_mask(g, r, rows=torch.tensor([c]))[0]


def _overlay(image, ids, palette, alpha) -> torch.Tensor:
    from ..vos.writers import blend_ids

    img = np.asarray(torch.as_tensor(image, dtype=torch.float64))
    return torch.from_numpy(blend_ids(img, torch.as_tensor(ids), np.asarray(palette), alpha))


def _overlay_inputs(*_):
    from ..data.vos_datasets import davis_palette

    image = _uniform(111, 5, 7, 3)
    ids = torch.tensor([0, 1, 2, 3, 255])[(_uniform(112, 5, 7) * 5).long()].to(torch.uint8)  # objects, background, void
    void = torch.full((6, 4), 255, dtype=torch.uint8)
    void[1:3, 1:3] = 7
    return [(image, ids, davis_palette(), 0.3), (_uniform(113, 6, 4, 3), void, davis_palette(), 1.0)]


def _box_mask(H, W, cx, cy, w, h) -> torch.Tensor:
    from ..data.user_video import shape_mask

    return torch.from_numpy(shape_mask(H, W, {1: {"shape": "box", "cx": cx, "cy": cy, "w": w, "h": h}}))


def _box_excess(m, b) -> float:
    return float(((b != 0) & (m == 0)).sum() / (b != 0).sum())


def _excess_inputs(*_):
    m = torch.zeros(12, 9, dtype=torch.uint8)
    m[3:9, 2:6] = 2  # object id 2
    b = torch.zeros(12, 9, dtype=torch.uint8)
    b[2:10, 1:8] = 1
    return [(m, b), (m, (m > 0).to(torch.uint8))]


def _lazy(module: str, name: str) -> Callable:
    """``module.name`` imported when first called (the registry imports nothing heavy up front)."""
    def call(*args):
        import importlib

        return getattr(importlib.import_module(module, __package__), name)(*args)
    call.__name__ = name
    return call


_pairs = _lazy("..losses", "frame_pairs")

EXERCISES: dict[str, Exercise] = {
    # 00 overview
    "00.1": Exercise(_gap_closed, lambda *_: [(0.3, 0.5), (0.72, 0.64)]),
    "00.2": Exercise(_lazy("..vos.propagation", "query_weights"),
                     lambda *_: [(_uniform(1, 12) * 2 - 1, 4, 0.07), (_uniform(2, 6) * 2 - 1, 1, 0.1)]),
    "00.3": Exercise(_frames_lost, lambda *_: [(torch.tensor([0.2, 0.9, 0.1, 0.6, 0.3, 0.5]), 0.5),
                                              (_uniform(3, 40), 0.3)]),
    # 01 data and crops
    "01.1": Exercise(_lazy("..data.video", "resample_indices"),
                     lambda *_: [(1001, 29.97, 8.0), (20, 5.0, 8.0)]),
    "01.2": Exercise(_box_size, lambda *_: [(256, 340, 0.3, 0.75), (96, 96, 0.05, 2.0)]),
    "01.3": Exercise(_lazy("..augment", "object_share"), _share_inputs),
    # 02 ViT tokens
    "02.1": Exercise(_tokens, lambda *_: [(1280, 720, 480, 8), (500, 375, 224, 16)]),
    "02.2": Exercise(_lazy(".vit_tokens", "pos_similarity"), lambda *_: [(_rand(21, 4, 7, 16), 2, 6),
                                                                          (_rand(22, 1, 5, 8), 0, 0)]),
    "02.3": Exercise(_lazy(".vit_tokens", "colour_share"),
                     lambda *_: [(_uniform(23, 40, 3) @ _rand(24, 3, 6) + _rand(25, 40, 6, scale=0.5),
                                  _uniform(23, 40, 3))], atol=1e-4),
    # 03 self-distillation
    "03.1": Exercise(lambda z, t: torch.softmax(z / t, dim=0),
                     lambda *_: [(_rand(11, 10, scale=2.0), 0.1), (torch.tensor([50.0, 49.5, 48.0]), 0.04)]),
    "03.2": Exercise(_center, lambda *_: [(_rand(12, 1, 16), _rand(13, 7, 16), 0.996)]),
    "03.3": Exercise(_batch_entropy, lambda *_: [(_rand(14, 6, 32, scale=3.0), _rand(15, 1, 32), 0.1)], atol=1e-4),
    # 04 out g2g
    "04.1": Exercise(_pairs, lambda *_: [(2,), (8,)]),
    "04.2": Exercise(lambda s, t, c: _lazy("..losses", "g2g_loss")(s, t, c, 0.1, 0.04),
                     lambda *_: [(_rand(41, 3, 4, 16), _rand(42, 3, 4, 16), _rand(43, 1, 16)),
                                 (_rand(44, 2, 6, 8, scale=2.0), _rand(45, 2, 6, 8), torch.zeros(1, 8))], atol=1e-4),
    "04.3": Exercise(_lazy(".out_view", "match_probs"), lambda *_: [(_rand(46, 5, 12), _rand(47, 7, 12))]),
    # 05 out l2g
    "05.1": Exercise(lambda L, M: (2 * (L // 2), 4 * M * (L // 2)), lambda *_: [(6, 4), (2, 10)]),
    "05.2": Exercise(lambda s, t, c: _lazy("..losses", "l2g_loss")(s, t, c, 0.1, 0.04),
                     lambda *_: [(_rand(51, 2, 4, 3, 16), _rand(52, 2, 4, 16), _rand(53, 1, 16)),
                                 (_rand(54, 1, 2, 5, 8), _rand(55, 1, 2, 8), torch.zeros(1, 8))], atol=1e-4),
    "05.3": Exercise(_reference_out, lambda *_: [(_rand(56, 2, 4, 16), _rand(57, 2, 4, 3, 16), _rand(58, 2, 4, 16),
                                                  _rand(59, 1, 16)),
                                                 (_rand(50, 1, 2, 8), _rand(49, 1, 2, 1, 8), _rand(48, 1, 2, 8),
                                                  torch.zeros(1, 8))], atol=1e-4),
    # 06 in MIM
    "06.1": Exercise(_num_masked, lambda *_: [(96, 176, 8, 0.45), (224, 224, 16, 0.1)]),
    "06.2": Exercise(lambda s, t, m, c: _lazy("..losses", "mim_loss")(s, t, m, c, 0.1, 0.04), _mim_inputs,
                     atol=1e-4),
    "06.3": Exercise(_prepare_tokens, _tokens_inputs),
    # 07 in aff
    "07.1": Exercise(_affinity, lambda *_: [(_rand(75, 5, 8, scale=3.0), _rand(76, 5, 8)),
                                            (_rand(77, 1, 4), _rand(78, 1, 4))]),
    "07.2": Exercise(_aff_loss, lambda *_: [(_rand(79, 3, 6, 8), _rand(80, 3, 6, 8), 0.2, 0.05),
                                            (_rand(81, 2, 4, 4), _rand(82, 2, 4, 4), 0.1, 0.04)], atol=1e-4),
    "07.3": Exercise(_lazy("..losses", "row_mass"), _row_mass_inputs),
    # 08 training on a laptop
    "08.1": Exercise(_l_ino, lambda *_: [(_record(8, 5.1, 6.3, 4.2, 2.0, with_loss=False), 8),
                                         (_record(2, 3.0, 4.5, 0.0, 0.0, with_loss=False), 2)]),
    "08.2": Exercise(_lazy("..schedules", "cosine_schedule"), lambda *_: [(0.04, 0.4, 30, 0), (0.996, 1.0, 12, 3)]),
    "08.3": Exercise(_local_crops, lambda *_: [(_record(6, 3.0, 5.0, 4.0, 1.5),), (_record(2, 7.25, 6.5, 0.0, 0.0),)],
                     atol=1e-3),
    # 09 training on GPUs
    "09.1": Exercise(_trainer_steps, lambda *_: [(7985, 5, 3, 4), (100, 3, 7, 2)]),
    "09.2": Exercise(_memory, _memory_inputs),
    "09.3": Exercise(_steps_lost, lambda *_: [(1234, 500, 75), (7, 500, 75)]),
    # 10 label propagation
    "10.1": Exercise(_jaccard, lambda *_: [(torch.zeros(3, 3, dtype=torch.bool), torch.zeros(3, 3, dtype=torch.bool)),
                                           (_uniform(101, 8, 9) > 0.3, _uniform(102, 8, 9) > 0.6)]),
    "10.2": Exercise(_context, lambda *_: [(4, 10), (30, 3)]),
    "10.3": Exercise(_window, lambda *_: [((10, 7), 0, 2), ((10, 7), 69, 3)]),
    # 11 your own video
    "11.1": Exercise(_overlay, _overlay_inputs),
    "11.2": Exercise(_box_mask, lambda *_: [(20, 30, 0.3, 0.6, 0.4, 0.2), (7, 9, 0.5, 0.5, 1.0, 1.0)]),
    "11.3": Exercise(_box_excess, _excess_inputs),
}


def check(fn: Callable, exercise: str, *args, atol: float | None = None) -> bool | None:
    """Check a learner's ``fn`` for ``exercise`` (``"04.2"``: lesson 04, exercise 2) on the lesson's ``args`` and
    on the exercise's hidden inputs; prints one line, returns True, False, or None while not attempted."""
    if exercise not in EXERCISES:
        raise KeyError(f"no exercise {exercise!r}; the exercises are {', '.join(EXERCISES)}")
    ex = EXERCISES[exercise]
    return run_check(fn, ex.reference, [args, *ex.hidden(*args)], atol=ex.atol if atol is None else atol)


# -- the student edition -------------------------------------------------------------------------------------------

_SOLUTIONS_LINE = re.compile(r"(?i)(the\s+)?solutions\s+are\s+in\s+the\s+collapsed\s+cells(\s+\(click\s+the\s+three"
                             r"\s+dots\))?")
STUDENT_NOTE = ("*Student edition: the solution cells of the exercises are left out. Each check still runs your "
                "function on the lesson's input and on inputs you do not see.*")


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def student_notebook(nb: dict) -> dict:
    """The notebook ``nb`` (nbformat JSON) without its solution cells (tagged ``solution``), with a note under the
    title, cells numbered as nbstripout does. ValueError when a solution is left in a cell without the tag."""
    nb = copy.deepcopy(nb)
    cells = []
    for cell in nb["cells"]:
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        src = "".join(cell["source"])
        if cell["cell_type"] == "code" and re.search(r"^\s*def \w+_solution\(", src, re.M):
            raise ValueError(f"a solution outside a cell tagged {SOLUTION_TAG!r}: {src.splitlines()[0]!r}")
        if cell["cell_type"] == "markdown" and _SOLUTIONS_LINE.search(src):
            src = _SOLUTIONS_LINE.sub(lambda m: ("S" if m.group(0)[0].isupper() else "s")
                                      + "olutions are not in this student edition", src)
            cell = {**cell, "source": _lines(src)}
        cells.append(cell)
    cells.insert(1, {"cell_type": "markdown", "id": "", "metadata": {}, "source": [STUDENT_NOTE]})
    for i, cell in enumerate(cells):
        cell["id"] = str(i)  # numbered in order, as nbstripout leaves them
    nb["cells"] = cells
    return nb


def write_student_edition(notebooks: str | Path, out: str | Path) -> list[Path]:
    """Write the student edition of every lesson in ``notebooks`` into ``out`` (each file under a temporary name,
    then renamed); refuses to write into ``notebooks`` itself. Returns the written paths."""
    src, dst = Path(notebooks).resolve(), Path(out).resolve()
    if dst == src or src in dst.parents:
        raise ValueError(f"the student edition goes outside the lessons' folder {src}, not into {dst}")
    lessons = sorted(src.glob("[0-9][0-9]_*.ipynb"))
    if not lessons:
        raise FileNotFoundError(f"no lessons (NN_name.ipynb) in {src}")
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for path in lessons:
        nb = student_notebook(json.loads(path.read_text(encoding="utf-8")))
        target = dst / path.name
        tmp = target.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inolib.course.exercises",
                                     description="Write the student edition of the lessons (no solution cells).")
    parser.add_argument("--notebooks", default="notebooks", help="the lessons (default: notebooks)")
    parser.add_argument("--out", default="build/student", help="where to write them (default: build/student)")
    a = parser.parse_args(argv)
    try:
        paths = write_student_edition(a.notebooks, a.out)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} student notebooks to {Path(a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
