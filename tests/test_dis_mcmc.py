"""The DIS MCMC sampler: its events against the exact tabulated density (binned chi2 corrected by the measured
autocorrelation, marginal KS after thinning), its score-function gradients against finite differences of the exact
expectations, reproducibility, dtypes and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch import Tensor

from physics.dis import DISConfig, DISExperiment, DISSampler
from physics.dis.mcmc import DISMCMCSampler
from physics.dis.table import WindowGrid
from physics.mcmc import integrated_autocorrelation_time

OTHER = [-0.2, 2.5, 0.16, -1.05, -0.6]  # inside the default prior box, away from the truth


@pytest.fixture(scope="module")
def experiment() -> DISExperiment:
    return DISExperiment(DISConfig())


@pytest.fixture(scope="module")
def sampler(experiment: DISExperiment) -> DISMCMCSampler:
    return DISMCMCSampler(experiment)


def _thetas(experiment: DISExperiment, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.tensor([experiment.config.truth, OTHER], dtype=dtype)


def _block_probabilities(grid: WindowGrid, values: Tensor, block: int) -> tuple[Tensor, Tensor, Tensor]:
    """Exact probabilities of blocks of block x block table cells [B, bins], and the blocks' u and w edges."""
    du = (grid.u[1:] - grid.u[:-1])[:, None]
    cells = du / grid.cols * (values[:, :-1, :-1] + values[:, :-1, 1:] + values[:, 1:, :-1] + values[:, 1:, 1:]) / 4
    prefix = torch.nn.functional.pad(cells.cumsum(1).cumsum(2), (1, 0, 1, 0))
    ri = torch.tensor(sorted({*range(0, cells.shape[1], block), cells.shape[1]}))
    ci = torch.tensor(sorted({*range(0, cells.shape[2], block), cells.shape[2]}))
    corner = prefix[:, ri][:, :, ci]
    blocks = corner[:, 1:, 1:] - corner[:, :-1, 1:] - corner[:, 1:, :-1] + corner[:, :-1, :-1]
    blocks = blocks.reshape(values.shape[0], -1)
    return blocks / blocks.sum(-1, keepdim=True), grid.u[ri].contiguous(), grid.w[ci].contiguous()


def _bin_of(u: Tensor, w: Tensor, u_edges: Tensor, w_edges: Tensor) -> Tensor:
    iu = (torch.searchsorted(u_edges, u.contiguous(), right=True) - 1).clamp(0, len(u_edges) - 2)
    iw = (torch.searchsorted(w_edges, w.contiguous(), right=True) - 1).clamp(0, len(w_edges) - 2)
    return iu * (len(w_edges) - 1) + iw


@pytest.mark.parametrize("j", [0, 3])
def test_events_follow_the_exact_density(experiment, sampler, j):
    """Binned chi2 in (u, w) against the table's exact block integrals, both marginals' KS against exact events.

    The chains are independent, so Var(N_b) = C Var(n_cb) for the per-chain counts n_cb, which would be
    K p_b (1 - p_b) for independent states: their measured ratio f is the variance inflation of the bin counts by
    the autocorrelation within a chain, and X^2 / f is then close to chi2(dof) (over 12 seeds of window 0, the
    mean X^2 / (f dof) was 1.02, and 1.05 with one state per chain, where f = 1 by construction).
    """
    theta, grid = _thetas(experiment), experiment.grids[j]
    per_chain, n = sampler.config.samples_per_chain, 16_000
    n_chains = n // per_chain
    events = sampler.sample(theta, n, j, generator=torch.Generator().manual_seed(10 + j))
    diag = sampler.last_diagnostics
    assert ((diag["acceptance"] - sampler.config.target_acceptance).abs() < 0.05).all(), diag
    assert (diag["ess"] > 0.25 * n).all(), diag
    u, w = grid.to_uw(events[..., 0], events[..., 1])
    probs, u_edges, w_edges = _block_probabilities(grid, experiment.vertex_values(theta, only=j)[0], 16)
    exact = DISSampler(experiment)
    for r in range(theta.shape[0]):
        # Event i is state i // C of chain i % C, so [K, C] -> [C, K] gives each chain's states in order.
        bins = _bin_of(u[r], w[r], u_edges, w_edges).reshape(per_chain, n_chains).T
        per = torch.nn.functional.one_hot(bins, probs.shape[1]).sum(1).double()  # [C, bins]
        counts, expected = per.sum(0), n * probs[r]
        f = float(per.var(0).sum() / (per_chain * probs[r] * (1 - probs[r])).sum())
        small = expected < 5  # cut corners of a window: pooled into one bin
        x2 = ((counts - expected)[~small] ** 2 / expected[~small]).sum()
        dof = int((~small).sum()) - 1
        if small.any():
            x2 = x2 + (counts[small].sum() - expected[small].sum()) ** 2 / expected[small].sum()
            dof += 1
        assert 0.8 < f < 2.5, f  # the kept states decorrelate within a few
        assert stats.chi2.sf(float(x2) / f, dof) > 1e-3, (r, float(x2), f, dof)
        reference = exact.sample(theta[r : r + 1], 200_000, j, generator=torch.Generator().manual_seed(7))
        u_ref, w_ref = grid.to_uw(reference[0, :, 0], reference[0, :, 1])
        chains = {"u": (u[r], u_ref), "w": (w[r], w_ref)}
        tau = max(integrated_autocorrelation_time(c.reshape(per_chain, n_chains).T).item() for c, _ in chains.values())
        step = math.ceil(tau)
        for name, (c, ref) in chains.items():
            thinned = c.reshape(per_chain, n_chains)[::step].reshape(-1)
            result = stats.ks_2samp(thinned.numpy(), ref.numpy())
            assert result.pvalue > 1e-3, (r, name, tau, result)


def _exact_means(grid: WindowGrid, values: Tensor) -> Tensor:
    """E[u] and E[w] under the tabulated (bilinear) density, in closed form: [B, 2]."""
    du, dw = (grid.u[1:] - grid.u[:-1])[:, None], 1.0 / grid.cols
    u0, w0 = grid.u[:-1, None], grid.w[None, :-1]
    v00, v01, v10, v11 = values[:, :-1, :-1], values[:, :-1, 1:], values[:, 1:, :-1], values[:, 1:, 1:]
    mass = (du * dw * (v00 + v01 + v10 + v11) / 4).sum((1, 2))
    # int_0^1 (x0 + t h) ((1 - t) a + t b) dt = x0 (a + b) / 2 + h (a / 6 + b / 3), a and b the edge means.
    a, b = (v00 + v01) / 2, (v10 + v11) / 2
    fu = (du * dw * (u0 * (a + b) / 2 + du * (a / 6 + b / 3))).sum((1, 2))
    a, b = (v00 + v10) / 2, (v01 + v11) / 2
    fw = (du * dw * (w0 * (a + b) / 2 + dw * (a / 6 + b / 3))).sum((1, 2))
    return torch.stack([fu, fw], -1) / mass[:, None]


def test_score_gradient_matches_finite_differences(experiment, sampler):
    """grad of the self-normalised weighted means of u = ln Q^2 and w vs central differences of their exact means."""
    j, n, repeats = 2, 20_000, 12
    grid = experiment.grids[j]
    theta0 = experiment.truth_tensor()
    low, high = experiment.bounds()
    h = 1e-4 * (high - low)
    reference = torch.zeros(2, theta0.shape[1], dtype=torch.float64)
    for k in range(theta0.shape[1]):
        shift = torch.zeros_like(theta0)
        shift[0, k] = h[k]
        up = _exact_means(grid, experiment.vertex_values(theta0 + shift, only=j)[0])
        down = _exact_means(grid, experiment.vertex_values(theta0 - shift, only=j)[0])
        reference[:, k] = ((up - down) / (2 * h[k]))[0]
    grads = []
    for r in range(repeats):
        theta = theta0.clone().requires_grad_(True)
        events, weights = sampler.sample_weighted(theta, n, j, generator=torch.Generator().manual_seed(100 + r))
        u, w = grid.to_uw(events[0, :, 0], events[0, :, 1])
        means = torch.stack([(weights[0] * f).sum() / weights[0].sum() for f in (u, w)])
        grads.append(torch.stack([torch.autograd.grad(m, theta, retain_graph=True)[0][0] for m in means]))
    grads = torch.stack(grads)  # [repeats, 2, D]
    mean, err = grads.mean(0), grads.std(0) / math.sqrt(repeats)
    z = (mean - reference) / err
    # 10 comparisons of t(11) variates: |t| > 4.5 has probability ~1e-3 each.
    assert bool((z.abs() < 4.5).all()), (z.tolist(), mean.tolist(), reference.tolist())
    # Power: the parameters with a sizeable effect here (a_uv, A_S, a_S) are measured to a few per cent.
    sizeable = [experiment.parameter_names.index(p) for p in ("a_uv", "A_S", "a_S")]
    assert bool((err[:, sizeable] < 0.05 * reference[:, sizeable].abs()).all()), (err.tolist(), reference.tolist())


def test_seed_and_noise_reproduce_a_draw_and_float32_stays_float32(experiment, sampler):
    theta = _thetas(experiment)
    draws = [sampler.sample_weighted(theta, 300, 1, generator=torch.Generator().manual_seed(s)) for s in (5, 5, 6)]
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    assert not torch.equal(draws[0][0], draws[2][0])
    noise = torch.rand(2, 300, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a, b = sampler.sample(theta, 300, 1, noise=noise), sampler.sample(theta, 300, 1, noise=noise)
    assert torch.equal(a, b) and a.shape == (2, 300, 2) and bool(experiment.contains(a, 1).all())
    assert not torch.equal(a, sampler.sample(theta, 300, 1, noise=noise.flip(1)))

    theta32 = _thetas(experiment, torch.float32).requires_grad_(True)
    events, weights = sampler.sample_weighted(theta32, 256, "Q2_40_160")
    assert events.dtype == weights.dtype == torch.float32 and events.shape == (2, 256, 2)
    assert bool(torch.isfinite(events).all()) and bool(experiment.contains(events.double(), 2).all())
    assert torch.allclose(weights, torch.ones_like(weights)) and weights.requires_grad
    assert not events.requires_grad
    assert all(v.dtype == torch.float32 and v.shape == (2,) for v in sampler.last_diagnostics.values())
    (grad,) = torch.autograd.grad(weights.sum(), theta32)
    assert grad.dtype == torch.float32 and bool(torch.isfinite(grad).all()) and bool((grad != 0).any())


def test_bad_input_is_refused_with_the_argument(experiment, sampler):
    theta = _thetas(experiment)
    with pytest.raises(ValueError, match="unknown dataset 'Q2_1_2'"):
        sampler.sample(theta, 10, "Q2_1_2")
    with pytest.raises(ValueError, match="dataset index 7 out of range"):
        sampler.sample_weighted(theta, 10, 7)
    for n in (0, -3, 2.5):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            sampler.sample_weighted(theta, n, 0)
    with pytest.raises(ValueError, match=r"theta must have shape \[B, 5\]"):
        sampler.sample(theta[0], 10, 0)
    with pytest.raises(ValueError, match="noise must have shape"):
        sampler.sample(theta, 10, 0, noise=torch.rand(2, 10))
    with pytest.raises(ValueError, match="starts must have shape"):
        sampler.chains(theta, 4, 4, 0, starts=torch.rand(2, 3, 2))
