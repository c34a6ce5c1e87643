"""The GAN model: shapes, gradients through generator -> sampler -> discriminators (against finite differences),
and the vectorized replicas against separately built models."""

from __future__ import annotations

import pytest
import torch

from inverse.gan.config import GANConfig
from inverse.gan.model import InverseGAN
from inverse.gan.training import fit_gan
from inverse.stacked import StackedMLP, replica_seed


def tiny(**training) -> GANConfig:
    return GANConfig.model_validate(
        {
            "discriminator": {"depth": 1, "width": 8},
            "training": {
                "replicas": 3,
                "steps": 4,
                "events_per_param": 64,
                "data_batch": None,
                "progress": False,
                "dtype": "float64",
                **training,
            },
        }
    )


def with_(config: GANConfig, **sections) -> GANConfig:
    data = config.model_dump()
    for name, update in sections.items():
        data[name] = {**data[name], **update}
    return GANConfig.model_validate(data)


@pytest.mark.parametrize(
    "sections",
    [
        {},
        {
            "generator": {"kind": "mlp", "depth": 1, "width": 8},
            "optimizer_g": {"name": "adam"},
            "training": {"params_per_step": 5},
        },
        {"discriminator": {"mode": "single", "set_size": 4}, "loss": {"kind": "lsgan"}},
        {"loss": {"kind": "wgan_gp"}, "training": {"data_batch": 32}},
        {"loss": {"kind": "bce"}, "discriminator": {"features": "x"}},
    ],
)
def test_shapes_and_gradient_flow(experiment_b, data_b, sections):
    config = with_(tiny(), **sections)
    model = InverseGAN(config, experiment_b, data_b)
    t = config.training
    loss, theta, events = model.generator_loss(slice(0, 2))
    assert loss.shape == (2,) and theta.shape == (2, t.params_per_step, 6)
    assert [e.x.shape for e in events] == [(2, t.params_per_step, t.events_per_param)] * 4
    assert all(e.x.dtype == torch.float64 and e.w is None for e in events)
    low, high = model.generator.low, model.generator.high
    assert torch.all((theta > low) & (theta < high))
    loss.sum().backward()
    g_grads = [p.grad for p in model.generator.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in g_grads)
    assert g_grads[0][:2].abs().sum() > 0 and g_grads[0][2].abs().sum() == 0  # replica 2 was not in the slice
    model.zero_grad()
    d_loss = model.discriminator_loss(events, slice(0, 2))
    d_loss.sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.generator.parameters())
    assert all(torch.isfinite(p.grad).all() for p in model.discriminators.parameters())


def test_generator_gradient_matches_finite_differences(experiment_b, data_b):
    """d loss / d offset through the sampler's implicit-function gradient, with the random streams held fixed."""
    model = InverseGAN(with_(tiny(), loss={"kind": "bce"}), experiment_b, data_b)
    states = model.rng_state()

    def loss_at(offset: torch.Tensor) -> torch.Tensor:
        model.set_rng_state(states)
        with torch.no_grad():
            model.generator.offset.copy_(offset)
        return model.generator_loss(slice(0, 1))[0].sum()

    base = model.generator.offset.detach().clone()
    model.generator.zero_grad()
    loss_at(base).backward()
    grad = model.generator.offset.grad[0, 0].clone()
    h = 1e-5
    for i in range(6):
        step = torch.zeros_like(base)
        step[0, 0, i] = h
        fd = (loss_at(base + step) - loss_at(base - step)).item() / (2 * h)
        assert fd == pytest.approx(grad[i].item(), rel=1e-5, abs=1e-6 * grad.abs().max().item())


def test_stacked_replica_is_independent_of_the_others():
    together = StackedMLP([0, 1, 2], 2, 1, 2, 5, "silu", seed=7, stream="d")
    alone = StackedMLP([1], 2, 1, 2, 5, "silu", seed=7, stream="d")
    x = torch.randn(3, 11, 2)
    torch.testing.assert_close(together(x)[1], alone(x[1:2])[0], rtol=1e-6, atol=1e-7)
    assert replica_seed(7, 1, "d") != replica_seed(7, 2, "d") != replica_seed(8, 1, "d")


def test_vectorized_replicas_equal_separate_models(experiment_b, data_b):
    config = tiny(steps=5, replicas=3)
    together = InverseGAN(config, experiment_b, data_b)
    fit_gan(together)
    for r in range(3):
        alone = InverseGAN(config, experiment_b, data_b, replicas=[r])
        assert torch.equal(alone.weights(0)[0], together.weights(0)[r])
        fit_gan(alone)
        assert torch.allclose(alone.theta_history[:, 0], together.theta_history[:, r], rtol=1e-9, atol=1e-12)
        assert torch.allclose(alone.loss_history[:, 0], together.loss_history[:, r], rtol=1e-9, atol=1e-9)
    # ... and chunked evaluation is the same model too.
    chunked = InverseGAN(tiny(steps=5, replicas=3, replica_chunk=2), experiment_b, data_b)
    fit_gan(chunked)
    assert torch.allclose(chunked.theta_history, together.theta_history, rtol=1e-9, atol=1e-12)


def test_bad_inputs_are_named(experiment_b, data_b, config):
    with pytest.raises(ValueError, match="set_size"):
        GANConfig.model_validate({"discriminator": {"set_size": 3}, "training": {"events_per_param": 64}})
    with pytest.raises(ValueError, match="replicas"):
        InverseGAN(tiny(), experiment_b, data_b, replicas=[1, 1])
    from physics.config import PhysicsConfig
    from physics.datasets import Experiment
    from physics.pseudodata import generate_pseudodata

    scarce = PhysicsConfig.model_validate(
        {**config.model_dump(), "cases": {"T": {"sigma1": 0.01, "sigma2": 0.01}}, "case": "T"}
    )
    exp = Experiment(scarce)
    with pytest.raises(ValueError, match="zero events"):
        InverseGAN(tiny(), exp, generate_pseudodata(exp, seed=0))
