"""k-fold fits of the inverse solvers: datasets left out by masks, R replicas per fold, losses per fold and replica.

A partition is a set of datasets. Fold k trains every replica with the partition's datasets masked (their
discriminator, adversarial and Poisson-rate terms multiplied by 0, shapes unchanged), then compares the
replicas' predictions of those datasets with the data they never saw (NNPDF's k-fold hyperoptimisation,
arXiv:2109.02653 section 3.3; DESIGN.md section 6). Because masks keep shapes fixed, all K folds x R replicas
train together in one vectorized :class:`inverse.gan.InverseGAN` (``vectorize: true``); the looped form trains
one fold after the other and may stop after a fold that exceeds the loss threshold.

Per fold and replica r:
    * held-out ("experimental") points: binned counts of the fold's datasets (``n_bins`` log-x bins each),
      predictions T_r = L int_bin sigma(x; theta_r), data D, covariance C_exp = diag(max(n, 1));
    * validation chi2 per point on the datasets the replica fitted, against its out-of-bag events: a
      Poisson(1) bootstrap leaves each event out with probability e^-1, and those events are an independent
      validation sample of mean e^-1 T (Breiman's out-of-bag estimate); without bootstrap, the fitted data;
    * the same validation chi2 along training (every ``training.log_every`` steps), for the patience penalty.

For VAIM (``solver: vaim``) a fold is a 1/K share of the simulated pairs: the model trains on the rest, the
held-out points are the observables y_i of ``heldout_points`` held-out pairs, the predictions are the true
simulator at one decoded draw per point, f(x_hat_r(y_i)), and C_exp is the noise variance. Replicas are
independent seeds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from pydantic import Field

from hpo.losses import FoldPoints
from inverse.config import GANConfig
from inverse.gan import InverseGAN
from inverse.training import fit_gan
from physics.binned import BinnedView
from physics.config import StrictModel
from physics.datasets import Experiment
from physics.pseudodata import EventData

__all__ = ["FoldResult", "KFoldConfig", "Partition", "fold_masks", "run_gan_folds", "run_vaim_folds"]


class Partition(StrictModel):
    """One fold: the datasets it leaves out, whether they are fitted anyway, and the weight of its loss."""

    datasets: list[str] = Field(description="dataset names held out by this fold (empty: a fold that holds none)")
    overfit: bool = Field(False, description="fit the fold's datasets anyway (NNPDF's overfit option)")
    weight: float = Field(1.0, gt=0.0, description="multiplies the fold's loss before the threshold check")


class KFoldConfig(StrictModel):
    """How a trial is scored: partitions, replicas per fold, binning, vectorization."""

    partitions: list[Partition] | None = Field(
        None, description="GAN folds; default: one fold per dataset of the physics section"
    )
    folds: int = Field(4, ge=2, le=100, description="VAIM: folds of the simulated pairs")
    replicas: int = Field(10, ge=1, le=10_000, description="R replicas per fold")
    n_bins: int = Field(10, ge=1, le=1000, description="log-x bins per dataset for the held-out chi2")
    heldout_points: int = Field(256, ge=1, description="VAIM: held-out pairs scored per fold")
    vectorize: bool = Field(True, description="train all folds x replicas in one model (False: fold by fold)")


@dataclass
class FoldResult:
    """What one fold produced.

    Attributes:
        index: fold number k.
        datasets: held-out dataset names (VAIM: empty).
        weight: the partition's weight.
        overfit: whether the held-out datasets were fitted.
        estimates: replica estimates, [R, D].
        predictions: replica predictions of the held-out points, [R, N].
        data: held-out data, [N].
        covariance: experimental variances of the held-out points, [N].
        truth: law (true-parameter) prediction of the held-out points, [N], or None without a known truth.
        validation: validation chi2 per point of each replica, [R].
        validation_curve: validation chi2 per point along training, [R, S] (GAN; VAIM: [R, 1]).
        curve_steps: the steps of ``validation_curve``'s columns, [S].
        steps: training steps.
        box: (low, high) of the parameters, for penalties.
        seconds: wall time of the fold's share of training (vectorized: the total divided by K).
        full_fit: the full-data fit's replica predictions of the held-out points, [R, N] (future tests), or None.
    """

    index: int
    datasets: list[str]
    weight: float
    overfit: bool
    estimates: np.ndarray
    predictions: np.ndarray
    data: np.ndarray
    covariance: np.ndarray
    truth: np.ndarray | None
    validation: np.ndarray
    validation_curve: np.ndarray
    curve_steps: np.ndarray
    steps: int
    box: tuple[np.ndarray, np.ndarray]
    seconds: float = 0.0
    full_fit: np.ndarray | None = None

    def points(self) -> FoldPoints:
        """The held-out points, as the trial loss takes them (a fold without any raises ``ValueError``)."""
        return FoldPoints(self.predictions, self.data, self.covariance, self.truth, self.weight, self.full_fit)


def _partitions(kfold: KFoldConfig, experiment: Experiment) -> list[Partition]:
    parts = kfold.partitions or [Partition(datasets=[n]) for n in experiment.names]
    for k, p in enumerate(parts):
        unknown = [n for n in p.datasets if n not in experiment.names]
        if unknown:
            raise ValueError(f"kfold.partitions[{k}].datasets: unknown {unknown}; known: {experiment.names}")
    return parts


def fold_masks(kfold: KFoldConfig, experiment: Experiment) -> torch.Tensor:
    """0/1 dataset masks of the K folds, [K, J]: 0 where fold k holds a dataset out (and does not overfit it).

    Raises:
        ValueError: a partition names an unknown dataset, or leaves no dataset to fit.
    """
    parts = _partitions(kfold, experiment)
    masks = torch.ones(len(parts), len(experiment.names), dtype=torch.float64)
    for k, p in enumerate(parts):
        if not p.overfit:
            for n in p.datasets:
                masks[k, experiment.names.index(n)] = 0.0
        if masks[k].sum() == 0:
            raise ValueError(f"kfold.partitions[{k}]: holds out every dataset, nothing is left to fit")
    return masks


def _validation_chi2(view: BinnedView, theta: torch.Tensor, oob: list[np.ndarray], scale: float, mask) -> np.ndarray:
    """chi2 per point of each replica's out-of-bag histograms on its fitted datasets; theta [R, S, D] -> [R, S]."""
    r, s, d = theta.shape
    preds = view.predictions(theta.reshape(r * s, d))
    chi2 = np.zeros((r, s))
    points = np.zeros(r)
    for j, p in enumerate(preds):
        t = scale * p.reshape(r, s, -1).numpy()
        n = oob[j][:, None, :]
        on = mask[:, j][:, None]
        chi2 += on * ((n - t) ** 2 / np.maximum(n, 1.0)).sum(-1)
        points += mask[:, j] * t.shape[-1]
    return chi2 / points[:, None]


def run_gan_folds(
    config: GANConfig,
    experiment: Experiment,
    data: EventData,
    kfold: KFoldConfig,
    truth: np.ndarray | None = None,
    after_fold: Callable[[FoldResult], bool] | None = None,
    report: Callable[[int, list[FoldPoints]], bool] | None = None,
    report_every: int = 10,
) -> list[FoldResult]:
    """Train and score the K folds of the GAN inverse solver with R replicas each.

    When the last partition is empty (NNPDF's future tests) its fold is the full-data fit: every other fold's
    held-out points carry that fit's predictions (``FoldResult.full_fit``). Fold by fold, it is trained first.

    Args:
        config: the GAN settings of the trial (``training.replicas`` is ignored: ``kfold.replicas`` per fold).
        experiment: datasets with luminosities.
        data: the events.
        kfold: partitions, R, binning, vectorization.
        truth: true parameters (closure), for the bias/variance loss; None for real data.
        after_fold: called with each finished fold (in order); returning True stops the remaining folds
            (the threshold check: effective when ``kfold.vectorize`` is False).
        report: called every ``report_every`` steps and at the end of each model's training with the budget
            (reports so far, counted over the folds trained one after the other) and the held-out points of the
            folds finished or training, at the replicas' current estimates; returning True ends the trial there
            (the early stopping of ``hpo.stopping``).
        report_every: training steps between reports.

    Returns:
        One :class:`FoldResult` per fold that ran, in fold order.
    """
    parts = _partitions(kfold, experiment)
    masks = fold_masks(kfold, experiment)
    n_folds, n_rep = len(parts), kfold.replicas
    view = BinnedView(experiment, data, n_bins=kfold.n_bins)
    low, high = (np.asarray(v, dtype=float) for v in (experiment.theory.low, experiment.theory.high))
    truth_t = None if truth is None else torch.as_tensor(np.asarray(truth, dtype=float)[None])
    truth_pred = None if truth_t is None else [p[0].numpy() for p in view.predictions(truth_t)]
    full = n_folds - 1 if n_folds > 1 and not parts[-1].datasets else None

    def held_points(k: int, preds: list[np.ndarray], rows: slice, full_preds: list[np.ndarray] | None) -> dict:
        held = [experiment.names.index(n) for n in parts[k].datasets]
        cat = (lambda arrays: np.concatenate(arrays, axis=-1)) if held else (lambda arrays: np.zeros((n_rep, 0)))
        obs = np.concatenate([view.datasets[j].counts for j in held]) if held else np.zeros(0)
        law = None
        if truth_pred is not None:
            law = np.concatenate([truth_pred[j] for j in held]) if held else np.zeros(0)
        ref = cat([full_preds[j] for j in held]) if (full_preds is not None and k != full) else None
        return {"pred": cat([preds[j][rows] for j in held]), "obs": obs, "law": law, "full": ref}

    def replica_rows(preds: list[np.ndarray], position: int) -> list[np.ndarray]:
        """The rows of the fold at ``position`` in its model, per dataset."""
        return [p[position * n_rep : (position + 1) * n_rep] for p in preds]

    if kfold.vectorize:
        groups = [list(range(n_folds))]
    else:  # the full-data fit first: the other folds' future-test loss needs it
        order = ([full] if full is not None else []) + [k for k in range(n_folds) if k != full]
        groups = [[k] for k in order]
    per_model = math.ceil(config.training.steps / max(1, report_every))
    results: list[FoldResult] = []
    full_preds: list[np.ndarray] | None = None
    for g, folds in enumerate(groups):
        ids = [k * n_rep + r for k in folds for r in range(n_rep)]
        mask = masks[folds].repeat_interleave(n_rep, dim=0)
        model = InverseGAN(config, experiment, data, replicas=ids, dataset_mask=mask)
        callbacks = []
        if report is not None:

            def points_now(gan: InverseGAN, folds: list[int] = folds, fp: list | None = full_preds) -> list[FoldPoints]:
                with torch.no_grad():
                    preds = [p.numpy() for p in view.predictions(gan.estimates().detach().cpu().double())]
                if full is not None and full in folds:
                    fp = replica_rows(preds, folds.index(full))
                now = []
                for i, k in enumerate(folds):
                    h = held_points(k, preds, slice(i * n_rep, (i + 1) * n_rep), fp)
                    if h["obs"].size:
                        cov = np.maximum(h["obs"], 1.0)
                        now.append(FoldPoints(h["pred"], h["obs"], cov, h["law"], parts[k].weight, h["full"]))
                done = [r.points() for r in results if r.data.size]
                return done + now

            callbacks.append(_Reporter(report, report_every, g * per_model, points_now))
        t0 = time.perf_counter()
        module = fit_gan(model, None, progress=False, callbacks=callbacks)
        seconds = (time.perf_counter() - t0) / len(folds)
        model = module.model.cpu().double()
        est = model.estimates()
        steps = int(model.step_count)
        every = max(1, config.training.log_every)
        at = np.unique(np.r_[np.arange(every - 1, steps, every), steps - 1])
        curve_theta = torch.cat([model.theta_history[at].transpose(0, 1), est[:, None]], dim=1)
        if config.training.bootstrap:
            oob = [
                np.stack([np.histogram(x[w.numpy() == 0], bins=b.edges)[0] for w in model.weights(j)]).astype(float)
                for j, (x, b) in enumerate(zip(data.events, view.datasets))
            ]
            scale = math.exp(-1.0)
        else:
            oob = [np.tile(b.counts, (len(ids), 1)) for b in view.datasets]
            scale = 1.0
        with torch.no_grad():
            vcurve = _validation_chi2(view, curve_theta, oob, scale, mask.numpy())
            preds = [p.numpy() for p in view.predictions(est)]
        if full is not None and full in folds:
            full_preds = replica_rows(preds, folds.index(full))
        stop = bool(callbacks and callbacks[0].stopped)
        for i, k in enumerate(folds):
            rows = slice(i * n_rep, (i + 1) * n_rep)
            h = held_points(k, preds, rows, full_preds)
            result = FoldResult(
                index=k,
                datasets=list(parts[k].datasets),
                weight=parts[k].weight,
                overfit=parts[k].overfit,
                estimates=est[rows].numpy(),
                predictions=h["pred"],
                data=h["obs"],
                covariance=np.maximum(h["obs"], 1.0),
                truth=h["law"],
                validation=vcurve[rows, -1],
                validation_curve=vcurve[rows, :-1],
                curve_steps=at + 1,
                steps=steps,
                box=(low, high),
                seconds=seconds,
                full_fit=h["full"],
            )
            results.append(result)
            if after_fold is not None and after_fold(result):
                stop = True
        if stop:
            break
    return sorted(results, key=lambda r: r.index)


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


def run_vaim_folds(
    config: object,
    kfold: KFoldConfig,
    after_fold: Callable[[FoldResult], bool] | None = None,
    report: Callable[[int, list[FoldPoints]], bool] | None = None,
) -> list[FoldResult]:
    """Train and score K folds of VAIM over its simulated pairs, R seeds per fold (see the module docstring).

    Args:
        config: an :class:`inverse.vaim_config.VAIMConfig`.
        kfold: folds, R, held-out points.
        after_fold: as in :func:`run_gan_folds` (every VAIM fold trains alone, so a threshold stops early).
        report: called after each fold with the folds done and their held-out points; True ends the trial.

    Returns:
        One :class:`FoldResult` per fold that ran.
    """
    from inverse.vaim import VAIM, transform_observables
    from inverse.vaim_run import checked_simulator, noise_scale, prior_box, simulate_pairs
    from inverse.vaim_training import fit_vaim

    simulator, m = checked_simulator(config)
    t = config.training
    theta, y = simulate_pairs(config, simulator, t.n_train, t.seed + 1)
    low, high = (v.numpy() for v in prior_box(config))
    folds = np.array_split(np.random.default_rng(t.seed).permutation(len(theta)), kfold.folds)
    results = []
    for k, held in enumerate(folds):
        train = np.setdiff1d(np.arange(len(theta)), held)
        points = held[: kfold.heldout_points]
        y_held = y[points]
        preds, ests, vals = [], [], []
        t0 = time.perf_counter()
        moments = transform_observables(y[train], config.model.log_observables)
        for r in range(kfold.replicas):
            cfg = config.model_copy(update={"training": t.model_copy(update={"seed": t.seed + 1000 * k + r})})
            torch.manual_seed(cfg.training.seed)
            model = VAIM(cfg, m, moments.mean(0), moments.std(0))
            xs, ys = model.scale_x(theta[train]).float(), model.scale_y(y[train]).float()
            module = fit_vaim(model, xs, ys, None, progress=False)
            model = module.model.cpu().eval()
            with torch.no_grad():
                draw = model.draw(y_held, 1, torch.Generator().manual_seed(cfg.training.seed))[:, 0].double()
            f = simulator(draw).to(torch.float64)
            preds.append(f.flatten().numpy())
            ests.append(draw.mean(0).numpy())
            vals.append(float(module.loss_history[module.steps_done - 1, 0]))
        sigma = noise_scale(y_held, config.problem.noise)
        results.append(
            FoldResult(
                index=k,
                datasets=[],
                weight=1.0,
                overfit=False,
                estimates=np.stack(ests),
                predictions=np.stack(preds),
                data=y_held.flatten().numpy(),
                covariance=(sigma**2).flatten().numpy(),
                truth=simulator(theta[points]).to(torch.float64).flatten().numpy(),
                validation=np.asarray(vals),
                validation_curve=np.asarray(vals)[:, None],
                curve_steps=np.array([t.steps]),
                steps=t.steps,
                box=(low, high),
                seconds=time.perf_counter() - t0,
            )
        )
        if after_fold is not None and after_fold(results[-1]):
            break
        if report is not None and report(k + 1, [r.points() for r in results]):
            break
    return results
