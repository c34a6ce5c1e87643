"""Logistic-regression discriminators on a polynomial basis and their Newton steps (inverse.gan.newton).

The basis: every monomial up to the degree, whitened on the data, lower degrees for sparse datasets. The steps: the
closed-form gradient equals autograd's gradient of the model's own discriminator loss, a full step never increases
that loss (the curvature bound), repeated steps reach its minimum, and data-parallel shares average to one process.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from inverse.gan.config import GANConfig
from inverse.gan.model import InverseGAN
from inverse.gan.models import basis_degree, basis_size, monomials, whitening
from inverse.gan.newton import LogisticNewton, logistic_terms
from inverse.gan.training import fit_gan


def newton_config(**training) -> GANConfig:
    return GANConfig.model_validate(
        {
            "discriminator": {"depth": 0, "degree": 3},
            "optimizer_d": {"name": "newton"},
            "training": {"replicas": 3, "steps": 4, "events_per_param": 96, "progress": False, "dtype": "float64",
                         **training},
        }
    )  # fmt: skip


def test_monomials_are_every_product_up_to_the_degree_in_order():
    z = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for degree in (1, 2, 4):
        combos = [c for d in range(1, degree + 1) for c in itertools.combinations_with_replacement(range(3), d)]
        expected = torch.stack([z[:, list(c)].prod(-1) for c in combos], -1)
        torch.testing.assert_close(monomials(z, degree), expected)
        assert basis_size(3, degree) == len(combos) == math.comb(3 + degree, 3) - 1


def test_sparse_datasets_get_a_lower_degree():
    # 3 features: 3, 9 and 19 monomials up to degrees 1, 2, 3; 50 events per function.
    assert [basis_degree(n, 3, 3, 50) for n in (10, 449, 450, 949, 950, 10**6)] == [1, 1, 2, 2, 3, 3]


def test_whitening_makes_the_used_basis_orthonormal_and_drops_flat_directions():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4000, 3, dtype=torch.float64, generator=g)
    # A fourth column almost equal to the first: a direction with 1e-8 of the variance, nearly constant on the data.
    basis = torch.cat([x @ torch.randn(3, 3, dtype=torch.float64, generator=g), x[:, :1] * 2.0 + 1e-4 * x[:, 1:2],
                       x[:, 2:] ** 2], -1)  # fmt: skip
    mean, projection = whitening(basis, cutoff=1e-6, used=4)
    h = (basis - mean) @ projection
    cov = h.T @ h / (len(h) - 1)
    kept = torch.diagonal(cov) > 0.5
    assert int(kept.sum()) == 3  # the flat direction and the unused fifth function are dropped
    torch.testing.assert_close(cov[kept][:, kept], torch.eye(3, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(h.mean(0), torch.zeros(5, dtype=torch.float64), atol=1e-10, rtol=0)
    assert bool((projection[4] == 0).all()) and bool((projection[:, ~kept] == 0).all())


def test_closed_form_gradient_is_autograd_of_the_discriminator_loss(experiment_b, data_b):
    model = InverseGAN(newton_config(), experiment_b, data_b, dataset_mask=torch.tensor([1.0, 1.0, 0.0, 1.0]))
    with torch.no_grad():  # away from the zero start, so that every term of the gradient matters
        for p in model.discriminators.parameters():
            p.copy_(0.3 * torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(p.numel())))
    replicas = slice(0, 3)
    events = model.simulate_detached(replicas)
    loss, terms = logistic_terms(model, events, replicas)
    model.zero_grad()
    reference = model.discriminator_loss(events, replicas)
    reference.sum().backward()
    torch.testing.assert_close(loss, reference)
    for j, (grad, bound) in enumerate(terms):
        layer = model.discriminators.nets[j].layers[0]
        expected = torch.cat([layer.weight.grad[:, :, 0], layer.bias.grad[:, :, 0]], -1)
        torch.testing.assert_close(grad, expected)
        if j == 2:  # the masked dataset takes no step
            assert bool((bound == 0).all())
        else:
            assert bool((torch.linalg.eigvalsh(bound)[:, -1] > 0).all())


def test_full_steps_never_raise_the_loss_and_reach_its_minimum(experiment_b, data_b):
    model = InverseGAN(newton_config(events_per_param=512), experiment_b, data_b)
    replicas = slice(0, 3)
    with torch.no_grad():  # theta away from the data, so that the samples differ and the optimum is not zero
        model.generator.offset.add_(1.0)
    events = model.simulate_detached(replicas)
    step = LogisticNewton(model.discriminators, lr=1.0, ridge=1e-8)
    losses, norms = [], []
    for _ in range(60):
        loss, terms = logistic_terms(model, events, replicas)
        losses.append(loss)
        norms.append(max(float(g.norm(dim=-1).max()) for g, _ in terms))
        step.add(replicas, terms)
        step.step()
    losses = torch.stack(losses)
    assert bool((losses[1:] <= losses[:-1] + 1e-12).all())
    assert float(losses[0].sum() - losses[-1].sum()) > 0.05  # it did move
    assert norms[-1] < 1e-6 * norms[0], norms[::10]


@pytest.mark.parametrize("world", [2, 3])
def test_process_shares_average_to_the_one_process_terms(experiment_b, data_b, world):
    cfg = newton_config()

    def terms_of(rank: int, world: int) -> list[torch.Tensor]:
        model = InverseGAN(cfg, experiment_b, data_b)
        model.set_shard(rank, world)
        loss, terms = logistic_terms(model, model.simulate_detached(slice(0, 3)), slice(0, 3))
        return [loss] + [t for pair in terms for t in pair]

    one = terms_of(0, 1)
    shares = [terms_of(r, world) for r in range(world)]
    for k, whole in enumerate(one):
        torch.testing.assert_close(torch.stack([s[k] for s in shares]).mean(0), whole, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"optimizer_g": {"name": "newton"}}, "optimizer_g.name: newton applies to logistic-regression"),
        ({"optimizer_d": {"name": "newton"}}, "set discriminator.depth: 0"),
        ({"optimizer_d": {"name": "newton"}, "discriminator": {"depth": 0, "mode": "single"}}, "mode: per_dataset"),
        (
            {"optimizer_d": {"name": "newton"}, "discriminator": {"depth": 0}, "loss": {"kind": "lsgan"}},
            "logistic discriminator loss",
        ),
        ({"discriminator": {"degree": 7}}, "degree"),
        ({"discriminator": {"basis_cutoff": 0.0}}, "basis_cutoff"),
    ],
)
def test_bad_newton_settings_are_named(sections, message):
    with pytest.raises(ValueError, match=message):
        GANConfig.model_validate(sections)


def test_a_fit_with_newton_discriminators_reaches_the_mle_from_two_sd_away(experiment_b, data_b):
    from inverse.gan.diagnostics import displaced_theta
    from physics.likelihood import ExtendedLikelihood, fit_mle
    from physics.posterior import laplace_approximation

    like = ExtendedLikelihood(experiment_b, data_b)
    centre, cov = (np.asarray(v) for v in laplace_approximation(like, mle=fit_mle(like, seed=0)))
    low, high = np.array(experiment_b.theory.low), np.array(experiment_b.theory.high)
    starts = torch.tensor(np.stack([displaced_theta(centre, cov, 2.0, low, high, seed=s) for s in (0, 1)]))
    model = InverseGAN(newton_config(replicas=2, steps=80, events_per_param=2048, bootstrap=False, uniforms="sobol"),
                       experiment_b, data_b)  # fmt: skip
    with torch.no_grad():
        model.generator.offset.copy_(model.generator.from_box(starts)[:, None, :])
    fit_gan(model, progress=False)
    d = model.estimates().double().numpy() - centre
    distance = np.sqrt(np.einsum("ri,ij,rj->r", d, np.linalg.inv(cov), d))  # Mahalanobis, in posterior sd
    assert np.all(distance < 0.2), distance  # 0.04-0.06 measured; 1024 events per dataset: up to 0.32
