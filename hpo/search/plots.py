"""Figures of a search: each trial's loss (``objective.png``) and how busy the workers were (``utilisation.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hpo.config import SearchConfig

__all__ = ["pd_num", "plot_objective", "plot_utilisation"]


def pd_num(df: Any, column: str) -> Any:
    """A column as floats (missing or empty cells NaN)."""
    import pandas as pd

    return pd.to_numeric(df[column], errors="coerce")


def plot_objective(df: Any, path: Path, config: SearchConfig) -> None:
    """Loss per trial, the best so far, stopped and failed trials marked (``objective.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ok = df[df["complete"]]
    ax.plot(ok["job_id"], ok["loss"], "o", ms=4, label="trial loss")
    cut = df[df["stopped"]]
    if len(cut):
        ax.plot(cut["job_id"], cut["loss"], "v", ms=4, color="0.55", label="stopped early (loss at its budget)")
    if len(ok):
        order = df.sort_values("job_id")
        running = order["loss"].where(order["complete"]).cummin()
        ax.step(order["job_id"], running, where="post", color="k", label="best so far")
        top = np.nanmax(df.loc[~df["failed"], "loss"])
        bad = df[df["failed"]]
        if len(bad):
            ax.plot(bad["job_id"], np.full(len(bad), top), "x", color="C3", label="failed (F_*)")
        shown = df.loc[~df["failed"], "loss"]
        if (shown > 0).all() and top / max(np.nanmin(shown), 1e-300) > 30:
            ax.set_yscale("log")
    ax.set_xlabel("evaluation (job id)")
    ax.set_ylabel(f"loss ({config.loss.loss_type})")
    ax.set_title("hyperparameter search: loss per trial")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_utilisation(session: Any, path: Path, workers: int, start: float, utilisation: float) -> Path:
    """Jobs submitted (and gathered) over time, and jobs running at once, of this session's trials.

    ``utilisation`` (busy time / (workers x search wall time), as in summary.json) goes in the title.

    The manager's view comes from DeepHyper's timestamps (``m:timestamp_submit`` / ``m:timestamp_gather``, seconds
    since the evaluator was created, moments before the search started); the workers' view from the trials' own
    start and end (``m:t_start`` / ``m:t_end``). The gap between them is the manager's and the transport's share.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from deephyper.analysis.hpo import plot_worker_utilization

    submit = np.sort(pd_num(session, "m:timestamp_submit").dropna().to_numpy())
    gather = np.sort(pd_num(session, "m:timestamp_gather").dropna().to_numpy())
    t0, t1 = pd_num(session, "m:t_start").to_numpy() - start, pd_num(session, "m:t_end").to_numpy() - start
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    top.step(np.r_[0.0, submit], np.arange(len(submit) + 1), where="post", label="submitted")
    top.step(np.r_[0.0, gather], np.arange(len(gather) + 1), where="post", label="gathered (done)")
    top.set_ylabel("jobs")
    top.set_title(f"search activity: {len(session)} trials this session, {workers} workers")
    top.legend()
    if len(submit) == len(gather) and len(submit):
        plot_worker_utilization(session, profile_type="submit/gather", ax=bottom, label="submitted, not gathered")
    worker_side = pd.DataFrame({"m:timestamp_start": t0, "m:timestamp_end": t1}).dropna()
    plot_worker_utilization(worker_side, profile_type="start/end", ax=bottom, ls="--", label="training (on workers)")
    bottom.axhline(workers, color="k", ls=":", lw=1, label="workers")
    wall = float(max(np.nanmax(t1), gather.max() if len(gather) else 0.0))
    bottom.set_title(f"worker utilisation {utilisation:.2f} (busy / (workers x search wall))", fontsize=9)
    bottom.set_xlabel("seconds since the search started")
    bottom.set_ylabel("jobs running at once")
    bottom.set_xlim(0, wall * 1.02)
    bottom.set_ylim(0, workers + 1)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
