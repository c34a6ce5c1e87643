"""Natural-gradient steps for the point-mass generator: one Fisher-preconditioned step per replica.

The generator loss of ``density_ratio`` + the Poisson rate term has the gradient of the negative extended
log-likelihood, whose curvature is the expected Fisher matrix I(theta) (``physics.likelihood``). Adam scales each
coordinate alone and crawls along the 0.99-correlated (N, a) directions; the step

    delta_phi = -lr (I_phi + lambda mean(diag I_phi) 1)^-1 grad_phi,   I_phi = J I(theta) J,  J = d theta / d phi,

is invariant to how the parameters are scaled and correlated (Amari 1998), so every direction converges at the same
rate. The Mahalanobis length sqrt(delta^T I_phi delta) (in posterior sd) is capped by a trust region that shrinks
with the learning-rate schedule (large steps while far away, small ones where Polyak averaging collects the
estimate), which also keeps steps finite where the sigmoid box map flattens (I_phi -> 0 at the prior-box edges);
phi is clamped to |phi| <= 12 so theta never reaches the edge itself (N = 0 would make the rate term infinite).

Near an edge the metric of that coordinate vanishes like (d theta / d phi)^2, so the damping dominates it and a
step of a few posterior sd in Mahalanobis length can move its phi by ten units: the replica lands at the clamp,
where the vanishing gradient of the sigmoid holds it. ``max_logit_step`` caps every coordinate's change of phi
per step (the whole step is scaled, so its direction is kept), which stops such jumps. A coordinate held at the
clamp by a gradient that pushes it further out leaves the Newton system (projected Newton), so that its coupling
does not deflect the other coordinates away from their optimum on that face of the box.

Even so the metric is not the curvature in phi near an edge (the sigmoid bends over one step): the Newton step of
a coordinate there is hundreds of units, a cap turns it into a fixed +-1 that bounces, and the whole-step scaling
freezes the others. ``step_space="box"`` takes the step in s = sigmoid(phi) instead, through the Jacobian
s (1 - s), where the likelihood is close to quadratic, and moves no coordinate more than half its distance to the
edge it approaches (the fraction-to-boundary rule of interior-point methods).

The discriminators bound the speed: after a step they must relearn the density ratio before the next gradient is
right, which is why a larger trust region or learning rate makes the fit oscillate instead of converging faster
(measured: docs/solvers/gan.md).

References:
    Amari, "Natural gradient works efficiently in learning", Neural Computation 10 (1998) 251.
    Bertsekas, "Projected Newton methods for optimization problems with simple constraints", SIAM J. Control
    Optim. 20 (1982) 221.
    Nocedal & Wright, "Numerical Optimization", 2nd ed., Springer (2006), ch. 19 (fraction to the boundary).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["NaturalGradient"]


class NaturalGradient(torch.optim.Optimizer):
    """Per-replica natural-gradient descent on a [R, 1, D] parameter (the point generator's pre-sigmoid offsets).

    Args:
        params: exactly one parameter of shape [R, 1, D].
        metric: returns the Fisher matrix in the parameter's coordinates, [R, D, D], at its current value.
        lr: step size (1 would be a Newton step on an exact gradient; the gradient here is stochastic).
        damping: lambda, relative to the mean diagonal of the metric.
        max_step: cap of the Mahalanobis step length (in units of the local posterior sd).
        metric_every: recompute the metric every this many steps (it changes slowly).
        max_logit: |pre-sigmoid value| cap, so theta stays strictly inside the box (N > 0, finite log rates).
        max_logit_step: cap of any coordinate's change of the pre-sigmoid value per step (None: no cap).
        damping_scale: ``mean``: lambda times the mean metric diagonal on every coordinate; ``diagonal``: lambda
            times each coordinate's own diagonal (Marquardt), which keeps the damping from swamping a coordinate
            whose metric has collapsed near a box edge.
        step_space: ``logit``: the step is added to the pre-sigmoid values; ``box``: it is mapped to the unit box
            s = sigmoid(phi) by its Jacobian and taken there, each coordinate going at most ``BOUNDARY_FRACTION``
            of its distance to the edge it moves toward (a fraction-to-boundary rule).
    """

    def __init__(
        self,
        params: Any,
        metric: Callable[[], Tensor],
        lr: float = 0.2,
        damping: float = 1e-3,
        max_step: float = 1.0,
        metric_every: int = 10,
        max_logit: float = 12.0,
        max_logit_step: float | None = None,
        damping_scale: str = "mean",
        step_space: str = "logit",
    ) -> None:
        super().__init__(params, {"lr": lr})
        group = self.param_groups[0]["params"]
        if len(self.param_groups) != 1 or len(group) != 1 or group[0].ndim != 3 or group[0].shape[1] != 1:
            raise ValueError("NaturalGradient takes one parameter of shape [R, 1, D] (generator.kind: point)")
        self.metric = metric
        self.damping = damping
        self.max_step = max_step
        self.metric_every = metric_every
        self.max_logit = max_logit
        self.max_logit_step = max_logit_step
        if damping_scale not in ("mean", "diagonal"):
            raise ValueError(f"damping_scale must be 'mean' or 'diagonal', got {damping_scale!r}")
        self.damping_scale = damping_scale
        if step_space not in ("logit", "box"):
            raise ValueError(f"step_space must be 'logit' or 'box', got {step_space!r}")
        self.step_space = step_space

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Apply one step to every replica."""
        loss = closure() if closure is not None else None
        group = self.param_groups[0]
        (p,) = group["params"]
        if p.grad is None:
            return loss
        state = self.state[p]
        count = state.get("step", 0)
        n_rep, _, dim = p.shape
        phi = p.detach().reshape(n_rep, dim)
        box = self.step_space == "box"
        key = "box_metric" if box else "metric"
        j = _unit_jacobian(phi) if box else None
        if key not in state or count % self.metric_every == 0:
            metric = self.metric().to(dtype=p.dtype, device=p.device)
            if j is not None:  # kept without the Jacobian s (1 - s) it was computed with: the Jacobian changes by
                # orders of magnitude in a step near an edge, the metric of the box itself slowly
                metric = metric / (j[:, :, None] * j[:, None, :])
            state[key] = metric
        state["step"] = count + 1
        grad = p.grad.reshape(n_rep, dim)
        # Projected Newton: a coordinate held at the clamp by a gradient that pushes it further out leaves the
        # system, so its coupling does not deflect the other coordinates' steps (Bertsekas 1982).
        active = (phi.abs() >= self.max_logit - 0.5) & (grad * phi.sign() < 0)
        if j is not None:
            ds, damped = self._newton(state["box_metric"], grad / j, active, group)  # the gradient in s is grad / j
            step = phi - _fraction_to_boundary(phi, _held_at_edges(phi, ds, damped))
        else:
            step = self._newton(state["metric"], grad, active, group)[0]
        if self.max_logit_step is not None:
            largest = step.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
            step = step * (self.max_logit_step / largest).clamp(max=1.0)
        p.sub_(step.reshape(p.shape))
        p.clamp_(-self.max_logit, self.max_logit)
        return loss

    def _newton(self, fisher: Tensor, grad: Tensor, active: Tensor, group: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The damped, projected and trust-region-capped step [R, D] for metric [R, D, D] and gradient [R, D].

        Returns:
            The step and the damped (projected) metric it solved with.
        """
        dim = grad.shape[-1]
        diag = fisher.diagonal(dim1=-2, dim2=-1)
        scale = diag.mean(-1, keepdim=True) if self.damping_scale == "mean" else diag
        damped = fisher + torch.diag_embed(self.damping * scale.clamp_min(torch.finfo(grad.dtype).tiny).expand(-1, dim))
        free = (~active).to(grad.dtype)
        damped = damped * free[:, :, None] * free[:, None, :] + torch.diag_embed(1.0 - free)
        grad = grad * free
        delta = torch.linalg.solve(damped, grad.unsqueeze(-1)).squeeze(-1)
        length = torch.einsum("ri,rij,rj->r", delta, damped, delta).clamp_min(0).sqrt() * group["lr"]
        # The trust region shrinks with the learning-rate schedule: wide while far from the optimum, narrow
        # where the Polyak average is taken. Its Mahalanobis length is the same in phi and in the box.
        cap = self.max_step * group["lr"] / group.get("initial_lr", group["lr"])
        factor = (cap / length.clamp_min(torch.finfo(grad.dtype).tiny)).clamp(max=1.0)
        return (group["lr"] * factor)[:, None] * delta, damped


def _unit_jacobian(phi: Tensor) -> Tensor:
    """The Jacobian s (1 - s) of s = sigmoid(phi), floored so that it divides safely at the clamp."""
    s = torch.sigmoid(phi)
    return (s * (1 - s)).clamp_min(torch.finfo(phi.dtype).tiny)


BOUNDARY_FRACTION = 0.5


def _held_at_edges(phi: Tensor, ds: Tensor, metric: Tensor, passes: int = 2) -> Tensor:
    """The box step ``ds`` [R, D] with its other coordinates re-solved where the boundary rule cuts one short.

    The Newton step moves every coordinate jointly; along a 0.99-correlated ridge the others' steps assume the
    cut coordinate moves all the way. Holding the cut coordinates A at what the rule lets them move, the quadratic
    model's minimum over the free ones F moves them by M_FF^-1 M_FA (ds_A - cut_A) more (M: the damped metric the
    step was solved with; the model's scale is that of ``ds``). Without this a replica at an edge is pushed along
    the ridge, away from its optimum, by the part of the step its held coordinate cannot take. The result is no
    longer, in the metric, than ``ds`` was.
    """
    s = torch.sigmoid(phi)
    held = torch.zeros_like(ds, dtype=torch.bool)
    length = torch.einsum("ri,rij,rj->r", ds, metric, ds)
    for _ in range(passes):
        room = torch.where(ds > 0, s, 1 - s) * BOUNDARY_FRACTION
        newly = (ds.abs() > room) & ~held
        if not bool(newly.any()):
            break
        cut = ds.sign() * torch.minimum(ds.abs(), room)
        excess = torch.where(newly, ds - cut, torch.zeros_like(ds))
        held = held | newly
        free = (~held).to(ds.dtype)
        block = metric * free[:, :, None] * free[:, None, :] + torch.diag_embed(1.0 - free)
        shift = torch.linalg.solve(block, (free[:, :, None] * metric @ excess.unsqueeze(-1))).squeeze(-1)
        ds = torch.where(held, cut, ds + shift * free)
    # No longer than the trust-region step it came from (in the metric), by shrinking the free coordinates.
    factor = (length / torch.einsum("ri,rij,rj->r", ds, metric, ds).clamp_min(torch.finfo(ds.dtype).tiny)).sqrt()
    return torch.where(held, ds, ds * factor.clamp(max=1.0)[:, None])


def _fraction_to_boundary(phi: Tensor, ds: Tensor) -> Tensor:
    """The pre-sigmoid values after the step s - ds in the unit box s = sigmoid(phi).

    No coordinate goes more than ``BOUNDARY_FRACTION`` of its distance to the edge it moves toward, so s stays
    inside (0, 1) and an edge is approached geometrically.
    """
    s = torch.sigmoid(phi)
    room = torch.where(ds > 0, s, 1 - s) * BOUNDARY_FRACTION
    s_new = s - ds.sign() * torch.minimum(ds.abs(), room)
    return torch.logit(s_new.clamp(torch.finfo(phi.dtype).tiny, 1 - torch.finfo(phi.dtype).eps))
