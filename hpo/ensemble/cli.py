"""Command line: an ensemble of the best trials of a search, with the uncertainty split into aleatoric and epistemic.

Usage::

    python -m hpo.ensemble --search runs/hpo --top 5 --out runs/ensemble                 # serial refits
    python -m hpo.ensemble --search runs/hpo --top 5 --out runs/ensemble --evaluator mpi --workers 4
    python -m hpo.ensemble --search runs/hpo --top 5 --out runs/ensemble --replicas 50   # more replicas each
    python -m hpo.ensemble --search runs/hpo --top 5 --out runs/ensemble --resume        # after a kill

The K best complete trials of a finished ``python -m hpo.search`` (lowest loss in its results.csv; failed trials
and trials the stopper ended early are not candidates) are refitted on all data, without folds, each with its own
hyperparameters and R replicas (:mod:`hpo.ensemble.members`). All members share the data, the bootstrap replicas
and the seeds (common random numbers), so member means differ only through their hyperparameters. Their estimates
are combined and the variance split by the law of total variance (:mod:`hpo.ensemble.split`); in a closure the
ensemble is compared with the MCMC reference posterior (:mod:`hpo.ensemble.combine`).

DeepHyper's ``EnsemblePredictor`` and selectors (top-k, greedy) are built for models that predict y from inputs X,
scored on a validation set; a member here is a set of parameter estimates, and the search's own k-fold loss,
already in results.csv, is its validation score, so members are chosen from it directly.

The run directory holds ``ensemble.yaml`` (what was asked), ``members/job-<id>/`` (runcard.yaml, the checkpoint of
a refit in progress, estimates.npy when done), ``ensemble.json``, ``report.md``, ``contributions.png``,
``pdfs.png`` and ``reference.npz`` (the cached posterior). ``--resume`` continues a killed run: finished members are
read back, an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from hpo.ensemble.combine import run_ensemble
from hpo.ensemble.config import EnsembleConfig
from hpo.ensemble.members import member_runcard, run_refits, select_members
from qcdgip.cli import command_parser, resolve_runcard, run_command, shortcut_values
from qcdgip.config import load_yaml
from qcdgip.mpi import abort, join_mpi, launched_by_mpi, relaunch_under_mpi, world_size
from qcdgip.runs import write_yaml

__all__ = ["SHORTCUTS", "build_parser", "main", "prepare"]

OUTPUTS = ("members", "ensemble.yaml", "ensemble.json", "report.md", "contributions.png", "pdfs.png")

SHORTCUTS = {
    "search": "search",
    "top": "top",
    "replicas": "replicas",
    "evaluator": "evaluator",
    "workers": "workers",
    "threads": "threads",
}
"""Shortcut options and the runcard fields they set."""


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = command_parser(
        "python -m hpo.ensemble",
        "Ensemble of a search's best trials, refitted on all data, uncertainty split into aleatoric + epistemic.",
        resume_help="continue a killed ensemble: finished members are read back",
    )
    p.add_argument("--search", type=str, help="run directory of a finished python -m hpo.search: search")
    p.add_argument("--top", type=int, help="K: the best K complete trials become members: top")
    p.add_argument("--replicas", type=int, help="R replicas per member (default: the runcard's): replicas")
    p.add_argument("--evaluator", choices=("serial", "process", "mpi"), help="how refits run (default: serial)")
    p.add_argument("--workers", type=int, help="parallel refits (mpi: ranks - 1 when launched by mpiexec/srun)")
    p.add_argument("--reference", choices=("on", "off"), help="compare with the MCMC posterior (default: on)")
    return p


def resolve(args: argparse.Namespace) -> EnsembleConfig:
    """The ensemble runcard with the shortcut options and ``--set`` applied; ``search`` must be set."""
    shortcuts = shortcut_values(args, SHORTCUTS)
    if args.reference is not None:
        shortcuts["reference"] = args.reference == "on"
    config = resolve_runcard(EnsembleConfig, args, shortcuts)
    if not config.search:
        raise ValueError("--search: the run directory of a finished python -m hpo.search is required")
    return config


def out_dir(args: argparse.Namespace, config: EnsembleConfig) -> Path:
    """``--out``, else ``runs/<search directory name>-ensemble``."""
    return Path(args.out) if args.out is not None else Path("runs") / f"{Path(config.search).name}-ensemble"


def prepare(config: EnsembleConfig) -> list[dict[str, Any]]:
    """Check the search; returns the members, each with the runcard it refits with."""
    _, base, members = select_members(Path(config.search), config.top)
    for m in members:
        m["runcard"] = member_runcard(base, m["parameters"], config.replicas)
    if members[0]["runcard"]["gan"]["training"]["replicas"] < 2:
        raise ValueError("gan.training.replicas of the search's base runcard is 1: give --replicas R >= 2")
    return members


def _write_members(out: Path, config: EnsembleConfig, members: list[dict[str, Any]], resume: bool, overwrite: bool):
    """Guard the directory and write ensemble.yaml and each member's runcard (a different one is refused)."""
    settings = {"search": str(Path(config.search).resolve()), "replicas": config.replicas}
    settings["members"] = [m["job_id"] for m in members]
    saved = out / "ensemble.yaml"
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    if saved.is_file() and not (resume or overwrite):
        raise ValueError(f"{out}: holds an ensemble; use --resume to continue it or --overwrite to start over")
    if saved.is_file() and resume:
        old = load_yaml(saved)
        differ = sorted(k for k in settings if k != "members" and old.get(k) != settings[k])
        if differ:
            raise ValueError(f"{saved}: holds another ensemble (differs in {differ}); use --overwrite or another --out")
    if overwrite:
        for name in OUTPUTS:
            target = out / name
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(saved, settings)
    for m in members:
        card_path = out / "members" / f"job-{m['job_id']}" / "runcard.yaml"
        card_path.parent.mkdir(parents=True, exist_ok=True)
        if card_path.is_file() and load_yaml(card_path) != json.loads(json.dumps(m["runcard"])):
            raise ValueError(f"{card_path}: a different runcard than this member's; use --overwrite")
        write_yaml(card_path, m["runcard"])


def _print(summary: dict[str, Any], out: Path) -> None:
    std = summary["std"]
    print(f"\nensemble of {len(summary['members'])} members x {summary['replicas']} replicas")
    for i, n in enumerate(summary["params"]):
        line = f"  {n:>10}: mean {summary['mean'][i]:.4g}, sd aleatoric {std['aleatoric'][i]:.3g}, "
        line += f"epistemic {std['epistemic'][i]:.3g}, total {std['total'][i]:.3g}"
        if "closure" in summary:
            c = summary["closure"]
            line += f" | pull {c['pull'][i]:+.2f}, std_ratio {c['std_ratio_total'][i]:.2f}"
        print(line)
    print(f"wrote {out / 'ensemble.json'}, report.md, contributions.png, pdfs.png")


def _ensemble(args: argparse.Namespace, argv: list[str], where: list[Path], rank: list[int | None]) -> int:
    config = resolve(args)
    out = out_dir(args, config)
    where.append(out)
    members = prepare(config)
    if config.evaluator == "mpi":
        if not launched_by_mpi():
            return relaunch_under_mpi("hpo.ensemble", argv, config.workers or 2)
        rank[0] = join_mpi()
    if rank[0] in (None, 0):
        _write_members(out, config, members, args.resume, args.overwrite)
    workers = config.workers or 1
    if rank[0] is not None:
        from mpi4py import MPI

        MPI.COMM_WORLD.Barrier()  # the member runcards are on disk before any worker reads one
        workers = world_size() - 1
    progress = not args.quiet
    refits = run_refits(members, out, Path(config.search), config.evaluator, workers, progress, config.threads)
    if refits is None:
        return 0
    summary = run_ensemble(config, out, members, refits, progress)
    if progress:
        _print(summary, out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (:mod:`qcdgip.errors`; 1: fewer than two members refitted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    where: list[Path] = []
    rank: list[int | None] = [None]
    status = run_command(lambda: _ensemble(args, argv, where, rank), lambda: where[0] if where else None)
    if status == 2 and rank[0] == 0:
        abort(2)  # the worker ranks wait for the manager inside the evaluator: take them down with it
    return status


if __name__ == "__main__":
    raise SystemExit(main())
