"""k-fold fits: masks leave datasets out exactly, folds vectorize, the Fisher metric follows the mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpo.kfold import KFoldConfig, Partition, fold_masks
from hpo.kfold_gan import run_gan_folds
from inverse.gan.config import GANConfig
from physics.likelihood import fisher_information
from physics.pseudodata import EventData

TINY = GANConfig(training=dict(steps=12, events_per_param=128, progress=False, log_every=4, dtype="float64"))


def test_fold_masks_follow_partitions(experiment_b) -> None:
    kfold = KFoldConfig(
        partitions=[
            Partition(datasets=["sigma1_low", "sigma2_low"]),
            Partition(datasets=["sigma1_high"], overfit=True),
        ]
    )
    masks = fold_masks(kfold, experiment_b)
    assert masks.tolist() == [[0, 1, 0, 1], [1, 1, 1, 1]]
    assert fold_masks(KFoldConfig(), experiment_b).tolist() == (1 - torch.eye(4, dtype=torch.float64)).tolist()
    with pytest.raises(ValueError, match=r"kfold.partitions\[0\].datasets: unknown \['sigma3'\]"):
        fold_masks(KFoldConfig(partitions=[Partition(datasets=["sigma3"])]), experiment_b)
    with pytest.raises(ValueError, match="nothing is left to fit"):
        fold_masks(KFoldConfig(partitions=[Partition(datasets=experiment_b.names)]), experiment_b)


def test_fisher_is_additive_over_dataset_weights(experiment_b) -> None:
    theta = experiment_b.theory.truth_tensor(torch.float64)
    full = fisher_information(experiment_b, theta)
    parts = [fisher_information(experiment_b, theta, torch.eye(4, dtype=torch.float64)[j]) for j in range(4)]
    assert torch.allclose(sum(parts), full, rtol=1e-12)
    assert torch.allclose(fisher_information(experiment_b, theta, torch.ones(4)), full, rtol=1e-14)


def test_held_out_data_never_reach_the_fit(experiment_b, data_b) -> None:
    """Replacing a fold's held-out events (same counts) leaves that fold's replicas bit-for-bit unchanged."""
    kfold = KFoldConfig(partitions=[Partition(datasets=["sigma2_high"])], replicas=2, n_bins=4)
    rng = np.random.default_rng(0)
    lo, hi = experiment_b.datasets[3].x_range
    events = list(data_b.events)
    events[3] = np.sort(rng.uniform(lo, hi, len(events[3])))
    other = EventData(names=data_b.names, events=events, meta=data_b.meta)
    a = run_gan_folds(TINY, experiment_b, data_b, kfold)[0]
    b = run_gan_folds(TINY, experiment_b, other, kfold)[0]
    np.testing.assert_array_equal(a.estimates, b.estimates)
    # ...while the held-out comparison does see them.
    assert not np.array_equal(a.data, b.data)
    # Without the mask the same change moves the fit.
    full = KFoldConfig(partitions=[Partition(datasets=["sigma2_high"], overfit=True)], replicas=2, n_bins=4)
    c = run_gan_folds(TINY, experiment_b, data_b, full)[0]
    d = run_gan_folds(TINY, experiment_b, other, full)[0]
    assert not np.allclose(c.estimates, d.estimates)


def test_vectorized_folds_equal_looped_folds(experiment_b, data_b) -> None:
    truth = np.asarray(experiment_b.theory.truth)
    vec = run_gan_folds(TINY, experiment_b, data_b, KFoldConfig(replicas=2, n_bins=4), truth)
    loop = run_gan_folds(TINY, experiment_b, data_b, KFoldConfig(replicas=2, n_bins=4, vectorize=False), truth)
    assert [f.datasets for f in vec] == [[n] for n in experiment_b.names]
    for a, b in zip(vec, loop):
        np.testing.assert_allclose(a.estimates, b.estimates, rtol=1e-9)
        np.testing.assert_allclose(a.predictions, b.predictions, rtol=1e-9)
        assert a.predictions.shape == (2, 4) and a.truth.shape == (4,)
        assert np.all(a.validation > 0) and a.validation_curve.shape == (2, 3)
    # A looped k-fold stops after the fold the callback rejects.
    stopped = run_gan_folds(
        TINY, experiment_b, data_b, KFoldConfig(replicas=2, n_bins=4, vectorize=False), after_fold=lambda f: True
    )
    assert len(stopped) == 1


def test_out_of_bag_validation_is_calibrated_at_the_truth(experiment_b, data_b) -> None:
    """At the true parameters the out-of-bag chi2 per point is ~1 (Poisson counts of mean e^-1 nu)."""
    from hpo.kfold import validation_chi2
    from physics.binned import BinnedView
    from physics.pseudodata import poisson_replica_weights

    view = BinnedView(experiment_b, data_b, n_bins=10)
    weights = poisson_replica_weights(data_b.counts, 200, seed=0)
    oob = [
        np.stack([np.histogram(x[w.numpy() == 0], bins=b.edges)[0] for w in weights[j]]).astype(float)
        for j, (x, b) in enumerate(zip(data_b.events, view.datasets))
    ]
    theta = experiment_b.theory.truth_tensor(torch.float64)[None].expand(200, 1, 6)
    chi2 = validation_chi2(view, theta, oob, np.exp(-1.0), np.ones((200, 4)))[:, 0]
    # 40 bins: chi2/N has sd sqrt(2/40) = 0.22 per replica; the mean of 200 replicas (correlated through the
    # common data) must sit near 1.
    assert 0.7 < chi2.mean() < 1.3


def test_future_test_folds_carry_the_full_fit_vectorized_or_looped(experiment_b, data_b) -> None:
    """With an empty last partition every other fold gets the full-data fit's predictions of its held-out points,
    the same whether folds train together or one after the other (the full fit first)."""
    parts = [
        Partition(datasets=["sigma2_high"]),
        Partition(datasets=["sigma1_low", "sigma2_low"]),
        Partition(datasets=[]),
    ]
    truth = np.asarray(experiment_b.theory.truth)
    vec = run_gan_folds(TINY, experiment_b, data_b, KFoldConfig(partitions=parts, replicas=2, n_bins=4), truth)
    loop = run_gan_folds(
        TINY, experiment_b, data_b, KFoldConfig(partitions=parts, replicas=2, n_bins=4, vectorize=False), truth
    )
    assert [f.index for f in loop] == [0, 1, 2]
    for a, b in zip(vec, loop):
        np.testing.assert_allclose(a.estimates, b.estimates, rtol=1e-9)
    full = vec[2]
    assert full.data.size == 0 and full.full_fit is None
    for f in vec[:2]:
        assert f.full_fit.shape == f.predictions.shape
        # The full fit's predictions of these points are its own: compare with a fold that fits everything.
        assert not np.allclose(f.full_fit, f.predictions)
    np.testing.assert_allclose(vec[0].full_fit, loop[0].full_fit, rtol=1e-9)


def test_reports_follow_training_and_can_stop_it(experiment_b, data_b) -> None:
    """The report callback sees the held-out loss every few steps; returning True ends the training there."""
    seen: list[tuple[int, int]] = []

    def report(budget: int, points: list) -> bool:
        seen.append((budget, len(points)))
        return budget == 2

    kfold = KFoldConfig(replicas=2, n_bins=4)
    folds = run_gan_folds(TINY, experiment_b, data_b, kfold, report=report, report_every=4)
    assert seen == [(1, 4), (2, 4)]  # 4 folds in one model, reports at steps 4 and 8; stopped at 8 of 12
    assert all(f.steps == 8 for f in folds) and len(folds) == 4
    seen.clear()
    looped = KFoldConfig(replicas=2, n_bins=4, vectorize=False)
    run_gan_folds(
        TINY, experiment_b, data_b, looped, report=lambda b, p: seen.append((b, len(p))) or False, report_every=4
    )
    # 3 reports per model, budgets counted over the folds; the finished folds' points are carried along.
    assert [b for b, _ in seen] == list(range(1, 13))
    assert [n for _, n in seen] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
