# densitybench: `make run` runs the default benchmark, `make test` the test suite.
# Both create .venv when it is missing and install the project into it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# pip constraint: torch is pinned to 2.13.0 (any other spelling pulls a multi-GB CUDA build)
PIP_INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: run test test-all lint bench gpu-check gpu-wheels list clean browser latex

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(PY)
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[test,distributed]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[bench]'
	touch $@

run: $(VENV)/.installed
	$(PY) -m harness run

# Headless Chromium for tests/test_browser.py (Debian packages; needs root and apt-get). Without
# them the browser test is skipped, and fails under CI=true.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium and chromium-driver (apt-get) for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
			|| echo "warning: chromium could not be installed: the browser test will be skipped (it fails under CI=true)"; \
	else echo "note: chromium is missing and apt-get is unavailable or not root: the browser test will be skipped"; fi

# A TeX engine for tests/test_latex.py, which compiles a report.tex (Debian packages; needs root and
# apt-get). Without pdflatex the test is skipped, and fails under CI=true.
latex:
	@if command -v pdflatex >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing texlive-latex-base and texlive-latex-recommended (apt-get) for the LaTeX test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			texlive-latex-base texlive-latex-recommended >/dev/null \
			|| echo "warning: TeX could not be installed: the LaTeX test will be skipped (it fails under CI=true)"; \
	else echo "note: pdflatex is missing and apt-get is unavailable or not root: the LaTeX test will be skipped"; fi

test: $(VENV)/.installed-test browser latex
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -m "not slow and not gpu" -q

test-all: $(VENV)/.installed-test browser latex
	$(PY) -m pytest -q

# ruff (configured in pyproject.toml): lint rules, then the formatter's verdict without rewriting.
lint: $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(VENV)/.installed-bench
	$(PY) -m asv machine --yes --machine local >/dev/null
	$(PY) -m asv run --python=same --quick --show-stderr --machine local --set-commit-hash $$(git rev-parse HEAD)
	$(PY) benchmarks/print_ratios.py

gpu-check: $(VENV)/.installed-test
	scripts/gpu_check.sh reports/gpu-check

# For an offline GPU machine: the wheels its own python may lack (pure-Python ones built here, POT's
# binary wheels for each Python in GPU_PYTHONS) into wheels/, and the real data its grid reads into
# gpu-data/. Both folders are git-ignored; copy the checkout with them. Needs the package index here.
GPU_PYTHONS ?= 3.11 3.12 3.13
gpu-wheels: $(PY)
	mkdir -p wheels
	$(PIP) wheel --quiet --disable-pip-version-check --no-deps -w wheels nflows==0.14 torchdiffeq tabulate tqdm pytest pluggy iniconfig
	for v in $(GPU_PYTHONS); do \
	  $(PIP) download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version $$v \
	    --platform manylinux2014_x86_64 -d wheels 'pot>=0.9' || exit 1; done
	if [ -d ../shared/data/maf-splits/miniboone ]; then \
	  mkdir -p gpu-data/maf-splits && cp -r ../shared/data/maf-splits/miniboone gpu-data/maf-splits/; fi
	ls wheels gpu-data/maf-splits/miniboone

list: $(VENV)/.installed
	$(PY) -m harness list

clean:
	rm -rf $(VENV) .pytest_cache reports/default
