"""The k folds of the GAN inverse solver: masked datasets, R replicas per fold, held-out and validation points.

Fold k trains every replica with its partition's datasets masked (:func:`hpo.kfold.fold_masks`) and predicts the
held-out datasets' binned counts; with ``kfold.vectorize`` all K x R fits train in one model. Validation uses each
replica's out-of-bag events on its fitted datasets (:func:`hpo.kfold.validation_chi2`). When the last partition is
empty (NNPDF's future tests) its fold is the full-data fit, and every other fold's held-out points carry that fit's
predictions; fold by fold, it is trained first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch

from hpo.kfold import FoldResult, KFoldConfig, fold_masks, partitions, validation_chi2
from hpo.losses import FoldPoints
from inverse.gan.config import GANConfig
from inverse.gan.model import InverseGAN
from inverse.gan.training import fit_gan
from physics.binned import BinnedView
from physics.datasets import Experiment
from physics.dis.binned import DISBinnedView
from physics.dis.experiment import DISExperiment
from physics.pseudodata import EventData

__all__ = ["run_gan_folds"]


class _Reporter(L.Callback):
    """Reports the held-out points every ``every`` steps; stops the training when ``report`` says so."""

    def __init__(self, report: Callable, every: int, offset: int, points: Callable) -> None:
        self.report, self.every, self.offset, self.points = report, max(1, every), offset, points
        self.stopped = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        steps, total = pl_module.steps_done, pl_module.steps_total
        if steps % self.every and steps < total:
            return
        if self.report(self.offset + math.ceil(steps / self.every), self.points(pl_module.model)):
            self.stopped = trainer.should_stop = True


class _Folds:
    """The partitions, binned view and truth of one trial's folds, and how their points are assembled."""

    def __init__(self, experiment: Experiment, data: EventData, kfold: KFoldConfig, truth: np.ndarray | None):
        self.experiment, self.data = experiment, data
        self.parts = partitions(kfold, experiment)
        self.masks = fold_masks(kfold, experiment)
        self.n_rep = kfold.replicas
        if isinstance(experiment, DISExperiment):
            events = [torch.as_tensor(e) for e in data.events]
            self.view = DISBinnedView(experiment, events, n_u=kfold.dis_bins[0], n_w=kfold.dis_bins[1])
        else:
            self.view = BinnedView(experiment, data, n_bins=kfold.n_bins)
        self.box = tuple(np.asarray(v, dtype=float) for v in (experiment.theory.low, experiment.theory.high))
        truth_t = None if truth is None else torch.as_tensor(np.asarray(truth, dtype=float)[None])
        self.truth_pred = None if truth_t is None else [p[0].numpy() for p in self.view.predictions(truth_t)]
        n = len(self.parts)
        self.full = n - 1 if n > 1 and not self.parts[-1].datasets else None

    def groups(self, vectorize: bool) -> list[list[int]]:
        """Folds trained together: all in one model, or one by one with the full-data fit first."""
        n = len(self.parts)
        if vectorize:
            return [list(range(n))]
        order = ([self.full] if self.full is not None else []) + [k for k in range(n) if k != self.full]
        return [[k] for k in order]

    def held(self, k: int, preds: list[np.ndarray], rows: slice, full_preds: list[np.ndarray] | None) -> dict:
        """Fold k's held-out predictions, data, law and full-fit predictions."""
        held = [self.experiment.names.index(n) for n in self.parts[k].datasets]
        cat = (lambda arrays: np.concatenate(arrays, axis=-1)) if held else (lambda arrays: np.zeros((self.n_rep, 0)))
        obs = np.concatenate([self.view.counts_of(j) for j in held]) if held else np.zeros(0)
        law = None
        if self.truth_pred is not None:
            law = np.concatenate([self.truth_pred[j] for j in held]) if held else np.zeros(0)
        ref = cat([full_preds[j] for j in held]) if (full_preds is not None and k != self.full) else None
        return {"pred": cat([preds[j][rows] for j in held]), "obs": obs, "law": law, "full": ref}

    def rows_of(self, preds: list[np.ndarray], position: int) -> list[np.ndarray]:
        """The rows of the fold at ``position`` in its model, per dataset."""
        return [p[position * self.n_rep : (position + 1) * self.n_rep] for p in preds]

    def points_now(
        self, gan: InverseGAN, folds: list[int], full_preds: list | None, results: list[FoldResult]
    ) -> list[FoldPoints]:
        """Held-out points of the finished folds and, at the current estimates, of the folds training."""
        with torch.no_grad():
            preds = [p.numpy() for p in self.view.predictions(gan.estimates().detach().cpu().double())]
        if self.full is not None and self.full in folds:
            full_preds = self.rows_of(preds, folds.index(self.full))
        now = []
        for i, k in enumerate(folds):
            h = self.held(k, preds, slice(i * self.n_rep, (i + 1) * self.n_rep), full_preds)
            if h["obs"].size:
                cov = np.maximum(h["obs"], 1.0)
                now.append(FoldPoints(h["pred"], h["obs"], cov, h["law"], self.parts[k].weight, h["full"]))
        return [r.points() for r in results if r.data.size] + now

    def validation(self, model: InverseGAN, config: GANConfig, n_ids: int, mask: torch.Tensor) -> tuple:
        """(validation chi2 along training [R, S + 1], the steps of the curve)."""
        est, steps = model.estimates(), int(model.step_count)
        every = max(1, config.training.log_every)
        at = np.unique(np.r_[np.arange(every - 1, steps, every), steps - 1])
        curve_theta = torch.cat([model.theta_history[at].transpose(0, 1), est[:, None]], dim=1)
        if config.training.bootstrap:
            oob = [
                np.stack([self.view.histogram(x[w.numpy() == 0], j) for w in model.weights(j)])
                for j, x in enumerate(self.data.events)
            ]
            scale = math.exp(-1.0)
        else:
            oob = [np.tile(self.view.counts_of(j), (n_ids, 1)) for j in range(len(self.data.events))]
            scale = 1.0
        with torch.no_grad():
            return validation_chi2(self.view, curve_theta, oob, scale, mask.numpy()), at

    def results(self, folds: list[int], model: InverseGAN, preds: list, full_preds: list | None, extra: dict) -> list:
        """One :class:`FoldResult` per fold of a trained model."""
        out = []
        for i, k in enumerate(folds):
            rows = slice(i * self.n_rep, (i + 1) * self.n_rep)
            h = self.held(k, preds, rows, full_preds)
            out.append(
                FoldResult(
                    index=k,
                    datasets=list(self.parts[k].datasets),
                    weight=self.parts[k].weight,
                    overfit=self.parts[k].overfit,
                    estimates=model.estimates()[rows].numpy(),
                    predictions=h["pred"],
                    data=h["obs"],
                    covariance=np.maximum(h["obs"], 1.0),
                    truth=h["law"],
                    validation=extra["vcurve"][rows, -1],
                    validation_curve=extra["vcurve"][rows, :-1],
                    curve_steps=extra["at"] + 1,
                    steps=int(model.step_count),
                    box=self.box,
                    seconds=extra["seconds"],
                    full_fit=h["full"],
                )
            )
        return out


def run_gan_folds(
    config: GANConfig,
    experiment: Experiment | DISExperiment,
    data: EventData,
    kfold: KFoldConfig,
    truth: np.ndarray | None = None,
    after_fold: Callable[[FoldResult], bool] | None = None,
    report: Callable[[int, list[FoldPoints]], bool] | None = None,
    report_every: int = 10,
) -> list[FoldResult]:
    """Train and score the K folds of the GAN inverse solver with R replicas each.

    Args:
        config: the GAN settings of the trial (``training.replicas`` is ignored: ``kfold.replicas`` per fold).
        experiment: datasets with luminosities: the toy's, or DIS Q^2 windows (events [n, 2], 2-D bins).
        data: the events.
        kfold: partitions, R, binning, vectorization.
        truth: true parameters (closure), for the bias/variance loss; None for real data.
        after_fold: called with each finished fold (in order); returning True stops the remaining folds
            (the threshold check: effective when ``kfold.vectorize`` is False).
        report: called every ``report_every`` steps and at the end of each model's training with the budget
            (reports so far, counted over the folds trained one after the other) and the held-out points of the
            folds finished or training, at the replicas' current estimates; returning True ends the trial there
            (the early stopping of ``hpo.search.stopping``).
        report_every: training steps between reports.

    Returns:
        One :class:`FoldResult` per fold that ran, in fold order.
    """
    f = _Folds(experiment, data, kfold, truth)
    per_model = math.ceil(config.training.steps / max(1, report_every))
    results: list[FoldResult] = []
    full_preds: list[np.ndarray] | None = None
    for g, folds in enumerate(f.groups(kfold.vectorize)):
        ids = [k * f.n_rep + r for k in folds for r in range(f.n_rep)]
        mask = f.masks[folds].repeat_interleave(f.n_rep, dim=0)
        model = InverseGAN(config, experiment, data, replicas=ids, dataset_mask=mask)
        callbacks: list[Any] = []
        if report is not None:
            points = lambda gan, folds=folds, fp=full_preds: f.points_now(gan, folds, fp, results)  # noqa: E731
            callbacks.append(_Reporter(report, report_every, g * per_model, points))
        t0 = time.perf_counter()
        model = fit_gan(model, None, progress=False, callbacks=callbacks).model.cpu().double()
        seconds = (time.perf_counter() - t0) / len(folds)
        vcurve, at = f.validation(model, config, len(ids), mask)
        with torch.no_grad():
            preds = [p.numpy() for p in f.view.predictions(model.estimates())]
        if f.full is not None and f.full in folds:
            full_preds = f.rows_of(preds, folds.index(f.full))
        stop = bool(callbacks and callbacks[0].stopped)
        for result in f.results(folds, model, preds, full_preds, {"vcurve": vcurve, "at": at, "seconds": seconds}):
            results.append(result)
            if after_fold is not None and after_fold(result):
                stop = True
        if stop:
            break
    return sorted(results, key=lambda r: r.index)
