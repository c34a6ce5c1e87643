"""Time per GAN training step for R replicas in one vectorized model against R models trained one after another.

Usage::

    python benchmarks/replicas.py                        # R = 1, 10, 100, 1000 on the CPU
    python benchmarks/replicas.py --accelerator gpu      # the same on a GPU (all replicas in one pass)

Prints JSON: for each R the median step time of the vectorized model (and per replica), the summed step time
of R separate one-replica models (each also paying its own Lightning set-up, reported apart), the speed-up, and
``per_replica_vs_r1``: the per-replica cost at R relative to R = 1 (the goal on a GPU: at most 1/20 at R = 100).
The models are those of ``configs/closure_gan.yaml`` (case B, seed-1 data).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import numpy as np
import torch

from inverse.gan.config import ClosureConfig
from inverse.gan.model import InverseGAN
from inverse.gan.training import fit_gan
from physics.datasets import Experiment
from physics.pseudodata import generate_pseudodata
from qcdgip.config import load_yaml, parse_config


def _config(base: ClosureConfig, replicas: int, steps: int, chunk: int, accelerator: str) -> ClosureConfig:
    data = base.model_dump()
    data["gan"]["training"].update(
        replicas=replicas, steps=steps, replica_chunk=chunk, progress=False, accelerator=accelerator
    )
    return ClosureConfig.model_validate(data)


def _step_times(config: ClosureConfig, experiment: Experiment, data, replicas: list[int] | None) -> tuple[list, float]:
    start = time.perf_counter()
    model = InverseGAN(config.gan, experiment, data, replicas=replicas)
    module = fit_gan(model)
    return module.step_seconds, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/closure_gan.yaml")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 10, 100, 1000])
    p.add_argument("--steps", type=int, default=8, help="timed steps per model (the first 2 are warm-up)")
    p.add_argument("--chunk", type=int, default=-1, help="replica_chunk (-1: the config's; 0: auto)")
    p.add_argument("--loop-max", type=int, default=100, help="largest R also trained as a loop of models")
    p.add_argument("--accelerator", default="cpu")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    base = parse_config(ClosureConfig, load_yaml(args.config), args.config)
    experiment = Experiment(base.physics)
    data = generate_pseudodata(experiment, seed=base.data.seed)
    chunk = base.gan.training.replica_chunk if args.chunk < 0 else args.chunk
    rows = []
    for n_rep in args.replicas:
        cfg = _config(base, n_rep, args.steps, chunk, args.accelerator)
        times, _ = _step_times(cfg, experiment, data, None)
        vec = float(np.median(times[2:]))
        row = {"replicas": n_rep, "vectorized_step_s": vec, "vectorized_per_replica_s": vec / n_rep}
        if rows:
            row["per_replica_vs_r1"] = (vec / n_rep) / rows[0]["vectorized_per_replica_s"]
        if n_rep <= args.loop_max:
            one = _config(base, 1, args.steps, 0, args.accelerator)
            step_sum, setup = 0.0, 0.0
            for r in range(n_rep):
                t, w = _step_times(one, experiment, data, [r])
                step_sum += float(np.median(t[2:]))
                setup += w - sum(t)
            row.update(
                loop_step_s=step_sum,
                loop_setup_s_per_model=setup / n_rep,
                speedup=step_sum / vec,
            )
        elif rows and rows[0]["replicas"] == 1:
            # A loop of R single-replica models costs R times one of them.
            row["loop_step_s_extrapolated"] = n_rep * rows[0]["vectorized_step_s"]
            row["speedup"] = row["loop_step_s_extrapolated"] / vec
        rows.append(row)
        print(json.dumps(row), flush=True)
    device = torch.cuda.get_device_name(0) if args.accelerator in ("gpu", "cuda") else platform.processor() or "cpu"
    result = {
        "benchmark": "replicas",
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "events_per_param": base.gan.training.events_per_param,
        "dtype": base.gan.training.dtype,
        "replica_chunk": chunk,
        "results": rows,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
