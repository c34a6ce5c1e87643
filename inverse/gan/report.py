"""What a GAN closure reports: ``summary.json``, the targets it is judged by, the table it prints, ``report.md``.

``pull`` = (replica mean - truth) / posterior sd and ``std_ratio`` = replica sd / posterior sd. A bootstrap
estimates the MLE and its spread, not the posterior mean, so each replica is also compared with the exact MLE of
its own bootstrap weights (``bootstrap_distance``, in posterior sd). ``targets_met`` holds one verdict per bar of
``report.targets``, each key naming its threshold (``abs_pull_below_3``, ``std_ratio_in_0.5_2``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from inverse.gan.config import ClosureConfig, TargetsConfig
from inverse.gan.model import InverseGAN
from inverse.gan.posterior.mode import calibration_lines, posterior_mode_lines
from physics.binned import BinnedView
from physics.datasets import Experiment
from physics.likelihood import cramer_rao, fisher_information
from physics.mcmc import MCMCSampler
from physics.pseudodata import EventData
from qcdgip.runs import format_table
from surrogates.base import Surrogate
from surrogates.quality import surrogate_mle

__all__ = ["ClosureFit", "closure_report", "closure_summary", "closure_table", "coverage_targets", "fit_targets"]


@dataclass
class ClosureFit:
    """What a closure measured: the inputs of its summary.

    Attributes:
        config: the runcard.
        experiment: its experiment.
        data: the fitted events.
        reference: ``mle``, ``posterior`` draws and (optionally) ``bootstrap_mles`` (:mod:`inverse.gan.reference`).
        model: the trained GAN, on the CPU in float64.
        step_seconds: wall time of each step trained in this process.
        seconds: ``reference``, ``fit`` and ``fit_cpu`` times.
    """

    config: ClosureConfig
    experiment: Experiment
    data: EventData
    reference: dict[str, Any]
    model: InverseGAN
    step_seconds: list[float]
    seconds: dict[str, float]
    chains: np.ndarray | None = None


def _num(value: float) -> str:
    return f"{value:g}"


def fit_targets(targets: TargetsConfig, pull: np.ndarray, std_ratio: np.ndarray) -> dict[str, bool]:
    """The verdicts on the pulls and the widths (keys name the thresholds)."""
    lo, hi = targets.std_ratio_range
    tlo, thi = targets.std_ratio_tight
    return {
        f"abs_pull_below_{_num(targets.abs_pull_max)}": bool(np.all(np.abs(pull) < targets.abs_pull_max)),
        f"std_ratio_in_{_num(lo)}_{_num(hi)}": bool(np.all((std_ratio >= lo) & (std_ratio <= hi))),
        f"std_ratio_in_{_num(tlo)}_{_num(thi)}": bool(np.all((std_ratio >= tlo) & (std_ratio <= thi))),
    }


def coverage_targets(targets: TargetsConfig) -> dict[str, tuple[float, float]]:
    """The acceptance band of the pooled coverage per interval level."""
    return {"68": targets.coverage_68, "95": targets.coverage_95}


def _bootstrap(fit: ClosureFit, est: np.ndarray, post_sd: np.ndarray) -> dict[str, Any]:
    boot = fit.reference["bootstrap_mles"]
    dist = np.abs(est - boot) / post_sd
    target = fit.config.report.targets.bootstrap_distance_median_max
    theory = fit.experiment.theory
    low, high = np.asarray(theory.low), np.asarray(theory.high)
    # An MLE on the box edge is where a bootstrap of the MLE stops describing the posterior (the box cuts it).
    at_edge = ((boot - low < 1e-3 * (high - low)) | (high - boot < 1e-3 * (high - low))).mean(0)
    return {
        "bootstrap_mles": boot,
        "bootstrap_mles_at_edge": at_edge,
        "bootstrap_distance": {
            "median": float(np.median(dist)),
            "max": float(dist.max()),
            "per_parameter_median": np.median(dist, axis=0),
        },
        "bootstrap_std_ratio": boot.std(0, ddof=1) / post_sd if len(est) > 1 else None,
        "_target": (f"bootstrap_distance_median_le_{_num(target)}", bool(np.median(dist) <= target)),
    }


def _sampler_facts(fit: ClosureFit, est_mean: np.ndarray, post_sd: np.ndarray) -> dict[str, Any]:
    """The surrogate's own MLE, the detector, the MCMC sampler's last draw."""
    out: dict[str, Any] = {}
    sampler, mle = fit.model.sampler, fit.reference["mle"]
    if isinstance(sampler, Surrogate) and sampler.has_log_prob:
        s_mle = surrogate_mle(sampler, fit.experiment, fit.data, mle)
        out["surrogate"] = {
            "mle": s_mle,
            "mle_offset_vs_exact": (s_mle - mle) / post_sd,
            "replica_mean_vs_surrogate_mle": (est_mean - s_mle) / post_sd,
        }
    out["detector"] = None if fit.experiment.detector is None else fit.experiment.detector.summary()
    mcmc = getattr(sampler, "inner", sampler)
    if isinstance(mcmc, MCMCSampler) and mcmc.last_diagnostics:
        diag = mcmc.last_diagnostics
        out["mcmc_last_draw"] = {
            "acceptance_mean": float(diag["acceptance"].mean()),
            "step_size_mean": float(diag["step_size"].mean()),
            **({"ess_per_state": float((diag["ess"] / mcmc.last_states).mean())} if "ess" in diag else {}),
        }
    return out


def closure_summary(fit: ClosureFit, provenance: dict[str, Any]) -> dict[str, Any]:
    """``summary.json`` of a closure (without the coverage study and the total wall time, added by the run)."""
    experiment, config = fit.experiment, fit.config
    names, truth = experiment.theory.parameter_names, np.asarray(experiment.theory.truth)
    post = fit.reference["posterior"]
    post_mean, post_sd = post.mean(0), post.std(0, ddof=1)
    est = fit.model.estimates().numpy()
    est_mean, est_sd = est.mean(0), est.std(0, ddof=1) if len(est) > 1 else np.zeros(len(names))
    pull, std_ratio = (est_mean - truth) / post_sd, est_sd / post_sd
    info = fisher_information(experiment, torch.tensor(post_mean[None], dtype=torch.float64))
    steps = int(fit.model.step_count)
    summary: dict[str, Any] = {
        **provenance,
        "params": names,
        "truth": truth,
        "estimate_mean": est_mean,
        "estimate_std": est_sd,
        "posterior_mean": post_mean,
        "posterior_std": post_sd,
        "pull": pull,
        "std_ratio": std_ratio,
        "replicas": fit.model.n_replicas,
        "steps": steps,
        "sampler": config.gan.sampler.model_dump(),
        "case": experiment.case,
        "seed": config.data.seed,
        "counts": fit.data.counts,
        "mle": fit.reference["mle"],
        "mle_offset": (est_mean - fit.reference["mle"]) / post_sd,
        "cramer_rao_std_at_posterior_mean": cramer_rao(info)[0][0].numpy(),
        "replica_estimates": est,
        "targets_met": fit_targets(config.report.targets, pull, std_ratio),
        "timing_s": {
            **fit.seconds,
            "median_step": float(np.median(fit.step_seconds)) if fit.step_seconds else None,
        },
    }
    if "bootstrap_mles" in fit.reference:
        boot = _bootstrap(fit, est, post_sd)
        key, met = boot.pop("_target")
        summary.update(boot)
        summary["targets_met"][key] = met
    if len(fit.step_seconds) == steps:  # the whole fit ran in this process (not a resumed one)
        limit = config.report.targets.fit_cpu_minutes_max
        summary["targets_met"][f"fit_under_{_num(limit)}_cpu_minutes"] = bool(fit.seconds["fit_cpu"] < 60 * limit)
    summary.update(_sampler_facts(fit, est_mean, post_sd))
    view = BinnedView(experiment, fit.data, n_bins=config.data.n_bins)
    chi2 = float(view.chi2(torch.tensor(est_mean[None], dtype=torch.float64), kind="theory")[0])
    summary["chi2_at_estimate"] = {"chi2": chi2, "n_points": view.n_points}
    return summary


def closure_table(s: dict[str, Any]) -> str:
    """The per-parameter table a closure prints."""
    rows = []
    for i, n in enumerate(s["params"]):
        row = [n, s["truth"][i], s["posterior_mean"][i], s["posterior_std"][i], s["estimate_mean"][i]]
        row += [s["estimate_std"][i], s["pull"][i], s["std_ratio"][i]]
        if "bootstrap_distance" in s:
            row.append(s["bootstrap_distance"]["per_parameter_median"][i])
        rows.append(row)
    headers = ["param", "truth", "post. mean", "post. sd", "GAN mean", "GAN sd", "pull", "std_ratio"]
    if "bootstrap_distance" in s:
        headers.append("|GAN-bootMLE|/sd")
    return format_table(headers, rows, ".3f")


def _sampler_words(s: dict[str, Any]) -> str:
    kind = s["sampler"]["kind"]
    words = {
        "exact": "the exact inverse-CDF sampler",
        "mcmc": "the MCMC sampler (random-walk Metropolis, score-function gradients)",
    }.get(kind, f"the {kind} surrogate `{s['sampler']['path']}`")
    if s.get("detector") is None:
        return words + "."
    d = s["detector"]
    return (
        f"{words}, passed through the detector (resolution {d['resolution']:.3g} in log x, acceptance "
        f"{d['acceptance']['kind']}); the posterior is the folded likelihood's."
    )


def _findings(s: dict[str, Any]) -> list[str]:
    met = s["targets_met"]
    lines = [
        "- targets: " + ", ".join(f"{k} **{'yes' if v else 'no'}**" for k, v in met.items()),
        f"- replica mean - MLE, in posterior sd: {np.round(np.asarray(s['mle_offset']), 3).tolist()}",
        f"- binned Pearson chi2 at the replica mean: {s['chi2_at_estimate']['chi2']:.1f} "
        f"for {s['chi2_at_estimate']['n_points']} bins",
    ]
    if "bootstrap_distance" in s:
        b = s["bootstrap_distance"]
        lines.append(f"- replica vs its bootstrap MLE: median {b['median']:.3f} sd, max {b['max']:.3f} sd")
        if s.get("bootstrap_std_ratio") is not None:
            ratio = np.round(np.asarray(s["bootstrap_std_ratio"], dtype=float), 2).tolist()
            lines.append(f"- exact bootstrap MLEs' sd / posterior sd (what the replicas' spread should be): {ratio}")
        lines += _edge_lines(s)
    if "surrogate" in s:
        off = np.round(np.asarray(s["surrogate"]["mle_offset_vs_exact"], dtype=float), 3).tolist()
        lines.append(
            f"- surrogate's own MLE (its density for the shapes) - exact MLE, in posterior sd: {off} "
            "(the bias inherited from the surrogate)"
        )
    t = s["timing_s"]
    lines.append(f"- GAN fit: {t['fit']:.0f} s wall, {t['fit_cpu']:.0f} CPU-s")
    return lines


def _edge_lines(s: dict[str, Any]) -> list[str]:
    """A finding when the bootstrap target is missed and exact bootstrap MLEs sit on the prior box's edge."""
    edge = np.asarray(s.get("bootstrap_mles_at_edge", []), dtype=float)
    missed = [k for k, v in s["targets_met"].items() if k.startswith("bootstrap_distance") and not v]
    if not missed or not np.any(edge >= 0.05):
        return []
    where = ", ".join(f"{n} {100 * f:.0f} %" for n, f in zip(s["params"], edge) if f >= 0.05)
    return [
        f"- the exact bootstrap MLEs sit on the prior box's edge ({where} of the replicas): there the box cuts the "
        "likelihood, the replicas cannot reach those MLEs by gradient steps and a bootstrap of the MLE does not "
        "describe the posterior; `gan.posterior.mode: langevin` gives posterior draws instead"
    ]


def _coverage_lines(c: dict[str, Any]) -> list[str]:
    lines = ["", f"## Coverage over {c['n_sets']} pseudo-data sets at the same truth", ""]
    lines += ["Fraction of data sets whose truth lies in the replicas' central interval; binomial sd in brackets.", ""]
    for level, v in c["levels"].items():
        per = ", ".join(f"{n} {f:.2f}" for n, f in zip(c["params"], v["per_parameter"]))
        lines.append(
            f"- {level} %: pooled **{v['pooled']:.3f}** (target {v['target'][0]}-{v['target'][1]}); "
            f"per parameter ({v['per_parameter_sd']:.2f}): {per}"
        )
    lines.append("- `coverage/coverage.png`, per-data-set rows in `coverage/results.jsonl`")
    return lines


_PLOTS = [
    "",
    "## Plots",
    "- `pdfs.png`: x u(x), x d(x): the replicas' 68 % band against the posterior's, and the truth.",
    "- `data.png`: binned events of each dataset with the fitted and true expectations, pulls below.",
    "- `replicas.png`: each parameter's replica histogram over the MCMC posterior, bootstrap MLEs as ticks.",
    "- `training.png`: distance to the MLE in posterior sd during training, the losses, and each replica's "
    "distance to its bootstrap MLE (the learning curve).",
    "",
    "![pdfs](pdfs.png)",
    "![replicas](replicas.png)",
    "![training](training.png)",
    "![data](data.png)",
]


def closure_report(s: dict[str, Any], plots: bool) -> str:
    """``report.md`` of a closure."""
    t = s["timing_s"]
    lines = [
        f"# GAN closure test: case {s['case']}, data seed {s['seed']}",
        "",
        f"{s['replicas']} bootstrap replicas trained together for {s['steps']} steps; wall time {s['wall_s']:.0f} s "
        f"(reference {t['reference']:.0f} s, GAN fit {t['fit']:.0f} s). Event counts per dataset: {s['counts']}. "
        f"Generated events from {_sampler_words(s)}",
        "",
        "`pull` = (replica mean - truth) / posterior sd; `std_ratio` = replica sd / posterior sd. "
        "The last column compares each replica with the exact MLE of its own bootstrap weights "
        "(median over replicas, posterior sd units): a bootstrap reproduces the MLE and its spread, "
        "which can sit a fraction of a sd from the posterior mean.",
        "",
        "```",
        closure_table(s),
        "```",
        "",
        *_findings(s),
    ]
    if "coverage" in s:
        lines += _coverage_lines(s["coverage"])
    if "posterior_mode" in s:
        lines += posterior_mode_lines(s["posterior_mode"], s["params"])
    if "calibration" in s:
        lines += calibration_lines(s["calibration"])
    if plots:
        lines += _PLOTS
    return "\n".join(lines) + "\n"
