"""Replica-stacked networks: R independent MLPs held as one set of [R, ...] weight tensors.

One batched matrix product per layer evaluates every replica's network on its own inputs, and a loss summed
over replicas gives each replica exactly the gradient it would get alone; optimizers that act elementwise
(Adam, SGD, RMSprop) then update each replica as if it were trained by itself. Each replica's initial weights
come from its own seed, so replica r is the same whatever R is (NNPDF's one-model-many-replicas,
arXiv:2109.02653).

Both inverse solvers build on these pieces (the GAN's generator and discriminators, VAIM's activations).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from qcdgip.nn import activation

__all__ = ["StackedLinear", "StackedMLP", "activation", "replica_generator", "replica_seed"]


def replica_seed(seed: int, replica: int, stream: str) -> int:
    """A 63-bit seed for one replica and one random stream, independent of how many replicas there are."""
    words = [int(seed), int(replica), *(ord(c) for c in stream)]
    high, low = (int(v) for v in np.random.SeedSequence(words).generate_state(2, dtype=np.uint32))
    return ((high << 32) | low) & (2**63 - 1)


def replica_generator(seed: int, replica: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded by :func:`replica_seed`."""
    return torch.Generator(device=device).manual_seed(replica_seed(seed, replica, stream))


class StackedLinear(nn.Module):
    """R affine maps y_r = x_r W_r + b_r with weights [R, in, out] and biases [R, 1, out].

    Args:
        replicas: the replica indices (their seeds initialize the weights as ``nn.Linear`` would).
        fan_in: input features.
        fan_out: output features.
        seed: base seed.
        stream: name of the random stream (distinct per layer).
    """

    def __init__(self, replicas: Sequence[int], fan_in: int, fan_out: int, seed: int, stream: str) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(fan_in)
        weights, biases = [], []
        for r in replicas:
            gen = replica_generator(seed, r, stream)
            weights.append((torch.rand(fan_in, fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
            biases.append((torch.rand(1, fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
        self.weight = nn.Parameter(torch.stack(weights).float())
        self.bias = nn.Parameter(torch.stack(biases).float())

    def forward(self, x: Tensor, replicas: slice = slice(None)) -> Tensor:
        """Apply the maps of ``replicas`` to x [r, N, in]; returns [r, N, out]."""
        return torch.baddbmm(self.bias[replicas], x, self.weight[replicas])


class StackedMLP(nn.Module):
    """R multilayer perceptrons of equal shape evaluated in one pass.

    Args:
        replicas: replica indices.
        fan_in: input features.
        fan_out: output features.
        depth: hidden layers.
        width: hidden units per layer.
        activation_name: hidden activation.
        seed: base seed.
        stream: name of the random stream.
    """

    def __init__(
        self,
        replicas: Sequence[int],
        fan_in: int,
        fan_out: int,
        depth: int,
        width: int,
        activation_name: str,
        seed: int,
        stream: str,
    ) -> None:
        super().__init__()
        sizes = [fan_in] + [width] * depth + [fan_out]
        self.layers = nn.ModuleList(
            StackedLinear(replicas, a, b, seed, f"{stream}.{i}") for i, (a, b) in enumerate(itertools.pairwise(sizes))
        )
        self.act = activation(activation_name)

    def forward(self, x: Tensor, replicas: slice = slice(None)) -> Tensor:
        """Evaluate on x [r, N, in] for the replicas in ``replicas``; returns [r, N, out]."""
        for i, layer in enumerate(self.layers):
            x = layer(x, replicas)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x
