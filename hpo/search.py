"""Command line: DeepHyper's centralized Bayesian optimisation of an inverse solver, scored by k-fold losses.

Usage::

    python -m hpo.search --config configs/hpo_gan.yaml --out runs/hpo                       # serial
    python -m hpo.search --config configs/hpo_gan.yaml --out runs/hpo --evaluator process --workers 2
    python -m hpo.search --config configs/hpo_gan.yaml --out runs/hpo --evaluator mpi --workers 4
    mpiexec -n 5 python -m hpo.search --config configs/hpo_gan.yaml --out runs/hpo --evaluator mpi
    srun -n 5 python -m hpo.search ... --evaluator mpi                                        # on a cluster
    python -m hpo.search --config configs/hpo_gan.yaml --out runs/hpo --restart               # after a kill

With ``--evaluator mpi`` rank 0 runs the search (CBO's ask/tell) and every other rank evaluates trials. Started as
a single process, the command re-launches itself under ``mpiexec -n workers+1`` (the ``mpiexec`` next to the
Python interpreter first, i.e. the one of the ``mpich`` wheel). Importing this package never initializes MPI.

The run directory holds ``results.csv`` (DeepHyper's: ``p:<hyperparameter>``, ``objective`` = -loss or
``F_<reason>``, ``m:<metadata>`` with per-fold losses, per-fold mean replica chi2, phi^2, penalties and the
trial's start/end times), ``config.yaml`` (the search runcard as resolved), ``base.yaml`` (the solver runcard the
trials start from), ``best.yaml`` (that runcard with the best trial's hyperparameters: ready for
``python -m inverse.closure --config``, or ``python -m inverse.vaim``), ``objective.png``, ``utilisation.png`` (jobs
submitted and running at once over time), ``summary.json`` (with the worker utilisation, busy time / (workers x
wall)), ``report.md``, ``stopper/`` (with a stopper: the rungs trials reached) and ``data/`` (the events every trial
fits). ``--restart`` continues a killed search: finished trials are read back from results.csv (none is repeated
or lost) and ``search.max_evals`` counts them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hpo.config import SearchConfig, apply_overrides, base_runcard, solver_model
from physics.config import load_yaml, parse_config
from physics.runs import write_json, write_yaml
from surrogates.steps import srun_tasks

__all__ = [
    "EVALUATORS",
    "bind_worker_gpu",
    "build_parser",
    "build_problem",
    "join_mpi",
    "launched_by_mpi",
    "main",
    "plot_utilisation",
    "read_results",
    "relaunch_under_mpi",
    "run_search",
    "worker_threads",
]

EVALUATORS = ("serial", "thread", "process", "mpi")
_CHILD_FLAG = "QCDGIP_HPO_MPI_CHILD"
_OUTPUTS = ("results.csv", "summary.json", "best.yaml", "objective.png", "utilisation.png", "report.md")


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m hpo.search", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="search runcard (YAML)")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--evaluator", choices=EVALUATORS, default="serial", help="how trials run (default: serial)")
    p.add_argument("--workers", type=int, help="parallel trials (mpi: ranks - 1 when launched by mpiexec/srun)")
    p.add_argument("--max-evals", type=int, help="trials in total (overrides search.max_evals)")
    p.add_argument("--timeout", type=int, help="wall seconds of the search (overrides search.timeout)")
    p.add_argument(
        "--time-left",
        type=int,
        metavar="SECONDS",
        help="stop the search within this many seconds (a batch job's remaining time less a margin); "
        "search.timeout still applies when shorter",
    )
    p.add_argument("--restart", action="store_true", help="continue a killed search from its results.csv")
    p.add_argument("--overwrite", action="store_true", help="start over in a directory that holds a search")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def launched_by_mpi() -> bool:
    """Whether this process is one of several MPI ranks (read from the launcher's environment; MPI stays off)."""
    if os.environ.get(_CHILD_FLAG):
        return True
    for key in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE"):
        if int(os.environ.get(key, "1") or 1) > 1:
            return True
    return (srun_tasks() or 1) > 1


def bind_worker_gpu(comm: Any) -> str | None:
    """Give each MPI worker rank one GPU of its node; returns the device it got (None: manager or no GPU).

    Collective over ``comm`` (rank 0 is the manager). The workers of a node are numbered in rank order and take the
    node's visible GPUs (``CUDA_VISIBLE_DEVICES``, which Slurm sets from ``--gpus-per-node``, else every device
    CUDA sees) round-robin; ``CUDA_VISIBLE_DEVICES`` is then narrowed to that one before anything starts CUDA, so
    the trial's one-device training uses it. More workers than GPUs on a node share them (with a warning).
    """
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    ranks = node.allgather(comm.Get_rank())
    node.Free()
    if comm.Get_rank() == 0:
        return None
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        import torch

        visible = [str(i) for i in range(torch.cuda.device_count())]  # counts without starting CUDA
    if not visible:
        return None
    index = sorted(r for r in ranks if r != 0).index(comm.Get_rank())
    if index >= len(visible):
        print(
            f"warning: rank {comm.Get_rank()} is worker {index + 1} on a node with {len(visible)} GPUs: sharing "
            f"GPU {visible[index % len(visible)]}",
            file=sys.stderr,
            flush=True,
        )
    device = visible[index % len(visible)]
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    return device


def join_mpi() -> int:
    """Initialize MPI in a launched rank, check there are workers, bind a worker to its GPU; returns the rank.

    Raises:
        ValueError: a single rank (the manager needs workers).
    """
    from mpi4py import MPI

    if not MPI.Is_initialized():
        MPI.Init_thread()
    if MPI.COMM_WORLD.Get_size() < 2:
        raise ValueError("--evaluator mpi needs at least 2 ranks (1 manager + workers)")
    bind_worker_gpu(MPI.COMM_WORLD)
    return MPI.COMM_WORLD.Get_rank()


def _mpiexec() -> str:
    local = Path(sys.executable).parent / "mpiexec"
    found = str(local) if local.is_file() else shutil.which("mpiexec")
    if not found:
        raise ValueError("--evaluator mpi: no mpiexec found (install the mpich wheel or load an MPI module)")
    return found


def resolve(args: argparse.Namespace) -> tuple[SearchConfig, dict[str, Any]]:
    """The search config (command-line budget applied) and the solver's resolved base runcard."""
    if not args.config.is_file():
        raise ValueError(f"--config: {args.config} does not exist")
    raw = load_yaml(args.config)
    config = parse_config(SearchConfig, raw, str(args.config))
    budget = {}
    if args.max_evals is not None:
        budget["max_evals"] = args.max_evals
    if args.timeout is not None:
        budget["timeout"] = args.timeout
    if args.time_left is not None:
        if args.time_left < 1:
            raise ValueError(f"--time-left: must be >= 1 second, got {args.time_left}")
        current = budget.get("timeout", config.search.timeout)
        budget["timeout"] = args.time_left if current is None else min(current, args.time_left)
    if budget:
        data = config.model_dump()
        data["search"].update(budget)
        config = parse_config(SearchConfig, data, "command line")
    return config, base_runcard(config, args.config.parent)


def check_run_dir(out: Path, config: SearchConfig, runcard: dict[str, Any], restart: bool, overwrite: bool) -> None:
    """Refuse to mix searches: an existing one is restarted (same config but the budget) or overwritten."""
    started = (out / "results.csv").is_file()
    if restart and overwrite:
        raise ValueError("--restart and --overwrite exclude each other")
    if restart:
        saved, saved_base = out / "config.yaml", out / "base.yaml"
        if not saved.is_file():
            raise ValueError(f"{out}: no search to restart (config.yaml missing)")
        old = parse_config(SearchConfig, load_yaml(saved), str(saved)).model_dump()
        new = config.model_dump()
        diff = sorted(k for k in old.keys() | new.keys() if k != "search" and old.get(k) != new.get(k))
        if saved_base.is_file() and load_yaml(saved_base) != json.loads(json.dumps(runcard)):
            diff.append("base runcard")
        if diff:
            raise ValueError(f"{saved}: --restart needs the same search; differing sections: {diff}")
    elif started and not overwrite:
        raise ValueError(f"{out}: holds a search already; use --restart to continue it or --overwrite to start over")


def prepare_run_dir(out: Path, config: SearchConfig, runcard: dict[str, Any], overwrite: bool) -> None:
    """Write the resolved configs and the events the trials fit (GAN), clearing an overwritten search first."""
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for name in _OUTPUTS:
            (out / name).unlink(missing_ok=True)
        for old in out.glob("results_*.csv"):
            old.unlink()
        shutil.rmtree(out / "stopper", ignore_errors=True)
    write_yaml(out / "config.yaml", config.model_dump(mode="json"))
    write_yaml(out / "base.yaml", runcard)
    if config.solver == "gan":
        from physics.datasets import Experiment
        from physics.reference import load_or_generate

        card = solver_model("gan").model_validate(runcard)
        load_or_generate(Experiment(card.physics), card.data.seed, out / "data", overwrite)


def build_problem(config: SearchConfig) -> Any:
    """DeepHyper's ``HpProblem`` of the search space, conditions included."""
    import ConfigSpace as cs  # noqa: N813 (ConfigSpace's own convention)
    from deephyper.hpo import HpProblem

    problem = HpProblem()
    hps = {}
    for name, dim in config.space.items():
        default = dim.default
        if dim.values is not None:
            hps[name] = problem.add_hyperparameter(list(dim.values), name, default_value=default)
        else:
            kind = int if dim.is_integer else float
            bounds = (kind(dim.low), kind(dim.high), "log-uniform" if dim.log else "uniform")
            hps[name] = problem.add_hyperparameter(bounds, name, default_value=default)
    for name, dim in config.space.items():
        for parent, value in (dim.when or {}).items():
            if isinstance(value, list):
                problem.add_condition(cs.InCondition(hps[name], hps[parent], value))
            else:
                problem.add_condition(cs.EqualsCondition(hps[name], hps[parent], value))
    return problem


def _base_point(config: SearchConfig, runcard: dict[str, Any]) -> dict[str, Any] | None:
    """The base runcard's own values as a point of the space (None if one lies outside it)."""
    point = {}
    for name, dim in config.space.items():
        node: Any = runcard
        for key in name.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if dim.when:
            active = all(point.get(p) in (v if isinstance(v, list) else [v]) for p, v in dim.when.items() if p in point)
            if not active:
                continue
        if dim.values is not None:
            if node not in dim.values:
                return None
        elif node is None or not (dim.low <= node <= dim.high):
            return None
        point[name] = int(node) if dim.is_integer else node
    return point


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


def worker_threads(workers: int, configured: int = 0) -> int:
    """Torch threads of one trial: ``configured`` if set, srun's ``-c`` under srun, else this node's cores / workers."""
    if configured:
        return configured
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit() and srun_tasks() is not None:
        return int(os.environ["SLURM_CPUS_PER_TASK"])  # srun -c: this rank's cores
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def run_search(
    config: SearchConfig,
    runcard: dict[str, Any],
    out: Path,
    evaluator: str = "serial",
    workers: int = 1,
    restart: bool = False,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Run (or continue) the search; returns the summary on the managing process, None on MPI workers."""
    from deephyper.evaluator import Evaluator
    from deephyper.evaluator.callback import TqdmCallback
    from deephyper.hpo import CBO

    from hpo.trial import run_trial, run_trial_async

    s = config.search
    if evaluator == "serial":
        workers = 1
    kwargs = {
        "search": config.model_dump(mode="json"),
        "runcard": runcard,
        "run_dir": str(out.resolve()),
        "threads": worker_threads(workers, config.search.torch_threads),
    }
    callbacks = [TqdmCallback("trials")] if progress else []
    stopper = None
    if config.stopper.kind != "none":
        from hpo.stopping import LedgerStorage, build_stopper
        from hpo.trial import max_budget

        stopper = build_stopper(config.stopper, max_budget(config, runcard))
    if evaluator == "mpi":
        from deephyper.evaluator.storage import MemoryStorage

        # MPIWinStorage (DeepHyper's default for MPI) fails under MPICH; rank 0 keeps the jobs in memory instead.
        method_kwargs = {"storage": MemoryStorage(), "run_function_kwargs": kwargs, "callbacks": callbacks}
        method = "mpicomm"
    else:
        method = {"serial": "serial", "thread": "thread", "process": "process"}[evaluator]
        method_kwargs = {"num_workers": workers, "run_function_kwargs": kwargs, "callbacks": callbacks}
    if stopper is not None:
        # The stoppers compare trials through the storage: it must reach every worker (hpo.stopping).
        method_kwargs["storage"] = LedgerStorage(out / "stopper")
    function = run_trial_async if evaluator == "serial" else run_trial
    with Evaluator.create(function, method=method, method_kwargs=method_kwargs) as ev:
        if evaluator == "mpi" and not ev.is_master:
            return None
        n_workers = ev.num_workers
        done = len(read_results(out)) if restart and (out / "results.csv").is_file() else 0
        remaining = s.max_evals - done
        base = _base_point(config, runcard) if s.include_base and not done else None
        search = CBO(
            build_problem(config),
            # A restart draws its random points from another stream: the same seed would propose the first
            # search's initial points again.
            random_state=s.seed + done,
            log_dir=str(out),
            verbose=0,
            checkpoint_restart=bool(done),
            surrogate_model=s.surrogate,
            acq_func_kwargs={"kappa": s.kappa},
            acq_optimizer=s.acq_optimizer,
            n_initial_points=s.n_initial_points,
            initial_points=[base] if base else None,
            stopper=stopper,
        )
        start = time.time()
        if remaining > 0:
            # With max_evals_strict, DeepHyper's cap on submitted jobs is set before results.csv is reloaded, so
            # it counts the reloaded trials: the total, not the remainder, is what to pass.
            search.search(ev, max_evals=s.max_evals, timeout=s.timeout, max_evals_strict=True)
        wall = time.time() - start
    return finalize(out, config, runcard, n_workers, start, wall)


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
            f"{'inverse.closure' if config.solver == 'gan' else 'inverse.vaim'} --config {out / 'best.yaml'} ...\n"
        )
        import yaml

        tmp = out / "best.yaml.tmp"
        tmp.write_text(header + yaml.safe_dump(card, sort_keys=False))
        os.replace(tmp, out / "best.yaml")
        summary["best"] = {"job_id": int(best["job_id"]), "loss": float(best["loss"]), "parameters": params}
    write_json(out / "summary.json", summary)
    _plot(df, out / "objective.png", config)
    (out / "report.md").write_text(_report(summary, df, config))
    return summary


def pd_num(df: Any, column: str) -> Any:
    """A column as floats (missing or empty cells NaN)."""
    import pandas as pd

    return pd.to_numeric(df[column], errors="coerce")


def _plot(df: Any, path: Path, config: SearchConfig) -> None:
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


def relaunch_under_mpi(module: str, argv: list[str], workers: int) -> int:
    """Run ``python -m module argv`` under ``mpiexec -n workers+1``; returns its exit status."""
    cmd = [_mpiexec(), "-n", str(workers + 1), sys.executable, "-m", module, *argv]
    env = dict(os.environ, **{_CHILD_FLAG: "1"})
    print(f"== launching {workers} MPI workers + 1 manager: {' '.join(cmd)}", flush=True)
    return subprocess.call(cmd, env=env)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2: bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    mpi_rank = None
    try:
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers: must be >= 1, got {args.workers}")
        config, runcard = resolve(args)
        check_run_dir(args.out, config, runcard, args.restart, args.overwrite)
        if args.evaluator == "mpi":
            if not launched_by_mpi():
                return relaunch_under_mpi("hpo.search", argv, args.workers or 2)
            mpi_rank = join_mpi()
        if mpi_rank in (None, 0):
            prepare_run_dir(args.out, config, runcard, args.overwrite)
        workers = args.workers or 1
        if mpi_rank is not None:
            from mpi4py import MPI

            workers = MPI.COMM_WORLD.Get_size() - 1
        summary = run_search(
            config,
            runcard,
            args.out,
            args.evaluator,
            workers,
            restart=args.restart,
            progress=not args.quiet and mpi_rank in (None, 0),
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        if mpi_rank == 0:
            # The worker ranks wait for the manager inside the evaluator: take them down with it.
            from mpi4py import MPI

            MPI.COMM_WORLD.Abort(2)
        return 2
    if summary is not None:
        best = summary.get("best")
        print(
            f"\n{summary['trials']} trials ({summary['failed']} failed); "
            + (f"best loss {best['loss']:.5g} (job {best['job_id']})" if best else "no trial finished")
        )
        print(f"wrote {args.out / 'results.csv'}, {args.out / 'best.yaml'}, summary.json, report.md, objective.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
