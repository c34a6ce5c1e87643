"""Wall time of the README's main job (``make closure``) from a warm virtual environment, stage by stage.

Usage::

    python benchmarks/mainjob.py                       # configs/closure_gan.yaml into a fresh temporary directory
    python benchmarks/mainjob.py --out runs/mainjob    # keep the run directory

Runs ``python -m inverse.closure --config configs/closure_gan.yaml --out DIR --quiet`` in a fresh process and
reads the stages from its ``summary.json``: start-up and data (imports, pseudo-data), the reference (maximum
likelihood, MCMC posterior, bootstrap MLEs), the GAN fit, and the report (summary, plots). Prints one JSON object
with the seconds of each stage, the total wall time of the command and ``under_3_minutes``. Measure alone: any
other busy process on the machine slows every stage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/closure_gan.yaml")
    p.add_argument("--out", type=Path, help="run directory (default: a temporary one, removed afterwards)")
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="mainjob-")) / "run"
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "inverse.closure", "--config", args.config, "--out", str(out), "--quiet"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"the main job failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    s = json.loads((out / "summary.json").read_text())
    t = s["timing_s"]
    parts = t.get("reference_parts", {})
    stages = {
        "startup": wall - s["wall_s"],
        "data": t.get("data"),
        "reference": t["reference"],
        "reference_mle": parts.get("mle"),
        "reference_posterior": parts.get("posterior"),
        "reference_bootstrap_mles": parts.get("bootstrap_mles"),
        "gan_fit": t["fit"],
        "gan_fit_cpu": t["fit_cpu"],
        "report_and_plots": t.get("report"),
    }
    print(
        json.dumps(
            {
                "benchmark": "mainjob",
                "command": " ".join(cmd[1:]),
                "cores": len(os.sched_getaffinity(0)),
                "threads": s.get("runtime"),
                "replicas": s["replicas"],
                "steps": s["steps"],
                "median_step_s": t.get("median_step"),
                "stages_s": stages,
                "wall_s": wall,
                "under_3_minutes": wall <= 180,
                "targets_met": s["targets_met"],
            },
            indent=2,
        )
    )
    if args.out is None:
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
