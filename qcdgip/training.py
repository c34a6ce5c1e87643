"""Step-counted Lightning training shared by every model of the suite: trainer, progress bar, checkpoints, DDP.

The models draw their own minibatches, so Lightning iterates over endless step indices (:class:`StepsDataset`) and
the modules say where they stand (``steps_done``, ``steps_total``, ``progress_label``). :func:`step_trainer` builds
the trainer: CSV log, atomic ``checkpoints/last.ckpt`` (:class:`StepCheckpoint`), a progress bar over steps
(:class:`StepBar`), the re-check of the free cores (:class:`ThreadGovernor`, :mod:`qcdgip.runtime`), the record of
an interruption (:class:`InterruptRecorder`, exit status 130) and, for ``devices x num_nodes > 1``, data-parallel
processes (:class:`DataParallelStrategy`) started by ``srun`` or by Lightning (:func:`cluster_environment`).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import ClusterEnvironment, LightningEnvironment, SLURMEnvironment
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.overrides.distributed import _sync_module_states
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, IterableDataset

from qcdgip import runtime

__all__ = [
    "RENDEZVOUS_TIMEOUT",
    "DataParallelStrategy",
    "InterruptRecorder",
    "StepBar",
    "StepCheckpoint",
    "StepModule",
    "StepsDataset",
    "ThreadGovernor",
    "cluster_environment",
    "interrupted",
    "launch_rank",
    "srun_tasks",
    "step_trainer",
]

RENDEZVOUS_TIMEOUT = timedelta(hours=2)
"""How long the data-parallel processes wait for each other (process-group set-up and collectives)."""


class DataParallelStrategy(DDPStrategy):
    """Lightning's DDP (processes, process group, cluster environment) without the ``DistributedDataParallel`` wrapper.

    A GAN step makes several backward passes per player (replica chunks, extra discriminator updates), which
    DDP's reducer, built for one backward per forward, cannot sync. The module is kept unwrapped, rank 0's
    parameters and buffers are broadcast once, and the module averages its gradients itself before each optimizer
    step (``inverse.gan.training.GANModule``: one all-reduce per player update).
    """

    def configure_ddp(self) -> None:
        """Start every process from rank 0's state instead of wrapping the module."""
        assert self.model is not None
        _sync_module_states(self.model)


def srun_tasks() -> int | None:
    """Tasks of the enclosing ``srun`` step (None outside one; a batch script's own shell is not a step)."""
    step = os.environ.get("SLURM_STEP_ID", "")
    if "SLURM_PROCID" not in os.environ or not step.isdigit():
        return None
    return int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or 1)


def launch_rank(devices: int, num_nodes: int) -> int:
    """This process's rank in the data-parallel training, known before Lightning starts (0: the leading one).

    Under ``srun`` it is the task's rank; with Lightning's own launcher the processes it starts carry
    ``LOCAL_RANK`` (and ``NODE_RANK`` across nodes), while the one a user started is rank 0.
    """
    if devices * num_nodes == 1:
        return 0
    if (srun_tasks() or 1) > 1:
        return int(os.environ["SLURM_PROCID"])
    return int(os.environ.get("NODE_RANK") or 0) * devices + int(os.environ.get("LOCAL_RANK") or 0)


def cluster_environment(devices: int, num_nodes: int) -> ClusterEnvironment:
    """Where the training processes come from: ``srun``'s tasks, or Lightning's own launcher.

    One process: :class:`LightningEnvironment`, named so that Lightning does not probe for a cluster (its probes
    ask MPI for the world size, which aborts a process where mpi4py is imported but MPI is off, as in DeepHyper's
    workers, and would read an enclosing srun's task count as this run's world size).

    Raises:
        ValueError: under ``srun``, the task count differs from ``devices x num_nodes``.
    """
    world = devices * num_nodes
    tasks = srun_tasks()
    if world == 1 or tasks is None or tasks == 1:
        return LightningEnvironment()
    if tasks != world:
        raise ValueError(
            f"training.devices x training.num_nodes = {devices} x {num_nodes} = {world} processes, but srun started "
            f"{tasks} tasks; set them to srun's --ntasks-per-node and --nodes (slurm/train.sh passes --devices "
            "and --num-nodes from them)"
        )
    return SLURMEnvironment(auto_requeue=False)


class StepsDataset(IterableDataset):
    """Endless step indices: the model draws its own minibatches, Lightning only needs something to iterate."""

    def __iter__(self) -> Iterator[int]:
        return itertools.count()


class StepModule(L.LightningModule):
    """Base of the suite's Lightning modules: manual optimization for ``model.config.training.steps`` steps.

    The module draws its own minibatches (Lightning iterates over :class:`StepsDataset`) and ends the endless epoch
    when the steps are done. With ``count_steps`` it keeps the step counter as a ``step_count`` buffer (saved in
    checkpoints); a module whose model counts its own steps passes False and overrides :attr:`steps_done`.

    Args:
        model: the model trained in place (its ``config.training.steps`` is the length of the training).
        count_steps: register the ``step_count`` buffer.
    """

    progress_label = "steps"

    def __init__(self, model: torch.nn.Module, count_steps: bool = True) -> None:
        super().__init__()
        self.model = model
        self.automatic_optimization = False
        if count_steps:
            self.register_buffer("step_count", torch.zeros((), dtype=torch.long))

    @property
    def steps_done(self) -> int:
        """Steps trained so far (restored from checkpoints)."""
        return int(self.step_count)

    @property
    def steps_total(self) -> int:
        """Steps to train."""
        return self.model.config.training.steps

    def train_dataloader(self) -> DataLoader:
        """Step indices (the data live in the module or its model)."""
        return DataLoader(StepsDataset(), batch_size=None)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        """End the (single, endless) epoch once the configured number of steps is done."""
        return -1 if self.steps_done >= self.steps_total else None


class StepCheckpoint(L.Callback):
    """Write ``last.ckpt`` (atomically) every ``every`` steps and at the end of training.

    Works with any module exposing ``steps_done`` and ``steps_total`` (the GAN's, VAIM's and the surrogates').
    """

    def __init__(self, directory: str | Path, every: int) -> None:
        self.directory = Path(directory)
        self.every = every

    def _save(self, trainer: L.Trainer) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / "last.ckpt.tmp"
        trainer.save_checkpoint(tmp)  # written by rank 0 only, behind a barrier
        if trainer.is_global_zero:
            os.replace(tmp, self.directory / "last.ckpt")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        """Checkpoint on schedule."""
        step = pl_module.steps_done
        if step % self.every == 0 or step == pl_module.steps_total:
            self._save(trainer)


class ThreadGovernor(L.Callback):
    """Re-check the free cores every ``every_s`` seconds of training and follow them (:mod:`qcdgip.runtime`)."""

    def __init__(self, every_s: float = runtime.RECHECK_S) -> None:
        self.every_s = every_s
        self._next = 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        """Re-check on schedule (a pinned count is never changed)."""
        policy = runtime.current_policy()
        now = time.monotonic()
        if policy is None or policy.pinned or now < self._next:
            return
        if self._next:
            policy.recheck()
        self._next = now + self.every_s


_INTERRUPTED = False


def interrupted() -> bool:
    """Whether a training in this process was stopped by Ctrl-C / SIGINT / SIGTERM (exit status 130)."""
    return _INTERRUPTED


class InterruptRecorder(L.Callback):
    """Remember that training ended on an interruption (Lightning itself then exits with status 1).

    No checkpoint is written then: a step cut in the middle would not resume to the same result, so the last
    scheduled checkpoint is the one ``--resume`` continues from.
    """

    def on_exception(self, trainer: L.Trainer, pl_module: Any, exception: BaseException) -> None:
        """Record a KeyboardInterrupt."""
        global _INTERRUPTED
        if isinstance(exception, KeyboardInterrupt):
            _INTERRUPTED = True


class StepBar(TQDMProgressBar):
    """Progress bar over training steps (the endless epoch has no length of its own).

    Works with any module exposing ``steps_done``, ``steps_total`` and ``progress_label``.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        """Size the bar by the steps to train and start it where a resumed run stands."""
        super().on_train_epoch_start(trainer, pl_module)
        self.train_progress_bar.reset(total=pl_module.steps_total)
        self.train_progress_bar.initial = pl_module.steps_done
        self.train_progress_bar.set_description(pl_module.progress_label)

    def get_metrics(self, trainer: L.Trainer, pl_module: Any) -> dict[str, Any]:
        """Lightning's metrics without the logger version."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        """Advance to the module's step count."""
        bar = self.train_progress_bar
        bar.n = pl_module.steps_done
        if bar.n % max(1, self.refresh_rate) == 0 or bar.n == bar.total:
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()


def _quiet_lightning() -> None:
    # Lightning's advertising tip and checkpoint chatter are noise in a CLI; warnings still show.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector").setLevel(logging.WARNING)
    # Lightning's hint to prepend srun fires on any machine with Slurm installed; running without it is a choice.
    warnings.filterwarnings("ignore", message="The `srun` command is available on your system but is not used")


def _callbacks(
    directory: str | Path | None, training: Any, progress: bool, resume: bool, extra: list[L.Callback] | None
) -> tuple[list[L.Callback], str | None]:
    """The trainer's callbacks (extra ones first) and the checkpoint to resume from."""
    callbacks = [*(extra or []), ThreadGovernor(), InterruptRecorder()]
    if progress:
        callbacks.append(StepBar(refresh_rate=max(1, training.log_every)))
    ckpt = None
    if directory is not None:
        directory = Path(directory)
        callbacks.append(StepCheckpoint(directory / "checkpoints", training.checkpoint_every))
        last = directory / "checkpoints" / "last.ckpt"
        ckpt = str(last) if resume and last.is_file() else None
    return callbacks, ckpt


def step_trainer(
    directory: str | Path | None,
    training: Any,
    *,
    progress: bool | None = None,
    resume: bool = False,
    callbacks: list[L.Callback] | None = None,
) -> tuple[L.Trainer, str | None]:
    """A Lightning trainer for step-counted training, with checkpoints, progress bar and CSV log.

    Args:
        directory: where ``checkpoints/last.ckpt`` and Lightning's CSV log go (None: nowhere).
        training: the model's ``training`` section: ``accelerator`` (``auto``, ``cpu``, ``gpu``/``cuda``, ``mps``),
            ``dtype`` (``float32``/``float64``, Lightning's precision), ``log_every`` (steps between log rows and
            progress-bar updates), ``checkpoint_every``, ``progress``, and optionally ``devices`` / ``num_nodes`` /
            ``strategy`` (``devices x num_nodes > 1`` or ``strategy: ddp``: data parallel, for modules that average
            their gradients like ``inverse.gan.training.GANModule``; default one process).
        progress: show a progress bar (default ``training.progress``).
        resume: continue from ``directory/checkpoints/last.ckpt`` if it exists.
        callbacks: extra callbacks.

    Returns:
        (trainer, checkpoint path to pass to ``fit`` or None).

    Raises:
        ValueError: under ``srun``, the task count differs from ``devices x num_nodes``.
    """
    devices, num_nodes = getattr(training, "devices", 1), getattr(training, "num_nodes", 1)
    progress = training.progress if progress is None else progress
    _quiet_lightning()
    callbacks, ckpt = _callbacks(directory, training, progress, resume, callbacks)
    environment = cluster_environment(devices, num_nodes)
    parallel = devices * num_nodes > 1 or getattr(training, "strategy", "auto") == "ddp"
    trainer = L.Trainer(
        accelerator={"cuda": "gpu"}.get(training.accelerator, training.accelerator),
        devices=devices,
        num_nodes=num_nodes,
        # Ranks other than 0 wait at the rendezvous while rank 0 prepares the data and the reference posterior, which
        # may take longer than torch's 30-minute default.
        strategy=DataParallelStrategy(cluster_environment=environment, timeout=RENDEZVOUS_TIMEOUT)
        if parallel
        else "auto",
        plugins=None if parallel else [environment],
        max_epochs=1,
        max_steps=-1,
        precision="64-true" if training.dtype == "float64" else "32-true",
        # A new CSV version per (re)start: a resumed run must not delete the metrics logged before the interruption.
        logger=CSVLogger(directory, name="lightning_logs") if directory is not None else False,
        log_every_n_steps=training.log_every,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    if devices * num_nodes > 1 and isinstance(trainer.accelerator, CPUAccelerator):
        # Processes sharing a node's cores: each gets its share (srun's -c when given), not all of them.
        runtime.configure_threads(getattr(training, "threads", 0) or None, processes=devices)
    return trainer, ckpt
