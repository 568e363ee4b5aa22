# The two commands of the README. Both create or reuse .venv/ and install what they need first.
#   make demo   the shipped default: simulated arm + shipped model over real ROS 2
#   make test   the test suite (what CI runs)
# Other targets: make lint, make test-all (adds the slow suites).

VENV := .venv
PY := $(VENV)/bin/python
export AMENT_PREFIX_PATH := $(CURDIR)/$(VENV)
export MUJOCO_GL ?= egl
export LP_NUM_THREADS ?= 1

.PHONY: demo test test-all lint venv-demo venv-test

venv-demo:
	@scripts/setup_venv.sh core,ros,sim,onnx

venv-test:
	@scripts/setup_venv.sh core,ros,sim,onnx,record,dev,interfaces

demo: venv-demo
	$(PY) -m dream_vla_ros.cli demo

test: venv-test
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not slow" --timeout=900

test-all: venv-test
	$(PY) -m pytest --timeout=1800

lint: venv-test
	$(PY) -m ruff check .
