# The README's two commands:  `make closure` (main job)  and  `make test` (tests).
# Both create the virtual environment .venv on first use (CPU torch 2.13.0 pinned by constraints.txt).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
OUT ?= runs/closure
NOT_SLOW := not slow and not mpi and not slurm and not gpu

.PHONY: venv closure test test-slow lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt torch==2.13.0
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

closure: $(STAMP)  ## main job: case-B pseudo-data, Cramér–Rao table, MLE, MCMC reference posterior
	$(PY) -m physics.reference --config configs/reference.yaml --out $(OUT)

test: $(STAMP)  ## fast tests (~1 minute on 2 cores)
	$(PY) -m pytest -m "$(NOT_SLOW)"

test-slow: $(STAMP)  ## slow statistical checks (and later mpi / slurm ones)
	$(PY) -m pytest -m "slow or mpi or slurm or gpu"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)  ## benchmarks print JSON
	$(PY) benchmarks/sampler.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
