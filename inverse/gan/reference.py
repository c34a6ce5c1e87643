"""The statistical reference a GAN closure is judged against, cached in the run directory.

Three things, each computed once and kept in ``reference.npz`` under a key of what it depends on:

1. the maximum-likelihood estimate of the data (:func:`physics.likelihood.fit_mle`);
2. the MCMC reference posterior (:func:`physics.posterior.sample_posterior`);
3. the exact MLE of every replica's bootstrap weights (:func:`physics.bootstrap.fit_bootstrap_mles`, batched over
   replicas): the value each GAN replica should reach. A bootstrap estimates the MLE and its spread, not the
   posterior mean, so each replica is judged against its own bootstrap MLE.

A rerun with the same physics, data and posterior settings reuses 1 and 2; the bootstrap MLEs are redone only when
the replicas (their number, seed or weighting) change.
"""

from __future__ import annotations

import json
import time
from logging import Logger
from pathlib import Path

import numpy as np

from inverse.gan.config import ClosureConfig
from physics.bootstrap import fit_bootstrap_mles
from physics.datasets import Experiment
from physics.likelihood import ExtendedLikelihood, fit_mle
from physics.posterior import sample_posterior
from physics.pseudodata import EventData, poisson_replica_weights
from qcdgip.runs import to_jsonable

__all__ = ["closure_reference"]


def _keys(config: ClosureConfig) -> tuple[str, str]:
    """(key of the MLE and posterior, key of the bootstrap MLEs)."""
    t = config.gan.training
    key = json.dumps(
        to_jsonable(
            {
                "physics": config.physics.model_dump(),
                "data": config.data.model_dump(),
                "posterior": config.posterior.model_dump(),
            }
        ),
        sort_keys=True,
    )
    boot_key = json.dumps(
        {"replicas": t.replicas, "seed": t.seed, "bootstrap": t.bootstrap, "on": config.report.bootstrap_mles}
    )
    return key, boot_key


def _read_cache(path: Path, key: str, log: Logger) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path) as f:
        if str(f["key"]) != key:
            return {}
        log.info("reference posterior reused from %s", path)
        return {k: f[k] for k in f.files}


def closure_reference(
    config: ClosureConfig, experiment: Experiment, data: EventData, out: Path, progress: bool, log: Logger
) -> dict[str, np.ndarray]:
    """MLE, MCMC posterior and bootstrap MLEs of ``data``, from ``out/reference.npz`` when it holds them.

    Args:
        config: the closure runcard (physics, data, posterior; the replicas of ``gan.training``; ``report``).
        experiment: the experiment of ``config.physics``.
        data: the events.
        out: the run directory.
        progress: show progress bars.
        log: the run's logger.

    Returns:
        ``mle`` [D], ``posterior`` [S, D], ``rhat``, ``ess`` [D], and ``bootstrap_mles`` [R, D] when
        ``report.bootstrap_mles``; ``seconds`` holds the time of each part computed in this call.
    """
    t = config.gan.training
    key, boot_key = _keys(config)
    path = out / "reference.npz"
    cached = _read_cache(path, key, log)
    seconds: dict[str, float] = {}
    if not cached:
        start = time.perf_counter()
        likelihood = ExtendedLikelihood(experiment, data)
        mle = fit_mle(likelihood, seed=config.posterior.seed)
        seconds["mle"] = time.perf_counter() - start
        post = sample_posterior(likelihood, config.posterior, progress=progress, mle=mle)
        seconds["posterior"] = post.seconds
        log.info("posterior: %.1f s, max R-hat %.4f, min ESS %.0f", post.seconds, post.rhat.max(), post.ess.min())
        cached = {"key": np.array(key), "mle": mle.theta, "posterior": post.flat, "rhat": post.rhat, "ess": post.ess}
    if str(cached.get("boot_key", "")) != boot_key:
        cached.pop("bootstrap_mles", None)
        start = time.perf_counter()
        if config.report.bootstrap_mles and not t.bootstrap:
            cached["bootstrap_mles"] = np.tile(cached["mle"], (t.replicas, 1))  # every replica fits the data
        elif config.report.bootstrap_mles:
            weights = poisson_replica_weights(data.counts, t.replicas, seed=t.seed)
            cached["bootstrap_mles"] = fit_bootstrap_mles(
                experiment, data, weights, start=cached["mle"], progress=progress
            )
        seconds["bootstrap_mles"] = time.perf_counter() - start
        cached["boot_key"] = np.array(boot_key)
    np.savez(path, **cached)
    return {**cached, "seconds": seconds}
