"""How fast and how exactly each generator loss reaches the maximum-likelihood estimate, with Adam and natural steps.

Usage::

    python benchmarks/losses.py                                  # every loss x {adam, natural}, case B seed 1
    python benchmarks/losses.py --losses density_ratio bce --steps 300 --out runs/bench-losses

For every loss and optimizer, R replicas (no bootstrap: every replica fits the data themselves, from its own
random start) train for ``--steps`` steps. Distances are max over parameters of |theta - MLE| / sd, with sd the
Laplace posterior sd at the MLE. Prints one JSON line per run and a final JSON object with:

- ``steps_to_0.3sd``: the first step t at which stopping would give an estimate within 0.3 sd: the median over
  replicas of the distance of the Polyak average over steps t/2..t (what ``training.polyak: 0.5`` returns) stays
  below 0.3 sd from t on (null: never); ``first_step_below_0.3sd``: the first step whose raw iterate is below;
- ``final_max_distance``: the largest distance over replicas of the Polyak-averaged estimates;
- ``cpu_s``: process CPU seconds of the training;
- ``contract``: the gradient contract (``inverse.gan.diagnostics``) of each loss at 1 and 3 sd from the MLE: cosine
  of the generator gradient with -grad log L, and the same for the shape part alone.

Writes ``learning_curves.png`` (median distance per step of the running Polyak average, solid, and of the raw
iterate, faint; one panel per optimizer) and ``losses.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from inverse.gan.config import ClosureConfig, GANConfig
from inverse.gan.diagnostics import displaced_theta, gradient_contract
from inverse.gan.model import InverseGAN
from inverse.gan.plots import running_polyak
from inverse.gan.training import fit_gan
from physics.datasets import Experiment
from physics.likelihood import ExtendedLikelihood, fit_mle
from physics.posterior import laplace_approximation
from physics.pseudodata import generate_pseudodata
from qcdgip.config import load_yaml, parse_config

LOSSES = ["density_ratio", "bce", "minimax", "lsgan", "wgan_gp"]


def _gan_config(base: GANConfig, loss: str, optimizer: str, replicas: int, steps: int) -> GANConfig:
    data = base.model_dump()
    data["loss"]["kind"] = loss
    if base.optimizer_g.name != optimizer:
        data["optimizer_g"] = {"name": optimizer}  # with the settings measured for it (inverse.gan.config)
    data["generator"]["kind"] = "point"
    data["training"].update(replicas=replicas, steps=steps, bootstrap=False, progress=False)
    return GANConfig.model_validate(data)


def _settle_step(curve: np.ndarray, level: float) -> int | None:
    """First step (counted from 1) from which ``curve`` stays below ``level``."""
    above = np.nonzero(curve >= level)[0]
    if len(above) == 0:
        return 1
    return int(above[-1]) + 2 if above[-1] + 1 < len(curve) else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/closure_gan.yaml")
    p.add_argument("--losses", nargs="+", default=LOSSES, choices=LOSSES)
    p.add_argument("--optimizers", nargs="+", default=["adam", "natural"], choices=["adam", "natural"])
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--no-contract", action="store_true", help="skip the gradient-contract cosines")
    p.add_argument("--contract-d-steps", type=int, default=400, help="discriminator updates before each contract")
    p.add_argument("--out", type=Path, default=Path("runs/bench-losses"))
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    base = parse_config(ClosureConfig, load_yaml(args.config), args.config)
    experiment = Experiment(base.physics)
    data = generate_pseudodata(experiment, seed=base.data.seed)
    like = ExtendedLikelihood(experiment, data)
    mle = fit_mle(like, seed=0)
    centre, cov = laplace_approximation(like, mle=mle)
    sd = np.sqrt(np.diag(cov))
    args.out.mkdir(parents=True, exist_ok=True)

    runs, curves = [], {}
    for opt in args.optimizers:
        for loss in args.losses:
            cfg = _gan_config(base.gan, loss, opt, args.replicas, args.steps)
            model = InverseGAN(cfg, experiment, data)
            cpu, wall = time.process_time(), time.perf_counter()
            status = "ok"
            try:
                fit_gan(model, progress=False)
            except RuntimeError as err:  # a diverged loss is a result, not a crash of the benchmark
                status = f"failed: {err}"
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            done = int(model.step_count)
            hist = model.theta_history[:done].double().numpy()
            raw = np.median((np.abs(hist - mle.theta) / sd).max(-1), axis=1)
            curve = np.median((np.abs(running_polyak(hist, 0.5) - mle.theta) / sd).max(-1), axis=1)
            below = np.nonzero(raw < 0.3)[0]
            final = (np.abs(model.estimates().double().numpy() - mle.theta) / sd).max(-1)
            row = {
                "loss": loss,
                "optimizer": opt,
                "status": status,
                "steps": done,
                "steps_to_0.3sd": _settle_step(curve, 0.3),
                "first_step_below_0.3sd": int(below[0]) + 1 if len(below) else None,
                "final_max_distance": float(final.max()),
                "final_median_distance": float(np.median(final)),
                "cpu_s": cpu,
                "wall_s": wall,
            }
            runs.append(row)
            curves[(opt, loss)] = (curve, raw)
            print(json.dumps(row), flush=True)

    contract = {}
    if not args.no_contract:
        low, high = np.array(experiment.theory.low), np.array(experiment.theory.high)
        for loss in args.losses:
            cfg = _gan_config(base.gan, loss, "adam", 1, 1)
            for distance in (1.0, 3.0):
                theta = displaced_theta(centre, cov, distance, low, high, seed=0)
                c = gradient_contract(cfg, experiment, data, theta, d_train_steps=args.contract_d_steps)
                contract[f"{loss}@{distance:g}sd"] = {
                    "cosine": c.cosine,
                    "shape_cosine": c.shape_cosine,
                    "norm_ratio": c.norm_ratio,
                    "shape_norm_ratio": c.shape_norm_ratio,
                }
                print(json.dumps({"contract": f"{loss}@{distance:g}sd", **contract[f"{loss}@{distance:g}sd"]}))

    fig, axes = plt.subplots(1, len(args.optimizers), figsize=(5.2 * len(args.optimizers), 3.8), sharey=True)
    for ax, opt in zip(np.atleast_1d(axes), args.optimizers):
        for loss in args.losses:
            polyak, raw = curves[(opt, loss)]
            line = ax.semilogy(np.arange(1, len(polyak) + 1), polyak, label=loss)[0]
            ax.semilogy(np.arange(1, len(raw) + 1), raw, color=line.get_color(), alpha=0.25, lw=0.8)
        ax.axhline(0.3, color="k", ls=":", lw=0.8)
        ax.set_title(f"generator optimizer: {opt}")
        ax.set_xlabel("GAN step")
    np.atleast_1d(axes)[0].set_ylabel("median over replicas of max |theta - MLE| / sd\n(solid: Polyak, faint: raw)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "learning_curves.png", dpi=120)
    plt.close(fig)

    result = {
        "case": experiment.case,
        "data_seed": base.data.seed,
        "replicas": args.replicas,
        "torch_threads": torch.get_num_threads(),
        "runs": runs,
        "contract": contract,
        "plot": str(args.out / "learning_curves.png"),
    }
    (args.out / "losses.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
