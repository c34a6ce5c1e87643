"""Randomized quasi-Monte Carlo uniforms: uniform marginals, unbiased sums, far smaller variance than independent
uniforms on a smooth integrand, and the GAN's use of them (refused for MCMC samplers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from physics.quasirandom import rotated, sobol_points


def test_every_rotated_point_is_uniform_and_each_set_keeps_its_spacing():
    base = sobol_points(64, 3)
    u = rotated(base, 4000, torch.Generator().manual_seed(0))
    assert u.shape == (4000, 64, 3) and u.dtype == torch.float64
    assert u.min() >= 0 and u.max() < 1
    for k in (0, 17, 63):  # one point of the set, over the randomizations: uniform in every coordinate
        for i in range(3):
            assert stats.kstest(u[:, k, i].numpy(), "uniform").pvalue > 1e-3
    # Within one randomization the first coordinates are a shifted 64-point grid: one point in each 1/64 cell.
    cells = torch.floor(u[:, :, 0] * 64).long().sort(-1).values
    assert torch.equal(cells, torch.arange(64).expand(4000, -1))


def test_sums_are_unbiased_with_a_fraction_of_the_independent_variance():
    def f(u):  # smooth, with the exact integral (e - 1) sin(1) over the unit square
        return torch.exp(u[..., 0]) * torch.cos(u[..., 1])

    exact = (math.e - 1) * math.sin(1)
    g = torch.Generator().manual_seed(1)
    n, reps = 1024, 400
    qmc = f(rotated(sobol_points(n, 2), reps, g)).mean(-1)
    iid = f(torch.rand(reps, n, 2, generator=g, dtype=torch.float64)).mean(-1)
    z = (qmc.mean() - exact) / (qmc.std() / math.sqrt(reps))
    assert abs(z) < 4, z
    # For a smooth integrand the rotated Sobol error falls nearly like 1/n instead of 1/sqrt(n).
    assert qmc.var() < 1e-2 * iid.var(), (qmc.var(), iid.var())


def test_bad_point_sets_are_refused():
    with pytest.raises(ValueError, match="n must"):
        sobol_points(0, 2)
    with pytest.raises(ValueError, match="dim must"):
        sobol_points(8, 0)


def test_the_gan_refuses_sobol_uniforms_for_an_mcmc_sampler(experiment_b, data_b):
    from inverse.gan.config import GANConfig, SamplerConfig
    from inverse.gan.model import InverseGAN
    from inverse.gan.sampler import build_sampler

    cfg = GANConfig.model_validate({"training": {"replicas": 1, "uniforms": "sobol", "progress": False}})
    mcmc = build_sampler(SamplerConfig(kind="mcmc"), experiment_b)
    with pytest.raises(ValueError, match="uniforms: sobol"):
        InverseGAN(cfg, experiment_b, data_b, sampler=mcmc)


def test_sobol_uniforms_lower_the_generator_gradient_noise(experiment_b, data_b):
    """The same model's generator gradient over fresh draws: its spread shrinks with quasi-random uniforms, and
    both kinds of uniforms agree on its mean."""
    from inverse.gan.config import GANConfig
    from inverse.gan.model import InverseGAN

    grads = {}
    for kind in ("random", "sobol"):
        training = {"replicas": 1, "events_per_param": 1024, "uniforms": kind, "progress": False, "dtype": "float64"}
        model = InverseGAN(GANConfig.model_validate({"training": training}), experiment_b, data_b)
        draws = []
        for _ in range(40):
            model.generator.zero_grad()
            model.generator_loss(slice(0, 1))[0].sum().backward()
            draws.append(model.generator.offset.grad[0, 0].clone())
        grads[kind] = torch.stack(draws).numpy()
    spread = {k: v.std(0) for k, v in grads.items()}
    assert np.all(spread["sobol"] < 0.2 * spread["random"]), spread
    se = np.sqrt(spread["random"] ** 2 / 40 + spread["sobol"] ** 2 / 40)
    assert np.all(np.abs(grads["sobol"].mean(0) - grads["random"].mean(0)) < 4 * se)


def test_a_runcard_asking_sobol_uniforms_of_mcmc_events_is_refused_by_name():
    from inverse.gan.config import GANConfig

    with pytest.raises(ValueError, match=r"training\.uniforms: sobol"):
        GANConfig.model_validate({"sampler": {"kind": "mcmc"}, "training": {"uniforms": "sobol"}})
