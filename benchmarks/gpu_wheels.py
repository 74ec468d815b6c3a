"""Download, here, the wheels the GPU check needs and a GPU machine without a package registry lacks.

    .venv/bin/python benchmarks/gpu_wheels.py            # -> .whl/*.whl (about 40 MB), ignored by git

The GPU machine's image this was written for (its package list of 2026-11-17) has Python 3.12 with torch, torchvision, timm,
numpy, matplotlib, tqdm, tensorboard and psutil, but not decord2 (the training videos), nbclient / ipykernel (the
lessons) or ipywidgets (the lessons import inolib.course.widgets). This script takes the versions installed in this
environment (the ones the tests ran with) of those packages and of every dependency the image does not have, and
downloads their wheels for CPython 3.12 on x86_64 Linux. timm is carried too: inolib needs timm 1.0.x and the image's
version is not known. On the GPU machine, in the repository root:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
WANTED = ["decord2", "nbclient", "nbformat", "ipykernel", "jupyter_client", "ipywidgets", "timm"]
ALWAYS = {"timm"}  # carried even though the image has a timm (its version is unknown)
# the Python packages already on that image (its package list of 2026-11-17)
ON_DEVICE = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers
flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py
markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt
xarray xxhash yarl zipp""".split()
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux_2_12_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]  # decord 0.6.0 was manylinux2010


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def needed() -> dict[str, str]:
    """{distribution: version installed here} for WANTED and their dependencies that the GPU image lacks."""
    env = dict(default_environment(), python_version="3.12", python_full_version="3.12.3", extra="")
    have = {norm(n) for n in ON_DEVICE} - {norm(n) for n in ALWAYS}
    out: dict[str, str] = {}
    todo = list(WANTED)
    while todo:
        name = todo.pop()
        if norm(name) in out:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{name} is not installed here: run `make install` first (the versions are taken from here)")
        out[norm(name)] = dist.version
        for r in dist.requires or []:
            req = Requirement(r)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            if norm(req.name) not in have:
                todo.append(req.name)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", default=str(REPO / ".whl"), help="folder for the wheels (default .whl)")
    ap.add_argument("--list", action="store_true", help="only print the name==version list")
    args = ap.parse_args()
    pins = [f"{n}=={v}" for n, v in sorted(needed().items())]
    if args.list:
        print("\n".join(pins))
        return 0
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    if dest.resolve() == (REPO / ".whl").resolve():  # keep the wheels out of git
        exclude = Path(subprocess.run(["git", "rev-parse", "--git-path", "info/exclude"], cwd=REPO, text=True,
                                      capture_output=True, check=True).stdout.strip())
        exclude = exclude if exclude.is_absolute() else REPO / exclude
        exclude.parent.mkdir(parents=True, exist_ok=True)
        if "/.whl/" not in (exclude.read_text().split() if exclude.is_file() else []):
            with open(exclude, "a") as f:
                f.write("/.whl/\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "-d", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    print(f"downloading {len(pins)} wheels into {dest}: " + " ".join(pins), flush=True)
    subprocess.run(cmd + pins, check=True)
    wheels = sorted(dest.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{len(wheels)} wheels, {size:.1f} MiB in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
