"""Validated runcard of ``python -m inverse.vaim``: the problem, the networks, the loss, training and draws.

Every field has a working default except the problem's simulator and parameters; ``configs/vaim_x2.yaml`` lists
them all. Unknown keys and bad values raise ``ValueError`` naming the file and the field.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from qcdgip.config import StrictModel
from qcdgip.nn import Activation

__all__ = [
    "NoiseConfig",
    "ObservationConfig",
    "ProblemConfig",
    "VAIMConfig",
    "VAIMLossConfig",
    "VAIMModelConfig",
    "VAIMParameter",
    "VAIMSamplingConfig",
    "VAIMTrainingConfig",
]


class VAIMParameter(StrictModel):
    """One unknown: its name and uniform prior box; ``truth`` (optional) is only drawn in plots."""

    name: str = Field(description="parameter name")
    low: float = Field(description="lower edge of the prior box")
    high: float = Field(description="upper edge of the prior box")
    truth: float | None = Field(None, description="true value, drawn in the plots (optional)")

    @model_validator(mode="after")
    def _check_box(self) -> VAIMParameter:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"parameter {self.name!r}: need finite low < high, got [{self.low}, {self.high}]")
        return self


class NoiseConfig(StrictModel):
    """Observation noise added to the simulator's output (training pairs and noisy observations).

    ``gaussian``: y + sigma * eps, with ``sigma`` one value or one per observable.
    ``poisson``:  y ~ Poisson(f) (counts); the scale used for forward consistency is sqrt(max(y, 1)).
    ``none``:     the simulator's output as is (it may add its own noise); ``sigma`` still sets the scale of
                  the forward-consistency error.
    """

    kind: Literal["gaussian", "poisson", "none"] = Field(
        "gaussian", description="gaussian (sigma) | poisson | none (the simulator adds its own)"
    )
    sigma: float | list[float] = Field(0.05, description="gaussian: sd, one value or one per observable")

    @field_validator("sigma")
    @classmethod
    def _positive(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if not values or not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"every sigma must be finite and > 0, got {value}")
        return value


class ObservationConfig(StrictModel):
    """The observation(s) to invert: given ``values``, or simulated at ``parameters`` (Asimov or noisy)."""

    values: list[list[float]] | None = Field(None, description="observed y vectors, one per observation")
    parameters: list[list[float]] | None = Field(None, description="simulate the observation at these parameters")
    noisy: bool = Field(False, description="add the noise model to simulated observations (else Asimov data)")
    seed: int = Field(7, ge=0, description="seed of the noise of simulated observations")

    @model_validator(mode="after")
    def _one_source(self) -> ObservationConfig:
        if (self.values is None) == (self.parameters is None):
            raise ValueError("give exactly one of values or parameters")
        rows = self.values if self.values is not None else self.parameters
        if not rows or any(not r for r in rows) or len({len(r) for r in rows}) != 1:
            raise ValueError("observations must be a non-empty list of equally long, non-empty vectors")
        if not all(math.isfinite(v) for r in rows for v in r):
            raise ValueError("observations must be finite")
        return self


class ProblemConfig(StrictModel):
    """The forward problem: simulator, prior box, noise and what was observed."""

    simulator: str = Field(description="'package.module:function' taking theta [n, d], returning y [n, m]")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the simulator")
    parameters: list[VAIMParameter]
    observables: list[str] | None = Field(None, description="names of the observables (default y0, y1, ...)")
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    observations: ObservationConfig

    @model_validator(mode="after")
    def _check(self) -> ProblemConfig:
        names = [p.name for p in self.parameters]
        if not names:
            raise ValueError("parameters: give at least one")
        if len(set(names)) != len(names):
            raise ValueError(f"parameters: names must be unique, got {names}")
        obs = self.observations
        if obs.parameters is not None and len(obs.parameters[0]) != len(names):
            raise ValueError(
                f"observations.parameters: rows need {len(names)} values ({names}), got {len(obs.parameters[0])}"
            )
        return self


class VAIMModelConfig(StrictModel):
    """Encoder and decoder: residual MLPs (the public VAIM used 7 blocks of 1024 and a 100-d latent)."""

    width: int = Field(128, ge=4, le=4096, description="hidden width of the residual blocks")
    blocks: int = Field(3, ge=0, le=32, description="residual blocks per network")
    latent_dim: int = Field(2, ge=1, le=256, description="latent dimension")
    activation: Activation = Field("silu", description="hidden activation")
    log_observables: bool = Field(
        False, description="standardize log(1 + y) instead of y (counts spanning decades); y must be >= 0"
    )


class VAIMLossConfig(StrictModel):
    """loss = w_reconstruction |x_hat - x|^2 + w_forward |y_hat - y|^2 + w_kl KL(q(z|x) || N(0, I)).

    Squared errors are in standardized units (parameters scaled to [-1, 1] by the box, observables by their
    training mean and standard deviation), averaged over components; KL is summed over latent dimensions.
    ``decoder_input``: ``observed`` feeds the decoder the simulated y during training (what it sees at
    inference); ``predicted`` feeds the encoder's y_hat, as in the original VAIM.
    """

    w_reconstruction: float = Field(1.0, ge=0.0, description="weight of |x_hat - x|^2")
    w_forward: float = Field(1.0, ge=0.0, description="weight of |y_hat - y|^2")
    w_kl: float = Field(0.01, ge=0.0, description="weight of the KL divergence of the latent from N(0, I)")
    decoder_input: Literal["observed", "predicted"] = Field(
        "observed", description="the decoder reads the observed y or the encoder's predicted y_hat"
    )


class VAIMTrainingConfig(StrictModel):
    """Training set and optimisation (Adam, cosine schedule, Lightning)."""

    n_train: int = Field(50_000, ge=16, description="simulated (parameters, observables) pairs")
    batch_size: int = Field(512, ge=1, description="pairs per step")
    steps: int = Field(4000, ge=1, description="training steps")
    lr: float = Field(1e-3, gt=0.0, description="Adam learning rate")
    min_lr_ratio: float = Field(0.02, ge=0.0, le=1.0, description="cosine schedule: final rate / initial rate")
    weight_decay: float = Field(0.0, ge=0.0, description="Adam weight decay")
    seed: int = Field(0, ge=0, description="seeds the pairs, the initialization and the minibatches")
    dtype: Literal["float32", "float64"] = Field("float32", description="float32 or float64")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = Field(
        "cpu", description="auto | cpu | gpu | cuda | mps"
    )
    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints (checkpoints/last.ckpt)")
    log_every: int = Field(50, ge=1, description="steps between log rows and progress-bar updates")
    progress: bool = Field(True, description="show a progress bar")
    threads: int = Field(
        0, ge=0, le=4096, description="torch threads (0: the free cores of this process's share, chosen at start)"
    )


class VAIMSamplingConfig(StrictModel):
    """Solutions drawn per observation, and how they are grouped into modes.

    Modes are DBSCAN clusters of the draws in box-scaled coordinates ([-1, 1] per parameter): draws closer than
    ``mode_eps`` chain into one mode (by default twice the median distance of a draw to its k-th neighbour,
    k = DBSCAN's core size, at least 0.02, so the radius follows the spread of the draws in any dimension);
    clusters holding less than ``min_mode_fraction`` of the draws are counted as unassigned. A continuous family
    of solutions (a ridge) is one mode. Draws whose RMS residual under the learned forward map exceeds
    ``repair_sigmas`` are moved onto the solutions first (``repair``); summaries report forward consistency,
    judged with the true simulator, before and after.
    """

    n_draws: int = Field(4000, ge=10, description="latent draws decoded per observation")
    seed: int = Field(1, ge=0, description="seed of the latent draws")
    mode_eps: float | None = Field(
        None, gt=0.0, description="DBSCAN radius in box-scaled units (None: twice the median k-NN distance)"
    )
    min_mode_fraction: float = Field(
        0.02, gt=0.0, lt=0.5, description="clusters with fewer draws than this share are unassigned"
    )
    consistency_sigmas: float = Field(2.0, gt=0.0, description="a draw is forward-consistent within this many")
    repair: bool = Field(True, description="move draws the learned forward map finds inconsistent (VAIM.repair)")
    repair_sigmas: float = Field(1.0, gt=0.0, description="RMS residual in sigmas a repaired draw reaches")
    repair_steps: int = Field(30, ge=1, le=1000, description="Gauss-Newton steps of the repair at most")


class VAIMConfig(StrictModel):
    """Runcard of ``python -m inverse.vaim``."""

    problem: ProblemConfig
    model: VAIMModelConfig = Field(default_factory=VAIMModelConfig)
    loss: VAIMLossConfig = Field(default_factory=VAIMLossConfig)
    training: VAIMTrainingConfig = Field(default_factory=VAIMTrainingConfig)
    sampling: VAIMSamplingConfig = Field(default_factory=VAIMSamplingConfig)
