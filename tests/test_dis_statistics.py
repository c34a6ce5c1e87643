"""DIS statistics beyond the likelihood itself: the fixed sparse products, the 2-D binned view and its Fisher
matrix, and the MCMC reference posterior against the Cramér–Rao bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from inverse.problems import dis_binned
from inverse.vaim.config import VAIMConfig
from inverse.vaim.simulate import checked_simulator
from physics.config import PosteriorConfig
from physics.dis import DISConfig, DISExperiment
from physics.dis.binned import DISBinnedView
from physics.dis.likelihood import DISLikelihood, cramer_rao, fisher_information, fit_mle
from physics.dis.posterior import sample_dis_posterior
from physics.dis.pseudodata import generate_dis_events
from physics.dis.sparse import FixedSparse
from qcdgip.config import load_yaml, parse_config


@pytest.fixture(scope="module")
def experiment():
    return DISExperiment(DISConfig())


@pytest.fixture(scope="module")
def events(experiment):
    return generate_dis_events(experiment, seed=2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fixed_sparse_product_and_its_gradient_equal_the_dense_ones(dtype):
    g = torch.Generator().manual_seed(0)
    dense_m = torch.randn(40, 30, generator=g, dtype=torch.float64) * (torch.rand(40, 30, generator=g) < 0.2)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    weights = torch.randn(40, 5, generator=g, dtype=torch.float64).to(dtype)
    y = FixedSparse(dense_m.to_sparse()) @ x
    (grad,) = torch.autograd.grad((y * weights).sum(), x)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert y.dtype == dtype
    torch.testing.assert_close(y.detach(), dense_m.to(dtype) @ x.detach(), atol=tol, rtol=tol)
    torch.testing.assert_close(grad, dense_m.T.to(dtype) @ weights, atol=tol, rtol=tol)


def test_likelihood_equals_the_sum_of_log_intensities(experiment, events):
    g = torch.Generator().manual_seed(1)
    theta = experiment.truth_tensor() + 0.02 * torch.randn(3, 5, generator=g, dtype=torch.float64)
    direct = -experiment.expected_counts(theta).sum(-1)
    for j, ev in enumerate(events):
        direct = direct + experiment.log_intensity(theta, ev, j).sum(-1)
    torch.testing.assert_close(DISLikelihood(experiment, events)(theta), direct, rtol=1e-12, atol=1e-8)


def test_binned_view_counts_events_and_its_expectations_sum_to_the_windows(experiment, events):
    view = DISBinnedView(experiment, events, n_u=4, n_w=8)
    theta = experiment.truth_tensor()
    for j, (pred, counts) in enumerate(zip(view.predictions(theta), view.counts)):
        assert pred.shape == (1, 32) and counts.sum() == len(events[j])
        assert torch.isclose(pred.sum(), experiment.expected_counts(theta)[0, j], rtol=1e-12)
        assert bool((pred > 0).all())
    # Counts follow their expectations: Pearson chi2 over the bins with at least 5 expected events.
    expected = torch.cat(view.predictions(theta), -1)[0].numpy()
    observed = np.concatenate(view.counts)
    keep = expected >= 5
    chi2 = (((observed - expected) ** 2) / expected)[keep].sum()
    assert stats.chi2.sf(chi2, int(keep.sum())) > 1e-3, chi2


def test_binning_loses_information_and_less_as_bins_shrink(experiment):
    """I_unbinned - I_binned is positive semidefinite, and the Cramér–Rao ratio falls towards 1 with finer bins."""
    theta = experiment.truth_tensor()
    unbinned = fisher_information(experiment, theta)
    sd_u = cramer_rao(unbinned)[1]
    ratios = []
    for n_u, n_w in [(1, 2), (2, 4), (8, 16), (32, 64)]:
        binned = DISBinnedView(experiment, None, n_u, n_w).fisher_information(theta)[0]
        assert torch.linalg.eigvalsh(unbinned - binned).min() > -1e-6 * unbinned.diagonal().max()
        ratios.append((cramer_rao(binned)[1] / sd_u).numpy())
    ratios = np.array(ratios)
    assert np.all(ratios >= 1 - 1e-4) and np.all(np.diff(ratios, axis=0) < 0)
    assert ratios[-1].max() < 1.01


def test_binned_view_refuses_more_bins_than_cells(experiment):
    with pytest.raises(ValueError, match="n_w"):
        DISBinnedView(experiment, None, n_u=4, n_w=10_000)


@pytest.mark.slow
def test_posterior_width_matches_cramer_rao_at_high_statistics():
    """Case A (10^5 events): the posterior is Gaussian with the inverse Fisher covariance, sd within 15 %."""
    experiment = DISExperiment(DISConfig(case="A"))
    likelihood = DISLikelihood(experiment, generate_dis_events(experiment, seed=4))
    mle = fit_mle(likelihood)
    # Shorter than the default chains (16 x 5500): the full ones gave sd / CR 0.98-1.02 and ESS 3395.
    chains = PosteriorConfig(coordinates="theta", seed=3, n_warmup=1000, n_samples=2000)
    post = sample_dis_posterior(likelihood, chains, mle=mle, progress=False)
    sd = cramer_rao(fisher_information(experiment, torch.tensor(mle.theta[None])))[1].numpy()
    assert post.rhat.max() < 1.05 and post.ess.min() > 400, (post.rhat, post.ess)
    assert np.all(np.abs(post.std / sd - 1) < 0.15), post.std / sd
    assert np.all(np.abs(post.mean - mle.theta) / sd < 0.3), (post.mean - mle.theta) / sd


def test_vaim_dis_simulator_gives_the_binned_expectations(experiment):
    config = parse_config(VAIMConfig, load_yaml("configs/vaim_dis_counts.yaml"), "configs/vaim_dis_counts.yaml")
    simulator, m = checked_simulator(config)
    assert m == len(experiment.names) * 2 * 4
    theta = torch.tensor([p.truth for p in config.problem.parameters], dtype=torch.float32)[None]
    y = simulator(theta)
    assert y.dtype == torch.float32
    view = DISBinnedView(experiment, None, n_u=2, n_w=4)
    torch.testing.assert_close(y.double(), torch.cat(view.predictions(theta.double()), -1), rtol=1e-6, atol=1e-3)
    with pytest.raises(ValueError, match=r"theta must be \[n, 5\]"):
        dis_binned(torch.zeros(2, 3))


def test_a_dis_runcard_refuses_the_toys_posterior_coordinates():
    from inverse.gan.dis.config import DISClosureConfig

    with pytest.raises(ValueError, match=r"dis.yaml: posterior: .*coordinates"):
        parse_config(DISClosureConfig, {"posterior": {"coordinates": "norm"}}, "dis.yaml")
    assert DISClosureConfig().posterior.coordinates == "theta"
    partial = parse_config(DISClosureConfig, {"posterior": {"n_chains": 8}}, "dis.yaml").posterior
    assert partial.coordinates == "theta" and partial.n_chains == 8
