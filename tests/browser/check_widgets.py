"""Browser check of the course widgets: JupyterLab on localhost, Debian's Chromium driven by Playwright.

    python tests/browser/check_widgets.py [--notebooks notebooks/07_in_aff.ipynb ...] [--out test-output/browser]

For each notebook: open it in JupyterLab, run all cells (smoke mode), check that widget views rendered
(sliders and figure images present, no "Error displaying widget" or lingering "Loading widget" text), move
the first slider with the keyboard and check that a figure image changed; save screenshots. Exits non-zero
on the first failure. `make test-browser` installs Chromium and Playwright and runs this.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(port: int, root: Path, log) -> subprocess.Popen:
    env = {**os.environ, "INOLIB_SMOKE": "1", "INOLIB_DATA": str(REPO / "data")}
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           "--allow-root", "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
           f"--ServerApp.root_dir={root}", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=1)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("JupyterLab exited; see its log")
            time.sleep(0.5)
    raise RuntimeError("JupyterLab did not start in 60 s")


def image_sources(page) -> list[str]:
    return page.eval_on_selector_all(".jp-OutputArea img", "els => els.map(e => e.src.slice(-200))")


def check_notebook(page, port: int, notebook: str, out: Path) -> None:
    name = Path(notebook).stem
    page.goto(f"http://127.0.0.1:{port}/lab/tree/{notebook}?reset")  # a fresh workspace: only this notebook
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator, .jp-KernelStatus, .jp-Toolbar", timeout=60_000)
    time.sleep(2)  # let the kernel start
    page.click(".jp-Notebook")
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_selector(".widget-slider", timeout=120_000)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until every cell ran (no "[*]" prompt left)
        busy = page.eval_on_selector_all(".jp-InputPrompt", "els => els.filter(e => e.textContent.includes('*')).length")
        if busy == 0:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"{notebook}: cells still running after 120 s")
    time.sleep(2)
    text = page.inner_text(".jp-Notebook")
    for bad in ("Error displaying widget", "Loading widget", "Traceback"):
        if bad in text:
            raise AssertionError(f"{notebook}: found {bad!r} in the notebook")
    sliders = page.query_selector_all(".widget-slider [role=slider], .widget-slider .noUi-handle")
    if not sliders:
        raise AssertionError(f"{notebook}: no slider rendered")
    before = image_sources(page)
    if not before:
        raise AssertionError(f"{notebook}: no figure image in the outputs")
    page.screenshot(path=str(out / f"{name}-before.png"), full_page=False)
    slider = sliders[-1]  # the explorer's last slider
    slider.scroll_into_view_if_needed()
    slider.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    deadline = time.time() + 30
    while time.time() < deadline and image_sources(page) == before:
        time.sleep(0.5)
    after = image_sources(page)
    slider.screenshot(path=str(out / f"{name}-slider.png"))
    page.screenshot(path=str(out / f"{name}-after.png"), full_page=False)
    if after == before:
        raise AssertionError(f"{notebook}: moving the slider did not change any figure")
    print(f"ok {notebook}: {len(sliders)} sliders, {len(after)} figures, slider moved and the figure changed")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notebooks", nargs="+", default=["notebooks/07_in_aff.ipynb"])
    ap.add_argument("--out", default=str(REPO / "test-output/browser"))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="inolib-browser-"))  # copies: JupyterLab may autosave outputs
    for nb in args.notebooks:
        (root / nb).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / nb, root / nb)
    with open(out / "jupyterlab.log", "w") as log:
        lab = start_lab(port, root, log)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                for nb in args.notebooks:
                    context = browser.new_context(viewport={"width": 1400, "height": 1000})
                    check_notebook(context.new_page(), port, nb, out)
                    context.close()
                browser.close()
        finally:
            os.killpg(lab.pid, signal.SIGTERM)
            lab.wait(timeout=30)
            shutil.rmtree(root, ignore_errors=True)
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
