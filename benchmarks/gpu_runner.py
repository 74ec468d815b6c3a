"""The machinery of benchmarks/gpu_check.py: device timing and memory with a CPU fallback, what a stage reports,
each stage in a forked process with a time limit, the Markdown results, and the notebook runner."""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import math
import os
import signal
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

GIB = 2 ** 30
NA = "—"


# ----------------------------------------------------------------------------------------------------
# Timing and memory on the device, with a CPU fallback


class Clock:
    """Marks on the device's stream (CUDA events) or the host clock (CPU), synchronisation and peak memory.

    ``peak_gib`` is ``torch.cuda.max_memory_allocated`` since ``reset_peak`` on a GPU and None on a CPU (a process's
    peak resident memory cannot be reset, so it would not measure one stage).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, a, b) -> float:
        self.sync()
        return a.elapsed_time(b) / 1000.0 if self.cuda else b - a

    def reset_peak(self) -> None:
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        self.sync()
        return torch.cuda.max_memory_allocated(self.device) / GIB if self.cuda else None

    def timed(self, fn: Callable):
        """(fn(), wall seconds), synchronised before and after."""
        self.sync()
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        return out, time.perf_counter() - t0

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def allocated_gib(self) -> float | None:
        return torch.cuda.memory_allocated(self.device) / GIB if self.cuda else None


class Phases:
    """Per-step marks at phase boundaries: start -> forward -> backward -> optimizer -> ema (repeats ignored)."""

    NAMES = ("forward", "backward", "optimizer", "ema")

    def __init__(self, clock: Clock):
        self.clock = clock
        self.steps: list[dict] = []

    def start(self) -> None:
        self.steps.append({"start": self.clock.mark()})

    def mark(self, name: str) -> None:
        if self.steps and name not in self.steps[-1]:
            self.steps[-1][name] = self.clock.mark()

    def median_ms(self) -> dict[str, float]:
        self.clock.sync()
        out = {}
        for i, name in enumerate(self.NAMES):
            before = ("start",) + self.NAMES[:i]
            vals = []
            for st in self.steps:
                prev = next((st[b] for b in reversed(before) if b in st), None)
                if name in st and prev is not None:
                    vals.append(1000 * self.clock.seconds(prev, st[name]))
            out[name] = statistics.median(vals) if vals else math.nan
        return out


# ----------------------------------------------------------------------------------------------------
# What a stage reports


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return NA
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:.0f}"
    return str(x)


def ratio_str(a, b) -> str:
    if a is None or b is None or not b:
        return NA
    return f"{a / b:.2f}x"


class Ctx:
    """Handed to a stage: settings, device, work folder, and the record file the parent reads back."""

    def __init__(self, stage: str, label: str, settings, work: Path, record: Path, shared: dict):
        self.stage, self.label, self.s, self.work, self.record = stage, label, settings, work, record
        self.shared = shared
        self.device = torch.device(settings.device)
        self.clock = Clock(self.device)

    def _write(self, obj: dict) -> None:
        with open(self.record, "a") as f:
            f.write(json.dumps(obj) + "\n")

    def row(self, figure: str, ours="", released="", ratio="", goal="", met="") -> None:
        """One table row (values as printed). ``met``: "yes", "no", or "" (no goal)."""
        cells = [figure, ours, released, ratio, goal, met]
        cells = [NA if c in ("", None) else str(c) for c in cells]
        self._write({"type": "row", "stage": self.label, "cells": cells})
        print(f"[{self.stage}] {' | '.join(cells)}", flush=True)

    def perf_met(self, ok: bool) -> str:
        """A performance goal: meaningless on the CPU of a dry run."""
        return "n/a (dry)" if self.s.dry else ("yes" if ok else "no")

    def detail(self, title: str, text: str) -> None:
        self._write({"type": "detail", "stage": self.label, "title": title, "text": text})

    def share(self, key: str, value) -> None:
        """A value for the parent and the stages after this one (``ctx.shared``)."""
        self._write({"type": "share", "key": key, "value": value})
        self.shared[key] = value

    def fail(self, what: str, exc: BaseException) -> None:
        """A part of a stage failed: its row says so, the traceback goes to stderr and the results' errors."""
        tb = traceback.format_exc()
        print(tb, file=sys.stderr, flush=True)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        self._write({"type": "error", "stage": self.label, "what": what, "text": tb})
        self.row(what, f"error: {type(exc).__name__}: {first}", met="no")


# ----------------------------------------------------------------------------------------------------
# Processes


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (d / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal ``pid`` and everything below it (torchrun's workers run in sessions of their own)."""
    for p in [pid] + _descendants(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)


# ----------------------------------------------------------------------------------------------------
# Running stages and writing the results


@dataclass
class StageResult:
    name: str
    label: str
    status: str  # ok, errors (a part failed), failed, timeout, skipped
    seconds: float = 0.0
    budget: float = 0.0
    note: str = ""
    rows: list = field(default_factory=list)
    details: list = field(default_factory=list)
    errors: list = field(default_factory=list)


def run_stage(name: str, label: str, fn: Callable, settings, work: Path, shared: dict,
              budget: float) -> StageResult:
    """Run ``fn(ctx)`` in a forked child (own session) for at most ``budget`` seconds; collect what it recorded."""
    work.mkdir(parents=True, exist_ok=True)
    record = work / f"{name}.jsonl"
    record.unlink(missing_ok=True)
    print(f"\n=== stage {name} ({label}), budget {budget:.0f} s", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setsid()
            stage_work = work / name
            stage_work.mkdir(parents=True, exist_ok=True)
            fn(Ctx(name, label, settings, stage_work, record, dict(shared)))
        except BaseException as e:  # noqa: BLE001
            code = 1
            tb = traceback.format_exc()
            print(tb, file=sys.stderr, flush=True)
            with contextlib.suppress(Exception), open(record, "a") as f:
                f.write(json.dumps({"type": "fatal", "text": tb, "first": f"{type(e).__name__}: {e}"[:300]}) + "\n")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    timed_out, code = False, None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() - t0 > budget:
            timed_out = True
            kill_tree(pid)
            os.waitpid(pid, 0)
            break
        time.sleep(0.1)
    res = StageResult(name, label, "ok", time.monotonic() - t0, budget)
    fatal = None
    for line in record.read_text().splitlines() if record.is_file() else []:
        with contextlib.suppress(json.JSONDecodeError):
            obj = json.loads(line)
            kind = obj.get("type")
            if kind == "row":
                res.rows.append(obj["cells"])
            elif kind == "detail":
                res.details.append((obj["title"], obj["text"]))
            elif kind == "share":
                shared[obj["key"]] = obj["value"]
            elif kind == "error":
                res.errors.append((obj["what"], obj["text"]))
                res.status = "errors"
            elif kind == "fatal":
                fatal = obj
    if timed_out:
        res.status = "timeout"
        res.note = f"stopped after its budget of {budget:.0f} s (figures recorded before are kept)"
        res.rows.append([f"stage stopped at its time budget ({budget:.0f} s)", "timeout", NA, NA, NA, "no"])
    elif fatal is not None or code != 0:
        res.status = "failed"
        res.note = fatal["first"] if fatal else f"exit code {code}"
        if fatal:
            res.errors.append(("stage", fatal["text"]))
        res.rows.append(["stage failed", f"error: {res.note[:200]}", NA, NA, NA, "no"])
    print(f"=== stage {name}: {res.status} in {res.seconds:.1f} s" + (f" ({res.note})" if res.note else ""), flush=True)
    return res


def _cell(x: str) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def render(results: list[StageResult], shared: dict, settings, argv: list[str], wall: float,
           import_seconds: float = math.nan) -> str:
    m = shared.get("machine", {})
    lines = ["# GPU check (`benchmarks/gpu_check.py`)", ""]
    lines.append(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}; command: "
                 f"`python benchmarks/gpu_check.py {' '.join(argv)}`")
    if settings.dry:
        lines.append("- **CPU dry run** (`--dry`): tiny shapes and the smoke preset; it proves the code paths, its "
                     "figures mean nothing")
    gpu = (f"{m.get('gpu')}, {m.get('gpu_memory_gib')} GiB, {m.get('sms')} SMs, driver {m.get('driver', '?')}"
           if m.get("gpu") else f"no GPU (device {settings.device})")
    lines.append(f"- machine: {gpu}; {m.get('cpu_cores')} CPU cores; {m.get('platform')}; python {m.get('python')}")
    lines.append(f"- torch {m.get('torch')}, CUDA {m.get('cuda')}, cuDNN {m.get('cudnn', NA)}, timm {m.get('timm')}, "
                 f"decord {m.get('decord', 'missing')}, nbclient {m.get('nbclient', 'missing')}")
    if m.get("missing"):
        lines.append(f"- missing packages: {'; '.join(m['missing'])}")
    lines.append(f"- wall time {wall:.0f} s (deadline {settings.deadline:.0f} s); imports {import_seconds:.1f} s")
    lines += ["", "| stage | figure | ours | released | ratio | goal | met |", "|---|---|---|---|---|---|---|"]
    for r in results:
        for cells in r.rows:
            lines.append("| " + " | ".join(_cell(c) for c in [r.label, *cells]) + " |")
    lines += ["", "| stage | status | seconds | budget | note |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.label} | {r.status} | {r.seconds:.1f} | {r.budget:.0f} | {_cell(r.note) or NA} |")
    details = [(r.label, t, x) for r in results for t, x in r.details]
    if details:
        lines += ["", "## Details"]
        for label, title, text in details:
            lines += ["", f"### {label}: {title}", "", "```text", text.rstrip(), "```"]
    errors = [(r.label, w, x) for r in results for w, x in r.errors]
    if errors:
        lines += ["", "## Errors"]
        for label, what, text in errors:
            lines += ["", f"### {label}: {what}", "", "```text", text.rstrip()[-6000:], "```"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------
# Notebooks


def run_notebook(path: Path, cwd: Path, cell_timeout: int, env: dict[str, str], save: Path | None = None) -> float:
    """Execute a notebook with nbclient in a kernel of this interpreter; returns its wall seconds."""
    import ipykernel.kernelspec
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    class ThisPython(KernelSpecManager):  # the kernel runs sys.executable, as nbval --nbval-current-env does
        def get_kernel_spec(self, kernel_name):
            return self.kernel_spec_class(resource_dir=ipykernel.kernelspec.RESOURCES,
                                          **ipykernel.kernelspec.get_kernel_dict())

    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=ThisPython())
    client = NotebookClient(nb, km=km, timeout=cell_timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    t0 = time.perf_counter()
    try:
        client.execute(env=dict(os.environ, **env))  # the kernel's environment; this process's is left alone
    finally:
        if save is not None:
            nbformat.write(nb, save)
    return time.perf_counter() - t0
