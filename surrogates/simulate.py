"""Training and evaluation events: parameter sets uniform in the prior box, and their events and expected counts.

The events come from the exact forward model (the toy's inverse-CDF sampler, or the DIS sampler of a ``dis``
section) or from a black-box simulator (:mod:`physics.simulators`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from physics.config import PhysicsConfig
from physics.datasets import Experiment
from physics.dis.config import DISConfig
from physics.dis.experiment import DISExperiment
from physics.dis.sampling import DISSampler
from physics.simulators import EventSimulator, load_event_simulator, simulate
from surrogates.config import SurrogateConfig
from surrogates.dis_flow import WindowCoordinates

__all__ = [
    "dis_experiment",
    "draw_prior",
    "exact_counts",
    "exact_events",
    "luminosities",
    "simulate_sets",
    "simulated_events",
    "to_unit",
]

Problem = PhysicsConfig | DISConfig
_DIS: dict[str, DISExperiment] = {}


def dis_experiment(dis: DISConfig) -> DISExperiment:
    """The DIS experiment of a config, built once per config (its tables and operator are costly)."""
    key = dis.model_dump_json()
    if key not in _DIS:
        _DIS.clear()
        _DIS[key] = DISExperiment(dis)
    return _DIS[key]


def luminosities(problem: Problem) -> list[float]:
    """Each dataset's luminosity: the toy's per dataset, DIS's one luminosity (fixed by its case at its truth)."""
    if isinstance(problem, DISConfig):
        return [dis_experiment(problem).luminosity] * len(problem.datasets)
    return [d.luminosity for d in Experiment(problem).datasets]


def draw_prior(physics: Problem, n: int, seed: int) -> Tensor:
    """N parameter sets uniform in the prior box, float64 [n, D]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.tensor(physics.low, dtype=torch.float64)
    high = torch.tensor(physics.high, dtype=torch.float64)
    return low + (high - low) * torch.rand(n, len(low), generator=g, dtype=torch.float64)


def exact_events(
    physics: Problem, theta: Tensor, n: int, seed: int, chunk: int = 1000, progress: bool = False
) -> Tensor:
    """Exact events of every dataset for each parameter set, float64 [M, J, n] (toy) or [M, J, n, 2] (DIS).

    Args:
        physics: the forward model (the toy's physics or a DIS config).
        theta: parameter sets [M, D].
        n: events per parameter set and dataset.
        seed: random seed.
        chunk: parameter sets per sampler call (bounds memory).
        progress: show a progress bar.
    """
    dis = isinstance(physics, DISConfig)
    sampler = DISSampler(dis_experiment(physics)) if dis else Experiment(physics).sampler()
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(theta.shape[0], len(sampler.dataset_names), n, *((2,) if dis else ()), dtype=torch.float64)
    starts = range(0, theta.shape[0], chunk)
    with torch.no_grad():
        for a in tqdm(starts, desc="exact events", disable=not progress, unit="chunk"):
            th = theta[a : a + chunk].double()
            for j in range(len(sampler.dataset_names)):
                out[a : a + chunk, j] = sampler.sample(th, n, j, generator=g)
    return out


def exact_counts(physics: Problem, theta: Tensor, chunk: int = 1000) -> Tensor:
    """Expected counts of every dataset at the problem's luminosities, float64 [M, J]."""
    experiment = dis_experiment(physics) if isinstance(physics, DISConfig) else Experiment(physics)
    with torch.no_grad():
        return torch.cat([experiment.expected_counts(th.double()) for th in theta.split(chunk)])


def simulated_events(
    simulator: EventSimulator, physics: Problem, theta: Tensor, n: int, seed: int, progress: bool = False
) -> tuple[Tensor, Tensor]:
    """Events [M, J, n] (toy) or [M, J, n, 2] (DIS) and expected counts [M, J] (float64) of a black-box simulator.

    One call per parameter set; call i gets the seed ``seed + i``; every result is checked
    (:func:`physics.simulators.simulate`, errors name ``simulation.simulator``), and its events must lie in their
    dataset's range (the toy's x range; a DIS window's Q^2 range and cuts).
    """
    dis = isinstance(physics, DISConfig)
    n_sets, n_datasets, d = theta.shape[0], len(physics.datasets), 2 if dis else 1
    x = torch.empty(n_sets, n_datasets, n, d, dtype=torch.float64)
    expected = torch.empty(n_sets, n_datasets, dtype=torch.float64)
    lumi = luminosities(physics)
    for i in tqdm(range(n_sets), desc="simulator", disable=not progress, unit="set", mininterval=1.0):
        out = simulate(simulator, theta[i].numpy(), n, seed + i, n_datasets, d, lumi, field="simulation.simulator")
        if out.weights is not None:
            raise ValueError("simulation.simulator: weighted events cannot train a surrogate yet (unweight them)")
        for j, events in enumerate(out.events):
            x[i, j] = torch.from_numpy(events)
        expected[i] = torch.from_numpy(out.expected)
    if not dis:
        x = x[..., 0]
    _check_ranges(physics, x, theta)
    return x, expected


def _check_ranges(physics: Problem, x: Tensor, theta: Tensor) -> None:
    """Refuse simulated events outside their dataset's range, naming the dataset and the parameter set."""
    coords = WindowCoordinates(physics) if isinstance(physics, DISConfig) else None
    for j, ds in enumerate(physics.datasets):
        if coords is not None:
            bad = ~coords.inside(coords.to_unit(x[:, j], j)[0]).all(-1)
            where = f"its Q^2 range [{ds.q2_min}, {ds.q2_max}] or the cuts"
        else:
            bad = (x[:, j] < ds.x_min).any(-1) | (x[:, j] > ds.x_max).any(-1)
            where = f"its range [{ds.x_min}, {ds.x_max}]"
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ValueError(f"simulation.simulator: events of dataset {ds.name!r} leave {where} at theta = "
                             f"{theta[i].tolist()}")  # fmt: skip


def simulate_sets(config: SurrogateConfig, theta: Tensor, seed: int, progress: bool = False) -> tuple[Tensor, Tensor]:
    """Events [M, J, n] ([M, J, n, 2] for DIS) and expected counts [M, J] (float64) of parameter sets [M, D].

    As a surrogate runcard's ``simulation`` section says: its black-box ``simulator`` if set, else the exact
    sampler of its physics; ``events_per_param`` per set and dataset.
    """
    s = config.simulation
    if s.simulator is not None:
        simulator = load_event_simulator(s.simulator, s.simulator_kwargs, "simulation.simulator")
        return simulated_events(simulator, config.problem, theta, s.events_per_param, seed, progress)
    x = exact_events(config.problem, theta, s.events_per_param, seed, progress=progress)
    return x, exact_counts(config.problem, theta)


def to_unit(physics: Problem, x: Tensor) -> Tensor:
    """Events -> the surrogate's unit coordinates.

    The toy's x [M, J, n] -> the log-scaled t in [0, 1] of each dataset's range; DIS events [M, J, n, 2] -> each
    window's unit square (:class:`surrogates.dis_flow.WindowCoordinates`).
    """
    if isinstance(physics, DISConfig):
        coords = WindowCoordinates(physics)
        t = torch.stack([coords.to_unit(x[:, j], j)[0] for j in range(x.shape[1])], 1)
        return t.clamp(0.0, 1.0)
    lo = torch.tensor([d.x_min for d in physics.datasets], dtype=x.dtype).log()[:, None]
    hi = torch.tensor([d.x_max for d in physics.datasets], dtype=x.dtype).log()[:, None]
    return ((x.log() - lo) / (hi - lo)).clamp(0.0, 1.0)
