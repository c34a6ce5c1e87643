"""Lightning training of the inverse GAN: manual optimization, schedules, checkpoints, resume, NaN guard.

One training step updates every replica's generator once on fresh events, then its discriminators
``training.d_steps`` times (the first time on the same events, detached). Losses are summed over replicas, so
each replica gets exactly its own gradient (``inverse.stacked``). Checkpoints hold the model, the optimizers,
the schedules and the replicas' random generators, so a resumed run continues the same random streams.

Data parallelism (``training.devices`` x ``training.num_nodes`` > 1, ``strategy: ddp``): every process holds the
whole model and computes its share of each step's events (``InverseGAN.set_shard``); the gradients of each player
update are averaged over processes by one all-reduce before the optimizer steps, so every process takes the same
step and the training equals one process on the same global batch up to rounding. SAGIPS (Lersch et al.,
arXiv:2407.00051) exchanges generator gradients asynchronously by ring all-reduce; this is the synchronous limit,
with the discriminators averaged too. Processes are started by ``srun`` (``slurm/train.sh``) or, on a workstation,
by Lightning itself (one process per device, gloo on CPUs, NCCL on GPUs). The trainer, its callbacks and the
data-parallel strategy are the suite's shared ones (:mod:`qcdgip.training`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor

from inverse.gan.config import OptimizerConfig, SchedulerConfig
from inverse.gan.model import InverseGAN
from inverse.gan.natural import NaturalGradient
from inverse.gan.newton import LogisticNewton, logistic_terms
from qcdgip.errors import NonFiniteLossError
from qcdgip.training import StepModule, step_trainer

__all__ = ["GANModule", "fit_gan", "make_optimizer", "schedule"]


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


class GANModule(StepModule):
    """Lightning wrapper of :class:`InverseGAN` (manual optimization of generator and discriminators)."""

    progress_label = "GAN steps"

    def __init__(self, model: InverseGAN) -> None:
        super().__init__(model, count_steps=False)  # the model counts its steps with its histories
        self.step_seconds: list[float] = []
        self._last_finite: dict[str, float] = {}
        self._cpu_before, self._cpu_start = 0.0, time.process_time()

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds of the fit so far, the processes of earlier (resumed) runs included."""
        return self._cpu_before + time.process_time() - self._cpu_start

    @property
    def steps_done(self) -> int:
        """Steps trained so far (restored from checkpoints)."""
        return int(self.model.step_count)

    def setup(self, stage: str) -> None:
        """Give this process its share of each step's events (all of them on one process)."""
        self.model.set_shard(self.trainer.global_rank, self.trainer.world_size)

    def teardown(self, stage: str) -> None:
        """The trained model evaluates whole batches again."""
        self.model.set_shard(0, 1)

    def _average_gradients(self, module: torch.nn.Module) -> None:
        """Mean of each gradient over the data-parallel processes (one all-reduce of all of them)."""
        if self.trainer.world_size == 1:
            return
        params = [p for p in module.parameters() if p.grad is not None]
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.trainer.world_size
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    def _average_newton_terms(self, optimizer: LogisticNewton) -> None:
        """Mean of the queued Newton gradients and Hessians over the data-parallel processes (one all-reduce)."""
        if self.trainer.world_size == 1:
            return
        tensors = [t for _, terms in optimizer.pending() for pair in terms for t in pair]
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.trainer.world_size
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def _mean_over_processes(self, value: Tensor) -> Tensor:
        return value if self.trainer.world_size == 1 else self.trainer.strategy.reduce(value, reduce_op="mean")

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
                max_logit_step=o.max_logit_step,
                damping_scale=o.damping_scale,
                step_space=o.step_space,
            )
        else:
            opt_g = make_optimizer(cfg.optimizer_g, self.model.generator.parameters())
        if cfg.optimizer_d.name == "newton":
            opt_d = LogisticNewton(self.model.discriminators, lr=cfg.optimizer_d.lr, ridge=cfg.optimizer_d.damping)
        else:
            opt_d = make_optimizer(cfg.optimizer_d, self.model.discriminators.parameters())
        factor = schedule(cfg.scheduler, cfg.training.steps)
        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (opt_g, opt_d)]
        return [opt_g, opt_d], [{"scheduler": s, "interval": "step"} for s in schedulers]

    def _check(self, loss: Tensor, player: str) -> None:
        # Every process must see the same verdict, or the healthy ones would wait forever in the next all-reduce.
        loss = self._mean_over_processes(loss.detach())
        if bool(torch.isfinite(loss).all()):
            return
        bad = [self.model.replica_ids[i] for i in torch.nonzero(~torch.isfinite(loss)).flatten().tolist()][:10]
        raise NonFiniteLossError(
            f"{player} loss is not finite at step {int(self.model.step_count) + 1} (replicas {bad}); "
            f"last finite mean losses: {self._last_finite or 'none yet'}"
        )

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One generator update and ``d_steps`` discriminator updates for every replica (``d_warmup`` more first)."""
        start = time.perf_counter()
        m = self.model
        opt_g, opt_d = self.optimizers()
        chunks = m.chunks()

        if self.steps_done == 0 and m.config.training.d_warmup:
            self._update_discriminators(opt_d, chunks, None, m.config.training.d_warmup)
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
        self._average_gradients(m.generator)
        opt_g.step()

        d_losses = self._update_discriminators(opt_d, chunks, events, m.config.training.d_steps)
        for sched in self.lr_schedulers():
            sched.step()

        g_loss = self._mean_over_processes(torch.cat(g_losses))
        d_loss = self._mean_over_processes(torch.cat(d_losses))
        m.record(torch.cat(thetas), g_loss, d_loss)
        self._last_finite = {"generator": float(g_loss.mean()), "discriminator": float(d_loss.mean())}
        self.log_dict(
            {"g_loss": g_loss.mean(), "d_loss": d_loss.mean()}, prog_bar=True, on_step=True, batch_size=m.n_replicas
        )
        # Lightning counts every optimizer call as a step; a metric named "step" makes the logs count GAN steps.
        self.log("step", float(m.step_count), on_step=True, batch_size=m.n_replicas)
        self.step_seconds.append(time.perf_counter() - start)

    def _update_discriminators(self, opt_d: Any, chunks: list[slice], events: list | None, count: int) -> list[Tensor]:
        """``count`` discriminator updates of every replica; the first on ``events`` (None: fresh ones).

        Returns:
            The losses of the last update, one tensor per chunk.
        """
        m = self.model
        newton = isinstance(opt_d.optimizer, LogisticNewton)
        d_losses: list[Tensor] = []
        for d in range(count):
            opt_d.zero_grad(set_to_none=True)
            d_losses = []
            for c, rs in enumerate(chunks):
                generated = events[c] if d == 0 and events is not None else m.simulate_detached(rs)
                if newton:
                    with torch.no_grad():
                        loss, terms = logistic_terms(m, generated, rs, opt_d.optimizer.cache)
                    opt_d.optimizer.add(rs, terms)
                else:
                    loss = m.discriminator_loss(generated, rs)
                self._check(loss, "discriminator")
                if not newton:
                    self.manual_backward(loss.sum())
                d_losses.append(loss.detach())
            if newton:
                self._average_newton_terms(opt_d.optimizer)
            else:
                self._average_gradients(m.discriminators)
            opt_d.step()
        return d_losses

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the replicas' random streams and the CPU time spent so far."""
        checkpoint["replica_rng"] = self.model.rng_state()
        checkpoint["fit_cpu_s"] = self.cpu_seconds

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the replicas' random streams and the CPU time of the earlier runs."""
        if "replica_rng" in checkpoint:
            self.model.set_rng_state(checkpoint["replica_rng"])
        self._cpu_before, self._cpu_start = float(checkpoint.get("fit_cpu_s", 0.0)), time.process_time()


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
    trainer, ckpt = step_trainer(
        directory, model.config.training, progress=progress, resume=resume, callbacks=callbacks
    )
    module = GANModule(model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
        # A surrogate event sampler is frozen in eval mode on purpose.
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")
        trainer.fit(module, ckpt_path=ckpt)
    return module
