"""Command line of VAIM: simulate pairs, train, draw every solution of the observations, judge them.

Usage::

    python -m inverse.vaim --config configs/vaim_x2.yaml --out runs/vaim-x2
    python -m inverse.vaim --config configs/vaim_pdf_shapes.yaml --out runs/vaim-pdf-shapes --resume
    python -m inverse.vaim --config configs/vaim_x2.yaml --set training.steps=2000 --set sampling.n_draws=8000
    python -m inverse.vaim --compare runs/vaim-pdf-shapes runs/vaim-pdf-counts --out docs/vaim_pdf.png

What a run does and writes: :mod:`inverse.vaim.run`. ``--compare`` overlays the draws of finished runs in one
corner plot (``--out`` is then the PNG file).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inverse.vaim.config import VAIMConfig
from inverse.vaim.run import run_vaim
from qcdgip import runtime
from qcdgip.cli import command_parser, default_out, resolve_runcard, run_command, shortcut_values

__all__ = ["SHORTCUTS", "build_parser", "main"]

SHORTCUTS = {"steps": "training.steps", "threads": "training.threads"}
"""Shortcut options and the runcard fields they set."""


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = command_parser(
        "python -m inverse.vaim",
        "VAIM: train on simulated pairs, draw every solution of the observations, judge them.",
        resume_help="continue an interrupted run from its last checkpoint",
    )
    p.add_argument("--steps", type=int, help="training steps: training.steps")
    p.add_argument("--compare", type=Path, nargs="+", metavar="RUN", help="overlay the draws of finished runs")
    p.add_argument("--labels", nargs="+", help="legend labels of --compare runs (default: directory names)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (:mod:`qcdgip.errors`)."""
    args = build_parser().parse_args(argv)
    out = default_out(args, "vaim")

    def body() -> None:
        if args.compare:
            from inverse.vaim.plots import plot_compare

            target = args.out if args.out is not None else Path("runs") / "vaim-compare.png"
            print(f"wrote {plot_compare(args.compare, target, args.labels)}")
            return
        if args.config is None:
            raise ValueError("--config is required (a VAIM runcard names its problem), or --compare RUN ...")
        config = resolve_runcard(VAIMConfig, args, shortcut_values(args, SHORTCUTS))
        runtime.configure_threads(config.training.threads or None)
        run_vaim(config, out, args.resume, args.overwrite, not args.no_plots, not args.quiet)

    return run_command(body, lambda: out)


if __name__ == "__main__":
    raise SystemExit(main())
