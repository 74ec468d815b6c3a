# Two commands set everything up on a fresh machine with Python 3.11:
#   make demo   -- create .venv if missing, install, run the demo on bundled data
#   make test   -- create .venv if missing, install, run every test (unit tests, then notebooks)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all install demo test unit notebooks lab clean test-browser

all: test

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@-$(VENV)/bin/nbstripout --install >/dev/null 2>&1  # strip notebook outputs on commit (git filter)
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ino demo

test: $(STAMP)
	INOLIB_SMOKE=1 $(PY) -m pytest -q tests
	@$(MAKE) --no-print-directory notebooks

# Notebooks run under nbval in smoke mode; CI fails on a notebook committed with outputs.
notebooks: $(STAMP)
	@nbs=$$(ls notebooks/*.ipynb 2>/dev/null); \
	if [ -n "$$nbs" ]; then \
	  $(VENV)/bin/nbstripout --verify $$nbs && \
	  INOLIB_SMOKE=1 $(PY) -m pytest -q --nbval-lax --nbval-current-env --nbval-cell-timeout=300 -p no:cacheprovider $$nbs; \
	else echo "no notebooks yet"; fi

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# Widgets in a real browser: JupyterLab on localhost + Debian's Chromium driven by Playwright.
# Installs chromium with apt-get (needs root or sudo) and playwright into .venv; screenshots in test-output/browser.
test-browser: $(STAMP)
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
	@$(PY) -c "import playwright" 2>/dev/null || $(PY) -m pip install --quiet playwright
	$(PY) tests/browser/check_widgets.py --notebooks notebooks/02_out_g2g.ipynb notebooks/04_in_mim.ipynb notebooks/05_in_aff.ipynb notebooks/06_training.ipynb notebooks/07_label_propagation.ipynb
