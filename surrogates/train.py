"""Command line: simulate exact events over the prior box, train a surrogate, judge it on held-out parameters.

Usage::

    python -m surrogates.train --config configs/surrogate_flow.yaml --out runs/surrogate-flow
    python -m surrogates.train --config configs/surrogate_gan.yaml --out runs/surrogate-gan
    python -m surrogates.train --config configs/surrogate_vae.yaml --out runs/surrogate-vae
    python -m surrogates.train --config configs/surrogate_flow.yaml --out runs/surrogate-flow --resume

Steps: draw ``simulation.n_params`` parameter sets uniformly from the prior box and their exact events
(cached in ``training_set.pt``); train with Lightning (progress bar, ``checkpoints/last.ckpt`` every
``training.checkpoint_every`` steps, ``--resume``); write ``model.pt`` (what ``gan.sampler.path`` of an
inverse-solver runcard points to); then compare with the exact sampler on ``evaluation.n_params`` held-out
parameter sets and write ``summary.json``, ``report.md``, ``densities.png``, ``training.png`` and ``run.log``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from physics.config import load_yaml, parse_config
from physics.runs import format_table, open_run_dir, prepare_run_dir, write_json
from surrogates.base import physics_signature
from surrogates.config import SurrogateConfig
from surrogates.io import build_surrogate
from surrogates.quality import evaluate, plot_densities
from surrogates.simulate import draw_prior, exact_events, to_unit
from surrogates.training import NonFiniteSurrogateLossError, fit_surrogate

__all__ = ["build_parser", "main", "resolve_config", "train_surrogate"]

_OUTPUTS = ("summary.json", "report.md", "model.pt", "densities.png", "training.png")
# The bar for the flow (100 held-out sets x 20,000 samples).
KS_MEAN_TARGET, KS_MAX_TARGET = 0.02, 0.05


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m surrogates.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="YAML runcard (default: built-in defaults, a flow)")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--kind", choices=["flow", "gan", "vae"], help="override the runcard's kind")
    p.add_argument("--steps", type=int, help="training steps")
    p.add_argument("--eval-params", type=int, help="held-out parameter sets")
    p.add_argument("--eval-samples", type=int, help="samples per held-out parameter set and dataset")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over in a run directory that holds a run")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def resolve_config(args: argparse.Namespace) -> SurrogateConfig:
    """The runcard with command-line overrides applied, validated."""
    raw: dict[str, Any] = load_yaml(args.config) if args.config else {}
    config = parse_config(SurrogateConfig, raw, str(args.config) if args.config else "<defaults>")
    data = config.model_dump()
    if args.kind is not None:
        data["kind"] = args.kind
    if args.steps is not None:
        data["training"]["steps"] = args.steps
    if args.eval_params is not None:
        data["evaluation"]["n_params"] = args.eval_params
    if args.eval_samples is not None:
        data["evaluation"]["n_samples"] = args.eval_samples
    return parse_config(SurrogateConfig, data, "command line") if data != config.model_dump() else config


def training_set(config: SurrogateConfig, out: Path, progress: bool) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(theta [M, D], t [M, J, n] float32, reused?) from ``out/training_set.pt`` or a fresh simulation."""
    path = out / "training_set.pt"
    key = {"simulation": config.simulation.model_dump(), "physics": physics_signature(config.physics)}
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
            if blob.get("key") == key:
                return blob["theta"], blob["t"], True
        except Exception:
            pass
    s = config.simulation
    theta = draw_prior(config.physics, s.n_params, s.seed)
    x = exact_events(config.physics, theta, s.events_per_param, s.seed + 1, progress=progress)
    t = to_unit(config.physics, x).float()
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"key": key, "theta": theta, "t": t}, tmp)
    tmp.replace(path)
    return theta, t, False


def plot_training(history: np.ndarray, kind: str, path: Path) -> Path:
    """Loss per step (cGAN: both players)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    steps = np.arange(1, len(history) + 1)
    ax.plot(steps, history[:, 0], lw=0.6, label="generator loss" if kind == "gan" else "training loss")
    if kind == "gan":
        ax.plot(steps, history[:, 1], lw=0.6, label="discriminator loss")
    ax.set_xlabel("step")
    ax.set_ylabel({"flow": "- log-likelihood per event (t)", "vae": "- ELBO per event (logit t)"}.get(kind, "loss"))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def train_surrogate(
    config: SurrogateConfig,
    out: Path,
    resume: bool = False,
    overwrite: bool = False,
    plots: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Simulate, train, save ``model.pt`` and judge the surrogate; returns the summary (also in summary.json)."""
    start = time.perf_counter()
    out = Path(out)
    # Evaluation settings only change what is measured after training.
    prepare_run_dir(out, config, resume, overwrite, (*_OUTPUTS, "training_set.pt"), free_sections=("evaluation",))
    out, log, provenance = open_run_dir(out, config, "surrogates.train")
    torch.manual_seed(config.training.seed)
    theta, t, reused = training_set(config, out, progress)
    log.info("training set %s: %s parameter sets x %s events", "reused" if reused else "simulated", *t.shape[::2])
    model = build_surrogate(config)
    n_weights = sum(p.numel() for p in model.parameters())
    t_fit, cpu_fit = time.perf_counter(), time.process_time()
    module = fit_surrogate(model, theta, t, out, resume=resume, progress=progress)
    fit_s, fit_cpu = time.perf_counter() - t_fit, time.process_time() - cpu_fit
    model = module.model.cpu().float().eval()
    history = module.loss_history.numpy()
    model.save(out / "model.pt", {"trained_steps": int(module.step_count)})
    log.info("trained %d steps in %.1f s; model written", int(module.step_count), fit_s)

    t_eval = time.perf_counter()
    quality, arrays = evaluate(model, config.evaluation, progress)
    summary: dict[str, Any] = {
        **provenance,
        "kind": config.kind,
        "model_file": str(out / "model.pt"),
        "weights": n_weights,
        "training_set": {"n_params": int(t.shape[0]), "events_per_param": int(t.shape[2]), "reused": reused},
        "steps": int(module.step_count),
        "final_loss": float(np.nanmean(history[-max(1, len(history) // 20) :, 0])),
        "quality": quality,
        "timing_s": {
            "fit": fit_s,
            "fit_cpu": fit_cpu,
            "evaluation": time.perf_counter() - t_eval,
            "total": time.perf_counter() - start,
        },
    }
    if config.kind == "flow":
        summary["targets_met"] = {
            "ks_mean_below_0.02": quality["ks"]["mean"] < KS_MEAN_TARGET,
            "ks_max_below_0.05": quality["ks"]["max"] < KS_MAX_TARGET,
            "held_out_as_specified": config.evaluation.n_params >= 100 and config.evaluation.n_samples >= 20_000,
        }
    model.save(out / "model.pt", {"trained_steps": int(module.step_count), "quality": quality})
    if plots:
        plot_densities(model, arrays, out / "densities.png", config.evaluation.plot_params)
        plot_training(history[: int(module.step_count)], config.kind, out / "training.png")
    write_json(out / "summary.json", summary)
    (out / "report.md").write_text(_report(summary, plots))
    log.info("KS mean %.4f max %.4f", quality["ks"]["mean"], quality["ks"]["max"])
    if progress:
        print(_table(summary))
        print(
            f"\nwrote {out / 'model.pt'}, {out / 'summary.json'}, {out / 'report.md'}" + (" and plots" if plots else "")
        )
    return summary


def _table(s: dict[str, Any]) -> str:
    q = s["quality"]
    rows = [
        [f"{s['kind']} surrogate", q["ks"]["mean"], q["ks"]["max"], q["wasserstein"]["mean"], q["wasserstein"]["max"]],
        ["exact vs exact (floor)", *(q["noise_floor"][m][k] for m in ("ks", "wasserstein") for k in ("mean", "max"))],
        [
            "exact, wrong theta",
            *(q["wrong_theta_reference"][m][k] for m in ("ks", "wasserstein") for k in ("mean", "max")),
        ],
    ]
    table = format_table(["sampler", "KS mean", "KS max", "W1 mean", "W1 max"], rows)
    if "log_prob_abs_error" in q:
        table += f"\n|log q - log p| at exact events: mean {q['log_prob_abs_error']['mean']:.4f}"
    return table


def _report(s: dict[str, Any], plots: bool) -> str:
    q = s["quality"]
    lines = [
        f"# {s['kind']} surrogate",
        "",
        f"{s['weights']} weights, trained {s['steps']} steps on {s['training_set']['n_params']} parameter sets x "
        f"{s['training_set']['events_per_param']} exact events per dataset in {s['timing_s']['fit']:.0f} s.",
        "",
        f"Held-out: {q['n_params']} parameter sets from the prior, {q['n_samples']} samples each per dataset "
        "(two-sample KS and 1-D Wasserstein distance in x against exact samples).",
        "",
        "```",
        _table(s),
        "```",
        "",
        f"Worst KS at theta = {np.round(q['worst']['theta'], 3).tolist()} ({q['worst']['dataset']}).",
    ]
    if "targets_met" in s:
        lines += ["", "Targets: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in s["targets_met"].items())]
    if plots:
        lines += ["", "![densities](densities.png)", "", "![training](training.png)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2: bad input, 3: the training diverged)."""
    args = build_parser().parse_args(argv)
    try:
        config = resolve_config(args)
        train_surrogate(config, args.out, args.resume, args.overwrite, not args.no_plots, not args.quiet)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteSurrogateLossError as err:
        print(f"error: training diverged: {err}; last checkpoint kept in {args.out / 'checkpoints'}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
