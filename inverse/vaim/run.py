"""A VAIM run: simulate pairs, train, draw every solution of the observations, judge them, write the directory.

Steps: draw ``training.n_train`` parameter sets uniformly from the prior box and simulate their observables
(the simulator plus the config's noise, :mod:`inverse.vaim.simulate`); train with Lightning (progress bar,
``checkpoints/last.ckpt``, ``--resume``); write ``model.pt``; decode every observation with ``sampling.n_draws``
latent draws; repair the draws the learned forward map finds inconsistent (:meth:`inverse.vaim.model.VAIM.repair`);
group draws into modes and check each against the *true* simulator (:mod:`inverse.vaim.analysis`); write
``summary.json``, ``draws.npz``, ``report.md`` and the plots ``solutions.png``, ``latent.png``, ``forward.png``,
``training.png``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from inverse.vaim.analysis import analyse_draws
from inverse.vaim.config import VAIMConfig
from inverse.vaim.model import VAIM, save_vaim, transform_observables
from inverse.vaim.report import vaim_report, vaim_table
from inverse.vaim.simulate import checked_simulator, noise_scale, observations, simulate_pairs
from inverse.vaim.training import LOSS_TERMS, VAIMModule, fit_vaim
from qcdgip import runtime
from qcdgip.runs import guard_run_dir, open_run_dir, write_json

__all__ = ["OUTPUTS", "run_vaim"]

OUTPUTS = (
    "summary.json",
    "report.md",
    "model.pt",
    "draws.npz",
    "solutions.png",
    "latent.png",
    "forward.png",
    "training.png",
)


def _train(config: VAIMConfig, theta: Tensor, y: Tensor, m: int, out: Path, resume: bool, progress: bool) -> Any:
    """Build and train the VAIM on the simulated pairs; returns (module, seconds, CPU seconds)."""
    moments = transform_observables(y, config.model.log_observables)
    model = VAIM(config, m, moments.mean(0), moments.std(0))
    xs, ys = model.scale_x(theta).float(), model.scale_y(y).float()
    t_fit, cpu_fit = time.perf_counter(), time.process_time()
    module = fit_vaim(model, xs, ys, out, resume=resume, progress=progress)
    return module, time.perf_counter() - t_fit, time.process_time() - cpu_fit


def _draw(config: VAIMConfig, model: VAIM, y_obs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(raw draws, repaired draws, which draws the repair moved, noise scale of the observations)."""
    s = config.sampling
    with torch.no_grad():
        raw = model.draw(y_obs, s.n_draws, torch.Generator().manual_seed(s.seed)).double()
    sigma = noise_scale(y_obs, config.problem.noise)
    if not s.repair:
        return raw, raw, torch.zeros(raw.shape[:2], dtype=torch.bool), sigma
    repaired, moved = model.repair(raw, y_obs, sigma, s.repair_sigmas, s.repair_steps)
    return raw, repaired, moved, sigma


def _summary(config: VAIMConfig, module: VAIMModule, m: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    history = module.loss_history.numpy()[: module.steps_done]
    final = history[-max(1, len(history) // 20) :].mean(0) if len(history) else np.full(len(LOSS_TERMS), np.nan)
    return {
        "problem": {
            "simulator": config.problem.simulator,
            "kwargs": config.problem.kwargs,
            "parameters": [p.name for p in config.problem.parameters],
            "n_observables": m,
            "noise": config.problem.noise.model_dump(),
        },
        "weights": sum(p.numel() for p in module.model.parameters()),
        "steps": module.steps_done,
        "final_losses": dict(zip(LOSS_TERMS, final.tolist())),
        "observations": results,
    }


def _plots(config: VAIMConfig, model: VAIM, simulator: Any, draws: dict[str, Any], theta: Tensor, out: Path) -> None:
    from inverse.vaim.plots import plot_forward, plot_latent, plot_solutions, plot_training

    truths = [p.truth for p in config.problem.parameters]
    raw, repaired = draws["raw"], draws["repaired"]
    plot_solutions(config, raw.numpy(), repaired.numpy(), np.stack(draws["labels"]), truths, out / "solutions.png")
    plot_latent(model, theta[:4000], out / "latent.png")
    plot_forward(config, simulator, repaired, draws["observations"], draws["sigma"], out / "forward.png")
    plot_training(draws["history"], out / "training.png")


def _save_draws(config: VAIMConfig, draws: dict[str, Any], path: Path) -> None:
    np.savez_compressed(
        path,
        raw=draws["raw"].numpy(),
        repaired=draws["repaired"].numpy(),
        moved=draws["moved"].numpy(),
        labels=np.stack(draws["labels"]),
        observations=draws["observations"].numpy(),
        names=np.array([p.name for p in config.problem.parameters]),
    )


def run_vaim(
    config: VAIMConfig,
    out: Path,
    resume: bool = False,
    overwrite: bool = False,
    plots: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Simulate, train, draw and judge; returns the summary (also written to ``out/summary.json``)."""
    start = time.perf_counter()
    out = Path(out)
    simulator, m = checked_simulator(config)
    y_obs, theta_obs = observations(config, simulator, m)
    # The draws (sampling) only change what is measured after training.
    free = ("sampling", "training.threads", "training.progress")
    guard_run_dir(out, config, resume=resume, overwrite=overwrite, outputs=OUTPUTS, free=free)
    out, log, provenance = open_run_dir(out, config, "inverse.vaim")
    t = config.training
    torch.manual_seed(t.seed)
    t_sim = time.perf_counter()
    theta, y = simulate_pairs(config, simulator, t.n_train, t.seed + 1)
    sim_s = time.perf_counter() - t_sim
    log.info("simulated %d pairs (%d parameters -> %d observables) in %.1f s", len(theta), theta.shape[1], m, sim_s)
    module, fit_s, fit_cpu = _train(config, theta, y, m, out, resume, progress)
    model = module.model.cpu().eval()
    save_vaim(model, out / "model.pt", {"trained_steps": module.steps_done})
    log.info("trained %d steps in %.1f s", module.steps_done, fit_s)
    t_draw = time.perf_counter()
    raw, repaired, moved, sigma = _draw(config, model, y_obs)
    results = [analyse_draws(config, simulator, raw[b], repaired[b], moved[b], y_obs[b]) for b in range(len(y_obs))]
    labels = [r.pop("labels") for r in results]
    draw_s = time.perf_counter() - t_draw
    if theta_obs is not None:
        for r, th in zip(results, theta_obs):
            r["simulated_at"] = dict(zip([p.name for p in config.problem.parameters], th.tolist()))
    summary = {**provenance, **_summary(config, module, m, results)}
    times = {"simulation": sim_s, "fit": fit_s, "fit_cpu": fit_cpu, "draws": draw_s}
    draws = {"raw": raw, "repaired": repaired, "moved": moved, "labels": labels, "observations": y_obs}
    _save_draws(config, draws, out / "draws.npz")
    if plots:
        history = module.loss_history.numpy()[: module.steps_done]
        _plots(config, model, simulator, {**draws, "sigma": sigma, "history": history}, theta, out)
    summary["runtime"] = runtime.policy_summary()
    summary["timing_s"] = {**times, "total": time.perf_counter() - start}
    write_json(out / "summary.json", summary)
    (out / "report.md").write_text(vaim_report(summary, plots))
    log.info("done in %.1f s", summary["timing_s"]["total"])
    if progress:
        print(vaim_table(summary))
        print(
            f"\nwrote {out / 'summary.json'}, {out / 'report.md'}, {out / 'draws.npz'}"
            + (" and plots" if plots else "")
        )
    return summary
