# rlrepro — `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
ARGS ?= paper=drqv2 env=cheetah_run
HPO ?= conf/hpo/sac_smoke.yaml
HPO_ARGS ?=
export MUJOCO_GL ?= egl
export PYTHONHASHSEED ?= 0

.DEFAULT_GOAL := help
.PHONY: help install run smoke test test-slow lint format typecheck bench report results compare sweep hpo clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0    # first: a CPU wheel here; an unpinned torch pulls a multi-GB CUDA build
	$(PIP) install torch==2.13.0 -e '.[dev,eval-test]'
	$(PY) -c "import torch, mujoco, dm_control, gymnasium, hydra; print('torch', torch.__version__, 'mujoco', mujoco.__version__)"
	touch $@

install: $(VENV)/.installed ## create the virtual environment and install everything (idempotent)

run: install ## run a job: make run ARGS="paper=drqv2 env=cheetah_run"
	$(PY) run.py $(ARGS)

smoke: install ## a sub-minute CPU run of ARGS with debug=smoke
	OMP_NUM_THREADS=1 $(PY) run.py $(ARGS) debug=smoke

test: install ## run the test suite (CPU, under 15 minutes on 2 cores; one pytest-xdist worker per core)
	OMP_NUM_THREADS=1 WANDB_MODE=disabled $(PY) -m pytest -q -n auto --dist loadgroup

test-slow: install ## run only the tests marked slow
	OMP_NUM_THREADS=1 WANDB_MODE=disabled $(PY) -m pytest -q -m slow

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

typecheck: install ## mypy on common/
	$(VENV)/bin/mypy

bench: install ## run the benchmarks; JSON to stdout and bench/*.json (figures go to bench/RESULTS.md)
	$(PY) bench/bench_env.py | tee bench/env.json
	$(PY) bench/bench_replay.py | tee bench/replay.json
	$(PY) bench/bench_update.py | tee bench/update.json
	$(PY) bench/bench_drm.py | tee bench/drm.json
	$(PY) bench/bench_stream.py | tee bench/stream.json
	$(PY) bench/bench_stats.py | tee bench/stats.json
	$(PY) bench/bench_d4rl.py | tee bench/d4rl.json
	$(PY) bench/bench_offline.py | tee bench/offline.json
	$(PY) bench/bench_diffusion.py | tee bench/diffusion.json
	$(PY) bench/bench_dqn.py --threads 1 | tee bench/dqn.json
	$(PY) bench/bench_discrete_env.py | tee bench/discrete_env.json
	$(PY) bench/bench_td3_ppo.py --rounds 3 | tee bench/td3_ppo.json

report: install ## a report from run dirs: make report RUNS="runs/sac runs/stream_ac" [OUT=report] [COMPARE=dir]
	$(PY) -m common.report $(RUNS) --out $(or $(OUT),report) $(if $(COMPARE),--compare $(COMPARE))

results: install ## results pages: make results [PAGE=results/stream_x] (its report + verdicts), then the index
	$(if $(PAGE),$(PY) -m common.report.claims $(PAGE) &&) $(PY) -m common.report.index

compare: install ## AdaStop comparison: make compare CMP="paper=sac,stream_ac env=cartpole_swingup --n 5 --K 5"
	OMP_NUM_THREADS=1 $(PY) -m common.evaluation.compare $(or $(CMP),paper=sac,stream_ac env=cartpole_swingup debug=smoke --n 3 --K 3)

sweep: install ## expand a sweep file into a Hydra multirun: make sweep S=sweeps/drm_dog.yaml [SWEEP_ARGS="..."]
	$(PY) -m common.hpo.sweep $(S) $(SWEEP_ARGS)

hpo: install ## an Optuna study (default: a ~3-min CPU demo): make hpo [HPO=conf/hpo/sac.yaml HPO_ARGS="env=hopper"]
	OMP_NUM_THREADS=1 WANDB_MODE=$${WANDB_MODE:-disabled} $(PY) -m common.hpo $(HPO) $(HPO_ARGS)

clean: ## remove caches (keeps runs/ and the venv)
	rm -rf .pytest_cache .ruff_cache .mypy_cache MUJOCO_LOG.TXT
