"""The hyperparameter-search loss: figures of merit per fold, statistics over replicas and folds (NNPDF names).

For fold k with N held-out points, replica predictions T_r (r = 1..R), data D, experimental covariance C
(diagonal variances or a full matrix), replica-mean prediction <T> and replica covariance
cov_rep(T) = 1/(R-1) sum_r (T_r - <T>)(T_r - <T>)^T:

=================  =========================================================================================
``chi2``           per replica chi2_r = (T_r - D)^T C^-1 (T_r - D) / N, reduced by ``replica_statistic``
``chi2_deviation`` per replica |chi2_r - 1| (a good held-out fit has chi2 per point near 1), reduced likewise
``chi2_mean``      chi2 of the mean prediction, (<T> - D)^T C^-1 (<T> - D) / N
``chi2p``          with the PDF (replica) uncertainty: (<T> - D)^T C_tot^-1 (<T> - D) / N, C_tot = C + cov_rep(T)
``logp``           Gaussian negative log-likelihood per point, [N log 2 pi + log det C_tot + d^T C_tot^-1 d] / 2N
``phi2``           phi^2 = <chi2_r>_rep - chi2[<T>] (NNPDF's phi squared: the replica spread in units of the
                   data uncertainty); it is maximised, so the fold statistic is inverted: loss = 1 / stat(phi^2)
``bias_variance``  closure only: |R_bv - 1| with R_bv = sqrt(bias / variance),
                   bias = (<T> - T_law)^T C^-1 (<T> - T_law) / N, variance = <(T_r - <T>)^T C^-1 (T_r - <T>)>_r / N
``future_test``    NNPDF's future test: |chi2p_k - chi2_full,k| with chi2p_k the fold-k fit's chi2 (per point,
                   with its replica uncertainty C_tot) of the data it never saw, and chi2_full,k the chi2 (C only)
                   of the full-data fit's mean prediction <T_full> of the same data; needs partitions whose last
                   one is empty (that fold is the full-data fit and has no loss of its own)
=================  =========================================================================================

The future test asks whether a fit to the "past" data (fold k leaves the "future" datasets out) describes the
future data as well as the fit that includes them, once its own uncertainty is counted: a fit whose replica spread
is honest has chi2p_k close to chi2_full,k. NNPDF sums |.| over the folds; here the fold statistic reduces them
(``average`` is the sum over K - 1 folds divided by K - 1).

Statistics (over replicas for the per-replica types, then over folds): ``average``, ``average_best`` (average of
the best ``proportion`` of replicas, NNPDF's default 90 %), ``best_worst`` (the maximum: the worst case is
minimised), ``std``. A fold's loss is multiplied by its partition weight, then compared with ``threshold``: a fold
above it fails the trial (it is reported failed, not scored). Penalties (``hpo.penalties``), per replica, enter
only with ``include_penalties``: added to each replica's loss for the per-replica types, their replica mean added
to the fold loss otherwise.

References:
    NNPDF collaboration, "The path to proton structure at 1% accuracy", arXiv:2109.02653 (k-fold
    hyperoptimisation, phi); Del Debbio et al., "Bayesian approach to inverse problems: an application to NNPDF
    closure testing", arXiv:2111.05787 (bias/variance ratio).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["LOSS_TYPES", "STATISTICS", "FoldPoints", "HyperLoss", "HyperLossResult"]

LOSS_TYPES = ("chi2", "chi2_deviation", "chi2_mean", "chi2p", "logp", "phi2", "bias_variance", "future_test")
PER_REPLICA = ("chi2", "chi2_deviation")


def _average(x: np.ndarray, proportion: float) -> float:
    return float(np.mean(x))


def _average_best(x: np.ndarray, proportion: float) -> float:
    return float(np.mean(np.sort(x)[: max(1, math.ceil(proportion * len(x)))]))


def _best_worst(x: np.ndarray, proportion: float) -> float:
    return float(np.max(x))


def _std(x: np.ndarray, proportion: float) -> float:
    return float(np.std(x))


STATISTICS: dict[str, Callable[[np.ndarray, float], float]] = {
    "average": _average,
    "average_best": _average_best,
    "best_worst": _best_worst,
    "std": _std,
}


@dataclass
class FoldPoints:
    """The held-out points of one fold, what every loss type needs.

    Attributes:
        predictions: replica predictions, [R, N].
        data: measured values, [N].
        covariance: experimental variances [N] or covariance matrix [N, N].
        truth: law prediction at the true parameters, [N] (closure tests; ``bias_variance`` needs it).
        weight: the partition's weight.
        full_fit: replica predictions of the same points by the full-data fit, [R', N] (``future_test`` needs it).
    """

    predictions: np.ndarray
    data: np.ndarray
    covariance: np.ndarray
    truth: np.ndarray | None = None
    weight: float = 1.0
    full_fit: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.predictions = np.atleast_2d(np.asarray(self.predictions, dtype=float))
        self.data = np.asarray(self.data, dtype=float)
        self.covariance = np.asarray(self.covariance, dtype=float)
        n = self.predictions.shape[1]
        if self.data.shape != (n,):
            raise ValueError(f"data: expected {n} points (the predictions'), got shape {self.data.shape}")
        if self.covariance.shape not in ((n,), (n, n)):
            raise ValueError(f"covariance: expected [{n}] or [{n}, {n}], got {self.covariance.shape}")
        if n == 0:
            raise ValueError("a fold needs at least one held-out point (a partition without datasets?)")
        if self.full_fit is not None:
            self.full_fit = np.atleast_2d(np.asarray(self.full_fit, dtype=float))
            if self.full_fit.shape[1] != n:
                raise ValueError(f"full_fit: expected [R', {n}] predictions, got shape {self.full_fit.shape}")

    @property
    def n(self) -> int:
        """Number of points N."""
        return self.data.shape[0]

    def matrix(self) -> np.ndarray:
        """C as an [N, N] matrix."""
        return np.diag(self.covariance) if self.covariance.ndim == 1 else self.covariance

    def chi2(self, residuals: np.ndarray, cov: np.ndarray | None = None) -> np.ndarray:
        """r^T C^-1 r / N for residuals [..., N] (C: the experimental covariance unless given)."""
        c = self.matrix() if cov is None else cov
        sol = np.linalg.solve(c, np.moveaxis(np.atleast_2d(residuals), -1, 0))
        return np.einsum("...n,n...->...", np.atleast_2d(residuals), sol) / self.n

    def replica_chi2(self) -> np.ndarray:
        """chi2_r per point of each replica, [R]."""
        return self.chi2(self.predictions - self.data)

    def total_covariance(self) -> np.ndarray:
        """C_tot = C + cov_rep(T) (the replica covariance is 0 for a single replica)."""
        t = self.predictions
        rep = np.cov(t, rowvar=False, ddof=1).reshape(self.n, self.n) if len(t) > 1 else np.zeros((self.n, self.n))
        return self.matrix() + rep


@dataclass
class HyperLossResult:
    """A trial's loss and what it is made of.

    Attributes:
        loss: the trial loss (NaN when failed).
        fold_losses: each fold's weighted loss (before the fold statistic).
        replica_chi2: chi2_r per point, one [R] array per fold (whatever the loss type).
        phi2: phi^2 per fold.
        penalties: each penalty's replica mean per fold.
        failed: why the trial failed, or None.
    """

    loss: float
    fold_losses: list[float]
    replica_chi2: list[np.ndarray]
    phi2: list[float]
    penalties: dict[str, list[float]] = field(default_factory=dict)
    failed: str | None = None


class HyperLoss:
    """The trial loss of the hyperparameter search (see the module docstring for every formula).

    Args:
        loss_type: one of :data:`LOSS_TYPES`.
        replica_statistic: statistic over replicas for ``chi2`` and ``chi2_deviation``.
        fold_statistic: statistic over folds.
        threshold: a fold whose weighted loss exceeds it fails the trial (None: no threshold).
        include_penalties: add the penalties to the loss.
        proportion: share of replicas ``average_best`` keeps.

    Raises:
        ValueError: an unknown loss type or statistic (the message names the argument and the choices).

    Example:
        >>> fold = FoldPoints(predictions=[[1.0, 2.0], [3.0, 2.0]], data=[2.0, 2.0], covariance=[1.0, 1.0])
        >>> HyperLoss("chi2", "average", "average").compute([fold]).loss
        0.5
    """

    def __init__(
        self,
        loss_type: str = "chi2",
        replica_statistic: str = "average",
        fold_statistic: str = "average",
        threshold: float | None = None,
        include_penalties: bool = False,
        proportion: float = 0.9,
    ) -> None:
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type: {loss_type!r} is not one of {list(LOSS_TYPES)}")
        for name, value in (("replica_statistic", replica_statistic), ("fold_statistic", fold_statistic)):
            if value not in STATISTICS:
                raise ValueError(f"{name}: {value!r} is not one of {list(STATISTICS)}")
        if not 0.0 < proportion <= 1.0:
            raise ValueError(f"proportion: must be in (0, 1], got {proportion}")
        self.loss_type = loss_type
        self.replica_statistic = replica_statistic
        self.fold_statistic = fold_statistic
        self.threshold = threshold
        self.include_penalties = include_penalties
        self.proportion = proportion

    def _reduce(self, statistic: str, values: np.ndarray) -> float:
        return STATISTICS[statistic](np.asarray(values, dtype=float), self.proportion)

    def fold_loss(self, fold: FoldPoints, penalties: dict[str, np.ndarray] | None = None) -> float:
        """The weighted loss of one fold (before the fold statistic; ``phi2`` returns phi^2 itself)."""
        extra = penalties if (penalties and self.include_penalties) else {}
        kind = self.loss_type
        if kind in PER_REPLICA:
            per = fold.replica_chi2()
            if kind == "chi2_deviation":
                per = np.abs(per - 1.0)
            per = per + sum((np.asarray(p, dtype=float) for p in extra.values()), np.zeros_like(per))
            return fold.weight * self._reduce(self.replica_statistic, per)
        mean = fold.predictions.mean(0)
        if kind == "chi2_mean":
            value = float(fold.chi2(mean - fold.data)[0])
        elif kind == "chi2p":
            value = float(fold.chi2(mean - fold.data, fold.total_covariance())[0])
        elif kind == "logp":
            cov = fold.total_covariance()
            _, logdet = np.linalg.slogdet(cov)
            quad = float(fold.chi2(mean - fold.data, cov)[0]) * fold.n
            value = 0.5 * (fold.n * math.log(2 * math.pi) + logdet + quad) / fold.n
        elif kind == "phi2":
            value = float(fold.replica_chi2().mean() - fold.chi2(mean - fold.data)[0])
        elif kind == "future_test":
            value = abs(self.future_test_difference(fold))
        else:  # bias_variance
            if fold.truth is None:
                raise ValueError("loss_type bias_variance needs the law (true-parameter) predictions: a closure test")
            bias = float(fold.chi2(mean - fold.truth)[0])
            variance = float(fold.chi2(fold.predictions - mean).mean())
            value = abs(math.sqrt(bias / variance) - 1.0) if variance > 0 else math.inf
        value += sum(float(np.mean(p)) for p in extra.values())
        return fold.weight * value

    @staticmethod
    def future_test_difference(fold: FoldPoints) -> float:
        """chi2p of the fold's fit minus chi2 of the full-data fit's mean prediction, on the fold's points.

        Raises:
            ValueError: the fold carries no full-data fit (the last partition is not empty).
        """
        if fold.full_fit is None:
            raise ValueError(
                "loss_type future_test needs the full-data fit's predictions: make the last of kfold.partitions empty"
            )
        mean = fold.predictions.mean(0)
        with_pdf = float(fold.chi2(mean - fold.data, fold.total_covariance())[0])
        full = float(fold.chi2(fold.full_fit.mean(0) - fold.data)[0])
        return with_pdf - full

    def compute(
        self, folds: Sequence[FoldPoints], penalties: Sequence[dict[str, np.ndarray]] | None = None
    ) -> HyperLossResult:
        """The trial loss over folds; a fold over the threshold makes the result failed (``loss`` NaN).

        Args:
            folds: the held-out points of every fold that ran.
            penalties: per fold, each penalty's per-replica values [R] (always reported, added on request).
        """
        penalties = list(penalties) if penalties is not None else [{} for _ in folds]
        result = HyperLossResult(loss=math.nan, fold_losses=[], replica_chi2=[], phi2=[])
        for k, (fold, pen) in enumerate(zip(folds, penalties)):
            chi2 = fold.replica_chi2()
            result.replica_chi2.append(chi2)
            result.phi2.append(float(chi2.mean() - fold.chi2(fold.predictions.mean(0) - fold.data)[0]))
            for name, values in pen.items():
                result.penalties.setdefault(name, []).append(float(np.mean(values)))
            loss = self.fold_loss(fold, pen)
            result.fold_losses.append(loss)
            if not math.isfinite(loss):
                result.failed = f"nan: fold {k} loss is {loss}"
                return result
            if self.threshold is not None and self.loss_type != "phi2" and loss > self.threshold:
                result.failed = f"threshold: fold {k} loss {loss:.4g} > {self.threshold:g}"
                return result
        values = np.asarray(result.fold_losses)
        if self.loss_type == "phi2":
            stat = self._reduce(self.fold_statistic, values)
            result.loss = 1.0 / stat if stat > 0 else math.inf
        else:
            result.loss = self._reduce(self.fold_statistic, values)
        return result

    def exceeds(self, fold: FoldPoints, penalties: dict[str, np.ndarray] | None = None) -> bool:
        """Whether one fold already fails the threshold (for stopping a looped k-fold early)."""
        if self.threshold is None or self.loss_type == "phi2":
            return False
        loss = self.fold_loss(fold, penalties)
        return not math.isfinite(loss) or loss > self.threshold
