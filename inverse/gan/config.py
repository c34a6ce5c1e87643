"""Validated runcards of the GAN inverse solver and of its closure test.

Every field has a working default; ``configs/closure_gan.yaml`` lists them. Unknown keys and bad values raise
``ValueError`` naming the file and the field (through :func:`qcdgip.config.parse_config`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from inverse.gan.posterior.config import PosteriorModeConfig
from physics.config import DataConfig, MCMCConfig, PhysicsConfig, PosteriorConfig, lift_detector
from qcdgip.config import StrictModel
from qcdgip.nn import Activation

__all__ = [
    "ClosureConfig",
    "DiscriminatorConfig",
    "GANConfig",
    "GeneratorConfig",
    "LossConfig",
    "OptimizerConfig",
    "ReportConfig",
    "SamplerConfig",
    "SchedulerConfig",
    "TargetsConfig",
    "TrainingConfig",
]


class GeneratorConfig(StrictModel):
    """Generator: noise -> parameters in the prior box through a rescaled sigmoid.

    ``kind: point`` is a point mass per replica (a learned pre-sigmoid vector, the noise is unused): the
    replicas, not the generator's noise, carry the uncertainty. ``kind: mlp`` maps
    ``noise_dim`` noise variables through an MLP, as in the collaboration's demo.
    """

    kind: Literal["point", "mlp"] = Field(
        "point", description="point: a point mass per replica; mlp: noise through an MLP"
    )
    noise_dim: int = Field(4, ge=1, le=4096, description="mlp: noise variables per draw")
    noise: Literal["normal", "uniform"] = Field("normal", description="mlp: distribution of the noise")
    depth: int = Field(2, ge=0, le=32, description="hidden layers of the MLP")
    width: int = Field(32, ge=1, le=8192, description="mlp: hidden width")
    activation: Activation = Field("silu", description="mlp: hidden activation")
    init_spread: float = Field(
        0.5, ge=0.0, le=5.0, description="sd of the initial pre-sigmoid outputs across replicas (0: box centre)"
    )


class DiscriminatorConfig(StrictModel):
    """Discriminators on events: one per dataset or a single one (told the dataset by a one-hot input).

    Features are the standardized (log x, log(1 - x)) of each event, in which the log density ratio of two
    members of the PDF family is linear; ``features: x`` gives the raw x instead.
    ``set_size > 1`` shows the discriminator the sorted x of that many events of one parameter set at once.

    ``degree > 1`` expands the standardized features into all their monomials up to that degree, whitened on the
    data. With ``depth: 0`` the discriminator is then a logistic regression on a fixed smooth basis: a convex
    problem with a handful of weights per dataset, which cannot memorise the data's sampling noise, and whose fixed
    point is the maximum-likelihood estimate as far as the basis spans the score (docs/solvers/gan.md).
    """

    mode: Literal["per_dataset", "single"] = Field(
        "per_dataset", description="per_dataset: one discriminator per dataset; single: one, told the dataset"
    )
    depth: int = Field(2, ge=0, le=32, description="hidden layers")
    width: int = Field(16, ge=1, le=8192, description="hidden width")
    activation: Activation = Field("silu", description="hidden activation")
    features: Literal["log", "x"] = Field("log", description="log: standardized (log x, log(1 - x)); x: the raw x")
    degree: int = Field(
        1,
        ge=1,
        le=6,
        description="the discriminator's inputs are every monomial of the standardized features up to this degree "
        "(1: the features themselves); with depth 0 the discriminator is a logistic regression on that basis",
    )
    basis_events: int = Field(
        50,
        ge=1,
        description="degree > 1: data events per basis function; a dataset with fewer events than this times the "
        "monomials of a degree uses a lower degree (a sparse dataset's fit would otherwise follow its noise)",
    )
    basis_cutoff: float = Field(
        1e-4,
        gt=0.0,
        lt=1.0,
        description="degree > 1: monomial directions with less than this fraction of the largest variance on the "
        "data are dropped (they are nearly constant on the events)",
    )
    set_size: int = Field(
        1, ge=1, le=1024, description="events of one parameter set shown at once, sorted (1: single events)"
    )


class LossConfig(StrictModel):
    """Adversarial loss and the Poisson rate term.

    Kinds: ``density_ratio`` (generator minimizes -N_j E_theta[exp(logit D)], whose gradient is the per-event
    log-likelihood gradient), ``bce`` (non-saturating, weight 2 N_j), ``minimax`` (weight 2 N_j), ``lsgan``
    (least squares with targets 0/1, weight 4 N_j) and ``wgan_gp`` (critic with gradient penalty, weight N_j).
    The weights make each loss's generator gradient equal the extended likelihood's at the optimal
    discriminator (to first order in the density-ratio error). ``rate`` adds the exact Poisson term of the
    datasets' event counts, which alone fixes the normalisations.
    """

    kind: Literal["density_ratio", "bce", "minimax", "lsgan", "wgan_gp"] = Field(
        "density_ratio", description="adversarial loss: density_ratio | bce | minimax | lsgan | wgan_gp"
    )
    rate: bool = Field(True, description="add the exact Poisson term of the datasets' event counts")
    gp_weight: float = Field(10.0, ge=0.0, description="gradient-penalty weight of wgan_gp")
    logit_clip: float = Field(15.0, gt=0.0, description="|logit D| cap in exp(logit D) (density_ratio)")


class OptimizerConfig(StrictModel):
    """A torch optimizer by name with its learning rate.

    ``natural`` (generator only, ``generator.kind: point``) preconditions each replica's gradient with the expected
    Fisher matrix of the extended likelihood (``inverse.gan.natural``); ``damping``, ``max_step``,
    ``metric_every``, ``max_logit_step``, ``damping_scale`` and ``step_space`` belong to it. ``newton``
    (discriminators of ``depth: 0`` only) takes a damped Newton step of each logistic regression per training step
    (``inverse.gan.newton``): ``lr`` is the fraction of the step, ``damping`` the ridge.
    """

    name: Literal["adam", "adamw", "sgd", "rmsprop", "natural", "newton"] = Field(
        "adam",
        description="adam | adamw | sgd | rmsprop | natural (generator only) | newton (logistic-regression "
        "discriminators only)",
    )
    lr: float = Field(1e-2, gt=0.0, description="learning rate (natural: the fraction of the Fisher step taken)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="adam, adamw: moment decay rates, each in [0, 1)")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="sgd, rmsprop: momentum")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 weight decay")
    damping: float = Field(
        1e-3,
        ge=0.0,
        description="natural, newton: damping relative to the mean diagonal of the Fisher matrix (Hessian)",
    )
    max_step: float = Field(
        1.0, gt=0.0, description="natural: Mahalanobis step cap (posterior sd) at the initial rate, then scaled like it"
    )
    metric_every: int = Field(10, ge=1, description="natural: steps between Fisher recomputations")
    max_logit_step: float | None = Field(
        None, gt=0.0, description="natural: cap of any pre-sigmoid coordinate's change per step (None: no cap)"
    )
    damping_scale: Literal["mean", "diagonal"] = Field(
        "mean", description="natural: damping times the mean metric diagonal, or each coordinate's own (Marquardt)"
    )
    step_space: Literal["logit", "box"] = Field(
        "logit",
        description="natural: take the step in the pre-sigmoid values (logit), or in the box itself with at most "
        "half the distance to an edge per step (box)",
    )

    @model_validator(mode="after")
    def _check_betas(self) -> OptimizerConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas: each must be in [0, 1), got {self.betas}")
        return self


# The optimizer each player uses by default, and the settings measured to work for each (player, optimizer);
# keys a runcard leaves out come from here (docs/solvers/gan.md, "Why these defaults").
_DEFAULT_OPTIMIZER = {"optimizer_g": "natural", "optimizer_d": "adam"}
_OPTIMIZER_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("optimizer_g", "natural"): {"lr": 0.3, "max_step": 2.0},
    ("optimizer_g", "adam"): {"lr": 2e-2, "betas": (0.5, 0.9)},
    ("optimizer_d", "adam"): {"lr": 1e-2, "betas": (0.5, 0.9)},
    ("optimizer_d", "newton"): {"lr": 0.5, "damping": 1e-3},
}


def _optimizer_section(key: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    given = given or {}
    name = given.get("name", _DEFAULT_OPTIMIZER[key])
    return {"name": name, **_OPTIMIZER_DEFAULTS.get((key, name), {}), **given}


class SchedulerConfig(StrictModel):
    """Learning-rate schedule applied to both optimizers, stepped once per training step.

    ``cosine`` decays to ``min_lr_ratio`` of the rate over the run; ``exponential`` multiplies by ``gamma``
    each step; ``step`` by ``gamma`` every ``step_size`` steps. ``warmup_steps`` ramps the rate up linearly first.
    """

    kind: Literal["none", "cosine", "exponential", "step"] = Field(
        "cosine", description="none | cosine | exponential | step"
    )
    min_lr_ratio: float = Field(0.05, ge=0.0, le=1.0, description="cosine: final rate / initial rate")
    gamma: float = Field(0.999, gt=0.0, le=1.0, description="exponential, step: factor per step (per step_size steps)")
    step_size: int = Field(100, ge=1, description="step: steps between reductions")
    warmup_steps: int = Field(0, ge=0, description="steps of linear ramp-up before the schedule")


class TrainingConfig(StrictModel):
    """How long and on what the GAN trains."""

    replicas: int = Field(100, ge=1, le=100_000, description="Poisson-bootstrap replicas trained together")
    steps: int = Field(300, ge=1, description="training steps (one generator and d_steps discriminator updates each)")
    d_steps: int = Field(1, ge=1, le=100, description="discriminator updates per generator update")
    d_warmup: int = Field(
        0, ge=0, le=1000, description="discriminator updates at the starting parameters, before the first step"
    )
    params_per_step: int = Field(1, ge=1, description="parameter sets drawn per replica and step")
    events_per_param: int = Field(2048, ge=1, description="events per parameter set and dataset")
    data_batch: int | None = Field(
        None, ge=1, description="data events per dataset and replica per step (None: all, bootstrap-weighted)"
    )
    replica_chunk: int = Field(
        0, ge=0, description="replicas per forward/backward pass (0: auto, all on a GPU and 25 on a CPU)"
    )
    bootstrap: bool = Field(
        True, description="Poisson(1) event weights per replica (False: every replica fits the data as they are)"
    )
    uniforms: Literal["random", "sobol"] = Field(
        "random",
        description="the sampler's base uniforms: random (independent) | sobol (a randomly shifted Sobol set per "
        "parameter set and step; inverse-transform samplers only)",
    )
    polyak: float = Field(0.5, ge=0.0, lt=1.0, description="fraction of the last steps averaged into the estimate")
    dtype: Literal["float32", "float64"] = Field("float32", description="float32 or float64 (Lightning's precision)")
    seed: int = Field(0, ge=0, description="seeds initialization, noise and the replicas' Poisson weights")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = Field(
        "auto", description="auto (a GPU when present) | cpu | gpu | cuda | mps"
    )
    devices: int = Field(
        1, ge=1, le=1024, description="processes per node training this one model data-parallel (GPUs, or CPU gloo)"
    )
    num_nodes: int = Field(1, ge=1, le=4096, description="nodes of the data-parallel training")
    strategy: Literal["auto", "ddp"] = Field(
        "auto", description="auto: one process, or ddp when devices x num_nodes > 1; ddp: data-parallel steps"
    )
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints (checkpoints/last.ckpt)")
    log_every: int = Field(10, ge=1, description="steps between log rows and progress-bar updates")
    progress: bool = Field(True, description="show a progress bar")
    threads: int = Field(
        0, ge=0, le=4096, description="torch threads (0: the free cores of this process's share, chosen at start)"
    )

    @property
    def world_size(self) -> int:
        """Processes training the model together (devices x num_nodes)."""
        return self.devices * self.num_nodes


class SamplerConfig(StrictModel):
    """Where the generated (true-level) events come from: the exact inverse-CDF sampler, MCMC, or a saved surrogate.

    ``kind: mcmc`` draws them by random-walk Metropolis from the unnormalised sigma (``physics.mcmc``; gradients
    by the score function), with the settings of ``mcmc``. ``kind: flow | gan | vae`` with ``path`` pointing to the
    ``model.pt`` written by ``python -m surrogates.train`` replaces the theory's sampler by the learned one; the
    file must hold that kind and have been trained for the same parameters and datasets. The Poisson rate term and
    the natural-gradient metric still use the theory's integrals (values of sigma, not its sampler). With a
    ``detector`` in the physics, every kind's events pass through it (``physics.detector.FoldedSampler``).
    """

    kind: Literal["exact", "mcmc", "flow", "gan", "vae"] = Field(
        "exact", description="exact (inverse CDF) | mcmc | flow | gan | vae (a saved surrogate, see path)"
    )
    path: str | None = Field(None, description="surrogate model file (kind flow, gan or vae)")
    mcmc: MCMCConfig = Field(default_factory=MCMCConfig)

    @model_validator(mode="after")
    def _check_path(self) -> SamplerConfig:
        if self.kind in ("flow", "gan", "vae") and not self.path:
            raise ValueError(
                f"path: a {self.kind} surrogate needs its model file (written by python -m surrogates.train)"
            )
        if self.kind in ("exact", "mcmc") and self.path:
            raise ValueError(
                f"path: only for a surrogate (set kind: flow, gan or vae, or drop path; kind is {self.kind})"
            )
        return self


class GANConfig(StrictModel):
    """The GAN inverse solver: models, losses, optimizers and training."""

    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = Field(default_factory=DiscriminatorConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer_g: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig(**_optimizer_section("optimizer_g", {}))
    )
    optimizer_d: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig(**_optimizer_section("optimizer_d", {}))
    )
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    posterior: PosteriorModeConfig = Field(default_factory=PosteriorModeConfig)

    @model_validator(mode="before")
    @classmethod
    def _complete_optimizers(cls, data: Any) -> Any:
        # A partial optimizer section keeps the measured settings of the keys it leaves out: {lr: 0.5} tunes the
        # default natural steps, {name: adam} on the generator gets the Adam settings that work there.
        if isinstance(data, dict):
            data = dict(data)
            for key in _DEFAULT_OPTIMIZER:
                if isinstance(data.get(key), dict):
                    data[key] = _optimizer_section(key, data[key])
        return data

    @model_validator(mode="after")
    def _check_sets(self) -> GANConfig:
        if self.optimizer_d.name == "natural":
            raise ValueError("optimizer_d.name: natural applies to the generator only")
        if self.optimizer_g.name == "newton":
            raise ValueError("optimizer_g.name: newton applies to logistic-regression discriminators only")
        if self.optimizer_d.name == "newton":
            d = self.discriminator
            if d.depth != 0 or d.mode != "per_dataset":
                raise ValueError(
                    "optimizer_d.name: newton fits logistic regressions: set discriminator.depth: 0 and mode: "
                    f"per_dataset (got depth {d.depth}, mode {d.mode})"
                )
            if self.loss.kind not in ("density_ratio", "bce", "minimax"):
                raise ValueError(
                    f"optimizer_d.name: newton needs a logistic discriminator loss (density_ratio, bce or minimax), "
                    f"not loss.kind {self.loss.kind}"
                )
        if self.optimizer_g.name == "natural" and self.generator.kind != "point":
            raise ValueError(
                "optimizer_g.name: natural (the default) needs generator.kind: point (a Fisher step per replica); "
                "for an mlp generator set optimizer_g: {name: adam}"
            )
        if self.posterior.mode == "langevin" and self.generator.kind != "point":
            raise ValueError("posterior.mode: langevin moves one parameter set per chain: needs generator.kind: point")
        if self.posterior.mode == "langevin" and self.posterior.chains > self.training.replicas:
            raise ValueError(
                f"posterior.chains ({self.posterior.chains}) must not exceed training.replicas "
                f"({self.training.replicas}): each chain starts at a replica"
            )
        if self.posterior.d_anchor and self.optimizer_d.name == "newton":
            raise ValueError(
                "posterior.d_anchor: Newton refits of the discriminators solve for their optimum at every update and "
                "do not drift; the anchor is for gradient optimizers (set d_anchor: 0)"
            )
        if self.training.uniforms == "sobol" and self.sampler.kind == "mcmc":
            raise ValueError(
                "training.uniforms: sobol needs an inverse-transform sampler; sampler.kind: mcmc uses its uniforms "
                "to start chains and seed proposals (set uniforms: random)"
            )
        k, world = self.discriminator.set_size, self.training.world_size
        if self.training.events_per_param % (k * world):
            split = f" x training.devices x training.num_nodes ({k} x {world})" if world > 1 else f" ({k})"
            raise ValueError(
                f"training.events_per_param ({self.training.events_per_param}) must be a multiple of "
                f"discriminator.set_size{split}: each process draws whole sets"
            )
        return self


def _range(value: tuple[float, float], name: str) -> tuple[float, float]:
    if not value[0] < value[1]:
        raise ValueError(f"{name}: the lower end {value[0]} must be below the upper end {value[1]}")
    return value


class TargetsConfig(StrictModel):
    """The bars a closure is judged by: ``targets_met`` in summary.json, each key naming its threshold.

    Defaults: every |pull| < 3 and every width ratio in [0.5, 2] (a closure that works); the statistical limit of
    the solver (replicas within 0.1 posterior sd of their exact bootstrap MLEs, width ratio in [0.8, 1.25], a fit
    under 5 CPU-minutes); the binomial bands of 68 % / 95 % interval coverage over 50 data sets.
    """

    abs_pull_max: float = Field(3.0, gt=0.0, description="every |pull| = |replica mean - truth| / posterior sd below")
    std_ratio_range: tuple[float, float] = Field((0.5, 2.0), description="every replica sd / posterior sd inside")
    std_ratio_tight: tuple[float, float] = Field(
        (0.8, 1.25), description="the statistical-limit bar for replica sd / posterior sd"
    )
    bootstrap_distance_median_max: float = Field(
        0.1, gt=0.0, description="median |replica - its exact bootstrap MLE| / posterior sd at most"
    )
    fit_cpu_minutes_max: float = Field(5.0, gt=0.0, description="CPU minutes of the GAN fit below")
    coverage_68: tuple[float, float] = Field((0.63, 0.73), description="pooled 68 % interval coverage inside")
    coverage_95: tuple[float, float] = Field((0.93, 0.97), description="pooled 95 % interval coverage inside")

    @model_validator(mode="after")
    def _check_ranges(self) -> TargetsConfig:
        for name in ("std_ratio_range", "std_ratio_tight", "coverage_68", "coverage_95"):
            _range(getattr(self, name), name)
        return self


class ReportConfig(StrictModel):
    """What the closure test computes beyond the fit, and the targets it is judged by."""

    bootstrap_mles: bool = Field(
        True, description="fit the exact MLE of every replica's bootstrap weights (batched, seconds for R = 100)"
    )
    coverage: int = Field(
        0, ge=0, le=10_000, description="refit this many pseudo-data sets at the same truth for interval coverage"
    )
    calibration: int = Field(
        0,
        ge=0,
        le=10_000,
        description="fit this many pseudo-data sets with truths drawn from the prior: SBC ranks, TARP, coverage of the "
        "replicas and (posterior.mode langevin) of the posterior draws",
    )
    calibration_workers: int = Field(
        1,
        ge=1,
        le=1024,
        description="processes fitting the calibration's data sets at once, each with an equal share of the cores "
        "(small fits run faster side by side than one at a time on all cores)",
    )
    targets: TargetsConfig = Field(default_factory=TargetsConfig)


class ClosureConfig(StrictModel):
    """Runcard of ``python -m inverse.closure``: forward model, pseudo-data, reference posterior and the GAN."""

    physics: PhysicsConfig = Field(default_factory=PhysicsConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    posterior: PosteriorConfig = Field(default_factory=PosteriorConfig)
    gan: GANConfig = Field(default_factory=GANConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    _lift_detector = model_validator(mode="before")(classmethod(lambda cls, data: lift_detector(data)))
