import numpy as np
import pytest
import torch

from physics.bootstrap import fit_bootstrap_mles
from physics.datasets import Experiment
from physics.likelihood import ExtendedLikelihood, cramer_rao, fisher_information, fit_mle, observed_information
from physics.pseudodata import poisson_replica_weights

# The published Cramér–Rao table of the toy (at the truth, extended unbinned likelihood), 3 significant digits.
PUBLISHED_CRLB = {
    "A": [0.084, 0.018, 0.040, 0.126, 0.050, 0.139],
    "B": [0.265, 0.056, 0.125, 0.398, 0.157, 0.439],
    "C": [0.84, 0.18, 0.40, 1.26, 0.50, 1.39],
}


@pytest.mark.parametrize("case", ["A", "B", "C"])
def test_cramer_rao_matches_design_table(config, case):
    exp = Experiment(config, case=case)
    sd, corr = cramer_rao(fisher_information(exp, exp.theory.truth_tensor()))
    expected = np.array(PUBLISHED_CRLB[case])
    half_last_digit = 0.5e-3 if case != "C" else 0.5e-2
    assert np.all(np.abs(sd[0].numpy() - expected) <= half_last_digit + 1e-12), sd
    assert corr[0, 0, 1].item() == pytest.approx(0.986, abs=5e-4)
    assert corr[0, 3, 4].item() == pytest.approx(0.991, abs=5e-4)


def test_fisher_is_minus_hessian_of_expected_log_likelihood(experiment_c):
    """I(theta0) = -d^2/dtheta^2 E_theta0[log L(theta)] at theta0; the expectation by quadrature, the
    Hessian by central differences: independent of the autograd outer-product formula."""
    exp = experiment_c
    theta0 = exp.theory.truth_tensor()

    def expected_log_l(th: np.ndarray) -> float:
        th_t = torch.tensor(th[None])
        total = -exp.expected_counts(th_t).sum().item()
        for j, rule in enumerate(exp.rules):
            rt = rule.tensors(torch.float64)
            lam0 = torch.exp(exp.log_intensity(theta0, rt.log_x, rt.log_1mx, j))
            total += (rt.dx_weights * lam0 * exp.log_intensity(th_t, rt.log_x, rt.log_1mx, j)).sum().item()
        return total

    t0 = theta0[0].numpy()
    h = 1e-4
    hess = np.zeros((6, 6))
    for i in range(6):
        for k in range(6):
            e_i, e_k = np.eye(6)[i] * h, np.eye(6)[k] * h
            hess[i, k] = (
                expected_log_l(t0 + e_i + e_k)
                - expected_log_l(t0 + e_i - e_k)
                - expected_log_l(t0 - e_i + e_k)
                + expected_log_l(t0 - e_i - e_k)
            ) / (4 * h * h)
    info = fisher_information(exp, theta0)[0].numpy()
    np.testing.assert_allclose(-hess, info, rtol=1e-5, atol=1e-5 * np.abs(info).max())


def test_log_likelihood_gradient_and_batching(experiment_c, data_c):
    like = ExtendedLikelihood(experiment_c, data_c)
    rng = np.random.default_rng(0)
    theta = torch.tensor(
        rng.uniform([1, -0.8, 1, 0.5, -0.8, 1], [2.5, 0.5, 4, 2, 0.5, 4.5], size=(3, 6)), requires_grad=True
    )
    values = like(theta)
    single = torch.stack([like(theta[i : i + 1].detach())[0] for i in range(3)])
    torch.testing.assert_close(values.detach(), single)
    (grad,) = torch.autograd.grad(values.sum(), theta)
    eps = 1e-6
    for k in range(6):
        step = torch.zeros(6, dtype=torch.float64)
        step[k] = eps
        fd = (like(theta.detach() + step) - like(theta.detach() - step)) / (2 * eps)
        torch.testing.assert_close(grad[:, k], fd, rtol=1e-6, atol=1e-6)


def test_weights_equal_materialized_replicas(experiment_c, data_c):
    weights = poisson_replica_weights(data_c.counts, 2, seed=1)
    weighted = ExtendedLikelihood(experiment_c, data_c, weights=weights)
    theta = experiment_c.theory.truth_tensor().repeat(2, 1)
    for r in range(2):
        events = [np.repeat(x, w[r].numpy().astype(int)) for x, w in zip(data_c.events, weights)]
        plain = ExtendedLikelihood(experiment_c, events)
        assert weighted(theta)[r].item() == pytest.approx(plain(theta[:1])[0].item(), rel=1e-12)
    ones = ExtendedLikelihood(experiment_c, data_c, weights=[torch.ones(n) for n in data_c.counts])
    assert ones(theta[:1]).item() == pytest.approx(ExtendedLikelihood(experiment_c, data_c)(theta[:1]).item())


def test_mle_is_a_maximum_inside_the_box(experiment_b, data_b):
    like = ExtendedLikelihood(experiment_b, data_b)
    mle = fit_mle(like, n_starts=3)
    assert mle.success and not mle.at_edge.any()
    theta = torch.tensor(mle.theta[None], requires_grad=True)
    (grad,) = torch.autograd.grad(like(theta).sum(), theta)
    info = observed_information(like, theta.detach())
    assert torch.linalg.eigvalsh(info).min().item() > 0
    # Newton decrement sqrt(g^T H^-1 g): the distance to the maximum in units of the posterior width.
    decrement = torch.sqrt(grad[0] @ torch.linalg.solve(info, grad[0])).item()
    assert decrement < 1e-6
    assert mle.log_likelihood >= like(experiment_b.theory.truth_tensor()).item()
    # At the MLE of the extended likelihood the fitted total count equals the observed one.
    nu = experiment_b.expected_counts(theta.detach()).sum().item()
    assert nu == pytest.approx(sum(data_b.counts), rel=1e-5)


def test_bootstrap_mles_maximize_each_replicas_weighted_likelihood(experiment_b, data_b):
    mle = fit_mle(ExtendedLikelihood(experiment_b, data_b), n_starts=2).theta
    weights = poisson_replica_weights(data_b.counts, 1, seed=4)
    ones = [torch.ones(1, n, dtype=torch.float64) for n in data_b.counts]
    boot = fit_bootstrap_mles(experiment_b, data_b, [torch.cat([o, w]) for o, w in zip(ones, weights)], start=mle)
    # Weights of one reproduce the data's MLE; a real replica moves it by about a standard error.
    np.testing.assert_allclose(boot[0], mle, rtol=1e-6, atol=1e-8)
    assert not np.allclose(boot[1], mle, atol=1e-3)
    like = ExtendedLikelihood(experiment_b, data_b, weights=[w[0] for w in weights])
    theta = torch.tensor(boot[1][None], requires_grad=True)
    (grad,) = torch.autograd.grad(like(theta).sum(), theta)
    info = observed_information(like, theta.detach())
    assert torch.sqrt(grad[0] @ torch.linalg.solve(info, grad[0])).item() < 1e-5
