"""The posterior mode of a closure: run the Langevin chains after the fit, judge their draws, plot and report them.

``summary.json`` gets a ``posterior_mode`` block: per parameter the draws' mean and sd, their width ratio and mean
offset against the exact MCMC posterior, the same two numbers for the bootstrap replicas, R-hat, ESS and
autocorrelation times, the C2ST accuracy of the draws (and of the replicas) against the MCMC draws, the sampler's
facts (gradient noise, injected noise, refused proposals, time) and ``targets_met``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from inverse.gan.model import InverseGAN
from inverse.gan.posterior.coordinates import ThetaCoordinates, sampling_coordinates
from inverse.gan.posterior.diagnostics import chain_diagnostics, compare_to_reference
from inverse.gan.posterior.langevin import LangevinResult, LangevinSampler
from physics.datasets import Experiment
from physics.pseudodata import EventData
from qcdgip.runs import format_table

__all__ = ["calibration_lines", "judge", "posterior_mode_lines", "run_posterior_mode"]


def run_posterior_mode(
    model: InverseGAN,
    experiment: Experiment,
    data: EventData,
    reference: np.ndarray,
    out: Path,
    fit_cpu_s: float,
    progress: bool = True,
) -> tuple[dict[str, Any], np.ndarray]:
    """Run (or resume, from ``out/posterior_mode/chains.pt``) the chains and judge them against ``reference``.

    Args:
        model: the fitted GAN (float64 on the CPU is fine: the chains have their own model in the training dtype).
        experiment: the experiment of the closure (its parameterisation gives the sampling coordinates).
        data: its data.
        reference: exact posterior draws [M, D] (the closure's MCMC reference).
        out: the run directory.
        fit_cpu_s: CPU seconds of the fit (the CPU target counts fit plus sampling).
        progress: progress bars.

    Returns:
        The ``posterior_mode`` block of summary.json and the kept draws [S, C, D].
    """
    post = model.config.posterior
    coords = sampling_coordinates(experiment, post.coordinates)
    sampler = LangevinSampler(model, data, coords)
    result = sampler.run(out / "posterior_mode", progress)
    block = judge(result, model.estimates().detach().numpy(), reference, post, fit_cpu_s)
    block["coordinates"] = "theta" if isinstance(coords, ThetaCoordinates) else "norm"
    block["error_model"] = "quadratic" if sampler.quadratic_error_model() else "linear"
    return block, result.draws


def judge(
    result: LangevinResult, replicas: np.ndarray, reference: np.ndarray, post: Any, fit_cpu_s: float
) -> dict[str, Any]:
    """The ``posterior_mode`` block of summary.json (see the module docstring)."""
    draws = result.draws
    flat = draws.reshape(-1, draws.shape[-1])
    versus = compare_to_reference(flat, reference, post.c2st_draws, post.seed)
    boot = compare_to_reference(replicas, reference, post.c2st_draws, post.seed)
    mixing = chain_diagnostics(draws)
    t = post.targets
    low, high = t.width_ratio_range
    cpu = fit_cpu_s + result.cpu_seconds
    met = {
        "width_ratio_in_range": all(low <= w <= high for w in versus["width_ratio"]),
        "mean_offset_below": all(abs(o) <= t.mean_offset_max for o in versus["mean_offset"]),
        "c2st_below": versus["c2st"] <= t.c2st_max,
        "rhat_below": all(r < t.rhat_max for r in mixing["rhat"]),
        "cpu_below": cpu <= 60.0 * t.cpu_minutes_max,
    }
    return {
        "method": "langevin",
        "chains": int(draws.shape[1]),
        "steps": int(result.trace.shape[0]),
        "burn_in": result.burn_in,
        "step_size": post.step_size,
        "momentum": post.momentum,
        "coordinates": post.coordinates,
        "draws_mean": flat.mean(0).tolist(),
        "draws_sd": flat.std(0, ddof=1).tolist(),
        **versus,
        "mean_offset_mcse": (np.asarray(mixing["mean_mcse"]) / reference.std(0, ddof=1)).tolist(),
        **mixing,
        "bootstrap": {k: boot[k] for k in ("width_ratio", "mean_offset", "c2st")},
        "gradient_noise_variance": result.noise_variance,
        "injected_variance": result.injected,
        "refused_fraction": result.refused,
        "lag_per_move": result.lag,
        "gradient_error_variance": result.error_variance,
        "sampling_s": result.seconds,
        "sampling_cpu_s": result.cpu_seconds,
        "step_s_median": float(np.median(result.step_seconds)) if result.step_seconds else None,
        "fit_plus_sampling_cpu_s": cpu,
        "targets": post.targets.model_dump(),
        "targets_met": met,
    }


def _error_line(block: dict[str, Any]) -> str:
    lag, error = block.get("lag_per_move"), block.get("gradient_error_variance")
    if lag is None or error is None:
        return "The discriminators' error was not modelled (error_correction off, or too short a burn-in)."
    lags = ", ".join(f"{x:.2f}" for x in lag)
    errors = ", ".join(f"{x:.3f}" for x in error)
    return (
        f"The discriminators' gradient lagged by {lags} of the last two moves, and its remaining error had "
        f"variance {errors} per whitened coordinate; both were taken out after the burn-in."
    )


def posterior_mode_lines(block: dict[str, Any], names: list[str]) -> list[str]:
    """The report.md section of the posterior mode."""
    rows = [
        (n, block["draws_mean"][i], block["draws_sd"][i], block["width_ratio"][i], block["mean_offset"][i],
         block["mean_offset_mcse"][i], block["bootstrap"]["width_ratio"][i], block["rhat"][i], block["ess"][i],
         block["autocorrelation_steps"][i])
        for i, n in enumerate(names)
    ]  # fmt: skip
    table = format_table(
        ["param", "mean", "sd", "width", "offset/sd", "MCSE", "boot. width", "R-hat", "ESS", "tau"], rows, ".3f"
    )
    met = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in block["targets_met"].items())
    return [
        "",
        "## Posterior draws (adversarial Langevin)",
        "",
        f"{block['chains']} chains x {block['steps']} steps (first {block['burn_in']} left out), step "
        f"{block['step_size']} with momentum {block['momentum']} in {block['coordinates']} coordinates, "
        "moved by the discriminators' gradient; "
        f"{block['sampling_cpu_s']:.0f} CPU-s of sampling, {block['fit_plus_sampling_cpu_s']:.0f} CPU-s with the "
        f"fit. `width` = draws' sd / MCMC posterior sd, `offset/sd` = (draws' mean - posterior mean) / sd, "
        "`MCSE` its Monte-Carlo standard error (the chains' means' sd / sqrt(chains)); "
        "`boot. width` is the bootstrap replicas' width for comparison; `tau` is the autocorrelation time in steps.",
        "",
        "```",
        table,
        "```",
        "",
        f"C2ST accuracy against the MCMC draws (0.5: indistinguishable): draws {block['c2st']:.3f}, bootstrap "
        f"replicas {block['bootstrap']['c2st']:.3f}. The events' gradient noise (from the two halves) "
        f"{block['gradient_noise_variance']:.3f} per "
        f"whitened coordinate, injected noise {block['injected_variance']:.3f}; "
        f"{100 * block['refused_fraction']:.2f} % of the proposals left the prior box and were refused (the chain "
        f"stayed and turned back). {_error_line(block)}",
        "",
        f"Targets: {met}. Plot: `posterior_mode.png`.",
    ]


def calibration_lines(c: dict[str, Any]) -> list[str]:
    """The report.md section of a calibration study (:mod:`inverse.gan.posterior.calibration`)."""
    lines = ["", f"## Calibration over {c['n_sets']} pseudo-data sets with truths from the prior", ""]
    for method in ("posterior", "bootstrap"):
        if method not in c:
            continue
        m = c[method]
        rejected = ", ".join(m["sbc_rejected_at_0.01"]) or "none"
        p_values = ", ".join(f"{n} {p:.3f}" for n, p in zip(c["params"], m["sbc_p_values"]))
        cover = ", ".join(f"{n} {a:.2f}/{b:.2f}" for n, a, b in zip(c["params"], m["coverage_68"], m["coverage_95"]))
        lines += [
            f"- {method}: SBC p-values ({c['bins']} bins of ranks among {c['rank_draws']} draws) {p_values}; "
            f"rejected at p = 0.01: {rejected}. TARP ATC {m['tarp_atc']:+.3f} (max deviation "
            f"{m['tarp_max_deviation']:.3f}). 68 / 95 % coverage: {cover}.",
        ]
    if c.get("failed"):
        lines.append(f"- {len(c['failed'])} data sets failed and are left out: " + "; ".join(
            f"{k}: {why}" for k, why in list(c["failed"].items())[:5]))  # fmt: skip
    lines.append("- `calibration/calibration.png`; per-data-set rows in `calibration/results.jsonl`")
    return lines
