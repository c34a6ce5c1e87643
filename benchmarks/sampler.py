"""Benchmark of the exact inverse-CDF sampler: events per second (forward + backward) and exactness.

Prints one JSON object. Usage: ``python benchmarks/sampler.py [--replicas 20] [--events 10000]``.
Runs on CUDA too when available (``--device cuda``).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from physics.config import PhysicsConfig
from physics.datasets import Experiment
from physics.quadrature import integrate_terms, logit_rule


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=20, help="parameter sets B")
    p.add_argument("--events", type=int, default=10_000, help="events per parameter set and dataset")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    exp = Experiment(PhysicsConfig())
    sampler = exp.sampler()
    results = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "replicas": args.replicas,
        "events_per_dataset": args.events,
        "datasets": len(exp.datasets),
    }
    for dtype in (torch.float64, torch.float32):
        theta = exp.theory.truth_tensor(dtype, args.device).repeat(args.replicas, 1).requires_grad_()
        gen = torch.Generator(device=args.device).manual_seed(0)
        times = []
        for _ in range(args.repeats + 1):
            start = time.perf_counter()
            xs = sampler.sample_all(theta, args.events, generator=gen)
            sum(x.sum() for x in xs).backward()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        best = min(times[1:])
        n_total = args.replicas * args.events * len(exp.datasets)
        results[str(dtype).removeprefix("torch.")] = {
            "seconds_per_call": best,
            "events_per_second": n_total / best,
        }
    # Exactness: |F(x) - u| for a few events, F by independent quadrature of [x_min, x].
    theta = exp.theory.truth_tensor()
    u = torch.rand(1, 50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    worst = 0.0
    for j, ds in enumerate(exp.datasets):
        x = sampler.sample(theta, 50, j, noise=u)[0]
        terms = exp.theory.terms(theta, ds.observable)
        total = integrate_terms(terms, logit_rule(ds.spec.x_min, ds.spec.x_max)).item()
        for xi, ui in zip(x.tolist(), u[0].tolist()):
            f = integrate_terms(terms, logit_rule(ds.spec.x_min, xi)).item() / total if xi > ds.spec.x_min else 0.0
            worst = max(worst, abs(f - ui))
    results["max_abs_cdf_residual"] = worst
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
