"""The closure test of the GAN inverse solver: data, reference, fit, report (``python -m inverse.closure``).

Steps: generate (or reuse) pseudo-data at the configured truth and case; the reference (MLE, MCMC posterior and
the exact MLE of every bootstrap replica, :mod:`inverse.gan.reference`); train the GAN's R replicas (Lightning,
checkpoints every ``training.checkpoint_every`` steps); then write ``summary.json``, ``report.md``
(:mod:`inverse.gan.report`), plots (``pdfs.png``, ``data.png``, ``replicas.png``, ``training.png``) and
``run.log``. With ``report.coverage`` K more pseudo-data sets at the same truth are fitted and the fraction whose
truth lies in the replicas' central 68 % / 95 % intervals is reported (:mod:`inverse.gan.coverage`; resumable, may
be added to a finished run with ``--resume``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from inverse.gan.config import ClosureConfig
from inverse.gan.coverage import run_coverage
from inverse.gan.model import InverseGAN
from inverse.gan.plots import plot_replica_histograms, plot_training
from inverse.gan.posterior.calibration import run_calibration
from inverse.gan.posterior.mode import run_posterior_mode
from inverse.gan.posterior.plots import plot_posterior_mode
from inverse.gan.reference import closure_reference
from inverse.gan.report import ClosureFit, closure_report, closure_summary, closure_table, coverage_targets
from inverse.gan.training import fit_gan
from physics.binned import BinnedView
from physics.datasets import Experiment
from physics.plots import plot_data, plot_pdf_bands
from physics.pseudodata import generate_pseudodata, load_or_generate
from qcdgip import runtime
from qcdgip.runs import guard_run_dir, open_run_dir, write_json
from qcdgip.training import launch_rank

__all__ = ["OUTPUTS", "run_closure"]

OUTPUTS = ("summary.json", "report.md", "pdfs.png", "data.png", "replicas.png", "training.png", "reference.npz")


def _fit(config: ClosureConfig, experiment: Experiment, data: Any, out: Path, resume: bool, progress: bool) -> Any:
    """Train the GAN; returns (module, seconds)."""
    model = InverseGAN(config.gan, experiment, data)
    t_fit = time.perf_counter()
    module = fit_gan(model, out, resume=resume, progress=progress and config.gan.training.progress)
    # CPU of the whole fit: a resumed run adds the earlier runs' time kept in the checkpoint.
    return module, {"fit": time.perf_counter() - t_fit, "fit_cpu": module.cpu_seconds}


def _plots(fit: ClosureFit, out: Path) -> None:
    experiment, model = fit.experiment, fit.model
    theory = experiment.theory
    names, truth = theory.parameter_names, np.asarray(theory.truth)
    post, ref = fit.reference["posterior"], fit.reference
    est = model.estimates().numpy()
    steps = int(model.step_count)
    x_lo = min(d.spec.x_min for d in experiment.datasets)
    x_hi = max(d.spec.x_max for d in experiment.datasets)
    plot_pdf_bands(
        theory, {"MCMC posterior": post, "GAN replicas": est}, out / "pdfs.png", truth=truth, x_range=(x_lo, x_hi)
    )
    view = BinnedView(experiment, fit.data, n_bins=fit.config.data.n_bins)
    plot_data(view, {"GAN replica mean": est.mean(0), "truth": truth}, out / "data.png")
    plot_replica_histograms(est, post, names, out / "replicas.png", truth, ref.get("bootstrap_mles"))
    plot_training(
        model.theta_history[:steps].numpy(),
        model.loss_history[:steps].numpy(),
        names,
        out / "training.png",
        ref["mle"],
        post.std(0, ddof=1),
        targets=ref.get("bootstrap_mles"),
        polyak=fit.config.gan.training.polyak,
    )
    if fit.chains is not None:
        plot_posterior_mode(fit.chains, post, est, names, out / "posterior_mode.png")


def _train_share(config: ClosureConfig, out: Path, resume: bool) -> None:
    """A data-parallel rank other than 0: train this process's share of every step, nothing else."""
    experiment = Experiment(config.physics)
    model = InverseGAN(config.gan, experiment, generate_pseudodata(experiment, seed=config.data.seed))
    fit_gan(model, out, resume=resume, progress=False)


def _add_coverage(summary: dict[str, Any], config: ClosureConfig, experiment: Experiment, out: Path, progress: bool):
    targets = coverage_targets(config.report.targets)
    summary["coverage"] = run_coverage(
        config, experiment, out / "coverage", config.report.coverage, progress, targets=targets
    )
    for level, c in summary["coverage"]["levels"].items():
        summary["targets_met"][f"coverage_{level}_in_target"] = c["pooled_in_target"]


def _finish(summary: dict[str, Any], out: Path, start: float, plots: bool, progress: bool, log: Any) -> None:
    """Complete the summary (thread policy, wall time) and write summary.json and report.md."""
    summary["runtime"] = runtime.policy_summary()
    summary["wall_s"] = time.perf_counter() - start
    write_json(out / "summary.json", summary)
    (out / "report.md").write_text(closure_report(summary, plots))
    pulls, ratios = summary["pull"].round(2), summary["std_ratio"].round(2)
    log.info("done in %.1f s: pulls %s, std ratios %s", summary["wall_s"], pulls, ratios)
    if progress:
        print(closure_table(summary))
        print(f"\nwrote {out / 'summary.json'}, {out / 'report.md'}" + (" and plots" if plots else ""))


def run_closure(
    config: ClosureConfig,
    out: Path,
    resume: bool = False,
    overwrite: bool = False,
    plots: bool = True,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Run the closure test and write the run directory; returns the summary (also in summary.json).

    On a data-parallel rank other than 0 it only trains its share and returns None.

    Raises:
        ValueError: bad configuration or a run directory holding another run.
        NonFiniteLossError: the GAN diverged (the last checkpoint is kept).
    """
    start = time.perf_counter()
    out = Path(out)
    t = config.gan.training
    if launch_rank(t.devices, t.num_nodes) > 0:
        _train_share(config, out, resume)
        return None
    experiment = Experiment(config.physics)
    # The report settings and the thread count only change what is computed after training, or how fast.
    free = ("report", "gan.posterior", "gan.training.threads", "gan.training.progress")
    guard_run_dir(
        out,
        config,
        resume=resume,
        overwrite=overwrite,
        outputs=OUTPUTS,
        free=free,
        folders=("checkpoints", "lightning_logs", "coverage", "posterior_mode", "calibration"),
    )
    t_data = time.perf_counter()
    data, reused = load_or_generate(experiment, config.data.seed, out / "data", overwrite)
    data_s = time.perf_counter() - t_data
    out, log, provenance = open_run_dir(out, config, "inverse.closure")
    log.info("data %s: counts %s", "reused" if reused else "generated", data.counts)
    if progress:
        truth = list(experiment.theory.truth)
        print(f"== closure: case {experiment.case}, seed {config.data.seed}, counts {data.counts}, truth {truth}")
    t_ref = time.perf_counter()
    ref = closure_reference(config, experiment, data, out, progress, log)
    seconds = {"data": data_s, "reference": time.perf_counter() - t_ref, "reference_parts": ref.pop("seconds")}
    module, fit_seconds = _fit(config, experiment, data, out, resume, progress)
    fit = ClosureFit(
        config, experiment, data, ref, module.model.cpu().double(), module.step_seconds, {**seconds, **fit_seconds}
    )
    if config.gan.posterior.mode == "langevin":
        block, fit.chains = run_posterior_mode(
            fit.model, experiment, data, ref["posterior"], out, fit_seconds["fit_cpu"], progress
        )
    t_report = time.perf_counter()
    summary = closure_summary(fit, provenance)
    if fit.chains is not None:
        summary["posterior_mode"] = block
    if config.report.coverage:
        _add_coverage(summary, config, experiment, out, progress)
    if config.report.calibration:
        summary["calibration"] = run_calibration(config, out / "calibration", config.report.calibration, progress)
    if plots:
        _plots(fit, out)
    summary["timing_s"]["report"] = time.perf_counter() - t_report
    _finish(summary, out, start, plots, progress, log)
    return summary
