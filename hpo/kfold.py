"""k-fold fits of the inverse solvers: datasets left out by masks, R replicas per fold, losses per fold and replica.

A partition is a set of datasets. Fold k trains every replica with the partition's datasets masked (their
discriminator, adversarial and Poisson-rate terms multiplied by 0, shapes unchanged), then compares the
replicas' predictions of those datasets with the data they never saw (NNPDF's k-fold hyperoptimisation,
arXiv:2109.02653 section 3.3). Because masks keep shapes fixed, all K folds x R replicas train together in one
vectorized :class:`inverse.gan.model.InverseGAN` (``vectorize: true``); the looped form trains one fold after the
other and may stop after a fold that exceeds the loss threshold. The GAN's folds: :mod:`hpo.kfold_gan`; VAIM's:
:mod:`hpo.kfold_vaim`.

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

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field

from hpo.losses import FoldPoints
from physics.binned import BinnedView
from physics.datasets import Experiment
from qcdgip.config import StrictModel

__all__ = ["FoldResult", "KFoldConfig", "Partition", "fold_masks", "partitions", "validation_chi2"]


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
    dis_bins: tuple[int, int] = Field(
        (2, 4), description="DIS: (ln Q^2, x) bins per Q^2 window for the held-out chi2 (2-D table blocks)"
    )
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


def partitions(kfold: KFoldConfig, experiment: Experiment) -> list[Partition]:
    """The folds' partitions: the given ones (checked against the datasets), or one fold per dataset."""
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
    parts = partitions(kfold, experiment)
    masks = torch.ones(len(parts), len(experiment.names), dtype=torch.float64)
    for k, p in enumerate(parts):
        if not p.overfit:
            for n in p.datasets:
                masks[k, experiment.names.index(n)] = 0.0
        if masks[k].sum() == 0:
            raise ValueError(f"kfold.partitions[{k}]: holds out every dataset, nothing is left to fit")
    return masks


def validation_chi2(view: BinnedView, theta: torch.Tensor, oob: list[np.ndarray], scale: float, mask) -> np.ndarray:
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
