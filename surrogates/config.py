"""Validated runcards of ``python -m surrogates.train``: which surrogate, how it is trained and judged.

Every field has a working default; ``configs/surrogate_{flow,gan,vae}.yaml`` list them. Unknown keys and bad
values raise ``ValueError`` naming the file and the field (through :func:`qcdgip.config.parse_config`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from physics.config import PhysicsConfig
from physics.dis.config import DISConfig
from qcdgip.config import StrictModel
from qcdgip.nn import Activation

__all__ = [
    "KINDS",
    "CountsConfig",
    "EvaluationConfig",
    "FlowConfig",
    "GANSurrogateConfig",
    "RefinementConfig",
    "SimulationConfig",
    "SurrogateConfig",
    "SurrogateTrainingConfig",
    "VAEConfig",
]

KINDS = ("flow", "gan", "vae")


class SimulationConfig(StrictModel):
    """The training set: parameter sets drawn uniformly from the prior box, exact events for each dataset."""

    n_params: int = Field(20_000, ge=10, description="parameter sets drawn from the prior box")
    events_per_param: int = Field(128, ge=1, description="exact events per parameter set and dataset")
    seed: int = Field(0, ge=0, description="seed of the parameter sets and their events")
    simulator: str | None = Field(
        None,
        description="a black-box event simulator 'package.module:function' (physics.simulators); "
        "None: the exact sampler of the physics section",
    )
    simulator_kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the simulator")


class FlowConfig(StrictModel):
    """Conditional neural spline flow: a context network maps the parameters to monotone spline knots.

    The flow's forward direction is the conditional CDF of t = log-scaled x in the dataset's range, one to
    ``layers`` rational-quadratic splines (Durkan et al. 2019) composed; samples invert it analytically. For the
    (x, Q^2) events of a ``dis`` section, ``layers`` autoregressive spline layers over the two coordinates
    (:mod:`surrogates.autoregressive`), whose later coordinate's knots come from a per-event network of ``width``
    and ``depth`` too.
    """

    bins: int = Field(24, ge=2, le=512, description="rational-quadratic spline bins per layer")
    layers: int = Field(1, ge=1, le=8, description="splines composed")
    depth: int = Field(3, ge=1, le=16, description="hidden layers of the context network")
    width: int = Field(128, ge=4, le=4096, description="hidden width of the context network")
    activation: Activation = Field("silu", description="hidden activation")
    grid: int = Field(
        32,
        ge=0,
        le=1024,
        description="d > 1: knots of the later coordinates interpolated from this many points per earlier "
        "coordinate, the network running once per parameter set (0: a network per event, far slower in a fit)",
    )

    @field_validator("grid")
    @classmethod
    def _interpolable(cls, value: int) -> int:
        if value == 1:
            raise ValueError("grid: one point cannot be interpolated (0: a network per event, or at least 2)")
        return value


class GANSurrogateConfig(StrictModel):
    """Conditional GAN event generator: x = G(noise; parameters, dataset) against a conditional discriminator."""

    depth: int = Field(3, ge=1, le=16, description="hidden layers of the per-event networks")
    width: int = Field(64, ge=4, le=4096, description="hidden width")
    context_width: int = Field(128, ge=4, le=4096, description="width of the networks reading the parameters")
    activation: Activation = Field("silu", description="hidden activation")
    d_steps: int = Field(1, ge=1, le=20, description="discriminator updates per generator update")
    lr_d: float = Field(3e-3, gt=0.0, description="discriminator learning rate (the generator uses training.lr)")


class VAEConfig(StrictModel):
    """Conditional VAE: encoder q(z | x; parameters), decoder p(x | z; parameters) Gaussian in logit space."""

    latent_dim: int = Field(2, ge=1, le=64, description="latent dimension")
    depth: int = Field(3, ge=1, le=16, description="hidden layers of encoder and decoder")
    width: int = Field(64, ge=4, le=4096, description="hidden width of encoder and decoder")
    context_width: int = Field(128, ge=4, le=4096, description="hidden width of the condition network")
    activation: Activation = Field("silu", description="hidden activation")
    kl_weight: float = Field(1.0, gt=0.0, description="beta of the KL term (1: the evidence lower bound)")


class CountsConfig(StrictModel):
    """The learned expected counts nu_j(theta) (:mod:`surrogates.counts`): an MLP for log nu, Adam then L-BFGS."""

    n_params: int = Field(
        4000, ge=10, description="parameter sets of the training set the counts are fitted on (the first ones)"
    )
    width: int = Field(64, ge=4, le=4096, description="hidden width")
    depth: int = Field(3, ge=1, le=16, description="hidden layers")
    activation: Activation = Field("silu", description="hidden activation")
    lr: float = Field(3e-3, gt=0.0, description="Adam learning rate of the warm start")
    adam_steps: int = Field(1000, ge=0, description="full-batch Adam steps before L-BFGS")
    lbfgs_steps: int = Field(2000, ge=0, description="L-BFGS iterations (full batch)")
    seed: int = Field(0, ge=0, description="seeds the initialization")


class RefinementConfig(StrictModel):
    """Sequential refinement (:mod:`surrogates.refine`): fine-tune on simulations around a fit's replicas, refit.

    Each round draws ``n_params`` parameter sets from a Gaussian with the replicas' mean and ``widen``^2 times their
    covariance (inside the box), simulates ``events_per_param`` events per set and dataset as the training set was
    simulated, and fine-tunes the surrogate for ``steps`` Adam steps at ``lr`` (with ``accumulate``, on this
    round's and the earlier rounds' simulations together).
    """

    rounds: int = Field(3, ge=0, le=100, description="refinement rounds after the first fit")
    n_params: int = Field(4000, ge=10, description="parameter sets simulated per round")
    events_per_param: int | None = Field(
        256, ge=1, description="events per set and dataset in a round (None: as many as in the training set)"
    )
    widen: float = Field(2.0, gt=0.0, description="proposal sd over the replicas' sd")
    steps: int = Field(2000, ge=1, description="fine-tuning steps per round")
    accumulate: bool = Field(True, description="fine-tune on every round's simulations so far, not only this round's")
    lr: float = Field(2e-4, gt=0.0, description="fine-tuning learning rate (Adam, cosine schedule)")
    budget: int | None = Field(
        None, ge=1, description="most parameter sets simulated over all rounds (None: rounds x n_params)"
    )
    tolerance: float = Field(
        0.05, gt=0.0, description="stop when the replicas' mean moves less than this, in replica sd, between rounds"
    )
    seed: int = Field(0, ge=0, description="seeds the proposals and their simulations")


class SurrogateTrainingConfig(StrictModel):
    """Optimisation: Adam with a cosine schedule over ``steps`` minibatches of parameter sets."""

    steps: int = Field(6000, ge=1, description="training steps")
    batch_params: int = Field(256, ge=1, description="parameter sets per minibatch (all their events)")
    lr: float = Field(2e-3, gt=0.0, description="Adam learning rate")
    min_lr_ratio: float = Field(0.02, ge=0.0, le=1.0, description="cosine schedule: final rate / initial rate")
    weight_decay: float = Field(0.0, ge=0.0, description="Adam weight decay")
    dtype: Literal["float32", "float64"] = Field("float32", description="float32 or float64")
    seed: int = Field(0, ge=0, description="seeds the initialization and the minibatches")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = Field(
        "auto", description="auto | cpu | gpu | cuda | mps"
    )
    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints (checkpoints/last.ckpt)")
    log_every: int = Field(50, ge=1, description="steps between log rows and progress-bar updates")
    progress: bool = Field(True, description="show a progress bar")
    threads: int = Field(
        0, ge=0, le=4096, description="torch threads (0: the free cores of this process's share, chosen at start)"
    )


class EvaluationConfig(StrictModel):
    """Held-out quality: parameter sets drawn from the prior with their own seed (never used in training)."""

    n_params: int = Field(100, ge=1, description="held-out parameter sets")
    n_samples: int = Field(20_000, ge=10, description="surrogate and exact samples per parameter set and dataset")
    seed: int = Field(12345, ge=0, description="seed of the held-out sets (never used in training)")
    plot_params: int = Field(4, ge=0, le=16, description="parameter sets shown in densities.png")
    ks_mean_target: float = Field(0.02, gt=0.0, lt=1.0, description="flow target: mean held-out KS below")
    ks_max_target: float = Field(0.05, gt=0.0, lt=1.0, description="flow target: worst held-out KS below")


class SurrogateConfig(StrictModel):
    """Runcard of ``python -m surrogates.train``."""

    kind: Literal["flow", "gan", "vae"] = Field("flow", description="flow | gan | vae")
    physics: PhysicsConfig = Field(default_factory=PhysicsConfig)
    dis: DISConfig | None = Field(
        None,
        description="learn inclusive DIS events (x, Q^2) of these Q^2 windows instead of the toy of the physics "
        "section (kind flow: a two-dimensional autoregressive spline flow)",
    )
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    flow: FlowConfig = Field(default_factory=FlowConfig)
    gan: GANSurrogateConfig = Field(default_factory=GANSurrogateConfig)
    vae: VAEConfig = Field(default_factory=VAEConfig)
    counts: CountsConfig = Field(default_factory=CountsConfig)
    training: SurrogateTrainingConfig = Field(default_factory=SurrogateTrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @property
    def problem(self) -> PhysicsConfig | DISConfig:
        """The forward problem the surrogate learns: the ``dis`` section when set, else ``physics``."""
        return self.dis if self.dis is not None else self.physics

    @model_validator(mode="after")
    def _check(self) -> SurrogateConfig:
        if self.dis is not None and self.kind != "flow":
            raise ValueError(f"kind: (x, Q^2) events of the dis section are learned by a flow only, not {self.kind!r}")
        if self.dis is not None and self.dis.detector is not None:
            raise ValueError("dis.detector: a surrogate learns the true (x, Q^2) events; drop the detector")
        if self.training.batch_params > self.simulation.n_params:
            raise ValueError(
                f"training.batch_params ({self.training.batch_params}) exceeds simulation.n_params "
                f"({self.simulation.n_params})"
            )
        return self
