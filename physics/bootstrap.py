"""Exact maximum-likelihood estimates of many Poisson-bootstrap replicas at once (projected Newton in torch).

Replica r of a data set weights event e of dataset j by k_{r,j,e} ~ Poisson(1), so its log-likelihood is the
weighted extended likelihood of :mod:`physics.likelihood`. One :class:`ExtendedLikelihood` holding the weights
[R, n_j] evaluates all R replicas in one pass, and since row r of log L depends on row r of theta alone, one
backward pass of the sum gives every replica's gradient and D more (batched) give every replica's exact Hessian.

All replicas start at the data's MLE, which every replica MLE lies about one standard error from, and take
projected Newton steps inside the prior box l <= theta <= u (Bertsekas 1982): a parameter on its bound whose
gradient points out of the box is held there, the others take the Newton step of their block of the Hessian of
-log L (the expected Fisher information, or a damped form, where that block is not positive definite), the
step is projected onto the box, and a backtracking (Armijo) line search along the projected arc keeps every
step an ascent of log L. A replica stops when its Newton decrement sqrt(g_F^T H_F^-1 g_F) -- about the
distance to its maximum in posterior standard deviations -- is below ``tol``: the KKT conditions then hold
(free gradient ~ 0, held parameters' gradients pointing outward). Replicas that do not converge are refitted
one by one with scipy (:func:`physics.likelihood.fit_bootstrap_mles_sequential`'s fit).

References:
    Bertsekas, "Projected Newton methods for optimization problems with simple constraints",
    SIAM J. Control Optim. 20 (1982) 221.
    Nocedal and Wright, "Numerical Optimization", 2nd ed. (2006), ch. 3 (backtracking line search) and 16.7
    (bound constraints).
    Boyd and Vandenberghe, "Convex Optimization" (2004), sec. 9.5 (Newton decrement as a stopping criterion).
    Hanley and MacGibbon, "Creating non-parametric bootstrap samples using Poisson frequencies",
    Comput. Methods Programs Biomed. 83 (2006) 57.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from physics.datasets import Experiment
from physics.likelihood import ExtendedLikelihood, fisher_information, fit_mle
from physics.pseudodata import EventData

__all__ = ["fit_bootstrap_mles"]

_ARMIJO = 1e-4  # sufficient-decrease constant of the line search
_HALVINGS = 40  # line-search trials per iteration (step down to 2^-39)
_SLACK = 1e-13  # relative rounding allowance on -log L in the line search (sums over ~1e4 events)


def fit_bootstrap_mles(
    experiment: Experiment,
    data: EventData,
    weights: list[Tensor],
    start: np.ndarray | None = None,
    progress: bool = False,
    *,
    max_iter: int = 50,
    tol: float = 1e-6,
) -> np.ndarray:
    """Exact maximum-likelihood estimate of every bootstrap replica, all replicas fitted together.

    Args:
        experiment: datasets with luminosities.
        data: the measured events.
        weights: per dataset, the replicas' event multiplicities [R, n_j] (e.g. ``poisson_replica_weights``);
            their device is where the fit runs (float64).
        start: where every replica starts (the data's MLE; default: ``fit_mle`` of the data from the box centre).
        progress: show a progress bar of converged replicas.
        max_iter: projected-Newton iterations before a replica is refitted with scipy.
        tol: Newton decrement (about posterior standard deviations) below which a replica has converged.

    Returns:
        [R, D] estimates.
    """
    weights = [torch.atleast_2d(torch.as_tensor(w, dtype=torch.float64)) for w in weights]
    device = weights[0].device
    like = ExtendedLikelihood(experiment, data, weights=list(weights), device=device)
    low, high = experiment.theory.box(torch.empty(0, dtype=torch.float64, device=device))
    if start is None:
        start = fit_mle(ExtendedLikelihood(experiment, data, device=device), n_starts=1).theta
    n_rep = int(weights[0].shape[0])
    theta = torch.as_tensor(np.asarray(start), dtype=torch.float64, device=device).clamp(low, high)
    theta = theta.reshape(1, -1).repeat(n_rep, 1)
    running = torch.ones(n_rep, dtype=torch.bool, device=device)
    converged = torch.zeros_like(running)
    with tqdm(total=n_rep, desc="bootstrap MLEs", disable=not progress, leave=False) as bar:
        for _ in range(max_iter):
            rows = running.nonzero().squeeze(-1)
            if rows.numel() == 0:
                break
            theta[rows], done, stalled = _newton_iteration(experiment, _rows(like, rows), theta[rows], tol)
            converged[rows[done]] = True
            running[rows[done | stalled]] = False
            bar.update(int(done.sum()))
    failed = (~converged).nonzero().squeeze(-1).tolist()
    return _refit(experiment, data, weights, theta.cpu().numpy(), failed, start, max_iter)


def _refit(
    experiment: Experiment,
    data: EventData,
    weights: list[Tensor],
    estimates: np.ndarray,
    failed: list[int],
    start: np.ndarray,
    max_iter: int,
) -> np.ndarray:
    """Refit the replicas ``failed`` one by one with scipy (with a warning that counts them)."""
    if not failed:
        return estimates
    warnings.warn(
        f"{len(failed)} of {len(estimates)} bootstrap replicas did not converge in {max_iter} projected-Newton "
        "iterations; refitted one by one with scipy's L-BFGS-B",
        RuntimeWarning,
        stacklevel=3,
    )
    device = weights[0].device
    for r in failed:
        like = ExtendedLikelihood(experiment, data, weights=[w[r] for w in weights], device=device)
        fit = fit_mle(like, n_starts=1, starts=np.asarray(start)[None])
        with torch.no_grad():
            current = float(like(torch.as_tensor(estimates[r][None], dtype=like.dtype, device=device))[0])
        if not current > fit.log_likelihood:  # keep the Newton iterate only where it is the better fit
            estimates[r] = fit.theta
    return estimates


def _rows(like: ExtendedLikelihood, rows: Tensor) -> ExtendedLikelihood:
    """The likelihood of a subset of the replicas (its weight rows ``rows``), sharing the tabulated events."""
    if rows.numel() == like.weights[0].shape[0]:
        return like
    sub = copy.copy(like)
    sub.weights = [w[rows] for w in like.weights]
    return sub


def _derivatives(experiment: Experiment, like: ExtendedLikelihood, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Return -log L [R], its gradient [R, D] and exact Hessian [R, D, D] per replica, by autograd.

    Row r of -log L depends on theta[r] alone, so the gradient of the sum holds every replica's gradient and
    the gradient of its i-th column every replica's i-th Hessian row (batched over i by ``is_grads_batched``).
    Replicas go in chunks that keep the second pass's [D, rows, events] tensors below ``like.max_elements``
    (times the folding nodes per event, with a detector).
    """
    per_event = 1
    if experiment.folding is not None:
        per_event = experiment.detector.config.nodes * max(len(p) for p in experiment.folding.pieces.values())
    per_row = theta.shape[1] * max(max(like.counts), 1) * per_event
    n_chunks = min(max(-(-theta.shape[0] * per_row // like.max_elements), 1), theta.shape[0])
    rows = torch.arange(theta.shape[0], device=theta.device)
    parts = [_chunk_derivatives(_rows(like, idx), theta[idx]) for idx in torch.tensor_split(rows, n_chunks)]
    return tuple(torch.cat(p) for p in zip(*parts))


def _chunk_derivatives(like: ExtendedLikelihood, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_derivatives` of one chunk of replicas."""
    theta = theta.detach().requires_grad_(True)
    value = -like(theta)
    (grad,) = torch.autograd.grad(value.sum(), theta, create_graph=True)
    n_rep, dim = theta.shape
    basis = torch.eye(dim, dtype=theta.dtype, device=theta.device).unsqueeze(1).expand(dim, n_rep, dim)
    try:
        (rows,) = torch.autograd.grad(grad, theta, grad_outputs=basis, is_grads_batched=True, retain_graph=True)
    except RuntimeError:  # an operation without a batching rule: one backward pass per component
        rows = torch.stack([torch.autograd.grad(grad[:, i].sum(), theta, retain_graph=True)[0] for i in range(dim)])
    hess = rows.transpose(0, 1)
    return value.detach(), grad.detach(), 0.5 * (hess + hess.transpose(1, 2))


def _metric_factor(experiment: Experiment, theta: Tensor, hess: Tensor, free: Tensor) -> Tensor:
    """Cholesky factor [R, D, D] of the positive-definite metric of the Newton step, per replica.

    Held parameters get a unit row and column (with a zero gradient their step is zero). Where the free block
    of the Hessian of -log L is not positive definite (far from the maximum) the free block of the expected
    Fisher information replaces it, and where that is singular too (a flavour with N = 0 on the box edge
    leaves its exponents undetermined) a Levenberg–Marquardt damping of its diagonal is added.
    """
    pair = free.unsqueeze(-1) & free.unsqueeze(-2)
    unit = torch.diag_embed((~free).to(hess.dtype))
    chol, info = torch.linalg.cholesky_ex(torch.where(pair, hess, torch.zeros_like(hess)) + unit)
    bad = (info != 0).nonzero().squeeze(-1)
    if bad.numel() == 0:
        return chol
    fisher = fisher_information(experiment, theta[bad])
    fisher = torch.where(pair[bad], fisher, torch.zeros_like(fisher)) + unit[bad]
    diagonal = torch.diagonal(fisher, dim1=-2, dim2=-1)
    damping = torch.diag_embed(diagonal + diagonal.mean(-1, keepdim=True))
    pending = torch.ones(len(bad), dtype=torch.bool, device=bad.device)
    for mu in (0.0, 1e-10, 1e-6, 1e-3, 1.0):
        factor, trial_info = torch.linalg.cholesky_ex(fisher + mu * damping)
        ok = pending & (trial_info == 0)
        chol[bad[ok]] = factor[ok]
        pending &= ~ok
    return chol


def _newton_iteration(
    experiment: Experiment, like: ExtendedLikelihood, theta: Tensor, tol: float
) -> tuple[Tensor, Tensor, Tensor]:
    """One projected Newton iteration of every replica in ``like``.

    Returns:
        (new theta [R, D], converged before stepping [R], line search failed [R]).
    """
    low, high = experiment.theory.box(theta)
    value, grad, hess = _derivatives(experiment, like, theta)
    held = ((theta <= low) & (grad > 0)) | ((theta >= high) & (grad < 0))
    free_grad = torch.where(held, torch.zeros_like(grad), grad)
    chol = _metric_factor(experiment, theta, hess, ~held)
    direction = -torch.cholesky_solve(free_grad.unsqueeze(-1), chol).squeeze(-1)
    decrement = torch.sqrt((-free_grad * direction).sum(-1).clamp_min(0.0))
    done = decrement < tol
    new = theta.clone()
    stepping = (~done).nonzero().squeeze(-1)
    stalled = torch.zeros_like(done)
    if stepping.numel():
        args = (theta[stepping], value[stepping], grad[stepping], direction[stepping])
        new[stepping], ok = _line_search(_rows(like, stepping), *args, low, high)
        stalled[stepping[~ok]] = True
    return new, done, stalled


def _line_search(
    like: ExtendedLikelihood, theta: Tensor, value: Tensor, grad: Tensor, direction: Tensor, low: Tensor, high: Tensor
) -> tuple[Tensor, Tensor]:
    """Backtracking along the projected arc P(theta + t d), t = 1, 1/2, ..., with the Armijo condition.

    The condition -log L(P(theta + t d)) <= -log L(theta) + c grad . (P(theta + t d) - theta) allows a rounding
    slack of ``_SLACK`` |log L|, so that a step whose decrease is below the precision of the sum is not refused.

    Returns:
        (accepted theta [R, D], whether a step was accepted [R]).
    """
    new = theta.clone()
    step = torch.ones_like(value)
    pending = torch.ones_like(value, dtype=torch.bool)
    for _ in range(_HALVINGS):
        rows = pending.nonzero().squeeze(-1)
        if rows.numel() == 0:
            break
        trial = torch.clamp(theta[rows] + step[rows, None] * direction[rows], low, high)
        with torch.no_grad():
            trial_value = -_rows(like, rows)(trial)
        bound = value[rows] + _ARMIJO * (grad[rows] * (trial - theta[rows])).sum(-1)
        ok = torch.isfinite(trial_value) & (trial_value <= bound + _SLACK * (value[rows].abs() + 1.0))
        new[rows[ok]] = trial[ok]
        pending[rows[ok]] = False
        step[rows[~ok]] *= 0.5
    return new, ~pending
