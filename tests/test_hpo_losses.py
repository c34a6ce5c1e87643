"""HyperLoss and the penalties on cases computed by hand (every loss type and statistic)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpo.losses import FoldPoints, HyperLoss
from hpo.penalties import patience, saturation

# Two replicas, two points: T = [[1, 2], [3, 4]], D = [2, 2], C = diag(1, 4).
# chi2_r = [1/2, (1 + 1)/2] = [0.5, 1.0]; <T> = [2, 3]; d = [0, 1]; chi2[<T>] = (1/4)/2 = 0.125.
# cov_rep = [[2, 2], [2, 2]]; C_tot = [[3, 2], [2, 6]], det 14, d^T C_tot^-1 d = 3/14.
FOLD = dict(predictions=[[1.0, 2.0], [3.0, 4.0]], data=[2.0, 2.0], covariance=[1.0, 4.0], truth=[2.0, 2.5])


def fold(**changes) -> FoldPoints:
    return FoldPoints(**{**FOLD, **changes})


@pytest.mark.parametrize(
    ("loss_type", "replica_statistic", "expected"),
    [
        ("chi2", "average", 0.75),
        ("chi2", "best_worst", 1.0),
        ("chi2", "std", 0.25),
        ("chi2_deviation", "average", 0.25),
        ("chi2_mean", "average", 0.125),
        ("chi2p", "average", 3 / 28),
        ("logp", "average", 0.5 * (2 * math.log(2 * math.pi) + math.log(14) + 3 / 14) / 2),
        # bias = (0.5^2 / 4) / 2; variance = (1 + 1/4) / 2 for both replicas; |sqrt(bias / variance) - 1|
        ("bias_variance", "average", abs(math.sqrt(0.03125 / 0.625) - 1)),
    ],
)
def test_loss_types_by_hand(loss_type: str, replica_statistic: str, expected: float) -> None:
    result = HyperLoss(loss_type, replica_statistic, "average").compute([fold()])
    assert result.failed is None
    assert result.loss == pytest.approx(expected, rel=1e-12)
    assert result.replica_chi2[0] == pytest.approx([0.5, 1.0])
    assert result.phi2[0] == pytest.approx(0.625)


def test_average_best_keeps_the_best_share() -> None:
    assert HyperLoss("chi2", "average_best", proportion=0.5).compute([fold()]).loss == pytest.approx(0.5)
    assert HyperLoss("chi2", "average_best", proportion=1.0).compute([fold()]).loss == pytest.approx(0.75)


def test_fold_statistics_and_weights() -> None:
    # Second fold: one replica on the data, one off by 2 sigma in the first point: chi2_r = [0, 4/2].
    other = FoldPoints([[2.0, 2.0], [4.0, 2.0]], [2.0, 2.0], [1.0, 4.0], weight=2.0)
    folds = [fold(), other]  # weighted fold losses (average over replicas): 0.75 and 2 x 1.0
    assert HyperLoss("chi2", "average", "average").compute(folds).loss == pytest.approx((0.75 + 2.0) / 2)
    assert HyperLoss("chi2", "average", "best_worst").compute(folds).loss == pytest.approx(2.0)
    assert HyperLoss("chi2", "average", "std").compute(folds).loss == pytest.approx(np.std([0.75, 2.0]))
    # phi2 is maximised: the fold statistic is inverted. phi2 of the second fold: 1.0 - chi2[<T> = [3, 2]] = 0.5.
    result = HyperLoss("phi2", "average", "average").compute(folds)
    assert result.phi2 == pytest.approx([0.625, 0.5])
    assert result.loss == pytest.approx(1 / ((0.625 + 2 * 0.5) / 2))


def test_full_covariance_matches_the_quadratic_form() -> None:
    cov = np.array([[1.0, 0.5], [0.5, 4.0]])
    f = fold(covariance=cov)
    r = np.array([[-1.0, 0.0], [1.0, 2.0]])
    expected = [float(x @ np.linalg.inv(cov) @ x) / 2 for x in r]
    assert f.replica_chi2() == pytest.approx(expected)


def test_threshold_fails_the_trial_at_the_first_bad_fold() -> None:
    folds = [fold(), FoldPoints([[2.0, 2.0]], [2.0, 2.0], [1.0, 1.0])]
    result = HyperLoss("chi2", threshold=0.6).compute(folds)
    assert math.isnan(result.loss)
    assert result.failed.startswith("threshold: fold 0")
    assert len(result.fold_losses) == 1  # the second fold is not scored
    # Weight enters before the threshold: 0.75 passes 1.0, 2 x 0.75 does not.
    assert HyperLoss("chi2", threshold=1.0).compute([fold()]).failed is None
    assert HyperLoss("chi2", threshold=1.0).compute([fold(weight=2.0)]).failed is not None
    assert HyperLoss("chi2", threshold=1.0).exceeds(fold(weight=2.0))


def test_non_finite_predictions_fail_the_trial() -> None:
    result = HyperLoss("chi2").compute([fold(predictions=[[np.nan, 2.0], [3.0, 4.0]])])
    assert result.failed is not None and result.failed.startswith("nan")


def test_penalties_enter_only_on_request() -> None:
    pen = [{"saturation": np.array([0.5, 0.0])}]
    assert HyperLoss("chi2").compute([fold()], pen).loss == pytest.approx(0.75)
    with_pen = HyperLoss("chi2", include_penalties=True).compute([fold()], pen)
    assert with_pen.loss == pytest.approx((0.5 + 0.5 + 1.0) / 2)
    assert with_pen.penalties == {"saturation": [0.25]}
    # Ensemble losses get the replica mean of each penalty added.
    assert HyperLoss("chi2_mean", include_penalties=True).compute([fold()], pen).loss == pytest.approx(0.375)


def test_bad_names_and_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="loss_type"):
        HyperLoss("chi3")
    with pytest.raises(ValueError, match="fold_statistic"):
        HyperLoss("chi2", fold_statistic="median")
    with pytest.raises(ValueError, match="covariance"):
        fold(covariance=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="bias_variance"):
        HyperLoss("bias_variance").compute([fold(truth=None)])


def test_saturation_counts_parameters_at_the_box_edge() -> None:
    low, high = np.array([0.0, -1.0, 0.0]), np.array([3.0, 1.0, 5.0])
    est = np.array([[1.0, 0.0, 2.0], [0.0001, 0.0, 4.9999], [3.0, -1.0, 0.0]])
    assert saturation(est, low, high, edge=1e-3) == pytest.approx([0.0, 2 / 3, 1.0])


def test_patience_is_the_validation_loss_where_the_best_step_is_where_averaging_starts() -> None:
    steps = np.array([10, 20, 30, 40])
    curve = np.array([[5.0, 2.0, 3.0, 3.0], [5.0, 4.0, 3.0, 1.0]])
    # S = 40, P = 20: replica 0 best at 20 -> |40 - 20 - 20| = 0; replica 1 best at 40 -> 20.
    out = patience(np.array([2.5, 1.0]), curve, steps, steps=40, patience_steps=20, alpha=0.1)
    assert out == pytest.approx([2.5, math.exp(2.0)])


def test_future_test_loss_by_hand() -> None:
    """Two replicas [[1, 3], [3, 5]] of data [2, 2] (unit variances): mean [2, 4], replica covariance [[2, 2], [2, 2]],
    C_tot = [[3, 2], [2, 3]], chi2p = (0, 2) C_tot^-1 (0, 2)^T / 2 = (12 / 5) / 2 = 1.2. The full fit's replicas
    [[2, 2], [2, 4]] have mean [2, 3]: chi2 = (0 + 1) / 2 = 0.5. Loss |1.2 - 0.5| = 0.7."""
    past = FoldPoints([[1.0, 3.0], [3.0, 5.0]], [2.0, 2.0], [1.0, 1.0], full_fit=[[2.0, 2.0], [2.0, 4.0]])
    assert HyperLoss.future_test_difference(past) == pytest.approx(0.7, abs=1e-12)
    # A full fit that describes the data better than the past fit does with its uncertainty: chi2 (0 + 0) = 0.
    better = FoldPoints([[1.0, 3.0], [3.0, 5.0]], [2.0, 2.0], [1.0, 1.0], full_fit=[[2.0, 2.0]])
    assert HyperLoss.future_test_difference(better) == pytest.approx(1.2, abs=1e-12)
    # Signs do not cancel over folds: the loss is |difference|, averaged over the folds with held-out points.
    worse = FoldPoints([[2.0, 2.0], [2.0, 2.0]], [2.0, 2.0], [1.0, 1.0], full_fit=[[2.0, 4.0]])
    result = HyperLoss("future_test").compute([past, worse])
    assert result.fold_losses == pytest.approx([0.7, 2.0])  # chi2p 0 (no residual) - chi2 (0 + 4) / 2
    assert result.loss == pytest.approx(1.35)
    with pytest.raises(ValueError, match=r"last of kfold\.partitions empty"):
        HyperLoss("future_test").compute([fold()])
    with pytest.raises(ValueError, match="full_fit: expected"):
        FoldPoints([[1.0, 3.0]], [2.0, 2.0], [1.0, 1.0], full_fit=[[1.0, 2.0, 3.0]])
