"""Frequentist coverage of the replicas' intervals: refit K pseudo-data sets drawn at the same truth.

For data seeds ``data.seed + 1, ..., data.seed + K`` the GAN fits R bootstrap replicas; the truth should lie in
the replicas' central 68 % (95 %) interval, the 16-84 % (2.5-97.5 %) quantiles per parameter, for 68 % (95 %) of
the data sets. Each finished data set is appended to ``coverage/results.jsonl`` at once, so an interrupted study
resumes where it stopped (rows of another configuration stay in the file, skipped).

With K data sets and D parameters the pooled fraction has a binomial sd of about sqrt(p (1 - p) / (K D)) if the
parameters were independent; they are not (the estimates are correlated), so the per-parameter fractions, each
with sd sqrt(p (1 - p) / K), are the honest reading.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tqdm.auto import tqdm

from inverse.gan.config import ClosureConfig
from inverse.gan.model import InverseGAN
from inverse.gan.training import fit_gan
from physics.datasets import Experiment
from physics.pseudodata import generate_pseudodata
from qcdgip.runs import append_row, resumable_rows, to_jsonable

__all__ = ["LEVELS", "plot_coverage", "run_coverage", "summarize_coverage"]

LEVELS: dict[str, tuple[float, float]] = {"68": (0.16, 0.84), "95": (0.025, 0.975)}
"""Central interval of each level: its lower and upper quantile."""


def _key(config: ClosureConfig) -> str:
    """What a coverage row depends on: the forward model, the truth and the GAN (not the report settings)."""
    payload = {"physics": config.physics.model_dump(), "gan": config.gan.model_dump()}
    for key in ("progress", "devices", "num_nodes", "strategy", "threads"):  # none of them changes a fit
        payload["gan"]["training"].pop(key, None)
    text = json.dumps(to_jsonable(payload), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fit_one(config: ClosureConfig, experiment: Experiment, seed: int) -> dict[str, Any]:
    start, cpu = time.perf_counter(), time.process_time()
    data = generate_pseudodata(experiment, seed=seed)
    # The refits run in the leading process only (the data-parallel ranks have finished with the main fit).
    one = config.gan.training.model_copy(update={"devices": 1, "num_nodes": 1, "strategy": "auto"})
    model = InverseGAN(config.gan.model_copy(update={"training": one}), experiment, data)
    fit_gan(model, progress=False)
    est = model.cpu().double().estimates().numpy()
    truth = np.asarray(experiment.theory.truth)
    row: dict[str, Any] = {
        "seed": seed,
        "mean": est.mean(0),
        "std": est.std(0, ddof=1) if len(est) > 1 else np.zeros(len(truth)),
        "fit_s": time.perf_counter() - start,
        "fit_cpu_s": time.process_time() - cpu,
    }
    for level, (qlo, qhi) in LEVELS.items():
        lo, hi = np.quantile(est, [qlo, qhi], axis=0)
        row[f"in{level}"] = ((truth >= lo) & (truth <= hi)).tolist()
    return row


def run_coverage(
    config: ClosureConfig,
    experiment: Experiment,
    directory: Path,
    n_sets: int,
    progress: bool = True,
    targets: dict[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Fit ``n_sets`` pseudo-data sets (resuming from ``directory/results.jsonl``) and summarize the coverage.

    Args:
        config: the closure runcard (its truth, case and GAN).
        experiment: the experiment built from ``config.physics``.
        directory: where ``results.jsonl`` and ``coverage.png`` go.
        n_sets: K, the number of pseudo-data sets.
        progress: show a progress bar over data sets.
        targets: acceptance band of the pooled fraction per level (default: ``report.targets`` of the config).

    Returns:
        The summary (:func:`summarize_coverage`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "results.jsonl"
    key = _key(config)
    rows = resumable_rows(path, key, "seed")
    seeds = [config.data.seed + 1 + k for k in range(n_sets)]
    todo = [s for s in seeds if s not in rows]
    with path.open("a") as fh:
        for seed in tqdm(todo, desc="coverage data sets", disable=not progress, initial=n_sets - len(todo)):
            row = {"key": key, **to_jsonable(_fit_one(config, experiment, seed))}
            append_row(fh, row)
            rows[seed] = row
    if targets is None:
        t = config.report.targets
        targets = {"68": t.coverage_68, "95": t.coverage_95}
    summary = summarize_coverage([rows[s] for s in seeds], experiment.theory.parameter_names, targets)
    plot_coverage(summary, directory / "coverage.png")
    return summary


def summarize_coverage(
    rows: list[dict[str, Any]], names: list[str], targets: dict[str, tuple[float, float]]
) -> dict[str, Any]:
    """Coverage fractions per parameter and pooled, with binomial sds and the target bands.

    Args:
        rows: one per data set, with boolean lists ``in68`` and ``in95`` (one entry per parameter) and ``fit_s``.
        names: parameter names.
        targets: acceptance band of the pooled fraction per level (``"68"``, ``"95"``).
    """
    n = len(rows)
    out: dict[str, Any] = {"n_sets": n, "params": names, "levels": {}}
    for level in LEVELS:
        hits = np.array([r[f"in{level}"] for r in rows], dtype=float)
        frac = hits.mean(0)
        pooled = float(hits.mean())
        nominal = int(level) / 100
        lo, hi = targets[level]
        out["levels"][level] = {
            "nominal": nominal,
            "per_parameter": frac,
            "per_parameter_sd": np.sqrt(nominal * (1 - nominal) / n),
            "pooled": pooled,
            "target": [lo, hi],
            "pooled_in_target": bool(lo <= pooled <= hi),
        }
    out["fit_s_median"] = float(np.median([r["fit_s"] for r in rows])) if rows else None
    return to_jsonable(out)


def plot_coverage(summary: dict[str, Any], path: Path) -> Path:
    """Per-parameter coverage at 68 % and 95 % with the binomial band around the nominal level."""
    names = summary["params"]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.0 + 1.1 * len(names), 3.4))
    for shift, (level, colour) in zip((-0.15, 0.15), (("68", "tab:blue"), ("95", "tab:red"))):
        s = summary["levels"][level]
        ax.axhspan(
            s["nominal"] - 2 * s["per_parameter_sd"], s["nominal"] + 2 * s["per_parameter_sd"], color=colour, alpha=0.1
        )
        ax.axhline(s["nominal"], color=colour, lw=0.8, ls="--")
        label = f"{level} % interval (pooled {s['pooled']:.2f})"
        ax.plot(x + shift, s["per_parameter"], "o", color=colour, label=label)
    ax.set_xticks(x, names)
    ax.set_ylim(0.3, 1.02)
    ax.set_ylabel("fraction of data sets covering the truth")
    ax.set_title(f"coverage over {summary['n_sets']} pseudo-data sets (bands: nominal +- 2 binomial sd)", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
