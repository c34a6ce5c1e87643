"""Validated runcards of ``python -m surrogates.train``: which surrogate, how it is trained and judged.

Every field has a working default; ``configs/surrogate_{flow,gan,vae}.yaml`` list them. Unknown keys and bad
values raise ``ValueError`` naming the file and the field (through :func:`physics.config.parse_config`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from physics.config import PhysicsConfig, StrictModel

__all__ = [
    "KINDS",
    "EvaluationConfig",
    "FlowConfig",
    "GANSurrogateConfig",
    "SimulationConfig",
    "SurrogateConfig",
    "SurrogateTrainingConfig",
    "VAEConfig",
]

KINDS = ("flow", "gan", "vae")
Activation = Literal["relu", "leaky_relu", "elu", "gelu", "silu", "tanh"]


class SimulationConfig(StrictModel):
    """The training set: parameter sets drawn uniformly from the prior box, exact events for each dataset."""

    n_params: int = Field(20_000, ge=10, description="parameter sets drawn from the prior box")
    events_per_param: int = Field(128, ge=1, description="exact events per parameter set and dataset")
    seed: int = Field(0, ge=0)


class FlowConfig(StrictModel):
    """Conditional neural spline flow: a context network maps the parameters to monotone spline knots.

    The flow's forward direction is the conditional CDF of t = log-scaled x in the dataset's range, one to
    ``layers`` rational-quadratic splines (Durkan et al. 2019) composed; samples invert it analytically.
    """

    bins: int = Field(24, ge=2, le=512, description="rational-quadratic spline bins per layer")
    layers: int = Field(1, ge=1, le=8, description="splines composed")
    depth: int = Field(3, ge=1, le=16, description="hidden layers of the context network")
    width: int = Field(128, ge=4, le=4096)
    activation: Activation = "silu"


class GANSurrogateConfig(StrictModel):
    """Conditional GAN event generator: x = G(noise; parameters, dataset) against a conditional discriminator."""

    depth: int = Field(3, ge=1, le=16, description="hidden layers of the per-event networks")
    width: int = Field(64, ge=4, le=4096)
    context_width: int = Field(128, ge=4, le=4096, description="width of the networks reading the parameters")
    activation: Activation = "silu"
    d_steps: int = Field(1, ge=1, le=20, description="discriminator updates per generator update")
    lr_d: float = Field(3e-3, gt=0.0, description="discriminator learning rate (the generator uses training.lr)")


class VAEConfig(StrictModel):
    """Conditional VAE: encoder q(z | x; parameters), decoder p(x | z; parameters) Gaussian in logit space."""

    latent_dim: int = Field(2, ge=1, le=64)
    depth: int = Field(3, ge=1, le=16)
    width: int = Field(64, ge=4, le=4096)
    context_width: int = Field(128, ge=4, le=4096)
    activation: Activation = "silu"
    kl_weight: float = Field(1.0, gt=0.0, description="beta of the KL term (1: the evidence lower bound)")


class SurrogateTrainingConfig(StrictModel):
    """Optimisation: Adam with a cosine schedule over ``steps`` minibatches of parameter sets."""

    steps: int = Field(6000, ge=1)
    batch_params: int = Field(256, ge=1, description="parameter sets per minibatch (all their events)")
    lr: float = Field(2e-3, gt=0.0)
    min_lr_ratio: float = Field(0.02, ge=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    dtype: Literal["float32", "float64"] = "float32"
    seed: int = Field(0, ge=0)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(50, ge=1)
    progress: bool = True


class EvaluationConfig(StrictModel):
    """Held-out quality: parameter sets drawn from the prior with their own seed (never used in training)."""

    n_params: int = Field(100, ge=1)
    n_samples: int = Field(20_000, ge=10, description="surrogate and exact samples per parameter set and dataset")
    seed: int = Field(12345, ge=0)
    plot_params: int = Field(4, ge=0, le=16, description="parameter sets shown in densities.png")


class SurrogateConfig(StrictModel):
    """Runcard of ``python -m surrogates.train``."""

    kind: Literal["flow", "gan", "vae"] = "flow"
    physics: PhysicsConfig = Field(default_factory=PhysicsConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    flow: FlowConfig = Field(default_factory=FlowConfig)
    gan: GANSurrogateConfig = Field(default_factory=GANSurrogateConfig)
    vae: VAEConfig = Field(default_factory=VAEConfig)
    training: SurrogateTrainingConfig = Field(default_factory=SurrogateTrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @model_validator(mode="after")
    def _check(self) -> SurrogateConfig:
        if self.training.batch_params > self.simulation.n_params:
            raise ValueError(
                f"training.batch_params ({self.training.batch_params}) exceeds simulation.n_params "
                f"({self.simulation.n_params})"
            )
        return self
