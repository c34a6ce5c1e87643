"""Black-box event simulators: the contract a runcard's ``simulator: "package.module:function"`` must meet.

A simulator is any function ``f(theta, n, seed, **kwargs)`` that takes one parameter set ``theta`` (a float64
numpy array [D]), the number of events ``n`` wanted per dataset (an int for all, or one int per dataset) and an
integer seed, and returns a mapping with

``events``         one array per dataset, [n_j, d] (or [n_j] when d = 1): the events, in the dataset's order;
``expected``       the expected event count of each dataset at the experiment's luminosity, [J]; or instead
``cross_section``  each dataset's cross section, [J], turned into counts by the runcard's luminosities;
``weights``        (optional) one array of non-negative event weights per dataset, [n_j].

Nothing else is asked: no density, no gradient, no torch. The same seed must give the same events. Two are shipped,
each wrapped so that only events and counts leave it: :func:`toy` (the 1-D toy, d = 1) and :func:`dis`
(inclusive DIS, d = 2: columns x and Q^2). :func:`load_event_simulator` imports one and :func:`simulate` calls it
and checks what comes back, naming the runcard field in every refusal.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from physics.config import PhysicsConfig
from physics.datasets import Experiment
from qcdgip.config import load_yaml, parse_config
from qcdgip.imports import import_callable

__all__ = ["EventSimulator", "Simulation", "dis", "load_event_simulator", "simulate", "toy"]

EventSimulator = Callable[..., Mapping[str, Any]]


class Simulation(NamedTuple):
    """What one simulator call returned, checked: events [n_j, d], weights [n_j] or None, expected counts [J]."""

    events: list[np.ndarray]
    weights: list[np.ndarray] | None
    expected: np.ndarray


@functools.lru_cache(maxsize=4)
def _toy_experiment(case: str | None, runcard: str | None) -> Experiment:
    config = PhysicsConfig()
    if runcard is not None:
        config = parse_config(PhysicsConfig, load_yaml(runcard).get("physics") or {}, f"{runcard} (physics)")
    return Experiment(config, case=case)


def _counts(n: int | Sequence[int], n_datasets: int) -> list[int]:
    counts = [int(n)] * n_datasets if np.isscalar(n) else [int(c) for c in n]
    if len(counts) != n_datasets or min(counts) < 0:
        raise ValueError(f"n: need one non-negative event count per dataset ({n_datasets}), got {n}")
    return counts


def _events_and_counts(sampler: Any, experiment: Any, theta: np.ndarray, n: int | Sequence[int],
                       seed: int) -> dict[str, Any]:  # fmt: skip
    """What a wrapped exact model lets out: events [n_j, d] of every dataset and the expected counts [J]."""
    th = torch.as_tensor(np.asarray(theta, dtype=np.float64))[None]
    g = torch.Generator().manual_seed(int(seed))
    events = []
    with torch.no_grad():
        for j, c in enumerate(_counts(n, len(experiment.names))):
            x = sampler.sample(th, c, j, generator=g)[0]
            events.append((x[:, None] if x.ndim == 1 else x).numpy())
        expected = experiment.expected_counts(th)[0].numpy()
    return {"events": events, "expected": expected}


def toy(theta: np.ndarray, n: int | Sequence[int], seed: int, case: str | None = None,
        runcard: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The 1-D toy as a black box: exact inverse-CDF events x [n_j, 1] and expected counts per dataset.

    Args:
        theta: [Nu, au, bu, Nd, ad, bd].
        n: events per dataset.
        seed: seeds the events.
        case: the event-count case fixing the luminosities (default: the runcard's).
        runcard: a YAML file whose ``physics`` section defines the problem (default: the built-in toy).
    """
    experiment = _toy_experiment(case, runcard)
    return _events_and_counts(experiment.sampler(), experiment, theta, n, seed)


@functools.lru_cache(maxsize=2)
def _dis_sampler(case: str | None, runcard: str | None) -> Any:
    from physics.dis.config import DISConfig
    from physics.dis.experiment import DISExperiment
    from physics.dis.sampling import DISSampler

    config = DISConfig()
    if runcard is not None:
        config = parse_config(DISConfig, load_yaml(runcard).get("physics") or {}, f"{runcard} (physics)")
    return DISSampler(DISExperiment(config.with_case(case) if case else config))


def dis(theta: np.ndarray, n: int | Sequence[int], seed: int, case: str | None = None,
        runcard: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Inclusive DIS as a black box: exact events (x, Q^2) [n_j, 2] and expected counts per Q^2 window.

    Args:
        theta: the DIS problem's free parameters.
        n: events per window.
        seed: seeds the events.
        case: the event-count case (default: the runcard's).
        runcard: a DIS runcard whose ``physics`` section defines the problem (default: the built-in one).
    """
    sampler = _dis_sampler(case, runcard)
    return _events_and_counts(sampler, sampler.experiment, theta, n, seed)


def load_event_simulator(spec: str, kwargs: dict[str, Any] | None = None, field: str = "simulator") -> EventSimulator:
    """Import the simulator ``"package.module:function"`` and bind ``kwargs`` (refusals name ``field``)."""
    return import_callable(spec, kwargs, field, probe=(np.zeros(1), 1, 0))


def _array(value: Any, what: str, field: str) -> np.ndarray:
    try:
        return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{field}: {what} is not numeric ({type(err).__name__}: {err})") from None


def _checked_events(events: Any, counts: list[int], event_dim: int | None, field: str) -> list[np.ndarray]:
    if not isinstance(events, Sequence) or len(events) != len(counts):
        found = len(events) if isinstance(events, Sequence) else type(events).__name__
        raise ValueError(f"{field}: 'events' must hold one array per dataset ({len(counts)}), got {found}")
    out = []
    for j, (x, c) in enumerate(zip(events, counts)):
        x = _array(x, f"events of dataset {j}", field)
        x = x[:, None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[0] != c or (event_dim is not None and x.shape[1] != event_dim):
            d = "d" if event_dim is None else event_dim
            raise ValueError(f"{field}: events of dataset {j} must be [{c}, {d}], got {list(x.shape)}")
        if not np.isfinite(x).all():
            raise ValueError(f"{field}: events of dataset {j} are not all finite")
        out.append(x)
    return out


def _checked_expected(result: Mapping[str, Any], luminosity: Sequence[float] | None, n_sets: int,
                      field: str) -> np.ndarray:  # fmt: skip
    if "expected" in result:
        expected = _array(result["expected"], "'expected'", field).reshape(-1)
    elif "cross_section" in result:
        if luminosity is None:
            raise ValueError(f"{field}: returns 'cross_section'; give the luminosity of each dataset in the runcard")
        expected = _array(result["cross_section"], "'cross_section'", field).reshape(-1) * np.asarray(luminosity)
    else:
        raise ValueError(f"{field}: must return 'expected' (event counts) or 'cross_section' per dataset")
    if expected.shape != (n_sets,) or not np.isfinite(expected).all() or (expected <= 0).any():
        raise ValueError(f"{field}: expected counts must be {n_sets} positive finite numbers, got {expected.tolist()}")
    return expected


def simulate(
    simulator: EventSimulator,
    theta: np.ndarray,
    n: int | Sequence[int],
    seed: int,
    n_datasets: int,
    event_dim: int | None = None,
    luminosity: Sequence[float] | None = None,
    field: str = "simulator",
) -> Simulation:
    """Call ``simulator`` once and check what it returns against the contract of this module.

    Args:
        simulator: the black box.
        theta: one parameter set [D].
        n: events wanted per dataset.
        seed: its seed.
        n_datasets: the number J of datasets the runcard defines.
        event_dim: the event dimension d the caller expects (None: any, the same for every dataset).
        luminosity: per dataset, for a simulator that returns cross sections.
        field: the runcard field named in errors.

    Raises:
        ValueError: the call raised, or it returned no mapping, the wrong number of datasets, events of another
            shape or count, non-finite events, negative weights, or no positive expected counts.
    """
    counts = _counts(n, n_datasets)
    try:
        result = simulator(np.asarray(theta, dtype=np.float64), counts if len(set(counts)) > 1 else counts[0], seed)
    except Exception as err:
        raise ValueError(f"{field}: the call at theta = {np.round(theta, 4).tolist()} failed "
                         f"({type(err).__name__}: {err})") from err  # fmt: skip
    if not isinstance(result, Mapping) or "events" not in result:
        raise ValueError(f"{field}: must return a mapping with 'events', got {type(result).__name__}")
    events = _checked_events(result["events"], counts, event_dim, field)
    if len({x.shape[1] for x in events}) > 1:
        raise ValueError(f"{field}: the datasets' events have different dimensions {[x.shape[1] for x in events]}")
    weights = None
    if result.get("weights") is not None:
        weights = [_array(w, f"weights of dataset {j}", field).reshape(-1) for j, w in enumerate(result["weights"])]
        if [len(w) for w in weights] != counts or any((w < 0).any() or not np.isfinite(w).all() for w in weights):
            raise ValueError(f"{field}: 'weights' must be one finite non-negative weight per event and dataset")
    return Simulation(events, weights, _checked_expected(result, luminosity, n_datasets, field))
