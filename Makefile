# Two entry points: `make demo` (the main job on embedded defaults) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= outputs/demo

.PHONY: venv test test-fast typecheck format demo lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned to the local CPU wheel when missing; pyproject allows a range for CUDA builds
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python .ci/typecheck
	MUJOCO_GL=egl $(BIN)/python -m pytest -x -q

# the tests that start no processes and train nothing: about a minute and a half on 2 cores
test-fast: venv
	MUJOCO_GL=egl $(BIN)/python -m pytest -x -q -m "not slow and not learning"

typecheck: venv
	$(BIN)/python .ci/typecheck

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: venv
	MUJOCO_GL=egl $(BIN)/python -m realloop.demo --out $(DEMO_DIR)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: venv
	$(BIN)/python benchmarks/dataset_write.py
	$(BIN)/python benchmarks/dataset_read.py
	MUJOCO_GL=egl $(BIN)/python benchmarks/sim_envs.py
	MUJOCO_GL=egl $(BIN)/python benchmarks/sim_experts.py
	$(BIN)/python benchmarks/ros_transport.py
	MUJOCO_GL=egl $(BIN)/python benchmarks/recorder_cpu.py
	$(BIN)/python benchmarks/policy_inference.py
	MUJOCO_GL=egl $(BIN)/python benchmarks/policy_training.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
