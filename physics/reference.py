"""Command line: the statistical reference of a closure test (pseudo-data, Cramér–Rao bound, MCMC posterior).

Usage::

    python -m physics.reference --config configs/reference.yaml --case B --seed 1 --out runs/reference

Steps: generate (or reuse) pseudo-data for the case, print the Cramér–Rao table of every case at the truth,
fit the maximum-likelihood estimate, sample the exact posterior by MCMC, check the goodness of fit in the
binned view, and write ``summary.json``, ``posterior_samples.npz``, plots (``data.png``, ``posterior.png``,
``pdfs.png``) and ``run.log`` into ``--out``. Every inverse solver of the suite is judged against these
numbers. A data set already in ``--out/data`` is reused when its case and seed match, so a rerun never
destroys it; a mismatch is an error unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import chi2 as chi2_dist

from physics.binned import BinnedView
from physics.config import ReferenceConfig, load_yaml, parse_config
from physics.datasets import Experiment
from physics.likelihood import ExtendedLikelihood, cramer_rao, fisher_information, fit_mle
from physics.plots import plot_corner, plot_data, plot_pdf_bands
from physics.posterior import sample_posterior
from physics.pseudodata import EventData, generate_pseudodata, load_events, save_events
from physics.runs import format_table, open_run_dir, write_json

__all__ = ["crlb_table", "load_or_generate", "main", "run_reference"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(prog="python -m physics.reference", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=None, help="YAML runcard (sections physics, data, posterior)")
    p.add_argument("--case", default=None, help="event-count case; overrides physics.case")
    p.add_argument("--seed", type=int, default=None, help="pseudo-data seed; overrides data.seed")
    p.add_argument("--out", type=Path, default=Path("runs/reference"), help="run directory")
    p.add_argument("--overwrite", action="store_true", help="replace a data set in --out/data that does not match")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
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


def load_or_generate(experiment: Experiment, seed: int, directory: Path, overwrite: bool) -> tuple[EventData, bool]:
    """Reuse the pseudo-data in ``directory`` if it has this case, seed and truth; else generate and save it.

    Returns:
        (data, reused). A different data set already there is an error unless ``overwrite``.
    """
    if (directory / "meta.json").exists():
        data = load_events(directory, experiment)
        same = data.meta.get("case") == experiment.case and data.meta.get("seed") == seed
        same = same and np.allclose(data.meta.get("truth", []), experiment.theory.truth)
        detector = None if experiment.detector is None else experiment.detector.summary()
        same = same and data.meta.get("detector") == detector
        if same:
            return data, True
        if not overwrite:
            raise ValueError(
                f"{directory}: holds case {data.meta.get('case')!r} seed {data.meta.get('seed')} "
                f"(truth {data.meta.get('truth')}, detector {data.meta.get('detector')}), not case "
                f"{experiment.case!r} seed {seed} (detector {detector}); "
                "use another --out or --overwrite"
            )
        shutil.rmtree(directory)
    data = generate_pseudodata(experiment, seed=seed)
    save_events(data, directory)
    return data, False


def run_reference(
    config: ReferenceConfig, out: Path, overwrite: bool = False, plots: bool = True, progress: bool = True
) -> dict[str, object]:
    """Run the reference pipeline and write the run directory; returns the summary (also in summary.json)."""
    start = time.perf_counter()
    experiment = Experiment(config.physics)
    theory = experiment.theory
    names = theory.parameter_names
    truth = np.asarray(theory.truth)
    seed = config.data.seed

    # The data check comes first: a refused run must not overwrite the directory's config.yaml or run.log.
    data, reused = load_or_generate(experiment, seed, out / "data", overwrite)
    out, log, provenance = open_run_dir(out, config, "physics.reference")
    log.info("data %s: counts %s", "reused" if reused else "generated", data.counts)
    print(
        f"\n== Pseudo-data: case {experiment.case}, seed {seed} ({'reused' if reused else 'written'}: {out / 'data'})"
    )
    print(
        format_table(
            ["dataset", "observable", "x range", "expected", "observed"],
            [
                (d.name, d.observable, f"[{d.spec.x_min}, {d.spec.x_max}]", d.expected, n)
                for d, n in zip(experiment.datasets, data.counts)
            ],
            ".1f",
        )
    )

    crlb = crlb_table(config)
    pairs = [(3 * f, 3 * f + 1) for f in range(len(theory.flavors))]
    print("\n== Cramér–Rao bound at the truth (standard deviations, extended unbinned likelihood)")
    print(
        format_table(
            ["case", *names, *[f"corr({names[i]},{names[k]})" for i, k in pairs]],
            [
                (case, *[v["sd"][n] for n in names], *[v["correlation"][i][k] for i, k in pairs])
                for case, v in crlb.items()
            ],
            ".3f",
        )
    )

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
    n_draws, n_chains = posterior.samples.shape[:2]
    print(
        f"\n== MCMC reference posterior, case {experiment.case} (random-walk Metropolis, {n_chains} chains x {n_draws} "
        f"draws, {posterior.seconds:.0f} s, acceptance {posterior.acceptance:.2f})"
    )
    q = posterior.quantiles([0.16, 0.84])
    print(
        format_table(
            [
                "param",
                "truth",
                "MLE",
                "mean",
                "sd",
                "sd/CRLB",
                "q16",
                "q84",
                "(mean-truth)/sd",
                "R-hat",
                "ESS",
            ],
            [
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
            ],
            ".4g",
        )
    )

    view = BinnedView(experiment, data, n_bins=config.data.n_bins)
    fits = {}
    for label, theta in (("truth", truth), ("mle", mle.theta), ("posterior_mean", posterior.mean)):
        value = float(view.chi2(torch.tensor(theta[None], dtype=torch.float64), kind="theory")[0])
        ndf = view.n_points - (0 if label == "truth" else len(names))
        fits[label] = {
            "chi2": value,
            "n_points": view.n_points,
            "ndf": ndf,
            "p_value": float(chi2_dist.sf(value, ndf)),
        }
    print(f"\n== Goodness of fit ({view.n_points} log-x bins, Pearson chi2)")
    print(
        format_table(
            ["at", "chi2", "ndf", "p-value"],
            [(k, v["chi2"], v["ndf"], v["p_value"]) for k, v in fits.items()],
            ".3f",
        )
    )

    np.savez(out / "posterior_samples.npz", samples=posterior.samples, names=np.array(names))
    if plots:
        cov_crlb = np.linalg.inv(np.asarray(crlb[experiment.case]["fisher"]))
        plot_data(view, {"truth": truth, "posterior mean": posterior.mean}, out / "data.png")
        plot_corner(
            posterior.flat,
            names,
            out / "posterior.png",
            truth=truth,
            crlb_cov=cov_crlb,
            low=np.asarray(theory.low),
            high=np.asarray(theory.high),
        )
        x_lo = min(d.spec.x_min for d in experiment.datasets)
        x_hi = max(d.spec.x_max for d in experiment.datasets)
        plot_pdf_bands(theory, posterior.flat, out / "pdfs.png", truth=truth, x_range=(x_lo, x_hi))

    summary = {
        **provenance,
        "case": experiment.case,
        "seed": seed,
        "datasets": [{**row, "observed": n} for row, n in zip(experiment.summary(), data.counts)],
        "truth": dict(zip(names, truth.tolist())),
        "crlb": {c: {"sd": v["sd"], "correlation": v["correlation"]} for c, v in crlb.items()},
        "mle": {
            "theta": dict(zip(names, mle.theta.tolist())),
            "log_likelihood": mle.log_likelihood,
            "success": mle.success,
            "at_edge": dict(zip(names, mle.at_edge.tolist())),
        },
        "posterior": posterior.summary(),
        "posterior_sd_over_crlb": dict(zip(names, (posterior.std / crlb_sd).tolist())),
        "goodness_of_fit": fits,
        "seconds": time.perf_counter() - start,
    }
    write_json(out / "summary.json", summary)
    print(f"\nwrote {out / 'summary.json'}" + (", data.png, posterior.png, pdfs.png" if plots else ""))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        config = (
            parse_config(ReferenceConfig, load_yaml(args.config), str(args.config))
            if args.config
            else ReferenceConfig()
        )
        update = {}
        if args.case is not None:
            update["physics"] = {**config.physics.model_dump(), "case": args.case}
        if args.seed is not None:
            update["data"] = {**config.data.model_dump(), "seed": args.seed}
        if update:
            config = parse_config(ReferenceConfig, {**config.model_dump(), **update}, "command line")
        run_reference(config, args.out, overwrite=args.overwrite, plots=not args.no_plots, progress=not args.quiet)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
