"""The ensemble's runcard: which search, how many members, how they are refitted and judged.

Every field can come from a YAML file (``--config``), its shortcut option (``--search``, ``--top``, ...) or
``--set``; ``search`` must be given one way or another.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from qcdgip.config import StrictModel

__all__ = ["EnsembleConfig"]


class EnsembleConfig(StrictModel):
    """Runcard of ``python -m hpo.ensemble``: the K best complete trials of a search, refitted on all data."""

    search: str | None = Field(None, description="run directory of a finished python -m hpo.search (required)")
    top: int = Field(5, ge=1, le=1000, description="K: the best K complete trials become members")
    replicas: int | None = Field(
        None, ge=2, le=100_000, description="R replicas per member (None: the base runcard's gan.training.replicas)"
    )
    evaluator: Literal["serial", "process", "mpi"] = Field("serial", description="how the refits run")
    workers: int | None = Field(
        None, ge=1, le=100_000, description="parallel refits (None: 1, or 2 MPI workers when re-launched)"
    )
    reference: bool = Field(True, description="compare with the MCMC reference posterior (a closure's truth known)")
    threads: int = Field(0, ge=0, le=4096, description="torch threads per refit (0: its share of the free cores)")
