"""Command line of the DIS closure.

Usage::

    python -m inverse.gan.dis --config configs/closure_dis.yaml --out runs/closure-dis
    python -m inverse.gan.dis --config configs/closure_dis.yaml --truth -0.3,3.0,0.1,-1.1,-0.8
    python -m inverse.gan.dis --config configs/closure_dis.yaml --set physics.case=A --set gan.training.replicas=50
    python -m inverse.gan.dis --config configs/closure_dis_detector.yaml   # reconstructed events (a detector)
    python -m inverse.gan.dis --sampler flow:runs/surrogate-dis_flow/model.pt --out runs/closure-dis-flow

What a run does and writes: :mod:`inverse.gan.dis.run`.
"""

from __future__ import annotations

import argparse

from inverse.gan.dis.config import DISClosureConfig
from inverse.gan.dis.run import run_dis_closure
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

__all__ = ["SHORTCUTS", "build_parser", "main"]

SHORTCUTS = {
    "case": "physics.case",
    "seed": "data.seed",
    "replicas": "gan.training.replicas",
    "steps": "gan.training.steps",
    "threads": "gan.training.threads",
}
"""Shortcut options and the runcard fields they set."""


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = command_parser("python -m inverse.gan.dis", "GAN closure test on inclusive DIS (x, Q^2) events.")
    p.add_argument("--case", help="event-count case (A 10^5, B 10^4, C 10^3 events): physics.case")
    p.add_argument("--seed", type=int, help="pseudo-data seed: data.seed")
    p.add_argument("--truth", help="comma-separated true parameters (inside the prior box)")
    p.add_argument("--replicas", type=int, help="number of replicas R: gan.training.replicas")
    p.add_argument("--steps", type=int, help="training steps: gan.training.steps")
    p.add_argument(
        "--detector", choices=("on", "off"), help="on: events pass the runcard's detector (or the defaults); off: none"
    )
    p.add_argument(
        "--sampler",
        metavar="KIND[:PATH]",
        help="event sampler: exact, mcmc, or flow:PATH to a DIS flow's model.pt (gan.sampler)",
    )
    return p


def resolve_config(args: argparse.Namespace) -> DISClosureConfig:
    """The runcard with the shortcut options, ``--truth`` and ``--set`` applied, validated."""
    shortcuts = shortcut_values(args, SHORTCUTS)
    if args.detector is not None:
        plain = resolve_runcard(DISClosureConfig, argparse.Namespace(config=args.config, set=[]))
        keep = plain.physics.detector.model_dump() if plain.physics.detector is not None else {}
        shortcuts["physics.detector"] = keep if args.detector == "on" else None
    if args.truth is not None:
        plain = resolve_runcard(DISClosureConfig, argparse.Namespace(config=args.config, set=[]))
        shortcuts.update(truth_values(args.truth, plain.physics.parameter_names))
    if args.sampler is not None:
        kind, _, path = args.sampler.partition(":")
        shortcuts["gan.sampler.kind"], shortcuts["gan.sampler.path"] = kind, path or None
    return resolve_runcard(DISClosureConfig, args, shortcuts)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (:mod:`qcdgip.errors`)."""
    args = build_parser().parse_args(joined_values(argv))
    out = default_out(args, "closure-dis")

    def body() -> None:
        config = resolve_config(args)
        runtime.configure_threads(config.gan.training.threads or None)
        run_dis_closure(config, out, args.resume, args.overwrite, plots=not args.no_plots, progress=not args.quiet)

    return run_command(body, lambda: out)


if __name__ == "__main__":
    raise SystemExit(main())
