"""Surrogate event generators: the flow's exact bijection, reparameterised samples, learning beyond a
parameter-blind reference, model files and their refusals, and the GAN inverse solver running on a surrogate."""

from __future__ import annotations

import copy
import json

import lightning as L
import numpy as np
import pytest
import torch

from inverse.gan.config import GANConfig
from inverse.gan.model import InverseGAN
from inverse.gan.training import fit_gan
from physics.config import PhysicsConfig
from surrogates.base import SurrogateFileError
from surrogates.config import SurrogateConfig
from surrogates.flow import FlowSurrogate
from surrogates.io import build_surrogate, load_surrogate
from surrogates.quality import evaluate, ks_2samp, surrogate_mle, wasserstein_1d
from surrogates.simulate import draw_prior, exact_events, to_unit
from surrogates.train import main as train_main
from surrogates.training import fit_surrogate

KINDS = ("flow", "gan", "vae")


def small_config(kind: str, steps: int = 300, **over) -> SurrogateConfig:
    data = {
        "kind": kind,
        "simulation": {"n_params": 1500, "events_per_param": 64, "seed": 0},
        "flow": {"bins": 12, "depth": 2, "width": 64},
        "gan": {"depth": 2, "width": 32, "context_width": 64},
        "vae": {"depth": 2, "width": 32, "context_width": 64},
        "training": {"steps": steps, "batch_params": 64, "progress": False, "accelerator": "cpu"},
        "evaluation": {"n_params": 12, "n_samples": 2000, "plot_params": 2},
        "counts": {"adam_steps": 200, "lbfgs_steps": 200},
    }
    if kind == "gan":  # adversarial training needs more, smaller steps than a likelihood (measured: KS 0.05)
        data["training"].update(steps=max(steps, 1500), lr=1e-3)
    for key, value in over.items():
        data.setdefault(key, {}).update(value)
    return SurrogateConfig.model_validate(data)


def randomized(model: torch.nn.Module, scale: float = 0.5, seed: int = 0) -> torch.nn.Module:
    """An untrained surrogate with random (non-identity) weights everywhere."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def train_set():
    cfg = small_config("flow")
    theta = draw_prior(cfg.physics, cfg.simulation.n_params, 0)
    t = to_unit(cfg.physics, exact_events(cfg.physics, theta, 64, 1)).float()
    return theta, t


@pytest.fixture(scope="module")
def trained(train_set):
    """One small trained surrogate of each kind (shared by the tests below)."""
    theta, t = train_set
    out = {}
    for kind in KINDS:
        torch.manual_seed(0)
        model = build_surrogate(small_config(kind))
        fit_surrogate(model, theta, t, progress=False)
        out[kind] = model.eval()
    return out


def test_flow_is_a_bijection_with_the_autograd_log_det():
    flow = randomized(FlowSurrogate(SurrogateConfig.model_validate({"flow": {"layers": 2, "bins": 8}})), 0.15).double()
    theta = draw_prior(flow.config.physics, 3, 5)
    ctx = flow.context(theta)
    for j in range(flow.n_datasets):
        t = torch.rand(3, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(j)).requires_grad_()
        knots = flow.knots(ctx, j)
        u, log_det = t, torch.zeros_like(t)
        for i in range(flow.n_layers):
            u, ld = flow.splines[i].inverse(u, knots[:, i])
            log_det = log_det + ld
        (du_dt,) = torch.autograd.grad(u.sum(), t)  # elementwise map: the gradient is the derivative
        torch.testing.assert_close(log_det, du_dt.log(), rtol=1e-8, atol=1e-8)
        back = u.detach()
        for i in reversed(range(flow.n_layers)):
            back, _ = flow.splines[i](back, knots[:, i])
        torch.testing.assert_close(back, t.detach(), rtol=0, atol=1e-9)
        # Through the public interface: sample at u, then log_prob is the log derivative of the CDF.
        assert torch.allclose(flow.sample_t(ctx, u.detach()[..., None], j), t.detach(), atol=1e-9)


def test_flow_density_is_normalized_in_x():
    flow = randomized(FlowSurrogate(SurrogateConfig()), 0.15, seed=3).double()
    theta = draw_prior(flow.config.physics, 4, 9)
    for j, spec in enumerate(flow.config.physics.datasets):
        # Midpoint rule uniform in x (not in the flow's own coordinate): the spline density is only C1 at its
        # knots, where a Gauss rule loses its order; 5e4 midpoints give ~1e-8.
        n = 50_000
        width = spec.x_max - spec.x_min
        x = spec.x_min + width * (torch.arange(n, dtype=torch.float64) + 0.5) / n
        mass = flow.log_prob(x, theta, j).exp().mean(-1) * width
        torch.testing.assert_close(mass, torch.ones(4, dtype=torch.float64), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_samples_follow_theta_dtype_and_are_reparameterised(kind):
    model = randomized(build_surrogate(small_config(kind)), scale=0.3)
    theta64 = draw_prior(model.config.physics, 3, 2)
    for dtype in (torch.float32, torch.float64):
        model = model.to(dtype)
        theta = theta64.to(dtype).requires_grad_()
        x = model.sample(theta, 7, "sigma2_high", generator=torch.Generator().manual_seed(0))
        assert x.shape == (3, 7) and x.dtype == dtype and x.device == theta.device
        assert bool(((x >= 0.3) & (x <= 1.0)).all())
        (grad,) = torch.autograd.grad(x.sum(), theta)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    model = model.double()
    noise = torch.rand(3, 7, model.noise_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    noise = noise[..., 0] if model.noise_dim == 1 else noise
    a = model.sample(theta64, 7, 1, noise=noise)
    torch.testing.assert_close(a, model.sample(theta64, 7, 1, noise=noise))  # common random numbers
    # Pathwise gradient against central finite differences at the same noise.
    theta = theta64.clone().requires_grad_()
    (grad,) = torch.autograd.grad(model.sample(theta, 7, 1, noise=noise).sum(), theta)
    h = 1e-6
    for k in range(theta64.shape[1]):
        e = torch.zeros_like(theta64)
        e[:, k] = h
        fd = (model.sample(theta64 + e, 7, 1, noise=noise) - model.sample(theta64 - e, 7, 1, noise=noise)).sum(1)
        torch.testing.assert_close(grad[:, k], fd / (2 * h), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="noise must have shape"):
        model.sample(theta64, 7, 1, noise=torch.rand(3, 8, dtype=torch.float64))


def test_ks_and_wasserstein_on_known_distributions():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 4000, generator=g, dtype=torch.float64)
    b = torch.rand(2, 4000, generator=g, dtype=torch.float64)
    shifted = b + 0.1
    # Uniform vs uniform shifted by 0.1: KS = 0.1, W1 = 0.1 (up to sampling noise ~ 1/sqrt(n)).
    torch.testing.assert_close(ks_2samp(a, shifted), torch.full((2,), 0.1, dtype=torch.float64), atol=0.03, rtol=0)
    torch.testing.assert_close(
        wasserstein_1d(a, shifted), torch.full((2,), 0.1, dtype=torch.float64), atol=0.01, rtol=0
    )
    assert float(ks_2samp(a, b).max()) < 0.04  # 99.9 % quantile of the null: 1.95 sqrt(2 / 4000) = 0.044


@pytest.mark.parametrize("kind", KINDS)
def test_each_surrogate_beats_a_parameter_blind_reference(trained, kind):
    quality, _ = evaluate(trained[kind], small_config(kind).evaluation)
    learned, blind = quality["ks"]["mean"], quality["wrong_theta_reference"]["ks"]["mean"]
    assert learned < 0.5 * blind, (kind, learned, blind)
    assert quality["wasserstein"]["mean"] < 0.5 * quality["wrong_theta_reference"]["wasserstein"]["mean"]
    if kind == "flow":
        assert quality["log_prob_abs_error"]["mean"] < 0.2


@pytest.mark.parametrize("kind", KINDS)
def test_model_file_round_trip(trained, kind, tmp_path):
    model = trained[kind]
    path = model.save(tmp_path / "model.pt", {"note": "x"})
    loaded, extra = load_surrogate(path, kind=kind, physics=PhysicsConfig())
    assert extra == {"note": "x"} and type(loaded) is type(model)
    theta = draw_prior(model.config.physics, 2, 4).float()
    noise = torch.rand(2, 9, model.noise_dim, generator=torch.Generator().manual_seed(0))
    noise = noise[..., 0] if model.noise_dim == 1 else noise
    torch.testing.assert_close(loaded.sample(theta, 9, 0, noise=noise), model.sample(theta, 9, 0, noise=noise))
    if model.has_log_prob:
        x = loaded.sample(theta, 9, 3, noise=noise)
        torch.testing.assert_close(loaded.log_prob(x, theta, 3), model.log_prob(x, theta, 3))


def test_bad_model_files_are_refused_by_name(trained, tmp_path):
    path = trained["flow"].save(tmp_path / "flow.pt")
    with pytest.raises(SurrogateFileError, match=r"holds a 'flow' surrogate, but the config asks for 'vae'"):
        load_surrogate(path, kind="vae")
    other = PhysicsConfig().model_dump()
    other["parameters"][2]["high"] = 6.0
    with pytest.raises(SurrogateFileError, match=r"other physics.*parameters"):
        load_surrogate(path, physics=PhysicsConfig.model_validate(other))
    other = PhysicsConfig().model_dump()
    other["datasets"][0]["x_max"] = 0.25
    with pytest.raises(SurrogateFileError, match="datasets"):
        load_surrogate(path, physics=PhysicsConfig.model_validate(other))
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(SurrogateFileError, match=r"damaged\.pt: not a readable surrogate"):
        load_surrogate(damaged)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(SurrogateFileError, match=r"notes\.pt"):
        load_surrogate(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(SurrogateFileError, match="not a surrogate model file"):
        load_surrogate(foreign)
    with pytest.raises(SurrogateFileError, match="not found"):
        load_surrogate(tmp_path / "missing.pt")


def test_sampler_section_errors_name_the_field():
    with pytest.raises(ValueError, match="path"):
        GANConfig.model_validate({"sampler": {"kind": "flow"}})
    with pytest.raises(ValueError, match="path"):
        GANConfig.model_validate({"sampler": {"kind": "exact", "path": "model.pt"}})


@pytest.mark.parametrize("kind", ["flow", "vae"])
def test_gan_inverse_solver_runs_on_a_saved_surrogate(trained, kind, tmp_path, experiment_b, data_b):
    path = trained[kind].save(tmp_path / f"{kind}.pt")
    cfg = GANConfig.model_validate(
        {
            "sampler": {"kind": kind, "path": str(path)},
            "discriminator": {"depth": 1, "width": 8},
            "training": {"replicas": 3, "steps": 4, "events_per_param": 64, "progress": False},
        }
    )
    model = InverseGAN(cfg, experiment_b, data_b)
    assert model.sampler.kind == kind and not any(p.requires_grad for p in model.sampler.parameters())
    before = model.generator.offset.detach().clone()
    fit_gan(model, progress=False)
    assert torch.isfinite(model.theta_history).all()
    assert not torch.equal(before, model.generator.offset.detach())
    wrong = cfg.model_dump()
    wrong["sampler"] = {"kind": "gan", "path": str(path)}
    with pytest.raises(SurrogateFileError, match=r"gan\.sampler\.path: .*asks for 'gan'"):
        InverseGAN(GANConfig.model_validate(wrong), experiment_b, data_b)


def test_train_command_writes_a_loadable_model_and_resumes(tmp_path, capsys):
    cfg = tmp_path / "flow.yaml"
    cfg.write_text(
        "kind: flow\nsimulation: {n_params: 200, events_per_param: 16}\nflow: {bins: 6, depth: 1, width: 16}\n"
        "training: {steps: 12, batch_params: 32, checkpoint_every: 5, accelerator: cpu}\n"
        "evaluation: {n_params: 3, n_samples: 500, plot_params: 1}\ncounts: {adam_steps: 20, lbfgs_steps: 20}\n"
    )
    out = tmp_path / "run"
    assert train_main(["--config", str(cfg), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["kind"] == "flow"
    assert {"ks", "wasserstein", "log_prob_abs_error", "noise_floor"} <= set(summary["quality"])
    for name in ("model.pt", "densities.png", "training.png", "report.md", "training_set.pt", "checkpoints/last.ckpt"):
        assert (out / name).is_file(), name
    _, extra = load_surrogate(out / "model.pt", kind="flow", physics=PhysicsConfig())
    assert extra["trained_steps"] == 12
    # A finished run is not silently overwritten; --resume continues it; a changed config is refused.
    assert train_main(["--config", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert "holds a run already" in capsys.readouterr().err
    assert train_main(["--config", str(cfg), "--out", str(out), "--quiet", "--resume", "--steps", "20"]) == 2
    assert "differing fields: training.steps" in capsys.readouterr().err
    assert train_main(["--config", str(cfg), "--out", str(out), "--quiet", "--resume", "--eval-params", "2"]) == 0
    assert json.loads((out / "summary.json").read_text())["training_set"]["reused"] is True


class _Crash(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if int(pl_module.step_count) == 6:
            raise RuntimeError("simulated crash")


def test_resumed_surrogate_training_equals_an_uninterrupted_one(train_set, tmp_path):
    theta, t = train_set
    cfg = small_config("vae", steps=10, training={"checkpoint_every": 4})
    torch.manual_seed(0)
    straight = build_surrogate(cfg)
    fit_surrogate(straight, theta, t, tmp_path / "a", progress=False)
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_surrogate(build_surrogate(cfg), theta, t, tmp_path / "b", progress=False, callbacks=[_Crash()])
    torch.manual_seed(1)  # different initial weights: the checkpoint must replace them
    resumed = build_surrogate(cfg)
    module = fit_surrogate(resumed, theta, t, tmp_path / "b", resume=True, progress=False)
    assert int(module.step_count) == 10
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_surrogate_mle_maximizes_the_surrogate_likelihood(trained, experiment_b, data_b):
    from physics.likelihood import ExtendedLikelihood, fit_mle

    exact = fit_mle(ExtendedLikelihood(experiment_b, data_b), n_starts=2).theta
    flow = copy.deepcopy(trained["flow"]).double()
    est = surrogate_mle(flow, experiment_b, data_b, exact)
    low, high = np.asarray(experiment_b.theory.low), np.asarray(experiment_b.theory.high)
    assert np.all((est > low) & (est < high))

    @torch.no_grad()
    def log_l(theta: np.ndarray) -> float:
        t = torch.tensor(theta[None], dtype=torch.float64)
        nu = experiment_b.expected_counts(t)[0]
        shapes = sum(flow.log_prob(torch.as_tensor(x), t, j).sum() for j, x in enumerate(data_b.events))
        return float(shapes - (nu - torch.tensor(data_b.counts) * nu.log()).sum())

    assert log_l(est) > log_l(exact)  # it moved uphill from the exact MLE, to the surrogate's own optimum
    with pytest.raises(ValueError, match="no density"):
        surrogate_mle(trained["gan"], experiment_b, data_b, exact)
