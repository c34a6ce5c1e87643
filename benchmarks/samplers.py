"""Benchmark of the event samplers: exact inverse CDF, MCMC and the flow surrogate, each with and without the detector.

For every sampler, event count n (per parameter set) and batch B of parameter sets it measures

- ``events_per_s``: n B events drawn and differentiated (forward + backward) per second;
- ``grad_var_per_event``: the variance of the gradient, with respect to theta, of a fixed discriminator-like
  statistic T = sum_e w_e h(x_e) / sum_e w_e (h: a fixed smooth function of log x, w: the sampler's weights, 1
  for the exact sampler and the flow without detector), times n, summed over the 6 parameters, over ``repeats``
  independent draws at the truth. The smaller, the fewer events a GAN step needs for the same gradient noise:
  reparameterised gradients (exact, flow) against the score function (MCMC) against reweighted migrations
  (detector).

Prints one JSON object per configuration and a final summary object. Usage::

    python benchmarks/samplers.py [--events 1000 10000 100000] [--batches 1 64] [--flow runs/surrogate-flow/model.pt]

The flow is measured only where its file exists (``make surrogate KIND=flow``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from physics.config import DetectorConfig, MCMCConfig, PhysicsConfig
from physics.datasets import Experiment
from physics.mcmc import MCMCSampler
from physics.sampling import EventSampler


def _statistic(sampler: EventSampler, theta: torch.Tensor, n: int, j: int, g: torch.Generator) -> torch.Tensor:
    if sampler.weighted:
        x, w = sampler.sample_weighted(theta, n, j, generator=g)
    else:
        x = sampler.sample(theta, n, j, generator=g)
        w = torch.ones_like(x)
    h = torch.tanh(2.0 * torch.log(x) + 1.5) + 0.3 * torch.sin(4.0 * torch.log1p(-x.clamp_max(1 - 1e-12)))
    return ((w * h).sum(-1) / w.sum(-1)).sum()


def measure(sampler: EventSampler, theta0: torch.Tensor, n: int, batch: int, repeats: int, seed: int) -> dict:
    """Events per second and the per-event gradient variance of the statistic, on dataset sigma1_high."""
    j = 1
    # Parameter sets in chunks of at most ~10^6 events (as the GAN evaluates replicas in chunks): the flow's
    # per-event spline graph at 10^5 x 64 events (x 2 sources behind the detector) does not fit in 24 GB.
    chunk = max(1, min(batch, 1_000_000 // n))
    grads, seconds = [], []
    for r in range(repeats):
        g = torch.Generator(device=theta0.device).manual_seed(seed + r)
        start = time.perf_counter()
        for a in range(0, batch, chunk):
            th = theta0.expand(min(chunk, batch - a), -1).clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(_statistic(sampler, th, n, j, g), th)
            grads.append(grad)
        seconds.append(time.perf_counter() - start)
    grads_t = torch.cat(grads)  # [repeats * B, D]: every row an independent draw of n events
    var = grads_t.var(0, unbiased=True) * n
    best = min(seconds[1:] if len(seconds) > 1 else seconds)
    return {
        "events_per_s": n * batch / best,
        "grad_var_per_event": float(var.sum()),
        "grad_var_per_event_by_param": var.tolist(),
        "draws": int(grads_t.shape[0]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--repeats", type=int, default=0, help="draws per setting (0: enough for ~64 gradient rows)")
    p.add_argument("--flow", type=Path, default=Path("runs/surrogate-flow/model.pt"))
    p.add_argument("--samplers", nargs="+", default=["exact", "mcmc", "flow"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    plain = Experiment(PhysicsConfig())
    folded = Experiment(PhysicsConfig(detector=DetectorConfig()))
    specs = [d.spec for d in plain.datasets]
    inner: dict[str, EventSampler] = {}
    for name in args.samplers:
        if name == "exact":
            inner[name] = plain.sampler()
        elif name == "mcmc":
            inner[name] = MCMCSampler(plain.theory, specs, MCMCConfig())
        elif name == "flow":
            if not args.flow.is_file():
                print(json.dumps({"sampler": "flow", "skipped": f"{args.flow} not found (make surrogate KIND=flow)"}))
                continue
            from surrogates.io import load_surrogate

            inner[name] = load_surrogate(args.flow, kind="flow", physics=plain.config)[0].double()
        else:
            raise SystemExit(f"--samplers: unknown sampler {name!r} (exact, mcmc, flow)")
    theta0 = plain.theory.truth_tensor(torch.float64, args.device)
    rows = []
    for name, base in inner.items():
        base = base.to(args.device)
        for detector, sampler in ((False, base), (True, folded.observed_sampler(base))):
            for batch in args.batches:
                for n in args.events:
                    repeats = args.repeats or max(3, min(64, math.ceil(64 / batch)) + 1)
                    # Keep every setting below ~10^7 events in all: the largest ones repeat less.
                    repeats = max(3, min(repeats, 10_000_000 // (n * batch)))
                    row = {"sampler": name, "detector": detector, "events": n, "batch": batch, "device": args.device}
                    row.update(measure(sampler, theta0, n, batch, repeats, args.seed))
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    summary = {
        "benchmark": "samplers",
        "statistic": "T = sum w h(x) / sum w on sigma1_high at the truth; grad_var_per_event = n Var(dT/dtheta)",
        "results": {
            f"{r['sampler']}{'+detector' if r['detector'] else ''}@n={r['events']},B={r['batch']}": {
                "events_per_s": round(r["events_per_s"]),
                "grad_var_per_event": round(r["grad_var_per_event"], 4),
            }
            for r in rows
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
