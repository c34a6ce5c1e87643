"""Lightning training of the inverse GAN: manual optimization, schedules, checkpoints, resume, NaN guard.

One training step updates every replica's generator once on fresh events, then its discriminators
``training.d_steps`` times (the first time on the same events, detached). Losses are summed over replicas, so
each replica gets exactly its own gradient (``inverse.stacked``). Checkpoints hold the model, the optimizers,
the schedules and the replicas' random generators, so a resumed run continues the same random streams.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from inverse.config import OptimizerConfig, SchedulerConfig
from inverse.gan import InverseGAN
from inverse.natural import NaturalGradient

__all__ = [
    "GANModule",
    "NonFiniteLossError",
    "StepBar",
    "StepCheckpoint",
    "StepsDataset",
    "fit_gan",
    "make_optimizer",
    "schedule",
    "step_trainer",
]


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the message names the step and the last finite losses."""


def make_optimizer(config: OptimizerConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The torch optimizer described by ``config`` (``natural`` is built by :class:`GANModule`)."""
    if config.name == "natural":
        raise ValueError("the natural-gradient optimizer needs the model's Fisher metric; GANModule builds it")
    params = list(params)
    if config.name == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    if config.name == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.RMSprop(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def schedule(config: SchedulerConfig, steps: int) -> Any:
    """Learning-rate multiplier as a function of the step (for ``LambdaLR``)."""

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        if config.kind == "cosine":
            progress = min(1.0, step / max(1, steps - 1))
            decay = config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        elif config.kind == "exponential":
            decay = config.gamma**step
        elif config.kind == "step":
            decay = config.gamma ** (step // config.step_size)
        else:
            decay = 1.0
        return warm * decay

    return factor


class StepsDataset(IterableDataset):
    """Endless step indices: the model draws its own minibatches, Lightning only needs something to iterate."""

    def __iter__(self) -> Iterator[int]:
        return itertools.count()


class GANModule(L.LightningModule):
    """Lightning wrapper of :class:`InverseGAN` (manual optimization of generator and discriminators)."""

    progress_label = "GAN steps"

    def __init__(self, model: InverseGAN) -> None:
        super().__init__()
        self.model = model
        self.automatic_optimization = False
        self.step_seconds: list[float] = []
        self._last_finite: dict[str, float] = {}

    @property
    def steps_done(self) -> int:
        """Steps trained so far (restored from checkpoints)."""
        return int(self.model.step_count)

    @property
    def steps_total(self) -> int:
        """Steps to train."""
        return self.model.config.training.steps

    def train_dataloader(self) -> DataLoader:
        """Step indices (the data live in the model)."""
        return DataLoader(StepsDataset(), batch_size=None)

    def configure_optimizers(self) -> Any:
        """Adam (or the configured optimizer) for each player, with the configured schedule."""
        cfg = self.model.config
        if cfg.optimizer_g.name == "natural":
            o = cfg.optimizer_g
            opt_g = NaturalGradient(
                [self.model.generator.offset],
                self.model.natural_metric,
                lr=o.lr,
                damping=o.damping,
                max_step=o.max_step,
                metric_every=o.metric_every,
            )
        else:
            opt_g = make_optimizer(cfg.optimizer_g, self.model.generator.parameters())
        opt_d = make_optimizer(cfg.optimizer_d, self.model.discriminators.parameters())
        factor = schedule(cfg.scheduler, cfg.training.steps)
        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (opt_g, opt_d)]
        return [opt_g, opt_d], [{"scheduler": s, "interval": "step"} for s in schedulers]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        """End the (single, endless) epoch once the configured number of steps is done."""
        return -1 if self.steps_done >= self.steps_total else None

    def _check(self, loss: Tensor, player: str) -> None:
        if bool(torch.isfinite(loss).all()):
            return
        bad = [self.model.replica_ids[i] for i in torch.nonzero(~torch.isfinite(loss)).flatten().tolist()][:10]
        raise NonFiniteLossError(
            f"{player} loss is not finite at step {int(self.model.step_count) + 1} (replicas {bad}); "
            f"last finite mean losses: {self._last_finite or 'none yet'}"
        )

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One generator update and ``d_steps`` discriminator updates for every replica."""
        start = time.perf_counter()
        m = self.model
        opt_g, opt_d = self.optimizers()
        chunks = m.chunks()

        opt_g.zero_grad(set_to_none=True)
        m.discriminators.requires_grad_(False)
        g_losses, thetas, events = [], [], []
        try:
            for rs in chunks:
                loss, theta, ev = m.generator_loss(rs)
                self._check(loss, "generator")
                self.manual_backward(loss.sum())
                g_losses.append(loss.detach())
                thetas.append(theta)
                events.append(ev)
        finally:
            m.discriminators.requires_grad_(True)
        opt_g.step()

        for d in range(m.config.training.d_steps):
            opt_d.zero_grad(set_to_none=True)
            d_losses = []
            for c, rs in enumerate(chunks):
                loss = m.discriminator_loss(events[c] if d == 0 else m.simulate_detached(rs), rs)
                self._check(loss, "discriminator")
                self.manual_backward(loss.sum())
                d_losses.append(loss.detach())
            opt_d.step()
        for sched in self.lr_schedulers():
            sched.step()

        g_loss, d_loss = torch.cat(g_losses), torch.cat(d_losses)
        m.record(torch.cat(thetas), g_loss, d_loss)
        self._last_finite = {"generator": float(g_loss.mean()), "discriminator": float(d_loss.mean())}
        self.log_dict(
            {"g_loss": g_loss.mean(), "d_loss": d_loss.mean()}, prog_bar=True, on_step=True, batch_size=m.n_replicas
        )
        # Lightning counts every optimizer call as a step; a metric named "step" makes the logs count GAN steps.
        self.log("step", float(m.step_count), on_step=True, batch_size=m.n_replicas)
        self.step_seconds.append(time.perf_counter() - start)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the replicas' random streams."""
        checkpoint["replica_rng"] = self.model.rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the replicas' random streams."""
        if "replica_rng" in checkpoint:
            self.model.set_rng_state(checkpoint["replica_rng"])


class StepCheckpoint(L.Callback):
    """Write ``last.ckpt`` (atomically) every ``every`` steps and at the end of training.

    Works with any module exposing ``steps_done`` and ``steps_total`` (the GAN's and VAIM's).
    """

    def __init__(self, directory: str | Path, every: int) -> None:
        self.directory = Path(directory)
        self.every = every

    def _save(self, trainer: L.Trainer) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / "last.ckpt.tmp"
        trainer.save_checkpoint(tmp)
        os.replace(tmp, self.directory / "last.ckpt")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        """Checkpoint on schedule."""
        step = pl_module.steps_done
        if step % self.every == 0 or step == pl_module.steps_total:
            self._save(trainer)


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


def step_trainer(
    directory: Path | None,
    *,
    accelerator: str,
    dtype: str,
    log_every: int,
    checkpoint_every: int,
    progress: bool,
    resume: bool,
    callbacks: list[L.Callback] | None = None,
) -> tuple[L.Trainer, str | None]:
    """A one-device Lightning trainer for step-counted training, with checkpoints, progress bar and CSV log.

    Args:
        directory: where ``checkpoints/last.ckpt`` and Lightning's CSV log go (None: nowhere).
        accelerator: ``auto``, ``cpu``, ``gpu``/``cuda`` or ``mps``.
        dtype: ``float32`` or ``float64`` (Lightning's precision).
        log_every: steps between log rows and progress-bar updates.
        checkpoint_every: steps between checkpoints.
        progress: show a progress bar.
        resume: continue from ``directory/checkpoints/last.ckpt`` if it exists.
        callbacks: extra callbacks.

    Returns:
        (trainer, checkpoint path to pass to ``fit`` or None).
    """
    # Lightning's advertising tip and checkpoint chatter are noise in a CLI; warnings still show.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector").setLevel(logging.WARNING)
    callbacks = list(callbacks or [])
    if progress:
        callbacks.append(StepBar(refresh_rate=max(1, log_every)))
    ckpt = None
    if directory is not None:
        directory = Path(directory)
        callbacks.append(StepCheckpoint(directory / "checkpoints", checkpoint_every))
        last = directory / "checkpoints" / "last.ckpt"
        ckpt = str(last) if resume and last.is_file() else None
    trainer = L.Trainer(
        accelerator={"cuda": "gpu"}.get(accelerator, accelerator),
        devices=1,
        # One device, one process: name the environment so Lightning does not probe for a cluster. Its probes
        # would ask MPI for the world size (aborting a process where mpi4py is imported but MPI is off, as in
        # DeepHyper's workers) and would read an enclosing srun's task count as this run's world size.
        plugins=[LightningEnvironment()],
        max_epochs=1,
        max_steps=-1,
        precision="64-true" if dtype == "float64" else "32-true",
        # A new CSV version per (re)start: a resumed run must not delete the metrics logged before the interruption.
        logger=CSVLogger(directory, name="lightning_logs") if directory is not None else False,
        log_every_n_steps=log_every,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    return trainer, ckpt


def fit_gan(
    model: InverseGAN,
    directory: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    callbacks: list[L.Callback] | None = None,
) -> GANModule:
    """Train ``model`` for ``training.steps`` steps with Lightning.

    Args:
        model: the GAN (trained in place).
        directory: where checkpoints (``checkpoints/last.ckpt``) and Lightning's CSV log go (None: nowhere).
        resume: continue from ``directory/checkpoints/last.ckpt`` if it exists.
        progress: show a progress bar (default: ``training.progress``).
        callbacks: extra Lightning callbacks.

    Returns:
        The Lightning module (``step_seconds`` holds the wall time of each step run here).

    Raises:
        NonFiniteLossError: a loss became NaN or infinite (the last checkpoint is kept).
    """
    t = model.config.training
    trainer, ckpt = step_trainer(
        None if directory is None else Path(directory),
        accelerator=t.accelerator,
        dtype=t.dtype,
        log_every=t.log_every,
        checkpoint_every=t.checkpoint_every,
        progress=t.progress if progress is None else progress,
        resume=resume,
        callbacks=callbacks,
    )
    module = GANModule(model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
        # A surrogate event sampler is frozen in eval mode on purpose.
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")
        trainer.fit(module, ckpt_path=ckpt)
    return module
