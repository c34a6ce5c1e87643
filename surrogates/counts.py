"""Learned expected event counts nu_j(theta): what the rate term and the Fisher matrix take from a simulator.

A black-box simulator reports, for each parameter set, every dataset's expected count (or its cross section
times the luminosity). :class:`CountModel` regresses log nu_j on the parameters scaled to [-1, 1] over the prior
box with an MLP, so the extended likelihood's Poisson term N_j log nu_j - nu_j and its gradient need no theory.
It is fitted by the Poisson deviance sum_i [nu_ij - y_ij log nu_ij], which is minimal at nu = y when the targets
y are expected counts and is the Poisson likelihood when they are simulated event numbers, so either works.
Counts enter the fit at the precision 1 / sqrt(N_j) (1 % for 10^4 events), so the model must be good to a few
parts in 10^4 over the box: full-batch L-BFGS after an Adam warm start, in float64.

References:
    McCullagh and Nelder, "Generalized Linear Models", 2nd ed. (1989), ch. 6 (Poisson deviance).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qcdgip.nn import activation
from surrogates.config import CountsConfig

__all__ = ["CountModel", "fit_counts"]


class CountModel(nn.Module):
    """Expected counts of J datasets as a function of D parameters in a box.

    Args:
        low: the box's lower edges [D].
        high: its upper edges [D].
        n_datasets: J.
        config: network width, depth and activation.
    """

    def __init__(self, low: Tensor, high: Tensor, n_datasets: int, config: CountsConfig) -> None:
        super().__init__()
        self.register_buffer("box_low", torch.as_tensor(low).clone())
        self.register_buffer("box_high", torch.as_tensor(high).clone())
        self.register_buffer("log_scale", torch.zeros(n_datasets))
        self.register_buffer("trained", torch.zeros((), dtype=torch.bool))
        layers: list[nn.Module] = []
        for i in range(config.depth):
            layers += [nn.Linear(len(low) if i == 0 else config.width, config.width), activation(config.activation)]
        self.net = nn.Sequential(*layers, nn.Linear(config.width, n_datasets))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def log_expected(self, theta: Tensor) -> Tensor:
        """Log nu_j(theta), [B, J], in theta's dtype (differentiable)."""
        w = self.box_low.to(theta)
        scaled = 2.0 * (theta - w) / (self.box_high.to(theta) - w) - 1.0
        return (self.net(scaled.to(self.log_scale.dtype)) + self.log_scale).to(theta.dtype)

    def forward(self, theta: Tensor) -> Tensor:
        """Expected counts nu_j(theta), [B, J]."""
        return torch.exp(self.log_expected(theta))


def _deviance(model: CountModel, theta: Tensor, target: Tensor) -> Tensor:
    log_nu = model.log_expected(theta)
    # Subtracting the minimum (y - y log y) makes the value 0 at a perfect fit, so the tolerance means something.
    return ((torch.exp(log_nu) - target * log_nu) - (target - target * torch.log(target))).sum(-1).mean()


def fit_counts(model: CountModel, theta: Tensor, target: Tensor, config: CountsConfig) -> dict[str, float]:
    """Fit ``model`` to counts ``target`` [M, J] at parameters ``theta`` [M, D] (in place, float64).

    Returns:
        Facts of the fit: the final mean deviance per parameter set and the largest relative error on the
        training targets.
    """
    if theta.ndim != 2 or target.shape != (theta.shape[0], model.log_scale.shape[0]):
        raise ValueError(f"counts: parameters {tuple(theta.shape)} and targets {tuple(target.shape)} do not match")
    if not bool((target > 0).all()):
        raise ValueError("counts: every target count must be positive (a dataset with no events cannot be learned)")
    dtype = model.log_scale.dtype
    model.double()
    theta, target = theta.double(), target.double()
    with torch.no_grad():
        model.log_scale.copy_(torch.log(target).mean(0))
    g = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        for p in model.net.parameters():
            if p.dim() > 1 and p.abs().sum() > 0:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / p.shape[1] ** 0.5)
    adam = torch.optim.Adam(model.net.parameters(), lr=config.lr)
    for _ in range(config.adam_steps):
        adam.zero_grad()
        _deviance(model, theta, target).backward()
        adam.step()
    lbfgs = torch.optim.LBFGS(model.net.parameters(), max_iter=config.lbfgs_steps, line_search_fn="strong_wolfe",
                              tolerance_grad=1e-12, tolerance_change=1e-15, history_size=50)  # fmt: skip

    def closure() -> Tensor:
        lbfgs.zero_grad()
        loss = _deviance(model, theta, target)
        loss.backward()
        return loss

    lbfgs.step(closure)
    with torch.no_grad():
        deviance = float(_deviance(model, theta, target))
        rel = float((model(theta) / target - 1.0).abs().max())
        model.trained.fill_(True)
    model.to(dtype)
    return {"deviance": deviance, "max_relative_error": rel}
