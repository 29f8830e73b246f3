# The README's two commands: `make demo` and `make test`. Each creates .venv/ when it
# is missing and installs the project with the pinned versions in constraints.txt.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP_VERSION := 26.3
ARGS ?=

.PHONY: demo test test-current test-wheel image test-image install kubeflow benchmark clean

install: $(STAMP)

# pip's own output goes to .venv/install.log; on a failure its last lines are shown.
INSTALL_LOG := $(VENV)/install.log
QUIET_INSTALL = bash -c '"$$@" >> $(INSTALL_LOG) 2>&1 || { tail -n 40 $(INSTALL_LOG) >&2; \
  echo "error: installing the packages failed; pip'"'"'s whole output is in $(INSTALL_LOG)" >&2; exit 1; }' quiet

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || { \
	  echo "error: this project needs CPython 3.11 as '$(PYTHON)' (found: $$($(PYTHON) --version 2>&1)). Install python3.11 or run: make PYTHON=/path/to/python3.11 $(MAKECMDGOALS)" >&2; exit 2; }
	@if [ ! -x $(PY) ]; then \
	  $(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
	    echo "error: '$(PYTHON) -m venv' failed: install the venv module, e.g. 'apt-get install python3-venv' (Debian/Ubuntu), then re-run make." >&2; exit 2; }; \
	fi
	@echo "Installing the pinned packages into $(VENV) (minutes the first time; pip's output: $(INSTALL_LOG))"
	@: > $(INSTALL_LOG)
	@$(QUIET_INSTALL) $(PY) -m pip install --quiet --disable-pip-version-check "pip==$(PIP_VERSION)"
	@# TFX 1.16 declares Requires-Python <3.11 but runs on 3.11 (constraints.txt).
	@$(QUIET_INSTALL) $(PY) -m pip install --quiet --disable-pip-version-check --ignore-requires-python \
	  -c constraints.txt -e ".[test,kubeflow,dask]"
	@touch $(STAMP)

demo: $(STAMP)
	@$(PY) -m tfx_compression.pipelines.local_runner $(ARGS)

test: $(STAMP)
	$(PY) -m pytest tests $(ARGS)

# The second tested set: TFX 1.21 / TensorFlow 2.21 / CPython 3.13 in a Debian 13 root
# made with debootstrap (TFX 1.21 needs glibc >= 2.39). The package's wheel is installed
# there with plain pip beside TFX 1.21, then the unit tests, tests/install and the demo
# and penguin e2e tests run. Needs root; the root is kept in CURRENT_ROOT and reused.
# CURRENT_TESTS="unit install demo penguin" picks parts. See tools/test_current.sh.
CURRENT_ROOT ?= /var/cache/tfx-compression/trixie
test-current:
	CURRENT_ROOT="$(CURRENT_ROOT)" tools/test_current.sh

# The same wheel installed with plain pip beside the TFX 1.16 of .venv/ (an overlay venv,
# so .venv/ is left as it is), then tests/install and the demo e2e test against it.
test-wheel: $(STAMP)
	tools/test_wheel_beside_venv.sh $(ARGS)

# The Kubeflow image from docker/Dockerfile, built with buildah (no Docker daemon):
#   make image [IMAGE=<name:tag>] [BASE_IMAGE=auto|debian|<image>]
# auto: the official tensorflow/tfx:1.16.0 when it can be pulled, else a Debian 12 base
# made with debootstrap. Needs root. See tools/build_image.sh.
# (IMAGE keeps no default here: `make kubeflow` must be told which image to name.)
BASE_IMAGE ?= auto
image:
	IMAGE="$(or $(IMAGE),localhost/tfx-compression:0.1.0)" BASE_IMAGE="$(BASE_IMAGE)" \
	  tools/build_image.sh

# Builds the image, then runs the Pruner, Quantizer and CompressionEvaluator inside it
# through TFX's Kubeflow V2 entrypoint (tests/install/test_image.py). Needs root.
test-image: $(STAMP) image
	TFX_COMPRESSION_IMAGE="$(or $(IMAGE),localhost/tfx-compression:0.1.0)" \
	  $(PY) -m pytest tests/install/test_image.py $(ARGS)

# Compile the pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines (nothing is
# uploaded or run); every step runs IMAGE, built from docker/Dockerfile:
#   make kubeflow IMAGE=<name:tag> PIPELINE_ROOT=<uri> DATA_ROOT=<uri> [ARGS="--max-drop 0.02"]
# Writes outputs/kubeflow/digits-compression.json (Vertex AI) and .yaml (Kubeflow
# Pipelines) and prints their paths. More options: .venv/bin/python -m tfx_compression.pipelines.kubeflow_runner --help
kubeflow: $(STAMP)
	@$(PY) -m tfx_compression.pipelines.kubeflow_runner --image="$(IMAGE)" \
	  --pipeline-root="$(PIPELINE_ROOT)" --data-root="$(DATA_ROOT)" $(ARGS)

# Our pipeline against the hand-written tf_keras + tfmot workflow, side by side
# (benchmarks/README.md): about 10 minutes on 2 cores. Prints one table and writes
# benchmarks/results/benchmark.json. ARGS="--smoke" for the quick CI variant.
benchmark: $(STAMP)
	$(PY) -m benchmarks.run $(ARGS)

clean:
	rm -rf outputs .pytest_cache
