"""Explorers redraw when their controls change (driven without a browser)."""

import matplotlib

matplotlib.use("Agg")

import ipywidgets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from inolib.course import widgets  # noqa: E402


def test_affinity_explorer_follows_query_network_and_temperature():
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 255, (2, 3, 32, 48), dtype=torch.uint8, generator=g)
    s, t = torch.randn(2, 24, 16, generator=g), torch.randn(2, 24, 16, generator=g)
    ex = widgets.AffinityExplorer(frames[0], frames[1], s, t, (4, 6))
    first = ex.figure
    assert ex.query == 2 * 6 + 3 and "teacher" in ex.info.value
    ex.col.value = 0
    assert ex.query == 12 and ex.figure is not first
    ex.net.value = "student"
    assert ex.temp.value == 0.1 and "student" in ex.info.value
    before = ex.info.value
    ex.temp.value = 0.3
    assert ex.info.value != before


def test_mask_explorer_counts_follow_ratio_and_mode():
    img = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    ex = widgets.MaskExplorer(img, 8)
    assert int(ex.mask.sum()) == int(0.3 * 64)
    ex.ratio.value = 0.5
    assert int(ex.mask.sum()) == 32
    ex.mode.value = "block"
    assert 0 < int(ex.mask.sum()) <= 32 and "block" in ex.info.value


def test_temperature_explorer_sharpens_and_centering_matters():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 50, generator=g)
    logits[:, 3] += 5  # one dimension dominates every sample: what centering removes
    ex = widgets.TemperatureExplorer(logits, logits.mean(0, keepdim=True), student_logits=torch.randn(8, 50))
    centered = ex.info.value
    ex.centering.value = "not centered"
    assert ex.info.value != centered
    largest = lambda: float(ex.info.value.rsplit(" ", 1)[-1])
    collapsed = largest()
    ex.centering.value = "centered"
    assert largest() < collapsed  # without centering the batch mean piles onto dimension 3


def test_propagation_explorer_follows_frame_and_cell():
    from inolib.config import PropagationConfig

    g = torch.Generator().manual_seed(0)
    T = 14
    frames = torch.randint(0, 255, (T, 3, 48, 64), dtype=torch.uint8, generator=g)
    pred = torch.randint(0, 2, (T, 48, 64), dtype=torch.uint8, generator=g)
    feats = torch.randn(T, 16, 6, 8, generator=g)
    ex = widgets.PropagationExplorer(frames, pred, feats, PropagationConfig(radius=2), j_per_frame=torch.rand(T))
    assert len(ex.sources) == 5 and all(f < ex.t.value for f, _, _ in ex.sources)
    ex.t.value = 13
    assert "context frames 0, 3..12" in ex.info.value  # first frame + the 10 previous
    before = ex.sources
    ex.col.value = 0
    assert ex.sources != before and all(cell % 8 <= 2 for _, cell, _ in ex.sources)  # inside the radius-2 window


def test_log_explorer_smooths_and_switches_terms(tmp_path):
    import json

    from inolib.course.widgets import LogExplorer

    recs = [{"step": i, "epoch": 1 + i // 5, "loss": float(i % 2), "mim": 1.0} for i in range(1, 11)]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in [{"event": "start"}] + recs))
    ex = LogExplorer(tmp_path)
    assert len(ex.records) == 10 and ex.terms.value == ("mim",)  # opens on the four losses (here only mim)
    raw = [r["loss"] for r in ex.smoothed("loss")]
    ex.smooth.value = 0.9
    smooth = [r["loss"] for r in ex.smoothed("loss")]
    assert max(raw) - min(raw) == 1.0 and max(smooth[2:]) - min(smooth[2:]) < 0.5  # the zigzag flattens
    ex.terms.value = ("mim",)
    assert [line.get_label() for line in ex.figure.axes[0].lines] == ["mim"]
    ex.axis.value = "epoch"
    assert ex.figure.axes[0].get_xlabel() == "epoch"


def test_log_explorer_in_losses_skip_unmasked_steps(tmp_path):
    """An unmasked step logs mim and aff as 0 (they do not exist there): the curves skip those steps instead of
    jumping between 0 and the loss, and the explorer opens on the four losses, not on their jumping sum."""
    from inolib.course.widgets import LogExplorer

    recs = [{"step": i, "masked": float(i % 2), "loss": 3.0 + 9 * (i % 2), "g2g": 2.0, "l2g": 1.0,
             "mim": 5.0 * (i % 2), "aff": 4.0 * (i % 2)} for i in range(10)]
    ex = LogExplorer(recs)
    assert ex.terms.value == ("g2g", "l2g", "mim", "aff")
    assert [r["mim"] for r in ex.smoothed("mim")] == [5.0] * 5 and [r["step"] for r in ex.smoothed("aff")] == [1, 3, 5, 7, 9]
    assert len(ex.smoothed("g2g")) == 10
    line = {ln.get_label(): ln for ln in ex.figure.axes[0].lines}["mim"]
    assert min(line.get_ydata()) == 5.0


def test_affinity_explorer_compares_two_named_feature_sets():
    g = torch.Generator().manual_seed(3)
    frames = torch.randint(0, 255, (2, 3, 32, 48), dtype=torch.uint8, generator=g)
    a, b = torch.randn(2, 24, 8, generator=g), torch.randn(2, 24, 8, generator=g)
    ex = widgets.AffinityExplorer(frames[0], frames[1], a, b, (4, 6), 0.1, 0.1, names=("shipped", "random init"))
    assert list(ex.net.options) == ["random init", "shipped"]
    first = ex.info.value
    ex.net.value = "shipped"
    assert "shipped" in ex.info.value and ex.info.value != first
    with pytest.raises(ValueError, match="names"):
        widgets.AffinityExplorer(frames[0], frames[1], a, b, (4, 6), names=("x", "x"))


def test_choice_builds_each_option_once_and_shows_the_chosen_one():
    calls = []

    def make(name):
        def build():
            calls.append(name)
            return ipywidgets.HTML(name)
        return build

    c = widgets.Choice({"shipped": make("shipped"), "random init": make("random init")})
    assert calls == ["shipped"] and c.box.children[0].value == "shipped"
    c.pick.value = "random init"
    c.pick.value = "shipped"
    assert calls == ["shipped", "random init"] and c.box.children[0].value == "shipped"
    with pytest.raises(ValueError):
        widgets.Choice({})


def test_explorer_output_holds_one_figure_per_render():
    """Each redraw replaces the Output's content with the one current figure (not appended, not cleared later)."""
    img = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    ex = widgets.MaskExplorer(img, 8)
    ex.ratio.value = 0.5
    ex.mode.value = "block"
    assert len(ex.out.outputs) == 1
    assert ex.out.outputs[0]["output_type"] == "display_data" and "text/plain" in ex.out.outputs[0]["data"]


def test_a_lesson_with_an_explorer_runs_headless_without_stalling(tmp_path):
    """nbclient (what papermill and nbconvert --execute use) ran lesson 00 with a stall after its explorer cell:
    a figure displayed into a just-cleared Output widget left the runner waiting out each cell's whole timeout.
    Now no gap between cells comes near the timeout, and the explorer's Output holds its PNG."""
    import datetime as dt
    import os
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    lesson = Path(__file__).resolve().parents[1] / "notebooks" / "01_data_and_crops.ipynb"
    nb = nbformat.read(lesson, as_version=4)
    timeout = 40
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(lesson.parent)}}
                   ).execute(env=dict(os.environ, INOLIB_SMOKE="1"))  # the kernel's environment
    when = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    runs = [c.metadata["execution"] for c in nb.cells if c.cell_type == "code" and "execution" in c.metadata]
    assert len(runs) == sum(c.cell_type == "code" for c in nb.cells)
    gaps = [(when(b["iopub.status.busy"]) - when(a["shell.execute_reply"])).total_seconds()
            for a, b in zip(runs, runs[1:])]
    assert max(gaps) < timeout / 4, f"a gap of {max(gaps):.1f} s between cells (the cell timeout is {timeout} s)"
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    outputs = [o for m in state.values() if m["model_name"] == "OutputModel" for o in m["state"].get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_shape_mask_draws_boxes_and_ellipses_in_fractions_of_the_frame():
    import numpy as np

    from inolib.data.user_video import shape_mask

    m = shape_mask(10, 20, {1: {"shape": "box", "cx": 0.25, "cy": 0.5, "w": 0.5, "h": 1.0},
                            2: {"shape": "ellipse", "cx": 0.75, "cy": 0.5, "w": 0.4, "h": 0.8}})
    assert m.dtype == np.uint8 and m.shape == (10, 20)
    assert (m[:, :10] == 1).all() and m[5, 15] == 2 and m[0, 19] == 0 and set(np.unique(m)) == {0, 1, 2}
    with pytest.raises(ValueError, match="shapes"):
        shape_mask(10, 20, {1: {"shape": "star", "cx": 0.5, "cy": 0.5, "w": 0.1, "h": 0.1}})
    with pytest.raises(ValueError, match="object ids"):
        shape_mask(10, 20, {255: {"shape": "box", "cx": 0.5, "cy": 0.5, "w": 0.1, "h": 0.1}})


def test_mask_drawer_keeps_one_shape_per_object_and_saves_an_indexed_png(tmp_path):
    from PIL import Image

    frame = torch.randint(0, 255, (3, 40, 60), dtype=torch.uint8)
    d = widgets.MaskDrawer(frame, objects=2)
    assert set(d.mask.unique().tolist()) == {0, 1}
    d.obj.value = 2
    d.kind.value = "box"
    d.cx.value, d.w.value = 0.9, 0.1
    assert set(d.mask.unique().tolist()) == {0, 1, 2} and sorted(d.shapes) == [1, 2]
    d.obj.value = 1  # the sliders show object 1 again; object 2 is kept
    assert d.cx.value == 0.5 and d.shapes[2]["cx"] == 0.9
    d.kind.value = "none"
    assert sorted(d.shapes) == [2]
    p = d.save(tmp_path / "first.png")
    with Image.open(p) as im:
        assert im.mode == "P" and set(np.unique(np.array(im)).tolist()) == {0, 2}
    d.obj.value = 2
    d.kind.value = "none"
    with pytest.raises(ValueError, match="no object"):
        d.save(tmp_path / "empty.png")


def test_save_upload_keeps_base_names_and_checks_suffixes(tmp_path):
    up = ipywidgets.FileUpload()
    up.value = ({"name": "../../evil/clip.mp4", "type": "video/mp4", "size": 3, "content": memoryview(b"abc"),
                 "last_modified": __import__("datetime").datetime(2026, 1, 1)},)
    paths = widgets.save_upload(up, tmp_path / "uploads", (".mp4",))
    assert paths == [tmp_path / "uploads" / "clip.mp4"] and paths[0].read_bytes() == b"abc"
    assert not (tmp_path / "evil").exists()
    up.value = ({"name": "x.exe", "type": "", "size": 1, "content": memoryview(b"a"), "last_modified": __import__("datetime").datetime(2026, 1, 1)},)
    with pytest.raises(ValueError, match="x.exe"):
        widgets.save_upload(up, tmp_path / "uploads", (".mp4",))


def test_position_explorer_moves_the_query_in_every_table():
    tables = {"8x8": torch.randn(8, 8, 6), "30x53": torch.randn(30, 53, 6)}
    ex = widgets.PositionExplorer(tables)
    first = ex.figure
    assert "8x8: (4, 4)" in ex.info.value and "30x53: (15, 26)" in ex.info.value
    ex.row.value = 0.0
    assert "8x8: (0, 4)" in ex.info.value and ex.figure is not first
    with pytest.raises(ValueError):
        widgets.PositionExplorer({})


def test_affinity_explorer_switches_to_extra_feature_sets():
    g = torch.Generator().manual_seed(4)
    frames = torch.randint(0, 255, (2, 3, 32, 48), dtype=torch.uint8, generator=g)
    a, b, c = (torch.randn(2, 24, 8, generator=g) for _ in range(3))
    ex = widgets.AffinityExplorer(frames[0], frames[1], a, b, (4, 6), names=("shipped student", "shipped teacher"),
                                  extra={"random init": c}, query=(1, 2))
    assert list(ex.net.options) == ["shipped teacher", "shipped student", "random init"] and ex.query == 8
    ex.net.value = "random init"
    assert ex.temp.value == 0.04 and "random init" in ex.info.value
    with pytest.raises(ValueError, match="names"):
        widgets.AffinityExplorer(frames[0], frames[1], a, b, (4, 6), names=("x", "y"), extra={"x": c})
    with pytest.raises(ValueError, match="query"):
        widgets.AffinityExplorer(frames[0], frames[1], a, b, (4, 6), query=(4, 0))


def test_uploads_with_one_name_and_shapes_that_cover_nothing_are_refused(tmp_path):
    import datetime

    def item(name, content):
        return {"name": name, "type": "video/mp4", "size": len(content), "content": memoryview(content),
                "last_modified": datetime.datetime(2026, 1, 1)}

    up = ipywidgets.FileUpload()
    up.value = (item("a/clip.mp4", b"one"), item("b/clip.mp4", b"two"))  # would replace each other
    with pytest.raises(ValueError, match="share the name 'clip.mp4'"):
        widgets.save_upload(up, tmp_path / "up", (".mp4",))
    assert not (tmp_path / "up").exists()
    frame = torch.randint(0, 255, (3, 40, 60), dtype=torch.uint8)
    for bad, says in (({"shape": "box", "cx": float("nan"), "cy": 0.5, "w": 0.2, "h": 0.2}, "finite"),
                      ({"shape": "box", "cx": 3.0, "cy": 0.5, "w": 0.2, "h": 0.2}, "covers no pixel"),
                      ({"shape": "ellipse", "cx": 0.5, "cy": 0.5, "w": 0.001, "h": 0.001}, "covers no pixel")):
        d = widgets.MaskDrawer(frame, objects=2, initial={1: {"shape": "box", "cx": 0.3, "cy": 0.3, "w": 0.3,
                                                              "h": 0.3}, 2: bad})
        assert "not saved as it is" in d.info.value  # the explorer says so instead of breaking
        with pytest.raises(ValueError, match=says):
            d.save(tmp_path / "m.png")
        assert not (tmp_path / "m.png").exists()
