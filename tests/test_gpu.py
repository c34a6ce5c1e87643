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
