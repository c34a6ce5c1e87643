"""Command line: an ensemble of the best trials of a search, with the uncertainty split into aleatoric and epistemic.

Usage::

    python -m hpo.ensemble --search runs/hpo --top 5 --out runs/ensemble                 # serial refits
    python -m hpo.ensemble --search runs/hpo --top 5 --out runs/ensemble --evaluator mpi --workers 4
    python -m hpo.ensemble --search runs/hpo --top 5 --out runs/ensemble --replicas 50   # more replicas each

The K best complete trials of a finished ``python -m hpo.search`` (lowest loss in its results.csv; failed trials
and trials the stopper ended early are not candidates) are refitted on all data, without folds, each with its own
hyperparameters (the search's base.yaml with the trial's ``p:`` values) and R replicas. Member m gives replica
estimates theta_mr with mean mu_m and variance s_m^2 (over its R replicas). The ensemble is the equal-weight mixture
of the members' replica distributions; by the law of total variance its variance splits into

    aleatoric  = 1/K sum_m s_m^2                 (the data's fluctuations, as each configuration's replicas see them)
    epistemic  = 1/K sum_m (mu_m - mu)^2          (how much the answer depends on the configuration)
    total      = aleatoric + epistemic            (the variance of all K x R estimates pooled)

with mu = 1/K sum_m mu_m. Both use the mixture's (population, 1/K and 1/R) normalisation, so the split is exact.
Each member mean carries a Monte Carlo error s_m^2 / R: K configurations with independent replicas would show an
epistemic part of about (K - 1)/K x aleatoric / R even if they were identical (``epistemic_floor`` in
ensemble.json). The members here share the data, the bootstrap replicas and the seeds (common random numbers), so
most of that error is common to them and cancels in mu_m - mu: the floor is an upper bound of the noise, and an
epistemic part near or above it is a real dependence on the hyperparameters. The same split is applied to the full
covariance matrix and, at every x, to the PDFs u(x) and d(x).

The parameter split is DeepHyper's ``MixedNormalAggregator(decomposed_scale=True)`` (members as normals with loc
mu_m and scale s_m); the covariance matrices and the PDF bands are computed here, since that aggregator is
per component. DeepHyper's ``EnsemblePredictor`` and selectors (top-k, greedy) are built for models that predict y
from inputs X, scored on a validation set; a member here is a set of parameter estimates, and the search's own
k-fold loss, already in results.csv, is its validation score, so members are chosen from it directly.

In a closure (the search's events are pseudo-data with a known truth) the ensemble is also compared with the MCMC
reference posterior (``pull`` = (mu - truth) / posterior sd; ``std_ratio`` = ensemble sd / posterior sd, with and
without the epistemic part) and reports how often intervals of the aleatoric and of the total sd cover the truth.

The refits run on DeepHyper's evaluators like the search (``--evaluator serial|process|mpi``; mpi re-launches
under ``mpiexec`` when started as one process). The run directory holds ``ensemble.yaml`` (what was asked),
``members/job-<id>/`` (runcard.yaml, the checkpoint of a refit in progress, estimates.npy when done),
``ensemble.json``, ``report.md``, ``contributions.png``, ``pdfs.png`` and ``reference.npz`` (the cached posterior).
A killed run restarts with the same command: finished members are read back, an interrupted one resumes from its
checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hpo.config import SearchConfig, apply_overrides
from hpo.search import join_mpi, launched_by_mpi, read_results, relaunch_under_mpi, worker_threads
from physics.config import load_yaml, parse_config
from physics.runs import write_json, write_yaml

__all__ = ["EVALUATORS", "build_parser", "main", "refit_member", "run_ensemble", "select_members", "variance_split"]

EVALUATORS = ("serial", "process", "mpi")
_LEVELS = {"68": 1.0, "95": 1.959963984540054}


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m hpo.ensemble", description=__doc__.split("\n\n")[0])
    p.add_argument("--search", type=Path, required=True, help="run directory of a finished python -m hpo.search")
    p.add_argument("--top", type=int, required=True, help="K: the best K complete trials become members")
    p.add_argument("--out", type=Path, required=True, help="run directory of the ensemble")
    p.add_argument("--replicas", type=int, help="R replicas per member (default: the runcard's gan.training.replicas)")
    p.add_argument("--evaluator", choices=EVALUATORS, default="serial", help="how refits run (default: serial)")
    p.add_argument("--workers", type=int, help="parallel refits (mpi: ranks - 1 when launched by mpiexec/srun)")
    p.add_argument(
        "--reference", choices=("on", "off"), default="on", help="compare with the MCMC posterior (default: on)"
    )
    p.add_argument("--overwrite", action="store_true", help="start over in a directory that holds another ensemble")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def select_members(search: Path, top: int) -> tuple[SearchConfig, dict[str, Any], list[dict[str, Any]]]:
    """The search's config, its base runcard and its ``top`` best complete trials (job id, loss, parameters).

    Raises:
        ValueError: no search there (results.csv, config.yaml or base.yaml missing), a solver other than the GAN,
            a space entry without its ``p:`` column in results.csv, or ``top`` larger than the complete trials.
    """
    if top < 1:
        raise ValueError(f"--top: must be >= 1, got {top}")
    if not search.is_dir():
        raise ValueError(f"--search: {search} is not a directory")
    df = read_results(search)
    for name in ("config.yaml", "base.yaml"):
        if not (search / name).is_file():
            raise ValueError(f"--search: {search / name} is missing (not a run directory of python -m hpo.search)")
    config = parse_config(SearchConfig, load_yaml(search / "config.yaml"), str(search / "config.yaml"))
    if config.solver != "gan":
        raise ValueError(
            f"{search / 'config.yaml'}: solver {config.solver!r}: the ensemble combines parameter estimates of the "
            "GAN solver (a VAIM search maps observables to several solutions, not one estimate with replicas)"
        )
    missing = [f"p:{name}" for name in config.space if f"p:{name}" not in df.columns]
    if missing:
        raise ValueError(f"{search / 'results.csv'}: missing column(s) {missing} of the search space")
    for column in ("job_id", "objective"):
        if column not in df.columns:
            raise ValueError(f"{search / 'results.csv'}: missing column {column!r}")
    complete = df[df["complete"]].sort_values(["loss", "job_id"])
    if top > len(complete):
        raise ValueError(
            f"--top {top}: {search} has only {len(complete)} complete trials ({int(df['failed'].sum())} failed, "
            f"{int(df['stopped'].sum())} stopped early, of {len(df)})"
        )
    members = []
    for _, row in complete.head(top).iterrows():
        params = {}
        for name in config.space:
            value = row[f"p:{name}"]
            if isinstance(value, float) and math.isnan(value):
                continue
            params[name] = value.item() if hasattr(value, "item") else value
        members.append({"job_id": int(row["job_id"]), "loss": float(row["loss"]), "parameters": params})
    return config, load_yaml(search / "base.yaml"), members


def member_runcard(base: dict[str, Any], parameters: dict[str, Any], replicas: int | None) -> dict[str, Any]:
    """The runcard a member refits with: the search's base, the trial's values, R replicas, no progress bar."""
    from inverse.config import ClosureConfig

    card = apply_overrides(base, parameters)
    update = {"gan.training.progress": False, "gan.training.devices": 1, "gan.training.num_nodes": 1}
    if replicas is not None:
        update["gan.training.replicas"] = replicas
    card = apply_overrides(card, update)
    return parse_config(ClosureConfig, card, "member runcard").model_dump(mode="json")


def refit_member(job: Any, out: str, search: str, threads: int = 1) -> dict[str, Any]:
    """DeepHyper run function: refit one member (``job.parameters["job_id"]``) on all data; never raises.

    Returns:
        ``{"job_id", "seconds", "reused", "error"}``; the estimates are in ``members/job-<id>/estimates.npy``.
    """
    import torch

    from inverse.config import ClosureConfig
    from inverse.gan import InverseGAN
    from inverse.training import fit_gan
    from physics.datasets import Experiment
    from physics.pseudodata import load_events

    job_id = int(job.parameters["job_id"])
    folder = Path(out) / "members" / f"job-{job_id}"
    result: dict[str, Any] = {"job_id": job_id, "seconds": 0.0, "reused": False, "error": None}
    if (folder / "estimates.npy").is_file():
        result["reused"] = True
        return result
    start = time.perf_counter()
    try:
        torch.set_num_threads(max(1, threads))
        config = ClosureConfig.model_validate(load_yaml(folder / "runcard.yaml"))
        experiment = Experiment(config.physics)
        data = load_events(Path(search) / "data", experiment)
        model = InverseGAN(config.gan, experiment, data)
        module = fit_gan(model, folder, resume=True, progress=False)
        estimates = module.model.cpu().double().estimates().numpy()
        tmp = folder / "estimates.tmp.npy"
        np.save(tmp, estimates)
        os.replace(tmp, folder / "estimates.npy")
    except Exception as err:  # one failed member must not end the others' refits
        result["error"] = f"{type(err).__name__}: {err}"[:800]
    result["seconds"] = time.perf_counter() - start
    return result


async def refit_member_async(job: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`refit_member` as a coroutine, for DeepHyper's serial evaluator."""
    return refit_member(job, **kwargs)


def variance_split(estimates: np.ndarray) -> dict[str, np.ndarray]:
    """The law-of-total-variance split of member replica estimates [K, R, D] (or values [K, R, ...]).

    Returns:
        ``mean`` [D]; ``aleatoric``, ``epistemic``, ``total`` variances [D] (DeepHyper's MixedNormalAggregator);
        ``member_mean`` [K, D], ``member_var`` [K, D]; ``aleatoric_cov``, ``epistemic_cov``, ``total_cov`` [D, D]
        (for 2-d values per replica: [K, R, D]); ``epistemic_floor`` [D], the epistemic part K identical
        configurations with independent replicas would show, (K - 1)/K x aleatoric / R.
    """
    from deephyper.ensemble.aggregator import MixedNormalAggregator

    est = np.asarray(estimates, dtype=float)
    if est.ndim < 3 or est.shape[0] < 1 or est.shape[1] < 1:
        raise ValueError(f"estimates: expected [members, replicas, ...], got shape {est.shape}")
    k, r = est.shape[:2]
    mu, var = est.mean(1), est.var(1)
    agg = MixedNormalAggregator(decomposed_scale=True).aggregate(
        [{"loc": m, "scale": np.sqrt(v)} for m, v in zip(mu, var)]
    )
    out = {
        "mean": agg["loc"],
        "aleatoric": agg["scale_aleatoric"] ** 2,
        "epistemic": agg["scale_epistemic"] ** 2,
        "member_mean": mu,
        "member_var": var,
    }
    out["total"] = out["aleatoric"] + out["epistemic"]
    out["epistemic_floor"] = (k - 1) / k * out["aleatoric"] / r
    if est.ndim == 3:
        centred = est - mu[:, None]
        out["aleatoric_cov"] = np.einsum("kri,krj->ij", centred, centred) / (k * r)
        dev = mu - mu.mean(0)
        out["epistemic_cov"] = dev.T @ dev / k
        out["total_cov"] = out["aleatoric_cov"] + out["epistemic_cov"]
    return out


def _coverage(mean: np.ndarray, sd: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    z = np.abs(mean - truth) / sd
    return {level: float(np.mean(z <= width)) for level, width in _LEVELS.items()}


def closure_comparison(
    split: dict[str, np.ndarray], truth: np.ndarray, post_mean: np.ndarray, post_sd: np.ndarray
) -> dict[str, Any]:
    """Pulls, std ratios and the coverage of the truth with the aleatoric and with the total sd."""
    ale, tot = np.sqrt(split["aleatoric"]), np.sqrt(split["total"])
    cov_ale, cov_tot = _coverage(split["mean"], ale, truth), _coverage(split["mean"], tot, truth)
    nominal = {"68": 0.6827, "95": 0.9545}
    return {
        "pull": (split["mean"] - truth) / post_sd,
        "std_ratio_total": tot / post_sd,
        "std_ratio_aleatoric": ale / post_sd,
        "posterior_mean": post_mean,
        "posterior_std": post_sd,
        "z_truth_aleatoric": (split["mean"] - truth) / ale,
        "z_truth_total": (split["mean"] - truth) / tot,
        "coverage_aleatoric": cov_ale,
        "coverage_total": cov_tot,
        "coverage_nominal": nominal,
        # Improves: the total sd's coverage is nearer the nominal level at both levels, and strictly at one.
        "epistemic_improves_coverage": bool(
            all(abs(cov_tot[q] - nominal[q]) <= abs(cov_ale[q] - nominal[q]) for q in nominal)
            and any(abs(cov_tot[q] - nominal[q]) < abs(cov_ale[q] - nominal[q]) for q in nominal)
        ),
    }


def _check_out(out: Path, settings: dict[str, Any], overwrite: bool) -> None:
    saved = out / "ensemble.yaml"
    if saved.is_file() and not overwrite:
        old = load_yaml(saved)
        differ = sorted(k for k in settings if k != "members" and old.get(k) != settings[k])
        if differ:
            raise ValueError(
                f"{saved}: holds another ensemble (differs in {differ}); use --overwrite to start over or another --out"
            )
    if overwrite:
        import shutil

        for name in ("members", "ensemble.yaml", "ensemble.json", "report.md", "contributions.png", "pdfs.png"):
            target = out / name
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)


def prepare(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Check the arguments and the search; returns the members, each with the runcard it refits with."""
    _, base, members = select_members(args.search, args.top)
    if args.replicas is not None and args.replicas < 2:
        raise ValueError(f"--replicas: an ensemble member needs >= 2 replicas for its variance, got {args.replicas}")
    for m in members:
        m["runcard"] = member_runcard(base, m["parameters"], args.replicas)
    if members[0]["runcard"]["gan"]["training"]["replicas"] < 2:
        raise ValueError("gan.training.replicas of the search's base runcard is 1: give --replicas R >= 2")
    return members


def _write_members(out: Path, args: argparse.Namespace, members: list[dict[str, Any]]) -> None:
    settings = {
        "search": str(args.search.resolve()),
        "replicas": args.replicas,
        "members": [m["job_id"] for m in members],
    }
    _check_out(out, settings, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "ensemble.yaml", settings)
    for m in members:
        folder = out / "members" / f"job-{m['job_id']}"
        folder.mkdir(parents=True, exist_ok=True)
        card_path = folder / "runcard.yaml"
        if card_path.is_file() and load_yaml(card_path) != json.loads(json.dumps(m["runcard"])):
            raise ValueError(f"{card_path}: a different runcard than this member's; use --overwrite")
        write_yaml(card_path, m["runcard"])


def run_refits(
    members: list[dict[str, Any]], out: Path, search: Path, evaluator: str, workers: int, progress: bool
) -> list[dict[str, Any]] | None:
    """Refit the members on DeepHyper's evaluator; returns their results on the manager, None on MPI workers."""
    from deephyper.evaluator import Evaluator

    kwargs = {"out": str(out.resolve()), "search": str(search.resolve()), "threads": worker_threads(workers)}
    if evaluator == "mpi":
        from deephyper.evaluator.storage import MemoryStorage

        method, method_kwargs = "mpicomm", {"storage": MemoryStorage(), "run_function_kwargs": kwargs}
    else:
        method = evaluator
        method_kwargs = {"num_workers": 1 if evaluator == "serial" else workers, "run_function_kwargs": kwargs}
    function = refit_member_async if evaluator == "serial" else refit_member
    with Evaluator.create(function, method=method, method_kwargs=method_kwargs) as ev:
        if evaluator == "mpi" and not ev.is_master:
            return None
        from tqdm.auto import tqdm

        ev.submit([{"job_id": m["job_id"]} for m in members])
        results: list[dict[str, Any]] = []
        with tqdm(total=len(members), desc="refits", disable=not progress) as bar:
            while len(results) < len(members):
                for job in ev.gather("BATCH", size=1):
                    results.append(job.output)
                    bar.update(1)
    return sorted(results, key=lambda r: [m["job_id"] for m in members].index(r["job_id"]))


def run_ensemble(
    args: argparse.Namespace, members: list[dict[str, Any]], refits: list[dict[str, Any]]
) -> dict[str, Any]:
    """Combine the refitted members, compare with the reference posterior, write ensemble.json, report and plots."""
    import torch

    from inverse.closure import closure_reference
    from inverse.config import ClosureConfig
    from physics.datasets import Experiment
    from physics.pseudodata import load_events

    failed = [r for r in refits if r["error"]]
    for r in failed:
        print(f"warning: member job {r['job_id']} failed: {r['error']}", file=sys.stderr)
    ok = [m for m, r in zip(members, refits) if not r["error"]]
    if len(ok) < 2:
        raise RuntimeError(f"{len(ok)} of {len(members)} members refitted: an ensemble needs at least 2")
    est = np.stack([np.load(args.out / "members" / f"job-{m['job_id']}" / "estimates.npy") for m in ok])
    split = variance_split(est)
    card = parse_config(ClosureConfig, ok[0]["runcard"], "member runcard")
    experiment = Experiment(card.physics)
    theory = experiment.theory
    names, truth = theory.parameter_names, np.asarray(theory.truth, dtype=float)
    summary: dict[str, Any] = {
        "search": str(args.search),
        "params": names,
        "members": [
            {"job_id": m["job_id"], "search_loss": m["loss"], "parameters": m["parameters"], "refit_s": r["seconds"]}
            for m, r in zip(ok, [r for r in refits if not r["error"]])
        ],
        "failed_members": [{"job_id": r["job_id"], "error": r["error"]} for r in failed],
        "replicas": int(est.shape[1]),
        "truth": truth,
        **{k: split[k] for k in ("mean", "aleatoric", "epistemic", "total", "epistemic_floor")},
        "std": {k: np.sqrt(split[k]) for k in ("aleatoric", "epistemic", "total")},
        "epistemic_share": split["epistemic"] / split["total"],
        "member_mean": split["member_mean"],
        "member_std": np.sqrt(split["member_var"]),
        "covariance": {k: split[f"{k}_cov"] for k in ("aleatoric", "epistemic", "total")},
    }
    post = None
    if args.reference == "on":
        ref_card = card.model_copy(update={"report": card.report.model_copy(update={"bootstrap_mles": False})})
        data = load_events(args.search / "data", experiment)
        ref = closure_reference(ref_card, experiment, data, args.out, not args.quiet, logging.getLogger(__name__))
        post = ref["posterior"]
        summary["closure"] = closure_comparison(split, truth, post.mean(0), post.std(0, ddof=1))
    x_lo = min(d.spec.x_min for d in experiment.datasets)
    x_hi = max(d.spec.x_max for d in experiment.datasets)
    x = torch.tensor(np.geomspace(x_lo, x_hi, 120), dtype=torch.float64)
    pdf_split = {}
    for flavor in theory.flavors:
        values = np.stack([(x * theory.pdf(torch.tensor(e), x, flavor)).numpy() for e in est])
        pdf_split[flavor] = variance_split(values)
    summary["pdf_std_at_x"] = {
        "x": x.numpy()[[0, len(x) // 2, -1]],
        **{
            f: {k: np.sqrt(s[k][[0, len(x) // 2, -1]]) for k in ("aleatoric", "epistemic", "total")}
            for f, s in pdf_split.items()
        },
    }
    from hpo.ensemble_plots import plot_contributions, plot_pdf_split

    plot_contributions(summary, est, args.out / "contributions.png")
    plot_pdf_split(theory, x.numpy(), est, pdf_split, args.out / "pdfs.png", truth, post, [m["job_id"] for m in ok])
    write_json(args.out / "ensemble.json", summary)
    (args.out / "report.md").write_text(_report(summary))
    return summary


def _fmt(values: Any, digits: int = 3) -> str:
    return ", ".join(f"{v:.{digits}g}" for v in np.asarray(values, dtype=float))


def _report(s: dict[str, Any]) -> str:
    names = s["params"]
    lines = [
        f"# Ensemble of {len(s['members'])} configurations x {s['replicas']} replicas (search {s['search']})",
        "",
        "Members (search loss, refit time): "
        + "; ".join(f"job {m['job_id']} ({m['search_loss']:.4g}, {m['refit_s']:.0f} s)" for m in s["members"]),
        "",
        "| param | truth | mean | sd aleatoric | sd epistemic | sd total | epistemic share | epistemic / floor | pull "
        "| std_ratio total | std_ratio aleatoric |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    c = s.get("closure")
    for i, n in enumerate(names):
        row = [n, s["truth"][i], s["mean"][i], *(s["std"][k][i] for k in ("aleatoric", "epistemic", "total"))]
        row += [s["epistemic_share"][i], s["epistemic"][i] / s["epistemic_floor"][i]]
        row += [c["pull"][i], c["std_ratio_total"][i], c["std_ratio_aleatoric"][i]] if c else [math.nan] * 3
        lines.append("| " + " | ".join([row[0]] + [f"{v:.4g}" for v in row[1:]]) + " |")
    lines += [
        "",
        "aleatoric = mean over members of the replica variance; epistemic = variance of the member means; "
        "total = both (law of total variance). The floor, (K-1)/K x aleatoric / R = "
        f"{_fmt(s['epistemic_floor'])}, is the epistemic variance K identical configurations with independent "
        "replicas would show; members that share their bootstrap replicas (as here) share most of that noise, so an "
        "epistemic / floor near or above 1 is a real dependence on the hyperparameters.",
    ]
    if c:
        lines += [
            "",
            "## Against the MCMC reference posterior",
            "",
            "`pull` = (ensemble mean - truth) / posterior sd; `std_ratio` = ensemble sd / posterior sd.",
            f"- truth covered (fraction of the {len(names)} parameters) with the aleatoric sd: 68 % "
            f"{c['coverage_aleatoric']['68']:.2f}, 95 % {c['coverage_aleatoric']['95']:.2f}; with the total sd: "
            f"68 % {c['coverage_total']['68']:.2f}, 95 % {c['coverage_total']['95']:.2f} (nominal 0.68, 0.95)",
            f"- adding the epistemic part improves coverage: **{c['epistemic_improves_coverage']}** (one data set "
            f"and {len(names)} parameters: a coarse check)",
        ]
    if s["failed_members"]:
        lines += ["", "Failed members: " + "; ".join(f"job {f['job_id']}: {f['error']}" for f in s["failed_members"])]
    lines += [
        "",
        "- `contributions.png`: per parameter, the aleatoric, epistemic and total sd (posterior sd units in a "
        "closure) and each member's mean and replica sd.",
        "- `pdfs.png`: x u(x), x d(x): each member's band, the ensemble's, the posterior's; below, the split of the "
        "PDF sd along x.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2: bad input, 1: too few members refitted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    mpi_rank = None
    try:
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers: must be >= 1, got {args.workers}")
        members = prepare(args)
        if args.evaluator == "mpi":
            if not launched_by_mpi():
                return relaunch_under_mpi("hpo.ensemble", argv, args.workers or 2)
            mpi_rank = join_mpi()
        if mpi_rank in (None, 0):
            _write_members(args.out, args, members)
        workers = args.workers or 1
        if mpi_rank is not None:
            from mpi4py import MPI

            MPI.COMM_WORLD.Barrier()  # the member runcards are on disk before any worker reads one
            workers = MPI.COMM_WORLD.Get_size() - 1
        refits = run_refits(members, args.out, args.search, args.evaluator, workers, not args.quiet)
        if refits is None:
            return 0
        summary = run_ensemble(args, members, refits)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        if mpi_rank == 0:
            from mpi4py import MPI

            MPI.COMM_WORLD.Abort(2)
        return 2
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    std = summary["std"]
    print(f"\nensemble of {len(summary['members'])} members x {summary['replicas']} replicas")
    for i, n in enumerate(summary["params"]):
        line = f"  {n:>10}: mean {summary['mean'][i]:.4g}, sd aleatoric {std['aleatoric'][i]:.3g}, "
        line += f"epistemic {std['epistemic'][i]:.3g}, total {std['total'][i]:.3g}"
        if "closure" in summary:
            c = summary["closure"]
            line += f" | pull {c['pull'][i]:+.2f}, std_ratio {c['std_ratio_total'][i]:.2f}"
        print(line)
    print(f"wrote {args.out / 'ensemble.json'}, report.md, contributions.png, pdfs.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
