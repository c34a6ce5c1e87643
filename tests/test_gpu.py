"""The forward model on a CUDA device gives the CPU's numbers (run with `pytest -m gpu` where a GPU exists)."""

import pytest
import torch

from physics.likelihood import ExtendedLikelihood, fisher_information

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_sampler_likelihood_and_fisher_on_gpu_match_cpu(experiment_b, data_b):
    sampler = experiment_b.sampler()
    theta_cpu = experiment_b.theory.truth_tensor().repeat(4, 1)
    u = torch.rand(4, 1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theta_gpu = theta_cpu.cuda().requires_grad_()
    x_gpu = sampler.sample(theta_gpu, 1000, 1, noise=u.cuda())
    assert x_gpu.device.type == "cuda"
    torch.testing.assert_close(x_gpu.cpu(), sampler.sample(theta_cpu, 1000, 1, noise=u), rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(x_gpu.sum(), theta_gpu)
    assert torch.isfinite(grad).all()
    like_gpu = ExtendedLikelihood(experiment_b, data_b, device="cuda")
    like_cpu = ExtendedLikelihood(experiment_b, data_b)
    torch.testing.assert_close(like_gpu(theta_cpu.cuda()).cpu(), like_cpu(theta_cpu), rtol=1e-12, atol=1e-6)
    torch.testing.assert_close(
        fisher_information(experiment_b, theta_cpu.cuda()).cpu(), fisher_information(experiment_b, theta_cpu)
    )


def test_gan_trains_on_gpu_and_its_losses_match_cpu_at_the_start(experiment_b, data_b):
    from inverse.gan.config import GANConfig
    from inverse.gan.model import InverseGAN
    from inverse.gan.training import fit_gan

    def config(accelerator: str) -> GANConfig:
        training = {"replicas": 4, "steps": 3, "events_per_param": 256, "progress": False}
        return GANConfig.model_validate({"training": {**training, "accelerator": accelerator}})

    model = InverseGAN(config("gpu"), experiment_b, data_b)
    cpu = InverseGAN(config("cpu"), experiment_b, data_b)
    fit_gan(model)
    assert model.generator.offset.device.type == "cuda"
    assert torch.isfinite(model.theta_history).all() and torch.isfinite(model.loss_history).all()
    # Same initial weights and data; the random streams differ between devices, so compare the first
    # discriminator loss (log 4 per dataset at initialization, up to the networks' initial outputs) loosely.
    fit_gan(cpu)
    torch.testing.assert_close(model.loss_history[0, :, 1].cpu(), cpu.loss_history[0, :, 1], rtol=0.05, atol=0.05)
