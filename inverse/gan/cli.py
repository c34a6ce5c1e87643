"""Command line: closure test of the GAN inverse solver against the exact MCMC posterior (the suite's main job).

Usage::

    python -m inverse.closure --config configs/closure_gan.yaml --out runs/closure
    python -m inverse.closure --config configs/closure_gan.yaml --truth 1.5,-0.3,2.5,0.8,-0.6,3 --out runs/t2
    python -m inverse.closure --config configs/closure_gan.yaml --out runs/closure --resume
    python -m inverse.closure --config configs/closure_gan.yaml --out runs/closure --resume --coverage 50
    python -m inverse.closure --config configs/closure_gan.yaml --set gan.training.steps=500 --set physics.case=C
    python -m inverse.closure --sampler flow:runs/surrogate-flow/model.pt --out runs/closure-flow
    srun -n 4 python -m inverse.closure --config C --out D --devices 4   # data-parallel (slurm/train.sh)

``python -m inverse.gan`` is the same command. What a run does and writes: :mod:`inverse.gan.run`.
"""

from __future__ import annotations

import argparse
from typing import Any

from inverse.gan.config import ClosureConfig
from inverse.gan.run import run_closure
from qcdgip import runtime
from qcdgip.cli import (
    command_parser,
    default_out,
    joined_values,
    resolve_runcard,
    run_command,
    shortcut_values,
    truth_values,
)

__all__ = ["SHORTCUTS", "build_parser", "main", "resolve_config"]

SHORTCUTS = {
    "case": "physics.case",
    "seed": "data.seed",
    "replicas": "gan.training.replicas",
    "steps": "gan.training.steps",
    "devices": "gan.training.devices",
    "num_nodes": "gan.training.num_nodes",
    "coverage": "report.coverage",
    "calibration": "report.calibration",
    "threads": "gan.training.threads",
}
"""Shortcut options and the runcard fields they set."""


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = command_parser(
        "python -m inverse.closure",
        "Closure test of the GAN inverse solver against the exact MCMC posterior.",
        resume_help="continue an interrupted run from its last checkpoint (or add --coverage to a finished one)",
    )
    p.add_argument("--case", help="event-count case (A, B, C, ...): physics.case")
    p.add_argument("--seed", type=int, help="pseudo-data seed: data.seed")
    p.add_argument("--truth", help="comma-separated true parameters (inside the prior box)")
    p.add_argument("--replicas", type=int, help="number of replicas R: gan.training.replicas")
    p.add_argument("--steps", type=int, help="training steps: gan.training.steps")
    p.add_argument("--devices", type=int, help="data-parallel processes per node: gan.training.devices")
    p.add_argument("--num-nodes", type=int, help="nodes of the data-parallel training: gan.training.num_nodes")
    p.add_argument(
        "--sampler",
        metavar="KIND[:PATH]",
        help="event sampler: exact, mcmc, or flow|gan|vae:PATH to a surrogate model.pt (gan.sampler)",
    )
    p.add_argument(
        "--detector",
        choices=["on", "off"],
        help="on: events pass the detector (the runcard's detector block or its defaults); off: a perfect detector",
    )
    p.add_argument(
        "--coverage", type=int, metavar="K", help="also refit K pseudo-data sets at the truth: report.coverage"
    )
    p.add_argument(
        "--calibration",
        type=int,
        metavar="K",
        help="also fit K pseudo-data sets with truths from the prior (SBC, TARP): report.calibration",
    )
    return p


def _special(args: argparse.Namespace, base: ClosureConfig) -> dict[str, Any]:
    """The dotted-path values of ``--sampler``, ``--detector`` and ``--truth``."""
    values: dict[str, Any] = {}
    if args.sampler is not None:
        kind, _, path = args.sampler.partition(":")
        values["gan.sampler.kind"], values["gan.sampler.path"] = kind, path or None
    if args.detector == "off":
        values["physics.detector"] = None
    elif args.detector == "on" and base.physics.detector is None:
        values["physics.detector"] = {}
    if args.truth is not None:
        values.update(truth_values(args.truth, base.physics.parameter_names))
    return values


def resolve_config(args: argparse.Namespace) -> ClosureConfig:
    """The runcard with the shortcut options and ``--set`` applied, validated."""
    plain = resolve_runcard(ClosureConfig, argparse.Namespace(config=args.config, set=[]))
    shortcuts = {**shortcut_values(args, SHORTCUTS), **_special(args, plain)}
    return resolve_runcard(ClosureConfig, args, shortcuts)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (:mod:`qcdgip.errors`)."""
    args = build_parser().parse_args(joined_values(argv))
    out = default_out(args, "closure")

    def body() -> None:
        config = resolve_config(args)
        runtime.configure_threads(config.gan.training.threads or None, processes=config.gan.training.devices)
        run_closure(config, out, args.resume, args.overwrite, plots=not args.no_plots, progress=not args.quiet)

    return run_command(body, lambda: out)


if __name__ == "__main__":
    raise SystemExit(main())
