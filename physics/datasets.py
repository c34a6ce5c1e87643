"""Datasets with luminosities: the experiment an inverse solver fits.

A dataset is one observable over an x sub-range. Its events form a Poisson process with intensity
lambda_j(x; theta) = L_o sigma_o(x; theta), so the expected count is nu_j(theta) = L_o int_{range j} sigma_o.
The luminosity L_o of observable o is fixed once, at the true parameters, by the case's expected number of
events of o summed over its datasets: L_o = N_o / sum_{j in o} int_j sigma_o(truth).
Fixing L (not the counts) is what makes the event counts carry the normalisations Nu and Nd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from physics.config import DatasetSpec, PhysicsConfig
from physics.detector import Detector, FoldedSampler, Folding
from physics.quadrature import LogitRule, integrate_terms, logit_rule
from physics.sampling import EventSampler, InverseCDFSampler
from physics.theory import Theory, terms_log_density

__all__ = ["Dataset", "Experiment"]


@dataclass(frozen=True)
class Dataset:
    """A dataset of the experiment.

    Attributes:
        spec: name, observable and x range.
        luminosity: L_o of its observable (events per unit of integrated sigma).
        expected: expected event count at the true parameters, nu_j(truth) (reconstructed, with a detector).
        true_expected: expected count of true events in its range at the true parameters (before the detector).
    """

    spec: DatasetSpec
    luminosity: float
    expected: float
    true_expected: float = math.nan

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
        true_expected = [luminosity[d.observable] * i for d, i in zip(config.datasets, integrals)]
        self.detector: Detector | None = None
        self.folding: Folding | None = None
        expected = true_expected
        if config.detector is not None:
            self.detector = Detector(config.detector)
            lums = [luminosity[d.observable] for d in config.datasets]
            self.folding = Folding(self.theory, config.datasets, lums, self.detector, config.quadrature)
            expected = self.folding.expected_counts(truth)[0].tolist()
            for d, n, n_true in zip(config.datasets, expected, true_expected):
                if not n > 1e-6 * n_true:
                    raise ValueError(
                        f"detector.acceptance: no event of dataset {d.name!r} survives the detector (expected "
                        f"{n:.3g} reconstructed of {n_true:.3g} true events at the truth); raise eps(x) there"
                    )
        self.datasets = [
            Dataset(spec=d, luminosity=luminosity[d.observable], expected=n, true_expected=n_true)
            for d, n, n_true in zip(config.datasets, expected, true_expected)
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
        """The exact inverse-CDF sampler of the datasets' true events (before any detector)."""
        return InverseCDFSampler(self.theory, [d.spec for d in self.datasets], self.config.quadrature)

    def observed_sampler(self, inner: EventSampler | None = None) -> EventSampler:
        """What the discriminators see: ``inner`` (default: the exact sampler) through the detector, if any."""
        inner = inner if inner is not None else self.sampler()
        return FoldedSampler(inner, self.folding) if self.folding is not None else inner

    def expected_counts(self, theta: Tensor) -> Tensor:
        """Expected event counts nu_j(theta) = L_j int_j sigma (folded with a detector), shape [B, J]."""
        theta = self.theory.check_theta(theta)
        if self.folding is not None:
            return self.folding.expected_counts(theta)
        values = [
            d.luminosity * integrate_terms(self.theory.terms(theta, d.observable), r)
            for d, r in zip(self.datasets, self.rules)
        ]
        return torch.stack(values, dim=-1)

    def log_intensity(self, theta: Tensor, log_x: Tensor, log_1mx: Tensor, dataset: int | str) -> Tensor:
        """Log lambda_j(x; theta) = log L_j + log sigma_o(x; theta) at points given by log x and log(1-x).

        With a detector, x is the reconstructed value and lambda_j the folded intensity (``log_1mx`` is unused).

        Args:
            theta: [B, D].
            log_x: [B, n] or [n].
            log_1mx: same shape as ``log_x``.
            dataset: index or name.

        Returns:
            [B, n].
        """
        if self.folding is not None:  # the reconstructed intensity depends on y alone
            return self.folding.log_intensity(theta, log_x, self.index(dataset))
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
                **({"true_expected": d.true_expected} if self.folding is not None else {}),
            }
            for d in self.datasets
        ]
