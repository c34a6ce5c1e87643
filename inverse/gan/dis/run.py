"""The DIS closure: pseudo-data, the exact reference, the GAN fit on (x, Q^2) events, report, LHAPDF sets.

Steps: generate (or reuse, ``data.npz``) Poisson counts and exact events per Q^2 window at the truth; the
reference: the MLE, the Cramér–Rao bound at the MLE and the exact MLE of every replica's Poisson-bootstrap
weights (the same weights the GAN's replica r fits); train the GAN's R replicas with the exact DIS sampler;
then ``summary.json``, ``report.md``, the plots of :mod:`inverse.gan.dis.plots` and, with ``report.lhapdf``, the
replicas and the truth as LHAPDF sets under ``lhapdf/``.

Judged against: ``pull`` = (replica mean - truth) / Cramér–Rao sd; ``std_ratio`` = replica sd / bootstrap-MLE
sd; ``bootstrap_distance`` = |replica - its bootstrap MLE| / bootstrap-MLE sd.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inverse.gan.dis.config import DISClosureConfig
from inverse.gan.model import InverseGAN
from inverse.gan.posterior.mode import posterior_mode_lines, run_posterior_mode
from inverse.gan.posterior.plots import plot_posterior_mode
from inverse.gan.training import fit_gan
from physics.dis.experiment import DISExperiment
from physics.dis.lhapdf import write_lhapdf_set
from physics.dis.likelihood import DISLikelihood, cramer_rao, fisher_information, fit_bootstrap_mles, fit_mle
from physics.dis.posterior import sample_dis_posterior
from physics.dis.pseudodata import generate_dis_events
from physics.pseudodata import EventData, poisson_replica_weights
from qcdgip import runtime
from qcdgip.runs import format_table, guard_run_dir, open_run_dir, write_json

__all__ = ["OUTPUTS", "run_dis_closure"]

OUTPUTS = (
    "summary.json",
    "report.md",
    "data.npz",
    "reference.npz",
    "pdfs.png",
    "f2.png",
    "replicas.png",
    "training.png",
)


def load_or_generate_dis(experiment: DISExperiment, seed: int, path: Path) -> tuple[EventData, bool]:
    """The pseudo-data of ``path`` when it holds this experiment's windows, else freshly generated and saved."""
    if path.is_file():
        with np.load(path) as f:
            names = [str(n) for n in f["names"]]
            if names != experiment.names or int(f["seed"]) != seed:
                raise ValueError(f"{path}: holds data of windows {names} and seed {int(f['seed'])}, not this runcard's")
            events = [f[f"events_{j}"] for j in range(len(names))]
        return EventData(names, events, {"seed": seed}), True
    events = [e.numpy() for e in generate_dis_events(experiment, seed)]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, names=np.array(experiment.names), seed=seed, **{f"events_{j}": e for j, e in enumerate(events)})
    return EventData(list(experiment.names), events, {"seed": seed}), False


def dis_reference(
    config: DISClosureConfig, experiment: DISExperiment, data: EventData, out: Path, progress: bool
) -> dict[str, Any]:
    """MLE, Cramér–Rao sd at the MLE, the replicas' exact bootstrap MLEs and the MCMC posterior (reference.npz)."""
    path = out / "reference.npz"
    t, r = config.gan.training, config.report
    if path.is_file():
        with np.load(path) as f:
            cached = {k: f[k] for k in f.files}
        if cached["bootstrap_mles"].shape[0] in (0, t.replicas) and ("posterior" in cached or not r.posterior):
            return cached
    start = time.perf_counter()
    events = [torch.as_tensor(e) for e in data.events]
    likelihood = DISLikelihood(experiment, events)
    mle = fit_mle(likelihood)
    _, crlb_sd = cramer_rao(fisher_information(experiment, torch.tensor(mle.theta[None])))
    ref: dict[str, Any] = {"mle": mle.theta, "crlb_sd": crlb_sd.numpy()}
    ref["bootstrap_mles"] = np.zeros((0, len(mle.theta)))
    if r.bootstrap_mles:
        weights = poisson_replica_weights(data.counts, t.replicas, seed=t.seed)
        ref["bootstrap_mles"] = fit_bootstrap_mles(likelihood, weights, mle.theta, progress=progress)
    if r.posterior:
        post = sample_dis_posterior(likelihood, config.posterior, mle=mle, progress=progress)
        ref |= {"posterior": post.flat, "posterior_rhat": post.rhat, "posterior_ess": post.ess,
                "posterior_seconds": np.array(post.seconds)}  # fmt: skip
    ref["seconds"] = np.array(time.perf_counter() - start)
    np.savez(path, **ref)
    return ref


def _posterior_block(ref: dict, mean: np.ndarray, sd: np.ndarray) -> dict[str, Any]:
    post = ref["posterior"]
    p_mean, p_sd = post.mean(0), post.std(0, ddof=1)
    return {"mean": p_mean, "sd": p_sd, "max_rhat": float(ref["posterior_rhat"].max()),
            "min_ess": float(ref["posterior_ess"].min()), "seconds": float(ref["posterior_seconds"]),
            "sd_over_crlb": p_sd / ref["crlb_sd"], "gan_sd_over_posterior_sd": sd / p_sd,
            "gan_offset": (mean - p_mean) / p_sd}  # fmt: skip


def _summary(config: DISClosureConfig, experiment: DISExperiment, data: EventData, ref: dict, est: np.ndarray) -> dict:
    r = config.report
    truth = np.asarray(experiment.config.truth)
    mean, sd = est.mean(0), est.std(0, ddof=1)
    pull = (mean - truth) / ref["crlb_sd"]
    out: dict[str, Any] = {
        "case": experiment.case, "parameters": experiment.parameter_names, "truth": truth, "counts": data.counts,
        "datasets": experiment.summary(), "mle": ref["mle"], "crlb_sd": ref["crlb_sd"], "estimate_mean": mean,
        "estimate_std": sd, "pull": pull, "replicas": len(est), "estimates": est,
    }  # fmt: skip
    if "posterior" in ref:
        out["posterior"] = _posterior_block(ref, mean, sd)
    targets = {f"abs_pull_below_{r.abs_pull_max:g}": bool(np.all(np.abs(pull) < r.abs_pull_max))}
    boot = ref["bootstrap_mles"]
    if len(boot) == len(est) and len(est) > 1:
        boot_sd = boot.std(0, ddof=1)
        dist = np.abs(est - boot) / boot_sd
        lo, hi = r.bootstrap_std_ratio_range
        out["bootstrap_sd"], out["std_ratio"] = boot_sd, sd / boot_sd
        out["bootstrap_distance"] = {"median": float(np.median(dist)), "max": float(dist.max()),
                                     "per_parameter_median": np.median(dist, axis=0)}  # fmt: skip
        targets[f"bootstrap_distance_median_le_{r.bootstrap_distance_median_max:g}"] = bool(
            np.median(dist) <= r.bootstrap_distance_median_max
        )
        targets[f"std_ratio_in_{lo:g}_{hi:g}"] = bool(np.all((sd / boot_sd >= lo) & (sd / boot_sd <= hi)))
    out["targets_met"] = targets
    return out


def _report(summary: dict[str, Any], plots: bool) -> str:
    headers = ["param", "truth", "MLE", "CR sd", "GAN mean", "GAN sd", "pull"] + (
        ["boot sd", "sd ratio", "dist. median"] if "std_ratio" in summary else []
    )
    rows = []
    for i, name in enumerate(summary["parameters"]):
        row = [name, summary["truth"][i], summary["mle"][i], summary["crlb_sd"][i], summary["estimate_mean"][i],
               summary["estimate_std"][i], summary["pull"][i]]  # fmt: skip
        if "std_ratio" in summary:
            row += [summary["bootstrap_sd"][i], summary["std_ratio"][i],
                    summary["bootstrap_distance"]["per_parameter_median"][i]]  # fmt: skip
        rows.append(row)
    verdicts = ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in summary["targets_met"].items())
    lines = [f"# DIS closure (case {summary['case']}, {summary['replicas']} replicas)", "",
             f"Events per Q^2 window: {summary['counts']}", "", format_table(headers, rows), "",
             f"Targets: {verdicts}"]  # fmt: skip
    if "posterior_mode" in summary:
        lines += posterior_mode_lines(summary["posterior_mode"], summary["parameters"])
    if plots:
        lines += ["", "![PDFs](pdfs.png)", "", "![F2](f2.png)", "", "![replicas](replicas.png)", "",
                  "![training](training.png)"]  # fmt: skip
    return "\n".join(lines) + "\n"


def run_dis_closure(
    config: DISClosureConfig, out: Path, resume: bool = False, overwrite: bool = False, plots: bool = True,
    progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Run the DIS closure and write the run directory; returns the summary (also in summary.json)."""
    start = time.perf_counter()
    out = Path(out)
    free = ("report", "gan.posterior", "gan.training.threads", "gan.training.progress")
    langevin = config.gan.posterior.mode == "langevin"
    if langevin and not config.report.posterior:
        raise ValueError(
            "gan.posterior.mode: langevin is judged against the MCMC posterior: set report.posterior: true"
        )
    guard_run_dir(out, config, resume=resume, overwrite=overwrite, outputs=OUTPUTS, free=free,
                  folders=("checkpoints", "lightning_logs", "lhapdf", "posterior_mode"))  # fmt: skip
    experiment = DISExperiment(config.physics)
    out, log, provenance = open_run_dir(out, config, "inverse.gan.dis")
    data, reused = load_or_generate_dis(experiment, config.data.seed, out / "data.npz")
    log.info("data %s: counts %s", "reused" if reused else "generated", data.counts)
    if progress:
        print(f"== DIS closure: case {experiment.case}, seed {config.data.seed}, counts {data.counts}")
    ref = dis_reference(config, experiment, data, out, progress)
    model = InverseGAN(config.gan, experiment, data)  # gan.sampler: exact (default) or mcmc
    t_fit, cpu_fit = time.perf_counter(), time.process_time()
    module = fit_gan(model, out, resume=resume, progress=progress and config.gan.training.progress)
    seconds = {"reference": float(ref["seconds"]), "fit": time.perf_counter() - t_fit,
               "fit_cpu": time.process_time() - cpu_fit}  # fmt: skip
    fitted = module.model.cpu().double()
    est = fitted.estimates().numpy()
    summary = {**_summary(config, experiment, data, ref, est), **provenance}
    summary["median_step_s"] = float(np.median(module.step_seconds)) if module.step_seconds else None
    limit = config.report.fit_cpu_minutes_max
    summary["targets_met"][f"fit_under_{limit:g}_cpu_minutes"] = bool(seconds["fit_cpu"] < 60 * limit)
    if langevin:
        summary["posterior_mode"], chains = run_posterior_mode(
            fitted, experiment, data, ref["posterior"], out, seconds["fit_cpu"], progress
        )
    if config.report.lhapdf:
        names = experiment.parameter_names
        write_lhapdf_set(out / "lhapdf", "qcdgip_dis_replicas", config.physics, experiment.operator,
                         torch.as_tensor(est), f"GAN replicas of a DIS closure ({names})")  # fmt: skip
        write_lhapdf_set(out / "lhapdf", "qcdgip_dis_truth", config.physics, experiment.operator,
                         experiment.truth_tensor(), "the truth of a DIS closure")  # fmt: skip
    if plots:
        from inverse.gan.dis.plots import plot_dis_closure

        plot_dis_closure(experiment, data, fitted, ref, out)
        if langevin:
            plot_posterior_mode(chains, ref["posterior"], est, experiment.parameter_names, out / "posterior_mode.png")
    summary["runtime"] = runtime.policy_summary()
    summary["timing_s"] = {**seconds, "total": time.perf_counter() - start}
    write_json(out / "summary.json", summary)
    (out / "report.md").write_text(_report(summary, plots))
    log.info("targets %s", summary["targets_met"])
    if progress:
        print(_report(summary, False))
    return summary
