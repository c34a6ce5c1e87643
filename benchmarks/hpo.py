"""Speed of the hyperparameter search: trials per minute and worker utilisation over MPI, and k-fold trial time.

Usage::

    python benchmarks/hpo.py                       # 1, 2, 4 MPI workers on configs/hpo_quick.yaml
    python benchmarks/hpo.py --workers 1 2 --evals 8 --skip-kfold

Prints JSON:
  * ``mpi``: for each number of workers, a real ``python -m hpo.search --evaluator mpi`` run (mpiexec with
    workers + 1 ranks) of ``--evals`` trials: trials per minute, worker utilisation = summed trial wall time /
    (workers x search wall time), median trial seconds, and the whole command's wall time (MPI start included);
  * ``kfold``: one trial's k folds (4 folds x R = 10 replicas, ``configs/closure_gan.yaml`` with 100 steps and 512
    events per parameter set), all folds in one vectorized model against fold by fold.
On a machine with fewer cores than workers the trials share cores: utilisation stays high while each trial slows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its name would hide the hpo package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def mpi_search(workers: int, evals: int, config: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "hpo.search", "--config", str(config), "--out", str(out)]
        cmd += ["--evaluator", "mpi", "--workers", str(workers), "--max-evals", str(evals), "--quiet"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        total = time.perf_counter() - start
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        summary = json.loads((out / "summary.json").read_text())
    session = summary["this_session"]
    return {
        "workers": workers,
        "trials": summary["trials"],
        "failed": summary["failed"],
        "trials_per_minute": round(session["trials_per_minute"], 2),
        "trials_per_minute_per_worker": round(session["trials_per_minute"] / workers, 2),
        "worker_utilisation": round(session["worker_utilisation"], 3),
        "median_trial_s": round(session["median_trial_s"], 2),
        "search_wall_s": round(summary["wall_s"], 1),
        "command_wall_s": round(total, 1),
    }


def kfold_timing(replicas: int, steps: int, events: int) -> dict:
    from hpo.kfold import KFoldConfig, run_gan_folds
    from inverse.config import ClosureConfig
    from physics.config import load_yaml, parse_config
    from physics.datasets import Experiment
    from physics.pseudodata import generate_pseudodata

    card = parse_config(ClosureConfig, load_yaml(ROOT / "configs" / "closure_gan.yaml"), "closure_gan.yaml")
    training = card.gan.training.model_copy(update={"steps": steps, "events_per_param": events, "progress": False})
    gan = card.gan.model_copy(update={"training": training})
    experiment = Experiment(card.physics)
    data = generate_pseudodata(experiment, seed=card.data.seed)
    out = {"folds": len(experiment.names), "replicas_per_fold": replicas, "steps": steps, "events_per_param": events}
    estimates = {}
    for vectorize in (True, False):
        start = time.perf_counter()
        folds = run_gan_folds(gan, experiment, data, KFoldConfig(replicas=replicas, vectorize=vectorize))
        out[f"{'vectorized' if vectorize else 'looped'}_s"] = round(time.perf_counter() - start, 2)
        estimates[vectorize] = np.concatenate([f.estimates for f in folds])
    out["speedup"] = round(out["looped_s"] / out["vectorized_s"], 2)
    out["max_estimate_difference"] = float(np.abs(estimates[True] - estimates[False]).max())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--evals", type=int, default=12, help="trials per search")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "hpo_quick.yaml")
    p.add_argument("--replicas", type=int, default=10)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--events", type=int, default=512)
    p.add_argument("--skip-kfold", action="store_true")
    args = p.parse_args()
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "mpi": [mpi_search(w, args.evals, args.config) for w in args.workers],
    }
    if not args.skip_kfold:
        result["kfold"] = kfold_timing(args.replicas, args.steps, args.events)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
