"""Adaptive, whitened random-walk Metropolis over a box: the MCMC engine of every reference posterior.

A problem supplies its log-likelihood of parameter rows theta [B, D] (numpy in, numpy out), the prior box, a
starting centre and covariance (e.g. the Laplace approximation) and a map to sampling coordinates phi. The
chains run on z with phi = mu + L z, L L^T the covariance in phi; the prior is uniform on the box in theta, so
the target in phi carries log |d theta / d phi|. The warm-up runs in windows: after each, mu and L are
re-estimated from the pooled chains' second halves and the proposal scale moves towards 23.4 % acceptance;
then a fixed kernel gives the kept draws, with split-chain R-hat and the effective sample size summed over
chains per parameter. tensorflow-probability's numpy substrate runs the kernel (no TensorFlow, no JAX).

References:
    Roberts, Gelman and Gilks, "Weak convergence and optimal scaling of random walk Metropolis algorithms",
    Ann. Appl. Probab. 7 (1997) 110 (the 0.234 acceptance and scale 2.38 / sqrt(d)).
    Vehtari, Gelman, Simpson, Carpenter and Bürkner, "Rank-normalization, folding, and localization: an
    improved R-hat", arXiv:1903.08008.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import tensorflow_probability.substrates.numpy as tfp
from scipy.stats import norm
from tqdm.auto import tqdm

from physics.config import PosteriorConfig

__all__ = ["Coordinates", "IdentityCoordinates", "PosteriorResult", "capped_covariance", "run_chains"]

_TARGET_ACCEPT = 0.234
_CHUNK = 100

LogLikelihood = Callable[[np.ndarray], np.ndarray]


class Coordinates(Protocol):
    """Sampling coordinates phi(theta): ``cap`` bounds the initial sd per coordinate."""

    cap: np.ndarray

    def to_phi(self, theta: np.ndarray) -> np.ndarray:
        """The sampling coordinates of parameter rows [..., D]."""
        ...

    def to_theta(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(theta, log |d theta / d phi|) of rows of phi."""
        ...

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        """The Jacobian d phi / d theta at one point, [D, D]."""
        ...


class IdentityCoordinates:
    """phi = theta, with the box's uniform sd as the cap."""

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        self.cap = (np.asarray(high) - np.asarray(low)) / np.sqrt(12.0)

    def to_phi(self, theta: np.ndarray) -> np.ndarray:
        """The parameters themselves."""
        return np.asarray(theta, dtype=np.float64)

    def to_theta(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The coordinates themselves, with a zero log-Jacobian."""
        return phi, np.zeros(phi.shape[:-1])

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        """The identity."""
        return np.eye(len(theta))


@dataclass
class PosteriorResult:
    """Draws of a reference posterior and their diagnostics.

    Attributes:
        names: parameter names.
        samples: draws, [S, C, D] (draw, chain, parameter).
        acceptance: fraction of accepted proposals over the kept draws.
        rhat: split-chain potential scale reduction per parameter.
        ess: effective sample size per parameter, summed over chains.
        seconds: wall time of warm-up plus sampling.
        info: warm-up details (scales, acceptance per window, Laplace centre).
    """

    names: list[str]
    samples: np.ndarray
    acceptance: float
    rhat: np.ndarray
    ess: np.ndarray
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def flat(self) -> np.ndarray:
        """All draws pooled over chains, [S * C, D]."""
        return self.samples.reshape(-1, self.samples.shape[-1])

    @property
    def mean(self) -> np.ndarray:
        """Posterior mean per parameter."""
        return self.flat.mean(0)

    @property
    def std(self) -> np.ndarray:
        """Posterior standard deviation per parameter."""
        return self.flat.std(0, ddof=1)

    def quantiles(self, q: list[float]) -> np.ndarray:
        """Posterior quantiles, [len(q), D]."""
        return np.quantile(self.flat, q, axis=0)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary per parameter (mean, sd, 68/95 % intervals, R-hat, ESS) and run facts."""
        q = self.quantiles([0.025, 0.16, 0.5, 0.84, 0.975])
        keys = ("q025", "q16", "median", "q84", "q975")
        return {
            "kernel": "rwm",
            "n_chains": int(self.samples.shape[1]),
            "n_draws_per_chain": int(self.samples.shape[0]),
            "acceptance": float(self.acceptance),
            "seconds": float(self.seconds),
            "max_rhat": float(np.max(self.rhat)),
            "min_ess": float(np.min(self.ess)),
            "parameters": {
                name: {
                    "mean": float(self.mean[i]),
                    "sd": float(self.std[i]),
                    **{k: float(q[m, i]) for m, k in enumerate(keys)},
                    "rhat": float(self.rhat[i]),
                    "ess": float(self.ess[i]),
                }
                for i, name in enumerate(self.names)
            },
        }


def capped_covariance(cov: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Cap standard deviations at ``cap``, keeping the correlations (stays positive definite)."""
    sd = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    corr = cov / np.outer(sd, sd)
    sd = np.minimum(sd, cap)
    return corr * np.outer(sd, sd) + np.diag((1e-9 * cap) ** 2)


class _WhitenedTarget:
    """log posterior density of z, phi = mu + L z: log L(theta(phi)) + log |d theta/d phi| in the box."""

    def __init__(
        self, log_likelihood: LogLikelihood, coords: Coordinates, mu: np.ndarray, chol: np.ndarray,
        low: np.ndarray, high: np.ndarray,
    ) -> None:  # fmt: skip
        self.log_likelihood = log_likelihood
        self.coords = coords
        self.mu, self.chol = mu, chol
        self.low, self.high = low, high

    def to_theta(self, z: np.ndarray) -> np.ndarray:
        return self.coords.to_theta(self.mu + z @ self.chol.T)[0]

    def to_z(self, theta: np.ndarray) -> np.ndarray:
        return np.linalg.solve(self.chol, (self.coords.to_phi(theta) - self.mu).T).T

    def __call__(self, z: np.ndarray) -> np.ndarray:
        phi = self.mu + np.asarray(z, dtype=np.float64) @ self.chol.T
        flat_phi = phi.reshape(-1, phi.shape[-1])
        flat, log_jac = self.coords.to_theta(flat_phi)
        out = np.full(flat.shape[0], -np.inf)
        inside = np.all((flat >= self.low) & (flat <= self.high), axis=-1) & np.all(np.isfinite(flat), axis=-1)
        if np.any(inside):
            values = self.log_likelihood(flat[inside])
            out[inside] = np.nan_to_num(values, nan=-np.inf) + log_jac[inside]
        return out.reshape(phi.shape[:-1])


def _kernel(target: _WhitenedTarget, scale: float) -> Any:
    return tfp.mcmc.RandomWalkMetropolis(target, new_state_fn=tfp.mcmc.random_walk_normal_fn(scale=scale))


def _run(
    kernel: Any, z: np.ndarray, n_steps: int, thin: int, seeds: np.random.SeedSequence, bar: tqdm
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``n_steps`` kept steps (each ``thin`` transitions) in chunks; return (z draws [S, C, D], accepts)."""
    draws, accepts = [], []
    results = None
    done = 0
    while done < n_steps:
        m = min(_CHUNK, n_steps - done)
        seed = int(seeds.spawn(1)[0].generate_state(1)[0])
        out = tfp.mcmc.sample_chain(
            m,
            z,
            previous_kernel_results=results,
            kernel=kernel,
            num_steps_between_results=thin - 1,
            trace_fn=lambda _, kr: kr.is_accepted,
            return_final_kernel_results=True,
            seed=seed,
        )
        chunk, trace, results = out.all_states, out.trace, out.final_kernel_results
        draws.append(np.asarray(chunk))
        accepts.append(np.asarray(trace))
        z = draws[-1][-1]
        done += m
        bar.update(m * thin)
    return np.concatenate(draws), np.concatenate(accepts)


def _chain_starts(
    centre: np.ndarray, cov: np.ndarray, rng: np.random.Generator, n_chains: int, low: np.ndarray, high: np.ndarray
) -> np.ndarray:
    """One starting point per chain: Laplace draws inside the box (by rejection; the centre after 1000 misses)."""
    chol_theta = np.linalg.cholesky(cov)
    starts = np.empty((n_chains, len(low)))
    for c in range(n_chains):
        for _ in range(1000):
            cand = centre + chol_theta @ rng.standard_normal(len(low))
            if np.all((cand > low) & (cand < high)):
                break
        else:
            cand = centre
        starts[c] = cand
    return starts


@dataclass
class _Warmup:
    """The whitening (mu, chol), the chains' states and the proposal scale as the warm-up windows adapt them."""

    mu: np.ndarray
    chol: np.ndarray
    theta: np.ndarray
    scale: float
    history: list[dict[str, Any]] = field(default_factory=list)


def _adapt(state: _Warmup, make_target: Callable[..., _WhitenedTarget], cap: np.ndarray, steps: int,
           seeds: Any, bar: tqdm) -> None:  # fmt: skip
    """One warm-up window: run, then retune the scale to the target acceptance and re-whiten from the tail."""
    dim = len(state.mu)
    target = make_target(state.mu, state.chol)
    z_draws, acc = _run(_kernel(target, state.scale), target.to_z(state.theta), steps, 1, seeds, bar)
    state.theta = target.to_theta(z_draws[-1])
    rate = float(acc.mean())
    state.history.append({"steps": steps, "scale": float(state.scale), "acceptance": rate})
    ratio = norm.ppf(_TARGET_ACCEPT / 2) / norm.ppf(np.clip(rate, 0.01, 0.99) / 2)
    state.scale *= float(np.clip(ratio, 0.3, 3.0))
    tail = state.mu + z_draws[len(z_draws) // 2 :].reshape(-1, dim) @ state.chol.T
    if len(tail) >= 10 * dim:
        cov_new = np.cov(tail, rowvar=False) + np.diag((1e-9 * cap) ** 2)
        if np.all(np.linalg.eigvalsh(cov_new) > 0):
            state.mu, state.chol = tail.mean(0), np.linalg.cholesky(cov_new)


def run_chains(
    log_likelihood: LogLikelihood,
    bounds: tuple[np.ndarray, np.ndarray],
    names: list[str],
    centre: np.ndarray,
    covariance: np.ndarray,
    config: PosteriorConfig,
    coords: Coordinates | None = None,
    progress: bool = True,
) -> PosteriorResult:
    """Sample the posterior of ``log_likelihood`` with a uniform prior on the box ``bounds``.

    Args:
        log_likelihood: log L of parameter rows [B, D] (numpy float64), [B]; NaN counts as -inf.
        bounds: (low, high) of the prior box.
        names: parameter names.
        centre: whitening centre in theta (inside the box).
        covariance: whitening covariance in theta (capped, positive definite).
        config: chains, warm-up, draws and seed (``config.coordinates`` is the caller's business).
        coords: sampling coordinates (default: theta itself).
        progress: show a progress bar.

    Returns:
        The draws with diagnostics.
    """
    start = time.perf_counter()
    low, high = (np.asarray(b, dtype=np.float64) for b in bounds)
    coords = coords if coords is not None else IdentityCoordinates(low, high)
    seeds = np.random.SeedSequence(config.seed)
    rng = np.random.default_rng(seeds.spawn(1)[0])
    starts = _chain_starts(centre, covariance, rng, config.n_chains, low, high)
    jac = coords.jacobian(centre)
    mu = coords.to_phi(centre[None])[0]
    chol = np.linalg.cholesky(capped_covariance(jac @ covariance @ jac.T, coords.cap))

    def make_target(m: np.ndarray, c: np.ndarray) -> _WhitenedTarget:
        return _WhitenedTarget(log_likelihood, coords, m, c, low, high)

    windows = np.diff(np.linspace(0, config.n_warmup, config.warmup_windows + 1).astype(int))
    total = config.n_warmup + config.n_samples * config.thin
    with tqdm(total=total, desc=f"MCMC ({config.n_chains} chains)", disable=not progress) as bar:
        state = _Warmup(mu=mu, chol=chol, theta=starts, scale=2.38 / np.sqrt(len(low)))
        for n_w in windows:
            if n_w:
                _adapt(state, make_target, coords.cap, int(n_w), seeds, bar)
        target = make_target(state.mu, state.chol)
        z_draws, acc = _run(_kernel(target, state.scale), target.to_z(state.theta), config.n_samples, config.thin,
                            seeds, bar)  # fmt: skip
    samples = target.to_theta(z_draws)
    rhat = np.asarray(tfp.mcmc.potential_scale_reduction(samples, independent_chain_ndims=1, split_chains=True))
    ess = np.asarray(tfp.mcmc.effective_sample_size(samples, cross_chain_dims=1, filter_beyond_positive_pairs=True))
    return PosteriorResult(
        names=list(names),
        samples=samples,
        acceptance=float(acc.mean()),
        rhat=rhat,
        ess=ess,
        seconds=time.perf_counter() - start,
        info={"warmup": state.history, "final_scale": float(state.scale)},
    )
