"""The k folds of VAIM: shares of its simulated pairs, R seeds per fold, forward consistency of held-out pairs.

Fold k trains on the other K - 1 shares; its held-out points are the observables y_i of ``kfold.heldout_points``
held-out pairs, the predictions the *true* simulator at one decoded draw per point, f(x_hat_r(y_i)), and the
covariance the noise variance. Replicas are independent seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from hpo.kfold import FoldResult, KFoldConfig
from hpo.losses import FoldPoints
from inverse.problems import Simulator
from inverse.vaim.config import VAIMConfig
from inverse.vaim.model import VAIM, transform_observables
from inverse.vaim.simulate import checked_simulator, noise_scale, prior_box, simulate_pairs
from inverse.vaim.training import fit_vaim

__all__ = ["run_vaim_folds"]


def _replica(config: VAIMConfig, k: int, r: int, data: tuple, m: int, simulator: Simulator) -> tuple:
    """Train replica r of fold k; returns (predictions of the held-out points, mean draw, last loss)."""
    theta, y, train, y_held, moments = data
    t = config.training
    cfg = config.model_copy(update={"training": t.model_copy(update={"seed": t.seed + 1000 * k + r})})
    torch.manual_seed(cfg.training.seed)
    model = VAIM(cfg, m, moments.mean(0), moments.std(0))
    xs, ys = model.scale_x(theta[train]).float(), model.scale_y(y[train]).float()
    module = fit_vaim(model, xs, ys, None, progress=False)
    model = module.model.cpu().eval()
    with torch.no_grad():
        draw = model.draw(y_held, 1, torch.Generator().manual_seed(cfg.training.seed))[:, 0].double()
    f = simulator(draw).to(torch.float64)
    return f.flatten().numpy(), draw.mean(0).numpy(), float(module.loss_history[module.steps_done - 1, 0])


def _fold(
    config: VAIMConfig,
    kfold: KFoldConfig,
    k: int,
    held: np.ndarray,
    pairs: tuple[Tensor, Tensor],
    m: int,
    simulator: Simulator,
) -> FoldResult:
    theta, y = pairs
    t = config.training
    train = np.setdiff1d(np.arange(len(theta)), held)
    points = held[: kfold.heldout_points]
    y_held = y[points]
    t0 = time.perf_counter()
    moments = transform_observables(y[train], config.model.log_observables)
    runs = [_replica(config, k, r, (theta, y, train, y_held, moments), m, simulator) for r in range(kfold.replicas)]
    preds, ests, vals = (list(v) for v in zip(*runs))
    sigma = noise_scale(y_held, config.problem.noise)
    low, high = (v.numpy() for v in prior_box(config))
    return FoldResult(
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


def run_vaim_folds(
    config: VAIMConfig,
    kfold: KFoldConfig,
    after_fold: Callable[[FoldResult], bool] | None = None,
    report: Callable[[int, list[FoldPoints]], bool] | None = None,
) -> list[FoldResult]:
    """Train and score K folds of VAIM over its simulated pairs, R seeds per fold (see the module docstring).

    Args:
        config: the VAIM runcard.
        kfold: folds, R, held-out points.
        after_fold: as in :func:`hpo.kfold_gan.run_gan_folds` (every VAIM fold trains alone, so a threshold
            stops early).
        report: called after each fold with the folds done and their held-out points; True ends the trial.

    Returns:
        One :class:`FoldResult` per fold that ran.
    """
    simulator, m = checked_simulator(config)
    t = config.training
    theta, y = simulate_pairs(config, simulator, t.n_train, t.seed + 1)
    folds = np.array_split(np.random.default_rng(t.seed).permutation(len(theta)), kfold.folds)
    results: list[FoldResult] = []
    for k, held in enumerate(folds):
        results.append(_fold(config, kfold, k, held, (theta, y), m, simulator))
        if after_fold is not None and after_fold(results[-1]):
            break
        if report is not None and report(k + 1, [r.points() for r in results]):
            break
    return results
