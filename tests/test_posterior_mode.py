"""The GAN's posterior mode: the Langevin kernel, its diagnostics, the adversarial gradient it runs on, refusals."""

import json
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.special import digamma, polygamma

from inverse.gan.config import ClosureConfig, GANConfig
from inverse.gan.model import InverseGAN
from inverse.gan.posterior import c2st, chain_diagnostics, compare_to_reference
from inverse.gan.posterior.kernel import (
    error_covariance,
    fit_lag,
    half_kick,
    injected_variance,
    kinetic_step,
    lag_corrected,
    refresh_root,
    refresh_variance,
)
from inverse.gan.posterior.langevin import LAG_MOVES, LangevinSampler
from inverse.gan.training import fit_gan
from physics.likelihood import ExtendedLikelihood
from physics.posterior import NormCoordinates
from qcdgip.config import parse_config


def _gaussian_chains(
    noise: float, correct: bool, eps: float = 0.4, momentum: float = 0.0, steps: int = 3000, chains: int = 40
) -> tuple[np.ndarray, np.ndarray]:
    """Draws [steps - 500, chains, 2] of the kernel on a correlated Gaussian whose gradient carries noise of variance
    ``noise`` (whitened), and their sd over the reference sd."""
    g = torch.Generator().manual_seed(3)
    cov = torch.tensor([[4.0, 0.18], [0.18, 0.01]], dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)
    precision = torch.linalg.inv(cov)

    def grad_at(psi: torch.Tensor) -> torch.Tensor:
        # Gradient noise with covariance noise * C^-1 is `noise` per whitened coordinate.
        z = torch.randn(psi.shape, generator=g, dtype=psi.dtype)
        return -psi @ precision + noise**0.5 * torch.linalg.solve_triangular(chol.T, z.T, upper=True).T

    psi = torch.zeros(chains, 2, dtype=torch.float64)
    velocity = torch.zeros_like(psi)
    refresh = refresh_variance(eps, noise, momentum) if correct else 1.0 - momentum**2
    grad, out = grad_at(psi), []
    for _ in range(steps):
        xi = torch.randn(psi.shape, generator=g, dtype=psi.dtype)
        psi, velocity = kinetic_step(psi, velocity, grad, chol, eps, momentum, refresh**0.5 * xi, 10.0)
        grad = grad_at(psi)
        velocity = half_kick(velocity, grad, chol, eps, 10.0)
        out.append(psi)
    draws = torch.stack(out)[500:].numpy()
    return draws, draws.reshape(-1, 2).std(0) / cov.diagonal().sqrt().numpy()


def test_kernel_keeps_a_gaussian_width_with_noisy_gradients():
    # Corrected: the step's excess and the gradient's noise are taken out of the injected noise.
    np.testing.assert_allclose(_gaussian_chains(2.0, True)[1], 1.0, atol=0.04)
    # Uncorrected, the same noise widens the chains: var 1 / (1 - eps / 4) plus (eps / 2)^2 V / (eps - eps^2 / 4).
    widened = _gaussian_chains(2.0, False)[1]
    expected = np.sqrt((0.4 + 0.04 * 2.0) / (0.4 - 0.04))
    np.testing.assert_allclose(widened, expected, rtol=0.04)


def test_momentum_keeps_the_width_and_shortens_the_autocorrelation():
    # With 70 % of the velocity kept, the noise reaches it through two kicks per refresh: still width 1 when
    # corrected, and the chains decorrelate in fewer steps than the unadjusted Langevin step's 4 / eps - 1.
    draws, ratio = _gaussian_chains(0.5, True, momentum=0.7)
    np.testing.assert_allclose(ratio, 1.0, atol=0.05)
    tau = chain_diagnostics(draws[:, :, :1])["autocorrelation_steps"][0]
    tau_ula = chain_diagnostics(_gaussian_chains(0.5, True)[0][:, :, :1])["autocorrelation_steps"][0]
    assert tau < 0.6 * tau_ula
    assert 4.0 / 0.4 - 1 - 3 < tau_ula < 4.0 / 0.4 - 1 + 3


def _momentum_chains(
    psi: torch.Tensor,
    chol: torch.Tensor,
    gradient: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    g: torch.Generator,
    steps: int,
    correct: bool = True,
    quadratic: bool = False,
    eps: float = 0.3,
    momentum: float = 0.7,
    burn_in: int = 100,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Momentum chains from ``psi`` driven by ``gradient(psi, moves)``, as the sampler runs them: when ``correct``,
    the error model (:func:`fit_lag`, quadratic or not) is fitted over the burn-in's second half and its lag and
    residual covariance are taken out from then on; returns the draws after the burn-in [S, C, D] and the fitted
    lag (None uncorrected)."""
    chains, dim = psi.shape
    velocity, moves = torch.zeros_like(psi), psi.new_zeros(chains, LAG_MOVES, dim)
    root = refresh_variance(eps, 0.0, momentum) ** 0.5 * torch.eye(dim, dtype=psi.dtype)
    fitted, rows, out = None, [], []
    grad = gradient(psi, moves)
    for step in range(1, steps):
        refresh = torch.randn(psi.shape, generator=g, dtype=psi.dtype) @ root.T
        new, velocity = kinetic_step(
            psi, velocity, lag_corrected(grad, moves, fitted), chol, eps, momentum, refresh, 10.0
        )
        moves, psi = torch.cat([(new - psi)[:, None], moves[:, :-1]], dim=1), new
        grad = gradient(psi, moves)
        if correct and burn_in // 2 <= step <= burn_in:
            rows.append((psi, moves, grad))
            if step == burn_in:
                fitted, residuals = fit_lag(*(torch.cat(parts) for parts in zip(*rows)), quadratic=quadratic)
                error_cov = error_covariance((residuals @ chol).reshape(len(rows), chains, dim))
                root = refresh_root(eps, error_cov, momentum)
        velocity = half_kick(velocity, lag_corrected(grad, moves, fitted), chol, eps, 10.0)
        out.append(psi)
    return torch.stack(out)[burn_in:], fitted


def _lagging_chains(lag: float, correct: bool, noise: float = 0.5) -> tuple[float, float]:
    """Width of chains on a correlated Gaussian whose gradient is taken ``lag`` of the last move behind (as a
    discriminator trained at the previous parameters gives it) and carries an error that persists over steps
    (variance ``noise`` per whitened coordinate, correlation 0.4 from step to step, as a discriminator's own);
    returns the width over the reference and the fitted lag (whitened trace / D of its first matrix)."""
    g = torch.Generator().manual_seed(5)
    cov = torch.tensor([[4.0, 0.18], [0.18, 0.01]], dtype=torch.float64)
    chol, precision = torch.linalg.cholesky(cov), torch.linalg.inv(cov)
    chains, rho = 40, 0.4
    psi = torch.randn(chains, 2, generator=g, dtype=torch.float64) @ chol.T
    error = noise**0.5 * torch.randn(psi.shape, generator=g, dtype=psi.dtype)

    def gradient(psi: torch.Tensor, moves: torch.Tensor) -> torch.Tensor:
        nonlocal error
        fresh = torch.randn(psi.shape, generator=g, dtype=psi.dtype)
        error = rho * error + (noise * (1 - rho**2)) ** 0.5 * fresh
        white = torch.linalg.solve_triangular(chol.T, error.T, upper=True).T  # error `noise` per whitened coordinate
        return -(psi - lag * moves[:, 0]) @ precision + white

    draws, fitted = _momentum_chains(psi, chol, gradient, g, 1500, correct=correct)
    width = draws.reshape(-1, 2).std(0) / cov.diagonal().sqrt()
    lag_seen = float((chol.T @ fitted[0] @ chol).diagonal().mean()) if fitted is not None else 0.0
    return float(width.max()), lag_seen


def test_error_model_restores_the_width_of_lagging_noisy_gradients():
    # Half a move's lag and a persistent error heat momentum chains (the lagged force pushes along the velocity,
    # the error's kicks add up). Fitted over the burn-in and taken out, the width is the posterior's.
    widened, _ = _lagging_chains(0.5, correct=False)
    assert widened > 1.3
    width, seen = _lagging_chains(0.5, correct=True)
    assert width == pytest.approx(1.0, abs=0.05)
    # The error that pushed the last move persists into the next gradient, so the fit counts part of it as lag.
    assert seen > 0.45
    # Without the error the fitted lag is the true one; without either, nothing is taken out.
    assert _lagging_chains(0.5, correct=True, noise=0.0)[1] == pytest.approx(0.5, abs=0.05)
    clean, seen = _lagging_chains(0.0, correct=True, noise=0.0)
    assert clean == pytest.approx(1.0, abs=0.05) and abs(seen) < 0.05


def _skewed_chains(quadratic: bool, k: float = 1.5) -> tuple[float, float]:
    """Width and mean offset (in sd) of momentum chains on log Gamma(k), pi(x) ~ exp(k x - e^x) (sd trigamma(k)^0.5,
    skewed), with its exact gradient k - e^x and the error model fitted over the burn-in; returns (width, offset)."""
    g = torch.Generator().manual_seed(3)
    sd = float(polygamma(1, k)) ** 0.5
    psi = float(digamma(k)) + sd * torch.randn(40, 1, generator=g, dtype=torch.float64)
    chol = torch.tensor([[sd]], dtype=torch.float64)
    draws, _ = _momentum_chains(psi, chol, lambda psi, moves: k - psi.exp(), g, 2000, quadratic=quadratic)
    return float(draws.std()) / sd, (float(draws.mean()) - float(digamma(k))) / sd


def test_quadratic_error_model_keeps_a_skewed_posterior_wide():
    # Exact gradients, no noise: whatever the error model reads is the gradient's curvature. A linear model of a
    # skewed posterior's gradient leaves that curvature in its residuals, which then pass for noise and narrow the
    # chains; the second-order terms take most of it (e^x's higher orders stay: 0.95-0.99 over four seeds, against
    # 0.82-0.90 linear).
    narrow, _ = _skewed_chains(quadratic=False)
    assert narrow < 0.92
    width, offset = _skewed_chains(quadratic=True)
    assert 0.94 < width < 1.04 and abs(offset) < 0.05


def test_error_covariance_counts_the_autocovariance_of_an_ar1_error():
    g = torch.Generator().manual_seed(1)
    rho, steps, chains = 0.4, 4000, 20
    res = torch.zeros(steps, chains, 2, dtype=torch.float64)
    for s in range(1, steps):
        res[s] = rho * res[s - 1] + (1 - rho**2) ** 0.5 * torch.randn(chains, 2, generator=g, dtype=torch.float64)
    cov = error_covariance(res, lags=2)
    expected = 1 + 2 * rho + 2 * rho**2
    assert torch.allclose(cov.diagonal(), torch.full((2,), expected, dtype=torch.float64), rtol=0.05)
    assert float(cov[0, 1].abs()) < 0.05
    # Isotropic noise: the matrix refresh is the scalar one in every direction; a huge one is floored.
    root = refresh_root(0.3, 0.5 * torch.eye(2, dtype=torch.float64), 0.5)
    assert torch.allclose(root, refresh_variance(0.3, 0.5, 0.5) ** 0.5 * torch.eye(2, dtype=torch.float64))
    floor = refresh_root(0.3, 100.0 * torch.eye(2, dtype=torch.float64), 0.5)
    assert torch.allclose(floor @ floor, 0.05 * 0.75 * torch.eye(2, dtype=torch.float64))


def test_lag_fit_recovers_known_matrices_in_badly_scaled_coordinates():
    g = torch.Generator().manual_seed(0)
    n, dim = 3000, 3
    psi = torch.randn(n, dim, generator=g, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1], dtype=torch.float64)
    moves = 0.3 * torch.randn(n, 2, dim, generator=g, dtype=torch.float64)
    lag = torch.randn(2, dim, dim, generator=g, dtype=torch.float64)
    slope = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    clean = 1.0 + psi @ slope.T
    grad = clean + torch.einsum("kij,ckj->ci", lag, moves) + 0.1 * torch.randn(n, dim, generator=g, dtype=psi.dtype)
    fitted, residuals = fit_lag(psi, moves, grad)
    assert torch.allclose(fitted, lag, atol=0.03)
    assert float(residuals.std()) == pytest.approx(0.1, rel=0.05)
    assert float((lag_corrected(grad, moves, fitted) - clean).std()) == pytest.approx(0.1, rel=0.05)
    assert lag_corrected(grad, moves, None) is grad


def test_injected_variance_is_floored():
    assert injected_variance(0.3, 0.0) == pytest.approx(0.3 - 0.0225)
    assert injected_variance(1.0, 10.0) == pytest.approx(0.05)
    assert refresh_variance(0.3, 0.0, 0.5) == pytest.approx((1 - 0.075) * 0.75)
    assert refresh_variance(0.3, 100.0, 0.5) == pytest.approx(0.05 * 0.75)


def test_drift_cap_bounds_a_far_step():
    chol = torch.eye(2, dtype=torch.float64)
    psi = torch.zeros(1, 2, dtype=torch.float64)
    huge = torch.tensor([[1e6, 0.0]], dtype=torch.float64)
    step, _ = kinetic_step(psi, psi, huge, chol, 0.3, 0.0, torch.zeros_like(psi), 2.0)
    assert step.norm() == pytest.approx(2.0)


def test_chain_diagnostics_match_an_ar1_process():
    rng = np.random.default_rng(0)
    rho, steps, chains = 0.8, 4000, 8
    x = np.zeros((steps, chains, 1))
    for t in range(1, steps):
        x[t] = rho * x[t - 1] + np.sqrt(1 - rho**2) * rng.standard_normal((chains, 1))
    d = chain_diagnostics(x)
    assert d["rhat"][0] < 1.01
    # The integrated autocorrelation time of an AR(1) process is (1 + rho) / (1 - rho) = 9.
    assert d["autocorrelation_steps"][0] == pytest.approx(9.0, rel=0.2)
    with pytest.raises(ValueError, match="draws"):
        chain_diagnostics(x[:, :1])


@pytest.mark.parametrize("chain_bias_sd", [0.0, 0.3])
def test_the_mean_standard_error_covers_autocorrelated_and_disagreeing_chains(chain_bias_sd):
    # 300 independent runs of 16 AR(1) chains (autocorrelation time 9) x 200 steps, each chain shifted by its own
    # constant bias (the chains' discriminators carry one): the pooled mean's error over its MCSE follows Student's
    # t with 15 degrees of freedom (sd 1.07).
    rng = np.random.default_rng(1)
    rho, steps, chains, runs = 0.8, 200, 16, 300
    x = np.zeros((runs, steps, chains, 1))
    x[:, 0] = rng.standard_normal((runs, chains, 1))
    for t in range(1, steps):
        x[:, t] = rho * x[:, t - 1] + np.sqrt(1 - rho**2) * rng.standard_normal((runs, chains, 1))
    x += chain_bias_sd * rng.standard_normal((runs, 1, chains, 1))
    z = np.array([run.mean() / chain_diagnostics(run)["mean_mcse"][0] for run in x])
    assert 0.9 < z.std() < 1.25


def test_c2st_tells_shifted_draws_apart_and_not_equal_ones():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((1500, 3)), rng.standard_normal((1500, 3))
    assert c2st(a, b, seed=0, epochs=150) < 0.56
    shifted = b + np.array([1.5, 0.0, 0.0])
    assert c2st(a, shifted, seed=0, epochs=150) > 0.7
    cmp = compare_to_reference(2.0 * a, b, c2st_draws=1000)
    np.testing.assert_allclose(cmp["width_ratio"], 2.0, rtol=0.1)


def test_posterior_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="burn_in"):
        parse_config(GANConfig, {"posterior": {"mode": "langevin", "steps": 10, "burn_in": 10}}, "runcard")
    with pytest.raises(ValueError, match="prior_mean"):
        parse_config(GANConfig, {"posterior": {"prior": "gaussian"}}, "runcard")
    with pytest.raises(ValueError, match="chains"):
        parse_config(GANConfig, {"training": {"replicas": 5}, "posterior": {"mode": "langevin", "chains": 10}}, "r")
    with pytest.raises(ValueError, match=r"d_anchor"):
        parse_config(
            GANConfig,
            {"optimizer_d": {"name": "newton"}, "discriminator": {"depth": 0}, "posterior": {"d_anchor": 0.5}},
            "runcard",
        )
    # Left at its default the anchor follows the optimizer: off for Newton refits, 0.5 for gradient ones.
    newton = parse_config(GANConfig, {"optimizer_d": {"name": "newton"}, "discriminator": {"depth": 0}}, "runcard")
    assert newton.posterior.anchor_for(newton.optimizer_d.name) == 0.0
    assert GANConfig().posterior.anchor_for(GANConfig().optimizer_d.name) == 0.5
    with pytest.raises(ValueError, match=r"generator\.kind"):
        parse_config(
            GANConfig,
            {"generator": {"kind": "mlp"}, "optimizer_g": {"name": "adam"}, "posterior": {"mode": "langevin"}},
            "runcard",
        )


def test_chains_discriminator_rate_is_a_fraction_of_the_fits_for_adam_and_kept_for_newton():
    from inverse.gan.posterior.chain_model import _chain_config

    adam = parse_config(
        GANConfig, {"optimizer_d": {"name": "adam", "lr": 0.01}, "posterior": {"mode": "langevin"}}, "r"
    )
    assert _chain_config(adam, adam.posterior).optimizer_d.lr == pytest.approx(0.005)
    own = adam.posterior.model_copy(update={"d_lr": 0.02})
    assert _chain_config(adam, own).optimizer_d.lr == 0.02
    newton = parse_config(GANConfig, {"optimizer_d": {"name": "newton", "lr": 0.5}, "discriminator": {"depth": 0}}, "r")
    assert _chain_config(newton, newton.posterior).optimizer_d.lr == 0.5
    with pytest.raises(ValueError, match="d_lr_fraction"):
        parse_config(GANConfig, {"posterior": {"d_lr_fraction": 0.0}}, "runcard")


def test_norm_coordinates_torch_log_jacobian_matches_autograd(experiment_b):
    coords = NormCoordinates(experiment_b, "norm")
    theta = torch.tensor([[2.0, -0.4, 3.0, 1.2, -0.3, 4.2]], dtype=torch.float64)
    psi = coords.to_phi_torch(theta)
    back, log_jac = coords.to_theta_torch(psi)
    torch.testing.assert_close(back, theta, rtol=1e-12, atol=1e-12)
    jac = torch.autograd.functional.jacobian(lambda p: coords.to_theta_torch(p.unsqueeze(0))[0][0], psi[0])
    assert float(log_jac[0]) == pytest.approx(float(torch.linalg.slogdet(jac)[1]), rel=1e-10)


@pytest.mark.slow
def test_adversarial_gradient_of_the_chains_matches_the_likelihood(experiment_b, data_b):
    config = parse_config(
        ClosureConfig,
        {"physics": {"case": "B"}, "gan": {"training": {"replicas": 12, "steps": 150, "progress": False},
                                           "posterior": {"mode": "langevin", "chains": 8, "d_warmup": 40}}},
        "runcard",
    )  # fmt: skip
    fit = InverseGAN(config.gan, experiment_b, data_b)
    fit_gan(fit, None, progress=False)
    coords = NormCoordinates(experiment_b, "norm")
    sampler = LangevinSampler(fit.double(), data_b, coords)
    # Three whitened units off each replica (where the likelihood's gradient dominates the discriminators' error),
    # as the frozen-parameter check of the fit does; the discriminators trained there first.
    direction = torch.randn(sampler.psi.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    sampler.psi = sampler.psi + 3.0 * direction @ sampler.chol.T
    sampler._place(sampler.psi)
    sampler._update_discriminators(300)
    grad, diff = sampler.gradient(sampler.psi)
    psi = sampler.psi.clone().requires_grad_(True)
    theta, log_jac = coords.to_theta_torch(psi)
    (exact,) = torch.autograd.grad((ExtendedLikelihood(experiment_b, data_b)(theta) + log_jac).sum(), psi)
    white, white_exact = grad @ sampler.chol, exact @ sampler.chol
    cosine = torch.nn.functional.cosine_similarity(white, white_exact, dim=-1)
    assert float(cosine.median()) > 0.95
    ratio = white.norm(dim=-1) / white_exact.norm(dim=-1)
    assert 0.8 < float(ratio.median()) < 1.2
    # The two halves' difference measures the noise: small against the gradient itself here.
    assert float((diff @ sampler.chol).norm(dim=-1).median()) < 0.3 * float(white_exact.norm(dim=-1).median())


@pytest.fixture(scope="module")
def small_fit(experiment_b, data_b):
    config = parse_config(
        ClosureConfig,
        {"physics": {"case": "B"}, "gan": {"training": {"replicas": 12, "steps": 120, "progress": False},
                                           "posterior": {"mode": "langevin", "chains": 8, "steps": 40, "burn_in": 20,
                                                         "checkpoint_every": 5, "d_steps": 2, "d_warmup": 5,
                                                         "momentum": 0.7}}},
        "runcard",
    )  # fmt: skip
    fit = InverseGAN(config.gan, experiment_b, data_b)
    fit_gan(fit, None, progress=False)
    return fit.double()


@pytest.mark.slow
def test_killed_chains_resume_to_the_same_draws(small_fit, experiment_b, data_b, tmp_path):
    coords = NormCoordinates(experiment_b, "norm")
    whole = LangevinSampler(small_fit, data_b, coords).run(tmp_path / "whole", progress=False)

    class KilledError(Exception):
        pass

    killed = LangevinSampler(small_fit, data_b, coords)
    step = killed.take_step

    def dying_step() -> None:
        if killed.step == 17:  # the lag's regression rows of steps 11-15 are in the last checkpoint
            raise KilledError
        step()

    killed.take_step = dying_step
    with pytest.raises(KilledError):
        killed.run(tmp_path / "killed", progress=False)
    resumed = LangevinSampler(small_fit, data_b, coords).run(tmp_path / "killed", progress=False)
    assert resumed.trace.shape == whole.trace.shape == (40, 8, 6)
    assert whole.lag is not None and resumed.lag == pytest.approx(whole.lag)
    np.testing.assert_allclose(resumed.trace, whole.trace, rtol=1e-6, atol=1e-9)
    low, high = np.array(experiment_b.theory.low), np.array(experiment_b.theory.high)
    assert np.all((whole.trace > low) & (whole.trace < high))


@pytest.mark.slow
def test_closure_reports_the_posterior_draws(tmp_path):
    from inverse.gan.run import run_closure

    config = parse_config(
        ClosureConfig,
        {"physics": {"case": "B"}, "posterior": {"n_chains": 4, "n_warmup": 300, "n_samples": 500},
         "gan": {"training": {"replicas": 12, "steps": 300, "progress": False},
                 "posterior": {"mode": "langevin", "chains": 8, "steps": 60, "burn_in": 20, "d_steps": 4}}},
        "runcard",
    )  # fmt: skip
    summary = run_closure(config, tmp_path, progress=False)
    block = summary["posterior_mode"]
    assert block["chains"] == 8 and block["steps"] == 60
    # A short run of few chains: a loose bar (the measured widths are in docs/solvers/posterior.md). A fit of 120
    # steps left the discriminators too weak for the chains to find the ridge's thin direction (C2ST 0.83-0.90);
    # the default 300 gives 0.76 on one thread and on two.
    assert all(0.5 < w < 2.0 for w in block["width_ratio"])
    assert all(abs(o) < 1.0 for o in block["mean_offset"])
    assert 0.45 < block["c2st"] < 0.85
    assert (tmp_path / "posterior_mode.png").is_file() and (tmp_path / "posterior_mode" / "chains.pt").is_file()
    assert "Posterior draws (adversarial Langevin)" in (tmp_path / "report.md").read_text()


def _rows(rng: np.random.Generator, n: int, rank_sampler, tarp_sampler) -> list[dict]:
    rows = []
    for _ in range(n):
        row = {"rank": [int(rank_sampler()) for _ in range(2)], "tarp": float(tarp_sampler())}
        row.update(in68=[bool(rng.random() < 0.68)] * 2, in95=[bool(rng.random() < 0.95)] * 2)
        rows.append({"posterior": row, "seconds": 1.0, "cpu_seconds": 1.0})
    return rows


def test_calibration_summary_accepts_uniform_ranks_and_rejects_overdispersed_ones():
    from inverse.gan.posterior.calibration import RANK_DRAWS, summarize_calibration

    rng = np.random.default_rng(0)
    good = summarize_calibration(_rows(rng, 200, lambda: rng.integers(0, RANK_DRAWS + 1), rng.random), ["a", "b"])[
        "posterior"
    ]
    assert not good["sbc_rejected_at_0.01"] and abs(good["tarp_atc"]) < 0.03
    # Too wide a posterior puts the truth in the middle of its draws: ranks pile up at the centre, and the truth
    # is closer to any reference point than most draws (f small, expected coverage above the diagonal).
    wide = summarize_calibration(
        _rows(rng, 200, lambda: rng.binomial(RANK_DRAWS, 0.5), lambda: 0.5 * rng.random()), ["a", "b"]
    )["posterior"]
    assert wide["sbc_rejected_at_0.01"] == ["a", "b"] and wide["tarp_atc"] > 0.1


def test_calibration_truths_come_from_the_prior_and_ranks_count_draws_below():
    from inverse.gan.posterior.calibration import draw_truth, sample_ranks, tarp_fraction

    config = parse_config(ClosureConfig, {}, "runcard")
    truths = np.array([draw_truth(config, k) for k in range(400)])
    low, high = np.array(config.physics.low), np.array(config.physics.high)
    assert np.all((truths > low) & (truths < high))
    np.testing.assert_allclose(truths.mean(0), (low + high) / 2, atol=0.08 * (high - low).max())
    assert np.array_equal(draw_truth(config, 3), truths[3])
    gauss = parse_config(
        ClosureConfig,
        {"gan": {"posterior": {"prior": "gaussian", "prior_mean": [2.9, 0, 2, 1, 0, 4], "prior_sd": [1] * 6}}},
        "runcard",
    )
    g = np.array([draw_truth(gauss, k) for k in range(200)])
    assert np.all((g > low) & (g < high)) and g[:, 0].mean() < 2.9  # truncated at Nu = 3
    draws = np.arange(200, dtype=float)[:, None] * np.ones((1, 2))
    ranks = sample_ranks(np.array([50.0, 500.0]), draws, np.random.default_rng(0))
    assert 15 < ranks[0] < 35 and ranks[1] == 99
    assert tarp_fraction(np.zeros(1), np.arange(1.0, 11.0)[:, None], np.zeros(1), np.ones(1)) == 0.0


@pytest.mark.slow
def test_calibration_study_writes_rows_and_resumes_without_refitting(tmp_path):
    from inverse.gan.posterior.calibration import _key, _row, run_calibration

    config = parse_config(
        ClosureConfig,
        {"physics": {"case": "C"}, "gan": {"training": {"replicas": 10, "steps": 40, "progress": False},
                                           "posterior": {"mode": "langevin", "chains": 8, "steps": 30, "burn_in": 10,
                                                         "d_steps": 2, "d_warmup": 5}}},
        "runcard",
    )  # fmt: skip
    first = run_calibration(config, tmp_path, 2, progress=False)
    rows = (tmp_path / "results.jsonl").read_text().splitlines()
    assert first["n_sets"] == 2 and len(rows) == 2 and (tmp_path / "calibration.png").is_file()
    for method in ("posterior", "bootstrap"):
        assert len(first[method]["sbc_p_values"]) == 6 and len(first[method]["tarp_ecp"]) == 51
    # A third data set: the two finished rows are kept as they are (a study resumes), one more is fitted.
    (tmp_path / "results.jsonl").write_text("\n".join(rows) + "\n{broken")
    second = run_calibration(config, tmp_path, 3, progress=False)
    again = (tmp_path / "results.jsonl").read_text().splitlines()
    assert second["n_sets"] == 3 and again[:2] == rows and len(again) == 3
    # Two more in two worker processes: the same rows this process would write (seeded per data set).
    workers = config.model_copy(update={"report": config.report.model_copy(update={"calibration_workers": 2})})
    third = run_calibration(workers, tmp_path, 5, progress=False)
    final = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert third["n_sets"] == 5 and sorted(r["k"] for r in final) == [0, 1, 2, 3, 4]
    torch.set_num_threads(1)
    here = _row(config, _key(config), 4)
    there = next(r for r in final if r["k"] == 4)
    assert here["posterior"] == there["posterior"] and here["bootstrap"] == there["bootstrap"]


@pytest.mark.slow
def test_dis_closure_runs_the_chains_in_theta_inside_the_box(tmp_path):
    from inverse.gan.dis.config import DISClosureConfig
    from inverse.gan.dis.run import run_dis_closure

    raw = {
        "physics": {"case": "C"},
        "posterior": {"n_chains": 4, "n_warmup": 300, "n_samples": 400},
        "gan": {"discriminator": {"depth": 0, "degree": 3}, "optimizer_d": {"name": "newton"},
                "training": {"replicas": 12, "steps": 60, "events_per_param": 1024, "progress": False},
                "posterior": {"mode": "langevin", "chains": 8, "steps": 30, "burn_in": 10, "d_steps": 2}},
        "report": {"bootstrap_mles": False, "lhapdf": False, "posterior": True},
    }  # fmt: skip
    summary = run_dis_closure(parse_config(DISClosureConfig, raw, "runcard"), tmp_path, plots=False, progress=False)
    block = summary["posterior_mode"]
    assert block["coordinates"] == "theta" and block["error_model"] == "quadratic"
    assert block["steps"] == 30 and len(block["width_ratio"]) == 5
    assert "Posterior draws (adversarial Langevin)" in (tmp_path / "report.md").read_text()
    no_posterior = {**raw, "report": {**raw["report"], "posterior": False}}
    with pytest.raises(ValueError, match=r"report\.posterior"):
        run_dis_closure(parse_config(DISClosureConfig, no_posterior, "runcard"), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="coordinates: norm"):
        from inverse.gan.posterior.coordinates import sampling_coordinates
        from physics.dis.experiment import DISExperiment

        sampling_coordinates(DISExperiment(parse_config(DISClosureConfig, raw, "runcard").physics), "norm")
