"""Validated configuration of the toy forward model: PDFs, parameters, observables, datasets, cases, detector.

The defaults are the collaboration's toy problem: two PDFs u, d of the form ``N x^a (1-x)^b``, the observables
sigma1 = 4u + d and sigma2 = 4d + u on x in [0.1, 1], four datasets (each observable split at x = 0.3) and the
event-count cases A, B, C. Every field can be overridden from a YAML runcard; a bad value raises
:class:`ValueError` naming the file and the field (:func:`qcdgip.config.parse_config`).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from qcdgip.config import StrictModel

__all__ = [
    "DEFAULT_CASES",
    "AcceptanceConfig",
    "DataConfig",
    "DatasetSpec",
    "DetectorConfig",
    "MCMCConfig",
    "ObservableSpec",
    "ParameterSpec",
    "PhysicsConfig",
    "PosteriorConfig",
    "QuadratureConfig",
    "ReferenceConfig",
    "lift_detector",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")

DEFAULT_CASES: dict[str, dict[str, float]] = {
    "A": {"sigma1": 100_000.0, "sigma2": 50_000.0},
    "B": {"sigma1": 10_000.0, "sigma2": 5_000.0},
    "C": {"sigma1": 1_000.0, "sigma2": 500.0},
}


class ParameterSpec(StrictModel):
    """One PDF parameter: its name, true value (for closure tests) and uniform prior box [low, high]."""

    name: str = Field(description="parameter name")
    truth: float = Field(description="true value (closure tests); must lie in [low, high]")
    low: float = Field(description="lower edge of the uniform prior box")
    high: float = Field(description="upper edge of the uniform prior box")

    @model_validator(mode="after")
    def _check_box(self) -> ParameterSpec:
        if not all(math.isfinite(v) for v in (self.truth, self.low, self.high)):
            raise ValueError(f"parameter {self.name!r}: truth, low and high must be finite")
        if not self.low < self.high:
            raise ValueError(f"parameter {self.name!r}: low ({self.low}) must be below high ({self.high})")
        if not self.low <= self.truth <= self.high:
            raise ValueError(
                f"parameter {self.name!r}: truth {self.truth} lies outside its box [{self.low}, {self.high}]"
            )
        return self


class ObservableSpec(StrictModel):
    """An observable as a non-negative linear combination of PDFs, e.g. sigma1 = 4 u + 1 d."""

    name: str = Field(description="observable name")
    coefficients: dict[str, float] = Field(description="flavour -> non-negative coefficient")

    @field_validator("coefficients")
    @classmethod
    def _check_coefficients(cls, value: dict[str, float]) -> dict[str, float]:
        if any(c < 0 or not math.isfinite(c) for c in value.values()):
            raise ValueError("coefficients must be finite and >= 0 (an observable is a positive density)")
        if not any(c > 0 for c in value.values()):
            raise ValueError("at least one coefficient must be > 0")
        return value


class DatasetSpec(StrictModel):
    """A dataset: the events of one observable in the sub-range [x_min, x_max]."""

    name: str = Field(description="dataset name (a plain identifier: it becomes a file name)")
    observable: str = Field(description="the observable whose events the dataset holds")
    x_min: float = Field(description="lower end of the x range, > 0")
    x_max: float = Field(description="upper end of the x range, <= 1")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"dataset name {value!r} must be a plain identifier (it becomes a file name)")
        return value

    @model_validator(mode="after")
    def _check_range(self) -> DatasetSpec:
        if not 0.0 < self.x_min < self.x_max <= 1.0:
            raise ValueError(f"dataset {self.name!r}: need 0 < x_min < x_max <= 1, got [{self.x_min}, {self.x_max}]")
        return self


class QuadratureConfig(StrictModel):
    """Quadrature and inversion settings (defaults give ~1e-13 relative integrals; see physics.quadrature).

    Panels are uniform in z = logit(x), which grades them geometrically towards both x = 0 and x = 1,
    where x^a and (1-x)^b are singular.
    """

    order: int = Field(8, ge=2, le=64, description="Gauss-Legendre nodes per panel")
    step: float = Field(0.15, gt=0.0, le=2.0, description="panel width in logit(x) in the bulk")
    tail_step: float = Field(0.5, gt=0.0, le=4.0, description="panel width in logit(x) for 1 - x < tail_start")
    tail_start: float = Field(1e-3, gt=0.0, lt=0.5, description="1 - x below which the tail panel width applies")
    y_floor: float = Field(1e-20, gt=0.0, lt=1e-6, description="1 - x below which the integrand is dropped")
    sampler_step: float = Field(
        0.05, gt=0.0, le=2.0, description="panel width in logit(x) of the sampler's cumulative table"
    )
    newton_steps: int = Field(1, ge=0, le=20, description="exact Newton steps after the Hermite guess")


class AcceptanceConfig(StrictModel):
    """Detector efficiency eps(x) of an event with true x (the probability that it is recorded at all).

    ``none``: eps = 1. ``logistic``: a turn-on at low x, eps = plateau / (1 + exp(-(x - x0) / width)).
    ``table``: eps interpolated linearly in log x between the points (``x``, ``eps``), constant beyond the ends.
    """

    kind: Literal["none", "logistic", "table"] = Field("logistic", description="none | logistic | table")
    x0: float = Field(0.13, gt=0.0, lt=1.0, description="logistic: x where eps is half the plateau")
    width: float = Field(0.015, description="logistic: turn-on width in x (> 0)")
    plateau: float = Field(0.9, description="logistic: efficiency well above the turn-on, in [0, 1]")
    x: list[float] = Field(default_factory=list, description="table: increasing x values in (0, 1]")
    eps: list[float] = Field(default_factory=list, description="table: efficiencies in [0, 1] at those x")

    @model_validator(mode="after")
    def _check(self) -> AcceptanceConfig:
        if not (self.width > 0 and math.isfinite(self.width)):
            raise ValueError(f"width: the logistic turn-on width must be > 0, got {self.width}")
        if not 0.0 <= self.plateau <= 1.0:
            raise ValueError(f"plateau: an efficiency must lie in [0, 1], got {self.plateau}")
        if self.kind == "table":
            if len(self.x) < 1 or len(self.x) != len(self.eps):
                raise ValueError(
                    f"x, eps: a table needs equally many (>= 1) points, got {len(self.x)} and {len(self.eps)}"
                )
            if any(not 0.0 < v <= 1.0 for v in self.x) or any(b <= a for a, b in zip(self.x, self.x[1:])):
                raise ValueError(f"x: table points must increase strictly inside (0, 1], got {self.x}")
            bad = [v for v in self.eps if not 0.0 <= v <= 1.0]
            if bad:
                raise ValueError(f"eps: efficiencies must lie in [0, 1], got {bad}")
        elif self.x or self.eps:
            raise ValueError(f"x, eps: only for kind: table (kind is {self.kind})")
        return self


class DetectorConfig(StrictModel):
    """The experimental module between true and reconstructed events (physics.detector).

    An event of true x is recorded with probability eps(x) and reconstructed at y with
    log y = log x + resolution * g, g ~ N(0, 1); it enters the dataset of its observable whose range holds y,
    and is lost when y falls outside every range. True events come from the union of the observable's ranges.
    """

    resolution: float = Field(0.05, description="relative resolution: the sd of log y - log x (> 0)")
    acceptance: AcceptanceConfig = Field(default_factory=AcceptanceConfig)
    nodes: int = Field(16, ge=4, le=256, description="Gauss-Legendre nodes of the folding integral per event")
    reach: float = Field(6.0, ge=3.0, le=12.0, description="resolution sds beyond which the kernel is cut")

    @field_validator("resolution")
    @classmethod
    def _check_resolution(cls, value: float) -> float:
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"the resolution must be > 0 (a relative sd of log x), got {value}")
        if value > 1.0:
            raise ValueError(f"a relative resolution above 1 (100 %) is not a detector, got {value}")
        return value


class MCMCConfig(StrictModel):
    """The MCMC event sampler (physics.mcmc): random-walk Metropolis in a logit coordinate of each range.

    Each call runs ``ceil(n / samples_per_chain)`` chains per parameter set from uniform starts: ``warmup``
    iterations adapt the step size to ``target_acceptance`` and are dropped, then every ``thin``-th state is kept.
    """

    samples_per_chain: int = Field(
        8, ge=1, le=100_000, description="kept states per chain (chains per parameter set: ceil(n / this))"
    )
    warmup: int = Field(100, description="adapting iterations dropped before the first kept state (>= 1)")
    thin: int = Field(4, description="iterations between kept states (>= 1)")
    target_acceptance: float = Field(0.44, gt=0.05, lt=0.95, description="of the adapted random walk (1-D optimum)")

    @field_validator("warmup", "thin")
    @classmethod
    def _positive(cls, value: int, info: Any) -> int:
        if value < 1:
            raise ValueError(f"{info.field_name} must be >= 1 (a chain needs a warm-up and a step), got {value}")
        return value


def _default_parameters() -> list[ParameterSpec]:
    truth = [2.1875, -0.5, 3.0, 1.09375, -0.5, 4.0]
    low = [0.0, -1.0, 0.0, 0.0, -1.0, 0.0]
    high = [3.0, 1.0, 5.0, 3.0, 1.0, 5.0]
    names = ["Nu", "au", "bu", "Nd", "ad", "bd"]
    return [ParameterSpec(name=n, truth=t, low=lo, high=hi) for n, t, lo, hi in zip(names, truth, low, high)]


def _default_observables() -> list[ObservableSpec]:
    return [
        ObservableSpec(name="sigma1", coefficients={"u": 4.0, "d": 1.0}),
        ObservableSpec(name="sigma2", coefficients={"u": 1.0, "d": 4.0}),
    ]


def _default_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(name=f"{obs}_{part}", observable=obs, x_min=lo, x_max=hi)
        for obs in ("sigma1", "sigma2")
        for part, lo, hi in (("low", 0.1, 0.3), ("high", 0.3, 1.0))
    ]


class ParameterVectors:
    """Names, truths and box edges of a config's ``parameters`` (a list of :class:`ParameterSpec`) in order."""

    parameters: list[ParameterSpec]

    @property
    def parameter_names(self) -> list[str]:
        """Names of the parameters in vector order."""
        return [p.name for p in self.parameters]

    @property
    def truth(self) -> list[float]:
        """True parameter values in vector order."""
        return [p.truth for p in self.parameters]

    @property
    def low(self) -> list[float]:
        """Lower edges of the prior box."""
        return [p.low for p in self.parameters]

    @property
    def high(self) -> list[float]:
        """Upper edges of the prior box."""
        return [p.high for p in self.parameters]


class PhysicsConfig(ParameterVectors, StrictModel):
    """The toy forward model: PDFs, parameters, observables, datasets and event-count cases.

    Parameters come in triples (N, a, b) per flavour, in the order of ``flavors``:
    f(x) = N x^a (1-x)^b. A case gives the expected number of events of each observable summed over its
    datasets; the luminosity of the observable is fixed by it at the true parameters.
    """

    flavors: list[str] = Field(
        default_factory=lambda: ["u", "d"],
        description="PDF flavours, each f(x) = N x^a (1-x)^b with parameters (N, a, b) in this order",
    )
    parameters: list[ParameterSpec] = Field(default_factory=_default_parameters)
    observables: list[ObservableSpec] = Field(default_factory=_default_observables)
    datasets: list[DatasetSpec] = Field(default_factory=_default_datasets)
    cases: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_CASES.items()},
        description="case name -> expected events of each observable, summed over its datasets",
    )
    case: str = Field("B", description="the event-count case in use")
    quadrature: QuadratureConfig = Field(default_factory=QuadratureConfig)
    detector: DetectorConfig | None = Field(None, description="the experimental module; null: perfect detector")

    @model_validator(mode="after")
    def _check_consistency(self) -> PhysicsConfig:
        if len(set(self.flavors)) != len(self.flavors) or not self.flavors:
            raise ValueError("flavors: must be a non-empty list of distinct names")
        if len(self.parameters) != 3 * len(self.flavors):
            raise ValueError(
                f"parameters: expected 3 per flavour (N, a, b) = {3 * len(self.flavors)}, got {len(self.parameters)}"
            )
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise ValueError(f"parameters: names must be distinct, got {names}")
        reaches_one = any(d.x_max >= 1.0 for d in self.datasets)
        for i, flavor in enumerate(self.flavors):
            norm, b_exp = self.parameters[3 * i], self.parameters[3 * i + 2]
            if norm.low < 0:
                raise ValueError(f"parameters: normalisation {norm.name!r} of {flavor} must have low >= 0")
            if reaches_one and b_exp.low <= -1.0:
                raise ValueError(
                    f"parameters: {b_exp.name!r} must have low > -1 (the integral of (1-x)^b diverges at x = 1)"
                )
        obs_names = [o.name for o in self.observables]
        if len(set(obs_names)) != len(obs_names):
            raise ValueError(f"observables: names must be distinct, got {obs_names}")
        for obs in self.observables:
            unknown = set(obs.coefficients) - set(self.flavors)
            if unknown:
                raise ValueError(f"observables: {obs.name!r} uses unknown flavours {sorted(unknown)}")
        ds_names = [d.name for d in self.datasets]
        if not ds_names:
            raise ValueError("datasets: at least one dataset is needed")
        if len(set(ds_names)) != len(ds_names):
            raise ValueError(f"datasets: names must be distinct, got {ds_names}")
        for ds in self.datasets:
            if ds.observable not in obs_names:
                raise ValueError(f"datasets: {ds.name!r} refers to unknown observable {ds.observable!r}")
        used = {d.observable for d in self.datasets}
        for case_name, counts in self.cases.items():
            for obs, n in counts.items():
                if obs not in used:
                    raise ValueError(f"cases: case {case_name!r} gives events for {obs!r}, which has no dataset")
                if not (n > 0 and math.isfinite(n)):
                    raise ValueError(f"cases: case {case_name!r}: expected events of {obs!r} must be > 0")
            missing = used - set(counts)
            if missing:
                raise ValueError(f"cases: case {case_name!r} lacks expected events for {sorted(missing)}")
        if self.case not in self.cases:
            raise ValueError(f"case: {self.case!r} is not one of the defined cases {sorted(self.cases)}")
        return self

    def with_case(self, case: str) -> PhysicsConfig:
        """Return a copy with another event-count case selected (validated)."""
        return PhysicsConfig.model_validate({**self.model_dump(), "case": case})


class DataConfig(StrictModel):
    """Pseudo-data settings for closure tests."""

    seed: int = Field(1, ge=0, description="seed of the pseudo-data (counts and events)")
    n_bins: int = Field(10, ge=1, le=1000, description="log-x bins per dataset in the binned view")


class PosteriorConfig(StrictModel):
    """MCMC reference posterior (tensorflow-probability's numpy substrate).

    Random-walk Metropolis chains run in coordinates whitened by the Laplace covariance at the maximum-likelihood
    estimate, re-estimated from the pooled chains after each warm-up window, so they mix whatever the case.
    """

    coordinates: Literal["norm", "theta"] = Field(
        "norm", description="sample (log integral, a, b) per flavour, or theta itself"
    )
    n_chains: int = Field(16, ge=2, le=512, description="MCMC chains")
    n_warmup: int = Field(1500, ge=0, description="warm-up transitions per chain (dropped)")
    n_samples: int = Field(4000, ge=10, description="kept draws per chain")
    warmup_windows: int = Field(
        5, ge=1, le=50, description="warm-up windows, after each the scale and whitening are re-estimated"
    )
    thin: int = Field(1, ge=1, description="transitions per kept draw")
    seed: int = Field(0, ge=0, description="seed of the chains (and of the MLE's random starts)")


def lift_detector(data: Any) -> Any:
    """Accept a runcard's top-level ``detector:`` block as ``physics.detector`` (both spellings work).

    Raises:
        ValueError: both are given.
    """
    if isinstance(data, dict) and "detector" in data:
        data = dict(data)
        physics = dict(data.get("physics") or {})
        if physics.get("detector") is not None and data["detector"] is not None:
            raise ValueError("detector: given both at the top level and as physics.detector; keep one")
        if data["detector"] is not None:
            physics["detector"] = data["detector"]
        data.pop("detector")
        data["physics"] = physics
    return data


class ReferenceConfig(StrictModel):
    """Runcard of ``python -m physics.reference``: forward model, pseudo-data and reference posterior."""

    physics: PhysicsConfig = Field(default_factory=PhysicsConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    posterior: PosteriorConfig = Field(default_factory=PosteriorConfig)

    _lift_detector = model_validator(mode="before")(classmethod(lambda cls, data: lift_detector(data)))
