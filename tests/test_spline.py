"""The per-set rational-quadratic spline against normflows' per-event one, its inverse, and autograd."""

from __future__ import annotations

import pytest
import torch
from normflows.utils.splines import rational_quadratic_spline

from surrogates.spline import spline_cdf, spline_inverse, spline_knots

BINS = 8


def _case(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = 2.0 * torch.randn(5, 3 * BINS + 1, generator=gen, dtype=dtype)
    points = torch.rand(5, 300, generator=gen, dtype=dtype)
    # The ends of the square belong to the domain.
    points[:, 0], points[:, 1] = 0.0, 1.0
    return params, points


def _expanded(params: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p = params[:, None, :].expand(-1, n, -1)
    return p[..., :BINS], p[..., BINS : 2 * BINS], p[..., 2 * BINS :]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_per_set_spline_equals_normflows_spline_in_both_directions(dtype: torch.dtype) -> None:
    params, points = _case(dtype)
    knots = spline_knots(params, BINS)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for ours, inverse in ((spline_cdf, False), (spline_inverse, True)):
        value, log_det = ours(knots, points)
        ref_value, ref_log_det = rational_quadratic_spline(points, *_expanded(params, points.shape[1]), inverse=inverse)
        torch.testing.assert_close(value, ref_value, atol=tol, rtol=0.0)
        torch.testing.assert_close(log_det, ref_log_det, atol=20 * tol, rtol=0.0)
        assert value.dtype == dtype


def test_the_inverse_undoes_the_cdf_and_the_log_slopes_are_the_autograd_derivatives() -> None:
    params, t = _case(torch.float64, seed=1)
    t = t.clamp(1e-6, 1.0 - 1e-6).requires_grad_(True)
    knots = spline_knots(params, BINS)
    u, log_du = spline_cdf(knots, t)
    (du,) = torch.autograd.grad(u.sum(), t)
    torch.testing.assert_close(log_du, du.log(), atol=1e-9, rtol=0.0)
    back, log_dt = spline_inverse(knots, u.detach())
    torch.testing.assert_close(back, t.detach(), atol=1e-10, rtol=0.0)
    torch.testing.assert_close(log_dt, -log_du.detach(), atol=1e-9, rtol=0.0)
    # Monotone from 0 to 1: a CDF.
    grid = torch.linspace(0.0, 1.0, 2001, dtype=torch.float64).expand(5, -1)
    values, _ = spline_cdf(knots, grid)
    assert (values.diff(dim=-1) > 0).all()
    torch.testing.assert_close(values[:, [0, -1]], torch.tensor([[0.0, 1.0]], dtype=torch.float64).expand(5, -1))


def test_gradients_reach_the_knot_parameters_as_finite_differences_say() -> None:
    params, u = _case(torch.float64, seed=2)
    params.requires_grad_(True)
    u = u.clamp(1e-3, 1.0 - 1e-3)

    def total(p: torch.Tensor) -> torch.Tensor:
        t, log_det = spline_inverse(spline_knots(p, BINS), u)
        return (t.square() + 0.1 * log_det).sum()

    assert torch.autograd.gradcheck(total, (params,), eps=1e-6, atol=1e-5)


def test_bad_inputs_are_refused_by_name() -> None:
    params, points = _case(torch.float64)
    with pytest.raises(ValueError, match="spline parameters: last dimension"):
        spline_knots(params[:, :-1], BINS)
    with pytest.raises(ValueError, match="spline: knots for leading shape"):
        spline_cdf(spline_knots(params, BINS), points[:3])
    with pytest.raises(ValueError, match=r"spline: knots in torch\.float64 on cpu, events in torch\.float32"):
        spline_inverse(spline_knots(params, BINS), points.float())
    with pytest.raises(ValueError, match="spline bins: 2000 bins"):
        spline_knots(torch.zeros(1, 3 * 2000 + 1), 2000)
