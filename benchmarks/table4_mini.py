"""Table 4 of the paper in miniature: the CPU recipe trained with all four losses, with each one removed,
out-only, in-only and g2g-only (the paper's first row), over several seeds; held-out J&F of each run's student on
the DAVIS sample and on synthetic sequences that training never sees (the hard scenes of
``inolib.data.synthetic.HARD_SCENE``: camouflage, look-alike distractors, changing light).

    python benchmarks/table4_mini.py --out runs/table4 [--seeds 0 1] [--variants all no_g2g ...] [--max-steps N]
    python benchmarks/table4_mini.py --dry --out /tmp/t4      # smoke preset, a few steps: checks the pipeline

Each run is ``ino train`` with the shipped recipe (``RECIPE``, see data/checkpoints/README.md) plus the
variant's ``--loss.*`` switches and ``--optim.seed``; finished runs are skipped, so the script resumes. Each
finished run writes ``OUT/<variant>_seed<S>/result.json``, so two instances may share one ``--out`` with
different ``--seeds`` or ``--variants`` (one per CPU core: ``OMP_NUM_THREADS=1``); ``--table`` prints the table of
every finished run under ``--out`` without training. The table is printed as Markdown: mean and spread
(max - min over seeds) per variant, next to the paper's Table 4 row where the paper has one (Charades, ViT-S/8,
DAVIS-2017 val J&F-Mean). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# The shipped checkpoint's command (data/checkpoints/README.md), without --out, --optim.seed and eval flags.
RECIPE = ["--preset", "tiny", "--data", str(REPO / "data/videos"), "synthetic:12"]
DRY = ["--preset", "smoke", "--data", str(REPO / "data/videos"), "synthetic:2", "--synthetic.num_frames", "24",
       "--synthetic.height", "64", "--synthetic.width", "96", "--max-steps", "3"]

# variant -> loss switches; the paper's Table 4 (Charades) row where it has one
VARIANTS = {
    "all": ({}, 67.0),
    "no_g2g": ({"g2g": False}, None),
    "no_l2g": ({"l2g": False}, None),
    "no_mim": ({"mim": False}, None),
    "no_aff": ({"aff": False}, 65.4),  # g2g + l2g + mim
    "out_only": ({"mim": False, "aff": False}, 54.2),  # g2g + l2g
    "in_only": ({"g2g": False, "l2g": False}, None),
    "g2g_only": ({"l2g": False, "mim": False, "aff": False}, 45.6),  # the paper's first row
}


def _flags(switches: dict) -> list[str]:
    return [x for k, v in switches.items() for x in (f"--loss.{k}", str(v).lower())]


def train(run: Path, variant: str, seed: int, dry: bool, max_steps: int | None) -> float:
    """Train one run with ``ino train`` (resumes a killed one); returns the wall seconds spent now."""
    cmd = [sys.executable, "-m", "inolib", "train", *(DRY if dry else RECIPE), "--out", str(run),
           "--optim.seed", str(seed), "--synthetic.seed", "0", "--no-tensorboard", "--log-every", "25",
           *_flags(VARIANTS[variant][0])]
    if max_steps is not None and not dry:
        cmd += ["--max-steps", str(max_steps)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{run}: ino train failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def evaluate(run: Path, davis: list, held_out: list, device: str) -> dict:
    """The run's step count and its student's J&F-Mean on ``davis`` and ``held_out``, with the run's propagation
    settings."""
    from inolib.checkpoint import load_backbone
    from inolib.vos.validation import davis_jf

    vit, report = load_backbone(run / "checkpoint.pth", key="student", device=device)
    cfg = report["config"]
    return {"steps": report["step"], "davis": davis_jf(vit, davis, cfg.propagation, device)["J&F-Mean"],
            "synthetic": davis_jf(vit, held_out, cfg.propagation, device)["J&F-Mean"]}


def _stats(results: dict, variant: str, key: str) -> tuple[float, float, int] | None:
    """(mean, spread = max - min, seeds) of ``key`` over the finished seeds of ``variant``; None if none."""
    xs = [r[key] for r in results.values() if r["variant"] == variant]
    return (sum(xs) / len(xs), max(xs) - min(xs), len(xs)) if xs else None


def versus_all(results: dict, variant: str, key: str) -> str:
    """The difference of ``variant``'s mean to the all-losses mean, and whether it is larger than the seed
    spread of either (``beyond`` / ``within``); ``-`` without two seeds of both."""
    a, v = _stats(results, "all", key), _stats(results, variant, key)
    if variant == "all" or a is None or v is None or min(a[2], v[2]) < 2:
        return "-"
    d = v[0] - a[0]
    shown = round(d, 3) or 0.0  # a difference that rounds to zero prints +0.000, not -0.000
    return f"{shown:+.3f} ({'beyond' if abs(d) > max(a[1], v[1]) else 'within'})"


def table(results: dict, variants: list[str]) -> str:
    """Markdown: per variant, mean (spread) over seeds of both J&F, the difference to ``all`` and whether it is
    beyond the seed spread, and the paper's Table 4 row."""
    lines = ["| variant | loss terms | seeds | DAVIS sample J&F, mean (spread) | vs all | held-out hard synthetic J&F, "
             "mean (spread) | vs all | paper Tab. 4 (Charades, ViT-S/8) |", "|---|---|---|---|---|---|---|---|"]
    for v in variants:
        if _stats(results, v, "davis") is None:
            continue
        on = [k for k in ("g2g", "l2g", "mim", "aff") if VARIANTS[v][0].get(k, True)]
        cells = []
        for key in ("davis", "synthetic"):
            m, spread, n = _stats(results, v, key)
            cells += [f"{m:.3f} ({spread:.3f})", versus_all(results, v, key)]
        paper = VARIANTS[v][1]
        lines.append(f"| {v} | {' + '.join(on)} | {n} | {' | '.join(cells)} | {paper if paper is not None else '-'} |")
    return "\n".join(lines)


NEEDED = ("variant", "davis", "synthetic")  # what the table reads of each result


def gather(out: Path) -> dict:
    """The results of every finished run under ``out``: run name -> its ``result.json``. A torn or partial file
    (a run killed while writing, a hand edit) is named in a warning and left out; the others still count."""
    results = {}
    for p in sorted(out.glob("*_seed*/result.json")):
        try:
            r = json.loads(p.read_text())
            missing = [k for k in NEEDED if k not in r] if isinstance(r, dict) else ["(not a JSON object)"]
        except (OSError, ValueError) as e:
            missing = [f"(unreadable: {e})"]
        if missing:
            warnings.warn(f"{p}: left out of the table, missing {', '.join(missing)}", stacklevel=2)
            continue
        results[p.parent.name] = r
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the runs (each with its result.json)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--max-steps", type=int, default=None, help="cut every run short (a cheaper, noisier table)")
    ap.add_argument("--held-out", type=int, default=4, help="held-out hard synthetic sequences (HARD_SCENE)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dry", action="store_true", help="smoke preset, 3 steps: checks the pipeline only")
    ap.add_argument("--table", action="store_true", help="only print the table of the finished runs under --out")
    args = ap.parse_args()
    out = Path(args.out)
    if args.table:
        print(table(gather(out), list(VARIANTS)))
        return

    from inolib import config as C
    from inolib.atomic import atomic_write_text
    from inolib.data.synthetic import HARD_SCENE, write_held_out_davis
    from inolib.vos.validation import load_davis_for_validation

    out.mkdir(parents=True, exist_ok=True)
    cfg = C.smoke() if args.dry else C.tiny()
    # the hard scenes: on the plain ones every feature extractor scores ~0.93 (BENCHMARKS.md, "The shipped model")
    held_root = write_held_out_davis(out / "held_out_hard", args.held_out, cfg.synthetic,
                                     num_frames=12 if args.dry else 48, scene=HARD_SCENE)
    davis = load_davis_for_validation(REPO / "data/davis_sample/DAVIS",
                                      sequences=["blackswan"] if args.dry else None)
    held_out = load_davis_for_validation(held_root)
    for v in args.variants:
        for seed in args.seeds:
            key = f"{v}_seed{seed}"
            run = out / key
            if (run / "result.json").is_file():
                continue
            secs = train(run, v, seed, args.dry, args.max_steps)
            scores = evaluate(run, davis, held_out, args.device)
            result = {"variant": v, "seed": seed, "train_seconds": secs, **scores}
            atomic_write_text(run / "result.json", json.dumps(result, indent=1))
            print(f"{key}: {scores['steps']} steps in {secs:.0f} s, J&F DAVIS {scores['davis']:.3f}, "
                  f"held-out hard synthetic {scores['synthetic']:.3f}", flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(table(gather(out), args.variants))


if __name__ == "__main__":
    main()
