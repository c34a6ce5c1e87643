"""Validated search runcards (``python -m hpo.search --config``): solver, k-fold scoring, loss, space, search.

A search YAML names the solver's own runcard (``base``: a ``inverse.closure``, ``inverse.gan.dis`` or
``inverse.vaim`` YAML, relative to the search file), optional ``overrides`` of it, and a ``space`` whose keys
are dotted paths into that runcard::

    space:
      gan.optimizer_g.lr: {low: 0.05, high: 1.0, log: true}        # real range, log-uniform
      gan.training.steps: {low: 50, high: 300}                      # integers give an integer range
      gan.discriminator.width: {values: [8, 16, 32, 64]}             # categorical
      gan.generator.depth: {low: 0, high: 3, when: {gan.generator.kind: mlp}}   # condition

Every point of the space is checked against the solver's config when the search starts (lowest, highest and each
category), so a path that does not exist or a value the solver refuses is an error naming the space entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from hpo.kfold import KFoldConfig
from hpo.losses import LOSS_TYPES, STATISTICS, HyperLoss
from hpo.penalties import PENALTIES
from inverse.gan.config import ClosureConfig
from inverse.gan.dis.config import DISClosureConfig
from inverse.vaim.config import VAIMConfig
from qcdgip.config import StrictModel, apply_overrides, load_yaml, parse_config

__all__ = [
    "SOLVER_COMMANDS",
    "Dimension",
    "LossSettings",
    "SearchConfig",
    "SearchSettings",
    "StopperSettings",
    "load_search_config",
]

Scalar = float | int | str | bool


class Dimension(StrictModel):
    """One hyperparameter: a range (``low``/``high``, ``log``) or ``values`` (categorical).

    ``when`` makes it conditional on categorical hyperparameters: active only where each named one takes the
    given value (or one of the given values).
    """

    low: float | int | None = Field(None, description="range: lower end (integer ends give an integer range)")
    high: float | int | None = Field(None, description="range: upper end")
    log: bool = Field(False, description="range: sample log-uniformly (needs low > 0)")
    values: list[Scalar] | None = Field(None, description="categorical: the values to choose from")
    default: Scalar | None = Field(None, description="DeepHyper's default value of this hyperparameter")
    when: dict[str, Scalar | list[Scalar]] | None = Field(
        None, description="active only where these categorical entries take these values (one or a list)"
    )

    @model_validator(mode="after")
    def _check(self) -> Dimension:
        is_range = self.low is not None or self.high is not None
        if is_range == (self.values is not None):
            raise ValueError("give either low and high (a range) or values (categorical), not both or neither")
        if is_range:
            if self.low is None or self.high is None:
                raise ValueError("a range needs both low and high")
            if not self.low < self.high:
                raise ValueError(f"low ({self.low}) must be below high ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError(f"log: a log-uniform range needs low > 0, got {self.low}")
        elif not self.values:
            raise ValueError("values: give at least one value")
        return self

    @property
    def is_integer(self) -> bool:
        """An integer range (both ends written as integers)."""
        return isinstance(self.low, int) and isinstance(self.high, int)

    def probes(self) -> list[Scalar]:
        """Values checked against the solver config before searching."""
        return list(self.values) if self.values is not None else [self.low, self.high]


class LossSettings(StrictModel):
    """The trial loss (``hpo.losses.HyperLoss``) and penalties (``hpo.penalties``)."""

    def hyper_loss(self) -> HyperLoss:
        """The :class:`HyperLoss` these settings describe."""
        return HyperLoss(
            self.loss_type,
            self.replica_statistic,
            self.fold_statistic,
            self.threshold,
            self.include_penalties,
            self.proportion,
        )

    loss_type: str = Field(
        "chi2", description="chi2 | chi2_deviation | chi2_mean | chi2p | logp | phi2 | bias_variance | future_test"
    )
    replica_statistic: str = Field(
        "average", description="how replicas are reduced: average | average_best | best_worst | std"
    )
    fold_statistic: str = Field(
        "average", description="how folds are reduced: average | average_best | best_worst | std"
    )
    threshold: float | None = Field(None, gt=0.0, description="a fold above it fails the trial")
    proportion: float = Field(0.9, gt=0.0, le=1.0, description="share of replicas average_best keeps")
    penalties: list[str] = Field(
        default_factory=lambda: list(PENALTIES), description="penalties reported for every trial (patience, saturation)"
    )
    include_penalties: bool = Field(False, description="add the penalties to the trial loss")
    patience_alpha: float = Field(1e-3, ge=0.0, description="alpha of the patience penalty vl exp(alpha |S - P - s*|)")
    saturation_edge: float = Field(
        1e-3, gt=0.0, lt=0.5, description="saturation: box-scaled distance from an edge counted as saturated"
    )

    @model_validator(mode="after")
    def _check(self) -> LossSettings:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type: {self.loss_type!r} is not one of {list(LOSS_TYPES)}")
        for name in ("replica_statistic", "fold_statistic"):
            if getattr(self, name) not in STATISTICS:
                raise ValueError(f"{name}: {getattr(self, name)!r} is not one of {list(STATISTICS)}")
        unknown = [p for p in self.penalties if p not in PENALTIES]
        if unknown:
            raise ValueError(f"penalties: unknown {unknown}; known: {list(PENALTIES)}")
        return self


class StopperSettings(StrictModel):
    """``stopper:`` of a search runcard: which DeepHyper stopper ends bad trials early, and how often trials report."""

    kind: Literal["none", "successive_halving", "median"] = Field(
        "none", description="none | successive_halving (ASHA) | median (the median stopping rule)"
    )
    every: int = Field(10, ge=1, description="GAN: training steps between reports (VAIM reports after each fold)")
    min_steps: int = Field(1, ge=1, description="reports before the first stopping decision")
    reduction_factor: float = Field(3.0, gt=1.0, description="successive halving: keep the best 1/factor per rung")
    min_competing: int = Field(0, ge=0, description="trials that must have reached a rung before it is judged")
    min_fully_completed: int = Field(
        1, ge=0, description="successive halving: complete trials needed before any trial is stopped"
    )


class SearchSettings(StrictModel):
    """DeepHyper's centralized Bayesian optimisation (CBO) and its budget."""

    max_evals: int = Field(20, ge=1, description="trials in total (a restart counts the finished ones)")
    timeout: int | None = Field(None, ge=1, description="wall seconds of the search (None: none)")
    seed: int = Field(
        0, ge=0, description="seed of the search's random points (a restart adds the finished trials to it)"
    )
    surrogate: Literal["ET", "RF", "GP", "GBRT", "DUMMY"] = Field(
        "ET", description="CBO surrogate model: ET (extra trees), RF, GP, GBRT or DUMMY (random search)"
    )
    acq_optimizer: Literal["sampling", "mixedga", "ga", "lbfgs", "boltzmann"] = Field(
        "sampling", description="sampling is ~10x cheaper than DeepHyper's default for short trials"
    )
    n_initial_points: int = Field(5, ge=1, description="random points before the surrogate model is used")
    kappa: float = Field(1.96, ge=0.0, description="UCB exploration weight")
    include_base: bool = Field(True, description="evaluate the base runcard's own values first")
    torch_threads: int = Field(
        0, ge=0, description="threads per trial (0: the free cores of its share, the node's cores / its workers)"
    )


class SearchConfig(StrictModel):
    """A search runcard: what is tuned, how a trial is scored, and the search's budget."""

    solver: Literal["gan", "gan_dis", "vaim"] = Field(
        "gan",
        description="the solver tuned: gan (python -m inverse.closure), gan_dis (the GAN on DIS events, python -m "
        "inverse.gan.dis; folds over Q^2 windows) or vaim (python -m inverse.vaim)",
    )
    base: str | None = Field(None, description="the solver's runcard (relative to this file); None: defaults")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted paths set in the base runcard")
    kfold: KFoldConfig = Field(default_factory=KFoldConfig)
    loss: LossSettings = Field(default_factory=LossSettings)
    space: dict[str, Dimension]
    search: SearchSettings = Field(default_factory=SearchSettings)
    stopper: StopperSettings = Field(default_factory=StopperSettings)

    @model_validator(mode="after")
    def _check_space(self) -> SearchConfig:
        if not self.space:
            raise ValueError("space: give at least one hyperparameter")
        for name, dim in self.space.items():
            for parent, value in (dim.when or {}).items():
                if parent not in self.space or self.space[parent].values is None:
                    raise ValueError(f"space.{name}.when: {parent!r} must be a categorical hyperparameter of the space")
                allowed = value if isinstance(value, list) else [value]
                bad = [v for v in allowed if v not in self.space[parent].values]
                if bad:
                    raise ValueError(f"space.{name}.when: {bad} are not values of {parent!r}")
        if self.loss.loss_type == "future_test":
            parts = self.kfold.partitions
            if self.solver == "vaim":
                raise ValueError("loss.loss_type: future_test scores dataset partitions, a GAN search (solver: gan)")
            if not parts or len(parts) < 2 or parts[-1].datasets:
                raise ValueError(
                    "kfold.partitions: loss_type future_test needs at least two partitions, the last one empty "
                    "({datasets: []}: the full-data fit the others are compared with)"
                )
        return self


SOLVER_COMMANDS = {"gan": "inverse.closure", "gan_dis": "inverse.gan.dis", "vaim": "inverse.vaim"}


def solver_model(solver: str) -> type[BaseModel]:
    """The runcard model of a solver."""
    return {"gan": ClosureConfig, "gan_dis": DISClosureConfig, "vaim": VAIMConfig}[solver]


def load_search_config(path: str | Path) -> tuple[SearchConfig, dict[str, Any]]:
    """Read and check a search runcard; returns it and the solver's base runcard (overrides applied) as a dict.

    Raises:
        ValueError: a bad field (named with the file), a missing base runcard, or a space entry whose values the
            solver refuses.
    """
    path = Path(path)
    config = parse_config(SearchConfig, load_yaml(path), str(path))
    return config, base_runcard(config, path.parent)


def base_runcard(config: SearchConfig, root: Path) -> dict[str, Any]:
    """The solver's base runcard as a validated dict (every default filled in), checked against the space."""
    model = solver_model(config.solver)
    raw: dict[str, Any] = {}
    if config.base:
        base_path = (root / config.base) if not Path(config.base).is_absolute() else Path(config.base)
        if not base_path.is_file():
            raise ValueError(f"base: runcard {base_path} does not exist")
        raw = load_yaml(base_path)
    raw = apply_overrides(raw, config.overrides)
    resolved = parse_config(model, raw, "base + overrides").model_dump(mode="json")
    training = resolved.get("gan", {}).get("training", {})
    if training.get("devices", 1) * training.get("num_nodes", 1) > 1:
        raise ValueError(
            "gan.training.devices / num_nodes: a trial trains on its worker's one device; set both to 1 (over MPI, "
            "every worker gets its own GPU)"
        )
    for name, dim in config.space.items():
        for value in dim.probes():
            try:
                parse_config(model, apply_overrides(resolved, {name: value}), f"space.{name}")
            except ValueError as err:
                raise ValueError(f"space.{name} = {value!r} is refused by the {config.solver} runcard: {err}") from None
    return resolved
