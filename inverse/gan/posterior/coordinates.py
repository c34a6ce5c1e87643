"""The coordinates the Langevin chains move in: the toy's normalisation integrals, or the parameters themselves."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from physics.posterior import NormCoordinates

__all__ = ["ThetaCoordinates", "sampling_coordinates"]


class ThetaCoordinates:
    """psi = theta, for any parameterisation (DIS's shape parameters, whose normalisations the sum rules fix)."""

    def to_phi_torch(self, theta: Tensor) -> Tensor:
        """The parameters themselves."""
        return theta

    def to_theta_torch(self, psi: Tensor) -> tuple[Tensor, Tensor]:
        """The coordinates themselves, with a zero log-Jacobian."""
        return psi, psi.new_zeros(psi.shape[:-1])


def sampling_coordinates(experiment: Any, kind: str) -> NormCoordinates | ThetaCoordinates:
    """``auto``: the normalisation-integral coordinates for the toy's N x^a (1-x)^b PDFs, theta otherwise.

    Raises:
        ValueError: ``norm`` asked for an experiment without the toy's parameterisation (DIS).
    """
    toy = hasattr(experiment, "datasets") and hasattr(getattr(experiment, "config", None), "quadrature")
    if kind == "theta" or (kind == "auto" and not toy):
        return ThetaCoordinates()
    if not toy:
        raise ValueError(
            "gan.posterior.coordinates: norm needs the toy's N x^a (1-x)^b parameterisation with a normalisation per "
            "flavour; set coordinates: theta (or auto)"
        )
    return NormCoordinates(experiment, "norm")
