"""Runcard section ``gan.posterior``: which answer the GAN solver gives after its fit.

``mode: bootstrap`` (the default) reports the Poisson-bootstrap replicas: the maximum-likelihood estimate and its
sampling spread. ``mode: langevin`` also runs adversarial Langevin chains (:mod:`inverse.gan.posterior.langevin`)
on the unweighted data and reports their draws as the posterior sample, next to the replicas.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from qcdgip.config import StrictModel

__all__ = ["DEFAULT_ANCHOR", "PosteriorModeConfig", "PosteriorTargets"]

DEFAULT_ANCHOR = 0.5
"""The anchor of gradient-trained discriminators when ``d_anchor`` is None: a time constant of 1 / (lr * 0.5)
updates (400 at the chains' default rate 0.005, 50 Langevin steps): slow against the data's pull, quick against
the drift of the weights the data leave free over a thousand steps."""


class PosteriorTargets(StrictModel):
    """The bars the posterior draws are judged by (``posterior_mode.targets_met`` in summary.json)."""

    width_ratio_range: tuple[float, float] = Field(
        (0.9, 1.1), description="every draws' sd / reference posterior sd inside"
    )
    mean_offset_max: float = Field(
        0.1, gt=0.0, description="every |draws' mean - posterior mean| / posterior sd at most"
    )
    c2st_max: float = Field(0.6, gt=0.5, le=1.0, description="classifier two-sample accuracy at most")
    rhat_max: float = Field(1.05, gt=1.0, description="every split R-hat below")
    cpu_minutes_max: float = Field(10.0, gt=0.0, description="CPU minutes of the fit plus the sampling at most")

    @model_validator(mode="after")
    def _check_range(self) -> PosteriorTargets:
        if not self.width_ratio_range[0] < self.width_ratio_range[1]:
            raise ValueError(f"width_ratio_range: the lower end must be below the upper, got {self.width_ratio_range}")
        return self


class PosteriorModeConfig(StrictModel):
    """Posterior sampling after the fit: chains moved by the discriminators' estimate of grad log L.

    The chains start at the first ``chains`` replicas' estimates and step in ``coordinates`` (``norm``: the log of
    each PDF's integral over the data range with its exponents, where the toy's curved ridges are nearly straight;
    ``theta``: the parameters themselves; ``auto``: norm for the toy, theta for DIS), preconditioned by the
    replicas' covariance there. A proposal outside the prior box is refused (the chain stays), and the gradient
    noise of the generated events, measured from two independent halves of them, is taken out of the injected
    noise.
    """

    mode: Literal["bootstrap", "langevin"] = Field(
        "bootstrap", description="bootstrap: the replicas only; langevin: adversarial Langevin draws as well"
    )
    chains: int = Field(25, ge=2, le=100_000, description="chains (at most training.replicas; each starts at one)")
    steps: int = Field(300, ge=2, description="Langevin steps per chain")
    burn_in: int = Field(100, ge=0, description="first steps left out of the draws")
    step_size: float = Field(
        0.3, gt=0.0, le=2.0, description="Langevin step eps in units of the preconditioner (replicas' covariance)"
    )
    momentum: float = Field(
        0.7,
        ge=0.0,
        lt=1.0,
        description="fraction of each chain's velocity kept from step to step (0: unadjusted Langevin; near 1: "
        "chains keep their direction for about 1 / (1 - momentum) steps)",
    )
    max_drift: float = Field(
        2.0, gt=0.0, description="cap of a step's drift in whitened units (far from the posterior only)"
    )
    d_steps: int = Field(8, ge=1, le=100, description="discriminator updates per Langevin step")
    d_lr: float | None = Field(
        None,
        gt=0.0,
        description="the chains' discriminator learning rate (None: d_lr_fraction x optimizer_d.lr of the fit)",
    )
    d_lr_fraction: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="with d_lr None, the chains' discriminator learning rate as a fraction of the fit's for a "
        "gradient optimizer (Adam and the like: at the fit's rate, the weights the data leave free drift over the "
        "chains' many updates and the gradient's noise grows); a Newton refit keeps the fit's",
    )
    d_anchor: float | None = Field(
        None,
        ge=0.0,
        description="pull of each chain's discriminators back toward their weights at the chains' start, as a "
        "multiple of the learning rate per update (w -= lr * d_anchor * (w - w0); 0: off; None: 0.5 for a gradient "
        "optimizer, off for Newton refits, which solve for their optimum at every update and do not drift). Over "
        "many hundred steps the weights the data leave free otherwise drift",
    )
    error_correction: bool = Field(
        True,
        description="over the second half of the burn-in, fit the discriminators' gradient error (its lag behind the "
        "chains' last moves and its covariance) and take both out from then on",
    )
    error_model: Literal["auto", "linear", "quadratic"] = Field(
        "auto",
        description="the gradient's model the error is measured against: linear in the sampling coordinates, or "
        "with their second-order terms where the posterior is not Gaussian in them (auto: linear in norm "
        "coordinates, built to make the posterior nearly Gaussian; quadratic in theta)",
    )
    adapt: bool = Field(
        True, description="halfway through the burn-in, precondition with the chains' own covariance instead"
    )
    d_warmup: int = Field(20, ge=0, le=10_000, description="discriminator updates on the unweighted data first")
    events_per_param: int | None = Field(
        None, ge=2, description="generated events per chain, dataset and step (None: training.events_per_param)"
    )
    coordinates: Literal["auto", "norm", "theta"] = Field(
        "auto",
        description="norm: (log integral, a, b) per flavour (the toy); theta: the parameters themselves; auto: norm "
        "for the toy, theta otherwise (DIS)",
    )
    noise_correction: bool = Field(
        True, description="take the measured gradient noise and the step's first-order excess out of the noise"
    )
    prior: Literal["uniform", "gaussian"] = Field(
        "uniform", description="uniform on the box, or a Gaussian (prior_mean, prior_sd) truncated to it"
    )
    prior_mean: list[float] | None = Field(None, description="gaussian prior: mean per parameter")
    prior_sd: list[float] | None = Field(None, description="gaussian prior: sd per parameter")
    c2st_draws: int = Field(4000, ge=100, description="draws per side in the classifier two-sample test")
    targets: PosteriorTargets = Field(default_factory=PosteriorTargets)
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints of the chains")
    seed: int = Field(0, ge=0, description="seeds the injected noise, the generated events and the C2ST")

    @model_validator(mode="after")
    def _check(self) -> PosteriorModeConfig:
        if self.burn_in >= self.steps:
            raise ValueError(f"burn_in ({self.burn_in}) must be below steps ({self.steps})")
        if self.prior == "gaussian" and (self.prior_mean is None or self.prior_sd is None):
            raise ValueError("prior: gaussian needs prior_mean and prior_sd (one value per parameter)")
        if self.prior_sd is not None and any(s <= 0 for s in self.prior_sd):
            raise ValueError(f"prior_sd: every sd must be positive, got {self.prior_sd}")
        return self

    def anchor_for(self, optimizer: str) -> float:
        """The discriminators' anchor for the fit's ``optimizer_d.name`` (``d_anchor``, or its default when None)."""
        if self.d_anchor is not None:
            return self.d_anchor
        return 0.0 if optimizer == "newton" else DEFAULT_ANCHOR
