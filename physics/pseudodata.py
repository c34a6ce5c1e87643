"""Pseudo-data for closure tests: generation, a documented file format, validated loading, Poisson replicas.

File format (``format = "qcdgip-events"``, ``format_version = 1``), one directory per data set::

    DIR/meta.json          format, format_version, suite_version, case, seed, parameter_names, truth,
                           datasets: [{name, observable, x_min, x_max, luminosity, expected, observed, file}]
    DIR/<dataset>.npz      one array ``x`` (float64, shape [observed]), the events of that dataset

Files are written to a temporary name and renamed, so an interrupted write never leaves a half file behind.
Loading checks every file and names the one that is missing, unreadable, of the wrong shape, with NaN or with
events outside its dataset's range.

Replicas follow the Monte Carlo replica method with a Poisson bootstrap: each event enters replica r with
multiplicity k ~ Poisson(1), so a replica's count is itself Poisson, like the data's.

References:
    Hanley and MacGibbon, "Creating non-parametric bootstrap samples using Poisson frequencies",
    Comput. Methods Programs Biomed. 83 (2006) 57.
    NNPDF Collaboration, "Parton distributions for the LHC Run II", arXiv:1410.8849 (Monte Carlo replicas).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from physics.datasets import Experiment
from physics.sampling import EventSampler
from qcdgip._version import __version__

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "EventData",
    "generate_pseudodata",
    "load_events",
    "load_or_generate",
    "poisson_replica_weights",
    "poisson_replicas",
    "save_events",
]

FORMAT = "qcdgip-events"
FORMAT_VERSION = 1


@dataclass
class EventData:
    """Events of every dataset plus their provenance.

    Attributes:
        names: dataset names, in the experiment's order.
        events: one float64 array of x values per dataset.
        meta: provenance (see the module docstring); ``meta["datasets"]`` has one entry per dataset.
    """

    names: list[str]
    events: list[np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> list[int]:
        """Observed event count per dataset."""
        return [len(x) for x in self.events]

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.names:
            raise KeyError(f"no dataset {name!r}; have {self.names}")
        return self.events[self.names.index(name)]

    def tensors(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> list[Tensor]:
        """The events as 1-D tensors."""
        return [torch.as_tensor(x, dtype=dtype, device=device) for x in self.events]


def _dataset_meta(experiment: Experiment, counts: list[int]) -> list[dict[str, Any]]:
    return [{**row, "observed": int(n), "file": f"{row['name']}.npz"} for row, n in zip(experiment.summary(), counts)]


def generate_pseudodata(experiment: Experiment, seed: int, theta: list[float] | None = None) -> EventData:
    """Generate a pseudo-data set: Poisson counts and exact events at the given (default: true) parameters.

    Args:
        experiment: datasets with luminosities.
        seed: seed of the torch generator that draws counts and events.
        theta: parameters to generate at; defaults to the configured truth.

    Returns:
        The events with their provenance.
    """
    theory = experiment.theory
    truth = list(theory.truth if theta is None else theta)
    if len(truth) != theory.n_params:
        raise ValueError(f"theta must have {theory.n_params} values, got {len(truth)}")
    gen = torch.Generator().manual_seed(int(seed))
    theta_t = torch.tensor([truth], dtype=torch.float64)
    sampler = experiment.sampler()
    with torch.no_grad():
        if experiment.detector is None:
            nu = experiment.expected_counts(theta_t)[0]
            counts = [int(c) for c in torch.poisson(nu, generator=gen).tolist()]
            events = [
                sampler.sample(theta_t, n, j, generator=gen)[0].numpy().copy() if n > 0 else np.zeros(0)
                for j, n in enumerate(counts)
            ]
        else:
            events = _detected_events(experiment, sampler, theta_t, gen)
            counts = [len(x) for x in events]
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "suite_version": __version__,
        "case": experiment.case,
        "seed": int(seed),
        "parameter_names": theory.parameter_names,
        "truth": truth,
        "datasets": _dataset_meta(experiment, counts),
        "detector": None if experiment.detector is None else experiment.detector.summary(),
    }
    return EventData(names=experiment.names, events=events, meta=meta)


def _detected_events(
    experiment: Experiment, sampler: EventSampler, theta: Tensor, gen: torch.Generator
) -> list[np.ndarray]:
    """True events of every dataset range (Poisson counts), passed through the detector event by event.

    Each event survives with probability eps(x), is smeared, and lands in the dataset of its observable whose range
    holds y (a migration when that is another one); outside every range it is lost.
    """
    detector = experiment.detector
    specs = [d.spec for d in experiment.datasets]
    nu_true = experiment.folding.true_counts(theta)[0]
    true_counts = [int(c) for c in torch.poisson(nu_true, generator=gen).tolist()]
    found: list[list[np.ndarray]] = [[] for _ in specs]
    for k, n in enumerate(true_counts):
        if n == 0:
            continue
        x = sampler.sample(theta, n, k, generator=gen)[0]
        kept = torch.rand(n, generator=gen, dtype=x.dtype) < detector.efficiency(x)
        y = detector.smear(x, torch.randn(n, generator=gen, dtype=x.dtype))[kept].numpy()
        for j, spec in enumerate(specs):
            if spec.observable != specs[k].observable:
                continue
            # Half-open ranges [x_min, x_max), except that the top of (0, 1] is closed.
            inside = (y >= spec.x_min) & ((y < spec.x_max) | ((y == spec.x_max) & (spec.x_max == 1.0)))
            found[j].append(y[inside])
    return [np.sort(np.concatenate(parts)) if parts else np.zeros(0) for parts in found]


def _atomic_write_bytes(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_events(data: EventData, directory: str | Path) -> Path:
    """Write ``data`` in the documented format (one .npz per dataset plus meta.json).

    Args:
        data: the events.
        directory: output directory (created if needed).

    Returns:
        The directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = data.meta.get("datasets") or [{"name": n, "file": f"{n}.npz"} for n in data.names]
    for row, x in zip(rows, data.events):
        _atomic_write_bytes(directory / row["file"], lambda fh, x=x: np.savez(fh, x=np.asarray(x, dtype=np.float64)))
    meta = {**data.meta, "datasets": [{**row, "observed": len(x)} for row, x in zip(rows, data.events)]}
    _atomic_write_bytes(directory / "meta.json", lambda fh: fh.write(json.dumps(meta, indent=2).encode()))
    return directory


def _load_array(path: Path, row: dict[str, Any]) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{path}: event file missing (listed in meta.json for dataset {row['name']!r})")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            x = npz["x"] if "x" in names else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{path}: cannot read events ({err})") from err
    if x is None:
        raise ValueError(f"{path}: no array 'x' (found {names})")
    if x.ndim != 1:
        raise ValueError(f"{path}: 'x' must be 1-D, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{path}: 'x' must be floating point, got {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{path}: {int(np.sum(~np.isfinite(x)))} events are NaN or infinite")
    lo, hi = float(row["x_min"]), float(row["x_max"])
    outside = (x < lo) | (x > hi)
    if np.any(outside):
        raise ValueError(
            f"{path}: {int(outside.sum())} events outside the dataset range [{lo}, {hi}] (e.g. {x[outside][0]!r})"
        )
    if "observed" in row and len(x) != int(row["observed"]):
        raise ValueError(f"{path}: {len(x)} events but meta.json says observed = {row['observed']}")
    return x.astype(np.float64, copy=False)


def load_events(directory: str | Path, experiment: Experiment | None = None) -> EventData:
    """Load and validate a pseudo-data directory.

    Args:
        directory: directory written by :func:`save_events`.
        experiment: if given, the datasets (names, observables, ranges) must match it, in its order.

    Returns:
        The events.

    Raises:
        ValueError: naming the file, for a missing or corrupt file, a wrong shape, NaN, events out of range,
            a count that disagrees with meta.json, or datasets that do not match the experiment.
    """
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise ValueError(f"{meta_path}: missing (not a pseudo-data directory?)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{meta_path}: not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: not a {FORMAT!r} file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: format_version {meta.get('format_version')} unsupported (need {FORMAT_VERSION})"
        )
    rows = meta.get("datasets")
    needed = {"name", "observable", "x_min", "x_max", "file"}
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and needed <= set(r) for r in rows):
        raise ValueError(f"{meta_path}: 'datasets' must list entries with keys {sorted(needed)}")
    if experiment is not None:
        for row, ds in zip(rows, experiment.datasets):
            same = (
                row["name"] == ds.name
                and row["observable"] == ds.observable
                and np.isclose(float(row["x_min"]), ds.spec.x_min)
                and np.isclose(float(row["x_max"]), ds.spec.x_max)
            )
            if not same:
                raise ValueError(
                    f"{meta_path}: dataset {row['name']!r} ({row['observable']}, [{row['x_min']}, {row['x_max']}]) "
                    f"does not match the config's {ds.name!r} ({ds.observable}, {list(ds.x_range)})"
                )
        if len(rows) != len(experiment.datasets):
            raise ValueError(
                f"{meta_path}: {len(rows)} datasets, the config has {len(experiment.datasets)} ({experiment.names})"
            )
    events = [_load_array(directory / row["file"], row) for row in rows]
    return EventData(names=[r["name"] for r in rows], events=events, meta=meta)


def poisson_replica_weights(
    counts: list[int], n_replicas: int, seed: int, device: torch.device | str | None = None
) -> list[Tensor]:
    """Poisson(1) bootstrap multiplicities of every event in every replica.

    Args:
        counts: number of events per dataset.
        n_replicas: R.
        seed: seed of the generator.
        device: where to put the result.

    Returns:
        One integer-valued float64 tensor [R, n_j] per dataset.
    """
    if n_replicas < 1:
        raise ValueError(f"n_replicas must be >= 1, got {n_replicas}")
    gen = torch.Generator().manual_seed(int(seed))
    # Replica by replica, so replica r is the same whatever n_replicas is.
    per_replica = [
        [torch.poisson(torch.ones(n, dtype=torch.float64), generator=gen) for n in counts] for _ in range(n_replicas)
    ]
    return [torch.stack([rep[j] for rep in per_replica]).to(device) for j in range(len(counts))]


def poisson_replicas(data: EventData, n_replicas: int, seed: int) -> list[EventData]:
    """Materialize Poisson-bootstrap replicas of a data set (each event repeated k ~ Poisson(1) times).

    Args:
        data: the data set.
        n_replicas: R.
        seed: seed of the generator (replica r is the same whatever R is).

    Returns:
        R data sets whose meta records the replica index and seed.
    """
    weights = poisson_replica_weights(data.counts, n_replicas, seed)
    replicas = []
    for r in range(n_replicas):
        events = [np.repeat(x, w[r].to(torch.int64).numpy()) for x, w in zip(data.events, weights)]
        meta = {**data.meta, "replica": r, "replica_seed": int(seed)}
        meta["datasets"] = [{**row, "observed": len(x)} for row, x in zip(data.meta.get("datasets", []), events)]
        replicas.append(EventData(names=list(data.names), events=events, meta=meta))
    return replicas


def load_or_generate(experiment: Experiment, seed: int, directory: Path, overwrite: bool) -> tuple[EventData, bool]:
    """Reuse the pseudo-data in ``directory`` if it has this case, seed and truth; else generate and save it.

    Returns:
        (data, reused). A different data set already there is an error unless ``overwrite``.
    """
    if (directory / "meta.json").exists():
        data = load_events(directory, experiment)
        same = data.meta.get("case") == experiment.case and data.meta.get("seed") == seed
        same = same and np.allclose(data.meta.get("truth", []), experiment.theory.truth)
        detector = None if experiment.detector is None else experiment.detector.summary()
        same = same and data.meta.get("detector") == detector
        if same:
            return data, True
        if not overwrite:
            raise ValueError(
                f"{directory}: holds case {data.meta.get('case')!r} seed {data.meta.get('seed')} "
                f"(truth {data.meta.get('truth')}, detector {data.meta.get('detector')}), not case "
                f"{experiment.case!r} seed {seed} (detector {detector}); "
                "use another --out or --overwrite"
            )
        shutil.rmtree(directory)
    data = generate_pseudodata(experiment, seed=seed)
    save_events(data, directory)
    return data, False
