# The README's two commands:  `make closure` (main job)  and  `make test` (tests).
# Both create the virtual environment .venv on first use (CPU torch 2.13.0 pinned by constraints.txt).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
OUT ?= runs/closure
DIS_OUT ?= runs/closure-dis
DIS_RUNCARD ?= configs/closure_dis.yaml
ARGS ?= --resume
NOT_SLOW := not slow and not mpi and not slurm and not gpu and not rebuild

.PHONY: venv dis-operator closure-dis closure-dis-flow closure closure-detector posterior calibration closure-mcmc reference surrogate closure-surrogate refine vaim vaim-pdf hpo ensemble test test-slow test-rebuild lint format docs docs-serve bench threads mainjob scaling peers clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt torch==2.13.0
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

closure: $(STAMP)  ## main job: GAN closure test on case-B pseudo-data against the MCMC reference posterior
	$(PY) -m inverse.closure --config configs/closure_gan.yaml --out $(OUT) $(ARGS)

closure-detector: $(STAMP)  ## the closure test through the detector (resolution, acceptance, migrations; ~10 min)
	$(PY) -m inverse.closure --config configs/closure_detector.yaml --out runs/closure-detector $(ARGS)

posterior: $(STAMP)  ## posterior draws from the adversarial gradient on the default data, judged against MCMC (~5 min)
	$(PY) -m inverse.closure --config configs/posterior_gan.yaml --out runs/posterior $(ARGS)

calibration: $(STAMP)  ## posterior draws and replicas checked over 100 data sets with prior truths (SBC, TARP; hours)
	$(PY) -m inverse.closure --config configs/calibration_posterior.yaml --out runs/calibration --resume $(ARGS)

closure-mcmc: $(STAMP)  ## the whole forward workflow: MCMC event sampling behind the detector (~20 min)
	$(PY) -m inverse.closure --config configs/closure_mcmc.yaml --out runs/closure-mcmc $(ARGS)

reference: $(STAMP)  ## the statistical reference alone: Cramér–Rao table, MLE, MCMC posterior
	$(PY) -m physics.reference --config configs/reference.yaml --out runs/reference $(ARGS)

closure-dis: $(STAMP)  ## GAN closure on inclusive DIS (x, Q^2) events: exact reference, plots, LHAPDF sets of the replicas
	$(PY) -m inverse.gan.dis --config $(DIS_RUNCARD) --out $(DIS_OUT) $(ARGS)

closure-dis-flow: $(STAMP)  ## DIS closure with a learned (x, Q^2) flow as event sampler (make surrogate KIND=dis_flow first)
	$(PY) -m inverse.gan.dis --config $(DIS_RUNCARD) --sampler flow:runs/surrogate-dis_flow/model.pt \
		--out runs/closure-dis-flow $(ARGS)

dis-operator: $(STAMP)  ## rebuild the shipped DIS operator (eko x yadism; the first run compiles eko with numba, ~5 min)
	$(PY) -m physics.dis.build --out physics/dis/data/operator-default.npz
	sha256sum physics/dis/data/operator-default.npz | cut -d' ' -f1 > physics/dis/data/operator-default.sha256

KIND ?= flow
surrogate: $(STAMP)  ## train a surrogate event generator (KIND=flow|gan|vae|dis_flow) and judge it on held-out parameters
	$(PY) -m surrogates.train --config configs/surrogate_$(KIND).yaml --out runs/surrogate-$(KIND) $(ARGS)

closure-surrogate: $(STAMP)  ## the closure test with the trained surrogate (make surrogate first) as event sampler
	$(PY) -m inverse.closure --config configs/closure_gan.yaml --sampler $(KIND):runs/surrogate-$(KIND)/model.pt \
		--out runs/closure-$(KIND) $(ARGS)

REFINE_RUNCARD = $(if $(findstring dis,$(KIND)),$(DIS_RUNCARD),configs/closure_gan.yaml)
refine: $(STAMP)  ## refine the surrogate (make surrogate first) around the closure's replicas, in rounds (resumable)
	$(PY) -m inverse.gan.refinement --config $(REFINE_RUNCARD) --surrogate runs/surrogate-$(KIND)/model.pt \
		--out runs/refine-$(KIND) $(ARGS)

PROBLEM ?= x2
vaim: $(STAMP)  ## VAIM: train and draw every solution (PROBLEM=x2|sin|circle|pdf_shapes|pdf_counts|dis_counts)
	$(PY) -m inverse.vaim --config configs/vaim_$(PROBLEM).yaml --out runs/vaim-$(PROBLEM) $(ARGS)

vaim-pdf: $(STAMP)  ## VAIM on the PDF toy, shapes only and shapes + counts, and one plot of both (~5 min)
	$(PY) -m inverse.vaim --config configs/vaim_pdf_shapes.yaml --out runs/vaim-pdf_shapes $(ARGS)
	$(PY) -m inverse.vaim --config configs/vaim_pdf_counts.yaml --out runs/vaim-pdf_counts $(ARGS)
	$(PY) -m inverse.vaim --compare runs/vaim-pdf_shapes runs/vaim-pdf_counts --labels "shapes only" \
		"shapes + counts" --out runs/vaim-pdf-compare.png

HPO ?= gan
EVALUATOR ?= serial
WORKERS ?= 2
hpo: $(STAMP)  ## hyperparameter search (HPO=gan|quick|stopper|vaim|dis, EVALUATOR=serial|thread|process|mpi, WORKERS=N)
	$(PY) -m hpo.search --config configs/hpo_$(HPO).yaml --out runs/hpo-$(HPO) --evaluator $(EVALUATOR) \
		--workers $(WORKERS) $(HPO_ARGS)

TOP ?= 5
ENSEMBLE_ARGS ?= --resume
ensemble: $(STAMP)  ## ensemble of the TOP best trials of runs/hpo-$(HPO), split into aleatoric + epistemic
	$(PY) -m hpo.ensemble --search runs/hpo-$(HPO) --top $(TOP) --out runs/ensemble-$(HPO) \
		--evaluator $(EVALUATOR) --workers $(WORKERS) $(ENSEMBLE_ARGS)

test: $(STAMP)  ## fast tests (~7 min on 2 cores)
	$(PY) -m pytest -m "$(NOT_SLOW)"

test-slow: $(STAMP)  ## slow statistical checks, real MPI searches (mpiexec), the batch scripts on a local Slurm cluster
	$(PY) -m pytest -m "(slow or mpi or slurm or gpu) and not rebuild"

test-rebuild: $(STAMP)  ## rebuild the DIS operator and compare it with the shipped file (~15 min); the NLO checks (its operator built on first use, 20–80 min)
	$(PY) -m pytest -m rebuild

lint: $(STAMP)
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/ruff format --no-cache --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

docs: $(STAMP)  ## build the documentation site into site/ (mkdocs, strict: a broken link is an error)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: $(STAMP)  ## serve the documentation at http://127.0.0.1:8000 while editing it
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

bench: $(STAMP)  ## benchmarks print JSON (peers: make peers)
	$(PY) benchmarks/sampler.py
	$(PY) benchmarks/samplers.py
	$(PY) benchmarks/replicas.py
	$(PY) benchmarks/losses.py
	$(PY) benchmarks/hpo.py

threads: $(STAMP)  ## seconds per GAN step with 1, 2 and automatic threads, alone and next to a busy process
	$(PY) benchmarks/threads.py

mainjob: $(STAMP)  ## the main job's wall time, stage by stage (measure on an idle machine)
	$(PY) benchmarks/mainjob.py

scaling: $(STAMP)  ## weak scaling: MPI search over 1, 2, 4 workers; one GAN data-parallel over 1, 2 processes
	$(PY) benchmarks/scaling.py

PEERS_ARGS ?=
peers: $(STAMP)  ## the GAN, the MCMC posterior and sbi's NPE on the same data (PEERS_ARGS="--problem dis" for DIS)
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[peers]"
	$(PY) benchmarks/peers.py $(PEERS_ARGS)

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache *.egg-info
