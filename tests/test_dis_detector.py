"""The DIS detector: folded intensities against an independent quadrature, folded counts against simulated
detector passes, the weighted reconstructed-event sampler, gradients, the binned view, the MLE and the GAN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physics.dis import DISConfig, DISExperiment, DISSampler
from physics.dis.binned import DISBinnedView
from physics.dis.folded import FoldedDISSampler
from physics.dis.likelihood import DISLikelihood, cramer_rao, fisher_information, fit_mle
from physics.dis.pseudodata import fold_events, generate_dis_events


@pytest.fixture(scope="module")
def experiment():
    return DISExperiment(DISConfig(detector={}))


def _flat(experiment, theta):
    return torch.cat([v.reshape(theta.shape[0], -1) for v in experiment.vertex_values(theta)], 1)


def _brute_intensity(experiment, a_r, b_r):
    """lambda_j per unit ln x_rec ln Q^2_rec by a fine trapezoid rule in each source table's own (u, w)."""
    det, values = experiment.detector, experiment.vertex_values(experiment.truth_tensor())
    total = 0.0
    for k, g in enumerate(experiment.grids):
        u0 = max(float(g.u[0]), b_r - det.reach * det.sd_q2)
        u1 = min(float(g.u[-1]), b_r + det.reach * det.sd_q2)
        if u1 <= u0:
            continue
        u = torch.linspace(u0, u1, 241, dtype=torch.float64)
        w = torch.linspace(0.0, 1.0, 2401, dtype=torch.float64)
        uu, ww = (v.reshape(-1) for v in torch.meshgrid(u, w, indexing="ij"))
        x, q2, _ = g.to_xq2(uu, ww)
        p = g.density(values[k], uu[None], ww[None])[0]
        f = p * det.efficiency(x, q2) * det.kernel(a_r - torch.log(x), det.sd_x) * det.kernel(b_r - uu, det.sd_q2)
        total += float(torch.trapezoid(torch.trapezoid(f.reshape(len(u), len(w)), w, dim=1), u))
    return total


def test_folded_intensity_matches_an_independent_quadrature_to_1e3(experiment):
    values = _flat(experiment, experiment.truth_tensor())[0]
    rng = np.random.default_rng(0)
    for j, g in enumerate(experiment.grids):
        # a point at the window's lower Q^2 edge (fed by two windows), one at its upper x cut, one inside
        for u, w in ((float(g.u[0]) + 0.01, 0.5), (float(g.u[-1]) - 0.3, 0.995), (None, None)):
            u = float(g.u[0] + (g.u[-1] - g.u[0]) * rng.uniform(0.2, 0.8)) if u is None else u
            w = rng.uniform(0.1, 0.9) if w is None else w
            x, q2, _ = g.to_xq2(torch.tensor([u], dtype=torch.float64), torch.tensor([w], dtype=torch.float64))
            a_r, b_r = torch.log(x), torch.log(q2)
            folded = float((experiment.folding.intensity_map(a_r, b_r, j).matrix @ values)[0])
            reference = _brute_intensity(experiment, float(a_r), float(b_r))
            assert abs(folded / reference - 1) < 1e-3, (j, u, w, folded, reference)


def test_folded_counts_match_simulated_detector_passes(experiment):
    theta = experiment.truth_tensor()
    true = experiment.true_counts(theta)[0]
    scale = 10  # ten times the luminosity, fixed true counts: each reconstructed count is a sum of binomials
    g = torch.Generator().manual_seed(5)
    events = [DISSampler(experiment).sample(theta, round(scale * float(n)), k, generator=g)[0]
              for k, n in enumerate(true)]  # fmt: skip
    counts = np.array([len(e) for e in fold_events(experiment, events, g)], dtype=float)
    nu = scale * experiment.expected_counts(theta)[0].numpy()
    z = (counts - nu) / np.sqrt(nu)
    assert np.all(np.abs(z) < 4), z
    assert np.all(nu < scale * true.numpy())  # acceptance and losses only remove events


def test_a_narrow_detector_without_acceptance_keeps_the_true_counts():
    narrow = DISExperiment(DISConfig(detector={"resolution_x": 1e-3, "resolution_q2": 1e-3, "acceptance": None}))
    theta = narrow.truth_tensor()
    ratio = (narrow.expected_counts(theta) / narrow.true_counts(theta))[0]
    assert torch.all((ratio - 1).abs() < 5e-3), ratio


def test_folded_sampler_reproduces_the_folded_counts_and_density(experiment):
    theta = experiment.truth_tensor()
    nu = experiment.expected_counts(theta)[0]
    sampler = FoldedDISSampler(DISSampler(experiment), experiment)
    rule = experiment.folding.fisher_rule(32, 2)
    values = _flat(experiment, theta)
    g = torch.Generator().manual_seed(7)
    for j, (matrix, weight) in enumerate(rule):
        x, w = sampler.sample_weighted(theta, 20000, j, generator=g)
        assert bool(experiment.contains(x[0], j).all())
        total, se = float(w.sum()), float(torch.sqrt((w**2).sum()))
        assert abs(total - float(nu[j])) < 4 * se, (j, total, float(nu[j]), se)
        # the weighted mean of ln Q^2_rec against the reconstructed-level quadrature of the folded density
        dens = (matrix @ values.T)[:, 0] * weight
        grid = experiment.grids[j]
        frac = torch.as_tensor(np.repeat((np.arange(32)[:, None] + (np.array([-1, 1]) / np.sqrt(3) + 1) / 2), 1))
        u = (float(grid.u[0]) + frac.reshape(-1) / 32 * float(grid.u[-1] - grid.u[0])).repeat_interleave(64)
        exact = float((dens * u).sum() / dens.sum())
        assert abs(float((dens.sum() - nu[j]) / nu[j])) < 1e-4
        f = torch.log(x[0, :, 1])
        mean = float((w[0] * f).sum() / w.sum())
        se_mean = float(torch.sqrt((w[0] ** 2 * (f - mean) ** 2).sum()) / w.sum())
        assert abs(mean - exact) < 4 * se_mean, (j, mean, exact, se_mean)


def test_mcmc_events_behind_the_detector_reproduce_the_folded_counts_and_their_gradient(experiment):
    from physics.config import MCMCConfig
    from physics.dis.mcmc import DISMCMCSampler

    theta = experiment.truth_tensor().requires_grad_()
    sampler = FoldedDISSampler(DISMCMCSampler(experiment, MCMCConfig()), experiment)
    j = 1
    nu = experiment.expected_counts(theta)[0, j]
    (exact,) = torch.autograd.grad(nu, theta)
    g = torch.Generator().manual_seed(13)
    totals, grads = [], []
    for _ in range(6):
        th = theta.detach().clone().requires_grad_()
        _, w = sampler.sample_weighted(th, 2000, j, generator=g)
        totals.append(float(w.sum()))
        grads.append(torch.autograd.grad(w.sum(), th)[0][0])
    totals, grads = np.array(totals), torch.stack(grads)
    # chains are autocorrelated: the spread over independent draws sets the error, not the weights' sum of squares
    assert abs(totals.mean() - float(nu)) < 4 * totals.std(ddof=1) / np.sqrt(len(totals)) + 1e-3 * float(nu)
    z = (grads.mean(0) - exact[0]) / (grads.std(0) / np.sqrt(len(grads)))
    assert torch.all(z.abs() < 4.5), z


def test_folded_counts_and_sampler_gradients_match_finite_differences(experiment):
    theta = experiment.truth_tensor().requires_grad_()
    nu = experiment.expected_counts(theta)[0]
    grads = torch.stack([torch.autograd.grad(nu[j], theta, retain_graph=True)[0][0] for j in range(len(nu))])
    h = 1e-5
    for i in range(theta.shape[1]):
        step = torch.zeros_like(theta)
        step[0, i] = h
        with torch.no_grad():
            fd = (experiment.expected_counts(theta + step) - experiment.expected_counts(theta - step))[0] / (2 * h)
        assert torch.allclose(grads[:, i], fd, rtol=1e-5, atol=1e-8), (i, grads[:, i], fd)
    # the weighted sampler: gradient of sum_e w f(e) over independent draws against d nu_j / d theta (f = 1)
    sampler = FoldedDISSampler(DISSampler(experiment), experiment)
    g = torch.Generator().manual_seed(11)
    j = 1
    draws = []
    for _ in range(8):
        th = theta.detach().clone().requires_grad_()  # a fresh leaf: the sampler caches node values per tensor
        _, w = sampler.sample_weighted(th, 4000, j, generator=g)
        draws.append(torch.autograd.grad(w.sum(), th)[0][0])
    draws = torch.stack(draws)
    z = (draws.mean(0) - grads[j]) / (draws.std(0) / np.sqrt(len(draws)))
    assert torch.all(z.abs() < 4.5), z


def test_binned_view_with_a_detector_sums_to_the_counts_and_loses_information(experiment):
    theta = experiment.truth_tensor()
    view = DISBinnedView(experiment, n_u=2, n_w=4)
    nu = experiment.expected_counts(theta)[0]
    for j, pred in enumerate(view.predictions(theta)):
        assert abs(float(pred.sum() / nu[j]) - 1) < 1e-4  # bins and window: separate Gauss rules in Q^2_rec
    binned = cramer_rao(view.fisher_information(theta)[0])[1]
    unbinned = cramer_rao(fisher_information(experiment, theta))[1]
    assert torch.all(binned >= unbinned * (1 - 1e-3)), (binned, unbinned)


def test_folded_mle_lands_within_a_few_cramer_rao_sds(experiment):
    events = generate_dis_events(experiment, seed=3)
    likelihood = DISLikelihood(experiment, events)
    mle = fit_mle(likelihood)
    _, sd = cramer_rao(fisher_information(experiment, experiment.truth_tensor()))
    pull = (mle.theta - np.array(experiment.config.truth)) / sd.numpy()
    assert mle.success and np.all(np.abs(pull) < 4), pull


@pytest.mark.slow
def test_a_small_gan_closure_on_reconstructed_events_moves_toward_the_truth(experiment):
    from inverse.gan.config import GANConfig
    from inverse.gan.model import InverseGAN
    from inverse.gan.training import fit_gan
    from physics.pseudodata import EventData

    data = EventData(experiment.names, [e.numpy() for e in generate_dis_events(experiment, seed=2)])
    training = {"replicas": 2, "steps": 40, "events_per_param": 256, "dtype": "float64", "progress": False}
    model = InverseGAN(GANConfig.model_validate({"training": training}), experiment, data)
    assert isinstance(model.sampler, FoldedDISSampler)
    start = model.current_theta().detach().numpy()
    fit_gan(model, progress=False)
    end = model.estimates().numpy()
    _, sd = cramer_rao(fisher_information(experiment, experiment.truth_tensor()))
    truth = np.array(experiment.config.truth)
    before, after = np.abs(start - truth) / sd.numpy(), np.abs(end - truth) / sd.numpy()
    assert np.all(after < np.maximum(before, 3.0)) and np.all(after < 5), (before, after)


@pytest.mark.parametrize(
    ("detector", "field"),
    [({"resolution_x": 0.0}, "resolution_x"), ({"resolution_q2": -0.1}, "resolution_q2"), ({"reach": 1.0}, "reach"),
     ({"acceptance": {"plateau": 1.5}}, "plateau"), ({"nodes": 2}, "nodes"), ({"smearing": 0.1}, "smearing")],
)  # fmt: skip
def test_bad_detector_blocks_are_refused_by_name(detector, field):
    with pytest.raises(ValueError, match=field):
        DISConfig(detector=detector)


def test_folding_without_a_detector_is_refused():
    plain = DISExperiment(DISConfig())
    with pytest.raises(ValueError, match="detector"):
        FoldedDISSampler(DISSampler(plain), plain)
    with pytest.raises(ValueError, match="detector"):
        fold_events(plain, [torch.zeros(0, 2, dtype=torch.float64)] * 4, torch.Generator())
