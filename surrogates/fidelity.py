"""Fidelity that matters for inference: the surrogate's own likelihood, its MLE and Fisher matrix against the exact.

KS distances and W1 say how close the surrogate's events are on average; an inverse solver only sees the
surrogate through its likelihood. :class:`SurrogateLikelihood` is the extended unbinned likelihood with the
surrogate's density and learned counts, sum_j [sum_i log(nu_j(theta) q_j(x_i; theta)) - nu_j(theta)], the
function a GAN on the surrogate maximises at its fixed point. :func:`likelihood_fidelity` puts the surrogate's
MLE next to the exact one, in posterior sd (the Cramér–Rao sd at the exact MLE), and the diagonal of its Fisher
matrix next to the exact diagonal: a surrogate is good enough where the first is well below 1 and the second near 1.

References:
    Barlow, "Extended maximum likelihood", Nucl. Instrum. Meth. A 297 (1990) 496.
    Cranmer, Brehmer and Louppe, "The frontier of simulation-based inference", PNAS 117 (2020) 30055.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from physics.datasets import Experiment
from physics.likelihood import ExtendedLikelihood, cramer_rao, fisher_information, fit_mle
from physics.pseudodata import EventData
from surrogates.base import Surrogate
from surrogates.experiment import SurrogateExperiment, surrogate_fisher

__all__ = ["SurrogateLikelihood", "likelihood_fidelity"]


class SurrogateLikelihood:
    """Extended unbinned log-likelihood of one data set under a surrogate with a density and learned counts.

    It has the interface of :class:`physics.likelihood.ExtendedLikelihood` that :func:`physics.likelihood.fit_mle`
    uses, so the surrogate's own MLE is found the same way as the exact one.

    Args:
        model: a surrogate with a density (a flow).
        data: events per dataset in dataset order ([n_j] or [n_j, d] arrays, or an :class:`EventData`).
        luminosity: per dataset, the luminosities of the data (None: those the counts were learned at).
        weights: optional event weights per dataset, [n_j] (e.g. one bootstrap replica's).
        counts: expected counts theta [B, D] -> [B, J] to use instead of the learned ones (e.g. the theory's).

    Raises:
        ValueError: the surrogate has no density, or the events or weights do not match its datasets.
    """

    def __init__(
        self,
        model: Surrogate,
        data: EventData | Sequence[np.ndarray],
        luminosity: Sequence[float] | None = None,
        weights: Sequence[Tensor | np.ndarray] | None = None,
        counts: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if not model.has_log_prob:
            raise ValueError(f"a {model.kind} surrogate has no density; its likelihood is undefined")
        self.experiment = SurrogateExperiment(model, luminosity)
        self.expected_counts = counts if counts is not None else self.experiment.expected_counts
        self.model = model
        events = data.events if isinstance(data, EventData) else list(data)
        if len(events) != model.n_datasets:
            raise ValueError(f"need events for {model.n_datasets} datasets, got {len(events)}")
        self.dtype = torch.float64
        self.device = torch.device("cpu")
        shape = (-1,) if model.event_dim == 1 else (-1, model.event_dim)
        self.events = [torch.as_tensor(np.asarray(x).reshape(shape), dtype=self.dtype) for x in events]
        self.weights = None
        if weights is not None:
            self.weights = [torch.as_tensor(w, dtype=self.dtype).reshape(-1) for w in weights]
            if [len(w) for w in self.weights] != self.counts:
                raise ValueError(f"weights have {[len(w) for w in self.weights]} events, data {self.counts}")

    @property
    def counts(self) -> list[int]:
        """Events per dataset."""
        return [len(x) for x in self.events]

    def __call__(self, theta: Tensor) -> Tensor:
        """Log L(theta), [B] (constants independent of theta dropped), differentiable in theta."""
        theta = theta.to(self.dtype)
        nu = self.expected_counts(theta)
        total = -nu.sum(-1)
        for j, x in enumerate(self.events):
            log_q = self.model.log_prob(x, theta, j).to(self.dtype)
            log_q = torch.where(self.weights[j] > 0, self.weights[j] * log_q, 0.0) if self.weights else log_q
            n_j = x.new_tensor(float(len(x))) if self.weights is None else self.weights[j].sum()
            total = total + log_q.sum(-1) + n_j * torch.log(nu[:, j])
        return total


def likelihood_fidelity(
    model: Surrogate,
    experiment: Experiment,
    data: EventData,
    n_starts: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """The surrogate's MLE and Fisher matrix against the exact ones on one data set.

    Args:
        model: a flow surrogate with learned counts (moved to float64 here).
        experiment: the exact forward model the data came from.
        data: the events.
        n_starts: starts of each MLE fit (the box centre, random points and the other fit's optimum).
        seed: seed of the random starts.

    Returns:
        ``mle_offset_sd`` (surrogate MLE minus exact MLE over the Cramér–Rao sd at the exact MLE, per parameter),
        ``fisher_ratio`` (diagonal of the surrogate's expected Fisher matrix over the exact one, at the exact
        MLE), both MLEs, the Cramér–Rao sd, and which estimates sit on the box edge.
    """
    model = copy.deepcopy(model).double().cpu()
    luminosity = [d.luminosity for d in experiment.datasets]
    exact = fit_mle(ExtendedLikelihood(experiment, data), n_starts=n_starts, seed=seed)
    learned = fit_mle(SurrogateLikelihood(model, data, luminosity), n_starts=n_starts, seed=seed,
                      starts=exact.theta[None])  # fmt: skip
    theta = torch.as_tensor(exact.theta)[None]
    info = fisher_information(experiment, theta)
    sd = cramer_rao(info)[0][0].numpy()
    learned_info = surrogate_fisher(model, theta, luminosity=torch.tensor(luminosity, dtype=torch.float64))
    ratio = (torch.diagonal(learned_info, 0, 1, 2) / torch.diagonal(info, 0, 1, 2))[0]
    return {
        "mle_offset_sd": ((learned.theta - exact.theta) / sd).tolist(),
        "fisher_ratio": ratio.tolist(),
        "exact_mle": exact.theta.tolist(),
        "surrogate_mle": learned.theta.tolist(),
        "crlb_sd": sd.tolist(),
        "at_edge": {"exact": exact.at_edge.tolist(), "surrogate": learned.at_edge.tolist()},
    }
