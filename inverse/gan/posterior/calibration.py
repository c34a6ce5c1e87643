"""Calibration over K pseudo-data sets whose truths are drawn from the prior (``--calibration K``).

For data set k a truth theta_k is drawn from the runcard's prior (``gan.posterior.prior``: the uniform box, or the
truncated Gaussian), pseudo-data are generated at it, the GAN is fitted and (with ``gan.posterior.mode:
langevin``) the chains are run. Three checks, for the posterior draws and the bootstrap replicas side by side:

* SBC (Talts et al., arXiv:1804.06788): the rank of theta_k among L draws is uniform over data sets exactly when
  the draws are the posterior; ranks are binned and a chi-square test of uniformity gives a p-value per parameter.
* TARP (Lemos et al., arXiv:2302.03026): with a random reference point per data set, the fraction f_k of draws
  closer to it than theta_k (in box-scaled units); the expected coverage ECP(alpha) = fraction of data sets with
  f_k < alpha lies on the diagonal for a calibrated posterior. ATC is the area between the curve and the diagonal
  over alpha in [0.5, 1] (negative: overconfident, positive: underconfident).
* 68 % / 95 % central-interval coverage per parameter.

Each finished data set is appended to ``calibration/results.jsonl`` at once, so a killed study resumes where it
stopped (rows of another configuration stay in the file, skipped), as the coverage study does.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import chisquare
from tqdm.auto import tqdm

from inverse.gan.config import ClosureConfig
from inverse.gan.model import InverseGAN
from inverse.gan.posterior.coordinates import sampling_coordinates
from inverse.gan.posterior.langevin import LangevinSampler
from inverse.gan.posterior.plots import plot_calibration
from inverse.gan.training import fit_gan
from physics.datasets import Experiment
from physics.pseudodata import generate_pseudodata
from qcdgip import runtime
from qcdgip.errors import NonFiniteLossError
from qcdgip.runs import append_row, resumable_rows, to_jsonable

__all__ = ["draw_truth", "run_calibration", "sample_ranks", "summarize_calibration", "tarp_fraction"]

LEVELS = {"68": (0.16, 0.84), "95": (0.025, 0.975)}
RANK_DRAWS = 99
"""Draws each rank is taken among (ranks 0..99: ten bins of ten)."""


def draw_truth(config: ClosureConfig, k: int) -> np.ndarray:
    """Truth of data set k from the prior: uniform in the box, or the Gaussian truncated to it (by rejection)."""
    post, physics = config.gan.posterior, config.physics
    low, high = np.asarray(physics.low, dtype=float), np.asarray(physics.high, dtype=float)
    rng = np.random.default_rng(np.random.SeedSequence((config.data.seed, 7919, k)))
    if post.prior == "uniform":
        return rng.uniform(low, high)
    for _ in range(100_000):
        theta = rng.normal(post.prior_mean, post.prior_sd)
        if np.all((theta > low) & (theta < high)):
            return theta
    raise ValueError("gan.posterior.prior: the Gaussian puts almost no mass inside the box (prior_mean, prior_sd)")


def sample_ranks(truth: np.ndarray, draws: np.ndarray, rng: np.random.Generator) -> list[int]:
    """Rank of each parameter's truth among ``RANK_DRAWS`` draws picked at random from draws [N, D]."""
    pick = draws[rng.choice(len(draws), RANK_DRAWS, replace=len(draws) < RANK_DRAWS)]
    return (pick < truth).sum(0).astype(int).tolist()


def tarp_fraction(truth: np.ndarray, draws: np.ndarray, reference: np.ndarray, scale: np.ndarray) -> float:
    """Fraction of draws [N, D] closer to ``reference`` than ``truth`` is (distances in units of ``scale``)."""
    d_draws = np.linalg.norm((draws - reference) / scale, axis=-1)
    return float(np.mean(d_draws < np.linalg.norm((truth - reference) / scale)))


def _judge(truth: np.ndarray, draws: np.ndarray, reference: np.ndarray, scale: np.ndarray, seed: int) -> dict:
    out: dict[str, Any] = {
        "rank": sample_ranks(truth, draws, np.random.default_rng(seed)),
        "tarp": tarp_fraction(truth, draws, reference, scale),
    }
    for level, (qlo, qhi) in LEVELS.items():
        lo, hi = np.quantile(draws, [qlo, qhi], axis=0)
        out[f"in{level}"] = ((truth >= lo) & (truth <= hi)).tolist()
    return out


def _key(config: ClosureConfig) -> str:
    """What a row depends on: the forward model (its truth aside), the data seed and the GAN."""
    physics = config.physics.model_dump()
    for p in physics.get("parameters") or []:
        p.pop("truth", None)
    gan = config.gan.model_dump()
    for key in ("progress", "devices", "num_nodes", "strategy", "threads"):
        gan["training"].pop(key, None)
    if gan["posterior"]["coordinates"] == "auto":
        gan["posterior"]["coordinates"] = "norm"  # what auto means for the toy: the same rows either way
    text = json.dumps(to_jsonable({"physics": physics, "seed": config.data.seed, "gan": gan}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fit_one(config: ClosureConfig, k: int) -> dict[str, Any]:
    """Data set k: its truth, fit, chains, ranks, TARP fractions and interval hits."""
    start, cpu = time.perf_counter(), time.process_time()
    truth = draw_truth(config, k)
    params = [p.model_copy(update={"truth": float(t)}) for p, t in zip(config.physics.parameters, truth)]
    experiment = Experiment(config.physics.model_copy(update={"parameters": params}))
    data = generate_pseudodata(experiment, seed=config.data.seed + 1 + k)
    one = config.gan.training.model_copy(update={"devices": 1, "num_nodes": 1, "strategy": "auto", "progress": False})
    model = InverseGAN(config.gan.model_copy(update={"training": one}), experiment, data)
    fit_gan(model, progress=False)
    model = model.cpu().double()
    low, high = np.asarray(experiment.theory.low), np.asarray(experiment.theory.high)
    rng = np.random.default_rng(np.random.SeedSequence((config.data.seed, 104729, k)))
    reference, scale = rng.uniform(low, high), high - low
    row: dict[str, Any] = {"k": k, "truth": truth.tolist()}
    replicas = model.estimates().detach().numpy()
    row["bootstrap"] = _judge(truth, replicas, reference, scale, k)
    if config.gan.posterior.mode == "langevin":
        coords = sampling_coordinates(experiment, config.gan.posterior.coordinates)
        result = LangevinSampler(model, data, coords).run(None, progress=False)
        draws = result.draws.reshape(-1, result.draws.shape[-1])
        row["posterior"] = _judge(truth, draws, reference, scale, k)
    row.update(seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu)
    return row


def _row(config: ClosureConfig, key: str, k: int) -> dict[str, Any]:
    """Data set k's row, or a failed row where its data or fit cannot be had."""
    try:
        return {"key": key, **to_jsonable(_fit_one(config, k))}
    except (ValueError, NonFiniteLossError) as err:
        # A prior draw can leave a dataset without events or make the fit diverge: kept as a failed row (counted
        # in the summary), so the study goes on and a resumed one does not retry it.
        return {"key": key, "k": k, "failed": f"{type(err).__name__}: {err}"}


def _worker_threads(threads: int) -> None:
    runtime.configure_threads(threads)


def _rows(config: ClosureConfig, key: str, todo: list[int], workers: int) -> Iterator[dict[str, Any]]:
    """The rows of ``todo`` as they finish: in this process, or in ``workers`` processes sharing its cores."""
    if workers == 1 or len(todo) <= 1:
        yield from (_row(config, key, k) for k in todo)
        return
    policy = runtime.current_policy()
    total = policy.threads if policy is not None else runtime.process_share()
    threads = max(1, total // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_threads, initargs=(threads,)) as pool:
        futures = [pool.submit(_row, config, key, k) for k in todo]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def run_calibration(config: ClosureConfig, directory: Path, n_sets: int, progress: bool = True) -> dict[str, Any]:
    """Fit ``n_sets`` data sets with prior truths (resuming from ``directory/results.jsonl``) and summarize them.

    With ``report.calibration_workers`` above 1 the data sets are fitted in that many processes at once; this
    process writes each row as it arrives, so a killed study keeps every finished data set.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "results.jsonl"
    key = _key(config)
    rows = resumable_rows(path, key, "k")
    todo = [k for k in range(n_sets) if k not in rows]
    bar = tqdm(total=n_sets, initial=n_sets - len(todo), desc="calibration data sets", disable=not progress)
    with path.open("a") as fh:
        for row in _rows(config, key, todo, config.report.calibration_workers):
            append_row(fh, row)
            rows[row["k"]] = row
            bar.update(1)
    bar.close()
    done = [rows[k] for k in range(n_sets) if "failed" not in rows[k]]
    summary = summarize_calibration(done, config.physics.parameter_names)
    summary["failed"] = {k: rows[k]["failed"] for k in range(n_sets) if "failed" in rows[k]}
    plot_calibration(summary, directory / "calibration.png")
    return summary


def _method(rows: list[dict[str, Any]], names: list[str], bins: int) -> dict[str, Any]:
    ranks = np.array([r["rank"] for r in rows])
    counts = [np.histogram(ranks[:, i], bins=bins, range=(0, RANK_DRAWS + 1))[0] for i in range(len(names))]
    p_values = [float(chisquare(c).pvalue) for c in counts]
    alpha = np.linspace(0.0, 1.0, 51)
    f = np.array([r["tarp"] for r in rows])
    ecp = np.array([np.mean(f < a) for a in alpha])
    upper = alpha >= 0.5
    out: dict[str, Any] = {
        "sbc_counts": [c.tolist() for c in counts],
        "sbc_p_values": p_values,
        "sbc_rejected_at_0.01": [n for n, p in zip(names, p_values) if p < 0.01],
        "tarp_alpha": alpha.tolist(),
        "tarp_ecp": ecp.tolist(),
        "tarp_atc": float(np.trapezoid(ecp[upper] - alpha[upper], alpha[upper])),
        "tarp_max_deviation": float(np.max(np.abs(ecp - alpha))),
    }
    for level in LEVELS:
        hits = np.array([r[f"in{level}"] for r in rows], dtype=float)
        out[f"coverage_{level}"] = hits.mean(0).tolist()
        out[f"coverage_{level}_pooled"] = float(hits.mean())
    return out


def summarize_calibration(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """SBC, TARP and coverage of the posterior draws (if any) and of the bootstrap replicas over ``rows``."""
    n = len(rows)
    bins = 10 if n >= 50 else 5
    out: dict[str, Any] = {"n_sets": n, "params": names, "bins": bins, "rank_draws": RANK_DRAWS}
    for method in ("posterior", "bootstrap"):
        if rows and all(method in r for r in rows):
            out[method] = _method([r[method] for r in rows], names, bins)
    out["seconds_median"] = float(np.median([r["seconds"] for r in rows])) if rows else None
    out["cpu_seconds_median"] = float(np.median([r["cpu_seconds"] for r in rows])) if rows else None
    return to_jsonable(out)
