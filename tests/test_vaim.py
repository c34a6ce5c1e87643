"""VAIM: network shapes and dtypes, the KL and reparameterisation gradients, simulators named by strings and
their refusals, the PDF toy's exact degeneracy, mode finding, a small y = x^2 run finding both branches, model
files and resumed training."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch

from inverse.problems import check_simulator, load_simulator, pdf_binned
from inverse.vaim.analysis import find_modes
from inverse.vaim.cli import main
from inverse.vaim.config import VAIMConfig
from inverse.vaim.model import VAIM, gaussian_kl, load_vaim, reparameterize, save_vaim
from inverse.vaim.run import run_vaim
from inverse.vaim.training import fit_vaim

TRUTH = [2.1875, -0.5, 3.0, 1.09375, -0.5, 4.0]


def x2_config(**over) -> VAIMConfig:
    data = {
        "problem": {
            "simulator": "inverse.problems:square",
            "parameters": [{"name": "x", "low": -3.0, "high": 3.0}],
            "noise": {"kind": "gaussian", "sigma": 0.05},
            "observations": {"values": [[4.0]]},
        },
        "model": {"width": 64, "blocks": 2, "latent_dim": 2},
        "training": {"n_train": 20000, "steps": 1500, "batch_size": 256, "progress": False},
        "sampling": {"n_draws": 2000},
    }
    for key, value in over.items():
        data.setdefault(key, {}).update(value)
    return VAIMConfig.model_validate(data)


def small_vaim(d: int = 2, m: int = 3, k: int = 4) -> VAIM:
    cfg = VAIMConfig.model_validate(
        {
            "problem": {
                "simulator": "inverse.problems:sum_of_squares",
                "parameters": [{"name": f"x{i}", "low": -1.0, "high": 2.0} for i in range(d)],
                "observations": {"values": [[1.0] * m]},
            },
            "model": {"width": 16, "blocks": 1, "latent_dim": k},
        }
    )
    return VAIM(cfg, m, torch.linspace(0, 1, m, dtype=torch.float64), torch.full((m,), 2.0, dtype=torch.float64))


# -- networks ------------------------------------------------------------------------------------------------


def test_encoder_decoder_and_draw_shapes_follow_the_input_dtype():
    torch.manual_seed(0)
    model = small_vaim(d=2, m=3, k=4)
    y_hat, mu, log_var = model.encode(torch.zeros(5, 2))
    assert y_hat.shape == (5, 3) and mu.shape == (5, 4) and log_var.shape == (5, 4)
    assert model.decode(torch.zeros(7, 3), torch.zeros(7, 4)).shape == (7, 2)
    for dtype in (torch.float32, torch.float64):
        model.to(dtype)
        draws = model.draw(torch.ones(2, 3, dtype=dtype), 11, torch.Generator().manual_seed(0))
        assert draws.shape == (2, 11, 2) and draws.dtype == dtype
        assert model.predict(torch.zeros(4, 2, dtype=dtype)).dtype == dtype
    with pytest.raises(ValueError, match=r"shape \[B, 3\]"):
        model.draw(torch.ones(2, 4), 3)


def test_scalings_round_trip():
    model = small_vaim()
    x = torch.tensor([[-1.0, 2.0], [0.5, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(model.scale_x(x), torch.tensor([[-1.0, 1.0], [0.0, -1 / 3]], dtype=torch.float64))
    torch.testing.assert_close(model.unscale_x(model.scale_x(x)), x)
    y = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(model.unscale_y(model.scale_y(y)), y)


def test_gaussian_kl_matches_torch_distributions_and_its_gradient():
    torch.manual_seed(0)
    mu = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    log_var = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * log_var))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(gaussian_kl(mu, log_var), torch.distributions.kl_divergence(q, p).sum(-1))
    gaussian_kl(mu, log_var).sum().backward()
    # d KL / d mu = mu, d KL / d log_var = (exp(log_var) - 1) / 2
    torch.testing.assert_close(mu.grad, mu.detach())
    torch.testing.assert_close(log_var.grad, 0.5 * (torch.exp(log_var.detach()) - 1))
    assert float(gaussian_kl(torch.zeros(1, 3), torch.zeros(1, 3))) == 0.0


def test_reparameterisation_gradient_is_unbiased():
    # E[z^2] = mu^2 + exp(lv): gradients 2 mu and exp(lv); the pathwise estimate must agree within its MC error.
    mu = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    log_var = torch.tensor(-0.4, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(200_000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z = reparameterize(mu, log_var, eps)
    estimate = torch.stack(torch.autograd.grad((z**2).mean(), (mu, log_var)))
    sd = torch.exp(0.5 * log_var.detach())
    # Per-draw gradients are 2 z and z * sd * eps: their standard errors set the tolerance.
    g_mu, g_lv = 2 * z.detach(), z.detach() * sd * eps
    se = torch.stack([g_mu.std(), g_lv.std()]) / len(eps) ** 0.5
    exact = torch.stack([2 * mu.detach(), torch.exp(log_var.detach())])
    assert torch.all((estimate - exact).abs() < 4 * se)


# -- simulators and configs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("inverse.problems.square", "expected 'package.module:function'"),
        ("no_such_package.mod:f", "cannot import module 'no_such_package.mod'"),
        ("inverse.problems:no_such_function", "has no attribute 'no_such_function'"),
        ("inverse.problems:__doc__", "is not callable"),
    ],
)
def test_a_simulator_string_that_does_not_import_is_refused_by_field(spec, message):
    with pytest.raises(ValueError, match=r"problem\.simulator") as err:
        load_simulator(spec)
    assert message in str(err.value)


def test_simulator_arguments_and_outputs_are_checked():
    with pytest.raises(ValueError, match="does not take the arguments"):
        load_simulator("inverse.problems:pdf_binned", {"bins": 5})
    theta = torch.zeros(4, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"shape \[n, m\] = \[4, m\].*got \(4,\)"):
        check_simulator(lambda t: t[:, 0], theta)
    with pytest.raises(ValueError, match=r"must return a torch\.Tensor"):
        check_simulator(lambda t: t.numpy(), theta)
    with pytest.raises(ValueError, match="non-finite"):
        check_simulator(lambda t: t / 0.0, theta)
    with pytest.raises(ValueError, match="failed"):
        check_simulator(lambda t: t @ torch.zeros(3, 3), theta)
    assert check_simulator(load_simulator("inverse.problems:sum_of_squares"), torch.zeros(4, 3)) == 1


def test_wrong_simulator_shape_is_refused_before_training(tmp_path):
    cfg = x2_config(problem={"simulator": "inverse.problems:pdf_binned"})  # wants 6 parameters, gets 1
    with pytest.raises(ValueError, match=r"problem\.simulator: calling it"):
        run_vaim(cfg, tmp_path / "run", progress=False, plots=False)
    assert not (tmp_path / "run").exists()  # nothing written for a config that cannot run


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="sigma"):
        x2_config(problem={"noise": {"kind": "gaussian", "sigma": -1.0}})
    with pytest.raises(ValueError, match="exactly one of values or parameters"):
        x2_config(problem={"observations": {"values": [[4.0]], "parameters": [[2.0]]}})
    with pytest.raises(ValueError, match=r"observations.parameters: rows need 1 values"):
        x2_config(problem={"observations": {"parameters": [[2.0, 1.0]]}})
    with pytest.raises(ValueError, match="low < high"):
        x2_config(problem={"parameters": [{"name": "x", "low": 1.0, "high": 1.0}]})
    assert main(["--config", "no/such.yaml", "--out", "x"]) == 2


def test_pdf_shapes_lose_exactly_the_common_scale():
    theta = torch.tensor([TRUTH], dtype=torch.float64)
    scaled = theta * torch.tensor([0.5, 1, 1, 0.5, 1, 1], dtype=torch.float64)
    ratio = theta * torch.tensor([0.5, 1, 1, 1, 1, 1], dtype=torch.float64)
    counts, shapes = pdf_binned(theta, "counts"), pdf_binned(theta, "shapes")
    torch.testing.assert_close(pdf_binned(scaled, "counts"), 0.5 * counts)  # sigma is linear in (Nu, Nd)
    torch.testing.assert_close(pdf_binned(scaled, "shapes"), shapes)  # ...so the shapes cannot see the scale
    assert (pdf_binned(ratio, "shapes") - shapes).abs().max() > 10  # but they see Nu / Nd
    # At the truth the rescaled counts are the counts, and they add up to the case's events (10,000 + 5,000).
    torch.testing.assert_close(shapes, counts)
    assert abs(float(counts.sum()) - 15_000.0) < 1e-6
    assert counts.shape == (1, 20) and pdf_binned(theta.float(), "counts", n_bins=3).dtype == torch.float32
    with pytest.raises(ValueError, match="mode must be"):
        pdf_binned(theta, "shape")


def test_modes_are_separated_clusters_and_a_ridge_is_one_mode():
    rng = np.random.default_rng(0)
    two = np.concatenate([rng.normal(-0.6, 0.01, (700, 1)), rng.normal(0.6, 0.01, (300, 1))])
    labels, _ = find_modes(two, None, 0.02)
    assert sorted(np.bincount(labels[labels >= 0]).tolist()) == [300, 700] and labels[0] == 0
    t = rng.uniform(0, 1, 2000)
    ridge = np.stack([t, 0.5 * t + rng.normal(0, 0.003, 2000)], axis=1)
    labels, _ = find_modes(ridge, None, 0.02)
    assert labels.max() == 0 and (labels == 0).mean() > 0.95


# -- training and the x^2 problem ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def x2_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vaim") / "x2"
    torch.manual_seed(0)
    summary = run_vaim(x2_config(), out, plots=False, progress=False)
    return out, summary


def test_small_x2_run_finds_both_branches(x2_run):
    out, summary = x2_run
    (obs,) = summary["observations"]
    medians = sorted(m["median"]["x"] for m in obs["modes"])
    assert len(medians) == 2, obs["modes"]
    assert abs(medians[0] + 2) < 0.05 and abs(medians[1] - 2) < 0.05
    assert all(0.3 <= m["fraction"] <= 0.7 for m in obs["modes"])
    # Judged with the true simulator: |x^2 - 4| / 0.05 <= 2 for 95 % of the repaired draws.
    assert obs["forward_consistency"]["repaired"]["within"] >= 0.95
    assert obs["forward_consistency"]["raw"]["within"] <= obs["forward_consistency"]["repaired"]["within"]
    assert json.loads((out / "summary.json").read_text())["steps"] == 1500
    draws = np.load(out / "draws.npz")
    assert draws["repaired"].shape == (1, 2000, 1)


def test_saved_vaim_draws_the_same_solutions_and_bad_files_are_refused(x2_run, tmp_path):
    out, _ = x2_run
    model = load_vaim(out / "model.pt")
    y = torch.tensor([[4.0]])
    a = model.draw(y, 50, torch.Generator().manual_seed(5))
    b = load_vaim(out / "model.pt").draw(y, 50, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(model.predict(torch.tensor([[1.5]])), torch.tensor([[2.25]]), atol=0.05, rtol=0)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"bad\.pt: not a readable torch file"):
        load_vaim(bad)
    torch.save({"format": "qcdgip-surrogate/1"}, bad)
    with pytest.raises(ValueError, match="not a VAIM model file"):
        load_vaim(bad)
    with pytest.raises(ValueError, match="not found"):
        load_vaim(tmp_path / "missing.pt")


def test_repair_moves_only_inconsistent_draws_onto_solutions(x2_run):
    model = load_vaim(x2_run[0] / "model.pt")
    x = torch.tensor([[[0.3], [-0.8], [2.0], [-1.999]]], dtype=torch.float64)
    fixed, moved = model.repair(x, torch.tensor([[4.0]], dtype=torch.float64), torch.tensor([[0.05]]))
    assert moved.tolist() == [[True, True, False, False]]
    torch.testing.assert_close(fixed[0, 2:], x[0, 2:])
    assert torch.all((fixed[0, :2, 0] ** 2 - 4).abs() < 2 * 0.05)  # onto a branch, by the true simulator
    assert float(fixed[0, 0, 0]) > 0 > float(fixed[0, 1, 0])  # the nearer one


def test_an_existing_run_is_neither_mixed_nor_overwritten_silently(x2_run):
    out, _ = x2_run
    with pytest.raises(ValueError, match="holds a run already"):
        run_vaim(x2_config(), out, plots=False, progress=False)
    with pytest.raises(ValueError, match=r"differing fields: model\.width"):
        run_vaim(x2_config(model={"width": 32}), out, resume=True, plots=False, progress=False)


class _Crash(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if pl_module.steps_done == 6:
            raise RuntimeError("simulated crash")


def test_resumed_training_equals_an_uninterrupted_one(tmp_path):
    cfg = x2_config(training={"steps": 10, "checkpoint_every": 4, "n_train": 500})
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.rand(500, 1, generator=g) * 2 - 1, torch.randn(500, 1, generator=g)

    def build(seed: int) -> VAIM:
        torch.manual_seed(seed)
        return VAIM(cfg, 1, torch.zeros(1), torch.ones(1))

    straight = build(0)
    fit_vaim(straight, xs, ys, tmp_path / "a", progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_vaim(build(0), xs, ys, tmp_path / "b", progress=False, callbacks=[_Crash()])
    resumed = build(1)  # other initial weights: the checkpoint must replace them
    module = fit_vaim(resumed, xs, ys, tmp_path / "b", resume=True, progress=False)
    assert module.steps_done == 10
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)
    save_vaim(resumed, tmp_path / "m.pt")
    torch.testing.assert_close(load_vaim(tmp_path / "m.pt").decoder.inp.weight, resumed.decoder.inp.weight)
