"""Adversarial Langevin chains: posterior draws driven by the discriminators' estimate of grad log L.

After the fit, ``chains`` chains on the unweighted data start at the replicas' estimates. Each step evaluates the
generator objective at every chain's parameters on two independent halves of fresh generated events; its
gradient is the adversarial estimate of -grad log L (exact where the discriminators are optimal), to which the
prior's gradient is added. The chains move by unadjusted Langevin steps

    psi <- psi + (eps / 2) C grad log pi(psi) + sqrt(q) C^{1/2} xi,

in coordinates psi where the toy's curved ridges are nearly straight (``NormCoordinates``: the log integral of
each PDF over the data range, with its exponents), preconditioned by the covariance C of the replicas' estimates
there. Then each chain's discriminators take ``d_steps`` updates at its new parameters, so the next gradient is
up to date. Three choices make it work (docs/solvers/posterior.md has the measurements):

* the coordinates: in theta (or the generator's logits) the same sampler needs steps 15x smaller;
* the box: a proposal outside it is refused (the chain stays where it is). Reflecting it instead traps chains in
  the box's corners, where the preconditioned step keeps pushing into a wall;
* the noise: q = eps - (eps^2 / 4)(1 + V), with V the gradient's noise variance per whitened coordinate (from
  the difference of the two halves' gradients) and eps^2 / 4 the variance excess of an unadjusted step on a
  Gaussian whitened by C, so the chains' spread is that of the posterior, not of the posterior plus noise.

References:
    Welling and Teh, "Bayesian learning via stochastic gradient Langevin dynamics", ICML (2011).
    Chen, Fox and Guestrin, "Stochastic gradient Hamiltonian Monte Carlo", arXiv:1402.4102 (noise subtraction).
    Vollmer, Zygalakis and Teh, "Exploration of the (non-)asymptotic bias and variance of stochastic gradient
    Langevin dynamics", arXiv:1501.00438.
    Roberts and Tweedie, "Exponential convergence of Langevin distributions", Bernoulli 2 (1996) 341.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from inverse.gan.config import GANConfig
from inverse.gan.model import InverseGAN
from inverse.gan.newton import LogisticNewton, logistic_terms
from inverse.gan.posterior.config import PosteriorModeConfig
from inverse.gan.posterior.coordinates import ThetaCoordinates
from inverse.gan.training import make_optimizer
from physics.posterior import NormCoordinates
from physics.pseudodata import EventData

__all__ = ["LangevinResult", "LangevinSampler", "injected_variance", "langevin_proposal"]


@dataclass
class LangevinResult:
    """The chains' draws and what the sampler measured.

    Attributes:
        trace: parameters of every chain after every step, [steps, C, D].
        burn_in: steps left out of :attr:`draws`.
        noise_variance: the gradient's measured noise variance per whitened coordinate (V).
        injected: the injected noise variance per whitened coordinate (q).
        refused: fraction of proposals refused for leaving the prior box.
        seconds: wall time of the sampling (this call and earlier ones of a resumed run).
        cpu_seconds: CPU time of the sampling.
        step_seconds: wall time of each step run in this call.
    """

    trace: np.ndarray
    burn_in: int
    noise_variance: float
    injected: float
    refused: float
    seconds: float
    cpu_seconds: float
    step_seconds: list[float] = field(default_factory=list)

    @property
    def draws(self) -> np.ndarray:
        """Kept draws [S, C, D] (after the burn-in)."""
        return self.trace[self.burn_in :]


def injected_variance(eps: float, noise: float) -> float:
    """The noise variance q to inject per whitened coordinate for step ``eps`` and gradient noise ``noise`` (V).

    An unadjusted step on a Gaussian whitened by the preconditioner has stationary variance q / (eps - eps^2 / 4)
    plus (eps / 2)^2 V from the gradient's noise; q = eps - (eps^2 / 4)(1 + V) makes it 1. Floored at 5 % of eps:
    a gradient noisier than the step can absorb would otherwise ask for negative noise.
    """
    return max(eps - 0.25 * eps**2 * (1.0 + noise), 0.05 * eps)


def langevin_proposal(
    psi: Tensor, grad: Tensor, chol: Tensor, eps: float, injected: float, max_drift: float, xi: Tensor
) -> Tensor:
    """The proposal psi + (eps / 2) C grad + sqrt(q) L xi (C = L L^T), its drift capped at ``max_drift``.

    Far from the posterior (a poor start, a lagging discriminator) an uncapped step would leave the box at every
    try, and a chain whose proposals are all refused never moves; near it the cap is not reached.
    """
    drift = 0.5 * eps * grad @ chol
    drift = drift * (max_drift / drift.norm(dim=-1, keepdim=True).clamp_min(1e-300)).clamp(max=1.0)
    return psi + (drift + injected**0.5 * xi) @ chol.T


def _chain_config(gan: GANConfig, post: PosteriorModeConfig) -> GANConfig:
    """The GAN settings of the chains: one parameter set per chain, the unweighted data, half-size event draws."""
    events = post.events_per_param or gan.training.events_per_param
    training = gan.training.model_copy(
        update={
            "replicas": post.chains,
            "bootstrap": False,
            "params_per_step": 1,
            "events_per_param": max(1, events // 2),
            "seed": post.seed,
        }
    )
    update: dict[str, Any] = {"training": training}
    if post.d_lr is not None:
        update["optimizer_d"] = gan.optimizer_d.model_copy(update={"lr": post.d_lr})
    return gan.model_copy(update=update)


class LangevinSampler:
    """The chains, their discriminators and their preconditioner, built from a fitted GAN.

    Args:
        fit: the fitted GAN (its replicas' estimates start the chains and give the preconditioner; chain c gets
            replica c's discriminators as a start).
        data: the data the GAN was fitted to (the chains take its events without bootstrap weights).
        coordinates: the sampling coordinates (:func:`inverse.gan.posterior.coordinates.sampling_coordinates`).

    Raises:
        ValueError: fewer replicas than chains, or too few replicas for a covariance in D dimensions, or a
            Gaussian prior of the wrong length.
    """

    def __init__(self, fit: InverseGAN, data: EventData, coordinates: NormCoordinates | ThetaCoordinates) -> None:
        self.config = fit.config.posterior
        post = self.config
        estimates = fit.estimates().detach().double()
        n_rep, dim = estimates.shape
        if n_rep < post.chains:
            raise ValueError(f"gan.posterior.chains ({post.chains}) exceeds the fit's {n_rep} replicas")
        if n_rep < dim + 2:
            raise ValueError(
                f"gan.posterior: the preconditioner is the replicas' covariance; {n_rep} replicas cannot give one in "
                f"{dim} dimensions (use training.replicas >= {2 * dim})"
            )
        for name in ("prior_mean", "prior_sd"):
            value = getattr(post, name)
            if post.prior == "gaussian" and len(value) != dim:
                raise ValueError(f"gan.posterior.{name}: needs {dim} values (one per parameter), got {len(value)}")
        self.coords = coordinates
        theory = fit.experiment.theory
        self.low = torch.tensor(theory.low, dtype=torch.float64)
        self.high = torch.tensor(theory.high, dtype=torch.float64)
        self.model = InverseGAN(_chain_config(fit.config, post), fit.experiment, data, fit.sampler)
        _copy_discriminators(fit, self.model, post.chains)
        inside = self._inside_margin(estimates)
        psi_all = coordinates.to_phi_torch(inside)
        cov = torch.cov(psi_all.T).reshape(dim, dim)
        cov = cov + torch.diag(1e-9 * cov.diagonal().clamp_min(1e-12))
        self.chol = torch.linalg.cholesky(cov)
        self.psi = psi_all[: post.chains].clone()
        self.noise = torch.Generator().manual_seed(post.seed)
        d_cfg = self.model.config.optimizer_d
        if d_cfg.name == "newton":
            self.opt_d: Any = LogisticNewton(self.model.discriminators, lr=d_cfg.lr, ridge=d_cfg.damping)
        else:
            self.opt_d = make_optimizer(d_cfg, self.model.discriminators.parameters())
        self.step = 0
        self.trace: list[Tensor] = []
        self.psi_trace: list[Tensor] = []
        self.noise_sum, self.noise_count, self.refusals = 0.0, 0, 0
        self.seconds, self.cpu_seconds = 0.0, 0.0

    def _inside_margin(self, theta: Tensor) -> Tensor:
        """Parameters moved at most 1e-6 of the box width inside it (the norm coordinates need N > 0)."""
        width = self.high - self.low
        return torch.minimum(torch.maximum(theta, self.low + 1e-6 * width), self.high - 1e-6 * width)

    # -- the pieces of a step --------------------------------------------------------------------------------
    def log_prior(self, theta: Tensor) -> Tensor:
        """Log prior density in theta up to a constant, [C] (uniform: 0 inside the box)."""
        post = self.config
        if post.prior == "uniform":
            return theta.new_zeros(theta.shape[0])
        mean = torch.tensor(post.prior_mean, dtype=theta.dtype)
        sd = torch.tensor(post.prior_sd, dtype=theta.dtype)
        return -0.5 * (((theta - mean) / sd) ** 2).sum(-1)

    def gradient(self, psi: Tensor) -> tuple[Tensor, Tensor]:
        """Estimate of grad log pi in psi, [C, D], and the difference of the two halves' likelihood gradients."""
        psi = psi.detach().requires_grad_(True)
        theta, log_jac = self.coords.to_theta_torch(psi)
        dtype = self.model.generator.offset.dtype
        halves = []
        for _ in range(2):
            losses = [self.model.objective_at(theta[rs, None, :].to(dtype), rs)[0] for rs in self.model.chunks()]
            (g,) = torch.autograd.grad(-torch.cat(losses).sum(), psi, retain_graph=True)
            halves.append(g)
        prior = (self.log_prior(theta) + log_jac).sum()
        # A uniform prior in theta coordinates is constant: no graph, a zero gradient.
        g_prior = torch.autograd.grad(prior, psi)[0] if prior.requires_grad else torch.zeros_like(psi)
        return 0.5 * (halves[0] + halves[1]) + g_prior, halves[0] - halves[1]

    def _update_discriminators(self, count: int) -> None:
        """``count`` updates of every chain's discriminators on fresh events at the chains' parameters."""
        m = self.model
        newton = isinstance(self.opt_d, LogisticNewton)
        for _ in range(count):
            self.opt_d.zero_grad(set_to_none=True)
            for rs in m.chunks():
                generated = m.simulate_detached(rs)
                if newton:
                    with torch.no_grad():
                        _, terms = logistic_terms(m, generated, rs, self.opt_d.cache)
                    self.opt_d.add(rs, terms)
                else:
                    m.discriminator_loss(generated, rs).sum().backward()
            self.opt_d.step()

    def _place(self, psi: Tensor) -> None:
        """Put the chains' parameters into the model's point generator (its events come from there)."""
        theta, _ = self.coords.to_theta_torch(psi)
        with torch.no_grad():
            gen = self.model.generator
            gen.offset.copy_(gen.from_box(theta.to(gen.offset.dtype))[:, None, :])

    def take_step(self) -> None:
        """One Langevin step of every chain, then its discriminators' updates."""
        post = self.config
        eps = post.step_size
        grad, diff = self.gradient(self.psi)
        with torch.no_grad():
            # Whitened coordinates z = L^-1 psi: the gradient there is L^T g; the two halves' mean has a quarter
            # of their difference's variance.
            self.noise_sum += float(((diff @ self.chol) ** 2).mean()) / 4.0
            self.noise_count += 1
            xi = torch.randn(self.psi.shape, generator=self.noise, dtype=self.psi.dtype)
            proposal = langevin_proposal(self.psi, grad, self.chol, eps, self.injected_variance(), post.max_drift, xi)
            theta, _ = self.coords.to_theta_torch(proposal)
            outside = ((theta <= self.low) | (theta >= self.high)).any(-1) | ~torch.isfinite(theta).all(-1)
            self.refusals += int(outside.sum())
            self.psi = torch.where(outside[:, None], self.psi, proposal)
            self.trace.append(self.coords.to_theta_torch(self.psi)[0].clone())
            self.psi_trace.append(self.psi.clone())
        self._place(self.psi)
        self._update_discriminators(post.d_steps)
        self.step += 1
        if post.adapt and self.step == post.burn_in // 2 and post.burn_in >= 20:
            self._adapt()

    def _adapt(self) -> None:
        """The chains' own covariance (from a quarter of the burn-in on) replaces the replicas' as preconditioner.

        The replicas' covariance is the bootstrap's, narrower than the posterior where it is skewed, so the chains
        would mix slowly along those directions; the noise measured in the old whitening starts afresh.
        """
        pooled = torch.stack(self.psi_trace[self.config.burn_in // 4 :]).reshape(-1, self.psi.shape[-1])
        cov = torch.cov(pooled.T)
        self.chol = torch.linalg.cholesky(cov + torch.diag(1e-9 * cov.diagonal().clamp_min(1e-12)))
        self.noise_sum, self.noise_count = 0.0, 0

    def injected_variance(self) -> float:
        """Injected variance per whitened coordinate (:func:`injected_variance` of the measured noise)."""
        eps = self.config.step_size
        if not self.config.noise_correction:
            return eps
        return injected_variance(eps, self.noise_sum / max(self.noise_count, 1))

    # -- the run -----------------------------------------------------------------------------------------
    def run(self, directory: Path | None = None, progress: bool = True) -> LangevinResult:
        """Run (or resume from ``directory/chains.pt``) to ``steps`` steps; returns the trace and its facts."""
        post = self.config
        path = Path(directory) / "chains.pt" if directory is not None else None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        if path is not None and path.is_file():
            self._load(path)
        if self.step == 0:
            self._place(self.psi)
            self._update_discriminators(post.d_warmup)
        step_seconds: list[float] = []
        bar = tqdm(total=post.steps, initial=self.step, desc=f"Langevin ({post.chains} chains)", disable=not progress)
        wall, cpu = time.perf_counter(), time.process_time()
        while self.step < post.steps:
            start = time.perf_counter()
            self.take_step()
            step_seconds.append(time.perf_counter() - start)
            bar.update(1)
            if path is not None and (self.step % post.checkpoint_every == 0 or self.step == post.steps):
                self.seconds += time.perf_counter() - wall
                self.cpu_seconds += time.process_time() - cpu
                wall, cpu = time.perf_counter(), time.process_time()
                self._save(path)
        bar.close()
        self.seconds += time.perf_counter() - wall
        self.cpu_seconds += time.process_time() - cpu
        total = max(len(self.trace) * post.chains, 1)
        return LangevinResult(
            trace=torch.stack(self.trace).numpy(),
            burn_in=post.burn_in,
            noise_variance=self.noise_sum / max(self.noise_count, 1),
            injected=self.injected_variance(),
            refused=self.refusals / total,
            seconds=self.seconds,
            cpu_seconds=self.cpu_seconds,
            step_seconds=step_seconds,
        )

    def _key(self) -> str:
        """The settings the chains depend on (not how they are judged or how often they are saved)."""
        return json.dumps(self.config.model_dump(exclude={"targets", "c2st_draws", "checkpoint_every"}), sort_keys=True)

    def _save(self, path: Path) -> None:
        state = {
            "key": self._key(),
            "step": self.step,
            "psi": self.psi,
            "trace": torch.stack(self.trace),
            "psi_trace": torch.stack(self.psi_trace),
            "chol": self.chol,
            "discriminators": self.model.discriminators.state_dict(),
            "optimizer": self.opt_d.state_dict(),
            "noise": self.noise.get_state(),
            "rng": self.model.rng_state(),
            "counters": [self.noise_sum, self.noise_count, self.refusals, self.seconds, self.cpu_seconds],
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(path)

    def _load(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("key") != self._key():
            return  # other sampler settings: start afresh (the file is overwritten at the first checkpoint)
        self.step, self.psi = int(state["step"]), state["psi"]
        self.trace = list(state["trace"].unbind(0))
        self.psi_trace, self.chol = list(state["psi_trace"].unbind(0)), state["chol"]
        self.model.discriminators.load_state_dict(state["discriminators"])
        self.opt_d.load_state_dict(state["optimizer"])
        self.noise.set_state(state["noise"])
        self.model.set_rng_state(state["rng"])
        self.noise_sum, self.noise_count, self.refusals, self.seconds, self.cpu_seconds = state["counters"]
        self._place(self.psi)


def _copy_discriminators(fit: InverseGAN, chains: InverseGAN, n: int) -> None:
    """Chain c's discriminators start as replica c's (parameters are stacked over replicas in dimension 0)."""
    source = dict(fit.discriminators.named_parameters())
    with torch.no_grad():
        for name, p in chains.discriminators.named_parameters():
            p.copy_(source[name][:n].to(p.dtype))
