"""Targets of a closure on a surrogate, against the same closure on the exact sampler, as JSON.

Reads two finished closure run directories (``python -m inverse.closure`` or ``python -m inverse.gan.dis``, or a
round of ``python -m inverse.gan.refinement``): one whose GAN drew its events from a surrogate, one from the exact
sampler, on the same data. Prints the surrogate run's largest |pull|, the replicas' median distance to their exact
bootstrap MLEs (posterior sd), the median step time and fit CPU of both, and whether the targets hold::

    python benchmarks/surrogate_targets.py --surrogate runs/refine-dis/round_1 --exact runs/closure-dis --median-max 0.2

Both runs should have been measured alone on the same machine; the step time is the median over the fit's steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["compare", "main"]


def _summary(run: Path) -> dict[str, Any]:
    path = run / "summary.json"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (a finished closure run directory is needed)")
    return json.loads(path.read_text())


def compare(surrogate: Path, exact: Path, median_max: float, pull_max: float, step_ratio_max: float) -> dict[str, Any]:
    """The targets of the surrogate run against the exact one."""
    s, e = _summary(surrogate), _summary(exact)
    if "bootstrap_distance" not in s:
        raise SystemExit(f"{surrogate}: the run has no exact bootstrap MLEs (report.bootstrap_mles)")
    if np.asarray(s["mle"]).tolist() != np.asarray(e["mle"]).tolist():
        raise SystemExit(f"{surrogate} and {exact} fit different data (their exact MLEs differ)")
    pull = float(np.max(np.abs(s["pull"])))
    median = float(s["bootstrap_distance"]["median"])
    steps = (s.get("median_step_s"), e.get("median_step_s"))
    ratio = steps[0] / steps[1] if None not in steps else None
    return {
        "surrogate_run": str(surrogate),
        "exact_run": str(exact),
        "max_abs_pull": pull,
        "median_distance_to_exact_bootstrap_mles": median,
        "exact_sampler_median_distance": e.get("bootstrap_distance", {}).get("median"),
        "median_step_s": {"surrogate": steps[0], "exact": steps[1], "ratio": ratio},
        "fit_cpu_s": {"surrogate": s["timing_s"].get("fit_cpu"), "exact": e["timing_s"].get("fit_cpu")},
        "targets": {
            f"max_abs_pull_below_{pull_max:g}": pull < pull_max,
            f"median_distance_le_{median_max:g}": median <= median_max,
            f"step_ratio_le_{step_ratio_max:g}": ratio is not None and ratio <= step_ratio_max,
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Print the comparison as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--surrogate", type=Path, required=True, help="closure run directory with a surrogate sampler")
    p.add_argument("--exact", type=Path, required=True, help="closure run directory with the exact sampler")
    p.add_argument("--median-max", type=float, default=0.15, help="target: median distance at most this")
    p.add_argument("--pull-max", type=float, default=1.0, help="target: every |pull| below this")
    p.add_argument("--step-ratio-max", type=float, default=1.5, help="target: surrogate step / exact step")
    args = p.parse_args(argv)
    print(json.dumps(compare(args.surrogate, args.exact, args.median_max, args.pull_max, args.step_ratio_max),
                     indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
