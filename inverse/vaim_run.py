"""Command line of VAIM: simulate pairs, train, draw every solution of the observations, judge them.

Usage::

    python -m inverse.vaim --config configs/vaim_x2.yaml --out runs/vaim-x2
    python -m inverse.vaim --config configs/vaim_pdf_shapes.yaml --out runs/vaim-pdf-shapes --resume
    python -m inverse.vaim --compare runs/vaim-pdf-shapes runs/vaim-pdf-counts --out docs/vaim_pdf.png

Steps: draw ``training.n_train`` parameter sets uniformly from the prior box and simulate their observables
(the simulator plus the config's noise); train with Lightning (progress bar, ``checkpoints/last.ckpt``,
``--resume``); write ``model.pt``; decode every observation with ``sampling.n_draws`` latent draws; repair
the draws the learned forward map finds inconsistent (:meth:`inverse.vaim.VAIM.repair`); group draws into modes;
check each draw against the *true* simulator (forward consistency |f(x_hat) - y| / noise); write
``summary.json``, ``draws.npz``, ``report.md`` and the plots ``solutions.png``, ``latent.png``, ``forward.png``,
``training.png``. ``--compare`` overlays the draws of finished runs in one corner plot.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from inverse.problems import Simulator, check_simulator, load_simulator
from inverse.vaim import VAIM, transform_observables
from inverse.vaim_config import NoiseConfig, VAIMConfig
from inverse.vaim_training import LOSS_TERMS, NonFiniteVAIMLossError, fit_vaim
from physics.config import load_yaml, parse_config
from physics.runs import format_table, open_run_dir, prepare_run_dir, write_json

__all__ = [
    "add_noise",
    "analyse_draws",
    "build_parser",
    "checked_simulator",
    "find_modes",
    "load_vaim",
    "main",
    "noise_scale",
    "observations",
    "run_vaim",
    "simulate_pairs",
]

_OUTPUTS = ("summary.json", "report.md", "model.pt", "draws.npz", "solutions.png", "latent.png", "forward.png")


def prior_box(config: VAIMConfig) -> tuple[Tensor, Tensor]:
    """Box edges [d] in float64."""
    params = config.problem.parameters
    return torch.tensor([p.low for p in params], dtype=torch.float64), torch.tensor(
        [p.high for p in params], dtype=torch.float64
    )


def add_noise(y: Tensor, noise: NoiseConfig, generator: torch.Generator) -> Tensor:
    """Observations from expectations: Gaussian, Poisson or none (see :class:`NoiseConfig`)."""
    if noise.kind == "none":
        return y
    if noise.kind == "poisson":
        if bool((y < 0).any()):
            raise ValueError("problem.noise.kind: poisson needs non-negative simulator output (expected counts)")
        return torch.poisson(y, generator=generator)
    sigma = torch.as_tensor(noise.sigma, dtype=y.dtype, device=y.device)
    return y + sigma * torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)


def noise_scale(y: Tensor, noise: NoiseConfig) -> Tensor:
    """The noise standard deviation of each observed value (Poisson: sqrt(max(y, 1)))."""
    if noise.kind == "poisson":
        return y.clamp_min(1.0).sqrt()
    return torch.as_tensor(noise.sigma, dtype=y.dtype, device=y.device).expand_as(y)


def checked_simulator(config: VAIMConfig) -> tuple[Simulator, int]:
    """The runcard's simulator, probed inside the box, and its number of observables (errors name the field)."""
    problem = config.problem
    simulator = load_simulator(problem.simulator, problem.kwargs)
    low, high = prior_box(config)
    probe = low + (high - low) * torch.rand(
        4, len(low), generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    m = check_simulator(simulator, probe)
    sigma = problem.noise.sigma
    if isinstance(sigma, list) and len(sigma) not in (1, m):
        raise ValueError(f"problem.noise.sigma: give 1 or {m} values (one per observable), got {len(sigma)}")
    if problem.observables is not None and len(problem.observables) != m:
        raise ValueError(
            f"problem.observables: the simulator returns {m} observables, {len(problem.observables)} named"
        )
    return simulator, m


def simulate_pairs(config: VAIMConfig, simulator: Simulator, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """N parameter sets uniform in the box and their noisy observables, float64, in chunks."""
    low, high = prior_box(config)
    g = torch.Generator().manual_seed(seed)
    theta = low + (high - low) * torch.rand(n, len(low), generator=g, dtype=torch.float64)
    y = torch.cat([simulator(chunk) for chunk in theta.split(8192)]).to(torch.float64)
    if not bool(torch.isfinite(y).all()):
        raise ValueError("problem.simulator: returned non-finite observables for parameters inside the box")
    return theta, add_noise(y, config.problem.noise, g)


def observations(config: VAIMConfig, simulator: Simulator, m: int) -> tuple[Tensor, Tensor | None]:
    """(observations [B, m], the parameters they were simulated at or None)."""
    obs = config.problem.observations
    if obs.values is not None:
        y = torch.tensor(obs.values, dtype=torch.float64)
        if y.shape[1] != m:
            raise ValueError(f"problem.observations.values: rows need {m} values (the simulator's), got {y.shape[1]}")
        return y, None
    theta = torch.tensor(obs.parameters, dtype=torch.float64)
    y = simulator(theta).to(torch.float64)
    if obs.noisy:
        y = add_noise(y, config.problem.noise, torch.Generator().manual_seed(obs.seed))
    return y, theta


def find_modes(scaled: np.ndarray, eps: float | None, min_fraction: float) -> tuple[np.ndarray, float]:
    """Mode label of each draw (DBSCAN in box-scaled coordinates), 0 = largest mode, -1 = unassigned.

    Args:
        scaled: draws in [-1, 1]^d, [n, d].
        eps: neighbourhood radius: draws closer than this chain into one mode (None: twice the median distance
            of a draw to its k-th neighbour, at least 0.02).
        min_fraction: clusters smaller than this fraction of the draws are unassigned.

    Returns:
        (labels [n], the radius used).
    """
    from sklearn.cluster import DBSCAN
    from sklearn.neighbors import NearestNeighbors

    n = len(scaled)
    core = max(5, int(0.002 * n))
    if eps is None:
        dist, _ = NearestNeighbors(n_neighbors=min(core + 1, n)).fit(scaled).kneighbors(scaled)
        eps = max(0.02, 2.0 * float(np.median(dist[:, -1])))
    labels = DBSCAN(eps=eps, min_samples=core).fit_predict(scaled)
    sizes = {lab: int((labels == lab).sum()) for lab in set(labels.tolist()) if lab >= 0}
    kept = [lab for lab, size in sorted(sizes.items(), key=lambda kv: -kv[1]) if size >= min_fraction * n]
    out = np.full(n, -1, dtype=np.int64)
    for new, lab in enumerate(kept):
        out[labels == lab] = new
    return out, eps


def _consistency(f_x: Tensor, y: Tensor, sigma: Tensor, within: float) -> dict[str, Any]:
    rms = (((f_x - y) / sigma) ** 2).mean(-1).sqrt()
    return {
        "within": float((rms <= within).double().mean()),
        "median_rms_sigma": float(rms.median()),
        "p95_rms_sigma": float(torch.quantile(rms, 0.95)),
    }


def analyse_draws(
    config: VAIMConfig, simulator: Simulator, raw: Tensor, repaired: Tensor, moved: Tensor, y: Tensor
) -> dict[str, Any]:
    """Modes, spreads and forward consistency of one observation's draws.

    Args:
        config: the runcard.
        simulator: the true forward map (consistency is judged with it, not with the learned one).
        raw: decoder draws [n, d] before repair.
        repaired: the same after :meth:`VAIM.repair` [n, d].
        moved: which draws the repair moved [n].
        y: the observation [m].

    Returns:
        A JSON-ready dict.
    """
    s = config.sampling
    names = [p.name for p in config.problem.parameters]
    low, high = prior_box(config)
    scaled = ((repaired - (low + high) / 2) / ((high - low) / 2)).numpy()
    labels, eps = find_modes(scaled, s.mode_eps, s.min_mode_fraction)
    sigma = noise_scale(y.unsqueeze(0), config.problem.noise)
    consistency = {}
    for key, draws in (("raw", raw), ("repaired", repaired)):
        f_x = torch.cat([simulator(c) for c in draws.split(8192)]).to(torch.float64)
        consistency[key] = _consistency(f_x, y.unsqueeze(0), sigma, s.consistency_sigmas)
    x = repaired.numpy()
    modes = []
    for lab in range(labels.max() + 1):
        xm = x[labels == lab]
        modes.append(
            {
                "fraction": float(len(xm) / len(x)),
                "mean": dict(zip(names, xm.mean(0).tolist())),
                "median": dict(zip(names, np.median(xm, 0).tolist())),
                "sd": dict(zip(names, xm.std(0, ddof=1).tolist() if len(xm) > 1 else [0.0] * len(names))),
            }
        )
    cov = np.atleast_2d(np.cov(scaled.T)) if len(scaled) > 1 else np.zeros((len(names), len(names)))
    eigval, eigvec = np.linalg.eigh(cov)
    return {
        "observation": y.tolist(),
        "n_draws": len(x),
        "moved_by_repair": float(moved.double().mean()),
        "modes": modes,
        "mode_eps": eps,
        "unassigned_fraction": float((labels < 0).mean()),
        "sd": dict(zip(names, x.std(0, ddof=1).tolist())),
        "principal_sd_scaled": np.sqrt(np.clip(eigval[::-1], 0, None)).tolist(),
        "principal_axis_scaled": dict(zip(names, eigvec[:, -1].tolist())),
        "forward_consistency": consistency,
        "labels": labels,
    }


def save_vaim(model: VAIM, path: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write weights, config and scalings to ``path`` (atomically)."""
    blob = {
        "format": "qcdgip-vaim/1",
        "config": model.config.model_dump(),
        "n_observables": model.n_observables,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def load_vaim(path: str | Path) -> VAIM:
    """Read a VAIM written by :func:`save_vaim`; a file of another kind or a damaged one is refused by name."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: VAIM model file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"{path}: not a readable torch file ({type(err).__name__}: {err})") from err
    if not isinstance(blob, dict) or blob.get("format") != "qcdgip-vaim/1":
        raise ValueError(
            f"{path}: not a VAIM model file (format {blob.get('format') if isinstance(blob, dict) else None!r})"
        )
    config = parse_config(VAIMConfig, blob["config"], str(path))
    state = blob["state_dict"]
    model = VAIM(config, blob["n_observables"], state["y_mean"], state["y_std"])
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the stored config: {err}") from err
    return model.to(state["encoder.inp.weight"].dtype).eval()


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
    prepare_run_dir(out, config, resume, overwrite, (*_OUTPUTS, "training.png"), free_sections=("sampling",))
    out, log, provenance = open_run_dir(out, config, "inverse.vaim")
    t = config.training
    torch.manual_seed(t.seed)
    t_sim = time.perf_counter()
    theta, y = simulate_pairs(config, simulator, t.n_train, t.seed + 1)
    sim_s = time.perf_counter() - t_sim
    log.info("simulated %d pairs (%d parameters -> %d observables) in %.1f s", len(theta), theta.shape[1], m, sim_s)
    moments = transform_observables(y, config.model.log_observables)
    model = VAIM(config, m, moments.mean(0), moments.std(0))
    xs, ys = model.scale_x(theta).float(), model.scale_y(y).float()
    t_fit, cpu_fit = time.perf_counter(), time.process_time()
    module = fit_vaim(model, xs, ys, out, resume=resume, progress=progress)
    fit_s, fit_cpu = time.perf_counter() - t_fit, time.process_time() - cpu_fit
    model = module.model.cpu().eval()
    history = module.loss_history.numpy()[: module.steps_done]
    save_vaim(model, out / "model.pt", {"trained_steps": module.steps_done})
    log.info("trained %d steps in %.1f s", module.steps_done, fit_s)

    s = config.sampling
    t_draw = time.perf_counter()
    with torch.no_grad():
        raw = model.draw(y_obs, s.n_draws, torch.Generator().manual_seed(s.seed)).double()
    sigma = noise_scale(y_obs, config.problem.noise)
    repaired, moved = (
        model.repair(raw, y_obs, sigma, s.repair_sigmas, s.repair_steps)
        if s.repair
        else (raw, torch.zeros(raw.shape[:2], dtype=torch.bool))
    )
    results = [analyse_draws(config, simulator, raw[b], repaired[b], moved[b], y_obs[b]) for b in range(len(y_obs))]
    labels = [r.pop("labels") for r in results]
    draw_s = time.perf_counter() - t_draw
    if theta_obs is not None:
        for r, th in zip(results, theta_obs):
            r["simulated_at"] = dict(zip([p.name for p in config.problem.parameters], th.tolist()))
    final = history[-max(1, len(history) // 20) :].mean(0) if len(history) else np.full(len(LOSS_TERMS), np.nan)
    summary: dict[str, Any] = {
        **provenance,
        "problem": {
            "simulator": config.problem.simulator,
            "kwargs": config.problem.kwargs,
            "parameters": [p.name for p in config.problem.parameters],
            "n_observables": m,
            "noise": config.problem.noise.model_dump(),
        },
        "weights": sum(p.numel() for p in model.parameters()),
        "steps": module.steps_done,
        "final_losses": dict(zip(LOSS_TERMS, final.tolist())),
        "observations": results,
        "timing_s": {
            "simulation": sim_s,
            "fit": fit_s,
            "fit_cpu": fit_cpu,
            "draws": draw_s,
            "total": time.perf_counter() - start,
        },
    }
    np.savez_compressed(
        out / "draws.npz",
        raw=raw.numpy(),
        repaired=repaired.numpy(),
        moved=moved.numpy(),
        labels=np.stack(labels),
        observations=y_obs.numpy(),
        names=np.array([p.name for p in config.problem.parameters]),
    )
    if plots:
        from inverse.vaim_plots import plot_forward, plot_latent, plot_solutions, plot_training

        truths = [p.truth for p in config.problem.parameters]
        plot_solutions(config, raw.numpy(), repaired.numpy(), np.stack(labels), truths, out / "solutions.png")
        plot_latent(model, theta[:4000], out / "latent.png")
        plot_forward(config, simulator, repaired, y_obs, sigma, out / "forward.png")
        plot_training(history, out / "training.png")
    write_json(out / "summary.json", summary)
    (out / "report.md").write_text(_report(summary, plots))
    log.info("done in %.1f s", summary["timing_s"]["total"])
    if progress:
        print(_table(summary))
        print(
            f"\nwrote {out / 'summary.json'}, {out / 'report.md'}, {out / 'draws.npz'}"
            + (" and plots" if plots else "")
        )
    return summary


def _table(summary: dict[str, Any]) -> str:
    rows = []
    for i, r in enumerate(summary["observations"]):
        c = r["forward_consistency"]
        for j, mode in enumerate(r["modes"]):
            rows.append(
                [
                    i,
                    j,
                    mode["fraction"],
                    ", ".join(f"{k}={v:.4g}" for k, v in mode["median"].items()),
                    ", ".join(f"{v:.3g}" for v in mode["sd"].values()),
                    c["raw"]["within"] if j == 0 else "",
                    c["repaired"]["within"] if j == 0 else "",
                ]
            )
    return format_table(
        ["obs", "mode", "fraction", "median", "sd", "consistent (raw)", "consistent (repaired)"], rows, ".4g"
    )


def _report(summary: dict[str, Any], plots: bool) -> str:
    lines = [
        f"# VAIM: {summary['problem']['simulator']}",
        "",
        f"{summary['steps']} steps, {summary['weights']} weights, {summary['timing_s']['total']:.1f} s in all.",
        "",
        "```",
        _table(summary),
        "```",
        "",
        "Consistent: share of draws with RMS |f(x) - y| / noise within the configured number of sigmas, judged "
        "with the true simulator; raw = decoder draws, repaired = after the learned-forward repair.",
    ]
    if plots:
        lines += ["", "![solutions](solutions.png)", "![latent](latent.png)", "![forward](forward.png)"]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m inverse.vaim", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="YAML runcard (problem section required)")
    p.add_argument("--out", type=Path, required=True, help="run directory (with --compare: the PNG file)")
    p.add_argument("--steps", type=int, help="training steps")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over in a run directory that holds a run")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar or table")
    p.add_argument("--compare", type=Path, nargs="+", metavar="RUN", help="overlay the draws of finished runs")
    p.add_argument("--labels", nargs="+", help="legend labels of --compare runs (default: directory names)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.compare:
            from inverse.vaim_plots import plot_compare

            path = plot_compare(args.compare, args.out, args.labels)
            print(f"wrote {path}")
            return 0
        if args.config is None:
            raise ValueError("--config is required (or --compare RUN ...)")
        raw = load_yaml(args.config)
        config = parse_config(VAIMConfig, raw, str(args.config))
        if args.steps is not None:
            data = config.model_dump()
            data["training"]["steps"] = args.steps
            config = parse_config(VAIMConfig, data, "command line")
        run_vaim(config, args.out, args.resume, args.overwrite, not args.no_plots, not args.quiet)
    except (ValueError, NonFiniteVAIMLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
