"""Runcard models of the inclusive DIS problem: PDFs at Q0, the theory of the evolution, kinematics and datasets.

Every field has a real default: an EIC-like neutral-current e p closure with LO evolution and structure
functions, four Q^2 windows and about 10^4 events. Five of the nine shape parameters are free by default
(a_uv, b_uv, A_S, a_S, a_g); a_dv, b_dv, b_S and b_g are fixed numbers, because 10^4 photon-exchange events
leave them unconstrained (their Cramér–Rao sd with all nine free exceeds their prior boxes several times over:
F2 of a proton weighs d by 1/9 and reaches the gluon only through scaling violations). Any entry of a shape can
be made free by naming a parameter there.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Literal

from pydantic import Field, field_validator, model_validator
from scipy.special import beta

from physics.config import ParameterSpec, ParameterVectors
from qcdgip.config import StrictModel

__all__ = [
    "CASES",
    "DISAcceptanceConfig",
    "DISConfig",
    "DISDetectorConfig",
    "GridConfig",
    "KinematicsConfig",
    "PDFConfig",
    "ShapeSpec",
    "TheoryConfig",
    "WindowSpec",
]

Value = float | str  # a number (fixed) or the name of a free parameter

CASES = {"A": 100_000.0, "B": 10_000.0, "C": 1_000.0}


class ShapeSpec(StrictModel):
    """One PDF shape A x^a (1-x)^b (1 + c_1 x + c_2 x^2 + ...) at Q0; each entry a number or a parameter name."""

    norm: Value | None = Field(None, description="A; None where a sum rule fixes it (u_v, d_v, g)")
    a: Value = Field(description="small-x exponent a (the integrals need a > -1 for valence, > -2 for x f)")
    b: Value = Field(description="large-x exponent b (> -1)")
    poly: list[Value] = Field(default_factory=list, description="coefficients c_1, c_2, ... of the polynomial")


class PDFConfig(StrictModel):
    """The PDFs at the initial scale: valence, sea and gluon shapes and which flavours each sea shape feeds."""

    u_v: ShapeSpec = Field(ShapeSpec(a="a_uv", b="b_uv"), description="u valence; normalised to 2 by the sum rule")
    d_v: ShapeSpec = Field(ShapeSpec(a=-0.4, b=4.0), description="d valence; normalised to 1 by the sum rule")
    g: ShapeSpec = Field(ShapeSpec(a="a_g", b=5.0), description="gluon; normalised by the momentum sum rule")
    sea: dict[str, ShapeSpec] = Field(
        {"S": ShapeSpec(norm="A_S", a="a_S", b=7.0)}, description="sea shapes by name, each with its own norm"
    )
    flavours: dict[Literal["ubar", "dbar", "s", "sbar"], str] = Field(
        {"ubar": "S", "dbar": "S", "s": "S", "sbar": "S"}, description="the sea shape of each light antiquark and s"
    )

    @model_validator(mode="after")
    def _check(self) -> PDFConfig:
        missing = {"ubar", "dbar", "s", "sbar"} - set(self.flavours)
        if missing:
            raise ValueError(f"pdf.flavours: every sea flavour needs a shape; missing {sorted(missing)}")
        for flavour, shape in self.flavours.items():
            if shape not in self.sea:
                raise ValueError(f"pdf.flavours.{flavour}: unknown sea shape {shape!r}; known {sorted(self.sea)}")
        if self.flavours["s"] != self.flavours["sbar"]:
            raise ValueError("pdf.flavours: s and sbar must share one shape (the strangeness sum rule)")
        for name, shape in self.sea.items():
            if shape.norm is None:
                raise ValueError(f"pdf.sea.{name}.norm: a sea shape needs a normalisation (number or parameter)")
        return self


class TheoryConfig(StrictModel):
    """Perturbative settings shared by the evolution (eko) and the structure functions (yadism)."""

    order: Literal["LO", "NLO"] = Field("LO", description="perturbative order of evolution and coefficient functions")
    q0: float = Field(1.65, gt=1.0, description="initial scale Q0 of the fitted PDFs (GeV)")
    alphas: float = Field(0.118, gt=0.0, lt=0.3, description="alpha_s at the reference scale")
    q_ref: float = Field(91.2, gt=0.0, description="reference scale of alpha_s (GeV)")
    m_c: float = Field(1.51, gt=0.0, description="charm pole mass (GeV); Q0 above it: no charm PDF fitted at Q0")
    m_b: float = Field(4.92, gt=0.0, description="bottom pole mass (GeV)")
    m_t: float = Field(172.5, gt=0.0, description="top pole mass (GeV)")

    @model_validator(mode="after")
    def _check_masses(self) -> TheoryConfig:
        if not self.m_c < self.m_b < self.m_t:
            raise ValueError("theory: masses must be ordered m_c < m_b < m_t")
        return self


class GridConfig(StrictModel):
    """Grids of the operator: eko's interpolation grid of the Q0 PDFs and the output nodes of F2 and FL."""

    x_min: float = Field(1e-5, gt=0.0, lt=0.01, description="smallest x of eko's interpolation grid")
    n_log: int = Field(30, ge=10, description="log-spaced eko grid points below x = 0.1")
    n_lin: int = Field(25, ge=5, description="linear eko grid points in [0.1, 1]")
    n_high: int = Field(
        0, ge=0, description="eko grid points log-spaced in 1 - x above x = 0.9 (each makes eko much slower)"
    )
    n_x: int | None = Field(
        None,
        ge=16,
        description="output nodes in logit(x) across the kinematic region; by default 72 at LO and 96 beyond, "
        "where the ln(1 - x) terms of the coefficient functions bend ln F2 at large x",
    )
    n_q2: int = Field(
        20,
        ge=4,
        description="output nodes in ln Q^2 across the kinematic region (beyond LO one more per heavy-quark "
        "threshold inside it: a node pair brackets each jump)",
    )


class KinematicsConfig(StrictModel):
    """Beam energy and cuts of the neutral-current e p process (photon exchange)."""

    sqrt_s: float = Field(140.7, gt=1.0, description="centre-of-mass energy (GeV); EIC 18 x 275 GeV by default")
    q2_min: float = Field(4.0, gt=0.0, description="smallest Q^2 (GeV^2); must not be below Q0^2")
    q2_max: float = Field(1000.0, gt=0.0, description="largest Q^2 (GeV^2)")
    w2_min: float = Field(10.0, gt=0.0, description="smallest W^2 = M^2 + Q^2 (1 - x) / x (GeV^2)")
    y_min: float = Field(0.01, gt=0.0, lt=1.0, description="smallest inelasticity y = Q^2 / (x s)")
    y_max: float = Field(0.95, gt=0.0, le=1.0, description="largest inelasticity")
    x_max: float = Field(0.9, gt=0.0, lt=1.0, description="largest x (the operator's accuracy is measured below it)")
    proton_mass: float = Field(0.938, gt=0.0, description="M in W^2 (GeV)")

    @model_validator(mode="after")
    def _check(self) -> KinematicsConfig:
        if not self.q2_min < self.q2_max:
            raise ValueError(f"kinematics: q2_min ({self.q2_min}) must be below q2_max ({self.q2_max})")
        if not self.y_min < self.y_max:
            raise ValueError(f"kinematics: y_min ({self.y_min}) must be below y_max ({self.y_max})")
        if self.w2_min <= self.proton_mass**2:
            raise ValueError("kinematics.w2_min must exceed the proton mass squared")
        return self


class WindowSpec(StrictModel):
    """One dataset: the events with Q^2 in [q2_min, q2_max)."""

    name: str = Field(description="dataset name")
    q2_min: float = Field(gt=0.0, description="lower Q^2 edge (GeV^2)")
    q2_max: float = Field(gt=0.0, description="upper Q^2 edge (GeV^2)")

    @model_validator(mode="after")
    def _check(self) -> WindowSpec:
        if not self.q2_min < self.q2_max:
            raise ValueError(f"dataset {self.name!r}: q2_min must be below q2_max")
        return self


class DISAcceptanceConfig(StrictModel):
    """Acceptance eps(y) = plateau / (1 + exp(-(ln y - ln y0) / width)): the efficiency falls at small y."""

    plateau: float = Field(0.95, gt=0.0, le=1.0, description="efficiency at large y")
    y0: float = Field(0.02, gt=0.0, lt=1.0, description="inelasticity where the efficiency is half the plateau")
    width: float = Field(0.5, gt=0.0, description="width of the turn-on in ln y")


class DISDetectorConfig(StrictModel):
    """Resolution, acceptance and migrations of reconstructed (x, Q^2) events (``physics.dis.detector``)."""

    resolution_x: float = Field(0.1, gt=0.0, le=1.0, description="sd of ln x_rec - ln x (Gaussian, truncated at reach)")
    resolution_q2: float = Field(
        0.05, gt=0.0, le=1.0, description="sd of ln Q^2_rec - ln Q^2 (Gaussian, truncated at reach)"
    )
    reach: float = Field(4.0, ge=2.0, le=8.0, description="truncation of both Gaussians, in sd")
    acceptance: DISAcceptanceConfig | None = Field(
        default_factory=DISAcceptanceConfig, description="efficiency in y; None: every event is recorded"
    )
    nodes: int = Field(10, ge=4, le=32, description="Gauss-Legendre nodes per dimension of the folding integrals")
    metric_cells: int = Field(
        24, ge=4, le=128, description="reconstructed cells per side and window of the natural-gradient metric"
    )


def _default_parameters() -> list[ParameterSpec]:
    rows = [("a_uv", -0.4, -0.7, -0.1), ("b_uv", 3.5, 2.0, 5.5), ("A_S", 0.12, 0.06, 0.18), ("a_S", -1.15, -1.3, -1.0),
            ("a_g", -0.9, -1.3, -0.5)]  # fmt: skip
    return [ParameterSpec(name=n, truth=t, low=lo, high=hi) for n, t, lo, hi in rows]


def _default_windows() -> list[WindowSpec]:
    edges = [4.0, 10.0, 40.0, 160.0, 1000.0]
    return [WindowSpec(name=f"Q2_{lo:g}_{hi:g}", q2_min=lo, q2_max=hi) for lo, hi in pairwise(edges)]


class DISConfig(ParameterVectors, StrictModel):
    """The DIS closure problem: parameters, PDFs, theory, grids, kinematics, Q^2 windows and event cases."""

    parameters: list[ParameterSpec] = Field(default_factory=_default_parameters, description="free parameters")
    pdf: PDFConfig = Field(default_factory=PDFConfig, description="PDF shapes at Q0")
    theory: TheoryConfig = Field(default_factory=TheoryConfig, description="evolution and coefficient functions")
    grid: GridConfig = Field(default_factory=GridConfig, description="operator grids")
    kinematics: KinematicsConfig = Field(default_factory=KinematicsConfig, description="beam and cuts")
    datasets: list[WindowSpec] = Field(default_factory=_default_windows, description="Q^2 windows, one per dataset")
    cases: dict[str, float] = Field(dict(CASES), description="expected total events at the truth, per case name")
    case: str = Field("B", description="the case in use")
    operator: str | None = Field(
        None, description="operator file (.npz); None: the shipped default when it matches, else a cache entry"
    )
    detector: DISDetectorConfig | None = Field(
        None, description="resolution, acceptance and migrations of the events; None: events are the true (x, Q^2)"
    )

    @field_validator("parameters")
    @classmethod
    def _unique(cls, value: list[ParameterSpec]) -> list[ParameterSpec]:
        names = [p.name for p in value]
        if len(set(names)) != len(names):
            raise ValueError(f"parameters: duplicate names in {names}")
        return value

    @model_validator(mode="after")
    def _check(self) -> DISConfig:
        if self.case not in self.cases:
            raise ValueError(f"case {self.case!r} is not in cases {sorted(self.cases)}")
        if self.kinematics.q2_min < self.theory.q0**2:
            raise ValueError(f"kinematics.q2_min ({self.kinematics.q2_min}) is below Q0^2 = {self.theory.q0**2:.4g}")
        names = {p.name for p in self.parameters}
        for field, value in _shape_values(self.pdf):
            if isinstance(value, str) and value not in names:
                raise ValueError(f"pdf.{field}: {value!r} is not a parameter; parameters are {sorted(names)}")
        used = {v for _, v in _shape_values(self.pdf) if isinstance(v, str)}
        if names - used:
            raise ValueError(f"parameters {sorted(names - used)} are not used by any pdf shape")
        k = self.kinematics
        for w in self.datasets:
            if w.q2_min < k.q2_min or w.q2_max > k.q2_max:
                raise ValueError(f"dataset {w.name!r}: its window leaves kinematics [q2_min, q2_max]")
        _check_momentum(self)
        return self

    def with_case(self, case: str) -> DISConfig:
        """Return a copy with another event case selected (validated)."""
        return DISConfig.model_validate({**self.model_dump(), "case": case})


def _shape_values(pdf: PDFConfig) -> list[tuple[str, Value]]:
    rows: list[tuple[str, Value]] = []
    shapes = {"u_v": pdf.u_v, "d_v": pdf.d_v, "g": pdf.g, **{f"sea.{k}": v for k, v in pdf.sea.items()}}
    for name, s in shapes.items():
        rows += [(f"{name}.a", s.a), (f"{name}.b", s.b)] + [(f"{name}.poly[{i}]", c) for i, c in enumerate(s.poly)]
        if s.norm is not None:
            rows.append((f"{name}.norm", s.norm))
    return rows


def _check_momentum(config: DISConfig) -> None:
    """Refuse a box where a corner leaves no momentum for the gluon (only checked for polynomial-free shapes).

    Without polynomials the valence and sea momentum integrals are monotone in every parameter, so the box
    corners bound them.
    """
    pdf = config.pdf
    if any(s.poly for s in (pdf.u_v, pdf.d_v, *pdf.sea.values())):
        return
    box = {p.name: (p.low, p.high) for p in config.parameters}

    def extremes(v: Value) -> tuple[float, float]:
        return box[v] if isinstance(v, str) else (v, v)

    worst = 0.0
    for shape, total in ((pdf.u_v, 2.0), (pdf.d_v, 1.0)):  # <x> = total (a+1)/(a+b+2): largest at high a, low b
        a, b = extremes(shape.a)[1], extremes(shape.b)[0]
        worst += total * (a + 1.0) / (a + b + 2.0)
    weights = {"ubar": 2.0, "dbar": 2.0, "s": 1.0, "sbar": 1.0}
    for flavour, name in pdf.flavours.items():
        s = pdf.sea[name]
        norm, a, b = extremes(s.norm)[1], extremes(s.a)[0], extremes(s.b)[0]  # type: ignore[arg-type]
        worst += weights[flavour] * norm * beta(a + 2.0, b + 1.0)
    if not worst < 1.0 or not math.isfinite(worst):
        raise ValueError(
            f"parameters: at a corner of the prior box the quarks carry momentum {worst:.3f} >= 1, leaving none "
            "for the gluon; narrow the valence or sea boxes"
        )
