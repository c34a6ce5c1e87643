import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from physics.config import QuadratureConfig
from physics.quadrature import integrate_terms, logit_rule
from physics.sampling import InverseCDFSampler
from physics.theory import Theory

EDGE_THETAS = [
    [2.1875, -0.5, 3.0, 1.09375, -0.5, 4.0],
    [3.0, 1.0, 5.0, 3.0, 1.0, 5.0],
    [0.0, -1.0, 0.0, 0.0, -1.0, 0.0],
    [0.0, -1.0, 0.0, 3.0, 1.0, 5.0],
    [1e-3, -1.0, 0.0, 2.0, 1.0, 5.0],
    [2.0, 0.9, 0.01, 1.0, -0.9, 4.9],
]


@pytest.fixture(scope="module")
def sampler(config):
    return InverseCDFSampler(Theory(config), config.datasets)


def exact_cdf(sampler, theta_row, j):
    """F(x) of dataset j by independent quadrature of [x_min, x] (a new rule per point)."""
    ds = sampler.datasets[j]
    terms = sampler.theory.terms(torch.tensor([theta_row], dtype=torch.float64), ds.observable).normalized()
    total = integrate_terms(terms, logit_rule(ds.x_min, ds.x_max)).item()

    def cdf(x):
        x = np.atleast_1d(x)
        return np.array(
            [
                0.0
                if xi <= ds.x_min
                else integrate_terms(terms, logit_rule(ds.x_min, min(float(xi), ds.x_max))).item() / total
                for xi in x
            ]
        )

    return cdf


@pytest.mark.parametrize("j", range(4))
def test_inversion_is_exact(sampler, j):
    theta = torch.tensor(EDGE_THETAS, dtype=torch.float64)
    u = torch.rand(len(theta), 200, generator=torch.Generator().manual_seed(j), dtype=torch.float64)
    x = sampler.sample(theta, 200, j, noise=u)
    for b, row in enumerate(EDGE_THETAS):
        cdf = exact_cdf(sampler, row, j)
        picks = np.arange(0, 200, 10)
        np.testing.assert_allclose(cdf(x[b, picks].numpy()), u[b, picks].numpy(), atol=1e-9)


@pytest.mark.parametrize(("j", "row"), [(1, 0), (3, 0), (0, 1), (1, 1), (3, 3), (2, 4), (1, 5)])
def test_samples_pass_ks_against_exact_cdf(sampler, j, row):
    theta = torch.tensor([EDGE_THETAS[row]], dtype=torch.float64)
    x = sampler.sample(theta, 20_000, j, generator=torch.Generator().manual_seed(10 * j + row))[0].numpy()
    # Exact CDF on a fine grid, interpolated: grid error < 1e-6, far below the KS resolution 1/sqrt(n).
    ds = sampler.datasets[j]
    grid = np.unique(
        np.concatenate([np.geomspace(ds.x_min, ds.x_max, 400), 1 - np.geomspace(1e-12, 1 - ds.x_min, 300)])
    )
    grid = grid[(grid >= ds.x_min) & (grid <= ds.x_max)]
    values = exact_cdf(sampler, EDGE_THETAS[row], j)(grid)
    result = stats.kstest(x, lambda v: np.interp(v, grid, values))
    # Seeded, so deterministic; a correct sampler fails this with probability 1e-3 over seeds.
    assert result.pvalue > 1e-3, result


def test_gradients_match_finite_differences_with_common_random_numbers(sampler, config):
    # Finite differences need x to machine precision (the default stops at |F(x) - u| ~ 1e-11, which
    # divided by eps would swamp them); autograd is checked on the default sampler.
    precise = InverseCDFSampler(Theory(config), config.datasets, QuadratureConfig(newton_steps=2))
    rng = np.random.default_rng(4)
    low = np.array(sampler.theory.low)
    high = np.array(sampler.theory.high)
    thetas = np.vstack([EDGE_THETAS[0], rng.uniform(low + 0.05 * (high - low), high - 0.05 * (high - low), (4, 6))])
    # eps balances truncation (eps^2 ~ 1e-10) against x's rounding where the density is small (~1e-13 / eps).
    eps = 1e-5
    for j in range(4):
        u = torch.rand(len(thetas), 300, generator=torch.Generator().manual_seed(j), dtype=torch.float64)
        theta = torch.tensor(thetas, requires_grad=True)
        x = sampler.sample(theta, 300, j, noise=u)
        jac = torch.stack(
            [torch.autograd.grad(x[:, e].sum(), theta, retain_graph=True)[0] for e in range(0, 300, 15)], 1
        )
        fd = torch.zeros_like(jac)
        for k in range(6):
            step = torch.zeros(6, dtype=torch.float64)
            step[k] = eps
            xp = precise.sample(torch.tensor(thetas) + step, 300, j, noise=u)[:, ::15]
            xm = precise.sample(torch.tensor(thetas) - step, 300, j, noise=u)[:, ::15]
            fd[..., k] = (xp - xm) / (2 * eps)
        assert torch.allclose(jac, fd, rtol=1e-6, atol=1e-8 * fd.abs().max().item()), (
            j,
            (jac - fd).abs().max(),
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_finite_everywhere_in_the_box_including_corners(sampler, config, dtype):
    corners = np.array(list(itertools.product(*zip(config.low, config.high))), dtype=float)
    theta = torch.tensor(np.vstack([corners, EDGE_THETAS]), dtype=dtype, requires_grad=True)
    for j in range(4):
        x = sampler.sample(theta, 256, j, generator=torch.Generator().manual_seed(j))
        assert x.dtype == dtype and torch.isfinite(x).all()
        lo, hi = sampler.datasets[j].x_min, sampler.datasets[j].x_max
        assert (x >= lo).all() and (x <= hi).all()
        (grad,) = torch.autograd.grad((x * torch.randn_like(x)).sum(), theta)
        assert torch.isfinite(grad).all()


def test_one_newton_step_reaches_machine_precision(config):
    sampler = InverseCDFSampler(Theory(config), config.datasets, QuadratureConfig(newton_steps=1))
    u = torch.rand(1, 100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = sampler.sample(torch.tensor([EDGE_THETAS[5]], dtype=torch.float64), 100, 1, noise=u)
    np.testing.assert_allclose(exact_cdf(sampler, EDGE_THETAS[5], 1)(x[0].numpy()), u[0].numpy(), atol=1e-13)


def test_log_prob_is_normalized_and_matches_formula(sampler, config):
    theta = torch.tensor(EDGE_THETAS[:2], dtype=torch.float64)
    for j, ds in enumerate(config.datasets):
        rule = logit_rule(ds.x_min, ds.x_max)
        rt = rule.tensors(torch.float64)
        x_nodes = torch.exp(rt.log_x)
        dens = torch.exp(sampler.log_prob(x_nodes, theta, j))
        np.testing.assert_allclose((dens * rt.dx_weights).sum(-1).numpy(), 1.0, rtol=1e-9)
    out = sampler.log_prob(torch.tensor([0.05, 0.5]), theta.float(), "sigma1_low")
    assert out[0, 0] == -torch.inf and out[0, 1] == -torch.inf


def test_bad_arguments(sampler):
    theta = torch.tensor([EDGE_THETAS[0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown dataset"):
        sampler.sample(theta, 10, "sigma3")
    with pytest.raises(ValueError, match="noise must have shape"):
        sampler.sample(theta, 10, 0, noise=torch.rand(2, 10))
    with pytest.raises(ValueError, match="event counts"):
        sampler.sample_all(theta, [10, 10])
