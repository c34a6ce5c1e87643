"""Events of any dimension: the d-dimensional autoregressive spline flow and the DIS (x, Q^2) flow surrogate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

import physics.dis.experiment as dis_experiment_module
from inverse.gan.config import GANConfig, SamplerConfig
from inverse.gan.model import InverseGAN
from inverse.gan.refinement import main as refinement_main
from inverse.gan.sampler import build_sampler, learned_experiment
from inverse.gan.training import fit_gan
from physics.config import PhysicsConfig
from physics.dis import DISConfig, DISExperiment
from physics.dis.pseudodata import generate_dis_events
from physics.dis.sampling import DISSampler
from physics.pseudodata import EventData
from surrogates.autoregressive import AutoregressiveSplineFlow
from surrogates.base import SurrogateFileError
from surrogates.config import SurrogateConfig
from surrogates.dis_flow import DISFlowSurrogate, WindowCoordinates
from surrogates.experiment import SurrogateExperiment
from surrogates.io import load_surrogate
from surrogates.simulate import draw_prior, simulated_events
from surrogates.train import train_surrogate


def _random_flow(dim: int, seed: int = 0, grid: int = 0) -> AutoregressiveSplineFlow:
    torch.manual_seed(seed)
    flow = AutoregressiveSplineFlow(dim, 8, 2, 3, 16, 2, "silu", grid).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))  # away from the identity it starts at
    return flow


def _inverse(flow: AutoregressiveSplineFlow, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    z = t
    for layer in flow.layers:
        z, _ = layer.inverse(z, ctx)
    return z


@pytest.mark.parametrize(("dim", "grid"), [(1, 0), (2, 0), (3, 0), (2, 8), (3, 5)])
def test_autoregressive_flow_round_trips_and_its_log_det_matches_autograd(dim, grid):
    flow = _random_flow(dim, grid=grid)
    ctx = torch.randn(3, 3, dtype=torch.float64)
    u = torch.rand(3, 40, dim, dtype=torch.float64)
    t = flow.sample(u, ctx).detach()
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    torch.testing.assert_close(_inverse(flow, t, ctx), u, atol=1e-10, rtol=0)
    for i in range(4):
        point = t[0, i]
        jac = torch.autograd.functional.jacobian(lambda v: _inverse(flow, v[None, None], ctx[:1])[0, 0], point)
        # The base is uniform on the cube: log q(t) = log |det du/dt|.
        expected = torch.linalg.slogdet(jac).logabsdet
        torch.testing.assert_close(flow.log_prob(point[None, None], ctx[:1])[0, 0], expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("grid", [0, 8])
def test_autoregressive_flow_density_integrates_to_one_on_the_square(grid):
    flow = _random_flow(2, seed=3, grid=grid)
    m = 1000
    mid = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    a, b = torch.meshgrid(mid, mid, indexing="ij")
    points = torch.stack([a, b], -1).reshape(1, -1, 2)
    ctx = torch.randn(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        integral = flow.log_prob(points, ctx).exp().mean()
    assert abs(float(integral) - 1.0) < 1e-3


@pytest.mark.parametrize("grid", [0, 8])
def test_autoregressive_samples_are_reparameterised_in_the_condition(grid):
    flow = _random_flow(2, seed=5, grid=grid)
    ctx = torch.randn(1, 3, dtype=torch.float64, requires_grad=True)
    u = torch.rand(1, 6, 2, dtype=torch.float64)
    (grad,) = torch.autograd.grad(flow.sample(u, ctx).sum(), ctx)
    h = 1e-6
    for k in range(3):
        step = torch.zeros_like(ctx)
        step[0, k] = h
        with torch.no_grad():
            fd = (flow.sample(u, ctx + step).sum() - flow.sample(u, ctx - step).sum()) / (2 * h)
        assert abs(float(fd) - float(grad[0, k])) < 1e-6 * max(1.0, abs(float(fd)))


def test_autoregressive_flow_refuses_misshapen_events():
    flow = _random_flow(2)
    with pytest.raises(ValueError, match=r"events must have shape \[B, n, 2\]"):
        flow.log_prob(torch.rand(2, 5, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="order"):
        type(flow.layers[0])(2, 8, 3, 16, 2, "silu", [0, 0])
    with pytest.raises(ValueError, match="grid"):
        SurrogateConfig.model_validate({"flow": {"grid": 1}})


@pytest.fixture(scope="module")
def dis_experiment():
    return DISExperiment(DISConfig())


def test_window_coordinates_round_trip_and_log_jacobian(dis_experiment):
    coords = WindowCoordinates(dis_experiment.config)
    theta = dis_experiment.truth_tensor()
    events = DISSampler(dis_experiment).sample(theta, 200, 1, generator=torch.Generator().manual_seed(0))[0]
    t, log_jac = coords.to_unit(events, 1)
    assert bool(coords.inside(t).all())
    torch.testing.assert_close(coords.from_unit(t, 1), events, rtol=1e-10, atol=0)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda e: coords.to_unit(e, 1)[0], events[i])
        torch.testing.assert_close(log_jac[i], torch.linalg.slogdet(jac).logabsdet, rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def dis_flow(tmp_path_factory):
    """A small DIS flow trained on exact (x, Q^2) events (about a minute on 2 cores; the tests using it are slow)."""
    out = tmp_path_factory.mktemp("dis-flow")
    config = SurrogateConfig.model_validate({
        "kind": "flow", "dis": {},
        "simulation": {"n_params": 1000, "events_per_param": 64},
        "flow": {"bins": 16, "layers": 2, "depth": 2, "width": 32},
        "counts": {"n_params": 1000, "adam_steps": 300, "lbfgs_steps": 300},
        "training": {"steps": 600, "batch_params": 64, "progress": False, "threads": 2},
        "evaluation": {"n_params": 6, "n_samples": 4000, "plot_params": 1},
    })  # fmt: skip
    summary = train_surrogate(config, out, plots=False, progress=False)
    return out / "model.pt", summary


@pytest.mark.slow
def test_dis_flow_learns_the_event_density_and_counts(dis_flow):
    _, summary = dis_flow
    q = summary["quality"]
    # A flow that ignores its parameters is as far as exact events of other held-out sets: the trained flow must
    # be clearly closer, and lose little likelihood per event against the exact density.
    assert q["ks"]["mean"] < 0.5 * q["wrong_theta_reference"]["ks"]["mean"], q["ks"]
    assert q["kl_nats_per_event"]["mean"] < 0.05, q["kl_nats_per_event"]
    assert q["counts"]["relative_error"]["median"] < 0.02, q["counts"]


@pytest.mark.slow
def test_dis_flow_density_is_normalised_per_unit_x_and_q2(dis_flow, dis_experiment):
    flow, _ = load_surrogate(dis_flow[0], physics=dis_experiment.config)
    flow = flow.double()
    theta = dis_experiment.truth_tensor()
    m = 300
    mid = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    a, b = torch.meshgrid(mid, mid, indexing="ij")
    t = torch.stack([a, b], -1).reshape(-1, 2)
    for j in range(flow.n_datasets):
        events = flow.coordinates.from_unit(t, j)
        _, log_jac = flow.coordinates.to_unit(events, j)
        # Integral over the window of q(x, Q^2) dx dQ^2 = mean over the unit square of q / |dt / d(x, Q^2)|.
        integral = (flow.log_prob(events, theta, j)[0] - log_jac).exp().mean()
        assert abs(float(integral) - 1.0) < 5e-3, (j, float(integral))


@pytest.mark.slow
def test_dis_gan_on_the_flow_never_calls_the_theory(dis_flow, dis_experiment, monkeypatch):
    config = SamplerConfig(kind="flow", path=str(dis_flow[0]))
    flow = build_sampler(config, dis_experiment)
    assert isinstance(flow, DISFlowSurrogate) and flow.event_dim == 2
    learned = learned_experiment(flow, dis_experiment)
    assert isinstance(learned, SurrogateExperiment)
    assert learned.luminosity.tolist() == [dis_experiment.luminosity] * len(dis_experiment.names)
    events = [e.numpy() for e in generate_dis_events(dis_experiment, 1)]
    data = EventData(list(dis_experiment.names), events, {"seed": 1})

    def forbidden(*args, **kwargs):
        raise AssertionError("the theory was called")

    for name in ("node_values", "vertex_values", "expected_counts", "fisher_information", "log_intensity"):
        monkeypatch.setattr(dis_experiment_module.DISExperiment, name, forbidden)
    gan = GANConfig.model_validate({
        "sampler": {"kind": "flow", "path": str(dis_flow[0])},
        "discriminator": {"features": "log", "set_size": 1, "depth": 0, "degree": 2},
        "optimizer_g": {"name": "natural", "lr": 0.5, "metric_every": 10, "step_space": "box"},
        "optimizer_d": {"name": "newton", "lr": 0.5},
        "training": {"replicas": 3, "steps": 40, "events_per_param": 1024, "uniforms": "sobol", "progress": False,
                     "threads": 2},
    })  # fmt: skip
    model = InverseGAN(gan, dis_experiment, data)
    start = model.estimates().double().clone()
    fit_gan(model, None, progress=False)
    end = model.estimates().double()
    assert torch.isfinite(end).all()
    low, high = dis_experiment.bounds()
    assert bool(((end >= low) & (end <= high)).all())
    assert float((end - start).abs().max()) > 0.0


def test_dis_surrogate_runcard_refusals_name_the_field():
    with pytest.raises(ValueError, match=r"kind: .*flow only"):
        SurrogateConfig.model_validate({"kind": "gan", "dis": {}})
    with pytest.raises(ValueError, match=r"dis\.detector"):
        SurrogateConfig.model_validate({"kind": "flow", "dis": {"detector": {}}})
    with pytest.raises(ValueError, match="a DIS flow needs the dis section"):
        DISFlowSurrogate(SurrogateConfig())


@pytest.mark.slow
def test_dis_surrogate_file_refusals_name_the_field(dis_flow, dis_experiment):
    with pytest.raises(SurrogateFileError, match="trained for inclusive DIS, not the toy"):
        load_surrogate(dis_flow[0], physics=PhysicsConfig())
    other = DISConfig.model_validate({"datasets": [{"name": "a", "q2_min": 4.0, "q2_max": 40.0}]})
    with pytest.raises(SurrogateFileError, match="datasets"):
        load_surrogate(dis_flow[0], physics=other)
    with pytest.raises(ValueError, match=r"gan\.sampler\.kind: DIS events come from"):
        build_sampler(SamplerConfig(kind="vae", path=str(dis_flow[0])), dis_experiment)


def test_simulated_dis_events_outside_their_window_are_refused(dis_experiment):
    config = dis_experiment.config
    theta = draw_prior(config, 2, 0)

    def shifted(theta, n, seed):
        from physics.simulators import dis

        out = dis(theta, n, seed)
        out["events"][2][0, 1] = 5000.0  # a Q^2 beyond the window's
        return out

    with pytest.raises(ValueError, match=r"simulation\.simulator: events of dataset 'Q2_40_160' leave its Q"):
        simulated_events(shifted, config, theta, 8, 0)
    x, expected = simulated_events(lambda th, n, seed: __import__("physics.simulators").simulators.dis(th, n, seed),
                                   config, theta, 8, 0)  # fmt: skip
    assert x.shape == (2, len(config.datasets), 8, 2) and expected.shape == (2, len(config.datasets))
    assert np.all(expected.numpy() > 0)


@pytest.mark.slow
def test_dis_refinement_rounds_refit_the_dis_closure_with_the_refined_flow(dis_flow, tmp_path):
    runcard = tmp_path / "closure_dis.yaml"
    runcard.write_text(yaml.safe_dump({
        "physics": {"case": "C"},
        "gan": {
            "discriminator": {"features": "log", "set_size": 1, "depth": 0, "degree": 1},
            "optimizer_g": {"name": "natural", "lr": 0.5, "metric_every": 5, "step_space": "box"},
            "optimizer_d": {"name": "newton", "lr": 0.5},
            "training": {"replicas": 3, "steps": 10, "events_per_param": 512, "uniforms": "sobol", "threads": 2},
        },
        "report": {"bootstrap_mles": False, "posterior": False, "lhapdf": False},
    }))  # fmt: skip
    out = tmp_path / "refine"
    code = refinement_main(["--config", str(runcard), "--surrogate", str(dis_flow[0]), "--out", str(out), "--quiet",
                            "--rounds", "1", "--n-params", "20", "--events-per-param", "32", "--steps", "5",
                            "--tolerance", "1e-9"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["simulations"] for r in summary["rounds"]] == [1000, 1020]
    assert summary["stop"] == "1 refinement rounds done"
    refined, _ = load_surrogate(out / "round_1" / "model.pt", physics=DISConfig(case="C"))
    assert isinstance(refined, DISFlowSurrogate)
    simulations = torch.load(out / "round_1" / "refine" / "simulations.pt", weights_only=True)
    assert simulations["t"].shape == (20, 4, 32, 2)
    for r in (0, 1):
        assert np.isfinite(json.loads((out / f"round_{r}" / "summary.json").read_text())["estimate_mean"]).all()
