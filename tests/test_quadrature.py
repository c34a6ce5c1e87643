import itertools

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from physics.quadrature import integrate_terms, logit_rule
from physics.theory import Terms, Theory

RANGES = [
    (0.1, 0.3),
    (0.3, 1.0),
    (0.1, 1.0),
    (0.1, 0.1001),
    (0.1, 0.12),
    (0.95, 1.0),
    (0.999, 1.0),
    (0.2, 0.99999),
]
EXPONENTS = [(a, b) for a, b in itertools.product([-1.0, -0.5, 0.0, 1.0], [0.0, 0.01, 3.0, 5.0])]


def reference(a: float, b: float, lo: float, hi: float) -> float:
    if hi == 1.0:  # the algebraic weight (1-x)^b treats the endpoint singularity exactly
        return quad(lambda x: x**a, lo, hi, weight="alg", wvar=(0.0, b), epsabs=0, epsrel=1e-13, limit=200)[0]
    return quad(lambda x: x**a * (1 - x) ** b, lo, hi, epsabs=0, epsrel=1e-13, limit=200)[0]


def one_term(a, b, dtype=torch.float64):
    return Terms(
        torch.ones(len(a), 1, dtype=dtype),
        torch.tensor(a, dtype=dtype)[:, None],
        torch.tensor(b, dtype=dtype)[:, None],
    )


@pytest.mark.parametrize(("lo", "hi"), RANGES)
def test_integrals_match_scipy_quad(lo, hi):
    a, b = map(list, zip(*EXPONENTS))
    values = integrate_terms(one_term(a, b), logit_rule(lo, hi)).numpy()
    expected = np.array([reference(ai, bi, lo, hi) for ai, bi in EXPONENTS])
    # The issue asks for 1e-6; the rule reaches ~1e-12, so a regression shows long before the requirement fails.
    np.testing.assert_allclose(values, expected, rtol=1e-9)


def test_random_parameters_over_dataset_ranges(config):
    theory = Theory(config)
    theta = torch.tensor(np.random.default_rng(1).uniform(config.low, config.high, size=(20, 6)))
    for ds in config.datasets:
        terms = theory.terms(theta, ds.observable)
        values = integrate_terms(terms, logit_rule(ds.x_min, ds.x_max)).numpy()
        for i, th in enumerate(theta.numpy()):
            c = [4.0, 1.0] if ds.observable == "sigma1" else [1.0, 4.0]
            ref = c[0] * th[0] * reference(th[1], th[2], ds.x_min, ds.x_max) + c[1] * th[3] * reference(
                th[4], th[5], ds.x_min, ds.x_max
            )
            assert values[i] == pytest.approx(ref, rel=1e-9)


def test_float32_and_gradients():
    a, b = [-0.7, 0.4], [0.3, 4.5]
    v32 = integrate_terms(one_term(a, b, torch.float32), logit_rule(0.1, 1.0))
    assert v32.dtype == torch.float32
    np.testing.assert_allclose(v32.numpy(), [reference(*p, 0.1, 1.0) for p in zip(a, b)], rtol=2e-5)
    # d/db of int x^a (1-x)^b = int x^a (1-x)^b log(1-x): autograd through the rule vs central differences.
    bt = torch.tensor([[2.0]], dtype=torch.float64, requires_grad=True)
    at = torch.tensor([[-0.5]], dtype=torch.float64, requires_grad=True)
    rule = logit_rule(0.1, 1.0)
    value = integrate_terms(Terms(torch.ones(1, 1, dtype=torch.float64), at, bt), rule)
    ga, gb = torch.autograd.grad(value.sum(), (at, bt))
    eps = 1e-6
    fd_b = (reference(-0.5, 2.0 + eps, 0.1, 1.0) - reference(-0.5, 2.0 - eps, 0.1, 1.0)) / (2 * eps)
    fd_a = (reference(-0.5 + eps, 2.0, 0.1, 1.0) - reference(-0.5 - eps, 2.0, 0.1, 1.0)) / (2 * eps)
    assert gb.item() == pytest.approx(fd_b, rel=1e-7)
    assert ga.item() == pytest.approx(fd_a, rel=1e-7)


def test_bad_range():
    with pytest.raises(ValueError, match="x_min"):
        logit_rule(0.0, 0.5)
    with pytest.raises(ValueError, match="x_min"):
        logit_rule(0.5, 0.4)
