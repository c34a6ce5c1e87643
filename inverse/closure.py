"""Command line: closure test of the GAN inverse solver against the exact MCMC posterior (the suite's main job).

Usage::

    python -m inverse.closure --config configs/closure_gan.yaml --out runs/closure
    python -m inverse.closure --config configs/closure_gan.yaml --truth 1.5,-0.3,2.5,0.8,-0.6,3 --out runs/t2
    python -m inverse.closure --config configs/closure_gan.yaml --out runs/closure --resume
    python -m inverse.closure --config configs/closure_gan.yaml --out runs/closure --resume --coverage 50
    python -m inverse.closure --sampler flow:runs/surrogate-flow/model.pt --out runs/closure-flow
    srun -n 4 python -m inverse.closure --config C --out D --devices 4   # data-parallel (slurm/train.sh)

Steps: generate (or reuse) pseudo-data at the configured truth and case; fit the maximum-likelihood estimate and
sample the reference posterior by MCMC; fit the exact MLE of every bootstrap replica; train the GAN's R replicas
(Lightning, checkpoints every ``training.checkpoint_every`` steps); then write ``summary.json``, ``report.md``,
plots (``pdfs.png``, ``data.png``, ``replicas.png``, ``training.png``) and ``run.log``. With ``--coverage K``
(or ``report.coverage``), K more pseudo-data sets at the same truth are fitted and the fraction whose truth lies in
the replicas' central 68 % / 95 % intervals is reported (``inverse.coverage``; resumable, may be added to a
finished run with ``--resume``).

``pull`` = (replica mean - truth) / posterior sd and ``std_ratio`` = replica sd / posterior sd. A bootstrap
estimates the MLE and its spread, not the posterior mean, so each replica is also compared with the exact MLE
of its own bootstrap weights (``bootstrap_distance``, in posterior sd; DESIGN.md section 9).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inverse.config import ClosureConfig
from inverse.coverage import run_coverage
from inverse.gan import InverseGAN
from inverse.plots import plot_replica_histograms, plot_training
from inverse.training import NonFiniteLossError, fit_gan, launch_rank
from physics.binned import BinnedView
from physics.config import load_yaml, parse_config
from physics.datasets import Experiment
from physics.likelihood import ExtendedLikelihood, cramer_rao, fisher_information, fit_bootstrap_mles, fit_mle
from physics.mcmc import MCMCSampler
from physics.plots import plot_data, plot_pdf_bands
from physics.posterior import sample_posterior
from physics.pseudodata import EventData, generate_pseudodata, poisson_replica_weights
from physics.reference import load_or_generate
from physics.runs import format_table, open_run_dir, to_jsonable, write_json
from surrogates.base import Surrogate
from surrogates.quality import surrogate_mle

__all__ = ["build_parser", "closure_reference", "main", "resolve_config", "run_closure"]

_OUTPUTS = ("summary.json", "report.md", "pdfs.png", "data.png", "replicas.png", "training.png", "reference.npz")


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m inverse.closure", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="YAML runcard (default: built-in defaults)")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--case", help="event-count case (A, B, C, ...)")
    p.add_argument("--seed", type=int, help="pseudo-data seed")
    p.add_argument("--truth", help="comma-separated true parameters (inside the prior box)")
    p.add_argument("--replicas", type=int, help="number of replicas R")
    p.add_argument("--steps", type=int, help="training steps")
    p.add_argument("--devices", type=int, help="data-parallel processes per node (training.devices)")
    p.add_argument("--num-nodes", type=int, help="nodes of the data-parallel training (training.num_nodes)")
    p.add_argument(
        "--sampler",
        metavar="KIND[:PATH]",
        help="event sampler: exact, mcmc, or flow|gan|vae:PATH to a surrogate model.pt (overrides gan.sampler)",
    )
    p.add_argument(
        "--detector",
        choices=["on", "off"],
        help="on: events pass the detector (the runcard's detector block or its defaults); off: a perfect detector",
    )
    p.add_argument(
        "--coverage", type=int, metavar="K", help="also refit K pseudo-data sets at the truth: interval coverage"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over in a run directory that holds a run")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def resolve_config(args: argparse.Namespace) -> ClosureConfig:
    """The runcard with command-line overrides applied, validated."""
    raw: dict[str, Any] = load_yaml(args.config) if args.config else {}
    source = str(args.config) if args.config else "<defaults>"
    config = parse_config(ClosureConfig, raw, source)
    data = config.model_dump()
    if args.case is not None:
        data["physics"]["case"] = args.case
    if args.seed is not None:
        data["data"]["seed"] = args.seed
    if args.replicas is not None:
        data["gan"]["training"]["replicas"] = args.replicas
    if args.steps is not None:
        data["gan"]["training"]["steps"] = args.steps
    if args.devices is not None:
        data["gan"]["training"]["devices"] = args.devices
    if args.num_nodes is not None:
        data["gan"]["training"]["num_nodes"] = args.num_nodes
    if args.coverage is not None:
        data["report"]["coverage"] = args.coverage
    if args.sampler is not None:
        kind, _, path = args.sampler.partition(":")
        data["gan"]["sampler"] = {**data["gan"]["sampler"], "kind": kind, "path": path or None}
    if args.detector == "off":
        data["physics"]["detector"] = None
    elif args.detector == "on" and data["physics"].get("detector") is None:
        data["physics"]["detector"] = {}
    if args.truth is not None:
        try:
            values = [float(v) for v in args.truth.split(",")]
        except ValueError:
            raise ValueError(f"--truth: not a comma-separated list of numbers: {args.truth!r}") from None
        params = data["physics"]["parameters"]
        if len(values) != len(params):
            raise ValueError(f"--truth: need {len(params)} values ({[p['name'] for p in params]}), got {len(values)}")
        for p, v in zip(params, values):
            p["truth"] = v
    return parse_config(ClosureConfig, data, "command line") if data != config.model_dump() else config


def _prepare_directory(out: Path, config: ClosureConfig, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: an existing run is resumed (same config) or overwritten, never silently mixed."""
    saved = out / "config.yaml"
    started = (out / "checkpoints").exists() or (out / "summary.json").exists()
    if resume:
        if saved.is_file():
            old = parse_config(ClosureConfig, load_yaml(saved), str(saved))
            a, b = _flatten(old.model_dump()), _flatten(config.model_dump())
            # The report settings only change what is computed after training; their results are cached by key.
            diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and not k.startswith("report."))
            if diff:
                raise ValueError(f"{saved}: --resume needs the same config; differing fields: {diff[:8]}")
        return
    if started and not overwrite:
        raise ValueError(f"{out}: holds a run already; use --resume to continue it or --overwrite to start over")
    if overwrite:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        shutil.rmtree(out / "lightning_logs", ignore_errors=True)
        shutil.rmtree(out / "coverage", ignore_errors=True)
        for name in _OUTPUTS:
            (out / name).unlink(missing_ok=True)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def closure_reference(
    config: ClosureConfig, experiment: Experiment, data: EventData, out: Path, progress: bool, log: Any
) -> dict[str, np.ndarray]:
    """MLE, MCMC posterior and bootstrap MLEs, cached in reference.npz under a key of what they depend on."""
    t = config.gan.training
    key = json.dumps(
        to_jsonable(
            {
                "physics": config.physics.model_dump(),
                "data": config.data.model_dump(),
                "posterior": config.posterior.model_dump(),
            }
        ),
        sort_keys=True,
    )
    boot_key = json.dumps(
        {"replicas": t.replicas, "seed": t.seed, "bootstrap": t.bootstrap, "on": config.report.bootstrap_mles}
    )
    path = out / "reference.npz"
    cached: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as f:
            if str(f["key"]) == key:
                cached = {k: f[k] for k in f.files}
                log.info("reference posterior reused from %s", path)
    if not cached:
        likelihood = ExtendedLikelihood(experiment, data)
        mle = fit_mle(likelihood, seed=config.posterior.seed)
        post = sample_posterior(likelihood, config.posterior, progress=progress, mle=mle)
        log.info("posterior: %.1f s, max R-hat %.4f, min ESS %.0f", post.seconds, post.rhat.max(), post.ess.min())
        cached = {"key": np.array(key), "mle": mle.theta, "posterior": post.flat, "rhat": post.rhat, "ess": post.ess}
    if str(cached.get("boot_key", "")) != boot_key:
        cached.pop("bootstrap_mles", None)
        if config.report.bootstrap_mles and not t.bootstrap:
            cached["bootstrap_mles"] = np.tile(cached["mle"], (t.replicas, 1))  # every replica fits the data
        elif config.report.bootstrap_mles:
            weights = poisson_replica_weights(data.counts, t.replicas, seed=t.seed)
            cached["bootstrap_mles"] = fit_bootstrap_mles(
                experiment, data, weights, start=cached["mle"], progress=progress
            )
        cached["boot_key"] = np.array(boot_key)
    np.savez(path, **cached)
    return cached


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
        experiment = Experiment(config.physics)
        model = InverseGAN(config.gan, experiment, generate_pseudodata(experiment, seed=config.data.seed))
        fit_gan(model, out, resume=resume, progress=False)
        return None
    experiment = Experiment(config.physics)
    theory = experiment.theory
    names = theory.parameter_names
    truth = np.asarray(theory.truth)
    _prepare_directory(out, config, resume, overwrite)
    data, reused = load_or_generate(experiment, config.data.seed, out / "data", overwrite)
    out, log, provenance = open_run_dir(out, config, "inverse.closure")
    log.info("data %s: counts %s", "reused" if reused else "generated", data.counts)
    if progress:
        print(
            f"== closure: case {experiment.case}, seed {config.data.seed}, counts {data.counts}, truth {truth.tolist()}"
        )

    t_ref = time.perf_counter()
    ref = closure_reference(config, experiment, data, out, progress, log)
    ref_seconds = time.perf_counter() - t_ref
    post = ref["posterior"]
    post_mean, post_sd = post.mean(0), post.std(0, ddof=1)

    model = InverseGAN(config.gan, experiment, data)
    t_fit, cpu_fit = time.perf_counter(), time.process_time()
    module = fit_gan(model, out, resume=resume, progress=progress and config.gan.training.progress)
    fit_seconds, fit_cpu_seconds = time.perf_counter() - t_fit, time.process_time() - cpu_fit
    model = module.model.cpu().double()
    est = model.estimates().numpy()
    est_mean, est_sd = est.mean(0), est.std(0, ddof=1) if len(est) > 1 else np.zeros(len(names))
    pull = (est_mean - truth) / post_sd
    std_ratio = est_sd / post_sd
    info = fisher_information(experiment, torch.tensor(post_mean[None], dtype=torch.float64))
    fisher_sd = cramer_rao(info)[0][0].numpy()
    steps_done = int(model.step_count)

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
        "replicas": model.n_replicas,
        "steps": steps_done,
        "sampler": config.gan.sampler.model_dump(),
        "wall_s": time.perf_counter() - start,
        "case": experiment.case,
        "seed": config.data.seed,
        "counts": data.counts,
        "mle": ref["mle"],
        "mle_offset": (est_mean - ref["mle"]) / post_sd,
        "cramer_rao_std_at_posterior_mean": fisher_sd,
        "replica_estimates": est,
        "targets_met": {
            "abs_pull_below_3": bool(np.all(np.abs(pull) < 3)),
            "std_ratio_in_0.5_2": bool(np.all((std_ratio >= 0.5) & (std_ratio <= 2.0))),
        },
        "timing_s": {
            "reference": ref_seconds,
            "fit": fit_seconds,
            "fit_cpu": fit_cpu_seconds,
            "median_step": float(np.median(module.step_seconds)) if module.step_seconds else None,
        },
    }
    if "bootstrap_mles" in ref:
        dist = np.abs(est - ref["bootstrap_mles"]) / post_sd
        summary["bootstrap_mles"] = ref["bootstrap_mles"]
        summary["bootstrap_distance"] = {
            "median": float(np.median(dist)),
            "max": float(dist.max()),
            "per_parameter_median": np.median(dist, axis=0),
        }
        summary["bootstrap_std_ratio"] = ref["bootstrap_mles"].std(0, ddof=1) / post_sd if len(est) > 1 else None
        summary["targets_met"]["bootstrap_distance_median_le_0.1"] = bool(np.median(dist) <= 0.1)
    # The statistical-limit bar (R >= 100, <= 500 steps, < 5 CPU-minutes of fitting; DESIGN.md section 9).
    summary["targets_met"]["std_ratio_in_0.8_1.25"] = bool(np.all((std_ratio >= 0.8) & (std_ratio <= 1.25)))
    if len(module.step_seconds) == steps_done:  # the whole fit ran in this process (not a resumed one)
        summary["targets_met"]["fit_under_5_cpu_minutes"] = bool(fit_cpu_seconds < 300)
    if config.report.coverage:
        summary["coverage"] = run_coverage(config, experiment, out / "coverage", config.report.coverage, progress)
        for level, c in summary["coverage"]["levels"].items():
            summary["targets_met"][f"coverage_{level}_in_target"] = c["pooled_in_target"]
    if isinstance(model.sampler, Surrogate) and model.sampler.has_log_prob:
        s_mle = surrogate_mle(model.sampler, experiment, data, ref["mle"])
        summary["surrogate"] = {
            "mle": s_mle,
            "mle_offset_vs_exact": (s_mle - ref["mle"]) / post_sd,
            "replica_mean_vs_surrogate_mle": (est_mean - s_mle) / post_sd,
        }
    summary["detector"] = None if experiment.detector is None else experiment.detector.summary()
    mcmc = getattr(model.sampler, "inner", model.sampler)
    if isinstance(mcmc, MCMCSampler) and mcmc.last_diagnostics:
        diag = mcmc.last_diagnostics
        summary["mcmc_last_draw"] = {
            "acceptance_mean": float(diag["acceptance"].mean()),
            "step_size_mean": float(diag["step_size"].mean()),
            **({"ess_per_state": float((diag["ess"] / mcmc.last_states).mean())} if "ess" in diag else {}),
        }
    view = BinnedView(experiment, data, n_bins=config.data.n_bins)
    chi2 = float(view.chi2(torch.tensor(est_mean[None], dtype=torch.float64), kind="theory")[0])
    summary["chi2_at_estimate"] = {"chi2": chi2, "n_points": view.n_points}

    if plots:
        hist = model.theta_history[:steps_done].numpy()
        losses = model.loss_history[:steps_done].numpy()
        x_lo = min(d.spec.x_min for d in experiment.datasets)
        x_hi = max(d.spec.x_max for d in experiment.datasets)
        plot_pdf_bands(
            theory, {"MCMC posterior": post, "GAN replicas": est}, out / "pdfs.png", truth=truth, x_range=(x_lo, x_hi)
        )
        plot_data(view, {"GAN replica mean": est_mean, "truth": truth}, out / "data.png")
        plot_replica_histograms(est, post, names, out / "replicas.png", truth, ref.get("bootstrap_mles"))
        plot_training(
            hist,
            losses,
            names,
            out / "training.png",
            ref["mle"],
            post_sd,
            targets=ref.get("bootstrap_mles"),
            polyak=config.gan.training.polyak,
        )
    write_json(out / "summary.json", summary)
    (out / "report.md").write_text(_report(summary, plots))
    log.info("done in %.1f s: pulls %s, std ratios %s", summary["wall_s"], pull.round(2), std_ratio.round(2))
    if progress:
        print(_table(summary))
        print(f"\nwrote {out / 'summary.json'}, {out / 'report.md'}" + (" and plots" if plots else ""))
    return summary


def _table(s: dict[str, Any]) -> str:
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


def _report(s: dict[str, Any], plots: bool) -> str:
    met = s["targets_met"]
    lines = [
        f"# GAN closure test: case {s['case']}, data seed {s['seed']}",
        "",
        f"{s['replicas']} bootstrap replicas trained together for {s['steps']} steps; "
        f"wall time {s['wall_s']:.0f} s (reference posterior {s['timing_s']['reference']:.0f} s, "
        f"GAN fit {s['timing_s']['fit']:.0f} s). Event counts per dataset: {s['counts']}. Generated events from "
        + (
            "the exact inverse-CDF sampler"
            if s["sampler"]["kind"] == "exact"
            else "the MCMC sampler (random-walk Metropolis, score-function gradients)"
            if s["sampler"]["kind"] == "mcmc"
            else f"the {s['sampler']['kind']} surrogate `{s['sampler']['path']}`"
        )
        + (
            "."
            if s.get("detector") is None
            else f", passed through the detector (resolution {s['detector']['resolution']:.3g} in log x, "
            f"acceptance {s['detector']['acceptance']['kind']}); the posterior is the folded likelihood's."
        ),
        "",
        "`pull` = (replica mean - truth) / posterior sd; `std_ratio` = replica sd / posterior sd. "
        "The last column compares each replica with the exact MLE of its own bootstrap weights "
        "(median over replicas, posterior sd units): a bootstrap reproduces the MLE and its spread, "
        "which can sit a fraction of a sd from the posterior mean.",
        "",
        "```",
        _table(s),
        "```",
        "",
        f"- every |pull| < 3: **{met['abs_pull_below_3']}**; every std_ratio in [0.5, 2]: "
        f"**{met['std_ratio_in_0.5_2']}**",
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
    if "surrogate" in s:
        off = np.round(np.asarray(s["surrogate"]["mle_offset_vs_exact"], dtype=float), 3).tolist()
        lines.append(
            f"- surrogate's own MLE (its density for the shapes) - exact MLE, in posterior sd: {off} "
            "(the bias inherited from the surrogate)"
        )
    t = s["timing_s"]
    lines.append(f"- GAN fit: {t['fit']:.0f} s wall, {t['fit_cpu']:.0f} CPU-s")
    lines.append("- targets: " + ", ".join(f"{k} **{'yes' if v else 'no'}**" for k, v in met.items()))
    if "coverage" in s:
        c = s["coverage"]
        lines += ["", f"## Coverage over {c['n_sets']} pseudo-data sets at the same truth", ""]
        lines.append(
            "Fraction of data sets whose truth lies in the replicas' central interval; binomial sd in brackets."
        )
        lines.append("")
        for level, v in c["levels"].items():
            per = ", ".join(f"{n} {f:.2f}" for n, f in zip(c["params"], v["per_parameter"]))
            lines.append(
                f"- {level} %: pooled **{v['pooled']:.3f}** (target {v['target'][0]}-{v['target'][1]}); "
                f"per parameter ({v['per_parameter_sd']:.2f}): {per}"
            )
        lines.append("- `coverage/coverage.png`, per-data-set rows in `coverage/results.jsonl`")
    if plots:
        lines += [
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
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2: bad input, 3: the fit diverged)."""
    args = build_parser().parse_args(argv)
    try:
        config = resolve_config(args)
        run_closure(
            config,
            args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            plots=not args.no_plots,
            progress=not args.quiet,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"error: training diverged: {err}; last checkpoint kept in {args.out / 'checkpoints'}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
