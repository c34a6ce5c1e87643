"""Lightning training of VAIM: seeded minibatches of simulated pairs, Adam with a cosine schedule, resume.

Step s draws ``training.batch_size`` pairs and the reparameterisation noise from generators seeded by
(``training.seed``, s), so a run resumed from ``checkpoints/last.ckpt`` sees exactly the minibatches of an
uninterrupted one. Checkpoints hold the weights, the optimizer, the schedule and the per-step loss history.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from inverse.vaim.model import VAIM
from qcdgip.errors import NonFiniteLossError
from qcdgip.training import StepModule, step_trainer

__all__ = ["LOSS_TERMS", "VAIMModule", "fit_vaim"]

LOSS_TERMS = ("total", "reconstruction", "forward", "kl")


class VAIMModule(StepModule):
    """Lightning wrapper of :class:`VAIM` and its simulated training pairs.

    Args:
        model: the VAIM (trained in place).
        xs: scaled training parameters [N, d].
        ys: scaled training observables [N, m].
    """

    progress_label = "VAIM steps"

    def __init__(self, model: VAIM, xs: Tensor, ys: Tensor) -> None:
        super().__init__(model)
        self.train_xs, self.train_ys = xs, ys
        steps = model.config.training.steps
        self.register_buffer("loss_history", torch.full((steps, len(LOSS_TERMS)), float("nan"), dtype=torch.float64))

    def configure_optimizers(self) -> Any:
        """Adam with a cosine decay to ``min_lr_ratio`` over ``training.steps``."""
        t = self.model.config.training
        opt = torch.optim.Adam(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)

        def factor(step: int) -> float:
            progress = min(1.0, step / max(1, t.steps - 1))
            return t.min_lr_ratio + (1.0 - t.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

        return [opt], [{"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor), "interval": "step"}]

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One Adam step on a seeded minibatch."""
        step = self.steps_done
        t = self.model.config.training
        g = torch.Generator().manual_seed(t.seed * 1_000_003 + step)
        idx = torch.randint(self.train_xs.shape[0], (min(t.batch_size, self.train_xs.shape[0]),), generator=g)
        w = next(self.model.parameters())
        xs = self.train_xs[idx].to(w)
        ys = self.train_ys[idx].to(w)
        eps = torch.randn(xs.shape[0], self.model.latent_dim, generator=g).to(w)
        parts = self.model.losses(xs, ys, eps)
        if not bool(torch.isfinite(parts["total"])):
            raise NonFiniteLossError(
                f"VAIM loss is {float(parts['total'])} at step {step + 1}; lower training.lr or the loss weights"
            )
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        self.manual_backward(parts["total"])
        opt.step()
        self.lr_schedulers().step()
        self.loss_history[step] = torch.tensor([float(parts[k].detach()) for k in LOSS_TERMS], dtype=torch.float64)
        self.step_count += 1
        self.log("loss", parts["total"].detach(), prog_bar=True, on_step=True, batch_size=xs.shape[0])


def fit_vaim(
    model: VAIM,
    xs: Tensor,
    ys: Tensor,
    directory: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    callbacks: list[L.Callback] | None = None,
) -> VAIMModule:
    """Train ``model`` on scaled pairs for ``training.steps`` steps.

    Args:
        model: the VAIM (trained in place; cast to ``training.dtype``).
        xs: scaled parameters [N, d].
        ys: scaled observables [N, m].
        directory: checkpoints and CSV logs go here (None: nowhere).
        resume: continue from ``directory/checkpoints/last.ckpt`` if present.
        progress: show a progress bar (default ``training.progress``).
        callbacks: extra Lightning callbacks.

    Returns:
        The Lightning module (``loss_history`` holds the loss terms per step, columns :data:`LOSS_TERMS`).

    Raises:
        NonFiniteLossError: the loss became NaN or infinite (the last checkpoint is kept).
    """
    t = model.config.training
    model.to(getattr(torch, t.dtype))
    trainer, ckpt = step_trainer(directory, t, progress=progress, resume=resume, callbacks=callbacks)
    module = VAIMModule(model, xs, ys)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
        trainer.fit(module, ckpt_path=ckpt)
    return module
