"""MCMC reference posterior of the extended likelihood with a uniform prior box.

Runs tensorflow-probability's random-walk Metropolis kernel through its numpy substrate (no TensorFlow, no JAX);
the likelihood itself is evaluated by torch. The parameters of the toy are correlated up to 0.99 (Nu with au,
Nd with ad), so the chains run in whitened coordinates of a reparameterisation that straightens the worst ridge:

    phi = (log M_f, a_f, b_f) per flavour,   M_f = N_f int_{x_min}^{x_max} x^a_f (1-x)^b_f dx,

i.e. each PDF's normalisation is replaced by its integral over the data range, which the event counts fix
almost independently of the exponents (the reason the demo had to "fit the norms"). The uniform prior on the
box in theta becomes the density |d theta / d phi| = prod_f N_f in phi. Then phi = mu + L z with L L^T = Sigma:

1. mu, Sigma start from the Laplace approximation (maximum-likelihood estimate and inverse observed
   information; the expected information where the observed one is not positive definite, e.g. at the box
   edge) mapped to phi, with standard deviations capped (the box's uniform sd);
2. the warm-up runs in windows; after each, mu and Sigma are re-estimated from the pooled chains and the
   random-walk scale is rescaled towards 23.4 % acceptance, so a posterior bounded by the box (case C) is
   whitened by its own shape, not by a Gaussian that overflows the box;
3. the kept draws come from a fixed kernel; R-hat (split chains) and the effective sample size summed over
   chains are reported per parameter.

Measured with the defaults (16 chains, 1500 warm-up, 4000 draws; 2 CPU cores), minimum ESS over parameters:
case B seeds 1, 2: 3034, 2725 in "norm" coordinates against 462, 314 in "theta"; case C seeds 1, 3: 2152, 1071
against 510, 789. Logit coordinates for the exponents (unbounded, as Stan does) were tried and dropped: they
help little in case C (1278 for seed 3, 1547 for seed 1) and cost a factor 3 in case B (1170, 982), because
the logit stretches the tail towards the box edge the chains then have to cover.

References:
    Roberts, Gelman and Gilks, "Weak convergence and optimal scaling of random walk Metropolis algorithms",
    Ann. Appl. Probab. 7 (1997) 110 (the 0.234 acceptance and scale 2.38 / sqrt(d)).
    Vehtari, Gelman, Simpson, Carpenter and Bürkner, "Rank-normalization, folding, and localization: an
    improved R-hat", arXiv:1903.08008.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow_probability.substrates.numpy as tfp
import torch
from scipy.stats import norm
from tqdm.auto import tqdm

from physics.config import PosteriorConfig
from physics.likelihood import ExtendedLikelihood, MLEResult, fisher_information, fit_mle, observed_information
from physics.quadrature import integrate_terms, logit_rule
from physics.theory import Terms

__all__ = ["PosteriorResult", "laplace_approximation", "sample_posterior"]

_TARGET_ACCEPT = 0.234
_CHUNK = 100


@dataclass
class PosteriorResult:
    """Draws of the reference posterior and their diagnostics.

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
                    "q025": float(q[0, i]),
                    "q16": float(q[1, i]),
                    "median": float(q[2, i]),
                    "q84": float(q[3, i]),
                    "q975": float(q[4, i]),
                    "rhat": float(self.rhat[i]),
                    "ess": float(self.ess[i]),
                }
                for i, name in enumerate(self.names)
            },
        }


def _capped_covariance(cov: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Cap standard deviations at ``cap``, keeping the correlations (stays positive definite)."""
    sd = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    corr = cov / np.outer(sd, sd)
    sd = np.minimum(sd, cap)
    return corr * np.outer(sd, sd) + np.diag((1e-9 * cap) ** 2)


class _Coordinates:
    """Map between theta and the sampling coordinates phi (``"norm"``: log-integral per flavour; or identity)."""

    def __init__(self, likelihood: ExtendedLikelihood, kind: str) -> None:
        experiment = likelihood.experiment
        self.kind = kind
        self.n_flavors = len(experiment.theory.flavors)
        x_min = min(d.spec.x_min for d in experiment.datasets)
        x_max = max(d.spec.x_max for d in experiment.datasets)
        self.rule = logit_rule(x_min, x_max, experiment.config.quadrature)
        low, high = np.asarray(experiment.theory.low), np.asarray(experiment.theory.high)
        # Sd caps of the initial whitening: the box's uniform sd; for log M a factor e^2 (the box does not
        # bound it directly).
        self.cap = (high - low) / np.sqrt(12.0)
        if kind == "norm":
            self.cap[0::3] = 2.0

    def _log_shape_integral(self, per_flavor: torch.Tensor) -> torch.Tensor:
        a, b = per_flavor[..., 1].reshape(-1, 1), per_flavor[..., 2].reshape(-1, 1)
        terms = Terms(torch.ones_like(a), a, b)
        return torch.log(integrate_terms(terms, self.rule)).reshape(per_flavor.shape[:-1])

    def to_phi_torch(self, theta: torch.Tensor) -> torch.Tensor:
        if self.kind == "theta":
            return theta
        per = theta.reshape(-1, self.n_flavors, 3)
        log_m = torch.log(per[..., 0]) + self._log_shape_integral(per)
        return torch.stack([log_m, per[..., 1], per[..., 2]], dim=-1).reshape(theta.shape)

    def to_phi(self, theta: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.to_phi_torch(torch.as_tensor(theta, dtype=torch.float64)).numpy()

    def to_theta(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return theta and log |d theta / d phi| (= sum_f log N_f) for each row of phi."""
        if self.kind == "theta":
            return phi, np.zeros(phi.shape[:-1])
        with torch.no_grad():
            per = torch.as_tensor(phi, dtype=torch.float64).reshape(-1, self.n_flavors, 3)
            log_n = per[..., 0] - self._log_shape_integral(per)
            theta = torch.stack([torch.exp(log_n), per[..., 1], per[..., 2]], dim=-1)
        return theta.reshape(phi.shape).numpy(), log_n.sum(-1).reshape(phi.shape[:-1]).numpy()

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        """Jacobian d phi / d theta at one point, [D, D]."""
        th = torch.as_tensor(theta, dtype=torch.float64)
        return torch.func.jacrev(lambda t: self.to_phi_torch(t.unsqueeze(0))[0])(th).numpy()


def laplace_approximation(
    likelihood: ExtendedLikelihood, seed: int = 0, mle: MLEResult | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Centre and covariance (in theta) of the Laplace approximation, capped to the prior box.

    Args:
        likelihood: the extended likelihood.
        seed: seed of the maximum-likelihood starts.
        mle: a maximum-likelihood estimate already computed for this likelihood (else it is fitted).

    Returns:
        (maximum-likelihood estimate [D], covariance [D, D]).
    """
    theory = likelihood.experiment.theory
    low, high = np.asarray(theory.low), np.asarray(theory.high)
    width = high - low
    mle = mle if mle is not None else fit_mle(likelihood, seed=seed)
    # Keep the centre off the edges, where log N and the whitening are singular.
    centre = np.clip(mle.theta, low + 1e-3 * width, high - 1e-3 * width)
    theta = torch.tensor(centre, dtype=torch.float64)
    info = observed_information(likelihood, theta).numpy()
    if np.any(mle.at_edge) or np.any(np.linalg.eigvalsh(info) <= 0):
        info = fisher_information(likelihood.experiment, theta.unsqueeze(0))[0].numpy()
    cov = np.linalg.inv(info + np.diag((1e-12 / width) ** 2))
    return centre, _capped_covariance(0.5 * (cov + cov.T), width / np.sqrt(12.0))


class _WhitenedTarget:
    """log posterior density of z, phi = mu + L z: log L(theta(phi)) + log |d theta/d phi| in the box."""

    def __init__(self, likelihood: ExtendedLikelihood, coords: _Coordinates, mu: np.ndarray, chol: np.ndarray) -> None:
        self.likelihood = likelihood
        self.coords = coords
        self.mu = mu
        self.chol = chol
        theory = likelihood.experiment.theory
        self.low = np.asarray(theory.low)
        self.high = np.asarray(theory.high)

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
            with torch.no_grad():
                values = self.likelihood(torch.as_tensor(flat[inside], dtype=self.likelihood.dtype))
            out[inside] = np.nan_to_num(values.cpu().numpy(), nan=-np.inf) + log_jac[inside]
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


def _adapt(
    state: _Warmup, likelihood: ExtendedLikelihood, coords: _Coordinates, steps: int, seeds: Any, bar: tqdm
) -> None:
    """One warm-up window: run, then retune the scale to the target acceptance and re-whiten from the tail."""
    dim = len(state.mu)
    target = _WhitenedTarget(likelihood, coords, state.mu, state.chol)
    z_draws, acc = _run(_kernel(target, state.scale), target.to_z(state.theta), steps, 1, seeds, bar)
    state.theta = target.to_theta(z_draws[-1])
    rate = float(acc.mean())
    state.history.append({"steps": steps, "scale": float(state.scale), "acceptance": rate})
    ratio = norm.ppf(_TARGET_ACCEPT / 2) / norm.ppf(np.clip(rate, 0.01, 0.99) / 2)
    state.scale *= float(np.clip(ratio, 0.3, 3.0))
    tail = state.mu + z_draws[len(z_draws) // 2 :].reshape(-1, dim) @ state.chol.T
    if len(tail) >= 10 * dim:
        cov_new = np.cov(tail, rowvar=False) + np.diag((1e-9 * coords.cap) ** 2)
        if np.all(np.linalg.eigvalsh(cov_new) > 0):
            state.mu, state.chol = tail.mean(0), np.linalg.cholesky(cov_new)


def _whitening_start(
    likelihood: ExtendedLikelihood,
    cfg: PosteriorConfig,
    center: np.ndarray | None,
    covariance: np.ndarray | None,
    mle: MLEResult | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The centre (kept off the box edges) and capped covariance the chains start from, in theta."""
    theory = likelihood.experiment.theory
    low, high = np.asarray(theory.low), np.asarray(theory.high)
    width = high - low
    if center is None or covariance is None:
        mode, cov = laplace_approximation(likelihood, seed=cfg.seed, mle=mle)
        center = mode if center is None else np.asarray(center, dtype=np.float64)
        covariance = cov if covariance is None else np.asarray(covariance, dtype=np.float64)
    centre = np.clip(np.asarray(center, dtype=np.float64), low + 1e-3 * width, high - 1e-3 * width)
    return centre, _capped_covariance(np.asarray(covariance, dtype=np.float64), width / np.sqrt(12.0))


def sample_posterior(
    likelihood: ExtendedLikelihood,
    config: PosteriorConfig | None = None,
    center: np.ndarray | None = None,
    covariance: np.ndarray | None = None,
    progress: bool = True,
    mle: MLEResult | None = None,
) -> PosteriorResult:
    """Draw from the posterior of the extended likelihood with a uniform prior on the box.

    Args:
        likelihood: the extended likelihood of the data.
        config: chains, warm-up, draws, coordinates and seed.
        center: whitening centre (default: the maximum-likelihood estimate).
        covariance: whitening covariance (default: the capped Laplace covariance).
        progress: show a progress bar.
        mle: a maximum-likelihood estimate already fitted for this likelihood (the default centre is then not
            refitted).

    Returns:
        The draws with diagnostics.
    """
    cfg = config or PosteriorConfig()
    start = time.perf_counter()
    theory = likelihood.experiment.theory
    low, high = np.asarray(theory.low), np.asarray(theory.high)
    dim = len(low)
    centre, cov_theta = _whitening_start(likelihood, cfg, center, covariance, mle)
    seeds = np.random.SeedSequence(cfg.seed)
    rng = np.random.default_rng(seeds.spawn(1)[0])

    starts = _chain_starts(centre, cov_theta, rng, cfg.n_chains, low, high)
    coords = _Coordinates(likelihood, cfg.coordinates)
    jac = coords.jacobian(centre)
    mu = coords.to_phi(centre[None])[0]
    chol = np.linalg.cholesky(_capped_covariance(jac @ cov_theta @ jac.T, coords.cap))

    windows = np.diff(np.linspace(0, cfg.n_warmup, cfg.warmup_windows + 1).astype(int))
    total = cfg.n_warmup + cfg.n_samples * cfg.thin
    with tqdm(total=total, desc=f"MCMC ({cfg.n_chains} chains)", disable=not progress) as bar:
        state = _Warmup(mu=mu, chol=chol, theta=starts, scale=2.38 / np.sqrt(dim))
        for n_w in windows:
            if n_w:
                _adapt(state, likelihood, coords, int(n_w), seeds, bar)
        mu, chol, theta_now, scale, history = state.mu, state.chol, state.theta, state.scale, state.history
        target = _WhitenedTarget(likelihood, coords, mu, chol)
        z_draws, acc = _run(_kernel(target, scale), target.to_z(theta_now), cfg.n_samples, cfg.thin, seeds, bar)
    samples = target.to_theta(z_draws)
    rhat = np.asarray(tfp.mcmc.potential_scale_reduction(samples, independent_chain_ndims=1, split_chains=True))
    ess = np.asarray(tfp.mcmc.effective_sample_size(samples, cross_chain_dims=1, filter_beyond_positive_pairs=True))
    return PosteriorResult(
        names=theory.parameter_names,
        samples=samples,
        acceptance=float(acc.mean()),
        rhat=rhat,
        ess=ess,
        seconds=time.perf_counter() - start,
        info={"warmup": history, "final_scale": float(scale), "coordinates": cfg.coordinates},
    )
