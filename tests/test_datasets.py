import numpy as np
import pytest
import torch

from physics.config import PhysicsConfig
from physics.datasets import Experiment


@pytest.mark.parametrize("case", ["A", "B", "C"])
def test_luminosity_reproduces_the_case_counts(config, case):
    exp = Experiment(config, case=case)
    totals = {}
    for d in exp.datasets:
        totals[d.observable] = totals.get(d.observable, 0.0) + d.expected
    assert totals == pytest.approx(config.cases[case], rel=1e-12)
    nu = exp.expected_counts(exp.theory.truth_tensor())[0].numpy()
    np.testing.assert_allclose(nu, [d.expected for d in exp.datasets], rtol=1e-12)


def test_counts_scale_with_normalisations_and_split_is_consistent(experiment_b):
    theta = experiment_b.theory.truth_tensor().repeat(2, 1)
    theta[1, 0] *= 2.0  # double Nu
    theta[1, 3] *= 2.0  # and Nd: every observable doubles
    nu = experiment_b.expected_counts(theta).numpy()
    np.testing.assert_allclose(nu[1], 2 * nu[0], rtol=1e-12)


def test_other_datasets_and_cases_from_config():
    cfg = PhysicsConfig.model_validate(
        {
            "datasets": [
                {"name": "all1", "observable": "sigma1", "x_min": 0.1, "x_max": 1.0},
                {"name": "mid2", "observable": "sigma2", "x_min": 0.2, "x_max": 0.7},
            ],
            "cases": {"X": {"sigma1": 123.0, "sigma2": 45.0}},
            "case": "X",
        }
    )
    exp = Experiment(cfg)
    assert [round(d.expected, 9) for d in exp.datasets] == [123.0, 45.0]
    with pytest.raises(ValueError, match="unknown dataset"):
        exp.index("nope")
    assert exp.expected_counts(torch.tensor([cfg.truth], dtype=torch.float32)).dtype == torch.float32
