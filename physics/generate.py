"""Command line: write a pseudo-data set (Poisson counts, exact events at the true parameters).

Usage::

    python -m physics.generate --config configs/reference.yaml --case B --seed 1 --out data/caseB_seed1
    python -m physics.generate --config configs/closure_gan.yaml --set physics.case=C --out data/caseC

The runcard's ``physics`` section (and its top-level ``detector`` block) defines the datasets and cases, its
``data.seed`` the seed; any other section of the file is ignored, so a closure or reference runcard serves. The
directory gets one ``<dataset>.npz`` per dataset and ``meta.json`` (see :mod:`physics.pseudodata`). An existing
data set in ``--out`` is kept with ``--resume`` when it is the same (case, seed, truth, detector), replaced with
``--overwrite``, and refused otherwise.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from physics.config import DataConfig, PhysicsConfig, ReferenceConfig, lift_detector
from physics.datasets import Experiment
from physics.pseudodata import generate_pseudodata, load_or_generate, save_events
from qcdgip.cli import command_parser, run_command, shortcut_values
from qcdgip.config import load_yaml, override_config, parse_assignments, parse_config
from qcdgip.runs import format_table

__all__ = ["SHORTCUTS", "build_parser", "main"]

SHORTCUTS = {"case": "physics.case", "seed": "data.seed"}
"""Shortcut options and the runcard fields they set."""


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (``--no-plots`` and ``--threads`` are accepted and have nothing to change)."""
    p = command_parser(
        "python -m physics.generate",
        "Write a pseudo-data set: Poisson counts and exact events at the true parameters.",
        resume_help="keep a data set already in --out if it is the same one",
    )
    p.add_argument("--case", help="event-count case (A, B, C or one the runcard defines): physics.case")
    p.add_argument("--seed", type=int, help="seed of counts and events: data.seed")
    return p


def resolve(args: argparse.Namespace) -> ReferenceConfig:
    """The physics and data sections of ``--config`` with the shortcuts and ``--set`` applied."""
    raw = lift_detector(load_yaml(args.config)) if args.config else {}
    source = str(args.config) if args.config else "<defaults>"
    sections = {
        "physics": parse_config(PhysicsConfig, raw.get("physics") or {}, f"{source}: physics"),
        "data": parse_config(DataConfig, raw.get("data") or {}, f"{source}: data"),
    }
    config = ReferenceConfig(**sections)
    config = override_config(config, shortcut_values(args, SHORTCUTS), "command line")
    return override_config(config, parse_assignments(args.set), "--set")


def write_data(config: ReferenceConfig, out: Path, resume: bool, overwrite: bool, quiet: bool) -> None:
    """Generate the data set into ``out`` (or keep the same one with ``resume``)."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    experiment = Experiment(config.physics)
    seed = config.data.seed
    if (out / "meta.json").exists() and not (resume or overwrite):
        raise ValueError(
            f"{out}: holds a data set already; --resume keeps it if it is the same, --overwrite replaces it"
        )
    if overwrite and out.exists():
        shutil.rmtree(out)
    if resume:
        data, reused = load_or_generate(experiment, seed, out, overwrite=False)
    else:
        data, reused = generate_pseudodata(experiment, seed=seed), False
        save_events(data, out)
    if quiet:
        return
    rows = [
        (d.name, d.observable, f"[{d.spec.x_min}, {d.spec.x_max}]", d.expected, n)
        for d, n in zip(experiment.datasets, data.counts)
    ]
    print(f"case {experiment.case}, seed {seed} -> {out}" + (" (the same data set was there: kept)" * reused))
    print(format_table(["dataset", "observable", "range", "expected", "observed"], rows, ".1f"))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (:mod:`qcdgip.errors`)."""
    args = build_parser().parse_args(argv)
    where: list[Path] = []

    def body() -> None:
        config = resolve(args)
        # Without --out: runs/data-<case>-seed<seed>, one directory per data set.
        where.append(args.out or Path("runs") / f"data-{config.physics.case}-seed{config.data.seed}")
        write_data(config, where[0], args.resume, args.overwrite, args.quiet)

    return run_command(body, lambda: where[0] if where else None)


if __name__ == "__main__":
    raise SystemExit(main())
