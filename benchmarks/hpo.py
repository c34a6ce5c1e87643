"""Speed of the hyperparameter search: trials per minute and worker utilisation over MPI, and k-fold trial time.

Usage::

    python benchmarks/hpo.py                       # 1, 2, 4 MPI workers on configs/hpo_quick.yaml
    python benchmarks/hpo.py --workers 1 2 --evals 8 --skip-kfold --skip-stopper
    python benchmarks/hpo.py --workers --skip-kfold --budget 300            # only the stopper comparison

Prints JSON:
  * ``stopper``: the same search (``configs/hpo_stopper.yaml``) with and without its successive-halving stopper, each
    given the same wall budget (``--budget`` seconds, ``--stopper-workers`` process workers), for each search seed
    (``--seeds``): trials run, complete and stopped, the best loss reached, the seconds each needed to reach a fixed
    loss (``--target``; default: per seed, the worse of the two best losses, which both runs reach), and the median
    wall time of complete and of stopped trials;
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


def _search(config: Path, out: Path, args: list[str]) -> tuple[dict, object]:
    from hpo.search.results import read_results

    cmd = [sys.executable, "-m", "hpo.search", "--config", str(config), "--out", str(out), "--quiet", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads((out / "summary.json").read_text()), read_results(out)


def stopper_comparison(config: Path, budget: int, workers: int, target: float | None, seeds: list[int]) -> dict:
    """The search with and without its stopper at equal wall budget, for each search seed."""
    import yaml

    runs: dict[tuple[str, int], tuple[dict, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for kind in ("none", "successive_halving"):
                card = yaml.safe_load(config.read_text())
                card["stopper"] = {**card.get("stopper", {}), "kind": kind}
                card["search"] = {**card.get("search", {}), "seed": seed}
                card["base"] = str((config.parent / card["base"]).resolve())
                path = Path(tmp) / f"{kind}-{seed}.yaml"
                path.write_text(yaml.safe_dump(card))
                args = ["--evaluator", "process", "--workers", str(workers), "--timeout", str(budget)]
                runs[kind, seed] = _search(path, Path(tmp) / f"{kind}-{seed}", [*args, "--max-evals", "10000"])
    best = {key: float(df.loc[df["complete"], "loss"].min()) for key, (_, df) in runs.items()}
    out: dict = {"budget_s": budget, "workers": workers, "config": config.name, "runs": []}
    for seed in seeds:
        goal = max(best["none", seed], best["successive_halving", seed]) if target is None else target
        row: dict = {"seed": seed, "target_loss": round(goal, 4)}
        for kind in ("none", "successive_halving"):
            summary, df = runs[kind, seed]
            start = float(df["m:t_start"].min())
            seconds = df["m:t_end"] - df["m:t_start"]
            ok = df[df["complete"] & (df["loss"] <= goal)]
            row[kind] = {
                "trials": len(df),
                "complete": int(df["complete"].sum()),
                "stopped": int(df["stopped"].sum()),
                "failed": int(df["failed"].sum()),
                "best_loss": round(best[kind, seed], 4),
                "seconds_to_target": round(float(ok["m:t_end"].min()) - start, 1) if len(ok) else None,
                "median_complete_trial_s": round(float(seconds[df["complete"]].median()), 2),
                "median_stopped_trial_s": round(float(seconds[df["stopped"]].median()), 2)
                if df["stopped"].any()
                else None,
                "worker_utilisation": round(summary.get("worker_utilisation", float("nan")), 3),
            }
        out["runs"].append(row)
    for kind in ("none", "successive_halving"):
        rows = [r[kind] for r in out["runs"]]
        out[f"mean_{kind}"] = {
            "trials": float(np.mean([r["trials"] for r in rows])),
            "complete": float(np.mean([r["complete"] for r in rows])),
            "best_loss": float(np.mean([r["best_loss"] for r in rows])),
            "reached_target": sum(r["seconds_to_target"] is not None for r in rows),
        }
    return out


def kfold_timing(replicas: int, steps: int, events: int) -> dict:
    from hpo.kfold import KFoldConfig
    from hpo.kfold_gan import run_gan_folds
    from inverse.gan.config import ClosureConfig
    from physics.datasets import Experiment
    from physics.pseudodata import generate_pseudodata
    from qcdgip.config import load_yaml, parse_config

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
    p.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4], help="MPI workers per run (none: skip)")
    p.add_argument("--evals", type=int, default=12, help="trials per search")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "hpo_quick.yaml")
    p.add_argument("--replicas", type=int, default=10)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--events", type=int, default=512)
    p.add_argument("--skip-kfold", action="store_true")
    p.add_argument("--stopper-config", type=Path, default=ROOT / "configs" / "hpo_stopper.yaml")
    p.add_argument("--budget", type=int, default=180, help="wall seconds of each stopper-comparison search")
    p.add_argument("--stopper-workers", type=int, default=2)
    p.add_argument("--target", type=float, help="loss the time-to-target is measured at")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="search seeds of the stopper comparison")
    p.add_argument("--skip-stopper", action="store_true")
    args = p.parse_args()
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "mpi": [mpi_search(w, args.evals, args.config) for w in args.workers],
    }
    if not args.skip_stopper:
        result["stopper"] = stopper_comparison(
            args.stopper_config, args.budget, args.stopper_workers, args.target, args.seeds
        )
    if not args.skip_kfold:
        result["kfold"] = kfold_timing(args.replicas, args.steps, args.events)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
