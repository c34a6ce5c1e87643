"""The GAN's posterior mode: the Langevin kernel, its diagnostics, the adversarial gradient it runs on, refusals."""

import numpy as np
import pytest
import torch

from inverse.gan.config import ClosureConfig, GANConfig
from inverse.gan.model import InverseGAN
from inverse.gan.posterior import c2st, chain_diagnostics, compare_to_reference
from inverse.gan.posterior.langevin import LangevinSampler, injected_variance, langevin_proposal
from inverse.gan.training import fit_gan
from physics.likelihood import ExtendedLikelihood
from physics.posterior import NormCoordinates
from qcdgip.config import parse_config


def _gaussian_chains(noise: float, correct: bool, eps: float = 0.4, steps: int = 3000, chains: int = 40) -> np.ndarray:
    """Draws of the kernel on a correlated Gaussian whose gradient carries noise of variance ``noise`` (whitened)."""
    g = torch.Generator().manual_seed(3)
    cov = torch.tensor([[4.0, 0.18], [0.18, 0.01]], dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)
    precision = torch.linalg.inv(cov)
    psi = torch.zeros(chains, 2, dtype=torch.float64)
    q = injected_variance(eps, noise) if correct else eps
    out = []
    for _ in range(steps):
        # Gradient noise with covariance noise * C^-1 is `noise` per whitened coordinate.
        z = torch.randn(psi.shape, generator=g, dtype=psi.dtype)
        grad = -psi @ precision + noise**0.5 * torch.linalg.solve_triangular(chol.T, z.T, upper=True).T
        xi = torch.randn(psi.shape, generator=g, dtype=psi.dtype)
        psi = langevin_proposal(psi, grad, chol, eps, q, 10.0, xi)
        out.append(psi)
    draws = torch.stack(out)[500:].reshape(-1, 2).numpy()
    return draws.std(0) / cov.diagonal().sqrt().numpy()


def test_kernel_keeps_a_gaussian_width_with_noisy_gradients():
    # Corrected: the step's excess and the gradient's noise are taken out of the injected noise.
    np.testing.assert_allclose(_gaussian_chains(2.0, True), 1.0, atol=0.04)
    # Uncorrected, the same noise widens the chains: var 1 / (1 - eps / 4) plus (eps / 2)^2 V / (eps - eps^2 / 4).
    widened = _gaussian_chains(2.0, False)
    expected = np.sqrt((0.4 + 0.04 * 2.0) / (0.4 - 0.04))
    np.testing.assert_allclose(widened, expected, rtol=0.04)


def test_injected_variance_is_floored():
    assert injected_variance(0.3, 0.0) == pytest.approx(0.3 - 0.0225)
    assert injected_variance(1.0, 10.0) == pytest.approx(0.05)


def test_drift_cap_bounds_a_far_step():
    chol = torch.eye(2, dtype=torch.float64)
    psi = torch.zeros(1, 2, dtype=torch.float64)
    step = langevin_proposal(psi, torch.tensor([[1e6, 0.0]], dtype=torch.float64), chol, 0.3, 0.0, 2.0, psi)
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
    with pytest.raises(ValueError, match=r"generator\.kind"):
        parse_config(
            GANConfig,
            {"generator": {"kind": "mlp"}, "optimizer_g": {"name": "adam"}, "posterior": {"mode": "langevin"}},
            "runcard",
        )


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
                                           "posterior": {"mode": "langevin", "chains": 6, "steps": 30, "burn_in": 10,
                                                         "checkpoint_every": 10, "d_steps": 2, "d_warmup": 5}}},
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
        if killed.step == 25:
            raise KilledError
        step()

    killed.take_step = dying_step
    with pytest.raises(KilledError):
        killed.run(tmp_path / "killed", progress=False)
    resumed = LangevinSampler(small_fit, data_b, coords).run(tmp_path / "killed", progress=False)
    assert resumed.trace.shape == whole.trace.shape == (30, 6, 6)
    np.testing.assert_allclose(resumed.trace, whole.trace, rtol=1e-6, atol=1e-9)
    low, high = np.array(experiment_b.theory.low), np.array(experiment_b.theory.high)
    assert np.all((whole.trace > low) & (whole.trace < high))


@pytest.mark.slow
def test_closure_reports_the_posterior_draws(tmp_path):
    from inverse.gan.run import run_closure

    config = parse_config(
        ClosureConfig,
        {"physics": {"case": "B"}, "posterior": {"n_chains": 4, "n_warmup": 300, "n_samples": 500},
         "gan": {"training": {"replicas": 12, "steps": 120, "progress": False},
                 "posterior": {"mode": "langevin", "chains": 8, "steps": 60, "burn_in": 20, "d_steps": 4}}},
        "runcard",
    )  # fmt: skip
    summary = run_closure(config, tmp_path, progress=False)
    block = summary["posterior_mode"]
    assert block["chains"] == 8 and block["steps"] == 60
    # A short run of few chains: a loose bar (the measured widths are in docs/solvers/posterior.md).
    assert all(0.5 < w < 2.0 for w in block["width_ratio"])
    assert all(abs(o) < 1.0 for o in block["mean_offset"])
    assert 0.45 < block["c2st"] < 0.9
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
    from inverse.gan.posterior.calibration import run_calibration

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
    assert block["coordinates"] == "theta" and block["steps"] == 30 and len(block["width_ratio"]) == 5
    assert "Posterior draws (adversarial Langevin)" in (tmp_path / "report.md").read_text()
    no_posterior = {**raw, "report": {**raw["report"], "posterior": False}}
    with pytest.raises(ValueError, match=r"report\.posterior"):
        run_dis_closure(parse_config(DISClosureConfig, no_posterior, "runcard"), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="coordinates: norm"):
        from inverse.gan.posterior.coordinates import sampling_coordinates
        from physics.dis.experiment import DISExperiment

        sampling_coordinates(DISExperiment(parse_config(DISClosureConfig, raw, "runcard").physics), "norm")
