import numpy as np
import pytest

from physics.binned import BinnedView, log_bins
from physics.pseudodata import generate_pseudodata


def test_histogram_and_predictions_add_up(experiment_b, data_b):
    view = BinnedView(experiment_b, data_b, n_bins=10)
    assert view.n_points == 40
    assert [b.counts.sum() for b in view.datasets] == data_b.counts
    preds = view.predictions(experiment_b.theory.truth_tensor())
    np.testing.assert_allclose([p.sum().item() for p in preds], [d.expected for d in experiment_b.datasets], rtol=1e-10)


def test_pearson_chi2_at_truth_has_mean_n_bins(experiment_c):
    """For Poisson counts E[(n - nu)^2 / nu] = 1 exactly, so E[chi2] = number of bins at the truth."""
    truth = experiment_c.theory.truth_tensor()
    values = []
    for seed in range(200):
        view = BinnedView(experiment_c, generate_pseudodata(experiment_c, seed=seed), n_bins=5)
        values.append(view.chi2(truth, kind="theory").item())
    values = np.array(values)
    assert abs(values.mean() - 20) < 4 * values.std(ddof=1) / np.sqrt(len(values))


def test_chi2_kinds_and_errors(experiment_b, data_b):
    view = BinnedView(experiment_b, data_b, n_bins=4)
    theta = experiment_b.theory.truth_tensor().repeat(3, 1)
    assert view.chi2(theta, kind="data").shape == (3,)
    assert view.chi2_per_dataset(theta).shape == (3, 4)
    with pytest.raises(ValueError, match="kind"):
        view.chi2(theta, kind="other")
    with pytest.raises(ValueError, match="cover"):
        BinnedView(experiment_b, data_b, edges={"sigma1_low": np.array([0.12, 0.3])})
    assert np.allclose(log_bins(0.1, 1.0, 2), [0.1, np.sqrt(0.1), 1.0])
