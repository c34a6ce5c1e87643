"""Command line: simulate exact events over the prior box, train a surrogate, judge it on held-out parameters.

Usage::

    python -m surrogates.train --config configs/surrogate_flow.yaml --out runs/surrogate-flow
    python -m surrogates.train --config configs/surrogate_gan.yaml --out runs/surrogate-gan
    python -m surrogates.train --config configs/surrogate_vae.yaml --out runs/surrogate-vae
    python -m surrogates.train --config configs/surrogate_dis_flow.yaml --out runs/surrogate-dis-flow
    python -m surrogates.train --config configs/surrogate_flow.yaml --out runs/surrogate-flow --resume
    python -m surrogates.train --config configs/surrogate_flow.yaml --set simulation.n_params=5000 --steps 2000

Steps: draw ``simulation.n_params`` parameter sets uniformly from the prior box and their exact events
(cached in ``training_set.pt``); train with Lightning (progress bar, ``checkpoints/last.ckpt`` every
``training.checkpoint_every`` steps, ``--resume``); write ``model.pt`` (what ``gan.sampler.path`` of an
inverse-solver runcard points to); then compare with the exact sampler on ``evaluation.n_params`` held-out
parameter sets and write ``summary.json``, ``report.md``, ``densities.png``, ``training.png`` and ``run.log``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from qcdgip import runtime
from qcdgip.cli import command_parser, default_out, resolve_runcard, run_command, shortcut_values
from qcdgip.runs import format_table, guard_run_dir, open_run_dir, write_json
from surrogates.base import physics_signature
from surrogates.config import SurrogateConfig
from surrogates.counts import fit_counts
from surrogates.dis_quality import evaluate_dis, plot_dis_densities
from surrogates.io import build_surrogate
from surrogates.quality import evaluate, plot_densities
from surrogates.simulate import draw_prior, luminosities, simulate_sets, to_unit
from surrogates.training import fit_surrogate

__all__ = ["SHORTCUTS", "build_parser", "main", "train_surrogate"]

OUTPUTS = ("summary.json", "report.md", "model.pt", "densities.png", "training.png", "training_set.pt")

SHORTCUTS = {
    "kind": "kind",
    "steps": "training.steps",
    "eval_params": "evaluation.n_params",
    "eval_samples": "evaluation.n_samples",
    "threads": "training.threads",
}
"""Shortcut options and the runcard fields they set."""


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = command_parser(
        "python -m surrogates.train",
        "Train a surrogate event generator on exact events and judge it on held-out parameter sets.",
        resume_help="continue an interrupted training from its last checkpoint",
    )
    p.add_argument("--kind", choices=["flow", "gan", "vae"], help="the surrogate: kind")
    p.add_argument("--steps", type=int, help="training steps: training.steps")
    p.add_argument("--eval-params", type=int, help="held-out parameter sets: evaluation.n_params")
    p.add_argument("--eval-samples", type=int, help="samples per held-out set and dataset: evaluation.n_samples")
    return p


def training_set(config: SurrogateConfig, out: Path, progress: bool) -> tuple[torch.Tensor, ...]:
    """(theta [M, D], t [M, J, n] float32, expected counts [M, J], reused?) from ``training_set.pt`` or simulated.

    The events come from ``simulation.simulator`` when it is set, else from the exact sampler of the physics.
    """
    path = out / "training_set.pt"
    key = {"simulation": config.simulation.model_dump(), "physics": physics_signature(config.problem)}
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
            if blob.get("key") == key and "expected" in blob:
                return blob["theta"], blob["t"], blob["expected"], True
        except Exception:
            pass
    theta = draw_prior(config.problem, config.simulation.n_params, config.simulation.seed)
    x, expected = simulate_sets(config, theta, config.simulation.seed + 1, progress)
    t = to_unit(config.problem, x).float()
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"key": key, "theta": theta, "t": t, "expected": expected}, tmp)
    tmp.replace(path)
    return theta, t, expected, False


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


def _fit(config: SurrogateConfig, out: Path, resume: bool, progress: bool, log: Any) -> tuple[Any, dict, dict]:
    """Simulate (or reuse) the training set, train, learn the counts; returns (module, facts, seconds)."""
    torch.manual_seed(config.training.seed)
    theta, t, expected, reused = training_set(config, out, progress)
    log.info("training set %s: %s parameter sets x %s events", "reused" if reused else "simulated", *t.shape[::2])
    model = build_surrogate(config)
    t_fit, cpu_fit = time.perf_counter(), time.process_time()
    module = fit_surrogate(model, theta, t, out, resume=resume, progress=progress)
    seconds = {"fit": time.perf_counter() - t_fit, "fit_cpu": time.process_time() - cpu_fit}
    t_counts = time.perf_counter()
    m = config.counts.n_params
    counts = fit_counts(module.model.counts, theta[:m], expected[:m], config.counts)
    module.model.luminosity.copy_(torch.tensor(luminosities(config.problem)))
    seconds["counts"] = time.perf_counter() - t_counts
    log.info("counts learned in %.1f s: %s", seconds["counts"], counts)
    facts = {"n_params": int(t.shape[0]), "events_per_param": int(t.shape[2]), "reused": reused, "counts": counts}
    return module, facts, seconds


def _targets(config: SurrogateConfig, quality: dict[str, Any]) -> dict[str, bool]:
    e = config.evaluation
    return {
        f"ks_mean_below_{e.ks_mean_target:g}": quality["ks"]["mean"] < e.ks_mean_target,
        f"ks_max_below_{e.ks_max_target:g}": quality["ks"]["max"] < e.ks_max_target,
        "held_out_as_specified": e.n_params >= 100 and e.n_samples >= 20_000,
    }


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
    free = ("evaluation", "training.threads", "training.progress")
    guard_run_dir(out, config, resume=resume, overwrite=overwrite, outputs=OUTPUTS, free=free)
    out, log, provenance = open_run_dir(out, config, "surrogates.train")
    module, facts, seconds = _fit(config, out, resume, progress, log)
    model = module.model.cpu().float().eval()
    history = module.loss_history.numpy()
    steps = int(module.step_count)
    model.save(out / "model.pt", {"trained_steps": steps})
    log.info("trained %d steps in %.1f s; model written", steps, seconds["fit"])
    t_eval = time.perf_counter()
    judge = evaluate_dis if config.dis is not None else evaluate
    quality, arrays = judge(model, config.evaluation, progress)
    summary: dict[str, Any] = {
        **provenance,
        "kind": config.kind,
        "model_file": str(out / "model.pt"),
        "weights": sum(p.numel() for p in model.parameters()),
        "training_set": facts,
        "steps": steps,
        "final_loss": float(np.nanmean(history[-max(1, len(history) // 20) :, 0])),
        "quality": quality,
    }
    if config.kind == "flow":
        summary["targets_met"] = _targets(config, quality)
    model.save(out / "model.pt", {"trained_steps": steps, "quality": quality})
    if plots:
        plot = plot_dis_densities if config.dis is not None else plot_densities
        plot(model, arrays, out / "densities.png", config.evaluation.plot_params)
        plot_training(history[:steps], config.kind, out / "training.png")
    summary["runtime"] = runtime.policy_summary()
    summary["timing_s"] = {**seconds, "evaluation": time.perf_counter() - t_eval, "total": time.perf_counter() - start}
    write_json(out / "summary.json", summary)
    (out / "report.md").write_text(_report(summary, plots))
    log.info("KS mean %.4f max %.4f", quality["ks"]["mean"], quality["ks"]["max"])
    if progress:
        print(_table(summary))
        print(f"\nwrote {out / 'model.pt'}, {out / 'summary.json'}, {out / 'report.md'}" + (" and plots" * plots))
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
    if "kl_nats_per_event" in q:
        kl = q["kl_nats_per_event"]
        table += f"\nKL(exact || flow) per event: mean {kl['mean']:.2e} max {kl['max']:.2e} nats"
    if "counts" in q:
        c = q["counts"]
        table += (f"\nlearned counts: relative error mean {c['relative_error']['mean']:.2e} max "
                  f"{c['relative_error']['max']:.2e}; in Poisson sd mean {c['poisson_sd']['mean']:.3f} max "
                  f"{c['poisson_sd']['max']:.3f}")  # fmt: skip
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
        + (
            "(KS: the larger of the x and Q^2 marginals; W1: marginals in the window's unit square)."
            if "kl_nats_per_event" in q
            else "(two-sample KS and 1-D Wasserstein distance in x against exact samples)."
        ),
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
    """Entry point; returns the exit status (:mod:`qcdgip.errors`)."""
    args = build_parser().parse_args(argv)
    out = default_out(args, "surrogate")

    def body() -> None:
        config = resolve_runcard(SurrogateConfig, args, shortcut_values(args, SHORTCUTS))
        runtime.configure_threads(config.training.threads or None)
        train_surrogate(config, out, args.resume, args.overwrite, not args.no_plots, not args.quiet)

    return run_command(body, lambda: out)


if __name__ == "__main__":
    raise SystemExit(main())
