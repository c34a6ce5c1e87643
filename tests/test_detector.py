"""The experimental module: folded density (normalisation, chi2 against a large smeared sample), the weighted
detector sampler (distribution and gradients against finite differences with common random numbers), the folded
likelihood, the runcard block and its bad-input errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from inverse.gan.config import ClosureConfig
from physics.binned import log_bins
from physics.config import DetectorConfig, PhysicsConfig, ReferenceConfig
from physics.datasets import Experiment
from physics.detector import FoldedSampler
from physics.likelihood import ExtendedLikelihood, fisher_information
from physics.pseudodata import generate_pseudodata
from qcdgip.config import parse_config

OTHER = [1.2, 0.4, 1.0, 2.5, -0.8, 0.5]


@pytest.fixture(scope="module")
def folded() -> Experiment:
    return Experiment(PhysicsConfig(detector=DetectorConfig()))


def _table_experiment(x, eps) -> Experiment:
    det = DetectorConfig(resolution=0.08, acceptance={"kind": "table", "x": x, "eps": eps})
    return Experiment(PhysicsConfig(detector=det))


@pytest.mark.parametrize("theta", [None, OTHER])
def test_folded_density_integrates_to_the_expected_count(folded, theta):
    t = folded.theory.truth_tensor() if theta is None else torch.tensor([theta], dtype=torch.float64)
    counts = folded.expected_counts(t)[0]
    for j, rule in enumerate(folded.rules):
        rt = rule.tensors(torch.float64)
        integral = (torch.exp(folded.log_intensity(t, rt.log_x, rt.log_1mx, j))[0] * rt.dx_weights).sum()
        # Two independent quadratures (per-event Gauss nodes in g vs the logit rule of nu); 16 nodes give ~5e-6.
        assert abs(float(integral / counts[j]) - 1) < 2e-5
    # Migrations and losses conserve events: what every dataset of an observable receives is at most what its true
    # ranges hold times the plateau efficiency, and more than the efficiency-weighted count minus the edge losses.
    true = folded.folding.efficiency_at(t)[0]
    assert bool((true > 0.1).all()) and float(true[0] + true[1]) < 0.9


def test_folded_density_matches_a_large_smeared_sample():
    """Pseudo-data smeared event by event (Bernoulli acceptance, Gaussian log-x smearing, migrations) vs the
    quadrature's folded bin expectations: Poisson chi2 over 4 x 12 bins."""
    config = PhysicsConfig(detector=DetectorConfig(resolution=0.1), case="A")
    experiment = Experiment(config)
    data = generate_pseudodata(experiment, seed=5, theta=OTHER)
    theta = torch.tensor([OTHER], dtype=torch.float64)
    chi2, bins = 0.0, 0
    for j, (d, x) in enumerate(zip(experiment.datasets, data.events)):
        edges = log_bins(*d.x_range, 12)
        observed, _ = np.histogram(x, bins=edges)
        expected = torch.stack(
            [experiment.folding.expected_in(theta, j, lo, hi)[0] for lo, hi in itertools.pairwise(edges)]
        ).numpy()
        assert expected.min() > 20
        chi2 += float(((observed - expected) ** 2 / expected).sum())
        bins += len(expected)
    assert stats.chi2.sf(chi2, bins) > 1e-3, (chi2, bins)
    # And the detector really acts: without it the same bins are far off (acceptance and migrations matter).
    plain = Experiment(PhysicsConfig(case="A"))
    nu = plain.expected_counts(theta)[0]
    assert abs(sum(data.counts) - float(nu.sum())) > 10 * math.sqrt(float(nu.sum()))


def test_weighted_detector_sampler_has_the_folded_distribution(folded):
    sampler = folded.observed_sampler()
    assert isinstance(sampler, FoldedSampler)
    theta = torch.tensor([OTHER], dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    for j, d in enumerate(folded.datasets):
        y, w = sampler.sample_weighted(theta, 200_000, j, generator=g)
        assert y.shape == w.shape == (1, sampler.events_per_draw(200_000, j))
        assert bool(((y >= d.spec.x_min) & (y <= d.spec.x_max)).all())
        # The weights sum to the folded expected count (an unbiased estimate with a small error).
        total, nu = float(w.sum()), float(folded.expected_counts(theta)[0, j])
        assert abs(total / nu - 1) < 0.01
        edges = log_bins(d.spec.x_min, d.spec.x_max, 8)
        hist, _ = np.histogram(y[0].numpy(), bins=edges, weights=w[0].numpy())
        sq, _ = np.histogram(y[0].numpy(), bins=edges, weights=(w[0] ** 2).numpy())
        expected = torch.stack(
            [folded.folding.expected_in(theta, j, lo, hi)[0] for lo, hi in itertools.pairwise(edges)]
        ).numpy()
        chi2 = float((((hist - expected) ** 2) / np.maximum(sq, 1e-30)).sum())
        assert stats.chi2.sf(chi2, len(expected)) > 1e-3, (j, chi2)


def test_detector_gradients_match_finite_differences_with_common_random_numbers(folded):
    sampler = folded.observed_sampler()
    theta0 = torch.tensor([OTHER], dtype=torch.float64)
    n = 4000
    noise = torch.rand(1, n, sampler.noise_dim, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def statistic(theta: torch.Tensor, j: int) -> torch.Tensor:
        y, w = sampler.sample_weighted(theta, n, j, noise=noise)
        return (w * torch.sin(5 * torch.log(y))).sum() / w.sum() + 1e-4 * w.sum()

    for j in range(len(folded.datasets)):
        theta = theta0.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(statistic(theta, j), theta)
        h = 1e-6
        fd = torch.zeros_like(grad)
        for i in range(theta0.shape[1]):
            step = torch.zeros_like(theta0)
            step[0, i] = h
            fd[0, i] = (statistic(theta0 + step, j) - statistic(theta0 - step, j)) / (2 * h)
        assert torch.allclose(grad, fd, rtol=1e-5, atol=1e-7), (j, grad, fd)


def test_folded_likelihood_and_cramer_rao(folded):
    data = generate_pseudodata(folded, seed=1)
    like = ExtendedLikelihood(folded, data)
    truth = folded.theory.truth_tensor()
    theta = truth.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(like(theta)[0], theta)
    info = fisher_information(folded, truth)[0]
    # The score at the truth is N(0, I): its Mahalanobis length follows chi2 with 6 degrees of freedom.
    q = float(score[0] @ torch.linalg.solve(info, score[0]))
    assert stats.chi2.sf(q, 6) > 1e-3, q
    # Resolution and acceptance lose information: the folded bound is wider than the perfect detector's.
    plain = Experiment(PhysicsConfig())
    sd_folded = torch.sqrt(torch.diagonal(torch.linalg.inv(info)))
    sd_plain = torch.sqrt(torch.diagonal(torch.linalg.inv(fisher_information(plain, truth)[0])))
    assert bool((sd_folded > sd_plain).all())


def test_the_detector_block_is_read_at_the_top_level_or_in_physics():
    top = parse_config(ClosureConfig, {"detector": {"resolution": 0.03}}, "card.yaml")
    inner = parse_config(ReferenceConfig, {"physics": {"detector": {"resolution": 0.03}}}, "card.yaml")
    assert top.physics.detector == inner.physics.detector
    assert top.physics.detector.resolution == 0.03
    with pytest.raises(ValueError, match=r"both at the top level and as physics\.detector"):
        ClosureConfig.model_validate({"detector": {}, "physics": {"detector": {}}})
    assert parse_config(ClosureConfig, {}, "card.yaml").physics.detector is None


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"resolution": 0.0}, r"detector\.resolution: .*must be > 0"),
        ({"resolution": -0.1}, r"detector\.resolution: .*must be > 0"),
        ({"acceptance": {"kind": "table", "x": [0.1, 1.0], "eps": [0.5, 1.2]}}, r"acceptance: .*eps: .*\[0, 1\]"),
        ({"acceptance": {"kind": "table", "x": [0.1, 1.0], "eps": [-0.1, 0.5]}}, r"acceptance: .*eps: .*\[0, 1\]"),
        ({"acceptance": {"plateau": 1.5}}, r"acceptance: .*plateau: .*\[0, 1\]"),
        ({"acceptance": {"width": 0}}, r"acceptance: .*width: .*> 0"),
    ],
)
def test_bad_detector_settings_name_the_field(block, message):
    with pytest.raises(ValueError, match=message):
        parse_config(ClosureConfig, {"detector": block}, "card.yaml")


def test_an_acceptance_that_removes_a_dataset_is_refused():
    # eps = 0 below x = 0.5: sigma1_low and sigma2_low ([0.1, 0.3]) receive nothing (0.3 is > 6 resolutions away).
    with pytest.raises(ValueError, match=r"detector\.acceptance: no event of dataset 'sigma1_low' survives"):
        _table_experiment([0.49, 0.5], [0.0, 0.0])
    ok = _table_experiment([0.1, 0.3, 1.0], [0.2, 0.8, 0.9])
    assert all(d.expected > 0 for d in ok.datasets)


def test_pseudodata_remember_their_detector(tmp_path, folded):
    from physics.pseudodata import load_or_generate

    data, reused = load_or_generate(folded, 1, tmp_path / "data", overwrite=False)
    assert not reused and data.meta["detector"]["resolution"] == 0.05
    plain = Experiment(PhysicsConfig())
    with pytest.raises(ValueError, match="detector"):
        load_or_generate(plain, 1, tmp_path / "data", overwrite=False)
    again, reused = load_or_generate(folded, 1, tmp_path / "data", overwrite=False)
    assert reused and again.counts == data.counts
