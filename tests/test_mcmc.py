"""The MCMC event sampler: distribution (KS after thinning by the measured autocorrelation time), score-function
gradients against the exact sampler's implicit-derivative gradients, reproducibility, diagnostics, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from physics.config import MCMCConfig, PhysicsConfig
from physics.mcmc import MCMCSampler, integrated_autocorrelation_time
from physics.sampling import InverseCDFSampler
from physics.theory import Theory
from qcdgip.config import parse_config

THETAS = [[2.1875, -0.5, 3.0, 1.09375, -0.5, 4.0], [1.2, 0.4, 1.0, 2.5, -0.8, 0.5]]


@pytest.fixture(scope="module")
def samplers(config: PhysicsConfig):
    theory = Theory(config)
    return MCMCSampler(theory, config.datasets, MCMCConfig()), InverseCDFSampler(theory, config.datasets)


def test_autocorrelation_time_of_an_ar1_process():
    # AR(1) with coefficient a has tau = (1 + a) / (1 - a) exactly.
    g = torch.Generator().manual_seed(0)
    a, chains, steps = 0.8, 32, 4000
    x = torch.zeros(chains, steps, dtype=torch.float64)
    noise = torch.randn(chains, steps, generator=g, dtype=torch.float64)
    x[:, 0] = noise[:, 0] / math.sqrt(1 - a * a)
    for t in range(1, steps):
        x[:, t] = a * x[:, t - 1] + noise[:, t]
    tau = integrated_autocorrelation_time(x).item()
    assert abs(tau - 9.0) < 0.6


@pytest.mark.parametrize("row", range(len(THETAS)))
@pytest.mark.parametrize("j", [0, 1, 3])
def test_thinned_chains_pass_ks_against_the_exact_distribution(samplers, row, j):
    mcmc, exact = samplers
    theta = torch.tensor([THETAS[row]], dtype=torch.float64)
    g = torch.Generator().manual_seed(10 * row + j)
    x = mcmc.chains(theta, 8, 3000, j, generator=g)[0]  # [C, K], kept states (already thinned by config.thin)
    tau = integrated_autocorrelation_time(torch.logit((x - x.min()) / (x.max() - x.min()) * 0.999 + 5e-4)).item()
    step = max(1, math.ceil(tau))
    independent = x[:, ::step].reshape(-1).numpy()
    reference = exact.sample(theta, 400_000, j, generator=g)[0].numpy()
    result = stats.ks_2samp(independent, reference)
    assert result.pvalue > 1e-3, (tau, len(independent), result)
    diag = mcmc.last_diagnostics
    assert 0.3 < diag["acceptance"].item() < 0.6
    assert diag["ess"].item() > 0.2 * x.numel()


def test_mcmc_gradient_matches_exact_gradient_within_its_error(samplers):
    """grad E_p[f] by the score function (self-normalised weights) vs the exact sampler's reparameterised one."""
    mcmc, exact = samplers
    theta0 = torch.tensor([THETAS[0]], dtype=torch.float64)
    functions = {
        "x": lambda x: x,
        "log x": torch.log,
        "sigmoid": lambda x: torch.sigmoid(12 * (x - 0.5)),
    }
    j, n, repeats = 1, 20_000, 24
    for name, f in functions.items():
        theta = theta0.clone().requires_grad_(True)
        x = exact.sample(theta, 400_000, j, generator=torch.Generator().manual_seed(1))
        (reference,) = torch.autograd.grad(f(x).mean(), theta)
        grads = []
        for r in range(repeats):
            theta = theta0.clone().requires_grad_(True)
            x, w = mcmc.sample_weighted(theta, n, j, generator=torch.Generator().manual_seed(100 + r))
            (grad,) = torch.autograd.grad((w * f(x)).sum() / w.sum(), theta)
            grads.append(grad[0])
        grads = torch.stack(grads)
        mean, err = grads.mean(0), grads.std(0) / math.sqrt(repeats)
        z = ((mean - reference[0]) / err).abs()
        # Every parameter of the observable's flavours (Nu, au, bu, Nd, ad, bd all enter sigma1).
        assert bool((z < 4).all()), (name, z.tolist(), mean.tolist(), reference[0].tolist())
        # Not a trivially noisy estimate: the error is small next to the gradient itself.
        assert float(err.norm() / reference.norm()) < 0.2, name


def test_mcmc_behind_the_detector_has_the_exact_folded_gradient(config):
    """grad int lambda_j f: MCMC true events through the detector (score weights, self-normalised per source) vs the
    exact sampler through the detector (reparameterised), both against the folded quadrature's own gradient."""
    from physics.config import DetectorConfig
    from physics.datasets import Experiment

    experiment = Experiment(config.model_copy(update={"detector": DetectorConfig()}))
    exact = experiment.observed_sampler()
    mcmc = experiment.observed_sampler(MCMCSampler(experiment.theory, config.datasets, MCMCConfig()))
    theta0 = torch.tensor([THETAS[1]], dtype=torch.float64)
    j, n, repeats = 0, 4000, 12
    # f = 1: the statistic is the folded expected count, whose gradient the quadrature gives exactly.
    theta = theta0.clone().requires_grad_(True)
    (reference,) = torch.autograd.grad(experiment.expected_counts(theta)[0, j], theta)
    for sampler in (exact, mcmc):
        grads = []
        for r in range(repeats):
            theta = theta0.clone().requires_grad_(True)
            _, w = sampler.sample_weighted(theta, n, j, generator=torch.Generator().manual_seed(200 + r))
            (grad,) = torch.autograd.grad(w.sum(), theta)
            grads.append(grad[0])
        grads = torch.stack(grads)
        mean, err = grads.mean(0), grads.std(0) / math.sqrt(repeats)
        z = ((mean - reference[0]) / err).abs()
        assert bool((z < 4).all()), (type(sampler.inner).__name__, z.tolist(), mean.tolist(), reference[0].tolist())
        assert float(err.norm() / reference.norm()) < 0.1


def test_weights_are_one_and_noise_reproduces_the_draw(samplers):
    mcmc, _ = samplers
    theta = torch.tensor(THETAS, dtype=torch.float64)
    noise = torch.rand(2, 500, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x1, w1 = mcmc.sample_weighted(theta, 500, 2, noise=noise)
    x2, _ = mcmc.sample_weighted(theta, 500, 2, noise=noise)
    assert torch.equal(x1, x2) and torch.allclose(w1, torch.ones_like(w1))
    assert x1.shape == (2, 500) and bool(((x1 >= 0.1) & (x1 <= 0.3)).all())
    with pytest.raises(ValueError, match="noise must have shape"):
        mcmc.sample_weighted(theta, 500, 2, noise=noise[:, :10])


def test_float32_runs_on_the_inputs_dtype(samplers):
    mcmc, _ = samplers
    x, w = mcmc.sample_weighted(torch.tensor(THETAS, dtype=torch.float32), 256, 3)
    assert x.dtype == w.dtype == torch.float32 and bool(torch.isfinite(x).all())


@pytest.mark.parametrize("field", ["warmup", "thin"])
def test_zero_warmup_or_thinning_is_refused_with_the_field(field):
    with pytest.raises(ValueError, match=rf"{field}: .*must be >= 1"):
        parse_config(MCMCConfig, {field: 0}, "card.yaml")


def test_closure_sampler_choice_reaches_the_gan():
    from inverse.gan.config import GANConfig
    from inverse.gan.sampler import build_sampler
    from physics.datasets import Experiment

    experiment = Experiment(PhysicsConfig())
    cfg = GANConfig.model_validate({"sampler": {"kind": "mcmc", "mcmc": {"thin": 2}}})
    sampler = build_sampler(cfg.sampler, experiment)
    assert isinstance(sampler, MCMCSampler) and sampler.config.thin == 2
    with pytest.raises(ValueError, match="path: only for a surrogate"):
        GANConfig.model_validate({"sampler": {"kind": "mcmc", "path": "x.pt"}})
    assert np.isfinite(float(sampler.sample(experiment.theory.truth_tensor(), 64, 0).sum()))
