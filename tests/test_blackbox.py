"""The black-box path: simulator contract and refusals, learned counts, and a GAN fit that never calls the theory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import physics.datasets as physics_datasets
import physics.likelihood as physics_likelihood
import physics.theory as physics_theory
from inverse.gan.config import GANConfig
from inverse.gan.diagnostics import gradient_contract
from inverse.gan.model import InverseGAN
from inverse.gan.sampler import learned_experiment
from inverse.gan.training import fit_gan
from physics.config import PhysicsConfig
from physics.datasets import Experiment
from physics.likelihood import ExtendedLikelihood, cramer_rao, fisher_information, fit_mle
from physics.pseudodata import generate_pseudodata
from physics.simulators import load_event_simulator, simulate, toy
from surrogates.config import CountsConfig, SurrogateConfig
from surrogates.counts import CountModel, fit_counts
from surrogates.experiment import SurrogateExperiment, surrogate_fisher
from surrogates.fidelity import SurrogateLikelihood
from surrogates.io import load_surrogate
from surrogates.simulate import draw_prior
from surrogates.train import train_surrogate

TRUTH = np.array([2.1875, -0.5, 3.0, 1.09375, -0.5, 4.0])


def test_shipped_toy_simulator_gives_exact_counts_and_reproducible_events():
    experiment = Experiment(PhysicsConfig())
    out = simulate(load_event_simulator("physics.simulators:toy"), TRUTH, [5, 6, 7, 8], seed=3, n_datasets=4)
    assert [x.shape for x in out.events] == [(5, 1), (6, 1), (7, 1), (8, 1)]
    exact = experiment.expected_counts(torch.tensor(TRUTH)[None])[0].numpy()
    np.testing.assert_allclose(out.expected, exact, rtol=1e-12)
    for x, d in zip(out.events, experiment.datasets):
        assert d.spec.x_min <= x.min() and x.max() <= d.spec.x_max
    again = toy(TRUTH, [5, 6, 7, 8], seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(out.events, again["events"]))
    assert not np.array_equal(out.events[0], toy(TRUTH, [5, 6, 7, 8], seed=4)["events"][0])


def _returning(result):
    return lambda theta, n, seed: result


@pytest.mark.parametrize(
    ("simulator", "message"),
    [
        (_returning([1, 2]), "must return a mapping with 'events'"),
        (_returning({"events": [np.zeros((3, 1))] * 3, "expected": [1.0] * 4}), "one array per dataset"),
        (_returning({"events": [np.zeros((2, 1))] * 4, "expected": [1.0] * 4}), "must be \\[3, 1\\]"),
        (_returning({"events": [np.full((3, 1), np.nan)] * 4, "expected": [1.0] * 4}), "not all finite"),
        (_returning({"events": [np.zeros((3, 1))] * 4}), "'expected' \\(event counts\\) or 'cross_section'"),
        (_returning({"events": [np.zeros((3, 1))] * 4, "expected": [1.0, 0.0, 1.0, 1.0]}), "positive finite"),
        (_returning({"events": [np.zeros((3, 1))] * 4, "cross_section": [1.0] * 4}), "give the luminosity"),
        (
            _returning({"events": [np.zeros((3, 1))] * 4, "expected": [1.0] * 4, "weights": [[-1.0] * 3] * 4}),
            "non-negative weight",
        ),
        (lambda theta, n, seed: 1 / 0, "the call at theta .* failed \\(ZeroDivisionError"),
    ],
)
def test_simulator_refusals_name_the_field(simulator, message):
    with pytest.raises(ValueError, match=f"simulation.simulator: .*{message}"):
        simulate(simulator, TRUTH, 3, 0, n_datasets=4, event_dim=1, field="simulation.simulator")


def test_cross_sections_become_counts_by_the_luminosities():
    result = {"events": [np.zeros((3, 1))] * 2, "cross_section": [2.0, 3.0]}
    out = simulate(_returning(result), TRUTH, 3, 0, n_datasets=2, luminosity=[10.0, 100.0])
    np.testing.assert_allclose(out.expected, [20.0, 300.0])


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("physics.simulators", None, "expected 'package.module:function'"),
        ("physics.nowhere:toy", None, "cannot import module 'physics.nowhere'"),
        ("physics.simulators:nothing", None, "has no attribute 'nothing'"),
        ("physics.simulators:__all__", None, "is not callable"),
        ("physics.simulators:toy", {"colour": 1}, "does not take the arguments \\['colour'\\]"),
    ],
)
def test_loading_a_simulator_refuses_by_name(spec, kwargs, message):
    with pytest.raises(ValueError, match=f"simulation.simulator: .*{message}"):
        load_event_simulator(spec, kwargs, "simulation.simulator")


def test_learned_counts_match_exact_counts_near_the_truth_on_held_out_parameters():
    physics = PhysicsConfig()
    experiment = Experiment(physics)
    theta = draw_prior(physics, 3000, seed=0)
    config = CountsConfig(adam_steps=1000, lbfgs_steps=2000)
    model = CountModel(torch.tensor(physics.low), torch.tensor(physics.high), 4, config)
    fit_counts(model, theta, experiment.expected_counts(theta), config)
    span = torch.tensor(physics.high, dtype=torch.float64) - torch.tensor(physics.low, dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    near = torch.tensor(TRUTH) + 0.03 * span * (2.0 * torch.rand(500, 6, generator=g, dtype=torch.float64) - 1.0)
    exact = experiment.expected_counts(near)
    with torch.no_grad():
        learned = model.double()(near)
    # In Poisson sd of case B's counts (7345, 2655, 3840, 1160 at the truth): the count term's own precision.
    pull = ((learned - exact) / exact.sqrt()).abs()
    assert float(pull.mean()) < 0.1, float(pull.mean())
    assert float(((learned / exact) - 1.0).abs().median()) < 2e-3


@pytest.fixture(scope="module")
def black_box_flow(tmp_path_factory) -> Path:
    """A small flow and its counts, trained only on the shipped toy simulator's events and counts."""
    out = tmp_path_factory.mktemp("blackbox")
    config = SurrogateConfig.model_validate(
        {
            "simulation": {"n_params": 400, "events_per_param": 128, "simulator": "physics.simulators:toy"},
            "training": {"steps": 400, "batch_params": 64, "progress": False, "threads": 1},
            "counts": {"adam_steps": 500, "lbfgs_steps": 200},
            "evaluation": {"n_params": 5, "n_samples": 500, "plot_params": 0},
        }
    )
    train_surrogate(config, out, plots=False, progress=False)
    return out / "model.pt"


def test_surrogate_fisher_is_near_the_exact_one(black_box_flow):
    flow, _ = load_surrogate(black_box_flow)
    experiment = Experiment(PhysicsConfig())
    theta = torch.tensor(TRUTH)[None]
    learned = surrogate_fisher(flow.double(), theta)
    exact = fisher_information(experiment, theta)
    ratio = torch.diagonal(learned, 0, 1, 2) / torch.diagonal(exact, 0, 1, 2)
    # A small surrogate (400 parameter sets): within 40 %, symmetric and positive definite.
    assert bool(((ratio > 0.6) & (ratio < 1.4)).all()), ratio
    torch.testing.assert_close(learned, learned.transpose(1, 2))
    assert bool((torch.linalg.eigvalsh(learned) > 0).all())


def test_the_gan_on_a_black_box_flow_never_calls_the_theory(black_box_flow, monkeypatch):
    experiment = Experiment(PhysicsConfig())
    data = generate_pseudodata(experiment, seed=1)
    mle = fit_mle(ExtendedLikelihood(experiment, data)).theta
    sd = cramer_rao(fisher_information(experiment, torch.tensor(mle)[None]))[0][0].numpy()
    luminosity = [d.luminosity for d in experiment.datasets]
    flow, _ = load_surrogate(black_box_flow)
    assert isinstance(learned_experiment(flow, experiment), SurrogateExperiment)

    def forbidden(*args, **kwargs):
        raise AssertionError("the theory was called")

    for name in ("terms", "check_theta", "truth_tensor", "pdfs"):
        if hasattr(physics_theory.Theory, name):
            monkeypatch.setattr(physics_theory.Theory, name, forbidden)
    monkeypatch.setattr(physics_datasets.Experiment, "expected_counts", forbidden)
    monkeypatch.setattr(physics_datasets.Experiment, "sampler", forbidden)
    monkeypatch.setattr(physics_likelihood, "fisher_information", forbidden)
    config = GANConfig.model_validate(
        {"training": {"replicas": 4, "steps": 150, "events_per_param": 512, "progress": False, "threads": 1}}
    )
    model = InverseGAN(config, SurrogateExperiment(flow, luminosity), data, sampler=flow)
    fit_gan(model, None, progress=False)
    # The replicas start spread over the box; they must end around the MLE of the data, within the Cramér–Rao sd
    # of every parameter (the replicas' bootstrap spread is about one sd; this small flow's own MLE is 0.6 sd off).
    offset = (model.estimates().double().mean(0).numpy() - mle) / sd
    assert np.abs(offset).max() < 1.0, offset


def test_the_gradient_contract_follows_the_surrogates_own_likelihood(black_box_flow):
    """Away from the optimum the GAN's gradient on a flow is the gradient of the flow's own likelihood."""
    experiment = Experiment(PhysicsConfig())
    data = generate_pseudodata(experiment, seed=1)
    flow, _ = load_surrogate(black_box_flow)
    luminosity = [d.luminosity for d in experiment.datasets]
    like = SurrogateLikelihood(flow.double(), data, luminosity)
    mle = fit_mle(like, n_starts=1).theta
    sd = cramer_rao(surrogate_fisher(flow, torch.tensor(mle)[None], luminosity=torch.tensor(luminosity)))[0][0]
    theta = mle + sd.numpy() * np.array([1.0, 0.0, 0.0, -1.0, 0.0, 0.0])
    contract = gradient_contract(GANConfig(), experiment, data, theta, d_train_steps=300, sampler=flow.float())
    assert contract.cosine > 0.98, contract
    assert 0.9 < contract.norm_ratio < 1.1, contract
    reference = -torch.func.grad(lambda th: like(th[None])[0])(torch.tensor(theta)).numpy()
    np.testing.assert_allclose(contract.likelihood_gradient, reference, rtol=1e-6)


def test_surrogate_likelihood_weights_count_events(black_box_flow):
    """Integer event weights are repeated events, and a surrogate without a density is refused."""
    flow, _ = load_surrogate(black_box_flow)
    flow = flow.double()
    rng = np.random.default_rng(0)
    events = [rng.uniform(0.2, 0.8, size=n) for n in (30, 20, 25, 10)]
    weights = [rng.integers(0, 3, size=len(x)).astype(float) for x in events]
    repeated = [np.repeat(x, w.astype(int)) for x, w in zip(events, weights)]
    theta = torch.tensor(np.stack([TRUTH, TRUTH * 0.95]))
    weighted = SurrogateLikelihood(flow, events, weights=weights)(theta)
    plain = SurrogateLikelihood(flow, repeated)(theta)
    torch.testing.assert_close(weighted, plain, rtol=1e-12, atol=1e-9)
    with pytest.raises(ValueError, match="weights have"):
        SurrogateLikelihood(flow, events, weights=[*weights[:3], np.ones(3)])


def test_a_surrogate_file_without_learned_counts_loads_and_keeps_the_theorys(black_box_flow, tmp_path):
    blob = torch.load(black_box_flow, weights_only=False)
    blob["state_dict"] = {k: v for k, v in blob["state_dict"].items() if not k.startswith("counts.")}
    torch.save(blob, tmp_path / "old.pt")
    flow, _ = load_surrogate(tmp_path / "old.pt")
    experiment = Experiment(PhysicsConfig())
    assert not flow.has_counts and learned_experiment(flow, experiment) is experiment
    with pytest.raises(ValueError, match="no learned expected counts"):
        flow.expected_counts(torch.tensor(TRUTH)[None])


def test_shipped_dis_simulator_gives_exact_counts_and_two_dimensional_events():
    from physics.dis.config import DISConfig
    from physics.dis.experiment import DISExperiment

    config = DISConfig()
    theta = np.array([p.truth for p in config.parameters])
    out = simulate(load_event_simulator("physics.simulators:dis"), theta, 50, seed=1, n_datasets=4, event_dim=2)
    exact = DISExperiment(config).expected_counts(torch.tensor(theta)[None])[0].numpy()
    np.testing.assert_allclose(out.expected, exact, rtol=1e-10)
    k = config.kinematics
    for x in out.events:
        assert x.shape == (50, 2) and ((x[:, 0] > 0) & (x[:, 0] < 1)).all()
        assert ((x[:, 1] >= k.q2_min) & (x[:, 1] <= k.q2_max)).all()
    again = simulate(load_event_simulator("physics.simulators:dis"), theta, 50, seed=1, n_datasets=4)
    assert all(np.array_equal(a, b) for a, b in zip(out.events, again.events))
