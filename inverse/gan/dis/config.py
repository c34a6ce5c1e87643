"""Runcard of the DIS closure: the DIS problem, pseudo-data, the GAN and the report."""

from __future__ import annotations

from pydantic import Field, field_validator

from inverse.gan.config import GANConfig
from physics.config import PosteriorConfig
from physics.dis.config import DISConfig
from qcdgip.config import StrictModel

__all__ = ["DISClosureConfig", "DISDataConfig", "DISReportConfig"]


class DISDataConfig(StrictModel):
    """Pseudo-data: Poisson counts per Q^2 window and exact events at the truth."""

    seed: int = Field(1, description="pseudo-data seed")


class DISReportConfig(StrictModel):
    """What the report computes and its bars."""

    bootstrap_mles: bool = Field(True, description="fit each replica's exact bootstrap MLE to judge the replicas")
    posterior: bool = Field(True, description="draw the MCMC reference posterior of the data (``posterior:``)")
    lhapdf: bool = Field(True, description="write the replicas and the truth as LHAPDF sets (lhapdf/)")
    abs_pull_max: float = Field(3.0, gt=0, description="bar: |replica mean - truth| / Cramér–Rao sd below this")
    bootstrap_distance_median_max: float = Field(
        0.1, gt=0, description="bar: median |replica - its bootstrap MLE| in bootstrap sd"
    )
    bootstrap_std_ratio_range: tuple[float, float] = Field(
        (0.9, 1.1), description="bar: replica sd / bootstrap-MLE sd inside this range for every parameter"
    )
    fit_cpu_minutes_max: float = Field(10.0, gt=0, description="bar: CPU minutes of the GAN fit below this")


class DISClosureConfig(StrictModel):
    """Runcard of ``python -m inverse.gan.dis``."""

    physics: DISConfig = Field(default_factory=DISConfig)
    data: DISDataConfig = Field(default_factory=DISDataConfig)
    gan: GANConfig = Field(default_factory=GANConfig)
    posterior: PosteriorConfig = Field(
        default_factory=lambda: PosteriorConfig(coordinates="theta"),
        description="the MCMC reference posterior (chains run in the parameters themselves)",
    )
    report: DISReportConfig = Field(default_factory=DISReportConfig)

    @field_validator("posterior", mode="before")
    @classmethod
    def _theta_by_default(cls, value: object) -> object:
        if isinstance(value, dict) and "coordinates" not in value:
            return {**value, "coordinates": "theta"}
        return value

    @field_validator("posterior")
    @classmethod
    def _theta_coordinates(cls, value: PosteriorConfig) -> PosteriorConfig:
        if value.coordinates != "theta":
            raise ValueError("coordinates: DIS chains run in theta itself; 'norm' is the toy's reparameterisation")
        return value
