"""Batched bootstrap MLEs (physics.bootstrap) against the sequential scipy fits, and their optimality conditions.

The unit of every comparison is the posterior standard deviation sqrt(diag(I^-1)) of the expected (Fisher)
information at the data's MLE. Case B (15k events, data seed 1) has its MLE and replica MLEs inside the box;
case C (1.5k events, data seed 3) has its MLE on two box edges (Nu = 3, bd = 5), and so do most replicas.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from physics.bootstrap import fit_bootstrap_mles
from physics.datasets import Experiment
from physics.likelihood import (
    ExtendedLikelihood,
    fisher_information,
    fit_bootstrap_mles_sequential,
    fit_mle,
    observed_information,
)
from physics.pseudodata import EventData, poisson_replica_weights

SD_TOL = 1e-3  # batched vs scipy, in posterior sd


@dataclass
class Problem:
    case: str
    experiment: Experiment
    data: EventData
    mle: np.ndarray
    sd: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def edges(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        width = self.high - self.low
        return np.abs(theta - self.low) <= 1e-9 * width, np.abs(theta - self.high) <= 1e-9 * width


@pytest.fixture(scope="module", params=["B", "C"])
def problem(request) -> Problem:
    case = request.param
    exp = request.getfixturevalue(f"experiment_{case.lower()}")
    data = request.getfixturevalue(f"data_{case.lower()}")
    mle = fit_mle(ExtendedLikelihood(exp, data), n_starts=1).theta
    info = fisher_information(exp, torch.tensor(mle[None]))[0]
    sd = torch.sqrt(torch.diagonal(torch.linalg.inv(info))).numpy()
    low, high = np.array(exp.theory.low), np.array(exp.theory.high)
    return Problem(case, exp, data, mle, sd, low, high)


@pytest.fixture(scope="module")
def reference(problem):
    """Replicas fitted one by one with scipy (the reference), with their weights."""
    weights = poisson_replica_weights(problem.data.counts, 12, seed=11)
    return weights, fit_bootstrap_mles_sequential(problem.experiment, problem.data, weights, start=problem.mle)


def test_batched_fits_equal_sequential_scipy_fits(problem, reference):
    weights, sequential = reference
    batched = fit_bootstrap_mles(problem.experiment, problem.data, weights, start=problem.mle)
    assert batched.shape == sequential.shape
    assert np.all(np.abs(batched - sequential) / problem.sd < SD_TOL), np.abs(batched - sequential) / problem.sd
    # The bootstrap moves every replica's MLE off the data's (by about one sd): the start is not the answer.
    assert np.all((np.abs(batched - problem.mle) / problem.sd).max(-1) > 1e-2)
    if problem.case == "C":  # the edge fits are part of the comparison
        at_low, at_high = problem.edges(sequential)
        assert (at_low | at_high).any(), sequential


def test_batched_estimates_satisfy_the_kkt_conditions(problem):
    """Inside the box the gradient of each replica's log L vanishes; on an edge it points out of the box."""
    n_rep = 12
    weights = poisson_replica_weights(problem.data.counts, n_rep, seed=7)
    batched = fit_bootstrap_mles(problem.experiment, problem.data, weights, start=problem.mle)
    assert np.all((batched >= problem.low) & (batched <= problem.high))
    at_low, at_high = problem.edges(batched)
    if problem.case == "C":
        assert (at_low | at_high).any()
    for r in range(n_rep):
        like = ExtendedLikelihood(problem.experiment, problem.data, weights=[w[r] for w in weights])
        theta = torch.tensor(batched[r][None], requires_grad=True)
        (grad,) = torch.autograd.grad(like(theta).sum(), theta)
        grad_sd = grad[0].numpy() * problem.sd  # change of log L per posterior sd
        free = ~(at_low[r] | at_high[r])
        assert np.all(grad_sd[at_low[r]] <= 1e-6) and np.all(grad_sd[at_high[r]] >= -1e-6), grad_sd
        assert np.all(np.abs(grad_sd[free]) < 1e-4), grad_sd
        # Newton decrement of the free block: the distance to the maximum in the observed-information metric.
        info = observed_information(like, theta.detach())[free][:, free]
        assert torch.all(torch.linalg.eigvalsh(info) > 0), "not a local maximum of the free parameters"
        g = grad[0][free]
        assert torch.sqrt(g @ torch.linalg.solve(info, g)).item() < 1e-5


@pytest.mark.parametrize("problem", ["C"], indirect=True)
def test_unconverged_replica_falls_back_to_the_scipy_fit_with_a_warning(problem, reference):
    weights, sequential = reference
    first = [w[:1] for w in weights]
    with pytest.warns(RuntimeWarning, match=r"^1 of 1 bootstrap replicas did not converge in 1 "):
        batched = fit_bootstrap_mles(problem.experiment, problem.data, first, start=problem.mle, max_iter=1)
    assert np.all(np.abs(batched[0] - sequential[0]) / problem.sd < SD_TOL)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # converged replicas refit nothing
        fit_bootstrap_mles(problem.experiment, problem.data, first, start=problem.mle)
