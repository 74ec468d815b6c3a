"""Wall time of each lesson as the tests run it: one ``pytest --nbval-lax`` process per lesson in smoke mode
(``INOLIB_SMOKE=1``), so the time includes starting Python, the kernel and the imports, not only the cells.

    python benchmarks/lesson_times.py                      # every notebooks/NN_*.ipynb
    python benchmarks/lesson_times.py --lessons 06 07      # some of them

The course asks for under 30 s per lesson on 2 CPU cores; run it on a quiet machine. Prints a Markdown table;
asserts nothing (a failing lesson is reported as failed, with pytest's last lines).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def time_lesson(path: Path, threads: int | None) -> tuple[float, bool, str]:
    """Run one lesson under nbval in smoke mode (``threads`` None: torch's default threads, as in a learner's
    JupyterLab and in ``make test``); returns (seconds, passed, the output's last lines)."""
    env = dict(os.environ, INOLIB_SMOKE="1")
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=300",
           "-p", "no:cacheprovider", str(path)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, r.returncode == 0, "\n".join((r.stdout + r.stderr).strip().splitlines()[-5:])


def main() -> None:
    from inolib.course.book import list_lessons

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notebooks", default=str(REPO / "notebooks"))
    ap.add_argument("--lessons", nargs="*", default=None, help="lesson numbers or names (default: all)")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS of each run (default: unset, torch's default threads, as make test runs them)")
    args = ap.parse_args()
    lessons = list_lessons(args.notebooks)
    if args.lessons:
        lessons = [p for p in lessons if any(p.stem == x or p.stem.startswith(f"{x}_") for x in args.lessons)]
        if not lessons:
            sys.exit(f"--lessons {' '.join(args.lessons)}: no such lesson in {args.notebooks}")
    threads = "unset (torch's default)" if args.threads is None else args.threads
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={threads}, "
          f"one lesson at a time, smoke mode\n")
    print("| lesson | seconds (pytest + kernel start + cells) | passed |\n|---|---|---|", flush=True)
    total = 0.0
    for p in lessons:
        secs, ok, tail = time_lesson(p, args.threads)
        total += secs
        print(f"| {p.stem} | {secs:.1f} | {'yes' if ok else 'NO'} |", flush=True)
        if not ok:
            print(tail, file=sys.stderr)
    print(f"| all | {total:.1f} | |")


if __name__ == "__main__":
    main()
