"""Helpers for the lesson notebooks: setup, environment check, data paths, showing source, exercise checks."""

from __future__ import annotations

import inspect
import os
import random
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from ..config import course_mode


def data_dir() -> Path:
    """The bundled ``data/`` folder: ``$INOLIB_DATA``, else ``data/`` next to the notebooks or the cwd."""
    env = os.environ.get("INOLIB_DATA")
    if env:
        return Path(env)
    repo = Path(sys.modules["inolib"].__file__).resolve().parent.parent  # the folder holding inolib/
    for base in (Path.cwd(), *Path.cwd().parents[:2], repo):
        if (base / "data" / "davis_sample").is_dir():
            return base / "data"
    raise FileNotFoundError("cannot find the bundled data/ folder; set INOLIB_DATA to its path")


def load_shipped(device: str | torch.device = "cpu", network: str = "student"):
    """The shipped checkpoint ``data/checkpoints/ino_tiny.pth``: ``(backbone, config, random)``, where ``random`` is
    a random initialisation of the same architecture (seed 0), the baseline it is compared with."""
    from ..checkpoint import load_backbone
    from ..model import build_backbone

    path = data_dir() / "checkpoints" / "ino_tiny.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the shipped checkpoint comes with the repository (git lfs is not "
                                "needed); check your clone")
    vit, report = load_backbone(path, key=network, device=device)
    cfg = report["config"]
    torch.manual_seed(0)
    return vit, cfg, build_backbone(cfg.model).to(device).eval()


def load_weights(checkpoint: str | Path, device: str | torch.device = "cpu", network: str | None = None):
    """A backbone from a file or a weights name (``dino-vits8``, ``ino-vits8-charades``, ...: fetched once into the
    cache, see :mod:`inolib.weights`): ``(backbone, report)``, as :func:`inolib.load_backbone` gives."""
    from .. import load_backbone

    return load_backbone(checkpoint, key=network, device=device)


def load_shipped_network(device: str | torch.device = "cpu", network: str = "student"):
    """The shipped network WITH its projection head (``data/checkpoints/ino_tiny.pth`` holds both), for lessons that
    look at the distributions the losses compare: ``(net, centers, random_net)``.

    ``net`` is an :class:`inolib.model.INONetwork` (``network``: student or teacher), ``centers`` the run's final
    loss centers ``{"cls": (1, K), "patch": (1, K)}``, ``random_net`` a random initialisation of the same network
    (seed 0: its backbone is the ``random`` of :func:`load_shipped`)."""
    from ..checkpoint import config_from, network_from, read_checkpoint
    from ..model import build_network

    path = data_dir() / "checkpoints" / "ino_tiny.pth"
    obj = read_checkpoint(path)  # read once: the network and its config
    net, centers = network_from(obj, path, key=network, device=device)
    cfg = config_from(obj, path)
    torch.manual_seed(0)
    return net, centers, build_network(cfg.model).to(device).eval()


MODE_TEXT = {
    "smoke": "smoke mode: tiny sizes, seconds on a CPU (what the tests run)",
    "laptop": "laptop mode: minutes on a CPU, the shipped model where training would take hours",
    "paper": "paper mode: a GPU and the paper's sizes",
}


def setup(seed: int = 0, smoke: bool | None = None, mode: str | None = None) -> dict:
    """Seed everything, pick the device, and print one line about the mode.

    Returns ``{"device", "smoke", "mode"}``. ``mode`` is one of ``smoke``, ``laptop``, ``paper`` (default:
    :func:`inolib.config.course_mode`); the older ``smoke=True`` means mode smoke, ``smoke=False`` the default
    of the others. The device is the GPU in paper mode when there is one, else the CPU.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if mode is None and smoke is not None:
        mode = "smoke" if smoke else ("paper" if torch.cuda.is_available() else "laptop")
    mode = course_mode(mode)
    device = torch.device("cuda" if torch.cuda.is_available() and mode == "paper" else "cpu")
    print(f"inolib ready: {MODE_TEXT[mode]}; device {device}; torch {torch.__version__}")
    return {"device": device, "smoke": mode == "smoke", "mode": mode}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def decoder_version() -> str | None:
    """The installed video decoder, ``decord2 X`` (the maintained fork) or ``decord X``; None when neither is."""
    for dist in ("decord2", "decord"):
        v = _version(dist)
        if v is not None:
            return f"{dist} {v}"
    return None


def environment_check() -> list[str]:
    """Check what the course needs; print each finding with how to fix it. Returns the problems found."""
    problems = []
    ipyw, labw = _version("ipywidgets"), _version("jupyterlab_widgets")
    if ipyw is None:
        problems.append("ipywidgets is missing: pip install 'ipywidgets>=8,<9'")
    elif labw is None:
        problems.append("jupyterlab_widgets is missing (widgets will show 'model not found'): "
                        "pip install 'ipywidgets>=8,<9' (it brings the matching jupyterlab_widgets 3)")
    elif int(ipyw.split(".")[0]) != 8 or int(labw.split(".")[0]) != 3:
        problems.append(f"ipywidgets {ipyw} and jupyterlab_widgets {labw} do not match (need 8.x with 3.x); "
                        "pip install -U 'ipywidgets>=8,<9' and restart JupyterLab")
    if decoder_version() is None:
        problems.append("no video decoder: reading .mp4 files will fail (pip install decord2: the maintained fork "
                        "of decord, also for Apple Silicon). DAVIS JPEG folders still work")
    elif _version("decord") is not None and _version("decord2") is not None:
        problems.append("decord and decord2 are both installed and share the `decord` folder (uninstalling one "
                        "breaks the other): pip uninstall -y decord decord2 && pip install decord2")
    if _version("timm") is None or not _version("timm").startswith("1.0"):
        problems.append(f"timm 1.0.x is required, found {_version('timm')}: pip install 'timm>=1.0,<1.1'")
    try:
        data_dir()
    except FileNotFoundError as e:
        problems.append(str(e))
    if not torch.cuda.is_available():
        print("note: no CUDA GPU; lessons run on the CPU (training a real run needs a GPU)")
    for p in problems:
        print("PROBLEM:", p)
    if not problems:
        print(f"environment OK: torch {torch.__version__}, timm {_version('timm')}, ipywidgets {ipyw} "
              f"with jupyterlab_widgets {labw}, {decoder_version()}")
    return problems


def show_source(obj) -> object:
    """Display the source of an inolib function or class in the notebook (the real code, shown once)."""
    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")


def check_shape(tensor: torch.Tensor, shape: tuple) -> None:
    """Assert ``tensor.shape == shape`` with a readable message; returns nothing (a cell ending with it prints
    no tensor)."""
    if tuple(tensor.shape) != tuple(shape):
        raise AssertionError(f"expected shape {tuple(shape)}, got {tuple(tensor.shape)}")


def check_exercise(fn, reference, *args, atol: float | None = None) -> bool | None:
    """Check a learner's ``fn``: prints one line, returns True, False, or None while not attempted (``fn`` raises
    ``NotImplementedError`` or returns ``...``). Never fails a CI run.

    ``reference`` is an exercise's name (``"04.2"``: lesson 04, exercise 2): ``fn(*args)`` is compared with the
    hidden reference answer on ``args`` and on inputs the lesson never shows (:mod:`inolib.course.exercises`).
    A function instead is compared with ``fn`` on ``args`` alone. A wrong answer is told by how many values differ,
    the first differing index and both values there.
    """
    from .exercises import check, run_check

    if isinstance(reference, str):
        return check(fn, reference, *args, atol=atol)
    return run_check(fn, reference, [args], atol=1e-5 if atol is None else atol)
