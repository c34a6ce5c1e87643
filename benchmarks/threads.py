"""Seconds per GAN step with 1 thread, 2 threads and the suite's automatic choice, alone and next to a busy process.

Usage::

    python benchmarks/threads.py                    # default runcard, R = 25, 40 steps per setting
    python benchmarks/threads.py --steps 20 --replicas 10

Each setting runs in a fresh process (``--child``) so that torch's thread pool starts as a command's would.
Neighbours: ``none``; ``busy``, one process spinning a pure-Python loop (one core taken), started before the
measured one; ``torch``, another torch job with its default threads (matrix products, both cores wanted);
``late``, the busy process started after the 10th training step, to show the re-check follow it. Prints one JSON
object: per neighbour and setting (``1``, ``2``, ``auto``) the median step time and the threads used, each
setting's ratio to the best of its neighbour, and ``auto_within_1.5x_of_best`` for every static neighbour.
Measure on an otherwise idle machine: any other job is a neighbour too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEIGHBOURS = {
    "busy": [sys.executable, "-c", "while True: pass"],
    "late": [sys.executable, "-c", "while True: pass"],
    "torch": [sys.executable, "-c", "import torch\na = torch.randn(512, 512)\nwhile True:\n    b = a @ a"],
}


def _Marker(path: str | None):  # noqa: N802 (a callback class made on demand: Lightning is imported late)
    import lightning as L

    class Marker(L.Callback):
        """Touch ``path`` after the 10th step (the parent then starts the late neighbour)."""

        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            if path and pl_module.steps_done == 10:
                Path(path).touch()

    return Marker()


def child(args: argparse.Namespace) -> None:
    """Train ``args.steps`` steps with the thread setting ``args.threads`` and print the step times as JSON."""
    warnings.filterwarnings("ignore")
    from qcdgip import runtime

    policy = runtime.configure_threads(None if args.threads == "auto" else int(args.threads))
    from inverse.gan.config import ClosureConfig
    from inverse.gan.model import InverseGAN
    from inverse.gan.training import fit_gan
    from physics.datasets import Experiment
    from physics.pseudodata import generate_pseudodata
    from qcdgip.config import load_yaml, parse_config

    base = parse_config(ClosureConfig, load_yaml(args.config), args.config).model_dump()
    base["gan"]["training"].update(replicas=args.replicas, steps=args.steps, progress=False)
    config = ClosureConfig.model_validate(base)
    experiment = Experiment(config.physics)
    data = generate_pseudodata(experiment, seed=config.data.seed)
    module = fit_gan(InverseGAN(config.gan, experiment, data), progress=False, callbacks=[_Marker(args.marker)])
    print(json.dumps({"step_s": module.step_seconds, "policy": policy.summary()}))


def measure(args: argparse.Namespace, threads: str, neighbour: str) -> dict:
    """One setting in a fresh process, with the neighbour given."""
    marker = Path(f"/tmp/qcdgip-threads-{os.getpid()}.started")
    marker.unlink(missing_ok=True)
    steps = args.steps * (3 if neighbour == "late" else 1)
    cmd = [sys.executable, __file__, "--child", "--threads", threads, "--steps", str(steps)]
    cmd += ["--replicas", str(args.replicas), "--config", args.config, "--marker", str(marker)]
    spin = subprocess.Popen(NEIGHBOURS[neighbour]) if neighbour in ("busy", "torch") else None
    if spin is not None:
        time.sleep(1.0)
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if neighbour == "late":
            while not marker.exists() and proc.poll() is None:
                time.sleep(0.1)
            spin = subprocess.Popen(NEIGHBOURS["late"])
        out, _ = proc.communicate()
    finally:
        marker.unlink(missing_ok=True)
        if spin is not None:
            spin.kill()
            spin.wait()
    result = json.loads(out.strip().splitlines()[-1])
    kept = result["step_s"][args.warmup :]
    row = {"median_step_s": _median(kept), "threads": result["policy"]["threads"], "steps": len(kept)}
    row["policy"] = result["policy"]
    if neighbour == "late":
        start = 10 - args.warmup
        row["median_before_s"] = _median(kept[:start])
        row["median_last_third_s"] = _median(kept[-len(kept) // 3 :])
    return row


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/closure_gan.yaml")
    p.add_argument("--replicas", type=int, default=25)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the medians")
    p.add_argument("--neighbours", nargs="+", default=["none", "busy", "torch", "late"], choices=["none", *NEIGHBOURS])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", default="auto", help=argparse.SUPPRESS)
    p.add_argument("--marker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    results: dict[str, dict] = {}
    for neighbour in args.neighbours:
        settings = ("auto",) if neighbour == "late" else ("1", "2", "auto")
        results[neighbour] = {t: measure(args, t, neighbour) for t in settings}
        if neighbour != "late":
            best = min(r["median_step_s"] for r in results[neighbour].values())
            for r in results[neighbour].values():
                r["vs_best"] = r["median_step_s"] / best
    verdict = {n: r["auto"]["vs_best"] <= 1.5 for n, r in results.items() if n != "late"}
    print(
        json.dumps(
            {
                "benchmark": "threads",
                "replicas": args.replicas,
                "steps": args.steps,
                "cores": len(os.sched_getaffinity(0)),
                "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
                "results": results,
                "auto_within_1.5x_of_best": verdict,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
