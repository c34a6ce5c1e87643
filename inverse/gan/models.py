"""The GAN's networks, replica-stacked: a parameter generator and event discriminators.

Both are plain ``nn.Module``s over R replicas (``inverse.stacked``); the training logic lives in
``inverse.gan.model`` and Lightning wraps it in ``inverse.gan.training``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from inverse.gan.config import DiscriminatorConfig, GeneratorConfig
from inverse.stacked import StackedMLP, replica_generator

__all__ = ["EventDiscriminators", "ParameterGenerator", "event_features"]


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
    """

    def __init__(
        self,
        config: DiscriminatorConfig,
        feature_mean: Tensor,
        feature_std: Tensor,
        replicas: Sequence[int],
        seed: int,
        event_dim: int = 1,
    ) -> None:
        super().__init__()
        self.config = config
        self.event_dim = event_dim
        self.n_datasets, n_features = feature_mean.shape
        self.register_buffer("feature_mean", feature_mean.float())
        self.register_buffer("feature_std", feature_std.float())
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

    def forward(self, events: Tensor, dataset: int, replicas: slice = slice(None)) -> Tensor:
        """Logits [r, M] of event sets [r, M, set_size] (sorted along the last dimension) of ``dataset``."""
        size = events.shape[-1] if self.event_dim == 1 else events.shape[-2]
        if size != self.config.set_size:
            raise ValueError(f"event sets must have size {self.config.set_size}, got {size}")
        feats = event_features(events, self.config.features, self.event_dim)
        feats = (feats - self.feature_mean[dataset]) / self.feature_std[dataset]
        feats = feats.flatten(-2)
        if self.config.mode == "single":
            onehot = feats.new_zeros(*feats.shape[:-1], self.n_datasets)
            onehot[..., dataset] = 1.0
            return self.nets[0](torch.cat([feats, onehot], dim=-1), replicas).squeeze(-1)
        return self.nets[dataset](feats, replicas).squeeze(-1)
