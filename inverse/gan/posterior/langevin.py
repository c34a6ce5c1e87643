"""Adversarial Langevin chains: posterior draws driven by the discriminators' estimate of grad log L.

After the fit, ``chains`` chains on the unweighted data start at the replicas' estimates. Each step evaluates the
generator objective at every chain's parameters on two independent halves of fresh generated events; its
gradient is the adversarial estimate of -grad log L (exact where the discriminators are optimal), to which the
prior's gradient is added. The chains move by the kinetic Langevin step of :mod:`inverse.gan.posterior.kernel`
(with ``momentum`` 0 the unadjusted Langevin step psi <- psi + (eps / 2) C grad log pi + sqrt(q) C^{1/2} xi), in
coordinates psi where the toy's curved ridges are nearly straight (``NormCoordinates``: the log integral of each
PDF over the data range, with its exponents), preconditioned by the covariance C of the replicas' estimates there.
Then each chain's discriminators take ``d_steps`` updates at its new parameters, so the next gradient is up to
date. Four choices make it work (docs/solvers/posterior.md has the measurements):

* the coordinates: in theta (or the generator's logits) the same sampler needs steps 15x smaller;
* the box: a proposal outside it is refused (the chain stays where it is and turns back). Reflecting it instead
  traps chains in the box's corners, where the preconditioned step keeps pushing into a wall;
* the noise: the refresh's variance leaves room for the step's own excess on a Gaussian whitened by C and for the
  gradient's error, first as measured from the difference of the two halves' gradients (the events' noise);
* the discriminators' error: a discriminator is a few updates behind its chain and carries its own noise, which
  persists over steps. Over the second half of the burn-in the gradients are regressed on the positions and the
  last moves; the moves' part (the lag) is taken out of every later gradient, and the covariance of the rest, with
  its autocovariance, replaces the halves' noise in the refresh. Without it the chains run wide, most of all with
  momentum.

References:
    Welling and Teh, "Bayesian learning via stochastic gradient Langevin dynamics", ICML (2011).
    Chen, Fox and Guestrin, "Stochastic gradient Hamiltonian Monte Carlo", arXiv:1402.4102 (noise subtraction).
    Vollmer, Zygalakis and Teh, "Exploration of the (non-)asymptotic bias and variance of stochastic gradient
    Langevin dynamics", arXiv:1501.00438.
    Roberts and Tweedie, "Exponential convergence of Langevin distributions", Bernoulli 2 (1996) 341.
    Horowitz, "A generalized guided Monte Carlo algorithm", Phys. Lett. B 268 (1991) 247 (partial refresh).
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

from inverse.gan.model import InverseGAN
from inverse.gan.newton import LogisticNewton, logistic_terms
from inverse.gan.posterior.chain_model import chain_model, pull_toward
from inverse.gan.posterior.coordinates import ThetaCoordinates
from inverse.gan.posterior.kernel import (
    error_covariance,
    fit_lag,
    half_kick,
    kinetic_step,
    lag_coefficients,
    lag_corrected,
    refresh_root,
    refresh_variance,
)
from inverse.gan.training import make_optimizer
from physics.posterior import NormCoordinates
from physics.pseudodata import EventData

__all__ = ["LAG_MOVES", "LangevinResult", "LangevinSampler"]

LAG_MOVES = 2
"""Moves back the discriminators' lag is fitted over (on the toy a third and a fourth add nothing measurable)."""


@dataclass
class LangevinResult:
    """The chains' draws and what the sampler measured.

    Attributes:
        trace: parameters of every chain after every step, [steps, C, D].
        burn_in: steps left out of :attr:`draws`.
        noise_variance: the gradient's measured noise variance per whitened coordinate (V).
        injected: the noise variance per whitened coordinate a step puts into the positions (mean over directions).
        refused: fraction of proposals refused for leaving the prior box.
        seconds: wall time of the sampling (this call and earlier ones of a resumed run).
        cpu_seconds: CPU time of the sampling.
        step_seconds: wall time of each step run in this call.
        lag: the discriminators' measured lag per move back (trace of each lag matrix / D; about the fraction of
            that move the gradient lags behind), or None when not measured.
        error_variance: the gradient error's variance per whitened coordinate that a chain integrates (after the
            lag is taken out, with its autocovariance over two steps), or None when not measured.
    """

    trace: np.ndarray
    burn_in: int
    noise_variance: float
    injected: float
    refused: float
    seconds: float
    cpu_seconds: float
    step_seconds: list[float] = field(default_factory=list)
    lag: list[float] | None = None
    error_variance: list[float] | None = None

    @property
    def draws(self) -> np.ndarray:
        """Kept draws [S, C, D] (after the burn-in)."""
        return self.trace[self.burn_in :]


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
        self.model = chain_model(fit, data, post)
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
        self.d_anchor = post.anchor_for(d_cfg.name)
        self.step = 0
        self.velocity = torch.zeros_like(self.psi)
        self.grad: Tensor | None = None  # at psi, with the lag taken out once it is fitted
        self.moves = self.psi.new_zeros(post.chains, LAG_MOVES, dim)
        self.lag: Tensor | None = None
        self.anchor: list[Tensor] | None = None  # the discriminators' weights at the chains' start (d_anchor)
        self.error_cov: Tensor | None = None
        self.error_rows: list[Tensor] = []
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
            if self.anchor is not None:
                pull_toward(
                    m.discriminators.parameters(), self.anchor, self.d_anchor * self.opt_d.param_groups[0]["lr"]
                )

    def _place(self, psi: Tensor) -> None:
        """Put the chains' parameters into the model's point generator (its events come from there)."""
        theta, _ = self.coords.to_theta_torch(psi)
        with torch.no_grad():
            gen = self.model.generator
            gen.offset.copy_(gen.from_box(theta.to(gen.offset.dtype))[:, None, :])

    def _measured_gradient(self) -> Tensor:
        """The gradient of log pi at the chains' positions; the two halves' difference adds to the measured noise V."""
        grad, diff = self.gradient(self.psi)
        # Whitened coordinates z = L^-1 psi: the gradient there is L^T g; the two halves' mean has a quarter of
        # their difference's variance.
        self.noise_sum += float(((diff @ self.chol) ** 2).mean()) / 4.0
        self.noise_count += 1
        return grad

    def take_step(self) -> None:
        """One step of every chain (:mod:`inverse.gan.posterior.kernel`), then its discriminators' updates."""
        post = self.config
        eps = post.step_size
        if self.grad is None:
            self.grad = self._measured_gradient()
        with torch.no_grad():
            xi = torch.randn(self.psi.shape, generator=self.noise, dtype=self.psi.dtype)
            refresh = xi @ self.refresh_root().T
            proposal, velocity = kinetic_step(
                self.psi, self.velocity, self.grad, self.chol, eps, post.momentum, refresh, post.max_drift
            )
            theta, _ = self.coords.to_theta_torch(proposal)
            outside = ((theta <= self.low) | (theta >= self.high)).any(-1) | ~torch.isfinite(theta).all(-1)
            self.refusals += int(outside.sum())
            moved = torch.where(outside[:, None], self.psi, proposal)
            self.moves = torch.cat([(moved - self.psi)[:, None], self.moves[:, :-1]], dim=1)
            self.psi = moved
            # A refused chain turns back (its velocity negated, as a rejected generalized-HMC proposal does).
            self.velocity = torch.where(outside[:, None], -velocity, velocity)
            self.trace.append(self.coords.to_theta_torch(self.psi)[0].clone())
            self.psi_trace.append(self.psi.clone())
        self._place(self.psi)
        self._update_discriminators(post.d_steps)
        self.step += 1
        if post.adapt and self.step == post.burn_in // 2 and post.burn_in >= 20:
            self._adapt()
        grad = self._measured_gradient()
        self._fit_error_model(grad)
        with torch.no_grad():
            # Kept corrected: the next step's first kick uses the same gradient at the same point.
            self.grad = lag_corrected(grad, self.moves, self.lag)
            self.velocity = half_kick(self.velocity, self.grad, self.chol, eps, post.max_drift)

    def _fit_error_model(self, grad: Tensor) -> None:
        """Keep the second half of the burn-in's gradients; at its end, fit the discriminators' error model.

        The lag behind the chains' last moves (:func:`fit_lag`) is taken out of every later gradient, and the
        covariance of what the fit leaves (:func:`error_covariance`: the discriminators' noise and the events')
        replaces the two halves' noise in the refresh from then on.

        Args:
            grad: this step's gradient at the chains' positions, before the lag is taken out.
        """
        post = self.config
        if not post.error_correction or self.step <= post.burn_in // 2 or self.step > post.burn_in:
            return
        self.error_rows.append(torch.cat([self.psi, self.moves.flatten(1), grad], dim=1))
        if self.step == post.burn_in:
            rows = torch.stack(self.error_rows)  # [S, C, columns]
            steps, chains, _ = rows.shape
            dim = self.psi.shape[-1]
            rows = rows.reshape(steps * chains, -1)
            quadratic = self.quadratic_error_model()
            # Fewer gradients than 4 per coefficient: no correction.
            if len(rows) >= 4 * lag_coefficients(dim, LAG_MOVES, quadratic):
                moves = rows[:, dim:-dim].reshape(-1, LAG_MOVES, dim)
                self.lag, residuals = fit_lag(rows[:, :dim], moves, rows[:, -dim:], quadratic)
                self.error_cov = error_covariance((residuals @ self.chol).reshape(steps, chains, dim))
            self.error_rows = []

    def quadratic_error_model(self) -> bool:
        """Whether the error model's gradient is quadratic in the sampling coordinates (``error_model``)."""
        if self.config.error_model == "auto":
            return isinstance(self.coords, ThetaCoordinates)
        return self.config.error_model == "quadratic"

    def _adapt(self) -> None:
        """The chains' own covariance (from a quarter of the burn-in on) replaces the replicas' as preconditioner.

        The replicas' covariance is the bootstrap's, narrower than the posterior where it is skewed, so the chains
        would mix slowly along those directions; the noise measured in the old whitening starts afresh.
        """
        pooled = torch.stack(self.psi_trace[self.config.burn_in // 4 :]).reshape(-1, self.psi.shape[-1])
        cov = torch.cov(pooled.T)
        self.chol = torch.linalg.cholesky(cov + torch.diag(1e-9 * cov.diagonal().clamp_min(1e-12)))
        self.noise_sum, self.noise_count = 0.0, 0
        # Velocities are whitened by the old factor: drawn afresh from the refresh's stationary law.
        xi = torch.randn(self.psi.shape, generator=self.noise, dtype=self.psi.dtype)
        self.velocity = (1.0 - 0.25 * self.config.step_size) ** 0.5 * xi

    def noise_variance(self) -> float:
        """The gradient's noise variance per whitened coordinate measured so far (V)."""
        return self.noise_sum / max(self.noise_count, 1)

    def refresh_root(self) -> Tensor:
        """Root of the velocity refresh's covariance per whitened coordinate [D, D] (:func:`refresh_root`).

        Before the error model is fitted, the two halves' noise V in every direction (:func:`refresh_variance`);
        uncorrected (``noise_correction: false``), (1 - c^2) I.
        """
        post = self.config
        dim = self.psi.shape[-1]
        eye = torch.eye(dim, dtype=self.psi.dtype)
        if not post.noise_correction:
            return (1.0 - post.momentum**2) ** 0.5 * eye
        if self.error_cov is not None:
            return refresh_root(post.step_size, self.error_cov, post.momentum)
        return refresh_variance(post.step_size, self.noise_variance(), post.momentum) ** 0.5 * eye

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
            if self.d_anchor > 0:
                self.anchor = [p.detach().clone() for p in self.model.discriminators.parameters()]
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
            noise_variance=self.noise_variance(),
            injected=self.config.step_size * float((self.refresh_root() ** 2).sum(0).mean()),
            error_variance=None if self.error_cov is None else self.error_cov.diagonal().tolist(),
            refused=self.refusals / total,
            seconds=self.seconds,
            cpu_seconds=self.cpu_seconds,
            step_seconds=step_seconds,
            lag=None if self.lag is None else _whitened_lag(self.lag, self.chol),
        )

    def _key(self) -> str:
        """The settings the chains depend on (not how they are judged or how often they are saved)."""
        return json.dumps(self.config.model_dump(exclude={"targets", "c2st_draws", "checkpoint_every"}), sort_keys=True)

    def _save(self, path: Path) -> None:
        state = {name: getattr(self, name) for name in _STATE}
        state.update(
            key=self._key(),
            trace=torch.stack(self.trace),
            psi_trace=torch.stack(self.psi_trace),
            discriminators=self.model.discriminators.state_dict(),
            optimizer=self.opt_d.state_dict(),
            noise=self.noise.get_state(),
            rng=self.model.rng_state(),
        )
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(path)

    def _load(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("key") != self._key():
            return  # other sampler settings: start afresh (the file is overwritten at the first checkpoint)
        for name in _STATE:
            setattr(self, name, state[name])
        self.trace, self.psi_trace = list(state["trace"].unbind(0)), list(state["psi_trace"].unbind(0))
        self.model.discriminators.load_state_dict(state["discriminators"])
        self.opt_d.load_state_dict(state["optimizer"])
        self.noise.set_state(state["noise"])
        self.model.set_rng_state(state["rng"])
        self._place(self.psi)


_STATE = (
    "step", "psi", "velocity", "grad", "moves", "lag", "error_cov", "error_rows", "chol",
    "noise_sum", "noise_count", "refusals", "seconds", "cpu_seconds", "anchor",
)  # fmt: skip
"""The sampler's attributes a checkpoint keeps as they are (the traces, discriminators and generators aside)."""


def _whitened_lag(lag: Tensor, chol: Tensor) -> list[float]:
    """Each lag matrix's trace / D in whitened coordinates, L^T M L: the fraction of a move the gradient lags."""
    whitened = chol.T @ lag @ chol
    return whitened.diagonal(dim1=1, dim2=2).mean(-1).tolist()
