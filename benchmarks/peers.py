"""The same pseudo-data through this suite's GAN, the exact MCMC posterior and sbi's neural posterior estimation.

Usage::

    pip install -e ".[peers]"                    # sbi (optional; without it the NPE rows say "not installed")
    python benchmarks/peers.py                   # case B seed 1; NPE with 1e4 and 1e5 simulations
    python benchmarks/peers.py --simulations 10000 --replicas 50

Every method is judged against the MCMC posterior of the same data: ``width_ratio`` = the
method's sd / posterior sd per parameter, ``mean_offset`` = (method mean - posterior mean) / posterior sd, and
``cpu_s`` the process CPU seconds it took (simulations included). The GAN sees the raw events; NPE (sbi's default
masked autoregressive flow) sees the 40 binned counts (10 log-x bins per dataset), simulated as Poisson counts of
the exact bin expectations, which is what binning events of the extended model gives. The GAN's bootstrap
estimates the MLE and its spread, so its offset from the MLE is reported as well.

Prints one JSON line per method and a final JSON object with all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings

import numpy as np
import torch

from inverse.gan.config import ClosureConfig
from inverse.gan.model import InverseGAN
from inverse.gan.training import fit_gan
from physics.binned import BinnedView
from physics.datasets import Experiment
from physics.likelihood import ExtendedLikelihood, fit_mle
from physics.posterior import sample_posterior
from physics.pseudodata import generate_pseudodata
from qcdgip.config import load_yaml, parse_config


def _judge(samples: np.ndarray, post: np.ndarray) -> dict[str, list[float]]:
    sd = post.std(0, ddof=1)
    return {
        "width_ratio": (samples.std(0, ddof=1) / sd).round(3).tolist(),
        "mean_offset": ((samples.mean(0) - post.mean(0)) / sd).round(3).tolist(),
    }


def _npe(view: BinnedView, low: np.ndarray, high: np.ndarray, n_sim: int, seed: int, n_draws: int) -> np.ndarray:
    from sbi.inference import SNPE
    from sbi.utils import BoxUniform

    torch.manual_seed(seed)
    prior = BoxUniform(low=torch.tensor(low, dtype=torch.float32), high=torch.tensor(high, dtype=torch.float32))
    theta = prior.sample((n_sim,))
    means = []
    for chunk in theta.double().split(4096):
        means.append(torch.cat(view.predictions(chunk), dim=-1))
    counts = torch.poisson(torch.cat(means).clamp_min(0)).float()
    observed = torch.tensor(np.concatenate([b.counts for b in view.datasets]), dtype=torch.float32)
    inference = SNPE(prior=prior, density_estimator="maf", show_progress_bars=False)
    with contextlib.redirect_stdout(sys.stderr):  # sbi prints its convergence note; stdout carries the JSON
        inference.append_simulations(theta, counts).train()
    posterior = inference.build_posterior()
    return posterior.sample((n_draws,), x=observed, show_progress_bars=False).double().numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/closure_gan.yaml")
    p.add_argument("--simulations", type=int, nargs="*", default=[10_000, 100_000], help="NPE simulation budgets")
    p.add_argument("--replicas", type=int, help="GAN replicas (default: the config's)")
    p.add_argument("--n-bins", type=int, default=10, help="log-x bins per dataset for NPE")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    base = parse_config(ClosureConfig, load_yaml(args.config), args.config)
    raw = base.model_dump()
    raw["gan"]["training"]["progress"] = False
    if args.replicas:
        raw["gan"]["training"]["replicas"] = args.replicas
    base = ClosureConfig.model_validate(raw)
    experiment = Experiment(base.physics)
    theory = experiment.theory
    low, high = np.asarray(theory.low), np.asarray(theory.high)
    data = generate_pseudodata(experiment, seed=base.data.seed)
    header = {"case": experiment.case, "data_seed": base.data.seed, "counts": data.counts}
    header["torch_threads"] = torch.get_num_threads()
    rows = []

    cpu = time.process_time()
    like = ExtendedLikelihood(experiment, data)
    mle = fit_mle(like, seed=base.posterior.seed)
    post = sample_posterior(like, base.posterior, mle=mle).flat
    cpu = time.process_time() - cpu
    rows.append({"method": "MCMC posterior (exact, unbinned)", "cpu_s": cpu, **_judge(post, post)})
    print(json.dumps(rows[-1]), flush=True)

    cpu = time.process_time()
    model = InverseGAN(base.gan, experiment, data)
    fit_gan(model, progress=False)
    est = model.cpu().double().estimates().numpy()
    sd = post.std(0, ddof=1)
    rows.append(
        {
            "method": f"GAN, {model.n_replicas} replicas x {int(model.step_count)} steps (raw events)",
            "cpu_s": time.process_time() - cpu,
            **_judge(est, post),
            "mle_offset": ((est.mean(0) - mle.theta) / sd).round(3).tolist(),
        }
    )
    print(json.dumps(rows[-1]), flush=True)

    view = BinnedView(experiment, data, n_bins=args.n_bins)
    for n_sim in args.simulations:
        name = f"sbi NPE (MAF), {n_sim} simulations ({view.n_points} binned counts)"
        try:
            cpu = time.process_time()
            samples = _npe(view, low, high, n_sim, args.seed, len(post))
            rows.append({"method": name, "cpu_s": time.process_time() - cpu, **_judge(samples, post)})
        except ImportError:
            rows.append({"method": name, "status": "sbi not installed: pip install -e '.[peers]'"})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({**header, "methods": rows}))


if __name__ == "__main__":
    main()
