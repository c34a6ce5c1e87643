"""Network pieces shared by the surrogates and the inverse solvers: the activation functions a runcard can name."""

from __future__ import annotations

from typing import Literal

from torch import nn

__all__ = ["ACTIVATIONS", "Activation", "activation"]

Activation = Literal["relu", "leaky_relu", "elu", "gelu", "silu", "tanh"]
"""The activation names a runcard accepts."""

ACTIVATIONS: tuple[str, ...] = Activation.__args__


def activation(name: str, negative_slope: float = 0.2) -> nn.Module:
    """The activation module called ``name`` (``negative_slope`` is leaky_relu's).

    Raises:
        ValueError: an unknown name.
    """
    modules = {
        "relu": nn.ReLU,
        "leaky_relu": lambda: nn.LeakyReLU(negative_slope),
        "elu": nn.ELU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "tanh": nn.Tanh,
    }
    if name not in modules:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(modules)}")
    return modules[name]()
