"""Lightning training of the surrogates: minibatches of simulated parameter sets, checkpoints and resume.

Each step draws ``batch_params`` parameter sets of the training set (indices from a generator seeded by the
step number, so a resumed run sees the same minibatches) with all their events. Flow and VAE minimize their
negative log-likelihood or negative ELBO; the cGAN makes one simultaneous generator and discriminator update
(plus ``gan.d_steps - 1`` discriminator-only updates on fresh fakes). Adam with a cosine schedule. Checkpoints
(``checkpoints/last.ckpt``, atomic) hold weights, optimizers, schedules and the loss history.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from qcdgip.errors import NonFiniteLossError
from qcdgip.training import StepModule, step_trainer
from surrogates.base import Surrogate
from surrogates.cgan import GANSurrogate

__all__ = ["SurrogateModule", "fit_surrogate"]


def _cosine(steps: int, min_ratio: float) -> Any:
    def factor(step: int) -> float:
        progress = min(1.0, step / max(1, steps - 1))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class SurrogateModule(StepModule):
    """Lightning wrapper of a :class:`Surrogate` and its training set.

    Args:
        model: the surrogate (trained in place).
        theta: training parameter sets [M, D].
        t: their exact events in the log-scaled coordinate, [M, J, n].
    """

    def __init__(self, model: Surrogate, theta: Tensor, t: Tensor) -> None:
        super().__init__(model)
        self.train_theta, self.train_t = theta, t
        steps = model.config.training.steps
        # Column 0: the step's loss (generator loss for the cGAN); column 1: discriminator loss (cGAN only).
        self.register_buffer("loss_history", torch.full((steps, 2), float("nan"), dtype=torch.float64))

    @property
    def progress_label(self) -> str:
        """Progress-bar title."""
        return f"{self.model.kind} surrogate"

    def configure_optimizers(self) -> Any:
        """Adam for the model (two, for the cGAN's players), cosine schedule over ``training.steps``."""
        t = self.model.config.training
        factor = _cosine(t.steps, t.min_lr_ratio)
        if isinstance(self.model, GANSurrogate):
            c = self.model.config.gan
            opts = [
                torch.optim.Adam(self.model.generator.parameters(), lr=t.lr, betas=(0.5, 0.9)),
                torch.optim.Adam(self.model.discriminator.parameters(), lr=c.lr_d, betas=(0.5, 0.9)),
            ]
        else:
            opts = [torch.optim.Adam(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)]
        scheds = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in opts]
        return opts, [{"scheduler": s, "interval": "step"} for s in scheds]

    def _batch(self, step: int) -> tuple[Tensor, Tensor, torch.Generator]:
        t = self.model.config.training
        g = torch.Generator().manual_seed(t.seed * 1_000_003 + step)
        idx = torch.randint(self.train_theta.shape[0], (t.batch_params,), generator=g)
        theta = self.train_theta[idx].to(self.device)
        events = self.train_t[idx].to(device=self.device, dtype=self.model.dtype)
        noise_gen = torch.Generator(device=self.device).manual_seed(t.seed * 1_000_003 + step)
        return self.model.context(theta), events, noise_gen

    def _check(self, loss: Tensor, step: int) -> None:
        if not bool(torch.isfinite(loss)):
            raise NonFiniteLossError(f"surrogate loss is {float(loss)} at step {step + 1}; lower training.lr")

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One optimisation step on a minibatch of parameter sets."""
        step = int(self.step_count)
        ctx, events, gen = self._batch(step)
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        if isinstance(self.model, GANSurrogate):
            opt_g, opt_d = opts
            for _ in range(self.model.config.gan.d_steps - 1):
                d_loss, _ = self.model.adversarial_losses(ctx, events, gen)
                opt_d.zero_grad(set_to_none=True)
                self.manual_backward(d_loss)
                opt_d.step()
            d_loss, g_loss = self.model.adversarial_losses(ctx, events, gen)
            self._check(g_loss + d_loss, step)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_d.zero_grad(set_to_none=True)  # the generator loss's gradient on D is not D's update
            self.manual_backward(d_loss)
            opt_g.step()
            opt_d.step()
            losses = (float(g_loss.detach()), float(d_loss.detach()))
        else:
            (opt,) = opts
            loss = self.model.training_loss(ctx, events, gen)
            self._check(loss, step)
            opt.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt.step()
            losses = (float(loss.detach()), float("nan"))
        for sched in self.lr_schedulers() if isinstance(self.lr_schedulers(), list) else [self.lr_schedulers()]:
            sched.step()
        self.loss_history[step] = torch.tensor(losses, dtype=torch.float64)
        self.step_count += 1
        self.log("loss", losses[0], prog_bar=True, on_step=True, batch_size=ctx.shape[0])
        if not math.isnan(losses[1]):
            self.log("d_loss", losses[1], prog_bar=True, on_step=True, batch_size=ctx.shape[0])


def fit_surrogate(
    model: Surrogate,
    theta: Tensor,
    t: Tensor,
    directory: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    callbacks: list[L.Callback] | None = None,
) -> SurrogateModule:
    """Train ``model`` on the simulated set for ``training.steps`` steps.

    Args:
        model: the surrogate (trained in place).
        theta: parameter sets [M, D].
        t: exact events in the log-scaled coordinate, [M, J, n].
        directory: checkpoints and CSV logs go here (None: nowhere).
        resume: continue from ``directory/checkpoints/last.ckpt`` if present.
        progress: show a progress bar (default ``training.progress``).
        callbacks: extra Lightning callbacks.

    Returns:
        The Lightning module (``loss_history`` holds the losses per step).
    """
    cfg = model.config.training
    trainer, ckpt = step_trainer(directory, cfg, progress=progress, resume=resume, callbacks=callbacks)
    model.to(getattr(torch, cfg.dtype))
    module = SurrogateModule(model, theta, t)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
        trainer.fit(module, ckpt_path=ckpt)
    return module
