"""Figures return matplotlib Figures with the expected panels, without a display."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from inolib.course import viz  # noqa: E402


def test_to_image_undoes_normalisation():
    x = torch.rand(3, 4, 5)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    norm = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    np.testing.assert_allclose(viz.to_image(norm, mean, std), x.permute(1, 2, 0).numpy(), atol=1e-6)
    u8 = (x * 255).to(torch.uint8)
    assert viz.to_image(u8).max() <= 1.0 and viz.to_image(u8).shape == (4, 5, 3)


def test_figures_have_their_panels():
    frames = torch.randint(0, 255, (4, 3, 32, 48), dtype=torch.uint8)
    g, l = torch.randn(4, 3, 16, 16), torch.randn(4, 2, 3, 8, 8)
    fig = viz.show_clip_crops(frames, g, l)
    assert isinstance(fig, Figure) and len(fig.axes) == 4 * (2 + 2)
    assert len(viz.show_frames(frames, cols=3).axes) == 6
    mask = torch.zeros(24, dtype=torch.bool)
    mask[:5] = True
    assert len(viz.show_patch_grid(frames[0], 8, mask).axes) == 1
    tabs = {"8x8": torch.randn(8, 8, 6), "28x28": torch.randn(28, 28, 6)}
    assert len(viz.show_pos_similarity(tabs).axes) == 4 + 1  # 2 queries x 2 tables + the colour bar
    assert len(viz.show_attention(frames[0], torch.rand(3, 24), (4, 6)).axes) == 4
    assert len(viz.show_affinity(frames[0], frames[1], torch.rand(24, 24), (4, 6), query=7).axes) == 3
    assert len(viz.show_distributions({"teacher": torch.rand(100).softmax(0), "student": torch.rand(100).softmax(0)}).axes) == 1
    labels = torch.zeros(4, 32, 48, dtype=torch.uint8)
    labels[:, 5:10, 5:10] = 1
    assert len(viz.show_propagation(frames, labels).axes) == 4
    recs = [{"step": i, "loss": 1 / (i + 1)} for i in range(5)]
    fig = viz.plot_curves(recs, ["loss", "missing"])
    assert len(fig.axes[0].lines) == 1


def test_overlay_colours_only_objects():
    img = torch.zeros(3, 4, 4, dtype=torch.uint8)
    lab = torch.zeros(4, 4, dtype=torch.uint8)
    lab[0, 0], lab[1, 1] = 1, 255
    pal = np.zeros((256, 3))
    pal[1] = (255, 0, 0)
    pal[255] = (0, 255, 0)
    out = viz.overlay_labels(img, lab, pal, alpha=0.5)
    np.testing.assert_allclose(out[0, 0], [0.5, 0, 0])
    np.testing.assert_allclose(out[1, 1], [0, 0, 0])  # void is not an object
    np.testing.assert_allclose(out[2, 2], [0, 0, 0])


def test_plot_schedules_one_panel_per_schedule_in_epochs():
    from inolib import config as C
    from inolib.schedules import make_schedules

    s = make_schedules(C.charades().optim, steps_per_epoch=10, clip_len=4, world_size=4)
    fig = viz.plot_schedules(s, 10)
    assert [ax.get_title() for ax in fig.axes] == ["lr", "wd", "momentum"]
    x = fig.axes[0].lines[0].get_xdata()
    assert x[0] == 0 and abs(x[-1] - 24.9) < 1e-9  # 250 steps = 25 epochs


def test_overview_diagram_names_every_part_and_checks_the_clip_length():
    import pytest

    fig = viz.plot_ino_overview(4)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    for part in ("L = 4", "student", "teacher", "EMA", "class tokens", "patch tokens", "out g2g", "out l2g",
                 "in MIM", "in aff"):
        assert part in texts, part
    with pytest.raises(ValueError, match="clip_len"):
        viz.plot_ino_overview(3)


def test_overview_diagram_headers_clear_the_boxes_and_frames_count_from_zero():
    """The column headers overlap no box and no other text; the frames are numbered as frame_pairs numbers them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.patches import FancyBboxPatch

    from inolib.losses import frame_pairs

    for L in (4, 6):
        fig = viz.plot_ino_overview(L)
        ax = fig.axes[0]
        r = FigureCanvasAgg(fig).get_renderer()
        heads = [t for t in ax.texts if t.get_position()[1] > 6]  # the three column headers
        assert len(heads) == 3
        boxes = [p.get_window_extent(r) for p in ax.patches if isinstance(p, FancyBboxPatch)]
        for h in heads:
            e = h.get_window_extent(r)
            assert not any(e.overlaps(b) for b in boxes), h.get_text()
            assert not any(e.overlaps(t.get_window_extent(r)) for t in ax.texts if t is not h), h.get_text()
        names = [t.get_text() for t in ax.texts if t.get_text().startswith("frame ")]
        assert names == [f"frame {t}" for t in range(L)]
        g2g = next(t.get_text() for t in ax.texts if t.get_text().startswith("out g2g"))
        assert all(f"({a}, {b})" in g2g for a, b in frame_pairs(L))


def test_compare_propagation_one_row_per_method_with_scores_in_titles():
    import pytest

    frames = torch.randint(0, 255, (5, 3, 32, 48), dtype=torch.uint8)
    labels = {"a": torch.zeros(5, 32, 48, dtype=torch.uint8), "b": torch.ones(5, 32, 48, dtype=torch.uint8)}
    fig = viz.compare_propagation(frames, labels, [0, 4], scores={"a": torch.linspace(0, 1, 5)})
    assert len(fig.axes) == 4
    assert fig.axes[1].get_title() == "frame 4, J = 1.00" and fig.axes[3].get_title() == "frame 4"
    assert fig.axes[2].get_ylabel() == "b"
    with pytest.raises(ValueError, match="show"):
        viz.compare_propagation(frames, labels, [5])
    with pytest.raises(ValueError, match=r"labels\['a'\]"):
        viz.compare_propagation(frames, {"a": labels["a"][:3]}, [0])


def test_per_frame_and_bar_plots_label_their_axes():
    fig = viz.plot_per_frame({"a": torch.rand(7), "b": torch.rand(7)})
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_xlabel() == "frame" and "J" in ax.get_ylabel()
    fig = viz.plot_bars({"x": 0.3, "y": 0.5}, lines={"paper": 0.67})
    ax = fig.axes[0]
    assert len(ax.patches) == 2 and ax.get_ylabel() == "J&F-Mean" and "0.500" in [t.get_text() for t in ax.texts]
    assert ax.get_ylim()[1] > 0.67
    fig = viz.plot_curves([{"step": 0, "jf": 0.3}, {"step": 5, "jf": 0.4}], ["jf"], ylabel="J&F")
    assert fig.axes[0].get_ylabel() == "J&F"


def test_plot_runs_and_show_matrices():
    runs = {"a": [{"step": i, "e": float(i)} for i in range(4)], "b": [{"step": i, "e": 1.0} for i in range(4)]}
    fig = viz.plot_runs(runs, ["e", "f"], labels={"e": "entropy (nats)"}, lines={"e": {"log K": 2.0}}, log_keys=["f"])
    ax = fig.axes[0]
    assert len(ax.lines) == 3 and ax.get_ylabel() == "entropy (nats)" and ax.get_xlabel() == "step"
    assert len(fig.axes[1].lines) == 0 and fig.axes[1].get_yscale() == "log"  # the reference line is e's only
    fig = viz.show_matrices({"x": torch.rand(3, 5), "y": torch.rand(3, 5)}, "dim", "sample", "probability")
    assert len(fig.axes) == 3 and fig.axes[-1].get_ylabel() == "probability"  # two maps and the colour bar
    import pytest

    with pytest.raises(ValueError, match="2-d"):
        viz.show_matrices({"x": torch.rand(3)})


def test_plot_grouped_bars_one_bar_per_value_grouped_with_a_legend():
    import pytest

    groups = {"run a": {"entropy": 0.5, "batch entropy": 3.0}, "run b": {"entropy": 6.9, "batch entropy": 6.9},
              "run c": {"entropy": 0.2}}
    fig = viz.plot_grouped_bars(groups, ylabel="nats", lines={"log K": 6.93})
    ax = fig.axes[0]
    assert len(ax.patches) == 5 and ax.get_ylabel() == "nats"
    assert [t.get_text() for t in ax.get_xticklabels()] == list(groups)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["entropy", "batch entropy"]
    assert "3.00" in [t.get_text() for t in ax.texts] and " log K" in [t.get_text() for t in ax.texts]
    assert ax.get_ylim()[1] > 6.93
    with pytest.raises(ValueError):
        viz.plot_grouped_bars({})


def test_show_crop_boxes_colours_each_box_by_its_value():
    frame = torch.zeros(3, 40, 60, dtype=torch.uint8)
    boxes = torch.tensor([[0, 0, 10, 10], [5, 20, 20, 30]])
    fig = viz.show_crop_boxes(frame, boxes, {"a": torch.tensor([0.1, 0.9]), "b": [1.0, 0.0]}, cbar_label="p")
    assert isinstance(fig, Figure) and len(fig.axes) == 3  # two panels and the colour bar
    assert len(fig.axes[0].patches) == 2 and fig.axes[-1].get_ylabel() == "p"
    import pytest

    with pytest.raises(ValueError, match="one per box"):
        viz.show_crop_boxes(frame, boxes, {"a": torch.tensor([0.1])})
    with pytest.raises(ValueError, match="boxes"):
        viz.show_crop_boxes(frame, boxes[:, :3], {"a": torch.tensor([0.1, 0.2])})


def test_token_figures_compare_networks_with_labelled_axes():
    frame = torch.randint(0, 255, (3, 32, 48), dtype=torch.uint8)
    fig = viz.compare_feature_pca(frame, {"shipped": torch.rand(4, 6, 3), "random init": torch.rand(4, 6, 3)},
                                  notes={"shipped": "60 % of the variance"})
    assert len(fig.axes) == 3 and fig.axes[1].get_xlabel() == "column (patches)"
    assert "60 %" in fig.axes[1].get_title()
    attn = {"shipped": torch.rand(3, 24).softmax(-1), "random init": torch.rand(3, 24).softmax(-1)}
    fig = viz.compare_attention(frame, attn, (4, 6))
    assert len(fig.axes) == 2 * 4 + 1  # two rows of input + 3 heads, and one colour bar
    assert "uniform" in fig.axes[-1].get_ylabel()
    import pytest

    with pytest.raises(ValueError, match=r"\(heads, 24\)"):
        viz.compare_attention(frame, {"a": torch.rand(3, 25)}, (4, 6))
    # a 6-head network over a 3-head one, each on its own scale: blank cells, one colour bar per row
    fig = viz.compare_attention(frame, {"big": torch.rand(6, 24) * 10, "small": torch.rand(3, 24)}, (4, 6),
                                per_row=True)
    grid_axes, bars = fig.axes[:14], fig.axes[14:]
    assert len(bars) == 2 and sum(not a.axison for a in grid_axes) == 3
    highs = [a.images[0].get_clim()[1] for a in (grid_axes[1], grid_axes[8])]
    assert highs[0] > 3 * highs[1]
    with pytest.raises(ValueError, match=r"\(h, w, 3\)"):
        viz.compare_feature_pca(frame, {"a": torch.rand(4, 6)})
    fig = viz.show_pos_similarity({"8x8": torch.randn(8, 8, 6)}, queries=[(0.5, 0.5)])
    assert fig.axes[0].get_ylabel() == "row (patches)" and "cosine" in fig.axes[-1].get_ylabel()


def test_show_crop_sets_draws_every_box_with_a_legend():
    frame = torch.randint(0, 255, (3, 48, 64), dtype=torch.uint8)
    fig = viz.show_crop_sets(frame, {"global": torch.tensor([[0, 8, 48, 48]]),
                                      "local": torch.tensor([[2, 2, 10, 10], [20, 30, 8, 12]])})
    ax = fig.axes[0]
    assert len(ax.patches) == 3 and ax.get_xlabel() == "x (pixels)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["global", "local"]


def test_show_masks_and_patch_values_check_their_grids():
    import pytest

    img = torch.randint(0, 255, (3, 16, 24), dtype=torch.uint8)
    m = torch.zeros(6, dtype=torch.bool)
    m[:2] = True
    fig = viz.show_masks(img, {"random": m, "block": m.reshape(2, 3)}, 8)
    assert len(fig.axes) == 2 and "2 of 6" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="random"):
        viz.show_masks(img, {"random": torch.zeros(5, dtype=torch.bool)}, 8)
    fig = viz.show_patch_values(img, {"shipped": torch.rand(6), "random init": torch.rand(2, 3)}, (2, 3), mask=m,
                                cbar_label="cross-entropy (nats)")
    assert len(fig.axes) == 4 and fig.axes[-1].get_ylabel() == "cross-entropy (nats)"  # 3 panels + colour bar
    with pytest.raises(ValueError, match="mask"):
        viz.show_patch_values(img, {"a": torch.rand(6)}, (2, 3), mask=torch.zeros(4, dtype=torch.bool))


def test_compare_affinity_rows_one_panel_per_row_and_a_colour_bar():
    import pytest

    frames = torch.randint(0, 255, (2, 3, 16, 24), dtype=torch.uint8)
    rows = {"shipped": torch.rand(6).softmax(0), "random init": torch.rand(2, 3)}
    fig = viz.compare_affinity_rows(frames[0], frames[1], rows, (2, 3), query=4, cbar_label="weight")
    assert len(fig.axes) == 4 and fig.axes[-1].get_ylabel() == "weight"
    with pytest.raises(ValueError, match="query"):
        viz.compare_affinity_rows(frames[0], frames[1], rows, (2, 3), query=6)
    with pytest.raises(ValueError, match="rows"):
        viz.compare_affinity_rows(frames[0], frames[1], {"bad": torch.rand(5)}, (2, 3), query=0)


def test_plot_curves_draws_each_baseline_as_a_labelled_horizontal_line():
    log = [{"step": 0, "jf": 0.3}, {"step": 10, "jf": 0.5}]
    fig = viz.plot_curves(log, ["jf"], baselines={"raw pixels": 0.4, "copy frame 0": 0.35})
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert set(lines) == {"jf", "raw pixels", "copy frame 0"}
    assert list(lines["raw pixels"].get_ydata()) == [0.4, 0.4] and lines["copy frame 0"].get_linestyle() == "--"
