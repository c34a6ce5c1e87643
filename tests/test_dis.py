"""Inclusive DIS: sum rules, the eko x yadism operator, the tabulated density, exact (x, Q^2) sampling, gradients,
the likelihood and LHAPDF sets."""

from __future__ import annotations

import contextlib
import re

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from physics.dis import DISConfig, DISExperiment, DISSampler, OperatorMismatchError, PDFModel, load_operator
from physics.dis.lhapdf import OUTPUT_PIDS, evolved_pdfs, read_lhapdf_member, write_lhapdf_set
from physics.dis.likelihood import DISLikelihood, cramer_rao, fisher_information, fit_mle
from physics.dis.operator import SHIPPED
from physics.dis.pseudodata import generate_dis_events

CHARGE2 = {1: 1 / 9, 2: 4 / 9, 3: 1 / 9, 4: 4 / 9, 5: 1 / 9}


@pytest.fixture(scope="module")
def config():
    return DISConfig()


@pytest.fixture(scope="module")
def experiment(config):
    return DISExperiment(config)


def _box_points(config, n, seed):
    rng = np.random.default_rng(seed)
    low, high = np.array(config.low), np.array(config.high)
    return torch.tensor(low + (high - low) * rng.uniform(0.05, 0.95, size=(n, len(low))), dtype=torch.float64)


def test_sum_rules_hold_to_1e6_by_independent_quadrature(config):
    model = PDFModel(config)
    kw = {"limit": 400, "epsabs": 0, "epsrel": 1e-10}
    for theta in _box_points(config, 3, 0):

        def f(x, rows, theta=theta):
            values = model.flavours(theta[None], torch.tensor([x], dtype=torch.float64))[0, :, 0]
            return sum(values[r].item() * c for r, c in rows)

        u = integrate.quad(f, 0, 1, args=([(5, 1), (1, -1)],), points=[1e-6, 1e-3], **kw)[0]  # u - ubar
        d = integrate.quad(f, 0, 1, args=([(4, 1), (2, -1)],), points=[1e-6, 1e-3], **kw)[0]
        s = integrate.quad(f, 0, 1, args=([(6, 1), (0, -1)],), **kw)[0]
        p = integrate.quad(lambda x, f=f: x * f(x, [(r, 1) for r in range(7)]), 0, 1, points=[1e-6, 1e-3], **kw)[0]
        assert abs(u - 2) < 1e-6 and abs(d - 1) < 1e-6 and abs(s) < 1e-12 and abs(p - 1) < 1e-6, (u, d, s, p)


@pytest.mark.parametrize(
    ("update", "field"),
    [
        ({"pdf": {"u_v": {"a": "nope", "b": "b_uv"}}}, "pdf.u_v.a"),
        ({"kinematics": {"q2_min": 2.0}}, "q2_min"),
        ({"pdf": {"flavours": {"ubar": "S", "dbar": "S", "s": "T", "sbar": "S"}}}, "pdf.flavours.s"),
        ({"datasets": [{"name": "hi", "q2_min": 500.0, "q2_max": 5000.0}]}, "dataset 'hi'"),
        ({"case": "Z"}, "case 'Z'"),
        ({"parameters": [{"name": "A_S", "truth": 0.3, "low": 0.1, "high": 0.6}]}, "parameters"),
    ],
)
def test_bad_runcards_are_refused_by_name(update, field):
    base = DISConfig().model_dump()
    if "parameters" in update:  # replace A_S's box by one that leaves the gluon no momentum
        base["parameters"] = [p if p["name"] != "A_S" else update["parameters"][0] for p in base["parameters"]]
        update = {}
    with pytest.raises(ValueError, match=re.escape(field)):
        DISConfig.model_validate({**base, **update})


def test_operator_file_for_other_settings_is_refused_naming_them(config, tmp_path):
    other = config.model_copy(update={"grid": config.grid.model_copy(update={"n_x": 73})})
    with pytest.raises(OperatorMismatchError, match=r"grid\.n_x \(file 72, runcard 73\)"):
        load_operator(SHIPPED, other)
    (tmp_path / "bad.npz").write_bytes(b"not a file")
    with pytest.raises(ValueError, match=r"bad\.npz"):
        load_operator(tmp_path / "bad.npz")


def _f0(experiment, theta):
    return experiment.sf.pdf.flavours(theta, torch.as_tensor(experiment.operator.xgrid))


def test_interpolated_f2_matches_yadism_off_the_nodes_to_1e3(config, experiment):
    op = experiment.operator
    npm = int(op.n_parton_model)
    points = torch.as_tensor(op.check_points[:-npm])
    thetas = torch.cat([experiment.truth_tensor(), _box_points(config, 3, 1)])
    f2, _ = experiment.sf.f2_fl(thetas, points[:, 0].expand(4, -1), points[:, 1].expand(4, -1))
    direct = torch.einsum("opbk,Bbk->Bop", torch.as_tensor(op.check_fk[:, :-npm], dtype=torch.float64),
                          _f0(experiment, thetas))  # fmt: skip
    rel = ((f2 - direct[:, 0]) / direct[:, 0]).abs()
    assert rel.max() < 1e-3, rel.max()
    large_x = points[:, 0] > 0.5
    assert large_x.any() and rel[:, large_x].max() < 1e-3


def test_lo_f2_is_the_parton_model_of_ekos_evolved_pdfs(config, experiment):
    op = experiment.operator
    npm = int(op.n_parton_model)
    points = op.check_points[-npm:]
    theta = experiment.truth_tensor()
    f2 = torch.einsum(
        "pbk,bk->p", torch.as_tensor(op.check_fk[0, -npm:], dtype=torch.float64), _f0(experiment, theta)[0]
    )
    pdfs = evolved_pdfs(config, op, theta)[0]  # [n_e, 11, G]
    expected = []
    for x, q2 in points:
        e = int(np.argmin(np.abs(op.pdf_q2 - q2)))
        k = int(np.argmin(np.abs(op.xgrid - x)))
        total = sum(CHARGE2[abs(p)] * pdfs[e, i, k] for i, p in enumerate(OUTPUT_PIDS) if p != 21)
        expected.append(x * total)
    expected = torch.stack(expected)
    assert torch.allclose(f2, expected, rtol=2e-6), ((f2 - expected) / expected).abs().max()


@pytest.mark.slow
def test_table_integrals_match_adaptive_cubature_to_1e6(experiment):
    """The first and last windows' table integrals against scipy's adaptive cubature (its own tolerance 1e-8)."""
    theta = experiment.truth_tensor()
    values = experiment.vertex_values(theta)
    for grid, v in zip(experiment.grids[::3], values[::3]):

        def f(points, grid=grid, v=v):
            p = torch.as_tensor(points)
            return grid.density(v, p[:, 0][None], p[:, 1][None])[0].numpy()

        res = integrate.cubature(
            f, [grid.u[0].item(), 0.0], [grid.u[-1].item(), 1.0], rtol=1e-8, max_subdivisions=20000
        )
        assert abs(res.estimate / grid.integral(v).item() - 1) < 1e-6, (res.estimate, grid.integral(v).item())


def test_table_follows_the_smooth_cross_section(experiment):
    """Its L1 distance to the smooth cross section is below 1e-4 of the window's rate and the median pointwise
    difference below 5e-4 (the largest local ones, a few %, sit at high x next to the kinks of the cuts)."""
    theta = experiment.truth_tensor()
    values = experiment.vertex_values(theta)
    gen = torch.Generator().manual_seed(4)
    for grid, v in zip(experiment.grids, values):
        u = grid.u[0] + (grid.u[-1] - grid.u[0]) * torch.rand(1, 20000, generator=gen, dtype=torch.float64)
        w = torch.rand(1, 20000, generator=gen, dtype=torch.float64)
        x, q2, jac = grid.to_xq2(u, w)
        smooth = experiment.luminosity * experiment.sf.cross_section(theta, x, q2) * jac
        table = grid.density(v, u, w)
        assert ((table - smooth).abs().sum() / smooth.sum()).item() < 1e-4
        assert torch.quantile((table / smooth - 1).abs(), 0.5).item() < 5e-4


def test_expected_counts_and_intensities_have_finite_difference_gradients(experiment):
    theta = experiment.truth_tensor().requires_grad_(True)
    events = torch.tensor([[0.01, 6.0], [0.3, 8.0]], dtype=torch.float64)

    def f(th):
        return experiment.expected_counts(th).sum() + experiment.log_intensity(th, events, 0).sum()

    (grad,) = torch.autograd.grad(f(theta), theta)
    h = 1e-6
    for i in range(theta.shape[-1]):
        step = torch.zeros_like(theta)
        step[0, i] = h
        fd = (f(theta.detach() + step) - f(theta.detach() - step)) / (2 * h)
        assert abs(fd.item() - grad[0, i].item()) < 1e-5 * max(1.0, abs(fd.item())), (i, fd.item(), grad[0, i].item())


def test_sampled_events_have_reparameterised_gradients(experiment):
    sampler = DISSampler(experiment)
    theta = experiment.truth_tensor().requires_grad_(True)
    noise = torch.rand(1, 200, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.98 + 0.01
    events = sampler.sample(theta, 200, 1, noise=noise)
    weights = torch.linspace(-1, 1, 200, dtype=torch.float64)
    target = (weights * (torch.log(events[0, :, 0]) + torch.log(events[0, :, 1]))).sum()
    (grad,) = torch.autograd.grad(target, theta)
    h = 1e-6
    for i in range(theta.shape[-1]):
        step = torch.zeros_like(theta)
        step[0, i] = h
        ev_p, ev_m = (sampler.sample(theta.detach() + sgn * step, 200, 1, noise=noise)[0] for sgn in (1, -1))
        fd = ((weights * (torch.log(ev_p[:, 0]) + torch.log(ev_p[:, 1]))).sum()
              - (weights * (torch.log(ev_m[:, 0]) + torch.log(ev_m[:, 1]))).sum()) / (2 * h)  # fmt: skip
        assert abs(fd.item() - grad[0, i].item()) < 1e-5 * max(1.0, abs(fd.item())), (i, fd.item(), grad[0, i].item())


def test_shared_tables_give_the_same_values_and_gradients_and_end_with_their_scope(experiment):
    """Inside ``sharing_tables`` the sampler's windows and the counts at one theta evaluate the theory once; the
    loss and its gradient equal the unshared ones, and after the scope a second backward evaluates afresh."""
    sampler = DISSampler(experiment)
    base = experiment.truth_tensor() + torch.tensor([[0.02, -0.1, 0.003, 0.01, 0.02]], dtype=torch.float64)
    noise = torch.rand(3, 64, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 0.98 + 0.01

    def loss_and_grad(shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
        theta = base.expand(3, 1, -1).clone().requires_grad_(True)  # [r, B, D], as the GAN's generator gives
        flat = theta.reshape(3, 5)
        with experiment.sharing_tables() if shared else contextlib.nullcontext():
            events = [sampler.sample(flat, 64, j, noise=noise) for j in range(len(experiment.names))]
            counts = experiment.expected_counts(theta.reshape(3, 5))
            if shared:  # a view of the same tensor finds the tables the sampler made
                assert experiment.vertex_values(theta.reshape(3, 5))[2] is sampler._tables(flat, 2)
        loss = sum(torch.log(e).sum() for e in events) + counts.log().sum()
        (grad,) = torch.autograd.grad(loss, theta)
        return loss.detach(), grad

    plain, shared = loss_and_grad(False), loss_and_grad(True)
    assert torch.allclose(plain[0], shared[0], rtol=1e-12) and torch.allclose(plain[1], shared[1], rtol=1e-10)
    assert not experiment.shares_tables and experiment._last_values is None
    theta = base.clone().requires_grad_(True)
    for _ in range(2):  # outside a scope nothing is reused, so a freed graph is never met again
        experiment.expected_counts(theta).sum().backward()


def test_sampler_follows_the_tabulated_density(experiment):
    sampler = DISSampler(experiment)
    theta = experiment.truth_tensor()
    n = 40_000
    for j in (0, 3):
        grid = experiment.grids[j]
        ev = sampler.sample(theta, n, j, generator=torch.Generator().manual_seed(10 + j))[0]
        u, w = grid.to_uw(ev[:, 0][None], ev[:, 1][None])
        values = experiment.vertex_values(theta)[j]
        # u marginal: its CDF is the closed-form integral of the piecewise-linear marginal
        m = grid.row_marginals(values)[0]
        du = grid.u[1:] - grid.u[:-1]
        cum = torch.cat([torch.zeros(1, dtype=torch.float64), (du * (m[1:] + m[:-1]) / 2).cumsum(0)])

        def cdf_u(x, m=m, cum=cum, grid=grid):
            i = np.clip(np.searchsorted(grid.u.numpy(), x, side="right") - 1, 0, len(m) - 2)
            t = (x - grid.u.numpy()[i]) / (grid.u.numpy()[i + 1] - grid.u.numpy()[i])
            width = grid.u.numpy()[i + 1] - grid.u.numpy()[i]
            part = width * (m.numpy()[i] * t + (m.numpy()[i + 1] - m.numpy()[i]) * t**2 / 2)
            return (cum.numpy()[i] + part) / cum.numpy()[-1]

        assert stats.kstest(u[0].numpy(), cdf_u).pvalue > 1e-3
        # 2-D chi2 on 8 x 16 blocks of table cells (exact block probabilities) and the w marginal's KS
        rows, cols = len(grid.u) - 1, grid.cols
        row_idx, col_idx, _, _ = grid.cells(u, w)
        cell_mass = (du[:, None] * (values[0, 1:, 1:] + values[0, 1:, :-1] + values[0, :-1, 1:] + values[0, :-1, :-1])
                     / (4 * cols))  # fmt: skip
        rb, cb = torch.div(torch.arange(rows) * 8, rows, rounding_mode="floor"), torch.arange(cols) * 16 // cols
        block = torch.zeros(8, 16, dtype=torch.float64).index_put_(
            (rb[:, None].expand(rows, cols), cb[None].expand(rows, cols)), cell_mass, accumulate=True
        )
        observed = torch.zeros(8, 16, dtype=torch.float64).index_put_(
            (rb[row_idx[0]], cb[col_idx[0]]), torch.ones(n, dtype=torch.float64), accumulate=True
        )
        expected = n * block / block.sum()
        keep = expected > 5
        chi2 = (((observed - expected) ** 2 / expected)[keep]).sum().item()
        assert stats.chi2.sf(chi2, int(keep.sum()) - 1) > 1e-3, chi2


def test_mle_lands_within_a_few_cramer_rao_sds_of_the_truth(config):
    experiment = DISExperiment(config.with_case("A"))
    events = generate_dis_events(experiment, seed=3)
    likelihood = DISLikelihood(experiment, events)
    mle = fit_mle(likelihood)
    _, sd = cramer_rao(fisher_information(experiment, torch.tensor(mle.theta[None])))
    pulls = (mle.theta - np.array(config.truth)) / sd.numpy()
    assert mle.success and np.abs(pulls).max() < 4, pulls


def test_lhapdf_set_reads_back_as_the_model_at_its_grid_points(config, experiment, tmp_path):
    thetas = torch.cat([experiment.truth_tensor(), _box_points(config, 2, 5)])
    path = write_lhapdf_set(tmp_path, "qcdgip_test", config, experiment.operator, thetas, "test replicas")
    assert (path / "qcdgip_test.info").is_file()
    model = evolved_pdfs(config, experiment.operator, thetas)  # [R, n_e, 11, G]
    for member, index in ((1, 0), (3, 2)):
        x, q, pids, xf = read_lhapdf_member(path / f"qcdgip_test_{member:04d}.dat")
        assert pids == list(OUTPUT_PIDS) and np.allclose(q**2, experiment.operator.pdf_q2)
        expected = (model[index] * torch.as_tensor(x)).permute(2, 0, 1).numpy()
        assert np.allclose(xf, expected, rtol=1e-10, atol=1e-14)
    _, _, _, central = read_lhapdf_member(path / "qcdgip_test_0000.dat")
    assert np.allclose(central, (model * torch.as_tensor(x)).mean(0).permute(2, 0, 1).numpy(), rtol=1e-10, atol=1e-14)


def test_shipped_operator_matches_its_checksum():
    import hashlib

    recorded = SHIPPED.with_suffix(".sha256").read_text().split()[0]
    assert hashlib.sha256(SHIPPED.read_bytes()).hexdigest() == recorded


@pytest.mark.rebuild
def test_rebuilding_the_operator_gives_the_shipped_file(config):
    from physics.dis.build import build_operator

    built, shipped = build_operator(config, progress=False), load_operator(SHIPPED, config)
    assert built.key == shipped.key
    assert np.allclose(built.fk, shipped.fk, rtol=1e-9, atol=1e-14 * np.abs(shipped.fk).max())
    assert np.allclose(built.evolution, shipped.evolution, rtol=1e-6, atol=1e-7 * np.abs(shipped.evolution).max())
    assert np.array_equal(built.check_points, shipped.check_points)


@pytest.mark.parametrize("kind", ["exact", "mcmc", "newton"])
def test_a_small_gan_closure_moves_every_parameter_toward_the_truth(config, experiment, kind):
    from inverse.gan.config import GANConfig
    from inverse.gan.model import InverseGAN
    from inverse.gan.training import fit_gan
    from physics.dis.mcmc import DISMCMCSampler
    from physics.pseudodata import EventData

    data = EventData(experiment.names, [e.numpy() for e in generate_dis_events(experiment, seed=2)])
    training = {"replicas": 2, "steps": 40, "events_per_param": 512, "dtype": "float64", "progress": False}
    sections = {"training": training, "sampler": {"kind": "mcmc" if kind == "mcmc" else "exact"}}
    if kind == "newton":  # the runcard's logistic-regression discriminators, with its quasi-random events
        training.update(uniforms="sobol", events_per_param=1024)
        sections |= {"discriminator": {"depth": 0, "degree": 3}, "optimizer_d": {"name": "newton"}}
    model = InverseGAN(GANConfig.model_validate(sections), experiment, data)
    assert isinstance(model.sampler, DISMCMCSampler if kind == "mcmc" else DISSampler)
    start = model.current_theta().detach().numpy()
    fit_gan(model, progress=False)
    end = model.estimates().numpy()
    _, sd = cramer_rao(fisher_information(experiment, experiment.truth_tensor()))
    truth = np.array(config.truth)
    before, after = np.abs(start - truth) / sd.numpy(), np.abs(end - truth) / sd.numpy()
    assert np.all(after < np.maximum(before, 3.0)) and np.all(after < 5), (before, after)
