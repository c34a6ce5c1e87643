"""Lightning training: an interrupted run resumed from its checkpoint equals an uninterrupted one; a NaN stops
training with the step number while the last checkpoint survives; schedules."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from inverse.gan.config import GANConfig, SchedulerConfig
from inverse.gan.model import InverseGAN
from inverse.gan.training import fit_gan, schedule
from physics.sampling import EventSampler
from qcdgip.errors import NonFiniteLossError


def config(steps: int = 6) -> GANConfig:
    return GANConfig.model_validate(
        {
            "discriminator": {"depth": 1, "width": 8},
            "training": {
                "replicas": 2,
                "steps": steps,
                "events_per_param": 64,
                "checkpoint_every": 3,
                "progress": False,
                "dtype": "float64",
            },
        }
    )


class _Interrupt(L.Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if int(pl_module.model.step_count) == self.at:
            raise RuntimeError("simulated crash")


def test_resume_continues_the_same_run(experiment_b, data_b, tmp_path):
    straight = InverseGAN(config(), experiment_b, data_b)
    fit_gan(straight, tmp_path / "a")
    crashed = InverseGAN(config(), experiment_b, data_b)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_gan(crashed, tmp_path / "b", callbacks=[_Interrupt(4)])
    assert (tmp_path / "b" / "checkpoints" / "last.ckpt").is_file()
    resumed = InverseGAN(config(), experiment_b, data_b)
    module = fit_gan(resumed, tmp_path / "b", resume=True)
    assert len(module.step_seconds) == 3  # steps 4, 5, 6 only
    assert torch.allclose(resumed.theta_history, straight.theta_history, rtol=1e-10, atol=1e-12)
    assert torch.allclose(resumed.loss_history, straight.loss_history, rtol=1e-10, atol=1e-10)


class _BrokenSampler(EventSampler):
    """The exact sampler until ``after`` calls, then NaN events (a theory code that breaks mid-run)."""

    def __init__(self, inner: EventSampler, after: int) -> None:
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0
        self.dataset_names = inner.dataset_names

    def sample(self, theta, n, dataset, *, generator=None, noise=None):
        self.calls += 1
        x = self.inner.sample(theta, n, dataset, generator=generator, noise=noise)
        return x * float("nan") if self.calls > self.after else x


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(experiment_b, data_b, tmp_path):
    broken = _BrokenSampler(experiment_b.sampler(), after=4 * 4)  # 4 datasets per step: breaks in step 5
    model = InverseGAN(config(), experiment_b, data_b, sampler=broken)
    with pytest.raises(NonFiniteLossError, match=r"generator loss is not finite at step 5 .*last finite mean losses"):
        fit_gan(model, tmp_path)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert int(ckpt["state_dict"]["model.step_count"]) == 3


def test_schedules():
    cos = schedule(SchedulerConfig(kind="cosine", min_lr_ratio=0.1), steps=11)
    assert cos(0) == pytest.approx(1.0) and cos(10) == pytest.approx(0.1) and cos(5) == pytest.approx(0.55)
    warm = schedule(SchedulerConfig(kind="none", warmup_steps=4), steps=10)
    assert [warm(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    step = schedule(SchedulerConfig(kind="step", gamma=0.5, step_size=3), steps=10)
    assert [step(s) for s in (0, 2, 3, 7)] == [1.0, 1.0, 0.5, 0.25]


def test_default_natural_gradient_reaches_each_replicas_bootstrap_mle(experiment_b, data_b):
    import numpy as np

    from physics.bootstrap import fit_bootstrap_mles
    from physics.likelihood import cramer_rao, fisher_information
    from physics.pseudodata import poisson_replica_weights

    cfg = GANConfig.model_validate({"training": {"replicas": 2, "progress": False, "seed": 3}})
    model = InverseGAN(cfg, experiment_b, data_b)
    fit_gan(model)
    boot = fit_bootstrap_mles(experiment_b, data_b, poisson_replica_weights(data_b.counts, 2, seed=3))
    sd = cramer_rao(fisher_information(experiment_b, torch.tensor(boot)))[0].numpy()
    # Within a fraction of the statistical error of the answer each replica should reach.
    assert np.all(np.abs(model.estimates().double().numpy() - boot) / sd < 0.3)


def test_natural_gradient_step_is_capped_by_a_trust_region_that_follows_the_schedule():
    from inverse.gan.natural import NaturalGradient

    offset = torch.nn.Parameter(torch.zeros(2, 1, 3, dtype=torch.float64))
    metric = lambda: torch.eye(3, dtype=torch.float64).expand(2, 3, 3) * 4.0  # noqa: E731  posterior sd 0.5
    opt = NaturalGradient([offset], metric, lr=1.0, damping=0.0, max_step=2.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 if step == 0 else 0.5)
    offset.grad = torch.tensor([[[1e3, 0.0, 0.0]], [[1e-3, 0.0, 0.0]]], dtype=torch.float64)
    opt.step()
    # Replica 0: capped at Mahalanobis length 2 = 4 sd of 0.5 -> 1.0; replica 1: the plain Newton step 1e-3 / 4.
    assert offset[0, 0, 0].item() == pytest.approx(-1.0) and offset[1, 0, 0].item() == pytest.approx(-2.5e-4)
    sched.step()
    before = offset.detach().clone()
    opt.step()
    assert (before - offset.detach())[0, 0, 0].item() == pytest.approx(0.5)  # the cap halves with the rate
    offset.grad.fill_(-1e9)
    for _ in range(100):
        opt.step()
    assert 11.5 <= offset.max().item() <= 12.0  # theta stays strictly inside the box, held near the clamp


def test_natural_gradient_logit_step_cap_keeps_a_flat_coordinate_off_the_clamp():
    from inverse.gan.natural import NaturalGradient

    # Coordinate 2 near a box edge: its metric (d theta / d phi)^2 I is tiny, so the damping dominates it and the
    # damped natural step moves its phi by far more than the others'.
    metric = lambda: torch.diag(torch.tensor([4.0, 4.0, 1e-6], dtype=torch.float64))[None]  # noqa: E731
    steps = {}
    for cap in (None, 0.5):
        offset = torch.nn.Parameter(torch.zeros(1, 1, 3, dtype=torch.float64))
        opt = NaturalGradient([offset], metric, lr=1.0, damping=1e-3, max_step=2.0, max_logit_step=cap)
        offset.grad = torch.tensor([[[0.4, 0.0, 0.01]]], dtype=torch.float64)
        opt.step()
        steps[cap] = -offset.detach()[0, 0]
    free, capped = steps[None], steps[0.5]
    assert free[2] > 3.0  # the uncapped step throws the flat coordinate several units of phi
    assert capped.abs().max() == pytest.approx(0.5)  # every coordinate within the cap ...
    assert torch.allclose(capped / capped.norm(), free / free.norm())  # ... along the same direction


def test_natural_gradient_drops_a_clamped_coordinate_from_the_newton_system():
    from inverse.gan.natural import NaturalGradient

    # Coordinate 0 sits at the clamp with a gradient pushing it out; coordinate 1 is coupled to it (correlation
    # 0.9). The projected step moves coordinate 1 by its own conditional Newton step g_1 / I_11 alone.
    fisher = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    offset = torch.nn.Parameter(torch.tensor([[[12.0, 0.0]]], dtype=torch.float64))
    opt = NaturalGradient([offset], lambda: fisher[None], lr=1.0, damping=0.0, max_step=10.0)
    offset.grad = torch.tensor([[[-0.5, 0.2]]], dtype=torch.float64)
    opt.step()
    assert offset[0, 0, 0].item() == 12.0 and offset[0, 0, 1].item() == pytest.approx(-0.2)
    # inside the box the same gradient takes the full (coupled) Newton step
    offset.data = torch.tensor([[[0.0, 0.0]]], dtype=torch.float64)
    opt.step()
    expected = -torch.linalg.solve(fisher, torch.tensor([-0.5, 0.2], dtype=torch.float64))
    assert torch.allclose(offset.detach()[0, 0], expected)


def test_natural_gradient_in_the_box_returns_from_an_edge_and_never_jumps_to_one():
    from inverse.gan.natural import NaturalGradient

    # One coordinate, theta = sigmoid(phi) on the unit box, -log L = (theta - target)^2 / (2 sd^2): the metric in
    # phi is J^2 / sd^2 and the gradient J (theta - target) / sd^2, with J = s (1 - s).
    sd = 0.05

    def run(phi0: float, target: float, steps: int, every: int = 1) -> list[float]:
        offset = torch.nn.Parameter(torch.tensor([[[phi0]]], dtype=torch.float64))

        def jac() -> torch.Tensor:
            s = torch.sigmoid(offset.detach())
            return s * (1 - s)

        metric = lambda: (jac() ** 2 / sd**2).reshape(1, 1, 1)  # noqa: E731
        opt = NaturalGradient([offset], metric, lr=1.0, damping=0.0, max_step=2.0, metric_every=every, step_space="box")
        path = []
        for _ in range(steps):
            offset.grad = jac() * (torch.sigmoid(offset.detach()) - target) / sd**2
            opt.step()
            path.append(torch.sigmoid(offset.detach()).item())
        return path

    back = run(-7.4, 0.6, 12)  # stuck at the lower edge, the optimum 12 sd inside
    assert back[0] == pytest.approx(torch.sigmoid(torch.tensor(-7.4)).item() + 2 * sd, rel=1e-6)  # a 2 sd step
    assert abs(back[-1] - 0.6) < 1e-6  # reaches the optimum, no bouncing
    # A metric kept for 20 steps: its box part holds, the Jacobian is the current one (a stale Jacobian would
    # inflate the second step by (J_now / J_then)^2, some 10^5 here, and throw s to the other edge).
    assert abs(run(-7.4, 0.6, 12, every=20)[-1] - 0.6) < 1e-6
    out = run(0.0, -0.5, 20)  # the optimum is beyond the lower edge: each step at most halves the distance
    assert all(b >= a / 2 - 1e-15 for a, b in zip([0.5, *out], out)) and out[-1] > 0


def test_natural_gradient_in_the_box_re_solves_the_others_when_an_edge_cuts_a_coordinate_short():
    from inverse.gan.natural import NaturalGradient

    # A 0.99-correlated quadratic on the unit box whose optimum lies beyond the upper edge of coordinate 0. On the
    # box the minimum has s_0 at the edge and s_1 at its conditional optimum given s_0 = 1; the unconstrained
    # optimum's s_1 is far from it. Started next to the edge, every step is cut there, and the re-solved steps
    # lead s_1 to the constrained minimum instead of along the ridge.
    cov = torch.tensor([[1.0, 0.99], [0.99, 1.0]], dtype=torch.float64) * 0.01
    fisher = torch.linalg.inv(cov)
    optimum = torch.tensor([1.3, 0.6], dtype=torch.float64)
    constrained = optimum[1] + cov[1, 0] / cov[0, 0] * (1.0 - optimum[0])  # E[s_1 | s_0 = 1]
    offset = torch.nn.Parameter(torch.logit(torch.tensor([[[0.999, 0.5]]], dtype=torch.float64)))

    def jac() -> torch.Tensor:
        s = torch.sigmoid(offset.detach())
        return (s * (1 - s)).reshape(1, 2)

    metric = lambda: jac()[:, :, None] * fisher * jac()[:, None, :]  # noqa: E731
    opt = NaturalGradient([offset], metric, lr=1.0, damping=0.0, max_step=100.0, step_space="box")
    for _ in range(30):
        s = torch.sigmoid(offset.detach()).reshape(2)
        offset.grad = (jac() * (fisher @ (s - optimum))).reshape(1, 1, 2)
        opt.step()
    s = torch.sigmoid(offset.detach()).reshape(2)
    assert s[0] > 1 - 1e-4 and abs(float(s[1] - constrained)) < 1e-3, (s, constrained)  # phi is clamped at 12


def test_optimizer_defaults_and_partial_sections():
    default = GANConfig()
    assert default.optimizer_g.name == "natural" and default.loss.kind == "density_ratio"
    tuned = GANConfig.model_validate({"optimizer_g": {"lr": 0.5}, "optimizer_d": {"lr": 0.02}})
    assert tuned.optimizer_g.name == "natural" and tuned.optimizer_g.lr == 0.5 and tuned.optimizer_g.max_step == 2.0
    assert tuned.optimizer_d.name == "adam" and tuned.optimizer_d.betas == (0.5, 0.9)
    adam = GANConfig.model_validate({"optimizer_g": {"name": "adam"}, "generator": {"kind": "mlp"}})
    assert adam.optimizer_g.lr == 0.02 and adam.optimizer_g.betas == (0.5, 0.9)
    assert GANConfig.model_validate({"optimizer_g": {"name": "sgd"}}).optimizer_g.lr == 0.01  # the class default
    with pytest.raises(ValueError, match=r"mlp generator set optimizer_g: \{name: adam\}"):
        GANConfig.model_validate({"generator": {"kind": "mlp"}})


def test_unweighted_replicas_and_automatic_chunks(experiment_b, data_b):
    model = InverseGAN(
        GANConfig.model_validate({"training": {"replicas": 60, "bootstrap": False}}), experiment_b, data_b
    )
    assert [c.stop - c.start for c in model.chunks()] == [25, 25, 10]
    assert model.weights(1).shape == (60, data_b.counts[1]) and bool((model.weights(1) == 1).all())
    assert model.observed[0].tolist() == [float(c) for c in data_b.counts]


def test_natural_gradient_config_errors():
    with pytest.raises(ValueError, match=r"generator\.kind: point"):
        GANConfig.model_validate({"optimizer_g": {"name": "natural"}, "generator": {"kind": "mlp"}})
    with pytest.raises(ValueError, match="generator only"):
        GANConfig.model_validate({"optimizer_d": {"name": "natural"}})
