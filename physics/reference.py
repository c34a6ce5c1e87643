"""Command line: the statistical reference of a closure test (pseudo-data, Cramér–Rao bound, MCMC posterior).

Usage::

    python -m physics.reference --config configs/reference.yaml --case B --seed 1 --out runs/reference
    python -m physics.reference --config configs/reference.yaml --set posterior.n_samples=8000 --resume

Steps: generate (or reuse) pseudo-data for the case, print the Cramér–Rao table of every case at the truth,
fit the maximum-likelihood estimate, sample the exact posterior by MCMC, check the goodness of fit in the
binned view, and write ``summary.json``, ``posterior_samples.npz``, plots (``data.png``, ``posterior.png``,
``pdfs.png``) and ``run.log`` into ``--out``. Every inverse solver of the suite is judged against these
numbers. A data set already in ``--out/data`` is reused when its case, seed and truth match, so a rerun never
destroys it; a mismatch is an error unless ``--overwrite`` is given. A directory that holds a finished reference is
redone with ``--resume`` (its data reused) or ``--overwrite``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import chi2 as chi2_dist

from physics.binned import BinnedView
from physics.config import ReferenceConfig
from physics.datasets import Experiment
from physics.likelihood import ExtendedLikelihood, MLEResult, cramer_rao, fisher_information, fit_mle
from physics.plots import plot_corner, plot_data, plot_pdf_bands
from physics.posterior import PosteriorResult, sample_posterior
from physics.pseudodata import EventData, load_or_generate
from qcdgip import runtime
from qcdgip.cli import command_parser, default_out, resolve_runcard, run_command, shortcut_values
from qcdgip.runs import format_table, guard_run_dir, open_run_dir, write_json

__all__ = ["SHORTCUTS", "build_parser", "crlb_table", "main", "run_reference"]

OUTPUTS = ("summary.json", "posterior_samples.npz", "data.png", "posterior.png", "pdfs.png")

SHORTCUTS = {"case": "physics.case", "seed": "data.seed"}
"""Shortcut options and the runcard fields they set."""


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = command_parser(
        "python -m physics.reference",
        "The statistical reference of a closure test: pseudo-data, Cramér–Rao bound, MLE, MCMC posterior.",
        resume_help="redo the reference in a directory that holds one, reusing its data",
    )
    p.add_argument("--case", help="event-count case: physics.case")
    p.add_argument("--seed", type=int, help="pseudo-data seed: data.seed")
    return p


def crlb_table(config: ReferenceConfig) -> dict[str, dict[str, object]]:
    """Cramér–Rao standard deviations and the Nu-au, Nd-ad correlations at the truth, for every case."""
    out: dict[str, dict[str, object]] = {}
    for case in config.physics.cases:
        experiment = Experiment(config.physics, case=case)
        info = fisher_information(experiment, experiment.theory.truth_tensor())
        sd, corr = cramer_rao(info)
        names = experiment.theory.parameter_names
        out[case] = {
            "sd": dict(zip(names, sd[0].tolist())),
            "correlation": corr[0].tolist(),
            "fisher": info[0].tolist(),
        }
    return out


def _data_table(experiment: Experiment, data: EventData) -> str:
    rows = [
        (d.name, d.observable, f"[{d.spec.x_min}, {d.spec.x_max}]", d.expected, n)
        for d, n in zip(experiment.datasets, data.counts)
    ]
    return format_table(["dataset", "observable", "x range", "expected", "observed"], rows, ".1f")


def _crlb_text(crlb: dict[str, dict[str, Any]], names: list[str], n_flavors: int) -> str:
    pairs = [(3 * f, 3 * f + 1) for f in range(n_flavors)]
    rows = [
        (case, *[v["sd"][n] for n in names], *[v["correlation"][i][k] for i, k in pairs]) for case, v in crlb.items()
    ]
    headers = ["case", *names, *[f"corr({names[i]},{names[k]})" for i, k in pairs]]
    return "\n== Cramér–Rao bound at the truth (standard deviations, extended unbinned likelihood)\n" + format_table(
        headers, rows, ".3f"
    )


def _posterior_text(experiment: Experiment, mle: MLEResult, posterior: PosteriorResult, crlb_sd: np.ndarray) -> str:
    names, truth = experiment.theory.parameter_names, np.asarray(experiment.theory.truth)
    n_draws, n_chains = posterior.samples.shape[:2]
    q = posterior.quantiles([0.16, 0.84])
    headers = ["param", "truth", "MLE", "mean", "sd", "sd/CRLB", "q16", "q84", "(mean-truth)/sd", "R-hat", "ESS"]
    rows = [
        (
            n,
            truth[i],
            mle.theta[i],
            posterior.mean[i],
            posterior.std[i],
            posterior.std[i] / crlb_sd[i],
            q[0, i],
            q[1, i],
            (posterior.mean[i] - truth[i]) / posterior.std[i],
            posterior.rhat[i],
            posterior.ess[i],
        )
        for i, n in enumerate(names)
    ]
    title = (
        f"\n== MCMC reference posterior, case {experiment.case} (random-walk Metropolis, {n_chains} chains x "
        f"{n_draws} draws, {posterior.seconds:.0f} s, acceptance {posterior.acceptance:.2f})\n"
    )
    return title + format_table(headers, rows, ".4g")


def _goodness_of_fit(view: BinnedView, points: dict[str, np.ndarray], n_params: int) -> dict[str, dict[str, float]]:
    fits = {}
    for label, theta in points.items():
        value = float(view.chi2(torch.tensor(theta[None], dtype=torch.float64), kind="theory")[0])
        ndf = view.n_points - (0 if label == "truth" else n_params)
        fits[label] = {"chi2": value, "n_points": view.n_points, "ndf": ndf, "p_value": float(chi2_dist.sf(value, ndf))}
    return fits


def _plots(experiment: Experiment, view: BinnedView, posterior: PosteriorResult, fisher: Any, out: Path) -> None:
    theory = experiment.theory
    truth = np.asarray(theory.truth)
    plot_data(view, {"truth": truth, "posterior mean": posterior.mean}, out / "data.png")
    plot_corner(
        posterior.flat,
        theory.parameter_names,
        out / "posterior.png",
        truth=truth,
        crlb_cov=np.linalg.inv(np.asarray(fisher)),
        low=np.asarray(theory.low),
        high=np.asarray(theory.high),
    )
    x_lo = min(d.spec.x_min for d in experiment.datasets)
    x_hi = max(d.spec.x_max for d in experiment.datasets)
    plot_pdf_bands(theory, posterior.flat, out / "pdfs.png", truth=truth, x_range=(x_lo, x_hi))


def _summary(
    experiment: Experiment,
    data: EventData,
    crlb: dict[str, dict[str, Any]],
    mle: MLEResult,
    posterior: PosteriorResult,
    crlb_sd: np.ndarray,
) -> dict[str, Any]:
    names, truth = experiment.theory.parameter_names, experiment.theory.truth
    return {
        "case": experiment.case,
        "datasets": [{**row, "observed": n} for row, n in zip(experiment.summary(), data.counts)],
        "truth": dict(zip(names, truth)),
        "crlb": {c: {"sd": v["sd"], "correlation": v["correlation"]} for c, v in crlb.items()},
        "mle": {
            "theta": dict(zip(names, mle.theta.tolist())),
            "log_likelihood": mle.log_likelihood,
            "success": mle.success,
            "at_edge": dict(zip(names, mle.at_edge.tolist())),
        },
        "posterior": posterior.summary(),
        "posterior_sd_over_crlb": dict(zip(names, (posterior.std / crlb_sd).tolist())),
        "runtime": runtime.policy_summary(),
    }


def run_reference(
    config: ReferenceConfig,
    out: Path,
    overwrite: bool = False,
    plots: bool = True,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, object]:
    """Run the reference pipeline and write the run directory; returns the summary (also in summary.json)."""
    start = time.perf_counter()
    experiment = Experiment(config.physics)
    names, truth = experiment.theory.parameter_names, np.asarray(experiment.theory.truth)
    seed = config.data.seed
    # The checks come first: a refused run must not overwrite the directory's config.yaml or run.log.
    guard_run_dir(out, config, resume=resume, overwrite=overwrite, outputs=OUTPUTS, folders=(), free=("posterior",))
    data, reused = load_or_generate(experiment, seed, out / "data", overwrite)
    out, log, provenance = open_run_dir(out, config, "physics.reference")
    log.info("data %s: counts %s", "reused" if reused else "generated", data.counts)
    say = print if progress else (lambda *a, **k: None)
    say(f"\n== Pseudo-data: case {experiment.case}, seed {seed} ({'reused' if reused else 'written'}: {out / 'data'})")
    say(_data_table(experiment, data))
    crlb = crlb_table(config)
    say(_crlb_text(crlb, names, len(experiment.theory.flavors)))
    likelihood = ExtendedLikelihood(experiment, data)
    mle = fit_mle(likelihood, seed=config.posterior.seed)
    log.info("MLE %s (success %s)", mle.theta, mle.success)
    posterior = sample_posterior(likelihood, config.posterior, progress=progress, mle=mle)
    log.info(
        "posterior done in %.1f s, max R-hat %.4f, min ESS %.0f",
        posterior.seconds,
        posterior.rhat.max(),
        posterior.ess.min(),
    )
    crlb_sd = np.array([crlb[experiment.case]["sd"][n] for n in names])
    say(_posterior_text(experiment, mle, posterior, crlb_sd))
    view = BinnedView(experiment, data, n_bins=config.data.n_bins)
    fits = _goodness_of_fit(view, {"truth": truth, "mle": mle.theta, "posterior_mean": posterior.mean}, len(names))
    say(f"\n== Goodness of fit ({view.n_points} log-x bins, Pearson chi2)")
    say(
        format_table(
            ["at", "chi2", "ndf", "p-value"], [(k, v["chi2"], v["ndf"], v["p_value"]) for k, v in fits.items()], ".3f"
        )
    )
    np.savez(out / "posterior_samples.npz", samples=posterior.samples, names=np.array(names))
    if plots:
        _plots(experiment, view, posterior, crlb[experiment.case]["fisher"], out)
    summary = {**provenance, "seed": seed, **_summary(experiment, data, crlb, mle, posterior, crlb_sd)}
    summary["goodness_of_fit"] = fits
    summary["seconds"] = time.perf_counter() - start
    write_json(out / "summary.json", summary)
    say(f"\nwrote {out / 'summary.json'}" + (", data.png, posterior.png, pdfs.png" if plots else ""))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (:mod:`qcdgip.errors`)."""
    args = build_parser().parse_args(argv)
    out = default_out(args, "reference")

    def body() -> None:
        config = resolve_runcard(ReferenceConfig, args, shortcut_values(args, SHORTCUTS))
        runtime.configure_threads(args.threads)
        run_reference(config, out, args.overwrite, not args.no_plots, not args.quiet, args.resume)

    return run_command(body, lambda: out)


if __name__ == "__main__":
    raise SystemExit(main())
