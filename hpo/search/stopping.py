"""Early stopping of bad trials: DeepHyper stoppers fed by a trial's per-step (GAN) or per-fold (VAIM) losses.

A trial reports its k-fold loss as it trains: the GAN every ``stopper.every`` steps (the loss of the held-out
datasets at the replicas' current estimates), VAIM after each fold. Budgets are counted in reports, so DeepHyper's
rung schedules (1, 3, 9, ... reports for successive halving) do not depend on the step size of the training. The
trial passes each report to ``job.record(budget, -loss)`` and asks ``job.stopped()``; a stopped trial ends its
training there and is scored on what it has, with ``stopped`` and ``budget`` in its metadata. It is not a failure:
its objective is a number, but it never becomes the best trial or an ensemble member.

Why a ledger: DeepHyper's stoppers compare a trial with the others through the evaluator's storage, which must be
shared between the processes that run trials. ``MPIWinStorage`` (DeepHyper's shared storage for MPI) crashes under
MPICH, and a ``MemoryStorage`` reaches an MPI or process worker as an empty copy. :class:`LedgerStorage` keeps
DeepHyper's in-memory storage for everything the manager stores and puts the stoppers' own records (keys starting
with ``_``: ``_completed``, ``_completed_rung_<k>``) in one small JSON file per trial in the run directory, which
every worker of every node that sees the directory reads. Files are replaced atomically, so a reader never sees a
half-written record, and a restarted search keeps its predecessors' rungs.

References:
    Li et al., "A system for massively parallel hyperparameter tuning" (ASHA), arXiv:1810.05934;
    Golovin et al., "Google Vizier" (median stopping rule), KDD 2017.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from deephyper.evaluator.storage import MemoryStorage
from deephyper.stopper import MedianStopper, SuccessiveHalvingStopper

from hpo.config import StopperSettings

__all__ = ["LedgerStorage", "TrialReporter", "build_stopper"]


def build_stopper(settings: StopperSettings, max_budget: int) -> Any:
    """The DeepHyper stopper of ``settings`` for trials of ``max_budget`` reports (None for ``kind: none``)."""
    if settings.kind == "none":
        return None
    if settings.kind == "successive_halving":
        return SuccessiveHalvingStopper(
            max_steps=max_budget,
            min_steps=settings.min_steps,
            reduction_factor=settings.reduction_factor,
            min_competing=settings.min_competing,
            min_fully_completed=settings.min_fully_completed,
        )
    return MedianStopper(max_steps=max_budget, min_steps=settings.min_steps, min_competing=settings.min_competing)


class LedgerStorage(MemoryStorage):
    """DeepHyper's ``MemoryStorage`` with the stoppers' records in ``directory`` (one JSON file per trial).

    Args:
        directory: the ledger folder (``<run dir>/stopper``), visible to every worker.
    """

    def __init__(self, directory: str | Path) -> None:
        super().__init__()
        self.directory = str(directory)
        self.session = f"{time.time_ns():x}"
        self._records: dict[str, dict[str, Any]] = {}
        Path(self.directory).mkdir(parents=True, exist_ok=True)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(directory=self.directory, session=self.session, _records={})
        return state

    def store_job_metadata(self, job_id: Any, key: Any, value: Any) -> None:
        """Stopper records (keys starting with ``_``) go to the job's ledger file, the rest to memory."""
        if not str(key).startswith("_"):
            super().store_job_metadata(job_id, key, value)
            return
        record = self._records.setdefault(str(job_id), {})
        record[str(key)] = value
        path = Path(self.directory) / f"{self.session}-{job_id}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    def load_metadata_from_all_jobs(self, search_id: Any, key: Any) -> list[Any]:
        """Stopper records of every trial of the run directory (all sessions); the rest from memory."""
        if not str(key).startswith("_"):
            return super().load_metadata_from_all_jobs(search_id, key)
        values = []
        for path in sorted(Path(self.directory).glob("*.json")):
            try:
                value = json.loads(path.read_text()).get(str(key))
            except (OSError, json.JSONDecodeError):  # removed by an --overwrite meanwhile
                continue
            if value is not None:
                values.append(value)
        return values


class TrialReporter:
    """Feeds a running DeepHyper job's stopper: ``report(budget, loss)`` returns whether to stop the trial now.

    Args:
        job: DeepHyper's running job (``record`` / ``stopped``).
        max_budget: the trial's reports when it is not stopped.

    Attributes:
        stopped_at: the budget where the stopper ended the trial (None: it ran to the end).
        history: (budget, loss) of every report.
    """

    def __init__(self, job: Any, max_budget: int) -> None:
        self.job = job
        self.max_budget = max_budget
        self.stopped_at: int | None = None
        self.history: list[tuple[int, float]] = []

    def __call__(self, budget: int, loss: float) -> bool:
        """Record one report; True when the stopper ends the trial before its full budget."""
        if not math.isfinite(loss):
            return False  # the trial's own checks fail it; a stopper must not compare a NaN
        self.history.append((int(budget), float(loss)))
        self.job.record(int(budget), -float(loss))
        if self.job.stopped() and budget < self.max_budget:
            self.stopped_at = int(budget)
            return True
        return False
