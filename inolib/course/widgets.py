"""Interactive explorers for the course (the only module that imports ipywidgets).

Each explorer is an ``ipywidgets.VBox`` of core widgets (sliders with ``continuous_update=False``,
toggles) above an ``Output`` whose content is replaced in one step by each redraw. ``explorer.render()``
returns the current ``Figure`` (also kept as ``explorer.figure``), so tests drive explorers without a
browser by setting widget values.
"""

from __future__ import annotations

import ipywidgets as W
import torch

from . import viz
from ..config import MaskConfig
from ..losses import affinity
from ..masking import make_mask
from .vit_tokens import fraction_cell


class Explorer(W.VBox):
    """Controls above a figure; subclasses implement :meth:`draw` returning a matplotlib Figure."""

    def __init__(self, controls: list[W.Widget], title: str = ""):
        self.out = W.Output()
        self.figure = None
        self.info = W.HTML()
        header = [W.HTML(f"<b>{title}</b>")] if title else []
        super().__init__(header + [W.HBox(controls, layout=W.Layout(flex_flow="row wrap")), self.info, self.out])
        for c in controls:
            c.observe(lambda _change: self.render(), names="value")

    def draw(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def render(self):
        self.figure = self.draw()
        self.out.outputs = (_display_data(self.figure),)
        return self.figure


def _display_data(obj) -> dict:
    """``obj`` as one Jupyter ``display_data`` output (the image a notebook shows for a Figure).

    Explorers set ``Output.outputs`` to this instead of displaying inside ``with output:`` after
    ``clear_output``: the same picture for a person, and headless runners (nbclient: papermill, nbconvert) do not
    stall, as they do on a figure displayed into an ``Output`` widget that was just cleared (each such cell
    waited out the whole cell timeout).
    """
    from IPython.core.interactiveshell import InteractiveShell

    data, metadata = InteractiveShell.instance().display_formatter.format(obj)
    return {"output_type": "display_data", "data": data, "metadata": metadata}


def _slider(desc: str, lo, hi, value, step=1, float_=False):
    cls = W.FloatSlider if float_ else W.IntSlider
    return cls(description=desc, min=lo, max=hi, value=value, step=step, continuous_update=False,
               style={"description_width": "initial"})


class AffinityExplorer(Explorer):
    """Pick a query patch in frame t; see its affinity row over frame t+1 and the whole matrix (L_in_aff, Sec. 3.3).

    ``frame_a``, ``frame_b``: (3, H, W), uint8 or normalised with ``mean``/``std``. ``student``, ``teacher``:
    patch features or logits, (2, N, C) each (frames t, t+1), N = h*w of ``grid``; temperatures as in Sec. 4.4.
    ``names`` label the two sets; ``extra`` {label: (2, N, C)} adds more (each at ``teacher_temp``);
    ``query`` is the first (row, col), default the centre.
    """

    def __init__(self, frame_a, frame_b, student, teacher, grid, student_temp=0.1, teacher_temp=0.04,
                 mean=None, std=None, names=("student", "teacher"), extra=None, query=None):
        self.frames, self.grid, self.norm = (frame_a, frame_b), grid, (mean, std)
        extra = dict(extra or {})
        if len(names) != 2 or names[0] == names[1] or set(names) & set(extra):
            raise ValueError(f"names must be two different labels, not among extra's, got {names!r}")
        s_name, t_name = names
        self.aff = {s_name: affinity(student[None])[0, 0], t_name: affinity(teacher[None])[0, 0]}  # (N, N)
        self.default_temp = {s_name: student_temp, t_name: teacher_temp}
        for name, feats in extra.items():
            self.aff[name] = affinity(feats[None])[0, 0]
            self.default_temp[name] = teacher_temp
        h, w = grid
        r0, c0 = query if query is not None else (h // 2, w // 2)
        if not (0 <= r0 < h and 0 <= c0 < w):
            raise ValueError(f"query must be a (row, col) inside the {h}x{w} grid, got {query!r}")
        self.row = _slider("query row", 0, h - 1, r0)
        self.col = _slider("query col", 0, w - 1, c0)
        self.net = W.ToggleButtons(options=[t_name, s_name, *extra], value=t_name)
        self.temp = _slider("temperature", 0.01, 0.3, teacher_temp, step=0.01, float_=True)
        self.net.observe(lambda c: setattr(self.temp, "value", self.default_temp[c["new"]]), names="value")
        super().__init__([self.row, self.col, self.net, self.temp], "Affinity explorer")
        self.render()

    @property
    def query(self) -> int:
        return self.row.value * self.grid[1] + self.col.value

    def draw(self):
        A = torch.softmax(self.aff[self.net.value] / self.temp.value, dim=-1)  # row-stochastic, as in L_in_aff
        p = A[self.query]
        ent = float(-(p * p.clamp_min(1e-12).log()).sum())
        self.info.value = (f"{self.net.value}, tau = {self.temp.value:.2f}: the query's largest weight is "
                           f"{float(p.max()):.3f}, entropy {ent:.2f} nats (uniform: {float(torch.log(torch.tensor(float(p.numel())))):.2f})")
        return viz.show_affinity(*self.frames, A, self.grid, self.query,
                                 title=f"softmax(A / {self.temp.value:.2f}), {self.net.value}",
                                 mean=self.norm[0], std=self.norm[1])


class MaskExplorer(Explorer):
    """Random (released) vs blockwise (paper) masks on an image, by ratio and seed."""

    def __init__(self, image, patch_size: int, mean=None, std=None):
        self.image, self.patch_size, self.norm = image, patch_size, (mean, std)
        self.mode = W.ToggleButtons(options=["random", "block"], value="random")
        self.ratio = _slider("ratio r", 0.05, 0.9, 0.3, step=0.05, float_=True)
        self.seed = _slider("seed", 0, 50, 0)
        super().__init__([self.mode, self.ratio, self.seed], "Mask explorer")
        self.render()

    def draw(self):
        H, W_ = self.image.shape[-2:]
        grid = (H // self.patch_size, W_ // self.patch_size)
        cfg = MaskConfig(mode=self.mode.value, prob=1.0, ratio=(self.ratio.value, self.ratio.value))
        mask = make_mask(cfg, 1, 1, grid, torch.Generator().manual_seed(self.seed.value))[0, 0]
        self.mask = mask
        self.info.value = f"{int(mask.sum())} of {mask.numel()} patches masked ({self.mode.value})"
        return viz.show_patch_grid(self.image, self.patch_size, mask, mean=self.norm[0], std=self.norm[1],
                                   title=f"{self.mode.value} mask, r = {self.ratio.value:.2f}")


class PositionExplorer(Explorer):
    """Move a query position over position tables (h, w, D) of any sizes; see its cosine similarity to every
    position in each (:func:`inolib.course.viz.show_pos_similarity`). The query is a fraction of the grid, so tables of
    different sizes (a learned 8 x 8 table and its resized copies, or two networks' tables) show the same place.

    Args:
        tables: {name: (h, w, D)} e.g. ``{"shipped 8x8": ..., "random 8x8": ..., "shipped 30x53": ...}``.
    """

    def __init__(self, tables: dict):
        if not tables or any(t.dim() != 3 for t in tables.values()):
            raise ValueError("tables must be a non-empty {name: (h, w, D) tensor} dict")
        self.tables = tables
        self.row = _slider("row (fraction)", 0.0, 0.99, 0.5, step=0.05, float_=True)
        self.col = _slider("column (fraction)", 0.0, 0.99, 0.5, step=0.05, float_=True)
        super().__init__([self.row, self.col], "Position explorer")
        self.render()

    def draw(self):
        cells = ", ".join(f"{k}: ({fraction_cell(self.row.value, t.shape[0])}, "
                          f"{fraction_cell(self.col.value, t.shape[1])})" for k, t in self.tables.items())
        self.info.value = f"query cell (row, column) in each table: {cells}"
        return viz.show_pos_similarity(self.tables, queries=[(self.row.value, self.col.value)])


class TemperatureExplorer(Explorer):
    """How the teacher temperature and the center shape the teacher's target distribution.

    Args:
        teacher_logits: (R, K) teacher logits (e.g. class logits of a batch of global crops).
        center: (1, K) the center to subtract when centering is on.
        student_logits: optional (R, K), drawn at the student temperature for comparison.
    """

    def __init__(self, teacher_logits, center, student_logits=None, student_temp: float = 0.1):
        self.t, self.c, self.s, self.student_temp = teacher_logits.float(), center.float(), student_logits, student_temp
        self.temp = _slider("teacher temperature", 0.01, 0.2, 0.04, step=0.01, float_=True)
        self.centering = W.ToggleButtons(options=["centered", "not centered"], value="centered")
        self.row = _slider("sample", 0, teacher_logits.shape[0] - 1, 0)
        super().__init__([self.temp, self.centering, self.row], "Temperature and centering explorer")
        self.render()

    def draw(self):
        logits = self.t - (self.c if self.centering.value == "centered" else 0)
        q = torch.softmax(logits / self.temp.value, dim=-1)  # (R, K)
        ent = -(q * q.clamp_min(1e-12).log()).sum(-1)
        mean_q = q.mean(0)
        self.info.value = (f"entropy of one target: {float(ent[self.row.value]):.2f} nats; of the batch mean: "
                           f"{float(-(mean_q * mean_q.clamp_min(1e-12).log()).sum()):.2f} "
                           f"(uniform {float(torch.log(torch.tensor(float(q.shape[1])))):.2f}); "
                           f"largest mean probability {float(mean_q.max()):.3f}")
        dists = {f"teacher (tau={self.temp.value:.2f})": q[self.row.value], "batch mean": mean_q}
        if self.s is not None:
            dists[f"student (tau={self.student_temp})"] = torch.softmax(self.s[self.row.value].float() / self.student_temp, -1)
        return viz.show_distributions(dists)


class ClipExplorer(Explorer):
    """Pick a video and a clip start; see the clip's frames at 8 fps with their global and local crops."""

    def __init__(self, videos: list, crops_cfg):
        from pathlib import Path

        from ..data.clips import load_clip_views
        from ..data.index import VideoIndex

        self._load, self.cfg = load_clip_views, crops_cfg
        index = VideoIndex.build([Path(v) for v in videos], progress=False)
        self.starts = {Path(e.path).name: max(0, e.num_resampled(crops_cfg.fps) - crops_cfg.clip_len)
                       for e in index.ok}
        self.paths = {Path(e.path).name: e.path for e in index.ok}
        self.video = W.Dropdown(options=list(self.paths), description="video")
        self.start = _slider("clip start", 0, self.starts[self.video.value], 0)
        self.seed = _slider("crop seed", 0, 20, 0)
        self.video.observe(lambda c: setattr(self.start, "max", self.starts[c["new"]]), names="value")
        super().__init__([self.video, self.start, self.seed], "Clip explorer")
        self.render()

    def draw(self):
        v = self._load(self.paths[self.video.value], self.cfg, start=self.start.value, seed=self.seed.value)
        self.views = v
        self.info.value = f"source frames {v['indices'].tolist()} (resampled to {self.cfg.fps:g} fps)"
        return viz.show_clip_crops(v["frames"], v["globals"], v["locals"], v["indices"].tolist())


class PropagationExplorer(Explorer):
    """Step through a propagated video: labels over each frame, the top-k context cells behind a chosen
    cell's label, and (given ground truth) J per frame.

    Args:
        frames: uint8 (T, 3, H, W); pred: ids (T, H, W); feats: (T, D, h, w) the features that were propagated;
        cfg: the :class:`inolib.config.PropagationConfig` used; j_per_frame: optional (T,) J of each frame.
    """

    def __init__(self, frames, pred, feats, cfg, j_per_frame=None, palette=None):
        from ..vos.propagation import context_indices

        self.frames, self.pred, self.feats, self.cfg = frames, pred, feats, cfg
        self.j, self.palette, self._ctx = j_per_frame, palette, context_indices
        T, _, h, w = feats.shape
        self.grid = (h, w)
        self.t = _slider("frame", 1, T - 1, min(T - 1, 5))
        self.row = _slider("cell row", 0, h - 1, h // 2)
        self.col = _slider("cell col", 0, w - 1, w // 2)
        super().__init__([self.t, self.row, self.col], "Propagation explorer")
        self.render()

    def draw(self):
        from ..vos.propagation import query_sources

        t = self.t.value
        idx = self._ctx(t, 0, self.cfg.num_context)
        query = self.row.value * self.grid[1] + self.col.value
        f, cell, weight = query_sources(self.feats[t], self.feats[idx], query, topk=self.cfg.topk,
                                        radius=self.cfg.radius, temperature=self.cfg.temperature)
        sources = [(idx[int(a)], int(b), float(c)) for a, b, c in zip(f, cell, weight)]
        shown = sorted({0, *(s[0] for s in sources)})[:6]
        self.sources = sources
        j = f", J = {float(self.j[t]):.3f}" if self.j is not None else ""
        ctx = f"{idx[0]}" + (f", {idx[1]}..{idx[-1]}" if len(idx) > 1 else "")
        self.info.value = (f"frame {t}: context frames {ctx}; the cell's label comes from "
                           + ", ".join(f"frame {a} ({c:.2f})" for a, _, c in sources) + j)
        return viz.show_propagation_step(self.frames[t], self.pred[t], self.grid, query,
                                         {i: self.frames[i] for i in shown}, sources, self.palette,
                                         None if self.j is None else list(self.j), t)


class LogExplorer(Explorer):
    """Curves of a training log: pick the terms, smooth them (exponential moving average), steps or epochs.

    Args:
        records: the run's log records (:func:`inolib.run.log.read_log`), or a run folder.
    """

    TERMS = ("loss", "g2g", "l2g", "mim", "aff", "entropy", "batch_entropy", "top_share", "lr", "momentum",
             "jf_student", "jf_teacher", "masked")
    # in-losses exist only on masked steps (masking.prob of them): an unmasked step logs them as 0, which is
    # not a value of the loss, so their curves skip those steps
    MASKED_ONLY = ("mim", "aff")

    def __init__(self, records):
        from ..run.log import read_log

        records = read_log(records) if not isinstance(records, list) else records
        self.records = [r for r in records if "step" in r and "event" not in r]
        if not self.records:
            raise ValueError("the log holds no training step yet")
        present = [k for k in self.TERMS if any(k in r for r in self.records)]
        self.terms = W.SelectMultiple(options=present, value=tuple(k for k in ("g2g", "l2g", "mim", "aff") if k in present),
                                      description="terms", rows=min(6, len(present)))
        self.smooth = _slider("smoothing", 0.0, 0.95, 0.0, step=0.05, float_=True)
        self.axis = W.ToggleButtons(options=["step", "epoch"], value="step")
        super().__init__([self.terms, self.smooth, self.axis], "Training log explorer")
        self.render()

    def smoothed(self, key: str) -> list[dict]:
        """Records of ``key`` after an exponential moving average with factor ``smooth``."""
        out, avg = [], None
        for r in self.records:
            if key in self.MASKED_ONLY and r.get("masked", 1) == 0:
                continue
            if key in r:
                avg = r[key] if avg is None else self.smooth.value * avg + (1 - self.smooth.value) * r[key]
                out.append({"step": r["step"], "epoch": r.get("epoch", 0), key: avg})
        return out

    def draw(self):
        keys = list(self.terms.value)
        rows = [rec for k in keys for rec in self.smoothed(k)]
        last = self.records[-1]
        self.info.value = (f"{len(self.records)} records, last step {last['step']}: "
                           + ", ".join(f"{k} {last[k]:.4g}" for k in keys if k in last))
        return viz.plot_curves(rows, keys, x=self.axis.value)


class Choice(W.VBox):
    """Toggle buttons above one of several widgets, built on demand: ``Choice({"shipped": lambda: ..., ...})``.

    Switching shows the widget of the chosen option (each is built once, on its first selection), so a lesson
    can compare the same explorer on a trained network and on its random initialisation.
    """

    def __init__(self, builders: dict, description: str = "network"):
        if not builders:
            raise ValueError("builders must name at least one option")
        self.builders, self.built = dict(builders), {}
        self.pick = W.ToggleButtons(options=list(self.builders), description=description)
        self.box = W.VBox()
        super().__init__([self.pick, self.box])
        self.pick.observe(lambda change: self.show(change["new"]), names="value")
        self.show(self.pick.value)

    def show(self, name: str):
        """Show (building it if needed) the widget of option ``name``; returns it."""
        if name not in self.built:
            self.built[name] = self.builders[name]()
        self.box.children = [self.built[name]]
        return self.built[name]


def save_upload(upload: "W.FileUpload", folder, suffixes: tuple[str, ...]) -> list:
    """Write the files of a ``FileUpload`` widget into ``folder`` (created; atomically, one file each) and return
    their paths. Only the base name of each upload is used (no folders from the browser), and a name whose
    suffix is not in ``suffixes`` (e.g. ``(".mp4", ".mov")``) is a ValueError naming it."""
    from pathlib import Path

    from ..atomic import atomic_write

    folder = Path(folder)
    files = list(upload.value)
    names = [Path(str(f["name"]).replace("\\", "/")).name for f in files]
    for f, name in zip(files, names):
        if not name or name.startswith(".") or Path(name).suffix.lower() not in suffixes:
            raise ValueError(f"uploaded file {f['name']!r}: expected a name ending in one of {suffixes}")
    same = sorted({n for n in names if names.count(n) > 1})
    if same:  # two files from different folders with one base name would replace each other
        raise ValueError(f"uploaded files share the name {same[0]!r} (from different folders?); rename one and "
                         "upload again")
    paths = []
    for f, name in zip(files, names):
        folder.mkdir(parents=True, exist_ok=True)
        content = bytes(f["content"])
        paths.append(atomic_write(folder / name, lambda tmp, c=content: Path(tmp).write_bytes(c)))
    return paths


class MaskDrawer(Explorer):
    """Draw a rough first-frame mask with shapes: pick an object, a shape, its centre and size; the mask is
    ``drawer.mask`` (uint8 ids (H, W)) and ``drawer.save(path)`` writes it as an indexed PNG.

    Args:
        frame: uint8 (3, H, W) the first frame; objects: how many objects may be drawn (1..10).
        initial: optional ``{object id: shape dict}`` (see :func:`inolib.data.user_video.shape_mask`) to start from.
    """

    def __init__(self, frame: torch.Tensor, objects: int = 3, initial: dict | None = None):
        from ..data.user_video import SHAPES

        if not isinstance(frame, torch.Tensor) or frame.dim() != 3 or frame.shape[0] != 3:
            raise ValueError(f"frame must be a (3, H, W) image, got {getattr(frame, 'shape', type(frame))}")
        if not 1 <= objects <= 10:
            raise ValueError(f"objects must be 1..10, got {objects}")
        self.frame = frame
        self.shapes = {k: dict(v) for k, v in (initial or {1: {"shape": "ellipse", "cx": 0.5, "cy": 0.5,
                                                                "w": 0.3, "h": 0.3}}).items()}
        self.obj = W.Dropdown(options=list(range(1, objects + 1)), value=min(self.shapes), description="object")
        self.kind = W.ToggleButtons(options=list(SHAPES) + ["none"], value=self.shapes[self.obj.value]["shape"])
        first = self.shapes[self.obj.value]
        self.cx = _slider("centre x", 0.0, 1.0, first["cx"], step=0.01, float_=True)
        self.cy = _slider("centre y", 0.0, 1.0, first["cy"], step=0.01, float_=True)
        self.w = _slider("width", 0.01, 1.0, first["w"], step=0.01, float_=True)
        self.h = _slider("height", 0.01, 1.0, first["h"], step=0.01, float_=True)
        self._loading = False
        self.obj.observe(lambda c: self._load(c["new"]), names="value")
        super().__init__([self.obj, self.kind, self.cx, self.cy, self.w, self.h], "Draw the first-frame mask")
        self.render()

    def _load(self, obj: int) -> None:
        d = self.shapes.get(obj)
        self._loading = True  # moving the sliders to this object's shape must not redraw it 5 times
        try:
            self.kind.value = d["shape"] if d else "none"
            for key, sl in (("cx", self.cx), ("cy", self.cy), ("w", self.w), ("h", self.h)):
                if d:
                    sl.value = d[key]
        finally:
            self._loading = False
        self.render()

    @property
    def mask(self) -> torch.Tensor:
        from ..data.user_video import shape_mask

        H, W_ = self.frame.shape[1:]
        return torch.from_numpy(shape_mask(int(H), int(W_), self.shapes))

    def render(self):
        if self._loading:
            return self.figure
        return super().render()

    def draw(self):
        if self.kind.value == "none":
            self.shapes.pop(self.obj.value, None)
        else:
            self.shapes[self.obj.value] = {"shape": self.kind.value, "cx": self.cx.value, "cy": self.cy.value,
                                           "w": self.w.value, "h": self.h.value}
        try:
            m = self.mask
            self.info.value = f"objects {sorted(self.shapes)}; {int((m > 0).sum())} pixels labelled"
        except ValueError as e:  # a shape that covers no pixel: say so here, and save() refuses it
            m = torch.zeros(self.frame.shape[1:], dtype=torch.uint8)
            self.info.value = f"not saved as it is: {e}"
        return viz.show_propagation(self.frame[None], m[None], titles=["first frame with the drawn mask"], cols=1)

    def save(self, path):
        """Write the mask as an indexed PNG (the DAVIS palette) at ``path``; returns the path."""
        from ..vos.writers import write_ids_png

        if not self.shapes:
            raise ValueError("the mask holds no object: draw at least one shape")
        return write_ids_png(path, self.mask)
