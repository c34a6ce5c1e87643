"""Datasets with luminosities: the experiment an inverse solver fits.

A dataset is one observable over an x sub-range. Its events form a Poisson process with intensity
lambda_j(x; theta) = L_o sigma_o(x; theta), so the expected count is nu_j(theta) = L_o int_{range j} sigma_o.
The luminosity L_o of observable o is fixed once, at the true parameters, by the case's expected number of
events of o summed over its datasets (DESIGN.md section 3): L_o = N_o / sum_{j in o} int_j sigma_o(truth).
Fixing L (not the counts) is what makes the event counts carry the normalisations Nu and Nd.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from physics.config import DatasetSpec, PhysicsConfig
from physics.quadrature import LogitRule, integrate_terms, logit_rule
from physics.sampling import InverseCDFSampler
from physics.theory import Theory, terms_log_density

__all__ = ["Dataset", "Experiment"]


@dataclass(frozen=True)
class Dataset:
    """A dataset of the experiment.

    Attributes:
        spec: name, observable and x range.
        luminosity: L_o of its observable (events per unit of integrated sigma).
        expected: expected event count at the true parameters, nu_j(truth).
    """

    spec: DatasetSpec
    luminosity: float
    expected: float

    @property
    def name(self) -> str:
        """Dataset name."""
        return self.spec.name

    @property
    def observable(self) -> str:
        """Observable name."""
        return self.spec.observable

    @property
    def x_range(self) -> tuple[float, float]:
        """(x_min, x_max)."""
        return self.spec.x_min, self.spec.x_max


class Experiment:
    """Theory plus datasets with luminosities for one event-count case.

    Args:
        config: the physics configuration.
        case: the case to use (defaults to ``config.case``).

    Example:
        >>> exp = Experiment(PhysicsConfig(), case="B")
        >>> [round(d.expected) for d in exp.datasets]
        [7345, 2655, 3840, 1160]
    """

    def __init__(self, config: PhysicsConfig, case: str | None = None) -> None:
        if case is not None and case != config.case:
            config = config.with_case(case)
        self.config = config
        self.case = config.case
        self.theory = Theory(config)
        self.rules: list[LogitRule] = [logit_rule(d.x_min, d.x_max, config.quadrature) for d in config.datasets]
        truth = self.theory.truth_tensor(torch.float64)
        integrals = [
            integrate_terms(self.theory.terms(truth, d.observable), r).item()
            for d, r in zip(config.datasets, self.rules)
        ]
        counts = config.cases[config.case]
        luminosity = {}
        for obs, n_events in counts.items():
            total = sum(i for i, d in zip(integrals, config.datasets) if d.observable == obs)
            if not total > 0:
                raise ValueError(f"case {config.case!r}: observable {obs!r} integrates to 0 at the truth")
            luminosity[obs] = n_events / total
        self.datasets = [
            Dataset(spec=d, luminosity=luminosity[d.observable], expected=luminosity[d.observable] * i)
            for d, i in zip(config.datasets, integrals)
        ]

    @property
    def names(self) -> list[str]:
        """Dataset names in order."""
        return [d.name for d in self.datasets]

    def index(self, dataset: int | str) -> int:
        """Position of a dataset given by index or name."""
        if isinstance(dataset, str):
            if dataset not in self.names:
                raise ValueError(f"unknown dataset {dataset!r}; known: {self.names}")
            return self.names.index(dataset)
        return int(dataset)

    def sampler(self) -> InverseCDFSampler:
        """The exact inverse-CDF event sampler of these datasets."""
        return InverseCDFSampler(self.theory, [d.spec for d in self.datasets], self.config.quadrature)

    def expected_counts(self, theta: Tensor) -> Tensor:
        """Expected event counts nu_j(theta) = L_j int_j sigma, shape [B, J]."""
        theta = self.theory.check_theta(theta)
        values = [
            d.luminosity * integrate_terms(self.theory.terms(theta, d.observable), r)
            for d, r in zip(self.datasets, self.rules)
        ]
        return torch.stack(values, dim=-1)

    def log_intensity(self, theta: Tensor, log_x: Tensor, log_1mx: Tensor, dataset: int | str) -> Tensor:
        """Log lambda_j(x; theta) = log L_j + log sigma_o(x; theta) at points given by log x and log(1-x).

        Args:
            theta: [B, D].
            log_x: [B, n] or [n].
            log_1mx: same shape as ``log_x``.
            dataset: index or name.

        Returns:
            [B, n].
        """
        d = self.datasets[self.index(dataset)]
        terms = self.theory.terms(self.theory.check_theta(theta), d.observable)
        return terms_log_density(terms, log_x, log_1mx) + torch.log(
            torch.tensor(d.luminosity, dtype=log_x.dtype, device=log_x.device)
        )

    def summary(self) -> list[dict[str, float | str]]:
        """Per-dataset description (name, observable, range, luminosity, expected count) for reports."""
        return [
            {
                "name": d.name,
                "observable": d.observable,
                "x_min": d.spec.x_min,
                "x_max": d.spec.x_max,
                "luminosity": d.luminosity,
                "expected": d.expected,
            }
            for d in self.datasets
        ]
