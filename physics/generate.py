"""Command line: write a pseudo-data set (Poisson counts, exact events at the true parameters).

Usage::

    python -m physics.generate --config configs/reference.yaml --case B --seed 1 --out data/caseB_seed1

The config's ``physics`` section defines the datasets and cases (defaults: the toy of DESIGN.md section 3).
The directory gets one ``<dataset>.npz`` per dataset and ``meta.json`` (see :mod:`physics.pseudodata`).
An existing data set in ``--out`` is never overwritten unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from physics.config import PhysicsConfig, load_config
from physics.datasets import Experiment
from physics.pseudodata import generate_pseudodata, save_events
from physics.runs import format_table

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs)."""
    p = argparse.ArgumentParser(prog="python -m physics.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=None, help="YAML runcard (its 'physics' section); default: the toy")
    p.add_argument("--case", default=None, help="event-count case (A, B, C or one defined in the config)")
    p.add_argument("--seed", type=int, required=True, help="seed of counts and events")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing data set in --out")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        physics = load_config(args.config, PhysicsConfig, section="physics") if args.config else PhysicsConfig()
        experiment = Experiment(physics, case=args.case)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if (args.out / "meta.json").exists() and not args.overwrite:
        print(
            f"error: {args.out} already holds a data set; pass --overwrite or choose another --out",
            file=sys.stderr,
        )
        return 2
    data = generate_pseudodata(experiment, seed=args.seed)
    save_events(data, args.out)
    rows = [
        (d.name, d.observable, f"[{d.spec.x_min}, {d.spec.x_max}]", d.expected, n)
        for d, n in zip(experiment.datasets, data.counts)
    ]
    print(f"case {experiment.case}, seed {args.seed} -> {args.out}")
    print(format_table(["dataset", "observable", "range", "expected", "observed"], rows, ".1f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
