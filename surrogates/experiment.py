"""What an inverse solver takes from the theory, taken from a surrogate instead: counts, Fisher matrix, box.

:class:`SurrogateExperiment` stands where :class:`physics.datasets.Experiment` stands for the GAN solver: the
dataset names, the parameter box, the expected counts nu_j(theta) (:mod:`surrogates.counts`) and the expected
Fisher matrix of the extended likelihood, computed from the surrogate's own density by autograd
(:func:`surrogate_fisher`). With it and a surrogate sampler the solver never calls the theory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.func import jvp

from physics.dis.experiment import ParameterBox
from surrogates.base import Surrogate

__all__ = ["SurrogateExperiment", "surrogate_fisher"]


def _scores(model: Surrogate, theta: Tensor, j: int, n_events: int, generator: torch.Generator) -> Tensor:
    """Per-event scores grad_theta log q_j(x; theta) at events x ~ q_j(theta), [B, m, D].

    Forward-mode derivatives, one parameter direction at a time: every event keeps its parameter set's context (the
    flow's per-set work is shared by its events), where reverse mode would need one row of theta per event.
    """
    theta = theta.detach()
    with torch.no_grad():
        x = model.sample(theta, n_events, j, generator=generator)
    columns = []
    for i in range(theta.shape[1]):
        direction = torch.zeros_like(theta)
        direction[:, i] = 1.0
        _, derivative = jvp(lambda th: model.log_prob(x, th, j), (theta,), (direction,))
        columns.append(derivative)
    return torch.stack(columns, -1)


def surrogate_fisher(
    model: Surrogate,
    theta: Tensor,
    dataset_weights: Tensor | None = None,
    luminosity: Tensor | None = None,
    n_events: int = 1024,
    seed: int = 0,
) -> Tensor:
    """Expected Fisher matrix of the extended likelihood under the surrogate, [B, D, D].

    sum_j w_bj [nu_j E_q[s s^T] + grad nu_j grad nu_j^T / nu_j], with the score s = grad_theta log q_j(x; theta)
    averaged over ``n_events`` events drawn from the surrogate (a fixed seed, so the metric is a function of
    theta), and nu_j the learned counts. It needs a surrogate with a density (the flow).

    Args:
        model: the surrogate.
        theta: parameter sets [B, D].
        dataset_weights: 0/1 per dataset, [B, J] or [J] (None: all).
        luminosity: the luminosities the counts are rescaled to, [J] (None: those they were learned at).
        n_events: events per parameter set and dataset in the average.
        seed: seed of those events.

    Raises:
        ValueError: the surrogate has no density or no learned counts.
    """
    if not model.has_log_prob:
        raise ValueError(f"a {model.kind} surrogate has no density: its Fisher matrix needs log_prob (use a flow)")
    theta = theta.detach()
    weights = torch.ones(theta.shape[0], model.n_datasets, dtype=theta.dtype, device=theta.device)
    if dataset_weights is not None:
        weights = weights * torch.as_tensor(dataset_weights).to(theta)
    with torch.enable_grad():
        th = theta.clone().requires_grad_(True)
        nu = model.expected_counts(th, luminosity)
        grads = [torch.autograd.grad(nu[:, j].sum(), th, retain_graph=True)[0] for j in range(model.n_datasets)]
    generator = torch.Generator(device=theta.device).manual_seed(seed)
    total = theta.new_zeros(theta.shape[0], theta.shape[1], theta.shape[1])
    for j in range(model.n_datasets):
        s = _scores(model, theta, j, n_events, generator).to(theta)
        shape = torch.einsum("bmi,bmk->bik", s, s) / n_events
        count = grads[j][:, :, None] * grads[j][:, None, :] / nu[:, j, None, None].detach()
        total = total + weights[:, j, None, None] * (nu[:, j, None, None].detach() * shape + count)
    return total


class SurrogateExperiment:
    """Datasets, box, counts and Fisher matrix of a surrogate, in the place of the theory's experiment.

    Args:
        model: a surrogate (the counts and the Fisher matrix need learned counts; the Fisher matrix a density).
        luminosity: per dataset, the luminosities of the data being fitted (None: those the counts were learned
            at); the learned counts are rescaled by the ratio.
        n_fisher_events: events per parameter set and dataset in the Fisher matrix's average.
    """

    def __init__(self, model: Surrogate, luminosity: Sequence[float] | None = None, n_fisher_events: int = 1024):
        problem = model.config.problem
        self.model = model
        self.config = problem
        self.event_dim = model.event_dim
        self.names = list(model.dataset_names)
        self.theory = ParameterBox(problem.parameter_names, problem.truth, problem.low, problem.high)
        self.luminosity = None if luminosity is None else torch.tensor(list(luminosity), dtype=torch.float64)
        self.n_fisher_events = n_fisher_events

    def expected_counts(self, theta: Tensor) -> Tensor:
        """Learned nu_j(theta), [B, J]."""
        return self.model.expected_counts(theta, self.luminosity)

    def fisher_information(self, theta: Tensor, dataset_weights: Tensor | None = None) -> Tensor:
        """The surrogate's expected Fisher matrix, [B, D, D] (:func:`surrogate_fisher`)."""
        return surrogate_fisher(self.model, theta, dataset_weights, self.luminosity, self.n_fisher_events)
