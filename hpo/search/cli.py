"""Command line: DeepHyper's centralized Bayesian optimisation of an inverse solver, scored by k-fold losses.

Usage::

    python -m hpo.search --config configs/hpo_gan.yaml --out runs/hpo                       # serial
    python -m hpo.search --config configs/hpo_gan.yaml --out runs/hpo --evaluator process --workers 2
    python -m hpo.search --config configs/hpo_gan.yaml --out runs/hpo --evaluator mpi --workers 4
    mpiexec -n 5 python -m hpo.search --config configs/hpo_gan.yaml --out runs/hpo --evaluator mpi
    srun -n 5 python -m hpo.search ... --evaluator mpi                                        # on a cluster
    python -m hpo.search --config configs/hpo_gan.yaml --out runs/hpo --resume                # after a kill

With ``--evaluator mpi`` rank 0 runs the search (CBO's ask/tell) and every other rank evaluates trials; started as
a single process, the command re-launches itself under ``mpiexec -n workers+1`` (:mod:`qcdgip.mpi`). Importing
this package never initializes MPI.

The run directory holds ``results.csv`` (DeepHyper's: ``p:<hyperparameter>``, ``objective`` = -loss or
``F_<reason>``, ``m:<metadata>`` with per-fold losses, per-fold mean replica chi2, phi^2, penalties and the
trial's start/end times), ``config.yaml`` (the search runcard as resolved), ``base.yaml`` (the solver runcard the
trials start from), ``best.yaml`` (that runcard with the best trial's hyperparameters: ready for
``python -m inverse.closure --config``, or ``python -m inverse.vaim``), ``objective.png``, ``utilisation.png`` (jobs
submitted and running at once over time), ``summary.json`` (with the worker utilisation, busy time / (workers x
wall)), ``report.md``, ``stopper/`` (with a stopper: the rungs trials reached) and ``data/`` (the events every trial
fits). ``--resume`` (or ``--restart``) continues a killed or interrupted search: finished trials are read back from
results.csv (none is repeated or lost) and ``search.max_evals`` counts them. A search whose MPI rank died stops with
every finished row kept (exit status 1) and ``--resume`` completes it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from hpo.config import SearchConfig, base_runcard, solver_model
from hpo.search.run import EVALUATORS, run_search
from qcdgip.cli import command_parser, default_out, run_command
from qcdgip.config import load_yaml, override_config, parse_assignments, parse_config
from qcdgip.mpi import abort, join_mpi, launched_by_mpi, relaunch_under_mpi, world_size
from qcdgip.runs import write_yaml

__all__ = ["build_parser", "check_run_dir", "main", "prepare_run_dir", "resolve"]

OUTPUTS = ("results.csv", "summary.json", "best.yaml", "objective.png", "utilisation.png", "report.md")


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = command_parser(
        "python -m hpo.search",
        "Hyperparameter search of an inverse solver (DeepHyper CBO) scored by NNPDF-style k-fold losses.",
        resume_help="continue a killed or interrupted search from its results.csv",
        resume_aliases=("--restart",),
    )
    p.add_argument("--evaluator", choices=EVALUATORS, default="serial", help="how trials run (default: serial)")
    p.add_argument("--workers", type=int, help="parallel trials (mpi: ranks - 1 when launched by mpiexec/srun)")
    p.add_argument("--max-evals", type=int, help="trials in total: search.max_evals")
    p.add_argument("--timeout", type=int, help="wall seconds of the search: search.timeout")
    p.add_argument(
        "--time-left",
        type=int,
        metavar="SECONDS",
        help="stop the search within this many seconds (a batch job's remaining time less a margin); "
        "search.timeout still applies when shorter",
    )
    return p


def resolve(args: argparse.Namespace) -> tuple[SearchConfig, dict[str, Any]]:
    """The search config (shortcuts and ``--set`` applied) and the solver's resolved base runcard."""
    if args.config is None or not args.config.is_file():
        raise ValueError(f"--config: a search runcard is required ({args.config or 'none given'} is not a file)")
    config = parse_config(SearchConfig, load_yaml(args.config), str(args.config))
    budget: dict[str, Any] = {}
    if args.max_evals is not None:
        budget["search.max_evals"] = args.max_evals
    if args.timeout is not None:
        budget["search.timeout"] = args.timeout
    if args.time_left is not None:
        if args.time_left < 1:
            raise ValueError(f"--time-left: must be >= 1 second, got {args.time_left}")
        current = budget.get("search.timeout", config.search.timeout)
        budget["search.timeout"] = args.time_left if current is None else min(current, args.time_left)
    config = override_config(config, budget, "command line")
    config = override_config(config, parse_assignments(args.set), "--set")
    if args.threads:
        config = override_config(config, {"search.torch_threads": args.threads}, "--threads")
    return config, base_runcard(config, args.config.parent)


def check_run_dir(out: Path, config: SearchConfig, runcard: dict[str, Any], resume: bool, overwrite: bool) -> None:
    """Refuse to mix searches: an existing one is resumed (same config but the budget) or overwritten."""
    started = (out / "results.csv").is_file()
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    if resume:
        saved, saved_base = out / "config.yaml", out / "base.yaml"
        if not saved.is_file():
            raise ValueError(f"{out}: no search to resume (config.yaml missing)")
        old = parse_config(SearchConfig, load_yaml(saved), str(saved)).model_dump()
        new = config.model_dump()
        diff = sorted(k for k in old.keys() | new.keys() if k != "search" and old.get(k) != new.get(k))
        if saved_base.is_file() and load_yaml(saved_base) != json.loads(json.dumps(runcard)):
            diff.append("base runcard")
        if diff:
            raise ValueError(f"{saved}: --resume needs the same search; differing sections: {diff}")
    elif started and not overwrite:
        raise ValueError(f"{out}: holds a search already; use --resume to continue it or --overwrite to start over")


def prepare_run_dir(out: Path, config: SearchConfig, runcard: dict[str, Any], overwrite: bool) -> None:
    """Write the resolved configs and the events the trials fit (GAN), clearing an overwritten search first."""
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
        for old in out.glob("results_*.csv"):
            old.unlink()
        shutil.rmtree(out / "stopper", ignore_errors=True)
    write_yaml(out / "config.yaml", config.model_dump(mode="json"))
    write_yaml(out / "base.yaml", runcard)
    if config.solver == "gan":
        from physics.datasets import Experiment
        from physics.pseudodata import load_or_generate

        card = solver_model("gan").model_validate(runcard)
        load_or_generate(Experiment(card.physics), card.data.seed, out / "data", overwrite)
    elif config.solver == "gan_dis":
        from inverse.gan.dis.run import load_or_generate_dis
        from physics.dis.experiment import DISExperiment

        card = solver_model("gan_dis").model_validate(runcard)
        if overwrite:
            (out / "data" / "events.npz").unlink(missing_ok=True)
        load_or_generate_dis(DISExperiment(card.physics), card.data.seed, out / "data" / "events.npz")


def _search(args: argparse.Namespace, argv: list[str], out: Path, rank: list[int | None]) -> int:
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers: must be >= 1, got {args.workers}")
    config, runcard = resolve(args)
    check_run_dir(out, config, runcard, args.resume, args.overwrite)
    if args.evaluator == "mpi":
        if not launched_by_mpi():
            return relaunch_under_mpi("hpo.search", argv, args.workers or 2)
        rank[0] = join_mpi()
    if rank[0] in (None, 0):
        prepare_run_dir(out, config, runcard, args.overwrite)
    workers = world_size() - 1 if rank[0] is not None else args.workers or 1
    leading = rank[0] in (None, 0)
    summary = run_search(config, runcard, out, args.evaluator, workers, args.resume, not args.quiet and leading)
    if summary is not None:
        best = summary.get("best")
        done = f"best loss {best['loss']:.5g} (job {best['job_id']})" if best else "no trial finished"
        print(f"\n{summary['trials']} trials ({summary['failed']} failed); {done}")
        print(f"wrote {out / 'results.csv'}, {out / 'best.yaml'}, summary.json, report.md, objective.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (:mod:`qcdgip.errors`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    out = default_out(args, "search")
    rank: list[int | None] = [None]
    status = run_command(lambda: _search(args, argv, out, rank), lambda: out)
    if status == 2 and rank[0] == 0:
        abort(2)  # the worker ranks wait for the manager inside the evaluator: take them down with it
    return status


if __name__ == "__main__":
    raise SystemExit(main())
