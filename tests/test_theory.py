import numpy as np
import pytest
import torch

from physics.theory import Theory


def test_pdfs_and_observables_match_the_formulas(config):
    theory = Theory(config)
    rng = np.random.default_rng(0)
    theta = rng.uniform(config.low, config.high, size=(5, 6))
    x = rng.uniform(0.1, 1.0, size=(5, 7))
    th, xt = torch.tensor(theta), torch.tensor(x)
    u = theta[:, [0]] * x ** theta[:, [1]] * (1 - x) ** theta[:, [2]]
    d = theta[:, [3]] * x ** theta[:, [4]] * (1 - x) ** theta[:, [5]]
    np.testing.assert_allclose(theory.pdf(th, xt, "u").numpy(), u, rtol=1e-13)
    np.testing.assert_allclose(theory.pdf(th, xt, "d").numpy(), d, rtol=1e-13)
    np.testing.assert_allclose(theory.observable(th, xt, "sigma1").numpy(), 4 * u + d, rtol=1e-13)
    np.testing.assert_allclose(theory.observable(th, xt, "sigma2").numpy(), 4 * d + u, rtol=1e-13)


def test_batched_shapes_follow_dtype_and_device(config):
    theory = Theory(config)
    theta = torch.tensor([config.truth] * 3, dtype=torch.float32)
    out = theory.observable(theta, torch.linspace(0.1, 0.9, 11), "sigma1")
    assert out.shape == (3, 11) and out.dtype == torch.float32 and out.device == theta.device


def test_x_equal_one_with_b_zero_is_finite(config):
    theory = Theory(config)
    theta = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0, 2.0]], dtype=torch.float64, requires_grad=True)
    value = theory.observable(theta, torch.tensor([1.0], dtype=torch.float64), "sigma1")
    assert value.item() == pytest.approx(4.0)
    (grad,) = torch.autograd.grad(value.sum(), theta)
    assert torch.isfinite(grad[:, :2]).all()


def test_bad_theta_shape_and_names(config):
    theory = Theory(config)
    with pytest.raises(ValueError, match="shape"):
        theory.observable(torch.zeros(2, 5), torch.ones(3) * 0.5, "sigma1")
    with pytest.raises(ValueError, match="unknown observable"):
        theory.terms(torch.zeros(1, 6), "sigma3")
    with pytest.raises(ValueError, match="unknown flavour"):
        theory.pdf(torch.zeros(1, 6), torch.ones(3) * 0.5, "s")
