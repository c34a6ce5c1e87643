"""Training and evaluation events: parameter sets uniform in the prior box, and their events and expected counts.

The events come from the exact forward model or from a black-box simulator (:mod:`physics.simulators`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from physics.config import PhysicsConfig
from physics.datasets import Experiment
from physics.simulators import EventSimulator, load_event_simulator, simulate
from surrogates.config import SurrogateConfig

__all__ = ["draw_prior", "exact_counts", "exact_events", "simulate_sets", "simulated_events", "to_unit"]


def draw_prior(physics: PhysicsConfig, n: int, seed: int) -> Tensor:
    """N parameter sets uniform in the prior box, float64 [n, D]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.tensor(physics.low, dtype=torch.float64)
    high = torch.tensor(physics.high, dtype=torch.float64)
    return low + (high - low) * torch.rand(n, len(low), generator=g, dtype=torch.float64)


def exact_events(
    physics: PhysicsConfig, theta: Tensor, n: int, seed: int, chunk: int = 1000, progress: bool = False
) -> Tensor:
    """Exact events x of every dataset for each parameter set, float64 [M, J, n] (inverse-CDF sampler).

    Args:
        physics: the forward model.
        theta: parameter sets [M, D].
        n: events per parameter set and dataset.
        seed: random seed.
        chunk: parameter sets per sampler call (bounds memory).
        progress: show a progress bar.
    """
    sampler = Experiment(physics).sampler()
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(theta.shape[0], len(sampler.dataset_names), n, dtype=torch.float64)
    starts = range(0, theta.shape[0], chunk)
    with torch.no_grad():
        for a in tqdm(starts, desc="exact events", disable=not progress, unit="chunk"):
            th = theta[a : a + chunk].double()
            for j in range(len(sampler.dataset_names)):
                out[a : a + chunk, j] = sampler.sample(th, n, j, generator=g)
    return out


def exact_counts(physics: PhysicsConfig, theta: Tensor, chunk: int = 4096) -> Tensor:
    """Expected counts of every dataset at the physics section's luminosities, float64 [M, J]."""
    experiment = Experiment(physics)
    with torch.no_grad():
        return torch.cat([experiment.expected_counts(th.double()) for th in theta.split(chunk)])


def simulated_events(
    simulator: EventSimulator, physics: PhysicsConfig, theta: Tensor, n: int, seed: int, progress: bool = False
) -> tuple[Tensor, Tensor]:
    """Events [M, J, n] and expected counts [M, J] (float64) of a black-box simulator, one call per parameter set.

    Call i gets the seed ``seed + i``; every result is checked (:func:`physics.simulators.simulate`, errors name
    ``simulation.simulator``). Events must be one-dimensional here (the toy's x).
    """
    n_sets, n_datasets = theta.shape[0], len(physics.datasets)
    x = torch.empty(n_sets, n_datasets, n, dtype=torch.float64)
    expected = torch.empty(n_sets, n_datasets, dtype=torch.float64)
    for i in tqdm(range(n_sets), desc="simulator", disable=not progress, unit="set", mininterval=1.0):
        out = simulate(simulator, theta[i].numpy(), n, seed + i, n_datasets, 1, field="simulation.simulator")
        if out.weights is not None:
            raise ValueError("simulation.simulator: weighted events cannot train a surrogate yet (unweight them)")
        for j, (events, ds) in enumerate(zip(out.events, physics.datasets)):
            if events.min() < ds.x_min or events.max() > ds.x_max:
                raise ValueError(f"simulation.simulator: events of dataset {ds.name!r} leave its range "
                                 f"[{ds.x_min}, {ds.x_max}] at theta = {theta[i].tolist()}")  # fmt: skip
            x[i, j] = torch.from_numpy(events[:, 0])
        expected[i] = torch.from_numpy(out.expected)
    return x, expected


def simulate_sets(config: SurrogateConfig, theta: Tensor, seed: int, progress: bool = False) -> tuple[Tensor, Tensor]:
    """Events [M, J, n] and expected counts [M, J] (float64) of parameter sets ``theta`` [M, D].

    As a surrogate runcard's ``simulation`` section says: its black-box ``simulator`` if set, else the exact
    sampler of its physics; ``events_per_param`` per set and dataset.
    """
    s = config.simulation
    if s.simulator is not None:
        simulator = load_event_simulator(s.simulator, s.simulator_kwargs, "simulation.simulator")
        return simulated_events(simulator, config.physics, theta, s.events_per_param, seed, progress)
    x = exact_events(config.physics, theta, s.events_per_param, seed, progress=progress)
    return x, exact_counts(config.physics, theta)


def to_unit(physics: PhysicsConfig, x: Tensor) -> Tensor:
    """X [M, J, n] -> the log-scaled coordinate t in [0, 1] of each dataset's range."""
    lo = torch.tensor([d.x_min for d in physics.datasets], dtype=x.dtype).log()[:, None]
    hi = torch.tensor([d.x_max for d in physics.datasets], dtype=x.dtype).log()[:, None]
    return ((x.log() - lo) / (hi - lo)).clamp(0.0, 1.0)
