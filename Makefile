# Two commands set everything up on a fresh machine with Python 3.11:
#   make demo   -- create .venv if missing, install, run the demo on bundled data
#   make test   -- create .venv if missing, install, run every test (unit tests, then notebooks)
# On a machine with one CUDA GPU:
#   make gpu-check -- every GPU figure in one run of under 8 minutes (docs/gpu_check.md)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all install demo test unit notebooks lab book student clean test-browser gpu-check gpu-check-dry gpu-wheels

all: test

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@-$(PY) -m pip uninstall --quiet -y decord >/dev/null 2>&1  # decord 0.6 of an older install: decord2 replaces it
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@-$(VENV)/bin/nbstripout --install >/dev/null 2>&1  # strip notebook outputs on commit (git filter)
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ino demo

# tests/test_gpu_check.py runs the GPU check's CPU dry run (benchmarks/gpu_check.py --dry) among the unit tests.
# Two pytest workers (pytest-xdist; one file per worker at a time), each torch on one thread: most tests wait on
# Python, imports and subprocesses rather than on arithmetic. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
test: $(STAMP)
	INOLIB_SMOKE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q $(XDIST) --durations=12 tests
	@$(MAKE) --no-print-directory notebooks

# Notebooks run under nbval in smoke mode with torch's default threads, as in a learner's JupyterLab (a lesson that
# only works on one thread, like a fork from a threaded kernel, must fail here); CI fails on a notebook committed
# with outputs.
notebooks: $(STAMP)
	@nbs=$$(ls notebooks/*.ipynb 2>/dev/null); \
	if [ -n "$$nbs" ]; then \
	  $(VENV)/bin/nbstripout --verify $$nbs && \
	  env -u OMP_NUM_THREADS INOLIB_SMOKE=1 $(PY) -m pytest -q $(XDIST) --nbval-lax --nbval-current-env --nbval-cell-timeout=300 -p no:cacheprovider $$nbs; \
	else echo "no notebooks yet"; fi

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# Every lesson executed in laptop mode (a 2-core CPU: under 5 minutes each) and rendered to static HTML with a
# contents page: build/book/index.html. BOOK_MODE=smoke for a quick look, BOOK_MODE=paper on a GPU.
BOOK_MODE ?= laptop
book: $(STAMP)
	$(PY) -m inolib.course.book --notebooks notebooks --out build/book --mode $(BOOK_MODE)

# The student edition (the Neuromatch practice): every lesson without its solution cells (tagged `solution`), written
# to build/student/ (never into notebooks/); the checks still run each exercise on its hidden inputs.
student: $(STAMP)
	$(PY) -m inolib.course.exercises --notebooks notebooks --out build/student

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# Widgets in a real browser: JupyterLab on localhost + Debian's Chromium driven by Playwright.
# Installs chromium with apt-get (needs root or sudo) and playwright into .venv; screenshots in test-output/browser.
test-browser: $(STAMP)
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
	@$(PY) -c "import playwright" 2>/dev/null || $(PY) -m pip install --quiet playwright
	$(PY) tests/browser/check_widgets.py --notebooks notebooks/01_data_and_crops.ipynb notebooks/02_vit_tokens.ipynb notebooks/04_out_g2g.ipynb notebooks/06_in_mim.ipynb notebooks/07_in_aff.ipynb notebooks/08_training_on_a_laptop.ipynb notebooks/10_label_propagation.ipynb notebooks/11_your_own_video.ipynb

# One GPU check: benchmarks/gpu_check.py on one CUDA GPU, under 8 minutes, results in GPU_CHECK_OUT.
# No install step: a GPU machine may reach no package registry. GPU_PY is .venv's python when there is one, else
# python3; there, put the wheels of `make gpu-wheels` on PYTHONPATH first (docs/gpu_check.md).
GPU_PY        ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_CHECK_OUT ?= outputs/gpu_check_results.md
gpu-check:
	PYTHONUNBUFFERED=1 $(GPU_PY) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

# The same stages on this CPU with tiny shapes (make test runs it too, in tests/test_gpu_check.py).
gpu-check-dry: $(STAMP)
	INOLIB_SMOKE=1 $(PY) benchmarks/gpu_check.py --dry --out outputs/gpu_check_dry.md

# The wheels the GPU machine lacks (decord, nbclient, ipykernel, ipywidgets, timm and their dependencies) -> .whl/
gpu-wheels: $(STAMP)
	$(PY) benchmarks/gpu_wheels.py
