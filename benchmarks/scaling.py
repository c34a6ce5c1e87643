"""Weak scaling: the MPI hyperparameter search over 1, 2, 4 workers, and one GAN trained data-parallel.

Usage::

    python benchmarks/scaling.py                              # HPO over 1, 2, 4 MPI workers; DDP over 1, 2 processes
    python benchmarks/scaling.py --workers 1 2 4 8 --trials-per-worker 6 --skip-ddp
    python benchmarks/scaling.py --skip-hpo --processes 1 2 4 --accelerator gpu   # on a GPU node

Prints JSON:
  * ``hpo``: for W workers, a real ``python -m hpo.search --evaluator mpi`` (mpiexec, W + 1 ranks) of
    ``trials-per-worker x W`` trials of ``configs/hpo_quick.yaml``: trials per minute, trials per minute per worker, and
    the weak-scaling efficiency = (trials per minute per worker) / (the same in the first run). Ideal: 1.
  * ``ddp``: one GAN (``configs/closure_gan.yaml``, ``--events-per-process`` events per parameter set and process, so
    the global batch grows with the processes) trained by ``python -m inverse.closure --devices P`` (Lightning starts
    the P processes; gloo on CPUs, NCCL on GPUs): median step seconds, generated events per second, efficiency =
    (events per second per process) / (the same in the first run).
Every worker or process gets ``--threads`` torch threads (default 1), so that each one is a fixed share of the
machine. Where workers x threads exceeds the cores they share them and the efficiency falls; rerun this on a node
with a GPU (or enough cores) per worker.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("benchmarks_hpo", ROOT / "benchmarks" / "hpo.py")
assert _spec is not None and _spec.loader is not None
bench_hpo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_hpo)

import torch  # noqa: E402


def hpo_weak(workers: list[int], per_worker: int, config: Path, threads: int) -> list[dict]:
    card = yaml.safe_load(config.read_text())
    if card.get("base") and not Path(card["base"]).is_absolute():
        card["base"] = str((config.parent / card["base"]).resolve())
    card.setdefault("search", {})["torch_threads"] = threads
    with tempfile.TemporaryDirectory() as tmp:
        fixed = Path(tmp) / config.name
        fixed.write_text(yaml.safe_dump(card))
        rows = [bench_hpo.mpi_search(w, per_worker * w, fixed) for w in workers]
    base = rows[0]["trials_per_minute_per_worker"]
    for row in rows:
        row["efficiency"] = round(row["trials_per_minute_per_worker"] / base, 3)
    return rows


def ddp_step(processes: int, events: int, steps: int, replicas: int, accelerator: str, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "ddp.yaml"
        card = yaml.safe_load((ROOT / "configs" / "closure_gan.yaml").read_text())
        card["report"] = {"bootstrap_mles": False}
        card["posterior"] = {**card.get("posterior", {}), "n_chains": 4, "n_warmup": 200, "n_samples": 200}
        card["gan"]["training"].update(
            replicas=replicas,
            steps=steps,
            events_per_param=events * processes,
            accelerator=accelerator,
            checkpoint_every=10 * steps,
        )
        config.write_text(yaml.safe_dump(card))
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "inverse.closure", "--config", str(config), "--out", str(out)]
        cmd += ["--devices", str(processes), "--quiet", "--no-plots"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "SLURM_CPUS_PER_TASK": str(threads)}
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        wall = time.perf_counter() - start
        summary = json.loads((out / "summary.json").read_text())
    step = summary["timing_s"]["median_step"]
    n_datasets = len(summary["counts"])
    rate = replicas * events * processes * n_datasets / step
    return {
        "processes": processes,
        "global_events_per_param": events * processes,
        "median_step_s": round(step, 4),
        "generated_events_per_s": round(rate),
        "fit_s": round(summary["timing_s"]["fit"], 1),
        "command_wall_s": round(wall, 1),
    }


def ddp_weak(
    processes: list[int], events: int, steps: int, replicas: int, accelerator: str, threads: int
) -> list[dict]:
    rows = [ddp_step(p, events, steps, replicas, accelerator, threads) for p in processes]
    base = rows[0]["generated_events_per_s"] / rows[0]["processes"]
    for row in rows:
        row["efficiency"] = round(row["generated_events_per_s"] / row["processes"] / base, 3)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="MPI workers (start with 1)")
    p.add_argument("--trials-per-worker", type=int, default=4)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "hpo_quick.yaml")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="data-parallel processes (start with 1)")
    p.add_argument("--events-per-process", type=int, default=2048)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--replicas", type=int, default=25)
    p.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker / process (a fixed share)")
    p.add_argument("--skip-hpo", action="store_true")
    p.add_argument("--skip-ddp", action="store_true")
    args = p.parse_args()
    result: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "gpus": torch.cuda.device_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        }
    }
    if not args.skip_hpo:
        result["hpo"] = {
            "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
            "trials_per_worker": args.trials_per_worker,
            "threads_per_worker": args.threads,
            "runs": hpo_weak(args.workers, args.trials_per_worker, args.config, args.threads),
        }
    if not args.skip_ddp:
        result["ddp"] = {
            "accelerator": args.accelerator,
            "replicas": args.replicas,
            "steps": args.steps,
            "events_per_param_per_process": args.events_per_process,
            "threads_per_process": args.threads,
            "runs": ddp_weak(
                args.processes, args.events_per_process, args.steps, args.replicas, args.accelerator, args.threads
            ),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
