"""VAIM's training data and observations: parameters drawn from the prior box, observables from the simulator.

The simulator is named in the runcard (``problem.simulator``, loaded and probed by :mod:`inverse.problems`); the
runcard's noise model turns its expectations into observations (:func:`add_noise`), and gives the noise scale every
forward-consistency check divides by (:func:`noise_scale`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from inverse.problems import Simulator, check_simulator, load_simulator
from inverse.vaim.config import NoiseConfig, VAIMConfig

__all__ = ["add_noise", "checked_simulator", "noise_scale", "observations", "prior_box", "simulate_pairs"]


def prior_box(config: VAIMConfig) -> tuple[Tensor, Tensor]:
    """Box edges [d] in float64."""
    params = config.problem.parameters
    return torch.tensor([p.low for p in params], dtype=torch.float64), torch.tensor(
        [p.high for p in params], dtype=torch.float64
    )


def add_noise(y: Tensor, noise: NoiseConfig, generator: torch.Generator) -> Tensor:
    """Observations from expectations: Gaussian, Poisson or none (see :class:`NoiseConfig`)."""
    if noise.kind == "none":
        return y
    if noise.kind == "poisson":
        if bool((y < 0).any()):
            raise ValueError("problem.noise.kind: poisson needs non-negative simulator output (expected counts)")
        return torch.poisson(y, generator=generator)
    sigma = torch.as_tensor(noise.sigma, dtype=y.dtype, device=y.device)
    return y + sigma * torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)


def noise_scale(y: Tensor, noise: NoiseConfig) -> Tensor:
    """The noise standard deviation of each observed value (Poisson: sqrt(max(y, 1)))."""
    if noise.kind == "poisson":
        return y.clamp_min(1.0).sqrt()
    return torch.as_tensor(noise.sigma, dtype=y.dtype, device=y.device).expand_as(y)


def checked_simulator(config: VAIMConfig) -> tuple[Simulator, int]:
    """The runcard's simulator, probed inside the box, and its number of observables (errors name the field)."""
    problem = config.problem
    simulator = load_simulator(problem.simulator, problem.kwargs)
    low, high = prior_box(config)
    probe = low + (high - low) * torch.rand(
        4, len(low), generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    m = check_simulator(simulator, probe)
    sigma = problem.noise.sigma
    if isinstance(sigma, list) and len(sigma) not in (1, m):
        raise ValueError(f"problem.noise.sigma: give 1 or {m} values (one per observable), got {len(sigma)}")
    if problem.observables is not None and len(problem.observables) != m:
        raise ValueError(
            f"problem.observables: the simulator returns {m} observables, {len(problem.observables)} named"
        )
    return simulator, m


def simulate_pairs(config: VAIMConfig, simulator: Simulator, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """N parameter sets uniform in the box and their noisy observables, float64, in chunks."""
    low, high = prior_box(config)
    g = torch.Generator().manual_seed(seed)
    theta = low + (high - low) * torch.rand(n, len(low), generator=g, dtype=torch.float64)
    y = torch.cat([simulator(chunk) for chunk in theta.split(8192)]).to(torch.float64)
    if not bool(torch.isfinite(y).all()):
        raise ValueError("problem.simulator: returned non-finite observables for parameters inside the box")
    return theta, add_noise(y, config.problem.noise, g)


def observations(config: VAIMConfig, simulator: Simulator, m: int) -> tuple[Tensor, Tensor | None]:
    """(observations [B, m], the parameters they were simulated at or None)."""
    obs = config.problem.observations
    if obs.values is not None:
        y = torch.tensor(obs.values, dtype=torch.float64)
        if y.shape[1] != m:
            raise ValueError(f"problem.observations.values: rows need {m} values (the simulator's), got {y.shape[1]}")
        return y, None
    theta = torch.tensor(obs.parameters, dtype=torch.float64)
    y = simulator(theta).to(torch.float64)
    if obs.noisy:
        y = add_noise(y, config.problem.noise, torch.Generator().manual_seed(obs.seed))
    return y, theta
