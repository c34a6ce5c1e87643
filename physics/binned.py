"""Binned view of event data: counts in log-x bins, Poisson covariance, chi2 of a prediction.

The k-fold losses of the hyperparameter search (NNPDF-style chi2 per dataset) and several plots work on this
view. Bins are uniform in log x inside each dataset's range. The prediction of bin k is
nu_k(theta) = L int_{bin k} sigma(x; theta) dx, by the same logit-panel quadrature as everything else.

Covariance choices (diagonal, the counts are independent Poisson variables):
    ``"data"``   C = diag(max(n_k, 1)): the experimental covariance fixed by the data (Neyman's chi2), what
                 NNPDF's fits use; empty bins get variance 1 so they stay finite.
    ``"theory"`` C = diag(nu_k(theta)): the prediction's own variance (Pearson's chi2).

References:
    Baker and Cousins, "Clarification of the use of chi-square and likelihood functions in fits to
    histograms", Nucl. Instrum. Meth. 221 (1984) 437.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from physics.datasets import Experiment
from physics.pseudodata import EventData
from physics.quadrature import integrate_terms, logit_rule

__all__ = ["BinnedDataset", "BinnedView", "log_bins"]


def log_bins(x_min: float, x_max: float, n_bins: int) -> np.ndarray:
    """Edges of ``n_bins`` bins uniform in log x over [x_min, x_max]."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    return np.geomspace(x_min, x_max, n_bins + 1)


@dataclass(frozen=True)
class BinnedDataset:
    """One dataset's histogram.

    Attributes:
        name: dataset name.
        edges: bin edges, [K + 1].
        counts: observed counts, [K].
    """

    name: str
    edges: np.ndarray
    counts: np.ndarray


class BinnedView:
    """Histograms of a data set and chi2 of predictions.

    Args:
        experiment: datasets with luminosities.
        data: the events.
        n_bins: log-x bins per dataset (ignored for datasets given in ``edges``).
        edges: optional explicit bin edges per dataset name.
    """

    def __init__(
        self,
        experiment: Experiment,
        data: EventData,
        n_bins: int = 10,
        edges: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.experiment = experiment
        self.datasets: list[BinnedDataset] = []
        for ds, x in zip(experiment.datasets, data.events):
            e = np.asarray(edges[ds.name]) if edges and ds.name in edges else log_bins(*ds.x_range, n_bins)
            if e[0] > ds.spec.x_min or e[-1] < ds.spec.x_max or np.any(np.diff(e) <= 0):
                raise ValueError(f"bin edges of {ds.name!r} must increase and cover {list(ds.x_range)}")
            counts, _ = np.histogram(x, bins=e)
            self.datasets.append(BinnedDataset(name=ds.name, edges=e, counts=counts.astype(np.float64)))
        self._rules = [
            [
                logit_rule(float(lo), float(hi), experiment.config.quadrature)
                for lo, hi in zip(b.edges[:-1], b.edges[1:])
            ]
            for b in self.datasets
        ]

    @property
    def n_points(self) -> int:
        """Total number of bins."""
        return sum(len(b.counts) for b in self.datasets)

    def counts_of(self, j: int) -> np.ndarray:
        """Observed counts of dataset j, [K_j]."""
        return self.datasets[j].counts

    def histogram(self, events: np.ndarray, j: int) -> np.ndarray:
        """Counts of other events of dataset j (e.g. a replica's out-of-bag ones) in its bins, [K_j]."""
        return np.histogram(events, bins=self.datasets[j].edges)[0].astype(np.float64)

    def predictions(self, theta: Tensor) -> list[Tensor]:
        """Expected counts per bin, one [B, K_j] tensor per dataset."""
        theory = self.experiment.theory
        theta = theory.check_theta(theta)
        out = []
        folding = self.experiment.folding
        if folding is not None:  # reconstructed bins: theory x acceptance x resolution
            for j, b in enumerate(self.datasets):
                edges = zip(b.edges[:-1], b.edges[1:])
                out.append(torch.stack([folding.expected_in(theta, j, lo, hi) for lo, hi in edges], dim=-1))
            return out
        for ds, rules in zip(self.experiment.datasets, self._rules):
            terms = theory.terms(theta, ds.observable)
            out.append(ds.luminosity * torch.stack([integrate_terms(terms, r) for r in rules], dim=-1))
        return out

    def variances(self, j: int, kind: Literal["data", "theory"] = "data", prediction: Tensor | None = None) -> Tensor:
        """Diagonal of the covariance of dataset j (see the module docstring for ``kind``)."""
        if kind == "data":
            return torch.as_tensor(np.maximum(self.datasets[j].counts, 1.0), dtype=torch.float64)
        if kind == "theory":
            if prediction is None:
                raise ValueError("kind='theory' needs the prediction")
            return prediction
        raise ValueError(f"kind must be 'data' or 'theory', got {kind!r}")

    def chi2_per_dataset(self, theta: Tensor, kind: Literal["data", "theory"] = "data") -> Tensor:
        """chi2 = sum_k (n_k - nu_k)^2 / C_kk of each dataset, [B, J] (not divided by the number of bins)."""
        values = []
        for j, pred in enumerate(self.predictions(theta)):
            counts = torch.as_tensor(self.datasets[j].counts, dtype=pred.dtype, device=pred.device)
            var = self.variances(j, kind, pred).to(pred)
            values.append(((counts - pred) ** 2 / var).sum(-1))
        return torch.stack(values, dim=-1)

    def chi2(self, theta: Tensor, kind: Literal["data", "theory"] = "data") -> Tensor:
        """Total chi2 over all datasets, [B]."""
        return self.chi2_per_dataset(theta, kind).sum(-1)
