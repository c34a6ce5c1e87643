"""The same pseudo-data through this suite's GAN, the exact MCMC posterior and sbi's neural posterior estimation.

Usage::

    pip install -e ".[peers]"                    # sbi (optional; without it the NPE rows say "not installed")
    python benchmarks/peers.py                   # the toy, case B seed 1; NPE with 1e4 and 1e5 simulations and at
                                                 # the budget that takes the GAN's CPU (--no-equal-cpu: not that)
    python benchmarks/peers.py --simulations 10000 --replicas 50
    python benchmarks/peers.py --problem dis     # inclusive DIS (configs/closure_dis.yaml), 2-D binned NPE
    python benchmarks/peers.py --no-posterior    # the toy without the GAN's posterior mode (Langevin draws)

Every method is judged against the MCMC posterior of the same data: ``width_ratio`` = the
method's sd / posterior sd per parameter, ``mean_offset`` = (method mean - posterior mean) / posterior sd, and
``cpu_s`` the process CPU seconds it took (simulations included). The GAN sees the raw events; NPE (sbi's default
masked autoregressive flow) sees binned counts, simulated as Poisson counts of the exact bin expectations, which
is what binning events of the extended model gives: for the toy 10 log-x bins per dataset; for DIS
``--dis-bins`` (ln Q^2 x w) bins per Q^2 window (:class:`physics.dis.binned.DISBinnedView`), with a row for the
information that binning keeps: the binned / unbinned Cramér–Rao sd ratio at the MLE. The GAN's bootstrap
estimates the MLE and its spread, so its offset from the MLE is reported as well. On the toy the GAN's posterior
mode (adversarial Langevin chains after the same fit, the runcard's ``gan.posterior`` settings) gets a row of its
own, whose CPU counts the fit and the sampling, with the C2ST accuracy of its draws against the MCMC draws.

Prints one JSON line per method and a final JSON object with all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from inverse.gan.config import ClosureConfig
from inverse.gan.model import InverseGAN
from inverse.gan.posterior.coordinates import sampling_coordinates
from inverse.gan.posterior.diagnostics import compare_to_reference
from inverse.gan.posterior.langevin import LangevinSampler
from inverse.gan.training import fit_gan
from physics.binned import BinnedView
from physics.datasets import Experiment
from physics.likelihood import ExtendedLikelihood, fit_mle
from physics.posterior import sample_posterior
from physics.pseudodata import generate_pseudodata
from qcdgip.config import load_yaml, parse_config

Row = dict


def _judge(samples: np.ndarray, post: np.ndarray) -> dict[str, list[float]]:
    sd = post.std(0, ddof=1)
    return {
        "width_ratio": (samples.std(0, ddof=1) / sd).round(3).tolist(),
        "mean_offset": ((samples.mean(0) - post.mean(0)) / sd).round(3).tolist(),
    }


def _npe(simulate: Callable[[torch.Tensor], torch.Tensor], observed: np.ndarray, bounds: tuple, n_sim: int,
         seed: int, n_draws: int) -> np.ndarray:  # fmt: skip
    """Draws of sbi's NPE (MAF) trained on ``n_sim`` Poisson simulations of binned counts, at ``observed``."""
    from sbi.inference import SNPE
    from sbi.utils import BoxUniform

    torch.manual_seed(seed)
    low, high = (torch.tensor(b, dtype=torch.float32) for b in bounds)
    prior = BoxUniform(low=low, high=high)
    theta = prior.sample((n_sim,))
    with torch.no_grad():
        means = torch.cat([simulate(chunk) for chunk in theta.double().split(512)])
    counts = torch.poisson(means.clamp_min(0)).float()
    inference = SNPE(prior=prior, density_estimator="maf", show_progress_bars=False)
    with contextlib.redirect_stdout(sys.stderr):  # sbi prints its convergence note; stdout carries the JSON
        inference.append_simulations(theta, counts).train()
    posterior = inference.build_posterior()
    x = torch.tensor(observed, dtype=torch.float32)
    return posterior.sample((n_draws,), x=x, show_progress_bars=False).double().numpy()


def _npe_rows(simulate: Callable, observed: np.ndarray, bounds: tuple, args: argparse.Namespace, post: np.ndarray,
              label: str, gan_cpu: float | None = None) -> list[Row]:  # fmt: skip
    """NPE at each budget of ``--simulations``, then (``--equal-cpu``) at the budget that costs the GAN's CPU.

    The equal-CPU budget scales the first budget's simulations by the ratio of the GAN's CPU to that run's CPU
    (NPE's cost grows about linearly with its simulations); its row reports the CPU it really took.
    """
    budgets = [(n, "") for n in args.simulations]
    rows: list[Row] = []
    while budgets:
        n_sim, note = budgets.pop(0)
        name = f"sbi NPE (MAF), {n_sim} simulations ({label}){note}"
        try:
            cpu = time.process_time()
            samples = _npe(simulate, observed, bounds, n_sim, args.seed, len(post))
            rows.append({"method": name, "cpu_s": time.process_time() - cpu, "simulations": n_sim,
                         **_judge(samples, post)})  # fmt: skip
        except ImportError:
            rows.append({"method": name, "status": "sbi not installed: pip install -e '.[peers]'"})
            print(json.dumps(rows[-1]), flush=True)
            return rows
        print(json.dumps(rows[-1]), flush=True)
        if args.equal_cpu and gan_cpu is not None and len(rows) == 1:
            equal = max(1000, int(round(n_sim * gan_cpu / rows[0]["cpu_s"], -3)))
            budgets.append((equal, ", at the GAN's CPU"))
    return rows


def _gan_row(model: InverseGAN, post: np.ndarray, mle: np.ndarray, cpu: float) -> Row:
    fit_gan(model, progress=False)
    est = model.cpu().double().estimates().numpy()
    return {
        "method": f"GAN, {model.n_replicas} replicas x {int(model.step_count)} steps (raw events)",
        "cpu_s": time.process_time() - cpu,
        **_judge(est, post),
        "mle_offset": ((est.mean(0) - mle) / post.std(0, ddof=1)).round(3).tolist(),
    }


def _posterior_row(model: InverseGAN, experiment: Experiment, data: object, post: np.ndarray, fit_cpu: float) -> Row:
    """The posterior mode's draws after the fit of ``model`` (fitted, on the CPU in float64)."""
    cpu = time.process_time()
    settings = model.config.posterior
    sampler = LangevinSampler(model, data, sampling_coordinates(experiment, settings.coordinates))
    draws = sampler.run(None, progress=False).draws
    flat = draws.reshape(-1, draws.shape[-1])
    return {
        "method": f"GAN posterior mode, {settings.chains} Langevin chains x {settings.steps} steps after the fit",
        "cpu_s": fit_cpu + time.process_time() - cpu,
        **_judge(flat, post),
        "c2st": round(compare_to_reference(flat, post, settings.c2st_draws, settings.seed)["c2st"], 3),
    }


def _with_replicas(raw: dict, replicas: int | None) -> dict:
    raw["gan"]["training"]["progress"] = False
    if replicas:
        raw["gan"]["training"]["replicas"] = replicas
    return raw


def _toy(args: argparse.Namespace) -> tuple[dict, list[Row]]:
    base = parse_config(ClosureConfig, load_yaml(args.config), args.config)
    base = ClosureConfig.model_validate(_with_replicas(base.model_dump(), args.replicas))
    experiment = Experiment(base.physics)
    theory = experiment.theory
    data = generate_pseudodata(experiment, seed=base.data.seed)
    header = {"problem": "toy", "case": experiment.case, "data_seed": base.data.seed, "counts": data.counts}

    cpu = time.process_time()
    like = ExtendedLikelihood(experiment, data)
    mle = fit_mle(like, seed=base.posterior.seed)
    post = sample_posterior(like, base.posterior, mle=mle).flat
    rows = [{"method": "MCMC posterior (exact, unbinned)", "cpu_s": time.process_time() - cpu, **_judge(post, post)}]
    print(json.dumps(rows[-1]), flush=True)
    cpu = time.process_time()
    model = InverseGAN(base.gan, experiment, data)
    rows.append(_gan_row(model, post, mle.theta, cpu))
    print(json.dumps(rows[-1]), flush=True)
    gan_cpu = rows[-1]["cpu_s"]
    if args.posterior:
        rows.append(_posterior_row(model, experiment, data, post, gan_cpu))
        print(json.dumps(rows[-1]), flush=True)

    view = BinnedView(experiment, data, n_bins=args.n_bins)
    observed = np.concatenate([b.counts for b in view.datasets])
    bounds = (np.asarray(theory.low), np.asarray(theory.high))
    rows += _npe_rows(lambda t: torch.cat(view.predictions(t), -1), observed, bounds, args, post,
                      f"{view.n_points} binned counts", gan_cpu)  # fmt: skip
    return header, rows


def _dis(args: argparse.Namespace) -> tuple[dict, list[Row]]:
    from inverse.gan.dis.config import DISClosureConfig
    from physics.dis.binned import DISBinnedView
    from physics.dis.experiment import DISExperiment
    from physics.dis.likelihood import DISLikelihood, cramer_rao, fisher_information
    from physics.dis.likelihood import fit_mle as fit_dis_mle
    from physics.dis.posterior import sample_dis_posterior
    from physics.dis.pseudodata import generate_dis_events
    from physics.pseudodata import EventData

    path = args.config or "configs/closure_dis.yaml"
    base = parse_config(DISClosureConfig, load_yaml(path), path)
    base = DISClosureConfig.model_validate(_with_replicas(base.model_dump(), args.replicas))
    experiment = DISExperiment(base.physics)
    events = generate_dis_events(experiment, base.data.seed)
    data = EventData(list(experiment.names), [e.numpy() for e in events], {"seed": base.data.seed})
    header = {"problem": "dis", "case": experiment.case, "data_seed": base.data.seed, "counts": data.counts}

    cpu = time.process_time()
    like = DISLikelihood(experiment, events)
    mle = fit_dis_mle(like)
    post = sample_dis_posterior(like, base.posterior, mle=mle, progress=False).flat
    rows = [{"method": "MCMC posterior (exact, unbinned)", "cpu_s": time.process_time() - cpu, **_judge(post, post)}]
    print(json.dumps(rows[-1]), flush=True)
    cpu = time.process_time()
    model = InverseGAN(base.gan, experiment, data)
    rows.append(_gan_row(model, post, mle.theta, cpu))
    print(json.dumps(rows[-1]), flush=True)

    n_u, n_w = args.dis_bins
    view = DISBinnedView(experiment, events, n_u=n_u, n_w=n_w)
    at = torch.tensor(mle.theta[None])
    ratio = cramer_rao(view.fisher_information(at)[0])[1] / cramer_rao(fisher_information(experiment, at))[1]
    rows.append({"method": f"binned / unbinned Cramér–Rao sd at the MLE ({n_u} x {n_w} bins per window)",
                 "sd_ratio": ratio.numpy().round(4).tolist()})  # fmt: skip
    print(json.dumps(rows[-1]), flush=True)
    observed = np.concatenate(view.counts)
    bounds = tuple(b.numpy() for b in experiment.bounds())
    rows += _npe_rows(lambda t: torch.cat(view.predictions(t), -1), observed, bounds, args, post,
                      f"{view.n_points} binned counts, {n_u} x {n_w} per Q^2 window", rows[1]["cpu_s"])  # fmt: skip
    return header, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problem", choices=("toy", "dis"), default="toy")
    p.add_argument("--config", help="runcard (default: configs/closure_gan.yaml, or closure_dis.yaml for DIS)")
    p.add_argument("--simulations", type=int, nargs="*", default=[10_000, 100_000], help="NPE simulation budgets")
    p.add_argument("--equal-cpu", action=argparse.BooleanOptionalAction, default=True,
                   help="add NPE at the simulation budget whose CPU equals the GAN's")  # fmt: skip
    p.add_argument("--replicas", type=int, help="GAN replicas (default: the config's)")
    p.add_argument("--n-bins", type=int, default=10, help="toy: log-x bins per dataset for NPE")
    p.add_argument("--dis-bins", type=int, nargs=2, default=[4, 8], metavar=("N_U", "N_W"),
                   help="DIS: ln Q^2 x w bins per window for NPE")  # fmt: skip
    p.add_argument("--posterior", action=argparse.BooleanOptionalAction, default=True,
                   help="toy: add the GAN's posterior mode (Langevin draws after the fit)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    if args.problem == "toy":
        args.config = args.config or "configs/closure_gan.yaml"
        header, rows = _toy(args)
    else:
        header, rows = _dis(args)
    header["torch_threads"] = torch.get_num_threads()
    print(json.dumps({**header, "methods": rows}))


if __name__ == "__main__":
    main()
