"""The GAN's networks, replica-stacked: a parameter generator and event discriminators.

Both are plain ``nn.Module``s over R replicas (``inverse.stacked``); the training logic lives in
``inverse.gan.model`` and Lightning wraps it in ``inverse.gan.training``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from inverse.gan.config import DiscriminatorConfig, GeneratorConfig
from inverse.stacked import StackedMLP, replica_generator

__all__ = [
    "EventDiscriminators",
    "ParameterGenerator",
    "basis_degree",
    "basis_size",
    "event_features",
    "monomials",
    "whitening",
]


class ParameterGenerator(nn.Module):
    """Noise -> parameters inside the prior box: theta = low + (high - low) * sigmoid(logits).

    Args:
        config: generator settings.
        low: lower box edges [D].
        high: upper box edges [D].
        replicas: replica indices (seeds of the initial weights).
        seed: base seed.
    """

    def __init__(
        self, config: GeneratorConfig, low: Sequence[float], high: Sequence[float], replicas: Sequence[int], seed: int
    ) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("low", torch.tensor(list(low), dtype=torch.float32))
        self.register_buffer("high", torch.tensor(list(high), dtype=torch.float32))
        n_params = len(low)
        # Each replica starts from its own point of the box, so replicas that all reach the same estimate show it.
        start = torch.stack(
            [
                torch.randn(1, n_params, generator=replica_generator(seed, r, "generator.start"), dtype=torch.float64)
                for r in replicas
            ]
        )
        self.offset = nn.Parameter((config.init_spread * start).float())
        self.net = (
            StackedMLP(
                replicas, config.noise_dim, n_params, config.depth, config.width, config.activation, seed, "generator"
            )
            if config.kind == "mlp"
            else None
        )

    @property
    def noise_dim(self) -> int:
        """Noise variables per parameter set (0 for a point mass)."""
        return self.config.noise_dim if self.net is not None else 0

    def draw_noise(self, n: int, rng: torch.Generator) -> Tensor:
        """Noise for n parameter sets of one replica, [n, noise_dim], on this module's device and dtype."""
        shape = (n, self.noise_dim)
        like = self.offset
        if self.config.noise == "normal":
            return torch.randn(shape, generator=rng, dtype=like.dtype, device=like.device)
        return torch.rand(shape, generator=rng, dtype=like.dtype, device=like.device) * 2 - 1

    def logits(self, noise: Tensor, replicas: slice = slice(None)) -> Tensor:
        """Pre-sigmoid outputs [r, B, D] for noise [r, B, noise_dim]."""
        offset = self.offset[replicas]
        if self.net is None:
            return offset.expand(noise.shape[0], noise.shape[1], -1)
        return self.net(noise, replicas) + offset

    def to_box(self, logits: Tensor) -> Tensor:
        """Map pre-sigmoid outputs into the box."""
        return self.low + (self.high - self.low) * torch.sigmoid(logits)

    def from_box(self, theta: Tensor) -> Tensor:
        """The pre-sigmoid values of parameters inside the box (inverse of :meth:`to_box`)."""
        unit = ((theta - self.low) / (self.high - self.low)).clamp(1e-12, 1 - 1e-12)
        return torch.logit(unit)

    def box_jacobian(self, logits: Tensor) -> Tensor:
        """D theta / d logits of :meth:`to_box`, elementwise (the map is diagonal)."""
        s = torch.sigmoid(logits)
        return (self.high - self.low) * s * (1 - s)

    def forward(self, noise: Tensor, replicas: slice = slice(None)) -> Tensor:
        """Parameters [r, B, D] for noise [r, B, noise_dim]."""
        return self.to_box(self.logits(noise, replicas))


def event_features(x: Tensor, kind: str, event_dim: int = 1) -> Tensor:
    """Per-event features with a last dimension of size F.

    One-dimensional events [...] (x): (log x, log(1 - x)), or x itself (``kind: x``). DIS events [..., 2]
    (x, Q^2): (log x, log(1 - x), log Q^2), or the raw pair.
    """
    if kind == "x":
        return x.unsqueeze(-1) if event_dim == 1 else x
    q2 = None
    if event_dim > 1:
        if event_dim != 2:
            raise ValueError(f"log features are defined for events (x) and (x, Q^2), not for {event_dim} dimensions")
        x, q2 = x[..., 0], x[..., 1]
    # A float32 event can round to exactly 1 (or 0) when the density does not vanish there.
    eps = torch.finfo(x.dtype).eps
    x = x.clamp(eps, 1 - eps)
    feats = [torch.log(x), torch.log1p(-x)] + ([torch.log(q2)] if q2 is not None else [])
    return torch.stack(feats, dim=-1)


@functools.cache
def _monomial_factors(n_features: int, degree: int) -> tuple[tuple[list[int], list[int]], ...]:
    """For each degree d >= 2: which degree-(d - 1) monomial and which feature multiply into each degree-d one."""
    previous = [(i,) for i in range(n_features)]
    out = []
    for _ in range(2, degree + 1):
        combos = sorted({tuple(sorted((*c, i))) for c in previous for i in range(n_features)})
        position = {c: k for k, c in enumerate(previous)}
        out.append(([position[c[:-1]] for c in combos], [c[-1] for c in combos]))
        previous = combos
    return tuple(out)


def monomials(z: Tensor, degree: int) -> Tensor:
    """Every monomial of the last dimension's F features up to ``degree``, [..., F] -> [..., C(F + degree, F) - 1].

    Ordered by degree, then lexicographically in the feature indices (degree 1 returns ``z`` itself); each degree
    is one product of the previous degree's monomials with a feature.
    """
    blocks = [z]
    for left, right in _monomial_factors(z.shape[-1], degree):
        blocks.append(blocks[-1][..., left] * z[..., right])
    return torch.cat(blocks, dim=-1)


def whitening(basis: Tensor, cutoff: float, used: int | None = None) -> tuple[Tensor, Tensor]:
    """Mean [K] and projection [K, K] that make the first ``used`` basis functions [N, K] orthonormal on these events.

    Directions whose variance is below ``cutoff`` times the largest (after each function is scaled to unit
    variance) are nearly constant on the events; their columns of the projection are zero, so the discriminator
    cannot put large weights on them and a fresh sample's noise along them is never amplified. The rows of the
    functions after the first ``used`` (default: all) are zero as well, so the output keeps K columns whatever
    part of the basis a dataset uses.
    """
    n_basis = basis.shape[-1]
    used = n_basis if used is None else used
    mean = basis.mean(0)
    scale = basis[:, :used].std(0).clamp_min(1e-12)
    z = (basis[:, :used] - mean[:used]) / scale
    lam, vec = torch.linalg.eigh(z.T @ z / max(len(z) - 1, 1))
    keep = lam > cutoff * lam.max()
    block = torch.where(keep, vec / lam.clamp_min(1e-300).sqrt(), torch.zeros_like(vec)) / scale[:, None]
    projection = basis.new_zeros(n_basis, n_basis)
    projection[:used, :used] = block
    return mean, projection


def basis_size(n_features: int, degree: int) -> int:
    """How many monomials of ``n_features`` variables have degrees 1 to ``degree``."""
    return math.comb(n_features + degree, n_features) - 1


def basis_degree(n_events: int, n_features: int, degree: int, events_per_function: int) -> int:
    """The highest degree up to ``degree`` whose monomials each have ``events_per_function`` events (at least 1)."""
    fits = [d for d in range(1, degree + 1) if basis_size(n_features, d) * events_per_function <= n_events]
    return max(fits, default=1)


class EventDiscriminators(nn.Module):
    """One discriminator per dataset, or one shared by all datasets (the dataset then enters as a one-hot).

    A discriminator sees sets of ``set_size`` events (sorted by x; 1 means single events) and returns a logit.

    Args:
        config: discriminator settings.
        feature_mean: mean of each dataset's event features in the data, [J, F] (for standardization).
        feature_std: their standard deviations, [J, F].
        replicas: replica indices.
        seed: base seed.
        event_dim: dimension of one event (1: x; 2: (x, Q^2), then sets are [r, M, 1, 2]).
        basis_moments: with ``config.degree > 1``, the whitening of every monomial of the standardized features on
            the data, (mean [J, K], projection [J, K, K]) (:func:`monomials`, :func:`whitening`).
    """

    def __init__(
        self,
        config: DiscriminatorConfig,
        feature_mean: Tensor,
        feature_std: Tensor,
        replicas: Sequence[int],
        seed: int,
        event_dim: int = 1,
        basis_moments: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.event_dim = event_dim
        self.n_datasets, n_features = feature_mean.shape
        self.register_buffer("feature_mean", feature_mean.float())
        self.register_buffer("feature_std", feature_std.float())
        if config.degree > 1:
            if basis_moments is None:
                raise ValueError(f"discriminator.degree {config.degree} needs the data's moments of its monomials")
            self.register_buffer("basis_mean", basis_moments[0].float())
            self.register_buffer("basis_projection", basis_moments[1].float())
            n_features = self.basis_mean.shape[-1]
        fan_in = n_features * config.set_size
        if config.mode == "single":
            self.nets = nn.ModuleList(
                [
                    StackedMLP(
                        replicas,
                        fan_in + self.n_datasets,
                        1,
                        config.depth,
                        config.width,
                        config.activation,
                        seed,
                        "discriminator",
                    )
                ]
            )
        else:
            self.nets = nn.ModuleList(
                StackedMLP(
                    replicas, fan_in, 1, config.depth, config.width, config.activation, seed, f"discriminator.{j}"
                )
                for j in range(self.n_datasets)
            )
        if config.depth == 0:
            # A logistic regression starts at D = 1/2 (it cannot tell the samples apart yet): its optimum is small.
            for p in self.parameters():
                nn.init.zeros_(p)

    def standardized(self, events: Tensor, dataset: int) -> Tensor:
        """The discriminator's inputs per event, [..., F] (standardized features, or their standardized monomials)."""
        feats = event_features(events, self.config.features, self.event_dim)
        feats = (feats - self.feature_mean[dataset]) / self.feature_std[dataset]
        if self.config.degree > 1:
            # Scaled to the data's range and clamped, so that no event far out in a tail gets a huge monomial.
            feats = 2.0 * torch.tanh(feats / 2.0)
            feats = (monomials(feats, self.config.degree) - self.basis_mean[dataset]) @ self.basis_projection[dataset]
        return feats

    def forward(self, events: Tensor, dataset: int, replicas: slice = slice(None)) -> Tensor:
        """Logits [r, M] of event sets [r, M, set_size] (sorted along the last dimension) of ``dataset``."""
        size = events.shape[-1] if self.event_dim == 1 else events.shape[-2]
        if size != self.config.set_size:
            raise ValueError(f"event sets must have size {self.config.set_size}, got {size}")
        feats = self.standardized(events, dataset).flatten(-2)
        if self.config.mode == "single":
            onehot = feats.new_zeros(*feats.shape[:-1], self.n_datasets)
            onehot[..., dataset] = 1.0
            return self.nets[0](torch.cat([feats, onehot], dim=-1), replicas).squeeze(-1)
        return self.nets[dataset](feats, replicas).squeeze(-1)
