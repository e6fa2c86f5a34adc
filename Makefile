# The two commands of the project. Both set themselves up: a local .venv with the project installed.
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2
# The CPU build of torch where no CUDA GPU is present (pip finds it on these machines' disk).
TORCH_SPEC := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo "torch>=2.4" || echo "torch==2.13.0")

.PHONY: study test lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

study: $(VENV)/.installed
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/snakemake --cores $(CORES)

test: $(VENV)/.installed lint
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf results .snakemake
