"""What a search leaves: results.csv read back with flags, and from it best.yaml, summary.json and report.md.

``read_results`` adds a numeric ``loss`` (NaN for failed trials) and the flags ``failed``, ``stopped`` (ended early
by the stopper: its loss is at a smaller budget) and ``complete`` (neither). ``best.yaml`` is the base runcard with
the best complete trial's values, ready for the solver's command.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from hpo.config import SOLVER_COMMANDS, SearchConfig, solver_model
from hpo.search.plots import pd_num, plot_objective, plot_utilisation
from qcdgip.config import apply_overrides
from qcdgip.runs import write_json

__all__ = ["finalize", "read_results"]


def read_results(out: Path) -> Any:
    """results.csv as a DataFrame with a numeric ``loss`` (NaN for failed trials) and three flags.

    ``failed``, ``stopped`` (ended early by the stopper: its loss is at a smaller budget) and ``complete`` (neither).
    """
    import pandas as pd

    path = out / "results.csv"
    if not path.is_file():
        raise ValueError(f"{out}: no results.csv (has the search run?)")
    df = pd.read_csv(path)
    if "objective" not in df.columns:
        raise ValueError(f"{path}: no objective column (not a DeepHyper results file)")
    objective = pd.to_numeric(df["objective"], errors="coerce")
    df["loss"] = -objective
    df["failed"] = objective.isna()
    stopped = pd.to_numeric(df["m:stopped"], errors="coerce").fillna(0) > 0 if "m:stopped" in df else False
    df["stopped"] = stopped & ~df["failed"]
    df["complete"] = ~df["failed"] & ~df["stopped"]
    return df


def finalize(
    out: Path, config: SearchConfig, runcard: dict[str, Any], workers: int, start: float, wall: float
) -> dict[str, Any]:
    """Write best.yaml, objective.png, summary.json and report.md from results.csv."""
    df = read_results(out)
    finished = df[df["complete"]]
    summary: dict[str, Any] = {
        "solver": config.solver,
        "trials": len(df),
        "complete": int(df["complete"].sum()),
        "failed": int(df["failed"].sum()),
        "stopped": int(df["stopped"].sum()),
        "failures": df.loc[df["failed"], "objective"].value_counts().to_dict(),
        "stopper": config.stopper.model_dump(),
        "workers": workers,
        "wall_s": wall,
    }
    session = df[pd_num(df, "m:t_start") >= start - 1] if "m:t_start" in df else df.iloc[:0]
    if len(session) and wall > 0:
        busy = float((pd_num(session, "m:t_end") - pd_num(session, "m:t_start")).sum())
        summary["worker_utilisation"] = busy / (workers * wall)
        summary["this_session"] = {
            "trials": len(session),
            "stopped": int(session["stopped"].sum()),
            "trials_per_minute": 60.0 * len(session) / wall,
            "worker_utilisation": busy / (workers * wall),
            "median_trial_s": float(np.median(pd_num(session, "m:t_end") - pd_num(session, "m:t_start"))),
        }
        plot_utilisation(session, out / "utilisation.png", workers, start, summary["worker_utilisation"])
    if len(finished):
        best = finished.loc[finished["loss"].idxmin()]
        params = {c[2:]: best[c] for c in df.columns if c.startswith("p:")}
        params = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in params.items()}
        params = {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}
        card = apply_overrides(runcard, params)
        solver_model(config.solver).model_validate(card)
        header = (
            f"# Best trial of the search in {out} (job {int(best['job_id'])}, loss {best['loss']:.6g} = "
            f"{config.loss.loss_type}, {config.loss.replica_statistic} over replicas, "
            f"{config.loss.fold_statistic} over folds).\n# Use: python -m "
            f"{SOLVER_COMMANDS[config.solver]} --config {out / 'best.yaml'} ...\n"
        )
        import yaml

        tmp = out / "best.yaml.tmp"
        tmp.write_text(header + yaml.safe_dump(card, sort_keys=False))
        os.replace(tmp, out / "best.yaml")
        summary["best"] = {"job_id": int(best["job_id"]), "loss": float(best["loss"]), "parameters": params}
    write_json(out / "summary.json", summary)
    plot_objective(df, out / "objective.png", config)
    (out / "report.md").write_text(_report(summary, df, config))
    return summary


def _report(summary: dict[str, Any], df: Any, config: SearchConfig) -> str:
    lines = [
        f"# Hyperparameter search ({config.solver})",
        "",
        f"{summary['trials']} trials: {summary['complete']} complete, {summary['stopped']} stopped early by the "
        f"stopper ({config.stopper.kind}), {summary['failed']} failed ({summary['failures'] or 'none'}); "
        f"{summary['workers']} workers. Loss: {config.loss.loss_type}, {config.loss.replica_statistic} over "
        f"replicas, {config.loss.fold_statistic} over folds; {len(config.kfold.partitions or [])} partitions "
        f"given (none: one fold per dataset), {config.kfold.replicas} replicas per fold.",
    ]
    if "this_session" in summary:
        t = summary["this_session"]
        lines.append(
            f"- this session: {t['trials']} trials in {summary['wall_s']:.0f} s, {t['trials_per_minute']:.2f} per "
            f"minute, worker utilisation {t['worker_utilisation']:.2f}, median trial {t['median_trial_s']:.1f} s"
        )
    if "best" in summary:
        b = summary["best"]
        lines += ["", f"## Best trial: job {b['job_id']}, loss {b['loss']:.5g}", ""]
        lines += [f"- `{k}`: {v}" for k, v in b["parameters"].items()]
        lines += ["", "`best.yaml` is the solver runcard with these values."]
    ok = df[df["complete"]].sort_values("loss").head(10)
    if len(ok):
        cols = [c for c in df.columns if c.startswith("p:")]
        lines += ["", "## Ten best trials", "", "| job | loss | " + " | ".join(c[2:] for c in cols) + " |"]
        lines.append("|---" * (len(cols) + 2) + "|")
        for _, row in ok.iterrows():
            vals = [f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in cols]
            lines.append(f"| {int(row['job_id'])} | {row['loss']:.5g} | " + " | ".join(vals) + " |")
    lines += ["", "![objective](objective.png)"]
    if "this_session" in summary:
        lines += ["", "![utilisation](utilisation.png)"]
    return "\n".join(lines) + "\n"
