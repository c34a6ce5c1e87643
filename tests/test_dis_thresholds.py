"""Heavy-quark thresholds in the DIS operator's Q^2 nodes: segments that no cubic stencil crosses.

Beyond LO in the zero-mass scheme F2 and FL jump at Q^2 = m_b^2, so a stencil across it mixes the two sides.
With the node layout of :func:`physics.dis.operator.output_nodes` (a node pair bracketing each threshold) a
function that is a cubic polynomial in ln Q^2 on each side, with a jump between them, is reproduced exactly by
the interpolation on both sides, where the unsplit layout misses it by a good fraction of the jump. These checks
need no operator build: the interpolation acts on node values, here synthetic ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physics.dis import DISConfig
from physics.dis.operator import THRESHOLD_GAP, Operator, operator_settings, output_nodes, q2_thresholds
from physics.dis.structure import StructureFunctions


@pytest.fixture(scope="module")
def nlo():
    return DISConfig(theory={"order": "NLO"})


def _functions(config: DISConfig, q2_nodes: np.ndarray) -> StructureFunctions:
    """Structure functions on the runcard's x nodes and the given Q^2 nodes (tables unused: zeros)."""
    x_nodes, _ = output_nodes(config)
    grid = np.linspace(0.01, 1.0, 5)
    op = Operator(
        settings={}, xgrid=grid, x_nodes=x_nodes, q2_nodes=q2_nodes,
        fk=np.zeros((2, len(q2_nodes), len(x_nodes), 7, len(grid))), pdf_q2=np.array([config.theory.q0**2]),
        evolution=np.zeros((0, 14, 5, 7, 5)), check_points=np.zeros((0, 2)), n_parton_model=np.array(0),
        check_fk=np.zeros((2, 0, 7, 5)),
    )  # fmt: skip
    return StructureFunctions(config, op)


def _piecewise(u: torch.Tensor, z: torch.Tensor, cut: float) -> torch.Tensor:
    """A cubic in u (times a quadratic in z) on each side of ``cut``, with a jump of 0.05 at it."""
    below = 1.0 + 0.3 * u - 0.05 * u**2 + 0.01 * u**3
    above = below + 0.05 - 0.02 * (u - cut) + 0.004 * (u - cut) ** 3
    return torch.where(u < cut, below, above) * (1 + 0.1 * z - 0.02 * z**2)


def test_only_the_thresholds_inside_the_range_split_the_nodes_and_only_beyond_lo(nlo):
    m_b2 = nlo.theory.m_b**2
    assert q2_thresholds(DISConfig()) == [] and q2_thresholds(nlo) == [m_b2]  # m_c^2 < 4 and m_t^2 > 1000 GeV^2
    _, lo_nodes = output_nodes(DISConfig())
    assert len(lo_nodes) == DISConfig().grid.n_q2 and "q2_split" not in operator_settings(DISConfig())
    _, q2 = output_nodes(nlo)
    assert len(q2) == nlo.grid.n_q2 + 1 and q2[0] == pytest.approx(4.0) and q2[-1] == pytest.approx(1000.0)
    i = int(np.searchsorted(q2, m_b2))
    assert q2[i - 1] == pytest.approx(m_b2 * (1 - THRESHOLD_GAP), rel=1e-12)
    assert q2[i] == pytest.approx(m_b2 * (1 + THRESHOLD_GAP), rel=1e-12)
    for seg in (np.log(q2[:i]), np.log(q2[i:])):
        assert len(seg) >= 4 and np.allclose(np.diff(seg), np.diff(seg)[0], rtol=1e-9)
    assert operator_settings(nlo)["q2_split"]["thresholds"] == [m_b2]


def test_x_nodes_default_to_denser_beyond_lo_and_the_settings_record_the_count_built(nlo):
    x_lo, _ = output_nodes(DISConfig())
    x_nlo, _ = output_nodes(nlo)
    assert (len(x_lo), len(x_nlo)) == (72, 96) and x_lo[0] == x_nlo[0] and x_lo[-1] == x_nlo[-1]
    z = np.log(x_nlo / (1 - x_nlo))
    assert np.allclose(np.diff(z), np.diff(z)[0], rtol=1e-9)  # uniform in logit x
    assert operator_settings(nlo)["grid"]["n_x"] == 96 and operator_settings(DISConfig())["grid"]["n_x"] == 72
    given = DISConfig(theory={"order": "NLO"}, grid={"n_x": 80})
    assert len(output_nodes(given)[0]) == 80 and operator_settings(given)["grid"]["n_x"] == 80


def test_interpolation_is_exact_for_piecewise_cubics_on_each_side_of_the_threshold(nlo):
    cut = float(np.log(nlo.theory.m_b**2))
    _, q2 = output_nodes(nlo)
    x_nodes, _ = output_nodes(nlo)
    sf = _functions(nlo, q2)
    u_n = torch.log(torch.as_tensor(q2))
    z_n = torch.logit(torch.as_tensor(x_nodes))
    values = _piecewise(u_n[:, None], z_n[None, :], cut)[None, None]  # [1, 1, n_q2, n_x]
    rng = np.random.default_rng(3)
    near = cut + rng.uniform(-0.3, 0.3, 200)  # the cells next to the threshold, both sides
    u = torch.as_tensor(np.concatenate([near, rng.uniform(u_n[0].item(), u_n[-1].item(), 200)]))
    z = torch.as_tensor(rng.uniform(z_n[3].item(), z_n[-4].item(), len(u)))
    exact = _piecewise(u, z, cut)
    z_only = 1 + 0.1 * z - 0.02 * z**2  # the z factor is quadratic: cubic Lagrange is exact in z too
    got = sf.at(values, u[None], z[None])[0, 0]
    assert torch.allclose(got, exact, rtol=0, atol=1e-11 * z_only.abs().max().item())
    matrix = sf.interpolation_matrix(u, z)
    assert torch.allclose(matrix @ values.flatten(), exact, rtol=0, atol=1e-11)
    # the same jump on one uniform axis (the LO layout): the stencils across it miss by a fraction of the jump
    q2_flat = np.geomspace(q2[0], q2[-1], nlo.grid.n_q2)
    flat = _functions(nlo, q2_flat)
    u_f = torch.log(torch.as_tensor(q2_flat))
    miss = flat.at(_piecewise(u_f[:, None], z_n[None, :], cut)[None, None], u[None], z[None])[0, 0] - exact
    assert miss.abs().max() > 5e-3


def test_stencils_take_gradients_in_q2_on_each_side(nlo):
    cut = float(np.log(nlo.theory.m_b**2))
    _, q2 = output_nodes(nlo)
    x_nodes, _ = output_nodes(nlo)
    sf = _functions(nlo, q2)
    u_n, z_n = torch.log(torch.as_tensor(q2)), torch.logit(torch.as_tensor(x_nodes))
    values = _piecewise(u_n[:, None], z_n[None, :], cut)[None, None]
    u = torch.tensor([cut - 0.1, cut + 0.1, cut + 2.0], dtype=torch.float64, requires_grad=True)
    z = torch.full((3,), z_n[10].item(), dtype=torch.float64)
    (grad,) = torch.autograd.grad(sf.at(values, u[None], z[None]).sum(), u)
    uu = u.detach().requires_grad_(True)
    (exact,) = torch.autograd.grad(_piecewise(uu, z, cut).sum(), uu)
    assert torch.allclose(grad, exact, atol=1e-10)


def test_a_segment_too_short_for_a_cubic_stencil_is_refused(nlo):
    _, q2 = output_nodes(nlo)
    i = int(np.searchsorted(q2, nlo.theory.m_b**2))
    with pytest.raises(ValueError, match=r"q2_nodes.*fewer than 4"):
        _functions(nlo, np.concatenate([q2[i - 3 : i], q2[i:]]))
