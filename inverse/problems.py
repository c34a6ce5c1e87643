"""Forward problems for VAIM: simulators named by ``"package.module:function"`` and the built-in ones.

A simulator is any callable ``f(theta, **kwargs) -> y`` taking parameters [n, d] and returning observables
[n, m] with the dtype and device of ``theta``; it may be noisy itself, or VAIM adds the config's noise to its
output. Built in:

``square``          y = x^2                       (two solutions +-sqrt(y))
``sine``            y = sin(x)                    (one solution per period in the box)
``sum_of_squares``  y = x1^2 + x2^2               (a circle of solutions)
``pdf_binned``      the toy's binned sigma1, sigma2 event counts of the datasets, ``mode="counts"`` (expected
                    counts: well posed) or ``mode="shapes"`` (all counts rescaled to the case's fixed total, an
                    unknown absolute luminosity, so a common scale of Nu and Nd leaves them unchanged: ill-posed).
``dis_binned``      inclusive DIS: expected event counts in 2-D (ln Q^2 x w) bins of every Q^2 window
                    (:class:`physics.dis.binned.DISBinnedView`), of the default DIS problem or a runcard's.

References:
    Almaeen, Alanazi, Sato, Melnitchouk, Kuchera, Li, "Variational Autoencoder Inverse Mapper: An End-to-End
    Deep Learning Framework for Inverse Problems", IJCNN 2021, doi:10.1109/IJCNN52387.2021.9534012.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from physics.binned import log_bins
from physics.config import PhysicsConfig
from physics.datasets import Experiment
from physics.dis.binned import DISBinnedView
from physics.dis.config import DISConfig
from physics.dis.experiment import DISExperiment
from physics.quadrature import integrate_terms, logit_rule
from qcdgip.config import load_yaml, parse_config
from qcdgip.imports import import_callable

__all__ = [
    "Simulator",
    "check_simulator",
    "dis_binned",
    "load_simulator",
    "pdf_binned",
    "sine",
    "square",
    "sum_of_squares",
]

Simulator = Callable[..., Tensor]


def square(theta: Tensor) -> Tensor:
    """Y = x^2 of a single parameter, [n, 1] -> [n, 1]."""
    return theta[:, :1] ** 2


def sine(theta: Tensor) -> Tensor:
    """Y = sin(x) of a single parameter, [n, 1] -> [n, 1]."""
    return torch.sin(theta[:, :1])


def sum_of_squares(theta: Tensor) -> Tensor:
    """Y = sum_i x_i^2, [n, d] -> [n, 1] (a sphere of solutions)."""
    return (theta**2).sum(-1, keepdim=True)


@functools.lru_cache(maxsize=8)
def _pdf_setup(n_bins: int, case: str) -> tuple[Experiment, list[list[Any]], list[str]]:
    experiment = Experiment(PhysicsConfig(), case=case)
    rules = []
    for ds in experiment.datasets:
        edges = log_bins(*ds.x_range, n_bins)
        rules.append(
            [logit_rule(float(lo), float(hi), experiment.config.quadrature) for lo, hi in itertools.pairwise(edges)]
        )
    return experiment, rules, [ds.observable for ds in experiment.datasets]


def pdf_binned(
    theta: Tensor,
    mode: Literal["counts", "shapes", "observable_shapes"] = "counts",
    n_bins: int = 5,
    case: str = "B",
) -> Tensor:
    """Binned expected event counts of the toy's datasets (bins uniform in log x), [n, 6] -> [n, J * n_bins].

    Args:
        theta: [Nu, au, bu, Nd, ad, bd] per row.
        mode: ``"counts"``: nu_k = L_j int_bin sigma. ``"shapes"``: the same counts rescaled by one common
            factor so that their total equals the expected total at the truth: the relative luminosities are
            known, the absolute one is not, and exactly the common scale of Nu and Nd is lost.
            ``"observable_shapes"``: each observable's counts rescaled to its own expected total, so the
            sigma1/sigma2 count ratio is lost too and Nu/Nd is only seen through the shapes (weakly: the
            Fisher information of case B gives sd(log Nu/Nd) ~ 2.4 with 5 bins).
        n_bins: bins per dataset.
        case: the event-count case fixing the luminosities (A, B or C).

    Returns:
        Expected counts, dtype and device of ``theta``.
    """
    if mode not in ("counts", "shapes", "observable_shapes"):
        raise ValueError(f"pdf_binned: mode must be 'counts', 'shapes' or 'observable_shapes', got {mode!r}")
    experiment, rules, observables = _pdf_setup(int(n_bins), str(case))
    th = experiment.theory.check_theta(theta.to(torch.float64))
    blocks = []
    for ds, ds_rules in zip(experiment.datasets, rules):
        terms = experiment.theory.terms(th, ds.observable)
        blocks.append(ds.luminosity * torch.stack([integrate_terms(terms, r) for r in ds_rules], dim=-1))
    if mode == "shapes":
        total = sum(b.sum(-1, keepdim=True) for b in blocks)
        expected = sum(ds.expected for ds in experiment.datasets)
        blocks = [b * (expected / total.clamp_min(1e-300)) for b in blocks]
    elif mode == "observable_shapes":
        for obs in dict.fromkeys(observables):
            idx = [j for j, o in enumerate(observables) if o == obs]
            total = sum(blocks[j].sum(-1, keepdim=True) for j in idx)
            expected = sum(experiment.datasets[j].expected for j in idx)
            for j in idx:
                blocks[j] = blocks[j] * (expected / total.clamp_min(1e-300))
    return torch.cat(blocks, dim=-1).to(theta)


@functools.lru_cache(maxsize=4)
def _dis_setup(n_u: int, n_w: int, case: str | None, runcard: str | None) -> DISBinnedView:
    config = DISConfig()
    if runcard is not None:
        physics = load_yaml(runcard).get("physics") or {}
        config = parse_config(DISConfig, physics, f"{runcard} (physics)")
    return DISBinnedView(DISExperiment(config.with_case(case) if case else config), None, n_u=n_u, n_w=n_w)


def dis_binned(theta: Tensor, n_u: int = 2, n_w: int = 4, case: str | None = None,
               runcard: str | None = None) -> Tensor:  # fmt: skip
    """Expected DIS event counts in 2-D bins of every Q^2 window, [n, D] -> [n, J * n_u * n_w].

    Args:
        theta: the DIS problem's free parameters per row (default: a_uv, b_uv, A_S, a_S, a_g).
        n_u: ln Q^2 bins per window.
        n_w: bins across x between the cuts per window.
        case: the event-count case (A, B, C); None: the runcard's (default B).
        runcard: a DIS closure runcard whose ``physics`` section defines the problem; None: the defaults.

    Returns:
        Expected counts, dtype and device of ``theta``.
    """
    view = _dis_setup(int(n_u), int(n_w), case, runcard)
    names = view.experiment.parameter_names
    if theta.ndim != 2 or theta.shape[-1] != len(names):
        raise ValueError(f"dis_binned: theta must be [n, {len(names)}] ({names}), got {tuple(theta.shape)}")
    with torch.no_grad():
        rows = [torch.cat(view.predictions(chunk), -1) for chunk in theta.to(torch.float64).cpu().split(512)]
    return torch.cat(rows).to(theta)


def load_simulator(spec: str, kwargs: dict[str, Any] | None = None, field: str = "problem.simulator") -> Simulator:
    """Import ``"package.module:function"`` and bind ``kwargs`` to it (:func:`qcdgip.imports.import_callable`).

    Args:
        spec: the import path.
        kwargs: keyword arguments passed on every call.
        field: the config field named in errors.

    Returns:
        A callable theta [n, d] -> y [n, m].

    Raises:
        ValueError: the string is malformed, the module or attribute does not import, it is not callable, or it
            does not accept ``kwargs``.
    """
    return import_callable(spec, kwargs, field, probe=(torch.zeros(1, 1),))


def check_simulator(simulator: Simulator, theta: Tensor, field: str = "problem.simulator") -> int:
    """Call ``simulator`` on a few parameter sets and check what it returns.

    Args:
        simulator: the callable.
        theta: a few parameter sets [n, d] from the prior box.
        field: the config field named in errors.

    Returns:
        The number of observables m.

    Raises:
        ValueError: it raised, returned something other than a tensor, a shape other than [n, m], or non-finite
            values.
    """
    try:
        y = simulator(theta)
    except Exception as err:
        raise ValueError(
            f"{field}: calling it on parameters of shape {tuple(theta.shape)} failed ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(y, Tensor):
        raise ValueError(f"{field}: must return a torch.Tensor [n, m], got {type(y).__name__}")
    if y.ndim != 2 or y.shape[0] != theta.shape[0]:
        raise ValueError(
            f"{field}: must return observables of shape [n, m] = [{theta.shape[0]}, m] for parameters "
            f"{tuple(theta.shape)}, got {tuple(y.shape)}"
        )
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"{field}: returned non-finite observables inside the prior box")
    return int(y.shape[1])
