"""The demo's report: one self-contained HTML page (figures embedded as PNG), written atomically.

    write_demo_report("runs/demo/report.html", jf=..., folders=..., davis_root=..., networks=..., propagation=...)

Sections: the J&F table (per method and per sequence), the shipped run's J&F learning curve and the live run's
loss curve, one affinity map of a real frame pair (where a patch on the object finds its match in a later frame)
for each feature extractor, and the propagated masks side by side on every sequence.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; a notebook keeps its own backend (this module is not used there)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ..atomic import atomic_write_text  # noqa: E402
from ..config import PropagationConfig  # noqa: E402
from ..data.vos_datasets import davis_palette, read_davis_sequence  # noqa: E402
from ..vos.propagation import FrameSize  # noqa: E402
from ..vos.segment import extract_features  # noqa: E402
from .viz import overlay_labels, plot_curves  # noqa: E402


def _plain(text: str) -> str:
    """``text`` shown as it is in a matplotlib title: a sequence named ``$x$`` is not mathtext."""
    return text.replace("$", r"\$")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "<img src='data:image/png;base64," + base64.b64encode(buf.getvalue()).decode() + "'/>"


def _records(path: Path | None) -> list[dict]:
    if path is None or not Path(path).is_file():
        return []
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
    return out


def _curves(records: list[dict], keys: list[str], title: str, ylabel: str, baselines: dict[str, float] | None = None):
    """:func:`inolib.course.viz.plot_curves` with the report's conventions: "$" in titles shown as text, markers on
    short curves."""
    longest = max((sum(k in r and "step" in r for r in records) for k in keys), default=0)
    return plot_curves(records, keys, title=_plain(title), ylabel=ylabel, marker="o" if longest < 30 else None,
                       baselines=baselines)


def _sequence_jf(result: dict) -> dict[str, float]:
    per: dict[str, list[float]] = {}
    for row in result["objects"].values():
        per.setdefault(row["sequence"], []).append((row["J_mean"] + row["F_mean"]) / 2)
    return {k: float(np.mean(v)) for k, v in per.items()}


def _table(jf: dict[str, dict]) -> str:
    seqs = sorted({s for r in jf.values() for s in _sequence_jf(r)})
    head = "".join(f"<th>{html.escape(s)}</th>" for s in seqs)
    rows = []
    for name, r in jf.items():
        g, per = r["global"], _sequence_jf(r)
        cells = "".join(f"<td>{per.get(s, float('nan')):.3f}</td>" for s in seqs)
        rows.append(f"<tr><td>{html.escape(name)}</td><td><b>{g['J&F-Mean']:.3f}</b></td><td>{g['J-Mean']:.3f}</td>"
                    f"<td>{g['F-Mean']:.3f}</td>{cells}</tr>")
    return ("<table><tr><th>features</th><th>J&amp;F-Mean</th><th>J-Mean</th><th>F-Mean</th>" + head + "</tr>"
            + "".join(rows) + "</table>")


@torch.no_grad()
def affinity_figure(seq, networks: dict, cfg: PropagationConfig, frames: tuple[int, int] = (0, 10),
                    device: str | torch.device = "cpu"):
    """Where a patch on the first object of frame ``frames[0]`` finds its match in frame ``frames[1]``: the cosine
    similarity of its feature to every patch of the later frame, one panel per network."""
    a, b = frames[0], min(frames[1], seq.num_frames - 1)
    H, W = seq.size
    first = next(iter(networks.values()))
    patch = first.patch_embed.patch_size[0]
    size = FrameSize.for_frame(H, W, cfg.short_side, cfg.round_to or patch, patch=patch)
    grid = (size.height // patch, size.width // patch)
    mask = seq.load_mask(a)
    obj = (mask > 0) & (mask < 255)
    ys, xs = torch.nonzero(obj, as_tuple=True) if obj.any() else (torch.tensor([H // 2]), torch.tensor([W // 2]))
    qy, qx = int(ys.float().median()) * grid[0] // H, int(xs.float().median()) * grid[1] // W
    imgs = seq.load_frames([a, b])
    fig, axes = plt.subplots(1, len(networks) + 1, figsize=(3.3 * (len(networks) + 1), 2.4))
    axes[0].imshow(imgs[0].permute(1, 2, 0).numpy())
    axes[0].add_patch(plt.Rectangle((qx * W / grid[1], qy * H / grid[0]), W / grid[1], H / grid[0], fill=False,
                                    ec="r", lw=2))
    axes[0].set_title(f"frame {a}: query patch", fontsize=9)
    for ax, (name, net) in zip(axes[1:], networks.items()):
        fa, fb = list(extract_features(net, lambda i: imgs[i], 2, size, cfg.feature_block, batch=2, device=device,
                                       resize=cfg.resize))
        q = F.normalize(fa[:, qy, qx], dim=0)
        sim = torch.einsum("d,dhw->hw", q, F.normalize(fb, dim=0)).cpu()
        ax.imshow(imgs[1].permute(1, 2, 0).numpy())
        ax.imshow(sim.numpy(), cmap="jet", alpha=0.55, extent=(0, W, H, 0))
        ax.set_title(_plain(f"{name}: similarity in frame {b}"), fontsize=9)
    for ax in axes:
        ax.axis("off")
    return fig


def masks_figure(seq, folders: dict[str, Path], frame: int | None = None):
    """Ground truth and each method's propagated mask on one frame of ``seq`` (read from ``folders``)."""
    from PIL import Image

    t = frame if frame is not None else (2 * seq.num_frames) // 3
    img = seq.load_frames([t])[0]
    stem = Path(seq.frame_paths[t]).stem
    panels = {"ground truth": seq.load_mask(t)}
    for name, folder in folders.items():
        p = Path(folder) / seq.name / f"{stem}.png"
        panels[name] = torch.from_numpy(np.array(Image.open(p))) if p.is_file() else torch.zeros_like(panels["ground truth"])
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 2.0))
    for ax, (name, lab) in zip(axes, panels.items()):
        ax.imshow(overlay_labels(img, lab, davis_palette(), alpha=0.6))
        ax.set_title(_plain(f"{seq.name} {stem}: {name}"), fontsize=8)
        ax.axis("off")
    return fig


def write_demo_report(path: str | Path, jf: dict[str, dict], folders: dict[str, Path], davis_root: str | Path,
                      networks: dict, propagation: PropagationConfig, live_log: Path | None = None,
                      shipped_log: Path | None = None, device: str | torch.device = "cpu",
                      curve_short_side: int | None = None) -> Path:
    """Write the demo report (see the module docstring) to ``path`` atomically; returns the path."""
    path = Path(path)
    sections = ["<h1>INO on a laptop: the demo report</h1>",
                "<p>Label propagation on the bundled DAVIS sample with three feature extractors: the shipped "
                "<code>tiny</code> checkpoint (trained on a CPU), a random initialisation of the same network, "
                "and raw pixels. J&amp;F is the official DAVIS-2017 semi-supervised score (1 is perfect). "
                "For scale, the paper's ViT-S/8 reaches 67.0 (Charades) and 72.5 (Kinetics) J&amp;F-Mean on "
                "DAVIS-2017 val after days of GPU training.</p>",
                "<h2>J&amp;F</h2>", _table(jf)]
    shipped = _records(shipped_log)
    if any("jf_student" in r for r in shipped):
        # the raw-pixel line only where it was measured like the curve (same short side)
        same = curve_short_side is None or curve_short_side == propagation.short_side
        base = {f"{k}": v["global"]["J&F-Mean"] for k, v in jf.items() if k == "raw pixels" and same}
        sections += ["<h2>The shipped run's learning curve</h2>"]
        if not same:
            sections += [f"<p>Measured during training at short side {curve_short_side}; this report propagates at "
                         f"{propagation.short_side}, so its raw-pixel score is not drawn as the baseline.</p>"]
        sections += [_png(_curves(shipped, ["jf_student", "jf_teacher"], "J&F-Mean on the DAVIS sample while "
                                  "training", "J&F-Mean", base))]
    live = _records(live_log)
    if any("loss" in r for r in live):
        sections += ["<h2>The live run (this demo)</h2>",
                     _png(_curves(live, ["loss", "out"], "training loss of the run you just watched", "loss"))]
    davis_root = Path(davis_root)
    seqs = [read_davis_sequence(davis_root, name) for name in sorted({r["sequence"] for v in jf.values()
                                                                       for r in v["objects"].values()})]
    if seqs:
        sections += ["<h2>Affinity: where does the object go?</h2>",
                     "<p>The red patch's feature compared with every patch of a later frame (red = similar). "
                     "Trained features should light up the same object, not everything of the same colour.</p>",
                     _png(affinity_figure(seqs[0], networks, propagation, device=device))]
        sections += ["<h2>Propagated masks</h2>"] + [_png(masks_figure(s, folders)) for s in seqs]
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>INO demo report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}</style></head><body>"
            + "\n".join(sections) + "</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, page)
