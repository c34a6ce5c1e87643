"""Newton steps for logistic-regression discriminators: the density ratio on a fixed basis, refitted every step.

A discriminator of ``depth: 0`` is a logistic regression f(x) = w . h(x) + b on a fixed basis h (the whitened
monomials of ``discriminator.degree``). Its loss, sum_data a softplus(-f) + sum_generated c softplus(f), is convex
with the gradient

    g = sum_data -a (1 - s) h~ + sum_generated c s h~,    s = sigmoid(f), h~ = (h, 1),

and a Hessian bounded by B = (sum_data a h~ h~^T + sum_generated c h~ h~^T) / 4, since s (1 - s) <= 1/4 (Boehning
and Lindsay). One step w <- w - lr (B + ridge)^-1 g per training step never increases the loss at lr = 1, and at
the optimum of two samples the discriminator cannot tell apart (s = 1/2) B is the Hessian, so the step is Newton's.
It keeps the discriminator at the optimum of the current samples instead of one Adam step behind it: Adam moves
every weight by about its learning rate per step whatever the gradient, which on a converged logistic regression is
pure jitter of the density ratio; this step moves it by the statistical noise of the samples, and ``lr`` < 1
averages that over about 1 / lr steps. At the fixed point the generator then solves the score equation projected on
the basis: the maximum-likelihood estimate as far as the basis spans the score. The data's part of B is fixed, so
it is computed once per replica.

References:
    Kaji, Manresa & Pouliot, arXiv:2007.06169 (adversarial estimation with logistic discriminators on sieves).
    Boehning & Lindsay, "Monotonicity of quadratic-approximation algorithms", Ann. Inst. Stat. Math. 40 (1988)
    641 (the bound on the logistic Hessian).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LogisticNewton", "NewtonTerms", "logistic_terms"]

NewtonTerms = list[tuple[Tensor, Tensor]]


def _with_bias(h: Tensor) -> Tensor:
    return torch.cat([h, torch.ones_like(h[..., :1])], dim=-1)


def _curvature(h: Tensor, weights: Tensor) -> Tensor:
    """The bound sum_n w_n h_n h_n^T / 4, [r, K + 1, K + 1], for features [r, n, K + 1] or [n, K + 1]."""
    weighted = weights[..., None] * h
    return weighted.transpose(-1, -2) @ h / 4.0


def _side(h: Tensor, f: Tensor, weights: Tensor, real: bool) -> tuple[Tensor, Tensor]:
    """Loss [r] and gradient [r, K + 1] of one side of the logistic loss, features [r, n, K + 1] or [n, K + 1]."""
    s = torch.sigmoid(f)
    loss = (weights * F.softplus(-f if real else f)).sum(-1)
    grad = ((weights * (s - 1.0 if real else s))[:, None, :] @ h)[:, 0]
    return loss, grad


def _data_side(model: Any, j: int, replicas: slice, coef: Tensor, cache: dict) -> tuple[Tensor, Tensor, Tensor]:
    """Loss, gradient and curvature bound of the data's side of dataset j (its basis and bound are kept)."""
    t, k = model.config.training, model.config.discriminator.set_size
    if k > 1 or t.data_batch is not None:  # sampled data sets: new ones every step
        real_sets, real_w = model._data_sets(j, replicas)
        real = _with_bias(model.discriminators.standardized(real_sets, j).flatten(-2).double())
        real_w = (real_w if real_w is not None else real.new_full(real.shape[:2], 1.0 / real.shape[1])).double()
        return (*_side(real, (real @ coef)[..., 0], real_w, True), _curvature(real, real_w))
    x = model.data(j)
    own = model._block(len(x))
    w = model.weights(j)[replicas]
    real_w = (w[:, own] / (w.sum(-1, keepdim=True) / model.world)).double()
    key = (j, own.start, own.stop, replicas.start, replicas.stop, x.device)
    if key not in cache:
        with torch.no_grad():
            basis = model.discriminators.standardized(x[own].view(-1, 1, *x.shape[1:]), j).flatten(-2)
            real = _with_bias(basis.double())
            cache[key] = (real, _curvature(real, real_w))
    real, bound = cache[key]
    loss, grad = _side(real, (coef[..., 0] @ real.T), real_w, True)
    return loss, grad, bound


def logistic_terms(
    model: Any, events: Sequence[Any], replicas: slice, cache: dict | None = None
) -> tuple[Tensor, NewtonTerms]:
    """The discriminators' loss [r] and each dataset's step terms (gradient, curvature bound) on these events.

    Args:
        model: an :class:`inverse.gan.model.InverseGAN` whose discriminators have depth 0.
        events: generated events per dataset (``Generated``: events [r, B, m, ...] and weights or None).
        replicas: the replica slice.
        cache: where the data events' basis and curvature are kept between calls (None: computed afresh).

    Returns:
        The masked loss summed over datasets, [r], and per dataset (gradient [r, K + 1], bound [r, K + 1, K + 1])
        in float64, already multiplied by the dataset's fit mask.
    """
    disc = model.discriminators
    mask = model.fit_mask[replicas]
    cache = {} if cache is None else cache
    total = None
    terms: NewtonTerms = []
    for j, generated in enumerate(events):
        layer = disc.nets[j].layers[0]
        coef = torch.cat([layer.weight[replicas, :, 0], layer.bias[replicas, :, 0]], dim=-1).double()[:, :, None]
        fake = _with_bias(disc.standardized(model._generated_sets(generated.x), j).flatten(-2).double())
        fake_w = model._set_weights(generated.w)
        fake_w = (fake_w if fake_w is not None else fake.new_full(fake.shape[:2], 1.0 / fake.shape[1])).double()
        real_loss, real_grad, real_bound = _data_side(model, j, replicas, coef, cache)
        fake_loss, fake_grad = _side(fake, (fake @ coef)[..., 0], fake_w, False)
        m = mask[:, j].double()
        total = m * (real_loss + fake_loss) if total is None else total + m * (real_loss + fake_loss)
        bound = real_bound + _curvature(fake, fake_w)
        terms.append((m[:, None] * (real_grad + fake_grad), m[:, None, None] * bound))
    return total, terms


class LogisticNewton(torch.optim.Optimizer):
    """Bounded-curvature Newton steps of depth-0 discriminators from terms gathered by :func:`logistic_terms`.

    Args:
        discriminators: the model's ``EventDiscriminators`` (depth 0, one per dataset).
        lr: fraction of the Newton step (1: jump to the optimum of the current samples).
        ridge: added to the curvature's diagonal, relative to its mean diagonal (directions the basis dropped have
            zero features, so the ridge keeps the system solvable; their weights stay 0).
    """

    def __init__(self, discriminators: torch.nn.Module, lr: float = 0.5, ridge: float = 1e-3) -> None:
        super().__init__(list(discriminators.parameters()), {"lr": lr})
        self.discriminators = discriminators
        self.ridge = ridge
        self.cache: dict = {}  # the data events' basis, for logistic_terms
        self._pending: list[tuple[slice, NewtonTerms]] = []

    def add(self, replicas: slice, terms: NewtonTerms) -> None:
        """Queue the terms of a replica slice for the next :meth:`step`."""
        self._pending.append((replicas, terms))

    def pending(self) -> list[tuple[slice, NewtonTerms]]:
        """The queued terms (data-parallel training averages them over processes in place)."""
        return self._pending

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """Apply one damped Newton step per queued slice and dataset, then clear the queue."""
        loss = closure() if closure is not None else None
        lr = self.param_groups[0]["lr"]
        for replicas, terms in self._pending:
            for j, (grad, hess) in enumerate(terms):
                eye = torch.eye(hess.shape[-1], dtype=hess.dtype, device=hess.device)
                scale = torch.diagonal(hess, dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)[:, None, None]
                delta = torch.linalg.solve(hess + self.ridge * scale * eye, grad[..., None])[..., 0]
                layer = self.discriminators.nets[j].layers[0]
                layer.weight[replicas] -= (lr * delta[:, :-1, None]).to(layer.weight.dtype)
                layer.bias[replicas] -= (lr * delta[:, -1:, None]).to(layer.bias.dtype)
        self._pending = []
        return loss
