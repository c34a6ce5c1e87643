"""The chains' transition kernel: a partial momentum refresh, then a velocity-Verlet step, in whitened units.

With whitened coordinates z = L^-1 psi (C = L L^T the preconditioner), velocity v and h = sqrt(eps), one step is

    v <- c v + s xi                      (O: keep a fraction c of the velocity, refresh the rest)
    v <- v + (h / 2) grad_z log pi(z)    (B)
    z <- z + h v                         (A)
    v <- v + (h / 2) grad_z log pi(z)    (B, at the new point; the next step's first kick reuses it)

For c = 0 it is the unadjusted Langevin step psi + (eps / 2) C grad + sqrt(eps s^2) L xi; for c > 0 the chains keep
their direction for about 1 / (1 - c) steps, so they cross a posterior in fewer steps than a random walk (the
generalized HMC of Horowitz, one leapfrog step per refresh). On a Gaussian the velocity-Verlet step keeps
v^2 + (1 - eps / 4) z^2, so a velocity variance T = 1 - eps / 4 at the refresh makes the positions' variance 1;
the gradient's noise (variance V per whitened coordinate) reaches the velocity through both kicks between two
refreshes, (h / 2)(1 + c) times, so it is taken out of the refresh:

    s^2 = T (1 - c^2) - (eps / 4)(1 + c)^2 V.

References:
    Horowitz, "A generalized guided Monte Carlo algorithm", Phys. Lett. B 268 (1991) 247.
    Chen, Fox and Guestrin, "Stochastic gradient Hamiltonian Monte Carlo", arXiv:1402.4102 (noise subtraction).
    Leimkuhler and Matthews, "Rational construction of stochastic numerical methods for molecular sampling",
    arXiv:1203.5428 (splittings of Langevin dynamics).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "error_covariance",
    "fit_lag",
    "half_kick",
    "injected_variance",
    "kinetic_step",
    "lag_coefficients",
    "lag_corrected",
    "refresh_root",
    "refresh_variance",
]


def refresh_variance(eps: float, noise: float, momentum: float = 0.0) -> float:
    """s^2: the variance of the velocity's refresh per whitened coordinate (module docstring).

    Floored at 5 % of 1 - c^2: a gradient noisier than the step can absorb would otherwise ask for a negative one.

    Args:
        eps: step size (h^2), in units of the preconditioner.
        noise: the gradient's noise variance per whitened coordinate (V).
        momentum: the fraction c of the velocity kept at the refresh, in [0, 1).
    """
    keep = 1.0 - momentum**2
    return max((1.0 - 0.25 * eps) * keep - 0.25 * eps * (1.0 + momentum) ** 2 * noise, 0.05 * keep)


def injected_variance(eps: float, noise: float, momentum: float = 0.0) -> float:
    """The noise variance per whitened coordinate a step puts into the positions, eps s^2.

    For momentum 0 it is q = eps - (eps^2 / 4)(1 + V), the unadjusted Langevin step's noise with its first-order
    excess and the gradient's noise taken out.
    """
    return eps * refresh_variance(eps, noise, momentum)


def half_kick(velocity: Tensor, grad: Tensor, chol: Tensor, eps: float, max_drift: float) -> Tensor:
    """The velocity plus (h / 2) L^T grad: the kick's share of a step's move (h times it) capped at ``max_drift``.

    Far from the posterior (a poor start, a lagging discriminator) an uncapped step would leave the box at every
    try, and a chain whose proposals are all refused never moves; near it the cap is not reached.

    Args:
        velocity: whitened velocities [C, D].
        grad: grad log pi in the sampling coordinates psi [C, D].
        chol: Cholesky factor L of the preconditioner [D, D].
        eps: step size.
        max_drift: largest move a kick may cause, in whitened units.
    """
    h = eps**0.5
    kick = 0.5 * h * grad @ chol
    kick = kick * (max_drift / (h * kick.norm(dim=-1, keepdim=True)).clamp_min(1e-300)).clamp(max=1.0)
    return velocity + kick


def kinetic_step(
    psi: Tensor,
    velocity: Tensor,
    grad: Tensor,
    chol: Tensor,
    eps: float,
    momentum: float,
    refresh: Tensor,
    max_drift: float,
) -> tuple[Tensor, Tensor]:
    """The refresh, the first kick and the move of one step; returns the proposal and its velocity.

    The second kick (:func:`half_kick` with the gradient at the accepted point) completes the step.

    Args:
        psi: positions in the sampling coordinates [C, D].
        velocity: whitened velocities [C, D].
        grad: grad log pi at ``psi`` [C, D].
        chol: Cholesky factor L of the preconditioner [D, D].
        eps: step size (h^2).
        momentum: fraction c of the velocity kept.
        refresh: the refresh's draws [C, D] (standard normal draws times :func:`refresh_root`).
        max_drift: cap of the kick's move in whitened units.
    """
    velocity = momentum * velocity + refresh
    velocity = half_kick(velocity, grad, chol, eps, max_drift)
    return psi + eps**0.5 * velocity @ chol.T, velocity


def refresh_root(eps: float, noise: Tensor, momentum: float = 0.0) -> Tensor:
    """Symmetric root of the refresh's covariance T (1 - c^2) I - (eps / 4)(1 + c)^2 N, eigenvalues floored.

    N [D, D] is the gradient error's covariance per whitened coordinate; the floor is 5 % of 1 - c^2.

    The matrix form of :func:`refresh_variance`: the discriminators' error is far from isotropic (the event counts
    fix the normalisations exactly, the shapes carry the discriminators' noise), so each direction gets its own.
    """
    keep = 1.0 - momentum**2
    eye = torch.eye(noise.shape[-1], dtype=noise.dtype, device=noise.device)
    cov = (1.0 - 0.25 * eps) * keep * eye - 0.25 * eps * (1.0 + momentum) ** 2 * 0.5 * (noise + noise.T)
    values, vectors = torch.linalg.eigh(cov)
    return vectors @ torch.diag(values.clamp_min(0.05 * keep).sqrt()) @ vectors.T


def error_covariance(residuals: Tensor, lags: int = 2) -> Tensor:
    """Covariance per step of the gradient's error that a chain integrates: Gamma_0 + sum_j (Gamma_j + Gamma_j^T).

    A discriminator's error persists over a few steps (its weights change a little per step), and errors of
    neighbouring steps push a chain the same way, so their autocovariances up to ``lags`` steps count as well.

    Args:
        residuals: the gradients' residuals [S, C, D] (step, chain, whitened coordinate).
        lags: steps of autocovariance added.
    """
    res = residuals - residuals.mean(dim=(0, 1))
    steps = res.shape[0]
    cov = torch.einsum("sci,scj->ij", res, res) / (steps * res.shape[1])
    for j in range(1, min(lags, steps - 1) + 1):
        gamma = torch.einsum("sci,scj->ij", res[j:], res[:-j]) / ((steps - j) * res.shape[1])
        cov = cov + gamma + gamma.T
    return 0.5 * (cov + cov.T)


def lag_coefficients(d: int, k: int, quadratic: bool = False) -> int:
    """The number of coefficients per gradient component in :func:`fit_lag`'s regression.

    Args:
        d: the dimension of psi.
        k: the number of moves back.
        quadratic: whether the products psi_i psi_j are columns as well.
    """
    return 1 + (1 + k) * d + (d * (d + 1) // 2 if quadratic else 0)


def fit_lag(psi: Tensor, moves: Tensor, grad: Tensor, quadratic: bool = False) -> tuple[Tensor, Tensor]:
    """The discriminators' lag: least-squares matrices M_k with grad ~ a + B psi + sum_k M_k move_k.

    A discriminator updated a few times at the chains' new parameters still remembers where they were, so the
    gradient it yields is, to first order, the one a little way back along the chains' last moves,
    g(psi - lambda move); on a posterior whitened by the preconditioner that is g(psi) + lambda move. Regressing the
    gradients on the positions and the last moves over the burn-in measures that term (M_k, one per move back),
    which :func:`lag_corrected` then takes out. A discriminator error that persists from one step to the next
    (and so pushed the last move) shows up in M_k as well; the residuals carry the rest of it
    (:func:`error_covariance`). The regression is equivariant, so it runs in psi with standardized columns.

    Where the posterior is not Gaussian in psi its exact gradient is not linear in psi, and a linear fit would
    leave that curvature in the residuals, where it would pass for noise and narrow the chains; ``quadratic`` adds
    the products psi_i psi_j to the regression, and scales the residuals by sqrt(n / (n - p)) for its p
    coefficients per component (40 for D = 6 and two moves: on a short burn-in the residuals would run small).

    Args:
        psi: positions [N, D] at which the gradients were taken.
        moves: the last K moves that led there [N, K, D] (newest first; zero for a refused proposal).
        grad: the gradients [N, D].
        quadratic: add the second-order terms in psi.

    Returns:
        The lag matrices [K, D, D] (grad's part M_k @ move_k) and the fit's residuals [N, D].
    """
    n, k, d = moves.shape
    columns = torch.cat([psi, moves.reshape(n, k * d)], dim=1)
    if quadratic:
        z = (psi - psi.mean(0)) / psi.std(0).clamp_min(1e-300)
        i, j = torch.triu_indices(d, d)
        columns = torch.cat([columns, z[:, i] * z[:, j]], dim=1)
    mean, sd = columns.mean(0), columns.std(0).clamp_min(1e-300)
    design = torch.cat([torch.ones_like(psi[:, :1]), (columns - mean) / sd], dim=1)
    coef = torch.linalg.lstsq(design, grad).solution  # [p, D]
    lag = coef[1 + d : 1 + d + k * d] / sd[d : d + k * d, None]  # [K D, D]: move coefficients in the original units
    residuals = grad - design @ coef
    if quadratic:
        residuals = residuals * (n / max(n - lag_coefficients(d, k, quadratic), 1)) ** 0.5
    return lag.reshape(k, d, d).transpose(1, 2), residuals


def lag_corrected(grad: Tensor, moves: Tensor, lag: Tensor | None) -> Tensor:
    """The gradient with the discriminators' lag taken out: grad - sum_k M_k move_k (``lag`` None: unchanged).

    Args:
        grad: gradients [C, D].
        moves: the chains' last K moves [C, K, D] (newest first).
        lag: the matrices of :func:`fit_lag` [K, D, D].
    """
    if lag is None:
        return grad
    return grad - torch.einsum("kij,ckj->ci", lag, moves)
